//! [`RetryingStore`]: a store that rides out outages of the store it wraps, retrying its
//! transient failures ([`StoreError::is_transient`]) with backoff for a bounded time.
//!
//! Invariants:
//! - Every method of the wrapped store is delegated; each call is tried again while it
//!   fails transiently, until it succeeds, fails otherwise, or the bound (30 s unless set:
//!   [`DEFAULT_STORE_RETRY`]) has passed since its first attempt. Then the last error is
//!   returned. A bound of zero tries once.
//! - The bound counts on this machine's monotonic clock (`std::time::Instant`), never on
//!   tokio's (which tests pause, and which then jumps); the pauses between attempts are
//!   tokio sleeps, exponential from 50 ms, doubled each time, capped at 1 s, with jitter
//!   (backon's `ExponentialBuilder`), and never past the bound.
//! - Retrying is safe because every owner's write carries its epoch: a write retried after
//!   the run was taken over is refused (`Fenced`), as the first attempt would have been.
//! - A write whose reply was lost may have landed; its retry then finds its own work done.
//!   After a transient failure (only then):
//!   - a snapshot (`save_snapshot`, `save_run_snapshot`) refused as a `Conflict` at its own
//!     `seq` is a success when the snapshot stored at that `seq` has the same `taken_ms` and
//!     the same bytes (the row written with it was in the same transaction); otherwise the
//!     `Conflict` stands;
//!   - an `append` refused as a `Conflict` is a success when the journal holds exactly the
//!     batch's entries at their `seq`s;
//!   - an answer (`answer_input`, `answer_input_fenced`) that finds the request answered
//!     says `true` when the stored answer is this one (same text, `defaulted` and time);
//!   - a claim finds the run held by its own owner: with `reclaim` it takes it again (one
//!     epoch more); without, it returns [`Claim::Held`] by its own owner;
//!   - a submission refused (its run id taken) finds the run its lost attempt made: the
//!     same id, agent and input; it says it made it;
//!   - a lineage refused (the run has one already) finds the one its lost attempt recorded:
//!     equal in every field; it says it recorded it (another lineage stays refused);
//!   - `claim_next` is not retried: runs a lost reply claimed stay leased to this worker,
//!     which does not know it, until their lease ends (then any worker takes them); the
//!     worker's next poll asks again;
//!   - `take_state_cancels` is not retried: the requests a lost reply took are lost with it
//!     (the states they named run on), and a retry would find none; the owner's next poll
//!     takes again;
//!   - `delete_run` may say `false` for the run its lost attempt deleted, and
//!     `apply_retention` reports only what its last attempt deleted;
//!   - every other method is idempotent.
//! - Durable runs go through one of these (see `Agent::store_retry`): their lease is what
//!   bounds an outage for a run (a run whose local lease ends during the outage stops with
//!   `AgentError::Fenced`), the bound here is what bounds one call.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable, TokioSleeper};

use super::{
    CheckpointStore, Claim, ClaimNext, ClaimRequest, InputRecord, JournalEntry, Lineage, NextRun, Retention,
    RetentionReport, RunControl, RunQuery, RunRecord, ScheduleAdvance, ScheduleRecord, SignalRecord, SignalSent,
    Snapshot, StoreError, StoreFuture, Submission, Submitted, TimerRecord,
};

/// `work`'s output, or `None` once `limit` has passed on the monotonic clock (tokio's sleeps
/// only wake the check: under paused time they end at once, and the check sleeps again).
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) async fn within<F: Future>(limit: Duration, work: F) -> Option<F::Output> {
    let deadline = Instant::now() + limit;
    let expired = async {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            tokio::time::sleep(left).await;
        }
    };
    tokio::select! {
        biased;
        out = work => Some(out),
        () = expired => None,
    }
}

/// How long a store call is retried through an outage unless told otherwise.
pub const DEFAULT_STORE_RETRY: Duration = Duration::from_secs(30);

/// The pauses between attempts: 50 ms, doubled each time, capped at 1 s, with jitter.
fn backoff() -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(50))
        .with_factor(2.0)
        .with_max_delay(Duration::from_secs(1))
        .with_jitter()
        .without_max_times()
}

/// A store that retries the transient failures of the one it wraps, with backoff, for a
/// bounded time (see the module docs of `store::retry` for what a retried write does when
/// its first attempt had landed). Agents wrap their store in one (`Agent::with_store`); it
/// serves other users of a store the same way.
///
/// ```
/// use std::time::Duration;
/// use agent_runtime::store::{CheckpointStore, MemoryStore, RetryingStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), agent_runtime::store::StoreError> {
/// let store = RetryingStore::new(MemoryStore::new()).bound(Duration::from_secs(10));
/// assert_eq!(store.get_run("nobody").await?, None);
/// # Ok(())
/// # }
/// ```
pub struct RetryingStore<S> {
    inner: S,
    /// The bound, in milliseconds.
    bound_ms: AtomicU64,
}

impl<S: std::fmt::Debug> std::fmt::Debug for RetryingStore<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryingStore").field("inner", &self.inner).field("bound", &self.get_bound()).finish()
    }
}

impl<S> RetryingStore<S> {
    /// The bound of each call.
    pub fn get_bound(&self) -> Duration {
        Duration::from_millis(self.bound_ms.load(Relaxed))
    }
}

impl<S: CheckpointStore> RetryingStore<S> {
    /// `inner`, its calls retried through outages for [`DEFAULT_STORE_RETRY`].
    pub fn new(inner: S) -> RetryingStore<S> {
        let store = RetryingStore { inner, bound_ms: AtomicU64::new(0) };
        store.set_bound(DEFAULT_STORE_RETRY);
        store
    }

    /// Retry each call for at most `bound` after its first attempt (zero: never retry).
    pub fn bound(self, bound: Duration) -> RetryingStore<S> {
        self.set_bound(bound);
        self
    }

    /// Change the bound of the calls made from now on.
    pub(crate) fn set_bound(&self, bound: Duration) {
        self.bound_ms.store(u64::try_from(bound.as_millis()).unwrap_or(u64::MAX), Relaxed);
    }

    /// The store it wraps.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Run `attempt` until it succeeds, fails for good, or the bound has passed; it is told
    /// whether an earlier attempt failed transiently (and so may have landed).
    fn retried<'a, T, Fut>(
        &'a self,
        what: &'static str,
        mut attempt: impl FnMut(bool) -> Fut + Send + 'a,
    ) -> StoreFuture<'a, T>
    where
        T: Send + 'a,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'a,
    {
        Box::pin(async move {
            let (bound, start) = (self.get_bound(), Instant::now());
            let retried = AtomicBool::new(false);
            (|| attempt(retried.load(Relaxed)))
                .retry(backoff())
                .sleep(TokioSleeper)
                .when(StoreError::is_transient)
                .adjust(|_, next| {
                    let left = bound.checked_sub(start.elapsed()).filter(|d| !d.is_zero())?;
                    Some(next?.min(left))
                })
                .notify(|e, pause| {
                    retried.store(true, Relaxed);
                    tracing::warn!(store = self.inner.kind(), what, error = %e, ?pause, "the store failed; trying again");
                })
                .await
        })
    }
}

/// Whether the snapshot stored at `snapshot.seq` is `snapshot` (a retried write that had
/// landed).
async fn snapshot_landed(store: &impl CheckpointStore, run_id: &str, snapshot: &Snapshot) -> Result<bool, StoreError> {
    // Only the run's writer writes its snapshots, in ascending `seq`: its own is among the
    // newest two (a retention may have run since).
    let stored = store.snapshots(run_id, 2).await?;
    Ok(stored.iter().any(|s| s == snapshot))
}

/// The error of a retried snapshot that found its `seq` taken, or `Ok` when it is its own.
async fn own_snapshot(
    store: &impl CheckpointStore,
    run_id: &str,
    snapshot: &Snapshot,
    written: Result<(), StoreError>,
    retried: bool,
) -> Result<(), StoreError> {
    match written {
        Err(StoreError::Conflict { seq, .. }) if retried && seq == snapshot.seq => {
            if snapshot_landed(store, run_id, snapshot).await? {
                tracing::debug!(run_id, seq, "a retried snapshot had landed");
                return Ok(());
            }
            written
        }
        other => other,
    }
}

impl<S: CheckpointStore> CheckpointStore for RetryingStore<S> {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn upsert_run<'a>(&'a self, run: &'a RunRecord) -> StoreFuture<'a, ()> {
        self.retried("upsert_run", move |_| self.inner.upsert_run(run))
    }

    fn get_run<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<RunRecord>> {
        self.retried("get_run", move |_| self.inner.get_run(run_id))
    }

    fn list_runs<'a>(&'a self, query: &'a RunQuery) -> StoreFuture<'a, Vec<RunRecord>> {
        self.retried("list_runs", move |_| self.inner.list_runs(query))
    }

    fn count_runs<'a>(&'a self, query: &'a RunQuery) -> StoreFuture<'a, u64> {
        self.retried("count_runs", move |_| self.inner.count_runs(query))
    }

    fn append<'a>(&'a self, run: &'a RunRecord, entries: &'a [JournalEntry]) -> StoreFuture<'a, ()> {
        self.retried("append", move |retried| async move {
            let written = self.inner.append(run, entries).await;
            match (&written, entries.first()) {
                (Err(StoreError::Conflict { .. }), Some(first)) if retried => {
                    let stored = self.inner.journal(&run.run_id, first.seq.saturating_sub(1)).await?;
                    if stored.get(..entries.len()) == Some(entries) {
                        tracing::debug!(run_id = %run.run_id, seq = first.seq, "a retried append had landed");
                        return Ok(());
                    }
                    written
                }
                _ => written,
            }
        })
    }

    fn journal<'a>(&'a self, run_id: &'a str, after: u64) -> StoreFuture<'a, Vec<JournalEntry>> {
        self.retried("journal", move |_| self.inner.journal(run_id, after))
    }

    fn save_snapshot<'a>(&'a self, run_id: &'a str, epoch: u64, snapshot: &'a Snapshot) -> StoreFuture<'a, ()> {
        self.retried("save_snapshot", move |retried| async move {
            let written = self.inner.save_snapshot(run_id, epoch, snapshot).await;
            own_snapshot(&self.inner, run_id, snapshot, written, retried).await
        })
    }

    fn save_run_snapshot<'a>(&'a self, run: &'a RunRecord, snapshot: &'a Snapshot) -> StoreFuture<'a, ()> {
        self.retried("save_run_snapshot", move |retried| async move {
            let written = self.inner.save_run_snapshot(run, snapshot).await;
            own_snapshot(&self.inner, &run.run_id, snapshot, written, retried).await
        })
    }

    fn claim_run<'a>(&'a self, claim: &'a ClaimRequest) -> StoreFuture<'a, Claim> {
        self.retried("claim_run", move |_| self.inner.claim_run(claim))
    }

    fn submit_run<'a>(&'a self, submission: &'a Submission) -> StoreFuture<'a, Submitted> {
        self.retried("submit_run", move |retried| async move {
            let made = self.inner.submit_run(submission).await;
            match made {
                Err(e) if retried && !e.is_transient() => {
                    let landed = self.inner.get_run(&submission.run_id).await?;
                    let input = self.inner.run_input(&submission.run_id).await?;
                    match landed {
                        Some(run) if run.agent == submission.agent && input.as_deref() == Some(&submission.input) => {
                            tracing::debug!(run_id = %run.run_id, "a retried submission had landed");
                            Ok(Submitted { run, created: true })
                        }
                        _ => Err(e),
                    }
                }
                other => other,
            }
        })
    }

    fn run_input<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<String>> {
        self.retried("run_input", move |_| self.inner.run_input(run_id))
    }

    fn wake_ups<'a>(&'a self) -> StoreFuture<'a, Option<tokio::sync::mpsc::Receiver<()>>> {
        // Not retried: without wake-ups a worker polls.
        self.inner.wake_ups()
    }

    fn request_control<'a>(&'a self, run_id: &'a str, control: RunControl) -> StoreFuture<'a, bool> {
        // Setting the same request twice is the same as once.
        self.retried("request_control", move |_| self.inner.request_control(run_id, control))
    }

    fn run_control<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<RunControl>> {
        // Not retried: the owner asks again at its next look.
        self.inner.run_control(run_id)
    }

    fn request_state_cancel<'a>(&'a self, run_id: &'a str, state: &'a str) -> StoreFuture<'a, bool> {
        // Asking twice for a state is the same as once.
        self.retried("request_state_cancel", move |_| self.inner.request_state_cancel(run_id, state))
    }

    fn take_state_cancels<'a>(&'a self, run_id: &'a str, epoch: u64) -> StoreFuture<'a, Vec<String>> {
        // Not retried: the owner takes again at its next poll. (A take that landed but whose
        // answer was lost took its requests; a retry would find none.)
        self.inner.take_state_cancels(run_id, epoch)
    }

    fn record_lineage<'a>(&'a self, lineage: &'a Lineage) -> StoreFuture<'a, ()> {
        // Retried, as `request_state_cancel`; but recording twice is refused, so a refusal
        // after a lost reply is checked against what the lost attempt may have written.
        self.retried("record_lineage", move |retried| async move {
            match self.inner.record_lineage(lineage).await {
                Err(e) if retried && !e.is_transient() => {
                    if self.inner.lineage(&lineage.run_id).await?.as_ref() == Some(lineage) {
                        tracing::debug!(run_id = %lineage.run_id, "a retried lineage had landed");
                        return Ok(());
                    }
                    Err(e)
                }
                other => other,
            }
        })
    }

    fn lineage<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<Lineage>> {
        self.retried("lineage", move |_| self.inner.lineage(run_id))
    }

    fn descendants<'a>(&'a self, parent_run_id: &'a str) -> StoreFuture<'a, Vec<Lineage>> {
        self.retried("descendants", move |_| self.inner.descendants(parent_run_id))
    }

    fn send_signal<'a>(&'a self, signal: &'a SignalRecord) -> StoreFuture<'a, SignalSent> {
        // Retried: a second send with one id keeps nothing (a send whose reply was lost
        // then says `Duplicate`: the signal is kept either way).
        self.retried("send_signal", move |_| self.inner.send_signal(signal))
    }

    fn take_signal<'a>(
        &'a self,
        run_id: &'a str,
        name: &'a str,
        wait_key: &'a str,
        now_ms: i64,
        epoch: u64,
    ) -> StoreFuture<'a, Option<SignalRecord>> {
        // Retried: a take that landed but whose reply was lost is found again by its wait.
        self.retried("take_signal", move |_| self.inner.take_signal(run_id, name, wait_key, now_ms, epoch))
    }

    fn signals<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Vec<SignalRecord>> {
        self.retried("signals", move |_| self.inner.signals(run_id))
    }

    fn arm_timer<'a>(&'a self, timer: &'a TimerRecord, epoch: u64) -> StoreFuture<'a, i64> {
        // Retried: arming twice keeps the first wake time.
        self.retried("arm_timer", move |_| self.inner.arm_timer(timer, epoch))
    }

    fn timers<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Vec<TimerRecord>> {
        self.retried("timers", move |_| self.inner.timers(run_id))
    }

    fn put_schedule<'a>(&'a self, schedule: &'a ScheduleRecord) -> StoreFuture<'a, bool> {
        // Retried: putting the same definition twice leaves it as once (a put whose reply
        // was lost then says `false`, "replaced").
        self.retried("put_schedule", move |_| self.inner.put_schedule(schedule))
    }

    fn schedules<'a>(&'a self, agent: Option<&'a str>) -> StoreFuture<'a, Vec<ScheduleRecord>> {
        self.retried("schedules", move |_| self.inner.schedules(agent))
    }

    fn pause_schedule<'a>(
        &'a self,
        agent: &'a str,
        name: &'a str,
        paused: bool,
        next_tick_ms: i64,
        now_ms: i64,
    ) -> StoreFuture<'a, bool> {
        self.retried("pause_schedule", move |_| self.inner.pause_schedule(agent, name, paused, next_tick_ms, now_ms))
    }

    fn delete_schedule<'a>(&'a self, agent: &'a str, name: &'a str) -> StoreFuture<'a, bool> {
        self.retried("delete_schedule", move |_| self.inner.delete_schedule(agent, name))
    }

    fn advance_schedule<'a>(&'a self, advance: &'a ScheduleAdvance) -> StoreFuture<'a, bool> {
        // Not retried: an advance that landed but whose reply was lost would be refused on
        // a retry (the version moved), which the caller reads as "another worker moved it";
        // the next pass reads the cursor again either way.
        self.inner.advance_schedule(advance)
    }

    fn claim_next<'a>(&'a self, ask: &'a ClaimNext) -> StoreFuture<'a, Vec<NextRun>> {
        // Not retried (see the module docs): the worker asks again at its next poll.
        self.inner.claim_next(ask)
    }

    fn renew_lease<'a>(&'a self, run_id: &'a str, owner: &'a str, epoch: u64, ttl: Duration) -> StoreFuture<'a, i64> {
        self.retried("renew_lease", move |_| self.inner.renew_lease(run_id, owner, epoch, ttl))
    }

    fn release_run<'a>(&'a self, run_id: &'a str, epoch: u64) -> StoreFuture<'a, ()> {
        self.retried("release_run", move |_| self.inner.release_run(run_id, epoch))
    }

    fn prune_snapshots<'a>(&'a self, run_id: &'a str, epoch: u64, keep: usize) -> StoreFuture<'a, RetentionReport> {
        self.retried("prune_snapshots", move |_| self.inner.prune_snapshots(run_id, epoch, keep))
    }

    fn latest_snapshot<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<Snapshot>> {
        self.retried("latest_snapshot", move |_| self.inner.latest_snapshot(run_id))
    }

    fn snapshots<'a>(&'a self, run_id: &'a str, limit: usize) -> StoreFuture<'a, Vec<Snapshot>> {
        self.retried("snapshots", move |_| self.inner.snapshots(run_id, limit))
    }

    fn put_input<'a>(&'a self, input: &'a InputRecord) -> StoreFuture<'a, ()> {
        self.retried("put_input", move |_| self.inner.put_input(input))
    }

    fn inputs<'a>(&'a self, run_id: Option<&'a str>, pending_only: bool) -> StoreFuture<'a, Vec<InputRecord>> {
        self.retried("inputs", move |_| self.inner.inputs(run_id, pending_only))
    }

    fn answer_input<'a>(
        &'a self,
        run_id: &'a str,
        request_id: &'a str,
        answer: &'a str,
        defaulted: bool,
        at_ms: i64,
    ) -> StoreFuture<'a, bool> {
        self.retried("answer_input", move |retried| async move {
            let answered = self.inner.answer_input(run_id, request_id, answer, defaulted, at_ms).await?;
            Ok(answered || (retried && self.answer_landed(run_id, request_id, answer, defaulted, at_ms).await?))
        })
    }

    fn put_input_fenced<'a>(&'a self, input: &'a InputRecord, epoch: u64) -> StoreFuture<'a, ()> {
        self.retried("put_input_fenced", move |_| self.inner.put_input_fenced(input, epoch))
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
        self.retried("answer_input_fenced", move |retried| async move {
            let answered = self.inner.answer_input_fenced(run_id, request_id, answer, defaulted, at_ms, epoch).await?;
            Ok(answered || (retried && self.answer_landed(run_id, request_id, answer, defaulted, at_ms).await?))
        })
    }

    fn delete_run<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, bool> {
        self.retried("delete_run", move |_| self.inner.delete_run(run_id))
    }

    fn apply_retention<'a>(&'a self, policy: &'a Retention, now_ms: i64) -> StoreFuture<'a, RetentionReport> {
        self.retried("apply_retention", move |_| self.inner.apply_retention(policy, now_ms))
    }
}

impl<S: CheckpointStore> RetryingStore<S> {
    /// Whether request `request_id` of `run_id` holds this very answer (a retried answer
    /// that had landed).
    async fn answer_landed(
        &self,
        run_id: &str,
        request_id: &str,
        answer: &str,
        defaulted: bool,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        let inputs = self.inner.inputs(Some(run_id), false).await?;
        Ok(inputs.iter().any(|i| {
            i.request_id == request_id
                && i.answer.as_deref() == Some(answer)
                && i.defaulted == defaulted
                && i.answered_ms == Some(at_ms)
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    use super::*;
    use crate::store::MemoryStore;
    use agent_core::AgentStatus;

    /// A memory store whose next `fail` calls fail as a lost connection would; with `land`,
    /// a failing write is done first (its reply is what is lost).
    #[derive(Default)]
    struct Flaky {
        inner: MemoryStore,
        fail: AtomicUsize,
        land: AtomicBool,
        calls: AtomicUsize,
    }

    fn lost() -> StoreError {
        StoreError::Backend {
            store: "flaky",
            message: "connection lost".into(),
            source: Some(Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset))),
        }
    }

    impl Flaky {
        /// Whether this call fails.
        fn fails(&self) -> bool {
            self.calls.fetch_add(1, Relaxed);
            self.fail.fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1)).is_ok()
        }
    }

    macro_rules! flaky_write {
        ($self:ident, $call:expr) => {
            Box::pin(async move {
                if $self.fails() {
                    if $self.land.load(Relaxed) {
                        $call.await?;
                    }
                    return Err(lost());
                }
                $call.await
            })
        };
    }

    impl CheckpointStore for Flaky {
        fn kind(&self) -> &'static str {
            "flaky"
        }
        fn upsert_run<'a>(&'a self, run: &'a RunRecord) -> StoreFuture<'a, ()> {
            flaky_write!(self, self.inner.upsert_run(run))
        }
        fn get_run<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<RunRecord>> {
            flaky_write!(self, self.inner.get_run(run_id))
        }
        fn list_runs<'a>(&'a self, query: &'a RunQuery) -> StoreFuture<'a, Vec<RunRecord>> {
            self.inner.list_runs(query)
        }
        fn append<'a>(&'a self, run: &'a RunRecord, entries: &'a [JournalEntry]) -> StoreFuture<'a, ()> {
            flaky_write!(self, self.inner.append(run, entries))
        }
        fn journal<'a>(&'a self, run_id: &'a str, after: u64) -> StoreFuture<'a, Vec<JournalEntry>> {
            self.inner.journal(run_id, after)
        }
        fn save_snapshot<'a>(&'a self, run_id: &'a str, epoch: u64, snapshot: &'a Snapshot) -> StoreFuture<'a, ()> {
            flaky_write!(self, self.inner.save_snapshot(run_id, epoch, snapshot))
        }
        fn save_run_snapshot<'a>(&'a self, run: &'a RunRecord, snapshot: &'a Snapshot) -> StoreFuture<'a, ()> {
            flaky_write!(self, self.inner.save_run_snapshot(run, snapshot))
        }
        fn request_state_cancel<'a>(&'a self, run_id: &'a str, state: &'a str) -> StoreFuture<'a, bool> {
            self.inner.request_state_cancel(run_id, state)
        }
        fn take_state_cancels<'a>(&'a self, run_id: &'a str, epoch: u64) -> StoreFuture<'a, Vec<String>> {
            self.inner.take_state_cancels(run_id, epoch)
        }
        fn record_lineage<'a>(&'a self, lineage: &'a Lineage) -> StoreFuture<'a, ()> {
            flaky_write!(self, self.inner.record_lineage(lineage))
        }
        fn lineage<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<Lineage>> {
            self.inner.lineage(run_id)
        }
        fn descendants<'a>(&'a self, parent_run_id: &'a str) -> StoreFuture<'a, Vec<Lineage>> {
            self.inner.descendants(parent_run_id)
        }
        fn claim_run<'a>(&'a self, claim: &'a ClaimRequest) -> StoreFuture<'a, Claim> {
            flaky_write!(self, self.inner.claim_run(claim))
        }
        fn submit_run<'a>(&'a self, submission: &'a Submission) -> StoreFuture<'a, Submitted> {
            flaky_write!(self, self.inner.submit_run(submission))
        }
        fn run_input<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<String>> {
            self.inner.run_input(run_id)
        }
        fn claim_next<'a>(&'a self, ask: &'a ClaimNext) -> StoreFuture<'a, Vec<NextRun>> {
            self.inner.claim_next(ask)
        }
        fn renew_lease<'a>(&'a self, r: &'a str, o: &'a str, e: u64, ttl: Duration) -> StoreFuture<'a, i64> {
            self.inner.renew_lease(r, o, e, ttl)
        }
        fn release_run<'a>(&'a self, run_id: &'a str, epoch: u64) -> StoreFuture<'a, ()> {
            self.inner.release_run(run_id, epoch)
        }
        fn prune_snapshots<'a>(&'a self, r: &'a str, e: u64, keep: usize) -> StoreFuture<'a, RetentionReport> {
            self.inner.prune_snapshots(r, e, keep)
        }
        fn latest_snapshot<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<Snapshot>> {
            self.inner.latest_snapshot(run_id)
        }
        fn snapshots<'a>(&'a self, run_id: &'a str, limit: usize) -> StoreFuture<'a, Vec<Snapshot>> {
            self.inner.snapshots(run_id, limit)
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
            flaky_write!(self, self.inner.answer_input(run_id, request_id, answer, defaulted, at_ms))
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

    /// A run owned at epoch 1 (claimed), in `store`.
    async fn owned_run(store: &impl CheckpointStore) -> RunRecord {
        let row = RunRecord::new("run-1", "demo", AgentStatus::Running, 1, 1);
        let claim = ClaimRequest::new("run-1", "me", Duration::from_secs(60)).create(row);
        match store.claim_run(&claim).await.unwrap() {
            Claim::Taken(row) => row,
            other => panic!("not taken: {other:?}"),
        }
    }

    fn snapshot(seq: u64, data: &str) -> Snapshot {
        Snapshot { seq, taken_ms: 7, data: data.to_owned() }
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_until_the_call_succeeds() {
        let store = RetryingStore::new(Flaky::default());
        let row = owned_run(&store).await;
        store.inner().fail.store(3, Relaxed);
        let before = store.inner().calls.load(Relaxed);
        store.save_run_snapshot(&row, &snapshot(1, "{}")).await.unwrap();
        assert_eq!(store.inner().calls.load(Relaxed) - before, 4, "three failures, then the write");
        assert_eq!(store.inner().inner.latest_snapshot("run-1").await.unwrap(), Some(snapshot(1, "{}")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_bound_of_zero_tries_once_and_permanent_failures_are_not_retried() {
        let store = RetryingStore::new(Flaky::default()).bound(Duration::ZERO);
        store.inner().fail.store(1, Relaxed);
        assert!(store.get_run("run-1").await.unwrap_err().is_transient());
        assert_eq!(store.inner().calls.load(Relaxed), 1);

        let store = RetryingStore::new(Flaky::default());
        let row = owned_run(&store).await;
        let stale = row.clone().with_epoch(row.epoch + 1);
        let before = store.inner().calls.load(Relaxed);
        let e = store.save_run_snapshot(&stale, &snapshot(1, "{}")).await.unwrap_err();
        assert!(matches!(e, StoreError::Fenced { .. }), "{e}");
        assert_eq!(store.inner().calls.load(Relaxed) - before, 1, "a refused write is final");
    }

    /// The bound counts on the monotonic clock: a store that never comes back gives up
    /// after it (here 200 ms of real time) with the store's last error.
    #[tokio::test]
    async fn a_store_that_stays_down_gives_up_after_the_bound() {
        let store = RetryingStore::new(Flaky::default()).bound(Duration::from_millis(200));
        store.inner().fail.store(usize::MAX, Relaxed);
        let e = store.get_run("run-1").await.unwrap_err();
        assert!(e.is_transient(), "{e}");
        assert!(store.inner().calls.load(Relaxed) > 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_submission_whose_reply_was_lost_is_made_once() {
        let store = RetryingStore::new(Flaky::default());
        store.inner().land.store(true, Relaxed);
        store.inner().fail.store(1, Relaxed);
        let s = Submission::new("run-9", "etl", "hash", "{}");
        let made = store.submit_run(&s).await.unwrap();
        assert!(made.created && made.run.run_id == "run-9");
        let runs = store.list_runs(&RunQuery::default()).await.unwrap();
        assert_eq!(runs.len(), 1, "made once");
        // Another submission with that id and other input is refused, retried or not.
        store.inner().fail.store(1, Relaxed);
        let other = Submission::new("run-9", "etl", "hash", "{\"x\":1}");
        assert!(store.submit_run(&other).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_snapshot_whose_reply_was_lost_is_its_own_conflict() {
        for save_row in [false, true] {
            let store = RetryingStore::new(Flaky::default());
            let row = owned_run(&store).await;
            store.inner().land.store(true, Relaxed);
            store.inner().fail.store(1, Relaxed);
            let s = snapshot(1, "{\"a\":1}");
            if save_row {
                store.save_run_snapshot(&row, &s).await.unwrap();
            } else {
                store.save_snapshot("run-1", row.epoch, &s).await.unwrap();
            }
            assert_eq!(
                store.inner().inner.snapshots("run-1", 9).await.unwrap(),
                std::slice::from_ref(&s),
                "written once"
            );

            // Another write at a `seq` already taken by other bytes stays a conflict, also
            // after a lost reply.
            store.inner().fail.store(1, Relaxed);
            store.inner().land.store(false, Relaxed);
            let e = store.save_snapshot("run-1", row.epoch, &snapshot(1, "{\"a\":2}")).await.unwrap_err();
            assert!(matches!(e, StoreError::Conflict { seq: 1, .. }), "{e}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_append_whose_reply_was_lost_is_its_own_conflict() {
        let store = RetryingStore::new(Flaky::default());
        let row = owned_run(&store).await;
        let entry = |seq, payload: &str| JournalEntry { seq, state: "s".into(), payload: payload.into(), at_ms: 1 };
        let batch = [entry(1, "a"), entry(2, "b")];
        store.inner().land.store(true, Relaxed);
        store.inner().fail.store(1, Relaxed);
        store.append(&row, &batch).await.unwrap();
        assert_eq!(store.journal("run-1", 0).await.unwrap(), batch);

        store.inner().fail.store(1, Relaxed);
        let e = store.append(&row, &[entry(2, "other")]).await.unwrap_err();
        assert!(matches!(e, StoreError::Conflict { .. }), "{e}");
        // Without a lost reply a conflict is never taken for success.
        let e = store.append(&row, &[entry(2, "b")]).await.unwrap_err();
        assert!(matches!(e, StoreError::Conflict { .. }), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_whose_reply_was_lost_says_it_answered() {
        let store = RetryingStore::new(Flaky::default());
        let input = InputRecord {
            run_id: "run-1".into(),
            request: agent_core::InputRequestRecord::new("q".into(), "Approve?".into(), 0),
        };
        store.put_input(&input).await.unwrap();
        store.inner().land.store(true, Relaxed);
        store.inner().fail.store(1, Relaxed);
        assert!(store.answer_input("run-1", "q", "yes", false, 5).await.unwrap());
        assert!(!store.answer_input("run-1", "q", "no", false, 6).await.unwrap(), "the first answer won");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lineage_whose_reply_was_lost_is_recorded_once() {
        use crate::store::LineageKind;
        let store = RetryingStore::new(Flaky::default());
        let fork = Lineage::new("run-2", "run-1", LineageKind::Fork, 5).at_seq(3);
        store.inner().land.store(true, Relaxed);
        store.inner().fail.store(1, Relaxed);
        store.record_lineage(&fork).await.unwrap();
        assert_eq!(store.lineage("run-2").await.unwrap(), Some(fork.clone()));
        // Another lineage for the run stays refused, after a lost reply or not, and the
        // first is kept.
        let other = Lineage::new("run-2", "run-9", LineageKind::Child, 6);
        store.inner().fail.store(1, Relaxed);
        store.inner().land.store(false, Relaxed);
        let e = store.record_lineage(&other).await.unwrap_err();
        assert!(matches!(e, StoreError::Backend { source: None, .. }) && !e.is_transient(), "{e}");
        assert!(store.record_lineage(&fork).await.is_err(), "without a lost reply a refusal stands");
        assert_eq!(store.descendants("run-1").await.unwrap(), [fork]);
        assert!(store.descendants("run-9").await.unwrap().is_empty());
    }

    /// `within` counts on the real clock: paused tokio time jumping ahead does not end it.
    #[tokio::test(start_paused = true)]
    async fn within_ends_by_the_monotonic_clock() {
        assert_eq!(within(Duration::from_secs(1), async { 7 }).await, Some(7));
        let start = Instant::now();
        assert_eq!(within(Duration::from_millis(50), std::future::pending::<()>()).await, None);
        assert!(start.elapsed() >= Duration::from_millis(50));
    }

    #[tokio::test(start_paused = true)]
    async fn a_retried_claim_takes_the_run_again_with_reclaim() {
        let store = Arc::new(RetryingStore::new(Flaky::default()));
        let row = RunRecord::new("run-1", "demo", AgentStatus::Running, 1, 1);
        let claim = ClaimRequest::new("run-1", "me", Duration::from_secs(60)).create(row).reclaim(true);
        store.inner().land.store(true, Relaxed);
        store.inner().fail.store(1, Relaxed);
        match store.claim_run(&claim).await.unwrap() {
            Claim::Taken(row) => assert_eq!((row.owner.as_deref(), row.epoch), (Some("me"), 2)),
            other => panic!("not taken: {other:?}"),
        }
    }
}
