//! Helpers of this crate's unit tests.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

/// Pending once (waking itself), then ready: makes an `async` block hold what it borrows
/// across an `.await`, and lets a test interleave futures on one thread.
pub(crate) struct YieldOnce(pub(crate) bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        if std::mem::replace(&mut self.0, true) {
            return Poll::Ready(());
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
