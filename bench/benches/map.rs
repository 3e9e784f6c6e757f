//! Workload: a map over 100,000 no-op items (`StateResult::map("work", 0..100_000)`: each
//! branch reads its item and sets it as its result), then the join, which reads the 100,000
//! results in item order, on a 2-worker tokio runtime, the whole run awaited inside the
//! timed region.
//!
//! Baseline, measured in the same run: `fanout`, a plain fan-out of the same width
//! (`StateResult::parallel(vec!["work"; 100_000])`) whose branches do nothing, then the same
//! join. Against it, `map`. Target (the composition issue): at most 1.5x the baseline.
//!
//! Beside them, `bare`: the same map whose branches neither read their item nor set a
//! result, and whose join reads nothing: what the engine's bookkeeping of a map costs
//! (branch identities, window, results gathered) apart from the user's encoding.
//!
//! Paired: each timed run of one is preceded by an untimed run of the other, so both are
//! sampled under the same conditions (on a shared VM, the machine's speed drifts between
//! two groups measured one after the other by more than the difference measured).
//!
//! Reproduce: `cargo bench -p agent-bench --bench map`.

use agent::prelude::*;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const N: u32 = 100_000;

fn fan_out() -> Agent {
    let mut agent = Agent::new("fanout");
    agent.add_state("split", |_c: Context| async { StateResult::parallel(vec!["work"; N as usize]) });
    agent.add_state("work", |_c: Context| async { StateResult::next("join") });
    agent.add_state("join", |_c: Context| async { StateResult::End });
    agent
}

fn map() -> Agent {
    let mut agent = Agent::new("map");
    agent.add_state("split", |_c: Context| async { StateResult::map("work", 0..N) });
    agent.add_state("work", |c: Context| async move {
        let item: u32 = c.item().unwrap();
        c.set_result(item).unwrap();
        StateResult::next("join")
    });
    agent.add_state("join", |c: Context| async move {
        let results: Vec<u32> = c.results().unwrap();
        assert_eq!(results.len(), N as usize);
        StateResult::End
    });
    agent
}

fn map_bare() -> Agent {
    let mut agent = Agent::new("bare_map");
    agent.add_state("split", |_c: Context| async { StateResult::map("work", 0..N) });
    agent.add_state("work", |_c: Context| async move { StateResult::next("join") });
    agent.add_state("join", |_c: Context| async move { StateResult::End });
    agent
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut group = c.benchmark_group("map_100000");
    group.throughput(Throughput::Elements(u64::from(N)));
    group.sample_size(10);
    let (fan, map) = (fan_out(), map());
    let bare = map_bare();
    for (name, timed, other) in [("fanout", &fan, &map), ("map", &map, &fan), ("bare", &bare, &fan)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut spent = std::time::Duration::ZERO;
                    for _ in 0..iters {
                        other.run().await.unwrap();
                        let t = std::time::Instant::now();
                        timed.run().await.unwrap();
                        spent += t.elapsed();
                    }
                    spent
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
