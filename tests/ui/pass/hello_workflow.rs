// The API.md snippet "A workflow written with the macros", verbatim.
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

#[tokio::main]
async fn main() -> Result<(), AgentError> {
    let agent = hello_workflow::agent(); // an Agent named "hello_workflow"
    let result = agent.run().await?;
    assert_eq!(result.status(), AgentStatus::Completed);
    let greeting: Option<String> = result.context().get_state("greeting");
    assert_eq!(greeting.as_deref(), Some("Hello, World!"));
    Ok(())
}
