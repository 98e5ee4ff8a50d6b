//! The web console in a real headless Chromium (Debian's `chromium`, driven by `playwright-core`
//! from tests/browser/): an operator logs in, creates a customer, credits them, finds their
//! API v2 order on Orders, resolves an order of unknown outcome, and sees the balances right;
//! a read-only token then sees every page and no write form. The scenario is
//! tests/browser/console.mjs; this test starts the gateway for it and checks the store after.
//!
//! Each page's screenshot goes to `target/console-screenshots/`, or to
//! `PANELGATE_CONSOLE_SCREENSHOTS` (`docs/console` refreshes the docs' pictures). `.ci/run`
//! installs Chromium and the npm package; `PANELGATE_TEST_NODE` and `PANELGATE_TEST_CHROMIUM`
//! name other binaries than `node` on the PATH and /usr/bin/chromium.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::gw::{ALPHA_KEY, Env, Options, dec, with_services};
use panelgate::money::{format, from_units};
use panelgate::store::OrderState;
use panelgate::store::admin::Role;
use serde_json::Value;
use tokio::io::AsyncReadExt;

const ADMIN: &str = "admin:\n  listen: \"127.0.0.1:0\"\n";

/// Sold at a loss on purpose, so that the catalog has a price to flag below cost.
const BELOW_COST: &str =
    "  - { id: 9, upstream: alpha, service: 101, markup: { percent: -10 }, allow_loss: true }\n";

/// Long enough for a slow machine; a hung browser must not hang the suite.
const SCENARIO_LIMIT: Duration = Duration::from_secs(120);

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// What the scenario needs, each found or the reason it is missing.
struct Tools {
    node: PathBuf,
    chromium: PathBuf,
}

impl Tools {
    /// `None` (the test skips, or fails under CI) when something is not installed here.
    fn found() -> Option<Tools> {
        let node = PathBuf::from(std::env::var_os("PANELGATE_TEST_NODE").unwrap_or("node".into()));
        let runs = std::process::Command::new(&node).arg("--version").output();
        let node = runs.is_ok_and(|o| o.status.success()).then_some(node);
        let node = common::required(node, "node not found", "installs nodejs")?;
        let package = browser_dir().join("node_modules/playwright-core/package.json");
        let modules = package.exists().then_some(());
        common::required(
            modules,
            "tests/browser/node_modules has no playwright-core",
            "runs npm ci --prefix tests/browser",
        )?;
        let chromium = std::env::var_os("PANELGATE_TEST_CHROMIUM")
            .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
        let chromium = chromium.exists().then_some(chromium);
        let chromium = common::required(chromium, "chromium not found", "installs chromium")?;
        Some(Tools { node, chromium })
    }
}

/// Where the screenshots go: `PANELGATE_CONSOLE_SCREENSHOTS` (relative to the repository), or
/// `target/console-screenshots`.
fn screenshots() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::env::var_os("PANELGATE_CONSOLE_SCREENSHOTS")
        .map_or_else(|| root.join("target/console-screenshots"), |d| root.join(d))
}

/// Runs console.mjs with `vars`, bounded by [`SCENARIO_LIMIT`]; fails the test with everything
/// it printed unless it succeeds. Returns its `result:` line, parsed.
async fn scenario(tools: &Tools, vars: &[(&str, String)]) -> Value {
    let mut child = tokio::process::Command::new(&tools.node)
        .arg(browser_dir().join("console.mjs"))
        .envs(vars.iter().map(|(k, v)| (k, v)))
        .env("CHROMIUM", &tools.chromium)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node starts");
    let stdout = tokio::spawn(read_all(child.stdout.take().unwrap()));
    let stderr = tokio::spawn(read_all(child.stderr.take().unwrap()));
    // Awaited, not blocked on: the gateway the browser talks to runs on this runtime.
    let exit = tokio::time::timeout(SCENARIO_LIMIT, child.wait()).await;
    if exit.is_err() {
        let _ = child.kill().await;
    }
    let (stdout, stderr) = (stdout.await.unwrap(), stderr.await.unwrap());
    let said = format!("--- stdout\n{stdout}--- stderr\n{stderr}");
    match exit {
        Err(_) => panic!("console.mjs did not finish within {SCENARIO_LIMIT:?}\n{said}"),
        Ok(exit) => assert!(exit.unwrap().success(), "console.mjs failed\n{said}"),
    }
    eprintln!("{said}");
    let result = stdout.lines().find_map(|l| l.strip_prefix("result: "));
    let result = result.unwrap_or_else(|| panic!("no result line\n{said}"));
    serde_json::from_str(result).unwrap()
}

async fn read_all(mut pipe: impl tokio::io::AsyncRead + Unpin) -> String {
    let mut out = Vec::new();
    let _ = pipe.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn an_operator_runs_the_storefront_from_the_console_in_a_real_browser() {
    let Some(tools) = Tools::found() else { return };
    let options = Options {
        extra: ADMIN,
        ..Options::default()
    };
    let env = Env::tuned_with(options, |_, _| {}, |t| with_services(t, BELOW_COST)).await;
    let vars = [
        (
            "CONSOLE_URL",
            format!("http://{}/admin/", env.gw().admin_addr.unwrap()),
        ),
        ("API_URL", env.url()),
        ("WRITE_TOKEN", env.admin_token("shop", Role::Write).await),
        ("WRITE_TOKEN_NAME", "shop".to_owned()),
        ("READ_TOKEN", env.admin_token("auditor", Role::Read).await),
        (
            "FAULTS_URL",
            format!("http://{}/_sim/faults", env.alpha.addr),
        ),
        ("FAULTS_KEY", ALPHA_KEY.to_owned()),
        ("SCREENSHOTS", screenshots().display().to_string()),
        ("BELOW_COST_SERVICE", "9".to_owned()),
    ];
    let result = scenario(&tools, &vars).await;
    let id = |k: &str| {
        result[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k}: {result}"))
    };
    let resolved = env.order(id("resolved")).await;
    assert_eq!(resolved.state, OrderState::Final);
    assert_eq!(resolved.refunded, resolved.charge);
    let placed = env.order(id("placed")).await;
    let ann = env.store().customer_by_name("ann").await.unwrap().unwrap();
    // Credited 25; the placed order's charge kept, the resolved one's given back.
    let expected = dec("25") - from_units(placed.charge);
    assert_eq!(from_units(ann.balance), expected);
    assert_eq!(result["balance"], format(expected));
    env.assert_ledgers_balance().await;
}
