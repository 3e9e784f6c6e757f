//! Which store failures are passing ([`StoreError::is_transient`]): an outage of the
//! database that a later attempt may get past, as against a failure that will not change.
//!
//! Invariants:
//! - Only [`StoreError::Backend`] can be transient, and only by its driver error (its
//!   `source` and that error's own sources, walked to the end): an error the store made
//!   itself (`Conflict`, `Fenced`, `Corrupt`, a schema refusal) is an answer, never an
//!   outage.
//! - Transient causes: an I/O error of a lost or refused connection (refused, reset,
//!   aborted, not connected, broken pipe, timed out, unexpected end of stream, host or
//!   network unreachable, network down); a PostgreSQL connection that closed; a SQLSTATE of
//!   class 08 (connection exception), 57P01/57P02/57P03 (the server shutting down, crashed,
//!   or not yet accepting connections: what a restart looks like), 53300 (too many
//!   connections), 40001/40P01 (a serialization failure or deadlock: the transaction was
//!   rolled back and may be run again); a pool that timed out getting a connection; SQLite's
//!   `BUSY` and `LOCKED` (another connection holds the file's lock past the busy timeout).
//! - A driver error that carries a SQLSTATE not listed is permanent, whatever its sources
//!   say: the server answered.
//! - A store of one's own marks a failure transient by giving its `Backend` error a
//!   `std::io::Error` source of one of the kinds above.

use std::error::Error;
use std::io::ErrorKind;

use super::StoreError;

impl StoreError {
    /// Whether this failure is passing: the store could not be reached, or its connection
    /// was lost, or it refused the work for now (see the module docs of `store::transient`
    /// for the list). A transient failure is worth another attempt after a pause (the
    /// runtime retries them, see [`Agent::store_retry`](crate::Agent::store_retry)); any
    /// other is final.
    ///
    /// ```
    /// use agent_runtime::store::StoreError;
    /// let refused = StoreError::Backend {
    ///     store: "custom",
    ///     message: "connect".into(),
    ///     source: Some(Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))),
    /// };
    /// assert!(refused.is_transient());
    /// let fenced = StoreError::Fenced { store: "custom", run_id: "r".into(), epoch: 1, current: 2 };
    /// assert!(!fenced.is_transient());
    /// ```
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Backend { source: Some(source), .. } => transient_cause(&**source),
            _ => false,
        }
    }
}

/// Whether `error`, or one of its sources, is a transient cause (see the module docs).
fn transient_cause(error: &(dyn Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(verdict) = verdict(e) {
            return verdict;
        }
        next = e.source();
    }
    false
}

/// What `e` alone says: `Some(true)` transient, `Some(false)` permanent whatever its
/// sources say, `None` to look at its source.
fn verdict(e: &(dyn Error + 'static)) -> Option<bool> {
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        return transient_io(io.kind()).then_some(true);
    }
    #[cfg(feature = "postgres")]
    {
        if let Some(pg) = e.downcast_ref::<tokio_postgres::Error>() {
            if pg.is_closed() {
                return Some(true);
            }
            return pg.code().map(|code| transient_sqlstate(code.code()));
        }
        if let Some(db) = e.downcast_ref::<tokio_postgres::error::DbError>() {
            return Some(transient_sqlstate(db.code().code()));
        }
        if let Some(deadpool_postgres::PoolError::Timeout(_)) = e.downcast_ref::<deadpool_postgres::PoolError>() {
            return Some(true);
        }
    }
    #[cfg(feature = "sqlite")]
    {
        if let Some(sqlite) = e.downcast_ref::<rusqlite::Error>() {
            use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked};
            return sqlite.sqlite_error_code().map(|code| matches!(code, DatabaseBusy | DatabaseLocked));
        }
    }
    None
}

/// I/O errors of a connection lost, refused or not yet possible.
fn transient_io(kind: ErrorKind) -> bool {
    use ErrorKind::*;
    matches!(
        kind,
        ConnectionRefused
            | ConnectionReset
            | ConnectionAborted
            | NotConnected
            | BrokenPipe
            | TimedOut
            | UnexpectedEof
            | Interrupted
            | HostUnreachable
            | NetworkUnreachable
            | NetworkDown
    )
}

/// SQLSTATEs of an outage or of a transaction that may simply be run again.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
fn transient_sqlstate(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300" | "40001" | "40P01")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(source: impl Error + Send + Sync + 'static) -> StoreError {
        StoreError::Backend { store: "test", message: "work".into(), source: Some(Box::new(source)) }
    }

    #[test]
    fn lost_connections_are_transient_other_io_is_not() {
        for kind in [ErrorKind::ConnectionRefused, ErrorKind::ConnectionReset, ErrorKind::UnexpectedEof] {
            assert!(backend(std::io::Error::from(kind)).is_transient(), "{kind:?}");
        }
        for kind in [ErrorKind::PermissionDenied, ErrorKind::InvalidData, ErrorKind::NotFound] {
            assert!(!backend(std::io::Error::from(kind)).is_transient(), "{kind:?}");
        }
    }

    #[test]
    fn a_cause_deep_in_the_chain_counts() {
        #[derive(Debug, thiserror::Error)]
        #[error("wrapped")]
        struct Wrapped(#[source] std::io::Error);
        assert!(backend(Wrapped(ErrorKind::ConnectionReset.into())).is_transient());
        assert!(!backend(Wrapped(ErrorKind::InvalidInput.into())).is_transient());
    }

    #[test]
    fn the_store_s_own_answers_are_never_transient() {
        let errors = [
            StoreError::Backend { store: "test", message: "no source".into(), source: None },
            StoreError::Corrupt { store: "test", message: "bad".into() },
            StoreError::Conflict { store: "test", run_id: "r".into(), seq: 1, last: 1 },
            StoreError::Fenced { store: "test", run_id: "r".into(), epoch: 1, current: 2 },
            StoreError::SchemaTooNew { store: "test", found: 9, supported: 1 },
        ];
        for e in errors {
            assert!(!e.is_transient(), "{e}");
        }
    }

    #[test]
    fn sqlstates_of_outages_and_retryable_transactions() {
        for code in ["08000", "08006", "08001", "57P01", "57P02", "57P03", "53300", "40001", "40P01"] {
            assert!(transient_sqlstate(code), "{code}");
        }
        for code in ["23505", "42P01", "22P02", "57014", "42501"] {
            assert!(!transient_sqlstate(code), "{code}");
        }
    }

    /// A real `BUSY` from SQLite: another connection holds the file's write lock.
    #[cfg(feature = "sqlite")]
    #[test]
    fn sqlite_busy_is_transient_a_syntax_error_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locked.db");
        let holder = rusqlite::Connection::open(&path).unwrap();
        holder.execute_batch("CREATE TABLE t (x INTEGER); BEGIN EXCLUSIVE; INSERT INTO t VALUES (1);").unwrap();
        let other = rusqlite::Connection::open(&path).unwrap();
        other.busy_timeout(std::time::Duration::ZERO).unwrap();
        let busy = other.execute("INSERT INTO t VALUES (2)", []).unwrap_err();
        assert_eq!(busy.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy));
        assert!(backend(busy).is_transient());
        let syntax = other.execute("NOT SQL", []).unwrap_err();
        assert!(!backend(syntax).is_transient());
    }

    /// Real errors of `tokio-postgres` and of the pool: a refused connection, and a pool
    /// timeout.
    #[cfg(feature = "postgres")]
    #[tokio::test]
    async fn postgres_refused_connections_and_pool_timeouts_are_transient() {
        // A port nobody listens on: bind one, then close it.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("postgres://nobody@127.0.0.1:{port}/none");
        let refused = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.map(|_| ()).unwrap_err();
        assert!(backend(refused).is_transient());
        let config: tokio_postgres::Config = url.parse().unwrap();
        let manager = deadpool_postgres::Manager::new(config, tokio_postgres::NoTls);
        let pool = deadpool_postgres::Pool::builder(manager).max_size(1).build().unwrap();
        let pooled = pool.get().await.map(|_| ()).unwrap_err();
        assert!(matches!(pooled, deadpool_postgres::PoolError::Backend(_)));
        assert!(backend(pooled).is_transient(), "the pool's backend error is looked into");
        let timeout = deadpool_postgres::PoolError::Timeout(deadpool_postgres::TimeoutType::Create);
        assert!(backend(timeout).is_transient());
        assert!(!backend(deadpool_postgres::PoolError::Closed).is_transient());
    }
}
