//! Durable runs commit journal deltas between whole snapshots: for random workflows
//! (chains, fan-out and join, retries, loops, keys removed), the checkpoint rebuilt from the
//! store (newest snapshot + the journal after it) after every commit equals a full capture
//! of the run at that instant; a run whose store stops between delta commits recovers from
//! them, running again only what was not committed; a corrupt entry is a typed error.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering::SeqCst};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use agent_core::{AgentError, AgentStatus, Checkpoint, CheckpointError, Context, RetryPolicy, StateResult};
use agent_runtime::store::{
    read_checkpoint, CheckpointStore, Claim, ClaimRequest, InputRecord, JournalEntry, Lineage, MemoryStore, Retention,
    RetentionReport, RunQuery, RunRecord, Snapshot, StoreError, StoreFuture,
};
use agent_runtime::Agent;
use proptest::prelude::*;

/// A memory store that, after each commit of a run, rebuilds the run's checkpoint from what
/// it holds and compares it with a capture of the running agent (nothing else runs in
/// between on a current-thread runtime); and that can start failing every write.
#[derive(Default)]
struct Checking {
    inner: MemoryStore,
    agent: OnceLock<Agent>,
    mismatches: Mutex<Vec<String>>,
    appends: AtomicU32,
    snapshots: AtomicU32,
    compared: AtomicU32,
    /// Journal appends still allowed before every write fails (negative: no limit).
    appends_left: AtomicI64,
}

impl Checking {
    fn new(fail_after_appends: Option<i64>) -> Arc<Checking> {
        let c = Checking::default();
        c.appends_left.store(fail_after_appends.unwrap_or(-1), SeqCst);
        Arc::new(c)
    }

    fn failing(&self) -> bool {
        self.appends_left.load(SeqCst) == 0
    }

    fn refused(&self) -> StoreError {
        StoreError::Backend { store: "checking", message: "the disk is gone".into(), source: None }
    }

    /// Compare the rebuilt checkpoint of `run_id` with a capture now.
    async fn compare(&self, run_id: &str) {
        let Some(agent) = self.agent.get() else { return };
        if agent.run_id().as_deref() != Some(run_id) {
            return;
        }
        let captured = agent.create_checkpoint();
        let rebuilt = match read_checkpoint(&self.inner, run_id).await {
            Ok(Some(c)) => c,
            other => {
                self.mismatches.lock().unwrap().push(format!("nothing to rebuild: {other:?}"));
                return;
            }
        };
        self.compared.fetch_add(1, SeqCst);
        let (a, b) = (normal(&captured), normal(&rebuilt));
        if a != b {
            self.mismatches.lock().unwrap().push(format!("captured {a:#}\nrebuilt {b:#}"));
        }
    }
}

/// A checkpoint as JSON, without its timestamp (the two are taken at different instants).
fn normal(c: &Checkpoint) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_str(&c.to_json().unwrap()).unwrap();
    v["timestamp"] = serde_json::Value::Null;
    v
}

impl CheckpointStore for Checking {
    fn kind(&self) -> &'static str {
        "checking"
    }
    fn upsert_run<'a>(&'a self, run: &'a RunRecord) -> StoreFuture<'a, ()> {
        self.inner.upsert_run(run)
    }
    fn get_run<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<RunRecord>> {
        self.inner.get_run(run_id)
    }
    fn list_runs<'a>(&'a self, query: &'a RunQuery) -> StoreFuture<'a, Vec<RunRecord>> {
        self.inner.list_runs(query)
    }
    fn append<'a>(&'a self, run: &'a RunRecord, entries: &'a [JournalEntry]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            if self.failing() {
                return Err(self.refused());
            }
            self.inner.append(run, entries).await?;
            let _ = self.appends_left.fetch_update(SeqCst, SeqCst, |n| (n > 0).then(|| n - 1));
            self.appends.fetch_add(1, SeqCst);
            self.compare(&run.run_id).await;
            Ok(())
        })
    }
    fn journal<'a>(&'a self, run_id: &'a str, after: u64) -> StoreFuture<'a, Vec<JournalEntry>> {
        self.inner.journal(run_id, after)
    }
    fn save_snapshot<'a>(&'a self, run_id: &'a str, epoch: u64, snapshot: &'a Snapshot) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            if self.failing() {
                return Err(self.refused());
            }
            self.inner.save_snapshot(run_id, epoch, snapshot).await?;
            self.snapshots.fetch_add(1, SeqCst);
            self.compare(run_id).await;
            Ok(())
        })
    }
    fn save_run_snapshot<'a>(&'a self, run: &'a RunRecord, snapshot: &'a Snapshot) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            if self.failing() {
                return Err(self.refused());
            }
            self.inner.save_run_snapshot(run, snapshot).await?;
            self.snapshots.fetch_add(1, SeqCst);
            self.compare(&run.run_id).await;
            Ok(())
        })
    }
    fn latest_snapshot<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<Snapshot>> {
        self.inner.latest_snapshot(run_id)
    }
    fn snapshots<'a>(&'a self, run_id: &'a str, limit: usize) -> StoreFuture<'a, Vec<Snapshot>> {
        self.inner.snapshots(run_id, limit)
    }
    fn claim_run<'a>(&'a self, claim: &'a ClaimRequest) -> StoreFuture<'a, Claim> {
        self.inner.claim_run(claim)
    }
    fn submit_run<'a>(
        &'a self,
        s: &'a agent_runtime::store::Submission,
    ) -> StoreFuture<'a, agent_runtime::store::Submitted> {
        self.inner.submit_run(s)
    }
    fn claim_next<'a>(
        &'a self,
        ask: &'a agent_runtime::store::ClaimNext,
    ) -> StoreFuture<'a, Vec<agent_runtime::store::NextRun>> {
        self.inner.claim_next(ask)
    }
    fn run_input<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<String>> {
        self.inner.run_input(run_id)
    }
    fn request_state_cancel<'a>(&'a self, run_id: &'a str, state: &'a str) -> StoreFuture<'a, bool> {
        self.inner.request_state_cancel(run_id, state)
    }
    fn take_state_cancels<'a>(&'a self, run_id: &'a str, epoch: u64) -> StoreFuture<'a, Vec<String>> {
        self.inner.take_state_cancels(run_id, epoch)
    }
    fn record_lineage<'a>(&'a self, lineage: &'a Lineage) -> StoreFuture<'a, ()> {
        self.inner.record_lineage(lineage)
    }
    fn lineage<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<Lineage>> {
        self.inner.lineage(run_id)
    }
    fn descendants<'a>(&'a self, parent_run_id: &'a str) -> StoreFuture<'a, Vec<Lineage>> {
        self.inner.descendants(parent_run_id)
    }
    fn renew_lease<'a>(&'a self, run_id: &'a str, owner: &'a str, epoch: u64, ttl: Duration) -> StoreFuture<'a, i64> {
        self.inner.renew_lease(run_id, owner, epoch, ttl)
    }
    fn release_run<'a>(&'a self, run_id: &'a str, epoch: u64) -> StoreFuture<'a, ()> {
        self.inner.release_run(run_id, epoch)
    }
    fn prune_snapshots<'a>(&'a self, run_id: &'a str, epoch: u64, keep: usize) -> StoreFuture<'a, RetentionReport> {
        if self.failing() {
            return Box::pin(std::future::ready(Err(self.refused())));
        }
        self.inner.prune_snapshots(run_id, epoch, keep)
    }
    fn put_input<'a>(&'a self, input: &'a InputRecord) -> StoreFuture<'a, ()> {
        self.inner.put_input(input)
    }
    fn inputs<'a>(&'a self, run_id: Option<&'a str>, pending_only: bool) -> StoreFuture<'a, Vec<InputRecord>> {
        self.inner.inputs(run_id, pending_only)
    }
    fn answer_input<'a>(
        &'a self,
        run_id: &'a str,
        request_id: &'a str,
        answer: &'a str,
        defaulted: bool,
        at_ms: i64,
    ) -> StoreFuture<'a, bool> {
        self.inner.answer_input(run_id, request_id, answer, defaulted, at_ms)
    }
    fn put_input_fenced<'a>(&'a self, input: &'a InputRecord, epoch: u64) -> StoreFuture<'a, ()> {
        self.inner.put_input_fenced(input, epoch)
    }
    fn answer_input_fenced<'a>(
        &'a self,
        run_id: &'a str,
        request_id: &'a str,
        answer: &'a str,
        defaulted: bool,
        at_ms: i64,
        epoch: u64,
    ) -> StoreFuture<'a, bool> {
        self.inner.answer_input_fenced(run_id, request_id, answer, defaulted, at_ms, epoch)
    }
    fn delete_run<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, bool> {
        self.inner.delete_run(run_id)
    }
    fn apply_retention<'a>(&'a self, policy: &'a Retention, now_ms: i64) -> StoreFuture<'a, RetentionReport> {
        self.inner.apply_retention(policy, now_ms)
    }
}

/// One stage of a generated workflow; stage `i`'s states are named after `i`.
#[derive(Clone, Debug)]
enum Stage {
    /// A state that sets its key to a value of this many bytes, and removes the key of the
    /// stage before when `remove`.
    Step { bytes: usize, remove: bool },
    /// A state fanning out to `width` branches, each setting a key of its own (and one of
    /// them appending to a shared list), all joining at the stage's join state.
    Fan { width: usize },
    /// A state that fails its first `fails` attempts (retried, at most 3 times).
    Flaky { fails: u32 },
    /// A state running `times` times in a row, counting.
    Loop { times: u32 },
}

fn stage() -> impl Strategy<Value = Stage> {
    prop_oneof![
        (0usize..3_000, any::<bool>()).prop_map(|(bytes, remove)| Stage::Step { bytes, remove }),
        (2usize..6).prop_map(|width| Stage::Fan { width }),
        (0u32..3).prop_map(|fails| Stage::Flaky { fails }),
        (1u32..150).prop_map(|times| Stage::Loop { times }),
    ]
}

type Runs = Arc<Mutex<HashMap<String, u32>>>;

fn ran(runs: &Runs, name: &str) {
    *runs.lock().unwrap().entry(name.to_owned()).or_default() += 1;
}

/// The agent of `stages`; `runs` counts each state's attempts.
fn workflow(stages: &[Stage], runs: &Runs) -> Agent {
    let mut agent = Agent::new("deltas");
    let entry = |i: usize| stages.get(i).map(|_| format!("s{i}"));
    for (i, stage) in stages.iter().enumerate() {
        let name = format!("s{i}");
        let next = entry(i + 1);
        let go = move |next: &Option<String>| match next {
            Some(n) => StateResult::next(n.clone()),
            None => StateResult::End,
        };
        let runs = runs.clone();
        match stage.clone() {
            Stage::Step { bytes, remove } => {
                agent.add_state(name.clone(), move |ctx: Context| {
                    let (next, name, runs) = (next.clone(), name.clone(), runs.clone());
                    async move {
                        ran(&runs, &name);
                        ctx.set_state(&format!("k{i}"), "v".repeat(bytes));
                        if remove && i > 0 {
                            ctx.remove_state(&format!("k{}", i - 1));
                        }
                        go(&next)
                    }
                });
            }
            Stage::Fan { width } => {
                let branches: Vec<String> = (0..width).map(|b| format!("s{i}b{b}")).collect();
                let fanned = branches.clone();
                let fan_runs = runs.clone();
                agent.add_state(name.clone(), move |_ctx: Context| {
                    let (fanned, name, runs) = (fanned.clone(), name.clone(), fan_runs.clone());
                    async move {
                        ran(&runs, &name);
                        StateResult::parallel(fanned)
                    }
                });
                let join = format!("s{i}j");
                for (b, branch) in branches.into_iter().enumerate() {
                    let (join, runs) = (join.clone(), runs.clone());
                    agent.add_state(branch.clone(), move |ctx: Context| {
                        let (join, branch, runs) = (join.clone(), branch.clone(), runs.clone());
                        async move {
                            ran(&runs, &branch);
                            ctx.set_state(&format!("k{i}b{b}"), b);
                            ctx.update_state_or_default("fanned", |v: &mut Vec<String>| v.push(branch.clone()))
                                .unwrap();
                            StateResult::next(join)
                        }
                    });
                }
                let runs = runs.clone();
                agent
                    .add_state(join.clone(), move |_ctx: Context| {
                        let (next, join, runs) = (next.clone(), join.clone(), runs.clone());
                        async move {
                            ran(&runs, &join);
                            go(&next)
                        }
                    })
                    .join();
            }
            Stage::Flaky { fails } => {
                let tried = Arc::new(AtomicU32::new(0));
                agent
                    .add_state(name.clone(), move |ctx: Context| {
                        let (next, name, runs, tried) = (next.clone(), name.clone(), runs.clone(), tried.clone());
                        async move {
                            ran(&runs, &name);
                            if tried.fetch_add(1, SeqCst) < fails {
                                return Err(std::io::Error::other("not yet"));
                            }
                            ctx.set_state(&format!("k{i}"), fails);
                            Ok(go(&next))
                        }
                    })
                    .retry_policy(RetryPolicy::new().max_retries(3).initial_delay(Duration::from_millis(5)));
            }
            Stage::Loop { times } => {
                agent.add_state(name.clone(), move |ctx: Context| {
                    let (next, name, runs) = (next.clone(), name.clone(), runs.clone());
                    async move {
                        ran(&runs, &name);
                        let key = format!("k{i}");
                        let n = ctx.get_state::<u32>(&key).unwrap_or(0) + 1;
                        ctx.set_state(&key, n);
                        if n < times {
                            StateResult::next(name)
                        } else {
                            go(&next)
                        }
                    }
                });
            }
        }
    }
    agent
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    /// After every commit, snapshot + journal = a full capture.
    #[test]
    fn every_commit_rebuilds_the_capture(stages in prop::collection::vec(stage(), 1..10)) {
        let store = Checking::new(None);
        let runs = Runs::default();
        let agent = workflow(&stages, &runs).with_store(store.clone());
        store.agent.set(agent.clone()).ok();
        let result = runtime().block_on(agent.run()).unwrap();
        prop_assert_eq!(result.status(), AgentStatus::Completed);
        let mismatches = store.mismatches.lock().unwrap().clone();
        prop_assert!(mismatches.is_empty(), "{}", mismatches.join("\n\n"));
        // Every commit was compared but the last (the run is not current once it ended):
        // at least the start's and a few more.
        prop_assert!(store.compared.load(SeqCst) >= 1);
        // A snapshot at the start and at the end; deltas between.
        let transitions = runs.lock().unwrap().values().sum::<u32>();
        // The first two commits are snapshots (one to fall back on); deltas after.
        if transitions > 4 {
            prop_assert!(store.appends.load(SeqCst) > 0, "no delta in {transitions} transitions");
        }
    }
}

/// A long loop crosses the snapshot cadence: snapshots are taken between deltas, and the
/// rebuilt checkpoint still matches after each; pruning keeps what the kept snapshots need.
#[test]
fn snapshots_between_deltas_and_pruning_keep_the_rebuild_exact() {
    let store = Checking::new(None);
    let runs = Runs::default();
    let stages = vec![Stage::Step { bytes: 10, remove: false }, Stage::Loop { times: 2_000 }];
    let agent = workflow(&stages, &runs).with_store(store.clone());
    store.agent.set(agent.clone()).ok();
    let result = runtime().block_on(agent.run()).unwrap();
    assert_eq!(result.status(), AgentStatus::Completed);
    let mismatches = store.mismatches.lock().unwrap().clone();
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n\n"));
    let (appends, snapshots) = (store.appends.load(SeqCst), store.snapshots.load(SeqCst));
    assert!(appends > 1_900, "{appends} deltas");
    assert!(snapshots > 2 && snapshots < 60, "{snapshots} snapshots");
    // The final checkpoint, rebuilt, is the run's end.
    let rebuilt = runtime().block_on(read_checkpoint(&store.inner, result.run_id())).unwrap().unwrap();
    assert_eq!(rebuilt.agent_status, AgentStatus::Completed);
    assert_eq!(rebuilt.read_context().unwrap().get_state::<u32>("k1"), Some(2_000));
    let journal = runtime().block_on(store.inner.journal(result.run_id(), 0)).unwrap();
    assert!(journal.len() < 1_100, "pruning left {} entries", journal.len());
}

/// The store fails after `n` delta commits (a process that died between commits): a
/// recovery runs only what was not committed, and ends as the run would have.
#[test]
fn a_run_stopped_between_delta_commits_recovers_from_them() {
    let stages: Vec<Stage> = (0..30)
        .map(|i| match i % 5 {
            3 => Stage::Fan { width: 3 },
            4 => Stage::Flaky { fails: 1 },
            _ => Stage::Step { bytes: 100, remove: i % 7 == 0 },
        })
        .collect();
    for n in [1, 7, 20, 45] {
        let store = Checking::new(Some(n));
        let runs = Runs::default();
        let agent = workflow(&stages, &runs).with_store(store.clone());
        let rt = runtime();
        let err = rt.block_on(agent.run()).unwrap_err();
        assert!(matches!(err, AgentError::Store { .. }), "{err}");
        let run_id = agent.run_id().unwrap();
        let committed = rt.block_on(read_checkpoint(&store.inner, &run_id)).unwrap().unwrap();
        assert_eq!(committed.agent_status, AgentStatus::Running, "no final snapshot was written");
        let before: HashMap<String, u32> = runs.lock().unwrap().clone();

        // A new process: the same definition on what the store holds.
        let again = Runs::default();
        let recovering = workflow(&stages, &again).with_store(store.inner.clone());
        let result = rt.block_on(recovering.recover(&run_id)).unwrap();
        assert_eq!(result.status(), AgentStatus::Completed);
        // Every state ran, in all: no state committed ran again.
        for name in &committed.completed_states {
            let record = committed.state(name).unwrap();
            let again = again.lock().unwrap().get(name).copied().unwrap_or(0);
            assert!(
                again == 0 || record.status != agent_core::StateStatus::Completed || name.contains('j'),
                "after {n} deltas: {name} completed before the stop and ran again ({again})"
            );
        }
        let ctx = result.context();
        for (i, stage) in stages.iter().enumerate() {
            if let Stage::Step { remove: false, .. } = stage {
                let removed_by_next = matches!(stages.get(i + 1), Some(Stage::Step { remove: true, .. }));
                assert_eq!(ctx.has_state(&format!("k{i}")), !removed_by_next, "after {n} deltas: k{i}");
            }
        }
        let total: u32 = before.values().chain(again.lock().unwrap().values()).sum();
        assert!(total >= stages.len() as u32);
    }
}

/// A journal entry that is not a delta stops the recovery with a typed error, never a panic.
#[test]
fn a_corrupt_journal_entry_is_a_typed_error() {
    let store = Checking::new(Some(3));
    let runs = Runs::default();
    let stages: Vec<Stage> = (0..8).map(|_| Stage::Step { bytes: 1, remove: false }).collect();
    let agent = workflow(&stages, &runs).with_store(store.clone());
    let rt = runtime();
    rt.block_on(agent.run()).unwrap_err();
    let run_id = agent.run_id().unwrap();
    let row = rt.block_on(store.inner.get_run(&run_id)).unwrap().unwrap().with_epoch(0);
    let last = rt.block_on(store.inner.journal(&run_id, 0)).unwrap().last().unwrap().seq;
    for payload in ["{\"v\": 1", "[]", "{\"v\": 99, \"at_ms\": 0, \"status\": \"running\"}"] {
        let bad = JournalEntry { seq: last + 100, state: String::new(), payload: payload.into(), at_ms: 0 };
        let fresh = MemoryStore::new();
        // A copy of the run with the bad entry last.
        rt.block_on(async {
            fresh.save_run_snapshot(&row, &store.inner.latest_snapshot(&run_id).await.unwrap().unwrap()).await.unwrap();
            let journal = store.inner.journal(&run_id, 0).await.unwrap();
            fresh.append(&row, &journal).await.unwrap();
            fresh.append(&row, std::slice::from_ref(&bad)).await.unwrap();
        });
        let read = rt.block_on(read_checkpoint(&fresh, &run_id));
        assert!(
            matches!(read, Err(AgentError::Checkpoint(CheckpointError::Journal { seq, .. })) if seq == last + 100),
            "{payload}: {read:?}"
        );
        let recovering = workflow(&stages, &Runs::default()).with_store(fresh);
        let err = rt.block_on(recovering.recover(&run_id)).unwrap_err();
        assert!(matches!(err, AgentError::Checkpoint(CheckpointError::Journal { .. })), "{err}");
    }
}
