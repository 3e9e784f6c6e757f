//! Feature `otel`: the run and state spans reach an OpenTelemetry exporter.
#![cfg(feature = "otel")]

use std::sync::{Arc, Mutex};

use agent_core::{Context, ResourceRequirements, StateResult};
use agent_runtime::otel::opentelemetry::trace::TracerProvider as _;
use agent_runtime::otel::opentelemetry_sdk::error::OTelSdkResult;
use agent_runtime::otel::opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use agent_runtime::otel::tracing_subscriber::{self, layer::SubscriberExt};
use agent_runtime::{Agent, ResourcePool};

/// Keeps every exported span in memory (the SDK's own `InMemorySpanExporter` needs its
/// `testing` feature, which would build its metrics and logs too).
#[derive(Clone, Debug, Default)]
struct Collect(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Collect {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

#[tokio::test]
async fn run_and_state_spans_are_exported() {
    let exporter = Collect::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    let subscriber = tracing_subscriber::registry().with(agent_runtime::otel::layer(provider.tracer("test")));
    let _default = tracing::subscriber::set_default(subscriber);

    let pool = ResourcePool::builder().total_cpu(2.0).build();
    let mut agent = Agent::new("exported").with_resource_pool(pool);
    agent.add_state("first", |_ctx: Context| async { StateResult::next("second") });
    agent
        .add_state("second", |_ctx: Context| async { StateResult::End })
        .resources(ResourceRequirements::new().cpu(1.0));
    let result = agent.run().await.unwrap();
    provider.force_flush().unwrap();

    let spans = exporter.0.lock().unwrap().clone();
    let run = spans.iter().find(|s| s.name == "agent_run").expect("the run's span is exported");
    let attr = |s: &SpanData, key: &str| {
        s.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| kv.value.as_str().into_owned())
    };
    assert_eq!(attr(run, "run_id").as_deref(), Some(result.run_id()));
    assert_eq!(attr(run, "agent").as_deref(), Some("exported"));
    let states: Vec<&SpanData> = spans.iter().filter(|s| s.name == "state").collect();
    let names: Vec<Option<String>> = states.iter().map(|s| attr(s, "state")).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&Some("first".into())) && names.contains(&Some("second".into())));
    for s in &states {
        assert_eq!(s.parent_span_id, run.span_context.span_id(), "state spans are inside the run's");
        assert_eq!(s.span_context.trace_id(), run.span_context.trace_id());
    }
    let second = states.iter().find(|s| attr(s, "state").as_deref() == Some("second")).unwrap();
    assert_eq!(attr(second, "resources").as_deref(), Some("cpu=1"));
}
