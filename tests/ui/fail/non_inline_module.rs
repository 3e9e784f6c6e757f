use agent::prelude::*;

#[workflow]
#[path = "support/outside_module.rs"]
mod flow;

fn main() {}
