//! Property tests of fan-in over random fan-out graphs.
//!
//! A random layered graph: `start` fans out to every state of layer 1; each state of layer
//! i moves to one state of layer i + 1 or i + 2 (so branches reach a join after different
//! numbers of steps) or ends; every state sleeps a random time (virtual).
//! Whatever the shape and the timing, the run must end, every state reachable from `start`
//! must run, and none may run twice: branches that meet merge into one.
//! - fully known graph (`#[workflow]`-style specs): joins come from reachability alone;
//! - builder agent: states reached by two or more states are marked `join`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_core::{Context, StateHandler, StateResult, StateSpec, WorkflowGraph};
use agent_runtime::Agent;
use proptest::prelude::*;

/// One state of a generated graph: its name, where it goes, how long it sleeps.
#[derive(Clone, Debug)]
struct Node {
    name: String,
    next: Option<String>,
    sleep_ms: u64,
}

/// Per layer, per state: (successor, sleep). A successor `None` ends; `Some((skip, k))`
/// picks state `k % width` of layer `l + 1 + skip` (the last layer if that is past it).
type Layers = Vec<Vec<(Option<(usize, usize)>, u64)>>;

fn layers() -> impl Strategy<Value = Layers> {
    let state = (prop::option::weighted(0.85, (0usize..2, 0usize..8)), 0u64..40);
    prop::collection::vec(prop::collection::vec(state, 1..5), 1..6)
}

fn build(layers: &Layers) -> (Vec<String>, Vec<Node>) {
    let name = |l: usize, i: usize| format!("s{l}_{i}");
    let mut nodes = Vec::new();
    for (l, layer) in layers.iter().enumerate() {
        for (i, &(next, sleep_ms)) in layer.iter().enumerate() {
            let next = match next {
                Some((skip, k)) if l + 1 < layers.len() => {
                    let target = (l + 1 + skip).min(layers.len() - 1);
                    Some(name(target, k % layers[target].len()))
                }
                _ => None,
            };
            nodes.push(Node { name: name(l, i), next, sleep_ms });
        }
    }
    let first: Vec<String> = (0..layers[0].len()).map(|i| name(0, i)).collect();
    (first, nodes)
}

/// States reachable from the first layer.
fn reachable(first: &[String], nodes: &[Node]) -> BTreeSet<String> {
    let by_name: BTreeMap<&str, &Node> = nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut todo: Vec<String> = first.to_vec();
    while let Some(s) = todo.pop() {
        if seen.insert(s.clone()) {
            if let Some(next) = &by_name[s.as_str()].next {
                todo.push(next.clone());
            }
        }
    }
    seen
}

type Runs = Arc<Mutex<BTreeMap<String, u32>>>;

fn node_state(
    node: &Node,
    runs: Runs,
) -> impl Fn(Context) -> std::pin::Pin<Box<dyn std::future::Future<Output = StateResult> + Send>> + Send + Sync + 'static
{
    let (name, next, sleep) = (node.name.clone(), node.next.clone(), node.sleep_ms);
    move |_ctx: Context| {
        let (name, next, runs) = (name.clone(), next.clone(), runs.clone());
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(sleep)).await;
            *runs.lock().unwrap().entry(name).or_insert(0) += 1;
            match next {
                Some(n) => StateResult::next(n),
                None => StateResult::End,
            }
        })
    }
}

fn leak<T>(v: Vec<T>) -> &'static [T] {
    Box::leak(v.into_boxed_slice())
}

fn leak_str(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

/// The agent as `#[workflow]` would build it: every edge known.
fn known_graph_agent(first: &[String], nodes: &[Node], runs: &Runs) -> Agent {
    let mut specs = vec![StateSpec {
        edges: leak(first.iter().map(|f| leak_str(f)).collect()),
        computed_targets: false,
        ..StateSpec::new("start")
    }];
    for n in nodes {
        specs.push(StateSpec {
            edges: leak(n.next.iter().map(|s| leak_str(s)).collect()),
            computed_targets: false,
            ..StateSpec::new(leak_str(&n.name))
        });
    }
    let graph: &'static WorkflowGraph = Box::leak(Box::new(WorkflowGraph {
        name: "random",
        start: "start",
        states: leak(specs),
        max_concurrent: None,
    }));
    let targets = first.to_vec();
    let mut handlers: Vec<(Arc<dyn StateHandler>, Option<&'static StateSpec>)> = vec![(
        Arc::new(move |_ctx: Context| {
            let targets = targets.clone();
            async move { StateResult::parallel(targets) }
        }),
        None,
    )];
    for n in nodes {
        handlers.push((Arc::new(node_state(n, runs.clone())), None));
    }
    Agent::__from_workflow(graph, handlers)
}

/// The same graph with the builder, states added layer by layer, joins marked.
fn builder_agent(first: &[String], nodes: &[Node], runs: &Runs) -> Agent {
    let mut indegree: BTreeMap<&str, usize> = BTreeMap::new();
    for n in nodes {
        if let Some(next) = &n.next {
            *indegree.entry(next.as_str()).or_default() += 1;
        }
    }
    let mut agent = Agent::new("random");
    let targets = first.to_vec();
    agent.add_state("start", move |_ctx: Context| {
        let targets = targets.clone();
        async move { StateResult::parallel(targets) }
    });
    for n in nodes {
        let config = agent.add_state(n.name.clone(), node_state(n, runs.clone()));
        if indegree.get(n.name.as_str()).copied().unwrap_or(0) >= 2 {
            config.join();
        }
    }
    agent
}

fn check(agent: Agent, first: &[String], nodes: &[Node], runs: &Runs) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
    let result = rt.block_on(agent.run());
    prop_assert!(result.is_ok(), "run failed: {:?}", result.err());
    let runs = runs.lock().unwrap();
    let expected = reachable(first, nodes);
    let ran: BTreeSet<String> = runs.keys().cloned().collect();
    prop_assert_eq!(&ran, &expected, "states run differ from states reachable");
    for (state, n) in runs.iter() {
        prop_assert_eq!(*n, 1, "state {} ran {} times", state, n);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn a_known_graph_runs_every_reachable_state_once(layers in layers()) {
        let (first, nodes) = build(&layers);
        let runs: Runs = Arc::default();
        check(known_graph_agent(&first, &nodes, &runs), &first, &nodes, &runs)?;
    }

    #[test]
    fn a_builder_agent_with_joins_marked_runs_every_reachable_state_once(layers in layers()) {
        let (first, nodes) = build(&layers);
        let runs: Runs = Arc::default();
        check(builder_agent(&first, &nodes, &runs), &first, &nodes, &runs)?;
    }
}
