//! Restored checkpoints are validated against the agent before anything runs: each rule of
//! `checkpoint/validate.rs` refuses what a run of the agent could not have written, with a
//! typed error naming the record, and leaves the agent as it was; what is merely unusual
//! is restored and runs.

use std::time::Duration;

use agent_core::{
    AgentError, Checkpoint, CheckpointError, Context, InputRequestRecord, RetryPolicy, StateResult, TokenRecord,
    CHECKPOINT_VERSION,
};
use agent_runtime::{Agent, AgentStatus};

mod common;
use common::{spawn_run, step, trail};

fn chain() -> Agent {
    let mut agent = Agent::new("chain");
    agent.add_state("a", step("a", 0, "b".into()));
    agent.add_state("b", step("b", 100, "c".into()));
    agent.add_state("c", step("c", 0, StateResult::End));
    agent
}

fn fan() -> Agent {
    let mut agent = Agent::new("fan");
    agent.add_state("start", step("start", 0, StateResult::parallel(["x", "y", "z"])));
    agent.add_state("x", step("x", 10, "join".into()));
    agent.add_state("y", step("y", 20, "join".into()));
    agent.add_state("z", step("z", 100, "join".into()));
    agent.add_state("join", step("join", 0, StateResult::End)).join();
    agent
}

/// The same fan-out with every target declared: the agent's graph is fully known.
fn declared_fan() -> Agent {
    let mut agent = Agent::new("fan");
    agent
        .add_state("start", step("start", 0, StateResult::parallel(["x", "yankee", "z"])))
        .targets(["x", "yankee", "z"]);
    agent.add_state("x", step("x", 10, "join".into())).targets(["join"]);
    agent.add_state("yankee", step("yankee", 20, "join".into())).targets(["join"]);
    agent.add_state("z", step("z", 100, "join".into())).targets(["join"]);
    agent.add_state("join", step("join", 0, StateResult::End)).join().targets(Vec::<&str>::new());
    agent.add_state("elsewhere", step("elsewhere", 0, StateResult::End)).targets(Vec::<&str>::new());
    agent
}

/// A checkpoint of `agent` after `ms` of virtual time, through JSON; the run is let finish.
async fn checkpoint_at(agent: &Agent, ms: u64) -> Checkpoint {
    let running = spawn_run(agent);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    let c = Checkpoint::from_json(&agent.create_checkpoint().to_json().unwrap()).unwrap();
    running.await.unwrap().unwrap();
    c
}

/// `make()`'s restore of `c` is refused as invalid, its message containing `says`; the
/// agent is left untouched: idle, and a sound checkpoint restores and runs afterwards.
fn refused_as_invalid(make: fn() -> Agent, c: Checkpoint, says: &str) {
    let agent = make();
    match agent.restore_from_checkpoint(c) {
        Err(CheckpointError::Invalid { what }) => assert!(what.contains(says), "{what:?} does not say {says:?}"),
        other => panic!("expected Invalid ({says}), got {other:?}"),
    }
    assert_eq!(agent.status(), AgentStatus::Idle);
    assert_eq!(agent.run_id(), None);
}

/// The same, refused as not fitting the agent.
fn refused_as_mismatch(make: fn() -> Agent, c: Checkpoint, says: &str) {
    let agent = make();
    match agent.restore_from_checkpoint(c) {
        Err(CheckpointError::Mismatch { reason, .. }) => {
            assert!(reason.contains(says), "{reason:?} does not say {says:?}")
        }
        other => panic!("expected Mismatch ({says}), got {other:?}"),
    }
    assert_eq!(agent.status(), AgentStatus::Idle);
    assert_eq!(agent.run_id(), None);
}

fn token<'a>(c: &'a mut Checkpoint, state: &str) -> &'a mut TokenRecord {
    c.tokens.iter_mut().find(|t| t.state == state).expect("a token there")
}

#[tokio::test(start_paused = true)]
async fn token_counts_that_no_run_writes_are_refused() {
    // Fan-out in progress: x and y wait at the join, z runs.
    let c = checkpoint_at(&fan(), 50).await;
    assert_eq!(c.groups[0].width, Some(3));
    for (count, says) in
        [(0, "count 0"), (3, "holds 5 tokens, more than the 3 branches"), (u32::MAX, "above the limit")]
    {
        let mut bad = c.clone();
        token(&mut bad, "z").count = count;
        refused_as_invalid(fan, bad, says);
    }
    // The chain: one token, at b, at the top level.
    let c = checkpoint_at(&chain(), 50).await;
    for (count, says) in [(0, "count 0"), (u32::MAX, "above the limit")] {
        let mut bad = c.clone();
        token(&mut bad, "b").count = count;
        refused_as_invalid(chain, bad, says);
    }
    // Three tokens at the top level of an agent without dependencies: only its root is there.
    let mut bad = c.clone();
    token(&mut bad, "b").count = 3;
    refused_as_mismatch(chain, bad, "3 tokens and groups at the top level");
    // The sound checkpoint still restores, and every state runs once in all.
    let agent = chain();
    agent.restore_from_checkpoint(c).unwrap();
    assert_eq!(trail(agent.run().await.unwrap().context()), ["a", "b", "c"]);
}

#[tokio::test(start_paused = true)]
async fn groups_join_counts_and_indices_are_checked() {
    let c = checkpoint_at(&fan(), 50).await;
    assert_eq!(c.groups[0].waiting, [("join".to_owned(), 2)]);

    let mut bad = c.clone();
    bad.groups[0].waiting[0].1 = 0;
    refused_as_invalid(fan, bad, "0 tokens waiting at \"join\"");

    let mut bad = c.clone();
    bad.groups[0].waiting[0].1 = 3;
    refused_as_invalid(fan, bad, "more than the 3 branches");

    let mut bad = c.clone();
    bad.groups[0].waiting.push(("join".into(), 1));
    refused_as_invalid(fan, bad, "twice");

    let mut bad = c.clone();
    bad.tokens[0].group = Some(1);
    refused_as_invalid(fan, bad, "names group 1, which does not exist");

    let mut bad = c.clone();
    bad.groups[0].parent = Some(0);
    refused_as_invalid(fan, bad, "does not come before it");

    let mut bad = c.clone();
    bad.groups[0].width = Some(1);
    refused_as_invalid(fan, bad, "width 1");

    // Only waiting tokens: nothing would ever release them.
    let mut bad = c.clone();
    bad.tokens.clear();
    refused_as_invalid(fan, bad, "no running token");

    // A second token, at the top level: two branches where the run has only its root.
    let mut bad = c.clone();
    bad.tokens.push(TokenRecord::new("z".into(), None, 1));
    refused_as_mismatch(fan, bad, "2 tokens and groups at the top level");

    // A smaller join count is merely unusual: waiting tokens merge into one, the join runs once.
    let mut fewer = c.clone();
    fewer.groups[0].waiting[0].1 = 1;
    let agent = fan();
    agent.restore_from_checkpoint(fewer).unwrap();
    let t = trail(agent.run().await.unwrap().context());
    assert_eq!(t.iter().filter(|s| *s == "join").count(), 1);
}

#[tokio::test(start_paused = true)]
async fn in_a_fully_known_graph_a_group_holds_only_what_its_origin_reaches() {
    let c = checkpoint_at(&declared_fan(), 50).await;
    let mut bad = c.clone();
    token(&mut bad, "z").state = "elsewhere".into();
    refused_as_mismatch(declared_fan, bad, "\"elsewhere\", which its origin \"start\" cannot reach");
    let mut bad = c.clone();
    bad.groups[0].waiting[0].0 = "elsewhere".into();
    refused_as_mismatch(declared_fan, bad, "cannot reach");
    let mut bad = c.clone();
    bad.groups[0].origin = "join".into();
    refused_as_mismatch(declared_fan, bad, "cannot reach");
    // Waiting at yankee, which start reaches, but nothing in the group does any more: the
    // fan-in would have released those tokens at once.
    let mut bad = c.clone();
    bad.groups[0].waiting[0].0 = "yankee".into();
    refused_as_mismatch(declared_fan, bad, "would have released them");
    // The sound one runs the join once.
    let agent = declared_fan();
    agent.restore_from_checkpoint(c).unwrap();
    let t = trail(agent.run().await.unwrap().context());
    assert_eq!(t.iter().filter(|s| *s == "join").count(), 1);
}

#[tokio::test(start_paused = true)]
async fn names_of_other_agents_and_unknown_states_are_mismatches() {
    let c = checkpoint_at(&chain(), 50).await;
    let mismatch = |c: Checkpoint, says: &str| match chain().restore_from_checkpoint(c) {
        Err(CheckpointError::Mismatch { agent, reason }) => {
            assert_eq!(agent, "chain");
            assert!(reason.contains(says), "{reason:?} does not say {says:?}");
        }
        other => panic!("expected Mismatch ({says}), got {other:?}"),
    };
    let mut bad = c.clone();
    bad.agent_name = "fan".into();
    mismatch(bad, "a checkpoint of agent \"fan\"");
    let mut bad = c.clone();
    token(&mut bad, "b").state = "nowhere".into();
    mismatch(bad, "\"nowhere\"");
    let mut bad = c.clone();
    bad.completed_states.push("gone".into());
    mismatch(bad, "\"gone\"");
    let mut bad = c.clone();
    bad.states[0].name = "renamed".into();
    mismatch(bad, "\"renamed\"");
    // Two records of one state.
    let mut bad = c.clone();
    bad.states[1].name = "a".into();
    refused_as_invalid(chain, bad, "state \"a\" has two records");
    let mut bad = c.clone();
    bad.completed_states.push("a".into());
    refused_as_invalid(chain, bad, "listed twice");
}

#[tokio::test(start_paused = true)]
async fn the_status_must_fit_the_tokens() {
    let c = checkpoint_at(&chain(), 50).await;
    for status in [AgentStatus::Completed, AgentStatus::Idle] {
        let mut bad = c.clone();
        bad.agent_status = status;
        refused_as_invalid(chain, bad, &format!("status {status:?}, yet tokens stand"));
    }
    // A failed, cancelled, timed-out or paused run's tokens run again when it is restored.
    for status in [AgentStatus::Failed, AgentStatus::Cancelled, AgentStatus::TimedOut, AgentStatus::Paused] {
        let mut other = c.clone();
        other.agent_status = status;
        let agent = chain();
        agent.restore_from_checkpoint(other).unwrap();
        assert_eq!(trail(agent.run().await.unwrap().context()), ["a", "b", "c"], "{status:?}");
    }
    // Running with nothing left: what a durable run records between the end of its last
    // branch and its final status. It completes, running nothing.
    let mut done = c.clone();
    done.tokens.clear();
    let agent = chain();
    agent.restore_from_checkpoint(done).unwrap();
    let result = agent.run().await.unwrap();
    assert_eq!(result.status(), AgentStatus::Completed);
    assert_eq!(trail(result.context()), ["a"]);
}

fn retrying() -> Agent {
    let mut agent = Agent::new("retrying");
    agent.add_state("a", step("a", 0, "flaky".into()));
    agent
        .add_state("flaky", |ctx: Context| async move {
            let n: u32 = ctx.get_state_or("tries", 0) + 1;
            ctx.set_state("tries", n);
            if n < 2 {
                Err(std::io::Error::other("not yet"))
            } else {
                Ok(StateResult::End)
            }
        })
        .retry_policy(RetryPolicy {
            max_retries: 2,
            initial_delay: Duration::from_secs(10),
            max_delay: Duration::from_secs(10),
            exponential_base: 1.0,
            jitter: false,
        });
    agent
}

#[tokio::test(start_paused = true)]
async fn attempts_are_checked_against_the_retry_budget() {
    // flaky failed once and waits 10 s to retry.
    let c = checkpoint_at(&retrying(), 1_000).await;
    assert_eq!(c.state("flaky").unwrap().attempts_made, 1);
    let mut bad = c.clone();
    bad.states.iter_mut().find(|s| s.name == "flaky").unwrap().attempts_made = 3;
    refused_as_mismatch(retrying, bad, "3 attempts, above its retry budget of 2");
    let mut bad = c.clone();
    bad.states.iter_mut().find(|s| s.name == "a").unwrap().attempts_made = 1;
    refused_as_mismatch(retrying, bad, "above its retry budget of 0");
    // Attempts made at a state where no token stands.
    let mut bad = c.clone();
    bad.tokens[0].state = "a".into();
    refused_as_invalid(retrying, bad, "no token stands there");
    let agent = retrying();
    agent.restore_from_checkpoint(c).unwrap();
    let result = agent.run().await.unwrap();
    assert_eq!(result.context().get_state::<u32>("tries"), Some(2));
}

#[tokio::test(start_paused = true)]
async fn steps_past_max_steps_are_bounded_by_the_running_tokens() {
    let make = || chain().max_steps(10);
    let c = checkpoint_at(&make(), 50).await;
    assert_eq!(c.steps, 2, "a and b started");
    let mut bad = c.clone();
    bad.steps = 12;
    refused_as_mismatch(|| chain().max_steps(10), bad.clone(), "12 steps, above max_steps 10");
    bad.steps = u64::MAX;
    refused_as_mismatch(|| chain().max_steps(10), bad.clone(), "above max_steps 10");
    // One step past the limit with one token: what a run passing its limit writes. Restored,
    // it fails again at once.
    bad.steps = 11;
    let agent = make();
    agent.restore_from_checkpoint(bad).unwrap();
    assert!(matches!(agent.run().await, Err(AgentError::MaxSteps { limit: 10, .. })));
}

#[tokio::test(start_paused = true)]
async fn requests_versions_and_times_are_checked() {
    let c = checkpoint_at(&chain(), 50).await;
    let request = |id: &str| {
        let mut r = InputRequestRecord::new(id.into(), "name?".into(), 1_000);
        r.state = Some("b".into());
        r
    };
    for (id, says) in [("question", "not input-N"), ("input-0", "not input-N"), ("input-99999999999", "not input-N")] {
        let mut bad = c.clone();
        bad.pending_inputs.push(request(id));
        refused_as_invalid(chain, bad, says);
    }
    let mut bad = c.clone();
    bad.pending_inputs = vec![request("input-1"), request("input-1")];
    refused_as_invalid(chain, bad, "recorded twice");
    let mut bad = c.clone();
    let mut r = request("input-1");
    r.requested_ms = i64::MIN;
    bad.pending_inputs.push(r);
    refused_as_invalid(chain, bad, "outside");
    let mut bad = c.clone();
    let mut r = request("input-1");
    r.defaulted = true;
    bad.pending_inputs.push(r);
    refused_as_invalid(chain, bad, "no answer");

    let mut bad = c.clone();
    bad.deadline_ms = Some(-1);
    refused_as_invalid(chain, bad, "deadline_ms is -1");
    let mut bad = c.clone();
    bad.schema_version = 0;
    refused_as_invalid(chain, bad, "schema_version 0");
    let mut bad = c.clone();
    bad.schema_version = CHECKPOINT_VERSION + 1;
    assert!(matches!(chain().restore_from_checkpoint(bad), Err(CheckpointError::TooNew { .. })));

    // A sane deadline round-trips and is accepted.
    let mut ok = c.clone();
    ok.deadline_ms = Some(1_800_000_000_000);
    let back = Checkpoint::from_json(&ok.to_json().unwrap()).unwrap();
    assert_eq!(back.deadline_ms, Some(1_800_000_000_000));
    chain().restore_from_checkpoint(back).unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_version_2_checkpoint_without_widths_restores_and_joins_once() {
    let c = checkpoint_at(&fan(), 50).await;
    let mut json: serde_json::Value = serde_json::from_str(&c.to_json().unwrap()).unwrap();
    json["schema_version"] = 2.into();
    json.as_object_mut().unwrap().remove("deadline_ms");
    for g in json["groups"].as_array_mut().unwrap() {
        g.as_object_mut().unwrap().remove("width");
    }
    let old = Checkpoint::from_json(&json.to_string()).unwrap();
    assert_eq!(old.groups[0].width, None);
    let agent = fan();
    agent.restore_from_checkpoint(old).unwrap();
    let mut t = trail(agent.run().await.unwrap().context());
    assert_eq!(t.pop().as_deref(), Some("join"));
    t.sort();
    assert_eq!(t, ["start", "x", "y", "z"]);
}

#[tokio::test(start_paused = true)]
async fn a_refused_checkpoint_does_not_replace_one_restored_before() {
    let c = checkpoint_at(&chain(), 50).await;
    let agent = chain();
    agent.restore_from_checkpoint(c.clone()).unwrap();
    let mut bad = c.clone();
    bad.tokens.push(TokenRecord::new("c".into(), None, 1));
    assert!(agent.restore_from_checkpoint(bad).is_err());
    // The run goes on from the sound checkpoint.
    let result = agent.run().await.unwrap();
    assert_eq!(result.run_id(), c.run_id);
    assert_eq!(trail(result.context()), ["a", "b", "c"]);
}
