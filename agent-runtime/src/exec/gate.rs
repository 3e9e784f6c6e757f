//! Dependencies: when a state with `depends_on` may start, and what its dependencies'
//! completions activate.
//!
//! Invariants:
//! - A state with dependencies waits at its gate (status `Blocked`, holding nothing) until
//!   every dependency is satisfied, as API.md's table says:
//!   `Required` — completed, within its lifecycle; `Sequential` — finished (completed or
//!   failed for good); `Optional` — finished if it was activated in this run, else at once;
//!   `Parallel` — at once. Each also needs its `condition`, if any, to hold.
//! - A `Required` or `Sequential` dependency that has not been activated is activated by the
//!   gate (a new branch starts there); a `Parallel` one is started alongside unless it is
//!   already active; a `Periodic` one whose completion is older than `interval` is run again.
//! - A `Required` dependency that fails for good cancels the waiting dependent (status
//!   `Cancelled`); the failure itself is reported by the dependency (it fails the run, or
//!   goes to its `on_error`).
//! - `timeout` bounds the wait: past it the dependent fails with [`DependencyTimeout`].
//! - When a state completes, each dependent whose `Required` and `Sequential` dependencies
//!   are now all satisfied, and which has not been activated in this run, is activated. A
//!   dependency is thus a trigger as well as a guard (API.md: a state runs when it is
//!   activated, by a transition or by its dependencies' completion): a state the branch
//!   transitions to at that moment is marked first and runs once, but one reached by a
//!   transition later runs again, once per activation.
//! - Temporary and Periodic completions that have gone stale are run again by the gate
//!   (both say how long a completion counts; neither lets a stale one count).
//! - Lifecycles: `Session` counts completions of this run; `Once` also completions of earlier
//!   runs of the agent; `Always` only completions since the dependent last started (each
//!   completion is consumed); `Temporary` only completions younger than `expiry`; `Periodic`
//!   only completions younger than `interval`, after which the dependency is run again.
//! - A run that can no longer move fails with [`AgentError::Stalled`]: when every live
//!   branch waits at a gate that nothing but another branch can open (no dependency
//!   `timeout`, no expiry to look again at), nothing will ever open one. Branches are
//!   counted from where they are made (the root, a spawn, a fan-out, a release) to where
//!   their `drive` ends; a gate counts as idle from its check until the next change
//!   (`DepsState::notify`: a completion or a failure), and the generation number of changes
//!   keeps a gate that a change already woke from counting. All of it is under one lock,
//!   taken only by programs with dependencies.
//! - Nothing here is on the path of a state without dependencies or dependents.
//! - Nothing here starts a task: a look at a gate ([`Wait::look`]) and a completion
//!   ([`completed`]) answer which states they activated, each already counted at the top
//!   level; the caller in `exec` starts a branch at each before its own branch can end or go
//!   idle, so a branch is counted live from its activation on.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use agent_core::{AgentError, DependencyConfig, DependencyLifecycle, DependencyType, WaitingOn};
use tokio::sync::futures::Notified;
use tokio::time::Instant;

use agent_core::DependencyTimeout;

use crate::frontier::TRANSITIONS;
use crate::run::Run;
use agent_core::StateStatus;

/// What the gate decided.
pub(crate) enum Gate {
    /// Every dependency is satisfied: the state may start.
    Open,
    /// A `Required` dependency failed for good: the dependent is cancelled.
    Cancelled,
    /// The wait passed a dependency's `timeout`.
    TimedOut(DependencyTimeout),
}

enum Check {
    Satisfied,
    Waiting,
    DependencyFailed,
}

/// Whether state `d` is active now (queued, waiting, running or retrying).
fn is_active(run: &Run, d: usize) -> bool {
    matches!(
        StateStatus::from_u8(run.states[d].status.load(Relaxed)),
        StateStatus::Ready | StateStatus::Running | StateStatus::Blocked | StateStatus::Retrying
    )
}

/// Activate `d` unless it is active already: counted at the top level there, and pushed into
/// `ready` for the caller to start a branch at.
fn activate(run: &Run, d: usize, ready: &mut Vec<usize>) {
    let status = &run.states[d].status;
    let now = status.load(Relaxed);
    if is_active(run, d) {
        return;
    }
    let _t = TRANSITIONS.enter();
    if status.compare_exchange(now, StateStatus::Ready as u8, Relaxed, Relaxed).is_ok() {
        tracing::debug!(state = &*run.program.states[d].name, "activated as a dependency");
        run.top_enter(d);
        ready.push(d);
    }
}

/// Whether the latest completion of `d` still counts for `dependent` under `c`.
fn completion_counts(run: &Run, dependent: usize, j: usize, d: usize, c: &DependencyConfig, now: Instant) -> bool {
    let counters = &run.states[d];
    let completed = counters.completed.load(Relaxed);
    let fresh = |limit: Option<Duration>| match (run.deps.last_completed(d), limit) {
        (Some(at), Some(limit)) => now.saturating_duration_since(at) < limit,
        (Some(_), None) => true,
        (None, _) => false,
    };
    match c.lifecycle {
        DependencyLifecycle::Session => completed > 0,
        DependencyLifecycle::Once => completed > 0 || once_done(run, d),
        DependencyLifecycle::Always => completed > run.deps.consumed(dependent, j),
        DependencyLifecycle::Temporary => completed > 0 && fresh(c.expiry),
        DependencyLifecycle::Periodic => completed > 0 && fresh(c.interval),
    }
}

/// Check every dependency of `pos`, activating those the table says to.
fn check(run: &Run, pos: usize, now: Instant, activate_missing: bool, ready: &mut Vec<usize>) -> Check {
    let mut all = true;
    for (j, (d, c)) in run.program.states[pos].dependencies.iter().enumerate() {
        let d = *d;
        let counters = &run.states[d];
        let failed = counters.failed.load(Relaxed) > 0 && !is_active(run, d);
        let status = StateStatus::from_u8(counters.status.load(Relaxed));
        let activated = status != StateStatus::Pending || once_done(run, d);
        let done = match c.dependency_type {
            DependencyType::Required => {
                if completion_counts(run, pos, j, d, c, now) {
                    true
                } else if failed && status != StateStatus::Completed {
                    return Check::DependencyFailed;
                } else {
                    if activate_missing && !is_active(run, d) {
                        activate(run, d, ready);
                    }
                    false
                }
            }
            DependencyType::Sequential => {
                let finished = completion_counts(run, pos, j, d, c, now) || failed;
                if !finished && activate_missing && !is_active(run, d) {
                    activate(run, d, ready);
                }
                finished
            }
            DependencyType::Optional => !activated || !is_active(run, d),
            DependencyType::Parallel => {
                if activate_missing && !is_active(run, d) && counters.completed.load(Relaxed) == 0 {
                    activate(run, d, ready);
                }
                true
            }
        };
        let holds = done && c.condition.as_ref().is_none_or(|cond| cond(&run.ctx));
        all &= holds;
    }
    if all {
        Check::Satisfied
    } else {
        Check::Waiting
    }
}

/// A state's wait at its gate: each look checks its dependencies; between looks it waits
/// for a change (a completion or a failure), a dependency's `timeout` or a completion going
/// stale. The waiting itself and the starting of what a look activates are the caller's
/// (`exec::attempt`).
pub(crate) struct Wait<'r> {
    run: &'r Run,
    pos: usize,
    /// The earliest dependency `timeout`: when it passes, of which dependency, after how long.
    deadline: Option<(Instant, usize, Duration)>,
    /// The next look activates the dependencies the table says to start: the first look,
    /// and one after a completion went stale.
    activate: bool,
    _waiting: WaitingGuard<'r>,
}

impl<'r> Wait<'r> {
    /// State `pos` starts waiting at its gate.
    pub(crate) fn new(run: &'r Run, pos: usize) -> Wait<'r> {
        let started = Instant::now();
        let deadline = (run.program.states[pos].dependencies.iter())
            .filter_map(|(d, c)| c.timeout.map(|t| (started + t, *d, t)))
            .min_by_key(|(at, _, _)| *at);
        run.deps.waiting.fetch_add(1, Relaxed);
        Wait { run, pos, deadline, activate: true, _waiting: WaitingGuard(run) }
    }

    /// Look at the dependencies: the gate's answer, or else until when to wait for a change
    /// (`None`: for as long as none comes). The dependencies it activates are pushed into
    /// `ready`, each already counted where it stands: the caller starts a branch at each.
    pub(crate) fn look(&mut self, ready: &mut Vec<usize>) -> Result<Gate, Option<Instant>> {
        let (run, pos) = (self.run, self.pos);
        let now = Instant::now();
        match check(run, pos, now, self.activate, ready) {
            Check::Satisfied => {
                consume(run, pos);
                return Ok(Gate::Open);
            }
            Check::DependencyFailed => return Ok(Gate::Cancelled),
            Check::Waiting => {}
        }
        if self.activate {
            run.set_state_status(pos, StateStatus::Blocked);
        }
        self.activate = false;
        // Periodic completions go stale with time, Temporary ones expire: look again then.
        let recheck = next_expiry(run, pos, now);
        Err(match (self.deadline.map(|(at, _, _)| at), recheck) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// Wait for `changed` (taken, with its `generation`, before the last look) or `until`;
    /// the gate's answer if its deadline passed, else `None`: look again.
    pub(crate) async fn wait(
        &mut self,
        changed: Notified<'_>,
        generation: u64,
        until: Option<Instant>,
    ) -> Option<Gate> {
        let (run, pos) = (self.run, self.pos);
        match until {
            None => {
                // Only another branch can open this gate now: if none is left to, the run
                // has stalled.
                let (_idle, stall) = run.deps.go_idle(pos, generation);
                if let Some(idle) = stall {
                    stalled(run, &idle);
                }
                changed.await;
            }
            Some(at) => {
                if tokio::time::timeout_at(at, changed).await.is_err() {
                    if let Some((deadline, d, after)) = self.deadline {
                        if Instant::now() >= deadline {
                            return Some(Gate::TimedOut(DependencyTimeout {
                                state: run.program.states[pos].name.to_string(),
                                dependency: run.program.states[d].name.to_string(),
                                after,
                            }));
                        }
                    }
                    // A stale periodic dependency is run again.
                    self.activate = true;
                }
            }
        }
        None
    }
}

/// The next instant a Temporary or Periodic completion among `pos`'s dependencies expires.
fn next_expiry(run: &Run, pos: usize, now: Instant) -> Option<Instant> {
    (run.program.states[pos].dependencies.iter())
        .filter_map(|(d, c)| {
            let limit = match c.lifecycle {
                DependencyLifecycle::Temporary => c.expiry,
                DependencyLifecycle::Periodic => c.interval,
                _ => None,
            }?;
            let at = run.deps.last_completed(*d)? + limit;
            (at > now).then_some(at)
        })
        .min()
}

struct WaitingGuard<'a>(&'a Run);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.deps.waiting.fetch_sub(1, Relaxed);
    }
}

/// State `pos` (which has dependents) completed: record when, and activate each dependent
/// whose `Required` and `Sequential` dependencies are now all satisfied (pushed into `ready`:
/// the caller starts them).
#[cold]
pub(crate) fn completed(run: &Run, pos: usize, ready: &mut Vec<usize>) {
    record_completion(run, pos);
    let now = Instant::now();
    for &x in &run.program.states[pos].dependents {
        if run.states[x].status.load(Relaxed) != StateStatus::Pending as u8 {
            continue;
        }
        let deps = &run.program.states[x].dependencies;
        let ordering = |t: DependencyType| matches!(t, DependencyType::Required | DependencyType::Sequential);
        let all_done = deps.iter().enumerate().filter(|(_, (_, c))| ordering(c.dependency_type)).all(|(j, (d, c))| {
            completion_counts(run, x, j, *d, c, now)
                || (c.dependency_type == DependencyType::Sequential && run.states[*d].failed.load(Relaxed) > 0)
        });
        if all_done && deps.iter().any(|(_, c)| ordering(c.dependency_type)) {
            activate(run, x, ready);
        }
    }
    run.deps.notify();
}

/// A state with dependents failed for good: wake the gates waiting on it.
#[cold]
pub(crate) fn failed(run: &Run) {
    run.deps.notify();
}

/// What each of `idle`'s gates waits on, for [`AgentError::Stalled`].
fn describe(run: &Run, idle: &[usize]) -> Vec<WaitingOn> {
    let now = Instant::now();
    let mut out: Vec<WaitingOn> = Vec::new();
    for &pos in idle {
        let state = &run.program.states[pos];
        let mut on = Vec::new();
        for (j, (d, c)) in state.dependencies.iter().enumerate() {
            let name = &*run.program.states[*d].name;
            let counted = completion_counts(run, pos, j, *d, c, now);
            let failed = run.states[*d].failed.load(Relaxed) > 0;
            let done = match c.dependency_type {
                DependencyType::Required => counted,
                DependencyType::Sequential => counted || failed,
                DependencyType::Optional => !is_active(run, *d),
                DependencyType::Parallel => true,
            };
            if !done {
                on.push(format!("`{name}` ({:?}) to complete", c.dependency_type));
            } else if c.condition.as_ref().is_some_and(|cond| !cond(&run.ctx)) {
                on.push(format!("the condition on `{name}` to hold"));
            }
        }
        let on = if on.is_empty() { "a dependency".to_owned() } else { on.join(" and ") };
        if !out.iter().any(|w| w.state == *state.name) {
            out.push(WaitingOn { state: state.name.to_string(), on });
        }
    }
    out
}

/// A branch's `drive` returned (see the module docs): count it out, in a program with
/// dependencies, and fail the run if it has stalled. Not called for a branch dropped because
/// its run stopped, when nothing is checked any more.
#[inline]
pub(crate) fn branch_ended(run: &Run) {
    if run.program.has_dependencies {
        if let Some(idle) = run.deps.branch_ended() {
            stalled(run, &idle);
        }
    }
}

/// The root branch starts: count it (every other branch is counted where it is made).
pub(crate) fn root_started(run: &Run) {
    if run.program.has_dependencies {
        run.deps.branches_made(1);
    }
}

/// Every live branch waits at one of the gates of `idle`: fail the run, saying what each
/// waits on (unless the run is stopping anyway).
#[cold]
fn stalled(run: &Run, idle: &[usize]) {
    if run.is_stopping() {
        return;
    }
    let waiting = describe(run, idle);
    tracing::debug!(?waiting, "the run stalled");
    run.fail(AgentError::Stalled { waiting, context: run.ctx.clone() });
}

/// Whether `d` completed in an earlier run of the agent and counts forever (`Once`).
fn once_done(run: &Run, d: usize) -> bool {
    run.program.states[d].once_tracked
        && run
            .sinks
            .links
            .once
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&*run.program.states[d].name)
}

/// State `x` starts: its `Always` dependencies' completions so far are used up.
fn consume(run: &Run, x: usize) {
    let deps = &run.program.states[x].dependencies;
    if !deps.iter().any(|(_, c)| c.lifecycle == DependencyLifecycle::Always) {
        return;
    }
    let counts = deps
        .iter()
        .enumerate()
        .filter(|(_, (_, c))| c.lifecycle == DependencyLifecycle::Always)
        .map(|(j, (d, _))| (j, run.states[*d].completed.load(Relaxed)));
    run.deps.consume(x, counts);
}

/// Record when `d` completed, and (a `Once` dependency) that it did, for later runs too.
fn record_completion(run: &Run, d: usize) {
    run.deps.record_completion(d);
    if run.program.states[d].once_tracked {
        run.sinks
            .links
            .once
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(run.program.states[d].name.to_string());
    }
}
