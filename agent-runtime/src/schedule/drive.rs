//! Carrying out schedules: a [`Scheduler`] pass reads the due schedules of the agents it
//! serves, plans each (`plan`), starts and cancels runs, and moves each cursor.
//!
//! Invariants (exactly one run per tick, across a fleet):
//! - A tick's run is submitted with the idempotency key `schedule:{name}:{tick_ms}` (unique
//!   per agent in the store), before the cursor moves. Two workers planning the same tick
//!   submit the same run; a worker that dies between submitting and moving the cursor leaves
//!   the tick to the next pass, which finds the run made. So no tick starts two runs, and no
//!   handled tick is lost.
//! - The cursor moves with the store's version-guarded write: of passes over the same ticks
//!   one moves it; the others stop there for that schedule (their submissions were the same
//!   runs).
//! - A schedule whose record no longer parses is skipped with a warning; a store failure
//!   ends the pass for that schedule only (the next pass tries again).
//! - A scheduled run starts from the schedule's input plus [`SCHEDULE_KEY`] and
//!   [`TICK_KEY`] (a backfilled one too), so it knows which tick it is for.
//! - Time is `clock::now_ms` (it advances with paused tokio time, as timers do).

use std::sync::Arc;
use std::time::Duration;

use agent_core::AgentError;

use super::plan::{plan, Action, Cursor};
use super::spec::{Rule, ScheduleError};
use crate::store::{CheckpointStore, ScheduleAdvance, ScheduleRecord, Submission};
use crate::{clock, Agent};

/// The context key naming the schedule that started a run.
pub const SCHEDULE_KEY: &str = "schedule.name";
/// The context key holding the tick a scheduled run was started for (milliseconds since the
/// Unix epoch): what the run is about (the hour of a batch), whenever it actually starts.
pub const TICK_KEY: &str = "schedule.tick_ms";

/// Ticks one schedule handles in a pass, at most.
const TICKS_PER_PASS: usize = 100;

/// Starts the runs of the schedules of the agents it serves, from their store (a
/// [`Worker`](crate::Worker) runs one beside its claims; one per process is enough, and any
/// number across a fleet start each tick once).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use agent_core::{Context, StateResult};
/// use agent_runtime::schedule::{Schedule, Scheduler};
/// use agent_runtime::{store::MemoryStore, Agent};
///
/// let store = MemoryStore::new();
/// let define = || {
///     let mut agent = Agent::new("report");
///     agent.add_state("build", |_ctx: Context| async { StateResult::End });
///     agent
/// };
/// define().with_store(store.clone()).add_schedule(Schedule::new("hourly", "0 * * * *")).await?;
/// let scheduler = Scheduler::new(store).serve(define);
/// let report = scheduler.tick().await?; // one pass now: nothing is due yet
/// assert!(report.started.is_empty());
/// # Ok(())
/// # }
/// ```
pub struct Scheduler {
    store: Arc<dyn CheckpointStore>,
    agents: Vec<Agent>,
}

/// What a [`Scheduler`] pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SchedulerReport {
    /// Runs started: the schedule's agent and name, the tick (milliseconds since the Unix
    /// epoch) and the run's id (the run made for the tick, maybe by another worker).
    pub started: Vec<(String, String, i64, String)>,
    /// Ticks skipped (the previous run going on, or a tick already held).
    pub skipped: u32,
    /// Ticks held until the previous run ends (`buffer-one`).
    pub held: u32,
    /// Ticks older than the catch-up window, not started.
    pub missed: u32,
    /// Previous runs cancelled (`cancel`).
    pub cancelled: u32,
    /// Schedules whose cursor another pass moved first (this pass's runs were the same).
    pub lost: u32,
}

impl Scheduler {
    /// A scheduler over `store`, serving no agent yet.
    pub fn new(store: impl CheckpointStore) -> Scheduler {
        Scheduler { store: Arc::new(store), agents: Vec::new() }
    }

    /// Also start the runs of the schedules of the agent `define` makes.
    pub fn serve(mut self, define: impl FnOnce() -> Agent) -> Scheduler {
        self.agents.push(define());
        self
    }

    pub(crate) fn with_agents(store: Arc<dyn CheckpointStore>, agents: Vec<Agent>) -> Scheduler {
        Scheduler { store, agents }
    }

    /// One pass now: start what is due (see the module docs).
    ///
    /// # Errors
    ///
    /// [`ScheduleError::Store`] when the store cannot list the schedules (a failure on one
    /// schedule is logged, and the pass goes on with the others).
    pub async fn tick(&self) -> Result<SchedulerReport, ScheduleError> {
        let mut report = SchedulerReport::default();
        for agent in &self.agents {
            let hash = match agent.graph_hash() {
                Ok(h) => h.to_string(),
                Err(e) => {
                    tracing::warn!(agent = %agent.name(), error = %e, "cannot start the runs of this agent's schedules");
                    continue;
                }
            };
            for record in self.store.schedules(Some(agent.name())).await? {
                if let Err(e) = self.pass(&record, &hash, &mut report).await {
                    tracing::warn!(agent = %record.agent, schedule = %record.name, error = %e, "schedule pass failed; trying again at the next");
                }
            }
        }
        Ok(report)
    }

    /// Pass after pass, every `every`, until `stop` resolves.
    pub(crate) async fn run_until(self, every: Duration, stop: impl std::future::Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        loop {
            if let Err(e) = self.tick().await {
                tracing::warn!(error = %e, "could not read the schedules; trying again at the next pass");
            }
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }

    async fn pass(
        &self,
        record: &ScheduleRecord,
        hash: &str,
        report: &mut SchedulerReport,
    ) -> Result<(), ScheduleError> {
        if record.paused {
            return Ok(());
        }
        let now = clock::now_ms();
        if record.next_tick_ms > now && record.buffered_tick_ms.is_none() {
            return Ok(());
        }
        let rule = Rule::of(record)?;
        let previous_running = match &record.last_run_id {
            Some(id) => self.store.get_run(id).await?.is_some_and(|r| !r.status.is_finished()),
            None => false,
        };
        let cursor =
            Cursor { next_tick_ms: record.next_tick_ms, buffered_tick_ms: record.buffered_tick_ms, previous_running };
        let planned = plan(&rule, cursor, now, TICKS_PER_PASS);
        let mut last_run = record.last_run_id.clone();
        for action in &planned.actions {
            match *action {
                Action::Start(tick) | Action::Replace(tick) => {
                    if let (Action::Replace(_), Some(previous)) = (action, &last_run) {
                        match crate::store::cancel_run(&*self.store, previous).await {
                            Ok(_) => report.cancelled += 1,
                            Err(e) => {
                                tracing::info!(run_id = %previous, error = %e, "the previous run could not be cancelled")
                            }
                        }
                    }
                    let run_id = submit_tick(&*self.store, record, hash, tick).await?;
                    report.started.push((record.agent.clone(), record.name.clone(), tick, run_id.clone()));
                    last_run = Some(run_id);
                }
                Action::Skip(tick) => {
                    tracing::info!(schedule = %record.name, tick, "tick skipped: the previous run goes on");
                    report.skipped += 1;
                }
                Action::Hold(tick) => {
                    tracing::info!(schedule = %record.name, tick, "tick held until the previous run ends");
                    report.held += 1;
                }
                Action::Missed { first, count } => {
                    tracing::warn!(schedule = %record.name, first, count, "ticks missed beyond the catch-up window");
                    report.missed += count;
                }
            }
        }
        let mut advance = ScheduleAdvance::of(record, planned.next_tick_ms, now);
        advance.buffered_tick_ms = planned.buffered_tick_ms;
        advance.last_run_id = last_run;
        if advance.next_tick_ms == record.next_tick_ms
            && advance.buffered_tick_ms == record.buffered_tick_ms
            && advance.last_run_id == record.last_run_id
        {
            return Ok(());
        }
        if !self.store.advance_schedule(&advance).await? {
            report.lost += 1;
        }
        Ok(())
    }
}

/// Submit the run of `record`'s `tick` under the graph `hash` (idempotent: see the module
/// docs); its id.
pub(crate) async fn submit_tick(
    store: &dyn CheckpointStore,
    record: &ScheduleRecord,
    hash: &str,
    tick: i64,
) -> Result<String, ScheduleError> {
    let run_id = uuid::Uuid::new_v4().to_string();
    // The run knows what started it: the schedule and the tick, beside the schedule's input.
    let ctx = agent_core::Context::from_json_str(&record.input)
        .map_err(|e| ScheduleError::Input { message: format!("the stored input does not read: {e}") })?;
    ctx.set_state(SCHEDULE_KEY, record.name.as_str());
    ctx.set_state(TICK_KEY, tick);
    let input = ctx.to_json_string().map_err(|e| ScheduleError::Input { message: e.to_string() })?;
    let submission = Submission::new(run_id, record.agent.as_str(), hash, input)
        .idempotency_key(format!("schedule:{}:{tick}", record.name));
    let submitted = store.submit_run(&submission).await?;
    if submitted.created {
        tracing::info!(schedule = %record.name, tick, run_id = %submitted.run.run_id, "scheduled run submitted");
        crate::agent::SUBMITTED.notify_waiters();
    }
    Ok(submitted.run.run_id)
}

impl From<AgentError> for ScheduleError {
    fn from(e: AgentError) -> ScheduleError {
        ScheduleError::Input { message: e.to_string() }
    }
}
