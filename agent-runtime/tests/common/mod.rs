//! Helpers shared by the runtime's integration tests (each test file includes this module;
//! not every file uses every helper).
#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use agent_core::StateResult;

/// A boxed state future, for closures that pick their body at run time.
pub type StateFut = Pin<Box<dyn Future<Output = StateResult> + Send + 'static>>;
/// The same for states that may fail.
pub type FallibleFut = Pin<Box<dyn Future<Output = Result<StateResult, std::io::Error>> + Send + 'static>>;

/// `n` seconds.
pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// `n` milliseconds.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
