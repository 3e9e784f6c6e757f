//! What a state asks of the runtime: resources, priority, timeout, retries, rate limits,
//! dependencies.
//!
//! Invariants:
//! - Every type here can be built in a `const`, so `#[workflow]` can place a state's
//!   options in its `static GRAPH` with no code run at start-up.
//! - Options are data. Validation (`validate`) says what is wrong in words that name the
//!   option; the runtime calls it before any state runs, the macros at compile time.

use std::sync::Arc;
use std::time::Duration;

use crate::context::Context;

/// How urgent a state is when it waits for resources.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Runs when nothing more urgent waits.
    Low,
    /// The default.
    #[default]
    Normal,
    /// Goes before `Normal` and `Low`.
    High,
    /// Goes first.
    Critical,
}

/// The kinds of resource a pool accounts for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    /// CPU cores.
    Cpu,
    /// Memory, in MB.
    Memory,
    /// I/O weight.
    Io,
    /// Network weight.
    Network,
    /// GPU units (fractions allowed).
    Gpu,
}

impl ResourceType {
    /// Every kind, in a fixed order: `ALL[k.index()] == k`.
    pub const ALL: [ResourceType; 5] =
        [ResourceType::Cpu, ResourceType::Memory, ResourceType::Io, ResourceType::Network, ResourceType::Gpu];

    /// This kind's position in [`ResourceType::ALL`].
    pub const fn index(self) -> usize {
        match self {
            ResourceType::Cpu => 0,
            ResourceType::Memory => 1,
            ResourceType::Io => 2,
            ResourceType::Network => 3,
            ResourceType::Gpu => 4,
        }
    }
}

impl std::fmt::Display for ResourceType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ResourceType::Cpu => "cpu",
            ResourceType::Memory => "memory_mb",
            ResourceType::Io => "io",
            ResourceType::Network => "network",
            ResourceType::Gpu => "gpu",
        })
    }
}

/// A set of [`ResourceType`]s.
///
/// ```
/// use agent_core::{ResourceType, ResourceTypes};
/// let s = ResourceTypes::of(&[ResourceType::Cpu, ResourceType::Gpu]);
/// assert!(s.contains(ResourceType::Gpu));
/// assert!(!s.contains(ResourceType::Memory));
/// assert!(ResourceTypes::ALL.contains(ResourceType::Io));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ResourceTypes(u8);

impl ResourceTypes {
    /// Every kind.
    pub const ALL: ResourceTypes = ResourceTypes(0b1_1111);
    /// No kind.
    pub const NONE: ResourceTypes = ResourceTypes(0);

    /// The set of these kinds.
    pub const fn of(kinds: &[ResourceType]) -> Self {
        let mut bits = 0u8;
        let mut i = 0;
        while i < kinds.len() {
            bits |= 1 << kinds[i].index();
            i += 1;
        }
        ResourceTypes(bits)
    }

    /// Whether `kind` is in the set.
    pub const fn contains(self, kind: ResourceType) -> bool {
        self.0 & (1 << kind.index()) != 0
    }
}

/// The resources one state holds while it runs.
///
/// ```
/// use agent_core::ResourceRequirements;
/// let r = ResourceRequirements::new().cpu(2.0).memory_mb(1024.0).gpu(1.0);
/// assert_eq!(r.cpu, 2.0);
/// assert!(r.validate().is_ok());
/// assert!(ResourceRequirements::new().cpu(-1.0).validate().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ResourceRequirements {
    /// CPU cores.
    pub cpu: f64,
    /// Memory in MB.
    pub memory_mb: f64,
    /// I/O weight.
    pub io: f64,
    /// Network weight.
    pub network: f64,
    /// GPU units.
    pub gpu: f64,
    /// The kinds a pool counts for this request (all by default); amounts of other kinds
    /// are ignored, as if they were zero.
    pub resource_types: ResourceTypes,
}

impl Default for ResourceRequirements {
    fn default() -> Self {
        Self::new()
    }
}

impl ResourceRequirements {
    /// Nothing asked.
    pub const fn new() -> Self {
        Self { cpu: 0.0, memory_mb: 0.0, io: 0.0, network: 0.0, gpu: 0.0, resource_types: ResourceTypes::ALL }
    }

    /// Count only these kinds; the amounts of the others are ignored.
    ///
    /// ```
    /// use agent_core::{ResourceRequirements, ResourceType};
    /// let r = ResourceRequirements::new().cpu(2.0).gpu(1.0).resource_types([ResourceType::Gpu]);
    /// assert_eq!(r.requested(ResourceType::Cpu), 0.0);
    /// assert_eq!(r.requested(ResourceType::Gpu), 1.0);
    /// ```
    pub const fn resource_types<const N: usize>(mut self, kinds: [ResourceType; N]) -> Self {
        self.resource_types = ResourceTypes::of(&kinds);
        self
    }

    /// The amount of `kind` a pool accounts for: the amount asked if `kind` is counted,
    /// otherwise zero.
    pub fn requested(&self, kind: ResourceType) -> f64 {
        if self.resource_types.contains(kind) {
            self.amount(kind)
        } else {
            0.0
        }
    }

    /// Whether the request takes anything from a pool.
    pub fn is_empty(&self) -> bool {
        ResourceType::ALL.iter().all(|&k| self.requested(k) == 0.0)
    }
    /// CPU cores.
    pub const fn cpu(mut self, v: f64) -> Self {
        self.cpu = v;
        self
    }
    /// Memory in MB.
    pub const fn memory_mb(mut self, v: f64) -> Self {
        self.memory_mb = v;
        self
    }
    /// I/O weight.
    pub const fn io(mut self, v: f64) -> Self {
        self.io = v;
        self
    }
    /// Network weight.
    pub const fn network(mut self, v: f64) -> Self {
        self.network = v;
        self
    }
    /// GPU units.
    pub const fn gpu(mut self, v: f64) -> Self {
        self.gpu = v;
        self
    }

    /// The amount of one kind.
    pub fn amount(&self, kind: ResourceType) -> f64 {
        match kind {
            ResourceType::Cpu => self.cpu,
            ResourceType::Memory => self.memory_mb,
            ResourceType::Io => self.io,
            ResourceType::Network => self.network,
            ResourceType::Gpu => self.gpu,
        }
    }

    /// Every amount must be finite and not negative.
    pub fn validate(&self) -> Result<(), String> {
        for kind in ResourceType::ALL {
            let v = self.amount(kind);
            if !v.is_finite() || v < 0.0 {
                return Err(format!("resource {kind:?} must be a finite, non-negative number, not {v}"));
            }
        }
        Ok(())
    }
}

/// How a failing state is tried again.
///
/// The n-th retry waits `min(initial_delay * exponential_base^(n-1), max_delay)`; with jitter
/// the wait is drawn uniformly from the upper half of that bound, so never above `max_delay`.
/// `max_retries = 3` means at most four attempts. An attempt fails when it returns `Err`,
/// panics or passes its timeout; a request for more resources than the pool has is not
/// retried.
///
/// ```
/// use std::time::Duration;
/// use agent_core::RetryPolicy;
/// let p = RetryPolicy::new().max_retries(3).initial_delay(Duration::from_secs(1));
/// assert_eq!(p.max_retries, 3);
/// assert_eq!(p.backoff(3), Duration::from_secs(4));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// The wait before the first retry.
    pub initial_delay: Duration,
    /// No wait is longer.
    pub max_delay: Duration,
    /// Each wait is this many times the one before.
    pub exponential_base: f64,
    /// Spread waits at random inside their bound.
    pub jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl RetryPolicy {
    /// Three retries, 1 s doubling up to 60 s, with jitter: the defaults, also of every
    /// field `#[state(retry(...))]` leaves out.
    pub const fn new() -> Self {
        Self {
            max_retries: 3,
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            exponential_base: 2.0,
            jitter: true,
        }
    }
    /// Retries after the first attempt.
    pub const fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }
    /// The wait before the first retry.
    pub const fn initial_delay(mut self, d: Duration) -> Self {
        self.initial_delay = d;
        self
    }
    /// No wait is longer.
    pub const fn max_delay(mut self, d: Duration) -> Self {
        self.max_delay = d;
        self
    }
    /// Each wait is this many times the one before.
    pub const fn exponential_base(mut self, b: f64) -> Self {
        self.exponential_base = b;
        self
    }
    /// Spread waits at random inside their bound.
    pub const fn jitter(mut self, on: bool) -> Self {
        self.jitter = on;
        self
    }

    /// The upper bound of the wait before retry `n` (1-based), before jitter.
    pub fn backoff(&self, n: u32) -> Duration {
        let exp = self.exponential_base.powi(n.saturating_sub(1).min(i32::MAX as u32) as i32);
        let secs = self.initial_delay.as_secs_f64() * exp;
        let max = self.max_delay.as_secs_f64();
        if !secs.is_finite() || secs >= max {
            self.max_delay
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// `max_retries` at least 1, delays ordered, a finite base of at least 1.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_retries == 0 {
            return Err("retry max must be at least 1 (leave retry out for no retries)".into());
        }
        if !self.exponential_base.is_finite() || self.exponential_base < 1.0 {
            return Err(format!("retry exponential_base must be a finite number >= 1, not {}", self.exponential_base));
        }
        if !self.delays_ordered() {
            return Err("retry initial_delay must not exceed max_delay".into());
        }
        Ok(())
    }

    /// Whether `initial_delay` is at most `max_delay`, as [`RetryPolicy::validate`] requires;
    /// usable in `const` (the `#[state]` macro checks a `retry(...)` that gives one of the
    /// two delays with it at compile time).
    ///
    /// ```
    /// use std::time::Duration;
    /// use agent_core::RetryPolicy;
    /// assert!(RetryPolicy::new().delays_ordered());
    /// assert!(!RetryPolicy::new().initial_delay(Duration::from_secs(120)).delays_ordered());
    /// ```
    pub const fn delays_ordered(&self) -> bool {
        self.initial_delay.as_nanos() <= self.max_delay.as_nanos()
    }
}

/// How often a state may start: a token bucket of `burst` cells, refilled at `per_second`
/// cells a second, one cell taken per attempt.
///
/// The shape of an API quota: `RateLimit::new(10.0).burst(20)` allows 20 starts at once, then
/// 10 a second. Rates below one a second are fractions: `RateLimit::new(0.5)` is one start
/// every 2 s.
///
/// ```
/// use agent_core::RateLimit;
/// let r = RateLimit::new(10.0).burst(20);
/// assert_eq!((r.per_second, r.burst), (10.0, 20));
/// assert!(r.validate().is_ok());
/// assert_eq!(RateLimit::new(0.5).burst, 1);
/// assert!(RateLimit::new(0.0).validate().is_err());
/// assert!(RateLimit::new(f64::INFINITY).validate().is_err());
/// assert!(RateLimit::new(1.0).burst(0).validate().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// Cells added a second: finite and positive, fractions allowed.
    pub per_second: f64,
    /// The most cells held at once, so the most starts without waiting: at least 1.
    pub burst: u32,
}

impl RateLimit {
    /// `per_second` starts a second, with a burst of 1.
    pub const fn new(per_second: f64) -> Self {
        Self { per_second, burst: 1 }
    }

    /// Allow `n` starts at once.
    pub const fn burst(mut self, n: u32) -> Self {
        self.burst = n;
        self
    }

    /// `per_second` finite and greater than 0, `burst` at least 1.
    pub fn validate(&self) -> Result<(), String> {
        if !self.per_second.is_finite() || self.per_second <= 0.0 {
            return Err(format!("rate_limit per_second must be a finite number > 0, not {}", self.per_second));
        }
        if self.burst == 0 {
            return Err("rate_limit burst must be at least 1".into());
        }
        Ok(())
    }
}

/// What a dependency means for its dependent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DependencyType {
    /// The dependency must complete successfully first.
    Required,
    /// Waited for only if it was activated in this run.
    Optional,
    /// Started alongside; not waited for.
    Parallel,
    /// Must have finished first, successfully or not: ordering only.
    Sequential,
}

/// How long a dependency's completion counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DependencyLifecycle {
    /// For this run (the default).
    #[default]
    Session,
    /// Forever, also after restore.
    Once,
    /// Consumed by each run of the dependent.
    Always,
    /// For `expiry`.
    Temporary,
    /// For `interval`; then the dependency runs again.
    Periodic,
}

/// A predicate on the context that must hold for a dependency to be satisfied.
pub type Condition = Arc<dyn Fn(&Context) -> bool + Send + Sync>;

/// A dependency with all its settings.
///
/// ```
/// use agent_core::{DependencyConfig, DependencyType};
/// let c: DependencyConfig = DependencyType::Required.into();
/// assert_eq!(c.dependency_type, DependencyType::Required);
/// ```
#[derive(Clone)]
pub struct DependencyConfig {
    /// What the dependency means.
    pub dependency_type: DependencyType,
    /// How long a completion counts.
    pub lifecycle: DependencyLifecycle,
    /// Must also hold.
    pub condition: Option<Condition>,
    /// For `Temporary`.
    pub expiry: Option<std::time::Duration>,
    /// For `Periodic`.
    pub interval: Option<std::time::Duration>,
    /// Bounds the wait.
    pub timeout: Option<std::time::Duration>,
}

impl DependencyConfig {
    /// A dependency of this type, with the defaults.
    pub fn new(dependency_type: DependencyType) -> Self {
        Self {
            dependency_type,
            lifecycle: DependencyLifecycle::Session,
            condition: None,
            expiry: None,
            interval: None,
            timeout: None,
        }
    }
    /// How long a completion counts.
    pub fn lifecycle(mut self, l: DependencyLifecycle) -> Self {
        self.lifecycle = l;
        self
    }
    /// A predicate that must also hold.
    pub fn condition(mut self, f: impl Fn(&Context) -> bool + Send + Sync + 'static) -> Self {
        self.condition = Some(Arc::new(f));
        self
    }
    /// For `Temporary`.
    pub fn expiry(mut self, d: std::time::Duration) -> Self {
        self.expiry = Some(d);
        self
    }
    /// For `Periodic`.
    pub fn interval(mut self, d: std::time::Duration) -> Self {
        self.interval = Some(d);
        self
    }
    /// Bounds the wait.
    pub fn timeout(mut self, d: std::time::Duration) -> Self {
        self.timeout = Some(d);
        self
    }
}

impl From<DependencyType> for DependencyConfig {
    fn from(t: DependencyType) -> Self {
        DependencyConfig::new(t)
    }
}

impl std::fmt::Debug for DependencyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DependencyConfig")
            .field("dependency_type", &self.dependency_type)
            .field("lifecycle", &self.lifecycle)
            .field("condition", &self.condition.as_ref().map(|_| "<fn>"))
            .field("expiry", &self.expiry)
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A state's options as `#[state(...)]` writes them: all `const`, for `static GRAPH`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StateSpec {
    /// The state's name.
    pub name: &'static str,
    /// Resources held while running.
    pub resources: Option<ResourceRequirements>,
    /// Admission priority.
    pub priority: Priority,
    /// Per-attempt timeout.
    pub timeout: Option<Duration>,
    /// Retry policy.
    pub retry: Option<RetryPolicy>,
    /// How often the state may start; `None` for no limit.
    pub rate_limit: Option<RateLimit>,
    /// Dependencies by name.
    pub depends_on: &'static [(&'static str, DependencyType)],
    /// Where to go once retries are spent.
    pub on_error: Option<&'static str>,
    /// May be stopped and re-queued for higher priority work.
    pub preemptible: bool,
    /// A fan-in that waits for every branch.
    pub join: bool,
    /// Runs its body on the blocking pool.
    pub blocking: bool,
    /// Every literal transition target in the body.
    pub edges: &'static [&'static str],
    /// Whether the body also has targets computed at run time.
    pub computed_targets: bool,
}

impl StateSpec {
    /// A state with default options and no known edges.
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            resources: None,
            priority: Priority::Normal,
            timeout: None,
            retry: None,
            rate_limit: None,
            depends_on: &[],
            on_error: None,
            preemptible: false,
            join: false,
            blocking: false,
            edges: &[],
            computed_targets: true,
        }
    }
}
