//! `graph [RUN]`: the workflow's graph as Mermaid or Graphviz dot, coloured by a stored run
//! when one is named.
//!
//! Invariants:
//! - A `#[workflow]` agent draws its compile-time `GRAPH` as `WorkflowGraph::to_mermaid` /
//!   `to_dot` draw it; a builder agent draws `Agent::diagram` (the same drawing code, see
//!   `agent_core::Diagram`). Without a run, neither opens the store.
//! - Given a run, the picture is coloured by the run's newest snapshot in the store
//!   (statuses, retries) and by its requests for human input as the store holds them (the
//!   store's are the newest: another process may have answered since the snapshot).
//! - A builder agent has no compile-time graph: what is known without running is drawn
//!   (its states, the start, declared targets, dependencies and `on_error` routes), headed
//!   by a comment naming the states whose transitions are computed at run time, if any.
//! - With `--expand`, the child runs the run's states started are drawn inside those
//!   states (see `diagram::expand_children`): a child of this same workflow from its
//!   definition, any other from its newest snapshot (its states and statuses).
//! - Text in comments is escaped (control characters, and `%`, which could open a Mermaid
//!   directive): a comment stays one line, and only a comment.

use std::io::Write;

use crate::Agent;

use super::store::Store;
use super::time::utc;
use super::{CliError, GraphFormat};
use crate::text::shown;

pub(super) async fn graph(
    agent: &Agent,
    format: GraphFormat,
    run: Option<(&Store, &str)>,
    expand: bool,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let mut notes = Vec::new();
    let mut diagram = match agent.graph() {
        Some(graph) => graph.diagram(),
        None => {
            let diagram = agent.diagram();
            let computed: Vec<&str> =
                diagram.states.iter().filter(|s| s.computed_targets).map(|s| s.name.as_str()).collect();
            if !computed.is_empty() {
                notes.push(format!(
                    "agent `{}` was built with the builder: the transitions of {} are computed at run time and \
                     not drawn (declare them with `.targets([...])`)",
                    agent.name(),
                    if computed.len() == diagram.states.len() { "its states".to_owned() } else { computed.join(", ") }
                ));
            }
            diagram
        }
    };
    if let Some((store, run)) = run {
        let record = store.resolve(agent.name(), run).await?;
        let db = store.get();
        let checkpoint = crate::store::read_checkpoint(&*db, &record.run_id).await?;
        let checkpoint = checkpoint.ok_or_else(|| CliError::NoSnapshot { run: record.run_id.clone() })?;
        let inputs = db.inputs(Some(&record.run_id), false).await?;
        diagram = diagram.with_checkpoint(&checkpoint).with_requests(inputs.iter().map(|r| &r.request));
        if expand {
            let known = |name: &str| (name == agent.name()).then(|| crate::diagram::unrun(agent));
            diagram = crate::diagram::expand_children(&*db, &record.run_id, diagram, &known).await?;
        }
        notes.push(format!(
            "run {} ({}), as recorded at {}",
            record.run_id,
            record.status,
            utc(checkpoint.timestamp.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64))
        ));
    }
    for note in notes {
        let note = shown(&note).replace('%', "\\x25");
        match format {
            GraphFormat::Mermaid => writeln!(out, "%% {note}")?,
            GraphFormat::Dot => writeln!(out, "// {note}")?,
        }
    }
    let text = match format {
        GraphFormat::Mermaid => diagram.to_mermaid(),
        GraphFormat::Dot => diagram.to_dot(),
    };
    out.write_all(text.as_bytes())?;
    Ok(())
}
