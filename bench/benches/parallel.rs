//! Workload: a fan-out of W branches (W = 2, 16, 1,000) from one state, each branch a
//! CPU-bound body of 10 µs or 100 µs (a spin of `std::hint::black_box` arithmetic,
//! calibrated once at start to take that long; no sleeping), then a fan-in state that runs
//! once after all of them, on a 2-worker tokio runtime, awaiting the whole run inside the
//! timed region.
//!
//! Baselines: the ideal, W × body / 2 workers (no scheduler can beat it), and hand-written
//! tokio code running the same bodies, `tokio::spawn` of W tasks then awaiting every
//! `JoinHandle`. After the criterion groups a separate timed loop prints the parallel
//! efficiency, ideal / measured, for both.
//!
//! Reproduce: `cargo bench -p agent-bench --bench parallel`.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use agent::prelude::*;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const WORKERS: u32 = 2;
const WIDTHS: [usize; 3] = [2, 16, 1_000];
const BODIES_US: [u64; 2] = [10, 100];

/// Spin iterations per microsecond, measured once.
static PER_US: OnceLock<f64> = OnceLock::new();
/// The body's length in spin iterations, set before each group.
static ITERS: AtomicU64 = AtomicU64::new(0);

fn spin(iters: u64) -> u64 {
    let mut x = black_box(0x9e37_79b9_7f4a_7c15u64);
    for i in 0..iters {
        x = black_box(x.rotate_left(5) ^ i).wrapping_mul(0x100_0000_01b3);
    }
    x
}

fn per_us() -> f64 {
    *PER_US.get_or_init(|| {
        spin(1_000_000); // warm up the core's clock
        let iters = 10_000_000;
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            black_box(spin(iters));
            best = best.min(t.elapsed().as_secs_f64() * 1e6);
        }
        iters as f64 / best
    })
}

fn body() {
    black_box(spin(ITERS.load(Ordering::Relaxed)));
}

fn fan_agent(width: usize) -> Agent {
    let mut agent = Agent::new("parallel");
    agent.add_state("fan", move |_ctx: Context| async move { StateResult::parallel(vec!["work"; width]) });
    agent.add_state("work", |ctx: Context| async move {
        body();
        ctx.update_state("n", |v: &mut u64| *v += 1).expect("n is set before the run");
        StateResult::next("merge")
    });
    agent.add_state("merge", |ctx: Context| async move {
        ctx.set_state("merged", true);
        StateResult::End
    });
    agent
}

async fn baseline(width: usize) {
    let handles: Vec<_> = (0..width).map(|_| tokio::spawn(async { body() })).collect();
    for h in handles {
        h.await.expect("a body panicked");
    }
}

fn fresh_context() -> Context {
    let ctx = Context::new();
    ctx.set_state("n", 0u64);
    ctx
}

fn ideal(width: usize, body_us: u64) -> Duration {
    Duration::from_micros(width as u64 * body_us) / WORKERS
}

fn parallel(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let per_us = per_us();
    println!("calibration: {per_us:.1} spin iterations per µs");
    let agents: Vec<Agent> = WIDTHS.iter().map(|&w| fan_agent(w)).collect();
    for body_us in BODIES_US {
        ITERS.store((per_us * body_us as f64) as u64, Ordering::Relaxed);
        let mut group = c.benchmark_group(format!("parallel_{body_us}us"));
        for (&width, agent) in WIDTHS.iter().zip(&agents) {
            // The run completes with every branch counted and the join run once.
            let result = rt.block_on(agent.run_in(fresh_context())).expect("the fan-out completes");
            assert_eq!(result.status(), AgentStatus::Completed);
            assert_eq!(result.context().get_state::<u64>("n"), Some(width as u64));
            assert_eq!(result.context().get_state::<bool>("merged"), Some(true));

            group.throughput(Throughput::Elements(width as u64));
            if width == 1_000 {
                group.sample_size(10);
            } else {
                group.sample_size(50);
            }
            group.bench_with_input(BenchmarkId::new("tokio_spawn_join", width), &width, |b, &w| {
                b.to_async(&rt).iter(|| baseline(w))
            });
            group.bench_with_input(BenchmarkId::new("agent", width), &width, |b, _| {
                b.to_async(&rt).iter(|| {
                    let agent = agent.clone();
                    async move { agent.run_in(fresh_context()).await.unwrap() }
                })
            });
        }
        group.finish();
    }

    // Parallel efficiency, ideal / measured, from a separate timed loop of about 0.3 s each.
    println!("\nparallel efficiency (ideal = W x body / {WORKERS} workers; mean of the loop):");
    println!("{:>6} {:>6} {:>12} {:>12} {:>8} {:>12} {:>8}", "body", "W", "ideal", "tokio", "eff", "agent", "eff");
    for body_us in BODIES_US {
        ITERS.store((per_us * body_us as f64) as u64, Ordering::Relaxed);
        // The calibration holds: one body, alone on this thread, takes about its length.
        let alone = time((200_000 / body_us) as u32, body);
        println!("{body_us}us body measured alone: {alone:?}");
        for (&width, agent) in WIDTHS.iter().zip(&agents) {
            let ideal = ideal(width, body_us);
            let reps = (Duration::from_millis(300).as_nanos() / ideal.as_nanos()).clamp(5, 5_000) as u32;
            let tokio = time(reps, || rt.block_on(baseline(width)));
            let agent = time(reps, || {
                rt.block_on(agent.run_in(fresh_context())).unwrap();
            });
            println!(
                "{:>4}us {:>6} {:>12?} {:>12?} {:>7.0}% {:>12?} {:>7.0}%",
                body_us,
                width,
                ideal,
                tokio,
                100.0 * ideal.as_secs_f64() / tokio.as_secs_f64(),
                agent,
                100.0 * ideal.as_secs_f64() / agent.as_secs_f64(),
            );
        }
    }
}

fn time(reps: u32, mut f: impl FnMut()) -> Duration {
    f();
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    t.elapsed() / reps
}

criterion_group!(benches, parallel);
criterion_main!(benches);
