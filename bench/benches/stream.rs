//! Workload: a chain of 100,000 states built with `add_state`, each emitting one custom value
//! (`ctx.emit(i)`, an LLM's token as a number) and naming the next, run to its end on a
//! 2-worker tokio runtime, the whole run awaited inside the timed region. Two chains: one of
//! no-op states (`stream_chain_100000`), one whose states each do about 15 µs of work,
//! hashing 64 KiB (`stream_chain_100000_working`): less than any state that calls a model
//! or a service spends.
//!
//! Baseline, measured in the same run: `unfollowed`, the same run with nobody following
//! (each `emit` then costs a look). Against it, `subscribed_unread` (a stream is open but
//! nobody reads it: what building and sending the events costs the run alone) and
//! `followed_all`: one consumer task reading `agent.stream(StreamMode::ALL)` as fast as it
//! can for the whole run (states started and ended, custom values; a plain run commits
//! nothing, so no context or checkpoint events). Target (the composition issue): at most
//! 1.3x the baseline.
//!
//! `event_floor` measures, beside them, the least any event can cost the run that sends it:
//! the wall clock read for its time and one send on a bounded broadcast channel with a
//! reader, three times (a state's three events), 100,000 times, with nothing else done.
//!
//! Reproduce: `cargo bench -p agent-bench --bench stream`.

use std::time::SystemTime;

use agent::prelude::*;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const N: usize = 100_000;

/// About 15 µs of work a state does (on the 2-core VM): a hash of 64 KiB.
fn work(seed: usize) -> u64 {
    use std::hash::{Hash, Hasher};
    let block = [seed as u8; 512];
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for _ in 0..128 {
        std::hint::black_box(&block).hash(&mut h);
    }
    h.finish()
}

fn chain(working: bool) -> Agent {
    let mut agent = Agent::new("streamed_chain");
    for i in 0..N {
        let next = (i + 1 < N).then(|| format!("s{}", i + 1));
        agent.add_state(format!("s{i}"), move |ctx: Context| {
            let next = next.clone();
            async move {
                if working {
                    std::hint::black_box(work(i));
                }
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
    for (group_name, working) in [("stream_chain_100000", false), ("stream_chain_100000_working", true)] {
        let mut group = c.benchmark_group(group_name);
        group.throughput(Throughput::Elements(N as u64));
        group.sample_size(10);
        let agent = chain(working);
        group.bench_function("unfollowed", |b| {
            b.to_async(&rt).iter(|| {
                let agent = agent.clone();
                async move { agent.run().await.unwrap() }
            })
        });
        group.bench_function("subscribed_unread", |b| {
            b.to_async(&rt).iter(|| {
                let agent = agent.clone();
                async move {
                    let events = agent.stream(StreamMode::ALL);
                    let result = agent.run().await.unwrap();
                    drop(events);
                    result
                }
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

    let mut floor = c.benchmark_group("stream_chain_100000");
    floor.throughput(Throughput::Elements(N as u64));
    floor.sample_size(10);
    floor.bench_function(BenchmarkId::new("event_floor", "clock_and_send_x3"), |b| {
        let (tx, _rx) = tokio::sync::broadcast::channel::<(SystemTime, u64)>(4096);
        b.iter(|| {
            for i in 0..(3 * N as u64) {
                let _ = tx.send((SystemTime::now(), i));
            }
        })
    });
    floor.finish();
}

criterion_group!(benches, stream);
criterion_main!(benches);
