//! `run`, `resume` and the default command: drive a durable run to its end, showing
//! progress, and stop it cleanly on Ctrl-C.
//!
//! Invariants:
//! - Every run goes to the store (the agent is given it before the run starts), so a run
//!   stopped at any instant can be resumed with `resume RUN`.
//! - The first interrupt pauses the run: nothing new starts, running states finish, the
//!   run is recorded `Paused`, and the command ends with [`CliError::Paused`]. A second
//!   interrupt, or the first while a state waits for a person (whose request is already in
//!   the store), stops at once; the store keeps the last committed snapshot, from which the
//!   run goes on like after a crash, the waiting state asking again under the same id; the
//!   command ends with [`CliError::Interrupted`].
//! - Text from the run or the store (ids, names, prompts, defaults) is printed through
//!   `text::shown`.
//! - Progress is read from `Agent::metrics` every `progress::POLL`; the command's result
//!   does not depend on it.

use std::future::Future;
use std::io::Write;

use agent_core::{AgentError, AgentStatus};
use tokio::sync::mpsc;

use super::progress::{Progress, POLL};
use super::store::Store;
use super::time::duration;
use super::CliError;
use crate::store::{RunQuery, RunRecord};
use crate::text::shown;
use crate::{Agent, AgentResult};

/// What to run.
pub(super) enum Start {
    /// A new run.
    New,
    /// This run, from the store; with `wait`, once no other worker holds it.
    Resume {
        /// The run (an id or a prefix).
        run: String,
        /// Wait for another owner's lease to end.
        wait: bool,
    },
    /// The newest unfinished run of the agent, or a new one.
    Auto,
}

/// How a run is watched and stopped.
pub(super) struct Watch {
    pub progress: Progress,
    /// Each message is one interrupt (Ctrl-C).
    pub interrupts: Option<mpsc::UnboundedReceiver<()>>,
}

pub(super) async fn start(
    agent: Agent,
    store: &Store,
    what: Start,
    watch: Watch,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let agent = store.attach(agent);
    let name = agent.name().to_owned();
    let resume = match what {
        Start::New => None,
        Start::Resume { run, wait } => {
            let mut record = store.resolve(&name, &run).await?;
            if wait {
                record = until_unowned(store, record, out).await?;
            }
            if record.status == AgentStatus::Completed {
                writeln!(out, "run {} is already completed; nothing to resume", shown(&record.run_id))?;
                return Ok(());
            }
            Some(record.run_id)
        }
        Start::Auto => {
            let mut unfinished = Vec::new();
            for status in [AgentStatus::Running, AgentStatus::Paused] {
                let query = RunQuery { agent: Some(name.clone()), status: Some(status), ..RunQuery::default() };
                unfinished.extend(store.get().list_runs(&query).await?);
            }
            unfinished.sort_by_key(|r| std::cmp::Reverse(r.created_ms));
            unfinished.into_iter().next().map(|r| r.run_id)
        }
    };
    match &resume {
        Some(run) => {
            writeln!(out, "resuming run {} of {}", shown(run), shown(&name))?;
            let mut watch = watch;
            if let Some(checkpoint) = crate::store::read_checkpoint(&*store.get(), run).await? {
                watch.progress.seed(&checkpoint.states);
            }
            let a = agent.clone();
            let id = run.clone();
            drive(&agent, async move { a.recover(&id).await }, Some(run.clone()), watch, out).await
        }
        None => {
            let a = agent.clone();
            drive(&agent, async move { a.run().await }, None, watch, out).await
        }
    }
}

/// Wait until no other worker holds run `record` (its lease ended, or it was given back),
/// re-reading its row as the lease's end comes; the row then.
async fn until_unowned(
    store: &Store,
    mut record: RunRecord,
    out: &mut (dyn Write + Send),
) -> Result<RunRecord, CliError> {
    let mut told = false;
    loop {
        let now = crate::store::now_ms();
        if !record.is_leased_at(now) || record.status.is_finished() {
            return Ok(record);
        }
        let until = record.lease_until_ms.unwrap_or(now);
        if !told {
            let owner = record.owner.as_deref().unwrap_or("?");
            let line = format!(
                "run {} is held by {} (lease ends in {}); waiting",
                shown(&record.run_id),
                shown(owner),
                duration(until - now)
            );
            writeln!(out, "{line}")?;
            out.flush()?;
            told = true;
        }
        // Until the lease's end as this machine sees it, at most a second at a time (the
        // owner may renew it, give it back or finish meanwhile).
        let left = u64::try_from(until - now).unwrap_or(0).clamp(10, 1_000);
        tokio::time::sleep(std::time::Duration::from_millis(left)).await;
        record = match store.get().get_run(&record.run_id).await? {
            Some(r) => r,
            None => return Err(CliError::RunNotFound { agent: record.agent, run: record.run_id }),
        };
    }
}

async fn drive(
    agent: &Agent,
    run: impl Future<Output = Result<AgentResult, AgentError>>,
    mut announced: Option<String>,
    mut watch: Watch,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let mut run = std::pin::pin!(run);
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut asked: Vec<String> = Vec::new();
    let mut interrupted = false;
    let outcome = loop {
        let interrupt = async {
            match watch.interrupts.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            result = &mut run => break result,
            Some(()) = interrupt => {
                let id = agent.run_id().unwrap_or_default();
                if interrupted || !agent.pending_inputs().is_empty() {
                    // Stop now. A state waiting for a person is not waited for: its request
                    // is in the store, and the resumed state asks again under the same id.
                    watch.progress.finish("");
                    return Err(CliError::Interrupted { run: id });
                }
                interrupted = true;
                let line = format!("interrupted: pausing run {} (running states finish; interrupt again to stop now)", shown(&id));
                watch.progress.println(&line, out)?;
                let pausing = agent.clone();
                tokio::spawn(async move { pausing.pause().await });
            }
            _ = tick.tick() => {
                if announced.is_none() {
                    if let Some(id) = agent.run_id().filter(|_| agent.status() == AgentStatus::Running) {
                        let line = format!("run {} of {}", shown(&id), shown(agent.name()));
                        watch.progress.println(&line, out)?;
                        announced = Some(id);
                    }
                }
                watch.progress.update(&agent.metrics(), out)?;
                if interrupted && !agent.pending_inputs().is_empty() {
                    watch.progress.finish("");
                    return Err(CliError::Interrupted { run: agent.run_id().unwrap_or_default() });
                }
                for input in agent.pending_inputs() {
                    // A prompt open on the terminal shows the request itself.
                    if !asked.contains(&input.id) && !watch.progress.prompting() {
                        let mut line = format!("  waiting for input {}: {}", shown(&input.id), shown(&input.prompt));
                        if let (Some(t), Some(d)) = (input.timeout, &input.default) {
                            let after = duration(t.as_millis() as i64);
                            line.push_str(&format!(" (default \"{}\" after {after})", shown(d)));
                        }
                        watch.progress.println(&line, out)?;
                        asked.push(input.id);
                    }
                }
            }
        }
    };
    watch.progress.update(&agent.metrics(), out)?;
    // The run is over: a prompt still on the terminal asks for nothing any more.
    watch.progress.finish(crate::human::NO_LONGER_ASKED);
    let result = outcome?;
    let id = result.run_id().to_owned();
    let m = result.metrics();
    match result.status() {
        AgentStatus::Completed => {
            let failed = if m.failed > 0 {
                format!(", {} failed for good (routed by on_error)", m.failed)
            } else {
                String::new()
            };
            writeln!(
                out,
                "run {} completed: {} state runs, {} retries{failed}, in {}",
                shown(&id),
                m.completed,
                m.retries,
                duration(m.elapsed.as_millis() as i64)
            )?;
            Ok(())
        }
        AgentStatus::Paused => {
            writeln!(out, "run {} paused after {} state runs", shown(&id), m.completed)?;
            Err(CliError::Paused { run: id })
        }
        status => Err(CliError::NotCompleted { run: id, status }),
    }
}
