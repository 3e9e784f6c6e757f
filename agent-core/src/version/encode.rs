//! The canonical encoding of a [`GraphSignature`], and its hash.
//!
//! Invariants:
//! - The encoding begins with [`PREFIX`], which names its version. Any change to what is
//!   written or how changes the prefix (`/1` → `/2`): hashes of the old encoding then never
//!   equal hashes of the new one by accident. The golden test in `tests.rs` fails on any
//!   change, so none is made by accident.
//! - It is injective: every string is written with its length, every collection with its
//!   count, every optional value with a tag, integers little-endian at a fixed width; so
//!   two signatures with one encoding are equal.
//! - It is canonical: collections are written in their ordered sets' order (names by
//!   bytes; dependencies by state, then type and lifecycle by name), and enums by name,
//!   never by declaration order or memory layout.
//! - It is streamed into the hasher; nothing is allocated.

use sha2::{Digest, Sha256};

use super::{kind_name, lifecycle_name, GraphHash, GraphSignature};

/// What every encoding begins with: the format and its version.
pub(super) const PREFIX: &[u8] = b"agent-graph-signature/1\n";

/// SHA-256 of the canonical encoding of `sig`.
pub(super) fn hash(sig: &GraphSignature) -> GraphHash {
    let mut hasher = Sha256::new();
    encode(sig, &mut |bytes| hasher.update(bytes));
    GraphHash(hasher.finalize().into())
}

/// Write the canonical encoding of `sig` into `out`, piece by piece.
pub(super) fn encode(sig: &GraphSignature, out: &mut dyn FnMut(&[u8])) {
    out(PREFIX);
    text(out, &sig.start);
    count(out, sig.states.len());
    for (name, s) in &sig.states {
        text(out, name);
        count(out, s.edges.len());
        for edge in &s.edges {
            text(out, edge);
        }
        flag(out, s.computed_targets);
        match &s.on_error {
            None => out(&[0]),
            Some(target) => {
                out(&[1]);
                text(out, target);
            }
        }
        flag(out, s.join);
        out(&s.max_retries.to_le_bytes());
        count(out, s.dependencies.len());
        for d in &s.dependencies {
            text(out, &d.state);
            text(out, kind_name(d.kind));
            text(out, lifecycle_name(d.lifecycle));
        }
    }
}

fn count(out: &mut dyn FnMut(&[u8]), n: usize) {
    out(&(n as u64).to_le_bytes());
}

fn text(out: &mut dyn FnMut(&[u8]), s: &str) {
    count(out, s.len());
    out(s.as_bytes());
}

fn flag(out: &mut dyn FnMut(&[u8]), b: bool) {
    out(&[u8::from(b)]);
}
