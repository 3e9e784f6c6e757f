//! What a schedule is: [`Schedule`] (what users write), [`Overlap`], and the parsed rule
//! the planner reads (`Rule`: the cron expression in its time zone).
//!
//! Invariants:
//! - A schedule is checked before anything is stored: its name (1 to 128 bytes, no control
//!   characters), its cron expression (croner's parser: 5 fields, or 6 with seconds first,
//!   `L`, `W`, `#`, `@daily` ...), its time zone (an IANA name chrono-tz knows), its input
//!   (a context that encodes). A stored record that no longer parses is skipped by the
//!   scheduler with a warning, never guessed at.
//! - Ticks are instants: an expression is evaluated in its time zone (so `0 9 * * *` in
//!   `Europe/Paris` is 9:00 in Paris in winter and in summer) and its ticks are kept as
//!   milliseconds since the Unix epoch, as the store keeps them.

use std::str::FromStr;
use std::time::Duration;

use agent_core::Context;
use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::store::{ScheduleRecord, StoreError};

/// The longest schedule name, in bytes.
const MAX_NAME: usize = 128;

/// What a tick does while the schedule's previous run is still going on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Overlap {
    /// Start nothing: the tick is skipped (the default).
    #[default]
    Skip,
    /// Hold the tick until the previous run ends, then start it; of several such ticks,
    /// only the first is held, the others are skipped.
    BufferOne,
    /// Start a run for every tick, whatever is going on.
    Allow,
    /// Cancel the previous run, and start the tick's.
    Cancel,
}

impl Overlap {
    /// The name the store and the command line use (`skip`, `buffer-one`, `allow`,
    /// `cancel`).
    ///
    /// ```
    /// use agent_runtime::schedule::Overlap;
    /// assert_eq!(Overlap::parse(Overlap::BufferOne.as_str()), Some(Overlap::BufferOne));
    /// assert_eq!(Overlap::parse("queue"), None);
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Skip => "skip",
            Overlap::BufferOne => "buffer-one",
            Overlap::Allow => "allow",
            Overlap::Cancel => "cancel",
        }
    }

    /// The policy named `name`, if it is one.
    pub fn parse(name: &str) -> Option<Overlap> {
        match name {
            "skip" => Some(Overlap::Skip),
            "buffer-one" => Some(Overlap::BufferOne),
            "allow" => Some(Overlap::Allow),
            "cancel" => Some(Overlap::Cancel),
            _ => None,
        }
    }
}

/// A schedule: start a run of the agent at every tick of a cron expression (see
/// [`Agent::add_schedule`](crate::Agent::add_schedule)).
///
/// ```
/// use std::time::Duration;
/// use agent_runtime::schedule::{Overlap, Schedule};
/// let nightly = Schedule::new("nightly", "0 3 * * *")
///     .timezone("Europe/Paris")
///     .overlap(Overlap::BufferOne)
///     .catch_up(Duration::from_secs(6 * 3600));
/// assert_eq!(nightly.name(), "nightly");
/// ```
#[derive(Clone, Debug)]
pub struct Schedule {
    name: String,
    cron: String,
    timezone: String,
    overlap: Overlap,
    catch_up: Duration,
    context: Option<Context>,
}

impl Schedule {
    /// Start a run at every tick of `cron` (5 fields, or 6 with seconds first; `@hourly`,
    /// `@daily` ...), read in UTC, skipping ticks while the previous run goes on, catching
    /// up no missed tick, each run from an empty context.
    pub fn new(name: impl Into<String>, cron: impl Into<String>) -> Schedule {
        Schedule {
            name: name.into(),
            cron: cron.into(),
            timezone: "UTC".to_owned(),
            overlap: Overlap::Skip,
            catch_up: Duration::ZERO,
            context: None,
        }
    }

    /// Read the expression in the IANA time zone `tz` (`America/New_York`).
    pub fn timezone(mut self, tz: impl Into<String>) -> Schedule {
        self.timezone = tz.into();
        self
    }

    /// What a tick does while the previous run goes on (see [`Overlap`]).
    pub fn overlap(mut self, overlap: Overlap) -> Schedule {
        self.overlap = overlap;
        self
    }

    /// After downtime (no worker running the schedules), start the ticks missed within
    /// `window` before now; older ones are skipped. The window is at least a minute (a tick
    /// that late is not downtime: a scheduler passes every second); that is the default.
    pub fn catch_up(mut self, window: Duration) -> Schedule {
        self.catch_up = window;
        self
    }

    /// Start each run from this context (its input).
    pub fn context(mut self, ctx: Context) -> Schedule {
        self.context = Some(ctx);
        self
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The record to store for `agent`, checked (see the module docs), its cursor at the
    /// first tick after `now_ms`.
    pub(crate) fn record(&self, agent: &str, now_ms: i64) -> Result<ScheduleRecord, ScheduleError> {
        check_name(&self.name)?;
        let rule = Rule::new(&self.cron, &self.timezone, self.overlap, self.catch_up)?;
        let input = match &self.context {
            Some(ctx) => ctx.to_json_string().map_err(|e| ScheduleError::Input { message: e.to_string() })?,
            None => "{}".to_owned(),
        };
        let mut r = ScheduleRecord::new(agent, self.name.as_str(), self.cron.as_str(), now_ms);
        r.timezone = self.timezone.clone();
        r.overlap = self.overlap.as_str().to_owned();
        r.catch_up_ms = rule.catch_up_ms;
        r.input = input;
        r.next_tick_ms = rule.tick_after(now_ms).unwrap_or(i64::MAX);
        Ok(r)
    }
}

/// Whether `name` can name a schedule.
pub(crate) fn check_name(name: &str) -> Result<(), ScheduleError> {
    if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(ScheduleError::BadName { name: name.chars().take(64).collect() });
    }
    Ok(())
}

/// Why a schedule could not be added, changed or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// The cron expression does not parse.
    #[error("`{cron}` is not a cron expression this build reads: {message}")]
    BadCron {
        /// The expression.
        cron: String,
        /// What the parser said.
        message: String,
    },
    /// The time zone is not an IANA name.
    #[error("`{timezone}` is not an IANA time zone (such as `Europe/Paris` or `UTC`)")]
    BadTimezone {
        /// The name given.
        timezone: String,
    },
    /// The name is empty, too long (over 128 bytes) or holds control characters.
    #[error("`{name}` cannot name a schedule: 1 to 128 bytes, no control characters")]
    BadName {
        /// The name (cut to 64 characters).
        name: String,
    },
    /// The overlap policy is not one of `skip`, `buffer-one`, `allow`, `cancel`.
    #[error("`{overlap}` is not an overlap policy (skip, buffer-one, allow, cancel)")]
    BadOverlap {
        /// The name given.
        overlap: String,
    },
    /// The input context does not encode.
    #[error("the schedule's input cannot be written: {message}")]
    Input {
        /// Why.
        message: String,
    },
    /// The agent has no schedule of this name.
    #[error("agent `{agent}` has no schedule `{name}`")]
    Unknown {
        /// The agent.
        agent: String,
        /// The name given.
        name: String,
    },
    /// The agent has no store: schedules live there.
    #[error("agent `{agent}` has no store, where schedules are kept (see `with_store`)")]
    NoStore {
        /// The agent.
        agent: String,
    },
    /// A backfill's range is empty or holds more ticks than a backfill starts at once.
    #[error("a backfill of `{name}` {reason}")]
    BadRange {
        /// The schedule.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A schedule's rule, parsed: its expression in its time zone, its overlap policy and its
/// catch-up window.
#[derive(Debug)]
pub(crate) struct Rule {
    cron: croner::Cron,
    tz: Tz,
    pub overlap: Overlap,
    pub catch_up_ms: i64,
}

impl Rule {
    /// Parse (see the module docs).
    pub(crate) fn new(cron: &str, timezone: &str, overlap: Overlap, catch_up: Duration) -> Result<Rule, ScheduleError> {
        let parsed = croner::Cron::from_str(cron)
            .map_err(|e| ScheduleError::BadCron { cron: cron.to_owned(), message: e.to_string() })?;
        let tz = Tz::from_str(timezone).map_err(|_| ScheduleError::BadTimezone { timezone: timezone.to_owned() })?;
        let catch_up_ms = i64::try_from(catch_up.as_millis()).unwrap_or(i64::MAX);
        Ok(Rule { cron: parsed, tz, overlap, catch_up_ms })
    }

    /// A stored record's rule.
    pub(crate) fn of(record: &ScheduleRecord) -> Result<Rule, ScheduleError> {
        let overlap = Overlap::parse(&record.overlap)
            .ok_or_else(|| ScheduleError::BadOverlap { overlap: record.overlap.clone() })?;
        let catch_up = Duration::from_millis(u64::try_from(record.catch_up_ms).unwrap_or(0));
        Rule::new(&record.cron, &record.timezone, overlap, catch_up)
    }

    /// The first tick strictly after `ms`; `None` when the expression has none (a date
    /// that never comes, such as February 30th) or it is out of range.
    pub(crate) fn tick_after(&self, ms: i64) -> Option<i64> {
        self.tick(ms, false)
    }

    /// The first tick at or after `ms`.
    pub(crate) fn tick_at_or_after(&self, ms: i64) -> Option<i64> {
        self.tick(ms, true)
    }

    fn tick(&self, ms: i64, inclusive: bool) -> Option<i64> {
        // Cron ticks fall on whole seconds, and the parser reads a time by its second: a
        // time within a second is "at or after" only the ticks of the seconds after it.
        let ms = if inclusive && ms.rem_euclid(1000) != 0 { ms.checked_add(1000 - ms.rem_euclid(1000))? } else { ms };
        let from: DateTime<Tz> = Utc.timestamp_millis_opt(ms).single()?.with_timezone(&self.tz);
        let next = self.cron.find_next_occurrence(&from, inclusive).ok()?;
        Some(next.timestamp_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    #[test]
    fn ticks_are_read_in_the_schedules_time_zone() {
        // 2026-01-15T00:00:00Z and 2026-07-15T00:00:00Z.
        let (winter, summer) = (1_768_435_200_000, 1_784_073_600_000);
        let paris = Rule::new("0 9 * * *", "Europe/Paris", Overlap::Skip, Duration::ZERO).unwrap();
        // 9:00 in Paris: 8:00 UTC in winter, 7:00 UTC in summer.
        assert_eq!(paris.tick_after(winter), Some(winter + 8 * HOUR));
        assert_eq!(paris.tick_after(summer), Some(summer + 7 * HOUR));
        let utc = Rule::new("0 9 * * *", "UTC", Overlap::Skip, Duration::ZERO).unwrap();
        assert_eq!(utc.tick_after(winter), Some(winter + 9 * HOUR));
        assert_eq!(utc.tick_at_or_after(winter + 9 * HOUR), Some(winter + 9 * HOUR));
        assert_eq!(utc.tick_after(winter + 9 * HOUR), Some(winter + 33 * HOUR));
        let seconds = Rule::new("*/10 * * * * *", "UTC", Overlap::Skip, Duration::ZERO).unwrap();
        assert_eq!(seconds.tick_after(winter), Some(winter + 10_000));
        // Within a second: a tick at the second's start is before it, not at or after it.
        assert_eq!(seconds.tick_at_or_after(winter + 1), Some(winter + 10_000));
        assert_eq!(seconds.tick_after(winter + 9_999), Some(winter + 10_000));
        assert_eq!(seconds.tick_at_or_after(winter + 10_000), Some(winter + 10_000));
    }

    #[test]
    fn bad_expressions_zones_and_names_are_typed_errors() {
        let bad = Rule::new("61 * * * *", "UTC", Overlap::Skip, Duration::ZERO).unwrap_err();
        assert!(matches!(bad, ScheduleError::BadCron { .. }), "{bad}");
        let tz = Rule::new("* * * * *", "Mars/Olympus", Overlap::Skip, Duration::ZERO).unwrap_err();
        assert!(matches!(tz, ScheduleError::BadTimezone { .. }), "{tz}");
        for name in ["", "a\nb"] {
            assert!(matches!(Schedule::new(name, "* * * * *").record("a", 0), Err(ScheduleError::BadName { .. })));
        }
        let long = "n".repeat(129);
        assert!(matches!(Schedule::new(long, "* * * * *").record("a", 0), Err(ScheduleError::BadName { .. })));
        let mut r = ScheduleRecord::new("a", "n", "* * * * *", 0);
        r.overlap = "queue".into();
        assert!(matches!(Rule::of(&r), Err(ScheduleError::BadOverlap { .. })));
    }

    #[test]
    fn a_date_that_never_comes_has_no_tick() {
        let never = Rule::new("0 0 30 2 *", "UTC", Overlap::Skip, Duration::ZERO).unwrap();
        assert_eq!(never.tick_after(0), None);
    }
}
