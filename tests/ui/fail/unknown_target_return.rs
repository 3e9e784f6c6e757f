use agent::prelude::*;

#[workflow]
mod flow {
    use agent::prelude::*;

    #[state]
    async fn check(ctx: &Context) -> Result<StateResult, ContextError> {
        let retries: u32 = ctx.try_get_state("retries")?;
        if retries > 3 {
            return Ok("give_upp".into());
        }
        Ok("retry".into())
    }

    #[state]
    async fn retry(_ctx: &Context) -> StateResult {
        "check".into()
    }

    #[state]
    async fn give_up(_ctx: &Context) -> StateResult {
        StateResult::End
    }
}

fn main() {
    let _ = flow::agent();
}
