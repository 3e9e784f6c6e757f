use agent::prelude::*;

#[workflow]
mod flow {
    use agent::prelude::*;

    #[state]
    async fn load(ctx: &Context) {
        ctx.set_state("loaded", true);
    }
}

fn main() {
    let _ = flow::agent();
}
