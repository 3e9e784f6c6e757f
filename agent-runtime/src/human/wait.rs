//! One request, from `ctx.human_in_the_loop(...)` to its answer, default or error.
//!
//! Invariants:
//! - The request is registered (and, with a store, written) before the state's resources
//!   are given back, and they are taken back before the answer is returned, on every path
//!   that returns; a future dropped while waiting (state timeout, cancelled run) withdraws
//!   its request, and holds nothing.
//! - Exactly one of code, terminal, store poll and timeout settles a request (see `hub`).
//! - With a store, the store's first answer wins: an answer given here that the store
//!   refuses (another process answered first) is replaced by the store's.
//! - A durable run's writes (its request, the answer it consumes) carry its epoch (`fence`):
//!   once another owner took the run over, the store refuses them, so a run taken over never
//!   records a default or an answer for its new owner.

use std::sync::Arc;
use std::time::Duration;

#[cfg(test)]
use agent_core::__private::{InputBroker, InputFuture};
use agent_core::{HumanInput, HumanInputError};
use tokio::time::{Instant, MissedTickBehavior};

use super::hub::{now_ms, InputHub, Opened};
use super::resources;
use crate::events::{EventHub, EventKind};
use crate::store::{CheckpointStore, InputRecord};

/// How often a waiting request reads the store for an answer from another process.
const POLL: Duration = Duration::from_millis(500);

/// A broker for run `id` with no `Run` behind it (the hub's own tests).
#[cfg(test)]
pub(super) struct RunlessBroker {
    pub(super) hub: Arc<InputHub>,
    pub(super) id: Arc<str>,
}

#[cfg(test)]
impl InputBroker for RunlessBroker {
    fn request(&self, input: HumanInput) -> InputFuture<'_> {
        Box::pin(ask(&self.hub, &self.id, input, None, None, None))
    }
}

/// Withdraws the request when the waiting future goes, however it goes.
struct Pending<'a> {
    hub: &'a InputHub,
    token: u64,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.hub.withdraw(self.token);
    }
}

pub(crate) async fn ask(
    hub: &Arc<InputHub>,
    run: &Arc<str>,
    input: HumanInput,
    events: Option<Arc<EventHub>>,
    state: Option<String>,
    fence: Option<u64>,
) -> Result<String, HumanInputError> {
    let emit = |kind: EventKind| {
        if let Some(h) = events.as_ref().filter(|h| h.active()) {
            h.send(run.clone(), kind);
        }
    };
    let store = hub.store();
    if let Some(store) = &store {
        if hub.needs_load(run) {
            match store.inputs(Some(run), false).await {
                Ok(records) => hub.merge_loaded(run, records),
                Err(e) => tracing::warn!(run_id = %run, error = %e, "could not read requests for input from the store"),
            }
        }
    }
    let (token, mut rx, mut record, elapsed) = match hub.open(run, &input, state) {
        Opened::Answered(answer) => return Ok(answer),
        Opened::Waiting { token, rx, record, elapsed } => (token, rx, record, elapsed),
    };
    let _pending = Pending { hub, token };
    if let Some(store) = &store {
        put(store.as_ref(), &record, fence).await;
    }
    tracing::info!(run_id = %run, id = %record.request_id, prompt = %record.prompt, "waiting for human input");
    emit(EventKind::WaitingForInput { state: record.state.clone(), request_id: record.request_id.clone() });
    let released = resources::release();
    hub.terminal.offer(hub, &record.run_id, &record.request_id, &input);

    let deadline = input.time_limit().map(|t| Instant::now() + t.saturating_sub(elapsed));
    let sleep = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now));
    tokio::pin!(sleep);
    let mut poll = tokio::time::interval_at(Instant::now() + POLL, POLL);
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);

    let outcome = loop {
        tokio::select! {
            biased;
            answer = &mut rx => {
                let Ok(answer) = answer else {
                    break Err(HumanInputError::Cancelled { prompt: input.prompt().to_owned() });
                };
                tracing::info!(id = %record.request_id, "human input answered");
                emit(EventKind::InputAnswered { request_id: record.request_id.clone(), defaulted: false });
                break Ok(match &store {
                    Some(store) => record_answer(hub, store.as_ref(), &record, &input, answer, false, fence).await,
                    None => answer,
                });
            }
            () = &mut sleep, if deadline.is_some() => {
                let after = input.time_limit().unwrap_or_default();
                match input.default_value() {
                    Some(default) => {
                        if hub.settle(token, default.to_owned(), true).is_none() {
                            continue; // answered meanwhile: `rx` has it
                        }
                        tracing::info!(id = %record.request_id, ?after, "no answer in time; the default is taken");
                        emit(EventKind::InputAnswered { request_id: record.request_id.clone(), defaulted: true });
                        let default = default.to_owned();
                        break Ok(match &store {
                            Some(store) => record_answer(hub, store.as_ref(), &record, &input, default, true, fence).await,
                            None => default,
                        });
                    }
                    None => {
                        if !hub.expire(token) {
                            continue;
                        }
                        break Err(HumanInputError::TimedOut { prompt: input.prompt().to_owned(), after });
                    }
                }
            }
            _ = poll.tick(), if store.is_some() => {
                let Some(store) = &store else { continue };
                let Some((answer, defaulted)) = stored_answer(store.as_ref(), &record).await else { continue };
                if defaulted || input.accepts(&answer) {
                    if hub.settle(token, answer.clone(), defaulted).is_some() {
                        tracing::info!(id = %record.request_id, defaulted, "human input answered through the store");
                        emit(EventKind::InputAnswered { request_id: record.request_id.clone(), defaulted });
                        break Ok(answer);
                    }
                    continue;
                }
                tracing::warn!(id = %record.request_id, answer = %answer, "an answer from the store is rejected by the validator; asking again");
                let Some(again) = hub.reask(token, &answer) else { continue };
                record = again;
                put(store.as_ref(), &record, fence).await;
                hub.terminal.offer(hub, &record.run_id, &record.request_id, &input);
            }
        }
    };
    if let Some(released) = released {
        released
            .reacquire()
            .await
            .map_err(|source| HumanInputError::Resources { prompt: input.prompt().to_owned(), source })?;
    }
    outcome
}

/// Write `record` to the store (fenced by `fence`, a durable run's epoch); a failure is
/// logged, and the request goes on in memory.
async fn put(store: &dyn CheckpointStore, record: &InputRecord, fence: Option<u64>) {
    let written = match fence {
        Some(epoch) => store.put_input_fenced(record, epoch).await,
        None => store.put_input(record).await,
    };
    if let Err(e) = written {
        tracing::warn!(id = %record.request_id, error = %e, "could not write a request for input to the store");
    }
}

/// The answer the store holds for `record`, if any, and whether it was defaulted.
async fn stored_answer(store: &dyn CheckpointStore, record: &InputRecord) -> Option<(String, bool)> {
    match store.inputs(Some(&record.run_id), false).await {
        Ok(records) => {
            let found = records.into_iter().find(|r| r.request_id == record.request_id)?;
            let request = found.request;
            request.answer.map(|a| (a, request.defaulted))
        }
        Err(e) => {
            tracing::warn!(id = %record.request_id, error = %e, "could not read an answer from the store");
            None
        }
    }
}

/// Record `answer` in the store; if another process answered first, its answer wins (when
/// the validator accepts it) and is returned instead.
async fn record_answer(
    hub: &InputHub,
    store: &dyn CheckpointStore,
    record: &InputRecord,
    input: &HumanInput,
    answer: String,
    defaulted: bool,
    fence: Option<u64>,
) -> String {
    let at = now_ms();
    let (run_id, request_id) = (&record.run_id, &record.request_id);
    let recorded = match fence {
        Some(epoch) => store.answer_input_fenced(run_id, request_id, &answer, defaulted, at, epoch).await,
        None => store.answer_input(run_id, request_id, &answer, defaulted, at).await,
    };
    match recorded {
        Ok(true) => answer,
        Ok(false) => match stored_answer(store, record).await {
            Some((first, first_defaulted)) if first_defaulted || input.accepts(&first) => {
                hub.overwrite(&record.run_id, &record.request_id, &first, first_defaulted, None);
                first
            }
            _ => answer,
        },
        Err(e) => {
            tracing::warn!(id = %record.request_id, error = %e, "could not write an answer to the store");
            answer
        }
    }
}
