//! The console under load, each workload beside its baseline in the same run:
//! - `console_list/first_page_of_10000_runs`: `GET /api/v1/runs?limit=100` on a SQLite
//!   store (WAL file) of 10,000 runs, through the router as a service (no socket), against
//!   `list_runs` of the same store, the store's own floor. Target: at most 200 ms.
//! - `console_follow`: one durable run (SQLite WAL file) of 100 states, each waiting 2 ms
//!   and setting a key, alone and while 100 clients follow its events
//!   (`GET /api/v1/runs/{id}/events`, Server-Sent Events, each body read as it comes).
//!   Target: followed, at most 1.1x alone.
//!
//! Reproduce: `cargo bench -p agent-bench --bench console`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent::console::Console;
use agent::prelude::*;
use agent::store::{CheckpointStore, RunQuery, RunRecord, SqliteStore};
use axum::body::Body;
use axum::http::Request;
use criterion::{criterion_group, criterion_main, Criterion};
use http_body_util::BodyExt;
use tower::ServiceExt;

const RUNS: usize = 10_000;
const FOLLOWERS: usize = 100;
const STATES: usize = 100;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn list(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn CheckpointStore> = Arc::new(SqliteStore::open(dir.path().join("runs.db")).unwrap());
    rt.block_on(async {
        let statuses = [AgentStatus::Completed, AgentStatus::Failed, AgentStatus::Running, AgentStatus::Paused];
        for i in 0..RUNS {
            let at = 1_700_000_000_000 + i as i64;
            let run = RunRecord::new(format!("run-{i:05}"), "reports", statuses[i % statuses.len()], at, at);
            store.upsert_run(&run).await.unwrap();
        }
    });
    let app = Console::with_store(store.clone()).router();
    let mut group = c.benchmark_group("console_list");
    group.sample_size(20);
    group.bench_function("store_list_runs_100", |b| {
        b.to_async(&rt).iter(|| {
            let store = store.clone();
            async move {
                let q = RunQuery { limit: Some(100), ..RunQuery::default() };
                assert_eq!(store.list_runs(&q).await.unwrap().len(), 100)
            }
        })
    });
    group.bench_function("first_page_of_10000_runs", |b| {
        b.to_async(&rt).iter(|| {
            let app = app.clone();
            async move {
                let request = Request::get("/api/v1/runs?limit=100").body(Body::empty()).unwrap();
                let response = app.oneshot(request).await.unwrap();
                assert!(response.status().is_success());
                let body = response.into_body().collect().await.unwrap().to_bytes();
                assert!(body.len() > 10_000);
            }
        })
    });
    group.finish();
}

/// `STATES` states, each waiting 2 ms (an LLM call's stand-in) and setting a key.
fn waiting_chain() -> Agent {
    let mut agent = Agent::new("followed");
    for i in 0..STATES {
        let next = (i + 1 < STATES).then(|| format!("s{}", i + 1));
        agent.add_state(format!("s{i}"), move |ctx: Context| {
            let next = next.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(2)).await;
                ctx.set_state(&format!("k{i}"), i);
                match next {
                    Some(next) => StateResult::next(next),
                    None => StateResult::End,
                }
            }
        });
    }
    agent
}

fn follow(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn CheckpointStore> = Arc::new(SqliteStore::open(dir.path().join("follow.db")).unwrap());
    let agent = waiting_chain().with_store(store.clone());
    let app = Console::with_store(store).router();
    let mut group = c.benchmark_group("console_follow");
    group.sample_size(10);
    for followers in [0, FOLLOWERS] {
        group.bench_function(format!("run_of_{STATES}_states_{followers}_followers"), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (agent, app) = (agent.clone(), app.clone());
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        let run = agent.start(RunOptions::new()).unwrap();
                        let id = run.id().to_owned();
                        let readers: Vec<_> = (0..followers)
                            .map(|_| {
                                let (app, id) = (app.clone(), id.clone());
                                tokio::spawn(async move {
                                    let uri = format!("/api/v1/runs/{id}/events");
                                    let request = Request::get(uri).body(Body::empty()).unwrap();
                                    let mut body = app.oneshot(request).await.unwrap().into_body();
                                    let mut events = 0usize;
                                    while let Some(frame) = body.frame().await {
                                        events += usize::from(frame.is_ok());
                                    }
                                    events
                                })
                            })
                            .collect();
                        let result = run.await.unwrap();
                        total += start.elapsed();
                        assert_eq!(result.status(), AgentStatus::Completed);
                        // Each stream ends after the finished run's row.
                        for reader in readers {
                            assert!(reader.await.unwrap() >= 1);
                        }
                    }
                    total
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, list, follow);
criterion_main!(benches);
