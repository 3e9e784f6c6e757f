//! [`Lineage`]: where a run came from, when another run made it: a fork of one of its
//! checkpoints (`Agent::fork`), or a child run a state started (subworkflows).
//!
//! Invariants:
//! - A run has at most one lineage, written once, when it is made, before it can run; it
//!   is never changed: a second one recorded for the same run is refused
//!   (`recorded_already`: a [`StoreError::Backend`] without a source, so never transient)
//!   and the first is kept. Deleting a run (`delete_run`, or retention dropping it) deletes
//!   its own lineage, not its descendants' (theirs still name it, as history does a run
//!   that was dropped).
//! - A run's descendants are listed oldest first: by `created_ms`, then `run_id` (bytewise).
//! - Stored as [`LineageKind::as_str`]; a stored kind that is not one reads as
//!   [`StoreError::Corrupt`], never as a guess; so does a negative stored `parent_seq`.

use super::StoreError;

/// How a run was made from its parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LineageKind {
    /// A fork of one of the parent's checkpoints, maybe edited: a run of its own that goes
    /// on from there; the parent is not touched.
    Fork,
    /// A child run one of the parent's states started and waits for.
    Child,
}

impl LineageKind {
    /// The name the stores keep.
    ///
    /// ```
    /// use agent_runtime::store::LineageKind;
    /// assert_eq!(LineageKind::parse(LineageKind::Fork.as_str()), Some(LineageKind::Fork));
    /// assert_eq!(LineageKind::parse("adopted"), None);
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            LineageKind::Fork => "fork",
            LineageKind::Child => "child",
        }
    }

    /// The kind named `name`, if it is one.
    pub fn parse(name: &str) -> Option<LineageKind> {
        match name {
            "fork" => Some(LineageKind::Fork),
            "child" => Some(LineageKind::Child),
            _ => None,
        }
    }
}

/// Where run `run_id` came from (see the module docs).
///
/// ```
/// use agent_runtime::store::{Lineage, LineageKind};
/// let fork = Lineage::new("run-b", "run-a", LineageKind::Fork, 1_700_000_000_000).at_seq(7);
/// assert_eq!((fork.parent_run_id.as_str(), fork.parent_seq), ("run-a", Some(7)));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lineage {
    /// The run made.
    pub run_id: String,
    /// The run it was made from.
    pub parent_run_id: String,
    /// The parent's commit (`seq`) it was made at: the checkpoint a fork started from.
    pub parent_seq: Option<u64>,
    /// The parent's state that started it, for a child run: what a picture of the parent
    /// expands into the child's (`graph RUN --expand`, the console).
    pub parent_state: Option<String>,
    /// How.
    pub kind: LineageKind,
    /// When, in milliseconds since the Unix epoch.
    pub created_ms: i64,
}

impl Lineage {
    /// `run_id` made from `parent_run_id` as `kind` at `created_ms`.
    pub fn new(
        run_id: impl Into<String>,
        parent_run_id: impl Into<String>,
        kind: LineageKind,
        created_ms: i64,
    ) -> Lineage {
        Lineage {
            run_id: run_id.into(),
            parent_run_id: parent_run_id.into(),
            parent_seq: None,
            parent_state: None,
            kind,
            created_ms,
        }
    }

    /// The same, started by the parent's state `state`.
    ///
    /// ```
    /// use agent_runtime::store::{Lineage, LineageKind};
    /// let child = Lineage::new("run-c", "run-p", LineageKind::Child, 1_700_000_000_000).in_state("summarise");
    /// assert_eq!(child.parent_state.as_deref(), Some("summarise"));
    /// ```
    #[must_use]
    pub fn in_state(mut self, state: impl Into<String>) -> Lineage {
        self.parent_state = Some(state.into());
        self
    }

    /// The same, made at the parent's commit `seq`.
    #[must_use]
    pub fn at_seq(mut self, seq: u64) -> Lineage {
        self.parent_seq = Some(seq);
        self
    }
}

/// The error of a second lineage recorded for run `run_id` in `store`: a run's lineage is
/// written once (see the module docs). Not a [`StoreError::Conflict`], which is about `seq`s.
pub(super) fn recorded_already(store: &'static str, run_id: &str) -> StoreError {
    StoreError::Backend {
        store,
        message: format!("run {run_id} has a lineage already (a run's lineage is written once)"),
        source: None,
    }
}
