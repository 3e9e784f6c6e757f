//! How the runtime calls a state.
//!
//! Invariants:
//! - A state is called with a borrowed [`Context`] and returns a [`StateFuture`] (a boxed `Send`
//!   future that may borrow it, its block recycled per thread: see `future`), with no
//!   reference-count traffic for states written with `#[state]` taking `&Context`. Closures
//!   take an owned `Context`, so for them the runtime clones the handle.
//! - `call` itself never panics: a closure's synchronous panic is re-raised when its future
//!   is first polled, where the runtime catches it.
//! - Anything `Fn(Context) -> impl Future<Output = StateResult | Result<StateResult, E>>` is a
//!   state. `#[state]` functions become unit structs that implement [`IntoState`] themselves
//!   and carry their [`StateSpec`], so `agent.add_state(name, f)` keeps their options.

use std::future::Future;
use std::sync::Arc;

use crate::context::Context;
use crate::future::StateFuture;
use crate::options::StateSpec;
use crate::result::IntoStateOutcome;

/// A callable state.
pub trait StateHandler: Send + Sync + 'static {
    /// Start one run of the state.
    fn call<'a>(&'a self, ctx: &'a Context) -> StateFuture<'a>;
}

impl<F, Fut> StateHandler for F
where
    F: Fn(Context) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: IntoStateOutcome,
{
    #[inline]
    fn call<'a>(&'a self, ctx: &'a Context) -> StateFuture<'a> {
        // A closure runs user code before returning its future; a panic there is moved into
        // the future, so the runtime catches every panic of a state in one place: its poll.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self(ctx.clone()))) {
            Ok(fut) => StateFuture::new(async move { fut.await.into_outcome() }),
            Err(payload) => StateFuture::new(async move { std::panic::resume_unwind(payload) }),
        }
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
