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

use agent_core::{AgentError, PanicError, StateError, StateResult, StateStatus, TimeoutError};
use futures_util::FutureExt;

use super::attempt::{self, Attempted};
use super::gate as deps;
use super::poll::{
    cancelled_outcome, count_step, observed, poll_cancellable, poll_cancelled, start_poll, take_budget, Cancellable,
};
use super::spawn::{fan_out_deferred, start_ready, take_next, Fan};
use super::step::start_state;
use crate::events::EventKind;
use crate::frontier::TRANSITIONS;
use crate::run::{Group, Position, Run, NO_STATE};

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
                            completed(run, pos);
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
            completed(run, pos);
        }
        go_on!(entered);
    }
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

/// State `pos`, which has dependents, completed: start a branch at each dependent it
/// activated.
#[cold]
fn completed(run: &Arc<Run>, pos: usize) {
    let mut ready = Vec::new();
    deps::completed(run, pos, &mut ready);
    start_ready(run, &mut ready);
}

/// A branch of `g` moves from `from` to `to`; a join may hold it there.
fn arrive(run: &Run, g: &Arc<Group>, from: usize, to: usize, next: &mut Vec<Position>) {
    g.arrive(run, from, to, next);
    if next.is_empty() {
        run.set_state_status(to, StateStatus::Blocked);
    }
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
