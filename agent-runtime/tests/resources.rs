//! The resource-aware scheduler end to end, through the public API: admission, priorities,
//! backfilling without starvation, preemption, quotas, GPU placement, release on every exit
//! path, blocking states and metrics. Everything about time runs on a paused (virtual) clock.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_core::{
    AgentError, Allocation, Context, PanicError, Priority, ResourceError, ResourceRequirements, ResourceType,
    StateResult, TimeoutError,
};
use agent_runtime::{Agent, AgentResult, AgentStatus, QuotaScope, ResourcePool, RunMetrics, StateMetrics, StateStatus};
use proptest::prelude::*;
use tokio::time::{sleep, Instant};

mod common;
use common::{spawn_run, *};

// ----- helpers ------------------------------------------------------------------------------

fn cpu(n: f64) -> ResourceRequirements {
    ResourceRequirements::new().cpu(n)
}

fn gpu(n: f64) -> ResourceRequirements {
    ResourceRequirements::new().gpu(n)
}

fn cpu_pool(n: f64) -> ResourcePool {
    ResourcePool::builder().total_cpu(n).total_memory_mb(1024.0).build()
}

/// A state that fans out to `names`.
fn fan_out<S: Into<String>>(
    names: impl IntoIterator<Item = S>,
) -> impl Fn(Context) -> StateFut + Send + Sync + 'static {
    let names: Vec<String> = names.into_iter().map(Into::into).collect();
    move |_ctx| {
        let names = names.clone();
        Box::pin(async move { StateResult::parallel(names) })
    }
}

/// Counts how many holders are inside at once, and the most ever.
#[derive(Clone, Default)]
struct Gauge {
    now: Arc<AtomicUsize>,
    max: Arc<AtomicUsize>,
}

/// Inside a [`Gauge`] until dropped (also when the state's future is dropped: preemption,
/// cancellation, timeout).
struct Inside(Arc<AtomicUsize>);

impl Drop for Inside {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

impl Gauge {
    fn enter(&self) -> Inside {
        let n = self.now.fetch_add(1, SeqCst) + 1;
        self.max.fetch_max(n, SeqCst);
        Inside(self.now.clone())
    }
    fn max(&self) -> usize {
        self.max.load(SeqCst)
    }
}

/// A state that stays inside `gauge` for `d` (virtual time).
fn hold(gauge: &Gauge, d: Duration) -> impl Fn(Context) -> StateFut + Send + Sync + 'static {
    let gauge = gauge.clone();
    move |_ctx| {
        let gauge = gauge.clone();
        Box::pin(async move {
            let _inside = gauge.enter();
            sleep(d).await;
            StateResult::End
        })
    }
}

/// Events with the virtual time since `t0` they happened at.
type Log = Arc<Mutex<Vec<(String, Duration)>>>;

fn names(log: &Log) -> Vec<String> {
    log.lock().unwrap().iter().map(|(n, _)| n.clone()).collect()
}

/// A state that logs `<name>_start`, sleeps `d`, then logs `<name>_end`.
fn logged(log: &Log, name: &str, t0: Instant, d: Duration) -> impl Fn(Context) -> StateFut + Send + Sync + 'static {
    let (log, name) = (log.clone(), name.to_owned());
    move |_ctx| {
        let (log, name) = (log.clone(), name.clone());
        Box::pin(async move {
            log.lock().unwrap().push((format!("{name}_start"), t0.elapsed()));
            sleep(d).await;
            log.lock().unwrap().push((format!("{name}_end"), t0.elapsed()));
            StateResult::End
        })
    }
}

fn state<'a>(m: &'a RunMetrics, name: &str) -> &'a StateMetrics {
    m.states.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no state {name} in {m:?}"))
}

/// The failing state and the error it failed with.
fn failure(result: Result<AgentResult, AgentError>) -> (String, agent_core::BoxError) {
    match result {
        Err(AgentError::StateFailed { state, source, .. }) => (state, source),
        Err(other) => panic!("expected StateFailed, got {other}"),
        Ok(r) => panic!("expected the run to fail, it ended {:?}", r.status()),
    }
}

/// Whether an allocation holds nothing (what `ctx.allocation()` gives a state that asked
/// for no resources).
fn is_empty(a: &Allocation) -> bool {
    ResourceType::ALL.iter().all(|&k| a.amount(k) == 0.0) && a.gpu_ids().is_empty()
}

fn resource_error(source: &agent_core::BoxError) -> &ResourceError {
    source.downcast_ref::<ResourceError>().unwrap_or_else(|| panic!("not a ResourceError: {source}"))
}

/// Nothing is held, nobody waits.
fn assert_pool_idle(pool: &ResourcePool) {
    let stats = pool.usage_stats();
    for kind in ResourceType::ALL {
        assert_eq!(stats[kind].current_usage, 0.0, "{kind} still held: {stats:?}");
    }
    assert!(pool.state_allocations().is_empty(), "{:?}", pool.state_allocations());
    assert!(pool.waiting_states().is_empty(), "{:?}", pool.waiting_states());
}

/// A state asking for the pool's whole CPU total runs at once.
async fn whole_pool_runs_at_once(pool: &ResourcePool) {
    let total = pool.total(ResourceType::Cpu);
    let mut agent = Agent::new("after").with_resource_pool(pool.clone());
    agent
        .add_state("everything", move |ctx: Context| async move {
            assert_eq!(ctx.allocation().amount(ResourceType::Cpu), total);
            StateResult::End
        })
        .resources(cpu(total));
    let t0 = Instant::now();
    let result = agent.run().await.expect("a state needing the whole pool runs");
    assert_eq!(t0.elapsed(), Duration::ZERO, "it did not wait: nothing was left held");
    let m = result.metrics();
    assert_eq!((state(&m, "everything").resource_wait, state(&m, "everything").completed), (Duration::ZERO, 1));
}

// ----- 1. capacity ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn two_cpus_run_exactly_two_one_cpu_states_at_a_time() {
    let pool = cpu_pool(2.0);
    let gauge = Gauge::default();
    let mut agent = Agent::new("batch").with_resource_pool(pool.clone());
    agent.add_state("start", fan_out(vec!["work"; 10]));
    agent.add_state("work", hold(&gauge, ms(100))).resources(cpu(1.0));
    let t0 = Instant::now();
    let result = agent.run().await.unwrap();
    assert_eq!(t0.elapsed(), ms(500), "10 states of 100 ms, two at a time");
    assert_eq!(gauge.max(), 2);
    assert_eq!(state(&result.metrics(), "work").completed, 10);
    let stats = pool.usage_stats()[ResourceType::Cpu];
    assert_eq!(stats.peak_usage, 2.0);
    assert_eq!(stats.current_usage, 0.0);
    assert_eq!(stats.allocations, 10);
    assert_eq!(stats.waits, 8, "all but the first two waited");
    assert_eq!(stats.longest_wait, ms(400));
    assert_eq!(stats.failed_allocations, 0);
}

// ----- 2. several kinds ----------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn usage_never_exceeds_any_total_with_mixed_requests() {
    let pool = ResourcePool::builder()
        .total_cpu(4.0)
        .total_memory_mb(1000.0)
        .total_io(10.0)
        .total_network(10.0)
        .total_gpu(0.0)
        .build();
    let requests: [(&str, ResourceRequirements, u64); 5] = [
        ("a", ResourceRequirements::new().cpu(2.0).memory_mb(300.0), 10),
        ("b", ResourceRequirements::new().cpu(1.0).memory_mb(600.0).io(4.0), 15),
        ("c", ResourceRequirements::new().cpu(3.0).memory_mb(100.0).io(6.0), 20),
        ("d", ResourceRequirements::new().memory_mb(500.0).io(8.0).network(10.0), 25),
        ("e", ResourceRequirements::new().cpu(1.0).network(5.0), 30),
    ];
    let violations: Arc<Mutex<Vec<String>>> = Arc::default();
    let gauge = Gauge::default();
    let mut agent = Agent::new("mixed").with_resource_pool(pool.clone());
    let targets: Vec<&str> = (0..3).flat_map(|_| requests.iter().map(|r| r.0)).collect();
    agent.add_state("start", fan_out(targets));
    for (name, req, d) in requests {
        let (pool, violations, gauge) = (pool.clone(), violations.clone(), gauge.clone());
        let check = move |when: &str, mine: &ResourceRequirements| {
            let stats = pool.usage_stats();
            let allocs = pool.state_allocations();
            let mut v = violations.lock().unwrap();
            for kind in ResourceType::ALL {
                let s = stats[kind];
                let summed: f64 = allocs.iter().map(|a| a.allocation.amount(kind)).sum();
                if s.current_usage > s.total + 1e-9 || summed > s.total + 1e-9 {
                    v.push(format!("{name} {when}: {kind} current {} summed {summed} > {}", s.current_usage, s.total));
                }
                if (summed - s.current_usage).abs() > 1e-9 {
                    v.push(format!("{name} {when}: {kind} allocations sum {summed} != current {}", s.current_usage));
                }
            }
            if !allocs.iter().any(|a| a.agent == "mixed" && a.state == name && a.allocation.requirements() == *mine) {
                v.push(format!("{name} {when}: its own allocation is not listed: {allocs:?}"));
            }
        };
        agent
            .add_state(name, move |ctx: Context| {
                let (check, gauge) = (check.clone(), gauge.clone());
                async move {
                    let _inside = gauge.enter();
                    let mine = ctx.allocation().requirements();
                    check("at start", &mine);
                    sleep(ms(d / 2)).await;
                    check("midway", &mine);
                    sleep(ms(d - d / 2)).await;
                    StateResult::End
                }
            })
            .resources(req);
    }
    let result = agent.run().await.unwrap();
    assert_eq!(result.status(), AgentStatus::Completed);
    assert!(violations.lock().unwrap().is_empty(), "{:#?}", violations.lock().unwrap());
    assert!(gauge.max() >= 2, "requests that fit together ran together (max {})", gauge.max());
    let stats = pool.usage_stats();
    for kind in ResourceType::ALL {
        assert!(stats[kind].peak_usage <= stats[kind].total + 1e-9, "{kind}: {stats:?}");
    }
    assert!(stats[ResourceType::Cpu].peak_usage > 2.0, "{stats:?}");
    assert_eq!(stats[ResourceType::Cpu].allocations, 12, "a, b, c, e three times each");
    assert_eq!(stats[ResourceType::Network].allocations, 6, "d and e three times each");
    assert_pool_idle(&pool);
}

// ----- 3. no resources, no pool --------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn states_without_resources_bypass_the_pool() {
    let pool = cpu_pool(1.0);
    let log: Log = Arc::default();
    let t0 = Instant::now();
    let mut agent = Agent::new("bypass").with_resource_pool(pool.clone());
    agent.add_state("start", fan_out(["hog", "free", "free_with_timeout", "waiter"]));
    agent.add_state("hog", logged(&log, "hog", t0, ms(1000))).resources(cpu(1.0));
    for name in ["free", "free_with_timeout"] {
        let (log, pool) = (log.clone(), pool.clone());
        let config = agent.add_state(name, move |ctx: Context| {
            let (log, pool) = (log.clone(), pool.clone());
            async move {
                let started = t0.elapsed();
                tokio::task::yield_now().await;
                let held = pool.usage_stats()[ResourceType::Cpu].current_usage;
                let note = format!(
                    "{name}_start cpu_held={held} waiting={} empty_alloc={}",
                    pool.waiting_states().len(),
                    is_empty(&ctx.allocation())
                );
                log.lock().unwrap().push((note, started));
                StateResult::End
            }
        });
        if name == "free_with_timeout" {
            config.timeout(ms(5000));
        }
    }
    agent.add_state("waiter", logged(&log, "waiter", t0, ms(1))).resources(cpu(1.0));
    agent.run().await.unwrap();
    let log = log.lock().unwrap().clone();
    let at = |prefix: &str| {
        log.iter().find(|(n, _)| n.starts_with(prefix)).unwrap_or_else(|| panic!("{prefix}: {log:?}")).clone()
    };
    assert_eq!(at("hog_start").1, Duration::ZERO);
    for name in ["free_start", "free_with_timeout_start"] {
        let (note, when) = at(name);
        assert_eq!(when, Duration::ZERO, "{note} ran at once although the pool's only CPU was held");
        assert!(note.ends_with("cpu_held=1 waiting=1 empty_alloc=true"), "{note}");
    }
    assert_eq!(at("waiter_start").1, ms(1000), "the CPU-holding sibling did wait for the hog");
    assert_eq!(pool.usage_stats()[ResourceType::Cpu].allocations, 2, "only hog and waiter went through the pool");
}

// ----- 4. priority ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn waiters_are_admitted_by_priority_then_fifo() {
    let pool = cpu_pool(1.0);
    let log: Log = Arc::default();
    let t0 = Instant::now();
    let mut holder = Agent::new("holder").with_resource_pool(pool.clone());
    holder.add_state("hold", logged(&log, "hold", t0, ms(100))).resources(cpu(1.0));
    let holder = tokio::spawn(async move { holder.run().await });
    sleep(ms(1)).await;
    assert_eq!(pool.usage_stats()[ResourceType::Cpu].current_usage, 1.0);

    let waiters = [
        ("low", Priority::Low),
        ("normal_a", Priority::Normal),
        ("high", Priority::High),
        ("critical", Priority::Critical),
        ("normal_b", Priority::Normal),
    ];
    let mut runs = Vec::new();
    for (name, priority) in waiters {
        let mut agent = Agent::new(name).with_resource_pool(pool.clone());
        agent.add_state(name, logged(&log, name, t0, ms(10))).resources(cpu(1.0)).priority(priority);
        runs.push(tokio::spawn(async move { agent.run().await }));
        sleep(ms(1)).await; // arrive one after another
    }
    let waiting = pool.waiting_states();
    let order: Vec<&str> = waiting.iter().map(|w| w.state.as_str()).collect();
    assert_eq!(order, ["critical", "high", "normal_a", "normal_b", "low"]);
    let priorities: Vec<Priority> = waiting.iter().map(|w| w.priority).collect();
    assert_eq!(priorities, [Priority::Critical, Priority::High, Priority::Normal, Priority::Normal, Priority::Low]);
    assert_eq!(waiting[4].waited, ms(5), "low arrived first, at 1 ms; it is 6 ms now");
    assert_eq!(waiting[0].waited, ms(2));
    assert_eq!(waiting[0].requested, cpu(1.0));
    assert_eq!(waiting[0].agent, "critical");

    holder.await.unwrap().unwrap();
    for r in runs {
        r.await.unwrap().unwrap();
    }
    let starts: Vec<String> = names(&log).into_iter().filter(|n| n.ends_with("_start")).collect();
    assert_eq!(starts, ["hold_start", "critical_start", "high_start", "normal_a_start", "normal_b_start", "low_start"]);
    let low_start = log.lock().unwrap().iter().find(|(n, _)| n == "low_start").unwrap().1;
    assert_eq!(low_start, ms(140), "each ran 10 ms after the one before, from 100 ms");
}

// ----- 5. no starvation ----------------------------------------------------------------------

struct StreamOutcome {
    large_arrived: Duration,
    large_started: Duration,
    last_small_arrived: Duration,
    /// Small states that started after the large one arrived and before it started.
    passed_by: usize,
}

/// A 4-CPU pool; a stream of 150 1-CPU states (one every 2 ms, 7 ms each: always 3 or 4
/// running, never 0) for 300 ms; a 4-CPU state arrives at 11 ms.
async fn large_request_amid_a_stream(max_bypass: Option<u32>) -> StreamOutcome {
    const SMALLS: usize = 150;
    let mut builder = ResourcePool::builder().total_cpu(4.0).total_memory_mb(1024.0);
    if let Some(n) = max_bypass {
        builder = builder.max_bypass(n);
    }
    let pool = builder.build();
    let log: Log = Arc::default();
    let t0 = Instant::now();
    let stream = {
        let (pool, log) = (pool.clone(), log.clone());
        tokio::spawn(async move {
            let mut runs = Vec::new();
            for _ in 0..SMALLS {
                let mut agent = Agent::new("stream").with_resource_pool(pool.clone());
                agent.add_state("small", logged(&log, "small", t0, ms(7))).resources(cpu(1.0));
                let log = log.clone();
                runs.push(tokio::spawn(async move {
                    log.lock().unwrap().push(("small_arrived".into(), t0.elapsed()));
                    agent.run().await
                }));
                sleep(ms(2)).await;
            }
            for r in runs {
                r.await.unwrap().unwrap();
            }
        })
    };
    sleep(ms(11)).await;
    let mut large = Agent::new("large").with_resource_pool(pool.clone());
    large.add_state("large", logged(&log, "large", t0, ms(7))).resources(cpu(4.0));
    log.lock().unwrap().push(("large_arrived".into(), t0.elapsed()));
    large.run().await.unwrap();
    stream.await.unwrap();
    assert_pool_idle(&pool);

    let log = log.lock().unwrap().clone();
    let pos = |name: &str| log.iter().position(|(n, _)| n == name).unwrap();
    let (arrived, started) = (pos("large_arrived"), pos("large_start"));
    StreamOutcome {
        large_arrived: log[arrived].1,
        large_started: log[started].1,
        last_small_arrived: log.iter().filter(|(n, _)| n == "small_arrived").map(|e| e.1).max().unwrap(),
        passed_by: log[arrived..started].iter().filter(|(n, _)| n == "small_start").count(),
    }
}

/// The documented default of `ResourcePoolBuilder::max_bypass`.
const DEFAULT_MAX_BYPASS: u32 = 64;

#[tokio::test(start_paused = true)]
async fn a_large_request_is_not_starved_by_a_stream_of_small_ones() {
    // Small states that fit backfill past the waiting large one, at most `limit` times; then
    // it reserves, the running ones drain (7 ms) and it starts, long before the stream ends.
    for (setting, limit) in [(None, DEFAULT_MAX_BYPASS), (Some(16), 16), (Some(1), 1)] {
        let o = large_request_amid_a_stream(setting).await;
        let waited = o.large_started - o.large_arrived;
        assert_eq!(o.large_arrived, ms(11));
        assert!(o.passed_by >= 1, "max_bypass {limit}: small states that fit backfill past the large one");
        assert!(o.passed_by <= limit as usize, "max_bypass {limit}: passed {} times", o.passed_by);
        assert!(o.large_started < o.last_small_arrived, "max_bypass {limit}: started at {:?}", o.large_started);
        // At most `limit` arrivals (2 ms apart) pass it, then the running ones (7 ms) drain.
        assert!(waited <= ms(2 * u64::from(limit) + 7 + 2), "max_bypass {limit}: waited {waited:?}");
    }

    // No bypass at all: it reserves at once and starts as soon as the running ones end.
    let o = large_request_amid_a_stream(Some(0)).await;
    assert_eq!(o.passed_by, 0);
    assert!(o.large_started - o.large_arrived <= ms(7), "waited {:?}", o.large_started - o.large_arrived);

    // Control: without a limit the stream starves it until the stream ends.
    let o = large_request_amid_a_stream(Some(u32::MAX)).await;
    assert!(o.large_started >= o.last_small_arrived, "started at {:?} amid the stream", o.large_started);
    assert!(o.passed_by > DEFAULT_MAX_BYPASS as usize);
}

// ----- 6. preemption -------------------------------------------------------------------------

struct PreemptionOutcome {
    log: Vec<(String, Duration)>,
    background: RunMetrics,
    preempted: std::collections::BTreeMap<String, u64>,
}

/// Pool of 1 CPU. A state "low" (1 s, priority `low`) starts at 0; an `urgent` one (10 ms)
/// asks at 50 ms.
async fn urgent_after_low(
    preemption: bool,
    low_preemptible: bool,
    low: Priority,
    urgent: Priority,
) -> PreemptionOutcome {
    let pool = ResourcePool::builder().total_cpu(1.0).total_memory_mb(1024.0).enable_preemption(preemption).build();
    let log: Log = Arc::default();
    let t0 = Instant::now();
    let mut background = Agent::new("background").with_resource_pool(pool.clone());
    let config = background.add_state("low", logged(&log, "low", t0, ms(1000))).resources(cpu(1.0)).priority(low);
    if low_preemptible {
        config.preemptible();
    }
    let background = tokio::spawn(async move { background.run().await });
    sleep(ms(50)).await;
    let mut urgent_agent = Agent::new("urgent").with_resource_pool(pool.clone());
    urgent_agent.add_state("urgent", logged(&log, "urgent", t0, ms(10))).resources(cpu(1.0)).priority(urgent);
    let urgent_result = urgent_agent.run().await.unwrap();
    assert_eq!(state(&urgent_result.metrics(), "urgent").preempted, 0);
    let background = background.await.unwrap().expect("the preempted run still completes");
    assert_eq!(background.status(), AgentStatus::Completed);
    assert_pool_idle(&pool);
    let log = log.lock().unwrap().clone();
    PreemptionOutcome { log, background: background.metrics(), preempted: pool.usage_stats().preempted().clone() }
}

fn timeline(entries: &[(&str, u64)]) -> Vec<(String, Duration)> {
    entries.iter().map(|&(n, t)| (n.to_owned(), ms(t))).collect()
}

#[tokio::test(start_paused = true)]
async fn a_high_priority_state_preempts_a_preemptible_low_one_which_reruns() {
    let o = urgent_after_low(true, true, Priority::Low, Priority::High).await;
    assert_eq!(
        o.log,
        timeline(&[("low_start", 0), ("urgent_start", 50), ("urgent_end", 60), ("low_start", 60), ("low_end", 1060)]),
        "the urgent state ran first; low ran again from its start afterwards"
    );
    let low = state(&o.background, "low");
    assert_eq!((low.preempted, low.completed, low.failed), (1, 1, 0), "{low:?}");
    assert_eq!(low.resource_wait, ms(10), "its second attempt waited for the urgent state");
    assert_eq!(o.background.preempted, 1);
    assert_eq!(o.background.failed, 0);
    assert_eq!(o.preempted, [("low".to_owned(), 1)].into());

    // Critical preempts too.
    let o = urgent_after_low(true, true, Priority::Low, Priority::Critical).await;
    assert_eq!(state(&o.background, "low").preempted, 1);
    assert_eq!(o.log[1], ("urgent_start".to_owned(), ms(50)));
}

#[tokio::test(start_paused = true)]
async fn nothing_is_preempted_unless_preemptible_urgent_and_enabled() {
    let waited = timeline(&[("low_start", 0), ("low_end", 1000), ("urgent_start", 1000), ("urgent_end", 1010)]);
    for (preemption, preemptible, low, urgent, why) in [
        (true, false, Priority::Low, Priority::Critical, "the low state is not preemptible"),
        (false, true, Priority::Low, Priority::Critical, "preemption is off"),
        (true, true, Priority::Low, Priority::Normal, "a Normal waiter never preempts"),
        (true, true, Priority::High, Priority::High, "only lower-priority states are preempted"),
    ] {
        let o = urgent_after_low(preemption, preemptible, low, urgent).await;
        assert_eq!(o.log, waited, "{why}");
        assert_eq!(o.background.preempted, 0, "{why}");
        assert!(o.preempted.is_empty(), "{why}: {:?}", o.preempted);
    }
}

#[tokio::test(start_paused = true)]
async fn preemption_stops_only_as_many_states_as_needed() {
    let pool = ResourcePool::builder().total_cpu(2.0).total_memory_mb(1024.0).enable_preemption(true).build();
    let log: Log = Arc::default();
    let t0 = Instant::now();
    let mut background = Agent::new("background").with_resource_pool(pool.clone());
    background.add_state("start", fan_out(["low_a", "low_b"]));
    for name in ["low_a", "low_b"] {
        background
            .add_state(name, logged(&log, name, t0, ms(1000)))
            .resources(cpu(1.0))
            .priority(Priority::Low)
            .preemptible();
    }
    let background = tokio::spawn(async move { background.run().await });
    sleep(ms(50)).await;
    let mut urgent = Agent::new("urgent").with_resource_pool(pool.clone());
    urgent.add_state("urgent", logged(&log, "urgent", t0, ms(10))).resources(cpu(1.0)).priority(Priority::Critical);
    urgent.run().await.unwrap();
    let m = background.await.unwrap().unwrap().metrics();
    assert_eq!(m.preempted, 1, "one CPU was needed, one state was stopped: {m:?}");
    assert_eq!(pool.usage_stats().preempted().values().sum::<u64>(), 1);
    let log = log.lock().unwrap().clone();
    assert!(log.contains(&("urgent_start".to_owned(), ms(50))), "{log:?}");
    let starts = log.iter().filter(|(n, _)| n.starts_with("low_") && n.ends_with("_start")).count();
    assert_eq!(starts, 3, "two first starts and one rerun: {log:?}");
    assert_pool_idle(&pool);
}

// ----- 7. quotas -----------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn an_agent_quota_caps_that_agent_only() {
    let pool = ResourcePool::builder().total_gpu(4.0).total_cpu(4.0).enable_quotas(true).build();
    pool.set_quota(QuotaScope::agent("a"), ResourceType::Gpu, 1.0);
    let (ga, gb) = (Gauge::default(), Gauge::default());
    let mut a = Agent::new("a").with_resource_pool(pool.clone());
    a.add_state("start", fan_out(["job"; 3]));
    a.add_state("job", hold(&ga, ms(100))).resources(gpu(1.0));
    let mut b = Agent::new("b").with_resource_pool(pool.clone());
    b.add_state("start", fan_out(["job"; 2]));
    b.add_state("job", hold(&gb, ms(100))).resources(gpu(1.0));
    let t0 = Instant::now();
    let (ra, rb) = tokio::join!(
        async {
            let r = a.run().await;
            (r, t0.elapsed())
        },
        async {
            // Arrive behind a's queued states: they wait on their quota, not in b's way.
            sleep(ms(10)).await;
            let r = b.run().await;
            (r, t0.elapsed())
        }
    );
    ra.0.unwrap();
    rb.0.unwrap();
    assert_eq!(ga.max(), 1, "agent a holds at most its quota of 1 GPU");
    assert_eq!(gb.max(), 2, "agent b has no quota");
    assert_eq!(ra.1, ms(300));
    assert_eq!(rb.1, ms(110), "b's states ran together at once, past a's waiting ones");
    assert!(pool.usage_stats()[ResourceType::Gpu].peak_usage <= 3.0);
    assert_pool_idle(&pool);

    // Above the quota: fails at once, naming scope, amount and quota.
    let mut greedy = Agent::new("a").with_resource_pool(pool.clone());
    greedy.add_state("greedy", |_ctx: Context| async { StateResult::End }).resources(gpu(2.0));
    let t0 = Instant::now();
    let (state_name, source) = failure(greedy.run().await);
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert_eq!(state_name, "greedy");
    assert_eq!(
        resource_error(&source),
        &ResourceError::ExceedsQuota {
            state: "greedy".into(),
            scope: "agent \"a\"".into(),
            kind: ResourceType::Gpu,
            requested: 2.0,
            quota: 1.0
        }
    );
    // Other agents may still take 2.
    let mut other = Agent::new("other").with_resource_pool(pool.clone());
    other.add_state("greedy", |_ctx: Context| async { StateResult::End }).resources(gpu(2.0));
    other.run().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_tag_quota_caps_the_tagged_states() {
    let pool = ResourcePool::builder().total_gpu(4.0).total_cpu(4.0).enable_quotas(true).build();
    pool.set_quota(QuotaScope::tag("t"), ResourceType::Gpu, 1.0);
    let (tagged, all) = (Gauge::default(), Gauge::default());
    let mut agent = Agent::new("c").with_resource_pool(pool.clone());
    agent.add_state("start", fan_out(["t1", "t2", "u"]));
    for name in ["t1", "t2", "u"] {
        let (tagged, all) = (tagged.clone(), all.clone());
        let config = agent
            .add_state(name, move |_ctx: Context| {
                let (tagged, all) = (tagged.clone(), all.clone());
                async move {
                    let _t = name.starts_with('t').then(|| tagged.enter());
                    let _a = all.enter();
                    sleep(ms(100)).await;
                    StateResult::End
                }
            })
            .resources(gpu(1.0));
        if name != "u" {
            config.tag("t");
        }
    }
    let t0 = Instant::now();
    agent.run().await.unwrap();
    assert_eq!(tagged.max(), 1, "the tagged states ran one at a time");
    assert_eq!(all.max(), 2, "the untagged one ran beside them");
    assert_eq!(t0.elapsed(), ms(200));

    let mut greedy = Agent::new("d").with_resource_pool(pool.clone());
    greedy.add_state("greedy", |_ctx: Context| async { StateResult::End }).resources(gpu(1.5)).tag("t");
    let (_, source) = failure(greedy.run().await);
    assert!(
        matches!(resource_error(&source), ResourceError::ExceedsQuota { scope, requested, quota, .. }
            if scope == "tag \"t\"" && *requested == 1.5 && *quota == 1.0),
        "{source}"
    );
    assert_pool_idle(&pool);
}

#[tokio::test(start_paused = true)]
async fn changing_a_quota_admits_or_fails_waiters() {
    let pool = ResourcePool::builder().total_gpu(2.0).total_cpu(4.0).enable_quotas(true).build();
    let log: Log = Arc::default();
    let t0 = Instant::now();

    // Lifting a quota admits the state waiting on it at once.
    pool.set_quota(QuotaScope::agent("q"), ResourceType::Gpu, 1.0);
    let mut agent = Agent::new("q").with_resource_pool(pool.clone());
    agent.add_state("start", fan_out(["first", "second"]));
    agent.add_state("first", logged(&log, "first", t0, ms(100))).resources(gpu(1.0));
    agent.add_state("second", logged(&log, "second", t0, ms(100))).resources(gpu(1.0));
    let run = tokio::spawn(async move { agent.run().await });
    sleep(ms(10)).await;
    let waiting: Vec<String> = pool.waiting_states().into_iter().map(|w| w.state).collect();
    assert_eq!(waiting, ["second"], "the second GPU is free, but the quota holds it back");
    pool.remove_quota(QuotaScope::agent("q"), ResourceType::Gpu);
    run.await.unwrap().unwrap();
    assert!(log.lock().unwrap().contains(&("second_start".to_owned(), ms(10))), "{:?}", log.lock().unwrap());
    assert_pool_idle(&pool);

    // Lowering it below a waiting request fails that state at once.
    pool.set_quota(QuotaScope::agent("r"), ResourceType::Gpu, 1.0);
    let mut agent = Agent::new("r").with_resource_pool(pool.clone());
    agent.add_state("start", fan_out(["hold", "want"]));
    agent.add_state("hold", hold(&Gauge::default(), Duration::from_secs(10))).resources(gpu(1.0));
    agent.add_state("want", |_ctx: Context| async { StateResult::End }).resources(gpu(1.0));
    let t0 = Instant::now();
    let run = tokio::spawn(async move { agent.run().await });
    sleep(ms(10)).await;
    assert_eq!(pool.waiting_states().len(), 1);
    pool.set_quota(QuotaScope::agent("r"), ResourceType::Gpu, 0.5);
    let (name, source) = failure(run.await.unwrap());
    assert_eq!(t0.elapsed(), ms(10), "failed when the quota changed, not later");
    assert_eq!(name, "want");
    assert!(
        matches!(resource_error(&source), ResourceError::ExceedsQuota { quota, requested, .. } if *quota == 0.5 && *requested == 1.0),
        "{source}"
    );
    assert_pool_idle(&pool);
}

// ----- 8. GPU devices ------------------------------------------------------------------------

type Placements = Arc<Mutex<Vec<(String, Vec<(usize, f64)>)>>>;

fn placed(log: &Placements, name: &str, d: Duration) -> impl Fn(Context) -> StateFut + Send + Sync + 'static {
    let (log, name) = (log.clone(), name.to_owned());
    move |ctx| {
        let (log, name) = (log.clone(), name.clone());
        Box::pin(async move {
            let a = ctx.allocation();
            let devices = a.gpu_ids().iter().map(|&id| (id, a.gpu_share(id))).collect();
            log.lock().unwrap().push((name, devices));
            sleep(d).await;
            StateResult::End
        })
    }
}

#[tokio::test(start_paused = true)]
async fn gpu_fractions_pack_onto_one_device_before_the_next() {
    let pool = ResourcePool::builder().total_gpu(2.0).total_cpu(4.0).build();
    let log: Placements = Arc::default();
    let mut agent = Agent::new("packing").with_resource_pool(pool.clone());
    agent.add_state("start", fan_out(["half"; 4]));
    agent.add_state("half", placed(&log, "half", ms(100))).resources(gpu(0.5));
    let t0 = Instant::now();
    agent.run().await.unwrap();
    assert_eq!(t0.elapsed(), ms(100), "all four fit at once");
    let devices: Vec<Vec<(usize, f64)>> = log.lock().unwrap().iter().map(|(_, d)| d.clone()).collect();
    // In admission order: the first two share device 0, the next two device 1.
    assert_eq!(devices, [vec![(0, 0.5)], vec![(0, 0.5)], vec![(1, 0.5)], vec![(1, 0.5)]]);
    assert_eq!(pool.usage_stats()[ResourceType::Gpu].peak_usage, 2.0);

    // 1.5 units: one whole device and half of another; a 0.5 beside it packs onto that half.
    let log: Placements = Arc::default();
    let mut agent = Agent::new("mixed").with_resource_pool(pool.clone());
    agent.add_state("start", fan_out(["big", "small"]));
    agent.add_state("big", placed(&log, "big", ms(100))).resources(gpu(1.5));
    agent.add_state("small", placed(&log, "small", ms(100))).resources(gpu(0.5));
    let t0 = Instant::now();
    agent.run().await.unwrap();
    assert_eq!(t0.elapsed(), ms(100), "both fit at once");
    let log = log.lock().unwrap().clone();
    let big = &log.iter().find(|(n, _)| n == "big").unwrap().1;
    let small = &log.iter().find(|(n, _)| n == "small").unwrap().1;
    assert_eq!(big.len(), 2, "two device ids: {big:?}");
    assert!(big[0].0 != big[1].0);
    let mut shares: Vec<f64> = big.iter().map(|d| d.1).collect();
    shares.sort_by(f64::total_cmp);
    assert_eq!(shares, [0.5, 1.0]);
    let half_device = big.iter().find(|d| d.1 == 0.5).unwrap().0;
    assert_eq!(small, &vec![(half_device, 0.5)], "the 0.5 went to the half-used device");
    assert_pool_idle(&pool);
}

// ----- 9. release on every exit --------------------------------------------------------------

fn deliberate_panic() -> StateResult {
    panic!("deliberate panic in a state holding resources")
}

#[tokio::test(start_paused = true)]
async fn resources_are_released_on_every_exit_path() {
    let pool = cpu_pool(2.0);

    // (a) The state returns Err.
    let mut agent = Agent::new("err").with_resource_pool(pool.clone());
    agent
        .add_state("bad", |_ctx: Context| async {
            sleep(ms(10)).await;
            Err::<StateResult, _>(std::io::Error::other("boom"))
        })
        .resources(cpu(2.0));
    let (name, source) = failure(agent.run().await);
    assert_eq!((name.as_str(), source.to_string().as_str()), ("bad", "boom"));
    assert_pool_idle(&pool);
    whole_pool_runs_at_once(&pool).await;

    // (b) The state panics.
    let mut agent = Agent::new("panic").with_resource_pool(pool.clone());
    agent
        .add_state("bad", |_ctx: Context| async {
            sleep(ms(10)).await;
            deliberate_panic()
        })
        .resources(cpu(2.0));
    let (_, source) = failure(agent.run().await);
    assert!(source.downcast_ref::<PanicError>().is_some_and(|p| p.message.contains("deliberate")), "{source}");
    assert_pool_idle(&pool);
    whole_pool_runs_at_once(&pool).await;

    // (c) The state times out.
    let mut agent = Agent::new("timeout").with_resource_pool(pool.clone());
    agent
        .add_state("slow", |_ctx: Context| async {
            sleep(Duration::from_secs(10)).await;
            StateResult::End
        })
        .resources(cpu(2.0))
        .timeout(ms(100));
    let t0 = Instant::now();
    let (_, source) = failure(agent.run().await);
    assert_eq!(t0.elapsed(), ms(100));
    assert_eq!(source.downcast_ref::<TimeoutError>(), Some(&TimeoutError { state: "slow".into(), after: ms(100) }));
    assert_pool_idle(&pool);
    whole_pool_runs_at_once(&pool).await;

    // (d) The run is cancelled from another task, with one state holding and one waiting.
    let gauge = Gauge::default();
    let mut agent = Agent::new("cancelled").with_resource_pool(pool.clone());
    agent.add_state("start", fan_out(["hold", "queued"]));
    agent.add_state("hold", hold(&gauge, Duration::from_secs(10))).resources(cpu(2.0));
    agent.add_state("queued", hold(&gauge, Duration::from_secs(10))).resources(cpu(2.0));
    let run = spawn_run(&agent);
    sleep(ms(10)).await;
    assert_eq!(pool.usage_stats()[ResourceType::Cpu].current_usage, 2.0);
    assert_eq!(pool.waiting_states().len(), 1);
    agent.cancel_all().await;
    let result = run.await.unwrap().expect("a cancelled run returns its result");
    assert_eq!(result.status(), AgentStatus::Cancelled);
    assert_eq!(gauge.max(), 1);
    assert_pool_idle(&pool);
    whole_pool_runs_at_once(&pool).await;

    // (e) The run's future is dropped: the root branch holds 1 CPU, a spawned branch the other.
    let mut agent = Agent::new("dropped").with_resource_pool(pool.clone());
    agent.add_state("start", fan_out(["hold_a", "hold_b"]));
    agent.add_state("hold_a", hold(&gauge, Duration::from_secs(10))).resources(cpu(1.0));
    agent.add_state("hold_b", hold(&gauge, Duration::from_secs(10))).resources(cpu(1.0));
    let mut run = Box::pin(agent.run());
    assert!(tokio::time::timeout(ms(10), &mut run).await.is_err());
    assert_eq!(pool.usage_stats()[ResourceType::Cpu].current_usage, 2.0);
    drop(run);
    // The spawned branch observes the cancellation at its next poll.
    tokio::task::yield_now().await;
    assert_pool_idle(&pool);
    whole_pool_runs_at_once(&pool).await;
    assert_eq!(agent.status(), AgentStatus::Cancelled);
}

#[tokio::test(start_paused = true)]
async fn nothing_is_held_while_a_failed_state_waits_to_retry() {
    let pool = cpu_pool(1.0);
    let log: Log = Arc::default();
    let t0 = Instant::now();
    let attempts = Arc::new(AtomicUsize::new(0));
    let mut agent = Agent::new("retrying").with_resource_pool(pool.clone());
    agent.add_state("start", fan_out(["flaky", "other"]));
    let (log2, attempts2) = (log.clone(), attempts.clone());
    agent
        .add_state("flaky", move |_ctx: Context| {
            let (log, attempts) = (log2.clone(), attempts2.clone());
            async move {
                log.lock().unwrap().push(("flaky_start".into(), t0.elapsed()));
                sleep(ms(10)).await;
                if attempts.fetch_add(1, SeqCst) == 0 {
                    return Err(std::io::Error::other("first attempt fails"));
                }
                Ok(StateResult::End)
            }
        })
        .resources(cpu(1.0))
        .retry_policy(agent_core::RetryPolicy::new().max_retries(1).initial_delay(ms(100)).jitter(false));
    agent.add_state("other", logged(&log, "other", t0, ms(50))).resources(cpu(1.0));
    let result = agent.run().await.expect("the retry succeeds");
    assert_eq!(
        *log.lock().unwrap(),
        timeline(&[("flaky_start", 0), ("other_start", 10), ("other_end", 60), ("flaky_start", 110)]),
        "the CPU went to other during flaky's 100 ms backoff"
    );
    assert_eq!(t0.elapsed(), ms(120));
    assert_eq!(state(&result.metrics(), "flaky").completed, 1);
    assert_pool_idle(&pool);
}

// ----- 10. above a total ---------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_request_above_a_total_fails_at_once() {
    let pool = ResourcePool::builder().total_cpu(2.0).total_gpu(0.0).total_memory_mb(1024.0).build();
    let mut agent = Agent::new("too_big").with_resource_pool(pool.clone());
    agent.add_state("big", |_ctx: Context| async { StateResult::End }).resources(cpu(4.0));
    let t0 = Instant::now();
    let (name, source) = failure(agent.run().await);
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert_eq!(name, "big");
    assert_eq!(
        resource_error(&source),
        &ResourceError::ExceedsTotal { state: "big".into(), kind: ResourceType::Cpu, requested: 4.0, total: 2.0 }
    );
    assert_eq!(pool.usage_stats()[ResourceType::Cpu].failed_allocations, 1);

    // Also while the pool is busy (it must not wait for capacity that can never come), and
    // for GPUs on a pool without any.
    let mut agent = Agent::new("busy").with_resource_pool(pool.clone());
    agent.add_state("start", fan_out(["hold", "wants_gpu"]));
    agent.add_state("hold", hold(&Gauge::default(), Duration::from_secs(10))).resources(cpu(2.0));
    agent.add_state("wants_gpu", |_ctx: Context| async { StateResult::End }).resources(cpu(1.0).gpu(0.5));
    let t0 = Instant::now();
    let (name, source) = failure(agent.run().await);
    assert_eq!(t0.elapsed(), Duration::ZERO, "no waiting for an impossible request");
    assert_eq!(name, "wants_gpu");
    assert!(
        matches!(resource_error(&source), ResourceError::ExceedsTotal { kind: ResourceType::Gpu, requested, total, .. }
            if *requested == 0.5 && *total == 0.0),
        "{source}"
    );
    assert_eq!(source.to_string(), "state `wants_gpu` asks for 0.5 gpu, but the pool has 0 in all");
    assert_pool_idle(&pool);
}

// ----- 11. counted kinds ---------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn resource_types_limits_which_amounts_count() {
    let pool = ResourcePool::builder().total_cpu(2.0).total_gpu(1.0).total_memory_mb(1024.0).build();
    let seen: Arc<Mutex<Vec<(f64, f64, f64)>>> = Arc::default();
    let mut agent = Agent::new("counted").with_resource_pool(pool.clone());
    let seen2 = seen.clone();
    let pool2 = pool.clone();
    agent
        .add_state("gpu_only", move |ctx: Context| {
            let (seen, pool) = (seen2.clone(), pool2.clone());
            async move {
                let a = ctx.allocation();
                let held_cpu = pool.usage_stats()[ResourceType::Cpu].current_usage;
                seen.lock().unwrap().push((a.amount(ResourceType::Cpu), a.amount(ResourceType::Gpu), held_cpu));
                StateResult::End
            }
        })
        .resources(ResourceRequirements::new().cpu(100.0).gpu(1.0).resource_types([ResourceType::Gpu]));
    agent.run().await.expect("cpu=100 is not counted, so it fits a 2-CPU pool");
    assert_eq!(*seen.lock().unwrap(), [(0.0, 1.0, 0.0)]);
    let stats = pool.usage_stats();
    assert_eq!(stats[ResourceType::Cpu].allocations, 0);
    assert_eq!(stats[ResourceType::Gpu].allocations, 1);

    // And the other way round: only CPU counted, a GPU amount on a pool with none.
    let mut agent = Agent::new("cpu_only").with_resource_pool(pool.clone());
    agent
        .add_state("s", |_ctx: Context| async { StateResult::End })
        .resources(ResourceRequirements::new().cpu(1.0).gpu(5.0).resource_types([ResourceType::Cpu]));
    agent.run().await.unwrap();
    // Counting it makes it impossible.
    let mut agent = Agent::new("both").with_resource_pool(pool.clone());
    agent.add_state("s", |_ctx: Context| async { StateResult::End }).resources(cpu(1.0).gpu(5.0));
    let (_, source) = failure(agent.run().await);
    assert!(matches!(resource_error(&source), ResourceError::ExceedsTotal { kind: ResourceType::Gpu, .. }));
    assert_pool_idle(&pool);
}

// ----- 12. shared pool -----------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_pool_shared_by_two_agents_accounts_across_both() {
    let pool = cpu_pool(2.0);
    let gauge = Gauge::default();
    let both_at_once = Arc::new(AtomicUsize::new(0));
    let mut agents = Vec::new();
    for name in ["left", "right"] {
        let mut agent = Agent::new(name).with_resource_pool(pool.clone());
        agent.add_state("start", fan_out(["work"; 4]));
        let (gauge, pool, both) = (gauge.clone(), pool.clone(), both_at_once.clone());
        agent
            .add_state("work", move |_ctx: Context| {
                let (gauge, pool, both) = (gauge.clone(), pool.clone(), both.clone());
                async move {
                    let _inside = gauge.enter();
                    let agents: std::collections::BTreeSet<String> =
                        pool.state_allocations().into_iter().map(|a| a.agent).collect();
                    if agents.len() == 2 {
                        both.fetch_add(1, SeqCst);
                    }
                    sleep(ms(100)).await;
                    StateResult::End
                }
            })
            .resources(cpu(1.0));
        agents.push(agent);
    }
    let t0 = Instant::now();
    let (l, r) = tokio::join!(agents[0].run(), agents[1].run());
    l.unwrap();
    r.unwrap();
    assert_eq!(gauge.max(), 2, "two CPUs between both agents");
    assert_eq!(t0.elapsed(), ms(400), "8 states of 100 ms, two at a time");
    assert!(both_at_once.load(SeqCst) > 0, "the agents did share the pool at once");
    let stats = pool.usage_stats()[ResourceType::Cpu];
    assert_eq!((stats.peak_usage, stats.allocations), (2.0, 8));
    assert_pool_idle(&pool);
}

// ----- 13. blocking states -------------------------------------------------------------------

#[tokio::test]
async fn a_blocking_state_runs_off_the_async_worker_and_sees_its_allocation() {
    let pool = cpu_pool(2.0);
    let (tx, rx) = std::sync::mpsc::channel::<&'static str>();
    let rx = Arc::new(Mutex::new(Some(rx)));
    let tx = Arc::new(Mutex::new(Some(tx)));
    type Seen = (Result<&'static str, std::sync::mpsc::RecvTimeoutError>, std::thread::ThreadId, f64);
    let seen: Arc<Mutex<Option<Seen>>> = Arc::default();
    let async_alloc: Arc<Mutex<Option<bool>>> = Arc::default();
    let mut agent = Agent::new("blocking").with_resource_pool(pool.clone());
    agent.add_state("start", fan_out(["blocking_state", "async_state"]));
    let seen2 = seen.clone();
    agent
        .add_state("blocking_state", move |ctx: Context| {
            let (rx, seen) = (rx.clone(), seen2.clone());
            async move {
                let rx = rx.lock().unwrap().take().expect("runs once");
                // On the runtime's only thread this would block the sender: a 10 s timeout.
                let got = rx.recv_timeout(Duration::from_secs(10));
                let cpu = ctx.allocation().amount(ResourceType::Cpu);
                *seen.lock().unwrap() = Some((got, std::thread::current().id(), cpu));
                StateResult::End
            }
        })
        .blocking()
        .resources(cpu(1.0));
    let async_alloc2 = async_alloc.clone();
    agent.add_state("async_state", move |ctx: Context| {
        let (tx, async_alloc) = (tx.clone(), async_alloc2.clone());
        async move {
            tokio::task::yield_now().await;
            *async_alloc.lock().unwrap() = Some(is_empty(&ctx.allocation()));
            let tx = tx.lock().unwrap().take().expect("runs once");
            tx.send("hello").unwrap();
            StateResult::End
        }
    });
    let result = agent.run().await.unwrap();
    assert_eq!(result.status(), AgentStatus::Completed);
    let (got, thread, cpu) = seen.lock().unwrap().take().expect("the blocking state ran");
    assert_eq!(got, Ok("hello"), "the async state ran while the blocking one waited");
    assert_ne!(thread, std::thread::current().id(), "the body ran off the runtime's thread");
    assert_eq!(cpu, 1.0, "ctx.allocation() is visible inside a blocking state");
    assert_eq!(*async_alloc.lock().unwrap(), Some(true), "a state without resources sees an empty allocation");
    assert_pool_idle(&pool);
}

// ----- 14. metrics ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn metrics_report_the_pool_and_each_states_wait() {
    let pool = cpu_pool(1.0);
    let gauge = Gauge::default();
    let mut agent = Agent::new("metrics").with_resource_pool(pool.clone());
    agent.add_state("start", fan_out(["first", "second"]));
    agent.add_state("first", hold(&gauge, ms(100))).resources(cpu(1.0));
    agent.add_state("second", hold(&gauge, ms(100))).resources(cpu(1.0));
    let run = spawn_run(&agent);
    sleep(ms(50)).await;
    let during = agent.metrics();
    assert_eq!(during.running, 1, "only first runs; second waits for the CPU: {during:?}");
    assert_ne!(agent.state_status("second"), Some(StateStatus::Running));
    assert_eq!(agent.state_status("first"), Some(StateStatus::Running));
    let result = run.await.unwrap().unwrap();
    let m = result.metrics();
    let resources = m.resources.as_ref().expect("a run with resource states reports its pool");
    assert_eq!(resources, &pool.usage_stats());
    let cpu_stats = resources[ResourceType::Cpu];
    assert_eq!((cpu_stats.total, cpu_stats.allocations, cpu_stats.waits), (1.0, 2, 1));
    assert_eq!((cpu_stats.total_wait, cpu_stats.longest_wait), (ms(100), ms(100)));
    assert_eq!(state(&m, "first").resource_wait, Duration::ZERO);
    assert_eq!(state(&m, "second").resource_wait, ms(100));
    assert_eq!(state(&m, "start").resource_wait, Duration::ZERO);
    assert_eq!((m.completed, m.failed, m.preempted), (3, 0, 0));

    let mut plain = Agent::new("plain").with_resource_pool(pool.clone());
    plain.add_state("s", |_ctx: Context| async { StateResult::End });
    assert!(plain.run().await.unwrap().metrics().resources.is_none(), "no state asks: no pool stats");
}

// ----- more: timeouts and the backfill window -----------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_timeout_bounds_the_body_not_the_wait_for_resources() {
    let pool = cpu_pool(1.0);
    let mut agent = Agent::new("patient").with_resource_pool(pool.clone());
    agent.add_state("start", fan_out(["hold", "timed"]));
    agent.add_state("hold", hold(&Gauge::default(), ms(200))).resources(cpu(1.0));
    agent.add_state("timed", hold(&Gauge::default(), ms(50))).resources(cpu(1.0)).timeout(ms(100));
    let t0 = Instant::now();
    let result = agent.run().await.expect("waited 200 ms, ran 50 ms: within its 100 ms timeout");
    assert_eq!(t0.elapsed(), ms(250));
    assert_eq!(state(&result.metrics(), "timed").resource_wait, ms(200));
    assert_pool_idle(&pool);
}

/// Pool of 2 CPUs: "hold" (1 CPU, 100 ms) from 0, "large" (2 CPUs, 10 ms) from 10 ms,
/// "small" (1 CPU, 10 ms) from 20 ms. When does "small" start?
async fn small_start_behind_a_large_waiter(window: Option<usize>) -> Duration {
    let mut builder = ResourcePool::builder().total_cpu(2.0).total_memory_mb(1024.0);
    if let Some(n) = window {
        builder = builder.backfill_window(n);
    }
    let pool = builder.build();
    let log: Log = Arc::default();
    let t0 = Instant::now();
    let mut runs = Vec::new();
    for (name, need, after, d) in [("hold", 1.0, 0, 100), ("large", 2.0, 10, 10), ("small", 1.0, 20, 10)] {
        sleep(ms(after) - t0.elapsed()).await;
        let mut agent = Agent::new(name).with_resource_pool(pool.clone());
        agent.add_state(name, logged(&log, name, t0, ms(d))).resources(cpu(need));
        runs.push(tokio::spawn(async move { agent.run().await }));
    }
    for r in runs {
        r.await.unwrap().unwrap();
    }
    assert_pool_idle(&pool);
    let log = log.lock().unwrap().clone();
    log.iter().find(|(n, _)| n == "small_start").unwrap().1
}

#[tokio::test(start_paused = true)]
async fn only_waiters_inside_the_backfill_window_backfill() {
    assert_eq!(small_start_behind_a_large_waiter(None).await, ms(20), "it fits beside hold: backfills");
    assert_eq!(
        small_start_behind_a_large_waiter(Some(1)).await,
        ms(110),
        "outside a window of one, it waits for large (100 ms to 110 ms)"
    );
}

/// Pool of 4 CPUs and 1 GPU, `max_bypass(1)`. "gpu_job" holds the GPU (100 ms); "mixed"
/// (1 CPU + 1 GPU) waits for it from 1 ms; then four 1-CPU states arrive at 2..=5 ms, each
/// starting past "mixed". When does the fourth start?
async fn fourth_cpu_state_start(mixed_needs_cpu: f64) -> Duration {
    let pool = ResourcePool::builder().total_cpu(4.0).total_gpu(1.0).total_memory_mb(1024.0).max_bypass(1).build();
    let log: Log = Arc::default();
    let t0 = Instant::now();
    let mut runs = Vec::new();
    let mut arrivals = vec![("gpu_job", gpu(1.0), 0, 100), ("mixed", cpu(mixed_needs_cpu).gpu(1.0), 1, 10)];
    arrivals.extend((1..=4).map(|i| (["c1", "c2", "c3", "c4"][i - 1], cpu(1.0), 1 + i as u64, 50)));
    for (name, need, after, d) in arrivals {
        sleep(ms(after) - t0.elapsed()).await;
        let mut agent = Agent::new(name).with_resource_pool(pool.clone());
        agent.add_state(name, logged(&log, name, t0, ms(d))).resources(need);
        runs.push(tokio::spawn(async move { agent.run().await }));
    }
    for r in runs {
        r.await.unwrap().unwrap();
    }
    assert_pool_idle(&pool);
    let log = log.lock().unwrap().clone();
    assert_eq!(log.iter().find(|(n, _)| n == "mixed_start").unwrap().1, ms(100), "{log:?}");
    log.iter().find(|(n, _)| n == "c4_start").unwrap().1
}

#[tokio::test(start_paused = true)]
async fn a_pass_counts_only_when_it_takes_what_the_waiter_lacks() {
    // "mixed" lacks only the GPU: CPU-only states starting past it do not count as passes,
    // so it never reserves its CPU and all four fit beside it at once.
    assert_eq!(fourth_cpu_state_start(1.0).await, ms(5));
    // Control: needing 4 CPUs as well, it lacks CPU once c1 holds one; c2 then takes what it
    // lacks, it reserves after that one pass (max_bypass 1), and c3 and c4 wait until it
    // has run (100 ms to 110 ms).
    let c4 = fourth_cpu_state_start(4.0).await;
    assert_eq!(c4, ms(110), "nobody of its priority starts past a reserving waiter");
}

// ----- 15. property: random pools and workloads ----------------------------------------------

#[derive(Clone, Debug)]
struct Job {
    cpu: f64,
    gpu: f64,
    priority: Priority,
    preemptible: bool,
    millis: u64,
    /// Counts against the GPU quota of tag `t0` or `t1`.
    tag: Option<u8>,
}

#[derive(Clone, Debug)]
struct Workload {
    cpu_total: f64,
    gpu_total: f64,
    preemption: bool,
    max_bypass: u32,
    window: usize,
    /// Quotas on: the agent's CPU quota and each tag's GPU quota lie this many quarters of
    /// the way from the largest request they cover to the pool's total.
    quotas: Option<(u8, u8)>,
    jobs: Vec<Job>,
}

fn workload() -> impl Strategy<Value = Workload> {
    // CPU 1..=4 in halves; GPU 0..=3 in halves (1.5 has a half-size last device).
    let quotas = prop::option::of((0u8..=4, 0u8..=4));
    let pool = (2u32..=8, 0u32..=6, any::<bool>(), 0u32..20, 1usize..=40, quotas);
    pool.prop_flat_map(|(cpu_halves, gpu_halves, preemption, max_bypass, window, quotas)| {
        let priority =
            prop_oneof![Just(Priority::Low), Just(Priority::Normal), Just(Priority::High), Just(Priority::Critical)];
        let tag = prop::option::of(0u8..2);
        let job = (0..=cpu_halves * 2, 0..=gpu_halves * 2, priority, any::<bool>(), 1u64..50, tag).prop_map(
            |(cpu_quarters, gpu_quarters, priority, preemptible, millis, tag)| Job {
                cpu: f64::from(cpu_quarters) / 4.0,
                gpu: f64::from(gpu_quarters) / 4.0,
                priority,
                preemptible,
                millis,
                tag,
            },
        );
        prop::collection::vec(job, 1..40).prop_map(move |jobs| Workload {
            cpu_total: f64::from(cpu_halves) / 2.0,
            gpu_total: f64::from(gpu_halves) / 2.0,
            preemption,
            max_bypass,
            window,
            quotas,
            jobs,
        })
    })
}

/// Device capacities of a pool of `total` GPU units (whole devices, then the fraction).
fn device_caps(total: f64) -> Vec<f64> {
    let whole = (total + 1e-9).floor();
    let mut caps = vec![1.0; whole as usize];
    if total - whole > 1e-9 {
        caps.push(total - whole);
    }
    caps
}

fn check_workload(w: &Workload) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
    rt.block_on(async {
        let pool = ResourcePool::builder()
            .total_cpu(w.cpu_total)
            .total_gpu(w.gpu_total)
            .total_memory_mb(1024.0)
            .enable_preemption(w.preemption)
            .max_bypass(w.max_bypass)
            .backfill_window(w.window)
            .enable_quotas(w.quotas.is_some())
            .build();
        let n = w.jobs.len();
        // (agent CPU quota, GPU quota of each tag), none above what some job asks.
        let between = |largest: f64, total: f64, quarters: u8| largest + (total - largest) * f64::from(quarters) / 4.0;
        let quotas: Option<(f64, [f64; 2])> = w.quotas.map(|(cpu_slack, gpu_slack)| {
            let largest_cpu = w.jobs.iter().map(|j| j.cpu).fold(0.0, f64::max);
            let largest_gpu = |t: u8| w.jobs.iter().filter(|j| j.tag == Some(t)).map(|j| j.gpu).fold(0.0, f64::max);
            (
                between(largest_cpu, w.cpu_total, cpu_slack),
                [0, 1].map(|t| between(largest_gpu(t), w.gpu_total, gpu_slack)),
            )
        });
        if let Some((agent_cpu, tag_gpu)) = quotas {
            pool.set_quota(QuotaScope::agent("random"), ResourceType::Cpu, agent_cpu);
            for (t, quota) in tag_gpu.into_iter().enumerate() {
                pool.set_quota(QuotaScope::tag(format!("t{t}")), ResourceType::Gpu, quota);
            }
        }
        let tags: Arc<Vec<Option<u8>>> = Arc::new(w.jobs.iter().map(|j| j.tag).collect());
        let starts: Arc<Vec<AtomicUsize>> = Arc::new((0..n).map(|_| AtomicUsize::new(0)).collect());
        let completions: Arc<Vec<AtomicUsize>> = Arc::new((0..n).map(|_| AtomicUsize::new(0)).collect());
        let violations: Arc<Mutex<Vec<String>>> = Arc::default();
        let caps = device_caps(w.gpu_total);
        let mut agent = Agent::new("random").with_resource_pool(pool.clone());
        agent.add_state("start", fan_out((0..n).map(|i| format!("job_{i}"))));
        for (i, job) in w.jobs.iter().cloned().enumerate() {
            let (pool, starts, completions, violations, caps, tags) =
                (pool.clone(), starts.clone(), completions.clone(), violations.clone(), caps.clone(), tags.clone());
            let job2 = job.clone();
            let check = move |ctx: &Context| {
                let mut v = Vec::new();
                let stats = pool.usage_stats();
                for kind in ResourceType::ALL {
                    if stats[kind].current_usage > stats[kind].total + 1e-9 {
                        v.push(format!(
                            "job_{i}: {kind} in use {} > total {}",
                            stats[kind].current_usage, stats[kind].total
                        ));
                    }
                }
                let mut on_device = vec![0.0; caps.len()];
                for a in pool.state_allocations() {
                    for &id in a.allocation.gpu_ids() {
                        match on_device.get_mut(id) {
                            Some(used) => *used += a.allocation.gpu_share(id),
                            None => v.push(format!("job_{i}: {} holds unknown device {id}", a.state)),
                        }
                    }
                }
                if let Some((agent_cpu, tag_gpu)) = quotas {
                    let allocs = pool.state_allocations();
                    let cpu_held: f64 = allocs.iter().map(|a| a.allocation.amount(ResourceType::Cpu)).sum();
                    if cpu_held > agent_cpu + 1e-9 {
                        v.push(format!("job_{i}: the agent holds {cpu_held} CPU, above its quota {agent_cpu}"));
                    }
                    for (t, quota) in tag_gpu.iter().enumerate() {
                        let tagged = |state: &str| {
                            let j: usize = state.trim_start_matches("job_").parse().unwrap();
                            tags[j] == Some(t as u8)
                        };
                        let held: f64 = (allocs.iter())
                            .filter(|a| tagged(&a.state))
                            .map(|a| a.allocation.amount(ResourceType::Gpu))
                            .sum();
                        if held > quota + 1e-9 {
                            v.push(format!("job_{i}: tag t{t} holds {held} GPU, above its quota {quota}"));
                        }
                    }
                }
                for (id, used) in on_device.iter().enumerate() {
                    if *used > caps[id] + 1e-9 {
                        v.push(format!("job_{i}: device {id} holds {used} > capacity {}", caps[id]));
                    }
                }
                // Empty for a job that asks for nothing (it never touches the pool).
                let a = ctx.allocation();
                let shares: f64 = a.gpu_ids().iter().map(|&id| a.gpu_share(id)).sum();
                if (shares - job2.gpu).abs() > 1e-9 || a.amount(ResourceType::Cpu) != job2.cpu {
                    v.push(format!("job_{i}: allocation {a:?} for {job2:?}"));
                }
                if a.gpu_ids().windows(2).any(|p| p[0] >= p[1]) {
                    v.push(format!("job_{i}: device ids not distinct and ascending: {:?}", a.gpu_ids()));
                }
                violations.lock().unwrap().extend(v);
            };
            let config = agent.add_state(format!("job_{i}"), move |ctx: Context| {
                let (check, starts, completions) = (check.clone(), starts.clone(), completions.clone());
                async move {
                    starts[i].fetch_add(1, SeqCst);
                    check(&ctx);
                    sleep(ms(job.millis / 2)).await;
                    check(&ctx);
                    sleep(ms(job.millis - job.millis / 2)).await;
                    completions[i].fetch_add(1, SeqCst);
                    StateResult::End
                }
            });
            let config = config.resources(ResourceRequirements::new().cpu(job.cpu).gpu(job.gpu)).priority(job.priority);
            let config = match job.tag {
                Some(t) => config.tag(format!("t{t}")),
                None => config,
            };
            if job.preemptible {
                config.preemptible();
            }
        }
        let result = tokio::time::timeout(Duration::from_secs(3600), agent.run()).await;
        let result = match result {
            Ok(r) => r,
            Err(_) => {
                return Err(TestCaseError::fail(format!(
                    "deadlock: still waiting after an hour; waiting {:?}; held {:?}",
                    pool.waiting_states(),
                    pool.state_allocations()
                )))
            }
        };
        let result = result.map_err(|e| TestCaseError::fail(format!("run failed: {e}")))?;
        prop_assert_eq!(result.status(), AgentStatus::Completed);
        let violations = violations.lock().unwrap().clone();
        prop_assert!(violations.is_empty(), "{:#?}", violations);
        let m = result.metrics();
        let ledger_preempted = pool.usage_stats().preempted().clone();
        for (i, job) in w.jobs.iter().enumerate() {
            let name = format!("job_{i}");
            let s = state(&m, &name);
            prop_assert_eq!(completions[i].load(SeqCst), 1, "{} completed once", name);
            prop_assert_eq!(s.completed, 1);
            prop_assert_eq!(s.failed, 0);
            prop_assert_eq!(starts[i].load(SeqCst) as u64, 1 + s.preempted, "{}: starts = 1 + preemptions", name);
            if s.preempted > 0 {
                prop_assert!(w.preemption && job.preemptible, "{} preempted: {:?}", name, job);
                prop_assert!(
                    w.jobs.iter().any(|o| o.priority >= Priority::High && o.priority > job.priority),
                    "{} preempted with no more urgent job: {:?}",
                    name,
                    job
                );
                prop_assert!(s.preempted <= ledger_preempted.get(&name).copied().unwrap_or(0));
            }
        }
        let stats = pool.usage_stats();
        for kind in ResourceType::ALL {
            prop_assert_eq!(stats[kind].current_usage, 0.0, "{} still held", kind);
            prop_assert!(stats[kind].peak_usage <= stats[kind].total + 1e-9);
        }
        prop_assert!(pool.state_allocations().is_empty());
        prop_assert!(pool.waiting_states().is_empty());
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn random_workloads_respect_totals_and_all_complete_once(w in workload()) {
        check_workload(&w)?;
    }
}
