//! The flagship: a durable document pipeline doing real work on the texts that ship in
//! `examples/data/documents/`.
//!
//! ```text
//! load_documents ──┬─> analyse_bees ──> tag_bees ──┐
//!                  ├─> analyse_bread ─> tag_bread ─┤   (one branch per document,
//!                  └─> ...                  ...    ┘    at most DOCUMENTS_CPU at once)
//!                                                  └─> collect (join) ─> review ─> write_report
//! ```
//!
//! - `load_documents` reads every `*.txt` file and fans out one branch per document;
//! - `analyse_<doc>` (1 CPU from a pool of `DOCUMENTS_CPU`, on the blocking pool) counts
//!   words, sentences and distinct words, finds the top terms, the reading time and a
//!   two-sentence extractive summary;
//! - `tag_<doc>` asks a (simulated, deterministically flaky) tagging service for a topic:
//!   every third document fails its first attempt and is retried;
//! - `collect` joins every branch; `review` asks a person whether to publish, taking
//!   `approve` when no one answers within `DOCUMENTS_REVIEW_TIMEOUT` seconds (2 by default);
//! - `write_report` prints the report and writes it to `DOCUMENTS_REPORT`
//!   (`documents-report.md` by default).
//!
//! The run is durable (`documents.db` in the current directory; `--store` picks another
//! file or a `postgres://` URL) and the binary's command line is [`agent::cli`]:
//!
//! ```text
//! cargo run --example documents                 # resume the unfinished run, or start one
//! cargo run --example documents -- list         # runs in the store
//! cargo run --example documents -- show RUN     # a run's timeline and its requests for input
//! cargo run --example documents -- answer RUN input-1 reject
//! cargo run --example documents -- graph        # Mermaid; `--format dot` for Graphviz
//! ```
//!
//! Ctrl-C pauses the run (running states finish; it is kept in the store) and running the
//! command again resumes it: documents already analysed are not analysed again.
//! `DOCUMENTS_DIR` points at another folder of texts, `DOCUMENTS_PACE_MS` (150 by default)
//! is the tagging service's latency per document.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use agent::prelude::*;

/// Where the pipeline reads and writes, and how patient it is.
#[derive(Clone, Debug)]
struct Config {
    /// The folder of `*.txt` documents.
    dir: PathBuf,
    /// Where the report is written.
    report: PathBuf,
    /// How long the review waits for a person before approving by default.
    review_timeout: Duration,
    /// CPUs of the pool the analyses share (one each).
    cpu: f64,
    /// Latency of the simulated tagging service, per document.
    pace: Duration,
}

impl Config {
    fn from_env() -> Config {
        let var = |name: &str| std::env::var(name).ok();
        let secs = |name: &str, default: f64| var(name).and_then(|v| v.parse::<f64>().ok()).unwrap_or(default);
        Config {
            dir: var("DOCUMENTS_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/documents")),
            report: var("DOCUMENTS_REPORT").map_or_else(|| PathBuf::from("documents-report.md"), PathBuf::from),
            review_timeout: Duration::from_secs_f64(secs("DOCUMENTS_REVIEW_TIMEOUT", 2.0).max(0.0)),
            cpu: secs("DOCUMENTS_CPU", 2.0).max(1.0),
            pace: Duration::from_millis(secs("DOCUMENTS_PACE_MS", 150.0).max(0.0) as u64),
        }
    }
}

/// What `analyse_<doc>` computes for one document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Analysis {
    title: String,
    words: usize,
    distinct_words: usize,
    sentences: usize,
    /// At 200 words a minute, rounded up.
    reading_seconds: u64,
    /// The five most frequent words that are not stop words (ties: alphabetical).
    top_terms: Vec<(String, usize)>,
    /// The two sentences whose words are most frequent in the document, in text order.
    summary: Vec<String>,
}

const STOP_WORDS: &[&str] = &[
    "the", "and", "a", "an", "of", "to", "in", "is", "it", "its", "on", "at", "for", "with", "by", "as", "or", "be",
    "are", "was", "were", "that", "this", "these", "those", "so", "but", "not", "from", "into", "their", "they",
    "them", "one", "can", "each", "every", "when", "than", "more", "before", "after", "until", "while", "what",
    "which", "who", "we", "us", "our", "he", "his", "she", "her", "you", "your", "if", "no", "too", "has", "had",
    "have", "will", "would", "must", "only", "also", "again", "all", "such", "out", "onto", "over", "under", "about",
    "let", "how", "there", "then", "some", "many", "much", "own", "may", "two", "other", "others", "where", "does",
];

/// Lower-case words: runs of letters (an apostrophe inside a word is dropped).
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphabetic() && c != '\'')
        .map(|w| w.trim_matches('\'').replace('\'', "").to_lowercase())
        .filter(|w| !w.is_empty())
        .collect()
}

fn is_term(word: &str) -> bool {
    word.len() >= 3 && !STOP_WORDS.contains(&word)
}

/// Sentences of a text: split after `.`, `!` or `?`, trimmed, empty ones dropped.
fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        current.push(if c == '\n' { ' ' } else { c });
        if matches!(c, '.' | '!' | '?') {
            let s = current.trim();
            if !s.is_empty() {
                out.push(s.to_owned());
            }
            current.clear();
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_owned());
    }
    out
}

/// Analyse one document: its first non-empty line is the title, the rest its body.
fn analyse(text: &str) -> Analysis {
    let mut lines = text.lines().skip_while(|l| l.trim().is_empty());
    let title = lines.next().unwrap_or("").trim().to_owned();
    let body: Vec<&str> = lines.collect();
    let body = body.join("\n");
    let all = words(&body);
    let mut freq: HashMap<&str, usize> = HashMap::new();
    for w in all.iter().filter(|w| is_term(w)) {
        *freq.entry(w.as_str()).or_default() += 1;
    }
    let mut top: Vec<(String, usize)> = freq.iter().map(|(w, n)| ((*w).to_owned(), *n)).collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top.truncate(5);
    let sentences = sentences(&body);
    let mut scored: Vec<(usize, f64)> = sentences
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let ws = words(s);
            let score: usize =
                ws.iter().filter(|w| is_term(w)).map(|w| freq.get(w.as_str()).copied().unwrap_or(0)).sum();
            (i, score as f64 / (ws.len().max(1) as f64).sqrt())
        })
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut chosen: Vec<usize> = scored.iter().take(2).map(|(i, _)| *i).collect();
    chosen.sort_unstable();
    let distinct: std::collections::HashSet<&String> = all.iter().collect();
    Analysis {
        title,
        words: all.len(),
        distinct_words: distinct.len(),
        sentences: sentences.len(),
        reading_seconds: (all.len() as u64 * 60).div_ceil(200),
        top_terms: top,
        summary: chosen.into_iter().map(|i| sentences[i].clone()).collect(),
    }
}

/// The topic the tagging service gives: the topic whose keywords occur most among the
/// document's top terms and title (ties: the first listed), `general` when none does.
fn topic(analysis: &Analysis) -> &'static str {
    const TOPICS: &[(&str, &[&str])] = &[
        ("nature", &["river", "bees", "bee", "honey", "volcano", "magma", "lava", "flowers", "colony", "water"]),
        ("science", &["comet", "telescope", "lens", "lenses", "tail", "sun", "gears", "clock", "pendulum"]),
        ("home", &["bread", "dough", "loaf", "garden", "soil", "plant", "bicycle", "chain", "vegetables"]),
        ("community", &["village", "library", "market", "books", "square", "stalls", "keeper", "lighthouse"]),
    ];
    let title = words(&analysis.title);
    let candidates: Vec<&str> =
        analysis.top_terms.iter().map(|(w, _)| w.as_str()).chain(title.iter().map(String::as_str)).collect();
    let mut best = ("general", 0);
    for (name, keys) in TOPICS {
        let hits = candidates.iter().filter(|w| keys.contains(w)).count();
        if hits > best.1 {
            best = (name, hits);
        }
    }
    best.0
}

/// The documents of `dir`: `(id, path)` for every `*.txt` file, sorted by name; the id is
/// the file's stem with characters other than letters, digits and `_` replaced by `_`.
fn documents(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut docs = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "txt") {
            let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let id: String =
                stem.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
            docs.push((id, path));
        }
    }
    docs.sort();
    Ok(docs)
}

/// The report, in Markdown.
fn report(docs: &[(String, Analysis, String)], verdict: &str) -> String {
    let words: usize = docs.iter().map(|(_, a, _)| a.words).sum();
    let reading: u64 = docs.iter().map(|(_, a, _)| a.reading_seconds).sum();
    let mut out = format!(
        "# Document report\n\n{} documents, {words} words, {}m{:02}s of reading. Review: {verdict}.\n\n",
        docs.len(),
        reading / 60,
        reading % 60
    );
    out.push_str(
        "| document | title | words | sentences | reading | topic | top terms |\n|---|---|---|---|---|---|---|\n",
    );
    for (id, a, tag) in docs {
        let terms: Vec<String> = a.top_terms.iter().map(|(w, n)| format!("{w} ({n})")).collect();
        out.push_str(&format!(
            "| {id} | {} | {} | {} | {}s | {tag} | {} |\n",
            a.title,
            a.words,
            a.sentences,
            a.reading_seconds,
            terms.join(", ")
        ));
    }
    out.push_str("\n## Summaries\n");
    for (id, a, _) in docs {
        out.push_str(&format!("\n**{}** ({id}): {}\n", a.title, a.summary.join(" ")));
    }
    out
}

type StateError = Box<dyn std::error::Error + Send + Sync>;

/// The pipeline over the documents `docs` (see [`documents`]), configured by `config`.
fn build(config: &Config, docs: &[(String, PathBuf)]) -> Agent {
    let pool = ResourcePool::builder().total_cpu(config.cpu).total_memory_mb(1024.0).build();
    let mut agent = Agent::new("documents").with_resource_pool(pool);
    let ids: Vec<String> = docs.iter().map(|(id, _)| id.clone()).collect();

    let files = docs.to_vec();
    agent
        .add_state("load_documents", move |ctx: Context| {
            let files = files.clone();
            async move {
                for (id, path) in &files {
                    let text =
                        std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                    ctx.set_state(&format!("text:{id}"), text);
                }
                ctx.set_state("documents", files.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>());
                Ok::<_, StateError>(StateResult::parallel(files.iter().map(|(id, _)| format!("analyse_{id}"))))
            }
        })
        // Declared, so the graph is drawn whole and any other target fails the run.
        .targets(ids.iter().map(|id| format!("analyse_{id}")));

    for (index, id) in ids.iter().enumerate() {
        let doc = id.clone();
        agent
            .add_state(format!("analyse_{id}"), move |ctx: Context| {
                let doc = doc.clone();
                async move {
                    let text: String = ctx.try_get_state(&format!("text:{doc}"))?;
                    ctx.set_state(&format!("analysis:{doc}"), analyse(&text));
                    Ok::<_, StateError>(StateResult::next(format!("tag_{doc}")))
                }
            })
            .resources(ResourceRequirements::new().cpu(1.0).memory_mb(64.0))
            .blocking()
            .targets([format!("tag_{id}")]);

        let (doc, pace) = (id.clone(), config.pace);
        agent
            .add_state(format!("tag_{id}"), move |ctx: Context| {
                let doc = doc.clone();
                async move {
                    tokio::time::sleep(pace).await;
                    // Deterministic flakiness: every third document's first call fails.
                    let key = format!("tag_calls:{doc}");
                    let calls: u32 = ctx.get_state_or(&key, 0) + 1;
                    ctx.set_state(&key, calls);
                    if index % 3 == 0 && calls == 1 {
                        return Err(format!("tagging service: 503 for {doc}").into());
                    }
                    let analysis: Analysis = ctx.try_get_state(&format!("analysis:{doc}"))?;
                    ctx.set_state(&format!("tag:{doc}"), topic(&analysis));
                    Ok::<_, StateError>(StateResult::next("collect"))
                }
            })
            .retry_policy(RetryPolicy::new().max_retries(2).initial_delay(Duration::from_millis(50)).jitter(false))
            .targets(["collect"]);
    }

    agent
        .add_state("collect", |ctx: Context| async move {
            let ids: Vec<String> = ctx.try_get_state("documents")?;
            let mut words = 0;
            for id in &ids {
                let a: Analysis = ctx.try_get_state(&format!("analysis:{id}"))?;
                words += a.words;
            }
            ctx.set_state("total_words", words);
            Ok::<_, StateError>(StateResult::next("review"))
        })
        .join()
        .targets(["review"]);

    let timeout = config.review_timeout;
    agent
        .add_state("review", move |ctx: Context| async move {
            let ids: Vec<String> = ctx.try_get_state("documents")?;
            let words: usize = ctx.try_get_state("total_words")?;
            let verdict = ctx
                .human_in_the_loop(
                    HumanInput::new(format!(
                        "Publish the report on {} documents ({words} words)? (approve/reject)",
                        ids.len()
                    ))
                    .timeout(timeout)
                    .default("approve")
                    .validator(|x: &str| x == "approve" || x == "reject"),
                )
                .await?;
            ctx.set_state("review", verdict);
            Ok::<_, StateError>(StateResult::next("write_report"))
        })
        .targets(["write_report"]);

    let path = config.report.clone();
    agent
        .add_state("write_report", move |ctx: Context| {
            let path = path.clone();
            async move {
                let ids: Vec<String> = ctx.try_get_state("documents")?;
                let verdict: String = ctx.try_get_state("review")?;
                let mut docs = Vec::new();
                for id in ids {
                    let a: Analysis = ctx.try_get_state(&format!("analysis:{id}"))?;
                    let tag: String = ctx.try_get_state(&format!("tag:{id}"))?;
                    docs.push((id, a, tag));
                }
                let verdict = if verdict == "approve" { "approved" } else { "rejected (not for publication)" };
                let text = report(&docs, verdict);
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                std::fs::write(&path, &text)?;
                println!("\n{text}\nreport written to {}", path.display());
                ctx.set_state("report", text);
                Ok::<_, StateError>(StateResult::End)
            }
        })
        .targets(Vec::<&str>::new());
    agent
}

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::from_env();
    let docs = match documents(&config.dir) {
        Ok(docs) if !docs.is_empty() => docs,
        Ok(_) => {
            eprintln!("error: no *.txt documents in {}", config.dir.display());
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("error: cannot list {}: {e}", config.dir.display());
            return ExitCode::FAILURE;
        }
    };
    agent::cli::main(move || build(&config, &docs)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent::store::{CheckpointStore, SqliteStore};

    fn config(dir: &Path, review_timeout: Duration) -> Config {
        Config {
            dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/documents"),
            report: dir.join("out/report.md"),
            review_timeout,
            cpu: 2.0,
            pace: Duration::ZERO,
        }
    }

    #[test]
    fn analysis_counts_words_terms_reading_time_and_summarises() {
        let text = "Bees\n\nBees make honey. The honey is sweet! Bees dance, and bees sleep?\nWax holds honey";
        let a = analyse(text);
        assert_eq!(a.title, "Bees");
        assert_eq!(a.words, 15);
        assert_eq!(a.sentences, 4);
        assert_eq!(a.reading_seconds, 5); // 15 words at 200 a minute: 4.5 s, rounded up
        assert_eq!(a.top_terms[..2], [("bees".to_owned(), 3), ("honey".to_owned(), 3)]);
        assert_eq!(a.summary, ["Bees make honey.", "Bees dance, and bees sleep?"]);
        assert_eq!(topic(&a), "nature");
        assert_eq!(words("Don't stop-now"), ["dont", "stop", "now"]);
    }

    /// The whole pipeline on the shipped documents, durable on SQLite, no one answering.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pipeline_analyses_every_document_retries_the_flaky_ones_and_defaults_the_review() {
        let tmp = tempfile::tempdir().unwrap();
        let config = config(tmp.path(), Duration::from_millis(100));
        let docs = documents(&config.dir).unwrap();
        assert_eq!(docs.len(), 12);
        let store = SqliteStore::open(tmp.path().join("documents.db")).unwrap();
        let agent = build(&config, &docs).with_store(store.clone()).input_from_terminal(false);
        let result = agent.run().await.unwrap();
        assert_eq!(result.status(), AgentStatus::Completed);
        let ctx = result.context();

        // Word counts equal a direct count of every body.
        let mut expected = 0;
        for (id, path) in &docs {
            let text = std::fs::read_to_string(path).unwrap();
            let a: Analysis = ctx.get_state(&format!("analysis:{id}")).unwrap();
            assert_eq!(a, analyse(&text));
            assert_eq!(a.summary.len(), 2, "{id}");
            expected += a.words;
        }
        assert_eq!(ctx.get_state::<usize>("total_words"), Some(expected));
        assert_eq!(ctx.get_state::<String>("tag:bees").as_deref(), Some("nature"));
        assert_eq!(ctx.get_state::<String>("tag:telescope").as_deref(), Some("science"));
        assert_eq!(ctx.get_state::<String>("tag:library").as_deref(), Some("community"));

        // Documents 0, 3, 6 and 9 failed once each and were retried once.
        let metrics = result.metrics();
        assert_eq!(metrics.retries, 4);
        for (i, (id, _)) in docs.iter().enumerate() {
            let calls: u32 = ctx.get_state(&format!("tag_calls:{id}")).unwrap();
            assert_eq!(calls, if i % 3 == 0 { 2 } else { 1 }, "{id}");
        }
        // `collect` joined every branch once.
        let collect = metrics.states.iter().find(|s| s.name == "collect").unwrap();
        assert_eq!(collect.completed, 1);

        // Nobody answered: the default was taken, recorded as such.
        assert_eq!(ctx.get_state::<String>("review").as_deref(), Some("approve"));
        let history = agent.input_history();
        assert_eq!(history.len(), 1);
        assert!(history[0].defaulted);

        let report = std::fs::read_to_string(&config.report).unwrap();
        assert_eq!(ctx.get_state::<String>("report").as_deref(), Some(report.as_str()));
        assert!(report.starts_with(&format!("# Document report\n\n12 documents, {expected} words")), "{report}");
        assert!(report.contains("Review: approved."));
        assert!(report.contains("| lighthouse | The Lighthouse Keeper |"), "{report}");
        let runs = store.list_runs(&Default::default()).await.unwrap();
        assert_eq!(runs[0].status, AgentStatus::Completed);
    }

    /// Through the command line: a run stopped while it waits for the review is answered
    /// from another "process" and resumed by running the binary with no subcommand; the
    /// documents already analysed are not analysed again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_command_line_resumes_a_stopped_run_without_redoing_work() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("documents.db").to_str().unwrap().to_owned();
        let config = config(tmp.path(), Duration::from_secs(600));
        let docs = documents(&config.dir).unwrap();
        let make = {
            let (config, docs) = (config.clone(), docs.clone());
            move || build(&config, &docs).input_from_terminal(false)
        };
        let execute = |args: Vec<String>, make: Box<dyn FnOnce() -> Agent + Send>| async move {
            let mut argv = vec!["documents".to_owned(), "--store".to_owned()];
            argv.push(args[0].clone());
            argv.extend(args[1..].iter().cloned());
            let mut out = Vec::new();
            let result = agent::cli::execute(&agent::cli::parse(argv).unwrap(), make, &mut out).await;
            (result, String::from_utf8(out).unwrap())
        };

        let first = tokio::spawn(execute(vec![db.clone()], Box::new(make.clone())));
        let store = SqliteStore::open(&db).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let run_id = loop {
            let runs = store.list_runs(&Default::default()).await.unwrap();
            if let Some(run) = runs.first() {
                if !store.inputs(Some(&run.run_id), true).await.unwrap().is_empty() {
                    break run.run_id.clone();
                }
            }
            if first.is_finished() {
                let (result, out) = first.await.unwrap();
                panic!("the run ended before its review asked: {result:?}\n{out}");
            }
            assert!(std::time::Instant::now() < deadline, "the run never asked for its review");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        first.abort(); // the process is gone while the review waits
        let _ = first.await;

        let (result, out) = execute(vec![db.clone(), "show".into(), run_id.clone()], Box::new(make.clone())).await;
        result.unwrap();
        assert!(out.contains("Publish the report on 12 documents"), "{out}");
        let analysed = out.lines().filter(|l| l.starts_with("analyse_") && l.contains("Completed")).count();
        assert_eq!(analysed, 12, "{out}");

        let args = vec![db.clone(), "answer".into(), run_id.clone(), "input-1".into(), "reject".into()];
        let (result, out) = execute(args, Box::new(make.clone())).await;
        result.unwrap_or_else(|e| panic!("{e}\n{out}"));

        let (result, out) = execute(vec![db.clone()], Box::new(make.clone())).await;
        result.unwrap_or_else(|e| panic!("{e}\n{out}"));
        assert!(out.contains(&format!("resuming run {run_id}")), "{out}");
        assert!(out.contains("completed"), "{out}");
        // Only `review` and `write_report` ran in the resumed process.
        assert!(!out.contains("analyse_"), "{out}");
        let report = std::fs::read_to_string(&config.report).unwrap();
        assert!(report.contains("Review: rejected (not for publication)."), "{report}");

        let (result, out) = execute(vec![db.clone(), "graph".into()], Box::new(make)).await;
        result.unwrap();
        // Node ids are generated (`s0`, ...); each state's name is its label.
        let id = |name: &str| -> String {
            let labelled =
                |l: &&str| l.ends_with(&format!("(\"{name}\")")) || l.ends_with(&format!("{{{{\"{name}\"}}}}"));
            let line = out.lines().map(str::trim).find(labelled).unwrap_or_else(|| panic!("no node {name}:\n{out}"));
            line[..line.find(['(', '{']).unwrap()].to_owned()
        };
        let edge = |from: &str, to: &str| format!("    {} --> {}\n", id(from), id(to));
        assert!(out.contains(&format!("    start --> {}\n", id("load_documents"))), "{out}");
        assert!(out.contains(&edge("load_documents", "analyse_volcano")), "{out}");
        assert!(
            out.contains(&edge("analyse_volcano", "tag_volcano")) && out.contains(&edge("tag_volcano", "collect")),
            "{out}"
        );
        assert!(out.contains(&edge("review", "write_report")), "{out}");
        assert!(!out.contains("computed at run time"), "every state declares its targets: {out}");
    }
}
