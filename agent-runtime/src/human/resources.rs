//! A state waiting for a person holds no resources.
//!
//! `exec::attempt::body` runs the body of a state that holds resources inside
//! [`with_resources`], which keeps the state's guard in a task-local slot (next to the
//! allocation `ctx.allocation()` reads) instead of on the body's stack. A request for input
//! made inside that scope takes the guard out and drops it (the pool admits others at
//! once), and before returning asks the pool again for the same request, waiting in its
//! queue like anyone at the state's priority.
//!
//! Invariants:
//! - States without resources never enter this module: their path is untouched. Nor do
//!   `blocking` states: their body runs on a thread of its own, and keeps its resources while
//!   it waits for a person.
//! - The slot is released when the body ends or its future is dropped (completion, error,
//!   panic, timeout, cancellation, preemption), like the guard it replaces.
//! - Several requests of one state at once (`join!` inside a state) release once, when the
//!   first starts waiting, and take the resources back once, when the last is answered.
//! - Preemption keeps working after a re-acquisition: when the pool preempts the new
//!   allocation, the token the attempt watches (the first allocation's) is cancelled, by a
//!   small task that lives as long as the new allocation.
//! - `ctx.allocation()` keeps reporting the allocation granted when the state started: the
//!   amounts are the same after a re-acquisition, but GPU device ids may differ.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use agent_core::__private::with_allocation;
use agent_core::ResourceError;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::pool::ledger::Request;
use crate::pool::{ResourceGuard, ResourcePool};

tokio::task_local! {
    static HELD: Arc<Held>;
}

/// What the state of this scope holds, and how to ask for it again.
struct Held {
    pool: ResourcePool,
    request: Request,
    /// The run asking (its requests are withdrawn when it stops).
    asker: Arc<dyn crate::pool::Asker + Send>,
    /// The preemption token the attempt watches (that of the first allocation).
    watched: Option<CancellationToken>,
    slot: Mutex<Slot>,
}

#[derive(Default)]
struct Slot {
    holding: Option<Holding>,
    /// Requests for input of this scope waiting now.
    askers: usize,
}

/// An allocation held, and (after a re-acquisition) the forwarding of its preemption.
struct Holding {
    _guard: ResourceGuard,
    _forward: Option<DropGuard>,
}

impl Held {
    fn slot(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Run `body` holding `guard`, so that a request for input inside it can give the
/// resources back while it waits. Releases them when `body` ends.
pub(crate) async fn with_resources<F: Future>(
    guard: ResourceGuard,
    pool: &ResourcePool,
    request: &Request,
    asker: Arc<dyn crate::pool::Asker + Send>,
    body: F,
) -> F::Output {
    let allocation = guard.allocation.clone();
    let held = Arc::new(Held {
        pool: pool.clone(),
        request: request.clone(),
        asker,
        watched: guard.preempted.clone(),
        slot: Mutex::new(Slot { holding: Some(Holding { _guard: guard, _forward: None }), askers: 0 }),
    });
    let outcome = HELD.scope(held.clone(), with_allocation(allocation, body)).await;
    let holding = held.slot().holding.take();
    drop(holding);
    outcome
}

/// Resources given back while a request waits; take them again with
/// [`Released::reacquire`].
pub(crate) struct Released {
    held: Arc<Held>,
    /// Whether `reacquire` ran (if not, the count is corrected on drop).
    done: bool,
}

/// Give back what the calling state holds, if it holds anything (and it is not given back
/// already by another request of the same state).
pub(crate) fn release() -> Option<Released> {
    let held = HELD.try_with(Arc::clone).ok()?;
    let holding = {
        let mut slot = held.slot();
        slot.askers += 1;
        slot.holding.take()
    };
    if holding.is_some() {
        tracing::debug!(state = &*held.request.state, "resources released while waiting for input");
    }
    // Dropped outside the lock: the pool admits waiters now.
    drop(holding);
    Some(Released { held, done: false })
}

impl Released {
    /// Take the resources again, once no other request of the state is waiting.
    pub(crate) async fn reacquire(mut self) -> Result<(), ResourceError> {
        self.done = true;
        let last = {
            let mut slot = self.held.slot();
            slot.askers -= 1;
            slot.askers == 0 && slot.holding.is_none()
        };
        if !last {
            return Ok(());
        }
        let held = &self.held;
        let guard = held.pool.acquire(held.request.clone(), &*held.asker).await?;
        let forward = match (&guard.preempted, &held.watched) {
            (Some(new), Some(watched)) => Some(forward_preemption(new.clone(), watched.clone())),
            _ => None,
        };
        let holding = Holding { _guard: guard, _forward: forward };
        let mut slot = held.slot();
        if slot.askers == 0 && slot.holding.is_none() {
            slot.holding = Some(holding);
            tracing::debug!(state = &*held.request.state, "resources taken back after input");
        } else {
            // Another request started waiting meanwhile: it holds nothing, nor does this.
            drop(slot);
            drop(holding);
        }
        Ok(())
    }
}

impl Drop for Released {
    fn drop(&mut self) {
        if !self.done {
            let mut slot = self.held.slot();
            slot.askers = slot.askers.saturating_sub(1);
        }
    }
}

/// Cancel `watched` when `new` is (the pool preempts the re-acquired allocation), until the
/// returned guard is dropped with that allocation.
fn forward_preemption(new: CancellationToken, watched: CancellationToken) -> DropGuard {
    let stop = CancellationToken::new();
    let guard = stop.clone().drop_guard();
    tokio::spawn(async move {
        tokio::select! {
            () = new.cancelled() => watched.cancel(),
            () = stop.cancelled() => {}
        }
    });
    guard
}
