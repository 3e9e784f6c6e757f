//! A run's per-state counters: statuses, completions, failures, retries, the tokens at the
//! top level, and what a restored instance resumes with.
//!
//! Invariants:
//! - Every counter is an atomic indexed by state, so recording takes no lock; a counter
//!   only grows (statuses and the resume/attempt bookkeeping aside).
//! - The order of first completions is a sequence number taken once per state
//!   (`first_completed`, 1-based; 0 while the state never completed).
//! - `cancel_epoch` grows with every `cancel_state`: an instance started under an older
//!   epoch is cancelled; `state_cancelled` wakes the instances to look.
//! - `steps` counts states started only when the program has `max_steps` (or a restored
//!   run carries it); otherwise it is derived from the counters.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use agent_core::{AttemptSpan, StateStatus};
use tokio::sync::Notify;

/// The most attempt spans a state's record keeps.
pub(crate) const MAX_SPANS: usize = 16;

/// The most characters of an attempt's error a state's record keeps.
pub(crate) const MAX_ERROR: usize = 2_000;

/// The bit of [`StateCounters::held`] saying an attempt held resources.
pub(crate) const HELD: u64 = 1 << 63;

/// One state's counters (see the module docs).
pub(crate) struct StateCounters {
    pub status: AtomicU8,
    pub completed: AtomicU32,
    pub failed: AtomicU32,
    /// Times an attempt was preempted and re-queued.
    pub preempted: AtomicU32,
    /// Bumped by `cancel_state`: an instance started under an older epoch is cancelled.
    pub cancel_epoch: AtomicU32,
    /// Retries made (attempts after the first).
    pub retries: AtomicU32,
    /// Time spent waiting for resources, in nanoseconds.
    pub resource_wait: AtomicU64,
    /// What the latest attempt held from a pool: [`HELD`] once it held anything, and bit
    /// `d` for each GPU device `d` below 63 it used.
    pub held: AtomicU64,
    /// How many times an attempt's error was recorded (checkpoints compare it to see that
    /// `error` changed), and the latest's message.
    pub errors: AtomicU32,
    pub error: Mutex<Option<Arc<str>>>,
    /// How many attempt spans were recorded (checkpoints compare it), and the latest
    /// [`MAX_SPANS`].
    pub span_count: AtomicU32,
    pub spans: Mutex<VecDeque<AttemptSpan>>,
    /// 1 + the order in which this state first completed; 0 while it never has.
    pub first_completed: AtomicU32,
    /// Tokens at this state at the top level, outside the root slot (see `frontier`).
    pub at_top: AtomicU32,
    /// Attempts an instance in its retry loop has made so far (0: none), for checkpoints.
    pub attempts_made: AtomicU32,
    /// Attempts made before a restore, taken by the first instance that starts: it goes on
    /// with the rest of its retry budget.
    pub resumed_attempts: AtomicU32,
}

impl StateCounters {
    fn new() -> StateCounters {
        StateCounters {
            status: AtomicU8::new(StateStatus::Pending as u8),
            completed: AtomicU32::new(0),
            failed: AtomicU32::new(0),
            preempted: AtomicU32::new(0),
            cancel_epoch: AtomicU32::new(0),
            retries: AtomicU32::new(0),
            resource_wait: AtomicU64::new(0),
            held: AtomicU64::new(0),
            errors: AtomicU32::new(0),
            error: Mutex::new(None),
            span_count: AtomicU32::new(0),
            spans: Mutex::new(VecDeque::new()),
            first_completed: AtomicU32::new(0),
            at_top: AtomicU32::new(0),
            attempts_made: AtomicU32::new(0),
            resumed_attempts: AtomicU32::new(0),
        }
    }

    /// The state's status now.
    #[inline]
    pub(crate) fn status(&self) -> StateStatus {
        StateStatus::from_u8(self.status.load(Relaxed))
    }
}

/// Every state's counters, and the run-wide ones (see the module docs). Derefs to the
/// per-state slice, indexed by state.
pub(crate) struct Counters {
    states: Box<[StateCounters]>,
    /// How many distinct states have completed (orders `StateCounters::first_completed`).
    distinct_completed: AtomicU32,
    /// States started; counted only when the program has `max_steps`.
    steps: AtomicU64,
    /// Time states spent waiting for human input, in nanoseconds.
    input_wait: AtomicU64,
    /// Woken by `cancel_state` (and by a pause); instances re-check their `cancel_epoch`.
    pub state_cancelled: Notify,
}

impl std::ops::Deref for Counters {
    type Target = [StateCounters];

    #[inline]
    fn deref(&self) -> &[StateCounters] {
        &self.states
    }
}

impl Counters {
    /// The counters of `n` states, all pending.
    pub(crate) fn new(n: usize) -> Counters {
        Counters {
            states: (0..n).map(|_| StateCounters::new()).collect(),
            distinct_completed: AtomicU32::new(0),
            steps: AtomicU64::new(0),
            input_wait: AtomicU64::new(0),
            state_cancelled: Notify::new(),
        }
    }

    #[inline]
    pub(crate) fn set_status(&self, state: usize, s: StateStatus) {
        // Many branches running one state write the same status: a load first keeps the
        // cache line shared between workers instead of bouncing it on every write.
        let status = &self.states[state].status;
        if status.load(Relaxed) != s as u8 {
            status.store(s as u8, Relaxed);
        }
    }

    /// Count a completion of `state`. `alone`: no one else can count at the same time (see
    /// `Run::runs_alone`), so a plain load and store does what an atomic add (a locked
    /// instruction, about a tenth of a chain's transition) would.
    #[inline]
    pub(crate) fn record_completion(&self, state: usize, alone: bool) {
        let c = &self.states[state];
        self.set_status(state, StateStatus::Completed);
        let before = if alone {
            let n = c.completed.load(Relaxed);
            c.completed.store(n + 1, Relaxed);
            n
        } else {
            c.completed.fetch_add(1, Relaxed)
        };
        if before == 0 {
            c.first_completed.store(self.distinct_completed.fetch_add(1, Relaxed) + 1, Relaxed);
        }
    }

    /// Count a failed attempt; `status` is `Failed` or `Timeout`.
    pub(crate) fn record_failure(&self, state: usize, status: StateStatus) {
        let c = &self.states[state];
        c.status.store(status as u8, Relaxed);
        c.failed.fetch_add(1, Relaxed);
    }

    pub(crate) fn record_retry(&self, state: usize) {
        self.states[state].retries.fetch_add(1, Relaxed);
    }

    pub(crate) fn record_preemption(&self, state: usize) {
        self.states[state].preempted.fetch_add(1, Relaxed);
    }

    pub(crate) fn record_resource_wait(&self, state: usize, waited: Duration) {
        let nanos = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        self.states[state].resource_wait.fetch_add(nanos, Relaxed);
    }

    /// Note what an attempt of `state` was granted: it held resources, on `gpu_ids`.
    pub(crate) fn record_held(&self, state: usize, gpu_ids: &[usize]) {
        let mask = gpu_ids.iter().filter(|&&d| d < 63).fold(HELD, |m, &d| m | (1 << d));
        self.states[state].held.store(mask, Relaxed);
    }

    /// Note the error of a failed attempt of `state` (cut to [`MAX_ERROR`] characters).
    pub(crate) fn record_error(&self, state: usize, message: &str) {
        let cut = match message.char_indices().nth(MAX_ERROR) {
            Some((at, _)) => &message[..at],
            None => message,
        };
        let c = &self.states[state];
        *c.error.lock().unwrap_or_else(PoisonError::into_inner) = Some(cut.into());
        c.errors.fetch_add(1, Relaxed);
    }

    /// Note an attempt of `state` that ended, keeping the latest [`MAX_SPANS`].
    pub(crate) fn record_span(&self, state: usize, span: AttemptSpan) {
        let c = &self.states[state];
        let mut spans = c.spans.lock().unwrap_or_else(PoisonError::into_inner);
        if spans.len() == MAX_SPANS {
            spans.pop_front();
        }
        spans.push_back(span);
        c.span_count.fetch_add(1, Relaxed);
    }

    /// The latest attempt spans of `state`, oldest first.
    pub(crate) fn spans(&self, state: usize) -> Vec<AttemptSpan> {
        self.states[state].spans.lock().unwrap_or_else(PoisonError::into_inner).iter().copied().collect()
    }

    /// Put back the spans a checkpoint recorded for `state` (its latest [`MAX_SPANS`]).
    pub(crate) fn restore_spans(&self, state: usize, spans: &[AttemptSpan]) {
        let c = &self.states[state];
        let kept = &spans[spans.len().saturating_sub(MAX_SPANS)..];
        *c.spans.lock().unwrap_or_else(PoisonError::into_inner) = kept.iter().copied().collect();
        c.span_count.store(u32::from(!kept.is_empty()), Relaxed);
    }

    /// The latest error noted for `state`.
    pub(crate) fn error(&self, state: usize) -> Option<Arc<str>> {
        self.states[state].error.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Put back the error a checkpoint recorded for `state`.
    pub(crate) fn restore_error(&self, state: usize, message: Option<&str>) {
        let c = &self.states[state];
        *c.error.lock().unwrap_or_else(PoisonError::into_inner) = message.map(Into::into);
        c.errors.store(u32::from(message.is_some()), Relaxed);
    }

    pub(crate) fn record_input_wait(&self, waited: Duration) {
        let nanos = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        self.input_wait.fetch_add(nanos, Relaxed);
    }

    /// Time states spent waiting for human input.
    pub(crate) fn input_wait(&self) -> Duration {
        Duration::from_nanos(self.input_wait.load(Relaxed))
    }

    /// Count a state started (a program with `max_steps`); the count with it.
    #[inline]
    pub(crate) fn count_step(&self) -> u64 {
        self.steps.fetch_add(1, Relaxed) + 1
    }

    /// States started, as counted.
    pub(crate) fn steps(&self) -> u64 {
        self.steps.load(Relaxed)
    }

    /// Go on from `steps` started (a restored run).
    pub(crate) fn restore_steps(&self, steps: u64) {
        self.steps.store(steps, Relaxed);
    }

    /// States completed before, in the order of their first completion (a restored run).
    pub(crate) fn restore_completion_order(&self, order: impl Iterator<Item = usize>) {
        for s in order {
            let seq = self.distinct_completed.fetch_add(1, Relaxed) + 1;
            self.states[s].first_completed.store(seq, Relaxed);
        }
    }

    /// The states that completed, in the order of their first completion.
    pub(crate) fn completion_order(&self) -> Vec<usize> {
        let mut order: Vec<(u32, usize)> = (self.states.iter().enumerate())
            .filter_map(|(i, c)| match c.first_completed.load(Relaxed) {
                0 => None,
                seq => Some((seq, i)),
            })
            .collect();
        order.sort_unstable();
        order.into_iter().map(|(_, i)| i).collect()
    }

    /// The states running now.
    pub(crate) fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (self.states.iter().enumerate()).filter(|(_, c)| c.status() == StateStatus::Running).map(|(i, _)| i)
    }

    /// States that were running, ready, blocked or waiting to retry read `Cancelled` (the
    /// run was cancelled).
    pub(crate) fn mark_cancelled(&self) {
        for c in self.states.iter() {
            let now = c.status.load(Relaxed);
            if matches!(
                StateStatus::from_u8(now),
                StateStatus::Running | StateStatus::Ready | StateStatus::Blocked | StateStatus::Retrying
            ) {
                let _ = c.status.compare_exchange(now, StateStatus::Cancelled as u8, Relaxed, Relaxed);
            }
        }
    }

    /// Cancel the running instances of `state`.
    pub(crate) fn cancel_state(&self, state: usize) {
        self.states[state].cancel_epoch.fetch_add(1, Relaxed);
        self.state_cancelled.notify_waiters();
    }

    /// Whether the instance of `state` started under `epoch` has been cancelled.
    #[inline]
    pub(crate) fn is_state_cancelled(&self, state: usize, epoch: u32) -> bool {
        self.states[state].cancel_epoch.load(Relaxed) != epoch
    }

    /// A token now stands at `state` at the top level (inside a transition).
    #[inline]
    pub(crate) fn top_enter(&self, state: usize) {
        self.states[state].at_top.fetch_add(1, Relaxed);
    }

    /// `n` tokens stand at `state` at the top level (a restored run).
    pub(crate) fn top_add(&self, state: usize, n: u32) {
        self.states[state].at_top.fetch_add(n, Relaxed);
    }

    /// A token left `state` at the top level (inside a transition).
    #[inline]
    pub(crate) fn top_leave(&self, state: usize) {
        self.states[state].at_top.fetch_sub(1, Relaxed);
    }
}
