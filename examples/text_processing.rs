//! A text processing pipeline: clean, analyse, format; with typed context keys, so
//! a misspelt key or a wrong type is a compile error.
//!
//! Run: `cargo run --example text_processing`

use agent::prelude::*;
use serde_json::json;

#[workflow(context(cleaned_text: String, stats: serde_json::Value))]
mod text_processor {
    use agent::prelude::*;
    use serde_json::json;

    #[state]
    async fn clean_text(ctx: &Context) -> StateResult {
        let text = "Hello   World!  ";
        let cleaned = text.split_whitespace().collect::<Vec<_>>().join(" ");
        ctx.set_cleaned_text(cleaned);
        "analyze_text".into()
    }

    #[state]
    async fn analyze_text(ctx: &Context) -> StateResult {
        let text = ctx.cleaned_text().unwrap_or_default();
        ctx.set_stats(json!({
            "length": text.len(),
            "words": text.split_whitespace().count(),
            "has_punctuation": text.contains('!'),
        }));
        "format_results".into()
    }

    #[state]
    async fn format_results(ctx: &Context) -> StateResult {
        let result = json!({
            "text": ctx.cleaned_text(),
            "analysis": ctx.stats(),
            "timestamp": std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        });
        ctx.set_state("final_result", result);
        StateResult::End
    }
}

async fn run() -> Result<serde_json::Value, AgentError> {
    let result = text_processor::agent().run().await?;
    Ok(result.context().get_state("final_result").unwrap_or(json!(null)))
}

#[tokio::main]
async fn main() -> Result<(), AgentError> {
    let report = run().await?;
    println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    Ok(())
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn cleans_and_counts() {
        let report = super::run().await.unwrap();
        assert_eq!(report["text"], "Hello World!");
        assert_eq!(report["analysis"]["words"], 2);
        assert_eq!(report["analysis"]["length"], 12);
        assert_eq!(report["analysis"]["has_punctuation"], true);
    }
}
