//! Group commit of owners' appends on PostgreSQL: the deltas of many durable runs share one
//! statement and one commit.
//!
//! A durable run waits for its delta to be committed before its next state starts, so with
//! one commit each, 100 runs of one process would make 100 commits where the database could
//! make one. Here an owner's `append` joins a queue; a flusher takes everything queued (up
//! to [`BATCH`] runs) and writes it in one statement: each run's row updated, fenced by its
//! epoch and guarded by its `last_seq`, and the entries of the runs whose update matched
//! inserted, all in one implicit transaction. While it is under way, the appends arriving
//! queue for the next one, so a lone run pays no more than before and a crowd shares
//! commits.
//!
//! Invariants:
//! - Each run's outcome is its own: a run fenced or refused in a batch writes nothing (its
//!   update did not match, so none of its entries is inserted) and gets its own error, found
//!   by reading its row after the batch; the other runs of the batch are written. A batch
//!   that fails as a whole (connection lost) fails every run in it, and each is retried by
//!   its caller (`RetryingStore`), whose check of a lost reply reads the journal.
//! - A run is in at most one batch at a time (its writer awaits each commit); a second
//!   append of the same run found in one batch waits for the next.
//! - At most one flusher per store runs at a time. The queue and the flag saying one runs
//!   change under one lock, so an append either finds a flusher that will take it or starts
//!   one. An append that finds no flusher and nothing queued writes itself, as the flusher
//!   (a lone run pays no hop to another task), and starts a flusher task afterwards for what
//!   queued meanwhile. A flusher task runs on the runtime of the append that started it; if that runtime
//!   shuts down, the flusher's guard fails what it had taken and what is queued (their
//!   callers see an error), and the next append starts another.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use tokio::sync::oneshot;

use super::{u64_from_db, u64_to_db, Fail, PostgresStore, STORE};
use crate::store::{JournalEntry, RunRecord, StoreError};

/// The most runs one statement writes.
const BATCH: usize = 256;

/// One run's append waiting to be written.
struct Pending {
    run: RunRecord,
    entries: Vec<JournalEntry>,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// The queue of a store's owners' appends (see the module docs).
#[derive(Default)]
pub(super) struct GroupCommit {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    queue: Vec<Pending>,
    /// A flusher runs.
    active: bool,
}

impl GroupCommit {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl PostgresStore {
    /// Append `entries` (strictly increasing, not empty) to run `run` (epoch above 0) in the
    /// next group commit.
    pub(super) async fn append_grouped(&self, run: &RunRecord, entries: &[JournalEntry]) -> Result<(), StoreError> {
        // Alone: no flusher runs and nothing is queued. Write here, as the flusher, without
        // a hop to another task; appends arriving meanwhile queue for a flusher started
        // after this write.
        let alone = {
            let mut state = self.inner.group.state();
            state.queue.is_empty() && !std::mem::replace(&mut state.active, true)
        };
        if alone {
            // Hands over to a flusher task whatever queued meanwhile, however this ends
            // (this future may be dropped mid-write).
            let _hand_over = HandOver { store: self };
            return match self.write_one(run, entries).await {
                Ok(result) => result,
                Err(fail) => Err(fail.into_store(&format!("append to run {}", run.run_id))),
            };
        }
        let (done, outcome) = oneshot::channel();
        let pending = Pending { run: run.clone(), entries: entries.to_vec(), done };
        let start = {
            let mut state = self.inner.group.state();
            state.queue.push(pending);
            !std::mem::replace(&mut state.active, true)
        };
        if start {
            let store = self.clone();
            tokio::spawn(async move { store.flush_all().await });
        }
        match outcome.await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Backend {
                store: STORE,
                message: format!("append to run {}: the group commit was stopped (its runtime shut down)", run.run_id),
                source: Some(Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionAborted))),
            }),
        }
    }

    /// Write batches until the queue is empty.
    async fn flush_all(self) {
        let guard = Flushing { store: &self };
        loop {
            let batch = {
                let mut state = self.inner.group.state();
                if state.queue.is_empty() {
                    state.active = false;
                    drop(state);
                    std::mem::forget(guard);
                    return;
                }
                take_batch(&mut state.queue)
            };
            // If this task is dropped meanwhile, so is `batch`: its callers hear of it.
            let results = match &batch[..] {
                // One run: the one-row statement, cheaper than the arrays' for the server.
                [one] => vec![match self.write_one(&one.run, &one.entries).await {
                    Ok(result) => result,
                    Err(fail) => Err(fail.into_store(&format!("append to run {}", one.run.run_id))),
                }],
                _ => self.write_batch(&batch).await,
            };
            for (pending, result) in batch.into_iter().zip(results) {
                let _ = pending.done.send(result);
            }
        }
    }

    /// Write one run's append: the row's fenced, guarded update feeding the insert of its
    /// entry, in one statement of scalars (cheaper to plan and run than the batch's arrays);
    /// several entries go through the batch's statement.
    async fn write_one(&self, run: &RunRecord, entries: &[JournalEntry]) -> Result<Result<(), StoreError>, Fail> {
        let [e] = entries else {
            return Ok(self.write_batch_inner(&[(run, entries)]).await?.pop().unwrap_or(Ok(())));
        };
        let conn = self.conn().await?;
        let st = conn
            .prepare_cached(
                "WITH owned AS (
                     UPDATE agent_runs SET agent = $2, status = $3, created_ms = $4, updated_ms = $5, last_seq = $7
                     WHERE run_id = $1 AND epoch = $6 AND last_seq < $7
                     RETURNING run_id
                 )
                 INSERT INTO agent_journal (run_id, seq, state, payload, at_ms)
                 SELECT run_id, $7, $8, $9, $10 FROM owned",
            )
            .await?;
        let seq = u64_to_db(STORE, "journal seq", e.seq)?;
        let epoch = u64_to_db(STORE, "epoch", run.epoch)?;
        let written = conn
            .execute(
                &st,
                &[
                    &run.run_id,
                    &run.agent,
                    &run.status.as_str(),
                    &run.created_ms,
                    &run.updated_ms,
                    &epoch,
                    &seq,
                    &e.state,
                    &e.payload,
                    &e.at_ms,
                ],
            )
            .await?;
        if written > 0 {
            return Ok(Ok(()));
        }
        Ok(Err(refusal(&conn, run, e.seq).await?))
    }

    /// Write `batch` in one statement; each run's outcome, in order.
    async fn write_batch(&self, batch: &[Pending]) -> Vec<Result<(), StoreError>> {
        let writes: Vec<(&RunRecord, &[JournalEntry])> = batch.iter().map(|p| (&p.run, &p.entries[..])).collect();
        match self.write_batch_inner(&writes).await {
            Ok(results) => results,
            Err(fail) => {
                let e = fail.into_store("append (group commit)");
                batch.iter().map(|_| Err(copy_error(&e))).collect()
            }
        }
    }

    async fn write_batch_inner(
        &self,
        batch: &[(&RunRecord, &[JournalEntry])],
    ) -> Result<Vec<Result<(), StoreError>>, Fail> {
        let conn = self.conn().await?;
        let mut run_ids = Vec::with_capacity(batch.len());
        let (mut agents, mut statuses, mut created, mut updated) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut epochs, mut firsts, mut lasts) = (Vec::new(), Vec::new(), Vec::new());
        let (mut e_runs, mut e_seqs, mut e_states, mut e_payloads, mut e_ats) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for &(r, entries) in batch {
            run_ids.push(r.run_id.as_str());
            agents.push(r.agent.as_str());
            statuses.push(r.status.as_str());
            created.push(r.created_ms);
            updated.push(r.updated_ms);
            epochs.push(u64_to_db(STORE, "epoch", r.epoch)?);
            firsts.push(u64_to_db(STORE, "journal seq", entries[0].seq)?);
            lasts.push(u64_to_db(STORE, "journal seq", entries[entries.len() - 1].seq)?);
            for e in entries {
                e_runs.push(r.run_id.as_str());
                e_seqs.push(u64_to_db(STORE, "journal seq", e.seq)?);
                e_states.push(e.state.as_str());
                e_payloads.push(e.payload.as_str());
                e_ats.push(e.at_ms);
            }
        }
        let st = conn
            .prepare_cached(
                "WITH batch AS (
                     SELECT * FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[], $5::BIGINT[],
                                          $6::BIGINT[], $7::BIGINT[], $8::BIGINT[])
                         AS b(run_id, agent, status, created_ms, updated_ms, epoch, first_seq, last_seq)
                 ),
                 owned AS (
                     UPDATE agent_runs r SET agent = b.agent, status = b.status, created_ms = b.created_ms,
                         updated_ms = b.updated_ms, last_seq = b.last_seq
                     FROM batch b
                     WHERE r.run_id = b.run_id AND r.epoch = b.epoch AND r.last_seq < b.first_seq
                     RETURNING r.run_id
                 ),
                 written AS (
                     INSERT INTO agent_journal (run_id, seq, state, payload, at_ms)
                     SELECT e.run_id, e.seq, e.state, e.payload, e.at_ms
                     FROM unnest($9::TEXT[], $10::BIGINT[], $11::TEXT[], $12::TEXT[], $13::BIGINT[])
                         AS e(run_id, seq, state, payload, at_ms)
                     WHERE e.run_id IN (SELECT run_id FROM owned)
                 )
                 SELECT run_id FROM owned",
            )
            .await?;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 13] = [
            &run_ids,
            &agents,
            &statuses,
            &created,
            &updated,
            &epochs,
            &firsts,
            &lasts,
            &e_runs,
            &e_seqs,
            &e_states,
            &e_payloads,
            &e_ats,
        ];
        let rows = conn.query(&st, &params).await?;
        let owned: HashSet<String> = rows.iter().map(|r| r.try_get::<_, String>(0)).collect::<Result<_, _>>()?;
        let mut results = Vec::with_capacity(batch.len());
        for &(run, entries) in batch {
            if owned.contains(&run.run_id) {
                results.push(Ok(()));
                continue;
            }
            results.push(Err(refusal(&conn, run, entries[0].seq).await?));
        }
        Ok(results)
    }
}

/// Why the append of `run` from `seq` on was refused, from its row as it is now: another
/// epoch ([`StoreError::Fenced`]) or a `seq` already stored ([`StoreError::Conflict`]).
async fn refusal(conn: &deadpool_postgres::Object, run: &RunRecord, seq: u64) -> Result<StoreError, Fail> {
    let st = conn.prepare_cached("SELECT epoch, last_seq FROM agent_runs WHERE run_id = $1").await?;
    let row = conn.query_opt(&st, &[&run.run_id]).await?;
    let (current, last) = match row {
        Some(r) => (u64_from_db(STORE, "epoch", r.try_get(0)?)?, u64_from_db(STORE, "last seq", r.try_get(1)?)?),
        None => (0, 0),
    };
    Ok(if current != run.epoch {
        StoreError::fenced(STORE, &run.run_id, run.epoch, current)
    } else {
        StoreError::Conflict { store: STORE, run_id: run.run_id.clone(), seq, last }
    })
}

/// Up to [`BATCH`] appends of distinct runs, oldest first; the rest stay queued.
fn take_batch(queue: &mut Vec<Pending>) -> Vec<Pending> {
    let mut seen = HashSet::new();
    let mut batch = Vec::new();
    let mut rest = Vec::new();
    for p in queue.drain(..) {
        if batch.len() < BATCH && seen.insert(p.run.run_id.clone()) {
            batch.push(p);
        } else {
            rest.push(p);
        }
    }
    *queue = rest;
    batch
}

/// An error for each run of a batch that failed as a whole, keeping whether it is transient
/// (so each caller retries it).
fn copy_error(e: &StoreError) -> StoreError {
    let kind = if e.is_transient() { std::io::ErrorKind::ConnectionReset } else { std::io::ErrorKind::Other };
    StoreError::Backend {
        store: STORE,
        message: e.to_string(),
        source: Some(Box::new(std::io::Error::new(kind, e.to_string()))),
    }
}

/// A flusher's guard: if its task is dropped (its runtime shut down), the appends queued
/// fail (dropping their senders tells their callers), and the next append starts another
/// flusher.
struct Flushing<'a> {
    store: &'a PostgresStore,
}

impl Drop for Flushing<'_> {
    fn drop(&mut self) {
        let queued = {
            let mut state = self.store.inner.group.state();
            state.active = false;
            std::mem::take(&mut state.queue)
        };
        drop(queued);
    }
}

/// An append that wrote alone, as the flusher: when it ends, a flusher task takes what
/// queued meanwhile, or the store has no flusher again.
struct HandOver<'a> {
    store: &'a PostgresStore,
}

impl Drop for HandOver<'_> {
    fn drop(&mut self) {
        let mut state = self.store.inner.group.state();
        if state.queue.is_empty() {
            state.active = false;
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                drop(state);
                let store = self.store.clone();
                runtime.spawn(async move { store.flush_all().await });
            }
            Err(_) => {
                // No runtime to flush on: the queued appends fail (their callers hear of it).
                state.active = false;
                let queued = std::mem::take(&mut state.queue);
                drop(state);
                drop(queued);
            }
        }
    }
}
