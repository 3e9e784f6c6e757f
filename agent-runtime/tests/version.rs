//! Version safety: an agent's graph signature and its hash, and checkpoints refused under a
//! changed graph (`version.rs`, `checkpoint/validate.rs`).
//!
//! - Options that only change when a state runs (resources, priority, timeout, rate limits,
//!   tags, preemption, the blocking pool, a dependency's condition and timeout) leave the
//!   hash as it is, and a checkpoint restores across them; the order states are added in
//!   does not matter.
//! - Each change of meaning (a state added, removed or renamed, an edge, computed targets,
//!   `on_error`, `join`, the retry budget, a dependency's type or lifecycle, the start)
//!   changes the hash, is listed by the diff, and makes a restore fail with
//!   `GraphChanged` listing it, leaving the agent untouched.
//! - A durable run recovered by a redefined agent (a state removed, one renamed) is refused
//!   with both listed, no state runs and the store is left as it was, on `MemoryStore`,
//!   SQLite (a file) and PostgreSQL (a schema of its own); the old definition then
//!   recovers it.
//! - A checkpoint written before signatures (version 3) restores as before.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_core::{
    AgentError, Checkpoint, CheckpointError, Context, DependencyConfig, DependencyLifecycle, DependencyType,
    GraphChange, Priority, RateLimit, ResourceRequirements, RetryPolicy, StateResult,
};
use agent_runtime::store::{CheckpointStore, MemoryStore, RunQuery, SqliteStore};
use agent_runtime::{Agent, AgentStatus};

mod common;
use common::{trail, visit};

/// One state of the test graph, with every option the builder has.
#[derive(Clone, Debug)]
struct S {
    name: &'static str,
    /// Declared targets; `None`: computed at run time.
    targets: Option<Vec<&'static str>>,
    on_error: Option<&'static str>,
    join: bool,
    retries: Option<u32>,
    deps: Vec<(&'static str, DependencyType, DependencyLifecycle)>,
    /// Options that do not change meaning.
    cpu: f64,
    priority: Priority,
    timeout: Option<Duration>,
    rate_limit: Option<f64>,
    tag: Option<&'static str>,
    preemptible: bool,
    blocking: bool,
    dep_timeout: Option<Duration>,
    dep_condition: bool,
}

impl S {
    fn new(name: &'static str, targets: Option<&[&'static str]>) -> S {
        S {
            name,
            targets: targets.map(<[_]>::to_vec),
            on_error: None,
            join: false,
            retries: None,
            deps: Vec::new(),
            cpu: 0.0,
            priority: Priority::Normal,
            timeout: None,
            rate_limit: None,
            tag: None,
            preemptible: false,
            blocking: false,
            dep_timeout: None,
            dep_condition: false,
        }
    }
}

/// A definition: states, in the order they are added, the start and the agent's default
/// retries.
#[derive(Clone, Debug)]
struct Def {
    states: Vec<S>,
    start: &'static str,
    default_retries: Option<u32>,
}

impl Def {
    fn state(&mut self, name: &str) -> &mut S {
        self.states.iter_mut().find(|s| s.name == name).unwrap()
    }
}

/// fetch → parse → store; fetch's failures go to report (which declares no targets); parse
/// depends on fetch; store is a join.
fn etl() -> Def {
    let mut fetch = S::new("fetch", Some(&["parse"]));
    fetch.on_error = Some("report");
    fetch.retries = Some(2);
    let mut parse = S::new("parse", Some(&["store"]));
    parse.deps.push(("fetch", DependencyType::Required, DependencyLifecycle::Session));
    let mut store = S::new("store", Some(&[]));
    store.join = true;
    Def { states: vec![fetch, parse, store, S::new("report", None)], start: "fetch", default_retries: None }
}

fn build(def: &Def) -> Agent {
    let mut agent = Agent::new("etl");
    if let Some(n) = def.default_retries {
        agent = agent.retry_policy(RetryPolicy::new().max_retries(n));
    }
    for s in &def.states {
        let mut c = agent.add_state(s.name, |_ctx: Context| async { StateResult::End });
        if let Some(t) = &s.targets {
            c = c.targets(t.clone());
        }
        if let Some(h) = s.on_error {
            c = c.on_error(h);
        }
        if s.join {
            c = c.join();
        }
        if let Some(n) = s.retries {
            c = c.retry_policy(RetryPolicy::new().max_retries(n));
        }
        for &(d, kind, lifecycle) in &s.deps {
            let mut config = DependencyConfig::new(kind).lifecycle(lifecycle);
            if let Some(t) = s.dep_timeout {
                config = config.timeout(t);
            }
            if s.dep_condition {
                config = config.condition(|ctx: &Context| ctx.has_state("go"));
            }
            c = c.dependency(d, config);
        }
        if s.cpu > 0.0 {
            c = c.resources(ResourceRequirements::new().cpu(s.cpu));
        }
        c = c.priority(s.priority);
        if let Some(t) = s.timeout {
            c = c.timeout(t);
        }
        if let Some(r) = s.rate_limit {
            c = c.rate_limit(RateLimit::new(r));
        }
        if let Some(t) = s.tag {
            c = c.tag(t);
        }
        if s.preemptible {
            c = c.preemptible();
        }
        if s.blocking {
            c.blocking();
        }
    }
    agent.set_start(def.start);
    agent
}

/// `changed` has another hash than `etl()`, its diff from it lists exactly `expected`, and
/// a checkpoint of `etl()` is refused by it with the same list, the agent left untouched.
fn refused(changed: Def, expected: &[&str]) {
    let (old, new) = (build(&etl()), build(&changed));
    assert_ne!(old.graph_hash().unwrap(), new.graph_hash().unwrap(), "{expected:?}");
    let listed: Vec<String> =
        agent_core::GraphSignature::diff(&old.graph_signature().unwrap(), &new.graph_signature().unwrap())
            .iter()
            .map(ToString::to_string)
            .collect();
    assert_eq!(listed, expected);
    let checkpoint = old.create_checkpoint();
    assert_eq!(checkpoint.graph_hash(), Some(old.graph_hash().unwrap()));
    match new.restore_from_checkpoint(checkpoint) {
        Err(e @ CheckpointError::GraphChanged { .. }) => {
            let text = e.to_string();
            let CheckpointError::GraphChanged { changes, recorded, current, agent } = e else { unreachable!() };
            assert_eq!(agent, "etl");
            assert_eq!((recorded, current), (old.graph_hash().unwrap(), new.graph_hash().unwrap()));
            assert_eq!(changes.iter().map(ToString::to_string).collect::<Vec<_>>(), expected);
            for line in expected {
                assert!(text.contains(line), "{text:?} does not say {line:?}");
            }
        }
        other => panic!("expected GraphChanged ({expected:?}), got {other:?}"),
    }
    assert_eq!(new.status(), AgentStatus::Idle);
    assert_eq!(new.run_id(), None);
}

#[test]
fn options_that_do_not_change_meaning_leave_the_hash_and_a_checkpoint_restores() {
    let base = build(&etl());
    let hash = base.graph_hash().unwrap();
    assert_eq!(build(&etl()).graph_hash().unwrap(), hash, "built twice");
    let mut tuned = etl();
    for s in &mut tuned.states {
        s.cpu = 2.0;
        s.priority = Priority::Critical;
        s.timeout = Some(Duration::from_secs(30));
        s.rate_limit = Some(5.0);
        s.tag = Some("llm");
        s.preemptible = true;
        s.blocking = true;
        s.dep_timeout = Some(Duration::from_secs(9));
        s.dep_condition = true;
    }
    let tuned = build(&tuned);
    assert_eq!(tuned.graph_hash().unwrap(), hash);
    assert_eq!(tuned.graph_signature().unwrap(), base.graph_signature().unwrap());
    tuned.restore_from_checkpoint(base.create_checkpoint()).unwrap();

    // The order states are added in does not matter, nor whether a retry budget comes
    // from the state or the agent's default.
    let mut reordered = etl();
    reordered.states.reverse();
    assert_eq!(build(&reordered).graph_hash().unwrap(), hash);
    let mut own = etl();
    for s in &mut own.states {
        s.retries = Some(2);
    }
    let mut defaulted = etl();
    defaulted.state("fetch").retries = None;
    defaulted.default_retries = Some(2);
    assert_eq!(build(&defaulted).graph_hash().unwrap(), build(&own).graph_hash().unwrap());
    assert_ne!(build(&own).graph_hash().unwrap(), hash);
}

#[test]
fn each_change_of_meaning_changes_the_hash_and_is_listed_on_restore() {
    let mut d = etl();
    d.states.push(S::new("audit", None));
    refused(d, &["state `audit` was added"]);

    let mut d = etl();
    d.states.retain(|s| s.name != "report");
    d.state("fetch").on_error = None;
    refused(d, &["state `report` was removed", "state `fetch`: on_error changed from `report` to none"]);

    let mut d = etl();
    d.state("store").name = "save";
    d.state("parse").targets = Some(vec!["save"]);
    refused(
        d,
        &[
            "state `store` was removed",
            "state `save` was added",
            "state `parse` now goes to `save` and no longer goes to `store`",
        ],
    );

    let mut d = etl();
    d.state("fetch").targets = Some(vec!["parse", "store"]);
    refused(d, &["state `fetch` now goes to `store`"]);

    let mut d = etl();
    d.state("parse").targets = None;
    refused(d, &["state `parse` no longer goes to `store`", "state `parse` now has targets computed at run time"]);

    let mut d = etl();
    d.state("report").targets = Some(vec![]);
    refused(d, &["state `report` no longer has targets computed at run time"]);

    let mut d = etl();
    d.state("fetch").on_error = Some("store");
    refused(d, &["state `fetch`: on_error changed from `report` to `store`"]);

    let mut d = etl();
    d.state("store").join = false;
    refused(d, &["state `store` is no longer a join"]);

    let mut d = etl();
    d.state("fetch").retries = Some(5);
    refused(d, &["state `fetch`: max_retries changed from 2 to 5"]);

    let mut d = etl();
    d.default_retries = Some(1);
    refused(
        d,
        &[
            "state `parse`: max_retries changed from 0 to 1",
            "state `report`: max_retries changed from 0 to 1",
            "state `store`: max_retries changed from 0 to 1",
        ],
    );

    let mut d = etl();
    d.state("parse").deps[0].1 = DependencyType::Sequential;
    refused(
        d,
        &[
            "state `parse` no longer depends on `fetch` (Required, Session)",
            "state `parse` now depends on `fetch` (Sequential, Session)",
        ],
    );

    let mut d = etl();
    d.state("parse").deps[0].2 = DependencyLifecycle::Once;
    refused(
        d,
        &[
            "state `parse` no longer depends on `fetch` (Required, Session)",
            "state `parse` now depends on `fetch` (Required, Once)",
        ],
    );

    let mut d = etl();
    d.start = "parse";
    refused(d, &["the start changed from `fetch` to `parse`"]);
}

/// A checkpoint whose graph is the agent's, taken mid-run, restores and the run goes on.
#[tokio::test(start_paused = true)]
async fn a_checkpoint_of_the_same_graph_restores_mid_run() {
    let (agent, _log) = chain(&["a", "b", "c"], Some("b"));
    let running = tokio::spawn({
        let agent = agent.clone();
        async move { agent.run().await }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let checkpoint = Checkpoint::from_json(&agent.create_checkpoint().to_json().unwrap()).unwrap();
    running.abort();
    assert_eq!(checkpoint.running_states(), ["b"]);
    assert_eq!(checkpoint.graph_hash(), Some(agent.graph_hash().unwrap()));
    let (again, log) = chain(&["a", "b", "c"], None);
    again.restore_from_checkpoint(checkpoint).unwrap();
    let result = again.run().await.unwrap();
    assert_eq!(trail(result.context()), ["a", "b", "c"]);
    assert_eq!(*log.lock().unwrap(), ["b", "c"]);
}

/// A checkpoint written before signatures (version 3: no `graph`) restores and runs as
/// before; under a changed graph, the rules that name states still refuse it.
#[tokio::test(start_paused = true)]
async fn a_checkpoint_without_a_signature_restores_as_before() {
    let (agent, _log) = chain(&["a", "b", "c"], Some("b"));
    let running = tokio::spawn({
        let agent = agent.clone();
        async move { agent.run().await }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let mut json: serde_json::Value = serde_json::from_str(&agent.create_checkpoint().to_json().unwrap()).unwrap();
    running.abort();
    assert!(json.as_object_mut().unwrap().remove("graph").is_some(), "version 4 writes the graph");
    json["schema_version"] = 3.into();
    let old = Checkpoint::from_json(&json.to_string()).unwrap();
    assert_eq!(old.graph, None);

    let (again, log) = chain(&["a", "b", "c"], None);
    again.restore_from_checkpoint(old.clone()).unwrap();
    let result = again.run().await.unwrap();
    assert_eq!(trail(result.context()), ["a", "b", "c"]);
    assert_eq!(*log.lock().unwrap(), ["b", "c"]);

    // Not compared, so a changed graph is caught only where a name no longer fits.
    let (renamed, _) = chain(&["a", "b2", "c"], None);
    match renamed.restore_from_checkpoint(old) {
        Err(CheckpointError::Mismatch { reason, .. }) => assert!(reason.contains("\"b\""), "{reason}"),
        other => panic!("expected Mismatch, got {other:?}"),
    }
}

/// The chain `names[0]` → `names[1]` → …, targets declared; a state logs its run in the
/// returned log (outside the context) and visits the trail; `hang` never ends.
fn chain(names: &[&'static str], hang: Option<&'static str>) -> (Agent, Log) {
    let log = Log::default();
    let mut agent = Agent::new("chain");
    for (i, &name) in names.iter().enumerate() {
        let next = names.get(i + 1).copied();
        let log = log.clone();
        agent
            .add_state(name, move |ctx: Context| {
                let log = log.clone();
                async move {
                    if hang == Some(name) {
                        std::future::pending::<()>().await;
                    }
                    log.lock().unwrap().push(name.to_owned());
                    visit(&ctx, name);
                    next.map_or(StateResult::End, StateResult::next)
                }
            })
            .targets(next);
    }
    (agent, log)
}

type Log = Arc<Mutex<Vec<String>>>;

/// Everything `store` holds of run `run_id`: its row, its snapshots and its journal.
async fn held(store: &dyn CheckpointStore, run_id: &str) -> impl PartialEq + std::fmt::Debug {
    let runs = store.list_runs(&RunQuery::default()).await.unwrap();
    let snapshots = store.snapshots(run_id, 1000).await.unwrap();
    let journal = store.journal(run_id, 0).await.unwrap();
    (runs, snapshots, journal)
}

/// A durable run of a → b → c → d dies inside c. The agent is redefined with d removed and
/// b renamed b2: recovering is refused with both listed, nothing runs, and the store holds
/// what it held. The old definition then recovers the run to its end.
async fn a_changed_graph_is_refused_and_the_store_untouched<S: CheckpointStore + Clone>(store: S) {
    let old = ["a", "b", "c", "d"];
    let (first, _) = chain(&old, Some("c"));
    let first = first.with_store(store.clone());
    let running = tokio::spawn({
        let first = first.clone();
        async move { first.run().await }
    });
    let run_id = loop {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let Some(run) = store.list_runs(&RunQuery::default()).await.unwrap().into_iter().next() else { continue };
        // The newest snapshot and the journal after it: the run as recorded now.
        let Some(c) = agent_runtime::store::read_checkpoint(&store, &run.run_id).await.unwrap() else { continue };
        if c.running_states() == ["c"] {
            break run.run_id;
        }
    };
    running.abort();
    let _ = running.await;
    // The dropped run gives its lease back in the background: let it, so that the store
    // holds still from here on.
    let give_up = std::time::Instant::now() + Duration::from_secs(20);
    while store.get_run(&run_id).await.unwrap().is_some_and(|r| r.owner.is_some()) {
        assert!(std::time::Instant::now() < give_up, "the dropped run never gave its lease back");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let newest = agent_runtime::store::read_checkpoint(&store, &run_id).await.unwrap().unwrap();
    assert_eq!(newest.graph_hash(), Some(first.graph_hash().unwrap()), "the snapshot records the graph");
    let before = held(&store, &run_id).await;

    let (redefined, log) = chain(&["a", "b2", "c"], None);
    let redefined = redefined.with_store(store.clone());
    let error = redefined.recover(&run_id).await.unwrap_err();
    let AgentError::Checkpoint(CheckpointError::GraphChanged { ref changes, .. }) = error else {
        panic!("expected GraphChanged, got {error:?}")
    };
    let removed = |s: &str| GraphChange::StateRemoved { state: s.into() };
    assert!(changes.contains(&removed("b")) && changes.contains(&removed("d")), "{changes:?}");
    assert!(changes.contains(&GraphChange::StateAdded { state: "b2".into() }), "{changes:?}");
    let text = error.to_string();
    for said in ["state `b` was removed", "state `d` was removed", "state `b2` was added"] {
        assert!(text.contains(said), "{text:?} does not say {said:?}");
    }
    assert!(log.lock().unwrap().is_empty(), "no state ran");
    assert_eq!(redefined.status(), AgentStatus::Idle);
    assert_eq!(held(&store, &run_id).await, before, "the refusal wrote nothing");
    // `recover_all` refuses it the same way.
    let all = redefined.recover_all().await.unwrap();
    assert_eq!(all.len(), 1);
    assert!(matches!(all[0].1, Err(AgentError::Checkpoint(CheckpointError::GraphChanged { .. }))), "{:?}", all[0].1);
    assert_eq!(held(&store, &run_id).await, before);

    let (same, log) = chain(&old, None);
    let result = same.with_store(store.clone()).recover(&run_id).await.unwrap();
    assert_eq!(result.status(), AgentStatus::Completed);
    assert_eq!(trail(result.context()), old);
    assert_eq!(*log.lock().unwrap(), ["c", "d"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_a_changed_graph_is_refused_and_the_store_untouched() {
    a_changed_graph_is_refused_and_the_store_untouched(MemoryStore::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_changed_graph_is_refused_and_the_store_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("runs.db")).unwrap();
    a_changed_graph_is_refused_and_the_store_untouched(store).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_changed_graph_is_refused_and_the_store_untouched() {
    let Some(url) = common::pg::url("postgres_a_changed_graph_is_refused_and_the_store_untouched") else { return };
    let schema = format!("agent_test_version_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let body = {
        let (url, schema) = (url.clone(), schema.clone());
        async move {
            let store = agent_runtime::PostgresStore::connect_with_schema(&url, &schema).await.unwrap();
            a_changed_graph_is_refused_and_the_store_untouched(store).await;
        }
    };
    let outcome = tokio::spawn(body).await;
    crate::common::pg::drop_schema(&url, &schema).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// A random valid definition: up to five states named from a small set, targets declared or
/// not (to states that exist), `on_error`, `join`, retries, dependencies on earlier states
/// only (no cycle), and options that do not change meaning.
fn random_def() -> impl proptest::strategy::Strategy<Value = Def> {
    use proptest::prelude::*;
    const NAMES: [&str; 5] = ["a", "b", "c", "d", "e"];
    let kinds = [DependencyType::Required, DependencyType::Optional, DependencyType::Sequential];
    let lifecycles = [DependencyLifecycle::Session, DependencyLifecycle::Once];
    let state = (
        prop::option::of(prop::collection::vec(0usize..5, 0..3)),
        prop::option::of(0usize..5),
        any::<bool>(),
        prop::option::of(1u32..3),
        prop::collection::vec((0usize..5, 0usize..3, 0usize..2), 0..2),
        0u8..3,
    );
    (1usize..=5, prop::collection::vec(state, 5), 0usize..5, prop::option::of(1u32..3)).prop_map(
        move |(n, states, start, default_retries)| {
            let states = (states.into_iter().take(n).enumerate())
                .map(|(i, (targets, on_error, join, retries, deps, cpu))| {
                    let mut s = S::new(NAMES[i], None);
                    s.targets = targets.map(|t| t.into_iter().filter(|&j| j < n).map(|j| NAMES[j]).collect());
                    s.on_error = on_error.filter(|&j| j < n).map(|j| NAMES[j]);
                    s.join = join;
                    s.retries = retries;
                    s.deps = (deps.into_iter())
                        .filter(|&(j, _, _)| j < i)
                        .map(|(j, k, l)| (NAMES[j], kinds[k], lifecycles[l]))
                        .collect();
                    s.cpu = f64::from(cpu);
                    s
                })
                .collect();
            Def { states, start: NAMES[start % n], default_retries }
        },
    )
}

proptest::proptest! {
    /// Built twice, in another order and with other resources, a definition hashes the same;
    /// two definitions hash equal exactly when their signatures are equal, exactly when
    /// their diff is empty.
    #[test]
    fn random_definitions_hash_equal_exactly_when_their_signatures_are(a in random_def(), b in random_def()) {
        let agent = build(&a);
        let (hash, sig) = (agent.graph_hash().unwrap(), agent.graph_signature().unwrap());
        let mut again = a.clone();
        again.states.reverse();
        for s in &mut again.states {
            s.cpu += 1.0;
        }
        proptest::prop_assert_eq!(build(&again).graph_hash().unwrap(), hash);
        proptest::prop_assert!(agent_core::GraphSignature::diff(&sig, &sig).is_empty());
        let other = build(&b);
        let (other_hash, other_sig) = (other.graph_hash().unwrap(), other.graph_signature().unwrap());
        proptest::prop_assert_eq!(sig == other_sig, hash == other_hash);
        proptest::prop_assert_eq!(sig == other_sig, agent_core::GraphSignature::diff(&sig, &other_sig).is_empty());
    }
}
