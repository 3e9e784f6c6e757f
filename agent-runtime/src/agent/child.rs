//! Subworkflows: a state runs another workflow as a child run of its own and waits for its
//! output ([`RunChild::run_child`]).
//!
//! Invariants:
//! - A child is a run of its own, with its own id, states, checkpoints and lease. Started
//!   from a state of a durable run, it is durable in the same store, its id derived from the
//!   state's execution key (`Context::execution_key`) and the child's workflow, and its
//!   lineage (`LineageKind::Child`) recorded: the same state activation run again (its
//!   process died, the run was recovered elsewhere) finds the same child, and goes on with
//!   it (a finished child's output is read, never run again; an unfinished one is recovered
//!   where it was, or waited for while another process holds it).
//! - The child's input is a JSON object whose keys become its context's keys; its output is
//!   its final context read as the output type (each field a key).
//! - A child stops with its parent: when the parent's state is dropped (the parent was
//!   cancelled, timed out, or its state cancelled), the child run is cancelled, and records
//!   that in its store.
//! - A durable child takes its parent's lease length unless its workflow sets one, so a
//!   crashed parent's child is free to go on with when the parent is.
//! - From a plain (not durable) run, or outside a run, the child runs in memory.

use std::sync::Arc;
use std::time::Duration;

use agent_core::{AgentError, AgentStatus, Context};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::Agent;
use crate::store::{now_ms, read_checkpoint, CheckpointStore, Lineage, LineageKind};
use crate::RunOptions;

/// What a child run needs of its parent's state (see `InputBroker::child_link`).
pub(crate) struct ChildLink {
    /// The parent run.
    pub parent: String,
    /// The parent's state that starts the child.
    pub state: String,
    /// The execution key of the parent's state that starts the child.
    pub key: String,
    /// The parent's store and lease length, when it is durable.
    pub store: Option<(Arc<dyn CheckpointStore>, Duration)>,
}

/// Why a child run gave no output.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChildError {
    /// The input is not a JSON object (its keys are the child's context keys).
    #[error("the child's input must serialise as a JSON object of context keys: {0}")]
    Input(String),
    /// The child run ended otherwise than completed.
    #[error("child run {run_id} of `{agent}` ended {status}{}", error.as_deref().map(|e| format!(": {e}")).unwrap_or_default())]
    NotCompleted {
        /// The child run.
        run_id: String,
        /// Its workflow.
        agent: String,
        /// How it ended.
        status: AgentStatus,
        /// Its error, if it failed.
        error: Option<String>,
    },
    /// The child's final context does not read as the output type.
    #[error("child run {run_id}'s context does not read as the output: {message}")]
    Output {
        /// The child run.
        run_id: String,
        /// What did not fit.
        message: String,
    },
    /// The child could not be run (its store failed, its graph changed, ...).
    #[error("child run of `{agent}`: {source}")]
    Run {
        /// Its workflow.
        agent: String,
        /// Why.
        #[source]
        source: Box<AgentError>,
    },
}

/// A workflow to run as a child whose input and output types are fixed: what
/// `#[workflow(input = I, output = O)]` gives as its module's `child()`. Passing it to
/// [`RunChild::run_child`] with another input, or reading another output, does not compile.
pub struct Child<I, O> {
    agent: Agent,
    types: std::marker::PhantomData<fn(I) -> O>,
}

impl<I, O> Child<I, O> {
    /// `agent`, as a child taking `I` and giving `O`.
    pub fn new(agent: Agent) -> Child<I, O> {
        Child { agent, types: std::marker::PhantomData }
    }

    /// The workflow.
    pub fn agent(&self) -> &Agent {
        &self.agent
    }
}

/// What [`RunChild::run_child`] runs: an [`Agent`] (any input and output that serde
/// reads), or a [`Child`] (only its own).
pub trait IntoChild<I, O> {
    /// The workflow to run.
    fn into_agent(self) -> Agent;
}

impl<I, O> IntoChild<I, O> for Agent {
    fn into_agent(self) -> Agent {
        self
    }
}

impl<I, O> IntoChild<I, O> for Child<I, O> {
    fn into_agent(self) -> Agent {
        self.agent
    }
}

/// Running another workflow from a state: `ctx.run_child(agent, input)`.
pub trait RunChild {
    /// Run `child` as a child run with `input` (its keys become the child's context) and
    /// wait for its output (its final context read as `O`). See the module docs of
    /// `agent::child` for what survives a crash and what a cancel does.
    ///
    /// ```
    /// use agent_core::{Context, StateResult, BoxError};
    /// use agent_runtime::{Agent, RunChild};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize)]
    /// struct Article { text: String }
    /// #[derive(Deserialize)]
    /// struct Summary { words: usize }
    ///
    /// fn summarise() -> Agent {
    ///     let mut agent = Agent::new("summarise");
    ///     agent.add_state("count", |ctx: Context| async move {
    ///         let text: String = ctx.get_state("text").unwrap_or_default();
    ///         ctx.set_state("words", text.split_whitespace().count());
    ///         StateResult::End
    ///     });
    ///     agent
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), agent_core::AgentError> {
    /// let mut parent = Agent::new("publish");
    /// parent.add_state("summarise", |ctx: Context| async move {
    ///     let summary: Summary = ctx.run_child(summarise(), Article { text: "three short words".into() }).await?;
    ///     ctx.set_state("words", summary.words);
    ///     Ok::<_, BoxError>(StateResult::End)
    /// });
    /// let result = parent.run().await?;
    /// assert_eq!(result.context().get_state::<usize>("words"), Some(3));
    /// # Ok(())
    /// # }
    /// ```
    fn run_child<I, O>(
        &self,
        child: impl IntoChild<I, O> + Send,
        input: I,
    ) -> impl std::future::Future<Output = Result<O, ChildError>> + Send
    where
        I: Serialize + Send,
        O: DeserializeOwned;
}

impl RunChild for Context {
    async fn run_child<I, O>(&self, child: impl IntoChild<I, O> + Send, input: I) -> Result<O, ChildError>
    where
        I: Serialize + Send,
        O: DeserializeOwned,
    {
        let child = child.into_agent();
        let input = serde_json::to_value(input).map_err(|e| ChildError::Input(e.to_string()))?;
        let serde_json::Value::Object(keys) = input else {
            return Err(ChildError::Input(format!("got {input}")));
        };
        // Taken now, in the state's poll: the link names the state polled on this thread.
        let link = agent_core::__private::context::child_link(self).and_then(|b| b.downcast::<ChildLink>().ok());
        let ctx = Context::new();
        for (k, v) in keys {
            ctx.set_state(&k, v);
        }
        let name = child.name().to_owned();
        let failed = |source: AgentError| ChildError::Run { agent: name.clone(), source: Box::new(source) };
        let (run_id, context) = match link.map(|l| *l) {
            Some(ChildLink { parent, state, key, store: Some((store, ttl)) }) => {
                let inherits = super::lock(&child.shared.live).persist.lease_ttl.is_none();
                let child = if inherits { child.lease_ttl(ttl) } else { child };
                let child = child.with_store(store.clone());
                let id = child_id(&key, &name);
                let done = durable_child(&child, &*store, (&parent, &state), &id, ctx).await.map_err(failed)?;
                match done {
                    Ended::Completed(context) => (id, context),
                    Ended::Not(status, error) => {
                        return Err(ChildError::NotCompleted { run_id: id, agent: name, status, error })
                    }
                }
            }
            _ => {
                let result = stopping_with_parent(&child, child.run_with(RunOptions::new().context(ctx)))
                    .await
                    .map_err(failed)?;
                let id = result.run_id().to_owned();
                if result.status() != AgentStatus::Completed {
                    return Err(ChildError::NotCompleted {
                        run_id: id,
                        agent: name,
                        status: result.status(),
                        error: None,
                    });
                }
                (id, result.context().clone())
            }
        };
        output(&run_id, &context)
    }
}

/// The child's final context read as `O`: each key's value, as `get_state` reads it.
fn output<O: DeserializeOwned>(run_id: &str, context: &Context) -> Result<O, ChildError> {
    let mut fields = serde_json::Map::new();
    for key in context.keys() {
        if let Some(value) = context.get_state::<serde_json::Value>(&key) {
            fields.insert(key, value);
        }
    }
    serde_json::from_value(serde_json::Value::Object(fields))
        .map_err(|e| ChildError::Output { run_id: run_id.to_owned(), message: e.to_string() })
}

/// The id of the child of workflow `agent` started by the state activation `key`: the same
/// for every execution of that activation.
fn child_id(key: &str, agent: &str) -> String {
    use sha2::Digest;
    let digest =
        sha2::Sha256::new().chain_update(key.as_bytes()).chain_update([0]).chain_update(agent.as_bytes()).finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid().to_string()
}

/// How a durable child ended.
enum Ended {
    Completed(Context),
    Not(AgentStatus, Option<String>),
}

/// Cancels an agent's run when dropped (its parent's state was dropped).
struct CancelOnDrop(Agent);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(run) = self.0.current() {
            run.cancel();
        }
    }
}

/// Await `run`, a run of `child`; should this future be dropped first (its parent's state
/// was), cancel the child's run.
async fn stopping_with_parent<T>(child: &Agent, run: impl std::future::IntoFuture<Output = T>) -> T {
    let guard = CancelOnDrop(child.clone());
    let out = run.await;
    std::mem::forget(guard);
    out
}

/// Run (or go on with, or wait for) the durable child `id` that `parent`'s `state` starts,
/// to its end.
async fn durable_child(
    child: &Agent,
    store: &dyn CheckpointStore,
    (parent, state): (&str, &str),
    id: &str,
    input: Context,
) -> Result<Ended, AgentError> {
    let failed = |e: crate::store::StoreError| crate::durable::store_error(e, Context::new());
    let mut pause = Duration::from_millis(50);
    loop {
        let row = store.get_run(id).await.map_err(failed)?;
        let ran = match row {
            None => {
                let lineage = Lineage::new(id, parent, LineageKind::Child, now_ms()).in_state(state);
                match store.record_lineage(&lineage).await {
                    Ok(()) => {}
                    // A previous execution recorded it, and died before the child's row.
                    Err(_) if store.lineage(id).await.map_err(failed)?.is_some() => {}
                    Err(e) => return Err(failed(e)),
                }
                let mut options = RunOptions::new().context(input.clone());
                options.run_id = Some(id.to_owned());
                // A task of its own, so that a child cancelled with its parent's state still
                // records its end.
                stopping_with_parent(child, child.start(options)?).await
            }
            Some(row) if row.status.is_finished() => {
                let checkpoint = read_checkpoint(store, id).await?;
                return Ok(match checkpoint {
                    Some(c) if row.status == AgentStatus::Completed => Ended::Completed(
                        c.read_context().map_err(|e| crate::durable::store_error(e.to_string(), Context::new()))?,
                    ),
                    c => Ended::Not(row.status, c.and_then(|c| c.last_error).map(|e| e.message)),
                });
            }
            Some(row) if row.is_leased_at(now_ms()) => {
                // Another process runs it (or its dead owner's lease has not run out yet).
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
                continue;
            }
            Some(_) => {
                // A task of its own too, for the same reason.
                let recovering = tokio::spawn({
                    let (child, id) = (child.clone(), id.to_owned());
                    async move { child.recover(&id).await }
                });
                stopping_with_parent(child, recovering).await.unwrap_or_else(|e| {
                    Err(crate::durable::store_error(format!("the child's task ended: {e}"), Context::new()))
                })
            }
        };
        match ran {
            Ok(r) if r.status() == AgentStatus::Completed => return Ok(Ended::Completed(r.context().clone())),
            Ok(r) => return Ok(Ended::Not(r.status(), None)),
            // Taken meanwhile by another process (a worker serving the child): wait for it.
            Err(AgentError::Owned { .. }) => tokio::time::sleep(pause).await,
            Err(e) => return Err(e),
        }
    }
}
