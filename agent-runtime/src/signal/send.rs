//! Sending a signal: kept in the run's store, and the waits of this process woken.
//!
//! Invariants:
//! - A signal is checked (a name of 1 to `MAX_NAME` bytes, an id of at most `MAX_NAME`
//!   bytes, a payload that encodes) before anything is written; then the store keeps it in
//!   one transaction with its check of the run (see `store::signals`): unknown and finished
//!   runs are errors, a second send with one id keeps nothing and says so.
//! - Waits of this process register here by run id (`waiters`), whatever agent or store
//!   handle sent: a send wakes them at once; other processes' waits find it at their next
//!   look at the store.

use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

use agent_core::AgentStatus;
use rustc_hash::FxHashMap;
use tokio::sync::Notify;

use crate::store::{CheckpointStore, SignalRecord, SignalSent, StoreError};

/// The longest name or id a signal may have, in bytes.
pub(crate) const MAX_NAME: usize = 256;

/// Why a signal was not sent ([`Agent::signal`](crate::Agent::signal)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignalError {
    /// The store has no run with this id.
    #[error("no run `{run_id}` to signal")]
    UnknownRun {
        /// The id given.
        run_id: String,
    },
    /// The run is over: nothing will wait for a signal any more.
    #[error("run `{run_id}` is {status:?}: it takes no more signals")]
    Finished {
        /// The run.
        run_id: String,
        /// How it ended.
        status: AgentStatus,
    },
    /// The agent has no store: its runs cannot be reached from outside (see `with_store`;
    /// a `MemoryStore` takes signals from its own process).
    #[error("agent `{agent}` has no store, so its runs take no signals")]
    NoStore {
        /// The agent.
        agent: String,
    },
    /// The name or id is empty or too long, or the payload does not encode as JSON.
    #[error("signal `{name}` refused: {reason}")]
    Invalid {
        /// The signal's name (cut to its first 64 characters).
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A signal kept for its run ([`Agent::signal`](crate::Agent::signal)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SignalReceipt {
    /// Its id: the one given, or a new UUID.
    pub signal_id: String,
    /// The run already had a signal with this id, so nothing was kept this time.
    pub duplicate: bool,
}

/// Send the signal `name` with `payload` to run `run_id` through `store`, with the id
/// `id` (a new UUID when `None`); then wake this process's waits of the run.
pub(crate) async fn send(
    store: &dyn CheckpointStore,
    run_id: &str,
    name: &str,
    id: Option<&str>,
    payload: serde_json::Value,
) -> Result<SignalReceipt, SignalError> {
    let invalid = |reason: String| SignalError::Invalid { name: name.chars().take(64).collect(), reason };
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(invalid(format!("a name is 1 to {MAX_NAME} bytes, this one {}", name.len())));
    }
    if let Some(id) = id.filter(|id| id.is_empty() || id.len() > MAX_NAME) {
        return Err(invalid(format!("an id is 1 to {MAX_NAME} bytes, this one {}", id.len())));
    }
    let signal_id = id.map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    let payload = serde_json::to_string(&payload).map_err(|e| invalid(e.to_string()))?;
    let record = SignalRecord::new(run_id, signal_id.as_str(), name, payload, crate::clock::now_ms());
    let duplicate = match store.send_signal(&record).await? {
        SignalSent::Kept => false,
        SignalSent::Duplicate => true,
        SignalSent::UnknownRun => return Err(SignalError::UnknownRun { run_id: run_id.to_owned() }),
        SignalSent::Finished(status) => return Err(SignalError::Finished { run_id: run_id.to_owned(), status }),
    };
    tracing::info!(run_id, name, id = %signal_id, duplicate, "signal sent");
    wake_waiters(run_id);
    Ok(SignalReceipt { signal_id, duplicate })
}

type Registry = Mutex<FxHashMap<String, Weak<Notify>>>;

fn registry() -> &'static Registry {
    static WAITERS: OnceLock<Registry> = OnceLock::new();
    WAITERS.get_or_init(Registry::default)
}

/// Wake this process's waits on run `run_id`, if any.
pub(crate) fn wake_waiters(run_id: &str) {
    let notify = registry().lock().unwrap_or_else(PoisonError::into_inner).get(run_id).and_then(Weak::upgrade);
    if let Some(notify) = notify {
        notify.notify_waiters();
    }
}

/// A wait's registration for run `run_id`'s sends: the run's `Notify`, shared by its waits;
/// the entry goes when the last of them does.
pub(crate) struct Waiters {
    run_id: String,
    notify: Arc<Notify>,
}

impl std::ops::Deref for Waiters {
    type Target = Notify;
    fn deref(&self) -> &Notify {
        &self.notify
    }
}

impl Drop for Waiters {
    fn drop(&mut self) {
        let mut map = registry().lock().unwrap_or_else(PoisonError::into_inner);
        // The map holds it weakly: under the lock, no other wait holds it when this is the
        // last strong reference, and none can take one.
        if Arc::strong_count(&self.notify) == 1 {
            map.remove(&self.run_id);
        }
    }
}

/// Register a wait on run `run_id` (see [`Waiters`]).
pub(crate) fn waiters(run_id: &str) -> Waiters {
    let mut map = registry().lock().unwrap_or_else(PoisonError::into_inner);
    let notify = match map.get(run_id).and_then(Weak::upgrade) {
        Some(n) => n,
        None => {
            let n = Arc::new(Notify::new());
            map.insert(run_id.to_owned(), Arc::downgrade(&n));
            n
        }
    };
    Waiters { run_id: run_id.to_owned(), notify }
}
