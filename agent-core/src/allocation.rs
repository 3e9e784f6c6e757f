//! What a running state holds from a resource pool, read by the state through
//! [`Context::allocation`](crate::Context::allocation).
//!
//! Invariants:
//! - An [`Allocation`] is a snapshot made when the pool admitted the state: it does not
//!   change while the state runs, and it is visible only inside that state's own future (a
//!   task-local scope set by the runtime around each attempt). Code the state spawns
//!   elsewhere does not see it.
//! - GPU ids are device indices of the pool, in ascending order, one entry per device used,
//!   with the share of that device next to it.

use std::future::Future;
use std::sync::Arc;

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

tokio::task_local! {
    static CURRENT: Arc<Allocation>;
}

/// The allocation of the state attempt being polled on this task; empty if it holds none.
pub(crate) fn current() -> Arc<Allocation> {
    static EMPTY: std::sync::OnceLock<Arc<Allocation>> = std::sync::OnceLock::new();
    CURRENT.try_with(Arc::clone).unwrap_or_else(|_| {
        EMPTY.get_or_init(|| Arc::new(Allocation::new(ResourceRequirements::new(), Vec::new()))).clone()
    })
}

/// Run `future` with `allocation` visible to `Context::allocation`; used by the runtime.
#[doc(hidden)]
pub fn with_allocation<F: Future>(allocation: Arc<Allocation>, future: F) -> impl Future<Output = F::Output> {
    CURRENT.scope(allocation, future)
}

/// Call `f` with `allocation` visible to `Context::allocation` (for a body run outside an
/// async scope, such as a `blocking` state's thread); used by the runtime.
#[doc(hidden)]
pub fn with_allocation_sync<R>(allocation: Arc<Allocation>, f: impl FnOnce() -> R) -> R {
    CURRENT.sync_scope(allocation, f)
}
