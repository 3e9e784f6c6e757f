//! Schedules: start a workflow's runs on a cron expression, in a time zone, with an
//! overlap policy and a catch-up window, exactly once per tick across a fleet.
//!
//! - `spec`: what a schedule is ([`Schedule`], [`Overlap`]) and its parsed rule.
//! - `plan`: what a pass does with the due ticks (pure; time passed in).
//! - `drive`: the [`Scheduler`] that carries passes out against the store.
//!
//! Schedules live in the agent's store ([`ScheduleRecord`](crate::store::ScheduleRecord)),
//! managed from any process (`Agent::add_schedule`, `pause_schedule`, ..., the command
//! line's `schedule`); every [`Worker`](crate::Worker) runs a scheduler for the agents it
//! serves, and the store's idempotency keys and guarded cursor make each tick start one run
//! however many workers run one (see `drive`).

mod drive;
mod plan;
mod spec;

pub(crate) use drive::submit_tick;
pub use drive::{Scheduler, SchedulerReport, SCHEDULE_KEY, TICK_KEY};
pub(crate) use spec::{check_name, Rule};
pub use spec::{Overlap, Schedule, ScheduleError};
