use agent::prelude::*;

#[workflow(start = "lod")]
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
}

fn main() {
    let _ = flow::agent();
}
