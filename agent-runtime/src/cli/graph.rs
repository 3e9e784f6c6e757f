//! `graph`: the workflow's graph as Mermaid or Graphviz dot.
//!
//! Invariants:
//! - A `#[workflow]` agent prints its compile-time `GRAPH` exactly as
//!   `WorkflowGraph::to_mermaid` / `to_dot` draw it; a builder agent prints
//!   `Agent::diagram` (the same drawing code, see `agent_core::Diagram`).
//! - A builder agent has no compile-time graph: its transitions are computed at run time.
//!   What is known without running (its states, the start, dependencies and `on_error`
//!   routes) is drawn, headed by a comment saying that transitions are missing.

use std::io::Write;

use crate::Agent;

use super::{CliError, GraphFormat};

pub(super) fn graph(agent: &Agent, format: GraphFormat, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    let diagram = match agent.graph() {
        Some(graph) => graph.diagram(),
        None => {
            let note = format!(
                "agent `{}` was built with the builder: its transitions are computed at run time and not drawn; \
                 states, start, dependencies and on_error routes only",
                agent.name()
            );
            match format {
                GraphFormat::Mermaid => writeln!(out, "%% {note}")?,
                GraphFormat::Dot => writeln!(out, "// {note}")?,
            }
            agent.diagram()
        }
    };
    let text = match format {
        GraphFormat::Mermaid => diagram.to_mermaid(),
        GraphFormat::Dot => diagram.to_dot(),
    };
    out.write_all(text.as_bytes())?;
    Ok(())
}
