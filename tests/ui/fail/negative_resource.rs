use agent::prelude::*;

#[workflow]
mod flow {
    use agent::prelude::*;

    #[state(resources(cpu = 2.0, memory_mb = -512))]
    async fn train(_ctx: &Context) -> StateResult {
        StateResult::End
    }
}

fn main() {
    let _ = flow::agent();
}
