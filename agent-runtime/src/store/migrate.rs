//! The SQL stores' schema: its versions, how they are applied, and how values are encoded.
//!
//! Invariants:
//! - Each backend has one ordered list of migrations, numbered 1, 2, 3… with no gaps; a
//!   migration is never edited once released: a change is a new migration.
//! - The table `agent_schema` holds exactly one row, the version the database is at. It is
//!   read whole (its row count, highest and lowest version, in one aggregate query, so a
//!   damaged table costs no memory): any row above the newest known version is
//!   [`StoreError::SchemaTooNew`]; otherwise more than one row is
//!   [`StoreError::SchemaAmbiguous`] and a negative version [`StoreError::Corrupt`]. The
//!   database is then left untouched.
//! - Opening a store applies the missing migrations, all of them and the version bump in one
//!   transaction, under a lock that serializes concurrent openers (SQLite: `BEGIN IMMEDIATE`;
//!   PostgreSQL: a transaction-scoped advisory lock), so a database is never half-migrated
//!   and two processes never apply the same migration twice.
//! - A database at a version above the newest known here is refused with
//!   [`StoreError::SchemaTooNew`] and left untouched.
//! - Statuses are written as [`AgentStatus::as_str`]; reading a name that is not a status,
//!   or a negative `seq`, is [`StoreError::Corrupt`], never a panic.

use agent_core::AgentStatus;
#[cfg(feature = "sqlite")]
use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// One step of a schema.
pub(crate) struct Migration {
    /// The version the database is at once this is applied.
    pub(crate) version: u32,
    /// The statements, run as one batch.
    pub(crate) sql: &'static str,
}

/// The statuses [`AgentStatus::is_finished`] accepts, as an SQL list literal for `concat!`
/// (a test checks it against `is_finished`).
macro_rules! finished_sql {
    () => {
        "('Completed', 'Failed', 'Cancelled', 'TimedOut')"
    };
}
pub(crate) use finished_sql;

/// Delete every snapshot that shares its run and `seq` with a newer one (greater
/// `taken_ms`, then greater `id`: the order `latest_snapshot` reads), before `(run_id, seq)`
/// becomes unique.
macro_rules! dedupe_snapshots {
    () => {
        "DELETE FROM agent_snapshots WHERE EXISTS (
            SELECT 1 FROM agent_snapshots AS newer
            WHERE newer.run_id = agent_snapshots.run_id AND newer.seq = agent_snapshots.seq
                AND (newer.taken_ms > agent_snapshots.taken_ms
                    OR (newer.taken_ms = agent_snapshots.taken_ms AND newer.id > agent_snapshots.id)));"
    };
}

/// SQLite's migrations, in order.
#[cfg(feature = "sqlite")]
pub(crate) const SQLITE: &[Migration] =
    &[SQLITE_1, SQLITE_2, SQLITE_3, SQLITE_4, SQLITE_5, SQLITE_6, SQLITE_7, SQLITE_8, SQLITE_9, SQLITE_10];

#[cfg(feature = "sqlite")]
const SQLITE_1: Migration = Migration {
    version: 1,
    sql: "
        CREATE TABLE agent_runs (
            run_id     TEXT PRIMARY KEY NOT NULL,
            agent      TEXT NOT NULL,
            status     TEXT NOT NULL,
            created_ms INTEGER NOT NULL,
            updated_ms INTEGER NOT NULL,
            last_seq   INTEGER NOT NULL DEFAULT 0
        ) WITHOUT ROWID;
        CREATE INDEX agent_runs_agent_status ON agent_runs (agent, status);
        CREATE INDEX agent_runs_created ON agent_runs (created_ms);
        CREATE TABLE agent_journal (
            run_id  TEXT NOT NULL,
            seq     INTEGER NOT NULL,
            state   TEXT NOT NULL,
            payload TEXT NOT NULL,
            at_ms   INTEGER NOT NULL,
            PRIMARY KEY (run_id, seq)
        ) WITHOUT ROWID;
        CREATE TABLE agent_snapshots (
            id       INTEGER PRIMARY KEY,
            run_id   TEXT NOT NULL,
            seq      INTEGER NOT NULL,
            taken_ms INTEGER NOT NULL,
            data     TEXT NOT NULL
        );
        CREATE INDEX agent_snapshots_run ON agent_snapshots (run_id, seq, taken_ms);
        CREATE TABLE agent_inputs (
            run_id        TEXT NOT NULL,
            request_id    TEXT NOT NULL,
            state         TEXT,
            prompt        TEXT NOT NULL,
            requested_ms  INTEGER NOT NULL,
            timeout_ms    INTEGER,
            default_value TEXT,
            answer        TEXT,
            answered_ms   INTEGER,
            defaulted     INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (run_id, request_id)
        );
        CREATE INDEX agent_inputs_requested ON agent_inputs (requested_ms);
    ",
};

/// Ownership (owner, lease end in milliseconds by the machine's clock, epoch), what the
/// fleet's queued runs need (their input, graph hash and idempotency key, unique per agent),
/// and snapshots unique per `(run_id, seq)`: of snapshots that shared a `seq`, the newest is
/// kept (the one `latest_snapshot` read).
#[cfg(feature = "sqlite")]
const SQLITE_2: Migration = Migration {
    version: 2,
    sql: concat!(
        "
        ALTER TABLE agent_runs ADD COLUMN owner TEXT;
        ALTER TABLE agent_runs ADD COLUMN lease_until INTEGER;
        ALTER TABLE agent_runs ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE agent_runs ADD COLUMN graph_hash TEXT;
        ALTER TABLE agent_runs ADD COLUMN idempotency_key TEXT;
        ALTER TABLE agent_runs ADD COLUMN input TEXT;
        CREATE UNIQUE INDEX agent_runs_idempotency ON agent_runs (agent, idempotency_key)
            WHERE idempotency_key IS NOT NULL;
        CREATE INDEX agent_runs_unfinished ON agent_runs (agent, lease_until)
            WHERE status NOT IN ",
        finished_sql!(),
        ";
        ",
        dedupe_snapshots!(),
        "
        DROP INDEX agent_snapshots_run;
        CREATE UNIQUE INDEX agent_snapshots_run_seq ON agent_snapshots (run_id, seq);
        "
    ),
};

/// The queue's index: the runs a worker may claim (`Idle` or `Running`), oldest first, so a
/// claim walks the unfinished runs only, not every finished run before them (with an index
/// over all runs, draining 1,000 runs cost a claim ever more as they finished).
macro_rules! queue_index {
    () => {
        "CREATE INDEX agent_runs_queue ON agent_runs (created_ms) WHERE status IN ('Idle', 'Running');"
    };
}

/// The queue's index (see `queue_index!`), and a run's input (the context it was submitted
/// or started with, as big as that context) in a table of its own: SQLite rewrites a whole
/// row when any column changes, so an input kept in `agent_runs` was read and rewritten by
/// every commit of its run (a 1 MB context made each transition cost half a millisecond).
#[cfg(feature = "sqlite")]
const SQLITE_3: Migration = Migration {
    version: 3,
    sql: concat!(
        queue_index!(),
        "
        CREATE TABLE agent_run_inputs (
            run_id TEXT PRIMARY KEY NOT NULL,
            input  TEXT NOT NULL
        );
        INSERT INTO agent_run_inputs (run_id, input)
            SELECT run_id, input FROM agent_runs WHERE input IS NOT NULL;
        UPDATE agent_runs SET input = NULL WHERE input IS NOT NULL;
    "
    ),
};

/// What another process asks of a running run (`RunControl`: cancel, pause), for its owner
/// to read.
#[cfg(feature = "sqlite")]
const SQLITE_4: Migration = Migration { version: 4, sql: "ALTER TABLE agent_runs ADD COLUMN control TEXT;" };

/// The cancels of single states another process asked of a run (`store::cancel_state`),
/// for its owner to take: rows of their own, not a column of the run's, so that requests
/// for several states are all kept. One per state pending (`UNIQUE`); `id` orders them as
/// they were asked.
#[cfg(feature = "sqlite")]
const SQLITE_5: Migration = Migration {
    version: 5,
    sql: "
        CREATE TABLE agent_state_cancels (
            id           INTEGER PRIMARY KEY,
            run_id       TEXT NOT NULL,
            state        TEXT NOT NULL,
            requested_ms INTEGER NOT NULL,
            UNIQUE (run_id, state)
        );
    ",
};

/// Where runs came from (`store::Lineage`): one row per run made from another, keyed by the
/// run made (so a second one is refused), with no foreign key to `agent_runs` (the run's
/// row may come after it, and a descendant's row outlives its parent's). The index serves
/// a parent's descendants, oldest first.
#[cfg(feature = "sqlite")]
const SQLITE_6: Migration = Migration {
    version: 6,
    sql: "
        CREATE TABLE agent_lineage (
            run_id        TEXT PRIMARY KEY NOT NULL,
            parent_run_id TEXT NOT NULL,
            parent_seq    INTEGER,
            kind          TEXT NOT NULL,
            created_ms    INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX agent_lineage_parent ON agent_lineage (parent_run_id, created_ms);
    ",
};

/// The parent's state that started a child run (`Lineage::parent_state`), so a picture of
/// the parent can expand the child where it was started. Rows from before have none.
#[cfg(feature = "sqlite")]
const SQLITE_7: Migration = Migration { version: 7, sql: "ALTER TABLE agent_lineage ADD COLUMN parent_state TEXT;" };

/// The signals sent to runs and the timers of their durable waits (`store::SignalRecord`,
/// `store::TimerRecord`; see the module `signals` for their rules). A signal is kept once
/// per `(run_id, signal_id)` (`UNIQUE`); `seq`, the rowid, orders a run's signals as they
/// were kept (assigned under the write lock, so in the order of commits). The partial
/// index serves a wait's take: the oldest signal of a name not taken (the rowid is its last
/// column); the unique one the signal a wait took before, and keeps a wait to one signal.
/// A timer is one row per `(run_id, timer_key)`: the first wake time armed. Neither table
/// has a foreign key to `agent_runs`: a run's rows are deleted with it.
#[cfg(feature = "sqlite")]
const SQLITE_8: Migration = Migration {
    version: 8,
    sql: "
        CREATE TABLE agent_signals (
            seq       INTEGER PRIMARY KEY,
            run_id    TEXT NOT NULL,
            signal_id TEXT NOT NULL,
            name      TEXT NOT NULL,
            payload   TEXT NOT NULL,
            sent_ms   INTEGER NOT NULL,
            taken_by  TEXT,
            taken_ms  INTEGER,
            UNIQUE (run_id, signal_id)
        );
        CREATE INDEX agent_signals_pending ON agent_signals (run_id, name) WHERE taken_by IS NULL;
        CREATE UNIQUE INDEX agent_signals_taken ON agent_signals (run_id, taken_by) WHERE taken_by IS NOT NULL;
        CREATE TABLE agent_timers (
            run_id    TEXT NOT NULL,
            timer_key TEXT NOT NULL,
            wake_ms   INTEGER NOT NULL,
            PRIMARY KEY (run_id, timer_key)
        ) WITHOUT ROWID;
    ",
};

/// The schedules of agents (`store::ScheduleRecord`; see the module `schedules` for their
/// rules): one row per `(agent, name)`, its definition and its cursor, with the `version`
/// every write bumps and a cursor's move is guarded by. The key serves the listing (by
/// agent, then name) and every write. No foreign key: a schedule is not a run's, and its
/// runs outlive it.
#[cfg(feature = "sqlite")]
const SQLITE_9: Migration = Migration {
    version: 9,
    sql: "
        CREATE TABLE agent_schedules (
            agent            TEXT NOT NULL,
            name             TEXT NOT NULL,
            cron             TEXT NOT NULL,
            timezone         TEXT NOT NULL,
            overlap          TEXT NOT NULL,
            catch_up_ms      INTEGER NOT NULL,
            input            TEXT NOT NULL,
            paused           INTEGER NOT NULL,
            created_ms       INTEGER NOT NULL,
            updated_ms       INTEGER NOT NULL,
            next_tick_ms     INTEGER NOT NULL,
            buffered_tick_ms INTEGER,
            last_run_id      TEXT,
            version          INTEGER NOT NULL,
            PRIMARY KEY (agent, name)
        ) WITHOUT ROWID;
    ",
};

/// The index of flow control (see `queue`): the unfinished runs with a flow key, by agent
/// and key, which serves a claim's count of a key's running runs, the look-up of a
/// debounced run, and the check of whether any keyed run is unfinished at all (the claim of
/// runs without keys stays as it was when none is).
macro_rules! flow_index {
    () => {
        concat!(
            "CREATE INDEX agent_runs_flow ON agent_runs (agent, flow_key) WHERE flow_key IS NOT NULL AND status NOT IN ",
            finished_sql!(),
            ";"
        )
    };
}

/// Flow control (see `queue`): a run's flow key, the limit of its key's runs running at
/// once (recorded with each run, so workers need not agree on it), when it may be taken at
/// the earliest (milliseconds by the store's clock) and whether it was submitted with
/// debounce. Runs from before have none of these and are claimed as before.
#[cfg(feature = "sqlite")]
const SQLITE_10: Migration = Migration {
    version: 10,
    sql: concat!(
        "
        ALTER TABLE agent_runs ADD COLUMN flow_key TEXT;
        ALTER TABLE agent_runs ADD COLUMN flow_limit INTEGER;
        ALTER TABLE agent_runs ADD COLUMN not_before_ms INTEGER;
        ALTER TABLE agent_runs ADD COLUMN debounce INTEGER NOT NULL DEFAULT 0;
        ",
        flow_index!()
    ),
};

/// PostgreSQL's migrations, in order.
#[cfg(feature = "postgres")]
pub(crate) const POSTGRES: &[Migration] = &[
    POSTGRES_1,
    POSTGRES_2,
    POSTGRES_3,
    POSTGRES_4,
    POSTGRES_5,
    POSTGRES_6,
    POSTGRES_7,
    POSTGRES_8,
    POSTGRES_9,
    POSTGRES_10,
];

#[cfg(feature = "postgres")]
const POSTGRES_1: Migration = Migration {
    version: 1,
    sql: "
        CREATE TABLE agent_runs (
            run_id     TEXT PRIMARY KEY,
            agent      TEXT NOT NULL,
            status     TEXT NOT NULL,
            created_ms BIGINT NOT NULL,
            updated_ms BIGINT NOT NULL,
            last_seq   BIGINT NOT NULL DEFAULT 0
        );
        CREATE INDEX agent_runs_agent_status ON agent_runs (agent, status);
        CREATE INDEX agent_runs_created ON agent_runs (created_ms);
        CREATE TABLE agent_journal (
            run_id  TEXT NOT NULL,
            seq     BIGINT NOT NULL,
            state   TEXT NOT NULL,
            payload TEXT NOT NULL,
            at_ms   BIGINT NOT NULL,
            PRIMARY KEY (run_id, seq)
        );
        CREATE TABLE agent_snapshots (
            id       BIGSERIAL PRIMARY KEY,
            run_id   TEXT NOT NULL,
            seq      BIGINT NOT NULL,
            taken_ms BIGINT NOT NULL,
            data     TEXT NOT NULL
        );
        CREATE INDEX agent_snapshots_run ON agent_snapshots (run_id, seq, taken_ms);
        CREATE TABLE agent_inputs (
            run_id        TEXT NOT NULL,
            request_id    TEXT NOT NULL,
            state         TEXT,
            prompt        TEXT NOT NULL,
            requested_ms  BIGINT NOT NULL,
            timeout_ms    BIGINT,
            default_value TEXT,
            answer        TEXT,
            answered_ms   BIGINT,
            defaulted     BOOLEAN NOT NULL DEFAULT FALSE,
            PRIMARY KEY (run_id, request_id)
        );
        CREATE INDEX agent_inputs_requested ON agent_inputs (requested_ms);
    ",
};

/// The queue's index, as [`SQLITE_3`]. The input stays in `agent_runs`: PostgreSQL keeps an
/// unchanged large value out of line (TOAST) and does not rewrite it when the row is
/// updated.
#[cfg(feature = "postgres")]
const POSTGRES_3: Migration = Migration { version: 3, sql: queue_index!() };

/// As [`SQLITE_4`].
#[cfg(feature = "postgres")]
const POSTGRES_4: Migration = Migration { version: 4, sql: "ALTER TABLE agent_runs ADD COLUMN control TEXT;" };

/// As [`SQLITE_5`].
#[cfg(feature = "postgres")]
const POSTGRES_5: Migration = Migration {
    version: 5,
    sql: "
        CREATE TABLE agent_state_cancels (
            id           BIGSERIAL PRIMARY KEY,
            run_id       TEXT NOT NULL,
            state        TEXT NOT NULL,
            requested_ms BIGINT NOT NULL,
            UNIQUE (run_id, state)
        );
    ",
};

/// As [`SQLITE_6`].
#[cfg(feature = "postgres")]
const POSTGRES_6: Migration = Migration {
    version: 6,
    sql: "
        CREATE TABLE agent_lineage (
            run_id        TEXT PRIMARY KEY,
            parent_run_id TEXT NOT NULL,
            parent_seq    BIGINT,
            kind          TEXT NOT NULL,
            created_ms    BIGINT NOT NULL
        );
        CREATE INDEX agent_lineage_parent ON agent_lineage (parent_run_id, created_ms);
    ",
};

/// As [`SQLITE_7`].
#[cfg(feature = "postgres")]
const POSTGRES_7: Migration = Migration { version: 7, sql: "ALTER TABLE agent_lineage ADD COLUMN parent_state TEXT;" };

/// As [`SQLITE_8`], keyed by `(run_id, signal_id)`, with `seq` from a sequence (so in the
/// order the sends took their numbers: of two concurrent sends, the later number may commit
/// first). The partial index lists a run's signals of a name not taken in `seq` order.
#[cfg(feature = "postgres")]
const POSTGRES_8: Migration = Migration {
    version: 8,
    sql: "
        CREATE TABLE agent_signals (
            run_id    TEXT NOT NULL,
            signal_id TEXT NOT NULL,
            seq       BIGSERIAL,
            name      TEXT NOT NULL,
            payload   TEXT NOT NULL,
            sent_ms   BIGINT NOT NULL,
            taken_by  TEXT,
            taken_ms  BIGINT,
            PRIMARY KEY (run_id, signal_id)
        );
        CREATE INDEX agent_signals_pending ON agent_signals (run_id, name, seq) WHERE taken_by IS NULL;
        CREATE UNIQUE INDEX agent_signals_taken ON agent_signals (run_id, taken_by) WHERE taken_by IS NOT NULL;
        CREATE TABLE agent_timers (
            run_id    TEXT NOT NULL,
            timer_key TEXT NOT NULL,
            wake_ms   BIGINT NOT NULL,
            PRIMARY KEY (run_id, timer_key)
        );
    ",
};

/// As [`SQLITE_9`].
#[cfg(feature = "postgres")]
const POSTGRES_9: Migration = Migration {
    version: 9,
    sql: "
        CREATE TABLE agent_schedules (
            agent            TEXT NOT NULL,
            name             TEXT NOT NULL,
            cron             TEXT NOT NULL,
            timezone         TEXT NOT NULL,
            overlap          TEXT NOT NULL,
            catch_up_ms      BIGINT NOT NULL,
            input            TEXT NOT NULL,
            paused           BOOLEAN NOT NULL,
            created_ms       BIGINT NOT NULL,
            updated_ms       BIGINT NOT NULL,
            next_tick_ms     BIGINT NOT NULL,
            buffered_tick_ms BIGINT,
            last_run_id      TEXT,
            version          BIGINT NOT NULL,
            PRIMARY KEY (agent, name)
        );
    ",
};

/// As [`SQLITE_10`]; `not_before_ms` by the server's clock.
#[cfg(feature = "postgres")]
const POSTGRES_10: Migration = Migration {
    version: 10,
    sql: concat!(
        "
        ALTER TABLE agent_runs ADD COLUMN flow_key TEXT;
        ALTER TABLE agent_runs ADD COLUMN flow_limit BIGINT;
        ALTER TABLE agent_runs ADD COLUMN not_before_ms BIGINT;
        ALTER TABLE agent_runs ADD COLUMN debounce BOOLEAN NOT NULL DEFAULT FALSE;
        ",
        flow_index!()
    ),
};

/// As [`SQLITE_2`], with the lease end a `timestamptz` by the server's clock.
#[cfg(feature = "postgres")]
const POSTGRES_2: Migration = Migration {
    version: 2,
    sql: concat!(
        "
        ALTER TABLE agent_runs ADD COLUMN owner TEXT;
        ALTER TABLE agent_runs ADD COLUMN lease_until TIMESTAMPTZ;
        ALTER TABLE agent_runs ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;
        ALTER TABLE agent_runs ADD COLUMN graph_hash TEXT;
        ALTER TABLE agent_runs ADD COLUMN idempotency_key TEXT;
        ALTER TABLE agent_runs ADD COLUMN input TEXT;
        CREATE UNIQUE INDEX agent_runs_idempotency ON agent_runs (agent, idempotency_key)
            WHERE idempotency_key IS NOT NULL;
        CREATE INDEX agent_runs_unfinished ON agent_runs (agent, lease_until)
            WHERE status NOT IN ",
        finished_sql!(),
        ";
        ",
        dedupe_snapshots!(),
        "
        DROP INDEX agent_snapshots_run;
        CREATE UNIQUE INDEX agent_snapshots_run_seq ON agent_snapshots (run_id, seq);
        "
    ),
};

/// The newest version in `migrations`.
pub(crate) fn latest(migrations: &[Migration]) -> u32 {
    migrations.last().map_or(0, |m| m.version)
}

/// A status read back from a store.
pub(crate) fn status_from_db(store: &'static str, run_id: &str, s: &str) -> Result<AgentStatus, StoreError> {
    s.parse().map_err(|e| StoreError::Corrupt { store, message: format!("run {run_id}: {e}") })
}

/// A `seq` (or another unsigned count) as the stores' signed 64-bit integers.
pub(crate) fn u64_to_db(store: &'static str, what: &str, v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Backend {
        store,
        message: format!("{what}: {v} does not fit in a signed 64-bit column"),
        source: None,
    })
}

/// A `seq` (or another unsigned count) read back from a store.
pub(crate) fn u64_from_db(store: &'static str, what: &str, v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt { store, message: format!("{what}: negative value {v}") })
}

/// A driver error, with what was being done.
pub(crate) fn backend<E>(store: &'static str, what: &str, e: E) -> StoreError
where
    E: std::error::Error + Send + Sync + 'static,
{
    StoreError::Backend { store, message: format!("{what}: {e}"), source: Some(Box::new(e)) }
}

/// What the table `agent_schema` holds: its row count, and its highest and lowest version.
#[cfg(feature = "sqlite")]
const SCHEMA_ROWS: &str = "SELECT count(*), max(version), min(version) FROM agent_schema";
/// The same for PostgreSQL, whose `max` of an `INTEGER` column is an `INTEGER`.
#[cfg(feature = "postgres")]
const SCHEMA_ROWS_PG: &str = "SELECT count(*), max(version)::BIGINT, min(version)::BIGINT FROM agent_schema";

/// The version a schema table with `rows` rows, of highest version `highest` and lowest
/// `lowest`, says the database is at: `None` for an empty table; an error for a version
/// newer than `supported`, several rows, or a negative version.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn schema_version(
    store: &'static str,
    rows: i64,
    highest: Option<i64>,
    lowest: Option<i64>,
    supported: u32,
) -> Result<Option<i64>, StoreError> {
    let (Some(highest), Some(lowest)) = (highest, lowest) else { return Ok(None) };
    if let Some(e) = too_new(store, highest, supported) {
        return Err(e);
    }
    if rows > 1 {
        return Err(StoreError::SchemaAmbiguous { store, rows: u64::try_from(rows).unwrap_or(0), lowest, highest });
    }
    if lowest < 0 {
        return Err(StoreError::Corrupt { store, message: format!("agent_schema: negative version {lowest}") });
    }
    Ok(Some(highest))
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn too_new(store: &'static str, found: i64, supported: u32) -> Option<StoreError> {
    (found > i64::from(supported)).then(|| StoreError::SchemaTooNew {
        store,
        found: u32::try_from(found).unwrap_or(u32::MAX),
        supported,
    })
}

/// Read `agent_schema` on an SQLite connection (see [`schema_version`]).
#[cfg(feature = "sqlite")]
fn sqlite_schema(conn: &Connection, supported: u32) -> Result<Option<i64>, StoreError> {
    let (rows, highest, lowest) = conn
        .query_row(SCHEMA_ROWS, [], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Option<i64>>(1)?, r.get::<_, Option<i64>>(2)?))
        })
        .map_err(|e| backend("sqlite", "read the schema version", e))?;
    schema_version("sqlite", rows, highest, lowest, supported)
}

/// The version an SQLite database is at (0: a new database), or `None` without `agent_schema`.
#[cfg(feature = "sqlite")]
fn sqlite_version(conn: &Connection, supported: u32) -> Result<Option<i64>, StoreError> {
    let has_table: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'agent_schema')",
            [],
            |r| r.get(0),
        )
        .map_err(|e| backend("sqlite", "read the schema version", e))?;
    if !has_table {
        return Ok(None);
    }
    Ok(Some(sqlite_schema(conn, supported)?.unwrap_or(0)))
}

/// Bring an SQLite database to the newest schema, or refuse it if it is newer.
#[cfg(feature = "sqlite")]
pub(crate) fn migrate_sqlite(conn: &mut Connection) -> Result<(), StoreError> {
    const STORE: &str = "sqlite";
    let supported = latest(SQLITE);
    let err = |what: &'static str| move |e: rusqlite::Error| backend(STORE, what, e);
    // Fast path, without the write lock: the database is already current (or refused).
    if let Some(v) = sqlite_version(conn, supported)? {
        if v == i64::from(supported) {
            return Ok(());
        }
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err("lock the database to migrate its schema"))?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS agent_schema (version INTEGER NOT NULL)")
        .map_err(err("create the table agent_schema"))?;
    let found = match sqlite_schema(&tx, supported)? {
        Some(v) => v,
        None => {
            tx.execute("INSERT INTO agent_schema (version) VALUES (0)", []).map_err(err("initialise agent_schema"))?;
            0
        }
    };
    for m in SQLITE.iter().filter(|m| i64::from(m.version) > found) {
        tx.execute_batch(m.sql).map_err(|e| backend(STORE, &format!("apply schema migration {}", m.version), e))?;
    }
    tx.execute("UPDATE agent_schema SET version = ?1", [supported]).map_err(err("record the schema version"))?;
    tx.commit().map_err(err("commit the schema migration"))
}

/// Bring a PostgreSQL schema (the connection's `search_path`) to the newest version, or
/// refuse it if it is newer. `create_schema` is created first when given (already quoted).
#[cfg(feature = "postgres")]
pub(crate) async fn migrate_postgres(
    client: &mut tokio_postgres::Client,
    create_schema: Option<&str>,
) -> Result<(), StoreError> {
    const STORE: &str = "postgres";
    let supported = latest(POSTGRES);
    let err = |what: &'static str| move |e: tokio_postgres::Error| backend(STORE, what, e);
    let tx = client.transaction().await.map_err(err("begin the schema migration"))?;
    // Serialize openers of the same schema: `CREATE ... IF NOT EXISTS` races otherwise.
    let key = format!("agent_schema:{}", create_schema.unwrap_or(""));
    tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&key])
        .await
        .map_err(err("lock the schema to migrate it"))?;
    if let Some(schema) = create_schema {
        tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}")).await.map_err(err("create the schema"))?;
    }
    tx.batch_execute("CREATE TABLE IF NOT EXISTS agent_schema (version INTEGER NOT NULL)")
        .await
        .map_err(err("create the table agent_schema"))?;
    let row = tx.query_one(SCHEMA_ROWS_PG, &[]).await.map_err(err("read the schema version"))?;
    let read = |i: usize| row.try_get::<_, Option<i64>>(i).map_err(err("read the schema version"));
    let rows = row.try_get::<_, i64>(0).map_err(err("read the schema version"))?;
    let found = match schema_version(STORE, rows, read(1)?, read(2)?, supported)? {
        Some(v) => v,
        None => {
            tx.execute("INSERT INTO agent_schema (version) VALUES (0)", &[])
                .await
                .map_err(err("initialise agent_schema"))?;
            0
        }
    };
    if found == i64::from(supported) {
        return tx.commit().await.map_err(err("commit the schema check"));
    }
    for m in POSTGRES.iter().filter(|m| i64::from(m.version) > found) {
        tx.batch_execute(m.sql)
            .await
            .map_err(|e| backend(STORE, &format!("apply schema migration {}", m.version), e))?;
    }
    let version = i32::try_from(supported).unwrap_or(i32::MAX);
    tx.execute("UPDATE agent_schema SET version = $1", &[&version]).await.map_err(err("record the schema version"))?;
    tx.commit().await.map_err(err("commit the schema migration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(all(feature = "sqlite", feature = "postgres"))]
    fn migrations_are_numbered_from_one_without_gaps() {
        for list in [SQLITE, POSTGRES] {
            for (i, m) in list.iter().enumerate() {
                assert_eq!(m.version as usize, i + 1);
            }
        }
        assert_eq!(latest(SQLITE), latest(POSTGRES));
    }

    #[test]
    fn finished_list_matches_is_finished() {
        for &s in AgentStatus::ALL {
            assert_eq!(finished_sql!().contains(&format!("'{}'", s.as_str())), s.is_finished(), "{s}");
        }
    }

    #[test]
    #[cfg(feature = "sqlite")]
    fn sqlite_migrates_once_and_refuses_newer() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_sqlite(&mut conn).unwrap();
        migrate_sqlite(&mut conn).unwrap();
        let v: i64 = conn.query_row("SELECT version FROM agent_schema", [], |r| r.get(0)).unwrap();
        assert_eq!(v, i64::from(latest(SQLITE)));
        conn.execute("UPDATE agent_schema SET version = version + 1", []).unwrap();
        match migrate_sqlite(&mut conn) {
            Err(StoreError::SchemaTooNew { found, supported, .. }) => {
                assert_eq!((found, supported), (latest(SQLITE) + 1, latest(SQLITE)))
            }
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
    }

    /// A version 1 database whose run has snapshots sharing a `seq` (two writers once could)
    /// keeps the newest of each when `(run_id, seq)` becomes unique, and gains the ownership
    /// columns: unowned, epoch 0.
    #[test]
    #[cfg(feature = "sqlite")]
    fn sqlite_version_2_keeps_the_newest_of_snapshots_sharing_a_seq() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SQLITE_1.sql).unwrap();
        conn.execute_batch(
            "CREATE TABLE agent_schema (version INTEGER NOT NULL);
             INSERT INTO agent_schema (version) VALUES (1);
             INSERT INTO agent_runs (run_id, agent, status, created_ms, updated_ms) VALUES ('r', 'a', 'Running', 1, 1);
             INSERT INTO agent_snapshots (id, run_id, seq, taken_ms, data) VALUES
                 (1, 'r', 1, 10, 'one'), (2, 'r', 2, 20, 'two-a'), (3, 'r', 2, 30, 'two-newest'),
                 (4, 'r', 2, 30, 'two-newest-id'), (5, 'r', 3, 5, 'three'), (6, 'x', 2, 1, 'other run');",
        )
        .unwrap();
        migrate_sqlite(&mut conn).unwrap();
        let kept: Vec<(String, i64, String)> = conn
            .prepare("SELECT run_id, seq, data FROM agent_snapshots ORDER BY run_id, seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let expected = [("r", 1, "one"), ("r", 2, "two-newest-id"), ("r", 3, "three"), ("x", 2, "other run")];
        assert_eq!(kept, expected.map(|(r, s, d)| (r.to_owned(), s, d.to_owned())));
        let dup =
            conn.execute("INSERT INTO agent_snapshots (run_id, seq, taken_ms, data) VALUES ('r', 3, 9, 'again')", []);
        assert!(dup.is_err(), "(run_id, seq) is unique now");
        let (owner, lease, epoch): (Option<String>, Option<i64>, i64) = conn
            .query_row("SELECT owner, lease_until, epoch FROM agent_runs WHERE run_id = 'r'", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!((owner, lease, epoch), (None, None, 0));
        let v: i64 = conn.query_row("SELECT version FROM agent_schema", [], |r| r.get(0)).unwrap();
        assert_eq!(v, i64::from(latest(SQLITE)));
    }

    /// A version 2 database keeps its runs' inputs, moved out of `agent_runs` into their own
    /// table, where the store reads them.
    #[test]
    #[cfg(feature = "sqlite")]
    fn sqlite_version_3_moves_inputs_out_of_the_runs_rows() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SQLITE_1.sql).unwrap();
        conn.execute_batch(SQLITE_2.sql).unwrap();
        conn.execute_batch(
            "CREATE TABLE agent_schema (version INTEGER NOT NULL);
             INSERT INTO agent_schema (version) VALUES (2);
             INSERT INTO agent_runs (run_id, agent, status, created_ms, updated_ms, input)
                 VALUES ('with', 'a', 'Idle', 1, 1, '{\"n\":1}'), ('without', 'a', 'Running', 1, 1, NULL);",
        )
        .unwrap();
        migrate_sqlite(&mut conn).unwrap();
        let moved: Vec<(String, String)> = conn
            .prepare("SELECT run_id, input FROM agent_run_inputs ORDER BY run_id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(moved, [("with".to_owned(), "{\"n\":1}".to_owned())]);
        let left: i64 =
            conn.query_row("SELECT count(*) FROM agent_runs WHERE input IS NOT NULL", [], |r| r.get(0)).unwrap();
        assert_eq!(left, 0, "the rows no longer carry the inputs");
        let v: i64 = conn.query_row("SELECT version FROM agent_schema", [], |r| r.get(0)).unwrap();
        assert_eq!(v, i64::from(latest(SQLITE)));
    }

    /// A version 4 database keeps its runs (and the requests on their rows) and gains the
    /// table of state cancels: one request per run and state.
    #[test]
    #[cfg(feature = "sqlite")]
    fn sqlite_version_5_adds_the_state_cancels_beside_the_runs() {
        let mut conn = Connection::open_in_memory().unwrap();
        for m in [&SQLITE_1, &SQLITE_2, &SQLITE_3, &SQLITE_4] {
            conn.execute_batch(m.sql).unwrap();
        }
        conn.execute_batch(
            "CREATE TABLE agent_schema (version INTEGER NOT NULL);
             INSERT INTO agent_schema (version) VALUES (4);
             INSERT INTO agent_runs (run_id, agent, status, created_ms, updated_ms, epoch, control)
                 VALUES ('r', 'a', 'Running', 1, 1, 3, 'pause');",
        )
        .unwrap();
        migrate_sqlite(&mut conn).unwrap();
        let kept: (i64, Option<String>) = conn
            .query_row("SELECT epoch, control FROM agent_runs WHERE run_id = 'r'", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        assert_eq!(kept, (3, Some("pause".to_owned())));
        let ask = "INSERT INTO agent_state_cancels (run_id, state, requested_ms) VALUES ('r', 'fetch', 5)";
        conn.execute(ask, []).unwrap();
        assert!(conn.execute(ask, []).is_err(), "one request per run and state");
        let v: i64 = conn.query_row("SELECT version FROM agent_schema", [], |r| r.get(0)).unwrap();
        assert_eq!(v, i64::from(latest(SQLITE)));
    }

    /// A version 5 database keeps its runs and their pending state cancels, and gains the
    /// table of lineage: one row per run made, listed by parent.
    #[test]
    #[cfg(feature = "sqlite")]
    fn sqlite_version_6_adds_the_lineage_beside_the_runs() {
        let mut conn = Connection::open_in_memory().unwrap();
        for m in [&SQLITE_1, &SQLITE_2, &SQLITE_3, &SQLITE_4, &SQLITE_5] {
            conn.execute_batch(m.sql).unwrap();
        }
        conn.execute_batch(
            "CREATE TABLE agent_schema (version INTEGER NOT NULL);
             INSERT INTO agent_schema (version) VALUES (5);
             INSERT INTO agent_runs (run_id, agent, status, created_ms, updated_ms, epoch)
                 VALUES ('r', 'a', 'Running', 1, 1, 2);
             INSERT INTO agent_state_cancels (run_id, state, requested_ms) VALUES ('r', 'fetch', 5);",
        )
        .unwrap();
        migrate_sqlite(&mut conn).unwrap();
        let kept: (i64, String) = conn
            .query_row(
                "SELECT r.epoch, c.state FROM agent_runs AS r JOIN agent_state_cancels AS c USING (run_id)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(kept, (2, "fetch".to_owned()));
        let record = "INSERT INTO agent_lineage (run_id, parent_run_id, parent_seq, kind, created_ms)
                      VALUES ('child', 'r', NULL, 'child', 7)";
        conn.execute(record, []).unwrap();
        assert!(conn.execute(record, []).is_err(), "one lineage per run");
        let plan: String = conn
            .query_row(
                "EXPLAIN QUERY PLAN SELECT run_id FROM agent_lineage WHERE parent_run_id = 'r' ORDER BY created_ms",
                [],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("agent_lineage_parent"), "{plan}");
        let v: i64 = conn.query_row("SELECT version FROM agent_schema", [], |r| r.get(0)).unwrap();
        assert_eq!(v, i64::from(latest(SQLITE)));
    }

    #[test]
    #[cfg(feature = "sqlite")]
    fn sqlite_version_7_keeps_the_lineages_before_it_without_a_parent_state() {
        let mut conn = Connection::open_in_memory().unwrap();
        for m in [&SQLITE_1, &SQLITE_2, &SQLITE_3, &SQLITE_4, &SQLITE_5, &SQLITE_6] {
            conn.execute_batch(m.sql).unwrap();
        }
        conn.execute_batch(
            "CREATE TABLE agent_schema (version INTEGER NOT NULL);
             INSERT INTO agent_schema (version) VALUES (6);
             INSERT INTO agent_lineage (run_id, parent_run_id, parent_seq, kind, created_ms)
                 VALUES ('old', 'r', NULL, 'child', 7);",
        )
        .unwrap();
        migrate_sqlite(&mut conn).unwrap();
        conn.execute(
            "INSERT INTO agent_lineage (run_id, parent_run_id, parent_seq, kind, created_ms, parent_state)
             VALUES ('new', 'r', NULL, 'child', 8, 'summarise')",
            [],
        )
        .unwrap();
        let states: Vec<(String, Option<String>)> = conn
            .prepare("SELECT run_id, parent_state FROM agent_lineage ORDER BY created_ms")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(states, [("old".to_owned(), None), ("new".to_owned(), Some("summarise".to_owned()))]);
        let v: i64 = conn.query_row("SELECT version FROM agent_schema", [], |r| r.get(0)).unwrap();
        assert_eq!(v, i64::from(latest(SQLITE)));
    }

    /// A version 7 database keeps its runs and gains the tables of signals and timers: a
    /// signal once per run and id, a wait taking one signal at most, a timer once per run
    /// and key; a wait's take is served by the index of signals not taken.
    #[test]
    #[cfg(feature = "sqlite")]
    fn sqlite_version_8_adds_signals_and_timers_beside_the_runs() {
        let mut conn = Connection::open_in_memory().unwrap();
        for m in [&SQLITE_1, &SQLITE_2, &SQLITE_3, &SQLITE_4, &SQLITE_5, &SQLITE_6, &SQLITE_7] {
            conn.execute_batch(m.sql).unwrap();
        }
        conn.execute_batch(
            "CREATE TABLE agent_schema (version INTEGER NOT NULL);
             INSERT INTO agent_schema (version) VALUES (7);
             INSERT INTO agent_runs (run_id, agent, status, created_ms, updated_ms, epoch)
                 VALUES ('r', 'a', 'Running', 1, 1, 2);",
        )
        .unwrap();
        migrate_sqlite(&mut conn).unwrap();
        let epoch: i64 = conn.query_row("SELECT epoch FROM agent_runs WHERE run_id = 'r'", [], |r| r.get(0)).unwrap();
        assert_eq!(epoch, 2);
        let send = |id: &str| {
            conn.execute(
                "INSERT INTO agent_signals (run_id, signal_id, name, payload, sent_ms) VALUES ('r', ?1, 'go', '{}', 5)",
                [id],
            )
        };
        send("s1").unwrap();
        send("s2").unwrap();
        assert!(send("s1").is_err(), "one signal per run and id");
        let seqs: Vec<i64> = conn
            .prepare("SELECT seq FROM agent_signals ORDER BY signal_id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(seqs[0] < seqs[1], "{seqs:?}");
        let take =
            |id: &str| conn.execute("UPDATE agent_signals SET taken_by = 'w/signal/0' WHERE signal_id = ?1", [id]);
        take("s1").unwrap();
        assert!(take("s2").is_err(), "a wait takes one signal");
        let arm = "INSERT INTO agent_timers (run_id, timer_key, wake_ms) VALUES ('r', 'w/sleep/0', 9)";
        conn.execute(arm, []).unwrap();
        assert!(conn.execute(arm, []).is_err(), "one timer per run and key");
        let plan: String = conn
            .query_row(
                "EXPLAIN QUERY PLAN SELECT seq FROM agent_signals
                 WHERE run_id = 'r' AND name = 'go' AND taken_by IS NULL ORDER BY seq LIMIT 1",
                [],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("agent_signals_pending"), "{plan}");
        let v: i64 = conn.query_row("SELECT version FROM agent_schema", [], |r| r.get(0)).unwrap();
        assert_eq!(v, i64::from(latest(SQLITE)));
    }

    /// A version 8 database keeps its runs and signals and gains the table of schedules: one
    /// per agent and name, its buffered tick and last run empty until written, listed by
    /// agent then name from its key.
    #[test]
    #[cfg(feature = "sqlite")]
    fn sqlite_version_9_adds_schedules_beside_the_runs() {
        let mut conn = Connection::open_in_memory().unwrap();
        for m in [&SQLITE_1, &SQLITE_2, &SQLITE_3, &SQLITE_4, &SQLITE_5, &SQLITE_6, &SQLITE_7, &SQLITE_8] {
            conn.execute_batch(m.sql).unwrap();
        }
        conn.execute_batch(
            "CREATE TABLE agent_schema (version INTEGER NOT NULL);
             INSERT INTO agent_schema (version) VALUES (8);
             INSERT INTO agent_runs (run_id, agent, status, created_ms, updated_ms, epoch)
                 VALUES ('r', 'a', 'Running', 1, 1, 2);
             INSERT INTO agent_signals (run_id, signal_id, name, payload, sent_ms) VALUES ('r', 's1', 'go', '{}', 5);",
        )
        .unwrap();
        migrate_sqlite(&mut conn).unwrap();
        let kept: (i64, String) = conn
            .query_row(
                "SELECT r.epoch, s.signal_id FROM agent_runs AS r JOIN agent_signals AS s USING (run_id)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(kept, (2, "s1".to_owned()));
        let add = |agent: &str, name: &str| {
            conn.execute(
                "INSERT INTO agent_schedules (agent, name, cron, timezone, overlap, catch_up_ms, input, paused,
                     created_ms, updated_ms, next_tick_ms, version)
                 VALUES (?1, ?2, '0 3 * * *', 'UTC', 'skip', 0, '{}', 0, 1, 1, 1, 1)",
                [agent, name],
            )
        };
        add("a", "nightly").unwrap();
        add("a", "hourly").unwrap();
        add("b", "nightly").unwrap();
        assert!(add("a", "nightly").is_err(), "one schedule per agent and name");
        let (buffered, last): (Option<i64>, Option<String>) = conn
            .query_row(
                "SELECT buffered_tick_ms, last_run_id FROM agent_schedules WHERE agent = 'a' AND name = 'nightly'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((buffered, last), (None, None));
        let plan: String = conn
            .query_row(
                "EXPLAIN QUERY PLAN SELECT name FROM agent_schedules WHERE agent = 'a' ORDER BY agent, name",
                [],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("PRIMARY KEY") && !plan.contains("TEMP B-TREE"), "listed from the key: {plan}");
        let v: i64 = conn.query_row("SELECT version FROM agent_schema", [], |r| r.get(0)).unwrap();
        assert_eq!(v, i64::from(latest(SQLITE)));
    }

    /// A version 9 database keeps its runs, which gain no flow key, no limit, no start time
    /// and no debounce (claimed as before); a claim's count of a key's running runs is
    /// served by the flow index.
    #[test]
    #[cfg(feature = "sqlite")]
    fn sqlite_version_10_adds_flow_control_to_the_runs() {
        let mut conn = Connection::open_in_memory().unwrap();
        for m in &SQLITE[..9] {
            conn.execute_batch(m.sql).unwrap();
        }
        conn.execute_batch(
            "CREATE TABLE agent_schema (version INTEGER NOT NULL);
             INSERT INTO agent_schema (version) VALUES (9);
             INSERT INTO agent_runs (run_id, agent, status, created_ms, updated_ms, epoch)
                 VALUES ('r', 'a', 'Idle', 1, 1, 0);",
        )
        .unwrap();
        migrate_sqlite(&mut conn).unwrap();
        let kept: (Option<String>, Option<i64>, Option<i64>, bool) = conn
            .query_row(
                "SELECT flow_key, flow_limit, not_before_ms, debounce FROM agent_runs WHERE run_id = 'r'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(kept, (None, None, None, false));
        let plan: String = conn
            .query_row(
                "EXPLAIN QUERY PLAN SELECT count(*) FROM agent_runs
                 WHERE agent = 'a' AND flow_key = 'k' AND status NOT IN ('Completed', 'Failed', 'Cancelled', 'TimedOut')",
                [],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("agent_runs_flow"), "{plan}");
        let v: i64 = conn.query_row("SELECT version FROM agent_schema", [], |r| r.get(0)).unwrap();
        assert_eq!(v, i64::from(latest(SQLITE)));
    }

    #[test]
    #[cfg(feature = "sqlite")]
    fn sqlite_refuses_a_schema_table_of_several_rows() {
        let current = i64::from(latest(SQLITE));
        // A newer version in any row is refused as newer, whatever the first row says.
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_sqlite(&mut conn).unwrap();
        conn.execute("INSERT INTO agent_schema (version) VALUES (99)", []).unwrap();
        match migrate_sqlite(&mut conn) {
            Err(StoreError::SchemaTooNew { found: 99, supported, .. }) => assert_eq!(i64::from(supported), current),
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
        // Two rows of known versions: which one holds is unknown, so neither is trusted.
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_sqlite(&mut conn).unwrap();
        conn.execute("INSERT INTO agent_schema (version) VALUES (?1)", [current]).unwrap();
        match migrate_sqlite(&mut conn) {
            Err(StoreError::SchemaAmbiguous { rows: 2, lowest, highest, .. }) => {
                assert_eq!((lowest, highest), (current, current))
            }
            other => panic!("expected SchemaAmbiguous, got {other:?}"),
        }
        // A negative version is a damaged table.
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_sqlite(&mut conn).unwrap();
        conn.execute("UPDATE agent_schema SET version = -1", []).unwrap();
        assert!(matches!(migrate_sqlite(&mut conn), Err(StoreError::Corrupt { .. })));
    }
}
