//! Checkpoint stores: where durable runs keep their records.
//!
//! A store is dumb, ordered storage; the runtime decides what the records mean. Per run it
//! keeps:
//! - one [`RunRecord`] (id, agent, status, timestamps, and who owns the run: owner, lease
//!   end, epoch);
//! - a journal of [`JournalEntry`]s, appended in batches, each batch in one transaction,
//!   with strictly increasing `seq` (an entry whose `seq` is not above the run's last one is
//!   refused with [`StoreError::Conflict`] and nothing of its batch is written);
//! - [`Snapshot`]s: whole checkpoints (JSON) covering the journal up to their `seq`; a run's
//!   snapshots have distinct `seq`s (a second one with a `seq` already there is refused with
//!   [`StoreError::Conflict`]);
//! - [`InputRecord`]s: requests for human input and their answers, so that another process
//!   can answer a run that is waiting;
//! - what other processes ask of the run while it goes on: a [`RunControl`] on its row, and
//!   pending cancels of its states (see [`cancel_state`] for the rules they keep);
//! - its [`Lineage`], when another run made it (a fork, a child), written once;
//! - the [`SignalRecord`]s sent to it and the [`TimerRecord`]s of its durable waits (see
//!   the module `signals` for the rules they keep).
//!
//! Beside runs, a store keeps [`ScheduleRecord`]s: cron schedules of an agent and their
//! cursors, moved by guarded writes (see the module `schedules`).
//!
//! Ownership: a run has at most one owner at a time, a worker (see
//! [`WorkerId`](crate::WorkerId)) that holds a lease on it until a time kept by the store's
//! own clock (PostgreSQL's `now()`, SQLite's and the memory store's clock of the machine).
//! - [`CheckpointStore::claim_run`] takes a run in one conditional write: only a run with
//!   no owner, or whose lease has ended, (and unfinished, unless asked otherwise) is taken;
//!   its epoch goes up by one and the new owner and lease end are returned. Otherwise the
//!   claim says who holds the run and until when, or that it is finished or missing. Of
//!   concurrent claims of one run, exactly one wins.
//! - [`renew_lease`](CheckpointStore::renew_lease) (owner and epoch must match) moves the
//!   lease end; [`release_run`](CheckpointStore::release_run) (epoch must match) clears the
//!   owner, so another can claim at once.
//! - Every write an owner makes carries its epoch and is conditional on it in the same
//!   transaction: the run row (`RunRecord::epoch` of [`upsert_run`](CheckpointStore::upsert_run),
//!   [`append`](CheckpointStore::append), [`save_run_snapshot`](CheckpointStore::save_run_snapshot)),
//!   a snapshot ([`save_snapshot`](CheckpointStore::save_snapshot)), the pruning of its
//!   snapshots ([`prune_snapshots`](CheckpointStore::prune_snapshots)). A write that finds
//!   another epoch (the run was taken over, or deleted) is refused with
//!   [`StoreError::Fenced`] and writes nothing. Epoch 0 is the epoch of a run nobody ever
//!   claimed: writes with epoch 0 to a missing run create its row (unowned), as before
//!   ownership existed; writes with a higher epoch never create one.
//! - The run's own requests for human input and the answers it consumes
//!   ([`put_input_fenced`](CheckpointStore::put_input_fenced),
//!   [`answer_input_fenced`](CheckpointStore::answer_input_fenced)) are fenced too, and so
//!   is the owner's taking of the cancels asked of its states
//!   ([`take_state_cancels`](CheckpointStore::take_state_cancels)). Answers
//!   from other processes ([`answer_input`](CheckpointStore::answer_input)) are not, nor the
//!   administrative
//!   [`delete_run`](CheckpointStore::delete_run) and
//!   [`apply_retention`](CheckpointStore::apply_retention).
//!
//! A *queued* run (submitted, not started; see the fleet) is a row with status
//! [`AgentStatus::Idle`], no owner and epoch 0; its columns `input` (the context it starts
//! from), `graph_hash` and `idempotency_key` (unique per agent) exist in the schema for it.
//!
//! Outages: a store's failure is transient ([`StoreError::is_transient`]: a connection
//! refused or lost, a server restarting, SQLite's file locked) or final (everything else).
//! [`RetryingStore`] retries transient failures with backoff for a bounded time (30 s by
//! default); agents wrap their store in one (see `Agent::store_retry`).
//!
//! Invariants every implementation keeps (the conformance tests check them):
//! - `append`, `save_run_snapshot` and `prune_snapshots` are atomic: after a crash either the
//!   whole batch (or the snapshot) and the run row are there, or none of it.
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

mod control;
mod history;
mod lineage;
mod memory;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod migrate;
#[cfg(feature = "postgres")]
mod postgres;
mod queue;
mod retry;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod run_filter;
mod schedules;
mod signals;
#[cfg(feature = "sqlite")]
mod sqlite;
mod transient;

pub use control::{cancel_run, cancel_state, pause_run, Cancelling, ControlError, RunControl};
pub use history::{checkpoint_at, history, Commit};
pub use lineage::{Lineage, LineageKind};
pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
pub use queue::{ClaimNext, NextRun, Served, Submission, Submitted};
pub use retry::{RetryingStore, DEFAULT_STORE_RETRY};
pub use schedules::{ScheduleAdvance, ScheduleRecord};
pub use signals::{SignalRecord, SignalSent, TimerRecord};
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
    /// A journal entry's `seq` is not above the run's last one, or a snapshot's `seq` is one
    /// the run already has a snapshot of (`last` is then the run's highest snapshot `seq`).
    #[error("{store} store: run {run_id}: seq {seq} is not above the last one ({last})")]
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
    /// A write for a run by an owner that no longer holds it: the run's epoch in the store
    /// is not the one the write carries (another owner claimed it, or it was deleted).
    /// Nothing of the write was done.
    #[error("{store} store: run {run_id} is fenced: the write carries epoch {epoch}, the store holds {current}")]
    Fenced {
        /// Which store.
        store: &'static str,
        /// The run.
        run_id: String,
        /// The epoch the write carried.
        epoch: u64,
        /// The run's epoch in the store (0 when it has no row).
        current: u64,
    },
}

impl StoreError {
    /// The error of a write with `epoch` that found the run at `current`.
    pub(crate) fn fenced(store: &'static str, run_id: &str, epoch: u64, current: u64) -> StoreError {
        StoreError::Fenced { store, run_id: run_id.to_owned(), epoch, current }
    }
}

/// A run as a store lists it. Made with [`RunRecord::new`] (more fields may come).
///
/// ```
/// use agent_runtime::store::RunRecord;
/// use agent_runtime::AgentStatus;
/// let run = RunRecord::new("run-1", "demo", AgentStatus::Running, 1, 1);
/// assert_eq!((run.owner, run.lease_until_ms, run.epoch), (None, None, 0));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
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
    /// The worker holding the run's lease, if any (see [`WorkerId`](crate::WorkerId)).
    /// Only claims, renewals and releases change it; other writes leave it as stored.
    pub owner: Option<String>,
    /// When the owner's lease ends, in milliseconds since the Unix epoch, by the store's
    /// clock, as the store read it; kept after it passed (the owner is then gone) until
    /// another claim or a release. `None` without an owner.
    pub lease_until_ms: Option<i64>,
    /// How many times the run has been claimed (0: never). Writes carry it: a write whose
    /// epoch is not the stored one is [`StoreError::Fenced`]. Only claims change it.
    pub epoch: u64,
}

impl RunRecord {
    /// A run that nobody owns (epoch 0).
    pub fn new(
        run_id: impl Into<String>,
        agent: impl Into<String>,
        status: AgentStatus,
        created_ms: i64,
        updated_ms: i64,
    ) -> RunRecord {
        RunRecord {
            run_id: run_id.into(),
            agent: agent.into(),
            status,
            created_ms,
            updated_ms,
            owner: None,
            lease_until_ms: None,
            epoch: 0,
        }
    }

    /// This record, carrying `epoch` (the owner's, for its writes).
    pub fn with_epoch(mut self, epoch: u64) -> RunRecord {
        self.epoch = epoch;
        self
    }

    /// This record with `status`, recorded at `updated_ms`.
    pub fn with_status(mut self, status: AgentStatus, updated_ms: i64) -> RunRecord {
        self.status = status;
        self.updated_ms = updated_ms;
        self
    }

    /// Whether a live lease holds the run at `now_ms` (by the store's clock).
    pub fn is_leased_at(&self, now_ms: i64) -> bool {
        self.owner.is_some() && self.lease_until_ms.is_some_and(|until| until > now_ms)
    }

    /// How the run stands at `now_ms`, as the command line's `list` and the console say
    /// it: its status, except that a run nobody runs is never `Running`: `queued`
    /// (submitted, never started), `interrupted` (given back unfinished: any worker or
    /// `resume` goes on) or `abandoned` (its owner's lease ended: the owner is gone).
    ///
    /// ```
    /// use agent_runtime::{store::RunRecord, AgentStatus};
    /// let queued = RunRecord::new("r", "a", AgentStatus::Idle, 1, 1);
    /// assert_eq!(queued.standing(5), "queued");
    /// let mut gone = queued.with_epoch(1).with_status(AgentStatus::Running, 2);
    /// (gone.owner, gone.lease_until_ms) = (Some("w".into()), Some(4));
    /// assert_eq!(gone.standing(5), "abandoned");
    /// assert_eq!(gone.standing(3), "Running");
    /// ```
    pub fn standing(&self, now_ms: i64) -> &'static str {
        match self.status {
            AgentStatus::Idle if self.epoch == 0 => "queued",
            AgentStatus::Idle | AgentStatus::Running if self.owner.is_none() => "interrupted",
            AgentStatus::Idle | AgentStatus::Running if !self.is_leased_at(now_ms) => "abandoned",
            status => status.as_str(),
        }
    }
}

/// What [`CheckpointStore::claim_run`] is asked: take run `run_id` for `owner`, for `ttl`.
///
/// ```
/// use std::time::Duration;
/// use agent_runtime::store::{ClaimRequest, RunRecord};
/// use agent_runtime::AgentStatus;
/// let fresh = RunRecord::new("run-1", "demo", AgentStatus::Running, 1, 1);
/// let claim = ClaimRequest::new("run-1", "host-1-ab12", Duration::from_secs(15)).create(fresh);
/// assert!(claim.create.is_some() && !claim.finished && !claim.reclaim);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClaimRequest {
    /// The run to take.
    pub run_id: String,
    /// Who takes it (a [`WorkerId`](crate::WorkerId), as text).
    pub owner: String,
    /// How long the lease lasts from the store's `now`.
    pub ttl: Duration,
    /// When the store has no such run: create this row (its status, agent and times),
    /// owned at epoch 1. Without it a missing run is [`Claim::Missing`].
    pub create: Option<RunRecord>,
    /// Also take a finished run (an explicit recovery of it). Without it a finished run is
    /// [`Claim::Finished`].
    pub finished: bool,
    /// Also take the run when `owner` itself holds a live lease on it: the caller knows it
    /// no longer runs it (a run of this process whose future was dropped).
    pub reclaim: bool,
    /// The graph hash recorded with a row this claim creates (see
    /// [`ClaimRequest::graph_hash`]).
    pub graph_hash: Option<String>,
    /// The context (JSON) recorded with a row this claim creates (see
    /// [`ClaimRequest::input`]).
    pub input: Option<String>,
}

impl ClaimRequest {
    /// Take `run_id` for `owner` for `ttl`: only an existing, unfinished run that nobody
    /// holds.
    pub fn new(run_id: impl Into<String>, owner: impl Into<String>, ttl: Duration) -> ClaimRequest {
        ClaimRequest {
            run_id: run_id.into(),
            owner: owner.into(),
            ttl,
            create: None,
            finished: false,
            reclaim: false,
            graph_hash: None,
            input: None,
        }
    }

    /// Create the run as `row` (owned, epoch 1) if the store has no such run.
    pub fn create(mut self, row: RunRecord) -> ClaimRequest {
        self.create = Some(row);
        self
    }

    /// Also take a finished run.
    pub fn finished(mut self, yes: bool) -> ClaimRequest {
        self.finished = yes;
        self
    }

    /// Also take a run whose live lease is the owner's own.
    pub fn reclaim(mut self, yes: bool) -> ClaimRequest {
        self.reclaim = yes;
        self
    }

    /// Record `hash` as the graph of a run this claim creates, so workers serving that
    /// graph can take the run over if its owner dies.
    pub fn graph_hash(mut self, hash: impl Into<String>) -> ClaimRequest {
        self.graph_hash = Some(hash.into());
        self
    }

    /// Record `context` (JSON) as the input of a run this claim creates: a run whose process
    /// dies before its first snapshot goes on from it, as a submitted run does.
    pub fn input(mut self, context: impl Into<String>) -> ClaimRequest {
        self.input = Some(context.into());
        self
    }

    /// The lease's length in milliseconds (at least 1), as the stores write it.
    pub(crate) fn ttl_ms(&self) -> i64 {
        ttl_ms(self.ttl)
    }
}

/// A lease's length in milliseconds, at least 1.
pub(crate) fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1)
}

/// What [`CheckpointStore::claim_run`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Taken: the run's row as it is now, with the new owner, lease end and epoch (1 for a
    /// row just created).
    Taken(RunRecord),
    /// Another owner holds a live lease: its row (`owner`, `lease_until_ms`).
    Held(RunRecord),
    /// The run is finished (and the claim did not ask for finished runs): its row.
    Finished(RunRecord),
    /// The store has no such run (and the claim did not ask to create it).
    Missing,
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

/// Which runs [`CheckpointStore::list_runs`] returns (and [`CheckpointStore::count_runs`]
/// counts): those matching every filter given, newest (`created_ms`, then `run_id`) first,
/// `offset` of them skipped, at most `limit`.
///
/// ```
/// use agent_runtime::store::{RunQuery, RunRecord};
/// use agent_runtime::AgentStatus;
/// // The second page of 50 of the report runs created since a time, that failed.
/// let query = RunQuery {
///     agent: Some("reports".into()),
///     status: Some(AgentStatus::Failed),
///     created_since_ms: Some(1_700_000_000_000),
///     limit: Some(50),
///     offset: 50,
///     ..RunQuery::default()
/// };
/// let run = RunRecord::new("run-7", "reports", AgentStatus::Failed, 1_700_000_000_001, 0);
/// assert!(query.matches(&run));
/// assert!(!RunQuery { id_contains: Some("run-8".into()), ..query }.matches(&run));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunQuery {
    /// Only this agent's runs.
    pub agent: Option<String>,
    /// Only runs with this status.
    pub status: Option<AgentStatus>,
    /// At most this many, newest first (all when `None`).
    pub limit: Option<usize>,
    /// Skip this many of the matching runs first (paging).
    pub offset: usize,
    /// Only runs created at or after this time (milliseconds since the Unix epoch).
    pub created_since_ms: Option<i64>,
    /// Only runs created before this time.
    pub created_before_ms: Option<i64>,
    /// Only runs whose row changed at or after this time (`updated_ms`).
    pub updated_since_ms: Option<i64>,
    /// Only runs whose id contains this text (case matters).
    pub id_contains: Option<String>,
}

impl RunQuery {
    /// Whether `run` passes the query's filters (all but `offset` and `limit`).
    pub fn matches(&self, run: &RunRecord) -> bool {
        self.agent.as_ref().is_none_or(|a| *a == run.agent)
            && self.status.is_none_or(|s| s == run.status)
            && self.created_since_ms.is_none_or(|t| run.created_ms >= t)
            && self.created_before_ms.is_none_or(|t| run.created_ms < t)
            && self.updated_since_ms.is_none_or(|t| run.updated_ms >= t)
            && self.id_contains.as_deref().is_none_or(|needle| run.run_id.contains(needle))
    }
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

    /// Insert or update a run's row (not its owner, lease or epoch): fenced by `run.epoch`.
    fn upsert_run<'a>(&'a self, run: &'a RunRecord) -> StoreFuture<'a, ()>;

    /// One run's row.
    fn get_run<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<RunRecord>>;

    /// Runs matching `query`, newest (`created_ms`) first.
    fn list_runs<'a>(&'a self, query: &'a RunQuery) -> StoreFuture<'a, Vec<RunRecord>>;

    /// How many runs match `query`'s filters (its `offset` and `limit` aside). The default
    /// lists them; the stores of this crate count in the database.
    fn count_runs<'a>(&'a self, query: &'a RunQuery) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let all = RunQuery { limit: None, offset: 0, ..query.clone() };
            Ok(self.list_runs(&all).await?.len() as u64)
        })
    }

    /// Upsert `run` and append `entries` to its journal, all in one transaction; fenced by
    /// `run.epoch`.
    fn append<'a>(&'a self, run: &'a RunRecord, entries: &'a [JournalEntry]) -> StoreFuture<'a, ()>;

    /// The run's journal entries with `seq > after`, ascending.
    fn journal<'a>(&'a self, run_id: &'a str, after: u64) -> StoreFuture<'a, Vec<JournalEntry>>;

    /// Record a snapshot of a run (whose row exists), by the owner of `epoch`: fenced.
    fn save_snapshot<'a>(&'a self, run_id: &'a str, epoch: u64, snapshot: &'a Snapshot) -> StoreFuture<'a, ()>;

    /// Upsert `run` and record a snapshot of it, in one transaction: after a crash either
    /// both are there or neither (a run is never listed without a snapshot to resume from).
    /// Fenced by `run.epoch`.
    fn save_run_snapshot<'a>(&'a self, run: &'a RunRecord, snapshot: &'a Snapshot) -> StoreFuture<'a, ()>;

    /// Take run `claim.run_id` for `claim.owner`, in one conditional write (see the module
    /// docs): [`Claim::Taken`] with the new epoch and lease end, or why not.
    fn claim_run<'a>(&'a self, claim: &'a ClaimRequest) -> StoreFuture<'a, Claim>;

    /// Queue a run (see [`Submission`]): a row with status [`AgentStatus::Idle`], no owner,
    /// epoch 0, its graph hash and input, for a worker to claim
    /// ([`claim_next`](CheckpointStore::claim_next)). With an idempotency key another run
    /// of the agent already has, nothing is written and that run is returned
    /// ([`Submitted::created`] `false`); of concurrent submissions with one key exactly one
    /// creates the run. With debounce, the pending debounced run of its agent and flow key,
    /// if any, gets its input and a later start instead (returned, `created` `false`); a
    /// debounce without a flow key is refused ([`StoreError::Backend`]) and writes nothing.
    fn submit_run<'a>(&'a self, submission: &'a Submission) -> StoreFuture<'a, Submitted>;

    /// The context a submitted run starts from (JSON), as [`submit_run`](CheckpointStore::submit_run)
    /// recorded it; `None` for a run that was not submitted, or no such run.
    fn run_input<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<String>>;

    /// Take up to `ask.limit` runs a worker serving `ask.serves` can run: unfinished, not
    /// paused, recorded under a served graph hash, with no owner or an ended lease, and past
    /// their start time; oldest first, or round robin between flow keys and within their
    /// keys' limits when runs have keys, each claimed as
    /// [`claim_run`](CheckpointStore::claim_run) does (see the module `queue`). Fewer (or
    /// none) when there are no more.
    fn claim_next<'a>(&'a self, ask: &'a ClaimNext) -> StoreFuture<'a, Vec<NextRun>>;

    /// Wake-ups for workers: a message whenever a run may have become claimable (submitted,
    /// or handed back), coalesced, from any process sharing the store. `None` when the
    /// store has none (workers poll; they poll with wake-ups too, which only shorten the
    /// wait). The stream ends when its connection does; ask again. On PostgreSQL,
    /// `LISTEN`/`NOTIFY` on a connection of its own.
    fn wake_ups<'a>(&'a self) -> StoreFuture<'a, Option<tokio::sync::mpsc::Receiver<()>>> {
        Box::pin(std::future::ready(Ok(None)))
    }

    /// Ask the owner of run `run_id` to `control` it (see [`RunControl`]): recorded on its
    /// row if the run is unfinished (a pending cancel is kept over a pause); its owner reads
    /// it within a second and acts. Whether a run was marked. Stores that cannot keep
    /// requests say so (the default).
    fn request_control<'a>(&'a self, run_id: &'a str, control: RunControl) -> StoreFuture<'a, bool> {
        let _ = (run_id, control);
        Box::pin(std::future::ready(Err(StoreError::Backend {
            store: self.kind(),
            message: "this store keeps no requests for running runs".to_owned(),
            source: None,
        })))
    }

    /// What was asked of run `run_id` and not yet taken up by a claim, if anything.
    fn run_control<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<RunControl>> {
        let _ = run_id;
        Box::pin(std::future::ready(Ok(None)))
    }

    /// Ask the owner of run `run_id` to cancel its state `state` (see the module
    /// `control`): recorded, after the run's other pending requests, if the run exists and
    /// is unfinished (`true`); a state already asked for and not yet taken keeps its one
    /// request. `false` for a finished run or none. Claims leave requests where they are:
    /// the run's next owner takes them. Stores that cannot keep requests say so (the
    /// default, as [`request_control`](CheckpointStore::request_control)).
    fn request_state_cancel<'a>(&'a self, run_id: &'a str, state: &'a str) -> StoreFuture<'a, bool> {
        let _ = (run_id, state);
        Box::pin(std::future::ready(Err(StoreError::Backend {
            store: self.kind(),
            message: "this store keeps no requests for running runs".to_owned(),
            source: None,
        })))
    }

    /// The states whose cancel is pending for run `run_id`, oldest request first, taken
    /// (deleted) by its owner at `epoch` in the same step, so each request is taken once.
    /// [`StoreError::Fenced`] (and nothing taken) when the run is not at `epoch`. The
    /// default takes nothing: a store without requests has none pending.
    fn take_state_cancels<'a>(&'a self, run_id: &'a str, epoch: u64) -> StoreFuture<'a, Vec<String>> {
        let _ = (run_id, epoch);
        Box::pin(std::future::ready(Ok(Vec::new())))
    }

    /// Record where run `lineage.run_id` came from (see [`Lineage`]): once, before the run
    /// can run (the run's row need not exist yet). A second lineage for the same run is
    /// refused with [`StoreError::Backend`] (without a source: never transient) and the
    /// first is kept. Deleting the run deletes its lineage (not its descendants'). Stores
    /// that keep no lineage say so (the default).
    fn record_lineage<'a>(&'a self, lineage: &'a Lineage) -> StoreFuture<'a, ()> {
        let _ = lineage;
        Box::pin(std::future::ready(Err(StoreError::Backend {
            store: self.kind(),
            message: "this store keeps no lineage of runs".to_owned(),
            source: None,
        })))
    }

    /// Where run `run_id` came from, if another run made it. A stored record that does not
    /// read (an unknown kind, a negative `parent_seq`) is [`StoreError::Corrupt`].
    fn lineage<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<Lineage>> {
        let _ = run_id;
        Box::pin(std::future::ready(Ok(None)))
    }

    /// The runs made from run `parent_run_id` (forks and children), oldest first
    /// (`created_ms`, then `run_id`), including those of a parent since deleted.
    fn descendants<'a>(&'a self, parent_run_id: &'a str) -> StoreFuture<'a, Vec<Lineage>> {
        let _ = parent_run_id;
        Box::pin(std::future::ready(Ok(Vec::new())))
    }

    /// Move the lease of `owner` at `epoch` on `run_id` to `ttl` from the store's `now`;
    /// the new lease end (milliseconds since the Unix epoch). [`StoreError::Fenced`] when
    /// the run is no longer `owner`'s at `epoch` (taken over, released or deleted).
    fn renew_lease<'a>(&'a self, run_id: &'a str, owner: &'a str, epoch: u64, ttl: Duration) -> StoreFuture<'a, i64>;

    /// Give the run up: clear its owner and lease, if its epoch is still `epoch`
    /// ([`StoreError::Fenced`] otherwise). Another owner can claim it at once.
    fn release_run<'a>(&'a self, run_id: &'a str, epoch: u64) -> StoreFuture<'a, ()>;

    /// Keep only the newest `keep` (at least 1) snapshots of `run_id` and drop the journal
    /// entries the oldest kept one covers, in one transaction fenced by `epoch`: what an
    /// owner prunes of its own run.
    fn prune_snapshots<'a>(&'a self, run_id: &'a str, epoch: u64, keep: usize) -> StoreFuture<'a, RetentionReport>;

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

    /// As [`put_input`](CheckpointStore::put_input), by the run's owner at `epoch` (the run
    /// asking): fenced, so a run taken over records no request.
    fn put_input_fenced<'a>(&'a self, input: &'a InputRecord, epoch: u64) -> StoreFuture<'a, ()>;

    /// As [`answer_input`](CheckpointStore::answer_input), by the run's owner at `epoch`: an
    /// answer the run consumes (its default taken at the timeout, or an answer given in its
    /// process). Fenced, so a run taken over (a zombie whose timeout fires late) never
    /// decides an answer for its new owner.
    #[allow(clippy::too_many_arguments)]
    fn answer_input_fenced<'a>(
        &'a self,
        run_id: &'a str,
        request_id: &'a str,
        answer: &'a str,
        defaulted: bool,
        at_ms: i64,
        epoch: u64,
    ) -> StoreFuture<'a, bool>;

    /// Keep `signal` for its run (see the module `signals`): in one transaction, unless the
    /// run is unknown or finished, or already has a signal with its id. The stored `seq`
    /// is the store's. Stores that keep no signals say so (the default).
    fn send_signal<'a>(&'a self, signal: &'a SignalRecord) -> StoreFuture<'a, SignalSent> {
        let _ = signal;
        Box::pin(std::future::ready(Err(StoreError::Backend {
            store: self.kind(),
            message: "this store keeps no signals".to_owned(),
            source: None,
        })))
    }

    /// The signal named `name` for the wait `wait_key` of run `run_id`, taken by its owner
    /// at `epoch`: the one this wait took before, else the oldest not taken, now taken by
    /// it (`taken_ms` = `now_ms`); `None` when there is none. [`StoreError::Fenced`] (and
    /// nothing taken) when the run is not at `epoch`.
    fn take_signal<'a>(
        &'a self,
        run_id: &'a str,
        name: &'a str,
        wait_key: &'a str,
        now_ms: i64,
        epoch: u64,
    ) -> StoreFuture<'a, Option<SignalRecord>> {
        let _ = (run_id, name, wait_key, now_ms, epoch);
        Box::pin(std::future::ready(Ok(None)))
    }

    /// Run `run_id`'s signals, taken or not, in the order they were kept (`seq`).
    fn signals<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Vec<SignalRecord>> {
        let _ = run_id;
        Box::pin(std::future::ready(Ok(Vec::new())))
    }

    /// Arm the timer `timer.key` of its run to wake at `timer.wake_ms`, by the run's owner
    /// at `epoch`, unless it is armed already: the wake time stored (the first one armed).
    /// [`StoreError::Fenced`] when the run is not at `epoch`. Stores that keep no timers
    /// say so (the default).
    fn arm_timer<'a>(&'a self, timer: &'a TimerRecord, epoch: u64) -> StoreFuture<'a, i64> {
        let _ = (timer, epoch);
        Box::pin(std::future::ready(Err(StoreError::Backend {
            store: self.kind(),
            message: "this store keeps no timers".to_owned(),
            source: None,
        })))
    }

    /// Run `run_id`'s timers, by key.
    fn timers<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Vec<TimerRecord>> {
        let _ = run_id;
        Box::pin(std::future::ready(Ok(Vec::new())))
    }

    /// Add `schedule`, or replace the definition and cursor of the agent's schedule of that
    /// name (keeping its `created_ms` and `last_run_id`); either way its version goes up.
    /// Whether it was added. Stores that keep no schedules say so (the default).
    fn put_schedule<'a>(&'a self, schedule: &'a ScheduleRecord) -> StoreFuture<'a, bool> {
        let _ = schedule;
        Box::pin(std::future::ready(Err(StoreError::Backend {
            store: self.kind(),
            message: "this store keeps no schedules".to_owned(),
            source: None,
        })))
    }

    /// The schedules of `agent` (of every agent when `None`), by agent then name.
    fn schedules<'a>(&'a self, agent: Option<&'a str>) -> StoreFuture<'a, Vec<ScheduleRecord>> {
        let _ = agent;
        Box::pin(std::future::ready(Ok(Vec::new())))
    }

    /// Pause (or resume) the agent's schedule `name`, setting its cursor to `next_tick_ms`
    /// (on resume: the first tick after now, so the ticks of the pause are not caught up);
    /// its version goes up. Whether it exists.
    fn pause_schedule<'a>(
        &'a self,
        agent: &'a str,
        name: &'a str,
        paused: bool,
        next_tick_ms: i64,
        now_ms: i64,
    ) -> StoreFuture<'a, bool> {
        let _ = (agent, name, paused, next_tick_ms, now_ms);
        Box::pin(std::future::ready(Ok(false)))
    }

    /// Delete the agent's schedule `name` (its runs stay). Whether it existed.
    fn delete_schedule<'a>(&'a self, agent: &'a str, name: &'a str) -> StoreFuture<'a, bool> {
        let _ = (agent, name);
        Box::pin(std::future::ready(Ok(false)))
    }

    /// Move a schedule's cursor (see [`ScheduleAdvance`]) if its version is still
    /// `advance.version`, bumping it; `false` (and nothing written) otherwise, or when the
    /// schedule is gone.
    fn advance_schedule<'a>(&'a self, advance: &'a ScheduleAdvance) -> StoreFuture<'a, bool> {
        let _ = advance;
        Box::pin(std::future::ready(Ok(false)))
    }

    /// Delete a run and everything recorded for it; `false` if there was none.
    fn delete_run<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, bool>;

    /// Apply `policy`, `now_ms` being the current time.
    fn apply_retention<'a>(&'a self, policy: &'a Retention, now_ms: i64) -> StoreFuture<'a, RetentionReport>;
}

/// The checkpoint of run `run_id` as of its last commit: its newest snapshot that reads,
/// with the journal entries recorded after it (the deltas of the commits since) applied, or
/// `None` when the store holds no snapshot of it. Unlike `Agent::recover`, the checkpoint is
/// not checked against an agent's definition.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use agent_runtime::store::{read_checkpoint, MemoryStore};
/// use agent_core::{Context, StateResult};
/// use agent_runtime::Agent;
/// let store = std::sync::Arc::new(MemoryStore::new());
/// let mut agent = Agent::new("demo").with_store(store.clone());
/// agent.add_state("only", |ctx: Context| async move {
///     ctx.set_state("done", true);
///     StateResult::End
/// });
/// let result = agent.run().await.unwrap();
/// let checkpoint = read_checkpoint(&*store, result.run_id()).await.unwrap().unwrap();
/// assert_eq!(checkpoint.completed_states, ["only"]);
/// # }
/// ```
///
/// # Errors
///
/// [`agent_core::AgentError::Store`] when the store fails; [`agent_core::AgentError::Checkpoint`]
/// when no snapshot read can be used ([`agent_core::CheckpointError::NoUsableSnapshot`]) or a
/// journal entry cannot be applied ([`agent_core::CheckpointError::Journal`]).
pub async fn read_checkpoint(
    store: &dyn CheckpointStore,
    run_id: &str,
) -> Result<Option<agent_core::Checkpoint>, agent_core::AgentError> {
    crate::checkpoint::load::newest_readable(store, run_id).await
}

/// A shared store is a store: `Arc<dyn CheckpointStore>` (or `Arc` of any store) can be given
/// wherever a store is asked for, so one store serves several agents.
///
/// ```
/// use std::sync::Arc;
/// use agent_runtime::store::{CheckpointStore, MemoryStore};
/// use agent_runtime::Agent;
/// let store: Arc<dyn CheckpointStore> = Arc::new(MemoryStore::new());
/// let one = Agent::new("one").with_store(store.clone());
/// let two = Agent::new("two").with_store(store);
/// # let _ = (one, two);
/// ```
impl<S: CheckpointStore + ?Sized> CheckpointStore for std::sync::Arc<S> {
    fn kind(&self) -> &'static str {
        (**self).kind()
    }
    fn upsert_run<'a>(&'a self, run: &'a RunRecord) -> StoreFuture<'a, ()> {
        (**self).upsert_run(run)
    }
    fn get_run<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<RunRecord>> {
        (**self).get_run(run_id)
    }
    fn list_runs<'a>(&'a self, query: &'a RunQuery) -> StoreFuture<'a, Vec<RunRecord>> {
        (**self).list_runs(query)
    }
    fn count_runs<'a>(&'a self, query: &'a RunQuery) -> StoreFuture<'a, u64> {
        (**self).count_runs(query)
    }
    fn append<'a>(&'a self, run: &'a RunRecord, entries: &'a [JournalEntry]) -> StoreFuture<'a, ()> {
        (**self).append(run, entries)
    }
    fn journal<'a>(&'a self, run_id: &'a str, after: u64) -> StoreFuture<'a, Vec<JournalEntry>> {
        (**self).journal(run_id, after)
    }
    fn save_snapshot<'a>(&'a self, run_id: &'a str, epoch: u64, snapshot: &'a Snapshot) -> StoreFuture<'a, ()> {
        (**self).save_snapshot(run_id, epoch, snapshot)
    }
    fn save_run_snapshot<'a>(&'a self, run: &'a RunRecord, snapshot: &'a Snapshot) -> StoreFuture<'a, ()> {
        (**self).save_run_snapshot(run, snapshot)
    }
    fn claim_run<'a>(&'a self, claim: &'a ClaimRequest) -> StoreFuture<'a, Claim> {
        (**self).claim_run(claim)
    }
    fn submit_run<'a>(&'a self, submission: &'a Submission) -> StoreFuture<'a, Submitted> {
        (**self).submit_run(submission)
    }
    fn claim_next<'a>(&'a self, ask: &'a ClaimNext) -> StoreFuture<'a, Vec<NextRun>> {
        (**self).claim_next(ask)
    }
    fn run_input<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<String>> {
        (**self).run_input(run_id)
    }
    fn wake_ups<'a>(&'a self) -> StoreFuture<'a, Option<tokio::sync::mpsc::Receiver<()>>> {
        (**self).wake_ups()
    }
    fn request_control<'a>(&'a self, run_id: &'a str, control: RunControl) -> StoreFuture<'a, bool> {
        (**self).request_control(run_id, control)
    }
    fn run_control<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<RunControl>> {
        (**self).run_control(run_id)
    }
    fn request_state_cancel<'a>(&'a self, run_id: &'a str, state: &'a str) -> StoreFuture<'a, bool> {
        (**self).request_state_cancel(run_id, state)
    }
    fn take_state_cancels<'a>(&'a self, run_id: &'a str, epoch: u64) -> StoreFuture<'a, Vec<String>> {
        (**self).take_state_cancels(run_id, epoch)
    }
    fn record_lineage<'a>(&'a self, lineage: &'a Lineage) -> StoreFuture<'a, ()> {
        (**self).record_lineage(lineage)
    }
    fn lineage<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<Lineage>> {
        (**self).lineage(run_id)
    }
    fn descendants<'a>(&'a self, parent_run_id: &'a str) -> StoreFuture<'a, Vec<Lineage>> {
        (**self).descendants(parent_run_id)
    }
    fn renew_lease<'a>(&'a self, run_id: &'a str, owner: &'a str, epoch: u64, ttl: Duration) -> StoreFuture<'a, i64> {
        (**self).renew_lease(run_id, owner, epoch, ttl)
    }
    fn release_run<'a>(&'a self, run_id: &'a str, epoch: u64) -> StoreFuture<'a, ()> {
        (**self).release_run(run_id, epoch)
    }
    fn prune_snapshots<'a>(&'a self, run_id: &'a str, epoch: u64, keep: usize) -> StoreFuture<'a, RetentionReport> {
        (**self).prune_snapshots(run_id, epoch, keep)
    }
    fn latest_snapshot<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<Snapshot>> {
        (**self).latest_snapshot(run_id)
    }
    fn snapshots<'a>(&'a self, run_id: &'a str, limit: usize) -> StoreFuture<'a, Vec<Snapshot>> {
        (**self).snapshots(run_id, limit)
    }
    fn put_input<'a>(&'a self, input: &'a InputRecord) -> StoreFuture<'a, ()> {
        (**self).put_input(input)
    }
    fn inputs<'a>(&'a self, run_id: Option<&'a str>, pending_only: bool) -> StoreFuture<'a, Vec<InputRecord>> {
        (**self).inputs(run_id, pending_only)
    }
    fn answer_input<'a>(
        &'a self,
        run_id: &'a str,
        request_id: &'a str,
        answer: &'a str,
        defaulted: bool,
        at_ms: i64,
    ) -> StoreFuture<'a, bool> {
        (**self).answer_input(run_id, request_id, answer, defaulted, at_ms)
    }
    fn put_input_fenced<'a>(&'a self, input: &'a InputRecord, epoch: u64) -> StoreFuture<'a, ()> {
        (**self).put_input_fenced(input, epoch)
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
        (**self).answer_input_fenced(run_id, request_id, answer, defaulted, at_ms, epoch)
    }
    fn send_signal<'a>(&'a self, signal: &'a SignalRecord) -> StoreFuture<'a, SignalSent> {
        (**self).send_signal(signal)
    }
    fn take_signal<'a>(
        &'a self,
        run_id: &'a str,
        name: &'a str,
        wait_key: &'a str,
        now_ms: i64,
        epoch: u64,
    ) -> StoreFuture<'a, Option<SignalRecord>> {
        (**self).take_signal(run_id, name, wait_key, now_ms, epoch)
    }
    fn signals<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Vec<SignalRecord>> {
        (**self).signals(run_id)
    }
    fn arm_timer<'a>(&'a self, timer: &'a TimerRecord, epoch: u64) -> StoreFuture<'a, i64> {
        (**self).arm_timer(timer, epoch)
    }
    fn timers<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Vec<TimerRecord>> {
        (**self).timers(run_id)
    }
    fn put_schedule<'a>(&'a self, schedule: &'a ScheduleRecord) -> StoreFuture<'a, bool> {
        (**self).put_schedule(schedule)
    }
    fn schedules<'a>(&'a self, agent: Option<&'a str>) -> StoreFuture<'a, Vec<ScheduleRecord>> {
        (**self).schedules(agent)
    }
    fn pause_schedule<'a>(
        &'a self,
        agent: &'a str,
        name: &'a str,
        paused: bool,
        next_tick_ms: i64,
        now_ms: i64,
    ) -> StoreFuture<'a, bool> {
        (**self).pause_schedule(agent, name, paused, next_tick_ms, now_ms)
    }
    fn delete_schedule<'a>(&'a self, agent: &'a str, name: &'a str) -> StoreFuture<'a, bool> {
        (**self).delete_schedule(agent, name)
    }
    fn advance_schedule<'a>(&'a self, advance: &'a ScheduleAdvance) -> StoreFuture<'a, bool> {
        (**self).advance_schedule(advance)
    }
    fn delete_run<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, bool> {
        (**self).delete_run(run_id)
    }
    fn apply_retention<'a>(&'a self, policy: &'a Retention, now_ms: i64) -> StoreFuture<'a, RetentionReport> {
        (**self).apply_retention(policy, now_ms)
    }
}
