//! The ten-state ring the chain benches share: `#[workflow]` states `s0` to `s9`, each calling
//! the including bench's `bump(ctx)` and going on to the next (`s9` to `s0`) while it says
//! so, the same ring as builder closures returning `&'static str` names, and as builder
//! `async fn(&Context)` states (one generic function, instantiated per position). Included with
//! `#[path = "common/ring10.rs"] mod ring10;` by a bench that defines `fn bump(&Context) -> bool`.

use agent::prelude::*;

use super::bump;

/// The ring's state names, in order.
pub const NAMES: [&str; 10] = ["s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9"];

/// The ring as a `#[workflow]`: literal targets, resolved by index hint.
#[workflow]
pub mod ring {
    use super::super::bump;
    use agent::prelude::*;

    #[state]
    async fn s0(ctx: &Context) -> StateResult {
        if bump(ctx) {
            "s1".into()
        } else {
            StateResult::End
        }
    }
    #[state]
    async fn s1(ctx: &Context) -> StateResult {
        if bump(ctx) {
            "s2".into()
        } else {
            StateResult::End
        }
    }
    #[state]
    async fn s2(ctx: &Context) -> StateResult {
        if bump(ctx) {
            "s3".into()
        } else {
            StateResult::End
        }
    }
    #[state]
    async fn s3(ctx: &Context) -> StateResult {
        if bump(ctx) {
            "s4".into()
        } else {
            StateResult::End
        }
    }
    #[state]
    async fn s4(ctx: &Context) -> StateResult {
        if bump(ctx) {
            "s5".into()
        } else {
            StateResult::End
        }
    }
    #[state]
    async fn s5(ctx: &Context) -> StateResult {
        if bump(ctx) {
            "s6".into()
        } else {
            StateResult::End
        }
    }
    #[state]
    async fn s6(ctx: &Context) -> StateResult {
        if bump(ctx) {
            "s7".into()
        } else {
            StateResult::End
        }
    }
    #[state]
    async fn s7(ctx: &Context) -> StateResult {
        if bump(ctx) {
            "s8".into()
        } else {
            StateResult::End
        }
    }
    #[state]
    async fn s8(ctx: &Context) -> StateResult {
        if bump(ctx) {
            "s9".into()
        } else {
            StateResult::End
        }
    }
    #[state]
    async fn s9(ctx: &Context) -> StateResult {
        if bump(ctx) {
            "s0".into()
        } else {
            StateResult::End
        }
    }
}

/// The ring as builder closures returning `&'static str` targets, named `name`.
pub fn builder_ring(name: &'static str) -> Agent {
    let mut agent = Agent::new(name);
    for i in 0..10 {
        agent.add_state(NAMES[i], move |ctx: Context| async move {
            if bump(&ctx) {
                StateResult::next(NAMES[(i + 1) % 10])
            } else {
                StateResult::End
            }
        });
    }
    agent
}

/// State `I` of the ring as a plain `async fn(&Context)` (no `#[state]`): the builder's way to
/// add a state that borrows its context.
async fn step<const I: usize>(ctx: &Context) -> StateResult {
    if bump(ctx) {
        StateResult::next(NAMES[(I + 1) % 10])
    } else {
        StateResult::End
    }
}

/// The ring as builder states taking `&Context` (`add_state(name, step::<I>)`), named `name`.
#[allow(dead_code)] // only the benches comparing the two builder forms use it
pub fn borrowing_ring(name: &'static str) -> Agent {
    let mut agent = Agent::new(name);
    agent.add_state(NAMES[0], step::<0>);
    agent.add_state(NAMES[1], step::<1>);
    agent.add_state(NAMES[2], step::<2>);
    agent.add_state(NAMES[3], step::<3>);
    agent.add_state(NAMES[4], step::<4>);
    agent.add_state(NAMES[5], step::<5>);
    agent.add_state(NAMES[6], step::<6>);
    agent.add_state(NAMES[7], step::<7>);
    agent.add_state(NAMES[8], step::<8>);
    agent.add_state(NAMES[9], step::<9>);
    agent
}
