//! The ten-state chain the `cold_start` and `concurrent` benches run (each includes this file
//! as a module with `#[path]`): a `#[workflow]` whose every state makes one atomic context update and
//! names the next by a literal, the last ending.

use agent::prelude::*;

/// One state's work: bump the counter `n` (set before the run).
pub fn bump(ctx: &Context) {
    ctx.update_state("n", |v: &mut u64| *v += 1).expect("n is set before the run");
}

#[workflow]
pub mod chain10 {
    use super::bump;
    use agent::prelude::*;

    #[state]
    async fn s0(ctx: &Context) -> StateResult {
        bump(ctx);
        "s1".into()
    }
    #[state]
    async fn s1(ctx: &Context) -> StateResult {
        bump(ctx);
        "s2".into()
    }
    #[state]
    async fn s2(ctx: &Context) -> StateResult {
        bump(ctx);
        "s3".into()
    }
    #[state]
    async fn s3(ctx: &Context) -> StateResult {
        bump(ctx);
        "s4".into()
    }
    #[state]
    async fn s4(ctx: &Context) -> StateResult {
        bump(ctx);
        "s5".into()
    }
    #[state]
    async fn s5(ctx: &Context) -> StateResult {
        bump(ctx);
        "s6".into()
    }
    #[state]
    async fn s6(ctx: &Context) -> StateResult {
        bump(ctx);
        "s7".into()
    }
    #[state]
    async fn s7(ctx: &Context) -> StateResult {
        bump(ctx);
        "s8".into()
    }
    #[state]
    async fn s8(ctx: &Context) -> StateResult {
        bump(ctx);
        "s9".into()
    }
    #[state]
    async fn s9(ctx: &Context) -> StateResult {
        bump(ctx);
        StateResult::End
    }
}
