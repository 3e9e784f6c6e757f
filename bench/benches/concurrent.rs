//! Workload: M concurrent workflows (M = 1, 100, 10,000), each a ten-state chain (a
//! `#[workflow]` of ten states, each doing one atomic context update and naming the next
//! by a literal, the last ending), all started at once with `tokio::spawn` and all awaited
//! inside the timed region, on a 2-worker tokio runtime. Reported as workflows per second.
//!
//! `agent_workflow`: M agents (one per workflow, `chain10::agent()`), each running once
//! with `run_in` in a task of its own; the agents are built (and each run once, so its
//! program is compiled) outside the timed region. `agent_start`: one agent, M runs of it
//! started with `Agent::start` and awaited through their handles (one definition, many
//! runs: the form a worker or a server uses).
//!
//! Baseline, measured in the same run: M hand-written async ten-step loops (one `async fn`
//! a step, the same context update, a `match` picking the next) spawned the same way.
//!
//! Reproduce: `cargo bench -p agent-bench --bench concurrent`.

use agent::prelude::*;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

#[path = "common/chain10.rs"]
mod chain10_bench;
use chain10_bench::{bump, chain10};

/// The baseline: one workflow as a hand-written async loop.
async fn baseline(ctx: Context) -> Context {
    async fn step(ctx: &Context, i: usize) -> Option<usize> {
        bump(ctx);
        match i {
            9 => None,
            i => Some(i + 1),
        }
    }
    let mut at = 0;
    while let Some(next) = step(&ctx, at).await {
        at = next;
    }
    ctx
}

fn fresh_context() -> Context {
    let ctx = Context::new();
    ctx.set_state("n", 0u64);
    ctx
}

async fn run_all(agents: &[Agent]) -> Vec<AgentResult> {
    let handles: Vec<_> = agents
        .iter()
        .map(|agent| {
            let agent = agent.clone();
            tokio::spawn(async move { agent.run_in(fresh_context()).await })
        })
        .collect();
    let mut results = Vec::with_capacity(handles.len());
    for h in handles {
        results.push(h.await.expect("a run panicked").expect("a run failed"));
    }
    results
}

async fn start_all(agent: &Agent, m: usize) -> Vec<AgentResult> {
    let handles: Vec<RunHandle> =
        (0..m).map(|_| agent.start(RunOptions::new().context(fresh_context())).expect("a run starts")).collect();
    let mut results = Vec::with_capacity(m);
    for h in handles {
        results.push(h.await.expect("a run failed"));
    }
    results
}

async fn baseline_all(m: usize) -> Vec<Context> {
    let handles: Vec<_> = (0..m).map(|_| tokio::spawn(baseline(fresh_context()))).collect();
    let mut out = Vec::with_capacity(m);
    for h in handles {
        out.push(h.await.expect("a loop panicked"));
    }
    out
}

fn concurrent(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut group = c.benchmark_group("concurrent");
    for m in [1usize, 100, 10_000] {
        let agents: Vec<Agent> = (0..m).map(|_| chain10::agent()).collect();
        // Once before timing (which also compiles every agent's program): every workflow
        // completes with its ten updates, and so does every baseline loop.
        for result in rt.block_on(run_all(&agents)) {
            assert_eq!(result.status(), AgentStatus::Completed);
            assert_eq!(result.context().get_state::<u64>("n"), Some(10));
        }
        let one = chain10::agent();
        for result in rt.block_on(start_all(&one, m)) {
            assert_eq!(result.status(), AgentStatus::Completed);
            assert_eq!(result.context().get_state::<u64>("n"), Some(10));
        }
        for ctx in rt.block_on(baseline_all(m)) {
            assert_eq!(ctx.get_state::<u64>("n"), Some(10));
        }

        group.throughput(Throughput::Elements(m as u64));
        if m == 10_000 {
            group.sample_size(10);
        }
        group.bench_with_input(BenchmarkId::new("tokio_baseline", m), &m, |b, &m| {
            b.to_async(&rt).iter(|| baseline_all(m))
        });
        group.bench_with_input(BenchmarkId::new("agent_workflow", m), &m, |b, _| {
            b.to_async(&rt).iter(|| run_all(&agents))
        });
        group.bench_with_input(BenchmarkId::new("agent_start", m), &m, |b, &m| {
            b.to_async(&rt).iter(|| start_all(&one, m))
        });
    }
    group.finish();
}

criterion_group!(benches, concurrent);
criterion_main!(benches);
