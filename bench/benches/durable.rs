//! Workloads of durable runs, each beside its baseline:
//! - `checkpoint_10mb`: `create_checkpoint().to_json()` of a run whose context holds about
//!   10 MB (1,000 keys, each a list of 1,000 numbers), against `serde_json::to_string` of the
//!   same data, both as the Rust map and as the JSON values the context keeps (`set_state`
//!   stores each value as JSON). Target: at most 2x.
//! - `restore_10mb`: `Checkpoint::from_json` of that checkpoint, `restore_from_checkpoint`
//!   and the run of its one remaining state, against `serde_json::from_str` of the same
//!   text into the Rust map and into JSON values.
//! - `durable_chain`: a chain of 100 states recording every completion in a `SqliteStore`
//!   (a WAL file in a temporary directory), against the same chain with no store; reported
//!   per transition. Target: at most 100 µs a transition.
//!
//! Reproduce: `cargo bench -p agent-bench --bench durable`.

use std::collections::BTreeMap;

use agent::prelude::*;
use agent::store::SqliteStore;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const KEYS: usize = 1_000;
const NUMBERS: u64 = 1_000;

fn data() -> BTreeMap<String, Vec<u64>> {
    (0..KEYS).map(|k| (format!("key{k}"), (0..NUMBERS).map(|n| n * 1_000_003 % 999_983).collect())).collect()
}

fn big_context() -> Context {
    let ctx = Context::new();
    for (k, v) in data() {
        ctx.set_state(&k, v);
    }
    ctx
}

/// A finished two-state run on the big context, stopped before its second state.
fn two_states() -> Agent {
    let mut agent = Agent::new("big");
    agent.add_state("first", |_ctx: Context| async { StateResult::next("second") });
    agent.add_state("second", |ctx: Context| async move {
        ctx.set_state("done", true);
        StateResult::End
    });
    agent
}

fn checkpoints(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let plain = data();
    let json = serde_json::to_string(&plain).unwrap();
    let mut group = c.benchmark_group("checkpoint_10mb");
    group.sample_size(20).throughput(Throughput::Bytes(json.len() as u64));
    group.bench_function("serde_json_to_string", |b| b.iter(|| serde_json::to_string(&plain).unwrap()));
    // The same data as the context keeps it (each value as JSON, `set_state`'s encoding).
    let as_values = serde_json::to_value(&plain).unwrap();
    group.bench_function("serde_json_value_to_string", |b| b.iter(|| serde_json::to_string(&as_values).unwrap()));
    let agent = two_states();
    rt.block_on(agent.run_in(big_context())).unwrap();
    group
        .bench_function("agent_create_checkpoint_to_json", |b| b.iter(|| agent.create_checkpoint().to_json().unwrap()));
    group.finish();

    // A checkpoint with `second` still to run: first fails, is fixed, and goes on.
    let failing = {
        let mut agent = Agent::new("big");
        agent.add_state("first", |_ctx: Context| async { StateResult::next("second") });
        agent.add_state("second", |_ctx: Context| async { Err::<StateResult, _>(std::io::Error::other("stop here")) });
        agent
    };
    let err = rt.block_on(failing.run_in(big_context())).unwrap_err();
    let saved = err.checkpoint().unwrap().to_json().unwrap();
    let mut group = c.benchmark_group("restore_10mb");
    group.sample_size(10).throughput(Throughput::Bytes(saved.len() as u64));
    group.bench_function("serde_json_from_str", |b| {
        b.iter(|| serde_json::from_str::<BTreeMap<String, Vec<u64>>>(&json).unwrap())
    });
    group.bench_function("serde_json_from_str_value", |b| {
        b.iter(|| serde_json::from_str::<serde_json::Value>(&json).unwrap())
    });
    group.bench_function("agent_from_json_restore_run", |b| {
        b.to_async(&rt).iter(|| async {
            let agent = two_states();
            agent.restore_from_checkpoint(Checkpoint::from_json(&saved).unwrap()).unwrap();
            agent.run().await.unwrap()
        })
    });
    group.finish();
}

const CHAIN: u64 = 100;

fn chain() -> Agent {
    let mut agent = Agent::new("durable_chain");
    agent.add_state("step", |ctx: Context| async move {
        let mut n = 0;
        ctx.update_state("n", |v: &mut u64| {
            *v += 1;
            n = *v;
        })
        .unwrap();
        if n < CHAIN {
            StateResult::next("step")
        } else {
            StateResult::End
        }
    });
    agent
}

fn durable(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stored = chain().with_store(SqliteStore::open(dir.path().join("runs.db")).unwrap());
    let memory = chain();
    let fresh = || {
        let ctx = Context::new();
        ctx.set_state("n", 0u64);
        ctx
    };
    let mut group = c.benchmark_group("durable_chain");
    group.sample_size(10).throughput(Throughput::Elements(CHAIN));
    group.bench_function("no_store", |b| b.to_async(&rt).iter(|| memory.run_in(fresh())));
    group.bench_function("sqlite_wal", |b| b.to_async(&rt).iter(|| stored.run_in(fresh())));
    group.finish();
}

criterion_group!(benches, checkpoints, durable);
criterion_main!(benches);
