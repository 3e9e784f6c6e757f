//! A branch: the loop that runs one token's states, one after another, in one task.
//!
//! Each turn of the loop is five steps, in this order; each is a function of its own (the
//! sync ones `#[inline(always)]`, so the chain's path costs what one loop body did), and
//! those that decide where the branch goes say it with a [`Step`]:
//! 1. **record**: a durable run's completion is recorded before any successor starts; then
//!    the branch goes on from the positions the last step released (`Branch::take_next`).
//! 2. **gate** ([`gate`]): whether the state may start (the run is not stopping, `max_steps`
//!    not reached). A plain state is marked running there and then takes its
//!    `max_concurrent` permit; a guarded one (dependencies, resources, a timeout, retries,
//!    rate limits, a blocking body) gates itself in `attempt`.
//! 3. **poll**: the state's future is polled to its end through `poll::poll_state`: inline
//!    on the plain path (the chain's), from the boxed watched path (`poll::observed`) when
//!    someone watches, through `poll::Cancellable` on the guarded path.
//! 4. **settle** ([`Branch::settle`]): the outcome becomes a completion (counted, its
//!    result handed on), a failure for good (to the `on_error` handler, or the run fails)
//!    or a cancellation (the token leaves).
//! 5. **route** ([`Branch::route`]): the result says where the token goes: on in this task,
//!    to its end, to a join, or to a fan-out whose branches `take_next` starts.
//!
//! Invariants:
//! - A sequential transition never spawns: the next state runs in the same task, so a chain
//!   costs one boxed future per state and nothing else that the user did not ask for.
//! - A state's panic, `Err`, bad write or unknown target fails the run through `Run::fail`;
//!   the panic never unwinds past this module.
//! - Every transition inside a group goes through `Group::arrive` / `Group::end`, which say
//!   what runs next (see `run::groups`).
//! - Every transition but the root task's plain step publishes positions inside the
//!   transition lock (see `frontier`), taken by the step that moves the token and released
//!   when that step returns, before the branch records or runs its next state.

use std::borrow::Cow;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::Poll;

use agent_core::__private::context as ctx_hooks;
use agent_core::{AgentError, Context, MapSpec, StateName, StateResult, StateStatus};
use futures_util::FutureExt;

use super::attempt::{self, Attempted, Outcome};
use super::gate;
use super::poll::{cancelled_outcome, observed, poll_cancellable, poll_cancelled, poll_state, Cancellable};
use super::spawn::{fan_out_deferred, start_ready, take_next, Fan};
use super::step::{fail_state, start_state, to_on_error};
use crate::events::EventKind;
use crate::frontier::TRANSITIONS;
use crate::program::{CompiledState, Guarded};
use crate::run::{Group, Ident, MapMeta, Position, Run, NO_BRANCH, NO_STATE};

/// Where a step leaves the branch.
enum Step {
    /// Run state `to` next, in this task; the token stands there already. `forget`: the
    /// outcome owns nothing (`Ok(Ok(Next(static name)))`), so its drop, an out-of-line walk
    /// of three nested enums, is skipped on the chain's path.
    Continue { to: usize, forget: bool },
    /// Go on from the positions in `next` (the first in this task, the others spawned; the
    /// branch ends if there are none), once a durable run has recorded the transition.
    GoOn,
    /// The branch ends here.
    Return,
}

/// What [`gate`] decided.
enum Gated<'p> {
    /// The run is stopping, or `max_steps` was reached: the branch ends.
    Stop,
    /// The guarded path, which gates the state itself (`attempt::run`).
    Guarded(&'p Guarded),
    /// A plain state, counted and marked running; it starts once it holds a permit of the
    /// run's semaphore (`max_concurrent`), if there is one.
    Plain,
}

/// A branch between two of its states: where its token stands and what it does next. The
/// steps read and move it; it lives in the branch's future, whose size is kept (see the
/// size test in `spawn`).
struct Branch<'a> {
    /// The state to run next.
    pos: usize,
    /// The fan-out group the token is in, if any.
    group: Option<Cow<'a, Arc<Group>>>,
    /// The branch's ordinal in its group, if the group keeps an identity per branch
    /// (`NO_BRANCH` otherwise; see `run::branches`).
    ord: u32,
    /// The context handle the branch's states get, when it has an identity (a map's item,
    /// reducer writes held until the state completes); `None`: the run's own.
    scope: Option<Context>,
    /// Where the scope goes when the branch is done, for the caller's next branch (a fan
    /// task's); without it, to this thread's recycled scopes.
    keep: Option<&'a mut Option<Context>>,
    /// The root task, whose position is published in the root slot (see [`drive`]).
    rooted: bool,
    /// A durable run's completion not yet recorded: recorded before any successor starts.
    unrecorded: bool,
    /// Go on from `next` (after `record`).
    go_on: bool,
    /// The positions the last transition released.
    next: Vec<Position>,
    /// A fan-out just made, whose branches are to be spawned (see `take_next`).
    fan: Option<Arc<Fan>>,
}

/// A branch's scope goes back for the caller's next branch, or this thread's.
impl Drop for Branch<'_> {
    fn drop(&mut self) {
        if let Some(scope) = self.scope.take() {
            match self.keep.as_deref_mut() {
                Some(slot) => *slot = Some(scope),
                None => ctx_hooks::recycle(scope),
            }
        }
    }
}

/// Run states from `pos` until this branch ends, waits at a join, or the run stops.
///
/// The caller calls `gate::branch_ended` once it returns (not when it is dropped: a branch
/// is dropped only when its run stops).
///
/// `rooted`: this is the root task, and its position is published in `Run::root_slot`
/// (see `frontier`); every other branch's position is counted by `at_top` or its group.
/// A branch that stops (the run failed, was cancelled, timed out or paused) leaves its
/// position published: that is where the run goes on when restored.
///
/// Borrows the run (no reference-count traffic per branch on the run's shared `Arc`).
///
/// `keep`: a branch's context handle to start from, and where the branch leaves its own
/// when it is done (see [`Branch::scope_in`]).
pub(crate) async fn drive<'a>(
    run: &'a Arc<Run>,
    pos: usize,
    group: Option<Cow<'a, Arc<Group>>>,
    ord: u32,
    rooted: bool,
    keep: Option<&'a mut Option<Context>>,
) {
    let mut b = Branch {
        pos,
        group,
        ord,
        scope: None,
        keep,
        rooted,
        unrecorded: false,
        go_on: false,
        next: Vec::new(),
        fan: None,
    };
    b.scope = b.keep.as_deref_mut().and_then(Option::take);
    b.scope_in(run);
    loop {
        // 1. Record: a durable run's completion, before any successor starts (one await
        // point, boxed, so that the branch future stays small); then go on from `next`.
        if std::mem::take(&mut b.unrecorded) && !Box::pin(record(run)).await {
            return;
        }
        if std::mem::take(&mut b.go_on) && !b.take_next(run) {
            return;
        }
        let state = &run.program.states[b.pos];
        // Read before the state is marked running: a `cancel_state` from then on cancels
        // this instance.
        let epoch = run.states[b.pos].cancel_epoch.load(Relaxed);
        let mut attempts = 1;
        // Set when the state was cancelled (by `cancel_state`, or at its gate by a failed
        // dependency); its outcome is then a placeholder. A flag rather than an `Option`
        // around the outcome: the outcome stays where the poll wrote it.
        let mut cancelled = false;
        // Held while a plain state runs (`max_concurrent`); declared out here so that the
        // plain path's outcome is written where it is read (see below).
        let mut permit = None;
        // 2. Gate, then 3. poll.
        let mut outcome = match gate(run, b.pos, state) {
            Gated::Stop => return,
            // Boxed, so that the branch future of plain states does not carry the attempts'
            // future; polled through `Cancellable`, which takes the budget as the plain path
            // does and races `cancel_state`.
            Gated::Guarded(guarded) => {
                let tried = Box::pin(attempt::run(run, b.scope.as_ref().unwrap_or(&run.ctx), b.pos, guarded));
                match Cancellable::new(run, b.pos, epoch, tried).await {
                    Some(Attempted::Done(outcome, n)) => {
                        attempts = n;
                        outcome
                    }
                    Some(Attempted::Stop) => return,
                    // Left its queue because the run is pausing: it starts again on resume.
                    None if !run.is_state_cancelled(b.pos, epoch) => return,
                    Some(Attempted::Cancelled) | None => {
                        cancelled = true;
                        cancelled_outcome()
                    }
                }
            }
            Gated::Plain => {
                if let Some(s) = &run.semaphore {
                    // Boxed so that a branch without `max_concurrent` does not carry the
                    // acquire.
                    permit = match Box::pin(s.acquire()).await {
                        Ok(_) if run.is_stopping() => return,
                        Ok(p) => Some(p),
                        Err(_) => return,
                    };
                }
                // `call` never panics (a closure's synchronous panic is deferred into its
                // future), so one catch around the poll sees every panic of the state.
                if let Some(scope) = &b.scope {
                    ctx_hooks::begin_attempt(scope);
                }
                let mut fut = AssertUnwindSafe(state.handler.call(b.scope.as_ref().unwrap_or(&run.ctx))).catch_unwind();
                // The block's value, not a local moved out after the permit's drop: that move
                // was a 32-byte copy reloading, as two 16-byte loads, the 8-byte stores just
                // made (a failed store-to-load forwarding, about a third of this loop's own
                // time). The state runs inline in this loop (no nested future per step: its
                // result is moved once, not through every layer of a helper future).
                if run.watched() || tracing::dispatcher::has_been_set() {
                    // Events, timings or tracing: built only if someone subscribed, timings
                    // are on, or a tracing subscriber was ever installed; otherwise this
                    // costs a relaxed load, an `Option` check and an atomic load. Boxed, so
                    // that the branch future of an unwatched run does not carry it.
                    Box::pin(observed(run, b.pos, epoch, fut, &mut cancelled)).await
                } else {
                    // Polled here rather than through `Cancellable`, so that the state's
                    // future is dropped inline (the chain's path). The first poll is made
                    // bare: a state that completes in it (the common quick state) never
                    // touches the cancellation machinery. It counts the state on this thread
                    // for the budget (see `poll_state`): counted in the poll, not held across
                    // the await, as the branch future has no room for one more byte (a poll
                    // after a yield counts again, harmlessly).
                    match std::future::poll_fn(|cx| poll_state(run, b.pos, true, &mut fut, cx)).await {
                        Poll::Ready(outcome) => outcome,
                        Poll::Pending => {
                            // Polled a moment ago: this first time only register for
                            // cancellation, so that a state yielding (`yield_now`) really
                            // yields.
                            let mut just_polled = true;
                            let mut cancel = None;
                            std::future::poll_fn(|cx| {
                                if std::mem::take(&mut just_polled) {
                                    return match poll_cancelled(run, b.pos, epoch, false, &mut cancel, cx) {
                                        Poll::Ready(()) => {
                                            cancelled = true;
                                            Poll::Ready(cancelled_outcome())
                                        }
                                        Poll::Pending => Poll::Pending,
                                    };
                                }
                                poll_cancellable(run, b.pos, epoch, false, &mut fut, &mut cancel, &mut cancelled, cx)
                            })
                            .await
                        }
                    }
                }
            }
        };
        drop(permit);
        // 4. Settle, then 5. route, as one transition wherever a checkpoint may be taken
        // meanwhile from another thread: a branch in a group, or any branch of a durable run
        // (its writer captures while other branches, or the root, move on). Counted
        // completed, the state's token must have moved on in the same transition: a
        // checkpoint reading the count with the token still at the state would run it again
        // on restore and count it twice. Only a plain run's root chain, which no writer
        // captures, goes without (see `frontier`).
        let _entered = (!b.rooted || run.sinks.durable.is_some()).then(|| TRANSITIONS.enter());
        // The chain's step (on in this task, from an outcome that owns nothing) goes on from
        // here: matched apart from the other steps, it costs 3 fewer instructions a
        // transition than through the one `match` below (callgrind).
        let step = match b.settle(run, state, &mut outcome, cancelled, attempts) {
            Ok(result) => match b.route(run, state, result) {
                Step::Continue { to, forget: true } => {
                    b.pos = to;
                    std::mem::forget(outcome);
                    continue;
                }
                step => step,
            },
            Err(step) => step,
        };
        match step {
            Step::Continue { to, forget } => {
                b.pos = to;
                if forget {
                    std::mem::forget(outcome);
                }
            }
            Step::GoOn => b.go_on = true,
            Step::Return => return,
        }
    }
}

/// Gate: whether state `pos` may start now. Nothing starts once the run is stopping; the
/// guarded path gates itself (dependencies first, then rate limits, the `max_concurrent`
/// permit and resources); a plain state is counted as a step and marked running here (see
/// `start_state`), and waits for its permit, if any, in the caller.
#[inline(always)]
fn gate<'p>(run: &'p Run, pos: usize, state: &'p CompiledState) -> Gated<'p> {
    if run.is_stopping() {
        return Gated::Stop;
    }
    match &state.guarded {
        Some(guarded) => Gated::Guarded(guarded),
        None if start_state(run, pos) => Gated::Plain,
        None => Gated::Stop,
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

impl Branch<'_> {
    /// Go on from the positions in `next`, or from the fan-out just made: the first in this
    /// task, a task for the others (see `spawn::take_next`); `false` when there are none and
    /// the branch ends.
    #[inline(always)]
    fn take_next(&mut self, run: &Arc<Run>) -> bool {
        match take_next(run, &mut self.next, &mut self.fan) {
            Some((g, s, ord)) => {
                self.group = g.map(Cow::Owned);
                self.pos = s;
                self.ord = ord;
                self.scope_in(run);
                true
            }
            None => false,
        }
    }

    /// Give the branch the context handle of its place: its own (with its ordinal and a
    /// map's item) in a group that keeps an identity per branch, else the run's. The
    /// handle it holds is pointed there in place when nothing else holds it.
    #[inline(always)]
    fn scope_in(&mut self, run: &Run) {
        let item = match self.group.as_deref() {
            Some(g) if g.keeps_branches() && self.ord != NO_BRANCH => g.item(self.ord),
            _ => {
                if let Some(old) = self.scope.take() {
                    ctx_hooks::recycle(old);
                }
                return;
            }
        };
        let item = match self.scope.take() {
            Some(mut held) => match ctx_hooks::rescope(&mut held, self.ord, item) {
                Ok(()) => {
                    self.scope = Some(held);
                    return;
                }
                Err(item) => {
                    ctx_hooks::recycle(held);
                    item
                }
            },
            None => item,
        };
        self.scope = Some(ctx_hooks::scoped(&run.ctx, self.ord, item));
    }

    /// Settle: what the outcome of state `state` (at `self.pos`) means.
    ///
    /// - Completed, with every context write stored: counted (a durable run records it at
    ///   the next `record`), and its result returned for `route`, by reference: it is read
    ///   where the poll wrote it (moving it out first cost a stalled copy per transition, as
    ///   store-to-load forwarding fails on it).
    /// - Cancelled (by `cancel_state`, or at its gate by a failed `Required` dependency): the
    ///   token leaves (see [`Branch::cancelled`]).
    /// - Failed for good (`Err`, a panic, a timeout, a write the context could not encode;
    ///   retries spent): see [`Branch::failed`]. The outcome is taken out of its place.
    #[inline(always)]
    fn settle<'o>(
        &mut self,
        run: &Arc<Run>,
        state: &CompiledState,
        outcome: &'o mut Outcome,
        cancelled: bool,
        attempts: u32,
    ) -> Result<&'o StateResult, Step> {
        if cancelled {
            return Err(self.cancelled(run, state));
        }
        if !agent_core::__private::context::has_write_error(&run.ctx) {
            if let Ok(Ok(result)) = outcome {
                run.record_completion(self.pos, self.rooted && run.runs_alone());
                self.unrecorded = run.sinks.durable.is_some();
                if state.dependents.is_empty() && run.deps.waiting.load(Relaxed) > 0 {
                    // A gate may wait on a condition over the context.
                    run.deps.notify();
                }
                return Ok(result);
            }
        }
        let outcome = std::mem::replace(outcome, Ok(Ok(StateResult::End)));
        Err(self.failed(run, state, outcome, attempts))
    }

    /// A state cancelled: its status says so, its dependents' gates look again, and its
    /// token leaves (the branch ends here, or its group says what runs next).
    #[cold]
    fn cancelled(&mut self, run: &Run, state: &CompiledState) -> Step {
        let pos = self.pos;
        if run.emitting() {
            run.emit(EventKind::StateCancelled { state: run.state_name(pos) });
        }
        let _entered = TRANSITIONS.enter();
        run.set_state_status(pos, StateStatus::Cancelled);
        run.states[pos].attempts_made.store(0, Relaxed);
        if !state.dependents.is_empty() {
            gate::failed(run);
        }
        self.next.clear();
        match self.group.take() {
            Some(g) => {
                // A cancelled state's writes do not count.
                g.end(run, pos, self.ord, None, &mut self.next);
                Step::GoOn
            }
            None => {
                leave_top(run, pos, self.rooted);
                Step::Return
            }
        }
    }

    /// A state failed for good, retries spent: its `on_error` handler runs next, reading the
    /// failure from the context, as if the state had returned its name; without one, the run
    /// fails and the branch stops at the failed state (where a restored run resumes).
    #[cold]
    fn failed(&mut self, run: &Run, state: &CompiledState, outcome: Outcome, attempts: u32) -> Step {
        if attempt::interrupted(run, &outcome) {
            // A durable wait left for a pause: the token stays at the state, which runs
            // again when the run goes on (see `signal`).
            return Step::Return;
        }
        let pos = self.pos;
        let Some(handler) = state.on_error else {
            fail_state(run, pos, outcome, attempts);
            return Step::Return;
        };
        let _entered = TRANSITIONS.enter();
        to_on_error(run, pos, outcome, attempts, handler);
        self.unrecorded = run.sinks.durable.is_some();
        self.next.clear();
        match &self.group {
            None => {
                move_top(run, pos, handler, self.rooted);
                Step::Continue { to: handler, forget: false }
            }
            Some(g) => {
                // The failed state's writes do not count.
                arrive(run, g, pos, handler, self.ord, None, &mut self.next);
                Step::GoOn
            }
        }
    }

    /// Route: where the token of state `state` (at `self.pos`), which completed with
    /// `result`, goes. `Next` at the top level: on in this task (the chain's path); `Next` in
    /// a group: it arrives there, where a join may hold it; `End`: its branch ends, or its
    /// group says what runs next; `Parallel`: a fan-out (see [`Branch::fan_out`]). The
    /// dependents its completion activates start as it moves.
    ///
    /// Every transition but the root task's plain step publishes positions under the
    /// transition lock (see `frontier`), taken here for as long as the token moves.
    #[inline(always)]
    fn route(&mut self, run: &Arc<Run>, state: &CompiledState, result: &StateResult) -> Step {
        let pos = self.pos;
        let _entered;
        match result {
            StateResult::Next(name) => {
                // One place resolves a target, so that the resolution stays inline on the
                // chain's path.
                let Some(to) = target(run, state, pos, name) else { return Step::Return };
                let Some(g) = &self.group else {
                    let dependents = !state.dependents.is_empty();
                    let _entered = if self.rooted && !dependents { None } else { Some(TRANSITIONS.enter()) };
                    if dependents {
                        // Marked first, so the completion does not activate it twice.
                        run.set_state_status(to, StateStatus::Ready);
                        completed(run, pos);
                    }
                    move_top(run, pos, to, self.rooted);
                    return Step::Continue { to, forget: name.is_static() };
                };
                self.next.clear();
                _entered = TRANSITIONS.enter();
                arrive(run, g, pos, to, self.ord, self.scope.as_ref(), &mut self.next);
            }
            StateResult::End => {
                self.next.clear();
                _entered = TRANSITIONS.enter();
                self.end(run);
            }
            StateResult::Parallel(names) => {
                self.next.clear();
                _entered = TRANSITIONS.enter();
                if !self.fan_out(run, state, names) {
                    return Step::Return;
                }
            }
            StateResult::Map(map) => {
                self.next.clear();
                _entered = TRANSITIONS.enter();
                if !self.map(run, state, map) {
                    return Step::Return;
                }
            }
        }
        if !state.dependents.is_empty() {
            // Where this branch goes is marked first, so the completion does not activate
            // it twice.
            for &(_, s, _) in &self.next {
                run.set_state_status(s, StateStatus::Ready);
            }
            completed(run, pos);
        }
        Step::GoOn
    }

    /// The token's branch ends here: it leaves its group, which may release what waited
    /// for it into `next`, or the top level.
    fn end(&mut self, run: &Run) {
        let pos = self.pos;
        match self.group.take() {
            Some(g) => g.end(run, pos, self.ord, self.scope.as_ref(), &mut self.next),
            None => leave_top(run, pos, self.rooted),
        }
    }

    /// A fan-out to `names`: one target goes on as a plain transition; two or more open a
    /// group, whose branches `take_next` starts after a durable run has recorded this
    /// state. `false` if a name is unknown or undeclared (the run fails).
    fn fan_out(&mut self, run: &Arc<Run>, state: &CompiledState, names: &[StateName]) -> bool {
        let pos = self.pos;
        let mut targets: Vec<u32> = Vec::with_capacity(names.len());
        let mut previous: Option<(&str, u32)> = None;
        for name in names {
            // A wide fan-out often names one state many times: resolve each run of equal
            // names once.
            let t = match previous {
                Some((p, t)) if p == name.as_str() => t,
                _ => match run.program.resolve(name) {
                    Some(t) if allowed(state, t as u32) => t as u32,
                    Some(_) => {
                        undeclared(run, pos, name.as_str());
                        return false;
                    }
                    None => {
                        unknown(run, pos, name.as_str());
                        return false;
                    }
                },
            };
            previous = Some((name.as_str(), t));
            targets.push(t);
        }
        match targets.len() {
            0 => self.end(run),
            1 => {
                let to = targets[0] as usize;
                match &self.group {
                    None => {
                        move_top(run, pos, to, self.rooted);
                        self.next.push((None, to, NO_BRANCH));
                    }
                    Some(g) => g.arrive(run, pos, to, self.ord, self.scope.as_ref(), &mut self.next),
                }
            }
            _ => {
                let parent = self.open(run);
                let ident = self.ident(run, parent.as_ref(), None);
                match Group::deferred(&run.program, parent.as_ref(), pos, &targets) {
                    None => {
                        for same in targets.chunk_by(|a, b| a == b) {
                            run.set_state_status(same[0] as usize, StateStatus::Ready);
                        }
                        self.fan = Some(Fan::open(run, parent, pos, targets, ident, None));
                    }
                    Some(defer) => {
                        fan_out_deferred(run, parent, pos, (&targets, &defer), ident, &mut self.next, &mut self.fan)
                    }
                }
            }
        }
        true
    }

    /// The token at `pos` fans out: it leaves the root slot, if it held it (counted from
    /// now on, like every token but the root's, at `pos` until its group is over), and its
    /// group, which becomes the parent of the one it opens (returned).
    fn open(&mut self, run: &Run) -> Option<Arc<Group>> {
        if let (Some(g), Some(scope)) = (&self.group, &self.scope) {
            // What the state that fans out contributed counts for its branch from now.
            g.commit(self.ord, scope);
        }
        if self.group.is_none() && std::mem::take(&mut self.rooted) {
            run.positions.set_root(NO_STATE);
            run.top_enter(self.pos);
        }
        self.group.take().map(Cow::into_owned)
    }

    /// The identity the group this branch opens keeps per branch: for a map, always; for
    /// any fan-out of an agent with reducers, or inside a group that keeps one.
    fn ident(&self, run: &Run, parent: Option<&Arc<Group>>, map: Option<MapMeta>) -> Option<Ident> {
        let inherited = parent.is_some_and(|p| p.keeps_branches());
        let origin_branch = if inherited { self.ord } else { NO_BRANCH };
        (map.is_some() || inherited || run.program.reducers.is_some()).then_some(Ident { origin_branch, map })
    }

    /// A map over `map.items` at `map.target`: a group with one branch per item, spawned
    /// at most `MAP_WINDOW` at a time (see `spawn::Fan`). `false` if the target is unknown
    /// or undeclared, or an item could not be encoded (the run fails).
    fn map(&mut self, run: &Arc<Run>, state: &CompiledState, map: &MapSpec) -> bool {
        let pos = self.pos;
        let Some(to) = target(run, state, pos, &map.target) else { return false };
        let items = match &map.items {
            Ok(items) => items.clone(),
            Err(e) => {
                bad_item(run, pos, e);
                return false;
            }
        };
        if items.is_empty() {
            self.end(run);
            return true;
        }
        let parent = self.open(run);
        let meta =
            MapMeta { target: to as u32, items: items.clone(), into: map.into.as_ref().into(), id: fastrand::u64(..) };
        let ident = self.ident(run, parent.as_ref(), Some(meta));
        run.set_state_status(to, StateStatus::Ready);
        let targets = vec![to as u32; items.len()];
        self.fan = Some(Fan::open(run, parent, pos, targets, ident, Some(StateResult::MAP_WINDOW)));
        true
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
    gate::completed(run, pos, &mut ready);
    start_ready(run, &mut ready);
}

/// Branch `ord` of `g` moves from `from` to `to`; a join may hold it there. `done`: its
/// context handle, when the state completed (its writes count).
fn arrive(
    run: &Run,
    g: &Arc<Group>,
    from: usize,
    to: usize,
    ord: u32,
    done: Option<&Context>,
    next: &mut Vec<Position>,
) {
    g.arrive(run, from, to, ord, done, next);
    if next.is_empty() {
        run.set_state_status(to, StateStatus::Blocked);
    }
}

/// The state that `state` (at `pos`) names as its next, if it exists and `state` may go
/// there; else the run fails.
#[inline(always)]
fn target(run: &Run, state: &CompiledState, pos: usize, name: &StateName) -> Option<usize> {
    let Some(to) = run.program.resolve_from(pos, name) else {
        unknown(run, pos, name.as_str());
        return None;
    };
    if !allowed(state, to as u32) {
        undeclared(run, pos, name.as_str());
        return None;
    }
    Some(to)
}

/// Whether `state` may go to `to`: any state, unless it declared its targets.
#[inline]
fn allowed(state: &CompiledState, to: u32) -> bool {
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

#[cold]
fn bad_item(run: &Run, from: usize, error: &str) {
    run.fail(AgentError::StateFailed {
        state: run.program.states[from].name.to_string(),
        attempts: 1,
        source: format!("a map's item could not be encoded: {error}").into(),
        context: run.ctx.clone(),
        checkpoint: None,
    });
}

#[cold]
fn unknown(run: &Run, from: usize, to: &str) {
    run.fail(AgentError::UnknownState {
        from: run.program.states[from].name.to_string(),
        to: to.to_owned(),
        context: run.ctx.clone(),
    });
}
