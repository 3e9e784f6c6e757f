//! `graph`: the workflow's graph as Mermaid or Graphviz dot.
//!
//! Invariants:
//! - A `#[workflow]` agent prints its compile-time `GRAPH` exactly as
//!   `WorkflowGraph::to_mermaid` / `to_dot` draw it; a builder agent prints
//!   `Agent::diagram` (the same drawing code, see `agent_core::Diagram`).
//! - A builder agent has no compile-time graph: what is known without running is drawn
//!   (its states, the start, declared targets, dependencies and `on_error` routes), headed
//!   by a comment naming the states whose transitions are computed at run time, if any.

use std::io::Write;

use crate::Agent;

use super::{CliError, GraphFormat};

pub(super) fn graph(agent: &Agent, format: GraphFormat, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    let diagram = match agent.graph() {
        Some(graph) => graph.diagram(),
        None => {
            let diagram = agent.diagram();
            let computed: Vec<&str> =
                diagram.states.iter().filter(|s| s.computed_targets).map(|s| s.name.as_str()).collect();
            if !computed.is_empty() {
                let note = format!(
                    "agent `{}` was built with the builder: the transitions of {} are computed at run time and \
                     not drawn (declare them with `.targets([...])`)",
                    agent.name(),
                    if computed.len() == diagram.states.len() { "its states".to_owned() } else { computed.join(", ") }
                );
                match format {
                    GraphFormat::Mermaid => writeln!(out, "%% {note}")?,
                    GraphFormat::Dot => writeln!(out, "// {note}")?,
                }
            }
            diagram
        }
    };
    let text = match format {
        GraphFormat::Mermaid => diagram.to_mermaid(),
        GraphFormat::Dot => diagram.to_dot(),
    };
    out.write_all(text.as_bytes())?;
    Ok(())
}
