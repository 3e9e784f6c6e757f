//! `cancel RUN`, `pause RUN` and `retry RUN`: the console's actions from a terminal.
//!
//! Invariants:
//! - `cancel` and `pause` reach a run wherever it runs, through the store
//!   (`store::cancel_run`, `store::pause_run`): its owner, in any process, is asked and
//!   obeys within a second; a run nobody runs is cancelled at once.
//! - `retry` runs a failed run again from its failed states in this process
//!   (`Agent::retry`), to its end, and says how it ended, like `wait`.

use std::io::Write;

use agent_core::AgentStatus;

use super::store::Store;
use super::CliError;
use crate::store::{cancel_run, pause_run, Cancelling, ControlError};
use crate::text::shown;
use crate::Agent;

fn refused(e: ControlError) -> CliError {
    match e {
        ControlError::Store(e) => CliError::Store(e),
        e => CliError::Usage(e.to_string()),
    }
}

/// `cancel RUN`.
pub(super) async fn cancel(
    agent: &str,
    store: &Store,
    run: &str,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let record = store.resolve(agent, run).await?;
    let id = shown(&record.run_id);
    match cancel_run(&*store.get(), &record.run_id).await.map_err(refused)? {
        Cancelling::Asked => writeln!(out, "asked the owner of run {id} to cancel it: it stops within a second")?,
        _ => writeln!(out, "cancelled run {id} (nobody was running it)")?,
    }
    Ok(())
}

/// `pause RUN`.
pub(super) async fn pause(agent: &str, store: &Store, run: &str, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    let record = store.resolve(agent, run).await?;
    pause_run(&*store.get(), &record.run_id).await.map_err(refused)?;
    writeln!(
        out,
        "asked the owner of run {} to pause it: running states finish, then `resume` goes on",
        shown(&record.run_id)
    )?;
    Ok(())
}

/// `retry RUN`.
pub(super) async fn retry(
    agent: Agent,
    store: &Store,
    run: &str,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let record = store.resolve(agent.name(), run).await?;
    if record.status != AgentStatus::Failed {
        return Err(CliError::Usage(format!(
            "run {} did not fail: it is {}",
            shown(&record.run_id),
            record.standing(crate::store::now_ms())
        )));
    }
    writeln!(out, "retrying run {} from the states that failed", shown(&record.run_id))?;
    let agent = store.attach(agent);
    let result = agent.retry(&record.run_id).await?;
    match result.status() {
        AgentStatus::Completed => {
            writeln!(out, "run {} completed", shown(&record.run_id))?;
            Ok(())
        }
        status => Err(CliError::NotCompleted { run: record.run_id, status }),
    }
}
