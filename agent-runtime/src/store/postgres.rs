//! [`PostgresStore`]: a checkpoint store in a PostgreSQL database, shared by workers on
//! several machines.
//!
//! Invariants:
//! - A store holds a small pool of connections (at most [`POOL_SIZE`]), opened as needed; a
//!   connection that has closed is replaced on its next use. Each call holds one connection
//!   for its whole work, so its transaction is never interleaved with another call's.
//! - Every multi-statement write is one transaction. `append` upserts the run's row first,
//!   which locks it: concurrent appends to one run (from any machine) are serialized, and each
//!   checks its batch against the `seq` the previous one committed. `answer_input` is one
//!   conditional `UPDATE`, so of concurrent answers exactly one wins.
//! - A run's last journal `seq` is kept in its row, so retention dropping old entries never
//!   re-opens old `seq`s.
//! - Ordering ties are broken bytewise (`COLLATE "C"`), as the other stores do, whatever the
//!   database's collation.
//! - The connection's password is never written into an error message.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};
use tokio_postgres::{Client, Config, NoTls, Row, Statement};

use super::migrate::{self, backend, finished_sql, status_from_db, u64_from_db, u64_to_db};
use super::{
    CheckpointStore, InputRecord, JournalEntry, Retention, RetentionReport, RunQuery, RunRecord, Snapshot, StoreError,
    StoreFuture,
};

const STORE: &str = "postgres";

/// The most connections one [`PostgresStore`] opens.
pub(crate) const POOL_SIZE: usize = 4;

/// A checkpoint store in a PostgreSQL database. Cloning it is cheap: clones share its
/// connections. Any number of stores, in any number of processes, may share one database.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    /// The schema the tables are in, quoted, when not the server's default.
    schema: Option<String>,
    slots: Vec<Mutex<Option<Conn>>>,
    next: AtomicUsize,
}

/// One connection, with the statements it has prepared.
struct Conn {
    client: Client,
    statements: HashMap<&'static str, Statement>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("hosts", &self.inner.config.get_hosts())
            .field("dbname", &self.inner.config.get_dbname())
            .field("schema", &self.inner.schema)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connect to the database at `url` (`postgres://user@host:5432/db`, or a `key=value`
    /// string; no TLS) and bring its schema up to date. The tables are created in the
    /// connection's default schema. Must be called within a tokio runtime, which then runs
    /// the connections.
    ///
    /// Fails with [`StoreError::SchemaTooNew`] if a newer version of `agent` wrote it.
    ///
    /// ```no_run
    /// use agent_runtime::store::PostgresStore;
    ///
    /// # async fn f() -> Result<(), agent_runtime::store::StoreError> {
    /// let store = PostgresStore::connect("postgres://agent@db.internal:5432/agent").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        Self::connect_inner(url, None).await
    }

    /// Like [`connect`](Self::connect), with the tables in `schema` (created if needed), so
    /// that several independent stores (or test runs) can share one database.
    ///
    /// ```no_run
    /// use agent_runtime::store::PostgresStore;
    ///
    /// # async fn f() -> Result<(), agent_runtime::store::StoreError> {
    /// let store = PostgresStore::connect_with_schema("postgres://agent@db.internal/agent", "staging").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect_with_schema(url: &str, schema: &str) -> Result<PostgresStore, StoreError> {
        if schema.is_empty() || schema.contains('\0') {
            return Err(StoreError::Backend {
                store: STORE,
                message: format!("connect: invalid schema name {schema:?}"),
                source: None,
            });
        }
        Self::connect_inner(url, Some(format!("\"{}\"", schema.replace('"', "\"\"")))).await
    }

    async fn connect_inner(url: &str, schema: Option<String>) -> Result<PostgresStore, StoreError> {
        let config: Config = url.parse().map_err(|e| backend(STORE, "connect: parse the connection URL", e))?;
        let mut inner =
            Inner { config, schema, slots: (0..POOL_SIZE).map(|_| Mutex::new(None)).collect(), next: 0.into() };
        let mut conn = inner.open().await.map_err(|f| f.into_store("connect"))?;
        migrate::migrate_postgres(&mut conn.client, inner.schema.as_deref()).await.map_err(|e| match e {
            StoreError::Backend { store, message, source } => {
                StoreError::Backend { store, message: format!("connect: {message}"), source }
            }
            other => other,
        })?;
        *inner.slots[0].get_mut() = Some(conn);
        Ok(PostgresStore { inner: Arc::new(inner) })
    }

    /// Run `work`; its errors are given the context `what`.
    fn run<'a, T: 'a>(
        &'a self,
        what: impl FnOnce() -> String + Send + 'a,
        work: impl Future<Output = Result<T, Fail>> + Send + 'a,
    ) -> StoreFuture<'a, T> {
        Box::pin(async move { work.await.map_err(|f| f.into_store(&what())) })
    }
}

impl Inner {
    /// A new connection, its task spawned on the current tokio runtime.
    async fn open(&self) -> Result<Conn, Fail> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| {
            Fail::Store(StoreError::Backend {
                store: STORE,
                message: "a postgres store must be used within a tokio runtime".to_owned(),
                source: Some(Box::new(e)),
            })
        })?;
        let (client, connection) = self.config.connect(NoTls).await?;
        runtime.spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "postgres store: connection closed");
            }
        });
        if let Some(schema) = &self.schema {
            client.batch_execute(&format!("SET search_path TO {schema}")).await?;
        }
        Ok(Conn { client, statements: HashMap::new() })
    }

    /// A connection for one call: an idle open one if there is one, else a free slot (opened
    /// now), else the next slot in turn once it is free.
    async fn lease(&self) -> Result<MappedMutexGuard<'_, Conn>, Fail> {
        let mut slot = None;
        for s in &self.slots {
            if let Ok(guard) = s.try_lock() {
                if guard.as_ref().is_some_and(|c| !c.client.is_closed()) {
                    slot = Some(guard);
                    break;
                }
            }
        }
        if slot.is_none() {
            slot = self.slots.iter().find_map(|s| s.try_lock().ok());
        }
        let mut guard: MutexGuard<'_, Option<Conn>> = match slot {
            Some(guard) => guard,
            None => {
                let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
                self.slots[i].lock().await
            }
        };
        if guard.as_ref().is_none_or(|c| c.client.is_closed()) {
            *guard = None;
            *guard = Some(self.open().await?);
        }
        MutexGuard::try_map(guard, Option::as_mut).map_err(|_| {
            Fail::Store(StoreError::Backend {
                store: STORE,
                message: "internal error: a connection slot was empty after it was filled".to_owned(),
                source: None,
            })
        })
    }
}

/// A statement prepared on `client`, from its connection's cache.
async fn prepare(
    client: &Client,
    statements: &mut HashMap<&'static str, Statement>,
    sql: &'static str,
) -> Result<Statement, tokio_postgres::Error> {
    if let Some(s) = statements.get(sql) {
        return Ok(s.clone());
    }
    let s = client.prepare(sql).await?;
    statements.insert(sql, s.clone());
    Ok(s)
}

impl Conn {
    async fn prepare(&mut self, sql: &'static str) -> Result<Statement, tokio_postgres::Error> {
        prepare(&self.client, &mut self.statements, sql).await
    }
}

/// An error inside a call, before it is given its context.
enum Fail {
    Db(tokio_postgres::Error),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Self {
        Fail::Db(e)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

impl Fail {
    fn into_store(self, what: &str) -> StoreError {
        match self {
            Fail::Db(e) => backend(STORE, what, e),
            Fail::Store(StoreError::Backend { store, message, source }) => {
                StoreError::Backend { store, message: format!("{what}: {message}"), source }
            }
            Fail::Store(StoreError::Corrupt { store, message }) => {
                StoreError::Corrupt { store, message: format!("{what}: {message}") }
            }
            Fail::Store(e) => e,
        }
    }
}

const UPSERT_RUN: &str = "INSERT INTO agent_runs (run_id, agent, status, created_ms, updated_ms)
    VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (run_id) DO UPDATE SET agent = excluded.agent, status = excluded.status,
        created_ms = excluded.created_ms, updated_ms = excluded.updated_ms
    RETURNING last_seq";

macro_rules! select_runs {
    ($($rest:literal),*) => {
        concat!("SELECT run_id, agent, status, created_ms, updated_ms FROM agent_runs" $(, $rest)*)
    };
}
macro_rules! select_inputs {
    ($($rest:literal),*) => {
        concat!(
            "SELECT run_id, request_id, state, prompt, requested_ms, timeout_ms, default_value,
                answer, answered_ms, defaulted FROM agent_inputs"
            $(, $rest)*
        )
    };
}

fn read_run(row: &Row) -> Result<RunRecord, Fail> {
    let run_id: String = row.try_get(0)?;
    let status: String = row.try_get(2)?;
    Ok(RunRecord {
        status: status_from_db(STORE, &run_id, &status)?,
        agent: row.try_get(1)?,
        created_ms: row.try_get(3)?,
        updated_ms: row.try_get(4)?,
        run_id,
    })
}

fn read_input(row: &Row) -> Result<InputRecord, Fail> {
    let timeout: Option<i64> = row.try_get(5)?;
    let mut request = agent_core::InputRequestRecord::new(row.try_get(1)?, row.try_get(3)?, row.try_get(4)?);
    request.state = row.try_get(2)?;
    request.timeout_ms = timeout.map(|t| u64_from_db(STORE, "timeout_ms", t)).transpose()?;
    request.default = row.try_get(6)?;
    request.answer = row.try_get(7)?;
    request.answered_ms = row.try_get(8)?;
    request.defaulted = row.try_get(9)?;
    Ok(InputRecord { run_id: row.try_get(0)?, request })
}

impl CheckpointStore for PostgresStore {
    fn kind(&self) -> &'static str {
        STORE
    }

    fn upsert_run<'a>(&'a self, run: &'a RunRecord) -> StoreFuture<'a, ()> {
        self.run(move || format!("upsert run {}", run.run_id), async move {
            let mut conn = self.inner.lease().await?;
            let st = conn.prepare(UPSERT_RUN).await?;
            conn.client
                .execute(&st, &[&run.run_id, &run.agent, &run.status.as_str(), &run.created_ms, &run.updated_ms])
                .await?;
            Ok(())
        })
    }

    fn get_run<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<RunRecord>> {
        self.run(move || format!("get run {run_id}"), async move {
            let mut conn = self.inner.lease().await?;
            let st = conn.prepare(select_runs!(" WHERE run_id = $1")).await?;
            let row = conn.client.query_opt(&st, &[&run_id]).await?;
            row.as_ref().map(read_run).transpose()
        })
    }

    fn list_runs<'a>(&'a self, query: &'a RunQuery) -> StoreFuture<'a, Vec<RunRecord>> {
        self.run(|| "list runs".to_owned(), async move {
            let mut conn = self.inner.lease().await?;
            let limit = query.limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX));
            let status = query.status.map(|s| s.as_str());
            let rows = match (&query.agent, status) {
                (None, None) => {
                    let st =
                        conn.prepare(select_runs!(" ORDER BY created_ms DESC, run_id COLLATE \"C\" LIMIT $1")).await?;
                    conn.client.query(&st, &[&limit]).await?
                }
                (Some(agent), None) => {
                    let st = conn
                        .prepare(select_runs!(
                            " WHERE agent = $1 ORDER BY created_ms DESC, run_id COLLATE \"C\" LIMIT $2"
                        ))
                        .await?;
                    conn.client.query(&st, &[agent, &limit]).await?
                }
                (None, Some(status)) => {
                    let st = conn
                        .prepare(select_runs!(
                            " WHERE status = $1 ORDER BY created_ms DESC, run_id COLLATE \"C\" LIMIT $2"
                        ))
                        .await?;
                    conn.client.query(&st, &[&status, &limit]).await?
                }
                (Some(agent), Some(status)) => {
                    let st = conn
                        .prepare(select_runs!(
                            " WHERE agent = $1 AND status = $2 ORDER BY created_ms DESC, run_id COLLATE \"C\" LIMIT $3"
                        ))
                        .await?;
                    conn.client.query(&st, &[agent, &status, &limit]).await?
                }
            };
            rows.iter().map(read_run).collect()
        })
    }

    fn append<'a>(&'a self, run: &'a RunRecord, entries: &'a [JournalEntry]) -> StoreFuture<'a, ()> {
        self.run(move || format!("append to run {}", run.run_id), async move {
            let mut lease = self.inner.lease().await?;
            let Conn { client, statements } = &mut *lease;
            // Dropping `tx` without committing rolls it back.
            let tx = client.transaction().await?;
            let upsert = prepare(tx.client(), statements, UPSERT_RUN).await?;
            let row = tx
                .query_one(&upsert, &[&run.run_id, &run.agent, &run.status.as_str(), &run.created_ms, &run.updated_ms])
                .await?;
            let mut last = u64_from_db(STORE, "last seq", row.try_get(0)?)?;
            for e in entries {
                if e.seq <= last {
                    return Err(
                        StoreError::Conflict { store: STORE, run_id: run.run_id.clone(), seq: e.seq, last }.into()
                    );
                }
                last = e.seq;
            }
            if !entries.is_empty() {
                let insert = prepare(
                    tx.client(),
                    statements,
                    "INSERT INTO agent_journal (run_id, seq, state, payload, at_ms) VALUES ($1, $2, $3, $4, $5)",
                )
                .await?;
                for e in entries {
                    let seq = u64_to_db(STORE, "journal seq", e.seq)?;
                    tx.execute(&insert, &[&run.run_id, &seq, &e.state, &e.payload, &e.at_ms]).await?;
                }
                let last = u64_to_db(STORE, "journal seq", last)?;
                let update =
                    prepare(tx.client(), statements, "UPDATE agent_runs SET last_seq = $2 WHERE run_id = $1").await?;
                tx.execute(&update, &[&run.run_id, &last]).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn journal<'a>(&'a self, run_id: &'a str, after: u64) -> StoreFuture<'a, Vec<JournalEntry>> {
        self.run(move || format!("read the journal of run {run_id}"), async move {
            let mut conn = self.inner.lease().await?;
            let after = i64::try_from(after).unwrap_or(i64::MAX);
            let st = conn
                .prepare(
                    "SELECT seq, state, payload, at_ms FROM agent_journal WHERE run_id = $1 AND seq > $2 ORDER BY seq",
                )
                .await?;
            let rows = conn.client.query(&st, &[&run_id, &after]).await?;
            rows.iter()
                .map(|row| {
                    Ok(JournalEntry {
                        seq: u64_from_db(STORE, "journal seq", row.try_get(0)?)?,
                        state: row.try_get(1)?,
                        payload: row.try_get(2)?,
                        at_ms: row.try_get(3)?,
                    })
                })
                .collect()
        })
    }

    fn save_snapshot<'a>(&'a self, run_id: &'a str, snapshot: &'a Snapshot) -> StoreFuture<'a, ()> {
        self.run(move || format!("save a snapshot of run {run_id}"), async move {
            let mut conn = self.inner.lease().await?;
            let seq = u64_to_db(STORE, "snapshot seq", snapshot.seq)?;
            let st = conn
                .prepare(
                    "INSERT INTO agent_snapshots (run_id, seq, taken_ms, data) SELECT $1, $2, $3, $4
                         WHERE EXISTS (SELECT 1 FROM agent_runs WHERE run_id = $1)",
                )
                .await?;
            let inserted = conn.client.execute(&st, &[&run_id, &seq, &snapshot.taken_ms, &snapshot.data]).await?;
            if inserted == 0 {
                return Err(
                    StoreError::Backend { store: STORE, message: "no such run".to_owned(), source: None }.into()
                );
            }
            Ok(())
        })
    }

    fn save_run_snapshot<'a>(&'a self, run: &'a RunRecord, snapshot: &'a Snapshot) -> StoreFuture<'a, ()> {
        self.run(move || format!("save a snapshot of run {}", run.run_id), async move {
            let mut lease = self.inner.lease().await?;
            let Conn { client, statements } = &mut *lease;
            let seq = u64_to_db(STORE, "snapshot seq", snapshot.seq)?;
            // Dropping `tx` without committing rolls it back.
            let tx = client.transaction().await?;
            let upsert = prepare(tx.client(), statements, UPSERT_RUN).await?;
            tx.query_one(&upsert, &[&run.run_id, &run.agent, &run.status.as_str(), &run.created_ms, &run.updated_ms])
                .await?;
            let insert = prepare(
                tx.client(),
                statements,
                "INSERT INTO agent_snapshots (run_id, seq, taken_ms, data) VALUES ($1, $2, $3, $4)",
            )
            .await?;
            tx.execute(&insert, &[&run.run_id, &seq, &snapshot.taken_ms, &snapshot.data]).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn latest_snapshot<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<Snapshot>> {
        self.run(move || format!("read the latest snapshot of run {run_id}"), async move {
            let mut conn = self.inner.lease().await?;
            let st = conn
                .prepare(
                    "SELECT seq, taken_ms, data FROM agent_snapshots WHERE run_id = $1
                         ORDER BY seq DESC, taken_ms DESC, id DESC LIMIT 1",
                )
                .await?;
            match conn.client.query_opt(&st, &[&run_id]).await? {
                Some(row) => Ok(Some(Snapshot {
                    seq: u64_from_db(STORE, "snapshot seq", row.try_get(0)?)?,
                    taken_ms: row.try_get(1)?,
                    data: row.try_get(2)?,
                })),
                None => Ok(None),
            }
        })
    }

    fn snapshots<'a>(&'a self, run_id: &'a str, limit: usize) -> StoreFuture<'a, Vec<Snapshot>> {
        self.run(move || format!("read the snapshots of run {run_id}"), async move {
            let mut conn = self.inner.lease().await?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let st = conn
                .prepare(
                    "SELECT seq, taken_ms, data FROM agent_snapshots WHERE run_id = $1
                         ORDER BY seq DESC, taken_ms DESC, id DESC LIMIT $2",
                )
                .await?;
            let mut snapshots = Vec::new();
            for row in conn.client.query(&st, &[&run_id, &limit]).await? {
                snapshots.push(Snapshot {
                    seq: u64_from_db(STORE, "snapshot seq", row.try_get(0)?)?,
                    taken_ms: row.try_get(1)?,
                    data: row.try_get(2)?,
                });
            }
            Ok(snapshots)
        })
    }

    fn put_input<'a>(&'a self, input: &'a InputRecord) -> StoreFuture<'a, ()> {
        self.run(move || format!("record input request {} of run {}", input.request_id, input.run_id), async move {
            let mut conn = self.inner.lease().await?;
            let timeout = input.timeout_ms.map(|t| u64_to_db(STORE, "timeout_ms", t)).transpose()?;
            let st = conn
                .prepare(
                    "INSERT INTO agent_inputs (run_id, request_id, state, prompt, requested_ms, timeout_ms,
                             default_value, answer, answered_ms, defaulted)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                         ON CONFLICT (run_id, request_id) DO UPDATE SET
                             state = excluded.state, prompt = excluded.prompt, requested_ms = excluded.requested_ms,
                             timeout_ms = excluded.timeout_ms, default_value = excluded.default_value,
                             answered_ms = CASE WHEN agent_inputs.answer IS NULL
                                 THEN excluded.answered_ms ELSE agent_inputs.answered_ms END,
                             defaulted = CASE WHEN agent_inputs.answer IS NULL
                                 THEN excluded.defaulted ELSE agent_inputs.defaulted END,
                             answer = COALESCE(agent_inputs.answer, excluded.answer)",
                )
                .await?;
            conn.client
                .execute(
                    &st,
                    &[
                        &input.run_id,
                        &input.request_id,
                        &input.state,
                        &input.prompt,
                        &input.requested_ms,
                        &timeout,
                        &input.default,
                        &input.answer,
                        &input.answered_ms,
                        &input.defaulted,
                    ],
                )
                .await?;
            Ok(())
        })
    }

    fn inputs<'a>(&'a self, run_id: Option<&'a str>, pending_only: bool) -> StoreFuture<'a, Vec<InputRecord>> {
        self.run(
            move || match run_id {
                Some(r) => format!("list input requests of run {r}"),
                None => "list input requests".to_owned(),
            },
            async move {
                let mut conn = self.inner.lease().await?;
                let rows = match (run_id, pending_only) {
                    (None, false) => {
                        let st = conn
                            .prepare(select_inputs!(" ORDER BY requested_ms, run_id COLLATE \"C\", request_id COLLATE \"C\""))
                            .await?;
                        conn.client.query(&st, &[]).await?
                    }
                    (None, true) => {
                        let st = conn
                            .prepare(select_inputs!(
                                " WHERE answer IS NULL ORDER BY requested_ms, run_id COLLATE \"C\", request_id COLLATE \"C\""
                            ))
                            .await?;
                        conn.client.query(&st, &[]).await?
                    }
                    (Some(run_id), false) => {
                        let st = conn
                            .prepare(select_inputs!(" WHERE run_id = $1 ORDER BY requested_ms, request_id COLLATE \"C\""))
                            .await?;
                        conn.client.query(&st, &[&run_id]).await?
                    }
                    (Some(run_id), true) => {
                        let st = conn
                            .prepare(select_inputs!(
                                " WHERE run_id = $1 AND answer IS NULL ORDER BY requested_ms, request_id COLLATE \"C\""
                            ))
                            .await?;
                        conn.client.query(&st, &[&run_id]).await?
                    }
                };
                rows.iter().map(read_input).collect()
            },
        )
    }

    fn answer_input<'a>(
        &'a self,
        run_id: &'a str,
        request_id: &'a str,
        answer: &'a str,
        defaulted: bool,
        at_ms: i64,
    ) -> StoreFuture<'a, bool> {
        self.run(move || format!("answer input request {request_id} of run {run_id}"), async move {
            let mut conn = self.inner.lease().await?;
            let st = conn
                .prepare(
                    "UPDATE agent_inputs SET answer = $3, defaulted = $4, answered_ms = $5
                         WHERE run_id = $1 AND request_id = $2 AND answer IS NULL",
                )
                .await?;
            let changed = conn.client.execute(&st, &[&run_id, &request_id, &answer, &defaulted, &at_ms]).await?;
            Ok(changed > 0)
        })
    }

    fn delete_run<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, bool> {
        self.run(move || format!("delete run {run_id}"), async move {
            let mut lease = self.inner.lease().await?;
            let Conn { client, statements } = &mut *lease;
            let tx = client.transaction().await?;
            let mut deleted = 0;
            for sql in [
                "DELETE FROM agent_runs WHERE run_id = $1",
                "DELETE FROM agent_journal WHERE run_id = $1",
                "DELETE FROM agent_snapshots WHERE run_id = $1",
                "DELETE FROM agent_inputs WHERE run_id = $1",
            ] {
                let st = prepare(tx.client(), statements, sql).await?;
                deleted += tx.execute(&st, &[&run_id]).await?;
            }
            tx.commit().await?;
            Ok(deleted > 0)
        })
    }

    fn apply_retention<'a>(&'a self, policy: &'a Retention, now_ms: i64) -> StoreFuture<'a, RetentionReport> {
        self.run(|| "apply retention".to_owned(), async move {
            let mut lease = self.inner.lease().await?;
            let Conn { client, statements } = &mut *lease;
            let tx = client.transaction().await?;
            let mut report = RetentionReport::default();
            if let Some(age) = policy.drop_finished_after {
                let cutoff = now_ms.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX));
                // Lock the runs to drop, so that the deletes below all agree on them.
                let select = prepare(
                    tx.client(),
                    statements,
                    concat!(
                        "SELECT run_id FROM agent_runs WHERE status IN ",
                        finished_sql!(),
                        " AND updated_ms < $1 FOR UPDATE"
                    ),
                )
                .await?;
                let ids = tx
                    .query(&select, &[&cutoff])
                    .await?
                    .iter()
                    .map(|r| r.try_get::<_, String>(0))
                    .collect::<Result<Vec<_>, _>>()?;
                if !ids.is_empty() {
                    let mut delete = async |sql: &'static str| -> Result<u64, tokio_postgres::Error> {
                        let st = prepare(tx.client(), statements, sql).await?;
                        tx.execute(&st, &[&ids]).await
                    };
                    report.entries += delete("DELETE FROM agent_journal WHERE run_id = ANY($1)").await?;
                    report.snapshots += delete("DELETE FROM agent_snapshots WHERE run_id = ANY($1)").await?;
                    delete("DELETE FROM agent_inputs WHERE run_id = ANY($1)").await?;
                    report.runs += delete("DELETE FROM agent_runs WHERE run_id = ANY($1)").await?;
                }
            }
            if let Some(keep) = policy.keep_snapshots {
                let keep = i64::try_from(keep.max(1)).unwrap_or(i64::MAX);
                let prune = prepare(
                    tx.client(),
                    statements,
                    "DELETE FROM agent_snapshots WHERE id IN (
                            SELECT id FROM (
                                SELECT id, row_number() OVER (
                                    PARTITION BY run_id ORDER BY seq DESC, taken_ms DESC, id DESC) AS rank
                                FROM agent_snapshots) AS ranked
                            WHERE rank > $1)",
                )
                .await?;
                report.snapshots += tx.execute(&prune, &[&keep]).await?;
                let covered = prepare(
                    tx.client(),
                    statements,
                    "DELETE FROM agent_journal WHERE seq <= (
                            SELECT min(s.seq) FROM agent_snapshots AS s WHERE s.run_id = agent_journal.run_id)",
                )
                .await?;
                report.entries += tx.execute(&covered, &[]).await?;
            }
            tx.commit().await?;
            Ok(report)
        })
    }
}
