//! What a paused run became: the run that resumed it.
//!
//! Invariants:
//! - A paused run is resumed at most once: whoever resumes it first claims it
//!   ([`Successor::claim`]), and only the claimant sets the successor, once.
//! - A claim whose resumed run could not be made is given back ([`Successor::release`]), so
//!   the paused run can be resumed again.
//! - Readers never lock: a handle follows the chain of successors from the run it started to
//!   the latest (one load per resume).

use std::sync::atomic::{AtomicBool, Ordering::AcqRel, Ordering::Release};
use std::sync::{Arc, OnceLock};

use super::Run;

/// See the module docs.
#[derive(Default)]
pub(crate) struct Successor {
    claimed: AtomicBool,
    next: OnceLock<Arc<Run>>,
}

impl Successor {
    /// Claim the right to resume this run; `false` if someone claimed it first.
    pub(crate) fn claim(&self) -> bool {
        !self.claimed.swap(true, AcqRel)
    }

    /// Give back a claim whose resumed run could not be made.
    pub(crate) fn release(&self) {
        self.claimed.store(false, Release);
    }

    /// The claimant's resumed run.
    pub(crate) fn set(&self, run: Arc<Run>) {
        let _ = self.next.set(run);
    }

    /// The run that resumed this one, if any.
    pub(crate) fn get(&self) -> Option<&Arc<Run>> {
        self.next.get()
    }
}

/// The latest run of the chain that starts at `run`: `run` itself unless it was resumed.
pub(crate) fn latest(run: &Arc<Run>) -> Arc<Run> {
    let mut at = run;
    while let Some(next) = at.successor.get() {
        at = next;
    }
    at.clone()
}
