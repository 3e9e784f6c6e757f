//! `cancel RUN [--state NAME]`, `pause RUN` and `retry RUN`: the console's actions from a
//! terminal.
//!
//! Invariants:
//! - `cancel` and `pause` reach a run wherever it runs, through the store
//!   (`store::cancel_run`, `store::pause_run`): its owner, in any process, is asked and
//!   obeys within a second; a run nobody runs is cancelled at once. `cancel --state` asks
//!   the same way for one state (`store::cancel_state`): its running and waiting instances
//!   are cancelled, the run goes on; a run nobody runs has it done by its next owner.
//! - `retry` runs a failed run again from its failed states in this process
//!   (`Agent::retry`), to its end, and says how it ended, like `wait`.

use std::io::Write;

use agent_core::AgentStatus;

use super::store::Store;
use super::CliError;
use crate::store::{cancel_run, cancel_state as cancel_one_state, pause_run, Cancelling, ControlError};
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

/// `cancel RUN --state NAME`.
pub(super) async fn cancel_state(
    agent: &str,
    store: &Store,
    run: &str,
    state: &str,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let record = store.resolve(agent, run).await?;
    cancel_one_state(&*store.get(), &record.run_id, state).await.map_err(refused)?;
    let (id, state) = (shown(&record.run_id), shown(state));
    if record.is_leased_at(crate::store::now_ms()) {
        writeln!(
            out,
            "asked the owner of run {id} to cancel its state {state}: it stops within a second, the run goes on"
        )?;
    } else {
        writeln!(out, "asked run {id} to cancel its state {state}: nobody runs it now; its next owner does")?;
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
