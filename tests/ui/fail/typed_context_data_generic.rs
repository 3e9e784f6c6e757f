use agent::prelude::*;

#[derive(Clone, Debug, Serialize, Deserialize, TypedContextData)]
struct Wrapper<T> {
    value: T,
}

fn main() {}
