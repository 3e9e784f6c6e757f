//! Subworkflows: `ctx.run_child(agent, input)` runs another workflow as a child run and
//! waits for its typed output. Translated from Temporal's child-workflow guarantees: the
//! child is a run of its own linked to its parent; a crash resumes the child where it was
//! and the parent's completed states do not run again; cancelling the parent stops the child.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_core::{BoxError, Context, StateResult};
use agent_runtime::store::{read_checkpoint, CheckpointStore, LineageKind, SqliteStore};
use agent_runtime::{Agent, AgentStatus, ChildError, RunChild};
use serde::{Deserialize, Serialize};

mod common;

type Runs = Arc<Mutex<HashMap<&'static str, usize>>>;

fn ran(runs: &Runs, s: &'static str) {
    *runs.lock().unwrap().entry(s).or_default() += 1;
}

fn count(runs: &Runs, s: &str) -> usize {
    runs.lock().unwrap().get(s).copied().unwrap_or(0)
}

#[derive(Serialize)]
struct Article {
    text: String,
}

#[derive(Debug, Deserialize, PartialEq)]
struct Summary {
    words: usize,
    first: String,
}

/// `count` → `pick` (waits while `hold` is set) → end; `pick` fails if the text is empty.
fn summarise(runs: &Runs, hold: &Arc<AtomicBool>) -> Agent {
    let mut agent = Agent::new("summarise");
    let r = runs.clone();
    agent.add_state("count", move |ctx: Context| {
        ran(&r, "count");
        async move {
            let text: String = ctx.get_state("text").unwrap_or_default();
            ctx.set_state("words", text.split_whitespace().count());
            StateResult::next("pick")
        }
    });
    let (r, hold) = (runs.clone(), hold.clone());
    agent.add_state("pick", move |ctx: Context| {
        let (r, hold) = (r.clone(), hold.clone());
        async move {
            while hold.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            ran(&r, "pick");
            let text: String = ctx.get_state("text").unwrap_or_default();
            let Some(first) = text.split_whitespace().next() else {
                return Err(std::io::Error::other("nothing to summarise"));
            };
            ctx.set_state("first", first);
            Ok(StateResult::End)
        }
    });
    agent
}

/// `prepare` → `delegate` (runs `summarise` on `text`) → `finish`.
fn publish(runs: &Runs, hold: &Arc<AtomicBool>) -> Agent {
    let mut agent = Agent::new("publish");
    let r = runs.clone();
    agent.add_state("prepare", move |_ctx: Context| {
        ran(&r, "prepare");
        async { StateResult::next("delegate") }
    });
    let (r, hold) = (runs.clone(), hold.clone());
    agent.add_state("delegate", move |ctx: Context| {
        let child = summarise(&r, &hold);
        async move {
            let text: String = ctx.get_state("text").unwrap_or_default();
            let summary: Summary = ctx.run_child(child, Article { text }).await?;
            ctx.set_state("words", summary.words);
            ctx.set_state("first", summary.first);
            Ok::<_, BoxError>(StateResult::next("finish"))
        }
    });
    let r = runs.clone();
    agent.add_state("finish", move |_ctx: Context| {
        ran(&r, "finish");
        async { StateResult::End }
    });
    agent
}

fn input(text: &str) -> agent_runtime::RunOptions {
    let ctx = Context::new();
    ctx.set_state("text", text);
    agent_runtime::RunOptions::new().context(ctx)
}

#[tokio::test]
async fn a_child_runs_in_memory_from_a_plain_run_and_its_failure_fails_the_state() {
    let (runs, hold) = (Runs::default(), Arc::new(AtomicBool::new(false)));
    let result = publish(&runs, &hold).run_with(input("all good things")).await.unwrap();
    assert_eq!(result.context().get_state::<usize>("words"), Some(3));
    assert_eq!(result.context().get_state::<String>("first").as_deref(), Some("all"));
    let failed = publish(&runs, &hold).run_with(input("")).await;
    let message = format!("{}", failed.expect_err("an empty text fails the child"));
    assert!(message.contains("summarise") && message.contains("nothing to summarise"), "{message}");
    let typed: Result<Summary, ChildError> = Context::new().run_child(summarise(&runs, &hold), 3).await;
    assert!(matches!(typed, Err(ChildError::Input(_))), "an input that is not an object");
}

/// A durable parent's child is a run of its own in the same store, linked to its parent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_parents_child_is_recorded_and_linked() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("runs.db")).unwrap();
    let (runs, hold) = (Runs::default(), Arc::new(AtomicBool::new(false)));
    let result = publish(&runs, &hold).with_store(store.clone()).run_with(input("one two")).await.unwrap();
    assert_eq!(result.context().get_state::<usize>("words"), Some(2));
    let children = store.descendants(result.run_id()).await.unwrap();
    assert_eq!(children.len(), 1);
    assert_eq!(children[0].kind, LineageKind::Child);
    assert_eq!(children[0].parent_state.as_deref(), Some("delegate"), "the state that started it");
    let child = store.get_run(&children[0].run_id).await.unwrap().unwrap();
    assert_eq!((child.agent.as_str(), child.status), ("summarise", AgentStatus::Completed));
}

/// The parent's process dies while the child runs: recovered, the parent runs its
/// in-flight state again, which goes on with the same child where it was; `prepare`, and
/// the child's `count`, ran once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_child_resumes_the_child_and_runs_no_completed_state_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("runs.db")).unwrap();
    let (runs, hold) = (Runs::default(), Arc::new(AtomicBool::new(true)));
    let ttl = Duration::from_millis(300);

    // The first process: a runtime of its own, dropped mid-child (its tasks vanish, nothing
    // more is written, leases are left to run out).
    let first = {
        let (store, runs, hold) = (store.clone(), runs.clone(), hold.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            let handle = rt.block_on(async {
                publish(&runs, &hold).with_store(store.clone()).lease_ttl(ttl).start(input("crash safe words")).unwrap()
            });
            let id = handle.id().to_owned();
            // Until the child waits in `pick`, `count` committed.
            let child = rt.block_on(async {
                loop {
                    if let Some(c) = store.descendants(&id).await.unwrap().first() {
                        if let Ok(Some(cp)) = read_checkpoint(&store, &c.run_id).await {
                            if cp.completed_states.iter().any(|s| s == "count") {
                                break c.run_id.clone();
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
            drop(handle);
            rt.shutdown_background();
            (id, child)
        })
    };
    let (parent, child) = first.join().unwrap();
    hold.store(false, Ordering::SeqCst);
    assert_eq!(store.get_run(&child).await.unwrap().unwrap().status, AgentStatus::Running, "left running");

    let agent = publish(&runs, &hold).with_store(store.clone()).lease_ttl(ttl);
    let result = common::recover_once_free(&agent, &parent, Duration::from_secs(20)).await.unwrap();
    assert_eq!(result.status(), AgentStatus::Completed);
    assert_eq!(result.context().get_state::<usize>("words"), Some(3));
    assert_eq!(result.context().get_state::<String>("first").as_deref(), Some("crash"));
    assert_eq!((count(&runs, "prepare"), count(&runs, "count")), (1, 1), "completed states did not run again");
    assert_eq!((count(&runs, "pick"), count(&runs, "finish")), (1, 1));
    assert_eq!(store.descendants(&parent).await.unwrap().len(), 1, "the same child, not a second");
    assert_eq!(store.get_run(&child).await.unwrap().unwrap().status, AgentStatus::Completed);
}

/// Cancelling the parent cancels the child, which records it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_the_parent_cancels_the_child() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("runs.db")).unwrap();
    let (runs, hold) = (Runs::default(), Arc::new(AtomicBool::new(true)));
    let handle = publish(&runs, &hold).with_store(store.clone()).start(input("never finished")).unwrap();
    let parent = handle.id().to_owned();
    let child = loop {
        if let Some(c) = store.descendants(&parent).await.unwrap().first() {
            if store.get_run(&c.run_id).await.unwrap().is_some() {
                break c.run_id.clone();
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    handle.cancel().await;
    assert_eq!(handle.await.unwrap().status(), AgentStatus::Cancelled);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.get_run(&child).await.unwrap().unwrap().status != AgentStatus::Cancelled {
        assert!(std::time::Instant::now() < deadline, "the child was never recorded cancelled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------
// A parent and its child in a real process, killed with SIGKILL at random instants.
// ---------------------------------------------------------------------------------------

const CHILD_STEPS: usize = 12;

/// Append `state` and this process's id to the log at `AGENT_CHILD_LOG`.
fn logged(state: &str) {
    common::kills::log_execution("AGENT_CHILD_LOG", state);
}

/// A child of `CHILD_STEPS` states, each working 15 ms and adding its number to `sum`.
fn steps() -> Agent {
    let mut agent = Agent::new("steps");
    for i in 0..CHILD_STEPS {
        let next = if i + 1 == CHILD_STEPS { StateResult::End } else { StateResult::next(format!("c{}", i + 1)) };
        agent.add_state(format!("c{i}"), move |ctx: Context| {
            let next = next.clone();
            async move {
                logged(&format!("c{i}"));
                tokio::time::sleep(Duration::from_millis(15)).await;
                let sum: usize = ctx.get_state_or("sum", 0);
                ctx.set_state("sum", sum + i);
                next
            }
        });
    }
    agent
}

#[derive(Serialize)]
struct Start {
    sum: usize,
}

#[derive(Deserialize)]
struct Total {
    sum: usize,
}

/// `prepare` → `delegate` (runs `steps` from 1,000) → `finish`, each logged.
fn parent() -> Agent {
    let mut agent = Agent::new("parent");
    agent.add_state("prepare", |_ctx: Context| async {
        logged("prepare");
        StateResult::next("delegate")
    });
    agent.add_state("delegate", |ctx: Context| async move {
        logged("delegate");
        let total: Total = ctx.run_child(steps(), Start { sum: 1_000 }).await?;
        ctx.set_state("total", total.sum);
        Ok::<_, BoxError>(StateResult::next("finish"))
    });
    agent.add_state("finish", |_ctx: Context| async {
        logged("finish");
        StateResult::End
    });
    agent
}

/// The process: go on with the unfinished parent run, or start one.
#[tokio::test]
async fn child_kill_process() {
    let Ok(path) = std::env::var("AGENT_CHILD_KILL") else { return };
    let store = SqliteStore::open(path).unwrap();
    let agent = parent().with_store(store.clone()).lease_ttl(Duration::from_millis(300));
    let query = agent_runtime::store::RunQuery { agent: Some("parent".into()), ..Default::default() };
    common::kills::go_on(&agent, &store, &query).await;
}

/// SIGKILL the process running a parent and its child at random instants (a printed seed
/// replays them), five times, each time going on in a new process: the parent and the one
/// child complete, every state completed once on record, the total is an uninterrupted
/// run's, and a state ran more than once only in a process that was killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_parent_and_child_go_on_and_complete_each_state_once() {
    if std::env::var("AGENT_CHILD_KILL").is_ok() {
        return;
    }
    let seed = common::kills::seed("AGENT_CHILD_SEED", "child kills");
    let dir = tempfile::tempdir().unwrap();
    let (db, log) = (dir.path().join("runs.db"), dir.path().join("log"));
    let store = SqliteStore::open(&db).unwrap();
    let spawn = || {
        common::kills::worker("child_kill_process", &[("AGENT_CHILD_KILL", &db), ("AGENT_CHILD_LOG", &log)])
            .spawn()
            .unwrap()
    };
    // How many states, parent's and child's, are recorded completed.
    let progress = || async {
        let mut done = 0;
        for run in store.list_runs(&agent_runtime::store::RunQuery::default()).await.unwrap() {
            if let Ok(Some(cp)) = read_checkpoint(&store, &run.run_id).await {
                done += cp.completed_states.len();
            }
        }
        done
    };
    let killed = common::kills::kill_then_finish(seed, 5, 4, Duration::from_secs(60), spawn, progress).await;

    let runs = store.list_runs(&agent_runtime::store::RunQuery::default()).await.unwrap();
    let parent_run = runs.iter().find(|r| r.agent == "parent").expect("the parent run");
    assert_eq!(parent_run.status, AgentStatus::Completed, "seed {seed}");
    let children = store.descendants(&parent_run.run_id).await.unwrap();
    assert_eq!(children.len(), 1, "one child, never a second (seed {seed})");
    assert_eq!(runs.iter().filter(|r| r.agent == "steps").count(), 1, "seed {seed}");
    for id in [&parent_run.run_id, &children[0].run_id] {
        let cp = read_checkpoint(&store, id).await.unwrap().unwrap();
        assert_eq!(cp.agent_status, AgentStatus::Completed, "seed {seed}");
        for s in &cp.states {
            assert_eq!(s.completed, 1, "{id}: {} completed {} times on record (seed {seed})", s.name, s.completed);
        }
    }
    let total = read_checkpoint(&store, &parent_run.run_id).await.unwrap().unwrap().read_context().unwrap();
    assert_eq!(total.get_state::<usize>("total"), Some(1_000 + (0..CHILD_STEPS).sum::<usize>()), "seed {seed}");
    // Executions beyond one of each state were all in killed processes.
    let text = std::fs::read_to_string(dir.path().join("log")).unwrap();
    common::kills::ran_once_outside(&text, &killed, seed);
    eprintln!("child kills: {} kills, {} executions logged", killed.len(), text.lines().count());
}

/// A parent's picture expands the child run its state started, on that state: from the
/// child's definition where the console knows it, from the child's snapshot where it does
/// not; and `graph RUN --expand` on the command line. Unexpanded, it is the parent alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parents_picture_expands_the_child_its_state_started() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.db");
    let store = SqliteStore::open(&path).unwrap();
    let (runs, hold) = (Runs::default(), Arc::new(AtomicBool::new(false)));
    let result = publish(&runs, &hold).with_store(store.clone()).run_with(input("one two")).await.unwrap();
    let id = result.run_id().to_owned();
    let child = store.descendants(&id).await.unwrap().remove(0).run_id;

    // Both workflows known: the child's own picture, coloured by its run, inside `delegate`
    // (the parent's second state, `s1`).
    let console = agent_runtime::console::Console::new(store.clone())
        .agent(publish(&runs, &hold))
        .agent(summarise(&runs, &hold))
        .router();
    let reply = common::http::get(&console, &format!("/api/v1/runs/{id}/graph.dot?expand=1")).await;
    let (status, dot) = (reply.status, reply.body);
    assert_eq!(status, axum::http::StatusCode::OK, "{dot}");
    assert!(dot.contains("    subgraph cluster_s1 {\n        label=\"child run: summarise\";\n"), "{dot}");
    for (node, name) in [("s1_s0", "count"), ("s1_s1", "pick")] {
        let line = dot.lines().find(|l| l.trim_start().starts_with(&format!("{node} ["))).unwrap_or_default();
        assert!(line.contains(&format!("label=\"{name}\"")) && line.contains("tooltip=\"Completed\""), "{dot}");
    }
    assert!(dot.contains("    s1 -> s1_start [style=dashed, label=\"runs\"];\n"), "{dot}");
    let svg = common::http::get(&console, &format!("/api/v1/runs/{id}/graph.svg?expand=1")).await.body;
    assert!(
        svg.contains("<g class=\"child\" data-state=\"delegate\" data-child=\"summarise\" id=\"s1_child\""),
        "{svg}"
    );
    let mermaid = common::http::get(&console, &format!("/api/v1/runs/{id}/graph.mmd?expand=true")).await.body;
    assert!(mermaid.contains("    subgraph s1_child[\"child run: summarise\"]\n"), "{mermaid}");
    let plain = common::http::get(&console, &format!("/api/v1/runs/{id}/graph.dot")).await.body;
    assert!(!plain.contains("cluster_s1") && !plain.contains("summarise"), "not expanded unless asked: {plain}");

    // Only the parent known: the child from its snapshot (its states, statuses, no edges).
    let console = agent_runtime::console::Console::new(store.clone()).agent(publish(&runs, &hold)).router();
    let dot = common::http::get(&console, &format!("/api/v1/runs/{id}/graph.dot?expand=1")).await.body;
    assert!(dot.contains("label=\"child run: summarise\""), "{dot}");
    assert!(dot.contains("s1_s0 [label=\"count\"") && dot.contains("s1_s1 [label=\"pick\""), "{dot}");
    // The child alone is a workflow this console cannot draw.
    let reply = common::http::get(&console, &format!("/api/v1/runs/{child}/graph.dot?expand=1")).await;
    let (status, _) = (reply.status, reply.body);
    assert_eq!(status, axum::http::StatusCode::NOT_FOUND);

    // The command line: the parent's own workflow, the child from its snapshot.
    let argv = ["publish", "--store", path.to_str().unwrap(), "graph", &id[..8], "--expand", "--format", "dot"];
    let cli = agent_runtime::cli::parse(argv).unwrap();
    let mut out = Vec::new();
    agent_runtime::cli::execute(&cli, || publish(&runs, &hold), &mut out).await.unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("subgraph cluster_s1 {") && out.contains("s1_s1 [label=\"pick\""), "{out}");
    let argv = ["publish", "--store", path.to_str().unwrap(), "graph", &id[..8], "--format", "dot"];
    let mut out = Vec::new();
    agent_runtime::cli::execute(&agent_runtime::cli::parse(argv).unwrap(), || publish(&runs, &hold), &mut out)
        .await
        .unwrap();
    assert!(!String::from_utf8(out).unwrap().contains("cluster_s1"), "not expanded unless asked");
}
