use agent::prelude::*;

#[workflow]
mod flow {
    use agent::prelude::*;

    #[state(rate_limit(per_second = 10, brust = 20))]
    async fn call_llm(_ctx: &Context) -> StateResult {
        StateResult::End
    }
}

fn main() {
    let _ = flow::agent();
}
