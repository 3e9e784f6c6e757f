//! Lowering: from the checked model to what codegen prints, one IR node per generated item.
//!
//! Invariants:
//! - Lowering runs only on a workflow whose model has no problems (or on a standalone
//!   state, which has no name checks), so every name it emits resolves.
//! - A literal target that names a state of the workflow is rewritten to
//!   `StateName::hinted("name", INDEX)`, INDEX being the state's position in `GRAPH.states`
//!   (source order), with the literal's own span; standalone states get no hints.
//! - `edges` are the literal targets after rewriting, each once, in source order: the same
//!   list the model checked.
//! - The handler is the user's function, unchanged but for the rewritten literals, the
//!   `#[state]` attribute and doc comments (which go on the struct), and its visibility.

use proc_macro2::Literal;
use syn::{Attribute, Ident, ItemFn, ItemMod, LitStr, Visibility};

use crate::model::{self, Workflow};
use crate::parse::{
    ContextKey, CtxKind, DependencyKind, PriorityLevel, RateLimit, Resources, Retry, StateFn, WorkflowMod,
};
use crate::targets;

/// The data of one `StateSpec`.
#[derive(Clone, Debug, PartialEq)]
pub struct SpecIr {
    /// `name`.
    pub name: String,
    /// `resources`.
    pub resources: Option<Resources>,
    /// `priority`.
    pub priority: PriorityLevel,
    /// `timeout`, in nanoseconds.
    pub timeout_nanos: Option<u64>,
    /// `retry`.
    pub retry: Option<Retry>,
    /// `rate_limit`.
    pub rate_limit: Option<RateLimit>,
    /// `depends_on`.
    pub depends_on: Vec<(String, DependencyKind)>,
    /// `on_error`.
    pub on_error: Option<String>,
    /// `preemptible`.
    pub preemptible: bool,
    /// `join`.
    pub join: bool,
    /// `blocking`.
    pub blocking: bool,
    /// `edges`.
    pub edges: Vec<String>,
    /// `computed_targets`.
    pub computed_targets: bool,
}

/// One state: a unit struct, its `SPEC`, and its handler.
#[derive(Clone, Debug, PartialEq)]
pub struct StateIr {
    /// The struct's name: the function's.
    pub ident: Ident,
    /// The function's visibility, given to the struct.
    pub vis: Visibility,
    /// The function's doc attributes, given to the struct.
    pub docs: Vec<Attribute>,
    /// The spec.
    pub spec: SpecIr,
    /// The function, rewritten, to nest inside `StateHandler::call`.
    pub handler: ItemFn,
    /// How the handler takes the context.
    pub ctx: CtxKind,
}

/// An item of the workflow module after lowering.
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant, reason = "a handful per expansion, built once")]
pub enum ModItem {
    /// Left as written.
    Verbatim(syn::Item),
    /// A state.
    State(StateIr),
}

/// The `GRAPH` static and the `agent()` function.
#[derive(Clone, Debug, PartialEq)]
pub struct GraphIr {
    /// `name`.
    pub name: String,
    /// `start`.
    pub start: String,
    /// `max_concurrent`.
    pub max_concurrent: Option<usize>,
    /// The states' struct names, in `GRAPH.states` order.
    pub states: Vec<Ident>,
}

/// A whole workflow module.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkflowIr {
    /// The module as written (its items are replaced by `items`).
    pub module: ItemMod,
    /// Its items, states lowered.
    pub items: Vec<ModItem>,
    /// The graph.
    pub graph: GraphIr,
    /// Typed context keys.
    pub context: Vec<ContextKey>,
    /// The input and output types of `child()`, when given.
    pub child: Option<(syn::Type, syn::Type)>,
}

/// Lower a workflow whose model has no problems.
pub fn workflow(raw: &WorkflowMod, model: &Workflow) -> WorkflowIr {
    let mut items: Vec<ModItem> = match &raw.module.content {
        Some((_, items)) => items.iter().cloned().map(ModItem::Verbatim).collect(),
        None => Vec::new(),
    };
    let hint = |name: &str| model.index_of(name).and_then(|i| u32::try_from(i).ok());
    let mut states = Vec::new();
    for (index, state) in &raw.states {
        if let Some(mut ir) = state_ir(state, &hint) {
            if crate::symbol::GENERATED_ITEMS.iter().any(|g| ir.spec.name == g.as_str()) {
                // The module's own `agent()`, `GRAPH` or `ContextKeys` would clash with the
                // state's struct: the struct takes a name of ours, the state keeps its own.
                ir.ident = quote::format_ident!("__agent_state_{}", ir.spec.name, span = ir.ident.span());
            }
            states.push(ir.ident.clone());
            items[*index] = ModItem::State(ir);
        }
    }
    WorkflowIr {
        module: raw.module.clone(),
        items,
        graph: GraphIr {
            name: model.name.clone(),
            start: model.start.text.clone(),
            max_concurrent: model.max_concurrent,
            states,
        },
        context: raw.options.context.clone(),
        child: raw.options.child.clone(),
    }
}

/// Lower a standalone `#[state]`: no hints. `None` when its signature is wrong.
pub fn standalone(state: &StateFn) -> Option<StateIr> {
    state_ir(state, &|_| None)
}

fn state_ir(state: &StateFn, hint: &dyn Fn(&str) -> Option<u32>) -> Option<StateIr> {
    let ctx = state.ctx?;
    let mut handler = state.func.clone();
    let scan = targets::scan(&mut handler.block, &mut |lit: &LitStr| {
        let index = Literal::usize_unsuffixed(hint(&lit.value())? as usize);
        Some(
            syn::parse_quote_spanned!(lit.span()=> ::agent::__private::StateName::in_graph(#lit, &GRAPH.states[#index])),
        )
    });
    let (docs, attrs): (Vec<Attribute>, Vec<Attribute>) =
        handler.attrs.drain(..).partition(|a| a.path().is_ident("doc"));
    handler.attrs = attrs;
    handler.vis = Visibility::Inherited;
    let model = model::State {
        targets: scan.targets.iter().map(Into::into).collect(),
        computed_targets: scan.computed,
        ..model::State::from_fn(state)
    };
    let options = &state.options;
    let spec = SpecIr {
        // `r#type` names the state `type`, as the builder would.
        name: syn::ext::IdentExt::unraw(&state.func.sig.ident).to_string(),
        resources: options.resources,
        priority: options.priority,
        timeout_nanos: options.timeout_nanos,
        retry: options.retry,
        rate_limit: options.rate_limit,
        depends_on: options.depends_on.iter().map(|d| (d.name.text.clone(), d.kind)).collect(),
        on_error: options.on_error.as_ref().map(|n| n.text.clone()),
        preemptible: options.preemptible,
        join: options.join,
        blocking: options.blocking,
        edges: model.edges().into_iter().map(str::to_owned).collect(),
        computed_targets: model.computed_targets,
    };
    Some(StateIr { ident: state.func.sig.ident.clone(), vis: state.func.vis.clone(), docs, spec, handler, ctx })
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::*;
    use crate::diag::Errors;
    use crate::parse;

    #[test]
    fn literals_get_hints_and_edges_are_deduplicated() {
        let mut errors = Errors::new();
        let raw = parse::workflow(
            quote!(),
            quote! {
                mod m {
                    /// Docs.
                    #[state(priority = High)]
                    pub async fn a(ctx: &Context) -> StateResult {
                        if x { return "b".into(); }
                        StateResult::parallel(["b", "a"])
                    }
                    #[state] async fn b(_: Context) -> StateResult { StateResult::End }
                }
            },
            &mut errors,
        )
        .unwrap();
        assert!(errors.is_empty());
        let model = Workflow::from_mod(&raw);
        let ir = workflow(&raw, &model);
        let ModItem::State(a) = &ir.items[0] else { panic!("state expected") };
        assert_eq!(a.spec.edges, ["b", "a"]);
        assert_eq!(a.spec.priority, PriorityLevel::High);
        assert!(!a.spec.computed_targets);
        assert_eq!(a.docs.len(), 1);
        assert!(a.handler.attrs.is_empty());
        assert_eq!(a.handler.vis, Visibility::Inherited);
        let handler = &a.handler;
        let body = quote!(#handler).to_string();
        assert!(body.contains("StateName :: in_graph (\"b\" , & GRAPH . states [1])"), "{body}");
        assert!(body.contains("StateName :: in_graph (\"a\" , & GRAPH . states [0])"), "{body}");
        assert_eq!(ir.graph.states.len(), 2);
        assert_eq!(ir.graph.start, "a");
    }

    #[test]
    fn standalone_states_keep_plain_literals() {
        let mut errors = Errors::new();
        let raw = parse::state(
            quote!(timeout = 2, rate_limit(per_second = 0.5, burst = 4)),
            quote!(
                async fn a(ctx: &Context) -> StateResult {
                    "elsewhere".into()
                }
            ),
            &mut errors,
        )
        .unwrap();
        let ir = standalone(&raw).unwrap();
        assert_eq!(ir.spec.edges, ["elsewhere"]);
        assert_eq!(ir.spec.timeout_nanos, Some(2_000_000_000));
        assert_eq!(ir.spec.rate_limit, Some(RateLimit { per_second: 0.5, burst: 4 }));
        let handler = &ir.handler;
        assert!(!quote!(#handler).to_string().contains("in_graph"));
    }
}
