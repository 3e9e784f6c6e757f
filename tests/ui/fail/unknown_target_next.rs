use agent::prelude::*;

#[workflow]
mod flow {
    use agent::prelude::*;

    #[state]
    async fn process_data(_ctx: &Context) -> StateResult {
        StateResult::next("format_outptu")
    }

    #[state]
    async fn format_output(_ctx: &Context) -> StateResult {
        StateResult::End
    }
}

fn main() {
    let _ = flow::agent();
}
