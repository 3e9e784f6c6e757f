//! What an agent costs to make, in heap bytes: programs that make an agent per request (or
//! thousands of them) must not pay for what nobody uses, such as an event channel nobody
//! subscribes to. One test in this file: the allocator counts every thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use agent_core::{Context, StateResult};
use agent_runtime::Agent;

struct Counting;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[tokio::test(flavor = "current_thread")]
async fn an_agent_nobody_watches_costs_kilobytes_not_half_a_megabyte() {
    let make = || {
        let mut agent = Agent::new("small");
        for i in 0..10u32 {
            let next = if i < 9 { StateResult::next(format!("s{}", i + 1)) } else { StateResult::End };
            agent.add_state(format!("s{i}"), move |_ctx: Context| {
                let next = next.clone();
                async move { next }
            });
        }
        agent
    };
    make().run().await.unwrap(); // warm-up: thread-locals, the runtime's first allocations
    let before = ALLOCATED.load(Ordering::Relaxed);
    for _ in 0..100 {
        make().run().await.unwrap();
    }
    let per_agent = (ALLOCATED.load(Ordering::Relaxed) - before) / 100;
    eprintln!("making and running a ten-state agent: {per_agent} bytes allocated");
    assert!(per_agent < 32 * 1024, "making and running a ten-state agent allocated {per_agent} bytes");

    // A subscriber makes the channel (its slots are allocated once, then reused).
    let agent = make();
    let before = ALLOCATED.load(Ordering::Relaxed);
    let events = agent.events();
    assert!(ALLOCATED.load(Ordering::Relaxed) - before > 64 * 1024, "the channel is made by the first subscriber");
    drop(events);
}
