//! API.md "Monitoring and control": `agent.metrics()` with per-state timings, opt-in
//! (`record_timings`), on for durable runs, and carried by checkpoints.

use std::time::Duration;

use agent_core::{Context, StateResult};
use agent_runtime::{Agent, MemoryStore};

/// `work` runs three times, sleeping 10, 20 and 30 ms; then `done`.
fn sleeper() -> Agent {
    let mut agent = Agent::new("sleeper");
    agent.add_state("work", |ctx: Context| async move {
        let n: u64 = ctx.get_state_or("n", 0) + 1;
        ctx.set_state("n", n);
        tokio::time::sleep(Duration::from_millis(10 * n)).await;
        if n < 3 {
            StateResult::next("work")
        } else {
            StateResult::next("done")
        }
    });
    agent.add_state("done", |_ctx: Context| async { StateResult::End });
    agent
}

#[tokio::test(start_paused = true)]
async fn timings_are_off_by_default() {
    let agent = sleeper();
    let metrics = agent.run().await.unwrap().metrics();
    assert!(metrics.states.iter().all(|s| s.timing.is_none()));
    let checkpoint = agent.create_checkpoint();
    assert!(checkpoint.states.iter().all(|s| s.started_ms.is_none() && s.finished_ms.is_none()));
}

#[tokio::test(start_paused = true)]
async fn timings_measure_attempts_under_paused_time() {
    let agent = sleeper().record_timings(true);
    let before = agent_ms();
    let metrics = agent.run().await.unwrap().metrics();
    let work = metrics.states.iter().find(|s| s.name == "work").unwrap().timing.clone().unwrap();
    assert_eq!(work.count, 3);
    assert_eq!(work.max, Duration::from_millis(30));
    assert_eq!(work.sum, Duration::from_millis(60));
    assert_eq!(work.mean, Duration::from_millis(20));
    // p50 is the bucket of 20 ms: within its 1/32 width.
    let p50 = work.p50.as_secs_f64() * 1e3;
    assert!((20.0..=20.0 * (1.0 + 1.0 / 32.0)).contains(&p50), "p50 = {p50} ms");
    assert_eq!(work.p99, Duration::from_millis(30));
    let done = metrics.states.iter().find(|s| s.name == "done").unwrap().timing.clone().unwrap();
    assert_eq!((done.count, done.max, done.p50), (1, Duration::ZERO, Duration::ZERO));
    let (started, finished) = (work.first_started_ms.unwrap(), work.last_finished_ms.unwrap());
    assert!(started >= before && finished >= started);
}

#[tokio::test(start_paused = true)]
async fn retried_and_guarded_states_are_timed_per_attempt() {
    use agent_core::RetryPolicy;
    let mut agent = Agent::new("retry").record_timings(true);
    agent
        .add_state("flaky", |ctx: Context| async move {
            let n: u64 = ctx.get_state_or("n", 0) + 1;
            ctx.set_state("n", n);
            tokio::time::sleep(Duration::from_millis(5)).await;
            if n < 3 {
                Err("not yet")
            } else {
                Ok(StateResult::End)
            }
        })
        .retry_policy(RetryPolicy::new().max_retries(3).initial_delay(Duration::from_secs(1)).jitter(false));
    let metrics = agent.run().await.unwrap().metrics();
    let flaky = &metrics.states[0];
    assert_eq!(flaky.retries, 2);
    let timing = flaky.timing.clone().unwrap();
    // Three attempts of 5 ms each; the retry delays are not attempts.
    assert_eq!((timing.count, timing.sum, timing.max), (3, Duration::from_millis(15), Duration::from_millis(5)));
}

#[tokio::test(start_paused = true)]
async fn checkpoints_carry_and_restore_state_times() {
    let agent = sleeper().record_timings(true);
    agent.run().await.unwrap();
    let checkpoint = agent.create_checkpoint();
    let work = checkpoint.state("work").unwrap();
    let (started, finished) = (work.started_ms.unwrap(), work.finished_ms.unwrap());
    assert!(finished >= started);
    let json = checkpoint.to_json().unwrap();
    let restored = agent_core::Checkpoint::from_json(&json).unwrap();
    assert_eq!(restored.state("work").unwrap().started_ms, Some(started));

    // A run restored from it keeps the times of the states it does not run again.
    let again = sleeper().record_timings(true);
    again.restore_from_checkpoint(restored).unwrap();
    let result = again.run().await.unwrap();
    let timing = result.metrics().states[0].timing.clone().unwrap();
    assert_eq!(timing.count, 0, "nothing ran again");
    assert_eq!((timing.first_started_ms, timing.last_finished_ms), (Some(started), Some(finished)));
}

#[tokio::test(start_paused = true)]
async fn durable_runs_record_timings_unless_turned_off() {
    let agent = sleeper().with_store(MemoryStore::new());
    let metrics = agent.run().await.unwrap().metrics();
    assert_eq!(metrics.states[0].timing.as_ref().map(|t| t.count), Some(3));
    assert!(agent.create_checkpoint().state("work").unwrap().started_ms.is_some());

    let agent = sleeper().with_store(MemoryStore::new()).record_timings(false);
    assert!(agent.run().await.unwrap().metrics().states[0].timing.is_none());
}

#[tokio::test(start_paused = true)]
async fn dependency_waits_are_timed() {
    use agent_core::DependencyType;
    let mut agent = Agent::new("deps").record_timings(true);
    agent.add_state("start", |_ctx: Context| async { StateResult::parallel(["slow", "after"]) });
    agent.add_state("slow", |_ctx: Context| async {
        tokio::time::sleep(Duration::from_millis(40)).await;
        StateResult::End
    });
    agent.add_state("after", |_ctx: Context| async { StateResult::End }).dependency("slow", DependencyType::Required);
    let metrics = agent.run().await.unwrap().metrics();
    let after = metrics.states.iter().find(|s| s.name == "after").unwrap().timing.clone().unwrap();
    assert_eq!(after.dependency_wait, Duration::from_millis(40));
}

fn agent_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// A sample: its name, its labels in order, its value.
#[cfg(feature = "prometheus")]
type Sample = (String, Vec<(String, String)>, f64);

/// Checks `text` line by line against the Prometheus text exposition format: `# HELP` and
/// `# TYPE` heads, then samples `name{label="value",...} number` of that family.
#[cfg(feature = "prometheus")]
fn check_exposition(text: &str) -> Vec<Sample> {
    fn is_name(s: &str) -> bool {
        let mut chars = s.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }
    let mut family: Option<(String, String)> = None;
    let mut samples = Vec::new();
    assert!(text.ends_with('\n'));
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(is_name(name) && !help.is_empty(), "{line}");
            family = None;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(is_name(name), "{line}");
            assert!(["counter", "gauge", "summary", "histogram", "untyped"].contains(&kind), "{line}");
            family = Some((name.to_owned(), kind.to_owned()));
            continue;
        }
        let (name, rest) = line.split_once('{').expect("a sample has labels here");
        let (fam, kind) = family.as_ref().expect("samples follow their TYPE line");
        let suffixes: &[&str] = if kind == "summary" { &["", "_sum", "_count"] } else { &[""] };
        assert!(suffixes.iter().any(|s| name == format!("{fam}{s}")), "{name} outside its family {fam}");
        let (labels, value) = rest.rsplit_once("} ").expect("labels then value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line}"));
        let mut parsed = Vec::new();
        let mut rest = labels;
        while !rest.is_empty() {
            let (key, after) = rest.split_once("=\"").expect("label=\"value\"");
            assert!(is_name(key), "{line}");
            // The value runs to the first unescaped quote.
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next().expect("closing quote") {
                    (_, '\\') => match chars.next().expect("escape").1 {
                        'n' => value.push('\n'),
                        c @ ('\\' | '"') => value.push(c),
                        c => panic!("bad escape \\{c} in {line}"),
                    },
                    (i, '"') => break i,
                    (_, c) => value.push(c),
                }
            };
            parsed.push((key.to_owned(), value));
            rest = after[end + 1..].strip_prefix(',').unwrap_or(&after[end + 1..]);
        }
        samples.push((name.to_owned(), parsed, value));
    }
    samples
}

#[cfg(feature = "prometheus")]
#[tokio::test(start_paused = true)]
async fn prometheus_text_parses_as_the_exposition_format() {
    let agent = sleeper().record_timings(true);
    let text = agent.run().await.unwrap().metrics().to_prometheus("a \"quoted\\\" agent\n");
    let samples = check_exposition(&text);
    let find = |name: &str, state: Option<&str>, quantile: Option<&str>| {
        samples
            .iter()
            .find(|(n, labels, _)| {
                let get = |k: &str| labels.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
                n == name && get("state") == state && get("quantile") == quantile
            })
            .map(|s| s.2)
    };
    assert!(samples.iter().all(|(_, labels, _)| labels[0] == ("agent".into(), "a \"quoted\\\" agent\n".into())));
    assert_eq!(find("agent_states_completed_total", None, None), Some(4.0));
    assert_eq!(find("agent_state_completed_total", Some("work"), None), Some(3.0));
    assert_eq!(find("agent_state_duration_seconds", Some("work"), Some("0.99")), Some(0.03));
    assert_eq!(find("agent_state_duration_seconds_sum", Some("work"), None), Some(0.06));
    assert_eq!(find("agent_state_duration_seconds_count", Some("work"), None), Some(3.0));
    let p50 = find("agent_state_duration_seconds", Some("work"), Some("0.5")).unwrap();
    assert!((0.02..=0.021).contains(&p50), "{p50}");

    // Without timings there is no summary.
    let text = sleeper().run().await.unwrap().metrics().to_prometheus("plain");
    check_exposition(&text);
    assert!(!text.contains("agent_state_duration_seconds"));
}
