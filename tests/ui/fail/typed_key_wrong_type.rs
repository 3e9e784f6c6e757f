use agent::prelude::*;

#[workflow(context(greeting: String, attempts: u32))]
mod flow {
    use agent::prelude::*;

    #[state]
    async fn greet(ctx: &Context) -> StateResult {
        ctx.set_attempts("three");
        let greeting: Option<u32> = ctx.greeting();
        let _ = greeting;
        StateResult::End
    }
}

fn main() {
    let _ = flow::agent();
}
