//! Which store a command reads and writes: `--store`, or `./<agent-name>.db`.
//!
//! Invariants:
//! - A value starting with `postgres://` or `postgresql://` is a PostgreSQL URL; anything
//!   else is a SQLite file path (created when missing). Without the `postgres` feature such
//!   a URL is a usage error, never opened as a file.
//! - Run ids given on the command line resolve to exactly one run of this agent: the exact
//!   id, or the only run whose id starts with the given prefix; anything else is an error.

use std::sync::Arc;

#[cfg(feature = "postgres")]
use crate::store::PostgresStore;
use crate::store::{CheckpointStore, RunQuery, RunRecord, SqliteStore};
use crate::Agent;

use super::CliError;

/// An opened store, of either kind.
#[derive(Clone)]
pub(super) enum Store {
    Sqlite(SqliteStore),
    #[cfg(feature = "postgres")]
    Postgres(PostgresStore),
}

impl Store {
    /// Open `--store`, or the default file for `agent`.
    pub(super) async fn open(arg: Option<&str>, agent: &str) -> Result<Store, CliError> {
        match arg {
            #[cfg(feature = "postgres")]
            Some(url) if is_postgres_url(url) => Ok(Store::Postgres(PostgresStore::connect(url).await?)),
            #[cfg(not(feature = "postgres"))]
            Some(url) if is_postgres_url(url) => Err(CliError::Usage(format!(
                "--store {url}: this program was built without PostgreSQL support (the `postgres` feature of `agent`)"
            ))),
            Some(path) => Ok(Store::Sqlite(SqliteStore::open(path)?)),
            None => Ok(Store::Sqlite(SqliteStore::open(default_path(agent))?)),
        }
    }

    pub(super) fn get(&self) -> Arc<dyn CheckpointStore> {
        match self {
            Store::Sqlite(s) => Arc::new(s.clone()),
            #[cfg(feature = "postgres")]
            Store::Postgres(s) => Arc::new(s.clone()),
        }
    }

    /// `agent`, recording its runs here.
    pub(super) fn attach(&self, agent: Agent) -> Agent {
        match self {
            Store::Sqlite(s) => agent.with_store(s.clone()),
            #[cfg(feature = "postgres")]
            Store::Postgres(s) => agent.with_store(s.clone()),
        }
    }

    /// The run of `agent` that `run` (an id or a prefix) names.
    pub(super) async fn resolve(&self, agent: &str, run: &str) -> Result<RunRecord, CliError> {
        let store = self.get();
        if let Some(record) = store.get_run(run).await? {
            if record.agent == agent {
                return Ok(record);
            }
        }
        let query = RunQuery { agent: Some(agent.to_owned()), ..RunQuery::default() };
        let mut found: Vec<RunRecord> = store
            .list_runs(&query)
            .await?
            .into_iter()
            .filter(|r| !run.is_empty() && r.run_id.starts_with(run))
            .collect();
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(CliError::RunNotFound { agent: agent.to_owned(), run: run.to_owned() }),
            _ => Err(CliError::AmbiguousRun {
                run: run.to_owned(),
                matches: found.into_iter().map(|r| r.run_id).collect(),
            }),
        }
    }
}

/// Whether `--store` names a PostgreSQL database rather than a SQLite file.
fn is_postgres_url(arg: &str) -> bool {
    arg.starts_with("postgres://") || arg.starts_with("postgresql://")
}

/// The SQLite file an agent's runs go to by default: `<agent-name>.db` in the current
/// directory, characters other than letters, digits, `-` and `_` replaced by `_`.
pub(super) fn default_path(agent: &str) -> String {
    let name: String =
        agent.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    format!("{name}.db")
}
