//! What a schedule's due ticks do, decided from its cursor, whether its previous run goes
//! on, and now: a pure function (time passed in), which `drive` carries out.
//!
//! Rules, in order:
//! 1. A tick held by `buffer-one` starts once the previous run is over.
//! 2. Ticks from the cursor to now: those older than the catch-up window (`now - window`,
//!    the window being at least `GRACE_MS`: a pass comes every second or so, and a tick a
//!    little late is not downtime) are missed (counted, not started; the first due one is found from the window's start,
//!    so years of downtime cost one search, not one step per missed tick); each other tick,
//!    oldest first, starts a run if nothing goes on, else does what the overlap policy says
//!    (skip it; hold it if nothing is held, else skip it; start it anyway; cancel the
//!    previous run and start it). A run started in this pass goes on for the ticks after it.
//! 3. At most `limit` ticks are handled in a pass; the cursor stops at the first not handled,
//!    so the next pass goes on from there.
//!
//! Invariant: the new cursor is a tick after every handled one (or `i64::MAX` when the
//! expression has no tick left), so a tick is handled once, by the pass whose advance wins.

use super::spec::{Overlap, Rule};

/// Where a schedule stands before a pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cursor {
    /// The first tick not yet handled (or a time before it).
    pub next_tick_ms: i64,
    /// A tick held by `buffer-one`.
    pub buffered_tick_ms: Option<i64>,
    /// Whether the schedule's previous run is still going on.
    pub previous_running: bool,
}

/// What to do with one tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Start a run for the tick.
    Start(i64),
    /// Cancel the previous run, then start one for the tick.
    Replace(i64),
    /// Start nothing for the tick.
    Skip(i64),
    /// Hold the tick until the previous run ends.
    Hold(i64),
    /// Ticks older than the catch-up window: `count` of them (at most `MISSED_COUNTED`),
    /// the oldest at `first`.
    Missed { first: i64, count: u32 },
}

/// A pass's decisions and the cursor after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    pub actions: Vec<Action>,
    pub next_tick_ms: i64,
    pub buffered_tick_ms: Option<i64>,
}

/// Ticks this late always start: the least catch-up window.
pub(crate) const GRACE_MS: i64 = 60_000;

/// Missed ticks are counted up to this many (a report, not a bound on anything).
const MISSED_COUNTED: u32 = 1000;

/// Decide a pass (see the module docs).
pub(crate) fn plan(rule: &Rule, cursor: Cursor, now_ms: i64, limit: usize) -> Plan {
    let mut actions = Vec::new();
    let mut running = cursor.previous_running;
    let mut held = cursor.buffered_tick_ms;
    if let Some(tick) = held.filter(|_| !running) {
        actions.push(Action::Start(tick));
        running = true;
        held = None;
    }
    let mut tick = rule.tick_at_or_after(cursor.next_tick_ms);
    let window_start = now_ms.saturating_sub(rule.catch_up_ms.max(GRACE_MS));
    if let Some(first) = tick.filter(|&t| t < window_start && t <= now_ms) {
        let mut count = 0;
        let mut t = Some(first);
        while let Some(x) = t.filter(|&x| x < window_start && count < MISSED_COUNTED) {
            count += 1;
            t = rule.tick_after(x);
        }
        actions.push(Action::Missed { first, count });
        tick = rule.tick_at_or_after(window_start);
    }
    let mut handled = 0;
    while let Some(t) = tick.filter(|&t| t <= now_ms && handled < limit) {
        let action = if !running {
            Action::Start(t)
        } else {
            match rule.overlap {
                Overlap::Allow => Action::Start(t),
                Overlap::Cancel => Action::Replace(t),
                Overlap::Skip => Action::Skip(t),
                Overlap::BufferOne if held.is_none() => {
                    held = Some(t);
                    Action::Hold(t)
                }
                Overlap::BufferOne => Action::Skip(t),
            }
        };
        if matches!(action, Action::Start(_) | Action::Replace(_)) {
            running = true;
        }
        actions.push(action);
        handled += 1;
        tick = rule.tick_after(t);
    }
    Plan { actions, next_tick_ms: tick.unwrap_or(i64::MAX), buffered_tick_ms: held }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const HOUR: i64 = 3_600_000;
    /// 2026-01-15T00:00:00Z.
    const T0: i64 = 1_768_435_200_000;

    fn hourly(overlap: Overlap, catch_up_hours: u64) -> Rule {
        Rule::new("0 * * * *", "UTC", overlap, Duration::from_secs(catch_up_hours * 3600)).unwrap()
    }

    fn at(next: i64, running: bool) -> Cursor {
        Cursor { next_tick_ms: next, buffered_tick_ms: None, previous_running: running }
    }

    #[test]
    fn nothing_is_due_before_the_cursor() {
        let p = plan(&hourly(Overlap::Skip, 0), at(T0 + HOUR, false), T0 + HOUR / 2, 10);
        assert_eq!((p.actions, p.next_tick_ms), (vec![], T0 + HOUR));
    }

    #[test]
    fn three_missed_ticks_with_a_window_covering_two_start_two() {
        // Ticks at 1h, 2h, 3h were missed; now is 3h30; the window reaches back 2h (to 1h30).
        let rule = Rule::new("0 * * * *", "UTC", Overlap::Allow, Duration::from_secs(7200)).unwrap();
        let p = plan(&rule, at(T0 + HOUR, false), T0 + 3 * HOUR + HOUR / 2, 10);
        assert_eq!(
            p.actions,
            vec![
                Action::Missed { first: T0 + HOUR, count: 1 },
                Action::Start(T0 + 2 * HOUR),
                Action::Start(T0 + 3 * HOUR)
            ]
        );
        assert_eq!(p.next_tick_ms, T0 + 4 * HOUR);
    }

    #[test]
    fn each_overlap_policy() {
        let now = T0 + 2 * HOUR;
        let cursor = at(T0 + HOUR, true);
        let skip = plan(&hourly(Overlap::Skip, 2), cursor, now, 10);
        assert_eq!(skip.actions, vec![Action::Skip(T0 + HOUR), Action::Skip(T0 + 2 * HOUR)]);
        let allow = plan(&hourly(Overlap::Allow, 2), cursor, now, 10);
        assert_eq!(allow.actions, vec![Action::Start(T0 + HOUR), Action::Start(T0 + 2 * HOUR)]);
        let cancel = plan(&hourly(Overlap::Cancel, 2), cursor, now, 10);
        assert_eq!(cancel.actions, vec![Action::Replace(T0 + HOUR), Action::Replace(T0 + 2 * HOUR)]);
        let buffer = plan(&hourly(Overlap::BufferOne, 2), cursor, now, 10);
        assert_eq!(buffer.actions, vec![Action::Hold(T0 + HOUR), Action::Skip(T0 + 2 * HOUR)]);
        assert_eq!(buffer.buffered_tick_ms, Some(T0 + HOUR));
        // The held tick starts once the previous run is over, before later ticks.
        let later = Cursor { next_tick_ms: T0 + 3 * HOUR, buffered_tick_ms: Some(T0 + HOUR), previous_running: false };
        let p = plan(&hourly(Overlap::BufferOne, 2), later, T0 + 3 * HOUR, 10);
        assert_eq!(p.actions, vec![Action::Start(T0 + HOUR), Action::Hold(T0 + 3 * HOUR)]);
        // Nothing going on: every policy starts the first tick; a skip policy skips the next.
        let idle = plan(&hourly(Overlap::Skip, 2), at(T0 + HOUR, false), now, 10);
        assert_eq!(idle.actions, vec![Action::Start(T0 + HOUR), Action::Skip(T0 + 2 * HOUR)]);
    }

    #[test]
    fn a_pass_handles_at_most_its_limit_and_years_of_downtime_cost_one_search() {
        let every_second = Rule::new("* * * * * *", "UTC", Overlap::Allow, Duration::from_secs(5)).unwrap();
        let year = 365 * 24 * HOUR;
        let p = plan(&every_second, at(T0, false), T0 + year, 3);
        assert_eq!(p.actions[0], Action::Missed { first: T0, count: MISSED_COUNTED });
        assert_eq!(p.actions.len(), 4);
        // A window of 5 s is widened to the grace: the ticks of the last minute are due.
        assert_eq!(p.actions[1], Action::Start(T0 + year - GRACE_MS));
        assert_eq!(p.next_tick_ms, T0 + year - GRACE_MS + 3000);
    }

    #[test]
    fn a_tick_a_little_late_is_not_missed_without_a_window() {
        let p = plan(&hourly(Overlap::Skip, 0), at(T0 + HOUR, false), T0 + HOUR + 1500, 10);
        assert_eq!(p.actions, vec![Action::Start(T0 + HOUR)]);
        let p = plan(&hourly(Overlap::Skip, 0), at(T0 + HOUR, false), T0 + HOUR + GRACE_MS + 1, 10);
        assert_eq!(p.actions, vec![Action::Missed { first: T0 + HOUR, count: 1 }]);
    }
}
