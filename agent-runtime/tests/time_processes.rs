//! Time across worker processes (this test binary, re-run as a worker with an environment
//! variable naming the SQLite file; each test is bounded and kills its children however it
//! ends):
//! - a run asleep in a worker process that is killed (SIGKILL, at a random instant of its
//!   sleep, from a printed seed) is woken by the worker that claims it next, at the wake
//!   time the first one armed: not earlier, and not a whole sleep after the take-over
//!   (`sleeper_child` logs `start PID` when `nap` starts);
//! - two worker processes running the schedulers of one schedule start each tick once
//!   (`scheduler_child`).

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agent_core::{Context, StateResult, WaitError};
use agent_runtime::store::{CheckpointStore, SqliteStore};
use agent_runtime::{Agent, AgentStatus, SubmitOptions, Worker};

mod common;

/// How long `nap` sleeps.
const NAP: Duration = Duration::from_secs(4);
/// The workers' lease: short, so the killed worker's run moves on soon.
const LEASE: Duration = Duration::from_millis(300);

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// `nap` sleeps `NAP`, then records when it woke (`woke_ms`).
fn napping() -> Agent {
    let mut agent = Agent::new("napping");
    agent.add_state("nap", |ctx: Context| async move {
        if let Ok(log) = std::env::var("AGENT_SLEEP_LOG") {
            let mut f = std::fs::OpenOptions::new().append(true).create(true).open(log).unwrap();
            writeln!(f, "start {}", std::process::id()).unwrap();
        }
        ctx.sleep(NAP).await?;
        ctx.set_state("woke_ms", now_ms());
        Ok::<_, WaitError>(StateResult::End)
    });
    agent
}

/// A worker process: serves `napping` on the SQLite file `AGENT_SLEEP_CHILD` until killed.
#[tokio::test]
async fn sleeper_child() {
    let Ok(path) = std::env::var("AGENT_SLEEP_CHILD") else { return };
    let store = SqliteStore::open(path).unwrap();
    let worker = Worker::new(store).serve(napping).lease_ttl(LEASE).poll_interval(Duration::from_millis(50));
    let _ = worker.run().await;
}

fn starts(log: &std::path::Path) -> Vec<u32> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines().filter_map(|l| l.strip_prefix("start ")?.parse().ok()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_asleep_in_a_killed_worker_wakes_at_its_armed_time_in_the_next() {
    let seed = common::kills::seed("AGENT_SLEEP_SEED", "sleep kill");
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = tempfile::tempdir().unwrap();
    let (db, log) = (dir.path().join("runs.db"), dir.path().join("log"));
    let store: Arc<dyn CheckpointStore> = Arc::new(SqliteStore::open(&db).unwrap());
    let run_id = napping().with_store(store.clone()).submit(SubmitOptions::new()).await.unwrap();
    let spawn = || {
        common::kills::worker(
            "sleeper_child",
            &[("AGENT_SLEEP_CHILD", db.as_path()), ("AGENT_SLEEP_LOG", log.as_path())],
        )
        .spawn()
        .unwrap()
    };
    let mut children = common::kills::Children(vec![spawn()]);
    let bounded = tokio::time::timeout(Duration::from_secs(90), async {
        while starts(&log).is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Killed somewhere in the first three quarters of its nap.
        tokio::time::sleep(Duration::from_millis(rng.u64(0..3000))).await;
        let _ = children.0[0].kill();
        let _ = children.0[0].wait();
        let timers = store.timers(&run_id).await.unwrap();
        assert_eq!(timers.len(), 1, "the wake time was armed before the sleep: {timers:?}");
        let armed = timers[0].wake_ms;
        let taken_over_from = now_ms();
        children.0.push(spawn());
        loop {
            let row = store.get_run(&run_id).await.unwrap().unwrap();
            if row.status.is_finished() {
                assert_eq!(row.status, AgentStatus::Completed);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (armed, taken_over_from)
    })
    .await;
    let (armed, taken_over_from) = bounded.unwrap_or_else(|_| panic!("the run did not complete in time (seed {seed})"));
    let ran = starts(&log);
    assert_eq!(ran.len(), 2, "`nap` started in the killed worker and in the next: {ran:?}");
    assert_ne!(ran[0], ran[1]);
    let checkpoint = agent_runtime::store::read_checkpoint(&*store, &run_id).await.unwrap().unwrap();
    let woke: i64 = checkpoint.read_context().unwrap().get_state("woke_ms").unwrap();
    assert!(woke >= armed, "not before the armed time ({woke} < {armed}, seed {seed})");
    let whole_nap_after_take_over = taken_over_from + NAP.as_millis() as i64;
    assert!(woke < whole_nap_after_take_over, "not a whole nap after the take-over (seed {seed})");
    let timers = store.timers(&run_id).await.unwrap();
    assert_eq!((timers.len(), timers[0].wake_ms), (1, armed), "the next worker kept the armed time");
}

/// A worker process: serves `ticking` (and so runs its schedules) on the SQLite file
/// `AGENT_TICK_CHILD` until killed.
#[tokio::test]
async fn scheduler_child() {
    let Ok(path) = std::env::var("AGENT_TICK_CHILD") else { return };
    let store = SqliteStore::open(path).unwrap();
    let worker = Worker::new(store).serve(ticking).lease_ttl(LEASE).poll_interval(Duration::from_millis(50));
    let _ = worker.run().await;
}

fn ticking() -> Agent {
    let mut agent = Agent::new("ticking");
    agent.add_state("tick", |_ctx: Context| async { StateResult::End });
    agent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_worker_processes_start_each_tick_once() {
    use agent_runtime::schedule::{Overlap, Schedule};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runs.db");
    let store: Arc<dyn CheckpointStore> = Arc::new(SqliteStore::open(&db).unwrap());
    let agent = ticking().with_store(store.clone());
    agent.add_schedule(Schedule::new("every-second", "* * * * * *").overlap(Overlap::Allow)).await.unwrap();
    let first_tick = agent.schedules().await.unwrap()[0].next_tick_ms;
    let spawn = || common::kills::worker("scheduler_child", &[("AGENT_TICK_CHILD", db.as_path())]).spawn().unwrap();
    let mut children = common::kills::Children(vec![spawn(), spawn()]);
    tokio::time::sleep(Duration::from_millis(4500)).await;
    for c in &mut children.0 {
        let _ = c.kill();
        let _ = c.wait();
    }
    let cursor = agent.schedules().await.unwrap()[0].next_tick_ms;
    let handled = (cursor - first_tick) / 1000;
    let query = agent_runtime::store::RunQuery { agent: Some("ticking".into()), ..Default::default() };
    let runs = store.list_runs(&query).await.unwrap();
    assert!(handled >= 2, "the schedulers handled ticks (cursor {cursor}, first {first_tick})");
    assert_eq!(runs.len() as i64, handled, "one run per tick handled, none twice, none lost: {runs:?}");
}
