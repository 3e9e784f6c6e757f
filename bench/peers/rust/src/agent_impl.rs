//! `agent`: the builder API (`Agent::new(..).add_state(..)`) for all three workloads, and a
//! `#[workflow]` ring for the chain. Each state does one in-place context update
//! (`update_state`), the cheapest context write.

use agent::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{time, Timed, IO_WAIT};

static LIMIT: AtomicU64 = AtomicU64::new(0);

/// One chain step: bump the counter in the context; `true` while the chain goes on.
fn bump(ctx: &Context) -> bool {
    let mut n = 0;
    ctx.update_state("n", |v: &mut u64| {
        *v += 1;
        n = *v;
    })
    .expect("n is set before the run");
    n < LIMIT.load(Ordering::Relaxed)
}

fn fresh() -> Context {
    let ctx = Context::new();
    ctx.set_state("n", 0u64);
    ctx
}

fn check(ctx: &Context, want: u64) -> Result<(), String> {
    let n: u64 = ctx.get_state("n").ok_or("no n")?;
    if n == want {
        Ok(())
    } else {
        Err(format!("counted {n}, expected {want}"))
    }
}

const NAMES: [&str; 10] = ["s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9"];

/// The chain as a ring of ten named states (a 100,000-state agent would measure building, not
/// transitions); the run makes `n` transitions around it.
pub async fn chain_builder(n: usize) -> Timed {
    LIMIT.store(n as u64, Ordering::Relaxed);
    let mut agent = Agent::new("chain");
    for i in 0..10 {
        agent.add_state(NAMES[i], move |ctx: Context| async move {
            if bump(&ctx) {
                StateResult::next(NAMES[(i + 1) % 10])
            } else {
                StateResult::End
            }
        });
    }
    let ctx = fresh();
    let (r, d) = time(agent.run_in(ctx.clone())).await;
    r.map_err(|e| e.to_string())?;
    check(&ctx, n as u64)?;
    Ok(d)
}

#[workflow]
mod ring {
    use super::bump;
    use agent::prelude::*;

    #[state]
    async fn s0(ctx: &Context) -> StateResult {
        if bump(ctx) { "s1".into() } else { StateResult::End }
    }
    #[state]
    async fn s1(ctx: &Context) -> StateResult {
        if bump(ctx) { "s2".into() } else { StateResult::End }
    }
    #[state]
    async fn s2(ctx: &Context) -> StateResult {
        if bump(ctx) { "s3".into() } else { StateResult::End }
    }
    #[state]
    async fn s3(ctx: &Context) -> StateResult {
        if bump(ctx) { "s4".into() } else { StateResult::End }
    }
    #[state]
    async fn s4(ctx: &Context) -> StateResult {
        if bump(ctx) { "s5".into() } else { StateResult::End }
    }
    #[state]
    async fn s5(ctx: &Context) -> StateResult {
        if bump(ctx) { "s6".into() } else { StateResult::End }
    }
    #[state]
    async fn s6(ctx: &Context) -> StateResult {
        if bump(ctx) { "s7".into() } else { StateResult::End }
    }
    #[state]
    async fn s7(ctx: &Context) -> StateResult {
        if bump(ctx) { "s8".into() } else { StateResult::End }
    }
    #[state]
    async fn s8(ctx: &Context) -> StateResult {
        if bump(ctx) { "s9".into() } else { StateResult::End }
    }
    #[state]
    async fn s9(ctx: &Context) -> StateResult {
        if bump(ctx) { "s0".into() } else { StateResult::End }
    }
}

pub async fn chain_workflow(n: usize) -> Timed {
    LIMIT.store(n as u64, Ordering::Relaxed);
    let agent = ring::agent();
    let ctx = fresh();
    let (r, d) = time(agent.run_in(ctx.clone())).await;
    r.map_err(|e| e.to_string())?;
    check(&ctx, n as u64)?;
    Ok(d)
}

/// `fan` returns `StateResult::parallel` of `w` copies of `work`; each `work` bumps the counter
/// and goes on to `merge`, the fan-in, which runs once after all of them.
fn fan_agent(w: usize, io: bool) -> Agent {
    let mut agent = Agent::new("fan");
    agent.add_state("fan", move |_ctx: Context| async move { StateResult::parallel(vec!["work"; w]) });
    agent.add_state("work", move |ctx: Context| async move {
        if io {
            tokio::time::sleep(IO_WAIT).await;
        }
        ctx.update_state("n", |v: &mut u64| *v += 1).expect("n is set");
        StateResult::next("merge")
    });
    agent.add_state("merge", |ctx: Context| async move {
        ctx.set_state("merged", true);
        StateResult::End
    });
    agent
}

async fn run_fan(w: usize, io: bool) -> Timed {
    let agent = fan_agent(w, io);
    let ctx = fresh();
    let (r, d) = time(agent.run_in(ctx.clone())).await;
    r.map_err(|e| e.to_string())?;
    check(&ctx, w as u64)?;
    if ctx.get_state::<bool>("merged") != Some(true) {
        return Err("merge did not run".into());
    }
    Ok(d)
}

pub async fn fanout(w: usize) -> Timed {
    run_fan(w, false).await
}

pub async fn io(w: usize) -> Timed {
    run_fan(w, true).await
}
