//! The Rust side of `bench/peers/run`: the same three workloads in `agent`, hand-written tokio
//! code, graph-flow, floxide and dagrs, each on a 2-worker multi-thread tokio runtime.
//!
//! Usage: `peers-bench <system> <workload> <size> <reps>`, where workload is `chain`, `fanout`
//! or `io`. Each run is timed around the whole run (awaited to its end); one untimed warm-up
//! run comes first, then `reps` timed ones. Prints one tab-separated line:
//! `system  workload  size  median_ns  min_ns  max_ns` (or `system workload size n/a reason`).
//! The script divides the median by the size for per-transition and per-branch figures.

use std::time::{Duration, Instant};

mod agent_impl;
mod dagrs_impl;
mod floxide_impl;
mod graphflow_impl;
mod tokio_impl;

/// One timed run: returns its wall time. A system's function builds whatever it must rebuild
/// per run *outside* the timed region where it can.
pub type Timed = Result<Duration, String>;

/// The branch's simulated I/O in workload (c).
pub const IO_WAIT: Duration = Duration::from_millis(10);

pub fn time<F: std::future::Future>(f: F) -> impl std::future::Future<Output = (F::Output, Duration)> {
    async move {
        let t = Instant::now();
        let out = f.await;
        (out, t.elapsed())
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: {} <agent|agent_workflow|tokio|graph-flow|floxide|dagrs> <chain|fanout|io> <size> <reps>", args[0]);
        std::process::exit(2);
    }
    let (system, workload) = (args[1].as_str(), args[2].as_str());
    let size: usize = args[3].parse().expect("size is a number");
    let reps: usize = args[4].parse().expect("reps is a number");

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut times = Vec::with_capacity(reps);
    for i in 0..=reps {
        let r: Timed = rt.block_on(async {
            match (system, workload) {
                ("agent", "chain") => agent_impl::chain_builder(size).await,
                ("agent_workflow", "chain") => agent_impl::chain_workflow(size).await,
                ("agent", "fanout") => agent_impl::fanout(size).await,
                ("agent", "io") => agent_impl::io(size).await,
                ("tokio", "chain") => tokio_impl::chain(size).await,
                ("tokio", "fanout") => tokio_impl::fanout(size).await,
                ("tokio", "io") => tokio_impl::io(size).await,
                ("graph-flow", "chain") => graphflow_impl::chain(size).await,
                ("graph-flow", "fanout") => graphflow_impl::fanout(size).await,
                ("graph-flow", "io") => graphflow_impl::io(size).await,
                ("floxide", "chain") => floxide_impl::chain(size).await,
                ("floxide", "fanout") => floxide_impl::fanout(size).await,
                ("floxide", "io") => floxide_impl::io(size).await,
                ("dagrs", "chain") => dagrs_impl::chain(size).await,
                ("dagrs", "fanout") => dagrs_impl::fanout(size).await,
                ("dagrs", "io") => dagrs_impl::io(size).await,
                _ => Err(format!("unknown system/workload {system}/{workload}")),
            }
        });
        match r {
            Ok(d) if i > 0 => times.push(d),
            Ok(_) => {}
            Err(reason) => {
                println!("{system}\t{workload}\t{size}\tn/a\t{reason}");
                return;
            }
        }
    }
    times.sort();
    let ns = |d: &Duration| d.as_nanos();
    println!(
        "{system}\t{workload}\t{size}\t{}\t{}\t{}",
        ns(&times[times.len() / 2]),
        ns(&times[0]),
        ns(&times[times.len() - 1])
    );
}
