//! [`MemoryStore`]: a checkpoint store in the process's memory, for tests and for runs that
//! need resuming only within one process.
//!
//! Invariants: every method takes one lock for its whole work, so each is atomic and sees the
//! effects of all the calls that returned before it (a claim is one check-and-set under the
//! lock, so of concurrent claims exactly one wins); clones share the same data; nothing
//! survives the process. It keeps the same rules as the SQL stores (see [`super`]): a run's
//! last journal `seq` is kept with its row, so retention dropping journal entries never lets
//! an older `seq` be appended again; every owner's write checks the epoch before it changes
//! anything. Its clock, for leases, is the machine's (`SystemTime`). Lineage (see
//! [`Lineage`]) is kept beside the runs, keyed by the run made, so it can be recorded before
//! the run's row exists; deleting a run (or retention dropping it) removes its own lineage
//! only. Signals and timers (see [`SignalRecord`]) are kept beside the runs too, keyed by
//! run: a signal only for a run whose row exists and is unfinished, numbered by one counter
//! of the store (so `seq` follows the order of sends); deleting a run (or retention
//! dropping it) removes its signals and timers. Schedules (see [`ScheduleRecord`]) are kept
//! apart from the runs, keyed by agent and name (so listed in that order, bytewise); a
//! cursor's move checks the version and bumps it under the lock, so of concurrent moves
//! from one version exactly one wins; deleting a run (or retention) leaves them.

use std::collections::hash_map::Entry;
use std::collections::{btree_map, BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use std::time::Duration;

use agent_core::AgentStatus;

use super::{
    now_ms, ttl_ms, CheckpointStore, Claim, ClaimNext, ClaimRequest, InputRecord, JournalEntry, Lineage, NextRun,
    Retention, RetentionReport, RunControl, RunQuery, RunRecord, ScheduleAdvance, ScheduleRecord, SignalRecord,
    SignalSent, Snapshot, StoreError, StoreFuture, Submission, Submitted, TimerRecord,
};

const STORE: &str = "memory";

/// A checkpoint store kept in memory. Cloning it is cheap and the clones share its data.
///
/// ```
/// use agent_runtime::store::{CheckpointStore, JournalEntry, MemoryStore, RunRecord};
/// use agent_runtime::AgentStatus;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), agent_runtime::store::StoreError> {
/// let store = MemoryStore::new();
/// let run = RunRecord::new("run-1", "demo", AgentStatus::Running, 1, 1);
/// let entry = JournalEntry { seq: 1, state: "start".into(), payload: "{}".into(), at_ms: 1 };
/// store.append(&run, &[entry.clone()]).await?;
/// assert_eq!(store.journal("run-1", 0).await?, vec![entry]);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    runs: HashMap<String, RunData>,
    /// Keyed by (run id, request id).
    inputs: BTreeMap<(String, String), InputRecord>,
    /// Orders snapshots of equal `seq` and `taken_ms` by insertion.
    next_snapshot_id: u64,
    /// Where each run made from another came from, keyed by the run made.
    lineage: HashMap<String, Lineage>,
    /// The signals sent to each run, keyed by run id, in the order they were kept (`seq`).
    signals: HashMap<String, Vec<SignalRecord>>,
    /// The `seq` of the last signal kept (of any run).
    last_signal_seq: u64,
    /// The timers of the runs' durable waits, keyed by (run id, timer key).
    timers: BTreeMap<(String, String), TimerRecord>,
    /// The schedules, keyed by (agent, name).
    schedules: BTreeMap<(String, String), ScheduleRecord>,
}

#[derive(Debug)]
struct RunData {
    record: RunRecord,
    last_seq: u64,
    /// Ascending by `seq`.
    journal: Vec<JournalEntry>,
    /// With their insertion ids; unordered.
    snapshots: Vec<(u64, Snapshot)>,
    /// The graph it runs under, if recorded.
    graph_hash: Option<String>,
    /// Its idempotency key, if submitted with one.
    key: Option<String>,
    /// The context it was submitted with.
    input: Option<String>,
    /// What another process asked of it (cleared by a claim).
    control: Option<RunControl>,
    /// The states whose cancel is pending, oldest request first, with when each was asked
    /// (kept across claims: see `control`).
    state_cancels: Vec<(String, i64)>,
    /// Its flow key and limit, when to take it at the earliest, and whether it was
    /// submitted with debounce (see `queue`).
    flow_key: Option<String>,
    flow_limit: Option<u32>,
    not_before_ms: Option<i64>,
    debounce: bool,
}

impl RunData {
    fn new(record: RunRecord) -> Self {
        RunData {
            record,
            last_seq: 0,
            journal: Vec::new(),
            snapshots: Vec::new(),
            graph_hash: None,
            key: None,
            input: None,
            control: None,
            state_cancels: Vec::new(),
            flow_key: None,
            flow_limit: None,
            not_before_ms: None,
            debounce: false,
        }
    }

    /// Whether it counts against its key's limit at `now`: unfinished and leased.
    fn is_running_at(&self, now: i64) -> bool {
        !self.record.status.is_finished() && self.record.is_leased_at(now)
    }

    /// Sort key of a snapshot: newest first is the greatest.
    fn rank(s: &(u64, Snapshot)) -> (u64, i64, u64) {
        (s.1.seq, s.1.taken_ms, s.0)
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // No method panics while holding the lock; if one ever did, its data is still whole
        // (each method checks before it writes), so a poisoned lock is taken as is.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Check that `run` may be written by the owner of `run.epoch` (see [`super`]): its row's
/// epoch is that one, or there is no row and the epoch is 0.
fn check_epoch(inner: &Inner, run_id: &str, epoch: u64) -> Result<(), StoreError> {
    let current = inner.runs.get(run_id).map_or(0, |d| d.record.epoch);
    let exists = inner.runs.contains_key(run_id);
    if current != epoch || (!exists && epoch != 0) {
        return Err(StoreError::fenced(STORE, run_id, epoch, current));
    }
    Ok(())
}

/// Write `run`'s row (checked with [`check_epoch`] first): its owner, lease and epoch stay
/// as stored.
fn upsert(inner: &mut Inner, run: &RunRecord) {
    match inner.runs.get_mut(&run.run_id) {
        Some(data) => {
            let RunRecord { owner, lease_until_ms, epoch, .. } = std::mem::replace(&mut data.record, run.clone());
            (data.record.owner, data.record.lease_until_ms, data.record.epoch) = (owner, lease_until_ms, epoch);
        }
        None => {
            let mut record = run.clone();
            (record.owner, record.lease_until_ms) = (None, None);
            inner.runs.insert(run.run_id.clone(), RunData::new(record));
        }
    }
}

/// Refuse a snapshot of `seq` when the run has one already.
fn check_seq(inner: &Inner, run_id: &str, seq: u64) -> Result<(), StoreError> {
    let Some(data) = inner.runs.get(run_id) else { return Ok(()) };
    if data.snapshots.iter().any(|(_, s)| s.seq == seq) {
        let last = data.snapshots.iter().map(|(_, s)| s.seq).max().unwrap_or(0);
        return Err(StoreError::Conflict { store: STORE, run_id: run_id.to_owned(), seq, last });
    }
    Ok(())
}

/// Add `snapshot` to run `run_id` (whose row exists, checked with [`check_seq`]).
fn add_snapshot(inner: &mut Inner, run_id: &str, snapshot: &Snapshot) {
    let id = inner.next_snapshot_id;
    if let Some(data) = inner.runs.get_mut(run_id) {
        data.snapshots.push((id, snapshot.clone()));
        inner.next_snapshot_id += 1;
    }
}

/// Keep the newest `keep` (at least 1) snapshots of `d`, and the journal after the oldest kept.
fn prune(d: &mut RunData, keep: usize, report: &mut RetentionReport) {
    if d.snapshots.is_empty() {
        return;
    }
    let keep = keep.max(1);
    d.snapshots.sort_by_key(|s| std::cmp::Reverse(RunData::rank(s)));
    if d.snapshots.len() > keep {
        report.snapshots += (d.snapshots.len() - keep) as u64;
        d.snapshots.truncate(keep);
    }
    let covered = d.snapshots.iter().map(|s| s.1.seq).min().unwrap_or(0);
    let from = d.journal.partition_point(|e| e.seq <= covered);
    report.entries += from as u64;
    d.journal.drain(..from);
}

/// Insert or update `input`, keeping an answer already recorded.
fn put(inner: &mut Inner, input: &InputRecord) {
    let key = (input.run_id.clone(), input.request_id.clone());
    let mut record = input.clone();
    if let Some(old) = inner.inputs.get(&key) {
        if old.answer.is_some() {
            record.answer.clone_from(&old.answer);
            record.answered_ms = old.answered_ms;
            record.defaulted = old.defaulted;
        }
    }
    inner.inputs.insert(key, record);
}

/// Answer a request unless it is unknown or answered: whether it was.
fn answer_one(inner: &mut Inner, run_id: &str, request_id: &str, answer: &str, defaulted: bool, at_ms: i64) -> bool {
    match inner.inputs.get_mut(&(run_id.to_owned(), request_id.to_owned())) {
        Some(input) if input.answer.is_none() => {
            input.answer = Some(answer.to_owned());
            input.answered_ms = Some(at_ms);
            input.defaulted = defaulted;
            true
        }
        _ => false,
    }
}

impl CheckpointStore for MemoryStore {
    fn kind(&self) -> &'static str {
        STORE
    }

    fn upsert_run<'a>(&'a self, run: &'a RunRecord) -> StoreFuture<'a, ()> {
        let mut inner = self.lock();
        let result = check_epoch(&inner, &run.run_id, run.epoch).map(|()| upsert(&mut inner, run));
        Box::pin(std::future::ready(result))
    }

    fn get_run<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<RunRecord>> {
        let run = self.lock().runs.get(run_id).map(|d| d.record.clone());
        Box::pin(std::future::ready(Ok(run)))
    }

    fn list_runs<'a>(&'a self, query: &'a RunQuery) -> StoreFuture<'a, Vec<RunRecord>> {
        let mut runs: Vec<RunRecord> =
            self.lock().runs.values().map(|d| &d.record).filter(|r| query.matches(r)).cloned().collect();
        runs.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then_with(|| a.run_id.cmp(&b.run_id)));
        let runs = runs.into_iter().skip(query.offset).take(query.limit.unwrap_or(usize::MAX)).collect();
        Box::pin(std::future::ready(Ok(runs)))
    }

    fn count_runs<'a>(&'a self, query: &'a RunQuery) -> StoreFuture<'a, u64> {
        let n = self.lock().runs.values().filter(|d| query.matches(&d.record)).count();
        Box::pin(std::future::ready(Ok(n as u64)))
    }

    fn append<'a>(&'a self, run: &'a RunRecord, entries: &'a [JournalEntry]) -> StoreFuture<'a, ()> {
        let result = (|| {
            let mut inner = self.lock();
            check_epoch(&inner, &run.run_id, run.epoch)?;
            // Check the whole batch before writing anything.
            let mut last = inner.runs.get(&run.run_id).map_or(0, |d| d.last_seq);
            for e in entries {
                if e.seq <= last {
                    return Err(StoreError::Conflict { store: STORE, run_id: run.run_id.clone(), seq: e.seq, last });
                }
                last = e.seq;
            }
            upsert(&mut inner, run);
            if let Some(data) = inner.runs.get_mut(&run.run_id) {
                data.journal.extend_from_slice(entries);
                data.last_seq = last;
            }
            Ok(())
        })();
        Box::pin(std::future::ready(result))
    }

    fn journal<'a>(&'a self, run_id: &'a str, after: u64) -> StoreFuture<'a, Vec<JournalEntry>> {
        let entries = self.lock().runs.get(run_id).map_or_else(Vec::new, |d| {
            let from = d.journal.partition_point(|e| e.seq <= after);
            d.journal[from..].to_vec()
        });
        Box::pin(std::future::ready(Ok(entries)))
    }

    fn save_snapshot<'a>(&'a self, run_id: &'a str, epoch: u64, snapshot: &'a Snapshot) -> StoreFuture<'a, ()> {
        let mut inner = self.lock();
        let result = (|| {
            if !inner.runs.contains_key(run_id) && epoch == 0 {
                return Err(StoreError::Backend {
                    store: STORE,
                    message: format!("save a snapshot of run {run_id}: no such run"),
                    source: None,
                });
            }
            check_epoch(&inner, run_id, epoch)?;
            check_seq(&inner, run_id, snapshot.seq)?;
            add_snapshot(&mut inner, run_id, snapshot);
            Ok(())
        })();
        Box::pin(std::future::ready(result))
    }

    fn save_run_snapshot<'a>(&'a self, run: &'a RunRecord, snapshot: &'a Snapshot) -> StoreFuture<'a, ()> {
        // One lock for both, and both checked before anything is written: atomic.
        let mut inner = self.lock();
        let result = (|| {
            check_epoch(&inner, &run.run_id, run.epoch)?;
            check_seq(&inner, &run.run_id, snapshot.seq)?;
            upsert(&mut inner, run);
            add_snapshot(&mut inner, &run.run_id, snapshot);
            Ok(())
        })();
        Box::pin(std::future::ready(result))
    }

    fn claim_run<'a>(&'a self, claim: &'a ClaimRequest) -> StoreFuture<'a, Claim> {
        let mut inner = self.lock();
        let now = now_ms();
        let until = now.saturating_add(claim.ttl_ms());
        let outcome = match inner.runs.get_mut(&claim.run_id) {
            None => match &claim.create {
                Some(row) => {
                    let mut record = row.clone();
                    record.run_id.clone_from(&claim.run_id);
                    (record.owner, record.lease_until_ms, record.epoch) = (Some(claim.owner.clone()), Some(until), 1);
                    let mut data = RunData::new(record.clone());
                    data.graph_hash.clone_from(&claim.graph_hash);
                    data.input.clone_from(&claim.input);
                    inner.runs.insert(claim.run_id.clone(), data);
                    Claim::Taken(record)
                }
                None => Claim::Missing,
            },
            Some(data) => {
                let r = &mut data.record;
                let own = claim.reclaim && r.owner.as_deref() == Some(claim.owner.as_str());
                if r.status.is_finished() && !claim.finished {
                    Claim::Finished(r.clone())
                } else if r.is_leased_at(now) && !own {
                    Claim::Held(r.clone())
                } else {
                    (r.owner, r.lease_until_ms, r.epoch) = (Some(claim.owner.clone()), Some(until), r.epoch + 1);
                    let taken = Claim::Taken(r.clone());
                    data.control = None;
                    taken
                }
            }
        };
        Box::pin(std::future::ready(Ok(outcome)))
    }

    fn submit_run<'a>(&'a self, submission: &'a Submission) -> StoreFuture<'a, Submitted> {
        if let Err(e) = submission.check(STORE) {
            return Box::pin(std::future::ready(Err(e)));
        }
        let mut inner = self.lock();
        let now = now_ms();
        let existing = submission.idempotency_key.as_ref().and_then(|key| {
            inner.runs.values().find(|d| d.record.agent == submission.agent && d.key.as_ref() == Some(key))
        });
        if let Some(d) = existing {
            return Box::pin(std::future::ready(Ok(Submitted { run: d.record.clone(), created: false })));
        }
        let not_before = submission.start_after.map(|_| now.saturating_add(submission.delay_ms()));
        if submission.debounce {
            let pending = inner.runs.values_mut().find(|d| {
                d.debounce
                    && d.record.agent == submission.agent
                    && d.flow_key == submission.flow_key
                    && d.record.status == AgentStatus::Idle
                    && d.record.epoch == 0
                    && d.record.owner.is_none()
            });
            if let Some(d) = pending {
                d.input = Some(submission.input.clone());
                d.not_before_ms = not_before;
                return Box::pin(std::future::ready(Ok(Submitted { run: d.record.clone(), created: false })));
            }
        }
        let outcome = match inner.runs.get(&submission.run_id) {
            Some(d) => Err(StoreError::Backend {
                store: STORE,
                message: format!(
                    "submit run {}: a run with that id exists already ({})",
                    d.record.run_id,
                    d.record.status.as_str()
                ),
                source: None,
            }),
            None => {
                let row = submission.row();
                let mut data = RunData::new(row.clone());
                data.graph_hash = Some(submission.graph_hash.clone());
                data.key.clone_from(&submission.idempotency_key);
                data.input = Some(submission.input.clone());
                data.flow_key.clone_from(&submission.flow_key);
                data.flow_limit = submission.flow_limit;
                data.not_before_ms = not_before;
                data.debounce = submission.debounce;
                inner.runs.insert(row.run_id.clone(), data);
                Ok(Submitted { run: row, created: true })
            }
        };
        Box::pin(std::future::ready(outcome))
    }

    fn run_input<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<String>> {
        let input = self.lock().runs.get(run_id).and_then(|d| d.input.clone());
        Box::pin(std::future::ready(Ok(input)))
    }

    fn request_control<'a>(&'a self, run_id: &'a str, control: RunControl) -> StoreFuture<'a, bool> {
        let marked = match self.lock().runs.get_mut(run_id) {
            Some(d) if !d.record.status.is_finished() => {
                if d.control != Some(RunControl::Cancel) {
                    d.control = Some(control);
                }
                true
            }
            _ => false,
        };
        Box::pin(std::future::ready(Ok(marked)))
    }

    fn run_control<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<RunControl>> {
        let control = self.lock().runs.get(run_id).and_then(|d| d.control);
        Box::pin(std::future::ready(Ok(control)))
    }

    fn request_state_cancel<'a>(&'a self, run_id: &'a str, state: &'a str) -> StoreFuture<'a, bool> {
        let marked = match self.lock().runs.get_mut(run_id) {
            Some(d) if !d.record.status.is_finished() => {
                if !d.state_cancels.iter().any(|(s, _)| s == state) {
                    d.state_cancels.push((state.to_owned(), now_ms()));
                }
                true
            }
            _ => false,
        };
        Box::pin(std::future::ready(Ok(marked)))
    }

    fn take_state_cancels<'a>(&'a self, run_id: &'a str, epoch: u64) -> StoreFuture<'a, Vec<String>> {
        let mut inner = self.lock();
        let taken = check_epoch(&inner, run_id, epoch).map(|()| {
            inner.runs.get_mut(run_id).map_or_else(Vec::new, |d| {
                std::mem::take(&mut d.state_cancels).into_iter().map(|(state, _)| state).collect()
            })
        });
        Box::pin(std::future::ready(taken))
    }

    fn record_lineage<'a>(&'a self, lineage: &'a Lineage) -> StoreFuture<'a, ()> {
        let mut inner = self.lock();
        let result = match inner.lineage.entry(lineage.run_id.clone()) {
            Entry::Occupied(_) => Err(super::lineage::recorded_already(STORE, &lineage.run_id)),
            Entry::Vacant(slot) => {
                slot.insert(lineage.clone());
                Ok(())
            }
        };
        Box::pin(std::future::ready(result))
    }

    fn lineage<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<Lineage>> {
        let found = self.lock().lineage.get(run_id).cloned();
        Box::pin(std::future::ready(Ok(found)))
    }

    fn descendants<'a>(&'a self, parent_run_id: &'a str) -> StoreFuture<'a, Vec<Lineage>> {
        let mut found: Vec<Lineage> =
            self.lock().lineage.values().filter(|l| l.parent_run_id == parent_run_id).cloned().collect();
        found.sort_by(|a, b| (a.created_ms, &a.run_id).cmp(&(b.created_ms, &b.run_id)));
        Box::pin(std::future::ready(Ok(found)))
    }

    fn claim_next<'a>(&'a self, ask: &'a ClaimNext) -> StoreFuture<'a, Vec<NextRun>> {
        let mut inner = self.lock();
        let now = now_ms();
        let until = now.saturating_add(ttl_ms(ask.ttl));
        // Runs of each (agent, key) running now (see `queue`); only counted when a candidate
        // has a key.
        let mut running: HashMap<(String, String), u64> = HashMap::new();
        let mut candidates: Vec<(u64, &mut RunData)> = Vec::new();
        let mut keyed = false;
        for d in inner.runs.values_mut() {
            let r = &d.record;
            if let (Some(key), true) = (&d.flow_key, d.is_running_at(now)) {
                *running.entry((r.agent.clone(), key.clone())).or_default() += 1;
            }
            let claimable = matches!(r.status, AgentStatus::Idle | AgentStatus::Running)
                && !r.is_leased_at(now)
                && d.not_before_ms.is_none_or(|t| t <= now)
                && ask.serves.iter().any(|s| s.agent == r.agent && d.graph_hash.as_ref() == Some(&s.graph_hash));
            if claimable {
                keyed |= d.flow_key.is_some();
                candidates.push((0, d));
            }
        }
        candidates.sort_by(|(_, a), (_, b)| {
            (a.record.created_ms, &a.record.run_id).cmp(&(b.record.created_ms, &b.record.run_id))
        });
        if keyed {
            // Rank each keyed candidate by its key's running runs plus its place among the
            // key's candidates; drop those beyond their limit; lowest rank first.
            let mut seen: HashMap<(String, String), u64> = HashMap::new();
            for (rank, d) in &mut candidates {
                if let Some(key) = &d.flow_key {
                    let id = (d.record.agent.clone(), key.clone());
                    let place = seen.entry(id.clone()).or_default();
                    *rank = running.get(&id).copied().unwrap_or(0) + *place;
                    *place += 1;
                }
            }
            candidates.retain(|(rank, d)| d.flow_limit.is_none_or(|n| *rank < u64::from(n)));
            // Stable: among equal ranks, oldest first still.
            candidates.sort_by_key(|(rank, _)| *rank);
        }
        let taken = candidates
            .into_iter()
            .take(ask.limit)
            .map(|(_, d)| {
                d.control = None;
                let r = &mut d.record;
                (r.owner, r.lease_until_ms, r.epoch) = (Some(ask.owner.clone()), Some(until), r.epoch + 1);
                NextRun { row: r.clone(), graph_hash: d.graph_hash.clone().unwrap_or_default(), input: d.input.clone() }
            })
            .collect();
        Box::pin(std::future::ready(Ok(taken)))
    }

    fn renew_lease<'a>(&'a self, run_id: &'a str, owner: &'a str, epoch: u64, ttl: Duration) -> StoreFuture<'a, i64> {
        let mut inner = self.lock();
        let result = match inner.runs.get_mut(run_id) {
            Some(d) if d.record.epoch == epoch && d.record.owner.as_deref() == Some(owner) => {
                let until = now_ms().saturating_add(ttl_ms(ttl));
                d.record.lease_until_ms = Some(until);
                Ok(until)
            }
            found => Err(StoreError::fenced(STORE, run_id, epoch, found.map_or(0, |d| d.record.epoch))),
        };
        Box::pin(std::future::ready(result))
    }

    fn release_run<'a>(&'a self, run_id: &'a str, epoch: u64) -> StoreFuture<'a, ()> {
        let mut inner = self.lock();
        let result = match inner.runs.get_mut(run_id) {
            Some(d) if d.record.epoch == epoch => {
                (d.record.owner, d.record.lease_until_ms) = (None, None);
                Ok(())
            }
            found => Err(StoreError::fenced(STORE, run_id, epoch, found.map_or(0, |d| d.record.epoch))),
        };
        Box::pin(std::future::ready(result))
    }

    fn prune_snapshots<'a>(&'a self, run_id: &'a str, epoch: u64, keep: usize) -> StoreFuture<'a, RetentionReport> {
        let mut inner = self.lock();
        let result = check_epoch(&inner, run_id, epoch).map(|()| {
            let mut report = RetentionReport::default();
            if let Some(d) = inner.runs.get_mut(run_id) {
                prune(d, keep, &mut report);
            }
            report
        });
        Box::pin(std::future::ready(result))
    }

    fn latest_snapshot<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<Snapshot>> {
        let snapshot = self
            .lock()
            .runs
            .get(run_id)
            .and_then(|d| d.snapshots.iter().max_by_key(|s| RunData::rank(s)).map(|s| s.1.clone()));
        Box::pin(std::future::ready(Ok(snapshot)))
    }

    fn snapshots<'a>(&'a self, run_id: &'a str, limit: usize) -> StoreFuture<'a, Vec<Snapshot>> {
        let mut found: Vec<(u64, Snapshot)> =
            self.lock().runs.get(run_id).map(|d| d.snapshots.clone()).unwrap_or_default();
        found.sort_by_key(|s| std::cmp::Reverse(RunData::rank(s)));
        let newest = found.into_iter().take(limit).map(|(_, s)| s).collect();
        Box::pin(std::future::ready(Ok(newest)))
    }

    fn put_input<'a>(&'a self, input: &'a InputRecord) -> StoreFuture<'a, ()> {
        put(&mut self.lock(), input);
        Box::pin(std::future::ready(Ok(())))
    }

    fn put_input_fenced<'a>(&'a self, input: &'a InputRecord, epoch: u64) -> StoreFuture<'a, ()> {
        let mut inner = self.lock();
        let result = check_epoch(&inner, &input.run_id, epoch).map(|()| put(&mut inner, input));
        Box::pin(std::future::ready(result))
    }

    fn inputs<'a>(&'a self, run_id: Option<&'a str>, pending_only: bool) -> StoreFuture<'a, Vec<InputRecord>> {
        let mut inputs: Vec<InputRecord> = self
            .lock()
            .inputs
            .values()
            .filter(|i| run_id.is_none_or(|r| r == i.run_id))
            .filter(|i| !pending_only || i.answer.is_none())
            .cloned()
            .collect();
        // The map is ordered by (run id, request id): a stable sort keeps that among equals.
        inputs.sort_by_key(|i| i.requested_ms);
        Box::pin(std::future::ready(Ok(inputs)))
    }

    fn answer_input<'a>(
        &'a self,
        run_id: &'a str,
        request_id: &'a str,
        answer: &'a str,
        defaulted: bool,
        at_ms: i64,
    ) -> StoreFuture<'a, bool> {
        let answered = answer_one(&mut self.lock(), run_id, request_id, answer, defaulted, at_ms);
        Box::pin(std::future::ready(Ok(answered)))
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
        let mut inner = self.lock();
        let result = check_epoch(&inner, run_id, epoch)
            .map(|()| answer_one(&mut inner, run_id, request_id, answer, defaulted, at_ms));
        Box::pin(std::future::ready(result))
    }

    fn send_signal<'a>(&'a self, signal: &'a SignalRecord) -> StoreFuture<'a, SignalSent> {
        let mut inner = self.lock();
        let sent = match inner.runs.get(&signal.run_id).map(|d| d.record.status) {
            None => SignalSent::UnknownRun,
            Some(status) if status.is_finished() => SignalSent::Finished(status),
            Some(_) => {
                let seq = inner.last_signal_seq + 1;
                let kept = inner.signals.entry(signal.run_id.clone()).or_default();
                if kept.iter().any(|s| s.signal_id == signal.signal_id) {
                    SignalSent::Duplicate
                } else {
                    let mut record = signal.clone();
                    (record.seq, record.taken_by, record.taken_ms) = (seq, None, None);
                    kept.push(record);
                    inner.last_signal_seq = seq;
                    SignalSent::Kept
                }
            }
        };
        Box::pin(std::future::ready(Ok(sent)))
    }

    fn take_signal<'a>(
        &'a self,
        run_id: &'a str,
        name: &'a str,
        wait_key: &'a str,
        now_ms: i64,
        epoch: u64,
    ) -> StoreFuture<'a, Option<SignalRecord>> {
        let mut inner = self.lock();
        let taken = check_epoch(&inner, run_id, epoch).map(|()| {
            let kept = inner.signals.get_mut(run_id)?;
            if let Some(before) = kept.iter().find(|s| s.taken_by.as_deref() == Some(wait_key)) {
                return Some(before.clone());
            }
            let next = kept.iter_mut().find(|s| s.name == name && s.taken_by.is_none())?;
            (next.taken_by, next.taken_ms) = (Some(wait_key.to_owned()), Some(now_ms));
            Some(next.clone())
        });
        Box::pin(std::future::ready(taken))
    }

    fn signals<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Vec<SignalRecord>> {
        let kept = self.lock().signals.get(run_id).cloned().unwrap_or_default();
        Box::pin(std::future::ready(Ok(kept)))
    }

    fn arm_timer<'a>(&'a self, timer: &'a TimerRecord, epoch: u64) -> StoreFuture<'a, i64> {
        let mut inner = self.lock();
        // The first armed wins: a timer armed before keeps its wake time.
        let armed = check_epoch(&inner, &timer.run_id, epoch).map(|()| {
            inner.timers.entry((timer.run_id.clone(), timer.key.clone())).or_insert_with(|| timer.clone()).wake_ms
        });
        Box::pin(std::future::ready(armed))
    }

    fn timers<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Vec<TimerRecord>> {
        let found = self
            .lock()
            .timers
            .range((run_id.to_owned(), String::new())..)
            .take_while(|((r, _), _)| r == run_id)
            .map(|(_, t)| t.clone())
            .collect();
        Box::pin(std::future::ready(Ok(found)))
    }

    fn put_schedule<'a>(&'a self, schedule: &'a ScheduleRecord) -> StoreFuture<'a, bool> {
        let mut inner = self.lock();
        let mut record = schedule.clone();
        let added = match inner.schedules.entry((schedule.agent.clone(), schedule.name.clone())) {
            btree_map::Entry::Vacant(slot) => {
                record.version = 1;
                slot.insert(record);
                true
            }
            btree_map::Entry::Occupied(mut slot) => {
                // Its definition and cursor replaced; `created_ms` and `last_run_id` kept.
                let stored = slot.get_mut();
                record.created_ms = stored.created_ms;
                record.last_run_id = stored.last_run_id.take();
                record.version = stored.version + 1;
                *stored = record;
                false
            }
        };
        Box::pin(std::future::ready(Ok(added)))
    }

    fn schedules<'a>(&'a self, agent: Option<&'a str>) -> StoreFuture<'a, Vec<ScheduleRecord>> {
        let found = self.lock().schedules.values().filter(|s| agent.is_none_or(|a| a == s.agent)).cloned().collect();
        Box::pin(std::future::ready(Ok(found)))
    }

    fn pause_schedule<'a>(
        &'a self,
        agent: &'a str,
        name: &'a str,
        paused: bool,
        next_tick_ms: i64,
        now_ms: i64,
    ) -> StoreFuture<'a, bool> {
        let found = match self.lock().schedules.get_mut(&(agent.to_owned(), name.to_owned())) {
            Some(s) => {
                (s.paused, s.next_tick_ms, s.updated_ms, s.version) = (paused, next_tick_ms, now_ms, s.version + 1);
                true
            }
            None => false,
        };
        Box::pin(std::future::ready(Ok(found)))
    }

    fn delete_schedule<'a>(&'a self, agent: &'a str, name: &'a str) -> StoreFuture<'a, bool> {
        let deleted = self.lock().schedules.remove(&(agent.to_owned(), name.to_owned())).is_some();
        Box::pin(std::future::ready(Ok(deleted)))
    }

    fn advance_schedule<'a>(&'a self, advance: &'a ScheduleAdvance) -> StoreFuture<'a, bool> {
        let moved = match self.lock().schedules.get_mut(&(advance.agent.clone(), advance.name.clone())) {
            Some(s) if s.version == advance.version && s.created_ms == advance.created_ms => {
                s.next_tick_ms = advance.next_tick_ms;
                s.buffered_tick_ms = advance.buffered_tick_ms;
                s.last_run_id.clone_from(&advance.last_run_id);
                (s.updated_ms, s.version) = (advance.now_ms, s.version + 1);
                true
            }
            _ => false,
        };
        Box::pin(std::future::ready(Ok(moved)))
    }

    fn delete_run<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, bool> {
        let mut inner = self.lock();
        let had_run = inner.runs.remove(run_id).is_some();
        let before = inner.inputs.len();
        inner.inputs.retain(|(r, _), _| r != run_id);
        let had_inputs = inner.inputs.len() != before;
        // Its own lineage only: its descendants' still name it.
        let had_lineage = inner.lineage.remove(run_id).is_some();
        let had_signals = inner.signals.remove(run_id).is_some();
        let before = inner.timers.len();
        inner.timers.retain(|(r, _), _| r != run_id);
        let had_timers = inner.timers.len() != before;
        Box::pin(std::future::ready(Ok(had_run || had_inputs || had_lineage || had_signals || had_timers)))
    }

    fn apply_retention<'a>(&'a self, policy: &'a Retention, now_ms: i64) -> StoreFuture<'a, RetentionReport> {
        let mut inner = self.lock();
        let mut report = RetentionReport::default();
        if let Some(age) = policy.drop_finished_after {
            let cutoff = now_ms.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX));
            let dropped: Vec<String> = inner
                .runs
                .values()
                .filter(|d| d.record.status.is_finished() && d.record.updated_ms < cutoff)
                .map(|d| d.record.run_id.clone())
                .collect();
            for run_id in &dropped {
                inner.lineage.remove(run_id);
                inner.signals.remove(run_id);
                if let Some(d) = inner.runs.remove(run_id) {
                    report.runs += 1;
                    report.entries += d.journal.len() as u64;
                    report.snapshots += d.snapshots.len() as u64;
                }
            }
            if !dropped.is_empty() {
                let dropped: std::collections::HashSet<&str> = dropped.iter().map(String::as_str).collect();
                inner.inputs.retain(|(r, _), _| !dropped.contains(r.as_str()));
                inner.timers.retain(|(r, _), _| !dropped.contains(r.as_str()));
            }
        }
        if let Some(keep) = policy.keep_snapshots {
            for d in inner.runs.values_mut() {
                prune(d, keep, &mut report);
            }
        }
        Box::pin(std::future::ready(Ok(report)))
    }
}
