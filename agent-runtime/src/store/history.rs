//! A run's history: the commits its store keeps (snapshots and the journal entries
//! between them), and its checkpoint as of any of them, for time travel (`Agent::fork`,
//! the command line's `history` and `fork`).
//!
//! Invariants:
//! - A commit is a snapshot or a journal entry; both take their `seq` from one sequence per
//!   run, so the history is the kept snapshots and the journal after the oldest of them, in
//!   `seq` order. Commits older than the oldest kept snapshot were dropped by retention and
//!   are not listed; asking for one is [`CheckpointError::NoCommit`].
//! - The checkpoint at commit `n` is the newest kept snapshot at or before `n` with the
//!   journal entries after it up to `n` applied: exactly what the run had recorded then.
//! - Reading is bounded: at most [`SNAPSHOTS`] snapshots are read; nothing is written.

use agent_core::{AgentError, AgentStatus, Checkpoint, CheckpointError, Context};

use super::{CheckpointStore, JournalEntry, Snapshot};
use crate::checkpoint::delta;
use crate::durable::store_error;

/// The most snapshots a history reads (newest first).
pub const SNAPSHOTS: usize = 256;

/// One commit of a run, as [`history`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Commit {
    /// Its place in the run's sequence: what `fork --at` names.
    pub seq: u64,
    /// When it was made, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// A whole snapshot (`true`) or a journal entry (the changes of one commit).
    pub snapshot: bool,
    /// The run's status then.
    pub status: AgentStatus,
    /// States completed by then, in the order they first completed.
    pub completed: Vec<String>,
    /// States ready or running then (they run next from this commit).
    pub running: Vec<String>,
}

fn read_failed(e: impl std::fmt::Display) -> AgentError {
    store_error(e.to_string(), Context::new())
}

/// The kept snapshots (oldest first) and the journal after the oldest.
async fn records(store: &dyn CheckpointStore, run_id: &str) -> Result<(Vec<Snapshot>, Vec<JournalEntry>), AgentError> {
    let mut snapshots = store.snapshots(run_id, SNAPSHOTS).await.map_err(read_failed)?;
    snapshots.sort_by_key(|s| s.seq);
    let journal = match snapshots.first() {
        Some(oldest) => store.journal(run_id, oldest.seq).await.map_err(read_failed)?,
        None => Vec::new(),
    };
    Ok((snapshots, journal))
}

/// Every commit of run `run_id` its store keeps, oldest first (empty for a run that never
/// committed, such as one still queued).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use agent_runtime::store::{history, MemoryStore};
/// use agent_core::{Context, StateResult};
/// use agent_runtime::Agent;
/// let store = std::sync::Arc::new(MemoryStore::new());
/// let mut agent = Agent::new("two").with_store(store.clone());
/// agent.add_state("a", |_ctx: Context| async { StateResult::next("b") });
/// agent.add_state("b", |_ctx: Context| async { StateResult::End });
/// let run = agent.run().await.unwrap();
/// let commits = history(&*store, run.run_id()).await.unwrap();
/// assert_eq!(commits.first().unwrap().running, ["a"], "the first: before anything ran");
/// assert_eq!(commits.last().unwrap().completed, ["a", "b"]);
/// # }
/// ```
///
/// # Errors
///
/// [`AgentError::Store`] when the store fails; [`AgentError::Checkpoint`] for a record that
/// cannot be read.
pub async fn history(store: &dyn CheckpointStore, run_id: &str) -> Result<Vec<Commit>, AgentError> {
    let (snapshots, journal) = records(store, run_id).await?;
    let mut commits = Vec::with_capacity(snapshots.len() + journal.len());
    let mut current: Option<Checkpoint> = None;
    let (mut s, mut j) = (snapshots.iter().peekable(), journal.iter().peekable());
    loop {
        let take_snapshot = match (s.peek(), j.peek()) {
            (None, None) => break,
            (Some(a), Some(b)) => a.seq <= b.seq,
            (Some(_), None) => true,
            (None, Some(_)) => false,
        };
        let (seq, at_ms, snapshot) = if take_snapshot {
            let snap = s.next().expect("peeked");
            // A journal entry the snapshot covers is the same commit seen twice: skip it.
            while j.peek().is_some_and(|e| e.seq <= snap.seq) {
                j.next();
            }
            current = Some(Checkpoint::from_json(&snap.data)?);
            (snap.seq, snap.taken_ms, true)
        } else {
            let entry = j.next().expect("peeked");
            let Some(before) = current.take() else { continue };
            current = Some(delta::replay(before, std::slice::from_ref(entry))?);
            (entry.seq, entry.at_ms, false)
        };
        let c = current.as_ref().expect("set above");
        commits.push(Commit {
            seq,
            at_ms,
            snapshot,
            status: c.agent_status,
            completed: c.completed_states.clone(),
            running: c.running_states().into_iter().map(str::to_owned).collect(),
        });
    }
    Ok(commits)
}

/// Run `run_id`'s checkpoint as of its commit `seq` (see the module docs).
///
/// # Errors
///
/// [`CheckpointError::NoCommit`] when the store keeps no commit `seq` of the run;
/// [`AgentError::Store`] when the store fails; [`AgentError::Checkpoint`] for a record that
/// cannot be read.
pub async fn checkpoint_at(store: &dyn CheckpointStore, run_id: &str, seq: u64) -> Result<Checkpoint, AgentError> {
    let (snapshots, journal) = records(store, run_id).await?;
    let no = |reason: String| AgentError::from(CheckpointError::NoCommit { run_id: run_id.to_owned(), seq, reason });
    let kept = || {
        let first = snapshots.first().map_or(0, |s| s.seq);
        let last = journal.last().map_or(first, |e| e.seq.max(first));
        if snapshots.is_empty() {
            "it has none".to_owned()
        } else {
            format!("those kept are {first} to {last}")
        }
    };
    let Some(base) = snapshots.iter().rev().find(|s| s.seq <= seq) else {
        return Err(no(kept()));
    };
    let exists = base.seq == seq || journal.iter().any(|e| e.seq == seq);
    if !exists {
        return Err(no(kept()));
    }
    let checkpoint = Checkpoint::from_json(&base.data)?;
    let after: Vec<JournalEntry> = journal.into_iter().filter(|e| e.seq > base.seq && e.seq <= seq).collect();
    Ok(delta::replay(checkpoint, &after)?)
}
