//! An LLM pipeline: generate, then check quality and extract entities in parallel;
//! a low-confidence answer detours through `regenerate_text` and back, and the join
//! `await_processing` runs once, after both branches, with everything they wrote.
//!
//! The model is simulated (no network): the first answer is unsure, the second is good.
//!
//! Run: `cargo run --example llm_pipeline`

use agent::prelude::*;

/// A model's answer, kept in the context as itself.
#[derive(Clone, Debug, Serialize, Deserialize, TypedContextData)]
pub struct LlmResponse {
    pub text: String,
    pub confidence: f64,
    pub tokens_used: u32,
    pub model: String,
}

/// The simulated model: confidence grows with each attempt.
async fn call_model(prompt: &str, attempt: u32) -> LlmResponse {
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let _ = prompt; // a real model would read it
    LlmResponse {
        text: "Ada Lovelace wrote the first program for Babbage's Analytical Engine.".into(),
        confidence: 0.8 + 0.1 * attempt as f64,
        tokens_used: 150 + 10 * attempt,
        model: "sim-gpt".into(),
    }
}

#[workflow]
mod llm_processor {
    use super::{call_model, LlmResponse};
    use agent::prelude::*;

    #[state]
    async fn generate_text(ctx: &Context) -> StateResult {
        ctx.set_state("attempts", 1u32);
        ctx.set_typed("llm_response", call_model("Who wrote the first program?", 0).await);
        ["check_quality", "extract_entities"].into()
    }

    #[state]
    async fn check_quality(ctx: &Context) -> StateResult {
        let response = ctx.get_typed::<LlmResponse>("llm_response").unwrap();
        if response.confidence < 0.9 {
            return "regenerate_text".into();
        }
        ctx.set_state("quality_ok", true);
        "await_processing".into()
    }

    #[state]
    async fn regenerate_text(ctx: &Context) -> StateResult {
        let attempt: u32 = ctx.get_state_or("attempts", 1);
        ctx.set_state("attempts", attempt + 1);
        ctx.set_typed("llm_response", call_model("Who wrote the first program?", attempt).await);
        "check_quality".into()
    }

    #[state]
    async fn extract_entities(ctx: &Context) -> StateResult {
        let response = ctx.get_typed::<LlmResponse>("llm_response").unwrap();
        let entities: Vec<String> = response
            .text
            .split(|c: char| !c.is_alphanumeric() && c != '\'')
            .filter(|w| w.chars().next().is_some_and(char::is_uppercase))
            .map(|w| w.trim_end_matches("'s").to_owned())
            .collect();
        ctx.set_state("entities", entities);
        "await_processing".into()
    }

    #[state]
    async fn await_processing(ctx: &Context) -> StateResult {
        let entities: Vec<String> = ctx.get_state_or("entities", vec![]);
        let ok: bool = ctx.get_state_or("quality_ok", false);
        ctx.update_state_or_default("joins", |n: &mut u32| *n += 1).ok();
        println!("quality ok: {ok}, entities: {entities:?}");
        StateResult::End
    }
}

async fn run() -> Result<AgentResult, AgentError> {
    llm_processor::agent().run().await
}

#[tokio::main]
async fn main() -> Result<(), AgentError> {
    let result = run().await?;
    let response = result.context().get_typed::<LlmResponse>("llm_response").unwrap();
    println!("final answer ({:.2}): {}", response.confidence, response.text);
    for state in &result.metrics().states {
        println!("{:>18} ran {} time(s)", state.name, state.completed);
    }
    println!("{}", llm_processor::GRAPH.to_mermaid());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_join_runs_once_after_the_detour() {
        let result = run().await.unwrap();
        let ctx = result.context();
        assert_eq!(ctx.get_state::<u32>("joins"), Some(1));
        assert_eq!(ctx.get_state::<bool>("quality_ok"), Some(true));
        assert_eq!(ctx.get_state::<u32>("attempts"), Some(2));
        let entities: Vec<String> = ctx.get_state("entities").unwrap();
        assert!(entities.contains(&"Ada".to_owned()) && entities.contains(&"Babbage".to_owned()), "{entities:?}");
        assert_eq!(result.completed_states().last().map(String::as_str), Some("await_processing"));
        assert!(llm_processor::GRAPH.fully_known());
    }
}
