//! The runtime of the `agent` workflow framework: [`Agent`], fan-out and fan-in.
//!
//! Users depend on the `agent` facade, which re-exports this crate.
//!
//! How a run executes (see each module's invariants):
//! - `program`: the definition is compiled and validated once per run into an immutable
//!   program; names resolve to indices.
//! - `branch`: one task runs a branch's states in sequence; a fan-out spawns the other
//!   branches on the current tokio runtime (work-stealing on a multi-thread one).
//! - `run::groups`: a fan-out opens a group of tokens; the group decides when a join runs.
//! - `run`: counters, status and the first failure of a run.
//! - `pool`: the resource pool; `attempt`: one run of a state that holds resources, has a
//!   timeout or runs on the blocking pool.
//! - `frontier`: every token's position is published as the run goes, so `checkpoint` can
//!   take a consistent checkpoint at any instant and seed a new run from one.
//! - `durable`: a run with a [`store`] records each completion before its successors start.
//!   The SQL stores are features, both on by default: `sqlite` (`SqliteStore`, SQLite
//!   compiled in) and `postgres` (`PostgresStore`); `MemoryStore` is always there.
//! - `human`: requests for human input, answered from code, the terminal or a store.
//! - `diagram`: a built agent's picture, coloured by its run (statuses, retries).
//! - `cli` (feature `cli`, on by default; needs `sqlite`, its default store): the command
//!   line of workflow binaries; `text`: outside text made safe for the terminal (control
//!   characters escaped).
//! - `events`: typed events for subscribers, built only while someone subscribes;
//!   `timing`: per-state durations, recorded only when asked.
#![warn(missing_docs)]
// No `unsafe` code. The one exception is test-only: the loom models of the frontier lock
// (`--cfg loom`) read loom's checked cells, which takes an `unsafe` block.
#![cfg_attr(not(all(test, loom)), forbid(unsafe_code))]
#![cfg_attr(all(test, loom), deny(unsafe_code))]

mod agent;
mod asking;
mod attempt;
#[doc(hidden)]
pub mod bench;
mod branch;
mod checkpoint;
#[cfg(feature = "cli")]
pub mod cli;
mod deps;
mod diagram;
mod durable;
pub mod events;
mod frontier;
mod human;
#[cfg(feature = "otel")]
pub mod otel;
mod pool;
mod program;
#[cfg(feature = "prometheus")]
mod prometheus;
mod ratelimit;
mod reach;
mod result;
mod run;
mod step;
pub mod store;
mod sync;
mod text;
mod timing;

pub use agent::{Agent, RunFuture, RunHandle, RunOptions, StateConfig};
pub use agent_core::{AgentStatus, StateStatus};
pub use events::{Event, EventKind, EventStream};
pub use human::{AnswerError, PendingInput};
pub use pool::{
    QuotaScope, ResourcePool, ResourcePoolBuilder, ResourceUsage, StateAllocation, UsageStats, WaitingState,
};
pub use result::{AgentResult, RunMetrics, StateMetrics};
#[cfg(feature = "postgres")]
pub use store::PostgresStore;
#[cfg(feature = "sqlite")]
pub use store::SqliteStore;
pub use store::{CheckpointStore, MemoryStore};
pub use timing::StateTiming;
