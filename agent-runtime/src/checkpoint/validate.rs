//! Whether a checkpoint may be restored into an agent: every rule is checked before
//! anything of the run is changed, and a checkpoint that breaks one is refused with a typed
//! [`CheckpointError`] naming the record and the bad value.
//!
//! A checkpoint may come from a file, a store row or another process; it is read as
//! untrusted data. The rules say what a run of this program could have written. Each is
//! either *invalid* (refused) or *merely unusual* (accepted, because a run can write it or
//! restoring it does no harm):
//!
//! Refused with [`CheckpointError::TooNew`]:
//! - a `schema_version` above [`CHECKPOINT_VERSION`].
//!
//! Refused with [`CheckpointError::GraphChanged`], before any rule below (a changed graph
//! explains a state it does not have better than the rule naming that state would):
//! - a recorded graph signature other than the program's, whatever else differs or not
//!   (see `version`); a checkpoint that records none (written before version 4) is not
//!   compared, and its other rules still apply.
//!
//! Refused with [`CheckpointError::Mismatch`] (the checkpoint may be sound, but it does not
//! fit this agent's definition: another agent's, or one whose definition changed since):
//! - an `agent_name` other than the agent's;
//! - any name that is not a state of the agent: state records, tokens, completed states,
//!   group origins, waiting states, the state of a request for input, the state of the
//!   last error;
//! - `attempts_made` above the state's retry budget (`max_retries`, 0 without a retry
//!   policy); a last error whose `attempts` exceed that budget plus one;
//! - when every transition of the agent is known (`#[workflow]` states with literal targets,
//!   or declared targets): a group holding a token, a waiting state or a child group at a
//!   state its origin cannot reach (so its origin could not have fanned out there);
//! - when every transition is known: tokens waiting at a state that nothing running or
//!   waiting in their group, or in a group enclosing it, can reach (the fan-in releases them
//!   in the step that makes them releasable, under the lock a checkpoint reads the group
//!   under; a state an enclosing group may still come to is held back, see `run::groups`);
//! - when the agent has no dependencies: more than one token or group at the top level (the
//!   run's root branch is the only one there; dependencies start other top-level branches,
//!   so with them any number is accepted);
//! - with `max_steps`: `steps` above it by more than the running tokens (each counts at
//!   most one step past the limit, then stops where it stands and the run fails).
//!
//! Refused with [`CheckpointError::Invalid`] (no run writes it, whatever the agent):
//! - `schema_version` 0 (never written);
//! - two state records of one state; a state named twice in `completed_states`;
//! - a token record with `count` 0 (a run writes none), two token records of one state in
//!   one group, a token naming a group that does not exist;
//! - a group whose parent does not come before it; a group waiting count of 0, or one state
//!   waiting twice in a group; a group with no running token (neither a token record nor a
//!   child group: an open group always has one, since the fan-in releases waiting tokens as
//!   soon as nothing runs); a group `width` below 2 (a fan-out opens a group only for two
//!   branches or more); a group holding more tokens (running, waiting and child groups)
//!   than its `width`;
//! - a group's `branches` (version 5) whose places do not add up to its width or disagree
//!   with its token counts (running per state, counting a child group at its origin, and
//!   waiting per state), a width above [`MAX_TOKENS`], a run of 0 branches, held writes or a map's results naming a
//!   branch beyond the width or out of order, a map whose item count is not the width (a
//!   map's group may have width 1), a child naming a branch beyond its parent's width, or
//!   an `origin_branch` under a parent that keeps no branches;
//! - more than [`MAX_TOKENS`] tokens and groups in all (no run restores more branches than
//!   this; it bounds the memory a restore allocates);
//! - `attempts_made` above 0 at a state where no token stands (only an instance waiting to
//!   retry has attempts made, and it resets them before its token moves on);
//! - status `Idle` with tokens or groups (an idle run has not started), `Completed` with
//!   tokens or groups (a completed run has no branch left);
//! - a request for input whose id is not `input-N` (N from 1 to `u32::MAX`), two requests
//!   with one id, an answer time without an answer, a default taken without an answer, a
//!   timeout beyond the year 9999;
//! - a time (a request's, a state's start or end, `deadline_ms`) before the Unix epoch or
//!   after the year 9999.
//!
//! Merely unusual, accepted:
//! - status `Running` with no token and no group: a durable run records the end of its
//!   last branch before its final status, so a process that dies in between leaves exactly
//!   this; restored, the run completes with nothing to run;
//! - status `Failed`, `Cancelled`, `TimedOut` or `Paused` with tokens (their tokens run
//!   again when restored: that is how a failed run goes on), or without;
//! - a state's status that does not match its tokens, counters (`completed`, `failed`,
//!   `retries`, `preempted`) of any size, a completed state whose record counts 0
//!   completions: they are what the run showed and counted, not what it does next, and a
//!   checkpoint taken while a state completes can read its counter before its first
//!   completion is ordered;
//! - `steps` at or a little above `max_steps` whatever the status: a checkpoint taken while
//!   a token passes the limit sees the count before the run is failed (restored, the run
//!   fails with `MaxSteps` at once);
//! - waiting counts of any size from 1 up to the group's width: waiting tokens merge into
//!   one when released;
//! - a state record missing (its counters start at zero), a deadline already past;
//! - a checkpoint of an older version (its missing fields are empty).

use std::collections::HashSet;

use agent_core::{AgentStatus, Checkpoint, CheckpointError, GraphSignature, CHECKPOINT_VERSION};

use crate::program::Program;

/// The most tokens (and groups) a restored checkpoint may hold: each becomes a branch, so
/// this bounds what a restore allocates (about 1 GiB of branches in the run that wrote it).
pub(crate) const MAX_TOKENS: u64 = 1 << 22;

/// The latest time a checkpoint may name: the last millisecond of the year 9999.
const MAX_MS: i64 = 253_402_300_799_999;

/// The rules of a group's branches (see the module docs): their places add up to the
/// group's width and agree with its token counts, and every index they name is one of its
/// branches. Nothing is allocated by a count the record states.
fn branches(
    c: &Checkpoint,
    i: usize,
    b: &agent_core::BranchesRecord,
    at: &impl Fn(&str) -> Result<usize, CheckpointError>,
) -> Result<(), CheckpointError> {
    use agent_core::BranchAt;
    use std::collections::BTreeMap;
    let g = &c.groups[i];
    let bad = |what: String| invalid(format!("group {i} (opened by {:?}): {what}", g.origin));
    let width = g.width.ok_or_else(|| bad("its branches are recorded without its width".into()))?;
    if u64::from(width) > MAX_TOKENS {
        // Restored, each branch's place takes memory, whatever the record spells out.
        return Err(bad(format!("{width} branches, above the limit of {MAX_TOKENS}")));
    }
    let (mut running, mut waiting) = (BTreeMap::new(), BTreeMap::new());
    let mut sum = 0u64;
    for (n, place) in &b.at {
        if *n == 0 {
            return Err(bad("a run of 0 branches".into()));
        }
        sum = sum.saturating_add(u64::from(*n));
        match place {
            BranchAt::Running(s) => *running.entry(at(s)?).or_insert(0u64) += u64::from(*n),
            BranchAt::Waiting(s) => *waiting.entry(at(s)?).or_insert(0u64) += u64::from(*n),
            BranchAt::Done => {}
        }
    }
    if sum != u64::from(width) {
        return Err(bad(format!("its branches' places count {sum} branches, not its width of {width}")));
    }
    // The counts: token records of the group, and a child group for the token at its origin.
    let mut counted = BTreeMap::new();
    for t in c.tokens.iter().filter(|t| t.group == Some(i)) {
        *counted.entry(at(&t.state)?).or_insert(0u64) += u64::from(t.count);
    }
    for child in c.groups.iter().filter(|h| h.parent == Some(i)) {
        *counted.entry(at(&child.origin)?).or_insert(0u64) += 1;
        if child.branches.as_ref().and_then(|cb| cb.origin_branch).is_some_and(|o| o >= width) {
            return Err(bad(format!("a child group names branch {:?}, beyond its width", child.branches)));
        }
    }
    let mut held = BTreeMap::new();
    for (state, n) in &g.waiting {
        *held.entry(at(state)?).or_insert(0u64) += u64::from(*n);
    }
    if counted != running || held != waiting {
        return Err(bad("its branches' places do not agree with its token counts".into()));
    }
    if b.origin_branch.is_some() && g.parent.and_then(|p| c.groups[p].branches.as_ref()).is_none() {
        return Err(bad("it names the branch that opened it, in a parent that keeps no branches".into()));
    }
    let ascending = |ords: Vec<u32>| ords.iter().all(|&o| o < width) && ords.windows(2).all(|w| w[0] < w[1]);
    if !ascending(b.writes.iter().map(|(o, _)| *o).collect()) {
        return Err(bad("held writes name branches out of order or beyond its width".into()));
    }
    if let Some(m) = &b.map {
        at(&m.target)?;
        if m.elided {
            return Err(bad("a map whose items are left to an earlier journal entry, in a checkpoint".into()));
        }
        if m.items.len() as u64 != u64::from(width) {
            return Err(bad(format!("a map of {} items in a group of width {width}", m.items.len())));
        }
        if !ascending(m.results.iter().map(|(o, _)| *o).collect()) {
            return Err(bad("results name branches out of order or beyond its width".into()));
        }
    }
    Ok(())
}

/// Check `checkpoint` against the rules of the module docs, for agent `agent` running `prog`.
pub(crate) fn validate(agent: &str, prog: &Program, c: &Checkpoint) -> Result<(), CheckpointError> {
    if c.schema_version > CHECKPOINT_VERSION {
        return Err(CheckpointError::TooNew { found: c.schema_version, supported: CHECKPOINT_VERSION });
    }
    if c.schema_version == 0 {
        return Err(invalid("schema_version 0 was never written".into()));
    }
    let mismatch = |reason: String| CheckpointError::Mismatch { agent: agent.to_owned(), reason };
    if c.agent_name != agent {
        return Err(mismatch(format!("it is a checkpoint of agent {:?}", c.agent_name)));
    }
    graph(agent, prog, c)?;
    let at = |name: &str| {
        prog.index_of(name).ok_or_else(|| mismatch(format!("it names state {name:?}, which this agent does not have")))
    };
    let n = prog.states.len();

    // State records and completions.
    let mut recorded = vec![false; n];
    let mut attempts = vec![0u32; n];
    for r in &c.states {
        let i = at(&r.name)?;
        if std::mem::replace(&mut recorded[i], true) {
            return Err(invalid(format!("state {:?} has two records", r.name)));
        }
        let budget = budget(prog, i);
        if r.attempts_made > budget {
            return Err(mismatch(format!(
                "state {:?} has made {} attempts, above its retry budget of {budget}",
                r.name, r.attempts_made
            )));
        }
        attempts[i] = r.attempts_made;
        time(&format!("state {:?} start", r.name), r.started_ms)?;
        time(&format!("state {:?} end", r.name), r.finished_ms)?;
    }
    let mut completed = vec![false; n];
    for name in &c.completed_states {
        let i = at(name)?;
        if std::mem::replace(&mut completed[i], true) {
            return Err(invalid(format!("state {name:?} is listed twice among the completed states")));
        }
    }

    // Groups and tokens: indices, counts, totals (sums saturate: any overflow is far above
    // `MAX_TOKENS`).
    let groups = c.groups.len();
    let mut total = groups as u64;
    // Per group: running tokens (token records and child groups), waiting tokens.
    let mut running = vec![0u64; groups];
    let mut waiting = vec![0u64; groups];
    let mut top = 0u64;
    for (i, g) in c.groups.iter().enumerate() {
        let origin = at(&g.origin)?;
        match g.parent {
            Some(p) if p >= i => {
                return Err(invalid(format!("group {i} names parent {p}, which does not come before it")));
            }
            Some(p) => {
                running[p] += 1;
                reachable(prog, agent, &c.groups[p].origin, p, origin, "a child group's origin", &g.origin)?;
            }
            None => top += 1,
        }
        if let Some(w) = g.width {
            // A map opens a group for one item too.
            let map = g.branches.as_ref().is_some_and(|b| b.map.is_some());
            if w < 2 && !(map && w == 1) {
                return Err(invalid(format!("group {i} (opened by {:?}) has width {w}, below 2", g.origin)));
            }
        }
        let mut seen = HashSet::with_capacity(g.waiting.len().min(n));
        for (state, count) in &g.waiting {
            let s = at(state)?;
            if *count == 0 {
                return Err(invalid(format!("group {i} has 0 tokens waiting at {state:?}")));
            }
            if !seen.insert(s) {
                return Err(invalid(format!("group {i} lists tokens waiting at {state:?} twice")));
            }
            reachable(prog, agent, &g.origin, i, s, "tokens waiting at", state)?;
            waiting[i] = waiting[i].saturating_add(u64::from(*count));
            total = total.saturating_add(u64::from(*count));
        }
    }
    let mut seen = HashSet::with_capacity(c.tokens.len().min(n.saturating_mul(groups + 1)));
    let mut holds_token = vec![false; n];
    for t in &c.tokens {
        let s = at(&t.state)?;
        let place = match t.group {
            Some(g) if g >= groups => {
                return Err(invalid(format!("a token at {:?} names group {g}, which does not exist", t.state)));
            }
            Some(g) => format!("group {g}"),
            None => "the top level".to_owned(),
        };
        if t.count == 0 {
            return Err(invalid(format!("a token record at {:?} in {place} has count 0", t.state)));
        }
        if !seen.insert((s, t.group)) {
            return Err(invalid(format!("state {:?} has two token records in {place}", t.state)));
        }
        match t.group {
            Some(g) => {
                reachable(prog, agent, &c.groups[g].origin, g, s, "a token at", &t.state)?;
                running[g] = running[g].saturating_add(u64::from(t.count));
            }
            None => top = top.saturating_add(u64::from(t.count)),
        }
        holds_token[s] = true;
        total = total.saturating_add(u64::from(t.count));
    }
    if total > MAX_TOKENS {
        return Err(invalid(format!("it holds {total} tokens and groups, above the limit of {MAX_TOKENS}")));
    }
    for (i, g) in c.groups.iter().enumerate() {
        if running[i] == 0 {
            return Err(invalid(format!(
                "group {i} (opened by {:?}) has no running token: nothing could release its waiting ones",
                g.origin
            )));
        }
        let live = running[i].saturating_add(waiting[i]);
        if let Some(w) = g.width.filter(|&w| live > u64::from(w)) {
            return Err(invalid(format!(
                "group {i} (opened by {:?}) holds {live} tokens, more than the {w} branches of its fan-out",
                g.origin
            )));
        }
        // A child group stands for a token at its origin: that state holds a token too.
        holds_token[at(&g.origin)?] = true;
    }
    for (i, g) in c.groups.iter().enumerate() {
        if let Some(b) = &g.branches {
            branches(c, i, b, &at)?;
        }
    }
    if let Some(reach) = &prog.reach {
        blocked_waiting(c, prog, reach, agent)?;
    }
    if !prog.has_dependencies && top > 1 {
        return Err(mismatch(format!(
            "{top} tokens and groups at the top level, where a run without dependencies has only its root branch"
        )));
    }
    for (i, s) in prog.states.iter().enumerate() {
        if attempts[i] > 0 && !holds_token[i] {
            return Err(invalid(format!(
                "state {:?} has made {} attempts, but no token stands there to retry",
                s.name, attempts[i]
            )));
        }
    }

    // The run as a whole.
    let live = !c.tokens.is_empty() || !c.groups.is_empty();
    match c.agent_status {
        AgentStatus::Idle if live => return Err(invalid("status Idle, yet tokens stand in the run".into())),
        AgentStatus::Completed if live => return Err(invalid("status Completed, yet tokens stand in the run".into())),
        _ => {}
    }
    if let Some(limit) = prog.max_steps.filter(|&m| c.steps > m) {
        let tokens = c.tokens.iter().fold(0u64, |n, t| n.saturating_add(u64::from(t.count)));
        if c.steps - limit > tokens {
            return Err(mismatch(format!(
                "{} steps, above max_steps {limit} by more than its {tokens} running tokens could count",
                c.steps
            )));
        }
    }
    if let Some(e) = &c.last_error {
        let s = at(&e.state)?;
        let most = u64::from(budget(prog, s)) + 1;
        if u64::from(e.attempts) > most {
            return Err(mismatch(format!(
                "the last error of state {:?} counts {} attempts, above the {most} its retry budget allows",
                e.state, e.attempts
            )));
        }
    }
    time("deadline_ms", c.deadline_ms)?;
    inputs(c, &at)?;
    Ok(())
}

/// The checkpoint's graph is the program's, if it records one.
fn graph(agent: &str, prog: &Program, c: &Checkpoint) -> Result<(), CheckpointError> {
    let Some(recorded) = &c.graph else {
        tracing::debug!(
            agent,
            run_id = %c.run_id,
            "the checkpoint records no graph signature (written before checkpoint version 4): restoring it without \
             comparing graphs"
        );
        return Ok(());
    };
    let current = prog.graph_record();
    if recorded == current {
        return Ok(());
    }
    Err(CheckpointError::GraphChanged {
        agent: agent.to_owned(),
        recorded: recorded.hash(),
        current: current.hash(),
        changes: GraphSignature::diff(recorded.signature(), current.signature()),
    })
}

/// In a fully known graph, tokens wait at a state only while something in their group can
/// still reach it (a running token: a token record, or a child group at its origin; or
/// tokens waiting at another state), or something in a group enclosing theirs may still
/// come to it (other than the token standing for their group). The fan-in releases them
/// otherwise, in the same step that made them releasable, so no checkpoint sees them
/// waiting. Names were checked.
///
/// Each group's distinct running states are gathered in one pass over the records; the
/// check then costs, per group, its distinct running states times its waiting states.
fn blocked_waiting(
    c: &Checkpoint,
    prog: &Program,
    reach: &crate::reach::Reach,
    agent: &str,
) -> Result<(), CheckpointError> {
    let index = |name: &str| prog.index_of(name).unwrap_or(0);
    // Per group: (state, tokens running there), a child group counting as one at its origin.
    let mut running: Vec<Vec<(usize, u64)>> = vec![Vec::new(); c.groups.len()];
    for t in &c.tokens {
        if let Some(g) = t.group {
            running[g].push((index(&t.state), u64::from(t.count)));
        }
    }
    for child in &c.groups {
        if let Some(p) = child.parent {
            running[p].push((index(&child.origin), 1));
        }
    }
    let waiting: Vec<Vec<usize>> =
        c.groups.iter().map(|g| g.waiting.iter().map(|(state, _)| index(state)).collect()).collect();
    // Whether a token of a group enclosing group `i` may still come to `s`: a state held
    // back for the branches of an enclosing fan-out (see `run::groups`, "Deferral").
    let held_above = |i: usize, s: usize| {
        let (mut parent, mut origin) = (c.groups[i].parent, index(&c.groups[i].origin));
        while let Some(p) = parent {
            // The token at `origin` stands for the group below: not one that may come.
            let mut at: Vec<(usize, u64)> = running[p].clone();
            if let Some(slot) = at.iter_mut().find(|(x, n)| *x == origin && *n > 0) {
                slot.1 -= 1;
            }
            if at.iter().any(|&(x, n)| n > 0 && reach.reaches(x, s))
                || waiting[p].iter().any(|&w| w == s || reach.reaches(w, s))
            {
                return true;
            }
            (parent, origin) = (c.groups[p].parent, index(&c.groups[p].origin));
        }
        false
    };
    for (i, g) in c.groups.iter().enumerate() {
        for (&s, (state, _)) in waiting[i].iter().zip(&g.waiting) {
            let blocked = running[i].iter().any(|&(r, _)| reach.reaches(r, s))
                || waiting[i].iter().any(|&t| t != s && reach.reaches(t, s))
                || held_above(i, s);
            if !blocked {
                return Err(CheckpointError::Mismatch {
                    agent: agent.to_owned(),
                    reason: format!(
                        "group {i} holds tokens waiting at {state:?}, which nothing running or waiting in it or \
                         above it can reach: the fan-in would have released them"
                    ),
                });
            }
        }
    }
    Ok(())
}

/// The requests for human input: ids, answers, times.
fn inputs(c: &Checkpoint, at: &dyn Fn(&str) -> Result<usize, CheckpointError>) -> Result<(), CheckpointError> {
    let mut ids = HashSet::with_capacity(c.pending_inputs.len());
    for r in &c.pending_inputs {
        let id = &r.request_id;
        let number = id.strip_prefix("input-").and_then(|n| n.parse::<u32>().ok()).filter(|&n| n > 0);
        if number.is_none() {
            return Err(invalid(format!("request id {id:?} is not input-N with N from 1 to {}", u32::MAX)));
        }
        if !ids.insert(id.as_str()) {
            return Err(invalid(format!("request {id:?} is recorded twice")));
        }
        if let Some(state) = &r.state {
            at(state)?;
        }
        time(&format!("request {id:?} time"), Some(r.requested_ms))?;
        time(&format!("request {id:?} answer time"), r.answered_ms)?;
        if r.answer.is_none() && (r.answered_ms.is_some() || r.defaulted) {
            return Err(invalid(format!("request {id:?} has an answer time or a default taken, but no answer")));
        }
        if r.timeout_ms.is_some_and(|t| t > MAX_MS as u64) {
            return Err(invalid(format!(
                "request {id:?} has a timeout of {:?} ms, beyond the year 9999",
                r.timeout_ms
            )));
        }
    }
    Ok(())
}

/// Attempts state `s` may have made before a retry: its `max_retries` (0 without a policy).
fn budget(prog: &Program, s: usize) -> u32 {
    prog.states[s].guarded.as_ref().and_then(|g| g.retry).map_or(0, |r| r.max_retries)
}

/// In a fully known graph, group `group` (opened by `origin`) can hold `what` at `state`
/// (index `s`) only if `origin` reaches it.
fn reachable(
    prog: &Program,
    agent: &str,
    origin: &str,
    group: usize,
    s: usize,
    what: &str,
    state: &str,
) -> Result<(), CheckpointError> {
    let (Some(reach), Some(o)) = (&prog.reach, prog.index_of(origin)) else { return Ok(()) };
    if reach.reaches(o, s) {
        return Ok(());
    }
    Err(CheckpointError::Mismatch {
        agent: agent.to_owned(),
        reason: format!("group {group} holds {what} {state:?}, which its origin {origin:?} cannot reach"),
    })
}

/// A time in milliseconds since the Unix epoch, if any, between the epoch and the year 9999.
fn time(what: &str, ms: Option<i64>) -> Result<(), CheckpointError> {
    match ms {
        Some(ms) if !(0..=MAX_MS).contains(&ms) => {
            Err(invalid(format!("{what} is {ms} ms since the Unix epoch, outside 0..={MAX_MS}")))
        }
        _ => Ok(()),
    }
}

fn invalid(what: String) -> CheckpointError {
    CheckpointError::Invalid { what }
}
