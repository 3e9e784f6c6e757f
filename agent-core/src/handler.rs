//! How the runtime calls a state.
//!
//! Invariants:
//! - A state is called with an owned [`Context`] handle and returns a boxed, `'static`,
//!   `Send` future: one allocation per state run, the price of dynamic dispatch.
//! - Anything `Fn(Context) -> impl Future<Output = StateResult | Result<StateResult, E>>` is a
//!   state. `#[state]` functions become unit structs that implement [`IntoState`] themselves
//!   and carry their [`StateSpec`], so `agent.add_state(name, f)` keeps their options.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::context::Context;
use crate::options::StateSpec;
use crate::result::{BoxError, IntoStateOutcome, StateResult};

/// The future a state returns, normalised.
pub type StateFuture = Pin<Box<dyn Future<Output = Result<StateResult, BoxError>> + Send + 'static>>;

/// A callable state.
pub trait StateHandler: Send + Sync + 'static {
    /// Start one run of the state.
    fn call(&self, ctx: Context) -> StateFuture;
}

impl<F, Fut> StateHandler for F
where
    F: Fn(Context) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: IntoStateOutcome,
{
    #[inline]
    fn call(&self, ctx: Context) -> StateFuture {
        let fut = self(ctx);
        Box::pin(async move { fut.await.into_outcome() })
    }
}

/// Anything `agent.add_state(name, f)` accepts: closures, `async fn(Context)`, `#[state]` fns.
pub trait IntoState {
    /// The handler, and the options `#[state(...)]` gave it, if any.
    fn into_state(self) -> (Arc<dyn StateHandler>, Option<&'static StateSpec>);
}

impl<F, Fut> IntoState for F
where
    F: Fn(Context) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: IntoStateOutcome,
{
    fn into_state(self) -> (Arc<dyn StateHandler>, Option<&'static StateSpec>) {
        (Arc::new(self), None)
    }
}
