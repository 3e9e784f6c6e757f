//! The words of the macros' small languages: option names, value names, field names.
//!
//! Invariants:
//! - Every name the parser accepts is a constant here, and every message that lists valid
//!   names builds its list from the same constants, so the two cannot drift apart.
//! - A [`Symbol`] compares equal to an identifier or a single-segment path with its text.

use std::fmt;

use syn::{Ident, Path};

/// A keyword of an attribute's option language.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Symbol(pub &'static str);

impl Symbol {
    /// The symbol's text.
    pub const fn as_str(self) -> &'static str {
        self.0
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl PartialEq<Symbol> for Ident {
    fn eq(&self, word: &Symbol) -> bool {
        self == word.0
    }
}

impl PartialEq<Symbol> for Path {
    fn eq(&self, word: &Symbol) -> bool {
        self.get_ident().is_some_and(|i| i == word.0)
    }
}

// ----- #[workflow(...)] --------------------------------------------------------------------

/// `name = "…"`: the workflow's name.
pub const NAME: Symbol = Symbol("name");
/// `start = "state"`: the first state.
pub const START: Symbol = Symbol("start");
/// `max_concurrent = N`: the most states running at once.
pub const MAX_CONCURRENT: Symbol = Symbol("max_concurrent");
/// `context(key: Type, …)`: typed context keys.
pub const CONTEXT: Symbol = Symbol("context");

/// `input = Type`: what a parent gives the workflow run as its child.
pub const INPUT: Symbol = Symbol("input");
/// `output = Type`: what the workflow gives back to a parent, read from its context.
pub const OUTPUT: Symbol = Symbol("output");

/// Every `#[workflow(...)]` option, in the order messages list them.
pub const WORKFLOW_OPTIONS: &[Symbol] = &[NAME, START, MAX_CONCURRENT, CONTEXT, INPUT, OUTPUT];

// ----- #[state(...)] -----------------------------------------------------------------------

/// `resources(cpu = …, …)`.
pub const RESOURCES: Symbol = Symbol("resources");
/// `priority = High`.
pub const PRIORITY: Symbol = Symbol("priority");
/// `timeout = 300` (seconds).
pub const TIMEOUT: Symbol = Symbol("timeout");
/// `retry(max = …, …)`.
pub const RETRY: Symbol = Symbol("retry");
/// `rate_limit(per_second = …, burst = …)`.
pub const RATE_LIMIT: Symbol = Symbol("rate_limit");
/// `depends_on(state = Required, …)`.
pub const DEPENDS_ON: Symbol = Symbol("depends_on");
/// `on_error = "state"`.
pub const ON_ERROR: Symbol = Symbol("on_error");
/// `preemptible`.
pub const PREEMPTIBLE: Symbol = Symbol("preemptible");
/// `join`.
pub const JOIN: Symbol = Symbol("join");
/// `blocking`.
pub const BLOCKING: Symbol = Symbol("blocking");

/// Every `#[state(...)]` option, in the order messages list them.
pub const STATE_OPTIONS: &[Symbol] =
    &[RESOURCES, PRIORITY, TIMEOUT, RETRY, RATE_LIMIT, DEPENDS_ON, ON_ERROR, PREEMPTIBLE, JOIN, BLOCKING];

// ----- resources(...) ----------------------------------------------------------------------

/// CPU cores.
pub const CPU: Symbol = Symbol("cpu");
/// Memory in MB.
pub const MEMORY_MB: Symbol = Symbol("memory_mb");
/// I/O weight.
pub const IO: Symbol = Symbol("io");
/// Network weight.
pub const NETWORK: Symbol = Symbol("network");
/// GPU units.
pub const GPU: Symbol = Symbol("gpu");

/// Every `resources(...)` field, in the order of `ResourceRequirements`.
pub const RESOURCE_FIELDS: &[Symbol] = &[CPU, MEMORY_MB, IO, NETWORK, GPU];

// ----- retry(...) --------------------------------------------------------------------------

/// Retries after the first attempt.
pub const MAX: Symbol = Symbol("max");
/// Seconds before the first retry.
pub const INITIAL_DELAY: Symbol = Symbol("initial_delay");
/// The longest wait, in seconds.
pub const MAX_DELAY: Symbol = Symbol("max_delay");
/// The factor between waits.
pub const EXPONENTIAL_BASE: Symbol = Symbol("exponential_base");
/// Spread waits at random.
pub const JITTER: Symbol = Symbol("jitter");

/// Every `retry(...)` field.
pub const RETRY_FIELDS: &[Symbol] = &[MAX, INITIAL_DELAY, MAX_DELAY, EXPONENTIAL_BASE, JITTER];

// ----- rate_limit(...) ---------------------------------------------------------------------

/// Starts a second, fractions allowed.
pub const PER_SECOND: Symbol = Symbol("per_second");
/// Starts allowed at once.
pub const BURST: Symbol = Symbol("burst");

/// Every `rate_limit(...)` field.
pub const RATE_LIMIT_FIELDS: &[Symbol] = &[PER_SECOND, BURST];

// ----- values ------------------------------------------------------------------------------

/// `Priority::Low`.
pub const LOW: Symbol = Symbol("Low");
/// `Priority::Normal`.
pub const NORMAL: Symbol = Symbol("Normal");
/// `Priority::High`.
pub const HIGH: Symbol = Symbol("High");
/// `Priority::Critical`.
pub const CRITICAL: Symbol = Symbol("Critical");

/// Every priority, lowest first.
pub const PRIORITIES: &[Symbol] = &[LOW, NORMAL, HIGH, CRITICAL];

/// `DependencyType::Required`.
pub const REQUIRED: Symbol = Symbol("Required");
/// `DependencyType::Optional`.
pub const OPTIONAL: Symbol = Symbol("Optional");
/// `DependencyType::Parallel`.
pub const PARALLEL: Symbol = Symbol("Parallel");
/// `DependencyType::Sequential`.
pub const SEQUENTIAL: Symbol = Symbol("Sequential");

/// Every dependency type.
pub const DEPENDENCY_TYPES: &[Symbol] = &[REQUIRED, OPTIONAL, PARALLEL, SEQUENTIAL];

// ----- names the macros recognise in code --------------------------------------------------

/// The attribute that marks a state function.
pub const STATE_ATTR: Symbol = Symbol("state");
/// The crate whose path may prefix the attribute (`agent::state`).
pub const AGENT_CRATE: Symbol = Symbol("agent");
/// The type a state receives.
pub const CONTEXT_TYPE: Symbol = Symbol("Context");
/// The type a state returns.
pub const STATE_RESULT_TYPE: Symbol = Symbol("StateResult");
/// The wrapper a fallible state returns.
pub const RESULT_TYPE: Symbol = Symbol("Result");

/// Items `#[workflow]` generates in the module. A state of one of these names is given a
/// struct of another name (see `lower`), so any function name is a state name.
pub const GENERATED_ITEMS: &[Symbol] = &[Symbol("agent"), Symbol("GRAPH"), Symbol("ContextKeys"), Symbol("child")];

/// Methods a `Context` already has (inherent in `agent-core`, or from traits it implements),
/// which a typed key's accessor must not shadow or be shadowed by. Keep in step with
/// `agent-core/src/context.rs`.
pub const CONTEXT_METHODS: &[&str] = &[
    "new",
    "set_state",
    "try_set_state",
    "get_state",
    "get_state_or",
    "try_get_state",
    "update_state",
    "update_state_or_default",
    "has_state",
    "remove_state",
    "keys",
    "len",
    "is_empty",
    "set_typed",
    "get_typed",
    "try_get_typed",
    "update_typed",
    "deep_clone",
    "to_json",
    "to_json_string",
    "from_json",
    "from_json_str",
    "last_error",
    "human_in_the_loop",
    "allocation",
    "clone",
    "clone_from",
    "fmt",
    "default",
    "to_owned",
    "into",
    "try_into",
    "borrow",
    "type_id",
];

/// The list `` `a`, `b` or `c` `` for messages.
pub fn list(words: &[Symbol]) -> String {
    let quoted: Vec<String> = words.iter().map(|w| format!("`{w}`")).collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_read_as_prose() {
        assert_eq!(list(&[LOW]), "`Low`");
        assert_eq!(list(&[LOW, HIGH]), "`Low` or `High`");
        assert_eq!(list(PRIORITIES), "`Low`, `Normal`, `High` or `Critical`");
    }

    #[test]
    fn symbols_compare_with_idents_and_paths() {
        let ident: Ident = syn::parse_quote!(timeout);
        assert!(ident == TIMEOUT);
        let path: Path = syn::parse_quote!(timeout);
        assert!(path == TIMEOUT);
        let long: Path = syn::parse_quote!(a::timeout);
        assert!(long != TIMEOUT);
    }
}
