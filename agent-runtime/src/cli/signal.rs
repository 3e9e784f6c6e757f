//! `signal RUN NAME JSON [--id ID]`: send a run a signal through the store, from any
//! process (see `signal::send`: the run's next wait on the name takes it, wherever it runs).
//!
//! Invariants:
//! - The payload is parsed as JSON before anything is written; the run is named by its id
//!   or a prefix of it, as elsewhere.
//! - A finished run takes no signal (an error, nothing kept); a second send with one `--id`
//!   keeps nothing and says so.

use std::io::Write;

use super::store::Store;
use super::CliError;
use crate::text::shown;

pub(super) async fn signal(
    agent: &str,
    store: &Store,
    run: &str,
    name: &str,
    payload: &str,
    id: Option<&str>,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let value: serde_json::Value = serde_json::from_str(payload)
        .map_err(|e| CliError::BadPayload { name: name.to_owned(), message: e.to_string() })?;
    let run = store.resolve(agent, run).await?;
    let receipt = crate::signal::send(&*store.get(), &run.run_id, name, id, value).await?;
    if receipt.duplicate {
        writeln!(
            out,
            "run {} already has signal {}: nothing sent again",
            shown(&run.run_id),
            shown(&receipt.signal_id)
        )?;
    } else {
        writeln!(out, "sent {} ({}) to run {}", shown(name), shown(&receipt.signal_id), shown(&run.run_id))?;
    }
    Ok(())
}
