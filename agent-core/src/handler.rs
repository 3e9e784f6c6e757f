//! How the runtime calls a state.
//!
//! Invariants:
//! - A state is called with a borrowed [`Context`] and returns a [`StateFuture`] (a boxed `Send`
//!   future that may borrow it, its block recycled per thread: see `future`), with no
//!   reference-count traffic for states that take `&Context` (`#[state]` functions, and plain
//!   `async fn(&Context)` added with `add_state`). Closures take an owned `Context`, so for
//!   them the runtime clones the handle (one reference-count increment, and a decrement when
//!   the state's future is dropped).
//! - `call` itself never panics: a closure's synchronous panic is re-raised when its future
//!   is first polled, where the runtime catches it.
//! - [`IntoState`] is implemented three ways, told apart by its marker parameter (as axum's
//!   `Handler<T, S>` and Bevy's `IntoSystem<.., Marker>` tell functions apart), so
//!   `add_state(name, f)` accepts each without the caller naming which:
//!   - [`TakesContext`]: anything `Fn(Context) -> impl Future<Output = StateResult | Result<StateResult, E>>`,
//!     closures included;
//!   - [`BorrowsContext`]: any `async fn(&Context) -> ...` (a function, or an async closure
//!     that captures nothing), the same signature `#[state]` functions have;
//!   - [`Annotated`]: `#[state]` functions, which become unit structs implementing it
//!     themselves and carrying their [`StateSpec`], so `agent.add_state(name, f)` keeps their
//!     options.

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
        start(|| self(ctx.clone()))
    }
}

/// A state's future from `call`, a function that may run user code before returning it: a
/// panic there is moved into the future, so the runtime catches every panic of a state in
/// one place, its poll.
#[inline]
fn start<'a, Fut>(call: impl FnOnce() -> Fut) -> StateFuture<'a>
where
    Fut: Future + Send + 'a,
    Fut::Output: IntoStateOutcome,
{
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)) {
        Ok(fut) => StateFuture::new(async move { fut.await.into_outcome() }),
        Err(payload) => StateFuture::new(async move { std::panic::resume_unwind(payload) }),
    }
}

/// Anything `agent.add_state(name, f)` accepts: closures and functions taking an owned
/// [`Context`], `async fn`s taking `&Context`, and `#[state]` functions. `M` is a marker the
/// compiler infers ([`TakesContext`], [`BorrowsContext`] or [`Annotated`]); callers never
/// name it.
///
/// ```
/// use agent_core::{Context, IntoState, StateResult};
///
/// async fn borrows(ctx: &Context) -> StateResult {
///     ctx.set_state("seen", true);
///     StateResult::End
/// }
///
/// fn accepts<M>(state: impl IntoState<M>) -> bool {
///     state.into_state().1.is_none() // no `#[state]` options
/// }
///
/// assert!(accepts(borrows));
/// assert!(accepts(|ctx: Context| async move { ctx.set_state("seen", true); StateResult::End }));
/// ```
pub trait IntoState<M> {
    /// The handler, and the options `#[state(...)]` gave it, if any.
    fn into_state(self) -> (Arc<dyn StateHandler>, Option<&'static StateSpec>);
}

/// [`IntoState`]'s marker for closures and functions taking an owned [`Context`].
#[derive(Debug)]
pub enum TakesContext {}

/// [`IntoState`]'s marker for `async fn`s taking `&Context`.
#[derive(Debug)]
pub enum BorrowsContext {}

/// [`IntoState`]'s marker for `#[state]` functions (the macro implements it).
#[derive(Debug)]
pub enum Annotated {}

impl<F, Fut> IntoState<TakesContext> for F
where
    F: Fn(Context) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: IntoStateOutcome,
{
    fn into_state(self) -> (Arc<dyn StateHandler>, Option<&'static StateSpec>) {
        (Arc::new(self), None)
    }
}

/// An `async fn(&'a Context)`: its future may borrow the context for `'a`. A trait of its own
/// so that the future's type, which depends on `'a`, can be named and bounded (`Send`).
pub trait BorrowingFn<'a>: Fn(&'a Context) -> <Self as BorrowingFn<'a>>::Fut {
    /// The future the function returns for a context borrowed for `'a`.
    type Fut: Future<Output = Self::Out> + Send + 'a;
    /// What the future yields.
    type Out: IntoStateOutcome;
}

impl<'a, F, Fut> BorrowingFn<'a> for F
where
    F: Fn(&'a Context) -> Fut,
    Fut: Future + Send + 'a,
    Fut::Output: IntoStateOutcome,
{
    type Fut = Fut;
    type Out = Fut::Output;
}

/// A function taking `&Context`, as a [`StateHandler`].
struct Borrowing<F>(F);

impl<F> StateHandler for Borrowing<F>
where
    F: for<'a> BorrowingFn<'a> + Send + Sync + 'static,
{
    #[inline]
    fn call<'a>(&'a self, ctx: &'a Context) -> StateFuture<'a> {
        start(|| (self.0)(ctx))
    }
}

impl<F> IntoState<BorrowsContext> for F
where
    F: for<'a> BorrowingFn<'a> + Send + Sync + 'static,
{
    fn into_state(self) -> (Arc<dyn StateHandler>, Option<&'static StateSpec>) {
        (Arc::new(Borrowing(self)), None)
    }
}
