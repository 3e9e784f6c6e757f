//! Plain data and traits of the `agent` workflow framework, with no executor.
//!
//! Users depend on the `agent` facade, which re-exports everything here. This crate holds
//! what both the macros' generated code and the runtime name: [`Context`], [`StateResult`],
//! the state options, [`WorkflowGraph`], and the errors.
//!
//! Invariants kept across the crate:
//! - Nothing here spawns, sleeps or blocks: the runtime owns time and tasks. The crate does
//!   not depend on an async runtime (the scope of an [`Allocation`] is a thread-local set
//!   around each poll).
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
mod reduce;
mod result;
mod status;
#[cfg(test)]
mod test_util;
mod typed;
mod version;
mod wait;

pub use allocation::Allocation;
pub use checkpoint::{
    AttemptSpan, BranchAt, BranchesRecord, Checkpoint, CheckpointError, GroupRecord, InputRequestRecord,
    LastErrorRecord, MapRecord, StateRecord, TokenRecord, CHECKPOINT_VERSION,
};
pub use context::{Context, Reducers};
pub use diagram::{Diagram, DiagramEdge, DiagramState};
pub use error::{
    AgentError, ContextError, DependencyTimeout, PanicError, ResourceError, RestoredError, StateError, TimeoutError,
    WaitingOn,
};
pub use future::{StateFuture, StateOutcome};
pub use graph::{Edge, EdgeKind, WorkflowGraph};
pub use handler::{Annotated, BorrowingFn, BorrowsContext, IntoState, StateHandler, TakesContext};
pub use human::{HumanInput, HumanInputError};
pub use options::{
    Condition, DependencyConfig, DependencyLifecycle, DependencyType, Priority, RateLimit, ResourceRequirements,
    ResourceType, ResourceTypes, RetryPolicy, StateSpec,
};
pub use reduce::Reduce;
pub use result::{BoxError, IntoStateOutcome, MapSpec, StateName, StateResult, RESULTS_KEY};
pub use status::{AgentStatus, StateStatus, UnknownStatus};
pub use typed::TypedContextData;
pub use version::{DependencySignature, GraphChange, GraphHash, GraphRecord, GraphSignature, StateSignature};
pub use wait::{SignalWait, WaitError};

/// What the runtime and macro-generated code reach in here. Not public API: nothing in it is
/// covered by semver.
#[doc(hidden)]
pub mod __private {
    pub use crate::allocation::{with_allocation, with_allocation_sync};
    /// The runtime's hooks on a [`Context`](crate::Context) (its last error, its input
    /// broker, its failed writes).
    pub use crate::context::runtime as context;
    pub use crate::human::{InputBroker, InputFuture};
    pub use crate::wait::{WaitFuture, Wake};
    pub use typetag;
}
