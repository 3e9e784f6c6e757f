use agent::prelude::*;

#[derive(Serialize)]
struct Article {
    text: String,
}

#[derive(Serialize)]
struct Tweet {
    text: String,
}

#[derive(Deserialize)]
struct Summary {
    words: usize,
}

#[workflow(input = Article, output = Summary)]
mod summarise {
    use agent::prelude::*;

    #[state]
    async fn count(ctx: &Context) -> StateResult {
        let text: String = ctx.get_state("text").unwrap_or_default();
        ctx.set_state("words", text.split_whitespace().count());
        StateResult::End
    }
}

#[workflow]
mod publish {
    use super::*;

    #[state]
    async fn delegate(ctx: &Context) -> Result<StateResult, BoxError> {
        // A `Tweet` is not the child's input, and a `String` is not its output.
        let summary: Summary = ctx.run_child(summarise::child(), Tweet { text: "hi".into() }).await?;
        let words: String = ctx.run_child(summarise::child(), Article { text: "hi".into() }).await?;
        ctx.set_state("words", (summary.words, words));
        Ok(StateResult::End)
    }
}

fn main() {
    let _ = publish::agent();
}
