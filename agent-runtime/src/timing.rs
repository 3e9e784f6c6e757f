//! Per-state timings of a run: how long attempts ran (count, mean, p50, p99, max) and the
//! wall-clock span of each state, recorded only when asked
//! ([`Agent::record_timings`](crate::Agent::record_timings); on by default for durable runs).
//!
//! Invariants:
//! - A run without timings has no `Timings` at all: the hot path checks one `Option` and
//!   reads no clock. With timings, an attempt costs two monotonic clock reads
//!   (`tokio::time::Instant`, so paused test time measures exactly); its wall-clock start
//!   and end are derived from them and the wall clock read once at the run's start (so
//!   under paused time they advance with the paused clock).
//! - Recording takes no lock: every counter is an atomic, bucket counts included.
//! - Durations go into a log-bucketed histogram of 32 buckets per power of two (each
//!   bucket spans at most 1/32 of its lower bound: quantiles are within ~3% of the true
//!   value, and exact below 64 ns). A state's first sample is kept apart, so a state run
//!   once (every state of a chain) costs no histogram; the 5.6 KiB of buckets are allocated
//!   on its second sample.
//! - `max` and the count and sum are exact; p50 and p99 report the upper bound of the bucket
//!   holding the quantile, clamped to `max`.

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Duration;

use crate::store::now_ms;

/// Sub-buckets per power of two.
const SUB: u64 = 32;
const SUB_BITS: u32 = 5;
/// Values below this are their own bucket.
const LINEAR: u64 = 2 * SUB;
/// Largest exponent kept (2^47 ns, about 39 hours); longer durations count there.
const MAX_EXP: u32 = 47;
const BUCKETS: usize = (LINEAR + (MAX_EXP as u64 - 5) * SUB) as usize;
const UNSET: u64 = u64::MAX;
const NO_TIME: i64 = i64::MIN;

/// The bucket of `v` nanoseconds.
fn bucket(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let e = (63 - v.leading_zeros()).min(MAX_EXP);
    let v = v.min((1u64 << (MAX_EXP + 1)) - 1);
    let sub = (v >> (e - SUB_BITS)) & (SUB - 1);
    (LINEAR + (e as u64 - 6) * SUB + sub) as usize
}

/// The largest value of bucket `i`.
fn upper(i: usize) -> u64 {
    let i = i as u64;
    if i < LINEAR {
        return i;
    }
    let e = (i - LINEAR) / SUB + 6;
    let sub = (i - LINEAR) % SUB;
    ((SUB + sub + 1) << (e - SUB_BITS as u64)) - 1
}

/// The timings of one state.
pub(crate) struct StateTimer {
    count: AtomicU64,
    sum: AtomicU64,
    max: AtomicU64,
    /// The first sample, kept out of the histogram (see the module doc).
    first: AtomicU64,
    buckets: OnceLock<Box<[AtomicU32]>>,
    /// Wall clock of the first start, ms since the Unix epoch (`NO_TIME`: never).
    started_ms: AtomicI64,
    /// Wall clock of the last end.
    finished_ms: AtomicI64,
    /// Time spent at the dependency gate, in nanoseconds.
    pub dependency_wait: AtomicU64,
}

impl Default for StateTimer {
    fn default() -> Self {
        StateTimer {
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            max: AtomicU64::new(0),
            first: AtomicU64::new(UNSET),
            buckets: OnceLock::new(),
            started_ms: AtomicI64::new(NO_TIME),
            finished_ms: AtomicI64::new(NO_TIME),
            dependency_wait: AtomicU64::new(0),
        }
    }
}

impl StateTimer {
    /// An attempt starts at wall-clock `ms`: the state's first start is kept.
    pub(crate) fn started(&self, ms: i64) {
        if self.started_ms.load(Relaxed) == NO_TIME {
            let _ = self.started_ms.compare_exchange(NO_TIME, ms, Relaxed, Relaxed);
        }
    }

    /// An attempt that ran `d` ended at wall-clock `ms`.
    pub(crate) fn ended(&self, d: Duration, ms: i64) {
        let v = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum.fetch_add(v, Relaxed);
        if v > self.max.load(Relaxed) {
            // A load first: branches of a fan-out rarely raise the maximum, so they share
            // its cache line instead of each writing it.
            self.max.fetch_max(v, Relaxed);
        }
        if self.count.fetch_add(1, Relaxed) == 0 {
            self.first.store(v, Relaxed);
        } else {
            let buckets = self.buckets.get_or_init(|| (0..BUCKETS).map(|_| AtomicU32::new(0)).collect());
            buckets[bucket(v)].fetch_add(1, Relaxed);
        }
        self.finished_ms.store(ms, Relaxed);
    }

    /// Times restored from a checkpoint.
    pub(crate) fn restore(&self, started_ms: Option<i64>, finished_ms: Option<i64>) {
        if let Some(s) = started_ms {
            self.started_ms.store(s, Relaxed);
        }
        if let Some(f) = finished_ms {
            self.finished_ms.store(f, Relaxed);
        }
    }

    /// First start and last end, ms since the Unix epoch.
    pub(crate) fn times(&self) -> (Option<i64>, Option<i64>) {
        let get = |a: &AtomicI64| Some(a.load(Relaxed)).filter(|&t| t != NO_TIME);
        (get(&self.started_ms), get(&self.finished_ms))
    }

    /// A summary of the state's attempts so far.
    pub(crate) fn summary(&self) -> StateTiming {
        let (first_started_ms, last_finished_ms) = self.times();
        let count = self.count.load(Relaxed);
        let max = self.max.load(Relaxed);
        let sum = self.sum.load(Relaxed);
        let mut counts: Vec<(u64, u64)> = Vec::new(); // (upper bound, count), ascending
        if let Some(b) = self.buckets.get() {
            counts.extend(b.iter().enumerate().filter_map(|(i, c)| match c.load(Relaxed) {
                0 => None,
                n => Some((upper(i), u64::from(n))),
            }));
        }
        let first = self.first.load(Relaxed);
        if first != UNSET {
            // Its exact value, among the buckets' upper bounds.
            let at = counts.partition_point(|&(u, _)| u < first);
            counts.insert(at, (first, 1));
        }
        let total: u64 = counts.iter().map(|c| c.1).sum();
        let quantile = |q: f64| -> Duration {
            if total == 0 {
                return Duration::ZERO;
            }
            let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
            let mut seen = 0;
            for &(u, n) in &counts {
                seen += n;
                if seen >= rank {
                    return Duration::from_nanos(u.min(max));
                }
            }
            Duration::from_nanos(max)
        };
        StateTiming {
            count,
            sum: Duration::from_nanos(sum),
            mean: Duration::from_nanos(sum.checked_div(count).unwrap_or(0)),
            p50: quantile(0.5),
            p99: quantile(0.99),
            max: Duration::from_nanos(max),
            first_started_ms,
            last_finished_ms,
            dependency_wait: Duration::from_nanos(self.dependency_wait.load(Relaxed)),
        }
    }
}

/// How long a state's attempts ran, in a run recording timings
/// ([`Agent::record_timings`](crate::Agent::record_timings)).
///
/// Attempts that completed and attempts that failed are counted alike; time waiting for
/// resources, a dependency or a retry is not part of an attempt. Quantiles are within about
/// 3% of the exact value (see [`StateMetrics::timing`](crate::StateMetrics::timing)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StateTiming {
    /// Attempts measured.
    pub count: u64,
    /// Their total duration.
    pub sum: Duration,
    /// Their mean duration.
    pub mean: Duration,
    /// The median duration.
    pub p50: Duration,
    /// The 99th percentile.
    pub p99: Duration,
    /// The longest attempt.
    pub max: Duration,
    /// When the state first started, in milliseconds since the Unix epoch.
    pub first_started_ms: Option<i64>,
    /// When an attempt of it last ended, in milliseconds since the Unix epoch.
    pub last_finished_ms: Option<i64>,
    /// Time spent waiting at its dependency gate, summed over instances.
    pub dependency_wait: Duration,
}

/// The timings of every state of a run, by state index (through `Deref`).
pub(crate) struct Timings {
    /// What attempt start times are measured from, so a start fits in a `u64` of the
    /// branch future.
    epoch: tokio::time::Instant,
    /// The wall clock at `epoch`, in ms since the Unix epoch: wall-clock times are derived
    /// from it and the monotonic clock, so an attempt reads one clock at each end, not two.
    epoch_ms: i64,
    states: Box<[StateTimer]>,
}

impl std::ops::Deref for Timings {
    type Target = [StateTimer];
    fn deref(&self) -> &[StateTimer] {
        &self.states
    }
}

/// A start not measured (no timings): see [`Timings::now`].
pub(crate) const UNTIMED: u64 = u64::MAX;

impl Timings {
    /// Nanoseconds since the run's epoch, now.
    pub(crate) fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(UNTIMED - 2).min(UNTIMED - 2)
    }

    /// The wall clock at `at` (a value of [`Timings::now`]), ms since the Unix epoch.
    pub(crate) fn wall_ms(&self, at: u64) -> i64 {
        self.epoch_ms.saturating_add((at / 1_000_000) as i64)
    }

    /// An attempt of state `pos` starts: its start (a value of [`Timings::now`]).
    pub(crate) fn attempt_started(&self, pos: usize) -> u64 {
        let now = self.now();
        self.states[pos].started(self.wall_ms(now));
        now
    }

    /// An attempt of state `pos` that started at `start` ends: its duration.
    pub(crate) fn attempt_ended(&self, pos: usize, start: u64) -> Duration {
        let now = self.now();
        let d = Duration::from_nanos(now.saturating_sub(start));
        self.states[pos].ended(d, self.wall_ms(now));
        d
    }
}

/// Timings for `n` states.
pub(crate) fn timings(n: usize) -> Timings {
    Timings {
        epoch: tokio::time::Instant::now(),
        epoch_ms: now_ms(),
        states: (0..n).map(|_| StateTimer::default()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_tight() {
        let mut last = 0;
        for v in (0..1_000_000u64).step_by(7).chain([1 << 40, (1 << 47) + 5, u64::MAX]) {
            let b = bucket(v);
            assert!(b < BUCKETS, "{v} -> {b}");
            assert!(b >= last || v > (1 << 40));
            last = b;
            if v < 1 << 47 {
                assert!(upper(b) >= v, "{v} above its bucket's bound {}", upper(b));
                assert!(upper(b) - v <= v / 31 + 1, "{v}: bound {} too loose", upper(b));
            }
        }
    }

    #[test]
    fn quantiles_of_known_samples() {
        let t = StateTimer::default();
        for ms in 1..=100u64 {
            t.ended(Duration::from_millis(ms), 0);
        }
        let s = t.summary();
        assert_eq!(s.count, 100);
        assert_eq!(s.max, Duration::from_millis(100));
        let near = |d: Duration, ms: f64| (d.as_secs_f64() * 1e3 - ms).abs() <= ms * 0.035;
        assert!(near(s.p50, 50.0), "{:?}", s.p50);
        assert!(near(s.p99, 99.0), "{:?}", s.p99);
        assert_eq!(s.mean, Duration::from_micros(50_500));
    }
}
