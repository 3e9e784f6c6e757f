use agent::prelude::*;

#[workflow]
mod flow {
    use agent::prelude::*;

    #[state]
    fn load(_ctx: &Context) -> StateResult {
        StateResult::End
    }
}

fn main() {
    let _ = flow::agent();
}
