//! The analysis of a workflow: its states, their names and edges, and what is wrong with them.
//!
//! Invariants:
//! - The model holds names and spans, never tokens to emit: it can be built and checked
//!   without compiling anything, which is how it is tested.
//! - [`Workflow::problems`] reports every problem at once, in source order per kind:
//!   missing states, reserved and duplicate names, unknown targets, dependencies, `on_error`
//!   and `start`, each with a "did you mean" when a state name is close.
//! - Reachability is checked only when it can be known: every state's targets are literals
//!   (`computed_targets` false everywhere) and every name resolved (an unknown target would
//!   otherwise make its intended target look unreachable, a second error for one typo).
//!   A state is reachable from `start` along literal edges, `on_error` edges, and
//!   dependencies in both directions (a dependent activates its dependency, and a completed
//!   dependency activates its dependents).
//! - The first state of a given name is the one `GRAPH` and the hints use; later ones are
//!   reported as duplicates.

use std::collections::{HashMap, HashSet, VecDeque};

use proc_macro2::Span;

use crate::diag::{did_you_mean, suggestion_suffix};
use crate::parse::{Named, StateFn, StateOptions, WorkflowMod};
use crate::targets;

/// One state, as the analysis sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct State {
    /// The function's name, the state's name.
    pub name: Named,
    /// Its options.
    pub options: StateOptions,
    /// Every literal target in its body, in source order, duplicates kept.
    pub targets: Vec<Named>,
    /// Whether its body also has targets computed at run time.
    pub computed_targets: bool,
}

impl State {
    /// Analyse one state function.
    pub fn from_fn(state: &StateFn) -> Self {
        let scan = targets::scan_only(&state.func.block);
        Self {
            name: Named::from(&state.func.sig.ident),
            options: state.options.clone(),
            targets: scan.targets.iter().map(Named::from).collect(),
            computed_targets: scan.computed,
        }
    }

    /// Its literal targets, first occurrence of each, in source order.
    pub fn edges(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for t in &self.targets {
            if !out.contains(&t.text.as_str()) {
                out.push(&t.text);
            }
        }
        out
    }
}

/// A workflow module, as the analysis sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Workflow {
    /// The module's name.
    pub module: Named,
    /// The workflow's name (`name = …`, else the module's).
    pub name: String,
    /// The first state (`start = …`, else the first state in source order).
    pub start: Named,
    /// Whether `start` was written out.
    pub explicit_start: bool,
    /// `max_concurrent`.
    pub max_concurrent: Option<usize>,
    /// Every state, in source order.
    pub states: Vec<State>,
}

/// Something wrong with a workflow, at a span.
#[derive(Clone, Debug, PartialEq)]
pub enum Problem {
    /// The module has no `#[state]` fn.
    NoStates {
        /// The module.
        module: Named,
    },
    /// A second state with one name.
    DuplicateState {
        /// The second one.
        name: Named,
    },
    /// A literal target names no state.
    UnknownTarget {
        /// The literal.
        target: Named,
        /// A close state name.
        suggestion: Option<String>,
    },
    /// `depends_on` names no state.
    UnknownDependency {
        /// The name in `depends_on`.
        dependency: Named,
        /// A close state name.
        suggestion: Option<String>,
    },
    /// A state depends on itself.
    SelfDependency {
        /// The name in `depends_on`.
        dependency: Named,
    },
    /// `on_error` names no state.
    UnknownOnError {
        /// The literal.
        target: Named,
        /// A close state name.
        suggestion: Option<String>,
    },
    /// `start` names no state.
    UnknownStart {
        /// The literal.
        start: Named,
        /// A close state name.
        suggestion: Option<String>,
    },
    /// Nothing reaches the state from `start`.
    Unreachable {
        /// The state.
        state: Named,
        /// The start state.
        start: String,
    },
}

impl Problem {
    /// Where to point.
    pub fn span(&self) -> Span {
        match self {
            Problem::NoStates { module: n }
            | Problem::DuplicateState { name: n }
            | Problem::UnknownTarget { target: n, .. }
            | Problem::UnknownDependency { dependency: n, .. }
            | Problem::SelfDependency { dependency: n }
            | Problem::UnknownOnError { target: n, .. }
            | Problem::UnknownStart { start: n, .. }
            | Problem::Unreachable { state: n, .. } => n.span,
        }
    }

    /// What to say.
    pub fn message(&self) -> String {
        match self {
            Problem::NoStates { module } => {
                format!("workflow `{}` has no states: mark its `async fn`s with `#[state]`", module.text)
            }
            Problem::DuplicateState { name } => {
                format!("a state named `{}` is already defined in this workflow", name.text)
            }
            Problem::UnknownTarget { target, suggestion } => {
                format!("no state named `{}` in this workflow{}", target.text, suggestion_suffix(suggestion.as_deref()))
            }
            Problem::UnknownDependency { dependency, suggestion } => format!(
                "`depends_on` names no state of this workflow: `{}`{}",
                dependency.text,
                suggestion_suffix(suggestion.as_deref())
            ),
            Problem::SelfDependency { dependency } => format!("state `{}` cannot depend on itself", dependency.text),
            Problem::UnknownOnError { target, suggestion } => format!(
                "`on_error` names no state of this workflow: `{}`{}",
                target.text,
                suggestion_suffix(suggestion.as_deref())
            ),
            Problem::UnknownStart { start, suggestion } => format!(
                "`start` names no state of this workflow: `{}`{}",
                start.text,
                suggestion_suffix(suggestion.as_deref())
            ),
            Problem::Unreachable { state, start } => format!(
                "state `{}` is never reached: no literal transition, dependency or `on_error` leads to it from \
                 the start state `{start}`",
                state.text
            ),
        }
    }

    /// The problem as a compile error.
    pub fn to_error(&self) -> syn::Error {
        syn::Error::new(self.span(), self.message())
    }
}

impl Workflow {
    /// Analyse a parsed `#[workflow]` module.
    pub fn from_mod(raw: &WorkflowMod) -> Self {
        let module = Named::from(&raw.module.ident);
        let states: Vec<State> = raw.states.iter().map(|(_, s)| State::from_fn(s)).collect();
        let (start, explicit_start) = match (&raw.options.start, states.first()) {
            (Some(start), _) => (start.clone(), true),
            (None, Some(first)) => (first.name.clone(), false),
            (None, None) => (module.clone(), false),
        };
        Self {
            name: raw.options.name.as_ref().map_or_else(|| module.text.clone(), syn::LitStr::value),
            module,
            start,
            explicit_start,
            max_concurrent: raw.options.max_concurrent,
            states,
        }
    }

    /// The index of the state named `name` (the first, if several are).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.states.iter().position(|s| s.name.text == name)
    }

    fn suggest(&self, name: &str) -> Option<String> {
        did_you_mean(name, self.states.iter().map(|s| s.name.text.as_str())).map(str::to_owned)
    }

    /// Everything wrong with the workflow.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        if self.states.is_empty() {
            out.push(Problem::NoStates { module: self.module.clone() });
            return out;
        }
        let mut seen = HashSet::new();
        for state in &self.states {
            if !seen.insert(state.name.text.as_str()) {
                out.push(Problem::DuplicateState { name: state.name.clone() });
            }
        }
        let before_names = out.len();
        for state in &self.states {
            for target in &state.targets {
                if self.index_of(&target.text).is_none() {
                    let suggestion = self.suggest(&target.text);
                    out.push(Problem::UnknownTarget { target: target.clone(), suggestion });
                }
            }
            for dep in &state.options.depends_on {
                if dep.name == state.name {
                    out.push(Problem::SelfDependency { dependency: dep.name.clone() });
                } else if self.index_of(&dep.name.text).is_none() {
                    let suggestion = self.suggest(&dep.name.text);
                    out.push(Problem::UnknownDependency { dependency: dep.name.clone(), suggestion });
                }
            }
            if let Some(target) = &state.options.on_error {
                if self.index_of(&target.text).is_none() {
                    let suggestion = self.suggest(&target.text);
                    out.push(Problem::UnknownOnError { target: target.clone(), suggestion });
                }
            }
        }
        if self.explicit_start && self.index_of(&self.start.text).is_none() {
            let suggestion = self.suggest(&self.start.text);
            out.push(Problem::UnknownStart { start: self.start.clone(), suggestion });
        }
        if out.len() == before_names && self.fully_known() {
            out.extend(self.unreachable());
        }
        out
    }

    /// Whether every state's targets are all literals.
    pub fn fully_known(&self) -> bool {
        self.states.iter().all(|s| !s.computed_targets)
    }

    /// The states nothing reaches from `start` (only meaningful when [`Self::fully_known`]).
    fn unreachable(&self) -> Vec<Problem> {
        let mut next: HashMap<&str, Vec<&str>> = HashMap::new();
        for state in &self.states {
            let from = state.name.text.as_str();
            let out = next.entry(from).or_default();
            out.extend(state.targets.iter().map(|t| t.text.as_str()));
            out.extend(state.options.on_error.iter().map(|t| t.text.as_str()));
            out.extend(state.options.depends_on.iter().map(|d| d.name.text.as_str()));
            for dep in &state.options.depends_on {
                next.entry(dep.name.text.as_str()).or_default().push(from);
            }
        }
        let mut reached: HashSet<&str> = HashSet::from([self.start.text.as_str()]);
        let mut queue = VecDeque::from([self.start.text.as_str()]);
        while let Some(at) = queue.pop_front() {
            for to in next.get(at).into_iter().flatten() {
                if reached.insert(to) {
                    queue.push_back(to);
                }
            }
        }
        self.states
            .iter()
            .filter(|s| !reached.contains(s.name.text.as_str()))
            .map(|s| Problem::Unreachable { state: s.name.clone(), start: self.start.text.clone() })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use proc_macro2::TokenStream;
    use quote::quote;

    use super::*;
    use crate::diag::Errors;
    use crate::parse;

    fn analyse(args: TokenStream, module: TokenStream) -> Workflow {
        let mut errors = Errors::new();
        let raw = parse::workflow(args, module, &mut errors).expect("a module");
        assert!(errors.is_empty(), "parse errors: {:?}", errors.finish());
        Workflow::from_mod(&raw)
    }

    fn named(text: &str) -> Named {
        Named::new(text, Span::call_site())
    }

    #[test]
    fn hello_workflow_is_sound() {
        let w = analyse(
            quote!(),
            quote! {
                mod hello_workflow {
                    #[state]
                    async fn process_data(ctx: &Context) -> StateResult {
                        ctx.set_state("greeting", "Hello, World!");
                        "format_output".into()
                    }
                    #[state]
                    async fn format_output(ctx: &Context) -> StateResult { StateResult::End }
                }
            },
        );
        assert_eq!(w.name, "hello_workflow");
        assert_eq!(w.start, named("process_data"));
        assert!(!w.explicit_start);
        assert_eq!(w.states[0].edges(), ["format_output"]);
        assert!(w.fully_known());
        assert_eq!(w.problems(), []);
    }

    #[test]
    fn unknown_names_everywhere_with_suggestions() {
        let w = analyse(
            quote!(start = "frist"),
            quote! {
                mod m {
                    #[state(depends_on(prepair = Required), on_error = "handel")]
                    async fn first(ctx: &Context) -> StateResult {
                        if x { return StateResult::next("secnd"); }
                        match y { 1 => "second".into(), _ => StateResult::parallel(["second", "zzz_unrelated"]) }
                    }
                    #[state]
                    async fn second(ctx: &Context) -> StateResult { StateResult::End }
                    #[state]
                    async fn prepare(ctx: &Context) -> StateResult { StateResult::End }
                    #[state]
                    async fn handle(ctx: &Context) -> StateResult { StateResult::End }
                }
            },
        );
        assert_eq!(
            w.problems(),
            [
                Problem::UnknownTarget { target: named("secnd"), suggestion: Some("second".into()) },
                Problem::UnknownTarget { target: named("zzz_unrelated"), suggestion: None },
                Problem::UnknownDependency { dependency: named("prepair"), suggestion: Some("prepare".into()) },
                Problem::UnknownOnError { target: named("handel"), suggestion: Some("handle".into()) },
                Problem::UnknownStart { start: named("frist"), suggestion: Some("first".into()) },
            ]
        );
        assert_eq!(w.problems()[0].message(), "no state named `secnd` in this workflow; did you mean `second`?");
    }

    #[test]
    fn duplicates_and_empty_modules() {
        let w = analyse(
            quote!(),
            quote! {
                mod m {
                    #[state] async fn a(ctx: &Context) -> StateResult { "agent".into() }
                    #[state] async fn a(ctx: &Context) -> StateResult { StateResult::End }
                    #[state] async fn agent(ctx: &Context) -> StateResult { StateResult::End }
                }
            },
        );
        // `agent` is a state name like any other (its struct is renamed when lowered).
        assert_eq!(w.problems(), [Problem::DuplicateState { name: named("a") }]);
        let empty = analyse(
            quote!(),
            quote!(
                mod m {
                    fn helper() {}
                }
            ),
        );
        assert_eq!(empty.problems(), [Problem::NoStates { module: named("m") }]);
    }

    #[test]
    fn unreachable_states_when_the_graph_is_known() {
        let w = analyse(
            quote!(),
            quote! {
                mod m {
                    #[state] async fn a(ctx: &Context) -> StateResult { "b".into() }
                    #[state(on_error = "c")] async fn b(ctx: &Context) -> StateResult { StateResult::End }
                    #[state] async fn c(ctx: &Context) -> StateResult { StateResult::End }
                    #[state(depends_on(a = Required))] async fn d(ctx: &Context) -> StateResult { StateResult::End }
                    #[state] async fn e(ctx: &Context) -> StateResult { StateResult::End }
                    #[state(depends_on(f = Optional))] async fn g(ctx: &Context) -> StateResult { StateResult::End }
                    #[state] async fn f(ctx: &Context) -> StateResult { "g".into() }
                }
            },
        );
        let unreachable: Vec<String> = w
            .problems()
            .into_iter()
            .map(|p| match p {
                Problem::Unreachable { state, start } => {
                    assert_eq!(start, "a");
                    state.text
                }
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(unreachable, ["e", "g", "f"]);
    }

    #[test]
    fn dependencies_reach_both_ways() {
        let w = analyse(
            quote!(),
            quote! {
                mod m {
                    #[state(depends_on(b = Required))] async fn a(ctx: &Context) -> StateResult { StateResult::End }
                    #[state] async fn b(ctx: &Context) -> StateResult { StateResult::End }
                    #[state(depends_on(b = Sequential))] async fn c(ctx: &Context) -> StateResult { StateResult::End }
                }
            },
        );
        assert_eq!(w.problems(), []);
    }

    #[test]
    fn computed_targets_switch_reachability_off() {
        let w = analyse(
            quote!(),
            quote! {
                mod m {
                    #[state] async fn a(ctx: &Context) -> StateResult { StateResult::next(format!("b{}", 1)) }
                    #[state] async fn b1(ctx: &Context) -> StateResult { StateResult::End }
                }
            },
        );
        assert!(!w.fully_known());
        assert!(w.states[0].computed_targets);
        assert_eq!(w.problems(), []);
    }

    #[test]
    fn unknown_names_switch_reachability_off() {
        let w = analyse(
            quote!(),
            quote! {
                mod m {
                    #[state] async fn a(ctx: &Context) -> StateResult { "bb".into() }
                    #[state] async fn b(ctx: &Context) -> StateResult { StateResult::End }
                }
            },
        );
        assert_eq!(w.problems(), [Problem::UnknownTarget { target: named("bb"), suggestion: Some("b".into()) }]);
    }

    #[test]
    fn self_dependencies_and_explicit_names() {
        let w = analyse(
            quote!(name = "custom", start = "b", max_concurrent = 2),
            quote! {
                mod m {
                    #[state(depends_on(a = Required))] async fn a(ctx: &Context) -> StateResult { StateResult::End }
                    #[state] async fn b(ctx: &Context) -> StateResult { "a".into() }
                }
            },
        );
        assert_eq!(w.name, "custom");
        assert_eq!(w.start, named("b"));
        assert_eq!(w.max_concurrent, Some(2));
        assert_eq!(w.problems(), [Problem::SelfDependency { dependency: named("a") }]);
    }

    #[test]
    fn edges_are_deduplicated_in_source_order() {
        let w = analyse(
            quote!(),
            quote! {
                mod m {
                    #[state] async fn a(ctx: &Context) -> StateResult {
                        if x { return "c".into(); }
                        if y { return StateResult::next("b"); }
                        "c".into()
                    }
                    #[state] async fn b(ctx: &Context) -> StateResult { StateResult::End }
                    #[state] async fn c(ctx: &Context) -> StateResult { StateResult::End }
                }
            },
        );
        assert_eq!(w.states[0].targets.len(), 3);
        assert_eq!(w.states[0].edges(), ["c", "b"]);
    }
}
