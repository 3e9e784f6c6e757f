//! The SVG picture of a [`Diagram`] ([`Diagram::to_svg`]), made to be served as a file and
//! shown inline in a page.
//!
//! Invariants:
//! - Pure and deterministic: the same diagram gives the same bytes. Every coordinate is an
//!   integer (no float formatting), ties keep definition order, and nothing iterates a hash
//!   map. It never panics: names edges mention without a state get a node (as in the other
//!   writers), cycles and self loops become back edges, and the graph walks are iterative,
//!   so a long chain costs no stack.
//! - Nothing from a name reaches the output unescaped: every text and attribute goes through
//!   [`xml`], which shows control and bidirectional characters as the other writers do
//!   (`\x1b`, `\u{202e}`) and writes `&`, `<`, `>`, `"`, `'` and newlines as references. A
//!   drawn label is cut to [`MAX_UNITS`] columns and [`MAX_NAME_LINES`] lines, ending in an
//!   ellipsis; the node's `<title>` and `data-state` keep the whole name.
//! - Node ids are the other writers': `s<i>` in definition order, `start`, `stop`, and in a
//!   child run's picture its state's id and `_` before them (`s2_s0`, `s2_start`). A state is
//!   `<g class="state status-<status>" data-state=… data-status=… id="s<i>">` (no `status-`
//!   class nor `data-status` without a run's status). Styles are presentation attributes
//!   only, never a `<style>` element (which, inline, would style the whole page), so a
//!   page's CSS can override them by class. Two pictures inline in one page repeat those
//!   ids; the arrowhead markers' ids (`agent-arrow-*`) are the same in every picture and
//!   define the same marker, so whichever a page resolves draws alike.
//! - Layout, top to bottom: layers by longest path from the start over the edges that are
//!   not back edges (found by a depth-first search from the start, then from the other
//!   nodes in definition order, following transitions before `on_error` and dependency
//!   edges, which also push their target down: a handler sits below what fails into it);
//!   a layer's order is refined by [`SWEEPS`] barycenter sweeps, then each node is placed
//!   under the mean of its parents as near as its row allows. No dummy nodes: an edge
//!   spanning layers is one cubic curve and may cross a box between; a back edge leaves
//!   its source downwards, climbs to the right of the layers it spans and enters its target
//!   from above, turning only in the gaps between layers.
//! - A status is told by its fill (the palette of [`colours`]) and also by a border or mark
//!   of its own ([`look`]), so colour is never the only cue; the legend names every status,
//!   shape, mark and edge style the picture uses, in its child runs' pictures too.
//! - A child run's picture ([`Diagram::with_child`]) is laid out by the same code ([`draw`]),
//!   without a legend or `<defs>` of its own (its arrowheads are the top's), and framed in a
//!   `<g class="child" data-state=… data-child=… id="<id>_child">` under a heading
//!   `child run: <name>` (cut like a label). A picture's children's frames are stacked in one
//!   column right of everything it draws, each level with its state where the one above
//!   leaves room, and reached by a dashed `<path class="edge runs">` (its arrowhead,
//!   `agent-arrow-runs`, is defined only in a picture that draws one). The legend, then the
//!   picture's size, make room for them all. Children are drawn
//!   [`MAX_DEPTH`](super::MAX_DEPTH) levels deep at most.

use std::fmt::Write as _;

use super::{class_of, colours, visible, Diagram, Node};
use crate::graph::EdgeKind;
use crate::StateStatus;

/// The widest drawn label line, in columns (a wide character counts two).
const MAX_UNITS: usize = 32;
/// The most lines of a name drawn (a name's newlines break its label).
const MAX_NAME_LINES: usize = 3;
/// Estimated width of a column, in pixels, at the 12px monospace font.
const CHAR_W: i64 = 7;
/// Height of a label line.
const LINE_H: i64 = 16;
/// Vertical space between layers.
const LAYER_GAP: i64 = 56;
/// Horizontal space between neighbours in a layer.
const NODE_GAP: i64 = 32;
/// Space around the picture.
const MARGIN: i64 = 20;
/// Barycenter sweeps: down, up, down.
const SWEEPS: usize = 3;
/// Height of a child run's frame's heading.
const HEADING_H: i64 = 24;
/// Space between a drawing and its children's frames (the frames are half as far apart).
const CHILD_GAP: i64 = 40;
/// How far a back edge bulges past the layers it spans.
const BULGE: i64 = 40;

/// The kind of a drawn edge (the start's and the end's edges are transitions).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Line {
    Transition,
    OnError,
    Dependency,
    /// From a state to the frame of the child run it started (not a layout edge).
    Runs,
}

impl Line {
    /// Its class, colour and dash pattern.
    fn style(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Line::Transition => ("transition", "#495057", ""),
            Line::OnError => ("on-error", "#dc3545", " stroke-dasharray=\"6 4\""),
            Line::Dependency => ("dependency", "#6c757d", " stroke-dasharray=\"2 4\" stroke-linecap=\"round\""),
            Line::Runs => ("runs", "#6f42c1", " stroke-dasharray=\"8 4\""),
        }
    }
}

/// An edge between two nodes of the layout (indices: states, then the start, then the end).
struct Link {
    from: usize,
    to: usize,
    line: Line,
    back: bool,
}

/// The mark a status adds to its border.
enum Deco {
    Plain,
    Glyph(&'static str),
    Double,
    Strike,
    Bar,
    Clock,
}

/// How a status is drawn besides its fill: border width, dash pattern, mark.
fn look(status: Option<StateStatus>) -> (&'static str, &'static str, Deco) {
    match status {
        None | Some(StateStatus::Pending) => ("1", "", Deco::Plain),
        Some(StateStatus::Ready) => ("1.5", " stroke-dasharray=\"1 3\"", Deco::Plain),
        Some(StateStatus::Running) => ("2", " stroke-dasharray=\"6 3\"", Deco::Plain),
        Some(StateStatus::Completed) => ("1.5", "", Deco::Glyph("\u{2713}")),
        Some(StateStatus::Failed) => ("3.5", "", Deco::Glyph("\u{2715}")),
        Some(StateStatus::Blocked) => ("1.5", "", Deco::Bar),
        Some(StateStatus::Cancelled) => ("1.5", "", Deco::Strike),
        Some(StateStatus::Timeout) => ("1.5", "", Deco::Clock),
        Some(StateStatus::Retrying) => ("1.5", "", Deco::Double),
    }
}

/// `text` for XML text or a quoted attribute: characters that would not show as themselves
/// as escapes ([`visible`]; also U+FFFE and U+FFFF, which XML forbids), markup characters
/// and newlines as references.
fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in visible(text).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\u{fffe}' | '\u{ffff}' => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// Columns a character takes in a monospace font: two for the wide scripts and emoji.
fn units(c: char) -> usize {
    1 + usize::from(matches!(u32::from(c), 0x1100..=0x115f | 0x2e80..=0xa4cf | 0xac00..=0xd7a3 | 0xf900..=0xfaff
        | 0xfe30..=0xfe4f | 0xff00..=0xff60 | 0xffe0..=0xffe6 | 0x1f300..=0x1faff | 0x20000..=0x3fffd))
}

/// `line` cut to [`MAX_UNITS`] columns with an ellipsis, also when `more` follows it.
fn clip(line: &str, more: bool) -> String {
    if !more && line.chars().map(units).sum::<usize>() <= MAX_UNITS {
        return line.to_owned();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in line.chars() {
        used += units(c);
        if used >= MAX_UNITS {
            break;
        }
        out.push(c);
    }
    out.push('\u{2026}');
    out
}

/// A node's drawn lines (the name's, then the run's notes) and how many are the name's.
fn label(node: &Node<'_>) -> (Vec<String>, usize) {
    let name: Vec<&str> = node.lines.first().map_or("", String::as_str).split('\n').collect();
    let shown = name.len().min(MAX_NAME_LINES);
    let mut lines: Vec<String> =
        name[..shown].iter().enumerate().map(|(i, l)| clip(l, i + 1 == shown && shown < name.len())).collect();
    lines.extend(node.lines.iter().skip(1).map(|l| clip(l, false)));
    (lines, shown)
}

/// The outline of a box (`join`: a hexagon) of `w` by `h` centred on 0, `inset` inside it,
/// as an element left open for its paint attributes.
fn outline(join: bool, w: i64, h: i64, inset: i64) -> String {
    let (r, t, i) = (w / 2 - inset, h / 2 - inset, inset);
    if join {
        let p = [(-r, 0), (-r + 10, -t), (r - 10, -t), (r, 0), (r - 10, t), (-r + 10, t)];
        format!("<polygon points=\"{}\"", p.map(|(x, y)| format!("{x},{y}")).join(" "))
    } else {
        format!("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" rx=\"6\"", -r, -t, w - 2 * i, h - 2 * i)
    }
}

/// A state's box centred on 0: fill and border by status, then the status's mark.
/// `strike` is where a strike line crosses (the first label line).
fn shape(s: &mut String, join: bool, status: Option<StateStatus>, (w, h): (i64, i64), strike: i64) {
    let (fill, stroke) = status.map_or(("#ffffff", "#495057"), colours);
    let (width, dash, deco) = look(status);
    let _ =
        writeln!(s, "{} fill=\"{fill}\" stroke=\"{stroke}\" stroke-width=\"{width}\"{dash}/>", outline(join, w, h, 0));
    // The mark's corner, inside a hexagon's slanted sides.
    let (r, t) = (w / 2 - if join { 10 } else { 0 }, h / 2);
    let (x, y, c) = (r - 10, -t + 10, format!("class=\"mark\" stroke=\"{stroke}\""));
    let _ = match deco {
        Deco::Plain => Ok(()),
        Deco::Glyph(g) => {
            writeln!(s, "<text {c} fill=\"{stroke}\" x=\"{x}\" y=\"{}\" font-weight=\"bold\">{g}</text>", y + 4)
        }
        Deco::Double => writeln!(s, "{} fill=\"none\" stroke=\"{stroke}\"/>", outline(join, w, h, 3)),
        Deco::Strike => writeln!(s, "<path {c} stroke-width=\"1.5\" d=\"M{},{strike} H{}\"/>", 6 - r, r - 6),
        Deco::Bar => writeln!(s, "<path {c} stroke-width=\"4\" d=\"M{},{} V{}\"/>", 6 - r, 4 - t, t - 4),
        Deco::Clock => writeln!(
            s,
            "<g {c} fill=\"none\"><circle cx=\"{x}\" cy=\"{y}\" r=\"5\"/><path d=\"M{x},{} V{y} H{}\"/></g>",
            y - 3,
            x + 3
        ),
    };
}

/// Marks the links that close a cycle, by a depth-first search from each root in turn
/// (transitions followed first), and returns the nodes in reverse post-order: a
/// topological order of the links that are not back edges.
fn find_back_edges(roots: &[usize], links: &mut [Link], count: usize) -> Vec<usize> {
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); count];
    for (i, l) in links.iter().enumerate() {
        out[l.from].push(i);
    }
    for edges in &mut out {
        edges.sort_by_key(|&i| links[i].line != Line::Transition);
    }
    // 0: not reached yet; 1: on the current path; 2: done.
    let mut seen = vec![0u8; count];
    let mut post = Vec::with_capacity(count);
    for &root in roots {
        if seen[root] != 0 {
            continue;
        }
        seen[root] = 1;
        let mut path = vec![(root, 0usize)];
        while let Some(top) = path.last_mut() {
            let (v, next) = *top;
            if let Some(&e) = out[v].get(next) {
                top.1 += 1;
                let to = links[e].to;
                match seen[to] {
                    0 => {
                        seen[to] = 1;
                        path.push((to, 0));
                    }
                    1 => links[e].back = true,
                    _ => {}
                }
            } else {
                seen[v] = 2;
                post.push(v);
                path.pop();
            }
        }
    }
    post.reverse();
    post
}

/// The mean of the `x` of `nodes`, if any.
fn mean(nodes: &[usize], x: &[i64]) -> Option<i64> {
    let count = i64::try_from(nodes.len()).ok().filter(|&c| c > 0)?;
    Some(nodes.iter().map(|&v| x[v]).sum::<i64>() / count)
}

/// Lays `row` out left to right, centred on 0.
fn place(row: &[usize], w: &[i64], cx: &mut [i64]) {
    let total: i64 = row.iter().map(|&v| w[v] + NODE_GAP).sum::<i64>() - NODE_GAP;
    let mut x = -total / 2;
    for &v in row {
        cx[v] = x + w[v] / 2;
        x += w[v] + NODE_GAP;
    }
}

/// The SVG picture of `d`: see the module's documentation.
pub(super) fn render(d: &Diagram) -> String {
    let drawing = draw(d, "", 0);
    // The legend, right of everything drawn.
    let lx = if drawing.count == 0 { MARGIN } else { drawing.right + 30 };
    let (legend, lw, lh) = legend(d, &drawing.lines, lx);
    let width = lx + lw + MARGIN;
    let height = (drawing.bottom + MARGIN).max(lh + 2 * MARGIN);
    let name = xml(&d.name);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"agent-diagram\" viewBox=\"0 0 {width} {height}\" \
         width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"workflow {name}\" \
         font-family=\"ui-monospace, monospace\" font-size=\"12\">\n<title>workflow {name}</title>\n<defs>\n"
    );
    // The child runs' arrowhead only where a child is drawn, so that a picture without one
    // stays as it was.
    let runs = drawing.lines.contains(&Line::Runs).then_some(Line::Runs);
    for line in [Line::Transition, Line::OnError, Line::Dependency].into_iter().chain(runs) {
        let (class, colour, _) = line.style();
        let _ = writeln!(
            s,
            "<marker id=\"agent-arrow-{class}\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"6\" \
             markerHeight=\"6\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"{colour}\"/></marker>"
        );
    }
    s.push_str("</defs>\n");
    s.push_str(&drawing.svg);
    s.push_str(&legend);
    s.push_str("</svg>\n");
    s
}

/// A picture drawn without its legend and `<defs>`: the whole picture's, or a child run's
/// (to be framed in its parent's).
struct Drawing {
    /// Its edges, its states, then its children's frames.
    svg: String,
    /// The right edge of all that is drawn, its children's frames included (no margin).
    right: i64,
    /// The bottom edge of all that is drawn, its children's frames included (no margin).
    bottom: i64,
    /// How many nodes it has (not counting its children's).
    count: usize,
    /// The kinds of edges drawn in it or in its children, for the legend.
    lines: Vec<Line>,
}

/// The drawing of `d`, `depth` levels of child runs below the top, with `prefix` before
/// every id; its children's pictures framed right of it (see the module's documentation).
fn draw(d: &Diagram, prefix: &str, depth: usize) -> Drawing {
    let (nodes, index) = d.nodes();
    let n = nodes.len();
    let start = d.start.as_ref().map(|_| n);
    let finals = d.finals();
    let stop = (!finals.is_empty()).then_some(n + usize::from(start.is_some()));
    let count = n + usize::from(start.is_some()) + usize::from(stop.is_some());
    let at = |name: &str| index.get(name).copied();

    let mut links = Vec::with_capacity(d.edges.len() + finals.len() + 1);
    let mut link = |from: Option<usize>, to: Option<usize>, line| {
        if let (Some(from), Some(to)) = (from, to) {
            links.push(Link { from, to, line, back: false });
        }
    };
    link(start, d.start.as_deref().and_then(at), Line::Transition);
    for e in &d.edges {
        let line = match e.kind {
            EdgeKind::Transition => Line::Transition,
            EdgeKind::OnError => Line::OnError,
            EdgeKind::Dependency(_) => Line::Dependency,
        };
        link(at(&e.from), at(&e.to), line);
    }
    for st in &finals {
        link(at(&st.name), stop, Line::Transition);
    }

    // Sizes: boxes fit their label; the start and the end are circles.
    let mut labels = Vec::with_capacity(n);
    let (mut w, mut h) = (vec![20; count], vec![20; count]);
    for (i, node) in nodes.iter().enumerate() {
        let (lines, name_lines) = label(node);
        let cols = lines.iter().map(|l| l.chars().map(units).sum::<usize>()).max().unwrap_or(0);
        let join = node.state.is_some_and(|st| st.join);
        w[i] = i64::try_from(cols).unwrap_or(0) * CHAR_W + 48 + if join { 20 } else { 0 };
        h[i] = i64::try_from(lines.len()).unwrap_or(0) * LINE_H + 14;
        labels.push((lines, name_lines));
    }
    if let Some(stop) = stop {
        (w[stop], h[stop]) = (28, 28);
    }

    // Layers: the longest path over the links that are not back edges.
    let roots: Vec<usize> = start.into_iter().chain(0..n).chain(stop).collect();
    let topo = find_back_edges(&roots, &mut links, count);
    let (mut preds, mut succs) = (vec![Vec::new(); count], vec![Vec::new(); count]);
    for l in links.iter().filter(|l| !l.back && l.from != l.to) {
        preds[l.to].push(l.from);
        succs[l.from].push(l.to);
    }
    let mut layer: Vec<usize> = (0..count).map(|v| usize::from(start.is_some_and(|s| s != v))).collect();
    for &v in &topo {
        for &to in &succs[v] {
            layer[to] = layer[to].max(layer[v] + 1);
        }
    }
    let mut rows: Vec<Vec<usize>> = vec![Vec::new(); layer.iter().max().map_or(0, |&m| m + 1)];
    for &v in &roots {
        rows[layer[v]].push(v);
    }

    // Order within layers: barycenter sweeps, down then up then down.
    let mut cx = vec![0i64; count];
    for row in &rows {
        place(row, &w, &mut cx);
    }
    for sweep in 0..SWEEPS {
        let (near, order): (&[Vec<usize>], Vec<usize>) = if sweep % 2 == 0 {
            (&preds, (1..rows.len()).collect())
        } else {
            (&succs, (0..rows.len().saturating_sub(1)).rev().collect())
        };
        for l in order {
            let mut keyed: Vec<(i64, usize)> =
                rows[l].iter().map(|&v| (mean(&near[v], &cx).unwrap_or(cx[v]), v)).collect();
            keyed.sort_by_key(|&(key, _)| key);
            rows[l] = keyed.into_iter().map(|(_, v)| v).collect();
            place(&rows[l], &w, &mut cx);
        }
    }
    // Positions: each node under the mean of its parents, as near as its row allows (the
    // mean of two placements without overlap, one pushed right, one pushed left).
    for row in rows.iter().skip(1) {
        let want: Vec<i64> = row.iter().map(|&v| mean(&preds[v], &cx).unwrap_or(cx[v])).collect();
        let apart = |i: usize| (w[row[i]] + w[row[i + 1]]) / 2 + NODE_GAP;
        let (mut pushed_right, mut pushed_left) = (want.clone(), want);
        for i in 1..row.len() {
            pushed_right[i] = pushed_right[i].max(pushed_right[i - 1] + apart(i - 1));
        }
        for i in (0..row.len().saturating_sub(1)).rev() {
            pushed_left[i] = pushed_left[i].min(pushed_left[i + 1] - apart(i));
        }
        for (i, &v) in row.iter().enumerate() {
            cx[v] = (pushed_right[i] + pushed_left[i]) / 2;
        }
    }
    let shift = MARGIN - (0..count).map(|v| cx[v] - w[v] / 2).min().unwrap_or(0);
    let mut cy = vec![0i64; count];
    // Each layer's top, bottom and right edge.
    let mut bands = vec![(0i64, 0i64, 0i64); rows.len()];
    let mut top = MARGIN;
    for (l, row) in rows.iter().enumerate() {
        let tallest = row.iter().map(|&v| h[v]).max().unwrap_or(0);
        for &v in row {
            cx[v] += shift;
            cy[v] = top + tallest / 2;
            bands[l].2 = bands[l].2.max(cx[v] + w[v] / 2);
        }
        (bands[l].0, bands[l].1) = (top, top + tallest);
        top += tallest + LAYER_GAP;
    }

    // Edges, drawn first so that nodes cover their ends.
    let ids: Vec<String> = nodes
        .iter()
        .map(|node| node.id.as_str())
        .chain(start.map(|_| "start"))
        .chain(["stop"])
        .map(|id| format!("{prefix}{id}"))
        .collect();
    let mut reach = bands.iter().map(|b| b.2).max().unwrap_or(0);
    let mut edges = String::from("<g class=\"edges\" fill=\"none\" stroke-width=\"1.5\">\n");
    for l in &links {
        let (u, v) = (l.from, l.to);
        let (x1, y1, x2, y2) = (cx[u], cy[u] + h[u] / 2, cx[v], cy[v] - h[v] / 2);
        let path = if !l.back {
            let ym = (y1 + y2) / 2;
            format!("M{x1},{y1} C{x1},{ym} {x2},{ym} {x2},{y2}")
        } else if u == v {
            // Out of the right side and back in, within the gap to a neighbour.
            let (x, y) = (cx[u] + w[u] / 2, cy[u]);
            reach = reach.max(x + 24);
            format!("M{x},{} C{},{} {},{} {x},{}", y + 6, x + 24, y + 20, x + 24, y - 20, y - 6)
        } else {
            // Down out of `u`, up the right of the layers between, down into `v`: the turns
            // lie in the gaps between layers, so the edge crosses no box.
            let (lo, hi) = (layer[u].min(layer[v]), layer[u].max(layer[v]));
            let side = bands[lo..=hi].iter().map(|b| b.2).max().unwrap_or(0) + BULGE;
            reach = reach.max(side);
            let (below, above) = (bands[layer[u]].1 + LAYER_GAP / 2, bands[layer[v]].0 - LAYER_GAP / 2);
            let mid = (below + above) / 2;
            format!("M{x1},{y1} C{x1},{below} {side},{below} {side},{mid} C{side},{above} {x2},{above} {x2},{y2}")
        };
        let (class, colour, dash) = l.line.style();
        let back = if l.back { " back" } else { "" };
        let _ = writeln!(
            edges,
            "<path class=\"edge {class}{back}\" data-from=\"{}\" data-to=\"{}\" d=\"{path}\" stroke=\"{colour}\"{dash} \
             marker-end=\"url(#agent-arrow-{class})\"/>",
            ids[u], ids[v]
        );
    }
    let mut kinds: Vec<Line> = Vec::new();
    for l in &links {
        if !kinds.contains(&l.line) {
            kinds.push(l.line);
        }
    }
    let placement = Placement { cx: &cx, cy: &cy, w: &w, h: &h, layer: &layer, bands: &bands };
    let (frames, right, frames_bottom) = children(d, &ids, depth, &placement, reach, &mut edges, &mut kinds);
    let bottom = (top - LAYER_GAP).max(frames_bottom);
    edges.push_str("</g>\n");

    // Nodes.
    let mut body = String::from("<g class=\"states\" text-anchor=\"middle\">\n");
    if let Some(s) = start {
        let _ = writeln!(
            body,
            "<g class=\"start\" id=\"{}\" transform=\"translate({},{})\"><title>start</title>\
             <circle r=\"10\" fill=\"#212529\"/></g>",
            ids[s], cx[s], cy[s]
        );
    }
    if let Some(s) = stop {
        let _ = writeln!(
            body,
            "<g class=\"end\" id=\"{}\" transform=\"translate({},{})\" fill=\"#ffffff\" stroke=\"#212529\" \
             stroke-width=\"1.5\"><title>end</title><circle r=\"14\"/><circle r=\"10\"/></g>",
            ids[s], cx[s], cy[s]
        );
    }
    for (i, (node, (lines, name_lines))) in nodes.iter().zip(&labels).enumerate() {
        let name = node.lines.first().map_or("", String::as_str);
        let status = node.state.and_then(|st| st.status);
        let join = node.state.is_some_and(|st| st.join);
        let mut class = String::from("state");
        let mut title = name.to_owned();
        if let Some(st) = status {
            let _ = write!(class, " status-{}", class_of(st));
            let _ = write!(title, "\n{st}");
        }
        if join {
            class.push_str(" join");
        }
        if node.state.is_none() {
            class.push_str(" missing");
            title.push_str("\nno state has this name");
        }
        for note in node.lines.iter().skip(1) {
            let _ = write!(title, "\n{note}");
        }
        let data_status = status.map(|st| format!(" data-status=\"{st}\"")).unwrap_or_default();
        let _ = writeln!(
            body,
            "<g class=\"{class}\" data-state=\"{}\"{data_status} id=\"{}\" transform=\"translate({},{})\">\n<title>{}</title>",
            xml(name),
            ids[i],
            cx[i],
            cy[i],
            xml(&title)
        );
        let first = -h[i] / 2 + 20;
        shape(&mut body, join, status, (w[i], h[i]), first - 4);
        for (k, line) in lines.iter().enumerate() {
            let italic = if k >= *name_lines { " class=\"note\" font-style=\"italic\"" } else { "" };
            let y = first + LINE_H * i64::try_from(k).unwrap_or(0);
            let _ = writeln!(body, "<text{italic} x=\"0\" y=\"{y}\">{}</text>", xml(line));
        }
        body.push_str("</g>\n");
    }
    body.push_str("</g>\n");

    let mut svg = edges;
    svg.push_str(&body);
    svg.push_str(&frames);
    Drawing { svg, right, bottom, count, lines: kinds }
}

/// Where the nodes of a drawing lie (indexed as its layout's nodes): centres, sizes, layers,
/// and each layer's top, bottom and right edge.
struct Placement<'a> {
    cx: &'a [i64],
    cy: &'a [i64],
    w: &'a [i64],
    h: &'a [i64],
    layer: &'a [usize],
    bands: &'a [(i64, i64, i64)],
}

/// The frames of the children of `d` (`depth` levels below the top, its nodes' ids `ids`
/// and positions `at`), in a column right of `right`, where its drawing ends: each child
/// drawn by [`draw`] under a heading, reached by a `runs` path added to `edges` (the kinds of
/// edges drawn added to `lines`). Returns the frames, the right edge of all, and the bottom
/// edge of the frames (`i64::MIN` without any).
fn children(
    d: &Diagram,
    ids: &[String],
    depth: usize,
    at: &Placement<'_>,
    right: i64,
    edges: &mut String,
    lines: &mut Vec<Line>,
) -> (String, i64, i64) {
    let Placement { cx, cy, w, h, layer, bands } = *at;
    let (mut frames, mut far, mut low) = (String::new(), right, i64::MIN);
    let fx = right + CHILD_GAP;
    let mut free = MARGIN;
    for (k, (i, parent, child)) in d.expanded(depth).into_iter().enumerate() {
        let id = &ids[i];
        let inner = draw(child, &format!("{id}_"), depth + 1);
        for line in inner.lines.iter().copied().chain([Line::Runs]) {
            if !lines.contains(&line) {
                lines.push(line);
            }
        }
        let heading = format!("child run: {}", clip(&visible(&child.name).replace('\n', " "), false));
        let heading_w = i64::try_from(heading.chars().map(units).sum::<usize>()).unwrap_or(0) * CHAR_W + 20;
        let fw = (inner.right + MARGIN).max(heading_w);
        let fh = HEADING_H + (inner.bottom + MARGIN).max(MARGIN);
        // Level with its state where the frames above leave room.
        let fy = free.max(cy[i] - h[i] / 2);
        free = fy + fh + CHILD_GAP / 2;
        (far, low) = (far.max(fx + fw), low.max(fy + fh));

        // Out of the state's right side; when a node of its layer lies right of it, first
        // down into the gap below the layer; then right, and along a lane of its own (one of
        // four, in the gap and beside the frames) to the frame's heading.
        let (x, y) = (cx[i] + w[i] / 2, cy[i]);
        let offset = 4 * i64::try_from(k % 4).unwrap_or(0);
        let (lane, ty) = (fx - 12 - offset, fy + HEADING_H / 2);
        let path = if bands[layer[i]].2 > x {
            format!("M{x},{y} H{} V{} H{lane} V{ty} H{fx}", x + 10, bands[layer[i]].1 + LAYER_GAP / 4 + offset)
        } else {
            format!("M{x},{y} H{lane} V{ty} H{fx}")
        };
        let (class, colour, dash) = Line::Runs.style();
        let _ = writeln!(
            edges,
            "<path class=\"edge {class}\" data-from=\"{id}\" data-to=\"{id}_child\" d=\"{path}\" \
             stroke=\"{colour}\"{dash} marker-end=\"url(#agent-arrow-{class})\"/>"
        );

        let name = xml(&child.name);
        let empty = if inner.count == 0 {
            format!("<text class=\"note\" x=\"10\" y=\"{}\" font-style=\"italic\">no state</text>\n", HEADING_H + 14)
        } else {
            String::new()
        };
        let _ = write!(
            frames,
            "<g class=\"child\" data-state=\"{}\" data-child=\"{name}\" id=\"{id}_child\" \
             transform=\"translate({fx},{fy})\">\n<title>child run: {name}</title>\n\
             <rect class=\"frame\" width=\"{fw}\" height=\"{fh}\" rx=\"6\" fill=\"#f8f9fa\" stroke=\"#adb5bd\"/>\n\
             <text class=\"heading\" x=\"10\" y=\"{}\" font-weight=\"bold\">{}</text>\n{empty}\
             <g transform=\"translate(0,{HEADING_H})\">\n{}</g>\n</g>\n",
            xml(&parent.name),
            HEADING_H / 2 + 4,
            xml(&heading),
            inner.svg
        );
    }
    (frames, far, low)
}

/// The legend at `x`: a sample and a name for every shape, status, mark and edge style
/// drawn. Returns it with its width and height.
fn legend(d: &Diagram, lines: &[Line], x: i64) -> (String, i64, i64) {
    enum Sample {
        Node(bool, Option<StateStatus>),
        Edge(Line),
        Note,
    }
    let mut entries = vec![("state".to_owned(), Sample::Node(false, None), "state".to_owned())];
    if d.any_join() {
        entries.push(("join".into(), Sample::Node(true, None), "join: waits for every branch".into()));
    }
    for st in d.used_statuses() {
        entries.push((format!("status-{}", class_of(st)), Sample::Node(false, Some(st)), st.as_str().into()));
    }
    for mark in d.used_marks() {
        entries.push((mark.class().into(), Sample::Note, format!("second line: {}", mark.legend())));
    }
    for (line, text) in [(Line::OnError, "on_error"), (Line::Dependency, "depends on"), (Line::Runs, "runs a child")] {
        if lines.contains(&line) {
            entries.push((line.style().0.into(), Sample::Edge(line), text.into()));
        }
    }
    let cols = entries.iter().map(|e| e.2.chars().count()).max().unwrap_or(0);
    let (lw, lh) =
        (i64::try_from(cols).unwrap_or(0) * CHAR_W + 80, 36 + 28 * i64::try_from(entries.len()).unwrap_or(0));
    let mut s = format!(
        "<g class=\"legend\" transform=\"translate({x},{MARGIN})\">\n<rect width=\"{lw}\" height=\"{lh}\" rx=\"4\" \
         fill=\"#ffffff\" stroke=\"#ced4da\"/>\n<text x=\"10\" y=\"20\" font-weight=\"bold\">legend</text>\n"
    );
    for (i, (class, sample, text)) in entries.iter().enumerate() {
        let y = 32 + 28 * i64::try_from(i).unwrap_or(0);
        let _ = writeln!(
            s,
            "<g class=\"legend-entry {class}\" transform=\"translate(10,{y})\">\n<g transform=\"translate(22,11)\" text-anchor=\"middle\">"
        );
        match *sample {
            Sample::Node(join, status) => shape(&mut s, join, status, (44, 22), 0),
            Sample::Edge(line) => {
                let (class, colour, dash) = line.style();
                let arrow = format!("marker-end=\"url(#agent-arrow-{class})\"");
                let _ = writeln!(s, "<path d=\"M-20,0 H20\" stroke=\"{colour}\" stroke-width=\"1.5\"{dash} {arrow}/>");
            }
            Sample::Note => s.push_str("<text x=\"0\" y=\"4\" font-style=\"italic\">note</text>\n"),
        }
        let _ = writeln!(s, "</g>\n<text x=\"52\" y=\"15\">{}</text>\n</g>", xml(text));
    }
    s.push_str("</g>\n");
    (s, lw, lh)
}
