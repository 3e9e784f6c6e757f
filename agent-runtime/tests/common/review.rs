//! The console tests' workflow: a run that waits for a person, with markup in its context
//! and a hostile state name, and the wait for its request to reach the store.

use std::time::{Duration, Instant};

use agent_core::{BoxError, Context, HumanInput, StateResult};
use agent_runtime::store::CheckpointStore;
use agent_runtime::Agent;

/// `prepare` (writes markup into `draft`) → `review` (asks a person, who may answer
/// `approve` or `reject`, with `default` if given) → `<script>alert(1)</script>` (a hostile name) → `finish`.
pub fn asker(name: &str, default: Option<&str>) -> Agent {
    let mut agent = Agent::new(name.to_owned()).input_from_terminal(false);
    agent
        .add_state("prepare", |ctx: Context| async move {
            ctx.set_state("draft", "<b>bold</b> & \"quoted\"");
            StateResult::next("review")
        })
        .targets(["review"]);
    let default = default.map(str::to_owned);
    agent
        .add_state("review", move |ctx: Context| {
            let mut ask =
                HumanInput::new("Approve <b>the</b> draft?").validator(|a: &str| a == "approve" || a == "reject");
            if let Some(d) = &default {
                ask = ask.default(d.clone());
            }
            async move {
                let verdict = ctx.human_in_the_loop(ask).await?;
                ctx.set_state("verdict", verdict);
                Ok::<_, BoxError>(StateResult::next("<script>alert(1)</script>"))
            }
        })
        .targets(["<script>alert(1)</script>"]);
    agent
        .add_state("<script>alert(1)</script>", |_ctx: Context| async { StateResult::next("finish") })
        .targets(["finish"]);
    agent.add_state("finish", |ctx: Context| async move {
        ctx.set_state("done", true);
        StateResult::End
    });
    agent
}

/// Wait (bounded) until run `id` has a pending request for input in the store.
pub async fn until_asked(store: &dyn CheckpointStore, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.inputs(Some(id), true).await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "run {id} never asked");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
