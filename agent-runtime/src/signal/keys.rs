//! The keys of a run's durable waits.
//!
//! A state activation's waits are told apart by their order: the `n`th wait it makes is
//! `{execution key}/{kind}/{n}`. The execution key names the activation across retries,
//! recoveries and take-overs (`Context::execution_key`), and a state run again makes its
//! waits in the same order, so its first sleep finds the wake time its first run armed.
//!
//! Invariants:
//! - One counter per state of the run, reset when the state's execution key changes (its
//!   next activation): memory is bounded by the workflow's states, not by its waits.
//! - Parallel branches running one state share its activation's key (as they share its
//!   execution key), and so one counter: their waits are numbered in the order they were
//!   made.

use std::sync::{Mutex, PoisonError};

use rustc_hash::FxHashMap;

/// A run's wait counters, by state (see the module docs).
#[derive(Default)]
pub(crate) struct WaitKeys {
    by_state: Mutex<FxHashMap<usize, (String, u32)>>,
}

impl WaitKeys {
    /// The key of the next wait of `kind` made by state `pos`, whose activation's execution
    /// key is `execution_key`.
    pub(crate) fn next(&self, pos: usize, execution_key: String, kind: &str) -> String {
        let mut map = self.by_state.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = map.entry(pos).or_insert_with(|| (execution_key.clone(), 0));
        if entry.0 != execution_key {
            *entry = (execution_key, 0);
        }
        entry.1 += 1;
        format!("{}/{kind}/{}", entry.0, entry.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_numbered_per_activation_in_order() {
        let keys = WaitKeys::default();
        assert_eq!(keys.next(0, "r/a/1".into(), "sleep"), "r/a/1/sleep/1");
        assert_eq!(keys.next(0, "r/a/1".into(), "signal"), "r/a/1/signal/2");
        assert_eq!(keys.next(1, "r/b/1".into(), "sleep"), "r/b/1/sleep/1", "states count apart");
        assert_eq!(keys.next(0, "r/a/2".into(), "sleep"), "r/a/2/sleep/1", "a new activation starts again");
        // A fresh process (a recovered run) numbers the same activation's waits the same.
        let again = WaitKeys::default();
        assert_eq!(again.next(0, "r/a/2".into(), "sleep"), "r/a/2/sleep/1");
    }
}
