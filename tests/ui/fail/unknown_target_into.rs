use agent::prelude::*;

#[workflow]
mod flow {
    use agent::prelude::*;

    #[state]
    async fn process_data(ctx: &Context) -> StateResult {
        ctx.set_state("greeting", "Hello, World!");
        "fromat_output".into()
    }

    #[state]
    async fn format_output(_ctx: &Context) -> StateResult {
        StateResult::End
    }
}

fn main() {
    let _ = flow::agent();
}
