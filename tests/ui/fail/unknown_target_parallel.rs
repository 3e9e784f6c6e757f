use agent::prelude::*;

#[workflow]
mod flow {
    use agent::prelude::*;

    #[state]
    async fn split(_ctx: &Context) -> StateResult {
        StateResult::parallel(["left", "rigth"])
    }

    #[state]
    async fn left(_ctx: &Context) -> StateResult {
        StateResult::End
    }

    #[state]
    async fn right(_ctx: &Context) -> StateResult {
        StateResult::End
    }
}

fn main() {
    let _ = flow::agent();
}
