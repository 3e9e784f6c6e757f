//! Collecting errors, and suggesting close names.
//!
//! Invariants:
//! - Nothing stops at the first error: every phase pushes into an [`Errors`] and goes on,
//!   so one compile shows every mistake of a module, each at its own span.
//! - [`did_you_mean`] suggests only a name close enough to be a typo (see its docs), and is
//!   deterministic: ties go to the candidate listed first.

use std::fmt::Display;

use proc_macro2::{Span, TokenStream};

/// Errors gathered over a whole expansion.
#[derive(Default)]
pub struct Errors {
    all: Option<syn::Error>,
}

impl Errors {
    /// No errors yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add one error.
    pub fn push(&mut self, error: syn::Error) {
        match &mut self.all {
            Some(all) => all.combine(error),
            None => self.all = Some(error),
        }
    }

    /// Add an error with `message` at `span`.
    pub fn at(&mut self, span: Span, message: impl Display) {
        self.push(syn::Error::new(span, message));
    }

    /// Add the error of `result`, if any, and pass its value on.
    pub fn ok<T>(&mut self, result: syn::Result<T>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.push(e);
                None
            }
        }
    }

    /// Whether any error was added.
    pub fn is_empty(&self) -> bool {
        self.all.is_none()
    }

    /// `Ok` when empty, else every error as one.
    #[cfg(test)]
    pub fn finish(self) -> Result<(), syn::Error> {
        match self.all {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    /// Every error as `compile_error!` invocations, each at its span (empty when none).
    pub fn to_compile_errors(&self) -> TokenStream {
        self.all.as_ref().map(syn::Error::to_compile_error).unwrap_or_default()
    }
}

/// The candidate closest to `word`, if it is close enough to be a typo of it.
///
/// Close enough: an optimal-string-alignment distance (edits and swaps) of at most a third
/// of the word's length (at least 1), or a Jaro-Winkler similarity of at least 0.9.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    let mut best: Option<(&str, usize, f64)> = None;
    for candidate in candidates {
        if candidate == word {
            continue;
        }
        let distance = strsim::osa_distance(word, candidate);
        let similarity = strsim::jaro_winkler(word, candidate);
        if distance > limit && similarity < 0.9 {
            continue;
        }
        let better = match best {
            None => true,
            Some((_, d, s)) => distance < d || (distance == d && similarity > s),
        };
        if better {
            best = Some((candidate, distance, similarity));
        }
    }
    best.map(|(c, _, _)| c)
}

/// `", did you mean `x`?"` or nothing.
pub fn suggestion_suffix(suggestion: Option<&str>) -> String {
    suggestion.map(|s| format!("; did you mean `{s}`?")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_are_suggested() {
        let names = ["process_data", "format_output"];
        assert_eq!(did_you_mean("format_outptu", names), Some("format_output"));
        assert_eq!(did_you_mean("proces_data", names), Some("process_data"));
        assert_eq!(did_you_mean("x", ["y"]), Some("y"));
    }

    #[test]
    fn unrelated_names_are_not() {
        assert_eq!(did_you_mean("teardown", ["process_data", "format_output"]), None);
        assert_eq!(did_you_mean("abc", Vec::<&str>::new()), None);
    }

    #[test]
    fn errors_combine_and_finish() {
        let mut errors = Errors::new();
        assert!(errors.is_empty());
        errors.at(Span::call_site(), "one");
        errors.at(Span::call_site(), "two");
        let all = errors.finish().unwrap_err();
        let messages: Vec<String> = all.into_iter().map(|e| e.to_string()).collect();
        assert_eq!(messages, ["one", "two"]);
    }
}
