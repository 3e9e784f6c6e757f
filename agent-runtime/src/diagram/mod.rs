//! The picture of a built agent: its definition as a [`Diagram`], coloured by its current
//! (or last) run: statuses, retries, and the requests for human input its states made.
//!
//! Invariants:
//! - States appear in definition order (a `#[workflow]`'s source order, then states added
//!   with the builder); edges are what is known without running: the literal targets of
//!   `#[state]` functions, declared targets (`StateConfig::targets`, enforced), `on_error`
//!   routes and dependencies. A state whose targets are
//!   computed at run time (every builder closure) is marked so, and its transitions are not
//!   drawn: the picture never invents an edge.
//! - Joins are marked as declared (`#[state(join)]`, `StateConfig::join`).
//! - Reading statuses and retries takes no lock a running state could be waiting on: they
//!   are the run's per-state atomics. The requests for input are the input hub's records of
//!   the run (its lock is never held across an await); a request is marked on the state
//!   that made it when its record names that state.

use std::sync::atomic::Ordering::Relaxed;

use agent_core::{Diagram, EdgeKind, StateStatus};

use crate::program::Definition;
use crate::run::Run;

/// The diagram of `def`, with `run`'s statuses when there is a run.
pub(crate) fn of_definition(name: &str, def: &Definition, run: Option<&Run>) -> Diagram {
    let start = def.start.as_deref().or_else(|| def.states.first().map(|s| &*s.name)).map(str::to_owned);
    let mut d = Diagram::new(name, start);
    for s in &def.states {
        let declared = s.options.targets.is_some();
        d.add_state(&*s.name, !declared && s.spec.is_none_or(|spec| spec.computed_targets)).join = s.options.join;
    }
    for s in &def.states {
        for to in s.spec.map_or(&[][..], |spec| spec.edges) {
            d.add_edge(&*s.name, *to, EdgeKind::Transition);
        }
        for to in s.options.targets.iter().flatten() {
            let literal = s.spec.is_some_and(|spec| spec.edges.contains(&&**to));
            if !literal {
                d.add_edge(&*s.name, &**to, EdgeKind::Transition);
            }
        }
        if let Some(to) = &s.options.on_error {
            d.add_edge(&*s.name, &**to, EdgeKind::OnError);
        }
        for (dep, config) in &s.options.dependencies {
            d.add_edge(&**dep, &*s.name, EdgeKind::Dependency(config.dependency_type));
        }
    }
    let Some(run) = run else { return d };
    let states = || run.program.states.iter().zip(run.states.iter());
    let inputs = match run.sinks.input_id.get() {
        Some(id) => run.sinks.links.inputs.records(id),
        None => Vec::new(),
    };
    d.with_statuses(states().map(|(s, c)| (&*s.name, StateStatus::from_u8(c.status.load(Relaxed)))))
        .with_retries(states().map(|(s, c)| (&*s.name, c.retries.load(Relaxed))))
        .with_requests(inputs.iter().map(|r| &r.request))
}

#[cfg(feature = "console")]
mod stored;
#[cfg(feature = "console")]
pub(crate) use stored::{expand_children, unrun};
