//! The transition graph of a workflow, known at compile time.
//!
//! Invariants:
//! - `#[workflow]` generates one `static GRAPH: WorkflowGraph` per module: every state with
//!   its options, every literal edge, the start. It is plain `'static` data.
//! - `fully_known` is true only when no state has a target computed at run time; only then
//!   may the runtime treat the edges as the whole graph (for fan-in joins).

use crate::options::{DependencyType, StateSpec};
use crate::Diagram;

/// A workflow's states and edges, as the compiler saw them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WorkflowGraph {
    /// The workflow's name.
    pub name: &'static str,
    /// The first state to run.
    pub start: &'static str,
    /// Every state, in source order.
    pub states: &'static [StateSpec],
    /// The most states running at once, if limited.
    pub max_concurrent: Option<usize>,
}

/// Why an edge exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EdgeKind {
    /// A transition the state returns.
    Transition,
    /// `on_error`.
    OnError,
    /// A dependency: `from` must run before `to`.
    Dependency(DependencyType),
}

/// One edge of the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edge {
    /// Where it starts.
    pub from: &'static str,
    /// Where it goes.
    pub to: &'static str,
    /// Why it exists.
    pub kind: EdgeKind,
}

impl WorkflowGraph {
    /// The state named `name`.
    pub fn state(&self, name: &str) -> Option<&'static StateSpec> {
        self.states.iter().find(|s| s.name == name)
    }

    /// Whether every transition target of every state is a literal.
    pub fn fully_known(&self) -> bool {
        self.states.iter().all(|s| !s.computed_targets)
    }

    /// Every edge: transitions, `on_error` routes and dependencies (dependency → dependent).
    pub fn edges(&self) -> Vec<Edge> {
        let mut out = Vec::new();
        for s in self.states {
            for to in s.edges {
                out.push(Edge { from: s.name, to, kind: EdgeKind::Transition });
            }
            if let Some(to) = s.on_error {
                out.push(Edge { from: s.name, to, kind: EdgeKind::OnError });
            }
            for (dep, t) in s.depends_on {
                out.push(Edge { from: dep, to: s.name, kind: EdgeKind::Dependency(*t) });
            }
        }
        out
    }

    /// A Mermaid flowchart of the graph.
    ///
    /// ```
    /// use agent_core::{StateSpec, WorkflowGraph};
    /// static STATES: [StateSpec; 2] = [
    ///     StateSpec { edges: &["b"], computed_targets: false, ..StateSpec::new("a") },
    ///     StateSpec { computed_targets: false, ..StateSpec::new("b") },
    /// ];
    /// static G: WorkflowGraph = WorkflowGraph { name: "g", start: "a", states: &STATES, max_concurrent: None };
    /// assert!(G.to_mermaid().contains("    s0 --> s1\n")); // `a` to `b`
    /// ```
    pub fn to_mermaid(&self) -> String {
        self.diagram().to_mermaid()
    }

    /// A Graphviz digraph of the graph.
    pub fn to_dot(&self) -> String {
        self.diagram().to_dot()
    }

    /// The graph as a [`Diagram`], to colour with a run's statuses before drawing it.
    pub fn diagram(&self) -> Diagram {
        Diagram::of_graph(self)
    }
}
