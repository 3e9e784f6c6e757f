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
//! - Every picture carries a legend (a Mermaid subgraph, a Graphviz cluster) naming the
//!   shapes, colours and marks it uses.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

mod svg;

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
    /// A fan-in join: it waits for every branch that reaches it.
    pub join: bool,
    /// Retries its attempts made in the overlaid run (0 without one).
    pub retries: u32,
    /// Requests for human input it made in the overlaid run (0 without one).
    pub asked: u32,
    /// Whether one of those requests waits for an answer.
    pub waiting: bool,
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

    /// The same picture coloured by what a checkpoint records: statuses, retries, and the
    /// requests for human input (those whose state is known).
    pub fn with_checkpoint(self, checkpoint: &Checkpoint) -> Diagram {
        let statuses = checkpoint.states.iter().map(|s| (s.name.as_str(), s.status));
        let retries = checkpoint.states.iter().map(|s| (s.name.as_str(), s.retries));
        let inputs = checkpoint.pending_inputs.iter().filter_map(|r| Some((r.state.as_deref()?, r.answer.is_some())));
        self.with_statuses(statuses).with_retries(retries).with_inputs(inputs)
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

    /// The statuses drawn, in status order.
    fn used_statuses(&self) -> Vec<StateStatus> {
        let mut used: Vec<StateStatus> = self.states.iter().filter_map(|s| s.status).collect();
        used.sort_by_key(|&st| st as u8);
        used.dedup();
        used
    }

    /// The marks drawn, in legend order.
    fn used_marks(&self) -> Vec<Mark> {
        [Mark::Asked, Mark::Retried]
            .into_iter()
            .filter(|m| self.states.iter().any(|s| Mark::of(s).contains(m)))
            .collect()
    }

    /// A Mermaid flowchart: `-->` for transitions, dotted labelled arrows for `on_error`
    /// and dependencies, a class per status and per mark, and a legend.
    pub fn to_mermaid(&self) -> String {
        let (nodes, index) = self.nodes();
        let id = |name: &str| nodes[index[name]].id.as_str();
        let finals = self.finals();
        let mut s = String::from("flowchart TD\n");
        if self.start.is_some() {
            s.push_str("    start((\"start\"))\n");
        }
        if !finals.is_empty() {
            s.push_str("    stop(((\"end\")))\n");
        }
        for node in &nodes {
            let mut label = node.lines.iter().map(|l| mermaid_text(l)).collect::<Vec<_>>().join("<br>");
            if label.is_empty() {
                // Mermaid refuses `("")`; it reads `(" ")` as the empty label.
                label.push(' ');
            }
            let join = node.state.is_some_and(|st| st.join);
            let (open, close) = if join { ("{{", "}}") } else { ("(", ")") };
            let _ = writeln!(s, "    {}{open}\"{label}\"{close}", node.id);
        }
        if let Some(start) = &self.start {
            let _ = writeln!(s, "    start --> {}", id(start));
        }
        for e in &self.edges {
            let arrow = match e.kind {
                EdgeKind::Transition => "-->",
                EdgeKind::OnError => "-. on_error .->",
                EdgeKind::Dependency(_) => "-. depends .->",
            };
            let _ = writeln!(s, "    {} {arrow} {}", id(&e.from), id(&e.to));
        }
        for st in &finals {
            let _ = writeln!(s, "    {} --> stop", id(&st.name));
        }
        if self.start.is_some() {
            s.push_str("    style start fill:#212529,stroke:#212529,color:#ffffff\n");
        }
        for node in &nodes {
            let Some(st) = node.state else { continue };
            if let Some(status) = st.status {
                let _ = writeln!(s, "    class {} {}", node.id, class_of(status));
            }
            for mark in Mark::of(st) {
                let _ = writeln!(s, "    class {} {}", node.id, mark.class());
            }
        }
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

    fn mermaid_legend(&self, s: &mut String) {
        s.push_str("    subgraph legend[\"legend\"]\n        direction LR\n");
        s.push_str("        legend_state(\"state\")\n");
        if self.states.iter().any(|st| st.join) {
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
    /// and bordered by marks, and a legend cluster.
    pub fn to_dot(&self) -> String {
        let (nodes, index) = self.nodes();
        let id = |name: &str| nodes[index[name]].id.as_str();
        let finals = self.finals();
        let mut s = format!("digraph \"{}\" {{\n", dot_text(&visible(&self.name)));
        s.push_str("    node [shape=box, style=rounded];\n");
        if self.start.is_some() {
            s.push_str(
                "    start [label=\"start\", shape=circle, style=filled, fillcolor=\"#212529\", fontcolor=\"#ffffff\"];\n",
            );
        }
        if !finals.is_empty() {
            s.push_str("    stop [label=\"end\", shape=doublecircle];\n");
        }
        for node in &nodes {
            let label = node.lines.iter().map(|l| dot_text(l)).collect::<Vec<_>>().join("\\n");
            let _ = write!(s, "    {} [label=\"{label}\"", node.id);
            if let Some(st) = node.state {
                let attrs = dot_style(st.join, st.status, &Mark::of(st));
                s.push_str(&attrs);
            }
            s.push_str("];\n");
        }
        if let Some(start) = &self.start {
            let _ = writeln!(s, "    start -> {};", id(start));
        }
        for e in &self.edges {
            let style = match e.kind {
                EdgeKind::Transition => "",
                EdgeKind::OnError => " [style=dashed, label=\"on_error\"]",
                EdgeKind::Dependency(_) => " [style=dotted, label=\"depends\"]",
            };
            let _ = writeln!(s, "    {} -> {}{style};", id(&e.from), id(&e.to));
        }
        for st in &finals {
            let _ = writeln!(s, "    {} -> stop;", id(&st.name));
        }
        s.push_str("    subgraph cluster_legend {\n        label=\"legend\";\n");
        s.push_str("        legend_state [label=\"state\"];\n");
        if self.states.iter().any(|st| st.join) {
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
}
