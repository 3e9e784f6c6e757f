use agent::prelude::*;

#[workflow]
mod flow {
    use agent::prelude::*;

    // `max_delay` is left out, so it is `RetryPolicy::new()`'s: shorter than this.
    #[state(retry(initial_delay = 3600))]
    async fn fetch(_ctx: &Context) -> StateResult {
        StateResult::End
    }
}

fn main() {
    let _ = flow::agent();
}
