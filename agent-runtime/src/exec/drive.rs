//! A branch: the loop that runs one token's states, one after another, in one task.
//!
//! Invariants:
//! - A sequential transition never spawns: the next state runs in the same task, so a chain
//!   costs one boxed future per state and nothing else that the user did not ask for.
//! - A fan-out of n targets continues with the first target in this task and starts the
//!   other n - 1 from tasks on the current runtime (work-stealing on a multi-thread one):
//!   at most one task per branch, fewer when branches finish in their first poll, and never
//!   a branch held back by a sibling that waits (see `fan_task`).
//! - A state's panic, `Err`, bad write or unknown target fails the run through `Run::fail`;
//!   the panic never unwinds past this module.
//! - Every transition inside a group goes through `Group::arrive` / `Group::end`, which say
//!   what runs next (see `run::groups`).

use std::any::Any;
use std::borrow::Cow;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use agent_core::{AgentError, PanicError, StateError, StateResult, TimeoutError};
use futures_util::FutureExt;
use tokio::sync::futures::Notified;
use tracing::Instrument;

use super::attempt;
use super::attempt::Attempted;
use super::gate as deps;
use crate::events::EventKind;
use crate::frontier::TRANSITIONS;
use crate::run::{Group, Position};
use crate::run::{Run, TaskGuard, NO_STATE};
use super::step::{start_state, trace_result};
use crate::timing::UNTIMED;
use agent_core::StateStatus;

/// Spawn a branch task that starts at `state`.
pub(crate) fn spawn(run: &Arc<Run>, state: usize, group: Option<Arc<Group>>) {
    run.tasks_started(1);
    if run.program.has_dependencies {
        run.deps.branches_made(1);
    }
    spawn_task(branch_task(TaskGuard::new(run.clone()), state, group));
}

/// Spawn the root branch as a task of its own, from the start (a run with a deadline: a
/// state that blocks its thread then holds a worker, not the caller's future, which ends the
/// run on time).
pub(crate) fn spawn_root(run: &Arc<Run>, start: usize) {
    run.tasks_started(1);
    deps::root_started(run);
    let guard = TaskGuard::new(run.clone());
    spawn_task(async move {
        let run = &guard.run;
        tokio::select! {
            biased;
            _ = drive(run, start, None, true) => deps::branch_ended(run),
            _ = run.stopped() => {}
        }
    });
}

/// Spawn a task on the current runtime, inside the run's span when tracing is on.
fn spawn_task(task: impl Future<Output = ()> + Send + 'static) {
    if tracing::dispatcher::has_been_set() {
        // Branches stay inside the run's span (spawned tasks do not inherit it by themselves).
        tokio::spawn(task.instrument(tracing::Span::current()));
    } else {
        tokio::spawn(task);
    }
}

/// The future of one spawned branch: the branch raced against the run's cancellation.
async fn branch_task(guard: TaskGuard, state: usize, group: Option<Arc<Group>>) {
    let run = &guard.run;
    // The branch is polled first: one that finishes in its first poll never registers with
    // the cancellation token (a lock), so a fan-out of quick branches pays nothing for
    // cancellation. A cancelled run wakes pending branches, which then stop.
    tokio::select! {
        biased;
        _ = drive(run, state, group.map(Cow::Owned), false) => deps::branch_ended(run),
        _ = run.stopped() => {}
    }
}

/// A fan-out's branches still to be spawned, shared by the tasks spawned for them.
///
/// Its guard counts all those tasks in the run as one task, for as long as any of them
/// runs (each holds the `Fan` to its end, even after its branch has left the group): so a
/// branch of a fan-out touches no shared reference count but the `Fan`'s, once when its
/// task is spawned and once when it ends, not the run's nor the run's task counter.
struct Fan {
    group: Arc<Group>,
    /// The fan-out's targets, one per branch, in order.
    targets: Box<[u32]>,
    guard: TaskGuard,
}

impl Fan {
    /// A fan-out of `origin` (in `parent`) to `targets` (at least two): its group opened,
    /// its tasks counted in the run.
    fn open(run: &Arc<Run>, parent: Option<Arc<Group>>, origin: usize, targets: Vec<u32>) -> Arc<Fan> {
        debug_assert!(targets.len() > 1);
        let group = Group::open(run, parent, origin, &targets);
        run.tasks_started(1);
        Arc::new(Fan { group, targets: targets.into_boxed_slice(), guard: TaskGuard::new(run.clone()) })
    }
}

/// A fan-out some of whose targets start waiting (see `Group::deferred`): the others start
/// as usual; if none does, what the group settles into goes on in `next`.
#[cold]
fn fan_out_deferred(
    run: &Arc<Run>,
    parent: Option<Arc<Group>>,
    origin: usize,
    targets: &[u32],
    defer: &[bool],
    next: &mut Vec<Position>,
    fan: &mut Option<Arc<Fan>>,
) {
    let (mut running, mut waiting) = (Vec::new(), Vec::new());
    for (&t, &d) in targets.iter().zip(defer) {
        if d {
            run.set_state_status(t as usize, StateStatus::Blocked);
            waiting.push(t);
        } else {
            run.set_state_status(t as usize, StateStatus::Ready);
            running.push(t);
        }
    }
    let group = Group::open_deferred(run, parent, origin, &running, &waiting, next);
    match running.len() {
        0 => {}
        1 => next.push((Some(group), running[0] as usize)),
        _ => {
            run.tasks_started(1);
            *fan =
                Some(Arc::new(Fan { group, targets: running.into_boxed_slice(), guard: TaskGuard::new(run.clone()) }));
        }
    }
}

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
/// poll takes a unit of budget first (see [`count_step`]).
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

/// Count a state started on this thread; `true` every [`BUDGET_EVERY`] states, when its first
/// poll takes a unit of budget first.
#[inline(always)]
fn count_step() -> bool {
    THIS_THREAD.with(ThisThread::count_step)
}

/// How long a fan-out's task runs quick branches one after another before it hands half of
/// what is left to another task, which an idle worker can steal.
const SLICE: Duration = Duration::from_micros(20);

/// A branch that runs this long by itself is given a task of its own for each sibling left:
/// beside it, a task's cost (about a microsecond) is small, and tasks spread best.
const HEAVY: Duration = Duration::from_micros(5);

/// The future of a task that runs the branches `lo..hi` of a fan-out.
///
/// It runs them one after another in this one task for as long as each finishes in its
/// first poll (a branch that ends or waits at the join straight away): a task per branch
/// costs more than such a branch itself (tokio allocates a 128-byte aligned cell for each).
/// Branches still overlap as they must:
/// - a branch that waits (for I/O, a timer, resources, a person) is kept in this task, and
///   what is left of the range goes at once to two new tasks, which do the same;
/// - after a branch that ran [`HEAVY`] or longer, the rest is split into a task per branch
///   (by halving, so the spawning spreads over the workers): CPU-bound branches balance
///   over the workers as well as with a task each from the start;
/// - every [`SLICE`] of quick branches, half of what is left goes to a new task and this
///   one yields, so another worker can take one of the two (tokio's LIFO slot is not stolen
///   from: the yield is what puts work where an idle worker finds it), and no task keeps a
///   worker for long.
///
/// A task that finds the run stopping starts nothing more: the branches it held keep their
/// tokens in the group, where a checkpoint finds them.
async fn fan_task(fan: Arc<Fan>, mut lo: u32, mut hi: u32) {
    let run = &fan.guard.run;
    // When this slice began, and when the last branch began.
    let mut slice = Instant::now();
    let mut last = slice;
    while lo < hi {
        if run.is_stopping() {
            return;
        }
        let state = fan.targets[lo as usize] as usize;
        lo += 1;
        // Boxed: the task's future stays small (tokio moves it by `memcpy` several times
        // between `spawn` and its task cell, and sizes the cell in steps of 128 bytes, which
        // a waiting branch holds); the box is not moved.
        let mut branch = Box::pin(drive(run, state, Some(Cow::Borrowed(&fan.group)), false));
        let waits = std::future::poll_fn(|cx| Poll::Ready(branch.as_mut().poll(cx).is_pending())).await;
        if !waits {
            deps::branch_ended(run);
        } else {
            // Siblings must not wait behind this branch: the rest of the range goes on in
            // other tasks, and this one waits for the branch, or for the run to stop.
            hand_off(&fan, lo, hi);
            // Boxed too: most branches of a wide fan-out never wait, and this task's cell
            // stays in a smaller step for those that do.
            let mut stopped = Box::pin(run.stopped());
            // The branch was just polled with this task's waker: it is polled again only
            // once this task has been woken, or a `yield_now` in it would not yield.
            let mut polled = true;
            let ended = std::future::poll_fn(|cx| {
                if !std::mem::take(&mut polled) && branch.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(true);
                }
                stopped.as_mut().poll(cx).map(|()| false)
            })
            .await;
            if ended {
                deps::branch_ended(run);
            }
            return;
        }
        if hi - lo > 1 {
            let now = Instant::now();
            if now - last >= HEAVY {
                // Branches this long pay little for a task each, and tasks spread best
                // over the workers: split the rest down to one branch a task.
                while hi - lo > 1 {
                    hi = split_off(&fan, lo, hi);
                }
            } else if now - slice >= SLICE {
                hi = split_off(&fan, lo, hi);
                tokio::task::yield_now().await;
                slice = Instant::now();
                last = slice;
                continue;
            }
            last = now;
        }
    }
}

/// Spawn a task for the upper half of the range `lo..hi` (at least two branches); returns
/// where the lower half, kept, ends.
fn split_off(fan: &Arc<Fan>, lo: u32, hi: u32) -> u32 {
    let mid = lo + (hi - lo) / 2;
    spawn_task(fan_task(fan.clone(), mid, hi));
    mid
}

/// Spawn what is left of a fan-out's range, `lo..hi`, as two tasks (one if a single branch
/// is left), so that a long run of waiting branches is started from both halves at once.
fn hand_off(fan: &Arc<Fan>, lo: u32, hi: u32) {
    if hi - lo > 1 {
        let mid = split_off(fan, lo, hi);
        spawn_task(fan_task(fan.clone(), lo, mid));
    } else if lo < hi {
        spawn_task(fan_task(fan.clone(), lo, hi));
    }
}

/// Run states from `pos` until this branch ends, waits at a join, or the run stops.
///
/// The caller calls `deps::branch_ended` once it returns (not when it is dropped: a branch
/// is dropped only when its run stops).
///
/// `rooted`: this is the root task, and its position is published in `Run::root_slot`
/// (see `frontier`); every other branch's position is counted by `at_top` or its group.
/// A branch that stops (the run failed, was cancelled, timed out or paused) leaves its
/// position published: that is where the run goes on when restored.
///
/// Borrows the run (no reference-count traffic per branch on the run's shared `Arc`).
pub(crate) async fn drive(run: &Arc<Run>, mut pos: usize, mut group: Option<Cow<'_, Arc<Group>>>, mut rooted: bool) {
    let prog = &*run.program;
    let mut next: Vec<Position> = Vec::new();
    // A fan-out just made, whose branches are to be spawned (see `take_next`).
    let mut fan: Option<Arc<Fan>> = None;
    // A durable run's completion not yet recorded: recorded before any successor starts.
    let mut unrecorded = false;
    // Positions in `next` to go on from once a durable run has recorded the transition.
    let mut deferred = false;
    // Go on from the positions in `next`: the first in this task, the others spawned; the
    // branch ends if there are none. The transition is over (`entered` is dropped) before a
    // durable run records it.
    macro_rules! go_on {
        ($entered:ident) => {
            drop($entered);
            if unrecorded {
                // Recorded at the top of the loop (one await point, so the branch future
                // stays small), then `next` is taken.
                deferred = true;
                continue;
            }
            match take_next(run, &mut next, &mut fan) {
                Some((g, s)) => {
                    group = g.map(Cow::Owned);
                    pos = s;
                    continue;
                }
                None => return,
            }
        };
    }
    loop {
        if std::mem::take(&mut unrecorded) && !Box::pin(record(run)).await {
            return;
        }
        if std::mem::take(&mut deferred) {
            match take_next(run, &mut next, &mut fan) {
                Some((g, s)) => {
                    group = g.map(Cow::Owned);
                    pos = s;
                }
                None => return,
            }
        }
        if run.is_stopping() {
            return;
        }
        // States that never wait would otherwise keep this thread for good: nothing else on
        // it (the run's deadline, a cancellation from another task) would ever run. Every
        // few states, the state's first poll takes one unit of tokio's cooperative budget
        // first, and yields once the task has used its share (see `take_budget`).
        let state = &prog.states[pos];
        let epoch = run.states[pos].cancel_epoch.load(Relaxed);
        let mut attempts = 1;
        // Set when the state was cancelled (by `cancel_state`, or at its gate by a failed
        // dependency); its outcome is then a placeholder. A flag rather than an `Option`
        // around the outcome: the outcome stays where the poll wrote it.
        let mut cancelled = false;
        // Held while a plain state runs (`max_concurrent`); declared out here so that the
        // plain path's outcome is written where it is read (see below).
        let mut permit = None;
        let outcome = if let Some(guarded) = &state.guarded {
            // Dependencies, resources, a timeout, retries, rate limits or a blocking body:
            // the slow path, boxed so that the branch future of plain states does not carry
            // it (it takes its `max_concurrent` permit itself, after its gate).
            match Cancellable::new(run, pos, epoch, count_step(), Box::pin(attempt::run(run, pos, guarded))).await {
                Some(Attempted::Done(outcome, n)) => {
                    attempts = n;
                    outcome
                }
                Some(Attempted::Stop) => return,
                // Left its queue because the run is pausing: it starts again on resume.
                None if !run.is_state_cancelled(pos, epoch) => return,
                Some(Attempted::Cancelled) | None => {
                    cancelled = true;
                    cancelled_outcome()
                }
            }
        } else {
            if !start_state(run, pos) {
                return;
            }
            // The state runs inline in this loop (no nested future per step: its result is
            // moved once, not through every layer of a helper future).
            // Boxed so that a branch without `max_concurrent` does not carry the acquire.
            permit = match &run.semaphore {
                Some(s) => match Box::pin(s.acquire()).await {
                    Ok(_) if run.is_stopping() => return,
                    Ok(p) => Some(p),
                    Err(_) => return,
                },
                None => None,
            };
            // `call` never panics (a closure's synchronous panic is deferred into its
            // future), so one catch around the poll sees every panic of the state.
            let mut fut = AssertUnwindSafe(state.handler.call(&run.ctx)).catch_unwind();
            let mut cancel = None;
            // The block's value, not a local moved out after the permit's drop: that move was
            // a 32-byte copy reloading, as two 16-byte loads, the 8-byte stores just made (a
            // failed store-to-load forwarding, about a third of this loop's own time).
            if run.watched() || tracing::dispatcher::has_been_set() {
                // Events, timings or tracing: built only if someone subscribed, timings are
                // on, or a tracing subscriber was ever installed; otherwise this costs a
                // relaxed load, an `Option` check and an atomic load. Boxed, so that the
                // branch future of an unwatched run does not carry it.
                Box::pin(observed(run, pos, epoch, fut, &mut cancelled)).await
            } else {
                // Polled here rather than through `Cancellable`, so that the state's future
                // is dropped inline (the chain's path).
                // The first poll is made bare: a state that completes in it (the common quick
                // state) never touches the cancellation machinery.
                match std::future::poll_fn(|cx| {
                    // Counted here, not held across the await: the branch future has no
                    // room for one more byte. A poll after a yield counts again, harmlessly.
                    if start_poll(run, pos) && take_budget(cx).is_pending() {
                        return Poll::Pending;
                    }
                    Poll::Ready(Pin::new(&mut fut).poll(cx))
                })
                .await
                {
                    Poll::Ready(outcome) => outcome,
                    Poll::Pending => {
                        // Polled a moment ago: this first time only register for
                        // cancellation, so that a state yielding (`yield_now`) really yields.
                        let mut just_polled = true;
                        std::future::poll_fn(|cx| {
                            if std::mem::take(&mut just_polled) {
                                return match poll_cancelled(run, pos, epoch, false, &mut cancel, cx) {
                                    Poll::Ready(()) => {
                                        cancelled = true;
                                        Poll::Ready(cancelled_outcome())
                                    }
                                    Poll::Pending => Poll::Pending,
                                };
                            }
                            poll_cancellable(run, pos, epoch, &mut fut, &mut cancel, &mut cancelled, cx)
                        })
                        .await
                    }
                }
            }
        };
        drop(permit);
        if cancelled {
            // The branch ends here.
            if run.emitting() {
                run.emit(EventKind::StateCancelled { state: run.state_name(pos) });
            }
            let entered = TRANSITIONS.enter();
            run.set_state_status(pos, StateStatus::Cancelled);
            run.states[pos].attempts_made.store(0, Relaxed);
            if !state.dependents.is_empty() {
                deps::failed(run);
            }
            next.clear();
            match group.take() {
                Some(g) => g.end(run, pos, &mut next),
                None => return leave_top(run, pos, rooted),
            }
            go_on!(entered);
        }
        // The result is read where the poll wrote it, by reference: moving it out first
        // cost a stalled copy per transition (store-to-load forwarding fails on it).
        let result = match &outcome {
            Ok(Ok(result)) if !agent_core::__private::context::has_write_error(&run.ctx) => {
                run.record_completion(pos, rooted && run.runs_alone());
                unrecorded = run.sinks.durable.is_some();
                if state.dependents.is_empty() && run.deps.waiting.load(Relaxed) > 0 {
                    // A gate may wait on a condition over the context.
                    run.deps.notify();
                }
                result
            }
            _ => {
                // Retries spent: the `on_error` handler runs next, reading the failure from
                // the context, as if the state had returned its name.
                let Some(handler) = state.on_error else {
                    // The branch stops at the failed state (where a restored run resumes).
                    return fail_state(run, pos, outcome, attempts);
                };
                let entered = TRANSITIONS.enter();
                route_error(run, pos, outcome, attempts, handler);
                unrecorded = run.sinks.durable.is_some();
                next.clear();
                match &group {
                    None => {
                        move_top(run, pos, handler, rooted);
                        pos = handler;
                        continue;
                    }
                    Some(g) => arrive(run, g, pos, handler, &mut next),
                }
                go_on!(entered);
            }
        };
        next.clear();
        // Every transition but the root task's plain step publishes positions under the
        // transition lock (see `frontier`).
        let plain_step = rooted && group.is_none() && matches!(result, StateResult::Next(_));
        let entered = if plain_step && state.dependents.is_empty() { None } else { Some(TRANSITIONS.enter()) };
        match result {
            StateResult::End => match group.take() {
                Some(g) => g.end(run, pos, &mut next),
                None => leave_top(run, pos, rooted),
            },
            StateResult::Next(name) => {
                let Some(to) = prog.resolve_from(pos, name) else {
                    return unknown(run, pos, name.as_str());
                };
                if !allowed(state, to as u32) {
                    return undeclared(run, pos, name.as_str());
                }
                match &group {
                    None => {
                        if !state.dependents.is_empty() {
                            // Marked first, so the completion does not activate it twice.
                            run.set_state_status(to, StateStatus::Ready);
                            deps::completed(run, pos);
                        }
                        move_top(run, pos, to, rooted);
                        pos = to;
                        if name.is_static() {
                            // `Ok(Ok(Next(static name)))` owns nothing: skip its drop, an
                            // out-of-line walk of three nested enums, on the chain's path.
                            std::mem::forget(outcome);
                        }
                        continue;
                    }
                    Some(g) => arrive(run, g, pos, to, &mut next),
                }
            }
            StateResult::Parallel(names) => {
                let mut targets: Vec<u32> = Vec::with_capacity(names.len());
                let mut previous: Option<(&str, u32)> = None;
                for name in names {
                    // A wide fan-out often names one state many times: resolve each run of
                    // equal names once.
                    let t = match previous {
                        Some((p, t)) if p == name.as_str() => t,
                        _ => match prog.resolve(name) {
                            Some(t) if allowed(state, t as u32) => t as u32,
                            Some(_) => return undeclared(run, pos, name.as_str()),
                            None => return unknown(run, pos, name.as_str()),
                        },
                    };
                    previous = Some((name.as_str(), t));
                    targets.push(t);
                }
                match targets.len() {
                    0 => match group.take() {
                        Some(g) => g.end(run, pos, &mut next),
                        None => leave_top(run, pos, rooted),
                    },
                    1 => {
                        let to = targets[0] as usize;
                        match &group {
                            None => {
                                move_top(run, pos, to, rooted);
                                next.push((None, to));
                            }
                            Some(g) => g.arrive(run, pos, to, &mut next),
                        }
                    }
                    _ => {
                        if group.is_none() && std::mem::take(&mut rooted) {
                            // The token that fans out stays at `pos` until its group is
                            // over: counted from now on, like every token but the root's.
                            run.positions.set_root(NO_STATE);
                            run.top_enter(pos);
                        }
                        // Its branches are spawned by `go_on`, after a durable run has
                        // recorded this state.
                        match Group::deferred(prog, group.as_deref(), pos, &targets) {
                            None => {
                                for same in targets.chunk_by(|a, b| a == b) {
                                    run.set_state_status(same[0] as usize, StateStatus::Ready);
                                }
                                fan = Some(Fan::open(run, group.take().map(Cow::into_owned), pos, targets));
                            }
                            Some(defer) => {
                                let parent = group.take().map(Cow::into_owned);
                                fan_out_deferred(run, parent, pos, &targets, &defer, &mut next, &mut fan);
                            }
                        }
                    }
                }
            }
        }
        if !state.dependents.is_empty() {
            // Where this branch goes is marked first, so the completion does not activate
            // it twice.
            for &(_, s) in &next {
                run.set_state_status(s, StateStatus::Ready);
            }
            deps::completed(run, pos);
        }
        go_on!(entered);
    }
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
        run.emit(attempt::ended_event(run, pos, 1, outcome, duration));
    }
}

/// A plain state's attempt, watched: its start and end events, its timing, its span and
/// its transition traced, each only if asked for.
async fn observed<F: Future<Output = attempt::Outcome>>(
    run: &Run,
    pos: usize,
    epoch: u32,
    fut: F,
    cancelled: &mut bool,
) -> attempt::Outcome {
    let watch = if run.watched() { Some(watch_start(run, pos)) } else { None };
    let mut cancel = None;
    // The cooperative budget, as on the unwatched path (see `count_step`).
    let mut budget = count_step();
    let outcome = if tracing::dispatcher::has_been_set() {
        // One span per state attempt.
        let span = tracing::info_span!("state", state = &*run.program.states[pos].name, attempt = 1u32);
        let mut fut = std::pin::pin!(fut.instrument(span));
        std::future::poll_fn(|cx| {
            if std::mem::take(&mut budget) && take_budget(cx).is_pending() {
                return Poll::Pending;
            }
            poll_cancellable(run, pos, epoch, &mut fut, &mut cancel, cancelled, cx)
        })
        .await
    } else {
        let mut fut = std::pin::pin!(fut);
        std::future::poll_fn(|cx| {
            if std::mem::take(&mut budget) && take_budget(cx).is_pending() {
                return Poll::Pending;
            }
            poll_cancellable(run, pos, epoch, &mut fut, &mut cancel, cancelled, cx)
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

/// Record a durable run's completions before a successor starts; `false` if the store
/// failed (the run is failing).
#[cold]
async fn record(run: &Run) -> bool {
    match &run.sinks.durable {
        Some(d) => d.sync().await,
        None => true,
    }
}

/// A token moves from `from` to `to` at the top level (inside a transition, unless it is
/// the root task's).
#[inline]
fn move_top(run: &Run, from: usize, to: usize, rooted: bool) {
    if rooted {
        run.positions.set_root(to as u32);
    } else {
        run.top_leave(from);
        run.top_enter(to);
    }
}

/// A token's branch ends at `at` at the top level (inside a transition).
fn leave_top(run: &Run, at: usize, rooted: bool) {
    if rooted {
        run.positions.set_root(NO_STATE);
    } else {
        run.top_leave(at);
    }
}

/// Polls a state's future to its end, or until `cancel_state` cancels this instance of
/// state `pos` (started under `epoch`): then `None`, and the future is dropped with it.
///
/// A state that completes in its first poll never registers for cancellation, so a chain
/// of quick states pays one relaxed load per state for it.
struct Cancellable<'r, F> {
    fut: F,
    run: &'r Run,
    pos: usize,
    epoch: u32,
    /// Take a unit of cooperative budget before the first poll (see `take_budget`).
    budget: bool,
    notified: Option<Pin<Box<Notified<'r>>>>,
}

impl<'r, F: Future + Unpin> Cancellable<'r, F> {
    #[inline]
    fn new(run: &'r Run, pos: usize, epoch: u32, budget: bool, fut: F) -> Self {
        Cancellable { fut, run, pos, epoch, budget, notified: None }
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
        if std::mem::take(&mut this.budget) && take_budget(cx).is_pending() {
            return Poll::Pending;
        }
        polling(this.run, this.pos);
        if let Poll::Ready(out) = Pin::new(&mut this.fut).poll(cx) {
            return Poll::Ready(Some(out));
        }
        poll_cancelled(this.run, this.pos, this.epoch, true, &mut this.notified, cx).map(|()| None)
    }
}

/// What a cancelled plain state "returned": never read, only dropped.
#[cold]
fn cancelled_outcome() -> attempt::Outcome {
    Ok(Err(Box::new(PanicError { message: String::new() })))
}

/// One poll of a plain state's future that `cancel_state` may cancel (see [`Cancellable`]):
/// on cancellation, `cancelled` is set and the outcome is a placeholder.
#[inline(always)]
fn poll_cancellable<'r, F: Future<Output = attempt::Outcome> + Unpin>(
    run: &'r Run,
    pos: usize,
    epoch: u32,
    fut: &mut F,
    notified: &mut Option<Pin<Box<Notified<'r>>>>,
    cancelled: &mut bool,
    cx: &mut std::task::Context<'_>,
) -> Poll<attempt::Outcome> {
    polling(run, pos);
    if let Poll::Ready(out) = Pin::new(fut).poll(cx) {
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
fn poll_cancelled<'r>(
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

/// A branch of `g` moves from `from` to `to`; a join may hold it there.
fn arrive(run: &Run, g: &Arc<Group>, from: usize, to: usize, next: &mut Vec<Position>) {
    g.arrive(run, from, to, next);
    if next.is_empty() {
        run.set_state_status(to, StateStatus::Blocked);
    }
}

/// The position this branch goes on with, spawning a task for every other one released
/// (or for every other branch of the fan-out `fan`: one task, which spawns the rest).
fn take_next(run: &Arc<Run>, next: &mut Vec<Position>, fan: &mut Option<Arc<Fan>>) -> Option<Position> {
    if let Some(fan) = fan.take() {
        // This branch goes on with the first target; one task spawns the others.
        let first = (Some(fan.group.clone()), fan.targets[0] as usize);
        let n = fan.targets.len() as u32;
        if run.program.has_dependencies {
            run.deps.branches_made(n as usize - 1);
        }
        spawn_task(fan_task(fan, 1, n));
        return Some(first);
    }
    if next.len() > 1 {
        // One shared-counter update for all, not one per task.
        run.tasks_started(next.len() - 1);
        if run.program.has_dependencies {
            run.deps.branches_made(next.len() - 1);
        }
    }
    let mut released = next.drain(..);
    let first = released.next()?;
    for (g, s) in released {
        spawn_task(branch_task(TaskGuard::new(run.clone()), s, g));
    }
    Some(first)
}

/// Record a failure for good and hand it to the `on_error` handler through the context.
#[cold]
fn route_error(run: &Run, pos: usize, outcome: attempt::Outcome, attempts: u32, handler: usize) {
    let Some((state, error)) = record_failed(run, pos, outcome) else { return };
    tracing::debug!(state, handler = &*run.program.states[handler].name, %error, "failed; on_error");
    agent_core::__private::context::set_last_error(&run.ctx, StateError { state, attempts, error: Arc::from(error) });
}

/// Count state `pos` as failed for good (status `Timeout` or `Failed`) and wake the gates of
/// its dependents; its name and the error, unless the attempt did complete after all.
fn record_failed(run: &Run, pos: usize, outcome: attempt::Outcome) -> Option<(String, agent_core::BoxError)> {
    let error = failure(run, outcome)?;
    let timed_out = error.is::<TimeoutError>();
    run.record_failure(pos, if timed_out { StateStatus::Timeout } else { StateStatus::Failed });
    if !run.program.states[pos].dependents.is_empty() {
        deps::failed(run);
    }
    Some((run.program.states[pos].name.to_string(), error))
}

/// The error of an attempt that did not complete.
fn failure(run: &Run, outcome: attempt::Outcome) -> Option<agent_core::BoxError> {
    match outcome {
        Ok(Ok(_)) => {
            agent_core::__private::context::take_write_error(&run.ctx).map(|e| Box::new(e) as agent_core::BoxError)
        }
        Ok(Err(e)) => Some(e),
        Err(payload) => Some(Box::new(PanicError { message: panic_message(payload) })),
    }
}

/// Whether `state` may go to `to`: any state, unless it declared its targets.
#[inline]
fn allowed(state: &crate::program::CompiledState, to: u32) -> bool {
    match &state.declared {
        None => true,
        Some(declared) => declared.binary_search(&to).is_ok(),
    }
}

#[cold]
fn undeclared(run: &Run, from: usize, to: &str) {
    run.fail(AgentError::UndeclaredTarget {
        from: run.program.states[from].name.to_string(),
        to: to.to_owned(),
        context: run.ctx.clone(),
    });
}

fn unknown(run: &Run, from: usize, to: &str) {
    run.fail(AgentError::UnknownState {
        from: run.program.states[from].name.to_string(),
        to: to.to_owned(),
        context: run.ctx.clone(),
    });
}

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(s) => (*s).to_owned(),
            Err(_) => "a panic whose payload is not a string".to_owned(),
        },
    }
}

/// Fail the run for a state whose attempt did not complete: it returned `Err`, panicked,
/// or wrote a value the context could not encode.
#[cold]
fn fail_state(run: &Run, pos: usize, outcome: attempt::Outcome, attempts: u32) {
    let Some((state, error)) = record_failed(run, pos, outcome) else { return };
    run.fail(AgentError::StateFailed { state, attempts, source: error, context: run.ctx.clone(), checkpoint: None });
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    fn size_of_val<F>(_: &F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Memory per pending branch is mostly this future (plus tokio's task header): keep it
    /// small. Rarely used parts (the `max_concurrent` acquire, an instrumented state) are
    /// boxed so they do not count here.
    #[test]
    fn a_branch_future_stays_small() {
        let mut def = crate::program::Definition::default();
        let handler: Arc<dyn agent_core::StateHandler> =
            Arc::new(|_c: agent_core::Context| async { agent_core::StateResult::End });
        def.states.push(crate::program::StateDef {
            name: "a".into(),
            handler,
            options: Default::default(),
            spec: None,
        });
        let prog = Arc::new(crate::program::Program::compile("x", &def).unwrap());
        let run = Arc::new(crate::run::Run::new(prog, agent_core::Context::new()));
        let fut = super::drive(&run, 0, None, true);
        assert!(size_of_val(&fut) <= 264, "the branch future grew to {} bytes", size_of_val(&fut));
        let task = super::branch_task(crate::run::TaskGuard::new(run.clone()), 0, None);
        assert!(size_of_val(&task) <= 416, "the spawned branch task grew to {} bytes", size_of_val(&task));
        // A fan-out's task boxes its branch: tokio moves the spawned future several times.
        // Only a waiting branch races the run's stop, in a box of its own: tokio sizes a
        // task's cell in steps of 128 bytes, and a pending branch pays for the whole step.
        let task = super::fan_task(super::Fan::open(&run, None, 0, vec![0, 0]), 1, 2);
        assert!(size_of_val(&task) <= 128, "a fan-out's branch task grew to {} bytes", size_of_val(&task));
    }
}
