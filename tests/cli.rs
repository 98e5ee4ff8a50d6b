//! The `panelgate` binary as a user runs it.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Http;

fn panelgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_panelgate"))
}

#[test]
fn help_lists_the_subcommands() {
    let out = panelgate().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("simulate"), "{text}");
}

#[tokio::test]
async fn simulate_reads_its_config_section_prints_its_address_and_stops_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("panelgate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        "simulator:\n  listen: \"127.0.0.1:1\"\n  key: from-file\n  speed: 1000\n  journal: journal.jsonl\n",
    )
    .unwrap();
    // The flag overrides the file's listen address; the key comes from the file.
    let mut child = panelgate()
        .args(["simulate", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/api/v2"),
        "{url}"
    );

    let http = Http::default();
    let r = http
        .form(
            &url,
            &[
                ("key", "from-file"),
                ("action", "add"),
                ("service", "102"),
                ("link", "x"),
                ("quantity", "100"),
            ],
        )
        .await;
    assert!(r.json()["order"].is_u64(), "{}", r.text());
    // The journal path was relative to the config file's folder.
    assert_eq!(
        std::fs::read_to_string(dir.join("journal.jsonl"))
            .unwrap()
            .lines()
            .count(),
        1
    );

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "simulator did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "{exit:?}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_bad_config_is_refused_with_its_location() {
    let dir = std::env::temp_dir().join(format!("panelgate-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(&config, "simulator:\n  key: k\n  sped: 10\n").unwrap();
    let out = panelgate()
        .args(["simulate", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sped") && err.contains("line 3"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn simulate_without_a_key_says_how_to_give_one() {
    let out = panelgate()
        .args(["simulate", "--config", "/nonexistent/config.yaml"])
        .env_remove("PANELGATE_SIM_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--key"));
}

#[test]
fn migrate_creates_and_upgrades_the_database() {
    let dir = std::env::temp_dir().join(format!("panelgate-migrate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(&config, "database: \"sqlite://data/gw.db\"\n").unwrap();
    for _ in 0..2 {
        let out = panelgate()
            .args(["migrate", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("migrations applied"));
    }
    assert!(dir.join("data/gw.db").exists());
    std::fs::remove_dir_all(&dir).ok();
}
