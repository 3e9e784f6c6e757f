//! The attempts of a state that needs more than a plain call: resources from a pool, a
//! timeout, retries, a body on the blocking pool. States with none of these never come here
//! (`branch::drive` calls them directly).
//!
//! Invariants:
//! - Resources are taken before the body starts and held by a guard for exactly as long as
//!   the body may run: the guard lives in this future (or, for a `blocking` body, on its
//!   thread until the body returns), so every exit (completion, `Err`, panic, timeout,
//!   cancellation of the run, preemption) gives them back.
//! - The timeout bounds the body only, not the wait for resources.
//! - A preempted attempt is dropped and asked again from the pool at its priority; it
//!   spends no retry and is counted in the state's `preempted` metric.
//! - The allocation is visible to the body through `ctx.allocation()` (a task-local scope).
//! - A state with dependencies waits at its gate (see `gate`) before anything else: it
//!   holds no permit and no resources there, and is not yet counted as a step.
//! - Rate limits: each attempt takes one start from the state's limiter and from each of
//!   its tags' before asking the pool, so a state held back by a limit holds nothing.
//! - Retries: an attempt that returns `Err`, panics or times out is tried again while the
//!   policy allows (`max_retries = 3`: at most four attempts), after `delay`. Nothing is
//!   held while waiting. A `ResourceError` (a request that can never fit) is not retried.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use agent_core::__private::{with_allocation, with_allocation_sync};
use std::time::Duration;

use agent_core::__private::context as ctx_hooks;
use agent_core::{BoxError, Context, ResourceError, RetryPolicy, StateResult, TimeoutError};
use futures_util::FutureExt;
use tokio::time::Instant;
use tracing::Instrument;

use super::gate::{self, Gate};
use super::spawn;
use crate::events::EventKind;
use crate::pool::ResourceGuard;
use crate::program::Guarded;
use crate::run::Run;
use agent_core::StateStatus;

/// What an attempt ends with: the state's own result, or the payload of its panic.
pub(crate) type Outcome = Result<Result<StateResult, BoxError>, Box<dyn Any + Send>>;

/// How the attempts of a state ended.
pub(crate) enum Attempted {
    /// The last attempt's outcome, and how many attempts were made.
    Done(Outcome, u32),
    /// A `Required` dependency failed for good: the state is cancelled.
    Cancelled,
    /// The run is stopping (or `max_steps` was reached): the branch ends.
    Stop,
}

/// Run state `pos`: wait at its dependency gate, then make attempts until one completes or
/// its retries are spent.
pub(crate) async fn run(run: &Arc<Run>, ctx: &Context, pos: usize, g: &Guarded) -> Attempted {
    if g.has_dependencies {
        if run.emitting() {
            run.emit(EventKind::WaitingForDependencies { state: run.state_name(pos) });
        }
        tracing::debug!(state = &*run.program.states[pos].name, "waiting for dependencies");
        let asked = run.sinks.timing.as_ref().map(|_| Instant::now());
        let gate = wait_at_gate(run, pos).await;
        if let (Some(asked), Some(timers)) = (asked, &run.sinks.timing) {
            let waited = u64::try_from(asked.elapsed().as_nanos()).unwrap_or(u64::MAX);
            timers[pos].dependency_wait.fetch_add(waited, Relaxed);
        }
        match gate {
            Gate::Open => {}
            Gate::Cancelled => return Attempted::Cancelled,
            Gate::TimedOut(e) => return Attempted::Done(Ok(Err(Box::new(e))), 0),
        }
    }
    if run.is_stopping() || !super::step::start_state(run, pos) {
        return Attempted::Stop;
    }
    // A restored run goes on with the budget its checkpoint had left.
    let counters = &run.states[pos];
    let mut attempt = match counters.resumed_attempts.load(Relaxed) {
        0 => 1,
        _ => counters.resumed_attempts.swap(0, Relaxed) + 1,
    };
    loop {
        let outcome = if tracing::dispatcher::has_been_set() {
            let span = match &g.request {
                Some((_, request)) => tracing::info_span!(
                    "state",
                    state = &*run.program.states[pos].name,
                    attempt,
                    resources = %describe(request)
                ),
                None => tracing::info_span!("state", state = &*run.program.states[pos].name, attempt),
            };
            one(run, ctx, pos, g, attempt).instrument(span).await
        } else {
            one(run, ctx, pos, g, attempt).await
        };
        if interrupted(run, &outcome) {
            // A durable wait left for a pause: no failure; the state runs again when the run
            // goes on (see `signal`).
            return Attempted::Stop;
        }
        if run.is_stopping() && matches!(&outcome, Ok(Err(e)) if e.is::<ResourceError>()) {
            // The run stopped while this attempt waited for resources: its request was
            // withdrawn (see `Run::stop`), which is no failure of the state.
            return Attempted::Stop;
        }
        let retry = match (&outcome, g.retry) {
            (Ok(Ok(_)), _) | (_, None) => None,
            // A request that can never fit fails the same way every time.
            (Ok(Err(e)), _) if e.is::<ResourceError>() => None,
            (_, Some(policy)) => (attempt <= policy.max_retries).then_some(policy),
        };
        let Some(policy) = retry else {
            counters.attempts_made.store(0, Relaxed);
            if tracing::dispatcher::has_been_set() {
                super::step::trace_result(run, pos, &outcome);
            }
            return Attempted::Done(outcome, attempt);
        };
        counters.attempts_made.store(attempt, Relaxed);
        let wait = delay(&policy, attempt);
        if tracing::dispatcher::has_been_set() {
            let error = outcome_error(&outcome).unwrap_or_default();
            tracing::info!(state = &*run.program.states[pos].name, attempt, delay = ?wait, %error, "attempt failed; retrying");
        }
        if run.emitting() {
            run.emit(EventKind::Retrying { state: run.state_name(pos), attempt: attempt + 1, delay: wait });
        }
        if let Some(error) = outcome_error(&outcome) {
            run.record_error(pos, &error);
        }
        drop(outcome);
        run.record_retry(pos);
        run.set_state_status(pos, StateStatus::Retrying);
        // Nothing is held while waiting: the attempt's guard was dropped with it.
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

/// Wait at state `pos`'s gate until it answers, starting a branch at each dependency a look
/// activates (the gate answers; this layer starts tasks).
async fn wait_at_gate(run: &Arc<Run>, pos: usize) -> Gate {
    let mut wait = gate::Wait::new(run, pos);
    let mut ready = Vec::new();
    loop {
        // Made before the look: a change after it wakes this wait.
        let (changed, generation) = run.deps.watch();
        let look = wait.look(&mut ready);
        // Started before this gate may count as idle: a stall is judged on live branches.
        spawn::start_ready(run, &mut ready);
        let until = match look {
            Ok(gate) => return gate,
            Err(until) => until,
        };
        if let Some(gate) = wait.wait(changed, generation, until).await {
            return gate;
        }
    }
}

/// The wait before retry `n`: the policy's bound, or with jitter a uniform draw from its
/// upper half (never above `max_delay`, never below half the bound).
pub(crate) fn delay(policy: &RetryPolicy, n: u32) -> Duration {
    let bound = policy.backoff(n);
    if policy.jitter {
        bound.mul_f64(0.5 + 0.5 * fastrand::f64())
    } else {
        bound
    }
}

/// One attempt: its rate limits first, then a `max_concurrent` permit, then its resources
/// (again after each preemption).
async fn one(run: &Arc<Run>, ctx: &Context, pos: usize, g: &Guarded, attempt: u32) -> Outcome {
    if !g.limiters.is_empty() {
        run.set_state_status(pos, StateStatus::Ready);
        for limiter in &g.limiters {
            limiter.wait().await;
        }
    }
    let _permit = match &run.semaphore {
        Some(s) => s.acquire().await.ok(),
        None => None,
    };
    loop {
        let guard = match &g.request {
            Some((pool, request)) => {
                run.set_state_status(pos, StateStatus::Ready);
                if run.emitting() {
                    run.emit(EventKind::WaitingForResources { state: run.state_name(pos) });
                }
                tracing::debug!(state = &*run.program.states[pos].name, "waiting for resources");
                let asked = Instant::now();
                let guard = pool.acquire(request.clone(), &**run).await;
                run.record_resource_wait(pos, asked.elapsed());
                match guard {
                    Ok(guard) => {
                        run.record_held(pos, guard.allocation.gpu_ids());
                        Some(guard)
                    }
                    Err(e) => return Ok(Err(Box::new(e))),
                }
            }
            None => None,
        };
        run.set_state_status(pos, StateStatus::Running);
        let preempted = guard.as_ref().and_then(|g| g.preempted.clone());
        let started = if run.watched() { Some(attempt_started(run, pos, attempt)) } else { None };
        let body = body(run, ctx, pos, g, guard);
        let outcome = match preempted {
            None => body.await,
            Some(token) => {
                tokio::select! {
                    biased;
                    outcome = body => outcome,
                    _ = token.cancelled() => {
                        // The attempt (and with it the guard) is dropped here; ask again.
                        run.record_preemption(pos);
                        tracing::info!(state = &*run.program.states[pos].name, "preempted; re-queued");
                        if run.emitting() {
                            run.emit(EventKind::Preempted { state: run.state_name(pos) });
                        }
                        continue;
                    }
                }
            }
        };
        if let Some(started) = started {
            attempt_ended(run, pos, attempt, started, &outcome);
        }
        return outcome;
    }
}

/// The body under its timeout, holding `guard` until it ends.
async fn body(run: &Arc<Run>, ctx: &Context, pos: usize, g: &Guarded, guard: Option<ResourceGuard>) -> Outcome {
    let call = async {
        // A new attempt: what an earlier one of this branch contributed does not count.
        ctx_hooks::begin_attempt(ctx);
        if g.blocking {
            return blocking(run, ctx, pos, guard).await;
        }
        let fut = AssertUnwindSafe(run.program.states[pos].handler.call(ctx)).catch_unwind();
        match (guard, &g.request) {
            // Held in a slot a request for human input can empty while it waits.
            (Some(guard), Some((pool, request))) => {
                crate::human::with_resources(guard, pool, request, run.clone(), fut).await
            }
            (guard, _) => match guard.as_ref() {
                Some(held) => with_allocation(held.allocation.clone(), fut).await,
                None => fut.await,
            },
        }
    };
    match g.timeout {
        None => call.await,
        Some(after) => match tokio::time::timeout(after, call).await {
            Ok(outcome) => outcome,
            Err(_) => {
                let state = run.program.states[pos].name.to_string();
                tracing::info!(state, ?after, "timed out");
                if run.emitting() {
                    run.emit(EventKind::TimedOut { state: state.clone() });
                }
                Ok(Err(Box::new(TimeoutError { state, after })))
            }
        },
    }
}

/// A pool request for a span field: `cpu=1 gpu=0.5`.
fn describe(request: &crate::pool::ledger::Request) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for (kind, amount) in agent_core::ResourceType::ALL.iter().zip(request.amounts.iter()) {
        if *amount > 0.0 {
            let sep = if out.is_empty() { "" } else { " " };
            let _ = write!(out, "{sep}{}={amount}", format!("{kind:?}").to_lowercase());
        }
    }
    out
}

/// An attempt's body starts while someone watches: its event, and its clock if timed.
#[cold]
#[inline(never)]
fn attempt_started(run: &Run, pos: usize, attempt: u32) -> Option<u64> {
    if run.emitting() {
        run.emit(EventKind::StateStarted { state: run.state_name(pos), attempt });
    }
    Some(run.sinks.timing.as_ref()?.attempt_started(pos))
}

/// An attempt's body ended while someone watches: its duration and its event.
#[cold]
#[inline(never)]
fn attempt_ended(run: &Run, pos: usize, attempt: u32, started: Option<u64>, outcome: &Outcome) {
    let duration = match (started, &run.sinks.timing) {
        (Some(start), Some(t)) => {
            let took = t.attempt_ended(pos, start);
            let started_ms = t.wall_ms(start);
            let finished_ms = started_ms.saturating_add(i64::try_from(took.as_millis()).unwrap_or(i64::MAX));
            run.record_span(pos, agent_core::AttemptSpan::new(started_ms, finished_ms, !matches!(outcome, Ok(Ok(_)))));
            Some(took)
        }
        _ => None,
    };
    if run.emitting() {
        crate::durable::announce_changes(run);
        run.emit(ended_event(run, pos, attempt, outcome, duration));
    }
}

/// The event of an attempt that ended: completed, or failed with its error.
pub(crate) fn ended_event(
    run: &Run,
    pos: usize,
    attempt: u32,
    outcome: &Outcome,
    duration: Option<Duration>,
) -> EventKind {
    let state = run.state_name(pos);
    if interrupted(run, outcome) {
        // Not failed: left for a pause, to run again (as a preempted attempt does).
        return EventKind::Preempted { state };
    }
    match outcome_error(outcome) {
        None if !agent_core::__private::context::has_write_error(&run.ctx) => {
            EventKind::StateCompleted { state, duration }
        }
        None => EventKind::StateFailed {
            state,
            attempt,
            error: "a value written to the context could not be encoded".into(),
        },
        Some(error) => EventKind::StateFailed { state, attempt, error },
    }
}

/// The error of an outcome, displayed; `None` if it completed.
fn outcome_error(outcome: &Outcome) -> Option<String> {
    match outcome {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(payload) => Some(match payload.downcast_ref::<String>() {
            Some(s) => s.clone(),
            None => payload.downcast_ref::<&'static str>().map_or("a panic".to_owned(), |s| (*s).to_owned()),
        }),
    }
}

/// Run the body on tokio's blocking pool. Dropping this future stops the body at its next
/// `.await`; the guard is released on the blocking thread once the body has returned.
async fn blocking(run: &Arc<Run>, ctx: &Context, pos: usize, guard: Option<ResourceGuard>) -> Outcome {
    let run = Arc::clone(run);
    let ctx = ctx.clone();
    let handle = tokio::runtime::Handle::current();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::task::spawn_blocking(move || {
        let allocation = guard.as_ref().map(|g| g.allocation.clone());
        let body = async {
            let fut = AssertUnwindSafe(run.program.states[pos].handler.call(&ctx)).catch_unwind();
            tokio::select! {
                biased;
                outcome = fut => Some(outcome),
                _ = stopped => None,
            }
        };
        let outcome = match allocation {
            Some(a) => with_allocation_sync(a, || handle.block_on(body)),
            None => handle.block_on(body),
        };
        drop(guard);
        outcome
    });
    let outcome = task.await;
    drop(stop);
    match outcome {
        Ok(Some(outcome)) => outcome,
        // Not reachable while this future is alive (only dropping `stop` stops the body).
        Ok(None) => Ok(Err("the blocking state was stopped".into())),
        Err(e) => match e.try_into_panic() {
            Ok(payload) => Err(payload),
            Err(_) => Ok(Err("the blocking state's task was cancelled (the runtime is shutting down)".into())),
        },
    }
}

/// Whether `outcome` is a durable wait that left because the run is pausing
/// (`WaitError::Interrupted`, returned as it is): not a failure; the state's token stays
/// where it is, and the state runs again when the run goes on (see `signal`).
#[cold]
pub(crate) fn interrupted(run: &Run, outcome: &Outcome) -> bool {
    run.is_pausing()
        && matches!(outcome, Ok(Err(e)) if matches!(e.downcast_ref::<agent_core::WaitError>(), Some(agent_core::WaitError::Interrupted)))
}
