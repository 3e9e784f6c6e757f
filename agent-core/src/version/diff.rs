//! What changed between two graph signatures.
//!
//! Invariants:
//! - `diff(old, new)` is empty exactly when `old == new`: every field of a signature is
//!   compared (a property test checks this on random graphs).
//! - Changes come in a fixed order: the start, states removed, states added, then per kept
//!   state (in name order) its edges, computed targets, `on_error`, `join`, retries and
//!   dependencies. A renamed state is one removed and one added: a signature cannot tell a
//!   rename from a removal, and both are reported.
//! - The changes of a removed or added state are not listed: it is reported once.

use std::fmt;

use super::{DependencySignature, GraphSignature, StateSignature};

/// One difference between two graph signatures ([`GraphSignature::diff`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GraphChange {
    /// Runs start at another state.
    StartChanged {
        /// The start before.
        old: String,
        /// The start now.
        new: String,
    },
    /// A state is gone (removed, or renamed: then a state is added too).
    StateRemoved {
        /// Its name.
        state: String,
    },
    /// A state is new (added, or the new name of a renamed one).
    StateAdded {
        /// Its name.
        state: String,
    },
    /// A state's known edges changed.
    EdgesChanged {
        /// The state.
        state: String,
        /// Targets it goes to now and did not before.
        added: Vec<String>,
        /// Targets it went to before and does not now.
        removed: Vec<String>,
    },
    /// A state may now go to targets computed at run time, or no longer may.
    ComputedTargetsChanged {
        /// The state.
        state: String,
        /// Whether it may now.
        computed: bool,
    },
    /// Where a state goes once its retries are spent changed.
    OnErrorChanged {
        /// The state.
        state: String,
        /// The handler before.
        old: Option<String>,
        /// The handler now.
        new: Option<String>,
    },
    /// A state became a join, or stopped being one.
    JoinChanged {
        /// The state.
        state: String,
        /// Whether it is a join now.
        join: bool,
    },
    /// A state's retry budget changed.
    RetriesChanged {
        /// The state.
        state: String,
        /// `max_retries` before.
        old: u32,
        /// `max_retries` now.
        new: u32,
    },
    /// A state has a dependency it did not have (a changed type or lifecycle is one
    /// removed and one added).
    DependencyAdded {
        /// The dependent state.
        state: String,
        /// The new dependency.
        dependency: DependencySignature,
    },
    /// A state lost a dependency.
    DependencyRemoved {
        /// The dependent state.
        state: String,
        /// The dependency it had.
        dependency: DependencySignature,
    },
}

impl fmt::Display for GraphChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let handler = |h: &Option<String>| h.as_ref().map_or_else(|| "none".to_owned(), |h| format!("`{h}`"));
        match self {
            GraphChange::StartChanged { old, new } => write!(f, "the start changed from `{old}` to `{new}`"),
            GraphChange::StateRemoved { state } => write!(f, "state `{state}` was removed"),
            GraphChange::StateAdded { state } => write!(f, "state `{state}` was added"),
            GraphChange::EdgesChanged { state, added, removed } => {
                let list = |names: &[String]| names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
                write!(f, "state `{state}`")?;
                if !added.is_empty() {
                    write!(f, " now goes to {}", list(added))?;
                }
                if !added.is_empty() && !removed.is_empty() {
                    write!(f, " and")?;
                }
                if !removed.is_empty() {
                    write!(f, " no longer goes to {}", list(removed))?;
                }
                Ok(())
            }
            GraphChange::ComputedTargetsChanged { state, computed: true } => {
                write!(f, "state `{state}` now has targets computed at run time")
            }
            GraphChange::ComputedTargetsChanged { state, computed: false } => {
                write!(f, "state `{state}` no longer has targets computed at run time")
            }
            GraphChange::OnErrorChanged { state, old, new } => {
                write!(f, "state `{state}`: on_error changed from {} to {}", handler(old), handler(new))
            }
            GraphChange::JoinChanged { state, join: true } => write!(f, "state `{state}` is now a join"),
            GraphChange::JoinChanged { state, join: false } => write!(f, "state `{state}` is no longer a join"),
            GraphChange::RetriesChanged { state, old, new } => {
                write!(f, "state `{state}`: max_retries changed from {old} to {new}")
            }
            GraphChange::DependencyAdded { state, dependency } => {
                write!(f, "state `{state}` now depends on {dependency}")
            }
            GraphChange::DependencyRemoved { state, dependency } => {
                write!(f, "state `{state}` no longer depends on {dependency}")
            }
        }
    }
}

pub(super) fn diff(old: &GraphSignature, new: &GraphSignature) -> Vec<GraphChange> {
    let mut out = Vec::new();
    if old.start != new.start {
        out.push(GraphChange::StartChanged { old: old.start.clone(), new: new.start.clone() });
    }
    for name in old.states.keys().filter(|n| !new.states.contains_key(*n)) {
        out.push(GraphChange::StateRemoved { state: name.clone() });
    }
    for name in new.states.keys().filter(|n| !old.states.contains_key(*n)) {
        out.push(GraphChange::StateAdded { state: name.clone() });
    }
    for (name, a) in &old.states {
        if let Some(b) = new.states.get(name) {
            state(name, a, b, &mut out);
        }
    }
    out
}

/// The changes of state `name` from `a` to `b`.
fn state(name: &str, a: &StateSignature, b: &StateSignature, out: &mut Vec<GraphChange>) {
    let state = || name.to_owned();
    if a.edges != b.edges {
        out.push(GraphChange::EdgesChanged {
            state: state(),
            added: b.edges.difference(&a.edges).cloned().collect(),
            removed: a.edges.difference(&b.edges).cloned().collect(),
        });
    }
    if a.computed_targets != b.computed_targets {
        out.push(GraphChange::ComputedTargetsChanged { state: state(), computed: b.computed_targets });
    }
    if a.on_error != b.on_error {
        out.push(GraphChange::OnErrorChanged { state: state(), old: a.on_error.clone(), new: b.on_error.clone() });
    }
    if a.join != b.join {
        out.push(GraphChange::JoinChanged { state: state(), join: b.join });
    }
    if a.max_retries != b.max_retries {
        out.push(GraphChange::RetriesChanged { state: state(), old: a.max_retries, new: b.max_retries });
    }
    for d in a.dependencies.difference(&b.dependencies) {
        out.push(GraphChange::DependencyRemoved { state: state(), dependency: d.clone() });
    }
    for d in b.dependencies.difference(&a.dependencies) {
        out.push(GraphChange::DependencyAdded { state: state(), dependency: d.clone() });
    }
}
