//! A signal wait (`ctx.wait_for_signal(name)`), from its deadline to the message taken.
//!
//! Invariants:
//! - The deadline of a wait with a timeout is armed in the store (as a sleep's wake time)
//!   before the first look: a state run again after a restart times out when its first
//!   run would have.
//! - The wait takes its message with the store's `take_signal`, which gives it the message
//!   it took before if any (a re-run gets the same one), so a message is delivered to one
//!   wait, once. A message already kept when the wait starts is taken at once.
//! - Between looks the wait sleeps until a send in this process wakes it (`send::waiters`,
//!   registered before each look, so a send between the look and the sleep is not missed),
//!   `POLL` passes (sends from other processes), or its deadline comes.
//! - It leaves when the run pauses (`WaitError::Interrupted`, see `signal`), having taken
//!   nothing: the state's next run takes the message.
//! - It holds no resources while it sleeps (released at the first empty look, taken back
//!   before it returns, on every path that returns).

use std::time::Duration;

use agent_core::WaitError;
use serde_json::Value;

use super::{send, store_failed, Waiter};
use crate::clock;
use crate::events::EventKind;
use crate::store::TimerRecord;

/// How often a waiting state reads the store for a message from another process.
pub(crate) const POLL: Duration = Duration::from_millis(500);

/// Wait for the run's next signal `name`, at most `timeout` (see the module docs).
pub(crate) async fn receive(w: Waiter<'_>, name: String, timeout: Option<Duration>) -> Result<Value, WaitError> {
    let Some((store, epoch)) = w.durable.clone() else { return Err(WaitError::NoStore { name }) };
    let deadline_ms = match timeout {
        Some(t) => Some(
            store
                .arm_timer(&TimerRecord::new(w.run_id, w.key.as_str(), clock::after_ms(t)), epoch)
                .await
                .map_err(store_failed)?,
        ),
        None => None,
    };
    let woken = send::waiters(w.run_id);
    let mut released = None;
    let mut announced = false;
    let outcome = loop {
        let notified = woken.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let paused = w.pause_notified();
        if w.pausing() {
            tracing::info!(run_id = %w.run_id, name = %name, "signal wait interrupted by a pause; it resumes with the run");
            return Err(WaitError::Interrupted);
        }
        match store.take_signal(w.run_id, &name, &w.key, clock::now_ms(), epoch).await {
            Ok(Some(signal)) => {
                tracing::info!(run_id = %w.run_id, name = %name, id = %signal.signal_id, "signal received");
                w.emit(EventKind::SignalReceived {
                    state: w.state.clone(),
                    name: name.clone(),
                    signal_id: signal.signal_id.clone(),
                });
                break serde_json::from_str(&signal.payload)
                    .map_err(|e| WaitError::Decode { name: name.clone(), message: e.to_string() });
            }
            Ok(None) => {}
            Err(e) => break Err(store_failed(e)),
        }
        if deadline_ms.is_some_and(|d| clock::now_ms() >= d) {
            break Err(WaitError::TimedOut { name: name.clone(), after: timeout.unwrap_or_default() });
        }
        if !announced {
            announced = true;
            tracing::info!(run_id = %w.run_id, name = %name, "waiting for a signal");
            w.emit(EventKind::WaitingForSignal { state: w.state.clone(), name: name.clone() });
            released = crate::human::release_resources();
        }
        let deadline = deadline_ms.map(clock::instant_at);
        tokio::select! {
            () = &mut notified => {}
            _ = paused => {}
            () = tokio::time::sleep(POLL) => {}
            () = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {}
        }
    };
    if let Some(released) = released {
        released.reacquire().await.map_err(|source| WaitError::Resources { source })?;
    }
    outcome
}
