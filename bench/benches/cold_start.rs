//! Workload: the cost from nothing to a finished first run of a ten-state chain (each state
//! one atomic context update, naming the next), on a 2-worker tokio runtime, everything
//! inside the timed region:
//! - `builder_build_and_first_run`: `Agent::new` and ten `add_state` closures, then `run()`
//!   once (the first run checks the definition and compiles the program);
//! - `workflow_build_and_first_run`: `chain10::agent()` of a `#[workflow]` module, then
//!   `run()` once.
//!
//! Baseline, measured in the same run: a warm second run of an agent already built and run
//! once (`*_warm_run`), so the difference is the cold start. `one_state_warm_run`: a warm
//! run of a one-state agent (one atomic update, then the end), the fixed cost of a run.
//!
//! Reproduce: `cargo bench -p agent-bench --bench cold_start`.

use agent::prelude::*;
use criterion::{criterion_group, criterion_main, Criterion};

#[path = "common/chain10.rs"]
mod chain10_bench;
use chain10_bench::{bump, chain10};

const NAMES: [&str; 10] = ["s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9"];

fn builder_chain() -> Agent {
    let mut agent = Agent::new("builder_chain");
    for i in 0..10 {
        agent.add_state(NAMES[i], move |ctx: Context| async move {
            bump(&ctx);
            if i < 9 {
                StateResult::next(NAMES[i + 1])
            } else {
                StateResult::End
            }
        });
    }
    agent
}

fn one_state() -> Agent {
    let mut agent = Agent::new("one_state");
    agent.add_state("only", |ctx: Context| async move {
        bump(&ctx);
        StateResult::End
    });
    agent
}

fn fresh_context() -> Context {
    let ctx = Context::new();
    ctx.set_state("n", 0u64);
    ctx
}

fn check(result: &AgentResult) {
    assert_eq!(result.status(), AgentStatus::Completed);
    assert_eq!(result.context().get_state::<u64>("n"), Some(10));
}

fn cold_start(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let builder = builder_chain();
    let workflow = chain10::agent();
    // Once before timing: a first run and a second of each completes with ten updates.
    for agent in [&builder, &workflow] {
        for _ in 0..2 {
            check(&rt.block_on(agent.run_in(fresh_context())).expect("the chain completes"));
        }
    }

    let single = one_state();
    let result = rt.block_on(single.run_in(fresh_context())).expect("the one state completes");
    assert_eq!(result.context().get_state::<u64>("n"), Some(1));

    let mut group = c.benchmark_group("cold_start");
    group.bench_function("one_state_warm_run", |b| {
        b.to_async(&rt).iter(|| {
            let agent = single.clone();
            async move { agent.run_in(fresh_context()).await.unwrap() }
        })
    });
    group.bench_function("builder_warm_run", |b| {
        b.to_async(&rt).iter(|| {
            let agent = builder.clone();
            async move { agent.run_in(fresh_context()).await.unwrap() }
        })
    });
    group.bench_function("builder_build_and_first_run", |b| {
        b.to_async(&rt).iter(|| async { builder_chain().run_in(fresh_context()).await.unwrap() })
    });
    group.bench_function("workflow_warm_run", |b| {
        b.to_async(&rt).iter(|| {
            let agent = workflow.clone();
            async move { agent.run_in(fresh_context()).await.unwrap() }
        })
    });
    group.bench_function("workflow_build_and_first_run", |b| {
        b.to_async(&rt).iter(|| async { chain10::agent().run_in(fresh_context()).await.unwrap() })
    });
    group.finish();
}

criterion_group!(benches, cold_start);
criterion_main!(benches);
