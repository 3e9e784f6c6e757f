//! Human in the loop: the agent's input hub, where `ctx.human_in_the_loop(...)` requests wait
//! for an answer from code, the terminal or another process.
//!
//! - `hub`: the requests of every run of one agent, their ids, answers and defaults; what
//!   `Agent::pending_inputs` and `Agent::answer` read and write.
//! - `wait`: one request from asking to its answer, default or error (the run itself is
//!   the broker its context asks: see `asking`; nothing here knows a run).
//! - `resources`: a state waiting for a person gives its resources back and takes them again
//!   before the answer reaches it.
//! - `terminal`: the terminal provider, one reader thread per agent.
//!
//! Invariants:
//! - One hub per `Agent`, shared by all its runs and clones; each run's context holds the run
//!   weakly as its broker, and the run reaches the hub through its `Links`
//!   (`Agent::run_with` installs it before any state runs).
//! - A request's id is `input-N`, N counting the run's requests from 1 in the order they were
//!   made; parallel branches asking at once get distinct ids. Ids are never reused in a run,
//!   also across a restore (numbering continues after the highest restored id).
//! - A request is *pending* while a state waits on it, and only then: `pending_inputs` lists
//!   exactly those, and `answer` accepts only those. An answer the request's validator
//!   refuses changes nothing (the request stays pending, the caller is told why).
//! - Waits use tokio's clock, so they run in virtual time under `time::pause()`. Timeouts of
//!   requests re-attached after a restore are counted from their original `requested_ms`
//!   on the wall clock.
//! - A default taken at the timeout is recorded (`defaulted`), in memory and in the store.
//! - With a store, every request is written with `put_input` before the state waits, every
//!   answer with `answer_input` (the store's first answer wins), and a waiting request reads
//!   the store every 500 ms for an answer given by another process. A store error never
//!   fails the state: it is logged (`tracing::warn!`) and the request goes on in memory.
//! - Re-running a state after a restore or recovery, asking the same prompt in the same run,
//!   re-attaches to the restored record (same id, same `requested_ms`, its answer if it has
//!   one) instead of asking anew. Requests made live in this process are never re-attached
//!   to, so a loop asking the same prompt twice asks twice.

mod hub;
mod resources;
mod terminal;
#[cfg(test)]
mod tests;
mod wait;

use std::time::{Duration, SystemTime};

pub(crate) use hub::InputHub;
pub(crate) use resources::{release as release_resources, with_resources};
#[cfg(feature = "cli")]
pub(crate) use terminal::{end_prompt, watch_prompts, NO_LONGER_ASKED};
pub(crate) use wait::ask;

/// A request for human input that a state is waiting on: see [`Agent::pending_inputs`].
///
/// [`Agent::pending_inputs`]: crate::Agent::pending_inputs
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PendingInput {
    /// The request's id within its run (`input-1`, `input-2`, … in request order); pass it
    /// to [`Agent::answer`](crate::Agent::answer).
    pub id: String,
    /// What the person is asked.
    pub prompt: String,
    /// The run that asked.
    pub run_id: String,
    /// When it was asked (wall clock).
    pub requested_at: SystemTime,
    /// How long it waits for an answer, counted from `requested_at`; `None`: as long as it
    /// takes.
    pub timeout: Option<Duration>,
    /// The answer taken at the timeout, if any.
    pub default: Option<String>,
}

/// Why [`Agent::answer`](crate::Agent::answer) did not answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AnswerError {
    /// No state is waiting on a request with this id (it never existed, was already
    /// answered, or timed out).
    #[error("no pending request for human input has the id `{id}`")]
    UnknownRequest {
        /// The id given.
        id: String,
    },
    /// The request's validator refused the answer; the request stays pending.
    #[error("the answer `{answer}` to `{prompt}` ({id}) was rejected by its validator; the request is still pending")]
    Rejected {
        /// The request's id.
        id: String,
        /// What it asks.
        prompt: String,
        /// The refused answer.
        answer: String,
    },
}
