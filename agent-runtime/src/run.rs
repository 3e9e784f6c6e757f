//! The shared state of one run.
//!
//! Invariants:
//! - One `Run` per call of `Agent::run`; every branch task holds an `Arc<Run>`, itself or
//!   through the fan-out it was spawned for (see `branch::Fan`).
//! - `tasks` counts spawned branch tasks still alive (each holds a [`TaskGuard`], or holds a
//!   fan-out whose guard counts all its tasks as one); the run is
//!   over when the root branch has returned and `tasks` is zero.
//! - The first failure wins: it is stored once, the run's status becomes `Failed`, and the
//!   cancellation token stops every other branch (their futures are dropped).
//! - Per-state counters are atomics indexed by state, so recording a completion takes no
//!   lock; the order of first completions is a sequence number taken once per state.

use std::sync::atomic::{
    AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
    Ordering::SeqCst,
};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use agent_core::{AgentError, Context};
use rustc_hash::FxHashSet;
use tokio::sync::{Notify, Semaphore};

use crate::deps::DepsState;
use crate::durable::Durable;
use crate::events::{EventHub, EventKind};
use crate::fanin::Group;
use crate::human::InputHub;
use crate::pool::{Asker, ResourcePool};
use crate::program::Program;
use crate::timing::Timings;
use agent_core::{AgentStatus, StateStatus};

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

pub(crate) struct Run {
    pub program: Arc<Program>,
    pub ctx: Context,
    run_id: std::sync::OnceLock<String>,
    pub status: AtomicU8,
    pub states: Box<[StateCounters]>,
    /// How many distinct states have completed (orders `StateCounters::first_completed`).
    distinct_completed: AtomicU32,
    /// States started; counted only when the program has `max_steps`.
    pub steps: AtomicU64,
    /// Spawned branch tasks alive (a fan-out's tasks count as one: see `branch::Fan`).
    tasks: AtomicUsize,
    tasks_done: Notify,
    /// Woken by `cancel_state`; running states re-check their `cancel_epoch`.
    pub state_cancelled: Notify,
    error: Mutex<Option<AgentError>>,
    /// Set with `error`, so a run that did not fail never takes its lock.
    has_error: AtomicBool,
    /// Set, and `stop_notify` woken, when the run is stopped for good (see [`Run::stopped`]).
    cancelled: AtomicBool,
    stop_notify: Notify,
    /// Set when the run stops, read inline before every state.
    stopping: AtomicBool,
    pub semaphore: Option<Semaphore>,
    started: Instant,
    /// The run's length in nanoseconds once over; `u64::MAX` while it goes on.
    finished_after: AtomicU64,
    /// Dependency bookkeeping (see `deps`).
    pub deps: DepsState,
    /// The root task's position while it moves alone at the top level; `NO_STATE` otherwise.
    pub root_slot: AtomicU32,
    /// Every fan-out group opened, for checkpoints (closed ones are skipped, and pruned
    /// when groups are opened).
    pub groups: Mutex<Vec<Arc<Group>>>,
    /// Set by `pause`: branches stop before their next state.
    pausing: AtomicBool,
    /// Notified when the run is over, if `pausing` or `end_watched` is set.
    ended: Notify,
    /// Set by a caller of [`Run::ended`].
    end_watched: AtomicBool,
    /// The store a durable run records itself in (see `durable`).
    pub durable: Option<Arc<Durable>>,
    /// What the run shares with its agent.
    pub links: Arc<Links>,
    /// Per-state timings, when recorded (see `timing`).
    pub timing: Option<Timings>,
    /// Time states spent waiting for human input, in nanoseconds.
    pub input_wait: AtomicU64,
    /// The run's id as events carry it, made at the first event.
    event_run_id: std::sync::OnceLock<Arc<str>>,
    /// The run's id as its requests for human input carry it, made at the first request
    /// (see `human::wait`).
    pub input_id: std::sync::OnceLock<Arc<str>>,
    /// When the run must end, if it has a deadline (see `agent::launch`).
    pub deadline: Option<Deadline>,
}

/// A run's deadline: on tokio's clock for the timers, and on the wall clock for a durable
/// run's checkpoints, so that a recovered run ends when the original would have.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline {
    /// When, on tokio's clock.
    pub at: tokio::time::Instant,
    /// When, in milliseconds since the Unix epoch.
    pub wall_ms: i64,
}

impl Deadline {
    /// `after` from now.
    pub(crate) fn after(after: Duration) -> Deadline {
        let ms = i64::try_from(after.as_millis()).unwrap_or(i64::MAX);
        Deadline { at: tokio::time::Instant::now() + after, wall_ms: crate::store::now_ms().saturating_add(ms) }
    }

    /// At `wall_ms` (a recorded deadline; one already past is now).
    pub(crate) fn at_wall(wall_ms: i64) -> Deadline {
        let left = u64::try_from(wall_ms.saturating_sub(crate::store::now_ms())).unwrap_or(0);
        Deadline { at: tokio::time::Instant::now() + Duration::from_millis(left), wall_ms }
    }

    /// The earlier of two deadlines.
    pub(crate) fn min(a: Option<Deadline>, b: Option<Deadline>) -> Option<Deadline> {
        match (a, b) {
            (Some(a), Some(b)) => Some(if b.wall_ms < a.wall_ms { b } else { a }),
            (a, b) => a.or(b),
        }
    }
}

/// What a run shares with its agent, behind one reference count: a run takes one (a locked
/// instruction each way), where three separate `Arc`s cost three. The agent holds it too,
/// and reaches its hubs through it.
pub(crate) struct Links {
    /// Names of states whose completion counts forever (`Once` dependencies).
    pub once: Mutex<FxHashSet<String>>,
    /// The agent's requests for human input, which checkpoints carry.
    pub inputs: Arc<InputHub>,
    /// The agent's event channel (see `events`).
    pub events: Arc<EventHub>,
}

impl Links {
    /// An agent's: no `Once` completion yet, hubs with no request and no subscriber.
    pub(crate) fn new() -> Links {
        Links { once: Mutex::default(), inputs: InputHub::new(), events: EventHub::new() }
    }
}

/// `Run::root_slot` when the root task holds no position.
pub(crate) const NO_STATE: u32 = u32::MAX;

impl Run {
    #[cfg(test)]
    pub(crate) fn new(program: Arc<Program>, ctx: Context) -> Run {
        Run::with_links(program, ctx, Arc::new(Links::new()))
    }

    /// A run sharing `links` with its agent (and with the agent's other runs).
    pub(crate) fn with_links(program: Arc<Program>, ctx: Context, links: Arc<Links>) -> Run {
        let n = program.states.len();
        Run {
            deps: DepsState::new(n, program.has_dependencies),
            semaphore: program.max_concurrent.map(Semaphore::new),
            program,
            ctx,
            run_id: std::sync::OnceLock::new(),
            status: AtomicU8::new(AgentStatus::Running as u8),
            states: (0..n)
                .map(|_| StateCounters {
                    status: AtomicU8::new(StateStatus::Pending as u8),
                    completed: AtomicU32::new(0),
                    failed: AtomicU32::new(0),
                    preempted: AtomicU32::new(0),
                    cancel_epoch: AtomicU32::new(0),
                    retries: AtomicU32::new(0),
                    resource_wait: AtomicU64::new(0),
                    first_completed: AtomicU32::new(0),
                    at_top: AtomicU32::new(0),
                    attempts_made: AtomicU32::new(0),
                    resumed_attempts: AtomicU32::new(0),
                })
                .collect(),
            distinct_completed: AtomicU32::new(0),
            steps: AtomicU64::new(0),
            tasks: AtomicUsize::new(0),
            tasks_done: Notify::new(),
            state_cancelled: Notify::new(),
            error: Mutex::new(None),
            has_error: AtomicBool::new(false),
            cancelled: AtomicBool::new(false),
            stop_notify: Notify::new(),
            stopping: AtomicBool::new(false),
            started: Instant::now(),
            finished_after: AtomicU64::new(u64::MAX),
            root_slot: AtomicU32::new(NO_STATE),
            groups: Mutex::new(Vec::new()),
            pausing: AtomicBool::new(false),
            ended: Notify::new(),
            end_watched: AtomicBool::new(false),
            durable: None,
            links,
            timing: None,
            event_run_id: std::sync::OnceLock::new(),
            input_id: std::sync::OnceLock::new(),
            input_wait: AtomicU64::new(0),
            deadline: None,
        }
    }

    /// Whether someone subscribed to events: one relaxed load (see `events`).
    #[inline(always)]
    pub(crate) fn emitting(&self) -> bool {
        self.links.events.active()
    }

    /// Send an event (call only when [`Run::emitting`], so nothing is built otherwise).
    #[cold]
    #[inline(never)]
    pub(crate) fn emit(&self, kind: EventKind) {
        self.links.events.send(self.event_run_id.get_or_init(|| Arc::from(self.run_id())).clone(), kind);
    }

    /// The name of state `pos`, owned (for events).
    pub(crate) fn state_name(&self, pos: usize) -> String {
        self.program.states[pos].name.to_string()
    }

    /// Whether anything watches states start and end (events or timings).
    #[inline(always)]
    pub(crate) fn watched(&self) -> bool {
        self.timing.is_some() || self.emitting()
    }

    /// Continue the run `run_id` (a restored one) instead of a new one.
    pub(crate) fn set_run_id(&self, run_id: String) {
        let _ = self.run_id.set(run_id);
    }

    /// States completed before, in the order of their first completion (a restored run).
    pub(crate) fn restore_completion_order(&self, order: impl Iterator<Item = usize>) {
        for s in order {
            let seq = self.distinct_completed.fetch_add(1, Relaxed) + 1;
            self.states[s].first_completed.store(seq, Relaxed);
        }
    }

    /// The run's id (a UUID v4), formatted on first use.
    pub(crate) fn run_id(&self) -> &str {
        // Made when first asked for (by a checkpoint, a store, a result or a trace): a run
        // nobody asks about pays no random number for it.
        self.run_id.get_or_init(|| uuid::Uuid::new_v4().to_string())
    }

    pub(crate) fn status(&self) -> AgentStatus {
        AgentStatus::from_u8(self.status.load(Relaxed))
    }

    #[inline]
    pub(crate) fn set_state_status(&self, state: usize, s: StateStatus) {
        // Many branches running one state write the same status: a load first keeps the
        // cache line shared between workers instead of bouncing it on every write.
        let status = &self.states[state].status;
        if status.load(Relaxed) != s as u8 {
            status.store(s as u8, Relaxed);
        }
    }

    /// Count a completion of `state`. `alone`: the caller is the root branch and no other
    /// task is alive (see [`Run::runs_alone`]), so no one else can count at the same time
    /// and a plain load and store does what an atomic add (a locked instruction, about a
    /// tenth of a chain's transition) would.
    #[inline]
    pub(crate) fn record_completion(&self, state: usize, alone: bool) {
        let c = &self.states[state];
        self.set_state_status(state, StateStatus::Completed);
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

    pub(crate) fn record_input_wait(&self, waited: Duration) {
        let nanos = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        self.input_wait.fetch_add(nanos, Relaxed);
    }

    /// End the run with `error` unless it already ended; stop every branch.
    pub(crate) fn fail(&self, error: AgentError) {
        let mut slot = self.error.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() && !self.status().is_finished() {
            tracing::debug!(run_id = %self.run_id(), %error, "run failed");
            *slot = Some(error);
            self.has_error.store(true, Relaxed);
            self.status.store(AgentStatus::Failed as u8, Relaxed);
        }
        drop(slot);
        self.stop();
    }

    /// Stop every branch; the run ends `Cancelled` unless it already ended. Every state it
    /// was running or about to run reads `Cancelled` from now on (and once more when the run
    /// is over, for a branch that was starting one meanwhile).
    pub(crate) fn cancel(&self) {
        let _ =
            self.status.compare_exchange(AgentStatus::Running as u8, AgentStatus::Cancelled as u8, Relaxed, Relaxed);
        self.stop();
        if self.status() == AgentStatus::Cancelled {
            self.mark_cancelled();
        }
    }

    /// States that were running, ready, blocked or waiting to retry read `Cancelled`.
    fn mark_cancelled(&self) {
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

    /// The run's deadline passed: start no further state (running ones may finish); the
    /// run ends `TimedOut` unless it already ended.
    pub(crate) fn time_out(&self) {
        let _ = self.status.compare_exchange(AgentStatus::Running as u8, AgentStatus::TimedOut as u8, Relaxed, Relaxed);
        self.stopping.store(true, Relaxed);
        self.withdraw_from_pools();
    }

    /// Admit nothing new: branches stop before their next state, states waiting to start
    /// (for a dependency, resources, a rate limit or a retry) leave, running ones finish.
    /// The run ends `Paused` unless it already ended.
    pub(crate) fn pause(&self) -> bool {
        let paused = self
            .status
            .compare_exchange(AgentStatus::Running as u8, AgentStatus::Paused as u8, Relaxed, Relaxed)
            .is_ok();
        if paused {
            // SeqCst with `finish`: either it sees a pause to wake, or `ended` sees it over.
            self.pausing.store(true, SeqCst);
            self.stopping.store(true, Relaxed);
            // Wake states waiting to start, so they leave.
            self.state_cancelled.notify_waiters();
        }
        paused
    }

    /// Whether `pause` was called.
    #[inline]
    pub(crate) fn is_pausing(&self) -> bool {
        self.pausing.load(Relaxed)
    }

    /// Wait until the run is over (`finish` wakes waiters only when someone waits: see
    /// `end_watched`).
    pub(crate) async fn ended(&self) {
        // SeqCst with `finish`: either it sees a waiter to wake, or this sees the run over.
        self.end_watched.store(true, SeqCst);
        loop {
            let notified = self.ended.notified();
            if self.finished_after.load(SeqCst) != u64::MAX {
                return;
            }
            notified.await;
        }
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

    /// Remember a newly opened group for checkpoints.
    pub(crate) fn register_group(&self, group: &Arc<Group>) {
        let mut groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        if groups.len() >= 64 && groups.len().is_power_of_two() {
            groups.retain(|g| !g.is_closed());
        }
        groups.push(group.clone());
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

    fn stop(&self) {
        self.stopping.store(true, Relaxed);
        self.cancelled.store(true, SeqCst);
        self.withdraw_from_pools();
        self.stop_notify.notify_waiters();
    }

    /// Withdraw this run's queued resource requests (it is stopping, so nothing of it may
    /// be admitted any more): after `stopping` is set, so a request racing this sees it
    /// under the pool's lock (see `ResourcePool::acquire`).
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

    /// Ready once the run is stopped for good (it failed, or was cancelled, or its cleanup
    /// time ran out; not when pausing or at the deadline, where running states may finish):
    /// what every branch task races its work against, dropping it. A `Notify` in the run
    /// rather than a `CancellationToken`, which costs every run an allocation of its own.
    pub(crate) async fn stopped(&self) {
        loop {
            // Made before the check: a `notify_waiters` after it wakes this future.
            let notified = self.stop_notify.notified();
            if self.cancelled.load(SeqCst) {
                return;
            }
            notified.await;
        }
    }

    #[inline]
    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Relaxed)
    }

    /// Count `n` branch tasks about to be spawned.
    pub(crate) fn tasks_started(&self, n: usize) {
        self.tasks.fetch_add(n, Relaxed);
    }

    /// Whether no spawned task is alive: called by the root branch, which alone spawns
    /// while it is the only task, this says no other branch can be writing the run's
    /// counters. Acquire: what ended tasks wrote before counting out is seen.
    #[inline]
    pub(crate) fn runs_alone(&self) -> bool {
        self.tasks.load(Acquire) == 0
    }

    fn task_ended(&self) {
        // Release: pairs with `runs_alone`.
        if self.tasks.fetch_sub(1, Release) == 1 {
            self.tasks_done.notify_one();
        }
    }

    /// Wait until no spawned branch task is alive.
    pub(crate) async fn tasks_finished(&self) {
        loop {
            let notified = self.tasks_done.notified();
            if self.tasks.load(Relaxed) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Mark the run over: `Completed` unless it failed or was cancelled.
    pub(crate) fn finish(&self) -> Option<AgentError> {
        let _ =
            self.status.compare_exchange(AgentStatus::Running as u8, AgentStatus::Completed as u8, Relaxed, Relaxed);
        let nanos = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
        self.finished_after.store(nanos, SeqCst);
        // Only `pause` and `cancel_all` wait for the end (and `ended` checks
        // `finished_after` itself).
        if self.pausing.load(SeqCst) || self.end_watched.load(SeqCst) {
            self.ended.notify_waiters();
        }
        if self.status() == AgentStatus::Cancelled {
            // Every branch has stopped: no state is running any more.
            self.mark_cancelled();
        }
        if !self.has_error.load(Relaxed) {
            return None;
        }
        self.error.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    /// The states running now, by name.
    pub(crate) fn running_states(&self) -> Vec<String> {
        (self.states.iter().enumerate())
            .filter(|(_, c)| c.status.load(Relaxed) == StateStatus::Running as u8)
            .map(|(i, _)| self.program.states[i].name.to_string())
            .collect()
    }

    pub(crate) fn completed_states(&self) -> Vec<String> {
        let mut order: Vec<(u32, usize)> = (self.states.iter().enumerate())
            .filter_map(|(i, c)| match c.first_completed.load(Relaxed) {
                0 => None,
                seq => Some((seq, i)),
            })
            .collect();
        order.sort_unstable();
        order.into_iter().map(|(_, i)| self.program.states[i].name.to_string()).collect()
    }

    pub(crate) fn elapsed(&self) -> Duration {
        match self.finished_after.load(Relaxed) {
            u64::MAX => self.started.elapsed(),
            nanos => Duration::from_nanos(nanos),
        }
    }
}

impl crate::pool::Asker for Run {
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
        self.run.task_ended();
    }
}
