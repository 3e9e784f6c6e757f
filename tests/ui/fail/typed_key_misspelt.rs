use agent::prelude::*;

#[workflow(context(greeting: String))]
mod flow {
    use agent::prelude::*;

    #[state]
    async fn greet(ctx: &Context) -> StateResult {
        ctx.set_greting("Hello".to_owned());
        StateResult::End
    }
}

fn main() {
    let _ = flow::agent();
}
