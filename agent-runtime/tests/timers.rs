//! Durable timers (`ctx.sleep`), in paused time: a sleep's wake time is armed in the store
//! when it starts, and a run recovered after its process stopped wakes at that time, not a
//! whole sleep after its restart (translated from DBOS's `test_durable_sleep`, where a
//! workflow recovered mid-sleep sleeps only what is left). A sleeping state holds no
//! resources, and a sleep without a store is a plain sleep.

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_core::{AgentError, Context, ResourceRequirements, StateResult, WaitError};
use agent_runtime::store::{CheckpointStore, MemoryStore};
use agent_runtime::{Agent, AgentStatus, ResourcePool, RunOptions};
use tokio::time::Instant;

mod common;
use common::spawn_run;

const HOUR: Duration = Duration::from_secs(3600);
const MINUTE: Duration = Duration::from_secs(60);

/// `prepare -> nap -> done`: `nap` sleeps an hour; `starts` counts its starts and `woke`
/// notes when it woke (tokio's clock).
fn napping(store: Arc<dyn CheckpointStore>, starts: Arc<AtomicU32>, woke: Arc<Mutex<Vec<Instant>>>) -> Agent {
    let mut agent = Agent::new("napping").with_store(store);
    agent.add_state("prepare", |ctx: Context| async move {
        ctx.set_state("prepared", true);
        StateResult::next("nap")
    });
    agent.add_state("nap", move |ctx: Context| {
        let (starts, woke) = (starts.clone(), woke.clone());
        async move {
            starts.fetch_add(1, SeqCst);
            ctx.sleep(HOUR).await?;
            woke.lock().unwrap().push(Instant::now());
            Ok::<_, WaitError>(StateResult::next("done"))
        }
    });
    agent.add_state("done", |_ctx: Context| async { StateResult::End });
    agent
}

/// Recover `run_id`, waiting (a few yields at a time, in virtual time) while the dropped
/// run's lease is being given back in the background.
async fn recover(agent: &Agent, run_id: &str) -> Result<agent_runtime::AgentResult, AgentError> {
    for _ in 0..1000 {
        match agent.recover(run_id).await {
            Err(AgentError::Owned { .. }) => tokio::task::yield_now().await,
            other => return other,
        }
    }
    panic!("the dropped run's lease was never given back");
}

#[tokio::test(start_paused = true)]
async fn a_run_killed_while_it_sleeps_and_recovered_half_an_hour_later_wakes_at_the_original_hour() {
    let store: Arc<dyn CheckpointStore> = Arc::new(MemoryStore::new());
    let (starts, woke) = (Arc::new(AtomicU32::new(0)), Arc::new(Mutex::new(Vec::new())));
    let agent = napping(store.clone(), starts.clone(), woke.clone());
    let t0 = Instant::now();
    let run = spawn_run(&agent);
    // The process "dies" ten minutes into the nap: the run's task and everything it holds
    // go (its lease is given back, as the next worker would find it run out).
    tokio::time::sleep(10 * MINUTE).await;
    assert_eq!(starts.load(SeqCst), 1);
    assert!(woke.lock().unwrap().is_empty(), "still asleep");
    let run_id = agent.run_id().unwrap();
    run.abort();
    assert!(run.await.unwrap_err().is_cancelled());
    let timers = store.timers(&run_id).await.unwrap();
    assert_eq!(timers.len(), 1, "the wake time is armed: {timers:?}");
    assert!(timers[0].key.ends_with("/nap/1/sleep/1"), "{}", timers[0].key);
    let armed = timers[0].wake_ms;

    // Half an hour later another process recovers it.
    tokio::time::sleep(30 * MINUTE).await;
    let recovering = napping(store.clone(), starts.clone(), woke.clone());
    let result = recover(&recovering, &run_id).await.unwrap();
    assert_eq!(result.status(), AgentStatus::Completed);
    assert_eq!(starts.load(SeqCst), 2, "`nap` ran again from its start, and slept what was left");
    let woke = woke.lock().unwrap().clone();
    assert_eq!(woke.len(), 1);
    let slept = woke[0] - t0;
    assert!(
        slept >= HOUR - Duration::from_millis(1) && slept < HOUR + Duration::from_secs(1),
        "woke {slept:?} after the start, not at the hour"
    );
    let timers = store.timers(&run_id).await.unwrap();
    assert_eq!((timers.len(), timers[0].wake_ms), (1, armed), "the recovery kept the first wake time");
    assert_eq!(result.context().get_state::<bool>("prepared"), Some(true));
}

#[tokio::test(start_paused = true)]
async fn a_run_recovered_after_its_wake_time_goes_on_at_once() {
    let store: Arc<dyn CheckpointStore> = Arc::new(MemoryStore::new());
    let (starts, woke) = (Arc::new(AtomicU32::new(0)), Arc::new(Mutex::new(Vec::new())));
    let agent = napping(store.clone(), starts.clone(), woke.clone());
    let run = spawn_run(&agent);
    tokio::time::sleep(MINUTE).await;
    let run_id = agent.run_id().unwrap();
    run.abort();
    assert!(run.await.unwrap_err().is_cancelled());
    tokio::time::sleep(2 * HOUR).await;
    let recovered_at = Instant::now();
    let result = recover(&napping(store, starts, woke.clone()), &run_id).await.unwrap();
    assert_eq!(result.status(), AgentStatus::Completed);
    let woke = woke.lock().unwrap()[0];
    assert!(woke - recovered_at < Duration::from_secs(1), "no new hour: woke {:?} after recovery", woke - recovered_at);
}

#[tokio::test(start_paused = true)]
async fn sleeping_states_hold_no_resources() {
    // One CPU, two runs whose sleeping state needs it: both sleep at once.
    let pool = ResourcePool::builder().total_cpu(1.0).build();
    let mut agent = Agent::new("sleepers").with_store(MemoryStore::new()).with_resource_pool(pool);
    agent
        .add_state("nap", |ctx: Context| async move {
            ctx.sleep(HOUR).await?;
            Ok::<_, WaitError>(StateResult::End)
        })
        .resources(ResourceRequirements::new().cpu(1.0));
    let t0 = Instant::now();
    let (a, b) = (agent.start(RunOptions::new()).unwrap(), agent.start(RunOptions::new()).unwrap());
    let (a, b) = tokio::join!(a, b);
    assert_eq!((a.unwrap().status(), b.unwrap().status()), (AgentStatus::Completed, AgentStatus::Completed));
    let took = t0.elapsed();
    assert!(took < HOUR + MINUTE, "the second run waited for the first's CPU: {took:?}");
}

#[tokio::test(start_paused = true)]
async fn without_a_store_a_sleep_is_a_plain_one_and_sleep_until_a_past_time_returns_at_once() {
    let mut agent = Agent::new("plain");
    agent.add_state("nap", |ctx: Context| async move {
        let t = Instant::now();
        ctx.sleep(HOUR).await?;
        ctx.set_state("slept_s", t.elapsed().as_secs());
        let t = Instant::now();
        ctx.sleep_until(std::time::SystemTime::UNIX_EPOCH).await?;
        ctx.set_state("past_s", t.elapsed().as_secs());
        Ok::<_, WaitError>(StateResult::End)
    });
    let result = agent.run().await.unwrap();
    assert_eq!(result.context().get_state::<u64>("slept_s"), Some(3600));
    assert_eq!(result.context().get_state::<u64>("past_s"), Some(0));
}

#[tokio::test]
async fn outside_a_run_a_sleep_says_so() {
    let err = Context::new().sleep(MINUTE).await.unwrap_err();
    assert!(matches!(err, WaitError::NotInRun { .. }), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_pause_does_not_wait_for_a_sleep_and_the_resumed_run_wakes_at_the_armed_time() {
    let store: Arc<dyn CheckpointStore> = Arc::new(MemoryStore::new());
    let (starts, woke) = (Arc::new(AtomicU32::new(0)), Arc::new(Mutex::new(Vec::new())));
    let agent = napping(store.clone(), starts.clone(), woke.clone());
    let t0 = Instant::now();
    let run = agent.start(RunOptions::new()).unwrap();
    tokio::time::sleep(10 * MINUTE).await;
    let checkpoint = run.pause().await;
    assert!(t0.elapsed() < 11 * MINUTE, "the pause did not wait for the sleep: {:?}", t0.elapsed());
    assert_eq!(checkpoint.agent_status, AgentStatus::Paused);
    let at: Vec<&str> = checkpoint.tokens.iter().map(|t| t.state.as_str()).collect();
    assert_eq!(at, ["nap"], "the sleeping state runs again on resume");
    assert!(!checkpoint.completed_states.iter().any(|s| s == "nap"), "not completed, nor failed");
    assert_eq!(checkpoint.states.iter().find(|s| s.name == "nap").map(|s| s.failed), Some(0));
    assert!(woke.lock().unwrap().is_empty());
    // Twenty minutes later the run goes on: `nap` runs again and sleeps what is left.
    tokio::time::sleep(20 * MINUTE).await;
    run.resume().await.unwrap();
    let result = run.await.unwrap();
    assert_eq!(result.status(), AgentStatus::Completed);
    assert_eq!(starts.load(SeqCst), 2);
    let slept = woke.lock().unwrap()[0] - t0;
    assert!(
        slept >= HOUR - Duration::from_millis(1) && slept < HOUR + Duration::from_secs(1),
        "woke {slept:?} after the start"
    );
}

#[tokio::test(start_paused = true)]
async fn a_draining_worker_hands_a_sleeping_run_over_at_once() {
    use agent_runtime::{SubmitOptions, Worker};
    let store: Arc<dyn CheckpointStore> = Arc::new(MemoryStore::new());
    let (starts, woke) = (Arc::new(AtomicU32::new(0)), Arc::new(Mutex::new(Vec::new())));
    let define = {
        let (store, starts, woke) = (store.clone(), starts.clone(), woke.clone());
        move || napping(store.clone(), starts.clone(), woke.clone())
    };
    let t0 = Instant::now();
    let run_id = define().submit(SubmitOptions::new()).await.unwrap();
    let serve = |stop: tokio_util::sync::CancellationToken| {
        let (store, define) = (store.clone(), define.clone());
        tokio::spawn(async move { Worker::new(store).serve(define).run_until(stop.cancelled_owned()).await.unwrap() })
    };
    let first_stop = tokio_util::sync::CancellationToken::new();
    let first = serve(first_stop.clone());
    tokio::time::sleep(10 * MINUTE).await;
    assert_eq!(starts.load(SeqCst), 1);
    first_stop.cancel();
    let report = first.await.unwrap();
    assert!(t0.elapsed() < 11 * MINUTE, "the drain did not wait for the sleep: {:?}", t0.elapsed());
    assert_eq!((report.claimed, report.handed_over), (1, 1), "{report:?}");
    let second_stop = tokio_util::sync::CancellationToken::new();
    let second = serve(second_stop.clone());
    let done = define().wait(&run_id).await.unwrap();
    second_stop.cancel();
    assert_eq!((done.agent_status, second.await.unwrap().claimed), (AgentStatus::Completed, 1));
    assert_eq!(starts.load(SeqCst), 2);
    let slept = woke.lock().unwrap()[0] - t0;
    assert!(
        slept >= HOUR - Duration::from_millis(1) && slept < HOUR + Duration::from_secs(5),
        "woke {slept:?} after the start"
    );
}
