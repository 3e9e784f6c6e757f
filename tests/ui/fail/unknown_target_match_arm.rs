use agent::prelude::*;

#[workflow]
mod flow {
    use agent::prelude::*;

    #[state]
    async fn route(ctx: &Context) -> StateResult {
        match ctx.get_state_or::<u32>("score", 0) {
            0..=49 => "retry".into(),
            50..=89 => StateResult::next("reviw"),
            _ => ["publish", "archive"].into(),
        }
    }

    #[state]
    async fn retry(_ctx: &Context) -> StateResult {
        "route".into()
    }

    #[state]
    async fn review(_ctx: &Context) -> StateResult {
        StateResult::End
    }

    #[state]
    async fn publish(_ctx: &Context) -> StateResult {
        StateResult::End
    }
}

fn main() {
    let _ = flow::agent();
}
