//! Errors of the data layer and of runs.
//!
//! Invariants:
//! - Every error names what it is about (the key, the state, both sides of a bad
//!   transition), so a message alone tells the user where to look.
//! - Errors that end a run carry the run's [`Context`], so nothing the run did is lost.
//! - The enums are `#[non_exhaustive]`: later features add variants without breaking users.

use std::any::type_name;
use std::fmt;
use std::sync::Arc;

use crate::context::Context;
use crate::result::BoxError;

/// Why a context read or write failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContextError {
    /// No value under the key.
    #[error("context key `{key}` holds no value")]
    Missing {
        /// The key asked for.
        key: String,
    },
    /// A value is there, but not of the requested type.
    #[error("context key `{key}` holds a `{found}`, which cannot be read as `{expected}`{}", detail_suffix(.detail))]
    TypeMismatch {
        /// The key asked for.
        key: String,
        /// The type asked for.
        expected: &'static str,
        /// The type the value was stored as.
        found: String,
        /// What the decoder said, if anything.
        detail: String,
    },
    /// serde could not encode the value.
    #[error("context key `{key}`: the value could not be serialised: {message}")]
    Serialize {
        /// The key written.
        key: String,
        /// What serde said.
        message: String,
    },
    /// A contribution to a key with a reducer did not fit it (`Extend` given a non-list,
    /// a custom reducer's type that does not decode, ...): the value is left as it was.
    #[error("context key `{key}`: its `{reducer}` reducer could not fold the value in: {message}")]
    Reduce {
        /// The key written.
        key: String,
        /// The reducer's name.
        reducer: &'static str,
        /// What did not fit.
        message: String,
    },
    /// `item` or `set_result` called outside a branch of a map (`StateResult::map`).
    #[error("this state runs outside a map's branch: it has no item and no result to set")]
    NoItem,
    /// A stored context could not be decoded.
    #[error("context key `{key}`: the stored value could not be decoded: {message}")]
    Decode {
        /// The key read.
        key: String,
        /// What went wrong.
        message: String,
    },
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    }
}

impl ContextError {
    pub(crate) fn missing(key: &str) -> Self {
        ContextError::Missing { key: key.to_owned() }
    }

    pub(crate) fn mismatch<T>(key: &str, found: String, detail: String) -> Self {
        ContextError::TypeMismatch { key: key.to_owned(), expected: type_name::<T>(), found, detail }
    }
}

/// A state's resource request cannot be granted, ever: it fails the state at once instead
/// of waiting for capacity that will never come.
///
/// ```
/// use agent_core::{ResourceError, ResourceType};
/// let e = ResourceError::ExceedsTotal { state: "train".into(), kind: ResourceType::Gpu, requested: 4.0, total: 2.0 };
/// assert_eq!(e.to_string(), "state `train` asks for 4 gpu, but the pool has 2 in all");
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ResourceError {
    /// More than the pool's total of one kind.
    #[error("state `{state}` asks for {requested} {kind}, but the pool has {total} in all")]
    ExceedsTotal {
        /// The state that asked.
        state: String,
        /// The kind asked for.
        kind: crate::options::ResourceType,
        /// The amount asked.
        requested: f64,
        /// The pool's total of that kind.
        total: f64,
    },
    /// The request left the pool's queue without a grant (the pool dropped it).
    #[error("state `{state}`: its resource request was withdrawn from the pool")]
    Withdrawn {
        /// The state that asked.
        state: String,
    },
    /// More than a quota allows one scope to hold.
    #[error("state `{state}` asks for {requested} {kind}, above the quota of {quota} for {scope}")]
    ExceedsQuota {
        /// The state that asked.
        state: String,
        /// The scope whose quota is exceeded, such as `agent "etl"`.
        scope: String,
        /// The kind asked for.
        kind: crate::options::ResourceType,
        /// The amount asked.
        requested: f64,
        /// The quota.
        quota: f64,
    },
}

/// A state that failed for good: its name, how many attempts it made, and the error of the
/// last one. What `ctx.last_error()` gives an `on_error` handler.
///
/// ```
/// use std::sync::Arc;
/// use agent_core::StateError;
/// let e = StateError { state: "fetch".into(), attempts: 4, error: Arc::new(std::io::Error::other("refused")) };
/// assert_eq!(e.to_string(), "state `fetch` failed after 4 attempt(s): refused");
/// assert!(e.error.downcast_ref::<std::io::Error>().is_some());
/// ```
#[derive(Clone, Debug, thiserror::Error)]
#[error("state `{state}` failed after {attempts} attempt(s): {error}")]
pub struct StateError {
    /// The state that failed.
    pub state: String,
    /// Attempts made, the first included.
    pub attempts: u32,
    /// The last attempt's error (a [`PanicError`] or [`TimeoutError`] for those causes).
    pub error: Arc<dyn std::error::Error + Send + Sync>,
}

/// An error restored from a checkpoint: the text of the error a state failed with, which
/// an `on_error` handler of a restored or recovered run reads in place of the original
/// value (an error value cannot be written down). It displays the same message, and its
/// [`source`](std::error::Error::source) chain displays the original's sources.
///
/// ```
/// use std::error::Error;
/// use agent_core::RestoredError;
/// let e = RestoredError::with_sources("fetch failed", ["connection refused".to_owned()]);
/// assert_eq!(e.to_string(), "fetch failed");
/// assert_eq!(e.source().unwrap().to_string(), "connection refused");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredError {
    /// The original error's message.
    pub message: String,
    /// The original error's source, restored the same way.
    pub source: Option<Box<RestoredError>>,
}

impl RestoredError {
    /// An error displaying `message`, whose source chain displays `sources`, outermost first.
    pub fn with_sources(message: impl Into<String>, sources: impl IntoIterator<Item = String>) -> RestoredError {
        let sources: Vec<String> = sources.into_iter().collect();
        let source = sources
            .into_iter()
            .rev()
            .fold(None, |inner, message| Some(Box::new(RestoredError { message, source: inner })));
        RestoredError { message: message.into(), source }
    }
}

impl fmt::Display for RestoredError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RestoredError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// A state waited for a dependency longer than the dependency's `timeout`; it fails (and
/// goes to its `on_error`, if it has one).
///
/// ```
/// use std::time::Duration;
/// use agent_core::DependencyTimeout;
/// let e = DependencyTimeout { state: "train".into(), dependency: "load".into(), after: Duration::from_secs(30) };
/// assert_eq!(e.to_string(), "state `train` waited more than 30s for its dependency `load`");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("state `{state}` waited more than {after:?} for its dependency `{dependency}`")]
pub struct DependencyTimeout {
    /// The waiting state.
    pub state: String,
    /// The dependency it waited for.
    pub dependency: String,
    /// The dependency's timeout.
    pub after: std::time::Duration,
}

/// A state attempt ran longer than its `timeout`; it was stopped.
///
/// ```
/// use std::time::Duration;
/// use agent_core::TimeoutError;
/// let e = TimeoutError { state: "fetch".into(), after: Duration::from_secs(5) };
/// assert_eq!(e.to_string(), "state `fetch` timed out after 5s");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("state `{state}` timed out after {after:?}")]
pub struct TimeoutError {
    /// The state that timed out.
    pub state: String,
    /// Its timeout.
    pub after: std::time::Duration,
}

/// A state panicked; the panic was caught and its message kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the state panicked: {message}")]
pub struct PanicError {
    /// The panic's message, or a note that it was not a string.
    pub message: String,
}

/// A state waiting at its dependency gate, in [`AgentError::Stalled`]: what it waits on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitingOn {
    /// The waiting state.
    pub state: String,
    /// What it waits for, in words: "`fetch` (Required) to complete", "the condition on
    /// `review` to hold".
    pub on: String,
}

/// Why a run did not complete, or could not start.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The agent has no states.
    #[error("agent `{agent}` has no states")]
    NoStates {
        /// The agent's name.
        agent: String,
    },
    /// Two states share a name.
    #[error("agent `{agent}` has two states named `{state}`")]
    DuplicateState {
        /// The agent's name.
        agent: String,
        /// The repeated name.
        state: String,
    },
    /// The start names no state.
    #[error("the start state `{state}` is not a state of agent `{agent}`")]
    UnknownStart {
        /// The agent's name.
        agent: String,
        /// The name given as start.
        state: String,
    },
    /// A dependency or `on_error` names no state.
    #[error("state `{state}` refers to `{target}` ({role}), which is not a state of agent `{agent}`")]
    UnknownReference {
        /// The agent's name.
        agent: String,
        /// The state holding the reference.
        state: String,
        /// The missing name.
        target: String,
        /// `dependency`, `on_error` or `target`.
        role: &'static str,
    },
    /// Dependencies form a cycle.
    #[error("dependencies form a cycle: {}", .cycle.join(" -> "))]
    DependencyCycle {
        /// The states of the cycle, the first repeated at the end.
        cycle: Vec<String>,
    },
    /// An option has a value the runtime cannot use.
    #[error("state `{state}`: {reason}")]
    InvalidOption {
        /// The state.
        state: String,
        /// What is wrong.
        reason: String,
    },
    /// A transition named a state that does not exist. The run stopped; its context is kept.
    #[error("state `{from}` moved to `{to}`, which is not a state of this agent")]
    UnknownState {
        /// The state that returned the target.
        from: String,
        /// The unknown target.
        to: String,
        /// The run's context when it stopped.
        context: Context,
    },
    /// A state declared the states it may go to (`StateConfig::targets`) and returned
    /// another. The run stopped; its context is kept.
    #[error("state `{from}` moved to `{to}`, which it does not declare among its targets")]
    UndeclaredTarget {
        /// The state that returned the target.
        from: String,
        /// The target it did not declare.
        to: String,
        /// The run's context when it stopped.
        context: Context,
    },
    /// A state failed for good. The run stopped; its context is kept.
    #[error("state `{state}` failed after {attempts} attempt(s): {source}")]
    StateFailed {
        /// The failing state.
        state: String,
        /// How many attempts were made.
        attempts: u32,
        /// The last attempt's error.
        source: BoxError,
        /// The run's context when it stopped.
        context: Context,
        /// The run's checkpoint once it stopped: restore it (after fixing the cause) and the
        /// run goes on from the failed state, nothing done lost.
        checkpoint: Option<Box<crate::Checkpoint>>,
    },
    /// The run took more steps than `max_steps` allows: a runaway loop.
    #[error("the run took more than {limit} steps (last state `{state}`)")]
    MaxSteps {
        /// The limit.
        limit: u64,
        /// The state that would have run past it.
        state: String,
        /// The run's context when it stopped.
        context: Context,
    },
    /// The run passed the timeout of `run_with(RunOptions::new().timeout(..))`: running
    /// states were stopped after their cleanup time. Its context is kept.
    #[error("agent `{agent}` timed out after {after:?}")]
    TimedOut {
        /// The agent's name.
        agent: String,
        /// The run's timeout.
        after: std::time::Duration,
        /// The run's context when it stopped.
        context: Context,
        /// The run's checkpoint once it stopped: states cut off at the deadline run again
        /// when it is restored.
        checkpoint: Option<Box<crate::Checkpoint>>,
        /// States that were still running when the cleanup time ran out and did not all
        /// stop when asked: a state that blocks its thread cannot be stopped, so the run
        /// ends without it; it runs on in the background and what it does is not recorded.
        /// Empty when every state stopped.
        overran: Vec<String>,
    },
    /// The run can no longer move: every branch still alive waits at a dependency gate that
    /// only another branch could open (a dependency that will not complete, or a condition
    /// that no state is left to make true), and none has a `timeout`. The run stopped; its
    /// context is kept.
    ///
    /// ```
    /// use agent_core::{AgentError, Context, WaitingOn};
    /// let e = AgentError::Stalled {
    ///     waiting: vec![WaitingOn { state: "publish".into(), on: "the condition on `review` to hold".into() }],
    ///     context: Context::new(),
    /// };
    /// assert_eq!(
    ///     e.to_string(),
    ///     "the run can no longer move: `publish` waits for the condition on `review` to hold"
    /// );
    /// ```
    #[error("the run can no longer move: {}", .waiting.iter().map(|w| format!("`{}` waits for {}", w.state, w.on)).collect::<Vec<_>>().join("; "))]
    Stalled {
        /// Each waiting state and what it waits for.
        waiting: Vec<WaitingOn>,
        /// The run's context when it stopped.
        context: Context,
    },
    /// No longer returned: runs of one agent may go on at once (see `Agent::start`). Kept
    /// so that code matching it still compiles.
    #[error("agent `{agent}` is already running")]
    AlreadyRunning {
        /// The agent's name.
        agent: String,
    },
    /// `Agent::start` was called outside a tokio runtime: a started run goes on in a task of
    /// its own, on the runtime `start` is called from. (`run()` needs none of its own: it
    /// runs in the task that awaits it.)
    #[error("agent `{agent}` cannot start a run outside a tokio runtime")]
    NoRuntime {
        /// The agent's name.
        agent: String,
    },
    /// `resume()` was called, but no run of this agent is paused.
    #[error("agent `{agent}` has no paused run to resume")]
    NotPaused {
        /// The agent's name.
        agent: String,
    },
    /// A submission was refused before anything was written: its options do not go
    /// together (debounce without a flow key, say). Nothing was queued.
    ///
    /// ```
    /// use agent_core::AgentError;
    /// let e = AgentError::InvalidSubmission { agent: "mail".into(), reason: "debounce needs a flow key".into() };
    /// assert_eq!(e.to_string(), "a run of agent `mail` cannot be submitted: debounce needs a flow key");
    /// ```
    #[error("a run of agent `{agent}` cannot be submitted: {reason}")]
    InvalidSubmission {
        /// The agent's name.
        agent: String,
        /// What is wrong with the submission.
        reason: String,
    },
    /// The run's checkpoint store failed, so the durable run stopped (it never goes on
    /// unrecorded); it can be recovered from what the store holds.
    #[error("the checkpoint store failed: {message}")]
    Store {
        /// The store's error.
        message: String,
        /// The run's context when it stopped.
        context: Context,
    },
    /// A checkpoint could not be used: see [`CheckpointError`](crate::CheckpointError).
    #[error(transparent)]
    Checkpoint(#[from] crate::CheckpointError),
    /// The durable run is owned by a worker whose lease is live (another process, or another
    /// run of this one), so it was not run here: nothing ran and nothing was written. Once
    /// the lease ends without being renewed (its owner is gone), the run can be taken.
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use agent_core::AgentError;
    /// let e = AgentError::Owned {
    ///     run_id: "run-1".into(),
    ///     owner: "host-42-1f2e".into(),
    ///     lease_until: UNIX_EPOCH + Duration::from_millis(1_500),
    /// };
    /// assert_eq!(e.to_string(), "run run-1 is owned by host-42-1f2e, whose lease ends at 1.500 s after the Unix epoch");
    /// ```
    #[error("run {run_id} is owned by {owner}, whose lease ends at {}", unix_seconds(.lease_until))]
    Owned {
        /// The run.
        run_id: String,
        /// The worker holding its lease.
        owner: String,
        /// When the lease ends unless its owner renews it (by the store's clock).
        lease_until: std::time::SystemTime,
    },
    /// The durable run lost its ownership while it ran, and stopped at once: another worker
    /// claimed it (a write found a newer epoch in the store: `StoreError::Fenced`), or its
    /// lease could not be renewed before it ended (another worker may claim it from then
    /// on). Its states were cancelled and nothing more of it was written; the run goes on
    /// (or already went on) wherever it is owned now.
    #[error("run {run_id} lost its ownership and stopped: {reason}")]
    Fenced {
        /// The run.
        run_id: String,
        /// What happened: the store's refusal, or the lease that ran out.
        reason: String,
        /// The run's context when it stopped (not recorded: the run's new owner has its own).
        context: Context,
    },
}

/// `t` as seconds (with milliseconds) after the Unix epoch.
fn unix_seconds(t: &std::time::SystemTime) -> String {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => format!("{}.{:03} s after the Unix epoch", d.as_secs(), d.subsec_millis()),
        Err(_) => "a time before the Unix epoch".to_owned(),
    }
}

impl AgentError {
    /// The run's checkpoint, for a run that failed or timed out: see
    /// [`AgentError::StateFailed`].
    pub fn checkpoint(&self) -> Option<&crate::Checkpoint> {
        match self {
            AgentError::StateFailed { checkpoint, .. } | AgentError::TimedOut { checkpoint, .. } => {
                checkpoint.as_deref()
            }
            _ => None,
        }
    }

    /// Give a failed or timed-out run's error its checkpoint.
    #[doc(hidden)]
    pub fn set_checkpoint(&mut self, with: crate::Checkpoint) {
        if let AgentError::StateFailed { checkpoint, .. } | AgentError::TimedOut { checkpoint, .. } = self {
            *checkpoint = Some(Box::new(with));
        }
    }

    /// The run's context, for errors that stopped a run.
    pub fn context(&self) -> Option<&Context> {
        match self {
            AgentError::UnknownState { context, .. }
            | AgentError::UndeclaredTarget { context, .. }
            | AgentError::StateFailed { context, .. }
            | AgentError::MaxSteps { context, .. }
            | AgentError::TimedOut { context, .. }
            | AgentError::Stalled { context, .. }
            | AgentError::Store { context, .. }
            | AgentError::Fenced { context, .. } => Some(context),
            _ => None,
        }
    }
}

impl fmt::Debug for AgentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The Display form is what a user needs when `main` returns this error.
        write!(f, "{self}")
    }
}
