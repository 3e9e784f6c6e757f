// Every option, typed keys, `Result` states, owned contexts and a standalone state.
#![deny(warnings)]
#![warn(missing_docs)]
//! A crate using the macros under strict lints.

use std::time::Duration;

use agent::prelude::*;

/// A typed context value.
#[derive(Clone, Debug, Serialize, Deserialize, TypedContextData)]
pub struct UserProfile {
    name: String,
    age: u32,
}

/// A workflow with every option.
#[workflow(name = "options", start = "load", max_concurrent = 3, context(greeting: String, user: UserProfile))]
pub mod options {
    use agent::prelude::*;

    use super::UserProfile;

    /// Loads.
    #[agent::state(
        resources(cpu = 2.0, memory_mb = 1024, io = 1.0, network = 1.0, gpu = 0.5),
        priority = High,
        timeout = 1.5,
        retry(max = 5, initial_delay = 0.5, jitter = false),
        rate_limit(per_second = 10, burst = 20),
        on_error = "recover",
        preemptible,
    )]
    pub async fn load(ctx: &Context) -> Result<StateResult, ContextError> {
        ctx.set_greeting("hi".to_owned());
        ctx.set_user(UserProfile { name: "Alice".into(), age: 28 });
        ctx.update_user(|u| u.age += 1)?;
        Ok(StateResult::parallel(["left", "right"]))
    }

    #[::agent::state(priority = Low)]
    async fn left(_: Context) -> StateResult {
        StateResult::next("merge")
    }

    #[state(blocking)]
    async fn right(ctx: Context) -> StateResult {
        match ctx.user().map(|u| u.age) {
            Some(29) => vec!["merge"].into(),
            _ => unreachable!("the update was lost"),
        }
    }

    #[state(join, depends_on(load = Sequential))]
    async fn merge(_ctx: &Context) -> StateResult {
        None.into()
    }

    #[state]
    async fn recover(_ctx: &Context) -> StateResult {
        StateResult::End
    }
}

/// A state outside any workflow, added with the builder.
#[state(timeout = 3, retry(max = 1), rate_limit(per_second = 0.5))]
pub async fn lonely(ctx: Context) -> StateResult {
    ctx.set_state("lonely", true);
    StateResult::End
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), AgentError> {
    use options::ContextKeys;

    let graph = &options::GRAPH;
    assert_eq!(graph.name, "options");
    assert_eq!(graph.start, "load");
    assert_eq!(graph.max_concurrent, Some(3));
    assert!(graph.fully_known());
    let names: Vec<&str> = graph.states.iter().map(|s| s.name).collect();
    assert_eq!(names, ["load", "left", "right", "merge", "recover"]);

    let load = graph.states[0];
    assert_eq!(load, options::load::SPEC);
    assert_eq!(load.priority, Priority::High);
    assert_eq!(load.timeout, Some(Duration::from_millis(1500)));
    let resources = load.resources.unwrap();
    assert!((resources.memory_mb - 1024.0).abs() < f64::EPSILON && (resources.gpu - 0.5).abs() < f64::EPSILON);
    let retry = load.retry.unwrap();
    assert_eq!(retry.max_retries, 5);
    assert_eq!(retry.initial_delay, Duration::from_millis(500));
    assert_eq!(retry.max_delay, RetryPolicy::new().max_delay);
    assert!(!retry.jitter);
    assert_eq!(load.rate_limit, Some(RateLimit::new(10.0).burst(20)));
    assert_eq!(load.on_error, Some("recover"));
    assert!(load.preemptible && !load.join && !load.blocking);
    assert_eq!(load.edges, ["left", "right"]);
    assert_eq!(graph.states[2].edges, ["merge"]);
    assert!(graph.states[2].blocking);
    assert!(graph.states[3].join);
    assert_eq!(graph.states[3].depends_on, [("load", DependencyType::Sequential)]);

    // `load` asks for half a GPU: the default pool (this machine) has none.
    let pool = ResourcePool::builder().total_cpu(4.0).total_memory_mb(4096.0).total_gpu(1.0).build();
    let result = options::agent().with_resource_pool(pool).run().await?;
    assert_eq!(result.status(), AgentStatus::Completed);
    assert_eq!(result.context().greeting().as_deref(), Some("hi"));
    assert_eq!(result.context().user().map(|u| u.age), Some(29));

    let mut builder = Agent::new("builder");
    builder.add_state("lonely", lonely);
    let result = builder.run().await?;
    assert_eq!(result.context().get_state::<bool>("lonely"), Some(true));
    assert_eq!(lonely::SPEC.edges, [] as [&str; 0]);
    const { assert!(!lonely::SPEC.computed_targets) };
    assert_eq!(lonely::SPEC.rate_limit, Some(RateLimit { per_second: 0.5, burst: 1 }));
    assert_eq!(graph.states[1].rate_limit, None);
    Ok(())
}
