//! Recovery from a store whose snapshots are damaged, and what an `on_error` handler reads
//! after a restore or a recovery, on SQLite (a temporary file) and PostgreSQL (a schema of
//! its own, dropped afterwards).
//!
//! A first "process" runs until a state hangs (as if killed there), its task is dropped, and
//! the test damages the store's rows behind the store's back, as a bad disk or a write cut
//! short would. The PostgreSQL tests read `AGENT_TEST_POSTGRES_URL`; without it they print
//! that they are skipped, unless `CI=true`, where they fail.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_core::{AgentError, Checkpoint, CheckpointError, Context, RetryPolicy, StateResult};
use agent_runtime::store::{CheckpointStore, MemoryStore, RunQuery, RunRecord, Snapshot, SqliteStore, StoreError};
use agent_runtime::{Agent, AgentStatus, EventKind};

mod common;
use common::{trail, visit};

type Log = Arc<Mutex<Vec<String>>>;
type Garble = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The chain a → b → c → d; each state logs its run in `log` (outside the context); `c`
/// hangs when `hang` (the first process dies there).
fn chain(store: impl CheckpointStore, log: &Log, hang: bool) -> Agent {
    let mut agent = Agent::new("chain").with_store(store);
    for (name, next) in [("a", Some("b")), ("b", Some("c")), ("c", Some("d")), ("d", None)] {
        let log = log.clone();
        agent.add_state(name, move |ctx: Context| {
            let log = log.clone();
            async move {
                if hang && name == "c" {
                    std::future::pending::<()>().await;
                }
                log.lock().unwrap().push(name.to_owned());
                visit(&ctx, name);
                next.map_or(StateResult::End, StateResult::next)
            }
        });
    }
    agent
}

/// Run `agent` until the store's newest snapshot of its run satisfies `ready`, then drop
/// the run's task (nothing more is written, as when the process is killed); the run's id.
async fn crash_when(agent: Agent, store: &dyn CheckpointStore, ready: impl Fn(&Checkpoint) -> bool) -> String {
    let running = tokio::spawn(async move { agent.run().await });
    let run_id = loop {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let runs = store.list_runs(&RunQuery::default()).await.unwrap();
        let Some(run) = runs.first() else { continue };
        let Some(c) = agent_runtime::store::read_checkpoint(store, &run.run_id).await.unwrap() else { continue };
        if ready(&c) {
            break run.run_id.clone();
        }
    };
    running.abort();
    let _ = running.await;
    run_id
}

/// Damage the newest snapshot of a run (cut it short, or write `with` over it), or all.
#[derive(Clone, Copy, Debug)]
enum Damage {
    TruncateNewest,
    ReplaceNewest(&'static str, &'static str),
    GarbleAll,
}

/// What a recovery after damage gave.
struct Outcome {
    /// The recovery's result.
    result: Result<agent_runtime::AgentResult, AgentError>,
    /// The events the second process saw.
    seen: Vec<EventKind>,
    /// What its states ran.
    ran: Vec<String>,
    /// The run as of its last commit, before the damage.
    rebuilt: Checkpoint,
    /// The snapshots the store held before the damage, newest first, and their `seq`s.
    kept: Vec<Checkpoint>,
    seqs: Vec<u64>,
}

/// The chain crashes inside `c`; `damage` is done to its rows; a second process recovers.
async fn crash_damage_recover<S: CheckpointStore + Clone>(store: S, damage: impl FnOnce(String) -> Garble) -> Outcome {
    let first_log = Log::default();
    let run_id = crash_when(chain(store.clone(), &first_log, true), &store, |c| c.running_states() == ["c"]).await;
    let kept = store.snapshots(&run_id, 8).await.unwrap();
    assert!(kept.len() >= 2, "a run keeps more than its newest snapshot");
    let seqs = kept.iter().map(|s| s.seq).collect();
    let kept: Vec<Checkpoint> = kept.iter().map(|s| Checkpoint::from_json(&s.data).unwrap()).collect();
    // What the older snapshot and the journal after it hold: the run as of its last commit.
    let rebuilt = agent_runtime::store::read_checkpoint(&store, &run_id).await.unwrap().unwrap();
    damage(run_id.clone()).await;

    let log = Log::default();
    let second = chain(store.clone(), &log, false);
    let mut events = second.events();
    let result = second.recover(&run_id).await;
    let mut seen = Vec::new();
    if result.is_ok() {
        while let Some(e) = events.next().await {
            let done = matches!(e.kind, EventKind::RunFinished { .. });
            assert_eq!(&*e.run_id, run_id);
            seen.push(e.kind);
            if done {
                break;
            }
        }
    } else {
        // Nothing ran: the only events are the skipped snapshots.
        while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(50), events.next()).await {
            seen.push(e.kind);
        }
    }
    let ran = log.lock().unwrap().clone();
    Outcome { result, seen, ran, kept, seqs, rebuilt }
}

/// The recovery went on from the second newest snapshot, reporting the newest as skipped.
fn went_on_from_the_older(outcome: Outcome) {
    let Outcome { result, seen, ran, kept, seqs, rebuilt } = outcome;
    let result = result.expect("recovered from the older snapshot");
    assert_eq!(result.status(), AgentStatus::Completed);
    assert_eq!(trail(result.context()), ["a", "b", "c", "d"], "each state once in the run's own record");
    let skipped: Vec<u64> = (seen.iter())
        .filter_map(|k| match k {
            EventKind::CheckpointSkipped { seq, reason } => {
                assert!(!reason.is_empty());
                Some(*seq)
            }
            _ => None,
        })
        .collect();
    assert_eq!(skipped, [seqs[0]], "the newest snapshot, and only it, was skipped");
    // The second process ran what the older snapshot, with the journal after it (the
    // deltas of the commits since), had in flight, then the rest.
    assert!(kept.len() >= 2);
    let older = &rebuilt;
    let from = older.running_states()[0];
    let order = ["a", "b", "c", "d"];
    let start = order.iter().position(|s| *s == from).unwrap();
    assert_eq!(ran, order[start..]);
    assert_eq!(older.completed_states, order[..start]);
}

fn all_unusable(outcome: Outcome) {
    let Outcome { result, seen, ran, seqs, .. } = outcome;
    match result {
        Err(AgentError::Checkpoint(CheckpointError::NoUsableSnapshot { tried, newest, .. })) => {
            assert_eq!(tried, seqs.len());
            assert!(matches!(*newest, CheckpointError::Json(_)), "{newest:?}");
        }
        other => panic!("expected NoUsableSnapshot, got {other:?}"),
    }
    assert!(ran.is_empty(), "nothing ran");
    assert_eq!(seen.iter().filter(|k| matches!(k, EventKind::CheckpointSkipped { .. })).count(), seqs.len());
}

/// `snapshots` lists a run's newest snapshots, newest first, at most `limit`.
async fn snapshots_are_listed_newest_first(store: &dyn CheckpointStore) {
    let run = RunRecord::new("r", "chain", AgentStatus::Running, 1, 1);
    store.upsert_run(&run).await.unwrap();
    for (seq, taken_ms) in [(1, 10), (4, 5), (2, 30), (3, 7)] {
        let snapshot = Snapshot { seq, taken_ms, data: format!("{seq}/{taken_ms}") };
        store.save_snapshot("r", 0, &snapshot).await.unwrap();
    }
    let listed = |limit| async move {
        store.snapshots("r", limit).await.unwrap().into_iter().map(|s| s.data).collect::<Vec<_>>()
    };
    assert_eq!(listed(8).await, ["4/5", "3/7", "2/30", "1/10"]);
    assert_eq!(listed(2).await, ["4/5", "3/7"]);
    assert!(listed(0).await.is_empty());
    assert_eq!(store.latest_snapshot("r").await.unwrap().unwrap().data, listed(1).await[0]);
    assert!(store.snapshots("no-such-run", 8).await.unwrap().is_empty());
}

#[tokio::test]
async fn memory_snapshots_are_listed_newest_first() {
    snapshots_are_listed_newest_first(&MemoryStore::new()).await;
}

#[tokio::test]
async fn sqlite_snapshots_are_listed_newest_first() {
    let (_dir, _path, store) = sqlite_file();
    snapshots_are_listed_newest_first(&store).await;
}

/// Any store: a damaged snapshot written after the good ones (as a write cut short would
/// leave it) gives way to the newest good one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_a_damaged_newest_snapshot_falls_back_to_the_one_before() {
    let store = MemoryStore::new();
    let damage = {
        let store = store.clone();
        move |run_id: String| -> Garble {
            Box::pin(async move {
                let newest = store.latest_snapshot(&run_id).await.unwrap().unwrap();
                let cut =
                    Snapshot { seq: newest.seq + 1, taken_ms: newest.taken_ms, data: newest.data[..10].to_owned() };
                let epoch = store.get_run(&run_id).await.unwrap().unwrap().epoch;
                store.save_snapshot(&run_id, epoch, &cut).await.unwrap();
            })
        }
    };
    let first_log = Log::default();
    let run_id = crash_when(chain(store.clone(), &first_log, true), &store, |c| c.running_states() == ["c"]).await;
    let newest_good = agent_runtime::store::read_checkpoint(&store, &run_id).await.unwrap().unwrap();
    damage(run_id.clone()).await;
    let log = Log::default();
    let second = chain(store.clone(), &log, false);
    let mut events = second.events();
    let result = second.recover(&run_id).await.unwrap();
    assert_eq!(trail(result.context()), ["a", "b", "c", "d"]);
    assert_eq!(newest_good.running_states(), ["c"]);
    assert_eq!(*log.lock().unwrap(), ["c", "d"], "it went on from the newest good snapshot");
    let first = events.next().await.unwrap();
    assert!(matches!(first.kind, EventKind::CheckpointSkipped { .. }), "{first:?}");
}

// ----- SQLite ------------------------------------------------------------------------------

fn sqlite_damage(path: std::path::PathBuf, damage: Damage) -> impl FnOnce(String) -> Garble {
    move |run_id: String| {
        Box::pin(async move {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.busy_timeout(Duration::from_secs(10)).unwrap();
            let newest = "id = (SELECT id FROM agent_snapshots WHERE run_id = ?1
                                ORDER BY seq DESC, taken_ms DESC, id DESC LIMIT 1)";
            let changed = match damage {
                Damage::TruncateNewest => conn
                    .execute(&format!("UPDATE agent_snapshots SET data = substr(data, 1, length(data) / 2) WHERE {newest}"), [&run_id])
                    .unwrap(),
                Damage::ReplaceNewest(from, to) => conn
                    .execute(&format!("UPDATE agent_snapshots SET data = replace(data, ?2, ?3) WHERE {newest}"), [&run_id, from, to])
                    .unwrap(),
                Damage::GarbleAll => conn
                    .execute("UPDATE agent_snapshots SET data = '{\"format\":\"agent-checkpoint\",\"schem' WHERE run_id = ?1", [&run_id])
                    .unwrap(),
            };
            assert!(changed >= 1);
        })
    }
}

fn sqlite_file() -> (tempfile::TempDir, std::path::PathBuf, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.db");
    let store = SqliteStore::open(&path).unwrap();
    (dir, path, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_truncated_newest_snapshot_falls_back_to_the_one_before() {
    let (_dir, path, store) = sqlite_file();
    went_on_from_the_older(crash_damage_recover(store, sqlite_damage(path, Damage::TruncateNewest)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_an_invalid_newest_snapshot_falls_back_to_the_one_before() {
    // Still JSON, still a checkpoint, but its token count is 0: a run never writes that.
    let (_dir, path, store) = sqlite_file();
    let damage = Damage::ReplaceNewest("\"count\":1", "\"count\":0");
    went_on_from_the_older(crash_damage_recover(store, sqlite_damage(path, damage)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_every_snapshot_damaged_is_a_typed_error() {
    let (_dir, path, store) = sqlite_file();
    all_unusable(crash_damage_recover(store, sqlite_damage(path, Damage::GarbleAll)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_newer_snapshot_is_refused_not_skipped() {
    let (_dir, path, store) = sqlite_file();
    let damage = Damage::ReplaceNewest("\"schema_version\":5", "\"schema_version\":99");
    let Outcome { result, seen, ran, .. } = crash_damage_recover(store, sqlite_damage(path, damage)).await;
    assert!(matches!(result, Err(AgentError::Checkpoint(CheckpointError::TooNew { found: 99, .. }))), "{result:?}");
    assert!(ran.is_empty() && seen.is_empty());
}

/// The schema version this build writes.
const SCHEMA: u32 = 10;

#[test]
fn sqlite_a_schema_table_with_the_current_version_and_99_is_refused() {
    let (_dir, path, store) = sqlite_file();
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute("INSERT INTO agent_schema (version) VALUES (99)", []).unwrap();
    let rows: Vec<i64> = {
        let mut st = conn.prepare("SELECT version FROM agent_schema ORDER BY rowid").unwrap();
        st.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    };
    assert_eq!(rows, [i64::from(SCHEMA), 99]);
    match SqliteStore::open(&path) {
        Err(StoreError::SchemaTooNew { found: 99, supported: SCHEMA, .. }) => {}
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    conn.execute("UPDATE agent_schema SET version = ?1", [SCHEMA]).unwrap();
    match SqliteStore::open(&path) {
        Err(StoreError::SchemaAmbiguous { rows: 2, lowest, highest, .. })
            if (lowest, highest) == (i64::from(SCHEMA), i64::from(SCHEMA)) => {}
        other => panic!("expected SchemaAmbiguous, got {other:?}"),
    }
}

// ----- ctx.last_error() across checkpoints ---------------------------------------------------

/// An error with a source, as a real client error has.
#[derive(Debug)]
struct Outer(std::io::Error);

impl fmt::Display for Outer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("fetch failed")
    }
}

impl StdError for Outer {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.0)
    }
}

/// What a handler read: state, attempts, message, sources.
type Read = Arc<Mutex<Vec<(String, u32, String, Vec<String>)>>>;

/// `fetch` always fails (after one retry); its `on_error` handler `recover` reads the failure
/// into `read`, then waits `wait` (forever if `None`) before ending.
fn failing(store: Option<SqliteStore>, read: &Read, wait: Option<Duration>) -> Agent {
    let mut agent = Agent::new("errors");
    if let Some(store) = store {
        agent = agent.with_store(store);
    }
    agent
        .add_state("fetch", |_ctx: Context| async {
            Err::<StateResult, _>(Outer(std::io::Error::other("connection refused")))
        })
        .retry_policy(RetryPolicy {
            max_retries: 1,
            initial_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
            exponential_base: 1.0,
            jitter: false,
        })
        .on_error("recover");
    let read = read.clone();
    agent.add_state("recover", move |ctx: Context| {
        let read = read.clone();
        async move {
            let e = ctx.last_error();
            let sources = e
                .as_ref()
                .map(|e| std::iter::successors(e.error.source(), |s| (*s).source()).map(|s| s.to_string()).collect())
                .unwrap_or_default();
            let entry = e.map_or_else(Default::default, |e| (e.state, e.attempts, e.error.to_string(), sources));
            read.lock().unwrap().push(entry);
            match wait {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
            StateResult::End
        }
    });
    agent
}

fn expected_read() -> (String, u32, String, Vec<String>) {
    ("fetch".to_owned(), 2, "fetch failed".to_owned(), vec!["connection refused".to_owned()])
}

#[tokio::test(start_paused = true)]
async fn a_restored_handler_reads_the_same_last_error() {
    let read = Read::default();
    let agent = failing(None, &read, Some(Duration::from_millis(100)));
    let running = tokio::spawn({
        let agent = agent.clone();
        async move { agent.run().await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Between the failure and the handler's end: the handler runs again on restore.
    let checkpoint = Checkpoint::from_json(&agent.create_checkpoint().to_json().unwrap()).unwrap();
    assert_eq!(checkpoint.running_states(), ["recover"]);
    running.await.unwrap().unwrap();
    assert_eq!(*read.lock().unwrap(), [expected_read()]);

    let again = Read::default();
    let restored = failing(None, &again, Some(Duration::from_millis(1)));
    restored.restore_from_checkpoint(checkpoint).unwrap();
    restored.run().await.unwrap();
    assert_eq!(*again.lock().unwrap(), [expected_read()], "the restored handler reads the same failure");
}

/// LangGraph's `test_error_handler_resumes_after_crash`: the process dies inside the error
/// handler; the recovered handler still knows what failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_handler_resumes_after_crash_with_the_same_last_error() {
    let (_dir, path, store) = sqlite_file();
    let read = Read::default();
    let first = failing(Some(store.clone()), &read, None);
    let run_id = crash_when(first, &store, |c| c.running_states() == ["recover"] && c.last_error.is_some()).await;
    // The first handler may or may not have started before the process died.
    assert!(read.lock().unwrap().iter().all(|r| *r == expected_read()));

    let again = Read::default();
    let second = failing(Some(SqliteStore::open(&path).unwrap()), &again, Some(Duration::from_millis(1)));
    let result = second.recover(&run_id).await.unwrap();
    assert_eq!(result.status(), AgentStatus::Completed);
    assert_eq!(*again.lock().unwrap(), [expected_read()], "the recovered handler reads the same failure");
}

// ----- PostgreSQL ----------------------------------------------------------------------------

mod postgres {
    use super::*;
    use agent_runtime::store::PostgresStore;

    const URL_VAR: &str = "AGENT_TEST_POSTGRES_URL";

    fn url(test: &str) -> Option<String> {
        match std::env::var(URL_VAR) {
            Ok(url) if !url.is_empty() => Some(url),
            _ => {
                assert!(std::env::var("CI").as_deref() != Ok("true"), "{URL_VAR} must be set when CI=true ({test})");
                eprintln!("skipped postgres test {test}: {URL_VAR} is not set");
                None
            }
        }
    }

    async fn raw(url: &str, schema: &str) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client.batch_execute(&format!("SET search_path TO \"{schema}\"")).await.unwrap();
        client
    }

    /// Run `body` with a URL and a schema of its own, dropped afterwards whatever happens.
    async fn with_schema<F, Fut>(test: &str, body: F)
    where
        F: FnOnce(String, String) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(url) = url(test) else { return };
        let schema = format!("agent_test_{test}_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let outcome = tokio::spawn(body(url.clone(), schema.clone())).await;
        crate::common::pg::drop_schema(&url, &schema).await;
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    }

    fn damage(url: String, schema: String, damage: Damage) -> impl FnOnce(String) -> Garble {
        move |run_id: String| {
            Box::pin(async move {
                let client = raw(&url, &schema).await;
                let newest = "id = (SELECT id FROM agent_snapshots WHERE run_id = $1
                                    ORDER BY seq DESC, taken_ms DESC, id DESC LIMIT 1)";
                let changed = match damage {
                    Damage::TruncateNewest => client
                        .execute(
                            &format!("UPDATE agent_snapshots SET data = left(data, length(data) / 2) WHERE {newest}"),
                            &[&run_id],
                        )
                        .await
                        .unwrap(),
                    Damage::ReplaceNewest(from, to) => client
                        .execute(
                            &format!("UPDATE agent_snapshots SET data = replace(data, $2, $3) WHERE {newest}"),
                            &[&run_id, &from, &to],
                        )
                        .await
                        .unwrap(),
                    Damage::GarbleAll => client
                        .execute("UPDATE agent_snapshots SET data = '{\"format\":' WHERE run_id = $1", &[&run_id])
                        .await
                        .unwrap(),
                };
                assert!(changed >= 1);
            })
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_truncated_newest_snapshot_falls_back_to_the_one_before() {
        with_schema("ckpt_truncated", |url, schema| async move {
            let store = PostgresStore::connect_with_schema(&url, &schema).await.unwrap();
            went_on_from_the_older(crash_damage_recover(store, damage(url, schema, Damage::TruncateNewest)).await);
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_invalid_newest_snapshot_falls_back_to_the_one_before() {
        with_schema("ckpt_invalid", |url, schema| async move {
            let store = PostgresStore::connect_with_schema(&url, &schema).await.unwrap();
            let how = Damage::ReplaceNewest("\"count\":1", "\"count\":0");
            went_on_from_the_older(crash_damage_recover(store, damage(url, schema, how)).await);
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_snapshot_damaged_is_a_typed_error() {
        with_schema("ckpt_all", |url, schema| async move {
            let store = PostgresStore::connect_with_schema(&url, &schema).await.unwrap();
            all_unusable(crash_damage_recover(store, damage(url, schema, Damage::GarbleAll)).await);
        })
        .await;
    }

    #[tokio::test]
    async fn snapshots_are_listed_newest_first() {
        with_schema("ckpt_list", |url, schema| async move {
            let store = PostgresStore::connect_with_schema(&url, &schema).await.unwrap();
            super::snapshots_are_listed_newest_first(&store).await;
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_schema_table_with_several_rows_is_refused() {
        with_schema("ckpt_schema", |url, schema| async move {
            drop(PostgresStore::connect_with_schema(&url, &schema).await.unwrap());
            let client = raw(&url, &schema).await;
            client.execute("INSERT INTO agent_schema (version) VALUES (99)", &[]).await.unwrap();
            match PostgresStore::connect_with_schema(&url, &schema).await {
                Err(StoreError::SchemaTooNew { found: 99, supported: super::SCHEMA, .. }) => {}
                other => panic!("expected SchemaTooNew, got {:?}", other.map(|_| ())),
            }
            client.execute("UPDATE agent_schema SET version = 6", &[]).await.unwrap();
            match PostgresStore::connect_with_schema(&url, &schema).await {
                Err(StoreError::SchemaAmbiguous { rows: 2, lowest: 6, highest: 6, .. }) => {}
                other => panic!("expected SchemaAmbiguous, got {:?}", other.map(|_| ())),
            }
            // Left untouched: still the two rows.
            let rows = client.query("SELECT version FROM agent_schema", &[]).await.unwrap();
            assert_eq!(rows.len(), 2);
        })
        .await;
    }
}
