//! The console's live streams, as Server-Sent Events: a run's row and its states each time
//! they change, and every run's row.
//!
//! One poller per followed run (and one for all runs) reads the store, however many clients
//! follow: a [`Hub`] fans its updates out to them (a broadcast channel). A hundred people
//! watching one run cost the store what one does.
//!
//! Invariants:
//! - A stream reads the store, never a run's process: it shows runs of every worker. Its
//!   poller reads every [`POLL`] and sends a row only when what a reader sees of it changed
//!   (status, standing, owner, last update); a run's poller then reads its checkpoint
//!   (snapshot and journal) and sends each state whose record changed (`state` events: its
//!   status, counters, times). A comment every [`KEEP_ALIVE`] keeps proxies from closing a
//!   quiet stream.
//! - A client that joins a run's hub gets what it missed first (the row and every state's
//!   newest record), taken together with its subscription under the hub's lock, so it
//!   misses nothing and sees nothing twice; a client that falls behind by more than the
//!   channel holds catches up the same way. A run's stream ends after a finished run's row.
//! - A store error is sent as an `error` event and the poller goes on: the next poll may
//!   succeed.
//! - A poller holds its hub; the console's table of hubs holds only weak links to them. A
//!   poller stops when no client follows (checked under the table's lock, under which
//!   clients join, so none joins a hub that is stopping) or its run has finished; its hub's
//!   channel then closes and its clients' streams end. Nothing of the store is held between
//!   polls.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use tokio::sync::broadcast;

use super::api::RunView;
use super::Shared;
use agent_core::AgentStatus;

use crate::store::{now_ms, read_checkpoint, RunQuery};

/// How often a poller reads the store.
pub(super) const POLL: Duration = Duration::from_millis(250);
/// How often a quiet stream sends a comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Updates a hub holds for a slow client before it falls behind.
const CHANNEL: usize = 1024;

/// One event, shared by every client of a hub.
#[derive(Clone, Debug)]
struct Update {
    kind: &'static str,
    data: Arc<str>,
}

impl Update {
    fn new(kind: &'static str, data: &serde_json::Value) -> Update {
        Update { kind, data: data.to_string().into() }
    }

    fn error(e: impl std::fmt::Display) -> Update {
        Update::new("error", &serde_json::json!({ "error": format!("the store failed: {e}") }))
    }

    fn event(&self) -> Event {
        Event::default().event(self.kind).data(&*self.data)
    }
}

/// What a reader sees of a run: a row is sent again only when this changes.
type Seen = (String, String, String, i64);

fn seen(view: &serde_json::Value) -> Seen {
    let s = |k: &str| view.get(k).map(ToString::to_string).unwrap_or_default();
    (s("status"), s("standing"), s("owner"), view.get("updated_ms").and_then(serde_json::Value::as_i64).unwrap_or(0))
}

/// The console's hubs: one per followed run, one for all runs.
#[derive(Default)]
pub(super) struct Hubs {
    runs: Mutex<HashMap<String, Weak<Hub>>>,
    all: Mutex<Weak<Hub>>,
}

/// The updates of one run (or of all runs) for the clients following it.
struct Hub {
    tx: broadcast::Sender<Update>,
    /// What a client joining now has missed, kept by the poller as it sends.
    now: Mutex<Backlog>,
}

/// A run's newest row and each state's newest record (empty for the all-runs hub).
#[derive(Default)]
struct Backlog {
    row: Option<Update>,
    states: BTreeMap<String, (serde_json::Value, Update)>,
}

impl Hub {
    fn new() -> Arc<Hub> {
        Arc::new(Hub { tx: broadcast::channel(CHANNEL).0, now: Mutex::new(Backlog::default()) })
    }

    fn backlog(&self) -> std::sync::MutexGuard<'_, Backlog> {
        self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What a client joining now has missed, and its subscription from then on.
    fn join(&self) -> (VecDeque<Update>, broadcast::Receiver<Update>) {
        let now = self.backlog();
        let missed = now.row.iter().cloned().chain(now.states.values().map(|(_, u)| u.clone())).collect();
        (missed, self.tx.subscribe())
    }

    /// Send `update` to every client (none is an error only for them).
    fn send(&self, update: Update) {
        let _ = self.tx.send(update);
    }
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(super) async fn run_events(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let (missed, rx) = {
        let mut runs = locked(&shared.hubs.runs);
        let hub = match runs.get(&id).and_then(Weak::upgrade) {
            Some(hub) => hub,
            None => {
                let hub = Hub::new();
                runs.insert(id.clone(), Arc::downgrade(&hub));
                tokio::spawn(poll_run(shared.clone(), id.clone(), hub.clone()));
                hub
            }
        };
        hub.join()
    };
    sse(forward(missed, rx, Some((shared, id))))
}

pub(super) async fn all_events(State(shared): State<Arc<Shared>>) -> Response {
    let (missed, rx) = {
        let mut all = locked(&shared.hubs.all);
        let hub = match all.upgrade() {
            Some(hub) => hub,
            None => {
                let hub = Hub::new();
                *all = Arc::downgrade(&hub);
                tokio::spawn(poll_all(shared.clone(), hub.clone()));
                hub
            }
        };
        hub.join()
    };
    sse(forward(missed, rx, None))
}

fn sse(events: impl Stream<Item = Event> + Send + 'static) -> Response {
    let events = futures_util::StreamExt::map(events, Ok::<_, std::convert::Infallible>);
    Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response()
}

/// A client's stream: what it missed, then the hub's updates until its channel closes. A
/// run's client that falls behind catches up from the backlog of `run`'s hub.
fn forward(
    missed: VecDeque<Update>,
    rx: broadcast::Receiver<Update>,
    run: Option<(Arc<Shared>, String)>,
) -> impl Stream<Item = Event> + Send + 'static {
    stream::unfold((missed, rx, run), |(mut missed, mut rx, run)| async move {
        loop {
            if let Some(update) = missed.pop_front() {
                return Some((update.event(), (missed, rx, run)));
            }
            match rx.recv().await {
                Ok(update) => return Some((update.event(), (missed, rx, run))),
                Err(broadcast::error::RecvError::Closed) => return None,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    let hub = run.as_ref().and_then(|(shared, id)| locked(&shared.hubs.runs).get(id)?.upgrade());
                    match hub {
                        Some(hub) => (missed, rx) = hub.join(),
                        None => {
                            let lagged = serde_json::json!({ "missed": n });
                            return Some((Update::new("lagged", &lagged).event(), (missed, rx, run)));
                        }
                    }
                }
            }
        }
    })
}

/// Whether the poller of a hub in `table` should stop for want of clients; if so, its
/// entry is removed (under the table's lock, so no client joins it meanwhile).
fn abandoned<K>(hub: &Hub, table: &Mutex<K>, remove: impl FnOnce(&mut K)) -> bool {
    let mut table = locked(table);
    if hub.tx.receiver_count() > 0 {
        return false;
    }
    remove(&mut table);
    true
}

/// Poll run `id` for `hub` until nobody follows or the run has finished.
async fn poll_run(shared: Arc<Shared>, id: String, hub: Arc<Hub>) {
    let forget = |runs: &mut HashMap<String, Weak<Hub>>| {
        if runs.get(&id).is_some_and(|w| w.as_ptr() == Arc::as_ptr(&hub)) {
            runs.remove(&id);
        }
    };
    let mut last: Option<Seen> = None;
    let mut first = true;
    loop {
        if !std::mem::take(&mut first) {
            tokio::time::sleep(POLL).await;
        }
        if abandoned(&hub, &shared.hubs.runs, forget) {
            return;
        }
        let row = match shared.store.get_run(&id).await {
            Ok(Some(row)) => row,
            Ok(None) => {
                hub.send(Update::new("error", &serde_json::json!({ "error": format!("no run `{id}` in the store") })));
                break;
            }
            Err(e) => {
                hub.send(Update::error(e));
                continue;
            }
        };
        let finished = row.status.is_finished();
        let view = serde_json::to_value(RunView::of(row, now_ms())).unwrap_or_default();
        let now = seen(&view);
        if last.as_ref() == Some(&now) {
            continue;
        }
        last = Some(now);
        let row = Update::new("run", &view);
        {
            let mut backlog = hub.backlog();
            backlog.row = Some(row.clone());
            hub.send(row);
        }
        match read_checkpoint(&*shared.store, &id).await {
            Ok(Some(checkpoint)) => {
                let mut backlog = hub.backlog();
                for record in &checkpoint.states {
                    let value = serde_json::to_value(record).unwrap_or_default();
                    if backlog.states.get(&record.name).is_some_and(|(v, _)| *v == value) {
                        continue;
                    }
                    let mut data = value.clone();
                    if let serde_json::Value::Object(map) = &mut data {
                        map.insert("run_id".to_owned(), id.clone().into());
                    }
                    let update = Update::new("state", &data);
                    backlog.states.insert(record.name.clone(), (value, update.clone()));
                    hub.send(update);
                }
            }
            Ok(None) => {}
            Err(e) => hub.send(Update::error(e)),
        }
        if finished {
            break;
        }
    }
    // Over: forgotten, so that a client joining later starts a poller of its own (which
    // sends the finished run once); this hub's clients end once they have what was sent.
    forget(&mut locked(&shared.hubs.runs));
}

/// Poll every run for `hub` until nobody follows: each row at each change (after the first
/// poll, which only notes them).
///
/// A poll reads the unfinished runs (their standing changes with the clock: a lease that
/// ends makes a run `abandoned` without a write) and the runs written since the previous
/// poll, less [`SKEW_MS`] for clocks of other processes that run behind; not every run.
async fn poll_all(shared: Arc<Shared>, hub: Arc<Hub>) {
    let mut known: Option<HashMap<String, (Seen, i64)>> = None;
    let mut since = now_ms().saturating_sub(SKEW_MS);
    loop {
        if known.is_some() {
            tokio::time::sleep(POLL).await;
        }
        let forget = |all: &mut Weak<Hub>| {
            if all.as_ptr() == Arc::as_ptr(&hub) {
                *all = Weak::new();
            }
        };
        if abandoned(&hub, &shared.hubs.all, forget) {
            return;
        }
        let polled = now_ms();
        let mut runs = Vec::new();
        let mut failed = None;
        for query in [
            RunQuery { updated_since_ms: Some(since), ..RunQuery::default() },
            RunQuery { status: Some(AgentStatus::Running), ..RunQuery::default() },
            RunQuery { status: Some(AgentStatus::Idle), ..RunQuery::default() },
        ] {
            match shared.store.list_runs(&query).await {
                Ok(found) => runs.extend(found),
                Err(e) => failed = Some(e),
            }
        }
        if let Some(e) = failed {
            hub.send(Update::error(e));
            continue;
        }
        runs.sort_by(|a, b| a.created_ms.cmp(&b.created_ms).then_with(|| a.run_id.cmp(&b.run_id)));
        runs.dedup_by(|a, b| a.run_id == b.run_id);
        let first = known.is_none();
        let known = known.get_or_insert_with(HashMap::new);
        for row in runs {
            let updated = row.updated_ms;
            let view = serde_json::to_value(RunView::of(row, polled)).unwrap_or_default();
            let key = view.get("run_id").and_then(serde_json::Value::as_str).unwrap_or_default().to_owned();
            let now_seen = seen(&view);
            if known.get(&key).map(|(s, _)| s) != Some(&now_seen) {
                known.insert(key, (now_seen, updated));
                if !first {
                    hub.send(Update::new("run", &view));
                }
            }
        }
        // What the next poll cannot return unchanged is forgotten: memory for the runs
        // written lately, not for every run seen.
        since = polled.saturating_sub(SKEW_MS);
        known.retain(|_, (seen, updated)| *updated >= since || seen.0.contains("Running") || seen.0.contains("Idle"));
    }
}

/// How far behind the console's clock another process's may run for the all-runs stream
/// to still see its writes.
const SKEW_MS: i64 = 60_000;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{CheckpointStore, MemoryStore, RunRecord};
    use agent_core::AgentStatus;

    fn console(store: MemoryStore) -> Arc<Shared> {
        Arc::new(Shared {
            store: Arc::new(store),
            agents: Vec::new(),
            token: None,
            read_only: false,
            hubs: Hubs::default(),
        })
    }

    fn hub_of(shared: &Shared, id: &str) -> Option<Arc<Hub>> {
        locked(&shared.hubs.runs).get(id).and_then(Weak::upgrade)
    }

    #[tokio::test(start_paused = true)]
    async fn followers_of_a_run_share_one_poller_which_stops_when_the_last_leaves() {
        let store = MemoryStore::new();
        store.upsert_run(&RunRecord::new("r1", "a", AgentStatus::Running, 1, 1)).await.unwrap();
        let shared = console(store);
        let first = run_events(State(shared.clone()), Path("r1".to_owned())).await;
        let second = run_events(State(shared.clone()), Path("r1".to_owned())).await;
        let hub = hub_of(&shared, "r1").expect("a hub for the followed run");
        assert_eq!(hub.tx.receiver_count(), 2, "both clients on one hub");
        drop(hub);
        tokio::time::sleep(POLL * 2).await;
        assert!(hub_of(&shared, "r1").is_some(), "followed: polled on");
        drop(first);
        tokio::time::sleep(POLL * 2).await;
        assert!(hub_of(&shared, "r1").is_some(), "one client left");
        drop(second);
        tokio::time::sleep(POLL * 2).await;
        assert!(hub_of(&shared, "r1").is_none(), "nobody follows: the poller stopped");
        assert!(locked(&shared.hubs.runs).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_all_runs_hub_is_shared_and_stops_when_nobody_follows() {
        let shared = console(MemoryStore::new());
        let a = all_events(State(shared.clone())).await;
        let b = all_events(State(shared.clone())).await;
        let hub = locked(&shared.hubs.all).upgrade().expect("a hub");
        assert_eq!(hub.tx.receiver_count(), 2);
        drop((hub, a, b));
        tokio::time::sleep(POLL * 2).await;
        assert!(locked(&shared.hubs.all).upgrade().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_joining_late_gets_the_row_and_every_state_first() {
        let hub = Hub::new();
        let (missed, _rx) = hub.join();
        assert!(missed.is_empty());
        {
            let mut backlog = hub.backlog();
            backlog.row = Some(Update::new("run", &serde_json::json!({ "run_id": "r" })));
            for s in ["a", "b"] {
                let value = serde_json::json!({ "name": s });
                backlog.states.insert(s.to_owned(), (value.clone(), Update::new("state", &value)));
            }
        }
        let (missed, _rx) = hub.join();
        let kinds: Vec<_> = missed.iter().map(|u| (u.kind, u.data.to_string())).collect();
        assert_eq!(
            kinds,
            [
                ("run", r#"{"run_id":"r"}"#.to_owned()),
                ("state", r#"{"name":"a"}"#.to_owned()),
                ("state", r#"{"name":"b"}"#.to_owned())
            ]
        );
    }
}
