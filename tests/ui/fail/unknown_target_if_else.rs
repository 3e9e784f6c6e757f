use agent::prelude::*;

#[workflow]
mod flow {
    use agent::prelude::*;

    #[state]
    async fn decide(ctx: &Context) -> StateResult {
        if ctx.has_state("approved") {
            "publish".into()
        } else {
            "rejct".into()
        }
    }

    #[state]
    async fn publish(_ctx: &Context) -> StateResult {
        StateResult::End
    }

    #[state]
    async fn reject(_ctx: &Context) -> StateResult {
        StateResult::End
    }
}

fn main() {
    let _ = flow::agent();
}
