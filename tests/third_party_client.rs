//! A client nobody here wrote (`smmpy` from PyPI) lists services, orders, polls, refills and
//! cancels, against the simulated panel and against the gateway. `.ci/run` installs it into
//! `.venv`.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::gw::{Env, Options};
use common::{KEY, fast_config, simulator};

/// The Python that has `smmpy`: `PANELGATE_TEST_PYTHON`, else the repository's `.venv`.
fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PANELGATE_TEST_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    venv.exists().then_some(venv)
}

/// Runs the smmpy flow against `url`; `None` when Python with smmpy is not installed here.
async fn smmpy_flow(url: String, key: String, service: &str) -> Option<()> {
    let python = common::required(python(), "no .venv with smmpy", "installs smmpy into .venv")?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/smmpy_flow.py");
    let service = service.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .arg(url)
            .arg(key)
            .arg(service)
            .output()
    })
    .await
    .unwrap()
    .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("smmpy flow ok"), "{stdout}");
    Some(())
}

#[tokio::test]
async fn smmpy_drives_the_simulator() {
    let mut cfg = fast_config();
    cfg.speed = 1000.0;
    let sim = simulator(cfg).await;
    smmpy_flow(sim.url(), KEY.into(), "101").await;
}

#[tokio::test]
async fn smmpy_drives_the_gateway() {
    let env = Env::start(Options {
        alpha_speed: 1000.0,
        ..Options::default()
    })
    .await;
    let key = env.client("py", "50", "default").await;
    if smmpy_flow(env.url(), key, "1").await.is_some() {
        env.assert_ledgers_balance().await;
    }
}
