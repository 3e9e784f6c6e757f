//! Polling a state's future: the thread's note of what it polls, tokio's cooperative budget,
//! cancellation by `cancel_state`, and the watched path (events, timings, tracing).
//!
//! Invariants:
//! - Every poll of a state's future goes through [`poll_state`]: the plain path's inline
//!   polls in `drive`, the watched path ([`observed`]) and the guarded path's attempts
//!   ([`Cancellable`]) alike. It notes the state this thread polls and accounts for the
//!   budget, so no path can forget either.
//! - A state that completes in its first poll never registers for cancellation: a chain of
//!   quick states pays one relaxed load per state for it.
//! - A pending state is never polled twice in one wake-up (a `yield_now` in it yields).
//! - Every `BUDGET_EVERY` states a thread starts, a state's first poll takes one unit of
//!   tokio's cooperative budget first: states that never wait cannot keep a worker.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::task::Poll;

use agent_core::{PanicError, StateStatus};
use tokio::sync::futures::Notified;
use tracing::Instrument;

use super::attempt;
use super::step::trace_result;
use crate::events::EventKind;
use crate::run::Run;
use crate::timing::UNTIMED;

/// A thread takes one unit of tokio's cooperative budget every this many states it starts
/// (a task has 128 units a poll: a branch of states that never wait yields every 4,096).
const BUDGET_EVERY: u8 = 32;

/// What a thread keeps about the states it polls, in one thread-local (one lookup for both).
struct ThisThread {
    /// States started on this thread since it last took budget. Counted per thread rather
    /// than in the branch, whose future has no room left in its size step for a counter.
    steps: std::cell::Cell<u8>,
    /// The run (by address) and state this thread is polling now, or polled last: a request
    /// for human input, made inside the poll, learns from it which state asks.
    polling: std::cell::Cell<(usize, u32)>,
}

thread_local! {
    static THIS_THREAD: ThisThread =
        const { ThisThread { steps: std::cell::Cell::new(0), polling: std::cell::Cell::new((0, 0)) } };
}

impl ThisThread {
    /// Count a state started; `true` every [`BUDGET_EVERY`] states.
    #[inline(always)]
    fn count_step(&self) -> bool {
        let n = self.steps.get().wrapping_add(1);
        let take = n == BUDGET_EVERY;
        self.steps.set(if take { 0 } else { n });
        take
    }

    /// This thread is about to poll state `pos` of `run`.
    #[inline(always)]
    fn polling(&self, run: &Run, pos: usize) {
        self.polling.set((run as *const Run as usize, pos as u32));
    }
}

/// This thread is about to poll state `pos` of `run`.
#[inline(always)]
fn polling(run: &Run, pos: usize) {
    THIS_THREAD.with(|t| t.polling(run, pos));
}

/// A plain state's first poll starts: count it and note it, in one lookup; `true` when its
/// poll takes a unit of budget first (every [`BUDGET_EVERY`] states).
#[inline(always)]
fn start_poll(run: &Run, pos: usize) -> bool {
    THIS_THREAD.with(|t| {
        t.polling(run, pos);
        t.count_step()
    })
}

/// The state of `run` this thread is polling, if it is polling one of `run`'s (a request for
/// human input made from a state's body; a body on the blocking pool is not known).
pub(crate) fn polled_state(run: &Run) -> Option<usize> {
    let (at, pos) = THIS_THREAD.with(|t| t.polling.get());
    (at == run as *const Run as usize && (pos as usize) < run.program.states.len()).then_some(pos as usize)
}

/// One poll of state `pos`'s future: the one place a state's future is polled.
///
/// `first`: the state's first poll, which counts it on this thread and notes it in one
/// thread-local lookup (see [`start_poll`]), and every [`BUDGET_EVERY`] states takes a unit of
/// tokio's cooperative budget first. A later poll only notes it.
///
/// `Pending`: the task has used its budget and yields (it is woken at once), the future not
/// polled; otherwise the future's own poll.
#[inline(always)]
pub(super) fn poll_state<F: Future + Unpin>(
    run: &Run,
    pos: usize,
    first: bool,
    fut: &mut F,
    cx: &mut std::task::Context<'_>,
) -> Poll<Poll<F::Output>> {
    if first {
        if start_poll(run, pos) && take_budget(cx).is_pending() {
            return Poll::Pending;
        }
    } else {
        polling(run, pos);
    }
    Poll::Ready(Pin::new(fut).poll(cx))
}

/// A plain state starts while someone watches: its start event and its clock.
#[cold]
#[inline(never)]
fn watch_start(run: &Run, pos: usize) -> u64 {
    // A `u64` from the run's epoch rather than an `Instant`: see `timing::Timings`.
    if run.emitting() {
        run.emit(EventKind::StateStarted { state: run.state_name(pos), attempt: 1 });
    }
    match &run.sinks.timing {
        Some(t) => t.attempt_started(pos),
        None => UNTIMED,
    }
}

/// A plain state's attempt ended (not cancelled) while someone watches: its duration, and
/// its completion or failure event.
#[cold]
#[inline(never)]
fn watch_end(run: &Run, pos: usize, started: u64, outcome: &attempt::Outcome) {
    let duration = match &run.sinks.timing {
        Some(t) if started != UNTIMED => Some(t.attempt_ended(pos, started)),
        _ => None,
    };
    if run.emitting() {
        crate::durable::announce_changes(run);
        run.emit(attempt::ended_event(run, pos, 1, outcome, duration));
    }
}

/// A plain state's attempt, watched: its start and end events, its timing, its span and
/// its transition traced, each only if asked for.
pub(super) async fn observed<F: Future<Output = attempt::Outcome>>(
    run: &Run,
    pos: usize,
    epoch: u32,
    fut: F,
    cancelled: &mut bool,
) -> attempt::Outcome {
    let watch = if run.watched() { Some(watch_start(run, pos)) } else { None };
    let mut cancel = None;
    // Counted and budgeted in its first poll, as on the unwatched path (see `poll_state`).
    let mut first = true;
    let outcome = if tracing::dispatcher::has_been_set() {
        // One span per state attempt.
        let span = tracing::info_span!("state", state = &*run.program.states[pos].name, attempt = 1u32);
        let mut fut = std::pin::pin!(fut.instrument(span));
        std::future::poll_fn(|cx| {
            poll_cancellable(run, pos, epoch, std::mem::take(&mut first), &mut fut, &mut cancel, cancelled, cx)
        })
        .await
    } else {
        let mut fut = std::pin::pin!(fut);
        std::future::poll_fn(|cx| {
            poll_cancellable(run, pos, epoch, std::mem::take(&mut first), &mut fut, &mut cancel, cancelled, cx)
        })
        .await
    };
    if *cancelled {
        return outcome;
    }
    if let Some(started) = watch {
        watch_end(run, pos, started, &outcome);
    }
    if tracing::dispatcher::has_been_set() {
        trace_result(run, pos, &outcome);
    }
    outcome
}

/// Polls a state's future to its end, or until `cancel_state` cancels this instance of
/// state `pos` (started under `epoch`): then `None`, and the future is dropped with it.
///
/// A state that completes in its first poll never registers for cancellation, so a chain
/// of quick states pays one relaxed load per state for it.
pub(super) struct Cancellable<'r, F> {
    fut: F,
    run: &'r Run,
    pos: usize,
    epoch: u32,
    /// The next poll is the first (see [`poll_state`]).
    first: bool,
    notified: Option<Pin<Box<Notified<'r>>>>,
}

impl<'r, F: Future + Unpin> Cancellable<'r, F> {
    #[inline]
    pub(super) fn new(run: &'r Run, pos: usize, epoch: u32, fut: F) -> Self {
        Cancellable { fut, run, pos, epoch, first: true, notified: None }
    }
}

/// Take one unit of the task's cooperative budget: pending (the task woken at once, so it
/// yields to the others on its thread) when the task has used its share for this poll.
#[cold]
fn take_budget(cx: &mut std::task::Context<'_>) -> Poll<()> {
    tokio::task::coop::poll_proceed(cx).map(|restore| restore.made_progress())
}

impl<F: Future + Unpin> Future for Cancellable<'_, F> {
    type Output = Option<F::Output>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let first = std::mem::take(&mut this.first);
        if let Poll::Ready(out) = std::task::ready!(poll_state(this.run, this.pos, first, &mut this.fut, cx)) {
            return Poll::Ready(Some(out));
        }
        poll_cancelled(this.run, this.pos, this.epoch, true, &mut this.notified, cx).map(|()| None)
    }
}

/// What a cancelled plain state "returned": never read, only dropped.
#[cold]
pub(super) fn cancelled_outcome() -> attempt::Outcome {
    Ok(Err(Box::new(PanicError { message: String::new() })))
}

/// One poll of a plain state's future that `cancel_state` may cancel (see [`Cancellable`]):
/// on cancellation, `cancelled` is set and the outcome is a placeholder. `first`: see
/// [`poll_state`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn poll_cancellable<'r, F: Future<Output = attempt::Outcome> + Unpin>(
    run: &'r Run,
    pos: usize,
    epoch: u32,
    first: bool,
    fut: &mut F,
    notified: &mut Option<Pin<Box<Notified<'r>>>>,
    cancelled: &mut bool,
    cx: &mut std::task::Context<'_>,
) -> Poll<attempt::Outcome> {
    if let Poll::Ready(out) = std::task::ready!(poll_state(run, pos, first, fut, cx)) {
        return Poll::Ready(out);
    }
    match poll_cancelled(run, pos, epoch, false, notified, cx) {
        Poll::Ready(()) => {
            *cancelled = true;
            Poll::Ready(cancelled_outcome())
        }
        Poll::Pending => Poll::Pending,
    }
}

/// The state's future is pending: register for `cancel_state`; ready when this instance
/// was cancelled, or when `leaves_on_pause` and the run is pausing while the state waits to
/// start (it is not running its body).
#[cold]
pub(super) fn poll_cancelled<'r>(
    run: &'r Run,
    pos: usize,
    epoch: u32,
    leaves_on_pause: bool,
    notified: &mut Option<Pin<Box<Notified<'r>>>>,
    cx: &mut std::task::Context<'_>,
) -> Poll<()> {
    loop {
        // Made before the check: a `notify_waiters` after it wakes this future.
        let n = notified.get_or_insert_with(|| Box::pin(run.states.state_cancelled.notified()));
        if run.is_state_cancelled(pos, epoch) {
            return Poll::Ready(());
        }
        if leaves_on_pause && run.is_pausing() && run.states[pos].status.load(Relaxed) != StateStatus::Running as u8 {
            return Poll::Ready(());
        }
        if n.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        *notified = None;
    }
}
