//! The hub with a store and across restarts: answers given through the store by another
//! process, records written as requests are made and answered, re-attaching after a
//! restore or recovery, and timeouts counted from the original request. Paused time only.

use std::sync::Arc;
use std::time::Duration;

use agent_core::{HumanInput, HumanInputError};
use tokio::time::{sleep, Instant};

use super::hub::now_ms;
use super::InputHub;
use crate::store::{CheckpointStore, InputRecord, MemoryStore};

const RUN: &str = "run-1";

fn hub_with(store: &MemoryStore) -> Arc<InputHub> {
    let hub = InputHub::new();
    hub.set_terminal(false);
    hub.with_store(Arc::new(store.clone()));
    hub
}

/// Ask `input` in run `RUN` on a task of its own.
fn ask(hub: &Arc<InputHub>, input: HumanInput) -> tokio::task::JoinHandle<Result<String, HumanInputError>> {
    let broker = hub.broker_for(RUN);
    tokio::spawn(async move { broker.request(input).await })
}

/// Wait (virtual time) until the store holds `n` unanswered requests of `RUN`.
async fn stored_pending(store: &MemoryStore, n: usize) -> Vec<InputRecord> {
    for _ in 0..10_000 {
        let pending = store.inputs(Some(RUN), true).await.unwrap();
        if pending.len() >= n {
            return pending;
        }
        sleep(Duration::from_millis(1)).await;
    }
    panic!("the store never held {n} pending requests");
}

async fn pending_in(hub: &InputHub, n: usize) {
    for _ in 0..10_000 {
        if hub.pending(None).len() >= n {
            return;
        }
        sleep(Duration::from_millis(1)).await;
    }
    panic!("never {n} pending requests");
}

fn record(id: &str, prompt: &str, requested_ms: i64, answer: Option<&str>) -> InputRecord {
    let mut request = agent_core::InputRequestRecord::new(id.into(), prompt.into(), requested_ms);
    request.answer = answer.map(str::to_owned);
    request.answered_ms = answer.map(|_| requested_ms);
    InputRecord { run_id: RUN.into(), request }
}

#[tokio::test(start_paused = true)]
async fn an_answer_written_to_the_store_by_another_process_reaches_the_waiting_state() {
    let store = MemoryStore::new();
    let hub = hub_with(&store);
    let waiting = ask(&hub, HumanInput::new("Review this content (approve/reject):"));

    let pending = stored_pending(&store, 1).await;
    assert_eq!(pending[0].request_id, "input-1");
    assert_eq!(pending[0].prompt, "Review this content (approve/reject):");
    // "Another process": only the store is shared.
    let t0 = Instant::now();
    assert!(store.answer_input(RUN, "input-1", "approve", false, now_ms()).await.unwrap());
    assert_eq!(waiting.await.unwrap().unwrap(), "approve");
    assert!(t0.elapsed() <= Duration::from_millis(500), "found by the next poll");
    assert!(hub.pending(None).is_empty());
    assert_eq!(hub.records(RUN)[0].answer.as_deref(), Some("approve"));
}

#[tokio::test(start_paused = true)]
async fn requests_and_answers_from_code_and_defaults_are_written_to_the_store() {
    let store = MemoryStore::new();
    let hub = hub_with(&store);
    let by_code = ask(&hub, HumanInput::new("Name?").timeout(Duration::from_secs(60)));
    let by_default = ask(&hub, HumanInput::new("Score?").timeout(Duration::from_secs(30)).default("50"));
    pending_in(&hub, 2).await;
    let written = store.inputs(Some(RUN), true).await.unwrap();
    assert_eq!(written.len(), 2, "both written before they wait: {written:?}");
    let name = written.iter().find(|r| r.prompt == "Name?").unwrap();
    assert_eq!(name.timeout_ms, Some(60_000));
    hub.answer(None, &name.request_id, "Ada".into()).unwrap();
    assert_eq!(by_code.await.unwrap().unwrap(), "Ada");
    assert_eq!(by_default.await.unwrap().unwrap(), "50");

    let all = store.inputs(Some(RUN), false).await.unwrap();
    let name = all.iter().find(|r| r.prompt == "Name?").unwrap();
    assert_eq!((name.answer.as_deref(), name.defaulted), (Some("Ada"), false));
    let score = all.iter().find(|r| r.prompt == "Score?").unwrap();
    assert_eq!((score.answer.as_deref(), score.defaulted), (Some("50"), true));
    assert!(store.inputs(Some(RUN), true).await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_stores_first_answer_wins() {
    let store = MemoryStore::new();
    let hub = hub_with(&store);
    let waiting = ask(&hub, HumanInput::new("Color?"));
    pending_in(&hub, 1).await;
    // Another process answers in the store; this one answers in memory before its poll.
    assert!(store.answer_input(RUN, "input-1", "blue", false, now_ms()).await.unwrap());
    hub.answer(None, "input-1", "red".into()).unwrap();
    assert_eq!(waiting.await.unwrap().unwrap(), "blue");
    assert_eq!(hub.records(RUN)[0].answer.as_deref(), Some("blue"));
}

#[tokio::test(start_paused = true)]
async fn a_store_answer_the_validator_refuses_is_asked_again_under_a_new_id() {
    let store = MemoryStore::new();
    let hub = hub_with(&store);
    let waiting = ask(&hub, HumanInput::new("Score?").validator(|x: &str| x.parse::<u32>().is_ok()));
    stored_pending(&store, 1).await;
    assert!(store.answer_input(RUN, "input-1", "lots", false, now_ms()).await.unwrap());
    let again = stored_pending(&store, 1).await;
    assert_eq!(again[0].request_id, "input-2");
    assert_eq!(hub.pending(None)[0].id, "input-2");
    assert!(store.answer_input(RUN, "input-2", "7", false, now_ms()).await.unwrap());
    assert_eq!(waiting.await.unwrap().unwrap(), "7");
}

#[tokio::test(start_paused = true)]
async fn after_a_restart_the_same_prompt_re_attaches_to_the_stored_request() {
    let store = MemoryStore::new();
    let first = hub_with(&store);
    let waiting = ask(&first, HumanInput::new("Approve?"));
    stored_pending(&store, 1).await;
    // The process dies while the state waits.
    waiting.abort();
    let _ = waiting.await;
    let requested_ms = store.inputs(Some(RUN), true).await.unwrap()[0].requested_ms;

    let second = hub_with(&store);
    let waiting = ask(&second, HumanInput::new("Approve?"));
    pending_in(&second, 1).await;
    let pending = second.pending(None);
    assert_eq!(pending[0].id, "input-1", "the same request, not a new one");
    assert_eq!(pending[0].requested_at, std::time::UNIX_EPOCH + Duration::from_millis(requested_ms as u64));
    second.answer(None, "input-1", "yes".into()).unwrap();
    assert_eq!(waiting.await.unwrap().unwrap(), "yes");
    assert_eq!(store.inputs(Some(RUN), false).await.unwrap().len(), 1, "nothing new was written");

    // Asked again live (a loop), the prompt is a new request.
    let again = ask(&second, HumanInput::new("Approve?"));
    pending_in(&second, 1).await;
    assert_eq!(second.pending(None)[0].id, "input-2");
    second.answer(None, "input-2", "no".into()).unwrap();
    assert_eq!(again.await.unwrap().unwrap(), "no");
}

#[tokio::test(start_paused = true)]
async fn a_request_answered_before_the_restart_is_not_asked_again() {
    let store = MemoryStore::new();
    store.put_input(&record("input-1", "Approve?", now_ms(), Some("yes"))).await.unwrap();
    let hub = hub_with(&store);
    let t0 = Instant::now();
    assert_eq!(ask(&hub, HumanInput::new("Approve?")).await.unwrap().unwrap(), "yes");
    assert_eq!(t0.elapsed(), Duration::ZERO);
    // Numbering goes on after the restored ids.
    let next = ask(&hub, HumanInput::new("Approve?"));
    pending_in(&hub, 1).await;
    assert_eq!(hub.pending(None)[0].id, "input-2");
    hub.answer(None, "input-2", "again".into()).unwrap();
    assert_eq!(next.await.unwrap().unwrap(), "again");
}

#[tokio::test(start_paused = true)]
async fn a_re_attached_timeout_counts_from_the_original_request() {
    let store = MemoryStore::new();
    let mut old = record("input-1", "Score?", now_ms() - 50_000, None);
    old.timeout_ms = Some(60_000);
    store.put_input(&old).await.unwrap();
    let hub = hub_with(&store);
    let t0 = Instant::now();
    let answer = ask(&hub, HumanInput::new("Score?").timeout(Duration::from_secs(60)).default("50")).await;
    assert_eq!(answer.unwrap().unwrap(), "50");
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_secs(9) && waited <= Duration::from_secs(11), "waited {waited:?}, not 60 s");
    let stored = &store.inputs(Some(RUN), false).await.unwrap()[0];
    assert_eq!((stored.answer.as_deref(), stored.defaulted), (Some("50"), true));
}

#[tokio::test(start_paused = true)]
async fn snapshot_and_restore_carry_pending_input_across_hubs() {
    let first = InputHub::new();
    first.set_terminal(false);
    let broker = first.broker_for(RUN);
    let waiting = tokio::spawn(async move { broker.request(HumanInput::new("Ship it?")).await });
    pending_in(&first, 1).await;
    let records = first.snapshot(RUN);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].answer, None);
    waiting.abort();

    let second = InputHub::new();
    second.set_terminal(false);
    second.restore(records);
    assert!(second.pending(None).is_empty(), "restored, but nobody waits on it yet");
    let waiting = ask(&second, HumanInput::new("Ship it?"));
    pending_in(&second, 1).await;
    assert_eq!(second.pending(None)[0].id, "input-1");
    second.answer(None, "input-1", "ship".into()).unwrap();
    assert_eq!(waiting.await.unwrap().unwrap(), "ship");
}

#[tokio::test(start_paused = true)]
async fn the_same_prompt_asked_twice_at_once_gets_two_ids() {
    let hub = InputHub::new();
    hub.set_terminal(false);
    let a = ask(&hub, HumanInput::new("Same?"));
    let b = ask(&hub, HumanInput::new("Same?"));
    pending_in(&hub, 2).await;
    let ids: Vec<String> = hub.pending(None).into_iter().map(|p| p.id).collect();
    assert_eq!(ids, ["input-1", "input-2"]);
    hub.answer(None, "input-2", "two".into()).unwrap();
    hub.answer(None, "input-1", "one".into()).unwrap();
    let mut got = [a.await.unwrap().unwrap(), b.await.unwrap().unwrap()];
    got.sort();
    assert_eq!(got, ["one", "two"]);
}
