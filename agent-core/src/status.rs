//! Statuses of runs and of states.
//!
//! Invariants: both are stored as `u8` in atomics on the runtime's hot path; the `repr(u8)`
//! discriminants are that encoding, and `from_u8` is its exact inverse. In checkpoints and
//! stores they are written as their names (`as_str`, `FromStr`, serde), which never change.
//! Each enum's variants are written once, in `statuses!`, and everything that lists them
//! (`ALL`, `from_u8`, the names) is derived from that one list.

use serde::{Deserialize, Serialize};

/// Defines a status enum from its one list of variants, and from that list: `ALL`, the
/// `u8` encoding (`from_u8`), the names (`as_str`, `Display`, `FromStr`).
macro_rules! statuses {
    (
        $(#[$meta:meta])*
        pub enum $t:ident {
            $( $(#[$vmeta:meta])* $v:ident = $n:literal, )*
        }
        unknown_u8: $fallback:ident;
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[repr(u8)]
        pub enum $t {
            $( $(#[$vmeta])* $v = $n, )*
        }

        impl $t {
            /// Every status, in the order of their `u8` encoding (`ALL[i] as u8 == i`).
            pub const ALL: &'static [$t] = &[$($t::$v),*];

            /// The status encoded as `v` (`s as u8`); an unknown value reads as the first.
            #[doc(hidden)]
            pub fn from_u8(v: u8) -> Self {
                Self::ALL.get(usize::from(v)).copied().unwrap_or($t::$fallback)
            }

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

        // `from_u8` indexes `ALL`: the discriminants must be 0, 1, 2... in order.
        const _: () = {
            let mut i = 0;
            while i < $t::ALL.len() {
                assert!($t::ALL[i] as usize == i, "status discriminants must be 0, 1, 2... in order");
                i += 1;
            }
        };

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

statuses! {
    /// Where a run stands.
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
    unknown_u8: Idle;
}

impl AgentStatus {
    /// Whether the run is over.
    pub fn is_finished(self) -> bool {
        matches!(self, AgentStatus::Completed | AgentStatus::Failed | AgentStatus::Cancelled | AgentStatus::TimedOut)
    }
}

statuses! {
    /// Where one state stands in the current (or last) run.
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
    unknown_u8: Pending;
}

/// A status name that is not one of the statuses (from a store or a checkpoint).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown status {0:?}")]
pub struct UnknownStatus(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u8_encoding_and_names_round_trip_for_every_status() {
        assert_eq!(AgentStatus::ALL.len(), 7);
        for &s in AgentStatus::ALL {
            assert_eq!(AgentStatus::from_u8(s as u8), s);
            assert_eq!(s.as_str().parse::<AgentStatus>(), Ok(s));
            assert_eq!(s.to_string(), s.as_str());
        }
        assert_eq!(StateStatus::ALL.len(), 9);
        for &s in StateStatus::ALL {
            assert_eq!(StateStatus::from_u8(s as u8), s);
            assert_eq!(s.as_str().parse::<StateStatus>(), Ok(s));
        }
        assert_eq!(AgentStatus::from_u8(7), AgentStatus::Idle);
        assert_eq!(StateStatus::from_u8(200), StateStatus::Pending);
        assert!("Done".parse::<AgentStatus>().is_err());
        assert!("failed".parse::<StateStatus>().is_err(), "names are case-sensitive");
    }

    #[test]
    fn names_are_the_ones_stores_already_hold() {
        let names: Vec<&str> = AgentStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, ["Idle", "Running", "Paused", "Completed", "Failed", "Cancelled", "TimedOut"]);
        let names: Vec<&str> = StateStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            ["Pending", "Ready", "Running", "Completed", "Failed", "Blocked", "Cancelled", "Timeout", "Retrying"]
        );
    }
}
