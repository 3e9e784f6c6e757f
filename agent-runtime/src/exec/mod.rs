//! The execution layer: the one part of the runtime that runs states and starts tasks.
//!
//! What each file owns:
//! - `drive`: the loop of one branch, a token's states one after another in one task, as
//!   five steps in order: record, gate, poll, settle, route (see its module docs);
//! - `poll`: polling a state's future (`poll_state`, the one function every poll goes
//!   through), tokio's cooperative budget, cancellation by `cancel_state`, the watched
//!   path (events, timings, tracing) and the note of which state a thread polls;
//! - `attempt`: the attempts of a guarded state (resources, a timeout, retries, rate
//!   limits, a blocking body), and its wait at its dependency gate;
//! - `gate`: dependencies, which decide when a state with `depends_on` may start and which
//!   states a completion activates;
//! - `spawn`: tasks (a branch's, the root's) and the spreading of a fan-out's branches over
//!   tasks;
//! - `step`: what starting a state and ending an attempt record (shared by `drive` and
//!   `attempt`, so neither calls back into the other).
//!
//! Invariants:
//! - Only this layer starts a run's branches, and within it only `spawn` spawns their tasks
//!   (beside them, `attempt` runs a `blocking` body on tokio's blocking pool, and `human`
//!   keeps a small task that forwards a preemption). `gate` answers which states became
//!   ready; the caller here (`drive` on a completion, `attempt` at a gate) starts a branch
//!   at each.
//! - The layers below never call up into this one: `run/` (a run's plain shared state),
//!   `program`, `reach` and `frontier` import nothing from `exec`
//!   (`grep -rn "crate::exec" agent-runtime/src/run` finds nothing). The layers above
//!   (`agent`, `asking`) reach it only through the names re-exported here.
//! - A branch is counted in the run (its task guard, and in programs with dependencies the
//!   live-branch count of `run::gates`) from where it is made to where its `drive` returns,
//!   so a run ends only when every branch has, and a stall is judged on live branches only.

mod attempt;
mod drive;
mod gate;
mod poll;
mod spawn;
mod step;

pub(crate) use drive::drive;
pub(crate) use gate::{branch_ended, root_started};
pub(crate) use poll::polled_state;
pub(crate) use spawn::{spawn_restored, spawn_root};
