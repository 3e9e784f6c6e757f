//! Durable runs: a run with a store records itself as it goes, as the one owner of its run.
//!
//! Invariants:
//! - A branch that completed a state waits in [`Durable::sync`] before any successor of
//!   that state starts (before it moves on, and before it spawns the branches of a
//!   fan-out), until a snapshot taken after the completion is committed to the store. So a
//!   process killed at any instant leaves a store from which `Agent::recover` re-runs only
//!   the states that were in flight.
//! - One writer task per run takes and commits the run's changes; a sync asks for a commit
//!   newer than its completion, so branches finishing together share one commit (group
//!   commit).
//! - A commit is a whole snapshot (`checkpoint::capture`) or a journal delta (what changed
//!   since the previous commit: `checkpoint::delta`), appended with `append` (fenced by the
//!   run's epoch, like every write). A snapshot is written at the run's first two commits
//!   (so that, as before deltas, a recovery finds an older snapshot to fall back on when the
//!   newest is damaged: `KEEP`),
//!   whenever its status differs from the previous commit's (its start, a pause; not its
//!   end, a delta like any other, which records the final status), and once
//!   `SNAPSHOT_EVERY` deltas have followed the last one *and* their bytes reach half that
//!   snapshot's (so a big context is rewritten no more often than its deltas add up to it),
//!   or at the latest after `SNAPSHOT_AT_MOST` deltas (recovery replays at most that many).
//!   Deltas otherwise: a transition's cost does not grow with the workflow's states' records
//!   nor with the context, only with what it changed.
//! - Snapshots and journal entries share one `seq` sequence per run: each commit takes the
//!   next (one above the newest snapshot or entry stored when the run started), so journal
//!   `seq`s strictly increase and snapshots never share one; a snapshot at `k` plus the
//!   entries after `k` is the run as of its last commit (`checkpoint::load`).
//! - The run's row is written together with a snapshot, in one transaction (so a run is
//!   never listed without a snapshot to resume from): with the first, whenever the status
//!   changes with a snapshot (a pause), and every `ROW_EVERY` snapshots; other snapshots are
//!   written alone. `append` writes the row with each delta, so the delta of a run's end
//!   writes its final status with it.
//! - Retention (`prune_snapshots`, every `PRUNE_EVERY` commits) keeps the `KEEP` newest
//!   snapshots and the journal entries after the oldest of them, which is all a recovery
//!   from either needs.
//! - Ownership. Before its first write a run claims itself in the store ([`claim`]): a new
//!   run creates its row owned at epoch 1; a restored, resumed or recovered one takes its row
//!   unless another worker holds a live lease on it, and then does not start
//!   ([`AgentError::Owned`], nothing run, nothing written). Every write carries the claim's
//!   epoch, so the store refuses it (`StoreError::Fenced`) once another owner claimed the
//!   run.
//! - The lease lasts the agent's TTL (`Agent::lease_ttl`) and is renewed every third of it.
//!   Locally it counts from when the renewal that set it was *sent*, on this machine's
//!   monotonic clock (`std::time::Instant`; never tokio's, which tests pause and which jumps
//!   then). No snapshot is sent once the local lease has ended.
//! - A refused write or renewal, or a lease that ends before a renewal comes back, stops the
//!   run at once (`Run::lose`: its states cancelled, the run `Cancelled`, its error
//!   [`AgentError::Fenced`]); from then on nothing of the run is written and its lease is
//!   not given back (it is not ours).
//! - Requests from other processes (`RunControl`, set on the run's row by the console):
//!   the run reads them every `CONTROL_POLL` while it goes on, and obeys the first (cancel:
//!   `Run::cancel`; pause: `Run::pause`), like a call on its handle in this process. In the
//!   same poll, until then, it takes the cancels asked of single states
//!   (`take_state_cancels`, fenced by its epoch) and cancels each (`Run::cancel_state`, as
//!   `RunHandle::cancel_state`); a name its workflow does not have is dropped.
//! - At its end (completed, failed, paused, cancelled, timed out) the writer commits the
//!   final delta (a snapshot for a pause), then gives the lease back, so another process may go on at once. When
//!   the run's future is dropped instead, its `Hold` gives the lease back (see `lease`).
//! - A run paused to be handed over (a worker draining, see `worker`) records its row as
//!   `Running` (its snapshot says paused, which a restored run goes on from): once its
//!   lease is given back, any worker serving its graph takes it and goes on.
//! - Outages. The agent's store is a `RetryingStore` (see `store::retry`): a transient
//!   failure (connection lost or refused, server restarting) of any call here, claims,
//!   snapshots, renewals and releases alike, is retried with backoff for the agent's
//!   `store_retry` bound (30 s by default) before it is returned. Meanwhile the branches wait
//!   in [`Durable::sync`] and the lease loop keeps renewing (its own renewals retried too).
//!   Each retry carries the claim's epoch, so a run taken over during the outage is refused
//!   (`Fenced`) and stops. An outage longer than the lease stops the run when the lease
//!   ends (`AgentError::Fenced`, the writer's retries dropped with it); a retry may be on
//!   its way at that instant, and the store's fence is what keeps it harmless. Once the
//!   store is back, `Agent::recover` (or a worker) continues the run from its last snapshot.
//! - A store that fails for good (or past the retry bound) stops the run with
//!   `AgentError::Store`: a durable run never goes on unrecorded. A final commit that fails
//!   after the run is over becomes the run's error ([`Durable::late_error`]).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering::*};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use agent_core::{AgentError, AgentStatus, Context};
use serde_json::value::RawValue;
use tokio::sync::{watch, Notify};

use crate::checkpoint::{self, delta};
use crate::events::EventKind;
use crate::lease::{self, Hold, WorkerId};
use crate::run::Run;
use crate::store::{
    now_ms, time_of, CheckpointStore, Claim, ClaimRequest, JournalEntry, RunControl, RunRecord, Snapshot, StoreError,
};

/// Snapshots kept per run: the newest is all a recovery needs; one more in case the newest
/// is being written while another process reads.
const KEEP: usize = 2;
/// The run's row is written again (for `updated_ms`) at least every this many snapshots.
const ROW_EVERY: u64 = 64;
/// Retention runs after this many commits.
const PRUNE_EVERY: u64 = 64;
/// A whole snapshot is written no sooner than this many deltas after the last one (unless
/// the status changes)...
const SNAPSHOT_EVERY: u64 = 64;
/// ... and no later than this many.
const SNAPSHOT_AT_MOST: u64 = 1024;
/// How often a running run reads what another process asked of it through the store.
const CONTROL_POLL: Duration = Duration::from_millis(500);
/// A lease's length unless the agent says otherwise (`Agent::lease_ttl`).
pub(crate) const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(15);
/// The shortest lease: renewals a third of it apart must stay possible.
const MIN_LEASE_TTL: Duration = Duration::from_millis(30);

/// A claim of a run, made before the run starts: its hold in this process, its row as the
/// claim left it, and when the claim was sent (the lease counts from then).
pub(crate) struct Claimed {
    pub hold: Arc<Hold>,
    pub row: RunRecord,
    pub sent: Instant,
}

/// Take run `request.run_id` for this process: [`Claimed`], or why not
/// ([`AgentError::Owned`] when another run, here or elsewhere, holds it; `Store` when it is
/// missing or the store fails).
pub(crate) async fn claim(store: &Arc<dyn CheckpointStore>, request: ClaimRequest) -> Result<Claimed, AgentError> {
    let run_id = request.run_id.clone();
    let Some(hold) = lease::reserve(&run_id, store.clone()) else {
        // Another run of this process holds it: say who, as the store has it.
        let row = store.get_run(&run_id).await.ok().flatten().filter(|r| r.owner.is_some());
        return Err(match row {
            Some(row) => owned(&row),
            None => AgentError::Owned {
                run_id,
                owner: WorkerId::current().to_string(),
                lease_until: time_of(now_ms().saturating_add(crate::store::ttl_ms(request.ttl))),
            },
        });
    };
    let sent = Instant::now();
    match store.claim_run(&request).await {
        Ok(Claim::Taken(row)) => {
            hold.claimed(row.epoch);
            tracing::debug!(run_id, epoch = row.epoch, owner = %request.owner, "claimed the run");
            Ok(Claimed { hold, row, sent })
        }
        Ok(Claim::Held(row)) => Err(owned(&row)),
        Ok(Claim::Missing) => Err(store_error(format!("the store holds no run {run_id}"), Context::new())),
        Ok(Claim::Finished(row)) => {
            Err(store_error(format!("run {run_id} is over ({})", row.status.as_str()), Context::new()))
        }
        Err(e) => Err(store_error(e, Context::new())),
    }
}

/// Hold run `row` in this process, which the store gave this process already (a worker's
/// `claim_next`): the claim, as [`claim`] would have made it. [`AgentError::Owned`] if a
/// run of this process holds it (a run whose lease ended while it went on: it is fenced).
pub(crate) fn adopt(store: &Arc<dyn CheckpointStore>, row: RunRecord) -> Result<Claimed, AgentError> {
    let sent = Instant::now();
    let Some(hold) = lease::reserve(&row.run_id, store.clone()) else {
        return Err(owned(&row));
    };
    hold.claimed(row.epoch);
    Ok(Claimed { hold, row, sent })
}

/// The error of a run held by `row.owner`.
fn owned(row: &RunRecord) -> AgentError {
    AgentError::Owned {
        run_id: row.run_id.clone(),
        owner: row.owner.clone().unwrap_or_default(),
        lease_until: time_of(row.lease_until_ms.unwrap_or(0)),
    }
}

/// Why the writer stops.
enum Stop {
    /// The store failed.
    Store(StoreError),
    /// The run is no longer ours: a write was fenced, or the lease ended.
    Lost(String),
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Stop {
        match e {
            StoreError::Fenced { .. } => Stop::Lost(format!("another owner took the run over ({e})")),
            e => Stop::Store(e),
        }
    }
}

/// A run's link to its store.
pub(crate) struct Durable {
    pub store: Arc<dyn CheckpointStore>,
    agent: String,
    created_ms: AtomicI64,
    /// Snapshots asked for (a generation number).
    requested: AtomicU64,
    /// Wakes the writer.
    wake: Notify,
    /// The newest generation committed; `u64::MAX` once the store failed.
    committed: watch::Sender<u64>,
    interval: Option<Duration>,
    /// The status the run's row was last written with (`u8::MAX`: not yet written).
    row_status: AtomicU8,
    /// Snapshots written.
    writes: AtomicU64,
    /// The `seq` of the next snapshot.
    next_seq: AtomicU64,
    /// The lease's length.
    ttl: Duration,
    /// What the previous commit recorded, for the next delta (`None`: a snapshot is next).
    frame: Mutex<Option<delta::Frame>>,
    /// Deltas since the last snapshot, their bytes, and the snapshot's bytes.
    cadence: Mutex<(u64, u64, u64)>,
    /// Snapshots this run committed.
    snapshots: AtomicU64,
    /// The epoch of this run's claim (0 before it).
    epoch: AtomicU64,
    /// When the lease ends, on this machine's monotonic clock.
    lease_end: Mutex<Instant>,
    /// A claim made before the run was prepared (by `recover`), for `start`.
    claimed: Mutex<Option<Claimed>>,
    /// The run's hold, to give the lease back at the end.
    hold: Mutex<Weak<Hold>>,
    /// The run lost its ownership: nothing more is written.
    lost: AtomicBool,
    /// The run pauses to be handed over: its row reads `Running` (see `hand_over`).
    handover: AtomicBool,
    /// The error of a commit that failed after the run was over.
    late: Mutex<Option<AgentError>>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Tell the run's followers of a commit at `seq`: the context keys it wrote (each with its
/// value as the checkpoint writes it, `None` when removed), then the commit itself.
fn announce<'a>(run: &Run, keys: impl Iterator<Item = (&'a str, Option<&'a RawValue>)>, seq: u64, snapshot: bool) {
    announce_keys(run, keys);
    run.emit(EventKind::Committed { seq, snapshot });
}

/// Tell the run's followers of context keys written (each with its value as the checkpoint
/// writes it, `None` when removed).
fn announce_keys<'a>(run: &Run, keys: impl Iterator<Item = (&'a str, Option<&'a RawValue>)>) {
    for (key, stored) in keys {
        let value = stored.and_then(|raw| serde_json::from_str::<serde_json::Value>(raw.get()).ok()).map(plain);
        run.emit(EventKind::ContextChanged { key: key.to_owned(), value });
    }
}

/// A plain (not durable) run that someone follows tells of the context keys written since
/// the last state ended, as a state ends; it records the keys written from the first time
/// this is called (a follower that came late sees the changes from then on). A durable run
/// tells at each commit instead.
pub(crate) fn announce_changes(run: &Run) {
    if run.sinks.durable.is_some() || !run.emitting() {
        return;
    }
    use agent_core::__private::context as hooks;
    let changed = hooks::take_changes(&run.ctx);
    hooks::track_changes(&run.ctx);
    if changed.is_empty() {
        return;
    }
    if let Ok(keys) = hooks::encode_keys(&run.ctx, &changed) {
        announce_keys(run, keys.iter().map(|(k, v)| (&**k, v.as_deref())));
    }
}

/// A context value as a checkpoint writes it (`{"plain": v}`, `{"typed": {"type", "value"}}`)
/// as `get_state::<Value>` reads it.
fn plain(stored: serde_json::Value) -> serde_json::Value {
    match stored {
        serde_json::Value::Object(mut m) if m.len() == 1 => match m.remove("plain") {
            Some(v) => v,
            None => match m.remove("typed") {
                Some(serde_json::Value::Object(mut t)) => t.remove("value").unwrap_or(serde_json::Value::Null),
                Some(other) => other,
                None => serde_json::Value::Object(m),
            },
        },
        other => other,
    }
}

impl Durable {
    /// A run's link to `store`, as agent `agent`, with snapshots every `interval` besides
    /// those at completions, and leases of `ttl`; `claimed` if the run was claimed already.
    pub(crate) fn new(
        store: Arc<dyn CheckpointStore>,
        agent: String,
        interval: Option<Duration>,
        ttl: Duration,
        claimed: Option<Claimed>,
    ) -> Durable {
        Durable {
            store,
            agent,
            created_ms: AtomicI64::new(now_ms()),
            requested: AtomicU64::new(0),
            wake: Notify::new(),
            committed: watch::Sender::new(0),
            interval,
            row_status: AtomicU8::new(u8::MAX),
            writes: AtomicU64::new(0),
            next_seq: AtomicU64::new(1),
            ttl: ttl.max(MIN_LEASE_TTL),
            frame: Mutex::new(None),
            cadence: Mutex::new((0, 0, 0)),
            snapshots: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            lease_end: Mutex::new(Instant::now()),
            claimed: Mutex::new(claimed),
            hold: Mutex::new(Weak::new()),
            lost: AtomicBool::new(false),
            handover: AtomicBool::new(false),
            late: Mutex::new(None),
        }
    }

    fn record(&self, run: &Run) -> RunRecord {
        let status = match run.status() {
            // A run paused to be handed over is a running run that nobody owns once its
            // lease is given back: any worker serving its graph goes on with it.
            AgentStatus::Paused if self.handover.load(Acquire) => AgentStatus::Running,
            status => status,
        };
        RunRecord::new(run.run_id(), self.agent.clone(), status, self.created_ms.load(Relaxed), now_ms())
            .with_epoch(self.epoch.load(Relaxed))
    }

    /// Claim the run (unless `recover` did), then write its row and a first snapshot, before
    /// any state runs; the hold the caller keeps for as long as the run goes on (dropping it
    /// gives the lease back). A recovered run keeps its start time, and its snapshots follow
    /// those already stored. A `fresh` run (from its start, not restored) records its context
    /// with the row it creates, so that it can go on should its process die before the first
    /// snapshot. On `Err` the run has ended (`Owned`: cancelled before it
    /// started; the store failed: failed) and its error is what `finish` returns.
    pub(crate) async fn start(&self, run: &Run, fresh: bool) -> Result<Arc<Hold>, ()> {
        let id = run.run_id();
        let claimed = locked(&self.claimed).take().filter(|c| c.row.run_id == id);
        let claimed = match claimed {
            Some(c) => c,
            None => {
                let now = now_ms();
                let row = RunRecord::new(id, self.agent.clone(), AgentStatus::Running, now, now);
                let mut request = ClaimRequest::new(id, WorkerId::current().as_str(), self.ttl)
                    .create(row)
                    .graph_hash(run.program.graph_hash().to_string())
                    .finished(true)
                    .reclaim(true);
                if fresh {
                    // A run from its start: should its process die before the first snapshot,
                    // it goes on from this context, as a submitted run does.
                    request.input = run.ctx.to_json_string().ok();
                }
                match claim(&self.store, request).await {
                    Ok(c) => c,
                    Err(e) => {
                        self.refuse(run, e);
                        return Err(());
                    }
                }
            }
        };
        self.epoch.store(claimed.row.epoch, Relaxed);
        self.created_ms.store(claimed.row.created_ms, Relaxed);
        *locked(&self.lease_end) = claimed.sent + self.ttl;
        *locked(&self.hold) = Arc::downgrade(&claimed.hold);
        // Above the newest snapshot and the newest journal entry after it. A queued run
        // taken for the first time (still `Idle`, and no owner before this one: epoch 1)
        // has neither: its first commit is what makes it `Running`.
        let first_take = claimed.row.status == AgentStatus::Idle && claimed.row.epoch == 1;
        let last = match if first_take { Ok(None) } else { self.store.latest_snapshot(id).await } {
            Ok(None) if first_take => Ok(0),
            Ok(latest) => {
                let latest = latest.map_or(0, |s| s.seq);
                self.store.journal(id, latest).await.map(|j| j.last().map_or(latest, |e| e.seq.max(latest)))
            }
            Err(e) => Err(e),
        };
        match last {
            Ok(last) => self.next_seq.store(last + 1, Relaxed),
            Err(e) => {
                self.stop_with(run, e.into());
                return Err(());
            }
        }
        // From here on the context records the keys written, for the deltas.
        agent_core::__private::context::track_changes(&run.ctx);
        let generation = self.requested.load(Acquire);
        if let Err(stop) = self.commit(run).await {
            self.stop_with(run, stop);
            return Err(());
        }
        self.committed.send_replace(generation);
        Ok(claimed.hold)
    }

    /// Time left on the lease at `now` (monotonic); `None` once it has ended.
    fn lease_left(&self, now: Instant) -> Option<Duration> {
        locked(&self.lease_end).checked_duration_since(now).filter(|d| !d.is_zero())
    }

    async fn commit(&self, run: &Run) -> Result<(), Stop> {
        if self.lost.load(Acquire) {
            return Err(Stop::Lost("the run was lost already".to_owned()));
        }
        if self.lease_left(Instant::now()).is_none() {
            return Err(Stop::Lost(self.ran_out()));
        }
        let frame = locked(&self.frame).take();
        match frame {
            // The end of a run (completed, failed, cancelled, timed out) is a delta too: it
            // changes the status and little else, and readers replay the journal anyway.
            Some(mut frame) if (frame.status == run.status() || run.status().is_finished()) && !self.snapshot_due() => {
                let written = self.commit_delta(run, &mut frame).await;
                if written.is_ok() {
                    *locked(&self.frame) = Some(frame);
                }
                written
            }
            _ => self.commit_snapshot(run).await,
        }
    }

    /// Whether the deltas since the last snapshot call for a new one (see the module docs).
    fn snapshot_due(&self) -> bool {
        let (entries, bytes, snapshot) = *locked(&self.cadence);
        self.snapshots.load(Relaxed) < KEEP as u64
            || entries >= SNAPSHOT_AT_MOST
            || (entries >= SNAPSHOT_EVERY && bytes.saturating_mul(2) >= snapshot)
    }

    /// Commit what changed since the previous commit as one journal entry.
    async fn commit_delta(&self, run: &Run, frame: &mut delta::Frame) -> Result<(), Stop> {
        let delta = delta::capture(run, frame).map_err(|e| {
            Stop::Store(StoreError::Corrupt {
                store: self.store.kind(),
                message: format!("the run's checkpoint could not be written: the context could not be written: {e}"),
            })
        })?;
        let payload = serde_json::to_string(&delta).map_err(|e| {
            Stop::Store(StoreError::Corrupt {
                store: self.store.kind(),
                message: format!("the run's journal entry could not be written: {e}"),
            })
        })?;
        let bytes = payload.len() as u64;
        let seq = self.next_seq.fetch_add(1, Relaxed);
        let entry = JournalEntry { seq, state: String::new(), payload, at_ms: delta.at_ms };
        self.writes.fetch_add(1, Relaxed);
        self.store.append(&self.record(run), std::slice::from_ref(&entry)).await?;
        if run.emitting() {
            let set = delta.set.iter().map(|(k, v)| (&**k, Some(&**v)));
            announce(run, set.chain(delta.removed.iter().map(|k| (&**k, None))), seq, false);
        }
        let mut cadence = locked(&self.cadence);
        cadence.0 += 1;
        cadence.1 += bytes;
        Ok(())
    }

    /// Commit a whole snapshot; the next delta follows it.
    async fn commit_snapshot(&self, run: &Run) -> Result<(), Stop> {
        // Taken before the capture: a key written from now on is in the next delta.
        let changed = agent_core::__private::context::take_changes(&run.ctx);
        let checkpoint = checkpoint::capture(run, &self.agent);
        let data = checkpoint.to_json().map_err(|e| {
            Stop::Store(StoreError::Corrupt {
                store: self.store.kind(),
                message: format!("the run's checkpoint could not be written: {e}"),
            })
        })?;
        let seq = self.next_seq.fetch_add(1, Relaxed);
        let snapshot = Snapshot { seq, taken_ms: now_ms(), data };
        // The row and the snapshot together (a run is never listed without one to resume
        // from) when the row changes: the first time, when the status changes, and now and
        // then for `updated_ms`. Otherwise the snapshot alone, which writes fewer pages.
        let status = checkpoint.agent_status as u8;
        let writes = self.writes.fetch_add(1, Relaxed);
        let written = if self.row_status.swap(status, Relaxed) != status || writes.is_multiple_of(ROW_EVERY) {
            self.store.save_run_snapshot(&self.record(run), &snapshot).await
        } else {
            self.store.save_snapshot(run.run_id(), self.epoch.load(Relaxed), &snapshot).await
        };
        written?;
        if run.emitting() {
            // Followers see the keys written since the previous commit, valued as now.
            if let Ok(keys) = agent_core::__private::context::encode_keys(&run.ctx, &changed) {
                announce(run, keys.iter().map(|(k, v)| (&**k, v.as_deref())), seq, true);
            }
        }
        *locked(&self.cadence) = (0, 0, snapshot.data.len() as u64);
        self.snapshots.fetch_add(1, Relaxed);
        *locked(&self.frame) = Some(delta::Frame::of(run, &checkpoint));
        Ok(())
    }

    /// Why a run whose lease ended stops.
    fn ran_out(&self) -> String {
        format!("its lease ({:?}) ended before it could be renewed", self.ttl)
    }

    /// Ask for a snapshot without waiting for it: the run's state changed in a way worth
    /// recording though nothing completed (a state began waiting for a person).
    pub(crate) fn nudge(&self) {
        self.requested.fetch_add(1, AcqRel);
        self.wake.notify_one();
    }

    /// Wait until a snapshot taken after this call is committed. `false` if the store failed
    /// or the run lost its ownership (the run is then stopping).
    pub(crate) async fn sync(&self) -> bool {
        let wanted = self.requested.fetch_add(1, AcqRel) + 1;
        self.wake.notify_one();
        let mut rx = self.committed.subscribe();
        let ok = rx.wait_for(|&c| c >= wanted).await.is_ok();
        ok && *rx.borrow() != u64::MAX
    }

    /// The writer: commit a snapshot whenever one is asked for (or the interval passes),
    /// until `stop` is notified; then the final one, and give the lease back. Beside it the
    /// lease is renewed; if the run loses it, the writer stops at once.
    pub(crate) async fn writer(&self, run: &Run, stop: &Notify) {
        let hold = locked(&self.hold).upgrade();
        tokio::select! {
            biased;
            () = self.write(run, stop) => {}
            () = self.keep_lease(run) => {}
            () = self.obey(run) => {}
        }
        let Some(hold) = hold else { return };
        if self.lost.load(Acquire) {
            hold.forget();
        } else if let Err(e) = hold.release().await {
            tracing::warn!(run_id = %run.run_id(), error = %e, "could not give the run's lease back; it runs out");
        }
    }

    async fn write(&self, run: &Run, stop: &Notify) {
        let mut commits = 0u64;
        let mut tick = self.interval.map(|d| {
            let mut t = tokio::time::interval_at(tokio::time::Instant::now() + d, d);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        loop {
            let stopping = tokio::select! {
                biased;
                _ = stop.notified() => true,
                _ = self.wake.notified() => false,
                _ = async { match tick.as_mut() { Some(t) => { t.tick().await; } None => std::future::pending().await } } => false,
            };
            let generation = self.requested.load(Acquire);
            if let Err(e) = self.commit(run).await {
                if stopping {
                    self.late(run, e);
                } else {
                    self.stop_with(run, e);
                }
                return;
            }
            self.committed.send_replace(generation);
            commits += 1;
            if commits.is_multiple_of(PRUNE_EVERY) {
                match self.store.prune_snapshots(run.run_id(), self.epoch.load(Relaxed), KEEP).await {
                    Ok(_) => {}
                    Err(e @ StoreError::Fenced { .. }) => {
                        self.stop_with(run, e.into());
                        return;
                    }
                    Err(e) => tracing::warn!(error = %e, "retention failed; snapshots are kept"),
                }
            }
            if stopping {
                // The run is over: a branch left behind past the deadline (a state that
                // blocked its thread) that asks for a sync now leaves at once, unrecorded,
                // instead of waiting for a writer that is gone.
                self.committed.send_replace(u64::MAX);
                return;
            }
        }
    }

    /// Read, every [`CONTROL_POLL`], what another process asked of the run through the
    /// store, and do it: a `RunControl` (the console's cancel and pause) once, then nothing
    /// more is read; otherwise the cancels of single states, taken with the run's epoch
    /// (see `store::cancel_state`). Pending forever: the writer's end ends it. A failed read
    /// is tried again at the next poll; a take refused as fenced stops the run (it is no
    /// longer ours).
    async fn obey(&self, run: &Run) {
        loop {
            tokio::time::sleep(CONTROL_POLL).await;
            if self.lost.load(Acquire) {
                return std::future::pending().await;
            }
            match self.store.run_control(run.run_id()).await {
                Ok(Some(RunControl::Cancel)) => {
                    tracing::info!(run_id = %run.run_id(), "cancelled through the store");
                    run.cancel();
                    return std::future::pending().await;
                }
                Ok(Some(RunControl::Pause)) => {
                    tracing::info!(run_id = %run.run_id(), "paused through the store");
                    run.pause();
                    return std::future::pending().await;
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(run_id = %run.run_id(), error = %e, "could not read requests for the run"),
            }
            let epoch = self.epoch.load(Relaxed);
            if epoch == 0 {
                // Not claimed yet: nothing is ours to take.
                continue;
            }
            match self.store.take_state_cancels(run.run_id(), epoch).await {
                Ok(states) => {
                    for state in states {
                        match run.program.index_of(&state) {
                            Some(i) => {
                                tracing::info!(run_id = %run.run_id(), state, "state cancelled through the store");
                                run.cancel_state(i);
                            }
                            None => tracing::debug!(
                                run_id = %run.run_id(),
                                state,
                                "a cancel was asked of a state the workflow does not have; dropped"
                            ),
                        }
                    }
                }
                Err(e @ StoreError::Fenced { .. }) => {
                    self.lose(run, format!("another owner took the run over ({e})"));
                    return std::future::pending().await;
                }
                Err(e) => {
                    tracing::debug!(run_id = %run.run_id(), error = %e, "could not take the state cancels asked of the run")
                }
            }
        }
    }

    /// Renew the lease every third of its length until the run loses it (then stop the run
    /// and return); pending forever otherwise.
    async fn keep_lease(&self, run: &Run) {
        let period = self.ttl / 3;
        let owner = WorkerId::current();
        let mut wait = period;
        loop {
            tokio::time::sleep(wait).await;
            let sent = Instant::now();
            let Some(left) = self.lease_left(sent) else {
                self.lose(run, self.ran_out());
                return;
            };
            let epoch = self.epoch.load(Relaxed);
            let renew = self.store.renew_lease(run.run_id(), owner.as_str(), epoch, self.ttl);
            tokio::pin!(renew);
            let renewed = tokio::select! {
                r = &mut renew => r,
                () = tokio::time::sleep(left) => {
                    // Tokio's clock may run ahead of the real one (paused in tests): only the
                    // monotonic clock says whether the lease has ended.
                    if self.lease_left(Instant::now()).is_none() {
                        self.lose(run, self.ran_out());
                        return;
                    }
                    renew.await
                }
            };
            match renewed {
                Ok(_) => {
                    let mut end = locked(&self.lease_end);
                    *end = (*end).max(sent + self.ttl);
                    wait = period;
                }
                Err(e @ StoreError::Fenced { .. }) => {
                    self.lose(run, format!("its lease could not be renewed ({e})"));
                    return;
                }
                Err(e) => {
                    // A passing failure: try again soon, while the lease lasts.
                    tracing::warn!(run_id = %run.run_id(), error = %e, "could not renew the run's lease; trying again");
                    wait = (period / 4).max(Duration::from_millis(5));
                }
            }
        }
    }

    /// Stop the run for `stop`, while it goes on.
    fn stop_with(&self, run: &Run, stop: Stop) {
        match stop {
            Stop::Store(e) => self.fail(run, e),
            Stop::Lost(reason) => self.lose(run, reason),
        }
    }

    /// The run could not start: it ends with `error` (cancelled when another owner holds it,
    /// failed when the store failed).
    fn refuse(&self, run: &Run, error: AgentError) {
        match error {
            AgentError::Owned { .. } => run.lose(error),
            error => run.fail(error),
        }
        self.committed.send_replace(u64::MAX);
    }

    /// Stop the run: its store failed. Branches waiting in `sync` leave.
    fn fail(&self, run: &Run, e: StoreError) {
        tracing::error!(error = %e, "the store failed; the durable run stops");
        run.fail(store_error(e, run.ctx.clone()));
        self.committed.send_replace(u64::MAX);
    }

    /// Stop the run at once: it is no longer ours. Nothing more of it is written.
    fn lose(&self, run: &Run, reason: String) {
        if self.lost.swap(true, AcqRel) {
            return;
        }
        tracing::warn!(run_id = %run.run_id(), %reason, "the run lost its ownership; it stops");
        if let Some(hold) = locked(&self.hold).upgrade() {
            hold.forget();
        }
        run.lose(AgentError::Fenced { run_id: run.run_id().to_owned(), reason, context: run.ctx.clone() });
        self.committed.send_replace(u64::MAX);
    }

    /// The final commit failed, after the run was over: its error becomes the run's.
    fn late(&self, run: &Run, stop: Stop) {
        let error = match stop {
            Stop::Store(e) => {
                tracing::error!(error = %e, "the store failed at the run's final snapshot");
                store_error(e, run.ctx.clone())
            }
            Stop::Lost(reason) => {
                self.lost.store(true, Release);
                tracing::warn!(run_id = %run.run_id(), %reason, "the run lost its ownership at its final snapshot");
                AgentError::Fenced { run_id: run.run_id().to_owned(), reason, context: run.ctx.clone() }
            }
        };
        *locked(&self.late) = Some(error);
        self.committed.send_replace(u64::MAX);
    }

    /// The error of a final commit that failed after the run was over, if one did.
    pub(crate) fn late_error(&self) -> Option<AgentError> {
        locked(&self.late).take()
    }
}

impl crate::run::Recorder for Durable {
    fn store(&self) -> Arc<dyn CheckpointStore> {
        self.store.clone()
    }

    fn lease_ttl(&self) -> Duration {
        self.ttl
    }

    fn sync(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + '_>> {
        Box::pin(Durable::sync(self))
    }

    fn nudge(&self) {
        Durable::nudge(self)
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(Relaxed)
    }

    fn hand_over(&self) {
        self.handover.store(true, Release);
    }
}

/// The error of a run stopped by its store, or of a store asked for a run.
pub(crate) fn store_error(message: impl ToString, context: Context) -> AgentError {
    AgentError::Store { message: message.to_string(), context }
}
