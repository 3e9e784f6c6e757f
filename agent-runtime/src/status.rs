//! Statuses of runs and of states.
//!
//! Invariants: both are stored as `u8` in atomics on the hot path; the `repr(u8)`
//! discriminants are the only encoding, and `from_u8` is its exact inverse.

/// Where a run stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum AgentStatus {
    /// Not started.
    Idle = 0,
    /// States are running or waiting.
    Running = 1,
    /// Paused: nothing new is admitted.
    Paused = 2,
    /// Every branch ended.
    Completed = 3,
    /// A state failed for good, or a transition was invalid.
    Failed = 4,
    /// Cancelled by the user.
    Cancelled = 5,
    /// The run's timeout passed.
    TimedOut = 6,
}

impl AgentStatus {
    pub(crate) fn from_u8(v: u8) -> Self {
        match v {
            1 => AgentStatus::Running,
            2 => AgentStatus::Paused,
            3 => AgentStatus::Completed,
            4 => AgentStatus::Failed,
            5 => AgentStatus::Cancelled,
            6 => AgentStatus::TimedOut,
            _ => AgentStatus::Idle,
        }
    }

    /// Whether the run is over.
    pub fn is_finished(self) -> bool {
        matches!(self, AgentStatus::Completed | AgentStatus::Failed | AgentStatus::Cancelled | AgentStatus::TimedOut)
    }
}

/// Where one state stands in the current (or last) run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum StateStatus {
    /// Not run yet.
    Pending = 0,
    /// Admitted, about to run.
    Ready = 1,
    /// Running now.
    Running = 2,
    /// Its last run completed.
    Completed = 3,
    /// Its last run failed.
    Failed = 4,
    /// Waiting: at a fan-in, or for a dependency.
    Blocked = 5,
    /// Cancelled before it finished.
    Cancelled = 6,
    /// Its last attempt exceeded its timeout.
    Timeout = 7,
    /// Waiting to be tried again.
    Retrying = 8,
}

impl StateStatus {
    pub(crate) fn from_u8(v: u8) -> Self {
        match v {
            1 => StateStatus::Ready,
            2 => StateStatus::Running,
            3 => StateStatus::Completed,
            4 => StateStatus::Failed,
            5 => StateStatus::Blocked,
            6 => StateStatus::Cancelled,
            7 => StateStatus::Timeout,
            8 => StateStatus::Retrying,
            _ => StateStatus::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u8_encoding_round_trips() {
        for s in [
            AgentStatus::Idle,
            AgentStatus::Running,
            AgentStatus::Paused,
            AgentStatus::Completed,
            AgentStatus::Failed,
            AgentStatus::Cancelled,
            AgentStatus::TimedOut,
        ] {
            assert_eq!(AgentStatus::from_u8(s as u8), s);
        }
        for v in 0..=8u8 {
            assert_eq!(StateStatus::from_u8(v) as u8, v);
        }
    }
}
