//! `ctx.execution_key()`: one key per state activation, the same when the activation's body
//! runs again (a retry, a re-execution after its run was taken over), another for the next
//! activation of the state, and none outside a state.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_core::{BoxError, Context, RetryPolicy, StateResult};
use agent_runtime::store::MemoryStore;
use agent_runtime::{Agent, AgentStatus};

type Keys = Arc<Mutex<Vec<String>>>;

fn keys() -> Keys {
    Arc::new(Mutex::new(Vec::new()))
}

#[tokio::test(start_paused = true)]
async fn retries_share_the_key_and_each_activation_has_its_own() {
    let seen = keys();
    let mut agent = Agent::new("keys");
    let s = seen.clone();
    agent
        .add_state("charge", move |ctx: Context| {
            let seen = s.clone();
            async move {
                seen.lock().unwrap().push(ctx.execution_key().expect("inside a state"));
                let attempt: u32 = ctx.get_state_or("attempt", 0) + 1;
                ctx.set_state("attempt", attempt);
                // Each activation fails on its first two attempts.
                if !attempt.is_multiple_of(3) {
                    return Err::<StateResult, BoxError>("the provider timed out".into());
                }
                let visits: u32 = ctx.get_state_or("visits", 0) + 1;
                ctx.set_state("visits", visits);
                Ok(if visits < 2 { StateResult::next("charge") } else { StateResult::End })
            }
        })
        .retry_policy(RetryPolicy::new().max_retries(3).initial_delay(Duration::from_millis(10)));
    let result = agent.run().await.unwrap();
    assert_eq!(result.status(), AgentStatus::Completed);
    let seen = seen.lock().unwrap().clone();
    let id = result.run_id();
    let first = format!("{id}/charge/1");
    let second = format!("{id}/charge/2");
    assert_eq!(
        seen,
        [&first, &first, &first, &second, &second, &second].map(|k| k.clone()),
        "three attempts of each of two activations"
    );
    // Not from inside a state: none.
    assert_eq!(result.context().execution_key(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_run_again_after_its_run_was_taken_over_gets_the_same_key() {
    let store = MemoryStore::new();
    let seen = keys();
    let started = Arc::new(tokio::sync::Notify::new());
    let define = |seen: Keys, started: Arc<tokio::sync::Notify>, hang: bool| {
        let mut agent = Agent::new("taken-over").with_store(store.clone());
        agent.add_state("prepare", |_ctx: Context| async { StateResult::next("charge") }).targets(["charge"]);
        agent.add_state("charge", move |ctx: Context| {
            let (seen, started) = (seen.clone(), started.clone());
            async move {
                seen.lock().unwrap().push(ctx.execution_key().unwrap());
                started.notify_one();
                if hang {
                    // The first worker dies in here.
                    std::future::pending::<()>().await;
                }
                StateResult::End
            }
        });
        agent
    };
    let first = define(seen.clone(), started.clone(), true);
    let going = tokio::spawn({
        let first = first.clone();
        async move { first.run().await }
    });
    started.notified().await;
    let run_id = first.run_id().unwrap();
    going.abort(); // the process running it dies mid-state
    let _ = going.await;
    let second = define(seen.clone(), started.clone(), false);
    let mut result = second.recover(&run_id).await;
    for _ in 0..100 {
        // The dropped run gives its lease back in the background.
        if !matches!(result, Err(agent_core::AgentError::Owned { .. })) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        result = second.recover(&run_id).await;
    }
    assert_eq!(result.unwrap().status(), AgentStatus::Completed);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen, [format!("{run_id}/charge/1"), format!("{run_id}/charge/1")]);
}
