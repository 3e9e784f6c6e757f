//! The terminal provider: requests are printed on stderr and answered by a line on stdin.
//!
//! Invariants:
//! - On by default only when stdin is a terminal; `Agent::input_from_terminal` switches it
//!   (on with a piped stdin reads answers from the pipe, one line each).
//! - One reader thread per hub, started with the first request it shows, asks one request
//!   at a time in request order. It is a plain thread, not tokio's blocking pool, so a
//!   thread blocked reading stdin never delays a runtime's shutdown; it ends when the hub is
//!   dropped or stdin reaches its end (the terminal is then off for the hub).
//! - A request answered elsewhere before its turn is skipped; a line typed for a request
//!   answered elsewhere meanwhile is dropped with a note. A line the validator refuses is
//!   reported and the request asked again.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

use agent_core::HumanInput;

use super::hub::InputHub;
use super::AnswerError;

const AUTO: u8 = 0;
const ON: u8 = 1;
const OFF: u8 = 2;
/// Stdin ended: never on again for this hub.
const CLOSED: u8 = 3;

/// Whether the terminal answers requests, and the reader thread's queue once started.
pub(crate) struct Terminal {
    mode: AtomicU8,
    queue: Mutex<Option<Sender<Job>>>,
}

/// A request for the reader thread.
struct Job {
    hub: Weak<InputHub>,
    id: String,
    question: String,
}

fn stdin_is_terminal() -> bool {
    static IS: OnceLock<bool> = OnceLock::new();
    *IS.get_or_init(|| std::io::stdin().is_terminal())
}

impl Terminal {
    pub(super) fn new() -> Self {
        Terminal { mode: AtomicU8::new(AUTO), queue: Mutex::new(None) }
    }

    pub(super) fn set(&self, on: bool) {
        let _ = self
            .mode
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |m| (m != CLOSED).then_some(if on { ON } else { OFF }));
    }

    fn enabled(&self) -> bool {
        match self.mode.load(Ordering::Acquire) {
            AUTO => stdin_is_terminal(),
            ON => true,
            _ => false,
        }
    }

    /// Show request `id` on the terminal, if the terminal is on.
    pub(super) fn offer(&self, hub: &Arc<InputHub>, id: &str, input: &HumanInput) {
        if !self.enabled() {
            return;
        }
        let mut question = format!("[{id}] {}", input.prompt());
        match (input.default_value(), input.time_limit()) {
            (Some(d), Some(t)) => question.push_str(&format!(" (default `{d}` after {}s)", t.as_secs())),
            (None, Some(t)) => question.push_str(&format!(" (within {}s)", t.as_secs())),
            _ => {}
        }
        let job = Job { hub: Arc::downgrade(hub), id: id.to_owned(), question };
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if queue.is_none() {
            let (tx, rx) = channel();
            let started = std::thread::Builder::new().name("agent-human-input".into()).spawn(move || read(rx));
            match started {
                Ok(_) => *queue = Some(tx),
                Err(e) => {
                    tracing::warn!(error = %e, "could not start the terminal input thread");
                    return;
                }
            }
        }
        if let Some(tx) = &*queue {
            let _ = tx.send(job);
        }
    }

    /// Stdin has ended: stop offering requests.
    fn close(&self) {
        self.mode.store(CLOSED, Ordering::Release);
        *self.queue.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// The reader thread: ask each job's request until it is answered.
fn read(jobs: Receiver<Job>) {
    let stdin = std::io::stdin();
    while let Ok(job) = jobs.recv() {
        let Some(hub) = job.hub.upgrade() else { continue };
        loop {
            if !hub.is_pending(&job.id) {
                break;
            }
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "{} > ", job.question);
            let _ = err.flush();
            drop(err);
            let mut line = String::new();
            match stdin.lock().read_line(&mut line) {
                Ok(0) | Err(_) => {
                    hub.terminal.close();
                    return;
                }
                Ok(_) => {}
            }
            match hub.answer(&job.id, line.trim().to_owned()) {
                Ok(()) => break,
                Err(AnswerError::Rejected { answer, .. }) => {
                    eprintln!("[{}] `{answer}` is not accepted; please answer again.", job.id);
                }
                Err(_) => {
                    eprintln!("[{}] was answered elsewhere; your answer was not used.", job.id);
                    break;
                }
            }
        }
    }
}
