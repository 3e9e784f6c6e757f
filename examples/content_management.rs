//! A content management system: a four-way fan-out over one article, and a join
//! that publishes once every branch is done.
//!
//! Run: `cargo run --example content_management`

use agent::prelude::*;

/// The article being processed.
#[derive(Clone, Debug, Serialize, Deserialize, TypedContextData)]
pub struct Article {
    pub title: String,
    pub body: String,
}

#[workflow]
mod cms {
    use super::Article;
    use agent::prelude::*;
    use std::time::Duration;

    #[state]
    async fn process_article(ctx: &Context) -> StateResult {
        ctx.set_typed(
            "article",
            Article {
                title: "Rust workflows".into(),
                body: "Typed state machines make pipelines that teh compiler checks.".into(),
            },
        );
        ["spell_check", "generate_summary", "extract_keywords", "create_images"].into()
    }

    #[state]
    async fn spell_check(ctx: &Context) -> StateResult {
        tokio::time::sleep(Duration::from_millis(40)).await;
        let article = ctx.get_typed::<Article>("article").unwrap();
        let typos: Vec<String> = article.body.split_whitespace().filter(|w| *w == "teh").map(str::to_owned).collect();
        ctx.set_state("typos", typos);
        "await_completion".into()
    }

    #[state]
    async fn generate_summary(ctx: &Context) -> StateResult {
        tokio::time::sleep(Duration::from_millis(30)).await; // a simulated model call
        let article = ctx.get_typed::<Article>("article").unwrap();
        let summary: String = article.body.split_whitespace().take(4).collect::<Vec<_>>().join(" ");
        ctx.set_state("summary", format!("{summary}..."));
        "await_completion".into()
    }

    #[state]
    async fn extract_keywords(ctx: &Context) -> StateResult {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let article = ctx.get_typed::<Article>("article").unwrap();
        let keywords: Vec<String> = article
            .body
            .split_whitespace()
            .filter(|w| w.len() > 8)
            .map(|w| w.trim_matches('.').to_lowercase())
            .collect();
        ctx.set_state("keywords", keywords);
        "await_completion".into()
    }

    #[state]
    async fn create_images(ctx: &Context) -> StateResult {
        tokio::time::sleep(Duration::from_millis(50)).await; // a simulated image model
        ctx.set_state("images", vec!["cover.png"]);
        "await_completion".into()
    }

    #[state]
    async fn await_completion(ctx: &Context) -> StateResult {
        let ready = ["typos", "summary", "keywords", "images"].iter().all(|k| ctx.has_state(k));
        ctx.set_state("all_branches_done", ready);
        "publish".into()
    }

    #[state]
    async fn publish(ctx: &Context) -> StateResult {
        ctx.update_state_or_default("published", |n: &mut u32| *n += 1).ok();
        StateResult::End
    }
}

async fn run() -> Result<AgentResult, AgentError> {
    cms::agent().run().await
}

#[tokio::main]
async fn main() -> Result<(), AgentError> {
    let result = run().await?;
    let ctx = result.context();
    println!("summary:  {}", ctx.get_state::<String>("summary").unwrap_or_default());
    println!("keywords: {:?}", ctx.get_state::<Vec<String>>("keywords").unwrap_or_default());
    println!("typos:    {:?}", ctx.get_state::<Vec<String>>("typos").unwrap_or_default());
    println!("order:    {:?}", result.completed_states());
    Ok(())
}

#[cfg(test)]
mod tests {
    #[tokio::test(start_paused = true)]
    async fn publishes_once_after_all_four_branches_in_parallel() {
        let start = tokio::time::Instant::now();
        let result = super::run().await.unwrap();
        let ctx = result.context();
        assert_eq!(ctx.get_state::<bool>("all_branches_done"), Some(true));
        assert_eq!(ctx.get_state::<u32>("published"), Some(1));
        assert_eq!(ctx.get_state::<Vec<String>>("typos").unwrap(), ["teh"]);
        // The branches overlap: the run takes as long as the slowest (50 ms), not the sum.
        assert_eq!(start.elapsed(), std::time::Duration::from_millis(50));
    }
}
