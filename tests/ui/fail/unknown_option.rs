use agent::prelude::*;

#[workflow]
mod flow {
    use agent::prelude::*;

    #[state(priorty = High)]
    async fn load(_ctx: &Context) -> StateResult {
        StateResult::End
    }
}

#[workflow(concurrency = 4)]
mod other {
    use agent::prelude::*;

    #[state]
    async fn only(_ctx: &Context) -> StateResult {
        StateResult::End
    }
}

fn main() {
    let _ = flow::agent();
    let _ = other::agent();
}
