use agent::prelude::*;

#[workflow]
mod flow {
    use agent::prelude::*;

    #[state(rate_limit(per_second = 0, burst = 5))]
    async fn call_llm(_ctx: &Context) -> StateResult {
        StateResult::End
    }
}

fn main() {
    let _ = flow::agent();
}
