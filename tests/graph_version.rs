//! A `#[workflow]` agent and a builder agent of the same graph have one graph hash, through
//! the `agent` facade; options that do not change meaning leave it, and a checkpoint of
//! one restores into the other. Editing a `#[workflow]` agent with the builder changes it.

use std::time::Duration;

use agent::prelude::*;
use agent::{GraphChange, GraphSignature};

#[workflow]
mod etl {
    use agent::prelude::*;

    #[state(retry(max = 2), on_error = "report")]
    async fn fetch(ctx: &Context) -> StateResult {
        ctx.set_state("fetched", true);
        "parse".into()
    }

    #[state(depends_on(fetch = Required))]
    async fn parse(_ctx: &Context) -> StateResult {
        "store".into()
    }

    #[state(join)]
    async fn store(ctx: &Context) -> StateResult {
        ctx.set_state("stored", true);
        StateResult::End
    }

    #[state]
    async fn report(_ctx: &Context) -> StateResult {
        StateResult::End
    }
}

/// The same graph, with options that only change when states run.
#[workflow(name = "etl", max_concurrent = 2)]
mod etl_tuned {
    use agent::prelude::*;

    #[state(retry(max = 2, initial_delay = 5.0), on_error = "report", resources(cpu = 2), priority = High, timeout = 30)]
    async fn fetch(_ctx: &Context) -> StateResult {
        "parse".into()
    }

    #[state(depends_on(fetch = Required), preemptible, blocking)]
    async fn parse(_ctx: &Context) -> StateResult {
        "store".into()
    }

    #[state(join, resources(memory_mb = 512))]
    async fn store(_ctx: &Context) -> StateResult {
        StateResult::End
    }

    #[state(priority = Low)]
    async fn report(_ctx: &Context) -> StateResult {
        StateResult::End
    }
}

/// The same states as free `#[state]` functions, for the builder.
mod parts {
    use agent::prelude::*;

    #[state(retry(max = 2), on_error = "report")]
    pub async fn fetch(_ctx: &Context) -> StateResult {
        "parse".into()
    }

    #[state(depends_on(fetch = Required))]
    pub async fn parse(_ctx: &Context) -> StateResult {
        "store".into()
    }

    #[state(join)]
    pub async fn store(_ctx: &Context) -> StateResult {
        StateResult::End
    }

    #[state]
    pub async fn report(_ctx: &Context) -> StateResult {
        StateResult::End
    }
}

/// The graph with closures, every option and target given to the builder.
fn with_closures() -> Agent {
    let mut agent = Agent::new("etl");
    agent
        .add_state("fetch", |_ctx: Context| async { StateResult::next("parse") })
        .targets(["parse"])
        .retry_policy(RetryPolicy::new().max_retries(2))
        .on_error("report");
    agent
        .add_state("parse", |_ctx: Context| async { StateResult::next("store") })
        .targets(["store"])
        .dependency("fetch", DependencyType::Required);
    agent.add_state("store", |_ctx: Context| async { StateResult::End }).targets(Vec::<&str>::new()).join();
    agent.add_state("report", |_ctx: Context| async { StateResult::End }).targets(Vec::<&str>::new());
    agent
}

/// The graph from `#[state]` functions, added in another order, the start set.
fn with_state_fns() -> Agent {
    let mut agent = Agent::new("etl");
    agent.add_state("report", parts::report);
    agent.add_state("store", parts::store);
    agent.add_state("parse", parts::parse);
    agent.add_state("fetch", parts::fetch);
    agent.set_start("fetch");
    agent
}

#[test]
fn a_workflow_and_the_builder_give_one_graph_hash() -> Result<(), AgentError> {
    let hash = etl::agent().graph_hash()?;
    assert_eq!(etl::agent().graph_hash()?, hash, "stable across agents");
    assert_eq!(with_closures().graph_hash()?, hash);
    assert_eq!(with_state_fns().graph_hash()?, hash);
    assert_eq!(etl_tuned::agent().graph_hash()?, hash);
    assert_eq!(with_closures().graph_signature()?, etl::agent().graph_signature()?);

    // A builder state that declares no targets may go anywhere: another graph.
    let mut open = with_closures();
    open.add_state("audit", |_ctx: Context| async { StateResult::End });
    assert_ne!(open.graph_hash()?, hash);
    let changes = GraphSignature::diff(&etl::agent().graph_signature()?, &open.graph_signature()?);
    assert_eq!(changes, [GraphChange::StateAdded { state: "audit".into() }]);

    // A `#[workflow]` agent edited by hand is another graph.
    let mut edited = etl::agent();
    edited.add_state("audit", parts::report);
    assert_ne!(edited.graph_hash()?, hash);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_checkpoint_of_a_workflow_restores_into_the_builder_agent_of_its_graph(
) -> Result<(), Box<dyn std::error::Error>> {
    let mut agent = Agent::new("etl");
    // `fetch` completes, then `parse` (its dependency met) waits.
    agent.add_state("fetch", parts::fetch);
    agent
        .add_state("parse", |_ctx: Context| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            StateResult::next("store")
        })
        .targets(["store"])
        .dependency("fetch", DependencyType::Required);
    agent.add_state("store", parts::store);
    agent.add_state("report", parts::report);
    assert_eq!(agent.graph_hash()?, etl::agent().graph_hash()?);
    let running = tokio::spawn({
        let agent = agent.clone();
        async move { agent.run().await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let checkpoint = Checkpoint::from_json(&agent.create_checkpoint().to_json()?)?;
    running.abort();
    assert_eq!(checkpoint.completed_states, ["fetch"]);

    let restored = etl::agent();
    restored.restore_from_checkpoint(checkpoint)?;
    let result = restored.run().await?;
    assert_eq!(result.completed_states(), ["fetch", "parse", "store"]);
    assert_eq!(result.context().get_state::<bool>("stored"), Some(true), "the workflow's store ran");
    Ok(())
}
