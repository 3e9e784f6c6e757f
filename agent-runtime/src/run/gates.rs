//! Dependency bookkeeping of one run: when each state last completed, the completions
//! `Always` dependencies used up, the gates waiting, and what tells a run that can no
//! longer move (see `exec::gate` for the rules that read and write it).
//!
//! Invariants:
//! - Nothing here acts on the run: it counts and answers (`branch_ended` and `go_idle` say
//!   which gates are idle when every live branch waits at one); `exec::gate` fails the run.
//! - Live branches are counted where they are made and where their `drive` returns; a gate
//!   counts as idle from its check until the next change ([`DepsState::notify`]), and the
//!   generation number of changes, taken with the wait under the same lock, keeps a gate
//!   that a change already woke from counting.
//! - Nearly free for a program without dependencies: no clock read, no per-state slot.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rustc_hash::FxHashMap;
use tokio::sync::futures::Notified;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Branches alive and gates idle (see the module docs).
#[derive(Default)]
struct Stall {
    /// Branches made and not yet ended.
    live: usize,
    /// States of the gates idle since the last change, one entry per gate.
    idle: Vec<usize>,
    /// Changes so far.
    generation: u64,
}

impl Stall {
    /// The idle gates' states, if every live branch waits at one.
    fn stalled(&self) -> Option<Vec<usize>> {
        (self.live > 0 && self.idle.len() >= self.live).then(|| self.idle.clone())
    }
}

/// A gate counted idle; uncounts it when its wait ends, unless a change already did.
pub(crate) struct Idle<'a> {
    deps: &'a DepsState,
    pos: usize,
    generation: Option<u64>,
}

impl Drop for Idle<'_> {
    fn drop(&mut self) {
        if let Some(generation) = self.generation {
            let mut stall = self.deps.stall();
            if stall.generation == generation {
                if let Some(i) = stall.idle.iter().position(|&p| p == self.pos) {
                    stall.idle.swap_remove(i);
                }
            }
        }
    }
}

/// A run's bookkeeping for dependencies.
pub(crate) struct DepsState {
    /// Notified when a state with dependents completes or fails, or (while a gate waits)
    /// when any state completes, so conditions on the context are checked again (through
    /// [`DepsState::notify`]).
    changed: Notify,
    /// Live branches and idle gates (see the module docs).
    stall: Mutex<Stall>,
    /// Gates waiting now.
    pub waiting: AtomicUsize,
    /// When the run started, for programs with dependencies (a clock read the others skip).
    epoch: Option<Instant>,
    /// Per state: 1 + nanoseconds from `epoch` to its last completion; 0 while none. Empty
    /// for programs without dependencies.
    last_completed: Box<[AtomicU64]>,
    /// Completions consumed by `Always` dependencies: (dependent, dependency slot) -> count.
    consumed: Mutex<FxHashMap<(usize, usize), u32>>,
}

impl DepsState {
    /// The bookkeeping of a run of `states` states; nearly free when `any` (some state has
    /// dependencies) is false.
    pub(crate) fn new(states: usize, any: bool) -> Self {
        let states = if any { states } else { 0 };
        DepsState {
            changed: Notify::new(),
            stall: Mutex::default(),
            waiting: AtomicUsize::new(0),
            epoch: any.then(Instant::now),
            last_completed: (0..states).map(|_| AtomicU64::new(0)).collect(),
            consumed: Mutex::new(FxHashMap::default()),
        }
    }

    fn stall(&self) -> MutexGuard<'_, Stall> {
        self.stall.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Something changed that a gate may wait on: wake every gate to look again.
    pub(crate) fn notify(&self) {
        let mut stall = self.stall();
        stall.generation += 1;
        stall.idle.clear();
        self.changed.notify_waiters();
    }

    /// A wait for the next change, and the number of changes so far, taken together.
    pub(crate) fn watch(&self) -> (Notified<'_>, u64) {
        let stall = self.stall();
        (self.changed.notified(), stall.generation)
    }

    /// `n` branches were made (counted only in programs with dependencies).
    pub(crate) fn branches_made(&self, n: usize) {
        self.stall().live += n;
    }

    /// A branch's `drive` returned: count it out; the idle gates if the run has stalled.
    pub(crate) fn branch_ended(&self) -> Option<Vec<usize>> {
        let mut stall = self.stall();
        stall.live = stall.live.saturating_sub(1);
        stall.stalled()
    }

    /// The gate of `pos`, which looked at generation `generation`, waits for another branch:
    /// count it idle unless a change came since; the idle gates if the run has stalled.
    pub(crate) fn go_idle(&self, pos: usize, generation: u64) -> (Idle<'_>, Option<Vec<usize>>) {
        let mut stall = self.stall();
        if stall.generation != generation {
            return (Idle { deps: self, pos, generation: None }, None);
        }
        stall.idle.push(pos);
        (Idle { deps: self, pos, generation: Some(generation) }, stall.stalled())
    }

    /// When `d` last completed, if it did in this run.
    pub(crate) fn last_completed(&self, d: usize) -> Option<Instant> {
        match (self.epoch, self.last_completed.get(d).map(|c| c.load(Relaxed))) {
            (Some(epoch), Some(n)) if n > 0 => Some(epoch + Duration::from_nanos(n - 1)),
            _ => None,
        }
    }

    /// Completions of dependency slot `j` of `x` used up by `x`'s earlier starts.
    pub(crate) fn consumed(&self, x: usize, j: usize) -> u32 {
        self.consumed.lock().unwrap_or_else(PoisonError::into_inner).get(&(x, j)).copied().unwrap_or(0)
    }

    /// State `x` starts: the completions counted for its `Always` slots are used up.
    pub(crate) fn consume(&self, x: usize, counts: impl Iterator<Item = (usize, u32)>) {
        let mut consumed = self.consumed.lock().unwrap_or_else(PoisonError::into_inner);
        for (j, n) in counts {
            consumed.insert((x, j), n);
        }
    }

    /// `d` completed now.
    pub(crate) fn record_completion(&self, d: usize) {
        if let (Some(epoch), Some(slot)) = (self.epoch, self.last_completed.get(d)) {
            let nanos = Instant::now().saturating_duration_since(epoch).as_nanos();
            slot.store(u64::try_from(nanos).unwrap_or(u64::MAX - 1) + 1, Relaxed);
        }
    }
}
