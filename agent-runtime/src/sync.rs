//! The synchronisation primitives of the frontier lock, swapped for `loom`'s when the crate
//! is built with `--cfg loom`, so its model tests explore every interleaving of them.
//!
//! Invariants:
//! - Without `cfg(loom)` every name here is exactly the `std` item: no wrapper, no cost
//!   ([`handshake_fence`] is empty).
//! - Code that uses these names must not need `const` construction under `cfg(loom)`
//!   (loom's primitives are built at run time, once per explored execution).

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize};
#[cfg(not(loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::thread::yield_now;

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize};
#[cfg(loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};
#[cfg(loom)]
pub(crate) use loom::thread::yield_now;

/// Between the two halves of a Dekker-style handshake made of `SeqCst` accesses (a store,
/// then a load of another atomic): nothing without loom, a `SeqCst` fence under loom.
///
/// The `SeqCst` accesses alone order the handshake (they are in one total order, so of two
/// threads that each store then load the other's atomic, at least one sees the other's
/// store). Loom models `SeqCst` accesses as only acquire/release, which would let both miss
/// each other; it does model `SeqCst` fences, and a fence between the halves on both sides
/// gives the same guarantee, so the model checks the handshake as the hardware runs it.
#[inline(always)]
pub(crate) fn handshake_fence() {
    #[cfg(loom)]
    loom::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
}
