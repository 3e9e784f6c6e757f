//! Statuses of runs and of states.
//!
//! Invariants: both are stored as `u8` in atomics on the runtime's hot path; the `repr(u8)`
//! discriminants are that encoding, and `from_u8` is its exact inverse. In checkpoints and
//! stores they are written as their names (`as_str`, `FromStr`, serde), which never change.

use serde::{Deserialize, Serialize};

/// Where a run stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    #[doc(hidden)]
    pub fn from_u8(v: u8) -> Self {
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    #[doc(hidden)]
    pub fn from_u8(v: u8) -> Self {
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

macro_rules! names {
    ($t:ident: $($v:ident),*) => {
        impl $t {
            /// The status's name, as checkpoints and stores write it.
            ///
            /// ```
            #[doc = concat!("use agent_core::", stringify!($t), ";")]
            #[doc = concat!("let s: ", stringify!($t), " = ", stringify!($t), "::Failed.as_str().parse().unwrap();")]
            #[doc = concat!("assert_eq!(s, ", stringify!($t), "::Failed);")]
            /// ```
            pub fn as_str(self) -> &'static str {
                match self { $($t::$v => stringify!($v),)* }
            }
        }

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $t {
            type Err = UnknownStatus;
            fn from_str(s: &str) -> Result<Self, UnknownStatus> {
                match s {
                    $(stringify!($v) => Ok($t::$v),)*
                    _ => Err(UnknownStatus(s.to_owned())),
                }
            }
        }
    };
}

names!(AgentStatus: Idle, Running, Paused, Completed, Failed, Cancelled, TimedOut);
names!(StateStatus: Pending, Ready, Running, Completed, Failed, Blocked, Cancelled, Timeout, Retrying);

/// A status name that is not one of the statuses (from a store or a checkpoint).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown status {0:?}")]
pub struct UnknownStatus(pub String);

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
            assert_eq!(s.as_str().parse::<AgentStatus>(), Ok(s));
        }
        assert!("Done".parse::<AgentStatus>().is_err());
        for v in 0..=8u8 {
            assert_eq!(StateStatus::from_u8(v) as u8, v);
            let s = StateStatus::from_u8(v);
            assert_eq!(s.as_str().parse::<StateStatus>(), Ok(s));
        }
    }
}
