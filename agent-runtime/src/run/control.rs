//! A run's control: its status, the requests that stop or pause it, its deadline, the
//! tasks still alive, and its end.
//!
//! States of a run, and the transitions between them (each a verb below):
//! - `Running` until one of: [`Control::end_with`] (`Cancelled`, `TimedOut`),
//!   [`Control::record_error`] (`Failed`), [`Control::record_end`] (an error, and the
//!   status it ends with), [`Control::pause`] (`Paused`), or
//!   [`Control::finish`] (`Completed`). The first transition out of `Running` wins; later
//!   ones change nothing.
//! - Flags, one atomic: `HOLD` (start no further state: read inline before every state),
//!   `STOP` (drop every branch: set with `HOLD`, wakes [`Control::stopped`]), `PAUSE` (set
//!   with `HOLD` by a pause), `FAILED` (an error is stored: `finish` takes it), `WATCHED`
//!   (someone waits in [`Control::ended`]). Flags are only ever set, never cleared.
//! - Two `Notify`s: `stop` wakes branches racing [`Control::stopped`]; `ended` wakes
//!   [`Control::ended`] at the end, only when `PAUSE` or `WATCHED` is set, so a run nobody
//!   waits on pays nothing for it. `SeqCst` pairs the flag with `finished_after`: either
//!   `finish` sees a waiter to wake, or the waiter sees the run over.
//! - `tasks` counts spawned branch tasks alive (a fan-out's tasks count as one); the run
//!   is over when its root branch has returned and `tasks` is zero; `tasks_done` wakes the
//!   waiter of [`Control::tasks_finished`].
//! - The deadline is set before the run starts and never changes.
//! - The end is told in two steps: `finished_after` is set (`SeqCst`) before subscribers
//!   are told (`RunFinished`), `announced` (`Release`) after. A stream of one run's events
//!   that finds the run over but not yet announced waits for it; once announced, whatever
//!   was sent to it is in its buffer (see `agent::handle`).

use std::sync::atomic::{
    AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
    Ordering::SeqCst,
};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use agent_core::{AgentError, AgentStatus};
use tokio::sync::Notify;

const HOLD: u8 = 1;
const STOP: u8 = 2;
const PAUSE: u8 = 4;
const FAILED: u8 = 8;
const WATCHED: u8 = 16;

/// A run's deadline: on tokio's clock for the timers, and on the wall clock for a durable
/// run's checkpoints, so that a recovered run ends when the original would have.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline {
    /// When, on tokio's clock.
    pub at: tokio::time::Instant,
    /// When, in milliseconds since the Unix epoch.
    pub wall_ms: i64,
}

impl Deadline {
    /// `after` from now.
    pub(crate) fn after(after: Duration) -> Deadline {
        let ms = i64::try_from(after.as_millis()).unwrap_or(i64::MAX);
        Deadline { at: tokio::time::Instant::now() + after, wall_ms: crate::store::now_ms().saturating_add(ms) }
    }

    /// At `wall_ms` (a recorded deadline; one already past is now).
    pub(crate) fn at_wall(wall_ms: i64) -> Deadline {
        let left = u64::try_from(wall_ms.saturating_sub(crate::store::now_ms())).unwrap_or(0);
        Deadline { at: tokio::time::Instant::now() + Duration::from_millis(left), wall_ms }
    }

    /// The earlier of two deadlines.
    pub(crate) fn min(a: Option<Deadline>, b: Option<Deadline>) -> Option<Deadline> {
        match (a, b) {
            (Some(a), Some(b)) => Some(if b.wall_ms < a.wall_ms { b } else { a }),
            (a, b) => a.or(b),
        }
    }
}

/// See the module docs.
pub(crate) struct Control {
    status: AtomicU8,
    flags: AtomicU8,
    /// The first failure, set with `FAILED`.
    error: Mutex<Option<AgentError>>,
    stop: Notify,
    ended: Notify,
    tasks: AtomicUsize,
    tasks_done: Notify,
    started: Instant,
    /// The run's length in nanoseconds once over; `u64::MAX` while it goes on.
    finished_after: AtomicU64,
    /// Subscribers were told the run is over (or nobody was subscribed to be told).
    announced: AtomicBool,
    deadline: Option<Deadline>,
}

impl Control {
    /// A running run, started now.
    pub(crate) fn new() -> Control {
        Control {
            status: AtomicU8::new(AgentStatus::Running as u8),
            flags: AtomicU8::new(0),
            error: Mutex::new(None),
            stop: Notify::new(),
            ended: Notify::new(),
            tasks: AtomicUsize::new(0),
            tasks_done: Notify::new(),
            started: Instant::now(),
            finished_after: AtomicU64::new(u64::MAX),
            announced: AtomicBool::new(false),
            deadline: None,
        }
    }

    /// Give the run its deadline (before it starts).
    pub(crate) fn set_deadline(&mut self, deadline: Option<Deadline>) {
        self.deadline = deadline;
    }

    /// The run's deadline, if it has one.
    #[inline]
    pub(crate) fn deadline(&self) -> Option<Deadline> {
        self.deadline
    }

    #[inline]
    pub(crate) fn status(&self) -> AgentStatus {
        AgentStatus::from_u8(self.status.load(Relaxed))
    }

    #[inline]
    fn has(&self, flag: u8) -> bool {
        self.flags.load(Relaxed) & flag != 0
    }

    /// Leave `Running` for `to`; `false` if the run had left it already.
    pub(crate) fn end_with(&self, to: AgentStatus) -> bool {
        self.status.compare_exchange(AgentStatus::Running as u8, to as u8, Relaxed, Relaxed).is_ok()
    }

    /// Store `error` as the run's failure and end it `Failed`, unless it already ended;
    /// `true` if this was the first.
    pub(crate) fn record_error(&self, error: AgentError) -> bool {
        self.record_end(error, AgentStatus::Failed)
    }

    /// Store `error` as the run's failure and end it `to` (a durable run that lost its
    /// ownership ends `Cancelled`), unless it already ended; `true` if this was the first.
    pub(crate) fn record_end(&self, error: AgentError, to: AgentStatus) -> bool {
        let mut slot = self.error.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_some() || self.status().is_finished() {
            return false;
        }
        *slot = Some(error);
        self.flags.fetch_or(FAILED, Relaxed);
        self.status.store(to as u8, Relaxed);
        true
    }

    /// Start no further state (running ones may finish).
    pub(crate) fn hold(&self) {
        self.flags.fetch_or(HOLD, Relaxed);
    }

    /// Drop every branch: hold, and wake those racing [`Control::stopped`].
    pub(crate) fn stop(&self) {
        self.flags.fetch_or(HOLD | STOP, SeqCst);
        self.stop.notify_waiters();
    }

    /// Leave `Running` for `Paused` and hold; `false` if the run had left `Running`.
    pub(crate) fn pause(&self) -> bool {
        if !self.end_with(AgentStatus::Paused) {
            return false;
        }
        // SeqCst with `finish`: either it sees a pause to wake, or `ended` sees it over.
        self.flags.fetch_or(PAUSE | HOLD, SeqCst);
        true
    }

    /// Whether a pause was asked for.
    #[inline]
    pub(crate) fn is_pausing(&self) -> bool {
        self.has(PAUSE)
    }

    /// Whether no further state may start: one relaxed load, made before every state.
    #[inline]
    pub(crate) fn is_stopping(&self) -> bool {
        self.has(HOLD)
    }

    /// Ready once the run is stopped for good (it failed, was cancelled, or its cleanup
    /// time ran out; not when pausing or at the deadline, where running states may finish):
    /// what every branch task races its work against, dropping it.
    pub(crate) async fn stopped(&self) {
        loop {
            // Made before the check: a `notify_waiters` after it wakes this future.
            let notified = self.stop.notified();
            if self.flags.load(SeqCst) & STOP != 0 {
                return;
            }
            notified.await;
        }
    }

    /// Wait until the run is over.
    pub(crate) async fn ended(&self) {
        self.flags.fetch_or(WATCHED, SeqCst);
        loop {
            let notified = self.ended.notified();
            if self.finished_after.load(SeqCst) != u64::MAX {
                return;
            }
            notified.await;
        }
    }

    /// Count `n` branch tasks about to be spawned.
    #[inline]
    pub(crate) fn tasks_started(&self, n: usize) {
        self.tasks.fetch_add(n, Relaxed);
    }

    /// Whether no spawned task is alive: called by the root branch, which alone spawns
    /// while it is the only task, this says no other branch can be writing the run's
    /// counters. Acquire: what ended tasks wrote before counting out is seen.
    #[inline]
    pub(crate) fn runs_alone(&self) -> bool {
        self.tasks.load(Acquire) == 0
    }

    /// A spawned task ended.
    pub(crate) fn task_ended(&self) {
        // Release: pairs with `runs_alone`.
        if self.tasks.fetch_sub(1, Release) == 1 {
            self.tasks_done.notify_one();
        }
    }

    /// Wait until no spawned branch task is alive.
    pub(crate) async fn tasks_finished(&self) {
        loop {
            let notified = self.tasks_done.notified();
            if self.tasks.load(Relaxed) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// The run is over: `Completed` unless it ended otherwise; wakes those waiting for the
    /// end; the run's failure, if it failed.
    pub(crate) fn finish(&self) -> Option<AgentError> {
        self.end_with(AgentStatus::Completed);
        let nanos = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
        self.finished_after.store(nanos, SeqCst);
        let flags = self.flags.load(SeqCst);
        if flags & (PAUSE | WATCHED) != 0 {
            self.ended.notify_waiters();
        }
        if flags & FAILED == 0 {
            return None;
        }
        self.error.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    /// Whether the run is over (`finish` was called). `SeqCst`: pairs with a subscriber
    /// counted before it looks (see the module docs).
    pub(crate) fn is_over(&self) -> bool {
        self.finished_after.load(SeqCst) != u64::MAX
    }

    /// Subscribers have been told the run is over.
    pub(crate) fn announce_end(&self) {
        self.announced.store(true, Release);
    }

    /// Whether subscribers have been told the run is over: what was sent them then is in
    /// their buffers.
    pub(crate) fn end_announced(&self) -> bool {
        self.announced.load(Acquire)
    }

    /// How long the run took, or has taken so far.
    pub(crate) fn elapsed(&self) -> Duration {
        match self.finished_after.load(Relaxed) {
            u64::MAX => self.started.elapsed(),
            nanos => Duration::from_nanos(nanos),
        }
    }
}
