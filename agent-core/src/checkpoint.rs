//! Checkpoints: a run written down, so that it can go on elsewhere.
//!
//! A [`Checkpoint`] is plain data: what the runtime read from a run at one instant (see
//! `Agent::create_checkpoint`). It holds no handle into the run, so it can be written to a
//! file or a store and read back by another process.
//!
//! Invariants:
//! - [`Checkpoint::to_json`] writes [`CHECKPOINT_VERSION`]; [`Checkpoint::from_json`] reads
//!   that version and every older one (upgrading it step by step), and refuses anything
//!   else with a [`CheckpointError`]: never a panic, never a guess.
//!
//! Versions: 1, the first; 2 adds `pending_inputs` (a version-1 checkpoint had none); 3 adds
//! `last_error` (the failure an `on_error` handler reads), `deadline_ms` (the run's
//! deadline) and each group's `width` (older versions have none of them: `None`); 4 adds
//! `graph`, the signature of the graph the run ran (older versions have none: `None`, and
//! the runtime restores them without comparing graphs, as it did before); 5 adds each
//! group's `branches` (a map's items, results and per-branch places, and the writes held
//! for reducers; older versions have none: `None`).
//! - [`Checkpoint::from_json`] checks only what any checkpoint must satisfy on its own
//!   (groups and tokens name groups that exist, parents before children); whether it fits
//!   an agent (its states, its counts, its retry budgets) is checked by the runtime when
//!   it is restored, before anything runs.
//! - The frontier is exact: every token of the run is either in `tokens` (at a state that
//!   is ready or running, and runs again on restore) or waiting at a join in one of
//!   `groups`; a token whose branch fanned out is represented by its child group, whose
//!   `parent` and `origin` say where it stands.
//! - `completed_states` lists each state that completed at least once, in the order of
//!   first completion; `states` has one record per state of the agent, in definition order.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use std::sync::Arc;

use crate::{Context, ContextError, GraphChange, GraphHash, GraphRecord, RestoredError, StateError};

use crate::status::{AgentStatus, StateStatus};

/// The checkpoint format this build writes.
pub const CHECKPOINT_VERSION: u32 = 5;

/// Marks a JSON document as an `agent` checkpoint, so that a foreign one is told apart.
const FORMAT: &str = "agent-checkpoint";

/// A run at one instant: what ran, what is to run, and the whole context.
///
/// ```
/// use agent_core::{AgentStatus, Checkpoint};
/// let checkpoint = Checkpoint::new("hello", "run-1");
/// let json = checkpoint.to_json().unwrap();
/// let back = Checkpoint::from_json(&json).unwrap();
/// assert_eq!(back, checkpoint);
/// assert_eq!(back.agent_status, AgentStatus::Idle);
/// assert!(Checkpoint::from_json("{\"not\": \"a checkpoint\"}").is_err());
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Checkpoint {
    /// Marks the document as an `agent` checkpoint.
    #[serde(rename = "format")]
    marker: Marker,
    /// The format's version ([`CHECKPOINT_VERSION`] when written by this build).
    pub schema_version: u32,
    /// When it was taken.
    #[serde(with = "millis")]
    pub timestamp: SystemTime,
    /// The agent's name.
    pub agent_name: String,
    /// The run's id.
    pub run_id: String,
    /// The run's status when it was taken.
    pub agent_status: AgentStatus,
    /// States that completed at least once, in the order of their first completion.
    pub completed_states: Vec<String>,
    /// One record per state of the agent.
    pub states: Vec<StateRecord>,
    /// Tokens at states that are ready or running: each runs that state on restore.
    pub tokens: Vec<TokenRecord>,
    /// Open fan-out groups, parents before children.
    pub groups: Vec<GroupRecord>,
    /// States started so far (counted against `max_steps`).
    pub steps: u64,
    /// The whole context, typed values included, as JSON text (`Context::to_json_string`);
    /// kept as text, so writing and reading a checkpoint never builds a tree of it. Read it
    /// with [`Checkpoint::read_context`].
    pub context: Box<RawValue>,
    /// The run's requests for human input, answered or not: a state that asks again after
    /// the restore gets the same request (its id, its answer if one came, its timeout
    /// counted from the first asking). Version 1 had none.
    #[serde(default)]
    pub pending_inputs: Vec<InputRequestRecord>,
    /// The failure an `on_error` handler reads with `Context::last_error`, if a state had
    /// failed for good and been handed to its handler: restored, the handler reads the same
    /// state, attempts and message. Versions before 3 had none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<LastErrorRecord>,
    /// The run's deadline, in milliseconds since the Unix epoch (`None`: the run has none).
    /// Versions before 3 had none.
    #[serde(default)]
    pub deadline_ms: Option<i64>,
    /// The signature of the graph the run ran (see [`crate::GraphSignature`]): a
    /// checkpoint is restored only into an agent whose graph has the same one. Versions
    /// before 4 had none; a checkpoint without one is restored without that check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graph: Option<GraphRecord>,
    /// Why the context could not be written, if it could not: `to_json` reports it.
    #[serde(skip)]
    encode_error: Option<String>,
}

/// One state's counters in a [`Checkpoint`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StateRecord {
    /// The state's name.
    pub name: String,
    /// Its status.
    pub status: StateStatus,
    /// Times it completed.
    pub completed: u32,
    /// Attempts that failed.
    pub failed: u32,
    /// Retries made (attempts after the first).
    pub retries: u32,
    /// Times it was preempted.
    pub preempted: u32,
    /// Attempts an instance waiting to retry had made (0: none): restored, it goes on with
    /// the rest of its retry budget, not a fresh one.
    #[serde(default)]
    pub attempts_made: u32,
    /// When an instance of the state first started, in milliseconds since the Unix epoch
    /// (`None`: it never started, or the run did not record times).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<i64>,
    /// When an instance of the state last ended (completed or failed), in milliseconds
    /// since the Unix epoch (`None`: none ended, or the run did not record times).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<i64>,
    /// Milliseconds its instances waited for resources, in all (written when not 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub resource_wait_ms: u64,
    /// What its latest attempt held from a resource pool, as people read it (`cpu 2,
    /// memory 512 MB, gpu 1`); `None` when it held nothing or never ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<String>,
    /// The pool's GPU devices its latest attempt used, by index, ascending (devices 0 to 62
    /// are recorded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpu_ids: Vec<usize>,
    /// The error of its latest failed attempt (retried or not), at most 2,000 characters;
    /// `None` while no attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Its latest attempts on the wall clock (at most 16, oldest first), recorded for states
    /// that can make several (a retry policy, a timeout, resources) when the run records
    /// timings: a timeline draws each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempt_spans: Vec<AttemptSpan>,
}

/// One attempt of a state on the wall clock, in a [`StateRecord`].
///
/// ```
/// use agent_core::AttemptSpan;
/// let span = AttemptSpan::new(1_000, 1_250, true);
/// assert_eq!((span.finished_ms - span.started_ms, span.failed), (250, true));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AttemptSpan {
    /// When it started, in milliseconds since the Unix epoch.
    pub started_ms: i64,
    /// When it ended.
    pub finished_ms: i64,
    /// Whether it failed (an error, a panic, a timeout).
    #[serde(default, skip_serializing_if = "is_false")]
    pub failed: bool,
}

impl AttemptSpan {
    /// An attempt from `started_ms` to `finished_ms` that `failed` or not.
    pub fn new(started_ms: i64, finished_ms: i64, failed: bool) -> Self {
        AttemptSpan { started_ms, finished_ms, failed }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Where a token stands in a [`Checkpoint`]: at `state`, ready or running.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TokenRecord {
    /// The state the token runs next (again, if it was running).
    pub state: String,
    /// The group it belongs to (an index into `Checkpoint::groups`); `None` at the top.
    pub group: Option<usize>,
    /// How many tokens stand there.
    pub count: u32,
}

/// An open fan-out group in a [`Checkpoint`]: its place in the tree and its join progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct GroupRecord {
    /// The enclosing group (an index into `Checkpoint::groups`, always lower); `None` at the top.
    pub parent: Option<usize>,
    /// The state whose fan-out opened it; the token of the branch that fanned out stands
    /// there, in the parent, until the group is over.
    pub origin: String,
    /// Tokens waiting at each join (or other state a fan-in holds), by state.
    pub waiting: Vec<(String, u32)>,
    /// How many branches the fan-out opened: the group never holds more tokens than this
    /// (`None` in checkpoints before version 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Each branch's own place, for a group that keeps one per branch (a map's, or any
    /// fan-out's in an agent with reducers); `None` for the others and before version 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branches: Option<BranchesRecord>,
}

/// The branches of a group that keeps an identity per branch (see [`GroupRecord::branches`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BranchesRecord {
    /// Where each branch stands, by its index, as runs of equal places: `(how many, where)`.
    /// The counts add up to the group's width.
    pub at: Vec<(u32, BranchAt)>,
    /// The index, in the enclosing group, of the branch whose fan-out opened this group
    /// (`None` at the top, or when the enclosing group keeps no identity per branch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_branch: Option<u32>,
    /// What each branch's completed states wrote to keys with a reducer, not yet folded in
    /// (that happens in branch order when the group closes): `(branch, [(key, value)])`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub writes: Vec<(u32, Vec<(String, serde_json::Value)>)>,
    /// A map's items and the results of its finished branches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map: Option<MapRecord>,
}

/// Where one branch of a group stands (see [`BranchesRecord::at`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BranchAt {
    /// Running the state (or not started yet, at a map's target): it runs again on restore.
    Running(String),
    /// Waiting at the state for its siblings (a fan-in).
    Waiting(String),
    /// Over: it ended, or merged into a sibling at a fan-in.
    Done,
}

/// A map's part of a [`BranchesRecord`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MapRecord {
    /// The state every branch started at.
    pub target: String,
    /// The key the results go to.
    pub into: String,
    /// The items, one per branch, in order.
    pub items: Vec<serde_json::Value>,
    /// The results of the branches that set one: `(branch, result)`, by branch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<(u32, serde_json::Value)>,
    /// The map's identity within its run, so that a journal entry can refer to what an
    /// earlier one wrote of it (`None` in checkpoints written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// Only in a journal entry: the items are those of the map with the same `id` in the
    /// commit before, and `results` holds only the results added since. Never set in a
    /// checkpoint (replaying the journal resolves it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub elided: bool,
}

impl MapRecord {
    /// A map's record.
    #[doc(hidden)]
    pub fn new(
        target: String,
        into: String,
        items: Vec<serde_json::Value>,
        results: Vec<(u32, serde_json::Value)>,
    ) -> Self {
        MapRecord { target, into, items, results, id: None, elided: false }
    }

    /// The same record with the map's identity.
    #[doc(hidden)]
    pub fn with_id(mut self, id: u64) -> Self {
        self.id = Some(id);
        self
    }
}

impl BranchesRecord {
    /// A record of a group's branches.
    #[doc(hidden)]
    pub fn new(
        at: Vec<(u32, BranchAt)>,
        origin_branch: Option<u32>,
        writes: Vec<(u32, Vec<(String, serde_json::Value)>)>,
        map: Option<MapRecord>,
    ) -> Self {
        BranchesRecord { at, origin_branch, writes, map }
    }
}

/// The failure an `on_error` handler is handling, in a [`Checkpoint`]: what
/// `Context::last_error` returns, written down. The error itself is kept as text (its
/// message and the messages of its sources), since an error value cannot be written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LastErrorRecord {
    /// The state that failed.
    pub state: String,
    /// Attempts it made, the first included.
    pub attempts: u32,
    /// The last attempt's error, displayed.
    pub message: String,
    /// The error's sources, displayed, outermost first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
}

/// At most this many sources of an error are written into a [`LastErrorRecord`].
const MAX_SOURCES: usize = 32;

impl LastErrorRecord {
    /// The record of `error`: its state, its attempts, its message and its sources' messages.
    pub fn of(error: &StateError) -> LastErrorRecord {
        let mut sources = Vec::new();
        let mut next = error.error.source();
        while let Some(e) = next {
            if sources.len() == MAX_SOURCES {
                break;
            }
            sources.push(e.to_string());
            next = e.source();
        }
        LastErrorRecord {
            state: error.state.clone(),
            attempts: error.attempts,
            message: error.error.to_string(),
            sources,
        }
    }

    /// The failure as a handler reads it: a [`StateError`] whose error is a
    /// [`RestoredError`] displaying the same message, with the same sources.
    pub fn to_state_error(&self) -> StateError {
        StateError {
            state: self.state.clone(),
            attempts: self.attempts,
            error: Arc::new(RestoredError::with_sources(self.message.clone(), self.sources.iter().cloned())),
        }
    }
}

/// A request for human input, and its answer once there is one: as a [`Checkpoint`] keeps
/// it, and (with its run's id) as a store keeps it (`agent_runtime::store::InputRecord`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct InputRequestRecord {
    /// The request's id within the run (`input-1`, ...).
    pub request_id: String,
    /// The state that asked, when known.
    pub state: Option<String>,
    /// What the person is asked.
    pub prompt: String,
    /// When it was first asked, in milliseconds since the Unix epoch.
    pub requested_ms: i64,
    /// How long to wait, in milliseconds from `requested_ms`.
    pub timeout_ms: Option<u64>,
    /// The answer taken at the timeout.
    pub default: Option<String>,
    /// The answer, once given.
    pub answer: Option<String>,
    /// When it was answered, in milliseconds since the Unix epoch.
    pub answered_ms: Option<i64>,
    /// Whether the answer is the default, taken at the timeout.
    pub defaulted: bool,
}

impl InputRequestRecord {
    /// A request `request_id` asking `prompt` at `requested_ms`, with no state, timeout or
    /// default, and no answer yet; set the other fields as needed.
    ///
    /// ```
    /// use agent_core::InputRequestRecord;
    /// let mut r = InputRequestRecord::new("input-1".into(), "Approve?".into(), 1_700_000_000_000);
    /// r.default = Some("no".into());
    /// assert!(r.answer.is_none() && !r.defaulted);
    /// ```
    pub fn new(request_id: String, prompt: String, requested_ms: i64) -> Self {
        InputRequestRecord {
            request_id,
            state: None,
            prompt,
            requested_ms,
            timeout_ms: None,
            default: None,
            answer: None,
            answered_ms: None,
            defaulted: false,
        }
    }
}

/// The `format` field: written as [`FORMAT`], read only as it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Marker;

impl Serialize for Marker {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(FORMAT)
    }
}

impl<'de> Deserialize<'de> for Marker {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Marker, D::Error> {
        let f = String::deserialize(d)?;
        if f == FORMAT {
            Ok(Marker)
        } else {
            Err(serde::de::Error::custom(format!("format is {f:?}, not {FORMAT:?}")))
        }
    }
}

/// What `from_json` reads first.
#[derive(Deserialize)]
struct Header {
    format: Option<serde_json::Value>,
    schema_version: Option<serde_json::Value>,
}

fn empty_context() -> Box<RawValue> {
    RawValue::from_string("{}".to_owned()).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

impl PartialEq for Checkpoint {
    fn eq(&self, other: &Self) -> bool {
        self.schema_version == other.schema_version
            && self.timestamp == other.timestamp
            && self.agent_name == other.agent_name
            && self.run_id == other.run_id
            && self.agent_status == other.agent_status
            && self.completed_states == other.completed_states
            && self.states == other.states
            && self.tokens == other.tokens
            && self.groups == other.groups
            && self.steps == other.steps
            && self.context.get() == other.context.get()
            && self.pending_inputs == other.pending_inputs
            && self.last_error == other.last_error
            && self.deadline_ms == other.deadline_ms
            && self.graph == other.graph
            && self.encode_error == other.encode_error
    }
}

/// A checkpoint could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Not JSON, truncated, or with a field of the wrong shape.
    #[error("invalid checkpoint: {0}")]
    Json(#[from] serde_json::Error),
    /// JSON, but not an `agent` checkpoint.
    #[error("not an agent checkpoint: {0}")]
    Foreign(String),
    /// Written by a newer build.
    #[error("checkpoint version {found} is newer than the {supported} this build reads")]
    TooNew {
        /// The version found.
        found: u32,
        /// The newest this build reads.
        supported: u32,
    },
    /// A value of the run's context could not be encoded.
    #[error("the context could not be written: {0}")]
    Context(String),
    /// Well formed, but it does not fit the agent it is restored into.
    #[error("checkpoint does not fit agent {agent:?}: {reason}")]
    Mismatch {
        /// The agent restored into.
        agent: String,
        /// What does not fit.
        reason: String,
    },
    /// Well formed, but not a checkpoint a run could have written: a count, an index, a
    /// status or a time that cannot be (see the runtime's rules for restored checkpoints).
    #[error("invalid checkpoint: {what}")]
    Invalid {
        /// What is wrong, naming the state, group or record and the bad value.
        what: String,
    },
    /// Well formed, but written by a run of another graph: the agent's definition changed
    /// since (a state removed or renamed, an edge or an option that changes meaning; see
    /// [`crate::GraphSignature`]). Going on would run the old run under new rules, so it is
    /// refused before any state runs, and nothing is changed.
    #[error(
        "checkpoint of agent {agent:?} was written under another graph (hash {recorded:.12}, now {current:.12}): {}",
        list_changes(changes)
    )]
    GraphChanged {
        /// The agent restored into.
        agent: String,
        /// The hash of the graph the checkpoint records.
        recorded: GraphHash,
        /// The hash of the agent's graph.
        current: GraphHash,
        /// What differs, from the recorded graph to the agent's.
        changes: Vec<GraphChange>,
    },
    /// A journal entry recorded after a run's snapshot (a delta of a durable run: what one
    /// commit changed) cannot be applied: not a delta, written by a newer build, or naming a
    /// state the checkpoint does not have. The run cannot be rebuilt past it.
    #[error("journal entry {seq} cannot be applied: {reason}")]
    Journal {
        /// The entry's `seq`.
        seq: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A run's checkpoint at commit `seq` was asked for, and the store keeps no such commit
    /// of it (never made, or dropped by retention: `history` lists those kept).
    #[error("run {run_id} has no commit {seq} kept: {reason}")]
    NoCommit {
        /// The run.
        run_id: String,
        /// The commit asked for.
        seq: u64,
        /// Why not: the commits that are kept.
        reason: String,
    },
    /// Every snapshot a store keeps of a run (of those read) is damaged: none can be
    /// recovered from.
    #[error("no snapshot of run {run_id} can be used ({tried} read); the newest: {newest}")]
    NoUsableSnapshot {
        /// The run.
        run_id: String,
        /// How many snapshots were read.
        tried: usize,
        /// Why the newest could not be used.
        #[source]
        newest: Box<CheckpointError>,
    },
}

impl Checkpoint {
    /// An empty checkpoint of an idle run: no state ran, nothing is to run.
    pub fn new(agent_name: impl Into<String>, run_id: impl Into<String>) -> Checkpoint {
        Checkpoint {
            marker: Marker,
            schema_version: CHECKPOINT_VERSION,
            timestamp: now(),
            agent_name: agent_name.into(),
            run_id: run_id.into(),
            agent_status: AgentStatus::Idle,
            completed_states: Vec::new(),
            states: Vec::new(),
            tokens: Vec::new(),
            groups: Vec::new(),
            steps: 0,
            context: empty_context(),
            pending_inputs: Vec::new(),
            last_error: None,
            deadline_ms: None,
            graph: None,
            encode_error: None,
        }
    }

    /// The checkpoint as JSON.
    ///
    /// # Errors
    ///
    /// [`CheckpointError::Context`] when a context value could not be encoded.
    pub fn to_json(&self) -> Result<String, CheckpointError> {
        if let Some(e) = &self.encode_error {
            return Err(CheckpointError::Context(e.clone()));
        }
        // Sized for the context and the graph up front: their text is copied once, not at
        // every doubling.
        let graph = self.graph.as_ref().map_or(0, GraphRecord::json_len);
        let mut out = Vec::with_capacity(self.context.get().len() + graph + 4096);
        serde_json::to_writer(&mut out, self)?;
        // serde_json writes UTF-8 only.
        String::from_utf8(out).map_err(|e| CheckpointError::Context(e.to_string()))
    }

    /// Read a checkpoint that [`Checkpoint::to_json`] wrote, of this version or an older one.
    ///
    /// # Errors
    ///
    /// [`CheckpointError::Json`] for text that is not JSON or is cut short;
    /// [`CheckpointError::Foreign`] for JSON that is not an `agent` checkpoint;
    /// [`CheckpointError::TooNew`] for one written by a newer build;
    /// [`CheckpointError::Invalid`] for one whose groups or tokens name groups that do not
    /// exist, or a parent that does not come before its child.
    pub fn from_json(json: &str) -> Result<Checkpoint, CheckpointError> {
        // One pass in the common case: a checkpoint of this version or an older one.
        if let Ok(mut checkpoint) = serde_json::from_str::<Checkpoint>(json) {
            if (1..=CHECKPOINT_VERSION).contains(&checkpoint.schema_version) {
                // Older versions differ only in fields they lack, which serde defaults
                // (`pending_inputs`; `last_error`, `deadline_ms`, groups' `width`).
                checkpoint.schema_version = CHECKPOINT_VERSION;
                checkpoint.check()?;
                return Ok(checkpoint);
            }
        }
        Err(Checkpoint::why_not(json))
    }

    /// Why `json` is not a checkpoint this build reads.
    #[cold]
    fn why_not(json: &str) -> CheckpointError {
        if !json.trim_start().starts_with('{') {
            // Not an object: tell a cut-short or malformed text from other JSON.
            return match serde_json::from_str::<serde::de::IgnoredAny>(json) {
                Err(e) => e.into(),
                Ok(_) => CheckpointError::Foreign("not a JSON object".into()),
            };
        }
        // The header (the rest skipped), so a foreign or newer document is named as such
        // rather than as a missing field.
        let header: Header = match serde_json::from_str(json) {
            Ok(h) => h,
            Err(e) => return e.into(),
        };
        match header.format {
            Some(serde_json::Value::String(f)) if f == FORMAT => {}
            Some(other) => return CheckpointError::Foreign(format!("format is {other}, not \"{FORMAT}\"")),
            None => return CheckpointError::Foreign("no \"format\" field".into()),
        }
        let Some(version) = header.schema_version.as_ref().and_then(serde_json::Value::as_u64) else {
            return CheckpointError::Foreign("no numeric \"schema_version\"".into());
        };
        let version = u32::try_from(version).unwrap_or(u32::MAX);
        if version > CHECKPOINT_VERSION {
            return CheckpointError::TooNew { found: version, supported: CHECKPOINT_VERSION };
        }
        if version == 0 {
            return CheckpointError::Foreign("schema_version 0 was never written".into());
        }
        // Ours and of a version we read, yet it did not parse: say where.
        match serde_json::from_str::<Checkpoint>(json) {
            Err(e) => e.into(),
            Ok(_) => CheckpointError::Foreign("unreadable".into()),
        }
    }

    /// The checkpoint's context, ready to run with.
    ///
    /// # Errors
    ///
    /// [`ContextError::Decode`] when a value cannot be read back (a typed value whose type
    /// this program does not register).
    pub fn read_context(&self) -> Result<Context, ContextError> {
        Context::from_json_str(self.context.get())
    }

    /// Put `ctx` into the checkpoint, written straight to JSON text; a value that cannot be
    /// written makes [`Checkpoint::to_json`] fail instead of losing it.
    #[doc(hidden)]
    pub fn set_context(&mut self, ctx: &Context) {
        match ctx.to_raw_json() {
            Ok(raw) => self.context = raw,
            Err(e) => self.encode_error = Some(e.to_string()),
        }
    }

    /// The hash of the graph the run ran ([`crate::GraphSignature::hash`]), if the
    /// checkpoint records one (versions before 4 do not).
    pub fn graph_hash(&self) -> Option<GraphHash> {
        self.graph.as_ref().map(GraphRecord::hash)
    }

    /// States at which a token is ready or running (each runs again on restore).
    pub fn running_states(&self) -> Vec<&str> {
        self.tokens.iter().map(|t| t.state.as_str()).collect()
    }

    /// States at which tokens wait for a fan-in.
    pub fn waiting_states(&self) -> Vec<&str> {
        self.groups.iter().flat_map(|g| g.waiting.iter().map(|(s, _)| s.as_str())).collect()
    }

    /// The record of `state`.
    pub fn state(&self, state: &str) -> Option<&StateRecord> {
        self.states.iter().find(|s| s.name == state)
    }

    /// Group and token references point at groups that exist, parents before children.
    fn check(&self) -> Result<(), CheckpointError> {
        let bad = |what: String| CheckpointError::Invalid { what };
        for (i, g) in self.groups.iter().enumerate() {
            if g.parent.is_some_and(|p| p >= i) {
                return Err(bad(format!("group {i} names parent {:?}, which does not come before it", g.parent)));
            }
        }
        for t in &self.tokens {
            if t.group.is_some_and(|g| g >= self.groups.len()) {
                return Err(bad(format!("a token at {:?} names group {:?}, which does not exist", t.state, t.group)));
            }
        }
        Ok(())
    }
}

impl StateRecord {
    /// A record with the given counters.
    #[doc(hidden)]
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: String,
        status: StateStatus,
        completed: u32,
        failed: u32,
        retries: u32,
        preempted: u32,
        attempts_made: u32,
    ) -> Self {
        StateRecord {
            name,
            status,
            completed,
            failed,
            retries,
            preempted,
            attempts_made,
            started_ms: None,
            finished_ms: None,
            resource_wait_ms: 0,
            resources: None,
            gpu_ids: Vec::new(),
            error: None,
            attempt_spans: Vec::new(),
        }
    }

    /// This record with its latest attempts.
    #[doc(hidden)]
    #[must_use]
    pub fn with_attempt_spans(mut self, spans: Vec<AttemptSpan>) -> Self {
        self.attempt_spans = spans;
        self
    }

    /// This record with the error of its latest failed attempt.
    #[doc(hidden)]
    #[must_use]
    pub fn with_error(mut self, error: Option<String>) -> Self {
        self.error = error;
        self
    }

    /// This record with what its latest attempt held: `resources` described, the GPU
    /// devices `gpu_ids`.
    #[doc(hidden)]
    #[must_use]
    pub fn with_held(mut self, resources: Option<String>, gpu_ids: Vec<usize>) -> Self {
        self.resources = resources;
        self.gpu_ids = gpu_ids;
        self
    }

    /// This record with `ms` milliseconds waited for resources.
    #[doc(hidden)]
    #[must_use]
    pub fn with_resource_wait(mut self, ms: u64) -> Self {
        self.resource_wait_ms = ms;
        self
    }

    /// The same record with its start and end times (milliseconds since the Unix epoch).
    #[doc(hidden)]
    pub fn with_times(mut self, started_ms: Option<i64>, finished_ms: Option<i64>) -> Self {
        self.started_ms = started_ms;
        self.finished_ms = finished_ms;
        self
    }
}

impl TokenRecord {
    /// A record of `count` tokens at `state` in `group`.
    #[doc(hidden)]
    pub fn new(state: String, group: Option<usize>, count: u32) -> Self {
        TokenRecord { state, group, count }
    }
}

impl GroupRecord {
    /// A record of a group.
    #[doc(hidden)]
    pub fn new(parent: Option<usize>, origin: String, waiting: Vec<(String, u32)>) -> Self {
        GroupRecord { parent, origin, waiting, width: None, branches: None }
    }

    /// The same record with its branches' places.
    #[doc(hidden)]
    pub fn with_branches(mut self, branches: BranchesRecord) -> Self {
        self.branches = Some(branches);
        self
    }

    /// The same record with the fan-out's width.
    #[doc(hidden)]
    pub fn with_width(mut self, width: u32) -> Self {
        self.width = Some(width);
        self
    }
}

/// At most this many changes are written in a [`CheckpointError::GraphChanged`] message
/// (all are in its `changes`).
const MAX_LISTED: usize = 20;

/// `changes`, displayed and joined, the first [`MAX_LISTED`] of them.
fn list_changes(changes: &[GraphChange]) -> String {
    let mut text: Vec<String> = changes.iter().take(MAX_LISTED).map(ToString::to_string).collect();
    if changes.len() > MAX_LISTED {
        text.push(format!("and {} more", changes.len() - MAX_LISTED));
    }
    text.join("; ")
}

/// The current time, to the millisecond a checkpoint keeps (so one round-trips exactly).
#[doc(hidden)]
pub fn now() -> SystemTime {
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

/// `SystemTime` as milliseconds since the Unix epoch (readable, and stable across platforms).
mod millis {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        let ms = t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        s.serialize_u64(ms)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let ms = u64::deserialize(d)?;
        UNIX_EPOCH
            .checked_add(Duration::from_millis(ms))
            .ok_or_else(|| serde::de::Error::custom("timestamp out of range"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GraphSignature;
    use std::error::Error as _;

    fn sample() -> Checkpoint {
        let mut c = Checkpoint::new("a", "r");
        c.groups.push(GroupRecord::new(None, "fan".into(), vec![("join".into(), 2)]));
        c.tokens.push(TokenRecord::new("work".into(), Some(0), 3));
        c
    }

    #[test]
    fn round_trips_and_rejects_what_is_not_ours() {
        let c = sample();
        assert_eq!(Checkpoint::from_json(&c.to_json().unwrap()).unwrap(), c);
        assert!(matches!(Checkpoint::from_json("[1, 2]"), Err(CheckpointError::Foreign(_))));
        assert!(matches!(Checkpoint::from_json("{\"format\": \"x\"}"), Err(CheckpointError::Foreign(_))));
        let json = c.to_json().unwrap();
        assert!(matches!(Checkpoint::from_json(&json[..json.len() / 2]), Err(CheckpointError::Json(_))));
        let newer = json.replace(&format!("\"schema_version\":{CHECKPOINT_VERSION}"), "\"schema_version\":99");
        assert_ne!(newer, json);
        assert!(matches!(Checkpoint::from_json(&newer), Err(CheckpointError::TooNew { found: 99, .. })));
    }

    #[test]
    fn dangling_group_references_are_refused() {
        let mut c = sample();
        c.tokens[0].group = Some(5);
        assert!(matches!(Checkpoint::from_json(&c.to_json().unwrap()), Err(CheckpointError::Invalid { .. })));
        let mut c = sample();
        c.groups[0].parent = Some(0);
        assert!(matches!(Checkpoint::from_json(&c.to_json().unwrap()), Err(CheckpointError::Invalid { .. })));
    }

    #[test]
    fn version_3_fields_round_trip() {
        let mut c = sample();
        c.groups[0] = c.groups[0].clone().with_width(3);
        c.deadline_ms = Some(1_700_000_000_000);
        let error = StateError {
            state: "fetch".into(),
            attempts: 3,
            error: Arc::new(RestoredError::with_sources("outer", ["middle".to_owned(), "inner".to_owned()])),
        };
        c.last_error = Some(LastErrorRecord::of(&error));
        let back = Checkpoint::from_json(&c.to_json().unwrap()).unwrap();
        assert_eq!(back, c);
        let record = back.last_error.as_ref().unwrap();
        assert_eq!((record.state.as_str(), record.attempts, record.message.as_str()), ("fetch", 3, "outer"));
        assert_eq!(record.sources, ["middle", "inner"]);
        let restored = record.to_state_error();
        assert_eq!(restored.to_string(), error.to_string());
        let chain: Vec<String> =
            std::iter::successors(restored.error.source(), |e| (*e).source()).map(|e| e.to_string()).collect();
        assert_eq!(chain, ["middle", "inner"]);
        assert_eq!(back.groups[0].width, Some(3));
    }

    #[test]
    fn older_versions_are_upgraded_with_none_of_the_new_fields() {
        // A version-2 checkpoint, as that build wrote it (no `last_error`, `deadline_ms`, `width`).
        let v2 = r#"{"format":"agent-checkpoint","schema_version":2,"timestamp":5,"agent_name":"a","run_id":"r",
            "agent_status":"Running","completed_states":[],"states":[],"tokens":[{"state":"work","group":0,"count":1}],
            "groups":[{"parent":null,"origin":"fan","waiting":[]}],"steps":0,"context":{},"pending_inputs":[]}"#;
        let c = Checkpoint::from_json(v2).unwrap();
        assert_eq!(c.schema_version, CHECKPOINT_VERSION);
        assert_eq!((c.last_error.as_ref(), c.deadline_ms, c.groups[0].width), (None, None, None));
        // Version 1 lacked `pending_inputs` too.
        let v1 = v2.replace("\"schema_version\":2", "\"schema_version\":1").replace(",\"pending_inputs\":[]", "");
        assert_eq!(Checkpoint::from_json(&v1).unwrap().pending_inputs, []);
        // A version-3 one has no graph.
        let v3 = v2.replace("\"schema_version\":2", "\"schema_version\":3");
        assert_eq!(Checkpoint::from_json(&v3).unwrap().graph, None);
        // A version-4 one has no branches in its groups.
        let v4 = v2.replace("\"schema_version\":2", "\"schema_version\":4");
        assert_eq!(Checkpoint::from_json(&v4).unwrap().groups[0].branches, None);
        // A newer one is refused whatever it holds.
        let v6 = v2.replace("\"schema_version\":2", "\"schema_version\":6");
        assert!(matches!(Checkpoint::from_json(&v6), Err(CheckpointError::TooNew { found: 6, supported: 5 })));
    }

    #[test]
    fn version_5_records_a_groups_branches_and_round_trips() {
        let mut c = sample();
        let map = MapRecord::new(
            "work".into(),
            "results".into(),
            vec![serde_json::json!(1)],
            vec![(0, serde_json::json!("r"))],
        );
        let at =
            vec![(1, BranchAt::Waiting("join".into())), (2, BranchAt::Running("work".into())), (1, BranchAt::Done)];
        let branches =
            BranchesRecord::new(at, Some(3), vec![(0, vec![("log".into(), serde_json::json!([1]))])], Some(map));
        c.groups[0].branches = Some(branches.clone());
        let back = Checkpoint::from_json(&c.to_json().unwrap()).unwrap();
        assert_eq!(back.groups[0].branches, Some(branches));
        assert!(!sample().to_json().unwrap().contains("\"branches\""), "no branches, no field");
    }

    #[test]
    fn version_4_records_the_graph_and_round_trips() {
        let mut c = sample();
        assert_eq!(c.graph_hash(), None);
        assert!(!c.to_json().unwrap().contains("\"graph\""), "no graph, no field");
        let mut g = GraphSignature::new("fan");
        g.states.insert("fan".into(), crate::StateSignature::default());
        let hash = g.hash();
        c.graph = Some(g.into());
        let back = Checkpoint::from_json(&c.to_json().unwrap()).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.graph_hash(), Some(hash));
        let mut other = back.clone();
        other.graph = Some(GraphSignature::new("elsewhere").into());
        assert_ne!(other, back, "the graph is compared");
        // The record's text is written as it was made or read.
        let json = c.to_json().unwrap();
        assert!(json.contains(r#""graph":{"start":"fan","states":{"fan":{}}}"#), "{json}");
        let spaced = json.replace(r#""graph":{"start""#, r#""graph": { "start""#);
        let read = Checkpoint::from_json(&spaced).unwrap();
        assert_eq!(read.graph_hash(), Some(hash));
        assert!(read.to_json().unwrap().contains(r#""graph":{ "start""#));
        // A graph that is not a signature makes the checkpoint unreadable.
        let bad = json.replace(r#""states":{"fan":{}}"#, r#""states":{"fan":{"join":"yes"}}"#);
        assert!(matches!(Checkpoint::from_json(&bad), Err(CheckpointError::Json(_))));
    }

    #[test]
    fn a_graph_changed_error_lists_the_changes_and_bounds_the_list() {
        let (old, new) = (GraphSignature::new("a"), GraphSignature::new("b"));
        let error = CheckpointError::GraphChanged {
            agent: "etl".into(),
            recorded: old.hash(),
            current: new.hash(),
            changes: GraphSignature::diff(&old, &new),
        };
        let text = error.to_string();
        assert!(
            text.starts_with(&format!(
                "checkpoint of agent \"etl\" was written under another graph (hash {:.12}, now {:.12}): ",
                old.hash(),
                new.hash()
            )),
            "{text}"
        );
        assert!(text.ends_with("the start changed from `a` to `b`"), "{text}");
        let many: Vec<GraphChange> = (0..25).map(|i| GraphChange::StateRemoved { state: format!("s{i}") }).collect();
        let error = CheckpointError::GraphChanged {
            agent: "etl".into(),
            recorded: old.hash(),
            current: new.hash(),
            changes: many,
        };
        let text = error.to_string();
        assert!(text.contains("state `s19` was removed; and 5 more"), "{text}");
        assert!(!text.contains("`s20`"), "{text}");
    }

    proptest::proptest! {
        /// Garbage, and every cut and byte flip of a real checkpoint, is an error or a
        /// checkpoint: never a panic.
        #[test]
        fn garbage_never_panics(s in ".{0,200}", cut in 0usize..400, flip in 0usize..400, byte in 0u8..128) {
            let _ = Checkpoint::from_json(&s);
            let json = sample().to_json().unwrap();
            let _ = Checkpoint::from_json(&json[..cut.min(json.len())]);
            let mut bytes = json.into_bytes();
            let i = flip % bytes.len();
            bytes[i] = byte;
            if let Ok(s) = String::from_utf8(bytes) {
                let _ = Checkpoint::from_json(&s);
            }
        }
    }
}
