//! Workload: a fan-out of W branches (W = 2, 10, 1,000, 100,000) from one state, each branch
//! doing one atomic context update, then a fan-in state that runs once after all of them, on
//! a 2-worker tokio runtime, awaiting the whole run inside the timed region.
//!
//! Baseline, measured in the same run: hand-written tokio code doing the same work,
//! `tokio::spawn` of W tasks with the same context update, awaiting every `JoinHandle`, then
//! the join's work.
//!
//! Reproduce: `cargo bench -p agent-bench --bench fanout`. Target: at most 1.5x
//! spawn-and-join per branch, flat from W = 10 to W = 100,000.

use agent::prelude::*;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn work(ctx: &Context) {
    ctx.update_state("n", |v: &mut u64| *v += 1).expect("n is set before the run");
}

fn merge(ctx: &Context) {
    ctx.set_state("merged", true);
}

fn fan_agent(width: usize) -> Agent {
    let mut agent = Agent::new("fan");
    agent.add_state("fan", move |_ctx: Context| async move { StateResult::parallel(vec!["work"; width]) });
    agent.add_state("work", |ctx: Context| async move {
        work(&ctx);
        StateResult::next("merge")
    });
    agent.add_state("merge", |ctx: Context| async move {
        merge(&ctx);
        StateResult::End
    });
    agent
}

async fn baseline(ctx: Context, width: usize) {
    let handles: Vec<_> = (0..width)
        .map(|_| {
            let ctx = ctx.clone();
            tokio::spawn(async move { work(&ctx) })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    merge(&ctx);
}

fn fresh_context() -> Context {
    let ctx = Context::new();
    ctx.set_state("n", 0u64);
    ctx
}

fn fanout(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut group = c.benchmark_group("fanout");
    for width in [2usize, 10, 1_000, 100_000] {
        group.throughput(Throughput::Elements(width as u64));
        if width == 100_000 {
            group.sample_size(10);
        }
        group.bench_with_input(BenchmarkId::new("tokio_spawn_join", width), &width, |b, &w| {
            b.to_async(&rt).iter(|| baseline(fresh_context(), w))
        });
        let agent = fan_agent(width);
        group.bench_with_input(BenchmarkId::new("agent", width), &width, |b, _| {
            b.to_async(&rt).iter(|| {
                let agent = agent.clone();
                async move { agent.run_in(fresh_context()).await.unwrap() }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
