//! Where a run's tokens stand, as far as the run itself keeps it: the root task's position
//! and the fan-out groups it opened. Tokens at the top level outside the root slot are
//! counted per state (`StateCounters::at_top`); tokens inside groups by their group
//! (`run::groups`). See `frontier` for how a checkpoint reads all of it consistently.
//!
//! Invariants:
//! - The root slot holds the root task's position while it moves alone at the top level,
//!   and `NO_STATE` otherwise; it is written by the root task only (one store per
//!   transition, no lock).
//! - Every group opened is registered (closed ones are pruned now and then), so a group
//!   whose branches all wait, or were never started because the run stopped, is still seen
//!   by a checkpoint.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use super::Group;

/// The root slot when the root task holds no position.
pub(crate) const NO_STATE: u32 = u32::MAX;

/// See the module docs.
pub(crate) struct Positions {
    root: AtomicU32,
    groups: Mutex<Vec<Arc<Group>>>,
}

impl Positions {
    pub(crate) fn new() -> Positions {
        Positions { root: AtomicU32::new(NO_STATE), groups: Mutex::new(Vec::new()) }
    }

    /// The root task's position, or `NO_STATE`.
    #[inline]
    pub(crate) fn root(&self) -> u32 {
        self.root.load(Relaxed)
    }

    /// The root task stands at `state` (`NO_STATE`: it holds no position any more).
    #[inline]
    pub(crate) fn set_root(&self, state: u32) {
        self.root.store(state, Relaxed);
    }

    /// Remember a newly opened group for checkpoints.
    pub(crate) fn register_group(&self, group: &Arc<Group>) {
        let mut groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        if groups.len() >= 64 && groups.len().is_power_of_two() {
            groups.retain(|g| !g.is_closed());
        }
        groups.push(group.clone());
    }

    /// Every group registered (open ones, and closed ones not pruned yet).
    pub(crate) fn groups(&self) -> Vec<Arc<Group>> {
        self.groups.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}
