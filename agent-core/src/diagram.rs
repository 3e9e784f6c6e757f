//! Pictures of a workflow: Mermaid flowcharts, Graphviz digraphs and SVG (the layout and
//! drawing of which live in `svg`), optionally coloured by a run.
//!
//! A [`Diagram`] is plain owned data (states in definition order, edges, and what a run
//! showed of each state), built from a compile-time [`WorkflowGraph`], from a built agent
//! (the runtime's `Agent::diagram`), and overlaid with a live run or a [`Checkpoint`].
//!
//! Invariants:
//! - The output is deterministic: states in definition order, edges in the order given,
//!   one style class per status, so a picture can be diffed and snapshot-tested.
//! - No node id comes from a state name: states are `s0`, `s1`, ... in definition order
//!   (names an edge or the start refer to without a state follow, in order of first
//!   mention); the start is `start`, the end `stop`, legend entries `legend_*`. A name is
//!   only ever written inside a quoted label, escaped for the format, so every name parses
//!   and is drawn as written (control characters other than newlines are shown as escapes,
//!   `\r`, `\x1b`; a newline breaks the line).
//! - The start is a filled circle; the end a double circle, reached from the states whose
//!   every exit is the end (no transition known and none computed at run time). A join is
//!   a hexagon. What a run showed is marked on the state: its status by colour, requests
//!   for human input and retries by a line under its name and a border style.
//! - Every picture carries one legend (a Mermaid subgraph, a Graphviz cluster), at its top
//!   level, naming the shapes, colours and marks it uses anywhere, child runs included.
//! - A state that started a child run may carry the child's own diagram
//!   ([`DiagramState::child`], [`Diagram::with_child`]), drawn inside the picture: a Mermaid
//!   subgraph `<id>_child`, a Graphviz cluster `cluster_<id>`, an SVG frame `<id>_child`,
//!   reached from the state by a dashed arrow labelled `runs`. A child's node ids are its
//!   state's id, `_`, then its own ids (a child of `s2` has `s2_s0`, `s2_start`, `s2_stop`;
//!   a grandchild under `s2_s1` has `s2_s1_s0`; a child with no node at all gets a node
//!   `s2_empty` saying so), so ids stay unique and still never come from names. Children
//!   are drawn [`MAX_DEPTH`] levels below the top at most: deeper ones are left out (so the
//!   drawing code's recursion stays bounded whatever the input).

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

mod svg;

use crate::graph::{EdgeKind, WorkflowGraph};
use crate::{Checkpoint, InputRequestRecord, StateStatus};

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
    /// A fan-in join: it waits for every branch that reaches it.
    pub join: bool,
    /// Retries its attempts made in the overlaid run (0 without one).
    pub retries: u32,
    /// Requests for human input it made in the overlaid run (0 without one).
    pub asked: u32,
    /// Whether one of those requests waits for an answer.
    pub waiting: bool,
    /// The diagram of the child run this state started (the latest one, when several),
    /// drawn inside this picture; `None` when it started none or it was not expanded.
    pub child: Option<Box<Diagram>>,
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

/// A workflow's picture: its states, its known edges, and optionally what a run showed.
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
/// assert!(mermaid.contains("    s0(\"a\")\n"));
/// assert!(mermaid.contains("    s0 --> s1\n"));
/// assert!(mermaid.contains("    s1 --> stop\n"), "b can only end");
/// assert!(mermaid.contains("    class s0 completed\n"));
/// assert!(picture.to_dot().contains("s1 [label=\"b\", style=\"rounded,filled\", fillcolor=\"#cfe2ff\", tooltip=\"Running\"];"));
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

/// How many levels of child runs a picture draws below its top: the children of a picture
/// [`MAX_DEPTH`] levels down are left out.
const MAX_DEPTH: usize = 4;

/// How a node is drawn: its id, its label's lines (unescaped), its shape and its marks.
struct Node<'a> {
    id: String,
    lines: Vec<String>,
    state: Option<&'a DiagramState>,
}

/// The marks a run may put on a state, in legend order.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mark {
    Asked,
    Retried,
}

impl Mark {
    fn class(self) -> &'static str {
        match self {
            Mark::Asked => "asked",
            Mark::Retried => "retried",
        }
    }

    fn legend(self) -> &'static str {
        match self {
            Mark::Asked => "asked a person",
            Mark::Retried => "retried",
        }
    }

    fn of(state: &DiagramState) -> Vec<Mark> {
        let mut marks = Vec::new();
        if state.asked > 0 || state.waiting {
            marks.push(Mark::Asked);
        }
        if state.retries > 0 {
            marks.push(Mark::Retried);
        }
        marks
    }
}

impl Diagram {
    /// A picture with no state yet.
    pub fn new(name: impl Into<String>, start: Option<String>) -> Diagram {
        Diagram { name: name.into(), start, states: Vec::new(), edges: Vec::new() }
    }

    /// Add a state (drawn in the order added); the returned reference sets more of it.
    ///
    /// ```
    /// use agent_core::Diagram;
    /// let mut d = Diagram::new("w", Some("a".into()));
    /// d.add_state("a", true);
    /// d.add_state("merge", false).join = true;
    /// assert!(d.to_mermaid().contains("    s1{{\"merge\"}}\n"));
    /// ```
    pub fn add_state(&mut self, name: impl Into<String>, computed_targets: bool) -> &mut DiagramState {
        self.states.push(DiagramState {
            name: name.into(),
            status: None,
            computed_targets,
            join: false,
            retries: 0,
            asked: 0,
            waiting: false,
            child: None,
        });
        let last = self.states.len() - 1;
        &mut self.states[last]
    }

    /// Add an edge.
    pub fn add_edge(&mut self, from: impl Into<String>, to: impl Into<String>, kind: EdgeKind) {
        self.edges.push(DiagramEdge { from: from.into(), to: to.into(), kind });
    }

    /// The picture of a compile-time graph: its states (joins marked), literal
    /// transitions, `on_error` routes and dependencies.
    pub fn of_graph(graph: &WorkflowGraph) -> Diagram {
        let mut d = Diagram::new(graph.name, Some(graph.start.to_owned()));
        for s in graph.states {
            d.add_state(s.name, s.computed_targets).join = s.join;
        }
        for e in graph.edges() {
            d.add_edge(e.from, e.to, e.kind);
        }
        d
    }

    /// Apply `f` to the first state of each name given (names of no state are ignored).
    fn update<S: AsRef<str>, T>(
        &mut self,
        items: impl IntoIterator<Item = (S, T)>,
        mut f: impl FnMut(&mut DiagramState, T),
    ) {
        let mut index: HashMap<&str, usize> = HashMap::with_capacity(self.states.len());
        for (i, st) in self.states.iter().enumerate() {
            index.entry(st.name.as_str()).or_insert(i);
        }
        let found: Vec<(usize, T)> =
            items.into_iter().filter_map(|(name, v)| Some((*index.get(name.as_ref())?, v))).collect();
        for (i, v) in found {
            f(&mut self.states[i], v);
        }
    }

    /// The same picture with these statuses (states not named keep theirs; names of no
    /// state are ignored).
    pub fn with_statuses<S: AsRef<str>>(mut self, statuses: impl IntoIterator<Item = (S, StateStatus)>) -> Diagram {
        self.update(statuses, |s, status| s.status = Some(status));
        self
    }

    /// The same picture with these retry counts (states not named keep theirs; names of
    /// no state are ignored).
    pub fn with_retries<S: AsRef<str>>(mut self, retries: impl IntoIterator<Item = (S, u32)>) -> Diagram {
        self.update(retries, |s, n| s.retries = n);
        self
    }

    /// The same picture with a run's requests for human input, each given as the state
    /// that asked and whether it is answered. These replace any requests marked before
    /// (they are the whole run's); requests of no state are ignored.
    ///
    /// ```
    /// use agent_core::Diagram;
    /// let mut d = Diagram::new("w", Some("review".into()));
    /// d.add_state("review", true);
    /// let d = d.with_inputs([("review", true), ("review", false)]);
    /// assert_eq!((d.states[0].asked, d.states[0].waiting), (2, true));
    /// assert!(d.to_mermaid().contains("s0(\"review<br>waiting for a person\")"));
    /// ```
    pub fn with_inputs<S: AsRef<str>>(mut self, inputs: impl IntoIterator<Item = (S, bool)>) -> Diagram {
        for s in &mut self.states {
            s.asked = 0;
            s.waiting = false;
        }
        self.update(inputs, |s, answered| {
            s.asked = s.asked.saturating_add(1);
            s.waiting |= !answered;
        });
        self
    }

    /// The same picture with `child`, the diagram of a child run, drawn inside it and
    /// attached to the first state named `state` (replacing any child it had; a name of no
    /// state is ignored). The child's ids are the state's id, `_`, then its own; it may
    /// have children of its own, drawn down to a depth limit.
    ///
    /// ```
    /// use agent_core::{Diagram, EdgeKind, StateStatus};
    /// let mut parent = Diagram::new("order", Some("pay".into()));
    /// parent.add_state("pay", false);
    /// parent.add_state("ship", false);
    /// parent.add_edge("pay", "ship", EdgeKind::Transition);
    /// let mut child = Diagram::new("shipping", Some("pack".into()));
    /// child.add_state("pack", false);
    /// let picture = parent.with_child("ship", child.with_statuses([("pack", StateStatus::Failed)]));
    ///
    /// let mermaid = picture.to_mermaid();
    /// assert!(mermaid.contains("    subgraph s1_child[\"child run: shipping\"]\n        s1_start((\"start\"))\n"));
    /// assert!(mermaid.contains("        s1_s0(\"pack\")\n") && mermaid.contains("    s1 -. runs .-> s1_start\n"));
    /// assert!(mermaid.contains("    class s1_s0 failed\n") && mermaid.contains("legend_failed(\"Failed\")"));
    /// let dot = picture.to_dot();
    /// assert!(dot.contains("    subgraph cluster_s1 {\n        label=\"child run: shipping\";\n"));
    /// assert!(dot.contains("        s1_start -> s1_s0;\n"));
    /// assert!(dot.contains("    s1 -> s1_start [style=dashed, label=\"runs\"];\n"));
    /// let svg = picture.to_svg();
    /// assert!(svg.contains("<g class=\"child\" data-state=\"ship\" data-child=\"shipping\" id=\"s1_child\""));
    /// assert!(svg.contains("<g class=\"state status-failed\" data-state=\"pack\" data-status=\"Failed\" id=\"s1_s0\" "));
    /// assert!(svg.contains("<path class=\"edge runs\" data-from=\"s1\" data-to=\"s1_child\""));
    /// assert_eq!(svg.matches("<g class=\"legend\"").count(), 1);
    /// ```
    pub fn with_child(mut self, state: &str, child: Diagram) -> Diagram {
        self.update([(state, child)], |s, child| s.child = Some(Box::new(child)));
        self
    }

    /// The same picture with a run's requests for human input as their records give them
    /// (each marked on the state that asked, answered or not): [`Diagram::with_inputs`] of
    /// the records whose state is known.
    ///
    /// ```
    /// use agent_core::{Diagram, InputRequestRecord};
    /// let mut d = Diagram::new("w", Some("review".into()));
    /// d.add_state("review", true);
    /// let mut asked = InputRequestRecord::new("input-1".into(), "Approve?".into(), 0);
    /// asked.state = Some("review".into());
    /// let d = d.with_requests([&asked]);
    /// assert_eq!((d.states[0].asked, d.states[0].waiting), (1, true));
    /// ```
    pub fn with_requests<'a>(self, requests: impl IntoIterator<Item = &'a InputRequestRecord>) -> Diagram {
        self.with_inputs(requests.into_iter().filter_map(|r| Some((r.state.as_deref()?, r.answer.is_some()))))
    }

    /// The same picture coloured by what a checkpoint records: statuses, retries, and the
    /// requests for human input (those whose state is known).
    pub fn with_checkpoint(self, checkpoint: &Checkpoint) -> Diagram {
        let statuses = checkpoint.states.iter().map(|s| (s.name.as_str(), s.status));
        let retries = checkpoint.states.iter().map(|s| (s.name.as_str(), s.retries));
        self.with_statuses(statuses).with_retries(retries).with_requests(&checkpoint.pending_inputs)
    }

    /// The states whose every exit is the end: no transition from them is known, and none
    /// is computed at run time.
    fn finals(&self) -> Vec<&DiagramState> {
        let going_on: HashSet<&str> =
            self.edges.iter().filter(|e| e.kind == EdgeKind::Transition).map(|e| e.from.as_str()).collect();
        self.states.iter().filter(|s| !s.computed_targets && !going_on.contains(s.name.as_str())).collect()
    }

    /// Every node but the start and the end: the states, then names that edges or the
    /// start refer to without a state; and the index of each name.
    fn nodes(&self) -> (Vec<Node<'_>>, HashMap<&str, usize>) {
        let mut nodes = Vec::with_capacity(self.states.len());
        let mut index: HashMap<&str, usize> = HashMap::with_capacity(self.states.len());
        for st in &self.states {
            if index.contains_key(st.name.as_str()) {
                continue;
            }
            index.insert(&st.name, nodes.len());
            let mut lines = vec![visible(&st.name)];
            if st.waiting {
                lines.push("waiting for a person".to_owned());
            } else if st.asked == 1 {
                lines.push("asked a person".to_owned());
            } else if st.asked > 1 {
                lines.push(format!("asked a person {} times", st.asked));
            }
            match st.retries {
                0 => {}
                1 => lines.push("retried once".to_owned()),
                n => lines.push(format!("retried {n} times")),
            }
            nodes.push(Node { id: format!("s{}", nodes.len()), lines, state: Some(st) });
        }
        let mentioned = self.start.iter().chain(self.edges.iter().flat_map(|e| [&e.from, &e.to]));
        for name in mentioned {
            if !index.contains_key(name.as_str()) {
                index.insert(name, nodes.len());
                nodes.push(Node { id: format!("s{}", nodes.len()), lines: vec![visible(name)], state: None });
            }
        }
        (nodes, index)
    }

    /// Where a child's picture is entered by the arrow from the state that ran it: its start,
    /// else its first node; `None` when it has no node at all.
    fn entry(&self) -> Option<&'static str> {
        if self.start.is_some() {
            Some("start")
        } else if !self.states.is_empty() || !self.edges.is_empty() {
            Some("s0")
        } else {
            None
        }
    }

    /// The children drawn inside this picture when it lies `depth` levels below the top
    /// (none at [`MAX_DEPTH`]), each with its state and the index of that state's node in
    /// [`Diagram::nodes`] (a state whose name an earlier state has is not drawn, nor is its
    /// child).
    fn expanded(&self, depth: usize) -> Vec<(usize, &DiagramState, &Diagram)> {
        let mut out = Vec::new();
        if depth >= MAX_DEPTH {
            return out;
        }
        let mut seen: HashSet<&str> = HashSet::with_capacity(self.states.len());
        for st in &self.states {
            if seen.insert(st.name.as_str()) {
                if let Some(child) = &st.child {
                    out.push((seen.len() - 1, st, &**child));
                }
            }
        }
        out
    }

    /// This picture and every child drawn inside it, at any depth (iteratively).
    fn drawn(&self) -> Vec<&Diagram> {
        let mut out = Vec::new();
        let mut todo = vec![(self, 0)];
        while let Some((d, depth)) = todo.pop() {
            out.push(d);
            todo.extend(d.expanded(depth).into_iter().map(|(_, _, child)| (child, depth + 1)));
        }
        out
    }

    /// Whether a join is drawn anywhere in the picture.
    fn any_join(&self) -> bool {
        self.drawn().iter().any(|d| d.states.iter().any(|st| st.join))
    }

    /// The statuses drawn anywhere in the picture, in status order.
    fn used_statuses(&self) -> Vec<StateStatus> {
        let mut used: Vec<StateStatus> = self.drawn().iter().flat_map(|d| &d.states).filter_map(|s| s.status).collect();
        used.sort_by_key(|&st| st as u8);
        used.dedup();
        used
    }

    /// The marks drawn anywhere in the picture, in legend order.
    fn used_marks(&self) -> Vec<Mark> {
        let drawn = self.drawn();
        [Mark::Asked, Mark::Retried]
            .into_iter()
            .filter(|m| drawn.iter().flat_map(|d| &d.states).any(|s| Mark::of(s).contains(m)))
            .collect()
    }

    /// A Mermaid flowchart: `-->` for transitions, dotted labelled arrows for `on_error`
    /// and dependencies, a class per status and per mark, and a legend. A child run's
    /// picture is a subgraph `<id>_child` after the nodes, reached by `<id> -. runs .->`.
    pub fn to_mermaid(&self) -> String {
        let mut s = String::from("flowchart TD\n");
        self.mermaid_flow("", 0, &mut s);
        self.mermaid_classes("", 0, &mut s);
        self.mermaid_legend(&mut s);
        for status in self.used_statuses() {
            let (fill, stroke) = colours(status);
            let _ = writeln!(s, "    classDef {} fill:{fill},stroke:{stroke}", class_of(status));
        }
        for mark in self.used_marks() {
            let style = match mark {
                Mark::Asked => "stroke-width:4px",
                Mark::Retried => "stroke-dasharray:6 3",
            };
            let _ = writeln!(s, "    classDef {} {style}", mark.class());
        }
        s
    }

    /// The nodes and edges of this picture, `depth` levels below the top (indented one more
    /// level each), with ids prefixed by `prefix`; each child's subgraph after the nodes.
    fn mermaid_flow(&self, prefix: &str, depth: usize, s: &mut String) {
        let (nodes, index) = self.nodes();
        let id = |name: &str| nodes[index[name]].id.as_str();
        let finals = self.finals();
        let pad = "    ".repeat(depth + 1);
        if self.start.is_some() {
            let _ = writeln!(s, "{pad}{prefix}start((\"start\"))");
        }
        if !finals.is_empty() {
            let _ = writeln!(s, "{pad}{prefix}stop(((\"end\")))");
        }
        for node in &nodes {
            let mut label = node.lines.iter().map(|l| mermaid_text(l)).collect::<Vec<_>>().join("<br>");
            if label.is_empty() {
                // Mermaid refuses `("")`; it reads `(" ")` as the empty label.
                label.push(' ');
            }
            let join = node.state.is_some_and(|st| st.join);
            let (open, close) = if join { ("{{", "}}") } else { ("(", ")") };
            let _ = writeln!(s, "{pad}{prefix}{}{open}\"{label}\"{close}", node.id);
        }
        for (i, _, child) in self.expanded(depth) {
            let parent = format!("{prefix}{}", nodes[i].id);
            let _ = writeln!(s, "{pad}subgraph {parent}_child[\"child run: {}\"]", mermaid_text(&visible(&child.name)));
            child.mermaid_flow(&format!("{parent}_"), depth + 1, s);
            // A child without a node gets one saying so, for the arrow to reach.
            let entry = child.entry().unwrap_or_else(|| {
                let _ = writeln!(s, "{pad}    {parent}_empty(\"no state\")");
                "empty"
            });
            let _ = writeln!(s, "{pad}end");
            let _ = writeln!(s, "{pad}{parent} -. runs .-> {parent}_{entry}");
        }
        if let Some(start) = &self.start {
            let _ = writeln!(s, "{pad}{prefix}start --> {prefix}{}", id(start));
        }
        for e in &self.edges {
            let arrow = match e.kind {
                EdgeKind::Transition => "-->",
                EdgeKind::OnError => "-. on_error .->",
                EdgeKind::Dependency(_) => "-. depends .->",
            };
            let _ = writeln!(s, "{pad}{prefix}{} {arrow} {prefix}{}", id(&e.from), id(&e.to));
        }
        for st in &finals {
            let _ = writeln!(s, "{pad}{prefix}{} --> {prefix}stop", id(&st.name));
        }
    }

    /// The start's style and the class of each status and mark of this picture (ids
    /// prefixed by `prefix`), then of its children's.
    fn mermaid_classes(&self, prefix: &str, depth: usize, s: &mut String) {
        if self.start.is_some() {
            let _ = writeln!(s, "    style {prefix}start fill:#212529,stroke:#212529,color:#ffffff");
        }
        let (nodes, _) = self.nodes();
        for node in &nodes {
            let Some(st) = node.state else { continue };
            if let Some(status) = st.status {
                let _ = writeln!(s, "    class {prefix}{} {}", node.id, class_of(status));
            }
            for mark in Mark::of(st) {
                let _ = writeln!(s, "    class {prefix}{} {}", node.id, mark.class());
            }
        }
        for (i, _, child) in self.expanded(depth) {
            child.mermaid_classes(&format!("{prefix}{}_", nodes[i].id), depth + 1, s);
        }
    }

    fn mermaid_legend(&self, s: &mut String) {
        s.push_str("    subgraph legend[\"legend\"]\n        direction LR\n");
        s.push_str("        legend_state(\"state\")\n");
        if self.any_join() {
            s.push_str("        legend_join{{\"join: waits for every branch\"}}\n");
        }
        for status in self.used_statuses() {
            let _ = writeln!(
                s,
                "        legend_{0}(\"{1}\")\n        class legend_{0} {0}",
                class_of(status),
                status.as_str()
            );
        }
        for mark in self.used_marks() {
            let _ =
                writeln!(s, "        legend_{0}(\"{1}\")\n        class legend_{0} {0}", mark.class(), mark.legend());
        }
        s.push_str("    end\n");
    }

    /// A Graphviz digraph: a filled circle for the start, a double circle for the end,
    /// hexagons for joins, dashed `on_error`, dotted dependencies, states filled by status
    /// and bordered by marks, and a legend cluster. A child run's picture is a cluster
    /// `cluster_<id>`, reached by a dashed edge labelled `runs`.
    pub fn to_dot(&self) -> String {
        let mut s = format!("digraph \"{}\" {{\n", dot_text(&visible(&self.name)));
        s.push_str("    node [shape=box, style=rounded];\n");
        self.dot_flow("", 0, &mut s);
        s.push_str("    subgraph cluster_legend {\n        label=\"legend\";\n");
        s.push_str("        legend_state [label=\"state\"];\n");
        if self.any_join() {
            let _ = writeln!(
                s,
                "        legend_join [label=\"join: waits for every branch\"{}];",
                dot_style(true, None, &[])
            );
        }
        for status in self.used_statuses() {
            let attrs = dot_style(false, Some(status), &[]);
            let _ = writeln!(s, "        legend_{} [label=\"{}\"{attrs}];", class_of(status), status.as_str());
        }
        for mark in self.used_marks() {
            let attrs = dot_style(false, None, &[mark]);
            let _ = writeln!(s, "        legend_{} [label=\"{}\"{attrs}];", mark.class(), mark.legend());
        }
        s.push_str("    }\n}\n");
        s
    }

    /// The nodes and edges of this picture, `depth` levels below the top (indented one more
    /// level each), with ids prefixed by `prefix`; then each child's cluster.
    fn dot_flow(&self, prefix: &str, depth: usize, s: &mut String) {
        let (nodes, index) = self.nodes();
        let id = |name: &str| nodes[index[name]].id.as_str();
        let finals = self.finals();
        let pad = "    ".repeat(depth + 1);
        if self.start.is_some() {
            let _ = writeln!(
                s,
                "{pad}{prefix}start [label=\"start\", shape=circle, style=filled, fillcolor=\"#212529\", \
                 fontcolor=\"#ffffff\"];"
            );
        }
        if !finals.is_empty() {
            let _ = writeln!(s, "{pad}{prefix}stop [label=\"end\", shape=doublecircle];");
        }
        for node in &nodes {
            let label = node.lines.iter().map(|l| dot_text(l)).collect::<Vec<_>>().join("\\n");
            let _ = write!(s, "{pad}{prefix}{} [label=\"{label}\"", node.id);
            if let Some(st) = node.state {
                let attrs = dot_style(st.join, st.status, &Mark::of(st));
                s.push_str(&attrs);
            }
            s.push_str("];\n");
        }
        if let Some(start) = &self.start {
            let _ = writeln!(s, "{pad}{prefix}start -> {prefix}{};", id(start));
        }
        for e in &self.edges {
            let style = match e.kind {
                EdgeKind::Transition => "",
                EdgeKind::OnError => " [style=dashed, label=\"on_error\"]",
                EdgeKind::Dependency(_) => " [style=dotted, label=\"depends\"]",
            };
            let _ = writeln!(s, "{pad}{prefix}{} -> {prefix}{}{style};", id(&e.from), id(&e.to));
        }
        for st in &finals {
            let _ = writeln!(s, "{pad}{prefix}{} -> {prefix}stop;", id(&st.name));
        }
        for (i, _, child) in self.expanded(depth) {
            let parent = format!("{prefix}{}", nodes[i].id);
            let _ = writeln!(s, "{pad}subgraph cluster_{parent} {{");
            let _ = writeln!(
                s,
                "{pad}    label=\"child run: {}\";\n{pad}    style=dashed;",
                dot_text(&visible(&child.name))
            );
            child.dot_flow(&format!("{parent}_"), depth + 1, s);
            // An empty cluster is not drawn, nor can an edge reach it: a node says it is empty.
            let entry = child.entry().unwrap_or_else(|| {
                let _ = writeln!(s, "{pad}    {parent}_empty [label=\"no state\", shape=plaintext];");
                "empty"
            });
            let _ = writeln!(s, "{pad}}}");
            // Outside the cluster, or Graphviz would draw the parent's state inside it.
            let _ = writeln!(s, "{pad}{parent} -> {parent}_{entry} [style=dashed, label=\"runs\"];");
        }
    }

    /// A standalone SVG picture, laid out top to bottom in layers (longest path from the
    /// start, back edges curving around the side), for a page to serve or show inline.
    ///
    /// Node ids are the other writers' (`s0`, `s1`, ... in definition order, `start`,
    /// `stop`); each state is a `<g class="state status-<status>">` with `data-state` (its
    /// name, escaped) and, with a run's status, `data-status`, and a `<title>` holding its
    /// whole name and status. A status shows as its fill colour and also as a border or
    /// mark of its own (Failed: a thick border and a ✕, Completed: a ✓, Running: dashed,
    /// Retrying: double, Cancelled: struck through, ...), named in the legend. Labels are
    /// cut with an ellipsis past 32 columns; every text is escaped for XML.
    ///
    /// A child run's picture is drawn right of its parent's, without a legend of its own, in
    /// a frame `<g class="child" data-state=… data-child=… id="<id>_child">` headed
    /// `child run: <name>`, which a dashed `<path class="edge runs">` from the state
    /// reaches; the picture grows to hold every frame, and its one legend covers them all.
    ///
    /// ```
    /// use agent_core::{Diagram, EdgeKind, StateStatus};
    /// let mut d = Diagram::new("w", Some("a".into()));
    /// d.add_state("a", false);
    /// d.add_state("<b>", false);
    /// d.add_edge("a", "<b>", EdgeKind::Transition);
    /// let svg = d.with_statuses([("a", StateStatus::Failed)]).to_svg();
    /// assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    /// assert!(svg.contains("<g class=\"state status-failed\" data-state=\"a\" data-status=\"Failed\" id=\"s0\""));
    /// assert!(svg.contains("data-state=\"&lt;b&gt;\" id=\"s1\"") && !svg.contains("<b>"));
    /// assert!(svg.contains("<g class=\"legend-entry status-failed\""));
    /// ```
    pub fn to_svg(&self) -> String {
        svg::render(self)
    }
}

/// The attributes (after the label) of a node: shape, style, fill and border.
fn dot_style(join: bool, status: Option<StateStatus>, marks: &[Mark]) -> String {
    let mut a = String::new();
    let mut style = vec![if join { "solid" } else { "rounded" }];
    if join {
        a.push_str(", shape=hexagon");
    }
    if status.is_some() {
        style.push("filled");
    }
    if marks.contains(&Mark::Retried) {
        style.push("dashed");
    }
    if style.len() > 1 || join {
        let _ = write!(a, ", style=\"{}\"", style.join(","));
    }
    if let Some(status) = status {
        let _ = write!(a, ", fillcolor=\"{}\", tooltip=\"{}\"", colours(status).0, status.as_str());
    }
    if marks.contains(&Mark::Asked) {
        a.push_str(", penwidth=3");
    }
    a
}

/// `text` with the characters that would not show as themselves made visible: control
/// characters other than newlines, and the bidirectional controls, become their escapes
/// (`\r`, `\x1b`, `\u{202e}`).
fn visible(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push(c),
            c if (c.is_control() || is_bidi_control(c)) && u32::from(c) < 0x100 => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if c.is_control() || is_bidi_control(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// The Unicode characters that reorder text around them (embeddings, overrides, isolates).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Text for inside a Mermaid `"..."` label: Mermaid's entity escapes (`#quot;`, `#35;`)
/// for every character its parser or renderer would read as syntax, `<br>` for newlines.
fn mermaid_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("#quot;"),
            '&' => out.push_str("#amp;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '\n' => out.push_str("<br>"),
            // `#` starts an entity, `%%` a comment or a directive, a backtick Markdown.
            '#' | '%' | '`' => {
                let _ = write!(out, "#{};", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// Text for inside a Graphviz `"..."` string: quotes and backslashes escaped (so none of
/// Graphviz's `\N`, `\l` escapes appear), newlines as centred line breaks, `&` as `&amp;`
/// (Graphviz reads entities in labels).
fn dot_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '&' => out.push_str("&amp;"),
            c => out.push(c),
        }
    }
    out
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
    fn ids_are_generated_and_names_are_escaped_labels() {
        let mut d = Diagram::new("w", Some("load files".into()));
        d.add_state("load files", false);
        d.add_state("end", false);
        d.add_state("say \"hi\" <b>&#35;%%", false);
        d.add_edge("load files", "end", EdgeKind::Transition);
        d.add_edge("end", "say \"hi\" <b>&#35;%%", EdgeKind::OnError);
        d.add_edge("end", "elsewhere", EdgeKind::OnError);
        let m = d.to_mermaid();
        assert!(m.contains("    s0(\"load files\")\n"), "{m}");
        assert!(m.contains("    s1(\"end\")\n"), "{m}");
        assert!(m.contains("    s2(\"say #quot;hi#quot; #lt;b#gt;#amp;#35;35;#37;#37;\")\n"), "{m}");
        assert!(m.contains("    s3(\"elsewhere\")\n"), "a name no state has gets a node: {m}");
        assert!(m.contains("    start --> s0\n"), "{m}");
        assert!(m.contains("    s0 --> s1\n"), "{m}");
        assert!(m.contains("    s1 -. on_error .-> s2\n"), "{m}");
        // `end` and `say` have no transition (`on_error` is taken only on failure): on
        // success they end. `load files` goes on.
        assert!(m.contains("    s1 --> stop\n    s2 --> stop\n") && !m.contains("s0 --> stop"), "{m}");
        let dot = d.to_dot();
        assert!(dot.contains("    s2 [label=\"say \\\"hi\\\" <b>&amp;#35;%%\"];\n"), "{dot}");
        assert!(dot.contains("    s1 -> s2 [style=dashed, label=\"on_error\"];\n"), "{dot}");
    }

    #[test]
    fn newlines_break_lines_and_control_characters_show_as_escapes() {
        let mut d = Diagram::new("w\\N", None);
        d.add_state("two\nlines\r\u{1b}[31m\u{202e}x\\N", false);
        let m = d.to_mermaid();
        assert!(m.contains("    s0(\"two<br>lines\\r\\x1b[31m\\u{202e}x\\N\")\n"), "{m}");
        let dot = d.to_dot();
        assert!(dot.starts_with("digraph \"w\\\\N\" {\n"), "{dot}");
        assert!(dot.contains("    s0 [label=\"two\\nlines\\\\r\\\\x1b[31m\\\\u{202e}x\\\\N\"];\n"), "{dot}");
    }

    #[test]
    fn statuses_colour_their_states_and_only_used_classes_are_defined() {
        let d = two().with_statuses([("a", StateStatus::Failed), ("nope", StateStatus::Completed)]);
        assert_eq!(d.states[0].status, Some(StateStatus::Failed));
        assert_eq!(d.states[1].status, None);
        let m = d.to_mermaid();
        assert!(m.contains("    class s0 failed\n"), "{m}");
        assert!(m.contains("classDef failed fill:#f8d7da"), "{m}");
        assert!(m.contains("        legend_failed(\"Failed\")\n        class legend_failed failed\n"), "{m}");
        assert!(!m.contains("classDef completed") && !m.contains("legend_completed"), "{m}");
        let dot = d.to_dot();
        assert!(
            dot.contains("    s0 [label=\"a\", style=\"rounded,filled\", fillcolor=\"#f8d7da\", tooltip=\"Failed\"];"),
            "{dot}"
        );
        assert!(dot.contains("    s1 [label=\"b\"];"), "{dot}");
    }

    #[test]
    fn start_end_and_joins_have_shapes_of_their_own() {
        let mut d = two();
        d.add_state("merge", false).join = true;
        d.add_state("router", true);
        d.add_edge("b", "merge", EdgeKind::Transition);
        let m = d.to_mermaid();
        assert!(m.starts_with("flowchart TD\n    start((\"start\"))\n    stop(((\"end\")))\n"), "{m}");
        assert!(m.contains("    s2{{\"merge\"}}\n") && m.contains("    s2 --> stop\n"), "{m}");
        // `router`'s targets are computed: whether it ends is not known, so no edge is drawn.
        assert!(!m.contains("s3 --> stop") && m.contains("    s3(\"router\")\n"), "{m}");
        assert!(m.contains("legend_join{{\"join: waits for every branch\"}}"), "{m}");
        let dot = d.to_dot();
        assert!(dot.contains("    start [label=\"start\", shape=circle, style=filled"), "{dot}");
        assert!(dot.contains("    stop [label=\"end\", shape=doublecircle];"), "{dot}");
        assert!(dot.contains("    s2 [label=\"merge\", shape=hexagon, style=\"solid\"];"), "{dot}");
        assert!(dot.contains("    s2 -> stop;") && !dot.contains("s3 -> stop"), "{dot}");
        // A picture without a join has no join in its legend.
        assert!(!two().to_mermaid().contains("legend_join") && !two().to_dot().contains("legend_join"));
    }

    #[test]
    fn requests_for_input_and_retries_mark_their_states() {
        let d = two().with_retries([("b", 2)]).with_inputs([("a", true), ("ghost", false)]);
        let m = d.to_mermaid();
        assert!(m.contains("    s0(\"a<br>asked a person\")\n    s1(\"b<br>retried 2 times\")\n"), "{m}");
        assert!(m.contains("    class s0 asked\n    class s1 retried\n"), "{m}");
        assert!(
            m.contains("classDef asked stroke-width:4px") && m.contains("classDef retried stroke-dasharray"),
            "{m}"
        );
        assert!(m.contains("legend_asked(\"asked a person\")") && m.contains("legend_retried(\"retried\")"), "{m}");
        let dot = d.to_dot();
        assert!(dot.contains("    s0 [label=\"a\\nasked a person\", penwidth=3];"), "{dot}");
        assert!(dot.contains("    s1 [label=\"b\\nretried 2 times\", style=\"rounded,dashed\"];"), "{dot}");
        // Inputs given again replace the earlier ones.
        let d = d.with_inputs([("b", false)]);
        assert_eq!((d.states[0].asked, d.states[1].asked, d.states[1].waiting), (0, 1, true));
        assert!(d.to_mermaid().contains("s1(\"b<br>waiting for a person<br>retried 2 times\")"));
    }

    #[test]
    fn a_state_on_no_edge_is_still_drawn() {
        let mut d = two();
        d.add_state("lonely", true);
        assert!(d.to_mermaid().contains("    s2(\"lonely\")\n"));
        assert!(d.to_dot().contains("    s2 [label=\"lonely\"];\n"));
    }

    #[test]
    fn a_picture_without_statuses_has_no_classes() {
        let m = two().to_mermaid();
        assert_eq!(
            m,
            "flowchart TD\n    start((\"start\"))\n    stop(((\"end\")))\n    s0(\"a\")\n    s1(\"b\")\n    start --> s0\n    \
             s0 --> s1\n    s1 --> stop\n    style start fill:#212529,stroke:#212529,color:#ffffff\n    \
             subgraph legend[\"legend\"]\n        direction LR\n        legend_state(\"state\")\n    end\n"
        );
    }

    /// `order`: `pay` (completed), then `ship`.
    fn order() -> Diagram {
        two_named("order", "pay", "ship").with_statuses([("pay", StateStatus::Completed)])
    }

    /// `name`: `a` (the start), then `b`.
    fn two_named(name: &str, a: &str, b: &str) -> Diagram {
        let mut d = Diagram::new(name, Some(a.into()));
        d.add_state(a, false);
        d.add_state(b, false);
        d.add_edge(a, b, EdgeKind::Transition);
        d
    }

    /// The ids of the nodes a Mermaid flowchart declares (in order, repeats kept).
    fn mermaid_ids(m: &str) -> Vec<&str> {
        let skip = ["subgraph ", "class ", "classDef ", "style ", "direction ", "end", "flowchart "];
        m.lines()
            .map(str::trim)
            .filter(|l| !skip.iter().any(|k| l.starts_with(k)) && !l.contains("-->") && !l.contains(" -. "))
            .map(|l| &l[..l.find(['(', '{']).unwrap_or_else(|| panic!("not a node: {l}"))])
            .collect()
    }

    /// The ids of the nodes a Graphviz digraph declares (in order, repeats kept).
    fn dot_ids(dot: &str) -> Vec<&str> {
        dot.lines()
            .map(str::trim)
            .filter(|l| !l.contains(" -> "))
            .filter_map(|l| l.split_once(" [label="))
            .map(|p| p.0)
            .collect()
    }

    /// Every `id` attribute of an SVG picture (in order, repeats kept).
    fn svg_ids(svg: &str) -> Vec<&str> {
        svg.split(" id=\"").skip(1).map(|rest| &rest[..rest.find('"').unwrap()]).collect()
    }

    fn unique(ids: &[&str]) -> bool {
        ids.iter().collect::<HashSet<_>>().len() == ids.len()
    }

    /// Checks that `svg` parses as XML: tags balanced and properly nested, attributes
    /// quoted, no markup character nor `&` out of place.
    fn well_formed(svg: &str) {
        assert!(svg.starts_with("<svg xmlns=") && svg.ends_with("</svg>\n"));
        let mut open: Vec<&str> = Vec::new();
        let mut rest = svg;
        while let Some(lt) = rest.find('<') {
            let text = &rest[..lt];
            assert!(!text.contains('>'), "a bare > in {text:?}");
            for (i, _) in text.match_indices('&') {
                let known = ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;", "&#10;"];
                assert!(known.iter().any(|e| text[i..].starts_with(e)), "a bare & in {text:?}");
            }
            let gt = lt + rest[lt..].find('>').expect("an unclosed tag");
            let tag = &rest[lt + 1..gt];
            assert!(tag.matches('"').count().is_multiple_of(2) && !tag.contains('<'), "<{tag}>");
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(open.pop(), Some(name), "</{name}> closes another element");
            } else if !tag.ends_with('/') {
                open.push(tag.split([' ', '\n']).next().unwrap());
            }
            rest = &rest[gt + 1..];
        }
        assert!(open.is_empty() && rest == "\n", "unclosed: {open:?}");
        assert_eq!(svg.matches("<g ").count() + svg.matches("<g>").count(), svg.matches("</g>").count());
    }

    /// The numbers of `attr="..."` (for `translate(`: its two) after `at` in `svg`.
    fn numbers(svg: &str, at: usize, attr: &str) -> Vec<i64> {
        let rest = &svg[at + svg[at..].find(attr).unwrap_or_else(|| panic!("no {attr}")) + attr.len()..];
        rest[..rest.find(['"', ')']).unwrap()].split([',', ' ']).map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn a_child_has_ids_prefixed_by_its_state_in_every_format() {
        let mut grandchild = Diagram::new("grand", Some("g".into()));
        grandchild.add_state("g", false);
        let child = two_named("a\"b<c>", "pack", "label").with_child("label", grandchild);
        let other = two_named("other", "x", "y");
        let d = order().with_child("ship", child).with_child("pay", other);

        let m = d.to_mermaid();
        let ids = mermaid_ids(&m);
        for id in ["s1_start", "s1_stop", "s1_s0", "s1_s1", "s1_s1_start", "s1_s1_s0", "s0_s0", "s0_s1", "legend_state"]
        {
            assert!(ids.contains(&id), "{id}: {m}");
        }
        assert!(unique(&ids), "{ids:?}\n{m}");
        assert!(
            m.contains("    subgraph s1_child[\"child run: a#quot;b#lt;c#gt;\"]\n        s1_start((\"start\"))\n"),
            "{m}"
        );
        assert!(
            m.contains("        subgraph s1_s1_child[\"child run: grand\"]\n            s1_s1_start((\"start\"))\n"),
            "{m}"
        );
        assert!(
            m.contains("        s1_s0(\"pack\")\n        s1_s1(\"label\")\n")
                && m.contains("        s1_s0 --> s1_s1\n"),
            "{m}"
        );
        assert!(
            m.contains("        s1_start --> s1_s0\n") && m.contains("            s1_s1_s0 --> s1_s1_stop\n"),
            "{m}"
        );
        // Children follow the parent's nodes, in the order of their states.
        assert!(m.find("    s1(\"ship\")\n").unwrap() < m.find("subgraph s0_child").unwrap(), "{m}");
        assert!(m.find("subgraph s0_child").unwrap() < m.find("subgraph s1_child").unwrap(), "{m}");

        let dot = d.to_dot();
        let ids = dot_ids(&dot);
        for id in ["s1_start", "s1_stop", "s1_s0", "s1_s1", "s1_s1_start", "s1_s1_s0", "s0_s0", "s0_s1"] {
            assert!(ids.contains(&id), "{id}: {dot}");
        }
        assert!(unique(&ids), "{ids:?}\n{dot}");
        assert!(dot.contains("    subgraph cluster_s1 {\n        label=\"child run: a\\\"b<c>\";\n"), "{dot}");
        assert!(dot.contains("        subgraph cluster_s1_s1 {\n            label=\"child run: grand\";\n"), "{dot}");
        assert!(
            dot.contains("        s1_s0 -> s1_s1;\n") && dot.contains("            s1_s1_s0 -> s1_s1_stop;\n"),
            "{dot}"
        );
        assert_eq!(dot.matches("digraph").count(), 1, "{dot}");

        let svg = d.to_svg();
        well_formed(&svg);
        let ids = svg_ids(&svg);
        for id in [
            "s1_child",
            "s1_start",
            "s1_stop",
            "s1_s0",
            "s1_s1",
            "s1_s1_child",
            "s1_s1_start",
            "s1_s1_s0",
            "s0_child",
            "s0_s1",
        ] {
            assert!(ids.contains(&id), "{id}: {svg}");
        }
        assert!(unique(&ids), "{ids:?}");
        assert!(
            svg.contains("<g class=\"child\" data-state=\"ship\" data-child=\"a&quot;b&lt;c&gt;\" id=\"s1_child\" "),
            "{svg}"
        );
        assert!(
            svg.contains("data-from=\"s1_s0\" data-to=\"s1_s1\"")
                && svg.contains("data-from=\"s1_s1_s0\" data-to=\"s1_s1_stop\"")
        );
        assert!(!svg.contains("<b") && svg.contains("child run: a&quot;b&lt;c&gt;</text>"), "{svg}");
        // The markers are defined once, at the top.
        assert_eq!(svg.matches("<defs>").count(), 1);
        assert_eq!(svg.matches("id=\"agent-arrow-runs\"").count(), 1);
    }

    #[test]
    fn the_one_legend_covers_what_children_show_and_their_states_have_classes() {
        let mut child = two_named("shipping", "pack", "merge");
        child.states[1].join = true;
        let child = child.with_statuses([("pack", StateStatus::Timeout)]).with_retries([("merge", 1)]);
        let d = order().with_child("ship", child);

        let m = d.to_mermaid();
        assert!(m.contains("    class s1_s0 timeout\n    class s1_s1 retried\n"), "{m}");
        assert!(m.contains("        s1_s1{{\"merge<br>retried once\"}}\n"), "{m}");
        assert!(m.contains("    style s1_start fill:#212529"), "{m}");
        assert!(m.contains("    classDef timeout fill:#ffe5d0") && m.contains("    classDef retried "), "{m}");
        for entry in ["legend_timeout(\"Timeout\")", "legend_retried(", "legend_join{{", "legend_completed("] {
            assert_eq!(m.matches(entry).count(), 1, "{entry}: {m}");
        }
        assert_eq!(m.matches("subgraph legend[").count(), 1, "{m}");

        let dot = d.to_dot();
        assert!(
            dot.contains("        s1_s0 [label=\"pack\", style=\"rounded,filled\", fillcolor=\"#ffe5d0\""),
            "{dot}"
        );
        for entry in ["legend_timeout [", "legend_retried [", "legend_join [", "legend_completed [", "cluster_legend"] {
            assert_eq!(dot.matches(entry).count(), 1, "{entry}: {dot}");
        }

        let svg = d.to_svg();
        assert!(
            svg.contains("<g class=\"state status-timeout\" data-state=\"pack\" data-status=\"Timeout\" id=\"s1_s0\"")
        );
        for entry in ["legend-entry status-timeout", "legend-entry retried", "legend-entry join", "legend-entry runs"] {
            assert_eq!(svg.matches(entry).count(), 1, "{entry}: {svg}");
        }
        assert_eq!(svg.matches("<g class=\"legend\"").count(), 1);
        // Without the child, none of it is in the legend.
        let alone = order().to_svg();
        assert!(!alone.contains("status-timeout") && !alone.contains("legend-entry runs") && !alone.contains("join"));
    }

    #[test]
    fn a_runs_edge_goes_from_the_state_to_the_child() {
        let d = order().with_child("ship", two_named("c", "a", "b"));
        assert!(d.to_mermaid().contains("\n    end\n    s1 -. runs .-> s1_start\n    start --> s0\n"));
        assert!(d.to_dot().contains("\n    }\n    s1 -> s1_start [style=dashed, label=\"runs\"];\n"));
        let svg = d.to_svg();
        let runs = svg.find("<path class=\"edge runs\" data-from=\"s1\" data-to=\"s1_child\" d=\"M").unwrap();
        assert!(
            svg[runs..].starts_with("<path class=\"edge runs\"")
                && svg[runs..].contains("marker-end=\"url(#agent-arrow-runs)\"")
        );
        assert!(runs < svg.find("<g class=\"states\"").unwrap(), "drawn with the edges, under the nodes");

        // Without a start, the arrow reaches the child's first node; without a node, one saying so.
        let mut no_start = Diagram::new("c", None);
        no_start.add_state("q", false);
        let d = order().with_child("ship", no_start).with_child("pay", Diagram::new("", None));
        let m = d.to_mermaid();
        assert!(m.contains("    s1 -. runs .-> s1_s0\n"), "{m}");
        let empty = "    subgraph s0_child[\"child run: \"]\n        s0_empty(\"no state\")\n    end\n";
        assert!(m.contains(&format!("{empty}    s0 -. runs .-> s0_empty\n")), "{m}");
        let dot = d.to_dot();
        assert!(dot.contains("    s1 -> s1_s0 [style=dashed, label=\"runs\"];\n"), "{dot}");
        assert!(
            dot.contains(
                "        s0_empty [label=\"no state\", shape=plaintext];\n    }\n    s0 -> s0_empty [style=dashed"
            ),
            "{dot}"
        );
        let svg = d.to_svg();
        well_formed(&svg);
        assert!(svg.contains("data-from=\"s0\" data-to=\"s0_child\"") && svg.contains(">no state</text>"), "{svg}");
    }

    #[test]
    fn a_picture_is_unchanged_but_for_its_child() {
        // The child shows no status the parent does not, so the legend stays the same.
        let child = two_named("c", "a", "b").with_statuses([("b", StateStatus::Completed)]);
        let with = order().with_child("ship", child);
        let mut without = with.clone();
        without.states[1].child = None;
        assert_eq!(without, order());

        let (m1, m0) = (with.to_mermaid(), without.to_mermaid());
        let (open, close) = (m1.find("    subgraph s1_child").unwrap(), m1.find("\n    end\n").unwrap() + 9);
        let rest = format!("{}{}", &m1[..open], &m1[close..]);
        let rest: Vec<&str> = rest.lines().filter(|l| !l.contains("s1_")).collect();
        assert_eq!(rest.join("\n") + "\n", m0, "{m1}");

        let (d1, d0) = (with.to_dot(), without.to_dot());
        let (open, close) = (d1.find("    subgraph cluster_s1 {").unwrap(), d1.find("\n    }\n").unwrap() + 7);
        let rest = format!("{}{}", &d1[..open], &d1[close..]);
        let rest: Vec<&str> = rest.lines().filter(|l| !l.contains("s1_")).collect();
        assert_eq!(rest.join("\n") + "\n", d0, "{d1}");

        // The parent's drawing is laid out as before: only the runs edge and the frame are new.
        let (s1, s0) = (with.to_svg(), without.to_svg());
        let drawn0 = &s0[s0.find("</defs>\n").unwrap()..s0.find("<g class=\"legend\"").unwrap()];
        let drawn1 = &s1[s1.find("</defs>\n").unwrap()..s1.find("<g class=\"child\"").unwrap()];
        let drawn1: Vec<&str> = drawn1.lines().filter(|l| !l.starts_with("<path class=\"edge runs\"")).collect();
        assert_eq!(drawn1.join("\n") + "\n", drawn0);
        assert_eq!(without.to_svg(), order().to_svg());
    }

    #[test]
    fn with_child_attaches_to_the_first_state_of_the_name_and_replaces() {
        assert_eq!(order().with_child("nobody", two_named("c", "a", "b")), order());
        let d = order().with_child("ship", two_named("c", "a", "b")).with_child("ship", Diagram::new("again", None));
        assert_eq!(d.states[1].child.as_deref().map(|c| c.name.as_str()), Some("again"));
        assert!(d.states[0].child.is_none());
        let mut twice = order();
        twice.add_state("ship", false);
        let twice = twice.with_child("ship", Diagram::new("c", None));
        assert!(twice.states[1].child.is_some() && twice.states[2].child.is_none());
    }

    /// Children `levels` deep under a top picture, each of one state `x`, the one 5 levels
    /// down cancelled and the others running.
    fn chain(levels: usize) -> Diagram {
        let mut d: Option<Diagram> = None;
        for level in (0..=levels).rev() {
            let mut here = Diagram::new(format!("level {level}"), Some("x".into()));
            let status = if level == 5 { StateStatus::Cancelled } else { StateStatus::Running };
            here.add_state("x", false).status = Some(status);
            if let Some(child) = d.take() {
                here = here.with_child("x", child);
            }
            d = Some(here);
        }
        d.unwrap()
    }

    #[test]
    fn nesting_is_drawn_down_to_the_depth_limit_only() {
        assert_eq!(MAX_DEPTH, 4);
        let d = chain(6);
        let deepest = "s0_s0_s0_s0_s0"; // 4 levels down
        let (m, dot, svg) = (d.to_mermaid(), d.to_dot(), d.to_svg());
        assert!(m.contains(&format!("                    {deepest}(\"x\")\n")), "{m}");
        assert!(dot.contains(&format!("                    {deepest} [label=\"x\"")), "{dot}");
        assert!(svg.contains(&format!(" id=\"{deepest}\" ")), "{svg}");
        for out in [&m, &dot, &svg] {
            assert!(!out.contains(&format!("{deepest}_")), "nothing 5 levels down: {out}");
            assert!(!out.contains("level 5") && !out.contains("ancelled"), "{out}");
        }
        assert_eq!(m.matches("subgraph s0").count(), 4, "{m}");
        assert_eq!(dot.matches("subgraph cluster_s0").count(), 4, "{dot}");
        assert_eq!(svg.matches("<g class=\"child\"").count(), 4, "{svg}");
        well_formed(&svg);
        assert!(unique(&svg_ids(&svg)));
        // What lies past the limit is never looked at: a far deeper chain draws the same.
        let deep = chain(500);
        assert_eq!((deep.to_mermaid(), deep.to_dot(), deep.to_svg()), (m, dot, svg));
    }

    #[test]
    fn the_svg_grows_to_hold_every_frame() {
        let mut tall = Diagram::new("tall", Some("t0".into()));
        for i in 0..8 {
            tall.add_state(format!("t{i}"), false);
            if i > 0 {
                tall.add_edge(format!("t{}", i - 1), format!("t{i}"), EdgeKind::Transition);
            }
        }
        let wide = two_named("a rather long name for a workflow, cut in the heading", "a", "b");
        let d = order().with_child("pay", tall.with_child("t7", wide.clone())).with_child("ship", wide);
        let svg = d.to_svg();
        well_formed(&svg);
        assert!(unique(&svg_ids(&svg)));
        let head = svg.find("<svg ").unwrap();
        let (width, height) = (numbers(&svg, head, " width=\"")[0], numbers(&svg, head, " height=\"")[0]);
        assert_eq!(numbers(&svg, head, " viewBox=\"0 0 ")[0], width);
        let legend_x = numbers(&svg, svg.find("<g class=\"legend\"").unwrap(), "translate(")[0];
        let mut lowest = 0;
        for id in ["s0_child", "s1_child"] {
            let at = svg.find(&format!(" id=\"{id}\" ")).unwrap();
            let (xy, size) = (numbers(&svg, at, "translate("), numbers(&svg, at, "<rect class=\"frame\" width=\""));
            let h = numbers(&svg, at, "\" height=\"")[0];
            assert!(xy[0] + size[0] <= width && xy[1] + h <= height, "{id} at {xy:?} {size:?}x{h} in {width}x{height}");
            assert!(xy[0] + size[0] < legend_x, "the legend is right of {id}");
            // The frames are stacked, not overlapping.
            assert!(xy[1] >= lowest, "{id}");
            lowest = xy[1] + h;
        }
        // The grandchild's frame lies inside its parent's.
        let outer = svg.find(" id=\"s0_child\" ").unwrap();
        let inner = svg.find(" id=\"s0_s7_child\" ").unwrap();
        let outer_w = numbers(&svg, outer, "<rect class=\"frame\" width=\"")[0];
        let inner_x = numbers(&svg, inner, "translate(")[0];
        let inner_w = numbers(&svg, inner, "<rect class=\"frame\" width=\"")[0];
        assert!(inner_x + inner_w <= outer_w, "{inner_x} + {inner_w} > {outer_w}");
    }
}
