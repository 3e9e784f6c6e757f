//! Fleet throughput: 1,000 submitted runs of a ten-state durable workflow (`chain10`: one
//! context update a state) drained by 1, 2 and 4 worker processes on one PostgreSQL, each
//! worker `Worker::new(store).serve(chain10).concurrency(32)` (a pool of 4 connections).
//!
//! Baseline, measured in the same run with the same processes and the same database: a
//! hand-written job table drained by the same number of processes, each with 4 loops on a
//! connection of their own that claim one job at a time with `FOR UPDATE SKIP LOCKED` (owner,
//! lease, epoch) and then commit each of its ten transitions (the step and the context, as
//! JSON text, fenced by the epoch) in a statement of its own, as a careful hand-written
//! queue would.
//!
//! Each figure is one drain of every run, from the moment the ready workers are told to go
//! until the last run is recorded completed, in a schema of its own dropped afterwards:
//! runs a second and transitions (ten a run) a second. Targets: the fleet at 4 workers at
//! least the baseline's throughput, and at least 1,000 transitions a second on a 2-core
//! machine that also runs the database.
//!
//! Not criterion: each sample is several processes and seconds long. The workers are this
//! bench binary itself, run with `AGENT_BENCH_FLEET_CHILD` set.
//!
//! Reproduce: `AGENT_BENCH_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test cargo bench -p
//! agent-bench --bench fleet` (or `AGENT_TEST_POSTGRES_URL`; without either it says it is
//! skipped). `AGENT_BENCH_FLEET_RUNS` (1000) and `AGENT_BENCH_FLEET_ROUNDS` (1) change the
//! workload and how many times each figure is taken.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent::prelude::*;
use agent::store::PostgresStore;
use agent::{SubmitOptions, Worker};

#[path = "common/chain10.rs"]
mod chain10_bench;
use chain10_bench::chain10;

const CHILD: &str = "AGENT_BENCH_FLEET_CHILD";
const STATES: u64 = 10;
/// Runs at once in a fleet worker; loops (connections) in a baseline worker.
const FLEET_CONCURRENCY: usize = 32;
const BASELINE_LOOPS: usize = 4;
const WORKERS: [usize; 3] = [1, 2, 4];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn main() {
    if let Ok(mode) = std::env::var(CHILD) {
        runtime().block_on(child(&mode, &std::env::var("AGENT_BENCH_FLEET_URL").unwrap()));
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        for w in WORKERS {
            println!("fleet/baseline/{w}: bench\nfleet/agent/{w}: bench");
        }
        return;
    }
    let url = ["AGENT_BENCH_POSTGRES_URL", "AGENT_TEST_POSTGRES_URL"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()));
    let Some(url) = url else {
        eprintln!("fleet: skipped: set AGENT_BENCH_POSTGRES_URL (e.g. postgres://postgres@127.0.0.1:5432/test)");
        return;
    };
    let runs: u64 = env_or("AGENT_BENCH_FLEET_RUNS", 1_000);
    let rounds: u64 = env_or("AGENT_BENCH_FLEET_ROUNDS", 1);
    let rt = runtime();
    let mut rows = Vec::new();
    for round in 0..rounds {
        for workers in WORKERS {
            for kind in [Kind::Baseline, Kind::Fleet] {
                let took = rt.block_on(drain(&url, kind, workers, runs));
                let rps = runs as f64 / took.as_secs_f64();
                println!(
                    "fleet/{}/{workers} (round {round}): {runs} runs in {:.2} s: {rps:.0} runs/s, {:.0} transitions/s",
                    kind.name(),
                    took.as_secs_f64(),
                    rps * STATES as f64
                );
                rows.push((kind, workers, rps));
            }
        }
    }
    println!("\n| workers | baseline runs/s | baseline transitions/s | fleet runs/s | fleet transitions/s | fleet / baseline |");
    println!("|---|---|---|---|---|---|");
    for workers in WORKERS {
        let mean = |k: Kind| {
            let v: Vec<f64> = rows.iter().filter(|r| r.0 == k && r.1 == workers).map(|r| r.2).collect();
            v.iter().sum::<f64>() / v.len() as f64
        };
        let (b, f) = (mean(Kind::Baseline), mean(Kind::Fleet));
        let t = STATES as f64;
        println!("| {workers} | {b:.0} | {:.0} | {f:.0} | {:.0} | {:.2}x |", b * t, f * t, f / b);
    }
}

fn env_or(var: &str, default: u64) -> u64 {
    std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Baseline,
    Fleet,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Baseline => "baseline",
            Kind::Fleet => "agent",
        }
    }
}

/// The schema `schema` as every connection's search path.
fn schema_url(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-c%20search_path%3D{schema}")
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// Queue `runs` runs (or jobs), start `workers` processes of `kind`, tell them to go once
/// all are ready, and time until every run is recorded completed.
async fn drain(url: &str, kind: Kind, workers: usize, runs: u64) -> Duration {
    let schema = format!("agent_bench_fleet_{:012x}", fastrand::u64(..) >> 16);
    let admin = connect(url).await;
    let scoped = schema_url(url, &schema);
    let done_query = match kind {
        Kind::Fleet => {
            // Made by the store's first connection.
            let store = PostgresStore::connect_with_schema(url, &schema).await.unwrap();
            let client = chain10::agent().with_store(store);
            for _ in 0..runs {
                let ctx = Context::new();
                ctx.set_state("n", 0u64);
                client.submit(SubmitOptions::new().context(ctx)).await.unwrap();
            }
            format!("SELECT count(*) FROM agent_runs WHERE status = '{}'", AgentStatus::Completed.as_str())
        }
        Kind::Baseline => {
            admin.batch_execute(&format!("CREATE SCHEMA \"{schema}\"")).await.unwrap();
            let db = connect(&scoped).await;
            db.batch_execute(
                "CREATE TABLE jobs (id BIGINT PRIMARY KEY, step INT NOT NULL, ctx TEXT NOT NULL,
                     owner TEXT, lease_until TIMESTAMPTZ, epoch BIGINT NOT NULL DEFAULT 0);
                 CREATE INDEX jobs_open ON jobs (id) WHERE step < 10;",
            )
            .await
            .unwrap();
            let insert = db.prepare("INSERT INTO jobs (id, step, ctx) VALUES ($1, 0, $2)").await.unwrap();
            for id in 0..runs as i64 {
                db.execute(&insert, &[&id, &r#"{"n":0}"#]).await.unwrap();
            }
            "SELECT count(*) FROM jobs WHERE step = 10".to_owned()
        }
    };
    let db = connect(&scoped).await;
    let mut children: Vec<Child> = (0..workers)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .env(CHILD, kind.name())
                .env("AGENT_BENCH_FLEET_URL", &scoped)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in &mut children {
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "a worker failed to start");
    }
    let stats = db_stats(&admin).await;
    let busy = machine_busy_ticks();
    let began = Instant::now();
    for child in &mut children {
        child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    }
    let done = db.prepare(&done_query).await.unwrap();
    loop {
        let n: i64 = db.query_one(&done, &[]).await.unwrap().get(0);
        if n as u64 >= runs {
            break;
        }
        assert!(began.elapsed() < Duration::from_secs(600), "the drain took over 10 minutes");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = began.elapsed();
    let busy = machine_busy_ticks() - busy;
    let workers_cpu: u64 = children.iter().map(|c| process_ticks(c.id())).sum();
    for child in &mut children {
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    }
    for child in &mut children {
        let _ = child.wait();
    }
    // Backends report their counters when their connections close.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let stats: Vec<i64> = db_stats(&admin).await.iter().zip(&stats).map(|(a, b)| a - b).collect();
    let bytes: i64 = match kind {
        Kind::Fleet => {
            let q = format!("SELECT coalesce(avg(octet_length(data)), 0)::BIGINT FROM \"{schema}\".agent_snapshots");
            admin.query_one(&q, &[]).await.unwrap().get(0)
        }
        Kind::Baseline => 0,
    };
    let transitions = (runs * STATES) as f64;
    eprintln!(
        "fleet/{}/{workers}: per transition: {:.2} commits, {:.2} rows inserted, {:.2} rows updated; \
         CPU {:.0} µs in the workers, {:.0} µs machine-wide (the database and anything else running included){}",
        kind.name(),
        stats[0] as f64 / transitions,
        stats[1] as f64 / transitions,
        stats[2] as f64 / transitions,
        workers_cpu as f64 * 10_000.0 / transitions,
        busy as f64 * 10_000.0 / transitions,
        if bytes > 0 { format!("; snapshots of {bytes} bytes on average") } else { String::new() }
    );
    admin.batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE")).await.unwrap();
    took
}

/// The database's commits, rows inserted and rows updated so far.
async fn db_stats(admin: &tokio_postgres::Client) -> [i64; 3] {
    let row = admin
        .query_one(
            "SELECT xact_commit, tup_inserted, tup_updated FROM pg_stat_database WHERE datname = current_database()",
            &[],
        )
        .await
        .unwrap();
    [row.get(0), row.get(1), row.get(2)]
}

/// CPU time of the whole machine so far (user, nice, system, irq, softirq), in clock ticks
/// (1/100 s on Linux); 0 where `/proc` is not there.
fn machine_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu = stat.lines().next().unwrap_or_default();
    cpu.split_whitespace()
        .skip(1)
        .take(7)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .sum()
}

/// CPU time (user and system) of process `pid` so far, in clock ticks; 0 if unknown.
fn process_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command's name, which ends with the last ')'.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    fields.get(11..13).map_or(0, |f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
}

/// A worker process: ready, then (once told to go on stdin) drain until SIGTERM.
async fn child(mode: &str, url: &str) {
    let go = || {
        println!("ready");
        std::io::stdout().flush().unwrap();
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).unwrap();
    };
    if mode == "agent" {
        let store = PostgresStore::connect(url).await.unwrap();
        let worker = Worker::new(store)
            .serve(chain10::agent)
            .concurrency(FLEET_CONCURRENCY)
            .poll_interval(Duration::from_millis(50));
        tokio::task::block_in_place(go);
        worker.run().await.unwrap();
        return;
    }
    let me = format!("baseline-{}", std::process::id());
    let mut clients = Vec::new();
    for _ in 0..BASELINE_LOOPS {
        clients.push(connect(url).await);
    }
    tokio::task::block_in_place(go);
    let loops: Vec<_> = clients.into_iter().map(|db| tokio::spawn(baseline_loop(db, me.clone()))).collect();
    for l in loops {
        l.await.unwrap();
    }
}

/// Claim a job (`SKIP LOCKED`), run its remaining steps committing each, and again; idle
/// when none is left (the bench stops the process).
async fn baseline_loop(db: tokio_postgres::Client, me: String) {
    let claim = db
        .prepare(
            "UPDATE jobs SET owner = $1, lease_until = now() + interval '15 seconds', epoch = epoch + 1
             WHERE id = (SELECT id FROM jobs WHERE step < 10 AND (owner IS NULL OR lease_until < now())
                         ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
             RETURNING id, step, ctx, epoch",
        )
        .await
        .unwrap();
    let step = db
        .prepare(
            "UPDATE jobs SET step = $2, ctx = $3,
                 owner = CASE WHEN $2 = 10 THEN NULL ELSE owner END,
                 lease_until = CASE WHEN $2 = 10 THEN NULL ELSE lease_until END
             WHERE id = $1 AND epoch = $4",
        )
        .await
        .unwrap();
    loop {
        let Some(job) = db.query_opt(&claim, &[&me]).await.unwrap() else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (id, from, epoch): (i64, i32, i64) = (job.get(0), job.get(1), job.get(3));
        let mut ctx: serde_json::Value = serde_json::from_str(job.get(2)).unwrap();
        for s in from..STATES as i32 {
            // The state's work: what `chain10`'s states do.
            ctx["n"] = (ctx["n"].as_u64().unwrap() + 1).into();
            let text = ctx.to_string();
            let written = db.execute(&step, &[&id, &(s + 1), &text, &epoch]).await.unwrap();
            assert_eq!(written, 1, "job {id} was taken over");
        }
    }
}
