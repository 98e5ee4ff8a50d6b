//! The `panelgate` binary as a user runs it.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Http;
use tokio::time::Instant;

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
fn migrate_creates_the_database() {
    let dir = common::gw::Scratch::new("migrate");
    let config = dir.path("config.yaml");
    std::fs::write(&config, "database: \"sqlite://data/gw.db\"\n").unwrap();
    for _ in 0..2 {
        migrate(&config);
    }
    assert!(dir.path("data/gw.db").exists());
}

fn migrate(config: &std::path::Path) {
    let out = panelgate()
        .args(["migrate", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("migrations applied"));
}

/// A database as the first release left it (migrations 1 and 2, integer upstream ids) goes
/// through `panelgate migrate`, and its customer, orders and ledger come out whole.
#[tokio::test]
async fn migrate_upgrades_an_older_database_and_keeps_its_rows() {
    use sqlx::migrate::Migrator;
    static ALL: Migrator = sqlx::migrate!("./migrations/sqlite");
    let dir = common::gw::Scratch::new("upgrade");
    std::fs::create_dir_all(dir.path("data")).unwrap();
    let url = format!("sqlite://{}", dir.path("data/gw.db").display());
    let options = url
        .parse::<sqlx::sqlite::SqliteConnectOptions>()
        .unwrap()
        .create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    let first_release = Migrator {
        migrations: ALL
            .migrations
            .iter()
            .filter(|m| m.version <= 2)
            .cloned()
            .collect::<Vec<_>>()
            .into(),
        ..Migrator::DEFAULT
    };
    assert!(ALL.migrations.len() > 2, "nothing newer to upgrade to");
    first_release.run(&pool).await.unwrap();
    for sql in [
        "INSERT INTO customers (id, name, key_hash, grp, balance, created_at) \
         VALUES (1, 'ann', zeroblob(32), 'default', 800, 0)",
        "INSERT INTO orders (id, customer_id, service, upstream, upstream_service, \
         upstream_order, state, status, charge, billed, fields, created_at, updated_at) \
         VALUES (7, 1, 1, 'main', 101, 123456, 'placed', 'Pending', 100, 1000, '{}', 0, 0)",
        "INSERT INTO ledger (customer_id, amount, kind, order_id, created_at) \
         VALUES (1, 900, 'credit', NULL, 0), (1, -100, 'charge', 7, 0)",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    pool.close().await;
    let config = dir.path("config.yaml");
    std::fs::write(&config, "database: \"sqlite://data/gw.db\"\n").unwrap();

    let cli = tokio::task::spawn_blocking(move || migrate(&config));
    cli.await.unwrap();

    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY 1")
        .fetch_all(&pool)
        .await
        .unwrap();
    let all: Vec<i64> = ALL.migrations.iter().map(|m| m.version).collect();
    assert_eq!(applied, all, "every migration is applied");
    pool.close().await;
    let store = panelgate::store::open(&url).await.unwrap();
    let ann = store.customer_by_name("ann").await.unwrap().unwrap();
    assert_eq!(ann.balance, 800);
    let order = store.order(7).await.unwrap().unwrap();
    assert_eq!(
        (order.upstream_order.as_deref(), order.charge, order.billed),
        (Some("123456"), 100, 1000)
    );
    let amounts: Vec<i64> = store
        .ledger(ann.id)
        .await
        .unwrap()
        .iter()
        .map(|e| e.amount)
        .collect();
    assert_eq!(amounts, [900, -100]);
}
