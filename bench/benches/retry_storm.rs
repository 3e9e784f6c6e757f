//! Workload: a retry storm. One state fans out to 10,000 states that fail at once, each
//! failing its first 2 attempts and succeeding on the third (30,000 attempts, 20,000
//! retries), under a `RetryPolicy` of 2 retries with jittered exponential backoff (100 ms
//! doubling, up to 10 s). Run on tokio's current-thread runtime in paused time
//! (`start_paused(true)`), so the virtual makespan is exact; criterion measures the
//! wall-clock cost of the whole storm, awaited inside the timed region.
//!
//! Baseline, measured in the same run: the same 30,000 attempts as hand-written tokio tasks,
//! 10,000 `tokio::spawn`ed loops that fail twice and wait a jittered backoff of the same
//! bounds with `tokio::time::sleep` between attempts, every `JoinHandle` awaited.
//!
//! Checked once before timing: the run completes, every state ran 3 times and the run's
//! metrics count 20,000 retries. The virtual makespan of both is printed.
//!
//! Reproduce: `cargo bench -p agent-bench --bench retry_storm`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agent::prelude::*;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const STATES: usize = 10_000;
const FAILURES: u32 = 2;

fn policy() -> RetryPolicy {
    RetryPolicy::new()
        .max_retries(FAILURES)
        .initial_delay(Duration::from_millis(100))
        .max_delay(Duration::from_secs(10))
        .exponential_base(2.0)
        .jitter(true)
}

/// Attempts made so far, one counter per state; reset before each run.
type Attempts = Arc<Vec<AtomicU32>>;

fn storm_agent(attempts: &Attempts) -> Agent {
    let names: Vec<String> = (0..STATES).map(|i| format!("flaky_{i}")).collect();
    let mut agent = Agent::new("retry_storm");
    let fan = names.clone();
    agent.add_state("fan", move |_ctx: Context| {
        let fan = fan.clone();
        async move { StateResult::parallel(fan) }
    });
    for (i, name) in names.into_iter().enumerate() {
        let attempts = attempts.clone();
        agent
            .add_state(name, move |_ctx: Context| {
                let attempts = attempts.clone();
                async move {
                    if attempts[i].fetch_add(1, Ordering::Relaxed) < FAILURES {
                        Err("transient failure")
                    } else {
                        Ok(StateResult::End)
                    }
                }
            })
            .retry_policy(policy());
    }
    agent
}

/// The baseline: the same attempts and waits as plain tokio tasks.
async fn baseline(attempts: Attempts) {
    let p = policy();
    let handles: Vec<_> = (0..STATES)
        .map(|i| {
            let attempts = attempts.clone();
            tokio::spawn(async move {
                let mut retry = 0;
                loop {
                    let failed = attempts[i].fetch_add(1, Ordering::Relaxed) < FAILURES;
                    if !failed {
                        break;
                    }
                    retry += 1;
                    // Uniform in the upper half of the bound, as the runtime draws it.
                    let bound = p.backoff(retry);
                    tokio::time::sleep(bound.mul_f64(0.5 + 0.5 * fastrand::f64())).await;
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("a baseline task panicked");
    }
}

fn reset(attempts: &Attempts) {
    for a in attempts.iter() {
        a.store(0, Ordering::Relaxed);
    }
}

fn total(attempts: &Attempts) -> u64 {
    attempts.iter().map(|a| u64::from(a.load(Ordering::Relaxed))).sum()
}

fn retry_storm(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
    let attempts: Attempts = Arc::new((0..STATES).map(|_| AtomicU32::new(0)).collect());
    let agent = storm_agent(&attempts);

    // Once before timing: the storm completes with exactly the expected attempts and retries.
    reset(&attempts);
    let (result, makespan) = rt.block_on(async {
        let start = tokio::time::Instant::now();
        let result = agent.run().await.expect("the storm completes");
        (result, start.elapsed())
    });
    assert_eq!(result.status(), AgentStatus::Completed);
    assert_eq!(total(&attempts), STATES as u64 * u64::from(FAILURES + 1));
    let retries = result.metrics().retries;
    assert_eq!(retries, STATES as u64 * u64::from(FAILURES), "the metrics count every retry");
    reset(&attempts);
    let baseline_makespan = rt.block_on(async {
        let start = tokio::time::Instant::now();
        baseline(attempts.clone()).await;
        start.elapsed()
    });
    assert_eq!(total(&attempts), STATES as u64 * u64::from(FAILURES + 1));
    println!(
        "retry storm: {retries} retries counted; virtual makespan agent {makespan:?}, tokio baseline \
         {baseline_makespan:?} (bound: {:?})",
        policy().backoff(1) + policy().backoff(2)
    );

    let mut group = c.benchmark_group("retry_storm");
    group.sample_size(10).throughput(Throughput::Elements(STATES as u64 * u64::from(FAILURES + 1)));
    group.bench_function("tokio_sleep_baseline", |b| {
        b.to_async(&rt).iter(|| {
            reset(&attempts);
            baseline(attempts.clone())
        })
    });
    group.bench_function("agent", |b| {
        b.to_async(&rt).iter(|| {
            reset(&attempts);
            let agent = agent.clone();
            async move { agent.run().await.unwrap() }
        })
    });
    group.finish();
}

criterion_group!(benches, retry_storm);
criterion_main!(benches);
