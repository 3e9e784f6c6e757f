use agent::prelude::*;

#[workflow]
mod flow {
    use agent::prelude::*;

    #[state(retry(max = 3, initial_delay = "1s"), timeout = "5m")]
    async fn fetch(_ctx: &Context) -> StateResult {
        StateResult::End
    }
}

fn main() {
    let _ = flow::agent();
}
