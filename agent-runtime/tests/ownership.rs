//! Owned runs: a durable run claims its run in the store, renews its lease while it goes on,
//! stops at once when it loses the run, and gives the lease back at its end; `recover`
//! refuses a run whose lease is live. Each scenario runs on `MemoryStore`, an SQLite file and
//! a PostgreSQL schema of its own (when `AGENT_TEST_POSTGRES_URL` is set; required under CI:
//! see `common/pg.rs`), through two handles on the same data (two clones, two opens of the
//! file, two pools).
//!
//! A crashed process is played by aborting a run's task (which gives its lease back), then
//! claiming the run through the store as a worker that never renews. In `processes`, two
//! child processes (this test binary itself, run with `AGENT_OWN_CHILD` set) recover one run
//! at once, each as its own worker. Lease ends are compared
//! by the store's clock, so the scenarios about them wait a few hundred milliseconds of real
//! time, bounded, and assert outcomes, never durations.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agent_core::{AgentError, AgentStatus, Checkpoint, Context, HumanInput, StateResult};
use agent_runtime::store::{
    CheckpointStore, Claim, ClaimRequest, InputRecord, JournalEntry, Lineage, MemoryStore, Retention, RetentionReport,
    RunQuery, RunRecord, Snapshot, SqliteStore, StoreError, StoreFuture,
};
use agent_runtime::{Agent, WorkerId};

mod common;

type Store = Arc<dyn CheckpointStore>;
type Log = Arc<Mutex<Vec<String>>>;

/// What a worker that crashed holding the run is called.
const CRASHED: &str = "crashed-host-1-0dead";

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// The chain `a → b → c → d`; each state's start is logged in `log` (outside the store).
/// `c` hangs when `hang`, and takes `c_work` otherwise.
fn chain(name: &str, store: Store, log: &Log, hang: bool, c_work: Duration) -> Agent {
    let mut agent = Agent::new(name.to_owned()).with_store(store);
    for (state, next) in [("a", Some("b")), ("b", Some("c")), ("c", Some("d")), ("d", None)] {
        let log = log.clone();
        agent.add_state(state, move |ctx: Context| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push(state.to_owned());
                if state == "c" {
                    if hang {
                        std::future::pending::<()>().await;
                    }
                    tokio::time::sleep(c_work).await;
                }
                ctx.set_state(state, true);
                next.map_or(StateResult::End, StateResult::next)
            }
        });
    }
    agent
}

/// The newest checkpoint of `run_id`.
async fn newest(store: &Store, run_id: &str) -> Option<Checkpoint> {
    agent_runtime::store::read_checkpoint(store, run_id).await.unwrap()
}

/// Wait (real time, bounded) until `check` holds.
async fn until<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let give_up = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < give_up, "gave up waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Start the chain of agent `name`, let it hang in `c`, and drop it there: its run's id. The
/// run is left recorded in `c`, with no owner (the dropped run gave its lease back).
async fn crashed_in_c(name: &str, store: &Store) -> String {
    let log = Log::default();
    let first = chain(name, store.clone(), &log, true, Duration::ZERO);
    let running = tokio::spawn({
        let first = first.clone();
        async move { first.run().await }
    });
    let query = RunQuery { agent: Some(name.to_owned()), ..RunQuery::default() };
    let give_up = Instant::now() + Duration::from_secs(20);
    let run_id = loop {
        assert!(Instant::now() < give_up, "gave up waiting until the run is in `c`");
        tokio::time::sleep(Duration::from_millis(5)).await;
        let Some(run) = store.list_runs(&query).await.unwrap().into_iter().next() else { continue };
        // Recorded running `c`, and `c`'s body started (the record is made as the state is
        // marked running, a moment before its body logs: on a loaded machine, a drop in
        // between left the log one short).
        let started = log.lock().unwrap().len() == 3;
        if started && newest(store, &run.run_id).await.is_some_and(|c| c.running_states() == ["c"]) {
            break run.run_id;
        }
    };
    running.abort();
    let _ = running.await;
    until("the dropped run gave its lease back", || async {
        store.get_run(&run_id).await.unwrap().is_some_and(|r| r.owner.is_none())
    })
    .await;
    assert_eq!(*log.lock().unwrap(), ["a", "b", "c"]);
    run_id
}

/// A worker that crashed while holding `run_id` for `ttl`: its row as claimed.
async fn held_by_a_crashed_worker(store: &Store, run_id: &str, ttl: Duration) -> RunRecord {
    match store.claim_run(&ClaimRequest::new(run_id, CRASHED, ttl)).await.unwrap() {
        Claim::Taken(row) => row,
        other => panic!("the crashed worker could not take the run: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// The scenarios. Each takes two handles on one empty store.
// ---------------------------------------------------------------------------------------

/// `recover` of a run whose lease is live: `Owned`, naming the owner and the lease's end, at
/// once, with nothing run and nothing written; `recover_all` skips it the same way. Once the
/// lease has run out, `recover` takes the run and only the state in flight runs again.
async fn a_live_lease_refuses_recovery_until_it_runs_out(stores: [Store; 2], tag: &str) {
    let name = format!("{tag}_live");
    let run_id = crashed_in_c(&name, &stores[0]).await;
    let before = newest(&stores[0], &run_id).await.unwrap();
    let crashed = held_by_a_crashed_worker(&stores[0], &run_id, Duration::from_millis(400)).await;
    let lease_end = crashed.lease_until_ms.unwrap();

    let log = Log::default();
    let second = chain(&name, stores[1].clone(), &log, false, Duration::ZERO);
    match second.recover(&run_id).await {
        Err(AgentError::Owned { run_id: r, owner, lease_until }) => {
            assert_eq!((r.as_str(), owner.as_str()), (run_id.as_str(), CRASHED));
            assert_eq!(lease_until, UNIX_EPOCH + Duration::from_millis(lease_end as u64));
        }
        other => panic!("expected Owned, got {other:?}"),
    }
    let skipped = second.recover_all().await.unwrap();
    assert_eq!(skipped.len(), 1);
    assert!(matches!(&skipped[0], (id, Err(AgentError::Owned { .. })) if *id == run_id), "{skipped:?}");
    assert!(log.lock().unwrap().is_empty(), "nothing ran");
    assert_eq!(stores[1].get_run(&run_id).await.unwrap(), Some(crashed.clone()), "nothing was written");
    assert_eq!(newest(&stores[1], &run_id).await.unwrap().to_json().unwrap(), before.to_json().unwrap());

    until("the crashed worker's lease ran out", || async { now_ms() > lease_end + 20 }).await;
    let result = second.recover(&run_id).await.expect("recovered once the lease ran out");
    assert_eq!(result.status(), AgentStatus::Completed);
    assert_eq!(*log.lock().unwrap(), ["c", "d"], "only the state in flight ran again, then its successor");
    let done = stores[0].get_run(&run_id).await.unwrap().unwrap();
    assert_eq!((done.status, done.owner, done.epoch), (AgentStatus::Completed, None, crashed.epoch + 1));
}

/// Two agents (two handles on the store) recover one crashed run at once: one completes it,
/// the other is refused with `Owned`; every state's body runs once.
async fn two_agents_recovering_one_run_run_each_state_once(stores: [Store; 2], tag: &str) {
    let name = format!("{tag}_two");
    let run_id = crashed_in_c(&name, &stores[0]).await;
    let log = Log::default();
    // `c` takes a while, so that the winner still holds the run when the other asks.
    let one = chain(&name, stores[0].clone(), &log, false, Duration::from_millis(50));
    let two = chain(&name, stores[1].clone(), &log, false, Duration::from_millis(50));
    let (x, y) = tokio::join!(
        tokio::spawn({
            let (one, run_id) = (one.clone(), run_id.clone());
            async move { one.recover(&run_id).await }
        }),
        tokio::spawn({
            let (two, run_id) = (two.clone(), run_id.clone());
            async move { two.recover(&run_id).await }
        })
    );
    let outcomes = [x.unwrap(), y.unwrap()];
    let completed = outcomes.iter().filter(|r| r.as_ref().is_ok_and(|r| r.status() == AgentStatus::Completed)).count();
    let owned =
        outcomes.iter().filter(|r| matches!(r, Err(AgentError::Owned { run_id: r, .. }) if *r == run_id)).count();
    assert_eq!((completed, owned), (1, 1), "{outcomes:?}");
    assert_eq!(*log.lock().unwrap(), ["c", "d"], "each state ran once");
    let last = newest(&stores[0], &run_id).await.unwrap();
    assert_eq!(last.agent_status, AgentStatus::Completed);
    for s in &last.states {
        assert_eq!(s.completed, 1, "state {} completed {} times on record", s.name, s.completed);
    }
}

/// While a run waits in `b`, another worker takes it over. When `b` completes, the run's
/// write is refused: the run stops at once with `Fenced` (cancelled, `c` never starts), and
/// nothing more of it is written: not a snapshot, not its status, not a release.
async fn a_run_taken_over_stops_at_once_and_writes_nothing_more(stores: [Store; 2], tag: &str) {
    let gate = Arc::new(tokio::sync::Notify::new());
    let log = Log::default();
    let mut agent = Agent::new(format!("{tag}_fenced")).with_store(stores[0].clone());
    for (state, next) in [("a", Some("b")), ("b", Some("c")), ("c", None)] {
        let (log, gate) = (log.clone(), gate.clone());
        agent.add_state(state, move |ctx: Context| {
            let (log, gate) = (log.clone(), gate.clone());
            async move {
                log.lock().unwrap().push(state.to_owned());
                if state == "b" {
                    gate.notified().await;
                }
                ctx.set_state(state, true);
                next.map_or(StateResult::End, StateResult::next)
            }
        });
    }
    let running = tokio::spawn({
        let agent = agent.clone();
        async move { agent.run().await }
    });
    until("the run is in `b`", || async { log.lock().unwrap().len() == 2 }).await;
    let run_id = agent.run_id().unwrap();
    let mine = stores[0].get_run(&run_id).await.unwrap().unwrap();
    assert_eq!(mine.owner.as_deref(), Some(WorkerId::current().as_str()), "the run owns itself");

    // Another worker takes it (as if the lease had run out).
    stores[1].release_run(&run_id, mine.epoch).await.unwrap();
    let thief = match stores[1].claim_run(&ClaimRequest::new(&run_id, "thief", Duration::from_secs(60))).await {
        Ok(Claim::Taken(row)) => row,
        other => panic!("{other:?}"),
    };
    let snapshots = stores[1].snapshots(&run_id, 100).await.unwrap();

    gate.notify_one();
    let result = tokio::time::timeout(Duration::from_secs(20), running).await.unwrap().unwrap();
    match result {
        Err(AgentError::Fenced { run_id: r, reason, context }) => {
            assert_eq!(r, run_id);
            assert!(reason.contains("fenced"), "{reason}");
            assert_eq!(context.get_state::<bool>("b"), Some(true), "the context as it stopped");
        }
        other => panic!("expected Fenced, got {other:?}"),
    }
    assert_eq!(agent.status(), AgentStatus::Cancelled);
    assert_eq!(*log.lock().unwrap(), ["a", "b"], "`c` never started");
    assert_eq!(stores[1].snapshots(&run_id, 100).await.unwrap(), snapshots, "no snapshot after the takeover");
    assert_eq!(stores[1].get_run(&run_id).await.unwrap(), Some(thief), "the row is the new owner's, untouched");
}

/// A run waiting for a person is taken over; its request's timeout then fires: the default
/// it takes is not recorded (the request stays unanswered in the store, for the new owner to
/// ask again), and the run stops `Fenced` at its next write.
async fn a_run_taken_over_records_no_answer(stores: [Store; 2], tag: &str) {
    let mut agent = Agent::new(format!("{tag}_asked")).with_store(stores[0].clone()).input_from_terminal(false);
    agent.add_state("ask", |ctx: Context| async move {
        let input = HumanInput::new("Approve?").timeout(Duration::from_millis(300)).default("no");
        let answer = ctx.human_in_the_loop(input).await.unwrap();
        ctx.set_state("answer", answer);
        StateResult::End
    });
    let running = tokio::spawn({
        let agent = agent.clone();
        async move { agent.run().await }
    });
    until("the request is pending", || async { !agent.pending_inputs().is_empty() }).await;
    let run_id = agent.run_id().unwrap();
    until("the request is in the store", || async { !stores[1].inputs(Some(&run_id), true).await.unwrap().is_empty() })
        .await;
    let mine = stores[1].get_run(&run_id).await.unwrap().unwrap();
    stores[1].release_run(&run_id, mine.epoch).await.unwrap();
    let thief = ClaimRequest::new(&run_id, "thief", Duration::from_secs(60));
    assert!(matches!(stores[1].claim_run(&thief).await.unwrap(), Claim::Taken(_)));

    let result = tokio::time::timeout(Duration::from_secs(20), running).await.unwrap().unwrap();
    assert!(matches!(result, Err(AgentError::Fenced { .. })), "{result:?}");
    let asked = stores[1].inputs(Some(&run_id), false).await.unwrap();
    assert_eq!(asked.len(), 1);
    assert_eq!((asked[0].answer.as_deref(), asked[0].defaulted), (None, false), "the default was not recorded");
}

/// A store whose lease renewals fail (as when the database cannot be reached for
/// renewals): everything else goes through to `inner`.
struct NoRenewals(Store);

impl CheckpointStore for NoRenewals {
    fn kind(&self) -> &'static str {
        self.0.kind()
    }
    fn upsert_run<'a>(&'a self, run: &'a RunRecord) -> StoreFuture<'a, ()> {
        self.0.upsert_run(run)
    }
    fn get_run<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<RunRecord>> {
        self.0.get_run(run_id)
    }
    fn list_runs<'a>(&'a self, query: &'a RunQuery) -> StoreFuture<'a, Vec<RunRecord>> {
        self.0.list_runs(query)
    }
    fn append<'a>(&'a self, run: &'a RunRecord, entries: &'a [JournalEntry]) -> StoreFuture<'a, ()> {
        self.0.append(run, entries)
    }
    fn journal<'a>(&'a self, run_id: &'a str, after: u64) -> StoreFuture<'a, Vec<JournalEntry>> {
        self.0.journal(run_id, after)
    }
    fn save_snapshot<'a>(&'a self, run_id: &'a str, epoch: u64, snapshot: &'a Snapshot) -> StoreFuture<'a, ()> {
        self.0.save_snapshot(run_id, epoch, snapshot)
    }
    fn save_run_snapshot<'a>(&'a self, run: &'a RunRecord, snapshot: &'a Snapshot) -> StoreFuture<'a, ()> {
        self.0.save_run_snapshot(run, snapshot)
    }
    fn claim_run<'a>(&'a self, claim: &'a ClaimRequest) -> StoreFuture<'a, Claim> {
        self.0.claim_run(claim)
    }
    fn submit_run<'a>(
        &'a self,
        s: &'a agent_runtime::store::Submission,
    ) -> StoreFuture<'a, agent_runtime::store::Submitted> {
        self.0.submit_run(s)
    }
    fn claim_next<'a>(
        &'a self,
        ask: &'a agent_runtime::store::ClaimNext,
    ) -> StoreFuture<'a, Vec<agent_runtime::store::NextRun>> {
        self.0.claim_next(ask)
    }
    fn run_input<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<String>> {
        self.0.run_input(run_id)
    }
    fn request_state_cancel<'a>(&'a self, run_id: &'a str, state: &'a str) -> StoreFuture<'a, bool> {
        self.0.request_state_cancel(run_id, state)
    }
    fn take_state_cancels<'a>(&'a self, run_id: &'a str, epoch: u64) -> StoreFuture<'a, Vec<String>> {
        self.0.take_state_cancels(run_id, epoch)
    }
    fn record_lineage<'a>(&'a self, lineage: &'a Lineage) -> StoreFuture<'a, ()> {
        self.0.record_lineage(lineage)
    }
    fn lineage<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<Lineage>> {
        self.0.lineage(run_id)
    }
    fn descendants<'a>(&'a self, parent_run_id: &'a str) -> StoreFuture<'a, Vec<Lineage>> {
        self.0.descendants(parent_run_id)
    }
    fn renew_lease<'a>(&'a self, run_id: &'a str, _: &'a str, _: u64, _: Duration) -> StoreFuture<'a, i64> {
        Box::pin(async move {
            Err(StoreError::Backend { store: "test", message: format!("renew {run_id}: unreachable"), source: None })
        })
    }
    fn release_run<'a>(&'a self, run_id: &'a str, epoch: u64) -> StoreFuture<'a, ()> {
        self.0.release_run(run_id, epoch)
    }
    fn prune_snapshots<'a>(&'a self, run_id: &'a str, epoch: u64, keep: usize) -> StoreFuture<'a, RetentionReport> {
        self.0.prune_snapshots(run_id, epoch, keep)
    }
    fn latest_snapshot<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<Snapshot>> {
        self.0.latest_snapshot(run_id)
    }
    fn snapshots<'a>(&'a self, run_id: &'a str, limit: usize) -> StoreFuture<'a, Vec<Snapshot>> {
        self.0.snapshots(run_id, limit)
    }
    fn put_input<'a>(&'a self, input: &'a InputRecord) -> StoreFuture<'a, ()> {
        self.0.put_input(input)
    }
    fn inputs<'a>(&'a self, run_id: Option<&'a str>, pending_only: bool) -> StoreFuture<'a, Vec<InputRecord>> {
        self.0.inputs(run_id, pending_only)
    }
    fn answer_input<'a>(
        &'a self,
        run_id: &'a str,
        request_id: &'a str,
        answer: &'a str,
        defaulted: bool,
        at_ms: i64,
    ) -> StoreFuture<'a, bool> {
        self.0.answer_input(run_id, request_id, answer, defaulted, at_ms)
    }
    fn put_input_fenced<'a>(&'a self, input: &'a InputRecord, epoch: u64) -> StoreFuture<'a, ()> {
        self.0.put_input_fenced(input, epoch)
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
        self.0.answer_input_fenced(run_id, request_id, answer, defaulted, at_ms, epoch)
    }
    fn delete_run<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, bool> {
        self.0.delete_run(run_id)
    }
    fn apply_retention<'a>(&'a self, policy: &'a Retention, now_ms: i64) -> StoreFuture<'a, RetentionReport> {
        self.0.apply_retention(policy, now_ms)
    }
}

/// A run that cannot renew its lease stops when the lease ends (by its own monotonic
/// clock): `Fenced`, cancelled, the state in flight dropped, and nothing written after:
/// neither a final snapshot nor a release (the lease is left to run out in the store).
async fn a_lease_that_cannot_be_renewed_stops_the_run(stores: [Store; 2], tag: &str) {
    let store: Store = Arc::new(NoRenewals(stores[0].clone()));
    let log = Log::default();
    let agent =
        chain(&format!("{tag}_unrenewed"), store, &log, true, Duration::ZERO).lease_ttl(Duration::from_millis(300));
    let result = tokio::time::timeout(Duration::from_secs(20), agent.run()).await.expect("the run stopped");
    match result {
        Err(AgentError::Fenced { reason, .. }) => assert!(reason.contains("lease"), "{reason}"),
        other => panic!("expected Fenced, got {other:?}"),
    }
    assert_eq!(agent.status(), AgentStatus::Cancelled);
    assert_eq!(*log.lock().unwrap(), ["a", "b", "c"]);
    let run_id = agent.run_id().unwrap();
    let last = newest(&stores[1], &run_id).await.unwrap();
    assert_eq!((last.agent_status, last.running_states()), (AgentStatus::Running, vec!["c"]), "no final snapshot");
    let row = stores[1].get_run(&run_id).await.unwrap().unwrap();
    assert_eq!((row.status, row.owner.as_deref()), (AgentStatus::Running, Some(WorkerId::current().as_str())));
}

/// A run gives its lease back at its end: completed, paused (and claimed again, one epoch
/// up, when resumed), and when its future is dropped.
async fn the_lease_is_given_back_at_the_end(stores: [Store; 2], tag: &str) {
    let log = Log::default();
    let agent = chain(&format!("{tag}_released"), stores[0].clone(), &log, false, Duration::ZERO);
    let done = agent.run().await.unwrap();
    let row = stores[1].get_run(done.run_id()).await.unwrap().unwrap();
    assert_eq!((row.status, row.owner, row.lease_until_ms, row.epoch), (AgentStatus::Completed, None, None, 1));

    // Paused in `c`, then resumed.
    let paused_log = Log::default();
    let agent = chain(&format!("{tag}_paused"), stores[0].clone(), &paused_log, false, Duration::from_millis(100));
    let running = tokio::spawn({
        let agent = agent.clone();
        async move { agent.run().await }
    });
    until("the run is in `c`", || async { paused_log.lock().unwrap().len() == 3 }).await;
    agent.pause().await;
    let result = running.await.unwrap().unwrap();
    assert_eq!(result.status(), AgentStatus::Paused);
    let row = stores[1].get_run(result.run_id()).await.unwrap().unwrap();
    assert_eq!((row.status, row.owner, row.epoch), (AgentStatus::Paused, None, 1));
    let resumed = agent.resume().await.unwrap();
    assert_eq!(resumed.status(), AgentStatus::Completed);
    let row = stores[1].get_run(resumed.run_id()).await.unwrap().unwrap();
    assert_eq!((row.status, row.owner, row.epoch), (AgentStatus::Completed, None, 2));

    // Dropped: given back in the background.
    let run_id = crashed_in_c(&format!("{tag}_dropped"), &stores[0]).await;
    assert_eq!(stores[1].get_run(&run_id).await.unwrap().unwrap().owner, None);
}

// ---------------------------------------------------------------------------------------
// The scenarios, per store.
// ---------------------------------------------------------------------------------------

macro_rules! scenarios {
    ($make:ident) => {
        scenarios!($make:
            a_live_lease_refuses_recovery_until_it_runs_out,
            two_agents_recovering_one_run_run_each_state_once,
            a_run_taken_over_stops_at_once_and_writes_nothing_more,
            a_run_taken_over_records_no_answer,
            a_lease_that_cannot_be_renewed_stops_the_run,
            the_lease_is_given_back_at_the_end,
        );
    };
    ($make:ident: $($scenario:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $scenario() {
            $make(stringify!($scenario), |stores, tag| async move { super::$scenario(stores, &tag).await }).await;
        }
    )*};
}

mod memory {
    use super::*;

    async fn with<F, Fut>(_test: &str, body: F)
    where
        F: FnOnce([Store; 2], String) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let store = MemoryStore::new();
        body([Arc::new(store.clone()), Arc::new(store)], "memory".to_owned()).await;
    }

    scenarios!(with);
}

mod sqlite {
    use super::*;

    async fn with<F, Fut>(_test: &str, body: F)
    where
        F: FnOnce([Store; 2], String) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.db");
        let stores: [Store; 2] =
            [Arc::new(SqliteStore::open(&path).unwrap()), Arc::new(SqliteStore::open(&path).unwrap())];
        body(stores, "sqlite".to_owned()).await;
    }

    scenarios!(with);
}

mod postgres {
    use super::*;
    use agent_runtime::store::PostgresStore;

    /// Run `body` on two stores in a schema of its own, dropped afterwards whatever happens.
    async fn with<F, Fut>(test: &str, body: F)
    where
        F: FnOnce([Store; 2], String) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let Some(url) = common::pg::url(test) else { return };
        let schema = format!("agent_test_own_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let outcome = tokio::spawn({
            let (url, schema) = (url.clone(), schema.clone());
            async move {
                let one = PostgresStore::connect_with_schema(&url, &schema).await.unwrap();
                let two = PostgresStore::connect_with_schema(&url, &schema).await.unwrap();
                body([Arc::new(one), Arc::new(two)], "postgres".to_owned()).await
            }
        })
        .await;
        crate::common::pg::drop_schema(&url, &schema).await;
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    }

    scenarios!(with);
}

// ---------------------------------------------------------------------------------------
// Two processes recover one crashed run.
// ---------------------------------------------------------------------------------------

/// Two child processes (this test binary, run with `AGENT_OWN_CHILD` set) recover one
/// crashed run at the same moment, each through its own connection and as its own worker:
/// one completes it, the other is refused with `Owned`, and every state's body runs once
/// across both.
mod processes {
    use std::io::Write;
    use std::process::{Child, Command, Stdio};

    use super::*;

    /// The child: recover `AGENT_OWN_RUN` from the store `AGENT_OWN_CHILD` names; log each
    /// state's start, then the outcome, to the file `AGENT_OWN_LOG`.
    #[tokio::test]
    async fn recover_child() {
        let Ok(address) = std::env::var("AGENT_OWN_CHILD") else { return };
        let (run_id, log_path) = (std::env::var("AGENT_OWN_RUN").unwrap(), std::env::var("AGENT_OWN_LOG").unwrap());
        let name = std::env::var("AGENT_OWN_AGENT").unwrap();
        let store: Store = match address.strip_prefix("sqlite:") {
            Some(path) => Arc::new(SqliteStore::open(path).unwrap()),
            None => {
                let (schema, url) = address.strip_prefix("postgres:").unwrap().split_once('|').unwrap();
                Arc::new(agent_runtime::store::PostgresStore::connect_with_schema(url, schema).await.unwrap())
            }
        };
        let log = Log::default();
        // `c` takes a while, so the winner holds the run while the other asks.
        let agent = chain(&name, store, &log, false, Duration::from_millis(500));
        let outcome = match agent.recover(&run_id).await {
            Ok(r) if r.status() == AgentStatus::Completed => "completed".to_owned(),
            Err(AgentError::Owned { owner, .. }) if owner != WorkerId::current().to_string() => "owned".to_owned(),
            other => format!("unexpected {other:?}"),
        };
        let mut file = std::fs::OpenOptions::new().append(true).create(true).open(log_path).unwrap();
        let mut lines: Vec<String> = log.lock().unwrap().iter().map(|s| format!("state {s}\n")).collect();
        lines.push(format!("outcome {outcome}\n"));
        file.write_all(lines.concat().as_bytes()).unwrap();
    }

    fn spawn_child(address: &str, name: &str, run_id: &str, log: &std::path::Path) -> Child {
        Command::new(std::env::current_exe().unwrap())
            .args(["processes::recover_child", "--exact", "--nocapture", "--test-threads", "1"])
            .env("AGENT_OWN_CHILD", address)
            .env("AGENT_OWN_AGENT", name)
            .env("AGENT_OWN_RUN", run_id)
            .env("AGENT_OWN_LOG", log)
            .stdout(Stdio::null())
            .stderr(if std::env::var("AGENT_OWN_DEBUG").is_ok() { Stdio::inherit() } else { Stdio::null() })
            .spawn()
            .unwrap()
    }

    /// Wait for `child` (killing it after 60 s): whether it exited with success.
    fn finished(mut child: Child) -> bool {
        let give_up = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.success();
            }
            if Instant::now() > give_up {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Crash a run in `c` through `store`, then let two children recover it at once.
    async fn two_processes(store: Store, address: &str, tag: &str) {
        let name = format!("{tag}_two_processes_{}", std::process::id());
        let run_id = crashed_in_c(&name, &store).await;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let children = [spawn_child(address, &name, &run_id, &log), spawn_child(address, &name, &run_id, &log)];
        let ok = tokio::task::spawn_blocking(move || children.map(finished)).await.unwrap();
        assert_eq!(ok, [true, true], "both children exited cleanly");
        let text = std::fs::read_to_string(&log).unwrap();
        let mut outcomes: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("outcome ")).collect();
        outcomes.sort_unstable();
        assert_eq!(outcomes, ["completed", "owned"], "{text}");
        let states: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("state ")).collect();
        assert_eq!(states, ["c", "d"], "each state's body ran once across both processes: {text}");
        let last = newest(&store, &run_id).await.unwrap();
        assert_eq!(last.agent_status, AgentStatus::Completed);
        for s in &last.states {
            assert_eq!(s.completed, 1, "state {} completed {} times on record", s.name, s.completed);
        }
        let row = store.get_run(&run_id).await.unwrap().unwrap();
        assert_eq!((row.owner, row.epoch), (None, 2), "one claim after the crashed run's own");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_processes_recovering_one_run_on_sqlite() {
        if std::env::var("AGENT_OWN_CHILD").is_ok() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.db");
        let store: Store = Arc::new(SqliteStore::open(&path).unwrap());
        two_processes(store, &format!("sqlite:{}", path.display()), "sqlite").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_processes_recovering_one_run_on_postgres() {
        if std::env::var("AGENT_OWN_CHILD").is_ok() {
            return;
        }
        let test = "two_processes_recovering_one_run_on_postgres";
        let Some(url) = common::pg::url(test) else { return };
        let schema = format!("agent_test_own_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let outcome = tokio::spawn({
            let (url, schema) = (url.clone(), schema.clone());
            async move {
                let store: Store =
                    Arc::new(agent_runtime::store::PostgresStore::connect_with_schema(&url, &schema).await.unwrap());
                two_processes(store, &format!("postgres:{schema}|{url}"), "postgres").await;
            }
        })
        .await;
        crate::common::pg::drop_schema(&url, &schema).await;
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}
