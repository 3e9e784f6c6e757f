//! graph-flow 0.8: `Task`s in a `GraphBuilder` graph, run with `Graph::execute_session` on an
//! in-memory `Session` (what `FlowRunner::run` does minus the session storage's load/save).
//! Context writes are `Context::set`, which stores a `serde_json::Value`.
//!
//! - chain: a ring of ten tasks joined by `add_edge`, each returning
//!   `NextAction::ContinueAndExecute` so the whole chain runs in one call, and `End` at N.
//! - fan-out: graph-flow's own `FanOutTask` with W child tasks (it spawns each on a `JoinSet`
//!   and waits for all), followed by an edge to a join task.

use std::sync::Arc;

use async_trait::async_trait;
use graph_flow::fanout::FanOutTask;
use graph_flow::{Context, GraphBuilder, NextAction, Session, Task, TaskResult};

use crate::{time, Timed, IO_WAIT};

struct Step {
    id: String,
    limit: u64,
}

#[async_trait]
impl Task for Step {
    fn id(&self) -> &str {
        &self.id
    }
    async fn run(&self, ctx: Context) -> graph_flow::Result<TaskResult> {
        let n: u64 = ctx.get("n").unwrap_or(0) + 1;
        ctx.set("n", n)?;
        let next = if n < self.limit { NextAction::ContinueAndExecute } else { NextAction::End };
        Ok(TaskResult::new(None, next))
    }
}

pub async fn chain(n: usize) -> Timed {
    let ids: Vec<String> = (0..10).map(|i| format!("s{i}")).collect();
    let mut b = GraphBuilder::new("chain");
    for id in &ids {
        b = b.add_task(Arc::new(Step { id: id.clone(), limit: n as u64 }));
    }
    for i in 0..10 {
        b = b.add_edge(ids[i].clone(), ids[(i + 1) % 10].clone());
    }
    let graph = b.set_start_task("s0").build().map_err(|e| e.to_string())?;
    let mut session = Session::new_from_task("run".into(), "s0");
    let (r, d) = time(graph.execute_session(&mut session)).await;
    r.map_err(|e| e.to_string())?;
    let got: u64 = session.context.get("n").unwrap_or(0);
    if got != n as u64 {
        return Err(format!("counted {got}, expected {n}"));
    }
    Ok(d)
}

struct Work {
    id: String,
    io: bool,
}

#[async_trait]
impl Task for Work {
    fn id(&self) -> &str {
        &self.id
    }
    async fn run(&self, ctx: Context) -> graph_flow::Result<TaskResult> {
        if self.io {
            tokio::time::sleep(IO_WAIT).await;
        }
        // One trivial write per branch, to a key of its own (graph-flow's context has no
        // atomic update; a shared counter would be a racy read-modify-write).
        ctx.set(self.id.clone(), 1u64)?;
        Ok(TaskResult::new(None, NextAction::End))
    }
}

struct Join;

#[async_trait]
impl Task for Join {
    fn id(&self) -> &str {
        "join"
    }
    async fn run(&self, ctx: Context) -> graph_flow::Result<TaskResult> {
        ctx.set("merged", true)?;
        Ok(TaskResult::new(None, NextAction::End))
    }
}

async fn fan(w: usize, io: bool) -> Timed {
    let children: Vec<Arc<dyn Task>> =
        (0..w).map(|i| Arc::new(Work { id: format!("w{i}"), io }) as Arc<dyn Task>).collect();
    let fan = FanOutTask::new("fan", children).with_next_action(NextAction::ContinueAndExecute);
    let graph = GraphBuilder::new("fan")
        .add_task(fan)
        .add_task(Arc::new(Join))
        .add_edge("fan", "join")
        .set_start_task("fan")
        .build()
        .map_err(|e| e.to_string())?;
    let mut session = Session::new_from_task("run".into(), "fan");
    let (r, d) = time(graph.execute_session(&mut session)).await;
    r.map_err(|e| e.to_string())?;
    if session.context.get::<bool>("merged") != Some(true) {
        return Err("join did not run".into());
    }
    if session.context.get::<u64>(&format!("w{}", w - 1)) != Some(1) {
        return Err("a branch did not run".into());
    }
    Ok(d)
}

pub async fn fanout(w: usize) -> Timed {
    fan(w, false).await
}

pub async fn io(w: usize) -> Timed {
    fan(w, true).await
}
