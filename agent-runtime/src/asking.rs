//! A run answers its own context's requests for human input: the link between a run (and
//! the state polling) and the input service (`human`), which knows no run.
//!
//! Invariants:
//! - The context holds its run weakly (see `agent_core::__private::context::set_input_broker`),
//!   so a run costs no broker of its own, and a run dropped answers nothing.
//! - A request names the state that asked when it is made inside that state's poll (see
//!   `exec::polled_state`); with a store, the run's row is nudged so the store shows the
//!   state waiting for a person, and the run's writes of its requests and answers carry the
//!   epoch of its claim (see `durable`).
//! - The same link makes a state's durable waits (`ctx.sleep`, `ctx.wait_for_signal`: see
//!   `signal`), named by the state polled now and its execution key.
//! - The same link gives a state its execution key (`Context::execution_key`): the state
//!   this thread polls, and how many of its activations ended before, both of which a
//!   checkpoint keeps, so the key survives retries and take-overs.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use agent_core::__private::{InputBroker, InputFuture, WaitFuture, Wake};
use agent_core::{HumanInput, WaitError};
use tokio::time::Instant;

use crate::human::ask;
use crate::run::Run;

/// A run answers its own context's requests: the context holds it weakly (see
/// `agent_core::__private::context::set_input_broker`), so a run costs no broker of its own. It does nothing
/// until a state first asks: then it learns the run's id (formatted only then) and the hub
/// forgets the other runs nobody waits on.
impl InputBroker for Run {
    fn request(&self, input: HumanInput) -> InputFuture<'_> {
        let hub = &self.sinks.links.inputs;
        let run = self.sinks.input_id.get_or_init(|| {
            let id: Arc<str> = self.run_id().into();
            hub.forget_others(&id);
            id
        });
        if let Some(d) = &self.sinks.durable {
            // The store then shows the state running (waiting for a person), not where the
            // last completion left it.
            d.nudge();
        }
        // A durable run's own writes of its requests and answers are fenced by its epoch.
        let fence = self.sinks.durable.as_ref().map(|d| d.epoch());
        let events = Some(self.sinks.links.events.clone());
        let waited_from = Instant::now();
        // Asked from inside the state's poll: the state this thread polls is the one asking.
        let state = crate::exec::polled_state(self).map(|pos| self.state_name(pos));
        Box::pin(async move {
            let outcome = ask(hub, run, input, events, state, fence).await;
            self.record_input_wait(waited_from.elapsed());
            outcome
        })
    }

    /// `{run_id}/{state}/{n}`: the state polled now on this thread, and its activations
    /// that ended (completed, or failed with no retry after: checkpoints keep all three
    /// counts) plus one, so a retry or a re-execution after a take-over gets the same key.
    fn execution_key(&self) -> Option<String> {
        let pos = crate::exec::polled_state(self)?;
        let counters = &self.states[pos];
        // The thread's note of what it polls outlives the poll: a state no longer running
        // is not asking (the caller is outside any state, after it).
        if counters.status() != agent_core::StateStatus::Running {
            return None;
        }
        // Failed attempts that were retried belong to activations still going (this one,
        // when it is a retry): only the others ended it.
        let failed_for_good = counters.failed.load(Relaxed).saturating_sub(counters.retries.load(Relaxed));
        let ended = counters.completed.load(Relaxed).saturating_add(failed_for_good);
        Some(format!("{}/{}/{}", self.run_id(), self.program.states[pos].name, u64::from(ended) + 1))
    }

    fn emitting(&self) -> bool {
        self.emitting()
    }

    fn child_link(&self) -> Option<Box<dyn std::any::Any + Send>> {
        let key = InputBroker::execution_key(self)?;
        let state = crate::exec::polled_state(self).map(|pos| self.program.states[pos].name.to_string())?;
        let store = self.sinks.durable.as_ref().map(|d| (d.store(), d.lease_ttl()));
        Some(Box::new(crate::agent::ChildLink { parent: self.run_id().to_owned(), state, key, store }))
    }

    /// A durable sleep of the state polled now on this thread (see `signal::sleep`).
    fn sleep(&self, wake: Wake) -> WaitFuture<'_, ()> {
        let waiter = self.waiter("sleep");
        Box::pin(async move { crate::signal::sleep(waiter?, wake).await })
    }

    /// A signal wait of the state polled now on this thread (see `signal::receive`).
    fn signal(&self, name: String, timeout: Option<std::time::Duration>) -> WaitFuture<'_, serde_json::Value> {
        let waiter = self.waiter("signal");
        Box::pin(async move {
            let waited_from = Instant::now();
            let outcome = crate::signal::receive(waiter?, name, timeout).await;
            self.record_input_wait(waited_from.elapsed());
            outcome
        })
    }

    /// A custom value of the state polled now on this thread (`ctx.emit`).
    fn emit(&self, value: serde_json::Value) {
        let state = crate::exec::polled_state(self).map(|pos| self.state_name(pos));
        self.emit(crate::events::EventKind::Emitted { state, value });
    }
}

impl Run {
    /// What a durable wait of `kind` made now, inside the state this thread polls, needs
    /// (see `signal`). Made when the wait is called, inside the poll: the state is known
    /// only there.
    fn waiter(&self, kind: &str) -> Result<crate::signal::Waiter<'_>, WaitError> {
        let pos = crate::exec::polled_state(self);
        let (Some(pos), Some(execution_key)) = (pos, InputBroker::execution_key(self)) else {
            // Outside a state's poll (a task the state spawned): no activation to name it by.
            return Err(WaitError::NotInRun { what: format!("a {kind} outside a state of the run") });
        };
        let key = self.sinks.waits.next(pos, execution_key, kind);
        let durable = self.sinks.durable.as_ref().map(|d| (d.store(), d.epoch()));
        Ok(crate::signal::Waiter { durable, run_id: self.run_id(), key, state: Some(self.state_name(pos)), run: self })
    }
}
