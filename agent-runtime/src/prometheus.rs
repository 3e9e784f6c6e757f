//! [`RunMetrics`] in the Prometheus text exposition format (feature `prometheus`).
//!
//! Hand-written: the format is a few lines per metric, and the `prometheus` crate would
//! bring a registry, global state and protobuf support for a value rendered once per
//! scrape.
//!
//! Invariants:
//! - Every metric family has one `# HELP` and one `# TYPE` line, followed by its samples;
//!   every sample carries an `agent` label, per-state samples a `state` label too.
//! - Label values are escaped (`\\`, `"` and newlines), so any state name renders validly.
//! - Durations are in seconds; a state's duration summary (quantiles 0.5 and 0.99, `_sum`,
//!   `_count`) is present only for states with timings.

use std::fmt::Write;

use crate::result::RunMetrics;

/// A label value, escaped.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The head of a metric family.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

impl RunMetrics {
    /// These metrics in the Prometheus text exposition format (version 0.0.4), labelled with
    /// `agent="<agent>"`: run-wide counters and gauges, per-state counters, and for states
    /// with timings ([`Agent::record_timings`](crate::Agent::record_timings)) a summary of
    /// attempt durations in seconds.
    ///
    /// ```
    /// use agent_runtime::Agent;
    /// use agent_core::{Context, StateResult};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), agent_core::AgentError> {
    /// let mut agent = Agent::new("etl").record_timings(true);
    /// agent.add_state("load", |_ctx: Context| async {
    ///     tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    ///     StateResult::End
    /// });
    /// let text = agent.run().await?.metrics().to_prometheus("etl");
    /// assert!(text.contains("agent_states_completed_total{agent=\"etl\"} 1\n"));
    /// assert!(text.contains("agent_state_duration_seconds{agent=\"etl\",state=\"load\",quantile=\"0.5\"} 0.25\n"));
    /// assert!(text.contains("agent_state_duration_seconds_count{agent=\"etl\",state=\"load\"} 1\n"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn to_prometheus(&self, agent: &str) -> String {
        let agent = escape(agent);
        let mut out = String::new();
        let run: [(&str, &str, &str, f64); 9] = [
            ("agent_states_completed_total", "counter", "State runs that completed.", self.completed as f64),
            ("agent_states_failed_total", "counter", "State runs that failed.", self.failed as f64),
            ("agent_retries_total", "counter", "Retries made.", self.retries as f64),
            ("agent_preemptions_total", "counter", "Attempts preempted and re-queued.", self.preempted as f64),
            ("agent_steps_total", "counter", "States started.", self.steps as f64),
            ("agent_states_running", "gauge", "States running now.", self.running as f64),
            ("agent_states_pending", "gauge", "States not yet run, or waiting.", self.pending as f64),
            (
                "agent_input_wait_seconds_total",
                "counter",
                "Time states waited for human input.",
                self.input_wait.as_secs_f64(),
            ),
            (
                "agent_run_elapsed_seconds",
                "gauge",
                "Time since the run started, or its length.",
                self.elapsed.as_secs_f64(),
            ),
        ];
        for (name, kind, help, value) in run {
            family(&mut out, name, kind, help);
            let _ = writeln!(out, "{name}{{agent=\"{agent}\"}} {value}");
        }
        let states: Vec<String> = self.states.iter().map(|s| escape(&s.name)).collect();
        type Get = fn(&crate::StateMetrics) -> f64;
        let per_state: [(&str, &str, Get); 5] = [
            ("agent_state_completed_total", "Runs of the state that completed.", |s| s.completed as f64),
            ("agent_state_failed_total", "Runs of the state that failed.", |s| s.failed as f64),
            ("agent_state_retries_total", "Retries of the state.", |s| s.retries as f64),
            ("agent_state_preemptions_total", "Attempts of the state preempted.", |s| s.preempted as f64),
            ("agent_state_resource_wait_seconds_total", "Time the state waited for resources.", |s| {
                s.resource_wait.as_secs_f64()
            }),
        ];
        for (name, help, get) in per_state {
            family(&mut out, name, "counter", help);
            for (s, state) in self.states.iter().zip(&states) {
                let _ = writeln!(out, "{name}{{agent=\"{agent}\",state=\"{state}\"}} {}", get(s));
            }
        }
        let timed: Vec<_> =
            self.states.iter().zip(&states).filter_map(|(s, name)| s.timing.as_ref().map(|t| (t, name))).collect();
        if !timed.is_empty() {
            let name = "agent_state_duration_seconds";
            family(&mut out, name, "summary", "How long the state's attempts ran.");
            for (t, state) in &timed {
                let labels = format!("agent=\"{agent}\",state=\"{state}\"");
                let _ = writeln!(out, "{name}{{{labels},quantile=\"0.5\"}} {}", t.p50.as_secs_f64());
                let _ = writeln!(out, "{name}{{{labels},quantile=\"0.99\"}} {}", t.p99.as_secs_f64());
                let _ = writeln!(out, "{name}_sum{{{labels}}} {}", t.sum.as_secs_f64());
                let _ = writeln!(out, "{name}_count{{{labels}}} {}", t.count);
            }
            let name = "agent_state_dependency_wait_seconds_total";
            family(&mut out, name, "counter", "Time the state waited at its dependency gate.");
            for (t, state) in &timed {
                let _ =
                    writeln!(out, "{name}{{agent=\"{agent}\",state=\"{state}\"}} {}", t.dependency_wait.as_secs_f64());
            }
        }
        out
    }
}
