//! A durable sleep (`ctx.sleep`, `ctx.sleep_until`).
//!
//! Invariants:
//! - A durable run arms the wake time in its store before it sleeps, and sleeps until the
//!   time the store returns: the first arming's, when the state ran before (a recovered run
//!   wakes when its first run would have). A time already past returns at once, having
//!   released nothing.
//! - A run without a store sleeps in its process: nothing is recorded.
//! - The state holds no resources while it sleeps, and takes them back before returning.
//! - A durable sleep leaves when the run pauses (`WaitError::Interrupted`, see `signal`).

use agent_core::__private::Wake;
use agent_core::WaitError;

use super::{store_failed, Waiter};
use crate::clock;
use crate::events::EventKind;
use crate::store::TimerRecord;

/// Sleep until `wake` (see the module docs).
pub(crate) async fn sleep(w: Waiter<'_>, wake: Wake) -> Result<(), WaitError> {
    let wanted_ms = match wake {
        Wake::After(d) => clock::after_ms(d),
        Wake::At(t) => clock::ms_of(t),
    };
    let wake_ms = match &w.durable {
        Some((store, epoch)) => store
            .arm_timer(&TimerRecord::new(w.run_id, w.key.as_str(), wanted_ms), *epoch)
            .await
            .map_err(store_failed)?,
        None => wanted_ms,
    };
    if clock::now_ms() >= wake_ms {
        return Ok(());
    }
    tracing::info!(run_id = %w.run_id, key = %w.key, wake_ms, "sleeping");
    w.emit(EventKind::Sleeping { state: w.state.clone(), until: crate::store::time_of(wake_ms) });
    let released = crate::human::release_resources();
    let sleep = tokio::time::sleep_until(clock::instant_at(wake_ms));
    tokio::pin!(sleep);
    loop {
        let paused = w.pause_notified();
        if w.pausing() {
            // Nothing to take back: the state leaves, and runs again when the run goes on.
            tracing::info!(run_id = %w.run_id, key = %w.key, "sleep interrupted by a pause; it resumes with the run");
            return Err(WaitError::Interrupted);
        }
        tokio::select! {
            () = &mut sleep => break,
            _ = paused => {}
        }
    }
    if let Some(released) = released {
        released.reacquire().await.map_err(|source| WaitError::Resources { source })?;
    }
    Ok(())
}
