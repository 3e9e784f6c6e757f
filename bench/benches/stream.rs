//! Workload: a chain of 100,000 states built with `add_state`, each emitting one custom value
//! (`ctx.emit(i)`, an LLM's token as a number) and naming the next, run to its end on a
//! 2-worker tokio runtime, the whole run awaited inside the timed region.
//!
//! Baseline, measured in the same run: `unfollowed`, the same run with nobody following
//! (each `emit` then costs a look). Against it, `followed_all`: one consumer task reading
//! `agent.stream(StreamMode::ALL)` as fast as it can for the whole run (states started and
//! ended, custom values; a plain run commits nothing, so no context or checkpoint events).
//! Target (the composition issue): at most 1.3x the baseline.
//!
//! Reproduce: `cargo bench -p agent-bench --bench stream`.

use agent::prelude::*;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const N: usize = 100_000;

fn chain() -> Agent {
    let mut agent = Agent::new("streamed_chain");
    for i in 0..N {
        let next = (i + 1 < N).then(|| format!("s{}", i + 1));
        agent.add_state(format!("s{i}"), move |ctx: Context| {
            let next = next.clone();
            async move {
                ctx.emit(i);
                match next {
                    Some(n) => StateResult::next(n),
                    None => StateResult::End,
                }
            }
        });
    }
    agent
}

fn stream(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut group = c.benchmark_group("stream_chain_100000");
    group.throughput(Throughput::Elements(N as u64));
    group.sample_size(10);
    let agent = chain();
    group.bench_function("unfollowed", |b| {
        b.to_async(&rt).iter(|| {
            let agent = agent.clone();
            async move { agent.run().await.unwrap() }
        })
    });
    group.bench_function("followed_all", |b| {
        b.to_async(&rt).iter(|| {
            let agent = agent.clone();
            async move {
                let mut events = agent.stream(StreamMode::ALL);
                let reader = tokio::spawn(async move {
                    let mut seen = 0u64;
                    while let Some(event) = events.next().await {
                        seen += 1;
                        if matches!(event.kind, EventKind::RunFinished { .. }) {
                            break;
                        }
                    }
                    seen
                });
                let result = agent.run().await.unwrap();
                reader.await.unwrap();
                result
            }
        })
    });
    group.finish();
}

criterion_group!(benches, stream);
criterion_main!(benches);
