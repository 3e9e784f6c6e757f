//! The Context section of API.md, at the data layer.

use agent_core::{Context, ContextError, TypedContextData};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct UserProfile {
    name: String,
    age: u32,
    scores: Vec<f64>,
}

// What `#[derive(TypedContextData)]` generates, written out (this crate cannot use the macro).
#[typetag::serde]
impl TypedContextData for UserProfile {
    fn __clone_box(&self) -> Box<dyn TypedContextData> {
        Box::new(self.clone())
    }
    fn __as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn __as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
    fn __to_json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::to_value(self)
    }
    fn __type_name(&self) -> &'static str {
        std::any::type_name::<Self>()
    }
}

fn alice() -> UserProfile {
    UserProfile { name: "Alice".into(), age: 28, scores: vec![95.0] }
}

#[test]
fn a_str_reads_back_as_a_string() {
    let ctx = Context::new();
    ctx.set_state("greeting", "Hello, World!");
    assert_eq!(ctx.get_state::<String>("greeting").as_deref(), Some("Hello, World!"));
}

#[test]
fn missing_and_mismatch_name_the_key_and_both_types() {
    let ctx = Context::new();
    ctx.set_state("scores", vec![95, 87, 92]);
    assert_eq!(ctx.try_get_state::<u8>("nope"), Err(ContextError::Missing { key: "nope".into() }));
    let err = ctx.try_get_state::<String>("scores").unwrap_err();
    match &err {
        ContextError::TypeMismatch { key, expected, found, .. } => {
            assert_eq!(key, "scores");
            assert_eq!(*expected, "alloc::string::String");
            assert!(found.contains("Vec<i32>"), "{found}");
        }
        other => panic!("expected TypeMismatch, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("scores") && msg.contains("String") && msg.contains("Vec<i32>"), "{msg}");
    assert_eq!(ctx.get_state::<String>("scores"), None);
    assert_eq!(ctx.get_state_or("scores", String::from("d")), "d");
}

#[test]
fn a_failed_update_leaves_the_value_unchanged() {
    let ctx = Context::new();
    ctx.set_state("n", 5);
    assert!(matches!(ctx.update_state("n", |s: &mut String| s.push('x')), Err(ContextError::TypeMismatch { .. })));
    assert!(matches!(ctx.update_state("absent", |n: &mut i32| *n += 1), Err(ContextError::Missing { .. })));
    assert_eq!(ctx.get_state::<i32>("n"), Some(5));
    assert!(!ctx.has_state("absent"));
}

#[test]
fn updates_after_the_first_keep_working_and_reads_see_them() {
    let ctx = Context::new();
    ctx.set_state("v", vec![1u32]);
    for i in 2..=5 {
        ctx.update_state("v", |v: &mut Vec<u32>| v.push(i)).unwrap();
    }
    assert_eq!(ctx.get_state::<Vec<u32>>("v"), Some(vec![1, 2, 3, 4, 5]));
    // Read as another compatible type, and update as another type.
    assert_eq!(ctx.get_state::<Vec<u64>>("v"), Some(vec![1, 2, 3, 4, 5]));
    ctx.update_state("v", |v: &mut Vec<u64>| v.push(6)).unwrap();
    assert_eq!(ctx.get_state::<Vec<u32>>("v").unwrap().len(), 6);
    // set_state replaces a natively kept value.
    ctx.set_state("v", "text");
    assert_eq!(ctx.get_state::<String>("v").as_deref(), Some("text"));
}

#[test]
fn concurrent_updates_lose_nothing() {
    let ctx = Context::new();
    ctx.set_state("list", Vec::<u32>::new());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let ctx = ctx.clone();
            std::thread::spawn(move || {
                for i in 0..1000 {
                    ctx.update_state("list", |v: &mut Vec<u32>| v.push(t * 1000 + i)).unwrap();
                    ctx.update_state_or_default("count", |c: &mut u64| *c += 1).unwrap();
                    // Writers of other keys do not block this key's readers.
                    ctx.set_state(&format!("t{t}"), i);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut list: Vec<u32> = ctx.get_state("list").unwrap();
    list.sort_unstable();
    assert_eq!(list, (0..8000).collect::<Vec<_>>());
    assert_eq!(ctx.get_state::<u64>("count"), Some(8000));
}

#[test]
fn an_update_closure_may_touch_other_keys() {
    let ctx = Context::new();
    ctx.set_state("a", 1);
    let inner = ctx.clone();
    ctx.update_state("a", |a: &mut i32| {
        inner.set_state("b", *a + 1);
        *a += 10;
    })
    .unwrap();
    assert_eq!(ctx.get_state::<i32>("a"), Some(11));
    assert_eq!(ctx.get_state::<i32>("b"), Some(2));
}

#[test]
fn typed_values_are_stored_as_themselves_and_updated_in_place() {
    let ctx = Context::new();
    ctx.set_typed("user", alice());
    ctx.update_typed("user", |u: &mut UserProfile| u.age = 29).unwrap();
    let user: Option<UserProfile> = ctx.get_typed::<UserProfile>("user");
    assert_eq!(user.unwrap().age, 29);
    // Plain reads of a typed value see its fields.
    assert_eq!(ctx.get_state::<serde_json::Value>("user").unwrap()["name"], "Alice");
    // The wrong type is a mismatch naming both types.
    let err = ctx.try_get_typed::<UserProfile>("missing").unwrap_err();
    assert_eq!(err, ContextError::Missing { key: "missing".into() });
    ctx.set_state("plain", 3);
    let err = ctx.try_get_typed::<UserProfile>("plain").unwrap_err();
    assert!(err.to_string().contains("UserProfile"), "{err}");
    assert!(matches!(
        ctx.update_typed("plain", |u: &mut UserProfile| u.age = 1),
        Err(ContextError::TypeMismatch { .. })
    ));
}

#[test]
fn the_context_round_trips_through_json_with_typed_values() {
    let ctx = Context::new();
    ctx.set_typed("user", alice());
    ctx.set_state("n", 7);
    ctx.set_state("list", vec![1]);
    ctx.update_state("list", |v: &mut Vec<i32>| v.push(2)).unwrap();
    let json = ctx.to_json().unwrap();
    let back = Context::from_json(&json).unwrap();
    assert_eq!(back.get_typed::<UserProfile>("user"), Some(alice()));
    assert_eq!(back.get_state::<i32>("n"), Some(7));
    assert_eq!(back.get_state::<Vec<i32>>("list"), Some(vec![1, 2]));
    assert!(Context::from_json(&serde_json::json!([1, 2])).is_err());
    assert!(Context::from_json(&serde_json::json!({"k": {"typed": {"type": "NoSuchType", "value": 1}}})).is_err());
    assert!(Context::from_json(&serde_json::json!({"k": {"other": 1}})).is_err());
}

#[test]
fn deep_clone_shares_nothing() {
    let ctx = Context::new();
    ctx.set_state("n", 1);
    let copy = ctx.deep_clone();
    ctx.set_state("n", 2);
    assert_eq!(copy.get_state::<i32>("n"), Some(1));
}

#[test]
fn remove_and_has() {
    let ctx = Context::new();
    assert!(!ctx.remove_state("x"));
    ctx.set_state("x", ());
    assert!(ctx.has_state("x"));
    assert_eq!(ctx.len(), 1);
    assert!(ctx.remove_state("x"));
    assert!(ctx.is_empty());
}

/// A branch's handle pointed at the next item in place: only when nothing else holds its
/// scope, and then nothing of the branch before it (its item, its held result) is left.
#[test]
fn a_handle_is_rescoped_in_place_only_when_nobody_else_holds_it() {
    use agent_core::__private::context as hooks;
    let run = agent_core::Context::new();
    let mut handle = hooks::scoped(&run, 0, Some(serde_json::json!("first")));
    handle.set_result("from the first").unwrap();
    assert!(hooks::rescope(&mut handle, 1, Some(serde_json::json!("second"))).is_ok());
    assert_eq!(handle.branch_index(), Some(1));
    assert_eq!(handle.item::<String>().unwrap(), "second");
    assert!(hooks::take_pending(&handle).result.is_none(), "the first branch's result was dropped");

    // A clone outlives its branch: the scope is not reused, the item comes back.
    let kept = handle.clone();
    let back = hooks::rescope(&mut handle, 2, Some(serde_json::json!("third")));
    assert_eq!(back, Err(Some(serde_json::json!("third"))));
    assert_eq!(kept.item::<String>().unwrap(), "second", "the clone still sees its own item");
    assert!(hooks::rescope(&mut run.clone(), 3, None).is_err(), "the run's own handle has no scope");
}
