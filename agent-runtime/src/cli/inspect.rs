//! `list` and `show`: what the store holds about this agent's runs, read-only.
//!
//! Invariants:
//! - Neither command writes to the store nor needs the run's process: they read the run
//!   rows, the newest snapshot, the requests for human input, and the run's durable waits
//!   and signals (`show`).
//! - `show`'s timeline is the newest snapshot's: states that started, by first start time,
//!   then those with no recorded time, in definition order. A duration is shown only when
//!   the snapshot recorded both ends (`started_ms`, `finished_ms`); otherwise it says
//!   `not recorded`. For a state that ran several times it spans first start to last end.
//! - `show` prints the hash of the graph the run recorded (its newest snapshot's), and
//!   whether it is this binary's: a run of another graph cannot be resumed by it.
//! - A run nobody runs is never shown `Running` (see [`standing`]): both commands show
//!   each run's owner and how long its lease has left (or how long ago it ended), by this
//!   machine's clock.
//! - Stored text (ids, names, prompts, answers) is printed through `text::shown`.

use std::io::Write;

use agent_core::{AgentStatus, GraphHash, StateRecord, StateStatus};

use super::store::Store;
use super::time::{duration, utc};
use super::CliError;
use crate::store::{RunQuery, RunRecord};
use crate::text::shown;

pub(super) async fn list(agent: &str, store: &Store, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    let query = RunQuery { agent: Some(agent.to_owned()), ..RunQuery::default() };
    let runs = store.get().list_runs(&query).await?;
    if runs.is_empty() {
        writeln!(out, "no runs of agent `{}` in the store", shown(agent))?;
        return Ok(());
    }
    let now = crate::store::now_ms();
    writeln!(out, "{:<36}  {:<11}  {:<34}  {:<20}  {:<20}", "RUN", "STATUS", "OWNER (LEASE)", "STARTED", "UPDATED")?;
    for r in runs {
        writeln!(
            out,
            "{:<36}  {:<11}  {:<34}  {:<20}  {:<20}",
            shown(&r.run_id),
            standing(&r, now),
            owner(&r, now),
            utc(r.created_ms),
            utc(r.updated_ms)
        )?;
    }
    Ok(())
}

/// How a run stands, as `list` and `show` say it ([`RunRecord::standing`]).
pub(super) fn standing(r: &RunRecord, now_ms: i64) -> &'static str {
    r.standing(now_ms)
}

/// Who holds a run and for how long: `host-1-ab12 (12.0s left)`, `host-1-ab12 (ended 40s
/// ago)`, or `-`.
pub(super) fn owner(r: &RunRecord, now_ms: i64) -> String {
    match (&r.owner, r.lease_until_ms) {
        (Some(o), Some(until)) if until > now_ms => format!("{} ({} left)", shown(o), duration(until - now_ms)),
        (Some(o), Some(until)) => format!("{} (ended {} ago)", shown(o), duration(now_ms - until)),
        (Some(o), None) => shown(o).into_owned(),
        (None, _) => "-".to_owned(),
    }
}

/// `show RUN`; `ours` is the hash of this binary's graph (`None` if its definition is invalid).
pub(super) async fn show(
    agent: &str,
    ours: Option<GraphHash>,
    store: &Store,
    run: &str,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let run = store.resolve(agent, run).await?;
    let db = store.get();
    // The newest snapshot and the journal after it: the run as recorded now.
    let checkpoint = crate::store::read_checkpoint(&*db, &run.run_id).await?;
    if checkpoint.is_none() && run.status == AgentStatus::Idle {
        writeln!(out, "run      {}", shown(&run.run_id))?;
        writeln!(out, "agent    {}", shown(&run.agent))?;
        writeln!(out, "status   queued (submitted {}; no worker has started it)", utc(run.created_ms))?;
        return Ok(());
    }
    let checkpoint = checkpoint.ok_or_else(|| CliError::NoSnapshot { run: run.run_id.clone() })?;
    writeln!(out, "run      {}", shown(&run.run_id))?;
    writeln!(out, "agent    {}", shown(&run.agent))?;
    let now = crate::store::now_ms();
    writeln!(out, "status   {}", standing(&run, now))?;
    writeln!(out, "owner    {}  epoch {}", owner(&run, now), run.epoch)?;
    writeln!(out, "started  {}", utc(run.created_ms))?;
    writeln!(out, "updated  {}", utc(run.updated_ms))?;
    if let Some(l) = db.lineage(&run.run_id).await? {
        match (l.kind, l.parent_seq) {
            (crate::store::LineageKind::Fork, Some(seq)) => {
                writeln!(out, "parent   {} (forked at commit {seq})", shown(&l.parent_run_id))?
            }
            (kind, _) => writeln!(out, "parent   {} ({})", shown(&l.parent_run_id), kind.as_str())?,
        }
    }
    for d in db.descendants(&run.run_id).await? {
        writeln!(out, "made     {} ({})", shown(&d.run_id), d.kind.as_str())?;
    }
    match (checkpoint.graph_hash(), ours) {
        (None, _) => writeln!(out, "graph    not recorded (a checkpoint from before graph hashes)")?,
        (Some(h), Some(o)) if h == o => writeln!(out, "graph    {h} (this binary's)")?,
        (Some(h), Some(o)) => writeln!(out, "graph    {h} (not this binary's {o:.12}: `resume` refuses it)")?,
        (Some(h), None) => writeln!(out, "graph    {h}")?,
    }
    writeln!(out)?;

    let mut states: Vec<&StateRecord> = checkpoint.states.iter().collect();
    // Stable: unrecorded states keep definition order, after the recorded ones.
    states.sort_by_key(|s| s.started_ms.map_or((1, 0), |t| (0, t)));
    writeln!(
        out,
        "{:<24} {:<10} {:>5} {:>6} {:>7}  {:>9}  DURATION",
        "STATE", "STATUS", "RUNS", "FAILED", "RETRIES", "AT"
    )?;
    for s in states {
        let at = s.started_ms.map_or_else(|| "-".to_owned(), |t| format!("+{}", duration(t - run.created_ms)));
        let took = match (s.started_ms, s.finished_ms) {
            (Some(a), Some(b)) if b >= a => duration(b - a),
            (Some(_), _) if s.status == StateStatus::Running => "running".to_owned(),
            _ if never_ran(s) => "-".to_owned(),
            _ => "not recorded".to_owned(),
        };
        writeln!(
            out,
            "{:<24} {:<10} {:>5} {:>6} {:>7}  {:>9}  {}",
            shown(&s.name),
            s.status.as_str(),
            s.completed,
            s.failed,
            s.retries,
            at,
            took
        )?;
    }

    let (timers, signals) = (db.timers(&run.run_id).await?, db.signals(&run.run_id).await?);
    if !timers.is_empty() {
        writeln!(out)?;
        writeln!(out, "durable waits (sleeps, signal timeouts)")?;
        for t in &timers {
            writeln!(out, "  {:<50} wakes {}", shown(&t.key), utc(t.wake_ms))?;
        }
    }
    if !signals.is_empty() {
        writeln!(out)?;
        writeln!(out, "signals")?;
        for g in &signals {
            let fate = match (&g.taken_by, g.taken_ms) {
                (Some(by), Some(at)) => format!("taken {} by {}", utc(at), shown(by)),
                _ => "kept, for the next wait on its name".to_owned(),
            };
            writeln!(out, "  {:<20} {:<38} sent {}  {}", shown(&g.name), shown(&g.signal_id), utc(g.sent_ms), fate)?;
        }
    }

    let inputs = db.inputs(Some(&run.run_id), false).await?;
    if !inputs.is_empty() {
        writeln!(out)?;
        writeln!(out, "requests for human input")?;
        for r in inputs {
            let what = match (&r.answer, r.defaulted) {
                (Some(a), true) => format!("defaulted  \"{}\"", shown(a)),
                (Some(a), false) => format!("answered   \"{}\"", shown(a)),
                (None, _) => {
                    let mut p = "PENDING".to_owned();
                    if let Some(d) = &r.default {
                        p.push_str(&format!("    default \"{}\"", shown(d)));
                    }
                    if let Some(t) = r.timeout_ms {
                        p.push_str(&format!(" after {}", duration(t as i64)));
                    }
                    p
                }
            };
            writeln!(out, "  {:<10} {:<40} {}", shown(&r.request_id), shown(&r.prompt), what)?;
        }
        if run.status.is_finished() {
            return Ok(());
        }
        writeln!(out)?;
        writeln!(out, "answer a pending request with `answer {} <REQUEST> <VALUE>`", shown(&run.run_id))?;
    }
    Ok(())
}

fn never_ran(s: &StateRecord) -> bool {
    s.status == StateStatus::Pending && s.completed == 0 && s.failed == 0 && s.started_ms.is_none()
}
