//! The shared state of one run, in parts (one file each), and the transitions that span
//! them.
//!
//! - `control`: status, the requests that hold, stop or pause the run, its deadline, the
//!   tasks alive and the end;
//! - `counters`: per-state statuses and counters;
//! - `positions`: the root task's position and the fan-out groups it opened; `groups`: each
//!   fan-out group's tokens and the rule that says when a join runs (with `frontier`, where
//!   every token stands);
//! - `gates`: dependency bookkeeping (completion times, used-up completions, idle gates);
//! - `sinks`: where the run reports (its id, events, timings, store, what it shares with
//!   its agent);
//! - `successor`: the run that resumed this one once it was paused.
//!
//! Invariants:
//! - One `Run` per run started (`Agent::run`, `Agent::start`) and per resume of a paused
//!   one (the resumed run keeps the id and is the paused one's successor); any number of
//!   runs of one agent go on at once, sharing its program and its links, nothing else.
//!   Every branch task holds an `Arc<Run>`, itself or through the fan-out it was spawned
//!   for (see `Fan` in `exec::spawn`).
//! - The run is over when the root branch has returned and no spawned task is alive.
//! - The first failure wins: it is stored once, the run's status becomes `Failed`, and
//!   every branch is stopped (their futures are dropped).
//! - A run that stops (failed, cancelled, past its deadline) withdraws its queued resource
//!   requests from every pool, after it holds: nothing of it is admitted from then on.
//! - Parts never call each other; transitions that touch several parts are the methods of
//!   [`Run`] here.

mod branches;
mod control;
mod counters;
mod gates;
mod groups;
mod positions;
mod sinks;
mod successor;

use std::sync::Arc;
use std::time::Duration;

use agent_core::{AgentError, AgentStatus, Context, StateStatus};
use tokio::sync::Semaphore;

pub(crate) use branches::{Branches, NO_BRANCH};
pub(crate) use control::{Control, Deadline};
pub(crate) use counters::{Counters, HELD};
pub(crate) use gates::DepsState;
pub(crate) use groups::{Counts, Group, Ident, MapMeta, Position};
pub(crate) use positions::{Positions, NO_STATE};
pub(crate) use sinks::{Links, Recorder, Sinks};
pub(crate) use successor::{latest, Successor};

use crate::events::EventKind;
use crate::pool::{Asker, ResourcePool};
use crate::program::Program;

/// See the module docs.
pub(crate) struct Run {
    pub program: Arc<Program>,
    pub ctx: Context,
    pub control: Control,
    /// Per-state counters, indexed by state.
    pub states: Counters,
    pub positions: Positions,
    pub sinks: Sinks,
    /// Dependency bookkeeping (see `exec::gate`).
    pub deps: DepsState,
    /// The program's `max_concurrent`, if any.
    pub semaphore: Option<Semaphore>,
    /// The run that resumed this one, once paused.
    pub successor: Successor,
}

impl Run {
    #[cfg(test)]
    pub(crate) fn new(program: Arc<Program>, ctx: Context) -> Run {
        Run::with_links(program, ctx, Arc::new(Links::new()))
    }

    /// A run sharing `links` with its agent (and with the agent's other runs).
    pub(crate) fn with_links(program: Arc<Program>, ctx: Context, links: Arc<Links>) -> Run {
        let n = program.states.len();
        if let Some(reducers) = &program.reducers {
            agent_core::__private::context::set_reducers(&ctx, reducers.clone());
        }
        Run {
            deps: DepsState::new(n, program.has_dependencies),
            semaphore: program.max_concurrent.map(Semaphore::new),
            program,
            ctx,
            control: Control::new(),
            states: Counters::new(n),
            positions: Positions::new(),
            sinks: Sinks::new(links),
            successor: Successor::default(),
        }
    }

    // ----- reading ----------------------------------------------------------------------

    pub(crate) fn status(&self) -> AgentStatus {
        self.control.status()
    }

    /// Whether no further state may start: one relaxed load, made before every state.
    #[inline]
    pub(crate) fn is_stopping(&self) -> bool {
        self.control.is_stopping()
    }

    /// Whether `pause` was called.
    #[inline]
    pub(crate) fn is_pausing(&self) -> bool {
        self.control.is_pausing()
    }

    /// The run's deadline, if it has one.
    #[inline]
    pub(crate) fn deadline(&self) -> Option<Deadline> {
        self.control.deadline()
    }

    /// The run's id (a UUID v4), formatted on first use.
    pub(crate) fn run_id(&self) -> &str {
        self.sinks.run_id()
    }

    /// The name of state `pos`, owned (for events).
    pub(crate) fn state_name(&self, pos: usize) -> String {
        // Copied, not formatted: `to_string` would go through `Display` (an event costs it).
        String::from(&*self.program.states[pos].name)
    }

    /// Whether someone subscribed to events: one relaxed load (see `events`).
    #[inline(always)]
    pub(crate) fn emitting(&self) -> bool {
        self.sinks.emitting()
    }

    /// Send an event (call only when [`Run::emitting`], so nothing is built otherwise).
    pub(crate) fn emit(&self, kind: EventKind) {
        self.sinks.emit(kind)
    }

    /// Whether anything watches states start and end (events or timings).
    #[inline(always)]
    pub(crate) fn watched(&self) -> bool {
        self.sinks.watched()
    }

    /// The states running now, by name.
    pub(crate) fn running_states(&self) -> Vec<String> {
        self.states.running().map(|i| self.state_name(i)).collect()
    }

    /// The states that completed, in the order of their first completion, by name.
    pub(crate) fn completed_states(&self) -> Vec<String> {
        self.states.completion_order().into_iter().map(|i| self.state_name(i)).collect()
    }

    pub(crate) fn elapsed(&self) -> Duration {
        self.control.elapsed()
    }

    // ----- per-state transitions ----------------------------------------------------------

    #[inline]
    pub(crate) fn set_state_status(&self, state: usize, s: StateStatus) {
        self.states.set_status(state, s)
    }

    /// Count a completion of `state`; `alone`: the caller is the root branch and no other
    /// task is alive (see [`Run::runs_alone`]).
    #[inline]
    pub(crate) fn record_completion(&self, state: usize, alone: bool) {
        self.states.record_completion(state, alone)
    }

    /// Count a failed attempt; `status` is `Failed` or `Timeout`.
    pub(crate) fn record_failure(&self, state: usize, status: StateStatus) {
        self.states.record_failure(state, status)
    }

    pub(crate) fn record_retry(&self, state: usize) {
        self.states.record_retry(state)
    }

    pub(crate) fn record_preemption(&self, state: usize) {
        self.states.record_preemption(state)
    }

    pub(crate) fn record_resource_wait(&self, state: usize, waited: Duration) {
        self.states.record_resource_wait(state, waited)
    }

    pub(crate) fn record_span(&self, state: usize, span: agent_core::AttemptSpan) {
        self.states.record_span(state, span)
    }

    pub(crate) fn record_error(&self, state: usize, message: &str) {
        self.states.record_error(state, message)
    }

    pub(crate) fn record_held(&self, state: usize, gpu_ids: &[usize]) {
        self.states.record_held(state, gpu_ids)
    }

    pub(crate) fn record_input_wait(&self, waited: Duration) {
        self.states.record_input_wait(waited)
    }

    /// Cancel the running instances of `state`.
    pub(crate) fn cancel_state(&self, state: usize) {
        self.states.cancel_state(state)
    }

    /// Whether the instance of `state` started under `epoch` has been cancelled.
    #[inline]
    pub(crate) fn is_state_cancelled(&self, state: usize, epoch: u32) -> bool {
        self.states.is_state_cancelled(state, epoch)
    }

    /// A token now stands at `state` at the top level (inside a transition).
    #[inline]
    pub(crate) fn top_enter(&self, state: usize) {
        self.states.top_enter(state)
    }

    /// `n` tokens stand at `state` at the top level (a restored run).
    pub(crate) fn top_add(&self, state: usize, n: u32) {
        self.states.top_add(state, n)
    }

    /// A token left `state` at the top level (inside a transition).
    #[inline]
    pub(crate) fn top_leave(&self, state: usize) {
        self.states.top_leave(state)
    }

    // ----- the run's transitions ----------------------------------------------------------

    /// End the run with `error` unless it already ended; stop every branch.
    pub(crate) fn fail(&self, error: AgentError) {
        let message = tracing::enabled!(tracing::Level::DEBUG).then(|| error.to_string());
        if self.control.record_error(error) {
            if let Some(error) = message {
                tracing::debug!(run_id = %self.run_id(), %error, "run failed");
            }
        }
        self.stop();
    }

    /// Stop every branch; the run ends `Cancelled` unless it already ended. Every state it
    /// was running or about to run reads `Cancelled` from now on (and once more when the run
    /// is over, for a branch that was starting one meanwhile).
    pub(crate) fn cancel(&self) {
        self.control.end_with(AgentStatus::Cancelled);
        self.stop();
        if self.status() == AgentStatus::Cancelled {
            self.states.mark_cancelled();
        }
    }

    /// Stop the run at once with `error`, its states cancelled as by [`Run::cancel`]: a
    /// durable run that lost its ownership (see `durable`). The run ends `Cancelled` (unless
    /// it already ended) and `error` is what it returns.
    pub(crate) fn lose(&self, error: AgentError) {
        self.control.record_end(error, AgentStatus::Cancelled);
        self.stop();
        if self.status() == AgentStatus::Cancelled {
            self.states.mark_cancelled();
        }
    }

    /// The run's deadline passed: start no further state (running ones may finish); the
    /// run ends `TimedOut` unless it already ended.
    pub(crate) fn time_out(&self) {
        self.control.end_with(AgentStatus::TimedOut);
        self.control.hold();
        self.withdraw_from_pools();
    }

    /// Admit nothing new: branches stop before their next state, states waiting to start
    /// (for a dependency, resources, a rate limit or a retry) leave, running ones finish.
    /// The run ends `Paused` unless it already ended.
    pub(crate) fn pause(&self) -> bool {
        let paused = self.control.pause();
        if paused {
            // Wake states waiting to start, so they leave.
            self.states.state_cancelled.notify_waiters();
        }
        paused
    }

    fn stop(&self) {
        self.control.stop();
        self.withdraw_from_pools();
    }

    /// Withdraw this run's queued resource requests (it is stopping, so nothing of it may
    /// be admitted any more): after it holds, so a request racing this sees it under the
    /// pool's lock (see `ResourcePool::acquire`).
    fn withdraw_from_pools(&self) {
        let mut seen: Vec<&ResourcePool> = Vec::new();
        for state in &self.program.states {
            let Some((pool, _)) = state.guarded.as_ref().and_then(|g| g.request.as_ref()) else { continue };
            if !seen.iter().any(|p| p.same(pool)) {
                pool.withdraw_asker(self.key());
                seen.push(pool);
            }
        }
    }

    /// Ready once the run is stopped for good (see `Control::stopped`). The control's own
    /// future, not one wrapping it: every branch task holds it.
    #[inline]
    pub(crate) fn stopped(&self) -> impl std::future::Future<Output = ()> + '_ {
        self.control.stopped()
    }

    /// Wait until the run is over.
    pub(crate) fn ended(&self) -> impl std::future::Future<Output = ()> + '_ {
        self.control.ended()
    }

    /// Count `n` branch tasks about to be spawned.
    pub(crate) fn tasks_started(&self, n: usize) {
        self.control.tasks_started(n)
    }

    /// Whether no spawned task is alive (see `Control::runs_alone`).
    #[inline]
    pub(crate) fn runs_alone(&self) -> bool {
        self.control.runs_alone()
    }

    /// Wait until no spawned branch task is alive.
    pub(crate) fn tasks_finished(&self) -> impl std::future::Future<Output = ()> + '_ {
        self.control.tasks_finished()
    }

    /// Mark the run over: `Completed` unless it failed, was cancelled or timed out; the
    /// error that ended it, if any.
    pub(crate) fn finish(&self) -> Option<AgentError> {
        let error = self.control.finish();
        if matches!(self.status(), AgentStatus::Cancelled | AgentStatus::TimedOut) {
            // Every branch has stopped (at a deadline, those that could not be dropped were
            // left behind and are not the run's any more): no state is running any more.
            self.states.mark_cancelled();
        }
        error
    }
}

impl Asker for Run {
    fn key(&self) -> usize {
        self as *const Run as usize
    }

    fn stopping(&self) -> bool {
        self.is_stopping()
    }
}

/// Held by every spawned branch task; counts it out of the run when dropped, however the
/// task ends (returned, cancelled or panicked).
pub(crate) struct TaskGuard {
    pub run: Arc<Run>,
}

impl TaskGuard {
    /// The guard of one task.
    pub(crate) fn new(run: Arc<Run>) -> TaskGuard {
        TaskGuard { run }
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.run.control.task_ended();
    }
}
