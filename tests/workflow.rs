//! API.md "A workflow written with the macros" and "The same with the builder", end to end
//! through the `agent` facade.

use std::time::Duration;

use agent::prelude::*;

#[workflow(name = "renamed", start = "begin", max_concurrent = 3)]
mod options_workflow {
    use agent::prelude::*;

    #[derive(Debug)]
    pub struct Oops;
    impl std::fmt::Display for Oops {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("oops")
        }
    }
    impl std::error::Error for Oops {}

    /// First in source order, but not the start; reached through `recover`.
    #[state]
    async fn first_in_source(_ctx: &Context) -> StateResult {
        StateResult::End
    }

    /// The start, by option.
    #[state(priority = High, timeout = 1.5, retry(max = 2, initial_delay = 0.25, jitter = false))]
    async fn begin(ctx: Context) -> Result<StateResult, Oops> {
        let fail: bool = ctx.get_state_or("fail", false);
        if fail {
            return Err(Oops);
        }
        ctx.set_state("began", true);
        Ok(StateResult::next("middle"))
    }

    #[state(depends_on(begin = Required), on_error = "recover", preemptible, join, blocking)]
    async fn middle(ctx: &Context) -> Result<StateResult, Box<dyn std::error::Error + Send + Sync>> {
        let n: u32 = ctx.try_get_state("n").unwrap_or(0);
        ctx.set_state("n", n + 1);
        match n {
            0 => Ok("middle".into()),
            _ => Ok(None.into()),
        }
    }

    #[state(resources(cpu = 2, memory_mb = 1024, io = 1.0, network = 0.5, gpu = 0.25))]
    async fn recover(_ctx: &Context) -> StateResult {
        "first_in_source".into()
    }
}

#[tokio::test]
async fn workflow_options_reach_the_graph_and_the_agent() {
    let g = &options_workflow::GRAPH;
    assert_eq!(g.name, "renamed");
    assert_eq!(g.start, "begin");
    assert_eq!(g.max_concurrent, Some(3));
    assert_eq!(g.states.iter().map(|s| s.name).collect::<Vec<_>>(), ["first_in_source", "begin", "middle", "recover"]);

    let begin = g.state("begin").unwrap();
    assert_eq!(begin.priority, Priority::High);
    assert_eq!(begin.timeout, Some(Duration::from_millis(1500)));
    let retry = begin.retry.unwrap();
    assert_eq!((retry.max_retries, retry.initial_delay, retry.jitter), (2, Duration::from_millis(250), false));
    assert_eq!(retry.max_delay, RetryPolicy::new().max_delay, "unset retry fields keep their defaults");
    assert_eq!(begin.edges, ["middle"]);

    let middle = g.state("middle").unwrap();
    assert_eq!(middle.depends_on, [("begin", DependencyType::Required)]);
    assert_eq!(middle.on_error, Some("recover"));
    assert!(middle.preemptible && middle.join && middle.blocking);
    assert_eq!(middle.edges, ["middle"]);
    assert!(!middle.computed_targets);

    let r = g.state("recover").unwrap().resources.unwrap();
    assert_eq!((r.cpu, r.memory_mb, r.io, r.network, r.gpu), (2.0, 1024.0, 1.0, 0.5, 0.25));
    assert!(g.fully_known());

    let agent = options_workflow::agent();
    assert_eq!(agent.name(), "renamed");
    let result = agent.run().await.unwrap();
    assert_eq!(result.completed_states(), ["begin", "middle"]);
    assert_eq!(result.context().get_state::<u32>("n"), Some(2));
}

#[tokio::test]
async fn a_result_state_error_fails_the_run_with_its_message() {
    let ctx = Context::new();
    ctx.set_state("fail", true);
    let err = options_workflow::agent().run_in(ctx).await.unwrap_err();
    match err {
        AgentError::StateFailed { state, source, context, .. } => {
            assert_eq!(state, "begin");
            assert_eq!(source.to_string(), "oops");
            assert_eq!(context.get_state::<bool>("fail"), Some(true));
        }
        other => panic!("expected StateFailed, got {other:?}"),
    }
}

// ----- a standalone #[state] keeps its options in a builder agent --------------------------

#[state(priority = Critical, timeout = 300)]
async fn clean_text(ctx: &Context) -> StateResult {
    ctx.set_state("cleaned", "hello world");
    "count_words".into()
}

#[tokio::test]
async fn a_state_fn_added_to_a_builder_keeps_its_options() {
    assert_eq!(clean_text::SPEC.priority, Priority::Critical);
    assert_eq!(clean_text::SPEC.timeout, Some(Duration::from_secs(300)));
    assert_eq!(clean_text::SPEC.edges, ["count_words"]);

    let mut agent = Agent::new("text_processor");
    agent.add_state("clean_text", clean_text);
    agent.add_state("count_words", |ctx: Context| async move {
        let text: String = ctx.get_state("cleaned").unwrap_or_default();
        ctx.set_state("words", text.split_whitespace().count());
        StateResult::End
    });
    let r = agent.run().await.unwrap();
    assert_eq!(r.context().get_state::<usize>("words"), Some(2));
}

// ----- API.md's builder snippet, whole --------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn the_builder_snippet_runs() -> Result<(), AgentError> {
    let chunks = 3;
    // `train_model` asks for a GPU; the default pool (this machine's) has none, where it
    // would fail at once with a `ResourceError`. Give the agent one.
    let mut agent = Agent::new("text_processor")
        .with_resource_pool(ResourcePool::builder().total_cpu(2.0).total_memory_mb(2048.0).total_gpu(1.0).build());
    agent.add_state("clean_text", clean_text);
    agent.add_state("count_words", |_ctx: Context| async { StateResult::next("train_model") });
    agent
        .add_state("train_model", |_ctx: Context| async move {
            StateResult::parallel((0..3).map(|i| format!("process_chunk_{i}")))
        })
        .resources(ResourceRequirements::new().cpu(2.0).memory_mb(1024.0).gpu(1.0))
        .priority(Priority::High)
        .timeout(Duration::from_secs(300))
        .retry_policy(RetryPolicy::new().max_retries(3).initial_delay(Duration::from_secs(1)))
        .dependency("clean_text", DependencyType::Required);
    for i in 0..chunks {
        agent.add_state(format!("process_chunk_{i}"), move |ctx: Context| async move {
            ctx.set_state(&format!("result_{i}"), i);
            StateResult::next("merge_results")
        });
    }
    agent.add_state("merge_results", |ctx: Context| async move {
        let sum: i32 = (0..3).map(|i| ctx.get_state_or(&format!("result_{i}"), 0)).sum();
        ctx.set_state("sum", sum);
        StateResult::End
    });
    let result = agent.run().await?;
    assert_eq!(result.context().get_state::<i32>("sum"), Some(3));
    Ok(())
}

// ----- transitions of every documented form, through the macro ------------------------------

#[workflow]
mod forms {
    use agent::prelude::*;

    #[state]
    async fn start(ctx: &Context) -> StateResult {
        let step: u32 = ctx.get_state_or("step", 0);
        ctx.set_state("step", step + 1);
        match step {
            0 => StateResult::next("start"),
            1 => ["a", "b"].into(),
            _ => StateResult::End,
        }
    }

    #[state]
    async fn a(_ctx: &Context) -> StateResult {
        StateResult::parallel(["c", "d"])
    }

    #[state]
    pub async fn b(_ctx: &Context) -> StateResult {
        vec!["e"].into()
    }

    #[state]
    #[allow(clippy::needless_return)] // the `return` form is what this state tests
    async fn c(_ctx: &Context) -> StateResult {
        return "e".into();
    }

    #[state]
    async fn d(_ctx: &Context) -> StateResult {
        if true {
            "e".into()
        } else {
            None.into()
        }
    }

    #[state]
    pub async fn e(ctx: &Context) -> StateResult {
        ctx.update_state_or_default("e_runs", |n: &mut u32| *n += 1).unwrap();
        None.into()
    }
}

#[tokio::test]
async fn every_transition_form_is_a_known_edge_and_nested_joins_run_once() {
    let g = &forms::GRAPH;
    assert!(g.fully_known());
    assert_eq!(g.state("start").unwrap().edges, ["start", "a", "b"]);
    assert_eq!(g.state("a").unwrap().edges, ["c", "d"]);
    assert_eq!(g.state("b").unwrap().edges, ["e"]);
    assert_eq!(g.state("c").unwrap().edges, ["e"]);
    assert_eq!(g.state("d").unwrap().edges, ["e"]);
    // start -> [a, b]; a -> [c, d]; c, d, b -> e: the inner group joins at e together with
    // the outer branch b, so e runs once.
    let agent = forms::agent();
    let r = agent.run().await.unwrap();
    assert_eq!(r.context().get_state::<u32>("e_runs"), Some(1));
    // Drawn with ids in source order: s0 start, s1 a, s2 b, s3 c, s4 d, s5 e.
    assert!(g.to_mermaid().contains("    s1 --> s3\n"), "a to c: {}", g.to_mermaid());
    assert!(g.to_dot().contains("    s2 -> s5;\n"), "b to e: {}", g.to_dot());
    // The built agent draws the same edges as its GRAPH, coloured by the run it made.
    let picture = agent.diagram();
    assert_eq!(picture.edges, g.diagram().edges);
    assert!(picture.states.iter().all(|s| !s.computed_targets && s.status == Some(StateStatus::Completed)));
    let m = picture.to_mermaid();
    assert!(m.contains("    s1 --> s3\n") && m.contains("    class s5 completed\n"), "{m}");
}

// ----- computed targets --------------------------------------------------------------------

#[workflow]
mod computed {
    use agent::prelude::*;

    #[state]
    async fn route(ctx: &Context) -> StateResult {
        let which: String = ctx.get_state_or("which", "chunk_0".to_owned());
        StateResult::next(which)
    }

    #[state]
    async fn chunk_0(_ctx: &Context) -> StateResult {
        StateResult::End
    }

    #[state]
    async fn never_named(_ctx: &Context) -> StateResult {
        StateResult::End
    }
}

#[tokio::test]
async fn computed_targets_are_checked_when_taken() {
    assert!(!computed::GRAPH.fully_known());
    assert!(computed::GRAPH.state("route").unwrap().computed_targets);
    let ok = computed::agent().run().await.unwrap();
    assert_eq!(ok.completed_states(), ["route", "chunk_0"]);

    let ctx = Context::new();
    ctx.set_state("which", "chunk_9");
    match computed::agent().run_in(ctx).await {
        Err(AgentError::UnknownState { from, to, context }) => {
            assert_eq!((from.as_str(), to.as_str()), ("route", "chunk_9"));
            assert!(context.has_state("which"));
        }
        other => panic!("expected UnknownState, got {other:?}"),
    }
}

// ----- typed data and typed keys -----------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TypedContextData)]
struct UserProfile {
    name: String,
    age: u32,
    scores: Vec<f64>,
}

#[workflow(context(greeting: String, user: UserProfile))]
mod typed_keys {
    use super::UserProfile;
    use agent::prelude::*;

    #[state]
    async fn write(ctx: &Context) -> StateResult {
        ctx.set_greeting("hi".to_owned());
        ctx.set_user(UserProfile { name: "Alice".into(), age: 28, scores: vec![95.0] });
        ctx.update_user(|u| u.age = 29).unwrap();
        "read".into()
    }

    #[state]
    async fn read(ctx: &Context) -> StateResult {
        let user = ctx.user().unwrap();
        ctx.set_greeting(format!("{} {}", ctx.greeting().unwrap(), user.name));
        StateResult::End
    }
}

#[tokio::test]
async fn typed_keys_generate_accessors() {
    use typed_keys::ContextKeys;
    let r = typed_keys::agent().run().await.unwrap();
    assert_eq!(r.context().greeting().as_deref(), Some("hi Alice"));
    assert_eq!(r.context().user().unwrap().age, 29);
}

#[test]
fn typed_values_round_trip_through_json_as_their_type() {
    let ctx = Context::new();
    let alice = UserProfile { name: "Alice".into(), age: 28, scores: vec![95.0, 87.5] };
    ctx.set_typed("user", alice.clone());
    ctx.update_typed("user", |u: &mut UserProfile| u.age = 29).unwrap();
    let json = ctx.to_json().unwrap();
    assert_eq!(json["user"]["typed"]["type"], "UserProfile");
    let back = Context::from_json(&json).unwrap();
    assert_eq!(back.get_typed::<UserProfile>("user"), Some(UserProfile { age: 29, ..alice }));
    let user = back.try_get_typed::<UserProfile>("user").unwrap();
    assert_eq!(user.scores, [95.0, 87.5]);
}

#[tokio::test]
async fn a_workflow_state_reused_in_another_agent_still_goes_to_the_named_state() {
    // `forms::b` returns a literal checked against `forms::GRAPH` (where `e` is index 5);
    // in this agent `e` is index 0, so the shortcut must not apply.
    let mut agent = Agent::new("reuse");
    agent.add_state("e", forms::e);
    agent.add_state("b", forms::b);
    agent.set_start("b");
    let r = agent.run().await.unwrap();
    assert_eq!(r.completed_states(), ["b", "e"]);
    assert_eq!(r.context().get_state::<u32>("e_runs"), Some(1));

    // A workflow's agent with states added after the graph's keeps resolving by the graph.
    let mut extended = forms::agent();
    extended.add_state("extra", |_ctx: Context| async { StateResult::End });
    let r = extended.run().await.unwrap();
    assert_eq!(r.context().get_state::<u32>("e_runs"), Some(1));
}

/// Any name a builder state can have is a state name in `#[workflow]` too: names the module
/// defines itself (`agent`, `GRAPH`, `ContextKeys`) and raw identifiers (`r#type`).
#[workflow(context(seen: Vec<String>))]
mod names_the_module_uses {
    #![allow(non_snake_case)]
    use agent::prelude::*;

    fn visit(ctx: &Context, name: &str) {
        ctx.update_state_or_default("seen", |v: &mut Vec<String>| v.push(name.to_owned())).unwrap();
    }

    #[state]
    async fn agent(ctx: &Context) -> StateResult {
        visit(ctx, "agent");
        "type".into()
    }

    #[state]
    async fn r#type(ctx: &Context) -> StateResult {
        visit(ctx, "type");
        "ContextKeys".into()
    }

    #[state]
    async fn ContextKeys(ctx: &Context) -> StateResult {
        visit(ctx, "ContextKeys");
        "GRAPH".into()
    }

    #[state]
    async fn GRAPH(ctx: &Context) -> StateResult {
        visit(ctx, "GRAPH");
        StateResult::End
    }
}

#[tokio::test]
async fn states_may_be_named_like_what_the_module_generates() {
    use names_the_module_uses::ContextKeys as _;
    let names: Vec<&str> = names_the_module_uses::GRAPH.states.iter().map(|s| s.name).collect();
    assert_eq!(names, ["agent", "type", "ContextKeys", "GRAPH"]);
    let result = names_the_module_uses::agent().run().await.unwrap();
    assert_eq!(result.context().seen().unwrap(), ["agent", "type", "ContextKeys", "GRAPH"]);
    assert_eq!(result.completed_states(), ["agent", "type", "ContextKeys", "GRAPH"]);
}

/// start -> [a, b]; a -> [c, j]; b -> j: `j` runs once, after `b` wrote (LangGraph's
/// `test_in_one_fan_out_state_graph_defer_node`), by the join analysis of the graph the
/// compiler saw.
#[workflow]
mod nested_defer {
    use agent::prelude::*;

    fn visit(ctx: &Context, name: &str) {
        ctx.update_state_or_default("trail", |v: &mut Vec<String>| v.push(name.to_owned())).unwrap();
    }

    #[state]
    async fn start(ctx: &Context) -> StateResult {
        visit(ctx, "start");
        ["a", "b"].into()
    }

    #[state]
    async fn a(ctx: &Context) -> StateResult {
        visit(ctx, "a");
        ["c", "j"].into()
    }

    #[state]
    async fn b(ctx: &Context) -> StateResult {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        ctx.set_state("b_wrote", true);
        visit(ctx, "b");
        "j".into()
    }

    #[state]
    async fn c(ctx: &Context) -> StateResult {
        visit(ctx, "c");
        StateResult::End
    }

    #[state]
    async fn j(ctx: &Context) -> StateResult {
        ctx.set_state("j_saw_b", ctx.get_state_or("b_wrote", false));
        visit(ctx, "j");
        StateResult::End
    }
}

#[tokio::test(start_paused = true)]
async fn a_workflow_state_reached_through_a_nested_fan_out_runs_once_after_every_branch() {
    let result = nested_defer::agent().run().await.unwrap();
    let trail: Vec<String> = result.context().get_state("trail").unwrap();
    assert_eq!(trail.iter().filter(|s| *s == "j").count(), 1, "{trail:?}");
    assert_eq!(trail.last().map(String::as_str), Some("j"), "{trail:?}");
    assert_eq!(result.context().get_state::<bool>("j_saw_b"), Some(true));
}
