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
//!
//! What only a process shows (exit codes, stderr, Ctrl-C, a progress bar on a terminal) is
//! tested on this test binary itself, run as a workflow binary: with `AGENT_CLI_CHILD` set,
//! `child_process` runs `cli::main_with_args` on the arguments it holds. A terminal is given
//! by util-linux's `script`; without it those cases print `skipped: ...` (under `CI=true`
//! they fail).

use std::io::BufRead;
use std::process::{Command as Process, Stdio};
use std::time::Duration;

use agent_core::{AgentError, BoxError, Context, HumanInput, RetryPolicy, StateResult};
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
    // Its future dropped, the run gives its lease back in the background.
    for _ in 0..500 {
        if store.get_run(&run_id).await.unwrap().unwrap().owner.is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let (result, out) = cli_run(store_arg, &["list"], || reviewed(name)).await;
    result.unwrap();
    let line = out.lines().find(|l| l.starts_with(&run_id)).unwrap_or_else(|| panic!("{run_id} not listed:\n{out}"));
    // Its process is gone: listed as given back, never as `Running` with no owner.
    assert!(line.contains("interrupted") && !line.contains("Running"), "{line}");

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
    let checkpoint = agent_runtime::store::read_checkpoint(store, &run_id).await.unwrap().unwrap();
    let ctx = checkpoint.read_context().unwrap();
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
    // A schema of its own, which the command line reaches through the URL it is given.
    let (schema, schema_url) = common::pg::own_schema(&url, "cli");
    let store = PostgresStore::connect_with_schema(&url, &schema).await.unwrap();
    let outcome = tokio::spawn(async move { wait_answer_resume(&schema_url, &store, "reviewed").await }).await;
    common::pg::drop_schema(&url, &schema).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
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
    let checkpoint = agent_runtime::store::read_checkpoint(&store, &run_id).await.unwrap().unwrap();
    let ctx = checkpoint.read_context().unwrap();
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
    let hash = two_steps().graph_hash().unwrap();
    assert!(out.contains(&format!("graph    {hash} (this binary's)")), "{out}");
    // A binary whose graph changed says so.
    let grown = || {
        let mut agent = two_steps();
        agent.add_state("three", |_ctx: Context| async { StateResult::End });
        agent
    };
    let (result, out) = cli_run(path, &["show", &run_id], grown).await;
    result.unwrap();
    let other = grown().graph_hash().unwrap();
    assert!(out.contains(&format!("graph    {hash} (not this binary's {other:.12}: `resume` refuses it)")), "{out}");
    let checkpoint = agent_runtime::store::read_checkpoint(&store, &run_id).await.unwrap().unwrap();
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
    // States are s0 load, s1 recover, s2 report.
    assert!(text.contains("    s0(\"load\")\n    s1(\"recover\")\n    s2(\"report\")\n"), "{text}");
    assert!(text.contains("    start --> s0\n"), "{text}");
    assert!(text.contains("    s0 -. on_error .-> s1\n"), "{text}");
    assert!(text.contains("    s0 -. depends .-> s2\n"), "{text}");
    assert!(!text.contains("--> stop"), "no state is known to end: {text}");
    let mut out = Vec::new();
    cli::execute(&cli::parse(["prog", "graph", "--format", "dot"]).unwrap(), make, &mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("digraph \"built\"") && text.contains("    s0 -> s1 [style=dashed"), "{text}");

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
    assert!(text.contains("    s0 --> s1\n"), "{text}");
    assert!(text.contains("the transitions of report are computed at run time"), "{text}");
}

// ----- a real process ----------------------------------------------------------------------

/// A state name, a prompt and an error carrying a colour escape and a carriage return.
const EVIL: &str = "evil\u{1b}[31m\rname";

/// The agents a child process runs, by name.
fn child_agent(which: &str) -> Agent {
    match which {
        "steps" => two_steps(),
        "slow" => {
            let mut agent = Agent::new("slow");
            agent.add_state("work", |_ctx: Context| async {
                tokio::time::sleep(Duration::from_millis(600)).await;
                StateResult::next("after")
            });
            agent.add_state("after", |_ctx: Context| async {
                tokio::time::sleep(Duration::from_millis(600)).await;
                StateResult::End
            });
            agent
        }
        "evil" => {
            let mut agent = Agent::new("evil").input_from_terminal(false);
            agent.add_state(EVIL, |_ctx: Context| async { Err::<StateResult, _>("boom\u{1b}[2J\rgone") });
            agent
        }
        "asker" => {
            // The terminal answers when stdin is one (as under `script`).
            let mut agent = Agent::new("asker");
            agent.add_state("ask", |ctx: Context| async move {
                ctx.human_in_the_loop(HumanInput::new("Approve?")).await?;
                Ok::<_, BoxError>(StateResult::End)
            });
            agent
        }
        other => panic!("no agent {other}"),
    }
}

/// The child: a workflow binary's `main`, on the arguments in `AGENT_CLI_CHILD`
/// (separated by `\u{1f}`), exiting with its exit code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_process() {
    let Ok(args) = std::env::var("AGENT_CLI_CHILD") else { return };
    let which = std::env::var("AGENT_CLI_AGENT").unwrap();
    let mut argv = vec!["prog".to_owned()];
    argv.extend(args.split('\u{1f}').map(str::to_owned));
    let code = cli::main_with_args(argv, move || child_agent(&which)).await;
    std::process::exit(code.into());
}

/// This test binary, set to run `args` for agent `which` as a child.
fn child(which: &str, args: &[&str]) -> Process {
    let mut cmd = Process::new(std::env::current_exe().unwrap());
    cmd.args(["child_process", "--exact", "--nocapture", "--quiet", "--color", "never"])
        .env("AGENT_CLI_CHILD", args.join("\u{1f}"))
        .env("AGENT_CLI_AGENT", which)
        .stdin(Stdio::null());
    cmd
}

/// Whether util-linux's `script` can give a child a terminal; says why not otherwise.
fn have_script() -> bool {
    let ok = Process::new("script").arg("--version").output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(std::env::var("CI").map_or(true, |v| v != "true"), "util-linux `script` is missing and CI=true");
        eprintln!("skipped: util-linux `script` is not installed (it gives the child a terminal)");
    }
    ok
}

/// Everything a child running `args` for agent `which` writes on its terminal (stdout and
/// stderr both), and its exit status.
fn on_terminal(which: &str, args: &[&str]) -> (String, std::process::ExitStatus) {
    let exe = std::env::current_exe().unwrap();
    let command = format!("'{}' child_process --exact --nocapture --quiet --color never", exe.display());
    let out = Process::new("script")
        .args(["-qefc", &command, "/dev/null"])
        .env("AGENT_CLI_CHILD", args.join("\u{1f}"))
        .env("AGENT_CLI_AGENT", which)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (String::from_utf8_lossy(&out.stdout).into_owned(), out.status)
}

/// Whether `text` shows a progress bar: `N/M states`.
fn has_bar(text: &str) -> bool {
    text.match_indices(" states").any(|(i, _)| {
        let before = text[..i].trim_end_matches(|c: char| c.is_ascii_digit());
        before.ends_with('/') && text[..i].ends_with(|c: char| c.is_ascii_digit())
    })
}

/// Commands that run no workflow draw no progress bar, not even an empty `0/0`; a run on
/// the same terminal draws one (so the check would see a bar).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_that_run_nothing_draw_no_progress_bar() {
    if !have_script() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("steps.db").to_str().unwrap().to_owned();
    let (result, _) = cli_run(&path, &["run"], two_steps).await;
    result.unwrap();
    let run_id = SqliteStore::open(&path).unwrap().list_runs(&RunQuery::default()).await.unwrap()[0].run_id.clone();
    for args in
        [vec!["list"], vec!["show", &run_id], vec!["graph"], vec!["graph", &run_id], vec!["answer", &run_id, "x", "y"]]
    {
        let mut argv = vec!["--store", path.as_str()];
        argv.extend(args.iter().copied());
        let (text, _) = on_terminal("steps", &argv);
        assert!(!has_bar(&text) && !text.contains("0/0"), "{args:?} drew a bar:\n{text:?}");
        assert!(!text.contains('\u{1b}'), "{args:?} wrote escape sequences:\n{text:?}");
    }
    let (text, status) = on_terminal("slow", &["--store", &path, "run"]);
    assert!(status.success(), "{text}");
    assert!(has_bar(&text), "a run on a terminal draws its bar:\n{text:?}");
    assert!(!text.contains("0/0 states"), "its first frame already knows the states:\n{text:?}");
    assert!(text.contains("completed: 2 state runs"), "{text:?}");
}

/// Control characters in state names, prompts, answers, errors and arguments are printed
/// as escapes (`\x1b`, `\r`), by every command and on stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_are_printed_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("evil.db").to_str().unwrap().to_owned();
    let shown_name = "evil\\x1b[31m\\rname";

    // In process: the failed run, `list`, `show`.
    let (result, out) = cli_run(&path, &["run"], || child_agent("evil")).await;
    assert!(result.is_err());
    assert!(out.contains(shown_name), "{out:?}");
    let (result, out) = cli_run(&path, &["list"], || child_agent("evil")).await;
    result.unwrap();
    let run_id = out.lines().nth(1).unwrap().split_whitespace().next().unwrap().to_owned();
    let (result, out) = cli_run(&path, &["show", &run_id], || child_agent("evil")).await;
    result.unwrap();
    assert!(out.lines().any(|l| l.starts_with(shown_name) && l.contains("Failed")), "{out:?}");
    assert!(!out.contains(['\u{1b}', '\r']), "{out:?}");

    // A stored prompt and answer.
    let asking = move || {
        let mut agent = Agent::new("evil").input_from_terminal(false);
        agent.add_state("ask", |ctx: Context| async move {
            ctx.human_in_the_loop(HumanInput::new("\u{1b}[1mApprove?\r")).await?;
            Ok::<_, BoxError>(StateResult::End)
        });
        agent
    };
    let arg = path.clone();
    let first = tokio::spawn(async move { cli_run(&arg, &["run"], asking).await });
    let store = SqliteStore::open(&path).unwrap();
    let asked = wait_for_pending(&store, "evil").await;
    first.abort();
    let _ = first.await;
    let (result, out) = cli_run(&path, &["answer", &asked, "input-1", "yes\u{1b}[2J"], asking).await;
    result.unwrap();
    assert!(out.contains("\"yes\\x1b[2J\""), "{out:?}");
    let (result, out) = cli_run(&path, &["show", &asked], asking).await;
    result.unwrap();
    assert!(out.contains("\\x1b[1mApprove?\\r") && out.contains("answered   \"yes\\x1b[2J\""), "{out:?}");
    assert!(!out.contains(['\u{1b}', '\r']), "{out:?}");

    // A process: the failure on stderr, and an argument quoted back in an error.
    let out = child("evil", &["--store", &path, "run"]).output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("error: ") && stderr.contains("boom\\x1b[2J\\rgone"), "{stderr:?}");
    assert!(!stderr.contains(['\u{1b}', '\r']), "{stderr:?}");
    let out = child("evil", &["--store", &path, "show", "\u{1b}[31mnope\r"]).output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("`\\x1b[31mnope\\r`"), "{stderr:?}");
    assert!(!stderr.contains(['\u{1b}', '\r']), "{stderr:?}");
    // (clap drops escape sequences from its messages itself; the carriage return is ours.)
    let out = child("evil", &["--store", &path, "list", "extra\u{1b}[31m\rX"]).output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("extra") && stderr.contains("\\rX'"), "{stderr:?}");
    assert!(!stderr.contains(['\u{1b}', '\r']), "{stderr:?}");
}

/// Ctrl-C once pauses the run: the process says so (no `error:`), exits 130, and the run
/// is recorded `Paused`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_is_reported_as_a_pause_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slow.db").to_str().unwrap().to_owned();
    let mut running =
        child("slow", &["--store", &path, "run"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // Wait for the run to be announced (the signal handler is installed by then).
    let mut stdout = std::io::BufReader::new(running.stdout.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "the child ended early:\n{seen}");
        seen.push_str(&line);
        if line.starts_with("run ") && line.contains(" of slow") {
            break;
        }
    }
    let sent = Process::new("kill").args(["-INT", &running.id().to_string()]).status().unwrap();
    assert!(sent.success());
    let out = running.wait_with_output().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    seen.push_str(&rest);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(130), "{seen}\n{stderr}");
    assert!(!stderr.contains("error"), "{stderr:?}");
    assert!(stderr.contains("is paused: resume it with `resume "), "{stderr:?}");
    assert!(seen.contains("interrupted: pausing run") && seen.contains("paused after"), "{seen}");
    let runs = SqliteStore::open(&path).unwrap().list_runs(&RunQuery::default()).await.unwrap();
    assert_eq!(runs[0].status, AgentStatus::Paused);
}

/// `graph RUN` colours the graph by the run's stored snapshot: statuses and retries.
#[tokio::test]
async fn graph_of_a_run_is_coloured_by_its_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flaky.db").to_str().unwrap().to_owned();
    let flaky = || {
        let mut agent = Agent::new("flaky");
        agent
            .add_state("shaky", |ctx: Context| async move {
                ctx.update_state_or_default("tries", |n: &mut u32| *n += 1).unwrap();
                if ctx.get_state_or("tries", 0u32) < 2 {
                    return Err::<StateResult, BoxError>("not yet".into());
                }
                Ok(StateResult::next("done"))
            })
            .retry_policy(RetryPolicy::new().max_retries(3).initial_delay(Duration::from_millis(1)))
            .targets(["done"]);
        agent.add_state("done", |_ctx: Context| async { StateResult::End }).targets(Vec::<String>::new());
        agent
    };
    let (result, out) = cli_run(&path, &["run"], flaky).await;
    result.unwrap_or_else(|e| panic!("{e}\n{out}"));
    let run_id = SqliteStore::open(&path).unwrap().list_runs(&RunQuery::default()).await.unwrap()[0].run_id.clone();

    let (result, plain) = cli_run(&path, &["graph"], flaky).await;
    result.unwrap();
    assert!(!plain.contains("class s0"), "{plain}");
    let (result, text) = cli_run(&path, &["graph", &run_id[..8]], flaky).await;
    result.unwrap();
    assert!(text.starts_with(&format!("%% run {run_id} (Completed), as recorded at ")), "{text}");
    assert!(text.contains("    s0(\"shaky<br>retried once\")\n"), "{text}");
    assert!(text.contains("    class s0 completed\n    class s0 retried\n    class s1 completed\n"), "{text}");
    assert!(text.contains("    s1 --> stop\n"), "{text}");
    let (result, text) = cli_run(&path, &["graph", &run_id, "--format", "dot"], flaky).await;
    result.unwrap();
    assert!(text.contains("s0 [label=\"shaky\\nretried once\", style=\"rounded,filled,dashed\""), "{text}");

    let (result, _) = cli_run(&path, &["graph", "no-such-run"], flaky).await;
    assert!(matches!(result, Err(CliError::RunNotFound { .. })), "{result:?}");
    // Without a run, the store is not even opened.
    let missing = dir.path().join("never.db");
    let (result, _) = cli_run(missing.to_str().unwrap(), &["graph"], flaky).await;
    result.unwrap();
    assert!(!missing.exists());
}

/// A prompt on the terminal answered elsewhere (here: through the store, as `answer` from
/// another terminal would) has its line ended, and the progress bar draws nothing while
/// the prompt is open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_answered_elsewhere_ends_its_line() {
    if !have_script() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("asker.db").to_str().unwrap().to_owned();
    let exe = std::env::current_exe().unwrap();
    let command = format!("'{}' child_process --exact --nocapture --quiet --color never", exe.display());
    let mut running = Process::new("script")
        .args(["-qefc", &command, "/dev/null"])
        .env("AGENT_CLI_CHILD", ["--store", &path, "run"].join("\u{1f}"))
        .env("AGENT_CLI_AGENT", "asker")
        .stdin(Stdio::piped()) // kept open: nobody types, and stdin never ends
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = running.stdout.take().unwrap();
    // Held until the child is gone (`wait` would close it: the end of stdin ends a prompt).
    let stdin = running.stdin.take();
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut text).unwrap();
        String::from_utf8_lossy(&text).into_owned()
    });
    for _ in 0..500 {
        if std::path::Path::new(&path).exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let store = SqliteStore::open(&path).unwrap();
    let run_id = wait_for_pending(&store, "asker").await;
    // Let the prompt show and the bar tick a few times before the answer comes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(store.answer_input(&run_id, "input-1", "yes", false, 0).await.unwrap());
    let status = tokio::task::spawn_blocking(move || running.wait()).await.unwrap().unwrap();
    let text = reader.join().unwrap();
    drop(stdin);
    assert!(status.success(), "{text:?}");
    let prompt = "[input-1] Approve? > ";
    let at = text.find(prompt).unwrap_or_else(|| panic!("no prompt:\n{text:?}"));
    let after = &text[at + prompt.len()..];
    assert!(
        after.starts_with("(no longer asked: answered elsewhere, or withdrawn)\r\n"),
        "the bar drew over the prompt, or its line was left open:\n{text:?}"
    );
    assert!(after.contains(&format!("run {run_id} completed")), "{text:?}");
}

/// Send `signal` (`-TERM`, ...) to process `pid`.
fn signal(pid: u32, signal: &str) {
    let ok = Process::new("kill").args([signal, &pid.to_string()]).status().unwrap().success();
    assert!(ok, "kill {signal} {pid}");
}

/// A `worker` process serves runs that `submit` queues from another process; `wait` follows
/// one to its end; SIGTERM drains the worker (exit 0): a run it was running is handed back
/// (listed `interrupted`, no owner) and `resume` finishes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_submit_and_wait_between_processes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fleet.db");
    let store_arg = path.to_str().unwrap();
    let start_worker = || {
        child("slow", &["--store", store_arg, "worker", "--concurrency", "2", "--lease-ttl", "5"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut worker = start_worker();
    let pid = worker.id();
    let _reap = scopeguard(pid);

    let (result, out) =
        cli_run(store_arg, &["submit", "--input", r#"{"order": 1234}"#, "--key", "o-1234"], || child_agent("slow"))
            .await;
    result.unwrap();
    let id = out.trim().to_owned();
    assert_eq!(id.len(), 36, "only the id is printed: {out:?}");
    let (result, again) = cli_run(store_arg, &["submit", "--key", "o-1234"], || child_agent("slow")).await;
    result.unwrap();
    assert_eq!(again.trim(), id, "the same key, the same run");
    let (result, bad) = cli_run(store_arg, &["submit", "--input", "[1]"], || child_agent("slow")).await;
    assert!(matches!(result, Err(CliError::Usage(_))), "{bad}");
    // Debounced submissions of one flow key within the window: one run, the same id printed.
    let debounced = ["submit", "--flow-key", "customer-7", "--debounce-ms", "60000"];
    let (result, one) = cli_run(store_arg, &debounced, || child_agent("slow")).await;
    result.unwrap();
    let (result, two) = cli_run(store_arg, &debounced, || child_agent("slow")).await;
    result.unwrap();
    assert_eq!((one.trim().len(), one.trim()), (36, two.trim()), "one debounced run");
    let (result, bad) = cli_run(store_arg, &["submit", "--debounce-ms", "10"], || child_agent("slow")).await;
    assert!(matches!(result, Err(CliError::Usage(_))), "debounce needs a key: {bad}");

    let wait_args = ["wait", &id[..8]];
    let waited = tokio::time::timeout(Duration::from_secs(60), cli_run(store_arg, &wait_args, || child_agent("slow")));
    let (result, out) = waited.await.expect("the worker runs it");
    result.unwrap();
    assert!(out.contains("completed"), "{out}");
    let store = SqliteStore::open(&path).unwrap();
    let done = agent_runtime::store::read_checkpoint(&store, &id).await.unwrap().unwrap();
    assert_eq!(done.read_context().unwrap().get_state::<u32>("order"), Some(1234), "its input reached it");

    // A second run; the worker is stopped while `work` runs: it finishes `work`, hands the
    // run back and exits 0.
    let (result, out) = cli_run(store_arg, &["submit"], || child_agent("slow")).await;
    result.unwrap();
    let second = out.trim().to_owned();
    for _ in 0..600 {
        if store.get_run(&second).await.unwrap().unwrap().status == AgentStatus::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    signal(pid, "-TERM");
    let status = worker.wait().unwrap();
    assert_eq!(status.code(), Some(0), "a drained worker exits 0");
    let mut printed = String::new();
    std::io::Read::read_to_string(worker.stdout.as_mut().unwrap(), &mut printed).unwrap();
    assert!(printed.contains("2 runs taken, 1 completed") && printed.contains("1 handed over"), "{printed}");
    let row = store.get_run(&second).await.unwrap().unwrap();
    assert_eq!((row.status, row.owner), (AgentStatus::Running, None));
    let (result, listed) = cli_run(store_arg, &["list"], || child_agent("slow")).await;
    result.unwrap();
    let line = listed.lines().find(|l| l.starts_with(&second)).unwrap();
    assert!(line.contains("interrupted"), "{line}");
    let (result, out) = cli_run(store_arg, &["resume", &second, "--wait"], || child_agent("slow")).await;
    result.unwrap();
    assert!(out.contains("completed"), "{out}");
}

/// Kills process `pid` when dropped (a test that fails leaves no worker behind).
fn scopeguard(pid: u32) -> impl Drop {
    struct Reap(u32);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = Process::new("kill").args(["-KILL", &self.0.to_string()]).status();
        }
    }
    Reap(pid)
}

/// `resume RUN` of a run another worker holds fails at once naming the owner; with `--wait`
/// it waits for that worker's lease to end, then takes the run and finishes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_wait_waits_for_another_owners_lease_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("held.db");
    let store_arg = path.to_str().unwrap();
    let (result, out) = cli_run(store_arg, &["submit"], two_steps).await;
    result.unwrap();
    let id = out.trim().to_owned();
    // Another worker claims it, for a lease that runs out soon, and never runs it.
    let store = SqliteStore::open(&path).unwrap();
    let other = agent_runtime::store::ClaimRequest::new(&id, "elsewhere-1-00000000", Duration::from_millis(600));
    assert!(matches!(store.claim_run(&other).await.unwrap(), agent_runtime::store::Claim::Taken(_)));

    let (result, _) = cli_run(store_arg, &["resume", &id], two_steps).await;
    match result {
        Err(CliError::Agent(AgentError::Owned { owner, .. })) => assert_eq!(owner, "elsewhere-1-00000000"),
        other => panic!("expected Owned, got {other:?}"),
    }
    let (result, out) = cli_run(store_arg, &["resume", &id, "--wait"], two_steps).await;
    result.unwrap();
    assert!(out.contains("is held by elsewhere-1-00000000") && out.contains("waiting"), "{out}");
    assert!(out.contains(&format!("run {id} completed")), "{out}");
    let done = agent_runtime::store::read_checkpoint(&store, &id).await.unwrap().unwrap();
    assert_eq!(done.read_context().unwrap().get_state::<i32>("n"), Some(2));
    assert_eq!(store.get_run(&id).await.unwrap().unwrap().epoch, 2, "the other worker's claim, then this one");
}

/// `serve` in a process of its own: it prints where it listens (here a port the system
/// picked), answers the console's API for the store's runs, and exits 0 on SIGTERM. Any
/// address beyond this machine without a token is refused before anything is bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_the_console_api_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("served.db");
    let store_arg = path.to_str().unwrap();
    let (ran, _) = cli_run(store_arg, &["run"], || child_agent("steps")).await;
    ran.unwrap();

    let (refused, _) = cli_run(store_arg, &["serve", "--addr", "0.0.0.0:0"], || child_agent("steps")).await;
    match refused {
        Err(CliError::Usage(m)) => assert!(m.contains("token"), "{m}"),
        other => panic!("expected a refusal without a token, got {other:?}"),
    }

    let mut server = child("steps", &["--store", store_arg, "serve", "--addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = std::io::BufReader::new(server.stdout.take().unwrap()).lines();
    // The test harness prints its own lines first.
    let first = tokio::task::spawn_blocking(move || {
        lines.map_while(Result::ok).find(|l| l.starts_with("console on ")).unwrap_or_default()
    })
    .await
    .unwrap();
    let addr =
        first.strip_prefix("console on http://").and_then(|a| a.strip_suffix('/')).unwrap_or_else(|| panic!("{first}"));
    let body = tokio::task::spawn_blocking({
        let addr = addr.to_owned();
        move || {
            use std::io::{Read, Write};
            let mut socket = std::net::TcpStream::connect(&addr).unwrap();
            socket.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            write!(socket, "GET /api/v1/runs HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
            let mut text = String::new();
            socket.read_to_string(&mut text).unwrap();
            text
        }
    })
    .await
    .unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("\"standing\":\"Completed\""), "the run `run` made: {body}");
    signal(server.id(), "-TERM");
    let status = tokio::task::spawn_blocking(move || server.wait()).await.unwrap().unwrap();
    assert!(status.success(), "serve exits 0 on SIGTERM: {status:?}");
}

static BROKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// `fetch` → `parse`, which fails while `BROKEN`.
fn flaky() -> Agent {
    let mut agent = Agent::new("flaky").input_from_terminal(false);
    agent.add_state("fetch", |_ctx: Context| async { StateResult::next("parse") }).targets(["parse"]);
    agent.add_state("parse", |ctx: Context| async move {
        if BROKEN.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(std::io::Error::other("the parser is broken"));
        }
        ctx.set_state("parsed", true);
        Ok(StateResult::End)
    });
    agent
}

/// `retry` runs a failed run again from its failed state; `pause` and `retry` refuse runs
/// they cannot act on; `cancel --state` asks for one state of a run (refused for a finished
/// one); `cancel` cancels a queued run at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_pause_and_retry_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flaky.db");
    let store_arg = path.to_str().unwrap();
    let (ran, _) = cli_run(store_arg, &["run"], flaky).await;
    assert!(ran.is_err(), "parse fails");
    let store = SqliteStore::open(&path).unwrap();
    let runs = store.list_runs(&RunQuery::default()).await.unwrap();
    let id = runs[0].run_id.clone();
    assert_eq!(runs[0].status, AgentStatus::Failed);
    match cli_run(store_arg, &["pause", &id], flaky).await.0 {
        Err(CliError::Usage(m)) => assert!(m.contains("Failed"), "{m}"),
        other => panic!("a failed run cannot be paused: {other:?}"),
    }
    BROKEN.store(false, std::sync::atomic::Ordering::SeqCst);
    let (retried, out) = cli_run(store_arg, &["retry", &id[..8]], flaky).await;
    retried.unwrap();
    assert!(out.contains("completed"), "{out}");
    assert_eq!(store.get_run(&id).await.unwrap().unwrap().status, AgentStatus::Completed);
    match cli_run(store_arg, &["retry", &id], flaky).await.0 {
        Err(CliError::Usage(m)) => assert!(m.contains("did not fail"), "{m}"),
        other => panic!("a completed run is not retried: {other:?}"),
    }
    let (submitted, queued) = cli_run(store_arg, &["submit"], flaky).await;
    submitted.unwrap();
    let queued = queued.trim().to_owned();
    // One state of a run (`--state`): a finished run refuses; a queued one keeps the request
    // for its first owner, and is not cancelled itself.
    match cli_run(store_arg, &["cancel", &id, "--state", "parse"], flaky).await.0 {
        Err(CliError::Usage(m)) => assert!(m.contains("Completed"), "{m}"),
        other => panic!("a finished run's state is not cancelled: {other:?}"),
    }
    let (asked, out) = cli_run(store_arg, &["cancel", &queued[..8], "--state", "parse"], flaky).await;
    asked.unwrap();
    assert!(out.contains("cancel its state parse") && out.contains("next owner"), "{out}");
    assert_eq!(store.get_run(&queued).await.unwrap().unwrap().status, AgentStatus::Idle, "not the run");
    assert_eq!(store.take_state_cancels(&queued, 0).await.unwrap(), ["parse"], "kept for its first owner");
    let (cancelled, out) = cli_run(store_arg, &["cancel", &queued], flaky).await;
    cancelled.unwrap();
    assert!(out.contains("cancelled run"), "{out}");
    assert_eq!(store.get_run(&queued).await.unwrap().unwrap().status, AgentStatus::Cancelled);
}

/// `follow RUN` prints the run's standing and each state's changes from the store, and ends
/// with the run: 0 for a completed run, the status for one that did not complete; a run
/// going on in another task is followed to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_prints_a_runs_changes_until_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("steps.db");
    let store_arg = path.to_str().unwrap();
    cli_run(store_arg, &["run"], two_steps).await.0.unwrap();
    let store = SqliteStore::open(&path).unwrap();
    let id = store.list_runs(&RunQuery::default()).await.unwrap()[0].run_id.clone();
    let (followed, out) = cli_run(store_arg, &["follow", &id[..8]], two_steps).await;
    followed.unwrap();
    assert!(out.contains(&format!("run {id} Completed")), "{out}");
    for state in ["one", "two"] {
        assert!(out.contains(&format!("state {state} Completed (completed 1, failed 0)")), "{out}");
    }

    // A run still going: followed from Running to its end.
    let slow = || {
        let mut agent = Agent::new("steps");
        agent.add_state("one", |ctx: Context| async move {
            tokio::time::sleep(Duration::from_millis(600)).await;
            ctx.set_state("n", 1);
            StateResult::next("two")
        });
        agent.add_state("two", |_ctx: Context| async { StateResult::End });
        agent
    };
    let running = tokio::spawn({
        let store_arg = store_arg.to_owned();
        async move { cli_run(&store_arg, &["run"], slow).await.0 }
    });
    let newest = loop {
        let runs = store.list_runs(&RunQuery::default()).await.unwrap();
        if let Some(r) = runs.into_iter().find(|r| r.run_id != id && r.status == AgentStatus::Running) {
            break r.run_id;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let (followed, out) = cli_run(store_arg, &["follow", &newest], slow).await;
    followed.unwrap();
    running.await.unwrap().unwrap();
    let running_at = out.find(&format!("run {newest} Running")).unwrap_or_else(|| panic!("{out}"));
    let done_at = out.find(&format!("run {newest} Completed")).unwrap_or_else(|| panic!("{out}"));
    assert!(running_at < done_at, "{out}");
    assert!(out.contains("state one Completed"), "{out}");
}
