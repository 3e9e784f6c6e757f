//! What starting a state and ending an attempt record, shared by the plain path (`drive`)
//! and the attempt loop (`attempt`), so that neither calls back into the other.
//!
//! Invariants:
//! - `start_state` is the one place a state is counted as a step (only when the program has
//!   `max_steps`) and marked running; past `max_steps` it fails the run instead.
//! - A state that failed for good is counted once (`record_failed`), whether it goes to its
//!   `on_error` handler (`to_on_error`) or fails the run (`fail_state`); the failure wakes
//!   its dependents' gates.
//! - Nothing here awaits or spawns.

use std::any::Any;
use std::sync::Arc;

use agent_core::{AgentError, BoxError, PanicError, StateError, StateResult, StateStatus, TimeoutError};

use super::attempt;
use super::gate;
use crate::run::Run;

/// Count the step and mark the state running; `false` when the run must stop here.
#[inline]
pub(crate) fn start_state(run: &Run, pos: usize) -> bool {
    if let Some(limit) = run.program.max_steps {
        // Counted only when limited: an unlimited run derives its step count from the
        // per-state counters and pays no shared counter per transition.
        if run.states.count_step() > limit {
            let state = run.program.states[pos].name.to_string();
            run.fail(AgentError::MaxSteps { limit, state, context: run.ctx.clone() });
            return false;
        }
    }
    run.set_state_status(pos, StateStatus::Running);
    true
}

/// Where a state that completed goes, traced (a subscriber was installed).
#[cold]
#[inline(never)]
pub(crate) fn trace_result(run: &Run, pos: usize, outcome: &attempt::Outcome) {
    let from = &*run.program.states[pos].name;
    match outcome {
        Ok(Ok(StateResult::Next(to))) => tracing::debug!(from, to = to.as_str(), "transition"),
        Ok(Ok(StateResult::Parallel(to))) => {
            let to: Vec<&str> = to.iter().map(|n| n.as_str()).collect();
            tracing::debug!(from, ?to, "fan-out")
        }
        Ok(Ok(StateResult::End)) => tracing::debug!(from, "branch ends"),
        _ => {}
    }
}

/// Record a failure for good and hand it to the `on_error` handler through the context.
#[cold]
pub(super) fn to_on_error(run: &Run, pos: usize, outcome: attempt::Outcome, attempts: u32, handler: usize) {
    let Some((state, error)) = record_failed(run, pos, outcome) else { return };
    tracing::debug!(state, handler = &*run.program.states[handler].name, %error, "failed; on_error");
    agent_core::__private::context::set_last_error(&run.ctx, StateError { state, attempts, error: Arc::from(error) });
}

/// Fail the run for a state whose attempt did not complete: it returned `Err`, panicked,
/// or wrote a value the context could not encode.
#[cold]
pub(super) fn fail_state(run: &Run, pos: usize, outcome: attempt::Outcome, attempts: u32) {
    let Some((state, error)) = record_failed(run, pos, outcome) else { return };
    run.fail(AgentError::StateFailed { state, attempts, source: error, context: run.ctx.clone(), checkpoint: None });
}

/// Count state `pos` as failed for good (status `Timeout` or `Failed`) and wake the gates of
/// its dependents; its name and the error, unless the attempt did complete after all.
fn record_failed(run: &Run, pos: usize, outcome: attempt::Outcome) -> Option<(String, BoxError)> {
    let error = failure(run, outcome)?;
    run.record_error(pos, &error.to_string());
    let timed_out = error.is::<TimeoutError>();
    run.record_failure(pos, if timed_out { StateStatus::Timeout } else { StateStatus::Failed });
    if !run.program.states[pos].dependents.is_empty() {
        gate::failed(run);
    }
    Some((run.program.states[pos].name.to_string(), error))
}

/// The error of an attempt that did not complete.
fn failure(run: &Run, outcome: attempt::Outcome) -> Option<BoxError> {
    match outcome {
        Ok(Ok(_)) => agent_core::__private::context::take_write_error(&run.ctx).map(|e| Box::new(e) as BoxError),
        Ok(Err(e)) => Some(e),
        Err(payload) => Some(Box::new(PanicError { message: panic_message(payload) })),
    }
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
