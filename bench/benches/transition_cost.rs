//! What a transition costs, beside hand-written tokio code doing the same work, measured in
//! the same process and printed side by side (a table of ratios after criterion's output).
//!
//! Groups (each on a 2-worker multi-thread tokio runtime, the whole run awaited inside the
//! timed region):
//! - `compile`: a builder chain of 100,000 states with owned (`String`) names, each returning
//!   the next name as a computed `String`. `agent_compile` compiles its definition alone
//!   (`agent::bench::compile`); `agent_first_run` is `run()` on a freshly built agent (it
//!   compiles, then runs) and `agent_warm_run` a later `run()` of the same agent (compiled
//!   already): their difference is what the first run pays for compiling.
//!   `tokio_index` is the hand-written analogue of compiling: a `HashMap<String, usize>` of
//!   the 100,000 names. `agent_build` is `Agent::new` plus the 100,000 `add_state` calls.
//! - `string_targets`: a ring of ten builder states, each a closure returning
//!   `StateResult::next(name.clone())` of a `String` it captured, 100,000 transitions.
//!   Baseline: an `async fn` loop calling one `async fn` per step, which clones the same
//!   `String` and looks the next step up in a `HashMap<String, usize>`.
//! - `noop_chain`: workload (a) of `bench/peers`: the same ring with `&'static str` targets,
//!   as `#[workflow]`, as builder closures (`Fn(Context)`, `agent_builder`) and as builder
//!   `async fn(&Context)` states (`agent_builder_ref`), each state making one in-place context update
//!   (`update_state`), 100,000 transitions. Baseline: an `async fn` loop calling one
//!   `async fn` per step, with the same update, picking the next with a `match`.
//!
//! Every state (and every baseline step) counts down one shared counter with a relaxed load
//! and store (the chain is sequential) to know when to end; `string_targets` and `compile`
//! do nothing else, so what they measure is the transition, not a context write.
//!
//! Reproduce: `cargo bench --bench transition_cost` (the ratio table is printed at the end;
//! it reads the estimates criterion wrote under the workspace's `target/criterion`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use agent::prelude::*;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput};

/// Transitions a chain run makes in `string_targets` and `noop_chain`.
const STEPS: u64 = 100_000;
/// States of the `compile` chain.
const STATES: usize = 100_000;

/// Steps left in the current run.
static LEFT: AtomicU64 = AtomicU64::new(0);

/// One step's work: count down; `true` while the chain goes on. A relaxed load and store,
/// not a read-modify-write: one step runs at a time.
#[inline]
fn step() -> bool {
    let n = LEFT.load(Relaxed);
    LEFT.store(n.saturating_sub(1), Relaxed);
    n > 1
}

fn arm() {
    LEFT.store(STEPS, Relaxed);
}

/// A step of workload (a) of `bench/peers`: one in-place context update, then [`step`].
#[inline]
fn bump(ctx: &Context) -> bool {
    ctx.update_state("n", |v: &mut u64| *v += 1).expect("n is set before the run");
    step()
}

/// A context with the counter of [`bump`] set.
fn fresh() -> Context {
    let ctx = Context::new();
    ctx.set_state("n", 0u64);
    ctx
}

#[path = "common/ring10.rs"]
mod ring10;
use ring10::ring;

/// The ring as builder closures returning `&'static str` targets.
fn static_ring() -> Agent {
    ring10::builder_ring("static_ring")
}

/// The ring as builder closures with owned names, each returning a clone of the `String` it
/// captured.
fn string_ring() -> Agent {
    let mut agent = Agent::new("string_ring");
    for i in 0..10 {
        let next = format!("s{}", (i + 1) % 10);
        agent.add_state(format!("s{i}"), move |_ctx: Context| {
            let target = step().then(|| next.clone());
            async move { target.map_or(StateResult::End, StateResult::next) }
        });
    }
    agent
}

/// The hand-written static ring: one `async fn` per step, the next picked by a `match`.
async fn static_baseline(ctx: &Context) {
    async fn state(ctx: &Context, i: usize) -> Option<usize> {
        bump(ctx).then_some(match i {
            9 => 0,
            i => i + 1,
        })
    }
    let mut at = 0;
    while let Some(next) = state(ctx, std::hint::black_box(at)).await {
        at = next;
    }
}

/// The hand-written string ring: one `async fn` per step returning a clone of the next
/// step's `String` name, looked up in a `HashMap<String, usize>`.
async fn string_baseline(next: &[String], index: &HashMap<String, usize>) {
    // `to_owned` of the `&str` is what `String::clone` does: allocate and copy.
    async fn state(next: &str) -> Option<String> {
        step().then(|| next.to_owned())
    }
    let mut at = 0;
    while let Some(name) = state(&next[at]).await {
        at = index[&name];
    }
}

/// The `compile` chain: `STATES` states with owned names, each going to the next by a
/// computed `String`, the last ending.
fn long_chain(names: &[String]) -> Agent {
    let mut agent = Agent::new("long_chain");
    for (i, name) in names.iter().enumerate() {
        let next = names.get(i + 1).cloned();
        agent.add_state(name.clone(), move |_ctx: Context| {
            let next = next.clone();
            async move { next.map_or(StateResult::End, StateResult::next) }
        });
    }
    agent
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    // Checked once before timing: each variant runs the whole chain.
    let workflow = ring::agent();
    let builder = static_ring();
    let borrowing = ring10::borrowing_ring("borrowing_ring");
    let strings = string_ring();
    for agent in [&workflow, &builder, &borrowing, &strings] {
        arm();
        let result = rt.block_on(agent.run_in(fresh())).expect("the ring completes");
        assert_eq!(result.status(), AgentStatus::Completed);
        assert_eq!(LEFT.load(Relaxed), 0, "{} made every step", agent.name());
    }
    let next: Vec<String> = (0..10).map(|i| format!("s{}", (i + 1) % 10)).collect();
    let index: HashMap<String, usize> = (0..10).map(|i| (format!("s{i}"), i)).collect();

    let mut group = c.benchmark_group("noop_chain");
    group.throughput(Throughput::Elements(STEPS));
    group.sample_size(20);
    group.bench_function(BenchmarkId::new("tokio_baseline", STEPS), |b| {
        b.to_async(&rt).iter(|| {
            arm();
            async {
                let ctx = fresh();
                static_baseline(&ctx).await;
                ctx
            }
        })
    });
    group.bench_function(BenchmarkId::new("agent_workflow", STEPS), |b| {
        b.to_async(&rt).iter(|| {
            arm();
            let workflow = workflow.clone();
            async move { workflow.run_in(fresh()).await.unwrap() }
        })
    });
    group.bench_function(BenchmarkId::new("agent_builder", STEPS), |b| {
        b.to_async(&rt).iter(|| {
            arm();
            let builder = builder.clone();
            async move { builder.run_in(fresh()).await.unwrap() }
        })
    });
    group.bench_function(BenchmarkId::new("agent_builder_ref", STEPS), |b| {
        b.to_async(&rt).iter(|| {
            arm();
            let borrowing = borrowing.clone();
            async move { borrowing.run_in(fresh()).await.unwrap() }
        })
    });
    group.finish();

    let mut group = c.benchmark_group("string_targets");
    group.throughput(Throughput::Elements(STEPS));
    group.sample_size(20);
    group.bench_function(BenchmarkId::new("tokio_baseline", STEPS), |b| {
        b.to_async(&rt).iter(|| {
            arm();
            string_baseline(&next, &index)
        })
    });
    group.bench_function(BenchmarkId::new("agent_builder", STEPS), |b| {
        b.to_async(&rt).iter(|| {
            arm();
            let strings = strings.clone();
            async move { strings.run().await.unwrap() }
        })
    });
    group.finish();

    let names: Vec<String> = (0..STATES).map(|i| format!("state_{i}")).collect();
    let chain = long_chain(&names);
    let result = rt.block_on(chain.run()).expect("the long chain completes");
    assert_eq!(result.completed_states().len(), STATES);
    let mut group = c.benchmark_group("compile");
    group.throughput(Throughput::Elements(STATES as u64));
    group.sample_size(10);
    group.bench_function(BenchmarkId::new("tokio_index", STATES), |b| {
        b.iter_batched(
            || (),
            |()| names.iter().enumerate().map(|(i, n)| (n.clone(), i)).collect::<HashMap<String, usize>>(),
            BatchSize::PerIteration,
        )
    });
    group.bench_function(BenchmarkId::new("agent_compile", STATES), |b| {
        b.iter(|| agent::bench::compile(&chain).expect("the chain compiles"))
    });
    group.bench_function(BenchmarkId::new("agent_build", STATES), |b| {
        b.iter_batched(|| (), |()| long_chain(&names), BatchSize::PerIteration)
    });
    group.bench_function(BenchmarkId::new("agent_first_run", STATES), |b| {
        b.to_async(&rt).iter_batched(
            || long_chain(&names),
            |agent| async move {
                let result = agent.run().await.unwrap();
                (agent, result)
            },
            BatchSize::PerIteration,
        )
    });
    group.bench_function(BenchmarkId::new("agent_warm_run", STATES), |b| {
        b.to_async(&rt).iter_batched(|| (), |()| chain.run(), BatchSize::PerIteration)
    });
    group.finish();
}

/// Criterion's mean for `group/id/STEPS` in this run, in nanoseconds per iteration.
fn mean_ns(group: &str, id: &str, n: impl std::fmt::Display) -> Option<f64> {
    // Benches run from their package's folder (`bench/`); the workspace's target is above it.
    let workspace_target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    let root = std::env::var_os("CARGO_TARGET_DIR").map_or(workspace_target, std::path::PathBuf::from);
    let path = root.join("criterion").join(group).join(id).join(n.to_string()).join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

/// Print each variant per transition (or per state) beside the baseline of its group.
fn summary() {
    println!("\ntransition_cost: mean per transition (per state for `compile`), ratio to hand-written");
    for (group, base, ids) in [
        ("noop_chain", "tokio_baseline", &["agent_workflow", "agent_builder", "agent_builder_ref"][..]),
        ("string_targets", "tokio_baseline", &["agent_builder"][..]),
    ] {
        let Some(b) = mean_ns(group, base, STEPS) else { continue };
        println!("  {group:<15} {base:<16} {:>8.1} ns", b / STEPS as f64);
        for id in ids {
            if let Some(m) = mean_ns(group, id, STEPS) {
                println!("  {group:<15} {id:<16} {:>8.1} ns  {:.2}x", m / STEPS as f64, m / b);
            }
        }
    }
    let per = |id| mean_ns("compile", id, STATES).map(|m| m / STATES as f64);
    for id in ["tokio_index", "agent_compile", "agent_build"] {
        if let Some(m) = per(id) {
            println!("  {:<15} {id:<16} {m:>8.1} ns", "compile");
        }
    }
    if let (Some(first), Some(warm)) = (per("agent_first_run"), per("agent_warm_run")) {
        println!(
            "  {:<15} {:<16} {:>8.1} ns  (first run {first:.1} - warm run {warm:.1})",
            "compile",
            "first - warm",
            first - warm
        );
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
    summary();
}
