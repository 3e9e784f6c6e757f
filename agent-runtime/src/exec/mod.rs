//! The execution layer: the only part of the runtime that runs states and starts tasks.
//!
//! - `drive`: the loop of one branch (a token's states, one after another, in one task);
//! - `attempt`: the attempts of a state that needs more than a plain call;
//! - `gate`: dependencies, when a state with `depends_on` may start;
//! - `step`: what starting a state and ending an attempt record.

mod attempt;
mod drive;
mod gate;
mod poll;
mod spawn;
mod step;

pub(crate) use drive::drive;
pub(crate) use gate::{branch_ended, root_started};
pub(crate) use poll::polled_state;
pub(crate) use spawn::{spawn as spawn_branch, spawn_root};
