//! The SQL of a [`RunQuery`], shared by the SQL stores: its filters as a `WHERE` clause
//! with numbered parameters, then the order and the page.
//!
//! Invariants:
//! - Only the filters given are in the statement, so each combination is one statement
//!   text (prepared and cached once), and the database plans it with the indexes that fit
//!   (`agent, status`, `created_ms`) rather than around `? IS NULL` alternatives.
//! - Every value is a parameter; nothing a caller gives is spliced into the text. The
//!   id search is a substring test (`instr`, `strpos`), not `LIKE`, so `%` and `_` in it
//!   are plain characters, as [`RunQuery::matches`] reads them.
//! - The order is total (`created_ms` descending, then `run_id`), so pages neither repeat
//!   nor skip a run that did not change between them.

use super::RunQuery;

/// A parameter of the statement.
pub(super) enum Param<'q> {
    Text(&'q str),
    Int(i64),
}

/// The SQL dialect's pieces.
pub(super) struct Dialect {
    /// The `n`th parameter (from 1).
    pub placeholder: fn(usize) -> String,
    /// A test that `run_id` contains the parameter written `p`.
    pub contains: fn(&str) -> String,
    /// How `run_id` sorts (PostgreSQL: bytewise, as SQLite and the memory store do).
    pub run_id_order: &'static str,
}

/// The `WHERE` clause of `q`'s filters (empty when none) and its parameters.
pub(super) fn filters<'q>(q: &'q RunQuery, d: &Dialect) -> (String, Vec<Param<'q>>) {
    let mut tests: Vec<String> = Vec::new();
    let mut params: Vec<Param<'q>> = Vec::new();
    let mut add = |test: &dyn Fn(&str) -> String, param: Param<'q>| {
        params.push(param);
        tests.push(test(&(d.placeholder)(params.len())));
    };
    if let Some(agent) = &q.agent {
        add(&|p| format!("agent = {p}"), Param::Text(agent));
    }
    if let Some(status) = q.status {
        add(&|p| format!("status = {p}"), Param::Text(status.as_str()));
    }
    if let Some(t) = q.created_since_ms {
        add(&|p| format!("created_ms >= {p}"), Param::Int(t));
    }
    if let Some(t) = q.created_before_ms {
        add(&|p| format!("created_ms < {p}"), Param::Int(t));
    }
    if let Some(t) = q.updated_since_ms {
        add(&|p| format!("updated_ms >= {p}"), Param::Int(t));
    }
    if let Some(needle) = &q.id_contains {
        add(&|p| (d.contains)(p), Param::Text(needle));
    }
    let clause = if tests.is_empty() { String::new() } else { format!(" WHERE {}", tests.join(" AND ")) };
    (clause, params)
}

/// `q`'s filters, order and page after `select` (the columns and `FROM`), and the
/// parameters.
pub(super) fn list<'q>(select: &str, q: &'q RunQuery, d: &Dialect) -> (String, Vec<Param<'q>>) {
    let (clause, mut params) = filters(q, d);
    let limit = q.limit.map_or(i64::MAX, |l| i64::try_from(l).unwrap_or(i64::MAX));
    params.push(Param::Int(limit));
    let limit_at = (d.placeholder)(params.len());
    params.push(Param::Int(i64::try_from(q.offset).unwrap_or(i64::MAX)));
    let offset_at = (d.placeholder)(params.len());
    let order = format!(" ORDER BY created_ms DESC, run_id{} LIMIT {limit_at} OFFSET {offset_at}", d.run_id_order);
    (format!("{select}{clause}{order}"), params)
}

/// `SELECT count(*)` of `q`'s filters, and the parameters.
pub(super) fn count<'q>(q: &'q RunQuery, d: &Dialect) -> (String, Vec<Param<'q>>) {
    let (clause, params) = filters(q, d);
    (format!("SELECT count(*) FROM agent_runs{clause}"), params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_core::AgentStatus;

    const DOLLARS: Dialect = Dialect {
        placeholder: |n| format!("${n}"),
        contains: |p| format!("strpos(run_id, {p}) > 0"),
        run_id_order: "",
    };

    #[test]
    fn only_the_filters_given_are_in_the_statement_each_a_parameter() {
        let everything = RunQuery::default();
        let (sql, params) = list("SELECT * FROM agent_runs", &everything, &DOLLARS);
        assert_eq!(sql, "SELECT * FROM agent_runs ORDER BY created_ms DESC, run_id LIMIT $1 OFFSET $2");
        assert_eq!(params.len(), 2);
        let q = RunQuery {
            status: Some(AgentStatus::Failed),
            id_contains: Some("x'; DROP TABLE agent_runs; --".into()),
            offset: 3,
            limit: Some(5),
            ..RunQuery::default()
        };
        let (sql, params) = list("SELECT * FROM agent_runs", &q, &DOLLARS);
        assert_eq!(
            sql,
            "SELECT * FROM agent_runs WHERE status = $1 AND strpos(run_id, $2) > 0 \
             ORDER BY created_ms DESC, run_id LIMIT $3 OFFSET $4"
        );
        assert!(matches!(params[1], Param::Text(t) if t.contains("DROP")));
        assert!(matches!(params[2..], [Param::Int(5), Param::Int(3)]));
        let (sql, _) = count(&q, &DOLLARS);
        assert_eq!(sql, "SELECT count(*) FROM agent_runs WHERE status = $1 AND strpos(run_id, $2) > 0");
    }
}
