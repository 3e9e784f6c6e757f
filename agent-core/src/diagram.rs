//! Pictures of a workflow: Mermaid flowcharts and Graphviz digraphs, optionally coloured by
//! a run's statuses.
//!
//! A [`Diagram`] is plain owned data (states in definition order, edges, statuses), built
//! from a compile-time [`WorkflowGraph`], from a built agent (the runtime's
//! `Agent::diagram`), and overlaid with the statuses of a live run or a [`Checkpoint`].
//!
//! Invariants:
//! - The output is deterministic: states in definition order, edges in the order given,
//!   one style class per status, so a picture can be diffed and snapshot-tested.
//! - Every state name is drawn, whatever it contains: a name that is not a plain
//!   identifier (or is a word Mermaid reserves, such as `end`) is drawn as a node with an id
//!   of ours and the name as its quoted label. Quotes in names are escaped.

use std::fmt::Write as _;

use crate::graph::{EdgeKind, WorkflowGraph};
use crate::{Checkpoint, StateStatus};

/// One state in a [`Diagram`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiagramState {
    /// The state's name.
    pub name: String,
    /// Its status in the overlaid run, if any.
    pub status: Option<StateStatus>,
    /// Whether it also has targets computed at run time (edges the picture cannot show).
    pub computed_targets: bool,
}

/// One edge in a [`Diagram`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiagramEdge {
    /// Where it starts.
    pub from: String,
    /// Where it goes.
    pub to: String,
    /// Why it exists.
    pub kind: EdgeKind,
}

/// A workflow's picture: its states, its known edges, and optionally a run's statuses.
///
/// ```
/// use agent_core::{Diagram, StateSpec, StateStatus, WorkflowGraph};
/// static STATES: [StateSpec; 2] = [
///     StateSpec { edges: &["b"], computed_targets: false, ..StateSpec::new("a") },
///     StateSpec { computed_targets: false, ..StateSpec::new("b") },
/// ];
/// static G: WorkflowGraph = WorkflowGraph { name: "g", start: "a", states: &STATES, max_concurrent: None };
///
/// let picture = Diagram::of_graph(&G).with_statuses([("a", StateStatus::Completed), ("b", StateStatus::Running)]);
/// let mermaid = picture.to_mermaid();
/// assert!(mermaid.contains("a --> b"));
/// assert!(mermaid.contains("class a completed"));
/// assert!(picture.to_dot().contains("\"b\" [style=filled, fillcolor=\"#cfe2ff\", tooltip=\"Running\"]"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagram {
    /// The workflow's name.
    pub name: String,
    /// The first state, if known.
    pub start: Option<String>,
    /// Every state, in definition order.
    pub states: Vec<DiagramState>,
    /// Every known edge.
    pub edges: Vec<DiagramEdge>,
}

impl Diagram {
    /// A picture with no state yet.
    pub fn new(name: impl Into<String>, start: Option<String>) -> Diagram {
        Diagram { name: name.into(), start, states: Vec::new(), edges: Vec::new() }
    }

    /// Add a state (drawn in the order added).
    pub fn add_state(&mut self, name: impl Into<String>, computed_targets: bool) {
        self.states.push(DiagramState { name: name.into(), status: None, computed_targets });
    }

    /// Add an edge.
    pub fn add_edge(&mut self, from: impl Into<String>, to: impl Into<String>, kind: EdgeKind) {
        self.edges.push(DiagramEdge { from: from.into(), to: to.into(), kind });
    }

    /// The picture of a compile-time graph: its states, literal transitions, `on_error`
    /// routes and dependencies.
    pub fn of_graph(graph: &WorkflowGraph) -> Diagram {
        let mut d = Diagram::new(graph.name, Some(graph.start.to_owned()));
        for s in graph.states {
            d.add_state(s.name, s.computed_targets);
        }
        for e in graph.edges() {
            d.add_edge(e.from, e.to, e.kind);
        }
        d
    }

    /// The same picture with these statuses (states not named keep theirs; names of no
    /// state are ignored).
    pub fn with_statuses<S: AsRef<str>>(mut self, statuses: impl IntoIterator<Item = (S, StateStatus)>) -> Diagram {
        for (name, status) in statuses {
            if let Some(s) = self.states.iter_mut().find(|s| s.name == name.as_ref()) {
                s.status = Some(status);
            }
        }
        self
    }

    /// The same picture coloured by the statuses a checkpoint records.
    pub fn with_checkpoint(self, checkpoint: &Checkpoint) -> Diagram {
        let statuses: Vec<(&str, StateStatus)> =
            checkpoint.states.iter().map(|s| (s.name.as_str(), s.status)).collect();
        self.with_statuses(statuses)
    }

    /// Whether `name` is the start or on an edge (so drawn without a declaration).
    fn is_linked(&self, name: &str) -> bool {
        self.start.as_deref() == Some(name) || self.edges.iter().any(|e| e.from == name || e.to == name)
    }

    /// A Mermaid flowchart: `-->` for transitions, dotted labelled arrows for `on_error`
    /// and dependencies, a class per status.
    pub fn to_mermaid(&self) -> String {
        let mut s = String::from("flowchart TD\n");
        let ids: Vec<String> = self.states.iter().enumerate().map(|(i, st)| mermaid_id(&st.name, i)).collect();
        let id_of = |name: &str| -> String {
            match self.states.iter().position(|st| st.name == name) {
                Some(i) => ids[i].clone(),
                None => mermaid_id(name, self.states.len()),
            }
        };
        for (st, id) in self.states.iter().zip(&ids) {
            if *id != st.name {
                let _ = writeln!(s, "    {id}[\"{}\"]", st.name.replace('"', "#quot;"));
            } else if !self.is_linked(&st.name) {
                // On no edge: declared, or Mermaid would not draw it.
                let _ = writeln!(s, "    {id}");
            }
        }
        if let Some(start) = &self.start {
            let _ = writeln!(s, "    __start([start]) --> {}", id_of(start));
        }
        for e in &self.edges {
            let arrow = match e.kind {
                EdgeKind::Transition => "-->",
                EdgeKind::OnError => "-. on_error .->",
                EdgeKind::Dependency(_) => "-. depends .->",
            };
            let _ = writeln!(s, "    {} {} {}", id_of(&e.from), arrow, id_of(&e.to));
        }
        let mut used: Vec<StateStatus> = Vec::new();
        for (st, id) in self.states.iter().zip(&ids) {
            if let Some(status) = st.status {
                let _ = writeln!(s, "    class {id} {}", class_of(status));
                if !used.contains(&status) {
                    used.push(status);
                }
            }
        }
        used.sort_by_key(|&st| st as u8);
        for status in used {
            let (fill, stroke) = colours(status);
            let _ = writeln!(s, "    classDef {} fill:{fill},stroke:{stroke}", class_of(status));
        }
        s
    }

    /// A Graphviz digraph: the start doubly circled, dashed `on_error`, dotted
    /// dependencies, states filled by status.
    pub fn to_dot(&self) -> String {
        let mut s = format!("digraph \"{}\" {{\n", escape_dot(&self.name));
        if let Some(start) = &self.start {
            let _ = writeln!(s, "    \"{}\" [shape=doublecircle];", escape_dot(start));
        }
        for st in &self.states {
            if st.status.is_none() && !self.is_linked(&st.name) {
                // On no edge: declared, or Graphviz would not draw it.
                let _ = writeln!(s, "    \"{}\";", escape_dot(&st.name));
            }
            if let Some(status) = st.status {
                let (fill, _) = colours(status);
                let _ = writeln!(
                    s,
                    "    \"{}\" [style=filled, fillcolor=\"{fill}\", tooltip=\"{}\"];",
                    escape_dot(&st.name),
                    status.as_str()
                );
            }
        }
        for e in &self.edges {
            let style = match e.kind {
                EdgeKind::Transition => "",
                EdgeKind::OnError => " [style=dashed, label=\"on_error\"]",
                EdgeKind::Dependency(_) => " [style=dotted, label=\"depends\"]",
            };
            let _ = writeln!(s, "    \"{}\" -> \"{}\"{};", escape_dot(&e.from), escape_dot(&e.to), style);
        }
        s.push_str("}\n");
        s
    }
}

/// Words Mermaid's flowchart grammar reserves (matched without case).
const MERMAID_RESERVED: &[&str] = &["end", "graph", "flowchart", "subgraph", "class", "classdef", "click", "style"];

/// The node id of state `name` (the `i`-th): the name itself when Mermaid takes it as is.
fn mermaid_id(name: &str, i: usize) -> String {
    let plain = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
        && !MERMAID_RESERVED.iter().any(|r| r.eq_ignore_ascii_case(name));
    if plain {
        name.to_owned()
    } else {
        format!("__s{i}")
    }
}

fn escape_dot(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The style class of a status.
fn class_of(status: StateStatus) -> &'static str {
    match status {
        StateStatus::Pending => "pending",
        StateStatus::Ready => "ready",
        StateStatus::Running => "running",
        StateStatus::Completed => "completed",
        StateStatus::Failed => "failed",
        StateStatus::Blocked => "blocked",
        StateStatus::Cancelled => "cancelled",
        StateStatus::Timeout => "timeout",
        StateStatus::Retrying => "retrying",
    }
}

/// Fill and stroke colours of a status.
fn colours(status: StateStatus) -> (&'static str, &'static str) {
    match status {
        StateStatus::Pending => ("#f8f9fa", "#adb5bd"),
        StateStatus::Ready => ("#e2e3e5", "#6c757d"),
        StateStatus::Running => ("#cfe2ff", "#0d6efd"),
        StateStatus::Completed => ("#d1e7dd", "#198754"),
        StateStatus::Failed => ("#f8d7da", "#dc3545"),
        StateStatus::Blocked => ("#e2d9f3", "#6f42c1"),
        StateStatus::Cancelled => ("#dee2e6", "#495057"),
        StateStatus::Timeout => ("#ffe5d0", "#fd7e14"),
        StateStatus::Retrying => ("#fff3cd", "#ffc107"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two() -> Diagram {
        let mut d = Diagram::new("w", Some("a".into()));
        d.add_state("a", false);
        d.add_state("b", false);
        d.add_edge("a", "b", EdgeKind::Transition);
        d
    }

    #[test]
    fn names_mermaid_cannot_take_get_ids_of_ours_and_quoted_labels() {
        let mut d = Diagram::new("w", Some("load files".into()));
        d.add_state("load files", false);
        d.add_state("end", false);
        d.add_state("say \"hi\"", false);
        d.add_edge("load files", "end", EdgeKind::Transition);
        d.add_edge("end", "say \"hi\"", EdgeKind::OnError);
        let m = d.to_mermaid();
        assert!(m.contains("__s0[\"load files\"]"), "{m}");
        assert!(m.contains("__s1[\"end\"]"), "{m}");
        assert!(m.contains("__s2[\"say #quot;hi#quot;\"]"), "{m}");
        assert!(m.contains("__start([start]) --> __s0"), "{m}");
        assert!(m.contains("__s0 --> __s1"), "{m}");
        assert!(m.contains("__s1 -. on_error .-> __s2"), "{m}");
        assert!(d.to_dot().contains("\"end\" -> \"say \\\"hi\\\"\" [style=dashed"), "{}", d.to_dot());
    }

    #[test]
    fn statuses_colour_their_states_and_only_used_classes_are_defined() {
        let d = two().with_statuses([("a", StateStatus::Failed), ("nope", StateStatus::Completed)]);
        assert_eq!(d.states[0].status, Some(StateStatus::Failed));
        assert_eq!(d.states[1].status, None);
        let m = d.to_mermaid();
        assert!(m.contains("class a failed\n"), "{m}");
        assert!(m.contains("classDef failed fill:#f8d7da"), "{m}");
        assert!(!m.contains("classDef completed"), "{m}");
        let dot = d.to_dot();
        assert!(dot.contains("\"a\" [style=filled, fillcolor=\"#f8d7da\", tooltip=\"Failed\"];"), "{dot}");
        assert!(!dot.contains("\"b\" [style=filled"), "{dot}");
    }

    #[test]
    fn a_state_on_no_edge_is_still_drawn() {
        let mut d = two();
        d.add_state("lonely", true);
        assert!(d.to_mermaid().ends_with("    a --> b\n") && d.to_mermaid().contains("    lonely\n"));
        assert!(d.to_dot().contains("    \"lonely\";\n"));
        assert!(!d.to_dot().contains("    \"b\";\n"), "b is on an edge");
    }

    #[test]
    fn a_picture_without_statuses_has_no_classes() {
        let m = two().to_mermaid();
        assert_eq!(m, "flowchart TD\n    __start([start]) --> a\n    a --> b\n");
    }
}
