//! The console's page in a real browser: headless Chromium (Debian's `chromium`) driven by
//! `tests/console/drive.mjs` (playwright-core, pinned in `tests/console/package-lock.json`)
//! against the real server on a loopback port, over a SQLite store with two runs waiting
//! for a person. The script checks that the list shows runs and a run submitted meanwhile
//! without a reload; that a run's graph is coloured by its states, with a legend; that a
//! state named `<script>` and markup in the context render as text; that answering from the
//! inbox (confirmed) lets the run finish; that an answer given elsewhere turns a run's
//! graph completed live, without a reload; that Cancel (confirmed) cancels a run; and that
//! a waiting state offers Cancel (a completed one does not) which, confirmed, cancels that
//! state; and that a parent run's graph draws the child run its state started inside that
//! state, unless unticked. Then the runs must say so: two completed, one cancelled, one
//! whose state was.
//!
//! Without Chromium or the script's packages (`npm ci --prefix tests/console`) the test says
//! it is skipped; under CI (`CI=true`) it fails instead. `AGENT_CONSOLE_SCREENSHOT=PATH`
//! keeps the screenshot of a run's page there (the README's `docs/console.png`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use agent_core::AgentStatus;
use agent_runtime::console::Console;
use agent_runtime::store::{CheckpointStore, SqliteStore};
use agent_runtime::{Agent, RunOptions};

mod common;

use common::review::until_asked;

/// The workflow under test: a review that defaults to approve.
fn asker() -> Agent {
    common::review::asker("review", Some("approve"))
}

/// A one-state child workflow.
fn counter() -> Agent {
    let mut agent = Agent::new("count-words");
    agent.add_state("count", |ctx: agent_core::Context| async move {
        ctx.set_state("words", 2);
        agent_core::StateResult::End
    });
    agent
}

/// A parent whose `delegate` runs `counter` as a child run.
fn delegating() -> Agent {
    let mut agent = Agent::new("delegating");
    agent.add_state("delegate", |ctx: agent_core::Context| async move {
        use agent_runtime::RunChild;
        let out: serde_json::Value = ctx.run_child(counter(), serde_json::json!({ "text": "two words" })).await?;
        ctx.set_state("words", out["words"].clone());
        Ok::<_, agent_core::BoxError>(agent_core::StateResult::End)
    });
    agent
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim().to_ascii_lowercase().as_str(), "" | "0" | "false"))
}

/// What the browser test needs, or why it cannot run.
fn browser() -> Result<(PathBuf, PathBuf), String> {
    let chromium = std::env::var_os("CHROMIUM").map(PathBuf::from).unwrap_or_else(|| "/usr/bin/chromium".into());
    if !chromium.exists() {
        return Err(format!("no Chromium at {} (apt-get install chromium, or set CHROMIUM)", chromium.display()));
    }
    let dir = workspace().join("tests/console");
    if !dir.join("node_modules/playwright-core").exists() {
        return Err("tests/console has no node_modules (npm ci --prefix tests/console)".into());
    }
    Ok((chromium, dir))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_in_headless_chromium() {
    let (chromium, dir) = match browser() {
        Ok(found) => found,
        Err(why) if ci() => panic!("the browser test cannot run under CI: {why}"),
        Err(why) => {
            eprintln!("skipped the_page_in_headless_chromium: {why}");
            return;
        }
    };
    let tmp = tempfile::tempdir().unwrap();
    let store: Arc<dyn CheckpointStore> = Arc::new(SqliteStore::open(tmp.path().join("runs.db")).unwrap());
    let agent = asker().with_store(store.clone());
    let a = agent.start(RunOptions::new()).unwrap();
    let b = agent.start(RunOptions::new()).unwrap();
    let c = agent.start(RunOptions::new()).unwrap();
    let d = agent.start(RunOptions::new()).unwrap();
    let (id_a, id_b, id_c, id_d) = (a.id().to_owned(), b.id().to_owned(), c.id().to_owned(), d.id().to_owned());
    for id in [&id_a, &id_b, &id_c, &id_d] {
        until_asked(&*store, id).await;
    }
    let parent = delegating().with_store(store.clone()).run().await.unwrap();
    assert_eq!(parent.status(), AgentStatus::Completed);
    let parent = parent.run_id().to_owned();

    let app = Console::with_store(store.clone()).agent(asker()).agent(delegating()).agent(counter()).router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let screenshot = std::env::var_os("AGENT_CONSOLE_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| tmp.path().join("console.png"));
    let drive = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(dir.join("drive.mjs"))
            .args([&base, &id_a, &id_b, &id_c])
            .arg(&screenshot)
            .arg(&id_d)
            .arg(&parent)
            .env("CHROMIUM", chromium)
            .output()
            .expect("node runs")
    });
    let out = tokio::time::timeout(Duration::from_secs(180), drive).await.expect("the browser test ends").unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(out.status.success(), "the page failed a check:\n{stdout}\n{stderr}");
    assert!(stdout.contains("live, without a reload"), "{stdout}");

    // The store agrees: two runs went on to their end, answered from the page; the third
    // was cancelled from it.
    for handle in [a, b] {
        let result = tokio::time::timeout(Duration::from_secs(30), handle).await.unwrap().unwrap();
        assert_eq!(result.status(), AgentStatus::Completed);
        assert_eq!(result.context().get_state::<String>("verdict").as_deref(), Some("approve"));
    }
    let result = tokio::time::timeout(Duration::from_secs(30), c).await.unwrap().unwrap();
    assert_eq!(result.status(), AgentStatus::Cancelled);
    // The fourth had its waiting state cancelled from the page: that branch ended there.
    let result = tokio::time::timeout(Duration::from_secs(30), d).await.unwrap().unwrap();
    assert_eq!(result.status(), AgentStatus::Completed);
    assert_eq!(result.context().get_state::<String>("verdict"), None, "review never got its answer");
    let recorded = agent_runtime::store::read_checkpoint(&*store, result.run_id()).await.unwrap().unwrap();
    assert_eq!(recorded.state("review").map(|s| s.status), Some(agent_core::StateStatus::Cancelled));
    server.abort();
}
