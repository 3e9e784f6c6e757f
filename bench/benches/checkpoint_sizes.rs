//! Workload: checkpoints of contexts from 1 KB to 64 MB (1 KB, 64 KB, 1 MB, 16 MB, 64 MB of
//! JSON; keys each holding a list of numbers, at most 16 KiB a key), single-threaded work
//! timed by criterion:
//! - `to_json`: `create_checkpoint().to_json()` of a finished run on that context, against
//!   `serde_json::to_string` of the same data as the JSON values the context keeps
//!   (`set_state` stores each value as JSON);
//! - `from_json`: `Checkpoint::from_json` and `restore_from_checkpoint` on a fresh agent,
//!   against `serde_json::from_str` of the same data's text into JSON values, and into a map
//!   of `RawValue`s (each value checked and kept as text, which is what a restored context
//!   holds until a state reads the key). `Checkpoint::from_json` checks the context's JSON
//!   and keeps it as text; it is decoded when the restored run starts, so
//!   `agent_from_json_restore_run` adds that run (the run's one state is already complete),
//!   which compares with the parse into JSON values.
//!
//! Reported as bytes per second of checkpoint JSON. Sample sizes are small (10 from 1 MB up)
//! so the file runs in about two minutes.
//!
//! Reproduce: `cargo bench -p agent-bench --bench checkpoint_sizes`.

use std::collections::BTreeMap;

use agent::prelude::*;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};

const KB: usize = 1024;
const SIZES: [(usize, &str); 5] =
    [(KB, "1KB"), (64 * KB, "64KB"), (KB * KB, "1MB"), (16 * KB * KB, "16MB"), (64 * KB * KB, "64MB")];
/// About 6.1 bytes of JSON a number of these lists (mostly six digits, and a comma), in tenths.
const TENTHS_PER_NUMBER: usize = 61;

fn data(bytes: usize) -> BTreeMap<String, Vec<u64>> {
    let chunk = bytes.min(16 * KB);
    let keys = bytes / chunk;
    let per_key = (chunk * 10 / TENTHS_PER_NUMBER) as u64;
    (0..keys)
        .map(|k| (format!("key{k}"), (0..per_key).map(|n| (n + k as u64) * 1_000_003 % 999_983).collect()))
        .collect()
}

fn agent() -> Agent {
    let mut agent = Agent::new("sized");
    agent.add_state("work", |ctx: Context| async move {
        ctx.set_state("done", true);
        StateResult::End
    });
    agent
}

fn checkpoint_sizes(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut to_json = c.benchmark_group("checkpoint_to_json");
    let mut saved = Vec::new();
    for (bytes, label) in SIZES {
        let plain = data(bytes);
        let values = serde_json::to_value(&plain).unwrap();
        let ctx = Context::new();
        for (k, v) in &plain {
            ctx.set_state(k, v);
        }
        let finished = agent();
        let result = rt.block_on(finished.run_in(ctx)).expect("the run completes");
        assert_eq!(result.status(), AgentStatus::Completed);
        let json = finished.create_checkpoint().to_json().unwrap();
        // The checkpoint holds the whole context: restored, it gives back the same data.
        let fresh = agent();
        fresh.restore_from_checkpoint(Checkpoint::from_json(&json).unwrap()).unwrap();
        let restored = rt.block_on(fresh.run()).expect("the restored run completes");
        for (k, v) in plain.iter().take(3).chain(plain.iter().last()) {
            assert_eq!(restored.context().get_state::<Vec<u64>>(k).as_ref(), Some(v));
        }
        let value_json = serde_json::to_string(&values).unwrap();
        println!("{label}: checkpoint {} bytes of JSON, plain data {} bytes", json.len(), value_json.len());

        to_json.throughput(Throughput::Bytes(json.len() as u64));
        to_json.sample_size(if bytes >= KB * KB { 10 } else { 50 });
        to_json.bench_function(BenchmarkId::new("serde_json_value_to_string", label), |b| {
            b.iter(|| serde_json::to_string(&values).unwrap())
        });
        to_json.bench_function(BenchmarkId::new("agent_create_checkpoint_to_json", label), |b| {
            b.iter(|| finished.create_checkpoint().to_json().unwrap())
        });
        saved.push((bytes, label, json, value_json));
    }
    to_json.finish();

    let mut from_json = c.benchmark_group("checkpoint_from_json");
    for (bytes, label, json, value_json) in &saved {
        from_json.throughput(Throughput::Bytes(json.len() as u64));
        from_json.sample_size(if *bytes >= KB * KB { 10 } else { 50 });
        from_json.bench_function(BenchmarkId::new("serde_json_from_str_value", label), |b| {
            b.iter_batched(
                || (),
                |()| serde_json::from_str::<serde_json::Value>(value_json).unwrap(),
                BatchSize::PerIteration,
            )
        });
        from_json.bench_function(BenchmarkId::new("serde_json_from_str_raw_values", label), |b| {
            b.iter_batched(
                || (),
                |()| serde_json::from_str::<BTreeMap<String, Box<serde_json::value::RawValue>>>(value_json).unwrap(),
                BatchSize::PerIteration,
            )
        });
        from_json.bench_function(BenchmarkId::new("agent_from_json_restore", label), |b| {
            b.iter_batched(
                agent,
                |fresh| {
                    fresh.restore_from_checkpoint(Checkpoint::from_json(json).unwrap()).unwrap();
                    fresh
                },
                BatchSize::PerIteration,
            )
        });
        from_json.bench_function(BenchmarkId::new("agent_from_json_restore_run", label), |b| {
            b.to_async(&rt).iter_batched(
                agent,
                |fresh| async move {
                    fresh.restore_from_checkpoint(Checkpoint::from_json(json).unwrap()).unwrap();
                    let result = fresh.run().await.unwrap();
                    (fresh, result)
                },
                BatchSize::PerIteration,
            )
        });
    }
    from_json.finish();
}

criterion_group!(benches, checkpoint_sizes);
criterion_main!(benches);
