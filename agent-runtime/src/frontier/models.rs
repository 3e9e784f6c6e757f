//! Model tests of the transition lock under loom, which runs each model in every
//! interleaving of its atomics, mutexes and yields (up to `LOOM_MAX_PREEMPTIONS` preemptions)
//! and checks every access to a `loom::cell::UnsafeCell` for a data race.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p agent-runtime --release
//! --no-default-features --lib frontier::models` (see `.ci/run`).
//!
//! What each model stands for:
//! - An `UnsafeCell` written by one side and read by the other stands for "the other side
//!   is not inside": loom fails the model if the two accesses are not ordered by the lock.
//! - Two counters moved in one transition stand for a token's position (it leaves one place
//!   and arrives at another); a checkpoint must see both moves or neither.
//! - A `loom::sync::Mutex` stands for a fan-out group's token lock, taken inside a transition
//!   and inside a checkpoint, in the order the module docs give.

use loom::cell::UnsafeCell;
use loom::sync::atomic::AtomicU32;
use loom::sync::{Arc, Mutex};
use loom::thread;

use super::TransitionLock;
use std::sync::atomic::Ordering::Relaxed;

/// Explore `f` with at most `preemptions` preemptions per execution, unless
/// `LOOM_MAX_PREEMPTIONS` says otherwise. Models of two threads take 2 (each runs in well
/// under a second), and so does the group-lock model (only one of its threads spins); the
/// other models of three threads take 1: their spin-waits (each `yield_now` a point where
/// loom tries every thread) make 2 run for many minutes.
fn model(preemptions: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(preemptions);
    }
    // The spin-waits make long but finite paths.
    builder.max_branches = builder.max_branches.max(100_000);
    builder.check(f);
}

#[test]
fn two_transitions_never_run_while_a_writer_writes() {
    model(1, || {
        let lock = Arc::new(TransitionLock::new());
        // Written only by the writer, read only by transitions: a race means they overlapped.
        let written = Arc::new(UnsafeCell::new(0u32));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (lock, written) = (lock.clone(), written.clone());
                thread::spawn(move || {
                    let _t = lock.enter();
                    written.with(|v| {
                        // SAFETY: not unsafe code of ours: loom checks this read against
                        // the writer's write and fails the model on a race.
                        let v = unsafe { *v };
                        assert!(v <= 1);
                    });
                })
            })
            .collect();
        {
            let _w = lock.write();
            // SAFETY: as above; loom checks the exclusion.
            written.with_mut(|v| unsafe { *v += 1 });
        }
        for r in readers {
            r.join().unwrap();
        }
    });
}

#[test]
fn a_writer_waits_until_an_entered_transition_leaves() {
    model(2, || {
        let lock = Arc::new(TransitionLock::new());
        // Written by the transition in two steps, read by the writer: the writer must see
        // neither step or both, and never race with them.
        let position = Arc::new(UnsafeCell::new((0u32, 0u32)));
        let transition = {
            let (lock, position) = (lock.clone(), position.clone());
            thread::spawn(move || {
                let _t = lock.enter();
                // SAFETY: loom checks these writes against the writer's read.
                position.with_mut(|p| unsafe { (*p).0 = 1 });
                thread::yield_now();
                // SAFETY: as above.
                position.with_mut(|p| unsafe { (*p).1 = 1 });
            })
        };
        {
            let _w = lock.write();
            // SAFETY: loom checks this read against the transition's writes.
            let (a, b) = position.with(|p| unsafe { *p });
            assert_eq!(a, b, "the writer saw half a transition");
        }
        transition.join().unwrap();
    });
}

#[test]
fn a_nested_enter_holds_the_writer_back_until_the_outer_one_leaves() {
    model(2, || {
        let lock = Arc::new(TransitionLock::new());
        let position = Arc::new(UnsafeCell::new(0u32));
        let transition = {
            let (lock, position) = (lock.clone(), position.clone());
            thread::spawn(move || {
                let _outer = lock.enter();
                drop(lock.enter());
                // Still inside the outer transition: the inner one's leaving let no writer in.
                // SAFETY: loom checks this write against the writer's read.
                position.with_mut(|p| unsafe { *p += 1 });
            })
        };
        {
            let _w = lock.write();
            // SAFETY: loom checks this read against the transition's write.
            let seen = position.with(|p| unsafe { *p });
            assert!(seen <= 1);
        }
        transition.join().unwrap();
        // Left completely: the writer gets in again, and the thread may enter again.
        drop(lock.write());
    });
}

#[test]
fn a_snapshot_sees_whole_transitions_of_concurrent_threads() {
    model(1, || {
        let lock = Arc::new(TransitionLock::new());
        // A token leaves `from` and arrives at `to` in one transition: `from + to` is constant.
        let from = Arc::new(AtomicU32::new(2));
        let to = Arc::new(AtomicU32::new(0));
        let moves: Vec<_> = (0..2)
            .map(|_| {
                let (lock, from, to) = (lock.clone(), from.clone(), to.clone());
                thread::spawn(move || {
                    let _t = lock.enter();
                    from.fetch_sub(1, Relaxed);
                    to.fetch_add(1, Relaxed);
                })
            })
            .collect();
        {
            let _w = lock.write();
            let (f, t) = (from.load(Relaxed), to.load(Relaxed));
            assert_eq!(f + t, 2, "the snapshot saw half a transition: from {f}, to {t}");
        }
        for m in moves {
            m.join().unwrap();
        }
        assert_eq!((from.load(Relaxed), to.load(Relaxed)), (0, 2));
    });
}

#[test]
fn writers_exclude_each_other() {
    model(2, || {
        let lock = Arc::new(TransitionLock::new());
        let written = Arc::new(UnsafeCell::new(0u32));
        let other = {
            let (lock, written) = (lock.clone(), written.clone());
            thread::spawn(move || {
                let _w = lock.write();
                // SAFETY: loom checks this write against the other writer's.
                written.with_mut(|v| unsafe { *v += 1 });
            })
        };
        {
            let _w = lock.write();
            // SAFETY: as above.
            written.with_mut(|v| unsafe { *v += 1 });
        }
        other.join().unwrap();
        // SAFETY: both writers are joined.
        assert_eq!(written.with(|v| unsafe { *v }), 2);
    });
}

#[test]
fn a_group_lock_under_the_transition_lock_neither_deadlocks_nor_tears() {
    model(2, || {
        let lock = Arc::new(TransitionLock::new());
        // A token at the top level fans out into a group: it leaves `at_top` (an atomic, as
        // `StateCounters::at_top`) and is counted running in the group (under its lock).
        let at_top = Arc::new(AtomicU32::new(1));
        let group = Arc::new(Mutex::new(0u32));
        let fan_out = {
            let (lock, at_top, group) = (lock.clone(), at_top.clone(), group.clone());
            thread::spawn(move || {
                let _t = lock.enter();
                *group.lock().unwrap() += 1;
                at_top.fetch_sub(1, Relaxed);
            })
        };
        // A branch of the group moves inside it: the group lock alone, no transition lock
        // (an event in a group that changes nothing outside it).
        let inside = {
            let group = group.clone();
            thread::spawn(move || {
                let mut g = group.lock().unwrap();
                let n = *g;
                *g = n;
            })
        };
        {
            // A checkpoint: the transition lock, then the group lock.
            let _w = lock.write();
            let running = *group.lock().unwrap();
            assert_eq!(at_top.load(Relaxed) + running, 1, "a token counted twice or lost");
        }
        fan_out.join().unwrap();
        inside.join().unwrap();
    });
}
