//! What can go wrong on the command line, and the exit code each failure gives.
//!
//! Invariants:
//! - Every failure of a command is a [`CliError`]; nothing in the command line panics.
//! - Exit codes: 0 success, 1 a failed run or command, 2 a usage error, 130 paused or
//!   interrupted (Ctrl-C). A pause or an interruption is what the user asked for: it is
//!   reported as such, not as an error (see [`CliError::is_failure`]).

use std::process::ExitCode;

use agent_core::{AgentError, AgentStatus, CheckpointError};

use crate::store::StoreError;

/// A command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// The arguments could not be parsed (the message is clap's, with usage).
    #[error("{0}")]
    Usage(String),
    /// The store could not be opened or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The run failed, or could not start or be recovered.
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// A stored checkpoint could not be read.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// No run of this agent has this id (or an id starting with it).
    #[error("no run of agent `{agent}` matches `{run}` (see `list`)")]
    RunNotFound {
        /// The agent.
        agent: String,
        /// The id or prefix given.
        run: String,
    },
    /// The prefix names several runs.
    #[error("`{run}` names {} runs ({}): give more of the id", matches.len(), matches.join(", "))]
    AmbiguousRun {
        /// The prefix given.
        run: String,
        /// The runs it names.
        matches: Vec<String>,
    },
    /// The run is in the store but has no snapshot to read.
    #[error("run {run} has no snapshot in the store")]
    NoSnapshot {
        /// The run.
        run: String,
    },
    /// No pending request has this id in the run.
    #[error("run {run} has no pending request `{request}`{}", pending_hint(pending))]
    UnknownRequest {
        /// The run.
        run: String,
        /// The request id given.
        request: String,
        /// The run's pending requests.
        pending: Vec<String>,
    },
    /// The request was answered already (the first answer wins).
    #[error("request `{request}` of run {run} is already answered: {answer:?}")]
    AlreadyAnswered {
        /// The run.
        run: String,
        /// The request.
        request: String,
        /// The answer it has.
        answer: String,
    },
    /// The run ended without completing.
    #[error("run {run} ended {status}")]
    NotCompleted {
        /// The run.
        run: String,
        /// How it ended.
        status: AgentStatus,
    },
    /// Paused, as asked (a first Ctrl-C): running states finished and the run is recorded
    /// `Paused`; it can be resumed.
    #[error("run {run} is paused: resume it with `resume {run}`")]
    Paused {
        /// The run.
        run: String,
    },
    /// Stopped at once (a second Ctrl-C, or one while a state waits for a person); the run
    /// is kept in the store as of its last snapshot and can be resumed.
    #[error("stopped; run {run} is kept in the store: resume it with `resume {run}`")]
    Interrupted {
        /// The run.
        run: String,
    },
    /// A signal was not sent (a payload that is not JSON, a finished run, ...).
    #[error(transparent)]
    Signal(#[from] crate::signal::SignalError),
    /// A signal's payload is not JSON.
    #[error("the payload of signal `{name}` is not JSON: {message}")]
    BadPayload {
        /// The signal.
        name: String,
        /// What the JSON parser said.
        message: String,
    },
    /// A schedule could not be added, changed or used.
    #[error(transparent)]
    Schedule(#[from] crate::schedule::ScheduleError),
    /// Writing the output failed.
    #[error("cannot write the output: {0}")]
    Io(#[from] std::io::Error),
}

fn pending_hint(pending: &[String]) -> String {
    if pending.is_empty() {
        " (it waits on none)".to_owned()
    } else {
        format!(" (pending: {})", pending.join(", "))
    }
}

impl CliError {
    /// The process exit code for this failure: 2 for usage, 130 when paused or interrupted,
    /// else 1.
    ///
    /// ```
    /// use agent_runtime::cli::CliError;
    /// assert_eq!(CliError::Usage("bad".into()).exit_code(), 2);
    /// assert_eq!(CliError::Interrupted { run: "r".into() }.exit_code(), 130);
    /// assert_eq!(CliError::Paused { run: "r".into() }.exit_code(), 130);
    /// ```
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Interrupted { .. } | CliError::Paused { .. } => 130,
            _ => 1,
        }
    }
}

impl CliError {
    /// Whether this is a failure (printed as `error: ...`), not the pause or stop the
    /// user asked for with Ctrl-C.
    ///
    /// ```
    /// use agent_runtime::cli::CliError;
    /// assert!(!CliError::Paused { run: "r".into() }.is_failure());
    /// assert!(CliError::Usage("bad".into()).is_failure());
    /// ```
    pub fn is_failure(&self) -> bool {
        !matches!(self, CliError::Paused { .. } | CliError::Interrupted { .. })
    }
}

impl From<&CliError> for ExitCode {
    fn from(e: &CliError) -> ExitCode {
        ExitCode::from(e.exit_code())
    }
}
