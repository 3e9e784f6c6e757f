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

use std::sync::Arc;

use agent_core::__private::{InputBroker, InputFuture};
use agent_core::HumanInput;
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
}
