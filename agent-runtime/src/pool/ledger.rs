//! The pool's books: what is held, who waits, and who is admitted next. Pure and
//! synchronous; time is passed in (`now`, since the pool was made), so it is tested with a
//! fake clock and driven by [`super::ResourcePool`] under one lock.
//!
//! Invariants:
//! - For every kind, the sum held never exceeds the total (within `EPS`), and on every GPU
//!   device the shares held never exceed its capacity.
//! - A request is granted all at once or not at all.
//! - Waiters are ordered by priority (Critical first), then by arrival (`seq`). A scan looks
//!   at the first `window` of them only, so one decision costs O(window), whatever the
//!   queue's length.
//! - Backfilling: a waiter that does not fit does not stop later ones that do. Each later
//!   grant that takes a kind the waiter is short of counts as passing it (`bypassed`); one
//!   that takes only other kinds does not delay it and is not counted. Once `bypassed`
//!   reaches `bypass_limit` the waiter holds a reservation: later waiters may use only what
//!   is free beyond its need, so it is delayed by nobody of its priority or lower from then
//!   on (see `DESIGN.md`).
//! - Quotas cap what one scope (agent, state or tag) holds; a waiter blocked by its quota
//!   reserves nothing, since what it waits for is its own scope's release.
//! - A request that can never fit (above a total or a quota) fails at once and is never
//!   queued. (Any GPU amount within the total has a device arrangement: see `gpu`.)

// Amounts of several arrays are walked in step by kind index.
#![allow(clippy::needless_range_loop)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use agent_core::{Priority, ResourceError, ResourceType};
use rustc_hash::FxHashMap;

use super::gpu::Devices;
use super::QuotaScope;

/// Kinds of resource, indexed by [`ResourceType::index`].
pub(crate) const KINDS: usize = 5;
const GPU: usize = ResourceType::Gpu.index();
/// Slack for float sums (fractional GPUs, memory in MB).
pub(crate) const EPS: f64 = 1e-9;

/// An amount of every kind.
pub(crate) type Amounts = [f64; KINDS];

/// How a pool is set up.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Config {
    pub totals: Amounts,
    pub preemption: bool,
    pub quotas: bool,
    /// How many waiters, from the head, a scan looks at.
    pub window: usize,
    /// How many times a waiter may be passed before it reserves what it needs.
    pub bypass_limit: u32,
}

/// Who asks, and for what.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Request {
    pub agent: Arc<str>,
    pub state: Arc<str>,
    pub tags: Arc<[Arc<str>]>,
    pub amounts: Amounts,
    pub priority: Priority,
    pub preemptible: bool,
}

/// A waiter's place in the queue: priority rank (0 = Critical), then arrival.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct WaiterId {
    pub rank: u8,
    pub seq: u64,
}

/// An allocation held.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct AllocId(pub u64);

/// What a grant gives: its id and the GPU share of each device used.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Grant {
    pub id: AllocId,
    pub gpus: Vec<(usize, f64)>,
    /// How long the request waited.
    pub waited: Duration,
}

/// The answer to a request.
#[derive(Debug, PartialEq)]
pub(crate) enum Decision {
    Granted(Grant),
    Queued(WaiterId),
    Failed(ResourceError),
}

/// What a scan decided, besides what the caller asked: waiters to wake with their grant,
/// running allocations to stop, and waiters that can now never fit.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Outcome {
    pub granted: Vec<(WaiterId, Grant)>,
    pub preempt: Vec<AllocId>,
    pub failed: Vec<(WaiterId, ResourceError)>,
}

#[derive(Clone, Debug)]
struct Waiter {
    req: Request,
    since: Duration,
    bypassed: u32,
    /// Victims were chosen for this waiter and are being stopped.
    preempting: bool,
}

#[derive(Clone, Debug)]
struct Held {
    req: Request,
    gpus: Vec<(usize, f64)>,
    since: Duration,
    /// Chosen as a preemption victim; its release is on the way.
    preempting: bool,
}

/// Counters of one kind.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct KindStats {
    pub current: f64,
    pub peak: f64,
    pub allocations: u64,
    pub failed: u64,
    pub waits: u64,
    pub total_wait: Duration,
    pub longest_wait: Duration,
}

/// The books.
#[derive(Debug)]
pub(crate) struct Ledger {
    config: Config,
    held: Amounts,
    devices: Devices,
    queue: BTreeMap<WaiterId, Waiter>,
    allocations: BTreeMap<AllocId, Held>,
    quotas: FxHashMap<(QuotaScope, usize), f64>,
    held_by_scope: FxHashMap<QuotaScope, Amounts>,
    stats: [KindStats; KINDS],
    preempted: BTreeMap<Arc<str>, u64>,
    next_seq: u64,
    next_alloc: u64,
    /// Reused by every scan, so a scan allocates nothing when nobody is admitted.
    scratch_passed: Vec<(WaiterId, u8, u32)>,
}

fn rank(p: Priority) -> u8 {
    match p {
        Priority::Critical => 0,
        Priority::High => 1,
        Priority::Normal => 2,
        Priority::Low => 3,
    }
}

fn scopes(req: &Request) -> impl Iterator<Item = QuotaScope> + '_ {
    [QuotaScope::Agent(req.agent.clone()), QuotaScope::State(req.state.clone())]
        .into_iter()
        .chain(req.tags.iter().map(|t| QuotaScope::Tag(t.clone())))
}

impl Ledger {
    pub(crate) fn new(config: Config) -> Self {
        Ledger {
            devices: Devices::new(config.totals[GPU]),
            config,
            held: [0.0; KINDS],
            queue: BTreeMap::new(),
            allocations: BTreeMap::new(),
            quotas: FxHashMap::default(),
            held_by_scope: FxHashMap::default(),
            stats: [KindStats::default(); KINDS],
            preempted: BTreeMap::new(),
            next_seq: 0,
            next_alloc: 0,
            scratch_passed: Vec::new(),
        }
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// Ask for `req`: granted now, queued, or failed because it can never fit.
    pub(crate) fn request(&mut self, req: Request, now: Duration) -> (Decision, Outcome) {
        if let Err(e) = self.check_possible(&req) {
            self.count_failure(&req);
            return (Decision::Failed(e), Outcome::default());
        }
        let id = WaiterId { rank: rank(req.priority), seq: self.next_seq };
        self.next_seq += 1;
        let mut ahead = self.queue.range(..id);
        // Fast path: nothing waits ahead of it and it fits.
        if ahead.next().is_none() {
            let free: Amounts = std::array::from_fn(|k| self.config.totals[k] - self.held[k]);
            if let Some(gpus) = self.fits_in(&req, &free, &[0.0; KINDS], &self.devices, &[]) {
                let grant = self.grant(req, gpus, now, now);
                return (Decision::Granted(grant), Outcome::default());
            }
        }
        // Beyond the window nothing changes: nothing was freed, and the scan would not
        // reach it.
        let beyond_window = self.queue.range(..id).nth(self.config.window - 1).is_some();
        self.queue.insert(id, Waiter { req, since: now, bypassed: 0, preempting: false });
        if beyond_window {
            return (Decision::Queued(id), Outcome::default());
        }
        let mut outcome = self.schedule(now);
        if let Some(i) = outcome.granted.iter().position(|(w, _)| *w == id) {
            let (_, grant) = outcome.granted.swap_remove(i);
            return (Decision::Granted(grant), outcome);
        }
        (Decision::Queued(id), outcome)
    }

    /// Give back an allocation; admits whoever now fits.
    pub(crate) fn release(&mut self, id: AllocId, now: Duration) -> Outcome {
        let Some(held) = self.allocations.remove(&id) else {
            return Outcome::default();
        };
        for k in 0..KINDS {
            self.held[k] = (self.held[k] - held.req.amounts[k]).max(0.0);
            self.stats[k].current = self.held[k];
        }
        self.devices.free(&held.gpus);
        if self.config.quotas {
            for scope in scopes(&held.req) {
                if let Some(h) = self.held_by_scope.get_mut(&scope) {
                    for k in 0..KINDS {
                        h[k] = (h[k] - held.req.amounts[k]).max(0.0);
                    }
                }
            }
        }
        self.schedule(now)
    }

    /// A waiter gave up (its future was dropped); others may now go ahead.
    pub(crate) fn withdraw(&mut self, id: WaiterId, now: Duration) -> Outcome {
        // Only a waiter inside the window shapes a scan (its reservation; the waiter after
        // the window that now enters it).
        let in_window = self.queue.range(..id).nth(self.config.window - 1).is_none();
        match self.queue.remove(&id) {
            Some(_) if in_window => self.schedule(now),
            _ => Outcome::default(),
        }
    }

    /// Set (or, with `None`, lift) a quota; waiters that can now never fit fail.
    pub(crate) fn set_quota(
        &mut self,
        scope: QuotaScope,
        kind: ResourceType,
        amount: Option<f64>,
        now: Duration,
    ) -> Outcome {
        match amount {
            Some(a) => self.quotas.insert((scope, kind.index()), a),
            None => self.quotas.remove(&(scope, kind.index())),
        };
        let doomed: Vec<(WaiterId, ResourceError)> =
            self.queue.iter().filter_map(|(id, w)| self.check_possible(&w.req).err().map(|e| (*id, e))).collect();
        for (id, _) in &doomed {
            if let Some(w) = self.queue.remove(id) {
                self.count_failure(&w.req);
            }
        }
        let mut outcome = self.schedule(now);
        outcome.failed.extend(doomed);
        outcome
    }

    fn count_failure(&mut self, req: &Request) {
        for k in 0..KINDS {
            if req.amounts[k] > 0.0 {
                self.stats[k].failed += 1;
            }
        }
    }

    /// Whether `req` could ever be granted, on an empty pool, within its quotas.
    fn check_possible(&self, req: &Request) -> Result<(), ResourceError> {
        for kind in ResourceType::ALL {
            let k = kind.index();
            if req.amounts[k] > self.config.totals[k] + EPS {
                return Err(ResourceError::ExceedsTotal {
                    state: req.state.to_string(),
                    kind,
                    requested: req.amounts[k],
                    total: self.config.totals[k],
                });
            }
        }
        if self.config.quotas {
            for scope in scopes(req) {
                for kind in ResourceType::ALL {
                    if let Some(&quota) = self.quotas.get(&(scope.clone(), kind.index())) {
                        if req.amounts[kind.index()] > quota + EPS {
                            return Err(ResourceError::ExceedsQuota {
                                state: req.state.to_string(),
                                scope: scope.to_string(),
                                kind,
                                requested: req.amounts[kind.index()],
                                quota,
                            });
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn within_quotas(&self, req: &Request, scope_delta: &[(QuotaScope, Amounts)]) -> bool {
        if !self.config.quotas || self.quotas.is_empty() {
            return true;
        }
        scopes(req).all(|scope| {
            let mut held = self.held_by_scope.get(&scope).copied().unwrap_or([0.0; KINDS]);
            if let Some((_, d)) = scope_delta.iter().find(|(s, _)| *s == scope) {
                (0..KINDS).for_each(|k| held[k] += d[k]);
            }
            (0..KINDS).all(|k| match self.quotas.get(&(scope.clone(), k)) {
                Some(&quota) => req.amounts[k] == 0.0 || held[k] + req.amounts[k] <= quota + EPS,
                None => true,
            })
        })
    }

    /// The GPU placement if `req` fits in `free` minus `reserved` on `devices`, within its
    /// quotas (counting `scope_delta`, grants decided but not yet applied), else `None`.
    fn fits_in(
        &self,
        req: &Request,
        free: &Amounts,
        reserved: &Amounts,
        devices: &Devices,
        scope_delta: &[(QuotaScope, Amounts)],
    ) -> Option<Vec<(usize, f64)>> {
        for k in 0..KINDS {
            if req.amounts[k] > 0.0 && req.amounts[k] > free[k] - reserved[k] + EPS {
                return None;
            }
        }
        if !self.within_quotas(req, scope_delta) {
            return None;
        }
        if req.amounts[GPU] > 0.0 {
            devices.place(req.amounts[GPU])
        } else {
            Some(Vec::new())
        }
    }

    fn grant(&mut self, req: Request, gpus: Vec<(usize, f64)>, since: Duration, now: Duration) -> Grant {
        let id = AllocId(self.next_alloc);
        self.next_alloc += 1;
        let waited = now.saturating_sub(since);
        for k in 0..KINDS {
            let a = req.amounts[k];
            if a == 0.0 {
                continue;
            }
            self.held[k] += a;
            let s = &mut self.stats[k];
            s.current = self.held[k];
            s.peak = s.peak.max(self.held[k]);
            s.allocations += 1;
            if !waited.is_zero() {
                s.waits += 1;
                s.total_wait += waited;
                s.longest_wait = s.longest_wait.max(waited);
            }
        }
        self.devices.take(&gpus);
        if self.config.quotas {
            for scope in scopes(&req) {
                let h = self.held_by_scope.entry(scope).or_insert([0.0; KINDS]);
                for k in 0..KINDS {
                    h[k] += req.amounts[k];
                }
            }
        }
        self.allocations.insert(id, Held { req, gpus: gpus.clone(), since: now, preempting: false });
        Grant { id, gpus, waited }
    }

    /// Admit, in order, every waiter of the window that fits.
    ///
    /// Two phases, so that the scan walks the queue in order without one map lookup per
    /// waiter: first decide on local copies of what is free (and of the GPU devices and
    /// scope holdings, when they change), then apply the decisions.
    fn schedule(&mut self, now: Duration) -> Outcome {
        let mut outcome = Outcome::default();
        let mut free: Amounts = std::array::from_fn(|k| self.config.totals[k] - self.held[k]);
        let mut reserved = [0.0; KINDS];
        let mut devices: Option<Devices> = None;
        let mut scope_delta: Vec<(QuotaScope, Amounts)> = Vec::new();
        let mut grants: Vec<(WaiterId, Vec<(usize, f64)>)> = Vec::new();
        // Waiters passed over: the kinds each is short of, and the later grants that took one.
        let mut passed = std::mem::take(&mut self.scratch_passed);
        let mut preempting: Vec<(WaiterId, Vec<AllocId>)> = Vec::new();
        let mut victims_pending: Option<bool> = None;
        for (&id, w) in self.queue.iter().take(self.config.window) {
            let devs = devices.as_ref().unwrap_or(&self.devices);
            if let Some(gpus) = self.fits_in(&w.req, &free, &reserved, devs, &scope_delta) {
                for k in 0..KINDS {
                    free[k] -= w.req.amounts[k];
                }
                if !gpus.is_empty() {
                    devices.get_or_insert_with(|| self.devices.clone()).take(&gpus);
                }
                if self.config.quotas && !self.quotas.is_empty() {
                    for scope in scopes(&w.req) {
                        match scope_delta.iter_mut().find(|(s, _)| *s == scope) {
                            Some((_, d)) => (0..KINDS).for_each(|k| d[k] += w.req.amounts[k]),
                            None => scope_delta.push((scope, w.req.amounts)),
                        }
                    }
                }
                // It passes every waiter before it that is short of a kind it takes.
                for (_, short, passes) in passed.iter_mut() {
                    if (0..KINDS).any(|k| *short & (1 << k) != 0 && w.req.amounts[k] > 0.0) {
                        *passes += 1;
                    }
                }
                grants.push((id, gpus));
                continue;
            }
            if !self.within_quotas(&w.req, &scope_delta) {
                // Waits for its own scope; holds nobody else back.
                continue;
            }
            let mut preempts = w.preempting;
            if self.config.preemption && w.req.priority >= Priority::High {
                let pending = *victims_pending.get_or_insert_with(|| self.allocations.values().any(|h| h.preempting));
                // A waiter whose victims are all gone and that still does not fit (their
                // release went to waiters ahead of it) chooses again.
                if !w.preempting || !pending {
                    let victims = self.choose_victims(&w.req, &free, &reserved);
                    preempts = !victims.is_empty();
                    if preempts || w.preempting {
                        preempting.push((id, victims));
                    }
                }
            }
            if preempts || w.bypassed >= self.config.bypass_limit {
                for k in 0..KINDS {
                    reserved[k] += w.req.amounts[k];
                }
            }
            let short = (0..KINDS)
                .filter(|&k| w.req.amounts[k] > 0.0 && w.req.amounts[k] > free[k] - reserved[k] + EPS)
                .fold(0u8, |m, k| m | 1 << k);
            // Short of GPU devices only (shares lie badly), it is short of GPU.
            passed.push((id, if short == 0 { 1 << GPU } else { short }, 0));
        }
        for (id, gpus) in grants.iter_mut() {
            if let Some(w) = self.queue.remove(id) {
                let grant = self.grant(w.req, std::mem::take(gpus), w.since, now);
                outcome.granted.push((*id, grant));
            }
        }
        for (id, _, passes) in passed.drain(..) {
            if passes > 0 {
                if let Some(w) = self.queue.get_mut(&id) {
                    w.bypassed = w.bypassed.saturating_add(passes);
                }
            }
        }
        self.scratch_passed = passed;
        for (id, victims) in preempting {
            for v in &victims {
                if let Some(h) = self.allocations.get_mut(v) {
                    h.preempting = true;
                    *self.preempted.entry(h.req.state.clone()).or_insert(0) += 1;
                }
            }
            if let Some(w) = self.queue.get_mut(&id) {
                // No victims: it chose again and found none, so it no longer reserves.
                w.preempting = !victims.is_empty();
            }
            outcome.preempt.extend(victims);
        }
        outcome
    }

    /// Running preemptible allocations of lower priority whose release would let `req` fit,
    /// lowest priority and newest first; empty when even all of them would not be enough.
    fn choose_victims(&self, req: &Request, free_now: &Amounts, reserved: &Amounts) -> Vec<AllocId> {
        let mut candidates: Vec<(&AllocId, &Held)> = (self.allocations.iter())
            .filter(|(_, h)| h.req.preemptible && !h.preempting && h.req.priority < req.priority)
            .collect();
        candidates.sort_by(|a, b| a.1.req.priority.cmp(&b.1.req.priority).then(b.1.since.cmp(&a.1.since)));
        // What will be free once releases already under way land.
        let mut free: Amounts = std::array::from_fn(|k| free_now[k] - reserved[k]);
        for h in self.allocations.values().filter(|h| h.preempting) {
            for k in 0..KINDS {
                free[k] += h.req.amounts[k];
            }
        }
        let enough = |free: &Amounts| (0..KINDS).all(|k| req.amounts[k] <= free[k] + EPS);
        if enough(&free) {
            // Releases under way already make room: stop nobody else.
            return Vec::new();
        }
        let mut victims = Vec::new();
        for (id, h) in candidates {
            // Only victims holding something the request lacks help.
            if !(0..KINDS).any(|k| req.amounts[k] > free[k] + EPS && h.req.amounts[k] > 0.0) {
                continue;
            }
            for k in 0..KINDS {
                free[k] += h.req.amounts[k];
            }
            victims.push(*id);
            if enough(&free) {
                return victims;
            }
        }
        Vec::new()
    }

    /// Per-kind counters, with totals.
    pub(crate) fn stats(&self) -> [(f64, KindStats); KINDS] {
        std::array::from_fn(|k| (self.config.totals[k], self.stats[k]))
    }

    /// Every allocation held now, oldest first.
    pub(crate) fn allocations(&self) -> impl Iterator<Item = (&Request, &[(usize, f64)])> {
        self.allocations.values().map(|h| (&h.req, h.gpus.as_slice()))
    }

    /// Every waiter in admission order, with how long it has waited.
    pub(crate) fn waiting(&self, now: Duration) -> impl Iterator<Item = (&Request, Duration)> {
        self.queue.values().map(move |w| (&w.req, now.saturating_sub(w.since)))
    }

    /// How many times each state was preempted.
    pub(crate) fn preempted(&self) -> &BTreeMap<Arc<str>, u64> {
        &self.preempted
    }

    /// The amount held of each kind now.
    #[cfg(test)]
    pub(crate) fn held(&self) -> Amounts {
        self.held
    }
}

#[cfg(test)]
mod tests;
