//! Conformance of the checkpoint stores: one suite of behaviours, run against `MemoryStore`,
//! `SqliteStore` (a temporary file) and `PostgresStore`.
//!
//! Every test gets a store of its own (a new `MemoryStore`, a new SQLite file, a new
//! PostgreSQL schema that is dropped afterwards), so tests never see each other's records
//! and retention's counts are exact. The PostgreSQL tests run only when
//! `AGENT_TEST_POSTGRES_URL` is set (e.g. `postgres://postgres@127.0.0.1:5432/test`); without
//! it they say so on stderr and pass without testing anything, except under CI, where they
//! fail (the rule lives in `common/pg.rs`). Only the sections about leases running out wait,
//! a few hundred milliseconds of real time each (bounded): the stores compare lease ends
//! with their own clock, never tokio's.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_core::InputRequestRecord;
use agent_runtime::store::{
    CheckpointStore, Claim, ClaimNext, ClaimRequest, InputRecord, JournalEntry, NextRun, Retention, RetentionReport,
    RunQuery, RunRecord, Served, Snapshot, StoreError, Submission,
};
use agent_runtime::AgentStatus;

mod common;

const ALL_STATUSES: [AgentStatus; 7] = [
    AgentStatus::Idle,
    AgentStatus::Running,
    AgentStatus::Paused,
    AgentStatus::Completed,
    AgentStatus::Failed,
    AgentStatus::Cancelled,
    AgentStatus::TimedOut,
];

fn run(id: &str, agent: &str, status: AgentStatus, created_ms: i64, updated_ms: i64) -> RunRecord {
    RunRecord::new(id, agent, status, created_ms, updated_ms)
}

fn entry(seq: u64) -> JournalEntry {
    JournalEntry {
        seq,
        state: format!("state-{seq}"),
        payload: format!(r#"{{"seq":{seq},"text":"naïve \"quoted\""}}"#),
        at_ms: 1_000 + seq as i64,
    }
}

fn entries(seqs: impl IntoIterator<Item = u64>) -> Vec<JournalEntry> {
    seqs.into_iter().map(entry).collect()
}

fn snapshot(seq: u64, taken_ms: i64) -> Snapshot {
    Snapshot { seq, taken_ms, data: format!(r#"{{"covers":{seq},"taken":{taken_ms}}}"#) }
}

fn input(run_id: &str, request_id: &str, requested_ms: i64) -> InputRecord {
    let mut request = InputRequestRecord::new(request_id.to_owned(), format!("approve {request_id}?"), requested_ms);
    request.state = Some("review".to_owned());
    request.timeout_ms = Some(60_000);
    request.default = Some("no".to_owned());
    InputRecord { run_id: run_id.to_owned(), request }
}

/// `r`, changed by `f`.
fn with(mut r: InputRecord, f: impl FnOnce(&mut InputRecord)) -> InputRecord {
    f(&mut r);
    r
}

/// `r`, answered with `answer` at `at_ms`.
fn answered(r: InputRecord, answer: &str, at_ms: i64, defaulted: bool) -> InputRecord {
    with(r, |r| {
        r.answer = Some(answer.to_owned());
        r.answered_ms = Some(at_ms);
        r.defaulted = defaulted;
    })
}

fn ids(runs: &[RunRecord]) -> Vec<&str> {
    runs.iter().map(|r| r.run_id.as_str()).collect()
}

fn seqs(entries: &[JournalEntry]) -> Vec<u64> {
    entries.iter().map(|e| e.seq).collect()
}

fn keys(inputs: &[InputRecord]) -> Vec<(&str, &str)> {
    inputs.iter().map(|i| (i.run_id.as_str(), i.request_id.as_str())).collect()
}

#[track_caller]
fn assert_conflict(result: Result<(), StoreError>, run_id: &str, seq: u64, last: u64) {
    match result {
        Err(StoreError::Conflict { run_id: r, seq: s, last: l, .. }) => {
            assert_eq!((r.as_str(), s, l), (run_id, seq, last), "wrong conflict")
        }
        other => panic!("expected a conflict on seq {seq} of {run_id}, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// The conformance suite. Each function takes a fresh, empty store.
// ---------------------------------------------------------------------------------------

/// Upsert, get and list, with every filter, the ordering and the limit.
async fn runs(store: &dyn CheckpointStore, tag: &str) {
    let id = |s: &str| format!("{tag}-{s}");
    let (alpha, beta) = (format!("{tag}-alpha"), format!("{tag}-beta"));
    assert_eq!(store.get_run(&id("r1")).await.unwrap(), None);
    assert!(store.list_runs(&RunQuery::default()).await.unwrap().is_empty());

    let r1 = run(&id("r1"), &alpha, AgentStatus::Running, 100, 100);
    store.upsert_run(&r1).await.unwrap();
    assert_eq!(store.get_run(&r1.run_id).await.unwrap(), Some(r1.clone()));

    // An upsert replaces the row rather than adding one.
    let r1 = run(&id("r1"), &alpha, AgentStatus::Completed, 100, 250);
    store.upsert_run(&r1).await.unwrap();
    assert_eq!(store.get_run(&r1.run_id).await.unwrap(), Some(r1.clone()));
    assert_eq!(store.list_runs(&RunQuery::default()).await.unwrap(), vec![r1.clone()]);

    let others = [
        run(&id("r2"), &alpha, AgentStatus::Running, 300, 300),
        run(&id("r3"), &beta, AgentStatus::Running, 400, 400),
        run(&id("r4"), &beta, AgentStatus::Failed, 200, 200),
        // Two runs created at the same time: ties are broken by run id.
        run(&id("r6"), &alpha, AgentStatus::Completed, 500, 500),
        run(&id("r5"), &alpha, AgentStatus::Completed, 500, 500),
    ];
    for r in &others {
        store.upsert_run(r).await.unwrap();
    }
    let all = store.list_runs(&RunQuery::default()).await.unwrap();
    assert_eq!(ids(&all), [id("r5"), id("r6"), id("r3"), id("r2"), id("r4"), id("r1")]);
    assert_eq!(all[2], others[1], "rows come back whole");

    let q = |agent: Option<&str>, status: Option<AgentStatus>, limit: Option<usize>| RunQuery {
        agent: agent.map(str::to_owned),
        status,
        limit,
        ..RunQuery::default()
    };
    let list = |query: RunQuery| async move { store.list_runs(&query).await.unwrap() };
    assert_eq!(ids(&list(q(Some(&alpha), None, None)).await), [id("r5"), id("r6"), id("r2"), id("r1")]);
    assert_eq!(ids(&list(q(Some(&beta), None, None)).await), [id("r3"), id("r4")]);
    assert_eq!(ids(&list(q(None, Some(AgentStatus::Running), None)).await), [id("r3"), id("r2")]);
    assert_eq!(ids(&list(q(Some(&alpha), Some(AgentStatus::Completed), None)).await), [id("r5"), id("r6"), id("r1")]);
    assert_eq!(ids(&list(q(Some(&beta), Some(AgentStatus::Completed), None)).await), Vec::<String>::new());
    assert_eq!(ids(&list(q(None, Some(AgentStatus::Paused), None)).await), Vec::<String>::new());
    assert_eq!(ids(&list(q(Some("nobody"), None, None)).await), Vec::<String>::new());
    assert_eq!(ids(&list(q(None, None, Some(2))).await), [id("r5"), id("r6")]);
    assert_eq!(ids(&list(q(None, None, Some(0))).await), Vec::<String>::new());
    assert_eq!(ids(&list(q(None, None, Some(100))).await).len(), 6);
    assert_eq!(ids(&list(q(Some(&alpha), Some(AgentStatus::Completed), Some(1))).await), [id("r5")]);

    // Pages: the same order, `offset` runs skipped; counts ignore the page.
    let page = |limit: Option<usize>, offset: usize| RunQuery { limit, offset, ..RunQuery::default() };
    assert_eq!(ids(&list(page(Some(2), 2)).await), [id("r3"), id("r2")]);
    assert_eq!(ids(&list(page(None, 5)).await), [id("r1")]);
    assert_eq!(ids(&list(page(Some(3), 6)).await), Vec::<String>::new());
    assert_eq!(store.count_runs(&page(Some(1), 4)).await.unwrap(), 6);
    assert_eq!(store.count_runs(&q(Some(&alpha), None, None)).await.unwrap(), 4);
    assert_eq!(store.count_runs(&q(None, Some(AgentStatus::Running), None)).await.unwrap(), 2);
    assert_eq!(store.count_runs(&q(Some("nobody"), None, None)).await.unwrap(), 0);

    // Time ranges (created from, created before, updated since) and the id search.
    let within = |since: Option<i64>, before: Option<i64>, updated: Option<i64>| RunQuery {
        created_since_ms: since,
        created_before_ms: before,
        updated_since_ms: updated,
        ..RunQuery::default()
    };
    assert_eq!(ids(&list(within(Some(300), None, None)).await), [id("r5"), id("r6"), id("r3"), id("r2")]);
    assert_eq!(ids(&list(within(None, Some(300), None)).await), [id("r4"), id("r1")]);
    assert_eq!(ids(&list(within(Some(200), Some(400), None)).await), [id("r2"), id("r4")]);
    assert_eq!(ids(&list(within(None, None, Some(400))).await), [id("r5"), id("r6"), id("r3")]);
    assert_eq!(store.count_runs(&within(Some(300), None, None)).await.unwrap(), 4);
    let search = |text: &str| RunQuery { id_contains: Some(text.to_owned()), ..RunQuery::default() };
    assert_eq!(ids(&list(search("-r6")).await), [id("r6")]);
    assert_eq!(ids(&list(search(&format!("{tag}-r"))).await).len(), 6);
    assert_eq!(ids(&list(search("%")).await), Vec::<String>::new(), "no LIKE wildcards");
    assert_eq!(ids(&list(search("-R6")).await), Vec::<String>::new(), "case matters");
    let mixed =
        RunQuery { agent: Some(alpha.clone()), created_since_ms: Some(300), limit: Some(1), offset: 1, ..search("-r") };
    assert_eq!(ids(&list(mixed.clone()).await), [id("r6")]);
    assert_eq!(store.count_runs(&mixed).await.unwrap(), 3);

    // Every status is written and read back as itself.
    for (i, status) in ALL_STATUSES.into_iter().enumerate() {
        let r = run(&id(&format!("status-{i}")), &format!("{tag}-statuses"), status, 1, 2);
        store.upsert_run(&r).await.unwrap();
        assert_eq!(store.get_run(&r.run_id).await.unwrap(), Some(r.clone()));
        let listed = list(q(Some(&r.agent), Some(status), None)).await;
        assert_eq!(listed, vec![r]);
    }
}

/// Append: the run's row and the batch together; `seq` strictly increasing; a refused batch
/// writes nothing; the journal read after a `seq`.
async fn append(store: &dyn CheckpointStore, tag: &str) {
    let id = format!("{tag}-run");
    let agent = format!("{tag}-agent");
    assert!(store.journal(&id, 0).await.unwrap().is_empty());

    let r = run(&id, &agent, AgentStatus::Running, 10, 10);
    store.append(&r, &entries(1..=3)).await.unwrap();
    assert_eq!(store.get_run(&id).await.unwrap(), Some(r.clone()), "append creates the run's row");
    assert_eq!(store.journal(&id, 0).await.unwrap(), entries(1..=3), "entries come back whole");
    assert_eq!(seqs(&store.journal(&id, 1).await.unwrap()), [2, 3]);
    assert!(store.journal(&id, 3).await.unwrap().is_empty());
    assert!(store.journal(&id, u64::MAX).await.unwrap().is_empty());

    let r = run(&id, &agent, AgentStatus::Paused, 10, 20);
    store.append(&r, &entries([4, 7])).await.unwrap();
    assert_eq!(store.get_run(&id).await.unwrap(), Some(r.clone()), "append updates the run's row");
    assert_eq!(seqs(&store.journal(&id, 0).await.unwrap()), [1, 2, 3, 4, 7], "gaps are allowed");
    assert_eq!(seqs(&store.journal(&id, 5).await.unwrap()), [7]);

    // Refused batches: nothing of them is written, not even the run's row.
    let changed = run(&id, &agent, AgentStatus::Failed, 10, 99);
    assert_conflict(store.append(&changed, &entries([8, 9, 9])).await, &id, 9, 9);
    assert_conflict(store.append(&changed, &entries([7])).await, &id, 7, 7);
    assert_conflict(store.append(&changed, &entries([5])).await, &id, 5, 7);
    assert_conflict(store.append(&changed, &entries([10, 8])).await, &id, 8, 10);
    assert_eq!(seqs(&store.journal(&id, 0).await.unwrap()), [1, 2, 3, 4, 7]);
    assert_eq!(store.get_run(&id).await.unwrap(), Some(r.clone()));

    // An empty batch is just an upsert of the row.
    let r = run(&id, &agent, AgentStatus::Running, 10, 30);
    store.append(&r, &[]).await.unwrap();
    assert_eq!(store.get_run(&id).await.unwrap(), Some(r.clone()));
    store.append(&r, &entries([8])).await.unwrap();
    assert_eq!(seqs(&store.journal(&id, 6).await.unwrap()), [7, 8]);

    // Journals are per run: another run starts from 1, and seq 0 is never valid.
    let other = run(&format!("{tag}-other"), &agent, AgentStatus::Running, 11, 11);
    assert_conflict(store.append(&other, &entries([0])).await, &other.run_id, 0, 0);
    assert_eq!(store.get_run(&other.run_id).await.unwrap(), None, "a refused first batch creates no row");
    store.append(&other, &entries([1])).await.unwrap();
    assert_eq!(seqs(&store.journal(&other.run_id, 0).await.unwrap()), [1]);
    assert_eq!(seqs(&store.journal(&id, 0).await.unwrap()), [1, 2, 3, 4, 7, 8]);

    // A large batch, in order.
    store.append(&r, &entries(9..=208)).await.unwrap();
    assert_eq!(seqs(&store.journal(&id, 8).await.unwrap()), (9..=208).collect::<Vec<_>>());
}

/// Append by an owner (epoch above 0, a durable run's deltas): the same rules as `append`,
/// and fenced by the epoch; a refused batch writes nothing.
async fn owned_append(store: &dyn CheckpointStore, tag: &str) {
    let id = format!("{tag}-owned");
    let fresh = run(&id, &format!("{tag}-agent"), AgentStatus::Running, 10, 10);
    let mine = taken(store.claim_run(&claim(&id, "me").create(fresh)).await.unwrap());
    assert_eq!(mine.epoch, 1);
    let r = mine.clone().with_status(AgentStatus::Running, 20);
    store.append(&r, &entries(1..=3)).await.unwrap();
    store.append(&r, &entries([5])).await.unwrap();
    assert_eq!(seqs(&store.journal(&id, 0).await.unwrap()), [1, 2, 3, 5]);
    assert_eq!(store.get_run(&id).await.unwrap().unwrap().updated_ms, 20, "the row goes with the batch");
    let changed = r.clone().with_status(AgentStatus::Failed, 99);
    assert_conflict(store.append(&changed, &entries([6, 6])).await, &id, 6, 6);
    assert_conflict(store.append(&changed, &entries([5])).await, &id, 5, 5);
    assert_conflict(store.append(&changed, &entries([4, 9])).await, &id, 4, 5);
    assert_eq!(seqs(&store.journal(&id, 0).await.unwrap()), [1, 2, 3, 5]);
    assert_eq!(store.get_run(&id).await.unwrap().unwrap().status, AgentStatus::Running, "nothing refused is written");
    // Taken over: the old owner's batch is fenced and writes nothing.
    store.release_run(&id, 1).await.unwrap();
    let theirs = taken(store.claim_run(&claim(&id, "them")).await.unwrap());
    assert_eq!(theirs.epoch, 2);
    assert_fenced(store.append(&changed, &entries([6])).await, &id, 1, 2);
    assert_eq!(seqs(&store.journal(&id, 0).await.unwrap()), [1, 2, 3, 5]);
    store.append(&theirs, &entries([6, 7])).await.unwrap();
    assert_eq!(seqs(&store.journal(&id, 4).await.unwrap()), [5, 6, 7]);
}

/// Snapshots: only for runs that exist; the latest is the highest `seq`; a run's snapshots
/// have distinct `seq`s (a second with a `seq` taken is refused, and changes nothing).
async fn snapshots(store: &dyn CheckpointStore, tag: &str) {
    let a = run(&format!("{tag}-a"), &format!("{tag}-agent"), AgentStatus::Running, 1, 1);
    let b = run(&format!("{tag}-b"), &format!("{tag}-agent"), AgentStatus::Running, 2, 2);
    assert_eq!(store.latest_snapshot(&a.run_id).await.unwrap(), None);
    assert!(store.save_snapshot(&a.run_id, 0, &snapshot(1, 1)).await.is_err(), "no snapshot of an unknown run");
    assert_eq!(store.latest_snapshot(&a.run_id).await.unwrap(), None);

    store.upsert_run(&a).await.unwrap();
    store.upsert_run(&b).await.unwrap();
    store.save_snapshot(&a.run_id, 0, &snapshot(2, 10)).await.unwrap();
    assert_eq!(store.latest_snapshot(&a.run_id).await.unwrap(), Some(snapshot(2, 10)));
    store.save_snapshot(&a.run_id, 0, &snapshot(5, 5)).await.unwrap();
    store.save_snapshot(&a.run_id, 0, &snapshot(3, 30)).await.unwrap();
    assert_eq!(
        store.latest_snapshot(&a.run_id).await.unwrap(),
        Some(snapshot(5, 5)),
        "the highest seq, not the newest"
    );
    // `(run_id, seq)` is unique: a second snapshot of seq 5 or 2 is refused.
    assert_conflict(store.save_snapshot(&a.run_id, 0, &snapshot(5, 20)).await, &a.run_id, 5, 5);
    assert_conflict(store.save_snapshot(&a.run_id, 0, &snapshot(2, 40)).await, &a.run_id, 2, 5);
    assert_eq!(store.latest_snapshot(&a.run_id).await.unwrap(), Some(snapshot(5, 5)));
    assert_eq!(store.snapshots(&a.run_id, 8).await.unwrap(), [snapshot(5, 5), snapshot(3, 30), snapshot(2, 10)]);
    assert_eq!(store.latest_snapshot(&b.run_id).await.unwrap(), None, "snapshots are per run");
    store.save_snapshot(&b.run_id, 0, &snapshot(5, 40)).await.unwrap();
    assert_eq!(store.latest_snapshot(&b.run_id).await.unwrap(), Some(snapshot(5, 40)), "seqs are per run");
    assert_eq!(store.latest_snapshot(&a.run_id).await.unwrap(), Some(snapshot(5, 5)));

    // The row and a snapshot together: a new run is created with its first snapshot, and
    // a later call updates the row as it adds one.
    let c = run(&format!("{tag}-c"), &format!("{tag}-agent"), AgentStatus::Running, 3, 3);
    store.save_run_snapshot(&c, &snapshot(1, 50)).await.unwrap();
    assert_eq!(store.get_run(&c.run_id).await.unwrap(), Some(c.clone()));
    assert_eq!(store.latest_snapshot(&c.run_id).await.unwrap(), Some(snapshot(1, 50)));
    let done = c.clone().with_status(AgentStatus::Completed, 60);
    // A taken seq refuses the row too.
    assert_conflict(store.save_run_snapshot(&done, &snapshot(1, 60)).await, &c.run_id, 1, 1);
    assert_eq!(store.get_run(&c.run_id).await.unwrap(), Some(c.clone()), "nothing written");
    store.save_run_snapshot(&done, &snapshot(2, 60)).await.unwrap();
    assert_eq!(store.get_run(&c.run_id).await.unwrap(), Some(done.clone()));
    assert_eq!(store.latest_snapshot(&c.run_id).await.unwrap(), Some(snapshot(2, 60)));
}

/// Human-input requests: put, list (oldest first, per run, pending only), answer (first
/// answer wins), and a put that keeps an answer already given.
async fn inputs(store: &dyn CheckpointStore, tag: &str) {
    let (a, b) = (format!("{tag}-a"), format!("{tag}-b"));
    assert!(store.inputs(None, false).await.unwrap().is_empty());

    let a1 = input(&a, "r1", 10);
    let a2 = with(input(&a, "r2", 5), |r| {
        r.state = None;
        r.timeout_ms = None;
        r.default = None;
    });
    let b1 = input(&b, "r1", 7);
    let b2 = input(&b, "r2", 7); // same time as b1: ties go by run id, then request id
    for i in [&a1, &a2, &b2, &b1] {
        store.put_input(i).await.unwrap();
    }
    assert_eq!(store.inputs(Some(&a), false).await.unwrap(), vec![a2.clone(), a1.clone()], "records come back whole");
    assert_eq!(keys(&store.inputs(None, false).await.unwrap()), [(&*a, "r2"), (&*b, "r1"), (&*b, "r2"), (&*a, "r1")]);
    assert_eq!(store.inputs(None, true).await.unwrap().len(), 4);
    assert!(store.inputs(Some("no-such-run"), false).await.unwrap().is_empty());

    // The first answer wins.
    assert!(store.answer_input(&a, "r1", "yes", false, 50).await.unwrap());
    assert!(!store.answer_input(&a, "r1", "no", true, 60).await.unwrap());
    assert!(!store.answer_input(&a, "nope", "yes", false, 60).await.unwrap(), "unknown request");
    assert!(!store.answer_input("no-such-run", "r1", "yes", false, 60).await.unwrap(), "unknown run");
    let yes = answered(a1.clone(), "yes", 50, false);
    assert_eq!(store.inputs(Some(&a), false).await.unwrap(), vec![a2.clone(), yes]);
    assert_eq!(keys(&store.inputs(Some(&a), true).await.unwrap()), [(&*a, "r2")]);
    assert_eq!(keys(&store.inputs(None, true).await.unwrap()), [(&*a, "r2"), (&*b, "r1"), (&*b, "r2")]);

    // A default taken at the timeout is marked so.
    assert!(store.answer_input(&b, "r2", "no", true, 70).await.unwrap());
    let defaulted = store.inputs(Some(&b), false).await.unwrap();
    assert_eq!(defaulted[1], answered(b2, "no", 70, true));

    // Putting a request again updates it, but keeps the answer already recorded.
    let reasked = with(a1.clone(), |r| {
        r.prompt = "really approve?".into();
        r.requested_ms = 11;
    });
    store.put_input(&reasked).await.unwrap();
    let overwrite = answered(reasked.clone(), "other", 99, true);
    store.put_input(&overwrite).await.unwrap();
    let kept = answered(reasked, "yes", 50, false);
    assert_eq!(store.inputs(Some(&a), false).await.unwrap(), vec![a2.clone(), kept]);

    // A request put with its answer (answered elsewhere) is recorded as answered.
    let a3 = with(input(&a, "r3", 1), |r| {
        r.answer = Some("done".into());
        r.answered_ms = Some(3);
    });
    store.put_input(&a3).await.unwrap();
    assert!(!store.answer_input(&a, "r3", "late", false, 80).await.unwrap());
    assert_eq!(store.inputs(Some(&a), false).await.unwrap()[0], a3);
    // And an unanswered one put again before any answer can still be answered.
    store.put_input(&with(a2.clone(), |r| r.prompt = "again".into())).await.unwrap();
    assert!(store.answer_input(&a, "r2", "ok", false, 90).await.unwrap());
    assert_eq!(store.inputs(Some(&a), true).await.unwrap(), Vec::new());
}

/// Deleting a run deletes everything recorded for it, and nothing else.
async fn delete(store: &dyn CheckpointStore, tag: &str) {
    let agent = format!("{tag}-agent");
    let (a, b) = (
        run(&format!("{tag}-a"), &agent, AgentStatus::Completed, 1, 1),
        run(&format!("{tag}-b"), &agent, AgentStatus::Running, 2, 2),
    );
    for r in [&a, &b] {
        store.append(r, &entries(1..=3)).await.unwrap();
        store.save_snapshot(&r.run_id, 0, &snapshot(2, 5)).await.unwrap();
        store.put_input(&input(&r.run_id, "q", 3)).await.unwrap();
    }
    assert!(store.delete_run(&a.run_id).await.unwrap());
    assert_eq!(store.get_run(&a.run_id).await.unwrap(), None);
    assert!(store.journal(&a.run_id, 0).await.unwrap().is_empty());
    assert_eq!(store.latest_snapshot(&a.run_id).await.unwrap(), None);
    assert!(store.inputs(Some(&a.run_id), false).await.unwrap().is_empty());
    assert!(!store.answer_input(&a.run_id, "q", "x", false, 9).await.unwrap());
    assert!(!store.delete_run(&a.run_id).await.unwrap(), "deleted already");
    assert!(!store.delete_run("no-such-run").await.unwrap());

    assert_eq!(store.get_run(&b.run_id).await.unwrap(), Some(b.clone()));
    assert_eq!(seqs(&store.journal(&b.run_id, 0).await.unwrap()), [1, 2, 3]);
    assert_eq!(store.latest_snapshot(&b.run_id).await.unwrap(), Some(snapshot(2, 5)));
    assert_eq!(store.inputs(None, false).await.unwrap(), vec![input(&b.run_id, "q", 3)]);
    assert_eq!(ids(&store.list_runs(&RunQuery::default()).await.unwrap()), [b.run_id.as_str()]);

    // A deleted run's id starts afresh.
    store.append(&a, &entries([1])).await.unwrap();
    assert_eq!(seqs(&store.journal(&a.run_id, 0).await.unwrap()), [1]);
}

/// Retention of snapshots: the newest `n` (at least 1) are kept, and the journal entries the
/// oldest kept one covers are dropped; a run's last `seq` is not forgotten.
async fn retention_snapshots(store: &dyn CheckpointStore, tag: &str) {
    let agent = format!("{tag}-agent");
    let a = run(&format!("{tag}-a"), &agent, AgentStatus::Running, 1, 1);
    let b = run(&format!("{tag}-b"), &agent, AgentStatus::Running, 2, 2);
    let c = run(&format!("{tag}-c"), &agent, AgentStatus::Paused, 3, 3);
    store.append(&a, &entries(1..=10)).await.unwrap();
    for (seq, t) in [(3, 100), (9, 300), (6, 200)] {
        store.save_snapshot(&a.run_id, 0, &snapshot(seq, t)).await.unwrap();
    }
    store.append(&b, &entries(1..=4)).await.unwrap(); // no snapshot: its journal is all it has
    store.append(&c, &entries(1..=3)).await.unwrap();
    store.save_snapshot(&c.run_id, 0, &snapshot(2, 50)).await.unwrap();

    let keep = |n| Retention { keep_snapshots: Some(n), drop_finished_after: None };
    let report = store.apply_retention(&keep(2), 1_000).await.unwrap();
    // a: snapshot 3 goes, entries 1..=6 go (covered by snapshot 6); c: entries 1..=2 go.
    assert_eq!(report, RetentionReport { snapshots: 1, entries: 8, runs: 0 });
    assert_eq!(seqs(&store.journal(&a.run_id, 0).await.unwrap()), [7, 8, 9, 10]);
    assert_eq!(seqs(&store.journal(&b.run_id, 0).await.unwrap()), [1, 2, 3, 4]);
    assert_eq!(seqs(&store.journal(&c.run_id, 0).await.unwrap()), [3]);
    assert_eq!(store.latest_snapshot(&a.run_id).await.unwrap(), Some(snapshot(9, 300)));
    assert_eq!(store.latest_snapshot(&c.run_id).await.unwrap(), Some(snapshot(2, 50)));

    // Keeping 0 keeps 1: the newest snapshot is never deleted.
    let report = store.apply_retention(&keep(0), 2_000).await.unwrap();
    assert_eq!(report, RetentionReport { snapshots: 1, entries: 3, runs: 0 });
    assert_eq!(seqs(&store.journal(&a.run_id, 0).await.unwrap()), [10]);
    assert_eq!(store.latest_snapshot(&a.run_id).await.unwrap(), Some(snapshot(9, 300)));
    assert_eq!(store.latest_snapshot(&c.run_id).await.unwrap(), Some(snapshot(2, 50)));
    assert_eq!(store.apply_retention(&keep(1), 3_000).await.unwrap(), RetentionReport::default(), "idempotent");
    assert_eq!(store.apply_retention(&Retention::default(), 3_000).await.unwrap(), RetentionReport::default());

    // Dropped entries do not re-open their `seq`s.
    assert_conflict(store.append(&a, &entries([5])).await, &a.run_id, 5, 10);
    assert_conflict(store.append(&c, &entries([1])).await, &c.run_id, 1, 3);
    store.append(&a, &entries([11])).await.unwrap();
    assert_eq!(seqs(&store.journal(&a.run_id, 0).await.unwrap()), [10, 11]);

    // Unfinished runs are never dropped, however old.
    let all = Retention { keep_snapshots: Some(1), drop_finished_after: Some(Duration::ZERO) };
    assert_eq!(store.apply_retention(&all, i64::MAX).await.unwrap(), RetentionReport::default());
    assert_eq!(store.list_runs(&RunQuery::default()).await.unwrap().len(), 3);
}

/// Retention of runs: finished runs last updated longer ago than the age go, with all their
/// records; unfinished ones stay, whatever their age.
async fn retention_runs(store: &dyn CheckpointStore, tag: &str) {
    let agent = format!("{tag}-agent");
    let mut all = Vec::new();
    for (i, status) in ALL_STATUSES.into_iter().enumerate() {
        all.push(run(&format!("{tag}-old-{i}"), &agent, status, 500, 1_000));
    }
    let recent = run(&format!("{tag}-recent"), &agent, AgentStatus::Completed, 500, 9_000);
    let edge = run(&format!("{tag}-edge"), &agent, AgentStatus::Failed, 500, 5_000); // exactly the age
    all.extend([recent.clone(), edge.clone()]);
    for r in &all {
        store.append(r, &entries(1..=2)).await.unwrap();
        store.save_snapshot(&r.run_id, 0, &snapshot(1, 10)).await.unwrap();
        store.save_snapshot(&r.run_id, 0, &snapshot(2, 20)).await.unwrap();
        store.put_input(&input(&r.run_id, "q", 1)).await.unwrap();
    }
    let policy = Retention { keep_snapshots: None, drop_finished_after: Some(Duration::from_secs(5)) };
    let report = store.apply_retention(&policy, 10_000).await.unwrap();
    let dropped: Vec<&RunRecord> = all.iter().filter(|r| r.status.is_finished() && r.updated_ms < 5_000).collect();
    assert_eq!(dropped.len(), 4, "the old completed, failed, cancelled and timed-out runs");
    assert_eq!(report, RetentionReport { snapshots: 8, entries: 8, runs: 4 });
    for r in &all {
        let gone = dropped.iter().any(|d| d.run_id == r.run_id);
        let what = format!("{} ({})", r.run_id, r.status);
        assert_eq!(store.get_run(&r.run_id).await.unwrap().is_none(), gone, "{what}");
        assert_eq!(store.journal(&r.run_id, 0).await.unwrap().is_empty(), gone, "{what}");
        assert_eq!(store.latest_snapshot(&r.run_id).await.unwrap().is_none(), gone, "{what}");
        assert_eq!(store.inputs(Some(&r.run_id), false).await.unwrap().is_empty(), gone, "{what}");
    }
    assert_eq!(store.list_runs(&RunQuery::default()).await.unwrap().len(), all.len() - 4);
    assert_eq!(store.apply_retention(&policy, 10_000).await.unwrap(), RetentionReport::default());

    // Both rules at once: the recent run ages out, the unfinished ones keep everything but
    // their older snapshot and the entry it covers.
    let both = Retention { keep_snapshots: Some(1), drop_finished_after: Some(Duration::from_secs(1)) };
    let report = store.apply_retention(&both, 100_000).await.unwrap();
    let unfinished = ALL_STATUSES.iter().filter(|s| !s.is_finished()).count() as u64;
    assert_eq!(report, RetentionReport { snapshots: 2 * 2 + unfinished, entries: 2 * 2 + unfinished * 2, runs: 2 });
    let left = store.list_runs(&RunQuery::default()).await.unwrap();
    assert!(left.iter().all(|r| !r.status.is_finished()), "{left:?}");
    assert_eq!(left.len() as u64, unfinished);
}

/// Two handles on the same data (clones, two opens of one file, two connections): each sees
/// the other's writes, concurrent appends of the same `seq` conflict, and of concurrent
/// answers exactly one wins.
async fn shared(one: &dyn CheckpointStore, two: &dyn CheckpointStore, tag: &str) {
    let r = run(&format!("{tag}-shared"), &format!("{tag}-agent"), AgentStatus::Running, 1, 1);
    one.append(&r, &entries(1..=2)).await.unwrap();
    assert_eq!(two.get_run(&r.run_id).await.unwrap(), Some(r.clone()));
    assert_eq!(seqs(&two.journal(&r.run_id, 0).await.unwrap()), [1, 2]);
    assert_conflict(two.append(&r, &entries([2])).await, &r.run_id, 2, 2);
    two.append(&r, &entries([3])).await.unwrap();
    assert_eq!(seqs(&one.journal(&r.run_id, 0).await.unwrap()), [1, 2, 3]);

    for seq in 4..=13 {
        let batch = entries([seq]);
        let (x, y) = tokio::join!(one.append(&r, &batch), two.append(&r, &batch));
        let ok = [&x, &y].iter().filter(|res| res.is_ok()).count();
        assert_eq!(ok, 1, "exactly one append of seq {seq} succeeds: {x:?} / {y:?}");
        let refused = if x.is_err() { x } else { y };
        assert_conflict(refused, &r.run_id, seq, seq);
    }
    assert_eq!(seqs(&one.journal(&r.run_id, 0).await.unwrap()), (1..=13).collect::<Vec<_>>());

    for n in 0..10 {
        let request = format!("q{n}");
        one.put_input(&input(&r.run_id, &request, n)).await.unwrap();
        let (x, y) = tokio::join!(
            one.answer_input(&r.run_id, &request, "from one", false, 100),
            two.answer_input(&r.run_id, &request, "from two", false, 200)
        );
        let (x, y) = (x.unwrap(), y.unwrap());
        assert!(x ^ y, "exactly one answer wins: {x} / {y}");
        let winner = if x { ("from one", 100) } else { ("from two", 200) };
        let recorded = two.inputs(Some(&r.run_id), false).await.unwrap();
        let got = recorded.iter().find(|i| i.request_id == request).unwrap();
        assert_eq!((got.answer.as_deref(), got.answered_ms), (Some(winner.0), Some(winner.1)));
    }

    assert!(two.delete_run(&r.run_id).await.unwrap());
    assert_eq!(one.get_run(&r.run_id).await.unwrap(), None);
}

// ---------------------------------------------------------------------------------------
// Ownership: claims, leases, epochs and fenced writes.
// ---------------------------------------------------------------------------------------

/// A lease no test outlives.
const TTL: Duration = Duration::from_secs(60);

fn claim(run_id: &str, owner: &str) -> ClaimRequest {
    ClaimRequest::new(run_id, owner, TTL)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

#[track_caller]
fn taken(c: Claim) -> RunRecord {
    match c {
        Claim::Taken(r) => r,
        other => panic!("expected the claim to be taken, got {other:?}"),
    }
}

#[track_caller]
fn held(c: Claim) -> RunRecord {
    match c {
        Claim::Held(r) => r,
        other => panic!("expected the run to be held, got {other:?}"),
    }
}

#[track_caller]
fn assert_fenced<T: std::fmt::Debug>(result: Result<T, StoreError>, run_id: &str, epoch: u64, current: u64) {
    match result {
        Err(StoreError::Fenced { run_id: r, epoch: e, current: c, .. }) => {
            assert_eq!((r.as_str(), e, c), (run_id, epoch, current), "wrong fence")
        }
        other => panic!("expected run {run_id} fenced at epoch {epoch} (store at {current}), got {other:?}"),
    }
}

/// Claims (created only when asked, exclusive, reclaimed only by their owner and only when
/// asked, finished runs only when asked), renewals and releases by owner and epoch, and
/// every owner's write fenced by its epoch: a stale one writes nothing.
async fn ownership(store: &dyn CheckpointStore, tag: &str) {
    use AgentStatus::{Completed, Failed, Paused, Running};
    let id = format!("{tag}-owned");
    let agent = format!("{tag}-agent");
    let before = now_ms();
    assert_eq!(store.claim_run(&claim(&id, "w1")).await.unwrap(), Claim::Missing);
    assert_eq!(store.get_run(&id).await.unwrap(), None, "a claim creates nothing unless asked");

    // Created owned at epoch 1, its lease `TTL` from the store's now.
    let fresh = run(&id, &agent, Running, 5, 5);
    let r1 = taken(store.claim_run(&claim(&id, "w1").create(fresh.clone())).await.unwrap());
    assert_eq!((r1.owner.as_deref(), r1.epoch, r1.status, r1.created_ms), (Some("w1"), 1, Running, 5));
    let until = r1.lease_until_ms.unwrap();
    let ttl = TTL.as_millis() as i64;
    assert!(until >= before + ttl - 1_000 && until <= now_ms() + ttl + 1_000, "lease end {until}, claimed at {before}");
    assert_eq!(store.get_run(&id).await.unwrap(), Some(r1.clone()), "the claim returns the row as stored");

    // Held: against another owner (also when asking to create), and against its own owner
    // unless it reclaims; a reclaim never takes another's lease.
    let h = held(store.claim_run(&claim(&id, "w2").create(fresh.clone())).await.unwrap());
    assert_eq!((h.owner.as_deref(), h.lease_until_ms, h.epoch), (Some("w1"), Some(until), 1));
    held(store.claim_run(&claim(&id, "w1")).await.unwrap());
    held(store.claim_run(&claim(&id, "w2").reclaim(true)).await.unwrap());
    let r2 = taken(store.claim_run(&claim(&id, "w1").reclaim(true)).await.unwrap());
    assert_eq!((r2.owner.as_deref(), r2.epoch), (Some("w1"), 2));

    // Renewals: by the owner at its epoch only.
    let renewed = store.renew_lease(&id, "w1", 2, TTL).await.unwrap();
    assert!(renewed >= r2.lease_until_ms.unwrap());
    assert_fenced(store.renew_lease(&id, "w1", 1, TTL).await, &id, 1, 2);
    assert_fenced(store.renew_lease(&id, "w2", 2, TTL).await, &id, 2, 2);
    assert_fenced(store.renew_lease(&format!("{tag}-none"), "w1", 1, TTL).await, &format!("{tag}-none"), 1, 0);

    // Writes at the run's epoch go through, and leave its owner, lease and epoch alone.
    let row = |status, updated| run(&id, &agent, status, 5, updated).with_epoch(2);
    store.append(&row(Running, 10), &entries(1..=2)).await.unwrap();
    store.save_snapshot(&id, 2, &snapshot(1, 10)).await.unwrap();
    store.save_run_snapshot(&row(Running, 11), &snapshot(2, 11)).await.unwrap();
    // An owner's snapshot with a taken seq is refused, and its row is not written either.
    assert_conflict(store.save_run_snapshot(&row(Paused, 13), &snapshot(2, 13)).await, &id, 2, 2);
    assert_eq!(store.get_run(&id).await.unwrap().map(|r| (r.status, r.updated_ms)), Some((Running, 11)));
    store.upsert_run(&row(Running, 12)).await.unwrap();
    let now = store.get_run(&id).await.unwrap().unwrap();
    assert_eq!(
        (now.updated_ms, now.owner.as_deref(), now.lease_until_ms, now.epoch),
        (12, Some("w1"), Some(renewed), 2)
    );

    // A stale epoch (or epoch 0) writes nothing: not the row, the journal, a snapshot, nor
    // a pruning.
    let stale = |status, updated| run(&id, &agent, status, 5, updated).with_epoch(1);
    assert_fenced(store.upsert_run(&stale(Failed, 20)).await, &id, 1, 2);
    assert_fenced(store.upsert_run(&run(&id, &agent, Failed, 5, 20)).await, &id, 0, 2);
    assert_fenced(store.append(&stale(Failed, 20), &entries([3])).await, &id, 1, 2);
    assert_fenced(store.save_snapshot(&id, 1, &snapshot(3, 20)).await, &id, 1, 2);
    assert_fenced(store.save_run_snapshot(&stale(Failed, 20), &snapshot(3, 20)).await, &id, 1, 2);
    assert_fenced(store.prune_snapshots(&id, 1, 1).await, &id, 1, 2);
    assert_eq!(store.get_run(&id).await.unwrap(), Some(now.clone()), "no fenced write changed the row");
    assert_eq!(seqs(&store.journal(&id, 0).await.unwrap()), [1, 2]);
    assert_eq!(store.snapshots(&id, 8).await.unwrap(), [snapshot(2, 11), snapshot(1, 10)]);

    // A write with an epoch never creates a run.
    let ghost = run(&format!("{tag}-ghost"), &agent, Running, 1, 1).with_epoch(3);
    assert_fenced(store.save_run_snapshot(&ghost, &snapshot(1, 1)).await, &ghost.run_id, 3, 0);
    assert_fenced(store.append(&ghost, &entries([1])).await, &ghost.run_id, 3, 0);
    assert_fenced(store.upsert_run(&ghost).await, &ghost.run_id, 3, 0);
    assert_fenced(store.save_snapshot(&ghost.run_id, 3, &snapshot(1, 1)).await, &ghost.run_id, 3, 0);
    assert_eq!(store.get_run(&ghost.run_id).await.unwrap(), None);

    // The owner prunes its own snapshots, and the journal the oldest kept one covers.
    store.save_snapshot(&id, 2, &snapshot(3, 30)).await.unwrap();
    store.append(&row(Running, 30), &entries(3..=4)).await.unwrap();
    assert_eq!(store.prune_snapshots(&id, 2, 2).await.unwrap(), RetentionReport { snapshots: 1, entries: 2, runs: 0 });
    assert_eq!(seqs(&store.journal(&id, 0).await.unwrap()), [3, 4]);
    assert_eq!(store.snapshots(&id, 8).await.unwrap(), [snapshot(3, 30), snapshot(2, 11)]);

    // Release: at the run's epoch only; the owner's renewals stop working; another owner
    // claims at once, and the old owner is fenced from then on.
    assert_fenced(store.release_run(&id, 1).await, &id, 1, 2);
    store.release_run(&id, 2).await.unwrap();
    let released = store.get_run(&id).await.unwrap().unwrap();
    assert_eq!((released.owner, released.lease_until_ms, released.epoch), (None, None, 2));
    assert_fenced(store.renew_lease(&id, "w1", 2, TTL).await, &id, 2, 2);
    let r3 = taken(store.claim_run(&claim(&id, "w2")).await.unwrap());
    assert_eq!((r3.owner.as_deref(), r3.epoch), (Some("w2"), 3));
    assert_fenced(store.append(&row(Running, 40), &entries([5])).await, &id, 2, 3);
    assert_fenced(store.save_snapshot(&id, 2, &snapshot(4, 40)).await, &id, 2, 3);

    // A finished run is taken only when the claim asks for finished runs.
    store.upsert_run(&run(&id, &agent, Completed, 5, 50).with_epoch(3)).await.unwrap();
    store.release_run(&id, 3).await.unwrap();
    match store.claim_run(&claim(&id, "w1")).await.unwrap() {
        Claim::Finished(r) => assert_eq!((r.status, r.epoch, r.owner), (Completed, 3, None)),
        other => panic!("expected Finished, got {other:?}"),
    }
    let r4 = taken(store.claim_run(&claim(&id, "w1").finished(true)).await.unwrap());
    assert_eq!((r4.status, r4.epoch, r4.owner.as_deref()), (Completed, 4, Some("w1")));

    // Listing shows owner, lease and epoch.
    let listed = store.list_runs(&RunQuery { agent: Some(agent.clone()), ..RunQuery::default() }).await.unwrap();
    assert_eq!(listed, vec![r4.clone()]);
    // Requests for input and answers from anyone are not fenced; the run's own requests
    // and the answers it consumes are.
    store.put_input(&input(&id, "q", 1)).await.unwrap();
    assert!(store.answer_input(&id, "q", "yes", false, 2).await.unwrap());
    assert_fenced(store.put_input_fenced(&input(&id, "mine", 3), 3).await, &id, 3, 4);
    assert_fenced(store.answer_input_fenced(&id, "q", "late", true, 4, 3).await, &id, 3, 4);
    assert_fenced(
        store.put_input_fenced(&input(&format!("{tag}-none"), "x", 3), 1).await,
        &format!("{tag}-none"),
        1,
        0,
    );
    assert_eq!(keys(&store.inputs(Some(&id), false).await.unwrap()), [(id.as_str(), "q")], "nothing put");
    store.put_input_fenced(&input(&id, "mine", 3), 4).await.unwrap();
    assert!(!store.answer_input_fenced(&id, "q", "again", false, 5, 4).await.unwrap(), "the first answer wins");
    assert!(store.answer_input_fenced(&id, "mine", "default", true, 6, 4).await.unwrap());
    let recorded = store.inputs(Some(&id), false).await.unwrap();
    assert_eq!(
        recorded,
        [answered(input(&id, "q", 1), "yes", 2, false), answered(input(&id, "mine", 3), "default", 6, true)]
    );
}

/// A lease that ran out (by the store's clock) can still be renewed by its owner while
/// nobody took the run; once another owner claimed it, the old owner is fenced.
/// Requests for running runs (`RunControl`): kept on an unfinished run's row until a claim
/// takes the run; refused for a finished run or none.
async fn control(store: &dyn CheckpointStore, tag: &str) {
    use agent_runtime::store::RunControl;
    let id = format!("{tag}-controlled");
    let Claim::Taken(row) =
        store.claim_run(&claim(&id, "w1").create(run(&id, "a", AgentStatus::Running, 1, 1))).await.unwrap()
    else {
        panic!("{tag}: created")
    };
    assert_eq!(store.run_control(&id).await.unwrap(), None, "{tag}");
    assert!(store.request_control(&id, RunControl::Pause).await.unwrap(), "{tag}");
    assert_eq!(store.run_control(&id).await.unwrap(), Some(RunControl::Pause), "{tag}");
    assert!(store.request_control(&id, RunControl::Cancel).await.unwrap(), "{tag}: a cancel replaces a pause");
    assert_eq!(store.run_control(&id).await.unwrap(), Some(RunControl::Cancel), "{tag}");
    assert!(store.request_control(&id, RunControl::Pause).await.unwrap(), "{tag}");
    assert_eq!(store.run_control(&id).await.unwrap(), Some(RunControl::Cancel), "{tag}: a pause never a cancel");
    // A claim (a new owner) takes the run as it is: the request was for the old owner.
    store.release_run(&id, row.epoch).await.unwrap();
    taken(store.claim_run(&claim(&id, "w2")).await.unwrap());
    assert_eq!(store.run_control(&id).await.unwrap(), None, "{tag}: cleared by the claim");
    // Finished runs and unknown ones take no requests.
    let done = format!("{tag}-done");
    store.upsert_run(&run(&done, "a", AgentStatus::Completed, 1, 2)).await.unwrap();
    assert!(!store.request_control(&done, RunControl::Cancel).await.unwrap(), "{tag}");
    assert!(!store.request_control(&format!("{tag}-none"), RunControl::Cancel).await.unwrap(), "{tag}");
    assert_eq!(store.run_control(&format!("{tag}-none")).await.unwrap(), None, "{tag}");
}

/// Cancels of single states (`request_state_cancel`, `take_state_cancels`): kept in the
/// order they were asked, one per state, all taken at once, and once, by the owner at the
/// run's epoch (an owner at another epoch is fenced and takes nothing); kept across claims,
/// so the next owner takes what the last one left; refused for a finished run or none;
/// deleted with their run, by `delete_run` and by retention.
async fn state_cancels(store: &dyn CheckpointStore, tag: &str) {
    let id = format!("{tag}-cancelling");
    let create = |id: &str| claim(id, "w1").create(run(id, "a", AgentStatus::Running, 1, 1));
    let r1 = taken(store.claim_run(&create(&id)).await.unwrap());
    assert!(store.take_state_cancels(&id, r1.epoch).await.unwrap().is_empty(), "{tag}: nothing asked yet");
    for state in ["review", "fetch", "review", "<b>naïve</b>"] {
        assert!(store.request_state_cancel(&id, state).await.unwrap(), "{tag}: {state}");
    }
    // Another epoch takes nothing: neither a past one nor one to come.
    assert_fenced(store.take_state_cancels(&id, r1.epoch + 1).await, &id, r1.epoch + 1, r1.epoch);
    assert_fenced(store.take_state_cancels(&id, 0).await, &id, 0, r1.epoch);
    let taken_now = store.take_state_cancels(&id, r1.epoch).await.unwrap();
    assert_eq!(taken_now, ["review", "fetch", "<b>naïve</b>"], "{tag}: oldest first, one per state");
    assert!(store.take_state_cancels(&id, r1.epoch).await.unwrap().is_empty(), "{tag}: taken once");

    // The owner goes (its lease given back, or run out) with requests pending: they wait for
    // the next owner, and the old one can no longer take them.
    assert!(store.request_state_cancel(&id, "parse").await.unwrap(), "{tag}");
    assert!(store.request_state_cancel(&id, "fetch").await.unwrap(), "{tag}");
    store.release_run(&id, r1.epoch).await.unwrap();
    let r2 = taken(store.claim_run(&claim(&id, "w2")).await.unwrap());
    assert_fenced(store.take_state_cancels(&id, r1.epoch).await, &id, r1.epoch, r2.epoch);
    assert_eq!(store.take_state_cancels(&id, r2.epoch).await.unwrap(), ["parse", "fetch"], "{tag}: kept by the claim");

    // Finished runs and unknown ones take no requests.
    let done = format!("{tag}-done");
    store.upsert_run(&run(&done, "a", AgentStatus::Completed, 1, 2)).await.unwrap();
    assert!(!store.request_state_cancel(&done, "review").await.unwrap(), "{tag}: finished");
    assert!(store.take_state_cancels(&done, 0).await.unwrap().is_empty(), "{tag}");
    let none = format!("{tag}-none");
    assert!(!store.request_state_cancel(&none, "review").await.unwrap(), "{tag}: no such run");
    assert_fenced(store.take_state_cancels(&none, 1).await, &none, 1, 0);

    // Deleting a run deletes its requests: a new run of the same id has none.
    assert!(store.request_state_cancel(&id, "review").await.unwrap(), "{tag}");
    assert!(store.delete_run(&id).await.unwrap(), "{tag}");
    let again = taken(store.claim_run(&create(&id)).await.unwrap());
    assert!(store.take_state_cancels(&id, again.epoch).await.unwrap().is_empty(), "{tag}: deleted with its run");

    // So does retention, dropping a finished run (asked before it finished).
    let old = format!("{tag}-old");
    let r = taken(store.claim_run(&create(&old)).await.unwrap());
    assert!(store.request_state_cancel(&old, "review").await.unwrap(), "{tag}");
    store.upsert_run(&r.clone().with_status(AgentStatus::Completed, 1_000)).await.unwrap();
    let policy = Retention { keep_snapshots: None, drop_finished_after: Some(Duration::from_secs(5)) };
    assert_eq!(store.apply_retention(&policy, 10_000).await.unwrap().runs, 2, "{tag}: `old` and `done`");
    let again = taken(store.claim_run(&create(&old)).await.unwrap());
    assert!(store.take_state_cancels(&old, again.epoch).await.unwrap().is_empty(), "{tag}: deleted by retention");
}

/// Lineage (`record_lineage`, `lineage`, `descendants`): a run's is read back as recorded
/// (before the run's row exists, too); a parent's descendants are listed oldest first
/// (`created_ms`, then `run_id`); a second record for a run is refused and the first kept;
/// deleting a run, or retention dropping it, deletes its own lineage and never its
/// descendants' (they still name it); retention of other runs leaves a run's alone.
async fn lineage(store: &dyn CheckpointStore, tag: &str) {
    use agent_runtime::store::{Lineage, LineageKind};
    let id = |name: &str| format!("{tag}-{name}");
    let (parent, someone) = (id("parent"), id("someone"));
    assert_eq!(store.lineage(&id("fork")).await.unwrap(), None, "{tag}: none before");
    assert!(store.descendants(&parent).await.unwrap().is_empty(), "{tag}: none before");

    // Recorded out of order; the twin ties the child's time (its id sorts after).
    let fork = Lineage::new(id("fork"), &parent, LineageKind::Fork, 100).at_seq(7);
    let child = Lineage::new(id("child"), &parent, LineageKind::Child, 200).in_state("delegate");
    let twin = Lineage::new(id("fork-twin"), &parent, LineageKind::Fork, 200).at_seq(0);
    let elsewhere = Lineage::new(id("elsewhere"), &someone, LineageKind::Child, 1);
    for l in [&twin, &child, &fork, &elsewhere] {
        store.record_lineage(l).await.unwrap();
    }
    assert_eq!(store.lineage(&fork.run_id).await.unwrap(), Some(fork.clone()), "{tag}");
    assert_eq!(store.lineage(&child.run_id).await.unwrap(), Some(child.clone()), "{tag}");
    assert_eq!(store.lineage(&twin.run_id).await.unwrap(), Some(twin.clone()), "{tag}: seq 0 is not none");
    assert_eq!(store.lineage(&parent).await.unwrap(), None, "{tag}: the parent was made by no run");
    let listed = store.descendants(&parent).await.unwrap();
    assert_eq!(listed, [fork.clone(), child.clone(), twin.clone()], "{tag}: oldest first");
    assert_eq!(store.descendants(&someone).await.unwrap(), std::slice::from_ref(&elsewhere), "{tag}");
    assert!(store.descendants(&fork.run_id).await.unwrap().is_empty(), "{tag}: a fork has none of its own");

    // Written once: another lineage for the child is refused (so is the same one again),
    // and the first is kept.
    let again = Lineage::new(&child.run_id, &someone, LineageKind::Fork, 300).at_seq(1);
    match store.record_lineage(&again).await {
        Err(e @ StoreError::Backend { .. }) => {
            assert!(!e.is_transient(), "{tag}: {e}");
            assert!(e.to_string().contains(&child.run_id), "{tag}: {e}");
        }
        other => panic!("{tag}: expected a refusal, got {other:?}"),
    }
    assert!(store.record_lineage(&child).await.is_err(), "{tag}: even the same one");
    assert_eq!(store.lineage(&child.run_id).await.unwrap(), Some(child.clone()), "{tag}: the first kept");
    assert_eq!(store.descendants(&someone).await.unwrap(), std::slice::from_ref(&elsewhere), "{tag}");

    // Deleting the child deletes its lineage; the parent's other descendants stay.
    store.upsert_run(&run(&child.run_id, "a", AgentStatus::Running, 200, 200)).await.unwrap();
    assert!(store.delete_run(&child.run_id).await.unwrap(), "{tag}");
    assert_eq!(store.lineage(&child.run_id).await.unwrap(), None, "{tag}: deleted with its run");
    assert_eq!(store.descendants(&parent).await.unwrap(), [fork.clone(), twin.clone()], "{tag}");
    // Its id starts afresh.
    store.record_lineage(&again).await.unwrap();
    assert_eq!(store.descendants(&someone).await.unwrap(), [elsewhere.clone(), again.clone()], "{tag}");

    // Retention drops the finished parent, the finished twin and the old `elsewhere`: their
    // own lineage goes, the fork's (unfinished) and the child's (recent) stay, and still
    // name the dropped parent.
    for (r, status, updated_ms) in [
        (&parent, AgentStatus::Completed, 1_000),
        (&fork.run_id, AgentStatus::Running, 1_000),
        (&twin.run_id, AgentStatus::Completed, 1_000),
        (&again.run_id, AgentStatus::Completed, 9_000),
        (&elsewhere.run_id, AgentStatus::Failed, 1_000),
    ] {
        store.upsert_run(&run(r, "a", status, 1, updated_ms)).await.unwrap();
    }
    let policy = Retention { keep_snapshots: None, drop_finished_after: Some(Duration::from_secs(5)) };
    assert_eq!(store.apply_retention(&policy, 10_000).await.unwrap().runs, 3, "{tag}");
    assert_eq!(store.lineage(&fork.run_id).await.unwrap(), Some(fork.clone()), "{tag}: survives");
    assert_eq!(store.lineage(&again.run_id).await.unwrap(), Some(again.clone()), "{tag}: survives");
    assert_eq!(store.lineage(&twin.run_id).await.unwrap(), None, "{tag}: dropped with its run");
    assert_eq!(store.lineage(&elsewhere.run_id).await.unwrap(), None, "{tag}: dropped with its run");
    assert_eq!(store.descendants(&parent).await.unwrap(), std::slice::from_ref(&fork), "{tag}: a dropped parent's");
    assert_eq!(store.descendants(&someone).await.unwrap(), std::slice::from_ref(&again), "{tag}");
}

/// Signals (`send_signal`, `take_signal`, `signals`): kept once per id, for a run that is
/// queued, running or paused, never for a finished run or none; taken oldest first by name
/// (names never mix), once each, a wait getting again the signal it took (also after the
/// run was taken over) and a second wait the next; fenced by the run's epoch (a fenced take
/// takes nothing); of concurrent takes each gets its own signal or none; deleted with their
/// run, by `delete_run` and by retention.
async fn signals(store: &dyn CheckpointStore, tag: &str) {
    use agent_runtime::store::{SignalRecord, SignalSent};
    let id = format!("{tag}-signalled");
    let create = |id: &str| claim(id, "w1").create(run(id, "a", AgentStatus::Running, 1, 1));
    let signal = |run_id: &str, signal_id: &str, name: &str, n: i64| {
        SignalRecord::new(run_id, signal_id, name, format!(r#"{{"n":{n},"text":"naïve \"quoted\""}}"#), 100 + n)
    };
    let r1 = taken(store.claim_run(&create(&id)).await.unwrap());
    assert!(store.signals(&id).await.unwrap().is_empty(), "{tag}: none yet");
    assert_eq!(store.take_signal(&id, "pay", "s/signal/0", 1, r1.epoch).await.unwrap(), None, "{tag}: none yet");

    // Kept once per id: a second send of an id keeps nothing, whatever it carries.
    for (signal_id, name, n) in [("a", "pay", 1), ("b", "ship", 2), ("c", "pay", 3), ("d", "pay", 4)] {
        assert_eq!(store.send_signal(&signal(&id, signal_id, name, n)).await.unwrap(), SignalSent::Kept, "{tag}");
    }
    let again = signal(&id, "a", "ship", 9);
    assert_eq!(store.send_signal(&again).await.unwrap(), SignalSent::Duplicate, "{tag}");
    let kept = store.signals(&id).await.unwrap();
    assert!(kept.windows(2).all(|w| w[0].seq < w[1].seq) && kept[0].seq > 0, "{tag}: seqs {kept:?}");
    let expected: Vec<SignalRecord> = [("a", "pay", 1), ("b", "ship", 2), ("c", "pay", 3), ("d", "pay", 4)]
        .into_iter()
        .zip(&kept)
        .map(|((signal_id, name, n), k)| {
            let mut sent = signal(&id, signal_id, name, n);
            sent.seq = k.seq;
            sent
        })
        .collect();
    assert_eq!(kept, expected, "{tag}: kept as sent, in the order sent");

    // Taken oldest first by name, each once; the same wait gets its signal again (whatever
    // name it asks), another wait the next.
    let take = |name: &'static str, wait: &'static str, epoch: u64| store.take_signal(&id, name, wait, 500, epoch);
    let took = |s: Option<SignalRecord>| s.map(|s| (s.signal_id, s.taken_by, s.taken_ms));
    let by = |signal_id: &str, wait: &str| Some((signal_id.to_owned(), Some(wait.to_owned()), Some(500)));
    assert_eq!(took(take("pay", "s/signal/0", r1.epoch).await.unwrap()), by("a", "s/signal/0"), "{tag}");
    assert_eq!(took(take("pay", "s/signal/0", r1.epoch).await.unwrap()), by("a", "s/signal/0"), "{tag}: again");
    assert_eq!(took(take("ship", "s/signal/0", r1.epoch).await.unwrap()), by("a", "s/signal/0"), "{tag}: its own");
    assert_eq!(took(take("pay", "s/signal/1", r1.epoch).await.unwrap()), by("c", "s/signal/1"), "{tag}: the next");
    assert_eq!(took(take("ship", "t/signal/0", r1.epoch).await.unwrap()), by("b", "t/signal/0"), "{tag}: by name");
    assert_eq!(take("ship", "t/signal/1", r1.epoch).await.unwrap(), None, "{tag}: no ship left");
    assert_eq!(took(take("pay", "s/signal/2", r1.epoch).await.unwrap()), by("d", "s/signal/2"), "{tag}");
    assert_eq!(take("pay", "s/signal/3", r1.epoch).await.unwrap(), None, "{tag}: no pay left");
    assert_eq!(take("refund", "s/signal/3", r1.epoch).await.unwrap(), None, "{tag}: no such name");
    let waits: Vec<_> = store.signals(&id).await.unwrap().into_iter().map(|s| (s.signal_id, s.taken_by)).collect();
    let expected = [("a", "s/signal/0"), ("b", "t/signal/0"), ("c", "s/signal/1"), ("d", "s/signal/2")];
    assert_eq!(waits, expected.map(|(s, w)| (s.to_owned(), Some(w.to_owned()))), "{tag}: kept as taken");

    // Another epoch takes nothing, not even the signal its wait took before.
    assert_eq!(store.send_signal(&signal(&id, "e", "pay", 5)).await.unwrap(), SignalSent::Kept, "{tag}");
    assert_fenced(take("pay", "s/signal/3", r1.epoch + 1).await, &id, r1.epoch + 1, r1.epoch);
    assert_fenced(take("pay", "s/signal/3", 0).await, &id, 0, r1.epoch);
    assert_fenced(take("pay", "s/signal/0", 0).await, &id, 0, r1.epoch);
    assert_eq!(store.signals(&id).await.unwrap().last().map(|s| s.taken_by.clone()), Some(None), "{tag}: untaken");

    // Taken over: the old owner is fenced; the new one's waits get what the old one's took.
    store.release_run(&id, r1.epoch).await.unwrap();
    let r2 = taken(store.claim_run(&claim(&id, "w2")).await.unwrap());
    assert_fenced(take("pay", "s/signal/3", r1.epoch).await, &id, r1.epoch, r2.epoch);
    assert_eq!(took(take("pay", "s/signal/0", r2.epoch).await.unwrap()), by("a", "s/signal/0"), "{tag}: the same");
    assert_eq!(took(take("pay", "s/signal/3", r2.epoch).await.unwrap()), by("e", "s/signal/3"), "{tag}");

    // Of concurrent takes, each gets a signal of its own or none.
    for (signal_id, n) in [("f", 6), ("g", 7), ("h", 8)] {
        assert_eq!(store.send_signal(&signal(&id, signal_id, "pay", n)).await.unwrap(), SignalSent::Kept, "{tag}");
    }
    let (one, two, three, four, five) = tokio::join!(
        take("pay", "p/signal/1", r2.epoch),
        take("pay", "p/signal/2", r2.epoch),
        take("pay", "p/signal/3", r2.epoch),
        take("pay", "p/signal/4", r2.epoch),
        take("pay", "p/signal/5", r2.epoch),
    );
    let mut got: Vec<String> =
        [one, two, three, four, five].into_iter().filter_map(|t| t.unwrap().map(|s| s.signal_id)).collect();
    got.sort();
    assert_eq!(got, ["f", "g", "h"], "{tag}: each taken once");

    // Unknown runs take no signals; a wait of one at epoch 0 finds none.
    let none = format!("{tag}-none");
    assert_eq!(store.send_signal(&signal(&none, "a", "pay", 1)).await.unwrap(), SignalSent::UnknownRun, "{tag}");
    assert!(store.signals(&none).await.unwrap().is_empty(), "{tag}: nothing kept");
    assert_fenced(store.take_signal(&none, "pay", "s/signal/0", 1, 1).await, &none, 1, 0);
    assert_eq!(store.take_signal(&none, "pay", "s/signal/0", 1, 0).await.unwrap(), None, "{tag}");

    // Queued, running and paused runs take signals; finished ones keep none, whether they
    // were written finished or finished by their owner.
    for (i, status) in ALL_STATUSES.into_iter().enumerate() {
        let r = format!("{tag}-status-{i}");
        store.upsert_run(&run(&r, "a", status, 1, 1)).await.unwrap();
        let sent = store.send_signal(&signal(&r, "a", "pay", 1)).await.unwrap();
        let expected = if status.is_finished() { SignalSent::Finished(status) } else { SignalSent::Kept };
        assert_eq!(sent, expected, "{tag}: {status}");
        assert_eq!(store.signals(&r).await.unwrap().len(), usize::from(!status.is_finished()), "{tag}: {status}");
    }
    let done = format!("{tag}-done");
    let d = taken(store.claim_run(&create(&done)).await.unwrap());
    assert_eq!(store.send_signal(&signal(&done, "a", "pay", 1)).await.unwrap(), SignalSent::Kept, "{tag}");
    store.upsert_run(&d.clone().with_status(AgentStatus::Completed, 1_000)).await.unwrap();
    let finished = SignalSent::Finished(AgentStatus::Completed);
    assert_eq!(store.send_signal(&signal(&done, "b", "pay", 2)).await.unwrap(), finished, "{tag}");
    assert_eq!(store.send_signal(&signal(&done, "a", "pay", 1)).await.unwrap(), finished, "{tag}: finished first");

    // Deleting a run deletes its signals: a new run of the same id has none, taken or not.
    assert!(store.delete_run(&id).await.unwrap(), "{tag}");
    assert!(store.signals(&id).await.unwrap().is_empty(), "{tag}: deleted with its run");
    let fresh = taken(store.claim_run(&create(&id)).await.unwrap());
    assert_eq!(store.take_signal(&id, "pay", "s/signal/0", 1, fresh.epoch).await.unwrap(), None, "{tag}");
    assert_eq!(store.send_signal(&signal(&id, "a", "pay", 1)).await.unwrap(), SignalSent::Kept, "{tag}: id free");

    // So does retention, dropping a finished run; the others keep theirs.
    let policy = Retention { keep_snapshots: None, drop_finished_after: Some(Duration::from_secs(5)) };
    store.apply_retention(&policy, 10_000).await.unwrap();
    assert!(store.signals(&done).await.unwrap().is_empty(), "{tag}: dropped with its run");
    assert_eq!(store.signals(&id).await.unwrap().len(), 1, "{tag}: unfinished, kept");
}

/// Timers (`arm_timer`, `timers`): armed once per run and key, every later arm getting the
/// first wake time (also after the run was taken over); listed by key, bytewise; fenced by
/// the run's epoch (a fenced arm arms nothing); deleted with their run, by `delete_run` and
/// by retention.
async fn timers(store: &dyn CheckpointStore, tag: &str) {
    use agent_runtime::store::TimerRecord;
    let id = format!("{tag}-sleeping");
    let other = format!("{tag}-other");
    let create = |id: &str| claim(id, "w1").create(run(id, "a", AgentStatus::Running, 1, 1));
    let r1 = taken(store.claim_run(&create(&id)).await.unwrap());
    assert!(store.timers(&id).await.unwrap().is_empty(), "{tag}: none yet");
    let timer = |key: &str, wake_ms: i64| TimerRecord::new(&id, key, wake_ms);
    assert_eq!(store.arm_timer(&timer("s/sleep/1", 5_000), r1.epoch).await.unwrap(), 5_000, "{tag}");
    assert_eq!(store.arm_timer(&timer("s/sleep/1", 9_000), r1.epoch).await.unwrap(), 5_000, "{tag}: the first");
    for (key, wake_ms) in [("a/sleep/0", 7_000), ("Z/sleep/0", 8_000)] {
        assert_eq!(store.arm_timer(&timer(key, wake_ms), r1.epoch).await.unwrap(), wake_ms, "{tag}: {key}");
    }
    let armed = [timer("Z/sleep/0", 8_000), timer("a/sleep/0", 7_000), timer("s/sleep/1", 5_000)];
    assert_eq!(store.timers(&id).await.unwrap(), armed, "{tag}: by key, bytewise");

    // Another epoch arms nothing.
    assert_fenced(store.arm_timer(&timer("s/sleep/2", 1), r1.epoch + 1).await, &id, r1.epoch + 1, r1.epoch);
    assert_fenced(store.arm_timer(&timer("s/sleep/2", 1), 0).await, &id, 0, r1.epoch);
    assert_eq!(store.timers(&id).await.unwrap(), armed, "{tag}: nothing armed");

    // Taken over: the old owner is fenced; the new one wakes when the first arm said.
    store.release_run(&id, r1.epoch).await.unwrap();
    let r2 = taken(store.claim_run(&claim(&id, "w2")).await.unwrap());
    assert_fenced(store.arm_timer(&timer("s/sleep/2", 1), r1.epoch).await, &id, r1.epoch, r2.epoch);
    assert_eq!(store.arm_timer(&timer("s/sleep/1", 1), r2.epoch).await.unwrap(), 5_000, "{tag}: the first");

    // A run's timers are its own; an unknown run arms none at an epoch.
    let o = taken(store.claim_run(&create(&other)).await.unwrap());
    assert_eq!(store.arm_timer(&TimerRecord::new(&other, "s/sleep/1", 42), o.epoch).await.unwrap(), 42, "{tag}");
    assert_eq!(store.timers(&id).await.unwrap(), armed, "{tag}: not the other run's");
    let none = format!("{tag}-none");
    assert_fenced(store.arm_timer(&TimerRecord::new(&none, "s/sleep/0", 1), 1).await, &none, 1, 0);
    assert!(store.timers(&none).await.unwrap().is_empty(), "{tag}");

    // Deleting a run deletes its timers: a new run of the same id arms afresh.
    assert!(store.delete_run(&id).await.unwrap(), "{tag}");
    assert!(store.timers(&id).await.unwrap().is_empty(), "{tag}: deleted with its run");
    let fresh = taken(store.claim_run(&create(&id)).await.unwrap());
    assert_eq!(store.arm_timer(&timer("s/sleep/1", 6_000), fresh.epoch).await.unwrap(), 6_000, "{tag}: afresh");

    // So does retention, dropping a finished run; the others keep theirs.
    store.upsert_run(&o.clone().with_status(AgentStatus::Completed, 1_000)).await.unwrap();
    let policy = Retention { keep_snapshots: None, drop_finished_after: Some(Duration::from_secs(5)) };
    assert_eq!(store.apply_retention(&policy, 10_000).await.unwrap().runs, 1, "{tag}");
    assert!(store.timers(&other).await.unwrap().is_empty(), "{tag}: dropped with its run");
    assert_eq!(store.timers(&id).await.unwrap(), [timer("s/sleep/1", 6_000)], "{tag}: unfinished, kept");
}

/// Schedules (`put_schedule`, `schedules`, `pause_schedule`, `delete_schedule`,
/// `advance_schedule`): one per agent and name, listed by agent then name (bytewise), all
/// or one agent's; added whole at version 1; put again, the definition and cursor replaced,
/// `created_ms` and `last_run_id` kept, the version bumped; a cursor moved only from the
/// version read (a stale one moves nothing) and, of concurrent moves from one version, by
/// exactly one; paused and resumed with their cursor set, the version bumped; deleted
/// alone (the agent's runs stay, and deleting a run leaves the schedules); a missing
/// schedule `false` everywhere, nothing written.
async fn schedules(store: &dyn CheckpointStore, tag: &str) {
    use agent_runtime::store::{ScheduleAdvance, ScheduleRecord};
    /// The agent's schedule `name`, as listed.
    async fn one(store: &dyn CheckpointStore, agent: &str, name: &str) -> ScheduleRecord {
        let listed = store.schedules(Some(agent)).await.unwrap();
        listed.into_iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no schedule {name} of {agent}"))
    }
    // Bytewise, "ETL" comes before "etl" and "Hourly" before "hourly" (most collations of
    // a language put them the other way round).
    let (etl, upper) = (format!("{tag}-etl"), format!("{tag}-ETL"));
    let schedule = |agent: &str, name: &str, now_ms: i64| {
        let mut s = ScheduleRecord::new(agent, name, "0 3 * * *", now_ms);
        s.timezone = "Europe/Paris".to_owned();
        s.overlap = "buffer-one".to_owned();
        s.catch_up_ms = 3_600_000;
        s.input = format!(r#"{{"name":"{name}","text":"naïve \"quoted\""}}"#);
        s.next_tick_ms = now_ms + 1_000;
        s
    };
    let at = |s: &ScheduleRecord, version: u64| {
        let mut s = s.clone();
        s.version = version;
        s
    };
    assert!(store.schedules(None).await.unwrap().is_empty(), "{tag}: none yet");

    // Added whole, at version 1 (whatever the record said); listed by agent, then name.
    let nightly = schedule(&etl, "nightly", 100);
    let mut hourly = schedule(&etl, "hourly", 110);
    hourly.version = 42;
    let mut upper_hourly = schedule(&etl, "Hourly", 120);
    (upper_hourly.paused, upper_hourly.buffered_tick_ms) = (true, Some(90));
    upper_hourly.last_run_id = Some(format!("{tag}-run-0"));
    let other = schedule(&upper, "nightly", 130);
    for s in [&nightly, &hourly, &upper_hourly, &other] {
        assert!(store.put_schedule(s).await.unwrap(), "{tag}: {} added", s.name);
    }
    let all = [at(&other, 1), at(&upper_hourly, 1), at(&hourly, 1), at(&nightly, 1)];
    assert_eq!(store.schedules(None).await.unwrap(), all, "{tag}: by agent then name, bytewise, whole");
    assert_eq!(store.schedules(Some(&etl)).await.unwrap(), all[1..], "{tag}: one agent's");
    assert_eq!(store.schedules(Some(&upper)).await.unwrap(), all[..1], "{tag}: the other's");
    assert!(store.schedules(Some("nobody")).await.unwrap().is_empty(), "{tag}: nobody's");

    // A cursor moves from the version read, bumping it; the same move again (now stale)
    // or from a version not reached yet moves nothing.
    let mut first = ScheduleAdvance::of(&one(store, &etl, "nightly").await, 5_000, 200);
    first.last_run_id = Some(format!("{tag}-run-1"));
    assert!(store.advance_schedule(&first).await.unwrap(), "{tag}: moved");
    let mut moved = at(&nightly, 2);
    (moved.next_tick_ms, moved.last_run_id, moved.updated_ms) = (5_000, first.last_run_id.clone(), 200);
    assert_eq!(one(store, &etl, "nightly").await, moved, "{tag}: the cursor and the version, nothing else");
    let before = store.schedules(None).await.unwrap();
    assert!(!store.advance_schedule(&first).await.unwrap(), "{tag}: stale");
    let mut ahead = ScheduleAdvance::of(&moved, 7_000, 300);
    ahead.version += 1;
    assert!(!store.advance_schedule(&ahead).await.unwrap(), "{tag}: not reached");
    assert_eq!(store.schedules(None).await.unwrap(), before, "{tag}: nothing changed");
    let mut buffered = ScheduleAdvance::of(&moved, 6_000, 250);
    (buffered.buffered_tick_ms, buffered.last_run_id) = (Some(5_000), None);
    assert!(store.advance_schedule(&buffered).await.unwrap(), "{tag}");
    (moved.next_tick_ms, moved.buffered_tick_ms, moved.last_run_id, moved.updated_ms) = (6_000, Some(5_000), None, 250);
    moved.version = 3;
    assert_eq!(one(store, &etl, "nightly").await, moved, "{tag}: buffered, its last run cleared");
    let mut last = ScheduleAdvance::of(&moved, 7_000, 260);
    last.last_run_id = Some(format!("{tag}-run-2"));
    assert!(store.advance_schedule(&last).await.unwrap(), "{tag}");

    // Put again: the definition and cursor replaced, `created_ms` and `last_run_id` kept
    // (whatever the record said), the version bumped; a move planned before is refused.
    let planned = ScheduleAdvance::of(&one(store, &etl, "nightly").await, 8_000, 300);
    let mut changed = schedule(&etl, "nightly", 999);
    changed.cron = "*/5 * * * *".to_owned();
    (changed.timezone, changed.overlap) = ("UTC".to_owned(), "allow".to_owned());
    (changed.catch_up_ms, changed.input, changed.paused) = (0, "{}".to_owned(), true);
    (changed.updated_ms, changed.next_tick_ms, changed.buffered_tick_ms) = (1_000, 2_000, Some(1_500));
    changed.last_run_id = Some("not kept".to_owned());
    assert!(!store.put_schedule(&changed).await.unwrap(), "{tag}: replaced, not added");
    let mut replaced = at(&changed, 5);
    (replaced.created_ms, replaced.last_run_id) = (100, last.last_run_id.clone());
    assert_eq!(one(store, &etl, "nightly").await, replaced, "{tag}: replaced");
    assert!(!store.advance_schedule(&planned).await.unwrap(), "{tag}: planned on the old definition");
    changed.buffered_tick_ms = None;
    assert!(!store.put_schedule(&changed).await.unwrap(), "{tag}");
    (replaced.buffered_tick_ms, replaced.version) = (None, 6);
    assert_eq!(one(store, &etl, "nightly").await, replaced, "{tag}: its buffered tick cleared");
    assert_eq!(store.schedules(None).await.unwrap().len(), 4, "{tag}: still one per agent and name");

    // Of concurrent moves from one version, exactly one is made: the stored cursor is its.
    let read = one(store, &etl, "hourly").await;
    let step = |n: i64| {
        let mut s = ScheduleAdvance::of(&read, 10_000 + n, 400 + n);
        s.last_run_id = Some(format!("{tag}-race-{n}"));
        s
    };
    let steps = [step(1), step(2), step(3), step(4), step(5)];
    let (a, b, c, d, e) = tokio::join!(
        store.advance_schedule(&steps[0]),
        store.advance_schedule(&steps[1]),
        store.advance_schedule(&steps[2]),
        store.advance_schedule(&steps[3]),
        store.advance_schedule(&steps[4]),
    );
    let won: Vec<&ScheduleAdvance> =
        [a, b, c, d, e].into_iter().zip(&steps).filter(|(won, _)| *won.as_ref().unwrap()).map(|(_, s)| s).collect();
    assert_eq!(won.len(), 1, "{tag}: exactly one wins: {won:?}");
    let after = one(store, &etl, "hourly").await;
    assert_eq!(
        (after.next_tick_ms, after.last_run_id.as_ref(), after.updated_ms, after.version),
        (won[0].next_tick_ms, won[0].last_run_id.as_ref(), won[0].now_ms, read.version + 1),
        "{tag}: the winner's cursor"
    );

    // Paused and resumed: the cursor set, the version bumped, the rest kept.
    let read = one(store, &etl, "Hourly").await;
    assert!(store.pause_schedule(&etl, "Hourly", false, 20_000, 500).await.unwrap(), "{tag}: resumed");
    let mut resumed = read.clone();
    (resumed.paused, resumed.next_tick_ms, resumed.updated_ms, resumed.version) = (false, 20_000, 500, 2);
    assert_eq!(one(store, &etl, "Hourly").await, resumed, "{tag}");
    assert!(store.pause_schedule(&etl, "Hourly", true, 21_000, 600).await.unwrap(), "{tag}: paused");
    (resumed.paused, resumed.next_tick_ms, resumed.updated_ms, resumed.version) = (true, 21_000, 600, 3);
    assert_eq!(one(store, &etl, "Hourly").await, resumed, "{tag}");
    assert!(!store.advance_schedule(&ScheduleAdvance::of(&read, 1, 1)).await.unwrap(), "{tag}: stale after pause");

    // Missing: `false` everywhere, nothing written (a name of one agent is not another's).
    let before = store.schedules(None).await.unwrap();
    assert!(!store.pause_schedule(&etl, "nope", true, 1, 1).await.unwrap(), "{tag}");
    assert!(!store.pause_schedule(&upper, "hourly", false, 1, 1).await.unwrap(), "{tag}");
    assert!(!store.delete_schedule(&etl, "nope").await.unwrap(), "{tag}");
    assert!(!store.delete_schedule("nobody", "nightly").await.unwrap(), "{tag}");
    let mut elsewhere = ScheduleAdvance::of(&one(store, &etl, "hourly").await, 1, 1);
    elsewhere.agent.clone_from(&upper);
    assert!(!store.advance_schedule(&elsewhere).await.unwrap(), "{tag}");
    elsewhere.agent = "nobody".to_owned();
    assert!(!store.advance_schedule(&elsewhere).await.unwrap(), "{tag}");
    assert_eq!(store.schedules(None).await.unwrap(), before, "{tag}: nothing written");

    // Deleted alone: the others and the agent's runs stay; deleting a run leaves the
    // schedules.
    let r = run(&format!("{tag}-scheduled"), &etl, AgentStatus::Completed, 1, 1);
    store.upsert_run(&r).await.unwrap();
    assert!(store.delete_schedule(&etl, "hourly").await.unwrap(), "{tag}: deleted");
    assert!(!store.delete_schedule(&etl, "hourly").await.unwrap(), "{tag}: once");
    let kept: Vec<ScheduleRecord> =
        before.iter().filter(|s| (s.agent.as_str(), s.name.as_str()) != (&etl, "hourly")).cloned().collect();
    assert_eq!(store.schedules(None).await.unwrap(), kept, "{tag}: the others stay");
    assert_eq!(store.get_run(&r.run_id).await.unwrap(), Some(r.clone()), "{tag}: its runs stay");
    assert!(store.delete_run(&r.run_id).await.unwrap(), "{tag}");
    let policy = Retention { keep_snapshots: None, drop_finished_after: Some(Duration::from_secs(5)) };
    store.apply_retention(&policy, i64::MAX).await.unwrap();
    assert_eq!(store.schedules(None).await.unwrap(), kept, "{tag}: runs deleted, schedules kept");
    // Removed and added again, a schedule starts its versions again: a move planned on the
    // schedule before (same version, another `created_ms`) is refused.
    let read_before = one(store, &etl, "nightly").await;
    assert!(store.delete_schedule(&etl, "nightly").await.unwrap(), "{tag}");
    let mut again = read_before.clone();
    again.created_ms += 1;
    assert!(store.put_schedule(&again).await.unwrap(), "{tag}: added again");
    let fresh = one(store, &etl, "nightly").await;
    let mut stale = ScheduleAdvance::of(&read_before, read_before.next_tick_ms + 5, 9);
    stale.version = fresh.version;
    assert!(!store.advance_schedule(&stale).await.unwrap(), "{tag}: planned on the removed schedule");
    assert!(store.advance_schedule(&ScheduleAdvance::of(&fresh, fresh.next_tick_ms + 5, 9)).await.unwrap(), "{tag}");
    assert!(store.put_schedule(&hourly).await.unwrap(), "{tag}: added again");
}

async fn lease_expiry(store: &dyn CheckpointStore, tag: &str) {
    let id = format!("{tag}-expiring");
    let short = Duration::from_millis(150);
    let request = ClaimRequest::new(&id, "w1", short).create(run(&id, "agent", AgentStatus::Running, 1, 1));
    let r1 = taken(store.claim_run(&request).await.unwrap());
    held(store.claim_run(&claim(&id, "w2")).await.unwrap());
    let past = |until: i64| async move {
        let give_up = Instant::now() + Duration::from_secs(5);
        while now_ms() <= until + 20 {
            assert!(Instant::now() < give_up, "the lease never ran out");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    past(r1.lease_until_ms.unwrap()).await;
    let until = store.renew_lease(&id, "w1", 1, short).await.expect("nobody took it: its owner may renew");
    assert!(until > r1.lease_until_ms.unwrap());
    held(store.claim_run(&claim(&id, "w2")).await.unwrap());
    past(until).await;
    let r2 = taken(store.claim_run(&claim(&id, "w2")).await.unwrap());
    assert_eq!((r2.owner.as_deref(), r2.epoch), (Some("w2"), 2));
    assert_fenced(store.renew_lease(&id, "w1", 1, short).await, &id, 1, 2);
    assert_fenced(
        store.save_run_snapshot(&r1.clone().with_status(AgentStatus::Failed, 2), &snapshot(1, 2)).await,
        &id,
        1,
        2,
    );
    assert_eq!(store.latest_snapshot(&id).await.unwrap(), None);
    assert_eq!(store.get_run(&id).await.unwrap().map(|r| r.status), Some(AgentStatus::Running));
}

// Flow control (see `store::queue`): per-key limits, round robin between keys, start times
// and debounce.

/// `n` runs each of keys `keys` of `agent`, submitted key after key (A×n, then B×n, ...),
/// each key limited to `limit` at once; their ids, `{agent}-{key}{i}`.
async fn submit_keyed(store: &dyn CheckpointStore, agent: &str, keys: &[&str], n: usize, limit: u32) {
    let mut created = 1_000;
    for key in keys {
        for i in 1..=n {
            let mut s = Submission::new(format!("{agent}-{key}{i}"), agent, "h", format!("{{\"key\":\"{key}\"}}"))
                .flow_key(*key)
                .flow_limit(limit);
            s.created_ms = created;
            created += 1;
            assert!(store.submit_run(&s).await.unwrap().created);
        }
    }
}

fn ask(owner: &str, agent: &str, limit: usize) -> ClaimNext {
    ClaimNext::new(owner, Duration::from_secs(60), limit)
        .serving(Served { agent: agent.into(), graph_hash: "h".into() })
}

/// The ids of runs claimed, without their agent's prefix.
fn claimed(agent: &str, runs: &[NextRun]) -> Vec<String> {
    runs.iter().map(|r| r.row.run_id.trim_start_matches(&format!("{agent}-")).to_owned()).collect()
}

async fn finish(store: &dyn CheckpointStore, run: &NextRun) {
    let done = run.row.clone().with_status(AgentStatus::Completed, now_ms());
    store.upsert_run(&done).await.unwrap();
}

async fn flow(store: &dyn CheckpointStore, tag: &str) {
    // One at a time, nothing ending: round robin between keys, each key stopping at its
    // limit of 2, whatever the order of submission.
    let agent = format!("{tag}-rr");
    submit_keyed(store, &agent, &["A", "B", "C"], 5, 2).await;
    let mut order = Vec::new();
    let mut held = Vec::new();
    loop {
        let got = store.claim_next(&ask(&format!("w{}", order.len()), &agent, 1)).await.unwrap();
        let Some(next) = got.into_iter().next() else { break };
        order.extend(claimed(&agent, std::slice::from_ref(&next)));
        held.push(next);
    }
    assert_eq!(order, ["A1", "B1", "C1", "A2", "B2", "C2"], "{tag}");
    // A run ending makes room for its key's next, and only that key's.
    finish(store, &held[0]).await;
    let got = store.claim_next(&ask("w-next", &agent, 10)).await.unwrap();
    assert_eq!(claimed(&agent, &got), ["A3"], "{tag}");
    // A run whose lease ended no longer counts, and is taken again before the key's queued
    // runs (it is older).
    store.release_run(&held[1].row.run_id, held[1].row.epoch).await.unwrap();
    let got = store.claim_next(&ask("w-again", &agent, 10)).await.unwrap();
    assert_eq!(claimed(&agent, &got), ["B1"], "{tag}");
    assert_eq!(got[0].row.epoch, 2, "{tag}");

    // One claim of many at once takes the same order and keeps the limits.
    let agent = format!("{tag}-batch");
    submit_keyed(store, &agent, &["A", "B", "C"], 5, 2).await;
    let got = store.claim_next(&ask("w", &agent, 100)).await.unwrap();
    assert_eq!(claimed(&agent, &got), ["A1", "B1", "C1", "A2", "B2", "C2"], "{tag}");

    // A run without a key ranks first among its age (position 0): interleaved with the
    // keys' first runs.
    let agent = format!("{tag}-mixed");
    submit_keyed(store, &agent, &["A"], 3, 1).await;
    let mut plain = Submission::new(format!("{agent}-plain"), &agent, "h", "{}");
    plain.created_ms = 2_000;
    store.submit_run(&plain).await.unwrap();
    let got = store.claim_next(&ask("w", &agent, 100)).await.unwrap();
    assert_eq!(claimed(&agent, &got), ["A1", "plain"], "{tag}");

    // A singleton per key: limit 1.
    let agent = format!("{tag}-single");
    submit_keyed(store, &agent, &["K"], 3, 1).await;
    let first = store.claim_next(&ask("w1", &agent, 10)).await.unwrap();
    assert_eq!(claimed(&agent, &first), ["K1"], "{tag}");
    assert!(store.claim_next(&ask("w2", &agent, 10)).await.unwrap().is_empty(), "{tag}: one at a time");
    finish(store, &first[0]).await;
    assert_eq!(claimed(&agent, &store.claim_next(&ask("w2", &agent, 10)).await.unwrap()), ["K2"], "{tag}");

    // A start time: not taken before it, by the store's clock.
    let agent = format!("{tag}-later");
    let later = Submission::new(format!("{agent}-1"), &agent, "h", "{}").start_after(Duration::from_millis(300));
    let t0 = Instant::now();
    store.submit_run(&later).await.unwrap();
    assert!(store.claim_next(&ask("w", &agent, 10)).await.unwrap().is_empty(), "{tag}: not yet");
    let got = claim_within(store, &ask("w", &agent, 10), Duration::from_secs(5)).await;
    assert!(t0.elapsed() >= Duration::from_millis(290), "{tag}: taken after {:?}", t0.elapsed());
    assert_eq!(claimed(&agent, &got), ["1"], "{tag}");

    // Debounce: submissions within the window make one run, with the last input, whose start
    // each pushes to a window from it.
    let agent = format!("{tag}-debounce");
    let window = Duration::from_millis(400);
    let debounced = |n: u32| {
        Submission::new(format!("{agent}-{n}"), &agent, "h", format!("{{\"n\":{n}}}")).flow_key("D").debounce(window)
    };
    let t0 = Instant::now();
    let one = store.submit_run(&debounced(1)).await.unwrap();
    assert!(one.created, "{tag}");
    let two = store.submit_run(&debounced(2)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    let three = store.submit_run(&debounced(3)).await.unwrap();
    let t3 = Instant::now();
    assert_eq!((two.created, three.created), (false, false), "{tag}");
    assert_eq!(
        (two.run.run_id.as_str(), three.run.run_id.as_str()),
        (one.run.run_id.as_str(), one.run.run_id.as_str())
    );
    assert_eq!(store.run_input(&one.run.run_id).await.unwrap().as_deref(), Some("{\"n\":3}"), "{tag}");
    // Past the first submission's window, not past the last's: still waiting.
    while t0.elapsed() < Duration::from_millis(450) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if t3.elapsed() < Duration::from_millis(350) {
        assert!(store.claim_next(&ask("w", &agent, 10)).await.unwrap().is_empty(), "{tag}: pushed");
    }
    let got = claim_within(store, &ask("w", &agent, 10), Duration::from_secs(5)).await;
    assert!(t3.elapsed() >= Duration::from_millis(390), "{tag}: taken {:?} after the last", t3.elapsed());
    assert_eq!(claimed(&agent, &got), ["1"], "{tag}");
    assert_eq!(got[0].input.as_deref(), Some("{\"n\":3}"), "{tag}: the last input");
    let runs = store.list_runs(&RunQuery { agent: Some(agent.clone()), ..RunQuery::default() }).await.unwrap();
    assert_eq!(runs.len(), 1, "{tag}: one run");
    // Once started, a debounced submission makes a new run.
    let four = store.submit_run(&debounced(4)).await.unwrap();
    assert!(four.created && four.run.run_id != one.run.run_id, "{tag}");
    // Debounce without a key cannot find its run: refused, nothing written.
    let keyless = Submission::new(format!("{agent}-5"), &agent, "h", "{}").debounce(window);
    assert!(store.submit_run(&keyless).await.is_err(), "{tag}");
    assert_eq!(store.get_run(&format!("{agent}-5")).await.unwrap(), None, "{tag}");
}

/// The runs `ask` takes, polling until some come (at most `within`).
async fn claim_within(store: &dyn CheckpointStore, ask: &ClaimNext, within: Duration) -> Vec<NextRun> {
    let give_up = Instant::now() + within;
    loop {
        let got = store.claim_next(ask).await.unwrap();
        if !got.is_empty() {
            return got;
        }
        assert!(Instant::now() < give_up, "nothing to take within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Concurrent claims of many workers never put a key over its limit: 4 workers, 12 runs
/// of one key limited to 3, each worker claiming 2 at a time and finishing what it took
/// after a short while; at no claim are more than 3 running.
async fn flow_concurrent(handles: Vec<Arc<dyn CheckpointStore>>, tag: &str) {
    let agent = format!("{tag}-flow-concurrent");
    submit_keyed(&*handles[0], &agent, &["K"], 12, 3).await;
    let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (w, h) in handles.iter().enumerate() {
        let (h, agent, running, most, done) = (h.clone(), agent.clone(), running.clone(), most.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let give_up = Instant::now() + Duration::from_secs(30);
            while done.load(std::sync::atomic::Ordering::SeqCst) < 12 {
                assert!(Instant::now() < give_up, "the runs never all ran");
                let got = h.claim_next(&ask(&format!("w{w}"), &agent, 2)).await.unwrap();
                let now = running.fetch_add(got.len(), std::sync::atomic::Ordering::SeqCst) + got.len();
                most.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(15)).await;
                for next in &got {
                    // Counted out before the store hears of it: the count never lags behind.
                    running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    finish(&*h, next).await;
                    done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                if got.is_empty() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let most = most.load(std::sync::atomic::Ordering::SeqCst);
    assert!((1..=3).contains(&most), "{tag}: at most 3 at once, saw {most}");
}

/// Handles on one store (clones, files opened twice, several pools): rounds of concurrent
/// claims of one released run, one per handle and owner; exactly one wins each round.
async fn exclusive(handles: Vec<Arc<dyn CheckpointStore>>, tag: &str) {
    let id = format!("{tag}-contested");
    let first = taken(
        handles[0].claim_run(&claim(&id, "w0").create(run(&id, "agent", AgentStatus::Running, 1, 1))).await.unwrap(),
    );
    handles[0].release_run(&id, first.epoch).await.unwrap();
    for round in 0..10u64 {
        let tasks: Vec<_> = handles
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let (h, id) = (h.clone(), id.clone());
                tokio::spawn(async move { h.claim_run(&claim(&id, &format!("w{i}"))).await.unwrap() })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Claim::Taken(r) => winners.push(r),
                Claim::Held(r) => assert!(r.owner.is_some()),
                other => panic!("round {round}: {other:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let winner = &winners[0];
        assert_eq!(winner.epoch, round + 2, "each claim raises the epoch by one");
        assert_eq!(handles[0].get_run(&id).await.unwrap().as_ref(), Some(winner));
        handles[round as usize % handles.len()].release_run(&id, winner.epoch).await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// The suite, per backend.
// ---------------------------------------------------------------------------------------

mod memory {
    use super::*;
    use agent_runtime::store::MemoryStore;

    macro_rules! conformance {
        ($($section:ident),* $(,)?) => {$(
            #[tokio::test]
            async fn $section() {
                super::$section(&MemoryStore::new(), "memory").await;
            }
        )*};
    }
    conformance!(
        runs,
        append,
        owned_append,
        snapshots,
        inputs,
        delete,
        retention_snapshots,
        retention_runs,
        ownership,
        lease_expiry,
        control,
        state_cancels,
        lineage,
        signals,
        timers,
        schedules,
        flow
    );

    #[tokio::test]
    async fn clones_share_their_data() {
        let one = MemoryStore::new();
        let two = one.clone();
        super::shared(&one, &two, "memory").await;
        assert_eq!(one.kind(), "memory");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_claims_have_one_winner() {
        let store = MemoryStore::new();
        let handles = (0..8).map(|_| Arc::new(store.clone()) as Arc<dyn CheckpointStore>).collect();
        super::exclusive(handles, "memory").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_claims_keep_a_keys_limit() {
        let store = MemoryStore::new();
        let handles = (0..4).map(|_| Arc::new(store.clone()) as Arc<dyn CheckpointStore>).collect();
        super::flow_concurrent(handles, "memory").await;
    }
}

mod sqlite {
    use super::*;
    use agent_runtime::store::SqliteStore;
    use rusqlite::Connection;
    use tempfile::TempDir;

    /// A store on a new file in a new temporary directory (removed when the `TempDir` drops).
    pub(super) fn temp_store() -> (SqliteStore, TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.db");
        (SqliteStore::open(&path).unwrap(), dir, path)
    }

    macro_rules! conformance {
        ($($section:ident),* $(,)?) => {$(
            #[tokio::test]
            async fn $section() {
                let (store, _dir, _) = temp_store();
                super::$section(&store, "sqlite").await;
            }
        )*};
    }
    conformance!(
        runs,
        append,
        owned_append,
        snapshots,
        inputs,
        delete,
        retention_snapshots,
        retention_runs,
        ownership,
        lease_expiry,
        control,
        state_cancels,
        lineage,
        signals,
        timers,
        schedules,
        flow
    );

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_claims_through_several_connections_have_one_winner() {
        let (store, _dir, path) = temp_store();
        let mut handles: Vec<Arc<dyn CheckpointStore>> = vec![Arc::new(store)];
        handles.extend((0..7).map(|_| Arc::new(SqliteStore::open(&path).unwrap()) as Arc<dyn CheckpointStore>));
        super::exclusive(handles, "sqlite").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_claims_through_several_connections_keep_a_keys_limit() {
        let (store, _dir, path) = temp_store();
        let mut handles: Vec<Arc<dyn CheckpointStore>> = vec![Arc::new(store)];
        handles.extend((0..3).map(|_| Arc::new(SqliteStore::open(&path).unwrap()) as Arc<dyn CheckpointStore>));
        super::flow_concurrent(handles, "sqlite").await;
    }

    #[tokio::test]
    async fn the_in_memory_database_conforms_too() {
        let store = SqliteStore::open_in_memory().unwrap();
        super::append(&store, "sqlite-mem").await;
        super::retention_runs(&SqliteStore::open_in_memory().unwrap(), "sqlite-mem").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_stores_on_one_file_see_each_others_writes() {
        let (one, _dir, path) = temp_store();
        let two = SqliteStore::open(&path).unwrap();
        super::shared(&one, &two, "sqlite").await;
        // And a clone shares its store's connection.
        super::shared(&one, &one.clone(), "sqlite-clone").await;
    }

    #[tokio::test]
    async fn the_file_is_in_wal_mode() {
        let (store, _dir, path) = temp_store();
        assert_eq!(store.kind(), "sqlite");
        let raw = Connection::open(&path).unwrap();
        let mode: String = raw.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode.to_lowercase(), "wal");
    }

    #[tokio::test]
    async fn reopening_keeps_the_data_and_does_not_migrate_again() {
        let (store, _dir, path) = temp_store();
        let r = run("reopen", "agent", AgentStatus::Paused, 1, 2);
        store.append(&r, &entries(1..=3)).await.unwrap();
        store.save_snapshot("reopen", 0, &snapshot(3, 4)).await.unwrap();
        drop(store);

        let raw = Connection::open(&path).unwrap();
        let schema_cookie = |c: &Connection| c.query_row("PRAGMA schema_version", [], |r| r.get::<_, i64>(0)).unwrap();
        let version =
            |c: &Connection| c.query_row("SELECT version FROM agent_schema", [], |r| r.get::<_, i64>(0)).unwrap();
        let (cookie, v) = (schema_cookie(&raw), version(&raw));
        assert!(v >= 1);

        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.get_run("reopen").await.unwrap(), Some(r.clone()));
        assert_eq!(store.journal("reopen", 0).await.unwrap(), entries(1..=3));
        assert_eq!(store.latest_snapshot("reopen").await.unwrap(), Some(snapshot(3, 4)));
        assert_conflict(store.append(&r, &entries([3])).await, "reopen", 3, 3);
        // No table was created or altered (SQLite bumps this cookie on any schema change).
        assert_eq!(schema_cookie(&raw), cookie);
        assert_eq!(version(&raw), v);
        let rows: i64 = raw.query_row("SELECT count(*) FROM agent_schema", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 1);
    }

    #[tokio::test]
    async fn a_database_from_a_newer_version_is_refused() {
        let (store, _dir, path) = temp_store();
        store.upsert_run(&run("kept", "agent", AgentStatus::Running, 1, 1)).await.unwrap();
        drop(store);
        let raw = Connection::open(&path).unwrap();
        let known: u32 = raw.query_row("SELECT version FROM agent_schema", [], |r| r.get(0)).unwrap();
        raw.execute("UPDATE agent_schema SET version = ?1", [known + 7]).unwrap();
        let cookie: i64 = raw.query_row("PRAGMA schema_version", [], |r| r.get(0)).unwrap();

        match SqliteStore::open(&path) {
            Err(StoreError::SchemaTooNew { store, found, supported }) => {
                assert_eq!((store, found, supported), ("sqlite", known + 7, known));
            }
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
        // Left as it was.
        let v: u32 = raw.query_row("SELECT version FROM agent_schema", [], |r| r.get(0)).unwrap();
        assert_eq!(v, known + 7);
        assert_eq!(raw.query_row("PRAGMA schema_version", [], |r| r.get::<_, i64>(0)).unwrap(), cookie);
        let message = SqliteStore::open(&path).unwrap_err().to_string();
        assert!(message.contains(&format!("schema version {}", known + 7)), "{message}");
    }

    #[tokio::test]
    async fn corrupt_records_are_errors_not_panics() {
        let (store, _dir, path) = temp_store();
        let agent = "corrupt-agent";
        for id in ["bad-status", "int-status", "bad-payload", "bad-last", "bad-snapshot", "fine"] {
            store.append(&run(id, agent, AgentStatus::Running, 1, 1), &entries(1..=2)).await.unwrap();
        }
        store.put_input(&input("fine", "q", 1)).await.unwrap();
        let raw = Connection::open(&path).unwrap();
        raw.execute("UPDATE agent_runs SET status = 'Done' WHERE run_id = 'bad-status'", []).unwrap();
        raw.execute("UPDATE agent_runs SET status = 3 WHERE run_id = 'int-status'", []).unwrap();
        raw.execute("UPDATE agent_journal SET payload = x'00ff' WHERE run_id = 'bad-payload' AND seq = 2", []).unwrap();
        raw.execute("UPDATE agent_runs SET last_seq = -1 WHERE run_id = 'bad-last'", []).unwrap();
        store.save_snapshot("bad-snapshot", 0, &snapshot(2, 1)).await.unwrap();
        raw.execute("UPDATE agent_snapshots SET seq = -2 WHERE run_id = 'bad-snapshot'", []).unwrap();
        raw.execute("UPDATE agent_inputs SET timeout_ms = -1 WHERE run_id = 'fine'", []).unwrap();

        let corrupt = |r: Result<_, StoreError>, what: &str| match r {
            Err(StoreError::Corrupt { store, message }) => {
                assert_eq!(store, "sqlite");
                message
            }
            other => panic!("{what}: expected Corrupt, got {other:?}"),
        };
        let m = corrupt(store.get_run("bad-status").await.map(drop), "bad status");
        assert!(m.contains("bad-status") && m.contains("Done"), "{m}");
        corrupt(store.get_run("int-status").await.map(drop), "integer status");
        corrupt(store.list_runs(&RunQuery::default()).await.map(drop), "list");
        let q = RunQuery { agent: Some(agent.into()), status: Some(AgentStatus::Running), ..RunQuery::default() };
        assert_eq!(
            ids(&store.list_runs(&q).await.unwrap()),
            ["bad-last", "bad-payload", "bad-snapshot", "fine"],
            "the filter skips bad rows"
        );
        corrupt(store.journal("bad-payload", 0).await.map(drop), "a blob payload");
        assert_eq!(seqs(&store.journal("bad-payload", 2).await.unwrap()), Vec::<u64>::new(), "only the bad row fails");
        let m =
            corrupt(store.append(&run("bad-last", agent, AgentStatus::Running, 1, 2), &entries([3])).await, "last seq");
        assert!(m.contains("append to run bad-last"), "{m}");
        assert_eq!(store.get_run("bad-last").await.unwrap().map(|r| r.updated_ms), Some(1), "nothing written");
        corrupt(store.latest_snapshot("bad-snapshot").await.map(drop), "negative snapshot seq");
        corrupt(store.inputs(None, false).await.map(drop), "negative timeout");
        // The store still works.
        assert_eq!(store.get_run("fine").await.unwrap().map(|r| r.status), Some(AgentStatus::Running));
        assert_eq!(seqs(&store.journal("fine", 0).await.unwrap()), [1, 2]);

        // Lineage: a kind that is not one, a negative parent seq; read alone or listed.
        raw.execute_batch(
            "INSERT INTO agent_lineage (run_id, parent_run_id, parent_seq, kind, created_ms) VALUES
                 ('adopted', 'p', NULL, 'adopted', 1), ('before-zero', 'q', -1, 'fork', 1);",
        )
        .unwrap();
        let m = corrupt(store.lineage("adopted").await.map(drop), "unknown lineage kind");
        assert!(m.contains("unknown lineage kind") && m.contains("adopted"), "{m}");
        corrupt(store.descendants("p").await.map(drop), "unknown lineage kind, listed");
        let m = corrupt(store.lineage("before-zero").await.map(drop), "negative parent seq");
        assert!(m.contains("parent seq"), "{m}");
        corrupt(store.descendants("q").await.map(drop), "negative parent seq, listed");

        // Signals and timers: a negative seq, a wake time that is not a number. A take that
        // reads a bad signal takes nothing.
        raw.execute_batch(
            "INSERT INTO agent_signals (seq, run_id, signal_id, name, payload, sent_ms)
                 VALUES (-1, 'fine', 'bad-seq', 'pay', '{}', 1);
             INSERT INTO agent_timers (run_id, timer_key, wake_ms) VALUES ('fine', 's/sleep/0', 'soon');",
        )
        .unwrap();
        let m = corrupt(store.signals("fine").await.map(drop), "negative signal seq");
        assert!(m.contains("bad-seq") && m.contains("seq"), "{m}");
        corrupt(store.take_signal("fine", "pay", "s/signal/0", 1, 0).await.map(drop), "negative signal seq, taken");
        let taken: Option<String> =
            raw.query_row("SELECT taken_by FROM agent_signals WHERE signal_id = 'bad-seq'", [], |r| r.get(0)).unwrap();
        assert_eq!(taken, None, "nothing taken");
        corrupt(store.timers("fine").await.map(drop), "a wake time of text");

        // Schedules: a negative version, a cursor that is not a number; listed alone or with
        // the others. A move from the bad version moves nothing.
        raw.execute_batch(
            "INSERT INTO agent_schedules (agent, name, cron, timezone, overlap, catch_up_ms, input, paused,
                 created_ms, updated_ms, next_tick_ms, version) VALUES
                 ('minus', 'bad-version', '0 3 * * *', 'UTC', 'skip', 0, '{}', 0, 1, 1, 1, -1),
                 ('text', 'bad-tick', '0 3 * * *', 'UTC', 'skip', 0, '{}', 0, 1, 1, 'soon', 1);",
        )
        .unwrap();
        let m = corrupt(store.schedules(Some("minus")).await.map(drop), "negative schedule version");
        assert!(m.contains("bad-version") && m.contains("version"), "{m}");
        corrupt(store.schedules(Some("text")).await.map(drop), "a tick of text");
        corrupt(store.schedules(None).await.map(drop), "bad schedules, listed");
        let mut moved = agent_runtime::store::ScheduleRecord::new("minus", "bad-version", "0 3 * * *", 1);
        moved.version = 1;
        let moved = agent_runtime::store::ScheduleAdvance::of(&moved, 2, 2);
        assert!(!store.advance_schedule(&moved).await.unwrap(), "not its version");
        let tick: i64 = raw
            .query_row("SELECT next_tick_ms FROM agent_schedules WHERE name = 'bad-version'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(tick, 1, "nothing moved");
    }

    #[test]
    fn opening_a_bad_path_or_a_non_database_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-dir").join("runs.db");
        let message = SqliteStore::open(&missing).unwrap_err().to_string();
        assert!(message.contains("no-such-dir"), "{message}");

        let garbage = dir.path().join("garbage.db");
        std::fs::write(&garbage, vec![0x5a; 8192]).unwrap();
        assert!(SqliteStore::open(&garbage).is_err());
    }

    /// A call runs on the caller's thread only while nobody else writes the file: one that
    /// finds another connection's transaction waits for it on the store's thread, so the
    /// executor (here a single thread) goes on meanwhile, and the call succeeds once the
    /// lock is released, with nothing lost. Were it to wait on the caller's thread, the
    /// yields below would return only after the busy timeout, and the call would have
    /// finished (failed) by then.
    #[tokio::test(flavor = "current_thread")]
    async fn a_call_that_finds_the_file_locked_waits_off_the_executor() {
        let (store, _dir, path) = temp_store();
        let r = run("locked", "agent", AgentStatus::Running, 1, 1);
        store.upsert_run(&r).await.unwrap();
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let call = tokio::spawn({
            let store = store.clone();
            async move { store.append(&run("locked", "agent", AgentStatus::Running, 1, 2), &entries([1, 2])).await }
        });
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert!(!call.is_finished(), "the append waits for the other transaction");
        other.execute_batch("COMMIT").unwrap();
        call.await.unwrap().unwrap();
        assert_eq!(seqs(&store.journal("locked", 0).await.unwrap()), [1, 2]);
        assert_eq!(store.get_run("locked").await.unwrap().map(|r| r.updated_ms), Some(2));
        // With the file free again, calls run at once and still work.
        store.append(&run("locked", "agent", AgentStatus::Completed, 1, 3), &entries([3])).await.unwrap();
        assert_eq!(store.get_run("locked").await.unwrap().map(|r| r.status), Some(AgentStatus::Completed));
    }

    /// Checkpoints of the WAL run on the store's thread, not in the callers' commits, and
    /// still keep the log bounded: 3,000 appends of 4 KiB entries would grow it past 36 MiB
    /// were it never checkpointed; it stays near SQLite's usual 1,000 pages (4 MiB).
    #[tokio::test]
    async fn the_wal_is_checkpointed_and_stays_bounded() {
        let (store, _dir, path) = temp_store();
        let r = run("big", "agent", AgentStatus::Running, 1, 1);
        for seq in 1..=3_000u64 {
            let entry = JournalEntry { seq, state: "s".into(), payload: "x".repeat(4096), at_ms: 1 };
            store.append(&r, &[entry]).await.unwrap();
        }
        let wal = std::fs::metadata(path.with_extension("db-wal")).map(|m| m.len()).unwrap_or(0);
        assert!(wal < 8 << 20, "the WAL grew to {wal} bytes");
        assert_eq!(store.journal("big", 2_990).await.unwrap().len(), 10);
    }

    /// Not a benchmark: prints what a small append costs, for a look with `--nocapture`.
    #[tokio::test]
    async fn cost_of_a_small_append() {
        let (store, _dir, _) = temp_store();
        let r = run("timed", "agent", AgentStatus::Running, 1, 1);
        let batches = 2_000u64;
        let per_batch = 3u64;
        let start = Instant::now();
        for b in 0..batches {
            store.append(&r, &entries(b * per_batch + 1..=(b + 1) * per_batch)).await.unwrap();
        }
        let elapsed = start.elapsed();
        assert_eq!(store.journal("timed", 0).await.unwrap().len() as u64, batches * per_batch);
        eprintln!(
            "sqlite append of {per_batch} entries (WAL, synchronous=NORMAL): {:.1} µs per batch over {batches} batches",
            elapsed.as_secs_f64() * 1e6 / batches as f64
        );
    }
}

/// The rule every PostgreSQL test follows (`common/pg.rs`): a URL is used; without one the
/// test is skipped, except under CI, where it fails.
#[test]
fn postgres_tests_skip_without_a_url_but_fail_under_ci() {
    use common::pg::decide;
    let url = || Some("postgres://postgres@127.0.0.1:5432/test".to_owned());
    assert_eq!(decide(url(), Some("true".into())), Ok(url()));
    assert_eq!(decide(url(), None), Ok(url()));
    assert_eq!(decide(None, None), Ok(None));
    assert_eq!(decide(Some(String::new()), None), Ok(None));
    assert_eq!(decide(None, Some("false".into())), Ok(None));
    assert_eq!(decide(None, Some("0".into())), Ok(None));
    let err = decide(None, Some("true".into())).unwrap_err();
    assert!(err.contains("AGENT_TEST_POSTGRES_URL"), "{err}");
    assert!(decide(Some(String::new()), Some("1".into())).is_err());
}

mod postgres {
    use super::*;
    use agent_runtime::store::PostgresStore;

    use crate::common::pg::url;

    async fn raw(url: &str) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    }

    /// Owners' appends of many runs at once share commits (group commit) and keep their own
    /// outcomes: a fenced run in the crowd writes nothing and is told so, a refused `seq` is
    /// a conflict, and every other run's entries are there, in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn appends_of_many_owners_at_once_each_keep_their_own_outcome() {
        with_schema("group_commit", |url, schema| async move {
            let store = Arc::new(PostgresStore::connect_with_schema(&url, &schema).await.unwrap());
            let mut rows = Vec::new();
            for n in 0..60 {
                let fresh = run(&format!("g{n}"), "group", AgentStatus::Running, 1, 1);
                rows.push(taken(store.claim_run(&claim(&format!("g{n}"), "me").create(fresh)).await.unwrap()));
            }
            // Run g0 is taken over: its old owner is fenced.
            store.release_run("g0", 1).await.unwrap();
            taken(store.claim_run(&claim("g0", "them")).await.unwrap());
            let mut tasks = Vec::new();
            for (n, row) in rows.into_iter().enumerate() {
                let store = store.clone();
                tasks.push(tokio::spawn(async move {
                    let mut outcomes = Vec::new();
                    for round in 0..5u64 {
                        // g1 repeats a `seq` in its last round: a conflict of its own.
                        let seq = if n == 1 && round == 4 { 2 * round } else { 2 * round + 1 };
                        outcomes.push(store.append(&row, &entries([seq, seq + 1])).await);
                    }
                    (n, outcomes)
                }));
            }
            for t in tasks {
                let (n, outcomes) = t.await.unwrap();
                let id = format!("g{n}");
                match n {
                    0 => {
                        for o in outcomes {
                            assert_fenced(o, &id, 1, 2);
                        }
                        assert!(store.journal(&id, 0).await.unwrap().is_empty());
                    }
                    1 => {
                        assert!(outcomes[..4].iter().all(Result::is_ok));
                        assert_conflict(outcomes.into_iter().next_back().unwrap(), &id, 8, 8);
                        assert_eq!(seqs(&store.journal(&id, 0).await.unwrap()), (1..=8).collect::<Vec<_>>());
                    }
                    _ => {
                        assert!(outcomes.iter().all(Result::is_ok), "{id}: {outcomes:?}");
                        assert_eq!(seqs(&store.journal(&id, 0).await.unwrap()), (1..=10).collect::<Vec<_>>());
                    }
                }
            }
        })
        .await;
    }

    /// Run `body` on a store in a schema of its own, dropped afterwards whatever happens.
    async fn with_schema<F, Fut>(test: &str, body: F)
    where
        F: FnOnce(String, String) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(url) = url(test) else { return };
        let schema = format!("agent_test_{test}_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let outcome = tokio::spawn(body(url.clone(), schema.clone())).await;
        crate::common::pg::drop_schema(&url, &schema).await;
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    }

    macro_rules! conformance {
        ($($section:ident),* $(,)?) => {$(
            #[tokio::test]
            async fn $section() {
                with_schema(stringify!($section), |url, schema| async move {
                    let store = PostgresStore::connect_with_schema(&url, &schema).await.unwrap();
                    super::$section(&store, "postgres").await;
                })
                .await;
            }
        )*};
    }
    conformance!(
        runs,
        append,
        owned_append,
        snapshots,
        inputs,
        delete,
        retention_snapshots,
        retention_runs,
        ownership,
        lease_expiry,
        control,
        state_cancels,
        lineage,
        signals,
        timers,
        schedules,
        flow
    );

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_stores_on_one_schema_see_each_others_writes() {
        with_schema("shared", |url, schema| async move {
            let one = PostgresStore::connect_with_schema(&url, &schema).await.unwrap();
            let two = PostgresStore::connect_with_schema(&url, &schema).await.unwrap();
            assert_eq!(one.kind(), "postgres");
            super::shared(&one, &two, "postgres").await;
            // A clone shares the pool; concurrent calls use several connections.
            super::shared(&one, &one.clone(), "postgres-clone").await;
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_claims_through_several_pools_have_one_winner() {
        with_schema("exclusive", |url, schema| async move {
            let mut handles: Vec<Arc<dyn CheckpointStore>> = Vec::new();
            for _ in 0..8 {
                handles.push(Arc::new(PostgresStore::connect_with_schema(&url, &schema).await.unwrap()));
            }
            super::exclusive(handles, "postgres").await;
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_claims_through_several_pools_keep_a_keys_limit() {
        with_schema("flow_concurrent", |url, schema| async move {
            let mut handles: Vec<Arc<dyn CheckpointStore>> = Vec::new();
            for _ in 0..4 {
                handles.push(Arc::new(PostgresStore::connect_with_schema(&url, &schema).await.unwrap()));
            }
            super::flow_concurrent(handles, "postgres").await;
        })
        .await;
    }

    #[tokio::test]
    async fn reconnecting_keeps_the_data_and_does_not_migrate_again() {
        with_schema("reconnect", |url, schema| async move {
            let store = PostgresStore::connect_with_schema(&url, &schema).await.unwrap();
            let r = run("reconnect", "agent", AgentStatus::Paused, 1, 2);
            store.append(&r, &entries(1..=3)).await.unwrap();
            drop(store);
            let client = raw(&url).await;
            let tables = "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                          WHERE n.nspname = $1";
            let before: i64 = client.query_one(tables, &[&schema]).await.unwrap().get(0);

            let store = PostgresStore::connect_with_schema(&url, &schema).await.unwrap();
            assert_eq!(store.get_run("reconnect").await.unwrap(), Some(r));
            assert_eq!(store.journal("reconnect", 0).await.unwrap(), entries(1..=3));
            let after: i64 = client.query_one(tables, &[&schema]).await.unwrap().get(0);
            assert_eq!(before, after);
            let rows: i64 =
                client.query_one(&format!("SELECT count(*) FROM \"{schema}\".agent_schema"), &[]).await.unwrap().get(0);
            assert_eq!(rows, 1);
        })
        .await;
    }

    #[tokio::test]
    async fn a_database_from_a_newer_version_is_refused() {
        with_schema("too_new", |url, schema| async move {
            let store = PostgresStore::connect_with_schema(&url, &schema).await.unwrap();
            drop(store);
            let client = raw(&url).await;
            let table = format!("\"{schema}\".agent_schema");
            let known: i32 = client.query_one(&format!("SELECT version FROM {table}"), &[]).await.unwrap().get(0);
            client.execute(&format!("UPDATE {table} SET version = $1"), &[&(known + 3)]).await.unwrap();
            match PostgresStore::connect_with_schema(&url, &schema).await {
                Err(StoreError::SchemaTooNew { store, found, supported }) => {
                    assert_eq!((store, found, supported), ("postgres", known as u32 + 3, known as u32));
                }
                other => panic!("expected SchemaTooNew, got {other:?}"),
            }
            let v: i32 = client.query_one(&format!("SELECT version FROM {table}"), &[]).await.unwrap().get(0);
            assert_eq!(v, known + 3);
        })
        .await;
    }

    #[tokio::test]
    async fn corrupt_records_are_errors_not_panics() {
        with_schema("corrupt", |url, schema| async move {
            let store = PostgresStore::connect_with_schema(&url, &schema).await.unwrap();
            for id in ["bad-status", "bad-last", "bad-snapshot", "fine"] {
                store.append(&run(id, "agent", AgentStatus::Running, 1, 1), &entries(1..=2)).await.unwrap();
            }
            let client = raw(&url).await;
            client
                .batch_execute(&format!(
                    "UPDATE \"{schema}\".agent_runs SET status = 'Done' WHERE run_id = 'bad-status';
                     UPDATE \"{schema}\".agent_runs SET last_seq = -1 WHERE run_id = 'bad-last';
                     INSERT INTO \"{schema}\".agent_snapshots (run_id, seq, taken_ms, data)
                         VALUES ('bad-snapshot', -2, 1, '{{}}');"
                ))
                .await
                .unwrap();
            match store.get_run("bad-status").await {
                Err(StoreError::Corrupt { store, message }) => {
                    assert_eq!(store, "postgres");
                    assert!(message.contains("bad-status") && message.contains("Done"), "{message}");
                }
                other => panic!("expected Corrupt, got {other:?}"),
            }
            assert!(matches!(store.list_runs(&RunQuery::default()).await, Err(StoreError::Corrupt { .. })));
            let bad_last = run("bad-last", "agent", AgentStatus::Running, 1, 2);
            match store.append(&bad_last, &entries([3])).await {
                Err(StoreError::Corrupt { message, .. }) => {
                    assert!(message.contains("append to run bad-last"), "{message}")
                }
                other => panic!("expected Corrupt, got {other:?}"),
            }
            assert_eq!(store.get_run("bad-last").await.unwrap().map(|r| r.updated_ms), Some(1), "nothing written");
            assert!(matches!(store.latest_snapshot("bad-snapshot").await, Err(StoreError::Corrupt { .. })));
            assert_eq!(seqs(&store.journal("fine", 0).await.unwrap()), [1, 2]);

            // Lineage: a kind that is not one, a negative parent seq; read alone or listed.
            client
                .batch_execute(&format!(
                    "INSERT INTO \"{schema}\".agent_lineage (run_id, parent_run_id, parent_seq, kind, created_ms)
                         VALUES ('adopted', 'p', NULL, 'adopted', 1), ('before-zero', 'q', -1, 'fork', 1);"
                ))
                .await
                .unwrap();
            match store.lineage("adopted").await {
                Err(StoreError::Corrupt { message, .. }) => {
                    assert!(message.contains("unknown lineage kind") && message.contains("adopted"), "{message}")
                }
                other => panic!("expected Corrupt, got {other:?}"),
            }
            assert!(matches!(store.descendants("p").await, Err(StoreError::Corrupt { .. })));
            assert!(matches!(store.lineage("before-zero").await, Err(StoreError::Corrupt { .. })));
            assert!(matches!(store.descendants("q").await, Err(StoreError::Corrupt { .. })));

            // Signals: a negative seq, listed or taken (a take that reads it takes nothing).
            client
                .batch_execute(&format!(
                    "INSERT INTO \"{schema}\".agent_signals (run_id, signal_id, seq, name, payload, sent_ms)
                         VALUES ('fine', 'bad-seq', -1, 'pay', '{{}}', 1);"
                ))
                .await
                .unwrap();
            match store.signals("fine").await {
                Err(StoreError::Corrupt { message, .. }) => {
                    assert!(message.contains("bad-seq") && message.contains("seq"), "{message}")
                }
                other => panic!("expected Corrupt, got {other:?}"),
            }
            let take = store.take_signal("fine", "pay", "s/signal/0", 1, 0).await;
            assert!(matches!(take, Err(StoreError::Corrupt { .. })), "{take:?}");
            let taken: Option<String> = client
                .query_one(&format!("SELECT taken_by FROM \"{schema}\".agent_signals WHERE signal_id = 'bad-seq'"), &[])
                .await
                .unwrap()
                .get(0);
            assert_eq!(taken, None, "nothing taken");

            // Schedules: a negative version, listed alone or with the others.
            client
                .batch_execute(&format!(
                    "INSERT INTO \"{schema}\".agent_schedules (agent, name, cron, timezone, overlap, catch_up_ms,
                         input, paused, created_ms, updated_ms, next_tick_ms, version)
                         VALUES ('minus', 'bad-version', '0 3 * * *', 'UTC', 'skip', 0, '{{}}', FALSE, 1, 1, 1, -1);"
                ))
                .await
                .unwrap();
            match store.schedules(Some("minus")).await {
                Err(StoreError::Corrupt { message, .. }) => {
                    assert!(message.contains("bad-version") && message.contains("version"), "{message}")
                }
                other => panic!("expected Corrupt, got {other:?}"),
            }
            assert!(matches!(store.schedules(None).await, Err(StoreError::Corrupt { .. })));
        })
        .await;
    }

    /// Needs no database: nothing listens on port 1.
    #[tokio::test]
    async fn connecting_to_nothing_is_an_error() {
        let err = PostgresStore::connect("postgres://agent:secret-password@127.0.0.1:1/none").await.unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, StoreError::Backend { store: "postgres", .. }), "{message}");
        assert!(message.contains("connect"), "{message}");
        assert!(!message.contains("secret-password"), "{message}");
        assert!(PostgresStore::connect("not a url ===").await.is_err());
    }
}
