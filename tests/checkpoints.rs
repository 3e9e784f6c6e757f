//! API.md "Checkpoints and durable runs", through the `agent` facade: the snippet as
//! written (a checkpoint to a file and back, into a fresh agent), with typed values.

use std::time::Duration;

use agent::prelude::*;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TypedContextData)]
struct Draft {
    title: String,
    words: u32,
}

#[workflow]
mod hello_workflow {
    use super::Draft;
    use agent::prelude::*;
    use std::time::Duration;

    #[state]
    async fn write(ctx: &Context) -> StateResult {
        ctx.set_typed("draft", Draft { title: "Hello".into(), words: 2 });
        "review".into()
    }

    #[state]
    async fn review(ctx: &Context) -> StateResult {
        tokio::time::sleep(Duration::from_secs(60)).await;
        ctx.update_typed("draft", |d: &mut Draft| d.words += 1).unwrap();
        let n: u32 = ctx.get_state_or("reviews", 0);
        ctx.set_state("reviews", n + 1);
        "publish".into()
    }

    #[state]
    async fn publish(ctx: &Context) -> StateResult {
        let n: u32 = ctx.get_state_or("writes", 0);
        ctx.set_state("writes", n + 1);
        StateResult::End
    }
}

#[tokio::test(start_paused = true)]
async fn the_api_snippet_restores_a_run_from_a_file_with_its_typed_values() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("agent-checkpoint-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("workflow_state.json");

    let agent = hello_workflow::agent();
    let running = tokio::spawn({
        let agent = agent.clone();
        async move { agent.run().await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    // --- as API.md writes it ---
    let checkpoint = agent.create_checkpoint(); // at any time, also mid-run
    std::fs::write(&path, checkpoint.to_json()?)?;
    let checkpoint = Checkpoint::from_json(&std::fs::read_to_string(&path)?)?;
    let restored = hello_workflow::agent();
    restored.restore_from_checkpoint(checkpoint)?;
    let result = restored.run().await?; // continues; completed states do not re-run
                                        // ---
    running.await??;
    std::fs::remove_dir_all(&dir)?;

    assert_eq!(result.context().get_typed::<Draft>("draft"), Some(Draft { title: "Hello".into(), words: 3 }));
    assert_eq!(result.context().get_state::<u32>("reviews"), Some(1));
    assert_eq!(result.context().get_state::<u32>("writes"), Some(1));
    assert_eq!(result.completed_states(), ["write", "review", "publish"]);
    Ok(())
}

#[test]
fn a_corrupt_or_foreign_checkpoint_is_an_error() {
    assert!(matches!(Checkpoint::from_json("{\"timestamp\": 3"), Err(CheckpointError::Json(_))));
    assert!(matches!(Checkpoint::from_json("{\"agent_name\": \"x\"}"), Err(CheckpointError::Foreign(_))));
}

#[tokio::test(start_paused = true)]
async fn a_version_1_checkpoint_loads_and_goes_on() {
    // Written mid-run (`write` done, `review` running) by the build that wrote version 1.
    let checkpoint = Checkpoint::from_json(include_str!("fixtures/checkpoint_v1.json")).unwrap();
    assert_eq!(checkpoint.schema_version, agent::CHECKPOINT_VERSION);
    assert!(checkpoint.pending_inputs.is_empty(), "version 1 had no requests for input");
    assert_eq!(checkpoint.completed_states, ["write"]);
    let agent = hello_workflow::agent();
    agent.restore_from_checkpoint(checkpoint).unwrap();
    let result = agent.run().await.unwrap();
    assert_eq!(result.completed_states(), ["write", "review", "publish"]);
    assert_eq!(result.context().get_typed::<Draft>("draft"), Some(Draft { title: "Hello".into(), words: 3 }));
}

#[tokio::test(start_paused = true)]
async fn the_api_snippet_makes_a_run_durable() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let runs_db = dir.path().join("runs.db");
    // --- as API.md writes it (with the file in a temporary directory) ---
    let agent = hello_workflow::agent()
        .with_store(SqliteStore::open(&runs_db)?) // or PostgresStore::connect(url).await?
        .checkpoint_interval(Duration::from_secs(300));
    // ---
    let result = agent.run().await?;
    let store = SqliteStore::open(&runs_db)?;
    let run = agent::CheckpointStore::get_run(&store, result.run_id()).await?.expect("the run is recorded");
    assert_eq!(run.status, AgentStatus::Completed);
    // Recovering a finished run runs nothing again.
    let again = agent.recover(result.run_id()).await?;
    assert_eq!(again.context().get_state::<u32>("writes"), Some(1));
    Ok(())
}

/// `write` stores a typed `Draft`; `count` adds its words to `total`.
fn drafting() -> Agent {
    let mut agent = Agent::new("drafting");
    agent.add_state("write", |ctx: Context| async move {
        ctx.set_typed("draft", Draft { title: "Hello".into(), words: 2 });
        StateResult::next("count")
    });
    agent.add_state("count", |ctx: Context| async move {
        let draft: Draft = ctx.get_typed("draft").unwrap();
        ctx.set_state("total", draft.words * 10);
        StateResult::End
    });
    agent
}

/// The `seq` of the last commit `history` lists with `next` as what runs next.
fn out_of_history(history: &str, next: &str) -> String {
    let line = history.lines().rev().find(|l| l.trim_end().ends_with(next)).expect("a commit before it");
    line.split_whitespace().next().unwrap().to_owned()
}

async fn cli(store: &str, args: &[&str]) -> (Result<(), agent::cli::CliError>, String) {
    let mut argv = vec!["drafting", "--store", store];
    argv.extend_from_slice(args);
    let parsed = agent::cli::parse(argv).expect("arguments parse");
    let mut out = Vec::new();
    let result = agent::cli::execute(&parsed, drafting, &mut out).await;
    (result, String::from_utf8(out).unwrap())
}

/// `history RUN` lists the commits; `fork RUN --before STATE --set KEY=JSON` makes a new
/// run from one, a typed key taking only a value of its type; `resume` goes on with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_fork_on_the_command_line_keep_typed_keys_typed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drafting.db");
    let store = path.to_str().unwrap();
    cli(store, &["run"]).await.0.unwrap();
    let runs = SqliteStore::open(&path).unwrap().list_runs(&agent::store::RunQuery::default()).await.unwrap();
    let id = runs[0].run_id.clone();

    let (listed, out) = cli(store, &["history", &id[..8]]).await;
    listed.unwrap();
    assert!(out.lines().next().unwrap().contains("seq"), "{out}");
    assert!(out.lines().any(|l| l.trim_end().ends_with("count")), "a commit before count: {out}");
    assert!(out.contains("Completed"), "{out}");

    let wrong = cli(store, &["fork", &id, "--before", "count", "--set", r#"draft="a string""#]).await;
    let message = format!("{:?}", wrong.0.expect_err("a string is not a Draft"));
    assert!(message.contains("draft"), "{message}");
    let good = r#"draft={"title":"Longer","words":7}"#;
    let (forked, out) = cli(store, &["fork", &id, "--before", "count", "--set", good, "--set", "note=1"]).await;
    forked.unwrap();
    let fork = out.split_whitespace().nth(4).expect("the fork's id").to_owned();
    cli(store, &["resume", &fork]).await.0.unwrap();
    let sqlite = SqliteStore::open(&path).unwrap();
    let done = agent::store::read_checkpoint(&sqlite, &fork).await.unwrap().unwrap();
    let ctx = done.read_context().unwrap();
    assert_eq!(ctx.get_typed::<Draft>("draft"), Some(Draft { title: "Longer".into(), words: 7 }), "still a Draft");
    assert_eq!(ctx.get_state::<u32>("total"), Some(70));
    assert_eq!(ctx.get_state::<u32>("note"), Some(1));
    assert_eq!(done.completed_states, ["write", "count"], "write ran in the original only");
    let (shown, out) = cli(store, &["show", &fork]).await;
    shown.unwrap();
    assert!(out.contains(&format!("parent   {id} (forked at commit ")), "{out}");
    let (shown, out) = cli(store, &["show", &id]).await;
    shown.unwrap();
    assert!(out.contains(&format!("made     {fork} (fork)")), "{out}");
    // `fork --at N` (API.md's form), N read off `history`: the commit before `count` ran.
    let at = out_of_history(&cli(store, &["history", &id]).await.1, "count");
    let (forked, out) = cli(store, &["fork", &id, "--at", &at, "--set", "note=2"]).await;
    forked.unwrap();
    let by_seq = out.split_whitespace().nth(4).unwrap().to_owned();
    cli(store, &["resume", &by_seq]).await.0.unwrap();
    let again = agent::store::read_checkpoint(&sqlite, &by_seq).await.unwrap().unwrap().read_context().unwrap();
    assert_eq!((again.get_state::<u32>("total"), again.get_state::<u32>("note")), (Some(20), Some(2)));
    let original = agent::store::read_checkpoint(&sqlite, &id).await.unwrap().unwrap();
    assert_eq!(original.read_context().unwrap().get_state::<u32>("total"), Some(20), "untouched");
}
