use proptest::prelude::*;

use super::*;

/// fetch → parse → store, with an `on_error` handler, a join, retries and a dependency.
fn sample() -> GraphSignature {
    let mut g = GraphSignature::new("fetch");
    let mut fetch = StateSignature::default();
    fetch.edges.insert("parse".into());
    fetch.computed_targets = false;
    fetch.on_error = Some("report".into());
    fetch.max_retries = 3;
    g.states.insert("fetch".into(), fetch);
    let mut parse = StateSignature::default();
    parse.edges.insert("store".into());
    parse.join = true;
    parse.dependencies.insert(DependencySignature::new(
        "fetch",
        DependencyType::Required,
        DependencyLifecycle::Session,
    ));
    g.states.insert("parse".into(), parse);
    g.states.insert("store".into(), StateSignature::default());
    g.states.insert("report".into(), StateSignature::default());
    g
}

fn bytes(g: &GraphSignature) -> Vec<u8> {
    let mut out = Vec::new();
    encode::encode(g, &mut |b| out.extend_from_slice(b));
    out
}

/// The hash of a fixed graph, written once (and checked against an independent
/// implementation of the encoding the module docs describe). If this fails, the encoding
/// changed: that must be deliberate, bump `encode::PREFIX`, and every recorded run's hash
/// changes with it.
#[test]
fn the_hash_of_a_fixed_graph_is_pinned() {
    assert_eq!(
        sample().hash().to_string(),
        "12307f657b20c5a233c11b80ad30ed55d19c89eb3ebfd8ab49b51ce41f447c3c",
        "the canonical encoding changed"
    );
    assert!(bytes(&sample()).starts_with(b"agent-graph-signature/1\n"));
}

#[test]
fn the_order_states_are_added_in_does_not_matter() {
    let a = sample();
    let mut b = GraphSignature::new("fetch");
    for (name, s) in a.states.iter().rev() {
        b.states.insert(name.clone(), s.clone());
    }
    assert_eq!(a, b);
    assert_eq!(a.hash(), b.hash());
}

#[test]
fn the_hash_displays_as_hex_and_shortens_with_a_precision() {
    let h = sample().hash();
    let full = h.to_string();
    assert_eq!(full.len(), 64);
    assert!(full.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert_eq!(format!("{h:.12}"), full[..12]);
    assert_eq!(format!("{h:?}"), format!("GraphHash({full})"));
}

#[test]
fn each_kind_of_change_is_listed_and_displayed() {
    let old = sample();
    let mut new = old.clone();
    new.start = "parse".into();
    let report = new.states.remove("report").unwrap();
    new.states.insert("notify".into(), report);
    let fetch = new.states.get_mut("fetch").unwrap();
    fetch.edges.remove("parse");
    fetch.edges.insert("store".into());
    fetch.computed_targets = true;
    fetch.on_error = Some("notify".into());
    fetch.max_retries = 1;
    let parse = new.states.get_mut("parse").unwrap();
    parse.join = false;
    parse.dependencies.clear();
    parse.dependencies.insert(DependencySignature::new("fetch", DependencyType::Optional, DependencyLifecycle::Once));
    let changes = GraphSignature::diff(&old, &new);
    let text: Vec<String> = changes.iter().map(ToString::to_string).collect();
    assert_eq!(
        text,
        [
            "the start changed from `fetch` to `parse`",
            "state `report` was removed",
            "state `notify` was added",
            "state `fetch` now goes to `store` and no longer goes to `parse`",
            "state `fetch` now has targets computed at run time",
            "state `fetch`: on_error changed from `report` to `notify`",
            "state `fetch`: max_retries changed from 3 to 1",
            "state `parse` is no longer a join",
            "state `parse` no longer depends on `fetch` (Required, Session)",
            "state `parse` now depends on `fetch` (Optional, Once)",
        ]
    );
    assert!(matches!(&changes[3], GraphChange::EdgesChanged { added, removed, .. }
        if added == &["store"] && removed == &["parse"]));
    // Backwards, each change the other way round.
    let back: Vec<String> = GraphSignature::diff(&new, &old).iter().map(ToString::to_string).collect();
    assert!(back.contains(&"state `notify` was removed".to_owned()));
    assert!(back.contains(&"state `fetch` no longer has targets computed at run time".to_owned()));
    assert!(back.contains(&"state `parse` is now a join".to_owned()));
    assert!(back.contains(&"state `fetch`: on_error changed from `notify` to `report`".to_owned()));
    let mut no_handler = old.clone();
    no_handler.states.get_mut("fetch").unwrap().on_error = None;
    assert_eq!(
        GraphSignature::diff(&old, &no_handler)[0].to_string(),
        "state `fetch`: on_error changed from `report` to none"
    );
}

#[test]
fn a_signature_round_trips_through_json_and_refuses_unknown_names() {
    let g = sample();
    let json = serde_json::to_string(&g).unwrap();
    assert!(json.contains("\"Required\"") && json.contains("\"Session\""), "{json}");
    let back: GraphSignature = serde_json::from_str(&json).unwrap();
    assert_eq!(back, g);
    let bad = json.replace("\"Required\"", "\"Mandatory\"");
    let err = serde_json::from_str::<GraphSignature>(&bad).unwrap_err().to_string();
    assert!(err.contains("unknown dependency type \"Mandatory\""), "{err}");
    let bad = json.replace("\"Session\"", "\"Forever\"");
    assert!(serde_json::from_str::<GraphSignature>(&bad).is_err());
    // Defaults are left out, and read back as defaults.
    let store = serde_json::to_string(&g.states["store"]).unwrap();
    assert_eq!(store, "{}");
    let closed = StateSignature { computed_targets: false, ..StateSignature::default() };
    assert_eq!(serde_json::to_string(&closed).unwrap(), "{\"computed_targets\":false}");
    assert_eq!(serde_json::from_str::<StateSignature>("{}").unwrap(), StateSignature::default());
}

/// A name from a small alphabet, so that random graphs share names often.
fn name() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "c", "ab", "", "é"]).prop_map(str::to_owned)
}

fn dependency() -> impl Strategy<Value = DependencySignature> {
    let kinds =
        vec![DependencyType::Required, DependencyType::Optional, DependencyType::Parallel, DependencyType::Sequential];
    let lifecycles = vec![DependencyLifecycle::Session, DependencyLifecycle::Once, DependencyLifecycle::Periodic];
    (name(), prop::sample::select(kinds), prop::sample::select(lifecycles))
        .prop_map(|(s, k, l)| DependencySignature::new(s, k, l))
}

fn state() -> impl Strategy<Value = StateSignature> {
    (
        prop::collection::btree_set(name(), 0..3),
        any::<bool>(),
        prop::option::of(name()),
        any::<bool>(),
        0u32..3,
        prop::collection::btree_set(dependency(), 0..2),
    )
        .prop_map(|(edges, computed_targets, on_error, join, max_retries, dependencies)| StateSignature {
            edges,
            computed_targets,
            on_error,
            join,
            max_retries,
            dependencies,
        })
}

fn graph() -> impl Strategy<Value = GraphSignature> {
    (name(), prop::collection::btree_map(name(), state(), 0..4))
        .prop_map(|(start, states)| GraphSignature { start, states })
}

/// A graph, and either itself (rebuilt) or another drawn from the same small space.
fn pair() -> impl Strategy<Value = (GraphSignature, GraphSignature)> {
    (graph(), prop::option::of(graph())).prop_map(|(a, b)| {
        let b = b.unwrap_or_else(|| serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap());
        (a, b)
    })
}

proptest! {
    #[test]
    fn hashes_are_equal_exactly_when_signatures_are((a, b) in pair()) {
        prop_assert_eq!(a == b, a.hash() == b.hash());
        prop_assert_eq!(a == b, bytes(&a) == bytes(&b));
        prop_assert!(GraphSignature::diff(&a, &a).is_empty());
        prop_assert_eq!(a == b, GraphSignature::diff(&a, &b).is_empty());
        prop_assert_eq!(GraphSignature::diff(&a, &b).is_empty(), GraphSignature::diff(&b, &a).is_empty());
    }
}
