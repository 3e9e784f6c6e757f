use agent::prelude::*;

#[state]
async fn load(_ctx: &Context) -> StateResult {
    StateResult::End
}
