//! Typed maps (`StateResult::map`) and reducers (`Agent::reduce`).
//!
//! Translated from LangGraph's graph-runtime tests where they cover what we promise:
//! `test_parallel_node_execution` (a slow and a fast branch appending to one list end in
//! branch order, whichever finished first) and the `Send` map-reduce tests (each branch gets
//! its own item; the join sees every result). Ours add what LangGraph does not promise: the
//! results are in item order, at most `MAP_WINDOW` items run at once, and after a crash
//! only the unfinished items run again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_core::{BoxError, BranchAt, Context, ContextError, Reduce, StateResult};
use agent_runtime::store::{read_checkpoint, CheckpointStore, SqliteStore};
use agent_runtime::{Agent, AgentStatus};
use serde::{Deserialize, Serialize};

mod common;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct Doc {
    id: u32,
    words: u32,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Score {
    id: u32,
    score: u32,
}

/// `split` maps `score` over `n` documents; `score` sleeps longer the lower the id (so the
/// last items finish first) and sets its result; `join` reads the results.
fn scorer(n: u32) -> Agent {
    let mut agent = Agent::new("scorer");
    agent.add_state("split", move |_c: Context| async move {
        StateResult::map("score", (0..n).map(|id| Doc { id, words: id * 10 }))
    });
    agent.add_state("score", move |c: Context| async move {
        let doc: Doc = c.item()?;
        tokio::time::sleep(Duration::from_millis(u64::from(n - doc.id))).await;
        assert_eq!(c.branch_index(), Some(doc.id), "a branch's index is its item's");
        c.set_result(Score { id: doc.id, score: doc.words + 1 })?;
        Ok::<_, BoxError>(StateResult::next("join"))
    });
    agent.add_state("join", |c: Context| async move {
        let scores: Vec<Score> = c.results()?;
        c.set_state("ids", scores.iter().map(|s| s.id).collect::<Vec<_>>());
        c.set_state("total", scores.iter().map(|s| s.score).sum::<u32>());
        Ok::<_, BoxError>(StateResult::End)
    });
    agent
}

#[tokio::test(start_paused = true)]
async fn each_branch_gets_its_item_and_the_join_gets_every_result_in_item_order() {
    let result = scorer(50).run().await.unwrap();
    assert_eq!(result.status(), AgentStatus::Completed);
    let ids: Vec<u32> = result.context().get_state("ids").unwrap();
    assert_eq!(ids, (0..50).collect::<Vec<_>>(), "item order, though the last items finished first");
    assert_eq!(result.context().get_state::<u32>("total"), Some((0..50).map(|i| i * 10 + 1).sum()));
    let metrics = result.metrics();
    let score = metrics.states.iter().find(|s| s.name == "score").unwrap();
    assert_eq!(score.completed, 50, "one execution per item");
    let join = metrics.states.iter().find(|s| s.name == "join").unwrap();
    assert_eq!(join.completed, 1, "the branches meet once");
}

/// A state outside a map has no item; a map of no items ends its branch; a map of one item
/// runs it.
#[tokio::test(start_paused = true)]
async fn outside_a_map_there_is_no_item_and_empty_or_single_maps_work() {
    let mut agent = Agent::new("edges");
    agent.add_state("start", |c: Context| async move {
        assert_eq!(c.item::<u32>(), Err(ContextError::NoItem));
        assert_eq!(c.set_result(1), Err(ContextError::NoItem));
        assert_eq!(c.branch_index(), None);
        let n: u32 = c.get_state("n").unwrap();
        StateResult::map("one", 0..n)
    });
    agent.add_state("one", |c: Context| async move {
        let i: u32 = c.item()?;
        assert!(c.item::<String>().is_err(), "an item read as the wrong type is an error");
        c.set_result(i + 100)?;
        Ok::<_, BoxError>(StateResult::next("after"))
    });
    agent.add_state("after", |c: Context| async move {
        c.set_state("seen", c.results::<u32>()?);
        Ok::<_, BoxError>(StateResult::End)
    });
    let ctx = Context::new();
    ctx.set_state("n", 1);
    let result = agent.run_in(ctx).await.unwrap();
    assert_eq!(result.context().get_state::<Vec<u32>>("seen"), Some(vec![100]));
    let ctx = Context::new();
    ctx.set_state("n", 0);
    let result = agent.run_in(ctx).await.unwrap();
    assert_eq!(result.status(), AgentStatus::Completed);
    assert!(!result.context().has_state("seen"), "an empty map ends the branch");
}

/// An item serde cannot encode fails the state that returned the map, naming it.
#[tokio::test]
async fn an_item_that_cannot_be_encoded_fails_the_state() {
    struct Bad;
    impl Serialize for Bad {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("no encoding"))
        }
    }
    let mut agent = Agent::new("bad");
    agent.add_state("start", |_c: Context| async { StateResult::map("work", [Bad]) });
    agent.add_state("work", |_c: Context| async { StateResult::End });
    let err = agent.run().await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("start") && text.contains("no encoding"), "{text}");
}

/// No more than `MAP_WINDOW` items wait at once: a map over 5,000 items that each wait
/// never has more in flight, and still runs every item.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_map_runs_at_most_its_window_at_once() {
    let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut agent = Agent::new("window");
    agent.add_state("split", |_c: Context| async { StateResult::map("work", 0..5_000u32) });
    let (n, m) = (now.clone(), most.clone());
    agent.add_state("work", move |c: Context| {
        let (now, most) = (n.clone(), m.clone());
        async move {
            let inside = now.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(inside, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(1)).await;
            now.fetch_sub(1, Ordering::SeqCst);
            c.set_result(c.item::<u32>().unwrap()).unwrap();
            StateResult::next("join")
        }
    });
    agent.add_state("join", |_c: Context| async { StateResult::End });
    let result = agent.run().await.unwrap();
    let results: Vec<u32> = result.context().results().unwrap();
    assert_eq!(results, (0..5_000).collect::<Vec<_>>());
    let most = most.load(Ordering::SeqCst);
    assert!(most <= StateResult::MAP_WINDOW as usize, "{most} items in flight at once");
    assert!(most > 100, "items overlap: {most} at most");
}

/// LangGraph's `test_parallel_node_execution`: a slow and a fast branch append to one list;
/// the list is in branch order, whichever finished first, on every run.
#[tokio::test(start_paused = true)]
async fn parallel_writes_to_a_reducer_key_apply_in_branch_order() {
    for slow_first in [true, false] {
        let mut agent = Agent::new("parallel").reduce("results", Reduce::Append);
        agent.add_state("fan", |_c: Context| async { StateResult::parallel(["a", "b", "c"]) });
        for (name, ms) in [("a", if slow_first { 30 } else { 1 }), ("b", 10), ("c", if slow_first { 1 } else { 30 })] {
            agent.add_state(name, move |c: Context| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                c.set_state("results", name);
                StateResult::next("join")
            });
        }
        agent.add_state("join", |c: Context| async move {
            // The join sees every branch's write, folded in.
            c.set_state("seen", c.get_state::<Vec<String>>("results").unwrap().len());
            StateResult::End
        });
        let result = agent.run().await.unwrap();
        let list: Vec<String> = result.context().get_state("results").unwrap();
        assert_eq!(list, ["a", "b", "c"], "slow first: {slow_first}");
        assert_eq!(result.context().get_state::<usize>("seen"), Some(3));
    }
}

/// Every built-in reducer and a custom one, inside branches and at the top level; a
/// contribution of the wrong shape fails the run instead of being lost.
#[tokio::test(start_paused = true)]
async fn each_reducer_folds_branch_writes_and_a_bad_one_fails_the_run() {
    let mut agent = Agent::new("reducers")
        .reduce("extend", Reduce::Extend)
        .reduce("merge", Reduce::Merge)
        .reduce("max", Reduce::Max)
        .reduce("sum", Reduce::with(|a: u64, b: u64| a + b));
    agent.add_state("fan", |c: Context| async move {
        c.set_state("sum", 100u64); // outside a fan-out: folded at once
        StateResult::map("work", [3u64, 9, 4])
    });
    agent.add_state("work", |c: Context| async move {
        let i: u64 = c.item().unwrap();
        tokio::time::sleep(Duration::from_millis(10 - i)).await;
        c.set_state("extend", vec![i, i]);
        c.set_state("merge", HashMap::from([(format!("k{i}"), i)]));
        c.set_state("max", i);
        c.set_state("sum", i);
        // Not visible to the branch itself until the branches meet.
        assert_eq!(c.get_state::<u64>("sum"), Some(100));
        if c.get_state::<bool>("bad").unwrap_or(false) {
            c.set_state("extend", "not a list");
        }
        StateResult::next("join")
    });
    agent.add_state("join", |_c: Context| async { StateResult::End });
    let result = agent.run().await.unwrap();
    let ctx = result.context();
    assert_eq!(ctx.get_state::<Vec<u64>>("extend"), Some(vec![3, 3, 9, 9, 4, 4]));
    assert_eq!(ctx.get_state::<HashMap<String, u64>>("merge").unwrap().len(), 3);
    assert_eq!(ctx.get_state::<u64>("max"), Some(9));
    assert_eq!(ctx.get_state::<u64>("sum"), Some(116));

    let ctx = Context::new();
    ctx.set_state("bad", true);
    let err = agent.run_in(ctx).await.unwrap_err();
    assert!(err.to_string().contains("extend"), "{err}");
}

/// A map's results go through the reducer of the key it names; a map inside a map's branch
/// hands its branches' writes to that branch, so everything folds in item order. The
/// branches of both meet at `join`, which runs once.
#[tokio::test(start_paused = true)]
async fn results_into_a_reducer_key_and_nested_maps_keep_item_order() {
    let mut agent = Agent::new("nested").reduce("best", Reduce::Max).reduce("log", Reduce::Append);
    agent.add_state("outer", |_c: Context| async { StateResult::map("group", [0u32, 1, 2]) });
    agent.add_state("group", |c: Context| async move {
        let g: u32 = c.item().unwrap();
        tokio::time::sleep(Duration::from_millis(u64::from(3 - g))).await;
        c.set_state("log", format!("g{g}"));
        c.set_result(g * 100).unwrap();
        StateResult::map("leaf", (0..3).map(move |i| g * 10 + i)).results_into("best")
    });
    agent.add_state("leaf", |c: Context| async move {
        let v: u32 = c.item().unwrap();
        tokio::time::sleep(Duration::from_millis(u64::from(30 - v))).await;
        c.set_state("log", v);
        c.set_result(v).unwrap();
        StateResult::next("join")
    });
    agent.add_state("join", |c: Context| async move {
        c.set_state("joined", c.get_state_or::<u32>("joined", 0) + 1);
        StateResult::End
    });
    let result = agent.run().await.unwrap();
    let ctx = result.context();
    assert_eq!(ctx.get_state::<u32>("best"), Some(22));
    assert_eq!(ctx.get_state::<u32>("joined"), Some(1), "every branch meets at the join, once");
    let log: Vec<serde_json::Value> = ctx.get_state("log").unwrap();
    let expected: Vec<serde_json::Value> = (0..3)
        .flat_map(|g| {
            let mut v = vec![serde_json::json!(format!("g{g}"))];
            v.extend((0..3).map(|i| serde_json::json!(g * 10 + i)));
            v
        })
        .collect();
    assert_eq!(log, expected, "each outer branch's writes, then its inner branches', in order");
    assert_eq!(ctx.results::<u32>().unwrap(), vec![0, 100, 200]);
}

/// A retried attempt's writes do not count: only the attempt that completed contributes.
#[tokio::test(start_paused = true)]
async fn a_failed_attempts_contributions_are_dropped() {
    let tries = Arc::new(AtomicUsize::new(0));
    let mut agent = Agent::new("retry").reduce("log", Reduce::Append);
    agent.add_state("fan", |_c: Context| async { StateResult::map("work", [1u32, 2]) });
    let t = tries.clone();
    agent
        .add_state("work", move |c: Context| {
            let tries = t.clone();
            async move {
                let i: u32 = c.item().unwrap();
                c.set_state("log", format!("try {i}"));
                c.set_result(i).unwrap();
                if i == 1 && tries.fetch_add(1, Ordering::SeqCst) == 0 {
                    return Err::<StateResult, BoxError>("first attempt fails".into());
                }
                Ok(StateResult::next("join"))
            }
        })
        .retry_policy(agent_core::RetryPolicy::new().max_retries(2).initial_delay(Duration::from_millis(1)));
    agent.add_state("join", |_c: Context| async { StateResult::End });
    let result = agent.run().await.unwrap();
    assert_eq!(result.context().get_state::<Vec<String>>("log").unwrap(), ["try 1", "try 2"]);
    assert_eq!(result.context().results::<u32>().unwrap(), [1, 2]);
}

/// A checkpoint taken mid-map and restored in a fresh agent runs only the unfinished
/// items, and ends with the same results and reductions as an uninterrupted run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_map_runs_only_its_unfinished_items() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let runs: Arc<Mutex<Vec<u32>>> = Arc::default();
    let define = |gate: Arc<tokio::sync::Semaphore>, runs: Arc<Mutex<Vec<u32>>>| {
        let mut agent = Agent::new("halves").reduce("sum", Reduce::with(|a: u64, b: u64| a + b));
        agent.add_state("split", |_c: Context| async { StateResult::map("work", 0..20u32) });
        agent.add_state("work", move |c: Context| {
            let (gate, runs) = (gate.clone(), runs.clone());
            async move {
                let i: u32 = c.item().unwrap();
                runs.lock().unwrap().push(i);
                if i % 2 == 1 {
                    // The odd items wait until released.
                    gate.acquire().await.unwrap().forget();
                }
                c.set_state("sum", u64::from(i));
                c.set_result(i * i).unwrap();
                StateResult::next("join")
            }
        });
        agent.add_state("join", |_c: Context| async { StateResult::End });
        agent
    };
    let agent = define(gate.clone(), runs.clone());
    let handle = agent.start(agent_runtime::RunOptions::new()).unwrap();
    // Until the ten even items are done.
    let checkpoint = loop {
        let cp = agent.create_checkpoint();
        let done = cp.groups.first().and_then(|g| g.branches.as_ref()).map_or(0, |b| {
            b.at.iter().filter(|(_, at)| matches!(at, BranchAt::Waiting(_))).map(|(n, _)| *n).sum::<u32>()
        });
        if done == 10 {
            break cp;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let _ = handle.cancel().await;
    let checkpoint = agent_core::Checkpoint::from_json(&checkpoint.to_json().unwrap()).unwrap();

    let again: Arc<Mutex<Vec<u32>>> = Arc::default();
    let restored = define(Arc::new(tokio::sync::Semaphore::new(1_000)), again.clone());
    restored.restore_from_checkpoint(checkpoint).unwrap();
    let result = restored.run().await.unwrap();
    assert_eq!(result.status(), AgentStatus::Completed);
    let mut rerun = again.lock().unwrap().clone();
    rerun.sort_unstable();
    assert_eq!(rerun, (0..20).filter(|i| i % 2 == 1).collect::<Vec<_>>(), "only the unfinished items ran again");
    assert_eq!(result.context().results::<u32>().unwrap(), (0..20).map(|i| i * i).collect::<Vec<_>>());
    assert_eq!(result.context().get_state::<u64>("sum"), Some((0..20).sum()));
}

/// A corrupt record of a map's branches is refused before anything runs.
#[tokio::test]
async fn a_corrupt_branch_record_is_refused() {
    let agent = scorer(4);
    let mut cp = agent_core::Checkpoint::new("scorer", "r");
    cp.agent_status = AgentStatus::Running;
    let json = serde_json::json!({
        "format": "agent-checkpoint", "schema_version": 5, "timestamp": 1, "agent_name": "scorer", "run_id": "r",
        "agent_status": "Running", "completed_states": ["split"], "states": [], "steps": 1, "context": {},
        "tokens": [{"state": "score", "group": 0, "count": 2}],
        "groups": [{"parent": null, "origin": "split", "waiting": [["join", 1]], "width": 4, "branches": {
            "at": [[1, {"waiting": "join"}], [2, {"running": "score"}], [1, "done"]],
            "map": {"target": "score", "into": "results", "items": [1, 2, 3, 4]}
        }}]
    });
    let good = agent_core::Checkpoint::from_json(&json.to_string()).unwrap();
    assert!(scorer(4).restore_from_checkpoint(good).is_ok());
    for (what, broken) in [
        ("width", json.to_string().replace("\"width\":4", "\"width\":5")),
        ("items", json.to_string().replace("[1,2,3,4]", "[1,2,3]")),
        ("counts", json.to_string().replace("\"count\":2", "\"count\":1")),
        ("state", json.to_string().replace("{\"running\":\"score\"}", "{\"running\":\"nowhere\"}")),
    ] {
        let cp = agent_core::Checkpoint::from_json(&broken).unwrap();
        let err = agent.restore_from_checkpoint(cp).unwrap_err();
        assert!(
            matches!(err, agent_core::CheckpointError::Invalid { .. } | agent_core::CheckpointError::Mismatch { .. }),
            "{what}: {err}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// A 1,000-item map in a durable run whose process dies at about half.
// ---------------------------------------------------------------------------------------

const ITEMS: u32 = 1_000;

/// Append `line` to the log at `AGENT_MAP_LOG`, if set.
fn logged(line: String) {
    common::kills::log_execution("AGENT_MAP_LOG", &line);
}

/// `split` maps `work` over 1,000 items, 50 at a time; each works 1 to 40 ms, adds its item
/// to `sum` and sets its square as its result; `join` totals the results.
fn thousand(runs: Arc<Mutex<Vec<u32>>>) -> Agent {
    let mut agent = Agent::new("thousand").reduce("sum", Reduce::with(|a: u64, b: u64| a + b)).max_concurrent(50);
    agent.add_state("split", |_c: Context| async { StateResult::map("work", 0..ITEMS) });
    agent.add_state("work", move |c: Context| {
        let runs = runs.clone();
        async move {
            let i: u32 = c.item()?;
            runs.lock().unwrap().push(i);
            logged(format!("work {i}"));
            tokio::time::sleep(Duration::from_millis(u64::from(1 + i % 40))).await;
            c.set_state("sum", u64::from(i));
            c.set_result(u64::from(i) * u64::from(i))?;
            Ok::<_, BoxError>(StateResult::next("join"))
        }
    });
    agent.add_state("join", |c: Context| async move {
        let squares: Vec<u64> = c.results()?;
        c.set_state("squares", squares.iter().sum::<u64>());
        c.set_state("count", squares.len());
        Ok::<_, BoxError>(StateResult::End)
    });
    agent
}

fn expected_squares() -> u64 {
    (0..u64::from(ITEMS)).map(|i| i * i).sum()
}

/// The runtime running the map is dropped once about half the items are recorded done;
/// recovered, the run executes again exactly the items the store had not recorded done, and
/// ends as an uninterrupted run does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_map_killed_at_half_resumes_only_unfinished_items() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("runs.db")).unwrap();
    let ttl = Duration::from_millis(300);
    let first: Arc<Mutex<Vec<u32>>> = Arc::default();
    let id = {
        let (store, first) = (store.clone(), first.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            let handle = rt.block_on(async {
                thousand(first)
                    .with_store(store.clone())
                    .lease_ttl(ttl)
                    .start(agent_runtime::RunOptions::new())
                    .unwrap()
            });
            let id = handle.id().to_owned();
            rt.block_on(async {
                loop {
                    if let Ok(Some(cp)) = read_checkpoint(&store, &id).await {
                        let work = cp.states.iter().find(|s| s.name == "work").map_or(0, |s| s.completed);
                        if work >= ITEMS / 2 {
                            break;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
            drop(handle);
            rt.shutdown_background();
            id
        })
        .join()
        .unwrap()
    };
    // What the store holds (once a commit the dropped runtime had under way, on a blocking
    // thread, is in): the items it recorded done, and the unfinished ones.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cp = read_checkpoint(&store, &id).await.unwrap().unwrap();
    let done = cp.states.iter().find(|s| s.name == "work").unwrap().completed;
    assert!((ITEMS / 2..ITEMS).contains(&done), "{done} items recorded done at the crash");
    let at = &cp.groups[0].branches.as_ref().expect("the map's branches are recorded").at;
    let mut unfinished = Vec::new();
    let mut ord = 0;
    for (n, place) in at {
        if matches!(place, BranchAt::Running(_)) {
            unfinished.extend(ord..ord + n);
        }
        ord += n;
    }
    assert_eq!(unfinished.len() as u32, ITEMS - done);

    let second: Arc<Mutex<Vec<u32>>> = Arc::default();
    let agent = thousand(second.clone()).with_store(store.clone()).lease_ttl(ttl);
    let result = common::recover_once_free(&agent, &id, Duration::from_secs(30)).await.unwrap();
    assert_eq!(result.status(), AgentStatus::Completed);
    let mut again = second.lock().unwrap().clone();
    again.sort_unstable();
    assert_eq!(again, unfinished, "exactly the unfinished items ran again");
    let ctx = result.context();
    assert_eq!(ctx.get_state::<u64>("squares"), Some(expected_squares()));
    assert_eq!(ctx.get_state::<usize>("count"), Some(ITEMS as usize));
    assert_eq!(ctx.get_state::<u64>("sum"), Some((0..u64::from(ITEMS)).sum()));
    let cp = read_checkpoint(&store, &id).await.unwrap().unwrap();
    assert_eq!(
        cp.states.iter().find(|s| s.name == "work").unwrap().completed,
        ITEMS,
        "each item completed once on record"
    );
}

/// The process: go on with the unfinished map run, or start one.
#[tokio::test]
async fn map_kill_process() {
    let Ok(path) = std::env::var("AGENT_MAP_KILL") else { return };
    let store = SqliteStore::open(path).unwrap();
    let agent = thousand(Arc::default()).with_store(store.clone()).lease_ttl(Duration::from_millis(300));
    common::kills::go_on(&agent, &store, &agent_runtime::store::RunQuery::default()).await;
}

/// SIGKILL the process running a 1,000-item map at random instants (a printed seed replays
/// them), up to four times, each time going on in a new process: the run completes, each
/// item completed once on record, the reductions are an uninterrupted run's, and an item ran
/// more than once only in processes that were killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_map_goes_on_and_completes_each_item_once() {
    if std::env::var("AGENT_MAP_KILL").is_ok() {
        return;
    }
    let seed = common::kills::seed("AGENT_MAP_SEED", "map kills");
    let dir = tempfile::tempdir().unwrap();
    let (db, log) = (dir.path().join("runs.db"), dir.path().join("log"));
    let store = SqliteStore::open(&db).unwrap();
    let spawn = || {
        common::kills::worker("map_kill_process", &[("AGENT_MAP_KILL", &db), ("AGENT_MAP_LOG", &log)]).spawn().unwrap()
    };
    let done = || async {
        let runs = store.list_runs(&agent_runtime::store::RunQuery::default()).await.unwrap();
        let Some(run) = runs.first() else { return 0 };
        let Ok(Some(cp)) = read_checkpoint(&store, &run.run_id).await else { return 0 };
        cp.states.iter().find(|s| s.name == "work").map_or(0, |s| s.completed as usize)
    };
    let killed = common::kills::kill_then_finish(seed, 4, 300, Duration::from_secs(90), spawn, done).await;

    let runs = store.list_runs(&agent_runtime::store::RunQuery::default()).await.unwrap();
    assert_eq!(runs.len(), 1, "seed {seed}");
    let cp = read_checkpoint(&store, &runs[0].run_id).await.unwrap().unwrap();
    assert_eq!(cp.agent_status, AgentStatus::Completed, "seed {seed}");
    let completed: HashMap<&str, u32> = cp.states.iter().map(|s| (s.name.as_str(), s.completed)).collect();
    assert_eq!((completed["split"], completed["work"], completed["join"]), (1, ITEMS, 1), "seed {seed}");
    let ctx = cp.read_context().unwrap();
    assert_eq!(ctx.get_state::<u64>("squares"), Some(expected_squares()), "seed {seed}");
    assert_eq!(ctx.get_state::<u64>("sum"), Some((0..u64::from(ITEMS)).sum()), "seed {seed}");
    let text = std::fs::read_to_string(dir.path().join("log")).unwrap();
    let items = common::kills::ran_once_outside(&text, &killed, seed);
    assert_eq!(items, ITEMS as usize, "every item ran (seed {seed})");
    eprintln!("map kills: {} kills, {} executions for {ITEMS} items", killed.len(), text.lines().count());
}
