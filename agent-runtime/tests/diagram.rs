//! A built agent's picture (`Agent::diagram`), coloured by a live run (statuses, retries)
//! or by a checkpoint's statuses.

use std::time::Duration;

use agent_core::{AgentStatus, Context, DependencyType, EdgeKind, StateResult, StateStatus};
use agent_runtime::Agent;

mod common;
use common::spawn_run;

fn pipeline() -> Agent {
    let mut agent = Agent::new("pipeline");
    agent.add_state("load", |_ctx: Context| async { StateResult::next("review") });
    agent
        .add_state("review", |_ctx: Context| async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            StateResult::next("report")
        })
        .on_error("report");
    agent.add_state("report", |_ctx: Context| async { StateResult::End });
    agent.add_state("audit", |_ctx: Context| async { StateResult::End }).dependency("report", DependencyType::Required);
    agent
}

#[test]
fn a_builder_agent_draws_its_states_and_known_edges_but_no_guessed_transition() {
    let d = pipeline().diagram();
    let names: Vec<&str> = d.states.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["load", "review", "report", "audit"]);
    assert!(d.states.iter().all(|s| s.computed_targets && s.status.is_none()));
    assert_eq!(d.start.as_deref(), Some("load"));
    let edges: Vec<(&str, &str, EdgeKind)> = d.edges.iter().map(|e| (e.from.as_str(), e.to.as_str(), e.kind)).collect();
    assert_eq!(
        edges,
        [("review", "report", EdgeKind::OnError), ("report", "audit", EdgeKind::Dependency(DependencyType::Required))]
    );
    // States are s0 load, s1 review, s2 report, s3 audit.
    let m = d.to_mermaid();
    assert!(m.contains("    start --> s0\n"), "{m}");
    assert!(m.contains("    s1 -. on_error .-> s2\n"), "{m}");
    assert!(!m.contains("class "), "no run, no colours: {m}");
}

#[tokio::test(start_paused = true)]
async fn a_live_run_colours_the_picture_as_it_goes() {
    let agent = pipeline();
    let running = spawn_run(&agent);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let d = agent.diagram();
    let status = |name: &str| d.states.iter().find(|s| s.name == name).unwrap().status;
    assert_eq!(status("load"), Some(StateStatus::Completed));
    assert_eq!(status("review"), Some(StateStatus::Running));
    assert_eq!(status("report"), Some(StateStatus::Pending));
    let m = d.to_mermaid();
    assert!(m.contains("    class s0 completed\n") && m.contains("    class s1 running\n"), "{m}");
    let dot = d.to_dot();
    assert!(
        dot.contains(
            "    s1 [label=\"review\", style=\"rounded,filled\", fillcolor=\"#cfe2ff\", tooltip=\"Running\"];"
        ),
        "{dot}"
    );

    running.await.unwrap().unwrap();
    assert!(agent.diagram().to_mermaid().contains("    class s1 completed\n"));
}

#[tokio::test(start_paused = true)]
async fn a_checkpoint_colours_the_picture_of_the_run_it_was_taken_from() {
    let agent = pipeline();
    let running = spawn_run(&agent);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let checkpoint = agent.pause().await;
    assert_eq!(running.await.unwrap().unwrap().status(), AgentStatus::Paused);

    // A fresh agent (say, in another process) draws the paused run from its checkpoint.
    let d = pipeline().diagram().with_checkpoint(&checkpoint);
    let status = |name: &str| d.states.iter().find(|s| s.name == name).unwrap().status;
    assert_eq!(status("load"), Some(StateStatus::Completed));
    assert_eq!(status("review"), Some(StateStatus::Completed), "pause lets the running state finish");
    assert_eq!(status("audit"), Some(StateStatus::Pending));
}

/// A live run marks the states that retried, and joins are marked as declared.
#[tokio::test(start_paused = true)]
async fn a_live_run_marks_retries_and_joins_are_drawn_as_joins() {
    let mut agent = Agent::new("retrying");
    agent
        .add_state("shaky", |ctx: Context| async move {
            ctx.update_state_or_default("tries", |n: &mut u32| *n += 1).unwrap();
            if ctx.get_state_or("tries", 0u32) < 3 {
                return Err::<StateResult, agent_core::BoxError>("not yet".into());
            }
            Ok(StateResult::next("merge"))
        })
        .retry_policy(agent_core::RetryPolicy::new().max_retries(5).initial_delay(Duration::from_millis(1)));
    agent.add_state("merge", |_ctx: Context| async { StateResult::End }).join();
    let before = agent.diagram();
    assert!(before.states[1].join && before.states.iter().all(|s| s.retries == 0));
    assert!(before.to_mermaid().contains("    s1{{\"merge\"}}\n"), "{}", before.to_mermaid());
    agent.run().await.unwrap();
    let d = agent.diagram();
    assert_eq!((d.states[0].retries, d.states[1].retries), (2, 0));
    let m = d.to_mermaid();
    assert!(m.contains("    s0(\"shaky<br>retried 2 times\")\n") && m.contains("    class s0 retried\n"), "{m}");
}
