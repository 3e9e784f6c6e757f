// A typed child workflow (`input = …, output = …`): its `child()` runs from another
// workflow's state with the input and output the compiler checked, under strict lints.
#![deny(warnings)]
#![warn(missing_docs)]
//! A crate running one `#[workflow]` as the typed child of another.

use agent::prelude::*;

/// What the parent gives the child.
#[derive(Serialize)]
pub struct Article {
    /// The text to summarise.
    pub text: String,
}

/// What the child gives back: its context's keys.
#[derive(Debug, Deserialize, PartialEq)]
pub struct Summary {
    /// How many words.
    pub words: usize,
    /// The first of them.
    pub first: String,
}

/// Counts the words of `text`.
#[workflow(input = Article, output = Summary)]
pub mod summarise {
    use agent::prelude::*;

    /// Count, and keep the first word.
    #[state]
    pub async fn count(ctx: &Context) -> StateResult {
        let text: String = ctx.get_state("text").unwrap_or_default();
        ctx.set_state("words", text.split_whitespace().count());
        ctx.set_state("first", text.split_whitespace().next().unwrap_or_default());
        StateResult::End
    }
}

/// Runs `summarise` as a child.
#[workflow]
pub mod publish {
    use super::{summarise, Article, Summary};
    use agent::prelude::*;

    /// Summarise the text through the child workflow.
    #[state]
    pub async fn delegate(ctx: &Context) -> Result<StateResult, BoxError> {
        let text: String = ctx.get_state("text").unwrap_or_default();
        let summary: Summary = ctx.run_child(summarise::child(), Article { text }).await?;
        ctx.set_state("words", summary.words);
        ctx.set_state("first", summary.first);
        Ok(StateResult::End)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let input = Context::new();
    input.set_state("text", "typed children compile");
    let result = publish::agent().run_with(RunOptions::new().context(input)).await.unwrap();
    assert_eq!(result.context().get_state::<usize>("words"), Some(3));
    assert_eq!(result.context().get_state::<String>("first").as_deref(), Some("typed"));
    assert_eq!(summarise::child().agent().name(), "summarise");
}
