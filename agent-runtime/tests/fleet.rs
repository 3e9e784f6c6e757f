//! A fleet in one process: runs submitted to a store (`Agent::submit`, with idempotency
//! keys) and run by `Worker`s that claim them (`claim_next`), on the memory store, a SQLite
//! file and PostgreSQL. Between processes: `fleet_processes.rs`.
//!
//! Each scenario runs on every store; the PostgreSQL one in a schema of its own (skipped,
//! or failed under CI, without `AGENT_TEST_POSTGRES_URL`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use agent_core::{AgentStatus, Context, StateResult};
use agent_runtime::store::{
    CheckpointStore, ClaimNext, ClaimRequest, MemoryStore, RunQuery, Served, SqliteStore, Submission,
};
use agent_runtime::{Agent, RunOptions, SubmitOptions, Worker, WorkerReport};
use tokio::sync::oneshot;

mod common;

/// The stores a scenario runs on: memory, a SQLite file, and PostgreSQL when configured.
/// Each comes with what drops it afterwards.
struct Stores {
    list: Vec<(&'static str, Arc<dyn CheckpointStore>)>,
    _dir: tempfile::TempDir,
    pg: Option<(String, String)>,
}

impl Stores {
    async fn new(test: &str) -> Stores {
        let dir = tempfile::tempdir().unwrap();
        let mut list: Vec<(&'static str, Arc<dyn CheckpointStore>)> = vec![
            ("memory", Arc::new(MemoryStore::new())),
            ("sqlite", Arc::new(SqliteStore::open(dir.path().join("runs.db")).unwrap())),
        ];
        let mut pg = None;
        if let Some(url) = common::pg::url(test) {
            let (schema, _) = common::pg::own_schema(&url, "fleet");
            let store = agent_runtime::store::PostgresStore::connect_with_schema(&url, &schema).await.unwrap();
            list.push(("postgres", Arc::new(store)));
            pg = Some((url, schema));
        }
        Stores { list, _dir: dir, pg }
    }

    async fn drop_all(self) {
        if let Some((url, schema)) = &self.pg {
            common::pg::drop_schema(url, schema).await;
        }
    }
}

/// Executions of each state body, by (run input, state): what "each state ran once" checks.
static RAN: LazyLock<Mutex<HashMap<(String, String), usize>>> = LazyLock::new(Mutex::default);

fn ran(ctx: &Context, state: &str) {
    let tag: String = ctx.get_state("tag").unwrap_or_default();
    *RAN.lock().unwrap().entry((tag, state.to_owned())).or_default() += 1;
}

fn runs_of(tag: &str, state: &str) -> usize {
    RAN.lock().unwrap().get(&(tag.to_owned(), state.to_owned())).copied().unwrap_or(0)
}

/// `double` doubles `n`, then `check` records it; `name` keeps agents of different tests apart.
fn doubler(name: &str) -> Agent {
    let mut agent = Agent::new(name.to_owned());
    agent
        .add_state("double", |ctx: Context| async move {
            ran(&ctx, "double");
            let n: u64 = ctx.get_state("n").unwrap();
            tokio::task::yield_now().await;
            ctx.set_state("doubled", n * 2);
            StateResult::next("check")
        })
        .targets(["check"]);
    agent.add_state("check", |ctx: Context| async move {
        ran(&ctx, "check");
        ctx.set_state("checked", true);
        StateResult::End
    });
    agent
}

fn input(tag: &str, n: u64) -> Context {
    let ctx = Context::new();
    ctx.set_state("tag", tag);
    ctx.set_state("n", n);
    ctx
}

/// Serve `worker` in a task until the returned sender is used (or dropped).
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitted_runs_are_run_by_workers_each_from_its_own_input() {
    let stores = Stores::new("submitted_runs_are_run_by_workers_each_from_its_own_input").await;
    for (kind, store) in &stores.list {
        let name = format!("fleet-submit-{kind}");
        let client = doubler(&name).with_store(store.clone());
        let mut ids = Vec::new();
        for n in 0..20u64 {
            ids.push(client.submit(SubmitOptions::new().context(input(&format!("{name}-{n}"), n))).await.unwrap());
        }
        // Queued: nothing ran, each row is `Idle` with no owner.
        for id in &ids {
            let row = store.get_run(id).await.unwrap().unwrap();
            assert_eq!((row.status, row.owner.as_deref(), row.epoch), (AgentStatus::Idle, None, 0), "{kind}");
        }
        let n2 = name.clone();
        let a = serve(Worker::new(store.clone()).serve(move || doubler(&n2)).concurrency(3));
        let n3 = name.clone();
        let b = serve(Worker::new(store.clone()).serve(move || doubler(&n3)).concurrency(3));
        for (n, id) in ids.iter().enumerate() {
            let done = tokio::time::timeout(Duration::from_secs(30), client.wait(id)).await.unwrap().unwrap();
            assert_eq!(done.agent_status, AgentStatus::Completed, "{kind}");
            let ctx = done.read_context().unwrap();
            assert_eq!(ctx.get_state::<u64>("doubled"), Some(2 * n as u64), "{kind}: run {n} kept its own input");
        }
        let (ra, rb) = (stop(a).await, stop(b).await);
        assert_eq!(ra.completed + rb.completed, 20, "{kind}: {ra:?} {rb:?}");
        assert_eq!(ra.claimed + rb.claimed, 20, "{kind}: no run taken twice: {ra:?} {rb:?}");
        for n in 0..20 {
            for state in ["double", "check"] {
                assert_eq!(runs_of(&format!("{name}-{n}"), state), 1, "{kind}: {state} of run {n}");
            }
        }
        // Finished runs are unowned.
        for id in &ids {
            let row = store.get_run(id).await.unwrap().unwrap();
            assert_eq!((row.status, row.owner), (AgentStatus::Completed, None), "{kind}");
        }
    }
    stores.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_submissions_with_one_key_make_one_run() {
    let stores = Stores::new("fifty_concurrent_submissions_with_one_key_make_one_run").await;
    for (kind, store) in &stores.list {
        let name = format!("fleet-key-{kind}");
        let client = doubler(&name).with_store(store.clone());
        let mut tasks = Vec::new();
        for n in 0..50u64 {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                let options = SubmitOptions::new().context(input("key", n)).idempotency_key("order-1234");
                client.submit(options).await.unwrap()
            }));
        }
        let mut ids = HashSet::new();
        for t in tasks {
            ids.insert(t.await.unwrap());
        }
        assert_eq!(ids.len(), 1, "{kind}: {ids:?}");
        let runs = store.list_runs(&RunQuery { agent: Some(name.clone()), ..RunQuery::default() }).await.unwrap();
        assert_eq!(runs.len(), 1, "{kind}");
        // Another key makes another run; the same key for another agent too.
        let other = client.submit(SubmitOptions::new().idempotency_key("order-1235")).await.unwrap();
        assert!(!ids.contains(&other));
        let elsewhere = doubler(&format!("{name}-b")).with_store(store.clone());
        let theirs = elsewhere.submit(SubmitOptions::new().idempotency_key("order-1234")).await.unwrap();
        assert!(!ids.contains(&theirs) && theirs != other, "{kind}");
    }
    stores.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claims_take_each_queued_run_exactly_once() {
    let stores = Stores::new("concurrent_claims_take_each_queued_run_exactly_once").await;
    for (kind, store) in &stores.list {
        let agent = format!("fleet-claims-{kind}");
        for n in 0..40 {
            let s = Submission::new(format!("{agent}-{n:02}"), &agent, "hash-a", "{}");
            assert!(store.submit_run(&s).await.unwrap().created);
        }
        // A run of another graph, and one of another agent: never taken here.
        store.submit_run(&Submission::new(format!("{agent}-other-graph"), &agent, "hash-b", "{}")).await.unwrap();
        store.submit_run(&Submission::new(format!("{agent}-other-agent"), "someone", "hash-a", "{}")).await.unwrap();
        let mut tasks = Vec::new();
        for w in 0..4 {
            let (store, agent) = (store.clone(), agent.clone());
            tasks.push(tokio::spawn(async move {
                let ask = ClaimNext::new(format!("worker-{w}"), Duration::from_secs(60), 3)
                    .serving(Served { agent, graph_hash: "hash-a".into() });
                let mut mine = Vec::new();
                loop {
                    let got = store.claim_next(&ask).await.unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    assert!(got.len() <= 3);
                    for next in got {
                        assert_eq!(
                            (next.row.epoch, next.row.owner.as_deref()),
                            (1, Some(format!("worker-{w}").as_str()))
                        );
                        assert_eq!((next.graph_hash.as_str(), next.input.as_deref()), ("hash-a", Some("{}")));
                        mine.push(next.row.run_id);
                    }
                }
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        let distinct: HashSet<_> = all.iter().cloned().collect();
        assert_eq!((all.len(), distinct.len()), (40, 40), "{kind}: each run once");
        for other in [format!("{agent}-other-graph"), format!("{agent}-other-agent")] {
            let row = store.get_run(&other).await.unwrap().unwrap();
            assert_eq!((row.status, row.owner), (AgentStatus::Idle, None), "{kind}: {other} stays queued");
        }
        // Leased runs are not taken again; once a lease ends, they are (oldest first).
        let ask = ClaimNext::new("late", Duration::from_millis(100), 100)
            .serving(Served { agent: agent.clone(), graph_hash: "hash-a".into() });
        assert!(store.claim_next(&ask).await.unwrap().is_empty(), "{kind}");
        let short = ClaimRequest::new(format!("{agent}-00"), "worker-x", Duration::from_millis(1)).reclaim(true);
        // Only its owner's lease is live: a claim by another owner is refused...
        assert!(matches!(store.claim_run(&short).await.unwrap(), agent_runtime::store::Claim::Held(_)), "{kind}");
        // ...until it is given back.
        let row = store.get_run(&format!("{agent}-00")).await.unwrap().unwrap();
        store.release_run(&row.run_id, row.epoch).await.unwrap();
        let again = store.claim_next(&ask).await.unwrap();
        assert_eq!(again.len(), 1, "{kind}");
        assert_eq!((again[0].row.run_id.as_str(), again[0].row.epoch), (format!("{agent}-00").as_str(), 2));
    }
    stores.drop_all().await;
}

/// A state that signals it started, then waits to be let go.
struct Gate {
    started: AtomicUsize,
    open: tokio::sync::Notify,
    opened: std::sync::atomic::AtomicBool,
}

impl Gate {
    fn new() -> Arc<Gate> {
        Arc::new(Gate { started: AtomicUsize::new(0), open: tokio::sync::Notify::new(), opened: false.into() })
    }
    async fn pass(&self) {
        self.started.fetch_add(1, SeqCst);
        loop {
            let notified = self.open.notified();
            if self.opened.load(SeqCst) {
                return;
            }
            notified.await;
        }
    }
    fn let_go(&self) {
        self.opened.store(true, SeqCst);
        self.open.notify_waiters();
    }
    async fn until_started(&self, n: usize) {
        tokio::time::timeout(Duration::from_secs(30), async {
            while self.started.load(SeqCst) < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the states start");
    }
}

/// `slow` waits at `gate`, then `after` runs.
fn gated(name: &str, gate: Arc<Gate>) -> Agent {
    let mut agent = Agent::new(name.to_owned());
    agent
        .add_state("slow", move |ctx: Context| {
            let gate = gate.clone();
            async move {
                ran(&ctx, "slow");
                gate.pass().await;
                ctx.set_state("slow_done", true);
                StateResult::next("after")
            }
        })
        .targets(["after"]);
    agent.add_state("after", |ctx: Context| async move {
        ran(&ctx, "after");
        StateResult::End
    });
    agent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_worker_lets_running_states_finish_and_hands_its_runs_to_another() {
    let stores = Stores::new("a_draining_worker_lets_running_states_finish_and_hands_its_runs_to_another").await;
    for (kind, store) in &stores.list {
        let name = format!("fleet-drain-{kind}");
        let gate = Gate::new();
        let client = gated(&name, gate.clone()).with_store(store.clone());
        let ids = [
            client.submit(SubmitOptions::new().context(input(&format!("{name}-0"), 0))).await.unwrap(),
            client.submit(SubmitOptions::new().context(input(&format!("{name}-1"), 1))).await.unwrap(),
        ];
        let (n, g) = (name.clone(), gate.clone());
        let first = serve(Worker::new(store.clone()).serve(move || gated(&n, g)).concurrency(4));
        gate.until_started(2).await;
        // Drain while both are in `slow`: it finishes, `after` does not start here.
        let _ = first.0.send(());
        tokio::time::sleep(Duration::from_millis(20)).await;
        gate.let_go();
        let report = tokio::time::timeout(Duration::from_secs(30), first.1).await.unwrap().unwrap();
        assert_eq!((report.claimed, report.handed_over, report.completed), (2, 2, 0), "{kind}: {report:?}");
        for id in &ids {
            let row = store.get_run(id).await.unwrap().unwrap();
            assert_eq!((row.status, row.owner.as_deref()), (AgentStatus::Running, None), "{kind}: handed over");
        }
        let (n, g) = (name.clone(), gate.clone());
        let second = serve(Worker::new(store.clone()).serve(move || gated(&n, g)));
        for id in &ids {
            let done = tokio::time::timeout(Duration::from_secs(30), client.wait(id)).await.unwrap().unwrap();
            assert_eq!(done.agent_status, AgentStatus::Completed, "{kind}");
            assert_eq!(done.read_context().unwrap().get_state::<bool>("slow_done"), Some(true));
        }
        let report = stop(second).await;
        assert_eq!((report.claimed, report.completed), (2, 2), "{kind}: {report:?}");
        for n in 0..2 {
            for state in ["slow", "after"] {
                assert_eq!(runs_of(&format!("{name}-{n}"), state), 1, "{kind}: {state} of run {n} ran once");
            }
        }
    }
    stores.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_never_takes_a_run_whose_owner_is_alive_and_takes_it_once_the_owner_is_gone() {
    let stores =
        Stores::new("a_worker_never_takes_a_run_whose_owner_is_alive_and_takes_it_once_the_owner_is_gone").await;
    for (kind, store) in &stores.list {
        let name = format!("fleet-live-{kind}");
        let gate = Gate::new();
        // A healthy owner: a run started in this process, with short leases it keeps renewing.
        let owner = gated(&name, gate.clone()).with_store(store.clone()).lease_ttl(Duration::from_millis(300));
        let run = owner.start(RunOptions::new().context(input(&format!("{name}-live"), 0))).unwrap();
        gate.until_started(1).await;
        let (n, g) = (name.clone(), gate.clone());
        let worker = serve(
            Worker::new(store.clone())
                .serve(move || gated(&n, g))
                .lease_ttl(Duration::from_millis(300))
                .poll_interval(Duration::from_millis(20)),
        );
        // Several leases long: the owner renews, the worker never takes the run.
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        gate.let_go();
        let result = tokio::time::timeout(Duration::from_secs(30), run).await.unwrap().unwrap();
        assert_eq!(result.status(), AgentStatus::Completed);
        let report = stop(worker).await;
        assert_eq!(report.claimed, 0, "{kind}: {report:?}");

        // An owner that is gone: it claimed a submitted run and never wrote again.
        let id = owner.submit(SubmitOptions::new().context(input(&format!("{name}-gone"), 1))).await.unwrap();
        let dead = ClaimRequest::new(&id, "dead-host-1-00000000", Duration::from_millis(200));
        assert!(matches!(store.claim_run(&dead).await.unwrap(), agent_runtime::store::Claim::Taken(_)));
        let (n, g) = (name.clone(), gate.clone());
        let worker =
            serve(Worker::new(store.clone()).serve(move || gated(&n, g)).poll_interval(Duration::from_millis(20)));
        let done = tokio::time::timeout(Duration::from_secs(30), owner.wait(&id)).await.unwrap().unwrap();
        assert_eq!(done.agent_status, AgentStatus::Completed, "{kind}");
        let report = stop(worker).await;
        assert_eq!((report.claimed, report.completed), (1, 1), "{kind}: {report:?}");
        let row = store.get_run(&id).await.unwrap().unwrap();
        assert_eq!(row.epoch, 2, "{kind}: the dead owner's claim, then the worker's");
    }
    stores.drop_all().await;
}

/// `first` then `second`; with `renamed`, `second` is called `last`: another graph.
fn versioned(name: &str, renamed: bool) -> Agent {
    let next = if renamed { "last" } else { "second" };
    let mut agent = Agent::new(name.to_owned());
    agent.add_state("first", move |_ctx: Context| async move { StateResult::next(next) }).targets([next]);
    agent.add_state(next, |ctx: Context| async move {
        ctx.set_state("done", true);
        StateResult::End
    });
    agent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_a_graph_no_worker_serves_stays_queued_until_one_does() {
    let stores = Stores::new("a_run_of_a_graph_no_worker_serves_stays_queued_until_one_does").await;
    for (kind, store) in &stores.list {
        let name = format!("fleet-version-{kind}");
        let v1 = versioned(&name, false).with_store(store.clone());
        let id = v1.submit(SubmitOptions::new()).await.unwrap();
        let n = name.clone();
        let v2 = serve(
            Worker::new(store.clone()).serve(move || versioned(&n, true)).poll_interval(Duration::from_millis(10)),
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let report = stop(v2).await;
        assert_eq!(report.claimed, 0, "{kind}");
        let row = store.get_run(&id).await.unwrap().unwrap();
        assert_eq!((row.status, row.epoch), (AgentStatus::Idle, 0), "{kind}: still queued, untouched");
        // A worker serving both versions runs it under its own graph.
        let (a, b) = (name.clone(), name.clone());
        let both =
            serve(Worker::new(store.clone()).serve(move || versioned(&a, true)).serve(move || versioned(&b, false)));
        let done = tokio::time::timeout(Duration::from_secs(30), v1.wait(&id)).await.unwrap().unwrap();
        assert_eq!(done.agent_status, AgentStatus::Completed, "{kind}");
        assert_eq!(done.completed_states, ["first", "second"], "{kind}");
        stop(both).await;
    }
    stores.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_starts_a_queued_run_from_its_input_and_a_run_that_cannot_start_is_recorded_failed() {
    let stores = Stores::new("recover_starts_a_queued_run_from_its_input").await;
    for (kind, store) in &stores.list {
        let name = format!("fleet-recover-{kind}");
        let agent = doubler(&name).with_store(store.clone());
        let id = agent.submit(SubmitOptions::new().context(input(&format!("{name}-q"), 21))).await.unwrap();
        let result = agent.recover(&id).await.unwrap();
        assert_eq!((result.run_id(), result.status()), (id.as_str(), AgentStatus::Completed), "{kind}");
        assert_eq!(result.context().get_state::<u64>("doubled"), Some(42), "{kind}");

        // Submitted with a context that cannot be read: the worker records it failed once,
        // instead of taking it again and again.
        let hash = agent.graph_hash().unwrap().to_string();
        let bad = Submission::new(format!("{name}-bad"), &name, hash, "{not json");
        store.submit_run(&bad).await.unwrap();
        let n = name.clone();
        let worker =
            serve(Worker::new(store.clone()).serve(move || doubler(&n)).poll_interval(Duration::from_millis(10)));
        tokio::time::timeout(Duration::from_secs(30), async {
            while store.get_run(&bad.run_id).await.unwrap().unwrap().status != AgentStatus::Failed {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("recorded failed");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let report = stop(worker).await;
        assert_eq!((report.claimed, report.failed), (1, 1), "{kind}: {report:?}");
        let row = store.get_run(&bad.run_id).await.unwrap().unwrap();
        assert_eq!(row.owner, None, "{kind}");
    }
    stores.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_started_with_run_whose_process_died_is_taken_over_by_a_worker() {
    let stores = Stores::new("a_run_started_with_run_whose_process_died_is_taken_over_by_a_worker").await;
    for (kind, store) in &stores.list {
        let name = format!("fleet-died-{kind}");
        let gate = Gate::new();
        let owner = gated(&name, gate.clone()).with_store(store.clone());
        let going = tokio::spawn({
            let owner = owner.clone();
            let ctx = input(&format!("{name}-0"), 0);
            async move { owner.run_in(ctx).await }
        });
        gate.until_started(1).await;
        let id = owner.run_id().unwrap();
        going.abort(); // its process dies in `slow`
        let _ = going.await;
        // It recorded the context it started from with its row (see the next test).
        let started = store.run_input(&id).await.unwrap().expect("the starting context is recorded");
        assert_eq!(agent_core::Context::from_json_str(&started).unwrap().get_state::<u64>("n"), Some(0), "{kind}");
        gate.let_go();
        let (n, g) = (name.clone(), gate.clone());
        let worker =
            serve(Worker::new(store.clone()).serve(move || gated(&n, g)).poll_interval(Duration::from_millis(20)));
        let done = tokio::time::timeout(Duration::from_secs(30), owner.wait(&id)).await.unwrap().unwrap();
        assert_eq!(done.agent_status, AgentStatus::Completed, "{kind}");
        let report = stop(worker).await;
        assert_eq!((report.claimed, report.completed), (1, 1), "{kind}: {report:?}");
        // `slow` ran again (its first execution died with its process); `after` once.
        assert_eq!((runs_of(&format!("{name}-0"), "slow"), runs_of(&format!("{name}-0"), "after")), (2, 1), "{kind}");
    }
    stores.drop_all().await;
}

/// On PostgreSQL a worker is woken (`LISTEN`/`NOTIFY`) by a run submitted through another
/// connection (another process's, as far as the worker can tell) long before its next poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_on_postgres_is_woken_by_a_submission_made_elsewhere() {
    let Some(url) = common::pg::url("a_worker_on_postgres_is_woken_by_a_submission_made_elsewhere") else { return };
    let (schema, _) = common::pg::own_schema(&url, "wake");
    let worker_store = agent_runtime::store::PostgresStore::connect_with_schema(&url, &schema).await.unwrap();
    let elsewhere = agent_runtime::store::PostgresStore::connect_with_schema(&url, &schema).await.unwrap();
    let name = "fleet-wake";
    let worker = serve(Worker::new(worker_store).serve(|| doubler(name)).poll_interval(Duration::from_secs(600)));
    // The worker's first (empty) claim, and its LISTEN, before the submission.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let hash = doubler(name).graph_hash().unwrap().to_string();
    let input = input("fleet-wake-0", 4).to_json_string().unwrap();
    // Straight to the store: no wake-up within this process.
    elsewhere.submit_run(&Submission::new("fleet-wake-run", name, hash, input)).await.unwrap();
    let client = doubler(name).with_store(elsewhere.clone());
    let done = tokio::time::timeout(Duration::from_secs(60), client.wait("fleet-wake-run")).await;
    let done = done.expect("woken long before its next poll, 600 s away").unwrap();
    assert_eq!(done.read_context().unwrap().get_state::<u64>("doubled"), Some(8));
    assert_eq!(stop(worker).await.completed, 1);
    common::pg::drop_schema(&url, &schema).await;
}

/// A run whose process died after creating its row and before its first snapshot (nothing of
/// it ran: states start only once that snapshot is committed) goes on from the context it
/// was started with, instead of being stuck `Running` with nothing to resume from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_died_before_its_first_snapshot_goes_on_from_its_input() {
    let stores = Stores::new("a_run_that_died_before_its_first_snapshot_goes_on_from_its_input").await;
    for (kind, store) in &stores.list {
        let name = format!("fleet-early-{kind}");
        let agent = doubler(&name).with_store(store.clone());
        let id = format!("{name}-run");
        // What `run()` writes first: its row, owned, with its graph and its starting context.
        let row = agent_runtime::store::RunRecord::new(&id, &name, AgentStatus::Running, 1, 1);
        let claim = ClaimRequest::new(&id, "dead-host-1-00000000", Duration::from_millis(100))
            .create(row)
            .graph_hash(agent.graph_hash().unwrap().to_string())
            .input(input(&format!("{name}-0"), 5).to_json_string().unwrap());
        assert!(matches!(store.claim_run(&claim).await.unwrap(), agent_runtime::store::Claim::Taken(_)));
        assert_eq!(agent_runtime::store::read_checkpoint(&**store, &id).await.unwrap(), None, "no snapshot");
        let n = name.clone();
        let worker =
            serve(Worker::new(store.clone()).serve(move || doubler(&n)).poll_interval(Duration::from_millis(20)));
        let done = tokio::time::timeout(Duration::from_secs(30), agent.wait(&id)).await.unwrap().unwrap();
        assert_eq!(done.read_context().unwrap().get_state::<u64>("doubled"), Some(10), "{kind}");
        assert_eq!(stop(worker).await.completed, 1, "{kind}");
    }
    stores.drop_all().await;
}
