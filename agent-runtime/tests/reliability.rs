//! Reliability end to end, through the public API: retries and their backoff, panics and
//! per-state timeouts as failed attempts, `on_error`, the run's deadline and cleanup window,
//! cancelling one state or the whole run, and requests that can never fit. Everything about
//! time runs on a paused (virtual) clock.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_core::{
    AgentError, Context, PanicError, ResourceError, ResourceRequirements, ResourceType, RetryPolicy, StateResult,
    TimeoutError,
};
use agent_runtime::{Agent, AgentResult, AgentStatus, ResourcePool, RunMetrics, RunOptions, StateMetrics, StateStatus};
use tokio::time::{sleep, Instant};

mod common;
use common::*;

// ----- helpers ------------------------------------------------------------------------------

/// A policy without jitter: `max_retries`, waits from `initial` doubling up to `max`.
fn policy(max_retries: u32, initial: Duration, max: Duration) -> RetryPolicy {
    RetryPolicy::new()
        .max_retries(max_retries)
        .initial_delay(initial)
        .max_delay(max)
        .exponential_base(2.0)
        .jitter(false)
}

fn cpu(n: f64) -> ResourceRequirements {
    ResourceRequirements::new().cpu(n)
}

fn cpu_usage(pool: &ResourcePool) -> f64 {
    pool.usage_stats()[ResourceType::Cpu].current_usage
}

/// Virtual times (since a run's `t0`) at which something happened.
#[derive(Clone, Default)]
struct Times(Arc<Mutex<Vec<Duration>>>);

impl Times {
    /// Record now; returns how many marks there are (so the 1-based number of this one).
    fn mark(&self, t0: Instant) -> usize {
        let mut v = self.0.lock().unwrap();
        v.push(t0.elapsed());
        v.len()
    }
    fn get(&self) -> Vec<Duration> {
        self.0.lock().unwrap().clone()
    }
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// Marks `Times` when dropped: observes that a state's future was dropped, and when.
struct OnDrop(Times, Instant);

impl Drop for OnDrop {
    fn drop(&mut self) {
        self.0.mark(self.1);
    }
}

fn gaps(starts: &[Duration]) -> Vec<Duration> {
    starts.windows(2).map(|w| w[1] - w[0]).collect()
}

/// A state that fans out to `names`.
fn fan_out(names: &'static [&'static str]) -> impl Fn(Context) -> StateFut + Send + Sync + 'static {
    move |_ctx| Box::pin(async move { StateResult::parallel(names.iter().copied()) })
}

/// A state that sleeps `d`, marking `dropped` if its future is dropped before the end.
fn sleeper(d: Duration, dropped: &Times, t0: Instant) -> impl Fn(Context) -> StateFut + Send + Sync + 'static {
    let dropped = dropped.clone();
    move |_ctx| {
        let guard = OnDrop(dropped.clone(), t0);
        Box::pin(async move {
            sleep(d).await;
            std::mem::forget(guard);
            StateResult::End
        })
    }
}

/// A state that marks each attempt's start in `starts` and fails with `attempt <n>`.
fn always_failing(starts: &Times, t0: Instant) -> impl Fn(Context) -> FallibleFut + Send + Sync + 'static {
    let starts = starts.clone();
    move |_ctx| {
        let n = starts.mark(t0);
        Box::pin(async move { Err(std::io::Error::other(format!("attempt {n}"))) })
    }
}

/// A state that fails its first `failures` attempts, then ends.
fn failing_first(
    failures: usize,
    attempts: &Times,
    t0: Instant,
) -> impl Fn(Context) -> FallibleFut + Send + Sync + 'static {
    let attempts = attempts.clone();
    move |_ctx| {
        let n = attempts.mark(t0);
        Box::pin(async move {
            if n <= failures {
                Err(std::io::Error::other(format!("attempt {n}")))
            } else {
                Ok(StateResult::End)
            }
        })
    }
}

fn state<'a>(m: &'a RunMetrics, name: &str) -> &'a StateMetrics {
    m.states.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no state {name} in {m:?}"))
}

/// The failing state, its attempts, the error and the context of a `StateFailed`.
fn state_failed(result: Result<AgentResult, AgentError>) -> (String, u32, agent_core::BoxError, Context) {
    match result {
        Err(AgentError::StateFailed { state, attempts, source, context, .. }) => (state, attempts, source, context),
        Err(other) => panic!("expected StateFailed, got {other}"),
        Ok(r) => panic!("expected the run to fail, it ended {:?}", r.status()),
    }
}

fn boom() -> StateResult {
    panic!("kaboom")
}

// ----- retries ------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn max_retries_three_makes_exactly_four_attempts_then_fails_with_the_last_error() {
    let t0 = Instant::now();
    let starts = Times::default();
    let mut agent = Agent::new("retries");
    agent.add_state("s", always_failing(&starts, t0)).retry_policy(policy(3, secs(1), secs(60)));

    let (state_name, attempts, source, _) = state_failed(agent.run().await);
    assert_eq!(state_name, "s");
    assert_eq!(attempts, 4);
    assert_eq!(starts.len(), 4, "max_retries = 3 is one attempt and three retries");
    assert_eq!(source.to_string(), "attempt 4", "the source is the last attempt's error");
    assert!(source.downcast_ref::<std::io::Error>().is_some());
    assert_eq!(starts.get(), [secs(0), secs(1), secs(3), secs(7)]);
    assert_eq!(agent.status(), AgentStatus::Failed);
    assert_eq!(agent.state_status("s"), Some(StateStatus::Failed));
    let m = agent.metrics();
    assert_eq!((state(&m, "s").retries, state(&m, "s").failed, state(&m, "s").completed), (3, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn backoff_without_jitter_doubles_up_to_max_delay_exactly() {
    let t0 = Instant::now();
    let starts = Times::default();
    let mut agent = Agent::new("backoff");
    agent.add_state("s", always_failing(&starts, t0)).retry_policy(policy(5, secs(1), secs(4)));

    let (_, attempts, _, _) = state_failed(agent.run().await);
    assert_eq!(attempts, 6);
    assert_eq!(gaps(&starts.get()), [secs(1), secs(2), secs(4), secs(4), secs(4)]);
    assert_eq!(t0.elapsed(), secs(15));
}

#[tokio::test(start_paused = true)]
async fn jittered_backoff_stays_in_the_upper_half_of_its_bound_and_never_above_max_delay() {
    let t0 = Instant::now();
    let starts = Times::default();
    let max = secs(4);
    let jittered = policy(20, secs(1), max).jitter(true);
    let mut agent = Agent::new("jitter");
    agent.add_state("s", always_failing(&starts, t0)).retry_policy(jittered);

    let (_, attempts, _, _) = state_failed(agent.run().await);
    assert_eq!(attempts, 21);
    let gaps = gaps(&starts.get());
    assert_eq!(gaps.len(), 20);
    for (i, gap) in gaps.iter().enumerate() {
        let bound = jittered.backoff(i as u32 + 1);
        let expected_bound = [secs(1), secs(2)].get(i).copied().unwrap_or(max);
        assert_eq!(bound, expected_bound);
        assert!(
            *gap >= bound / 2 && *gap <= bound,
            "retry {} waited {gap:?}, outside [{:?}, {bound:?}]",
            i + 1,
            bound / 2
        );
        assert!(*gap <= max, "retry {} waited {gap:?}, above max_delay", i + 1);
    }
    // Jitter spreads the waits: twenty draws all at the bound would mean it is ignored.
    let bounds: Vec<Duration> = (1..=20).map(|n| jittered.backoff(n)).collect();
    assert_ne!(gaps, bounds, "jitter on, yet every wait was exactly its bound");
}

#[tokio::test(start_paused = true)]
async fn a_state_that_succeeds_on_its_third_attempt_completes_with_two_retries() {
    let t0 = Instant::now();
    let attempts = Times::default();
    let mut agent = Agent::new("flaky");
    agent.add_state("s", failing_first(2, &attempts, t0)).retry_policy(policy(5, secs(1), secs(60)));

    let result = agent.run().await.expect("the third attempt succeeds");
    assert_eq!(result.status(), AgentStatus::Completed);
    assert_eq!(result.completed_states(), ["s"]);
    assert_eq!(attempts.get(), [secs(0), secs(1), secs(3)]);
    let m = result.metrics();
    let s = state(&m, "s");
    assert_eq!((s.retries, s.completed, s.failed), (2, 1, 0));
    assert_eq!(s.status, Some(StateStatus::Completed));
    assert_eq!((m.retries, m.completed, m.failed), (2, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_panicking_state_is_retried_then_fails_the_run_with_its_panic_message() {
    let t0 = Instant::now();
    let attempts = Times::default();
    let mut agent = Agent::new("panics");
    agent.add_state("start", fan_out(&["other", "p"]));
    agent.add_state("other", |ctx: Context| async move {
        sleep(secs(2)).await;
        ctx.set_state("other_done", true);
        StateResult::End
    });
    let a = attempts.clone();
    agent
        .add_state("p", move |_ctx: Context| {
            a.mark(t0);
            async move { boom() }
        })
        .retry_policy(policy(2, secs(1), secs(60)));

    let (state_name, n, source, context) = state_failed(agent.run().await);
    assert_eq!(state_name, "p");
    assert_eq!(n, 3);
    assert_eq!(attempts.get(), [secs(0), secs(1), secs(3)], "a panic is retried like an error");
    let panic = source.downcast_ref::<PanicError>().unwrap_or_else(|| panic!("not a PanicError: {source}"));
    assert_eq!(panic.message, "kaboom");
    assert_eq!(t0.elapsed(), secs(3));
    // The sibling branch kept running while `p` was being retried.
    assert_eq!(context.get_state::<bool>("other_done"), Some(true));
    let m = agent.metrics();
    assert_eq!(state(&m, "other").completed, 1);
    assert_eq!((state(&m, "p").retries, state(&m, "p").failed), (2, 1));
    assert_eq!(agent.state_status("p"), Some(StateStatus::Failed));
    assert_eq!(agent.status(), AgentStatus::Failed);
}

#[tokio::test(start_paused = true)]
async fn a_state_timeout_drops_the_attempt_and_counts_as_a_failed_attempt() {
    let t0 = Instant::now();
    let (starts, dropped) = (Times::default(), Times::default());
    let mut agent = Agent::new("timeouts");
    let (s, d) = (starts.clone(), dropped.clone());
    agent
        .add_state("slow", move |_ctx: Context| {
            s.mark(t0);
            let guard = OnDrop(d.clone(), t0);
            async move {
                sleep(secs(10)).await;
                drop(guard);
                StateResult::End
            }
        })
        .timeout(secs(1))
        .retry_policy(policy(2, secs(1), secs(60)));

    let (state_name, attempts, source, _) = state_failed(agent.run().await);
    assert_eq!((state_name.as_str(), attempts), ("slow", 3));
    // 3 attempts of 1 s each, with waits of 1 s and 2 s between them.
    assert_eq!(starts.get(), [secs(0), secs(2), secs(5)]);
    assert_eq!(dropped.get(), [secs(1), secs(3), secs(6)], "each timed-out attempt's future is dropped at its timeout");
    assert_eq!(t0.elapsed(), secs(6));
    let timeout = source.downcast_ref::<TimeoutError>().unwrap_or_else(|| panic!("not a TimeoutError: {source}"));
    assert_eq!(timeout, &TimeoutError { state: "slow".into(), after: secs(1) });
    assert_eq!(agent.state_status("slow"), Some(StateStatus::Timeout));
    let m = agent.metrics();
    assert_eq!((state(&m, "slow").retries, state(&m, "slow").failed), (2, 1));
}

#[tokio::test(start_paused = true)]
async fn on_error_handler_runs_after_retries_and_reads_the_failure() {
    let t0 = Instant::now();
    let attempts = Times::default();
    let mut agent = Agent::new("handled");
    agent.add_state("s", always_failing(&attempts, t0)).retry_policy(policy(2, secs(1), secs(60))).on_error("h");
    agent.add_state("h", |ctx: Context| async move {
        let e = ctx.last_error().expect("the handler sees the failure");
        ctx.set_state("failed_state", e.state.clone());
        ctx.set_state("attempts", e.attempts);
        ctx.set_state("message", e.error.to_string());
        ctx.set_state("is_io", e.error.downcast_ref::<std::io::Error>().is_some());
        StateResult::End
    });

    let result = agent.run().await.expect("the handler completes the run");
    assert_eq!(result.status(), AgentStatus::Completed);
    assert_eq!(attempts.len(), 3);
    let ctx = result.context();
    assert_eq!(ctx.get_state::<String>("failed_state").as_deref(), Some("s"));
    assert_eq!(ctx.get_state::<u32>("attempts"), Some(3));
    assert_eq!(ctx.get_state::<String>("message").as_deref(), Some("attempt 3"));
    assert_eq!(ctx.get_state::<bool>("is_io"), Some(true));
    assert_eq!(result.completed_states(), ["h"]);
    assert_eq!(agent.state_status("s"), Some(StateStatus::Failed));
    assert_eq!(agent.state_status("h"), Some(StateStatus::Completed));
    let m = result.metrics();
    assert_eq!((state(&m, "s").failed, state(&m, "s").retries, state(&m, "h").completed), (1, 2, 1));
    assert_eq!(t0.elapsed(), secs(3));
}

#[tokio::test(start_paused = true)]
async fn state_failed_carries_the_context_written_before_the_failure() {
    let mut agent = Agent::new("keeps");
    agent.add_state("w", |ctx: Context| async move {
        ctx.set_state("written", 42u32);
        StateResult::next("f")
    });
    agent.add_state("f", |ctx: Context| async move {
        ctx.set_state("also", "in the failing state");
        Err::<StateResult, agent_core::BoxError>("boom".into())
    });

    let (state_name, attempts, source, context) = state_failed(agent.run().await);
    assert_eq!((state_name.as_str(), attempts), ("f", 1));
    assert_eq!(source.to_string(), "boom");
    assert_eq!(context.get_state::<u32>("written"), Some(42));
    assert_eq!(context.get_state::<String>("also").as_deref(), Some("in the failing state"));
}

#[tokio::test(start_paused = true)]
async fn a_state_waiting_to_retry_holds_no_resources_and_is_retrying() {
    let t0 = Instant::now();
    let pool = ResourcePool::builder().total_cpu(1.0).build();
    let (flaky, other) = (Times::default(), Times::default());
    let mut agent = Agent::new("retry_releases").with_resource_pool(pool.clone());
    agent.add_state("start", fan_out(&["flaky", "other"]));
    // Holds the CPU for 1 s, then fails; its retry comes 10 s later.
    let f = flaky.clone();
    agent
        .add_state("flaky", move |_ctx: Context| {
            let n = f.mark(t0);
            async move {
                if n == 1 {
                    sleep(secs(1)).await;
                    return Err(std::io::Error::other("first attempt fails"));
                }
                Ok(StateResult::End)
            }
        })
        .resources(cpu(1.0))
        .retry_policy(policy(1, secs(10), secs(60)));
    let o = other.clone();
    agent
        .add_state("other", move |_ctx: Context| {
            o.mark(t0);
            async {
                sleep(secs(2)).await;
                StateResult::End
            }
        })
        .resources(cpu(1.0));

    let a2 = agent.clone();
    let h = tokio::spawn(async move { a2.run().await });
    sleep(ms(500)).await;
    assert_eq!(agent.state_status("flaky"), Some(StateStatus::Running));
    let waiting: Vec<String> = pool.waiting_states().into_iter().map(|w| w.state).collect();
    assert_eq!(waiting, ["other"], "`other` waits while the first attempt holds the CPU");
    sleep(secs(1)).await; // t = 1.5 s: `flaky` waits to retry, `other` runs
    assert_eq!(agent.state_status("flaky"), Some(StateStatus::Retrying));
    assert_eq!(agent.state_status("other"), Some(StateStatus::Running));
    assert_eq!(cpu_usage(&pool), 1.0, "only `other` holds the CPU");
    assert_eq!(state(&agent.metrics(), "flaky").retries, 1);
    sleep(secs(2)).await; // t = 3.5 s: `other` is done, `flaky` still waits
    assert_eq!(agent.state_status("flaky"), Some(StateStatus::Retrying));
    assert_eq!(agent.state_status("other"), Some(StateStatus::Completed));
    assert_eq!(cpu_usage(&pool), 0.0, "nothing is held while waiting to retry");

    let result = h.await.unwrap().expect("the retry succeeds");
    assert_eq!(result.status(), AgentStatus::Completed);
    assert_eq!(other.get(), [secs(1)], "`other` got the CPU as soon as the failed attempt ended");
    assert_eq!(flaky.get(), [secs(0), secs(11)]);
    assert_eq!(t0.elapsed(), secs(11));
    assert_eq!(cpu_usage(&pool), 0.0);
}

#[tokio::test(start_paused = true)]
async fn the_agent_wide_policy_applies_to_states_without_one_and_a_state_policy_overrides_it() {
    let t0 = Instant::now();
    let (a, b) = (Times::default(), Times::default());
    let mut agent = Agent::new("policies").retry_policy(policy(3, secs(1), secs(60)));
    // No policy of its own: the agent's 3 retries let it succeed on its 4th attempt.
    agent.add_state("a", {
        let a = a.clone();
        move |_ctx: Context| {
            let n = a.mark(t0);
            async move {
                if n < 4 {
                    Err(std::io::Error::other("not yet"))
                } else {
                    Ok(StateResult::next("b"))
                }
            }
        }
    });
    // Its own policy allows 1 retry only, fewer than the agent's.
    agent.add_state("b", always_failing(&b, t0)).retry_policy(policy(1, secs(5), secs(60)));

    let (state_name, attempts, _, _) = state_failed(agent.run().await);
    assert_eq!((state_name.as_str(), attempts), ("b", 2));
    assert_eq!(a.get(), [secs(0), secs(1), secs(3), secs(7)]);
    assert_eq!(b.get(), [secs(7), secs(12)], "`b` uses its own policy: one retry after 5 s");
    let m = agent.metrics();
    assert_eq!((state(&m, "a").retries, state(&m, "a").completed), (3, 1));
    assert_eq!(state(&m, "b").retries, 1);
}

// ----- the run's deadline -------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn run_timeout_stops_the_run_at_the_deadline_and_keeps_the_context() {
    let t0 = Instant::now();
    let dropped = Times::default();
    let mut agent = Agent::new("deadline");
    agent.add_state("w", |ctx: Context| async move {
        ctx.set_state("before", 7u32);
        StateResult::next("wait")
    });
    agent.add_state("wait", sleeper(secs(60), &dropped, t0));

    let err = agent.run_with(RunOptions::new().timeout(secs(5))).await.unwrap_err();
    assert_eq!(t0.elapsed(), secs(5));
    let AgentError::TimedOut { agent: name, after, context, .. } = err else { panic!("expected TimedOut, got {err}") };
    assert_eq!((name.as_str(), after), ("deadline", secs(5)));
    assert_eq!(context.get_state::<u32>("before"), Some(7));
    assert_eq!(agent.status(), AgentStatus::TimedOut);
    assert_eq!(dropped.get(), [secs(5)], "with no cleanup time the running state is dropped at the deadline");
}

#[tokio::test(start_paused = true)]
async fn cleanup_timeout_lets_running_states_finish_but_starts_no_successor() {
    let options = RunOptions::new().timeout(secs(5)).cleanup_timeout(secs(2));

    // A state that finishes inside the cleanup window completes; its successor never starts.
    let t0 = Instant::now();
    let successor_ran = Arc::new(AtomicBool::new(false));
    let mut agent = Agent::new("cleanup_fast");
    agent.add_state("fast", |ctx: Context| async move {
        sleep(secs(6)).await; // past the 5 s deadline, inside the 2 s cleanup window
        ctx.set_state("fast_done", true);
        StateResult::next("after_fast")
    });
    let ran = successor_ran.clone();
    agent.add_state("after_fast", move |_ctx: Context| {
        ran.store(true, SeqCst);
        async { StateResult::End }
    });
    let err = agent.run_with(options.clone()).await.unwrap_err();
    assert_eq!(t0.elapsed(), secs(6), "the run ends once its last running state is done");
    let AgentError::TimedOut { after, context, .. } = err else { panic!("expected TimedOut, got {err}") };
    assert_eq!(after, secs(5));
    assert_eq!(context.get_state::<bool>("fast_done"), Some(true), "`fast` finished within the cleanup window");
    assert!(!successor_ran.load(SeqCst), "no state starts after the deadline");
    assert_eq!(agent.state_status("fast"), Some(StateStatus::Completed));
    assert_eq!(agent.state_status("after_fast"), Some(StateStatus::Pending));
    assert_eq!(agent.status(), AgentStatus::TimedOut);

    // A state that would take longer is dropped at deadline + cleanup.
    let t0 = Instant::now();
    let dropped = Times::default();
    let mut agent = Agent::new("cleanup_slow");
    agent.add_state("slow", sleeper(secs(60), &dropped, t0));
    let err = agent.run_with(options).await.unwrap_err();
    assert!(matches!(err, AgentError::TimedOut { .. }), "expected TimedOut, got {err}");
    assert_eq!(t0.elapsed(), secs(7));
    assert_eq!(dropped.get(), [secs(7)], "`slow` is dropped at deadline + cleanup");
    assert_eq!(agent.status(), AgentStatus::TimedOut);
}

// ----- cancellation -------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn cancel_state_drops_a_running_state_and_the_sibling_branch_completes() {
    let t0 = Instant::now();
    let dropped = Times::default();
    let mut agent = Agent::new("cancel_one");
    agent.add_state("start", fan_out(&["a", "b"]));
    agent.add_state("a", sleeper(secs(10), &dropped, t0));
    agent.add_state("b", |ctx: Context| async move {
        sleep(secs(3)).await;
        ctx.set_state("b_done", true);
        StateResult::End
    });

    let a2 = agent.clone();
    let h = tokio::spawn(async move { a2.run().await });
    sleep(secs(1)).await;
    assert_eq!(agent.state_status("a"), Some(StateStatus::Running));
    assert!(agent.cancel_state("a"));
    sleep(ms(1)).await;
    assert_eq!(agent.state_status("a"), Some(StateStatus::Cancelled));
    assert_eq!(dropped.get(), [secs(1)], "the cancelled state's future is dropped at once");
    assert_eq!(agent.status(), AgentStatus::Running, "the rest of the run goes on");

    let result = h.await.unwrap().expect("the run completes without the cancelled branch");
    assert_eq!(t0.elapsed(), secs(3));
    assert_eq!(result.status(), AgentStatus::Completed);
    assert_eq!(result.completed_states(), ["start", "b"]);
    assert_eq!(result.context().get_state::<bool>("b_done"), Some(true));
    assert_eq!(agent.state_status("a"), Some(StateStatus::Cancelled));
}

#[tokio::test(start_paused = true)]
async fn cancel_state_removes_a_state_waiting_for_resources_from_the_queue() {
    let t0 = Instant::now();
    let pool = ResourcePool::builder().total_cpu(1.0).build();
    let (hog_dropped, waiter_ran) = (Times::default(), Arc::new(AtomicU32::new(0)));
    let mut agent = Agent::new("cancel_waiting").with_resource_pool(pool.clone());
    agent.add_state("start", fan_out(&["hog", "waiter"]));
    agent.add_state("hog", sleeper(secs(10), &hog_dropped, t0)).resources(cpu(1.0));
    let ran = waiter_ran.clone();
    agent
        .add_state("waiter", move |_ctx: Context| {
            ran.fetch_add(1, SeqCst);
            async { StateResult::End }
        })
        .resources(cpu(1.0));

    let a2 = agent.clone();
    let h = tokio::spawn(async move { a2.run().await });
    sleep(secs(1)).await;
    let waiting: Vec<String> = pool.waiting_states().into_iter().map(|w| w.state).collect();
    assert_eq!(waiting, ["waiter"]);
    assert!(agent.cancel_state("waiter"));
    sleep(ms(1)).await;
    assert!(pool.waiting_states().is_empty(), "the cancelled state left the queue");
    assert_eq!(agent.state_status("waiter"), Some(StateStatus::Cancelled));

    let result = h.await.unwrap().expect("the run completes");
    assert_eq!(t0.elapsed(), secs(10));
    assert_eq!(waiter_ran.load(SeqCst), 0, "the cancelled waiter never ran");
    assert_eq!(result.completed_states(), ["start", "hog"]);
    assert!(hog_dropped.get().is_empty());
    let cpu_stats = pool.usage_stats()[ResourceType::Cpu];
    assert_eq!((cpu_stats.current_usage, cpu_stats.allocations), (0.0, 1), "only `hog` was ever granted");
}

#[tokio::test(start_paused = true)]
async fn cancel_state_is_false_without_a_run_or_state_and_later_activations_run_normally() {
    let t0 = Instant::now();
    let (activations, dropped) = (Times::default(), Times::default());
    let mut agent = Agent::new("cancel_once");
    agent.add_state("start", fan_out(&["a", "driver"]));
    let (act, d) = (activations.clone(), dropped.clone());
    agent.add_state("a", move |ctx: Context| {
        let n = act.mark(t0);
        let guard = OnDrop(d.clone(), t0);
        async move {
            // The first activation would sleep long; a later one briefly (still cancellable).
            sleep(if n == 1 { secs(10) } else { secs(1) }).await;
            std::mem::forget(guard);
            ctx.set_state("a_finished", n as u32);
            StateResult::End
        }
    });
    agent.add_state("driver", |_ctx: Context| async {
        sleep(secs(2)).await;
        StateResult::next("a")
    });

    assert!(!agent.cancel_state("a"), "no run is going");
    let a2 = agent.clone();
    let h = tokio::spawn(async move { a2.run().await });
    sleep(secs(1)).await;
    assert!(!agent.cancel_state("nope"), "no such state");
    assert!(agent.cancel_state("a"));

    let result = h.await.unwrap().expect("the run completes");
    assert_eq!(activations.get(), [secs(0), secs(2)]);
    assert_eq!(dropped.get(), [secs(1)], "only the first activation was cancelled");
    assert_eq!(result.context().get_state::<u32>("a_finished"), Some(2));
    assert!(result.completed_states().contains(&"a".to_owned()));
    assert_eq!(agent.state_status("a"), Some(StateStatus::Completed));
    assert_eq!(t0.elapsed(), secs(3));
    assert!(!agent.cancel_state("a"), "the run is over");
}

#[tokio::test(start_paused = true)]
async fn cancel_state_during_a_retry_wait_ends_it_cancelled_without_another_attempt() {
    let t0 = Instant::now();
    let attempts = Times::default();
    let mut agent = Agent::new("cancel_retrying");
    agent.add_state("start", fan_out(&["r", "b"]));
    agent.add_state("r", always_failing(&attempts, t0)).retry_policy(policy(3, secs(10), secs(60)));
    agent.add_state("b", |_ctx: Context| async {
        sleep(secs(4)).await;
        StateResult::End
    });

    let a2 = agent.clone();
    let h = tokio::spawn(async move { a2.run().await });
    sleep(secs(2)).await;
    assert_eq!(agent.state_status("r"), Some(StateStatus::Retrying));
    assert!(agent.cancel_state("r"));
    sleep(ms(1)).await;
    assert_eq!(agent.state_status("r"), Some(StateStatus::Cancelled));

    let result = h.await.unwrap().expect("the run completes without the cancelled state");
    assert_eq!(t0.elapsed(), secs(4), "the run does not wait for the cancelled retry");
    assert_eq!(attempts.get(), [secs(0)], "no attempt after the cancellation");
    assert_eq!(result.completed_states(), ["start", "b"]);
    assert_eq!(state(&result.metrics(), "r").failed, 0, "a cancelled state did not fail");
}

#[tokio::test(start_paused = true)]
async fn cancel_all_ends_the_run_cancelled_and_releases_resources() {
    let t0 = Instant::now();
    let pool = ResourcePool::builder().total_cpu(2.0).build();
    let dropped = Times::default();
    let mut agent = Agent::new("cancel_all").with_resource_pool(pool.clone());
    agent.add_state("start", fan_out(&["x", "y"]));
    agent.add_state("x", sleeper(secs(60), &dropped, t0)).resources(cpu(1.0));
    agent.add_state("y", sleeper(secs(60), &dropped, t0)).resources(cpu(1.0));

    let a2 = agent.clone();
    let h = tokio::spawn(async move { a2.run().await });
    sleep(secs(1)).await;
    assert_eq!(cpu_usage(&pool), 2.0);
    agent.cancel_all().await;

    let result = h.await.unwrap().expect("a cancelled run returns its result");
    assert_eq!(result.status(), AgentStatus::Cancelled);
    assert_eq!(agent.status(), AgentStatus::Cancelled);
    assert_eq!(t0.elapsed(), secs(1));
    assert_eq!(dropped.get(), [secs(1), secs(1)], "both running states were dropped");
    assert_eq!(cpu_usage(&pool), 0.0, "cancelling gives every resource back");
    assert!(pool.waiting_states().is_empty());
}

/// PuffinFlow's `test_cancel_all`: after `cancel_all()` every state it stopped reads
/// `Cancelled`, the metrics count none running, and a state queued on the pool is not
/// admitted while the others give their resources back.
#[tokio::test(start_paused = true)]
async fn after_cancel_all_stopped_states_read_cancelled_and_nothing_queued_is_admitted() {
    let t0 = Instant::now();
    let pool = ResourcePool::builder().total_cpu(1.0).build();
    let dropped = Times::default();
    let queued_ran = Arc::new(AtomicU32::new(0));
    let mut agent = Agent::new("cancel_all_statuses").with_resource_pool(pool.clone());
    agent.add_state("start", fan_out(&["holder", "plain", "queued"]));
    agent.add_state("holder", sleeper(secs(60), &dropped, t0)).resources(cpu(1.0));
    agent.add_state("plain", sleeper(secs(60), &dropped, t0));
    let ran = queued_ran.clone();
    agent
        .add_state("queued", move |_ctx: Context| {
            ran.fetch_add(1, SeqCst);
            async { StateResult::End }
        })
        .resources(cpu(1.0));

    let a2 = agent.clone();
    let h = tokio::spawn(async move { a2.run().await });
    sleep(secs(1)).await;
    assert_eq!(agent.state_status("holder"), Some(StateStatus::Running));
    assert_eq!(agent.state_status("queued"), Some(StateStatus::Ready), "queued on the pool");
    assert_eq!(agent.metrics().running, 2);
    agent.cancel_all().await;

    for s in ["holder", "plain", "queued"] {
        assert_eq!(agent.state_status(s), Some(StateStatus::Cancelled), "{s}");
    }
    assert_eq!(agent.state_status("start"), Some(StateStatus::Completed));
    assert_eq!(agent.metrics().running, 0);
    let result = h.await.unwrap().expect("a cancelled run returns its result");
    assert_eq!(result.status(), AgentStatus::Cancelled);
    assert_eq!(result.metrics().running, 0);
    // Let any grant the cancellation could have made be delivered.
    sleep(secs(1)).await;
    assert_eq!(queued_ran.load(SeqCst), 0, "the queued state never ran");
    let stats = pool.usage_stats()[ResourceType::Cpu];
    assert_eq!((stats.current_usage, stats.allocations), (0.0, 1), "only `holder` was ever granted");
    assert!(pool.waiting_states().is_empty());
}

// ----- requests that can never fit ----------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_resource_error_is_not_retried() {
    let t0 = Instant::now();
    let pool = ResourcePool::builder().total_cpu(1.0).build();
    let ran = Arc::new(AtomicU32::new(0));
    let mut agent = Agent::new("too_big").with_resource_pool(pool.clone());
    let r = ran.clone();
    agent
        .add_state("big", move |_ctx: Context| {
            r.fetch_add(1, SeqCst);
            async { StateResult::End }
        })
        .resources(cpu(2.0))
        .retry_policy(policy(3, secs(1), secs(60)));

    let (state_name, attempts, source, _) = state_failed(agent.run().await);
    assert_eq!((state_name.as_str(), attempts), ("big", 1));
    let e = source.downcast_ref::<ResourceError>().unwrap_or_else(|| panic!("not a ResourceError: {source}"));
    assert!(
        matches!(e, ResourceError::ExceedsTotal { kind: ResourceType::Cpu, requested, total, .. } if *requested == 2.0 && *total == 1.0),
        "{e:?}"
    );
    assert_eq!(ran.load(SeqCst), 0, "the state never ran");
    assert_eq!(t0.elapsed(), Duration::ZERO, "no retry wait");
    assert_eq!(state(&agent.metrics(), "big").retries, 0);
    assert_eq!(cpu_usage(&pool), 0.0);
}
