//! Signals (`Agent::signal` to `ctx.wait_for_signal`), translated from Temporal's and DBOS's
//! messaging tests (`test_send_recv`, `test_send_before_recv`, an idempotent send): a signal
//! sent before the wait is kept and delivered when the wait comes, one sent during it wakes
//! it, one sent twice with one id is delivered once; a wait times out, a payload of the
//! wrong type is an error naming the signal; a signal to a finished or unknown run is
//! refused. A state run again after its process stopped gets the signal its first run took.
//! Across processes: a child process (this test binary) sends a signal through a shared
//! SQLite file to a run waiting here; the command line's `signal` and the console's
//! `POST runs/{id}/signals/{name}` reach a waiting run through the store.

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use agent_core::{AgentError, Context, StateResult, WaitError};
use agent_runtime::store::{CheckpointStore, MemoryStore};
use agent_runtime::{Agent, AgentStatus, RunOptions, SignalError};

mod common;
use common::pg::on_postgres;
use common::{on_sqlite, spawn_run};

const MINUTE: Duration = Duration::from_secs(60);
const SECOND: Duration = Duration::from_secs(1);

/// `first -> pay`: `first` sleeps a `unit` (a signal can be sent meanwhile, before any
/// wait); `pay` waits for two `payment` signals (u64 cents), each for at most ten units,
/// and records what it got (`got`, or `timed_out` for a wait that got nothing). A unit is
/// a minute in paused time, a second on the SQL stores (whose drivers keep real time).
fn orders(store: Arc<dyn CheckpointStore>, unit: Duration) -> Agent {
    let mut agent = Agent::new("orders").with_store(store);
    agent.add_state("first", move |ctx: Context| async move {
        ctx.sleep(unit).await?;
        Ok::<_, WaitError>(StateResult::next("pay"))
    });
    agent.add_state("pay", move |ctx: Context| async move {
        let mut got = Vec::new();
        for _ in 0..2 {
            match ctx.wait_for_signal::<u64>("payment").timeout(10 * unit).await {
                Ok(cents) => got.push(cents),
                Err(WaitError::TimedOut { name, after }) => {
                    assert_eq!((name.as_str(), after), ("payment", 10 * unit));
                    ctx.set_state("timed_out", true);
                }
                Err(e) => return Err(e),
            }
        }
        ctx.set_state("got", got);
        Ok(StateResult::End)
    });
    agent
}

/// Wait (in virtual time) until the agent's run is at `state`.
async fn until_at(agent: &Agent, state: &str) {
    for _ in 0..10_000 {
        if agent.run_id().is_some() && agent.state_status(state) == Some(agent_runtime::StateStatus::Running) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the run never reached `{state}`");
}

/// Wait (real time, bounded) until run `run_id`'s row is in `store`: its first commit,
/// just after it starts.
async fn until_stored(store: &dyn CheckpointStore, run_id: &str) {
    for _ in 0..3000 {
        if store.get_run(run_id).await.unwrap().is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("run {run_id} never reached the store");
}

async fn before_during_and_twice(store: Arc<dyn CheckpointStore>, unit: Duration) {
    let agent = orders(store.clone(), unit);
    let run = spawn_run(&agent);
    until_at(&agent, "first").await;
    let run_id = agent.run_id().unwrap();
    // Before any wait: kept.
    let sent = agent.signal_with_id(&run_id, "payment", "pay-1", &1200u64).await.unwrap();
    assert!(!sent.duplicate);
    // The same id again (a retried webhook): nothing kept.
    let again = agent.signal_with_id(&run_id, "payment", "pay-1", &1200u64).await.unwrap();
    assert!(again.duplicate, "a second send with one id keeps nothing");
    // Another signal's name does not reach `payment` waits.
    agent.signal(&run_id, "refund", &5u64).await.unwrap();
    // During the second wait: wakes it.
    until_at(&agent, "pay").await;
    tokio::time::sleep(unit / 10).await;
    agent.signal(&run_id, "payment", &800u64).await.unwrap();
    let result = run.await.unwrap().unwrap();
    assert_eq!(result.status(), AgentStatus::Completed);
    assert_eq!(result.context().get_state::<Vec<u64>>("got"), Some(vec![1200, 800]));
    assert_eq!(result.context().get_state::<bool>("timed_out"), None);
    let signals = store.signals(&run_id).await.unwrap();
    let taken: Vec<_> = signals.iter().map(|s| (s.name.as_str(), s.taken_by.is_some())).collect();
    assert_eq!(taken, [("payment", true), ("refund", false), ("payment", true)], "{signals:?}");
    // The run is over: signals are refused now.
    let refused = agent.signal(&run_id, "payment", &1u64).await.unwrap_err();
    assert!(matches!(refused, SignalError::Finished { status: AgentStatus::Completed, .. }), "{refused}");
}

#[tokio::test(start_paused = true)]
async fn signals_before_and_during_the_wait_are_delivered_once_each_on_memory() {
    before_during_and_twice(Arc::new(MemoryStore::new()), MINUTE).await;
}

#[tokio::test]
async fn signals_before_and_during_the_wait_are_delivered_once_each_on_sqlite() {
    on_sqlite(|store| before_during_and_twice(store, SECOND)).await;
}

#[tokio::test]
async fn signals_before_and_during_the_wait_are_delivered_once_each_on_postgres() {
    on_postgres("signals_before_and_during", "sig", |store| before_during_and_twice(store, SECOND)).await;
}

#[tokio::test(start_paused = true)]
async fn a_wait_times_out_and_a_payload_of_the_wrong_type_names_its_signal() {
    let store: Arc<dyn CheckpointStore> = Arc::new(MemoryStore::new());
    let agent = orders(store.clone(), MINUTE);
    let t0 = tokio::time::Instant::now();
    let run = spawn_run(&agent);
    until_at(&agent, "pay").await;
    let run_id = agent.run_id().unwrap();
    agent.signal(&run_id, "payment", &700u64).await.unwrap();
    let result = run.await.unwrap().unwrap();
    assert_eq!(result.context().get_state::<Vec<u64>>("got"), Some(vec![700]));
    assert_eq!(result.context().get_state::<bool>("timed_out"), Some(true));
    let took = t0.elapsed();
    assert!(took >= 11 * MINUTE && took < 12 * MINUTE, "one minute asleep, ten waiting in vain: {took:?}");

    let mut typed = Agent::new("typed").with_store(store);
    typed.add_state("wait", |ctx: Context| async move {
        ctx.wait_for_signal::<u64>("count").await?;
        Ok::<_, WaitError>(StateResult::End)
    });
    let run = spawn_run(&typed);
    until_at(&typed, "wait").await;
    typed.signal(&typed.run_id().unwrap(), "count", "not a number").await.unwrap();
    let err = run.await.unwrap().unwrap_err();
    let text = err.to_string();
    assert!(text.contains("the signal `count` does not decode"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn signals_to_unknown_runs_to_runs_without_a_store_and_bad_names_are_refused() {
    let agent = orders(Arc::new(MemoryStore::new()), MINUTE);
    let unknown = agent.signal("no-such-run", "payment", &1u64).await.unwrap_err();
    assert!(matches!(unknown, SignalError::UnknownRun { ref run_id } if run_id == "no-such-run"), "{unknown}");
    let run = spawn_run(&agent);
    until_at(&agent, "first").await;
    let run_id = agent.run_id().unwrap();
    let empty = agent.signal(&run_id, "", &1u64).await.unwrap_err();
    assert!(matches!(empty, SignalError::Invalid { .. }), "{empty}");
    let long_id = "x".repeat(300);
    let long = agent.signal_with_id(&run_id, "payment", &long_id, &1u64).await.unwrap_err();
    assert!(matches!(long, SignalError::Invalid { .. }), "{long}");
    drop(run);

    let mut plain = Agent::new("plain");
    plain.add_state("wait", |ctx: Context| async move {
        ctx.wait_for_signal::<u64>("go").await?;
        Ok::<_, WaitError>(StateResult::End)
    });
    let no_store = plain.signal("any", "go", &1u64).await.unwrap_err();
    assert!(matches!(no_store, SignalError::NoStore { .. }), "{no_store}");
    let err = plain.run().await.unwrap_err();
    assert!(err.to_string().contains("the run has no store"), "{err}");
}

/// `take -> after`: `take` waits for `go` and counts its starts; the test kills the run
/// right after `take` got its signal (while it sleeps before completing).
fn taker(store: Arc<dyn CheckpointStore>, starts: Arc<AtomicU32>) -> Agent {
    let mut agent = Agent::new("taker").with_store(store);
    agent.add_state("take", move |ctx: Context| {
        let starts = starts.clone();
        async move {
            starts.fetch_add(1, SeqCst);
            let n: u64 = ctx.wait_for_signal("go").await?;
            ctx.sleep(MINUTE).await?;
            ctx.set_state("n", n);
            Ok::<_, WaitError>(StateResult::End)
        }
    });
    agent
}

#[tokio::test(start_paused = true)]
async fn a_state_run_again_after_a_crash_gets_the_signal_its_first_run_took() {
    let store: Arc<dyn CheckpointStore> = Arc::new(MemoryStore::new());
    let starts = Arc::new(AtomicU32::new(0));
    let agent = taker(store.clone(), starts.clone());
    let run = spawn_run(&agent);
    until_at(&agent, "take").await;
    let run_id = agent.run_id().unwrap();
    agent.signal(&run_id, "go", &1u64).await.unwrap();
    agent.signal(&run_id, "go", &2u64).await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    run.abort();
    assert!(run.await.unwrap_err().is_cancelled());
    let recovering = taker(store.clone(), starts.clone());
    let result = loop {
        match recovering.recover(&run_id).await {
            Err(AgentError::Owned { .. }) => tokio::task::yield_now().await,
            other => break other.unwrap(),
        }
    };
    assert_eq!(starts.load(SeqCst), 2);
    assert_eq!(result.context().get_state::<u64>("n"), Some(1), "the same signal, not the next one");
    let signals = store.signals(&run_id).await.unwrap();
    assert_eq!(signals.iter().filter(|s| s.taken_by.is_some()).count(), 1, "{signals:?}");
}

#[tokio::test(start_paused = true)]
async fn a_query_reads_a_running_runs_context() {
    let store: Arc<dyn CheckpointStore> = Arc::new(MemoryStore::new());
    let mut agent = Agent::new("queried").with_store(store);
    agent.add_state("a", |ctx: Context| async move {
        ctx.set_state("progress", 1u32);
        StateResult::next("b")
    });
    agent.add_state("b", |ctx: Context| async move {
        ctx.wait_for_signal::<bool>("finish").await?;
        ctx.set_state("progress", 2u32);
        Ok::<_, WaitError>(StateResult::End)
    });
    let run = spawn_run(&agent);
    until_at(&agent, "b").await;
    let run_id = agent.run_id().unwrap();
    let ctx = agent.query(&run_id).await.unwrap();
    assert_eq!(ctx.get_state::<u32>("progress"), Some(1));
    agent.signal(&run_id, "finish", &true).await.unwrap();
    run.await.unwrap().unwrap();
    assert_eq!(agent.query(&run_id).await.unwrap().get_state::<u32>("progress"), Some(2));
    assert!(agent.query("no-such-run").await.is_err());
}

/// The child: send `go` = 42 to the run named by `AGENT_SIGNAL_RUN` through the SQLite
/// file `AGENT_SIGNAL_DB`.
#[tokio::test]
async fn signal_sender_child() {
    let (Ok(db), Ok(run_id)) = (std::env::var("AGENT_SIGNAL_DB"), std::env::var("AGENT_SIGNAL_RUN")) else { return };
    let agent = Agent::new("any").with_store(agent_runtime::SqliteStore::open(db).unwrap());
    agent.signal(&run_id, "go", &42u64).await.unwrap();
}

#[tokio::test]
async fn a_signal_from_another_process_reaches_a_waiting_run() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runs.db");
    let store: Arc<dyn CheckpointStore> = Arc::new(agent_runtime::SqliteStore::open(&db).unwrap());
    let mut agent = Agent::new("remote").with_store(store.clone());
    agent.add_state("wait", |ctx: Context| async move {
        let n: u64 = ctx.wait_for_signal("go").timeout(Duration::from_secs(60)).await?;
        ctx.set_state("n", n);
        Ok::<_, WaitError>(StateResult::End)
    });
    let run = agent.start(RunOptions::new()).unwrap();
    let run_id = run.id().to_owned();
    until_stored(&*store, &run_id).await;
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args(["signal_sender_child", "--exact", "--nocapture", "--test-threads", "1"])
            .env("AGENT_SIGNAL_DB", &db)
            .env("AGENT_SIGNAL_RUN", &run_id)
            .status()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(status.success());
    let result = tokio::time::timeout(Duration::from_secs(30), run).await.expect("the run got the signal").unwrap();
    assert_eq!(result.context().get_state::<u64>("n"), Some(42));
}

#[tokio::test]
async fn the_command_line_and_the_console_send_signals_through_the_store() {
    use agent_runtime::cli;
    use axum::http::{Method, StatusCode};
    use common::http::call;

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runs.db");
    let store: Arc<dyn CheckpointStore> = Arc::new(agent_runtime::SqliteStore::open(&db).unwrap());
    let make = {
        let store = store.clone();
        move || {
            let mut agent = Agent::new("remote").with_store(store.clone());
            agent.add_state("wait", |ctx: Context| async move {
                let a: String = ctx.wait_for_signal("a").timeout(Duration::from_secs(60)).await?;
                let b: u64 = ctx.wait_for_signal("b").timeout(Duration::from_secs(60)).await?;
                ctx.set_state("got", format!("{a}/{b}"));
                Ok::<_, WaitError>(StateResult::End)
            });
            agent
        }
    };
    let agent = make();
    let run = agent.start(RunOptions::new()).unwrap();
    let run_id = run.id().to_owned();
    until_stored(&*store, &run_id).await;
    let store_arg = db.display().to_string();
    let cli = |args: Vec<String>| {
        let (make, store_arg) = (make.clone(), store_arg.clone());
        async move {
            let mut argv = vec!["prog".to_owned(), "--store".to_owned(), store_arg];
            argv.extend(args);
            let parsed = cli::parse(argv).expect("arguments parse");
            let mut out = Vec::new();
            let result = cli::execute(&parsed, make, &mut out).await;
            (result, String::from_utf8(out).unwrap())
        }
    };
    let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // Not JSON: refused before anything is sent.
    let (bad, _) = cli(args(&["signal", &run_id[..8], "a", "not json"])).await;
    assert!(matches!(bad, Err(cli::CliError::BadPayload { .. })), "{bad:?}");
    let (sent, out) = cli(args(&["signal", &run_id[..8], "a", "\"hello\"", "--id", "first"])).await;
    sent.unwrap();
    assert!(out.contains("sent a (first)"), "{out}");
    let (again, out) = cli(args(&["signal", &run_id[..8], "a", "\"hello\"", "--id", "first"])).await;
    again.unwrap();
    assert!(out.contains("nothing sent again"), "{out}");

    let app = agent_runtime::console::Console::new(store.clone()).router();
    let uri = format!("/api/v1/runs/{run_id}/signals/b?id=evt-1");
    let reply = call(&app, Method::POST, &uri, None, Some(serde_json::json!(7))).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(reply.json()["signal_id"], "evt-1");
    let reply = call(&app, Method::POST, &uri, None, Some(serde_json::json!(7))).await;
    assert_eq!((reply.status, reply.json()["duplicate"].as_bool()), (StatusCode::OK, Some(true)));
    let unknown = call(&app, Method::POST, "/api/v1/runs/nope/signals/b", None, Some(serde_json::json!(1))).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.body);

    let result = tokio::time::timeout(Duration::from_secs(30), run).await.expect("the run got both").unwrap();
    assert_eq!(result.context().get_state::<String>("got").as_deref(), Some("hello/7"));
    let finished = call(&app, Method::POST, &uri.replace("evt-1", "evt-2"), None, Some(serde_json::json!(1))).await;
    assert_eq!(finished.status, StatusCode::CONFLICT, "{}", finished.body);
    let (shown, out) = cli(args(&["show", &run_id])).await;
    shown.unwrap();
    assert!(out.contains("signals") && out.contains("evt-1") && out.contains("taken"), "{out}");
    assert!(out.contains("durable waits") && out.contains("/wait/1/signal/1"), "{out}");
    let (late, _) = cli(args(&["signal", &run_id, "a", "1"])).await;
    assert!(matches!(late, Err(cli::CliError::Signal(SignalError::Finished { .. }))), "{late:?}");
}

#[tokio::test(start_paused = true)]
async fn a_pause_does_not_wait_for_a_signal_and_one_sent_meanwhile_reaches_the_resumed_run() {
    let store: Arc<dyn CheckpointStore> = Arc::new(MemoryStore::new());
    let starts = Arc::new(AtomicU32::new(0));
    let agent = taker(store.clone(), starts.clone());
    let t0 = tokio::time::Instant::now();
    let run = agent.start(RunOptions::new()).unwrap();
    until_at(&agent, "take").await;
    let checkpoint = run.pause().await;
    assert!(t0.elapsed() < MINUTE, "the pause did not wait for the signal");
    assert_eq!(checkpoint.agent_status, AgentStatus::Paused);
    // Sent while the run is paused: kept, and taken by the state's next run.
    agent.signal(run.id(), "go", &7u64).await.unwrap();
    run.resume().await.unwrap();
    let result = run.await.unwrap();
    assert_eq!(result.context().get_state::<u64>("n"), Some(7));
    assert_eq!(starts.load(SeqCst), 2);
}
