//! Time and the outside world inside a run: durable sleeps (`ctx.sleep`,
//! `ctx.sleep_until`) and signals (`Agent::signal` to `ctx.wait_for_signal`).
//!
//! - `keys`: how a wait is named, so that a state run again after a restart finds what its
//!   first run recorded.
//! - `sleep`: a sleep, from its wake time armed in the store to its end.
//! - `receive`: a signal wait, from its deadline armed in the store to the message taken.
//! - `send`: a signal kept in the store for its run, and the waits of this process woken.
//!
//! Design: everything durable is in the run's store, through the store's own guarded
//! writes (`arm_timer`, `take_signal`, `send_signal`; see `store::signals`), so the rules
//! hold across processes as they do in one: the first arming of a timer wins, a signal is
//! taken by one wait only, a run taken over arms and takes nothing. The runtime adds only
//! waiting: a wait sleeps until its wake time, or until a send in this process wakes it
//! (`send::waiters`), and reads the store every `receive::POLL` for sends from other
//! processes.
//!
//! Invariants:
//! - A wait's key is `{execution key}/{sleep|signal}/{n}`, `n` counting the waits the state
//!   activation made, from 1, in the order it made them (`keys`).
//! - A durable wait records before it waits: a sleep's wake time, a signal wait's deadline
//!   (when it has a timeout) are armed in the store first, and a recovered run computes
//!   what is left from the armed time on the wall clock (`clock`), never from its restart.
//! - A durable wait leaves when its run pauses (`WaitError::Interrupted`): the state is not
//!   failed (see `exec::attempt::interrupted`), its token stays where it is, and it runs
//!   again when the run goes on (resumed here, or taken over by another worker), its wait
//!   resuming from what was recorded. A pause is not held up by a day-long sleep.
//! - While a state waits it holds no resources (`human::release_resources`), and takes them
//!   back before its wait returns, on every path that returns.
//! - Without a store a sleep is not durable (it sleeps in this process), and signals are
//!   refused at both ends (a run without a store cannot be reached from outside it; a
//!   `MemoryStore` gives one process signals).

mod keys;
mod receive;
mod send;
mod sleep;

pub(crate) use keys::WaitKeys;
pub(crate) use receive::receive;
pub(crate) use send::send;
pub use send::{SignalError, SignalReceipt};
pub(crate) use sleep::sleep;

/// What a durable wait needs of its run: its store, epoch and id, and the state waiting.
pub(crate) struct Waiter<'a> {
    /// The run's store and the epoch of its claim, when the run is durable.
    pub durable: Option<(std::sync::Arc<dyn crate::store::CheckpointStore>, u64)>,
    /// The run's id.
    pub run_id: &'a str,
    /// The wait's key (see `keys`).
    pub key: String,
    /// The state waiting, for events.
    pub state: Option<String>,
    /// The run: where its events go, and whether it is pausing.
    pub run: &'a crate::run::Run,
}

impl Waiter<'_> {
    fn emit(&self, kind: crate::events::EventKind) {
        if self.run.emitting() {
            self.run.emit(kind);
        }
    }

    /// A future ready when the run may have started pausing (see `Run::pause`), enabled
    /// now: check [`Waiter::pausing`] after making it, and a pause between is not missed.
    fn pause_notified(&self) -> std::pin::Pin<Box<tokio::sync::futures::Notified<'_>>> {
        let mut n = Box::pin(self.run.states.state_cancelled.notified());
        n.as_mut().enable();
        n
    }

    /// Whether a durable wait should leave now: the run is pausing (see the module docs).
    fn pausing(&self) -> bool {
        self.durable.is_some() && self.run.is_pausing()
    }
}

/// A store failure as a wait reports it.
fn store_failed(e: crate::store::StoreError) -> agent_core::WaitError {
    match e {
        crate::store::StoreError::Fenced { .. } => agent_core::WaitError::Fenced,
        e => agent_core::WaitError::Store { message: e.to_string() },
    }
}
