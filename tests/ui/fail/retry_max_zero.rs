use agent::prelude::*;

#[workflow]
mod flow {
    use agent::prelude::*;

    #[state(retry(max = 0))]
    async fn fetch(_ctx: &Context) -> StateResult {
        StateResult::End
    }
}

fn main() {
    let _ = flow::agent();
}
