use agent::prelude::*;

#[workflow]
mod flow {
    use agent::prelude::*;

    #[state]
    async fn prepare_data(_ctx: &Context) -> StateResult {
        "train".into()
    }

    #[state(depends_on(prepare_dta = Required))]
    async fn train(_ctx: &Context) -> StateResult {
        StateResult::End
    }
}

fn main() {
    let _ = flow::agent();
}
