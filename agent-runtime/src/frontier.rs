//! Where every token of a run stands, readable at any instant for a checkpoint.
//!
//! Positions are published, not reported on request, so that `Agent::create_checkpoint`
//! (a plain function) never waits for a branch:
//! - the root task, while only moving from state to state at the top level, keeps its
//!   position in `Run::root_slot` (one store per transition, no lock): the chain's path;
//! - every other token at the top level is counted in `StateCounters::at_top`;
//! - tokens inside fan-out groups are counted by the group (`run::groups`);
//! - a token whose branch fanned out stays counted at the fan-out state (at the top or in
//!   its group) until its child group is over; the child group stands for it.
//!
//! A transition that changes more than the root slot happens inside
//! [`TransitionLock::enter`]; a checkpoint reads the positions inside
//! [`TransitionLock::write`], so it never sees half a transition. The lock is a "big
//! reader" lock: transitions on different threads touch different cache lines (one shard
//! per thread), and only a checkpoint makes them wait, for as long as it reads the
//! positions (not the context). There is one lock per process, [`TRANSITIONS`], not one
//! per run: a run then costs nothing to set up (the shards are 2 KiB), and a checkpoint
//! holds back the transitions of the process's other runs only for that short read.
//!
//! A state's completion is counted inside the transition that moves its token on (`drive`
//! enters before it settles the outcome), so a checkpoint never reads a state counted
//! completed whose token still stands at it: restored, such a state would run again and be
//! counted twice. The exception is a plain (not durable) run's root chain, which takes no
//! lock on its path: a checkpoint taken from another thread in the middle of one of its
//! steps may do just that (nothing captures such a run by itself).
//!
//! Invariants:
//! - No `.await` while entered (a transition is synchronous code), so an entered thread
//!   leaves before it runs anything else, and entering again on the same thread nests.
//! - Writers exclude each other; while one writes, no transition is half done.
//! - A thread's nesting depth is counted per thread, not per lock: there is one lock in the
//!   process (tests make their own, but never nest two different ones on one thread).
//!
//! Lock order (a thread only ever takes a lock further down the list than those it holds):
//! 1. [`TRANSITIONS`]: either entered (shared; nests on one thread) or written (exclusive:
//!    its `writers` mutex, then the `writing` flag, then the wait for every shard to drain).
//!    A thread that is entered never writes (it would wait for its own shard forever), and a
//!    writer never enters.
//! 2. `Run::groups`, the list of a run's fan-out groups: taken briefly (alone, or while
//!    entered) to register a group a fan-out opens, and by a checkpoint while it writes, to
//!    copy the list; nothing else is taken while it is held.
//! 3. One group's token lock (`run::groups`): held for one group at a time; an event moving up to
//!    the parent group drops the child's lock before it takes the parent's, and a checkpoint
//!    reads the groups one after the other.
//!
//! Nothing is awaited while any of them is held. The model tests (`frontier/models.rs`, run by
//! `.ci/run` with `--cfg loom`) check the first lock and its interplay with a group lock.

use std::cell::Cell;
use std::sync::atomic::Ordering::*;
use std::sync::PoisonError;

use crossbeam_utils::CachePadded;

use crate::sync::{handshake_fence, yield_now, AtomicBool, AtomicU32, AtomicUsize, Mutex, MutexGuard};

/// Shards of the reader count; fewer under loom, so that its models stay small (two readers
/// still get shards of their own, a third shares one).
const SHARDS: usize = if cfg!(loom) { 2 } else { 16 };

#[cfg(not(loom))]
thread_local! {
    /// This thread's shard, and how deeply it has entered (transitions nest when one
    /// activates a dependency, which is a transition too).
    static LOCAL: Cell<(u8, u32)> = const { Cell::new((u8::MAX, 0)) };
}

#[cfg(loom)]
::loom::thread_local! {
    /// As without loom, per loom thread.
    static LOCAL: Cell<(u8, u32)> = Cell::new((u8::MAX, 0));
}

fn local() -> (u8, u32) {
    LOCAL.with(Cell::get)
}

fn set_local(v: (u8, u32)) {
    LOCAL.with(|l| l.set(v))
}

#[cfg(not(loom))]
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

/// The process's transition lock (see the module docs).
#[cfg(not(loom))]
pub(crate) static TRANSITIONS: TransitionLock = TransitionLock::new();

#[cfg(loom)]
::loom::lazy_static! {
    static ref NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);
    /// The process's transition lock (see the module docs).
    pub(crate) static ref TRANSITIONS: TransitionLock = TransitionLock::new();
}

/// See the module docs.
pub(crate) struct TransitionLock {
    shards: [CachePadded<AtomicU32>; SHARDS],
    writing: CachePadded<AtomicBool>,
    writers: Mutex<()>,
}

/// Proof that this thread is inside a transition; leaves on drop.
pub(crate) struct Entered<'a> {
    lock: &'a TransitionLock,
    shard: u8,
}

/// Held while a checkpoint reads positions.
pub(crate) struct Written<'a> {
    lock: &'a TransitionLock,
    _one: MutexGuard<'a, ()>,
}

impl TransitionLock {
    #[cfg(not(loom))]
    const fn new() -> Self {
        TransitionLock {
            shards: [const { CachePadded::new(AtomicU32::new(0)) }; SHARDS],
            writing: CachePadded::new(AtomicBool::new(false)),
            writers: Mutex::new(()),
        }
    }

    /// Under loom, built at run time (loom's primitives are not `const`).
    #[cfg(loom)]
    pub(crate) fn new() -> Self {
        TransitionLock {
            shards: std::array::from_fn(|_| CachePadded::new(AtomicU32::new(0))),
            writing: CachePadded::new(AtomicBool::new(false)),
            writers: Mutex::new(()),
        }
    }

    /// Enter a transition: waits only while a checkpoint reads positions.
    #[inline]
    pub(crate) fn enter(&self) -> Entered<'_> {
        let (mut shard, depth) = local();
        if depth > 0 {
            set_local((shard, depth + 1));
            return Entered { lock: self, shard };
        }
        if shard == u8::MAX {
            shard = (NEXT_SHARD.fetch_add(1, Relaxed) % SHARDS) as u8;
        }
        let s = &self.shards[shard as usize];
        loop {
            // Dekker's pattern with `write`: the increment and the writer's flag are both
            // sequentially consistent, so at least one of the two sees the other.
            s.fetch_add(1, SeqCst);
            handshake_fence();
            if !self.writing.load(SeqCst) {
                break;
            }
            s.fetch_sub(1, Release);
            while self.writing.load(Acquire) {
                yield_now();
            }
        }
        set_local((shard, 1));
        Entered { lock: self, shard }
    }

    /// Wait until no transition is half done, and hold new ones back until dropped.
    pub(crate) fn write(&self) -> Written<'_> {
        let one = self.writers.lock().unwrap_or_else(PoisonError::into_inner);
        self.writing.store(true, SeqCst);
        handshake_fence();
        for s in &self.shards {
            while s.load(SeqCst) != 0 {
                yield_now();
            }
        }
        Written { lock: self, _one: one }
    }
}

impl Drop for Entered<'_> {
    #[inline]
    fn drop(&mut self) {
        let (shard, depth) = local();
        set_local((shard, depth - 1));
        if depth == 1 {
            self.lock.shards[self.shard as usize].fetch_sub(1, Release);
        }
    }
}

impl Drop for Written<'_> {
    fn drop(&mut self) {
        self.lock.writing.store(false, Release);
    }
}

#[cfg(all(test, loom))]
#[allow(unsafe_code)]
mod models;

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn entering_nests_and_a_writer_waits_for_transitions() {
        let lock = Arc::new(TransitionLock::new());
        {
            let _a = lock.enter();
            let _b = lock.enter();
        }
        // Both left: a writer gets in at once.
        drop(lock.write());
        // A transition on another thread holds the writer back until it leaves.
        let entered = Arc::new(AtomicBool::new(false));
        let leave = Arc::new(AtomicBool::new(false));
        let t = {
            let (lock, entered, leave) = (lock.clone(), entered.clone(), leave.clone());
            std::thread::spawn(move || {
                let _e = lock.enter();
                entered.store(true, SeqCst);
                while !leave.load(SeqCst) {
                    std::thread::yield_now();
                }
            })
        };
        while !entered.load(SeqCst) {
            std::thread::yield_now();
        }
        let written = Arc::new(AtomicBool::new(false));
        let w = {
            let (lock, written) = (lock.clone(), written.clone());
            std::thread::spawn(move || {
                let _w = lock.write();
                written.store(true, SeqCst);
            })
        };
        for _ in 0..1000 {
            std::thread::yield_now();
        }
        assert!(!written.load(SeqCst), "the writer got in during a transition");
        leave.store(true, SeqCst);
        t.join().unwrap();
        w.join().unwrap();
        assert!(written.load(SeqCst));
    }
}
