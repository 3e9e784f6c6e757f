//! The console's live streams, as Server-Sent Events: a run's row each time it changes,
//! and every run's.
//!
//! Invariants:
//! - A stream reads the store, never a run's process: it shows runs of every worker. It
//!   polls ([`POLL`]) and sends a row only when what a reader sees of it changed (status,
//!   standing, owner, last update); a comment every [`KEEP_ALIVE`] keeps proxies from
//!   closing a quiet stream.
//! - A run's stream sends its row at once, then its changes, and ends after sending a
//!   finished run's row. A store error is sent as an `error` event and the stream goes on
//!   polling: the next poll may succeed.
//! - A stream holds no lock and nothing of the store between polls; a client that goes
//!   away ends its stream (axum drops it).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};

use super::api::RunView;
use super::Shared;
use crate::store::{now_ms, RunQuery};

/// How often a stream reads the store.
pub(super) const POLL: Duration = Duration::from_millis(250);
/// How often a quiet stream sends a comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// What a reader sees of a run: a row is sent again only when this changes.
fn seen(view: &serde_json::Value) -> (String, String, String, i64) {
    let s = |k: &str| view.get(k).map(ToString::to_string).unwrap_or_default();
    (s("status"), s("standing"), s("owner"), view.get("updated_ms").and_then(serde_json::Value::as_i64).unwrap_or(0))
}

fn row_event(view: &serde_json::Value) -> Event {
    Event::default().event("run").data(view.to_string())
}

fn error_event(e: impl std::fmt::Display) -> Event {
    Event::default().event("error").data(serde_json::json!({ "error": format!("the store failed: {e}") }).to_string())
}

pub(super) async fn run_events(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    sse(follow_run(shared, id))
}

pub(super) async fn all_events(State(shared): State<Arc<Shared>>) -> Response {
    sse(follow_all(shared))
}

fn sse(events: impl Stream<Item = Event> + Send + 'static) -> Response {
    let events = futures_util::StreamExt::map(events, Ok::<_, std::convert::Infallible>);
    Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response()
}

/// One run's row now, then at each change, until it is finished.
fn follow_run(shared: Arc<Shared>, id: String) -> impl Stream<Item = Event> + Send + 'static {
    struct Follow {
        shared: Arc<Shared>,
        id: String,
        last: Option<(String, String, String, i64)>,
        first: bool,
        done: bool,
    }
    let start = Follow { shared, id, last: None, first: true, done: false };
    stream::unfold(start, |mut f| async move {
        if f.done {
            return None;
        }
        loop {
            if !f.first {
                tokio::time::sleep(POLL).await;
            }
            f.first = false;
            match f.shared.store.get_run(&f.id).await {
                Ok(Some(row)) => {
                    let finished = row.status.is_finished();
                    let view = serde_json::to_value(RunView::of(row, now_ms())).unwrap_or_default();
                    let now = seen(&view);
                    if f.last.as_ref() != Some(&now) {
                        f.last = Some(now);
                        f.done = finished;
                        return Some((row_event(&view), f));
                    }
                }
                Ok(None) => {
                    f.done = true;
                    let gone = serde_json::json!({ "error": format!("no run `{}` in the store", f.id) });
                    return Some((Event::default().event("error").data(gone.to_string()), f));
                }
                Err(e) => return Some((error_event(e), f)),
            }
        }
    })
}

/// Every run's row at each change (after the first poll, which only notes them).
fn follow_all(shared: Arc<Shared>) -> impl Stream<Item = Event> + Send + 'static {
    type Seen = HashMap<String, (String, String, String, i64)>;
    struct Follow {
        shared: Arc<Shared>,
        seen: Option<Seen>,
        queue: Vec<Event>,
    }
    let start = Follow { shared, seen: None, queue: Vec::new() };
    stream::unfold(start, |mut f| async move {
        loop {
            if let Some(event) = f.queue.pop() {
                return Some((event, f));
            }
            if f.seen.is_some() {
                tokio::time::sleep(POLL).await;
            }
            match f.shared.store.list_runs(&RunQuery::default()).await {
                Ok(runs) => {
                    let now = now_ms();
                    let first = f.seen.is_none();
                    let known = f.seen.get_or_insert_with(HashMap::new);
                    let mut changed = Vec::new();
                    for row in runs {
                        let view = serde_json::to_value(RunView::of(row, now)).unwrap_or_default();
                        let key = view.get("run_id").and_then(serde_json::Value::as_str).unwrap_or_default().to_owned();
                        let now_seen = seen(&view);
                        if known.get(&key) != Some(&now_seen) {
                            known.insert(key, now_seen);
                            if !first {
                                changed.push(row_event(&view));
                            }
                        }
                    }
                    // Sent oldest change first: `pop` takes from the end.
                    changed.reverse();
                    f.queue = changed;
                }
                Err(e) => f.queue.push(error_event(e)),
            }
        }
    })
}
