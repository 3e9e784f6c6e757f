//! The quick start: two states, a sequential transition, a shared context.
//!
//! Run: `cargo run --example quick_start`

use agent::prelude::*;

#[workflow]
mod hello_workflow {
    use agent::prelude::*;

    #[state]
    async fn process_data(ctx: &Context) -> StateResult {
        ctx.set_state("greeting", "Hello, World!");
        "format_output".into()
    }

    #[state]
    async fn format_output(ctx: &Context) -> StateResult {
        let greeting: String = ctx.get_state("greeting").unwrap();
        println!("Result: {greeting}");
        StateResult::End
    }
}

async fn run() -> Result<AgentResult, AgentError> {
    let agent = hello_workflow::agent(); // an Agent named "hello_workflow"
    let result = agent.run().await?;
    assert_eq!(result.status(), AgentStatus::Completed);
    Ok(result)
}

#[tokio::main]
async fn main() -> Result<(), AgentError> {
    let result = run().await?;
    let greeting: Option<String> = result.context().get_state("greeting");
    println!("final context holds {greeting:?}");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn greets_through_two_states() {
        let result = super::run().await.unwrap();
        assert_eq!(result.completed_states(), ["process_data", "format_output"]);
        assert_eq!(result.context().get_state::<String>("greeting").as_deref(), Some("Hello, World!"));
        assert_eq!(super::hello_workflow::GRAPH.name, "hello_workflow");
    }
}
