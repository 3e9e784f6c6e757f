//! An agent's definition, and the immutable program compiled from it when a run starts.
//!
//! Invariants:
//! - `Definition` is what the builder edits; `Program` is what runs. A run holds an
//!   `Arc<Program>` and never sees later edits.
//! - `Program::compile` validates everything a run relies on (at least one state, unique
//!   names, a known start, known dependencies and `on_error` targets, no dependency cycle,
//!   valid options) before any state runs.
//! - Names resolve to indices once: a literal checked by `#[workflow]` costs a pointer
//!   subtraction (it points into this program's graph); any other name is first compared
//!   with the target its state resolved last time, then looked up in an Fx hash map. The
//!   cache is only a guess checked by name, so it can cost a lookup but never misroute.
//! - A state's name is held once: the definition, the program and its index share it (a
//!   [`Name`] is a `&'static str` or a shared `Arc<str>`), so compiling allocates nothing per
//!   name.
//! - `reach` is `Some` only when every state's targets are literals known at compile time
//!   (each state carries a `StateSpec` with `computed_targets == false`): only then are the
//!   edges the whole graph.
//! - The program's graph signature (see `version`) is computed from the program the first
//!   time it is asked for, then kept: compiling stays free of per-state allocation, and a
//!   program never changes, so neither does its signature.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use agent_core::{
    AgentError, DependencyConfig, GraphHash, GraphRecord, GraphSignature, Priority, RateLimit, ResourceRequirements,
    ResourceType, RetryPolicy, StateHandler, StateName, StateSpec, WorkflowGraph,
};
use rustc_hash::FxHashMap;

use crate::pool::ledger::Request;
use crate::pool::ResourcePool;
use crate::ratelimit::Limiter;
use crate::reach::Reach;

/// A state's name as the definition and its programs keep it: a `&'static str`, or text
/// built at run time, shared, so a program and its index take it without copying.
#[derive(Clone)]
pub(crate) enum Name {
    Static(&'static str),
    Shared(Arc<str>),
}

impl std::ops::Deref for Name {
    type Target = str;

    #[inline]
    fn deref(&self) -> &str {
        match self {
            Name::Static(s) => s,
            Name::Shared(s) => s,
        }
    }
}

impl std::borrow::Borrow<str> for Name {
    #[inline]
    fn borrow(&self) -> &str {
        self
    }
}

/// By text, as `str` hashes (the index is looked up by `&str`).
impl std::hash::Hash for Name {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (**self).hash(state)
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Name {}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        **self == **other
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

impl From<&'static str> for Name {
    fn from(name: &'static str) -> Self {
        Name::Static(name)
    }
}

impl From<Cow<'static, str>> for Name {
    fn from(name: Cow<'static, str>) -> Self {
        match name {
            Cow::Borrowed(s) => Name::Static(s),
            Cow::Owned(s) => Name::Shared(s.into()),
        }
    }
}

/// A state's options as the runtime keeps them (owned; builder methods edit them).
#[derive(Clone, Debug, Default)]
pub(crate) struct StateOptions {
    pub resources: Option<ResourceRequirements>,
    pub priority: Priority,
    pub timeout: Option<Duration>,
    pub retry: Option<RetryPolicy>,
    pub dependencies: Vec<(Cow<'static, str>, DependencyConfig)>,
    pub on_error: Option<Cow<'static, str>>,
    pub preemptible: bool,
    pub join: bool,
    pub blocking: bool,
    /// Quota scopes this state counts against, besides its agent and its name.
    pub tags: Vec<Cow<'static, str>>,
    /// At most this many starts a second (each attempt is a start).
    pub rate_limit: Option<RateLimit>,
    /// The states it declares it may go to (`StateConfig::targets`); `None`: undeclared.
    pub targets: Option<Vec<Cow<'static, str>>>,
}

impl From<&StateSpec> for StateOptions {
    fn from(s: &StateSpec) -> Self {
        StateOptions {
            resources: s.resources,
            priority: s.priority,
            timeout: s.timeout,
            retry: s.retry,
            dependencies: s.depends_on.iter().map(|(n, t)| (Cow::Borrowed(*n), DependencyConfig::new(*t))).collect(),
            on_error: s.on_error.map(Cow::Borrowed),
            preemptible: s.preemptible,
            join: s.join,
            blocking: s.blocking,
            tags: Vec::new(),
            rate_limit: s.rate_limit,
            targets: None,
        }
    }
}

pub(crate) struct StateDef {
    pub name: Name,
    pub handler: Arc<dyn StateHandler>,
    pub options: StateOptions,
    /// The compile-time description, when the state came from `#[state]`.
    pub spec: Option<&'static StateSpec>,
}

#[derive(Default)]
pub(crate) struct Definition {
    pub states: Vec<StateDef>,
    pub start: Option<Cow<'static, str>>,
    pub max_steps: Option<u64>,
    pub max_concurrent: Option<usize>,
    /// The compile-time graph whose states are `states[..graph.states.len()]`, in order.
    pub graph: Option<&'static WorkflowGraph>,
    /// The pool states with `resources` take from; the process-wide one when `None`.
    pub pool: Option<ResourcePool>,
    /// The retry policy of states that set none.
    pub retry: Option<RetryPolicy>,
    /// Rate limits shared by every state carrying the tag.
    pub tag_rate_limits: Vec<(Cow<'static, str>, RateLimit)>,
    /// Exactly what `#[workflow]` generated: nothing changed since (see `Agent::program`).
    pub pristine: bool,
    /// The context keys whose parallel writes combine, and how (`Agent::reduce`).
    pub reducers: Vec<(Cow<'static, str>, agent_core::Reduce)>,
}

pub(crate) struct CompiledState {
    pub name: Name,
    pub handler: Arc<dyn StateHandler>,
    /// What the state's attempts need beyond a plain call; `None` for the common state with
    /// no resources, timeout or blocking body, which takes the branch's fast path.
    pub guarded: Option<Box<Guarded>>,
    /// Where the state goes once its retries are spent, instead of failing the run.
    pub on_error: Option<usize>,
    /// What must hold before it starts (see `exec::gate`); empty for most states.
    pub dependencies: Vec<(usize, DependencyConfig)>,
    /// States that depend on this one.
    pub dependents: Vec<usize>,
    /// Some dependent counts this state's completions forever (`Once`).
    pub once_tracked: bool,
    /// The only states it may go to, when it declared them (ascending); any other target
    /// fails the run with `UndeclaredTarget`.
    pub declared: Option<Box<[u32]>>,
    /// The compile-time description, when the state came from `#[state]`: its literal
    /// targets, for the graph signature.
    pub spec: Option<&'static StateSpec>,
}

/// The options `exec::attempt` enforces, prepared once per program.
pub(crate) struct Guarded {
    /// The pool request, when the state asks for something.
    pub request: Option<(ResourcePool, Request)>,
    pub timeout: Option<Duration>,
    pub retry: Option<RetryPolicy>,
    pub blocking: bool,
    /// The state waits at its dependency gate first.
    pub has_dependencies: bool,
    /// Waited on before each attempt: the state's own limit, then its tags'.
    pub limiters: Vec<Arc<Limiter>>,
}

pub(crate) struct Program {
    pub states: Vec<CompiledState>,
    /// Some state has dependencies (runs then keep dependency bookkeeping).
    pub has_dependencies: bool,
    index: FxHashMap<Name, u32>,
    pub start: usize,
    pub reach: Option<Reach>,
    pub max_steps: Option<u64>,
    pub max_concurrent: Option<usize>,
    join: Vec<bool>,
    /// Whether any of `join` is set.
    any_join: bool,
    /// Per state, 1 + the index its last named transition resolved to (0: none yet), so a
    /// builder state returning the same name each time pays a short compare, not a hash.
    last_target: Box<[AtomicU32]>,
    /// The graph literal targets may point into (see `resolve`).
    graph: Option<&'static WorkflowGraph>,
    /// The reducers of context keys (`None`: the agent declares none, and its fan-outs keep
    /// no identity per branch unless they are maps).
    pub reducers: Option<Arc<agent_core::Reducers>>,
    /// The graph signature, its hash and its JSON, once asked for (see `Program::signature`).
    version: OnceLock<GraphRecord>,
}

/// The programs of unmodified `#[workflow]` agents, one per workflow, shared by every agent
/// `agent()` makes (while any of them holds it): a program is a pure function of the
/// definition, which for such an agent is the generated one. A program with rate limits is
/// not shared, since its limiters count the starts of one agent's states.
static SHARED: std::sync::Mutex<Vec<(usize, std::sync::Weak<Program>)>> = std::sync::Mutex::new(Vec::new());

/// The shared program of `graph`'s unmodified agents, compiled by `compile` if none is alive.
pub(crate) fn shared(
    graph: &'static WorkflowGraph,
    compile: impl FnOnce() -> Result<Program, AgentError>,
) -> Result<Arc<Program>, AgentError> {
    let key = graph as *const WorkflowGraph as usize;
    let mut cache = SHARED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(p) = cache.iter().find(|(k, _)| *k == key).and_then(|(_, w)| w.upgrade()) {
        return Ok(p);
    }
    let program = Arc::new(compile()?);
    let limited = program.states.iter().any(|s| s.guarded.as_ref().is_some_and(|g| !g.limiters.is_empty()));
    if !limited {
        cache.retain(|(k, w)| *k != key && w.strong_count() > 0);
        cache.push((key, Arc::downgrade(&program)));
    }
    Ok(program)
}

impl Program {
    pub(crate) fn compile(agent: &str, def: &Definition) -> Result<Program, AgentError> {
        if def.states.is_empty() {
            return Err(AgentError::NoStates { agent: agent.to_owned() });
        }
        let mut index = FxHashMap::default();
        index.reserve(def.states.len());
        for (i, s) in def.states.iter().enumerate() {
            if index.insert(s.name.clone(), i as u32).is_some() {
                return Err(AgentError::DuplicateState { agent: agent.to_owned(), state: s.name.to_string() });
            }
        }
        let start = match &def.start {
            None => 0,
            Some(name) => *index
                .get(&**name)
                .ok_or_else(|| AgentError::UnknownStart { agent: agent.to_owned(), state: name.to_string() })?
                as usize,
        };
        let lookup = |state: &StateDef, target: &str, role: &'static str| {
            index.get(target).map(|&i| i as usize).ok_or_else(|| AgentError::UnknownReference {
                agent: agent.to_owned(),
                state: state.name.to_string(),
                target: target.to_owned(),
                role,
            })
        };
        let mut dep_edges = Vec::new();
        let mut other_edges = Vec::new();
        for (i, s) in def.states.iter().enumerate() {
            validate_options(s, def.retry)?;
            for (dep, _) in &s.options.dependencies {
                dep_edges.push((lookup(s, dep, "dependency")?, i));
            }
            if let Some(target) = &s.options.on_error {
                other_edges.push((i, lookup(s, target, "on_error")?));
            }
            for target in s.options.targets.iter().flatten() {
                lookup(s, target, "target")?;
            }
        }
        if let Some(cycle) = (!dep_edges.is_empty()).then(|| find_cycle(def.states.len(), &dep_edges)).flatten() {
            return Err(AgentError::DependencyCycle {
                cycle: cycle.into_iter().map(|i| def.states[i].name.to_string()).collect(),
            });
        }

        // Per-state lists only when some state has dependencies (most programs have none).
        let n_deps = if dep_edges.is_empty() { 0 } else { def.states.len() };
        let mut dependencies: Vec<Vec<(usize, DependencyConfig)>> = vec![Vec::new(); n_deps];
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n_deps];
        let mut once_tracked = vec![false; n_deps];
        for (i, s) in def.states.iter().enumerate().filter(|_| n_deps > 0) {
            for (dep, config) in &s.options.dependencies {
                let d = lookup(s, dep, "dependency")?;
                dependencies[i].push((d, config.clone()));
                if !dependents[d].contains(&i) {
                    dependents[d].push(i);
                }
                once_tracked[d] |= config.lifecycle == agent_core::DependencyLifecycle::Once;
            }
        }
        let mut dependencies = dependencies.into_iter();
        for (tag, limit) in &def.tag_rate_limits {
            limit.validate().map_err(|reason| AgentError::InvalidOption { state: format!("tag {tag}"), reason })?;
        }
        let tag_limiters: Vec<(&str, Arc<Limiter>)> =
            def.tag_rate_limits.iter().map(|(t, l)| (&**t, Arc::new(Limiter::new(*l)))).collect();
        let mut dependents = dependents.into_iter();

        // Declared targets are enforced, so a state declaring them is as known as a
        // `#[state]` whose targets are all literals.
        let mut declared: Vec<Option<Box<[u32]>>> = def
            .states
            .iter()
            .map(|s| {
                s.options.targets.as_ref().map(|t| {
                    let mut v: Vec<u32> = t.iter().filter_map(|n| index.get(&**n).copied()).collect();
                    v.sort_unstable();
                    v.dedup();
                    v.into_boxed_slice()
                })
            })
            .collect();
        let fully_known = def
            .states
            .iter()
            .zip(&declared)
            .all(|(s, d)| d.is_some() || s.spec.is_some_and(|spec| !spec.computed_targets));
        let reach = fully_known.then(|| {
            for (i, s) in def.states.iter().enumerate() {
                for target in s.spec.map(|sp| sp.edges).unwrap_or_default() {
                    // A literal naming no state fails the run if taken; it adds no edge.
                    if let Some(&j) = index.get(*target) {
                        other_edges.push((i, j as usize));
                    }
                }
                for &j in declared[i].iter().flatten() {
                    other_edges.push((i, j as usize));
                }
            }
            Reach::new(def.states.len(), dep_edges.iter().chain(&other_edges).copied())
        });

        // Trust pointers into the graph only while its states are this program's first states.
        let graph = def.graph.filter(|g| {
            g.states.len() <= def.states.len()
                && g.states.iter().zip(&def.states).all(|(spec, s)| spec.name == &*s.name)
        });
        Ok(Program {
            has_dependencies: def.states.iter().any(|s| !s.options.dependencies.is_empty()),
            last_target: def.states.iter().map(|_| AtomicU32::new(0)).collect(),
            graph,
            join: def.states.iter().map(|s| s.options.join).collect(),
            any_join: def.states.iter().any(|s| s.options.join),
            states: def
                .states
                .iter()
                .enumerate()
                .map(|(i, s)| CompiledState {
                    dependencies: dependencies.next().unwrap_or_default(),
                    dependents: dependents.next().unwrap_or_default(),
                    once_tracked: once_tracked.get(i).copied().unwrap_or(false),
                    name: s.name.clone(),
                    handler: s.handler.clone(),
                    guarded: guarded(agent, s, def, &tag_limiters),
                    on_error: s.options.on_error.as_ref().and_then(|t| index.get(&**t)).map(|&i| i as usize),
                    declared: declared[i].take(),
                    spec: s.spec,
                })
                .collect(),
            index,
            start,
            reach,
            max_steps: def.max_steps,
            max_concurrent: def.max_concurrent,
            reducers: (!def.reducers.is_empty())
                .then(|| Arc::new(def.reducers.iter().map(|(k, r)| (k.as_ref().into(), r.clone())).collect())),
            version: OnceLock::new(),
        })
    }

    /// The program's graph signature (see `version`), computed the first time.
    pub(crate) fn signature(&self) -> &GraphSignature {
        self.graph_record().signature()
    }

    /// The hash of the program's graph signature.
    pub(crate) fn graph_hash(&self) -> GraphHash {
        self.graph_record().hash()
    }

    /// The program's graph signature as checkpoints record it (shared: cloning it is cheap).
    pub(crate) fn graph_record(&self) -> &GraphRecord {
        self.version.get_or_init(|| GraphRecord::new(crate::version::signature(self)))
    }

    /// The index of the state `name` names.
    #[inline]
    pub(crate) fn resolve(&self, name: &StateName) -> Option<usize> {
        if let (Some(spec), Some(graph)) = (name.spec(), self.graph) {
            // A literal checked by `#[workflow]` points at its state in that workflow's GRAPH:
            // if that is this program's graph, the offset is the index.
            let size = std::mem::size_of::<StateSpec>();
            let offset = (spec as *const StateSpec as usize).wrapping_sub(graph.states.as_ptr() as usize);
            if offset < std::mem::size_of_val(graph.states) {
                return Some(offset / size);
            }
        }
        self.index.get(name.as_str()).map(|&i| i as usize)
    }

    /// The index of the state `name` names, as the transition target of state `from`.
    ///
    /// Like [`Program::resolve`], trying first the state `from` went to last time.
    #[inline]
    pub(crate) fn resolve_from(&self, from: usize, name: &StateName) -> Option<usize> {
        if name.spec().is_none() {
            let last = self.last_target[from].load(Relaxed);
            if last != 0 {
                let (known, wanted): (&str, &str) = (&self.states[last as usize - 1].name, name.as_str());
                // The same address and length is the same text, known without comparing it (a
                // call to `memcmp`, a twentieth of a transition): a builder state's
                // `&'static str` target is usually the very string its target was added with.
                if std::ptr::eq(known, wanted) || known == wanted {
                    return Some(last as usize - 1);
                }
            }
        }
        let to = self.resolve(name)?;
        self.last_target[from].store(to as u32 + 1, Relaxed);
        Some(to)
    }

    /// The index of the state called `name`.
    pub(crate) fn index_of(&self, name: &str) -> Option<usize> {
        self.index.get(name).map(|&i| i as usize)
    }

    #[inline]
    pub(crate) fn is_join(&self, state: usize) -> bool {
        self.join[state]
    }

    /// Whether any state is marked `join`.
    #[inline]
    pub(crate) fn has_joins(&self) -> bool {
        self.any_join
    }
}

fn guarded(agent: &str, s: &StateDef, def: &Definition, tag_limiters: &[(&str, Arc<Limiter>)]) -> Option<Box<Guarded>> {
    let o = &s.options;
    let limiters: Vec<Arc<Limiter>> = (o.rate_limit.map(|l| Arc::new(Limiter::new(l))).into_iter())
        .chain(tag_limiters.iter().filter(|(t, _)| o.tags.iter().any(|x| x == t)).map(|(_, l)| l.clone()))
        .collect();
    let pool = def.pool.as_ref();
    let retry = o.retry.or(def.retry);
    let request = o.resources.filter(|r| !r.is_empty()).map(|r| {
        let pool = pool.cloned().unwrap_or_else(ResourcePool::global);
        let request = Request {
            agent: agent.into(),
            state: (*s.name).into(),
            tags: o.tags.iter().map(|t| Arc::<str>::from(&**t)).collect(),
            amounts: std::array::from_fn(|k| r.requested(ResourceType::ALL[k])),
            priority: o.priority,
            preemptible: o.preemptible,
        };
        (pool, request)
    });
    let has_dependencies = !o.dependencies.is_empty();
    if request.is_none()
        && o.timeout.is_none()
        && retry.is_none()
        && !o.blocking
        && limiters.is_empty()
        && !has_dependencies
    {
        return None;
    }
    Some(Box::new(Guarded { request, timeout: o.timeout, retry, blocking: o.blocking, has_dependencies, limiters }))
}

fn validate_options(s: &StateDef, def_retry: Option<RetryPolicy>) -> Result<(), AgentError> {
    let invalid = |reason: String| AgentError::InvalidOption { state: s.name.to_string(), reason };
    if let Some(r) = &s.options.resources {
        r.validate().map_err(invalid)?;
    }
    if let Some(r) = &s.options.retry {
        r.validate().map_err(invalid)?;
    }
    if let Some(r) = &def_retry {
        r.validate().map_err(invalid)?;
    }
    if let Some(r) = &s.options.rate_limit {
        r.validate().map_err(invalid)?;
    }
    if s.options.timeout == Some(Duration::ZERO) {
        return Err(invalid("timeout must be longer than zero".into()));
    }
    Ok(())
}

/// A cycle among `edges` as a path whose first state is repeated at the end, if any.
fn find_cycle(n: usize, edges: &[(usize, usize)]) -> Option<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &(a, b) in edges {
        out[a].push(b);
    }
    // 0 = unvisited, 1 = on the current path, 2 = done.
    let mut mark = vec![0u8; n];
    let mut path = Vec::new();
    // Empty again after each root: one allocation for the whole walk.
    let mut stack = Vec::new();
    for root in 0..n {
        if mark[root] != 0 {
            continue;
        }
        stack.push((root, 0usize));
        mark[root] = 1;
        path.push(root);
        while let Some((node, next)) = stack.last_mut() {
            if let Some(&succ) = out[*node].get(*next) {
                *next += 1;
                match mark[succ] {
                    0 => {
                        mark[succ] = 1;
                        path.push(succ);
                        stack.push((succ, 0));
                    }
                    1 => {
                        let from = path.iter().position(|&p| p == succ).unwrap_or(0);
                        let mut cycle = path[from..].to_vec();
                        cycle.push(succ);
                        return Some(cycle);
                    }
                    _ => {}
                }
            } else {
                mark[*node] = 2;
                path.pop();
                stack.pop();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::find_cycle;

    #[test]
    fn finds_a_cycle_and_names_it_in_order() {
        assert_eq!(find_cycle(3, &[(0, 1), (1, 2)]), None);
        assert_eq!(find_cycle(3, &[(0, 1), (1, 2), (2, 1)]), Some(vec![1, 2, 1]));
        assert_eq!(find_cycle(1, &[(0, 0)]), Some(vec![0, 0]));
    }
}
