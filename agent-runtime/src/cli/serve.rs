//! `serve`: the run console ([`crate::console`]) for the binary's store and workflow.
//!
//! Invariants:
//! - It listens on loopback unless told otherwise; any other address needs a token
//!   (`--token` or `AGENT_CONSOLE_TOKEN`), refused before anything is bound.
//! - It prints the address it listens on (the port the system picked for `:0`) as its
//!   first line, then serves until SIGTERM or Ctrl-C, and exits 0.

use std::io::Write;
use std::net::SocketAddr;

use super::store::Store;
use super::CliError;
use crate::console::Console;
use crate::Agent;

pub(super) async fn serve(
    agent: Agent,
    store: &Store,
    addr: SocketAddr,
    token: Option<String>,
    read_only: bool,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let token = token.filter(|t| !t.is_empty());
    if !addr.ip().is_loopback() && token.is_none() {
        return Err(CliError::Usage(format!(
            "serving on {addr} opens the console beyond this machine: give a token (--token T or AGENT_CONSOLE_TOKEN)"
        )));
    }
    let mut console = Console::with_store(store.get()).agent(agent).read_only(read_only);
    if let Some(token) = token {
        console = console.token(token);
    }
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    writeln!(out, "console on http://{bound}/{}", if read_only { " (read-only)" } else { "" })?;
    out.flush()?;
    console.serve(listener).await?;
    Ok(())
}
