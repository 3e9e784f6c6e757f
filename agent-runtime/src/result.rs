//! What a finished run gives back.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use agent_core::Context;

use crate::run::Run;
use crate::status::{AgentStatus, StateStatus};

/// The outcome of a run that ended without error.
#[derive(Clone, Debug)]
pub struct AgentResult {
    status: AgentStatus,
    context: Context,
    completed: Vec<String>,
    run_id: String,
    metrics: RunMetrics,
}

impl AgentResult {
    pub(crate) fn new(run: &Run) -> AgentResult {
        AgentResult {
            status: run.status(),
            context: run.ctx.clone(),
            completed: run.completed_states(),
            run_id: run.run_id.clone(),
            metrics: RunMetrics::of(run),
        }
    }

    /// How the run ended.
    pub fn status(&self) -> AgentStatus {
        self.status
    }

    /// The final context, read with the same getters as inside states.
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// Every state that completed at least once, in the order each first completed.
    pub fn completed_states(&self) -> &[String] {
        &self.completed
    }

    /// The run's id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The run's counters.
    pub fn metrics(&self) -> &RunMetrics {
        &self.metrics
    }
}

/// Counters of one state in a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateMetrics {
    /// The state's name.
    pub name: String,
    /// Its status now.
    pub status: Option<StateStatus>,
    /// Runs that completed.
    pub completed: u64,
    /// Runs that failed.
    pub failed: u64,
}

/// Counters of a run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunMetrics {
    /// State runs that completed (a state in a loop counts each time).
    pub completed: u64,
    /// State runs that failed.
    pub failed: u64,
    /// States running now.
    pub running: u64,
    /// States not yet run, or waiting.
    pub pending: u64,
    /// Retries made.
    pub retries: u64,
    /// States started, counting every run of every state.
    pub steps: u64,
    /// Time since the run started, or its whole length once over.
    pub elapsed: Duration,
    /// Per state, in definition order.
    pub states: Vec<StateMetrics>,
}

impl RunMetrics {
    pub(crate) fn of(run: &Run) -> RunMetrics {
        let mut m = RunMetrics { steps: run.steps.load(Relaxed), elapsed: run.elapsed(), ..RunMetrics::default() };
        for (i, c) in run.states.iter().enumerate() {
            let status = StateStatus::from_u8(c.status.load(Relaxed));
            let s = StateMetrics {
                name: run.program.states[i].name.to_string(),
                status: Some(status),
                completed: c.completed.load(Relaxed) as u64,
                failed: c.failed.load(Relaxed) as u64,
            };
            m.completed += s.completed;
            m.failed += s.failed;
            match status {
                StateStatus::Running => m.running += 1,
                StateStatus::Pending | StateStatus::Ready | StateStatus::Blocked => m.pending += 1,
                _ => {}
            }
            m.states.push(s);
        }
        m
    }
}
