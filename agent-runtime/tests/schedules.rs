//! Schedules, in paused time (translated from Temporal's schedule tests: catch-up window,
//! overlap policies, pause; and River's periodic-job tests: one job per tick whatever the
//! number of clients): three missed ticks with a catch-up window covering two start two
//! runs; each overlap policy; pause, resume, remove and backfill; bad definitions are
//! typed errors. Then, in real time on every store: two schedulers (two workers) running at
//! once start each tick once, and workers run what their schedulers submit.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use agent_core::{Context, StateResult};
use agent_runtime::schedule::{Overlap, Schedule, ScheduleError, Scheduler};
use agent_runtime::store::{cancel_run, CheckpointStore, MemoryStore, RunQuery, RunRecord, ScheduleRecord};
use agent_runtime::{Agent, AgentStatus, Worker};
use tokio::time::Instant;

mod common;
use common::on_sqlite;
use common::pg::on_postgres;

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

fn report_agent() -> Agent {
    let mut agent = Agent::new("report");
    agent.add_state("build", |ctx: Context| async move {
        ctx.set_state("built", true);
        StateResult::End
    });
    agent
}

async fn runs(store: &Arc<dyn CheckpointStore>) -> Vec<RunRecord> {
    store.list_runs(&RunQuery { agent: Some("report".into()), ..RunQuery::default() }).await.unwrap()
}

/// A schedule added in paused time, and the schedule clock read through it: the record's
/// `updated_ms` is the clock when it was added, and the clock moves with tokio's.
struct Added {
    agent: Agent,
    store: Arc<dyn CheckpointStore>,
    scheduler: Scheduler,
    at_ms: i64,
    at: Instant,
}

impl Added {
    async fn new(schedule: Schedule) -> Added {
        let store: Arc<dyn CheckpointStore> = Arc::new(MemoryStore::new());
        let agent = report_agent().with_store(store.clone());
        agent.add_schedule(schedule).await.unwrap();
        let at_ms = agent.schedules().await.unwrap()[0].updated_ms;
        let scheduler = Scheduler::new(store.clone()).serve(report_agent);
        Added { agent, store, scheduler, at_ms, at: Instant::now() }
    }

    fn now_ms(&self) -> i64 {
        self.at_ms + self.at.elapsed().as_millis() as i64
    }

    async fn record(&self) -> ScheduleRecord {
        self.agent.schedules().await.unwrap().remove(0)
    }

    /// Sleep until the schedule's next tick, plus `extra`.
    async fn past_next_tick(&self, extra: Duration) {
        let next = self.record().await.next_tick_ms;
        tokio::time::sleep(Duration::from_millis(u64::try_from(next - self.now_ms()).unwrap_or(0)) + extra).await;
    }
}

#[tokio::test(start_paused = true)]
async fn three_missed_ticks_with_a_catch_up_window_covering_two_start_two_runs() {
    let s = Added::new(Schedule::new("hourly", "0 * * * *").overlap(Overlap::Allow).catch_up(100 * MINUTE)).await;
    let first = s.record().await.next_tick_ms;
    // Downtime: nothing runs the schedule for three ticks and a half hour.
    s.past_next_tick(2 * HOUR + 30 * MINUTE).await;
    let report = s.scheduler.tick().await.unwrap();
    let ticks: Vec<i64> = report.started.iter().map(|(_, _, tick, _)| *tick).collect();
    let hour = HOUR.as_millis() as i64;
    assert_eq!(ticks, [first + hour, first + 2 * hour], "the two ticks in the window, oldest first");
    assert_eq!(report.missed, 1);
    assert_eq!(runs(&s.store).await.len(), 2);
    assert_eq!(s.record().await.next_tick_ms, first + 3 * hour);
    // Each run knows its schedule and tick.
    let (_, _, tick, run_id) = &report.started[1];
    let input = s.store.run_input(run_id).await.unwrap().unwrap();
    let ctx = Context::from_json_str(&input).unwrap();
    assert_eq!(ctx.get_state::<String>(agent_runtime::schedule::SCHEDULE_KEY).as_deref(), Some("hourly"));
    assert_eq!(ctx.get_state::<i64>(agent_runtime::schedule::TICK_KEY), Some(*tick));
    // A second pass at the same time starts nothing more.
    assert!(s.scheduler.tick().await.unwrap().started.is_empty());
    assert_eq!(runs(&s.store).await.len(), 2);
}

/// A schedule every minute with `overlap`: the first tick starts a run (queued: no worker
/// takes it, so it goes on); what does the second do?
async fn second_tick_while_the_first_run_goes_on(
    overlap: Overlap,
) -> (Added, agent_runtime::schedule::SchedulerReport) {
    let s = Added::new(Schedule::new("minutely", "* * * * *").overlap(overlap)).await;
    s.past_next_tick(Duration::from_secs(1)).await;
    let first = s.scheduler.tick().await.unwrap();
    assert_eq!(first.started.len(), 1, "{overlap:?}");
    s.past_next_tick(Duration::from_secs(1)).await;
    let second = s.scheduler.tick().await.unwrap();
    (s, second)
}

#[tokio::test(start_paused = true)]
async fn each_overlap_policy() {
    let (s, skip) = second_tick_while_the_first_run_goes_on(Overlap::Skip).await;
    assert_eq!((skip.started.len(), skip.skipped), (0, 1));
    assert_eq!(runs(&s.store).await.len(), 1);

    let (s, allow) = second_tick_while_the_first_run_goes_on(Overlap::Allow).await;
    assert_eq!(allow.started.len(), 1);
    assert_eq!(runs(&s.store).await.len(), 2);

    let (s, cancel) = second_tick_while_the_first_run_goes_on(Overlap::Cancel).await;
    assert_eq!((cancel.started.len(), cancel.cancelled), (1, 1));
    let all = runs(&s.store).await;
    let statuses: HashSet<AgentStatus> = all.iter().map(|r| r.status).collect();
    assert_eq!(statuses, HashSet::from([AgentStatus::Cancelled, AgentStatus::Idle]), "{all:?}");

    let (s, buffer) = second_tick_while_the_first_run_goes_on(Overlap::BufferOne).await;
    assert_eq!((buffer.started.len(), buffer.held), (0, 1));
    let held = s.record().await.buffered_tick_ms.expect("the tick is held");
    // A third tick while it still goes on: one is held already, so this one is skipped.
    s.past_next_tick(Duration::from_secs(1)).await;
    let third = s.scheduler.tick().await.unwrap();
    assert_eq!((third.started.len(), third.held, third.skipped), (0, 0, 1));
    // The first run ends: the held tick starts at the next pass.
    let first_run = s.record().await.last_run_id.unwrap();
    cancel_run(&*s.store, &first_run).await.unwrap();
    let after = s.scheduler.tick().await.unwrap();
    assert_eq!(after.started.iter().map(|(_, _, t, _)| *t).collect::<Vec<_>>(), [held]);
    assert_eq!(s.record().await.buffered_tick_ms, None);
}

#[tokio::test(start_paused = true)]
async fn pause_resume_remove_and_backfill() {
    let s = Added::new(Schedule::new("minutely", "* * * * *")).await;
    s.agent.pause_schedule("minutely").await.unwrap();
    s.past_next_tick(3 * MINUTE).await;
    assert!(s.scheduler.tick().await.unwrap().started.is_empty(), "a paused schedule starts nothing");
    s.agent.resume_schedule("minutely").await.unwrap();
    assert!(s.record().await.next_tick_ms > s.now_ms(), "the ticks of the pause are not caught up");
    assert!(s.scheduler.tick().await.unwrap().started.is_empty());
    s.past_next_tick(Duration::from_secs(1)).await;
    assert_eq!(s.scheduler.tick().await.unwrap().started.len(), 1);

    // Backfill the three minutes before the schedule was added: three runs, and a second
    // backfill of the same range makes none.
    let minute = 60_000;
    let start = (s.at_ms / minute - 3) * minute;
    let time = |ms: i64| UNIX_EPOCH + Duration::from_millis(ms as u64);
    let first = s.agent.backfill("minutely", time(start), time(start + 2 * minute)).await.unwrap();
    assert_eq!(first.len(), 3);
    let again = s.agent.backfill("minutely", time(start), time(start + 2 * minute)).await.unwrap();
    assert_eq!(first, again, "a tick that has a run gets no second one");
    assert_eq!(runs(&s.store).await.len(), 4);
    let backwards = s.agent.backfill("minutely", time(start + minute), time(start)).await.unwrap_err();
    assert!(matches!(backwards, ScheduleError::BadRange { .. }), "{backwards}");
    let huge = s.agent.backfill("minutely", time(0), time(start)).await.unwrap_err();
    assert!(matches!(huge, ScheduleError::BadRange { .. }), "{huge}");

    s.agent.remove_schedule("minutely").await.unwrap();
    assert!(s.agent.schedules().await.unwrap().is_empty());
    assert!(matches!(s.agent.pause_schedule("minutely").await, Err(ScheduleError::Unknown { .. })));
    assert_eq!(runs(&s.store).await.len(), 4, "its runs stay");
}

#[tokio::test]
async fn bad_definitions_are_typed_errors_and_store_nothing() {
    let store: Arc<dyn CheckpointStore> = Arc::new(MemoryStore::new());
    let agent = report_agent().with_store(store.clone());
    let cron = agent.add_schedule(Schedule::new("x", "every day")).await.unwrap_err();
    assert!(matches!(cron, ScheduleError::BadCron { .. }), "{cron}");
    let tz = agent.add_schedule(Schedule::new("x", "0 3 * * *").timezone("Europe/Atlantis")).await.unwrap_err();
    assert!(matches!(tz, ScheduleError::BadTimezone { .. }), "{tz}");
    let name = agent.add_schedule(Schedule::new("", "0 3 * * *")).await.unwrap_err();
    assert!(matches!(name, ScheduleError::BadName { .. }), "{name}");
    assert!(agent.schedules().await.unwrap().is_empty());
    let no_store = report_agent().add_schedule(Schedule::new("x", "0 3 * * *")).await.unwrap_err();
    assert!(matches!(no_store, ScheduleError::NoStore { .. }), "{no_store}");
}

/// Two workers with their schedulers, on one store, for a few seconds of a schedule every
/// second: as many runs as ticks handled (one per tick: no tick twice, none lost between the
/// first and the cursor), and the workers ran them.
async fn two_workers_start_each_tick_once(store: Arc<dyn CheckpointStore>) {
    let agent = report_agent().with_store(store.clone());
    agent.add_schedule(Schedule::new("every-second", "* * * * * *").overlap(Overlap::Allow)).await.unwrap();
    let first_tick = agent.schedules().await.unwrap()[0].next_tick_ms;
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = || {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move {
            let worker = Worker::new(store).serve(report_agent).concurrency(4).poll_interval(Duration::from_millis(50));
            worker.run_until(stop.cancelled_owned()).await.unwrap()
        })
    };
    let (a, b) = (worker(), worker());
    tokio::time::sleep(Duration::from_millis(3500)).await;
    stop.cancel();
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    let cursor = agent.schedules().await.unwrap()[0].next_tick_ms;
    let handled = usize::try_from((cursor - first_tick) / 1000).unwrap();
    let all = runs(&store).await;
    assert!(handled >= 2, "at least two ticks in 3.5 s (cursor {cursor}, first {first_tick})");
    assert_eq!(all.len(), handled, "one run per tick handled: {all:?}");
    assert!(a.claimed + b.claimed >= handled as u64 - 1, "the workers ran them: {a:?} {b:?}");
    let done = all.iter().filter(|r| r.status == AgentStatus::Completed).count();
    assert!(done + 1 >= handled, "{all:?}");
}

#[tokio::test]
async fn two_workers_start_each_tick_once_on_memory() {
    two_workers_start_each_tick_once(Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn two_workers_start_each_tick_once_on_sqlite() {
    on_sqlite(two_workers_start_each_tick_once).await;
}

#[tokio::test]
async fn two_workers_start_each_tick_once_on_postgres() {
    on_postgres("two_workers_start_each_tick_once", "sched", two_workers_start_each_tick_once).await;
}

#[tokio::test]
async fn the_command_line_manages_schedules() {
    use agent_runtime::cli;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runs.db").display().to_string();
    let run = |args: &[&str]| {
        let mut argv = vec!["prog", "--store", db.as_str()];
        argv.extend_from_slice(args);
        let parsed = cli::parse(argv.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        async move {
            let parsed = parsed.expect("arguments parse");
            let mut out = Vec::new();
            let result = cli::execute(&parsed, report_agent, &mut out).await;
            (result, String::from_utf8(out).unwrap())
        }
    };
    let (added, out) =
        run(&["schedule", "add", "nightly", "0 3 * * *", "--timezone", "Europe/Paris", "--overlap", "buffer-one"])
            .await;
    added.unwrap();
    assert!(out.contains("schedule nightly added") && out.contains("next tick"), "{out}");
    let (listed, out) = run(&["schedule", "list"]).await;
    listed.unwrap();
    assert!(
        out.contains("nightly") && out.contains("Europe/Paris") && out.contains("buffer-one") && out.contains("active"),
        "{out}"
    );
    run(&["schedule", "pause", "nightly"]).await.0.unwrap();
    assert!(run(&["schedule", "list"]).await.1.contains("PAUSED"));
    run(&["schedule", "resume", "nightly"]).await.0.unwrap();
    let (filled, out) =
        run(&["schedule", "backfill", "nightly", "--from", "2026-11-01T00:00:00Z", "--to", "2026-11-03T23:00:00Z"])
            .await;
    filled.unwrap();
    assert!(out.starts_with("3 runs"), "{out}");
    let (bad, _) = run(&["schedule", "add", "x", "not cron"]).await;
    assert!(matches!(bad, Err(cli::CliError::Schedule(ScheduleError::BadCron { .. }))), "{bad:?}");
    let (bad_time, _) = run(&["schedule", "backfill", "nightly", "--from", "yesterday", "--to", "today"]).await;
    assert!(matches!(bad_time, Err(cli::CliError::Usage(_))), "{bad_time:?}");
    run(&["schedule", "remove", "nightly"]).await.0.unwrap();
    let (gone, _) = run(&["schedule", "remove", "nightly"]).await;
    assert!(matches!(gone, Err(cli::CliError::Schedule(ScheduleError::Unknown { .. }))), "{gone:?}");
    assert!(cli::parse(["prog", "schedule", "add", "x", "* * * * *", "--overlap", "queue"]).is_err());

    // The console lists what the command line added.
    run(&["schedule", "add", "hourly", "0 * * * *", "--catch-up", "600"]).await.0.unwrap();
    let store = agent_runtime::SqliteStore::open(&db).unwrap();
    let app = agent_runtime::console::router(store);
    let reply = common::http::get(&app, "/api/v1/schedules").await;
    assert_eq!(reply.status, axum::http::StatusCode::OK, "{}", reply.body);
    let listed = reply.json()["schedules"].clone();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!((listed[0]["name"].as_str(), listed[0]["catch_up_ms"].as_i64()), (Some("hourly"), Some(600_000)));
    assert!(listed[0]["next_tick_ms"].as_i64().is_some());
}
