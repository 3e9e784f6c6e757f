use agent::prelude::*;

#[workflow]
mod flow {
    use agent::prelude::*;

    #[state(timeout = 30, priority = High, timeout = 60)]
    async fn load(_ctx: &Context) -> StateResult {
        StateResult::End
    }
}

fn main() {
    let _ = flow::agent();
}
