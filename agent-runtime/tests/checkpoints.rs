//! Checkpoints taken mid-run, restored into a fresh agent; pause and resume.
//!
//! Every state appends its name to the context's `trail`, which the checkpoint carries: a
//! run that goes on from a checkpoint must end with each state in the trail exactly as
//! often as an uninterrupted run has it (PuffinFlow's restore starts again from scratch).

use std::time::Duration;

use agent_core::{AgentError, Checkpoint, CheckpointError, Context, StateResult};
use agent_runtime::{Agent, AgentStatus};

mod common;
use common::{spawn_run, step, trail, visit};

fn chain() -> Agent {
    let mut agent = Agent::new("chain");
    agent.add_state("a", step("a", 0, "b".into()));
    agent.add_state("b", step("b", 100, "c".into()));
    agent.add_state("c", step("c", 100, "d".into()));
    agent.add_state("d", step("d", 0, StateResult::End));
    agent
}

/// `retries` retries, 10 s apart (no backoff, no jitter).
fn every_ten_seconds(retries: u32) -> agent_core::RetryPolicy {
    agent_core::RetryPolicy {
        max_retries: retries,
        initial_delay: Duration::from_secs(10),
        max_delay: Duration::from_secs(10),
        exponential_base: 1.0,
        jitter: false,
    }
}

/// Let the run spawned before go on for `ms` of virtual time.
async fn after(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// The checkpoint, through its JSON form (as a file or a store would keep it).
fn through_json(c: Checkpoint) -> Checkpoint {
    Checkpoint::from_json(&c.to_json().unwrap()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_mid_run_checkpoint_goes_on_without_running_completed_states_again() {
    let agent = chain();
    let running = spawn_run(&agent);
    after(50).await;
    let checkpoint = through_json(agent.create_checkpoint());
    assert_eq!(checkpoint.agent_status, AgentStatus::Running);
    assert_eq!(checkpoint.completed_states, ["a"]);
    assert_eq!(checkpoint.running_states(), ["b"]);
    assert_eq!(checkpoint.run_id, agent.run_id().unwrap());
    running.await.unwrap().unwrap();

    let restored = chain();
    restored.restore_from_checkpoint(checkpoint.clone()).unwrap();
    let result = restored.run().await.unwrap();
    assert_eq!(trail(result.context()), ["a", "b", "c", "d"]);
    assert_eq!(result.completed_states(), ["a", "b", "c", "d"]);
    assert_eq!(restored.run_id(), Some(checkpoint.run_id.clone()), "the run keeps its id");
    let a = restored.metrics().states.into_iter().find(|s| s.name == "a").unwrap();
    assert_eq!(a.completed, 1, "a ran once, in the first process, and its count is restored");
}

fn fan() -> Agent {
    let mut agent = Agent::new("fan");
    agent.add_state("start", step("start", 0, StateResult::parallel(["x", "y", "z"])));
    agent.add_state("x", step("x", 10, "join".into()));
    agent.add_state("y", step("y", 20, "join".into()));
    agent.add_state("z", step("z", 100, "join".into()));
    agent.add_state("join", |ctx: Context| async move {
        let t = trail(&ctx);
        assert!(["x", "y", "z"].iter().all(|b| t.iter().any(|s| s == b)), "join ran early: {t:?}");
        visit(&ctx, "join");
        StateResult::End
    });
    agent
}

#[tokio::test(start_paused = true)]
async fn fan_in_progress_is_kept_across_a_restore() {
    let agent = fan();
    let running = spawn_run(&agent);
    after(50).await;
    let checkpoint = through_json(agent.create_checkpoint());
    assert_eq!(checkpoint.groups.len(), 1);
    assert_eq!(checkpoint.groups[0].origin, "start");
    assert_eq!(checkpoint.groups[0].waiting, [("join".to_owned(), 2)]);
    assert_eq!(checkpoint.running_states(), ["z"]);
    assert_eq!(checkpoint.tokens[0].group, Some(0));
    running.await.unwrap().unwrap();

    let restored = fan();
    restored.restore_from_checkpoint(checkpoint).unwrap();
    let result = restored.run().await.unwrap();
    let mut t = trail(result.context());
    assert_eq!(t.pop().as_deref(), Some("join"), "the join runs last, once");
    t.sort();
    assert_eq!(t, ["start", "x", "y", "z"], "every branch ran exactly once across both processes");
}

fn nested() -> Agent {
    let mut agent = Agent::new("nested");
    agent.add_state("start", step("start", 0, StateResult::parallel(["p", "q"])));
    agent.add_state("p", step("p", 0, StateResult::parallel(["p1", "p2"])));
    agent.add_state("p1", step("p1", 10, "inner".into()));
    agent.add_state("p2", step("p2", 80, "inner".into()));
    agent.add_state("inner", step("inner", 0, "outer".into())).join();
    agent.add_state("q", step("q", 30, "outer".into()));
    agent.add_state("outer", step("outer", 0, StateResult::End)).join();
    agent
}

#[tokio::test(start_paused = true)]
async fn nested_groups_are_rebuilt_and_join_inside_out() {
    let agent = nested();
    let running = spawn_run(&agent);
    after(50).await;
    let checkpoint = through_json(agent.create_checkpoint());
    // Outer group: q waits at `outer`; inner group (opened by p): p1 waits at `inner`.
    assert_eq!(checkpoint.groups.len(), 2);
    assert_eq!((checkpoint.groups[0].parent, checkpoint.groups[0].origin.as_str()), (None, "start"));
    assert_eq!(checkpoint.groups[0].waiting, [("outer".to_owned(), 1)]);
    assert_eq!((checkpoint.groups[1].parent, checkpoint.groups[1].origin.as_str()), (Some(0), "p"));
    assert_eq!(checkpoint.groups[1].waiting, [("inner".to_owned(), 1)]);
    assert_eq!(checkpoint.running_states(), ["p2"]);
    let uninterrupted = trail(running.await.unwrap().unwrap().context());

    let restored = nested();
    restored.restore_from_checkpoint(checkpoint).unwrap();
    let result = restored.run().await.unwrap();
    let t = trail(result.context());
    assert_eq!(t, uninterrupted, "the same trail as the run that was not interrupted");
    assert_eq!(t.iter().filter(|s| *s == "outer").count(), 1);
}

#[tokio::test(start_paused = true)]
async fn pause_lets_running_states_finish_and_resume_goes_on_to_the_end() {
    let agent = chain();
    let running = spawn_run(&agent);
    after(50).await;
    let checkpoint = agent.pause().await;
    // `b` was running: it finished; `c` was not admitted.
    assert_eq!(checkpoint.agent_status, AgentStatus::Paused);
    assert_eq!(checkpoint.completed_states, ["a", "b"]);
    assert_eq!(checkpoint.running_states(), ["c"]);
    let paused = running.await.unwrap().unwrap();
    assert_eq!(paused.status(), AgentStatus::Paused);
    assert_eq!(agent.status(), AgentStatus::Paused);

    let result = agent.resume().await.unwrap();
    assert_eq!(result.status(), AgentStatus::Completed);
    assert_eq!(trail(result.context()), ["a", "b", "c", "d"]);
    assert!(matches!(agent.resume().await, Err(AgentError::NotPaused { .. })));
}

#[tokio::test(start_paused = true)]
async fn pause_takes_states_out_of_their_retry_wait() {
    let mut agent = Agent::new("flaky");
    agent.add_state("a", step("a", 0, "flaky".into()));
    agent
        .add_state("flaky", |ctx: Context| async move {
            let n: u32 = ctx.get_state_or("tries", 0) + 1;
            ctx.set_state("tries", n);
            if n < 3 {
                Err(std::io::Error::other("not yet"))
            } else {
                Ok(StateResult::End)
            }
        })
        .retry_policy(every_ten_seconds(5));
    let running = spawn_run(&agent);
    after(1_000).await;
    // `flaky` failed once and waits 10 s to retry: pausing does not wait for that.
    let checkpoint = agent.pause().await;
    assert_eq!(checkpoint.running_states(), ["flaky"]);
    assert_eq!(running.await.unwrap().unwrap().status(), AgentStatus::Paused);
    let result = agent.resume().await.unwrap();
    assert_eq!(result.context().get_state::<u32>("tries"), Some(3));
}

#[tokio::test(start_paused = true)]
async fn a_failed_run_goes_on_from_the_failed_state() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let broken = Arc::new(AtomicBool::new(true));
    let build = |broken: Arc<AtomicBool>| {
        let mut agent = Agent::new("fix_and_go_on");
        agent.add_state("a", step("a", 0, "b".into()));
        agent.add_state("b", move |ctx: Context| {
            let broken = broken.load(Ordering::SeqCst);
            async move {
                if broken {
                    return Err(std::io::Error::other("the service is down"));
                }
                ctx.update_state_or_default("trail", |t: &mut Vec<String>| t.push("b".into())).unwrap();
                Ok(StateResult::End)
            }
        });
        agent
    };
    let agent = build(broken.clone());
    let err = agent.run().await.unwrap_err();
    assert!(matches!(err, AgentError::StateFailed { .. }));
    // The error carries the run's checkpoint, the same one the agent gives afterwards.
    let carried = err.checkpoint().expect("StateFailed carries the run's checkpoint").clone();
    let checkpoint = through_json(agent.create_checkpoint());
    assert_eq!(
        (carried.tokens, carried.completed_states),
        (checkpoint.tokens.clone(), checkpoint.completed_states.clone())
    );
    assert_eq!(checkpoint.agent_status, AgentStatus::Failed);
    assert_eq!(checkpoint.running_states(), ["b"], "the failed state runs again");

    broken.store(false, Ordering::SeqCst);
    let fixed = build(broken);
    fixed.restore_from_checkpoint(checkpoint).unwrap();
    let result = fixed.run().await.unwrap();
    assert_eq!(trail(result.context()), ["a", "b"]);
}

#[tokio::test]
async fn a_checkpoint_of_another_workflow_is_refused_and_changes_nothing() {
    let other = fan();
    other.run().await.unwrap();
    let agent = chain();
    let err = agent.restore_from_checkpoint(other.create_checkpoint()).unwrap_err();
    assert!(matches!(err, CheckpointError::Mismatch { .. }), "{err}");
    // Nothing was restored: the chain runs from its start.
    let result = agent.run().await.unwrap();
    assert_eq!(trail(result.context()), ["a", "b", "c", "d"]);
}

#[tokio::test(start_paused = true)]
async fn a_checkpoint_of_a_finished_run_restores_to_nothing_left_to_do() {
    let agent = chain();
    agent.run().await.unwrap();
    let checkpoint = through_json(agent.create_checkpoint());
    assert!(checkpoint.tokens.is_empty() && checkpoint.groups.is_empty());
    let restored = chain();
    restored.restore_from_checkpoint(checkpoint).unwrap();
    let result = restored.run().await.unwrap();
    assert_eq!(trail(result.context()), ["a", "b", "c", "d"], "nothing ran again");
}

#[tokio::test(start_paused = true)]
async fn a_request_for_input_is_carried_by_the_checkpoint_and_answered_after_the_restore() {
    use agent_core::HumanInput;
    let build = || {
        let mut agent = Agent::new("asks").input_from_terminal(false);
        agent.add_state("draft", step("draft", 0, "review".into()));
        agent.add_state("review", |ctx: Context| async move {
            let answer = ctx.human_in_the_loop(HumanInput::new("Ship it?")).await?;
            ctx.set_state("answer", answer);
            Ok::<_, agent_core::HumanInputError>(StateResult::End)
        });
        agent
    };
    let agent = build();
    let running = spawn_run(&agent);
    while agent.pending_inputs().is_empty() {
        after(10).await;
    }
    let checkpoint = through_json(agent.create_checkpoint());
    running.abort();
    assert_eq!(checkpoint.running_states(), ["review"]);
    assert_eq!(checkpoint.pending_inputs.len(), 1);
    assert_eq!(checkpoint.pending_inputs[0].prompt, "Ship it?");
    assert_eq!(checkpoint.pending_inputs[0].answer, None);
    let id = checkpoint.pending_inputs[0].request_id.clone();

    let restored = build();
    restored.restore_from_checkpoint(checkpoint).unwrap();
    let run = tokio::spawn({
        let restored = restored.clone();
        async move { restored.run().await }
    });
    while restored.pending_inputs().is_empty() {
        after(10).await;
    }
    let pending = restored.pending_inputs();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, id, "the state asking again gets the same request");
    restored.answer(&id, "yes").unwrap();
    let result = run.await.unwrap().unwrap();
    assert_eq!(result.context().get_state::<String>("answer").as_deref(), Some("yes"));
    assert_eq!(trail(result.context()), ["draft"], "draft did not run again");
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_run_carries_a_checkpoint_that_goes_on_from_the_states_cut_off() {
    use agent_runtime::RunOptions;
    let agent = chain();
    let err = agent.run_with(RunOptions::new().timeout(Duration::from_millis(50))).await.unwrap_err();
    assert!(matches!(err, AgentError::TimedOut { .. }));
    let checkpoint = through_json(err.checkpoint().expect("TimedOut carries the run's checkpoint").clone());
    assert_eq!(checkpoint.agent_status, AgentStatus::TimedOut);
    assert_eq!(checkpoint.running_states(), ["b"], "b was cut off at the deadline");
    let restored = chain();
    restored.restore_from_checkpoint(checkpoint).unwrap();
    let result = restored.run().await.unwrap();
    assert_eq!(trail(result.context()), ["a", "b", "c", "d"]);
}

#[tokio::test(start_paused = true)]
async fn a_state_paused_while_waiting_to_retry_keeps_its_retry_budget() {
    let mut agent = Agent::new("always_failing");
    agent
        .add_state("down", |ctx: Context| async move {
            ctx.update_state_or_default("tries", |n: &mut u32| *n += 1).unwrap();
            Err::<StateResult, _>(std::io::Error::other("still down"))
        })
        .retry_policy(every_ten_seconds(3));
    let running = spawn_run(&agent);
    // Attempts at 0 s and 10 s have failed; the third waits for 20 s.
    after(15_000).await;
    let checkpoint = through_json(agent.pause().await);
    assert_eq!(checkpoint.state("down").unwrap().attempts_made, 2);
    assert_eq!(running.await.unwrap().unwrap().status(), AgentStatus::Paused);
    // Two attempts are left of the four `max_retries: 3` allows, not four more.
    let err = agent.resume().await.unwrap_err();
    let AgentError::StateFailed { attempts, context, .. } = err else { panic!("expected StateFailed, got {err}") };
    assert_eq!(attempts, 4);
    assert_eq!(context.get_state::<u32>("tries"), Some(4));
}

/// `start` fans out to `WIDE` distinct states that each complete at once.
fn wide() -> Agent {
    const WIDE: usize = 32;
    let mut agent = Agent::new("wide");
    let names: Vec<String> = (0..WIDE).map(|i| format!("b{i}")).collect();
    agent.add_state("start", step("start", 0, StateResult::parallel(names.clone())));
    for name in names {
        agent.add_state(name, |_ctx: Context| async move {
            tokio::task::yield_now().await;
            StateResult::End
        });
    }
    agent
}

/// A checkpoint taken from another thread while branches complete never counts a state's
/// completion while its token still stands at it: restored, that state would run again
/// and be counted twice (a durable run's journal took such a delta, and a process killed
/// after it left a run whose branch completed twice on record). The completion is counted
/// in the same transition that moves the token on: for a plain run, in every branch but
/// the root's chain (which takes no lock: see `frontier`); for a durable run, everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_never_counts_a_completion_whose_token_has_not_moved() {
    let taken = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for i in 0..200 {
        let durable = i % 2 == 1;
        let agent = if durable { wide().with_store(agent_runtime::store::MemoryStore::new()) } else { wide() };
        let running = spawn_run(&agent);
        let watcher = {
            let (agent, taken) = (agent.clone(), taken.clone());
            std::thread::spawn(move || {
                while agent.run_id().is_none() {
                    std::thread::yield_now();
                }
                loop {
                    let c = agent.create_checkpoint();
                    taken.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    for t in c.tokens.iter().filter(|t| durable || t.state != "start") {
                        let record = c.states.iter().find(|s| s.name == t.state).unwrap();
                        assert_eq!(
                            record.completed, 0,
                            "{} is counted completed with a token at it: {:?}",
                            t.state, c.tokens
                        );
                    }
                    if c.agent_status.is_finished() {
                        return;
                    }
                }
            })
        };
        running.await.unwrap().unwrap();
        watcher.join().unwrap();
    }
    assert!(taken.load(std::sync::atomic::Ordering::Relaxed) >= 200);
}

/// Each state's record keeps the error of its latest failed attempt, retried or not, cut to
/// 2,000 characters, through a checkpoint's JSON and a restore.
#[tokio::test(start_paused = true)]
async fn a_state_keeps_the_error_of_its_latest_failed_attempt() {
    let mut agent = Agent::new("erring");
    agent
        .add_state("flaky", |ctx: Context| async move {
            let n: u32 = ctx.get_state_or("tries", 0) + 1;
            ctx.set_state("tries", n);
            match n {
                1 => Err(std::io::Error::other("x".repeat(5_000))),
                2 => Err(std::io::Error::other("the second attempt fails")),
                _ => Ok(StateResult::next("slow")),
            }
        })
        .retry_policy(every_ten_seconds(5));
    agent.add_state("slow", step("slow", 1_000, StateResult::End));
    let error_of = |c: &Checkpoint, s: &str| c.states.iter().find(|r| r.name == s).and_then(|r| r.error.clone());
    let running = spawn_run(&agent);
    after(5_000).await;
    let first = agent.create_checkpoint();
    assert_eq!(error_of(&first, "flaky").map(|e| e.len()), Some(2_000), "cut to 2,000 characters");
    after(10_000).await;
    let second = through_json(agent.create_checkpoint());
    assert_eq!(second.running_states(), ["flaky"], "waiting for its third attempt");
    assert_eq!(error_of(&second, "flaky").as_deref(), Some("the second attempt fails"));
    assert_eq!(error_of(&second, "slow"), None);
    running.await.unwrap().unwrap();

    let mut restored = Agent::new("erring");
    restored
        .add_state("flaky", |_ctx: Context| async { Ok::<_, std::io::Error>(StateResult::next("slow")) })
        .retry_policy(every_ten_seconds(5));
    restored.add_state("slow", step("slow", 0, StateResult::End));
    restored.restore_from_checkpoint(second).unwrap();
    restored.run().await.unwrap();
    let after_restore = restored.create_checkpoint();
    assert_eq!(error_of(&after_restore, "flaky").as_deref(), Some("the second attempt fails"), "kept by the restore");
}
