//! API.md: every run emits tracing spans, one per run and one per state attempt.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use agent_core::{Context, StateResult};
use agent_runtime::Agent;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Records the name and the `state` field of every span created.
#[derive(Default)]
struct Spans {
    next_id: AtomicU64,
    seen: Mutex<Vec<(String, Option<String>)>>,
    /// Every event: its fields, `name=value`, in order (the message as `message=...`).
    events: Mutex<Vec<String>>,
}

/// An event's fields as one line.
struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        self.0.push_str(&format!("{}={value:?}", field.name()));
    }
}

struct StateField(Option<String>);

impl tracing::field::Visit for StateField {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "state" {
            self.0 = Some(value.to_owned());
        }
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "state" {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

/// The subscriber: a handle on the shared record.
struct Collector(Arc<Spans>);

impl Subscriber for Collector {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut state = StateField(None);
        span.record(&mut state);
        self.0.seen.lock().unwrap().push((span.metadata().name().to_owned(), state.0));
        Id::from_u64(self.0.next_id.fetch_add(1, Ordering::Relaxed) + 1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        self.0.events.lock().unwrap().push(fields.0);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn a_run_has_one_span_and_each_state_attempt_one() {
    let spans = Arc::new(Spans::default());
    let mut agent = Agent::new("traced");
    agent.add_state("first", |ctx: Context| async move {
        ctx.set_state("n", 0);
        StateResult::parallel(["left", "right"])
    });
    agent.add_state("left", |_ctx: Context| async { StateResult::next("last") });
    agent.add_state("right", |_ctx: Context| async { StateResult::next("last") });
    agent.add_state("last", |_ctx: Context| async { StateResult::End });

    tracing::subscriber::with_default(Collector(spans.clone()), || {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(agent.run()).unwrap();
    });

    let seen = spans.seen.lock().unwrap();
    let runs = seen.iter().filter(|(name, _)| name == "agent_run").count();
    let mut states: Vec<String> =
        seen.iter().filter(|(name, _)| name == "state").filter_map(|(_, s)| s.clone()).collect();
    states.sort();
    assert_eq!(runs, 1, "{seen:?}");
    assert_eq!(states, ["first", "last", "left", "right"], "{seen:?}");
}

#[test]
fn transitions_retries_and_timeouts_are_traced() {
    use agent_core::RetryPolicy;
    use std::time::Duration;
    let spans = Arc::new(Spans::default());
    let mut agent = Agent::new("traced_events");
    agent.add_state("first", |_ctx: Context| async { StateResult::next("slow") });
    agent
        .add_state("slow", |_ctx: Context| async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            StateResult::End
        })
        .timeout(Duration::from_secs(1))
        .retry_policy(RetryPolicy::new().max_retries(1).initial_delay(Duration::from_secs(2)).jitter(false));

    tracing::subscriber::with_default(Collector(spans.clone()), || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        assert!(rt.block_on(agent.run()).is_err());
    });

    let events = spans.events.lock().unwrap();
    let has = |want: &str| events.iter().any(|e| e.contains(want));
    assert!(has(r#"message=transition from="first" to="slow""#), "{events:#?}");
    assert!(has(r#"message=timed out state="slow" after=1s"#), "{events:#?}");
    assert!(has(r#"message=attempt failed; retrying state="slow" attempt=1 delay=2s error="#), "{events:#?}");
}
