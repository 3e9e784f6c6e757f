//! The input hub: every request for human input of one agent's runs, by run, in request order.
//!
//! Invariants:
//! - One lock guards the books; it is never held across an `.await`, nor while a validator
//!   (user code) runs.
//! - An entry is pending exactly while it has a `Waiter` (a state's future waiting on it).
//!   Each waiter has a token unique in the process; every change a waiting future makes
//!   names its token, so a stale future (dropped, timed out, answered meanwhile) changes
//!   nothing.
//! - An answer reaches a waiter through a oneshot sent under the lock, together with the
//!   record's update: a request is answered once, by whoever takes its waiter first (code,
//!   the terminal, the store poll or the timeout).
//! - Entries made in this process are `claimed`; restored ones (from a checkpoint or the
//!   store) are not until a request of the same run and prompt re-attaches to them, oldest
//!   first.
//! - When a run first asks, the books of other runs that are over (not paused) with nobody
//!   waiting are dropped, so an agent run many times keeps only what its runs still going
//!   and its current one can still need. A book is over from `ended` until its run asks or
//!   is restored again.
//! - Request ids (`input-N`) are unique within one run; runs of one agent going on at once
//!   each count their own. Answering names the run ([`InputHub::answer`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use agent_core::{HumanInput, InputRequestRecord};
use rustc_hash::FxHashMap;
use tokio::sync::oneshot;

use super::terminal::Terminal;
use super::{AnswerError, PendingInput};
pub(super) use crate::store::now_ms;
use crate::store::{time_of, CheckpointStore, InputRecord};

/// The requests of every run of one agent, and who may answer them.
pub(crate) struct InputHub {
    books: Mutex<FxHashMap<Arc<str>, Book>>,
    store: RwLock<Option<Arc<dyn CheckpointStore>>>,
    pub(super) terminal: Terminal,
    tokens: AtomicU64,
}

/// One run's requests.
#[derive(Default)]
struct Book {
    /// The number of the run's next request (`input-{next}`).
    next: u64,
    entries: Vec<Entry>,
    /// Whether the store's records of this run have been read.
    loaded: bool,
    /// The run is over (see the module docs).
    ended: bool,
}

struct Entry {
    record: InputRecord,
    /// Made (or re-attached to) in this process; never re-attached to again.
    claimed: bool,
    waiter: Option<Waiter>,
}

/// The state waiting on a request.
struct Waiter {
    token: u64,
    input: HumanInput,
    tx: oneshot::Sender<String>,
}

/// What a request found when it was made.
pub(super) enum Opened {
    /// A restored record that already holds an acceptable answer.
    Answered(String),
    /// A request to wait on: new, or a restored one re-attached to.
    Waiting {
        token: u64,
        rx: oneshot::Receiver<String>,
        record: InputRecord,
        /// How much of the timeout has passed already (non-zero only when re-attached).
        elapsed: Duration,
    },
}

fn ms_u64(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The number in an id `input-N`.
fn number(id: &str) -> Option<u64> {
    id.strip_prefix("input-")?.parse().ok()
}

impl InputHub {
    /// A hub with no requests, no store, and the terminal on when stdin is a terminal.
    pub(crate) fn new() -> Arc<InputHub> {
        Arc::new(InputHub {
            books: Mutex::default(),
            store: RwLock::new(None),
            terminal: Terminal::new(),
            tokens: AtomicU64::new(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, FxHashMap<Arc<str>, Book>> {
        self.books.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A broker for run `id`, with no `Run` behind it (the hub's own tests).
    #[cfg(test)]
    pub(crate) fn broker_for(self: &Arc<Self>, id: &str) -> Arc<dyn agent_core::__private::InputBroker> {
        Arc::new(super::wait::RunlessBroker { hub: self.clone(), id: id.into() })
    }

    /// Forget the runs other than `run` that are over and nobody waits on (when `run` first
    /// asks).
    pub(crate) fn forget_others(&self, run: &Arc<str>) {
        self.lock().retain(|r, book| r == run || !book.ended || book.entries.iter().any(|e| e.waiter.is_some()));
    }

    /// Run `run` is over (it completed, failed, was cancelled or timed out): its book may be
    /// forgotten once another run asks.
    pub(crate) fn ended(&self, run: &str) {
        if let Some(book) = self.lock().get_mut(run) {
            book.ended = true;
        }
    }

    /// Write requests and answers to `store`, and read answers given by other processes
    /// from it. Called by the agent when it gets a store.
    pub(crate) fn with_store(&self, store: Arc<dyn CheckpointStore>) {
        *self.store.write().unwrap_or_else(PoisonError::into_inner) = Some(store);
    }

    pub(super) fn store(&self) -> Option<Arc<dyn CheckpointStore>> {
        self.store.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Whether the terminal answers requests (see `Agent::input_from_terminal`).
    pub(crate) fn set_terminal(&self, on: bool) {
        self.terminal.set(on);
    }

    // ----- what users see ---------------------------------------------------------------

    /// The requests states of run `run` are waiting on (of every run if `None`), in request
    /// order.
    pub(crate) fn pending(&self, run: Option<&str>) -> Vec<PendingInput> {
        let books = self.lock();
        let books = books.iter().filter(|(r, _)| run.is_none_or(|run| ***r == *run));
        let mut out: Vec<PendingInput> = (books.flat_map(|(_, b)| &b.entries))
            .filter_map(|e| {
                let w = e.waiter.as_ref()?;
                let r = &e.record;
                Some(PendingInput {
                    id: r.request_id.clone(),
                    prompt: r.prompt.clone(),
                    run_id: r.run_id.clone(),
                    requested_at: time_of(r.requested_ms),
                    timeout: w.input.time_limit(),
                    default: w.input.default_value().map(str::to_owned),
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.run_id, number(&a.id)).cmp(&(&b.run_id, number(&b.id))));
        out
    }

    /// Whether a state of run `run` waits on request `id`.
    pub(super) fn is_pending(&self, run: &str, id: &str) -> bool {
        let books = self.lock();
        let entries = books.get(run).map(|b| &b.entries[..]).unwrap_or_default();
        entries.iter().any(|e| e.waiter.is_some() && e.record.request_id == id)
    }

    /// Answer the pending request `id` of run `run` (of any run if `None`: the first found)
    /// with `value`, if its validator accepts it.
    pub(crate) fn answer(&self, run: Option<&str>, id: &str, value: String) -> Result<(), AnswerError> {
        let unknown = || AnswerError::UnknownRequest { id: id.to_owned() };
        let (input, token) = {
            let books = self.lock();
            let books = books.iter().filter(|(r, _)| run.is_none_or(|run| ***r == *run));
            let waiter = (books.flat_map(|(_, b)| &b.entries))
                .filter(|e| e.record.request_id == id)
                .find_map(|e| e.waiter.as_ref())
                .ok_or_else(unknown)?;
            (waiter.input.clone(), waiter.token)
        };
        // The validator is user code: run it without the lock.
        if !input.accepts(&value) {
            return Err(AnswerError::Rejected { id: id.to_owned(), prompt: input.prompt().to_owned(), answer: value });
        }
        self.settle(token, value, false).map(|_| ()).ok_or_else(unknown)
    }

    /// Every request of run `run_id`, answered or not, in request order.
    pub(crate) fn records(&self, run_id: &str) -> Vec<InputRecord> {
        self.lock().get(run_id).map(|b| b.entries.iter().map(|e| e.record.clone()).collect()).unwrap_or_default()
    }

    /// The records a checkpoint carries for run `run_id` (every request, answered or not).
    pub(crate) fn snapshot(&self, run_id: &str) -> Vec<InputRecord> {
        self.records(run_id)
    }

    /// Take back records from a checkpoint. A record whose run and id are known already
    /// replaces the one held, unless a state is waiting on it. Restored records wait for a
    /// request of the same run and prompt to re-attach to them.
    pub(crate) fn restore(&self, records: Vec<InputRecord>) {
        let mut books = self.lock();
        for record in records {
            let book = books.entry(record.run_id.as_str().into()).or_default();
            book.ended = false;
            merge(book, record, true);
        }
    }

    // ----- for waiting requests ---------------------------------------------------------

    /// Whether the store's records of `run` are still to be read.
    pub(super) fn needs_load(&self, run: &str) -> bool {
        !self.lock().get(run).is_some_and(|b| b.loaded)
    }

    /// Merge what the store holds for `run`: records not known here join as restored ones.
    pub(super) fn merge_loaded(&self, run: &Arc<str>, records: Vec<InputRecord>) {
        let mut books = self.lock();
        let book = books.entry(run.clone()).or_default();
        book.loaded = true;
        for record in records.into_iter().filter(|r| *r.run_id == **run) {
            merge(book, record, false);
        }
    }

    /// Ask `input` in `run`: re-attach to a restored record of the same prompt, or open a
    /// new request.
    pub(super) fn open(&self, run: &Arc<str>, input: &HumanInput, state: Option<String>) -> Opened {
        let now = now_ms();
        let token = self.tokens.fetch_add(1, Ordering::Relaxed);
        let mut books = self.lock();
        let book = books.entry(run.clone()).or_default();
        book.ended = false;
        for entry in book.entries.iter_mut().filter(|e| !e.claimed && e.record.prompt == input.prompt()) {
            entry.claimed = true;
            match &entry.record.answer {
                // Answered before the restart: the answer stands if this request accepts it.
                Some(answer) if entry.record.defaulted || input.accepts(answer) => {
                    return Opened::Answered(answer.clone());
                }
                Some(answer) => {
                    tracing::warn!(id = %entry.record.request_id, answer = %answer, "a restored answer is rejected by the validator; asking again");
                }
                None => {
                    let (tx, rx) = oneshot::channel();
                    entry.record.timeout_ms = input.time_limit().map(ms_u64);
                    entry.record.default = input.default_value().map(str::to_owned);
                    entry.waiter = Some(Waiter { token, input: input.clone(), tx });
                    let elapsed = Duration::from_millis(u64::try_from(now - entry.record.requested_ms).unwrap_or(0));
                    return Opened::Waiting { token, rx, record: entry.record.clone(), elapsed };
                }
            }
        }
        let (tx, rx) = oneshot::channel();
        let record = new_record(book, run, input, state, now);
        book.entries.push(Entry {
            record: record.clone(),
            claimed: true,
            waiter: Some(Waiter { token, input: input.clone(), tx }),
        });
        Opened::Waiting { token, rx, record, elapsed: Duration::ZERO }
    }

    /// Answer the request `token` waits on (`defaulted`: with its default). Returns the
    /// run and id answered, `None` if nobody waits with this token any more.
    pub(super) fn settle(&self, token: u64, answer: String, defaulted: bool) -> Option<(String, String)> {
        let mut books = self.lock();
        let entry = find(&mut books, token)?;
        let waiter = entry.waiter.take()?;
        // Sent under the lock: nobody else can take this waiter in between.
        let sent = waiter.tx.send(answer.clone()).is_ok();
        if !sent && !defaulted {
            return None;
        }
        let r = &mut entry.record;
        r.answer = Some(answer);
        r.answered_ms = Some(now_ms());
        r.defaulted = defaulted;
        Some((r.run_id.clone(), r.request_id.clone()))
    }

    /// Replace the answer recorded for `run`/`id` with the store's (whose first answer wins).
    pub(super) fn overwrite(&self, run: &str, id: &str, answer: &str, defaulted: bool, at_ms: Option<i64>) {
        let mut books = self.lock();
        let entry = books.get_mut(run).and_then(|b| b.entries.iter_mut().find(|e| e.record.request_id == id));
        if let Some(e) = entry {
            e.record.answer = Some(answer.to_owned());
            e.record.defaulted = defaulted;
            e.record.answered_ms = at_ms.or(e.record.answered_ms);
        }
    }

    /// Stop waiting on `token`'s request without an answer (its timeout passed with no
    /// default). `false` if it was answered meanwhile.
    pub(super) fn expire(&self, token: u64) -> bool {
        let mut books = self.lock();
        find(&mut books, token).and_then(|e| e.waiter.take()).is_some()
    }

    /// Ask `token`'s request again under a new id (another process gave an answer the
    /// validator refuses; the store keeps it, so the old id cannot be answered again). The
    /// new request keeps the old one's `requested_ms`, so its timeout is unchanged.
    pub(super) fn reask(&self, token: u64, refused: &str) -> Option<InputRecord> {
        let mut books = self.lock();
        let (run, waiter, mut record) = {
            let entry = find(&mut books, token)?;
            let waiter = entry.waiter.take()?;
            entry.record.answer = Some(refused.to_owned());
            entry.record.answered_ms = Some(now_ms());
            (entry.record.run_id.clone(), waiter, entry.record.clone())
        };
        let book = books.get_mut(run.as_str())?;
        book.next += 1;
        record.request_id = format!("input-{}", book.next);
        record.answer = None;
        record.answered_ms = None;
        record.defaulted = false;
        book.entries.push(Entry { record: record.clone(), claimed: true, waiter: Some(waiter) });
        Some(record)
    }

    /// The waiting future of `token` is gone: its request is no longer pending.
    pub(super) fn withdraw(&self, token: u64) {
        let mut books = self.lock();
        if let Some(e) = find(&mut books, token) {
            e.waiter = None;
        }
    }
}

/// The entry a waiter with `token` waits on.
fn find(books: &mut FxHashMap<Arc<str>, Book>, token: u64) -> Option<&mut Entry> {
    (books.values_mut().flat_map(|b| b.entries.iter_mut()))
        .find(|e| e.waiter.as_ref().is_some_and(|w| w.token == token))
}

/// A new request of `book`'s run.
fn new_record(book: &mut Book, run: &str, input: &HumanInput, state: Option<String>, now: i64) -> InputRecord {
    book.next += 1;
    let mut request = InputRequestRecord::new(format!("input-{}", book.next), input.prompt().to_owned(), now);
    request.state = state;
    request.timeout_ms = input.time_limit().map(ms_u64);
    request.default = input.default_value().map(str::to_owned);
    InputRecord { run_id: run.to_owned(), request }
}

/// Add a restored `record` to `book` as unclaimed; one already known is replaced only if
/// `replace` and nobody waits on it.
fn merge(book: &mut Book, record: InputRecord, replace: bool) {
    if let Some(n) = number(&record.request_id) {
        book.next = book.next.max(n);
    }
    match book.entries.iter_mut().find(|e| e.record.request_id == record.request_id) {
        Some(e) if replace && e.waiter.is_none() => {
            e.record = record;
            e.claimed = false;
        }
        Some(_) => {}
        None => book.entries.push(Entry { record, claimed: false, waiter: None }),
    }
}
