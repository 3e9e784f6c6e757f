//! Finding, and rewriting, the transition targets in a state's body.
//!
//! A *literal target* is a string literal standing where a state name is consumed:
//! - the argument of a call whose callee path ends in `next`/`Next` (`StateResult::next("b")`),
//!   possibly as `"b".into()`;
//! - an element of an array or `vec![…]` passed to `parallel`/`Parallel`;
//! - in a *tail position*, the receiver of `.into()` (`"b".into()`, `["b", "c"].into()`,
//!   `vec!["b"].into()`, `Some("b").into()`) or the argument of a `…::from(…)` call.
//!
//! Tail positions are the body's final expression and every `return` value, recursing through
//! blocks, `if`/`else`, `match` arms, `Ok(…)`, and `break` values of a `loop` or labelled
//! block that is itself in tail position.
//!
//! Invariants:
//! - Sound, not complete: `computed` is true whenever a tail position holds anything that is
//!   not a literal transition, `StateResult::End`, `None.into()`, `Err(…)` or a diverging
//!   macro (`panic!`, `unreachable!`, `todo!`, `unimplemented!`). So `computed == false`
//!   guarantees that the literal targets are every place this state can go.
//! - `return` and `break` are followed only in the state's own body: not into closures,
//!   `async` blocks or nested items (their `return`s leave something else). A macro
//!   invocation whose tokens hold `return` or `break` is opaque, so it sets `computed`.
//! - Literal targets are reported in source order, every occurrence (duplicates kept).
//! - Rewriting replaces only the literal token itself (`"b"` → the rewriter's expression),
//!   except inside `Some("b")`, which is never rewritten (its type must stay
//!   `Option<&str>`). Where an array mixes rewritten and other elements, the others are
//!   wrapped in `Into::<StateName>::into` so the array keeps one element type.

use proc_macro2::{TokenStream, TokenTree};
use quote::ToTokens;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::visit_mut::{self, VisitMut};
use syn::{Block, Expr, ExprCall, ExprLit, Item, Lit, LitStr, Macro, Stmt, Token};

/// What a scan found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scan {
    /// Every literal target, in source order.
    pub targets: Vec<LitStr>,
    /// Whether some tail position holds a target computed at run time.
    pub computed: bool,
}

/// Replaces a literal target with an expression of type `StateName`, or leaves it (`None`).
pub type Rewriter<'a> = dyn FnMut(&LitStr) -> Option<Expr> + 'a;

/// Scan `body`, rewriting literal targets through `rewrite`.
pub fn scan(body: &mut Block, rewrite: &mut Rewriter<'_>) -> Scan {
    let mut walker = Walker { rewrite, scan: Scan::default(), frames: Vec::new(), closures: 0 };
    walker.tail_block(body);
    walker.scan
}

/// Scan `body` without changing it.
pub fn scan_only(body: &Block) -> Scan {
    scan(&mut body.clone(), &mut |_| None)
}

/// A loop or labelled block around the current expression.
struct Frame {
    label: Option<String>,
    is_loop: bool,
    tail: bool,
}

struct Walker<'r, 'a> {
    rewrite: &'r mut Rewriter<'a>,
    scan: Scan,
    frames: Vec<Frame>,
    closures: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Callee {
    Next,
    Parallel,
    Ok,
    Err,
    Some,
    From,
    Other,
}

fn callee(func: &Expr) -> Callee {
    let Expr::Path(p) = func else {
        return Callee::Other;
    };
    let Some(last) = p.path.segments.last() else {
        return Callee::Other;
    };
    match last.ident.to_string().as_str() {
        "next" | "Next" => Callee::Next,
        "parallel" | "Parallel" => Callee::Parallel,
        "Ok" => Callee::Ok,
        "Err" => Callee::Err,
        "Some" => Callee::Some,
        "from" => Callee::From,
        _ => Callee::Other,
    }
}

fn path_ends_with(expr: &Expr, word: &str) -> bool {
    matches!(expr, Expr::Path(p) if p.qself.is_none() && p.path.segments.last().is_some_and(|s| s.ident == word))
}

fn is_macro(mac: &Macro, names: &[&str]) -> bool {
    mac.path.segments.last().is_some_and(|s| names.iter().any(|n| s.ident == n))
}

const DIVERGING: &[&str] = &["panic", "unreachable", "todo", "unimplemented"];

/// Whether `tokens` hold `return` or `break` anywhere.
fn may_leave(tokens: &TokenStream) -> bool {
    tokens.clone().into_iter().any(|t| match t {
        TokenTree::Ident(i) => i == "return" || i == "break",
        TokenTree::Group(g) => may_leave(&g.stream()),
        _ => false,
    })
}

fn str_lit(expr: &Expr) -> Option<&LitStr> {
    match expr {
        Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => Some(s),
        _ => None,
    }
}

impl Walker<'_, '_> {
    fn computed(&mut self) {
        self.scan.computed = true;
    }

    /// Record the literal `expr` and rewrite it in place; `true` if rewritten.
    fn literal(&mut self, expr: &mut Expr, rewritable: bool) -> bool {
        let Some(lit) = str_lit(expr) else {
            return false;
        };
        self.scan.targets.push(lit.clone());
        if !rewritable {
            return false;
        }
        match (self.rewrite)(lit) {
            Some(new) => {
                *expr = new;
                true
            }
            None => false,
        }
    }

    /// A name operand: `"b"` or `"b".into()`. Returns (is literal, was rewritten).
    fn name(&mut self, expr: &mut Expr, tail: bool) -> (bool, bool) {
        match expr {
            Expr::Lit(_) if str_lit(expr).is_some() => (true, self.literal(expr, true)),
            Expr::MethodCall(m) if m.method == "into" && m.args.is_empty() && str_lit(&m.receiver).is_some() => {
                (true, self.literal(&mut m.receiver, true))
            }
            Expr::Paren(p) => self.name(&mut p.expr, tail),
            Expr::Group(g) => self.name(&mut g.expr, tail),
            _ => {
                if tail {
                    self.computed();
                }
                self.visit_expr_mut(expr);
                (false, false)
            }
        }
    }

    /// A list of names: an array or `vec![…]`.
    fn names(&mut self, expr: &mut Expr, tail: bool) {
        match expr {
            Expr::Array(a) => self.elements(&mut a.elems, tail),
            Expr::Macro(m) if is_macro(&m.mac, &["vec"]) => {
                let parsed = Punctuated::<Expr, Token![,]>::parse_terminated.parse2(m.mac.tokens.clone());
                match parsed {
                    Ok(mut elems) => {
                        self.elements(&mut elems, tail);
                        m.mac.tokens = elems.into_token_stream();
                    }
                    Err(_) => self.opaque(tail, &m.mac),
                }
            }
            Expr::Paren(p) => self.names(&mut p.expr, tail),
            Expr::Group(g) => self.names(&mut g.expr, tail),
            _ => {
                if tail {
                    self.computed();
                }
                self.visit_expr_mut(expr);
            }
        }
    }

    fn elements(&mut self, elems: &mut Punctuated<Expr, Token![,]>, tail: bool) {
        let results: Vec<(bool, bool)> = elems.iter_mut().map(|e| self.name(e, tail)).collect();
        if results.iter().any(|r| r.1) {
            for (e, (_, rewritten)) in elems.iter_mut().zip(results) {
                if !rewritten {
                    *e = syn::parse_quote!(::core::convert::Into::<::agent::__private::StateName>::into(#e));
                }
            }
        }
    }

    /// A call of `next`/`parallel`: its arguments are name operands.
    fn target_call(&mut self, call: &mut ExprCall, kind: Callee, tail: bool) {
        if call.args.len() != 1 {
            if tail {
                self.computed();
            }
            visit_mut::visit_expr_call_mut(self, call);
            return;
        }
        let arg = &mut call.args[0];
        if kind == Callee::Next {
            self.name(arg, tail);
        } else {
            self.names(arg, tail);
        }
    }

    /// What `.into()` or `from(…)` converts, in tail position.
    fn converted(&mut self, expr: &mut Expr) {
        match expr {
            Expr::Lit(_) if str_lit(expr).is_some() => {
                self.literal(expr, true);
            }
            Expr::Array(_) | Expr::Macro(_) => self.names(expr, true),
            Expr::Path(_) if path_ends_with(expr, "None") => {}
            Expr::Call(c) if callee(&c.func) == Callee::Some && c.args.len() == 1 && str_lit(&c.args[0]).is_some() => {
                self.literal(&mut c.args[0], false);
            }
            Expr::Paren(p) => self.converted(&mut p.expr),
            Expr::Group(g) => self.converted(&mut g.expr),
            _ => {
                self.computed();
                self.visit_expr_mut(expr);
            }
        }
    }

    fn opaque(&mut self, tail: bool, mac: &Macro) {
        if tail || may_leave(&mac.tokens) {
            self.computed();
        }
    }

    /// The statements of a block whose value is in tail position.
    fn tail_block(&mut self, block: &mut Block) {
        let Some((last, rest)) = block.stmts.split_last_mut() else {
            return;
        };
        for stmt in rest {
            self.visit_stmt_mut(stmt);
        }
        match last {
            Stmt::Expr(e, None) => self.tail(e),
            Stmt::Macro(m) if m.semi_token.is_none() => {
                if !is_macro(&m.mac, DIVERGING) {
                    self.computed();
                }
            }
            other => self.visit_stmt_mut(other),
        }
    }

    /// An expression whose value the state returns.
    fn tail(&mut self, expr: &mut Expr) {
        match expr {
            Expr::Block(b) => {
                let label = b.label.as_ref().map(|l| l.name.ident.to_string());
                self.frames.push(Frame { label, is_loop: false, tail: true });
                self.tail_block(&mut b.block);
                self.frames.pop();
            }
            Expr::Unsafe(u) => self.tail_block(&mut u.block),
            Expr::If(i) => {
                self.visit_expr_mut(&mut i.cond);
                self.tail_block(&mut i.then_branch);
                if let Some((_, other)) = &mut i.else_branch {
                    self.tail(other);
                }
            }
            Expr::Match(m) => {
                self.visit_expr_mut(&mut m.expr);
                for arm in &mut m.arms {
                    if let Some((_, guard)) = &mut arm.guard {
                        self.visit_expr_mut(guard);
                    }
                    self.tail(&mut arm.body);
                }
            }
            Expr::Paren(p) => self.tail(&mut p.expr),
            Expr::Group(g) => self.tail(&mut g.expr),
            Expr::Return(r) => {
                if let Some(v) = &mut r.expr {
                    self.tail(v);
                }
            }
            Expr::Call(c) => match callee(&c.func) {
                Callee::Ok if c.args.len() == 1 => self.tail(&mut c.args[0]),
                Callee::Err => visit_mut::visit_expr_call_mut(self, c),
                kind @ (Callee::Next | Callee::Parallel) => self.target_call(c, kind, true),
                Callee::From if c.args.len() == 1 => self.converted(&mut c.args[0]),
                _ => {
                    self.computed();
                    visit_mut::visit_expr_call_mut(self, c);
                }
            },
            Expr::MethodCall(m) if m.method == "into" && m.args.is_empty() => self.converted(&mut m.receiver),
            Expr::Path(_) if path_ends_with(expr, "End") => {}
            Expr::Macro(m) => {
                if !is_macro(&m.mac, DIVERGING) {
                    self.computed();
                }
            }
            Expr::Loop(l) => {
                let label = l.label.as_ref().map(|l| l.name.ident.to_string());
                self.frames.push(Frame { label, is_loop: true, tail: true });
                self.visit_block_mut(&mut l.body);
                self.frames.pop();
            }
            _ => {
                self.computed();
                self.visit_expr_mut(expr);
            }
        }
    }

    fn in_frame(&mut self, label: Option<&syn::Label>, is_loop: bool, f: impl FnOnce(&mut Self)) {
        let label = label.map(|l| l.name.ident.to_string());
        self.frames.push(Frame { label, is_loop, tail: false });
        f(self);
        self.frames.pop();
    }

    fn in_closure(&mut self, f: impl FnOnce(&mut Self)) {
        let frames = std::mem::take(&mut self.frames);
        self.closures += 1;
        f(self);
        self.closures -= 1;
        self.frames = frames;
    }
}

impl VisitMut for Walker<'_, '_> {
    fn visit_expr_mut(&mut self, expr: &mut Expr) {
        match expr {
            Expr::Call(c) => match callee(&c.func) {
                kind @ (Callee::Next | Callee::Parallel) => self.target_call(c, kind, false),
                _ => visit_mut::visit_expr_call_mut(self, c),
            },
            Expr::Return(r) if self.closures == 0 => {
                if let Some(v) = &mut r.expr {
                    self.tail(v);
                }
            }
            Expr::Break(b) => {
                let target = match &b.label {
                    Some(l) => {
                        let name = l.ident.to_string();
                        self.frames.iter().rev().find(|f| f.label.as_deref() == Some(name.as_str()))
                    }
                    None => self.frames.iter().rev().find(|f| f.is_loop),
                };
                let tail = target.is_some_and(|f| f.tail);
                match &mut b.expr {
                    Some(v) if tail => self.tail(v),
                    Some(v) => self.visit_expr_mut(v),
                    None => {}
                }
            }
            Expr::Closure(c) => self.in_closure(|w| w.visit_expr_mut(&mut c.body)),
            Expr::Async(a) => self.in_closure(|w| w.visit_block_mut(&mut a.block)),
            Expr::Loop(l) => self.in_frame(l.label.as_ref(), true, |w| w.visit_block_mut(&mut l.body)),
            Expr::While(l) => self.in_frame(l.label.as_ref(), true, |w| {
                w.visit_expr_mut(&mut l.cond);
                w.visit_block_mut(&mut l.body);
            }),
            Expr::ForLoop(l) => {
                self.visit_expr_mut(&mut l.expr);
                self.in_frame(l.label.as_ref(), true, |w| w.visit_block_mut(&mut l.body));
            }
            Expr::Block(b) if b.label.is_some() => {
                self.in_frame(b.label.as_ref(), false, |w| w.visit_block_mut(&mut b.block))
            }
            _ => visit_mut::visit_expr_mut(self, expr),
        }
    }

    fn visit_macro_mut(&mut self, mac: &mut Macro) {
        if self.closures == 0 {
            self.opaque(false, mac);
        }
    }

    fn visit_item_mut(&mut self, _: &mut Item) {}
}

#[cfg(test)]
mod tests {
    use quote::quote;
    use syn::parse_quote;

    use super::*;

    fn show(block: &Block) -> String {
        quote!(#block).to_string()
    }

    fn targets(body: Block) -> (Vec<String>, bool) {
        let s = scan_only(&body);
        (s.targets.iter().map(LitStr::value).collect(), s.computed)
    }

    #[test]
    fn literal_tails_and_calls() {
        let (t, computed) = targets(parse_quote!({
            if x {
                return StateResult::next("a");
            }
            match y {
                1 => "b".into(),
                2 => ["c", "d"].into(),
                3 => vec!["e"].into(),
                4 => StateResult::parallel(["f", "g"]),
                5 => Ok(StateResult::next("h")),
                6 => StateResult::End,
                7 => None.into(),
                8 => Some("i").into(),
                9 => Err(e),
                10 => panic!("no"),
                _ => StateResult::from("j"),
            }
        }));
        assert_eq!(t, ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]);
        assert!(!computed);
    }

    #[test]
    fn computed_tails() {
        for body in [
            parse_quote!({ StateResult::next(format!("chunk_{}", i)) }),
            parse_quote!({
                let r = "a".into();
                r
            }),
            parse_quote!({ helper() }),
            parse_quote!({
                if x {
                    "a".into()
                } else {
                    name.into()
                }
            }),
            parse_quote!({ StateResult::parallel(names) }),
            parse_quote!({ StateResult::parallel(["a", b]) }),
            parse_quote!({
                tokio::select! { _ = f => return "a".into() };
                StateResult::End
            }),
            parse_quote!({
                loop {
                    break other;
                }
            }),
        ] {
            assert!(targets(body).1);
        }
    }

    #[test]
    fn closures_and_items_are_not_returns() {
        let (t, computed) = targets(parse_quote!({
            let f = || {
                return helper();
            };
            let g = async {
                return name;
            };
            fn nested() -> StateResult {
                return name.into();
            }
            let r = StateResult::next("inner");
            StateResult::End
        }));
        assert_eq!(t, ["inner"]);
        assert!(!computed);
    }

    #[test]
    fn loop_breaks_in_tail_position() {
        let (t, computed) = targets(parse_quote!({
            loop {
                for i in 0..3 {
                    if i == 2 {
                        break;
                    }
                }
                break "a".into();
            }
        }));
        assert_eq!(t, ["a"]);
        assert!(!computed);
    }

    #[test]
    fn rewriting_replaces_literals_only() {
        let mut body: Block = parse_quote!({
            if x {
                return StateResult::parallel(vec!["a", other]);
            }
            match y {
                1 => Some("a").into(),
                _ => "b".into(),
            }
        });
        let s = scan(&mut body, &mut |lit| {
            let v = lit.value();
            Some(parse_quote!(hinted(#v)))
        });
        assert_eq!(s.targets.len(), 3);
        let text = show(&body);
        assert!(text.contains("vec ! [hinted (\"a\") , :: core :: convert :: Into :: < :: agent :: __private :: StateName > :: into (other)]"), "{text}");
        assert!(text.contains("Some (\"a\") . into ()"), "{text}");
        assert!(text.contains("hinted (\"b\") . into ()"), "{text}");
    }
}
