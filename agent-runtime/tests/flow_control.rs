//! Flow control across workers (`Agent::flow_key`, `Agent::max_per_key`,
//! `SubmitOptions::debounce`), kept by the store: two `Worker`s in this process on the
//! memory store, a SQLite file and PostgreSQL (when `AGENT_TEST_POSTGRES_URL` is set), and
//! two worker processes (this test binary run again with `AGENT_FLOW_CHILD` set, see
//! `flow_worker_child`) on a SQLite file and a PostgreSQL schema.
//!
//! The round-robin scenario: five runs each of keys A, B and C, submitted A×5 then B×5 then
//! C×5, at most 2 of a key at once, and room for 3 runs in the fleet (one worker runs 2 at
//! once, the other 1). Every run's one state records its start and end in a board file
//! under an exclusive file lock (so the processes' records are in one order), and ends at a
//! time fixed by its place `n` in the start order: `t0 + (n + 3) × GAP`. So the runs end
//! one at a time, `GAP` apart, in the order they started, and each end frees one place
//! that its worker claims at once: the order of starts is decided by the store's claims
//! alone, not by timing. What is checked:
//! - in one process, the claims, recorded in the order the store answered them (the
//!   workers' store is wrapped in `ClaimLog`, which passes one claim at a time), are
//!   exactly A B C A B C ... (there, a run's place `n` is its place among the claims);
//! - rounds: every three starts are A, B and C once each, in the order of the first round,
//!   every round. Between processes only the starts are seen, and the two runs one worker
//!   claims at once start at the same instant, so the first round may start in another
//!   order than it was claimed: that is the one freedom left, and it is allowed;
//! - no key ever had more than 2 runs in its state at once (the records' count is a lower
//!   bound of the store's, which counts a run from its claim to its last write);
//! - every run completed.
//!
//! The children wait for a `go` file before they serve, so both claim from the start.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agent_core::{AgentError, AgentStatus, Context, StateResult};
use agent_runtime::store::{
    CheckpointStore, Claim, ClaimNext, ClaimRequest, InputRecord, JournalEntry, MemoryStore, NextRun, PostgresStore,
    Retention, RetentionReport, RunQuery, RunRecord, Snapshot, SqliteStore, StoreFuture, Submission, Submitted,
};
use agent_runtime::{Agent, SubmitOptions, Worker, WorkerReport};
use tokio::sync::oneshot;

mod common;

/// The gap between two runs' ends.
const GAP_MS: u64 = 200;
/// Every scenario gives up after this long.
const BOUND: Duration = Duration::from_secs(60);

const CHILD: &str = "AGENT_FLOW_CHILD";
const CHILD_AGENT: &str = "AGENT_FLOW_AGENT";
const CHILD_BOARD: &str = "AGENT_FLOW_BOARD";
const CHILD_CONCURRENCY: &str = "AGENT_FLOW_CONCURRENCY";
const CHILD_GO: &str = "AGENT_FLOW_GO";

fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

// ---------------------------------------------------------------------------------------
// The board: starts and ends of the runs' states, in one order for every process.
// ---------------------------------------------------------------------------------------

/// Under the board's lock: its lines so far, and `line(those)` appended.
fn on_board(board: &Path, line: impl FnOnce(&str) -> String) -> String {
    let mut file = OpenOptions::new().read(true).append(true).create(true).open(board).unwrap();
    file.lock().unwrap();
    let mut text = String::new();
    file.read_to_string(&mut text).unwrap();
    let added = line(&text);
    file.write_all(added.as_bytes()).unwrap();
    file.unlock().unwrap();
    text
}

/// The state of every run: records its start, takes until `t0 + (n + 3) × GAP` (or
/// `sleep_ms` when the input says), records its end. Its place `n` and `t0` are the claims'
/// (with a `ClaimLog`), or else the starts' on the board.
async fn work(ctx: Context, board: PathBuf, claims: Option<ClaimLog>) -> StateResult {
    let key: String = ctx.get_state("key").unwrap();
    let mut place = (0, 0);
    let now = wall_ms();
    on_board(&board, |text| {
        let starts: Vec<&str> = text.lines().filter(|l| l.starts_with("start ")).collect();
        let t0 = starts.first().map_or(now, |l| l.split(' ').nth(3).unwrap().parse().unwrap());
        place = (starts.len() as u64, t0);
        format!("start {key} {} {now} {}\n", starts.len(), std::process::id())
    });
    if let Some(claims) = claims {
        let run_id = ctx.execution_key().unwrap().split('/').next().unwrap().to_owned();
        let log = claims.log.lock().await;
        let n = log.runs.iter().position(|r| *r == run_id).expect("a run that was claimed");
        place = (n as u64, log.first_ms);
    }
    let (n, t0) = place;
    match ctx.get_state::<u64>("sleep_ms") {
        Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
        None => {
            let end = t0 + (n + 3) * GAP_MS;
            tokio::time::sleep(Duration::from_millis(end.saturating_sub(wall_ms()))).await;
        }
    }
    on_board(&board, |_| format!("end {key} {n}\n"));
    ctx.set_state("n", n);
    StateResult::End
}

fn keyed(name: &str, board: &Path, per_key: u32) -> Agent {
    keyed_logged(name, board, per_key, None)
}

fn keyed_logged(name: &str, board: &Path, per_key: u32, claims: Option<ClaimLog>) -> Agent {
    let board = board.to_owned();
    let mut agent = Agent::new(name.to_owned()).flow_key(|ctx| ctx.get_state::<String>("key")).max_per_key(per_key);
    agent.add_state("work", move |ctx: Context| work(ctx, board.clone(), claims.clone()));
    agent
}

/// The claims the workers of this process made, in the order the store answered them.
#[derive(Default)]
struct Claims {
    runs: Vec<String>,
    /// When the first was made (milliseconds since the Unix epoch).
    first_ms: u64,
}

/// A store that records every run `claim_next` takes, passing one claim at a time (so the
/// record's order is the store's).
#[derive(Clone)]
struct ClaimLog {
    inner: Arc<dyn CheckpointStore>,
    log: Arc<tokio::sync::Mutex<Claims>>,
}

impl CheckpointStore for ClaimLog {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn claim_next<'a>(&'a self, ask: &'a ClaimNext) -> StoreFuture<'a, Vec<NextRun>> {
        Box::pin(async move {
            let mut log = self.log.lock().await;
            let taken = self.inner.claim_next(ask).await?;
            if log.runs.is_empty() && !taken.is_empty() {
                log.first_ms = wall_ms();
            }
            log.runs.extend(taken.iter().map(|t| t.row.run_id.clone()));
            Ok(taken)
        })
    }
    fn upsert_run<'a>(&'a self, run: &'a RunRecord) -> StoreFuture<'a, ()> {
        self.inner.upsert_run(run)
    }
    fn get_run<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<RunRecord>> {
        self.inner.get_run(run_id)
    }
    fn list_runs<'a>(&'a self, query: &'a RunQuery) -> StoreFuture<'a, Vec<RunRecord>> {
        self.inner.list_runs(query)
    }
    fn append<'a>(&'a self, run: &'a RunRecord, entries: &'a [JournalEntry]) -> StoreFuture<'a, ()> {
        self.inner.append(run, entries)
    }
    fn journal<'a>(&'a self, run_id: &'a str, after: u64) -> StoreFuture<'a, Vec<JournalEntry>> {
        self.inner.journal(run_id, after)
    }
    fn save_snapshot<'a>(&'a self, run_id: &'a str, epoch: u64, snapshot: &'a Snapshot) -> StoreFuture<'a, ()> {
        self.inner.save_snapshot(run_id, epoch, snapshot)
    }
    fn save_run_snapshot<'a>(&'a self, run: &'a RunRecord, snapshot: &'a Snapshot) -> StoreFuture<'a, ()> {
        self.inner.save_run_snapshot(run, snapshot)
    }
    fn claim_run<'a>(&'a self, claim: &'a ClaimRequest) -> StoreFuture<'a, Claim> {
        self.inner.claim_run(claim)
    }
    fn submit_run<'a>(&'a self, submission: &'a Submission) -> StoreFuture<'a, Submitted> {
        self.inner.submit_run(submission)
    }
    fn run_input<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<String>> {
        self.inner.run_input(run_id)
    }
    fn run_control<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<agent_runtime::store::RunControl>> {
        self.inner.run_control(run_id)
    }
    fn take_state_cancels<'a>(&'a self, run_id: &'a str, epoch: u64) -> StoreFuture<'a, Vec<String>> {
        self.inner.take_state_cancels(run_id, epoch)
    }
    fn renew_lease<'a>(&'a self, run_id: &'a str, owner: &'a str, epoch: u64, ttl: Duration) -> StoreFuture<'a, i64> {
        self.inner.renew_lease(run_id, owner, epoch, ttl)
    }
    fn release_run<'a>(&'a self, run_id: &'a str, epoch: u64) -> StoreFuture<'a, ()> {
        self.inner.release_run(run_id, epoch)
    }
    fn prune_snapshots<'a>(&'a self, run_id: &'a str, epoch: u64, keep: usize) -> StoreFuture<'a, RetentionReport> {
        self.inner.prune_snapshots(run_id, epoch, keep)
    }
    fn latest_snapshot<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<Snapshot>> {
        self.inner.latest_snapshot(run_id)
    }
    fn snapshots<'a>(&'a self, run_id: &'a str, limit: usize) -> StoreFuture<'a, Vec<Snapshot>> {
        self.inner.snapshots(run_id, limit)
    }
    fn put_input<'a>(&'a self, input: &'a InputRecord) -> StoreFuture<'a, ()> {
        self.inner.put_input(input)
    }
    fn inputs<'a>(&'a self, run_id: Option<&'a str>, pending_only: bool) -> StoreFuture<'a, Vec<InputRecord>> {
        self.inner.inputs(run_id, pending_only)
    }
    fn answer_input<'a>(
        &'a self,
        run_id: &'a str,
        request_id: &'a str,
        answer: &'a str,
        defaulted: bool,
        at_ms: i64,
    ) -> StoreFuture<'a, bool> {
        self.inner.answer_input(run_id, request_id, answer, defaulted, at_ms)
    }
    fn put_input_fenced<'a>(&'a self, input: &'a InputRecord, epoch: u64) -> StoreFuture<'a, ()> {
        self.inner.put_input_fenced(input, epoch)
    }
    fn answer_input_fenced<'a>(
        &'a self,
        run_id: &'a str,
        request_id: &'a str,
        answer: &'a str,
        defaulted: bool,
        at_ms: i64,
        epoch: u64,
    ) -> StoreFuture<'a, bool> {
        self.inner.answer_input_fenced(run_id, request_id, answer, defaulted, at_ms, epoch)
    }
    fn delete_run<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, bool> {
        self.inner.delete_run(run_id)
    }
    fn apply_retention<'a>(&'a self, policy: &'a Retention, now_ms: i64) -> StoreFuture<'a, RetentionReport> {
        self.inner.apply_retention(policy, now_ms)
    }
}

fn input(key: &str) -> Context {
    let ctx = Context::new();
    ctx.set_state("key", key);
    ctx
}

/// What the board says: the keys in the order their runs started, and the most runs of
/// one key in their state at once.
fn read_board(board: &Path) -> (Vec<String>, usize) {
    let text = std::fs::read_to_string(board).unwrap_or_default();
    let mut order = Vec::new();
    let mut running: std::collections::HashMap<String, usize> = Default::default();
    let mut most = 0;
    for line in text.lines() {
        let words: Vec<&str> = line.split(' ').collect();
        let count = running.entry(words[1].to_owned()).or_default();
        match words[0] {
            "start" => {
                order.push(words[1].to_owned());
                *count += 1;
                most = most.max(*count);
            }
            "end" => *count -= 1,
            other => panic!("a torn board line: {other:?}"),
        }
    }
    (order, most)
}

/// Rounds of three: each the three keys once, every round in the first round's order.
fn assert_round_robin(order: &[String], tag: &str) {
    assert_eq!(order.len(), 15, "{tag}: {order:?}");
    let mut first: Vec<&str> = order[..3].iter().map(String::as_str).collect();
    first.sort_unstable();
    assert_eq!(first, ["A", "B", "C"], "{tag}: the first round is each key once: {order:?}");
    for (i, key) in order.iter().enumerate() {
        assert_eq!(key, &order[i % 3], "{tag}: start {i} breaks the round robin: {order:?}");
    }
}

async fn submit_abc(client: &Agent) -> Vec<String> {
    let mut ids = Vec::new();
    for key in ["A", "B", "C"] {
        for _ in 0..5 {
            ids.push(client.submit(SubmitOptions::new().context(input(key))).await.unwrap());
            // Submission times are milliseconds, and runs of one millisecond are ordered by
            // their (random) ids: a millisecond apart, they are ordered as submitted.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    ids
}

async fn all_completed(client: &Agent, ids: &[String], tag: &str) {
    for id in ids {
        let done = tokio::time::timeout(BOUND, client.wait(id)).await.expect("runs end in time").unwrap();
        assert_eq!(done.agent_status, AgentStatus::Completed, "{tag}");
    }
}

// ---------------------------------------------------------------------------------------
// In one process.
// ---------------------------------------------------------------------------------------

fn serve(worker: Worker) -> (oneshot::Sender<()>, tokio::task::JoinHandle<WorkerReport>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        worker
            .run_until(async {
                let _ = stopped.await;
            })
            .await
            .unwrap()
    });
    (stop, task)
}

async fn stop(worker: (oneshot::Sender<()>, tokio::task::JoinHandle<WorkerReport>)) -> WorkerReport {
    let _ = worker.0.send(());
    tokio::time::timeout(Duration::from_secs(30), worker.1).await.expect("the worker drains in time").unwrap()
}

/// Two workers (2 and 1 at once) on `store` run the A/B/C scenario.
async fn round_robin_in_process(store: Arc<dyn CheckpointStore>, tag: &str) {
    let dir = tempfile::tempdir().unwrap();
    let board = dir.path().join("board");
    let name = format!("flow-rr-{tag}");
    let client = keyed(&name, &board, 2).with_store(store.clone());
    // All queued before any worker claims: the claims decide the order.
    let ids = submit_abc(&client).await;
    let claims = ClaimLog { inner: store.clone(), log: Arc::default() };
    let worker = |n: usize| {
        let (name, board, claims) = (name.clone(), board.clone(), claims.clone());
        Worker::new(claims.clone())
            .serve(move || keyed_logged(&name, &board, 2, Some(claims)))
            .concurrency(n)
            .poll_interval(Duration::from_millis(20))
    };
    let (one, two) = (serve(worker(2)), serve(worker(1)));
    all_completed(&client, &ids, tag).await;
    let (r1, r2) = (stop(one).await, stop(two).await);
    assert_eq!(r1.claimed + r2.claimed, 15, "{tag}: each run taken once: {r1:?} {r2:?}");
    assert!(r1.claimed > 0 && r2.claimed > 0, "{tag}: both workers ran runs: {r1:?} {r2:?}");
    // The claims, by key: exactly A B C A B C ...
    let key_of: std::collections::HashMap<&String, &str> =
        ids.iter().enumerate().map(|(i, id)| (id, ["A", "B", "C"][i / 5])).collect();
    let claimed: Vec<&str> = claims.log.lock().await.runs.iter().map(|r| key_of[r]).collect::<Vec<_>>();
    assert_eq!(claimed, ["A", "B", "C"].repeat(5), "{tag}: claimed in round robin");
    // Started in that order too, but for the first round, whose two runs claimed at once
    // start at one instant.
    let (order, most) = read_board(&board);
    assert!(most <= 2, "{tag}: a key had {most} runs at once");
    let mut first: Vec<&str> = order[..3].iter().map(String::as_str).collect();
    first.sort_unstable();
    assert_eq!(first, ["A", "B", "C"], "{tag}: {order:?}");
    assert_eq!(order[3..], claimed[3..], "{tag}: started as claimed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn round_robin_between_keys_with_two_workers_on_the_memory_store() {
    round_robin_in_process(Arc::new(MemoryStore::new()), "memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn round_robin_between_keys_with_two_workers_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    round_robin_in_process(Arc::new(SqliteStore::open(dir.path().join("runs.db")).unwrap()), "sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn round_robin_between_keys_with_two_workers_on_postgres() {
    common::pg::on_postgres("round_robin_between_keys_with_two_workers_on_postgres", "flowrr", |store| async move {
        round_robin_in_process(store, "postgres").await;
    })
    .await;
}

/// A singleton per key (`max_per_key(1)`): two workers with room for 4, four runs of key K
/// and two of key L: never two runs of one key at once, while the two keys run side by
/// side.
async fn singleton(store: Arc<dyn CheckpointStore>, tag: &str) {
    let dir = tempfile::tempdir().unwrap();
    let board = dir.path().join("board");
    let name = format!("flow-single-{tag}");
    let client = keyed(&name, &board, 1).with_store(store.clone());
    let mut ids = Vec::new();
    for key in ["K", "K", "L", "K", "L", "K"] {
        let ctx = input(key);
        ctx.set_state("sleep_ms", 60u64);
        ids.push(client.submit(SubmitOptions::new().context(ctx)).await.unwrap());
    }
    let worker = || {
        let (name, board) = (name.clone(), board.clone());
        Worker::new(store.clone())
            .serve(move || keyed(&name, &board, 1))
            .concurrency(2)
            .poll_interval(Duration::from_millis(10))
    };
    let (one, two) = (serve(worker()), serve(worker()));
    all_completed(&client, &ids, tag).await;
    stop(one).await;
    stop(two).await;
    let (order, most) = read_board(&board);
    assert_eq!(order.len(), 6, "{tag}");
    assert_eq!(most, 1, "{tag}: one run of a key at a time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_singleton_per_key_on_every_store() {
    singleton(Arc::new(MemoryStore::new()), "memory").await;
    let dir = tempfile::tempdir().unwrap();
    singleton(Arc::new(SqliteStore::open(dir.path().join("runs.db")).unwrap()), "sqlite").await;
    common::pg::on_postgres("a_singleton_per_key_on_every_store", "flowone", |store| async move {
        singleton(store, "postgres").await;
    })
    .await;
}

/// Three submissions within the window make one run, with the last input; the run starts
/// once a window has passed since the last. Debounce without a key is refused.
async fn debounce(store: Arc<dyn CheckpointStore>, tag: &str) {
    let dir = tempfile::tempdir().unwrap();
    let board = dir.path().join("board");
    let name = format!("flow-debounce-{tag}");
    let client = keyed(&name, &board, 1).with_store(store.clone());
    let (n2, b2) = (name.clone(), board.clone());
    let worker =
        serve(Worker::new(store.clone()).serve(move || keyed(&n2, &b2, 1)).poll_interval(Duration::from_millis(20)));
    let window = Duration::from_millis(300);
    let mut ids = Vec::new();
    let mut last = Instant::now();
    for n in 1..=3u64 {
        let ctx = input("customer-7");
        ctx.set_state("sleep_ms", 0u64);
        ctx.set_state("version", n);
        last = Instant::now();
        ids.push(client.submit(SubmitOptions::new().context(ctx).debounce(window)).await.unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ids.iter().all(|id| *id == ids[0]), "{tag}: one run: {ids:?}");
    let done = tokio::time::timeout(BOUND, client.wait(&ids[0])).await.unwrap().unwrap();
    let ctx = done.read_context().unwrap();
    assert_eq!(ctx.get_state::<u64>("version"), Some(3), "{tag}: the last input");
    assert!(last.elapsed() >= window, "{tag}");
    let runs = store.list_runs(&RunQuery { agent: Some(name.clone()), ..RunQuery::default() }).await.unwrap();
    assert_eq!(runs.len(), 1, "{tag}");
    // The key given with the submission wins over the agent's; without any, refused.
    let plain = Agent::new(name.clone()).with_store(store.clone());
    match plain.submit(SubmitOptions::new().debounce(window)).await {
        Err(AgentError::InvalidSubmission { agent, .. }) => assert_eq!(agent, name),
        other => panic!("{tag}: expected InvalidSubmission, got {other:?}"),
    }
    let explicit =
        client.submit(SubmitOptions::new().context(input("x")).flow_key("customer-8").debounce(window)).await;
    assert_ne!(explicit.unwrap(), ids[0], "{tag}: another key, another run");
    stop(worker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn debounced_submissions_make_one_run_with_the_last_input_on_every_store() {
    debounce(Arc::new(MemoryStore::new()), "memory").await;
    let dir = tempfile::tempdir().unwrap();
    debounce(Arc::new(SqliteStore::open(dir.path().join("runs.db")).unwrap()), "sqlite").await;
    common::pg::on_postgres(
        "debounced_submissions_make_one_run_with_the_last_input_on_every_store",
        "flowdeb",
        |store| async move {
            debounce(store, "postgres").await;
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------
// Worker processes.
// ---------------------------------------------------------------------------------------

/// A worker process: serves the keyed workflow from `AGENT_FLOW_CHILD` (`sqlite:PATH` or
/// `postgres:URL`) once the `go` file exists, until SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_worker_child() {
    let Ok(address) = std::env::var(CHILD) else { return };
    let name = std::env::var(CHILD_AGENT).unwrap();
    let board = PathBuf::from(std::env::var(CHILD_BOARD).unwrap());
    let concurrency: usize = std::env::var(CHILD_CONCURRENCY).unwrap().parse().unwrap();
    let go = PathBuf::from(std::env::var(CHILD_GO).unwrap());
    let store: Arc<dyn CheckpointStore> = match address.strip_prefix("sqlite:") {
        Some(path) => Arc::new(SqliteStore::open(path).unwrap()),
        None => Arc::new(PostgresStore::connect(address.strip_prefix("postgres:").unwrap()).await.unwrap()),
    };
    let worker = Worker::new(store)
        .serve(move || keyed(&name, &board, 2))
        .concurrency(concurrency)
        .poll_interval(Duration::from_millis(20));
    File::create(go.with_extension(format!("ready-{}", std::process::id()))).unwrap();
    let give_up = Instant::now() + BOUND;
    while !go.exists() {
        assert!(Instant::now() < give_up, "never told to go");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    worker.run().await.unwrap();
}

/// Two worker processes (2 and 1 at once) on the store at `address` run the A/B/C scenario.
async fn round_robin_in_processes(store: Arc<dyn CheckpointStore>, address: &str, tag: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (board, go) = (dir.path().join("board"), dir.path().join("go"));
    let name = format!("flow-procs-{tag}");
    let client = keyed(&name, &board, 2).with_store(store.clone());
    let ids = submit_abc(&client).await;
    let mut children = common::kills::Children(Vec::new());
    for concurrency in [2, 1] {
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["flow_worker_child", "--exact", "--nocapture", "--test-threads", "1"])
            .env(CHILD, address)
            .env(CHILD_AGENT, &name)
            .env(CHILD_BOARD, &board)
            .env(CHILD_CONCURRENCY, concurrency.to_string())
            .env(CHILD_GO, &go)
            .stdout(Stdio::null())
            .stderr(if std::env::var("AGENT_FLEET_DEBUG").is_ok() { Stdio::inherit() } else { Stdio::null() })
            .spawn()
            .unwrap();
        children.0.push(child);
    }
    // Both ready, then both go at once.
    let give_up = Instant::now() + BOUND;
    loop {
        let ready = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("go.ready-"));
        if ready.count() == 2 {
            break;
        }
        assert!(Instant::now() < give_up, "{tag}: the workers never got ready");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    File::create(&go).unwrap();
    all_completed(&client, &ids, tag).await;
    // Drain them (SIGTERM): each exits 0.
    for child in &children.0 {
        let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }
    for child in &mut children.0 {
        let give_up = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < give_up, "{tag}: a worker did not drain");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(status.success(), "{tag}: {status}");
    }
    let text = std::fs::read_to_string(&board).unwrap();
    let pids: std::collections::HashSet<&str> =
        text.lines().filter(|l| l.starts_with("start ")).map(|l| l.split(' ').nth(4).unwrap()).collect();
    assert_eq!(pids.len(), 2, "{tag}: both processes ran runs");
    let (order, most) = read_board(&board);
    assert!(most <= 2, "{tag}: a key had {most} runs at once");
    assert_round_robin(&order, tag);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_between_keys_across_worker_processes_on_sqlite() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.db");
    let store = Arc::new(SqliteStore::open(&path).unwrap());
    round_robin_in_processes(store, &format!("sqlite:{}", path.display()), "sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_between_keys_across_worker_processes_on_postgres() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let Some(url) = common::pg::url("round_robin_between_keys_across_worker_processes_on_postgres") else { return };
    let (schema, schema_url) = common::pg::own_schema(&url, "flowprocs");
    let store = Arc::new(PostgresStore::connect_with_schema(&url, &schema).await.unwrap());
    let outcome = tokio::spawn(async move {
        round_robin_in_processes(store, &format!("postgres:{schema_url}"), "postgres").await;
    })
    .await;
    common::pg::drop_schema(&url, &schema).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}
