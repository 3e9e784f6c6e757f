//! Per-state rate limits (`#[state(rate_limit(per_second = 10, burst = 20))]`): a token
//! bucket from the `governor` crate, on tokio's clock.
//!
//! Invariants:
//! - What is limited: starts. A [`Limiter`] holds `burst` cells, refilled at `per_second`
//!   cells a second (fractions allowed: 0.5 is one cell every 2 s); each [`Limiter::wait`]
//!   takes one cell, waiting until one is there. Whoever owns the limiter decides what shares
//!   it: one per rate-limited state and run, one cell per attempt (retries included), is the
//!   shape of an API quota.
//! - Waiting holds nothing: `wait` touches no lock, permit or pool resource, only the
//!   limiter's atomic state, so it is to be awaited *before* an attempt asks the pool for
//!   resources. Dropping a waiting future (a cancelled run) takes no cell.
//! - The clock is tokio's: time is read with `tokio::time::Instant` and waited with
//!   `tokio::time::sleep_until`, so paused virtual time (`tokio::time::pause`) drives the
//!   limiter as it drives timeouts and retries. Nothing here blocks a thread or uses
//!   governor's own (futures-timer based) waits.
//! - Waiters are not queued: when several wait on one limiter, each re-checks when its
//!   cell was due, and whichever checks first takes it; the rate is kept, the order is not.

use std::num::NonZeroU32;
use std::time::Duration;

use agent_core::RateLimit;
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::time::Instant;

/// The longest a full burst may take to refill: governor counts time in `u64` nanoseconds
/// (about 584 years), so slower limits are made this fast rather than overflow.
const MAX_REFILL: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// governor's time source on tokio's clock: a measurement is the time since `origin`.
#[derive(Clone, Copy, Debug)]
struct TokioClock {
    origin: Instant,
}

impl Clock for TokioClock {
    /// `Duration` is a governor `Reference` already.
    type Instant = Duration;

    fn now(&self) -> Duration {
        Instant::now().saturating_duration_since(self.origin)
    }
}

/// One token bucket; see the module docs.
// wired by the runtime in a follow-up
pub(crate) struct Limiter {
    clock: TokioClock,
    bucket: RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>,
}

// wired by the runtime in a follow-up
impl Limiter {
    /// A full bucket for `limit`, which should be valid ([`RateLimit::validate`]); an invalid
    /// rate is taken as the slowest the limiter can count, an invalid burst as 1.
    pub(crate) fn new(limit: RateLimit) -> Self {
        debug_assert!(limit.validate().is_ok(), "{limit:?}: {:?}", limit.validate());
        let burst = NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN);
        let slowest = MAX_REFILL / burst.get();
        let period = Duration::try_from_secs_f64(1.0 / limit.per_second).unwrap_or(slowest).min(slowest);
        let quota = Quota::with_period(period.max(Duration::from_nanos(1)))
            .expect("the period is at least 1 ns")
            .allow_burst(burst);
        let clock = TokioClock { origin: Instant::now() };
        Self { clock, bucket: RateLimiter::direct_with_clock(quota, clock) }
    }

    /// Take one cell, waiting (on tokio's clock) until one is there.
    pub(crate) async fn wait(&self) {
        loop {
            match self.bucket.check() {
                Ok(()) => return,
                Err(not_until) => {
                    let due = self.clock.origin.checked_add(not_until.earliest_possible());
                    // A due time past what `Instant` can hold: wait a while and look again.
                    let due = due.unwrap_or_else(|| Instant::now() + MAX_REFILL);
                    tokio::time::sleep_until(due).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn waits(limiter: &Limiter, n: usize) -> Vec<Duration> {
        let start = Instant::now();
        let mut at = Vec::with_capacity(n);
        for _ in 0..n {
            limiter.wait().await;
            at.push(start.elapsed());
        }
        at
    }

    #[tokio::test(start_paused = true)]
    async fn ten_a_second_spaces_cells_a_tenth_apart() {
        let limiter = Limiter::new(RateLimit::new(10.0));
        let start = Instant::now();
        let at = waits(&limiter, 11).await;
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_secs(1) && elapsed < Duration::from_millis(1100), "{elapsed:?}");
        assert_eq!(at[0], Duration::ZERO);
        for pair in at.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(gap >= Duration::from_millis(100) && gap < Duration::from_millis(110), "{at:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_free_then_the_rate_holds() {
        let limiter = Limiter::new(RateLimit::new(10.0).burst(5));
        let at = waits(&limiter, 5).await;
        assert_eq!(at, [Duration::ZERO; 5]);
        let start = Instant::now();
        limiter.wait().await;
        let sixth = start.elapsed();
        assert!(sixth >= Duration::from_millis(100) && sixth < Duration::from_millis(110), "{sixth:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_bucket_refills_up_to_its_burst() {
        let limiter = Limiter::new(RateLimit::new(10.0).burst(3));
        waits(&limiter, 3).await;
        tokio::time::sleep(Duration::from_secs(60)).await;
        let at = waits(&limiter, 4).await;
        assert_eq!(at[..3], [Duration::ZERO; 3]);
        assert!(at[3] >= Duration::from_millis(100) && at[3] < Duration::from_millis(110), "{at:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn fractional_rates_space_cells_seconds_apart() {
        let limiter = Limiter::new(RateLimit::new(0.5));
        let at = waits(&limiter, 3).await;
        assert_eq!(at[0], Duration::ZERO);
        for (i, t) in at.iter().enumerate().skip(1) {
            let due = Duration::from_secs(2 * i as u64);
            assert!(*t >= due && *t < due + Duration::from_millis(10), "{at:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_waiters_share_the_rate() {
        let limiter = std::sync::Arc::new(Limiter::new(RateLimit::new(4.0).burst(2)));
        let start = Instant::now();
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let limiter = limiter.clone();
                tokio::spawn(async move {
                    limiter.wait().await;
                    start.elapsed()
                })
            })
            .collect();
        let mut at = Vec::new();
        for task in tasks {
            at.push(task.await.unwrap());
        }
        at.sort();
        // Two at once, then one every 250 ms: the tenth at 2 s.
        assert_eq!(at[..2], [Duration::ZERO; 2]);
        for (i, t) in at.iter().enumerate().skip(2) {
            let due = Duration::from_millis(250 * (i as u64 - 1));
            assert!(*t >= due && *t < due + Duration::from_millis(10), "{at:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn extreme_limits_do_not_overflow() {
        let fast = Limiter::new(RateLimit::new(1e12).burst(u32::MAX));
        waits(&fast, 3).await;
        let slow = Limiter::new(RateLimit::new(1e-30).burst(u32::MAX));
        waits(&slow, 3).await;
        let slow = Limiter::new(RateLimit::new(1e-30));
        slow.wait().await;
        let second = tokio::time::timeout(Duration::from_secs(3600), slow.wait()).await;
        assert!(second.is_err(), "a second cell came within the hour");
    }
}
