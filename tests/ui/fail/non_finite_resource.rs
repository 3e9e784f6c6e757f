use agent::prelude::*;

#[workflow]
mod flow {
    use agent::prelude::*;

    #[state(resources(cpu = f64::NAN, gpu = 1e999))]
    async fn train(_ctx: &Context) -> StateResult {
        StateResult::End
    }
}

fn main() {
    let _ = flow::agent();
}
