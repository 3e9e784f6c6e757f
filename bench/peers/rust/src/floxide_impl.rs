//! floxide 3.2: `Node`s wired with the `workflow!` macro and run with `Workflow::run` (the
//! local, in-process runner). The context is a struct holding a `SharedState<u64>` counter,
//! floxide's own shared-mutable context cell (an `Arc<tokio::sync::Mutex<_>>`); each state
//! writes it once.
//!
//! - chain: one `Step` node with a branching edge back to itself (`StepAct::More(_) =>
//!   [step]`) until N, then a terminal node. floxide's runner pops work items off a queue, so
//!   a ring of distinct nodes would cost the same per transition.
//! - fan-out: floxide's `BatchNode` (its parallel map: every input runs on
//!   `spawn_blocking` + `block_on`, up to `batch_size` at once, then all are joined), with
//!   `batch_size = W`, between a source node that makes the W inputs and a join node that
//!   takes the `Vec` of outputs. (`Transition::NextAll` also fans out, but the local runner
//!   then processes the items one after another, so it is not a parallel fan-out.)

use async_trait::async_trait;
use floxide::{workflow, BatchNode, FloxideError, Node, SharedState, Transition, Workflow, WorkflowCtx};
use serde::{Deserialize, Serialize};

use crate::{time, Timed, IO_WAIT};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Ctx {
    pub n: SharedState<u64>,
    pub io: bool,
}

#[derive(Clone, Debug)]
pub enum StepAct {
    More(u64),
    Done(u64),
}

#[derive(Clone, Debug)]
pub struct Step {
    limit: u64,
}

#[async_trait]
impl Node<Ctx> for Step {
    type Input = u64;
    type Output = StepAct;
    async fn process(&self, ctx: &Ctx, input: u64) -> Result<Transition<StepAct>, FloxideError> {
        *ctx.n.get().await += 1;
        let next = input + 1;
        Ok(Transition::Next(if next < self.limit { StepAct::More(next) } else { StepAct::Done(next) }))
    }
}

#[derive(Clone, Debug)]
pub struct Done;

#[async_trait]
impl Node<Ctx> for Done {
    type Input = u64;
    type Output = u64;
    async fn process(&self, _ctx: &Ctx, input: u64) -> Result<Transition<u64>, FloxideError> {
        Ok(Transition::Next(input))
    }
}

workflow! {
    pub struct ChainWorkflow {
        step: Step,
        done: Done,
    }
    start = step;
    context = Ctx;
    edges {
        step => {
            StepAct::More(_) => [ step ];
            StepAct::Done(_) => [ done ];
        };
        done => {};
    }
}

async fn counted(ctx: &WorkflowCtx<Ctx>) -> u64 {
    *ctx.store.n.get().await
}

pub async fn chain(n: usize) -> Timed {
    let wf = ChainWorkflow { step: Step { limit: n as u64 }, done: Done };
    let ctx = WorkflowCtx::new(Ctx::default());
    let (r, d) = time(wf.run(&ctx, 0)).await;
    let out = r.map_err(|e| e.to_string())?;
    let got = counted(&ctx).await;
    if out != n as u64 || got != n as u64 {
        return Err(format!("chain ended at {out}, counted {got}, expected {n}"));
    }
    Ok(d)
}

/// Makes the W inputs of the fan-out.
#[derive(Clone, Debug)]
pub struct Source {
    width: usize,
}

#[async_trait]
impl Node<Ctx> for Source {
    type Input = ();
    type Output = Vec<u64>;
    async fn process(&self, _ctx: &Ctx, _input: ()) -> Result<Transition<Vec<u64>>, FloxideError> {
        Ok(Transition::Next((0..self.width as u64).collect()))
    }
}

/// One branch: optionally wait, then one context write.
#[derive(Clone, Debug)]
pub struct Work;

#[async_trait]
impl Node<Ctx> for Work {
    type Input = u64;
    type Output = u64;
    async fn process(&self, ctx: &Ctx, input: u64) -> Result<Transition<u64>, FloxideError> {
        if ctx.io {
            tokio::time::sleep(IO_WAIT).await;
        }
        *ctx.n.get().await += 1;
        Ok(Transition::Next(input))
    }
}

/// The join: runs once with every branch's output.
#[derive(Clone, Debug)]
pub struct Join;

#[async_trait]
impl Node<Ctx> for Join {
    type Input = Vec<u64>;
    type Output = usize;
    async fn process(&self, _ctx: &Ctx, input: Vec<u64>) -> Result<Transition<usize>, FloxideError> {
        Ok(Transition::Next(input.len()))
    }
}

workflow! {
    pub struct FanWorkflow {
        source: Source,
        work: BatchNode<Ctx, Work>,
        join: Join,
    }
    start = source;
    context = Ctx;
    edges {
        source => { [ work ] };
        work => { [ join ] };
        join => {};
    }
}

async fn fan(w: usize, io: bool) -> Timed {
    let wf = FanWorkflow { source: Source { width: w }, work: BatchNode::new(Work, w), join: Join };
    let ctx = WorkflowCtx::new(Ctx { n: SharedState::new(0), io });
    let (r, d) = time(wf.run(&ctx, ())).await;
    let joined = r.map_err(|e| e.to_string())?;
    let got = counted(&ctx).await;
    if joined != w || got != w as u64 {
        return Err(format!("joined {joined}, counted {got}, expected {w}"));
    }
    Ok(d)
}

pub async fn fanout(w: usize) -> Timed {
    fan(w, false).await
}

pub async fn io(w: usize) -> Timed {
    fan(w, true).await
}
