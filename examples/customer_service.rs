//! Customer service automation: route each ticket by priority and tags to an
//! immediate response with human review, a technical review, or a standard response.
//!
//! The responder is simulated; the human review approves anything under 200 characters.
//!
//! Run: `cargo run --example customer_service`

use agent::prelude::*;

/// A support ticket, the input of one run.
#[derive(Clone, Debug, Serialize, Deserialize, TypedContextData)]
pub struct ServiceTicket {
    pub id: u32,
    pub priority: String,
    pub tags: Vec<String>,
    pub text: String,
}

async fn generate_priority_response(ticket: &ServiceTicket) -> String {
    format!("We are on it: ticket #{} has been escalated.", ticket.id)
}

#[workflow]
mod support {
    use super::{generate_priority_response, ServiceTicket};
    use agent::prelude::*;

    #[state]
    async fn handle_ticket(ctx: &Context) -> StateResult {
        let ticket = ctx.get_typed::<ServiceTicket>("ticket").unwrap();
        if ticket.priority == "high" {
            "immediate_response".into()
        } else if ticket.tags.iter().any(|t| t == "bug") {
            "technical_review".into()
        } else {
            "standard_response".into()
        }
    }

    #[state]
    async fn immediate_response(ctx: &Context) -> StateResult {
        let ticket = ctx.get_typed::<ServiceTicket>("ticket").unwrap();
        ctx.set_state("response", generate_priority_response(&ticket).await);
        "human_review".into()
    }

    #[state]
    async fn human_review(ctx: &Context) -> StateResult {
        let response: String = ctx.get_state_or("response", String::new());
        ctx.set_state("approved", response.len() < 200);
        StateResult::End
    }

    #[state]
    async fn technical_review(ctx: &Context) -> StateResult {
        let ticket = ctx.get_typed::<ServiceTicket>("ticket").unwrap();
        ctx.set_state("response", format!("Engineering is looking at: {}", ticket.text));
        StateResult::End
    }

    #[state]
    async fn standard_response(ctx: &Context) -> StateResult {
        ctx.set_state("response", "Thanks for writing; we will answer within a day.");
        StateResult::End
    }
}

/// Run the workflow for one ticket; the path taken and the response.
async fn handle(ticket: ServiceTicket) -> Result<(Vec<String>, String), AgentError> {
    let ctx = Context::new();
    ctx.set_typed("ticket", ticket);
    let result = support::agent().run_in(ctx).await?;
    Ok((result.completed_states().to_vec(), result.context().get_state_or("response", String::new())))
}

fn tickets() -> Vec<ServiceTicket> {
    vec![
        ServiceTicket { id: 1, priority: "high".into(), tags: vec![], text: "Site down".into() },
        ServiceTicket { id: 2, priority: "normal".into(), tags: vec!["bug".into()], text: "Export crashes".into() },
        ServiceTicket { id: 3, priority: "low".into(), tags: vec!["billing".into()], text: "Invoice copy".into() },
    ]
}

#[tokio::main]
async fn main() -> Result<(), AgentError> {
    for ticket in tickets() {
        let id = ticket.id;
        let (path, response) = handle(ticket).await?;
        println!("ticket #{id}: {} -> {response}", path.join(" -> "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_ticket_takes_its_route() {
        let mut paths = Vec::new();
        for t in tickets() {
            paths.push(handle(t).await.unwrap().0);
        }
        assert_eq!(paths[0], ["handle_ticket", "immediate_response", "human_review"]);
        assert_eq!(paths[1], ["handle_ticket", "technical_review"]);
        assert_eq!(paths[2], ["handle_ticket", "standard_response"]);
    }
}
