//! [`RunControl`]: what another process (the console, the command line) asks of a running
//! run through the store, since it cannot reach the run's process.
//!
//! Invariants:
//! - A request is a column of the run's row, set only while the run is unfinished; the
//!   run's owner reads it (within a second, see `durable`) and acts on it; any claim of the
//!   run clears it, so a request never outlives the owner it was meant for.
//! - Stored as [`RunControl::as_str`]; a stored name that is not a request reads as none
//!   (it came from a newer build, which the owner cannot obey anyway).

/// What is asked of a running run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RunControl {
    /// Stop it: its states cancelled, the run `Cancelled`.
    Cancel,
    /// Pause it: nothing new starts, running states finish, the run `Paused` (resumable).
    Pause,
}

impl RunControl {
    /// The name the stores keep.
    ///
    /// ```
    /// use agent_runtime::store::RunControl;
    /// assert_eq!(RunControl::parse(RunControl::Pause.as_str()), Some(RunControl::Pause));
    /// assert_eq!(RunControl::parse("explode"), None);
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            RunControl::Cancel => "cancel",
            RunControl::Pause => "pause",
        }
    }

    /// The request named `name`, if it is one.
    pub fn parse(name: &str) -> Option<RunControl> {
        match name {
            "cancel" => Some(RunControl::Cancel),
            "pause" => Some(RunControl::Pause),
            _ => None,
        }
    }
}
