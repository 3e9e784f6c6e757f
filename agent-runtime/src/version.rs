//! A compiled program's graph signature ([`GraphSignature`]), so that runs of one graph are
//! told from runs of another: checkpoints record it, restoring one under a different graph
//! is refused (`checkpoint::validate`), and a worker names what it serves by its hash.
//!
//! Which options are in the signature, and why, is written in agent-core's `version`
//! module; here is how a program gives them.
//!
//! Invariants:
//! - The signature is a function of the program alone, and the program of the definition:
//!   an agent built with the builder and one built by `#[workflow]` with the same states,
//!   edges and options have equal signatures, whatever order their states were added in.
//! - A state's edges are what the program treats as its known targets (see
//!   `Program::compile`): its literal targets (`#[state]` bodies) that name a state of the
//!   program, and its declared targets (`.targets(...)`). It has computed targets unless it
//!   declared its targets or is a `#[state]` whose targets are all literals: the same rule
//!   that decides whether the graph is fully known.
//! - The retry budget is the one attempts are counted against: the state's policy, or the
//!   agent's default one.

use agent_core::{DependencySignature, GraphSignature, StateSignature};

use crate::program::Program;

/// The graph signature of `prog`.
pub(crate) fn signature(prog: &Program) -> GraphSignature {
    let name = |i: usize| prog.states[i].name.to_string();
    let mut sig = GraphSignature::new(name(prog.start));
    for (i, s) in prog.states.iter().enumerate() {
        let mut state = StateSignature::default();
        let literals = s.spec.map(|spec| spec.edges).unwrap_or_default();
        state.edges.extend(literals.iter().filter_map(|t| prog.index_of(t)).map(name));
        state.edges.extend(s.declared.iter().flatten().map(|&j| name(j as usize)));
        state.computed_targets = s.declared.is_none() && s.spec.is_none_or(|spec| spec.computed_targets);
        state.on_error = s.on_error.map(name);
        state.join = prog.is_join(i);
        state.max_retries = s.guarded.as_ref().and_then(|g| g.retry).map_or(0, |r| r.max_retries);
        state.dependencies.extend(
            (s.dependencies.iter())
                .map(|(d, config)| DependencySignature::new(name(*d), config.dependency_type, config.lifecycle)),
        );
        sig.states.insert(name(i), state);
    }
    sig
}
