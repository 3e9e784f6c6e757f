//! What a store keeps for the outside world's reach into a run: [`SignalRecord`]s (named
//! messages sent to a run, see `Agent::signal`) and [`TimerRecord`]s (the wake times of its
//! durable waits, see `Context::sleep`).
//!
//! Invariants every implementation keeps (the conformance tests check them):
//! - A signal is kept once per `(run_id, signal_id)`: a second send with the same id
//!   changes nothing and says [`SignalSent::Duplicate`]. A send to a run the store does not
//!   have is [`SignalSent::UnknownRun`], to a finished one (completed, failed, cancelled,
//!   timed out) [`SignalSent::Finished`]; neither keeps anything. The check and the insert
//!   are one transaction.
//! - `take_signal` gives a wait the signal it took before, if any (a state run again after a
//!   crash gets the same message again, not the next one); else the oldest signal of that
//!   name no wait took (by `seq`, the order sends were kept in), marked taken by the wait in
//!   the same conditional write, so of two waits taking at once each gets a different
//!   message or none. It is fenced by the run's epoch: a run taken over takes nothing.
//! - A timer is armed once per `(run_id, key)`: `arm_timer` keeps the first wake time and
//!   returns it to every later call (a state run again after a crash wakes when the first
//!   run of it would have), fenced like `take_signal`.
//! - Deleting a run (`delete_run`, retention) deletes its signals and timers.

use agent_core::AgentStatus;

/// A message sent to a run: a name, a JSON payload and an id unique within the run.
///
/// ```
/// use agent_runtime::store::SignalRecord;
/// let s = SignalRecord::new("run-1", "sig-1", "payment", r#"{"cents":1200}"#, 1_700_000_000_000);
/// assert_eq!((s.name.as_str(), s.taken_by.as_deref()), ("payment", None));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SignalRecord {
    /// The run it is for.
    pub run_id: String,
    /// Its id, unique within the run: a second send with one id keeps nothing.
    pub signal_id: String,
    /// The name a state waits for (`ctx.wait_for_signal(name)`).
    pub name: String,
    /// The message, as JSON text.
    pub payload: String,
    /// When it was sent (milliseconds since the Unix epoch).
    pub sent_ms: i64,
    /// Its place among the run's signals, set by the store (0 before it is kept).
    pub seq: u64,
    /// The wait that took it (`{execution key}/signal/{n}`), once one did.
    pub taken_by: Option<String>,
    /// When it was taken.
    pub taken_ms: Option<i64>,
}

impl SignalRecord {
    /// A signal not yet kept nor taken.
    pub fn new(
        run_id: impl Into<String>,
        signal_id: impl Into<String>,
        name: impl Into<String>,
        payload: impl Into<String>,
        sent_ms: i64,
    ) -> SignalRecord {
        SignalRecord {
            run_id: run_id.into(),
            signal_id: signal_id.into(),
            name: name.into(),
            payload: payload.into(),
            sent_ms,
            seq: 0,
            taken_by: None,
            taken_ms: None,
        }
    }
}

/// What [`CheckpointStore::send_signal`](super::CheckpointStore::send_signal) did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignalSent {
    /// Kept, for the run's next wait on its name.
    Kept,
    /// The run already has a signal with this id: nothing changed.
    Duplicate,
    /// The store has no such run: nothing kept.
    UnknownRun,
    /// The run is over, with this status: nothing kept.
    Finished(AgentStatus),
}

/// The wake time of one durable wait of a run (a sleep, or a signal wait's deadline).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TimerRecord {
    /// The run.
    pub run_id: String,
    /// The wait's key: `{execution key}/sleep/{n}` or `{execution key}/signal/{n}`.
    pub key: String,
    /// When it wakes (milliseconds since the Unix epoch).
    pub wake_ms: i64,
}

impl TimerRecord {
    /// A timer of run `run_id`.
    pub fn new(run_id: impl Into<String>, key: impl Into<String>, wake_ms: i64) -> TimerRecord {
        TimerRecord { run_id: run_id.into(), key: key.into(), wake_ms }
    }
}
