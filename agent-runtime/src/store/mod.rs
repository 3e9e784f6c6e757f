//! Checkpoint stores: where durable runs keep their records.
//!
//! A store is dumb, ordered storage; the runtime decides what the records mean. Per run it
//! keeps:
//! - one [`RunRecord`] (id, agent, status, timestamps), upserted;
//! - a journal of [`JournalEntry`]s, appended in batches, each batch in one transaction,
//!   with strictly increasing `seq` (an entry whose `seq` is not above the run's last one is
//!   refused with [`StoreError::Conflict`] and nothing of its batch is written);
//! - [`Snapshot`]s: whole checkpoints (JSON) covering the journal up to their `seq`;
//! - [`InputRecord`]s: requests for human input and their answers, so that another process
//!   can answer a run that is waiting.
//!
//! Invariants every implementation keeps (the conformance tests check them):
//! - `append` and `save_run_snapshot` are atomic: after a crash either the whole batch (or
//!   the snapshot) and the run row are there, or none of it.
//! - `journal(run, after)` returns the entries with `seq > after` in ascending order.
//! - `answer_input` never overwrites an answer: the first answer wins.
//! - Retention never deletes the newest snapshot of a run, nor a run that is not finished.
//!   Durable runs keep their two newest snapshots, so that recovery can fall back on the
//!   older when the newest is damaged ([`CheckpointStore::snapshots`] lists them).
//! - A database written by a newer schema than this build knows is refused with
//!   [`StoreError::SchemaTooNew`], never read as if it were ours: a version above the newest
//!   known in any row of the schema table is enough. A schema table with more than one row
//!   is refused with [`StoreError::SchemaAmbiguous`].

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agent_core::{AgentStatus, BoxError, InputRequestRecord};

mod memory;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod migrate;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

/// Milliseconds since the Unix epoch, as records keep time.
fn ms_of(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Now, as records keep time.
pub(crate) fn now_ms() -> i64 {
    ms_of(SystemTime::now())
}

/// The time a record's milliseconds stand for.
pub(crate) fn time_of(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// What a store's methods return: a boxed future, so stores can be used as `dyn CheckpointStore`.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database or its driver reported an error.
    #[error("{store} store: {message}")]
    Backend {
        /// Which store (`"sqlite"`, `"postgres"`, `"memory"`).
        store: &'static str,
        /// What was being done, and what went wrong.
        message: String,
        /// The driver's error.
        #[source]
        source: Option<BoxError>,
    },
    /// A record could not be read back (bad JSON, an unknown status, a truncated row).
    #[error("{store} store: corrupt record: {message}")]
    Corrupt {
        /// Which store.
        store: &'static str,
        /// What is wrong, and where.
        message: String,
    },
    /// The database was written by a newer version of `agent`.
    #[error("{store} store: schema version {found} is newer than the {supported} this build knows")]
    SchemaTooNew {
        /// Which store.
        store: &'static str,
        /// The version found in the database.
        found: u32,
        /// The newest version this build knows.
        supported: u32,
    },
    /// The database's schema table does not hold exactly one version (it must: see the
    /// stores' migrations); the database is left untouched.
    #[error("{store} store: the schema table holds {rows} rows (versions {lowest} to {highest}); it must hold one")]
    SchemaAmbiguous {
        /// Which store.
        store: &'static str,
        /// Rows found.
        rows: u64,
        /// The lowest version found.
        lowest: i64,
        /// The highest version found.
        highest: i64,
    },
    /// A journal entry's `seq` is not above the run's last one.
    #[error("{store} store: journal of run {run_id}: seq {seq} is not above the last one ({last})")]
    Conflict {
        /// Which store.
        store: &'static str,
        /// The run.
        run_id: String,
        /// The refused entry's `seq`.
        seq: u64,
        /// The run's last `seq`.
        last: u64,
    },
}

/// A run as a store lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunRecord {
    /// The run's id (a UUID).
    pub run_id: String,
    /// The agent's name.
    pub agent: String,
    /// Where the run stands.
    pub status: AgentStatus,
    /// When the run started, in milliseconds since the Unix epoch.
    pub created_ms: i64,
    /// When the run was last recorded, in milliseconds since the Unix epoch.
    pub updated_ms: i64,
}

/// One journal entry: a state's completion (or another event) recorded before its
/// successors start. `payload` is JSON the runtime writes and reads; stores keep it as is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalEntry {
    /// Position in the run's journal, from 1, strictly increasing.
    pub seq: u64,
    /// The state the entry is about (empty for run-level events).
    pub state: String,
    /// The runtime's record, as JSON.
    pub payload: String,
    /// When it was recorded, in milliseconds since the Unix epoch.
    pub at_ms: i64,
}

/// A whole checkpoint of a run, covering its journal up to `seq`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The last journal entry this snapshot includes (0: none).
    pub seq: u64,
    /// When it was taken, in milliseconds since the Unix epoch.
    pub taken_ms: i64,
    /// The checkpoint, as `Checkpoint::to_json` writes it.
    pub data: String,
}

/// A request for human input of one run, and its answer once there is one: the run's id and
/// the request as a checkpoint keeps it. It reads (and writes) as its request, so
/// `record.prompt` is `record.request.prompt`.
///
/// ```
/// use agent_core::InputRequestRecord;
/// use agent_runtime::store::InputRecord;
/// let mut r = InputRecord {
///     run_id: "run-1".into(),
///     request: InputRequestRecord::new("input-1".into(), "Approve?".into(), 0),
/// };
/// r.answer = Some("yes".into());
/// assert_eq!((r.prompt.as_str(), r.request.answer.as_deref()), ("Approve?", Some("yes")));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputRecord {
    /// The run that asked.
    pub run_id: String,
    /// The request: its id (unique within the run), prompt, times, default and answer.
    pub request: InputRequestRecord,
}

impl std::ops::Deref for InputRecord {
    type Target = InputRequestRecord;
    fn deref(&self) -> &InputRequestRecord {
        &self.request
    }
}

impl std::ops::DerefMut for InputRecord {
    fn deref_mut(&mut self) -> &mut InputRequestRecord {
        &mut self.request
    }
}

/// Which runs [`CheckpointStore::list_runs`] returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunQuery {
    /// Only this agent's runs.
    pub agent: Option<String>,
    /// Only runs with this status.
    pub status: Option<AgentStatus>,
    /// At most this many, newest first (all when `None`).
    pub limit: Option<usize>,
}

/// How much a store keeps: see [`CheckpointStore::apply_retention`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// Keep only the newest `n` snapshots of each run (at least 1 is always kept), and drop
    /// the journal entries the oldest kept snapshot covers.
    pub keep_snapshots: Option<usize>,
    /// Drop finished runs (completed, failed, cancelled, timed out) last updated longer ago
    /// than this, with everything recorded for them.
    pub drop_finished_after: Option<Duration>,
}

/// What [`CheckpointStore::apply_retention`] deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Snapshots deleted.
    pub snapshots: u64,
    /// Journal entries deleted.
    pub entries: u64,
    /// Runs deleted.
    pub runs: u64,
}

/// Where durable runs are recorded. Implemented by [`MemoryStore`], [`SqliteStore`] and
/// [`PostgresStore`]; `dyn`-compatible, shared as `Arc<dyn CheckpointStore>`.
pub trait CheckpointStore: Send + Sync + 'static {
    /// The store's kind, for messages: `"memory"`, `"sqlite"`, `"postgres"`.
    fn kind(&self) -> &'static str;

    /// Insert or update a run's row.
    fn upsert_run<'a>(&'a self, run: &'a RunRecord) -> StoreFuture<'a, ()>;

    /// One run's row.
    fn get_run<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<RunRecord>>;

    /// Runs matching `query`, newest (`created_ms`) first.
    fn list_runs<'a>(&'a self, query: &'a RunQuery) -> StoreFuture<'a, Vec<RunRecord>>;

    /// Upsert `run` and append `entries` to its journal, all in one transaction.
    fn append<'a>(&'a self, run: &'a RunRecord, entries: &'a [JournalEntry]) -> StoreFuture<'a, ()>;

    /// The run's journal entries with `seq > after`, ascending.
    fn journal<'a>(&'a self, run_id: &'a str, after: u64) -> StoreFuture<'a, Vec<JournalEntry>>;

    /// Record a snapshot of a run (whose row exists).
    fn save_snapshot<'a>(&'a self, run_id: &'a str, snapshot: &'a Snapshot) -> StoreFuture<'a, ()>;

    /// Upsert `run` and record a snapshot of it, in one transaction: after a crash either
    /// both are there or neither (a run is never listed without a snapshot to resume from).
    /// The default does the two one after the other; the stores here override it.
    fn save_run_snapshot<'a>(&'a self, run: &'a RunRecord, snapshot: &'a Snapshot) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.upsert_run(run).await?;
            self.save_snapshot(&run.run_id, snapshot).await
        })
    }

    /// The run's newest snapshot (highest `seq`, then newest `taken_ms`).
    fn latest_snapshot<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<Snapshot>>;

    /// The run's newest snapshots, newest first (the order of
    /// [`latest_snapshot`](CheckpointStore::latest_snapshot)), at most `limit` of them:
    /// recovery falls back on an older one when the newest is damaged. The default returns
    /// only the newest; the stores here override it.
    fn snapshots<'a>(&'a self, run_id: &'a str, limit: usize) -> StoreFuture<'a, Vec<Snapshot>> {
        Box::pin(async move {
            if limit == 0 {
                return Ok(Vec::new());
            }
            Ok(self.latest_snapshot(run_id).await?.into_iter().collect())
        })
    }

    /// Insert or update a request for human input (keyed by run and request id). An answer
    /// already recorded is kept.
    fn put_input<'a>(&'a self, input: &'a InputRecord) -> StoreFuture<'a, ()>;

    /// Requests of one run (or of every run), oldest first; only unanswered ones if
    /// `pending_only`.
    fn inputs<'a>(&'a self, run_id: Option<&'a str>, pending_only: bool) -> StoreFuture<'a, Vec<InputRecord>>;

    /// Answer a request; `false` (and nothing changes) if it is unknown or already answered.
    fn answer_input<'a>(
        &'a self,
        run_id: &'a str,
        request_id: &'a str,
        answer: &'a str,
        defaulted: bool,
        at_ms: i64,
    ) -> StoreFuture<'a, bool>;

    /// Delete a run and everything recorded for it; `false` if there was none.
    fn delete_run<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, bool>;

    /// Apply `policy`, `now_ms` being the current time.
    fn apply_retention<'a>(&'a self, policy: &'a Retention, now_ms: i64) -> StoreFuture<'a, RetentionReport>;
}
