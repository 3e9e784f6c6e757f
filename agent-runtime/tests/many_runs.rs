//! One definition, many runs: an `Agent` runs any number of runs at once (`start`, or
//! `run()` from several tasks), each with its own context, counters, controls, requests for
//! human input and store records, sharing only the compiled program.

use std::collections::HashSet;
use std::future::IntoFuture;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use agent_core::{AgentError, AgentStatus, BoxError, Context, HumanInput, StateResult, StateStatus};
use agent_runtime::store::{CheckpointStore, MemoryStore, RunQuery, SqliteStore};
use agent_runtime::{Agent, AnswerError, EventKind, RunHandle, RunOptions};

mod common;
use common::secs;

/// A context holding `input`.
fn input(n: u64) -> Context {
    let ctx = Context::new();
    ctx.set_state("input", n);
    ctx
}

/// A workflow that copies its input through a fan-out and a join, yielding between every
/// step so that concurrent runs interleave: `copy` keeps the input under `mine`, two
/// branches each write `input + k` under their own key, `check` reads all three back and
/// records what it saw under `seen`.
fn copier(name: &str) -> Agent {
    let mut agent = Agent::new(name.to_owned());
    agent.add_state("copy", |ctx: Context| async move {
        let n: u64 = ctx.get_state("input").expect("each run has its input");
        tokio::task::yield_now().await;
        ctx.set_state("mine", n);
        StateResult::parallel(["left", "right"])
    });
    for (branch, k) in [("left", 1u64), ("right", 2u64)] {
        agent
            .add_state(branch, move |ctx: Context| async move {
                let n: u64 = ctx.get_state("mine").unwrap();
                tokio::task::yield_now().await;
                ctx.set_state(branch, n + k);
                StateResult::next("check")
            })
            .targets(["check"]);
    }
    agent
        .add_state("check", |ctx: Context| async move {
            tokio::task::yield_now().await;
            let n: u64 = ctx.get_state("input").unwrap();
            let seen: (u64, u64, u64) =
                (ctx.get_state("mine").unwrap(), ctx.get_state("left").unwrap(), ctx.get_state("right").unwrap());
            ctx.set_state("seen", seen);
            ctx.set_state("output", n);
            StateResult::End
        })
        .targets(Vec::<String>::new());
    agent
}

/// `result`'s context holds exactly what the run given `n` wrote, and nothing of another.
fn assert_own(result: &agent_runtime::AgentResult, n: u64) {
    assert_eq!(result.status(), AgentStatus::Completed);
    let ctx = result.context();
    assert_eq!(ctx.get_state::<u64>("input"), Some(n));
    assert_eq!(ctx.get_state::<u64>("output"), Some(n), "read back its own input");
    assert_eq!(ctx.get_state::<(u64, u64, u64)>("seen"), Some((n, n + 1, n + 2)), "saw only its own writes");
    let mut completed = result.completed_states();
    assert_eq!(
        (completed.first().map(String::as_str), completed.last().map(String::as_str)),
        (Some("copy"), Some("check"))
    );
    completed.sort();
    assert_eq!(completed, ["check", "copy", "left", "right"]);
    assert_eq!(result.metrics().completed, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_runs_started_from_one_handle_each_keep_their_own_context() {
    let agent = copier("hundred");
    let handles: Vec<(u64, RunHandle)> =
        (0..100u64).map(|n| (n, agent.start(RunOptions::new().context(input(n))).unwrap())).collect();
    let ids: HashSet<String> = handles.iter().map(|(_, h)| h.id().to_owned()).collect();
    assert_eq!(ids.len(), 100, "each run has its own id");
    for (n, handle) in handles {
        let id = handle.id().to_owned();
        let result = handle.await.unwrap();
        assert_eq!(result.run_id(), id);
        assert_own(&result, n);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_runs_started_from_clones_in_tasks_each_keep_their_own_context() {
    let agent = copier("hundred_clones");
    let tasks: Vec<_> = (0..100u64)
        .map(|n| {
            let agent = agent.clone();
            tokio::spawn(async move {
                let handle = agent.start(RunOptions::new().context(input(n))).unwrap();
                (n, handle.await)
            })
        })
        .collect();
    let mut ids = HashSet::new();
    for task in tasks {
        let (n, result) = task.await.unwrap();
        let result = result.unwrap();
        assert_own(&result, n);
        assert!(ids.insert(result.run_id().to_owned()));
    }
    assert_eq!(ids.len(), 100);
}

/// LangGraph's `test_concurrent_execution_thread_safety`, translated: ten concurrent
/// invocations of one compiled graph, each with its own input, all complete (one `Agent`
/// used to refuse all but one with `AlreadyRunning`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_concurrent_runs_on_clones_of_one_agent_all_complete() {
    let agent = copier("ten");
    let tasks: Vec<_> = (0..10u64)
        .map(|n| {
            let agent = agent.clone();
            tokio::spawn(async move { (n, agent.run_in(input(n)).await) })
        })
        .collect();
    for task in tasks {
        let (n, result) = task.await.unwrap();
        assert_own(&result.expect("no run is refused"), n);
    }
}

/// A workflow whose first state sleeps (10 s, or the context's `secs`), counting the
/// bodies that finished, and whose second ends it.
fn sleeper(name: &str, finished: Arc<AtomicU32>) -> Agent {
    let mut agent = Agent::new(name.to_owned());
    agent.add_state("sleep", move |ctx: Context| {
        let finished = finished.clone();
        async move {
            tokio::time::sleep(secs(ctx.get_state_or("secs", 10))).await;
            finished.fetch_add(1, SeqCst);
            StateResult::next("after")
        }
    });
    agent.add_state("after", |_ctx: Context| async { StateResult::End });
    agent
}

#[tokio::test(start_paused = true)]
async fn a_handle_cancels_pauses_and_resumes_only_its_own_run() {
    let finished = Arc::new(AtomicU32::new(0));
    let agent = sleeper("controls", finished.clone());
    let cancelled = agent.start(RunOptions::new()).unwrap();
    let paused = agent.start(RunOptions::new()).unwrap();
    let longer = Context::new();
    longer.set_state("secs", 100u64);
    let untouched = agent.start(RunOptions::new().context(longer)).unwrap();
    tokio::task::yield_now().await;
    for h in [&cancelled, &paused, &untouched] {
        assert_eq!(h.state_status("sleep"), Some(StateStatus::Running));
    }

    cancelled.cancel().await;
    assert_eq!(cancelled.status(), AgentStatus::Cancelled);
    assert_eq!(cancelled.state_status("sleep"), Some(StateStatus::Cancelled));
    assert_eq!((paused.status(), untouched.status()), (AgentStatus::Running, AgentStatus::Running));

    // Pausing lets `sleep` finish (10 s of paused time) and starts nothing after it.
    let checkpoint = paused.pause().await;
    assert_eq!(checkpoint.run_id, paused.id());
    assert_eq!(checkpoint.completed_states, ["sleep"]);
    assert_eq!(paused.status(), AgentStatus::Paused);
    assert_eq!(untouched.status(), AgentStatus::Running, "another run's pause holds nothing here");
    assert_eq!(untouched.state_status("after"), Some(StateStatus::Pending));

    paused.resume().await.unwrap();
    assert!(matches!(paused.resume().await, Err(AgentError::NotPaused { .. })), "resumed once");
    let id = paused.id().to_owned();
    let resumed = paused.await.unwrap();
    assert_eq!((resumed.status(), resumed.run_id()), (AgentStatus::Completed, id.as_str()));
    assert_eq!(resumed.completed_states(), ["sleep", "after"]);

    let untouched = untouched.await.unwrap();
    assert_eq!(untouched.status(), AgentStatus::Completed);
    assert_eq!(untouched.metrics().completed, 2);
    let cancelled = cancelled.await.unwrap();
    assert_eq!((cancelled.status(), cancelled.metrics().completed), (AgentStatus::Cancelled, 0));
    assert_eq!(finished.load(SeqCst), 2, "the cancelled run's body never finished");
}

#[tokio::test(start_paused = true)]
async fn the_agent_speaks_of_its_most_recent_run() {
    let agent = sleeper("recent", Arc::new(AtomicU32::new(0)));
    assert_eq!(agent.status(), AgentStatus::Idle);

    let long = agent.start(RunOptions::new()).unwrap();
    assert_eq!(agent.run_id().as_deref(), Some(long.id()));
    tokio::task::yield_now().await;
    assert_eq!(agent.status(), AgentStatus::Running);

    // A second run, ended by its deadline: the agent now speaks of it, while the first
    // goes on.
    let short = agent.start(RunOptions::new().timeout(secs(1))).unwrap();
    assert_eq!(agent.run_id().as_deref(), Some(short.id()));
    let short_id = short.id().to_owned();
    assert!(matches!(short.await, Err(AgentError::TimedOut { .. })));
    assert_eq!(agent.status(), AgentStatus::TimedOut);
    assert_eq!(agent.run_id().as_deref(), Some(short_id.as_str()));
    assert_eq!(agent.create_checkpoint().run_id, short_id, "the second run's checkpoint, not the first's");
    assert_eq!(long.status(), AgentStatus::Running, "the first run goes on");
    assert_eq!(long.state_status("sleep"), Some(StateStatus::Running));
    assert_eq!(long.metrics().running, 1);

    // `cancel_all` stops the most recent run only: here a third, still going.
    let third = agent.start(RunOptions::new()).unwrap();
    tokio::task::yield_now().await;
    assert_eq!(agent.status(), AgentStatus::Running);
    agent.cancel_all().await;
    assert_eq!(third.status(), AgentStatus::Cancelled);
    assert_eq!(long.status(), AgentStatus::Running);
    assert_eq!(long.await.unwrap().status(), AgentStatus::Completed);
    assert_eq!(agent.status(), AgentStatus::Cancelled, "still the third run's");
}

/// A workflow whose one state asks a person (twice when the context says so) and keeps the
/// answers.
fn reviewer(name: &str) -> Agent {
    let mut agent = Agent::new(name.to_owned()).input_from_terminal(false);
    agent.add_state("review", |ctx: Context| async move {
        let first = ctx.human_in_the_loop(HumanInput::new("Approve?")).await?;
        ctx.set_state("first", first);
        if ctx.get_state_or("twice", false) {
            tokio::time::sleep(secs(1)).await;
            let second = ctx.human_in_the_loop(HumanInput::new("Sure?")).await?;
            ctx.set_state("second", second);
        }
        Ok::<_, BoxError>(StateResult::End)
    });
    agent
}

/// Wait (in paused time) until `handle` has `n` pending requests.
async fn until_pending(handle: &RunHandle, n: usize) -> Vec<String> {
    for _ in 0..1000 {
        let pending = handle.pending_inputs();
        if pending.len() == n {
            return pending.into_iter().map(|p| p.id).collect();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never {n} pending requests: {:?}", handle.pending_inputs());
}

#[tokio::test(start_paused = true)]
async fn human_input_answered_through_one_handle_reaches_that_run_only() {
    let agent = reviewer("inputs");
    let twice = Context::new();
    twice.set_state("twice", true);
    let a = agent.start(RunOptions::new().context(twice)).unwrap();
    assert_eq!(until_pending(&a, 1).await, ["input-1"]);
    a.answer("input-1", "a-first").unwrap();
    // While `a` waits between its two questions (nobody waiting on its requests), `b` asks
    // its first: `a`'s requests must stay (its history, and its count of them).
    let b = agent.start(RunOptions::new()).unwrap();
    // Each run counts its own requests: `b` waits on its own `input-1`.
    assert_eq!(until_pending(&b, 1).await, ["input-1"]);
    assert!(b.pending_inputs().iter().all(|p| p.run_id == b.id()));
    // The agent lists its most recent run's requests (`b`'s).
    let listed = agent.pending_inputs();
    assert_eq!((listed.len(), listed[0].run_id.as_str()), (1, b.id()));
    // `a`'s handle does not reach `b`'s `input-1`, though `a` had one of that id.
    assert_eq!(a.answer("input-1", "meant for b?"), Err(AnswerError::UnknownRequest { id: "input-1".into() }));
    assert_eq!(b.pending_inputs().len(), 1);
    // `a` asks again: its own `input-2`.
    assert_eq!(until_pending(&a, 1).await, ["input-2"]);
    assert!(a.pending_inputs().iter().all(|p| p.run_id == a.id()));
    assert_eq!(b.pending_inputs().len(), 1, "b's request is still waiting");
    assert_eq!(b.answer("input-2", "not b's"), Err(AnswerError::UnknownRequest { id: "input-2".into() }));
    assert_eq!(
        agent.answer("input-2", "not the most recent run's"),
        Err(AnswerError::UnknownRequest { id: "input-2".into() })
    );

    b.answer("input-1", "b-first").unwrap();
    let b = b.await.unwrap();
    assert_eq!(b.context().get_state::<String>("first").as_deref(), Some("b-first"));
    assert_eq!(b.context().get_state::<String>("second"), None);

    // `b` is over, and `a` still holds its history: a checkpoint of `a` lists both requests.
    let checkpoint = a.checkpoint();
    let ids: Vec<&str> = checkpoint.pending_inputs.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(ids, ["input-1", "input-2"]);
    a.answer("input-2", "a-second").unwrap();
    let a = a.await.unwrap();
    assert_eq!(a.context().get_state::<String>("first").as_deref(), Some("a-first"));
    assert_eq!(a.context().get_state::<String>("second").as_deref(), Some("a-second"));
}

/// Durable runs started at once are each recorded under their own id, each snapshot with
/// its own context.
async fn concurrent_durable_runs_are_recorded_apart(store: impl CheckpointStore + Clone, name: &str) {
    let agent = copier(name).with_store(store.clone());
    let handles: Vec<(u64, RunHandle)> =
        (0..20u64).map(|n| (n, agent.start(RunOptions::new().context(input(n))).unwrap())).collect();
    let mut ids = HashSet::new();
    for (n, handle) in handles {
        let id = handle.id().to_owned();
        let result = handle.await.unwrap();
        assert_own(&result, n);
        let checkpoint =
            agent_runtime::store::read_checkpoint(&store, &id).await.unwrap().expect("recorded under its id");
        assert_eq!((checkpoint.run_id.as_str(), checkpoint.agent_status), (id.as_str(), AgentStatus::Completed));
        assert_eq!(checkpoint.read_context().unwrap().get_state::<u64>("output"), Some(n));
        ids.insert(id);
    }
    let query = RunQuery { agent: Some(name.to_owned()), ..RunQuery::default() };
    let runs = store.list_runs(&query).await.unwrap();
    assert_eq!(runs.len(), 20);
    assert!(runs.iter().all(|r| r.status == AgentStatus::Completed && ids.contains(&r.run_id)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_durable_runs_in_a_memory_store_are_recorded_apart() {
    concurrent_durable_runs_are_recorded_apart(MemoryStore::default(), "durable_memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_durable_runs_in_sqlite_are_recorded_apart() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("runs.db")).unwrap();
    concurrent_durable_runs_are_recorded_apart(store, "durable_sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_durable_runs_in_postgres_are_recorded_apart() {
    let Some(url) = common::pg::url("concurrent_durable_runs_in_postgres_are_recorded_apart") else { return };
    // A schema of its own, dropped at the end whatever the outcome.
    let schema = format!("agent_test_many_runs_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let (u, s) = (url.clone(), schema.clone());
    let outcome = tokio::spawn(async move {
        let store = agent_runtime::store::PostgresStore::connect_with_schema(&u, &s).await.unwrap();
        concurrent_durable_runs_are_recorded_apart(store, "durable_postgres").await;
    })
    .await;
    crate::common::pg::drop_schema(&url, &schema).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test(start_paused = true)]
async fn a_handles_events_are_its_runs_and_end_with_it() {
    let finished = Arc::new(AtomicU32::new(0));
    let agent = sleeper("events", finished);
    let mut everything = agent.events();
    let a = agent.start(RunOptions::new()).unwrap();
    let mut a_events = a.events();
    let b = agent.start(RunOptions::new()).unwrap();
    let (a_id, b_id) = (a.id().to_owned(), b.id().to_owned());

    // Pausing and resuming goes on in the same stream; it ends after the last end.
    a.pause().await;
    a.resume().await.unwrap();
    let mut kinds = Vec::new();
    while let Some(event) = a_events.next().await {
        assert_eq!(*event.run_id, *a_id, "another run's event");
        kinds.push(event.kind);
    }
    let finishes: Vec<&EventKind> = kinds.iter().filter(|k| matches!(k, EventKind::RunFinished { .. })).collect();
    assert_eq!(
        finishes,
        [
            &EventKind::RunFinished { status: AgentStatus::Paused },
            &EventKind::RunFinished { status: AgentStatus::Completed }
        ]
    );
    assert_eq!(kinds.iter().filter(|k| matches!(k, EventKind::RunStarted)).count(), 2);

    assert_eq!(a.await.unwrap().status(), AgentStatus::Completed);
    assert_eq!(b.await.unwrap().status(), AgentStatus::Completed);

    // The agent's stream saw both runs.
    let mut seen = HashSet::new();
    while seen.len() < 2 {
        let event = everything.next().await.unwrap();
        seen.insert(event.run_id.to_string());
    }
    assert_eq!(seen, HashSet::from([a_id, b_id]));
}

#[tokio::test(start_paused = true)]
async fn a_stream_made_after_its_run_ended_ends_at_once() {
    let mut agent = Agent::new("over");
    agent.add_state("only", |_ctx: Context| async { StateResult::End });
    let _watching = agent.events(); // so runs send events
    let run = agent.start(RunOptions::new()).unwrap();
    while run.status() != AgentStatus::Completed {
        tokio::task::yield_now().await;
    }
    // Another run's events may follow; this stream skips them and ends.
    let other = agent.start(RunOptions::new()).unwrap();
    let mut events = run.events();
    assert!(tokio::time::timeout(secs(60), events.next()).await.expect("ends, not waits").is_none());
    other.await.unwrap();
    run.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn dropping_a_handle_leaves_its_run_going() {
    let finished = Arc::new(AtomicU32::new(0));
    let agent = sleeper("dropped", finished.clone());
    let handle = agent.start(RunOptions::new()).unwrap();
    let id = handle.id().to_owned();
    drop(handle);
    tokio::time::sleep(secs(11)).await;
    assert_eq!(finished.load(SeqCst), 1);
    assert_eq!(agent.run_id().as_deref(), Some(id.as_str()));
    assert_eq!(agent.status(), AgentStatus::Completed);
}

#[tokio::test(start_paused = true)]
async fn the_agent_resumes_a_handles_paused_run_and_the_handle_follows() {
    let finished = Arc::new(AtomicU32::new(0));
    let agent = sleeper("follow", finished);
    let handle = agent.start(RunOptions::new()).unwrap();
    tokio::task::yield_now().await;
    agent.pause().await;
    assert_eq!(handle.status(), AgentStatus::Paused);
    let resumed = agent.resume().await.unwrap();
    assert_eq!((resumed.status(), resumed.run_id()), (AgentStatus::Completed, handle.id()));
    assert_eq!(handle.status(), AgentStatus::Completed, "the handle follows the resumed run");
    assert_eq!(handle.metrics().completed, 2);
    assert!(matches!(handle.resume().await, Err(AgentError::NotPaused { .. })));
    // Awaited, the handle gives its own task's outcome: the run as it paused.
    assert_eq!(handle.await.unwrap().status(), AgentStatus::Paused);
}

#[tokio::test(start_paused = true)]
async fn a_checkpoint_restored_goes_to_the_next_run_started_only() {
    let firsts = Arc::new(AtomicU32::new(0));
    let mut agent = Agent::new("restore");
    let counted = firsts.clone();
    agent.add_state("first", move |_ctx: Context| {
        let counted = counted.clone();
        async move {
            tokio::time::sleep(secs(1)).await;
            counted.fetch_add(1, SeqCst);
            StateResult::next("second")
        }
    });
    agent.add_state("second", |_ctx: Context| async { StateResult::End });
    // A run paused after `first`: `second` is all that is left of it.
    let paused = agent.start(RunOptions::new()).unwrap();
    tokio::task::yield_now().await;
    let checkpoint = paused.pause().await;
    assert_eq!(checkpoint.completed_states, ["first"]);

    agent.restore_from_checkpoint(checkpoint.clone()).unwrap();
    let restored = agent.start(RunOptions::new()).unwrap();
    let fresh = agent.start(RunOptions::new()).unwrap();
    assert_eq!(restored.id(), checkpoint.run_id, "the restored run goes on under its id");
    assert_ne!(fresh.id(), checkpoint.run_id, "the next run begins afresh");
    assert_eq!(restored.await.unwrap().completed_states(), ["first", "second"]);
    assert_eq!(fresh.await.unwrap().completed_states(), ["first", "second"]);
    assert_eq!(firsts.load(SeqCst), 2, "`first` ran in the paused run and the fresh one, not the restored one");
}

#[tokio::test]
async fn a_definition_that_cannot_run_is_refused_at_start() {
    let agent = Agent::new("empty");
    assert!(matches!(agent.start(RunOptions::new()), Err(AgentError::NoStates { .. })));
    assert_eq!(agent.status(), AgentStatus::Idle, "nothing started");
}

#[test]
fn starting_outside_a_runtime_is_an_error_not_a_panic() {
    let mut agent = Agent::new("no_runtime");
    agent.add_state("only", |_ctx: Context| async { StateResult::End });
    assert!(matches!(agent.start(RunOptions::new()), Err(AgentError::NoRuntime { .. })));
    assert_eq!(agent.status(), AgentStatus::Idle);
}

/// Concurrent runs share the compiled program, and a builder state returning the same
/// name each time keeps resolving it right in every run (the program's `last_target` is
/// only a checked hint, shared by the runs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_runs_taking_different_targets_from_one_state_each_go_their_own_way() {
    let mut agent = Agent::new("routes");
    agent.add_state("route", |ctx: Context| async move {
        let n: u64 = ctx.get_state("input").unwrap();
        tokio::task::yield_now().await;
        StateResult::next(if n.is_multiple_of(2) { "even" } else { "odd" })
    });
    for (name, parity) in [("even", 0u64), ("odd", 1u64)] {
        agent.add_state(name, move |ctx: Context| async move {
            ctx.set_state("parity", parity);
            StateResult::End
        });
    }
    let handles: Vec<_> = (0..200u64).map(|n| (n, agent.start(RunOptions::new().context(input(n))).unwrap())).collect();
    for (n, h) in handles {
        let result = h.await.unwrap();
        assert_eq!(result.context().get_state::<u64>("parity"), Some(n % 2));
    }
}

/// A started run whose runtime shuts down ends `Cancelled`, whether its task had been
/// polled or not (never `Running` for ever); awaited elsewhere, its handle says so.
#[test]
fn a_started_run_whose_runtime_shuts_down_ends_cancelled() {
    let mut agent = Agent::new("shutdown");
    agent.add_state("forever", |_ctx: Context| async {
        std::future::pending::<()>().await;
        StateResult::End
    });
    let other = tokio::runtime::Builder::new_current_thread().build().unwrap();
    for polled in [false, true] {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let handle = {
            let _inside = runtime.enter();
            agent.start(RunOptions::new()).unwrap()
        };
        if polled {
            runtime.block_on(tokio::task::yield_now());
            assert_eq!(handle.state_status("forever"), Some(StateStatus::Running));
        }
        drop(runtime);
        assert_eq!(handle.status(), AgentStatus::Cancelled, "polled: {polled}");
        assert_eq!(agent.status(), AgentStatus::Cancelled);
        let result = other.block_on(handle.into_future()).unwrap();
        assert_eq!(result.status(), AgentStatus::Cancelled);
    }
}

/// A handle and its future go to other tasks and threads (checked when this file compiles).
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<RunHandle>();
    send_sync::<agent_runtime::RunFuture>();
};
