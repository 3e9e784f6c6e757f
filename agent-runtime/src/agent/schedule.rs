//! An agent's schedules, kept in its store: added, listed, paused, resumed, removed and
//! backfilled from any process (the runs themselves are started by the workers' schedulers:
//! see `schedule`).
//!
//! Invariants:
//! - A schedule is checked whole (name, expression, time zone, input) before it is stored;
//!   adding one with a name the agent has replaces its definition and starts its cursor
//!   again from now.
//! - Resuming a paused schedule moves its cursor to the first tick after now: the ticks of
//!   the pause are not caught up.
//! - A backfill submits one run per tick of the range, with the same idempotency keys as the
//!   schedulers use, so a tick that already has a run (started on time, or by an earlier
//!   backfill) gets no second one.

use std::time::SystemTime;

use super::Agent;
use crate::clock;
use crate::schedule::{check_name, submit_tick, Rule, Schedule, ScheduleError};
use crate::store::{CheckpointStore, ScheduleRecord};

/// The most ticks one backfill starts.
const MAX_BACKFILL: usize = 10_000;

impl Agent {
    fn schedule_store(&self) -> Result<std::sync::Arc<dyn CheckpointStore>, ScheduleError> {
        self.store_if_any().ok_or_else(|| ScheduleError::NoStore { agent: self.shared.name.clone() })
    }

    /// Add `schedule` to the agent's store (or replace the agent's schedule of that name):
    /// from now on, the workers serving the agent start a run at each of its ticks.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use agent_core::{Context, StateResult};
    /// use agent_runtime::schedule::{Overlap, Schedule};
    /// use agent_runtime::{store::MemoryStore, Agent};
    ///
    /// let mut agent = Agent::new("report").with_store(MemoryStore::new());
    /// agent.add_state("build", |_ctx: Context| async { StateResult::End });
    /// agent
    ///     .add_schedule(
    ///         Schedule::new("nightly", "0 3 * * *")
    ///             .timezone("Europe/Paris")
    ///             .overlap(Overlap::Skip)
    ///             .catch_up(Duration::from_secs(3600)),
    ///     )
    ///     .await?;
    /// assert_eq!(agent.schedules().await?[0].name, "nightly");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ScheduleError::BadCron`], [`ScheduleError::BadTimezone`],
    /// [`ScheduleError::BadName`] and [`ScheduleError::Input`] for a schedule that does not
    /// check (nothing is stored); [`ScheduleError::NoStore`] without a store;
    /// [`ScheduleError::Store`] when the store fails.
    pub async fn add_schedule(&self, schedule: Schedule) -> Result<(), ScheduleError> {
        let store = self.schedule_store()?;
        let record = schedule.record(self.name(), clock::now_ms())?;
        store.put_schedule(&record).await?;
        tracing::info!(agent = %self.name(), schedule = %record.name, cron = %record.cron, "schedule added");
        Ok(())
    }

    /// The agent's schedules in its store, by name, with their cursors.
    ///
    /// # Errors
    ///
    /// [`ScheduleError::NoStore`] without a store; [`ScheduleError::Store`] when it fails.
    pub async fn schedules(&self) -> Result<Vec<ScheduleRecord>, ScheduleError> {
        Ok(self.schedule_store()?.schedules(Some(self.name())).await?)
    }

    /// Pause the schedule `name`: its ticks start nothing until it is resumed.
    ///
    /// # Errors
    ///
    /// [`ScheduleError::Unknown`] when the agent has no such schedule; as
    /// [`Agent::schedules`] otherwise.
    pub async fn pause_schedule(&self, name: &str) -> Result<(), ScheduleError> {
        let record = self.schedule_named(name).await?;
        self.set_paused(&record, true, record.next_tick_ms).await
    }

    /// Resume the schedule `name`, from its first tick after now (the ticks of the pause
    /// are not caught up).
    ///
    /// # Errors
    ///
    /// As [`Agent::pause_schedule`].
    pub async fn resume_schedule(&self, name: &str) -> Result<(), ScheduleError> {
        let record = self.schedule_named(name).await?;
        let next = Rule::of(&record)?.tick_after(clock::now_ms()).unwrap_or(i64::MAX);
        self.set_paused(&record, false, next).await
    }

    /// Remove the schedule `name` (its runs stay).
    ///
    /// # Errors
    ///
    /// As [`Agent::pause_schedule`].
    pub async fn remove_schedule(&self, name: &str) -> Result<(), ScheduleError> {
        check_name(name)?;
        if !self.schedule_store()?.delete_schedule(self.name(), name).await? {
            return Err(self.unknown(name));
        }
        Ok(())
    }

    /// Start the runs of the schedule `name`'s ticks from `from` to `to` (both included),
    /// whatever its overlap policy and catch-up window; a tick that has a run already gets
    /// none. The runs' ids, by tick.
    ///
    /// # Errors
    ///
    /// [`ScheduleError::BadRange`] when `to` is before `from` or the range holds more than
    /// 10,000 ticks (nothing is started); as [`Agent::pause_schedule`] otherwise.
    pub async fn backfill(&self, name: &str, from: SystemTime, to: SystemTime) -> Result<Vec<String>, ScheduleError> {
        let record = self.schedule_named(name).await?;
        let rule = Rule::of(&record)?;
        let (from, to) = (clock::ms_of(from), clock::ms_of(to));
        if to < from {
            return Err(ScheduleError::BadRange { name: name.to_owned(), reason: "ends before it starts".to_owned() });
        }
        let mut ticks = Vec::new();
        let mut tick = rule.tick_at_or_after(from);
        while let Some(t) = tick.filter(|&t| t <= to) {
            if ticks.len() == MAX_BACKFILL {
                let reason = format!("holds more than {MAX_BACKFILL} ticks; backfill it in parts");
                return Err(ScheduleError::BadRange { name: name.to_owned(), reason });
            }
            ticks.push(t);
            tick = rule.tick_after(t);
        }
        let (store, hash) = (self.schedule_store()?, self.graph_hash()?.to_string());
        let mut runs = Vec::with_capacity(ticks.len());
        for t in ticks {
            runs.push(submit_tick(&*store, &record, &hash, t).await?);
        }
        Ok(runs)
    }

    async fn schedule_named(&self, name: &str) -> Result<ScheduleRecord, ScheduleError> {
        check_name(name)?;
        let all = self.schedule_store()?.schedules(Some(self.name())).await?;
        all.into_iter().find(|s| s.name == name).ok_or_else(|| self.unknown(name))
    }

    async fn set_paused(&self, record: &ScheduleRecord, paused: bool, next: i64) -> Result<(), ScheduleError> {
        let store = self.schedule_store()?;
        if !store.pause_schedule(self.name(), &record.name, paused, next, clock::now_ms()).await? {
            return Err(self.unknown(&record.name));
        }
        Ok(())
    }

    fn unknown(&self, name: &str) -> ScheduleError {
        ScheduleError::Unknown { agent: self.shared.name.clone(), name: name.to_owned() }
    }
}
