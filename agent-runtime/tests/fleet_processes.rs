//! A fleet of worker processes on one store: a SQLite file, and a PostgreSQL schema of the
//! test's own when `AGENT_TEST_POSTGRES_URL` is set (required under CI: see `common/pg.rs`).
//! In one process: `fleet.rs`.
//!
//! Each worker is this test binary itself, run with `AGENT_FLEET_CHILD` set (see
//! `worker_child`): `Worker::new(store).serve(..).lease_ttl(1 s).poll_interval(50 ms).run()`,
//! which drains on SIGTERM. Every state body appends `n state pid` to the test's log file
//! (one `O_APPEND` write a line) before its work, so the test counts the executions of each
//! body and knows which process ran them; a worker also logs `ready pid` before it serves
//! and `report pid claimed completed failed lost handed_over` when it has drained.
//!
//! - `a_second_worker_never_takes_a_healthy_workers_runs`: while worker A runs slow states
//!   (several leases long), worker B claims nothing; every run stays at epoch 1.
//! - `a_zombie_is_fenced`: a worker stopped (SIGSTOP) past its lease loses its run to
//!   another, which completes it; continued (SIGCONT), the zombie stops the run and writes
//!   nothing more (its row, snapshots and journal are as the new owner left them).
//! - `chaos`: four workers drain 200 runs (fan-out and join, a state failing its first
//!   attempt and retried, a request for input answered through the store by the test) while
//!   the test SIGKILLs a random worker 20 times at random instants and starts another.
//!   `AGENT_FLEET_CHAOS_RUNS` and `AGENT_FLEET_CHAOS_KILLS` change those numbers,
//!   `AGENT_FLEET_SEED` replays a printed seed.
//!
//! Each test checks every run against an uninterrupted in-process run of the same input
//! (its context), each state completed exactly once on record, and that every extra
//! execution of a body belongs to a process that was killed or stopped. Every test is
//! bounded (`BOUND`); the children are killed when a test ends, however it ends
//! (`Fleet`'s drop). (Two processes recovering one crashed run: `ownership.rs`.)

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agent_core::{AgentStatus, BoxError, Checkpoint, Context, HumanInput, RetryPolicy, StateResult};
use agent_runtime::store::{CheckpointStore, MemoryStore, PostgresStore, RunQuery, SqliteStore};
use agent_runtime::{Agent, RunOptions, SubmitOptions, Worker};

mod common;

type Store = Arc<dyn CheckpointStore>;

/// The store a child serves: `sqlite:PATH` or `postgres:URL` (the URL names the schema).
const CHILD: &str = "AGENT_FLEET_CHILD";
/// The agent's name.
const AGENT: &str = "AGENT_FLEET_AGENT";
/// The workflow and its states' work: `slow:MS` or `chaos:MS`.
const FLOW: &str = "AGENT_FLEET_FLOW";
/// The log file.
const LOG: &str = "AGENT_FLEET_LOG";
/// The worker's concurrency.
const CONCURRENCY: &str = "AGENT_FLEET_CONCURRENCY";

/// The lease of every worker: short, so a dead worker's runs move on soon.
const TTL: Duration = Duration::from_secs(1);
/// Every test gives up after this long.
const BOUND: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------
// The workflows, and the log their bodies write in a child.
// ---------------------------------------------------------------------------------------

/// The log file, in a child; `None` in the test itself (its reference runs log nothing).
static LOG_FILE: OnceLock<File> = OnceLock::new();

/// Append `line` to the log with one write (`O_APPEND`: lines of processes never mix).
fn log_line(line: &str) {
    if let Some(mut file) = LOG_FILE.get() {
        file.write_all(line.as_bytes()).unwrap();
    }
}

/// A body of `state` starts, in the run of input `n`.
fn executed(ctx: &Context, state: &str) {
    let n: u64 = ctx.get_state("n").unwrap();
    log_line(&format!("{n} {state} {}\n", std::process::id()));
}

fn input(n: u64) -> Context {
    let ctx = Context::new();
    ctx.set_state("n", n);
    ctx
}

/// `slow` (takes `work`) then `after`.
fn slow(name: &str, work: Duration) -> Agent {
    let mut agent = Agent::new(name.to_owned());
    agent
        .add_state("slow", move |ctx: Context| async move {
            executed(&ctx, "slow");
            tokio::time::sleep(work).await;
            let n: u64 = ctx.get_state("n").unwrap();
            ctx.set_state("slow", n * 3);
            StateResult::next("after")
        })
        .targets(["after"]);
    agent.add_state("after", |ctx: Context| async move {
        executed(&ctx, "after");
        let n: u64 = ctx.get_state("n").unwrap();
        ctx.set_state("after", n + 1);
        StateResult::End
    });
    agent
}

const BRANCHES: u64 = 3;

/// `start` fans out to `BRANCHES` branches that join in `join`; `flaky` fails its first
/// attempt and is retried; `ask` waits for a person (the prompt names the run's `n`; the
/// answer is `yes n`); `finish` ends. Each state but `ask` takes `work`.
fn chaos(name: &str, work: Duration) -> Agent {
    let mut agent = Agent::new(name.to_owned()).input_from_terminal(false);
    agent.add_state("start", move |ctx: Context| async move {
        executed(&ctx, "start");
        tokio::time::sleep(work).await;
        let n: u64 = ctx.get_state("n").unwrap();
        ctx.set_state("start", n + 1);
        StateResult::parallel((0..BRANCHES).map(|b| format!("branch{b}")).collect::<Vec<_>>())
    });
    for b in 0..BRANCHES {
        let me = format!("branch{b}");
        agent.add_state(me.clone(), move |ctx: Context| {
            let me = me.clone();
            async move {
                executed(&ctx, &me);
                tokio::time::sleep(work).await;
                let n: u64 = ctx.get_state("n").unwrap();
                ctx.set_state(&me, n * 10 + b);
                StateResult::next("join")
            }
        });
    }
    agent.add_state("join", move |ctx: Context| async move {
        executed(&ctx, "join");
        tokio::time::sleep(work).await;
        let sum: u64 = (0..BRANCHES).map(|b| ctx.get_state::<u64>(&format!("branch{b}")).unwrap()).sum();
        ctx.set_state("sum", sum);
        StateResult::next("flaky")
    });
    agent
        .add_state("flaky", move |ctx: Context| async move {
            executed(&ctx, "flaky");
            tokio::time::sleep(work).await;
            let tries: u32 = ctx.get_state_or("tries", 0) + 1;
            ctx.set_state("tries", tries);
            if tries < 2 {
                Err(std::io::Error::other("the first attempt fails"))
            } else {
                Ok(StateResult::next("ask"))
            }
        })
        .retry_policy(RetryPolicy {
            max_retries: 3,
            initial_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(20),
            exponential_base: 1.0,
            jitter: false,
        });
    agent.add_state("ask", |ctx: Context| async move {
        executed(&ctx, "ask");
        let n: u64 = ctx.get_state("n").unwrap();
        let answer = ctx.human_in_the_loop(HumanInput::new(format!("Approve run {n}?"))).await?;
        ctx.set_state("answer", answer);
        Ok::<_, BoxError>(StateResult::next("finish"))
    });
    agent.add_state("finish", move |ctx: Context| async move {
        executed(&ctx, "finish");
        tokio::time::sleep(work).await;
        ctx.set_state("done", true);
        StateResult::End
    });
    agent
}

/// How many times each state of `chaos` runs in an uninterrupted run.
fn chaos_executions(state: &str) -> usize {
    if state == "flaky" {
        2
    } else {
        1
    }
}

/// Answer every pending request in `store` the way a person would (`yes n` for run `n`).
async fn answer_pending(store: &dyn CheckpointStore) {
    for record in store.inputs(None, true).await.unwrap() {
        let n = record.prompt.trim_start_matches("Approve run ").trim_end_matches('?');
        let at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
        store.answer_input(&record.run_id, &record.request_id, &format!("yes {n}"), false, at).await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// The child: a worker process.
// ---------------------------------------------------------------------------------------

/// A worker serving the workflow `AGENT_FLEET_FLOW` from the store `AGENT_FLEET_CHILD`
/// until SIGTERM; it logs `ready` before it serves and its report once it has drained.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_child() {
    let Ok(address) = std::env::var(CHILD) else { return };
    let name = std::env::var(AGENT).unwrap();
    let flow = std::env::var(FLOW).unwrap();
    let concurrency: usize = std::env::var(CONCURRENCY).unwrap().parse().unwrap();
    let log = OpenOptions::new().append(true).create(true).open(std::env::var(LOG).unwrap()).unwrap();
    LOG_FILE.set(log).unwrap();
    let (kind, ms) = flow.split_once(':').unwrap();
    let (kind, work) = (kind.to_owned(), Duration::from_millis(ms.parse().unwrap()));
    let define = move || if kind == "slow" { slow(&name, work) } else { chaos(&name, work) };
    match address.strip_prefix("sqlite:") {
        Some(path) => serve(SqliteStore::open(path).unwrap(), define, concurrency).await,
        None => {
            let url = address.strip_prefix("postgres:").unwrap();
            serve(PostgresStore::connect(url).await.unwrap(), define, concurrency).await;
        }
    }
}

async fn serve(store: impl CheckpointStore, define: impl FnOnce() -> Agent, concurrency: usize) {
    let pid = std::process::id();
    let worker = Worker::new(store)
        .serve(define)
        .concurrency(concurrency)
        .lease_ttl(TTL)
        .poll_interval(Duration::from_millis(50));
    log_line(&format!("ready {pid}\n"));
    let r = worker.run().await.unwrap();
    log_line(&format!("report {pid} {} {} {} {} {}\n", r.claimed, r.completed, r.failed, r.lost, r.handed_over));
}

// ---------------------------------------------------------------------------------------
// The test's side: worker processes, and what their log says.
// ---------------------------------------------------------------------------------------

/// Worker processes of one test, all serving one workflow from one store; killed (after a
/// SIGCONT, should one be stopped) when dropped, however the test ends.
struct Fleet {
    children: Vec<Child>,
    address: String,
    agent: String,
    flow: String,
    log: PathBuf,
    concurrency: usize,
}

impl Fleet {
    fn new(address: &str, agent: &str, flow: &str, log: &Path, concurrency: usize) -> Fleet {
        Fleet {
            children: Vec::new(),
            address: address.to_owned(),
            agent: agent.to_owned(),
            flow: flow.to_owned(),
            log: log.to_owned(),
            concurrency,
        }
    }

    /// Start another worker: its pid.
    fn spawn(&mut self) -> u32 {
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["worker_child", "--exact", "--nocapture", "--test-threads", "1"])
            .env(CHILD, &self.address)
            .env(AGENT, &self.agent)
            .env(FLOW, &self.flow)
            .env(LOG, &self.log)
            .env(CONCURRENCY, self.concurrency.to_string())
            .stdout(Stdio::null())
            .stderr(if std::env::var("AGENT_FLEET_DEBUG").is_ok() { Stdio::inherit() } else { Stdio::null() })
            .spawn()
            .unwrap();
        let pid = child.id();
        self.children.push(child);
        pid
    }

    fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// SIGKILL worker `pid` and reap it.
    fn kill(&mut self, pid: u32) {
        let at = self.children.iter().position(|c| c.id() == pid).unwrap();
        let mut child = self.children.swap_remove(at);
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM every worker and wait (bounded) for each to drain and exit: whether all
    /// exited with success.
    async fn drain_all(&mut self) -> bool {
        for child in &self.children {
            signal("TERM", child.id());
        }
        let mut ok = true;
        let give_up = Instant::now() + Duration::from_secs(30);
        for mut child in std::mem::take(&mut self.children) {
            let status = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break Some(status);
                }
                if Instant::now() > give_up {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            ok &= status.is_some_and(|s| s.success());
        }
        ok
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for child in &mut self.children {
            signal("CONT", child.id());
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Send SIGNAL to `pid` (with kill(1): no unsafe code, no dependency).
fn signal(signal: &str, pid: u32) {
    let status = Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]).status().unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

/// What the log says.
#[derive(Debug, Default)]
struct Log {
    /// Each body execution: the run's `n`, the state, the pid.
    executions: Vec<(u64, String, u32)>,
    /// Workers that started serving.
    ready: HashSet<u32>,
    /// Each drained worker's report: claimed, completed, failed, lost, handed over.
    reports: HashMap<u32, [u64; 5]>,
}

impl Log {
    fn read(path: &Path) -> Log {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut log = Log::default();
        for line in text.lines() {
            let words: Vec<&str> = line.split(' ').collect();
            match words[..] {
                ["ready", pid] => {
                    log.ready.insert(pid.parse().unwrap());
                }
                ["report", pid, ..] => {
                    let numbers: Vec<u64> = words[2..].iter().map(|w| w.parse().unwrap()).collect();
                    log.reports.insert(pid.parse().unwrap(), numbers.try_into().unwrap());
                }
                [n, state, pid] => log.executions.push((n.parse().unwrap(), state.to_owned(), pid.parse().unwrap())),
                _ => panic!("a torn log line: {line:?}"),
            }
        }
        log
    }

    /// Executions of `state` in run `n`, by pid.
    fn of(&self, n: u64, state: &str) -> Vec<u32> {
        self.executions.iter().filter(|(m, s, _)| *m == n && s == state).map(|(_, _, pid)| *pid).collect()
    }
}

/// Wait (real time, bounded) until `check` holds.
async fn until<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let give_up = Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(Instant::now() < give_up, "gave up waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn newest(store: &dyn CheckpointStore, run_id: &str) -> Option<Checkpoint> {
    agent_runtime::store::read_checkpoint(store, run_id).await.unwrap()
}

/// Run `n` is completed on record, each of its states completed exactly once, with the
/// context `expected`.
async fn completed_once(store: &dyn CheckpointStore, run_id: &str, n: u64, expected: &serde_json::Value) {
    let last = newest(store, run_id).await.unwrap();
    assert_eq!(last.agent_status, AgentStatus::Completed, "run {n}");
    for s in &last.states {
        assert_eq!(s.completed, 1, "run {n}: state {} completed {} times on record", s.name, s.completed);
    }
    assert_eq!(&last.read_context().unwrap().to_json().unwrap(), expected, "run {n}: the context differs");
}

/// The context of an uninterrupted in-process run of `agent` from input `n`.
async fn uninterrupted(agent: &Agent, n: u64) -> serde_json::Value {
    let result = agent.start(RunOptions::new().context(input(n))).unwrap().await.unwrap();
    assert_eq!(result.status(), AgentStatus::Completed);
    result.context().to_json().unwrap()
}

// ---------------------------------------------------------------------------------------
// The scenarios, each on one store, given as the parent's handle and the children's address.
// ---------------------------------------------------------------------------------------

/// Worker A (one process) takes N runs whose states take several leases; worker B starts
/// beside it. While A is healthy (renewing), B claims none of them: every run stays at
/// epoch 1, owned by A, and only A's pid runs bodies; then all complete.
async fn a_second_worker_never_takes_a_healthy_workers_runs(store: Store, address: String, tag: &str) {
    const N: u64 = 4;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let name = format!("fleet_healthy_{tag}");
    let client = slow(&name, Duration::ZERO).with_store(store.clone());
    let mut ids = Vec::new();
    for n in 0..N {
        ids.push(client.submit(SubmitOptions::new().context(input(n))).await.unwrap());
    }
    let mut fleet = Fleet::new(&address, &name, "slow:4000", &log, N as usize);
    let a = fleet.spawn();
    until("A took every run and started it", || async {
        Log::read(&log).executions.iter().filter(|(_, s, pid)| s == "slow" && *pid == a).count() == N as usize
    })
    .await;
    let mut owners = HashMap::new();
    for id in &ids {
        let row = store.get_run(id).await.unwrap().unwrap();
        assert_eq!((row.status, row.epoch), (AgentStatus::Running, 1));
        owners.insert(id.clone(), row.owner.unwrap());
    }
    let b = fleet.spawn();
    until("B serves", || async { Log::read(&log).ready.contains(&b) }).await;

    // A's states take 4 leases: B polls every 50 ms meanwhile and must find nothing.
    let mut watched = 0;
    loop {
        let mut done = 0;
        for id in &ids {
            let row = store.get_run(id).await.unwrap().unwrap();
            assert_eq!(row.epoch, 1, "run {id} was taken over from a healthy worker: {row:?}");
            if row.status == AgentStatus::Completed {
                done += 1;
            } else {
                assert_eq!(row.owner.as_ref(), Some(&owners[id]), "{row:?}");
            }
        }
        if done == ids.len() {
            break;
        }
        watched += 1;
        assert!(watched < 3_000, "the runs never completed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(fleet.drain_all().await, "both workers drained and exited cleanly");
    let log = Log::read(&log);
    assert_eq!(log.reports[&a][..2], [N, N], "A claimed and completed every run: {:?}", log.reports);
    assert_eq!(log.reports[&b][0], 0, "B claimed nothing: {:?}", log.reports);
    let reference = slow(&format!("{name}_ref"), Duration::ZERO);
    for (n, id) in ids.iter().enumerate() {
        let n = n as u64;
        for state in ["slow", "after"] {
            assert_eq!(log.of(n, state), [a], "run {n}: {state} ran once, in A");
        }
        completed_once(&*store, id, n, &uninterrupted(&reference, n).await).await;
    }
}

/// A worker takes a run and is stopped (SIGSTOP) in its slow state past its lease; a second
/// worker takes the run over (epoch 2) and completes it. Continued (SIGCONT), the zombie's
/// writes are refused: it stops the run (its report counts it lost) and nothing of the run
/// changes after the second worker's completion.
async fn a_zombie_is_fenced(store: Store, address: String, tag: &str) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let name = format!("fleet_zombie_{tag}");
    let client = slow(&name, Duration::ZERO).with_store(store.clone());
    let id = client.submit(SubmitOptions::new().context(input(7))).await.unwrap();
    let mut fleet = Fleet::new(&address, &name, "slow:1500", &log, 4);
    let zombie = fleet.spawn();
    until("the run is in `slow`, recorded", || async {
        Log::read(&log).of(7, "slow") == [zombie]
            && newest(&*store, &id).await.is_some_and(|c| c.running_states() == ["slow"])
    })
    .await;
    signal("STOP", zombie);
    let stopped = Instant::now();
    let heir = fleet.spawn();
    until("the heir completed the run", || async {
        store.get_run(&id).await.unwrap().unwrap().status == AgentStatus::Completed
    })
    .await;
    // Stopped three leases at least, then continued.
    tokio::time::sleep((3 * TTL).saturating_sub(stopped.elapsed())).await;
    let row = store.get_run(&id).await.unwrap().unwrap();
    assert_eq!((row.epoch, row.owner.as_deref()), (2, None), "taken over once, then finished: {row:?}");
    let snapshots = store.snapshots(&id, 10_000).await.unwrap();
    let journal = store.journal(&id, 0).await.unwrap();
    signal("CONT", zombie);
    // Time for the zombie to finish its state and try to write (it is not told to stop).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(fleet.drain_all().await, "both workers drained and exited cleanly");

    assert_eq!(store.get_run(&id).await.unwrap(), Some(row), "the zombie wrote nothing to the row");
    assert_eq!(store.snapshots(&id, 10_000).await.unwrap(), snapshots, "the zombie wrote no snapshot");
    assert_eq!(store.journal(&id, 0).await.unwrap(), journal, "the zombie wrote nothing to the journal");
    let log = Log::read(&log);
    let (z, h) = (log.reports[&zombie], log.reports[&heir]);
    assert_eq!((z[0], z[1], z[3]), (1, 0, 1), "the zombie claimed the run and lost it: {z:?}");
    assert_eq!((h[0], h[1]), (1, 1), "the heir claimed and completed it: {h:?}");
    assert_eq!(log.of(7, "slow"), [zombie, heir], "`slow` ran again only in the heir");
    assert_eq!(log.of(7, "after"), [heir], "`after` ran once, in the heir");
    let expected = uninterrupted(&slow(&format!("{name}_ref"), Duration::ZERO), 7).await;
    completed_once(&*store, &id, 7, &expected).await;
}

fn env_or(var: &str, default: u64) -> u64 {
    std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Four workers drain `AGENT_FLEET_CHAOS_RUNS` (200) runs of `chaos` while the test answers
/// their requests through the store and SIGKILLs a random worker `AGENT_FLEET_CHAOS_KILLS`
/// (20) times at random instants, starting another each time. Every run completes, each
/// state completed once on record, with the context of an uninterrupted in-process run;
/// every execution of a body beyond an uninterrupted run's is a killed process's.
async fn chaos_fleet(store: Store, address: String, tag: &str) {
    const WORKERS: usize = 4;
    let runs = env_or("AGENT_FLEET_CHAOS_RUNS", 200);
    let kills = env_or("AGENT_FLEET_CHAOS_KILLS", 20) as usize;
    let seed = env_or("AGENT_FLEET_SEED", fastrand::u64(..));
    eprintln!("chaos on {tag}: {runs} runs, {kills} kills, seed {seed} (AGENT_FLEET_SEED={seed} replays it)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let began = Instant::now();

    // The reference: the same inputs, uninterrupted, by a worker in this process.
    let reference = {
        let store = MemoryStore::new();
        let client = chaos("fleet_chaos_ref", Duration::ZERO).with_store(store.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let worker = Worker::new(store.clone()).serve(|| chaos("fleet_chaos_ref", Duration::ZERO)).concurrency(256);
        let serving = tokio::spawn(worker.run_until(async {
            let _ = stopped.await;
        }));
        let mut ids = Vec::new();
        for n in 0..runs {
            ids.push(client.submit(SubmitOptions::new().context(input(n))).await.unwrap());
        }
        let answering = tokio::spawn({
            let store = store.clone();
            async move {
                loop {
                    answer_pending(&store).await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
        let mut contexts = Vec::new();
        for id in &ids {
            let done = client.wait(id).await.unwrap();
            assert_eq!(done.agent_status, AgentStatus::Completed);
            contexts.push(done.read_context().unwrap().to_json().unwrap());
        }
        answering.abort();
        let _ = stop.send(());
        serving.await.unwrap().unwrap();
        contexts
    };
    eprintln!("chaos on {tag}: reference runs done after {:?}", began.elapsed());

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let name = format!("fleet_chaos_{tag}");
    let client = chaos(&name, Duration::ZERO).with_store(store.clone());
    let mut ids = Vec::new();
    for n in 0..runs {
        let options = SubmitOptions::new().context(input(n)).idempotency_key(format!("run-{n}"));
        ids.push(client.submit(options).await.unwrap());
    }
    let mut fleet = Fleet::new(&address, &name, "chaos:5", &log, 8);
    for _ in 0..WORKERS {
        fleet.spawn();
    }
    let drain_began = Instant::now();
    let mut killed = HashSet::new();
    let mut kills_while_busy = 0;
    let mut next_kill = Instant::now() + Duration::from_millis(rng.u64(20..250));
    let query = RunQuery { agent: Some(name.clone()), limit: Some(runs as usize + 10), ..RunQuery::default() };
    loop {
        answer_pending(&*store).await;
        let rows = store.list_runs(&query).await.unwrap();
        let completed = rows.iter().filter(|r| r.status == AgentStatus::Completed).count() as u64;
        if killed.len() < kills && Instant::now() >= next_kill {
            let pids = fleet.pids();
            let victim = pids[rng.usize(..pids.len())];
            // A random instant: mid-state, mid-commit or idle.
            for _ in 0..rng.usize(0..5_000) {
                std::thread::yield_now();
            }
            fleet.kill(victim);
            killed.insert(victim);
            if completed < runs {
                kills_while_busy += 1;
            }
            fleet.spawn();
            next_kill = Instant::now() + Duration::from_millis(rng.u64(20..250));
        }
        if killed.len() == kills && completed == runs {
            break;
        }
        let failed: Vec<_> =
            rows.iter().filter(|r| r.status.is_finished() && r.status != AgentStatus::Completed).collect();
        if !failed.is_empty() {
            let mut why = Vec::new();
            for r in &failed {
                let checkpoint = agent_runtime::store::read_checkpoint(&*store, &r.run_id).await;
                why.push(format!("{r:?}: {:?}", checkpoint.map(|c| c.and_then(|c| c.last_error))));
            }
            panic!("runs ended otherwise:\n{}", why.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained = drain_began.elapsed();
    assert!(fleet.drain_all().await, "the workers drained and exited cleanly");
    eprintln!(
        "chaos on {tag}: {runs} runs drained in {drained:?} with {} kills ({kills_while_busy} while runs were unfinished)",
        killed.len()
    );

    let log = Log::read(&log);
    let mut extra = 0;
    for (n, id) in ids.iter().enumerate() {
        let n = n as u64;
        completed_once(&*store, id, n, &reference[n as usize]).await;
        let mut states = vec!["start".to_owned(), "join".into(), "flaky".into(), "ask".into(), "finish".into()];
        states.extend((0..BRANCHES).map(|b| format!("branch{b}")));
        for state in &states {
            let by = log.of(n, state);
            let expected = chaos_executions(state);
            assert!(by.len() >= expected, "run {n}: {state} ran {} times, fewer than {expected}", by.len());
            let survivors = by.iter().filter(|pid| !killed.contains(pid)).count();
            assert!(
                survivors <= expected,
                "run {n}: {state} ran {survivors} times in processes never killed (pids {by:?}, killed {killed:?})"
            );
            extra += by.len() - expected;
        }
    }
    eprintln!(
        "chaos on {tag}: {extra} extra executions of bodies, all in killed processes; {:?} in all",
        began.elapsed()
    );
}

// ---------------------------------------------------------------------------------------
// The scenarios, per store.
// ---------------------------------------------------------------------------------------

/// Run `scenario` on a SQLite file, bounded, unless this process is a child.
async fn on_sqlite<F, Fut>(scenario: F)
where
    F: FnOnce(Store, String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.db");
    let store: Store = Arc::new(SqliteStore::open(&path).unwrap());
    let address = format!("sqlite:{}", path.display());
    tokio::time::timeout(BOUND, scenario(store, address)).await.expect("the scenario ends in time");
}

/// Run `scenario` on a PostgreSQL schema of its own (dropped afterwards, whatever happens),
/// bounded, unless this process is a child or no server is configured.
async fn on_postgres<F, Fut>(test: &str, scenario: F)
where
    F: FnOnce(Store, String) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let Some(url) = common::pg::url(test) else { return };
    let (schema, schema_url) = common::pg::own_schema(&url, "fleetproc");
    let outcome = tokio::spawn({
        let (url, schema) = (url.clone(), schema.clone());
        async move {
            let store: Store = Arc::new(PostgresStore::connect_with_schema(&url, &schema).await.unwrap());
            let address = format!("postgres:{schema_url}");
            tokio::time::timeout(BOUND, scenario(store, address)).await.expect("the scenario ends in time");
        }
    })
    .await;
    common::pg::drop_schema(&url, &schema).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

macro_rules! scenarios {
    ($($scenario:ident => $sqlite:ident, $postgres:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() {
            on_sqlite(|store, address| async move { $scenario(store, address, "sqlite").await }).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $postgres() {
            on_postgres(stringify!($postgres), |store, address| async move {
                $scenario(store, address, "pg").await
            })
            .await;
        }
    )*};
}

scenarios! {
    a_second_worker_never_takes_a_healthy_workers_runs =>
        a_second_worker_never_takes_a_healthy_workers_runs_on_sqlite,
        a_second_worker_never_takes_a_healthy_workers_runs_on_postgres;
    a_zombie_is_fenced => a_zombie_is_fenced_on_sqlite, a_zombie_is_fenced_on_postgres;
    chaos_fleet => chaos_on_sqlite, chaos_on_postgres;
}
