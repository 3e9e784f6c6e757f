//! Reducers: how writes to one context key from parallel branches combine.
//!
//! A key with a reducer (declared on the agent: `Agent::reduce(key, Reduce::Append)`) is
//! not overwritten by `set_state`: each write is a *contribution* the reducer folds into the
//! value. Inside a fan-out's branch the contributions are held by the branch, and applied
//! when the branches meet (their group closes), in branch order (the order of the fan-out's
//! targets, or of a map's items), whichever branch finished first; outside any fan-out a
//! contribution is applied at once.
//!
//! Invariants:
//! - [`Reduce::apply`] is a pure function of the current value (absent: `None`) and the
//!   contribution, both JSON, so a contribution held by a branch survives a checkpoint as it
//!   is and folds the same way after a restore.
//! - It never panics: a contribution of the wrong shape (`Extend` with a non-list, `Merge`
//!   with a non-object, a custom reducer whose type does not decode) is an error naming what
//!   it found, and the value is left as it was.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

type Custom = Arc<dyn Fn(Option<Value>, Value) -> Result<Value, String> + Send + Sync>;

/// How contributions to one context key combine (see the module docs).
///
/// ```
/// use agent_core::Reduce;
/// use serde_json::json;
///
/// assert_eq!(Reduce::Append.apply(None, json!("a")).unwrap(), json!(["a"]));
/// assert_eq!(Reduce::Extend.apply(Some(json!([1])), json!([2, 3])).unwrap(), json!([1, 2, 3]));
/// assert_eq!(Reduce::Merge.apply(Some(json!({"a": 1})), json!({"b": 2})).unwrap(), json!({"a": 1, "b": 2}));
/// assert_eq!(Reduce::Max.apply(Some(json!(3)), json!(2)).unwrap(), json!(3));
/// let sum = Reduce::with(|a: u64, b: u64| a + b);
/// assert_eq!(sum.apply(Some(json!(2)), json!(5)).unwrap(), json!(7));
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub enum Reduce {
    /// The value is a list; each contribution is appended to it as one element.
    Append,
    /// The value is a list; each contribution is a list whose elements are appended.
    Extend,
    /// The value is an object; each contribution is an object whose entries replace those of
    /// the same key.
    Merge,
    /// The greater of the value and the contribution (numbers by value, strings in order).
    Max,
    /// The lesser of the value and the contribution.
    Min,
    /// A function of the user's (see [`Reduce::with`]).
    Custom(Custom),
}

impl Reduce {
    /// A reducer of the user's over a type `T`: `f(value, contribution)`; the first
    /// contribution to an absent key becomes its value.
    pub fn with<T, F>(f: F) -> Reduce
    where
        T: Serialize + DeserializeOwned,
        F: Fn(T, T) -> T + Send + Sync + 'static,
    {
        Reduce::Custom(Arc::new(move |current, update| {
            let decode =
                |v: Value| T::deserialize(v).map_err(|e| format!("not a `{}`: {e}", std::any::type_name::<T>()));
            let update = decode(update)?;
            let folded = match current {
                None => update,
                Some(current) => f(decode(current)?, update),
            };
            serde_json::to_value(folded).map_err(|e| e.to_string())
        }))
    }

    /// Fold `update` into `current` (absent: `None`); an error names what did not fit.
    pub fn apply(&self, current: Option<Value>, update: Value) -> Result<Value, String> {
        match self {
            Reduce::Append => {
                let mut list = list(current)?;
                list.push(update);
                Ok(Value::Array(list))
            }
            Reduce::Extend => {
                let mut list = list(current)?;
                match update {
                    Value::Array(more) => list.extend(more),
                    other => return Err(format!("`extend` takes a list, not {}", kind(&other))),
                }
                Ok(Value::Array(list))
            }
            Reduce::Merge => {
                let mut map = match current {
                    None | Some(Value::Null) => serde_json::Map::new(),
                    Some(Value::Object(map)) => map,
                    Some(other) => return Err(format!("`merge` folds into an object, not {}", kind(&other))),
                };
                match update {
                    Value::Object(more) => map.extend(more),
                    other => return Err(format!("`merge` takes an object, not {}", kind(&other))),
                }
                Ok(Value::Object(map))
            }
            Reduce::Max | Reduce::Min => {
                let Some(current) = current.filter(|v| !v.is_null()) else { return Ok(update) };
                let order = compare(&current, &update)?;
                let keep_current = match self {
                    Reduce::Max => order != Ordering::Less,
                    _ => order != Ordering::Greater,
                };
                Ok(if keep_current { current } else { update })
            }
            Reduce::Custom(f) => f(current, update),
        }
    }

    /// The reducer's name, as `Debug` and error messages show it.
    pub fn name(&self) -> &'static str {
        match self {
            Reduce::Append => "append",
            Reduce::Extend => "extend",
            Reduce::Merge => "merge",
            Reduce::Max => "max",
            Reduce::Min => "min",
            Reduce::Custom(_) => "custom",
        }
    }
}

impl fmt::Debug for Reduce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn list(current: Option<Value>) -> Result<Vec<Value>, String> {
    match current {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(list)) => Ok(list),
        Some(other) => Err(format!("folds into a list, not {}", kind(&other))),
    }
}

fn compare(a: &Value, b: &Value) -> Result<Ordering, String> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => Ok(x.cmp(&y)),
            _ => {
                let (x, y) = (x.as_f64().unwrap_or(f64::NAN), y.as_f64().unwrap_or(f64::NAN));
                x.partial_cmp(&y).ok_or_else(|| "numbers that do not compare".to_owned())
            }
        },
        (Value::String(x), Value::String(y)) => Ok(x.cmp(y)),
        _ => Err(format!("`max` and `min` compare two numbers or two strings, not {} and {}", kind(a), kind(b))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_reducer_folds_in_order_and_refuses_the_wrong_shape() {
        let fold = |r: &Reduce, xs: Vec<Value>| xs.into_iter().try_fold(None, |acc, x| r.apply(acc, x).map(Some));
        assert_eq!(fold(&Reduce::Append, vec![json!(1), json!([2])]).unwrap(), Some(json!([1, [2]])));
        assert_eq!(fold(&Reduce::Extend, vec![json!([1]), json!([2, 3])]).unwrap(), Some(json!([1, 2, 3])));
        assert!(Reduce::Extend.apply(None, json!(1)).unwrap_err().contains("a number"));
        assert!(Reduce::Append.apply(Some(json!({})), json!(1)).unwrap_err().contains("an object"));
        assert_eq!(Reduce::Merge.apply(Some(json!({"a": 1})), json!({"a": 2})).unwrap(), json!({"a": 2}));
        assert!(Reduce::Merge.apply(None, json!([1])).is_err());
        assert_eq!(fold(&Reduce::Max, vec![json!(2), json!(7.5), json!(3)]).unwrap(), Some(json!(7.5)));
        assert_eq!(fold(&Reduce::Min, vec![json!("b"), json!("a")]).unwrap(), Some(json!("a")));
        assert!(Reduce::Max.apply(Some(json!(1)), json!("a")).is_err());
        let longest = Reduce::with(|a: String, b: String| if b.len() > a.len() { b } else { a });
        assert_eq!(fold(&longest, vec![json!("ab"), json!("abc"), json!("x")]).unwrap(), Some(json!("abc")));
        assert!(longest.apply(Some(json!("a")), json!(3)).unwrap_err().contains("String"));
        assert_eq!(format!("{:?}", Reduce::Merge), "merge");
    }
}
