//! `history RUN` and `fork RUN`: time travel from a terminal.
//!
//! Invariants:
//! - `history` lists the commits the store keeps of a run, oldest first, one a line: its
//!   `seq` (what `fork --at` takes), when, whether a whole snapshot, the run's status, the
//!   states about to run and how many had completed. It reads only.
//! - `fork` makes a new run from one commit (`Agent::fork`); the original is not touched.
//!   `--set KEY=JSON` edits the fork's context first: a key holding a typed value takes a
//!   value of that type only (the value is read back as that type; anything else is
//!   refused, naming the key), any other key takes the JSON as a plain value. It prints the
//!   fork's id; `resume ID` (or a worker) goes on with it.

use std::io::Write;

use agent_core::{AgentError, Checkpoint, CheckpointError, Context};
use serde_json::{Map, Value};

use super::store::Store;
use super::time::utc;
use super::CliError;
use crate::store::history as commits_of;
use crate::text::shown;
use crate::{Agent, ForkAt};

/// `history RUN`.
pub(super) async fn history(
    agent: &str,
    store: &Store,
    run: &str,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let record = store.resolve(agent, run).await?;
    let commits = commits_of(&*store.get(), &record.run_id).await?;
    if commits.is_empty() {
        writeln!(out, "run {} has no commits yet", shown(&record.run_id))?;
        return Ok(());
    }
    writeln!(out, "{:>6}  {:<20}  {:<8}  {:<10}  {:>9}  next", "seq", "at", "kind", "status", "completed")?;
    for c in commits {
        let kind = if c.snapshot { "snapshot" } else { "delta" };
        let next = if c.running.is_empty() { "-".to_owned() } else { shown(&c.running.join(", ")).to_string() };
        writeln!(
            out,
            "{:>6}  {:<20}  {:<8}  {:<10}  {:>9}  {next}",
            c.seq,
            utc(c.at_ms),
            kind,
            c.status.as_str(),
            c.completed.len()
        )?;
    }
    Ok(())
}

/// `fork RUN [--at N | --before STATE] [--set KEY=JSON]...`.
pub(super) async fn fork(
    agent: Agent,
    store: &Store,
    run: &str,
    at: ForkAt,
    sets: &[String],
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let record = store.resolve(agent.name(), run).await?;
    let mut edits = Vec::with_capacity(sets.len());
    for set in sets {
        let Some((key, json)) = set.split_once('=') else {
            return Err(CliError::Usage(format!("--set {}: write KEY=JSON", shown(set))));
        };
        let value: Value = serde_json::from_str(json)
            .map_err(|e| CliError::Usage(format!("--set {}: the value is not JSON: {e}", shown(key))))?;
        edits.push((key.to_owned(), value));
    }
    let agent = store.attach(agent);
    let fork_id = agent.fork_with(&record.run_id, at, |checkpoint| set_keys(checkpoint, &edits)).await?;
    writeln!(out, "forked run {} as {}", shown(&record.run_id), shown(&fork_id))?;
    writeln!(out, "resume {} goes on with it here (or a worker takes it)", shown(&fork_id))?;
    Ok(())
}

/// Set `edits` in `checkpoint`'s context: a typed key keeps its type (a value that does not
/// read as it is refused); any other key takes the value as a plain one.
fn set_keys(checkpoint: &mut Checkpoint, edits: &[(String, Value)]) -> Result<(), AgentError> {
    if edits.is_empty() {
        return Ok(());
    }
    let bad = |e: String| AgentError::from(CheckpointError::Context(e));
    let mut stored: Map<String, Value> =
        serde_json::from_str(checkpoint.context.get()).map_err(|e| bad(e.to_string()))?;
    for (key, value) in edits {
        let typed = stored.get(key).and_then(|v| v.get("typed")).and_then(|t| t.get("type")).cloned();
        let entry = match typed {
            Some(name) => serde_json::json!({ "typed": { "type": name, "value": value } }),
            None => serde_json::json!({ "plain": value }),
        };
        // Read back alone first: a typed value that does not fit its type is refused here.
        let mut one = Map::new();
        one.insert(key.clone(), entry.clone());
        Context::from_json(&Value::Object(one))
            .map_err(|e| bad(format!("--set {key}: {e} (the key holds a typed value; give a value of its type)")))?;
        stored.insert(key.clone(), entry);
    }
    let ctx = Context::from_json(&Value::Object(stored)).map_err(|e| bad(e.to_string()))?;
    checkpoint.set_context(&ctx);
    Ok(())
}
