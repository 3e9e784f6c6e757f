//! Fan-out and fan-in, for builder agents (joins found at run time) and for fully known
//! graphs (joins found from the edges).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_core::{Context, StateResult, StateSpec, WorkflowGraph};
use agent_runtime::{Agent, AgentStatus};

mod common;
use common::{count, ms, spawn_run, step, trail, visit, StateFut};

#[tokio::test(start_paused = true)]
async fn three_branches_meet_once_and_the_join_sees_every_write() {
    let mut agent = Agent::new("seed_pattern");
    agent.add_state("start", step("start", 0, StateResult::parallel(["a", "b", "c"])));
    agent.add_state("a", step("a", 30, "merge".into()));
    agent.add_state("b", step("b", 10, "merge".into()));
    agent.add_state("c", step("c", 20, "merge".into()));
    agent.add_state("merge", |ctx: Context| async move {
        let t = trail(&ctx);
        assert!(["a", "b", "c"].iter().all(|b| t.iter().any(|x| x == b)), "merge ran before every branch: {t:?}");
        visit(&ctx, "merge");
        StateResult::End
    });
    let r = agent.run().await.unwrap();
    assert_eq!(count(r.context(), "merge"), 1);
    assert_eq!(r.completed_states().last().map(String::as_str), Some("merge"));
}

#[tokio::test(start_paused = true)]
async fn a_branch_that_ends_does_not_hold_the_join() {
    let mut agent = Agent::new("one_ends");
    agent.add_state("start", step("start", 0, StateResult::parallel(["a", "b", "c"])));
    agent.add_state("a", step("a", 10, "merge".into()));
    agent.add_state("b", step("b", 50, StateResult::End));
    agent.add_state("c", step("c", 20, "merge".into()));
    agent.add_state("merge", step("merge", 0, StateResult::End));
    let r = agent.run().await.unwrap();
    assert_eq!(count(r.context(), "merge"), 1);
    // The join waited for the ending branch too (it had not ended when the others arrived).
    let t = trail(r.context());
    assert!(t.iter().position(|x| x == "b") < t.iter().position(|x| x == "merge"), "{t:?}");
}

#[tokio::test(start_paused = true)]
async fn a_detour_reaches_a_join_marked_state_before_it_runs() {
    // check_quality -> regenerate_text -> check_quality -> await_processing, while
    // extract_entities goes straight to await_processing.
    let mut agent = Agent::new("detour");
    agent.add_state("generate", step("generate", 0, StateResult::parallel(["check_quality", "extract_entities"])));
    agent.add_state("check_quality", |ctx: Context| async move {
        visit(&ctx, "check_quality");
        if count(&ctx, "regenerate_text") == 0 {
            StateResult::next("regenerate_text")
        } else {
            StateResult::next("await_processing")
        }
    });
    agent.add_state("regenerate_text", step("regenerate_text", 100, "check_quality".into()));
    agent.add_state("extract_entities", step("extract_entities", 0, "await_processing".into()));
    agent.add_state("await_processing", step("await_processing", 0, StateResult::End)).join();
    let r = agent.run().await.unwrap();
    let t = trail(r.context());
    assert_eq!(count(r.context(), "await_processing"), 1, "{t:?}");
    assert_eq!(t.last().map(String::as_str), Some("await_processing"), "{t:?}");
    assert_eq!(count(r.context(), "check_quality"), 2);
}

#[tokio::test(start_paused = true)]
async fn without_join_a_builder_fan_in_runs_in_steps() {
    // The documented step semantics: when no branch is running, every waiting state runs.
    let mut agent = Agent::new("steps");
    agent.add_state("start", step("start", 0, StateResult::parallel(["a", "b"])));
    agent.add_state("a", step("a", 0, "a2".into()));
    agent.add_state("a2", step("a2", 0, "merge".into()));
    agent.add_state("b", step("b", 100, "merge".into()));
    agent.add_state("merge", step("merge", 0, StateResult::End));
    let r = agent.run().await.unwrap();
    let t = trail(r.context());
    // a2 waited for b's step to finish; then a2 and merge ran together; then a2's branch
    // reached merge alone and merge ran again: the step model, which `join` exists to avoid.
    assert_eq!(count(r.context(), "merge"), 2, "{t:?}");
    assert!(t.iter().position(|x| x == "b") < t.iter().position(|x| x == "a2"), "{t:?}");
}

#[tokio::test(start_paused = true)]
async fn nested_fan_outs_join_inside_out() {
    // start -> [outer_a, outer_b]; outer_a -> [a1, a2] -> inner_join -> outer_join;
    // outer_b -> outer_join.
    let mut agent = Agent::new("nested");
    agent.add_state("start", step("start", 0, StateResult::parallel(["outer_a", "outer_b"])));
    agent.add_state("outer_a", step("outer_a", 0, StateResult::parallel(["a1", "a2"])));
    agent.add_state("a1", step("a1", 10, "inner_join".into()));
    agent.add_state("a2", step("a2", 30, "inner_join".into()));
    agent
        .add_state("inner_join", |ctx: Context| async move {
            assert_eq!(count(&ctx, "a1") + count(&ctx, "a2"), 2);
            visit(&ctx, "inner_join");
            StateResult::next("outer_join")
        })
        .join();
    agent.add_state("outer_b", step("outer_b", 5, "outer_join".into()));
    agent
        .add_state("outer_join", |ctx: Context| async move {
            assert_eq!(count(&ctx, "inner_join"), 1);
            assert_eq!(count(&ctx, "outer_b"), 1);
            visit(&ctx, "outer_join");
            StateResult::End
        })
        .join();
    let r = agent.run().await.unwrap();
    assert_eq!(count(r.context(), "inner_join"), 1);
    assert_eq!(count(r.context(), "outer_join"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hundred_thousand_branches_append_atomically_and_join_once() {
    const N: usize = 100_000;
    let mut agent = Agent::new("wide");
    agent.add_state("fan", |ctx: Context| async move {
        ctx.set_state("seen", Vec::<u32>::new());
        ctx.set_state("i", 0u32);
        StateResult::parallel(vec!["work"; N])
    });
    agent.add_state("work", |ctx: Context| async move {
        let mut me = 0;
        ctx.update_state("i", |i: &mut u32| {
            me = *i;
            *i += 1
        })
        .unwrap();
        ctx.update_state("seen", |v: &mut Vec<u32>| v.push(me)).unwrap();
        StateResult::next("merge")
    });
    let merges = Arc::new(AtomicU32::new(0));
    let m = merges.clone();
    agent.add_state("merge", move |ctx: Context| {
        let m = m.clone();
        async move {
            m.fetch_add(1, Ordering::SeqCst);
            let seen: Vec<u32> = ctx.get_state("seen").unwrap();
            ctx.set_state("len_at_merge", seen.len());
            StateResult::End
        }
    });
    let r = agent.run().await.unwrap();
    assert_eq!(merges.load(Ordering::SeqCst), 1);
    assert_eq!(r.context().get_state::<usize>("len_at_merge"), Some(N));
    let mut seen: Vec<u32> = r.context().get_state("seen").unwrap();
    seen.sort_unstable();
    assert!(seen.iter().enumerate().all(|(i, &v)| v as usize == i), "an append was lost or doubled");
    assert_eq!(r.metrics().steps as usize, N + 2);
}

#[tokio::test(start_paused = true)]
async fn branches_run_at_once_in_virtual_time() {
    let mut agent = Agent::new("sleepers");
    let names: Vec<String> = (0..100).map(|i| format!("sleep_{i}")).collect();
    let targets = names.clone();
    agent.add_state("fan", move |_ctx: Context| {
        let targets = targets.clone();
        async move { StateResult::parallel(targets) }
    });
    for name in names {
        agent.add_state(name, |_ctx: Context| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            StateResult::next("done")
        });
    }
    agent.add_state("done", |_ctx: Context| async { StateResult::End });
    let start = tokio::time::Instant::now();
    let r = agent.run().await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(1), "100 one-second branches must overlap");
    assert_eq!(r.metrics().states.last().unwrap().completed, 1);
}

/// A fan-out of `width` branches that each wait at a barrier of `width`: it completes only
/// if every branch has started while its siblings wait.
async fn run_barrier_fan_out(width: usize) {
    let barrier = Arc::new(tokio::sync::Barrier::new(width));
    let mut agent = Agent::new("barrier");
    agent.add_state("fan", move |_ctx: Context| async move { StateResult::parallel(vec!["wait"; width]) });
    agent.add_state("wait", move |ctx: Context| {
        let barrier = barrier.clone();
        async move {
            barrier.wait().await;
            ctx.update_state("passed", |n: &mut usize| *n += 1).unwrap();
            StateResult::next("done")
        }
    });
    agent.add_state("done", |_ctx: Context| async { StateResult::End });
    let ctx = Context::new();
    ctx.set_state("passed", 0usize);
    let r = tokio::time::timeout(Duration::from_secs(60), agent.run_in(ctx))
        .await
        .expect("a waiting branch held back a sibling it waits for")
        .unwrap();
    assert_eq!(r.context().get_state::<usize>("passed"), Some(width));
}

#[tokio::test(start_paused = true)]
async fn every_branch_starts_while_its_siblings_wait_on_one_thread() {
    // Quick branches share a task; one that waits must not keep the rest from starting.
    run_barrier_fan_out(1_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_branch_starts_while_its_siblings_wait_on_two_workers() {
    run_barrier_fan_out(1_000).await;
}

#[tokio::test(start_paused = true)]
async fn a_branch_that_yields_lets_its_siblings_run() {
    // The first branch yields once, then looks: on one thread, every sibling must have run
    // by then (each runs to its end in one poll), as tokio's `yield_now` promises.
    let mut agent = Agent::new("yielding");
    agent.add_state("fan", |_ctx: Context| async {
        StateResult::parallel(["first", "yields", "quick", "quick", "quick"])
    });
    agent.add_state("first", |_ctx: Context| async { StateResult::End });
    agent.add_state("yields", |ctx: Context| async move {
        tokio::task::yield_now().await;
        let seen = ctx.get_state_or("quick", 0usize);
        ctx.set_state("seen_after_yield", seen);
        StateResult::End
    });
    agent.add_state("quick", |ctx: Context| async move {
        ctx.update_state("quick", |n: &mut usize| *n += 1).unwrap();
        StateResult::End
    });
    let ctx = Context::new();
    ctx.set_state("quick", 0usize);
    let r = agent.run_in(ctx).await.unwrap();
    assert_eq!(r.context().get_state::<usize>("seen_after_yield"), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_are_counted_exactly_between_and_inside_fan_outs() {
    // The root branch counts a completion without an atomic add while no other task is
    // alive; branches on the other worker count with one. Loop: a state on the root alone,
    // then a fan-out of 64 whose branches complete `work` while the root does too.
    const ROUNDS: u64 = 200;
    let mut agent = Agent::new("counts");
    agent.add_state("solo", |ctx: Context| async move {
        let round = ctx.get_state_or("round", 0u64);
        if round == ROUNDS {
            return StateResult::End;
        }
        ctx.set_state("round", round + 1);
        StateResult::next("fan")
    });
    agent.add_state("fan", |_ctx: Context| async { StateResult::parallel(vec!["work"; 64]) });
    agent.add_state("work", |_ctx: Context| async { StateResult::next("join") });
    agent.add_state("join", |_ctx: Context| async { StateResult::next("solo") });
    let r = agent.run().await.unwrap();
    let completed = |name: &str| r.metrics().states.iter().find(|s| s.name == name).unwrap().completed;
    assert_eq!(completed("solo"), ROUNDS + 1);
    assert_eq!(completed("fan"), ROUNDS);
    assert_eq!(completed("work"), ROUNDS * 64);
    assert_eq!(completed("join"), ROUNDS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn branches_run_on_several_worker_threads_at_the_same_time() {
    // Each branch signals, then spins (blocking its worker) until it sees the other's signal:
    // this completes only if both run at the same instant on two threads.
    let flags = Arc::new([AtomicBool::new(false), AtomicBool::new(false)]);
    let threads = Arc::new(Mutex::new(Vec::new()));
    let mut agent = Agent::new("threads");
    agent.add_state("fan", |_ctx: Context| async { StateResult::parallel(["left", "right"]) });
    for (me, name) in [(0usize, "left"), (1, "right")] {
        let (flags, threads) = (flags.clone(), threads.clone());
        agent.add_state(name, move |_ctx: Context| {
            let (flags, threads) = (flags.clone(), threads.clone());
            async move {
                flags[me].store(true, Ordering::SeqCst);
                let give_up = std::time::Instant::now() + Duration::from_secs(20);
                while !flags[1 - me].load(Ordering::SeqCst) && std::time::Instant::now() < give_up {
                    std::hint::spin_loop();
                }
                threads.lock().unwrap().push(std::thread::current().id());
                StateResult::End
            }
        });
    }
    agent.run().await.unwrap();
    assert!(flags.iter().all(|f| f.load(Ordering::SeqCst)));
    let t = threads.lock().unwrap();
    assert_ne!(t[0], t[1], "both branches ran on one thread");
}

// ----- fully known graphs: joins from the edges, no `join` marker ---------------------------

fn spec(name: &'static str, edges: &'static [&'static str]) -> StateSpec {
    StateSpec { edges, computed_targets: false, ..StateSpec::new(name) }
}

static LLM_STATES: [StateSpec; 5] = [
    StateSpec { edges: &["check_quality", "extract_entities"], computed_targets: false, ..StateSpec::new("generate") },
    StateSpec {
        edges: &["regenerate_text", "await_processing"],
        computed_targets: false,
        ..StateSpec::new("check_quality")
    },
    StateSpec { edges: &["check_quality"], computed_targets: false, ..StateSpec::new("regenerate_text") },
    StateSpec { edges: &["await_processing"], computed_targets: false, ..StateSpec::new("extract_entities") },
    StateSpec { edges: &[], computed_targets: false, ..StateSpec::new("await_processing") },
];
static LLM: WorkflowGraph = WorkflowGraph { name: "llm", start: "generate", states: &LLM_STATES, max_concurrent: None };

#[tokio::test(start_paused = true)]
async fn a_known_graph_joins_after_a_detour_without_a_join_marker() {
    let _ = spec("unused", &[]);
    let agent = Agent::__from_workflow(
        &LLM,
        vec![
            (Arc::new(step("generate", 0, StateResult::parallel(["check_quality", "extract_entities"]))), None),
            (
                Arc::new(|ctx: Context| async move {
                    visit(&ctx, "check_quality");
                    if count(&ctx, "regenerate_text") < 2 {
                        StateResult::next("regenerate_text")
                    } else {
                        StateResult::next("await_processing")
                    }
                }),
                None,
            ),
            (Arc::new(step("regenerate_text", 100, "check_quality".into())), None),
            (Arc::new(step("extract_entities", 0, "await_processing".into())), None),
            (Arc::new(step("await_processing", 0, StateResult::End)), None),
        ],
    );
    let r = agent.run().await.unwrap();
    let t = trail(r.context());
    assert_eq!(count(r.context(), "await_processing"), 1, "{t:?}");
    assert_eq!(t.last().map(String::as_str), Some("await_processing"), "{t:?}");
    assert_eq!(count(r.context(), "regenerate_text"), 2, "the detour kept moving: {t:?}");
    assert_eq!(r.status(), AgentStatus::Completed);
}

static SHARED_STATES: [StateSpec; 5] = [
    StateSpec { edges: &["outer_a", "outer_b"], computed_targets: false, ..StateSpec::new("start") },
    StateSpec { edges: &["a1", "join"], computed_targets: false, ..StateSpec::new("outer_a") },
    StateSpec { edges: &["join"], computed_targets: false, ..StateSpec::new("a1") },
    StateSpec { edges: &["join"], computed_targets: false, ..StateSpec::new("outer_b") },
    StateSpec { edges: &[], computed_targets: false, ..StateSpec::new("join") },
];
static SHARED: WorkflowGraph =
    WorkflowGraph { name: "shared", start: "start", states: &SHARED_STATES, max_concurrent: None };

#[tokio::test(start_paused = true)]
async fn a_join_shared_by_inner_and_outer_branches_runs_once() {
    // start -> [outer_a, outer_b]; outer_a -> [a1, join]; a1 -> join; outer_b -> join.
    let agent = Agent::__from_workflow(
        &SHARED,
        vec![
            (Arc::new(step("start", 0, StateResult::parallel(["outer_a", "outer_b"]))), None),
            (Arc::new(step("outer_a", 0, StateResult::parallel(["a1", "join"]))), None),
            (Arc::new(step("a1", 20, "join".into())), None),
            (Arc::new(step("outer_b", 50, "join".into())), None),
            (Arc::new(step("join", 0, StateResult::End)), None),
        ],
    );
    // `join` is a fan-out target of outer_a, but outer_b (of the enclosing fan-out) and a1
    // still come to it: it waits for them, and runs once, last.
    let r = agent.run().await.unwrap();
    let t = trail(r.context());
    assert_eq!(count(r.context(), "join"), 1, "{t:?}");
    assert_eq!(t.last().map(String::as_str), Some("join"), "{t:?}");
    assert_eq!(t.len(), 5, "every state ran once: {t:?}");
}

// start -> [a, b]; a -> [c, j]; b -> j; c -> End; j -> End (LangGraph's
// `test_in_one_fan_out_state_graph_defer_node`): `j` runs once, after `b` has written.
static DEFER_STATES: [StateSpec; 5] = [
    StateSpec { edges: &["a", "b"], computed_targets: false, ..StateSpec::new("start") },
    StateSpec { edges: &["c", "j"], computed_targets: false, ..StateSpec::new("a") },
    StateSpec { edges: &["j"], computed_targets: false, ..StateSpec::new("b") },
    StateSpec { edges: &[], computed_targets: false, ..StateSpec::new("c") },
    StateSpec { edges: &[], computed_targets: false, ..StateSpec::new("j") },
];
static DEFER: WorkflowGraph =
    WorkflowGraph { name: "defer", start: "start", states: &DEFER_STATES, max_concurrent: None };
// Agents of one graph share one compiled program, handlers included (as `#[workflow]`'s
// always have the same): tests that run at once with other handlers take graphs of their own.
static DEFER_PAUSED: WorkflowGraph =
    WorkflowGraph { name: "defer", start: "start", states: &DEFER_STATES, max_concurrent: None };
static DEFER_EARLY: WorkflowGraph =
    WorkflowGraph { name: "defer", start: "start", states: &DEFER_STATES, max_concurrent: None };

/// The states of the shape above; `b` and `c` take `b_ms` and `c_ms` of virtual time, and
/// `j` records what it saw of `b`'s write.
fn defer_states(b_ms: u64, c_ms: u64) -> Vec<(&'static str, BoxedState)> {
    vec![
        ("start", Box::new(step("start", 0, StateResult::parallel(["a", "b"])))),
        ("a", Box::new(step("a", 0, StateResult::parallel(["c", "j"])))),
        (
            "b",
            Box::new(move |ctx: Context| -> StateFut {
                Box::pin(async move {
                    tokio::time::sleep(ms(b_ms)).await;
                    ctx.set_state("b_wrote", true);
                    visit(&ctx, "b");
                    StateResult::next("j")
                })
            }),
        ),
        ("c", Box::new(step("c", c_ms, StateResult::End))),
        (
            "j",
            Box::new(|ctx: Context| -> StateFut {
                Box::pin(async move {
                    ctx.set_state("j_saw_b", ctx.get_state::<bool>("b_wrote").unwrap_or(false));
                    visit(&ctx, "j");
                    StateResult::End
                })
            }),
        ),
    ]
}

type BoxedState = Box<dyn Fn(Context) -> StateFut + Send + Sync>;

#[tokio::test(start_paused = true)]
async fn a_join_reached_through_a_nested_fan_out_runs_once_after_every_branch_known_graph() {
    for (b_ms, c_ms) in [(50, 0), (0, 50), (10, 10), (0, 0)] {
        let states = defer_states(b_ms, c_ms)
            .into_iter()
            .map(|(_, h)| (Arc::new(h) as Arc<dyn agent_core::StateHandler>, None))
            .collect();
        let r = Agent::__from_workflow(&DEFER, states).run().await.unwrap();
        let t = trail(r.context());
        assert_eq!(count(r.context(), "j"), 1, "b {b_ms} ms, c {c_ms} ms: {t:?}");
        assert_eq!(r.context().get_state::<bool>("j_saw_b"), Some(true), "`j` ran before `b` wrote: {t:?}");
        assert_eq!(r.status(), AgentStatus::Completed);
    }
}

#[tokio::test(start_paused = true)]
async fn a_join_reached_through_a_nested_fan_out_runs_once_after_every_branch_builder() {
    for (b_ms, c_ms) in [(50, 0), (0, 50), (10, 10), (0, 0)] {
        let mut agent = Agent::new("defer_builder");
        for (name, handler) in defer_states(b_ms, c_ms) {
            let config = agent.add_state(name, handler);
            if name == "j" {
                config.join();
            }
        }
        let r = agent.run().await.unwrap();
        let t = trail(r.context());
        assert_eq!(count(r.context(), "j"), 1, "b {b_ms} ms, c {c_ms} ms: {t:?}");
        assert_eq!(r.context().get_state::<bool>("j_saw_b"), Some(true), "`j` ran before `b` wrote: {t:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_join_held_back_for_an_outer_branch_survives_a_checkpoint_and_runs_once() {
    // `j` waits in the inner group (beside `c`, 30 ms) for `b` (50 ms) of the outer one; a
    // checkpoint taken meanwhile holds it there, is accepted, and the restored run still
    // runs `j` once, after `b`.
    let make = || {
        let states = defer_states(50, 30)
            .into_iter()
            .map(|(_, h)| (Arc::new(h) as Arc<dyn agent_core::StateHandler>, None))
            .collect();
        Agent::__from_workflow(&DEFER_PAUSED, states)
    };
    let agent = make();
    let running = spawn_run(&agent);
    tokio::time::sleep(ms(20)).await;
    let checkpoint = agent.create_checkpoint();
    agent.cancel_all().await;
    assert_eq!(running.await.unwrap().unwrap().status(), AgentStatus::Cancelled);
    assert_eq!(checkpoint.groups.len(), 2, "both groups are open: {checkpoint:?}");
    assert_eq!(checkpoint.groups[1].parent, Some(0));
    assert_eq!(checkpoint.groups[1].waiting, [("j".to_owned(), 1)], "`j` waits inside for `b`: {checkpoint:?}");
    let restored = make();
    restored.restore_from_checkpoint(checkpoint).expect("a held-back join is a state a run writes");
    let r = restored.run().await.unwrap();
    let t = trail(r.context());
    assert_eq!(count(r.context(), "j"), 1, "{t:?}");
    assert_eq!(r.context().get_state::<bool>("j_saw_b"), Some(true), "{t:?}");
}

#[tokio::test(start_paused = true)]
async fn a_nested_fan_out_target_no_outer_branch_reaches_starts_at_once() {
    // start -> [a, b]; a -> [c, j]; b ends at once: nothing above can come to `j`, which
    // starts with `c`, not after it.
    let agent = Agent::__from_workflow(
        &DEFER_EARLY,
        vec![
            (Arc::new(step("start", 0, StateResult::parallel(["a", "b"]))), None),
            (Arc::new(step("a", 10, StateResult::parallel(["c", "j"]))), None),
            (Arc::new(step("b", 0, StateResult::End)), None),
            (Arc::new(step("c", 50, StateResult::End)), None),
            (Arc::new(step("j", 0, StateResult::End)), None),
        ],
    );
    let r = agent.run().await.unwrap();
    assert_eq!(trail(r.context()), ["start", "b", "a", "j", "c"]);
}

static NESTED_STATES: [StateSpec; 6] = [
    StateSpec { edges: &["outer_a", "outer_b"], computed_targets: false, ..StateSpec::new("start") },
    StateSpec { edges: &["a1", "a2"], computed_targets: false, ..StateSpec::new("outer_a") },
    StateSpec { edges: &["join"], computed_targets: false, ..StateSpec::new("a1") },
    StateSpec { edges: &["join"], computed_targets: false, ..StateSpec::new("a2") },
    StateSpec { edges: &["join"], computed_targets: false, ..StateSpec::new("outer_b") },
    StateSpec { edges: &[], computed_targets: false, ..StateSpec::new("join") },
];
static NESTED: WorkflowGraph =
    WorkflowGraph { name: "nested", start: "start", states: &NESTED_STATES, max_concurrent: None };

#[tokio::test(start_paused = true)]
async fn inner_and_outer_branches_meeting_at_one_join_run_it_once() {
    let agent = Agent::__from_workflow(
        &NESTED,
        vec![
            (Arc::new(step("start", 0, StateResult::parallel(["outer_a", "outer_b"]))), None),
            (Arc::new(step("outer_a", 0, StateResult::parallel(["a1", "a2"]))), None),
            (Arc::new(step("a1", 20, "join".into())), None),
            (Arc::new(step("a2", 40, "join".into())), None),
            (Arc::new(step("outer_b", 10, "join".into())), None),
            (
                Arc::new(|ctx: Context| async move {
                    assert_eq!(count(&ctx, "a1") + count(&ctx, "a2") + count(&ctx, "outer_b"), 3);
                    visit(&ctx, "join");
                    StateResult::End
                }),
                None,
            ),
        ],
    );
    let r = agent.run().await.unwrap();
    assert_eq!(count(r.context(), "join"), 1, "{:?}", trail(r.context()));
}

static CYCLE_STATES: [StateSpec; 3] = [
    StateSpec { edges: &["a", "b"], computed_targets: false, ..StateSpec::new("start") },
    StateSpec { edges: &["b"], computed_targets: false, ..StateSpec::new("a") },
    StateSpec { edges: &["a"], computed_targets: false, ..StateSpec::new("b") },
];
static CYCLE: WorkflowGraph =
    WorkflowGraph { name: "cycle", start: "start", states: &CYCLE_STATES, max_concurrent: None };

/// A state of the cycle: after `visits` runs it ends, before that it moves to `other`.
fn cyclic(
    name: &'static str,
    other: &'static str,
    visits: usize,
    sleep_ms: u64,
) -> impl Fn(Context) -> std::pin::Pin<Box<dyn std::future::Future<Output = StateResult> + Send>> + Send + Sync + 'static
{
    move |ctx: Context| {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(sleep_ms)).await;
            visit(&ctx, name);
            if count(&ctx, name) < visits {
                StateResult::next(other)
            } else {
                StateResult::End
            }
        })
    }
}

#[tokio::test(start_paused = true)]
async fn branches_waiting_on_each_other_around_a_cycle_do_not_wait_forever() {
    // start -> [a, b]; a -> b and b -> a: each can reach the other, so a branch arriving at
    // one waits for the sibling that could still come; when both wait, one is released.
    let agent = Agent::__from_workflow(
        &CYCLE,
        vec![
            (Arc::new(step("start", 0, StateResult::parallel(["a", "b"]))), None),
            (Arc::new(cyclic("a", "b", 3, 10)), None),
            (Arc::new(cyclic("b", "a", 3, 30)), None),
        ],
    );
    let r = agent.run().await.unwrap();
    // t=10: a runs, moves to b, waits (the branch running b could come back to b).
    // t=30: b runs, moves to a; now each waiting branch could reach the other's state, and
    //       nothing runs: the state defined first, a, is released.
    // t=40: a runs, moves to b, where the other branch waits: they merge, b runs once.
    // t=70: b runs with the one remaining token, then a ends the run on its third visit.
    assert_eq!(trail(r.context()), ["start", "a", "b", "a", "b", "a"]);
    assert_eq!(r.status(), AgentStatus::Completed);
}

/// A fan-out's branches are spawned by the tasks of its other branches (each spawning half
/// of what it was given), not all by the task that fanned out. A branch that fails before
/// any of them ran stops the spawning: no sibling starts, and the run ends (the tasks never
/// spawned are not waited for).
#[tokio::test(start_paused = true)]
async fn a_branch_failing_before_its_siblings_start_stops_the_fan_out_spawning() {
    const N: usize = 10_000;
    let started = Arc::new(AtomicU32::new(0));
    let mut agent = Agent::new("stopped_early");
    agent.add_state("fan", |_ctx: Context| async {
        let mut targets = vec!["work"; N];
        // The first target runs in the task that fanned out, before any spawned task.
        targets[0] = "bad";
        StateResult::parallel(targets)
    });
    agent.add_state("bad", |_ctx: Context| async { Err::<StateResult, _>("bad input") });
    let s = started.clone();
    agent.add_state("work", move |_ctx: Context| {
        s.fetch_add(1, Ordering::SeqCst);
        async { StateResult::End }
    });
    let run = tokio::time::timeout(Duration::from_secs(60), agent.run()).await;
    let err = run.expect("the run must end").unwrap_err();
    assert!(matches!(err, agent_core::AgentError::StateFailed { ref state, .. } if state == "bad"), "{err:?}");
    assert_eq!(started.load(Ordering::SeqCst), 0, "a sibling started after the run failed");
    // Every branch not started is still a token of the fan-out, where a restore resumes.
    let checkpoint = err.checkpoint().expect("StateFailed carries the checkpoint");
    let work = checkpoint.tokens.iter().filter(|t| t.state == "work").map(|t| t.count).sum::<u32>();
    assert_eq!(work as usize, N - 1);
}

/// Paused while a wide fan-out's branches run: they finish, half of them wait at the join
/// and half meet at `long_2` (a fan-in of theirs, so one token), which does not start; the
/// run ends paused, no task of it left, with those tokens in its checkpoint (held by no
/// task, the group must still be there), and resuming runs the rest and the join once.
#[tokio::test(start_paused = true)]
async fn a_wide_fan_out_paused_mid_way_joins_once_on_resume() {
    const N: usize = 1_000;
    let mut agent = Agent::new("paused_fan");
    let targets: Vec<&str> = (0..N).map(|i| if i % 2 == 0 { "short" } else { "long" }).collect();
    agent.add_state("fan", step("fan", 0, StateResult::parallel(targets)));
    agent.add_state("short", step("short", 10, "merge".into()));
    agent.add_state("long", step("long", 10, "long_2".into()));
    agent.add_state("long_2", step("long_2", 10, "merge".into()));
    agent.add_state("merge", step("merge", 0, StateResult::End)).join();
    let running = spawn_run(&agent);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let checkpoint = agent.pause().await;
    assert_eq!(checkpoint.agent_status, AgentStatus::Paused);
    assert_eq!(checkpoint.groups.len(), 1);
    assert_eq!(checkpoint.groups[0].waiting, [("merge".to_owned(), (N / 2) as u32)]);
    let long_2: u32 = checkpoint.tokens.iter().filter(|t| t.state == "long_2").map(|t| t.count).sum();
    assert_eq!(long_2, 1);
    let paused = tokio::time::timeout(Duration::from_secs(60), running).await.expect("the paused run ends");
    assert_eq!(paused.unwrap().unwrap().status(), AgentStatus::Paused);

    let r = agent.resume().await.unwrap();
    assert_eq!(count(r.context(), "short") + count(r.context(), "long"), N);
    assert_eq!(count(r.context(), "long_2"), 1);
    assert_eq!(count(r.context(), "merge"), 1);
}
