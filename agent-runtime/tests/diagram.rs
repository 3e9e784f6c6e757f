//! A built agent's picture (`Agent::diagram`), coloured by a live run's statuses or by a
//! checkpoint's.

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
    let m = d.to_mermaid();
    assert!(m.contains("__start([start]) --> load"), "{m}");
    assert!(m.contains("review -. on_error .-> report"), "{m}");
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
    assert!(m.contains("class load completed") && m.contains("class review running"), "{m}");
    assert!(d.to_dot().contains("\"review\" [style=filled, fillcolor=\"#cfe2ff\", tooltip=\"Running\"];"));

    running.await.unwrap().unwrap();
    assert!(agent.diagram().to_mermaid().contains("class review completed"));
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
