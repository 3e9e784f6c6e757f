//! What a state returns: where the run goes next.
//!
//! Invariants:
//! - A [`StateName`] is a name plus, for a literal target checked by `#[workflow]`, a
//!   pointer to that state's entry in the workflow's `GRAPH`. The pointer is only ever a
//!   shortcut: the runtime uses it when it points into the graph its program was built from
//!   (the offset is then the state's index), and otherwise looks the name up, so a state
//!   function reused in another agent can never be sent to the wrong state.
//! - So resolving a literal transition of a `#[workflow]` costs a pointer subtraction: no
//!   hashing and no string compare.
//! - Converting from `&'static str` never allocates; only a name built at run time
//!   (`String`) owns its text.

use std::borrow::Cow;
use std::fmt;

use crate::options::StateSpec;

/// The name of a state as a transition target.
///
/// Built from `&'static str` (no allocation) or `String` (a name computed at run time).
///
/// ```
/// use agent_core::StateName;
/// let a: StateName = "merge".into();
/// let b: StateName = format!("chunk_{}", 3).into();
/// assert_eq!(a.as_str(), "merge");
/// assert_eq!(b.as_str(), "chunk_3");
/// ```
#[derive(Clone)]
pub struct StateName {
    name: Cow<'static, str>,
    spec: Option<&'static StateSpec>,
}

impl StateName {
    /// A name known to be the state `spec` of a workflow's `GRAPH`; used by generated code
    /// for checked literal targets.
    #[doc(hidden)]
    pub const fn in_graph(name: &'static str, spec: &'static StateSpec) -> Self {
        Self { name: Cow::Borrowed(name), spec: Some(spec) }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The graph entry this name was checked against, if it came from a checked literal.
    #[doc(hidden)]
    #[inline]
    pub fn spec(&self) -> Option<&'static StateSpec> {
        self.spec
    }

    /// Whether the name borrows a `&'static str`, so that dropping it frees nothing.
    ///
    /// ```
    /// use agent_core::StateName;
    ///
    /// assert!(StateName::from("b").is_static());
    /// assert!(!StateName::from(format!("chunk_{}", 1)).is_static());
    /// ```
    #[inline]
    pub fn is_static(&self) -> bool {
        matches!(self.name, Cow::Borrowed(_))
    }
}

/// Names compare by text; the graph entry is a shortcut, not identity.
impl PartialEq for StateName {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for StateName {}

impl std::hash::Hash for StateName {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state)
    }
}

impl fmt::Debug for StateName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.name, f)
    }
}

impl fmt::Display for StateName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl From<&'static str> for StateName {
    fn from(name: &'static str) -> Self {
        Self { name: Cow::Borrowed(name), spec: None }
    }
}

impl From<String> for StateName {
    fn from(name: String) -> Self {
        Self { name: Cow::Owned(name), spec: None }
    }
}

impl From<&String> for StateName {
    fn from(name: &String) -> Self {
        Self { name: Cow::Owned(name.clone()), spec: None }
    }
}

/// Where a run goes after a state.
///
/// ```
/// use agent_core::StateResult;
/// let end: StateResult = None.into();
/// assert_eq!(end, StateResult::End);
/// let next: StateResult = "format_output".into();
/// assert_eq!(next, StateResult::next("format_output"));
/// let fan: StateResult = ["b", "c"].into();
/// assert_eq!(fan, StateResult::parallel(["b", "c"]));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateResult {
    /// This branch of the run ends here.
    End,
    /// Run the named state next.
    Next(StateName),
    /// Start every named state at once; where they meet again is a fan-in.
    Parallel(Vec<StateName>),
    /// One branch per item, each at the same state with its own item (see
    /// [`StateResult::map`]). Boxed, so that a `StateResult` stays as small as a name: the
    /// runtime keeps one in every waiting branch.
    Map(Box<MapSpec>),
}

/// The key a map's results go to unless it names another
/// ([`StateResult::results_into`]); [`Context::results`](crate::Context::results) reads it.
pub const RESULTS_KEY: &str = "results";

/// A map: the state each branch runs first, the items (one branch each, in order, as JSON),
/// and the key the branches' results go to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapSpec {
    /// The state every branch starts at.
    pub target: StateName,
    /// The items, encoded; `Err` if one could not be (the state that returned the map fails
    /// with it).
    pub items: Result<std::sync::Arc<[serde_json::Value]>, String>,
    /// Where the results go, in item order: set as a list, or folded one by one through the
    /// key's reducer if it has one.
    pub into: Cow<'static, str>,
}

impl StateResult {
    /// Go to `state` next.
    pub fn next(state: impl Into<StateName>) -> Self {
        StateResult::Next(state.into())
    }

    /// Start every state of `states` at once.
    ///
    /// An empty list ends the branch, like [`StateResult::End`].
    pub fn parallel<I>(states: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<StateName>,
    {
        StateResult::Parallel(states.into_iter().map(Into::into).collect())
    }

    /// A branch per item of `items`, each starting at `target` with its own item
    /// ([`Context::item`](crate::Context::item)); the branches' results
    /// ([`Context::set_result`](crate::Context::set_result)) reach the state where they meet,
    /// in item order, under [`RESULTS_KEY`] ([`Context::results`](crate::Context::results)).
    ///
    /// Items run at most [`MAP_WINDOW`](Self::MAP_WINDOW) at a time, so a map over 100,000
    /// items holds the items and their results, not 100,000 futures. In a durable run each
    /// branch's end is recorded on its own: after a crash only the unfinished items run
    /// again. An empty list ends the branch, like [`StateResult::End`].
    ///
    /// A branch is one execution of `target` (with its own resources, timeout and retries);
    /// the state `target` names next is where the branches meet, and it runs once, after
    /// all of them, as any fan-in does. Several steps per item belong in `target` itself,
    /// or in a child workflow it runs (`ctx.run_child`). Writes to keys with a reducer
    /// (`Agent::reduce`) fold in item order there too.
    ///
    /// ```
    /// use agent_core::StateResult;
    /// let map = StateResult::map("score", vec![3, 1, 2]);
    /// assert_eq!(map.targets()[0].as_str(), "score");
    /// let StateResult::Map(spec) = &map else { unreachable!() };
    /// assert_eq!(spec.items.as_ref().unwrap().len(), 3);
    /// ```
    pub fn map<T, I>(target: impl Into<StateName>, items: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: serde::Serialize,
    {
        let items = items.into_iter().map(|i| serde_json::to_value(i).map_err(|e| e.to_string())).collect();
        StateResult::Map(Box::new(MapSpec { target: target.into(), items, into: Cow::Borrowed(RESULTS_KEY) }))
    }

    /// How many of a map's items run at once, at most.
    pub const MAP_WINDOW: u32 = 1024;

    /// A map's results go to `key` instead of [`RESULTS_KEY`]: folded one by one, in item
    /// order, through the key's reducer if the agent declares one (`Agent::reduce`), or set
    /// as the list of them. No effect on anything but a map.
    ///
    /// ```
    /// use agent_core::StateResult;
    /// let StateResult::Map(spec) = StateResult::map("score", [1]).results_into("best") else { unreachable!() };
    /// assert_eq!(spec.into, "best");
    /// ```
    pub fn results_into(self, key: impl Into<Cow<'static, str>>) -> Self {
        match self {
            StateResult::Map(spec) => StateResult::Map(Box::new(MapSpec { into: key.into(), ..*spec })),
            other => other,
        }
    }

    /// Every target named, in order (empty for `End`; a map's one target).
    pub fn targets(&self) -> &[StateName] {
        match self {
            StateResult::End => &[],
            StateResult::Next(n) => std::slice::from_ref(n),
            StateResult::Parallel(v) => v,
            StateResult::Map(m) => std::slice::from_ref(&m.target),
        }
    }
}

impl From<StateName> for StateResult {
    fn from(name: StateName) -> Self {
        StateResult::Next(name)
    }
}

impl From<&'static str> for StateResult {
    fn from(name: &'static str) -> Self {
        StateResult::Next(name.into())
    }
}

impl From<String> for StateResult {
    fn from(name: String) -> Self {
        StateResult::Next(name.into())
    }
}

/// `None.into()` ends the branch; `Some("b").into()` goes to `b`.
impl From<Option<&'static str>> for StateResult {
    fn from(name: Option<&'static str>) -> Self {
        match name {
            None => StateResult::End,
            Some(n) => StateResult::Next(n.into()),
        }
    }
}

impl<T: Into<StateName>, const N: usize> From<[T; N]> for StateResult {
    fn from(names: [T; N]) -> Self {
        StateResult::parallel(names)
    }
}

impl<T: Into<StateName>> From<Vec<T>> for StateResult {
    fn from(names: Vec<T>) -> Self {
        StateResult::parallel(names)
    }
}

/// The boxed error a failing state reports.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a state function may return: a [`StateResult`], or a `Result` of one whose error
/// converts into [`BoxError`] (so `?` works inside states).
pub trait IntoStateOutcome: Send + 'static {
    /// Normalise into a `Result`.
    fn into_outcome(self) -> Result<StateResult, BoxError>;
}

impl IntoStateOutcome for StateResult {
    #[inline]
    fn into_outcome(self) -> Result<StateResult, BoxError> {
        Ok(self)
    }
}

impl<E> IntoStateOutcome for Result<StateResult, E>
where
    E: Into<BoxError> + Send + 'static,
{
    #[inline]
    fn into_outcome(self) -> Result<StateResult, BoxError> {
        self.map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_result_stays_as_small_as_a_name() {
        // Every waiting branch holds one: a map's spec is boxed.
        assert_eq!(std::mem::size_of::<StateResult>(), std::mem::size_of::<StateName>());
    }

    #[test]
    fn conversions_build_the_documented_variants() {
        assert_eq!(StateResult::from(None), StateResult::End);
        assert_eq!(StateResult::from(Some("x")), StateResult::next("x"));
        let v: StateResult = vec!["a", "b"].into();
        assert_eq!(v.targets().len(), 2);
        assert_eq!(v.targets()[1].as_str(), "b");
        let s: StateResult = format!("c_{}", 1).into();
        assert_eq!(s.targets()[0].as_str(), "c_1");
    }

    #[test]
    fn graph_entries_are_kept_and_absent_by_default() {
        static SPEC: StateSpec = StateSpec::new("a");
        assert!(std::ptr::eq(StateName::in_graph("a", &SPEC).spec().unwrap(), &SPEC));
        assert!(StateName::from("a").spec().is_none());
        assert_eq!(StateName::in_graph("a", &SPEC), StateName::from("a"));
    }

    #[test]
    fn result_errors_convert_to_box_error() {
        let r: Result<StateResult, std::io::Error> = Err(std::io::Error::other("boom"));
        let e = r.into_outcome().unwrap_err();
        assert_eq!(e.to_string(), "boom");
        let r: Result<StateResult, String> = Ok(StateResult::End);
        assert_eq!(r.into_outcome().unwrap(), StateResult::End);
    }
}
