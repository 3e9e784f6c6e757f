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

use agent_core::{AgentError, Context, StateResult, StateStatus};
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

/// A state that blocks its thread past the deadline, on a runtime with one thread: nothing
/// can end the run while it blocks, but once it returns the run is `TimedOut`, never
/// `Completed`.
#[test]
fn a_run_whose_last_state_blocked_past_the_deadline_ends_timed_out_not_completed() {
    let mut agent = Agent::new("blocked_one_thread");
    agent.add_state("block", |ctx: Context| {
        std::thread::sleep(ms(300));
        ctx.set_state("blocked", true);
        async { StateResult::End }
    });
    let a = agent.clone();
    let err = bounded(false, async move { a.run_with(RunOptions::new().timeout(ms(100))).await }).unwrap_err();
    let AgentError::TimedOut { context, .. } = &err else { panic!("expected TimedOut, got {err}") };
    assert_eq!(context.get_state::<bool>("blocked"), Some(true));
    assert_eq!(agent.status(), AgentStatus::TimedOut);
}

/// A state that blocks its thread, on a multi-thread runtime: the run ends on time, the
/// state is reported as overrunning, and it still blocks when the run has returned.
#[test]
fn a_state_blocking_its_thread_is_reported_overrunning_and_the_run_ends_on_time() {
    let (release, blocked) = std::sync::mpsc::channel::<()>();
    let blocked = Arc::new(std::sync::Mutex::new(blocked));
    let finished = Arc::new(AtomicU64::new(0));
    let mut agent = Agent::new("blocked_worker");
    agent.add_state("start", |_ctx: Context| async { StateResult::parallel(["block", "quick"]) });
    let (b, f) = (blocked.clone(), finished.clone());
    agent.add_state("block", move |_ctx: Context| {
        let (b, f) = (b.clone(), f.clone());
        async move {
            // Blocks its worker thread until the test lets it go.
            let _ = b.lock().unwrap().recv();
            f.fetch_add(1, SeqCst);
            StateResult::End
        }
    });
    agent.add_state("quick", |_ctx: Context| async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        StateResult::End
    });
    let a = agent.clone();
    let options = RunOptions::new().timeout(ms(200)).cleanup_timeout(ms(50));
    let err = bounded(true, async move { a.run_with(options).await }).unwrap_err();
    let AgentError::TimedOut { overran, .. } = &err else { panic!("expected TimedOut, got {err}") };
    assert_eq!(overran, &["block"], "{err}");
    assert_eq!(finished.load(SeqCst), 0, "the run returned while `block` still blocked");
    assert_eq!(agent.status(), AgentStatus::TimedOut);
    release.send(()).unwrap();
}

/// A state cut off at the run's deadline is not left reading `Running`: the run is over and
/// nothing of it runs.
#[tokio::test(start_paused = true)]
async fn a_state_cut_off_at_the_deadline_reads_cancelled() {
    let mut agent = Agent::new("cut-off");
    agent.add_state("wait", |_ctx: Context| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        StateResult::End
    });
    let err = agent.run_with(RunOptions::new().timeout(Duration::from_secs(5))).await.unwrap_err();
    assert!(matches!(err, AgentError::TimedOut { .. }), "{err:?}");
    assert_eq!(agent.status(), AgentStatus::TimedOut);
    assert_eq!(agent.state_status("wait"), Some(StateStatus::Cancelled));
    assert_eq!(agent.metrics().running, 0);
}
