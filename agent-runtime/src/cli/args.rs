//! The command line's grammar: what `clap` parses from `argv`.
//!
//! Invariants:
//! - Parsing never touches the store, the agent or the terminal: it is a pure function of
//!   the arguments ([`Cli::try_parse_from`]), so it is tested without a process.
//! - `--store` is global: it may stand before or after the subcommand.
//! - No subcommand means [`Command::Start`]: resume the newest unfinished run, or start one.

use clap::{Parser, Subcommand, ValueEnum};

/// The arguments of a workflow binary using [`main`](super::main).
///
/// ```
/// use agent_runtime::cli::{Cli, Command};
/// use clap::Parser;
///
/// let cli = Cli::try_parse_from(["documents", "--store", "runs.db", "show", "4f2a"]).unwrap();
/// assert_eq!(cli.store.as_deref(), Some("runs.db"));
/// assert!(matches!(cli.command(), Command::Show { run } if run == "4f2a"));
/// // No subcommand: resume the unfinished run, or start a new one.
/// assert!(matches!(Cli::try_parse_from(["documents"]).unwrap().command(), Command::Start));
/// ```
#[derive(Clone, Debug, Parser)]
#[command(
    about = "Run, resume, inspect and answer durable runs of this workflow",
    long_about = None,
    after_help = "Without a command: resume the newest unfinished run of this agent in the store, or start a new one.\n\
                  Ctrl-C pauses a run (running states finish); a second Ctrl-C stops at once. Either way `resume RUN` goes on."
)]
#[non_exhaustive]
pub struct Cli {
    /// Where runs are kept: a SQLite file (default `./<agent-name>.db`) or a
    /// `postgres://user@host/db` URL.
    #[arg(long, global = true, value_name = "PATH_OR_URL")]
    pub store: Option<String>,

    /// What to do (default: resume the newest unfinished run, or start a new one).
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// The subcommand, [`Command::Start`] when none was given.
    pub fn command(&self) -> Command {
        self.command.clone().unwrap_or(Command::Start)
    }
}

/// One subcommand.
#[derive(Clone, Debug, PartialEq, Eq, Subcommand)]
#[non_exhaustive]
pub enum Command {
    /// Resume the newest unfinished run of this agent in the store, or start a new one.
    #[command(hide = true)]
    Start,
    /// Start a new durable run.
    Run,
    /// Continue a run from the store (after an interruption or a crash).
    Resume {
        /// The run's id, or a prefix of it that names one run.
        run: String,
        /// If another worker holds the run, wait for its lease to end instead of failing.
        #[arg(long)]
        wait: bool,
    },
    /// Serve this workflow: run the runs submitted to the store and those whose owner is
    /// gone, until SIGTERM or Ctrl-C; then drain (running states finish, runs are given
    /// back for another worker) and exit 0.
    Worker {
        /// Runs at once.
        #[arg(long, default_value_t = 8, value_name = "N")]
        concurrency: usize,
        /// The lease on each run, in seconds: how long a dead worker holds its runs.
        #[arg(long, default_value = "15", value_name = "SECS", value_parser = seconds)]
        lease_ttl: std::time::Duration,
    },
    /// Queue a run for a worker and print its id at once.
    Submit {
        /// The run's input context: a JSON object (`{"topic": "rust"}`).
        #[arg(long, value_name = "JSON")]
        input: Option<String>,
        /// An idempotency key: submitting again with it prints the same run's id.
        #[arg(long, value_name = "KEY")]
        key: Option<String>,
        /// The run's flow key (instead of the one the agent computes from the input): runs
        /// of one key are taken round robin with other keys', and at most the agent's
        /// `max_per_key` at once.
        #[arg(long, value_name = "KEY")]
        flow_key: Option<String>,
        /// Debounce over N milliseconds: a queued, not yet started run of the same flow key
        /// submitted with debounce gets this input and starts N ms from now (its id is
        /// printed); otherwise a run is queued that starts in N ms. Needs a flow key.
        #[arg(long, value_name = "N")]
        debounce_ms: Option<u64>,
    },
    /// Follow a run in the store until it ends; exit 0 if it completed.
    Wait {
        /// The run's id, or a prefix of it that names one run.
        run: String,
    },
    /// List this agent's runs in the store: id, status, owner and lease, start and last
    /// update.
    List,
    /// A run's timeline: every state with its status, counts and duration, and its
    /// requests for human input.
    Show {
        /// The run's id, or a prefix of it that names one run.
        run: String,
    },
    /// Answer a pending request for human input of a run, through the store.
    Answer {
        /// The run's id, or a prefix of it that names one run.
        run: String,
        /// The request's id (`input-1`, ...), as `show` lists it.
        request: String,
        /// The answer.
        value: String,
    },
    /// Send a run a signal through the store: the run's next wait on NAME
    /// (`ctx.wait_for_signal`) takes it, in whichever process runs it; kept until then.
    Signal {
        /// The run's id, or a prefix of it that names one run.
        run: String,
        /// The signal's name.
        name: String,
        /// Its payload, as JSON (`'{"cents": 1200}'`, `true`, `'"text"'`).
        payload: String,
        /// An id for it: a second send with one id keeps nothing (a new one by default).
        #[arg(long)]
        id: Option<String>,
    },
    /// Manage the workflow's schedules, kept in the store: workers (`worker`) start a run
    /// at each tick.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// Cancel a run wherever it runs: its owner is asked through the store and stops it
    /// within a second; a run nobody runs is cancelled at once. With `--state`, cancel only
    /// that state's running and waiting instances: the rest of the run goes on.
    Cancel {
        /// The run's id, or a prefix of it that names one run.
        run: String,
        /// Cancel this state of the run instead of the whole run.
        #[arg(long, value_name = "NAME")]
        state: Option<String>,
    },
    /// Pause a running run wherever it runs: running states finish, nothing new starts.
    Pause {
        /// The run's id, or a prefix of it that names one run.
        run: String,
    },
    /// Run a failed run again from the states that failed, here, to its end.
    Retry {
        /// The run's id, or a prefix of it that names one run.
        run: String,
    },
    /// Follow a run wherever it runs: a line per change of its standing or of a state, until
    /// it ends (exit 0 if it completed).
    Follow {
        /// The run's id, or a prefix of it that names one run.
        run: String,
    },
    /// The commits the store keeps of a run, oldest first: what `fork --at` takes.
    History {
        /// The run's id, or a prefix of it that names one run.
        run: String,
    },
    /// A new run from one commit of another (its newest by default), its context edited
    /// first; the original is not touched. Prints the new run's id.
    Fork {
        /// The run's id, or a prefix of it that names one run.
        run: String,
        /// The commit to start from (`history RUN` lists them).
        #[arg(long, value_name = "N", conflicts_with = "before")]
        at: Option<u64>,
        /// Start from the newest commit at which this state was about to run.
        #[arg(long, value_name = "STATE")]
        before: Option<String>,
        /// Set a context key of the fork (a typed key takes a value of its type only).
        #[arg(long = "set", value_name = "KEY=JSON")]
        sets: Vec<String>,
    },
    /// Serve the run console (a web page and its JSON API under `/api/v1/`) for the
    /// store's runs, until SIGTERM or Ctrl-C.
    Serve {
        /// Where to listen. Any address beyond this machine needs a token.
        #[arg(long, default_value = "127.0.0.1:8080", value_name = "IP:PORT")]
        addr: std::net::SocketAddr,
        /// Require `Authorization: Bearer TOKEN` on every API call (the page asks for it).
        #[arg(long, env = "AGENT_CONSOLE_TOKEN", value_name = "TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Show runs, refuse every action (answers, submissions).
        #[arg(long)]
        read_only: bool,
    },
    /// Print the workflow's graph; given a run, coloured by that run's newest snapshot.
    Graph {
        /// A run to colour the graph by: its id, or a prefix of it that names one run.
        run: Option<String>,
        /// Mermaid (paste into Markdown) or Graphviz dot (`| dot -Tsvg`).
        #[arg(long, value_enum, default_value_t = GraphFormat::Mermaid)]
        format: GraphFormat,
        /// Draw the child runs the run's states started inside those states (from the
        /// store: their definitions are known only when they are this workflow).
        #[arg(long, requires = "run")]
        expand: bool,
    },
}

/// A `schedule` subcommand.
#[derive(Clone, Debug, PartialEq, Eq, Subcommand)]
pub enum ScheduleCommand {
    /// Add a schedule (or replace the one of that name): a run at each tick of CRON (5
    /// fields, or 6 with seconds first; `@daily` ...).
    Add {
        /// Its name.
        name: String,
        /// The cron expression (quote it: `'0 3 * * *'`).
        cron: String,
        /// What a tick does while the previous run goes on.
        #[arg(long, value_enum, default_value = "skip")]
        overlap: OverlapArg,
        /// The IANA time zone the expression is read in.
        #[arg(long, default_value = "UTC")]
        timezone: String,
        /// After downtime, start the ticks missed within this many seconds.
        #[arg(long, value_name = "SECS", default_value_t = 0)]
        catch_up: u64,
        /// The context each run starts from, as a JSON object.
        #[arg(long)]
        input: Option<String>,
    },
    /// List the schedules: cron, time zone, policy, next tick, last run.
    List,
    /// Pause a schedule: its ticks start nothing until resumed.
    Pause {
        /// Its name.
        name: String,
    },
    /// Resume a schedule from its next tick (the ticks of the pause are not caught up).
    Resume {
        /// Its name.
        name: String,
    },
    /// Remove a schedule (its runs stay).
    Remove {
        /// Its name.
        name: String,
    },
    /// Start the runs of the ticks from FROM to TO (RFC 3339 times, both included); a tick
    /// that has a run already gets none.
    Backfill {
        /// Its name.
        name: String,
        /// The first time (`2026-12-01T00:00:00Z`).
        #[arg(long)]
        from: String,
        /// The last time.
        #[arg(long)]
        to: String,
    },
}

/// `--overlap`: see [`Overlap`](crate::schedule::Overlap).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OverlapArg {
    /// Skip the tick.
    Skip,
    /// Hold one tick until the previous run ends.
    BufferOne,
    /// Start it anyway.
    Allow,
    /// Cancel the previous run and start it.
    Cancel,
}

/// How `graph` draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    /// A Mermaid flowchart.
    Mermaid,
    /// A Graphviz digraph.
    Dot,
}

/// A number of seconds (`15`, `0.5`) of at least 30 ms, as `--lease-ttl` takes it.
fn seconds(arg: &str) -> Result<std::time::Duration, String> {
    let secs: f64 = arg.trim().parse().map_err(|_| format!("`{arg}` is not a number of seconds"))?;
    std::time::Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| *d >= std::time::Duration::from_millis(30))
        .ok_or_else(|| format!("a lease lasts at least 0.03 seconds, not `{arg}`"))
}
