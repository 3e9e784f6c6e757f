//! Builder states that declare where they may go (`StateConfig::targets`): drawn, checked
//! before the run, enforced during it, and giving builder fan-ins the known graph's rule.

use agent_core::{AgentError, EdgeKind, StateResult};
use agent_runtime::Agent;

mod common;
use common::{count, step};

/// The fan-in of `tests/fanin.rs::without_join_a_builder_fan_in_runs_in_steps`, declared.
fn declared_fan_in() -> Agent {
    let mut agent = Agent::new("declared");
    agent.add_state("start", step("start", 0, StateResult::parallel(["a", "b"]))).targets(["a", "b"]);
    agent.add_state("a", step("a", 0, "a2".into())).targets(["a2"]);
    agent.add_state("a2", step("a2", 0, "merge".into())).targets(["merge"]);
    agent.add_state("b", step("b", 100, "merge".into())).targets(["merge"]);
    agent.add_state("merge", step("merge", 0, StateResult::End)).targets(Vec::<&str>::new());
    agent
}

#[tokio::test(start_paused = true)]
async fn a_builder_agent_that_declares_every_target_joins_once_like_a_workflow() {
    // Undeclared, this shape runs `merge` twice (the step rule); declared, the runtime
    // knows `a2` still reaches `merge` and waits for it.
    let r = declared_fan_in().run().await.unwrap();
    assert_eq!(count(r.context(), "merge"), 1);
    assert_eq!(count(r.context(), "a2"), 1);
}

#[test]
fn declared_targets_are_drawn() {
    let d = declared_fan_in().diagram();
    assert!(d.states.iter().all(|s| !s.computed_targets));
    let transitions: Vec<(&str, &str)> =
        (d.edges.iter()).filter(|e| e.kind == EdgeKind::Transition).map(|e| (e.from.as_str(), e.to.as_str())).collect();
    assert_eq!(transitions, [("start", "a"), ("start", "b"), ("a", "a2"), ("a2", "merge"), ("b", "merge")]);
}

#[tokio::test]
async fn a_declared_target_naming_no_state_is_refused_before_anything_runs() {
    let mut agent = Agent::new("typo");
    agent.add_state("a", step("a", 0, StateResult::End)).targets(["b", "reprot"]);
    agent.add_state("b", step("b", 0, StateResult::End));
    match agent.run().await.unwrap_err() {
        AgentError::UnknownReference { state, target, role, .. } => {
            assert_eq!((state.as_str(), target.as_str(), role), ("a", "reprot", "target"));
        }
        other => panic!("expected UnknownReference, got {other:?}"),
    }
}

#[tokio::test]
async fn going_anywhere_undeclared_fails_the_run_and_keeps_the_context() {
    let mut agent = Agent::new("strict");
    agent.add_state("a", step("a", 0, "c".into())).targets(["b"]);
    agent.add_state("b", step("b", 0, StateResult::End));
    agent.add_state("c", step("c", 0, StateResult::End));
    match agent.run().await.unwrap_err() {
        AgentError::UndeclaredTarget { from, to, context } => {
            assert_eq!((from.as_str(), to.as_str()), ("a", "c"));
            assert_eq!(count(&context, "a"), 1);
            assert_eq!(count(&context, "c"), 0, "the undeclared state must not run");
        }
        other => panic!("expected UndeclaredTarget, got {other:?}"),
    }

    // In a fan-out too: one undeclared target fails it before any branch starts.
    let mut agent = Agent::new("strict_fan");
    agent.add_state("a", step("a", 0, StateResult::parallel(["b", "c"]))).targets(["b"]);
    agent.add_state("b", step("b", 0, StateResult::End));
    agent.add_state("c", step("c", 0, StateResult::End));
    let err = agent.run().await.unwrap_err();
    assert!(matches!(err, AgentError::UndeclaredTarget { ref to, .. } if to == "c"), "{err:?}");
    assert_eq!(count(err.context().unwrap(), "b"), 0);
}
