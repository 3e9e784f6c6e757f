//! Progress while a run goes on, read by polling `Agent::metrics` (about every 100 ms).
//!
//! Invariants:
//! - Progress only reads the agent's counters; it never changes the run, and a run goes
//!   on the same whether progress is shown or not.
//! - `Lines` prints one line per change of a state's status or counters seen between two
//!   polls (a state that starts and ends within one poll shows only its end), in
//!   definition order within one poll: plain text for pipes, logs and tests. A resumed
//!   run is seeded with its snapshot's states, so only what it changes is printed.
//! - `Bar` draws an indicatif bar (states completed of states known, and the states
//!   running now) on stderr's terminal; it is used only when stdout is a terminal.

use std::io::Write;

use indicatif::{ProgressBar, ProgressStyle};

use crate::result::{RunMetrics, StateMetrics};
use agent_core::{StateRecord, StateStatus};

/// How often progress reads the run's counters.
pub(super) const POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// How progress is shown.
pub(super) enum Progress {
    /// Plain lines on the command's output.
    Lines { seen: Vec<(String, Option<StateStatus>, u64, u64, u64)> },
    /// A terminal progress bar.
    Bar(ProgressBar),
}

impl Progress {
    pub(super) fn lines() -> Progress {
        Progress::Lines { seen: Vec::new() }
    }

    pub(super) fn bar() -> Progress {
        let bar = ProgressBar::new(0);
        let style = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} states  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.enable_steady_tick(POLL);
        Progress::Bar(bar)
    }

    /// Take the states of a restored run as already shown, so resuming prints only what
    /// the resumed run changes.
    pub(super) fn seed(&mut self, states: &[StateRecord]) {
        if let Progress::Lines { seen } = self {
            for s in states {
                let key = (s.name.clone(), Some(s.status), s.completed.into(), s.failed.into(), s.retries.into());
                seen.push(key);
            }
        }
    }

    /// Show what changed since the last update.
    pub(super) fn update(&mut self, metrics: &RunMetrics, out: &mut dyn Write) -> std::io::Result<()> {
        match self {
            Progress::Bar(bar) => {
                let done = metrics.states.iter().filter(|s| s.completed > 0).count() as u64;
                bar.set_length(metrics.states.len() as u64);
                bar.set_position(done);
                let running: Vec<&str> = metrics
                    .states
                    .iter()
                    .filter(|s| s.status == Some(StateStatus::Running))
                    .map(|s| s.name.as_str())
                    .collect();
                // Three names at most, so the bar stays on one line.
                let message = match running.len() {
                    0 => String::new(),
                    1..=3 => format!("running: {}", running.join(", ")),
                    n => format!("running: {} and {} more", running[..3].join(", "), n - 3),
                };
                bar.set_message(message);
                Ok(())
            }
            Progress::Lines { seen } => {
                for s in &metrics.states {
                    let key = (s.name.clone(), s.status, s.completed, s.failed, s.retries);
                    match seen.iter_mut().find(|k| k.0 == s.name) {
                        Some(old) if *old == key => continue,
                        Some(old) => *old = key,
                        None if s.status == Some(StateStatus::Pending) && s.completed == 0 && s.failed == 0 => {
                            seen.push(key);
                            continue;
                        }
                        None => seen.push(key),
                    }
                    writeln!(out, "{}", line(s))?;
                }
                out.flush()
            }
        }
    }

    /// Print a line of its own (above the bar, if there is one).
    pub(super) fn println(&mut self, line: &str, out: &mut dyn Write) -> std::io::Result<()> {
        match self {
            Progress::Bar(bar) => {
                bar.println(line);
                Ok(())
            }
            _ => writeln!(out, "{line}"),
        }
    }

    /// Remove the bar, if any, so the summary is printed below it.
    pub(super) fn finish(&mut self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

fn line(s: &StateMetrics) -> String {
    let status = s.status.map_or("unknown", |st| st.as_str());
    let mut line = format!("  {:<24} {}", s.name, status.to_lowercase());
    if s.completed > 1 {
        line.push_str(&format!(" ({} runs)", s.completed));
    }
    if s.retries > 0 {
        line.push_str(&format!(" [{} retr{}]", s.retries, if s.retries == 1 { "y" } else { "ies" }));
    }
    line
}
