//! Durable runs: with a store, every completion is committed before its successors start,
//! and a run whose process died goes on with `recover` (only in-flight states run again).

use std::future::Future;
use std::pin::Pin;

use agent_core::{AgentStatus, Checkpoint, Context, StateResult};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;

use std::time::Duration;

use agent_runtime::store::{
    CheckpointStore, Claim, ClaimRequest, InputRecord, JournalEntry, Lineage, MemoryStore, Retention, RetentionReport,
    RunQuery, RunRecord, Snapshot, SqliteStore, StoreFuture,
};
use agent_runtime::Agent;

mod common;

type Fut = Pin<Box<dyn Future<Output = StateResult> + Send>>;

fn trail(ctx: &Context) -> Vec<String> {
    ctx.get_state("trail").unwrap_or_default()
}

/// The newest checkpoint the store holds of the only run in it.
async fn latest(store: &dyn CheckpointStore) -> Checkpoint {
    let runs = store.list_runs(&RunQuery::default()).await.unwrap();
    agent_runtime::store::read_checkpoint(store, &runs[0].run_id)
        .await
        .unwrap()
        .expect("a first snapshot before any state")
}

/// A state that checks that every state in `before` is completed in the store's newest
/// snapshot (so its completion was committed before this successor started), records its
/// visit, and moves on; `hang` makes it wait forever (a process about to die).
fn step(
    store: MemoryStore,
    name: &'static str,
    before: &'static [&'static str],
    next: StateResult,
    hang: bool,
) -> impl Fn(Context) -> Fut + Send + Sync + 'static {
    move |ctx: Context| {
        let (store, next) = (store.clone(), next.clone());
        Box::pin(async move {
            let recorded = latest(&store).await;
            for b in before {
                assert!(
                    recorded.completed_states.iter().any(|c| c == b),
                    "{name} started before {b}'s completion was recorded"
                );
            }
            if hang {
                std::future::pending::<()>().await;
            }
            ctx.update_state_or_default("trail", |t: &mut Vec<String>| t.push(name.to_owned())).unwrap();
            next
        })
    }
}

fn pipeline(store: &MemoryStore, hang_at: Option<&str>) -> Agent {
    let mut agent = Agent::new("pipeline").with_store(store.clone());
    let s = |name: &'static str, before: &'static [&'static str], next: StateResult| {
        step(store.clone(), name, before, next, hang_at == Some(name))
    };
    agent.add_state("load", s("load", &[], StateResult::parallel(["a", "b", "c"])));
    agent.add_state("a", s("a", &["load"], "merge".into()));
    agent.add_state("b", s("b", &["load"], "merge".into()));
    agent.add_state("c", s("c", &["load"], "merge".into()));
    agent.add_state("merge", s("merge", &["a", "b", "c"], "report".into()));
    agent.add_state("report", s("report", &["merge"], StateResult::End));
    agent
}

#[tokio::test]
async fn every_completion_is_recorded_before_its_successors_start() {
    let store = MemoryStore::new();
    let result = pipeline(&store, None).run().await.unwrap();
    assert_eq!(trail(result.context()).len(), 6);
    let run = store.get_run(result.run_id()).await.unwrap().unwrap();
    assert_eq!(run.status, AgentStatus::Completed);
    assert_eq!(run.agent, "pipeline");
    let last = latest(&store).await;
    assert_eq!(last.agent_status, AgentStatus::Completed);
    assert_eq!(last.completed_states.len(), 6);
    assert_eq!(trail(&last.read_context().unwrap()).len(), 6, "the final snapshot has the whole context");
}

#[tokio::test]
async fn a_run_whose_process_died_is_recovered_and_only_in_flight_states_run_again() {
    let store = MemoryStore::new();
    // The first process stops for good inside `merge` (its task is dropped: nothing more
    // is written, as when the process is killed).
    let first = pipeline(&store, Some("merge"));
    let running = tokio::spawn(async move { first.run().await });
    let run_id = loop {
        tokio::task::yield_now().await;
        let c = latest(&store).await;
        if c.completed_states.len() == 4 && c.running_states() == ["merge"] {
            break c.run_id;
        }
    };
    running.abort();
    let _ = running.await;
    assert_eq!(store.get_run(&run_id).await.unwrap().unwrap().status, AgentStatus::Running);

    // A new process: the same workflow, the same store.
    let second = pipeline(&store, None);
    let recovered = second.recover_all().await.unwrap();
    assert_eq!(recovered.len(), 1);
    assert_eq!(recovered[0].0, run_id);
    let result = recovered[0].1.as_ref().unwrap();
    let mut t = trail(result.context());
    assert_eq!(t.split_off(4), ["merge", "report"]);
    t.sort();
    assert_eq!(t, ["a", "b", "c", "load"], "nothing completed ran again");
    assert_eq!(store.get_run(&run_id).await.unwrap().unwrap().status, AgentStatus::Completed);
    assert!(second.recover_all().await.unwrap().is_empty(), "nothing is left unfinished");
}

#[tokio::test]
async fn a_sqlite_file_carries_a_run_to_another_agent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.db");
    let build = |store: SqliteStore, hang: bool| {
        let mut agent = Agent::new("file").with_store(store);
        agent.add_state("first", |ctx: Context| async move {
            ctx.update_state_or_default("n", |n: &mut u32| *n += 1).unwrap();
            StateResult::next("second")
        });
        agent.add_state("second", move |ctx: Context| async move {
            if hang {
                std::future::pending::<()>().await;
            }
            ctx.set_state("second", true);
            StateResult::End
        });
        agent
    };
    let first = build(SqliteStore::open(&path).unwrap(), true);
    let running = tokio::spawn({
        let first = first.clone();
        async move { first.run().await }
    });
    let store = SqliteStore::open(&path).unwrap();
    let run_id = loop {
        tokio::task::yield_now().await;
        let runs = store.list_runs(&RunQuery::default()).await.unwrap();
        if let Some(r) = runs.first() {
            let s = agent_runtime::store::read_checkpoint(&store, &r.run_id).await.unwrap();
            if s.is_some_and(|c| c.completed_states == ["first"]) {
                break r.run_id.clone();
            }
        }
    };
    running.abort();
    let _ = running.await;
    let second = build(SqliteStore::open(&path).unwrap(), false);
    let result = second.recover(&run_id).await.unwrap();
    assert_eq!(result.context().get_state::<u32>("n"), Some(1), "`first` did not run again");
    assert_eq!(result.context().get_state::<bool>("second"), Some(true));
    assert!(second.recover("no-such-run").await.is_err());
}

/// A state that writes its progress, then works for ten minutes.
fn long_running(store: &MemoryStore, interval: Option<std::time::Duration>) -> Agent {
    let mut agent = Agent::new("long").with_store(store.clone());
    if let Some(every) = interval {
        agent = agent.checkpoint_interval(every);
    }
    agent.add_state("long", |ctx: Context| async move {
        ctx.set_state("progress", 1);
        tokio::time::sleep(std::time::Duration::from_secs(600)).await;
        ctx.set_state("progress", 2);
        StateResult::End
    });
    agent
}

/// The progress the store's newest snapshot holds after two minutes of the long state.
async fn progress_recorded_after_two_minutes(interval: Option<std::time::Duration>) -> Option<u32> {
    let store = MemoryStore::new();
    let agent = long_running(&store, interval);
    let running = tokio::spawn(async move { agent.run().await });
    tokio::time::sleep(std::time::Duration::from_secs(120)).await;
    let snapshot = latest(&store).await;
    assert_eq!(snapshot.running_states(), ["long"]);
    running.abort();
    snapshot.read_context().unwrap().get_state("progress")
}

#[tokio::test(start_paused = true)]
async fn checkpoint_interval_records_a_long_state_s_progress_while_it_runs() {
    assert_eq!(progress_recorded_after_two_minutes(None).await, None, "without an interval, only completions record");
    let every_minute = Some(std::time::Duration::from_secs(60));
    assert_eq!(progress_recorded_after_two_minutes(every_minute).await, Some(1));
}

/// A run waits for a person; its process stops; another process answers through the store;
/// a new process recovers the run, whose state asks again and finds the answer.
async fn answered_through_the_store<S: CheckpointStore + Clone>(store: S, agent: &str) {
    use agent_core::{HumanInput, HumanInputError};
    let build = |store: &S| {
        let mut agent = Agent::new(agent.to_owned()).with_store(store.clone()).input_from_terminal(false);
        agent.add_state("draft", |ctx: Context| async move {
            ctx.update_state_or_default("drafts", |n: &mut u32| *n += 1).unwrap();
            StateResult::next("review")
        });
        agent.add_state("review", |ctx: Context| async move {
            let answer = ctx.human_in_the_loop(HumanInput::new("Publish?")).await?;
            ctx.set_state("answer", answer);
            Ok::<_, HumanInputError>(StateResult::End)
        });
        agent
    };
    let first = build(&store);
    let running = tokio::spawn({
        let first = first.clone();
        async move { first.run().await }
    });
    // Until the request is in the store (it is written there as it is made).
    let (run_id, asked) = loop {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        let Some(run_id) = first.run_id() else { continue };
        let asked = store.inputs(Some(&run_id), true).await.unwrap();
        if !asked.is_empty() {
            break (run_id, asked);
        }
    };
    // The store shows the state running while it waits (a snapshot is asked for when the
    // state asks, though nothing completed).
    let mut waiting = None;
    for _ in 0..100 {
        let c = agent_runtime::store::read_checkpoint(&store, &run_id).await.unwrap().expect("snapshots of the run");
        if c.state("review").map(|s| s.status) == Some(agent_core::StateStatus::Running) {
            waiting = Some(c);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let waiting = waiting.expect("the store shows `review` running while it waits for a person");
    assert_eq!(waiting.completed_states, ["draft"]);
    // The process stops while the run waits for a person.
    running.abort();
    let _ = running.await;

    // Another process answers through the store.
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].prompt, "Publish?");
    assert!(store.answer_input(&run_id, &asked[0].request_id, "yes", false, 0).await.unwrap());

    // A new process recovers the run: the state asks again and finds the answer.
    let second = build(&store);
    let result = second.recover(&run_id).await.unwrap();
    assert_eq!(result.context().get_state::<String>("answer").as_deref(), Some("yes"));
    assert_eq!(result.context().get_state::<u32>("drafts"), Some(1), "draft did not run again");
    store.delete_run(&run_id).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_run_waiting_for_a_person_goes_on_with_an_answer_given_through_a_memory_store() {
    answered_through_the_store(MemoryStore::new(), "review").await;
}

#[tokio::test(start_paused = true)]
async fn a_run_waiting_for_a_person_goes_on_with_an_answer_given_through_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    answered_through_the_store(SqliteStore::open(dir.path().join("runs.db")).unwrap(), "review").await;
}

#[tokio::test(start_paused = true)]
async fn a_run_waiting_for_a_person_goes_on_with_an_answer_given_through_postgres() {
    let Some(url) = common::pg::url("a_run_waiting_for_a_person_goes_on_with_an_answer_given_through_postgres") else {
        return;
    };
    let (schema, _) = common::pg::own_schema(&url, "durable");
    let store = agent_runtime::store::PostgresStore::connect_with_schema(&url, &schema).await.unwrap();
    let outcome = tokio::spawn(answered_through_the_store(store, "review")).await;
    common::pg::drop_schema(&url, &schema).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// A `MemoryStore` that counts the snapshots written.
#[derive(Clone, Default)]
struct Counting {
    inner: MemoryStore,
    snapshots: Arc<std::sync::atomic::AtomicUsize>,
}

impl CheckpointStore for Counting {
    fn kind(&self) -> &'static str {
        "counting"
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
        self.snapshots.fetch_add(1, SeqCst);
        self.inner.save_snapshot(run_id, epoch, snapshot)
    }
    fn save_run_snapshot<'a>(&'a self, run: &'a RunRecord, snapshot: &'a Snapshot) -> StoreFuture<'a, ()> {
        self.snapshots.fetch_add(1, SeqCst);
        self.inner.save_run_snapshot(run, snapshot)
    }
    fn latest_snapshot<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<Snapshot>> {
        self.inner.latest_snapshot(run_id)
    }
    fn claim_run<'a>(&'a self, claim: &'a ClaimRequest) -> StoreFuture<'a, Claim> {
        self.inner.claim_run(claim)
    }
    fn submit_run<'a>(
        &'a self,
        s: &'a agent_runtime::store::Submission,
    ) -> StoreFuture<'a, agent_runtime::store::Submitted> {
        self.inner.submit_run(s)
    }
    fn claim_next<'a>(
        &'a self,
        ask: &'a agent_runtime::store::ClaimNext,
    ) -> StoreFuture<'a, Vec<agent_runtime::store::NextRun>> {
        self.inner.claim_next(ask)
    }
    fn run_input<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<String>> {
        self.inner.run_input(run_id)
    }
    fn request_state_cancel<'a>(&'a self, run_id: &'a str, state: &'a str) -> StoreFuture<'a, bool> {
        self.inner.request_state_cancel(run_id, state)
    }
    fn take_state_cancels<'a>(&'a self, run_id: &'a str, epoch: u64) -> StoreFuture<'a, Vec<String>> {
        self.inner.take_state_cancels(run_id, epoch)
    }
    fn record_lineage<'a>(&'a self, lineage: &'a Lineage) -> StoreFuture<'a, ()> {
        self.inner.record_lineage(lineage)
    }
    fn lineage<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<Lineage>> {
        self.inner.lineage(run_id)
    }
    fn descendants<'a>(&'a self, parent_run_id: &'a str) -> StoreFuture<'a, Vec<Lineage>> {
        self.inner.descendants(parent_run_id)
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

#[tokio::test(start_paused = true)]
async fn branches_finishing_together_share_one_commit() {
    const WIDTH: usize = 100;
    let store = Counting::default();
    let mut agent = Agent::new("wide").with_store(store.clone());
    agent.add_state("fan", |_ctx: Context| async { StateResult::parallel(vec!["work"; WIDTH]) });
    agent.add_state("work", |ctx: Context| async move {
        // Every branch finishes at the same virtual instant.
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        ctx.update_state_or_default("done", |n: &mut usize| *n += 1).unwrap();
        StateResult::next("join")
    });
    agent.add_state("join", |_ctx: Context| async { StateResult::End });
    let result = agent.run().await.unwrap();
    assert_eq!(result.context().get_state::<usize>("done"), Some(WIDTH));
    let written = store.snapshots.load(SeqCst);
    // First, `fan`, a few for the hundred branches, `join`, the final one.
    assert!(written < WIDTH / 4, "{written} snapshots for {WIDTH} branches finishing together");
}

/// Two states of a durable run that never end on their own are cancelled from another
/// process: through the store alone (a second `SqliteStore` on the file, no handle on the
/// run), asked one after the other before the owner's next poll. The owner takes both and
/// cancels them; the run goes on to its end, the two `Cancelled`, the rest completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn states_cancelled_through_the_store_from_another_process_end_cancelled_and_the_run_goes_on() {
    use agent_core::StateStatus;
    use agent_runtime::store::{cancel_state, ControlError};
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.db");
    let entered = Arc::new(AtomicUsize::new(0));
    let mut agent = Agent::new("blocking").with_store(SqliteStore::open(&path).unwrap());
    agent.add_state("start", |_ctx: Context| async { StateResult::parallel(["blocked", "stuck", "steady"]) });
    for name in ["blocked", "stuck"] {
        let entered = entered.clone();
        agent.add_state(name, move |_ctx: Context| {
            entered.fetch_add(1, SeqCst);
            async {
                // Waits on what nobody will ever notify.
                tokio::sync::Notify::new().notified().await;
                StateResult::End
            }
        });
    }
    agent.add_state("steady", |_ctx: Context| async { StateResult::next("after") });
    agent.add_state("after", |ctx: Context| async move {
        ctx.set_state("after", true);
        StateResult::End
    });
    let handle = agent.start(agent_runtime::RunOptions::new()).unwrap();
    let run_id = handle.id().to_owned();

    // Another process: only the store.
    let other = SqliteStore::open(&path).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while entered.load(SeqCst) < 2 {
        assert!(Instant::now() < deadline, "the blocking states never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(matches!(cancel_state(&other, &run_id, "nope").await, Err(ControlError::NoState { .. })));
    assert!(matches!(cancel_state(&other, "no-such-run", "stuck").await, Err(ControlError::NoRun(_))));
    cancel_state(&other, &run_id, "blocked").await.unwrap();
    cancel_state(&other, &run_id, "stuck").await.unwrap();

    let result = tokio::time::timeout(Duration::from_secs(20), handle).await.expect("the run ended").unwrap();
    assert_eq!(result.status(), AgentStatus::Completed);
    assert_eq!(result.context().get_state::<bool>("after"), Some(true));
    let recorded = agent_runtime::store::read_checkpoint(&other, &run_id).await.unwrap().unwrap();
    let status = |name: &str| recorded.state(name).map(|s| s.status);
    assert_eq!((status("blocked"), status("stuck")), (Some(StateStatus::Cancelled), Some(StateStatus::Cancelled)));
    for done in ["start", "steady", "after"] {
        assert_eq!(status(done), Some(StateStatus::Completed), "{done}");
    }
    assert_eq!(other.get_run(&run_id).await.unwrap().unwrap().status, AgentStatus::Completed);
    assert!(
        matches!(cancel_state(&other, &run_id, "stuck").await, Err(ControlError::NotRunning { .. })),
        "over already"
    );
}

/// A cancel asked of a state while nobody runs the run (its process stopped) is not lost:
/// the claim of the run's next owner leaves it in the store, and the owner takes it at its
/// first poll; the state, run again after the recovery, is cancelled and the run ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_cancel_asked_while_nobody_runs_the_run_is_done_by_its_next_owner() {
    use agent_core::StateStatus;
    use agent_runtime::store::cancel_state;
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.db");
    let entered = Arc::new(AtomicUsize::new(0));
    let build = || {
        let mut agent = Agent::new("blocking").with_store(SqliteStore::open(&path).unwrap());
        agent.add_state("start", |_ctx: Context| async { StateResult::next("blocked") });
        let entered = entered.clone();
        agent.add_state("blocked", move |_ctx: Context| {
            entered.fetch_add(1, SeqCst);
            std::future::pending::<StateResult>()
        });
        agent
    };
    let until_entered = |n: usize| {
        let entered = entered.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            while entered.load(SeqCst) < n {
                assert!(Instant::now() < deadline, "`blocked` never started");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    // The first process runs it until `blocked` runs, then stops (its future dropped).
    let first = build();
    let running = tokio::spawn({
        let first = first.clone();
        async move { first.run().await }
    });
    until_entered(1).await;
    let run_id = first.run_id().expect("a run is going");
    running.abort();
    let _ = running.await;

    let other = SqliteStore::open(&path).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while other.get_run(&run_id).await.unwrap().unwrap().owner.is_some() {
        assert!(Instant::now() < deadline, "the stopped run's lease was never given back");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cancel_state(&other, &run_id, "blocked").await.unwrap();

    let second = build();
    let recovering = tokio::spawn({
        let second = second.clone();
        let run_id = run_id.clone();
        async move { second.recover(&run_id).await }
    });
    until_entered(2).await;
    let result =
        tokio::time::timeout(Duration::from_secs(20), recovering).await.expect("the run ended").unwrap().unwrap();
    assert_eq!(result.status(), AgentStatus::Completed);
    let recorded = agent_runtime::store::read_checkpoint(&other, &run_id).await.unwrap().unwrap();
    assert_eq!(recorded.state("blocked").map(|s| s.status), Some(StateStatus::Cancelled));
    assert_eq!(recorded.state("start").map(|s| (s.status, s.completed)), Some((StateStatus::Completed, 1)));
}
