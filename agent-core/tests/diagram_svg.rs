//! `Diagram::to_svg`: the layout read back from the output (each node's `translate(x,y)`),
//! statuses told apart by more than colour, escaping, and pictures that must not break it
//! (cycles, unknown states, a thousand states, hostile names, random graphs).

use agent_core::{DependencyType, Diagram, EdgeKind, StateStatus};
use proptest::prelude::*;

/// A picture of `states` (the first is the start) with these transitions.
fn graph(states: &[&str], transitions: &[(&str, &str)]) -> Diagram {
    let mut d = Diagram::new("w", states.first().map(|s| (*s).to_owned()));
    for s in states {
        d.add_state(*s, false);
    }
    for (from, to) in transitions {
        d.add_edge(*from, *to, EdgeKind::Transition);
    }
    d
}

/// The centre of the node with this id, from its `transform="translate(x,y)"`.
fn pos(svg: &str, id: &str) -> (i64, i64) {
    let key = format!(" id=\"{id}\" transform=\"translate(");
    let at = svg.find(&key).unwrap_or_else(|| panic!("no node {id} in {svg}")) + key.len();
    let (x, rest) = svg[at..].split_once(',').unwrap();
    let y = &rest[..rest.find(')').unwrap()];
    (x.parse().unwrap(), y.parse().unwrap())
}

/// The markup of the node with this id (its `<g>` element).
fn node<'a>(svg: &'a str, id: &str) -> &'a str {
    let at = svg.find(&format!(" id=\"{id}\" ")).unwrap_or_else(|| panic!("no node {id}"));
    let begin = svg[..at].rfind("<g ").unwrap();
    &svg[begin..begin + svg[begin..].find("\n</g>\n").unwrap()]
}

/// Checks that `svg` is well-formed enough to be parsed: balanced tags, quoted attributes
/// with no markup inside, no `&` but a known reference, no control character but newlines.
fn well_formed(svg: &str) {
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\" ") && svg.ends_with("</svg>\n"));
    assert!(svg.chars().all(|c| c == '\n' || !c.is_control()), "a control character: {svg:?}");
    let mut open: Vec<&str> = Vec::new();
    let mut rest = svg;
    while let Some(lt) = rest.find('<') {
        let text = &rest[..lt];
        for (i, _) in text.match_indices('&') {
            let t = &text[i..];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;", "&#10;"].iter().any(|e| t.starts_with(e)),
                "a bare & in {text:?}"
            );
        }
        assert!(!text.contains('>'), "a bare > in {text:?}");
        let gt = rest[lt..].find('>').expect("an unclosed tag") + lt;
        let tag = &rest[lt + 1..gt];
        assert_eq!(tag.matches('"').count() % 2, 0, "unbalanced quotes in <{tag}>");
        assert!(!tag.contains('<') && !tag.contains('\''), "markup in <{tag}>");
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(open.pop(), Some(name), "</{name}> closes another element");
        } else if !tag.ends_with('/') {
            open.push(tag.split([' ', '\n']).next().unwrap());
        }
        rest = &rest[gt + 1..];
    }
    assert!(open.is_empty() && rest.trim().is_empty(), "unclosed: {open:?}");
}

#[test]
fn a_chain_is_three_layers_top_to_bottom() {
    let svg = graph(&["a", "b", "c"], &[("a", "b"), ("b", "c")]).to_svg();
    well_formed(&svg);
    let [start, a, b, c, stop] = ["start", "s0", "s1", "s2", "stop"].map(|id| pos(&svg, id));
    assert!(start.1 < a.1 && a.1 < b.1 && b.1 < c.1 && c.1 < stop.1, "{svg}");
    assert!(a.0 == b.0 && b.0 == c.0, "a chain is one column: {svg}");
    assert_eq!(svg.matches(" data-state=").count(), 3);
    assert!(svg.contains("<path class=\"edge transition\" data-from=\"s0\" data-to=\"s1\" d=\"M"), "{svg}");
    assert!(!svg.contains(" back\""), "a chain has no back edge: {svg}");
    // The end is a double circle, reached from `c` only; the start a filled circle.
    assert_eq!(node(&svg, "stop").matches("<circle").count(), 2);
    assert!(svg.contains("data-from=\"s2\" data-to=\"stop\"") && !svg.contains("data-from=\"s1\" data-to=\"stop\""));
    assert!(node(&svg, "start").contains("<circle r=\"10\" fill=\"#212529\"/>"));
}

#[test]
fn siblings_of_a_fan_out_share_a_layer() {
    let svg = graph(&["a", "b", "c", "d", "e"], &[("a", "b"), ("a", "c"), ("a", "d"), ("b", "e")]).to_svg();
    let [a, b, c, d, e] = ["s0", "s1", "s2", "s3", "s4"].map(|id| pos(&svg, id));
    assert!(b.1 == c.1 && c.1 == d.1 && a.1 < b.1 && b.1 < e.1, "{svg}");
    assert!(b.0 < c.0 && c.0 < d.0, "siblings side by side, in definition order: {svg}");
    // Barycenter: `e` sits under its only parent `b`, `a` above the middle sibling.
    assert_eq!(e.0, b.0, "{svg}");
    assert_eq!(a.0, c.0, "{svg}");
}

#[test]
fn a_cycle_ends_and_draws_its_back_edges_around_the_side() {
    let mut d = graph(&["a", "b", "c"], &[("a", "b"), ("b", "c"), ("c", "a"), ("b", "b")]);
    d.add_edge("c", "a", EdgeKind::OnError);
    let svg = d.to_svg();
    well_formed(&svg);
    let [a, b, c] = ["s0", "s1", "s2"].map(|id| pos(&svg, id));
    assert!(a.1 < b.1 && b.1 < c.1, "the back edge does not lift `a`: {svg}");
    assert!(svg.contains("<path class=\"edge transition back\" data-from=\"s2\" data-to=\"s0\""), "{svg}");
    assert!(svg.contains("<path class=\"edge transition back\" data-from=\"s1\" data-to=\"s1\""), "self loop: {svg}");
    assert!(svg.contains("<path class=\"edge on-error back\" data-from=\"s2\" data-to=\"s0\""), "{svg}");
    // Around the side: the curve reaches right of every box it passes (boxes are 55 wide).
    let key = "data-from=\"s2\" data-to=\"s0\" d=\"";
    let back = &svg[svg.find(key).unwrap() + key.len()..];
    let back = &back[..back.find('"').unwrap()];
    let xs = back.split([' ', 'M', 'C']).filter_map(|p| p.split_once(',')).map(|(x, _)| x.parse::<i64>().unwrap());
    assert!(xs.max().unwrap() > a.0.max(b.0).max(c.0) + 27 + 20, "{back}");
    // No state ends: every one has a transition, so no end node.
    assert!(!svg.contains("id=\"stop\""), "{svg}");
}

#[test]
fn every_status_has_its_class_its_data_and_its_own_shape_and_legend_entry() {
    let names: Vec<String> = (0..StateStatus::ALL.len()).map(|i| format!("st{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let d = graph(&refs, &[]).with_statuses(names.iter().cloned().zip(StateStatus::ALL.iter().copied()));
    let svg = d.to_svg();
    well_formed(&svg);
    let mut shapes = Vec::new();
    for (i, status) in StateStatus::ALL.iter().enumerate() {
        let lower = status.as_str().to_lowercase();
        let g = node(&svg, &format!("s{i}"));
        let head =
            format!("<g class=\"state status-{lower}\" data-state=\"st{i}\" data-status=\"{status}\" id=\"s{i}\"");
        assert!(g.starts_with(&head), "{g}");
        assert!(g.contains(&format!("<title>st{i}&#10;{status}</title>")), "{g}");
        assert!(svg.contains(&format!("<g class=\"legend-entry status-{lower}\"")), "{svg}");
        assert!(svg.contains(&format!(">{status}</text>")), "legend names {status}: {svg}");
        // The shape without its colours: what a reader who cannot tell colours sees.
        let shape = &g[g.find("</title>").unwrap()..g.find("<text x=\"0\"").unwrap()];
        let mut plain = String::new();
        for (k, part) in shape.split('#').enumerate() {
            plain.push_str(if k == 0 { part } else { part.get(6..).unwrap_or(part) });
        }
        shapes.push((status, plain));
    }
    for (i, (a, sa)) in shapes.iter().enumerate() {
        for (b, sb) in &shapes[i + 1..] {
            assert_ne!(sa, sb, "{a} and {b} differ only by colour");
        }
    }
    assert!(node(&svg, "s4").contains("stroke-width=\"3.5\"") && node(&svg, "s4").contains('\u{2715}'), "Failed");
    assert!(node(&svg, "s3").contains('\u{2713}'), "Completed");
    // A picture without statuses has neither status classes nor status legend entries.
    let plain = graph(&["a"], &[]).to_svg();
    assert!(!plain.contains("status-") && !plain.contains("data-status"), "{plain}");
}

#[test]
fn joins_retries_requests_and_edge_kinds_are_drawn_and_named() {
    let mut d = graph(&["a", "b", "merge"], &[("a", "b"), ("b", "merge")]);
    d.states[2].join = true;
    d.add_edge("a", "merge", EdgeKind::OnError);
    d.add_edge("a", "b", EdgeKind::Dependency(DependencyType::Required));
    let svg = d.with_retries([("b", 2)]).with_inputs([("a", false)]).to_svg();
    well_formed(&svg);
    assert!(node(&svg, "s2").starts_with("<g class=\"state join\"") && node(&svg, "s2").contains("<polygon"), "{svg}");
    assert!(node(&svg, "s1").contains(">retried 2 times</text>"), "{svg}");
    assert!(node(&svg, "s0").contains(">waiting for a person</text>"), "{svg}");
    assert!(svg.contains("class=\"edge on-error\" data-from=\"s0\" data-to=\"s2\""), "{svg}");
    assert!(svg.contains("class=\"edge dependency\" data-from=\"s0\" data-to=\"s1\""), "{svg}");
    let on_error = &svg[svg.find("class=\"edge on-error\"").unwrap()..];
    assert!(on_error[..on_error.find('\n').unwrap()].contains("stroke=\"#dc3545\" stroke-dasharray"));
    for entry in ["join", "asked", "retried", "on-error", "dependency"] {
        assert!(svg.contains(&format!("<g class=\"legend-entry {entry}\"")), "legend lacks {entry}: {svg}");
    }
}

#[test]
fn names_are_escaped_everywhere_and_long_labels_are_cut() {
    let script = "<script>alert(1)</script>";
    let odd = "a&b \"q\" 'x'\u{1b}[31m\0\u{202e}\u{ffff}";
    let long = "word ".repeat(100);
    let mut d = graph(&[script, odd, &long, "two\nlines"], &[(script, odd), (odd, &long)]);
    d.name = script.to_owned();
    let svg = d.to_svg();
    well_formed(&svg);
    assert!(!svg.contains("<script") && !svg.contains("</script"), "{svg}");
    assert!(svg.contains("aria-label=\"workflow &lt;script&gt;alert(1)&lt;/script&gt;\""), "{svg}");
    assert!(svg.contains("data-state=\"&lt;script&gt;alert(1)&lt;/script&gt;\" id=\"s0\""), "{svg}");
    assert!(
        svg.contains("data-state=\"a&amp;b &quot;q&quot; &apos;x&apos;\\x1b[31m\\x00\\u{202e}\\u{ffff}\" id=\"s1\""),
        "{svg}"
    );
    // The long name: whole in its title and data, cut with an ellipsis where drawn.
    let g = node(&svg, "s2");
    assert!(g.contains(&format!("<title>{long}</title>")) && g.contains(&format!("data-state=\"{long}\"")));
    let drawn = &g[g.find("<text x=\"0\"").unwrap()..];
    let drawn = &drawn[drawn.find('>').unwrap() + 1..drawn.find("</text>").unwrap()];
    assert!(drawn.ends_with('\u{2026}') && drawn.chars().count() <= 32 && long.starts_with(&drawn[..20]), "{drawn}");
    // A newline breaks the label and is a reference in attributes.
    let g = node(&svg, "s3");
    assert!(g.contains("data-state=\"two&#10;lines\"") && g.contains(">two</text>") && g.contains(">lines</text>"));
}

#[test]
fn an_edge_to_a_state_that_does_not_exist_gets_a_node() {
    let mut d = graph(&["a"], &[("a", "ghost")]);
    d.add_edge("phantom", "a", EdgeKind::OnError);
    d.start = Some("nowhere".into());
    let svg = d.to_svg();
    well_formed(&svg);
    for (id, name) in [("s1", "nowhere"), ("s2", "ghost"), ("s3", "phantom")] {
        assert!(node(&svg, id).starts_with(&format!("<g class=\"state missing\" data-state=\"{name}\" id=\"{id}\"")));
    }
    assert!(svg.contains("data-from=\"start\" data-to=\"s1\""), "{svg}");
}

#[test]
fn an_empty_picture_is_a_legend() {
    let svg = Diagram::new("", None).to_svg();
    well_formed(&svg);
    assert!(!svg.contains("data-state") && !svg.contains("id=\"start\""), "{svg}");
    assert!(svg.contains("<g class=\"legend-entry state\""), "{svg}");
}

#[test]
fn a_thousand_states_render() {
    let names: Vec<String> = (0..1000).map(|i| format!("state {i}")).collect();
    let mut d = Diagram::new("big", Some(names[0].clone()));
    for n in &names {
        d.add_state(n.clone(), false);
    }
    for (i, pair) in names.windows(2).enumerate() {
        d.add_edge(pair[0].clone(), pair[1].clone(), EdgeKind::Transition);
        if i % 10 == 9 {
            d.add_edge(pair[1].clone(), names[i - 9].clone(), EdgeKind::Transition);
        }
        d.add_edge(names[i].clone(), names[(i * 7) % 1000].clone(), EdgeKind::OnError);
    }
    let svg = d.to_svg();
    well_formed(&svg);
    assert_eq!(svg.matches(" data-state=").count(), 1000);
    assert!(pos(&svg, "s998").1 < pos(&svg, "s999").1, "the chain is 1,000 layers deep");
    // And a thousand siblings: one layer.
    let mut fan = Diagram::new("fan", Some("root".into()));
    fan.add_state("root", false);
    for n in &names {
        fan.add_state(n.clone(), false);
        fan.add_edge("root", n.clone(), EdgeKind::Transition);
    }
    let svg = fan.to_svg();
    assert!((1..=1000).all(|i| pos(&svg, &format!("s{i}")).1 == pos(&svg, "s1").1));
}

#[test]
fn the_output_is_deterministic() {
    let mut d = graph(&["a", "b", "c", "d"], &[("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"), ("d", "a")]);
    d.add_edge("b", "x", EdgeKind::OnError);
    let d = d.with_statuses([("a", StateStatus::Completed), ("d", StateStatus::Running)]);
    let first = d.to_svg();
    assert_eq!(first, d.to_svg());
    assert_eq!(first, d.clone().to_svg());
}

proptest! {
    /// Any graph over a few names (unknown ones, self loops, duplicates, every kind and
    /// status) draws a well-formed picture, the same each time, with every state drawn.
    #[test]
    fn any_graph_draws(
        states in prop::collection::vec(0usize..8, 0..8),
        edges in prop::collection::vec((0usize..10, 0usize..10, 0u8..3), 0..20),
        statuses in prop::collection::vec((0usize..10, 0usize..9), 0..8),
        start in prop::option::of(0usize..10),
    ) {
        let pool = ["a", "b", "<c>", "d&e", "\"f\"", "g\nh", "\u{1b}", "", "x", "y"];
        let mut d = Diagram::new("p", start.map(|s| pool[s].to_owned()));
        for &s in &states {
            d.add_state(pool[s], s % 3 == 0).join = s % 4 == 1;
        }
        for &(from, to, kind) in &edges {
            let kind = [EdgeKind::Transition, EdgeKind::OnError, EdgeKind::Dependency(DependencyType::Required)][usize::from(kind)];
            d.add_edge(pool[from], pool[to], kind);
        }
        let d = d.with_statuses(statuses.iter().map(|&(s, st)| (pool[s], StateStatus::ALL[st])));
        let svg = d.to_svg();
        well_formed(&svg);
        prop_assert_eq!(&svg, &d.to_svg());
        let mut distinct = states.clone();
        distinct.sort_unstable();
        distinct.dedup();
        prop_assert!(svg.matches(" data-state=").count() >= distinct.len());
    }
}
