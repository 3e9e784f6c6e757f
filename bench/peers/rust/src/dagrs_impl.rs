//! dagrs 0.9: a static `Graph` of `DefaultNode`s, each with an `Action`, joined by
//! `add_edge`, run with `Graph::async_start`. dagrs is flow-based: a node's "context write" is
//! what it sends on its out-channels (the shared `EnvVar` is read-only while the graph runs),
//! so each node receives a counter, adds one and broadcasts it.
//!
//! - chain: N nodes in a line (dagrs has no cycles outside a `LoopSubgraph`, whose nodes run
//!   as long-lived loops exchanging messages rather than as states, so a plain line of N
//!   nodes is the faithful "N states one after another"). Building the graph is not timed.
//! - fan-out: one source node with an edge to each of W worker nodes, and an edge from each
//!   worker to one join node that reads all W inputs.

use std::sync::Arc;

use dagrs::{
    async_trait::async_trait, Action, Content, DefaultNode, EnvVar, Graph, InChannels, Node, NodeId, NodeTable,
    OutChannels, Output,
};

use crate::{time, Timed, IO_WAIT};

/// Receives the counter (if it has a predecessor), adds one, sends it on.
struct Link {
    io: bool,
}

#[async_trait]
impl Action for Link {
    async fn run(&self, input: &mut InChannels, output: &mut OutChannels, _env: Arc<EnvVar>) -> Output {
        let n = match input.recv_any().await {
            Ok((_, c)) => *c.get::<u64>().unwrap_or(&0),
            Err(_) => 0,
        };
        if self.io {
            tokio::time::sleep(IO_WAIT).await;
        }
        output.broadcast(Content::new(n + 1)).await;
        Output::new(n + 1)
    }
}

/// Reads every input and sums them.
struct JoinAll;

#[async_trait]
impl Action for JoinAll {
    async fn run(&self, input: &mut InChannels, _output: &mut OutChannels, _env: Arc<EnvVar>) -> Output {
        let sum: u64 =
            input.map(|c| c.ok().and_then(|c| c.get::<u64>().copied()).unwrap_or(0)).await.into_iter().sum();
        Output::new(sum)
    }
}

async fn run_graph(mut graph: Graph, last: NodeId, want: u64) -> Timed {
    let (r, d) = time(graph.async_start()).await;
    r.map_err(|e| format!("{e:?}"))?;
    let got = graph.get_results::<u64>().get(&last).cloned().flatten().map(|v| *v);
    if got != Some(want) {
        return Err(format!("last node gave {got:?}, expected {want}"));
    }
    Ok(d)
}

pub async fn chain(n: usize) -> Timed {
    let mut table = NodeTable::default();
    let mut graph = Graph::new();
    let mut prev: Option<NodeId> = None;
    for i in 0..n {
        let node = DefaultNode::with_action(format!("s{i}"), Link { io: false }, &mut table);
        let id = node.id();
        graph.add_node(node).map_err(|e| format!("{e:?}"))?;
        if let Some(p) = prev {
            graph.add_edge(p, vec![id]).map_err(|e| format!("{e:?}"))?;
        }
        prev = Some(id);
    }
    graph.set_env(EnvVar::new(table));
    run_graph(graph, prev.ok_or("empty chain")?, n as u64).await
}

async fn fan(w: usize, io: bool) -> Timed {
    let mut table = NodeTable::default();
    let mut graph = Graph::new();
    let src = DefaultNode::with_action("fan".into(), Link { io: false }, &mut table);
    let src_id = src.id();
    graph.add_node(src).map_err(|e| format!("{e:?}"))?;
    let join = DefaultNode::with_action("join".into(), JoinAll, &mut table);
    let join_id = join.id();
    let mut workers = Vec::with_capacity(w);
    for i in 0..w {
        let node = DefaultNode::with_action(format!("w{i}"), Link { io }, &mut table);
        workers.push(node.id());
        graph.add_node(node).map_err(|e| format!("{e:?}"))?;
    }
    graph.add_node(join).map_err(|e| format!("{e:?}"))?;
    graph.add_edge(src_id, workers.clone()).map_err(|e| format!("{e:?}"))?;
    for id in workers {
        graph.add_edge(id, vec![join_id]).map_err(|e| format!("{e:?}"))?;
    }
    graph.set_env(EnvVar::new(table));
    // The source sends 1, each worker 2, so the join sums 2W.
    run_graph(graph, join_id, 2 * w as u64).await
}

pub async fn fanout(w: usize) -> Timed {
    fan(w, false).await
}

pub async fn io(w: usize) -> Timed {
    fan(w, true).await
}
