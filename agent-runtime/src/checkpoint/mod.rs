//! Taking a run's checkpoint, and seeding a new run from one.
//!
//! Invariants:
//! - `capture` reads every position under the transition lock (see `frontier`), so it sees
//!   no transition half done; the context is read after, so it is at least as new as the
//!   positions: a state in flight runs again on restore, and what it wrote is kept.
//! - `seed` rebuilds exactly the positions `capture` read: the same tokens at the same
//!   states, the same groups with the same tokens waiting at their joins, the same
//!   counters; it spawns one branch per ready or running token.
//! - A checkpoint is checked against the program by `validate` (see its rules) before
//!   anything of the run is changed; `seed` relies on that: it allocates and spawns only
//!   what a checkpoint that passed can hold.
//! - The failure an `on_error` handler reads (`Context::last_error`) is captured as text
//!   and given back on restore as a `RestoredError` with the same message.
//! - Every checkpoint taken records the program's graph signature (shared, not copied); a
//!   checkpoint recording another is refused by `validate` before its other rules, listing
//!   the differences.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use agent_core::{
    BranchesRecord, Checkpoint, CheckpointError, GroupRecord, InputRequestRecord, LastErrorRecord, MapRecord,
    StateRecord, StateStatus, TokenRecord,
};

use crate::frontier::TRANSITIONS;
use crate::program::Program;
use crate::run::{Branches, Counts, Group, Ident, MapMeta, Position, NO_BRANCH};
use crate::run::{Run, HELD, NO_STATE};
use crate::store::InputRecord;

pub(crate) mod delta;
pub(crate) mod load;
mod validate;

/// The run's checkpoint, now.
pub(crate) fn capture(run: &Run, agent: &str) -> Checkpoint {
    let prog = &*run.program;
    let mut checkpoint = Checkpoint::new(agent, run.run_id());
    let reducers = prog.reducers.is_some();
    let (tokens, groups) = read_positions(
        run,
        || {
            checkpoint.agent_status = run.status();
            checkpoint.states = (0..prog.states.len()).map(|i| state_key(run, i).record(run, i)).collect();
            checkpoint.completed_states = run.completed_states();
            checkpoint.steps = run.states.steps();
            if reducers {
                // With the positions: a group closing folds the writes it holds into the
                // context in the transition that removes it (see `delta::capture`).
                checkpoint.set_context(&run.ctx);
            }
        },
        |_| false,
    );
    checkpoint.tokens = tokens;
    checkpoint.groups = groups;
    checkpoint.pending_inputs = pending_inputs(run);
    checkpoint.last_error = run.ctx.last_error().as_ref().map(LastErrorRecord::of);
    // A recovered run ends when the original would have (see `agent::launch`).
    checkpoint.deadline_ms = run.deadline().map(|d| d.wall_ms);
    checkpoint.graph = Some(prog.graph_record().clone());
    if !reducers {
        checkpoint.set_context(&run.ctx);
    }
    checkpoint
}

/// The run's requests for human input, as a checkpoint holds them.
pub(crate) fn pending_inputs(run: &Run) -> Vec<InputRequestRecord> {
    run.sinks.links.inputs.snapshot(run.run_id()).into_iter().map(to_checkpoint).collect()
}

/// One state's [`StateRecord`], in a form that is cheap to read and compare (no name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StateKey {
    status: u8,
    completed: u32,
    failed: u32,
    retries: u32,
    preempted: u32,
    attempts_made: u32,
    started_ms: Option<i64>,
    finished_ms: Option<i64>,
    /// Whole milliseconds waited for resources.
    resource_wait_ms: u64,
    /// What the latest attempt held (see `StateCounters::held`).
    held: u64,
    /// Errors recorded (see `StateCounters::errors`): the message is read when it changed.
    errors: u32,
    /// Attempt spans recorded (see `StateCounters::span_count`), read likewise.
    spans: u32,
}

impl StateKey {
    /// The key of a record a checkpoint holds.
    pub(crate) fn of(r: &StateRecord) -> StateKey {
        StateKey {
            status: r.status as u8,
            completed: r.completed,
            failed: r.failed,
            retries: r.retries,
            preempted: r.preempted,
            attempts_made: r.attempts_made,
            started_ms: r.started_ms,
            finished_ms: r.finished_ms,
            resource_wait_ms: r.resource_wait_ms,
            held: held_mask(r),
            errors: u32::from(r.error.is_some()),
            spans: u32::from(!r.attempt_spans.is_empty()),
        }
    }

    /// The record of state `i` of `run` with this key.
    pub(crate) fn record(&self, run: &Run, i: usize) -> StateRecord {
        StateRecord::new(
            run.program.states[i].name.to_string(),
            StateStatus::from_u8(self.status),
            self.completed,
            self.failed,
            self.retries,
            self.preempted,
            self.attempts_made,
        )
        .with_times(self.started_ms, self.finished_ms)
        .with_resource_wait(self.resource_wait_ms)
        .with_held(held_resources(run, i, self.held), gpu_ids(self.held))
        .with_error(if self.errors > 0 { run.states.error(i).map(|e| e.to_string()) } else { None })
        .with_attempt_spans(if self.spans > 0 { run.states.spans(i) } else { Vec::new() })
    }
}

/// What a record says its state's latest attempt held, as `StateCounters::held` keeps it.
fn held_mask(r: &StateRecord) -> u64 {
    if r.resources.is_none() && r.gpu_ids.is_empty() {
        return 0;
    }
    r.gpu_ids.iter().filter(|&&d| d < 63).fold(HELD, |m, &d| m | (1 << d))
}

/// The GPU devices of a `held` mask, ascending.
fn gpu_ids(held: u64) -> Vec<usize> {
    (0..63).filter(|d| held & (1 << d) != 0).collect()
}

/// What state `i` of `run` holds when it runs (its declared request, as a pool counts it),
/// described, if the `held` mask says an attempt held it.
fn held_resources(run: &Run, i: usize, held: u64) -> Option<String> {
    if held & HELD == 0 {
        return None;
    }
    let (_, request) = run.program.states[i].guarded.as_ref()?.request.as_ref()?;
    let [cpu, memory_mb, io, network, gpu] = request.amounts;
    let parts: Vec<String> =
        [("cpu", cpu, ""), ("memory", memory_mb, " MB"), ("io", io, ""), ("network", network, ""), ("gpu", gpu, "")]
            .into_iter()
            .filter(|&(_, amount, _)| amount > 0.0)
            .map(|(kind, amount, unit)| format!("{kind} {amount}{unit}"))
            .collect();
    Some(parts.join(", "))
}

/// State `i`'s counters now.
pub(crate) fn state_key(run: &Run, i: usize) -> StateKey {
    let c = &run.states[i];
    let (started_ms, finished_ms) = run.sinks.timing.as_ref().map_or((None, None), |t| t[i].times());
    StateKey {
        status: c.status.load(Relaxed),
        completed: c.completed.load(Relaxed),
        failed: c.failed.load(Relaxed),
        retries: c.retries.load(Relaxed),
        preempted: c.preempted.load(Relaxed),
        attempts_made: c.attempts_made.load(Relaxed),
        started_ms,
        finished_ms,
        resource_wait_ms: c.resource_wait.load(Relaxed) / 1_000_000,
        held: c.held.load(Relaxed),
        errors: c.errors.load(Relaxed),
        spans: c.span_count.load(Relaxed),
    }
}

/// Read the run's positions under the transition lock, calling `also` inside it (to read
/// the counters consistently with them): the tokens and groups a checkpoint holds.
///
/// `written(id)`: whether the map of that id had its items written already (a journal
/// entry leaves them out): they are then not copied.
pub(crate) fn read_positions(
    run: &Run,
    also: impl FnOnce(),
    written: impl Fn(u64) -> bool,
) -> (Vec<TokenRecord>, Vec<GroupRecord>) {
    let prog = &*run.program;
    let (root, mut top, groups) = {
        let _w = TRANSITIONS.write();
        let root = run.positions.root();
        let top: Vec<u32> = run.states.iter().map(|c| c.at_top.load(Relaxed)).collect();
        let registered: Vec<Arc<Group>> = run.positions.groups();
        let name = |s: usize| prog.states[s].name.to_string();
        let groups: Vec<(Arc<Group>, Counts, Counts, Option<_>)> = (registered.into_iter())
            .filter_map(|g| {
                let (running, waiting) = g.tokens()?;
                let branches = g.branches(name);
                Some((g, running, waiting, branches))
            })
            .collect();
        also();
        (root, top, groups)
    };
    if root != NO_STATE {
        top[root as usize] += 1;
    }
    // Parents before children: order by depth, then by when they were opened.
    let depth = |g: &Arc<Group>| std::iter::successors(g.place().0, |p| p.place().0).count();
    let mut groups = groups;
    groups.sort_by_key(|(g, _, _, _)| depth(g));
    let index: HashMap<*const Group, usize> =
        groups.iter().enumerate().map(|(i, (g, _, _, _))| (Arc::as_ptr(g), i)).collect();
    let mut running: Vec<Vec<(usize, u32)>> = groups.iter().map(|(_, r, _, _)| r.clone()).collect();
    let mut records = Vec::with_capacity(groups.len());
    for (g, _, waiting, branches) in &groups {
        let (parent, origin) = g.place();
        // The token that fanned out is the child group, not a token to run again.
        let parent = parent.and_then(|p| index.get(&Arc::as_ptr(p)).copied());
        match parent {
            Some(p) => take_one(&mut running[p], origin),
            None => top[origin] = top[origin].saturating_sub(1),
        }
        let name = |s: usize| prog.states[s].name.to_string();
        let mut record = GroupRecord::new(parent, name(origin), waiting.iter().map(|&(s, n)| (name(s), n)).collect())
            .with_width(g.width());
        if let (Some((at, writes, results)), Some(ident)) = (branches.clone(), g.ident()) {
            let map = ident.map.as_ref().map(|m| {
                MapRecord::new(
                    name(m.target as usize),
                    m.into.to_string(),
                    if written(m.id) { Vec::new() } else { m.items.to_vec() },
                    results,
                )
                .with_id(m.id)
            });
            let origin_branch = (ident.origin_branch != NO_BRANCH).then_some(ident.origin_branch);
            record = record.with_branches(BranchesRecord::new(at, origin_branch, writes, map));
        }
        records.push(record);
    }
    let mut tokens = Vec::new();
    for (s, &n) in top.iter().enumerate() {
        if n > 0 {
            tokens.push(TokenRecord::new(prog.states[s].name.to_string(), None, n));
        }
    }
    for (i, list) in running.iter().enumerate() {
        for &(s, n) in list {
            if n > 0 {
                tokens.push(TokenRecord::new(prog.states[s].name.to_string(), Some(i), n));
            }
        }
    }
    (tokens, records)
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

/// Whether the checkpoint fits `prog` (agent `agent`): see `validate` for the rules.
pub(crate) fn check(agent: &str, prog: &Program, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
    validate::validate(agent, prog, checkpoint)
}

/// Give `run` (new, not started) the checkpoint's counters and positions, and the failure
/// its `on_error` handler reads; the branches to spawn, one per ready or running token. The
/// checkpoint was `check`ed against the program, so it holds at most `MAX_TOKENS` tokens.
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
        c.resource_wait.store(record.resource_wait_ms.saturating_mul(1_000_000), Relaxed);
        c.held.store(held_mask(record), Relaxed);
        run.states.restore_error(at(&record.name), record.error.as_deref());
        run.states.restore_spans(at(&record.name), &record.attempt_spans);
        if let Some(t) = &run.sinks.timing {
            t[at(&record.name)].restore(record.started_ms, record.finished_ms);
        }
    }
    run.states.restore_completion_order(checkpoint.completed_states.iter().map(|s| at(s)));
    run.states.restore_steps(checkpoint.steps);
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
        // Checkpoints before version 3 have no width: the tokens the group holds now.
        let live = running[i].iter().map(|&(_, n)| u64::from(n)).sum::<u64>()
            + g.waiting.iter().map(|&(_, n)| u64::from(n)).sum::<u64>();
        let width = g.width.unwrap_or_else(|| u32::try_from(live).unwrap_or(u32::MAX));
        let identity = g.branches.as_ref().and_then(|b| restore_branches(prog, b));
        groups.push(Group::restore(run, parent, at(&g.origin), width, running[i].clone(), waiting, identity));
    }
    if let Some(e) = &checkpoint.last_error {
        agent_core::__private::context::set_last_error(&run.ctx, e.to_state_error());
    }
    let mut branches = Vec::new();
    for t in &checkpoint.tokens {
        let group = t.group.map(|g| groups[g].clone());
        if group.as_ref().is_some_and(|g| g.keeps_branches()) {
            continue; // its branches go on from their own places, below
        }
        for _ in 0..t.count {
            branches.push((group.clone(), at(&t.state), NO_BRANCH));
        }
    }
    for (i, g) in groups.iter().enumerate().filter(|(_, g)| g.keeps_branches()) {
        // A branch that opened a child group is that group, not a branch to run again.
        let opened: Vec<u32> = (checkpoint.groups.iter())
            .filter(|h| h.parent == Some(i))
            .filter_map(|h| h.branches.as_ref().and_then(|b| b.origin_branch))
            .collect();
        for (ord, state) in g.running_branches() {
            if !opened.contains(&ord) {
                branches.push((Some(g.clone()), state, ord));
            }
        }
    }
    branches
}

/// A group's identity and branches, from its record (validated: every state it names is
/// one of the program's).
fn restore_branches(prog: &Program, b: &BranchesRecord) -> Option<(Ident, Branches)> {
    let index = |s: &str| prog.index_of(s);
    let results = b.map.as_ref().map_or(&[][..], |m| &m.results[..]);
    let branches = Branches::restore(b, results, index)?;
    let map = match &b.map {
        Some(m) => Some(MapMeta {
            target: index(&m.target)? as u32,
            items: m.items.clone().into(),
            into: m.into.as_str().into(),
            id: m.id.unwrap_or_else(|| fastrand::u64(..)),
        }),
        None => None,
    };
    Some((Ident { origin_branch: b.origin_branch.unwrap_or(NO_BRANCH), map }, branches))
}
