//! Text from outside (arguments, the store, the workflow: run ids, state names, prompts,
//! answers, error messages) as the terminal is given it, by the command line and by the
//! terminal's prompts for human input.
//!
//! Invariants:
//! - [`shown`] is the one way such text reaches the terminal: a control character (an
//!   escape sequence, a carriage return, a newline) or a bidirectional override can neither
//!   move the cursor, recolour, rewrite a line nor reorder it. Each is written as an escape
//!   (`\x1b`, `\r`, `\n`, `\u{202e}`); every other character, all of Unicode included, is
//!   written as is, and a backslash stays a single backslash.
//! - Text with nothing to escape is borrowed, not copied.

use std::borrow::Cow;
use std::fmt::Write as _;

/// `text` safe to print: control characters and bidirectional controls escaped, so
/// `"ok \u{1b}[31m\r名前"` is printed as `ok \x1b[31m\r名前`.
pub(crate) fn shown(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) && u32::from(c) < 0x100 => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::shown;
    use std::borrow::Cow;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(shown("ok \u{1b}[31mred\r\nx\ty\u{7f}\u{9b}"), "ok \\x1b[31mred\\r\\nx\\ty\\x7f\\x9b");
        assert_eq!(shown("\u{202e}abc\u{2066}"), "\\u{202e}abc\\u{2066}");
        assert!(matches!(shown("名前 🚀 back\\slash \"q\""), Cow::Borrowed("名前 🚀 back\\slash \"q\"")));
    }
}
