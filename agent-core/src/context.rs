//! The shared context every state of a run reads and writes.
//!
//! Invariants:
//! - One `Context` per run, shared by every branch of every fan-out: a `Context` is an `Arc`
//!   handle, and cloning it never copies data. A branch of a map (or of any fan-out of an
//!   agent with reducers) gets a handle of its own on the same data, with a [`Scope`]: its
//!   ordinal, the map's items, and what its running state contributed.
//! - A key with a reducer (`runtime::set_reducers`) is not replaced by `set_state`: the
//!   write is a contribution. Outside a branch it folds in at once; inside one it is held
//!   in the scope until the state completes, when the runtime takes it
//!   (`runtime::take_pending`) and folds it, with its siblings', in branch order where the
//!   branches meet. A new attempt (`runtime::begin_attempt`) drops what an earlier one held.
//! - Each key has its own lock, so `update_state` / `update_typed` are atomic per key and
//!   concurrent writers to different keys never wait for each other. The map lock is held
//!   only to find or insert a key, never while user code runs, so a closure given to
//!   `update_*` may read or write *other* keys (re-entering the same key deadlocks, as with
//!   any mutex).
//! - Plain values (`set_state`) are stored as JSON, so a value set as `&str` reads back as
//!   `String`. Once `update_state::<T>` has changed a key, it keeps the `T` itself and later
//!   updates with the same `T` change it in place (appending to a list is O(1), not O(len));
//!   reads encode it. Typed values (`set_typed`) are stored as the Rust value itself, with no
//!   serialisation on the hot path.
//! - A failed read never changes the context. A failed write (a value serde cannot encode)
//!   stores nothing and is remembered, so the runtime fails the state that made it instead
//!   of losing the write silently.
//! - Change tracking (for durable runs, which write what changed since their last commit
//!   instead of the whole context): off until the runtime turns it on
//!   (`runtime::track_changes`); then every write (`set_*`, `update_*`, `remove_state`) adds
//!   its key to a set of changed keys *after* the value is stored, so a reader that takes
//!   the set (`runtime::take_changes`) and then reads the values sees each change either in
//!   what it read or in the next set it takes. Off, a write pays one relaxed atomic load.

use std::any::{type_name, Any};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use rustc_hash::FxHashSet;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock, Weak};

use rustc_hash::FxHashMap;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::ContextError;
use crate::reduce::Reduce;
use crate::typed::TypedContextData;

/// One stored value.
pub(crate) enum Slot {
    /// A plain value, kept as JSON, with the name of the type it was set as.
    Json { value: serde_json::Value, set_as: &'static str },
    /// A plain value kept as the Rust value `update_state` last produced, so repeated
    /// updates change it in place instead of decoding and encoding it each time.
    Native { value: Box<dyn Any + Send + Sync>, encode: Encode, set_as: &'static str },
    /// A typed value, kept as itself.
    Typed(Box<dyn TypedContextData>),
}

type Encode = fn(&(dyn Any + Send + Sync)) -> Result<serde_json::Value, serde_json::Error>;

fn encode<T: Serialize + 'static>(v: &(dyn Any + Send + Sync)) -> Result<serde_json::Value, serde_json::Error> {
    match v.downcast_ref::<T>() {
        Some(v) => serde_json::to_value(v),
        None => Err(serde::ser::Error::custom("internal: a native slot holds another type than its encoder")),
    }
}

impl Clone for Slot {
    fn clone(&self) -> Self {
        match self {
            Slot::Json { value, set_as } => Slot::Json { value: value.clone(), set_as },
            // A native value is cloned through its encoding; a value that cannot be encoded
            // (never the case for one produced by a successful update) becomes null.
            Slot::Native { value, encode, set_as } => {
                Slot::Json { value: encode(&**value).unwrap_or(serde_json::Value::Null), set_as }
            }
            Slot::Typed(t) => Slot::Typed(t.clone()),
        }
    }
}

impl Slot {
    fn describe(&self) -> String {
        match self {
            Slot::Json { set_as, .. } | Slot::Native { set_as, .. } => (*set_as).to_owned(),
            Slot::Typed(v) => v.__type_name().to_owned(),
        }
    }

    /// The value as plain JSON (no type tag).
    fn json(&self) -> Result<std::borrow::Cow<'_, serde_json::Value>, serde_json::Error> {
        match self {
            Slot::Json { value, .. } => Ok(std::borrow::Cow::Borrowed(value)),
            Slot::Native { value, encode, .. } => encode(&**value).map(std::borrow::Cow::Owned),
            Slot::Typed(v) => v.__to_json().map(std::borrow::Cow::Owned),
        }
    }
}

type SlotRef = Arc<Mutex<Slot>>;

#[derive(Default)]
struct Inner {
    values: RwLock<FxHashMap<Box<str>, SlotRef>>,
    write_error: Mutex<Option<ContextError>>,
    /// Set with `write_error`, read without a lock after every state.
    has_write_error: AtomicBool,
    /// The failure an `on_error` handler is handling.
    last_error: Mutex<Option<crate::StateError>>,
    /// Who answers `human_in_the_loop` (set by the runtime for each run: the run itself,
    /// held weakly, since the run holds this context).
    input: RwLock<Option<Weak<dyn crate::human::InputBroker>>>,
    /// Whether writes record their keys in `changed` (see the module docs).
    tracking: AtomicBool,
    /// Keys written since the runtime last took them, when tracking.
    changed: Mutex<FxHashSet<Box<str>>>,
    /// The keys whose writes combine through a reducer (set once by the runtime).
    reducers: OnceLock<Arc<Reducers>>,
}

/// The reducers of a run's context keys, by key.
pub type Reducers = FxHashMap<Box<str>, Reduce>;

/// What a branch of a fan-out holds for itself: its position among the fan-out's branches,
/// a map's items, and the contributions (to reducer keys) and result of the state it runs,
/// kept apart until the state completes (see `runtime::take_pending`).
pub struct Scope {
    ordinal: u32,
    /// A map branch's item (its own copy: no reference count shared by the branches).
    item: Option<serde_json::Value>,
    pending: Mutex<Pending>,
    /// Whether `pending` holds anything: set after a write to it, so that a branch that
    /// contributes nothing (most) never takes the lock.
    dirty: AtomicBool,
}

/// What a branch's running state contributed, handed to the runtime when it completes.
#[derive(Debug, Default)]
pub struct Pending {
    /// Contributions to reducer keys, in the order they were made.
    pub writes: Vec<(Box<str>, serde_json::Value)>,
    /// The map branch's result (`set_result`), if it set one.
    pub result: Option<serde_json::Value>,
}

/// The data shared by the states of one run.
///
/// ```
/// use agent_core::Context;
/// let ctx = Context::new();
/// ctx.set_state("scores", vec![95, 87, 92]);
/// let s: Option<Vec<i32>> = ctx.get_state("scores");
/// assert_eq!(s, Some(vec![95, 87, 92]));
/// ctx.update_state("scores", |v: &mut Vec<i32>| v.push(99)).unwrap();
/// assert_eq!(ctx.get_state_or::<Vec<i32>>("scores", vec![]).len(), 4);
/// assert!(ctx.remove_state("scores"));
/// assert!(!ctx.has_state("scores"));
/// ```
#[derive(Clone, Default)]
pub struct Context {
    inner: Arc<Inner>,
    /// The branch of a fan-out this handle was given to, if any (see [`Scope`]).
    scope: Option<Arc<Scope>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic inside a user closure must not make the key unreadable for the rest of the run.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Context {
    /// An empty context.
    pub fn new() -> Self {
        Self::default()
    }

    fn slot(&self, key: &str) -> Option<SlotRef> {
        let map = self.inner.values.read().unwrap_or_else(PoisonError::into_inner);
        map.get(key).cloned()
    }

    fn put(&self, key: &str, slot: Slot) {
        self.store(key, slot);
        self.changed(key);
    }

    fn store(&self, key: &str, slot: Slot) {
        if let Some(existing) = self.slot(key) {
            *lock(&existing) = slot;
            return;
        }
        let mut map = self.inner.values.write().unwrap_or_else(PoisonError::into_inner);
        match map.get(key) {
            Some(existing) => *lock(existing) = slot,
            None => {
                map.insert(key.into(), Arc::new(Mutex::new(slot)));
            }
        }
    }

    /// Record that `key` was written (after the write), when tracking changes.
    #[inline]
    fn changed(&self, key: &str) {
        if self.inner.tracking.load(Ordering::Relaxed) {
            lock(&self.inner.changed).insert(key.into());
        }
    }

    /// The slot for `key`, inserting `init()` first when the key is absent.
    fn slot_or_insert(
        &self,
        key: &str,
        init: impl FnOnce() -> Result<Slot, ContextError>,
    ) -> Result<SlotRef, ContextError> {
        if let Some(s) = self.slot(key) {
            return Ok(s);
        }
        let mut map = self.inner.values.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = map.get(key) {
            return Ok(s.clone());
        }
        let s = Arc::new(Mutex::new(init()?));
        map.insert(key.into(), s.clone());
        Ok(s)
    }

    // ----- plain values -------------------------------------------------------------------

    /// Store `value` under `key`, replacing what was there.
    ///
    /// Should serde fail to encode the value, nothing is stored and the error is kept: the
    /// runtime then fails the state that wrote it. Use [`Context::try_set_state`] to handle
    /// the error in place.
    pub fn set_state<T: Serialize>(&self, key: &str, value: T) {
        if let Err(e) = self.try_set_state(key, value) {
            *lock(&self.inner.write_error) = Some(e);
            self.inner.has_write_error.store(true, Ordering::Release);
        }
    }

    /// Store `value` under `key`, or say why it cannot be encoded.
    pub fn try_set_state<T: Serialize>(&self, key: &str, value: T) -> Result<(), ContextError> {
        let value = serde_json::to_value(&value)
            .map_err(|source| ContextError::Serialize { key: key.to_owned(), message: source.to_string() })?;
        if let Some(reduce) = self.reducer(key) {
            return self.contribute(key, reduce, value);
        }
        self.put(key, Slot::Json { value, set_as: type_name::<T>() });
        Ok(())
    }

    /// The reducer of `key`, if it has one.
    #[inline]
    fn reducer(&self, key: &str) -> Option<&Reduce> {
        self.inner.reducers.get().and_then(|r| r.get(key))
    }

    /// A write to a reducer key: held by the branch until its state completes, or folded in
    /// at once outside any fan-out.
    fn contribute(&self, key: &str, reduce: &Reduce, value: serde_json::Value) -> Result<(), ContextError> {
        match &self.scope {
            Some(scope) => {
                lock(&scope.pending).writes.push((key.into(), value));
                scope.dirty.store(true, Ordering::Release);
                Ok(())
            }
            None => self.fold(key, reduce, value),
        }
    }

    /// Fold `value` into `key` through `reduce`, now.
    fn fold(&self, key: &str, reduce: &Reduce, value: serde_json::Value) -> Result<(), ContextError> {
        let fail = |message: String| ContextError::Reduce { key: key.to_owned(), reducer: reduce.name(), message };
        let slot =
            self.slot_or_insert(key, || Ok(Slot::Json { value: serde_json::Value::Null, set_as: "a reduced value" }))?;
        let mut guard = lock(&slot);
        let current = match guard.json() {
            Ok(v) if v.is_null() => None,
            Ok(v) => Some(v.into_owned()),
            Err(e) => return Err(fail(e.to_string())),
        };
        let value = reduce.apply(current, value).map_err(fail)?;
        *guard = Slot::Json { value, set_as: "a reduced value" };
        drop(guard);
        self.changed(key);
        Ok(())
    }

    // ----- the branches of a fan-out ------------------------------------------------------

    /// This branch's item, in a branch of [`StateResult::map`](crate::StateResult::map):
    /// every state of the branch reads it, until the branch meets the others.
    ///
    /// Outside a map's branch it is [`ContextError::NoItem`]; an item that does not decode
    /// as `T` is [`ContextError::TypeMismatch`].
    pub fn item<T: DeserializeOwned>(&self) -> Result<T, ContextError> {
        let Some(item) = self.scope.as_ref().and_then(|s| s.item.as_ref()) else {
            return Err(ContextError::NoItem);
        };
        T::deserialize(item).map_err(|e| ContextError::mismatch::<T>("item", "the map's item".into(), e.to_string()))
    }

    /// Which branch of its fan-out this is: the index of its target in
    /// [`StateResult::parallel`](crate::StateResult::parallel)'s list, or of its item in a
    /// map; `None` outside a fan-out (and in a fan-out of an agent without reducers or maps,
    /// which keeps no identity per branch).
    pub fn branch_index(&self) -> Option<u32> {
        self.scope.as_ref().map(|s| s.ordinal)
    }

    /// This map branch's result: the join reads every branch's, in item order, with
    /// [`Context::results`] (or from the key the map named, through that key's reducer).
    /// The last one set by the branch's completed states counts.
    ///
    /// Outside a map's branch it is [`ContextError::NoItem`].
    pub fn set_result<T: Serialize>(&self, value: T) -> Result<(), ContextError> {
        let Some(scope) = self.scope.as_ref().filter(|s| s.item.is_some()) else {
            return Err(ContextError::NoItem);
        };
        let value = serde_json::to_value(&value)
            .map_err(|e| ContextError::Serialize { key: crate::RESULTS_KEY.to_owned(), message: e.to_string() })?;
        lock(&scope.pending).result = Some(value);
        scope.dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// The results of the map that joined here, in item order: the list under
    /// [`RESULTS_KEY`](crate::RESULTS_KEY), where a map without
    /// [`results_into`](crate::StateResult::results_into) puts them.
    pub fn results<T: DeserializeOwned>(&self) -> Result<Vec<T>, ContextError> {
        self.try_get_state(crate::RESULTS_KEY)
    }

    /// The value under `key` as a `T`; `None` when absent or not a `T`.
    pub fn get_state<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        self.try_get_state(key).ok()
    }

    /// The value under `key`, or `default` when absent or not a `T`.
    pub fn get_state_or<T: DeserializeOwned>(&self, key: &str, default: T) -> T {
        self.get_state(key).unwrap_or(default)
    }

    /// The value under `key` as a `T`, or why not: [`ContextError::Missing`] or
    /// [`ContextError::TypeMismatch`] naming the key and both types.
    pub fn try_get_state<T: DeserializeOwned>(&self, key: &str) -> Result<T, ContextError> {
        let slot = self.slot(key).ok_or_else(|| ContextError::missing(key))?;
        let slot = lock(&slot);
        let decoded = slot.json().and_then(|json| T::deserialize(&*json));
        decoded.map_err(|e| ContextError::mismatch::<T>(key, slot.describe(), e.to_string()))
    }

    /// Read, change and write back the value under `key`, atomically for that key.
    ///
    /// `Err(Missing)` when absent, `Err(TypeMismatch)` when not a `T`; the stored value is
    /// unchanged in both cases.
    pub fn update_state<T, F>(&self, key: &str, f: F) -> Result<(), ContextError>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        F: FnOnce(&mut T),
    {
        let slot = self.slot(key).ok_or_else(|| ContextError::missing(key))?;
        Self::update_slot(key, &slot, f)?;
        self.changed(key);
        Ok(())
    }

    /// Like [`Context::update_state`], starting from `T::default()` when the key is absent.
    ///
    /// ```
    /// # use agent_core::Context;
    /// let ctx = Context::new();
    /// ctx.update_state_or_default("seen", |v: &mut Vec<u32>| v.push(1)).unwrap();
    /// ctx.update_state_or_default("seen", |v: &mut Vec<u32>| v.push(2)).unwrap();
    /// assert_eq!(ctx.get_state::<Vec<u32>>("seen"), Some(vec![1, 2]));
    /// ```
    pub fn update_state_or_default<T, F>(&self, key: &str, f: F) -> Result<(), ContextError>
    where
        T: Serialize + DeserializeOwned + Default + Send + Sync + 'static,
        F: FnOnce(&mut T),
    {
        let slot = self.slot_or_insert(key, || {
            Ok(Slot::Native { value: Box::new(T::default()), encode: encode::<T>, set_as: type_name::<T>() })
        })?;
        Self::update_slot(key, &slot, f)?;
        self.changed(key);
        Ok(())
    }

    fn update_slot<T, F>(key: &str, slot: &SlotRef, f: F) -> Result<(), ContextError>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        F: FnOnce(&mut T),
    {
        let mut guard = lock(slot);
        match &mut *guard {
            Slot::Native { value, .. } => {
                if let Some(t) = value.downcast_mut::<T>() {
                    f(t);
                    return Ok(());
                }
            }
            Slot::Typed(v) => {
                if let Some(t) = v.__as_any_mut().downcast_mut::<T>() {
                    f(t);
                    return Ok(());
                }
            }
            Slot::Json { .. } => {}
        }
        let current = guard.json().and_then(|json| T::deserialize(&*json));
        let mut current = current.map_err(|e| ContextError::mismatch::<T>(key, guard.describe(), e.to_string()))?;
        f(&mut current);
        *guard = Slot::Native { value: Box::new(current), encode: encode::<T>, set_as: type_name::<T>() };
        Ok(())
    }

    /// Whether `key` holds a value.
    pub fn has_state(&self, key: &str) -> bool {
        self.inner.values.read().unwrap_or_else(PoisonError::into_inner).contains_key(key)
    }

    /// Remove `key`; `true` if it held a value.
    pub fn remove_state(&self, key: &str) -> bool {
        let removed = self.inner.values.write().unwrap_or_else(PoisonError::into_inner).remove(key).is_some();
        if removed {
            self.changed(key);
        }
        removed
    }

    /// Every key, in no particular order.
    pub fn keys(&self) -> Vec<String> {
        let map = self.inner.values.read().unwrap_or_else(PoisonError::into_inner);
        map.keys().map(|k| k.to_string()).collect()
    }

    /// How many keys hold a value.
    pub fn len(&self) -> usize {
        self.inner.values.read().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether no key holds a value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    // ----- typed values -------------------------------------------------------------------

    /// Store a typed value under `key`, as itself.
    pub fn set_typed<T: TypedContextData>(&self, key: &str, value: T) {
        self.put(key, Slot::Typed(Box::new(value)));
    }

    /// A clone of the typed value under `key`; `None` when absent or not a `T`.
    pub fn get_typed<T: TypedContextData + Clone>(&self, key: &str) -> Option<T> {
        self.try_get_typed(key).ok()
    }

    /// A clone of the typed value under `key`, or why not (Missing / TypeMismatch).
    pub fn try_get_typed<T: TypedContextData + Clone>(&self, key: &str) -> Result<T, ContextError> {
        let slot = self.slot(key).ok_or_else(|| ContextError::missing(key))?;
        let slot = lock(&slot);
        match &*slot {
            Slot::Typed(v) => match v.__as_any().downcast_ref::<T>() {
                Some(t) => Ok(t.clone()),
                None => Err(ContextError::mismatch::<T>(key, slot.describe(), String::new())),
            },
            Slot::Json { .. } | Slot::Native { .. } => {
                Err(ContextError::mismatch::<T>(key, slot.describe(), "a plain value, set with set_state".into()))
            }
        }
    }

    /// Change the typed value under `key` in place, atomically for that key.
    pub fn update_typed<T, F>(&self, key: &str, f: F) -> Result<(), ContextError>
    where
        T: TypedContextData,
        F: FnOnce(&mut T),
    {
        let slot = self.slot(key).ok_or_else(|| ContextError::missing(key))?;
        let mut slot = lock(&slot);
        let found = slot.describe();
        match &mut *slot {
            Slot::Typed(v) => match v.__as_any_mut().downcast_mut::<T>() {
                Some(t) => {
                    f(t);
                    drop(slot);
                    self.changed(key);
                    Ok(())
                }
                None => Err(ContextError::mismatch::<T>(key, found, String::new())),
            },
            Slot::Json { .. } | Slot::Native { .. } => {
                Err(ContextError::mismatch::<T>(key, found, "a plain value, set with set_state".into()))
            }
        }
    }

    // ----- what the runtime gives the states ----------------------------------------------

    /// What the calling state holds from its resource pool: its amounts and GPU device ids.
    /// Empty (all zero, no devices) outside a state, or in a state that asked for nothing.
    ///
    /// The context is shared by every branch of a run; the allocation is not: this reads the
    /// one of the state attempt being polled on the current task.
    ///
    /// ```
    /// use agent_core::{Context, ResourceType};
    /// let ctx = Context::new();
    /// assert!(ctx.allocation().gpu_ids().is_empty());
    /// assert_eq!(ctx.allocation().amount(ResourceType::Cpu), 0.0);
    /// ```
    pub fn allocation(&self) -> std::sync::Arc<crate::Allocation> {
        crate::allocation::current()
    }

    /// The failure that sent the run to the current `on_error` handler: which state failed,
    /// after how many attempts, and why. `None` until some state's retries are spent.
    ///
    /// ```
    /// use agent_core::Context;
    /// assert!(Context::new().last_error().is_none());
    /// ```
    pub fn last_error(&self) -> Option<crate::StateError> {
        lock(&self.inner.last_error).clone()
    }

    /// Ask a person and wait for the answer: see [`HumanInput`](crate::HumanInput) for the
    /// timeout, validator and default. While it waits the state holds none of its resources
    /// (they are taken back, waiting in the pool's queue like anyone, before this returns).
    /// Who answers is up to the run: `Agent::answer` from code (with `Agent::pending_inputs`
    /// to see what is asked), the terminal, or another process through the agent's store.
    ///
    /// # Errors
    ///
    /// [`HumanInputError::TimedOut`](crate::HumanInputError::TimedOut) when the timeout passes
    /// with no answer and no default; [`HumanInputError::NoProvider`](crate::HumanInputError::NoProvider)
    /// outside an agent's run, as here:
    ///
    /// ```
    /// use std::time::Duration;
    /// use agent_core::{Context, HumanInput, HumanInputError};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let ctx = Context::new(); // not inside a run: nobody can answer
    /// let asked = ctx.human_in_the_loop(HumanInput::new("Approve?").timeout(Duration::from_secs(300))).await;
    /// assert!(matches!(asked, Err(HumanInputError::NoProvider { .. })));
    /// # }
    /// ```
    ///
    /// Inside a state (`E: From<HumanInputError>`, such as `Box<dyn Error + Send + Sync>`):
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use agent_core::{Context, HumanInput, StateResult};
    /// async fn review(ctx: Context) -> Result<StateResult, Box<dyn std::error::Error + Send + Sync>> {
    ///     let feedback = ctx.human_in_the_loop(
    ///         HumanInput::new("Review this content (approve/reject):").timeout(Duration::from_secs(300)),
    ///     ).await?;
    ///     Ok(if feedback == "approve" { StateResult::End } else { StateResult::next("revise") })
    /// }
    /// ```
    pub async fn human_in_the_loop(&self, input: crate::HumanInput) -> Result<String, crate::HumanInputError> {
        let broker = self.inner.input.read().unwrap_or_else(PoisonError::into_inner).as_ref().and_then(Weak::upgrade);
        match broker {
            Some(broker) => broker.request(input).await,
            None => Err(crate::HumanInputError::NoProvider { prompt: input.prompt().to_owned() }),
        }
    }

    /// Sleep for `duration`, durably: the wake time is recorded when the sleep first starts,
    /// and a state run again after its process stopped (recovered, or taken over by another
    /// worker) wakes at that time, not a full `duration` after its restart. The state holds
    /// no resources while it sleeps. Under `tokio::time::pause()` it sleeps in virtual time.
    ///
    /// A state's sleeps are told apart by their order within its activation (the first
    /// sleep, the second, ...), as [`execution_key`](Context::execution_key) tells the
    /// activation apart: a state that sleeps must make its sleeps in the same order each
    /// time it runs.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use agent_core::{Context, StateResult, WaitError};
    /// async fn remind(ctx: Context) -> Result<StateResult, WaitError> {
    ///     ctx.sleep(Duration::from_secs(86_400)).await?; // a day, across restarts
    ///     Ok(StateResult::next("send_reminder"))
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// [`WaitError::NotInRun`] outside an agent's run; [`WaitError::Resources`] when the
    /// state cannot take its resources back; [`WaitError::Fenced`] when another worker took
    /// the run over meanwhile; [`WaitError::Store`] when the wake time cannot be recorded.
    pub async fn sleep(&self, duration: std::time::Duration) -> Result<(), crate::WaitError> {
        self.sleep_to(crate::wait::Wake::After(duration)).await
    }

    /// Sleep until the wall-clock time `at`, durably (as [`sleep`](Context::sleep)); a time
    /// already past returns at once.
    ///
    /// # Errors
    ///
    /// As [`sleep`](Context::sleep).
    pub async fn sleep_until(&self, at: std::time::SystemTime) -> Result<(), crate::WaitError> {
        self.sleep_to(crate::wait::Wake::At(at)).await
    }

    async fn sleep_to(&self, wake: crate::wait::Wake) -> Result<(), crate::WaitError> {
        match self.broker() {
            Some(broker) => broker.sleep(wake).await,
            None => Err(crate::WaitError::NotInRun { what: "a sleep".to_owned() }),
        }
    }

    /// Wait for the run's next signal named `name` (sent with `Agent::signal` from any
    /// process sharing the run's store, the command line's `signal`, or the console), and
    /// decode its payload as `T`. Each signal is delivered once: to the first wait on its
    /// name after it was sent, or, if it was sent before any wait, kept until one comes. A
    /// state run again after a restart gets the same signal its first run got. The state
    /// holds no resources while it waits. Bound the wait with
    /// [`SignalWait::timeout`](crate::SignalWait::timeout).
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use agent_core::{Context, StateResult, WaitError};
    /// async fn approve(ctx: Context) -> Result<StateResult, WaitError> {
    ///     let approved: bool = ctx.wait_for_signal("approval").timeout(Duration::from_secs(3600)).await?;
    ///     Ok(if approved { StateResult::next("ship") } else { StateResult::End })
    /// }
    /// ```
    pub fn wait_for_signal<T: serde::de::DeserializeOwned>(&self, name: impl Into<String>) -> crate::SignalWait<'_, T> {
        crate::SignalWait::new(self, name.into())
    }

    /// The run's broker, if this context is inside a run.
    pub(crate) fn broker(&self) -> Option<Arc<dyn crate::human::InputBroker>> {
        self.inner.input.read().unwrap_or_else(PoisonError::into_inner).as_ref().and_then(Weak::upgrade)
    }

    /// A key naming the state activation that calls it, the same every time that
    /// activation's body runs: when it is retried, and when it runs again after its worker
    /// died and another took the run over. Hand it to external systems as an idempotency key
    /// (a payment provider's, an email service's), so a body that runs twice has its effect
    /// once. The next activation of the state (a loop coming back to it) gets another key.
    ///
    /// It is `{run_id}/{state}/{n}`, `n` counting the activations of the state in the run
    /// (those that ended, plus one); two activations of one state at the same moment (the
    /// same state reached by two branches of a fan-out) share it. `None` outside a run's
    /// state, and in a `blocking` state's body (which runs on a thread of its own).
    ///
    /// ```
    /// use agent_core::{Context, StateResult};
    ///
    /// async fn charge(ctx: Context) -> StateResult {
    ///     let key = ctx.execution_key().expect("called from a state");
    ///     // payments.charge(amount, idempotency_key = key) ...
    ///     ctx.set_state("charged_with", key);
    ///     StateResult::End
    /// }
    /// assert_eq!(Context::new().execution_key(), None, "not in a run");
    /// # let _ = charge;
    /// ```
    pub fn execution_key(&self) -> Option<String> {
        let broker = self.inner.input.read().unwrap_or_else(PoisonError::into_inner).as_ref().and_then(Weak::upgrade);
        broker.and_then(|b| b.execution_key())
    }

    /// Stream `value` to whoever follows the run (`Agent::stream` with custom values, the
    /// console, ...) while the state goes on: an LLM's tokens, progress. Nothing is kept in
    /// the context or the checkpoint. When nobody follows (or outside a run) it costs a
    /// look and `value` is not even encoded; a value serde cannot encode is dropped.
    ///
    /// ```
    /// use agent_core::{Context, StateResult};
    ///
    /// async fn write(ctx: Context) -> StateResult {
    ///     for token in ["Hel", "lo"] {
    ///         ctx.emit(token); // followers see each as it comes
    ///     }
    ///     StateResult::End
    /// }
    /// Context::new().emit("nobody listens"); // outside a run: nothing happens
    /// # let _ = write;
    /// ```
    pub fn emit<T: Serialize>(&self, value: T) {
        let broker = self.inner.input.read().unwrap_or_else(PoisonError::into_inner).as_ref().and_then(Weak::upgrade);
        let Some(broker) = broker else { return };
        if !broker.emitting() {
            return;
        }
        if let Ok(value) = serde_json::to_value(value) {
            broker.emit(value);
        }
    }

    /// A deep copy: a new context with the same values, sharing nothing with this one.
    pub fn deep_clone(&self) -> Context {
        let map = self.inner.values.read().unwrap_or_else(PoisonError::into_inner);
        let copy: FxHashMap<Box<str>, SlotRef> =
            map.iter().map(|(k, v)| (k.clone(), Arc::new(Mutex::new(lock(v).clone())))).collect();
        Context { inner: Arc::new(Inner { values: RwLock::new(copy), ..Inner::default() }), scope: None }
    }

    /// Every value as JSON: plain values as stored, typed values tagged with their type.
    pub fn to_json(&self) -> Result<serde_json::Value, ContextError> {
        let map = self.inner.values.read().unwrap_or_else(PoisonError::into_inner);
        let mut out = serde_json::Map::with_capacity(map.len());
        for (k, v) in map.iter() {
            let slot = lock(v);
            let encoded = match &*slot {
                Slot::Typed(t) => serde_json::to_value(t).map(|t| serde_json::json!({ "typed": t })),
                plain => plain.json().map(|v| serde_json::json!({ "plain": v })),
            };
            let v = encoded.map_err(|e| ContextError::Serialize { key: k.to_string(), message: e.to_string() })?;
            out.insert(k.to_string(), v);
        }
        Ok(serde_json::Value::Object(out))
    }

    /// Every value as JSON text, in the shape of [`Context::to_json`], written straight from
    /// the stored values (no JSON tree is built): what checkpoints hold.
    ///
    /// ```
    /// use agent_core::Context;
    /// let ctx = Context::new();
    /// ctx.set_state("n", 3);
    /// let back = Context::from_json_str(&ctx.to_json_string().unwrap()).unwrap();
    /// assert_eq!(back.get_state::<u32>("n"), Some(3));
    /// ```
    pub fn to_json_string(&self) -> Result<String, ContextError> {
        self.to_raw_json().map(|raw| String::from(Box::<str>::from(raw)))
    }

    /// [`Context::to_json_string`] as a `RawValue`, for checkpoints (not parsed again to be
    /// checked: it was just written).
    pub(crate) fn to_raw_json(&self) -> Result<Box<serde_json::value::RawValue>, ContextError> {
        let failed_at = std::cell::RefCell::new(None);
        let written = serde_json::value::to_raw_value(&Encoded { ctx: self, failed_at: &failed_at });
        written
            .map_err(|e| ContextError::Serialize { key: failed_at.take().unwrap_or_default(), message: e.to_string() })
    }

    /// The context that [`Context::to_json_string`] (or [`Context::to_json`]) wrote, read from
    /// the text (no JSON tree of the whole is built).
    pub fn from_json_str(json: &str) -> Result<Context, ContextError> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "lowercase")]
        enum Stored {
            Plain(serde_json::Value),
            Typed(Box<dyn TypedContextData>),
        }
        let values: Vec<(String, Stored)> = serde_json::from_str::<Entries<Stored>>(json)
            .map_err(|e| ContextError::Decode { key: String::new(), message: e.to_string() })?
            .0;
        let ctx = Context::new();
        for (k, v) in values {
            let slot = match v {
                Stored::Plain(value) => Slot::Json { value, set_as: "a restored plain value" },
                Stored::Typed(t) => Slot::Typed(t),
            };
            ctx.put(&k, slot);
        }
        Ok(ctx)
    }

    /// The context that [`Context::to_json`] wrote.
    pub fn from_json(json: &serde_json::Value) -> Result<Context, ContextError> {
        let obj = json.as_object().ok_or_else(|| ContextError::Decode {
            key: String::new(),
            message: "a context must be a JSON object".into(),
        })?;
        let ctx = Context::new();
        for (k, v) in obj {
            let slot = if let Some(plain) = v.get("plain") {
                Slot::Json { value: plain.clone(), set_as: "a restored plain value" }
            } else if let Some(typed) = v.get("typed") {
                let t: Box<dyn TypedContextData> = serde_json::from_value(typed.clone())
                    .map_err(|e| ContextError::Decode { key: k.clone(), message: e.to_string() })?;
                Slot::Typed(t)
            } else {
                return Err(ContextError::Decode { key: k.clone(), message: "neither `plain` nor `typed`".into() });
            };
            ctx.put(k, slot);
        }
        Ok(ctx)
    }
}

/// The runtime's side of a [`Context`]: hooks that only the runtime calls, kept off the
/// context's methods so that a state's `ctx.` shows only what a state uses. Reached as
/// `agent_core::__private::context::…`; not public API.
pub mod runtime {
    use std::sync::atomic::Ordering;
    use std::sync::{Arc, PoisonError, Weak};

    use super::{lock, Context};
    use crate::error::ContextError;

    pub use super::Pending;

    /// Record the failure an `on_error` handler is about to handle.
    pub fn set_last_error(ctx: &Context, error: crate::StateError) {
        *lock(&ctx.inner.last_error) = Some(error);
    }

    /// Install who answers `human_in_the_loop` in this context. Held weakly: once the
    /// broker is gone, requests fail with `NoProvider`.
    pub fn set_input_broker(ctx: &Context, broker: Weak<dyn crate::human::InputBroker>) {
        *ctx.inner.input.write().unwrap_or_else(PoisonError::into_inner) = Some(broker);
    }

    /// Whether a write could not be stored since the error was last taken.
    #[inline]
    pub fn has_write_error(ctx: &Context) -> bool {
        ctx.inner.has_write_error.load(Ordering::Acquire)
    }

    /// A key and its value as a checkpoint writes it (`None`: the key holds nothing).
    pub type EncodedKey = (Box<str>, Option<Box<serde_json::value::RawValue>>);

    /// What the run this context belongs to gives a child run its state starts (see
    /// `InputBroker::child_link`); `None` outside a run's state.
    pub fn child_link(ctx: &Context) -> Option<Box<dyn std::any::Any + Send>> {
        let broker = ctx.inner.input.read().unwrap_or_else(PoisonError::into_inner).as_ref().and_then(Weak::upgrade);
        broker.and_then(|b| b.child_link())
    }

    /// Give the context its keys' reducers (once; later calls change nothing).
    pub fn set_reducers(ctx: &Context, reducers: Arc<super::Reducers>) {
        let _ = ctx.inner.reducers.set(reducers);
    }

    /// Whether `key` has a reducer.
    pub fn has_reducer(ctx: &Context, key: &str) -> bool {
        ctx.reducer(key).is_some()
    }

    /// A handle on the same context for branch `ordinal` of a fan-out (with a map's item).
    /// Its scope comes from this thread's recycled ones when there is one (see
    /// [`recycle`]): a map's branch then allocates nothing for it.
    pub fn scoped(ctx: &Context, ordinal: u32, item: Option<serde_json::Value>) -> Context {
        let recycled = SCOPES.try_with(|s| s.borrow_mut().pop()).ok().flatten();
        let scope = match recycled {
            Some(mut scope) => match Arc::get_mut(&mut scope) {
                Some(s) => {
                    s.ordinal = ordinal;
                    s.item = item;
                    scope
                }
                None => {
                    Arc::new(super::Scope { ordinal, item, pending: Default::default(), dirty: Default::default() })
                }
            },
            None => Arc::new(super::Scope { ordinal, item, pending: Default::default(), dirty: Default::default() }),
        };
        Context { inner: ctx.inner.clone(), scope: Some(scope) }
    }

    /// Point `ctx`, a branch's handle, at branch `ordinal` (with a map's item) in place,
    /// when nothing else holds its scope: a task running one branch after another reuses
    /// one handle, with no allocation and no reference count moved on the shared context.
    /// Gives the item back when the scope is shared (a clone of the handle outlived its
    /// branch) or `ctx` has none: then make a new one with [`scoped`].
    pub fn rescope(
        ctx: &mut Context,
        ordinal: u32,
        item: Option<serde_json::Value>,
    ) -> Result<(), Option<serde_json::Value>> {
        let Some(s) = ctx.scope.as_mut().and_then(Arc::get_mut) else { return Err(item) };
        s.ordinal = ordinal;
        s.item = item;
        if *s.dirty.get_mut() {
            *s.dirty.get_mut() = false;
            *s.pending.get_mut().unwrap_or_else(PoisonError::into_inner) = super::Pending::default();
        }
        Ok(())
    }

    /// Give a branch's handle back when the branch is done with it: its scope, if nothing
    /// else holds it, is kept for this thread's next [`scoped`] (up to a few dozen).
    pub fn recycle(ctx: Context) {
        let Some(mut scope) = ctx.scope else { return };
        let Some(s) = Arc::get_mut(&mut scope) else { return };
        s.item = None;
        if *s.dirty.get_mut() {
            *s.dirty.get_mut() = false;
            *s.pending.get_mut().unwrap_or_else(PoisonError::into_inner) = super::Pending::default();
        }
        // Not at all while this thread's locals are being destroyed (a runtime shutting
        // down drops its tasks then).
        let _ = SCOPES.try_with(|cache| {
            let mut cache = cache.borrow_mut();
            if cache.len() < 64 {
                cache.push(scope);
            }
        });
    }

    thread_local! {
        /// Scopes of ended branches, for the next ones on this thread.
        static SCOPES: std::cell::RefCell<Vec<Arc<super::Scope>>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// Forget what the branch's state contributed so far (a new attempt begins).
    pub fn begin_attempt(ctx: &Context) {
        if let Some(s) = ctx.scope.as_ref().filter(|s| s.dirty.swap(false, Ordering::Acquire)) {
            *lock(&s.pending) = super::Pending::default();
        }
    }

    /// What the branch's state contributed (its attempt completed), taken out.
    pub fn take_pending(ctx: &Context) -> super::Pending {
        match &ctx.scope {
            Some(s) if s.dirty.swap(false, Ordering::Acquire) => std::mem::take(&mut *lock(&s.pending)),
            Some(_) => super::Pending::default(),
            None => super::Pending::default(),
        }
    }

    /// Fold a contribution into `key` now: through its reducer, or as a plain write if it
    /// has none.
    pub fn apply(ctx: &Context, key: &str, value: serde_json::Value) -> Result<(), ContextError> {
        match ctx.reducer(key) {
            Some(reduce) => ctx.fold(key, reduce, value),
            None => {
                ctx.put(key, super::Slot::Json { value, set_as: "a map's results" });
                Ok(())
            }
        }
    }

    /// Start recording the keys written from now on (see the module docs); the keys
    /// recorded so far, if it was on already, are dropped.
    pub fn track_changes(ctx: &Context) {
        lock(&ctx.inner.changed).clear();
        ctx.inner.tracking.store(true, Ordering::SeqCst);
    }

    /// The keys written since the last call (or since `track_changes`), in no order; the
    /// set starts empty again.
    pub fn take_changes(ctx: &Context) -> Vec<Box<str>> {
        let mut changed = lock(&ctx.inner.changed);
        if changed.is_empty() {
            return Vec::new();
        }
        std::mem::take(&mut *changed).into_iter().collect()
    }

    /// The values of `keys` as a checkpoint writes them (`{"plain": …}` or `{"typed": …}`),
    /// `None` for a key that holds nothing.
    ///
    /// # Errors
    ///
    /// [`ContextError::Serialize`] naming the key whose value could not be written.
    pub fn encode_keys(ctx: &Context, keys: &[Box<str>]) -> Result<Vec<EncodedKey>, ContextError> {
        use super::{Slot, Tagged};
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let Some(slot) = ctx.slot(key) else {
                out.push((key.clone(), None));
                continue;
            };
            let slot = lock(&slot);
            let written = match &*slot {
                Slot::Json { value, .. } => serde_json::value::to_raw_value(&Tagged("plain", value)),
                Slot::Native { value, encode, .. } => {
                    encode(&**value).and_then(|v| serde_json::value::to_raw_value(&Tagged("plain", &v)))
                }
                Slot::Typed(t) => serde_json::value::to_raw_value(&Tagged("typed", t)),
            };
            let raw = written.map_err(|e| ContextError::Serialize { key: key.to_string(), message: e.to_string() })?;
            out.push((key.clone(), Some(raw)));
        }
        Ok(out)
    }

    /// Take the error of a write that could not be stored, if any.
    #[inline]
    pub fn take_write_error(ctx: &Context) -> Option<ContextError> {
        if !ctx.inner.has_write_error.load(Ordering::Acquire) {
            return None;
        }
        ctx.inner.has_write_error.store(false, Ordering::Release);
        lock(&ctx.inner.write_error).take()
    }
}

/// A context written as a JSON object of `{"plain": value}` / `{"typed": value}` entries.
struct Encoded<'a> {
    ctx: &'a Context,
    /// The key whose value could not be written.
    failed_at: &'a std::cell::RefCell<Option<String>>,
}

impl Serialize for Encoded<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeMap};
        let map = self.ctx.inner.values.read().unwrap_or_else(PoisonError::into_inner);
        let mut out = s.serialize_map(Some(map.len()))?;
        for (k, v) in map.iter() {
            let slot = lock(v);
            let written = match &*slot {
                Slot::Json { value, .. } => out.serialize_entry(&**k, &Tagged("plain", value)),
                Slot::Native { value, encode, .. } => match encode(&**value) {
                    Ok(value) => out.serialize_entry(&**k, &Tagged("plain", &value)),
                    Err(e) => Err(S::Error::custom(e)),
                },
                Slot::Typed(t) => out.serialize_entry(&**k, &Tagged("typed", t)),
            };
            if let Err(e) = written {
                *self.failed_at.borrow_mut() = Some(k.to_string());
                return Err(e);
            }
        }
        out.end()
    }
}

/// `{"<tag>": value}`.
struct Tagged<'a, T: ?Sized>(&'static str, &'a T);

impl<T: Serialize + ?Sized> Serialize for Tagged<'_, T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry(self.0, self.1)?;
        m.end()
    }
}

/// A JSON object read as its entries, in order.
struct Entries<V>(Vec<(String, V)>);

impl<'de, V: serde::Deserialize<'de>> serde::Deserialize<'de> for Entries<V> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<V>(std::marker::PhantomData<V>);
        impl<'de, V: serde::Deserialize<'de>> serde::de::Visitor<'de> for Visit<V> {
            type Value = Entries<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object of context values")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Entries<V>, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys = self.keys();
        keys.sort();
        f.debug_struct("Context").field("keys", &keys).finish()
    }
}
