//! Plain data and traits of the `agent` workflow framework, with no executor.
//!
//! Users depend on the `agent` facade, which re-exports everything here. This crate holds
//! what both the macros' generated code and the runtime name: [`Context`], [`StateResult`],
//! the state options, [`WorkflowGraph`], and the errors.
//!
//! Invariants kept across the crate:
//! - Nothing here spawns, sleeps or blocks: the runtime owns time and tasks (tokio is used
//!   only for the task-local scope of an [`Allocation`]).
//! - Every type placed in a `static GRAPH` is `const`-constructible.
#![warn(missing_docs)]
// Only `future` (the recycled blocks of `StateFuture`) needs `unsafe`; it is allowed there alone.
#![deny(unsafe_code)]

mod allocation;
mod checkpoint;
mod context;
mod diagram;
mod error;
#[allow(unsafe_code)]
mod future;
mod graph;
mod handler;
mod human;
mod options;
mod result;
mod status;
mod typed;

pub use allocation::Allocation;
pub use checkpoint::{
    Checkpoint, CheckpointError, GroupRecord, InputRequestRecord, StateRecord, TokenRecord, CHECKPOINT_VERSION,
};
pub use context::Context;
pub use diagram::{Diagram, DiagramEdge, DiagramState};
pub use error::{AgentError, ContextError, DependencyTimeout, PanicError, ResourceError, StateError, TimeoutError};
pub use future::{StateFuture, StateOutcome};
pub use graph::{Edge, EdgeKind, WorkflowGraph};
pub use handler::{IntoState, StateHandler};
pub use human::{HumanInput, HumanInputError};
pub use options::{
    Condition, DependencyConfig, DependencyLifecycle, DependencyType, Priority, RateLimit, ResourceRequirements,
    ResourceType, ResourceTypes, RetryPolicy, StateSpec,
};
pub use result::{BoxError, IntoStateOutcome, StateName, StateResult};
pub use status::{AgentStatus, StateStatus, UnknownStatus};
pub use typed::TypedContextData;

#[doc(hidden)]
pub mod __private {
    pub use crate::allocation::{with_allocation, with_allocation_sync};
    pub use crate::human::{InputBroker, InputFuture};
    pub use typetag;
}
