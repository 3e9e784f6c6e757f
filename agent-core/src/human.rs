//! Asking a person: [`HumanInput`] (what to ask, how long to wait, what to accept) and
//! [`HumanInputError`] (why no answer came).
//!
//! A state asks with [`Context::human_in_the_loop`](crate::Context::human_in_the_loop); the
//! runtime decides who answers (the terminal, code calling `Agent::answer`, or another process
//! through a checkpoint store).
//!
//! Invariants:
//! - A [`HumanInput`] is plain data plus an optional validator; cloning it is cheap (the
//!   validator is shared) and it never runs user code except through
//!   [`HumanInput::accepts`].
//! - This crate only describes requests: the waiting, the deadline and the providers live in
//!   the runtime, behind the hidden [`InputBroker`] trait that it installs into each run's
//!   context.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::error::ResourceError;

/// A validator: whether an answer is acceptable.
type Validator = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// A question for a person, asked with
/// [`Context::human_in_the_loop`](crate::Context::human_in_the_loop).
///
/// ```
/// use std::time::Duration;
/// use agent_core::HumanInput;
///
/// let input = HumanInput::new("Enter score (0-100):")
///     .timeout(Duration::from_secs(60))
///     .validator(|x: &str| x.parse::<u32>().is_ok_and(|n| n <= 100))
///     .default("50");
/// assert_eq!(input.prompt(), "Enter score (0-100):");
/// assert_eq!(input.time_limit(), Some(Duration::from_secs(60)));
/// assert_eq!(input.default_value(), Some("50"));
/// assert!(input.accepts("42"));
/// assert!(!input.accepts("101"));
/// ```
#[derive(Clone)]
pub struct HumanInput {
    prompt: String,
    timeout: Option<Duration>,
    default: Option<String>,
    validator: Option<Validator>,
}

impl HumanInput {
    /// Ask `prompt`, waiting as long as it takes, accepting any answer.
    pub fn new(prompt: impl Into<String>) -> Self {
        HumanInput { prompt: prompt.into(), timeout: None, default: None, validator: None }
    }

    /// Wait at most `after` for an answer. Past it the [default](HumanInput::default) is
    /// taken, or, without one, the request fails with [`HumanInputError::TimedOut`].
    pub fn timeout(mut self, after: Duration) -> Self {
        self.timeout = Some(after);
        self
    }

    /// Accept only answers for which `f` returns `true`; any other answer is refused and the
    /// question stays open (asked again). `f` should be quick and must not block; a panic in
    /// it counts as a refusal.
    pub fn validator<F>(mut self, f: F) -> Self
    where
        F: Fn(&str) -> bool + Send + Sync + 'static,
    {
        self.validator = Some(Arc::new(f));
        self
    }

    /// The answer taken when the [timeout](HumanInput::timeout) passes with no answer. It is
    /// not checked by the validator, and the runtime records that it was defaulted.
    pub fn default(mut self, value: impl Into<String>) -> Self {
        self.default = Some(value.into());
        self
    }

    /// What the person is asked.
    pub fn prompt(&self) -> &str {
        &self.prompt
    }

    /// How long to wait for an answer; `None`: as long as it takes.
    pub fn time_limit(&self) -> Option<Duration> {
        self.timeout
    }

    /// The answer taken at the timeout, if any.
    pub fn default_value(&self) -> Option<&str> {
        self.default.as_deref()
    }

    /// Whether a validator was set.
    pub fn has_validator(&self) -> bool {
        self.validator.is_some()
    }

    /// Whether `answer` passes the validator (always, without one). A validator that panics
    /// refuses the answer.
    pub fn accepts(&self, answer: &str) -> bool {
        match &self.validator {
            None => true,
            Some(f) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(answer))).unwrap_or(false),
        }
    }
}

impl fmt::Debug for HumanInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HumanInput")
            .field("prompt", &self.prompt)
            .field("timeout", &self.timeout)
            .field("default", &self.default)
            .field("validator", &self.validator.as_ref().map(|_| ".."))
            .finish()
    }
}

/// Why [`Context::human_in_the_loop`](crate::Context::human_in_the_loop) returned no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HumanInputError {
    /// Nobody answered within the timeout, and the request has no default.
    #[error("no answer to `{prompt}` within {after:?}, and it has no default")]
    TimedOut {
        /// What was asked.
        prompt: String,
        /// The timeout.
        after: Duration,
    },
    /// The context does not belong to a run that can take input (a context made with
    /// `Context::new()` outside an agent's run).
    #[error("cannot ask `{prompt}`: this context is not inside an agent's run, so nobody can answer")]
    NoProvider {
        /// What was asked.
        prompt: String,
    },
    /// The request was withdrawn before it was answered (its run was replaced or restored
    /// from a checkpoint while the state waited).
    #[error("the request `{prompt}` was withdrawn before it was answered")]
    Cancelled {
        /// What was asked.
        prompt: String,
    },
    /// The state gave its resources back while it waited, and could not take them again.
    #[error("after the answer to `{prompt}`, the state could not take its resources back: {source}")]
    Resources {
        /// What was asked.
        prompt: String,
        /// Why the pool refused.
        #[source]
        source: ResourceError,
    },
}

/// The future an [`InputBroker`] returns.
#[doc(hidden)]
pub type InputFuture<'a> = Pin<Box<dyn Future<Output = Result<String, HumanInputError>> + Send + 'a>>;

/// Who answers the requests of one run; installed into the run's context by the runtime.
#[doc(hidden)]
pub trait InputBroker: Send + Sync {
    /// Ask `input` and wait for its answer (or its default, or an error).
    fn request(&self, input: HumanInput) -> InputFuture<'_>;
    /// The key of the state activation polled now on this thread (see
    /// [`Context::execution_key`](crate::Context::execution_key)); `None` outside one.
    fn execution_key(&self) -> Option<String> {
        None
    }
    /// Whether someone follows the run's custom values (see [`Context::emit`](crate::Context::emit)):
    /// when not, a value is not even encoded.
    fn emitting(&self) -> bool {
        false
    }
    /// Hand `value`, emitted by the state polled now on this thread, to the run's followers.
    fn emit(&self, value: serde_json::Value) {
        let _ = value;
    }
    /// What a child run started by the state polled now on this thread needs of its
    /// parent (the runtime's own type, opaque here); `None` outside a state.
    fn child_link(&self) -> Option<Box<dyn std::any::Any + Send>> {
        None
    }
    /// Sleep until `wake`, durably (see [`Context::sleep`](crate::Context::sleep)).
    fn sleep(&self, wake: crate::wait::Wake) -> crate::wait::WaitFuture<'_, ()> {
        let _ = wake;
        Box::pin(std::future::ready(Err(crate::WaitError::NotInRun { what: "a sleep".to_owned() })))
    }
    /// Wait for the next signal `name` of the run, at most `timeout` (see
    /// [`Context::wait_for_signal`](crate::Context::wait_for_signal)): its payload.
    fn signal(&self, name: String, timeout: Option<Duration>) -> crate::wait::WaitFuture<'_, serde_json::Value> {
        let _ = timeout;
        Box::pin(std::future::ready(Err(crate::WaitError::NotInRun { what: format!("the signal `{name}`") })))
    }
}
