//! The command line of a workflow binary: `run`, `resume`, `list`, `show`, `answer` and
//! `graph` for any [`Agent`], on a SQLite file or a PostgreSQL database.
//!
//! ```no_run
//! use std::process::ExitCode;
//! use agent_runtime::{cli, Agent};
//! use agent_core::{Context, StateResult};
//!
//! fn agent() -> Agent {
//!     let mut agent = Agent::new("hello");
//!     agent.add_state("greet", |ctx: Context| async move {
//!         ctx.set_state("greeting", "hello");
//!         StateResult::End
//!     });
//!     agent
//! }
//!
//! #[tokio::main]
//! async fn main() -> ExitCode {
//!     cli::main(agent).await   // `hello run`, `hello list`, `hello show RUN`, ...
//! }
//! ```
//!
//! | command | does |
//! |---|---|
//! | *(none)* | resume the newest unfinished (running or paused) run of the agent, or start a new one |
//! | `run` | start a new durable run |
//! | `resume RUN [--wait]` | continue a run from the store (`Agent::recover`); `--wait` waits for another owner's lease to end |
//! | `worker [--concurrency N] [--lease-ttl SECS]` | serve the workflow ([`Worker`](crate::Worker)) until SIGTERM or Ctrl-C, then drain and exit 0 |
//! | `submit [--input JSON] [--key KEY]` | queue a run for a worker ([`Agent::submit`]); prints its id |
//! | `wait RUN` | follow a run in the store to its end; exit 0 if it completed |
//! | `list` | the agent's runs: id, status, owner and lease, start, last update |
//! | `show RUN` | a run's owner and lease, timeline (states, statuses, counts, durations) and requests for input |
//! | `answer RUN REQUEST VALUE` | answer a pending request through the store, from any terminal |
//! | `graph [RUN] [--format mermaid\|dot] [--expand]` | the workflow's graph, coloured by a stored run if one is named; `--expand` draws the child runs its states started inside them |
//! | `cancel RUN`, `pause RUN` | cancel or pause a run wherever it runs, through the store |
//! | `cancel RUN --state NAME` | cancel one state of a run wherever it runs (its running and waiting instances); the run goes on |
//! | `retry RUN` | run a failed run again from the states that failed ([`Agent::retry`]) |
//! | `follow RUN` | a run's progress wherever it runs, a line per change, until it ends (exit 0 if it completed) |
//! | `history RUN` | the commits the store keeps of a run ([`crate::store::history`]): what `fork --at` takes |
//! | `fork RUN [--at N \| --before STATE] [--set KEY=JSON]...` | a new run from one commit of another, its context edited ([`Agent::fork`]); prints its id |
//! | `serve [--addr IP:PORT] [--token T] [--read-only]` | the run console ([`crate::console`]) for the store, on 127.0.0.1:8080 by default |
//!
//! `--store PATH_OR_URL` (before or after the command) picks the store: a SQLite file
//! (default `./<agent-name>.db`) or a `postgres://` URL. `RUN` is a run id or a prefix of
//! one naming a single run.
//!
//! Invariants:
//! - Every command is an async function writing to a `dyn Write` ([`execute`]), so all of
//!   them run in tests without a terminal or a process; [`main`] adds only what needs a
//!   process: `argv`, stdout, a progress bar when stdout is a terminal, Ctrl-C.
//! - Failures are [`CliError`]s printed on stderr with a non-zero exit code
//!   ([`CliError::exit_code`]); nothing here panics. A pause or stop asked with Ctrl-C
//!   exits 130 and is not printed as an error.
//! - Text that comes from outside (arguments, stored values, the workflow's names, prompts
//!   and errors) is printed with its control characters escaped (`\x1b`, `\r`).
//! - Only commands that run a workflow (`run`, `resume`, none) draw a progress bar.
//! - While a run goes on, progress comes from polling `Agent::metrics` about every 100 ms:
//!   a bar on a terminal, one plain line per state change otherwise.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use tokio::sync::mpsc;

use crate::Agent;

mod answer;
mod args;
mod control;
mod error;
mod follow;
mod graph;
mod history;
mod inspect;
mod progress;
mod run;
mod schedule;
mod serve;
mod signal;
mod store;
mod submit;
#[cfg(test)]
mod tests;
mod time;

pub use args::{Cli, Command, GraphFormat, OverlapArg, ScheduleCommand};
pub use error::CliError;

use crate::text::shown;
use progress::Progress;
use run::{Start, Watch};

/// Parse `args` (the first is the program's name) into a [`Cli`].
///
/// # Errors
///
/// [`CliError::Usage`] with clap's message (also for `--help`, whose text it holds).
///
/// ```
/// use agent_runtime::cli::{parse, Command, GraphFormat};
/// let cli = parse(["documents", "graph", "--format", "dot"]).unwrap();
/// assert_eq!(cli.command(), Command::Graph { run: None, format: GraphFormat::Dot, expand: false });
/// let cli = parse(["documents", "graph", "4f2a"]).unwrap();
/// assert_eq!(cli.command(), Command::Graph { run: Some("4f2a".into()), format: GraphFormat::Mermaid, expand: false });
/// let cli = parse(["documents", "graph", "4f2a", "--expand"]).unwrap();
/// assert!(matches!(cli.command(), Command::Graph { expand: true, .. }));
/// assert!(parse(["documents", "graph", "--expand"]).is_err()); // expands a run's children
/// assert!(parse(["documents", "answer", "run-1"]).is_err()); // REQUEST and VALUE missing
/// ```
pub fn parse<I, T>(args: I) -> Result<Cli, CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::Parser;
    Cli::try_parse_from(args).map_err(|e| CliError::Usage(e.render().to_string()))
}

/// Run one command for the agent `make_agent` builds, writing to `out`, progress as plain
/// lines. What [`main`] does after parsing, minus the terminal: for tests and embedding.
///
/// # Errors
///
/// Any [`CliError`]: the store cannot be opened, no such run or request, the run failed.
///
/// ```
/// use agent_runtime::{cli, Agent};
/// use agent_core::{Context, StateResult};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), cli::CliError> {
/// let dir = std::env::temp_dir().join(format!("agent-cli-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let store = dir.join("hello.db");
/// let make = || {
///     let mut agent = Agent::new("hello");
///     agent.add_state("greet", |_ctx: Context| async { StateResult::End });
///     agent
/// };
/// let mut out = Vec::new();
/// let args = ["hello", "--store", store.to_str().unwrap(), "run"];
/// cli::execute(&cli::parse(args)?, make, &mut out).await?;
/// let text = String::from_utf8_lossy(&out);
/// assert!(text.contains("completed"), "{text}");
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(())
/// # }
/// ```
pub async fn execute(
    cli: &Cli,
    make_agent: impl FnOnce() -> Agent,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let watch = Watch { progress: Progress::lines(), interrupts: None };
    dispatch(cli, make_agent(), watch, out).await
}

async fn dispatch(cli: &Cli, agent: Agent, watch: Watch, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    let command = cli.command();
    if let Command::Graph { format, run: None, .. } = command {
        // No run to colour by: the store is not opened (nor created).
        return graph::graph(&agent, format, None, false, out).await;
    }
    let name = agent.name().to_owned();
    let store = store::Store::open(cli.store.as_deref(), &name).await?;
    let result = match command {
        Command::Start => run::start(agent, &store, Start::Auto, watch, out).await,
        Command::Run => run::start(agent, &store, Start::New, watch, out).await,
        Command::Resume { run, wait } => run::start(agent, &store, Start::Resume { run, wait }, watch, out).await,
        Command::Worker { concurrency, lease_ttl } => submit::worker(agent, &store, concurrency, lease_ttl, out).await,
        Command::Submit { input, key, flow_key, debounce_ms } => {
            let flow = submit::Flow { key: flow_key, debounce: debounce_ms.map(std::time::Duration::from_millis) };
            submit::submit(agent, &store, input.as_deref(), key, flow, out).await
        }
        Command::Wait { run } => submit::wait(agent, &store, &run, out).await,
        Command::List => inspect::list(&name, &store, out).await,
        Command::Show { run } => inspect::show(&name, agent.graph_hash().ok(), &store, &run, out).await,
        Command::Answer { run, request, value } => answer::answer(&name, &store, &run, &request, &value, out).await,
        Command::Schedule(action) => schedule::schedule(agent, &store, &action, out).await,
        Command::Signal { run, name: signal, payload, id } => {
            signal::signal(&name, &store, &run, &signal, &payload, id.as_deref(), out).await
        }
        Command::Serve { addr, token, read_only } => serve::serve(agent, &store, addr, token, read_only, out).await,
        Command::Cancel { run, state: None } => control::cancel(&name, &store, &run, out).await,
        Command::Cancel { run, state: Some(state) } => control::cancel_state(&name, &store, &run, &state, out).await,
        Command::Pause { run } => control::pause(&name, &store, &run, out).await,
        Command::Retry { run } => control::retry(agent, &store, &run, out).await,
        Command::Follow { run } => follow::follow(&name, &store, &run, out).await,
        Command::History { run } => history::history(&name, &store, &run, out).await,
        Command::Fork { run, at, before, sets } => {
            let at = match (at, before) {
                (Some(seq), _) => crate::ForkAt::Checkpoint(seq),
                (None, Some(state)) => crate::ForkAt::Before(state),
                (None, None) => crate::ForkAt::Latest,
            };
            history::fork(agent, &store, &run, at, &sets, out).await
        }
        Command::Graph { format, run, expand } => {
            graph::graph(&agent, format, run.as_deref().map(|r| (&store, r)), expand, out).await
        }
    };
    out.flush()?;
    result
}

/// The command line of a workflow binary: parse `std::env::args`, run the command for the
/// agent `make_agent` builds, print failures on stderr, and give the exit code.
///
/// Progress is a bar (on stderr) when stdout is a terminal, plain lines otherwise. Ctrl-C
/// pauses the run (running states finish, it is recorded `Paused`, resumable); a second
/// Ctrl-C stops at once (resumable too, from the last committed snapshot).
///
/// Exit codes: 0 done, 1 failed, 2 bad arguments, 130 paused or stopped by Ctrl-C (which
/// is reported on stderr as what it is, not as an error).
pub async fn main(make_agent: impl FnOnce() -> Agent) -> ExitCode {
    ExitCode::from(main_with_args(std::env::args_os(), make_agent).await)
}

/// [`main`] on these arguments (the first is the program's name) instead of the process's:
/// everything [`main`] does (stdout, stderr, a progress bar on a terminal, Ctrl-C), and the
/// exit code it would give. For binaries that pick their arguments, and for tests.
pub async fn main_with_args<I, T>(args: I, make_agent: impl FnOnce() -> Agent) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::Parser;
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            // The message may quote an argument: escaped, like everything else printed.
            for line in e.render().to_string().lines() {
                eprintln!("{}", shown(line));
            }
            return u8::try_from(e.exit_code()).unwrap_or(2);
        }
        Err(e) => {
            // `--help` and `--version` are printed on stdout with exit code 0.
            let _ = e.print();
            return u8::try_from(e.exit_code()).unwrap_or(2);
        }
    };
    let stdout = std::io::stdout();
    let runs = matches!(cli.command(), Command::Start | Command::Run | Command::Resume { .. });
    let progress = if runs && stdout.is_terminal() { Progress::bar() } else { Progress::lines() };
    let (tx, rx) = mpsc::unbounded_channel();
    let signals = tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            if tx.send(()).is_err() {
                break;
            }
        }
    });
    let watch = Watch { progress, interrupts: Some(rx) };
    let mut out = stdout;
    let result = dispatch(&cli, make_agent(), watch, &mut out).await;
    signals.abort();
    // A run stopped by an interrupt gives its lease back in the background: let it, so that
    // `resume` can take the run at once.
    crate::lease::given_back(std::time::Duration::from_secs(2)).await;
    // A prompt for input still open (the run was stopped while it asked): end its line.
    crate::human::end_prompt(None, "", &mut std::io::stderr());
    match result {
        Ok(()) => 0,
        Err(e) if !e.is_failure() => {
            eprintln!("{}", shown(&e.to_string()));
            e.exit_code()
        }
        Err(e) => {
            eprintln!("error: {}", shown(&e.to_string()));
            let mut shown_text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                let text = cause.to_string();
                if !shown_text.contains(&text) {
                    eprintln!("  caused by: {}", shown(&text));
                    shown_text = text;
                }
                source = cause.source();
            }
            e.exit_code()
        }
    }
}
