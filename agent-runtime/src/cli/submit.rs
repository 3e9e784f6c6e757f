//! `worker`, `submit` and `wait`: the command line of a fleet. A `worker` process serves the
//! workflow (see [`Worker`]); `submit` queues a run for one and prints its id; `wait`
//! follows a run in the store to its end.
//!
//! Invariants:
//! - `submit` prints the run's id alone on its line (nothing else on stdout), so scripts can
//!   take it: `RUN=$(documents submit --input '{"n": 1}')`.
//! - `--input` is a JSON object whose keys become the context's keys; anything else is a
//!   usage error, and nothing is queued.
//! - `worker` exits 0 after draining (SIGTERM or Ctrl-C); `wait` exits 0 only when the run
//!   completed ([`CliError::NotCompleted`] otherwise).

use std::io::Write;
use std::time::Duration;

use agent_core::{AgentStatus, Context};

use super::store::Store;
use super::CliError;
use crate::text::shown;
use crate::{Agent, SubmitOptions, Worker};

/// `worker --concurrency N --lease-ttl SECS`.
pub(super) async fn worker(
    agent: Agent,
    store: &Store,
    concurrency: usize,
    ttl: Duration,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    if concurrency == 0 {
        return Err(CliError::Usage("--concurrency must be at least 1".into()));
    }
    let hash = agent.graph_hash()?;
    writeln!(
        out,
        "worker {} serving {} (graph {hash:.12}), {concurrency} at once; SIGTERM or Ctrl-C drains",
        crate::WorkerId::current(),
        shown(agent.name()),
    )?;
    out.flush()?;
    let worker = Worker::new(store.get()).serve(move || agent).concurrency(concurrency).lease_ttl(ttl);
    let report = worker.run().await?;
    writeln!(
        out,
        "worker drained: {} runs taken, {} completed, {} failed, {} lost to another owner, {} handed over",
        report.claimed, report.completed, report.failed, report.lost, report.handed_over
    )?;
    Ok(())
}

/// `submit --flow-key KEY --debounce-ms N`.
pub(super) struct Flow {
    pub(super) key: Option<String>,
    pub(super) debounce: Option<Duration>,
}

/// `submit --input JSON --key KEY --flow-key KEY --debounce-ms N`.
pub(super) async fn submit(
    agent: Agent,
    store: &Store,
    input: Option<&str>,
    key: Option<String>,
    flow: Flow,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let mut options = SubmitOptions::new();
    if let Some(json) = input {
        options = options.context(context_of(json)?);
    }
    if let Some(key) = key {
        options = options.idempotency_key(key);
    }
    if let Some(key) = flow.key {
        options = options.flow_key(key);
    }
    if let Some(window) = flow.debounce {
        options = options.debounce(window);
    }
    let run_id = store.attach(agent).submit(options).await.map_err(|e| match e {
        // Options that do not go together: the command line was wrong.
        agent_core::AgentError::InvalidSubmission { reason, .. } => CliError::Usage(reason),
        e => e.into(),
    })?;
    writeln!(out, "{}", shown(&run_id))?;
    Ok(())
}

/// The context `--input` gives: each key of the JSON object, set to its value.
pub(super) fn context_of(json: &str) -> Result<Context, CliError> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| CliError::Usage(format!("--input is not JSON: {e}")))?;
    let serde_json::Value::Object(map) = value else {
        return Err(CliError::Usage("--input must be a JSON object, like {\"topic\": \"rust\"}".into()));
    };
    let ctx = Context::new();
    for (k, v) in map {
        ctx.set_state(&k, v);
    }
    Ok(ctx)
}

/// `wait RUN`.
pub(super) async fn wait(agent: Agent, store: &Store, run: &str, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    let record = store.resolve(agent.name(), run).await?;
    let agent = store.attach(agent);
    let done = agent.wait(&record.run_id).await?;
    let id = shown(&record.run_id);
    match done.agent_status {
        AgentStatus::Completed => {
            writeln!(out, "run {id} completed: {} states", done.completed_states.len())?;
            Ok(())
        }
        AgentStatus::Paused => {
            writeln!(out, "run {id} is paused")?;
            Err(CliError::Paused { run: record.run_id })
        }
        status => Err(CliError::NotCompleted { run: record.run_id, status }),
    }
}

#[cfg(test)]
mod tests {
    use super::context_of;
    use crate::cli::CliError;

    #[test]
    fn input_is_a_json_object_of_context_keys() {
        let ctx = context_of(r#"{"topic": "rust", "n": 3}"#).unwrap();
        assert_eq!(ctx.get_state::<String>("topic").as_deref(), Some("rust"));
        assert_eq!(ctx.get_state::<u32>("n"), Some(3));
        assert!(matches!(context_of("[1, 2]"), Err(CliError::Usage(m)) if m.contains("object")));
        assert!(matches!(context_of("{"), Err(CliError::Usage(m)) if m.contains("not JSON")));
    }
}
