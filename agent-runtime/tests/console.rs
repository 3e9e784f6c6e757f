//! The console's JSON API and page, called as a service (no socket), on the memory store,
//! a SQLite file and PostgreSQL: a real run waits for a person, the console lists it,
//! shows it, draws it, answers it, and the run completes; runs are submitted and found by
//! status; the token, read-only mode and the headers that keep the page safe.
//!
//! PostgreSQL tests follow `common/pg.rs`: skipped without `AGENT_TEST_POSTGRES_URL`,
//! failed under CI without it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_core::{AgentStatus, Context, StateResult};
use agent_runtime::console::Console;
use agent_runtime::store::{CheckpointStore, MemoryStore};
use agent_runtime::{Agent, RunOptions};
use axum::http::{header, Method, StatusCode};
use serde_json::{json, Value};

mod common;

use common::http::{call, get};
use common::review::until_asked;

fn asker(name: &str) -> Agent {
    common::review::asker(name, None)
}

/// The data of each Server-Sent Event of kind `kind` in `body`, as JSON.
fn sse_data(body: &str, kind: &str) -> Vec<Value> {
    body.split("\n\n")
        .filter_map(|block| {
            let mut lines = block.lines();
            (lines.next()? == format!("event: {kind}")).then_some(())?;
            serde_json::from_str(lines.next()?.strip_prefix("data: ")?).ok()
        })
        .collect()
}

fn ids(list: &Value) -> Vec<String> {
    list["runs"].as_array().unwrap().iter().map(|r| r["run_id"].as_str().unwrap().to_owned()).collect()
}

/// The whole API on one store.
async fn scenario(store: Arc<dyn CheckpointStore>, tag: &str) {
    let name = format!("review-{tag}");
    let agent = asker(&name).with_store(store.clone());
    let handle = agent.start(RunOptions::new()).unwrap();
    let id = handle.id().to_owned();
    until_asked(&*store, &id).await;
    let app = Console::with_store(store.clone()).agent(asker(&name)).router();

    // The list: the run, live, found by status and by part of its id; errors are JSON.
    let all = get(&app, "/api/v1/runs").await;
    assert_eq!(all.status, StatusCode::OK, "{tag}: {}", all.body);
    let all = all.json();
    assert!(ids(&all).contains(&id), "{tag}: {all}");
    let row = all["runs"].as_array().unwrap().iter().find(|r| r["run_id"] == id.as_str()).unwrap();
    assert_eq!(row["standing"], "Running", "{tag}");
    assert!(row["owner"].is_string(), "{tag}: a live run shows its owner");
    assert!(ids(&get(&app, "/api/v1/runs?status=Running").await.json()).contains(&id), "{tag}");
    assert!(!ids(&get(&app, "/api/v1/runs?status=Completed").await.json()).contains(&id), "{tag}");
    assert_eq!(
        ids(&get(&app, &format!("/api/v1/runs?q={}", &id[..8])).await.json()),
        std::slice::from_ref(&id),
        "{tag}"
    );
    let bad = get(&app, "/api/v1/runs?status=Sleepy").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{tag}");
    assert!(bad.json()["error"].as_str().unwrap().contains("Sleepy"), "{tag}");

    // The inbox: the request, its prompt as data.
    let inbox = get(&app, "/api/v1/inputs").await.json();
    let asked = inbox["inputs"].as_array().unwrap().iter().find(|i| i["run_id"] == id.as_str()).unwrap().clone();
    assert_eq!(asked["prompt"], "Approve <b>the</b> draft?", "{tag}");
    assert_eq!(asked["state"], "review", "{tag}");
    let request = asked["request_id"].as_str().unwrap().to_owned();

    // The run: row, checkpoint (states, context), requests, history.
    let run = get(&app, &format!("/api/v1/runs/{id}")).await.json();
    assert_eq!(run["run"]["agent"], name.as_str(), "{tag}");
    let states = run["checkpoint"]["states"].as_array().unwrap();
    let status_of = |s: &str| states.iter().find(|r| r["name"] == s).map(|r| r["status"].clone());
    assert_eq!(status_of("prepare"), Some(json!("Completed")), "{tag}: {run}");
    assert_eq!(status_of("review"), Some(json!("Running")), "{tag}");
    assert_eq!(run["context"]["draft"], "<b>bold</b> & \"quoted\"", "{tag}");
    assert_eq!(run["inputs"][0]["request_id"], request.as_str(), "{tag}");
    assert!(!run["history"].as_array().unwrap().is_empty(), "{tag}: its snapshots");
    assert_eq!(run["graph"], true, "{tag}");
    let missing = get(&app, "/api/v1/runs/no-such-run").await;
    assert_eq!((missing.status, missing.json()["error"].is_string()), (StatusCode::NOT_FOUND, true), "{tag}");

    // Its graph, coloured by the run: SVG (a hostile name as text), DOT, Mermaid.
    let svg = get(&app, &format!("/api/v1/runs/{id}/graph.svg")).await;
    assert_eq!(svg.status, StatusCode::OK, "{tag}: {}", svg.body);
    assert_eq!(svg.headers[header::CONTENT_TYPE], "image/svg+xml", "{tag}");
    assert!(svg.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{tag}: the name, escaped");
    assert!(!svg.body.contains("<script"), "{tag}: never markup");
    assert!(svg.body.contains("data-status=\"Running\""), "{tag}: review runs");
    assert!(get(&app, &format!("/api/v1/runs/{id}/graph.dot")).await.body.contains("digraph"), "{tag}");
    assert!(get(&app, &format!("/api/v1/runs/{id}/graph.mmd")).await.body.contains("flowchart"), "{tag}");

    // A client following the run from now on: its row and states at once, then each change.
    let following = tokio::spawn({
        let (app, uri) = (app.clone(), format!("/api/v1/runs/{id}/events"));
        async move { get(&app, &uri).await }
    });

    // Answer from the console: the run goes on and completes; a second answer is refused.
    // An answer the request's validator refuses: the run asks again, and the console says so.
    let refused = format!("/api/v1/runs/{id}/inputs/{request}");
    let refused = call(&app, Method::POST, &refused, None, Some(json!({ "answer": "maybe" }))).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{tag}: {}", refused.body);
    let refused = refused.json();
    assert_eq!(refused["refused"], true, "{tag}");
    assert!(refused["error"].as_str().unwrap().contains("maybe"), "{tag}: {refused}");
    let request = refused["request_id"].as_str().unwrap().to_owned();
    let pending = get(&app, "/api/v1/inputs").await.json();
    let pending: Vec<&str> =
        pending["inputs"].as_array().unwrap().iter().filter_map(|i| i["request_id"].as_str()).collect();
    assert!(pending.contains(&request.as_str()), "{tag}: asked again as {request}: {pending:?}");

    let answer = format!("/api/v1/runs/{id}/inputs/{request}");
    let first = call(&app, Method::POST, &answer, None, Some(json!({ "answer": "approve" }))).await;
    assert_eq!(first.status, StatusCode::OK, "{tag}: {}", first.body);
    let again = call(&app, Method::POST, &answer, None, Some(json!({ "answer": "reject" }))).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{tag}");
    assert_eq!(again.json()["answer"], "approve", "{tag}");
    let unknown = format!("/api/v1/runs/{id}/inputs/input-99");
    let unknown = call(&app, Method::POST, &unknown, None, Some(json!({ "answer": "x" }))).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{tag}");
    let result = tokio::time::timeout(Duration::from_secs(30), handle).await.unwrap().unwrap();
    assert_eq!(result.status(), AgentStatus::Completed, "{tag}");
    let done = get(&app, &format!("/api/v1/runs/{id}")).await.json();
    assert_eq!(done["run"]["standing"], "Completed", "{tag}");
    assert_eq!(done["context"]["verdict"], "approve", "{tag}");

    // The follower saw review running, then completed, and its stream ended with the run.
    let followed = tokio::time::timeout(Duration::from_secs(30), following).await.unwrap().unwrap().body;
    let review: Vec<Value> = sse_data(&followed, "state").into_iter().filter(|s| s["name"] == "review").collect();
    let statuses: Vec<&Value> = review.iter().map(|s| &s["status"]).collect();
    assert_eq!(statuses, [&json!("Running"), &json!("Completed")], "{tag}: {followed}");
    assert_eq!(review[1]["run_id"], id.as_str(), "{tag}");
    assert!(followed.starts_with("event: run\n"), "{tag}: {followed}");
    assert!(followed.contains("\"standing\":\"Completed\""), "{tag}: {followed}");

    // Its stream: the row at once; a finished run's stream ends after it.
    let events = get(&app, &format!("/api/v1/runs/{id}/events")).await;
    assert_eq!(events.headers[header::CONTENT_TYPE], "text/event-stream", "{tag}");
    assert!(events.body.starts_with("event: run\ndata: {"), "{tag}: {}", events.body);
    assert!(events.body.contains("\"standing\":\"Completed\""), "{tag}");
    assert!(events.body.contains("event: state\ndata: {"), "{tag}: every state's record follows the row");
    let prepare = sse_data(&events.body, "state").into_iter().find(|s| s["name"] == "prepare");
    assert_eq!(prepare.map(|s| s["completed"].clone()), Some(json!(1)), "{tag}: {}", events.body);

    // Submissions: queued for a worker, one run per idempotency key.
    let queued = json!({ "agent": name, "input": { "n": 1 }, "key": "order-1" });
    let one = call(&app, Method::POST, "/api/v1/runs", None, Some(queued.clone())).await;
    assert_eq!(one.status, StatusCode::CREATED, "{tag}: {}", one.body);
    let two = call(&app, Method::POST, "/api/v1/runs", None, Some(queued)).await.json();
    assert_eq!(one.json()["run_id"], two["run_id"], "{tag}: one key, one run");
    let queued_ids = ids(&get(&app, "/api/v1/runs?status=queued").await.json());
    assert_eq!(queued_ids, [two["run_id"].as_str().unwrap().to_owned()], "{tag}");
    // Started in the console's process: it runs at once (asks for its review), owned there.
    let start = json!({ "agent": name, "input": { "n": 2 }, "start": true });
    let started = call(&app, Method::POST, "/api/v1/runs", None, Some(start)).await;
    assert_eq!(started.status, StatusCode::CREATED, "{tag}: {}", started.body);
    let started = started.json()["run_id"].as_str().unwrap().to_owned();
    common::review::until_asked(&*store, &started).await;
    let row = get(&app, &format!("/api/v1/runs/{started}")).await.json();
    assert_eq!(row["run"]["standing"], "Running", "{tag}: {row}");
    assert_eq!(row["context"]["n"], 2, "{tag}: its input");
    let keyed = json!({ "agent": name, "start": true, "key": "k" });
    assert_eq!(call(&app, Method::POST, "/api/v1/runs", None, Some(keyed)).await.status, StatusCode::BAD_REQUEST);
    let nobody = json!({ "agent": "nobody", "input": {} });
    assert_eq!(call(&app, Method::POST, "/api/v1/runs", None, Some(nobody)).await.status, StatusCode::NOT_FOUND);
    let not_object = json!({ "agent": name, "input": [1, 2] });
    assert_eq!(call(&app, Method::POST, "/api/v1/runs", None, Some(not_object)).await.status, StatusCode::BAD_REQUEST);
    let garbage = call(&app, Method::POST, "/api/v1/runs", None, Some(json!("garbage"))).await;
    assert_eq!(garbage.status, StatusCode::BAD_REQUEST, "{tag}");

    // Paging: one run a page.
    let page = get(&app, "/api/v1/runs?limit=1&offset=1").await.json();
    assert_eq!((page["total"].as_u64(), page["runs"].as_array().unwrap().len()), (Some(3), 1), "{tag}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_on_the_memory_store() {
    scenario(Arc::new(MemoryStore::new()), "memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_on_sqlite() {
    common::on_sqlite(|store| scenario(store, "sqlite")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_on_postgres() {
    common::pg::on_postgres("the_api_on_postgres", "console", |store| scenario(store, "postgres")).await;
}

#[tokio::test]
async fn a_token_guards_the_api_and_read_only_refuses_actions() {
    let store = MemoryStore::new();
    let app = Console::new(store.clone()).token("s3cret").router();
    let missing = get(&app, "/api/v1/runs").await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(missing.headers[header::WWW_AUTHENTICATE], "Bearer");
    let wrong = call(&app, Method::GET, "/api/v1/runs", Some("s3creT"), None).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let longer = call(&app, Method::GET, "/api/v1/runs", Some("s3cret-and-more"), None).await;
    assert_eq!(longer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(call(&app, Method::GET, "/api/v1/runs", Some("s3cret"), None).await.status, StatusCode::OK);
    let post = call(&app, Method::POST, "/api/v1/runs", None, Some(json!({ "agent": "a" }))).await;
    assert_eq!(post.status, StatusCode::UNAUTHORIZED, "actions need the token too");
    // The page is static and holds nothing: served without the token.
    assert_eq!(get(&app, "/").await.status, StatusCode::OK);

    let looking = Console::new(store).agent(Agent::new("a")).read_only(true).router();
    assert_eq!(get(&looking, "/api/v1/runs").await.status, StatusCode::OK);
    let refused = call(&looking, Method::POST, "/api/v1/runs", None, Some(json!({ "agent": "a" }))).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(refused.json()["error"].as_str().unwrap().contains("read-only"));
    let answer = call(&looking, Method::POST, "/api/v1/runs/r/inputs/input-1", None, Some(json!({ "answer": "x" })));
    assert_eq!(answer.await.status, StatusCode::FORBIDDEN);
    let state = call(&looking, Method::POST, "/api/v1/runs/r/states/s/cancel", None, None).await;
    assert_eq!(state.status, StatusCode::FORBIDDEN, "cancelling a state is an action");
    let app = Console::new(MemoryStore::new()).token("s3cret").router();
    let state = call(&app, Method::POST, "/api/v1/runs/r/states/s/cancel", None, None).await;
    assert_eq!(state.status, StatusCode::UNAUTHORIZED, "and needs the token");
}

#[tokio::test]
async fn the_page_is_served_with_a_policy_that_allows_only_its_own_files() {
    let app = Console::new(MemoryStore::new()).router();
    for (path, kind) in [("/", "text/html"), ("/console.js", "text/javascript"), ("/console.css", "text/css")] {
        let reply = get(&app, path).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert!(reply.headers[header::CONTENT_TYPE].to_str().unwrap().starts_with(kind), "{path}");
        let csp = reply.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && csp.contains("default-src 'none'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(reply.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
    }
    let page = get(&app, "/").await.body;
    assert!(page.contains("<script src=\"console.js\" defer></script>"));
    assert!(!page.contains("<script>"), "no inline script");
    // API errors carry the policy too, and unknown API routes are JSON.
    let unknown = get(&app, "/api/v1/nothing").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(unknown.json()["error"].is_string());
    assert!(unknown.headers.contains_key(header::CONTENT_SECURITY_POLICY));
    // The script sets stored text as text only.
    let script = get(&app, "/console.js").await.body;
    assert!(!script.contains("innerHTML") && !script.contains("insertAdjacentHTML") && !script.contains("eval("));
}

/// A run that takes its time: `tick` 40 times, 25 ms each, counting in `n`.
fn slow(name: &str) -> Agent {
    let mut agent = Agent::new(name.to_owned());
    agent
        .add_state("tick", |ctx: Context| async move {
            tokio::time::sleep(Duration::from_millis(25)).await;
            let n: u32 = ctx.get_state_or("n", 0) + 1;
            ctx.set_state("n", n);
            if n < 40 {
                StateResult::next("tick")
            } else {
                StateResult::End
            }
        })
        .targets(["tick"]);
    agent
}

/// `fetch` (counted) → `parse`, which fails while `broken`.
fn flaky(name: &str, broken: &Arc<AtomicBool>, fetched: &Arc<AtomicUsize>) -> Agent {
    let mut agent = Agent::new(name.to_owned());
    let fetched = fetched.clone();
    agent
        .add_state("fetch", move |_ctx: Context| {
            fetched.fetch_add(1, Ordering::SeqCst);
            async { StateResult::next("parse") }
        })
        .targets(["parse"]);
    let broken = broken.clone();
    agent.add_state("parse", move |ctx: Context| {
        let broken = broken.load(Ordering::SeqCst);
        async move {
            if broken {
                return Err(std::io::Error::other("the parser is broken"));
            }
            ctx.set_state("parsed", true);
            Ok(StateResult::End)
        }
    });
    agent
}

/// `start` → in parallel `stuck/for good` (waits for what never comes: a name that needs
/// escaping in a URL) and `go` (quick) → `start` ends, the run ends once both branches do.
fn blocking(name: &str) -> Agent {
    let mut agent = Agent::new(name.to_owned());
    agent.add_state("start", |_ctx: Context| async { StateResult::parallel(["stuck/for good", "go"]) });
    agent.add_state("stuck/for good", |_ctx: Context| async {
        std::future::pending::<()>().await;
        StateResult::End
    });
    agent.add_state("go", |ctx: Context| async move {
        ctx.set_state("went", true);
        StateResult::End
    });
    agent
}

/// Wait (bounded) until run `id`'s row satisfies `done`.
async fn until_row(store: &dyn CheckpointStore, id: &str, done: impl Fn(&agent_runtime::store::RunRecord) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if store.get_run(id).await.unwrap().is_some_and(|r| done(&r)) {
            return;
        }
        assert!(Instant::now() < deadline, "run {id} never got there");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Cancel, pause and resume from the console, for runs another handle (here: another
/// agent, as another process would) owns, and for runs nobody runs.
async fn actions(store: Arc<dyn CheckpointStore>, tag: &str) {
    let (asking, slow_name) = (format!("act-{tag}"), format!("slow-{tag}"));
    let app = Console::with_store(store.clone()).agent(asker(&asking)).agent(slow(&slow_name)).router();
    let post = |uri: String| {
        let app = app.clone();
        async move { call(&app, Method::POST, &uri, None, None).await }
    };

    // A run waiting for a person, cancelled: its owner obeys the request in the store.
    let handle = asker(&asking).with_store(store.clone()).start(RunOptions::new()).unwrap();
    let id = handle.id().to_owned();
    until_asked(&*store, &id).await;
    let asked = post(format!("/api/v1/runs/{id}/cancel")).await;
    assert_eq!(asked.status, StatusCode::ACCEPTED, "{tag}: {}", asked.body);
    let result = tokio::time::timeout(Duration::from_secs(20), handle).await.unwrap().unwrap();
    assert_eq!(result.status(), AgentStatus::Cancelled, "{tag}");
    assert_eq!(get(&app, &format!("/api/v1/runs/{id}")).await.json()["run"]["standing"], "Cancelled", "{tag}");
    assert_eq!(post(format!("/api/v1/runs/{id}/cancel")).await.status, StatusCode::CONFLICT, "{tag}: over already");

    // One state of a run another agent owns, cancelled: the owner takes the request from
    // the store and cancels it; the rest of the run goes on to its end.
    let handle = blocking(&format!("block-{tag}")).with_store(store.clone()).start(RunOptions::new()).unwrap();
    let id = handle.id().to_owned();
    let stuck = "stuck%2Ffor%20good";
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let shown = get(&app, &format!("/api/v1/runs/{id}")).await.json();
        let states = shown["checkpoint"]["states"].as_array().cloned().unwrap_or_default();
        if states.iter().any(|s| s["name"] == "go" && s["status"] == "Completed") {
            break;
        }
        assert!(Instant::now() < deadline, "{tag}: `go` never completed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let unknown = post(format!("/api/v1/runs/{id}/states/nope/cancel")).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{tag}: {}", unknown.body);
    assert!(unknown.json()["error"].as_str().unwrap().contains("no state `nope`"), "{tag}: {}", unknown.body);
    let missing = post(format!("/api/v1/runs/no-such-run/states/{stuck}/cancel")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{tag}: {}", missing.body);
    let asked = post(format!("/api/v1/runs/{id}/states/{stuck}/cancel")).await;
    assert_eq!(asked.status, StatusCode::ACCEPTED, "{tag}: {}", asked.body);
    assert_eq!(asked.json()["state"], "stuck/for good", "{tag}");
    let result = tokio::time::timeout(Duration::from_secs(20), handle).await.unwrap().unwrap();
    assert_eq!(result.status(), AgentStatus::Completed, "{tag}");
    let done = get(&app, &format!("/api/v1/runs/{id}")).await.json();
    let status_of = |name: &str| {
        done["checkpoint"]["states"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap()["status"].clone()
    };
    assert_eq!((status_of("stuck/for good"), status_of("go")), (json!("Cancelled"), json!("Completed")), "{tag}");
    let over = post(format!("/api/v1/runs/{id}/states/{stuck}/cancel")).await;
    assert_eq!(over.status, StatusCode::CONFLICT, "{tag}: over already");

    // A slow run, paused from the console, then resumed by it: it goes on where it was.
    let handle = slow(&slow_name).with_store(store.clone()).start(RunOptions::new()).unwrap();
    let id = handle.id().to_owned();
    until_row(&*store, &id, |r| r.owner.is_some()).await;
    let asked = post(format!("/api/v1/runs/{id}/pause")).await;
    assert_eq!(asked.status, StatusCode::ACCEPTED, "{tag}: {}", asked.body);
    let result = tokio::time::timeout(Duration::from_secs(20), handle).await.unwrap().unwrap();
    assert_eq!(result.status(), AgentStatus::Paused, "{tag}");
    let counted: u32 = result.context().get_state_or("n", 0);
    assert!(counted < 40, "{tag}: paused before its end ({counted})");
    until_row(&*store, &id, |r| r.owner.is_none()).await;
    assert_eq!(post(format!("/api/v1/runs/{id}/pause")).await.status, StatusCode::CONFLICT, "{tag}: not running");
    let resumed = post(format!("/api/v1/runs/{id}/resume")).await;
    assert_eq!(resumed.status, StatusCode::ACCEPTED, "{tag}: {}", resumed.body);
    until_row(&*store, &id, |r| r.status == AgentStatus::Completed).await;
    let done = get(&app, &format!("/api/v1/runs/{id}")).await.json();
    assert_eq!(done["context"]["n"], 40, "{tag}: every tick once, from where it paused");
    assert_eq!(post(format!("/api/v1/runs/{id}/resume")).await.status, StatusCode::CONFLICT, "{tag}: finished");

    // A failed run, retried from the console once its cause is fixed: the failed state
    // runs again, the one before it does not.
    let broken = Arc::new(AtomicBool::new(true));
    let fetched = Arc::new(AtomicUsize::new(0));
    let flaky_name = format!("flaky-{tag}");
    let fixer = Console::with_store(store.clone()).agent(flaky(&flaky_name, &broken, &fetched)).router();
    let agent = flaky(&flaky_name, &broken, &fetched).with_store(store.clone());
    let handle = agent.start(RunOptions::new()).unwrap();
    let id = handle.id().to_owned();
    let failed = tokio::time::timeout(Duration::from_secs(20), handle).await.unwrap();
    assert!(failed.is_err(), "{tag}: it fails");
    until_row(&*store, &id, |r| r.status == AgentStatus::Failed && r.owner.is_none()).await;
    let failed = get(&fixer, &format!("/api/v1/runs/{id}")).await.json();
    let record = |run: &Value, state: &str| {
        run["checkpoint"]["states"].as_array().unwrap().iter().find(|s| s["name"] == state).cloned().unwrap()
    };
    assert_eq!(record(&failed, "parse")["error"], "the parser is broken", "{tag}: the state's own error");
    assert_eq!(record(&failed, "fetch")["error"], Value::Null, "{tag}: fetch never failed");
    broken.store(false, Ordering::SeqCst);
    let retried = call(&fixer, Method::POST, &format!("/api/v1/runs/{id}/retry"), None, None).await;
    assert_eq!(retried.status, StatusCode::ACCEPTED, "{tag}: {}", retried.body);
    until_row(&*store, &id, |r| r.status == AgentStatus::Completed).await;
    let done = get(&fixer, &format!("/api/v1/runs/{id}")).await.json();
    assert_eq!(done["context"]["parsed"], true, "{tag}");
    assert_eq!(fetched.load(Ordering::SeqCst), 1, "{tag}: fetch completed once, and not again");
    let again = call(&fixer, Method::POST, &format!("/api/v1/runs/{id}/retry"), None, None).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{tag}: it did not fail this time");

    // A queued run nobody runs is cancelled at once, and stays so.
    let queued = call(&app, Method::POST, "/api/v1/runs", None, Some(json!({ "agent": slow_name }))).await.json();
    let id = queued["run_id"].as_str().unwrap().to_owned();
    let cancelled = post(format!("/api/v1/runs/{id}/cancel")).await;
    assert_eq!(cancelled.status, StatusCode::OK, "{tag}: {}", cancelled.body);
    let row = store.get_run(&id).await.unwrap().unwrap();
    assert_eq!((row.status, row.owner), (AgentStatus::Cancelled, None), "{tag}");
    assert_eq!(post("/api/v1/runs/no-such-run/cancel".into()).await.status, StatusCode::NOT_FOUND, "{tag}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_on_the_memory_store() {
    actions(Arc::new(MemoryStore::new()), "memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_on_sqlite() {
    common::on_sqlite(|store| actions(store, "sqlite")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_on_postgres() {
    common::pg::on_postgres("actions_on_postgres", "console_act", |store| actions(store, "postgres")).await;
}

/// Time a state waited for resources, and what it held (amounts and GPU devices), are
/// recorded with it (checkpoints and journal deltas alike), so the console shows them: two
/// runs of one agent on a pool of one CPU and two GPUs, each holding the CPU and one GPU
/// 60 ms; the one that waited says so, and each names the device it used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_that_waited_for_resources_shows_how_long() {
    let store: Arc<dyn CheckpointStore> = Arc::new(MemoryStore::new());
    let pool = agent_runtime::ResourcePool::builder().total_cpu(1.0).total_memory_mb(64.0).total_gpu(2.0).build();
    let mut agent = Agent::new("busy").with_resource_pool(pool).with_store(store.clone());
    agent
        .add_state("work", |_ctx: Context| async {
            tokio::time::sleep(Duration::from_millis(60)).await;
            StateResult::End
        })
        .resources(agent_core::ResourceRequirements::new().cpu(1.0).gpu(1.0));
    let (one, two) = (agent.start(RunOptions::new()).unwrap(), agent.start(RunOptions::new()).unwrap());
    let ids = [one.id().to_owned(), two.id().to_owned()];
    one.await.unwrap();
    two.await.unwrap();
    let app = Console::with_store(store).router();
    let mut waits = Vec::new();
    for id in &ids {
        let run = get(&app, &format!("/api/v1/runs/{id}")).await.json();
        let work =
            run["checkpoint"]["states"].as_array().unwrap().iter().find(|s| s["name"] == "work").unwrap().clone();
        waits.push(work["resource_wait_ms"].as_u64().unwrap_or(0));
        assert_eq!(work["resources"], "cpu 1, gpu 1", "{run}");
        let device = work["gpu_ids"].as_array().map(|ids| ids.iter().filter_map(Value::as_u64).collect::<Vec<_>>());
        assert!(matches!(device.as_deref(), Some([0] | [1])), "one of the two devices: {run}");
    }
    waits.sort_unstable();
    assert_eq!(waits[0], 0, "the first took the CPU at once: {waits:?}");
    assert!(waits[1] >= 40, "the second waited for the first's 60 ms: {waits:?}");
}

/// A state that is retried shows each attempt on the run's timeline: its record lists the
/// attempts on the wall clock, the failed ones marked, in order, with its own last error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_state_records_each_attempt() {
    let store: Arc<dyn CheckpointStore> = Arc::new(MemoryStore::new());
    let mut agent = Agent::new("retried").with_store(store.clone());
    let tries = Arc::new(AtomicUsize::new(0));
    let counted = tries.clone();
    agent
        .add_state("call", move |_ctx: Context| {
            let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                if n < 3 {
                    return Err(std::io::Error::other(format!("attempt {n} failed")));
                }
                Ok(StateResult::End)
            }
        })
        .retry_policy(agent_core::RetryPolicy {
            max_retries: 3,
            initial_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(20),
            exponential_base: 1.0,
            jitter: false,
        });
    let handle = agent.start(RunOptions::new()).unwrap();
    let id = handle.id().to_owned();
    handle.await.unwrap();
    let app = Console::with_store(store).router();
    let run = get(&app, &format!("/api/v1/runs/{id}")).await.json();
    let call = run["checkpoint"]["states"].as_array().unwrap().iter().find(|s| s["name"] == "call").unwrap().clone();
    let spans = call["attempt_spans"].as_array().unwrap_or_else(|| panic!("no attempts recorded: {call}"));
    let failed: Vec<bool> = spans.iter().map(|s| s["failed"].as_bool().unwrap_or(false)).collect();
    assert_eq!(failed, [true, true, false], "{call}");
    let times: Vec<(i64, i64)> =
        spans.iter().map(|s| (s["started_ms"].as_i64().unwrap(), s["finished_ms"].as_i64().unwrap())).collect();
    for pair in times.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "attempts in order, apart by the retry delay: {times:?}");
    }
    assert!(times.iter().all(|(a, b)| a <= b), "{times:?}");
    assert_eq!(call["error"], "attempt 2 failed", "{call}");
    assert_eq!(call["status"], "Completed");
}

/// A run's page links where it came from and what was made from it: a fork names its
/// parent and commit, and the parent lists the fork.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_links_its_parent_and_the_runs_made_from_it() {
    let store: Arc<dyn CheckpointStore> = Arc::new(MemoryStore::new());
    let mut agent = Agent::new("linked").with_store(store.clone());
    agent.add_state("a", |_ctx: Context| async { StateResult::next("b") });
    agent.add_state("b", |_ctx: Context| async { StateResult::End });
    let first = agent.run().await.unwrap();
    let id = first.run_id().to_owned();
    let fork = agent.fork(&id, agent_runtime::ForkAt::Before("b".into()), |_| {}).await.unwrap();
    let app = Console::with_store(store).router();
    let forked = get(&app, &format!("/api/v1/runs/{fork}")).await.json();
    assert_eq!(forked["lineage"]["parent_run_id"], id.as_str(), "{forked}");
    assert_eq!(forked["lineage"]["kind"], "fork");
    assert!(forked["lineage"]["parent_seq"].as_u64().is_some());
    let parent = get(&app, &format!("/api/v1/runs/{id}")).await.json();
    assert_eq!(parent["lineage"], Value::Null);
    let made: Vec<&str> =
        parent["descendants"].as_array().unwrap().iter().filter_map(|d| d["run_id"].as_str()).collect();
    assert_eq!(made, [fork.as_str()]);
}
