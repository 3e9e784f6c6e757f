//! A run's deadline binds, whatever its states do: states that never wait, a loop of them
//! with no `max_steps`, a state that blocks its thread, and a durable run recovered after a
//! crash (translated from DBOS's `test_workflow_timeout`: the recovered workflow is still
//! cancelled at its original deadline).
//!
//! States that never wait keep a paused clock from advancing, so these tests run on the real
//! clock: they assert what the run returns, never how long it took; each is bounded by a
//! watchdog so that a regression fails instead of hanging.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use agent_core::{AgentError, Context, StateResult};
use agent_runtime::{Agent, AgentStatus, RunOptions};

mod common;
use common::ms;

/// Run `f` on a runtime of its own in a thread, failing the test if it takes more than a
/// minute (a deadline that does not bind would otherwise hang the suite).
fn bounded<T: Send + 'static>(multi_thread: bool, f: impl std::future::Future<Output = T> + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = if multi_thread {
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()
        } else {
            tokio::runtime::Builder::new_current_thread().enable_all().build()
        }
        .unwrap();
        let _ = tx.send(rt.block_on(f));
        // Threads a state blocks are left to end by themselves.
        rt.shutdown_background();
    });
    rx.recv_timeout(Duration::from_secs(60)).expect("the run did not return within a minute: its deadline did not bind")
}

/// A loop of states that never wait: `a -> a`, forever, counting its steps.
fn instant_loop(steps: &Arc<AtomicU64>) -> Agent {
    let mut agent = Agent::new("instant_loop");
    let s = steps.clone();
    agent.add_state("a", move |_ctx: Context| {
        s.fetch_add(1, SeqCst);
        async { StateResult::next("a") }
    });
    agent
}

#[test]
fn an_instant_loop_without_max_steps_ends_timed_out_on_a_current_thread_runtime() {
    let steps = Arc::new(AtomicU64::new(0));
    let agent = instant_loop(&steps);
    let a = agent.clone();
    let result = bounded(false, async move { a.run_with(RunOptions::new().timeout(ms(100))).await });
    let err = result.unwrap_err();
    assert!(matches!(err, AgentError::TimedOut { .. }), "expected TimedOut, got {err}");
    assert_eq!(agent.status(), AgentStatus::TimedOut);
    assert!(steps.load(SeqCst) > 1_000, "the loop ran until the deadline");
}

#[test]
fn an_instant_loop_ends_timed_out_on_a_multi_thread_runtime() {
    let steps = Arc::new(AtomicU64::new(0));
    let agent = instant_loop(&steps);
    let a = agent.clone();
    let err = bounded(true, async move { a.run_with(RunOptions::new().timeout(ms(100))).await }).unwrap_err();
    assert!(matches!(err, AgentError::TimedOut { .. }), "expected TimedOut, got {err}");
}

#[test]
fn an_outer_tokio_timeout_around_an_instant_loop_fires() {
    let steps = Arc::new(AtomicU64::new(0));
    let agent = instant_loop(&steps);
    let a = agent.clone();
    let outer = bounded(false, async move { tokio::time::timeout(ms(100), a.run()).await.is_err() });
    assert!(outer, "the outer timeout fired");
    assert_eq!(agent.status(), AgentStatus::Cancelled, "dropping the run's future cancels it");
}

#[test]
fn an_instant_loop_is_cancelled_from_another_task_on_one_thread() {
    let steps = Arc::new(AtomicU64::new(0));
    let agent = instant_loop(&steps);
    let a = agent.clone();
    let status = bounded(false, async move {
        let run = tokio::spawn({
            let a = a.clone();
            async move { a.run().await }
        });
        tokio::time::sleep(ms(50)).await;
        a.cancel_all().await;
        let _ = run.await.unwrap();
        a.status()
    });
    assert_eq!(status, AgentStatus::Cancelled);
}
