//! What starting a state and ending an attempt record, shared by the plain path (`branch`)
//! and the attempt loop (`attempt`), so that neither calls back into the other.
//!
//! Invariants:
//! - `start_state` is the one place a state is counted as a step (only when the program has
//!   `max_steps`) and marked running; past `max_steps` it fails the run instead.
//! - Nothing here awaits or spawns.

use agent_core::{AgentError, StateResult, StateStatus};

use super::attempt;
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
