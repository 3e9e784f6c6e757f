//! Helpers shared by the runtime's integration tests (each test file includes this module;
//! not every file uses every helper).
#![allow(dead_code)]

pub mod http;
pub mod kills;
pub mod pg;
pub mod review;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use agent_core::{Context, StateResult};

/// A boxed state future, for closures that pick their body at run time.
pub type StateFut = Pin<Box<dyn Future<Output = StateResult> + Send + 'static>>;
/// The same for states that may fail.
pub type FallibleFut = Pin<Box<dyn Future<Output = Result<StateResult, std::io::Error>> + Send + 'static>>;

/// `n` seconds.
pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// `n` milliseconds.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Record `name` in the context's `trail`, atomically.
pub fn visit(ctx: &Context, name: &str) {
    ctx.update_state_or_default("trail", |t: &mut Vec<String>| t.push(name.to_owned())).unwrap();
}

/// The context's `trail`: every visit, in order.
pub fn trail(ctx: &Context) -> Vec<String> {
    ctx.get_state("trail").unwrap_or_default()
}

/// How many times `name` is in the trail.
pub fn count(ctx: &Context, name: &str) -> usize {
    trail(ctx).iter().filter(|t| *t == name).count()
}

/// A state that sleeps `ms` of (virtual) time if any, records its visit, then returns `next`.
pub fn step(name: &'static str, ms: u64, next: StateResult) -> impl Fn(Context) -> StateFut + Send + Sync + 'static {
    move |ctx: Context| {
        let next = next.clone();
        Box::pin(async move {
            if ms > 0 {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            visit(&ctx, name);
            next
        })
    }
}

/// Start a run of `agent` in a task of its own, so the test can watch, checkpoint, pause or
/// cancel it through the agent meanwhile.
pub fn spawn_run(
    agent: &agent_runtime::Agent,
) -> tokio::task::JoinHandle<Result<agent_runtime::AgentResult, agent_core::AgentError>> {
    let agent = agent.clone();
    tokio::spawn(async move { agent.run().await })
}

/// `agent.recover(run_id)`, waiting while another worker holds the run: a process killed
/// with its lease live leaves the run to whoever recovers it once the lease has run out.
/// Waits on tokio's clock (do not use it under paused time), at most `patience` of the real
/// clock in all.
pub async fn recover_once_free(
    agent: &agent_runtime::Agent,
    run_id: &str,
    patience: Duration,
) -> Result<agent_runtime::AgentResult, agent_core::AgentError> {
    let give_up = std::time::Instant::now() + patience;
    loop {
        match agent.recover(run_id).await {
            Err(agent_core::AgentError::Owned { lease_until, .. }) if std::time::Instant::now() < give_up => {
                let left = lease_until.duration_since(std::time::SystemTime::now()).unwrap_or_default();
                tokio::time::sleep(left.min(Duration::from_secs(1)) + Duration::from_millis(5)).await;
            }
            other => return other,
        }
    }
}

/// Run `scenario` on a `SqliteStore` in a file of a temporary directory, removed afterwards.
pub async fn on_sqlite<F, Fut>(scenario: F)
where
    F: FnOnce(std::sync::Arc<dyn agent_runtime::store::CheckpointStore>) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    scenario(std::sync::Arc::new(agent_runtime::store::SqliteStore::open(dir.path().join("runs.db")).unwrap())).await;
}
