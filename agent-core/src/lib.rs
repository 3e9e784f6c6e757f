//! Plain data and traits of the `agent` workflow framework, with no executor.
//!
//! Users depend on the `agent` facade, which re-exports everything here. This crate holds
//! what both the macros' generated code and the runtime name: [`Context`], [`StateResult`],
//! the state options, [`WorkflowGraph`], and the errors.
//!
//! Invariants kept across the crate:
//! - Nothing here spawns, sleeps or blocks: the runtime owns time and tasks.
//! - Every type placed in a `static GRAPH` is `const`-constructible.
#![warn(missing_docs)]

mod context;
mod error;
mod graph;
mod handler;
mod options;
mod result;
mod typed;

pub use context::Context;
pub use error::{AgentError, ContextError, PanicError};
pub use graph::{Edge, EdgeKind, WorkflowGraph};
pub use handler::{IntoState, StateFuture, StateHandler};
pub use options::{
    Condition, DependencyConfig, DependencyLifecycle, DependencyType, Priority, ResourceRequirements, ResourceType,
    RetryPolicy, StateSpec,
};
pub use result::{BoxError, IntoStateOutcome, StateName, StateResult};
pub use typed::TypedContextData;

#[doc(hidden)]
pub mod __private {
    pub use typetag;
}
