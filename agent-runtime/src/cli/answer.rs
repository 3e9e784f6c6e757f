//! `answer RUN REQUEST VALUE`: answer a run's pending request for human input through the
//! store, from any process (the run's own may be waiting, or stopped).
//!
//! Invariants:
//! - Only a request the store holds unanswered is answered; the store's first answer wins,
//!   so answering twice (or racing the run's own timeout) never overwrites an answer.
//! - The request's validator lives in the workflow's process: it checks the answer when the
//!   run reads it (within the store poll, about half a second, or when the run is resumed).
//!   A refused answer stays recorded, and the state asks again under a new request id.

use std::io::Write;

use super::store::Store;
use super::CliError;
use crate::store::now_ms;
use crate::text::shown;

pub(super) async fn answer(
    agent: &str,
    store: &Store,
    run: &str,
    request: &str,
    value: &str,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let run = store.resolve(agent, run).await?;
    let db = store.get();
    let inputs = db.inputs(Some(&run.run_id), false).await?;
    let Some(record) = inputs.iter().find(|r| r.request_id == request) else {
        let pending = inputs.iter().filter(|r| r.answer.is_none()).map(|r| r.request_id.clone()).collect();
        return Err(CliError::UnknownRequest { run: run.run_id, request: request.to_owned(), pending });
    };
    if let Some(answer) = &record.answer {
        return Err(CliError::AlreadyAnswered { run: run.run_id, request: request.to_owned(), answer: answer.clone() });
    }
    if !db.answer_input(&run.run_id, request, value, false, now_ms()).await? {
        // Answered meanwhile (by the run's timeout, or by someone else): report that answer.
        let now = db.inputs(Some(&run.run_id), false).await?;
        let answer =
            now.into_iter().find(|r| r.request_id == request).and_then(|r| r.request.answer).unwrap_or_default();
        return Err(CliError::AlreadyAnswered { run: run.run_id, request: request.to_owned(), answer });
    }
    writeln!(out, "answered {} of run {}: \"{}\"", shown(request), shown(&run.run_id), shown(value))?;
    if run.status.is_finished() {
        writeln!(out, "the run is {}; the answer is kept in the store", run.status)?;
    } else {
        writeln!(
            out,
            "a process running it reads the answer within a second; a stopped run reads it when resumed (`resume {}`)",
            shown(&run.run_id)
        )?;
        writeln!(
            out,
            "(the workflow checks the answer there: one it refuses is asked again under a new id, see `show`)"
        )?;
    }
    Ok(())
}
