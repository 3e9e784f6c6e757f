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
//!
//! Flow control (runs submitted with a [`Submission::flow_key`]; the conformance tests check
//! these too):
//! - A run submitted with [`Submission::start_after`] is not taken before that long after
//!   the store's clock at its submission (its `not_before_ms`, by the store's clock: the
//!   machine's for the memory store and SQLite, the server's `now()` on PostgreSQL).
//! - A run of a key is *running* while it is unfinished and owned under a lease that has not
//!   ended by the store's clock, whatever its status (a run just claimed is still `Idle`
//!   until its owner's first write: it counts from its claim, or two claims in a row could
//!   both take the key's last place). A run with a key and a [`Submission::flow_limit`]
//!   `n` is taken only while fewer than `n` runs of its agent and key are running,
//!   counting the runs taken before it in the same claim. Each run carries its own limit
//!   (recorded at submission), so workers need not agree on configuration.
//! - Order, round robin between keys: a candidate with a key ranks as the number of its
//!   key's runs running plus its position among its key's candidates (oldest first, from
//!   0); a candidate without a key ranks 0. Candidates are taken lowest rank first, then
//!   oldest (`created_ms`, then `run_id`): with keys A, B, C queued in that order, claims
//!   take A, B, C, A, B, C, ... . Runs started before and orphaned (their lease ended) are
//!   candidates as before, under the same rules. "Oldest" is by `created_ms`, the
//!   submission's millisecond: runs submitted within one millisecond are ordered by their
//!   ids (random), also within one key.
//! - The count and the take are one step for every worker: the memory store under its
//!   lock, SQLite under `BEGIN IMMEDIATE` (the file's write lock), PostgreSQL in one
//!   transaction holding a transaction-scoped advisory lock per agent served that has
//!   unfinished runs with keys (claims of runs without keys, when no keyed run is
//!   unfinished, stay the one `FOR UPDATE SKIP LOCKED` statement they were).
//! - Debounce ([`Submission::debounce`]): in the same step as the insert (a per-(agent,
//!   key) advisory lock on PostgreSQL, the write lock on SQLite), a submission finds the
//!   run of its agent and key that was submitted with debounce and has never been claimed
//!   (`Idle`, epoch 0); if there is one, its input is replaced and its `not_before_ms`
//!   moved to the store's now plus the window, and it is returned ([`Submitted::created`]
//!   `false`); otherwise the run is made, not to be taken before the window has passed.
//!   An idempotency key the agent already has wins over debounce (its run is returned,
//!   untouched).

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
    /// Its flow key (see the module docs): runs of one agent and key share a limit on how
    /// many run at once, and claims go round robin between keys.
    pub flow_key: Option<String>,
    /// At most this many runs of its agent and flow key run at once (across every worker
    /// of the store); `None`: no limit (the key only orders claims). Needs a flow key.
    pub flow_limit: Option<u32>,
    /// Not taken by a worker before this long after the store's clock at submission.
    pub start_after: Option<Duration>,
    /// Debounce: replace the input of the queued, never claimed, debounced run of the same
    /// agent and flow key, if there is one, and push its start to `start_after` from now
    /// (see the module docs). Needs a flow key and `start_after`.
    pub debounce: bool,
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
            flow_key: None,
            flow_limit: None,
            start_after: None,
            debounce: false,
        }
    }

    /// Give the run the flow key `key` (see the module docs).
    ///
    /// ```
    /// use std::time::Duration;
    /// use agent_runtime::store::Submission;
    /// let s = Submission::new("run-1", "mail", "ab12", "{}")
    ///     .flow_key("customer-7")
    ///     .flow_limit(1)
    ///     .debounce(Duration::from_secs(2));
    /// assert_eq!((s.flow_key.as_deref(), s.flow_limit, s.debounce), (Some("customer-7"), Some(1), true));
    /// assert_eq!(s.start_after, Some(Duration::from_secs(2)));
    /// ```
    pub fn flow_key(mut self, key: impl Into<String>) -> Submission {
        self.flow_key = Some(key.into());
        self
    }

    /// At most `n` runs of its agent and flow key at once.
    pub fn flow_limit(mut self, n: u32) -> Submission {
        self.flow_limit = Some(n);
        self
    }

    /// Not taken before `delay` from the store's now.
    pub fn start_after(mut self, delay: Duration) -> Submission {
        self.start_after = Some(delay);
        self
    }

    /// Debounce over `window`: see [`Submission::debounce`](Submission#structfield.debounce).
    pub fn debounce(mut self, window: Duration) -> Submission {
        self.start_after = Some(window);
        self.debounce = true;
        self
    }

    /// `start_after` in milliseconds (0 without one), as the stores add it to their clock.
    pub(crate) fn delay_ms(&self) -> i64 {
        self.start_after.map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }

    /// A debounce without a key cannot find its run: refused before anything is written.
    pub(crate) fn check(&self, store: &'static str) -> Result<(), super::StoreError> {
        if self.debounce && self.flow_key.is_none() {
            return Err(super::StoreError::Backend {
                store,
                message: format!("submit run {}: debounce needs a flow key", self.run_id),
                source: None,
            });
        }
        Ok(())
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
