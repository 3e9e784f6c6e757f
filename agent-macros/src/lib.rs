//! The macros of the `agent` workflow framework: `#[workflow]`, `#[state]` and
//! `#[derive(TypedContextData)]`. Use them through the `agent` crate, whose documentation
//! shows them at work.
//!
//! The pipeline, one module per step (as in `serde_derive`):
//! `parse` (tokens to a raw AST with spans) → `model` (names, edges and their checks) →
//! `lower` (the IR of what to generate) → `codegen` (tokens). `signature` checks state
//! functions, `targets` finds the transition targets in a state's body, `symbol` names
//! every option, `diag` collects errors, `typed` derives `TypedContextData`.
//!
//! Invariants:
//! - No input makes a macro panic; every problem is a `compile_error!` at the offending
//!   token, and all problems of one invocation are reported together.
//! - On error the item is still emitted (as in `tokio-macros`): a standalone `#[state]`
//!   leaves its function as written, a `#[workflow]` module keeps its items with
//!   stand-ins for what it would have generated (see `codegen::fallback_workflow`), so
//!   IDEs keep working and no follow-up errors drown the real ones.
//! - Generated code names only `::agent::__private::…`, `::core` and `::std` paths.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod codegen;
mod diag;
mod lower;
mod model;
mod parse;
mod signature;
mod symbol;
mod targets;
mod typed;

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use quote::quote;

use crate::diag::Errors;

/// Turn an inline module of `#[state]` functions into a checked workflow.
///
/// Options: `name = "…"` (default: the module's name), `start = "state"` (default: the first
/// state), `max_concurrent = N`, `context(key: Type, …)` (typed accessors in
/// `trait ContextKeys`, implemented for `Context`).
///
/// Generates, in the module, a unit struct per state (see [`macro@state`]),
/// `pub static GRAPH: WorkflowGraph` (states in source order) and `pub fn agent() -> Agent`.
/// Every literal transition target, dependency, `on_error` and `start` must name a state of
/// the module; when every target is a literal, every state must be reachable from `start`.
/// Literal targets are compiled to `StateName`s carrying their state's index.
///
/// The types in `context(…)` are named from inside the module (`use super::MyType;` there).
/// A key's accessors (`key`, `set_key`, `update_key`) must not clash with `Context`'s own
/// methods.
///
/// As each state becomes a unit struct, a `let` binding inside the module cannot take a
/// state's name (it would be read as a pattern matching the struct), and a state cannot be
/// called as a function.
#[proc_macro_attribute]
pub fn workflow(args: TokenStream, item: TokenStream) -> TokenStream {
    expand_workflow(args.into(), item.into()).into()
}

/// Mark an `async fn(ctx: &Context) -> StateResult` (or `-> Result<StateResult, E>`, or
/// taking `ctx: Context`) as a state, with options:
///
/// `resources(cpu = …, memory_mb = …, io = …, network = …, gpu = …)`,
/// `priority = Low | Normal | High | Critical`, `timeout = seconds`,
/// `retry(max = …, initial_delay = …, max_delay = …, exponential_base = …, jitter = …)`,
/// `rate_limit(per_second = …, burst = …)` (`burst` 1 unless given),
/// `depends_on(state = Required | Optional | Parallel | Sequential, …)`,
/// `on_error = "state"`, `preemptible`, `join`, `blocking`.
///
/// The function becomes a unit struct of the same name with a `SPEC: StateSpec` constant,
/// implementing `StateHandler` and `IntoState`, so `agent.add_state("name", name)` keeps
/// the options. Inside `#[workflow]` the module processes its states itself.
#[proc_macro_attribute]
pub fn state(args: TokenStream, item: TokenStream) -> TokenStream {
    expand_state(args.into(), item.into()).into()
}

/// Store a type in the context as itself: `ctx.set_typed(key, value)`.
///
/// Needs `Clone`, `Debug`, `Serialize` and `Deserialize`; the type must not be generic.
#[proc_macro_derive(TypedContextData)]
pub fn derive_typed_context_data(input: TokenStream) -> TokenStream {
    let input = match syn::parse::<syn::DeriveInput>(input) {
        Ok(input) => input,
        Err(e) => return e.to_compile_error().into(),
    };
    typed::derive(&input).unwrap_or_else(syn::Error::into_compile_error).into()
}

fn expand_workflow(args: TokenStream2, item: TokenStream2) -> TokenStream2 {
    let mut errors = Errors::new();
    let Some(raw) = parse::workflow(args, item.clone(), &mut errors) else {
        let errors = errors.to_compile_errors();
        return quote!(#errors #item);
    };
    let model = model::Workflow::from_mod(&raw);
    for problem in model.problems() {
        errors.push(problem.to_error());
    }
    if !errors.is_empty() {
        let fallback = codegen::fallback_workflow(&raw, &model.name);
        let errors = errors.to_compile_errors();
        return quote!(#errors #fallback);
    }
    codegen::workflow(&lower::workflow(&raw, &model))
}

fn expand_state(args: TokenStream2, item: TokenStream2) -> TokenStream2 {
    let mut errors = Errors::new();
    let raw = parse::state(args, item.clone(), &mut errors);
    match raw.as_ref().and_then(lower::standalone) {
        Some(ir) if errors.is_empty() => codegen::state(&ir),
        _ => {
            let errors = errors.to_compile_errors();
            let original = raw.map_or(item, |r| {
                let func = r.func;
                quote!(#func)
            });
            quote!(#errors #original)
        }
    }
}

#[cfg(test)]
mod tests {
    use proc_macro2::TokenStream as TokenStream2;
    use quote::quote;

    use super::*;

    fn has_errors(out: &TokenStream2) -> bool {
        out.to_string().contains("compile_error")
    }

    /// Odd inputs give errors, never panics.
    #[test]
    fn odd_inputs_do_not_panic() {
        let odd_args: Vec<TokenStream2> = vec![
            quote!(),
            quote!(=),
            quote!(,,),
            quote!(name),
            quote!(name = 1),
            quote!(name = "a", name = "b"),
            quote!(timeout = -0.0),
            quote!(timeout = 1e400),
            quote!(timeout = 99999999999999999999999),
            quote!(retry(max = 99999999999), retry(max = -1)),
            quote!(retry(initial_delay = -1e-30, exponential_base = 0.5, jitter = 1)),
            quote!(resources(cpu = 1.0, cpu = 2.0, disk = 1)),
            quote!(rate_limit(per_second = 1e400, burst = 99999999999)),
            quote!(rate_limit(per_second = -0.0, burst = -1, per_second), rate_limit = 1),
            quote!(rate_limit(per_second(1), burst, a::b = 1)),
            quote!(resources = 1, priority(High), depends_on = 1, preemptible = true),
            quote!(depends_on(a, b = Whatever, c(d), a::b = Required)),
            quote!(context(a: u32, a: u32, b)),
            quote!(max_concurrent = 0, max_concurrent = 1),
            quote!(start = 1, on_error = x),
            quote!(a::b = 1),
        ];
        let odd_items: Vec<TokenStream2> = vec![
            quote!(),
            quote!(
                mod m;
            ),
            quote!(
                mod m {}
            ),
            quote!(
                struct S;
            ),
            quote!(
                fn f() {}
            ),
            quote!(
                mod m {
                    #[state]
                    struct S;
                    #[state]
                    #[state]
                    async fn a(_: &Context) -> StateResult {
                        StateResult::End
                    }
                }
            ),
            quote!(
                mod m {
                    #[state = 1]
                    async fn a(_: &Context) -> StateResult {
                        "a".into()
                    }
                }
            ),
            quote!(
                mod m {
                    #[state]
                    async fn a((x, y): Context) -> StateResult {
                        loop {
                            break 'x "a".into();
                        }
                    }
                }
            ),
            quote!(
                mod m {
                    #[state]
                    async fn a(c: &Context) -> StateResult {
                        return;
                    }
                }
            ),
            quote!(
                mod m {
                    #[state]
                    async fn agent(c: &Context) -> StateResult {
                        vec![].into()
                    }
                }
            ),
        ];
        for args in &odd_args {
            for item in &odd_items {
                let _ = expand_workflow(args.clone(), item.clone());
                let _ = expand_state(args.clone(), item.clone());
            }
            assert!(
                has_errors(&expand_state(
                    args.clone(),
                    quote!(
                        fn f() {}
                    )
                )) || args.is_empty()
            );
        }
    }

    #[test]
    fn errors_keep_the_item() {
        let out = expand_state(
            quote!(timeout = -1),
            quote!(
                async fn a(c: &Context) -> StateResult {
                    StateResult::End
                }
            ),
        );
        assert!(has_errors(&out));
        assert!(out.to_string().contains("async fn a"));
        let out = expand_workflow(
            quote!(),
            quote!(
                mod m {
                    #[state]
                    async fn a(c: &Context) -> StateResult {
                        "b".into()
                    }
                    fn keep() {}
                }
            ),
        );
        let text = out.to_string();
        assert!(has_errors(&out));
        assert!(text.contains("fn keep"));
        assert!(text.contains("pub fn agent"));
        assert!(!text.contains("# [state]"));
    }

    #[test]
    fn a_clean_workflow_has_no_errors() {
        let out = expand_workflow(
            quote!(context(greeting: String)),
            quote! {
                mod hello_workflow {
                    #[state]
                    async fn process_data(ctx: &Context) -> StateResult { "format_output".into() }
                    #[state]
                    async fn format_output(ctx: Context) -> StateResult { StateResult::End }
                }
            },
        );
        let text = out.to_string();
        assert!(!has_errors(&out), "{text}");
        for part in [
            "pub static GRAPH",
            "states : & [process_data :: SPEC , format_output :: SPEC]",
            "Agent :: __from_workflow",
            "StateName :: in_graph (\"format_output\" , & GRAPH . states [1])",
            "process_data (__agent_ctx)",
            "format_output (:: core :: clone :: Clone :: clone (__agent_ctx))",
            "pub trait ContextKeys",
            "fn set_greeting (& self , value : String)",
        ] {
            assert!(text.contains(part), "{part} missing from {text}");
        }
    }
}
