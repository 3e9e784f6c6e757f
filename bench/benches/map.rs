//! Workload: a map over 100,000 no-op items (`StateResult::map("work", 0..100_000)`: each
//! branch reads its item and sets it as its result), then the join, which reads the 100,000
//! results in item order, on a 2-worker tokio runtime, the whole run awaited inside the
//! timed region.
//!
//! Baseline, measured in the same run: `fanout`, a plain fan-out of the same width
//! (`StateResult::parallel(vec!["work"; 100_000])`) whose branches do nothing, then the same
//! join. Against it, `map`. Target (the composition issue): at most 1.5x the baseline.
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

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut group = c.benchmark_group("map_100000");
    group.throughput(Throughput::Elements(u64::from(N)));
    group.sample_size(10);
    for (name, agent) in [("fanout", fan_out()), ("map", map())] {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| {
                let agent = agent.clone();
                async move { agent.run().await.unwrap() }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
