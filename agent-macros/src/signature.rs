//! Checking a state function's signature.
//!
//! Invariants:
//! - A state is `async fn NAME(PAT: &Context | Context) -> StateResult | Result<StateResult, E>`:
//!   `PAT` an identifier or `_`, types recognised by their last path segment (so
//!   `agent::Context`, `anyhow::Result<StateResult>` and aliases named so all pass), no
//!   generics, receiver, `const`, `unsafe`, ABI or variadic.
//! - Each departure is its own error, spanned on the offending token (`fn` for a missing
//!   `async`, the extra arguments, the argument's type, the return type), all reported.

use syn::punctuated::Punctuated;
use syn::{FnArg, GenericArgument, ItemFn, Pat, PathArguments, ReturnType, Token, Type};

use crate::diag::Errors;
use crate::parse::CtxKind;
use crate::symbol::{self, Symbol};

const SIGNATURE: &str = "`async fn name(ctx: &Context) -> StateResult`";

/// Check a state's signature; `None` (and errors) when it is not
/// `async fn NAME(ctx: &Context | Context) -> StateResult | Result<StateResult, E>`.
pub fn check(func: &ItemFn, errors: &mut Errors) -> Option<CtxKind> {
    let sig = &func.sig;
    let mut ok = true;
    let mut fail = |e: syn::Error| {
        errors.push(e);
        ok = false;
    };
    if sig.asyncness.is_none() {
        fail(syn::Error::new_spanned(sig.fn_token, format!("a state must be an `async fn`: {SIGNATURE}")));
    }
    if let Some(c) = &sig.constness {
        fail(syn::Error::new_spanned(c, "a state cannot be a `const fn`"));
    }
    if let Some(u) = &sig.unsafety {
        fail(syn::Error::new_spanned(u, "a state cannot be an `unsafe fn`"));
    }
    if let Some(abi) = &sig.abi {
        fail(syn::Error::new_spanned(abi, "a state cannot have an ABI"));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        fail(syn::Error::new_spanned(&sig.generics, "a state cannot be generic"));
    }
    if let Some(v) = &sig.variadic {
        fail(syn::Error::new_spanned(v, "a state cannot be variadic"));
    }
    let ctx = match sig.inputs.len() {
        0 => {
            fail(syn::Error::new(
                sig.paren_token.span.join(),
                format!("a state takes one argument, the context: {SIGNATURE}"),
            ));
            None
        }
        n => {
            if n > 1 {
                let extra: Punctuated<&FnArg, Token![,]> = sig.inputs.iter().skip(1).collect();
                fail(syn::Error::new_spanned(
                    extra,
                    format!("a state takes only one argument, the context: {SIGNATURE}"),
                ));
            }
            context_param(&sig.inputs[0]).map_err(&mut fail).ok()
        }
    };
    if let Err(e) = output(&sig.output, sig) {
        fail(e);
    }
    if ok {
        ctx
    } else {
        None
    }
}

fn context_param(arg: &FnArg) -> syn::Result<CtxKind> {
    let typed = match arg {
        FnArg::Receiver(r) => {
            return Err(syn::Error::new_spanned(r, format!("a state is a free function, without `self`: {SIGNATURE}")));
        }
        FnArg::Typed(t) => t,
    };
    match &*typed.pat {
        Pat::Ident(p) if p.subpat.is_none() => {}
        Pat::Wild(_) => {}
        other => {
            return Err(syn::Error::new_spanned(
                other,
                "name the context with an identifier or `_`, like `ctx: &Context`",
            ));
        }
    }
    let wrong = || {
        syn::Error::new_spanned(
            &typed.ty,
            format!("a state's argument is the context, `&Context` or `Context`: {SIGNATURE}"),
        )
    };
    let (kind, ty) = match &*typed.ty {
        Type::Reference(r) if r.mutability.is_none() => (CtxKind::ByRef, &*r.elem),
        Type::Reference(r) => {
            return Err(syn::Error::new_spanned(
                r.mutability,
                "a state takes `&Context`, not `&mut Context`: the context is shared",
            ));
        }
        other => (CtxKind::Owned, other),
    };
    if last_segment_is(ty, symbol::CONTEXT_TYPE, false).is_some() {
        Ok(kind)
    } else {
        Err(wrong())
    }
}

/// The last segment of `ty`'s path, when its name is `word` (and it has no generic
/// arguments unless `args_allowed`).
fn last_segment_is(ty: &Type, word: Symbol, args_allowed: bool) -> Option<&PathArguments> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident != word || (!args_allowed && !last.arguments.is_empty()) {
        return None;
    }
    Some(&last.arguments)
}

fn output(out: &ReturnType, sig: &syn::Signature) -> syn::Result<()> {
    let ReturnType::Type(_, ty) = out else {
        return Err(syn::Error::new_spanned(
            sig,
            "a state returns where to go next: add `-> StateResult` (or `-> Result<StateResult, E>`)",
        ));
    };
    let wrong = || syn::Error::new_spanned(ty, "a state returns `StateResult` or `Result<StateResult, E>`");
    if last_segment_is(ty, symbol::STATE_RESULT_TYPE, false).is_some() {
        return Ok(());
    }
    match last_segment_is(ty, symbol::RESULT_TYPE, true) {
        Some(PathArguments::AngleBracketed(args)) => match args.args.first() {
            Some(GenericArgument::Type(ok)) if last_segment_is(ok, symbol::STATE_RESULT_TYPE, false).is_some() => {
                Ok(())
            }
            _ => Err(wrong()),
        },
        _ => Err(wrong()),
    }
}

#[cfg(test)]
mod tests {
    use proc_macro2::TokenStream;
    use quote::quote;

    use super::*;

    fn sig(tokens: TokenStream) -> (Option<CtxKind>, Vec<String>) {
        let func: ItemFn = syn::parse2(tokens).unwrap();
        let mut errors = Errors::new();
        let ctx = check(&func, &mut errors);
        let messages = match errors.finish() {
            Ok(()) => Vec::new(),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        };
        (ctx, messages)
    }

    #[test]
    fn good_signatures() {
        assert_eq!(
            sig(quote!(
                async fn a(ctx: &Context) -> StateResult {}
            ))
            .0,
            Some(CtxKind::ByRef)
        );
        assert_eq!(
            sig(quote!(
                async fn a(_: agent::Context) -> StateResult {}
            ))
            .0,
            Some(CtxKind::Owned)
        );
        assert_eq!(
            sig(quote!(
                async fn a(mut c: Context) -> Result<StateResult, std::io::Error> {}
            ))
            .0,
            Some(CtxKind::Owned)
        );
        assert_eq!(
            sig(quote!(
                async fn a(c: &'_ Context) -> anyhow::Result<StateResult> {}
            ))
            .0,
            Some(CtxKind::ByRef)
        );
    }

    #[test]
    fn bad_signatures() {
        for (tokens, expected) in [
            (
                quote!(
                    fn a(ctx: &Context) -> StateResult {}
                ),
                "`async fn`",
            ),
            (
                quote!(
                    async fn a() -> StateResult {}
                ),
                "takes one argument",
            ),
            (
                quote!(
                    async fn a(c: &Context, d: u32) -> StateResult {}
                ),
                "only one argument",
            ),
            (
                quote!(
                    async fn a(c: &str) -> StateResult {}
                ),
                "the context",
            ),
            (
                quote!(
                    async fn a(c: &mut Context) -> StateResult {}
                ),
                "`&mut Context`",
            ),
            (
                quote!(
                    async fn a(c: &Context) {}
                ),
                "add `-> StateResult`",
            ),
            (
                quote!(
                    async fn a(c: &Context) -> u32 {}
                ),
                "returns `StateResult`",
            ),
            (
                quote!(
                    async fn a<T>(c: &Context) -> StateResult {}
                ),
                "generic",
            ),
            (
                quote!(
                    async fn a(&self) -> StateResult {}
                ),
                "without `self`",
            ),
        ] {
            let (ctx, errs) = sig(tokens);
            assert_eq!(ctx, None);
            assert_eq!(errs.len(), 1, "{errs:?}");
            assert!(errs[0].contains(expected), "{errs:?} lacks {expected}");
        }
    }
}
