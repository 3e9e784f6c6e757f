//! What a running state holds from a resource pool, read by the state through
//! [`Context::allocation`](crate::Context::allocation).
//!
//! Invariants:
//! - An [`Allocation`] is a snapshot made when the pool admitted the state: it does not
//!   change while the state runs, and it is visible only inside that state's own future: the
//!   runtime wraps each attempt in a scope that makes it this thread's current allocation
//!   for the length of each poll (and puts the previous one back after, also on a panic), as
//!   a task-local would. Code the state spawns elsewhere does not see it. No async runtime
//!   is needed for this: it is a thread-local set around each poll.
//! - GPU ids are device indices of the pool, in ascending order, one entry per device used,
//!   with the share of that device next to it.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use crate::options::{ResourceRequirements, ResourceType};

/// The resources one state attempt holds.
///
/// ```
/// use agent_core::{Allocation, ResourceRequirements, ResourceType};
/// let a = Allocation::new(ResourceRequirements::new().cpu(2.0).gpu(1.5), vec![(0, 1.0), (1, 0.5)]);
/// assert_eq!(a.amount(ResourceType::Cpu), 2.0);
/// assert_eq!(a.gpu_ids(), &[0, 1]);
/// assert_eq!(a.gpu_share(1), 0.5);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Allocation {
    amounts: ResourceRequirements,
    gpu_ids: Vec<usize>,
    gpu_shares: Vec<f64>,
}

impl Allocation {
    /// An allocation of `amounts`, with the GPU share of each device used.
    pub fn new(amounts: ResourceRequirements, mut gpus: Vec<(usize, f64)>) -> Self {
        gpus.sort_by_key(|&(id, _)| id);
        let (gpu_ids, gpu_shares) = gpus.into_iter().unzip();
        Allocation { amounts, gpu_ids, gpu_shares }
    }

    /// The amount held of one kind (zero for kinds the request did not count).
    pub fn amount(&self, kind: ResourceType) -> f64 {
        self.amounts.requested(kind)
    }

    /// Everything held, as a request.
    pub fn requirements(&self) -> ResourceRequirements {
        self.amounts
    }

    /// The GPU devices this state may use, by index in the pool.
    pub fn gpu_ids(&self) -> &[usize] {
        &self.gpu_ids
    }

    /// The share of device `id` held (0 when it holds none of it).
    pub fn gpu_share(&self, id: usize) -> f64 {
        self.gpu_ids.iter().position(|&d| d == id).map_or(0.0, |i| self.gpu_shares[i])
    }
}

thread_local! {
    /// The allocation of the scope being polled (or run) on this thread, if any.
    static CURRENT: Cell<Option<Arc<Allocation>>> = const { Cell::new(None) };
}

/// The allocation of the state attempt being polled on this task; empty if it holds none.
pub(crate) fn current() -> Arc<Allocation> {
    static EMPTY: std::sync::OnceLock<Arc<Allocation>> = std::sync::OnceLock::new();
    let held = CURRENT.try_with(|c| {
        let held = c.take();
        c.set(held.clone());
        held
    });
    held.ok().flatten().unwrap_or_else(|| {
        EMPTY.get_or_init(|| Arc::new(Allocation::new(ResourceRequirements::new(), Vec::new()))).clone()
    })
}

/// Run `f` with `slot`'s allocation as this thread's current one, then put both back where
/// they were (also when `f` panics): scopes nest, and the allocation never outlives `f`.
fn entered<R>(slot: &mut Option<Arc<Allocation>>, f: impl FnOnce() -> R) -> R {
    fn swap(slot: &mut Option<Arc<Allocation>>) {
        // Fails only while the thread is being torn down, when no state runs on it.
        let _ = CURRENT.try_with(|c| *slot = c.replace(slot.take()));
    }
    struct Leave<'a>(&'a mut Option<Arc<Allocation>>);
    impl Drop for Leave<'_> {
        fn drop(&mut self) {
            swap(self.0);
        }
    }
    swap(slot);
    let _leave = Leave(slot);
    f()
}

pin_project_lite::pin_project! {
    /// A future polled with an allocation visible to `Context::allocation`.
    struct WithAllocation<F> {
        allocation: Option<Arc<Allocation>>,
        #[pin]
        future: F,
    }
}

impl<F: Future> Future for WithAllocation<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        let this = self.project();
        let future = this.future;
        entered(this.allocation, || future.poll(cx))
    }
}

/// Run `future` with `allocation` visible to `Context::allocation`; used by the runtime.
pub fn with_allocation<F: Future>(allocation: Arc<Allocation>, future: F) -> impl Future<Output = F::Output> {
    WithAllocation { allocation: Some(allocation), future }
}

/// Call `f` with `allocation` visible to `Context::allocation` (for a body run outside an
/// async scope, such as a `blocking` state's thread); used by the runtime.
pub fn with_allocation_sync<R>(allocation: Arc<Allocation>, f: impl FnOnce() -> R) -> R {
    entered(&mut Some(allocation), f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(cpu: f64) -> Arc<Allocation> {
        Arc::new(Allocation::new(ResourceRequirements::new().cpu(cpu), Vec::new()))
    }

    fn cpu() -> f64 {
        current().amount(ResourceType::Cpu)
    }

    use crate::test_util::YieldOnce;

    fn poll_once<F: Future>(f: Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut TaskContext::from_waker(std::task::Waker::noop()))
    }

    #[test]
    fn sync_scopes_nest_and_restore_the_outer_allocation() {
        assert_eq!(cpu(), 0.0);
        let seen = with_allocation_sync(held(2.0), || {
            let inner = with_allocation_sync(held(3.0), cpu);
            (cpu(), inner)
        });
        assert_eq!(seen, (2.0, 3.0));
        assert_eq!(cpu(), 0.0, "the scope is left");
    }

    #[test]
    fn a_scope_is_left_when_its_body_panics() {
        let caught = std::panic::catch_unwind(|| with_allocation_sync(held(4.0), || panic!("in the state")));
        assert!(caught.is_err());
        assert_eq!(cpu(), 0.0);
    }

    #[test]
    fn a_future_sees_its_allocation_only_while_it_is_polled() {
        let mut a = std::pin::pin!(with_allocation(held(1.0), async {
            let before = cpu();
            YieldOnce(false).await;
            (before, cpu())
        }));
        let mut b = std::pin::pin!(with_allocation(held(5.0), async {
            YieldOnce(false).await;
            cpu()
        }));
        // Interleave the two on one thread, as a runtime's worker does with two tasks.
        assert!(poll_once(a.as_mut()).is_pending());
        assert_eq!(cpu(), 0.0, "nothing is visible between polls");
        assert!(poll_once(b.as_mut()).is_pending());
        assert_eq!(poll_once(b.as_mut()), Poll::Ready(5.0));
        assert_eq!(poll_once(a.as_mut()), Poll::Ready((1.0, 1.0)));
        assert_eq!(cpu(), 0.0);
    }
}
