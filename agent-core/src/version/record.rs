//! [`GraphRecord`]: a graph signature as checkpoints carry it.
//!
//! Invariants:
//! - A record is immutable and shared: cloning it copies a pointer, so every checkpoint of
//!   a program can carry its program's record at no cost.
//! - Its JSON text and its hash are computed once, when it is made (or read): writing a
//!   checkpoint copies the text, never encodes the signature again. The text is what the
//!   signature serialises to, or what was read (whitespace aside, the same signature).
//! - Two records are equal when their signatures are.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{GraphHash, GraphSignature};

/// The graph signature a [`Checkpoint`](crate::Checkpoint) records: the signature, its
/// hash and its JSON text, made once and shared.
///
/// ```
/// use agent_core::{GraphRecord, GraphSignature};
/// let record = GraphRecord::new(GraphSignature::new("start"));
/// assert_eq!(record.signature().start, "start");
/// assert_eq!(record.hash(), GraphSignature::new("start").hash());
/// let copy = record.clone(); // a pointer
/// assert_eq!(copy, record);
/// ```
#[derive(Clone)]
pub struct GraphRecord(Arc<Inner>);

struct Inner {
    signature: GraphSignature,
    hash: GraphHash,
    json: Box<RawValue>,
}

impl GraphRecord {
    /// The record of `signature`.
    pub fn new(signature: GraphSignature) -> GraphRecord {
        // A signature is maps of strings, numbers and booleans: it always serialises.
        let json = serde_json::value::to_raw_value(&signature).unwrap_or_else(|_| RawValue::NULL.to_owned());
        GraphRecord::with_json(signature, json)
    }

    fn with_json(signature: GraphSignature, json: Box<RawValue>) -> GraphRecord {
        let hash = signature.hash();
        GraphRecord(Arc::new(Inner { signature, hash, json }))
    }

    /// The signature.
    pub fn signature(&self) -> &GraphSignature {
        &self.0.signature
    }

    /// Its hash ([`GraphSignature::hash`]), computed once.
    pub fn hash(&self) -> GraphHash {
        self.0.hash
    }

    /// The length of its JSON text, in bytes.
    pub(crate) fn json_len(&self) -> usize {
        self.0.json.get().len()
    }
}

impl From<GraphSignature> for GraphRecord {
    fn from(signature: GraphSignature) -> Self {
        GraphRecord::new(signature)
    }
}

impl PartialEq for GraphRecord {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.signature == other.0.signature
    }
}

impl Eq for GraphRecord {}

impl fmt::Debug for GraphRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GraphRecord").field("hash", &self.0.hash).field("signature", &self.0.signature).finish()
    }
}

impl Serialize for GraphRecord {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.json.serialize(s)
    }
}

impl<'de> Deserialize<'de> for GraphRecord {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<GraphRecord, D::Error> {
        let json = Box::<RawValue>::deserialize(d)?;
        let signature: GraphSignature = serde_json::from_str(json.get()).map_err(serde::de::Error::custom)?;
        Ok(GraphRecord::with_json(signature, json))
    }
}
