//! A stored run's picture with the child runs its states started drawn inside it
//! (`graph RUN --expand`, the console's graph with `?expand=1`).
//!
//! Invariants:
//! - A child is drawn on the parent's state that started it, as its lineage records
//!   (`Lineage::parent_state`); of several children of one state (it ran more than once), the
//!   newest is drawn. Lineages without a state (forks, children recorded before the store
//!   kept it) are not drawn.
//! - A child is drawn from its workflow's definition when the caller knows it (the
//!   console's registered agents, the command line's agent), coloured by its newest readable
//!   snapshot and its requests for input; otherwise from that snapshot alone: its states and
//!   statuses, every state marked as having transitions not known here. A child whose
//!   snapshot cannot be read is drawn uncoloured; one with neither is not drawn.
//! - At most [`EXPAND_DEPTH`] levels of children are read, and at most [`EXPAND_WIDTH`]
//!   children of one run, so a deep or wide family costs bounded store reads; the picture
//!   never waits on a lock a run holds (it reads the store only).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use agent_core::Diagram;

use crate::store::{read_checkpoint, CheckpointStore, LineageKind, StoreError};
use crate::Agent;

/// How many levels of child runs a picture expands.
pub(crate) const EXPAND_DEPTH: usize = 3;

/// How many children of one run a picture reads (one per state is drawn).
pub(crate) const EXPAND_WIDTH: usize = 64;

/// An agent's picture before any run: its compile-time graph for a `#[workflow]`, what the
/// builder knows otherwise.
pub(crate) fn unrun(agent: &Agent) -> Diagram {
    match agent.graph() {
        Some(graph) => graph.diagram(),
        None => agent.diagram(),
    }
}

/// `diagram`, the picture of stored run `run_id`, with the children its states started
/// drawn inside it (see the module docs); `known` gives the unrun picture of a workflow by
/// name, when the caller has its definition.
pub(crate) async fn expand_children(
    store: &dyn CheckpointStore,
    run_id: &str,
    diagram: Diagram,
    known: &(dyn Fn(&str) -> Option<Diagram> + Sync),
) -> Result<Diagram, StoreError> {
    expand(store, run_id.to_owned(), diagram, known, EXPAND_DEPTH).await
}

type Expanding<'a> = Pin<Box<dyn Future<Output = Result<Diagram, StoreError>> + Send + 'a>>;

fn expand<'a>(
    store: &'a dyn CheckpointStore,
    run_id: String,
    mut diagram: Diagram,
    known: &'a (dyn Fn(&str) -> Option<Diagram> + Sync),
    depth: usize,
) -> Expanding<'a> {
    Box::pin(async move {
        if depth == 0 {
            return Ok(diagram);
        }
        // The newest child of each state (descendants come oldest first).
        let mut newest = BTreeMap::new();
        let children = store.descendants(&run_id).await?;
        for l in children.into_iter().filter(|l| l.kind == LineageKind::Child).take(EXPAND_WIDTH) {
            if let Some(state) = l.parent_state {
                newest.insert(state, l.run_id);
            }
        }
        for (state, child) in newest {
            if let Some(picture) = child_picture(store, &child, known).await? {
                let picture = expand(store, child, picture, known, depth - 1).await?;
                diagram = diagram.with_child(&state, picture);
            }
        }
        Ok(diagram)
    })
}

/// The picture of child run `run_id`, coloured by what the store holds of it; `None` when
/// neither its definition nor a snapshot is at hand.
async fn child_picture(
    store: &dyn CheckpointStore,
    run_id: &str,
    known: &(dyn Fn(&str) -> Option<Diagram> + Sync),
) -> Result<Option<Diagram>, StoreError> {
    let Some(row) = store.get_run(run_id).await? else { return Ok(None) };
    let checkpoint = read_checkpoint(store, run_id).await.ok().flatten();
    let picture = match (known(&row.agent), &checkpoint) {
        (Some(defined), _) => defined,
        (None, Some(c)) => {
            let mut d = Diagram::new(&row.agent, c.states.first().map(|s| s.name.clone()));
            for s in &c.states {
                d.add_state(&s.name, true);
            }
            d
        }
        (None, None) => return Ok(None),
    };
    let picture = match &checkpoint {
        Some(c) => picture.with_checkpoint(c),
        None => picture,
    };
    let inputs = store.inputs(Some(run_id), false).await?;
    Ok(Some(picture.with_requests(inputs.iter().map(|r| &r.request))))
}
