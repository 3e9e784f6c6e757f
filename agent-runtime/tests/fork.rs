//! Time travel: `Agent::fork` and the store's history, on every store.
//!
//! Translated from LangGraph's time-travel tests (`get_state_history`, `update_state` on a
//! past checkpoint, then invoke from it): a fork goes on from the commit it names, with the
//! edit applied, runs nothing completed before that commit, and leaves the original run
//! exactly as it was.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use agent_core::{AgentError, CheckpointError, Context, StateResult};
use agent_runtime::store::{checkpoint_at, history, CheckpointStore, LineageKind, MemoryStore, RunQuery};
use agent_runtime::{Agent, AgentStatus, ForkAt};

mod common;

/// How many times each state ran.
type Runs = Arc<Mutex<HashMap<&'static str, usize>>>;

fn ran(runs: &Runs, state: &'static str) {
    *runs.lock().unwrap().entry(state).or_default() += 1;
}

/// `price` (sets `price` to 10) → `tax` (adds 10%) → `total` (doubles) → `report`;
/// `total` fails while `broken`.
fn quote(name: &str, runs: &Runs, broken: &Arc<AtomicBool>) -> Agent {
    let mut agent = Agent::new(name.to_owned());
    let r = runs.clone();
    agent.add_state("price", move |ctx: Context| {
        ran(&r, "price");
        async move {
            ctx.set_state("price", 10u64);
            StateResult::next("tax")
        }
    });
    let r = runs.clone();
    agent.add_state("tax", move |ctx: Context| {
        ran(&r, "tax");
        async move {
            let price: u64 = ctx.get_state("price").unwrap();
            ctx.set_state("taxed", price + price / 10);
            StateResult::next("total")
        }
    });
    let (r, broken) = (runs.clone(), broken.clone());
    agent.add_state("total", move |ctx: Context| {
        ran(&r, "total");
        let broken = broken.load(Ordering::SeqCst);
        async move {
            if broken {
                return Err(std::io::Error::other("the totaliser is broken"));
            }
            let taxed: u64 = ctx.get_state("taxed").unwrap();
            ctx.set_state("total", taxed * 2);
            Ok(StateResult::next("report"))
        }
    });
    let r = runs.clone();
    agent.add_state("report", move |_ctx: Context| {
        ran(&r, "report");
        async { StateResult::End }
    });
    agent
}

fn count(runs: &Runs, state: &str) -> usize {
    runs.lock().unwrap().get(state).copied().unwrap_or(0)
}

async fn scenario(store: Arc<dyn CheckpointStore>, tag: &str) {
    let runs: Runs = Arc::default();
    let broken = Arc::new(AtomicBool::new(false));
    let name = format!("quote-{tag}");
    let agent = quote(&name, &runs, &broken).with_store(store.clone());
    let first = agent.run().await.unwrap();
    let id = first.run_id().to_owned();
    assert_eq!(first.context().get_state::<u64>("total"), Some(22), "{tag}");

    // The history: every commit kept, the states about to run at each.
    let commits = history(&*store, &id).await.unwrap();
    assert!(commits.windows(2).all(|w| w[0].seq < w[1].seq), "{tag}: in order");
    assert_eq!(commits.last().unwrap().status, AgentStatus::Completed, "{tag}");
    assert_eq!(commits.last().unwrap().completed, ["price", "tax", "total", "report"], "{tag}");
    let before_total = commits.iter().rev().find(|c| c.running == ["total"]).expect("a commit before total").clone();
    assert_eq!(before_total.completed, ["price", "tax"], "{tag}");
    let at = checkpoint_at(&*store, &id, before_total.seq).await.unwrap();
    assert_eq!(at.running_states(), ["total"], "{tag}: the checkpoint as of that commit");
    let row_before = store.get_run(&id).await.unwrap().unwrap();

    // Fork just before `total`, with another taxed price: only total and report run again.
    let fork =
        agent.fork(&id, ForkAt::Checkpoint(before_total.seq), |ctx| ctx.set_state("taxed", 50u64)).await.unwrap();
    assert_ne!(fork, id);
    let lineage = store.lineage(&fork).await.unwrap().expect("the fork's lineage");
    assert_eq!((lineage.parent_run_id.as_str(), lineage.parent_seq), (id.as_str(), Some(before_total.seq)), "{tag}");
    assert_eq!(lineage.kind, LineageKind::Fork);
    assert_eq!(store.descendants(&id).await.unwrap().len(), 1, "{tag}");
    let row = store.get_run(&fork).await.unwrap().unwrap();
    assert_eq!((row.status, row.owner.as_deref()), (AgentStatus::Running, None), "{tag}: waiting for an owner");
    let forked = agent.recover(&fork).await.unwrap();
    assert_eq!(forked.status(), AgentStatus::Completed, "{tag}");
    assert_eq!(forked.context().get_state::<u64>("total"), Some(100), "{tag}: from the edit");
    assert_eq!(forked.context().get_state::<u64>("price"), Some(10), "{tag}: the fork keeps what came before");
    assert_eq!((count(&runs, "price"), count(&runs, "tax")), (1, 1), "{tag}: nothing before the commit ran again");
    assert_eq!((count(&runs, "total"), count(&runs, "report")), (2, 2), "{tag}");

    // The original is untouched: its row and its history.
    assert_eq!(store.get_run(&id).await.unwrap().unwrap(), row_before, "{tag}");
    assert_eq!(history(&*store, &id).await.unwrap(), commits, "{tag}");

    // A commit that is not kept, and a state never about to run: refused, nothing written.
    let before = store.count_runs(&RunQuery::default()).await.unwrap();
    let missing = agent.fork(&id, ForkAt::Checkpoint(10_000), |_| {}).await;
    assert!(
        matches!(missing, Err(AgentError::Checkpoint(CheckpointError::NoCommit { seq: 10_000, .. }))),
        "{tag}: {missing:?}"
    );
    let unknown = agent.fork(&id, ForkAt::Before("nowhere".into()), |_| {}).await;
    assert!(matches!(unknown, Err(AgentError::Checkpoint(CheckpointError::Mismatch { .. }))), "{tag}: {unknown:?}");
    // Another workflow cannot fork it.
    let other = quote(&format!("other-{tag}"), &runs, &broken).with_store(store.clone());
    let foreign = other.fork(&id, ForkAt::Latest, |_| {}).await;
    assert!(matches!(foreign, Err(AgentError::Checkpoint(CheckpointError::Mismatch { .. }))), "{tag}: {foreign:?}");
    assert_eq!(store.count_runs(&RunQuery::default()).await.unwrap(), before, "{tag}: refusals write nothing");

    // A failed run, retried from a chosen state by a fork: from just before `tax`.
    broken.store(true, Ordering::SeqCst);
    let failed = agent.run().await;
    assert!(failed.is_err(), "{tag}");
    let failed_id = store
        .list_runs(&RunQuery { status: Some(AgentStatus::Failed), agent: Some(name.clone()), ..RunQuery::default() })
        .await
        .unwrap()[0]
        .run_id
        .clone();
    broken.store(false, Ordering::SeqCst);
    let (taxes, prices) = (count(&runs, "tax"), count(&runs, "price"));
    let again = agent.fork(&failed_id, ForkAt::Before("tax".into()), |_| {}).await.unwrap();
    let retried = agent.recover(&again).await.unwrap();
    assert_eq!(retried.context().get_state::<u64>("total"), Some(22), "{tag}");
    assert_eq!((count(&runs, "tax"), count(&runs, "price")), (taxes + 1, prices), "{tag}: tax again, price not");
    assert_eq!(store.get_run(&failed_id).await.unwrap().unwrap().status, AgentStatus::Failed, "{tag}: untouched");
    // And from its failed commit itself: the failed state runs again with fresh attempts.
    let latest = agent.fork(&failed_id, ForkAt::Latest, |_| {}).await.unwrap();
    assert_eq!(agent.recover(&latest).await.unwrap().status(), AgentStatus::Completed, "{tag}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forks_on_the_memory_store() {
    scenario(Arc::new(MemoryStore::new()), "memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forks_on_sqlite() {
    common::on_sqlite(|store| scenario(store, "sqlite")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forks_on_postgres() {
    common::pg::on_postgres("forks_on_postgres", "fork", |store| scenario(store, "postgres")).await;
}
