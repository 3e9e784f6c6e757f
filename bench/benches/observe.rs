//! Workload: a chain of 10,000 states built with `add_state` (each state does nothing but
//! name the next), run to its end on a 2-worker tokio runtime, the whole run awaited inside
//! the timed region. Figures are per run; divide by 10,000 for a transition.
//!
//! Baseline: `off`, the same chain with no `tracing` subscriber ever installed, no event
//! stream and timings off (the default). Against it, in order (a `tracing` subscriber, once
//! installed, stays for the rest of the process, so it comes last):
//! - `stream_dropped`: an `EventStream` was made and dropped: nobody subscribed, so this
//!   must equal `off` (the hot path checks a subscriber count of zero);
//! - `events`: one live `EventStream` that never reads (two events built and sent per
//!   state, the oldest overwritten; the run never waits for it);
//! - `timings`: `record_timings(true)`: two monotonic and two wall-clock reads per state;
//! - `tracing`: a global `tracing` subscriber that is enabled for everything and records
//!   nothing: a span per state and a debug event per transition.
//!
//! What "free without a subscriber" means is `off` here against the chain before events
//! existed: `cargo bench -p agent-bench --bench chain` before and after (README, "Monitoring").
//!
//! Reproduce: `cargo bench -p agent-bench --bench observe`.

use agent::prelude::*;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const N: usize = 10_000;

fn chain() -> Agent {
    let mut agent = Agent::new("observed_chain");
    for i in 0..N {
        let next = (i + 1 < N).then(|| format!("s{}", i + 1));
        agent.add_state(format!("s{i}"), move |_ctx: Context| {
            let next = next.clone();
            async move {
                match next {
                    Some(n) => StateResult::next(n),
                    None => StateResult::End,
                }
            }
        });
    }
    agent
}

/// A subscriber interested in everything that keeps nothing.
struct Null;

impl tracing::Subscriber for Null {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

fn observe(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut group = c.benchmark_group("observe_chain_10000");
    group.throughput(Throughput::Elements(N as u64));
    group.sample_size(20);
    let agent = chain();
    let run = |group: &mut criterion::BenchmarkGroup<'_, _>, name: &str, agent: &Agent| {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| {
                let agent = agent.clone();
                async move { agent.run().await.unwrap() }
            })
        });
    };
    assert!(!tracing::dispatcher::has_been_set(), "the baseline runs with no subscriber ever installed");
    run(&mut group, "off", &agent);
    drop(agent.events());
    run(&mut group, "stream_dropped", &agent);
    let stream = agent.events();
    run(&mut group, "events", &agent);
    drop(stream);
    let timed = chain().record_timings(true);
    run(&mut group, "timings", &timed);
    tracing::subscriber::set_global_default(Null).expect("no other subscriber");
    run(&mut group, "tracing", &agent);
    group.finish();
}

criterion_group!(benches, observe);
criterion_main!(benches);
