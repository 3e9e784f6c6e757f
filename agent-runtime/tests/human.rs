//! Human in the loop (API.md "Human in the loop"), end to end through the public API:
//! answers from code, validators, timeouts with and without a default, parallel requests,
//! the pending list, unknown ids, and resources given back while a state waits. Everything
//! runs on a paused (virtual) clock; nothing sleeps for real.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_core::{AgentError, BoxError, Context, HumanInput, HumanInputError, ResourceRequirements, StateResult};
use agent_runtime::{Agent, AgentResult, AgentStatus, AnswerError, PendingInput, ResourcePool, StateStatus};
use tokio::time::{sleep, Instant};

mod common;
use common::*;

/// An agent whose states ask for input: the terminal is off, so only code answers.
fn agent(name: &str) -> Agent {
    Agent::new(name).input_from_terminal(false)
}

/// A state that asks `input`, stores the answer under `key`, and ends.
fn asking(
    input: HumanInput,
    key: &'static str,
) -> impl Fn(Context) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<StateResult, BoxError>> + Send>>
       + Send
       + Sync
       + 'static {
    move |ctx: Context| {
        let input = input.clone();
        Box::pin(async move {
            let answer = ctx.human_in_the_loop(input).await?;
            ctx.set_state(key, answer);
            Ok(StateResult::End)
        })
    }
}

/// Wait (in virtual time) until `n` requests are pending, and return them.
async fn pending(agent: &Agent, n: usize) -> Vec<PendingInput> {
    for _ in 0..100_000 {
        let now = agent.pending_inputs();
        if now.len() >= n {
            return now;
        }
        sleep(ms(1)).await;
    }
    panic!("never {n} pending requests: {:?}", agent.pending_inputs());
}

fn answer_of(result: &AgentResult, key: &str) -> Option<String> {
    result.context().get_state(key)
}

// ----- answers from code ---------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn an_answer_from_code_reaches_the_waiting_state() {
    let mut agent = agent("review");
    let input = HumanInput::new("Review this content (approve/reject):").timeout(secs(300));
    agent.add_state("review", asking(input, "feedback"));

    let reviewer = agent.clone();
    let answered = tokio::spawn(async move {
        let requests = pending(&reviewer, 1).await;
        assert_eq!(requests.len(), 1);
        let request = &requests[0];
        assert_eq!(request.id, "input-1");
        assert_eq!(request.prompt, "Review this content (approve/reject):");
        assert_eq!(Some(request.run_id.clone()), reviewer.run_id());
        assert_eq!(request.timeout, Some(secs(300)));
        assert_eq!(request.default, None);
        reviewer.answer(&request.id, "approve").unwrap();
        assert!(reviewer.pending_inputs().is_empty(), "answered: no longer pending");
    });

    let result = agent.run().await.unwrap();
    answered.await.unwrap();
    assert_eq!(answer_of(&result, "feedback").as_deref(), Some("approve"));
    let history = agent.input_history();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].answer.as_deref(), Some("approve"));
    assert!(!history[0].defaulted);
}

#[tokio::test(start_paused = true)]
async fn the_api_md_snippet_compiles_and_runs_in_a_state() {
    async fn review(ctx: Context) -> Result<StateResult, Box<dyn std::error::Error + Send + Sync>> {
        let feedback = ctx
            .human_in_the_loop(
                HumanInput::new("Review this content (approve/reject):").timeout(Duration::from_secs(300)),
            )
            .await?;
        let score = ctx
            .human_in_the_loop(
                HumanInput::new("Enter score (0-100):")
                    .timeout(Duration::from_secs(60))
                    .validator(|x: &str| x.parse::<u32>().is_ok_and(|n| n <= 100))
                    .default("50"),
            )
            .await?;
        ctx.set_state("feedback", feedback);
        ctx.set_state("score", score);
        Ok(StateResult::End)
    }
    let mut agent = agent("snippet");
    agent.add_state("review", review);
    let reviewer = agent.clone();
    tokio::spawn(async move {
        let first = pending(&reviewer, 1).await;
        reviewer.answer(&first[0].id, "approve").unwrap();
        // The score is left to its default.
    });
    let t0 = Instant::now();
    let result = agent.run().await.unwrap();
    assert_eq!(answer_of(&result, "feedback").as_deref(), Some("approve"));
    assert_eq!(answer_of(&result, "score").as_deref(), Some("50"));
    assert!(t0.elapsed() >= secs(60), "the default came at the timeout");
    let ids: Vec<String> = agent.input_history().into_iter().map(|r| r.request.request_id).collect();
    assert_eq!(ids, ["input-1", "input-2"], "ids count a run's requests in order");
}

// ----- validators ----------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_rejected_answer_leaves_the_request_pending_until_an_accepted_one() {
    let mut agent = agent("score");
    let input = HumanInput::new("Enter score (0-100):").validator(|x: &str| x.parse::<u32>().is_ok_and(|n| n <= 100));
    agent.add_state("score", asking(input, "score"));

    let reviewer = agent.clone();
    tokio::spawn(async move {
        let id = pending(&reviewer, 1).await[0].id.clone();
        for bad in ["abc", "101", ""] {
            match reviewer.answer(&id, bad) {
                Err(AnswerError::Rejected { id: rid, prompt, answer }) => {
                    assert_eq!(
                        (rid.as_str(), prompt.as_str(), answer.as_str()),
                        (id.as_str(), "Enter score (0-100):", bad)
                    );
                }
                other => panic!("`{bad}` should be rejected, got {other:?}"),
            }
            let still: Vec<String> = reviewer.pending_inputs().into_iter().map(|p| p.id).collect();
            assert_eq!(still, std::slice::from_ref(&id), "asked again: still pending");
            sleep(secs(1)).await;
        }
        reviewer.answer(&id, "42").unwrap();
    });

    let result = agent.run().await.unwrap();
    assert_eq!(answer_of(&result, "score").as_deref(), Some("42"));
}

#[tokio::test(start_paused = true)]
async fn a_panicking_validator_rejects_without_escaping() {
    let mut agent = agent("panicky");
    let input =
        HumanInput::new("Anything?").validator(|x: &str| if x == "boom" { panic!("validator bug") } else { true });
    agent.add_state("ask", asking(input, "answer"));
    let reviewer = agent.clone();
    tokio::spawn(async move {
        let id = pending(&reviewer, 1).await[0].id.clone();
        assert!(matches!(reviewer.answer(&id, "boom"), Err(AnswerError::Rejected { .. })));
        reviewer.answer(&id, "fine").unwrap();
    });
    let result = agent.run().await.unwrap();
    assert_eq!(answer_of(&result, "answer").as_deref(), Some("fine"));
}

// ----- timeouts ------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn the_timeout_takes_the_default_and_records_it() {
    let mut agent = agent("defaults");
    let input = HumanInput::new("Enter score (0-100):").timeout(secs(60)).default("50");
    agent.add_state("score", asking(input, "score"));

    let t0 = Instant::now();
    let result = agent.run().await.unwrap();
    assert_eq!(t0.elapsed(), secs(60));
    assert_eq!(answer_of(&result, "score").as_deref(), Some("50"));
    let history = agent.input_history();
    assert_eq!(history.len(), 1);
    let record = &history[0];
    assert_eq!((record.answer.as_deref(), record.defaulted), (Some("50"), true));
    assert_eq!(record.default.as_deref(), Some("50"));
    assert_eq!(record.timeout_ms, Some(60_000));
    assert!(agent.pending_inputs().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_answer_before_the_timeout_is_not_defaulted() {
    let mut agent = agent("in_time");
    agent.add_state("score", asking(HumanInput::new("Score?").timeout(secs(60)).default("50"), "score"));
    let reviewer = agent.clone();
    tokio::spawn(async move {
        let id = pending(&reviewer, 1).await[0].id.clone();
        sleep(secs(30)).await;
        reviewer.answer(&id, "70").unwrap();
    });
    let t0 = Instant::now();
    let result = agent.run().await.unwrap();
    assert!(t0.elapsed() < secs(60));
    assert_eq!(answer_of(&result, "score").as_deref(), Some("70"));
    assert!(!agent.input_history()[0].defaulted);
}

#[tokio::test(start_paused = true)]
async fn a_timeout_without_default_fails_the_state_with_the_error() {
    let mut agent = agent("no_default");
    agent.add_state("review", asking(HumanInput::new("Approve?").timeout(secs(10)), "verdict"));

    let t0 = Instant::now();
    let result = agent.run().await;
    assert_eq!(t0.elapsed(), secs(10));
    let Err(AgentError::StateFailed { state, source, .. }) = result else {
        panic!("expected StateFailed, got {result:?}");
    };
    assert_eq!(state, "review");
    match source.downcast_ref::<HumanInputError>() {
        Some(HumanInputError::TimedOut { prompt, after }) => {
            assert_eq!((prompt.as_str(), *after), ("Approve?", secs(10)));
        }
        other => panic!("expected HumanInputError::TimedOut, got {other:?} ({source})"),
    }
    assert_eq!(source.to_string(), "no answer to `Approve?` within 10s, and it has no default");
    assert!(agent.pending_inputs().is_empty(), "a timed-out request is not pending");
    assert_eq!(agent.answer("input-1", "yes"), Err(AnswerError::UnknownRequest { id: "input-1".into() }));
}

#[tokio::test(start_paused = true)]
async fn an_on_error_handler_sees_the_timeout() {
    let seen: Arc<Mutex<Option<String>>> = Arc::default();
    let mut agent = agent("routed");
    agent.add_state("review", asking(HumanInput::new("Approve?").timeout(secs(5)), "verdict")).on_error("escalate");
    let seen2 = seen.clone();
    agent.add_state("escalate", move |ctx: Context| {
        let seen = seen2.clone();
        async move {
            let failure = ctx.last_error().expect("the failure is there");
            let timed_out = failure.error.downcast_ref::<HumanInputError>();
            assert!(matches!(timed_out, Some(HumanInputError::TimedOut { .. })), "{}", failure.error);
            *seen.lock().unwrap() = Some(failure.state.clone());
            StateResult::End
        }
    });
    let result = agent.run().await.unwrap();
    assert_eq!(result.status(), AgentStatus::Completed);
    assert_eq!(seen.lock().unwrap().as_deref(), Some("review"));
}

// ----- parallel requests and the pending list -----------------------------------------------

#[tokio::test(start_paused = true)]
async fn parallel_branches_get_distinct_ids_and_their_own_answers() {
    let mut agent = agent("fan");
    agent.add_state("start", |_ctx: Context| async { StateResult::parallel(["left", "right"]) });
    agent.add_state("left", asking(HumanInput::new("Which side?"), "left"));
    agent.add_state("right", asking(HumanInput::new("Which side?"), "right"));

    let reviewer = agent.clone();
    let answers = tokio::spawn(async move {
        let requests = pending(&reviewer, 2).await;
        let mut ids: Vec<&str> = requests.iter().map(|r| r.id.as_str()).collect();
        ids.sort();
        assert_eq!(ids, ["input-1", "input-2"], "same prompt, two requests, two ids");
        assert!(requests.iter().all(|r| r.prompt == "Which side?"));
        // Each answer goes to the request it names, and to nobody else.
        reviewer.answer("input-1", "first").unwrap();
        let left: Vec<String> = reviewer.pending_inputs().into_iter().map(|p| p.id).collect();
        assert_eq!(left, ["input-2"], "exactly the request still waiting");
        reviewer.answer("input-2", "second").unwrap();
        assert!(reviewer.pending_inputs().is_empty());
        assert!(matches!(reviewer.answer("input-2", "again"), Err(AnswerError::UnknownRequest { .. })));
    });

    let result = agent.run().await.unwrap();
    answers.await.unwrap();
    let mut got = [answer_of(&result, "left").unwrap(), answer_of(&result, "right").unwrap()];
    got.sort();
    assert_eq!(got, ["first", "second"], "each branch got its own answer");
    // Which branch asked first decides the ids; the records say which answer went where.
    let history = agent.input_history();
    assert_eq!(history.len(), 2);
    for record in &history {
        let expected = if record.request_id == "input-1" { "first" } else { "second" };
        assert_eq!(record.answer.as_deref(), Some(expected));
    }
}

#[tokio::test(start_paused = true)]
async fn pending_inputs_lists_exactly_the_waiting_requests() {
    let mut agent = agent("three");
    agent.add_state("start", |_ctx: Context| async { StateResult::parallel(["a", "b", "c"]) });
    agent.add_state("a", asking(HumanInput::new("A?"), "a"));
    agent.add_state("b", asking(HumanInput::new("B?").timeout(secs(30)).default("b-default"), "b"));
    agent.add_state("c", asking(HumanInput::new("C?"), "c"));
    assert!(agent.pending_inputs().is_empty(), "nothing before a run");

    let reviewer = agent.clone();
    tokio::spawn(async move {
        let requests = pending(&reviewer, 3).await;
        let mut prompts: Vec<&str> = requests.iter().map(|r| r.prompt.as_str()).collect();
        prompts.sort();
        assert_eq!(prompts, ["A?", "B?", "C?"]);
        let ids: Vec<&str> = requests.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["input-1", "input-2", "input-3"], "listed in request order");
        let b = requests.iter().find(|r| r.prompt == "B?").unwrap();
        assert_eq!((b.timeout, b.default.as_deref()), (Some(secs(30)), Some("b-default")));

        let a = requests.iter().find(|r| r.prompt == "A?").unwrap().id.clone();
        reviewer.answer(&a, "yes").unwrap();
        // B is left to its default at 30 s.
        sleep(secs(31)).await;
        let left: Vec<String> = reviewer.pending_inputs().into_iter().map(|p| p.prompt).collect();
        assert_eq!(left, ["C?"], "A answered, B defaulted");
        let c = reviewer.pending_inputs()[0].id.clone();
        reviewer.answer(&c, "sure").unwrap();
    });

    let result = agent.run().await.unwrap();
    assert!(agent.pending_inputs().is_empty());
    assert_eq!(answer_of(&result, "a").as_deref(), Some("yes"));
    assert_eq!(answer_of(&result, "b").as_deref(), Some("b-default"));
    assert_eq!(answer_of(&result, "c").as_deref(), Some("sure"));
}

#[tokio::test(start_paused = true)]
async fn answering_an_unknown_id_is_an_error() {
    let agent = agent("nobody");
    let err = agent.answer("input-1", "hello").unwrap_err();
    assert_eq!(err, AnswerError::UnknownRequest { id: "input-1".into() });
    assert_eq!(err.to_string(), "no pending request for human input has the id `input-1`");

    let mut agent = self::agent("someone");
    agent.add_state("ask", asking(HumanInput::new("Name?"), "name"));
    let reviewer = agent.clone();
    tokio::spawn(async move {
        pending(&reviewer, 1).await;
        assert!(matches!(reviewer.answer("input-7", "x"), Err(AnswerError::UnknownRequest { .. })));
        assert!(matches!(reviewer.answer("nonsense", "x"), Err(AnswerError::UnknownRequest { .. })));
        reviewer.answer("input-1", "Ada").unwrap();
    });
    let result = agent.run().await.unwrap();
    assert_eq!(answer_of(&result, "name").as_deref(), Some("Ada"));
}

#[tokio::test(start_paused = true)]
async fn outside_a_run_nobody_can_answer() {
    let err = Context::new().human_in_the_loop(HumanInput::new("Hello?")).await.unwrap_err();
    assert!(matches!(err, HumanInputError::NoProvider { ref prompt } if prompt == "Hello?"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_state_timeout_withdraws_its_request() {
    let mut agent = agent("impatient");
    agent.add_state("ask", asking(HumanInput::new("Quick?"), "answer")).timeout(secs(5));
    let watcher = agent.clone();
    let seen = tokio::spawn(async move { pending(&watcher, 1).await.len() });
    let result = agent.run().await;
    assert!(matches!(result, Err(AgentError::StateFailed { .. })), "{result:?}");
    assert_eq!(seen.await.unwrap(), 1, "it was pending while the state waited");
    assert!(agent.pending_inputs().is_empty(), "withdrawn with the state's future");
}

#[tokio::test(start_paused = true)]
async fn each_run_numbers_its_requests_from_one() {
    let mut agent = agent("again");
    agent.add_state("ask", asking(HumanInput::new("Again?").timeout(secs(1)).default("d"), "answer"));
    agent.run().await.unwrap();
    let first_run = agent.run_id();
    agent.run().await.unwrap();
    assert_ne!(agent.run_id(), first_run);
    let history = agent.input_history();
    assert_eq!(history.len(), 1, "the history is the last run's");
    assert_eq!(history[0].request_id, "input-1");
    assert_eq!(Some(history[0].run_id.clone()), agent.run_id());
}

// ----- resources -----------------------------------------------------------------------------

fn one_cpu_pool() -> ResourcePool {
    ResourcePool::builder().total_cpu(1.0).total_memory_mb(1024.0).build()
}

/// An agent on `pool` whose one state takes the pool's cpu for `d`.
fn busy(pool: &ResourcePool, d: Duration, log: &Arc<Mutex<Vec<&'static str>>>) -> Agent {
    let mut agent = agent("busy").with_resource_pool(pool.clone());
    let log = log.clone();
    agent
        .add_state("b", move |_ctx: Context| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push("b runs");
                sleep(d).await;
                log.lock().unwrap().push("b done");
                StateResult::End
            }
        })
        .resources(ResourceRequirements::new().cpu(1.0));
    agent
}

#[tokio::test(start_paused = true)]
async fn a_state_waiting_for_input_holds_no_resources() {
    let pool = one_cpu_pool();
    let log: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    let mut waiting = agent("waiting").with_resource_pool(pool.clone());
    let (a_log, a_pool) = (log.clone(), pool.clone());
    waiting
        .add_state("a", move |ctx: Context| {
            let (log, pool) = (a_log.clone(), a_pool.clone());
            async move {
                log.lock().unwrap().push("a holds the cpu");
                let answer = ctx.human_in_the_loop(HumanInput::new("Go on?")).await?;
                // Taken back before the answer arrives.
                let held: Vec<String> = pool.state_allocations().into_iter().map(|s| s.state).collect();
                assert_eq!(held, ["a"], "a holds the cpu again");
                log.lock().unwrap().push("a answered");
                ctx.set_state("a", answer);
                Ok::<_, BoxError>(StateResult::End)
            }
        })
        .resources(ResourceRequirements::new().cpu(1.0));

    let run = tokio::spawn({
        let waiting = waiting.clone();
        async move { waiting.run().await }
    });
    let id = pending(&waiting, 1).await[0].id.clone();
    assert!(pool.state_allocations().is_empty(), "a holds nothing while it waits: {:?}", pool.state_allocations());
    // Another agent's state needs the only cpu: it runs and completes while a waits.
    let t0 = Instant::now();
    busy(&pool, secs(2), &log).run().await.unwrap();
    assert_eq!(t0.elapsed(), secs(2), "b did not wait for the cpu");
    assert_eq!(waiting.state_status("a"), Some(StateStatus::Running), "a still waits for its answer");
    waiting.answer(&id, "yes").unwrap();

    let result = run.await.unwrap().unwrap();
    assert_eq!(answer_of(&result, "a").as_deref(), Some("yes"));
    assert_eq!(*log.lock().unwrap(), ["a holds the cpu", "b runs", "b done", "a answered"]);
    let stats = pool.usage_stats()[agent_core::ResourceType::Cpu];
    assert_eq!(stats.peak_usage, 1.0, "never more than the one cpu");
    assert_eq!(stats.current_usage, 0.0);
    assert!(pool.state_allocations().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_answered_state_waits_in_the_queue_for_its_resources() {
    let pool = one_cpu_pool();
    let log: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    let mut waiting = agent("waiting").with_resource_pool(pool.clone());
    let a_log = log.clone();
    waiting
        .add_state("a", move |ctx: Context| {
            let log = a_log.clone();
            async move {
                let answer = ctx.human_in_the_loop(HumanInput::new("Go?")).await?;
                log.lock().unwrap().push("a goes on");
                ctx.set_state("a", answer);
                Ok::<_, BoxError>(StateResult::End)
            }
        })
        .resources(ResourceRequirements::new().cpu(1.0));
    let run = tokio::spawn({
        let waiting = waiting.clone();
        async move { waiting.run().await }
    });
    let id = pending(&waiting, 1).await[0].id.clone();

    let t0 = Instant::now();
    let busy = busy(&pool, secs(10), &log);
    let other = tokio::spawn(async move { busy.run().await });
    sleep(secs(1)).await; // b holds the cpu, until 10 s
    waiting.answer(&id, "go").unwrap();
    let result = run.await.unwrap().unwrap();
    assert_eq!(t0.elapsed(), secs(10), "a could not go on before b gave the cpu back");
    other.await.unwrap().unwrap();
    assert_eq!(answer_of(&result, "a").as_deref(), Some("go"));
    assert_eq!(*log.lock().unwrap(), ["b runs", "b done", "a goes on"]);
    let stats = pool.usage_stats()[agent_core::ResourceType::Cpu];
    assert_eq!(stats.peak_usage, 1.0);
    assert!(stats.waits >= 1, "a waited in the pool's queue: {stats:?}");
}

#[tokio::test(start_paused = true)]
async fn a_re_acquired_allocation_can_still_be_preempted() {
    let pool = ResourcePool::builder().total_cpu(1.0).total_memory_mb(1024.0).enable_preemption(true).build();
    let mut low = agent("low").with_resource_pool(pool.clone());
    low.add_state("a", |ctx: Context| async move {
        let answer = ctx.human_in_the_loop(HumanInput::new("Go?")).await?;
        sleep(secs(100)).await; // holding the cpu it took back
        ctx.set_state("a", answer);
        Ok::<_, BoxError>(StateResult::End)
    })
    .resources(ResourceRequirements::new().cpu(1.0))
    .priority(agent_core::Priority::Low)
    .preemptible();
    let mut high = agent("high").with_resource_pool(pool.clone());
    high.add_state("b", |_ctx: Context| async {
        sleep(secs(1)).await;
        StateResult::End
    })
    .resources(ResourceRequirements::new().cpu(1.0))
    .priority(agent_core::Priority::High);

    let run = tokio::spawn({
        let low = low.clone();
        async move { low.run().await }
    });
    let id = pending(&low, 1).await[0].id.clone();
    low.answer(&id, "first").unwrap();
    sleep(secs(1)).await; // a holds the cpu again, for 100 s
    assert_eq!(pool.state_allocations().len(), 1);

    let t0 = Instant::now();
    high.run().await.unwrap();
    assert_eq!(t0.elapsed(), secs(1), "b preempted a instead of waiting 100 s");
    // a starts over, and asks again.
    let id = pending(&low, 1).await[0].id.clone();
    assert_eq!(id, "input-2");
    low.answer(&id, "second").unwrap();
    let result = run.await.unwrap().unwrap();
    assert_eq!(answer_of(&result, "a").as_deref(), Some("second"));
    assert_eq!(pool.usage_stats().preempted().get("a"), Some(&1));
}

/// A request for human input knows the state that asked: its record in a checkpoint, its
/// `WaitingForInput` event and the agent's picture name it, for a plain state and for one
/// with options (run through its attempt loop).
#[tokio::test(start_paused = true)]
async fn a_request_for_input_names_the_state_that_asked() {
    for guarded in [false, true] {
        let mut agent = Agent::new("asks");
        agent.add_state("prepare", |_ctx: Context| async { StateResult::parallel(["quiet", "review"]) });
        agent.add_state("quiet", |_ctx: Context| async {
            sleep(Duration::from_secs(1)).await;
            StateResult::End
        });
        let review = agent.add_state("review", |ctx: Context| async move {
            sleep(Duration::from_millis(10)).await;
            let answer = ctx.human_in_the_loop(HumanInput::new("approve?")).await.unwrap();
            ctx.set_state("answer", answer);
            StateResult::End
        });
        if guarded {
            review.retry_policy(agent_core::RetryPolicy::new().max_retries(1));
        }
        let mut events = agent.events();
        let run = spawn_run(&agent);
        while agent.pending_inputs().is_empty() {
            sleep(Duration::from_millis(5)).await;
        }
        let checkpoint = agent.create_checkpoint();
        assert_eq!(checkpoint.pending_inputs[0].state.as_deref(), Some("review"), "guarded: {guarded}");
        let asked = loop {
            match events.next().await.unwrap().kind {
                agent_runtime::EventKind::WaitingForInput { state, .. } => break state,
                _ => continue,
            }
        };
        assert_eq!(asked.as_deref(), Some("review"));
        assert!(agent.diagram().to_mermaid().contains("asked a person"), "{}", agent.diagram().to_mermaid());
        let id = agent.pending_inputs()[0].id.clone();
        agent.answer(&id, "yes").unwrap();
        let result = run.await.unwrap().unwrap();
        assert_eq!(result.context().get_state::<String>("answer").as_deref(), Some("yes"));
    }
}

/// Two parallel branches of a durable run asking at once get distinct ids in the store, and
/// answers given through the store (as another process gives them), the later request
/// first, each reach the branch that asked (LangGraph's parallel interrupts once shared an
/// id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_requests_of_a_durable_run_are_answered_through_the_store_in_either_order() {
    use agent_runtime::store::{CheckpointStore, MemoryStore};
    let store = Arc::new(MemoryStore::new());
    let mut agent = agent("fan-durable").with_store(store.clone());
    agent.add_state("start", |_ctx: Context| async { StateResult::parallel(["left", "right"]) });
    agent.add_state("left", asking(HumanInput::new("Left?"), "left"));
    agent.add_state("right", asking(HumanInput::new("Right?"), "right"));
    let handle = agent.start(agent_runtime::RunOptions::new()).unwrap();
    let id = handle.id().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let asked = loop {
        let asked = store.inputs(Some(&id), true).await.unwrap();
        if asked.len() == 2 {
            break asked;
        }
        assert!(std::time::Instant::now() < deadline, "never two requests: {asked:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let mut ids: Vec<&str> = asked.iter().map(|r| r.request_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 2, "distinct ids: {asked:?}");
    // The newer request first, each answered with its own prompt's side.
    let mut by_newest = asked.clone();
    by_newest.sort_by(|a, b| b.request_id.cmp(&a.request_id));
    for r in &by_newest {
        let side = if r.prompt == "Left?" { "L" } else { "R" };
        assert!(store.answer_input(&id, &r.request_id, side, false, 1).await.unwrap());
    }
    let result = tokio::time::timeout(Duration::from_secs(20), handle).await.unwrap().unwrap();
    assert_eq!((answer_of(&result, "left").as_deref(), answer_of(&result, "right").as_deref()), (Some("L"), Some("R")));
}
