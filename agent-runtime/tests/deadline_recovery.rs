//! A durable run's deadline survives its process (translated from DBOS's
//! `test_workflow_timeout`, where a recovered workflow is still cancelled at its original
//! deadline): a child process runs a workflow under a deadline and is killed with SIGKILL
//! while its state waits; a new process recovers the run. Recovered before the deadline, the
//! run ends `TimedOut` at that deadline (not after the state's full hour, not at a new
//! deadline); recovered after it, the run ends `TimedOut` at once, starting nothing.
//!
//! The child is this test binary itself, run with `AGENT_DEADLINE_CHILD` set. The tests
//! assert what the runs return, never how long they took; each wait is bounded. The killed
//! child's lease on its run is short, and the parent recovers once it has run out.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use agent_core::{AgentError, AgentStatus, Checkpoint, Context, StateResult};
use agent_runtime::store::{CheckpointStore, RunQuery, SqliteStore};
use agent_runtime::{Agent, RunOptions};

mod common;
use common::recover_once_free;

/// The child's lease on its run.
const LEASE: Duration = Duration::from_millis(300);
/// How long the parent waits for the killed child's lease to run out, at most.
const PATIENCE: Duration = Duration::from_secs(20);

/// `prepare -> wait`, where `wait` waits an hour; `starts` counts `wait`'s starts.
fn workflow(name: &str, starts: Arc<AtomicU32>) -> Agent {
    let mut agent = Agent::new(name.to_owned());
    agent.add_state("prepare", |ctx: Context| async move {
        ctx.set_state("prepared", true);
        StateResult::next("wait")
    });
    agent.add_state("wait", move |_ctx: Context| {
        starts.fetch_add(1, SeqCst);
        async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StateResult::End
        }
    });
    agent
}

/// The child: start the run under a deadline of `AGENT_DEADLINE_MS` and wait to be killed.
#[tokio::test]
async fn deadline_child() {
    let Ok(path) = std::env::var("AGENT_DEADLINE_CHILD") else { return };
    let name = std::env::var("AGENT_DEADLINE_AGENT").unwrap();
    let ms: u64 = std::env::var("AGENT_DEADLINE_MS").unwrap().parse().unwrap();
    // A short lease: the parent takes the run over soon after the kill.
    let agent = workflow(&name, Arc::default()).with_store(SqliteStore::open(path).unwrap()).lease_ttl(LEASE);
    let _ = agent.run_with(RunOptions::new().timeout(Duration::from_millis(ms))).await;
}

fn spawn_child(path: &str, agent: &str, deadline_ms: u64) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["deadline_child", "--exact", "--nocapture", "--test-threads", "1"])
        .env("AGENT_DEADLINE_CHILD", path)
        .env("AGENT_DEADLINE_AGENT", agent)
        .env("AGENT_DEADLINE_MS", deadline_ms.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The newest checkpoint of `agent`'s run, once `prepare` has completed in it.
async fn when_waiting(store: &SqliteStore, agent: &str) -> (String, Checkpoint) {
    let query = RunQuery { agent: Some(agent.to_owned()), ..RunQuery::default() };
    for _ in 0..2_000 {
        if let Some(run) = store.list_runs(&query).await.unwrap().into_iter().next() {
            if let Some(c) = agent_runtime::store::read_checkpoint(store, &run.run_id).await.unwrap() {
                // `prepare` is recorded before `wait` starts; a run snapshots at
                // completions, so this is the last snapshot before the kill.
                if c.agent_status == AgentStatus::Running && c.completed_states.iter().any(|s| s == "prepare") {
                    return (run.run_id, c);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the child never recorded `prepare`");
}

/// Kill a child running `agent` once `wait` is under way; the run's id and last checkpoint.
async fn crash(store: &SqliteStore, path: &str, agent: &str, deadline_ms: u64) -> (String, Checkpoint) {
    let mut child = spawn_child(path, agent, deadline_ms);
    let found = tokio::time::timeout(Duration::from_secs(30), when_waiting(store, agent)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    found.expect("the child started its run in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovered_run_ends_at_its_original_deadline() {
    if std::env::var("AGENT_DEADLINE_CHILD").is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.db");
    let path_text = path.display().to_string();
    let store = SqliteStore::open(&path).unwrap();

    // Recovered before the deadline: `wait` runs again, and is cut off at the deadline.
    let (run_id, checkpoint) = crash(&store, &path_text, "before", 4_000).await;
    let deadline = checkpoint.deadline_ms.expect("the checkpoint records the run's deadline");
    let starts = Arc::new(AtomicU32::new(0));
    let agent = workflow("before", starts.clone()).with_store(store.clone());
    let recovered = tokio::time::timeout(Duration::from_secs(60), recover_once_free(&agent, &run_id, PATIENCE)).await;
    let err = recovered.expect("the recovered run ended at its deadline, not after `wait`'s hour").unwrap_err();
    assert!(matches!(err, AgentError::TimedOut { .. }), "expected TimedOut, got {err}");
    assert_eq!(starts.load(SeqCst), 1, "`wait`, in flight at the crash, ran again");
    assert!(now_ms() >= deadline, "the run did not end before its deadline");
    let last = newest(&store, &run_id).await;
    assert_eq!(last.agent_status, AgentStatus::TimedOut);
    assert_eq!(last.deadline_ms, Some(deadline), "the deadline is the original one, not a new one");
    assert_eq!(last.read_context().unwrap().get_state::<bool>("prepared"), Some(true));

    // Recovered after the deadline: it ends at once and starts nothing.
    let (run_id, checkpoint) = crash(&store, &path_text, "after", 1_500).await;
    let deadline = checkpoint.deadline_ms.unwrap();
    while now_ms() <= deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let starts = Arc::new(AtomicU32::new(0));
    let agent = workflow("after", starts.clone()).with_store(store.clone());
    let recovered = recover_once_free(&agent, &run_id, PATIENCE);
    let err = tokio::time::timeout(Duration::from_secs(60), recovered).await.unwrap().unwrap_err();
    assert!(matches!(err, AgentError::TimedOut { .. }), "expected TimedOut, got {err}");
    assert_eq!(starts.load(SeqCst), 0, "no state starts past the deadline");
    assert_eq!(newest(&store, &run_id).await.agent_status, AgentStatus::TimedOut);
}

async fn newest(store: &SqliteStore, run_id: &str) -> Checkpoint {
    agent_runtime::store::read_checkpoint(store, run_id).await.unwrap().unwrap()
}

fn now_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    i64::try_from(since.as_millis()).unwrap()
}
