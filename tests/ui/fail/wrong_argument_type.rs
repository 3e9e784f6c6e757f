use agent::prelude::*;

#[workflow]
mod flow {
    use agent::prelude::*;

    #[state]
    async fn load(name: &str) -> StateResult {
        let _ = name;
        StateResult::End
    }
}

fn main() {
    let _ = flow::agent();
}
