//! The admin API's OpenAPI document against the running listener, by a property-based tester
//! nobody here wrote (`schemathesis` from PyPI; `.ci/run` installs it): for every operation it
//! generates valid and invalid requests from the document and checks that no reply is a 5xx
//! and that every reply (status, content type, headers, body) is one the document describes.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::gw::{Env, Options};
use panelgate::operator::{CLI, Operator};
use panelgate::store::admin::Role;

/// `PANELGATE_TEST_SCHEMATHESIS`, else the `schemathesis` beside `PANELGATE_TEST_PYTHON`,
/// else the repository's `.venv`.
fn schemathesis() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PANELGATE_TEST_SCHEMATHESIS") {
        return Some(PathBuf::from(p));
    }
    let beside_python = std::env::var_os("PANELGATE_TEST_PYTHON")
        .and_then(|p| PathBuf::from(p).parent().map(|d| d.join("schemathesis")));
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/schemathesis");
    beside_python.into_iter().chain([venv]).find(|p| p.exists())
}

/// The tester's fuzzing guesses tokens too: the failed-token cap must not turn its valid
/// requests into 429s mid-run.
const CONFIG: &str =
    "admin:\n  listen: \"127.0.0.1:0\"\nlimits:\n  failed_keys_per_minute: 1000000\n";

#[tokio::test(flavor = "multi_thread")]
async fn every_reply_of_the_admin_api_matches_its_openapi_document() {
    let Some(tool) = common::required(
        schemathesis(),
        "no schemathesis",
        "installs schemathesis into .venv",
    ) else {
        return;
    };
    let env = Env::start(Options {
        extra: CONFIG,
        ..Options::default()
    })
    .await;
    let cfg = env.gw().gateway().cfg.clone();
    let op = Operator {
        store: env.store(),
        cfg: &cfg,
        actor: CLI,
    };
    let token = op.add_token("schemathesis", Role::Write).await.unwrap();
    op.add_client("ann", "100".parse().unwrap(), "default", 0.into())
        .await
        .unwrap();
    let base = format!("http://{}", env.gw().admin_addr.unwrap());
    let dir = env.dir.path("schemathesis");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(tool)
            .current_dir(std::env::temp_dir())
            .env("SCHEMATHESIS_HOOKS", "")
            .args([
                "run",
                &format!("{base}/admin/api/v1/openapi.json"),
                "--url",
                &base,
            ])
            .args(["--header", &format!("Authorization: Bearer {token}")])
            .args(["--checks", "all"])
            // Text with NUL in it is refused (PostgreSQL cannot store it; docs/admin-api.md).
            .args(["--generation-allow-x00", "false"])
            .args(["--generation-database", ":memory:"])
            .args(["--phases", "examples,coverage,fuzzing"])
            .args(["--max-examples", "30", "--seed", "1", "--workers", "1"])
            .args(["--report", "junit", "--report-dir"])
            .arg(dir)
            .output()
    })
    .await
    .unwrap()
    .expect("schemathesis runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
}
