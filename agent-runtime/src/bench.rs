//! Thin, unstable handles for the benchmarks in `bench/benches/` only: the pool's books (one
//! admission decision without the async layer around it) and a program's compilation.
//!
//! Invariant: nothing here is public API; it forwards to `pool::ledger` and
//! `Program::compile` unchanged.

use std::sync::Arc;
use std::time::Duration;

use agent_core::Priority;

use crate::pool::ledger::{AllocId, Config, Decision, Ledger, Request, WaiterId};

/// The books of one pool, driven by hand.
#[derive(Debug)]
pub struct Books {
    ledger: Ledger,
    state: Arc<str>,
}

/// What a request got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ticket {
    /// Granted: the allocation's id.
    Held(u64),
    /// Queued: its place.
    Waiting(u64, u8),
    /// Can never fit.
    Failed,
}

impl Books {
    /// Books of `cpu` CPUs and `gpu` GPUs, with the default window and bypass limit.
    pub fn new(cpu: f64, gpu: f64) -> Self {
        let config = Config {
            totals: [cpu, 1e9, 1e9, 1e9, gpu],
            preemption: false,
            quotas: false,
            window: 32,
            bypass_limit: 64,
        };
        Books { ledger: Ledger::new(config), state: "bench".into() }
    }

    /// Ask for `cpu` and `gpu` at `now`, at `Normal` priority.
    pub fn request(&mut self, cpu: f64, gpu: f64, now: Duration) -> Ticket {
        self.request_with_priority(cpu, gpu, Priority::Normal, now)
    }

    /// Ask for `cpu` and `gpu` at `now`, at `priority`.
    pub fn request_with_priority(&mut self, cpu: f64, gpu: f64, priority: Priority, now: Duration) -> Ticket {
        let req = Request {
            agent: self.state.clone(),
            state: self.state.clone(),
            tags: Arc::from(Vec::new()),
            amounts: [cpu, 0.0, 0.0, 0.0, gpu],
            priority,
            preemptible: false,
        };
        match self.ledger.request(req, now).0 {
            Decision::Granted(g) => Ticket::Held(g.id.0),
            Decision::Queued(w) => Ticket::Waiting(w.seq, w.rank),
            Decision::Failed(_) => Ticket::Failed,
        }
    }

    /// Give back an allocation; returns how many waiters it admitted.
    pub fn release(&mut self, id: u64, now: Duration) -> usize {
        self.ledger.release(AllocId(id), now).granted.len()
    }

    /// Take a queued request back.
    pub fn withdraw(&mut self, seq: u64, rank: u8, now: Duration) -> usize {
        self.ledger.withdraw(WaiterId { rank, seq }, now).granted.len()
    }
}

/// Compile `agent`'s definition into a program, as its next `run()` would, without keeping
/// the result: the cost a long builder chain pays on its first run, timed alone.
pub fn compile(agent: &crate::Agent) -> Result<(), agent_core::AgentError> {
    agent.compile_uncached()
}
