//! [`PostgresStore`]: a checkpoint store in a PostgreSQL database, shared by workers on
//! several machines.
//!
//! Invariants:
//! - A store holds a pool of connections (deadpool-postgres, at most [`POOL_SIZE`]), opened
//!   as needed; a connection that has closed is dropped when it comes back and replaced.
//!   Each call holds one connection for its whole work, so its transaction is never
//!   interleaved with another call's. Prepared statements are cached per connection.
//! - Outages. Recycling is deadpool's `Fast`: a connection whose socket closed (the server
//!   restarted, the network cut it) is known closed by its connection task and is dropped
//!   on its return, never handed out again. `Verified` would add a round trip to every call
//!   and still not catch a connection that dies just after the check: a call on a dead
//!   connection fails transiently instead ([`StoreError::is_transient`]) and is retried on
//!   a fresh one by [`RetryingStore`](super::RetryingStore). Getting a connection (a free
//!   one, or a new one opened) is bounded by [`CONNECT_TIMEOUT`] on the monotonic clock, so
//!   a refused or hung connect fails (transiently) instead of hanging a run. TCP keepalives
//!   (15 s idle, then every 5 s, 3 probes) and a TCP user timeout of 30 s, unless the URL
//!   sets them, make a connection whose peer vanished fail within about 30 s.
//! - The schema is chosen per connection at its start (`search_path`, as a startup option),
//!   so every connection the pool opens, also after a restart of the server, uses it.
//! - Every multi-statement write is one transaction. A write of the run's row is one
//!   `INSERT ... ON CONFLICT DO UPDATE ... WHERE epoch = $epoch`, which locks the row and
//!   checks the epoch on its newest version: concurrent writes to one run (from any machine)
//!   are serialized, a claim that commits first fences the write, and `append` checks its
//!   batch against the `seq` the previous one committed. An owner's `append` (a durable
//!   run's deltas) is one statement: an `UPDATE` of the row fenced by the epoch and guarded
//!   by `last_seq`, whose result feeds the `INSERT` of the entries; the appends of many runs
//!   waiting at once share that statement and its commit (group commit: see `group`). A snapshot alone is one `INSERT ...
//!   SELECT ... FOR SHARE` of the run's row at the writer's epoch, so a claim waits for it or
//!   fences it. `answer_input` is one conditional `UPDATE`, so of concurrent answers exactly
//!   one wins.
//! - A request to cancel a state (`agent_state_cancels`, see `control`) is one statement:
//!   the insert, from the run's row read unfinished and locked `FOR KEY SHARE` (so a
//!   concurrent `delete_run` deletes it too, or it finds no run). The owner's take is one
//!   `DELETE ... RETURNING` guarded by its epoch, which returns the epoch the run is at, so
//!   a fenced take takes nothing and an empty poll writes nothing; of concurrent takes, a
//!   request goes to one.
//! - Lineage (`agent_lineage`, see [`Lineage`]): recording it is one `INSERT ... ON
//!   CONFLICT DO NOTHING` keyed by the run made, so of concurrent records for one run exactly
//!   one is kept and the others refused. `delete_run` and retention delete the run's own row
//!   in their transaction, never its descendants'. A stored kind that is not one, or a
//!   negative `parent_seq`, reads as [`StoreError::Corrupt`].
//! - Signals and timers (`agent_signals`, `agent_timers`, see [`SignalRecord`]): a send is
//!   one statement, the insert (`ON CONFLICT DO NOTHING` on the run and signal id) from the
//!   run's row read unfinished and locked `FOR KEY SHARE`, so a concurrent `delete_run`
//!   deletes the signal too, or the send finds no run; a send that races the run's last
//!   write is kept as if sent just before it. A wait's take first reads, without a lock,
//!   the run's epoch and whether the wait took a signal before or one of its name waits (a
//!   wait that polls costs one read and writes nothing); then, in a transaction that
//!   checks the epoch (the run's row locked `FOR SHARE`, as every fenced write here), the
//!   signal the wait took before, else one `UPDATE` of the oldest signal of its name not
//!   taken, chosen `FOR UPDATE SKIP LOCKED`: of concurrent takes each gets its own signal
//!   or none. Arming a timer is one such fenced transaction: the insert (`ON CONFLICT DO
//!   NOTHING`), then the stored wake time read in a statement of its own (so it sees a
//!   concurrent arm the insert waited for). `delete_run` and retention delete a run's
//!   signals and timers in their transaction.
//! - Schedules (`agent_schedules`, see [`ScheduleRecord`]): adding or replacing one is one
//!   `INSERT ... ON CONFLICT DO UPDATE` (keeping `created_ms` and `last_run_id`), whose
//!   `RETURNING (xmax = 0)` says whether the row was inserted: concurrent puts of one
//!   schedule are applied one after the other, each whole. Pausing, deleting and moving a
//!   cursor are one statement each; a move is an `UPDATE` guarded by the version its worker
//!   read, which PostgreSQL re-checks on the row's newest version after waiting for a
//!   concurrent write, so of concurrent moves exactly one matches. Every write bumps the
//!   version; a negative one reads as [`StoreError::Corrupt`]. Schedules belong to no run:
//!   `delete_run` and retention leave them.
//! - Ownership: a claim is one conditional `UPDATE` (or, for a run to create, one `INSERT ...
//!   ON CONFLICT DO NOTHING`): PostgreSQL re-checks its condition on the row's newest version
//!   after waiting for a concurrent claim, so of concurrent claims exactly one wins. Lease
//!   ends are `timestamptz` computed and compared with the server's `now()` only.
//! - A run's last journal `seq` is kept in its row, so retention dropping old entries never
//!   re-opens old `seq`s.
//! - Ordering ties are broken bytewise (`COLLATE "C"`), as the other stores do, whatever the
//!   database's collation.
//! - The connection's password is never written into an error message.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod};
use tokio_postgres::{Config, NoTls, Row};

use super::migrate::{self, backend, finished_sql, status_from_db, u64_from_db, u64_to_db};
use super::run_filter;
use super::{
    ttl_ms, CheckpointStore, Claim, ClaimNext, ClaimRequest, InputRecord, JournalEntry, Lineage, LineageKind, NextRun,
    Retention, RetentionReport, RunControl, RunQuery, RunRecord, ScheduleAdvance, ScheduleRecord, SignalRecord,
    SignalSent, Snapshot, StoreError, StoreFuture, Submission, Submitted, TimerRecord,
};

const STORE: &str = "postgres";

#[path = "postgres_group.rs"]
mod group;

/// The most connections one [`PostgresStore`] opens.
pub(crate) const POOL_SIZE: usize = 4;

/// How long a call waits for a connection (a free one of the pool, or a new one opened),
/// on the monotonic clock.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The TCP settings that make a dead connection fail, unless the URL set them.
fn bound_dead_connections(config: &mut Config) {
    if config.get_keepalives_idle() == Config::new().get_keepalives_idle() {
        config.keepalives_idle(Duration::from_secs(15));
    }
    if config.get_keepalives_interval().is_none() {
        config.keepalives_interval(Duration::from_secs(5));
    }
    if config.get_keepalives_retries().is_none() {
        config.keepalives_retries(3);
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(Duration::from_secs(30));
    }
}

/// A checkpoint store in a PostgreSQL database. Cloning it is cheap: clones share its
/// connections. Any number of stores, in any number of processes, may share one database.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    /// Where it connects, for `Debug` (never the password).
    hosts: Vec<tokio_postgres::config::Host>,
    dbname: Option<String>,
    /// The schema the tables are in, quoted, when not the server's default.
    schema: Option<String>,
    /// How to open the connection that listens for wake-ups (`wake_ups`).
    listen: Config,
    /// Owners' appends waiting for the next group commit.
    group: group::GroupCommit,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("hosts", &self.inner.hosts)
            .field("dbname", &self.inner.dbname)
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
        let mut config: Config = url.parse().map_err(|e| backend(STORE, "connect: parse the connection URL", e))?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(StoreError::Backend {
                store: STORE,
                message: "connect: a postgres store must be used within a tokio runtime".to_owned(),
                source: None,
            });
        }
        if let Some(schema) = &schema {
            let options = with_search_path(config.get_options(), schema);
            config.options(options);
        }
        bound_dead_connections(&mut config);
        let (hosts, dbname) = (config.get_hosts().to_vec(), config.get_dbname().map(str::to_owned));
        // `Fast`: see the module docs (outages).
        let listen = config.clone();
        let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        // No timeouts of the pool's own: they would run on tokio's clock, which tests pause
        // (and which then jumps while a connection is being opened); `conn` bounds getting a
        // connection on the monotonic clock instead. A URL may set `connect_timeout`.
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .build()
            .map_err(|e| backend(STORE, "connect: build the connection pool", e))?;
        let inner = Inner { pool, hosts, dbname, schema, listen, group: group::GroupCommit::default() };
        let mut conn = inner.pool.get().await.map_err(|e| Fail::Pool(e).into_store("connect"))?;
        let client: &mut tokio_postgres::Client = &mut conn;
        migrate::migrate_postgres(client, inner.schema.as_deref()).await.map_err(|e| match e {
            StoreError::Backend { store, message, source } => {
                StoreError::Backend { store, message: format!("connect: {message}"), source }
            }
            other => other,
        })?;
        drop(conn);
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

    /// A connection of the pool for one call, within [`CONNECT_TIMEOUT`].
    async fn conn(&self) -> Result<Object, Fail> {
        match super::retry::within(CONNECT_TIMEOUT, self.inner.pool.get()).await {
            Some(got) => got.map_err(Fail::Pool),
            None => Err(Fail::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no connection to the server within {CONNECT_TIMEOUT:?}"),
            ))),
        }
    }
}

/// The startup options `options` with `search_path` set to `schema` (quoted): PostgreSQL
/// splits options at spaces not escaped with a backslash.
fn with_search_path(options: Option<&str>, schema: &str) -> String {
    let escaped = schema.replace('\\', "\\\\").replace(' ', "\\ ");
    match options {
        Some(o) if !o.trim().is_empty() => format!("{o} -c search_path={escaped}"),
        _ => format!("-c search_path={escaped}"),
    }
}

/// An error inside a call, before it is given its context.
enum Fail {
    Db(tokio_postgres::Error),
    Pool(PoolError),
    /// No connection in time.
    Io(std::io::Error),
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
            Fail::Pool(e) => backend(STORE, what, e),
            Fail::Io(e) => backend(STORE, what, e),
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

/// Update a run's row, if its epoch is `$6`: returns its `last_seq`, and locks the row to
/// the transaction's end. PostgreSQL re-checks the epoch on the row's newest version after
/// waiting for a concurrent claim.
const UPDATE_RUN: &str = "UPDATE agent_runs SET agent = $2, status = $3, created_ms = $4, updated_ms = $5
    WHERE run_id = $1 AND epoch = $6
    RETURNING last_seq";

/// Insert a run's row (epoch 0, unowned), or update it if it is still at epoch 0: returns
/// its `last_seq`, and locks the row to the transaction's end.
const INSERT_RUN: &str = "INSERT INTO agent_runs (run_id, agent, status, created_ms, updated_ms)
    VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (run_id) DO UPDATE SET agent = excluded.agent, status = excluded.status,
        created_ms = excluded.created_ms, updated_ms = excluded.updated_ms
    WHERE agent_runs.epoch = 0
    RETURNING last_seq";

/// The run's columns as [`read_run`] reads them.
macro_rules! run_columns {
    () => {
        "run_id, agent, status, created_ms, updated_ms, owner,
         floor(extract(epoch FROM lease_until) * 1000)::BIGINT, epoch"
    };
}

macro_rules! select_runs {
    ($($rest:literal),*) => {
        concat!("SELECT ", run_columns!(), " FROM agent_runs" $(, $rest)*)
    };
}

/// PostgreSQL's pieces of a [`RunQuery`]'s statement (see `run_filter`).
const POSTGRES: run_filter::Dialect = run_filter::Dialect {
    placeholder: |n| format!("${n}"),
    contains: |p| format!("strpos(run_id, {p}) > 0"),
    run_id_order: " COLLATE \"C\"",
};

fn to_sql<'p>(p: &'p run_filter::Param<'_>) -> &'p (dyn tokio_postgres::types::ToSql + Sync) {
    match p {
        run_filter::Param::Text(t) => t,
        run_filter::Param::Int(n) => n,
    }
}

/// A lease of `$n` milliseconds from the server's `now()`.
macro_rules! lease_sql {
    ($n:literal) => {
        concat!("now() + $", $n, "::BIGINT * interval '1 millisecond'")
    };
}

/// Now, in milliseconds since the Unix epoch, by the server's clock.
macro_rules! now_ms_pg {
    () => {
        "floor(extract(epoch FROM now()) * 1000)::BIGINT"
    };
}

/// The channel wake-ups go on: submissions and runs handed back, in any schema of the
/// database (a wake-up from another schema costs a worker one claim that finds nothing).
macro_rules! wake_channel {
    () => {
        "agent_runs"
    };
}

/// Wake the workers listening (`wake_ups`). Best effort: workers poll anyway, so a failure
/// here is only logged.
async fn notify(conn: &impl deadpool_postgres::GenericClient) {
    if let Err(e) = conn.batch_execute(concat!("NOTIFY ", wake_channel!())).await {
        tracing::debug!(error = %e, "could not wake the workers; they find the run at their next poll");
    }
}

/// Write `run`'s row in `tx` (see [`UPDATE_RUN`], and [`INSERT_RUN`] at epoch 0): its
/// `last_seq`, or [`StoreError::Fenced`].
async fn upsert_run_in(tx: &deadpool_postgres::Transaction<'_>, run: &RunRecord) -> Result<u64, Fail> {
    let epoch = u64_to_db(STORE, "epoch", run.epoch)?;
    let status = run.status.as_str();
    let st = tx.prepare_cached(UPDATE_RUN).await?;
    let mut row =
        tx.query_opt(&st, &[&run.run_id, &run.agent, &status, &run.created_ms, &run.updated_ms, &epoch]).await?;
    if row.is_none() && epoch == 0 {
        let st = tx.prepare_cached(INSERT_RUN).await?;
        row = tx.query_opt(&st, &[&run.run_id, &run.agent, &status, &run.created_ms, &run.updated_ms]).await?;
    }
    match row {
        Some(row) => Ok(u64_from_db(STORE, "last seq", row.try_get(0)?)?),
        None => Err(fenced(tx, &run.run_id, run.epoch).await),
    }
}

/// A batch's `seq`s strictly increase ([`StoreError::Conflict`] at the first that does not).
fn check_increasing(run: &RunRecord, entries: &[JournalEntry]) -> Result<(), Fail> {
    let mut previous = 0;
    for e in entries {
        if e.seq <= previous {
            return Err(
                StoreError::Conflict { store: STORE, run_id: run.run_id.clone(), seq: e.seq, last: previous }.into()
            );
        }
        previous = e.seq;
    }
    Ok(())
}

/// The error of a write by the owner of `epoch`, refused: [`StoreError::Fenced`] with the
/// run's current epoch (0 without a row).
async fn fenced(client: &impl deadpool_postgres::GenericClient, run_id: &str, epoch: u64) -> Fail {
    let current = async {
        let st = client.prepare_cached("SELECT epoch FROM agent_runs WHERE run_id = $1").await?;
        let row = client.query_opt(&st, &[&run_id]).await?;
        let current = row.map(|r| r.try_get::<_, i64>(0)).transpose()?.unwrap_or(0);
        Ok::<_, Fail>(u64_from_db(STORE, "epoch", current)?)
    };
    match current.await {
        Ok(current) => StoreError::fenced(STORE, run_id, epoch, current).into(),
        Err(e) => e,
    }
}

/// The error of a snapshot whose `seq` run `run_id` has already.
async fn seq_taken(client: &impl deadpool_postgres::GenericClient, run_id: &str, seq: u64) -> Fail {
    let last = async {
        let st = client.prepare_cached("SELECT coalesce(max(seq), 0) FROM agent_snapshots WHERE run_id = $1").await?;
        let last: i64 = client.query_one(&st, &[&run_id]).await?.try_get(0)?;
        Ok::<_, Fail>(u64_from_db(STORE, "snapshot seq", last)?)
    };
    match last.await {
        Ok(last) => StoreError::Conflict { store: STORE, run_id: run_id.to_owned(), seq, last }.into(),
        Err(e) => e,
    }
}

/// Check, in `tx`, that the owner of `epoch` may write run `run_id`: its row is at that
/// epoch (locked `FOR SHARE` to the transaction's end, so no claim slips in), or there is
/// none and `epoch` is 0.
async fn check_epoch_in(tx: &deadpool_postgres::Transaction<'_>, run_id: &str, epoch: u64) -> Result<(), Fail> {
    let db_epoch = u64_to_db(STORE, "epoch", epoch)?;
    let lock = tx.prepare_cached("SELECT epoch FROM agent_runs WHERE run_id = $1 FOR SHARE").await?;
    let current = tx.query_opt(&lock, &[&run_id]).await?.map(|r| r.try_get::<_, i64>(0)).transpose()?;
    if current.unwrap_or(0) != db_epoch || (current.is_none() && epoch != 0) {
        return Err(fenced(tx, run_id, epoch).await);
    }
    Ok(())
}

/// Insert or update a request for input, keeping an answer already recorded.
async fn put_input_in(client: &impl deadpool_postgres::GenericClient, input: &InputRecord) -> Result<(), Fail> {
    let timeout = input.timeout_ms.map(|t| u64_to_db(STORE, "timeout_ms", t)).transpose()?;
    let st = client
        .prepare_cached(
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
    client
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
}

/// Answer a request unless it is unknown or answered: whether it was (one conditional
/// `UPDATE`, so of concurrent answers exactly one wins).
async fn answer_in(
    client: &impl deadpool_postgres::GenericClient,
    run_id: &str,
    request_id: &str,
    answer: &str,
    defaulted: bool,
    at_ms: i64,
) -> Result<bool, Fail> {
    let st = client
        .prepare_cached(
            "UPDATE agent_inputs SET answer = $3, defaulted = $4, answered_ms = $5
                 WHERE run_id = $1 AND request_id = $2 AND answer IS NULL",
        )
        .await?;
    let changed = client.execute(&st, &[&run_id, &request_id, &answer, &defaulted, &at_ms]).await?;
    Ok(changed > 0)
}

/// Insert a submitted run's row: the row, or `None` when its idempotency key names another
/// run (a concurrent submission with the same key makes this insert wait for it, then do
/// nothing).
async fn insert_submission(
    client: &impl deadpool_postgres::GenericClient,
    submission: &Submission,
) -> Result<Option<Row>, Fail> {
    let row = submission.row();
    let delay = submission.start_after.map(|_| submission.delay_ms());
    let flow_limit = submission.flow_limit.map(i64::from);
    let st = client
        .prepare_cached(concat!(
            "INSERT INTO agent_runs
                 (run_id, agent, status, created_ms, updated_ms, epoch, graph_hash, idempotency_key, input,
                  flow_key, flow_limit, debounce, not_before_ms)
             VALUES ($1, $2, $3, $4, $4, 0, $5, $6, $7, $8, $9, $10, ",
            now_ms_pg!(),
            " + $11)
             ON CONFLICT (agent, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
             RETURNING ",
            run_columns!()
        ))
        .await?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 11] = [
        &row.run_id,
        &row.agent,
        &row.status.as_str(),
        &row.created_ms,
        &submission.graph_hash,
        &submission.idempotency_key,
        &submission.input,
        &submission.flow_key,
        &flow_limit,
        &submission.debounce,
        &delay,
    ];
    Ok(client.query_opt(&st, &params).await?)
}

/// A debounced submission's look-up, in `tx` holding its key's advisory lock: the run its
/// idempotency key names, else the key's pending debounced run with its input replaced and
/// its start pushed; `None`: make the run.
async fn debounce_in(
    tx: &deadpool_postgres::Transaction<'_>,
    submission: &Submission,
) -> Result<Option<Submitted>, Fail> {
    let st = tx
        .prepare_cached("SELECT pg_advisory_xact_lock(hashtextextended('agent_debounce:' || $1 || chr(1) || $2, 0))")
        .await?;
    tx.execute(&st, &[&submission.agent, &submission.flow_key]).await?;
    if submission.idempotency_key.is_some() {
        let st = tx.prepare_cached(select_runs!(" WHERE agent = $1 AND idempotency_key = $2")).await?;
        if let Some(existing) = tx.query_opt(&st, &[&submission.agent, &submission.idempotency_key]).await? {
            return Ok(Some(Submitted { run: read_run(&existing)?, created: false }));
        }
    }
    let st = tx
        .prepare_cached(concat!(
            "UPDATE agent_runs SET input = $3, not_before_ms = ",
            now_ms_pg!(),
            " + $4
             WHERE run_id = (
                 SELECT run_id FROM agent_runs
                 WHERE agent = $1 AND flow_key = $2 AND debounce AND status = 'Idle' AND epoch = 0
                   AND owner IS NULL AND status NOT IN ",
            finished_sql!(),
            " ORDER BY created_ms, run_id COLLATE \"C\" LIMIT 1
             ) AND status = 'Idle' AND epoch = 0 AND owner IS NULL
             RETURNING ",
            run_columns!()
        ))
        .await?;
    let delay = submission.delay_ms();
    let pushed = tx.query_opt(&st, &[&submission.agent, &submission.flow_key, &submission.input, &delay]).await?;
    Ok(pushed.map(|r| read_run(&r)).transpose()?.map(|run| Submitted { run, created: false }))
}

/// A claim under flow control (see `queue`), in one transaction: the advisory lock of each
/// agent served (in name order, so two claims never wait on each other in a cycle), held to
/// the commit, so the runs each key has running are counted and taken in one step for
/// every worker; then the candidates ranked in one statement and taken in another. The
/// rows taken, best first (as `claim_next`'s statement returns them).
async fn claim_flow(
    conn: &mut Object,
    ask: &ClaimNext,
    agents: &[&str],
    hashes: &[&str],
    limit: i64,
) -> Result<Vec<Row>, Fail> {
    let tx = conn.transaction().await?;
    let mut locks: Vec<&str> = agents.to_vec();
    locks.sort_unstable();
    locks.dedup();
    let st = tx.prepare_cached("SELECT pg_advisory_xact_lock(hashtextextended('agent_flow:' || $1, 0))").await?;
    for agent in locks {
        tx.execute(&st, &[&agent]).await?;
    }
    let st = tx
        .prepare_cached(concat!(
            "WITH cand AS (
                 SELECT run_id, agent, created_ms, flow_key, flow_limit FROM agent_runs
                 WHERE status IN ('Idle', 'Running')
                   AND (owner IS NULL OR lease_until IS NULL OR lease_until <= now())
                   AND (not_before_ms IS NULL OR not_before_ms <= ",
            now_ms_pg!(),
            ") AND (agent, graph_hash) IN (SELECT * FROM unnest($1::TEXT[], $2::TEXT[]))
             ),
             busy AS (
                 SELECT agent, flow_key, count(*) AS n FROM agent_runs
                 WHERE agent = ANY($1::TEXT[]) AND flow_key IS NOT NULL AND status NOT IN ",
            finished_sql!(),
            " AND owner IS NOT NULL AND lease_until > now()
                 GROUP BY agent, flow_key
             ),
             ranked AS (
                 SELECT c.run_id, c.created_ms, c.flow_limit,
                     CASE WHEN c.flow_key IS NULL THEN 0
                          ELSE coalesce(b.n, 0) - 1 + row_number() OVER (
                              PARTITION BY c.agent, c.flow_key ORDER BY c.created_ms, c.run_id COLLATE \"C\")
                     END AS rank
                 FROM cand AS c LEFT JOIN busy AS b ON b.agent = c.agent AND b.flow_key = c.flow_key
             )
             SELECT run_id FROM ranked WHERE flow_limit IS NULL OR rank < flow_limit
             ORDER BY rank, created_ms, run_id COLLATE \"C\" LIMIT $3"
        ))
        .await?;
    let ids: Vec<String> =
        tx.query(&st, &[&agents, &hashes, &limit]).await?.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>()?;
    if ids.is_empty() {
        tx.commit().await?;
        return Ok(Vec::new());
    }
    // Runs without keys among them may be taken meanwhile by a claim that does not rank
    // (it skips keyed runs): the condition is checked again on each row's newest version.
    let st = tx
        .prepare_cached(concat!(
            "UPDATE agent_runs SET owner = $2, lease_until = ",
            lease_sql!(3),
            ", epoch = epoch + 1, control = NULL
             WHERE run_id = ANY($1::TEXT[]) AND status IN ('Idle', 'Running')
               AND (owner IS NULL OR lease_until IS NULL OR lease_until <= now())
             RETURNING ",
            run_columns!(),
            ", graph_hash, input"
        ))
        .await?;
    let mut rows = tx.query(&st, &[&ids, &ask.owner, &ttl_ms(ask.ttl)]).await?;
    tx.commit().await?;
    let place = |row: &Row| {
        let id: Option<String> = row.try_get(0).ok();
        ids.iter().position(|i| Some(i) == id.as_ref()).unwrap_or(usize::MAX)
    };
    rows.sort_by_key(|r| place(r));
    Ok(rows)
}

fn read_run(row: &Row) -> Result<RunRecord, Fail> {
    let run_id: String = row.try_get(0)?;
    let status: String = row.try_get(2)?;
    let status = status_from_db(STORE, &run_id, &status)?;
    let mut run = RunRecord::new(String::new(), row.try_get::<_, String>(1)?, status, row.try_get(3)?, row.try_get(4)?);
    run.owner = row.try_get(5)?;
    run.lease_until_ms = if run.owner.is_some() { row.try_get(6)? } else { None };
    run.epoch = u64_from_db(STORE, &format!("run {run_id}: epoch"), row.try_get(7)?)?;
    run.run_id = run_id;
    Ok(run)
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

/// A lineage as `SELECT run_id, parent_run_id, parent_seq, kind, created_ms, parent_state` reads it.
fn read_lineage(row: &Row) -> Result<Lineage, Fail> {
    let run_id: String = row.try_get(0)?;
    let kind: String = row.try_get(3)?;
    let Some(kind) = LineageKind::parse(&kind) else {
        let message = format!("run {run_id}: unknown lineage kind {kind:?}");
        return Err(StoreError::Corrupt { store: STORE, message }.into());
    };
    let mut lineage = Lineage::new(String::new(), row.try_get::<_, String>(1)?, kind, row.try_get(4)?);
    let parent_seq: Option<i64> = row.try_get(2)?;
    lineage.parent_seq = parent_seq.map(|s| u64_from_db(STORE, &format!("run {run_id}: parent seq"), s)).transpose()?;
    lineage.parent_state = row.try_get(5)?;
    lineage.run_id = run_id;
    Ok(lineage)
}

/// A signal's columns as [`read_signal`] reads them.
macro_rules! signal_columns {
    () => {
        "run_id, signal_id, name, payload, sent_ms, seq, taken_by, taken_ms"
    };
}

fn read_signal(row: &Row) -> Result<SignalRecord, Fail> {
    let run_id: String = row.try_get(0)?;
    let signal_id: String = row.try_get(1)?;
    let seq = u64_from_db(STORE, &format!("run {run_id}: signal {signal_id}: seq"), row.try_get(5)?)?;
    Ok(SignalRecord {
        name: row.try_get(2)?,
        payload: row.try_get(3)?,
        sent_ms: row.try_get(4)?,
        seq,
        taken_by: row.try_get(6)?,
        taken_ms: row.try_get(7)?,
        run_id,
        signal_id,
    })
}

/// A schedule's columns as [`read_schedule`] reads them.
macro_rules! schedule_columns {
    () => {
        "agent, name, cron, timezone, overlap, catch_up_ms, input, paused, created_ms, updated_ms,
         next_tick_ms, buffered_tick_ms, last_run_id, version"
    };
}

fn read_schedule(row: &Row) -> Result<ScheduleRecord, Fail> {
    let agent: String = row.try_get(0)?;
    let name: String = row.try_get(1)?;
    let version = u64_from_db(STORE, &format!("agent {agent}: schedule {name}: version"), row.try_get(13)?)?;
    Ok(ScheduleRecord {
        cron: row.try_get(2)?,
        timezone: row.try_get(3)?,
        overlap: row.try_get(4)?,
        catch_up_ms: row.try_get(5)?,
        input: row.try_get(6)?,
        paused: row.try_get(7)?,
        created_ms: row.try_get(8)?,
        updated_ms: row.try_get(9)?,
        next_tick_ms: row.try_get(10)?,
        buffered_tick_ms: row.try_get(11)?,
        last_run_id: row.try_get(12)?,
        version,
        agent,
        name,
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
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await?;
            upsert_run_in(&tx, run).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn get_run<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<RunRecord>> {
        self.run(move || format!("get run {run_id}"), async move {
            let conn = self.conn().await?;
            let st = conn.prepare_cached(select_runs!(" WHERE run_id = $1")).await?;
            let row = conn.query_opt(&st, &[&run_id]).await?;
            row.as_ref().map(read_run).transpose()
        })
    }

    fn list_runs<'a>(&'a self, query: &'a RunQuery) -> StoreFuture<'a, Vec<RunRecord>> {
        self.run(|| "list runs".to_owned(), async move {
            let conn = self.conn().await?;
            let (sql, params) = run_filter::list(select_runs!(), query, &POSTGRES);
            let st = conn.prepare_cached(&sql).await?;
            let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params.iter().map(to_sql).collect();
            let rows = conn.query(&st, &params).await?;
            rows.iter().map(read_run).collect()
        })
    }

    fn count_runs<'a>(&'a self, query: &'a RunQuery) -> StoreFuture<'a, u64> {
        self.run(|| "count runs".to_owned(), async move {
            let conn = self.conn().await?;
            let (sql, params) = run_filter::count(query, &POSTGRES);
            let st = conn.prepare_cached(&sql).await?;
            let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params.iter().map(to_sql).collect();
            let n: i64 = conn.query_one(&st, &params).await?.try_get(0)?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    fn append<'a>(&'a self, run: &'a RunRecord, entries: &'a [JournalEntry]) -> StoreFuture<'a, ()> {
        self.run(move || format!("append to run {}", run.run_id), async move {
            if run.epoch > 0 && !entries.is_empty() {
                check_increasing(run, entries)?;
                return Ok(self.append_grouped(run, entries).await?);
            }
            let mut conn = self.conn().await?;
            // Dropping `tx` without committing rolls it back.
            let tx = conn.transaction().await?;
            let mut last = upsert_run_in(&tx, run).await?;
            for e in entries {
                if e.seq <= last {
                    return Err(
                        StoreError::Conflict { store: STORE, run_id: run.run_id.clone(), seq: e.seq, last }.into()
                    );
                }
                last = e.seq;
            }
            if !entries.is_empty() {
                let insert = tx
                    .prepare_cached(
                        "INSERT INTO agent_journal (run_id, seq, state, payload, at_ms) VALUES ($1, $2, $3, $4, $5)",
                    )
                    .await?;
                for e in entries {
                    let seq = u64_to_db(STORE, "journal seq", e.seq)?;
                    tx.execute(&insert, &[&run.run_id, &seq, &e.state, &e.payload, &e.at_ms]).await?;
                }
                let last = u64_to_db(STORE, "journal seq", last)?;
                let update = tx.prepare_cached("UPDATE agent_runs SET last_seq = $2 WHERE run_id = $1").await?;
                tx.execute(&update, &[&run.run_id, &last]).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn journal<'a>(&'a self, run_id: &'a str, after: u64) -> StoreFuture<'a, Vec<JournalEntry>> {
        self.run(move || format!("read the journal of run {run_id}"), async move {
            let conn = self.conn().await?;
            let after = i64::try_from(after).unwrap_or(i64::MAX);
            let st = conn
                .prepare_cached(
                    "SELECT seq, state, payload, at_ms FROM agent_journal WHERE run_id = $1 AND seq > $2 ORDER BY seq",
                )
                .await?;
            let rows = conn.query(&st, &[&run_id, &after]).await?;
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

    fn save_snapshot<'a>(&'a self, run_id: &'a str, epoch: u64, snapshot: &'a Snapshot) -> StoreFuture<'a, ()> {
        self.run(move || format!("save a snapshot of run {run_id}"), async move {
            let conn = self.conn().await?;
            let seq = u64_to_db(STORE, "snapshot seq", snapshot.seq)?;
            let db_epoch = u64_to_db(STORE, "epoch", epoch)?;
            // `FOR SHARE` waits for a claim of the run in progress and re-reads its epoch.
            let st = conn
                .prepare_cached(
                    "INSERT INTO agent_snapshots (run_id, seq, taken_ms, data)
                         SELECT run_id, $2, $3, $4 FROM agent_runs WHERE run_id = $1 AND epoch = $5 FOR SHARE
                     ON CONFLICT (run_id, seq) DO NOTHING",
                )
                .await?;
            let inserted = conn.execute(&st, &[&run_id, &seq, &snapshot.taken_ms, &snapshot.data, &db_epoch]).await?;
            if inserted == 1 {
                return Ok(());
            }
            let st = conn.prepare_cached("SELECT epoch FROM agent_runs WHERE run_id = $1").await?;
            match conn.query_opt(&st, &[&run_id]).await? {
                None if epoch == 0 => {
                    Err(StoreError::Backend { store: STORE, message: "no such run".to_owned(), source: None }.into())
                }
                Some(row) if row.try_get::<_, i64>(0)? == db_epoch => Err(seq_taken(&conn, run_id, snapshot.seq).await),
                _ => Err(fenced(&conn, run_id, epoch).await),
            }
        })
    }

    fn save_run_snapshot<'a>(&'a self, run: &'a RunRecord, snapshot: &'a Snapshot) -> StoreFuture<'a, ()> {
        self.run(move || format!("save a snapshot of run {}", run.run_id), async move {
            let mut conn = self.conn().await?;
            let seq = u64_to_db(STORE, "snapshot seq", snapshot.seq)?;
            if run.epoch > 0 {
                // An owner's: one statement (its implicit transaction), the row's fenced update
                // feeding the snapshot's insert. A `seq` taken fails the insert, which rolls
                // the update back with it.
                let epoch = u64_to_db(STORE, "epoch", run.epoch)?;
                let st = conn
                    .prepare_cached(
                        "WITH owned AS (
                             UPDATE agent_runs SET agent = $2, status = $3, created_ms = $4, updated_ms = $5
                             WHERE run_id = $1 AND epoch = $6
                             RETURNING run_id
                         )
                         INSERT INTO agent_snapshots (run_id, seq, taken_ms, data)
                         SELECT run_id, $7, $8, $9 FROM owned",
                    )
                    .await?;
                let status = run.status.as_str();
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 9] = [
                    &run.run_id,
                    &run.agent,
                    &status,
                    &run.created_ms,
                    &run.updated_ms,
                    &epoch,
                    &seq,
                    &snapshot.taken_ms,
                    &snapshot.data,
                ];
                return match conn.execute(&st, &params).await {
                    Ok(1) => Ok(()),
                    Ok(_) => Err(fenced(&conn, &run.run_id, run.epoch).await),
                    Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
                        Err(seq_taken(&conn, &run.run_id, snapshot.seq).await)
                    }
                    Err(e) => Err(e.into()),
                };
            }
            // Dropping `tx` without committing rolls it back.
            let tx = conn.transaction().await?;
            upsert_run_in(&tx, run).await?;
            let insert = tx
                .prepare_cached(
                    "INSERT INTO agent_snapshots (run_id, seq, taken_ms, data) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (run_id, seq) DO NOTHING",
                )
                .await?;
            if tx.execute(&insert, &[&run.run_id, &seq, &snapshot.taken_ms, &snapshot.data]).await? == 0 {
                return Err(seq_taken(&tx, &run.run_id, snapshot.seq).await);
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn claim_run<'a>(&'a self, claim: &'a ClaimRequest) -> StoreFuture<'a, Claim> {
        self.run(move || format!("claim run {}", claim.run_id), async move {
            let conn = self.conn().await?;
            let ttl = claim.ttl_ms();
            if let Some(row) = &claim.create {
                let st = conn
                    .prepare_cached(concat!(
                        "INSERT INTO agent_runs
                             (run_id, agent, status, created_ms, updated_ms, owner, lease_until, epoch, graph_hash, input)
                         VALUES ($1, $2, $3, $4, $5, $6, ",
                        lease_sql!(7),
                        ", 1, $8, $9) ON CONFLICT (run_id) DO NOTHING RETURNING ",
                        run_columns!()
                    ))
                    .await?;
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 9] = [
                    &claim.run_id,
                    &row.agent,
                    &row.status.as_str(),
                    &row.created_ms,
                    &row.updated_ms,
                    &claim.owner,
                    &ttl,
                    &claim.graph_hash,
                    &claim.input,
                ];
                if let Some(created) = conn.query_opt(&st, &params).await? {
                    return Ok(Claim::Taken(read_run(&created)?));
                }
            }
            // One conditional update: PostgreSQL re-checks the condition on the newest
            // version of the row after waiting for a concurrent claim.
            let st = conn
                .prepare_cached(concat!(
                    "UPDATE agent_runs SET owner = $2, lease_until = ",
                    lease_sql!(3),
                    ", epoch = epoch + 1, control = NULL
                     WHERE run_id = $1 AND ($4 OR status NOT IN ",
                    finished_sql!(),
                    ") AND (owner IS NULL OR lease_until IS NULL OR lease_until <= now() OR ($5 AND owner = $2))
                     RETURNING ",
                    run_columns!()
                ))
                .await?;
            let taken =
                conn.query_opt(&st, &[&claim.run_id, &claim.owner, &ttl, &claim.finished, &claim.reclaim]).await?;
            if let Some(taken) = taken {
                return Ok(Claim::Taken(read_run(&taken)?));
            }
            let st = conn.prepare_cached(select_runs!(" WHERE run_id = $1")).await?;
            Ok(match conn.query_opt(&st, &[&claim.run_id]).await?.as_ref().map(read_run).transpose()? {
                None => Claim::Missing,
                Some(row) if row.status.is_finished() && !claim.finished => Claim::Finished(row),
                Some(row) => Claim::Held(row),
            })
        })
    }

    fn submit_run<'a>(&'a self, submission: &'a Submission) -> StoreFuture<'a, Submitted> {
        self.run(move || format!("submit run {}", submission.run_id), async move {
            submission.check(STORE)?;
            let mut conn = self.conn().await?;
            let made = if submission.debounce {
                // One transaction holding the key's advisory lock: of concurrent debounced
                // submissions of one key, one makes the run and the others find it.
                let tx = conn.transaction().await?;
                if let Some(found) = debounce_in(&tx, submission).await? {
                    tx.commit().await?;
                    return Ok(found);
                }
                let made = insert_submission(&tx, submission).await?;
                tx.commit().await?;
                made
            } else {
                insert_submission(&conn, submission).await?
            };
            if let Some(made) = made {
                notify(&conn).await;
                return Ok(Submitted { run: read_run(&made)?, created: true });
            }
            let st = conn.prepare_cached(select_runs!(" WHERE agent = $1 AND idempotency_key = $2")).await?;
            match conn.query_opt(&st, &[&submission.agent, &submission.idempotency_key]).await? {
                Some(existing) => Ok(Submitted { run: read_run(&existing)?, created: false }),
                None => Err(Fail::Store(StoreError::Backend {
                    store: STORE,
                    message: "the run the idempotency key named was deleted meanwhile; submit again".to_owned(),
                    source: None,
                })),
            }
        })
    }

    fn wake_ups<'a>(&'a self) -> StoreFuture<'a, Option<tokio::sync::mpsc::Receiver<()>>> {
        self.run(|| "listen for runs to claim".to_owned(), async move {
            let (client, mut connection) = self.inner.listen.connect(NoTls).await?;
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            let (listening_tx, listening) = tokio::sync::oneshot::channel();
            // One task owns the connection and its client (dropping the client would close
            // it): it sends `LISTEN` and then forwards notifications, until the connection
            // ends or nobody listens any more.
            tokio::spawn(async move {
                let messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                futures_util::pin_mut!(messages);
                let listen = client.batch_execute(concat!("LISTEN ", wake_channel!()));
                futures_util::pin_mut!(listen);
                let mut listening_tx = Some(listening_tx);
                loop {
                    tokio::select! {
                        said = &mut listen, if listening_tx.is_some() => {
                            if let Some(t) = listening_tx.take() {
                                let _ = t.send(said);
                            }
                        }
                        () = tx.closed() => return,
                        message = futures_util::StreamExt::next(&mut messages) => match message {
                            // Coalesced: one wake-up pending is enough, the worker claims all it can.
                            Some(Ok(tokio_postgres::AsyncMessage::Notification(_))) => {
                                let _ = tx.try_send(());
                            }
                            Some(Ok(_)) => {}
                            Some(Err(e)) => {
                                tracing::debug!(error = %e, "the connection listening for runs ended");
                                return;
                            }
                            None => return,
                        },
                    }
                }
            });
            match listening.await {
                Ok(Ok(())) => Ok(Some(rx)),
                Ok(Err(e)) => Err(Fail::Db(e)),
                Err(_) => Err(Fail::Io(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "the connection closed before LISTEN",
                ))),
            }
        })
    }

    fn run_input<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<String>> {
        self.run(move || format!("read the input of run {run_id}"), async move {
            let conn = self.conn().await?;
            let st = conn.prepare_cached("SELECT input FROM agent_runs WHERE run_id = $1").await?;
            let row = conn.query_opt(&st, &[&run_id]).await?;
            Ok(row.map(|r| r.try_get::<_, Option<String>>(0)).transpose()?.flatten())
        })
    }

    fn request_control<'a>(&'a self, run_id: &'a str, control: RunControl) -> StoreFuture<'a, bool> {
        self.run(move || format!("ask run {run_id} to {}", control.as_str()), async move {
            let conn = self.conn().await?;
            let st = conn
                .prepare_cached(concat!(
                    "UPDATE agent_runs SET control = CASE WHEN control = 'cancel' THEN control ELSE $2 END
                     WHERE run_id = $1 AND status NOT IN ",
                    finished_sql!()
                ))
                .await?;
            Ok(conn.execute(&st, &[&run_id, &control.as_str()]).await? > 0)
        })
    }

    fn run_control<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<RunControl>> {
        self.run(move || format!("read what is asked of run {run_id}"), async move {
            let conn = self.conn().await?;
            let st = conn.prepare_cached("SELECT control FROM agent_runs WHERE run_id = $1").await?;
            let row = conn.query_opt(&st, &[&run_id]).await?;
            let control = row.map(|r| r.try_get::<_, Option<String>>(0)).transpose()?.flatten();
            Ok(control.as_deref().and_then(RunControl::parse))
        })
    }

    fn request_state_cancel<'a>(&'a self, run_id: &'a str, state: &'a str) -> StoreFuture<'a, bool> {
        self.run(move || format!("ask run {run_id} to cancel state {state}"), async move {
            let conn = self.conn().await?;
            // One statement: the run's row, locked `FOR KEY SHARE` (which owners' writes and
            // claims do not wait for, a delete does) so it is not deleted under the insert.
            let st = conn
                .prepare_cached(concat!(
                    "WITH run AS (
                         SELECT run_id FROM agent_runs WHERE run_id = $1 AND status NOT IN ",
                    finished_sql!(),
                    " FOR KEY SHARE
                     ), asked AS (
                         INSERT INTO agent_state_cancels (run_id, state, requested_ms)
                         SELECT run_id, $2, $3 FROM run
                         ON CONFLICT (run_id, state) DO NOTHING
                     )
                     SELECT count(*) FROM run"
                ))
                .await?;
            let found: i64 = conn.query_one(&st, &[&run_id, &state, &super::now_ms()]).await?.try_get(0)?;
            Ok(found > 0)
        })
    }

    fn take_state_cancels<'a>(&'a self, run_id: &'a str, epoch: u64) -> StoreFuture<'a, Vec<String>> {
        self.run(move || format!("take the state cancels asked of run {run_id}"), async move {
            let conn = self.conn().await?;
            let db_epoch = u64_to_db(STORE, "epoch", epoch)?;
            // One statement: the requests deleted only if the run is at `epoch`, with the
            // epoch it is at (no row: the run is gone). An empty poll writes nothing.
            let st = conn
                .prepare_cached(
                    "WITH run AS (
                         SELECT epoch FROM agent_runs WHERE run_id = $1
                     ), taken AS (
                         DELETE FROM agent_state_cancels
                         WHERE run_id = $1 AND EXISTS (SELECT 1 FROM run WHERE epoch = $2)
                         RETURNING id, state
                     )
                     SELECT run.epoch, taken.id, taken.state FROM run LEFT JOIN taken ON true",
                )
                .await?;
            let rows = conn.query(&st, &[&run_id, &db_epoch]).await?;
            let current = rows.first().map(|r| r.try_get::<_, i64>(0)).transpose()?.unwrap_or(0);
            if current != db_epoch {
                let current = u64_from_db(STORE, "epoch", current)?;
                return Err(StoreError::fenced(STORE, run_id, epoch, current).into());
            }
            let mut taken = Vec::with_capacity(rows.len());
            for row in &rows {
                if let Some(id) = row.try_get::<_, Option<i64>>(1)? {
                    taken.push((id, row.try_get::<_, String>(2)?));
                }
            }
            taken.sort_unstable_by_key(|(id, _)| *id);
            Ok(taken.into_iter().map(|(_, state)| state).collect())
        })
    }

    fn record_lineage<'a>(&'a self, lineage: &'a Lineage) -> StoreFuture<'a, ()> {
        self.run(move || format!("record the lineage of run {}", lineage.run_id), async move {
            let conn = self.conn().await?;
            let parent_seq = lineage.parent_seq.map(|s| u64_to_db(STORE, "parent seq", s)).transpose()?;
            // One statement: of concurrent records for one run, the first committed is kept.
            let st = conn
                .prepare_cached(
                    "INSERT INTO agent_lineage (run_id, parent_run_id, parent_seq, kind, created_ms, parent_state)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (run_id) DO NOTHING",
                )
                .await?;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [
                &lineage.run_id,
                &lineage.parent_run_id,
                &parent_seq,
                &lineage.kind.as_str(),
                &lineage.created_ms,
                &lineage.parent_state,
            ];
            if conn.execute(&st, &params).await? == 0 {
                return Err(super::lineage::recorded_already(STORE, &lineage.run_id).into());
            }
            Ok(())
        })
    }

    fn lineage<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<Lineage>> {
        self.run(move || format!("read the lineage of run {run_id}"), async move {
            let conn = self.conn().await?;
            let st = conn
                .prepare_cached(
                    "SELECT run_id, parent_run_id, parent_seq, kind, created_ms, parent_state FROM agent_lineage WHERE run_id = $1",
                )
                .await?;
            conn.query_opt(&st, &[&run_id]).await?.as_ref().map(read_lineage).transpose()
        })
    }

    fn descendants<'a>(&'a self, parent_run_id: &'a str) -> StoreFuture<'a, Vec<Lineage>> {
        self.run(move || format!("list the runs made from run {parent_run_id}"), async move {
            let conn = self.conn().await?;
            let st = conn
                .prepare_cached(
                    "SELECT run_id, parent_run_id, parent_seq, kind, created_ms, parent_state FROM agent_lineage
                     WHERE parent_run_id = $1 ORDER BY created_ms, run_id COLLATE \"C\"",
                )
                .await?;
            conn.query(&st, &[&parent_run_id]).await?.iter().map(read_lineage).collect()
        })
    }

    fn claim_next<'a>(&'a self, ask: &'a ClaimNext) -> StoreFuture<'a, Vec<NextRun>> {
        self.run(|| "claim the next runs".to_owned(), async move {
            if ask.limit == 0 || ask.serves.is_empty() {
                return Ok(Vec::new());
            }
            let mut conn = self.conn().await?;
            let agents: Vec<&str> = ask.serves.iter().map(|s| s.agent.as_str()).collect();
            let hashes: Vec<&str> = ask.serves.iter().map(|s| s.graph_hash.as_str()).collect();
            let limit = i64::try_from(ask.limit).unwrap_or(i64::MAX);
            // Candidates locked by a concurrent claim are skipped, not waited for; a locked
            // row's condition is checked again on its newest version. Only while no served
            // agent has an unfinished run with a flow key: then the claim ranks by keys.
            let st = conn
                .prepare_cached(concat!(
                    "WITH next AS (
                         SELECT run_id FROM agent_runs
                         WHERE status IN ('Idle', 'Running')
                           AND (owner IS NULL OR lease_until IS NULL OR lease_until <= now())
                           AND (agent, graph_hash) IN (SELECT * FROM unnest($1::TEXT[], $2::TEXT[]))
                           AND flow_key IS NULL
                           AND (not_before_ms IS NULL OR not_before_ms <= ",
                    now_ms_pg!(),
                    ") AND NOT EXISTS (SELECT 1 FROM agent_runs AS k
                               WHERE k.agent = ANY($1::TEXT[]) AND k.flow_key IS NOT NULL AND k.status NOT IN ",
                    finished_sql!(),
                    ")
                         ORDER BY created_ms, run_id COLLATE \"C\"
                         LIMIT $3
                         FOR UPDATE SKIP LOCKED
                     )
                     UPDATE agent_runs SET owner = $4, lease_until = ",
                    lease_sql!(5),
                    ", epoch = epoch + 1, control = NULL
                     WHERE run_id IN (SELECT run_id FROM next)
                     RETURNING ",
                    run_columns!(),
                    ", graph_hash, input"
                ))
                .await?;
            let mut rows = conn.query(&st, &[&agents, &hashes, &limit, &ask.owner, &ttl_ms(ask.ttl)]).await?;
            let mut ranked = false;
            if rows.is_empty() {
                let st = conn
                    .prepare_cached(concat!(
                        "SELECT EXISTS (SELECT 1 FROM agent_runs
                             WHERE agent = ANY($1::TEXT[]) AND flow_key IS NOT NULL AND status NOT IN ",
                        finished_sql!(),
                        ")"
                    ))
                    .await?;
                if conn.query_one(&st, &[&agents]).await?.try_get::<_, bool>(0)? {
                    rows = claim_flow(&mut conn, ask, &agents, &hashes, limit).await?;
                    ranked = true;
                }
            }
            let mut taken = rows
                .iter()
                .map(|r| {
                    let graph_hash: Option<String> = r.try_get(8)?;
                    Ok(NextRun { row: read_run(r)?, graph_hash: graph_hash.unwrap_or_default(), input: r.try_get(9)? })
                })
                .collect::<Result<Vec<_>, Fail>>()?;
            if !ranked {
                taken.sort_by(|a, b| (a.row.created_ms, &a.row.run_id).cmp(&(b.row.created_ms, &b.row.run_id)));
            }
            Ok(taken)
        })
    }

    fn renew_lease<'a>(&'a self, run_id: &'a str, owner: &'a str, epoch: u64, ttl: Duration) -> StoreFuture<'a, i64> {
        self.run(move || format!("renew the lease on run {run_id}"), async move {
            let conn = self.conn().await?;
            let db_epoch = u64_to_db(STORE, "epoch", epoch)?;
            let st = conn
                .prepare_cached(concat!(
                    "UPDATE agent_runs SET lease_until = ",
                    lease_sql!(4),
                    " WHERE run_id = $1 AND owner = $2 AND epoch = $3
                     RETURNING floor(extract(epoch FROM lease_until) * 1000)::BIGINT"
                ))
                .await?;
            match conn.query_opt(&st, &[&run_id, &owner, &db_epoch, &ttl_ms(ttl)]).await? {
                Some(row) => Ok(row.try_get(0)?),
                None => Err(fenced(&conn, run_id, epoch).await),
            }
        })
    }

    fn release_run<'a>(&'a self, run_id: &'a str, epoch: u64) -> StoreFuture<'a, ()> {
        self.run(move || format!("release run {run_id}"), async move {
            let conn = self.conn().await?;
            let db_epoch = u64_to_db(STORE, "epoch", epoch)?;
            let st = conn
                .prepare_cached(
                    "UPDATE agent_runs SET owner = NULL, lease_until = NULL WHERE run_id = $1 AND epoch = $2
                     RETURNING status IN ('Idle', 'Running')",
                )
                .await?;
            match conn.query_opt(&st, &[&run_id, &db_epoch]).await? {
                None => Err(fenced(&conn, run_id, epoch).await),
                Some(row) => {
                    // Handed back unfinished: a worker can take it now.
                    if row.try_get::<_, bool>(0)? {
                        notify(&conn).await;
                    }
                    Ok(())
                }
            }
        })
    }

    fn prune_snapshots<'a>(&'a self, run_id: &'a str, epoch: u64, keep: usize) -> StoreFuture<'a, RetentionReport> {
        self.run(move || format!("prune the snapshots of run {run_id}"), async move {
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await?;
            check_epoch_in(&tx, run_id, epoch).await?;
            let keep = i64::try_from(keep.max(1)).unwrap_or(i64::MAX);
            let prune = tx
                .prepare_cached(
                    "DELETE FROM agent_snapshots WHERE run_id = $1 AND id IN (
                        SELECT id FROM agent_snapshots WHERE run_id = $1
                        ORDER BY seq DESC, taken_ms DESC, id DESC OFFSET $2)",
                )
                .await?;
            let snapshots = tx.execute(&prune, &[&run_id, &keep]).await?;
            let covered = tx
                .prepare_cached(
                    "DELETE FROM agent_journal WHERE run_id = $1
                        AND seq <= (SELECT min(seq) FROM agent_snapshots WHERE run_id = $1)",
                )
                .await?;
            let entries = tx.execute(&covered, &[&run_id]).await?;
            tx.commit().await?;
            Ok(RetentionReport { snapshots, entries, runs: 0 })
        })
    }

    fn latest_snapshot<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Option<Snapshot>> {
        self.run(move || format!("read the latest snapshot of run {run_id}"), async move {
            let conn = self.conn().await?;
            let st = conn
                .prepare_cached(
                    "SELECT seq, taken_ms, data FROM agent_snapshots WHERE run_id = $1
                         ORDER BY seq DESC, taken_ms DESC, id DESC LIMIT 1",
                )
                .await?;
            match conn.query_opt(&st, &[&run_id]).await? {
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
            let conn = self.conn().await?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let st = conn
                .prepare_cached(
                    "SELECT seq, taken_ms, data FROM agent_snapshots WHERE run_id = $1
                         ORDER BY seq DESC, taken_ms DESC, id DESC LIMIT $2",
                )
                .await?;
            let mut snapshots = Vec::new();
            for row in conn.query(&st, &[&run_id, &limit]).await? {
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
            put_input_in(&self.conn().await?, input).await
        })
    }

    fn put_input_fenced<'a>(&'a self, input: &'a InputRecord, epoch: u64) -> StoreFuture<'a, ()> {
        self.run(move || format!("record input request {} of run {}", input.request_id, input.run_id), async move {
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await?;
            check_epoch_in(&tx, &input.run_id, epoch).await?;
            put_input_in(&tx, input).await?;
            tx.commit().await?;
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
                let conn = self.conn().await?;
                let rows = match (run_id, pending_only) {
                    (None, false) => {
                        let st = conn.prepare_cached(select_inputs!(" ORDER BY requested_ms, run_id COLLATE \"C\", request_id COLLATE \"C\""))
                            .await?;
                        conn.query(&st, &[]).await?
                    }
                    (None, true) => {
                        let st = conn.prepare_cached(select_inputs!(
                                " WHERE answer IS NULL ORDER BY requested_ms, run_id COLLATE \"C\", request_id COLLATE \"C\""
                            ))
                            .await?;
                        conn.query(&st, &[]).await?
                    }
                    (Some(run_id), false) => {
                        let st = conn.prepare_cached(select_inputs!(" WHERE run_id = $1 ORDER BY requested_ms, request_id COLLATE \"C\""))
                            .await?;
                        conn.query(&st, &[&run_id]).await?
                    }
                    (Some(run_id), true) => {
                        let st = conn.prepare_cached(select_inputs!(
                                " WHERE run_id = $1 AND answer IS NULL ORDER BY requested_ms, request_id COLLATE \"C\""
                            ))
                            .await?;
                        conn.query(&st, &[&run_id]).await?
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
            answer_in(&self.conn().await?, run_id, request_id, answer, defaulted, at_ms).await
        })
    }

    fn answer_input_fenced<'a>(
        &'a self,
        run_id: &'a str,
        request_id: &'a str,
        answer: &'a str,
        defaulted: bool,
        at_ms: i64,
        epoch: u64,
    ) -> StoreFuture<'a, bool> {
        self.run(move || format!("answer input request {request_id} of run {run_id}"), async move {
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await?;
            check_epoch_in(&tx, run_id, epoch).await?;
            let answered = answer_in(&tx, run_id, request_id, answer, defaulted, at_ms).await?;
            tx.commit().await?;
            Ok(answered)
        })
    }

    fn send_signal<'a>(&'a self, signal: &'a SignalRecord) -> StoreFuture<'a, SignalSent> {
        self.run(move || format!("send signal {} to run {}", signal.signal_id, signal.run_id), async move {
            let conn = self.conn().await?;
            // One statement: the run's row, locked `FOR KEY SHARE` (which owners' writes and
            // claims do not wait for, a delete does) so it is not deleted under the insert,
            // and the signal inserted only if the run is unfinished and has none of its id.
            let st = conn
                .prepare_cached(concat!(
                    "WITH run AS (
                         SELECT status FROM agent_runs WHERE run_id = $1 FOR KEY SHARE
                     ), kept AS (
                         INSERT INTO agent_signals (run_id, signal_id, name, payload, sent_ms)
                         SELECT $1, $2, $3, $4, $5 FROM run WHERE status NOT IN ",
                    finished_sql!(),
                    " ON CONFLICT (run_id, signal_id) DO NOTHING
                         RETURNING 1
                     )
                     SELECT run.status, (SELECT count(*) FROM kept) FROM run"
                ))
                .await?;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
                [&signal.run_id, &signal.signal_id, &signal.name, &signal.payload, &signal.sent_ms];
            let Some(row) = conn.query_opt(&st, &params).await? else { return Ok(SignalSent::UnknownRun) };
            let status = status_from_db(STORE, &signal.run_id, &row.try_get::<_, String>(0)?)?;
            if status.is_finished() {
                return Ok(SignalSent::Finished(status));
            }
            Ok(if row.try_get::<_, i64>(1)? > 0 { SignalSent::Kept } else { SignalSent::Duplicate })
        })
    }

    fn take_signal<'a>(
        &'a self,
        run_id: &'a str,
        name: &'a str,
        wait_key: &'a str,
        now_ms: i64,
        epoch: u64,
    ) -> StoreFuture<'a, Option<SignalRecord>> {
        self.run(move || format!("take signal {name} of run {run_id} for wait {wait_key}"), async move {
            let mut conn = self.conn().await?;
            let db_epoch = u64_to_db(STORE, "epoch", epoch)?;
            // The wait polls: unless it took a signal before or one of its name waits, one
            // read, which locks and writes nothing.
            let st = conn
                .prepare_cached(
                    "SELECT epoch,
                         EXISTS (SELECT 1 FROM agent_signals WHERE run_id = $1 AND taken_by = $3)
                         OR EXISTS (SELECT 1 FROM agent_signals WHERE run_id = $1 AND name = $2 AND taken_by IS NULL)
                     FROM agent_runs WHERE run_id = $1",
                )
                .await?;
            let found = conn.query_opt(&st, &[&run_id, &name, &wait_key]).await?;
            let current = found.as_ref().map(|r| r.try_get::<_, i64>(0)).transpose()?.unwrap_or(0);
            if current != db_epoch {
                let current = u64_from_db(STORE, "epoch", current)?;
                return Err(StoreError::fenced(STORE, run_id, epoch, current).into());
            }
            if !found.map(|r| r.try_get::<_, bool>(1)).transpose()?.unwrap_or(false) {
                return Ok(None);
            }
            let tx = conn.transaction().await?;
            check_epoch_in(&tx, run_id, epoch).await?;
            let st = tx
                .prepare_cached(concat!(
                    "SELECT ",
                    signal_columns!(),
                    " FROM agent_signals WHERE run_id = $1 AND taken_by = $2"
                ))
                .await?;
            if let Some(row) = tx.query_opt(&st, &[&run_id, &wait_key]).await? {
                let before = read_signal(&row)?;
                tx.commit().await?;
                return Ok(Some(before));
            }
            // A signal another take locked is skipped, not waited for: of concurrent takes,
            // each gets its own or none.
            let st = tx
                .prepare_cached(concat!(
                    "UPDATE agent_signals SET taken_by = $3, taken_ms = $4
                     WHERE run_id = $1 AND signal_id = (
                         SELECT signal_id FROM agent_signals WHERE run_id = $1 AND name = $2 AND taken_by IS NULL
                         ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED)
                     RETURNING ",
                    signal_columns!()
                ))
                .await?;
            let taken = tx.query_opt(&st, &[&run_id, &name, &wait_key, &now_ms]).await?;
            let taken = taken.as_ref().map(read_signal).transpose()?;
            tx.commit().await?;
            Ok(taken)
        })
    }

    fn signals<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Vec<SignalRecord>> {
        self.run(move || format!("list the signals of run {run_id}"), async move {
            let conn = self.conn().await?;
            let st = conn
                .prepare_cached(concat!(
                    "SELECT ",
                    signal_columns!(),
                    " FROM agent_signals WHERE run_id = $1 ORDER BY seq"
                ))
                .await?;
            conn.query(&st, &[&run_id]).await?.iter().map(read_signal).collect()
        })
    }

    fn arm_timer<'a>(&'a self, timer: &'a TimerRecord, epoch: u64) -> StoreFuture<'a, i64> {
        self.run(move || format!("arm timer {} of run {}", timer.key, timer.run_id), async move {
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await?;
            check_epoch_in(&tx, &timer.run_id, epoch).await?;
            let arm = tx
                .prepare_cached(
                    "INSERT INTO agent_timers (run_id, timer_key, wake_ms) VALUES ($1, $2, $3)
                     ON CONFLICT (run_id, timer_key) DO NOTHING",
                )
                .await?;
            tx.execute(&arm, &[&timer.run_id, &timer.key, &timer.wake_ms]).await?;
            // The first armed wins. A statement of its own, so it sees the timer of a
            // concurrent arm that the insert waited for.
            let read =
                tx.prepare_cached("SELECT wake_ms FROM agent_timers WHERE run_id = $1 AND timer_key = $2").await?;
            let wake_ms: i64 = tx.query_one(&read, &[&timer.run_id, &timer.key]).await?.try_get(0)?;
            tx.commit().await?;
            Ok(wake_ms)
        })
    }

    fn timers<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, Vec<TimerRecord>> {
        self.run(move || format!("list the timers of run {run_id}"), async move {
            let conn = self.conn().await?;
            let st = conn
                .prepare_cached(
                    "SELECT run_id, timer_key, wake_ms FROM agent_timers WHERE run_id = $1 ORDER BY timer_key COLLATE \"C\"",
                )
                .await?;
            let rows = conn.query(&st, &[&run_id]).await?;
            rows.iter()
                .map(|r| Ok(TimerRecord { run_id: r.try_get(0)?, key: r.try_get(1)?, wake_ms: r.try_get(2)? }))
                .collect()
        })
    }

    fn put_schedule<'a>(&'a self, schedule: &'a ScheduleRecord) -> StoreFuture<'a, bool> {
        self.run(move || format!("put schedule {} of agent {}", schedule.name, schedule.agent), async move {
            let conn = self.conn().await?;
            // One statement: the insert, or the replacement of the definition and cursor
            // (`created_ms` and `last_run_id` kept). `xmax` is 0 on a row this statement
            // inserted, the updating transaction's id on a row it updated.
            let st = conn
                .prepare_cached(
                    "INSERT INTO agent_schedules (agent, name, cron, timezone, overlap, catch_up_ms, input, paused,
                         created_ms, updated_ms, next_tick_ms, buffered_tick_ms, last_run_id, version)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 1)
                     ON CONFLICT (agent, name) DO UPDATE SET
                         cron = excluded.cron, timezone = excluded.timezone, overlap = excluded.overlap,
                         catch_up_ms = excluded.catch_up_ms, input = excluded.input, paused = excluded.paused,
                         updated_ms = excluded.updated_ms, next_tick_ms = excluded.next_tick_ms,
                         buffered_tick_ms = excluded.buffered_tick_ms, version = agent_schedules.version + 1
                     RETURNING (xmax = 0)",
                )
                .await?;
            let row = conn
                .query_one(
                    &st,
                    &[
                        &schedule.agent,
                        &schedule.name,
                        &schedule.cron,
                        &schedule.timezone,
                        &schedule.overlap,
                        &schedule.catch_up_ms,
                        &schedule.input,
                        &schedule.paused,
                        &schedule.created_ms,
                        &schedule.updated_ms,
                        &schedule.next_tick_ms,
                        &schedule.buffered_tick_ms,
                        &schedule.last_run_id,
                    ],
                )
                .await?;
            Ok(row.try_get::<_, bool>(0)?)
        })
    }

    fn schedules<'a>(&'a self, agent: Option<&'a str>) -> StoreFuture<'a, Vec<ScheduleRecord>> {
        let what = move || {
            agent.map_or_else(|| "list the schedules".to_owned(), |a| format!("list the schedules of agent {a}"))
        };
        self.run(what, async move {
            let conn = self.conn().await?;
            // By agent, then name, bytewise.
            let rows = match agent {
                Some(agent) => {
                    let st = conn
                        .prepare_cached(concat!(
                            "SELECT ",
                            schedule_columns!(),
                            " FROM agent_schedules WHERE agent = $1 ORDER BY name COLLATE \"C\""
                        ))
                        .await?;
                    conn.query(&st, &[&agent]).await?
                }
                None => {
                    let st = conn
                        .prepare_cached(concat!(
                            "SELECT ",
                            schedule_columns!(),
                            " FROM agent_schedules ORDER BY agent COLLATE \"C\", name COLLATE \"C\""
                        ))
                        .await?;
                    conn.query(&st, &[]).await?
                }
            };
            rows.iter().map(read_schedule).collect()
        })
    }

    fn pause_schedule<'a>(
        &'a self,
        agent: &'a str,
        name: &'a str,
        paused: bool,
        next_tick_ms: i64,
        now_ms: i64,
    ) -> StoreFuture<'a, bool> {
        let what = move || format!("{} schedule {name} of agent {agent}", if paused { "pause" } else { "resume" });
        self.run(what, async move {
            let conn = self.conn().await?;
            let st = conn
                .prepare_cached(
                    "UPDATE agent_schedules SET paused = $3, next_tick_ms = $4, updated_ms = $5, version = version + 1
                     WHERE agent = $1 AND name = $2",
                )
                .await?;
            let changed = conn.execute(&st, &[&agent, &name, &paused, &next_tick_ms, &now_ms]).await?;
            Ok(changed > 0)
        })
    }

    fn delete_schedule<'a>(&'a self, agent: &'a str, name: &'a str) -> StoreFuture<'a, bool> {
        self.run(move || format!("delete schedule {name} of agent {agent}"), async move {
            let conn = self.conn().await?;
            let st = conn.prepare_cached("DELETE FROM agent_schedules WHERE agent = $1 AND name = $2").await?;
            Ok(conn.execute(&st, &[&agent, &name]).await? > 0)
        })
    }

    fn advance_schedule<'a>(&'a self, advance: &'a ScheduleAdvance) -> StoreFuture<'a, bool> {
        self.run(move || format!("advance schedule {} of agent {}", advance.name, advance.agent), async move {
            let version = u64_to_db(STORE, "schedule version", advance.version)?;
            let conn = self.conn().await?;
            // One statement, guarded by the version read: a concurrent move that commits
            // first bumps it, and this one, re-checked on the row's newest version, matches
            // nothing.
            let st = conn
                .prepare_cached(
                    "UPDATE agent_schedules SET next_tick_ms = $4, buffered_tick_ms = $5, last_run_id = $6,
                         updated_ms = $7, version = version + 1
                     WHERE agent = $1 AND name = $2 AND version = $3 AND created_ms = $8",
                )
                .await?;
            let changed = conn
                .execute(
                    &st,
                    &[
                        &advance.agent,
                        &advance.name,
                        &version,
                        &advance.next_tick_ms,
                        &advance.buffered_tick_ms,
                        &advance.last_run_id,
                        &advance.now_ms,
                        &advance.created_ms,
                    ],
                )
                .await?;
            Ok(changed > 0)
        })
    }

    fn delete_run<'a>(&'a self, run_id: &'a str) -> StoreFuture<'a, bool> {
        self.run(move || format!("delete run {run_id}"), async move {
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await?;
            let mut deleted = 0;
            for sql in [
                "DELETE FROM agent_runs WHERE run_id = $1",
                "DELETE FROM agent_journal WHERE run_id = $1",
                "DELETE FROM agent_snapshots WHERE run_id = $1",
                "DELETE FROM agent_inputs WHERE run_id = $1",
                "DELETE FROM agent_state_cancels WHERE run_id = $1",
                // Its own lineage; its descendants' rows (`parent_run_id`) stay.
                "DELETE FROM agent_lineage WHERE run_id = $1",
                "DELETE FROM agent_signals WHERE run_id = $1",
                "DELETE FROM agent_timers WHERE run_id = $1",
            ] {
                let st = tx.prepare_cached(sql).await?;
                deleted += tx.execute(&st, &[&run_id]).await?;
            }
            tx.commit().await?;
            Ok(deleted > 0)
        })
    }

    fn apply_retention<'a>(&'a self, policy: &'a Retention, now_ms: i64) -> StoreFuture<'a, RetentionReport> {
        self.run(|| "apply retention".to_owned(), async move {
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await?;
            let mut report = RetentionReport::default();
            if let Some(age) = policy.drop_finished_after {
                let cutoff = now_ms.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX));
                // Lock the runs to drop, so that the deletes below all agree on them.
                let select = tx
                    .prepare_cached(concat!(
                        "SELECT run_id FROM agent_runs WHERE status IN ",
                        finished_sql!(),
                        " AND updated_ms < $1 FOR UPDATE"
                    ))
                    .await?;
                let ids = tx
                    .query(&select, &[&cutoff])
                    .await?
                    .iter()
                    .map(|r| r.try_get::<_, String>(0))
                    .collect::<Result<Vec<_>, _>>()?;
                if !ids.is_empty() {
                    let delete = async |sql: &'static str| -> Result<u64, tokio_postgres::Error> {
                        let st = tx.prepare_cached(sql).await?;
                        tx.execute(&st, &[&ids]).await
                    };
                    report.entries += delete("DELETE FROM agent_journal WHERE run_id = ANY($1)").await?;
                    report.snapshots += delete("DELETE FROM agent_snapshots WHERE run_id = ANY($1)").await?;
                    delete("DELETE FROM agent_inputs WHERE run_id = ANY($1)").await?;
                    delete("DELETE FROM agent_state_cancels WHERE run_id = ANY($1)").await?;
                    delete("DELETE FROM agent_lineage WHERE run_id = ANY($1)").await?;
                    delete("DELETE FROM agent_signals WHERE run_id = ANY($1)").await?;
                    delete("DELETE FROM agent_timers WHERE run_id = ANY($1)").await?;
                    report.runs += delete("DELETE FROM agent_runs WHERE run_id = ANY($1)").await?;
                }
            }
            if let Some(keep) = policy.keep_snapshots {
                let keep = i64::try_from(keep.max(1)).unwrap_or(i64::MAX);
                let prune = tx
                    .prepare_cached(
                        "DELETE FROM agent_snapshots WHERE id IN (
                            SELECT id FROM (
                                SELECT id, row_number() OVER (
                                    PARTITION BY run_id ORDER BY seq DESC, taken_ms DESC, id DESC) AS rank
                                FROM agent_snapshots) AS ranked
                            WHERE rank > $1)",
                    )
                    .await?;
                report.snapshots += tx.execute(&prune, &[&keep]).await?;
                let covered = tx
                    .prepare_cached(
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
