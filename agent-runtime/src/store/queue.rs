//! The store's side of a fleet: runs submitted to be run by whichever worker takes them
//! ([`Submission`], [`CheckpointStore::submit_run`](super::CheckpointStore::submit_run)),
//! and a worker's claim of the next runs it can serve ([`ClaimNext`],
//! [`CheckpointStore::claim_next`](super::CheckpointStore::claim_next)).
//!
//! Invariants every store keeps (the conformance tests check them):
//! - A submitted run is a row with status [`AgentStatus::Idle`], no owner, epoch 0, its
//!   graph's hash, and its input context (JSON) in `input`; nothing else is written for it
//!   until a worker claims it.
//! - Of submissions of one agent with one idempotency key, exactly one creates a run; every
//!   other (concurrent or later) returns that run ([`Submitted::created`] `false`), whatever
//!   its status.
//! - `claim_next` takes, in one conditional write each, up to `limit` runs that are
//!   unfinished and not paused (queued, or running), of an agent the worker serves under the
//!   graph hash it serves, with no owner or a lease that has ended by the store's clock;
//!   oldest first. Each is taken as [`claim_run`](super::CheckpointStore::claim_run) takes
//!   a run (epoch + 1, owner, lease), so of concurrent claims of one run exactly one wins;
//!   on PostgreSQL concurrent workers skip each other's candidates (`FOR UPDATE SKIP
//!   LOCKED`) instead of waiting. A run recorded under another hash, or none, is never
//!   taken: it stays as it is, for a worker that serves its graph (or an explicit
//!   `recover`).

use std::time::Duration;

use agent_core::AgentStatus;

use super::RunRecord;

/// A run to queue: see [`CheckpointStore::submit_run`](super::CheckpointStore::submit_run).
///
/// ```
/// use agent_runtime::store::Submission;
/// let s = Submission::new("run-1", "etl", "ab12", "{}").idempotency_key("order-1234");
/// assert_eq!(s.idempotency_key.as_deref(), Some("order-1234"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Submission {
    /// The new run's id.
    pub run_id: String,
    /// The agent that runs it.
    pub agent: String,
    /// The hash of the agent's graph ([`GraphHash`](agent_core::GraphHash), as text): only
    /// a worker serving this graph takes the run.
    pub graph_hash: String,
    /// The context it starts from, as JSON (a [`Context`](agent_core::Context)'s
    /// serialisation).
    pub input: String,
    /// A key naming the request: a second submission of the agent with the same key returns
    /// the first run instead of making another.
    pub idempotency_key: Option<String>,
    /// When it was submitted, in milliseconds since the Unix epoch.
    pub created_ms: i64,
}

impl Submission {
    /// Queue run `run_id` of `agent` under `graph_hash`, starting from the context `input`
    /// (JSON), submitted now.
    pub fn new(
        run_id: impl Into<String>,
        agent: impl Into<String>,
        graph_hash: impl Into<String>,
        input: impl Into<String>,
    ) -> Submission {
        Submission {
            run_id: run_id.into(),
            agent: agent.into(),
            graph_hash: graph_hash.into(),
            input: input.into(),
            idempotency_key: None,
            created_ms: super::now_ms(),
        }
    }

    /// Name the request with `key` (unique per agent).
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Submission {
        self.idempotency_key = Some(key.into());
        self
    }

    /// The row a new submission makes.
    pub(crate) fn row(&self) -> RunRecord {
        RunRecord::new(&self.run_id, &self.agent, AgentStatus::Idle, self.created_ms, self.created_ms)
    }
}

/// What [`CheckpointStore::submit_run`](super::CheckpointStore::submit_run) did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submitted {
    /// The run: the one made, or the one its idempotency key named already.
    pub run: RunRecord,
    /// Whether this submission made it.
    pub created: bool,
}

/// A graph a worker serves: an agent's name and its graph's hash.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Served {
    /// The agent's name.
    pub agent: String,
    /// Its graph's hash, as text.
    pub graph_hash: String,
}

/// What a worker asks of [`CheckpointStore::claim_next`](super::CheckpointStore::claim_next).
///
/// ```
/// use std::time::Duration;
/// use agent_runtime::store::{ClaimNext, Served};
/// let ask = ClaimNext::new("host-1-ab12", Duration::from_secs(15), 4)
///     .serving(Served { agent: "etl".into(), graph_hash: "ab12".into() });
/// assert_eq!((ask.limit, ask.serves.len()), (4, 1));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClaimNext {
    /// Who claims (a [`WorkerId`](crate::WorkerId), as text).
    pub owner: String,
    /// How long the leases last from the store's `now`.
    pub ttl: Duration,
    /// At most this many runs.
    pub limit: usize,
    /// The graphs the worker serves: only their runs are taken.
    pub serves: Vec<Served>,
}

impl ClaimNext {
    /// Up to `limit` runs for `owner`, leased for `ttl`; serving nothing yet.
    pub fn new(owner: impl Into<String>, ttl: Duration, limit: usize) -> ClaimNext {
        ClaimNext { owner: owner.into(), ttl, limit, serves: Vec::new() }
    }

    /// Also take runs of `graph`.
    pub fn serving(mut self, graph: Served) -> ClaimNext {
        self.serves.push(graph);
        self
    }
}

/// A run [`CheckpointStore::claim_next`](super::CheckpointStore::claim_next) took: its row
/// (owner, lease and the new epoch), the hash of the graph it was recorded under, and the
/// context it was submitted with (for a run queued and never started).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NextRun {
    /// The row, as the claim left it.
    pub row: RunRecord,
    /// Its graph's hash.
    pub graph_hash: String,
    /// The context it was submitted with (JSON), if it was submitted.
    pub input: Option<String>,
}
