//! Branch identity: where each branch of a fan-out group stands, and what it holds for the
//! join, for the groups that keep it (a map's, and every group of an agent with reducers).
//!
//! A group counts its tokens per state (`run::groups`), which is all a fan-in needs and
//! what keeps a 100,000-branch fan-out at a few map entries. A map needs more: each branch
//! has its own item and result, and after a crash only the unfinished items may run again;
//! reducers need more too: a branch's writes are folded in branch order, not in the order
//! the branches happened to finish. So such a group also keeps a [`Branches`]: one place
//! per branch, indexed by its *ordinal* (the index of its target in the fan-out, or of its
//! item in the map), beside the counts, under the same lock and moved by the same events.
//!
//! This file is the pure core: no locks, no run, no time. `run::groups` calls it inside its
//! events; checkpoints read it (`record`) and restore it (`restore`).
//!
//! Invariants:
//! - `at[i]` is the place of branch `i`: running at a state (not yet started counts as
//!   running at its first state), waiting at a state, or done (it ended, or merged into a
//!   sibling at a fan-in). The counts of running and waiting places per state equal the
//!   group's token counts.
//! - `last` is the branch that arrived last, and where: a release of one token at that
//!   state (a token moving on at once, the common case) takes it without a search; any
//!   other release scans the places, once per release (a fan-in's join is released once).
//! - When tokens waiting at a state are released, they merge into the branch with the
//!   lowest ordinal among them, which runs the state; the others are done. So which branch
//!   goes on is a function of which branches waited, never of their arrival order.
//! - A branch's contributions (`writes`) and result are those of its *completed* states,
//!   committed inside the transition that moves its token on: what a checkpoint holds for a
//!   branch and where it stands always agree, so a branch run again after a crash never
//!   contributes twice.
//! - `take_flush` hands over every branch's contributions and results in ordinal order.

use std::collections::BTreeMap;

use agent_core::{BranchAt, BranchesRecord};
use serde_json::Value;

/// No branch: a token of a group that keeps no identity, or of the top level.
pub(crate) const NO_BRANCH: u32 = u32::MAX;

/// The bit that marks a place as waiting.
const WAITING: u32 = 1 << 31;

/// A place that holds no token any more.
const DONE: u32 = u32::MAX;

/// Writes held for reducer keys: `(key, value)` in the order they were made.
pub(crate) type Writes = Vec<(Box<str>, Value)>;

/// A group's branches as a checkpoint writes them: places (runs of equal ones), held
/// writes by branch, results by branch.
pub(crate) type Recorded = (Vec<(u32, BranchAt)>, Vec<(u32, Vec<(String, Value)>)>, Vec<(u32, Value)>);

/// See the module docs.
#[derive(Default)]
pub(crate) struct Branches {
    at: Vec<u32>,
    /// The branch that arrived last, and the state it waits at.
    last: Option<(u32, u32)>,
    writes: BTreeMap<u32, Writes>,
    /// By ordinal (sized on the first result: a map's branches all set one, usually).
    results: Vec<Option<Value>>,
}

/// What a closing group hands to where it goes back to, in ordinal order.
#[derive(Default)]
pub(crate) struct Flush {
    pub writes: Writes,
    pub results: Vec<Value>,
}

impl Branches {
    /// Branches starting at `targets`, one per ordinal; those `deferred` marks start
    /// waiting instead of running.
    pub(crate) fn open(targets: &[u32], deferred: Option<&[bool]>) -> Branches {
        let mut b = Branches { at: targets.to_vec(), ..Branches::default() };
        if let Some(deferred) = deferred {
            for (i, _) in deferred.iter().enumerate().filter(|(_, &d)| d) {
                b.at[i] |= WAITING;
            }
        }
        b
    }

    /// Branch `ord` moved to `to`, where it waits until released.
    pub(crate) fn arrive(&mut self, ord: u32, to: usize) {
        if let Some(place) = self.at.get_mut(ord as usize) {
            *place = to as u32 | WAITING;
            self.last = Some((ord, to as u32));
        }
    }

    /// Branch `ord` ended.
    pub(crate) fn end(&mut self, ord: u32) {
        if let Some(place) = self.at.get_mut(ord as usize) {
            *place = DONE;
        }
    }

    /// The `count` branches waiting at `s` are released: they merge into the lowest, which
    /// runs `s` and is returned (`NO_BRANCH` if none waited there, which the counts rule
    /// out).
    pub(crate) fn release(&mut self, s: usize, count: u32) -> u32 {
        let waiting = s as u32 | WAITING;
        if let Some((ord, at)) = self.last.take() {
            if count == 1 && at == s as u32 && self.at[ord as usize] == waiting {
                self.at[ord as usize] = s as u32;
                return ord;
            }
        }
        let mut keep = NO_BRANCH;
        for (ord, place) in self.at.iter_mut().enumerate() {
            if *place == waiting {
                *place = if keep == NO_BRANCH {
                    keep = ord as u32;
                    s as u32
                } else {
                    DONE
                };
            }
        }
        keep
    }

    /// Branch `ord`'s state completed, with these contributions and result.
    pub(crate) fn commit(&mut self, ord: u32, writes: Writes, result: Option<Value>) {
        if ord as usize >= self.at.len() {
            return;
        }
        if !writes.is_empty() {
            self.writes.entry(ord).or_default().extend(writes);
        }
        if let Some(r) = result {
            if self.results.is_empty() {
                self.results.resize(self.at.len(), None);
            }
            self.results[ord as usize] = Some(r);
        }
    }

    /// Contributions folded into branch `ord` from a group it opened, which closed.
    pub(crate) fn absorb(&mut self, ord: u32, flush: Flush) {
        self.commit(ord, flush.writes, None);
    }

    /// Everything held, in ordinal order, taken out (the group closes).
    pub(crate) fn take_flush(&mut self) -> Flush {
        Flush {
            writes: std::mem::take(&mut self.writes).into_values().flatten().collect(),
            results: std::mem::take(&mut self.results).into_iter().flatten().collect(),
        }
    }

    /// Every branch running (or not started), with its state, in ordinal order.
    pub(crate) fn running(&self) -> impl Iterator<Item = (u32, usize)> + '_ {
        let running = |&(_, &p): &(usize, &u32)| p != DONE && p & WAITING == 0;
        self.at.iter().enumerate().filter(running).map(|(i, &p)| (i as u32, p as usize))
    }

    /// The places, as a checkpoint writes them (`name` gives a state's name), the held
    /// contributions, and the results.
    pub(crate) fn record(&self, name: impl Fn(usize) -> String) -> Recorded {
        let mut at: Vec<(u32, BranchAt)> = Vec::new();
        for same in self.at.chunk_by(|a, b| a == b) {
            let place = match same[0] {
                DONE => BranchAt::Done,
                p if p & WAITING != 0 => BranchAt::Waiting(name((p & !WAITING) as usize)),
                p => BranchAt::Running(name(p as usize)),
            };
            at.push((same.len() as u32, place));
        }
        let writes = (self.writes.iter())
            .map(|(&ord, w)| (ord, w.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()))
            .collect();
        let results = (self.results.iter().enumerate()).filter_map(|(ord, v)| Some((ord as u32, v.clone()?))).collect();
        (at, writes, results)
    }

    /// The branches a checkpoint recorded (`index` gives a state's index); `None` if a
    /// state is unknown. The record was validated: its runs add up to the group's width.
    pub(crate) fn restore(
        record: &BranchesRecord,
        results: &[(u32, Value)],
        index: impl Fn(&str) -> Option<usize>,
    ) -> Option<Branches> {
        let mut b = Branches::default();
        for (n, place) in &record.at {
            let code = match place {
                BranchAt::Done => DONE,
                BranchAt::Running(s) => index(s)? as u32,
                BranchAt::Waiting(s) => index(s)? as u32 | WAITING,
            };
            b.at.extend(std::iter::repeat_n(code, *n as usize));
        }
        for (ord, writes) in &record.writes {
            b.writes.entry(*ord).or_default().extend(writes.iter().map(|(k, v)| (k.as_str().into(), v.clone())));
        }
        for (ord, r) in results {
            b.commit(*ord, Vec::new(), Some(r.clone()));
        }
        Some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn released_branches_merge_into_the_lowest_and_flush_in_ordinal_order() {
        let mut b = Branches::open(&[1, 1, 1], None);
        assert_eq!(b.running().collect::<Vec<_>>(), vec![(0, 1), (1, 1), (2, 1)]);
        // Branch 2 finishes first, then 0; 1 ends without arriving.
        b.commit(2, vec![("k".into(), json!("late"))], Some(json!(2)));
        b.arrive(2, 5);
        b.commit(0, vec![("k".into(), json!("early"))], Some(json!(0)));
        b.arrive(0, 5);
        b.end(1);
        assert_eq!(b.running().count(), 0);
        assert_eq!(b.release(5, 2), 0);
        assert_eq!(b.release(5, 2), NO_BRANCH, "released once");
        // One token moving on at once is the one that arrived.
        b.arrive(0, 6);
        assert_eq!(b.release(6, 1), 0);
        assert_eq!(b.running().collect::<Vec<_>>(), vec![(0, 6)]);
        let flush = b.take_flush();
        assert_eq!(flush.writes, vec![("k".into(), json!("early")), ("k".into(), json!("late"))]);
        assert_eq!(flush.results, vec![json!(0), json!(2)]);
        assert!(b.take_flush().writes.is_empty());
    }

    #[test]
    fn a_record_restores_the_same_places() {
        let mut b = Branches::open(&[1, 1, 2, 2], Some(&[false, false, false, true]));
        b.arrive(0, 3);
        b.end(1);
        b.commit(0, vec![("k".into(), json!(1))], Some(json!("r")));
        let name = |s: usize| format!("s{s}");
        let (at, writes, results) = b.record(name);
        assert_eq!(
            at,
            vec![
                (1, BranchAt::Waiting("s3".into())),
                (1, BranchAt::Done),
                (1, BranchAt::Running("s2".into())),
                (1, BranchAt::Waiting("s2".into()))
            ]
        );
        let record = BranchesRecord::new(at, None, writes, None);
        let index = |s: &str| s.strip_prefix('s').and_then(|n| n.parse().ok());
        let mut back = Branches::restore(&record, &results, index).unwrap();
        assert_eq!(back.running().collect::<Vec<_>>(), vec![(2, 2)]);
        assert_eq!(back.release(3, 1), 0);
        assert_eq!(back.release(2, 1), 3);
        let flush = back.take_flush();
        assert_eq!((flush.writes.len(), flush.results), (1, vec![json!("r")]));
        assert!(Branches::restore(&record, &[], |_| None).is_none(), "an unknown state is refused");
    }
}
