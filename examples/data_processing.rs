//! A data processing pipeline: load a typed batch, validate and transform it in
//! parallel, route bad data to an error state, and join.
//!
//! Run: `cargo run --example data_processing`

use agent::prelude::*;
use serde_json::{json, Value};

/// One batch of records, kept in the context as itself.
#[derive(Clone, Debug, Serialize, Deserialize, TypedContextData)]
pub struct DataBatch {
    pub data: Vec<Value>,
    pub batch_id: String,
    pub timestamp: u64,
}

#[workflow]
mod data_processor {
    use super::DataBatch;
    use agent::prelude::*;
    use serde_json::Value;

    #[state(resources(cpu = 1.0, memory_mb = 512))]
    async fn load_data(ctx: &Context) -> StateResult {
        // The batch to load is an input of the run (see `run`).
        let raw: Vec<Value> = ctx.get_state_or("input", vec![]);
        ctx.set_typed("batch", DataBatch { data: raw, batch_id: "batch_001".into(), timestamp: 1_700_000_000 });
        ["validate_data", "transform_data"].into()
    }

    #[state]
    async fn validate_data(ctx: &Context) -> StateResult {
        let batch = ctx.get_typed::<DataBatch>("batch").unwrap();
        let valid = batch.data.iter().all(|record| record.get("id").is_some_and(Value::is_i64));
        if !valid {
            return "handle_error".into();
        }
        ctx.set_state("validation_passed", true);
        "await_processing".into()
    }

    #[state]
    async fn transform_data(ctx: &Context) -> StateResult {
        let batch = ctx.get_typed::<DataBatch>("batch").unwrap();
        let upper: Vec<String> =
            batch.data.iter().filter_map(|r| r.get("value").and_then(Value::as_str).map(str::to_uppercase)).collect();
        ctx.set_state("transformed", upper);
        "await_processing".into()
    }

    #[state]
    async fn handle_error(ctx: &Context) -> StateResult {
        ctx.set_state("validation_passed", false);
        "await_processing".into()
    }

    #[state]
    async fn await_processing(ctx: &Context) -> StateResult {
        let passed: bool = ctx.get_state_or("validation_passed", false);
        let transformed: Vec<String> = ctx.get_state_or("transformed", vec![]);
        ctx.set_state("report", format!("valid={passed} transformed={}", transformed.len()));
        StateResult::End
    }
}

async fn run(input: Value) -> Result<AgentResult, AgentError> {
    let ctx = Context::new();
    ctx.set_state("input", input);
    data_processor::agent().run_in(ctx).await
}

#[tokio::main]
async fn main() -> Result<(), AgentError> {
    let good = run(json!([{"id": 1, "value": "test"}, {"id": 2, "value": "more"}])).await?;
    println!("good batch: {}", good.context().get_state::<String>("report").unwrap_or_default());
    let bad = run(json!([{"id": "one", "value": "test"}])).await?;
    println!("bad batch:  {}", bad.context().get_state::<String>("report").unwrap_or_default());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_good_batch_is_validated_and_transformed() {
        let r = run(json!([{"id": 1, "value": "test"}, {"id": 2, "value": "more"}])).await.unwrap();
        assert_eq!(r.context().get_state::<String>("report").as_deref(), Some("valid=true transformed=2"));
        assert_eq!(r.context().get_state::<Vec<String>>("transformed").unwrap(), ["TEST", "MORE"]);
    }

    #[tokio::test]
    async fn a_bad_batch_goes_through_the_error_state_and_still_joins_once() {
        let r = run(json!([{"id": "one", "value": "test"}])).await.unwrap();
        assert_eq!(r.context().get_state::<String>("report").as_deref(), Some("valid=false transformed=1"));
        assert!(r.completed_states().contains(&"handle_error".to_owned()));
        assert_eq!(r.metrics().states.iter().find(|s| s.name == "await_processing").unwrap().completed, 1);
    }

    #[test]
    fn load_data_declares_its_resources() {
        let spec = data_processor::GRAPH.state("load_data").unwrap();
        let r = spec.resources.unwrap();
        assert_eq!((r.cpu, r.memory_mb), (1.0, 512.0));
    }
}
