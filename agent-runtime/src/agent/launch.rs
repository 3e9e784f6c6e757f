//! Launching a run: compile the program, prepare the run, seed it, drive it to its end
//! under the deadline, and build its result; in the caller's task (`run`) or in a task of
//! its own (`start`, see `handle`).
//!
//! Invariants:
//! - A run takes `live` once to start (twice when the definition changed: `def` is taken
//!   in between to compile it, see `Agent::program_in`); it is the agent's most recent run
//!   from then on. Any number of runs of one agent go on at once: they share the compiled
//!   program (which holds nothing a run changes but the checked hint `last_target` and the
//!   rate limiters, shared by design) and the agent's links, nothing else.
//! - A paused run is resumed at most once (`Run::successor`); the resumed run, a new `Run`
//!   with the same id, is the agent's most recent run only if the paused one was.
//! - Dropping the future of `run()` cancels the run (`CancelOnDrop`): no branch outlives it.
//!   A started run's future lives in its own task, so dropping its handle does not.
//! - A durable run claims its run, and its row and first snapshot are written, before any
//!   state runs; its writer commits the final snapshot, with the final status, after the run
//!   is over, and gives the lease back (see `durable`). A claim made by `recover` is handed
//!   to `launch` with the checkpoint it read, and goes only with that checkpoint.
//! - The steps add no allocation and no await of their own: they are plain functions, or
//!   futures nested in the one future of `run()`; only a durable run awaits its store
//!   before its first state.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use agent_core::{AgentError, AgentStatus, Checkpoint, CheckpointError, Context};

use tracing::Instrument;

use super::{lock, Agent, Live};
use crate::checkpoint;
use crate::durable::{store_error, Durable};
use crate::events::EventKind;
use crate::exec;
use crate::program::Program;
use crate::result::AgentResult;
use crate::run::Position;
use crate::run::{Deadline, Run};
use tokio::time::Instant;

impl Agent {
    /// The compiled program, compiling it first if the definition changed.
    pub(super) fn program(&self) -> Result<Arc<Program>, AgentError> {
        let live = lock(&self.shared.live);
        self.program_in(live).map(|(program, _)| program)
    }

    /// The compiled program, compiling it first if the definition changed; returns the lock
    /// on `live`, held again (a run goes on under it).
    fn program_in<'a>(
        &'a self,
        live: MutexGuard<'a, Live>,
    ) -> Result<(Arc<Program>, MutexGuard<'a, Live>), AgentError> {
        if let Some(p) = &live.compiled {
            return Ok((p.clone(), live));
        }
        // Lock order: `def`, then `live` (`edit` takes them one after the other). `def` stays
        // locked until the program is stored, so no edit slips in between and leaves a
        // program of the old definition in place.
        drop(live);
        let def = lock(&self.shared.def);
        let program = match def.graph.filter(|_| def.pristine) {
            Some(graph) => crate::program::shared(graph, || Program::compile(&self.shared.name, &def))?,
            None => Arc::new(Program::compile(&self.shared.name, &def)?),
        };
        let mut live = lock(&self.shared.live);
        drop(def);
        live.compiled = Some(program.clone());
        Ok((program, live))
    }

    /// Run the workflow from its start to its end.
    ///
    /// Validates the definition first (no states, duplicate names, unknown start,
    /// dependencies or `on_error` targets, dependency cycles, invalid options): nothing runs
    /// if it is invalid. Works on any tokio runtime; fan-out branches are spawned on it, so
    /// on a multi-thread runtime they run in parallel.
    ///
    /// # Errors
    ///
    /// The validation errors above; [`AgentError::StateFailed`] when a state returns `Err`
    /// or panics; [`AgentError::UnknownState`] when a computed target names no state;
    /// [`AgentError::MaxSteps`]. Errors that end a started run carry its context.
    pub async fn run(&self) -> Result<AgentResult, AgentError> {
        self.run_in(Context::new()).await
    }

    /// Run the workflow on a context prepared by the caller (inputs set before the start).
    pub async fn run_in(&self, ctx: Context) -> Result<AgentResult, AgentError> {
        self.run_with(RunOptions::new().context(ctx)).await
    }

    /// Run with options: a deadline for the whole run, and a context prepared beforehand.
    ///
    /// At the deadline no further state starts; states still running get `cleanup_timeout`
    /// (zero by default) to finish, then their futures are dropped. The run ends
    /// [`AgentStatus::TimedOut`] and returns [`AgentError::TimedOut`] with its context.
    ///
    /// ```
    /// use std::time::Duration;
    /// use agent_runtime::{Agent, AgentStatus, RunOptions};
    /// use agent_core::{AgentError, Context, StateResult};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let mut agent = Agent::new("slow");
    /// agent.add_state("wait", |_ctx: Context| async {
    ///     tokio::time::sleep(Duration::from_secs(60)).await;
    ///     StateResult::End
    /// });
    /// let err = agent.run_with(RunOptions::new().timeout(Duration::from_secs(5))).await.unwrap_err();
    /// assert!(matches!(err, AgentError::TimedOut { .. }));
    /// assert_eq!(agent.status(), AgentStatus::TimedOut);
    /// # }
    /// ```
    pub async fn run_with(&self, options: RunOptions) -> Result<AgentResult, AgentError> {
        let launch = self.launch(options, None, None, None)?;
        self.go(launch).await
    }

    /// Drive a launched run to its end, in this task; its result.
    pub(super) async fn go(&self, launch: Launch) -> Result<AgentResult, AgentError> {
        let Launch { run, restored, durable, after, cleanup_timeout } = launch;
        let span = tracing::info_span!("agent_run", agent = %self.shared.name, run_id = %run.run_id());
        async {
            announce(&run, restored.is_none());
            // The run is claimed, and its row and a first snapshot exist, before any state
            // runs; the hold gives the lease back if this future is dropped.
            let _hold = match &durable {
                Some(d) => Some(start_durable(&run, d, restored.is_none()).await?),
                None => None,
            };
            let (error, overran) = drive(&run, restored, durable, cleanup_timeout).await;
            self.conclude(&run, error, after, overran)
        }
        .instrument(span)
        .await
    }

    /// Make the launch that resumes `paused`, once every branch of it has stopped.
    ///
    /// # Errors
    ///
    /// [`AgentError::NotPaused`] when `paused` is not paused, or another caller resumed it
    /// first; otherwise as [`Agent::launch`].
    pub(super) async fn resume_launch(&self, paused: &Arc<Run>) -> Result<Launch, AgentError> {
        let not_paused = || AgentError::NotPaused { agent: self.shared.name.clone() };
        if paused.status() != AgentStatus::Paused {
            return Err(not_paused());
        }
        paused.ended().await;
        if !paused.successor.claim() {
            return Err(not_paused());
        }
        let checkpoint = checkpoint::capture(paused, &self.shared.name);
        match self.launch(RunOptions::new(), Some(checkpoint), Some(paused), None) {
            Ok(launch) => {
                paused.successor.set(launch.run.clone());
                Ok(launch)
            }
            Err(e) => {
                paused.successor.release();
                Err(e)
            }
        }
    }

    /// Prepare a run under the lock on `live`, and what driving it needs: the program
    /// (compiled if the definition changed), a run of it on the checkpoint's context
    /// (`checkpoint`, or else the one `restore_from_checkpoint` left for the next run, if
    /// any) or on the options' context, with its durable writer and timings if asked,
    /// seeded from that checkpoint, its context's input broker installed; it is the agent's
    /// most recent run on return (when it `resumes` a paused run, only if that one was). A
    /// durable run takes `claimed` (the store's claim `recover` made) if it claims the
    /// checkpoint's run; otherwise it claims its run itself when it starts.
    ///
    /// # Errors
    ///
    /// The program's validation errors; a checkpoint to restore whose context cannot be
    /// read or which does not fit the program.
    pub(super) fn launch(
        &self,
        options: RunOptions,
        checkpoint: Option<Checkpoint>,
        resumes: Option<&Arc<Run>>,
        claimed: Option<crate::durable::Claimed>,
    ) -> Result<Launch, AgentError> {
        let RunOptions { timeout, cleanup_timeout, context, run_id } = options;
        let (program, mut live) = self.program_in(lock(&self.shared.live))?;
        let (left, durable) = {
            let persist = &mut live.persist;
            // A claim made by `recover` goes with the checkpoint it restores, and only with it;
            // a worker's claim of a submitted run goes with the id it was given.
            let claimed = claimed.filter(|c| match &checkpoint {
                Some(r) => r.run_id == c.row.run_id,
                None => run_id.as_ref() == Some(&c.row.run_id),
            });
            let ttl = persist.lease_ttl.unwrap_or(crate::durable::DEFAULT_LEASE_TTL);
            let durable = persist.store.clone().map(|store| {
                Arc::new(Durable::new(store, self.shared.name.clone(), persist.checkpoint_interval, ttl, claimed))
            });
            // A checkpoint given, or a run submitted beforehand (an id given), leaves the one
            // left for the next run in place.
            let left = if checkpoint.is_none() && run_id.is_none() { persist.restore.take() } else { None };
            (left, durable)
        };
        // Borrowed, not moved: a checkpoint is a few hundred bytes, and a plain run has none.
        let restore = checkpoint.as_ref().or(left.as_ref());
        let ctx = match restore {
            Some(c) => c.read_context().map_err(|e| CheckpointError::Mismatch {
                agent: self.shared.name.clone(),
                reason: format!("its context cannot be read: {e}"),
            })?,
            None => context.unwrap_or_default(),
        };
        let timed = match self.shared.timings.load(Relaxed) {
            0 => durable.is_some(),
            on => on == 1,
        };
        let mut run = Run::with_links(program, ctx, self.shared.links.clone());
        if let Some(id) = run_id.filter(|_| restore.is_none()) {
            run.sinks.set_run_id(id);
        }
        if timed {
            run.sinks.timing = Some(crate::timing::timings(run.states.len()));
        }
        run.sinks.durable = durable.clone().map(|d| d as Arc<dyn crate::run::Recorder>);
        // The earlier of the deadline given and the one a restored run recorded: a run
        // recovered or resumed ends when the original would have, never later and never
        // not. A run that had ended (timed out, failed) and is restored to go on has spent
        // its deadline: it is a new attempt, under the options given.
        let recorded =
            restore.filter(|c| !c.agent_status.is_finished()).and_then(|c| c.deadline_ms).map(Deadline::at_wall);
        run.control.set_deadline(Deadline::min(timeout.map(Deadline::after), recorded));
        let run = Arc::new(run);
        let restored = restore.map(|c| self.seed(&run, c)).transpose()?;
        let most_recent = match resumes {
            Some(paused) => live.run.as_ref().is_some_and(|r| Arc::ptr_eq(r, paused)),
            None => true,
        };
        if most_recent {
            live.run = Some(run.clone());
        }
        drop(live);
        // What the timed-out error reports: the timeout given, or what was left of a
        // restored run's deadline.
        let after = timeout.or_else(|| run.deadline().map(|d| d.at.saturating_duration_since(Instant::now())));
        agent_core::__private::context::set_input_broker(
            &run.ctx,
            Arc::downgrade(&run) as std::sync::Weak<dyn agent_core::__private::InputBroker>,
        );
        Ok(Launch { run, restored, durable, after, cleanup_timeout })
    }

    /// Seed `run` from `checkpoint`: its run id, its requests for human input, and the
    /// statuses, counters and tokens of its states; the positions its branches go on from.
    fn seed(&self, run: &Run, checkpoint: &Checkpoint) -> Result<Vec<Position>, CheckpointError> {
        checkpoint::check(&self.shared.name, &run.program, checkpoint)?;
        run.sinks.set_run_id(checkpoint.run_id.clone());
        self.shared.links.inputs.restore(checkpoint::inputs_of(checkpoint));
        Ok(checkpoint::seed(run, checkpoint))
    }

    /// The run's outcome once it is over: its result, unless an error ended it or it timed
    /// out; the error of a failed or timed-out run carries the checkpoint it goes on from.
    fn conclude(
        &self,
        run: &Arc<Run>,
        error: Option<AgentError>,
        after: Option<Duration>,
        overran: Vec<String>,
    ) -> Result<AgentResult, AgentError> {
        let mut error = match error {
            None if run.status() != AgentStatus::TimedOut => return Ok(AgentResult::new(run)),
            None => AgentError::TimedOut {
                agent: self.shared.name.clone(),
                after: after.unwrap_or_default(),
                context: run.ctx.clone(),
                checkpoint: None,
                overran,
            },
            Some(error) => error,
        };
        if matches!(error, AgentError::StateFailed { .. } | AgentError::TimedOut { .. }) {
            // Every branch has stopped: the checkpoint is where the run goes on.
            error.set_checkpoint(checkpoint::capture(run, &self.shared.name));
        }
        Err(error)
    }
}

/// A run ready to start, and what driving it needs (see [`Agent::go`]).
pub(super) struct Launch {
    pub(super) run: Arc<Run>,
    /// The positions it goes on from, if restored.
    restored: Option<Vec<Position>>,
    /// Its store (the run itself sees it only as its `Recorder`).
    durable: Option<Arc<Durable>>,
    /// What a timed-out error reports as the run's timeout.
    after: Option<Duration>,
    cleanup_timeout: Option<Duration>,
}

/// The run has started: `RunStarted` for subscribers, and the root token at the start
/// unless the run was restored.
fn announce(run: &Run, rooted: bool) {
    if run.emitting() {
        run.emit(EventKind::RunStarted);
        if run.sinks.durable.is_none() {
            // Followed from the start: a plain run tells of its context writes as states
            // end (see `durable::announce_changes`); a durable one, at its commits.
            agent_core::__private::context::track_changes(&run.ctx);
        }
    }
    if rooted {
        // The root token stands at the start from now on (a first snapshot has it).
        run.positions.set_root(run.program.start as u32);
    }
}

/// Claim a durable run and write its row and first snapshot, before any state runs; the
/// hold on it. If another worker holds the run or the store fails, the run ends there with
/// its error.
async fn start_durable(run: &Run, d: &Durable, fresh: bool) -> Result<Arc<crate::lease::Hold>, AgentError> {
    d.start(run, fresh).await.map_err(|()| {
        let error = finish(run);
        error.unwrap_or_else(|| store_error("the store failed", run.ctx.clone()))
    })
}

/// Drive the run to its end, beside its durable writer if it has one: from the start, or
/// from every restored token; under the deadline, if there is one. The error that ended
/// the run, if any, and the states that overran its deadline.
async fn drive(
    run: &Arc<Run>,
    restored: Option<Vec<Position>>,
    durable: Option<Arc<Durable>>,
    cleanup_timeout: Option<Duration>,
) -> (Option<AgentError>, Vec<String>) {
    let stop_writer = tokio::sync::Notify::new();
    let main = async {
        let cancel_on_drop = CancelOnDrop(run);
        let start = run.program.start;
        let mut rooted = restored.is_none();
        if run.deadline().is_some_and(|d| Instant::now() >= d.at) {
            // A recovered run whose deadline passed while no process ran it: nothing starts.
            run.time_out();
        }
        if let Some(branches) = restored {
            // A restored run goes on from every token of its checkpoint.
            exec::spawn_restored(run, branches);
        }
        if rooted && run.deadline().is_some() {
            // Under a deadline the root branch is a task of its own: a state that blocks
            // its thread then cannot keep this future, which ends the run, from returning.
            exec::spawn_root(run, start);
            rooted = false;
        }
        // Pinned once here and lent to `until_deadline`: passed by value and pinned there,
        // it would be held twice in the future of `run()`.
        let all = std::pin::pin!(async {
            if rooted {
                // The root branch is polled first, so a run that never waits
                // registers nothing with the cancellation token.
                exec::root_started(run);
                tokio::select! {
                    biased;
                    _ = exec::drive(run, start, None, crate::run::NO_BRANCH, true, None) => exec::branch_ended(run),
                    _ = run.stopped() => {}
                }
            }
            run.tasks_finished().await;
        });
        let overran = until_deadline(run, all, cleanup_timeout).await;
        std::mem::forget(cancel_on_drop);
        let error = run.finish();
        // The writer commits the final snapshot, with the final status, and stops.
        stop_writer.notify_one();
        (error, overran)
    };
    match durable {
        Some(d) => {
            let ((error, overran), ()) = tokio::join!(main, d.writer(run, &stop_writer));
            // The end is told once the final commit is in (or failed).
            announce_end(run);
            // A final snapshot that could not be written is the run's error.
            (error.or_else(|| d.late_error()), overran)
        }
        None => {
            let ended = main.await;
            announce_end(run);
            ended
        }
    }
}

/// How long branches get to drop their states once the run is cancelled at the end of its
/// cleanup time; a state still not dropped then is blocking its thread.
const STOP_GRACE: Duration = Duration::from_millis(100);

/// Await `all` (every branch of the run has ended), under the run's deadline if it has one.
/// At the deadline the run times out (no further state starts, and a run whose last state
/// ended past it, having blocked its thread, times out too); the states still running get
/// `cleanup_timeout` (zero by default) to finish; then the run is cancelled and their futures
/// dropped. States that cannot be dropped (they block their thread) are left behind and
/// returned: the run ends on time without them.
async fn until_deadline(
    run: &Run,
    mut all: Pin<&mut impl Future<Output = ()>>,
    cleanup_timeout: Option<Duration>,
) -> Vec<String> {
    let Some(deadline) = run.deadline() else {
        all.await;
        return Vec::new();
    };
    let done = tokio::time::timeout_at(deadline.at, &mut all).await.is_ok();
    if done && Instant::now() < deadline.at {
        return Vec::new();
    }
    run.time_out();
    if done {
        return Vec::new();
    }
    let cleanup = cleanup_timeout.unwrap_or(Duration::ZERO);
    if tokio::time::timeout(cleanup, &mut all).await.is_ok() {
        return Vec::new();
    }
    let running = run.running_states();
    run.cancel();
    if tokio::time::timeout(STOP_GRACE, &mut all).await.is_ok() {
        return Vec::new();
    }
    tracing::warn!(states = ?running, "states overran the run's deadline and could not be stopped; the run ends without them");
    if run.emitting() {
        run.emit(EventKind::Overran { states: running.clone() });
    }
    running
}

/// Mark the run over, and tell subscribers (`RunFinished`), then say they were told (see
/// `run::control`); a run that is over for good lets the input hub forget its requests once
/// another run asks. The error that ended the run, if any.
pub(super) fn finish(run: &Run) -> Option<AgentError> {
    let error = run.finish();
    announce_end(run);
    error
}

/// Tell subscribers the run, marked over, has ended (`RunFinished`), then say they were
/// told (see `run::control`). A durable run does so after its final commit, so that its
/// followers see that commit before the end.
fn announce_end(run: &Run) {
    let links = &run.sinks.links;
    // Looked for after the run is marked over (`SeqCst`): a stream of this run's events
    // made meanwhile is seen here, or sees the run over.
    if links.events.active_at_end() {
        run.emit(EventKind::RunFinished { status: run.status() });
    }
    run.control.announce_end();
    if run.status() != AgentStatus::Paused {
        if let Some(id) = run.sinks.made_run_id() {
            links.inputs.ended(id);
        }
    }
}

/// How to run: see [`Agent::run_with`] and [`Agent::start`].
///
/// ```
/// use std::time::Duration;
/// use agent_runtime::RunOptions;
/// let options = RunOptions::new().timeout(Duration::from_secs(600)).cleanup_timeout(Duration::from_secs(10));
/// # let _ = options;
/// ```
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    timeout: Option<Duration>,
    cleanup_timeout: Option<Duration>,
    context: Option<Context>,
    /// The run's id, when it was given one beforehand (a submitted run a worker starts).
    pub(crate) run_id: Option<String>,
}

impl RunOptions {
    /// No deadline, a fresh context.
    pub fn new() -> Self {
        Self::default()
    }
    /// Stop the run after `d`: see [`Agent::run_with`].
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }
    /// How long states still running at the deadline may take to finish (default zero).
    pub fn cleanup_timeout(mut self, d: Duration) -> Self {
        self.cleanup_timeout = Some(d);
        self
    }
    /// Start from this context (inputs set beforehand) instead of an empty one.
    pub fn context(mut self, ctx: Context) -> Self {
        self.context = Some(ctx);
        self
    }
}

/// Cancels the run if `run()`'s future is dropped before it finishes.
struct CancelOnDrop<'a>(&'a Arc<Run>);

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use agent_core::{Context, RateLimit, StateHandler, StateResult, StateSpec, WorkflowGraph};

    use super::Agent;

    static STATES: [StateSpec; 2] = [
        StateSpec { edges: &["b"], computed_targets: false, ..StateSpec::new("a") },
        StateSpec { computed_targets: false, ..StateSpec::new("b") },
    ];
    static GRAPH: WorkflowGraph = WorkflowGraph { name: "shared", start: "a", states: &STATES, max_concurrent: None };
    static LIMITED_STATES: [StateSpec; 1] =
        [StateSpec { rate_limit: Some(RateLimit::new(5.0)), computed_targets: false, ..StateSpec::new("a") }];
    static LIMITED: WorkflowGraph =
        WorkflowGraph { name: "limited", start: "a", states: &LIMITED_STATES, max_concurrent: None };

    fn handler(next: StateResult) -> Arc<dyn StateHandler> {
        Arc::new(move |_ctx: Context| {
            let next = next.clone();
            async move { next }
        })
    }

    fn workflow_agent() -> Agent {
        Agent::__from_workflow(&GRAPH, vec![(handler("b".into()), None), (handler(StateResult::End), None)])
    }

    /// Agents `#[workflow]` makes share one compiled program while unmodified: 10,000
    /// concurrent workflows must not each compile and hold their own.
    #[test]
    fn unmodified_workflow_agents_share_their_program_and_a_changed_one_does_not() {
        let (a, b) = (workflow_agent(), workflow_agent());
        assert!(Arc::ptr_eq(&a.program().unwrap(), &b.program().unwrap()));
        let mut changed = workflow_agent();
        changed.add_state("c", |_ctx: Context| async { StateResult::End });
        let own = changed.program().unwrap();
        assert!(!Arc::ptr_eq(&a.program().unwrap(), &own));
        assert_eq!(own.states.len(), 3);
        // Rate limiters count one agent's starts: a program holding them is never shared.
        let limited = || Agent::__from_workflow(&LIMITED, vec![(handler(StateResult::End), None)]);
        assert!(!Arc::ptr_eq(&limited().program().unwrap(), &limited().program().unwrap()));
    }
}
