//! Code generation: tokens from the lowered IR.
//!
//! Invariants:
//! - Generated code names only `::agent::__private::…`, `::core::…` and `::std::…` paths, so
//!   it compiles whatever the user imported or shadowed, with `agent` as the only dependency.
//! - Trait impls are wrapped in `const _: () = { … };` and marked
//!   `#[automatically_derived]`; every generated public item has a doc comment, so user
//!   crates under `#![warn(missing_docs)]` stay quiet.
//! - Spans: user tokens keep theirs; glue that can fail type-checking because of user code
//!   (the outcome conversion) takes the span of the user's return type.
//! - [`fallback_workflow`] is what a module with errors expands to, beside the errors: the
//!   module with its state functions left as plain functions (so their bodies are still
//!   checked and IDEs still see them) and stand-ins for `GRAPH`, `agent()` and the
//!   context accessors, so code using the module does not add follow-up errors.

use proc_macro2::{Literal, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Ident, Item};

use crate::lower::{GraphIr, ModItem, SpecIr, StateIr, WorkflowIr};
use crate::parse::{ContextKey, CtxKind, DependencyKind, PriorityLevel, WorkflowMod};

/// A non-negative finite float as a `f64` literal (`-0.0` printed as `0f64`).
fn float(v: f64) -> Literal {
    Literal::f64_suffixed(v.abs())
}

fn duration(nanos: u64) -> TokenStream {
    let nanos = Literal::u64_suffixed(nanos);
    quote!(::agent::__private::Duration::from_nanos(#nanos))
}

fn option(value: Option<TokenStream>) -> TokenStream {
    match value {
        Some(v) => quote!(::agent::__private::Option::Some(#v)),
        None => quote!(::agent::__private::Option::None),
    }
}

/// The `StateSpec { … }` expression.
pub fn spec(spec: &SpecIr) -> TokenStream {
    let name = &spec.name;
    let resources = option(spec.resources.map(|r| {
        let (cpu, memory_mb, io, network, gpu) =
            (float(r.cpu), float(r.memory_mb), float(r.io), float(r.network), float(r.gpu));
        quote!(::agent::__private::ResourceRequirements::new().cpu(#cpu).memory_mb(#memory_mb).io(#io).network(#network).gpu(#gpu))
    }));
    let priority = match spec.priority {
        PriorityLevel::Low => quote!(Low),
        PriorityLevel::Normal => quote!(Normal),
        PriorityLevel::High => quote!(High),
        PriorityLevel::Critical => quote!(Critical),
    };
    let timeout = option(spec.timeout_nanos.map(duration));
    // `RetryPolicy::new()` and a setter per field given: the defaults stay agent-core's.
    let retry = option(spec.retry.map(|r| {
        let max = r.max.map(|n| {
            let n = Literal::u32_suffixed(n);
            quote!(.max_retries(#n))
        });
        let initial = r.initial_delay_nanos.map(|n| {
            let d = duration(n);
            quote!(.initial_delay(#d))
        });
        let max_delay = r.max_delay_nanos.map(|n| {
            let d = duration(n);
            quote!(.max_delay(#d))
        });
        let base = r.exponential_base.map(|b| {
            let b = float(b);
            quote!(.exponential_base(#b))
        });
        let jitter = r.jitter.map(|j| quote!(.jitter(#j)));
        quote!(::agent::__private::RetryPolicy::new() #max #initial #max_delay #base #jitter)
    }));
    let rate_limit = option(spec.rate_limit.map(|r| {
        let (per_second, burst) = (float(r.per_second), Literal::u32_suffixed(r.burst));
        quote!(::agent::__private::RateLimit { per_second: #per_second, burst: #burst })
    }));
    let depends_on = spec.depends_on.iter().map(|(name, kind)| {
        let kind = match kind {
            DependencyKind::Required => quote!(Required),
            DependencyKind::Optional => quote!(Optional),
            DependencyKind::Parallel => quote!(Parallel),
            DependencyKind::Sequential => quote!(Sequential),
        };
        quote!((#name, ::agent::__private::DependencyType::#kind))
    });
    let on_error = option(spec.on_error.as_ref().map(|s| quote!(#s)));
    let (preemptible, join, blocking) = (spec.preemptible, spec.join, spec.blocking);
    let edges = &spec.edges;
    let computed_targets = spec.computed_targets;
    quote! {
        ::agent::__private::StateSpec {
            name: #name,
            resources: #resources,
            priority: ::agent::__private::Priority::#priority,
            timeout: #timeout,
            retry: #retry,
            rate_limit: #rate_limit,
            depends_on: &[#(#depends_on),*],
            on_error: #on_error,
            preemptible: #preemptible,
            join: #join,
            blocking: #blocking,
            edges: &[#(#edges),*],
            computed_targets: #computed_targets,
        }
    }
}

/// A state's struct, `SPEC` and trait impls.
pub fn state(ir: &StateIr) -> TokenStream {
    let StateIr { ident, vis, docs, handler, ctx, .. } = ir;
    let output_span = match &handler.sig.output {
        syn::ReturnType::Type(_, ty) => ty.span(),
        syn::ReturnType::Default => ident.span(),
    };
    let spec = spec(&ir.spec);
    let arg = match ctx {
        CtxKind::ByRef => quote!(__agent_ctx),
        CtxKind::Owned => quote!(::core::clone::Clone::clone(__agent_ctx)),
    };
    let into_outcome = quote_spanned!(output_span=> ::agent::__private::IntoStateOutcome::into_outcome);
    // The function keeps its name; the struct's may differ (see `symbol::GENERATED_ITEMS`).
    let function = &handler.sig.ident;
    // A `retry(...)` giving one delay: the other is the default, known only to agent-core, so
    // the pair is checked when the crate compiles (`parse` checks two given delays itself).
    let one_delay = ir.spec.retry.is_some_and(|r| r.initial_delay_nanos.is_some() != r.max_delay_nanos.is_some());
    let delays_check = one_delay.then(|| {
        quote_spanned! {ident.span()=>
            const _: () = match #ident::SPEC.retry {
                ::agent::__private::Option::Some(r) => ::core::assert!(
                    r.delays_ordered(),
                    "retry `initial_delay` must not exceed `max_delay` (`RetryPolicy::new().max_delay` unless given)"
                ),
                ::agent::__private::Option::None => {}
            };
        }
    });
    quote! {
        #(#docs)*
        #[allow(non_camel_case_types)]
        #[derive(::core::clone::Clone, ::core::marker::Copy, ::core::fmt::Debug, ::core::default::Default)]
        #vis struct #ident;

        impl #ident {
            /// The options and edges `#[state]` gave this state.
            pub const SPEC: ::agent::__private::StateSpec = #spec;
        }

        #delays_check

        const _: () = {
            #[automatically_derived]
            impl ::agent::__private::StateHandler for #ident {
                fn call<'__agent_ctx>(
                    &'__agent_ctx self,
                    __agent_ctx: &'__agent_ctx ::agent::__private::Context,
                ) -> ::agent::__private::StateFuture<'__agent_ctx> {
                    // A state is async by contract, whether or not this one awaits.
                    #[allow(clippy::unused_async)]
                    #handler
                    ::agent::__private::StateFuture::new(async move { #into_outcome(#function(#arg).await) })
                }
            }

            #[automatically_derived]
            impl ::agent::__private::IntoState<::agent::__private::Annotated> for #ident {
                fn into_state(
                    self,
                ) -> (
                    ::agent::__private::Arc<dyn ::agent::__private::StateHandler>,
                    ::agent::__private::Option<&'static ::agent::__private::StateSpec>,
                ) {
                    (::agent::__private::Arc::new(self), ::agent::__private::Option::Some(&#ident::SPEC))
                }
            }
        };
    }
}

fn graph(ir: &GraphIr, module: &Ident) -> TokenStream {
    let GraphIr { name, start, max_concurrent, states } = ir;
    let max_concurrent = option(max_concurrent.map(|n| {
        let n = Literal::usize_suffixed(n);
        quote!(#n)
    }));
    let graph_doc = format!(" The states and edges of workflow `{name}`, as the compiler saw them.");
    let agent_doc = format!(" A new `Agent` that runs workflow `{name}` (module `{module}`).");
    quote! {
        #[doc = #graph_doc]
        pub static GRAPH: ::agent::__private::WorkflowGraph = ::agent::__private::WorkflowGraph {
            name: #name,
            start: #start,
            states: &[#(#states::SPEC),*],
            max_concurrent: #max_concurrent,
        };

        #[doc = #agent_doc]
        pub fn agent() -> ::agent::__private::Agent {
            ::agent::__private::Agent::__from_workflow(
                &GRAPH,
                ::std::vec![#(::agent::__private::IntoState::into_state(#states)),*],
            )
        }
    }
}

/// `trait ContextKeys` and its impl for `Context`; nothing when there are no keys.
pub fn context_keys(keys: &[ContextKey], module: &Ident) -> TokenStream {
    if keys.is_empty() {
        return TokenStream::new();
    }
    let mut decls = Vec::new();
    let mut impls = Vec::new();
    for ContextKey { ident, ty } in keys {
        let key = ident.to_string();
        let set = format_ident!("set_{}", ident);
        let update = format_ident!("update_{}", ident);
        let (get_doc, set_doc, update_doc) = (
            format!(" The value under context key `{key}`, if it holds a `{}`.", quote!(#ty)),
            format!(" Store `value` under context key `{key}`."),
            format!(" Change the value under context key `{key}` in place, atomically for that key."),
        );
        decls.push(quote! {
            #[doc = #get_doc]
            fn #ident(&self) -> ::agent::__private::Option<#ty>;
            #[doc = #set_doc]
            fn #set(&self, value: #ty);
            #[doc = #update_doc]
            fn #update(
                &self,
                f: impl ::core::ops::FnOnce(&mut #ty),
            ) -> ::agent::__private::Result<(), ::agent::__private::ContextError>;
        });
        impls.push(quote! {
            fn #ident(&self) -> ::agent::__private::Option<#ty> {
                ::agent::__private::Context::get_state::<#ty>(self, #key)
            }
            fn #set(&self, value: #ty) {
                ::agent::__private::Context::set_state::<#ty>(self, #key, value)
            }
            fn #update(
                &self,
                f: impl ::core::ops::FnOnce(&mut #ty),
            ) -> ::agent::__private::Result<(), ::agent::__private::ContextError> {
                ::agent::__private::Context::update_state::<#ty, _>(self, #key, f)
            }
        });
    }
    let doc = format!(
        " Typed accessors for the context keys of workflow module `{module}`; outside the module, \
         `use {module}::ContextKeys;`."
    );
    quote! {
        #[doc = #doc]
        pub trait ContextKeys {
            #(#decls)*
        }

        const _: () = {
            #[automatically_derived]
            impl ContextKeys for ::agent::__private::Context {
                #(#impls)*
            }
        };
    }
}

/// `fn child()`: the workflow as a typed child of another's state, its types the aliases
/// `input` and `output` beside the module.
pub fn child(input: &Ident, output: &Ident, name: &str) -> TokenStream {
    let doc = format!(
        " Workflow `{name}` to run as a child from another workflow's state, its input and output \
         checked by the compiler: `ctx.run_child(child(), input).await?`."
    );
    quote! {
        #[doc = #doc]
        pub fn child() -> ::agent::__private::Child<super::#input, super::#output> {
            ::agent::__private::Child::new(agent())
        }
    }
}

/// The whole module.
pub fn workflow(ir: &WorkflowIr) -> TokenStream {
    let mut module = ir.module.clone();
    let mut items: Vec<Item> = ir
        .items
        .iter()
        .map(|item| match item {
            ModItem::Verbatim(item) => item.clone(),
            ModItem::State(s) => Item::Verbatim(state(s)),
        })
        .collect();
    items.push(Item::Verbatim(graph(&ir.graph, &module.ident)));
    items.push(Item::Verbatim(context_keys(&ir.context, &module.ident)));
    // The child's types are named where the attribute is, outside the module: aliases there
    // (private, hidden) carry them in as `super::…`.
    let mut outside = TokenStream::new();
    if let Some((input, output)) = &ir.child {
        let (i, o) = child_aliases(&module.ident);
        items.push(Item::Verbatim(child(&i, &o, &ir.graph.name)));
        outside = quote! {
            #[doc(hidden)]
            #[allow(non_camel_case_types)]
            type #i = #input;
            #[doc(hidden)]
            #[allow(non_camel_case_types)]
            type #o = #output;
        };
    }
    if let Some((_, content)) = &mut module.content {
        *content = items;
    }
    quote!(#module #outside)
}

/// The names of the aliases of module `module`'s child input and output types.
fn child_aliases(module: &Ident) -> (Ident, Ident) {
    (format_ident!("__agent_child_input_{}", module), format_ident!("__agent_child_output_{}", module))
}

/// What a module with errors expands to, beside the errors.
pub fn fallback_workflow(raw: &WorkflowMod, name: &str) -> TokenStream {
    let mut module = raw.module.clone();
    let ident = module.ident.clone();
    if let Some((_, items)) = &mut module.content {
        // A second state of one name would add rustc's "defined multiple times" to ours.
        let mut seen = Vec::new();
        let mut duplicates = Vec::new();
        for (index, state) in &raw.states {
            if seen.contains(&&state.func.sig.ident) {
                duplicates.push(*index);
            } else if let Some(Item::Fn(f)) = items.get_mut(*index) {
                f.attrs.push(syn::parse_quote!(#[allow(dead_code)]));
            }
            seen.push(&state.func.sig.ident);
        }
        for index in duplicates.into_iter().rev() {
            items.remove(index);
        }
        let stand_ins = quote! {
            #[doc = " Not generated: this workflow has errors."]
            pub static GRAPH: ::agent::__private::WorkflowGraph = ::agent::__private::WorkflowGraph {
                name: #name,
                start: "",
                states: &[],
                max_concurrent: ::agent::__private::Option::None,
            };

            #[doc = " Not generated: this workflow has errors."]
            pub fn agent() -> ::agent::__private::Agent {
                ::core::unreachable!("workflow `{}` did not compile", #name)
            }
        };
        items.push(Item::Verbatim(stand_ins));
        items.push(Item::Verbatim(context_keys(&raw.options.context, &ident)));
    }
    quote!(#module)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{RateLimit, Resources, Retry};

    #[test]
    fn specs_print_every_field() {
        let ir = SpecIr {
            name: "a".into(),
            resources: Some(Resources { cpu: 2.0, memory_mb: 1024.0, ..Resources::default() }),
            priority: PriorityLevel::High,
            timeout_nanos: Some(1_500_000_000),
            retry: Some(Retry { max: Some(5), jitter: Some(false), ..Retry::default() }),
            rate_limit: Some(RateLimit { per_second: 0.5, burst: 20 }),
            depends_on: vec![("b".into(), DependencyKind::Optional)],
            on_error: Some("c".into()),
            preemptible: true,
            join: false,
            blocking: false,
            edges: vec!["b".into(), "c".into()],
            computed_targets: false,
        };
        let text = spec(&ir).to_string();
        for part in [
            "name : \"a\"",
            "cpu (2f64)",
            "memory_mb (1024f64)",
            "Priority :: High",
            "Duration :: from_nanos (1500000000u64)",
            "retry : :: agent :: __private :: Option :: Some (:: agent :: __private :: RetryPolicy :: new () . max_retries (5u32) . jitter (false))",
            "rate_limit : :: agent :: __private :: Option :: Some (:: agent :: __private :: RateLimit { per_second : 0.5f64 , burst : 20u32 })",
            "(\"b\" , :: agent :: __private :: DependencyType :: Optional)",
            "on_error : :: agent :: __private :: Option :: Some (\"c\")",
            "preemptible : true",
            "edges : & [\"b\" , \"c\"]",
            "computed_targets : false",
        ] {
            assert!(text.contains(part), "{part} missing from {text}");
        }
    }

    #[test]
    fn absent_rate_limits_print_none() {
        let ir = SpecIr {
            name: "a".into(),
            resources: None,
            priority: PriorityLevel::Normal,
            timeout_nanos: None,
            retry: None,
            rate_limit: None,
            depends_on: Vec::new(),
            on_error: None,
            preemptible: false,
            join: false,
            blocking: false,
            edges: Vec::new(),
            computed_targets: true,
        };
        assert!(spec(&ir).to_string().contains("rate_limit : :: agent :: __private :: Option :: None ,"));
    }

    #[test]
    fn negative_zero_prints_as_zero() {
        assert_eq!(float(-0.0).to_string(), "0f64");
    }
}
