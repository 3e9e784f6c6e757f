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
//!   running now) on stderr's terminal; it is used only when stdout is a terminal. It is
//!   drawn from the first update of a run, never before (a command that runs nothing draws
//!   none). While a prompt for human input is open on the terminal the bar is cleared and
//!   not drawn, and lines for the terminal wait; they are printed once the prompt's line
//!   has ended, and the bar comes back at the next update. Lines go above the bar
//!   (`ProgressBar::println`), so no copy of the bar is ever left on the screen.
//! - Every name printed goes through `text::shown`.

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use crate::result::{RunMetrics, StateMetrics};
use crate::text::shown;
use agent_core::{StateRecord, StateStatus};

/// How often progress reads the run's counters.
pub(super) const POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// How progress is shown.
pub(super) enum Progress {
    /// Plain lines on the command's output.
    Lines { seen: Vec<(String, Option<StateStatus>, u64, u64, u64)> },
    /// A terminal progress bar.
    Bar(Arc<Mutex<Slot>>),
}

/// The bar, shared with the prompt watcher (the terminal's prompt thread).
pub(super) struct Slot {
    /// The bar on the screen, if one is.
    bar: Option<ProgressBar>,
    /// A prompt for human input is open on the terminal: draw nothing.
    prompting: bool,
    /// Lines to print once the prompt's line has ended.
    waiting: Vec<String>,
    /// When the first bar was drawn, for the elapsed time of the ones after it.
    started: Option<Instant>,
}

fn lock(slot: &Mutex<Slot>) -> std::sync::MutexGuard<'_, Slot> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Slot {
    /// Draw `pos` of `len` states and `message`: on the bar on the screen, or on a new one
    /// (set before its first frame, so no frame shows a length not yet known).
    fn draw(&mut self, len: u64, pos: u64, message: String) {
        if let Some(bar) = &self.bar {
            bar.set_length(len);
            bar.set_position(pos);
            bar.set_message(message);
            return;
        }
        let started = *self.started.get_or_insert_with(Instant::now);
        let bar = ProgressBar::new(len).with_elapsed(started.elapsed()).with_position(pos).with_message(message);
        let style = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} states  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.enable_steady_tick(POLL);
        self.bar = Some(bar);
    }

    /// Clear the bar off the screen.
    fn clear(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Progress {
    pub(super) fn lines() -> Progress {
        Progress::Lines { seen: Vec::new() }
    }

    /// A bar on stderr, drawn from the first update; it steps aside for prompts for human
    /// input on the terminal while this `Progress` lives.
    pub(super) fn bar() -> Progress {
        let slot = Arc::new(Mutex::new(Slot { bar: None, prompting: false, waiting: Vec::new(), started: None }));
        let watched = Arc::downgrade(&slot);
        crate::human::watch_prompts(Some(Arc::new(move |open: bool| {
            let Some(slot) = watched.upgrade() else { return };
            let mut slot = lock(&slot);
            slot.prompting = open;
            if open {
                slot.clear();
            } else {
                for line in std::mem::take(&mut slot.waiting) {
                    eprintln!("{line}");
                }
            }
        })));
        Progress::Bar(slot)
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
            Progress::Bar(slot) => {
                let mut slot = lock(slot);
                if slot.prompting {
                    return Ok(());
                }
                let done = metrics.states.iter().filter(|s| s.completed > 0).count() as u64;
                let running: Vec<String> = metrics
                    .states
                    .iter()
                    .filter(|s| s.status == Some(StateStatus::Running))
                    .map(|s| shown(&s.name).into_owned())
                    .collect();
                // Three names at most, so the bar stays on one line.
                let message = match running.len() {
                    0 => String::new(),
                    1..=3 => format!("running: {}", running.join(", ")),
                    n => format!("running: {} and {} more", running[..3].join(", "), n - 3),
                };
                slot.draw(metrics.states.len() as u64, done, message);
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

    /// Print a line of its own: above the bar if there is one, after the prompt if one is
    /// open. The caller escapes what it holds (see `text::shown`).
    pub(super) fn println(&mut self, line: &str, out: &mut dyn Write) -> std::io::Result<()> {
        match self {
            Progress::Bar(slot) => {
                let mut slot = lock(slot);
                if slot.prompting {
                    slot.waiting.push(line.to_owned());
                } else {
                    match &slot.bar {
                        // A hidden bar (stderr is no terminal) prints nothing.
                        Some(bar) if !bar.is_hidden() => bar.println(line),
                        _ => eprintln!("{line}"),
                    }
                }
                Ok(())
            }
            Progress::Lines { .. } => writeln!(out, "{line}"),
        }
    }

    /// Whether a prompt for human input is open on the terminal (it shows the request).
    pub(super) fn prompting(&self) -> bool {
        match self {
            Progress::Bar(slot) => lock(slot).prompting,
            Progress::Lines { .. } => false,
        }
    }

    /// Remove the bar, if any, and end an open prompt's line (with `note`), so what follows
    /// is printed on lines of its own.
    pub(super) fn finish(&mut self, note: &str) {
        if let Progress::Bar(slot) = self {
            crate::human::end_prompt(None, note, &mut std::io::stderr());
            let mut slot = lock(slot);
            slot.clear();
            for line in std::mem::take(&mut slot.waiting) {
                eprintln!("{line}");
            }
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Progress::Bar(_) = self {
            self.finish("");
            crate::human::watch_prompts(None);
        }
    }
}

fn line(s: &StateMetrics) -> String {
    let status = s.status.map_or("unknown", |st| st.as_str());
    let mut line = format!("  {:<24} {}", shown(&s.name), status.to_lowercase());
    if s.completed > 1 {
        line.push_str(&format!(" ({} runs)", s.completed));
    }
    if s.retries > 0 {
        line.push_str(&format!(" [{} retr{}]", s.retries, if s.retries == 1 { "y" } else { "ies" }));
    }
    line
}
