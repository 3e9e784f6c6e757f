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
