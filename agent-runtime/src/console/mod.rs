//! The run console: a JSON API and a web page over a store, for people who operate
//! workflows. [`router`] (or [`Console`]) gives an axum [`Router`] to serve alone (the
//! command line's `serve`) or to mount in a server of one's own.
//!
//! ```no_run
//! use agent_runtime::{console::Console, store::SqliteStore};
//!
//! # async fn serve() -> Result<(), Box<dyn std::error::Error>> {
//! let store = SqliteStore::open("runs.db")?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! Console::new(store).token("s3cret").serve(listener).await?;   // until SIGTERM or Ctrl-C
//! // or `Console::new(store).router()`: an axum `Router` to serve or nest in your own
//! # Ok(())
//! # }
//! ```
//!
//! | route | gives |
//! |---|---|
//! | `GET /` | the page (`console.js`, `console.css` beside it) |
//! | `GET /api/v1/runs?agent=&status=&q=&limit=&offset=` | runs, newest first: `{runs, total, offset, limit}` |
//! | `GET /api/v1/runs/{id}` | a run: its row, standing, owner and lease, checkpoint (context, states), requests for input, snapshot history |
//! | `GET /api/v1/runs/{id}/graph.svg`, `.dot`, `.mmd` `?expand=1` | its workflow's graph coloured by the run (workflows given with [`Console::agent`]); with `expand`, the child runs its states started drawn inside the states (from their definitions when given, else from their snapshots) |
//! | `GET /api/v1/runs/{id}/events` | Server-Sent Events: the run's row (`run`) and each state's record (`state`) at once, then each time one changes; ends with the finished run |
//! | `GET /api/v1/events` | Server-Sent Events: every run's row each time one changes (one poller shared by every client) |
//! | `GET /api/v1/inputs` | every pending request for input, across runs |
//! | `GET /api/v1/agents` | the workflows the console can start and draw |
//! | `POST /api/v1/runs` `{agent, input, key, start}` | submit a run for a worker; `201 {run_id}`; with `start: true`, run it in the console's process now |
//! | `POST /api/v1/runs/{id}/inputs/{request}` `{answer}` | answer a pending request: `200` taken, `422` refused by its validator (with the request asked again), `202` for a run nobody runs now |
//! | `POST /api/v1/runs/{id}/signals/{name}[?id=ID]` payload as JSON | send the run a signal: `201` kept (with its `signal_id`), `200` when the run has one with that id already, `404` unknown run, `409` finished run |
//! | `GET /api/v1/schedules` | every agent's schedules: cron, time zone, overlap policy, paused, next tick, last run |
//! | `POST /api/v1/runs/{id}/cancel` | cancel a run: asked of its owner through the store (`202`), or recorded at once for a run nobody runs |
//! | `POST /api/v1/runs/{id}/states/{state}/cancel` | cancel one state of a run (its running and waiting instances), asked of its owner through the store (`202`); the rest of the run goes on |
//! | `POST /api/v1/runs/{id}/pause` | ask a running run's owner to pause it (`202`) |
//! | `POST /api/v1/runs/{id}/resume` | go on with a paused, interrupted or abandoned run in this process (`202`) |
//! | `POST /api/v1/runs/{id}/retry` | run a failed run again from its failed states, in this process (`202`) |
//!
//! Invariants:
//! - The console reads and writes only through the store, so one console shows every
//!   worker's runs, and what it shows is what `list` and `show` say (a run nobody runs is
//!   never `Running`: see `standing`).
//! - Safe by default: with a token, every API call needs `Authorization: Bearer <token>`
//!   (compared in constant time); in read-only mode every POST is refused (403). The page
//!   itself carries no data: it is static, and fetches with the token the user gives it.
//!   Every response carries a content-security policy allowing only this origin's scripts
//!   and styles, and `X-Content-Type-Options: nosniff`. Stored text (state names, context
//!   values, prompts) reaches the page as JSON and is set as text, never as markup; the
//!   SVG escapes it.
//! - Writes go through the store's own guarded calls: an answer is the store's first
//!   answer (`answer_input`); a submission is `Agent::submit` of a workflow the console was
//!   given, so a worker serving that graph runs it. Cancel and pause of a run another
//!   process owns are requests on its row (`RunControl`) that the owner obeys within a
//!   second, and so is the cancel of one of its states (`store::cancel_state`, kept until
//!   an owner takes it); a run nobody owns is cancelled under a claim of the console's own, so no
//!   worker takes it meanwhile; resume is `Agent::recover` in the console's process, retry
//!   `Agent::retry`.
//! - No request makes the console allocate by a number it was given: `limit` is capped
//!   ([`MAX_LIMIT`]), bodies are capped by axum's default limit.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::store::CheckpointStore;
use crate::Agent;

mod api;
mod events;
mod page;

/// The most runs one page of `GET /api/v1/runs` lists.
pub const MAX_LIMIT: usize = 500;

/// The content-security policy of every response: this origin's scripts, styles and
/// images only, no inline script, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// A console over a store: its options, then [`router`](Console::router).
///
/// ```
/// use agent_runtime::{console::Console, store::MemoryStore, Agent};
///
/// let app = Console::new(MemoryStore::new())
///     .agent(Agent::new("reports"))   // drawn and started from the console
///     .token("s3cret")                // every API call needs `Authorization: Bearer s3cret`
///     .read_only(true)                // and no POST is accepted
///     .router();
/// # let _ = app;
/// ```
#[must_use]
pub struct Console {
    store: Arc<dyn CheckpointStore>,
    agents: Vec<Agent>,
    token: Option<String>,
    read_only: bool,
}

impl Console {
    /// A console over `store`: no workflows to start or draw, no token, actions allowed.
    pub fn new(store: impl CheckpointStore) -> Console {
        Console::with_store(Arc::new(store))
    }

    /// [`Console::new`] over a store already shared.
    pub fn with_store(store: Arc<dyn CheckpointStore>) -> Console {
        Console { store, agents: Vec::new(), token: None, read_only: false }
    }

    /// A workflow the console can draw (`graph.svg` of its runs) and submit runs of.
    pub fn agent(mut self, agent: Agent) -> Console {
        self.agents.retain(|a| a.name() != agent.name());
        self.agents.push(agent);
        self
    }

    /// Require `Authorization: Bearer <token>` on every API call. An empty token is no
    /// token.
    pub fn token(mut self, token: impl Into<String>) -> Console {
        self.token = Some(token.into()).filter(|t: &String| !t.is_empty());
        self
    }

    /// Refuse every action (403): a console to look, not to touch.
    pub fn read_only(mut self, read_only: bool) -> Console {
        self.read_only = read_only;
        self
    }

    /// The routes (see the module docs), ready to serve or to nest in another router.
    pub fn router(self) -> Router {
        let shared = Arc::new(Shared {
            agents: self
                .agents
                .into_iter()
                .map(|a| {
                    let bound = a.clone().with_store(self.store.clone());
                    (a.name().to_owned(), bound)
                })
                .collect(),
            store: self.store,
            token: self.token,
            read_only: self.read_only,
            hubs: events::Hubs::default(),
        });
        let api = Router::new()
            .route("/runs", get(api::list_runs).post(api::submit))
            .route("/runs/{id}", get(api::run))
            .route("/runs/{id}/graph.svg", get(api::graph_svg))
            .route("/runs/{id}/graph.dot", get(api::graph_dot))
            .route("/runs/{id}/graph.mmd", get(api::graph_mermaid))
            .route("/runs/{id}/events", get(events::run_events))
            .route("/runs/{id}/inputs/{request}", post(api::answer))
            .route("/runs/{id}/signals/{name}", post(api::signal))
            .route("/runs/{id}/cancel", post(api::cancel))
            .route("/runs/{id}/states/{state}/cancel", post(api::cancel_one_state))
            .route("/runs/{id}/pause", post(api::pause))
            .route("/runs/{id}/resume", post(api::resume))
            .route("/runs/{id}/retry", post(api::retry))
            .route("/events", get(events::all_events))
            .route("/inputs", get(api::inputs))
            .route("/schedules", get(api::schedules))
            .route("/agents", get(api::agents))
            .fallback(api::not_found)
            .layer(middleware::from_fn_with_state(shared.clone(), guard));
        Router::new()
            .route("/", get(page::index))
            .route("/console.js", get(page::script))
            .route("/console.css", get(page::style))
            .route("/favicon.ico", get(page::icon))
            .nest("/api/v1", api)
            .layer(middleware::from_fn(headers))
            .with_state(shared)
    }
}

impl Console {
    /// Serve the console on `listener` until SIGTERM or Ctrl-C, then finish the requests
    /// under way and return.
    ///
    /// # Errors
    ///
    /// What the listener fails with.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        axum::serve(listener, self.router()).with_graceful_shutdown(crate::worker::shutdown_signal()).await
    }
}

/// The console of `store` with its defaults: read and answer, no token, no workflows (see
/// [`Console`] for more).
pub fn router(store: impl CheckpointStore) -> Router {
    Console::new(store).router()
}

/// What every handler shares.
pub(crate) struct Shared {
    store: Arc<dyn CheckpointStore>,
    /// The workflows given, by name, each bound to the store.
    agents: Vec<(String, Agent)>,
    token: Option<String>,
    read_only: bool,
    /// The live streams' pollers (see `events`).
    hubs: events::Hubs,
}

impl Shared {
    fn agent(&self, name: &str) -> Option<&Agent> {
        self.agents.iter().find(|(n, _)| n == name).map(|(_, a)| a)
    }
}

/// The API's gate: the token, then read-only mode.
async fn guard(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    if let Some(token) = &shared.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !same(given.as_bytes(), token.as_bytes()) {
            let mut response = api::error(StatusCode::UNAUTHORIZED, "a token is needed: Authorization: Bearer <token>");
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    if shared.read_only && request.method() != Method::GET && request.method() != Method::HEAD {
        return api::error(StatusCode::FORBIDDEN, "this console is read-only");
    }
    next.run(request).await
}

/// Whether two secrets are equal, in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// The headers every response carries.
async fn headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response.into_response()
}
