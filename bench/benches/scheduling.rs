//! Workload: the resource scheduler under contention, three measurements.
//!
//! 1. **Makespan.** 10,000 states with mixed requests (CPU 0.5 to 4 of 16; 40% also ask for
//!    0.25, 0.5 or 1 GPU) and durations (10 ms to 1 s), all ready at once, on pools of 1, 2
//!    and 4 GPUs. Run in tokio's paused (virtual) time, so the makespan is exact and
//!    repeatable. Baseline: the lower bound max(sum GPU·t / GPUs, sum CPU·t / CPUs, longest
//!    state), which no scheduler can beat. Target: at most 1.10x the bound.
//! 2. **Starvation.** On 8 CPUs a stream of one-CPU states (one every 5 ms, each 20 to 60
//!    ms, so the pool stays busy) and, 100 ms in, one state asking for all 8. Reported: the
//!    large state's wait, with the default `max_bypass` (64) and with backfilling unbounded
//!    (`max_bypass(u32::MAX)`, the baseline that starves it until the stream ends).
//! 3. **Decision cost** (criterion, wall-clock): one admission decision with 10,000 states
//!    waiting. `release_admits_next`: a release that admits the head, plus the request
//!    that refills the queue; `release_admits_none`: a release whose scan of the whole
//!    window admits nobody, plus a High request that takes the CPU back; `request_queues`:
//!    a request that must wait, plus its withdrawal. Each iteration is two decisions.
//!    Target: at most 1 µs per decision.
//!
//! Reproduce: `cargo bench -p agent-bench --bench scheduling`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agent::bench::{Books, Ticket};
use agent::prelude::*;
use criterion::{BenchmarkId, Criterion};
use tokio::time::Instant;

const CPUS: f64 = 16.0;
const JOBS: usize = 10_000;

#[derive(Clone, Copy)]
struct Job {
    cpu: f64,
    gpu: f64,
    duration: Duration,
}

fn workload(seed: u64) -> Vec<Job> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..JOBS)
        .map(|_| Job {
            cpu: [0.5, 1.0, 1.0, 2.0, 4.0][rng.usize(..5)],
            gpu: if rng.f64() < 0.4 { [0.25, 0.5, 1.0][rng.usize(..3)] } else { 0.0 },
            duration: Duration::from_millis(rng.u64(10..=1000)),
        })
        .collect()
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap()
}

/// The makespan of `jobs` on a pool of `gpus` GPUs, in virtual time.
fn makespan(jobs: &[Job], gpus: f64) -> Duration {
    paused_runtime().block_on(async {
        let pool = ResourcePool::builder().total_cpu(CPUS).total_memory_mb(1e6).total_gpu(gpus).build();
        let mut agent = Agent::new("contended").with_resource_pool(pool);
        let n = jobs.len();
        agent.add_state("start", move |_ctx: Context| async move {
            StateResult::parallel((0..n).map(|i| format!("job_{i}")))
        });
        for (i, job) in jobs.iter().copied().enumerate() {
            agent
                .add_state(format!("job_{i}"), move |_ctx: Context| async move {
                    tokio::time::sleep(job.duration).await;
                    StateResult::End
                })
                .resources(ResourceRequirements::new().cpu(job.cpu).gpu(job.gpu));
        }
        let t0 = Instant::now();
        agent.run().await.expect("every job fits the pool");
        t0.elapsed()
    })
}

fn lower_bound(jobs: &[Job], gpus: f64) -> Duration {
    let secs = |j: &Job| j.duration.as_secs_f64();
    let cpu: f64 = jobs.iter().map(|j| j.cpu * secs(j)).sum::<f64>() / CPUS;
    let gpu: f64 = jobs.iter().map(|j| j.gpu * secs(j)).sum::<f64>() / gpus;
    let longest = jobs.iter().map(secs).fold(0.0, f64::max);
    Duration::from_secs_f64(cpu.max(gpu).max(longest))
}

fn makespan_report() {
    let jobs = workload(7);
    for gpus in [1.0, 2.0, 4.0] {
        let bound = lower_bound(&jobs, gpus);
        let got = makespan(&jobs, gpus);
        println!(
            "scheduling/makespan/{}_gpu: {:>9.1} s, lower bound {:>9.1} s, ratio {:.3}x (target <= 1.10x)",
            gpus,
            got.as_secs_f64(),
            bound.as_secs_f64(),
            got.as_secs_f64() / bound.as_secs_f64()
        );
    }
}

/// How long the 8-CPU state waits under a stream of one-CPU states.
fn large_wait(max_bypass: u32) -> Duration {
    paused_runtime().block_on(async move {
        let pool = ResourcePool::builder().total_cpu(8.0).total_memory_mb(1e6).max_bypass(max_bypass).build();
        let mut rng = fastrand::Rng::with_seed(11);
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        // One agent per arrival: each is its own run, sharing the pool.
        for i in 0..2_000u64 {
            let work = Duration::from_millis(rng.u64(20..=60));
            let mut agent = Agent::new(format!("small_{i}")).with_resource_pool(pool.clone());
            agent
                .add_state("small", move |_ctx: Context| async move {
                    tokio::time::sleep(work).await;
                    StateResult::End
                })
                .resources(ResourceRequirements::new().cpu(1.0));
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep_until(t0 + Duration::from_millis(5 * i)).await;
                agent.run().await.map(|_| ())
            }));
        }
        let started = Arc::new(AtomicU64::new(0));
        let seen = started.clone();
        let mut large = Agent::new("large").with_resource_pool(pool.clone());
        large
            .add_state("large", move |_ctx: Context| {
                let seen = seen.clone();
                async move {
                    seen.store(t0.elapsed().as_millis() as u64, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    StateResult::End
                }
            })
            .resources(ResourceRequirements::new().cpu(8.0));
        let arrival = Duration::from_millis(100);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(t0 + arrival).await;
            large.run().await.map(|_| ())
        }));
        for t in tasks {
            t.await.expect("no task panics").expect("every run completes");
        }
        Duration::from_millis(started.load(Ordering::Relaxed)) - arrival
    })
}

fn starvation_report() {
    let bounded = large_wait(64);
    let unbounded = large_wait(u32::MAX);
    println!(
        "scheduling/starvation/large_wait: {:.3} s with max_bypass 64 (the default); {:.3} s with unbounded backfilling (baseline)",
        bounded.as_secs_f64(),
        unbounded.as_secs_f64()
    );
}

/// Books of 4 CPUs, all held by one-CPU states (their ids returned), with 10,000 states
/// asking `cpu` each waiting.
fn full_pool(cpu: f64) -> (Books, Vec<u64>) {
    let now = Duration::ZERO;
    let mut books = Books::new(4.0, 0.0);
    let held = (0..4)
        .map(|_| match books.request(1.0, 0.0, now) {
            Ticket::Held(id) => id,
            other => panic!("the pool starts empty: {other:?}"),
        })
        .collect();
    for _ in 0..10_000 {
        books.request(cpu, 0.0, now);
    }
    (books, held)
}

fn admission(c: &mut Criterion) {
    let mut group = c.benchmark_group("scheduling/decision");
    let now = Duration::ZERO;
    // A full pool of 4 CPUs held by 4 one-CPU states, and 10,000 one-CPU states waiting.
    let (mut books, mut held) = full_pool(1.0);
    let mut next_id = 4;
    group.bench_function(BenchmarkId::new("release_admits_next", 10_000), |b| {
        b.iter(|| {
            let id = held.remove(0);
            assert_eq!(books.release(id, now), 1, "the head fits what was freed");
            held.push(next_id);
            next_id += 1;
            books.request(1.0, 0.0, now)
        })
    });
    // 10,000 waiting requests of 4 CPUs; a release of one CPU scans the window and admits
    // nobody; a High request then takes the CPU back at once (it waits behind no one).
    let (mut books, mut held) = full_pool(4.0);
    group.bench_function(BenchmarkId::new("release_admits_none", 10_000), |b| {
        b.iter(|| {
            let id = held.remove(0);
            assert_eq!(books.release(id, now), 0, "no waiter fits one CPU");
            match books.request_with_priority(1.0, 0.0, Priority::High, now) {
                Ticket::Held(id) => held.push(id),
                other => panic!("the freed CPU is there: {other:?}"),
            }
        })
    });
    // 10,000 waiting requests of 2 CPUs that nothing frees.
    let mut books = Books::new(4.0, 0.0);
    for _ in 0..3 {
        books.request(1.0, 0.0, now);
    }
    for _ in 0..10_000 {
        books.request(2.0, 0.0, now);
    }
    group.bench_function(BenchmarkId::new("request_queues", 10_000), |b| {
        b.iter(|| match books.request(2.0, 0.0, now) {
            Ticket::Waiting(seq, rank) => books.withdraw(seq, rank, now),
            other => panic!("nothing is free: {other:?}"),
        })
    });
    group.finish();
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: then only build.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    makespan_report();
    starvation_report();
    let mut c = Criterion::default().configure_from_args();
    admission(&mut c);
    c.final_summary();
}
