//! API.md "Monitoring and control": `agent.events()`, a stream of typed events, one per state
//! change, for any number of consumers, never blocking the run.

use std::time::Duration;

use agent_core::{AgentStatus, Context, RetryPolicy, StateResult};
use agent_runtime::{Agent, Event, EventKind, EventStream};

/// Every event up to and including the run's `RunFinished`.
async fn until_finished(events: &mut EventStream) -> Vec<Event> {
    let mut seen = Vec::new();
    while let Some(event) = events.next().await {
        let done = matches!(event.kind, EventKind::RunFinished { .. });
        seen.push(event);
        if done {
            return seen;
        }
    }
    panic!("the stream ended before the run finished");
}

fn chain(n: usize) -> Agent {
    let mut agent = Agent::new("chain");
    for i in 0..n {
        let next = (i + 1 < n).then(|| format!("s{}", i + 1));
        agent.add_state(format!("s{i}"), move |_ctx: Context| {
            let next = next.clone();
            async move {
                match next {
                    Some(n) => StateResult::next(n),
                    None => StateResult::End,
                }
            }
        });
    }
    agent
}

/// A short label of an event, for comparing sequences.
fn label(kind: &EventKind) -> String {
    match kind {
        EventKind::RunStarted => "run started".into(),
        EventKind::StateStarted { state, attempt } => format!("{state} started {attempt}"),
        EventKind::StateCompleted { state, .. } => format!("{state} completed"),
        EventKind::StateFailed { state, attempt, .. } => format!("{state} failed {attempt}"),
        EventKind::Retrying { state, attempt, delay } => format!("{state} retrying {attempt} after {delay:?}"),
        EventKind::TimedOut { state } => format!("{state} timed out"),
        EventKind::StateCancelled { state } => format!("{state} cancelled"),
        EventKind::RunFinished { status } => format!("run finished {status:?}"),
        other => format!("{other:?}"),
    }
}

#[tokio::test]
async fn several_consumers_see_a_chain_in_order() {
    let agent = chain(3);
    let mut first = agent.events();
    let mut second = agent.events();
    let result = agent.run().await.unwrap();
    let a = until_finished(&mut first).await;
    let b = until_finished(&mut second).await;
    assert_eq!(a, b, "both consumers see the same events");
    let labels: Vec<String> = a.iter().map(|e| label(&e.kind)).collect();
    assert_eq!(
        labels,
        [
            "run started",
            "s0 started 1",
            "s0 completed",
            "s1 started 1",
            "s1 completed",
            "s2 started 1",
            "s2 completed",
            "run finished Completed"
        ]
    );
    assert!(a.iter().all(|e| &*e.run_id == result.run_id()), "every event carries the run id");
    assert!(a.windows(2).all(|w| w[0].at <= w[1].at), "timestamps never go back");
    // Timings are off: completions carry no duration.
    assert!(a.iter().all(|e| !matches!(e.kind, EventKind::StateCompleted { duration: Some(_), .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_reports_each_branch() {
    let mut agent = Agent::new("fan");
    agent.add_state("split", |_ctx: Context| async { StateResult::parallel(["a", "b", "c"]) });
    for s in ["a", "b", "c"] {
        agent.add_state(s, |_ctx: Context| async { StateResult::next("merge") });
    }
    agent.add_state("merge", |_ctx: Context| async { StateResult::End }).join();
    let mut events = agent.events();
    agent.run().await.unwrap();
    let seen = until_finished(&mut events).await;
    let count = |want: &str| seen.iter().filter(|e| label(&e.kind) == want).count();
    for s in ["split", "a", "b", "c", "merge"] {
        assert_eq!(count(&format!("{s} started 1")), 1, "{s} started once");
        assert_eq!(count(&format!("{s} completed")), 1, "{s} completed once");
    }
    // Each branch starts before it completes; the join comes after every branch.
    let at = |want: &str| seen.iter().position(|e| label(&e.kind) == want).unwrap();
    for s in ["a", "b", "c"] {
        assert!(at(&format!("{s} started 1")) < at(&format!("{s} completed")));
        assert!(at(&format!("{s} completed")) < at("merge started 1"));
    }
}

#[tokio::test]
async fn a_consumer_that_never_reads_does_not_block_and_later_sees_lagged() {
    let agent = chain(10_000);
    let mut idle = agent.events();
    let result = agent.run().await.unwrap();
    assert_eq!(result.status(), AgentStatus::Completed);
    // 20,002 events were sent; the stream kept the newest `CAPACITY`.
    let first = idle.next().await.unwrap();
    let EventKind::Lagged { missed } = first.kind else { panic!("expected Lagged, got {first:?}") };
    assert_eq!(missed, 20_002 - agent_runtime::events::CAPACITY as u64);
    // Then it goes on with what it kept, to the end of the run.
    let rest = until_finished(&mut idle).await;
    assert_eq!(rest.len(), agent_runtime::events::CAPACITY);
    assert_eq!(label(&rest[rest.len() - 2].kind), "s9999 completed");
}

#[tokio::test(start_paused = true)]
async fn retries_and_timeouts_have_events() {
    let mut agent = Agent::new("flaky");
    agent
        .add_state("slow", |_ctx: Context| async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            StateResult::End
        })
        .timeout(Duration::from_secs(1))
        .retry_policy(RetryPolicy::new().max_retries(1).initial_delay(Duration::from_secs(2)).jitter(false));
    let mut events = agent.events();
    assert!(agent.run().await.is_err());
    let labels: Vec<String> = until_finished(&mut events).await.iter().map(|e| label(&e.kind)).collect();
    assert_eq!(
        labels,
        [
            "run started",
            "slow started 1",
            "slow timed out",
            "slow failed 1",
            "slow retrying 2 after 2s",
            "slow started 2",
            "slow timed out",
            "slow failed 2",
            "run finished Failed"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn cancelled_states_and_failures_have_events() {
    let mut agent = Agent::new("cancel");
    agent.add_state("wait", |_ctx: Context| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        StateResult::End
    });
    let mut events = agent.events();
    let control = agent.clone();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        control.cancel_state("wait");
    });
    agent.run().await.unwrap();
    canceller.await.unwrap();
    let labels: Vec<String> = until_finished(&mut events).await.iter().map(|e| label(&e.kind)).collect();
    assert_eq!(labels, ["run started", "wait started 1", "wait cancelled", "run finished Completed"]);

    let mut agent = Agent::new("broken");
    agent.add_state("boom", |_ctx: Context| async { Err::<StateResult, _>("no disk") });
    let mut events = agent.events();
    assert!(agent.run().await.is_err());
    let seen = until_finished(&mut events).await;
    assert!(seen.iter().any(|e| matches!(&e.kind,
        EventKind::StateFailed { state, attempt: 1, error } if state == "boom" && error == "no disk")));
}

#[tokio::test]
async fn a_stream_ends_with_the_agent_and_unsubscribes_when_dropped() {
    let agent = chain(2);
    let mut events = agent.events();
    let dropped = agent.events();
    drop(dropped);
    let result = agent.run().await.unwrap();
    assert_eq!(until_finished(&mut events).await.len(), 6);
    drop(result);
    drop(agent);
    assert!(events.next().await.is_none(), "the stream ends once the agent and its results are gone");
    assert!(events.next().await.is_none());
}

#[tokio::test]
async fn event_stream_is_a_stream() {
    use futures_util::StreamExt;
    let agent = chain(2);
    let events = agent.events();
    agent.run().await.unwrap();
    drop(agent);
    let kinds: Vec<EventKind> = events.map(|e| e.kind).collect().await;
    assert_eq!(kinds.len(), 6);
}

#[tokio::test(start_paused = true)]
async fn timed_runs_report_durations_on_completion() {
    let mut agent = Agent::new("timed").record_timings(true);
    agent.add_state("work", |_ctx: Context| async {
        tokio::time::sleep(Duration::from_millis(30)).await;
        StateResult::End
    });
    let mut events = agent.events();
    agent.run().await.unwrap();
    let seen = until_finished(&mut events).await;
    assert!(seen.iter().any(|e| matches!(&e.kind,
        EventKind::StateCompleted { state, duration: Some(d) } if state == "work" && *d == Duration::from_millis(30))));
}

#[tokio::test(start_paused = true)]
async fn human_input_has_events_when_asked_answered_and_defaulted() {
    use agent_core::{BoxError, HumanInput};
    let mut agent = Agent::new("ask").input_from_terminal(false);
    agent.add_state("review", |ctx: Context| async move {
        let verdict = ctx.human_in_the_loop(HumanInput::new("approve?")).await?;
        let score =
            ctx.human_in_the_loop(HumanInput::new("score?").timeout(Duration::from_secs(5)).default("50")).await?;
        ctx.set_state("answers", (verdict, score));
        Ok::<_, BoxError>(StateResult::End)
    });
    let mut events = agent.events();
    let answerer = agent.clone();
    let run = tokio::spawn(async move { answerer.run().await });
    let mut seen = Vec::new();
    while let Some(event) = events.next().await {
        if let EventKind::WaitingForInput { request_id, .. } = &event.kind {
            if request_id == "input-1" {
                agent.answer("input-1", "yes").unwrap();
            }
        }
        let done = matches!(event.kind, EventKind::RunFinished { .. });
        seen.push(event.kind);
        if done {
            break;
        }
    }
    let result = run.await.unwrap().unwrap();
    assert_eq!(result.context().get_state::<(String, String)>("answers"), Some(("yes".into(), "50".into())));
    // The metrics count the wait: the first answer came at once, the second defaulted at 5 s.
    assert_eq!(result.metrics().input_wait, Duration::from_secs(5));
    let inputs: Vec<&EventKind> = seen
        .iter()
        .filter(|k| matches!(k, EventKind::WaitingForInput { .. } | EventKind::InputAnswered { .. }))
        .collect();
    assert_eq!(
        inputs,
        [
            &EventKind::WaitingForInput { state: Some("review".into()), request_id: "input-1".into() },
            &EventKind::InputAnswered { request_id: "input-1".into(), defaulted: false },
            &EventKind::WaitingForInput { state: Some("review".into()), request_id: "input-2".into() },
            &EventKind::InputAnswered { request_id: "input-2".into(), defaulted: true },
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn resource_waits_and_preemption_have_events() {
    use agent_core::{Priority, ResourceRequirements};
    use agent_runtime::ResourcePool;
    let pool = ResourcePool::builder().total_cpu(1.0).enable_preemption(true).build();
    let mut background = Agent::new("background").with_resource_pool(pool.clone());
    background
        .add_state("low", |_ctx: Context| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            StateResult::End
        })
        .resources(ResourceRequirements::new().cpu(1.0))
        .priority(Priority::Low)
        .preemptible();
    let mut events = background.events();
    let run = tokio::spawn(async move { background.run().await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut urgent = Agent::new("urgent").with_resource_pool(pool);
    urgent
        .add_state("now", |_ctx: Context| async { StateResult::End })
        .resources(ResourceRequirements::new().cpu(1.0))
        .priority(Priority::Critical);
    urgent.run().await.unwrap();
    run.await.unwrap().unwrap();
    let labels: Vec<String> = until_finished(&mut events).await.iter().map(|e| label(&e.kind)).collect();
    assert_eq!(
        labels,
        [
            "run started",
            "WaitingForResources { state: \"low\" }",
            "low started 1",
            "Preempted { state: \"low\" }",
            "WaitingForResources { state: \"low\" }",
            "low started 1",
            "low completed",
            "run finished Completed"
        ]
    );
}

/// The kinds of every event of `stream` up to its run's end.
async fn kinds_until_finished(stream: &mut EventStream) -> Vec<EventKind> {
    until_finished(stream).await.into_iter().map(|e| e.kind).collect()
}

/// Values a state emits reach the streams asking for custom values, in order, named by
/// their state; a stream of states only never sees them; emitting with nobody listening
/// costs nothing and changes nothing.
#[tokio::test]
async fn emitted_values_reach_custom_streams_in_order() {
    use agent_runtime::StreamMode;
    let mut agent = Agent::new("emitting");
    agent.add_state("write", |ctx: Context| async move {
        for token in ["Hel", "lo", ", ", "world"] {
            ctx.emit(token);
            tokio::task::yield_now().await;
        }
        ctx.emit(serde_json::json!({ "progress": 1.0 }));
        StateResult::next("done")
    });
    agent.add_state("done", |_ctx: Context| async { StateResult::End });
    agent.run().await.unwrap(); // nobody follows: the emits are no-ops

    let mut custom = agent.stream(StreamMode::CUSTOM);
    let mut states = agent.stream(StreamMode::STATES);
    let mut all = agent.stream(StreamMode::ALL);
    agent.run().await.unwrap();
    let custom = kinds_until_finished(&mut custom).await;
    let emitted: Vec<(Option<String>, serde_json::Value)> = custom
        .iter()
        .filter_map(|k| match k {
            EventKind::Emitted { state, value } => Some((state.clone(), value.clone())),
            _ => None,
        })
        .collect();
    let texts: String = emitted.iter().filter_map(|(_, v)| v.as_str()).collect();
    assert_eq!(texts, "Hello, world");
    assert_eq!(emitted.last().unwrap().1, serde_json::json!({ "progress": 1.0 }));
    assert!(emitted.iter().all(|(s, _)| s.as_deref() == Some("write")), "{emitted:?}");
    assert!(
        custom
            .iter()
            .all(|k| matches!(k, EventKind::Emitted { .. } | EventKind::RunStarted | EventKind::RunFinished { .. })),
        "{custom:?}"
    );
    let states = kinds_until_finished(&mut states).await;
    assert!(!states.iter().any(|k| matches!(k, EventKind::Emitted { .. })), "{states:?}");
    assert!(states.iter().any(|k| matches!(k, EventKind::StateCompleted { state, .. } if state == "write")));
    let all = kinds_until_finished(&mut all).await;
    let emitted = all.iter().filter(|k| matches!(k, EventKind::Emitted { .. })).count();
    assert_eq!(emitted, 5, "ALL gives the custom values: {all:?}");
    assert!(all.iter().any(|k| matches!(k, EventKind::StateStarted { .. })), "and the states: {all:?}");
}

/// A durable run's followers see each commit and the context keys it wrote, with their
/// values; the commits are the run's history, in order.
#[tokio::test]
async fn a_durable_run_streams_its_commits_and_context_changes() {
    use agent_runtime::store::{history, MemoryStore};
    use agent_runtime::StreamMode;
    let store = std::sync::Arc::new(MemoryStore::new());
    let mut agent = Agent::new("committing").with_store(store.clone());
    agent.add_state("a", |ctx: Context| async move {
        ctx.set_state("n", 1);
        ctx.set_state("scratch", "x");
        StateResult::next("b")
    });
    agent.add_state("b", |ctx: Context| async move {
        ctx.update_state("n", |n: &mut i32| *n += 41).unwrap();
        ctx.remove_state("scratch");
        StateResult::End
    });
    let mut stream = agent.stream(StreamMode::CONTEXT | StreamMode::CHECKPOINTS);
    let result = agent.run().await.unwrap();
    let kinds = kinds_until_finished(&mut stream).await;
    let changes: Vec<(String, Option<serde_json::Value>)> = kinds
        .iter()
        .filter_map(|k| match k {
            EventKind::ContextChanged { key, value } => Some((key.clone(), value.clone())),
            _ => None,
        })
        .collect();
    assert!(changes.contains(&("n".into(), Some(serde_json::json!(1)))), "{changes:?}");
    assert!(changes.contains(&("n".into(), Some(serde_json::json!(42)))), "{changes:?}");
    assert!(changes.contains(&("scratch".into(), None)), "removed: {changes:?}");
    let seqs: Vec<u64> = kinds
        .iter()
        .filter_map(|k| match k {
            EventKind::Committed { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect();
    let recorded: Vec<u64> = history(&*store, result.run_id()).await.unwrap().iter().map(|c| c.seq).collect();
    assert_eq!(seqs, recorded, "each commit of the history, in order");
    assert!(!kinds.iter().any(|k| matches!(k, EventKind::StateStarted { .. })), "no states in this mode");
}

/// A plain run followed from its start tells of each context key written as each state
/// ends, with its value (`None` when removed).
#[tokio::test]
async fn a_plain_run_streams_its_context_changes_as_states_end() {
    use agent_runtime::StreamMode;
    let mut agent = Agent::new("plain-context");
    agent.add_state("a", |ctx: Context| async move {
        ctx.set_state("n", 1);
        ctx.set_state("scratch", true);
        StateResult::next("b")
    });
    agent.add_state("b", |ctx: Context| async move {
        ctx.update_state("n", |n: &mut i32| *n += 1).unwrap();
        ctx.remove_state("scratch");
        StateResult::End
    });
    let mut stream = agent.stream(StreamMode::CONTEXT);
    agent.run().await.unwrap();
    let changes: Vec<(String, Option<serde_json::Value>)> = kinds_until_finished(&mut stream)
        .await
        .into_iter()
        .filter_map(|k| match k {
            EventKind::ContextChanged { key, value } => Some((key, value)),
            _ => None,
        })
        .collect();
    let n: Vec<&Option<serde_json::Value>> = changes.iter().filter(|(k, _)| k == "n").map(|(_, v)| v).collect();
    assert_eq!(n, [&Some(serde_json::json!(1)), &Some(serde_json::json!(2))], "{changes:?}");
    assert!(changes.contains(&("scratch".into(), None)), "{changes:?}");
}
