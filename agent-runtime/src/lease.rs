//! Ownership of durable runs on this process's side: who this process is ([`WorkerId`]),
//! which runs it holds right now (the registry), and giving a lease back when the future of
//! a run is dropped.
//!
//! Invariants:
//! - One worker id per process ([`WorkerId::current`]), made once from the host's name, the
//!   process id and a random part, so two processes never share one, even across restarts
//!   with a reused pid.
//! - A run id is in the registry from just before this process claims the run until its
//!   [`Hold`] is dropped (the run ended and gave its lease back, or its future was dropped).
//!   While it is there, no other run of this process claims it: [`reserve`] says no, and the
//!   caller reports `AgentError::Owned` without asking the store. So when the registry has no
//!   entry for a run, no run of this process holds it, and a claim may take over a live lease
//!   held by this process's own worker id (`ClaimRequest::reclaim`): it is left from a run
//!   whose future was dropped before the lease was given back.
//! - A [`Hold`] whose run was claimed and not given back releases the lease when dropped: a
//!   task spawned on the current tokio runtime releases it by epoch (harmless if another owner
//!   took the run since: the store refuses it). Without a runtime, the lease runs out.
//! - The registry holds weak references and each `Hold` removes its own entry when dropped,
//!   so it never grows beyond the runs held now.
//! - Releases in the background are counted while they are under way, so a process about to
//!   exit (the command line, after an interrupt dropped its run) can wait for them
//!   ([`given_back`]) instead of leaving leases to run out.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::{Arc, LazyLock, Mutex, OnceLock, PoisonError, Weak};

use crate::store::{CheckpointStore, StoreError};

/// Who owns a durable run: one process (a worker). Made of the host's name, the process id
/// and a random part, so that ids never repeat; shown in the store's run rows (`owner`) and
/// in [`AgentError::Owned`](agent_core::AgentError::Owned).
///
/// ```
/// use agent_runtime::WorkerId;
/// let me = WorkerId::current();
/// assert_eq!(me, WorkerId::current(), "one per process");
/// assert!(me.to_string().contains(&std::process::id().to_string()));
/// assert_ne!(WorkerId::generate(), WorkerId::generate());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct WorkerId(Arc<str>);

impl WorkerId {
    /// This process's worker id, made on first use.
    pub fn current() -> WorkerId {
        static CURRENT: OnceLock<WorkerId> = OnceLock::new();
        CURRENT.get_or_init(WorkerId::generate).clone()
    }

    /// A new worker id: `host-pid-random` (the host's name made safe for a column and a
    /// log line: letters, digits, `.`, `_` and `-` only).
    pub fn generate() -> WorkerId {
        let host = sysinfo::System::host_name().unwrap_or_default();
        let host: String = host
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
            .take(64)
            .collect();
        let host = if host.is_empty() { "host".to_owned() } else { host };
        WorkerId(format!("{host}-{}-{:08x}", std::process::id(), fastrand::u32(..)).into())
    }

    /// The id as text, as stores record it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WorkerId({})", self.0)
    }
}

/// Leases being given back in the background, and who waits for them to be done.
static RELEASING: LazyLock<(AtomicU64, tokio::sync::Notify)> = LazyLock::new(Default::default);

/// Wait until the leases being given back in the background (runs whose futures were
/// dropped) are given back, at most `patience`.
#[cfg_attr(not(feature = "cli"), allow(dead_code))]
pub(crate) async fn given_back(patience: std::time::Duration) {
    let wait = async {
        loop {
            let notified = RELEASING.1.notified();
            if RELEASING.0.load(Acquire) == 0 {
                return;
            }
            notified.await;
        }
    };
    let _ = tokio::time::timeout(patience, wait).await;
}

/// The runs this process holds or is claiming, by run id.
static HELD: LazyLock<Mutex<HashMap<String, Weak<Hold>>>> = LazyLock::new(Mutex::default);

fn held() -> std::sync::MutexGuard<'static, HashMap<String, Weak<Hold>>> {
    HELD.lock().unwrap_or_else(PoisonError::into_inner)
}

/// This process's hold on one run: in the registry while it lives; once the run is claimed
/// (`epoch` above 0), dropping it without [`Hold::release`] gives the lease back in the
/// background.
pub(crate) struct Hold {
    run_id: String,
    store: Arc<dyn CheckpointStore>,
    /// The epoch claimed; 0 until the claim succeeds.
    epoch: AtomicU64,
    /// The lease was given back (or is not to be: the run lost it).
    done: AtomicBool,
}

/// Put `run_id` in the registry for a claim by this process; `None` if a run of this
/// process holds it (or is claiming it) already.
pub(crate) fn reserve(run_id: &str, store: Arc<dyn CheckpointStore>) -> Option<Arc<Hold>> {
    let mut held = held();
    if held.get(run_id).is_some_and(|h| h.strong_count() > 0) {
        return None;
    }
    let hold =
        Arc::new(Hold { run_id: run_id.to_owned(), store, epoch: AtomicU64::new(0), done: AtomicBool::new(false) });
    held.insert(run_id.to_owned(), Arc::downgrade(&hold));
    Some(hold)
}

impl Hold {
    /// The claim succeeded at `epoch`.
    pub(crate) fn claimed(&self, epoch: u64) {
        self.epoch.store(epoch, Release);
    }

    /// Give the lease back now (the run is over, paused, or not going to run here).
    pub(crate) async fn release(&self) -> Result<(), StoreError> {
        let epoch = self.epoch.load(Acquire);
        if epoch == 0 || self.done.swap(true, AcqRel) {
            return Ok(());
        }
        self.store.release_run(&self.run_id, epoch).await
    }

    /// Do not give the lease back: the run lost it (another owner holds it now).
    pub(crate) fn forget(&self) {
        self.done.store(true, Release);
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        {
            let mut held = held();
            if held.get(&self.run_id).is_some_and(|w| std::ptr::eq(w.as_ptr(), self)) {
                held.remove(&self.run_id);
            }
        }
        let epoch = *self.epoch.get_mut();
        if epoch == 0 || *self.done.get_mut() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(run_id = %self.run_id, "no runtime to give the lease back on; it runs out instead");
            return;
        };
        let (store, run_id) = (self.store.clone(), std::mem::take(&mut self.run_id));
        RELEASING.0.fetch_add(1, AcqRel);
        runtime.spawn(async move {
            match store.release_run(&run_id, epoch).await {
                Ok(()) => tracing::debug!(%run_id, epoch, "lease given back after the run's future was dropped"),
                Err(e) => tracing::debug!(%run_id, epoch, error = %e, "could not give the lease back; it runs out"),
            }
            if RELEASING.0.fetch_sub(1, AcqRel) == 1 {
                RELEASING.1.notify_waiters();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[test]
    fn a_run_is_reserved_once_until_its_hold_is_dropped() {
        let store: Arc<dyn CheckpointStore> = Arc::new(MemoryStore::new());
        let id = format!("reserve-{}", fastrand::u64(..));
        let first = reserve(&id, store.clone()).expect("free");
        assert!(reserve(&id, store.clone()).is_none(), "held by the first");
        drop(first);
        let again = reserve(&id, store.clone()).expect("free again once dropped");
        drop(again);
        assert!(!held().contains_key(&id), "entries do not outlive their hold");
    }

    #[test]
    fn worker_ids_name_the_process_and_are_plain_text() {
        let id = WorkerId::generate();
        let text = id.to_string();
        assert!(text.contains(&format!("-{}-", std::process::id())), "{text}");
        assert!(text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')), "{text}");
        assert_eq!(id.as_str(), text);
    }
}
