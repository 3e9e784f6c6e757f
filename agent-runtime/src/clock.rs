//! The wall clock durable waits keep time by (`ctx.sleep`, a signal wait's timeout):
//! milliseconds since the Unix epoch, as stores record them.
//!
//! It reads the system clock once, at the first reading in the process, and from then on
//! adds tokio's monotonic time elapsed since (`tokio::time::Instant`). So:
//! - under `tokio::time::pause()` it advances with the paused clock: a test sleeps a day,
//!   "kills" the run and recovers it half an hour later, all in virtual time, and the
//!   recovered run computes what is left of its sleep from the same clock;
//! - in a process it never goes back, whatever the system clock does (a wake time armed
//!   before a step back of NTP still comes);
//! - between processes it agrees with their system clocks as of each one's first reading
//!   (a wait armed in one process and resumed in another compares wall times, like leases
//!   and deadlines do).
//!
//! Invariant: [`now_ms`] and [`instant_at`] are inverse of each other up to a millisecond:
//! sleeping until `instant_at(w)` wakes when `now_ms() >= w`.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The system clock and the monotonic clock read together, once.
struct Anchor {
    wall_ms: i64,
    at: std::time::Instant,
}

fn anchor() -> &'static Anchor {
    static ANCHOR: OnceLock<Anchor> = OnceLock::new();
    ANCHOR.get_or_init(|| {
        let wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Anchor { wall_ms, at: std::time::Instant::now() }
    })
}

/// Now, in milliseconds since the Unix epoch (see the module docs).
pub(crate) fn now_ms() -> i64 {
    let a = anchor();
    let now = tokio::time::Instant::now().into_std();
    match now.checked_duration_since(a.at) {
        Some(after) => a.wall_ms.saturating_add(millis(after)),
        None => a.wall_ms.saturating_sub(millis(a.at.duration_since(now))),
    }
}

/// The instant on tokio's clock at which [`now_ms`] reaches `wall_ms` (now, if it has).
pub(crate) fn instant_at(wall_ms: i64) -> tokio::time::Instant {
    let left = u64::try_from(wall_ms.saturating_sub(now_ms())).unwrap_or(0);
    tokio::time::Instant::now() + Duration::from_millis(left)
}

/// `t` from now, in milliseconds since the Unix epoch.
pub(crate) fn after_ms(t: Duration) -> i64 {
    now_ms().saturating_add(millis(t))
}

/// A wall-clock time in milliseconds since the Unix epoch (saturating; before it is 0).
pub(crate) fn ms_of(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, millis)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_clock_advances_with_paused_time() {
        let before = now_ms();
        tokio::time::advance(Duration::from_secs(3600)).await;
        let after = now_ms();
        // Each reading truncates to the millisecond: within one of the hour.
        assert!((3_599_999..=3_600_001).contains(&(after - before)), "{before} -> {after}");
        let wake = after + 1_800_000;
        let at = instant_at(wake);
        assert_eq!(at - tokio::time::Instant::now(), Duration::from_millis(1_800_000));
        tokio::time::sleep_until(at).await;
        assert!(now_ms() >= wake);
        assert_eq!(instant_at(wake - 5), tokio::time::Instant::now(), "a time past is now");
    }
}
