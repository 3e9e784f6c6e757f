//! Journal deltas: what changed in a run since its previous commit, so that a durable
//! transition writes what it changed instead of the whole checkpoint.
//!
//! A [`Delta`] is the payload of one journal entry (JSON, versioned by [`DELTA_VERSION`]).
//! It holds, against the checkpoint of the commit before it (a snapshot or another delta):
//! - the records of the states whose counters, status or times changed (whole records,
//!   replacing the ones of the same name), and the states that completed for the first
//!   time, in the order they did;
//! - the whole frontier: the tokens ready or running and the open groups with their fan-in
//!   progress (a few records: one per state a token stands at, not one per token), the
//!   steps, the run's status, the failure an `on_error` handler reads, the deadline;
//! - the requests for human input, when they changed;
//! - the context keys set since (with their values, as a checkpoint writes them) and the
//!   keys removed.
//!
//! Invariants:
//! - A [`Frame`] is what the writer remembers of its previous commit; [`capture`] diffs the
//!   run against it and moves it on, so that applying the deltas in order to the checkpoint
//!   of the commit before the first ([`replay`]) gives exactly the checkpoint a full capture
//!   would have read at the last one (its timestamp to the millisecond).
//! - Capturing costs the number of states (a few relaxed loads each, compared in place), the
//!   frontier, and the context keys written since the previous commit: never the size of
//!   the context (see the context's change tracking) nor a name per state.
//! - Replaying never panics: an entry that is not a delta, is newer than this build, or names
//!   a state the checkpoint does not have, is [`CheckpointError::Journal`] naming its `seq`.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, UNIX_EPOCH};

use agent_core::__private::context as ctx_hooks;
use agent_core::{
    AgentStatus, Checkpoint, CheckpointError, GroupRecord, InputRequestRecord, LastErrorRecord, StateRecord,
    TokenRecord,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{pending_inputs, read_positions, state_key, StateKey};
use crate::run::Run;
use crate::store::{now_ms, JournalEntry};

/// The version of the delta format this build writes and the newest it reads.
pub(crate) const DELTA_VERSION: u32 = 1;

/// What changed since the previous commit (see the module docs).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Delta {
    /// The format's version.
    pub v: u32,
    /// When it was taken, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// The run's status.
    pub status: AgentStatus,
    /// The records of the states that changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub states: Vec<StateRecord>,
    /// States that completed for the first time, in that order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub completed: Vec<String>,
    /// Every token ready or running.
    pub tokens: Vec<TokenRecord>,
    /// Every open group.
    pub groups: Vec<GroupRecord>,
    /// States started so far.
    pub steps: u64,
    /// The requests for human input, when they changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Vec<InputRequestRecord>>,
    /// The failure an `on_error` handler reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<LastErrorRecord>,
    /// The run's deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<i64>,
    /// Context keys set, with their values as the checkpoint's context writes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<(Box<str>, Box<RawValue>)>,
    /// Context keys removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<Box<str>>,
}

/// What the writer remembers of its previous commit.
pub(crate) struct Frame {
    /// The run's status.
    pub status: AgentStatus,
    /// Each state's record, by index.
    keys: Vec<StateKey>,
    /// Whether each state is in `completed_states`.
    completed: Vec<bool>,
    /// The requests for human input.
    inputs: Vec<InputRequestRecord>,
    /// The maps written so far, by id: which branches' results are written (their items
    /// are, whole, in the first entry that had the map).
    maps: HashMap<u64, Vec<bool>>,
}

impl Frame {
    /// The frame of a checkpoint `capture` took of `run` (its states in program order).
    pub(crate) fn of(run: &Run, checkpoint: &Checkpoint) -> Frame {
        let mut completed = vec![false; run.program.states.len()];
        for name in &checkpoint.completed_states {
            if let Some(i) = run.program.index_of(name) {
                completed[i] = true;
            }
        }
        Frame {
            status: checkpoint.agent_status,
            keys: checkpoint.states.iter().map(StateKey::of).collect(),
            completed,
            inputs: checkpoint.pending_inputs.clone(),
            maps: HashMap::new(),
        }
        .with_maps(&checkpoint.groups)
    }

    /// The frame, knowing the maps of `groups` as written whole.
    fn with_maps(mut self, groups: &[GroupRecord]) -> Frame {
        for m in groups.iter().filter_map(|g| g.branches.as_ref()?.map.as_ref()) {
            if let Some(id) = m.id {
                let mut written = vec![false; m.items.len()];
                for &(ord, _) in &m.results {
                    if let Some(w) = written.get_mut(ord as usize) {
                        *w = true;
                    }
                }
                self.maps.insert(id, written);
            }
        }
        self
    }

    /// Leave out of `groups` what an earlier entry wrote of their maps (their items, and
    /// the results already written), and remember what is written now; forget maps that
    /// are over. A map's record then costs its new results, not its items and all its
    /// results, at each commit.
    fn elide_maps(&mut self, groups: &mut [GroupRecord]) {
        let mut seen = Vec::new();
        for m in groups.iter_mut().filter_map(|g| g.branches.as_mut()?.map.as_mut()) {
            let Some(id) = m.id else { continue };
            seen.push(id);
            match self.maps.get_mut(&id) {
                Some(written) => {
                    m.items = Vec::new();
                    m.elided = true;
                    m.results.retain(|&(ord, _)| match written.get_mut(ord as usize) {
                        Some(w) => !std::mem::replace(w, true),
                        None => true,
                    });
                }
                None => {
                    let mut written = vec![false; m.items.len()];
                    for &(ord, _) in &m.results {
                        if let Some(w) = written.get_mut(ord as usize) {
                            *w = true;
                        }
                    }
                    self.maps.insert(id, written);
                }
            }
        }
        self.maps.retain(|id, _| seen.contains(id));
    }
}

/// What changed in `run` since `frame`; `frame` becomes the run now. Context keys written
/// since the last commit are taken from the context (it tracks them from the run's first
/// commit on). `Err` names a context value that could not be encoded.
pub(crate) fn capture(run: &Run, frame: &mut Frame) -> Result<Delta, String> {
    let mut changed = Vec::new();
    // Keys with a reducer, read with the positions: a group closing folds its branches'
    // writes into them in the transition that removes the group, so read apart, a restore
    // could find both the writes held and folded in, and fold them twice.
    let mut reduced = Ok(Vec::new());
    let mut states = Vec::new();
    let mut first: Vec<(u32, usize)> = Vec::new();
    let mut status = AgentStatus::Idle;
    let mut steps = 0;
    let (tokens, mut groups) = read_positions(
        run,
        || {
            // Taken before anything is read: a key written from now on is in the next delta.
            changed = ctx_hooks::take_changes(&run.ctx);
            if run.program.reducers.is_some() {
                let keys: Vec<Box<str>> =
                    (changed.iter()).filter(|k| ctx_hooks::has_reducer(&run.ctx, k)).cloned().collect();
                changed.retain(|k| !ctx_hooks::has_reducer(&run.ctx, k));
                reduced = ctx_hooks::encode_keys(&run.ctx, &keys);
            }
            status = run.status();
            for (i, known) in frame.keys.iter_mut().enumerate() {
                let key = state_key(run, i);
                if key != *known {
                    *known = key;
                    states.push(key.record(run, i));
                }
                if !frame.completed[i] {
                    let seq = run.states[i].first_completed.load(std::sync::atomic::Ordering::Relaxed);
                    if seq != 0 {
                        frame.completed[i] = true;
                        first.push((seq, i));
                    }
                }
            }
            steps = run.states.steps();
        },
        |id| frame.maps.contains_key(&id),
    );
    first.sort_unstable();
    frame.elide_maps(&mut groups);
    let inputs = pending_inputs(run);
    let inputs = (inputs != frame.inputs).then(|| {
        frame.inputs.clone_from(&inputs);
        inputs
    });
    frame.status = status;
    let mut set = Vec::new();
    let mut removed = Vec::new();
    let mut encoded = reduced.map_err(|e| e.to_string())?;
    encoded.extend(ctx_hooks::encode_keys(&run.ctx, &changed).map_err(|e| e.to_string())?);
    for (key, value) in encoded {
        match value {
            Some(v) => set.push((key, v)),
            None => removed.push(key),
        }
    }
    Ok(Delta {
        v: DELTA_VERSION,
        at_ms: now_ms(),
        status,
        states,
        completed: first.into_iter().map(|(_, i)| run.program.states[i].name.to_string()).collect(),
        tokens,
        groups,
        steps,
        inputs,
        last_error: run.ctx.last_error().as_ref().map(LastErrorRecord::of),
        deadline_ms: run.deadline().map(|d| d.wall_ms),
        set,
        removed,
    })
}

/// Give every map of `groups` (a delta's) that an earlier entry wrote its items and its
/// results from `before` (the groups of the commit before); `Err` names one whose earlier
/// record is missing.
fn resolve_maps(before: &[GroupRecord], groups: &mut [GroupRecord]) -> Result<(), String> {
    for m in groups.iter_mut().filter_map(|g| g.branches.as_mut()?.map.as_mut()) {
        if !m.elided {
            continue;
        }
        let earlier = (before.iter())
            .filter_map(|g| g.branches.as_ref()?.map.as_ref())
            .find(|e| e.id.is_some() && e.id == m.id)
            .ok_or_else(|| format!("map {:?} refers to an earlier record that is not there", m.id))?;
        m.items = earlier.items.clone();
        let mut results: BTreeMap<u32, serde_json::Value> = earlier.results.iter().cloned().collect();
        results.extend(std::mem::take(&mut m.results));
        m.results = results.into_iter().collect();
        m.elided = false;
    }
    Ok(())
}

/// `checkpoint` with the deltas of `entries` (ascending `seq`) applied in order: the
/// checkpoint of the last one's commit.
///
/// # Errors
///
/// [`CheckpointError::Journal`] for an entry that cannot be applied (see the module docs);
/// [`CheckpointError::Json`] when the checkpoint's own context is not a JSON object.
pub(crate) fn replay(mut checkpoint: Checkpoint, entries: &[JournalEntry]) -> Result<Checkpoint, CheckpointError> {
    if entries.is_empty() {
        return Ok(checkpoint);
    }
    let index: HashMap<String, usize> =
        checkpoint.states.iter().enumerate().map(|(i, s)| (s.name.clone(), i)).collect();
    // The last value of every key changed (`None`: removed), merged into the context once.
    let mut edits: BTreeMap<Box<str>, Option<Box<RawValue>>> = BTreeMap::new();
    for entry in entries {
        let bad = |reason: String| CheckpointError::Journal { seq: entry.seq, reason };
        let delta: Delta = serde_json::from_str(&entry.payload).map_err(|e| bad(format!("not a delta: {e}")))?;
        if delta.v == 0 || delta.v > DELTA_VERSION {
            return Err(bad(format!("delta version {} (this build reads 1 to {DELTA_VERSION})", delta.v)));
        }
        for record in delta.states {
            let Some(&i) = index.get(&record.name) else {
                return Err(bad(format!("a record of state {:?}, which the checkpoint does not have", record.name)));
            };
            checkpoint.states[i] = record;
        }
        for name in delta.completed {
            if !index.contains_key(&name) {
                return Err(bad(format!("state {name:?} completed, which the checkpoint does not have")));
            }
            checkpoint.completed_states.push(name);
        }
        let ms = u64::try_from(delta.at_ms).unwrap_or(0);
        checkpoint.timestamp = UNIX_EPOCH + Duration::from_millis(ms);
        checkpoint.agent_status = delta.status;
        checkpoint.tokens = delta.tokens;
        let mut groups = delta.groups;
        resolve_maps(&checkpoint.groups, &mut groups).map_err(bad)?;
        checkpoint.groups = groups;
        checkpoint.steps = delta.steps;
        if let Some(inputs) = delta.inputs {
            checkpoint.pending_inputs = inputs;
        }
        checkpoint.last_error = delta.last_error;
        checkpoint.deadline_ms = delta.deadline_ms;
        for (key, value) in delta.set {
            edits.insert(key, Some(value));
        }
        for key in delta.removed {
            edits.insert(key, None);
        }
    }
    if !edits.is_empty() {
        let mut context: BTreeMap<Box<str>, Box<RawValue>> = serde_json::from_str(checkpoint.context.get())?;
        for (key, value) in edits {
            match value {
                Some(v) => context.insert(key, v),
                None => context.remove(&key),
            };
        }
        checkpoint.context = serde_json::value::to_raw_value(&context)?;
    }
    Ok(checkpoint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_core::{BranchAt, BranchesRecord, MapRecord};
    use serde_json::json;

    fn map_group(id: u64, results: &[u32]) -> GroupRecord {
        let items = (0..4).map(|i| json!(i * 10)).collect();
        let results = results.iter().map(|&o| (o, json!(o * 100))).collect();
        let map = MapRecord::new("work".into(), "results".into(), items, results).with_id(id);
        let at = vec![(4, BranchAt::Running("work".into()))];
        GroupRecord::new(None, "split".into(), Vec::new()).with_width(4).with_branches(BranchesRecord::new(
            at,
            None,
            Vec::new(),
            Some(map),
        ))
    }

    /// A map's items are written once and each result once; replaying the entries gives
    /// the whole record back, and an entry whose earlier record is missing is refused.
    #[test]
    fn map_records_are_written_once_and_replay_whole() {
        let first = vec![map_group(7, &[1])];
        let mut frame = Frame {
            status: AgentStatus::Running,
            keys: Vec::new(),
            completed: Vec::new(),
            inputs: Vec::new(),
            maps: HashMap::new(),
        }
        .with_maps(&first);
        let mut next = vec![map_group(7, &[1, 3])];
        frame.elide_maps(&mut next);
        let m = next[0].branches.as_ref().unwrap().map.as_ref().unwrap();
        assert!(m.elided && m.items.is_empty());
        assert_eq!(m.results, vec![(3, json!(300))], "only the new result");
        let mut again = vec![map_group(7, &[1, 3])];
        frame.elide_maps(&mut again);
        assert!(again[0].branches.as_ref().unwrap().map.as_ref().unwrap().results.is_empty());

        resolve_maps(&first, &mut next).unwrap();
        assert_eq!(next, vec![map_group(7, &[1, 3])]);
        let mut orphan = vec![map_group(8, &[])];
        orphan[0].branches.as_mut().unwrap().map.as_mut().unwrap().elided = true;
        assert!(resolve_maps(&first, &mut orphan).unwrap_err().contains("earlier record"));
        // A map that closed is forgotten: if it came back, it would be written whole.
        frame.elide_maps(&mut []);
        assert!(frame.maps.is_empty());
    }
}
