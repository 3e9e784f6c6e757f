use agent::prelude::*;

#[derive(Serialize)]
struct Article {
    text: String,
}

#[workflow(input = Article)]
mod summarise {
    use agent::prelude::*;

    #[state]
    async fn count(_ctx: &Context) -> StateResult {
        StateResult::End
    }
}

#[workflow(input = 3, output = Vec<String>)]
mod scores {
    use agent::prelude::*;

    #[state]
    async fn count(_ctx: &Context) -> StateResult {
        StateResult::End
    }
}

fn main() {
    let _ = (summarise::agent(), scores::agent());
}
