//! Typed context values: structs stored as they are, serialised only for checkpoints.
//!
//! Invariants:
//! - A typed value lives in the context as a `Box<dyn TypedContextData>`; reading it back
//!   is a downcast and a clone, never a serde round trip.
//! - Serialisation goes through typetag (tag = the type's name), so a checkpoint can bring
//!   the value back as the same Rust type. `#[derive(TypedContextData)]` registers it.

use std::any::Any;
use std::fmt::Debug;

/// A value stored in the context under its own Rust type.
///
/// Derive it; do not implement it by hand:
///
/// ```ignore
/// #[derive(Clone, Debug, Serialize, Deserialize, TypedContextData)]
/// struct UserProfile { name: String, age: u32 }
/// ```
///
/// The derive needs `Clone`, `Debug`, `Serialize` and `Deserialize`, and a type that is not
/// generic (typetag registers one concrete type under one name).
#[typetag::serde(tag = "type", content = "value")]
pub trait TypedContextData: Any + Send + Sync + Debug {
    /// A boxed clone.
    #[doc(hidden)]
    fn __clone_box(&self) -> Box<dyn TypedContextData>;
    /// Upcast for downcasting.
    #[doc(hidden)]
    fn __as_any(&self) -> &dyn Any;
    /// Upcast for downcasting in place.
    #[doc(hidden)]
    fn __as_any_mut(&mut self) -> &mut dyn Any;
    /// The value as plain JSON (without the type tag), for `get_state` on a typed key.
    #[doc(hidden)]
    fn __to_json(&self) -> Result<serde_json::Value, serde_json::Error>;
    /// The Rust type's name, for error messages.
    #[doc(hidden)]
    fn __type_name(&self) -> &'static str;
}

impl Clone for Box<dyn TypedContextData> {
    fn clone(&self) -> Self {
        self.__clone_box()
    }
}
