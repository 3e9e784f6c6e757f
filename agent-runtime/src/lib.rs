//! The runtime of the `agent` workflow framework: [`Agent`], fan-out and fan-in.
//!
//! Users depend on the `agent` facade, which re-exports this crate.
//!
//! How a run executes (see each module's invariants):
//! - `program`: the definition is compiled and validated once per run into an immutable
//!   program; names resolve to indices.
//! - `run`: the plain shared state of one run (control, counters, positions, groups,
//!   dependency bookkeeping, sinks); `run::groups`: a fan-out opens a group of tokens, and
//!   the group decides when a join runs; `run::branches`: the groups of a map, or of an
//!   agent with reducers, also keep each branch's place, held writes and result, by its
//!   ordinal, so a map's items recover one by one and writes fold in branch order. It
//!   starts no task and imports nothing from `exec`.
//! - `exec`: the execution layer, the only one that runs states and starts tasks.
//!   `exec::drive`: one task runs a branch's states in sequence, each turn as steps
//!   (record, gate, poll, settle, route); `exec::spawn`: a fan-out's other branches go to
//!   tasks on the current tokio runtime (work-stealing on a multi-thread one; a map's
//!   through a window of at most `MAP_WINDOW` branches at once);
//!   `exec::attempt`: the attempts of a state that holds resources, has a timeout, retries
//!   or runs on the blocking pool; `exec::gate`: dependencies.
//! - `pool`: the resource pool.
//! - `frontier`: every token's position is published as the run goes, so `checkpoint` can
//!   take a consistent checkpoint at any instant and seed a new run from one.
//! - `version`: a program's graph signature; checkpoints record it, and one taken under
//!   another graph is refused on restore, its differences listed.
//! - `durable`: a run with a [`store`] records each completion before its successors start,
//!   as the owner of the run (a lease on it, renewed while it runs; every write fenced by
//!   the epoch of its claim); `lease`: this process's [`WorkerId`] and the runs it holds.
//!   The SQL stores are features, both on by default: `sqlite` (`SqliteStore`, SQLite
//!   compiled in) and `postgres` (`PostgresStore`); `MemoryStore` is always there. An
//!   agent's store is wrapped in a `RetryingStore`, so runs ride out passing outages
//!   (`Agent::store_retry`).
//! - `human`: requests for human input, answered from code, the terminal or a store.
//! - `signal`: durable sleeps and signal waits (`ctx.sleep`, `ctx.wait_for_signal`),
//!   armed and taken in the run's store so a restart resumes them; `clock`: the wall clock
//!   they keep time by (it advances with paused tokio time).
//! - [`schedule`]: cron schedules in the store, carried out by every worker's scheduler,
//!   one run per tick across a fleet; `store::queue`: per-key flow control (a limit of
//!   runs per key, round robin between keys, debounce), enforced by the store's claims.
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
#[doc(hidden)]
pub mod bench;
mod checkpoint;
#[cfg(feature = "cli")]
pub mod cli;
mod clock;
#[cfg(feature = "console")]
pub mod console;
mod diagram;
mod durable;
pub mod events;
mod exec;
mod frontier;
mod human;
mod lease;
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
pub mod schedule;
mod signal;
pub mod store;
mod sync;
mod text;
mod timing;
mod version;
pub mod worker;

pub use agent::{
    Agent, Child, ChildError, ForkAt, IntoChild, RunChild, RunFuture, RunHandle, RunOptions, StateConfig, SubmitOptions,
};
pub use agent_core::{AgentStatus, StateStatus};
pub use events::{Event, EventKind, EventStream, StreamItem, StreamMode};
pub use human::{AnswerError, PendingInput};
pub use lease::WorkerId;
pub use pool::{
    QuotaScope, ResourcePool, ResourcePoolBuilder, ResourceUsage, StateAllocation, UsageStats, WaitingState,
};
pub use result::{AgentResult, RunMetrics, StateMetrics};
pub use signal::{SignalError, SignalReceipt};
#[cfg(feature = "postgres")]
pub use store::PostgresStore;
#[cfg(feature = "sqlite")]
pub use store::SqliteStore;
pub use store::{CheckpointStore, MemoryStore};
pub use timing::StateTiming;
pub use worker::{Worker, WorkerReport};
