//! Dependencies and rate limits end to end, through the public API: what each dependency type
//! waits for and activates, conditions, timeouts, lifecycles, cycles, and rate limits per
//! state, per tag and per attempt. Everything about time runs on a paused (virtual) clock.

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_core::{
    AgentError, Context, DependencyConfig, DependencyLifecycle, DependencyTimeout, DependencyType, RateLimit,
    ResourceRequirements, RetryPolicy, StateResult,
};
use agent_runtime::{Agent, AgentResult, AgentStatus, ResourcePool, StateStatus};
use tokio::time::{sleep, Instant};

mod common;
use common::*;

// ----- helpers ------------------------------------------------------------------------------

/// What happened, and when (virtual time since the log was made).
#[derive(Clone)]
struct Log {
    t0: Instant,
    events: Arc<Mutex<Vec<(String, Duration)>>>,
}

impl Log {
    fn new() -> Self {
        Log { t0: Instant::now(), events: Arc::default() }
    }
    fn mark(&self, what: &str) {
        self.events.lock().unwrap().push((what.to_owned(), self.t0.elapsed()));
    }
    /// Every event name, in order.
    fn names(&self) -> Vec<String> {
        self.events.lock().unwrap().iter().map(|(n, _)| n.clone()).collect()
    }
    /// When each `what` happened, in order.
    fn times(&self, what: &str) -> Vec<Duration> {
        self.events.lock().unwrap().iter().filter(|(n, _)| n == what).map(|(_, t)| *t).collect()
    }
    fn count(&self, what: &str) -> usize {
        self.times(what).len()
    }
}

/// A state that marks its start as `name`, sleeps `d`, marks `"{name} done"` and goes `then`.
fn step(log: &Log, name: &'static str, d: Duration, then: StateResult) -> impl Fn(Context) -> StateFut + Send + Sync {
    let log = log.clone();
    move |_ctx| {
        let (log, then) = (log.clone(), then.clone());
        log.mark(name);
        Box::pin(async move {
            if !d.is_zero() {
                sleep(d).await;
            }
            log.mark(&format!("{name} done"));
            then
        })
    }
}

/// A state that marks its start as `name`, sleeps `d`, then fails.
fn failing(log: &Log, name: &'static str, d: Duration) -> impl Fn(Context) -> FallibleFut + Send + Sync {
    let log = log.clone();
    move |_ctx| {
        let log = log.clone();
        log.mark(name);
        Box::pin(async move {
            if !d.is_zero() {
                sleep(d).await;
            }
            Err(std::io::Error::other(format!("{name} failed")))
        })
    }
}

/// A state that marks its start as `name` and goes to itself until it has run `n` times.
fn looping(log: &Log, name: &'static str, n: usize) -> impl Fn(Context) -> StateFut + Send + Sync {
    let log = log.clone();
    move |_ctx| {
        log.mark(name);
        let done = log.count(name) >= n;
        Box::pin(async move {
            match done {
                true => StateResult::End,
                false => StateResult::next(name),
            }
        })
    }
}

/// Run `agent`, failing the test if the run does not end within an hour of virtual time (a
/// gate that never opens would otherwise park the paused runtime for good).
async fn run(agent: &Agent) -> Result<AgentResult, AgentError> {
    match tokio::time::timeout(secs(3600), agent.run()).await {
        Ok(result) => result,
        Err(_) => panic!("the run of {agent:?} did not end within an hour"),
    }
}

fn required() -> DependencyConfig {
    DependencyConfig::new(DependencyType::Required)
}

/// The failing state, its attempts and the error of a `StateFailed`.
fn state_failed(result: Result<AgentResult, AgentError>) -> (String, u32, agent_core::BoxError) {
    match result {
        Err(AgentError::StateFailed { state, attempts, source, .. }) => (state, attempts, source),
        Err(other) => panic!("expected StateFailed, got {other}"),
        Ok(r) => panic!("expected the run to fail, it ended {:?}: {:?}", r.status(), r.completed_states()),
    }
}

// ----- dependency types ---------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn required_activates_a_dependency_that_never_ran_and_waits_for_it() {
    let log = Log::new();
    let mut agent = Agent::new("required");
    let l = log.clone();
    agent
        .add_state("a", move |ctx: Context| {
            l.mark("a");
            async move {
                let seen: Option<String> = ctx.get_state("written_by_b");
                ctx.set_state("a_saw", seen);
                StateResult::End
            }
        })
        .dependency("b", DependencyType::Required);
    let l = log.clone();
    agent.add_state("b", move |ctx: Context| {
        l.mark("b");
        async move {
            sleep(secs(1)).await;
            ctx.set_state("written_by_b", "hello");
            StateResult::End
        }
    });

    let (result, midway) = tokio::join!(run(&agent), async {
        sleep(ms(500)).await;
        (agent.state_status("a"), agent.state_status("b"))
    });
    let result = result.unwrap();
    assert_eq!(midway, (Some(StateStatus::Blocked), Some(StateStatus::Running)), "a waits at its gate while b runs");
    assert_eq!(result.completed_states(), ["b", "a"]);
    assert_eq!(result.context().get_state::<Option<String>>("a_saw"), Some(Some("hello".to_owned())));
    assert_eq!(log.times("b"), [Duration::ZERO]);
    assert_eq!(log.times("a"), [secs(1)]);
}

#[tokio::test(start_paused = true)]
async fn a_completion_activates_its_dependents_and_never_runs_one_twice() {
    // Nobody transitions to `c`: the completion of `start` activates it.
    let log = Log::new();
    let mut agent = Agent::new("activated");
    agent.add_state("start", step(&log, "start", secs(1), StateResult::End));
    agent
        .add_state("c", step(&log, "c", Duration::ZERO, StateResult::End))
        .dependency("start", DependencyType::Required);
    let result = run(&agent).await.unwrap();
    assert_eq!(result.completed_states(), ["start", "c"]);
    assert_eq!(log.times("c"), [secs(1)]);

    // `c` is reached by the transition of `start` and would be activated by its completion:
    // it runs once.
    let runs = Arc::new(AtomicU32::new(0));
    let mut agent = Agent::new("both");
    agent.add_state("start", |_ctx: Context| async { StateResult::next("c") });
    let r = runs.clone();
    agent
        .add_state("c", move |_ctx: Context| {
            r.fetch_add(1, SeqCst);
            async { StateResult::End }
        })
        .dependency("start", DependencyType::Required);
    let result = run(&agent).await.unwrap();
    assert_eq!(runs.load(SeqCst), 1);
    assert_eq!(result.completed_states(), ["start", "c"]);

    // The same inside a fan-out: `c` is a sibling of its dependency `p`.
    let runs = Arc::new(AtomicU32::new(0));
    let mut agent = Agent::new("fan");
    agent.add_state("start", |_ctx: Context| async { StateResult::parallel(["p", "c"]) });
    agent.add_state("p", |_ctx: Context| async {
        sleep(secs(1)).await;
        StateResult::End
    });
    let r = runs.clone();
    agent
        .add_state("c", move |_ctx: Context| {
            r.fetch_add(1, SeqCst);
            async { StateResult::End }
        })
        .dependency("p", DependencyType::Required);
    let t0 = Instant::now();
    let result = run(&agent).await.unwrap();
    assert_eq!(runs.load(SeqCst), 1);
    assert_eq!(result.completed_states(), ["start", "p", "c"]);
    assert_eq!(t0.elapsed(), secs(1));
}

/// API.md: a state runs when it is activated, and both a transition naming it and the
/// completion of its `Required` dependencies activate it. Reached by a transition after its
/// dependency's completion already activated it, it runs twice: once per activation.
#[tokio::test(start_paused = true)]
async fn a_dependent_reached_later_by_a_transition_runs_once_per_activation() {
    // start -> b (1 s) -> c, and c depends on start. When start completes, c is activated
    // (nobody has transitioned to it yet); b then transitions to c at 1 s.
    let log = Log::new();
    let mut agent = Agent::new("chain");
    agent.add_state("start", step(&log, "start", Duration::ZERO, StateResult::next("b")));
    agent.add_state("b", step(&log, "b", secs(1), StateResult::next("c")));
    agent
        .add_state("c", step(&log, "c", Duration::ZERO, StateResult::End))
        .dependency("start", DependencyType::Required);
    let result = agent.run().await.unwrap();
    assert_eq!(log.times("c"), [Duration::ZERO, secs(1)], "once per activation");
    assert_eq!(result.completed_states(), ["start", "c", "b"]);
}

#[tokio::test(start_paused = true)]
async fn a_required_dependency_failing_for_good_cancels_the_dependent() {
    let log = Log::new();
    let mut agent = Agent::new("fails");
    agent.add_state("a", step(&log, "a", Duration::ZERO, StateResult::End)).dependency("b", DependencyType::Required);
    agent.add_state("b", failing(&log, "b", secs(1)));
    let (state, attempts, source) = state_failed(run(&agent).await);
    assert_eq!((state.as_str(), attempts), ("b", 1));
    assert_eq!(source.to_string(), "b failed");
    assert_eq!(log.count("a"), 0, "a ran: {:?}", log.names());
    assert_eq!(agent.state_status("a"), Some(StateStatus::Cancelled));
    assert_eq!(agent.state_status("b"), Some(StateStatus::Failed));

    // With an `on_error` handler on `b` the run completes through it; `a` is still cancelled.
    let log = Log::new();
    let mut agent = Agent::new("handled");
    agent.add_state("a", step(&log, "a", Duration::ZERO, StateResult::End)).dependency("b", DependencyType::Required);
    agent.add_state("b", failing(&log, "b", secs(1))).on_error("h");
    agent.add_state("h", step(&log, "h", Duration::ZERO, StateResult::End));
    let result = run(&agent).await.unwrap();
    assert_eq!(result.status(), AgentStatus::Completed);
    assert_eq!(result.completed_states(), ["h"]);
    assert_eq!(log.count("a"), 0, "a ran: {:?}", log.names());
    assert_eq!(agent.state_status("a"), Some(StateStatus::Cancelled));
    assert_eq!(log.times("h"), [secs(1)]);
}

#[tokio::test(start_paused = true)]
async fn sequential_is_satisfied_by_a_failed_dependency() {
    let log = Log::new();
    let mut agent = Agent::new("sequential");
    agent.add_state("a", step(&log, "a", Duration::ZERO, StateResult::End)).dependency("b", DependencyType::Sequential);
    agent.add_state("b", failing(&log, "b", secs(1))).on_error("h");
    agent.add_state("h", step(&log, "h", Duration::ZERO, StateResult::End));
    let result = run(&agent).await.unwrap();
    assert_eq!(result.status(), AgentStatus::Completed);
    assert_eq!(log.times("b"), [Duration::ZERO], "the gate activated b");
    assert_eq!(log.times("a"), [secs(1)], "a waited until b finished");
    assert!(result.completed_states().contains(&"a".to_owned()));
    assert_eq!(agent.state_status("a"), Some(StateStatus::Completed));
    assert_eq!(agent.state_status("b"), Some(StateStatus::Failed));
}

#[tokio::test(start_paused = true)]
async fn optional_waits_only_for_a_dependency_activated_in_this_run() {
    // Not activated: satisfied at once, and the gate does not start it.
    let log = Log::new();
    let mut agent = Agent::new("optional idle");
    agent.add_state("a", step(&log, "a", Duration::ZERO, StateResult::End)).dependency("b", DependencyType::Optional);
    agent.add_state("b", step(&log, "b", secs(2), StateResult::End));
    let t0 = Instant::now();
    let result = run(&agent).await.unwrap();
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert_eq!(result.completed_states(), ["a"]);
    assert_eq!(log.count("b"), 0);
    assert_eq!(agent.state_status("b"), Some(StateStatus::Pending));

    // Activated by a fan-out alongside `a`: `a` waits until `b` finished.
    let log = Log::new();
    let mut agent = Agent::new("optional active");
    agent.add_state("start", |_ctx: Context| async { StateResult::parallel(["b", "a"]) });
    agent.add_state("a", step(&log, "a", Duration::ZERO, StateResult::End)).dependency("b", DependencyType::Optional);
    agent.add_state("b", step(&log, "b", secs(2), StateResult::End));
    let result = run(&agent).await.unwrap();
    assert_eq!(log.times("a"), [secs(2)]);
    assert_eq!(log.times("b done"), [secs(2)]);
    assert_eq!(result.completed_states(), ["start", "b", "a"]);
}

#[tokio::test(start_paused = true)]
async fn parallel_starts_the_dependency_alongside_without_waiting() {
    let log = Log::new();
    let mut agent = Agent::new("parallel");
    agent.add_state("a", step(&log, "a", Duration::ZERO, StateResult::End)).dependency("b", DependencyType::Parallel);
    agent.add_state("b", step(&log, "b", secs(2), StateResult::End));
    let t0 = Instant::now();
    let result = run(&agent).await.unwrap();
    assert_eq!(log.times("a"), [Duration::ZERO]);
    assert_eq!(log.times("a done"), [Duration::ZERO], "a finished while b was still running");
    assert_eq!(log.times("b"), [Duration::ZERO], "b was started alongside a");
    assert_eq!(log.times("b done"), [secs(2)]);
    assert_eq!(result.completed_states(), ["a", "b"]);
    assert_eq!(t0.elapsed(), secs(2), "the run waits for b's branch");
}

// ----- conditions and timeouts --------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_condition_holds_the_dependent_until_it_is_true() {
    let log = Log::new();
    let mut agent = Agent::new("condition");
    agent.add_state("start", |_ctx: Context| async { StateResult::parallel(["setter", "a"]) });
    agent.add_state("setter", |ctx: Context| async move {
        sleep(secs(3)).await;
        ctx.set_state("ready", true);
        StateResult::End
    });
    agent
        .add_state("a", step(&log, "a", Duration::ZERO, StateResult::End))
        .dependency("b", required().condition(|ctx: &Context| ctx.get_state_or("ready", false)));
    agent.add_state("b", step(&log, "b", Duration::ZERO, StateResult::End));
    let result = run(&agent).await.unwrap();
    assert_eq!(log.times("b done"), [Duration::ZERO], "the dependency itself completed at once");
    assert_eq!(log.times("a"), [secs(3)], "a started when the flag was set");
    assert_eq!(log.names().iter().filter(|n| *n == "a").count(), 1);
    assert_eq!(result.completed_states().last().map(String::as_str), Some("a"));
}

#[tokio::test(start_paused = true)]
async fn a_condition_nothing_can_make_true_fails_the_run_as_stalled() {
    // `a` waits for `b` and a flag no state sets: once `b` and `setter` are done, nothing
    // left can open the gate, and the run says so instead of waiting forever.
    let log = Log::new();
    let mut agent = Agent::new("stalled");
    agent.add_state("start", |_ctx: Context| async { StateResult::parallel(["setter", "a"]) });
    agent.add_state("setter", |ctx: Context| async move {
        sleep(secs(3)).await;
        ctx.set_state("other", true);
        StateResult::End
    });
    agent
        .add_state("a", step(&log, "a", Duration::ZERO, StateResult::End))
        .dependency("b", required().condition(|ctx: &Context| ctx.get_state_or("ready", false)));
    agent.add_state("b", step(&log, "b", secs(1), StateResult::End));
    let t0 = Instant::now();
    let err = run(&agent).await.unwrap_err();
    assert_eq!(t0.elapsed(), secs(3), "stalled once `setter`, the last branch that could move, ended");
    let AgentError::Stalled { waiting, context } = &err else { panic!("expected Stalled, got {err}") };
    assert_eq!(waiting.len(), 1, "{err}");
    assert_eq!(waiting[0].state, "a");
    assert_eq!(waiting[0].on, "the condition on `b` to hold");
    assert_eq!(context.get_state::<bool>("other"), Some(true), "the context is kept");
    assert_eq!(log.count("a"), 0);
    assert_eq!(agent.status(), AgentStatus::Failed);
    assert!(err.to_string().contains("`a` waits for the condition on `b` to hold"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_required_dependency_that_ends_its_branch_elsewhere_does_not_stall_a_waiting_gate() {
    // Two gates wait on each other's branches: `x` on `slow` (running 5 s), `y` on `x`. The
    // run is not stalled while `slow` runs, and completes.
    let log = Log::new();
    let mut agent = Agent::new("not stalled");
    agent.add_state("start", |_ctx: Context| async { StateResult::parallel(["x", "y"]) });
    agent.add_state("x", step(&log, "x", Duration::ZERO, StateResult::End)).dependency("slow", required());
    agent.add_state("y", step(&log, "y", Duration::ZERO, StateResult::End)).dependency("x", required());
    agent.add_state("slow", step(&log, "slow", secs(5), StateResult::End));
    let result = run(&agent).await.unwrap();
    assert_eq!(log.times("x"), [secs(5)]);
    assert_eq!(log.times("y"), [secs(5)]);
    assert_eq!(result.status(), AgentStatus::Completed);
}

#[tokio::test(start_paused = true)]
async fn two_gates_each_waiting_for_a_flag_the_other_would_set_stall() {
    // `a` needs `ready_a`, which only `b` sets after running; `b` needs `ready_b`, which only
    // `a` sets: once `dep` is done neither can open, and both are named.
    let mut agent = Agent::new("two stalled");
    agent.add_state("start", |_ctx: Context| async { StateResult::parallel(["a", "b"]) });
    agent
        .add_state("a", |ctx: Context| async move {
            ctx.set_state("ready_b", true);
            StateResult::End
        })
        .dependency("dep", required().condition(|ctx: &Context| ctx.get_state_or("ready_a", false)));
    agent
        .add_state("b", |ctx: Context| async move {
            ctx.set_state("ready_a", true);
            StateResult::End
        })
        .dependency("dep", required().condition(|ctx: &Context| ctx.get_state_or("ready_b", false)));
    agent.add_state("dep", |_ctx: Context| async move {
        sleep(secs(1)).await;
        StateResult::End
    });
    let err = run(&agent).await.unwrap_err();
    let AgentError::Stalled { waiting, .. } = &err else { panic!("expected Stalled, got {err}") };
    let mut states: Vec<&str> = waiting.iter().map(|w| w.state.as_str()).collect();
    states.sort_unstable();
    assert_eq!(states, ["a", "b"], "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_dependency_timeout_fails_the_dependent_or_goes_to_its_on_error() {
    let log = Log::new();
    let mut agent = Agent::new("timeout");
    agent
        .add_state("a", step(&log, "a", Duration::ZERO, StateResult::End))
        .dependency("b", required().timeout(secs(2)));
    agent.add_state("b", step(&log, "b", secs(10), StateResult::End));
    let t0 = Instant::now();
    let (state, _, source) = state_failed(run(&agent).await);
    assert_eq!(t0.elapsed(), secs(2));
    assert_eq!(state, "a");
    let timeout = source.downcast_ref::<DependencyTimeout>().expect("the source is a DependencyTimeout");
    assert_eq!(*timeout, DependencyTimeout { state: "a".into(), dependency: "b".into(), after: secs(2) }, "{source}");
    assert_eq!(log.count("a"), 0);
    assert_eq!(log.count("b done"), 0, "b was stopped with the run");

    // A dependency that completes within the timeout: no failure.
    let log = Log::new();
    let mut agent = Agent::new("in time");
    agent
        .add_state("a", step(&log, "a", Duration::ZERO, StateResult::End))
        .dependency("b", required().timeout(secs(2)));
    agent.add_state("b", step(&log, "b", ms(1999), StateResult::End));
    let result = run(&agent).await.unwrap();
    assert_eq!(log.times("a"), [ms(1999)]);
    assert_eq!(result.completed_states(), ["b", "a"]);

    // With `on_error`, the handler runs at 2 s and reads the timeout from the context.
    let log = Log::new();
    let mut agent = Agent::new("timeout handled");
    agent
        .add_state("a", step(&log, "a", Duration::ZERO, StateResult::End))
        .dependency("b", required().timeout(secs(2)))
        .on_error("h");
    agent.add_state("b", step(&log, "b", secs(10), StateResult::End));
    let l = log.clone();
    agent.add_state("h", move |ctx: Context| {
        l.mark("h");
        async move {
            let e = ctx.last_error().expect("h sees the failure");
            let timeout = e.error.downcast_ref::<DependencyTimeout>().cloned();
            ctx.set_state("failed_state", e.state);
            ctx.set_state("dependency", timeout.map(|t| (t.state, t.dependency, t.after)));
            StateResult::End
        }
    });
    let result = run(&agent).await.unwrap();
    assert_eq!(log.times("h"), [secs(2)]);
    assert_eq!(log.count("a"), 0);
    assert_eq!(result.context().get_state::<String>("failed_state").as_deref(), Some("a"));
    assert_eq!(
        result.context().get_state::<Option<(String, String, Duration)>>("dependency"),
        Some(Some(("a".into(), "b".into(), secs(2))))
    );
    assert_eq!(agent.state_status("a"), Some(StateStatus::Failed));
}

// ----- lifecycles ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn once_counts_a_completion_of_an_earlier_run_and_session_does_not() {
    for (lifecycle, b_runs) in [(DependencyLifecycle::Once, [1, 1]), (DependencyLifecycle::Session, [1, 2])] {
        let log = Log::new();
        let mut agent = Agent::new("lifecycle");
        // `b` is activated only by the gate of `a`, the start.
        agent
            .add_state("a", step(&log, "a", Duration::ZERO, StateResult::End))
            .dependency("b", required().lifecycle(lifecycle));
        agent.add_state("b", step(&log, "b", secs(1), StateResult::End));

        let first = run(&agent).await.unwrap();
        assert_eq!(first.completed_states(), ["b", "a"], "{lifecycle:?}");
        assert_eq!(log.count("b"), b_runs[0], "{lifecycle:?}");

        let t1 = Instant::now();
        let second = run(&agent).await.unwrap();
        assert_eq!(log.count("b"), b_runs[1], "{lifecycle:?}: {:?}", log.names());
        assert_eq!(log.count("a"), 2, "{lifecycle:?}");
        match lifecycle {
            DependencyLifecycle::Once => {
                assert_eq!(second.completed_states(), ["a"]);
                assert_eq!(t1.elapsed(), Duration::ZERO, "a started at once");
                assert_eq!(agent.state_status("b"), Some(StateStatus::Pending));
            }
            _ => {
                assert_eq!(second.completed_states(), ["b", "a"]);
                assert_eq!(t1.elapsed(), secs(1), "a waited for b again");
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn always_needs_a_new_completion_before_each_start() {
    let log = Log::new();
    let mut agent = Agent::new("always");
    agent.add_state("a", looping(&log, "a", 3)).dependency("b", required().lifecycle(DependencyLifecycle::Always));
    agent.add_state("b", step(&log, "b", ms(100), StateResult::End));
    let result = run(&agent).await.unwrap();
    let order: Vec<String> = log.names().into_iter().filter(|n| n == "a" || n == "b").collect();
    assert_eq!(order, ["b", "a", "b", "a", "b", "a"]);
    assert_eq!(log.times("a"), [ms(100), ms(200), ms(300)]);
    let m = result.metrics();
    let completed = |name: &str| m.states.iter().find(|s| s.name == name).unwrap().completed;
    assert_eq!((completed("a"), completed("b")), (3, 3));
}

/// `s` fans out to `b` (1 s, so it completes at 1 s) and `w` (sleeps 5 s, then goes to `a`);
/// `a` needs `b` under `config`, and `w` so that `b`'s completion alone does not activate it.
fn late_dependent(log: &Log, config: DependencyConfig) -> Agent {
    let mut agent = Agent::new("late");
    agent.add_state("s", |_ctx: Context| async { StateResult::parallel(["b", "w"]) });
    agent.add_state("b", step(log, "b", secs(1), StateResult::End));
    agent.add_state("w", step(log, "w", secs(5), StateResult::next("a")));
    agent
        .add_state("a", step(log, "a", Duration::ZERO, StateResult::End))
        .dependency("b", config)
        .dependency("w", DependencyType::Required);
    agent
}

#[tokio::test(start_paused = true)]
async fn temporary_completions_expire() {
    // Completed at 1 s, still fresh at 5 s: a starts at once, b is not run again.
    let log = Log::new();
    let agent = late_dependent(&log, required().lifecycle(DependencyLifecycle::Temporary).expiry(secs(10)));
    run(&agent).await.unwrap();
    assert_eq!(log.times("b"), [Duration::ZERO]);
    assert_eq!(log.times("a"), [secs(5)]);

    // Expired at 3 s: the old completion does not let a start at 5 s; the gate runs b again
    // (5 s to 6 s) and a starts on the fresh completion.
    let log = Log::new();
    let agent = late_dependent(&log, required().lifecycle(DependencyLifecycle::Temporary).expiry(secs(2)));
    let result = run(&agent).await.unwrap();
    assert_eq!(log.times("b"), [Duration::ZERO, secs(5)]);
    assert_eq!(log.times("b done"), [secs(1), secs(6)]);
    assert_eq!(log.times("a"), [secs(6)]);
    assert_eq!(result.completed_states(), ["s", "b", "w", "a"]);
}

#[tokio::test(start_paused = true)]
async fn periodic_runs_a_stale_dependency_again() {
    // Completed at 1 s, stale when the dependent arrives at 5 s: run again, 5 s to 6 s.
    let log = Log::new();
    let agent = late_dependent(&log, required().lifecycle(DependencyLifecycle::Periodic).interval(secs(2)));
    run(&agent).await.unwrap();
    assert_eq!(log.times("b"), [Duration::ZERO, secs(5)]);
    assert_eq!(log.times("a"), [secs(6)]);

    // Fresh when the dependent arrives: not run again.
    let log = Log::new();
    let agent = late_dependent(&log, required().lifecycle(DependencyLifecycle::Periodic).interval(secs(10)));
    run(&agent).await.unwrap();
    assert_eq!(log.times("b"), [Duration::ZERO]);
    assert_eq!(log.times("a"), [secs(5)]);

    // Stale while the dependent waits for another dependency: `b` (1 s) completes at 1 s,
    // is stale at 3 s and is run again (3 s to 4 s); `c` completes at 5 s, when b's
    // completion of 4 s is fresh.
    let log = Log::new();
    let mut agent = Agent::new("periodic waiting");
    agent
        .add_state("a", step(&log, "a", Duration::ZERO, StateResult::End))
        .dependency("b", required().lifecycle(DependencyLifecycle::Periodic).interval(secs(2)))
        .dependency("c", DependencyType::Required);
    agent.add_state("b", step(&log, "b", secs(1), StateResult::End));
    agent.add_state("c", step(&log, "c", secs(5), StateResult::End));
    run(&agent).await.unwrap();
    assert_eq!(log.times("b"), [Duration::ZERO, secs(3)]);
    assert_eq!(log.times("a"), [secs(5)]);
}

// ----- validation ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_dependency_cycle_or_unknown_name_is_rejected_before_anything_runs() {
    let log = Log::new();
    let mut agent = Agent::new("cycle");
    agent.add_state("a", step(&log, "a", Duration::ZERO, StateResult::End)).dependency("b", DependencyType::Required);
    agent.add_state("b", step(&log, "b", Duration::ZERO, StateResult::End)).dependency("a", DependencyType::Sequential);
    match run(&agent).await {
        Err(AgentError::DependencyCycle { cycle }) => {
            assert_eq!(cycle.len(), 3, "{cycle:?}");
            assert_eq!(cycle.first(), cycle.last(), "{cycle:?}");
            assert!(cycle.contains(&"a".to_owned()) && cycle.contains(&"b".to_owned()), "{cycle:?}");
        }
        Err(other) => panic!("expected DependencyCycle, got {other}"),
        Ok(r) => panic!("the run went ahead: {:?}", r.completed_states()),
    }
    assert!(log.names().is_empty(), "{:?}", log.names());
    assert_eq!(agent.status(), AgentStatus::Idle);

    let mut agent = Agent::new("self");
    agent.add_state("a", step(&log, "a", Duration::ZERO, StateResult::End)).dependency("a", DependencyType::Required);
    match run(&agent).await {
        Err(AgentError::DependencyCycle { cycle }) => assert_eq!(cycle, ["a", "a"]),
        Err(other) => panic!("expected DependencyCycle, got {other}"),
        Ok(_) => panic!("the run went ahead"),
    }

    let mut agent = Agent::new("unknown");
    agent
        .add_state("a", step(&log, "a", Duration::ZERO, StateResult::End))
        .dependency("nope", DependencyType::Required);
    match run(&agent).await {
        Err(AgentError::UnknownReference { state, target, role, .. }) => {
            assert_eq!((state.as_str(), target.as_str(), role), ("a", "nope", "dependency"));
        }
        Err(other) => panic!("expected UnknownReference, got {other}"),
        Ok(_) => panic!("the run went ahead"),
    }
    assert!(log.names().is_empty(), "{:?}", log.names());
}

// ----- rate limits --------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_state_rate_limit_spaces_its_starts() {
    let log = Log::new();
    let mut agent = Agent::new("limited");
    agent.add_state("r", looping(&log, "r", 11)).rate_limit(RateLimit::new(10.0));
    let t0 = Instant::now();
    run(&agent).await.unwrap();
    assert_eq!(t0.elapsed(), secs(1));
    let expected: Vec<Duration> = (0..11).map(|i| ms(100 * i)).collect();
    assert_eq!(log.times("r"), expected);

    // A burst of 5: the first five starts take no time, then one every 100 ms.
    let log = Log::new();
    let mut agent = Agent::new("bursty");
    agent.add_state("r", looping(&log, "r", 11)).rate_limit(RateLimit::new(10.0).burst(5));
    run(&agent).await.unwrap();
    let expected: Vec<Duration> = (0..11u64).map(|i| ms(100 * i.saturating_sub(4))).collect();
    assert_eq!(log.times("r"), expected);
}

#[tokio::test(start_paused = true)]
async fn a_tag_rate_limit_is_shared_by_its_states_and_across_runs() {
    let log = Log::new();
    let mut agent = Agent::new("tagged").tag_rate_limit("api", RateLimit::new(2.0));
    // x, y, x, y, x: five starts of two states sharing the tag's limiter.
    for (name, other) in [("x", "y"), ("y", "x")] {
        let l = log.clone();
        agent
            .add_state(name, move |_ctx: Context| {
                l.mark(name);
                let total = l.count("x") + l.count("y");
                async move {
                    match total {
                        5.. => StateResult::End,
                        _ => StateResult::next(other),
                    }
                }
            })
            .tag("api");
    }
    let t0 = Instant::now();
    run(&agent).await.unwrap();
    assert_eq!(t0.elapsed(), secs(2));
    assert_eq!(log.times("x"), [Duration::ZERO, secs(1), secs(2)]);
    assert_eq!(log.times("y"), [ms(500), ms(1500)]);

    // The next run shares the limiter: its first start waits for the cell due at 2.5 s.
    log.events.lock().unwrap().clear();
    run(&agent).await.unwrap();
    assert_eq!(log.times("x"), [ms(2500), ms(3500), ms(4500)]);
    assert_eq!(log.times("y"), [ms(3000), ms(4000)]);
}

#[tokio::test(start_paused = true)]
async fn every_attempt_takes_a_start_from_the_rate_limit() {
    let log = Log::new();
    let mut agent = Agent::new("retried");
    agent
        .add_state("f", failing(&log, "f", Duration::ZERO))
        .rate_limit(RateLimit::new(1.0))
        .retry_policy(RetryPolicy::new().max_retries(2).initial_delay(Duration::ZERO).jitter(false));
    let t0 = Instant::now();
    let (state, attempts, _) = state_failed(run(&agent).await);
    assert_eq!((state.as_str(), attempts), ("f", 3));
    assert_eq!(log.times("f"), [Duration::ZERO, secs(1), secs(2)]);
    assert_eq!(t0.elapsed(), secs(2));
}

#[tokio::test(start_paused = true)]
async fn a_state_waiting_for_its_rate_limit_holds_no_resources() {
    let log = Log::new();
    let pool = ResourcePool::builder().total_cpu(1.0).build();
    let mut agent = Agent::new("holds nothing").with_resource_pool(pool);
    agent.add_state("start", |_ctx: Context| async { StateResult::parallel(["r", "w"]) });
    // `r` takes the only CPU at 0 and fails; its retry waits for the limiter until 1 s.
    agent
        .add_state("r", failing(&log, "r", Duration::ZERO))
        .resources(ResourceRequirements::new().cpu(1.0))
        .rate_limit(RateLimit::new(1.0))
        .retry_policy(RetryPolicy::new().max_retries(1).initial_delay(Duration::ZERO).jitter(false))
        .on_error("end");
    agent.add_state("end", |_ctx: Context| async { StateResult::End });
    // `o` asks for the CPU at 200 ms, while `r` waits for its limiter.
    agent.add_state("w", step(&log, "w", ms(200), StateResult::End));
    agent
        .add_state("o", step(&log, "o", ms(500), StateResult::End))
        .resources(ResourceRequirements::new().cpu(1.0))
        .dependency("w", DependencyType::Required);
    let result = run(&agent).await.unwrap();
    assert_eq!(log.times("o"), [ms(200)], "o got the CPU while r waited for its limiter");
    assert_eq!(log.times("r"), [Duration::ZERO, secs(1)]);
    let m = result.metrics();
    let o = m.states.iter().find(|s| s.name == "o").unwrap();
    assert_eq!(o.resource_wait, Duration::ZERO);
}
