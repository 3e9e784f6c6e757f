//! Workload: a chain of N state transitions (N = 1, 10, 100, 1,000, 100,000) on a 2-worker tokio
//! runtime, awaiting the whole run inside the timed region, with two kinds of context work
//! per state:
//! - `chain_update`: one atomic in-place update (`update_state("n", |n| *n += 1)`), about
//!   25 ns: the cheapest context write, so the runtime's own cost shows most;
//! - `chain_get_set`: the common pattern, a read and a write (`get_state` then `set_state`).
//!
//! Baseline, measured in the same run: hand-written tokio code doing the same work, an
//! `async fn` loop that calls one `async fn` per step with the same context update and picks
//! the next step with a `match`.
//!
//! Variants: `agent_workflow` is a `#[workflow]` ring of ten states whose literal targets
//! resolve by index hint (no hashing); `agent_builder` is the same ring built with
//! `add_state` closures returning `&'static str` names (one Fx hash per transition).
//!
//! Reproduce: `cargo bench -p agent-bench --bench chain`. Target: at most 2.5x the baseline
//! per transition (2x from N = 1,000 up), flat from N = 10 to N = 100,000; N = 1 and N = 100
//! show the cost per state from a single state up.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use agent::prelude::*;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

static LIMIT: AtomicU64 = AtomicU64::new(0);
/// Whether steps use the get/set pattern instead of one in-place update.
static GET_SET: AtomicBool = AtomicBool::new(false);

/// One step's work: bump the counter; `true` while the chain goes on.
fn bump(ctx: &Context) -> bool {
    let n = if GET_SET.load(Ordering::Relaxed) {
        let n: u64 = ctx.get_state("n").expect("n is set before the run");
        ctx.set_state("n", n + 1);
        n + 1
    } else {
        let mut n = 0;
        ctx.update_state("n", |v: &mut u64| {
            *v += 1;
            n = *v;
        })
        .expect("n is set before the run");
        n
    };
    n < LIMIT.load(Ordering::Relaxed)
}

#[path = "common/ring10.rs"]
mod ring10;
use ring10::ring;

fn builder_ring() -> Agent {
    ring10::builder_ring("builder_ring")
}

/// The baseline: the same ring as hand-written async code.
async fn baseline(ctx: &Context) {
    async fn step(ctx: &Context, i: usize) -> Option<usize> {
        bump(ctx).then_some((i + 1) % 10)
    }
    let mut at = 0;
    while let Some(next) = step(ctx, at).await {
        at = next;
    }
}

fn fresh_context() -> Context {
    let ctx = Context::new();
    ctx.set_state("n", 0u64);
    ctx
}

fn chain(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let workflow = ring::agent();
    let builder = builder_ring();
    for (group_name, get_set) in [("chain_update", false), ("chain_get_set", true)] {
        let mut group = c.benchmark_group(group_name);
        for n in [1u64, 10, 100, 1_000, 100_000] {
            group.throughput(Throughput::Elements(n));
            if n == 100_000 {
                group.sample_size(20);
            }
            let setup = move || {
                LIMIT.store(n, Ordering::Relaxed);
                GET_SET.store(get_set, Ordering::Relaxed);
                fresh_context()
            };
            // Once before timing: each variant makes exactly N steps.
            let ctx = setup();
            rt.block_on(baseline(&ctx));
            assert_eq!(ctx.get_state::<u64>("n"), Some(n));
            for agent in [&workflow, &builder] {
                let result = rt.block_on(agent.run_in(setup())).expect("the chain completes");
                assert_eq!(result.status(), AgentStatus::Completed);
                assert_eq!(result.context().get_state::<u64>("n"), Some(n));
            }
            group.bench_with_input(BenchmarkId::new("tokio_baseline", n), &n, |b, _| {
                b.to_async(&rt).iter(|| async move {
                    let ctx = setup();
                    baseline(&ctx).await;
                    ctx
                })
            });
            group.bench_with_input(BenchmarkId::new("agent_workflow", n), &n, |b, _| {
                b.to_async(&rt).iter(|| {
                    let workflow = workflow.clone();
                    async move { workflow.run_in(setup()).await.unwrap() }
                })
            });
            group.bench_with_input(BenchmarkId::new("agent_builder", n), &n, |b, _| {
                b.to_async(&rt).iter(|| {
                    let builder = builder.clone();
                    async move { builder.run_in(setup()).await.unwrap() }
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, chain);
criterion_main!(benches);
