//! Store outages: a durable run on PostgreSQL rides out a passing outage of its store, and
//! one longer than its retry bound stops it without losing anything, `recover` continuing
//! it once the store is back.
//!
//! The outage is a TCP proxy of the test's own between the store and the server
//! (`AGENT_TEST_POSTGRES_URL`; required under CI, see `common/pg.rs`): cut, it closes every
//! connection through it and refuses new ones (its port is closed); up again, it listens on
//! the same port. A server restart is played by terminating the store's backends
//! (`pg_terminate_backend`, which is what a restart does to its clients: `57P01`). The
//! scenarios run on real time (real sockets), each bounded to a few seconds, and assert
//! outcomes (what ran, what was recorded), never durations.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_core::{AgentError, Checkpoint, Context, StateResult};
use agent_runtime::store::{PostgresStore, StoreError};
use agent_runtime::Agent;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{watch, Notify};

mod common;

/// A TCP proxy to `upstream` on 127.0.0.1, which the test cuts and restores.
struct Proxy {
    addr: SocketAddr,
    up: watch::Sender<bool>,
    /// Connections accepted so far.
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(64)
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let (up, rx) = watch::channel(true);
        let accepted = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(Proxy::serve(listener, upstream, rx, accepted.clone()));
        Proxy { addr, up, accepted, task }
    }

    async fn serve(listener: TcpListener, upstream: SocketAddr, mut up: watch::Receiver<bool>, n: Arc<AtomicUsize>) {
        let addr = listener.local_addr().unwrap();
        let mut listener = Some(listener);
        loop {
            match &listener {
                Some(l) => tokio::select! {
                    accepted = l.accept() => {
                        if let Ok((client, _)) = accepted {
                            n.fetch_add(1, SeqCst);
                            tokio::spawn(Proxy::pipe(client, upstream, up.clone()));
                        }
                    }
                    changed = up.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        if !*up.borrow() {
                            listener = None;
                        }
                    }
                },
                None => {
                    if up.changed().await.is_err() {
                        return;
                    }
                    if *up.borrow() {
                        listener = Some(listen(addr).expect("the proxy listens on its port again"));
                    }
                }
            }
        }
    }

    /// Carry one connection until either side closes it or the proxy is cut (then both
    /// sockets are dropped, which closes them).
    async fn pipe(mut client: TcpStream, upstream: SocketAddr, mut up: watch::Receiver<bool>) {
        let Ok(mut server) = TcpStream::connect(upstream).await else { return };
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
            _ = up.wait_for(|up| !*up) => {}
        }
    }

    /// Close every connection and refuse new ones.
    fn cut(&self) {
        self.up.send_replace(false);
    }

    /// Accept connections again.
    fn restore(&self) {
        self.up.send_replace(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

/// The server of `url`, its address, and a key=value connection string for the same user and
/// database through `via` (or straight when `None`), with `application_name` set to `app`.
fn through(url: &str, via: Option<SocketAddr>, app: &str) -> (SocketAddr, String) {
    use std::net::ToSocketAddrs;
    let config: tokio_postgres::Config = url.parse().unwrap();
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let server = (host.as_str(), port).to_socket_addrs().unwrap().find(SocketAddr::is_ipv4).expect("an IPv4 server");
    let to = via.unwrap_or(server);
    let mut s = format!("host={} port={} application_name={app}", to.ip(), to.port());
    if let Some(user) = config.get_user() {
        s.push_str(&format!(" user={user}"));
    }
    if let Some(db) = config.get_dbname() {
        s.push_str(&format!(" dbname={db}"));
    }
    if let Some(pw) = config.get_password() {
        s.push_str(&format!(" password='{}'", String::from_utf8_lossy(pw).replace('\\', "\\\\").replace('\'', "\\'")));
    }
    (server, s)
}

type Log = Arc<Mutex<Vec<String>>>;
/// A state's name and where it goes.
type Step = (&'static str, fn() -> StateResult);

/// `a`, then `x`, `y` and `z` at once, each on to `last`. Each state logs its start and
/// sets its key; `y` waits for `gate` first (when given).
fn fan_out(name: &str, log: &Log, gate: Option<Arc<Notify>>) -> Agent {
    let mut agent = Agent::new(name.to_owned());
    let states: [Step; 5] = [
        ("a", || StateResult::parallel(["x", "y", "z"])),
        ("x", || StateResult::next("last")),
        ("y", || StateResult::next("last")),
        ("z", || StateResult::next("last")),
        ("last", || StateResult::End),
    ];
    for (state, next) in states {
        let (log, gate) = (log.clone(), gate.clone());
        agent.add_state(state, move |ctx: Context| {
            let (log, gate) = (log.clone(), gate.clone());
            async move {
                log.lock().unwrap().push(state.to_owned());
                if let (Some(gate), "y") = (&gate, state) {
                    gate.notified().await;
                }
                ctx.set_state(state, format!("{state} done"));
                next()
            }
        });
    }
    agent
}

/// How many times each state started, sorted.
fn runs(log: &Log) -> Vec<(String, usize)> {
    let mut counts = std::collections::BTreeMap::new();
    for s in log.lock().unwrap().iter() {
        *counts.entry(s.clone()).or_insert(0) += 1;
    }
    counts.into_iter().collect()
}

/// Wait (real time, bounded) until `check` holds.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let give_up = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < give_up, "gave up waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The context and completed states of the reference run: the same workflow, never cut.
async fn reference(store: &PostgresStore, tag: &str) -> (serde_json::Value, Vec<String>) {
    let log = Log::default();
    let result = fan_out(&format!("{tag}_reference"), &log, None).with_store(store.clone()).run().await.unwrap();
    assert!(runs(&log).iter().all(|(_, n)| *n == 1), "{:?}", runs(&log));
    let mut completed = result.completed_states();
    completed.sort();
    (result.context().to_json().unwrap(), completed)
}

/// Wait (real time, bounded) until the store records `states` completed in run `run_id`.
async fn recorded_done(store: &PostgresStore, run_id: &str, states: &[&str]) {
    let give_up = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(checkpoint) = agent_runtime::store::read_checkpoint(store, run_id).await.unwrap() {
            let completed = checkpoint.completed_states;
            if states.iter().all(|s| completed.iter().any(|c| c == s)) {
                return;
            }
        }
        assert!(Instant::now() < give_up, "gave up waiting until {states:?} were recorded");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The newest checkpoint of `run_id`.
async fn newest(store: &PostgresStore, run_id: &str) -> Checkpoint {
    agent_runtime::store::read_checkpoint(store, run_id).await.unwrap().expect("a snapshot of the run")
}

/// Run `scenario` on a schema of its own, reached straight (`direct`) and through a proxy;
/// drop the schema after, whatever happened.
async fn with_schema<F, Fut>(test: &str, tag: &str, scenario: F)
where
    F: FnOnce(PostgresStore, Proxy, String) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let Some(url) = common::pg::url(test) else { return };
    let (schema, _) = common::pg::own_schema(&url, tag);
    let app = format!("agent_outage_{:08x}", fastrand::u32(..));
    let (server, direct) = through(&url, None, &app);
    let proxy = Proxy::start(server).await;
    let (_, proxied) = through(&url, Some(proxy.addr), &app);
    // The schema is made straight; the run's store goes through the proxy.
    PostgresStore::connect_with_schema(&direct, &schema).await.unwrap();
    let store = PostgresStore::connect_with_schema(&proxied, &schema).await.unwrap();
    let outcome = tokio::spawn(scenario(store, proxy, app)).await;
    common::pg::drop_schema(&url, &schema).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// A fan-out run whose store goes away for two seconds while a branch's completion is being
/// committed: the branch waits, the run goes on once the store is back, every state ran
/// once, and the run ends as an uninterrupted one does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_waits_through_a_short_outage_and_goes_on() {
    let test = "a_run_waits_through_a_short_outage_and_goes_on";
    with_schema(test, "outage_short", |store, proxy, _| async move {
        let (want_context, want_completed) = reference(&store, "short").await;
        let (log, gate) = (Log::default(), Arc::new(Notify::new()));
        let agent = fan_out("short", &log, Some(gate.clone())).with_store(store.clone());
        let running = tokio::spawn({
            let agent = agent.clone();
            async move { agent.run().await }
        });
        until("`y` runs", || log.lock().unwrap().iter().any(|s| s == "y")).await;
        until("`x` and `z` are done", || log.lock().unwrap().len() >= 4).await;
        let run_id = agent.run_id().unwrap();

        proxy.cut();
        let accepted = proxy.accepted.load(SeqCst);
        gate.notify_one();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!running.is_finished(), "the run waits for its store");
        assert_eq!(runs(&log).iter().find(|(s, _)| s == "last"), None, "`last` waits for `y`'s commit");
        proxy.restore();

        let result = tokio::time::timeout(Duration::from_secs(20), running).await.unwrap().unwrap().unwrap();
        assert!(proxy.accepted.load(SeqCst) > accepted, "the store connected again after the outage");
        assert!(runs(&log).iter().all(|(_, n)| *n == 1), "every state ran once: {:?}", runs(&log));
        assert_eq!(result.context().to_json().unwrap(), want_context);
        let mut completed = result.completed_states();
        completed.sort();
        assert_eq!(completed, want_completed);
        // Recorded as it ended: each completion once, the context whole.
        let recorded = newest(&store, &run_id).await;
        let mut recorded_completed = recorded.completed_states.clone();
        recorded_completed.sort();
        assert_eq!(recorded_completed, want_completed, "each state's completion recorded once");
        assert_eq!(recorded.read_context().unwrap().to_json().unwrap(), want_context);
    })
    .await;
}

/// An outage longer than the retry bound stops the run with a store error (or, had the lease
/// ended first, a fenced one) and loses nothing: once the store is back, `recover` completes
/// the run, and the states recorded as completed do not run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_past_the_retry_bound_stops_the_run_and_recover_continues_it() {
    let test = "an_outage_past_the_retry_bound_stops_the_run_and_recover_continues_it";
    with_schema(test, "outage_long", |store, proxy, _| async move {
        let (want_context, want_completed) = reference(&store, "long").await;
        let (log, gate) = (Log::default(), Arc::new(Notify::new()));
        let build = |gate| {
            fan_out("long", &log, gate)
                .with_store(store.clone())
                .lease_ttl(Duration::from_secs(3))
                .store_retry(Duration::from_secs(1))
        };
        let agent = build(Some(gate.clone()));
        let running = tokio::spawn({
            let agent = agent.clone();
            async move { agent.run().await }
        });
        until("`x` and `z` are done, `y` runs", || log.lock().unwrap().len() >= 4).await;
        let run_id = agent.run_id().unwrap();
        recorded_done(&store, &run_id, &["a", "x", "z"]).await;

        proxy.cut();
        gate.notify_one();
        let stopped = tokio::time::timeout(Duration::from_secs(20), running).await.unwrap().unwrap();
        match stopped {
            Err(AgentError::Store { .. } | AgentError::Fenced { .. }) => {}
            other => panic!("the run should stop for its store: {other:?}"),
        }
        assert_eq!(runs(&log).iter().find(|(s, _)| s == "last"), None, "nothing ran unrecorded after `y`");
        proxy.restore();

        // Recovered (as a new process would, though this one's lease is reclaimed at once).
        let recovered = build(None).recover(&run_id).await.unwrap();
        assert_eq!(recovered.context().to_json().unwrap(), want_context);
        let mut completed = recovered.completed_states();
        completed.sort();
        assert_eq!(completed, want_completed);
        let counts = runs(&log);
        let ran = |state: &str| counts.iter().find(|(s, _)| s == state).map_or(0, |(_, n)| *n);
        assert_eq!((ran("a"), ran("x"), ran("z"), ran("last")), (1, 1, 1, 1), "recorded states ran once: {counts:?}");
        assert_eq!(ran("y"), 2, "`y`, whose completion was never recorded, ran again");
    })
    .await;
}

/// The server ends every connection of the store (as a restart does) while a branch runs:
/// the pool drops the dead connections, the calls on them are retried on new ones, and the
/// run completes, every state once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_rides_out_a_server_side_restart_of_its_connections() {
    let test = "a_run_rides_out_a_server_side_restart_of_its_connections";
    with_schema(test, "outage_restart", |store, proxy, app| async move {
        let _up = proxy; // Kept up: the store connects through it.
        let (want_context, _) = reference(&store, "restart").await;
        let (log, gate) = (Log::default(), Arc::new(Notify::new()));
        let agent = fan_out("restart", &log, Some(gate.clone())).with_store(store.clone());
        let running = tokio::spawn({
            let agent = agent.clone();
            async move { agent.run().await }
        });
        until("`x` and `z` are done, `y` runs", || log.lock().unwrap().len() >= 4).await;
        let ended = terminate(&app).await;
        assert!(ended > 0, "the store's connections were ended");
        gate.notify_one();
        let result = tokio::time::timeout(Duration::from_secs(20), running).await.unwrap().unwrap().unwrap();
        assert!(runs(&log).iter().all(|(_, n)| *n == 1), "every state ran once: {:?}", runs(&log));
        assert_eq!(result.context().to_json().unwrap(), want_context);
    })
    .await;
}

/// End every server connection of application `app` (`pg_terminate_backend`, as a restart
/// would: `57P01`): how many.
async fn terminate(app: &str) -> usize {
    let url = std::env::var(common::pg::URL_VAR).unwrap();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()",
            &[&app],
        )
        .await
        .unwrap();
    rows.len()
}

fn backend(source: tokio_postgres::Error) -> StoreError {
    StoreError::Backend { store: "postgres", message: "test".into(), source: Some(Box::new(source)) }
}

/// Real driver errors: a connection the server ended (what a restart does) is transient; a
/// syntax error and a unique violation are not.
#[tokio::test]
async fn a_terminated_connection_is_transient_a_bad_statement_is_not() {
    let Some(url) = common::pg::url("a_terminated_connection_is_transient_a_bad_statement_is_not") else { return };
    let app = format!("agent_outage_{:08x}", fastrand::u32(..));
    let (_, direct) = through(&url, None, &app);
    let (client, connection) = tokio_postgres::connect(&direct, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);

    let syntax = client.simple_query("NOT SQL").await.unwrap_err();
    assert!(!backend(syntax).is_transient());
    client.batch_execute("CREATE TEMP TABLE once (id INT PRIMARY KEY); INSERT INTO once VALUES (1)").await.unwrap();
    let unique = client.batch_execute("INSERT INTO once VALUES (1)").await.unwrap_err();
    assert_eq!(unique.code().map(|c| c.code()), Some("23505"));
    assert!(!backend(unique).is_transient());

    assert_eq!(terminate(&app).await, 1);
    let ended = client.simple_query("SELECT 1").await.unwrap_err();
    assert!(backend(ended).is_transient(), "a connection ended by the server is transient");
}
