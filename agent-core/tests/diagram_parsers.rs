//! The pictures `Diagram` draws, read back by Mermaid's and Graphviz's own parsers, for
//! state names chosen to break them: quotes, newlines, arrows, braces, every word the two
//! grammars reserve, markup, entities, directives, control characters, very long names.
//!
//! Each picture must parse, and every state's label must come back as written (Mermaid:
//! the node texts its parser keeps; Graphviz: the text lines `dot -Tsvg` draws).
//!
//! The tools: `dot` (Graphviz) on the `PATH`; `node` and Mermaid installed in
//! `tests/mermaid` (`npm ci --prefix tests/mermaid`). Without them each test prints
//! `skipped: ...` and passes, unless `CI=true`, where a missing tool fails the test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use agent_core::{Diagram, EdgeKind, StateStatus};

/// Names that have broken, or could break, a Mermaid or Graphviz picture.
fn hostile() -> Vec<String> {
    let mut names: Vec<String> = [
        "say \"hi\"",
        "\"",
        "two\nlines",
        "-->",
        "a --> b",
        "a -.-> b ==> c --- d",
        "}",
        "{",
        ";",
        "a; b",
        "end",
        "END",
        "call",
        "href",
        "linkStyle",
        "interpolate",
        "click",
        "style",
        "classDef",
        "class",
        "graph",
        "flowchart",
        "subgraph",
        "direction",
        "default",
        "node",
        "edge",
        "digraph",
        "strict",
        "",
        "<script>alert(1)</script>",
        "ünïcødé 名前 🚀 مرحبا",
        "back\\slash \\N \\l \\G",
        "&amp; &lt; #quot; #35; &#35;",
        "%%{init: {\"theme\": \"dark\"}}%%",
        "`markdown` **bold**",
        "[brackets] (parens) |pipes| ((circle)) {{hex}}",
        "start",
        "stop",
        "s0",
        "legend",
        "cluster_legend",
        "x:::red",
        "o--o x--x",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    names.push("very long name ".repeat(200).trim_end().to_owned());
    names
}

/// Names with characters drawn as escapes, and how each is drawn.
fn escaped() -> Vec<(String, String)> {
    vec![
        ("red\u{1b}[31m\rback".to_owned(), "red\\x1b[31m\\rback".to_owned()),
        ("tab\there\u{7f}".to_owned(), "tab\\there\\x7f".to_owned()),
        ("\u{202e}reversed".to_owned(), "\\u{202e}reversed".to_owned()),
    ]
}

/// A picture with every hostile name as a state, chained, with each kind of edge, a join,
/// statuses, retries, requests for input and an edge to a name no state has. Returns it
/// with each state's expected label.
fn everything() -> (Diagram, Vec<String>) {
    let mut names: Vec<(String, String)> = hostile().into_iter().map(|n| (n.clone(), n)).collect();
    names.extend(escaped());
    let mut d = Diagram::new("wf \"}\n{ digraph", Some(names[0].0.clone()));
    for (i, (name, _)) in names.iter().enumerate() {
        d.add_state(name.clone(), i % 5 == 4).join = i % 7 == 3;
    }
    for pair in names.windows(2) {
        d.add_edge(pair[0].0.clone(), pair[1].0.clone(), EdgeKind::Transition);
    }
    d.add_edge(names[1].0.clone(), names[10].0.clone(), EdgeKind::OnError);
    d.add_edge(names[2].0.clone(), names[11].0.clone(), EdgeKind::Dependency(agent_core::DependencyType::Required));
    d.add_edge(names[3].0.clone(), "\"no such state\" -->", EdgeKind::OnError);
    let statuses = [StateStatus::Completed, StateStatus::Running, StateStatus::Failed, StateStatus::Pending];
    let d = d
        .with_statuses(names.iter().enumerate().map(|(i, (n, _))| (n.clone(), statuses[i % statuses.len()])))
        .with_retries([(names[5].0.clone(), 3)])
        .with_inputs([(names[6].0.clone(), true), (names[7].0.clone(), false)]);
    let mut labels: Vec<String> = names.into_iter().map(|(_, shown)| shown).collect();
    labels[5].push_str("\nretried 3 times");
    labels[6].push_str("\nasked a person");
    labels[7].push_str("\nwaiting for a person");
    labels.push("\"no such state\" -->".to_owned());
    (d, labels)
}

/// Every picture tested, each with its states' expected labels (node `s{i}` has label `i`).
fn pictures() -> Vec<(String, Diagram, Vec<String>)> {
    let mut out = vec![("everything".to_owned(), everything().0, everything().1)];
    let mut alone: Vec<(String, String)> = hostile().into_iter().map(|n| (n.clone(), n)).collect();
    alone.extend(escaped());
    for (i, (name, shown)) in alone.into_iter().enumerate() {
        let mut d = Diagram::new(name.clone(), Some(name.clone()));
        d.add_state(name.clone(), false);
        d.add_edge(name.clone(), name.clone(), EdgeKind::OnError);
        out.push((format!("alone-{i}"), d.with_statuses([(name, StateStatus::Completed)]), vec![shown]));
    }
    out.push(("empty".to_owned(), Diagram::new("", None), vec![]));
    out.push(("start-only".to_owned(), Diagram::new("w", Some("nowhere".into())), vec!["nowhere".to_owned()]));
    out
}

/// Whether the test may run: `Ok(())`, or why not (a skip, or under `CI=true` a failure).
fn need(tool: &str, present: bool) -> bool {
    if present {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{tool} is missing, and CI=true needs it (see .ci/run)");
    }
    eprintln!("skipped: {tool} is not installed");
    false
}

fn scratch(what: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("diagram-parsers-{what}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn mermaid_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/mermaid")
}

#[test]
fn mermaid_parses_every_picture_and_keeps_every_label() {
    let node = Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    let installed = mermaid_dir().join("node_modules/mermaid/package.json").exists();
    if !need("node with Mermaid (npm ci --prefix tests/mermaid)", node && installed) {
        return;
    }
    let dir = scratch("mermaid");
    let pictures = pictures();
    let mut files = Vec::new();
    for (name, d, _) in &pictures {
        let file = dir.join(format!("{name}.mmd"));
        std::fs::write(&file, d.to_mermaid()).unwrap();
        files.push(file);
    }
    let out = Command::new("node").arg(mermaid_dir().join("parse.mjs")).args(&files).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), pictures.len(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for ((name, d, labels), line) in pictures.iter().zip(lines) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["ok"].as_bool().unwrap(), "{name} does not parse: {}\n{}", v["error"], d.to_mermaid());
        let got: BTreeMap<String, String> = serde_json::from_value(v["labels"].clone()).unwrap();
        for (i, label) in labels.iter().enumerate() {
            assert_eq!(got.get(&format!("s{i}")), Some(label), "{name}: s{i}\n{}", d.to_mermaid());
        }
        // Nothing was split into nodes of its own.
        for id in got.keys() {
            let ours = id == "start"
                || id == "stop"
                || id.starts_with("legend_")
                || id.strip_prefix('s').and_then(|n| n.parse::<usize>().ok()).is_some_and(|n| n < labels.len());
            assert!(ours, "{name}: unexpected node `{id}`\n{}", d.to_mermaid());
        }
    }
    assert!(out.status.success());
}

#[test]
fn graphviz_parses_every_picture_and_draws_every_label() {
    let dot = Command::new("dot").arg("-V").output().is_ok_and(|o| o.status.success());
    if !need("Graphviz `dot`", dot) {
        return;
    }
    let dir = scratch("dot");
    for (name, d, labels) in pictures() {
        let file = dir.join(format!("{name}.dot"));
        std::fs::write(&file, d.to_dot()).unwrap();
        let out = Command::new("dot").arg("-Tsvg").arg(&file).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && stderr.trim().is_empty(), "{name}: {stderr}\n{}", d.to_dot());
        let nodes = svg_nodes(&String::from_utf8(out.stdout).unwrap());
        for (i, label) in labels.iter().enumerate() {
            let want: Vec<&str> = label.split('\n').filter(|l| !l.is_empty()).collect();
            let got: Vec<&str> = nodes.get(&format!("s{i}")).map_or(vec![], |l| l.iter().map(String::as_str).collect());
            assert_eq!(got, want, "{name}: s{i}\n{}", d.to_dot());
        }
        let states = nodes.keys().filter(|id| id.starts_with('s') && id.as_str() != "stop" && id.as_str() != "start");
        assert_eq!(states.count(), labels.len(), "{name}: {:?}", nodes.keys());
    }
}

/// The text lines of each node of an SVG drawn by Graphviz, by node name (its `<title>`).
fn svg_nodes(svg: &str) -> BTreeMap<String, Vec<String>> {
    let mut nodes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    let texts = |part: &str| -> Vec<String> {
        let part = part.split("</g>").next().unwrap();
        (part.split("<text").skip(1))
            .map(|t| xml_text(t.split_once('>').unwrap().1.split("</text>").next().unwrap()))
            .collect()
    };
    // A node is `<g id="nodeN" class="node">`, its tooltip link a nested `<g id="a_nodeN">`.
    for group in svg.split("<g id=\"").skip(1) {
        let header = group.lines().next().unwrap_or_default();
        if group.starts_with("a_") {
            if let Some(id) = &current {
                nodes.get_mut(id).unwrap().extend(texts(group));
            }
        } else if header.contains("class=\"node\"") {
            let title = xml_text(between(group, "<title>", "</title>").next().unwrap());
            nodes.insert(title.clone(), texts(group));
            current = Some(title);
        } else {
            current = None;
        }
    }
    nodes
}

fn between<'a>(s: &'a str, open: &'a str, close: &'a str) -> impl Iterator<Item = &'a str> {
    s.split(open).skip(1).filter_map(move |p| p.split(close).next())
}

/// XML character data with its entities (`&amp;`, `&#45;`, `&#xa0;`) read.
fn xml_text(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let end = rest[i..].find(';').unwrap() + i;
        let entity = &rest[i + 1..end];
        let c = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            e if e.starts_with("#x") => char::from_u32(u32::from_str_radix(&e[2..], 16).unwrap()).unwrap(),
            e if e.starts_with('#') => char::from_u32(e[1..].parse().unwrap()).unwrap(),
            e => panic!("unknown entity &{e};"),
        };
        // Graphviz draws runs of spaces as no-break spaces.
        out.push(if c == '\u{a0}' { ' ' } else { c });
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}
