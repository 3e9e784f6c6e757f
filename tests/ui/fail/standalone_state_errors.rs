use agent::prelude::*;

#[state(resources(cpu = -2.0), retry(max = 0), timeout = 0)]
async fn load(_ctx: &Context, _extra: u32) -> u32 {
    0
}

#[state]
struct NotAFunction;

fn main() {}
