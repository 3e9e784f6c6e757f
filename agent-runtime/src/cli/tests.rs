//! Interrupts (Ctrl-C) as the command line handles them, driven through the channel
//! `main` feeds from the signal: a first interrupt pauses the run and records it `Paused`
//! (`CliError::Paused`); one while a state waits for a person stops at once, the run left
//! `Running` (`CliError::Interrupted`); both resume.

use std::time::Duration;

use agent_core::{BoxError, Context, HumanInput, StateResult, StateStatus};
use tokio::sync::mpsc;

use super::progress::Progress;
use super::run::{start, Start, Watch};
use super::store::Store;
use super::CliError;
use crate::store::{CheckpointStore, RunQuery, SqliteStore};
use crate::{Agent, AgentStatus};

fn slow() -> Agent {
    let mut agent = Agent::new("slow").input_from_terminal(false);
    agent.add_state("work", |_ctx: Context| async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        StateResult::next("after")
    });
    agent.add_state("after", |ctx: Context| async move {
        ctx.set_state("done", true);
        StateResult::End
    });
    agent.add_state("ask", |ctx: Context| async move {
        let answer = ctx.human_in_the_loop(HumanInput::new("go on?")).await?;
        ctx.set_state("answer", answer);
        Ok::<_, BoxError>(StateResult::End)
    });
    agent
}

async fn wait_until(mut ready: impl FnMut() -> bool) {
    for _ in 0..500 {
        if ready() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("condition never held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_interrupt_pauses_the_run_which_resumes_later() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(dir.path().join("slow.db")).unwrap();
    let store = Store::Sqlite(sqlite.clone());
    let agent = slow();
    let (tx, rx) = mpsc::unbounded_channel();
    let watch = Watch { progress: Progress::lines(), interrupts: Some(rx) };
    let watched = agent.clone();
    let interrupter = tokio::spawn(async move {
        wait_until(|| watched.state_status("work") == Some(StateStatus::Running)).await;
        tx.send(()).unwrap();
        tx // kept open until the run ends
    });
    let mut out = Vec::new();
    let result = start(agent, &store, Start::New, watch, &mut out).await;
    let text = String::from_utf8(out).unwrap();
    assert!(matches!(result, Err(CliError::Paused { .. })), "{result:?}\n{text}");
    assert!(text.contains("interrupted: pausing run"), "{text}");
    drop(interrupter.await.unwrap());
    let runs = sqlite.list_runs(&RunQuery::default()).await.unwrap();
    assert_eq!(runs[0].status, AgentStatus::Paused);

    // `work` finished before the pause took hold; `after` runs when resumed.
    let watch = Watch { progress: Progress::lines(), interrupts: None };
    let mut out = Vec::new();
    start(slow(), &store, Start::Auto, watch, &mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("resuming run"), "{text}");
    assert!(!text.contains("  work "), "work ran again:\n{text}");
    let runs = sqlite.list_runs(&RunQuery::default()).await.unwrap();
    assert_eq!(runs[0].status, AgentStatus::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupt_while_a_person_is_asked_stops_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(dir.path().join("ask.db")).unwrap();
    let store = Store::Sqlite(sqlite.clone());
    let mut agent = slow();
    agent.set_start("ask");
    let (tx, rx) = mpsc::unbounded_channel();
    let watch = Watch { progress: Progress::lines(), interrupts: Some(rx) };
    let watched = agent.clone();
    let interrupter = tokio::spawn(async move {
        wait_until(|| !watched.pending_inputs().is_empty()).await;
        tx.send(()).unwrap();
        tx
    });
    let mut out = Vec::new();
    // No answer ever comes: only the interrupt ends this command.
    let result = tokio::time::timeout(Duration::from_secs(20), start(agent, &store, Start::New, watch, &mut out))
        .await
        .expect("the interrupt stopped the command");
    assert!(matches!(result, Err(CliError::Interrupted { .. })), "{result:?}");
    drop(interrupter.await.unwrap());
    let runs = sqlite.list_runs(&RunQuery::default()).await.unwrap();
    assert_eq!(runs[0].status, AgentStatus::Running); // kept as a crash would keep it
    let pending = sqlite.inputs(Some(&runs[0].run_id), true).await.unwrap();
    assert_eq!(pending.len(), 1);
    sqlite.answer_input(&runs[0].run_id, "input-1", "yes", false, 0).await.unwrap();

    let mut again = slow();
    again.set_start("ask");
    let watch = Watch { progress: Progress::lines(), interrupts: None };
    let mut out = Vec::new();
    start(again, &store, Start::Resume { run: runs[0].run_id.clone(), wait: false }, watch, &mut out).await.unwrap();
    let runs = sqlite.list_runs(&RunQuery::default()).await.unwrap();
    assert_eq!(runs[0].status, AgentStatus::Completed);
}
