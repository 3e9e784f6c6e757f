use agent::prelude::*;

#[workflow(start = "lod", max_concurrent = 0)]
mod flow {
    use agent::prelude::*;

    #[state(timeout = -1, depends_on(sav = Required))]
    async fn load(_ctx: &Context) -> StateResult {
        "svae".into()
    }

    #[state(priority = Urgent)]
    fn save(_ctx: &Context) -> StateResult {
        StateResult::End
    }
}

fn main() {
    let _ = flow::agent();
}
