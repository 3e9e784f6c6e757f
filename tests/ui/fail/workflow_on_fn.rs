use agent::prelude::*;

#[workflow]
fn flow() {}

fn main() {
    flow();
}
