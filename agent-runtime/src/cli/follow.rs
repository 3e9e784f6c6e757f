//! `follow RUN`: a run's progress, read from the store as it goes, wherever it runs.
//!
//! Invariants:
//! - It reads only the store (the run's row every [`POLL`], its checkpoint when the row
//!   changed), so it follows a run of any process, as the console does; values states emit
//!   (`Context::emit`) stay in their process and are not shown.
//! - One line per change: the run's standing, and each state whose status or counts
//!   changed, in the checkpoint's order; the first look prints the states that started.
//! - It ends with the run: exit 0 once it completed, `CliError::Paused` for a paused run,
//!   `CliError::NotCompleted` otherwise, as `wait` does.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use agent_core::{AgentStatus, StateStatus};

use super::store::Store;
use super::time::utc;
use super::CliError;
use crate::store::{now_ms, read_checkpoint};
use crate::text::shown;

/// How often the store is read.
const POLL: Duration = Duration::from_millis(250);

/// `follow RUN`.
pub(super) async fn follow(
    agent: &str,
    store: &Store,
    run: &str,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let record = store.resolve(agent, run).await?;
    let id = record.run_id.clone();
    let store = store.get();
    let mut seen_row: Option<(String, Option<String>, i64)> = None;
    let mut seen_states: HashMap<String, (StateStatus, u32, u32)> = HashMap::new();
    loop {
        let Some(row) = store.get_run(&id).await? else {
            return Err(CliError::RunNotFound { agent: agent.to_owned(), run: id });
        };
        let now = now_ms();
        let standing = row.standing(now).to_owned();
        let this = (standing.clone(), row.owner.clone(), row.updated_ms);
        if seen_row.as_ref() != Some(&this) {
            if seen_row.as_ref().is_none_or(|(s, o, _)| *s != standing || *o != row.owner) {
                let by = row.owner.as_deref().map(|o| format!(" ({})", shown(o))).unwrap_or_default();
                writeln!(out, "{}  run {} {standing}{by}", utc(now), shown(&id))?;
            }
            seen_row = Some(this);
            if let Some(checkpoint) = read_checkpoint(&*store, &id).await? {
                for s in &checkpoint.states {
                    let now_seen = (s.status, s.completed, s.failed);
                    let before = seen_states.insert(s.name.clone(), now_seen);
                    let started = s.started_ms.is_some() || s.completed > 0 || s.failed > 0;
                    if before.as_ref() != Some(&now_seen) && (before.is_some() || started) {
                        let at = s.finished_ms.or(s.started_ms).map_or_else(|| utc(now), utc);
                        let error = s.error.as_deref().map(|e| format!(": {}", shown(e))).unwrap_or_default();
                        writeln!(
                            out,
                            "{at}  state {} {:?} (completed {}, failed {}){error}",
                            shown(&s.name),
                            s.status,
                            s.completed,
                            s.failed
                        )?;
                    }
                }
            }
            out.flush()?;
        }
        match row.status {
            AgentStatus::Completed => return Ok(()),
            AgentStatus::Paused => return Err(CliError::Paused { run: id }),
            status if status.is_finished() => return Err(CliError::NotCompleted { run: id, status }),
            _ => tokio::time::sleep(POLL).await,
        }
    }
}
