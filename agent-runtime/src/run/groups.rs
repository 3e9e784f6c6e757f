//! Fan-out groups and fan-in: when a state reached by several branches may run.
//!
//! A fan-out opens a [`Group`] with one token per branch. A token is *running* at the state
//! its branch executes (a token whose branch fanned out again stays running at that state
//! until its child group collapses), or *waiting* at a state it moved to. Counts are kept by
//! position, not per token, so a group of 100,000 branches costs a few map entries.
//!
//! Release rule, evaluated under the group's lock after every event:
//! - Fully known graph (`Program::reach` is `Some`): a waiting state `S` is released when no
//!   running token's state reaches `S` and no token waiting at another state reaches `S`.
//!   A branch on a detour keeps moving (nothing waits for it at its detour states) and counts
//!   when it reaches the join. If nothing is running and nothing can be released (tokens wait
//!   on each other around a cycle), the waiting state defined first is released: no run
//!   waits on itself.
//! - Otherwise (builder agents, computed targets), a token waits whenever a sibling is
//!   running; once none is, every waiting state not marked `join` is released (a step);
//!   states marked `join` are released only when every waiting token waits at a join, and
//!   then one at a time, the one defined first (so an inner join runs before the outer join
//!   its branch moves on to).
//!
//! Deferral to enclosing groups (nested fan-outs): a state that tokens of an enclosing group
//! may still reach runs once, after all of them, not once inside the inner group and again
//! outside it. So, in a group with a parent:
//! - fully known graph: a waiting state `S` is not released while an enclosing group holds
//!   a token that may still come to `S` (one running at a state that reaches `S`, other than
//!   the token that stands for the inner group, or one waiting at `S` or at a state that
//!   reaches `S`); a fan-out target for which that holds starts waiting rather than running;
//! - builder agents: a fan-out target marked `join` starts waiting, so it runs by the rule
//!   for joins above, once the group's other branches are done.
//!
//! When nothing runs in the group and all its tokens wait at one state, that state is
//! released whatever holds it above: its tokens merge into one, which (being the group's
//! last) goes on to the parent as the arrival of the branch that fanned out; there the same
//! rules apply, and the state runs once, with the outer branches' tokens.
//!
//! Lock order: a group's lock, then its parent's, up to the top (inner before outer); no
//! code takes a child's lock while holding its parent's.
//!
//! Releasing a state merges its waiting tokens into one that runs it once. When that leaves
//! the group a single token, the group is over: the token goes back to the parent group as if
//! the branch that fanned out had moved to that state, and the parent applies the same rule.
//! So nested fan-outs join inside out, and a join shared by inner and outer branches runs once.
//!
//! A group is `closed` once its last token ended or went back to its parent; checkpoints
//! skip closed groups. The run holds every open group (and closed ones until it prunes
//! them): a group whose branches all wait at its join, or were never started because the
//! run stopped, has no task holding it, and a checkpoint must still see it.
//!
//! Invariants: `live` = running + waiting tokens; `running_total` = sum of `running`; no map
//! holds a zero count; a state never has both its waiting tokens released twice for one
//! arrival set (release removes them from `waiting` under the same lock).

use std::sync::{Arc, Mutex, PoisonError};

use agent_core::__private::context as ctx_hooks;
use agent_core::Context;
use crossbeam_utils::CachePadded;
use rustc_hash::FxHashMap;
use serde_json::Value;

use super::branches::{Branches, Flush, Recorded, NO_BRANCH};
use super::Run;
use crate::program::Program;

/// Where a token stands after an event: the group it belongs to (none at the top level),
/// the state it runs, and its branch's ordinal in the group (`NO_BRANCH` in a group that
/// keeps no identity per branch, see `run::branches`).
pub(crate) type Position = (Option<Arc<Group>>, usize, u32);

/// What a group that keeps an identity per branch knows of itself (see `run::branches`).
pub(crate) struct Ident {
    /// The ordinal, in the parent group, of the branch whose fan-out opened this group
    /// (`NO_BRANCH` at the top or under a group that keeps no identity).
    pub origin_branch: u32,
    /// A map's items, its target and where its results go.
    pub map: Option<MapMeta>,
}

/// A map's part of a group's identity.
pub(crate) struct MapMeta {
    /// The state each branch starts at.
    pub target: u32,
    /// One item per branch, in order.
    pub items: Arc<[Value]>,
    /// The key its results go to.
    pub into: Box<str>,
    /// Its identity within the run, kept across restores (see `MapRecord::id`).
    pub id: u64,
}

/// Token counts by state, ascending by state.
pub(crate) type Counts = Vec<(usize, u32)>;

pub(crate) struct Group {
    parent: Option<Arc<Group>>,
    /// The state (in the parent) whose fan-out opened this group.
    origin: usize,
    /// How many branches the fan-out opened (saturating), for checkpoints.
    width: u32,
    /// Set when the group keeps an identity per branch (its places are in `Tokens`).
    ident: Option<Ident>,
    /// Cache-padded: away from the `Arc` count, which every spawned branch of the group
    /// bumps on its worker while the others take this lock on theirs.
    tokens: CachePadded<Mutex<Tokens>>,
}

#[derive(Default)]
struct Tokens {
    live: usize,
    running_total: usize,
    running: FxHashMap<u32, u32>,
    waiting: FxHashMap<u32, u32>,
    /// Reused buffer of (state, tokens) released by one evaluation.
    released: Vec<(u32, u32)>,
    /// The group is over: its last token ended or went back to the parent.
    closed: bool,
    /// Each branch's place, when the group keeps an identity per branch.
    branches: Option<Branches>,
}

enum Event {
    Arrive {
        from: usize,
        to: usize,
        ord: u32,
    },
    End {
        at: usize,
        ord: u32,
    },
    /// Nothing moved: evaluate the rule as it stands.
    Settle,
}

fn add(map: &mut FxHashMap<u32, u32>, key: usize, n: u32) {
    *map.entry(key as u32).or_insert(0) += n;
}

fn sub(map: &mut FxHashMap<u32, u32>, key: usize) {
    if let Some(c) = map.get_mut(&(key as u32)) {
        *c -= 1;
        if *c == 0 {
            map.remove(&(key as u32));
        }
    }
}

impl Tokens {
    fn stop_running(&mut self, at: usize) {
        sub(&mut self.running, at);
        self.running_total -= 1;
    }

    fn start_running(&mut self, at: usize) {
        add(&mut self.running, at, 1);
        self.running_total += 1;
    }

    /// Release only the waiting state defined first: the one tie-break when waiting tokens
    /// could each still move the others (joins waiting on joins, or a cycle).
    fn release_first_waiting(&mut self) {
        if let Some((&s, &c)) = self.waiting.iter().min_by_key(|(&s, _)| s) {
            self.released.push((s, c));
        }
    }

    /// Move releasable waiting tokens into `self.released`. `above`: the group's parent and
    /// origin, whose tokens may hold a state back (see the module docs).
    fn release(&mut self, prog: &Program, above: Above<'_>) {
        self.released.clear();
        if self.waiting.is_empty() {
            return;
        }
        match &prog.reach {
            Some(reach) => {
                for (&s, &c) in &self.waiting {
                    let blocked = self.running.keys().any(|&x| reach.reaches(x as usize, s as usize))
                        || self.waiting.keys().any(|&t| t != s && reach.reaches(t as usize, s as usize));
                    if !blocked && !held_above(reach, above, s as usize) {
                        self.released.push((s, c));
                    }
                }
                if self.released.is_empty() && self.running_total == 0 {
                    self.release_first_waiting();
                }
            }
            None => {
                if self.running_total > 0 {
                    return;
                }
                self.released
                    .extend(self.waiting.iter().filter(|(&s, _)| !prog.is_join(s as usize)).map(|(&s, &c)| (s, c)));
                if self.released.is_empty() {
                    self.release_first_waiting();
                }
            }
        }
        // Deterministic order: lowest state index first.
        self.released.sort_unstable();
        for (s, _) in &self.released {
            self.waiting.remove(s);
        }
    }
}

/// A group's parent and the state whose fan-out opened it: where deferral looks.
type Above<'a> = (Option<&'a Arc<Group>>, usize);

/// Whether a token of a group enclosing the one `above` describes may still come to `s`, in
/// a fully known graph (see the module docs). Takes the enclosing groups' locks, inner to
/// outer, while the caller holds the inner group's.
fn held_above(reach: &crate::reach::Reach, above: Above<'_>, s: usize) -> bool {
    let (mut parent, mut origin) = above;
    while let Some(p) = parent {
        let t = p.lock();
        // The token at `origin` stands for the group below: it is not one that may come.
        let running = t.running.iter().any(|(&x, &n)| (x as usize != origin || n > 1) && reach.reaches(x as usize, s));
        if running || t.waiting.keys().any(|&w| w as usize == s || reach.reaches(w as usize, s)) {
            return true;
        }
        drop(t);
        (parent, origin) = (p.parent.as_ref(), p.origin);
    }
    false
}

impl Group {
    /// Which of a fan-out's `targets` start waiting rather than running (see the module
    /// docs): `None` when all start running, the common case, decided without a lock for
    /// a fan-out at the top level of a fully known graph. `parent` and `origin`: where the
    /// fan-out happens (inside a transition).
    pub(crate) fn deferred(
        prog: &Program,
        parent: Option<&Arc<Group>>,
        origin: usize,
        targets: &[u32],
    ) -> Option<Vec<bool>> {
        match &prog.reach {
            Some(_) => {
                parent?;
            }
            None if !prog.has_joins() => return None,
            None => {}
        }
        let defers = |t: usize| match &prog.reach {
            Some(reach) => held_above(reach, (parent, origin), t),
            None => prog.is_join(t),
        };
        // Decided once per run of equal targets (a wide fan-out names one state many times:
        // one walk of the enclosing groups' locks for all of them), and nothing allocated
        // unless a target is held back.
        let mut defer: Option<Vec<bool>> = None;
        let mut at = 0;
        for same in targets.chunk_by(|a, b| a == b) {
            if defers(same[0] as usize) {
                defer.get_or_insert_with(|| vec![false; targets.len()])[at..at + same.len()].fill(true);
            }
            at += same.len();
        }
        defer
    }

    /// A group opened by `origin`'s fan-out whose tokens start running at `running` and
    /// waiting at `waiting` (see [`Group::deferred`]). Pushes onto `out` every position to
    /// run now: none while a token runs; when none does, the waiting ones released, or the
    /// parent's position the group collapses into (inside a transition).
    pub(crate) fn open_deferred(
        run: &Run,
        parent: Option<Arc<Group>>,
        origin: usize,
        (targets, defer): (&[u32], &[bool]),
        ident: Option<Ident>,
        out: &mut Vec<Position>,
    ) -> Arc<Group> {
        let (mut running, mut waiting) = (Vec::new(), Vec::new());
        for (&t, &d) in targets.iter().zip(defer) {
            if d {
                waiting.push(t)
            } else {
                running.push(t)
            }
        }
        let mut t = Tokens::default();
        if ident.is_some() {
            t.branches = Some(Branches::open(targets, Some(defer)));
        }
        for same in running.chunk_by(|a, b| a == b) {
            add(&mut t.running, same[0] as usize, same.len() as u32);
        }
        for same in waiting.chunk_by(|a, b| a == b) {
            add(&mut t.waiting, same[0] as usize, same.len() as u32);
        }
        t.running_total = running.len();
        t.live = running.len() + waiting.len();
        let width = u32::try_from(running.len() + waiting.len()).unwrap_or(u32::MAX);
        let group = Group::create(run, parent, origin, width, ident, t);
        if running.is_empty() {
            settle(&group, run, out);
        }
        group
    }

    /// A group whose tokens start running at `targets`, opened by `origin`'s fan-out
    /// (inside a transition: see `frontier`).
    pub(crate) fn open(
        run: &Run,
        parent: Option<Arc<Group>>,
        origin: usize,
        targets: &[u32],
        ident: Option<Ident>,
    ) -> Arc<Group> {
        let mut t = Tokens::default();
        if ident.is_some() {
            t.branches = Some(Branches::open(targets, None));
        }
        // Targets often repeat one state: count each run of equal ones with one map update.
        for same in targets.chunk_by(|a, b| a == b) {
            add(&mut t.running, same[0] as usize, same.len() as u32);
        }
        t.running_total = targets.len();
        t.live = targets.len();
        Group::create(run, parent, origin, u32::try_from(targets.len()).unwrap_or(u32::MAX), ident, t)
    }

    /// A group with these tokens running and waiting (a checkpoint's, or a new one's),
    /// opened by a fan-out of `width` branches.
    pub(crate) fn restore(
        run: &Run,
        parent: Option<Arc<Group>>,
        origin: usize,
        width: u32,
        running: impl IntoIterator<Item = (usize, u32)>,
        waiting: impl IntoIterator<Item = (usize, u32)>,
        identity: Option<(Ident, Branches)>,
    ) -> Arc<Group> {
        let (ident, branches) = identity.unzip();
        let mut t = Tokens { branches, ..Tokens::default() };
        for (s, n) in running {
            add(&mut t.running, s, n);
            t.running_total += n as usize;
            t.live += n as usize;
        }
        for (s, n) in waiting {
            add(&mut t.waiting, s, n);
            t.live += n as usize;
        }
        Group::create(run, parent, origin, width, ident, t)
    }

    fn create(
        run: &Run,
        parent: Option<Arc<Group>>,
        origin: usize,
        width: u32,
        ident: Option<Ident>,
        t: Tokens,
    ) -> Arc<Group> {
        let group = Arc::new(Group { parent, origin, width, ident, tokens: CachePadded::new(Mutex::new(t)) });
        run.positions.register_group(&group);
        group
    }

    /// The token of branch `ord` running `from` moved to `to`. Pushes onto `out` every
    /// state to run now. `done`: the branch's context handle, whose state completed: what
    /// it contributed is committed to the branch under the same lock.
    pub(crate) fn arrive(
        self: &Arc<Self>,
        run: &Run,
        from: usize,
        to: usize,
        ord: u32,
        done: Option<&Context>,
        out: &mut Vec<Position>,
    ) {
        apply(self, run, Event::Arrive { from, to, ord }, done, out)
    }

    /// The token of branch `ord` running `at` ended (its branch ended, or failed for good).
    /// `done`: as for [`Group::arrive`].
    pub(crate) fn end(
        self: &Arc<Self>,
        run: &Run,
        at: usize,
        ord: u32,
        done: Option<&Context>,
        out: &mut Vec<Position>,
    ) {
        apply(self, run, Event::End { at, ord }, done, out)
    }

    /// Branch `ord`'s state completed and its token stays (it fans out): what it
    /// contributed is committed to it (inside the transition that moves it on).
    pub(crate) fn commit(&self, ord: u32, done: &Context) {
        let pending = ctx_hooks::take_pending(done);
        if let Some(b) = &mut self.lock().branches {
            commit(b, ord, pending);
        }
    }

    /// Whether the group keeps an identity per branch.
    pub(crate) fn keeps_branches(&self) -> bool {
        self.ident.is_some()
    }

    /// The group's identity, if it keeps one per branch.
    pub(crate) fn ident(&self) -> Option<&Ident> {
        self.ident.as_ref()
    }

    /// Branch `ord`'s item, if this is a map's group, for its context.
    pub(crate) fn item(&self, ord: u32) -> Option<Value> {
        self.ident.as_ref()?.map.as_ref()?.items.get(ord as usize).cloned()
    }

    /// Each branch's place, held contributions and results, unless the group is over or
    /// keeps no identity (for checkpoints; `name` gives a state's name).
    pub(crate) fn branches(&self, name: impl Fn(usize) -> String) -> Option<Recorded> {
        let t = self.lock();
        if t.closed {
            return None;
        }
        t.branches.as_ref().map(|b| b.record(name))
    }

    /// Every branch running (or not started), with its state: where a restored group goes
    /// on.
    pub(crate) fn running_branches(&self) -> Vec<(u32, usize)> {
        self.lock().branches.as_ref().map(|b| b.running().collect()).unwrap_or_default()
    }

    /// Whether the group is over.
    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// The enclosing group and the state whose fan-out opened this one.
    pub(crate) fn place(&self) -> (Option<&Arc<Group>>, usize) {
        (self.parent.as_ref(), self.origin)
    }

    /// How many branches the fan-out that opened the group had.
    pub(crate) fn width(&self) -> u32 {
        self.width
    }

    /// Tokens running and waiting, by state, unless the group is over (for checkpoints).
    pub(crate) fn tokens(&self) -> Option<(Counts, Counts)> {
        let t = self.lock();
        if t.closed {
            return None;
        }
        let list = |m: &FxHashMap<u32, u32>| {
            let mut v: Vec<(usize, u32)> = m.iter().map(|(&s, &n)| (s as usize, n)).collect();
            v.sort_unstable();
            v
        };
        Some((list(&t.running), list(&t.waiting)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tokens> {
        self.tokens.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Evaluate the release rule of a group no event has touched yet (one opened with no
/// running token): the same as after an event, through [`apply`].
fn settle(group: &Arc<Group>, run: &Run, out: &mut Vec<Position>) {
    apply(group, run, Event::Settle, None, out)
}

/// What branch `ord`'s completed state contributed (taken out of its context handle),
/// committed to it.
fn commit(b: &mut Branches, ord: u32, pending: ctx_hooks::Pending) {
    if !pending.writes.is_empty() || pending.result.is_some() {
        b.commit(ord, pending.writes, pending.result);
    }
}

/// Walks up the groups by reference (each holds its parent): an event costs no reference
/// count traffic on the groups, which every branch of a wide fan-out would contend on.
///
/// What the branch's state contributed is taken out of its handle before the group's lock
/// (which every branch of the group contends on) and committed under it.
fn apply(mut group: &Arc<Group>, run: &Run, mut event: Event, done: Option<&Context>, out: &mut Vec<Position>) {
    let prog = &*run.program;
    let mut done = done.filter(|_| group.keeps_branches()).map(ctx_hooks::take_pending);
    loop {
        let mut t = group.lock();
        if let (Some(pending), Some(b), Event::Arrive { ord, .. } | Event::End { ord, .. }) =
            (done.take(), &mut t.branches, &event)
        {
            commit(b, *ord, pending);
        }
        match event {
            Event::Arrive { from, to, ord } => {
                t.stop_running(from);
                add(&mut t.waiting, to, 1);
                if let Some(b) = &mut t.branches {
                    b.arrive(ord, to);
                }
            }
            Event::Settle => {}
            Event::End { at, ord } => {
                t.stop_running(at);
                t.live -= 1;
                if let Some(b) = &mut t.branches {
                    b.end(ord);
                }
                if t.live == 0 {
                    t.closed = true;
                    let flush = t.branches.as_mut().map(Branches::take_flush);
                    drop(t);
                    deliver(group, run, flush);
                    match &group.parent {
                        Some(parent) => {
                            event = Event::End { at: group.origin, ord: origin_branch(group) };
                            group = parent;
                            continue;
                        }
                        None => {
                            // The token that fanned out at the top level ends.
                            run.top_leave(group.origin);
                            return;
                        }
                    }
                }
            }
        }
        t.release(prog, (group.parent.as_ref(), group.origin));
        if t.released.is_empty() {
            return;
        }
        let merged: usize = t.released.iter().map(|&(_, c)| c as usize - 1).sum();
        t.live -= merged;
        if t.live == 1 && t.released.len() == 1 {
            // The group is down to one token: it rejoins the parent at the released state.
            let (to, count) = t.released[0];
            let to = to as usize;
            t.closed = true;
            let flush = t.branches.as_mut().map(|b| {
                b.release(to, count);
                b.take_flush()
            });
            drop(t);
            deliver(group, run, flush);
            match &group.parent {
                Some(parent) => {
                    event = Event::Arrive { from: group.origin, to, ord: origin_branch(group) };
                    group = parent;
                    continue;
                }
                None => {
                    // The token that fanned out at the top level moves on to `to`.
                    run.top_leave(group.origin);
                    run.top_enter(to);
                    out.push((None, to, NO_BRANCH));
                    return;
                }
            }
        }
        let released = std::mem::take(&mut t.released);
        for &(s, count) in &released {
            t.start_running(s as usize);
            let ord = t.branches.as_mut().map_or(NO_BRANCH, |b| b.release(s as usize, count));
            out.push((Some(group.clone()), s as usize, ord));
        }
        t.released = released;
        return;
    }
}

/// The ordinal, in its parent, of the branch whose fan-out opened `group`.
fn origin_branch(group: &Group) -> u32 {
    group.ident.as_ref().map_or(NO_BRANCH, |i| i.origin_branch)
}

/// A group that keeps an identity per branch closed (inside a transition, no lock held):
/// its branches' contributions, in ordinal order, go to the branch that opened it, if its
/// group keeps an identity too, or are folded into the context now; a map's results go to
/// its key, folded one by one through the key's reducer or set as the list of them. A
/// contribution that does not fit its reducer fails the run.
fn deliver(group: &Arc<Group>, run: &Run, flush: Option<Flush>) {
    let (Some(mut flush), Some(ident)) = (flush, &group.ident) else { return };
    if let Some(map) = &ident.map {
        let results = std::mem::take(&mut flush.results);
        if ctx_hooks::has_reducer(&run.ctx, &map.into) {
            flush.writes.extend(results.into_iter().map(|r| (map.into.clone(), r)));
        } else if let Err(e) = ctx_hooks::apply(&run.ctx, &map.into, Value::Array(results)) {
            return reduce_failed(run, group, e);
        }
    }
    if flush.writes.is_empty() {
        return;
    }
    if let Some(parent) = group.parent.as_ref().filter(|_| ident.origin_branch != NO_BRANCH) {
        if let Some(b) = &mut parent.lock().branches {
            b.absorb(ident.origin_branch, flush);
            return;
        }
    }
    for (key, value) in flush.writes {
        if let Err(e) = ctx_hooks::apply(&run.ctx, &key, value) {
            return reduce_failed(run, group, e);
        }
    }
}

#[cold]
fn reduce_failed(run: &Run, group: &Group, error: agent_core::ContextError) {
    run.fail(agent_core::AgentError::StateFailed {
        state: run.program.states[group.origin].name.to_string(),
        attempts: 1,
        source: Box::new(error),
        context: run.ctx.clone(),
        checkpoint: None,
    });
}
