//! A workflow's graph signature: what a run's meaning depends on, so that a run recorded
//! under one definition is never continued under a different one.
//!
//! A [`GraphSignature`] is plain data: the start, and per state its edges and the options
//! that change what a run does next. The runtime computes it from a compiled program
//! (`Agent::graph_signature`), records it in every checkpoint, and refuses to restore or
//! recover a checkpoint whose signature differs from the agent's, listing the differences
//! ([`GraphSignature::diff`], [`GraphChange`]). [`GraphSignature::hash`] names it in one
//! short value a worker can compare with a store's run rows. A checkpoint carries it as a
//! [`GraphRecord`], made once per program and shared.
//!
//! What is in it, and why. An option is in the signature when a recorded run read under a
//! changed value would go on *wrongly*: its recorded positions or counters mean something
//! else, or a state's outcome leads somewhere else.
//! - The states, by name, and the start.
//! - Each state's transition edges where they are known: the literal targets `#[workflow]`
//!   found in its body and the targets a builder state declared (`.targets(...)`), and
//!   whether it may also go to targets computed at run time (`computed_targets`). Whether
//!   a graph is fully known decides how its fan-ins join.
//! - `on_error`: where a failure goes.
//! - `join`: when a fan-in runs.
//! - Dependencies: the state depended on, the type and the lifecycle (which completions
//!   count, and for how long).
//! - The retry budget (`max_retries`, the agent's default policy included): how many times
//!   a state's body may run, and what a recorded attempt count means.
//!
//! What is not, and why: options that change when or how fast a state runs, never where a
//! run goes: resources, priority, preemption, rate limits, tags, the blocking pool,
//! `max_concurrent`; retry delays and jitter; the per-attempt `timeout` (its presence
//! too: it bounds how long an attempt may take, as the machine's speed does, and is tuned
//! as often as resources are); a dependency's condition, expiry, interval and timeout
//! (tuning of a gate whose meaning is its type and lifecycle; a condition is code, as state
//! bodies are, which no signature can see); `max_steps`, a safety limit. State bodies are
//! code: changing one is the user's responsibility, as it is in every durable-execution
//! system.
//!
//! Invariants:
//! - The signature is canonical by construction: states, edges and dependencies are kept
//!   in ordered sets, so two signatures of one graph are equal whatever order the states
//!   were added in, and a signature read from a checkpoint is as canonical as one computed.
//! - [`GraphSignature::hash`] is SHA-256 over a canonical binary encoding that begins with
//!   a versioned prefix (see `encode`); equal signatures hash equal across processes,
//!   builds and platforms, and different ones differ (the encoding is injective). Any
//!   change to the encoding changes the prefix: a golden test pins it.
//! - [`GraphSignature::diff`] is empty exactly when the two signatures are equal.

mod diff;
mod encode;
mod record;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::options::{DependencyLifecycle, DependencyType};

pub use diff::GraphChange;
pub use record::GraphRecord;

/// A workflow's graph as far as a run's meaning depends on it: its start, and each state's
/// edges and meaning-changing options (see the module docs for what is in and why).
///
/// ```
/// use agent_core::{GraphSignature, StateSignature};
///
/// let mut old = GraphSignature::new("fetch");
/// let mut fetch = StateSignature::default();
/// fetch.edges.insert("parse".into());
/// fetch.computed_targets = false;
/// old.states.insert("fetch".into(), fetch);
/// old.states.insert("parse".into(), StateSignature::default());
///
/// let mut new = old.clone();
/// new.states.remove("parse");
/// assert_ne!(old.hash(), new.hash());
/// let changes = GraphSignature::diff(&old, &new);
/// assert_eq!(changes.len(), 1);
/// assert_eq!(changes[0].to_string(), "state `parse` was removed");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct GraphSignature {
    /// The state a run starts at.
    pub start: String,
    /// Every state, by name.
    pub states: BTreeMap<String, StateSignature>,
}

/// One state in a [`GraphSignature`].
///
/// Written to JSON without the fields that hold their default (no edges, computed
/// targets, no `on_error`, no join, no retries, no dependencies), and read with them: every
/// checkpoint carries its graph's signature, so it is kept short.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct StateSignature {
    /// The states it is known to go to: literal targets and declared targets that name a
    /// state of the workflow.
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub edges: BTreeSet<String>,
    /// Whether it may also go to targets computed at run time (a builder state that
    /// declared none, or a `#[state]` whose body computes one).
    #[serde(skip_serializing_if = "is_true")]
    pub computed_targets: bool,
    /// Where it goes once its retries are spent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_error: Option<String>,
    /// Whether it is a fan-in that waits for every branch (`join`).
    #[serde(skip_serializing_if = "is_false")]
    pub join: bool,
    /// Retries after the first attempt (0 without a retry policy).
    #[serde(skip_serializing_if = "is_zero")]
    pub max_retries: u32,
    /// What must hold before it starts.
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub dependencies: BTreeSet<DependencySignature>,
}

fn is_true(b: &bool) -> bool {
    *b
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The default: a state with no known edges, whose targets are computed at run time, and
/// no other option (a builder state as `add_state` makes it).
impl Default for StateSignature {
    fn default() -> Self {
        StateSignature {
            edges: BTreeSet::new(),
            computed_targets: true,
            on_error: None,
            join: false,
            max_retries: 0,
            dependencies: BTreeSet::new(),
        }
    }
}

/// A dependency in a [`StateSignature`]: on which state, of which type, for how long.
///
/// Ordered by state, then type and lifecycle by name, so the order never depends on how
/// the enums are declared.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DependencySignature {
    /// The state depended on.
    pub state: String,
    /// What the dependency means.
    #[serde(with = "kind")]
    pub kind: DependencyType,
    /// How long a completion counts.
    #[serde(with = "lifecycle")]
    pub lifecycle: DependencyLifecycle,
}

impl DependencySignature {
    /// A dependency on `state` of type `kind` with lifecycle `lifecycle`.
    pub fn new(state: impl Into<String>, kind: DependencyType, lifecycle: DependencyLifecycle) -> Self {
        DependencySignature { state: state.into(), kind, lifecycle }
    }

    fn key(&self) -> (&str, &'static str, &'static str) {
        (&self.state, kind_name(self.kind), lifecycle_name(self.lifecycle))
    }
}

impl Ord for DependencySignature {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

impl PartialOrd for DependencySignature {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for DependencySignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` ({}, {})", self.state, kind_name(self.kind), lifecycle_name(self.lifecycle))
    }
}

impl GraphSignature {
    /// A signature starting at `start`, with no states yet.
    pub fn new(start: impl Into<String>) -> Self {
        GraphSignature { start: start.into(), states: BTreeMap::new() }
    }

    /// A stable digest of the signature: SHA-256 of its canonical encoding. Equal
    /// signatures hash equal in every process, build and platform; a change of the
    /// encoding changes its versioned prefix, hence every hash.
    ///
    /// ```
    /// use agent_core::GraphSignature;
    /// let hash = GraphSignature::new("a").hash();
    /// assert_eq!(hash.to_string().len(), 64);
    /// assert_eq!(hash, GraphSignature::new("a").hash());
    /// assert_ne!(hash, GraphSignature::new("b").hash());
    /// ```
    pub fn hash(&self) -> GraphHash {
        encode::hash(self)
    }

    /// What changed from `old` to `new`: the start, states removed and added (a renamed
    /// state is both), then each kept state's edges and options, in the order of their
    /// names. Empty exactly when `old == new`.
    pub fn diff(old: &GraphSignature, new: &GraphSignature) -> Vec<GraphChange> {
        diff::diff(old, new)
    }
}

/// The SHA-256 digest of a [`GraphSignature`] ([`GraphSignature::hash`]). Displayed as 64
/// lowercase hex digits; a precision shortens it (`{:.12}`).
///
/// ```
/// use agent_core::GraphSignature;
/// let hash = GraphSignature::new("a").hash();
/// assert_eq!(format!("{hash:.12}").len(), 12);
/// assert!(hash.to_string().starts_with(&format!("{hash:.12}")));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GraphHash([u8; 32]);

impl GraphHash {
    /// The digest's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for GraphHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = [0u8; 64];
        for (i, b) in self.0.iter().enumerate() {
            text[2 * i] = HEX[usize::from(b >> 4)];
            text[2 * i + 1] = HEX[usize::from(b & 0xf)];
        }
        // Hex digits are ASCII.
        f.pad(std::str::from_utf8(&text).unwrap_or_default())
    }
}

impl fmt::Debug for GraphHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GraphHash({self})")
    }
}

/// A dependency type's name, as signatures write and order it.
fn kind_name(k: DependencyType) -> &'static str {
    match k {
        DependencyType::Required => "Required",
        DependencyType::Optional => "Optional",
        DependencyType::Parallel => "Parallel",
        DependencyType::Sequential => "Sequential",
    }
}

/// A dependency lifecycle's name, as signatures write and order it.
fn lifecycle_name(l: DependencyLifecycle) -> &'static str {
    match l {
        DependencyLifecycle::Session => "Session",
        DependencyLifecycle::Once => "Once",
        DependencyLifecycle::Always => "Always",
        DependencyLifecycle::Temporary => "Temporary",
        DependencyLifecycle::Periodic => "Periodic",
    }
}

/// `DependencyType` as its name.
mod kind {
    use super::*;

    const ALL: [DependencyType; 4] =
        [DependencyType::Required, DependencyType::Optional, DependencyType::Parallel, DependencyType::Sequential];

    pub fn serialize<S: serde::Serializer>(k: &DependencyType, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(kind_name(*k))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<DependencyType, D::Error> {
        let name = String::deserialize(d)?;
        (ALL.into_iter().find(|k| kind_name(*k) == name))
            .ok_or_else(|| serde::de::Error::custom(format!("unknown dependency type {name:?}")))
    }
}

/// `DependencyLifecycle` as its name.
mod lifecycle {
    use super::*;

    const ALL: [DependencyLifecycle; 5] = [
        DependencyLifecycle::Session,
        DependencyLifecycle::Once,
        DependencyLifecycle::Always,
        DependencyLifecycle::Temporary,
        DependencyLifecycle::Periodic,
    ];

    pub fn serialize<S: serde::Serializer>(l: &DependencyLifecycle, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(lifecycle_name(*l))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<DependencyLifecycle, D::Error> {
        let name = String::deserialize(d)?;
        (ALL.into_iter().find(|l| lifecycle_name(*l) == name))
            .ok_or_else(|| serde::de::Error::custom(format!("unknown dependency lifecycle {name:?}")))
    }
}

#[cfg(test)]
mod tests;
