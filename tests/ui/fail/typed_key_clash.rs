use agent::prelude::*;

#[workflow(context(state: String, len: u32))]
mod flow {
    use agent::prelude::*;

    #[state]
    async fn greet(_ctx: &Context) -> StateResult {
        StateResult::End
    }
}

fn main() {
    let _ = flow::agent();
}
