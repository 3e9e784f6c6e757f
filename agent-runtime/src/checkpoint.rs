//! Taking a run's checkpoint, and seeding a new run from one.
//!
//! Invariants:
//! - `capture` reads every position under the transition lock (see `frontier`), so it sees
//!   no transition half done; the context is read after, so it is at least as new as the
//!   positions: a state in flight runs again on restore, and what it wrote is kept.
//! - `seed` rebuilds exactly the positions `capture` read: the same tokens at the same
//!   states, the same groups with the same tokens waiting at their joins, the same
//!   counters; it spawns one branch per ready or running token.
//! - A checkpoint that names a state the agent does not have is refused before anything of
//!   the run is changed.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, PoisonError};

use agent_core::{Checkpoint, CheckpointError, GroupRecord, InputRequestRecord, StateRecord, StateStatus, TokenRecord};

use crate::fanin::{Counts, Group, Position};
use crate::frontier::TRANSITIONS;
use crate::program::Program;
use crate::run::{Run, NO_STATE};
use crate::store::InputRecord;

/// The run's checkpoint, now.
pub(crate) fn capture(run: &Run, agent: &str) -> Checkpoint {
    let prog = &*run.program;
    let mut checkpoint = Checkpoint::new(agent, run.run_id());
    let (root, mut top, groups) = {
        let _w = TRANSITIONS.write();
        let root = run.root_slot.load(Relaxed);
        let top: Vec<u32> = run.states.iter().map(|c| c.at_top.load(Relaxed)).collect();
        let registered: Vec<Arc<Group>> = run.groups.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let groups: Vec<(Arc<Group>, Counts, Counts)> =
            registered.into_iter().filter_map(|g| g.tokens().map(|(running, waiting)| (g, running, waiting))).collect();
        checkpoint.agent_status = run.status();
        checkpoint.states = (prog.states.iter().zip(run.states.iter()).enumerate())
            .map(|(i, (s, c))| {
                let (started, finished) = run.timing.as_ref().map_or((None, None), |t| t[i].times());
                StateRecord::new(
                    s.name.to_string(),
                    StateStatus::from_u8(c.status.load(Relaxed)),
                    c.completed.load(Relaxed),
                    c.failed.load(Relaxed),
                    c.retries.load(Relaxed),
                    c.preempted.load(Relaxed),
                    c.attempts_made.load(Relaxed),
                )
                .with_times(started, finished)
            })
            .collect();
        checkpoint.completed_states = run.completed_states();
        checkpoint.steps = run.steps.load(Relaxed);
        (root, top, groups)
    };
    if root != NO_STATE {
        top[root as usize] += 1;
    }
    // Parents before children: order by depth, then by when they were opened.
    let depth = |g: &Arc<Group>| std::iter::successors(g.place().0, |p| p.place().0).count();
    let mut groups = groups;
    groups.sort_by_key(|(g, _, _)| depth(g));
    let index: HashMap<*const Group, usize> =
        groups.iter().enumerate().map(|(i, (g, _, _))| (Arc::as_ptr(g), i)).collect();
    let mut running: Vec<Vec<(usize, u32)>> = groups.iter().map(|(_, r, _)| r.clone()).collect();
    for (g, _, waiting) in &groups {
        let (parent, origin) = g.place();
        // The token that fanned out is the child group, not a token to run again.
        let parent = parent.and_then(|p| index.get(&Arc::as_ptr(p)).copied());
        match parent {
            Some(p) => take_one(&mut running[p], origin),
            None => top[origin] = top[origin].saturating_sub(1),
        }
        let name = |s: usize| prog.states[s].name.to_string();
        checkpoint.groups.push(GroupRecord::new(
            parent,
            name(origin),
            waiting.iter().map(|&(s, n)| (name(s), n)).collect(),
        ));
    }
    for (s, &n) in top.iter().enumerate() {
        if n > 0 {
            checkpoint.tokens.push(TokenRecord::new(prog.states[s].name.to_string(), None, n));
        }
    }
    for (i, list) in running.iter().enumerate() {
        for &(s, n) in list {
            if n > 0 {
                checkpoint.tokens.push(TokenRecord::new(prog.states[s].name.to_string(), Some(i), n));
            }
        }
    }
    checkpoint.pending_inputs = run.links.inputs.snapshot(run.run_id()).into_iter().map(to_checkpoint).collect();
    checkpoint.set_context(&run.ctx);
    checkpoint
}

fn to_checkpoint(r: InputRecord) -> InputRequestRecord {
    r.request
}

/// The checkpoint's requests for human input, as the input hub keeps them.
pub(crate) fn inputs_of(checkpoint: &Checkpoint) -> Vec<InputRecord> {
    (checkpoint.pending_inputs.iter())
        .map(|r| InputRecord { run_id: checkpoint.run_id.clone(), request: r.clone() })
        .collect()
}

fn take_one(list: &mut [(usize, u32)], state: usize) {
    if let Some((_, n)) = list.iter_mut().find(|(s, _)| *s == state) {
        *n = n.saturating_sub(1);
    }
}

/// Whether the checkpoint fits `prog` (agent `agent`): every state it names exists.
pub(crate) fn check(agent: &str, prog: &Program, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
    let mismatch = |reason: String| CheckpointError::Mismatch { agent: agent.to_owned(), reason };
    let known = |s: &str| prog.index_of(s).is_some();
    let names = (checkpoint.states.iter().map(|s| &s.name))
        .chain(checkpoint.tokens.iter().map(|t| &t.state))
        .chain(checkpoint.completed_states.iter())
        .chain(
            checkpoint.groups.iter().flat_map(|g| std::iter::once(&g.origin).chain(g.waiting.iter().map(|(s, _)| s))),
        );
    for name in names {
        if !known(name) {
            return Err(mismatch(format!("it names state {name:?}, which this agent does not have")));
        }
    }
    Ok(())
}

/// Give `run` (new, not started) the checkpoint's counters and positions; the branches to
/// spawn, one per ready or running token. The checkpoint was `check`ed against the program.
pub(crate) fn seed(run: &Run, checkpoint: &Checkpoint) -> Vec<Position> {
    let prog = &*run.program;
    let at = |name: &str| prog.index_of(name).unwrap_or(0);
    for record in &checkpoint.states {
        let c = &run.states[at(&record.name)];
        c.status.store(record.status as u8, Relaxed);
        c.completed.store(record.completed, Relaxed);
        c.failed.store(record.failed, Relaxed);
        c.retries.store(record.retries, Relaxed);
        c.preempted.store(record.preempted, Relaxed);
        c.resumed_attempts.store(record.attempts_made, Relaxed);
        if let Some(t) = &run.timing {
            t[at(&record.name)].restore(record.started_ms, record.finished_ms);
        }
    }
    run.restore_completion_order(checkpoint.completed_states.iter().map(|s| at(s)));
    run.steps.store(checkpoint.steps, Relaxed);
    // Each group counts, as running at its origin in its parent, the token that fanned out.
    let mut running: Vec<Vec<(usize, u32)>> = vec![Vec::new(); checkpoint.groups.len()];
    for t in &checkpoint.tokens {
        match t.group {
            Some(g) => running[g].push((at(&t.state), t.count)),
            None => run.top_add(at(&t.state), t.count),
        }
    }
    for g in &checkpoint.groups {
        match g.parent {
            Some(p) => running[p].push((at(&g.origin), 1)),
            None => run.top_add(at(&g.origin), 1),
        }
    }
    let mut groups: Vec<Arc<Group>> = Vec::with_capacity(checkpoint.groups.len());
    for (i, g) in checkpoint.groups.iter().enumerate() {
        let parent = g.parent.map(|p| groups[p].clone());
        let waiting = g.waiting.iter().map(|(s, n)| (at(s), *n));
        groups.push(Group::restore(run, parent, at(&g.origin), running[i].clone(), waiting));
    }
    let mut branches = Vec::new();
    for t in &checkpoint.tokens {
        let group = t.group.map(|g| groups[g].clone());
        for _ in 0..t.count {
            branches.push((group.clone(), at(&t.state)));
        }
    }
    branches
}
