//! Where a run reports: its id, its events, its timings, its store, and what it shares
//! with its agent.
//!
//! Invariants:
//! - Nothing here changes what the run does: a sink only records or tells. A run nobody
//!   watches pays one relaxed load per state for all of them ([`Sinks::watched`]).
//! - The run's id is made when first asked for (a run nobody asks about pays no random
//!   number); once made, or set for a restored run, it never changes.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};

use rustc_hash::FxHashSet;

use crate::events::{EventHub, EventKind};
use crate::human::InputHub;
use crate::timing::Timings;

/// What a run shares with its agent, behind one reference count: a run takes one (a locked
/// instruction each way), where three separate `Arc`s cost three. The agent holds it too,
/// and reaches its hubs through it.
pub(crate) struct Links {
    /// Names of states whose completion counts forever (`Once` dependencies).
    pub once: Mutex<FxHashSet<String>>,
    /// The agent's requests for human input, which checkpoints carry.
    pub inputs: Arc<InputHub>,
    /// The agent's event channel (see `events`).
    pub events: Arc<EventHub>,
}

impl Links {
    /// An agent's: no `Once` completion yet, hubs with no request and no subscriber.
    pub(crate) fn new() -> Links {
        Links { once: Mutex::default(), inputs: InputHub::new(), events: EventHub::new() }
    }
}

/// A run's store, as the run sees it (`durable` implements it): the run asks it to record,
/// and waits for it before a state's successors start.
pub(crate) trait Recorder: Send + Sync {
    /// Wait until a snapshot taken after this call is committed; `false` if the store
    /// failed (the run is then failing) or is gone (the run is over).
    fn sync(&self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>>;
    /// Ask for a snapshot without waiting for it (the run changed without a completion).
    fn nudge(&self);
    /// The epoch of the run's claim of itself in the store: what its other writes (requests
    /// for input, the answers it consumes) carry so that a run taken over writes nothing.
    fn epoch(&self) -> u64;
    /// The run is about to pause to be handed over (a worker draining): record it as a
    /// running run nobody owns, for another worker to go on with, not as paused.
    fn hand_over(&self) {}
    /// The store the run records itself in (a child run it starts records itself there).
    fn store(&self) -> Arc<dyn crate::store::CheckpointStore>;
    /// The length of the run's lease (a child run it starts takes the same, unless set).
    fn lease_ttl(&self) -> std::time::Duration;
}

/// See the module docs.
pub(crate) struct Sinks {
    run_id: OnceLock<String>,
    /// The run's id as events carry it, made at the first event.
    event_run_id: OnceLock<Arc<str>>,
    /// The run's id as its requests for human input carry it, made at the first request
    /// (see `human::wait`).
    pub input_id: OnceLock<Arc<str>>,
    /// What the run shares with its agent.
    pub links: Arc<Links>,
    /// The store a durable run records itself in (see `durable`).
    pub durable: Option<Arc<dyn Recorder>>,
    /// Per-state timings, when recorded (see `timing`).
    pub timing: Option<Timings>,
    /// The keys of the run's durable waits (see `signal::keys`).
    pub waits: crate::signal::WaitKeys,
}

impl Sinks {
    /// A run's sinks: its agent's `links`, no store, no timings.
    pub(crate) fn new(links: Arc<Links>) -> Sinks {
        Sinks {
            run_id: OnceLock::new(),
            event_run_id: OnceLock::new(),
            input_id: OnceLock::new(),
            links,
            durable: None,
            timing: None,
            waits: crate::signal::WaitKeys::default(),
        }
    }

    /// Whether someone subscribed to events: one relaxed load (see `events`).
    #[inline(always)]
    pub(crate) fn emitting(&self) -> bool {
        self.links.events.active()
    }

    /// Send an event (call only when [`Sinks::emitting`], so nothing is built otherwise).
    #[cold]
    #[inline(never)]
    pub(crate) fn emit(&self, kind: EventKind) {
        self.links.events.send(self.event_run_id.get_or_init(|| Arc::from(self.run_id())).clone(), kind);
    }

    /// Whether anything watches states start and end (events or timings).
    #[inline(always)]
    pub(crate) fn watched(&self) -> bool {
        self.timing.is_some() || self.emitting()
    }

    /// Continue the run `run_id` (a restored one) instead of a new one.
    pub(crate) fn set_run_id(&self, run_id: String) {
        let _ = self.run_id.set(run_id);
    }

    /// The run's id (a UUID v4), formatted on first use.
    pub(crate) fn run_id(&self) -> &str {
        self.run_id.get_or_init(|| uuid::Uuid::new_v4().to_string())
    }

    /// The run's id if it was made (or set): a run nobody asked about has none, and nothing
    /// outside it can have heard of it.
    pub(crate) fn made_run_id(&self) -> Option<&str> {
        self.run_id.get().map(String::as_str)
    }
}
