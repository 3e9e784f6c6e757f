//! Kill and resume: a child process runs a durable workflow and is killed with SIGKILL at
//! random instants, at least 20 times, each time carried on by a new process with
//! `recover_all` (once the killed child's short lease has run out). At the end every state has completed exactly once on record, and the
//! context equals that of an uninterrupted run. Against SQLite always, and PostgreSQL when
//! `AGENT_TEST_POSTGRES_URL` is set (required under CI: see `common/pg.rs`).
//!
//! The child is this test binary itself, run with `AGENT_KILL_CHILD` set (see
//! `child_process`): no other binary has to be built.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use agent_core::{AgentError, AgentStatus, Checkpoint, Context, StateResult};
use agent_runtime::store::{CheckpointStore, PostgresStore, RunQuery, SqliteStore};
use agent_runtime::Agent;

mod common;

const KILLS: usize = 20;
const CHAIN: usize = 40;
const WIDTH: usize = 6;

/// The workflow: a chain, a fan-out of `WIDTH` branches with a join, then more chain. Each
/// state does a little real work (a blocking pause in the child) and writes its own key.
fn workflow(name: &str, work: Duration) -> Agent {
    let mut agent = Agent::new(name.to_owned());
    let names: Vec<String> = (0..CHAIN).map(|i| format!("s{i}")).collect();
    for i in 0..CHAIN {
        let me = names[i].clone();
        let next = match i {
            5 => StateResult::parallel((0..WIDTH).map(|b| format!("branch{b}")).collect::<Vec<_>>()),
            _ if i + 1 == CHAIN => StateResult::End,
            _ => StateResult::next(names[i + 1].clone()),
        };
        agent.add_state(me.clone(), move |ctx: Context| {
            let (me, next) = (me.clone(), next.clone());
            async move {
                tokio::time::sleep(work).await;
                ctx.set_state(&me, i);
                next
            }
        });
    }
    for b in 0..WIDTH {
        agent.add_state(format!("branch{b}"), move |ctx: Context| async move {
            tokio::time::sleep(work).await;
            ctx.set_state(&format!("branch{b}"), b * 10);
            StateResult::next("s6")
        });
    }
    agent
}

/// The child: run the workflow against the store, or carry on the unfinished run.
#[tokio::test]
async fn child_process() {
    let Ok(which) = std::env::var("AGENT_KILL_CHILD") else { return };
    let name = std::env::var("AGENT_KILL_AGENT").unwrap();
    let work = Duration::from_millis(3);
    let (agent, any_run) = match which.strip_prefix("sqlite:") {
        Some(path) => {
            let store = SqliteStore::open(path).unwrap();
            (workflow(&name, work).with_store(store.clone()), newest(&store, &name).await.is_some())
        }
        None => {
            let store = PostgresStore::connect(&which).await.unwrap();
            (workflow(&name, work).with_store(store.clone()), newest(&store, &name).await.is_some())
        }
    };
    // A short lease: the next child takes the run over soon after a kill.
    let agent = agent.lease_ttl(Duration::from_millis(300));
    let unfinished = agent.recover_all().await.unwrap();
    if unfinished.is_empty() && !any_run {
        agent.run().await.unwrap();
    }
    for (run_id, r) in unfinished {
        match r {
            // The killed child's lease has not run out yet.
            Err(AgentError::Owned { .. }) => {
                common::recover_once_free(&agent, &run_id, Duration::from_secs(30)).await.unwrap();
            }
            r => {
                r.unwrap();
            }
        }
    }
}

fn spawn_child(store: &str, agent: &str) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["child_process", "--exact", "--nocapture", "--test-threads", "1"])
        .env("AGENT_KILL_CHILD", store)
        .env("AGENT_KILL_AGENT", agent)
        .stdout(Stdio::null())
        .stderr(if std::env::var("AGENT_KILL_DEBUG").is_ok() { Stdio::inherit() } else { Stdio::null() });
    cmd.spawn().unwrap()
}

async fn newest(store: &dyn CheckpointStore, agent: &str) -> Option<Checkpoint> {
    let query = RunQuery { agent: Some(agent.to_owned()), ..RunQuery::default() };
    let run = store.list_runs(&query).await.unwrap().into_iter().next()?;
    agent_runtime::store::read_checkpoint(store, &run.run_id).await.unwrap()
}

/// Kill the child at random instants (after a random number of recorded completions and a
/// random extra delay) until it has been killed `KILLS` times in all; whenever a run
/// finishes first, check it and start another (agent `{agent}_{round}`).
async fn kill_and_resume(store: &dyn CheckpointStore, address: &str, agent: &str) {
    let mut kills = 0;
    let mut round = 0;
    while kills < KILLS {
        let name = format!("{agent}_{round}");
        let mut killed_here = 0;
        loop {
            let before = newest(store, &name).await;
            if before.as_ref().is_some_and(|c| c.agent_status == AgentStatus::Completed) {
                break;
            }
            let before = before.map_or(0, |c| c.completed_states.len());
            let mut child = spawn_child(address, &name);
            // Wait for some progress (or none: a kill right at the start counts too).
            let progress = fastrand::usize(0..2);
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                if child.try_wait().unwrap().is_some() || std::time::Instant::now() > deadline {
                    break;
                }
                let now = newest(store, &name).await.map_or(0, |c| c.completed_states.len());
                if now >= before + progress {
                    break;
                }
                tokio::task::yield_now().await;
            }
            // A random instant within a state's work, or between states.
            for _ in 0..fastrand::usize(0..5_000) {
                std::thread::yield_now();
            }
            let _ = child.kill();
            let exited = child.wait().unwrap();
            if exited.success() {
                continue; // it finished before the kill: not a kill
            }
            kills += 1;
            killed_here += 1;
            if kills == KILLS {
                let status = spawn_child(address, &name).wait().unwrap();
                assert!(status.success(), "the last child failed");
                break;
            }
        }
        let last = newest(store, &name).await.unwrap();
        assert_eq!(last.agent_status, AgentStatus::Completed, "{name}, after {killed_here} kills");
        for s in &last.states {
            assert_eq!(s.completed, 1, "{name}: state {} completed {} times on record", s.name, s.completed);
        }
        let expected = workflow("uninterrupted", Duration::ZERO).run().await.unwrap();
        let got = last.read_context().unwrap();
        assert_eq!(got.to_json().unwrap(), expected.context().to_json().unwrap(), "{name}: the context differs");
        eprintln!("{name}: completed after {killed_here} kills");
        round += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_instants_on_sqlite_every_state_completes_once() {
    if std::env::var("AGENT_KILL_CHILD").is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.db");
    let store = SqliteStore::open(&path).unwrap();
    kill_and_resume(&store, &format!("sqlite:{}", path.display()), "kill_sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_instants_on_postgres_every_state_completes_once() {
    if std::env::var("AGENT_KILL_CHILD").is_ok() {
        return;
    }
    let Some(url) = common::pg::url("killed_at_random_instants_on_postgres_every_state_completes_once") else {
        return;
    };
    // A schema of its own, which the children reach through the URL they are given.
    let (schema, schema_url) = common::pg::own_schema(&url, "kill");
    let store = PostgresStore::connect_with_schema(&url, &schema).await.unwrap();
    let outcome = tokio::spawn(async move { kill_and_resume(&store, &schema_url, "kill_pg").await }).await;
    common::pg::drop_schema(&url, &schema).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}
