//! `schedule add|list|pause|resume|remove|backfill`: the workflow's schedules in the store
//! (see `schedule`; the runs are started by the workers' schedulers, `worker`).
//!
//! Invariants:
//! - Every subcommand goes through the agent's own methods (`Agent::add_schedule`, ...), so
//!   the command line checks and stores exactly what the API does.
//! - `list` prints times in UTC (RFC 3339), whatever the schedule's own time zone, which it
//!   names beside them.

use std::io::Write;

use chrono::DateTime;

use super::args::{OverlapArg, ScheduleCommand};
use super::store::Store;
use super::submit::context_of;
use super::time::utc;
use super::CliError;
use crate::schedule::{Overlap, Schedule};
use crate::text::shown;
use crate::Agent;

pub(super) async fn schedule(
    agent: Agent,
    store: &Store,
    action: &ScheduleCommand,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let agent = store.attach(agent);
    match action {
        ScheduleCommand::Add { name, cron, overlap, timezone, catch_up, input } => {
            let mut schedule = Schedule::new(name.as_str(), cron.as_str())
                .overlap(overlap_of(*overlap))
                .timezone(timezone.as_str())
                .catch_up(std::time::Duration::from_secs(*catch_up));
            if let Some(json) = input {
                schedule = schedule.context(context_of(json)?);
            }
            agent.add_schedule(schedule).await?;
            let added = agent.schedules().await?.into_iter().find(|s| s.name == *name);
            let next = added.map_or_else(|| "none".to_owned(), |s| next_of(s.next_tick_ms));
            writeln!(out, "schedule {} added: {} ({}), next tick {}", shown(name), shown(cron), shown(timezone), next)?;
        }
        ScheduleCommand::List => {
            let all = agent.schedules().await?;
            if all.is_empty() {
                writeln!(out, "no schedules (add one with `schedule add NAME CRON`)")?;
            }
            for s in all {
                let state = if s.paused { "PAUSED" } else { "active" };
                let last = s.last_run_id.as_deref().map_or_else(|| "-".to_owned(), |r| shown(r).into_owned());
                writeln!(
                    out,
                    "{:<20} {:<16} {:<14} {:<10} {:<6} next {}  last run {}",
                    shown(&s.name),
                    shown(&s.cron),
                    shown(&s.timezone),
                    s.overlap,
                    state,
                    next_of(s.next_tick_ms),
                    last
                )?;
            }
        }
        ScheduleCommand::Pause { name } => {
            agent.pause_schedule(name).await?;
            writeln!(out, "schedule {} paused", shown(name))?;
        }
        ScheduleCommand::Resume { name } => {
            agent.resume_schedule(name).await?;
            writeln!(out, "schedule {} resumed", shown(name))?;
        }
        ScheduleCommand::Remove { name } => {
            agent.remove_schedule(name).await?;
            writeln!(out, "schedule {} removed (its runs stay)", shown(name))?;
        }
        ScheduleCommand::Backfill { name, from, to } => {
            let (from, to) = (time_of(from)?, time_of(to)?);
            let runs = agent.backfill(name, from, to).await?;
            writeln!(out, "{} runs for the ticks of {} in the range:", runs.len(), shown(name))?;
            for run in runs {
                writeln!(out, "{}", shown(&run))?;
            }
        }
    }
    Ok(())
}

fn overlap_of(arg: OverlapArg) -> Overlap {
    match arg {
        OverlapArg::Skip => Overlap::Skip,
        OverlapArg::BufferOne => Overlap::BufferOne,
        OverlapArg::Allow => Overlap::Allow,
        OverlapArg::Cancel => Overlap::Cancel,
    }
}

fn next_of(ms: i64) -> String {
    if ms == i64::MAX {
        "none (the expression has no tick left)".to_owned()
    } else {
        utc(ms)
    }
}

fn time_of(text: &str) -> Result<std::time::SystemTime, CliError> {
    let t = DateTime::parse_from_rfc3339(text)
        .map_err(|e| CliError::Usage(format!("`{text}` is not an RFC 3339 time (2026-12-01T00:00:00Z): {e}")))?;
    Ok(std::time::SystemTime::from(t))
}
