//! Waiting on time and on the outside world: durable sleeps
//! ([`Context::sleep`](crate::Context::sleep), [`Context::sleep_until`](crate::Context::sleep_until))
//! and signals ([`Context::wait_for_signal`](crate::Context::wait_for_signal)), and why a wait
//! did not give what it waited for ([`WaitError`]).
//!
//! Invariants:
//! - This crate only describes waits: where a wake time or a message is recorded, how long
//!   is left after a restart, and who delivers messages live in the runtime, behind the
//!   hidden [`InputBroker`](crate::__private::InputBroker) hooks (`sleep`, `signal`) it
//!   installs into each run's context.
//! - Outside a run (a context made with `Context::new()`), a sleep or a signal wait fails at
//!   once with [`WaitError::NotInRun`]: nothing would record the sleep, nor could send to it
//!   (and this crate has no timer of its own: it needs no async runtime).
//! - A durable wait (a run with a store) ends with [`WaitError::Interrupted`] when the run
//!   pauses, rather than hold the pause up for the rest of a day-long sleep: the state,
//!   returning it, runs again when the run goes on, and its wait resumes from what was
//!   recorded. A wait without a store keeps waiting (nothing recorded it).
//! - A signal's payload is decoded into the type the wait asks for only when it arrives; a
//!   payload that does not fit is [`WaitError::Decode`], with the signal's name.

use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;

use crate::error::ResourceError;
use crate::Context;

/// When a durable sleep ends: after a duration from when it was first armed, or at a time.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// This long after the sleep was first armed (a re-run after a restart keeps the first
    /// arming's end).
    After(Duration),
    /// At this wall-clock time.
    At(SystemTime),
}

/// Why a wait ([`Context::sleep`](crate::Context::sleep),
/// [`Context::wait_for_signal`](crate::Context::wait_for_signal)) returned no value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// No signal of this name came within the wait's timeout.
    #[error("no signal `{name}` came within {after:?}")]
    TimedOut {
        /// The signal waited for.
        name: String,
        /// The timeout.
        after: Duration,
    },
    /// The signal's payload is not the type the wait asked for. The signal is taken (by
    /// this wait: a re-run of the state gets it again).
    #[error("the signal `{name}` does not decode as the type waited for: {message}")]
    Decode {
        /// The signal.
        name: String,
        /// What does not fit.
        message: String,
    },
    /// The context is not inside an agent's run (made with `Context::new()`): nothing can
    /// record a sleep nor send it a signal.
    #[error("cannot wait for {what}: this context is not inside an agent's run")]
    NotInRun {
        /// What was waited for (`a sleep`, `the signal \`payment\``).
        what: String,
    },
    /// The run has no store, so nothing outside it can send it a signal (an agent given a
    /// `MemoryStore` takes signals from its own process).
    #[error("cannot wait for the signal `{name}`: the run has no store, so nothing can send to it")]
    NoStore {
        /// The signal.
        name: String,
    },
    /// The run's store failed while recording the wait or taking a message, and kept failing
    /// past its retries.
    #[error("the run's store failed while waiting: {message}")]
    Store {
        /// What failed.
        message: String,
    },
    /// The run lost its ownership while the state waited (another worker took it over):
    /// the wait is that worker's now.
    #[error("the run was taken over by another worker while it waited")]
    Fenced,
    /// The run is pausing (paused, or handed over by a draining worker): a durable wait
    /// does not hold the pause up. Return this error from the state (`?` does): the state is
    /// not failed, it runs again when the run goes on, and its wait resumes where it was
    /// (a sleep until its armed time, a signal wait with the same deadline).
    #[error("the run is pausing: the state runs again when the run goes on, and its wait resumes")]
    Interrupted,
    /// The state gave its resources back while it waited, and could not take them again.
    #[error("after its wait, the state could not take its resources back: {source}")]
    Resources {
        /// Why the pool refused.
        #[source]
        source: ResourceError,
    },
}

/// The future an [`InputBroker`](crate::__private::InputBroker)'s waits return.
#[doc(hidden)]
pub type WaitFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, WaitError>> + Send + 'a>>;

/// A wait for the signal `name`, made by
/// [`Context::wait_for_signal`](crate::Context::wait_for_signal): `.await` it for the
/// message, decoded as `T`; [`timeout`](SignalWait::timeout) bounds it.
///
/// ```no_run
/// # use std::time::Duration;
/// # use agent_core::{Context, StateResult, WaitError};
/// #[derive(serde::Deserialize)]
/// struct Payment { cents: u64 }
///
/// async fn await_payment(ctx: Context) -> Result<StateResult, WaitError> {
///     let paid: Payment = ctx.wait_for_signal("payment").timeout(Duration::from_secs(3600)).await?;
///     ctx.set_state("paid_cents", paid.cents);
///     Ok(StateResult::End)
/// }
/// ```
#[must_use = "a signal wait does nothing until it is awaited"]
pub struct SignalWait<'c, T> {
    ctx: &'c Context,
    name: String,
    timeout: Option<Duration>,
    _type: PhantomData<fn() -> T>,
}

impl<'c, T> SignalWait<'c, T> {
    pub(crate) fn new(ctx: &'c Context, name: String) -> Self {
        SignalWait { ctx, name, timeout: None, _type: PhantomData }
    }

    /// Wait at most `after` (counted from when this wait first started, across restarts of
    /// the run); past it the wait fails with [`WaitError::TimedOut`].
    pub fn timeout(mut self, after: Duration) -> Self {
        self.timeout = Some(after);
        self
    }
}

impl<'c, T: DeserializeOwned + Send + 'c> IntoFuture for SignalWait<'c, T> {
    type Output = Result<T, WaitError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'c>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let Some(broker) = self.ctx.broker() else {
                return Err(WaitError::NotInRun { what: format!("the signal `{}`", self.name) });
            };
            let value = broker.signal(self.name.clone(), self.timeout).await?;
            serde_json::from_value(value).map_err(|e| WaitError::Decode { name: self.name, message: e.to_string() })
        })
    }
}
