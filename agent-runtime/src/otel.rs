//! OpenTelemetry export of the run and state spans (feature `otel`).
//!
//! Every run emits a `tracing` span `agent_run` (fields `agent`, `run_id`) and one span
//! `state` per state attempt (fields `state`, `attempt`, and `resources` where the state
//! asks for some), inside it; retries, timeouts, preemptions and waits are `tracing` events
//! within them. [`layer`] turns those into OpenTelemetry spans for any tracer.
//!
//! The three crates are re-exported, so an application names versions that fit together
//! by using these paths instead of its own dependencies.
//!
//! ```
//! use agent_runtime::otel::{self, opentelemetry::trace::TracerProvider as _, opentelemetry_sdk};
//! use agent_runtime::otel::tracing_subscriber::layer::SubscriberExt;
//!
//! // In practice, `.with_batch_exporter(...)` with an OTLP exporter.
//! let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
//! let subscriber =
//!     otel::tracing_subscriber::registry().with(otel::layer(provider.tracer("my-service")));
//! tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber");
//! ```

pub use opentelemetry;
pub use opentelemetry_sdk;
pub use tracing_opentelemetry;
pub use tracing_subscriber;

/// A `tracing` layer exporting the runtime's spans (and every other span of the
/// subscriber it is added to) through `tracer`.
pub fn layer<S, T>(tracer: T) -> tracing_opentelemetry::OpenTelemetryLayer<S, T>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    T: opentelemetry::trace::Tracer + 'static,
    T::Span: Send + Sync,
{
    tracing_opentelemetry::layer().with_tracer(tracer)
}
