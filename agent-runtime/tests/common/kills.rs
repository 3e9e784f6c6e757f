//! Real processes killed with SIGKILL at random instants: the loop the process-kill tests
//! share (a test binary re-run as the worker process, a printed seed that replays the
//! instants, a log of executions by process id).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The seed from `var` if set (to replay a failure), else a new one; printed either way.
pub fn seed(var: &str, what: &str) -> u64 {
    let seed = std::env::var(var).ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| fastrand::u64(..));
    eprintln!("{what}: seed {seed} ({var}={seed} replays it)");
    seed
}

/// A command that runs this test binary's `test` alone, with `env` set, its output
/// discarded.
pub fn worker(test: &str, env: &[(&str, &std::path::Path)]) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args([test, "--exact", "--nocapture", "--test-threads", "1"]);
    for (k, v) in env {
        command.env(k, v);
    }
    command.stdout(Stdio::null()).stderr(Stdio::null());
    command
}

/// Start processes with `spawn` and SIGKILL each once `progress` has moved a random number
/// of steps (below `step`) past where it was, plus a random delay, until `kills` were
/// killed (or one finished first); then run one last process, which must succeed within a
/// minute. All within `patience`. The ids of the killed processes.
pub async fn kill_then_finish<P, F>(
    seed: u64,
    kills: usize,
    step: usize,
    patience: Duration,
    mut spawn: impl FnMut() -> Child,
    progress: P,
) -> HashSet<u32>
where
    P: Fn() -> F,
    F: Future<Output = usize>,
{
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut killed = HashSet::new();
    let give_up = Instant::now() + patience;
    while killed.len() < kills {
        assert!(Instant::now() < give_up, "{kills} kills took too long (seed {seed})");
        let wanted = progress().await + rng.usize(0..step);
        let mut child = spawn();
        while progress().await < wanted && child.try_wait().unwrap().is_none() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        for _ in 0..rng.usize(0..5_000) {
            std::thread::yield_now();
        }
        let _ = child.kill();
        if child.wait().unwrap().success() {
            break; // it finished first: the rest is checked as it is
        }
        killed.insert(child.id());
    }
    let mut last = spawn();
    let waited = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Some(status) = last.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let Ok(status) = waited else {
        let _ = last.kill();
        let _ = last.wait();
        panic!("the last process did not end in time (seed {seed})");
    };
    assert!(status.success(), "the last process failed (seed {seed})");
    killed
}

/// Append `what` and this process's id, as one line, to the log at `$var`, if it is set.
/// One `write` call: the file is opened to append, so lines from concurrent branches, and
/// from a process killed mid-way, never mix (`writeln!` writes a line in pieces).
pub fn log_execution(var: &str, what: &str) {
    use std::io::Write;
    let Ok(path) = std::env::var(var) else { return };
    let line = format!("{what} {}\n", std::process::id());
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    f.write_all(line.as_bytes()).unwrap();
}

/// Lines `<what> <pid>` of an execution log, by `what`; each `what` ran at most once in
/// processes never killed. How many distinct `what`s there were.
pub fn ran_once_outside(log: &str, killed: &HashSet<u32>, seed: u64) -> usize {
    let mut by_what: HashMap<&str, Vec<u32>> = HashMap::new();
    for line in log.lines() {
        let (what, pid) = line.rsplit_once(' ').unwrap();
        by_what.entry(what).or_default().push(pid.parse().unwrap());
    }
    for (what, pids) in &by_what {
        let survivors = pids.iter().filter(|p| !killed.contains(p)).count();
        assert!(survivors <= 1, "{what} ran {survivors} times in processes never killed (seed {seed})");
    }
    by_what.len()
}

/// The worker process's work: go on with the unfinished run of `agent` in `store` that
/// `query` finds first, or start one if there is none (a finished one is left alone).
pub async fn go_on(
    agent: &agent_runtime::Agent,
    store: &dyn agent_runtime::store::CheckpointStore,
    query: &agent_runtime::store::RunQuery,
) {
    match store.list_runs(query).await.unwrap().first() {
        None => {
            agent.run().await.unwrap();
        }
        Some(run) if !run.status.is_finished() => {
            super::recover_once_free(agent, &run.run_id, Duration::from_secs(30)).await.unwrap();
        }
        Some(_) => {}
    }
}

/// Child processes, killed (and reaped) when dropped, however the test ends.
pub struct Children(pub Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
