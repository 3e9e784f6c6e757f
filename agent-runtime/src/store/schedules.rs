//! What a store keeps for schedules: one [`ScheduleRecord`] per `(agent, name)`, with its
//! definition (cron, time zone, overlap policy, catch-up window, input) and its *cursor*:
//! the first tick not yet handled, a tick held back by the `buffer-one` policy, and the run
//! its last started tick made.
//!
//! The runtime decides what a tick does (`schedule::plan`); the store only keeps the cursor
//! and moves it with a guarded write, so that workers sharing the store agree on it:
//! - [`advance_schedule`](super::CheckpointStore::advance_schedule) writes the new cursor
//!   only if the record's `version` is still the one the worker read, and bumps it: of
//!   workers handling the same ticks at once, exactly one moves the cursor; the others
//!   see `false` and stop. The guard also names the record's `created_ms`, so a worker's
//!   move planned on a schedule since removed and added again (whose versions start again)
//!   is refused too. (The runs a tick starts are submitted with an idempotency key
//!   naming the schedule and the tick, before the cursor moves: a worker that dies in
//!   between leaves the tick to the next, which finds the run already made.)
//! - [`put_schedule`](super::CheckpointStore::put_schedule) creates a record, or replaces
//!   an existing one's definition and cursor (keeping `created_ms` and `last_run_id`), and
//!   bumps its version either way, so a worker's advance planned on the old definition is
//!   refused.
//! - Pausing, resuming and deleting are plain writes that also bump the version.
//!
//! Invariants every implementation keeps (the conformance tests check them): one record
//! per `(agent, name)`; `version` only grows; `schedules` lists by agent then name
//! (bytewise); deleting a schedule deletes nothing else (its runs stay).

/// A schedule as the store keeps it (see the module docs).
///
/// ```
/// use agent_runtime::store::ScheduleRecord;
/// let r = ScheduleRecord::new("etl", "nightly", "0 3 * * *", 1_700_000_000_000);
/// assert_eq!((r.timezone.as_str(), r.overlap.as_str(), r.paused), ("UTC", "skip", false));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScheduleRecord {
    /// The agent whose runs it starts.
    pub agent: String,
    /// Its name, unique per agent.
    pub name: String,
    /// The cron expression (5 fields, or 6 with seconds first; `@daily` and the like).
    pub cron: String,
    /// The IANA time zone the expression is read in (`Europe/Paris`; `UTC` by default).
    pub timezone: String,
    /// What a tick does while the schedule's previous run goes on: `skip`, `buffer-one`,
    /// `allow` or `cancel` (see `schedule::Overlap`).
    pub overlap: String,
    /// How far back missed ticks are still started after downtime (milliseconds; 0: none).
    pub catch_up_ms: i64,
    /// The context each run starts from, as JSON.
    pub input: String,
    /// Paused: its ticks start nothing (and are not caught up on resume).
    pub paused: bool,
    /// When it was first added (milliseconds since the Unix epoch).
    pub created_ms: i64,
    /// When it last changed.
    pub updated_ms: i64,
    /// The first tick not yet handled.
    pub next_tick_ms: i64,
    /// A tick the `buffer-one` policy holds until the previous run ends.
    pub buffered_tick_ms: Option<i64>,
    /// The run the last started tick made.
    pub last_run_id: Option<String>,
    /// Bumped by every write: the guard of `advance_schedule`.
    pub version: u64,
}

impl ScheduleRecord {
    /// A new schedule of `agent` named `name` on `cron`, in UTC, skipping overlaps, with no
    /// catch-up, starting runs from an empty context, whose first tick is at or after
    /// `now_ms` (the cursor is set there; the runtime moves it to the first real tick).
    pub fn new(agent: impl Into<String>, name: impl Into<String>, cron: impl Into<String>, now_ms: i64) -> Self {
        ScheduleRecord {
            agent: agent.into(),
            name: name.into(),
            cron: cron.into(),
            timezone: "UTC".to_owned(),
            overlap: "skip".to_owned(),
            catch_up_ms: 0,
            input: "{}".to_owned(),
            paused: false,
            created_ms: now_ms,
            updated_ms: now_ms,
            next_tick_ms: now_ms,
            buffered_tick_ms: None,
            last_run_id: None,
            version: 0,
        }
    }
}

/// A cursor move: see [`CheckpointStore::advance_schedule`](super::CheckpointStore::advance_schedule).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScheduleAdvance {
    /// The schedule's agent.
    pub agent: String,
    /// The schedule's name.
    pub name: String,
    /// The version the worker read: the move is made only if it is still the record's.
    pub version: u64,
    /// When the schedule the worker read was added: the move is made only if it is still
    /// that schedule (a schedule removed and added again starts its versions again).
    pub created_ms: i64,
    /// The new first tick not yet handled.
    pub next_tick_ms: i64,
    /// The new buffered tick.
    pub buffered_tick_ms: Option<i64>,
    /// The new last run.
    pub last_run_id: Option<String>,
    /// Now (the record's `updated_ms`).
    pub now_ms: i64,
}

impl ScheduleAdvance {
    /// Move `record`'s cursor to `next_tick_ms`, keeping its buffered tick and last run.
    pub fn of(record: &ScheduleRecord, next_tick_ms: i64, now_ms: i64) -> ScheduleAdvance {
        ScheduleAdvance {
            agent: record.agent.clone(),
            name: record.name.clone(),
            version: record.version,
            created_ms: record.created_ms,
            next_tick_ms,
            buffered_tick_ms: record.buffered_tick_ms,
            last_run_id: record.last_run_id.clone(),
            now_ms,
        }
    }
}
