//! `agent`: typed, compile-time-checked workflow state machines on tokio.
//!
//! Annotate async functions with `#[state(...)]`, group them in a `#[workflow]` module, and
//! get a state machine whose transition graph the compiler has checked, run with parallel
//! fan-out and fan-in on tokio's work-stealing runtime.
//!
//! ```
//! use agent::prelude::*;
//!
//! #[workflow]
//! mod hello_workflow {
//!     use agent::prelude::*;
//!
//!     #[state]
//!     async fn process_data(ctx: &Context) -> StateResult {
//!         ctx.set_state("greeting", "Hello, World!");
//!         "format_output".into()
//!     }
//!
//!     #[state]
//!     async fn format_output(ctx: &Context) -> StateResult {
//!         let greeting: String = ctx.get_state("greeting").unwrap();
//!         println!("Result: {greeting}");
//!         StateResult::End
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), AgentError> {
//! let agent = hello_workflow::agent();
//! let result = agent.run().await?;
//! assert_eq!(result.status(), AgentStatus::Completed);
//! let greeting: Option<String> = result.context().get_state("greeting");
//! assert_eq!(greeting.as_deref(), Some("Hello, World!"));
//! # Ok(())
//! # }
//! ```
//!
//! The crates behind this facade: `agent-core` (data and traits), `agent-macros` (the
//! macros) and `agent-runtime` (the executor). Generated code names only `::agent::…` paths,
//! so users depend on `agent`, `serde` and `tokio` alone.
//!
//! With the `cli` feature (on by default), [`cli`] gives every workflow binary a command
//! line: `agent::cli::main(my_workflow::agent).await` in its `main` provides `run`,
//! `resume`, `list`, `show`, `answer` and `graph` on a durable store.
//!
//! Features (all on by default): `cli`; `sqlite` (`SqliteStore`, SQLite compiled in from C;
//! `cli` needs it); `postgres` (`PostgresStore`). `otel` and `prometheus` are off by default.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub use agent_core::*;
pub use agent_macros::{state, workflow, TypedContextData};
pub use agent_runtime::*;

/// The README's Rust snippets, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// Everything a workflow file needs: `use agent::prelude::*;`.
pub mod prelude {
    pub use agent_core::{
        AgentError, Allocation, Checkpoint, CheckpointError, Context, ContextError, DependencyConfig,
        DependencyLifecycle, DependencyType, Diagram, HumanInput, HumanInputError, Priority, RateLimit, ResourceError,
        ResourceRequirements, ResourceType, RetryPolicy, StateName, StateResult, TimeoutError, TypedContextData,
        WorkflowGraph,
    };
    pub use agent_macros::{state, workflow, TypedContextData};
    #[cfg(feature = "postgres")]
    pub use agent_runtime::PostgresStore;
    #[cfg(feature = "sqlite")]
    pub use agent_runtime::SqliteStore;
    pub use agent_runtime::{
        Agent, AgentResult, AgentStatus, Event, EventKind, EventStream, QuotaScope, ResourcePool, RunMetrics,
        StateMetrics, StateStatus, StateTiming,
    };
    pub use serde::{Deserialize, Serialize};
}

/// Paths named by macro-generated code. Not public API.
#[doc(hidden)]
pub mod __private {
    pub use agent_core::__private::typetag;
    pub use agent_core::{
        Context, ContextError, DependencyType, IntoState, IntoStateOutcome, Priority, RateLimit, ResourceRequirements,
        RetryPolicy, StateFuture, StateHandler, StateName, StateResult, StateSpec, TypedContextData, WorkflowGraph,
    };
    pub use agent_runtime::Agent;
    pub use serde_json;
    pub use std::boxed::Box;
    pub use std::option::Option;
    pub use std::result::Result;
    pub use std::sync::Arc;
    pub use std::time::Duration;
}
