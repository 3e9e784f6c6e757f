//! The console's JSON API (see the module docs of `console` for the routes).
//!
//! Invariants:
//! - Every error is JSON `{"error": "..."}` with a status that says what went wrong: 400
//!   for a request that cannot be understood, 404 for a run, request, state or workflow the
//!   store or the console does not know, 409 for an answer to a request already answered
//!   or an action the run's standing refuses (a finished run cancelled), 502 when the
//!   store fails.
//! - A run's standing is the one `list` and `show` print (`queued`, `interrupted`,
//!   `abandoned` for a run nobody runs), by the console's clock.
//! - Lists are bounded: at most [`MAX_LIMIT`](super::MAX_LIMIT) runs a page.

use std::sync::Arc;

use agent_core::{AgentStatus, Context, Diagram};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{Shared, MAX_LIMIT};
use crate::store::{
    cancel_run, cancel_state, now_ms, pause_run, read_checkpoint, Cancelling, ControlError, InputRecord, RunQuery,
    RunRecord,
};
use crate::SubmitOptions;

/// An error response: `status` with `{"error": message}`.
pub(super) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn store_failed(e: impl std::fmt::Display) -> Response {
    error(StatusCode::BAD_GATEWAY, format!("the store failed: {e}"))
}

pub(super) async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such API route (see /api/v1/runs)")
}

/// A run's row as the API gives it.
#[derive(Serialize)]
pub(super) struct RunView {
    run_id: String,
    agent: String,
    status: AgentStatus,
    /// What `list` says: the status, or `queued`, `interrupted`, `abandoned`.
    standing: &'static str,
    owner: Option<String>,
    lease_until_ms: Option<i64>,
    epoch: u64,
    created_ms: i64,
    updated_ms: i64,
}

impl RunView {
    pub(super) fn of(r: RunRecord, now_ms: i64) -> RunView {
        RunView {
            standing: r.standing(now_ms),
            run_id: r.run_id,
            agent: r.agent,
            status: r.status,
            owner: r.owner,
            lease_until_ms: r.lease_until_ms,
            epoch: r.epoch,
            created_ms: r.created_ms,
            updated_ms: r.updated_ms,
        }
    }
}

/// `GET /runs`'s query.
#[derive(Deserialize)]
pub(super) struct ListQuery {
    agent: Option<String>,
    /// A status (`Running`, ...) or a standing (`queued`, `abandoned`, ...).
    status: Option<String>,
    /// Runs whose id contains this (case matters).
    q: Option<String>,
    /// Runs created at or after this time (ms since the epoch).
    since_ms: Option<i64>,
    /// Runs created before this time.
    until_ms: Option<i64>,
    limit: Option<usize>,
    offset: Option<usize>,
}

pub(super) async fn list_runs(State(shared): State<Arc<Shared>>, Query(q): Query<ListQuery>) -> Response {
    let store_status = q.status.as_deref().and_then(|s| AgentStatus::ALL.iter().copied().find(|a| a.as_str() == s));
    if let (Some(s), None) = (q.status.as_deref(), store_status) {
        if !["queued", "interrupted", "abandoned"].contains(&s) {
            return error(StatusCode::BAD_REQUEST, format!("no status or standing `{s}`"));
        }
    }
    let limit = q.limit.unwrap_or(100).min(MAX_LIMIT);
    let offset = q.offset.unwrap_or(0);
    let filters = RunQuery {
        agent: q.agent.clone(),
        created_since_ms: q.since_ms,
        created_before_ms: q.until_ms,
        id_contains: q.q.clone().filter(|t| !t.is_empty()),
        ..RunQuery::default()
    };
    let now = now_ms();
    let status = match (q.status.as_deref(), store_status) {
        // A status the row says alone: the store filters, counts and pages.
        (None, _) => None,
        (Some(_), Some(s)) if s != AgentStatus::Running && s != AgentStatus::Idle => Some(s),
        // A standing is a status read with the owner and the lease, by the console's clock:
        // the unfinished runs (`Idle`, `Running`) are read and sorted out here.
        (Some(wanted), _) => {
            let mut matching = Vec::new();
            for status in [AgentStatus::Running, AgentStatus::Idle] {
                match shared.store.list_runs(&RunQuery { status: Some(status), ..filters.clone() }).await {
                    Ok(runs) => matching.extend(runs.into_iter().filter(|r| r.standing(now) == wanted)),
                    Err(e) => return store_failed(e),
                }
            }
            matching.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then_with(|| a.run_id.cmp(&b.run_id)));
            let total = matching.len();
            let page: Vec<RunView> =
                matching.into_iter().skip(offset).take(limit).map(|r| RunView::of(r, now)).collect();
            return Json(json!({ "runs": page, "total": total, "offset": offset, "limit": limit })).into_response();
        }
    };
    let query = RunQuery { status, limit: Some(limit), offset, ..filters };
    let (runs, total) = match tokio::try_join!(shared.store.list_runs(&query), shared.store.count_runs(&query)) {
        Ok(found) => found,
        Err(e) => return store_failed(e),
    };
    let page: Vec<RunView> = runs.into_iter().map(|r| RunView::of(r, now)).collect();
    Json(json!({ "runs": page, "total": total, "offset": offset, "limit": limit })).into_response()
}

/// An input request as the API gives it.
#[derive(Serialize)]
struct InputView<'a> {
    run_id: &'a str,
    request_id: &'a str,
    state: Option<&'a str>,
    prompt: &'a str,
    requested_ms: i64,
    timeout_ms: Option<u64>,
    /// When it times out (ms since the epoch), if it does.
    deadline_ms: Option<i64>,
    default: Option<&'a str>,
    answer: Option<&'a str>,
    answered_ms: Option<i64>,
    defaulted: bool,
}

impl<'a> InputView<'a> {
    fn of(r: &'a InputRecord) -> InputView<'a> {
        InputView {
            run_id: &r.run_id,
            request_id: &r.request_id,
            state: r.state.as_deref(),
            prompt: &r.prompt,
            requested_ms: r.requested_ms,
            timeout_ms: r.timeout_ms,
            deadline_ms: r.timeout_ms.map(|t| r.requested_ms.saturating_add(i64::try_from(t).unwrap_or(i64::MAX))),
            default: r.default.as_deref(),
            answer: r.answer.as_deref(),
            answered_ms: r.answered_ms,
            defaulted: r.defaulted,
        }
    }
}

pub(super) async fn run(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let store = &*shared.store;
    let row = match row_of(&shared, &id).await {
        Ok(row) => row,
        Err(response) => return response,
    };
    // A run whose records cannot be read is still shown, with why.
    let (checkpoint, unreadable) = match read_checkpoint(store, &id).await {
        Ok(c) => (c, None),
        Err(e) => (None, Some(e.to_string())),
    };
    let inputs = match store.inputs(Some(&id), false).await {
        Ok(i) => i,
        Err(e) => return store_failed(e),
    };
    let history = match store.snapshots(&id, 50).await {
        Ok(s) => s
            .into_iter()
            .map(|s| json!({ "seq": s.seq, "taken_ms": s.taken_ms, "bytes": s.data.len() }))
            .collect::<Vec<Value>>(),
        Err(e) => return store_failed(e),
    };
    let lineage = match store.lineage(&id).await {
        Ok(l) => l.map(|l| LineageView::of(&l)),
        Err(e) => return store_failed(e),
    };
    let descendants = match store.descendants(&id).await {
        Ok(d) => d.iter().map(LineageView::of).collect::<Vec<_>>(),
        Err(e) => return store_failed(e),
    };
    let drawable = shared.agent(&row.agent).is_some();
    let context = checkpoint.as_ref().map(|c| plain_context(c.context.get()));
    Json(json!({
        "run": RunView::of(row, now_ms()),
        "context": context,
        "checkpoint": checkpoint,
        "unreadable": unreadable,
        "inputs": inputs.iter().map(InputView::of).collect::<Vec<_>>(),
        "history": history,
        "lineage": lineage,
        "descendants": descendants,
        "graph": drawable,
    }))
    .into_response()
}

/// Where a run came from, or a run made from it, as the API gives it.
#[derive(Serialize)]
struct LineageView {
    run_id: String,
    parent_run_id: String,
    parent_seq: Option<u64>,
    /// `fork` or `child`.
    kind: &'static str,
    created_ms: i64,
}

impl LineageView {
    fn of(l: &crate::store::Lineage) -> LineageView {
        LineageView {
            run_id: l.run_id.clone(),
            parent_run_id: l.parent_run_id.clone(),
            parent_seq: l.parent_seq,
            kind: l.kind.as_str(),
            created_ms: l.created_ms,
        }
    }
}

/// A checkpoint's context as people read it: each key's value, without the checkpoint's
/// encoding (`{"plain": v}` is `v`; a typed value `{"typed": t}` is `t`). Text that is not
/// such a context is given as it is.
fn plain_context(stored: &str) -> Value {
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(stored) else {
        return Value::String(stored.to_owned());
    };
    let values = map.into_iter().map(|(key, value)| {
        let shown = match value {
            Value::Object(mut tagged) if tagged.len() == 1 => {
                match tagged.remove("plain").or_else(|| tagged.remove("typed")) {
                    Some(inner) => inner,
                    None => Value::Object(tagged),
                }
            }
            other => other,
        };
        (key, shown)
    });
    Value::Object(values.collect())
}

pub(super) async fn inputs(State(shared): State<Arc<Shared>>) -> Response {
    match shared.store.inputs(None, true).await {
        Ok(inputs) => Json(json!({ "inputs": inputs.iter().map(InputView::of).collect::<Vec<_>>() })).into_response(),
        Err(e) => store_failed(e),
    }
}

pub(super) async fn agents(State(shared): State<Arc<Shared>>) -> Response {
    let names: Vec<&str> = shared.agents.iter().map(|(n, _)| n.as_str()).collect();
    Json(json!({ "agents": names })).into_response()
}

/// `?expand=1` on a run's graph: draw the child runs its states started inside it.
#[derive(Deserialize, Default)]
pub(super) struct GraphQuery {
    #[serde(default)]
    expand: Option<String>,
}

impl GraphQuery {
    fn expand(&self) -> bool {
        matches!(self.expand.as_deref(), Some("1" | "true" | "yes" | ""))
    }
}

/// The run's workflow's diagram, coloured by its stored checkpoint and requests; with
/// `expand`, the child runs its states started drawn inside it.
async fn diagram(shared: &Shared, id: &str, expand: bool) -> Result<Diagram, Response> {
    let store = &*shared.store;
    let row = row_of(shared, id).await?;
    let Some(agent) = shared.agent(&row.agent) else {
        return Err(error(
            StatusCode::NOT_FOUND,
            format!("this console does not know workflow `{}` to draw it", row.agent),
        ));
    };
    let mut diagram = crate::diagram::unrun(agent);
    if let Ok(Some(checkpoint)) = read_checkpoint(store, id).await {
        diagram = diagram.with_checkpoint(&checkpoint);
    }
    let inputs = store.inputs(Some(id), false).await.map_err(store_failed)?;
    let diagram = diagram.with_requests(inputs.iter().map(|r| &r.request));
    if !expand {
        return Ok(diagram);
    }
    let known = |name: &str| shared.agent(name).map(crate::diagram::unrun);
    crate::diagram::expand_children(store, &row.run_id, diagram, &known).await.map_err(store_failed)
}

fn text(content_type: &'static str, body: String) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-store")], body).into_response()
}

/// A run's graph drawn by `draw`, served as `content_type`.
async fn graph(
    shared: &Shared,
    id: &str,
    q: &GraphQuery,
    content_type: &'static str,
    draw: fn(&Diagram) -> String,
) -> Response {
    match diagram(shared, id, q.expand()).await {
        Ok(d) => text(content_type, draw(&d)),
        Err(response) => response,
    }
}

pub(super) async fn graph_svg(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(q): Query<GraphQuery>,
) -> Response {
    graph(&shared, &id, &q, "image/svg+xml", Diagram::to_svg).await
}

pub(super) async fn graph_dot(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(q): Query<GraphQuery>,
) -> Response {
    graph(&shared, &id, &q, "text/vnd.graphviz; charset=utf-8", Diagram::to_dot).await
}

pub(super) async fn graph_mermaid(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(q): Query<GraphQuery>,
) -> Response {
    graph(&shared, &id, &q, "text/vnd.mermaid; charset=utf-8", Diagram::to_mermaid).await
}

/// `POST /runs`'s body.
#[derive(Deserialize)]
pub(super) struct SubmitBody {
    agent: String,
    /// The run's input context: a JSON object.
    #[serde(default)]
    input: Option<Value>,
    /// An idempotency key.
    #[serde(default)]
    key: Option<String>,
    /// Run it in the console's process now, instead of queueing it for a worker.
    #[serde(default)]
    start: bool,
}

pub(super) async fn submit(
    State(shared): State<Arc<Shared>>,
    body: Result<Json<SubmitBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let Some(agent) = shared.agent(&body.agent) else {
        return error(StatusCode::NOT_FOUND, format!("this console does not know workflow `{}`", body.agent));
    };
    // Each key of the input object becomes a context key (as the command line's `--input`).
    let ctx = Context::new();
    match body.input {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (key, value) in map {
                ctx.set_state(&key, value);
            }
        }
        Some(_) => {
            return error(StatusCode::BAD_REQUEST, "the input must be a JSON object, like {\"topic\": \"rust\"}")
        }
    }
    if body.start {
        if body.key.is_some() {
            return error(
                StatusCode::BAD_REQUEST,
                "an idempotency key is for submitted runs: leave out `start` or `key`",
            );
        }
        return match agent.start(crate::RunOptions::new().context(ctx)) {
            Ok(handle) => {
                let run_id = handle.id().to_owned();
                tokio::spawn(async move {
                    if let Err(e) = handle.await {
                        tracing::warn!(error = %e, "a run the console started ended with an error");
                    }
                });
                (StatusCode::CREATED, Json(json!({ "run_id": run_id, "started": true }))).into_response()
            }
            Err(e) => error(StatusCode::CONFLICT, format!("the run could not be started: {e}")),
        };
    }
    let mut options = SubmitOptions::new().context(ctx);
    if let Some(key) = body.key {
        options = options.idempotency_key(key);
    }
    match agent.submit(options).await {
        Ok(run_id) => (StatusCode::CREATED, Json(json!({ "run_id": run_id }))).into_response(),
        Err(e) => error(StatusCode::BAD_GATEWAY, format!("the run could not be submitted: {e}")),
    }
}

/// `POST /runs/{id}/inputs/{request}`'s body.
#[derive(Deserialize)]
pub(super) struct AnswerBody {
    answer: String,
}

pub(super) async fn answer(
    State(shared): State<Arc<Shared>>,
    Path((id, request)): Path<(String, String)>,
    body: Result<Json<AnswerBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let store = &*shared.store;
    let inputs = match store.inputs(Some(&id), false).await {
        Ok(i) => i,
        Err(e) => return store_failed(e),
    };
    let Some(record) = inputs.iter().find(|r| r.request_id == request) else {
        return error(StatusCode::NOT_FOUND, format!("run `{id}` has no request `{request}`"));
    };
    if let Some(given) = &record.answer {
        return answered(&request, given);
    }
    let row = match row_of(&shared, &id).await {
        Ok(row) => row,
        Err(response) => return response,
    };
    let pending = |c: &Option<agent_core::Checkpoint>| {
        c.as_ref().is_some_and(|c| c.pending_inputs.iter().any(|p| p.request_id == request && p.answer.is_none()))
    };
    let listed = pending(&read_checkpoint(store, &id).await.unwrap_or(None));
    match store.answer_input(&id, &request, &body.answer, false, now_ms()).await {
        Ok(true) if !row.is_leased_at(now_ms()) => {
            // Nobody runs it now: its next owner reads the answer (and its validator).
            (StatusCode::ACCEPTED, Json(json!({ "answered": true, "run_id": id, "request_id": request })))
                .into_response()
        }
        Ok(true) => match verdict(store, record, listed, pending).await {
            Verdict::Refused { again } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({
                    "error": format!("the request's validator refused `{}`; the run asks again", body.answer),
                    "refused": true,
                    "run_id": id,
                    "request_id": again,
                })),
            )
                .into_response(),
            Verdict::Taken => Json(json!({ "answered": true, "run_id": id, "request_id": request })).into_response(),
        },
        Ok(false) => {
            let now = store.inputs(Some(&id), false).await.unwrap_or_default();
            let given = now.into_iter().find(|r| r.request_id == request).and_then(|r| r.request.answer);
            answered(&request, given.as_deref().unwrap_or(""))
        }
        Err(e) => store_failed(e),
    }
}

/// What the run made of an answer given through the store.
enum Verdict {
    /// It went on with it, or said nothing against it within [`VERDICT_WAIT`].
    Taken,
    /// Its validator refused it: the run asks again, as request `again`.
    Refused { again: String },
}

/// How long an answer waits for the run's verdict: a few of the owner's polls of the store
/// for answers (every 500 ms).
const VERDICT_WAIT: std::time::Duration = std::time::Duration::from_millis(1500);

/// Wait (at most [`VERDICT_WAIT`]) for the run to take `answered`'s answer or refuse it. A
/// refusal is the owner asking again: a new pending request of the same state with the same
/// prompt and the same ask time. The run took it when its checkpoint, which listed the
/// request as pending (`listed`), no longer does, or when it finished.
async fn verdict(
    store: &dyn crate::store::CheckpointStore,
    answered: &InputRecord,
    listed: bool,
    pending: impl Fn(&Option<agent_core::Checkpoint>) -> bool,
) -> Verdict {
    let id = &answered.run_id;
    let give_up = tokio::time::Instant::now() + VERDICT_WAIT;
    while tokio::time::Instant::now() < give_up {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let again = store.inputs(Some(id), true).await.unwrap_or_default().into_iter().find(|r| {
            r.request_id != answered.request_id
                && r.state == answered.state
                && r.prompt == answered.prompt
                && r.requested_ms == answered.requested_ms
        });
        if let Some(again) = again {
            return Verdict::Refused { again: again.request.request_id };
        }
        if store.get_run(id).await.ok().flatten().is_some_and(|r| r.status.is_finished()) {
            return Verdict::Taken;
        }
        if listed && !pending(&read_checkpoint(store, id).await.unwrap_or(None)) {
            return Verdict::Taken;
        }
    }
    Verdict::Taken
}

fn answered(request: &str, answer: &str) -> Response {
    (
        StatusCode::CONFLICT,
        Json(json!({ "error": format!("request `{request}` was answered already"), "answer": answer })),
    )
        .into_response()
}

/// The row of run `id`, or the response that says why not.
async fn row_of(shared: &Shared, id: &str) -> Result<RunRecord, Response> {
    match shared.store.get_run(id).await {
        Ok(Some(row)) => Ok(row),
        Ok(None) => Err(error(StatusCode::NOT_FOUND, format!("no run `{id}` in the store"))),
        Err(e) => Err(store_failed(e)),
    }
}

/// `POST /runs/{id}/cancel` ([`cancel_run`]): `202` when its owner was asked, `200` when
/// a run nobody ran is cancelled now.
pub(super) async fn cancel(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match cancel_run(&*shared.store, &id).await {
        Ok(Cancelling::Asked) => {
            (StatusCode::ACCEPTED, Json(json!({ "run_id": id, "requested": "cancel" }))).into_response()
        }
        Ok(_) => Json(json!({ "run_id": id, "status": "Cancelled" })).into_response(),
        Err(e) => control_failed(e),
    }
}

/// `POST /runs/{id}/pause` ([`pause_run`]): `202`; a run nobody runs is a `409`.
pub(super) async fn pause(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match pause_run(&*shared.store, &id).await {
        Ok(()) => (StatusCode::ACCEPTED, Json(json!({ "run_id": id, "requested": "pause" }))).into_response(),
        Err(e) => control_failed(e),
    }
}

/// `POST /runs/{id}/states/{state}/cancel` ([`cancel_state`]): `202` (its owner, in any
/// process, cancels the state within a second); a state the run's checkpoint does not
/// have is a `404`, a finished run a `409`.
pub(super) async fn cancel_one_state(
    State(shared): State<Arc<Shared>>,
    Path((id, state)): Path<(String, String)>,
) -> Response {
    match cancel_state(&*shared.store, &id, &state).await {
        Ok(()) => {
            (StatusCode::ACCEPTED, Json(json!({ "run_id": id, "state": state, "requested": "cancel" }))).into_response()
        }
        Err(e) => control_failed(e),
    }
}

fn control_failed(e: ControlError) -> Response {
    match e {
        ControlError::NoRun(_) | ControlError::NoState { .. } => error(StatusCode::NOT_FOUND, e.to_string()),
        ControlError::NotRunning { .. } => error(StatusCode::CONFLICT, e.to_string()),
        e => store_failed(e),
    }
}

/// `POST /runs/{id}/resume`: goes on with a paused, interrupted or abandoned run in this
/// process (`Agent::recover` of a workflow the console was given: `202`); a run somebody
/// runs, or a finished one, is a `409`.
pub(super) async fn resume(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let row = match row_of(&shared, &id).await {
        Ok(row) => row,
        Err(response) => return response,
    };
    let now = now_ms();
    if row.status.is_finished() || row.is_leased_at(now) {
        return error(StatusCode::CONFLICT, format!("run `{id}` cannot be resumed: it is {}", row.standing(now)));
    }
    let Some(agent) = shared.agent(&row.agent).cloned() else {
        return error(StatusCode::NOT_FOUND, format!("this console does not know workflow `{}` to run it", row.agent));
    };
    let run_id = id.clone();
    tokio::spawn(async move {
        if let Err(e) = agent.recover(&run_id).await {
            tracing::warn!(run_id, error = %e, "the console's resumed run ended with an error");
        }
    });
    (StatusCode::ACCEPTED, Json(json!({ "run_id": id, "resumed": true }))).into_response()
}

/// `POST /runs/{id}/retry`: runs a failed run again from its failed states, in this process
/// (`Agent::retry` of a workflow the console was given: `202`); any other run is a `409`.
pub(super) async fn retry(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let row = match row_of(&shared, &id).await {
        Ok(row) => row,
        Err(response) => return response,
    };
    if row.status != AgentStatus::Failed || row.is_leased_at(now_ms()) {
        return error(StatusCode::CONFLICT, format!("run `{id}` did not fail: it is {}", row.standing(now_ms())));
    }
    let Some(agent) = shared.agent(&row.agent).cloned() else {
        return error(StatusCode::NOT_FOUND, format!("this console does not know workflow `{}` to run it", row.agent));
    };
    let run_id = id.clone();
    tokio::spawn(async move {
        if let Err(e) = agent.retry(&run_id).await {
            tracing::warn!(run_id, error = %e, "the console's retried run ended with an error");
        }
    });
    (StatusCode::ACCEPTED, Json(json!({ "run_id": id, "retried": true }))).into_response()
}

/// `POST /runs/{id}/signals/{name}`'s query: an id for the signal, to send it at most once.
#[derive(Deserialize)]
pub(super) struct SignalQuery {
    id: Option<String>,
}

/// `POST /runs/{id}/signals/{name}` with the payload as the JSON body: the signal is kept
/// for the run's next wait on `name` (see `signal::send`). 201 with its id when kept, 200
/// when the run already had a signal with the id given; 404 for an unknown run, 409 for a
/// finished one, 400 for a body that is not JSON or a bad name or id.
pub(super) async fn signal(
    State(shared): State<Arc<Shared>>,
    Path((id, name)): Path<(String, String)>,
    Query(query): Query<SignalQuery>,
    body: Result<Json<serde_json::Value>, axum::extract::rejection::JsonRejection>,
) -> Response {
    use crate::signal::SignalError;
    let Json(payload) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    match crate::signal::send(&*shared.store, &id, &name, query.id.as_deref(), payload).await {
        Ok(receipt) => {
            let status = if receipt.duplicate { StatusCode::OK } else { StatusCode::CREATED };
            let body =
                json!({ "run_id": id, "name": name, "signal_id": receipt.signal_id, "duplicate": receipt.duplicate });
            (status, Json(body)).into_response()
        }
        Err(e @ SignalError::UnknownRun { .. }) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ SignalError::Finished { .. }) => error(StatusCode::CONFLICT, e.to_string()),
        Err(e @ SignalError::Invalid { .. }) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(SignalError::Store(e)) => store_failed(e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `GET /schedules`: every agent's schedules in the store, with their cursors (times in
/// milliseconds since the Unix epoch; `next_tick_ms` absent when the expression has no tick
/// left).
pub(super) async fn schedules(State(shared): State<Arc<Shared>>) -> Response {
    match shared.store.schedules(None).await {
        Ok(all) => {
            let list: Vec<Value> = all
                .iter()
                .map(|s| {
                    json!({
                        "agent": s.agent,
                        "name": s.name,
                        "cron": s.cron,
                        "timezone": s.timezone,
                        "overlap": s.overlap,
                        "catch_up_ms": s.catch_up_ms,
                        "paused": s.paused,
                        "next_tick_ms": (s.next_tick_ms != i64::MAX).then_some(s.next_tick_ms),
                        "buffered_tick_ms": s.buffered_tick_ms,
                        "last_run_id": s.last_run_id,
                    })
                })
                .collect();
            Json(json!({ "schedules": list })).into_response()
        }
        Err(e) => store_failed(e),
    }
}
