//! The command line (`agent_runtime::cli`) against real stores: each command is run through
//! `cli::execute` with an in-memory output, as a separate "process" would run it (a fresh
//! agent each time, on the same SQLite file or PostgreSQL database).
//!
//! The PostgreSQL variant runs when `AGENT_TEST_POSTGRES_URL` is set (e.g.
//! `postgres://postgres@127.0.0.1:5432/test`); otherwise it says it was skipped, or fails
//! under CI (`common/pg.rs`).
//!
//! Waits are short real-time polls (a run waiting for a person is left in the store by
//! aborting its task, as a killed process would leave it); no test asserts a wall-clock
//! duration.

use std::time::Duration;

use agent_core::{AgentError, BoxError, Checkpoint, Context, HumanInput, StateResult};
use agent_runtime::cli::{self, CliError, Command};
use agent_runtime::store::{CheckpointStore, PostgresStore, RunQuery, SqliteStore};
use agent_runtime::{Agent, AgentStatus};

mod common;

/// `prepare` → `review` (asks a person, no default) → `finish`.
fn reviewed(name: &str) -> Agent {
    let mut agent = Agent::new(name.to_owned()).input_from_terminal(false);
    agent.add_state("prepare", |ctx: Context| async move {
        ctx.set_state("draft", "a draft");
        StateResult::next("review")
    });
    agent.add_state("review", |ctx: Context| async move {
        let verdict = ctx.human_in_the_loop(HumanInput::new("Approve the draft? (approve/reject)")).await?;
        ctx.set_state("verdict", verdict);
        Ok::<_, BoxError>(StateResult::next("finish"))
    });
    agent.add_state("finish", |ctx: Context| async move {
        let verdict: String = ctx.get_state_or("verdict", String::new());
        ctx.set_state("outcome", format!("draft: {verdict}"));
        StateResult::End
    });
    agent
}

/// Run `args` (after the program name) for `agent`, returning the result and the output.
async fn cli_run(store: &str, args: &[&str], agent: impl FnOnce() -> Agent) -> (Result<(), CliError>, String) {
    let mut argv = vec!["prog", "--store", store];
    argv.extend_from_slice(args);
    let parsed = cli::parse(argv).expect("arguments parse");
    let mut out = Vec::new();
    let result = cli::execute(&parsed, agent, &mut out).await;
    (result, String::from_utf8(out).expect("utf-8 output"))
}

/// Poll `store` until some run of `agent` has a pending request; its run id.
async fn wait_for_pending(store: &dyn CheckpointStore, agent: &str) -> String {
    for _ in 0..500 {
        for run in store.list_runs(&RunQuery { agent: Some(agent.into()), ..RunQuery::default() }).await.unwrap() {
            if !store.inputs(Some(&run.run_id), true).await.unwrap().is_empty() {
                return run.run_id;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no request for input appeared in the store");
}

/// A run waiting for a person is left in the store (its process gone); `list` and `show`
/// see it; `answer` from another process answers it (once: a second answer is refused);
/// `resume` finishes it with that answer.
async fn wait_answer_resume(store_arg: &str, store: &dyn CheckpointStore, name: &str) {
    let (arg, n) = (store_arg.to_owned(), name.to_owned());
    let first = tokio::spawn(async move { cli_run(&arg, &["run"], || reviewed(&n)).await });
    let run_id = wait_for_pending(store, name).await;
    first.abort(); // the first process dies while its run waits
    let _ = first.await;

    let (result, out) = cli_run(store_arg, &["list"], || reviewed(name)).await;
    result.unwrap();
    let line = out.lines().find(|l| l.starts_with(&run_id)).unwrap_or_else(|| panic!("{run_id} not listed:\n{out}"));
    assert!(line.contains("Running"), "{line}");

    let (result, out) = cli_run(store_arg, &["show", &run_id[..8]], || reviewed(name)).await;
    result.unwrap();
    assert!(out.contains(&format!("run      {run_id}")), "{out}");
    let prepare = out.lines().find(|l| l.starts_with("prepare ")).unwrap();
    assert!(prepare.contains("Completed"), "{prepare}");
    let review = out.lines().find(|l| l.starts_with("  input-1")).unwrap();
    assert!(review.contains("Approve the draft?") && review.contains("PENDING"), "{review}");
    let finish = out.lines().find(|l| l.starts_with("finish ")).unwrap();
    assert!(finish.contains("Pending"), "{finish}");

    // Another process answers through the store.
    let (result, out) = cli_run(store_arg, &["answer", &run_id, "input-1", "approve"], || reviewed(name)).await;
    result.unwrap();
    assert!(out.contains("answered input-1"), "{out}");
    let inputs = store.inputs(Some(&run_id), false).await.unwrap();
    assert_eq!(inputs[0].answer.as_deref(), Some("approve"));
    let (result, _) = cli_run(store_arg, &["answer", &run_id, "input-1", "reject"], || reviewed(name)).await;
    assert!(matches!(result, Err(CliError::AlreadyAnswered { ref answer, .. }) if answer == "approve"), "{result:?}");
    let (result, _) = cli_run(store_arg, &["answer", &run_id, "input-9", "approve"], || reviewed(name)).await;
    assert!(matches!(result, Err(CliError::UnknownRequest { .. })), "{result:?}");

    // A third process resumes the run: `review` finds the answer, `finish` runs.
    let (result, out) = cli_run(store_arg, &["resume", &run_id], || reviewed(name)).await;
    result.unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert!(out.contains(&format!("resuming run {run_id}")), "{out}");
    assert!(out.contains(&format!("run {run_id} completed")), "{out}");
    assert_eq!(store.get_run(&run_id).await.unwrap().unwrap().status, AgentStatus::Completed);
    let snapshot = store.latest_snapshot(&run_id).await.unwrap().unwrap();
    let ctx = Checkpoint::from_json(&snapshot.data).unwrap().read_context().unwrap();
    assert_eq!(ctx.get_state::<String>("outcome").as_deref(), Some("draft: approve"));

    // Resuming a completed run does nothing.
    let (result, out) = cli_run(store_arg, &["resume", &run_id], || reviewed(name)).await;
    result.unwrap();
    assert!(out.contains("already completed"), "{out}");
    let (result, out) = cli_run(store_arg, &["show", &run_id], || reviewed(name)).await;
    result.unwrap();
    assert!(out.contains("answered   \"approve\""), "{out}");
}

#[tokio::test]
async fn a_waiting_run_is_answered_from_another_process_and_resumed_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.db");
    let path = path.to_str().unwrap();
    let store = SqliteStore::open(path).unwrap();
    wait_answer_resume(path, &store, "reviewed").await;
}

#[tokio::test]
async fn a_waiting_run_is_answered_from_another_process_and_resumed_postgres() {
    let Some(url) = common::pg::url("a_waiting_run_is_answered_from_another_process_and_resumed_postgres") else {
        return;
    };
    let store = PostgresStore::connect(&url).await.unwrap();
    // A name of its own, so runs of other tests in the same database are not listed.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let name = format!("reviewed_{}_{nanos}", std::process::id());
    wait_answer_resume(&url, &store, &name).await;
}

/// A run answered while it waits: the answer, given through the store by another process,
/// reaches the running process (its store poll), which finishes the run.
#[tokio::test]
async fn an_answer_through_the_store_reaches_a_running_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.db").to_str().unwrap().to_owned();
    let store = SqliteStore::open(&path).unwrap();
    let arg = path.clone();
    let first = tokio::spawn(async move { cli_run(&arg, &["run"], || reviewed("reviewed")).await });
    let run_id = wait_for_pending(&store, "reviewed").await;
    let (result, _) = cli_run(&path, &["answer", &run_id[..6], "input-1", "reject"], || reviewed("reviewed")).await;
    result.unwrap();
    let (result, out) = tokio::time::timeout(Duration::from_secs(20), first).await.unwrap().unwrap();
    result.unwrap_or_else(|e| panic!("{e}\n{out}"));
    // Plain progress lines: the run, its states' changes, the request, the summary.
    assert!(out.contains(&format!("run {run_id} of reviewed")), "{out}");
    assert!(out.contains("waiting for input input-1: Approve the draft?"), "{out}");
    assert!(out.lines().any(|l| l.trim_start().starts_with("review") && l.ends_with("running")), "{out}");
    assert!(out.contains(&format!("run {run_id} completed: 3 state runs")), "{out}");
    let snapshot = store.latest_snapshot(&run_id).await.unwrap().unwrap();
    let ctx = Checkpoint::from_json(&snapshot.data).unwrap().read_context().unwrap();
    assert_eq!(ctx.get_state::<String>("outcome").as_deref(), Some("draft: reject"));
}

fn two_steps() -> Agent {
    let mut agent = Agent::new("steps");
    agent.add_state("one", |ctx: Context| async move {
        ctx.set_state("n", 1);
        StateResult::next("two")
    });
    agent.add_state("two", |ctx: Context| async move {
        ctx.update_state("n", |n: &mut i32| *n += 1).unwrap();
        StateResult::End
    });
    agent
}

/// `run` records a completed run; `show` prints every state's timeline, with a duration
/// where the snapshot recorded both ends and `not recorded` otherwise.
#[tokio::test]
async fn run_then_list_and_show_the_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("steps.db");
    let path = path.to_str().unwrap();
    let (result, out) = cli_run(path, &["run"], two_steps).await;
    result.unwrap();
    assert!(out.contains("completed: 2 state runs, 0 retries, in "), "{out}");
    let store = SqliteStore::open(path).unwrap();
    let runs = store.list_runs(&RunQuery::default()).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, AgentStatus::Completed);
    let run_id = runs[0].run_id.clone();

    let (result, out) = cli_run(path, &["list"], two_steps).await;
    result.unwrap();
    assert!(out.starts_with("RUN"), "{out}");
    assert!(out.lines().any(|l| l.starts_with(&run_id) && l.contains("Completed")), "{out}");

    let (result, out) = cli_run(path, &["show", &run_id], two_steps).await;
    result.unwrap();
    assert!(out.contains("status   Completed"), "{out}");
    let snapshot = store.latest_snapshot(&run_id).await.unwrap().unwrap();
    let checkpoint = Checkpoint::from_json(&snapshot.data).unwrap();
    let mut lines = out.lines().skip_while(|l| !l.starts_with("STATE"));
    lines.next();
    for record in &checkpoint.states {
        let line = lines.next().unwrap_or_else(|| panic!("{} missing:\n{out}", record.name));
        assert!(line.starts_with(&record.name) && line.contains("Completed"), "{line}");
        match (record.started_ms, record.finished_ms) {
            (Some(a), Some(b)) => assert!(line.ends_with('s') && !line.contains("not recorded") && b >= a, "{line}"),
            _ => assert!(line.ends_with("not recorded"), "{line}"),
        }
    }
}

/// A failed run exits non-zero with the failure, and is listed `Failed`; unknown runs,
/// ambiguous prefixes and bad arguments are clear errors, never panics.
#[tokio::test]
async fn failures_are_typed_errors_with_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fail.db");
    let path = path.to_str().unwrap();
    let failing = || {
        let mut agent = Agent::new("failing");
        agent.add_state("boom", |_ctx: Context| async { Err::<StateResult, _>("disk on fire") });
        agent
    };
    let (result, _) = cli_run(path, &["run"], failing).await;
    let err = result.unwrap_err();
    assert!(matches!(err, CliError::Agent(AgentError::StateFailed { .. })), "{err:?}");
    assert_eq!(err.exit_code(), 1);
    assert!(err.to_string().contains("boom"), "{err}");
    let (result, out) = cli_run(path, &["list"], failing).await;
    result.unwrap();
    assert!(out.lines().nth(1).unwrap().contains("Failed"), "{out}");

    let (result, _) = cli_run(path, &["show", "no-such-run"], failing).await;
    let err = result.unwrap_err();
    assert!(matches!(err, CliError::RunNotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("no-such-run"), "{err}");
    // Another agent's runs are not this one's.
    let (result, _) = cli_run(path, &["show", ""], two_steps).await;
    assert!(matches!(result, Err(CliError::RunNotFound { .. })), "{result:?}");

    let (result, _) = cli_run(path, &["run"], failing).await;
    assert!(result.is_err());
    let (result, _) = cli_run(path, &["show", "-"], failing).await;
    // Every uuid contains `-`, but not as a prefix: not found, not ambiguous.
    assert!(matches!(result, Err(CliError::RunNotFound { .. })), "{result:?}");

    let err = cli::parse(["prog", "answer", "run-1"]).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(err.to_string().contains("REQUEST"), "{err}");
    assert!(cli::parse(["prog", "graph", "--format", "png"]).is_err());
    assert_eq!(cli::parse(["prog"]).unwrap().command(), Command::Start);

    let (result, _) = cli_run("/nonexistent-dir/x/runs.db", &["list"], failing).await;
    let err = result.unwrap_err();
    assert!(matches!(err, CliError::Store(_)) && err.exit_code() == 1, "{err:?}");
}

/// With no subcommand, the newest unfinished run is resumed; with none left, a new one
/// starts.
#[tokio::test]
async fn no_subcommand_resumes_the_unfinished_run_or_starts_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.db").to_str().unwrap().to_owned();
    let store = SqliteStore::open(&path).unwrap();
    let arg = path.clone();
    let first = tokio::spawn(async move { cli_run(&arg, &[], || reviewed("reviewed")).await });
    let run_id = wait_for_pending(&store, "reviewed").await;
    first.abort();
    let _ = first.await;
    store.answer_input(&run_id, "input-1", "approve", false, 0).await.unwrap();

    let (result, out) = cli_run(&path, &[], || reviewed("reviewed")).await;
    result.unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert!(out.contains(&format!("resuming run {run_id}")), "{out}");
    assert_eq!(store.get_run(&run_id).await.unwrap().unwrap().status, AgentStatus::Completed);

    // Nothing unfinished: a new run (which waits for a person; answered from code here).
    let arg = path.clone();
    let second = tokio::spawn(async move { cli_run(&arg, &[], || reviewed("reviewed")).await });
    let runs = loop {
        let runs = store.list_runs(&RunQuery::default()).await.unwrap();
        if runs.len() == 2 && !store.inputs(Some(&runs[0].run_id), true).await.unwrap().is_empty() {
            break runs;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_ne!(runs[0].run_id, run_id);
    store.answer_input(&runs[0].run_id, "input-1", "approve", false, 0).await.unwrap();
    let (result, out) = tokio::time::timeout(Duration::from_secs(20), second).await.unwrap().unwrap();
    result.unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert!(!out.contains("resuming"), "{out}");
}

/// A builder agent has no compile-time graph: `graph` draws what is known (states, start,
/// dependencies, `on_error`) and says that transitions are not drawn.
#[tokio::test]
async fn graph_of_a_builder_agent_says_what_it_cannot_draw() {
    let make = || {
        let mut agent = Agent::new("built");
        agent.add_state("load", |_ctx: Context| async { StateResult::next("report") }).on_error("recover");
        agent.add_state("recover", |_ctx: Context| async { StateResult::End });
        agent
            .add_state("report", |_ctx: Context| async { StateResult::End })
            .dependency("load", agent_core::DependencyType::Required);
        agent
    };
    let mut out = Vec::new();
    cli::execute(&cli::parse(["prog", "graph"]).unwrap(), make, &mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("the transitions of its states are computed at run time"), "{text}");
    assert!(text.contains("__start([start]) --> load"), "{text}");
    assert!(text.contains("load -. on_error .-> recover"), "{text}");
    assert!(text.contains("load -. depends .-> report"), "{text}");
    let mut out = Vec::new();
    cli::execute(&cli::parse(["prog", "graph", "--format", "dot"]).unwrap(), make, &mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("digraph \"built\"") && text.contains("\"load\" -> \"recover\""), "{text}");

    // Declared targets are drawn, and the note names only the states still undeclared.
    let make = || {
        let mut declared = Agent::new("built");
        declared.add_state("load", |_ctx: Context| async { StateResult::next("report") }).targets(["report"]);
        declared.add_state("report", |_ctx: Context| async { StateResult::End });
        declared
    };
    let mut out = Vec::new();
    cli::execute(&cli::parse(["prog", "graph"]).unwrap(), make, &mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("load --> report"), "{text}");
    assert!(text.contains("the transitions of report are computed at run time"), "{text}");
}
