//! Sequential flow, loops, validation and failures of builder agents.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use agent_core::{AgentError, Context, DependencyType, StateResult};
use agent_runtime::{Agent, AgentStatus, StateStatus};

#[tokio::test]
async fn a_chain_runs_in_order_and_shares_the_context() {
    let mut agent = Agent::new("chain");
    agent.add_state("a", |ctx: Context| async move {
        ctx.set_state("trail", vec!["a"]);
        StateResult::next("b")
    });
    agent.add_state("b", |ctx: Context| async move {
        ctx.update_state("trail", |t: &mut Vec<String>| t.push("b".into())).unwrap();
        StateResult::next("c")
    });
    agent.add_state("c", |ctx: Context| async move {
        ctx.update_state("trail", |t: &mut Vec<String>| t.push("c".into()))?;
        Ok::<_, agent_core::ContextError>(StateResult::End)
    });
    let result = agent.run().await.unwrap();
    assert_eq!(result.status(), AgentStatus::Completed);
    assert_eq!(result.completed_states(), ["a", "b", "c"]);
    assert_eq!(result.context().get_state::<Vec<String>>("trail").unwrap(), ["a", "b", "c"]);
    assert_eq!(agent.status(), AgentStatus::Completed);
    assert_eq!(agent.state_status("b"), Some(StateStatus::Completed));
    assert_eq!(agent.state_status("nope"), None);
    assert_eq!(result.metrics().completed, 3);
    assert_eq!(agent.metrics().completed, 3, "the agent's metrics are the last run's");
    assert_eq!(Agent::new("idle").metrics().completed, 0);
    assert_eq!(agent.run_id().as_deref(), Some(result.run_id()));
}

/// A plain `async fn(&Context)` (no `#[state]`), a `Result`-returning one, and an async
/// closure capturing nothing are states too, beside closures taking an owned `Context`.
#[tokio::test]
async fn functions_borrowing_the_context_are_states() {
    async fn first(ctx: &Context) -> StateResult {
        ctx.set_state("trail", vec!["first"]);
        StateResult::next("second")
    }
    async fn second(ctx: &Context) -> Result<StateResult, agent_core::ContextError> {
        ctx.update_state("trail", |t: &mut Vec<String>| t.push("second".into()))?;
        Ok(StateResult::next("third"))
    }
    let mut agent = Agent::new("borrowing");
    agent.add_state("first", first);
    agent.add_state("second", second);
    agent.add_state("third", async |ctx: &Context| {
        ctx.update_state("trail", |t: &mut Vec<String>| t.push("third".into())).unwrap();
        StateResult::End
    });
    let result = agent.run().await.unwrap();
    assert_eq!(result.completed_states(), ["first", "second", "third"]);
    assert_eq!(result.context().get_state::<Vec<String>>("trail").unwrap(), ["first", "second", "third"]);
}

/// A borrowing function that fails or panics fails its run like any other state.
#[tokio::test]
async fn a_borrowing_function_that_panics_or_errs_fails_the_run() {
    async fn errs(_ctx: &Context) -> Result<StateResult, std::io::Error> {
        Err(std::io::Error::other("disk gone"))
    }
    async fn panics(ctx: &Context) -> StateResult {
        if !ctx.has_state("never") {
            panic!("borrowed and broken");
        }
        StateResult::End
    }
    let mut agent = Agent::new("borrowing_errs");
    agent.add_state("errs", errs);
    match agent.run().await {
        Err(AgentError::StateFailed { state, source, .. }) => {
            assert_eq!(state, "errs");
            assert!(source.to_string().contains("disk gone"), "{source}");
        }
        other => panic!("expected StateFailed, got {other:?}"),
    }
    let mut agent = Agent::new("borrowing_panics");
    agent.add_state("panics", panics);
    match agent.run().await {
        Err(AgentError::StateFailed { state, source, .. }) => {
            assert_eq!(state, "panics");
            assert!(source.to_string().contains("borrowed and broken"), "{source}");
        }
        other => panic!("expected StateFailed, got {other:?}"),
    }
}

#[tokio::test]
async fn set_start_picks_the_entry() {
    let mut agent = Agent::new("start");
    agent.add_state("first", |_ctx: Context| async {
        if true {
            panic!("not the start");
        }
        StateResult::End
    });
    agent.add_state("second", |ctx: Context| async move {
        ctx.set_state("ran", true);
        StateResult::End
    });
    agent.set_start("second");
    let r = agent.run().await.unwrap();
    assert_eq!(r.completed_states(), ["second"]);
}

#[tokio::test]
async fn a_state_may_loop_and_runs_each_time() {
    let mut agent = Agent::new("loop");
    agent.add_state("tick", |ctx: Context| async move {
        let n: u32 = ctx.get_state_or("n", 0) + 1;
        ctx.set_state("n", n);
        if n < 10 {
            StateResult::next("tick")
        } else {
            StateResult::End
        }
    });
    let r = agent.run().await.unwrap();
    assert_eq!(r.context().get_state::<u32>("n"), Some(10));
    assert_eq!(r.metrics().steps, 10);
    assert_eq!(r.metrics().states[0].completed, 10);
}

#[tokio::test]
async fn max_steps_stops_a_runaway_loop_and_keeps_the_context() {
    let mut agent = Agent::new("runaway").max_steps(5);
    agent.add_state("spin", |ctx: Context| async move {
        ctx.update_state_or_default("n", |n: &mut u32| *n += 1).unwrap();
        StateResult::next("spin")
    });
    match agent.run().await {
        Err(AgentError::MaxSteps { limit, state, context }) => {
            assert_eq!(limit, 5);
            assert_eq!(state, "spin");
            assert_eq!(context.get_state::<u32>("n"), Some(5));
        }
        other => panic!("expected MaxSteps, got {other:?}"),
    }
    assert_eq!(agent.status(), AgentStatus::Failed);
}

#[tokio::test]
async fn an_unknown_computed_target_fails_with_both_names() {
    let mut agent = Agent::new("typo");
    agent.add_state("route", |ctx: Context| async move {
        ctx.set_state("kept", 1);
        StateResult::next(format!("chunk_{}", 7))
    });
    match agent.run().await {
        Err(AgentError::UnknownState { from, to, context }) => {
            assert_eq!((from.as_str(), to.as_str()), ("route", "chunk_7"));
            assert_eq!(context.get_state::<i32>("kept"), Some(1));
        }
        other => panic!("expected UnknownState, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unknown_target_inside_a_fan_out_fails_the_run() {
    let mut agent = Agent::new("typo_fan");
    agent.add_state("fan", |_ctx: Context| async { StateResult::parallel(["a", "missing"]) });
    agent.add_state("a", |_ctx: Context| async { StateResult::End });
    let err = agent.run().await.unwrap_err();
    assert!(matches!(err, AgentError::UnknownState { ref to, .. } if to == "missing"), "{err}");
}

#[tokio::test]
async fn an_err_fails_the_run_with_state_failed_and_the_context() {
    let mut agent = Agent::new("err");
    agent.add_state("work", |ctx: Context| async move {
        ctx.set_state("partial", "done so far");
        Err::<StateResult, _>(std::io::Error::other("disk on fire"))
    });
    let err = agent.run().await.unwrap_err();
    match &err {
        AgentError::StateFailed { state, attempts, source, context, .. } => {
            assert_eq!(state, "work");
            assert_eq!(*attempts, 1);
            assert_eq!(source.to_string(), "disk on fire");
            assert_eq!(context.get_state::<String>("partial").as_deref(), Some("done so far"));
        }
        other => panic!("expected StateFailed, got {other:?}"),
    }
    assert_eq!(agent.state_status("work"), Some(StateStatus::Failed));
}

#[tokio::test]
async fn a_panic_is_caught_and_reported_with_its_message() {
    let mut agent = Agent::new("panics");
    agent.add_state("boom", |_ctx: Context| async move {
        let v: Vec<u8> = Vec::new();
        if v.is_empty() {
            panic!("index {} out of range", 3);
        }
        StateResult::End
    });
    let err = agent.run().await.unwrap_err();
    match err {
        AgentError::StateFailed { state, source, .. } => {
            assert_eq!(state, "boom");
            assert!(source.to_string().contains("index 3 out of range"), "{source}");
        }
        other => panic!("expected StateFailed, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_failing_branch_stops_its_siblings() {
    let started = Arc::new(AtomicU32::new(0));
    let mut agent = Agent::new("fail_fast");
    agent.add_state("fan", |_ctx: Context| async { StateResult::parallel(["bad", "slow"]) });
    agent.add_state("bad", |_ctx: Context| async {
        // Fail only once the sibling is certainly running (pending forever).
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        Err::<StateResult, _>("bad input")
    });
    let s = started.clone();
    agent.add_state("slow", move |_ctx: Context| {
        let s = s.clone();
        async move {
            s.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<()>().await;
            StateResult::End
        }
    });
    let err = agent.run().await.unwrap_err();
    assert!(matches!(err, AgentError::StateFailed { ref state, .. } if state == "bad"));
    // `slow` was running when `bad` failed; the run could only return because it was stopped.
    assert_eq!(started.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_value_serde_cannot_encode_fails_the_state_that_wrote_it() {
    struct Unencodable;
    impl serde::Serialize for Unencodable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("no encoding for this"))
        }
    }
    let mut agent = Agent::new("bad_write");
    agent.add_state("write", |ctx: Context| async move {
        ctx.set_state("x", Unencodable);
        StateResult::End
    });
    let err = agent.run().await.unwrap_err();
    assert!(err.to_string().contains("no encoding for this"), "{err}");
}

#[tokio::test]
async fn validation_rejects_bad_definitions_before_anything_runs() {
    let ran = Arc::new(AtomicU32::new(0));
    let counting = |ran: Arc<AtomicU32>| {
        move |_ctx: Context| {
            ran.fetch_add(1, Ordering::SeqCst);
            async { StateResult::End }
        }
    };

    let empty = Agent::new("empty");
    assert!(matches!(empty.run().await, Err(AgentError::NoStates { .. })));

    let mut dup = Agent::new("dup");
    dup.add_state("a", counting(ran.clone()));
    dup.add_state("a", counting(ran.clone()));
    assert!(matches!(dup.run().await, Err(AgentError::DuplicateState { ref state, .. }) if state == "a"));

    let mut start = Agent::new("start");
    start.add_state("a", counting(ran.clone()));
    start.set_start("zz");
    assert!(matches!(start.run().await, Err(AgentError::UnknownStart { ref state, .. }) if state == "zz"));

    let mut dep = Agent::new("dep");
    dep.add_state("a", counting(ran.clone())).dependency("ghost", DependencyType::Required);
    assert!(matches!(dep.run().await, Err(AgentError::UnknownReference { ref target, .. }) if target == "ghost"));

    let mut cyc = Agent::new("cycle");
    cyc.add_state("a", counting(ran.clone())).dependency("b", DependencyType::Required);
    cyc.add_state("b", counting(ran.clone())).dependency("c", DependencyType::Sequential);
    cyc.add_state("c", counting(ran.clone())).dependency("a", DependencyType::Required);
    match cyc.run().await {
        Err(AgentError::DependencyCycle { cycle }) => {
            assert_eq!(cycle.len(), 4);
            assert_eq!(cycle.first(), cycle.last());
        }
        other => panic!("expected DependencyCycle, got {other:?}"),
    }

    let mut bad = Agent::new("bad_opt");
    bad.add_state("a", counting(ran.clone())).resources(agent_core::ResourceRequirements::new().cpu(f64::NAN));
    assert!(matches!(bad.run().await, Err(AgentError::InvalidOption { .. })));

    assert_eq!(ran.load(Ordering::SeqCst), 0, "no state may run when validation fails");
}

#[tokio::test]
async fn run_in_starts_from_a_prepared_context() {
    let mut agent = Agent::new("inputs");
    agent.add_state("double", |ctx: Context| async move {
        let x: i64 = ctx.try_get_state("x")?;
        ctx.set_state("y", x * 2);
        Ok::<_, agent_core::ContextError>(StateResult::End)
    });
    let ctx = Context::new();
    ctx.set_state("x", 21);
    let r = agent.run_in(ctx).await.unwrap();
    assert_eq!(r.context().get_state::<i64>("y"), Some(42));
}

#[tokio::test]
async fn an_agent_can_run_again_after_a_run_ends() {
    let mut agent = Agent::new("again");
    agent.add_state("a", |_ctx: Context| async { StateResult::End });
    let first = agent.run().await.unwrap();
    let second = agent.run().await.unwrap();
    assert_ne!(first.run_id(), second.run_id());
}

/// One agent runs a second run while its first is still going (it used to refuse it with
/// `AlreadyRunning`); each is its own run.
#[tokio::test(start_paused = true)]
async fn a_second_concurrent_run_runs_too() {
    let mut agent = Agent::new("busy");
    agent.add_state("wait", |_ctx: Context| async {
        tokio::time::sleep(std::time::Duration::from_secs(10)).await;
        StateResult::End
    });
    let a = agent.clone();
    let first = tokio::spawn(async move { a.run().await });
    tokio::task::yield_now().await;
    assert_eq!(agent.status(), AgentStatus::Running);
    let second = agent.run().await.unwrap();
    let first = first.await.unwrap().unwrap();
    assert_eq!((first.status(), second.status()), (AgentStatus::Completed, AgentStatus::Completed));
    assert_ne!(first.run_id(), second.run_id());
}

#[tokio::test(start_paused = true)]
async fn cancel_all_stops_a_running_run() {
    let mut agent = Agent::new("cancel");
    agent.add_state("forever", |_ctx: Context| async {
        std::future::pending::<()>().await;
        StateResult::End
    });
    let a = agent.clone();
    let run = tokio::spawn(async move { a.run().await });
    tokio::task::yield_now().await;
    agent.cancel_all().await;
    let r = run.await.unwrap().unwrap();
    assert_eq!(r.status(), AgentStatus::Cancelled);
}

#[tokio::test(start_paused = true)]
async fn max_concurrent_limits_states_running_at_once() {
    let now = Arc::new(AtomicU32::new(0));
    let peak = Arc::new(AtomicU32::new(0));
    let mut agent = Agent::new("limited").max_concurrent(2);
    agent.add_state("fan", |_ctx: Context| async { StateResult::parallel(["w0", "w1", "w2", "w3", "w4"]) });
    for i in 0..5 {
        let (now, peak) = (now.clone(), peak.clone());
        agent.add_state(format!("w{i}"), move |_ctx: Context| {
            let (now, peak) = (now.clone(), peak.clone());
            async move {
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                StateResult::End
            }
        });
    }
    let start = tokio::time::Instant::now();
    agent.run().await.unwrap();
    assert_eq!(peak.load(Ordering::SeqCst), 2);
    // Five 100 ms states two at a time take three rounds.
    assert_eq!(start.elapsed(), std::time::Duration::from_millis(300));
}

#[test]
fn an_agent_is_a_cheap_clone_send_sync_handle() {
    fn handle<T: Clone + Send + Sync + 'static>() {}
    handle::<Agent>();
    handle::<agent_runtime::AgentResult>();
    let a = Agent::new("shared");
    let b = a.clone();
    assert_eq!(a.name(), b.name());
}

async fn plain_async_fn(ctx: Context) -> StateResult {
    ctx.set_state("plain", true);
    StateResult::End
}

async fn fallible_async_fn(ctx: Context) -> Result<StateResult, std::num::ParseIntError> {
    let n: i64 = "41".parse()?;
    ctx.set_state("n", n + 1);
    Ok(StateResult::next("plain"))
}

#[tokio::test]
async fn add_state_takes_plain_async_fns() {
    let mut agent = Agent::new("fns");
    agent.add_state("fallible", fallible_async_fn);
    agent.add_state("plain", plain_async_fn);
    let r = agent.run().await.unwrap();
    assert_eq!(r.context().get_state::<i64>("n"), Some(42));
    assert_eq!(r.context().get_state::<bool>("plain"), Some(true));
}

#[tokio::test]
async fn a_closure_that_panics_before_its_future_fails_its_state() {
    let mut agent = Agent::new("sync_panic");
    agent.add_state("boom", |ctx: Context| {
        let n: u32 = ctx.get_state_or("n", 0);
        if n == 0 {
            panic!("before the future, n = {n}");
        }
        std::future::ready(StateResult::End)
    });
    match agent.run().await {
        Err(AgentError::StateFailed { state, source, .. }) => {
            assert_eq!(state, "boom");
            assert!(source.to_string().contains("before the future, n = 0"), "{source}");
        }
        other => panic!("expected StateFailed, got {other:?}"),
    }
}

#[tokio::test]
async fn a_state_alternating_between_targets_always_goes_where_it_says() {
    // The per-state cache of the last target must never send `route` to yesterday's target.
    let mut agent = Agent::new("alternate");
    agent.add_state("route", |ctx: Context| async move {
        let n: u32 = ctx.get_state_or("n", 0);
        ctx.set_state("n", n + 1);
        match n {
            0 | 2 | 3 => StateResult::next("a"),
            1 | 4 => StateResult::next("b"),
            _ => StateResult::End,
        }
    });
    for name in ["a", "b"] {
        agent.add_state(name, move |ctx: Context| async move {
            ctx.update_state_or_default("trail", |t: &mut String| t.push_str(name)).unwrap();
            StateResult::next("route")
        });
    }
    let r = agent.run().await.unwrap();
    assert_eq!(r.context().get_state::<String>("trail").as_deref(), Some("abaab"));
}

/// A state that yields gives the executor back: its sibling branch runs before it resumes
/// (the runtime must not poll a pending state again within the same wake-up).
#[tokio::test(flavor = "current_thread")]
async fn a_yielding_state_lets_its_sibling_run_before_it_resumes() {
    let mut agent = Agent::new("yield");
    agent.add_state("fork", |_ctx: Context| async { StateResult::parallel(["yielder", "sibling"]) });
    agent.add_state("yielder", |ctx: Context| async move {
        ctx.set_state("sibling_before_yield", ctx.has_state("sibling_ran"));
        tokio::task::yield_now().await;
        ctx.set_state("sibling_after_yield", ctx.has_state("sibling_ran"));
        StateResult::End
    });
    agent.add_state("sibling", |ctx: Context| async move {
        ctx.set_state("sibling_ran", true);
        StateResult::End
    });
    let result = agent.run().await.unwrap();
    assert_eq!(result.context().get_state::<bool>("sibling_before_yield"), Some(false));
    assert_eq!(result.context().get_state::<bool>("sibling_after_yield"), Some(true));
}
