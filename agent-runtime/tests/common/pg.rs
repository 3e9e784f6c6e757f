//! The PostgreSQL server the tests run against, and the one rule about it.
//!
//! Tests that need PostgreSQL call [`url`] first. `AGENT_TEST_POSTGRES_URL` names the server
//! (e.g. `postgres://postgres@127.0.0.1:5432/test`); each test makes its own schema, database
//! objects or uniquely named runs there. When the variable is unset or empty:
//! - under CI (`CI` set to anything but empty, `0` or `false`, as CI services do), the test
//!   fails: a CI run that silently skips the PostgreSQL tests would pass without testing them;
//! - elsewhere the test says on stderr that it was skipped and passes, so
//!   `cargo test --workspace` works with no server.

/// The variable that names the test server.
pub const URL_VAR: &str = "AGENT_TEST_POSTGRES_URL";

/// The server's URL for `test`, or `None` when it may be skipped (see the module's rule).
///
/// # Panics
///
/// Under CI, when `AGENT_TEST_POSTGRES_URL` is unset or empty.
pub fn url(test: &str) -> Option<String> {
    match decide(std::env::var(URL_VAR).ok(), std::env::var("CI").ok()) {
        Ok(Some(url)) => Some(url),
        Ok(None) => {
            eprintln!("skipped {test}: {URL_VAR} is not set (e.g. postgres://postgres@127.0.0.1:5432/test)");
            None
        }
        Err(why) => panic!("{test}: {why}"),
    }
}

/// The rule itself, on the two variables' values: `Ok(Some(url))` to test against `url`,
/// `Ok(None)` to skip, `Err` to fail.
pub fn decide(url: Option<String>, ci: Option<String>) -> Result<Option<String>, String> {
    match url {
        Some(url) if !url.is_empty() => Ok(Some(url)),
        _ if is_ci(ci.as_deref()) => Err(format!(
            "{URL_VAR} is not set under CI; set it (e.g. postgres://postgres@127.0.0.1:5432/test) \
             so the PostgreSQL tests run"
        )),
        _ => Ok(None),
    }
}

fn is_ci(ci: Option<&str>) -> bool {
    ci.is_some_and(|v| !matches!(v.trim().to_ascii_lowercase().as_str(), "" | "0" | "false"))
}

/// A schema of the test's own (`agent_test_{tag}_{random}`; keep `tag` short and lowercase:
/// PostgreSQL names stop at 63 bytes) and `url` with that schema as its connections' search
/// path, so a child process that connects with `PostgresStore::connect(url)` uses it too.
/// The schema is made by the first `PostgresStore::connect_with_schema(url, schema)`; drop it
/// with [`drop_schema`].
pub fn own_schema(url: &str, tag: &str) -> (String, String) {
    let schema = format!("agent_test_{tag}_{:016x}", fastrand::u64(..));
    let sep = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{sep}options=-c%20search_path%3D{schema}");
    (schema, url)
}

/// Drop a schema [`own_schema`] named, with everything in it.
#[cfg(feature = "postgres")]
pub async fn drop_schema(url: &str, schema: &str) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")).await.unwrap();
}

/// Run `scenario` on a `PostgresStore` in a schema of its own, dropped afterwards; skipped
/// (or failed under CI) without a server, as [`url`] says. `test` names the test, `tag` the
/// schema (see [`own_schema`]).
#[cfg(feature = "postgres")]
pub async fn on_postgres<F, Fut>(test: &str, tag: &str, scenario: F)
where
    F: FnOnce(std::sync::Arc<dyn agent_runtime::store::CheckpointStore>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let Some(url) = url(test) else { return };
    let (schema, _) = own_schema(&url, tag);
    let store = agent_runtime::store::PostgresStore::connect_with_schema(&url, &schema).await.unwrap();
    scenario(std::sync::Arc::new(store)).await;
    drop_schema(&url, &schema).await;
}
