//! The execution layer: the only part of the runtime that runs states and starts tasks.
//!
//! - `drive`: the loop of one branch (a token's states, one after another, in one task);
//! - `attempt`: the attempts of a state that needs more than a plain call;
//! - `gate`: dependencies, when a state with `depends_on` may start;
//! - `step`: what starting a state and ending an attempt record.

mod attempt;
mod drive;
mod gate;
mod step;

pub(crate) use drive::{drive, polled_state, spawn as spawn_branch, spawn_root};
pub(crate) use gate::{branch_ended, root_started};
