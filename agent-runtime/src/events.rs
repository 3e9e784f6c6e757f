//! Typed events of a run, for anyone watching: [`Agent::events`](crate::Agent::events).
//!
//! Invariants:
//! - One `EventHub` per agent: a `tokio::sync::broadcast` channel and a count of live
//!   [`EventStream`]s. Every run of the agent holds the hub; so does the agent.
//! - Events are built only while someone is subscribed: each place that would emit one
//!   first makes one relaxed load of the subscriber count (`EventHub::active`), and with no
//!   subscriber builds nothing, reads no clock and allocates nothing.
//! - Sending never waits: the channel is bounded ([`CAPACITY`]) and a consumer that falls
//!   behind loses the oldest events, which it learns through an [`EventKind::Lagged`] item;
//!   the run never blocks on a slow or idle consumer.
//! - Each stream sees every event sent after it subscribed, in the order sent. Events of one
//!   branch are sent in the order they happened; events of parallel branches interleave.
//! - A stream ends (`None`) once the agent, every clone of it, and every result of its runs
//!   are dropped; while any of them lives, it waits for the next event.
//! - A stream of one run ([`RunHandle::events`](crate::RunHandle::events)) skips the other
//!   runs' events and ends after its run's last `RunFinished` (one whose status is final,
//!   not `Paused`); made after that was sent, it ends at once. It never misses that event
//!   nor waits forever for it: it is counted as a subscriber (`SeqCst`) before it looks
//!   whether the run is over (`SeqCst`), and a run looks for subscribers (`SeqCst`) after it
//!   is over, so either the run sees it and sends it the event, or it sees the run over and
//!   waits only until the run says it has told its subscribers (see `run::control`).

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, OnceLock};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, SystemTime};

use agent_core::AgentStatus;
use tokio::sync::broadcast::{self, error::RecvError};

use crate::run::Run;
use tokio_util::sync::ReusableBoxFuture;

/// How many events a consumer may fall behind before it loses the oldest.
pub const CAPACITY: usize = 4096;

/// Something that happened in a run, as an [`EventStream`] from
/// [`Agent::events`](crate::Agent::events) delivers it.
///
/// ```
/// use agent_core::{AgentStatus, Context, StateResult};
/// use agent_runtime::{Agent, EventKind};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), agent_core::AgentError> {
/// let mut agent = Agent::new("watched");
/// agent.add_state("only", |_ctx: Context| async { StateResult::End });
/// let mut events = agent.events(); // subscribe before the run to see all of it
/// let result = agent.run().await?;
///
/// let mut seen = Vec::new();
/// while let Some(event) = events.next().await {
///     assert_eq!(&*event.run_id, result.run_id());
///     let last = matches!(event.kind, EventKind::RunFinished { .. });
///     seen.push(event.kind);
///     if last {
///         break;
///     }
/// }
/// assert_eq!(seen.first(), Some(&EventKind::RunStarted));
/// assert!(matches!(&seen[1], EventKind::StateStarted { state, attempt: 1 } if state == "only"));
/// assert_eq!(seen.last(), Some(&EventKind::RunFinished { status: AgentStatus::Completed }));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// The run it happened in (for [`EventKind::Lagged`], the run of the last event this
    /// stream received before, or empty if none).
    pub run_id: Arc<str>,
    /// When it happened (wall clock).
    pub at: SystemTime,
    /// What happened.
    pub kind: EventKind,
}

/// What happened: one variant per change of a run or of a state.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum EventKind {
    /// The run started (or a restored or resumed run went on).
    RunStarted,
    /// An attempt of `state` started (its body is about to run).
    StateStarted {
        /// The state.
        state: String,
        /// 1 for the first attempt, 2 for the first retry, ...
        attempt: u32,
    },
    /// `state` completed and its successors are about to start.
    StateCompleted {
        /// The state.
        state: String,
        /// How long its last attempt ran, when timings are recorded
        /// ([`Agent::record_timings`](crate::Agent::record_timings)).
        duration: Option<Duration>,
    },
    /// An attempt of `state` failed (returned `Err`, panicked or timed out).
    StateFailed {
        /// The state.
        state: String,
        /// The attempt that failed.
        attempt: u32,
        /// The error, displayed.
        error: String,
    },
    /// `state` will be tried again after `delay`.
    Retrying {
        /// The state.
        state: String,
        /// The attempt about to be made.
        attempt: u32,
        /// The wait before it.
        delay: Duration,
    },
    /// An attempt of `state` passed its timeout.
    TimedOut {
        /// The state.
        state: String,
    },
    /// An attempt of `state` was preempted by more urgent work and re-queued, or left a
    /// durable wait because the run pauses (it runs again when the run goes on).
    Preempted {
        /// The state.
        state: String,
    },
    /// `state` asks the pool for its resources (and waits until they are free).
    WaitingForResources {
        /// The state.
        state: String,
    },
    /// `state` reaches its dependency gate (and waits until its dependencies allow it).
    WaitingForDependencies {
        /// The state.
        state: String,
    },
    /// A state asked a person and waits for the answer.
    WaitingForInput {
        /// The state, when known.
        state: Option<String>,
        /// The request's id (`input-1`, ...).
        request_id: String,
    },
    /// A request for human input was settled.
    InputAnswered {
        /// The request's id.
        request_id: String,
        /// Whether its default was taken at the timeout.
        defaulted: bool,
    },
    /// A state sleeps (`Context::sleep`) until `until`.
    Sleeping {
        /// The state, when known.
        state: Option<String>,
        /// When it wakes (wall clock; the time its first run armed, after a restart).
        until: SystemTime,
    },
    /// A state waits for a signal (`Context::wait_for_signal`) that has not come yet.
    WaitingForSignal {
        /// The state, when known.
        state: Option<String>,
        /// The signal's name.
        name: String,
    },
    /// A state's signal wait took its message.
    SignalReceived {
        /// The state, when known.
        state: Option<String>,
        /// The signal's name.
        name: String,
        /// The signal's id.
        signal_id: String,
    },
    /// A running instance of `state` was cancelled (`cancel_state`, or a failed dependency).
    StateCancelled {
        /// The state.
        state: String,
    },
    /// The run's cleanup time ran out and these states, still running, could not be stopped
    /// (they block their thread): the run ends without them; they run on in the background.
    Overran {
        /// The states.
        states: Vec<String>,
    },
    /// The run ended (or paused).
    RunFinished {
        /// How it ended.
        status: AgentStatus,
    },
    /// Recovery skipped a damaged snapshot of the run (cut short, garbled or invalid) and
    /// tries the one before it.
    CheckpointSkipped {
        /// The skipped snapshot's `seq` in the store.
        seq: u64,
        /// Why it could not be used.
        reason: String,
    },
    /// A state streamed a value while it ran (`Context::emit`): an LLM's tokens, progress.
    Emitted {
        /// The state, when known (`None` for a value emitted outside a state's poll, such as
        /// from a task the state spawned).
        state: Option<String>,
        /// The value, as JSON.
        value: serde_json::Value,
    },
    /// Keys of the run's context were written: a durable run tells at each commit (each key
    /// written since its previous commit), a plain run that someone follows as each state
    /// ends (each key written since the previous state ended); each with its value then
    /// (`None`: removed). Several writes of one key in between are one change, with the last
    /// value.
    ContextChanged {
        /// The key.
        key: String,
        /// Its value, as `get_state::<serde_json::Value>` reads it (a typed value as its
        /// fields).
        value: Option<serde_json::Value>,
    },
    /// A durable run committed: a checkpoint (a whole snapshot or the changes of one
    /// transition) is in its store, at `seq` of its history.
    Committed {
        /// Its place in the run's history (`store::history`, `Agent::fork`).
        seq: u64,
        /// A whole snapshot, rather than the changes since the previous commit.
        snapshot: bool,
    },
    /// This stream fell behind and lost `missed` events; the next item is the oldest kept.
    Lagged {
        /// Events lost.
        missed: u64,
    },
}

/// An agent's event channel (see the module doc).
///
/// The channel is made by the first subscriber: a broadcast channel allocates its
/// [`CAPACITY`] slots up front (about half a megabyte), which an agent nobody watches, or a
/// program making an agent per request, must not pay.
pub(crate) struct EventHub {
    tx: OnceLock<broadcast::Sender<Event>>,
    subscribers: Arc<AtomicUsize>,
}

impl EventHub {
    pub(crate) fn new() -> Arc<EventHub> {
        Arc::new(EventHub { tx: OnceLock::new(), subscribers: Arc::default() })
    }

    /// Whether someone is subscribed: one relaxed load, the only cost of an event nobody
    /// watches.
    #[inline(always)]
    pub(crate) fn active(&self) -> bool {
        self.subscribers.load(Relaxed) != 0
    }

    /// Whether someone is subscribed, read after the run is marked over: `SeqCst`, so either
    /// this sees a stream of the run's events or that stream sees the run over.
    pub(crate) fn active_at_end(&self) -> bool {
        self.subscribers.load(SeqCst) != 0
    }

    /// Send `kind` of run `run_id`, now. Never waits; with no receiver it is dropped.
    #[cold]
    pub(crate) fn send(&self, run_id: Arc<str>, kind: EventKind) {
        if let Some(tx) = self.tx.get() {
            let _ = tx.send(Event { run_id, at: SystemTime::now(), kind });
        }
    }

    /// A new stream of every event sent from now on.
    pub(crate) fn subscribe(self: &Arc<Self>) -> EventStream {
        // Counted before it can receive: a run that sees no subscriber sends nothing this
        // stream could have missed. `SeqCst`: see `active_at_end`.
        self.subscribers.fetch_add(1, SeqCst);
        // The stream holds only a receiver: it must not keep the channel open (it ends with
        // the agent).
        let rx = self.tx.get_or_init(|| broadcast::channel(CAPACITY).0).subscribe();
        EventStream {
            subscribers: self.subscribers.clone(),
            recv: ReusableBoxFuture::new(receive(rx)),
            last_run: Arc::from(""),
            done: false,
            only: None,
            mode: StreamMode::ALL,
        }
    }

    /// A new stream of the events of `run` (and of the runs that resume it) sent from now
    /// on, ending after its last `RunFinished`.
    pub(crate) fn subscribe_run(self: &Arc<Self>, run: Arc<Run>) -> EventStream {
        let mut stream = self.subscribe();
        let id: Arc<str> = run.run_id().into();
        stream.last_run = id.clone();
        stream.only = Some(Only { id, run });
        stream
    }
}

/// What a stream of one run's events follows: the run's id, and the first run of its chain
/// of resumes (see `run::successor`).
struct Only {
    id: Arc<str>,
    run: Arc<Run>,
}

impl Only {
    /// Whether the run is over for good and has told its subscribers so (`Some(true)`), is
    /// over for good but not told them yet (`Some(false)`), or may go on (`None`: running,
    /// or paused and so resumable).
    fn over(&self) -> Option<bool> {
        let run = crate::run::latest(&self.run);
        if !run.control.is_over() || run.status() == AgentStatus::Paused {
            return None;
        }
        Some(run.control.end_announced())
    }
}

async fn receive(mut rx: broadcast::Receiver<Event>) -> (Result<Event, RecvError>, broadcast::Receiver<Event>) {
    let result = rx.recv().await;
    (result, rx)
}

/// The events of an agent's runs, from the moment it was made: see
/// [`Agent::events`](crate::Agent::events); or of one run: see
/// [`RunHandle::events`](crate::RunHandle::events).
///
/// Read it with [`next`](EventStream::next), or as a [`futures_util::Stream`]. It ends
/// (`None`) once the agent, its clones and its runs' results are all dropped; a stream of
/// one run ends after that run does. Dropping the
/// stream unsubscribes it: with no stream left, runs build no events at all.
pub struct EventStream {
    subscribers: Arc<AtomicUsize>,
    recv: ReusableBoxFuture<'static, (Result<Event, RecvError>, broadcast::Receiver<Event>)>,
    last_run: Arc<str>,
    done: bool,
    /// Only this run's events, ending with it.
    only: Option<Only>,
    /// The kinds of events it gives.
    mode: StreamMode,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream").field("done", &self.done).finish_non_exhaustive()
    }
}

impl EventStream {
    /// The next event; an [`EventKind::Lagged`] item if this stream fell behind; `None` once
    /// the agent is gone.
    pub async fn next(&mut self) -> Option<Event> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    /// The same stream, giving only the events of `mode` (the run's start and end, and
    /// [`EventKind::Lagged`], always).
    #[must_use]
    pub fn with_mode(mut self, mode: StreamMode) -> EventStream {
        self.mode = mode;
        self
    }

    fn poll_event(&mut self, cx: &mut TaskContext<'_>) -> Poll<Option<Event>> {
        loop {
            match std::task::ready!(self.poll_unfiltered(cx)) {
                Some(event) if !self.mode.includes(&event.kind) => continue,
                event => return Poll::Ready(event),
            }
        }
    }

    fn poll_unfiltered(&mut self, cx: &mut TaskContext<'_>) -> Poll<Option<Event>> {
        if self.only.is_none() {
            return self.poll_any(cx);
        }
        loop {
            let event = match self.poll_any(cx) {
                Poll::Ready(event) => event,
                Poll::Pending => match self.only.as_ref().and_then(Only::over) {
                    None => return Poll::Pending,
                    Some(false) => {
                        // Over, and telling its subscribers now: look again in a moment.
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    // Told: what it sent this stream is in its buffer, and nothing more will
                    // come. One more look, after the announcement was seen.
                    Some(true) => match self.poll_any(cx) {
                        Poll::Ready(event) => event,
                        Poll::Pending => {
                            self.done = true;
                            return Poll::Ready(None);
                        }
                    },
                },
            };
            let Some(event) = event else { return Poll::Ready(None) };
            let Some(only) = &self.only else { return Poll::Ready(Some(event)) };
            match &event.kind {
                EventKind::Lagged { .. } => {}
                _ if *event.run_id != *only.id => continue,
                EventKind::RunFinished { status } if *status != AgentStatus::Paused => self.done = true,
                _ => {}
            }
            return Poll::Ready(Some(event));
        }
    }

    /// The next event of any run.
    fn poll_any(&mut self, cx: &mut TaskContext<'_>) -> Poll<Option<Event>> {
        if self.done {
            return Poll::Ready(None);
        }
        let (result, rx) = std::task::ready!(self.recv.poll(cx));
        self.recv.set(receive(rx));
        Poll::Ready(match result {
            Ok(event) => {
                // A stream of one run reports its losses under that run's id.
                if self.only.is_none() && *event.run_id != *self.last_run {
                    self.last_run = event.run_id.clone();
                }
                Some(event)
            }
            Err(RecvError::Lagged(missed)) => {
                Some(Event { run_id: self.last_run.clone(), at: SystemTime::now(), kind: EventKind::Lagged { missed } })
            }
            Err(RecvError::Closed) => {
                self.done = true;
                None
            }
        })
    }
}

/// Which events a stream gives ([`Agent::stream`](crate::Agent::stream),
/// [`EventStream::with_mode`]): modes combine with `|`. A run's start and end, and
/// [`EventKind::Lagged`], come in every mode.
///
/// ```
/// use agent_runtime::{EventKind, StreamMode};
/// let mode = StreamMode::STATES | StreamMode::CUSTOM;
/// assert!(mode.includes(&EventKind::Emitted { state: None, value: serde_json::json!("Hel") }));
/// assert!(!mode.includes(&EventKind::Committed { seq: 3, snapshot: false }));
/// assert!(StreamMode::ALL.includes(&EventKind::Committed { seq: 3, snapshot: false }));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StreamMode(u8);

impl StreamMode {
    /// States starting, ending (completed, failed, timed out, cancelled), retrying, waiting
    /// for resources or dependencies, preempted.
    pub const STATES: StreamMode = StreamMode(1);
    /// Context keys written, with their values ([`EventKind::ContextChanged`]): at each commit
    /// of a durable run, as each state ends in a plain one.
    pub const CONTEXT: StreamMode = StreamMode(2);
    /// Values states emit while they run ([`EventKind::Emitted`], `Context::emit`).
    pub const CUSTOM: StreamMode = StreamMode(4);
    /// A durable run's commits ([`EventKind::Committed`]) and snapshots skipped on recovery.
    pub const CHECKPOINTS: StreamMode = StreamMode(8);
    /// Requests for human input, asked and answered; signals waited for and received.
    pub const INPUTS: StreamMode = StreamMode(16);
    /// Everything.
    pub const ALL: StreamMode = StreamMode(31);

    /// Whether a stream of this mode gives events of `kind`.
    pub fn includes(self, kind: &EventKind) -> bool {
        let needs = match kind {
            EventKind::RunStarted | EventKind::RunFinished { .. } | EventKind::Lagged { .. } => return true,
            EventKind::ContextChanged { .. } => StreamMode::CONTEXT,
            EventKind::Emitted { .. } => StreamMode::CUSTOM,
            EventKind::Committed { .. } | EventKind::CheckpointSkipped { .. } => StreamMode::CHECKPOINTS,
            EventKind::WaitingForInput { .. }
            | EventKind::InputAnswered { .. }
            | EventKind::WaitingForSignal { .. }
            | EventKind::SignalReceived { .. } => StreamMode::INPUTS,
            _ => StreamMode::STATES,
        };
        self.0 & needs.0 != 0
    }
}

impl std::ops::BitOr for StreamMode {
    type Output = StreamMode;
    fn bitor(self, other: StreamMode) -> StreamMode {
        StreamMode(self.0 | other.0)
    }
}

/// What a stream gives: an [`Event`] (the name `agent.stream` uses).
pub type StreamItem = Event;

impl futures_util::Stream for EventStream {
    type Item = Event;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Event>> {
        self.get_mut().poll_event(cx)
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.subscribers.fetch_sub(1, Relaxed);
    }
}
