//! `graph`: the workflow's graph as Mermaid or Graphviz dot.
//!
//! Invariants:
//! - A `#[workflow]` agent prints its compile-time `GRAPH` exactly as
//!   `WorkflowGraph::to_mermaid` / `to_dot` draw it.
//! - A builder agent has no compile-time graph: its transitions are computed at run time.
//!   What is known without running (its states, the start, dependencies and `on_error`
//!   routes) is drawn, headed by a comment saying that transitions are missing.

use std::io::Write;

use crate::Agent;

use super::{CliError, GraphFormat};

pub(super) fn graph(agent: &Agent, format: GraphFormat, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    if let Some(graph) = agent.graph() {
        let text = match format {
            GraphFormat::Mermaid => graph.to_mermaid(),
            GraphFormat::Dot => graph.to_dot(),
        };
        out.write_all(text.as_bytes())?;
        return Ok(());
    }
    let (start, states) = agent.outline();
    let note = format!(
        "agent `{}` was built with the builder: its transitions are computed at run time and not drawn; \
         states, start, dependencies and on_error routes only",
        agent.name()
    );
    match format {
        GraphFormat::Mermaid => {
            writeln!(out, "%% {note}")?;
            writeln!(out, "flowchart TD")?;
            if let Some(start) = &start {
                writeln!(out, "    __start([start]) --> {start}")?;
            }
            for (name, deps, on_error) in &states {
                writeln!(out, "    {name}")?;
                for d in deps {
                    writeln!(out, "    {d} -. depends .-> {name}")?;
                }
                if let Some(to) = on_error {
                    writeln!(out, "    {name} -. on_error .-> {to}")?;
                }
            }
        }
        GraphFormat::Dot => {
            writeln!(out, "// {note}")?;
            writeln!(out, "digraph \"{}\" {{", agent.name())?;
            if let Some(start) = &start {
                writeln!(out, "    \"{start}\" [shape=doublecircle];")?;
            }
            for (name, deps, on_error) in &states {
                writeln!(out, "    \"{name}\";")?;
                for d in deps {
                    writeln!(out, "    \"{d}\" -> \"{name}\" [style=dotted, label=\"depends\"];")?;
                }
                if let Some(to) = on_error {
                    writeln!(out, "    \"{name}\" -> \"{to}\" [style=dashed, label=\"on_error\"];")?;
                }
            }
            writeln!(out, "}}")?;
        }
    }
    Ok(())
}
