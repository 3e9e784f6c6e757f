//! [`StateFuture`]: the boxed future of one state run, with its memory recycled per thread.
//!
//! A chain runs one state after another in one task, so it allocates one future and frees it
//! at every transition. Through the global allocator that pair costs as much as the rest of a
//! transition; here a freed block is kept in a one-block cache of the thread for its size
//! class, and the next state of the same size class on that thread takes it back.
//!
//! Invariants:
//! - A future of at most [`LARGEST_CLASS`] bytes and alignment at most [`BLOCK_ALIGN`] lives in a
//!   block of its size class (64, 128 or 256 bytes, aligned to `BLOCK_ALIGN`); any other
//!   future gets exactly its own layout from the global allocator; a zero-sized one none.
//!   Allocation and release decide the class from the same layout (`Layout::for_value` of the
//!   erased future equals `Layout::new` of the concrete one), so a block is always freed
//!   with the layout it was allocated with.
//! - Each thread caches at most one block per class; the cache frees its blocks when the
//!   thread exits. During thread teardown (cache gone) blocks go straight to the allocator.
//! - The future never moves once written: the `StateFuture` handle moves, the block does not,
//!   which is what makes `poll` through `Pin::new_unchecked` sound.
//! - This is the crate's only module with `unsafe` code; every `unsafe` block says why it is
//!   sound (`// SAFETY:`), and `cargo miri test -p agent-core --lib future::` runs the tests
//!   below under Miri.
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

use std::alloc::{self, Layout};
use std::cell::Cell;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context as TaskContext, Poll};

use crate::result::{BoxError, StateResult};

/// What a state run yields: its transition, or the error it failed with.
pub type StateOutcome = Result<StateResult, BoxError>;

/// The alignment of every pooled block.
const BLOCK_ALIGN: usize = 16;
/// Block sizes of the classes, smallest first.
const CLASSES: [usize; 3] = [64, 128, 256];
/// The largest future that is pooled.
const LARGEST_CLASS: usize = CLASSES[CLASSES.len() - 1];

/// The class of a layout, or `None` when it goes to the global allocator unpooled.
#[inline]
fn class_of(layout: Layout) -> Option<usize> {
    if layout.size() == 0 || layout.size() > LARGEST_CLASS || layout.align() > BLOCK_ALIGN {
        return None;
    }
    Some(CLASSES.iter().position(|&c| layout.size() <= c).unwrap_or(CLASSES.len() - 1))
}

#[inline]
fn block_layout(class: usize) -> Layout {
    // Cannot fail: the sizes are small multiples of the alignment, a power of two.
    Layout::from_size_align(CLASSES[class], BLOCK_ALIGN).unwrap_or_else(|_| unreachable!())
}

/// One spare block per class, kept by each thread.
struct Spare([Cell<Option<NonNull<u8>>>; CLASSES.len()]);

impl Drop for Spare {
    fn drop(&mut self) {
        for (class, slot) in self.0.iter().enumerate() {
            if let Some(block) = slot.take() {
                // SAFETY: every cached block was allocated with `block_layout(class)`.
                unsafe { alloc::dealloc(block.as_ptr(), block_layout(class)) };
            }
        }
    }
}

thread_local! {
    static SPARE: Spare = const { Spare([const { Cell::new(None) }; CLASSES.len()]) };
}

fn take_block(class: usize) -> NonNull<u8> {
    if let Ok(Some(block)) = SPARE.try_with(|s| s.0[class].take()) {
        return block;
    }
    let layout = block_layout(class);
    // SAFETY: the layout has a non-zero size.
    NonNull::new(unsafe { alloc::alloc(layout) }).unwrap_or_else(|| alloc::handle_alloc_error(layout))
}

/// # Safety
/// `block` was allocated with `block_layout(class)` and nothing uses it any more.
unsafe fn give_block(block: NonNull<u8>, class: usize) {
    let kept = SPARE.try_with(|s| match s.0[class].get() {
        None => {
            s.0[class].set(Some(block));
            true
        }
        Some(_) => false,
    });
    if kept != Ok(true) {
        // SAFETY: by this function's contract.
        unsafe { alloc::dealloc(block.as_ptr(), block_layout(class)) };
    }
}

/// The future a state returns, normalised and type-erased; it may borrow the context it was
/// given. Like `Pin<Box<dyn Future + Send>>`, with its memory reused from state to state.
///
/// ```
/// use agent_core::{StateFuture, StateResult};
///
/// let fut = StateFuture::new(async { Ok(StateResult::End) });
/// # let _ = fut;
/// ```
pub struct StateFuture<'a> {
    future: NonNull<dyn Future<Output = StateOutcome> + Send + 'a>,
    /// Owns a `dyn Future + Send + 'a` (drop check, variance and auto traits follow it).
    _owns: PhantomData<Box<dyn Future<Output = StateOutcome> + Send + 'a>>,
}

// SAFETY: the erased future is `Send`, and a `StateFuture` owns it exclusively.
unsafe impl Send for StateFuture<'_> {}

impl<'a> StateFuture<'a> {
    /// Erase `future`, placing it in a recycled block when it is small.
    #[inline]
    pub fn new<F>(future: F) -> StateFuture<'a>
    where
        F: Future<Output = StateOutcome> + Send + 'a,
    {
        let layout = Layout::new::<F>();
        let raw: *mut F = match class_of(layout) {
            Some(class) => take_block(class).as_ptr().cast(),
            None if layout.size() == 0 => NonNull::<F>::dangling().as_ptr(),
            None => {
                // SAFETY: the layout has a non-zero size.
                let p = unsafe { alloc::alloc(layout) };
                if p.is_null() {
                    alloc::handle_alloc_error(layout);
                }
                p.cast()
            }
        };
        // SAFETY: `raw` is valid for writes of `F` and aligned for it (a block's alignment
        // covers every pooled `F`; otherwise the layout is `F`'s own).
        unsafe { raw.write(future) };
        let erased: *mut (dyn Future<Output = StateOutcome> + Send + 'a) = raw;
        // SAFETY: `raw` is non-null (a block, an allocation, or dangling for a ZST).
        StateFuture { future: unsafe { NonNull::new_unchecked(erased) }, _owns: PhantomData }
    }
}

impl Future for StateFuture<'_> {
    type Output = StateOutcome;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<StateOutcome> {
        // SAFETY: the future is owned by `self`, valid until `drop`, and never moved out of
        // its block (module invariant), so pinning it is sound.
        unsafe { Pin::new_unchecked(self.get_mut().future.as_mut()) }.poll(cx)
    }
}

impl Drop for StateFuture<'_> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: the future is valid until the `drop_in_place` below.
        let layout = Layout::for_value(unsafe { self.future.as_ref() });
        // SAFETY: the future is valid until here and dropped exactly once (this is the
        // handle's only drop, and nothing else owns the future).
        unsafe { std::ptr::drop_in_place(self.future.as_ptr()) };
        let block = self.future.cast::<u8>();
        match class_of(layout) {
            // SAFETY: `new` took this block for the same class; its content is dropped.
            Some(class) => unsafe { give_block(block, class) },
            None if layout.size() == 0 => {}
            // SAFETY: `new` allocated exactly this layout.
            None => unsafe { alloc::dealloc(block.as_ptr(), layout) },
        }
    }
}

impl std::fmt::Debug for StateFuture<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateFuture").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn block_on<F: Future>(f: F) -> F::Output {
        let waker = std::task::Waker::noop();
        let mut cx = TaskContext::from_waker(waker);
        let mut f = std::pin::pin!(f);
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }

    struct CountDrop(Arc<AtomicUsize>);
    impl Drop for CountDrop {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn classes_cover_pooled_sizes_and_leave_others_out() {
        let l = |size, align| Layout::from_size_align(size, align).unwrap();
        assert_eq!(class_of(l(0, 1)), None);
        assert_eq!(class_of(l(1, 1)), Some(0));
        assert_eq!(class_of(l(64, 8)), Some(0));
        assert_eq!(class_of(l(65, 8)), Some(1));
        assert_eq!(class_of(l(256, 16)), Some(2));
        assert_eq!(class_of(l(257, 8)), None);
        assert_eq!(class_of(l(32, 32)), None);
    }

    #[test]
    fn futures_of_every_class_run_and_drop_their_captures_once() {
        let drops = Arc::new(AtomicUsize::new(0));
        let small = CountDrop(drops.clone());
        let mid = (CountDrop(drops.clone()), [7u8; 100]);
        let big = (CountDrop(drops.clone()), [9u8; 1000]);
        #[repr(align(64))]
        struct Aligned(u8);
        let aligned = (CountDrop(drops.clone()), Aligned(3));
        let futures = [
            StateFuture::new(async move {
                let _keep = &small;
                Ok(StateResult::End)
            }),
            StateFuture::new(async move {
                let (_guard, data) = mid;
                Ok(StateResult::next(if data[99] == 7 { "mid" } else { "bad" }))
            }),
            StateFuture::new(async move {
                let (_guard, data) = big;
                Ok(StateResult::next(if data[999] == 9 { "big" } else { "bad" }))
            }),
            StateFuture::new(async move {
                let (_guard, data) = aligned;
                assert_eq!(&data as *const Aligned as usize % 64, 0);
                Ok(StateResult::next(if data.0 == 3 { "aligned" } else { "bad" }))
            }),
            StateFuture::new(async { Ok(StateResult::End) }),
        ];
        let names: Vec<String> = futures
            .into_iter()
            .map(|f| match block_on(f) {
                Ok(StateResult::Next(n)) => n.as_str().to_owned(),
                Ok(StateResult::End) => "end".to_owned(),
                _ => "other".to_owned(),
            })
            .collect();
        assert_eq!(names, ["end", "mid", "big", "aligned", "end"]);
        assert_eq!(drops.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn a_future_dropped_unpolled_drops_its_captures() {
        let drops = Arc::new(AtomicUsize::new(0));
        let guard = CountDrop(drops.clone());
        let f = StateFuture::new(async move {
            let _keep = &guard;
            Ok(StateResult::End)
        });
        drop(f);
        assert_eq!(drops.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_freed_block_is_reused_by_the_next_future_of_its_class() {
        let first = StateFuture::new(async { Ok(StateResult::End) });
        let addr = first.future.cast::<u8>().as_ptr() as usize;
        drop(first);
        let x = 5u64;
        let second = StateFuture::new(async move { Ok(StateResult::next(if x == 5 { "a" } else { "b" })) });
        assert_eq!(second.future.cast::<u8>().as_ptr() as usize, addr);
    }

    use crate::test_util::YieldOnce;

    #[test]
    fn a_self_borrowing_future_survives_polls_across_yields_in_every_class() {
        fn run<const N: usize>(fill: u8) -> u8 {
            block_on(StateFuture::new(async move {
                let data = [fill; N];
                let first = &data[0];
                YieldOnce(false).await;
                YieldOnce(false).await;
                Ok(StateResult::next(if *first == fill && data[N - 1] == fill { "same" } else { "moved" }))
            }))
            .map_or(0, |r| u8::from(matches!(r, StateResult::Next(n) if n.as_str() == "same")))
        }
        assert_eq!(run::<8>(1) + run::<100>(2) + run::<200>(3) + run::<4000>(4), 4);
    }

    #[test]
    fn a_future_borrowing_its_caller_reads_the_borrowed_value() {
        let name = String::from("borrowed");
        let f = StateFuture::new(async {
            YieldOnce(false).await;
            Ok(StateResult::next(if name.len() == 8 { "read" } else { "bad" }))
        });
        assert!(matches!(block_on(f), Ok(StateResult::Next(n)) if n.as_str() == "read"));
    }

    #[test]
    fn many_live_futures_of_one_class_share_one_cached_block_safely() {
        let drops = Arc::new(AtomicUsize::new(0));
        let mut live: Vec<StateFuture<'static>> = (0..6)
            .map(|i| {
                let guard = CountDrop(drops.clone());
                StateFuture::new(async move {
                    let _keep = &guard;
                    YieldOnce(false).await;
                    Ok(StateResult::next(if i < 6 { "ok" } else { "bad" }))
                })
            })
            .collect();
        // Free them out of order, interleaved with new ones that take the cached block.
        drop(live.remove(3));
        drop(live.remove(0));
        live.push(StateFuture::new(async { Ok(StateResult::End) }));
        let ends = live.into_iter().map(block_on).filter(|r| r.is_ok()).count();
        assert_eq!(ends, 5);
        assert_eq!(drops.load(Ordering::Relaxed), 6);
    }

    #[test]
    fn futures_cross_threads() {
        let f = StateFuture::new(async { Ok(StateResult::End) });
        let r = std::thread::spawn(move || block_on(f)).join().unwrap();
        assert!(matches!(r, Ok(StateResult::End)));
    }
}
