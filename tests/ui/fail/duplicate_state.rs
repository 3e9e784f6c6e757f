use agent::prelude::*;

#[workflow]
mod flow {
    use agent::prelude::*;

    #[state]
    async fn load(_ctx: &Context) -> StateResult {
        "save".into()
    }

    #[state]
    async fn save(_ctx: &Context) -> StateResult {
        StateResult::End
    }

    #[state]
    async fn save(_ctx: &Context) -> StateResult {
        StateResult::End
    }
}

fn main() {
    let _ = flow::agent();
}
