//! [`ResourcePool`]: CPU, memory, I/O, network and GPU shared by every state that asks for
//! them, across all the agents that use the pool.
//!
//! Invariants:
//! - One lock guards the books ([`ledger::Ledger`]) and the waiters' channels, so a grant is
//!   either delivered to a live waiter or given back at once: a waiter dropped at any
//!   instant (cancelled run, timeout around it) never leaks capacity.
//! - A [`ResourceGuard`] releases its allocation when dropped, so every exit of a state
//!   (completion, error, panic, timeout, cancellation, preemption) gives back what it held.
//! - Preemption only ever cancels a token: the runtime drops the victim's future, which
//!   drops its guard. Nothing is stopped behind the runtime's back.
//! - Time is tokio's clock, so waits are measured in virtual time under `time::pause()`.
//!
//! The admission policy is explained in `DESIGN.md` beside this file.

mod gpu;
pub(crate) mod ledger;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use agent_core::{Allocation, Priority, ResourceError, ResourceRequirements, ResourceType};
use rustc_hash::FxHashMap;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use ledger::{AllocId, Config, Decision, Grant, Ledger, Outcome, Request, WaiterId, KINDS};

/// Who a quota applies to.
///
/// ```
/// use agent_runtime::QuotaScope;
/// assert_eq!(QuotaScope::agent("etl").to_string(), "agent \"etl\"");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QuotaScope {
    /// Every state of the agents of this name.
    Agent(Arc<str>),
    /// Every running instance of states of this name.
    State(Arc<str>),
    /// Every state carrying this tag (`.tag("…")` on the builder).
    Tag(Arc<str>),
}

impl QuotaScope {
    /// The scope of one agent.
    pub fn agent(name: impl Into<Arc<str>>) -> Self {
        QuotaScope::Agent(name.into())
    }
    /// The scope of one state name.
    pub fn state(name: impl Into<Arc<str>>) -> Self {
        QuotaScope::State(name.into())
    }
    /// The scope of one tag.
    pub fn tag(name: impl Into<Arc<str>>) -> Self {
        QuotaScope::Tag(name.into())
    }
}

impl fmt::Display for QuotaScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuotaScope::Agent(n) => write!(f, "agent {n:?}"),
            QuotaScope::State(n) => write!(f, "state {n:?}"),
            QuotaScope::Tag(n) => write!(f, "tag {n:?}"),
        }
    }
}

/// Builds a [`ResourcePool`]. Unset totals are this machine's (logical cores, physical
/// memory), 100 units of I/O and of network, and no GPU.
///
/// ```
/// use agent_runtime::ResourcePool;
/// let pool = ResourcePool::builder().total_cpu(8.0).total_gpu(2.0).enable_preemption(true).build();
/// assert_eq!(pool.total(agent_core::ResourceType::Gpu), 2.0);
/// ```
#[derive(Clone, Debug)]
pub struct ResourcePoolBuilder {
    config: Config,
}

impl ResourcePoolBuilder {
    fn set(mut self, kind: ResourceType, v: f64) -> Self {
        self.config.totals[kind.index()] = if v.is_finite() { v.max(0.0) } else { 0.0 };
        self
    }
    /// CPU cores.
    pub fn total_cpu(self, v: f64) -> Self {
        self.set(ResourceType::Cpu, v)
    }
    /// Memory, in MB.
    pub fn total_memory_mb(self, v: f64) -> Self {
        self.set(ResourceType::Memory, v)
    }
    /// I/O units.
    pub fn total_io(self, v: f64) -> Self {
        self.set(ResourceType::Io, v)
    }
    /// Network units.
    pub fn total_network(self, v: f64) -> Self {
        self.set(ResourceType::Network, v)
    }
    /// GPU units: `floor(v)` devices of one unit, plus one of the fractional rest.
    pub fn total_gpu(self, v: f64) -> Self {
        self.set(ResourceType::Gpu, v)
    }
    /// Let a waiting `High` or `Critical` state stop running `preemptible` states of lower
    /// priority (off by default).
    pub fn enable_preemption(mut self, on: bool) -> Self {
        self.config.preemption = on;
        self
    }
    /// Enforce the quotas set with [`ResourcePool::set_quota`] (off by default).
    pub fn enable_quotas(mut self, on: bool) -> Self {
        self.config.quotas = on;
        self
    }
    /// How many waiters, from the head of the queue, each admission decision considers
    /// (default 32): the cost of a decision is bounded by it, however many wait.
    pub fn backfill_window(mut self, n: usize) -> Self {
        self.config.window = n.max(1);
        self
    }
    /// How many later states may start before a waiting one, taking what it is short of
    /// (default 64); after that it reserves what it needs and is passed by none of its
    /// priority or lower. Lower bounds a large request's wait more tightly; higher keeps
    /// the pool busier (see `DESIGN.md` beside the pool's code for the measured trade-off).
    pub fn max_bypass(mut self, n: u32) -> Self {
        self.config.bypass_limit = n;
        self
    }
    /// The pool.
    pub fn build(self) -> ResourcePool {
        ResourcePool {
            shared: Arc::new(Shared {
                inner: Mutex::new(Inner {
                    ledger: Ledger::new(self.config),
                    waiters: FxHashMap::default(),
                    preempt: FxHashMap::default(),
                }),
                epoch: Instant::now(),
            }),
        }
    }
}

/// What this machine has: logical cores and physical memory in MB.
fn machine() -> (f64, f64) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    // An unreadable memory size (an unsupported platform) counts as 1 GiB rather than none.
    let memory_mb = sysinfo::System::new()
        .map(|mut sys| {
            sys.refresh_memory();
            (sys.total_memory() / (1024 * 1024)) as f64
        })
        .unwrap_or(0.0);
    (cores, if memory_mb > 0.0 { memory_mb } else { 1024.0 })
}

/// A pool of resources that states take from while they run; a cheap, shareable handle.
///
/// ```
/// use agent_runtime::{Agent, ResourcePool};
/// let pool = ResourcePool::builder().total_cpu(2.0).total_memory_mb(4096.0).build();
/// let a = Agent::new("a").with_resource_pool(pool.clone());
/// let b = Agent::new("b").with_resource_pool(pool.clone()); // both draw on the same 2 CPUs
/// # let _ = (a, b);
/// ```
#[derive(Clone)]
pub struct ResourcePool {
    shared: Arc<Shared>,
}

struct Shared {
    inner: Mutex<Inner>,
    epoch: Instant,
}

/// Who asks the pool for resources (a run): its queued requests are withdrawn together when
/// it stops, and it queues none once stopping.
pub(crate) trait Asker: Sync {
    /// A key no other live asker has.
    fn key(&self) -> usize;
    /// Whether the asker is stopping; read under the pool's lock.
    fn stopping(&self) -> bool;
}

/// Where a queued request's grant (or its failure) is sent.
type GrantSender = oneshot::Sender<Result<Grant, ResourceError>>;

struct Inner {
    ledger: Ledger,
    /// Each queued request's channel, its preemption token if it may be preempted, and its
    /// asker's key (see [`Asker`]).
    waiters: FxHashMap<WaiterId, (GrantSender, Option<CancellationToken>, usize)>,
    /// The token of every running preemptible allocation.
    preempt: FxHashMap<AllocId, CancellationToken>,
}

impl fmt::Debug for ResourcePool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("ResourcePool").field("config", inner.ledger.config()).finish_non_exhaustive()
    }
}

impl Default for ResourcePool {
    /// A new pool of this machine's cores and memory, 100 I/O and network units, no GPU.
    fn default() -> Self {
        Self::builder().build()
    }
}

impl ResourcePool {
    /// A builder whose totals start as this machine's.
    pub fn builder() -> ResourcePoolBuilder {
        let (cpu, memory) = machine();
        ResourcePoolBuilder {
            config: Config {
                totals: [cpu, memory, 100.0, 100.0, 0.0],
                preemption: false,
                quotas: false,
                window: 32,
                bypass_limit: 64,
            },
        }
    }

    /// The pool agents use when given none: one per process, made on first use from this
    /// machine's cores and memory, shared by all of them.
    pub fn global() -> ResourcePool {
        static GLOBAL: OnceLock<ResourcePool> = OnceLock::new();
        GLOBAL.get_or_init(ResourcePool::default).clone()
    }

    /// Whether `other` is a handle on this same pool.
    pub(crate) fn same(&self, other: &ResourcePool) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.shared.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now(&self) -> Duration {
        Instant::now().saturating_duration_since(self.shared.epoch)
    }

    /// The pool's total of one kind.
    pub fn total(&self, kind: ResourceType) -> f64 {
        self.lock().ledger.config().totals[kind.index()]
    }

    /// Cap what `scope` holds of `kind` at once (enforced when quotas are enabled). Waiting
    /// requests that can now never fit fail with [`ResourceError::ExceedsQuota`].
    ///
    /// ```
    /// use agent_core::ResourceType;
    /// use agent_runtime::{QuotaScope, ResourcePool};
    /// let pool = ResourcePool::builder().total_gpu(4.0).enable_quotas(true).build();
    /// pool.set_quota(QuotaScope::agent("trainer"), ResourceType::Gpu, 1.0);
    /// ```
    pub fn set_quota(&self, scope: QuotaScope, kind: ResourceType, amount: f64) {
        let now = self.now();
        let mut inner = self.lock();
        let outcome = inner.ledger.set_quota(scope, kind, Some(amount.max(0.0)), now);
        deliver(&mut inner, outcome, now);
    }

    /// Lift a quota.
    pub fn remove_quota(&self, scope: QuotaScope, kind: ResourceType) {
        let now = self.now();
        let mut inner = self.lock();
        let outcome = inner.ledger.set_quota(scope, kind, None, now);
        deliver(&mut inner, outcome, now);
    }

    /// Per kind: total, current and peak use, allocations, failures, waits.
    pub fn usage_stats(&self) -> UsageStats {
        let inner = self.lock();
        let stats = inner.ledger.stats();
        UsageStats {
            kinds: std::array::from_fn(|k| {
                let (total, s) = stats[k];
                ResourceUsage {
                    kind: ResourceType::ALL[k],
                    total,
                    current_usage: s.current,
                    peak_usage: s.peak,
                    allocations: s.allocations,
                    failed_allocations: s.failed,
                    waits: s.waits,
                    total_wait: s.total_wait,
                    longest_wait: s.longest_wait,
                }
            }),
            preempted: inner.ledger.preempted().iter().map(|(s, n)| (s.to_string(), *n)).collect(),
        }
    }

    /// What each running state holds now, oldest allocation first.
    pub fn state_allocations(&self) -> Vec<StateAllocation> {
        let inner = self.lock();
        (inner.ledger.allocations())
            .map(|(req, gpus)| StateAllocation {
                agent: req.agent.to_string(),
                state: req.state.to_string(),
                allocation: Allocation::new(requirements(&req.amounts), gpus.to_vec()),
            })
            .collect()
    }

    /// The states waiting for resources, in the order they will be admitted.
    pub fn waiting_states(&self) -> Vec<WaitingState> {
        let now = self.now();
        let inner = self.lock();
        (inner.ledger.waiting(now))
            .map(|(req, waited)| WaitingState {
                agent: req.agent.to_string(),
                state: req.state.to_string(),
                priority: req.priority,
                requested: requirements(&req.amounts),
                waited,
            })
            .collect()
    }

    /// Take `req` for `asker`, waiting as long as it takes; fails at once if it can never
    /// fit, and with [`ResourceError::Withdrawn`] if the asker stops (now, or while queued:
    /// see [`ResourcePool::withdraw_asker`]).
    pub(crate) async fn acquire(&self, req: Request, asker: &dyn Asker) -> Result<ResourceGuard, ResourceError> {
        let preemptible = req.preemptible && self.lock().ledger.config().preemption;
        let amounts = req.amounts;
        let state = req.state.clone();
        let token = preemptible.then(CancellationToken::new);
        let now = self.now();
        let rx = {
            let mut inner = self.lock();
            // Asked under the lock that `withdraw_asker` takes after the asker began to
            // stop: either this sees it stopping, or its request is queued before the
            // withdrawal and withdrawn with the others. Nothing is granted after.
            if asker.stopping() {
                return Err(ResourceError::Withdrawn { state: state.to_string() });
            }
            let (decision, outcome) = inner.ledger.request(req, now);
            match decision {
                Decision::Failed(e) => {
                    deliver(&mut inner, outcome, now);
                    return Err(e);
                }
                Decision::Granted(grant) => {
                    if let Some(t) = &token {
                        inner.preempt.insert(grant.id, t.clone());
                    }
                    deliver(&mut inner, outcome, now);
                    return Ok(self.guard(grant, amounts, token));
                }
                Decision::Queued(id) => {
                    let (tx, rx) = oneshot::channel();
                    inner.waiters.insert(id, (tx, token.clone(), asker.key()));
                    deliver(&mut inner, outcome, now);
                    Waiting { pool: self, id, state, rx: Some(rx) }
                }
            }
        };
        let grant = rx.wait().await?;
        Ok(self.guard(grant, amounts, token))
    }

    /// Withdraw every queued request of the asker `key` (a run that stops): none of them
    /// is granted from now on; each waiter gets [`ResourceError::Withdrawn`].
    pub(crate) fn withdraw_asker(&self, key: usize) {
        let now = self.now();
        let mut inner = self.lock();
        let ids: Vec<WaiterId> = inner.waiters.iter().filter(|(_, w)| w.2 == key).map(|(&id, _)| id).collect();
        for id in ids {
            // Dropping the channel tells the waiter.
            inner.waiters.remove(&id);
            let outcome = inner.ledger.withdraw(id, now);
            deliver(&mut inner, outcome, now);
        }
    }

    fn guard(&self, grant: Grant, amounts: ledger::Amounts, preempted: Option<CancellationToken>) -> ResourceGuard {
        ResourceGuard {
            pool: self.clone(),
            id: grant.id,
            allocation: Arc::new(Allocation::new(requirements(&amounts), grant.gpus)),
            preempted,
        }
    }

    fn release(&self, id: AllocId) {
        let now = self.now();
        let mut inner = self.lock();
        inner.preempt.remove(&id);
        let outcome = inner.ledger.release(id, now);
        deliver(&mut inner, outcome, now);
    }
}

fn requirements(a: &ledger::Amounts) -> ResourceRequirements {
    ResourceRequirements::new().cpu(a[0]).memory_mb(a[1]).io(a[2]).network(a[3]).gpu(a[4])
}

/// Hand grants to their waiters, stop preemption victims, fail doomed waiters. A grant whose
/// waiter is gone is given back at once (and may admit others in turn).
fn deliver(inner: &mut Inner, outcome: Outcome, now: Duration) {
    let mut pending = vec![outcome];
    while let Some(outcome) = pending.pop() {
        for id in outcome.preempt {
            if let Some(t) = inner.preempt.get(&id) {
                t.cancel();
            }
        }
        for (id, e) in outcome.failed {
            if let Some((tx, ..)) = inner.waiters.remove(&id) {
                let _ = tx.send(Err(e));
            }
        }
        for (id, grant) in outcome.granted {
            let alloc = grant.id;
            let sent = match inner.waiters.remove(&id) {
                Some((tx, token, _)) => {
                    if let Some(t) = token {
                        inner.preempt.insert(alloc, t);
                    }
                    tx.send(Ok(grant)).is_ok()
                }
                None => false,
            };
            if !sent {
                inner.preempt.remove(&alloc);
                pending.push(inner.ledger.release(alloc, now));
            }
        }
    }
}

/// A queued request; dropped before its grant arrives, it leaves the queue (or gives the
/// grant back if it arrived in between).
struct Waiting<'a> {
    pool: &'a ResourcePool,
    id: WaiterId,
    state: Arc<str>,
    rx: Option<oneshot::Receiver<Result<Grant, ResourceError>>>,
}

impl Waiting<'_> {
    async fn wait(mut self) -> Result<Grant, ResourceError> {
        let rx = self.rx.as_mut().unwrap_or_else(|| unreachable!("taken only here and in drop"));
        let result = rx.await;
        self.rx = None;
        // The sender is dropped without a delivery when the asker stopped.
        result.unwrap_or_else(|_| Err(ResourceError::Withdrawn { state: self.state.to_string() }))
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else { return };
        let now = self.pool.now();
        let mut inner = self.pool.lock();
        if inner.waiters.remove(&self.id).is_some() {
            let outcome = inner.ledger.withdraw(self.id, now);
            deliver(&mut inner, outcome, now);
        } else if let Ok(Ok(grant)) = rx.try_recv() {
            inner.preempt.remove(&grant.id);
            let outcome = inner.ledger.release(grant.id, now);
            deliver(&mut inner, outcome, now);
        }
    }
}

/// What one state attempt holds; gives it back when dropped.
pub(crate) struct ResourceGuard {
    pool: ResourcePool,
    id: AllocId,
    pub allocation: Arc<Allocation>,
    /// Cancelled when the pool preempts this allocation.
    pub preempted: Option<CancellationToken>,
}

impl Drop for ResourceGuard {
    fn drop(&mut self) {
        self.pool.release(self.id);
    }
}

/// The counters of one kind of resource.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct ResourceUsage {
    /// The kind.
    pub kind: ResourceType,
    /// The pool's total.
    pub total: f64,
    /// Held now.
    pub current_usage: f64,
    /// The most ever held at once.
    pub peak_usage: f64,
    /// Grants that included this kind.
    pub allocations: u64,
    /// Requests for this kind that failed (could never fit).
    pub failed_allocations: u64,
    /// Grants that had to wait.
    pub waits: u64,
    /// Time spent waiting, summed over grants.
    pub total_wait: Duration,
    /// The longest wait of one grant.
    pub longest_wait: Duration,
}

/// [`ResourcePool::usage_stats`]: one [`ResourceUsage`] per kind, and preemptions.
///
/// ```
/// use agent_core::ResourceType;
/// use agent_runtime::ResourcePool;
/// let pool = ResourcePool::builder().total_cpu(4.0).build();
/// let stats = pool.usage_stats();
/// assert_eq!(stats[ResourceType::Cpu].total, 4.0);
/// assert_eq!(stats[ResourceType::Cpu].current_usage, 0.0);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct UsageStats {
    kinds: [ResourceUsage; KINDS],
    preempted: BTreeMap<String, u64>,
}

impl UsageStats {
    /// Every kind, in [`ResourceType::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = &ResourceUsage> {
        self.kinds.iter()
    }
    /// How many times each state was preempted.
    pub fn preempted(&self) -> &BTreeMap<String, u64> {
        &self.preempted
    }
}

impl std::ops::Index<ResourceType> for UsageStats {
    type Output = ResourceUsage;
    fn index(&self, kind: ResourceType) -> &ResourceUsage {
        &self.kinds[kind.index()]
    }
}

/// What one running state holds ([`ResourcePool::state_allocations`]).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct StateAllocation {
    /// The agent running it.
    pub agent: String,
    /// The state.
    pub state: String,
    /// Its amounts and GPU devices.
    pub allocation: Allocation,
}

/// A state waiting for resources ([`ResourcePool::waiting_states`]).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct WaitingState {
    /// The agent running it.
    pub agent: String,
    /// The state.
    pub state: String,
    /// Its priority.
    pub priority: Priority,
    /// What it asks for.
    pub requested: ResourceRequirements,
    /// How long it has waited.
    pub waited: Duration,
}
