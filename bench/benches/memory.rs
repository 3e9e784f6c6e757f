//! Workload: memory held per pending branch. A fan-out of W = 100,000 branches that each
//! park on a shared `Notify` until all have started; the heap in use at that instant, minus
//! the heap before the run, divided by W. Measured with a counting global allocator.
//!
//! Baseline, measured in the same run: `tokio::spawn` of W tasks parked the same way.
//!
//! Second workload: a map over the same W items (`StateResult::map`), whose branches park
//! the same way; at most `StateResult::MAP_WINDOW` of them start, so the heap in use once
//! that many have parked, divided by W, is what a map costs per item (its items, its
//! record of branches, the window's futures). Beside it: the fan-out's bytes per pending
//! branch above, measured in the same run.
//!
//! Reproduce: `cargo bench -p agent-bench --bench memory`. Target: at most 1 KiB per
//! pending branch; a map's items cost what the items and their results do, not a future
//! each. (Not a criterion bench: criterion measures time; this prints bytes.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agent::prelude::*;
use tokio::sync::Notify;

struct Counting;

static IN_USE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        IN_USE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        IN_USE.fetch_add(new_size, Ordering::Relaxed);
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const W: usize = 100_000;

async fn wait_until(started: &AtomicUsize, n: usize) {
    while started.load(Ordering::SeqCst) < n {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Heap in use per branch, for W branches that park on a gate: opened by a plain fan-out
/// once all W have parked, or by a map (each then sets its item as its result) once its
/// window is full.
async fn parked_bytes_per_branch(map: bool) -> f64 {
    let started = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Notify::new());
    let hold = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut agent = Agent::new("parked");
    agent.add_state("fan", move |_ctx: Context| async move {
        if map {
            StateResult::map("park", 0..W as u64)
        } else {
            StateResult::parallel(vec!["park"; W])
        }
    });
    let (s, g, h) = (started.clone(), gate.clone(), hold.clone());
    agent.add_state("park", move |ctx: Context| {
        let (s, g, h) = (s.clone(), g.clone(), h.clone());
        async move {
            let wait = g.notified();
            s.fetch_add(1, Ordering::SeqCst);
            if h.load(Ordering::SeqCst) {
                wait.await;
            }
            if map {
                ctx.set_result(ctx.item::<u64>().unwrap()).unwrap();
            }
            StateResult::next("merge")
        }
    });
    agent.add_state("merge", |_ctx: Context| async { StateResult::End });
    let before = IN_USE.load(Ordering::SeqCst);
    let run = tokio::spawn({
        let agent = agent.clone();
        async move { agent.run().await }
    });
    let window = StateResult::MAP_WINDOW as usize;
    wait_until(&started, if map { window } else { W }).await;
    if map {
        // Time for the window to let more start, if it would.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let during = IN_USE.load(Ordering::SeqCst);
    assert!(!map || started.load(Ordering::SeqCst) <= window, "the window let more start");
    hold.store(false, Ordering::SeqCst);
    gate.notify_waiters();
    run.await.unwrap().unwrap();
    (during.saturating_sub(before)) as f64 / W as f64
}

async fn baseline_bytes_per_task() -> f64 {
    let started = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Notify::new());
    let before = IN_USE.load(Ordering::SeqCst);
    let handles: Vec<_> = (0..W)
        .map(|_| {
            let (s, g) = (started.clone(), gate.clone());
            tokio::spawn(async move {
                let wait = g.notified();
                s.fetch_add(1, Ordering::SeqCst);
                wait.await;
            })
        })
        .collect();
    wait_until(&started, W).await;
    let during = IN_USE.load(Ordering::SeqCst);
    gate.notify_waiters();
    for h in handles {
        h.await.unwrap();
    }
    (during.saturating_sub(before)) as f64 / W as f64
}

fn main() {
    // `cargo test --benches` runs bench binaries with `--bench` absent; measure only when asked.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (agent, tokio, map) = rt.block_on(async {
        (parked_bytes_per_branch(false).await, baseline_bytes_per_task().await, parked_bytes_per_branch(true).await)
    });
    println!("memory/pending_branch/agent:        {agent:>8.0} bytes");
    println!("memory/pending_branch/tokio_spawn:  {tokio:>8.0} bytes (baseline)");
    println!("memory/pending_branch/ratio:        {:>8.2}x", agent / tokio);
    println!("memory/map_item/agent:              {map:>8.0} bytes (a map of {W} items, its window full)");
}
