//! The baseline: hand-written tokio code doing the same work with the same context type
//! (`agent`'s `Context`, so the context write costs the same): an `async fn` loop for the
//! chain, `tokio::spawn` of every branch and awaiting every `JoinHandle` for the fan-outs.

use agent::prelude::Context;

use crate::{time, Timed, IO_WAIT};

fn fresh() -> Context {
    let ctx = Context::new();
    ctx.set_state("n", 0u64);
    ctx
}

pub async fn chain(n: usize) -> Timed {
    async fn step(ctx: &Context, i: usize, limit: u64) -> Option<usize> {
        let mut n = 0;
        ctx.update_state("n", |v: &mut u64| {
            *v += 1;
            n = *v;
        })
        .expect("n is set");
        (n < limit).then_some((i + 1) % 10)
    }
    let ctx = fresh();
    let limit = n as u64;
    let (_, d) = time(async {
        let mut at = 0;
        while let Some(next) = step(&ctx, at, limit).await {
            at = next;
        }
    })
    .await;
    Ok(d)
}

async fn fan(w: usize, io: bool) -> Timed {
    let ctx = fresh();
    let (_, d) = time(async {
        let handles: Vec<_> = (0..w)
            .map(|_| {
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    if io {
                        tokio::time::sleep(IO_WAIT).await;
                    }
                    ctx.update_state("n", |v: &mut u64| *v += 1).expect("n is set");
                })
            })
            .collect();
        for h in handles {
            h.await.unwrap();
        }
        ctx.set_state("merged", true);
    })
    .await;
    let n: u64 = ctx.get_state("n").unwrap();
    if n != w as u64 {
        return Err(format!("counted {n}, expected {w}"));
    }
    Ok(d)
}

pub async fn fanout(w: usize) -> Timed {
    fan(w, false).await
}

pub async fn io(w: usize) -> Timed {
    fan(w, true).await
}
