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
//! - `durable_transition`: one durable transition on a `SqliteStore` (WAL file), reported
//!   per transition, of a chain whose states each set one key of their own, with 20 and with
//!   2,000 states (the cost must not grow with the workflow: at most 25 µs for both), beside
//!   `sqlite_bare_commit`, the floor: the rows an append writes, committed by rusqlite alone
//!   on the same kind of file; and of
//!   a 1,000-transition loop changing one small key, with an empty context and with a 1 MB
//!   one (at most 2x the empty one: a transition writes what changed, not the context).
//! - `durable_concurrent`: 100 durable runs of a 20-state chain at once on one store,
//!   against one run alone; reported in transitions (so the throughput is transitions per
//!   second). On PostgreSQL when `AGENT_TEST_POSTGRES_URL` (or `AGENT_BENCH_POSTGRES_URL`)
//!   is set, on a SQLite WAL file otherwise. Target on PostgreSQL: at least 5x one run.
//! - `durable_postgres` (only with `AGENT_TEST_POSTGRES_URL` or `AGENT_BENCH_POSTGRES_URL`
//!   set): the 20-state chain's transition on a `PostgresStore`, against one bare `INSERT`
//!   of the same bytes (a journal entry's size) committed on one connection of the same
//!   server (synchronous commit: the floor), and `fenced_insert_commit`, that insert fed by
//!   a row's update checking an epoch in one statement (what an owner's fenced append must
//!   write at least). Target: at most 1.2x the bare insert. Also on a 200-state
//!   chain, where the run's setup weighs ten times less (a transition nearly in steady
//!   state).
//!
//! Reproduce: `cargo bench -p agent-bench --bench durable` (PostgreSQL rows:
//! `AGENT_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test cargo bench -p agent-bench --bench durable`).

use std::collections::BTreeMap;

use agent::prelude::*;
use std::sync::Arc;

use agent::store::{CheckpointStore, PostgresStore, SqliteStore};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

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

/// A chain of `n` states, `s0` … `s{n-1}`, each setting a key of its own.
fn keyed_chain(n: usize) -> Agent {
    let mut agent = Agent::new(format!("keyed_chain_{n}"));
    for i in 0..n {
        let next = (i + 1 < n).then(|| format!("s{}", i + 1));
        let key = format!("k{i}");
        agent.add_state(format!("s{i}"), move |ctx: Context| {
            let next = next.clone();
            let key = key.clone();
            async move {
                ctx.set_state(&key, i);
                match next {
                    Some(next) => StateResult::next(next),
                    None => StateResult::End,
                }
            }
        });
    }
    agent
}

const LOOP: u64 = 1_000;

/// One state looping `LOOP` times, changing one small key each time.
fn small_key_loop() -> Agent {
    let mut agent = Agent::new("small_key_loop");
    agent.add_state("step", |ctx: Context| async move {
        let n = ctx.get_state::<u64>("n").unwrap_or(0) + 1;
        ctx.set_state("n", n);
        if n < LOOP {
            StateResult::next("step")
        } else {
            StateResult::End
        }
    });
    agent
}

/// About 1 MB of context: 1,000 keys of about 1 KB each.
fn megabyte() -> Context {
    let ctx = Context::new();
    for k in 0..1_000 {
        ctx.set_state(&format!("blob{k}"), "x".repeat(1_000));
    }
    ctx
}

fn transitions(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("durable_transition");
    group.sample_size(10);
    // The floor: what the store's append writes (a journal row of a delta's size, the run
    // row's fenced update), as one rusqlite transaction with cached statements on a WAL file
    // with `synchronous=NORMAL`, as the store opens it; no runtime, no delta, no hop.
    let bare = rusqlite::Connection::open(dir.path().join("bare.db")).unwrap();
    bare.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0)).unwrap();
    bare.pragma_update(None, "synchronous", "NORMAL").unwrap();
    bare.execute_batch(
        "CREATE TABLE runs (run_id TEXT PRIMARY KEY, updated_ms INTEGER, last_seq INTEGER, epoch INTEGER);
         CREATE TABLE journal (run_id TEXT NOT NULL, seq INTEGER NOT NULL, payload TEXT NOT NULL,
             PRIMARY KEY (run_id, seq));
         INSERT INTO runs VALUES ('run', 0, 0, 1);",
    )
    .unwrap();
    let payload = "x".repeat(400);
    let mut seq = 0i64;
    group.throughput(Throughput::Elements(1));
    group.bench_function("sqlite_bare_commit", |b| {
        b.iter(|| {
            seq += 1;
            bare.prepare_cached("BEGIN IMMEDIATE").unwrap().execute([]).unwrap();
            bare.prepare_cached("UPDATE runs SET updated_ms = ?2, last_seq = ?2 WHERE run_id = ?1 AND epoch = 1")
                .unwrap()
                .execute(rusqlite::params!["run", seq])
                .unwrap();
            bare.prepare_cached("INSERT INTO journal (run_id, seq, payload) VALUES (?1, ?2, ?3)")
                .unwrap()
                .execute(rusqlite::params!["run", seq, payload])
                .unwrap();
            bare.prepare_cached("COMMIT").unwrap().execute([]).unwrap();
        })
    });
    for n in [20usize, 2_000] {
        let agent = keyed_chain(n).with_store(SqliteStore::open(dir.path().join(format!("chain{n}.db"))).unwrap());
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("sqlite_wal_{n}_states"), |b| b.to_async(&rt).iter(|| agent.run()));
    }
    let looping = small_key_loop().with_store(SqliteStore::open(dir.path().join("loop.db")).unwrap());
    group.throughput(Throughput::Elements(LOOP));
    group.bench_function("sqlite_wal_empty_context", |b| b.to_async(&rt).iter(|| looping.run()));
    let big = megabyte();
    group.bench_function("sqlite_wal_1mb_context", |b| {
        b.to_async(&rt).iter_batched(|| big.deep_clone(), |ctx| looping.run_in(ctx), BatchSize::PerIteration)
    });
    group.finish();
}

/// The PostgreSQL server to measure against, if one is named.
fn postgres_url() -> Option<String> {
    ["AGENT_BENCH_POSTGRES_URL", "AGENT_TEST_POSTGRES_URL"]
        .into_iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
}

/// A store on PostgreSQL in a schema of its own (dropped by the caller), or a SQLite file.
fn concurrent_store(rt: &tokio::runtime::Runtime, dir: &std::path::Path) -> (Arc<dyn CheckpointStore>, Option<String>) {
    match postgres_url() {
        Some(url) => {
            let schema = format!("agent_bench_{:016x}", fastrand::u64(..));
            let store = rt.block_on(PostgresStore::connect_with_schema(&url, &schema)).unwrap();
            (Arc::new(store), Some(schema))
        }
        None => (Arc::new(SqliteStore::open(dir.join("concurrent.db")).unwrap()), None),
    }
}

fn drop_schema(rt: &tokio::runtime::Runtime, schema: &str) {
    let Some(url) = postgres_url() else { return };
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await.unwrap();
    });
}

const RUNS: usize = 100;
const CHAIN_STATES: usize = 20;

fn concurrent(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (store, schema) = concurrent_store(&rt, dir.path());
    let agent = keyed_chain(CHAIN_STATES).with_store(store);
    let kind = if schema.is_some() { "postgres" } else { "sqlite_wal" };
    let mut group = c.benchmark_group("durable_concurrent");
    group.sample_size(10);
    group.throughput(Throughput::Elements(CHAIN_STATES as u64));
    group.bench_function(format!("{kind}_1_run"), |b| {
        b.to_async(&rt).iter(|| async { agent.start(RunOptions::new()).unwrap().await.unwrap() })
    });
    group.throughput(Throughput::Elements((CHAIN_STATES * RUNS) as u64));
    group.bench_function(format!("{kind}_{RUNS}_runs"), |b| {
        b.to_async(&rt).iter(|| {
            let runs: Vec<RunHandle> = (0..RUNS).map(|_| agent.start(RunOptions::new()).unwrap()).collect();
            async move {
                for r in runs {
                    r.await.unwrap();
                }
            }
        })
    });
    group.finish();
    if let Some(schema) = schema {
        drop_schema(&rt, &schema);
    }
}

/// The long chain of `durable_postgres`: a transition nearly in steady state.
const LONG_CHAIN: usize = 200;

fn postgres(c: &mut Criterion) {
    let Some(url) = postgres_url() else {
        eprintln!("durable_postgres skipped: set AGENT_TEST_POSTGRES_URL or AGENT_BENCH_POSTGRES_URL");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let schema = format!("agent_bench_{:016x}", fastrand::u64(..));
    let store = rt.block_on(PostgresStore::connect_with_schema(&url, &schema)).unwrap();
    let agent = keyed_chain(CHAIN_STATES).with_store(store.clone());
    let long = keyed_chain(LONG_CHAIN).with_store(store);
    let client = rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        client
            .batch_execute(&format!(
                "CREATE TABLE {schema}.bare (id bigserial PRIMARY KEY, run_id text NOT NULL, seq bigint NOT NULL, payload text NOT NULL)"
            ))
            .await
            .unwrap();
        client
    });
    // A journal entry of this chain is about this size (a state's record, the tokens, one key).
    let payload = "x".repeat(400);
    let insert = rt
        .block_on(client.prepare(&format!("INSERT INTO {schema}.bare (run_id, seq, payload) VALUES ($1, $2, $3)")))
        .unwrap();
    let mut group = c.benchmark_group("durable_postgres");
    group.sample_size(10);
    group.throughput(Throughput::Elements(1));
    let mut seq = 0i64;
    group.bench_function("bare_insert_commit", |b| {
        b.to_async(&rt).iter(|| {
            seq += 1;
            let (client, insert, payload) = (&client, &insert, &payload);
            async move { client.execute(insert, &[&"run", &seq, payload]).await.unwrap() }
        })
    });
    // The floor of a fenced write: the same insert fed by a row's update that checks an
    // epoch, in one statement, as an owner's append is (what the fence itself costs).
    let fenced = rt.block_on(async {
        client
            .batch_execute(&format!(
                "CREATE TABLE {schema}.owners (run_id text PRIMARY KEY, epoch bigint NOT NULL, last_seq bigint NOT NULL);
                 INSERT INTO {schema}.owners VALUES ('run', 1, 0)"
            ))
            .await
            .unwrap();
        client
            .prepare(&format!(
                "WITH owned AS (UPDATE {schema}.owners SET last_seq = $2 WHERE run_id = $1 AND epoch = 1 RETURNING run_id)
                 INSERT INTO {schema}.bare (run_id, seq, payload) SELECT run_id, $2, $3 FROM owned"
            ))
            .await
            .unwrap()
    });
    group.bench_function("fenced_insert_commit", |b| {
        b.to_async(&rt).iter(|| {
            seq += 1;
            let (client, fenced, payload) = (&client, &fenced, &payload);
            async move { assert_eq!(client.execute(fenced, &[&"run", &seq, payload]).await.unwrap(), 1) }
        })
    });
    group.throughput(Throughput::Elements(CHAIN_STATES as u64));
    group.bench_function("transition_20_states", |b| b.to_async(&rt).iter(|| agent.run()));
    // The same on a chain ten times longer: the run's setup (claim, first snapshots, release)
    // spread over 200 transitions, so this is close to a transition in steady state.
    group.throughput(Throughput::Elements(LONG_CHAIN as u64));
    group.bench_function("transition_200_states", |b| b.to_async(&rt).iter(|| long.run()));
    group.finish();
    drop(client);
    drop_schema(&rt, &schema);
}

criterion_group!(benches, checkpoints, durable, transitions, concurrent, postgres);
criterion_main!(benches);
