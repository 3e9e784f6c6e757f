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
//! - A prompt's line is always ended: by the line typed, or, when the request stops waiting
//!   otherwise (answered by code, another process or its timeout; withdrawn), by a note
//!   within `WATCH` of it. Stdin is read one line per prompt by a second thread, so the
//!   prompt thread keeps watching while the read blocks. Prompts go on stderr under one
//!   process-wide lock, and whoever else draws on the terminal (the command line's progress
//!   bar) is told when a prompt opens and when its line ends ([`watch_prompts`]).

use std::io::{BufRead, IsTerminal, Write};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use agent_core::HumanInput;

use super::hub::InputHub;
use super::AnswerError;
use crate::text::shown;

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
    /// The run that asked (request ids are counted per run).
    run: String,
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

    /// Show request `id` of run `run` on the terminal, if the terminal is on.
    pub(super) fn offer(&self, hub: &Arc<InputHub>, run: &str, id: &str, input: &HumanInput) {
        if !self.enabled() {
            return;
        }
        let mut question = format!("[{}] {}", shown(id), shown(input.prompt()));
        match (input.default_value(), input.time_limit()) {
            (Some(d), Some(t)) => question.push_str(&format!(" (default `{}` after {}s)", shown(d), t.as_secs())),
            (None, Some(t)) => question.push_str(&format!(" (within {}s)", t.as_secs())),
            _ => {}
        }
        let job = Job { hub: Arc::downgrade(hub), run: run.to_owned(), id: id.to_owned(), question };
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

/// The note ending the line of a prompt whose request stopped waiting without a line
/// typed: answered by code, another process or its timeout, or withdrawn.
pub(crate) const NO_LONGER_ASKED: &str = "(no longer asked: answered elsewhere, or withdrawn)";

/// How often an open prompt checks that its request still waits.
const WATCH: Duration = Duration::from_millis(100);

/// The id of the request whose prompt is on the terminal, its line not ended yet.
static OPEN: Mutex<Option<String>> = Mutex::new(None);

/// Told `true` when a prompt is about to be shown, `false` once its line is ended.
type PromptWatcher = Arc<dyn Fn(bool) + Send + Sync>;
static WATCHER: RwLock<Option<PromptWatcher>> = RwLock::new(None);

/// Have `watcher` told when a prompt opens on the terminal (`true`, before it is written)
/// and when its line is ended (`false`); `None` stops telling. Called under the prompt
/// lock: the watcher must not print a prompt or end one itself.
#[cfg_attr(not(feature = "cli"), allow(dead_code))]
pub(crate) fn watch_prompts(watcher: Option<PromptWatcher>) {
    *WATCHER.write().unwrap_or_else(PoisonError::into_inner) = watcher;
}

fn tell(open: bool) {
    let watcher = WATCHER.read().unwrap_or_else(PoisonError::into_inner).clone();
    if let Some(watcher) = watcher {
        watcher(open);
    }
}

fn open_line() -> std::sync::MutexGuard<'static, Option<String>> {
    OPEN.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Show `question` as request `id`'s prompt on `err`.
fn show(id: &str, question: &str, err: &mut dyn Write) {
    let mut open = open_line();
    tell(true);
    let _ = write!(err, "{question} > ");
    let _ = err.flush();
    *open = Some(id.to_owned());
}

/// The person ended the prompt's line (Enter): it needs no ending.
fn entered(id: &str) {
    let mut open = open_line();
    if open.as_deref() == Some(id) {
        *open = None;
        tell(false);
    }
}

/// End the line of the prompt on the terminal, if one is open (and, given `id`, if it is
/// that request's), writing `note` on it first. Whether a line was ended.
pub(crate) fn end_prompt(id: Option<&str>, note: &str, err: &mut dyn Write) -> bool {
    let mut open = open_line();
    match open.as_deref() {
        Some(shown) if id.is_none_or(|id| id == shown) => {
            let _ = writeln!(err, "{note}");
            let _ = err.flush();
            *open = None;
            tell(false);
            true
        }
        _ => false,
    }
}

/// One line of stdin, and when it was read; `None` at the end of stdin (or on an error).
type Line = Option<(Instant, String)>;

/// The stdin thread: one line read per message on `wants`.
fn read_lines(wants: Receiver<()>, lines: Sender<Line>) {
    let stdin = std::io::stdin();
    while wants.recv().is_ok() {
        let mut line = String::new();
        let read = match stdin.lock().read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some((Instant::now(), line)),
        };
        let end = read.is_none();
        if lines.send(read).is_err() || end {
            return;
        }
    }
}

/// Where the prompt thread gets lines: a read is asked of the stdin thread only when none
/// is under way, so a line is never read before someone is asked.
struct Lines {
    wants: Sender<()>,
    lines: Receiver<Line>,
    reading: bool,
}

impl Lines {
    fn stdin() -> Option<Lines> {
        let (wants, want_rx) = channel();
        let (line_tx, lines) = channel();
        let started = std::thread::Builder::new()
            .name("agent-human-input-stdin".into())
            .spawn(move || read_lines(want_rx, line_tx));
        match started {
            Ok(_) => Some(Lines { wants, lines, reading: false }),
            Err(e) => {
                tracing::warn!(error = %e, "could not start the terminal input thread");
                None
            }
        }
    }

    /// The next line, waiting at most `WATCH`: `Err(true)` at the end of stdin,
    /// `Err(false)` when none came in time.
    fn next(&mut self) -> Result<(Instant, String), bool> {
        if !self.reading {
            if self.wants.send(()).is_err() {
                return Err(true);
            }
            self.reading = true;
        }
        match self.lines.recv_timeout(WATCH) {
            Ok(Some(line)) => {
                self.reading = false;
                Ok(line)
            }
            Ok(None) | Err(RecvTimeoutError::Disconnected) => Err(true),
            Err(RecvTimeoutError::Timeout) => Err(false),
        }
    }
}

/// What asking one request ended with.
#[derive(Debug, PartialEq, Eq)]
enum Asked {
    /// Answered (here or elsewhere): on to the next request.
    Done,
    /// Stdin ended.
    Closed,
}

/// The reader thread: ask each job's request until it is answered.
fn read(jobs: Receiver<Job>) {
    let Some(mut lines) = Lines::stdin() else { return };
    while let Ok(job) = jobs.recv() {
        let Some(hub) = job.hub.upgrade() else { continue };
        if ask(&hub, &job, &mut lines, &mut std::io::stderr()) == Asked::Closed {
            hub.terminal.close();
            return;
        }
    }
}

/// Ask `job` on `err` until it is answered, by a line of `lines` or elsewhere.
fn ask(hub: &InputHub, job: &Job, lines: &mut Lines, err: &mut dyn Write) -> Asked {
    loop {
        if !hub.is_pending(&job.run, &job.id) {
            return Asked::Done;
        }
        show(&job.id, &job.question, err);
        let shown_at = Instant::now();
        let line = loop {
            match lines.next() {
                Ok((at, line)) if at < shown_at => {
                    // Typed before this prompt showed: meant for one answered elsewhere.
                    let _ = writeln!(err, "(a line typed earlier was not used: {:?})", line.trim());
                }
                Ok((_, line)) => break line,
                Err(true) => {
                    end_prompt(Some(&job.id), "", err);
                    return Asked::Closed;
                }
                Err(false) if !hub.is_pending(&job.run, &job.id) => {
                    end_prompt(Some(&job.id), NO_LONGER_ASKED, err);
                    return Asked::Done;
                }
                Err(false) => {}
            }
        };
        entered(&job.id);
        match hub.answer(Some(&job.run), &job.id, line.trim().to_owned()) {
            Ok(()) => return Asked::Done,
            Err(AnswerError::Rejected { answer, .. }) => {
                let _ = writeln!(err, "[{}] {answer:?} is not accepted; please answer again.", job.id);
            }
            Err(_) => {
                let _ = writeln!(err, "[{}] was answered elsewhere; your answer was not used.", job.id);
                return Asked::Done;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::channel;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use agent_core::HumanInput;

    use super::{ask, Asked, Job, Line, Lines, NO_LONGER_ASKED, OPEN};
    use crate::human::hub::{InputHub, Opened};

    /// `OPEN` is process-wide: these tests take turns.
    static SERIAL: Mutex<()> = Mutex::new(());

    /// A hub with request `input-1` of run `r` waiting (its receiver is returned, to keep it
    /// waiting), and the job asking it.
    fn waiting() -> (Arc<InputHub>, Job, impl Drop) {
        let hub = InputHub::new();
        hub.set_terminal(false);
        let Opened::Waiting { rx, record, .. } = hub.open(&"r".into(), &HumanInput::new("go on?"), None) else {
            panic!("a new request waits");
        };
        let job = Job {
            hub: Arc::downgrade(&hub),
            run: record.run_id,
            id: record.request.request_id,
            question: "[input-1] go on?".into(),
        };
        (hub, job, rx)
    }

    /// Lines from the returned sender, as the stdin thread would send them (its receiver of
    /// requests for lines is returned too, to keep it open).
    fn lines() -> (Lines, std::sync::mpsc::Sender<Line>, std::sync::mpsc::Receiver<()>) {
        let (wants, wanted) = channel();
        let (tx, lines) = channel();
        (Lines { wants, lines, reading: true }, tx, wanted)
    }

    fn prompt_open() -> bool {
        OPEN.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    fn until_prompt_open() {
        for _ in 0..1000 {
            if prompt_open() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("no prompt was shown");
    }

    #[test]
    fn a_prompt_answered_elsewhere_has_its_line_ended() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let (hub, job, _rx) = waiting();
        let (mut lines, _tx, _wanted) = lines();
        let asker = {
            let hub = hub.clone();
            std::thread::spawn(move || {
                let mut err = Vec::new();
                let asked = ask(&hub, &job, &mut lines, &mut err);
                (asked, String::from_utf8(err).unwrap())
            })
        };
        until_prompt_open();
        hub.answer(Some("r"), "input-1", "yes".into()).unwrap(); // by code, not the terminal
        let (asked, err) = asker.join().unwrap();
        assert_eq!(asked, Asked::Done);
        assert_eq!(err, format!("[input-1] go on? > {NO_LONGER_ASKED}\n"));
        assert!(!prompt_open());
    }

    #[test]
    fn a_line_typed_answers_and_one_typed_before_the_prompt_is_dropped() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let (hub, job, _rx) = waiting();
        let (mut lines, tx, _wanted) = lines();
        tx.send(Some((Instant::now() - Duration::from_secs(1), "stale\n".into()))).unwrap();
        let asker = {
            let hub = hub.clone();
            std::thread::spawn(move || {
                let mut err = Vec::new();
                let asked = ask(&hub, &job, &mut lines, &mut err);
                (asked, String::from_utf8(err).unwrap())
            })
        };
        until_prompt_open();
        std::thread::sleep(Duration::from_millis(5));
        tx.send(Some((Instant::now(), "fresh\n".into()))).unwrap();
        let (asked, err) = asker.join().unwrap();
        assert_eq!(asked, Asked::Done);
        assert_eq!(err, "[input-1] go on? > (a line typed earlier was not used: \"stale\")\n");
        assert_eq!(hub.records("r")[0].answer.as_deref(), Some("fresh"));
        assert!(!prompt_open());
        drop(tx);
    }

    #[test]
    fn the_end_of_stdin_ends_the_prompt_line() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let (hub, job, _rx) = waiting();
        let (mut lines, tx, _wanted) = lines();
        tx.send(None).unwrap();
        let mut err = Vec::new();
        assert_eq!(ask(&hub, &job, &mut lines, &mut err), Asked::Closed);
        assert_eq!(String::from_utf8(err).unwrap(), "[input-1] go on? > \n");
        assert!(!prompt_open());
    }
}
