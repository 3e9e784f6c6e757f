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
//! | `resume RUN` | continue a run from the store (`Agent::recover`) |
//! | `list` | the agent's runs: id, status, start, last update |
//! | `show RUN` | a run's timeline (states, statuses, counts, durations) and its requests for input |
//! | `answer RUN REQUEST VALUE` | answer a pending request through the store, from any terminal |
//! | `graph [--format mermaid\|dot]` | the workflow's graph |
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
//!   ([`CliError::exit_code`]); nothing here panics.
//! - While a run goes on, progress comes from polling `Agent::metrics` about every 100 ms:
//!   a bar on a terminal, one plain line per state change otherwise.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use tokio::sync::mpsc;

use crate::Agent;

mod answer;
mod args;
mod error;
mod graph;
mod inspect;
mod progress;
mod run;
mod store;
#[cfg(test)]
mod tests;
mod time;

pub use args::{Cli, Command, GraphFormat};
pub use error::CliError;

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
/// assert_eq!(cli.command(), Command::Graph { format: GraphFormat::Dot });
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
    if let Command::Graph { format } = command {
        return graph::graph(&agent, format, out);
    }
    let name = agent.name().to_owned();
    let store = store::Store::open(cli.store.as_deref(), &name).await?;
    let result = match command {
        Command::Start => run::start(agent, &store, Start::Auto, watch, out).await,
        Command::Run => run::start(agent, &store, Start::New, watch, out).await,
        Command::Resume { run } => run::start(agent, &store, Start::Resume(run), watch, out).await,
        Command::List => inspect::list(&name, &store, out).await,
        Command::Show { run } => inspect::show(&name, &store, &run, out).await,
        Command::Answer { run, request, value } => answer::answer(&name, &store, &run, &request, &value, out).await,
        Command::Graph { .. } => Ok(()),
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
/// Exit codes: 0 done, 1 failed, 2 bad arguments, 130 interrupted.
pub async fn main(make_agent: impl FnOnce() -> Agent) -> ExitCode {
    use clap::Parser;
    let cli = match Cli::try_parse_from(std::env::args_os()) {
        Ok(cli) => cli,
        Err(e) => {
            // `--help` and `--version` are printed on stdout with exit code 0.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let stdout = std::io::stdout();
    let progress = if stdout.is_terminal() { Progress::bar() } else { Progress::lines() };
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
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            let mut shown = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                let text = cause.to_string();
                if !shown.contains(&text) {
                    eprintln!("  caused by: {text}");
                    shown = text;
                }
                source = cause.source();
            }
            ExitCode::from(&e)
        }
    }
}
