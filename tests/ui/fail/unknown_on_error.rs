use agent::prelude::*;

#[workflow]
mod flow {
    use agent::prelude::*;

    #[state(retry(max = 2), on_error = "handle_eror")]
    async fn fetch(_ctx: &Context) -> Result<StateResult, std::io::Error> {
        Ok(StateResult::End)
    }

    #[state]
    async fn handle_error(_ctx: &Context) -> StateResult {
        StateResult::End
    }
}

fn main() {
    let _ = flow::agent();
}
