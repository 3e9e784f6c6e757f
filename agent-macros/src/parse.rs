//! Parsing: attribute options, state signatures and workflow modules into a raw AST.
//!
//! Invariants:
//! - Everything kept carries the span of the token the user wrote, so later phases can
//!   point at it.
//! - Parsing never stops at the first mistake: each option, each state and each signature
//!   is checked on its own and every error goes into the shared [`Errors`]. A state whose
//!   options or signature are wrong is still kept (with default options), so that names
//!   elsewhere in the module still resolve and no follow-up error is invented.
//! - Values are checked here, where their tokens are: numbers finite and in range, names of
//!   enum variants known. Whether a *state name* exists is for the model to say.
//! - Unknown options list the valid ones (from [`crate::symbol`]); a repeated option is an
//!   error at its second occurrence.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::parse::{Parse, ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Attribute, Expr, ExprLit, ExprUnary, Ident, Item, ItemFn, ItemMod, Lit, LitStr, Meta, Token, Type, UnOp};

use crate::diag::{did_you_mean, suggestion_suffix, Errors};
use crate::signature;
use crate::symbol::{self, Symbol};

/// A name as written, with where it was written.
///
/// Two names are equal when their text is: spans say where, not what.
#[derive(Clone, Debug)]
pub struct Named {
    /// The text.
    pub text: String,
    /// Where it was written.
    pub span: Span,
}

impl Named {
    /// A name with its span.
    pub fn new(text: impl Into<String>, span: Span) -> Self {
        Self { text: text.into(), span }
    }
}

impl PartialEq for Named {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl From<&Ident> for Named {
    /// The name an identifier gives: `r#type` names the state `type`.
    fn from(ident: &Ident) -> Self {
        Named::new(syn::ext::IdentExt::unraw(ident).to_string(), ident.span())
    }
}

impl From<&LitStr> for Named {
    fn from(lit: &LitStr) -> Self {
        Named::new(lit.value(), lit.span())
    }
}

// ----- values --------------------------------------------------------------------------------

/// `Priority`'s variants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PriorityLevel {
    /// `Low`.
    Low,
    /// `Normal`.
    #[default]
    Normal,
    /// `High`.
    High,
    /// `Critical`.
    Critical,
}

/// `DependencyType`'s variants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DependencyKind {
    /// `Required`.
    Required,
    /// `Optional`.
    Optional,
    /// `Parallel`.
    Parallel,
    /// `Sequential`.
    Sequential,
}

/// `resources(...)`: amounts, each finite and not negative; absent fields are 0.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Resources {
    /// CPU cores.
    pub cpu: f64,
    /// Memory in MB.
    pub memory_mb: f64,
    /// I/O weight.
    pub io: f64,
    /// Network weight.
    pub network: f64,
    /// GPU units.
    pub gpu: f64,
}

/// `retry(...)`: the fields given. Absent ones (`None`) take `RetryPolicy::new()`'s values
/// in the generated code: the defaults have one definition, in `agent-core`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Retry {
    /// Retries after the first attempt, at least 1.
    pub max: Option<u32>,
    /// Nanoseconds before the first retry.
    pub initial_delay_nanos: Option<u64>,
    /// The longest wait, in nanoseconds.
    pub max_delay_nanos: Option<u64>,
    /// The factor between waits, finite and at least 1.
    pub exponential_base: Option<f64>,
    /// Spread waits at random.
    pub jitter: Option<bool>,
}

/// `rate_limit(...)`: `per_second` required, `burst` 1 unless given.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// Starts a second, finite and greater than 0.
    pub per_second: f64,
    /// Starts allowed at once, at least 1.
    pub burst: u32,
}

/// One `depends_on(...)` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Dependency {
    /// The state depended on.
    pub name: Named,
    /// What the dependency means.
    pub kind: DependencyKind,
}

/// A state's options, as `#[state(...)]` wrote them; defaults where absent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StateOptions {
    /// `resources(...)`.
    pub resources: Option<Resources>,
    /// `priority = …`.
    pub priority: PriorityLevel,
    /// `timeout = …`, in nanoseconds.
    pub timeout_nanos: Option<u64>,
    /// `retry(...)`.
    pub retry: Option<Retry>,
    /// `rate_limit(...)`.
    pub rate_limit: Option<RateLimit>,
    /// `depends_on(...)`, in source order.
    pub depends_on: Vec<Dependency>,
    /// `on_error = "…"`.
    pub on_error: Option<Named>,
    /// `preemptible`.
    pub preemptible: bool,
    /// `join`.
    pub join: bool,
    /// `blocking`.
    pub blocking: bool,
}

/// One typed context key: `name: Type`.
#[derive(Clone, Debug, PartialEq)]
pub struct ContextKey {
    /// The key, also the accessor's name.
    pub ident: Ident,
    /// The value's type.
    pub ty: Type,
}

impl Parse for ContextKey {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let ident = input.parse()?;
        input.parse::<Token![:]>()?;
        let ty = input.parse()?;
        Ok(Self { ident, ty })
    }
}

/// `#[workflow(...)]`'s options.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkflowOptions {
    /// `name = "…"`.
    pub name: Option<LitStr>,
    /// `start = "…"`.
    pub start: Option<Named>,
    /// `max_concurrent = N`, positive.
    pub max_concurrent: Option<usize>,
    /// `context(...)`, in source order.
    pub context: Vec<ContextKey>,
    /// `input = Type` and `output = Type`, given together: the module gets `child()`.
    pub child: Option<(Type, Type)>,
}

/// How a state receives its context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtxKind {
    /// `ctx: &Context`.
    ByRef,
    /// `ctx: Context`.
    Owned,
}

/// A `#[state]` function, its attribute removed.
#[derive(Clone, Debug, PartialEq)]
pub struct StateFn {
    /// The function, without the `#[state]` attribute.
    pub func: ItemFn,
    /// Its options (defaults where the attribute was wrong).
    pub options: StateOptions,
    /// How it takes the context; `None` when the signature is wrong.
    pub ctx: Option<CtxKind>,
}

/// A `#[workflow]` module, its `#[state]` attributes removed.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkflowMod {
    /// The module, items in place (state functions still plain functions).
    pub module: ItemMod,
    /// The workflow's options.
    pub options: WorkflowOptions,
    /// Every state, in source order, with the index of its item in the module.
    pub states: Vec<(usize, StateFn)>,
}

// ----- entry points --------------------------------------------------------------------------

/// Parse `#[workflow(args)] item`. `None` when the item is not an inline module.
pub fn workflow(args: TokenStream, item: TokenStream, errors: &mut Errors) -> Option<WorkflowMod> {
    let options = workflow_options(args, errors);
    let mut module = match syn::parse2::<Item>(item) {
        Ok(Item::Mod(m)) => m,
        Ok(other) => {
            let span = item_ident(&other).map_or_else(|| other.span(), Ident::span);
            errors.at(span, "`#[workflow]` goes on an inline module: `mod name { … }`");
            return None;
        }
        Err(e) => {
            errors.push(e);
            return None;
        }
    };
    let Some((_, items)) = &mut module.content else {
        let (mod_token, ident, semi) = (&module.mod_token, &module.ident, &module.semi);
        errors.push(syn::Error::new_spanned(
            quote::quote!(#mod_token #ident #semi),
            "`#[workflow]` needs an inline module, `mod name { … }`, whose states it can see",
        ));
        return None;
    };
    let mut states = Vec::new();
    for (index, item) in items.iter_mut().enumerate() {
        let Some(attr) = take_state_attr(item_attrs(item), errors) else {
            continue;
        };
        let Item::Fn(func) = item else {
            errors.push(syn::Error::new_spanned(attr, "`#[state]` goes on an `async fn`"));
            continue;
        };
        let options = match attr.meta {
            Meta::Path(_) => StateOptions::default(),
            Meta::List(list) => state_options(list.tokens, errors),
            Meta::NameValue(nv) => {
                errors.push(syn::Error::new_spanned(nv.eq_token, "write `#[state]` or `#[state(option, …)]`"));
                StateOptions::default()
            }
        };
        let ctx = signature::check(func, errors);
        states.push((index, StateFn { func: func.clone(), options, ctx }));
    }
    Some(WorkflowMod { module, options, states })
}

/// Parse a standalone `#[state(args)] item`. `None` when the item is not a function.
pub fn state(args: TokenStream, item: TokenStream, errors: &mut Errors) -> Option<StateFn> {
    let options = state_options(args, errors);
    let func = match syn::parse2::<Item>(item) {
        Ok(Item::Fn(f)) => f,
        Ok(other) => {
            let span = item_ident(&other).map_or_else(|| other.span(), Ident::span);
            errors.at(span, "`#[state]` goes on an `async fn`");
            return None;
        }
        Err(e) => {
            errors.push(e);
            return None;
        }
    };
    let ctx = signature::check(&func, errors);
    Some(StateFn { func, options, ctx })
}

fn item_ident(item: &Item) -> Option<&Ident> {
    match item {
        Item::Fn(i) => Some(&i.sig.ident),
        Item::Struct(i) => Some(&i.ident),
        Item::Enum(i) => Some(&i.ident),
        Item::Const(i) => match &i.ident {
            underscore if underscore == "_" => None,
            ident => Some(ident),
        },
        Item::Static(i) => Some(&i.ident),
        Item::Trait(i) => Some(&i.ident),
        Item::Type(i) => Some(&i.ident),
        Item::Union(i) => Some(&i.ident),
        _ => None,
    }
}

fn item_attrs(item: &mut Item) -> Option<&mut Vec<Attribute>> {
    Some(match item {
        Item::Fn(i) => &mut i.attrs,
        Item::Struct(i) => &mut i.attrs,
        Item::Enum(i) => &mut i.attrs,
        Item::Const(i) => &mut i.attrs,
        Item::Static(i) => &mut i.attrs,
        Item::Mod(i) => &mut i.attrs,
        Item::Impl(i) => &mut i.attrs,
        Item::Trait(i) => &mut i.attrs,
        Item::Type(i) => &mut i.attrs,
        Item::Use(i) => &mut i.attrs,
        Item::Macro(i) => &mut i.attrs,
        Item::Union(i) => &mut i.attrs,
        Item::ForeignMod(i) => &mut i.attrs,
        Item::ExternCrate(i) => &mut i.attrs,
        Item::TraitAlias(i) => &mut i.attrs,
        _ => return None,
    })
}

/// Whether `attr` is `#[state]`, `#[agent::state]` or `#[::agent::state]`.
pub fn is_state_attr(attr: &Attribute) -> bool {
    let path = attr.path();
    let segments: Vec<&Ident> = path.segments.iter().map(|s| &s.ident).collect();
    match segments.as_slice() {
        [state] => path.leading_colon.is_none() && **state == symbol::STATE_ATTR,
        [krate, state] => **krate == symbol::AGENT_CRATE && **state == symbol::STATE_ATTR,
        _ => false,
    }
}

/// Remove the `#[state]` attribute from `attrs` and return it; a second one is an error.
fn take_state_attr(attrs: Option<&mut Vec<Attribute>>, errors: &mut Errors) -> Option<Attribute> {
    let attrs = attrs?;
    let mut found: Option<Attribute> = None;
    let mut kept = Vec::with_capacity(attrs.len());
    for attr in attrs.drain(..) {
        if !is_state_attr(&attr) {
            kept.push(attr);
        } else if found.is_some() {
            errors.push(syn::Error::new_spanned(&attr, "`#[state]` is given twice"));
        } else {
            found = Some(attr);
        }
    }
    *attrs = kept;
    found
}

// ----- options -------------------------------------------------------------------------------

/// One option as written: `name`, `name = value` or `name(…)`.
///
/// Not `syn::Meta`: its value parser reads `-512` as one negative literal whose span is the
/// `-` alone; parsing the value as an expression keeps the whole `-512` as the span.
struct Opt {
    name: syn::Path,
    value: OptValue,
}

enum OptValue {
    Flag,
    Value(Expr),
    List(TokenStream),
}

impl Parse for Opt {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let name = input.call(syn::Path::parse_mod_style)?;
        let value = if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            if name.is_ident(symbol::INPUT.as_str()) || name.is_ident(symbol::OUTPUT.as_str()) {
                // A type, which as an expression would not parse past `<` (`Vec<String>`).
                let ty: Type = input.parse()?;
                OptValue::Value(Expr::Verbatim(ty.into_token_stream()))
            } else {
                OptValue::Value(input.parse()?)
            }
        } else if input.peek(syn::token::Paren) {
            let content;
            syn::parenthesized!(content in input);
            OptValue::List(content.parse()?)
        } else {
            OptValue::Flag
        };
        Ok(Self { name, value })
    }
}

fn opts(tokens: TokenStream, errors: &mut Errors) -> Vec<Opt> {
    match Punctuated::<Opt, Token![,]>::parse_terminated.parse2(tokens) {
        Ok(list) => list.into_iter().collect(),
        Err(e) => {
            errors.push(e);
            Vec::new()
        }
    }
}

/// Which option `opt` names; errors for unknown and repeated ones.
fn option_of(opt: &Opt, valid: &[Symbol], what: &str, seen: &mut Vec<Symbol>, errors: &mut Errors) -> Option<Symbol> {
    let Some(ident) = opt.name.get_ident() else {
        errors.push(syn::Error::new_spanned(
            &opt.name,
            format!("expected {what} option name, one of {}", symbol::list(valid)),
        ));
        return None;
    };
    let Some(option) = valid.iter().copied().find(|s| *ident == *s) else {
        let name = ident.to_string();
        let hint = suggestion_suffix(did_you_mean(&name, valid.iter().map(|s| s.as_str())));
        errors.at(ident.span(), format!("unknown {what} option `{name}`: expected {}{hint}", symbol::list(valid)));
        return None;
    };
    if seen.contains(&option) {
        errors.at(ident.span(), format!("`{option}` is given twice"));
        return None;
    }
    seen.push(option);
    Some(option)
}

/// The value of `name = value`, or an error showing `example`.
fn value<'a>(opt: &'a Opt, option: Symbol, example: &str, errors: &mut Errors) -> Option<&'a Expr> {
    match &opt.value {
        OptValue::Value(v) => Some(v),
        _ => {
            errors.push(syn::Error::new_spanned(&opt.name, format!("`{option}` takes a value: `{example}`")));
            None
        }
    }
}

/// The tokens of `name(...)`, or an error showing `example`.
fn list(opt: &Opt, option: Symbol, example: &str, errors: &mut Errors) -> Option<TokenStream> {
    match &opt.value {
        OptValue::List(tokens) => Some(tokens.clone()),
        _ => {
            errors.push(syn::Error::new_spanned(&opt.name, format!("`{option}` takes a list: `{example}`")));
            None
        }
    }
}

/// A bare flag, `name`.
fn flag(opt: &Opt, option: Symbol, errors: &mut Errors) -> bool {
    match &opt.value {
        OptValue::Flag => true,
        _ => {
            errors.push(syn::Error::new_spanned(&opt.name, format!("`{option}` takes no value: write `{option}`")));
            false
        }
    }
}

fn workflow_options(args: TokenStream, errors: &mut Errors) -> WorkflowOptions {
    let mut out = WorkflowOptions::default();
    let mut seen = Vec::new();
    // `input = …` and `output = …`, each with where it was written.
    let mut input: Option<(Type, Span)> = None;
    let mut output: Option<(Type, Span)> = None;
    for opt in opts(args, errors) {
        let Some(option) = option_of(&opt, symbol::WORKFLOW_OPTIONS, "`#[workflow]`", &mut seen, errors) else {
            continue;
        };
        match option {
            symbol::NAME => {
                if let Some(v) = value(&opt, option, "name = \"my_workflow\"", errors) {
                    out.name = string(v, option, errors);
                }
            }
            symbol::START => {
                if let Some(v) = value(&opt, option, "start = \"first_state\"", errors) {
                    out.start = string(v, option, errors).map(|s| Named::from(&s));
                }
            }
            symbol::MAX_CONCURRENT => {
                if let Some(v) = value(&opt, option, "max_concurrent = 4", errors) {
                    out.max_concurrent = positive_int::<usize>(v, option, errors);
                }
            }
            symbol::INPUT | symbol::OUTPUT => {
                let example = if option == symbol::INPUT { "input = Article" } else { "output = Summary" };
                if let Some(v) = value(&opt, option, example, errors) {
                    match syn::parse2::<Type>(v.to_token_stream()) {
                        Ok(ty) if option == symbol::INPUT => input = Some((ty, opt.name.span())),
                        Ok(ty) => output = Some((ty, opt.name.span())),
                        Err(_) => {
                            errors.push(syn::Error::new_spanned(v, format!("`{option}` takes a type: `{example}`")))
                        }
                    }
                }
            }
            _ => {
                if let Some(tokens) = list(&opt, option, "context(greeting: String, …)", errors) {
                    out.context = context_keys(tokens, errors);
                }
            }
        }
    }
    match (input, output) {
        (Some((i, _)), Some((o, _))) => out.child = Some((i, o)),
        (Some((_, span)), None) => errors.at(span, "`input` needs `output` too: `input = Article, output = Summary`"),
        (None, Some((_, span))) => errors.at(span, "`output` needs `input` too: `input = Article, output = Summary`"),
        (None, None) => {}
    }
    out
}

fn context_keys(tokens: TokenStream, errors: &mut Errors) -> Vec<ContextKey> {
    let Some(keys) = errors.ok(Punctuated::<ContextKey, Token![,]>::parse_terminated.parse2(tokens)) else {
        return Vec::new();
    };
    let mut out: Vec<ContextKey> = Vec::new();
    let mut methods: Vec<String> = Vec::new();
    for key in keys {
        if out.iter().any(|k| k.ident == key.ident) {
            errors.at(key.ident.span(), format!("context key `{}` is given twice", key.ident));
            continue;
        }
        let name = key.ident.to_string();
        let accessors = [name.clone(), format!("set_{name}"), format!("update_{name}")];
        if let Some(clash) = accessors.iter().find(|m| symbol::CONTEXT_METHODS.contains(&m.as_str())) {
            errors.at(
                key.ident.span(),
                format!("context key `{name}` would generate `{clash}`, which `Context` already has; rename the key"),
            );
            continue;
        }
        if let Some(clash) = accessors.iter().find(|m| methods.contains(m)) {
            errors.at(key.ident.span(), format!("context key `{name}` would generate `{clash}` a second time"));
            continue;
        }
        methods.extend(accessors);
        out.push(key);
    }
    out
}

/// Parse the options of one `#[state(...)]`.
pub fn state_options(args: TokenStream, errors: &mut Errors) -> StateOptions {
    let mut out = StateOptions::default();
    let mut seen = Vec::new();
    for opt in opts(args, errors) {
        let Some(option) = option_of(&opt, symbol::STATE_OPTIONS, "`#[state]`", &mut seen, errors) else {
            continue;
        };
        match option {
            symbol::RESOURCES => {
                if let Some(tokens) = list(&opt, option, "resources(cpu = 2.0, memory_mb = 1024)", errors) {
                    out.resources = Some(resources(tokens, errors));
                }
            }
            symbol::PRIORITY => {
                if let Some(v) = value(&opt, option, "priority = High", errors) {
                    out.priority = variant(v, option, symbol::PRIORITIES, errors)
                        .map(|i| {
                            [PriorityLevel::Low, PriorityLevel::Normal, PriorityLevel::High, PriorityLevel::Critical][i]
                        })
                        .unwrap_or_default();
                }
            }
            symbol::TIMEOUT => {
                if let Some(v) = value(&opt, option, "timeout = 300", errors) {
                    out.timeout_nanos = seconds(v, option, true, errors);
                }
            }
            symbol::RETRY => {
                if let Some(tokens) = list(&opt, option, "retry(max = 3, initial_delay = 1.0)", errors) {
                    out.retry = Some(retry(tokens, errors));
                }
            }
            symbol::RATE_LIMIT => {
                if let Some(tokens) = list(&opt, option, RATE_LIMIT_EXAMPLE, errors) {
                    out.rate_limit = rate_limit(tokens, opt.name.span(), errors);
                }
            }
            symbol::DEPENDS_ON => {
                if let Some(tokens) = list(&opt, option, "depends_on(prepare_data = Required)", errors) {
                    out.depends_on = dependencies(tokens, errors);
                }
            }
            symbol::ON_ERROR => {
                if let Some(v) = value(&opt, option, "on_error = \"handle_error\"", errors) {
                    out.on_error = string(v, option, errors).map(|s| Named::from(&s));
                }
            }
            symbol::PREEMPTIBLE => out.preemptible = flag(&opt, option, errors),
            symbol::JOIN => out.join = flag(&opt, option, errors),
            _ => out.blocking = flag(&opt, option, errors),
        }
    }
    out
}

fn resources(tokens: TokenStream, errors: &mut Errors) -> Resources {
    let mut out = Resources::default();
    let mut seen = Vec::new();
    for opt in opts(tokens, errors) {
        let Some(field) = option_of(&opt, symbol::RESOURCE_FIELDS, "`resources`", &mut seen, errors) else {
            continue;
        };
        let example = format!("{field} = 1.0");
        let Some(v) = value(&opt, field, &example, errors) else {
            continue;
        };
        let Some(amount) = number(v, field, "an amount", errors) else {
            continue;
        };
        if amount < 0.0 {
            errors.push(syn::Error::new_spanned(v, format!("resource `{field}` must not be negative")));
            continue;
        }
        let slot = match field {
            symbol::CPU => &mut out.cpu,
            symbol::MEMORY_MB => &mut out.memory_mb,
            symbol::IO => &mut out.io,
            symbol::NETWORK => &mut out.network,
            _ => &mut out.gpu,
        };
        *slot = amount;
    }
    out
}

fn retry(tokens: TokenStream, errors: &mut Errors) -> Retry {
    let mut out = Retry::default();
    let mut seen = Vec::new();
    let mut initial_span = None;
    for opt in opts(tokens, errors) {
        let Some(field) = option_of(&opt, symbol::RETRY_FIELDS, "`retry`", &mut seen, errors) else {
            continue;
        };
        match field {
            symbol::MAX => {
                if let Some(v) = value(&opt, field, "max = 3", errors) {
                    if let Some(n) = int::<u32>(v, field, errors) {
                        if n == 0 {
                            errors.push(syn::Error::new_spanned(
                                v,
                                "retry `max` must be at least 1 (leave `retry` out for no retries)",
                            ));
                        } else {
                            out.max = Some(n);
                        }
                    }
                }
            }
            symbol::INITIAL_DELAY => {
                if let Some(v) = value(&opt, field, "initial_delay = 1.0", errors) {
                    if let Some(n) = seconds(v, field, false, errors) {
                        out.initial_delay_nanos = Some(n);
                        initial_span = Some(v.span());
                    }
                }
            }
            symbol::MAX_DELAY => {
                if let Some(v) = value(&opt, field, "max_delay = 60.0", errors) {
                    if let Some(n) = seconds(v, field, false, errors) {
                        out.max_delay_nanos = Some(n);
                    }
                }
            }
            symbol::EXPONENTIAL_BASE => {
                if let Some(v) = value(&opt, field, "exponential_base = 2.0", errors) {
                    if let Some(b) = number(v, field, "a factor", errors) {
                        if b < 1.0 {
                            errors.push(syn::Error::new_spanned(v, "retry `exponential_base` must be at least 1"));
                        } else {
                            out.exponential_base = Some(b);
                        }
                    }
                }
            }
            _ => {
                if let Some(v) = value(&opt, field, "jitter = true", errors) {
                    match v {
                        Expr::Lit(ExprLit { lit: Lit::Bool(b), .. }) => out.jitter = Some(b.value),
                        _ => errors.push(syn::Error::new_spanned(v, "retry `jitter` is `true` or `false`")),
                    }
                }
            }
        }
    }
    // With one delay given, the other is `RetryPolicy::new()`'s: the generated code checks
    // the pair at compile time (`codegen::state`).
    if let (Some(initial), Some(max)) = (out.initial_delay_nanos, out.max_delay_nanos) {
        if initial > max {
            errors
                .at(initial_span.unwrap_or_else(Span::call_site), "retry `initial_delay` must not exceed `max_delay`");
        }
    }
    out
}

const RATE_LIMIT_EXAMPLE: &str = "rate_limit(per_second = 10, burst = 20)";

/// `rate_limit(...)`'s fields; `None` when `per_second` is missing or a value is wrong. `name`
/// is the span of `rate_limit`, where a missing `per_second` is reported.
fn rate_limit(tokens: TokenStream, name: Span, errors: &mut Errors) -> Option<RateLimit> {
    let mut per_second = None;
    let mut burst = Some(1);
    let mut seen = Vec::new();
    for opt in opts(tokens, errors) {
        let Some(field) = option_of(&opt, symbol::RATE_LIMIT_FIELDS, "`rate_limit`", &mut seen, errors) else {
            continue;
        };
        if field == symbol::PER_SECOND {
            let Some(v) = value(&opt, field, "per_second = 10", errors) else {
                continue;
            };
            per_second = number(v, field, "a rate", errors).filter(|&rate| {
                let positive = rate > 0.0;
                if !positive {
                    errors.push(syn::Error::new_spanned(
                        v,
                        "rate_limit `per_second` must be greater than 0 (leave `rate_limit` out for no limit)",
                    ));
                }
                positive
            });
        } else {
            burst = value(&opt, field, "burst = 20", errors).and_then(|v| positive_int::<u32>(v, field, errors));
        }
    }
    if !seen.contains(&symbol::PER_SECOND) {
        errors.at(name, format!("`rate_limit` needs `per_second`: `{RATE_LIMIT_EXAMPLE}`"));
    }
    Some(RateLimit { per_second: per_second?, burst: burst? })
}

fn dependencies(tokens: TokenStream, errors: &mut Errors) -> Vec<Dependency> {
    let mut out: Vec<Dependency> = Vec::new();
    for opt in opts(tokens, errors) {
        let Some(ident) = opt.name.get_ident() else {
            errors.push(syn::Error::new_spanned(
                &opt.name,
                "expected a state name: `depends_on(prepare_data = Required)`",
            ));
            continue;
        };
        let kind = match &opt.value {
            OptValue::Flag => Some(DependencyKind::Required),
            OptValue::Value(v) => variant(v, symbol::DEPENDS_ON, symbol::DEPENDENCY_TYPES, errors).map(|i| {
                [
                    DependencyKind::Required,
                    DependencyKind::Optional,
                    DependencyKind::Parallel,
                    DependencyKind::Sequential,
                ][i]
            }),
            OptValue::List(_) => {
                errors.push(syn::Error::new_spanned(
                    ident,
                    format!("write `{ident} = Required` (or `Optional`, `Parallel`, `Sequential`)"),
                ));
                None
            }
        };
        if out.iter().any(|d| d.name.text == *syn::ext::IdentExt::unraw(ident).to_string()) {
            errors.at(ident.span(), format!("dependency `{ident}` is given twice"));
            continue;
        }
        if let Some(kind) = kind {
            out.push(Dependency { name: Named::from(ident), kind });
        }
    }
    out
}

// ----- scalar values -------------------------------------------------------------------------

fn string(v: &Expr, option: Symbol, errors: &mut Errors) -> Option<LitStr> {
    match v {
        Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => Some(s.clone()),
        _ => {
            errors.push(syn::Error::new_spanned(v, format!("`{option}` takes a string literal: `{option} = \"…\"`")));
            None
        }
    }
}

/// The index in `valid` of the variant `v` names (`High` or `Priority::High`).
fn variant(v: &Expr, option: Symbol, valid: &[Symbol], errors: &mut Errors) -> Option<usize> {
    let ident = match v {
        Expr::Path(p) if p.qself.is_none() => p.path.segments.last().map(|s| &s.ident),
        _ => None,
    };
    let Some(ident) = ident else {
        errors.push(syn::Error::new_spanned(v, format!("`{option}` takes one of {}", symbol::list(valid))));
        return None;
    };
    let found = valid.iter().position(|s| *ident == *s);
    if found.is_none() {
        let name = ident.to_string();
        let hint = suggestion_suffix(did_you_mean(&name, valid.iter().map(|s| s.as_str())));
        errors.at(ident.span(), format!("unknown value `{name}`: `{option}` takes {}{hint}", symbol::list(valid)));
    }
    found
}

/// A numeric literal, optionally negated, as a finite `f64`.
fn number(v: &Expr, field: Symbol, what: &str, errors: &mut Errors) -> Option<f64> {
    let (negative, lit) = match v {
        Expr::Unary(ExprUnary { op: UnOp::Neg(_), expr, .. }) => (true, &**expr),
        other => (false, other),
    };
    // `base10_digits` keeps a leading `-` where syn read a negative literal.
    let parsed = match lit {
        Expr::Lit(ExprLit { lit: Lit::Int(i), .. }) => i.base10_digits().parse::<f64>(),
        Expr::Lit(ExprLit { lit: Lit::Float(f), .. }) => f.base10_digits().parse::<f64>(),
        _ => {
            errors.push(syn::Error::new_spanned(
                v,
                format!("`{field}` takes {what} written as a number literal, like `{field} = 1.5`"),
            ));
            return None;
        }
    };
    let Ok(n) = parsed else {
        errors.push(syn::Error::new_spanned(v, format!("`{field}` takes {what} written as a number literal")));
        return None;
    };
    if !n.is_finite() {
        errors.push(syn::Error::new_spanned(v, format!("`{field}` must be a finite number")));
        return None;
    }
    Some(if negative { -n } else { n })
}

/// A number of seconds, as nanoseconds: `positive` rejects zero.
fn seconds(v: &Expr, field: Symbol, positive: bool, errors: &mut Errors) -> Option<u64> {
    if let Expr::Lit(ExprLit { lit: Lit::Str(_), .. }) = v {
        errors.push(syn::Error::new_spanned(
            v,
            format!("`{field}` is a number of seconds, like `{field} = 1.5`, not a string"),
        ));
        return None;
    }
    let secs = number(v, field, "a number of seconds", errors)?;
    let nanos = (secs * 1e9).round();
    if secs < 0.0 || (positive && nanos < 1.0) {
        let must = if positive { "a positive" } else { "a non-negative" };
        errors.push(syn::Error::new_spanned(v, format!("`{field}` must be {must} number of seconds")));
        return None;
    }
    if nanos >= u64::MAX as f64 {
        errors.push(syn::Error::new_spanned(v, format!("`{field}` is too long for a `Duration` in nanoseconds")));
        return None;
    }
    Some(nanos as u64)
}

/// An integer literal of type `N`.
fn int<N>(v: &Expr, field: Symbol, errors: &mut Errors) -> Option<N>
where
    N: std::str::FromStr,
    N::Err: std::fmt::Display,
{
    match v {
        Expr::Lit(ExprLit { lit: Lit::Int(i), .. }) if i.base10_digits().starts_with('-') => {
            errors.push(syn::Error::new_spanned(v, format!("`{field}` must not be negative")));
            None
        }
        Expr::Lit(ExprLit { lit: Lit::Int(i), .. }) => errors.ok(i.base10_parse::<N>()),
        Expr::Unary(ExprUnary { op: UnOp::Neg(_), .. }) => {
            errors.push(syn::Error::new_spanned(v, format!("`{field}` must not be negative")));
            None
        }
        _ => {
            errors.push(syn::Error::new_spanned(v, format!("`{field}` takes an integer literal, like `{field} = 3`")));
            None
        }
    }
}

fn positive_int<N>(v: &Expr, field: Symbol, errors: &mut Errors) -> Option<N>
where
    N: std::str::FromStr + Default + PartialEq,
    N::Err: std::fmt::Display,
{
    let n = int::<N>(v, field, errors)?;
    if n == N::default() {
        errors.push(syn::Error::new_spanned(v, format!("`{field}` must be at least 1")));
        return None;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::*;

    fn options(tokens: TokenStream) -> (StateOptions, Vec<String>) {
        let mut errors = Errors::new();
        let out = state_options(tokens, &mut errors);
        (out, messages(errors))
    }

    fn messages(errors: Errors) -> Vec<String> {
        match errors.finish() {
            Ok(()) => Vec::new(),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn every_documented_option_parses() {
        let (o, errs) = options(quote! {
            resources(cpu = 2.0, memory_mb = 1024, io = 1.0, network = 1.0, gpu = 1.0),
            priority = High,
            timeout = 300,
            retry(max = 3, initial_delay = 1.0, max_delay = 60.0, exponential_base = 2.0, jitter = true),
            rate_limit(per_second = 10, burst = 20),
            depends_on(prepare_data = Required, validate_data = Optional),
            on_error = "handle_error",
            preemptible,
            join,
        });
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(o.resources, Some(Resources { cpu: 2.0, memory_mb: 1024.0, io: 1.0, network: 1.0, gpu: 1.0 }));
        assert_eq!(o.priority, PriorityLevel::High);
        assert_eq!(o.timeout_nanos, Some(300_000_000_000));
        let given = Retry {
            max: Some(3),
            initial_delay_nanos: Some(1_000_000_000),
            max_delay_nanos: Some(60_000_000_000),
            exponential_base: Some(2.0),
            jitter: Some(true),
        };
        assert_eq!(o.retry, Some(given));
        assert_eq!(o.rate_limit, Some(RateLimit { per_second: 10.0, burst: 20 }));
        assert_eq!(o.depends_on.len(), 2);
        assert_eq!(o.depends_on[1].kind, DependencyKind::Optional);
        assert_eq!(o.on_error.map(|n| n.text), Some("handle_error".to_owned()));
        assert!(o.preemptible && o.join && !o.blocking);
    }

    #[test]
    fn fractional_timeouts_and_partial_retries() {
        let (o, errs) = options(quote!(timeout = 1.5, retry(max = 5), blocking));
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(o.timeout_nanos, Some(1_500_000_000));
        assert_eq!(o.retry, Some(Retry { max: Some(5), ..Retry::default() }));
        assert!(o.blocking);
    }

    #[test]
    fn rate_limits_take_fractions_and_default_to_a_burst_of_one() {
        let (o, errs) = options(quote!(rate_limit(per_second = 0.5)));
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(o.rate_limit, Some(RateLimit { per_second: 0.5, burst: 1 }));
        let (o, errs) = options(quote!(rate_limit(burst = 3, per_second = 2,)));
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(o.rate_limit, Some(RateLimit { per_second: 2.0, burst: 3 }));
        assert_eq!(options(quote!(timeout = 1)).0.rate_limit, None);
    }

    #[test]
    fn bad_rate_limits_are_rejected() {
        let cases: [(TokenStream, &[&str]); 9] = [
            (quote!(rate_limit(per_second = 0)), &["rate_limit `per_second` must be greater than 0"]),
            (quote!(rate_limit(per_second = -2.5)), &["rate_limit `per_second` must be greater than 0"]),
            (quote!(rate_limit(per_second = "10")), &["`per_second` takes a rate written as a number literal"]),
            (quote!(rate_limit(per_second = 1, burst = 0)), &["`burst` must be at least 1"]),
            (quote!(rate_limit(per_second = 1, burst = 1.5)), &["`burst` takes an integer literal"]),
            (
                quote!(rate_limit(per_second = 1, brust = 2)),
                &["unknown `rate_limit` option `brust`: expected `per_second` or `burst`; did you mean `burst`?"],
            ),
            (
                quote!(rate_limit(burst = 2)),
                &["`rate_limit` needs `per_second`: `rate_limit(per_second = 10, burst = 20)`"],
            ),
            (quote!(rate_limit), &["`rate_limit` takes a list: `rate_limit(per_second = 10, burst = 20)`"]),
            (
                quote!(rate_limit(per_second = 1), rate_limit(per_second = 2, per_second = 3)),
                &["`rate_limit` is given twice"],
            ),
        ];
        for (tokens, expected) in cases {
            let (o, errs) = options(tokens.clone());
            assert_eq!(errs.len(), expected.len(), "{tokens}: {errs:?}");
            for (err, want) in errs.iter().zip(expected) {
                assert!(err.starts_with(want), "{tokens}: {err:?} does not start with {want:?}");
            }
            assert!(o.rate_limit.is_none() || o.rate_limit == Some(RateLimit { per_second: 1.0, burst: 1 }), "{o:?}");
        }
    }

    #[test]
    fn bad_values_are_rejected_each_at_once() {
        let (_, errs) = options(quote! {
            resources(cpu = -1.0, gpu = f64::NAN),
            retry(max = 0, initial_delay = "1s"),
            timeout = 0,
            priority = Urgent,
        });
        assert_eq!(errs.len(), 6, "{errs:?}");
        assert!(errs[0].contains("must not be negative"));
        assert!(errs[1].contains("number literal"));
        assert!(errs[2].contains("at least 1"));
        assert!(errs[3].contains("number of seconds"));
        assert!(errs[4].contains("positive"));
        assert!(errs[5].contains("unknown value `Urgent`"));
    }

    #[test]
    fn unknown_and_repeated_options() {
        let (_, errs) = options(quote!(priorty = High, timeout = 1, timeout = 2));
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].starts_with("unknown `#[state]` option `priorty`: expected `resources`, `priority`"));
        assert!(errs[0].ends_with("; did you mean `priority`?"));
        assert_eq!(errs[1], "`timeout` is given twice");
    }

    #[test]
    fn context_keys_must_not_clash() {
        let mut errors = Errors::new();
        let keys = context_keys(quote!(greeting: String, state: u32, x: u8, set_x: u8, greeting: u8), &mut errors);
        assert_eq!(keys.iter().map(|k| k.ident.to_string()).collect::<Vec<_>>(), ["greeting", "x"]);
        let errs = messages(errors);
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(errs[0].contains("`set_state`, which `Context` already has"));
        assert!(errs[1].contains("`set_x` a second time"));
        assert!(errs[2].contains("given twice"));
    }

    #[test]
    fn delays_given_together_must_be_ordered() {
        let (_, errs) = options(quote!(retry(initial_delay = 120, max_delay = 60)));
        assert_eq!(errs.len(), 1);
        assert!(errs[0].contains("must not exceed"));
        // One delay alone is checked against the default in the generated code.
        let (o, errs) = options(quote!(retry(initial_delay = 120)));
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(o.retry, Some(Retry { initial_delay_nanos: Some(120_000_000_000), ..Retry::default() }));
    }

    #[test]
    fn workflows_collect_states_and_strip_attributes() {
        let mut errors = Errors::new();
        let w = workflow(
            quote!(name = "w", start = "b", max_concurrent = 4, context(greeting: String)),
            quote! {
                mod m {
                    #[state] async fn a(ctx: &Context) -> StateResult { "b".into() }
                    fn helper() {}
                    #[agent::state(timeout = 1)] async fn b(ctx: Context) -> StateResult { StateResult::End }
                }
            },
            &mut errors,
        )
        .unwrap();
        assert!(errors.is_empty());
        assert_eq!(w.options.name.unwrap().value(), "w");
        assert_eq!(w.options.start.unwrap().text, "b");
        assert_eq!(w.options.max_concurrent, Some(4));
        assert_eq!(w.options.context.len(), 1);
        assert_eq!(w.states.len(), 2);
        assert_eq!(w.states[1].0, 2);
        assert_eq!(w.states[1].1.ctx, Some(CtxKind::Owned));
        assert!(w.states.iter().all(|(_, s)| !s.func.attrs.iter().any(is_state_attr)));
    }

    #[test]
    fn non_inline_modules_are_rejected() {
        let mut errors = Errors::new();
        assert!(workflow(
            quote!(),
            quote!(
                mod m;
            ),
            &mut errors
        )
        .is_none());
        assert!(workflow(
            quote!(),
            quote!(
                fn f() {}
            ),
            &mut errors
        )
        .is_none());
        assert_eq!(messages(errors).len(), 2);
    }
}
