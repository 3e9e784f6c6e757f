//! Tasks: where a branch gets a task of its own, and how a fan-out's branches are spread
//! over tasks.
//!
//! Invariants:
//! - Every task of a run is spawned here, counted in the run before it is spawned
//!   (`Run::tasks_started`) and out by its guard when it ends, however it ends.
//! - A fan-out of n targets continues with the first target in the branch that made it and
//!   starts the other n - 1 from tasks on the current runtime (work-stealing on a
//!   multi-thread one): at most one task per branch, fewer when branches finish in their
//!   first poll, and never a branch held back by a sibling that waits (see `fan_task`).
//! - Every spawned branch races the run's stop: a stopped run drops it.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use agent_core::StateStatus;
use tokio::sync::Semaphore;
use tracing::Instrument;

use super::drive::drive;
use super::gate;
use crate::run::{Group, Ident, Position, Run, TaskGuard, NO_BRANCH};

/// Spawn a branch task that starts at `state` (branch `ord` of `group`).
pub(crate) fn spawn(run: &Arc<Run>, state: usize, group: Option<Arc<Group>>, ord: u32) {
    run.tasks_started(1);
    if run.program.has_dependencies {
        run.deps.branches_made(1);
    }
    spawn_task(branch_task(TaskGuard::new(run.clone()), state, group, ord));
}

/// Start a restored run's branches: each position in a task of its own, except the
/// branches of a map, which go on through a windowed fan (see [`Fan`]) as they did before.
pub(crate) fn spawn_restored(run: &Arc<Run>, positions: Vec<Position>) {
    let mut maps: Vec<(Arc<Group>, Vec<u32>, Vec<u32>)> = Vec::new();
    for (group, state, ord) in positions {
        match group {
            Some(g) if g.ident().is_some_and(|i| i.map.is_some()) && ord != NO_BRANCH => {
                match maps.iter_mut().find(|(m, _, _)| Arc::ptr_eq(m, &g)) {
                    Some((_, targets, ords)) => {
                        targets.push(state as u32);
                        ords.push(ord);
                    }
                    None => maps.push((g, vec![state as u32], vec![ord])),
                }
            }
            group => spawn(run, state, group, ord),
        }
    }
    for (group, targets, ords) in maps {
        let n = targets.len() as u32;
        run.tasks_started(1);
        if run.program.has_dependencies {
            run.deps.branches_made(n as usize);
        }
        let fan = Arc::new(Fan {
            group,
            targets: targets.into_boxed_slice(),
            ords: Some(ords.into_boxed_slice()),
            slots: Some(Arc::new(Semaphore::new(agent_core::StateResult::MAP_WINDOW as usize))),
            guard: TaskGuard::new(run.clone()),
        });
        spawn_task(fan_task(fan, 0, n));
    }
}

/// Start a branch at the top level at each of `states` (activated by their dependencies, and
/// counted there by `gate`), emptying it.
pub(crate) fn start_ready(run: &Arc<Run>, states: &mut Vec<usize>) {
    for state in states.drain(..) {
        spawn(run, state, None, NO_BRANCH);
    }
}

/// Spawn the root branch as a task of its own, from the start (a run with a deadline: a
/// state that blocks its thread then holds a worker, not the caller's future, which ends the
/// run on time).
pub(crate) fn spawn_root(run: &Arc<Run>, start: usize) {
    run.tasks_started(1);
    gate::root_started(run);
    let guard = TaskGuard::new(run.clone());
    spawn_task(async move {
        let run = &guard.run;
        tokio::select! {
            biased;
            _ = drive(run, start, None, NO_BRANCH, true, None) => gate::branch_ended(run),
            _ = run.stopped() => {}
        }
    });
}

/// Spawn a task on the current runtime, inside the run's span when tracing is on.
fn spawn_task(task: impl Future<Output = ()> + Send + 'static) {
    if tracing::dispatcher::has_been_set() {
        // Branches stay inside the run's span (spawned tasks do not inherit it by themselves).
        tokio::spawn(task.instrument(tracing::Span::current()));
    } else {
        tokio::spawn(task);
    }
}

/// The future of one spawned branch: the branch raced against the run's cancellation.
async fn branch_task(guard: TaskGuard, state: usize, group: Option<Arc<Group>>, ord: u32) {
    let run = &guard.run;
    // The branch is polled first: one that finishes in its first poll never registers with
    // the cancellation token (a lock), so a fan-out of quick branches pays nothing for
    // cancellation. A cancelled run wakes pending branches, which then stop.
    tokio::select! {
        biased;
        _ = drive(run, state, group.map(Cow::Owned), ord, false, None) => gate::branch_ended(run),
        _ = run.stopped() => {}
    }
}

/// A fan-out's branches still to be spawned, shared by the tasks spawned for them.
///
/// Its guard counts all those tasks in the run as one task, for as long as any of them
/// runs (each holds the `Fan` to its end, even after its branch has left the group): so a
/// branch of a fan-out touches no shared reference count but the `Fan`'s, once when its
/// task is spawned and once when it ends, not the run's nor the run's task counter.
///
/// A map's fan has a *window*: at most that many of its branches are started and not over
/// at once (a semaphore's permits, taken before a branch starts and given back when it is
/// over; see `fan_task`), so the memory of a map over 100,000 items is its items and
/// results, not 100,000 futures. A plain fan-out's window is unbounded.
pub(super) struct Fan {
    pub(super) group: Arc<Group>,
    /// The fan-out's targets, one per branch, in order.
    pub(super) targets: Box<[u32]>,
    /// The ordinal of each branch in its group, when it is not its index here (a restored
    /// map's unfinished branches, or a fan-out whose other targets wait); `None`: the
    /// index, or no identity at all (a group that keeps none).
    pub(super) ords: Option<Box<[u32]>>,
    /// A map's window: a permit per branch started and not over. `None`: unbounded.
    slots: Option<Arc<Semaphore>>,
    guard: TaskGuard,
}

impl Fan {
    /// A fan-out of `origin` (in `parent`) to `targets` (at least two, or a map's one or
    /// more): its group opened, its tasks counted in the run.
    pub(super) fn open(
        run: &Arc<Run>,
        parent: Option<Arc<Group>>,
        origin: usize,
        targets: Vec<u32>,
        ident: Option<Ident>,
        window: Option<u32>,
    ) -> Arc<Fan> {
        let group = Group::open(run, parent, origin, &targets, ident);
        run.tasks_started(1);
        Arc::new(Fan {
            group,
            targets: targets.into_boxed_slice(),
            ords: None,
            // The first branch runs in the task that fanned out (see `take_next`).
            slots: window.map(|w| Arc::new(Semaphore::new(w.saturating_sub(1).max(1) as usize))),
            guard: TaskGuard::new(run.clone()),
        })
    }

    /// The ordinal of the branch at index `i`.
    pub(super) fn ord(&self, i: u32) -> u32 {
        match &self.ords {
            Some(ords) => ords[i as usize],
            None if self.group.keeps_branches() => i,
            None => NO_BRANCH,
        }
    }
}

/// A fan-out some of whose targets start waiting (see `Group::deferred`): the others start
/// as usual; if none does, what the group settles into goes on in `next`.
#[cold]
pub(super) fn fan_out_deferred(
    run: &Arc<Run>,
    parent: Option<Arc<Group>>,
    origin: usize,
    (targets, defer): (&[u32], &[bool]),
    ident: Option<Ident>,
    next: &mut Vec<Position>,
    fan: &mut Option<Arc<Fan>>,
) {
    let keeps = ident.is_some();
    let (mut running, mut ords) = (Vec::new(), Vec::new());
    for (i, (&t, &d)) in targets.iter().zip(defer).enumerate() {
        if d {
            run.set_state_status(t as usize, StateStatus::Blocked);
        } else {
            run.set_state_status(t as usize, StateStatus::Ready);
            running.push(t);
            ords.push(if keeps { i as u32 } else { NO_BRANCH });
        }
    }
    let group = Group::open_deferred(run, parent, origin, (targets, defer), ident, next);
    match running.len() {
        0 => {}
        1 => next.push((Some(group), running[0] as usize, ords[0])),
        _ => {
            run.tasks_started(1);
            *fan = Some(Arc::new(Fan {
                group,
                targets: running.into_boxed_slice(),
                ords: Some(ords.into_boxed_slice()),
                slots: None,
                guard: TaskGuard::new(run.clone()),
            }));
        }
    }
}

/// How long a fan-out's task runs quick branches one after another before it hands half of
/// what is left to another task, which an idle worker can steal.
const SLICE: Duration = Duration::from_micros(20);

/// A branch that runs this long by itself is given a task of its own for each sibling left:
/// beside it, a task's cost (about a microsecond) is small, and tasks spread best.
const HEAVY: Duration = Duration::from_micros(5);

/// The future of a task that runs the branches `lo..hi` of a fan-out.
///
/// It runs them one after another in this one task for as long as each finishes in its
/// first poll (a branch that ends or waits at the join straight away): a task per branch
/// costs more than such a branch itself (tokio allocates a 128-byte aligned cell for each).
/// Branches still overlap as they must:
/// - a branch that waits (for I/O, a timer, resources, a person) is kept in this task, and
///   what is left of the range goes at once to two new tasks, which do the same;
/// - after a branch that ran [`HEAVY`] or longer, the rest is split into a task per branch
///   (by halving, so the spawning spreads over the workers): CPU-bound branches balance
///   over the workers as well as with a task each from the start;
/// - every [`SLICE`] of quick branches, half of what is left goes to a new task and this
///   one yields, so another worker can take one of the two (tokio's LIFO slot is not stolen
///   from: the yield is what puts work where an idle worker finds it), and no task keeps a
///   worker for long.
///
/// A task that finds the run stopping starts nothing more: the branches it held keep their
/// tokens in the group, where a checkpoint finds them.
///
/// A map's task holds one permit of its window from its first branch to its end: its
/// branches run one after another, so that bounds the branches started and not over (and
/// costs a permit per task, not per branch).
async fn fan_task(fan: Arc<Fan>, mut lo: u32, mut hi: u32) {
    let run = &fan.guard.run;
    let mut held = false;
    // The context handle of the last branch, for the next (see `drive`): boxed, only for a
    // group whose branches have handles, so that the task stays in tokio's smallest cell.
    let mut spare: Option<Box<Option<agent_core::Context>>> = fan.group.keeps_branches().then(Box::default);
    // When this slice began, and when the last branch began (nanoseconds into the slice:
    // an `Instant` would take the task out of tokio's smallest cell).
    let mut slice = Instant::now();
    let mut last = 0u32;
    while lo < hi {
        if run.is_stopping() {
            break;
        }
        // A map's branch starts once its window has room (waiting for it holds no branch).
        if let (Some(slots), false) = (&fan.slots, held) {
            match slots.try_acquire() {
                Ok(p) => p.forget(),
                // Boxed: only a map whose window is full waits here.
                Err(_) if Box::pin(room(slots, run)).await => {}
                Err(_) => break,
            }
            held = true;
        }
        let state = fan.targets[lo as usize] as usize;
        let ord = fan.ord(lo);
        lo += 1;
        // Boxed: the task's future stays small (tokio moves it by `memcpy` several times
        // between `spawn` and its task cell, and sizes the cell in steps of 128 bytes, which
        // a waiting branch holds); the box is not moved.
        let keep = spare.as_deref_mut();
        let mut branch = Box::pin(drive(run, state, Some(Cow::Borrowed(&fan.group)), ord, false, keep));
        let waits = std::future::poll_fn(|cx| Poll::Ready(branch.as_mut().poll(cx).is_pending())).await;
        if !waits {
            gate::branch_ended(run);
        } else {
            // Siblings must not wait behind this branch: the rest of the range goes on in
            // other tasks, and this one waits for the branch, or for the run to stop. A
            // map's fan whose window is full keeps its range instead, and goes on with it
            // once this branch is over: tasks holding a range are not made faster than
            // branches end.
            let keep = fan.slots.as_ref().is_some_and(|s| s.available_permits() == 0);
            if !keep {
                hand_off(&fan, lo, hi);
            }
            // Boxed too: most branches of a wide fan-out never wait, and this task's cell
            // stays in a smaller step for those that do.
            let mut stopped = Box::pin(run.stopped());
            // The branch was just polled with this task's waker: it is polled again only
            // once this task has been woken, or a `yield_now` in it would not yield.
            let mut polled = true;
            let ended = std::future::poll_fn(|cx| {
                if !std::mem::take(&mut polled) && branch.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(true);
                }
                stopped.as_mut().poll(cx).map(|()| false)
            })
            .await;
            if !ended {
                break;
            }
            gate::branch_ended(run);
            if !keep {
                break;
            }
            slice = Instant::now();
            last = 0;
            continue;
        }
        if hi - lo > 1 {
            let into = Instant::now().saturating_duration_since(slice);
            let into_ns = u32::try_from(into.as_nanos()).unwrap_or(u32::MAX);
            if Duration::from_nanos(u64::from(into_ns.saturating_sub(last))) >= HEAVY && fan.slots.is_none() {
                // Branches this long pay little for a task each, and tasks spread best
                // over the workers: split the rest down to one branch a task (not a map's:
                // its window bounds its tasks, so it halves as below).
                while hi - lo > 1 {
                    hi = split_off(&fan, lo, hi);
                }
            } else if into >= SLICE {
                hi = split_off(&fan, lo, hi);
                tokio::task::yield_now().await;
                slice = Instant::now();
                last = 0;
                continue;
            }
            last = into_ns;
        }
    }
    if held {
        if let Some(slots) = &fan.slots {
            slots.add_permits(1);
        }
    }
}

/// Take a permit of a map's window once it has room (forgotten: the task gives it back
/// when it ends, see [`fan_task`]); `false` if the run stops first.
async fn room(slots: &Semaphore, run: &Run) -> bool {
    tokio::select! {
        p = slots.acquire() => p.map(|p| p.forget()).is_ok(),
        _ = run.stopped() => false,
    }
}

/// Spawn a task for the upper half of the range `lo..hi` (at least two branches); returns
/// where the lower half, kept, ends.
fn split_off(fan: &Arc<Fan>, lo: u32, hi: u32) -> u32 {
    let mid = lo + (hi - lo) / 2;
    spawn_task(fan_task(fan.clone(), mid, hi));
    mid
}

/// Spawn what is left of a fan-out's range, `lo..hi`, as two tasks (one if a single branch
/// is left), so that a long run of waiting branches is started from both halves at once.
fn hand_off(fan: &Arc<Fan>, lo: u32, hi: u32) {
    if hi - lo > 1 {
        let mid = split_off(fan, lo, hi);
        spawn_task(fan_task(fan.clone(), lo, mid));
    } else if lo < hi {
        spawn_task(fan_task(fan.clone(), lo, hi));
    }
}

/// The position this branch goes on with, spawning a task for every other one released
/// (or for every other branch of the fan-out `fan`: one task, which spawns the rest).
pub(super) fn take_next(run: &Arc<Run>, next: &mut Vec<Position>, fan: &mut Option<Arc<Fan>>) -> Option<Position> {
    if let Some(fan) = fan.take() {
        // This branch goes on with the first target; one task spawns the others.
        let first = (Some(fan.group.clone()), fan.targets[0] as usize, fan.ord(0));
        let n = fan.targets.len() as u32;
        if run.program.has_dependencies {
            run.deps.branches_made(n as usize - 1);
        }
        spawn_task(fan_task(fan, 1, n));
        return Some(first);
    }
    if next.len() > 1 {
        // One shared-counter update for all, not one per task.
        run.tasks_started(next.len() - 1);
        if run.program.has_dependencies {
            run.deps.branches_made(next.len() - 1);
        }
    }
    let mut released = next.drain(..);
    let first = released.next()?;
    for (g, s, ord) in released {
        spawn_task(branch_task(TaskGuard::new(run.clone()), s, g, ord));
    }
    Some(first)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    fn size_of_val<F>(_: &F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Memory per pending branch is mostly this future (plus tokio's task header): keep it
    /// small. Rarely used parts (the `max_concurrent` acquire, an instrumented state) are
    /// boxed so they do not count here.
    #[test]
    fn a_branch_future_stays_small() {
        let mut def = crate::program::Definition::default();
        let handler: Arc<dyn agent_core::StateHandler> =
            Arc::new(|_c: agent_core::Context| async { agent_core::StateResult::End });
        def.states.push(crate::program::StateDef {
            name: "a".into(),
            handler,
            options: Default::default(),
            spec: None,
        });
        let prog = Arc::new(crate::program::Program::compile("x", &def).unwrap());
        let run = Arc::new(crate::run::Run::new(prog, agent_core::Context::new()));
        let fut = super::drive(&run, 0, None, crate::run::NO_BRANCH, true, None);
        // 288 since branches carry an identity (their ordinal and, in a group that keeps
        // one, their context handle, inline: a box cost an allocation per map item): 264
        // before. 304 since a fan task hands its branches one handle to reuse (`keep`): two
        // contended reference counts on the run's context fewer per map item.
        assert!(size_of_val(&fut) <= 304, "the branch future grew to {} bytes", size_of_val(&fut));
        let task = super::branch_task(crate::run::TaskGuard::new(run.clone()), 0, None, crate::run::NO_BRANCH);
        // 456 with `keep`: still inside the same 512-byte step of tokio's task cells.
        assert!(size_of_val(&task) <= 456, "the spawned branch task grew to {} bytes", size_of_val(&task));
        // A fan-out's task boxes its branch: tokio moves the spawned future several times.
        // Only a waiting branch races the run's stop, in a box of its own: tokio sizes a
        // task's cell in steps of 128 bytes, and a pending branch pays for the whole step.
        let task = super::fan_task(super::Fan::open(&run, None, 0, vec![0, 0], None, None), 1, 2);
        assert!(size_of_val(&task) <= 128, "a fan-out's branch task grew to {} bytes", size_of_val(&task));
    }
}
