use agent::prelude::*;

#[workflow]
mod flow {
    use agent::prelude::*;

    #[state]
    async fn load(_ctx: &Context, attempt: u32) -> StateResult {
        let _ = attempt;
        StateResult::End
    }
}

fn main() {
    let _ = flow::agent();
}
