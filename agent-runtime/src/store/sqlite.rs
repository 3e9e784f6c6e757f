//! [`SqliteStore`]: a checkpoint store in one SQLite file (bundled SQLite, nothing to install).
//!
//! Invariants:
//! - One connection per store, behind a mutex, with a dedicated thread beside it. A call
//!   whose connection is free runs at once on the caller's thread, with the busy timeout at
//!   zero, so it never waits on an executor thread: it either finishes (a durable run's
//!   commit is then a few tens of microseconds, not a hop to a thread and back) or finds
//!   another process writing (`SQLITE_BUSY`, its transaction rolled back) and is sent to the
//!   store's thread. A call that finds the connection taken is sent to the thread too, which
//!   runs jobs one at a time, in the order they were sent, with the busy timeout, so a
//!   writer waits for another's transaction there, never on the executor. Clones of a store
//!   share the connection and the thread; the thread ends (and closes the connection) when
//!   the last clone is dropped. A job that panics is caught: its caller gets an error and the
//!   store goes on serving the others.
//! - WAL checkpoints (copying the log into the database file, which may sync the disk) never
//!   run on the caller's thread: the connection's automatic checkpoint is off, a WAL hook
//!   notes when the log passed `CHECKPOINT_PAGES`, and from then on calls go to the store's
//!   thread, which runs a passive checkpoint after the first of them. So the log grows
//!   past that size by one commit at most.
//! - Every multi-statement write is one `BEGIN IMMEDIATE` transaction, so several processes
//!   may share a file: the database is in WAL mode (readers never wait for the writer),
//!   `synchronous=NORMAL` (a commit survives a crash of the process; a power loss may lose
//!   the last commits but never corrupts the file), and a busy timeout makes a writer wait
//!   for another's transaction instead of failing.
//! - A run's last journal `seq` is kept in its row, so `append` checks a batch against it in
//!   the same transaction, and retention dropping old entries never re-opens old `seq`s.
//! - Ownership: a claim is one conditional `UPDATE` (or, for a run to create, one `INSERT`
//!   that does nothing when the row exists); every owner's write reads the run's epoch in
//!   its `BEGIN IMMEDIATE` transaction, which holds the file's write lock, so no claim can
//!   slip in between the check and the write. Lease ends are milliseconds by SQLite's clock
//!   (`unixepoch('subsec')`), which processes sharing a file on one machine share.
//! - Requests to cancel a state (`agent_state_cancels`, see `control`): asking is one
//!   `BEGIN IMMEDIATE` transaction (the run checked unfinished, the request inserted); the
//!   owner's poll reads the run's epoch and whether anything is pending without the write
//!   lock, and only when something is takes it: in a `BEGIN IMMEDIATE` transaction, the
//!   epoch checked again and the requests deleted.
//! - Lineage (`agent_lineage`, see [`Lineage`]): recording it is one `INSERT ... ON CONFLICT
//!   DO NOTHING` keyed by the run made, so of two records for one run (from any process)
//!   exactly one is kept and the other refused. `delete_run` and retention delete the run's
//!   own row in their transaction, never its descendants'.
//! - Signals and timers (`agent_signals`, `agent_timers`, see [`SignalRecord`]): a send is
//!   one `BEGIN IMMEDIATE` transaction (the run read, unfinished, and the signal inserted
//!   unless its id is there), so the run cannot finish or be deleted in between. A wait's
//!   take first reads, without the write lock, the run's epoch and whether the wait took a
//!   signal before or one of its name waits (a wait that polls costs one read), and only
//!   then takes the lock: in a `BEGIN IMMEDIATE` transaction, the epoch checked again, the
//!   signal the wait took before read, else the oldest not taken marked taken by it in one
//!   `UPDATE`. Arming a timer is one `BEGIN IMMEDIATE` transaction: the epoch checked, the
//!   timer inserted unless armed, its stored wake time read back. `delete_run` and
//!   retention delete a run's signals and timers in their transaction.
//! - Schedules (`agent_schedules`, see [`ScheduleRecord`]): one row per agent and name.
//!   Adding or replacing one is one `BEGIN IMMEDIATE` transaction (the insert, unless the
//!   row is there; else the update of its definition and cursor, keeping `created_ms` and
//!   `last_run_id`). Pausing, deleting and moving a cursor are one statement each; a move
//!   is an `UPDATE` guarded by the version its worker read, so of concurrent moves exactly
//!   one matches (the others find the version bumped). Every write bumps the version.
//!   Schedules belong to no run: `delete_run` and retention leave them.
//! - Every value read back is checked: a status that is not a status, a lineage kind that is
//!   not one, a negative `seq` (of an entry, a snapshot or a signal; or `parent_seq`), a
//!   negative schedule version or a column of the wrong type is [`StoreError::Corrupt`].

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Row, TransactionBehavior};
use tokio::sync::oneshot;

use super::migrate::{self, backend, finished_sql, status_from_db, u64_from_db, u64_to_db};
use super::run_filter;
use super::{
    ttl_ms, CheckpointStore, Claim, ClaimNext, ClaimRequest, InputRecord, JournalEntry, Lineage, LineageKind, NextRun,
    Retention, RetentionReport, RunControl, RunQuery, RunRecord, ScheduleAdvance, ScheduleRecord, SignalRecord,
    SignalSent, Snapshot, StoreError, StoreFuture, Submission, Submitted, TimerRecord,
};

const STORE: &str = "sqlite";

/// How long a writer on the store's thread waits for another connection's transaction
/// before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// The WAL's size, in pages, past which the store's thread checkpoints it (SQLite's own
/// automatic checkpoint threshold).
const CHECKPOINT_PAGES: i32 = 1000;

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// What the clones of a store and its thread share.
struct Shared {
    conn: Mutex<Connection>,
    /// Set by the WAL hook when the log passed `CHECKPOINT_PAGES`.
    checkpoint_due: Arc<AtomicBool>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A checkpoint store in an SQLite database file. Cloning it is cheap: clones share one
/// connection and its thread. Several processes (or several stores) may open the same file.
#[derive(Clone)]
pub struct SqliteStore {
    jobs: mpsc::Sender<Job>,
    shared: Arc<Shared>,
    location: Arc<str>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("location", &self.location).finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Open (creating it if needed) the database at `path`, and bring its schema up to date.
    ///
    /// This blocks while it opens and migrates the file (waiting, if another process is
    /// writing to it, up to the busy timeout of 10 s): call it at start-up, or from
    /// `spawn_blocking`. Fails with [`StoreError::SchemaTooNew`] if a newer version of `agent`
    /// wrote the file.
    ///
    /// ```no_run
    /// use agent_runtime::store::SqliteStore;
    ///
    /// let store = SqliteStore::open("runs.db")?;
    /// # Ok::<(), agent_runtime::store::StoreError>(())
    /// ```
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref();
        let location = path.display().to_string();
        let what = |step: &str| format!("open {location}: {step}");
        let conn = Connection::open(path).map_err(|e| backend(STORE, &what("open the file"), e))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| backend(STORE, &what("set the busy timeout"), e))?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(|e| backend(STORE, &what("switch to WAL mode"), e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %location, mode, "sqlite store: WAL mode unavailable; other processes may wait longer");
        }
        Self::start(conn, location)
    }

    /// A store in a private in-memory database, gone when the store (and its clones) are
    /// dropped: for tests.
    ///
    /// ```
    /// use agent_runtime::store::{CheckpointStore, RunRecord, SqliteStore};
    /// use agent_runtime::AgentStatus;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), agent_runtime::store::StoreError> {
    /// let store = SqliteStore::open_in_memory()?;
    /// let run = RunRecord::new("run-1", "demo", AgentStatus::Running, 1, 1);
    /// store.upsert_run(&run).await?;
    /// assert_eq!(store.get_run("run-1").await?, Some(run));
    /// # Ok(())
    /// # }
    /// ```
    pub fn open_in_memory() -> Result<SqliteStore, StoreError> {
        let conn = Connection::open_in_memory().map_err(|e| backend(STORE, "open an in-memory database", e))?;
        Self::start(conn, ":memory:".to_owned())
    }

    fn start(mut conn: Connection, location: String) -> Result<SqliteStore, StoreError> {
        let what = |step: &str| format!("open {location}: {step}");
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| backend(STORE, &what("set synchronous=NORMAL"), e))?;
        conn.set_prepared_statement_cache_capacity(64);
        migrate::migrate_sqlite(&mut conn).map_err(|e| match e {
            StoreError::Backend { store, message, source } => {
                StoreError::Backend { store, message: format!("open {location}: {message}"), source }
            }
            other => other,
        })?;
        // Checkpoints run on the store's thread (see the module docs): the hook replaces
        // SQLite's automatic checkpoint and only notes that one is due.
        let checkpoint_due = Arc::new(AtomicBool::new(false));
        let due = checkpoint_due.clone();
        conn.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages: std::ffi::c_int| {
            if pages >= CHECKPOINT_PAGES {
                due.store(true, Ordering::Relaxed);
            }
            Ok(())
        }))
        .map_err(|e| backend(STORE, &what("set the WAL hook"), e))?;
        conn.busy_timeout(Duration::ZERO).map_err(|e| backend(STORE, &what("set the busy timeout"), e))?;
        let shared = Arc::new(Shared { conn: Mutex::new(conn), checkpoint_due });
        let (jobs, rx) = mpsc::channel::<Job>();
        let serving = shared.clone();
        std::thread::Builder::new()
            .name("agent-sqlite".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    let mut conn = serving.lock();
                    // Here, unlike on a caller's thread, a writer may wait for another's
                    // transaction.
                    let _ = conn.busy_timeout(BUSY_TIMEOUT);
                    // A panicking job drops its reply sender: its caller gets an error.
                    let _ = catch_unwind(AssertUnwindSafe(|| job(&mut conn)));
                    checkpoint_if_due(&serving, &conn);
                    let _ = conn.busy_timeout(Duration::ZERO);
                }
            })
            .map_err(|e| backend(STORE, &what("start the store's thread"), e))?;
        Ok(SqliteStore { jobs, shared, location: location.into() })
    }

    /// Run `job`: at once on this thread when the connection is free and no other process
    /// is writing, on the store's thread otherwise (see the module docs). `what` names the
    /// operation, for error messages. A job may run twice (once here, finding the file
    /// busy, then on the thread), so it must leave nothing behind when it fails: every
    /// multi-statement write is one transaction, which its failure rolls back.
    fn call<T, F>(&self, what: String, mut job: F) -> StoreFuture<'_, T>
    where
        T: Send + 'static,
        F: FnMut(&mut Connection) -> Result<T, Fail> + Send + 'static,
    {
        Box::pin(async move {
            // A checkpoint due sends the call to the thread, which runs it and then the
            // checkpoint: the log stops growing here, whoever else keeps the connection busy.
            let due = self.shared.checkpoint_due.load(Ordering::Relaxed);
            if let Some(mut conn) = self.shared.conn.try_lock().ok().filter(|_| !due) {
                match catch_unwind(AssertUnwindSafe(|| job(&mut conn))) {
                    Ok(Err(Fail::Db(e))) if e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy) => {}
                    Ok(result) => return result.map_err(|fail| fail.into_store(&what)),
                    Err(_) => {
                        return Err(StoreError::Backend {
                            store: STORE,
                            message: format!("{what}: the store's call panicked ({})", self.location),
                            source: None,
                        })
                    }
                }
            }
            let (reply, answer) = oneshot::channel();
            self.jobs
                .send(Box::new(move |conn: &mut Connection| {
                    let _ = reply.send(job(conn));
                }))
                .map_err(|_| StoreError::Backend {
                    store: STORE,
                    message: format!("{what}: the store's thread has stopped ({})", self.location),
                    source: None,
                })?;
            match answer.await {
                Ok(result) => result.map_err(|fail| fail.into_store(&what)),
                Err(_) => Err(StoreError::Backend {
                    store: STORE,
                    message: format!("{what}: the store's thread panicked ({})", self.location),
                    source: None,
                }),
            }
        })
    }
}

/// Checkpoint the WAL if the hook said it is due (on the store's thread, which holds `conn`).
fn checkpoint_if_due(shared: &Shared, conn: &Connection) {
    if shared.checkpoint_due.swap(false, Ordering::Relaxed) {
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::debug!(error = %e, "sqlite store: WAL checkpoint failed; the next one retries");
        }
    }
}

/// An error inside a job, before it is given its context.
enum Fail {
    Db(rusqlite::Error),
    Store(StoreError),
}

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Self {
        Fail::Db(e)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

impl Fail {
    fn into_store(self, what: &str) -> StoreError {
        match self {
            Fail::Db(
                e @ (rusqlite::Error::InvalidColumnType(..)
                | rusqlite::Error::FromSqlConversionFailure(..)
                | rusqlite::Error::IntegralValueOutOfRange(..)),
            ) => StoreError::Corrupt { store: STORE, message: format!("{what}: {e}") },
            Fail::Db(e) if e.sqlite_error_code() == Some(ErrorCode::DatabaseCorrupt) => {
                StoreError::Corrupt { store: STORE, message: format!("{what}: {e}") }
            }
            Fail::Db(e) => backend(STORE, what, e),
            Fail::Store(StoreError::Corrupt { store, message }) => {
                StoreError::Corrupt { store, message: format!("{what}: {message}") }
            }
            Fail::Store(e) => e,
        }
    }
}

macro_rules! select_runs {
    ($($rest:literal),*) => {
        concat!(
            "SELECT run_id, agent, status, created_ms, updated_ms, owner, lease_until, epoch FROM agent_runs"
            $(, $rest)*
        )
    };
}

/// SQLite's pieces of a [`RunQuery`]'s statement (see `run_filter`).
const SQLITE: run_filter::Dialect = run_filter::Dialect {
    placeholder: |n| format!("?{n}"),
    contains: |p| format!("instr(run_id, {p}) > 0"),
    run_id_order: "",
};

fn to_sql<'p>(p: &'p run_filter::Param<'_>) -> &'p dyn rusqlite::ToSql {
    match p {
        run_filter::Param::Text(t) => t,
        run_filter::Param::Int(n) => n,
    }
}

/// Now, in milliseconds since the Unix epoch, by SQLite's clock.
macro_rules! now_ms_sql {
    () => {
        "CAST(unixepoch('subsec') * 1000 AS INTEGER)"
    };
}
macro_rules! select_inputs {
    ($($rest:literal),*) => {
        concat!(
            "SELECT run_id, request_id, state, prompt, requested_ms, timeout_ms, default_value,
                answer, answered_ms, defaulted FROM agent_inputs"
            $(, $rest)*
        )
    };
}

macro_rules! select_signals {
    ($($rest:literal),*) => {
        concat!(
            "SELECT run_id, signal_id, name, payload, sent_ms, seq, taken_by, taken_ms FROM agent_signals"
            $(, $rest)*
        )
    };
}

macro_rules! select_schedules {
    ($($rest:literal),*) => {
        concat!(
            "SELECT agent, name, cron, timezone, overlap, catch_up_ms, input, paused, created_ms, updated_ms,
                next_tick_ms, buffered_tick_ms, last_run_id, version FROM agent_schedules"
            $(, $rest)*
        )
    };
}

/// The runs a flow-controlled claim takes (see `queue`), best first: `?1` the graphs served
/// (a JSON array of `[agent, graph_hash]`), `?2` how many at most. A candidate with a key
/// ranks as its key's running runs plus its place among the key's candidates; one beyond its
/// limit is left.
const FLOW_CANDIDATES: &str = concat!(
    "WITH served (agent, graph_hash) AS (
         SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?1)
     ),
     cand AS (
         SELECT run_id, agent, created_ms, flow_key, flow_limit FROM agent_runs
         WHERE status IN ('Idle', 'Running')
           AND (owner IS NULL OR lease_until IS NULL OR lease_until <= ",
    now_ms_sql!(),
    ") AND (not_before_ms IS NULL OR not_before_ms <= ",
    now_ms_sql!(),
    ") AND (agent, graph_hash) IN (SELECT agent, graph_hash FROM served)
     ),
     busy AS (
         SELECT agent, flow_key, count(*) AS n FROM agent_runs
         WHERE flow_key IS NOT NULL AND status NOT IN ",
    finished_sql!(),
    " AND agent IN (SELECT agent FROM served) AND owner IS NOT NULL AND lease_until > ",
    now_ms_sql!(),
    " GROUP BY agent, flow_key
     ),
     ranked AS (
         SELECT c.run_id, c.created_ms, c.flow_limit,
             CASE WHEN c.flow_key IS NULL THEN 0
                  ELSE coalesce(b.n, 0) - 1
                      + row_number() OVER (PARTITION BY c.agent, c.flow_key ORDER BY c.created_ms, c.run_id)
             END AS rank
         FROM cand AS c LEFT JOIN busy AS b ON b.agent = c.agent AND b.flow_key = c.flow_key
     )
     SELECT run_id FROM ranked WHERE flow_limit IS NULL OR rank < flow_limit
     ORDER BY rank, created_ms, run_id LIMIT ?2"
);

/// Whether an agent `ask` serves has an unfinished run with a flow key (the flow index
/// answers): only then does a claim rank by keys.
fn any_keyed(conn: &Connection, ask: &ClaimNext) -> Result<bool, Fail> {
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT EXISTS (SELECT 1 FROM agent_runs WHERE agent = ?1 AND flow_key IS NOT NULL AND status NOT IN ",
        finished_sql!(),
        ")"
    ))?;
    for (i, served) in ask.serves.iter().enumerate() {
        if ask.serves[..i].iter().any(|s| s.agent == served.agent) {
            continue;
        }
        if stmt.query_row([&served.agent], |r| r.get::<_, bool>(0))? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A run's row as stored, to decide how to write it.
struct StoredRun {
    agent: String,
    status: String,
    created_ms: i64,
    last_seq: u64,
    epoch: u64,
}

fn stored_run(conn: &Connection, run_id: &str) -> Result<Option<StoredRun>, Fail> {
    let mut stmt =
        conn.prepare_cached("SELECT agent, status, created_ms, last_seq, epoch FROM agent_runs WHERE run_id = ?1")?;
    let mut rows = stmt.query([run_id])?;
    let Some(row) = rows.next()? else { return Ok(None) };
    Ok(Some(StoredRun {
        agent: row.get(0)?,
        status: row.get(1)?,
        created_ms: row.get(2)?,
        last_seq: u64_from_db(STORE, &format!("run {run_id}: last seq"), row.get(3)?)?,
        epoch: u64_from_db(STORE, &format!("run {run_id}: epoch"), row.get(4)?)?,
    }))
}

/// Check that the owner of `epoch` may write run `run_id`, stored as `stored` (see the
/// store's module docs): its epoch is that one, or it has no row and `epoch` is 0.
fn check_epoch(run_id: &str, stored: Option<&StoredRun>, epoch: u64) -> Result<(), Fail> {
    let current = stored.map_or(0, |s| s.epoch);
    if current != epoch || (stored.is_none() && epoch != 0) {
        return Err(StoreError::fenced(STORE, run_id, epoch, current).into());
    }
    Ok(())
}

/// Write `run`'s row with `last_seq` (its epoch checked by the caller). Columns that did
/// not change are not written, so the usual append (only `updated_ms` and `last_seq`
/// change) rewrites no index entry. Owner, lease and epoch are never written here.
fn write_run(conn: &Connection, run: &RunRecord, stored: Option<&StoredRun>, last_seq: u64) -> Result<(), Fail> {
    let last = u64_to_db(STORE, "journal seq", last_seq)?;
    let status = run.status.as_str();
    match stored {
        None => conn
            .prepare_cached(
                "INSERT INTO agent_runs (run_id, agent, status, created_ms, updated_ms, last_seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![run.run_id, run.agent, status, run.created_ms, run.updated_ms, last])?,
        Some(s) if s.agent == run.agent && s.status == status && s.created_ms == run.created_ms => conn
            .prepare_cached("UPDATE agent_runs SET updated_ms = ?2, last_seq = ?3 WHERE run_id = ?1")?
            .execute(params![run.run_id, run.updated_ms, last])?,
        Some(_) => conn
            .prepare_cached(
                "UPDATE agent_runs SET agent = ?2, status = ?3, created_ms = ?4, updated_ms = ?5, last_seq = ?6
                 WHERE run_id = ?1",
            )?
            .execute(params![run.run_id, run.agent, status, run.created_ms, run.updated_ms, last])?,
    };
    Ok(())
}

/// An owner's usual append, in three cached statements: the row's update (only `updated_ms`
/// and `last_seq`), matched only when the epoch is `run`'s, the stored `last_seq` is below
/// the batch, and nothing else of the row changes; then the entries. `false` (nothing
/// written) when the update matched nothing: the caller's full path then says why, or
/// writes what else changed (a status). `BEGIN IMMEDIATE` and `COMMIT` are cached
/// statements here, where `Connection::transaction` parses them at every call.
fn append_owned(conn: &Connection, run: &RunRecord, entries: &[JournalEntry]) -> Result<bool, Fail> {
    let (Some(first), Some(last)) = (entries.first(), entries.last()) else { return Ok(false) };
    if run.epoch == 0 || entries.windows(2).any(|w| w[1].seq <= w[0].seq) {
        return Ok(false);
    }
    let (first, last) = (u64_to_db(STORE, "journal seq", first.seq)?, u64_to_db(STORE, "journal seq", last.seq)?);
    let epoch = u64_to_db(STORE, "epoch", run.epoch)?;
    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    // Rolls back unless committed, on every way out.
    let open = RollBack(conn);
    let matched = conn
        .prepare_cached(
            "UPDATE agent_runs SET updated_ms = ?2, last_seq = ?3
             WHERE run_id = ?1 AND epoch = ?4 AND last_seq < ?5 AND agent = ?6 AND status = ?7 AND created_ms = ?8",
        )?
        .execute(params![
            run.run_id,
            run.updated_ms,
            last,
            epoch,
            first,
            run.agent,
            run.status.as_str(),
            run.created_ms
        ])?;
    if matched == 0 {
        return Ok(false);
    }
    let mut insert = conn
        .prepare_cached("INSERT INTO agent_journal (run_id, seq, state, payload, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)")?;
    for e in entries {
        let seq = u64_to_db(STORE, "journal seq", e.seq)?;
        insert.execute(params![run.run_id, seq, e.state, e.payload, e.at_ms])?;
    }
    conn.prepare_cached("COMMIT")?.execute([])?;
    std::mem::forget(open);
    Ok(true)
}

/// Rolls back the transaction open on its connection when dropped.
struct RollBack<'c>(&'c Connection);

impl Drop for RollBack<'_> {
    fn drop(&mut self) {
        if !self.0.is_autocommit() {
            let _ = self.0.execute_batch("ROLLBACK");
        }
    }
}

/// Insert `snapshot` of run `run_id`, unless the run has one of its `seq`
/// ([`StoreError::Conflict`]).
fn insert_snapshot(conn: &Connection, run_id: &str, snapshot: &Snapshot) -> Result<(), Fail> {
    let seq = u64_to_db(STORE, "snapshot seq", snapshot.seq)?;
    let inserted = conn
        .prepare_cached(
            "INSERT INTO agent_snapshots (run_id, seq, taken_ms, data) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (run_id, seq) DO NOTHING",
        )?
        .execute(params![run_id, seq, snapshot.taken_ms, snapshot.data])?;
    if inserted == 0 {
        let last: i64 = conn
            .prepare_cached("SELECT max(seq) FROM agent_snapshots WHERE run_id = ?1")?
            .query_row([run_id], |r| r.get::<_, Option<i64>>(0).map(Option::unwrap_or_default))?;
        let last = u64_from_db(STORE, "snapshot seq", last)?;
        return Err(StoreError::Conflict { store: STORE, run_id: run_id.to_owned(), seq: snapshot.seq, last }.into());
    }
    Ok(())
}

/// Keep the newest `keep` (at least 1) snapshots of run `run_id`, and its journal after the
/// oldest kept one.
fn prune_run(conn: &Connection, run_id: &str, keep: usize) -> Result<RetentionReport, Fail> {
    let keep = i64::try_from(keep.max(1)).unwrap_or(i64::MAX);
    let snapshots = conn
        .prepare_cached(
            "DELETE FROM agent_snapshots WHERE run_id = ?1 AND id IN (
                SELECT id FROM agent_snapshots WHERE run_id = ?1
                ORDER BY seq DESC, taken_ms DESC, id DESC LIMIT -1 OFFSET ?2)",
        )?
        .execute(params![run_id, keep])? as u64;
    let entries = conn
        .prepare_cached(
            "DELETE FROM agent_journal WHERE run_id = ?1
                AND seq <= (SELECT min(seq) FROM agent_snapshots WHERE run_id = ?1)",
        )?
        .execute([run_id])? as u64;
    Ok(RetentionReport { snapshots, entries, runs: 0 })
}

/// Record the context run `run_id` starts from, if there is one (see `SQLITE_3` in
/// `migrate` for why it has a table of its own).
fn put_run_input(conn: &Connection, run_id: &str, input: Option<&str>) -> Result<(), Fail> {
    if let Some(input) = input {
        conn.prepare_cached("INSERT OR REPLACE INTO agent_run_inputs (run_id, input) VALUES (?1, ?2)")?
            .execute(params![run_id, input])?;
    }
    Ok(())
}

/// Insert or update a request for input, keeping an answer already recorded.
fn put_input_in(conn: &Connection, input: &InputRecord) -> Result<(), Fail> {
    let timeout = input.timeout_ms.map(|t| u64_to_db(STORE, "timeout_ms", t)).transpose()?;
    conn.prepare_cached(
        "INSERT INTO agent_inputs (run_id, request_id, state, prompt, requested_ms, timeout_ms,
             default_value, answer, answered_ms, defaulted)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (run_id, request_id) DO UPDATE SET
             state = excluded.state, prompt = excluded.prompt, requested_ms = excluded.requested_ms,
             timeout_ms = excluded.timeout_ms, default_value = excluded.default_value,
             answered_ms = CASE WHEN agent_inputs.answer IS NULL
                 THEN excluded.answered_ms ELSE agent_inputs.answered_ms END,
             defaulted = CASE WHEN agent_inputs.answer IS NULL
                 THEN excluded.defaulted ELSE agent_inputs.defaulted END,
             answer = COALESCE(agent_inputs.answer, excluded.answer)",
    )?
    .execute(params![
        input.run_id,
        input.request_id,
        input.state,
        input.prompt,
        input.requested_ms,
        timeout,
        input.default,
        input.answer,
        input.answered_ms,
        input.defaulted,
    ])?;
    Ok(())
}

/// Answer a request unless it is unknown or answered: whether it was.
fn answer_in(
    conn: &Connection,
    run_id: &str,
    request_id: &str,
    answer: &str,
    defaulted: bool,
    at_ms: i64,
) -> Result<bool, Fail> {
    let changed = conn
        .prepare_cached(
            "UPDATE agent_inputs SET answer = ?3, defaulted = ?4, answered_ms = ?5
             WHERE run_id = ?1 AND request_id = ?2 AND answer IS NULL",
        )?
        .execute(params![run_id, request_id, answer, defaulted, at_ms])?;
    Ok(changed > 0)
}

/// The states of requests `(id, state)`, in the order they were asked (`RETURNING` gives
/// rows in no promised order).
fn oldest_first(mut requests: Vec<(i64, String)>) -> Vec<String> {
    requests.sort_unstable_by_key(|(id, _)| *id);
    requests.into_iter().map(|(_, state)| state).collect()
}

/// The epoch run `run_id` is at (0 without a row).
fn current_epoch(conn: &Connection, run_id: &str) -> Result<u64, Fail> {
    let epoch = conn
        .prepare_cached("SELECT epoch FROM agent_runs WHERE run_id = ?1")?
        .query_row([run_id], |r| r.get::<_, i64>(0))
        .optional()?;
    Ok(epoch.map(|e| u64_from_db(STORE, &format!("run {run_id}: epoch"), e)).transpose()?.unwrap_or(0))
}

fn read_run(row: &Row<'_>) -> Result<RunRecord, Fail> {
    let run_id: String = row.get(0)?;
    let status: String = row.get(2)?;
    let epoch = u64_from_db(STORE, &format!("run {run_id}: epoch"), row.get(7)?)?;
    let status = status_from_db(STORE, &run_id, &status)?;
    let mut run = RunRecord::new(String::new(), row.get::<_, String>(1)?, status, row.get(3)?, row.get(4)?);
    run.owner = row.get(5)?;
    run.lease_until_ms = if run.owner.is_some() { row.get(6)? } else { None };
    run.epoch = epoch;
    run.run_id = run_id;
    Ok(run)
}

/// A lineage as `SELECT run_id, parent_run_id, parent_seq, kind, created_ms, parent_state` reads it.
fn read_lineage(row: &Row<'_>) -> Result<Lineage, Fail> {
    let run_id: String = row.get(0)?;
    let kind: String = row.get(3)?;
    let Some(kind) = LineageKind::parse(&kind) else {
        let message = format!("run {run_id}: unknown lineage kind {kind:?}");
        return Err(StoreError::Corrupt { store: STORE, message }.into());
    };
    let mut lineage = Lineage::new(String::new(), row.get::<_, String>(1)?, kind, row.get(4)?);
    let parent_seq: Option<i64> = row.get(2)?;
    lineage.parent_seq = parent_seq.map(|s| u64_from_db(STORE, &format!("run {run_id}: parent seq"), s)).transpose()?;
    lineage.parent_state = row.get(5)?;
    lineage.run_id = run_id;
    Ok(lineage)
}

/// A signal as `select_signals!` reads it.
fn read_signal(row: &Row<'_>) -> Result<SignalRecord, Fail> {
    let run_id: String = row.get(0)?;
    let signal_id: String = row.get(1)?;
    let seq = u64_from_db(STORE, &format!("run {run_id}: signal {signal_id}: seq"), row.get(5)?)?;
    Ok(SignalRecord {
        name: row.get(2)?,
        payload: row.get(3)?,
        sent_ms: row.get(4)?,
        seq,
        taken_by: row.get(6)?,
        taken_ms: row.get(7)?,
        run_id,
        signal_id,
    })
}

/// The signal named `name` for the wait `wait_key` of run `run_id` (its epoch checked by
/// the caller, under the write lock): the one the wait took before, else the oldest not
/// taken, now taken by it at `now_ms`.
fn take_signal_in(
    conn: &Connection,
    run_id: &str,
    name: &str,
    wait_key: &str,
    now_ms: i64,
) -> Result<Option<SignalRecord>, Fail> {
    let before = {
        let mut stmt = conn.prepare_cached(select_signals!(" WHERE run_id = ?1 AND taken_by = ?2"))?;
        let mut rows = stmt.query(params![run_id, wait_key])?;
        rows.next()?.map(read_signal).transpose()?
    };
    if before.is_some() {
        return Ok(before);
    }
    let mut stmt = conn.prepare_cached(
        "UPDATE agent_signals SET taken_by = ?3, taken_ms = ?4 WHERE seq = (
             SELECT seq FROM agent_signals WHERE run_id = ?1 AND name = ?2 AND taken_by IS NULL
             ORDER BY seq LIMIT 1)
         RETURNING run_id, signal_id, name, payload, sent_ms, seq, taken_by, taken_ms",
    )?;
    let mut rows = stmt.query(params![run_id, name, wait_key, now_ms])?;
    rows.next()?.map(read_signal).transpose()
}

/// A schedule as `select_schedules!` reads it.
fn read_schedule(row: &Row<'_>) -> Result<ScheduleRecord, Fail> {
    let agent: String = row.get(0)?;
    let name: String = row.get(1)?;
    let version = u64_from_db(STORE, &format!("agent {agent}: schedule {name}: version"), row.get(13)?)?;
    Ok(ScheduleRecord {
        cron: row.get(2)?,
        timezone: row.get(3)?,
        overlap: row.get(4)?,
        catch_up_ms: row.get(5)?,
        input: row.get(6)?,
        paused: row.get(7)?,
        created_ms: row.get(8)?,
        updated_ms: row.get(9)?,
        next_tick_ms: row.get(10)?,
        buffered_tick_ms: row.get(11)?,
        last_run_id: row.get(12)?,
        version,
        agent,
        name,
    })
}

fn read_input(row: &Row<'_>) -> Result<InputRecord, Fail> {
    let timeout: Option<i64> = row.get(5)?;
    let mut request = agent_core::InputRequestRecord::new(row.get(1)?, row.get(3)?, row.get(4)?);
    request.state = row.get(2)?;
    request.timeout_ms = timeout.map(|t| u64_from_db(STORE, "timeout_ms", t)).transpose()?;
    request.default = row.get(6)?;
    request.answer = row.get(7)?;
    request.answered_ms = row.get(8)?;
    request.defaulted = row.get(9)?;
    Ok(InputRecord { run_id: row.get(0)?, request })
}

impl CheckpointStore for SqliteStore {
    fn kind(&self) -> &'static str {
        STORE
    }

    fn upsert_run<'a>(&'a self, run: &'a RunRecord) -> StoreFuture<'a, ()> {
        let run = run.clone();
        self.call(format!("upsert run {}", run.run_id), move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let stored = stored_run(&tx, &run.run_id)?;
            check_epoch(&run.run_id, stored.as_ref(), run.epoch)?;
            write_run(&tx, &run, stored.as_ref(), stored.as_ref().map_or(0, |s| s.last_seq))?;
            tx.commit()?;
            Ok(())
        })
    }

    fn get_run<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<RunRecord>> {
        let run_id = run_id.to_owned();
        self.call(format!("get run {run_id}"), move |conn| {
            let mut stmt = conn.prepare_cached(select_runs!(" WHERE run_id = ?1"))?;
            let mut rows = stmt.query([&run_id])?;
            rows.next()?.map(read_run).transpose()
        })
    }

    fn list_runs<'a>(&'a self, query: &'a RunQuery) -> StoreFuture<'a, Vec<RunRecord>> {
        let query = query.clone();
        self.call("list runs".to_owned(), move |conn| {
            let (sql, params) = run_filter::list(select_runs!(), &query, &SQLITE);
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut rows = stmt.query(rusqlite::params_from_iter(params.iter().map(to_sql)))?;
            let mut runs = Vec::new();
            while let Some(row) = rows.next()? {
                runs.push(read_run(row)?);
            }
            Ok(runs)
        })
    }

    fn count_runs<'a>(&'a self, query: &'a RunQuery) -> StoreFuture<'a, u64> {
        let query = query.clone();
        self.call("count runs".to_owned(), move |conn| {
            let (sql, params) = run_filter::count(&query, &SQLITE);
            let mut stmt = conn.prepare_cached(&sql)?;
            let n: i64 = stmt.query_row(rusqlite::params_from_iter(params.iter().map(to_sql)), |r| r.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    fn append<'a>(&'a self, run: &'a RunRecord, entries: &'a [JournalEntry]) -> StoreFuture<'a, ()> {
        let run = run.clone();
        let entries = entries.to_vec();
        self.call(format!("append to run {}", run.run_id), move |conn| {
            if append_owned(conn, &run, &entries)? {
                return Ok(());
            }
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let stored = stored_run(&tx, &run.run_id)?;
            check_epoch(&run.run_id, stored.as_ref(), run.epoch)?;
            let mut last = stored.as_ref().map_or(0, |s| s.last_seq);
            // Check the whole batch before writing any of it; dropping `tx` rolls back.
            for e in &entries {
                if e.seq <= last {
                    return Err(
                        StoreError::Conflict { store: STORE, run_id: run.run_id.clone(), seq: e.seq, last }.into()
                    );
                }
                last = e.seq;
            }
            if !entries.is_empty() {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO agent_journal (run_id, seq, state, payload, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                for e in &entries {
                    let seq = u64_to_db(STORE, "journal seq", e.seq)?;
                    insert.execute(params![run.run_id, seq, e.state, e.payload, e.at_ms])?;
                }
            }
            write_run(&tx, &run, stored.as_ref(), last)?;
            tx.commit()?;
            Ok(())
        })
    }

    fn journal<'a>(&'a self, run_id: &'a str, after: u64) -> StoreFuture<'a, Vec<JournalEntry>> {
        let run_id = run_id.to_owned();
        self.call(format!("read the journal of run {run_id}"), move |conn| {
            let after = i64::try_from(after).unwrap_or(i64::MAX);
            let mut stmt = conn.prepare_cached(
                "SELECT seq, state, payload, at_ms FROM agent_journal WHERE run_id = ?1 AND seq > ?2 ORDER BY seq",
            )?;
            let mut rows = stmt.query(params![run_id, after])?;
            let mut entries = Vec::new();
            while let Some(row) = rows.next()? {
                entries.push(JournalEntry {
                    seq: u64_from_db(STORE, "journal seq", row.get(0)?)?,
                    state: row.get(1)?,
                    payload: row.get(2)?,
                    at_ms: row.get(3)?,
                });
            }
            Ok(entries)
        })
    }

    fn save_snapshot<'a>(&'a self, run_id: &'a str, epoch: u64, snapshot: &'a Snapshot) -> StoreFuture<'a, ()> {
        let run_id = run_id.to_owned();
        let snapshot = snapshot.clone();
        self.call(format!("save a snapshot of run {run_id}"), move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let stored = stored_run(&tx, &run_id)?;
            if stored.is_none() && epoch == 0 {
                return Err(StoreError::Backend {
                    store: STORE,
                    message: format!("save a snapshot of run {run_id}: no such run"),
                    source: None,
                }
                .into());
            }
            check_epoch(&run_id, stored.as_ref(), epoch)?;
            insert_snapshot(&tx, &run_id, &snapshot)?;
            tx.commit()?;
            Ok(())
        })
    }

    fn save_run_snapshot<'a>(&'a self, run: &'a RunRecord, snapshot: &'a Snapshot) -> StoreFuture<'a, ()> {
        let run = run.clone();
        let snapshot = snapshot.clone();
        self.call(format!("save a snapshot of run {}", run.run_id), move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let stored = stored_run(&tx, &run.run_id)?;
            check_epoch(&run.run_id, stored.as_ref(), run.epoch)?;
            write_run(&tx, &run, stored.as_ref(), stored.as_ref().map_or(0, |s| s.last_seq))?;
            insert_snapshot(&tx, &run.run_id, &snapshot)?;
            tx.commit()?;
            Ok(())
        })
    }

    fn claim_run<'a>(&'a self, claim: &'a ClaimRequest) -> StoreFuture<'a, Claim> {
        let claim = claim.clone();
        self.call(format!("claim run {}", claim.run_id), move |conn| {
            let ttl = claim.ttl_ms();
            // The write lock, held from here to the commit, makes check and write one step
            // for every process sharing the file.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut taken = 0;
            if let Some(row) = &claim.create {
                taken = tx
                    .prepare_cached(concat!(
                        "INSERT INTO agent_runs
                             (run_id, agent, status, created_ms, updated_ms, owner, lease_until, epoch, graph_hash)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ",
                        now_ms_sql!(),
                        " + ?7, 1, ?8) ON CONFLICT (run_id) DO NOTHING"
                    ))?
                    .execute(params![
                        claim.run_id,
                        row.agent,
                        row.status.as_str(),
                        row.created_ms,
                        row.updated_ms,
                        claim.owner,
                        ttl,
                        claim.graph_hash,
                    ])?;
                if taken > 0 {
                    put_run_input(&tx, &claim.run_id, claim.input.as_deref())?;
                }
            }
            if taken == 0 {
                taken = tx
                    .prepare_cached(concat!(
                        "UPDATE agent_runs SET owner = ?2, lease_until = ",
                        now_ms_sql!(),
                        " + ?3, epoch = epoch + 1, control = NULL
                         WHERE run_id = ?1 AND (?4 OR status NOT IN ",
                        finished_sql!(),
                        ") AND (owner IS NULL OR lease_until IS NULL OR lease_until <= ",
                        now_ms_sql!(),
                        " OR (?5 AND owner = ?2))"
                    ))?
                    .execute(params![claim.run_id, claim.owner, ttl, claim.finished, claim.reclaim])?;
            }
            let row = {
                let mut stmt = tx.prepare_cached(select_runs!(" WHERE run_id = ?1"))?;
                let mut rows = stmt.query([&claim.run_id])?;
                rows.next()?.map(read_run).transpose()?
            };
            tx.commit()?;
            Ok(match row {
                None => Claim::Missing,
                Some(row) if taken > 0 => Claim::Taken(row),
                Some(row) if row.status.is_finished() && !claim.finished => Claim::Finished(row),
                Some(row) => Claim::Held(row),
            })
        })
    }

    fn submit_run<'a>(&'a self, submission: &'a Submission) -> StoreFuture<'a, Submitted> {
        let submission = submission.clone();
        self.call(format!("submit run {}", submission.run_id), move |conn| {
            submission.check(STORE)?;
            // The write lock, held to the commit, makes look-up and insert one step for every
            // process sharing the file (the unique index would refuse a second run anyway).
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if let Some(key) = &submission.idempotency_key {
                let existing = {
                    let mut stmt = tx.prepare_cached(select_runs!(" WHERE agent = ?1 AND idempotency_key = ?2"))?;
                    let mut rows = stmt.query(params![submission.agent, key])?;
                    rows.next()?.map(read_run).transpose()?
                };
                if let Some(run) = existing {
                    tx.commit()?;
                    return Ok(Submitted { run, created: false });
                }
            }
            let delay = submission.start_after.map(|_| submission.delay_ms());
            if submission.debounce {
                // The pending debounced run of the key, if any: its input replaced and its
                // start pushed, under the same write lock.
                let pending = {
                    let mut stmt = tx.prepare_cached(concat!(
                        select_runs!(
                            " WHERE agent = ?1 AND flow_key = ?2 AND debounce AND status = 'Idle' AND epoch = 0
                               AND owner IS NULL AND status NOT IN "
                        ),
                        finished_sql!(),
                        " ORDER BY created_ms, run_id LIMIT 1"
                    ))?;
                    let mut rows = stmt.query(params![submission.agent, submission.flow_key])?;
                    rows.next()?.map(read_run).transpose()?
                };
                if let Some(run) = pending {
                    tx.prepare_cached(concat!(
                        "UPDATE agent_runs SET not_before_ms = ",
                        now_ms_sql!(),
                        " + ?2 WHERE run_id = ?1"
                    ))?
                    .execute(params![run.run_id, delay.unwrap_or(0)])?;
                    put_run_input(&tx, &run.run_id, Some(&submission.input))?;
                    tx.commit()?;
                    return Ok(Submitted { run, created: false });
                }
            }
            let row = submission.row();
            let flow_limit = submission.flow_limit.map(i64::from);
            tx.prepare_cached(concat!(
                "INSERT INTO agent_runs
                     (run_id, agent, status, created_ms, updated_ms, epoch, graph_hash, idempotency_key,
                      flow_key, flow_limit, debounce, not_before_ms)
                 VALUES (?1, ?2, ?3, ?4, ?4, 0, ?5, ?6, ?7, ?8, ?9, ",
                now_ms_sql!(),
                " + ?10)"
            ))?
            .execute(params![
                row.run_id,
                row.agent,
                row.status.as_str(),
                row.created_ms,
                submission.graph_hash,
                submission.idempotency_key,
                submission.flow_key,
                flow_limit,
                submission.debounce,
                delay,
            ])?;
            put_run_input(&tx, &row.run_id, Some(&submission.input))?;
            tx.commit()?;
            Ok(Submitted { run: row, created: true })
        })
    }

    fn run_input<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<String>> {
        let run_id = run_id.to_owned();
        self.call(format!("read the input of run {run_id}"), move |conn| {
            let input = conn
                .prepare_cached("SELECT input FROM agent_run_inputs WHERE run_id = ?1")?
                .query_row([&run_id], |r| r.get::<_, Option<String>>(0))
                .optional()?;
            Ok(input.flatten())
        })
    }

    fn request_control<'a>(&'a self, run_id: &'a str, control: RunControl) -> StoreFuture<'a, bool> {
        let run_id = run_id.to_owned();
        self.call(format!("ask run {run_id} to {}", control.as_str()), move |conn| {
            let marked = conn
                .prepare_cached(concat!(
                    "UPDATE agent_runs SET control = CASE WHEN control = 'cancel' THEN control ELSE ?2 END
                     WHERE run_id = ?1 AND status NOT IN ",
                    finished_sql!()
                ))?
                .execute(params![run_id, control.as_str()])?;
            Ok(marked > 0)
        })
    }

    fn run_control<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<RunControl>> {
        let run_id = run_id.to_owned();
        self.call(format!("read what is asked of run {run_id}"), move |conn| {
            let control = conn
                .prepare_cached("SELECT control FROM agent_runs WHERE run_id = ?1")?
                .query_row([&run_id], |r| r.get::<_, Option<String>>(0))
                .optional()?;
            Ok(control.flatten().as_deref().and_then(RunControl::parse))
        })
    }

    fn request_state_cancel<'a>(&'a self, run_id: &'a str, state: &'a str) -> StoreFuture<'a, bool> {
        let (run_id, state) = (run_id.to_owned(), state.to_owned());
        self.call(format!("ask run {run_id} to cancel state {state}"), move |conn| {
            // Under the write lock: the run cannot finish or be deleted between the check
            // and the insert.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let unfinished = tx
                .prepare_cached(concat!(
                    "SELECT 1 FROM agent_runs WHERE run_id = ?1 AND status NOT IN ",
                    finished_sql!()
                ))?
                .exists([&run_id])?;
            if unfinished {
                tx.prepare_cached(
                    "INSERT INTO agent_state_cancels (run_id, state, requested_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT (run_id, state) DO NOTHING",
                )?
                .execute(params![run_id, state, super::now_ms()])?;
            }
            tx.commit()?;
            Ok(unfinished)
        })
    }

    fn take_state_cancels<'a>(&'a self, run_id: &'a str, epoch: u64) -> StoreFuture<'a, Vec<String>> {
        let run_id = run_id.to_owned();
        self.call(format!("take the state cancels asked of run {run_id}"), move |conn| {
            // The owner polls: without a request pending, one read and no write lock.
            let found = conn
                .prepare_cached(
                    "SELECT epoch, EXISTS (SELECT 1 FROM agent_state_cancels WHERE run_id = ?1)
                     FROM agent_runs WHERE run_id = ?1",
                )?
                .query_row([&run_id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, bool>(1)?)))
                .optional()?;
            let current = found.map(|(e, _)| u64_from_db(STORE, &format!("run {run_id}: epoch"), e)).transpose()?;
            if current.unwrap_or(0) != epoch || (current.is_none() && epoch != 0) {
                return Err(StoreError::fenced(STORE, &run_id, epoch, current.unwrap_or(0)).into());
            }
            if !found.is_some_and(|(_, pending)| pending) {
                return Ok(Vec::new());
            }
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            check_epoch(&run_id, stored_run(&tx, &run_id)?.as_ref(), epoch)?;
            let states = tx
                .prepare_cached("DELETE FROM agent_state_cancels WHERE run_id = ?1 RETURNING id, state")?
                .query_map([&run_id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            tx.commit()?;
            Ok(oldest_first(states))
        })
    }

    fn record_lineage<'a>(&'a self, lineage: &'a Lineage) -> StoreFuture<'a, ()> {
        let lineage = lineage.clone();
        self.call(format!("record the lineage of run {}", lineage.run_id), move |conn| {
            let parent_seq = lineage.parent_seq.map(|s| u64_to_db(STORE, "parent seq", s)).transpose()?;
            // One statement: of two records for one run, the first is kept.
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO agent_lineage (run_id, parent_run_id, parent_seq, kind, created_ms, parent_state)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (run_id) DO NOTHING",
                )?
                .execute(params![
                    lineage.run_id,
                    lineage.parent_run_id,
                    parent_seq,
                    lineage.kind.as_str(),
                    lineage.created_ms,
                    lineage.parent_state
                ])?;
            if inserted == 0 {
                return Err(super::lineage::recorded_already(STORE, &lineage.run_id).into());
            }
            Ok(())
        })
    }

    fn lineage<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<Lineage>> {
        let run_id = run_id.to_owned();
        self.call(format!("read the lineage of run {run_id}"), move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT run_id, parent_run_id, parent_seq, kind, created_ms, parent_state FROM agent_lineage WHERE run_id = ?1",
            )?;
            let mut rows = stmt.query([&run_id])?;
            rows.next()?.map(read_lineage).transpose()
        })
    }

    fn descendants<'a>(&'a self, parent_run_id: &'a str) -> StoreFuture<'a, Vec<Lineage>> {
        let parent_run_id = parent_run_id.to_owned();
        self.call(format!("list the runs made from run {parent_run_id}"), move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT run_id, parent_run_id, parent_seq, kind, created_ms, parent_state FROM agent_lineage
                 WHERE parent_run_id = ?1 ORDER BY created_ms, run_id",
            )?;
            let mut rows = stmt.query([&parent_run_id])?;
            let mut found = Vec::new();
            while let Some(row) = rows.next()? {
                found.push(read_lineage(row)?);
            }
            Ok(found)
        })
    }

    fn claim_next<'a>(&'a self, ask: &'a ClaimNext) -> StoreFuture<'a, Vec<NextRun>> {
        let ask = ask.clone();
        self.call("claim the next runs".to_owned(), move |conn| {
            if ask.limit == 0 || ask.serves.is_empty() {
                return Ok(Vec::new());
            }
            let limit = i64::try_from(ask.limit).unwrap_or(i64::MAX);
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // Candidates of every graph served, oldest first; under the write lock nobody
            // else claims meanwhile, so each update below takes its run.
            let mut found: Vec<(i64, String)> = Vec::new();
            if any_keyed(&tx, &ask)? {
                // Flow control (see `queue`): ranked in one statement, under the same lock.
                let served: Vec<[&str; 2]> =
                    ask.serves.iter().map(|s| [s.agent.as_str(), s.graph_hash.as_str()]).collect();
                let served = serde_json::to_string(&served).map_err(|e| StoreError::Backend {
                    store: STORE,
                    message: e.to_string(),
                    source: None,
                })?;
                let mut stmt = tx.prepare_cached(FLOW_CANDIDATES)?;
                let rows = stmt.query_map(params![served, limit], |r| Ok((0, r.get::<_, String>(0)?)))?;
                for row in rows {
                    found.push(row?);
                }
            } else {
                let mut stmt = tx.prepare_cached(concat!(
                    "SELECT created_ms, run_id FROM agent_runs
                     WHERE agent = ?1 AND graph_hash = ?2 AND status IN ('Idle', 'Running')
                       AND (owner IS NULL OR lease_until IS NULL OR lease_until <= ",
                    now_ms_sql!(),
                    ") AND (not_before_ms IS NULL OR not_before_ms <= ",
                    now_ms_sql!(),
                    ") ORDER BY created_ms, run_id LIMIT ?3"
                ))?;
                for served in &ask.serves {
                    let rows = stmt.query_map(params![served.agent, served.graph_hash, limit], |r| {
                        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                    })?;
                    for row in rows {
                        found.push(row?);
                    }
                }
                found.sort();
            }
            found.truncate(ask.limit);
            let mut taken = Vec::with_capacity(found.len());
            for (_, run_id) in found {
                let mut stmt = tx.prepare_cached(concat!(
                    "UPDATE agent_runs SET owner = ?2, lease_until = ",
                    now_ms_sql!(),
                    " + ?3, epoch = epoch + 1, control = NULL WHERE run_id = ?1
                     RETURNING run_id, agent, status, created_ms, updated_ms, owner, lease_until, epoch,
                               graph_hash"
                ))?;
                let mut rows = stmt.query(params![run_id, ask.owner, ttl_ms(ask.ttl)])?;
                if let Some(row) = rows.next()? {
                    let graph_hash: Option<String> = row.get(8)?;
                    taken.push(NextRun {
                        row: read_run(row)?,
                        graph_hash: graph_hash.unwrap_or_default(),
                        input: None,
                    });
                }
            }
            for next in &mut taken {
                next.input = tx
                    .prepare_cached("SELECT input FROM agent_run_inputs WHERE run_id = ?1")?
                    .query_row([&next.row.run_id], |r| r.get::<_, String>(0))
                    .optional()?;
            }
            tx.commit()?;
            Ok(taken)
        })
    }

    fn renew_lease<'a>(&'a self, run_id: &'a str, owner: &'a str, epoch: u64, ttl: Duration) -> StoreFuture<'a, i64> {
        let (run_id, owner) = (run_id.to_owned(), owner.to_owned());
        self.call(format!("renew the lease on run {run_id}"), move |conn| {
            let db_epoch = u64_to_db(STORE, "epoch", epoch)?;
            let renewed = conn
                .prepare_cached(concat!(
                    "UPDATE agent_runs SET lease_until = ",
                    now_ms_sql!(),
                    " + ?4 WHERE run_id = ?1 AND owner = ?2 AND epoch = ?3 RETURNING lease_until"
                ))?
                .query_row(params![run_id, owner, db_epoch, ttl_ms(ttl)], |r| r.get::<_, i64>(0))
                .optional()?;
            match renewed {
                Some(until) => Ok(until),
                None => Err(StoreError::fenced(STORE, &run_id, epoch, current_epoch(conn, &run_id)?).into()),
            }
        })
    }

    fn release_run<'a>(&'a self, run_id: &'a str, epoch: u64) -> StoreFuture<'a, ()> {
        let run_id = run_id.to_owned();
        self.call(format!("release run {run_id}"), move |conn| {
            let db_epoch = u64_to_db(STORE, "epoch", epoch)?;
            let released = conn
                .prepare_cached(
                    "UPDATE agent_runs SET owner = NULL, lease_until = NULL WHERE run_id = ?1 AND epoch = ?2",
                )?
                .execute(params![run_id, db_epoch])?;
            if released == 0 {
                return Err(StoreError::fenced(STORE, &run_id, epoch, current_epoch(conn, &run_id)?).into());
            }
            Ok(())
        })
    }

    fn prune_snapshots<'a>(&'a self, run_id: &'a str, epoch: u64, keep: usize) -> StoreFuture<'a, RetentionReport> {
        let run_id = run_id.to_owned();
        self.call(format!("prune the snapshots of run {run_id}"), move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let stored = stored_run(&tx, &run_id)?;
            check_epoch(&run_id, stored.as_ref(), epoch)?;
            let report = prune_run(&tx, &run_id, keep)?;
            tx.commit()?;
            Ok(report)
        })
    }

    fn latest_snapshot<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<Snapshot>> {
        let run_id = run_id.to_owned();
        self.call(format!("read the latest snapshot of run {run_id}"), move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, taken_ms, data FROM agent_snapshots WHERE run_id = ?1
                 ORDER BY seq DESC, taken_ms DESC, id DESC LIMIT 1",
            )?;
            let mut rows = stmt.query([&run_id])?;
            match rows.next()? {
                Some(row) => Ok(Some(Snapshot {
                    seq: u64_from_db(STORE, "snapshot seq", row.get(0)?)?,
                    taken_ms: row.get(1)?,
                    data: row.get(2)?,
                })),
                None => Ok(None),
            }
        })
    }

    fn snapshots<'a>(&'a self, run_id: &'a str, limit: usize) -> StoreFuture<'a, Vec<Snapshot>> {
        let run_id = run_id.to_owned();
        self.call(format!("read the snapshots of run {run_id}"), move |conn| {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let mut stmt = conn.prepare_cached(
                "SELECT seq, taken_ms, data FROM agent_snapshots WHERE run_id = ?1
                 ORDER BY seq DESC, taken_ms DESC, id DESC LIMIT ?2",
            )?;
            let mut rows = stmt.query(params![run_id, limit])?;
            let mut snapshots = Vec::new();
            while let Some(row) = rows.next()? {
                snapshots.push(Snapshot {
                    seq: u64_from_db(STORE, "snapshot seq", row.get(0)?)?,
                    taken_ms: row.get(1)?,
                    data: row.get(2)?,
                });
            }
            Ok(snapshots)
        })
    }

    fn put_input<'a>(&'a self, input: &'a InputRecord) -> StoreFuture<'a, ()> {
        let input = input.clone();
        self.call(format!("record input request {} of run {}", input.request_id, input.run_id), move |conn| {
            put_input_in(conn, &input)
        })
    }

    fn put_input_fenced<'a>(&'a self, input: &'a InputRecord, epoch: u64) -> StoreFuture<'a, ()> {
        let input = input.clone();
        self.call(format!("record input request {} of run {}", input.request_id, input.run_id), move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            check_epoch(&input.run_id, stored_run(&tx, &input.run_id)?.as_ref(), epoch)?;
            put_input_in(&tx, &input)?;
            tx.commit()?;
            Ok(())
        })
    }

    fn inputs<'a>(&'a self, run_id: Option<&'a str>, pending_only: bool) -> StoreFuture<'a, Vec<InputRecord>> {
        let run_id = run_id.map(str::to_owned);
        let what = match &run_id {
            Some(r) => format!("list input requests of run {r}"),
            None => "list input requests".to_owned(),
        };
        self.call(what, move |conn| {
            let sql = match (run_id.is_some(), pending_only) {
                (false, false) => select_inputs!(" WHERE ?1 IS NULL", " ORDER BY requested_ms, run_id, request_id"),
                (true, false) => select_inputs!(" WHERE run_id = ?1", " ORDER BY requested_ms, run_id, request_id"),
                (false, true) => {
                    select_inputs!(" WHERE ?1 IS NULL AND answer IS NULL", " ORDER BY requested_ms, run_id, request_id")
                }
                (true, true) => select_inputs!(
                    " WHERE run_id = ?1 AND answer IS NULL",
                    " ORDER BY requested_ms, run_id, request_id"
                ),
            };
            let mut stmt = conn.prepare_cached(sql)?;
            let mut rows = stmt.query([&run_id])?;
            let mut inputs = Vec::new();
            while let Some(row) = rows.next()? {
                inputs.push(read_input(row)?);
            }
            Ok(inputs)
        })
    }

    fn answer_input<'a>(
        &'a self,
        run_id: &'a str,
        request_id: &'a str,
        answer: &'a str,
        defaulted: bool,
        at_ms: i64,
    ) -> StoreFuture<'a, bool> {
        let (run_id, request_id, answer) = (run_id.to_owned(), request_id.to_owned(), answer.to_owned());
        self.call(format!("answer input request {request_id} of run {run_id}"), move |conn| {
            answer_in(conn, &run_id, &request_id, &answer, defaulted, at_ms)
        })
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
        let (run_id, request_id, answer) = (run_id.to_owned(), request_id.to_owned(), answer.to_owned());
        self.call(format!("answer input request {request_id} of run {run_id}"), move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            check_epoch(&run_id, stored_run(&tx, &run_id)?.as_ref(), epoch)?;
            let answered = answer_in(&tx, &run_id, &request_id, &answer, defaulted, at_ms)?;
            tx.commit()?;
            Ok(answered)
        })
    }

    fn send_signal<'a>(&'a self, signal: &'a SignalRecord) -> StoreFuture<'a, SignalSent> {
        let signal = signal.clone();
        self.call(format!("send signal {} to run {}", signal.signal_id, signal.run_id), move |conn| {
            // Under the write lock: the run cannot finish or be deleted between the check
            // and the insert.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let status = tx
                .prepare_cached("SELECT status FROM agent_runs WHERE run_id = ?1")?
                .query_row([&signal.run_id], |r| r.get::<_, String>(0))
                .optional()?;
            let Some(status) = status else { return Ok(SignalSent::UnknownRun) };
            let status = status_from_db(STORE, &signal.run_id, &status)?;
            if status.is_finished() {
                return Ok(SignalSent::Finished(status));
            }
            let kept = tx
                .prepare_cached(
                    "INSERT INTO agent_signals (run_id, signal_id, name, payload, sent_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (run_id, signal_id) DO NOTHING",
                )?
                .execute(params![signal.run_id, signal.signal_id, signal.name, signal.payload, signal.sent_ms])?;
            tx.commit()?;
            Ok(if kept > 0 { SignalSent::Kept } else { SignalSent::Duplicate })
        })
    }

    fn take_signal<'a>(
        &'a self,
        run_id: &'a str,
        name: &'a str,
        wait_key: &'a str,
        now_ms: i64,
        epoch: u64,
    ) -> StoreFuture<'a, Option<SignalRecord>> {
        let (run_id, name, wait_key) = (run_id.to_owned(), name.to_owned(), wait_key.to_owned());
        self.call(format!("take signal {name} of run {run_id} for wait {wait_key}"), move |conn| {
            // The wait polls: unless it took a signal before or one of its name waits, one
            // read and no write lock.
            let found = conn
                .prepare_cached(
                    "SELECT epoch,
                         EXISTS (SELECT 1 FROM agent_signals WHERE run_id = ?1 AND taken_by = ?3)
                         OR EXISTS (SELECT 1 FROM agent_signals WHERE run_id = ?1 AND name = ?2 AND taken_by IS NULL)
                     FROM agent_runs WHERE run_id = ?1",
                )?
                .query_row(params![run_id, name, wait_key], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, bool>(1)?)))
                .optional()?;
            let current = found.map(|(e, _)| u64_from_db(STORE, &format!("run {run_id}: epoch"), e)).transpose()?;
            if current.unwrap_or(0) != epoch {
                return Err(StoreError::fenced(STORE, &run_id, epoch, current.unwrap_or(0)).into());
            }
            if !found.is_some_and(|(_, any)| any) {
                return Ok(None);
            }
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            check_epoch(&run_id, stored_run(&tx, &run_id)?.as_ref(), epoch)?;
            let taken = take_signal_in(&tx, &run_id, &name, &wait_key, now_ms)?;
            tx.commit()?;
            Ok(taken)
        })
    }

    fn signals<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Vec<SignalRecord>> {
        let run_id = run_id.to_owned();
        self.call(format!("list the signals of run {run_id}"), move |conn| {
            let mut stmt = conn.prepare_cached(select_signals!(" WHERE run_id = ?1 ORDER BY seq"))?;
            let mut rows = stmt.query([&run_id])?;
            let mut signals = Vec::new();
            while let Some(row) = rows.next()? {
                signals.push(read_signal(row)?);
            }
            Ok(signals)
        })
    }

    fn arm_timer<'a>(&'a self, timer: &'a TimerRecord, epoch: u64) -> StoreFuture<'a, i64> {
        let timer = timer.clone();
        self.call(format!("arm timer {} of run {}", timer.key, timer.run_id), move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            check_epoch(&timer.run_id, stored_run(&tx, &timer.run_id)?.as_ref(), epoch)?;
            tx.prepare_cached(
                "INSERT INTO agent_timers (run_id, timer_key, wake_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (run_id, timer_key) DO NOTHING",
            )?
            .execute(params![timer.run_id, timer.key, timer.wake_ms])?;
            // The first armed wins: a timer armed before keeps its wake time.
            let wake_ms = tx
                .prepare_cached("SELECT wake_ms FROM agent_timers WHERE run_id = ?1 AND timer_key = ?2")?
                .query_row(params![timer.run_id, timer.key], |r| r.get::<_, i64>(0))?;
            tx.commit()?;
            Ok(wake_ms)
        })
    }

    fn timers<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Vec<TimerRecord>> {
        let run_id = run_id.to_owned();
        self.call(format!("list the timers of run {run_id}"), move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT run_id, timer_key, wake_ms FROM agent_timers WHERE run_id = ?1 ORDER BY timer_key",
            )?;
            let rows = stmt
                .query_map([&run_id], |r| Ok(TimerRecord { run_id: r.get(0)?, key: r.get(1)?, wake_ms: r.get(2)? }))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn put_schedule<'a>(&'a self, schedule: &'a ScheduleRecord) -> StoreFuture<'a, bool> {
        let schedule = schedule.clone();
        self.call(format!("put schedule {} of agent {}", schedule.name, schedule.agent), move |conn| {
            // Under the write lock: the row cannot appear or go between the insert and the
            // update.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let added =
                tx.prepare_cached(
                    "INSERT INTO agent_schedules (agent, name, cron, timezone, overlap, catch_up_ms, input, paused,
                         created_ms, updated_ms, next_tick_ms, buffered_tick_ms, last_run_id, version)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, 1)
                     ON CONFLICT (agent, name) DO NOTHING",
                )?
                .execute(params![
                    schedule.agent,
                    schedule.name,
                    schedule.cron,
                    schedule.timezone,
                    schedule.overlap,
                    schedule.catch_up_ms,
                    schedule.input,
                    schedule.paused,
                    schedule.created_ms,
                    schedule.updated_ms,
                    schedule.next_tick_ms,
                    schedule.buffered_tick_ms,
                    schedule.last_run_id,
                ])? > 0;
            if !added {
                // Its definition and cursor replaced; `created_ms` and `last_run_id` kept.
                tx.prepare_cached(
                    "UPDATE agent_schedules SET cron = ?3, timezone = ?4, overlap = ?5, catch_up_ms = ?6, input = ?7,
                         paused = ?8, updated_ms = ?9, next_tick_ms = ?10, buffered_tick_ms = ?11,
                         version = version + 1
                     WHERE agent = ?1 AND name = ?2",
                )?
                .execute(params![
                    schedule.agent,
                    schedule.name,
                    schedule.cron,
                    schedule.timezone,
                    schedule.overlap,
                    schedule.catch_up_ms,
                    schedule.input,
                    schedule.paused,
                    schedule.updated_ms,
                    schedule.next_tick_ms,
                    schedule.buffered_tick_ms,
                ])?;
            }
            tx.commit()?;
            Ok(added)
        })
    }

    fn schedules<'a>(&'a self, agent: Option<&'a str>) -> StoreFuture<'a, Vec<ScheduleRecord>> {
        let agent = agent.map(str::to_owned);
        let what = agent
            .as_ref()
            .map_or_else(|| "list the schedules".to_owned(), |a| format!("list the schedules of agent {a}"));
        self.call(what, move |conn| {
            // By agent, then name: the key's order (bytewise, SQLite's `BINARY` collation).
            let sql = match agent {
                Some(_) => select_schedules!(" WHERE agent = ?1 ORDER BY agent, name"),
                None => select_schedules!(" ORDER BY agent, name"),
            };
            let mut stmt = conn.prepare_cached(sql)?;
            let mut rows = stmt.query(rusqlite::params_from_iter(&agent))?;
            let mut schedules = Vec::new();
            while let Some(row) = rows.next()? {
                schedules.push(read_schedule(row)?);
            }
            Ok(schedules)
        })
    }

    fn pause_schedule<'a>(
        &'a self,
        agent: &'a str,
        name: &'a str,
        paused: bool,
        next_tick_ms: i64,
        now_ms: i64,
    ) -> StoreFuture<'a, bool> {
        let (agent, name) = (agent.to_owned(), name.to_owned());
        let what = format!("{} schedule {name} of agent {agent}", if paused { "pause" } else { "resume" });
        self.call(what, move |conn| {
            let changed = conn
                .prepare_cached(
                    "UPDATE agent_schedules SET paused = ?3, next_tick_ms = ?4, updated_ms = ?5, version = version + 1
                     WHERE agent = ?1 AND name = ?2",
                )?
                .execute(params![agent, name, paused, next_tick_ms, now_ms])?;
            Ok(changed > 0)
        })
    }

    fn delete_schedule<'a>(&'a self, agent: &'a str, name: &'a str) -> StoreFuture<'a, bool> {
        let (agent, name) = (agent.to_owned(), name.to_owned());
        self.call(format!("delete schedule {name} of agent {agent}"), move |conn| {
            let deleted = conn
                .prepare_cached("DELETE FROM agent_schedules WHERE agent = ?1 AND name = ?2")?
                .execute(params![agent, name])?;
            Ok(deleted > 0)
        })
    }

    fn advance_schedule<'a>(&'a self, advance: &'a ScheduleAdvance) -> StoreFuture<'a, bool> {
        let advance = advance.clone();
        self.call(format!("advance schedule {} of agent {}", advance.name, advance.agent), move |conn| {
            let version = u64_to_db(STORE, "schedule version", advance.version)?;
            // One statement, guarded by the version read: of concurrent moves, the first to
            // take the write lock matches; it bumps the version, so the others match nothing.
            let changed = conn
                .prepare_cached(
                    "UPDATE agent_schedules SET next_tick_ms = ?4, buffered_tick_ms = ?5, last_run_id = ?6,
                         updated_ms = ?7, version = version + 1
                     WHERE agent = ?1 AND name = ?2 AND version = ?3 AND created_ms = ?8",
                )?
                .execute(params![
                    advance.agent,
                    advance.name,
                    version,
                    advance.next_tick_ms,
                    advance.buffered_tick_ms,
                    advance.last_run_id,
                    advance.now_ms,
                    advance.created_ms
                ])?;
            Ok(changed > 0)
        })
    }

    fn delete_run<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, bool> {
        let run_id = run_id.to_owned();
        self.call(format!("delete run {run_id}"), move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut deleted = 0;
            for sql in [
                "DELETE FROM agent_journal WHERE run_id = ?1",
                "DELETE FROM agent_snapshots WHERE run_id = ?1",
                "DELETE FROM agent_inputs WHERE run_id = ?1",
                "DELETE FROM agent_run_inputs WHERE run_id = ?1",
                "DELETE FROM agent_state_cancels WHERE run_id = ?1",
                // Its own lineage; its descendants' rows (`parent_run_id`) stay.
                "DELETE FROM agent_lineage WHERE run_id = ?1",
                "DELETE FROM agent_signals WHERE run_id = ?1",
                "DELETE FROM agent_timers WHERE run_id = ?1",
                "DELETE FROM agent_runs WHERE run_id = ?1",
            ] {
                deleted += tx.prepare_cached(sql)?.execute([&run_id])?;
            }
            tx.commit()?;
            Ok(deleted > 0)
        })
    }

    fn apply_retention<'a>(&'a self, policy: &'a Retention, now_ms: i64) -> StoreFuture<'a, RetentionReport> {
        let policy = policy.clone();
        self.call("apply retention".to_owned(), move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut report = RetentionReport::default();
            if let Some(age) = policy.drop_finished_after {
                let cutoff = now_ms.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX));
                macro_rules! of_dropped_runs {
                    ($table:literal) => {
                        concat!(
                            "DELETE FROM ",
                            $table,
                            " WHERE run_id IN (SELECT run_id FROM agent_runs WHERE status IN ",
                            finished_sql!(),
                            " AND updated_ms < ?1)"
                        )
                    };
                }
                report.entries += tx.prepare_cached(of_dropped_runs!("agent_journal"))?.execute([cutoff])? as u64;
                report.snapshots += tx.prepare_cached(of_dropped_runs!("agent_snapshots"))?.execute([cutoff])? as u64;
                tx.prepare_cached(of_dropped_runs!("agent_inputs"))?.execute([cutoff])?;
                tx.prepare_cached(of_dropped_runs!("agent_run_inputs"))?.execute([cutoff])?;
                tx.prepare_cached(of_dropped_runs!("agent_state_cancels"))?.execute([cutoff])?;
                tx.prepare_cached(of_dropped_runs!("agent_lineage"))?.execute([cutoff])?;
                tx.prepare_cached(of_dropped_runs!("agent_signals"))?.execute([cutoff])?;
                tx.prepare_cached(of_dropped_runs!("agent_timers"))?.execute([cutoff])?;
                report.runs += tx
                    .prepare_cached(concat!(
                        "DELETE FROM agent_runs WHERE status IN ",
                        finished_sql!(),
                        " AND updated_ms < ?1"
                    ))?
                    .execute([cutoff])? as u64;
            }
            if let Some(keep) = policy.keep_snapshots {
                let keep = i64::try_from(keep.max(1)).unwrap_or(i64::MAX);
                report.snapshots += tx
                    .prepare_cached(
                        "DELETE FROM agent_snapshots WHERE id IN (
                            SELECT id FROM (
                                SELECT id, row_number() OVER (
                                    PARTITION BY run_id ORDER BY seq DESC, taken_ms DESC, id DESC) AS rank
                                FROM agent_snapshots) AS ranked
                            WHERE rank > ?1)",
                    )?
                    .execute([keep])? as u64;
                report.entries += tx
                    .prepare_cached(
                        "DELETE FROM agent_journal WHERE seq <= (
                            SELECT min(s.seq) FROM agent_snapshots AS s WHERE s.run_id = agent_journal.run_id)",
                    )?
                    .execute([])? as u64;
            }
            tx.commit()?;
            Ok(report)
        })
    }
}
