//! Reaching a run from outside it: signals sent to it, and its context read back.
//!
//! Invariants:
//! - Signals go through the agent's store (`signal::send`): any process sharing the store
//!   reaches any of its runs, this agent's or not; an agent without a store sends none.
//! - A signal to the agent's newest run, started in this process and not yet recorded (its
//!   claim writes its row as its task starts), waits for the row (bounded) rather than
//!   calling the run unknown: `start` then `signal` works.
//! - A query reads the run's last commit in the store and changes nothing.

use agent_core::{AgentError, Context};
use serde::Serialize;

use super::Agent;

/// How often, and how many times, a signal to this agent's run that is starting looks for
/// the run's row (its claim writes it as the run's task starts): two seconds at most.
const STARTING_POLL: std::time::Duration = std::time::Duration::from_millis(10);
const STARTING_POLLS: u32 = 200;
use crate::signal::{SignalError, SignalReceipt};

impl Agent {
    /// Send run `run_id` the signal `name` with `payload`: kept in the agent's store, it
    /// reaches the run's next wait on `name` (`ctx.wait_for_signal(name)`), in whichever
    /// process runs it; a wait in this process wakes at once. A new id (a UUID) names it:
    /// see [`Agent::signal_with_id`] to send at most once.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use agent_core::{Context, StateResult, WaitError};
    /// use agent_runtime::{store::MemoryStore, Agent, RunOptions};
    ///
    /// let mut agent = Agent::new("orders").with_store(MemoryStore::new());
    /// agent.add_state("await_payment", |ctx: Context| async move {
    ///     let cents: u64 = ctx.wait_for_signal("payment").timeout(Duration::from_secs(3600)).await?;
    ///     ctx.set_state("paid", cents);
    ///     Ok::<_, WaitError>(StateResult::End)
    /// });
    /// let run = agent.start(RunOptions::new())?;
    /// agent.signal(run.id(), "payment", &1200).await?;
    /// let result = run.await?;
    /// assert_eq!(result.context().get_state::<u64>("paid"), Some(1200));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`SignalError::UnknownRun`] and [`SignalError::Finished`] when the store has no such
    /// run or it is over (nothing is kept); [`SignalError::NoStore`] without a store;
    /// [`SignalError::Invalid`] for an empty or over-long name, or a payload that does not
    /// encode; [`SignalError::Store`] when the store fails.
    pub async fn signal<T: Serialize + ?Sized>(
        &self,
        run_id: &str,
        name: &str,
        payload: &T,
    ) -> Result<SignalReceipt, SignalError> {
        self.send_signal(run_id, name, None, payload).await
    }

    /// As [`Agent::signal`], with the id `id`: a second send with one id (a retried webhook)
    /// keeps nothing and says so ([`SignalReceipt::duplicate`]), so the run gets it once.
    ///
    /// # Errors
    ///
    /// As [`Agent::signal`]; also [`SignalError::Invalid`] for an empty or over-long id.
    pub async fn signal_with_id<T: Serialize + ?Sized>(
        &self,
        run_id: &str,
        name: &str,
        id: &str,
        payload: &T,
    ) -> Result<SignalReceipt, SignalError> {
        self.send_signal(run_id, name, Some(id), payload).await
    }

    async fn send_signal<T: Serialize + ?Sized>(
        &self,
        run_id: &str,
        name: &str,
        id: Option<&str>,
        payload: &T,
    ) -> Result<SignalReceipt, SignalError> {
        let Some(store) = self.store_if_any() else {
            return Err(SignalError::NoStore { agent: self.shared.name.clone() });
        };
        let payload = serde_json::to_value(payload)
            .map_err(|e| SignalError::Invalid { name: name.chars().take(64).collect(), reason: e.to_string() })?;
        match crate::signal::send(&*store, run_id, name, id, payload.clone()).await {
            Err(SignalError::UnknownRun { .. }) if self.starting(run_id) => {
                // This agent's newest run, just started: its row is written by its claim,
                // which its task makes in a moment. Wait for it (bounded), then send.
                for _ in 0..STARTING_POLLS {
                    if store.get_run(run_id).await?.is_some() || !self.starting(run_id) {
                        break;
                    }
                    tokio::time::sleep(STARTING_POLL).await;
                }
                crate::signal::send(&*store, run_id, name, id, payload).await
            }
            sent => sent,
        }
    }

    /// Whether `run_id` is this agent's newest run, going on in this process.
    fn starting(&self, run_id: &str) -> bool {
        self.current().is_some_and(|r| r.sinks.made_run_id() == Some(run_id) && !r.status().is_finished())
    }

    /// Run `run_id`'s context as of its last commit in the agent's store, read only: what
    /// its states have written so far (a running run's, while it goes on). Typed values
    /// read back with `get_state`, as in the run.
    ///
    /// # Errors
    ///
    /// [`AgentError::Store`] without a store, when the store fails or holds no such run;
    /// [`AgentError::Checkpoint`] when its records cannot be read (a typed value of a type
    /// this program does not register among them).
    pub async fn query(&self, run_id: &str) -> Result<Context, AgentError> {
        let store = self.store()?;
        let checkpoint = crate::store::read_checkpoint(&*store, run_id).await?;
        let Some(checkpoint) = checkpoint else {
            return Err(crate::durable::store_error(format!("the store has no run `{run_id}`"), Context::new()));
        };
        checkpoint.read_context().map_err(|e| {
            AgentError::Checkpoint(agent_core::CheckpointError::Mismatch {
                agent: self.shared.name.clone(),
                reason: format!("the context of run `{run_id}` cannot be read: {e}"),
            })
        })
    }
}
