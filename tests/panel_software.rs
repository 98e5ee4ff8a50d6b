//! Panel software as the customer: a PHP panel (tests/panel_php/panel.php, run by `php-cli`)
//! with panelgate as its API provider imports services, takes its users' orders, syncs their
//! statuses and refunds them by its own rules, reading our replies the way such scripts do.
//! `.ci/run` installs `php-cli`.
//!
//! Local service 1 sells alpha's 101 at 1.125 per 1000; the panel sells it on at +20 %, 1.35.
//! Every refund and balance below is worked out by hand from those two rates.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::gw::{Env, Options, Scratch, dec, money};
use panelgate::store::OrderState;
use serde_json::Value;

/// The PHP binary, `PANELGATE_TEST_PHP` or else `php` on the PATH, if it runs.
fn php() -> Option<PathBuf> {
    let php = std::env::var_os("PANELGATE_TEST_PHP").map_or("php".into(), PathBuf::from);
    let runs = Command::new(&php).arg("--version").output();
    runs.is_ok_and(|o| o.status.success()).then_some(php)
}

/// The panel: its database is a JSON file; each command is one `php panel.php` run.
struct Panel {
    php: PathBuf,
    db: PathBuf,
    _dir: Scratch,
}

impl Panel {
    /// A panel pointed at the gateway with `key`, its services imported at +20 %, and one
    /// user, ann, holding 20.00. `None` (the test is skipped) when PHP is not installed here.
    async fn start(env: &Env, key: &str) -> Option<Panel> {
        let php = common::required(php(), "php not found", "installs php-cli")?;
        let dir = Scratch::new("panel-php");
        let panel = Panel {
            php,
            db: dir.path("panel.json"),
            _dir: dir,
        };
        panel.run(&["provider", &env.url(), key]).await;
        panel.run(&["user", "ann", "20"]).await;
        let imported = panel.run(&["import", "20"]).await;
        let ours = env.call(key, &[("action", "services")]).await;
        assert_eq!(imported["imported"], ours.as_array().unwrap().len());
        Some(panel)
    }

    async fn run(&self, args: &[&str]) -> Value {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/panel_php/panel.php");
        let mut command = Command::new(&self.php);
        command.arg(script).arg(&self.db).args(args);
        let out = tokio::task::spawn_blocking(move || command.output())
            .await
            .unwrap()
            .expect("php runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "php panel.php {} failed\nstdout:\n{stdout}\nstderr:\n{stderr}",
            args[0]
        );
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }

    /// Places an order for ann and returns the panel's record of it.
    async fn order(&self, service: &str, link: &str, quantity: &str, drip: &[&str]) -> Value {
        let mut args = vec!["order", "ann", service, link, quantity];
        args.extend_from_slice(drip);
        self.run(&args).await
    }

    async fn show(&self) -> Value {
        self.run(&["show"]).await
    }

    /// The panel's order `id` (its own numbering, from 1).
    async fn local(&self, id: usize) -> Value {
        self.show().await["orders"][id - 1].clone()
    }
}

/// The gateway, the panel's client there (smartpanel, holding 10.00) and the panel; `None`
/// when PHP is not installed here.
async fn start() -> Option<(Env, String, Panel)> {
    let env = Env::start(Options::default()).await;
    let key = env.client("smartpanel", "10", "default").await;
    let panel = Panel::start(&env, &key).await?;
    Some((env, key, panel))
}

/// Our order id, as the panel stored it from the `add` reply.
fn ours(order: &Value) -> u64 {
    order["provider_order"].as_str().unwrap().parse().unwrap()
}

fn amount(v: &Value) -> rust_decimal::Decimal {
    dec(&v
        .as_f64()
        .unwrap_or_else(|| panic!("a number: {v}"))
        .to_string())
}

async fn finished(env: &Env, id: u64) {
    env.wait_order(id, |o| o.state == OrderState::Final).await;
}

/// Waits until our order runs (a `hold` order has delivered half), then cancels it from the
/// panel, and waits until the upstream's Partial is final on our side.
async fn cancel_half_way(env: &Env, key: &str, panel: &Panel, local: usize) {
    let id = ours(&panel.local(local).await);
    env.wait_status(key, id, &["In progress"]).await;
    let r = panel.run(&["cancel", &local.to_string()]).await;
    assert_eq!(r["cancel"], 1, "{r}");
    finished(env, id).await;
}

#[tokio::test]
async fn a_php_panel_imports_orders_syncs_and_refunds_through_panelgate() {
    let Some((env, key, panel)) = start().await else {
        return;
    };
    let service = &panel.show().await["services"]["1"];
    assert_eq!(
        (&service["type"], &service["min"], &service["dripfeed"]),
        (&"Default".into(), &50.into(), &true.into())
    );
    assert_eq!(amount(&service["rate"]), dec("1.35")); // 1.125 × 1.2

    // Four orders of ann's, 1.35 per 1000: charged 1.35, 2.70, 1.35 and 13.50.
    let done = panel
        .order("1", "https://i.com/a?sim-fate=complete", "1000", &[])
        .await;
    let canceled = panel
        .order("1", "https://i.com/b?sim-fate=cancel", "2000", &[])
        .await;
    panel
        .order("1", "https://i.com/c?sim-fate=hold", "1000", &[])
        .await;
    // 10000 at our 1.125 is 11.25; we hold 10 − 1.125 − 2.25 − 1.125 = 5.50 of the panel's.
    let refused = panel.order("1", "https://i.com/d", "10000", &[]).await;
    assert_eq!(
        (&refused["status"], &refused["note"]),
        (&"Fail".into(), &"Not enough funds on balance".into())
    );
    assert_eq!(amount(&refused["refunded"]), dec("13.5"));

    // A single `status` (read as an object) for the finished one...
    finished(&env, ours(&done)).await;
    let polled = panel.run(&["sync-one", "1"]).await;
    assert_eq!(
        polled["polled"],
        serde_json::json!([ours(&done).to_string()])
    );
    // ...then one multi `status` (read as arrays) for the two still open; the failed order
    // and the completed one are not asked about again.
    finished(&env, ours(&canceled)).await;
    cancel_half_way(&env, &key, &panel, 3).await;
    let polled = panel.run(&["sync"]).await;
    assert_eq!(polled["polled"].as_array().unwrap().len(), 2, "{polled}");
    assert_eq!(panel.run(&["sync"]).await["polled"], serde_json::json!([]));

    let db = panel.show().await;
    let [done, canceled, partial, _] = &db["orders"].as_array().unwrap()[..] else {
        panic!("four orders: {db}");
    };
    assert_eq!(done["status"], "Completed");
    assert_eq!(amount(&done["refunded"]), dec("0"));
    assert_eq!(canceled["status"], "Canceled");
    assert_eq!(amount(&canceled["refunded"]), dec("2.7")); // the whole charge
    // The upstream delivered 500 of 1000 before the cancel: 1.35 × 500 / 1000.
    assert_eq!(
        (&partial["status"], &partial["remains"]),
        (&"Partial".into(), &500.into())
    );
    assert_eq!(amount(&partial["refunded"]), dec("0.675"));
    // 20 − 1.35 − 2.70 − 1.35 − 13.50 + 2.70 + 0.675 + 13.50
    assert_eq!(amount(&db["users"]["ann"]), dec("17.975"));

    // Our ledger: 10 − 1.125 − 2.25 − 1.125 + 2.25 + 0.5625 (500 of 1000 at 1.125).
    assert_eq!(env.balance(&key).await, dec("8.3125"));
    let seen = panel.run(&["provider-balance"]).await;
    assert_eq!(
        (money(&seen["balance"]), &seen["currency"]),
        (dec("8.3125"), &"USD".into())
    );
    env.assert_ledgers_balance().await;
}

/// Needs `runs` in drip-feed status replies: without it the panel reads a drip-feed Partial
/// as nothing delivered and refunds its user the whole charge.
#[tokio::test]
async fn a_php_panel_refunds_a_drip_feed_partial_by_runs() {
    let Some((env, key, panel)) = start().await else {
        return;
    };
    // 100 a run, 4 runs a minute apart: 400 units, 1.35 × 400 / 1000 = 0.54 to ann.
    let link = "https://i.com/drip?sim-fate=hold";
    let drip = panel.order("1", link, "100", &["4", "1"]).await;
    assert_eq!(amount(&drip["charge"]), dec("0.54"));
    cancel_half_way(&env, &key, &panel, 1).await;
    panel.run(&["sync-one", "1"]).await;

    let db = panel.show().await;
    let o = &db["orders"][0];
    // 200 of 400 delivered: 2 runs out, and 0.54 × 200 / 400 back.
    assert_eq!(
        (&o["status"], &o["remains"]),
        (&"Partial".into(), &200.into())
    );
    assert_eq!(o["runs_done"], 2, "{o}");
    assert_eq!(amount(&o["refunded"]), dec("0.27"));
    assert_eq!(amount(&db["users"]["ann"]), dec("19.73")); // 20 − 0.54 + 0.27
    // Ours: 1.125 × 400 / 1000 = 0.45 charged, half of it back.
    assert_eq!(env.balance(&key).await, dec("9.775")); // 10 − 0.45 + 0.225
    env.assert_ledgers_balance().await;
}

/// An `error` in a status reply is final to the panel: here the owner pasted another
/// customer's key, our answer for the order is `Incorrect order ID`, and the panel fails the
/// order for good — putting the right key back does not bring it back.
#[tokio::test]
async fn a_php_panel_gives_up_on_an_order_whose_status_is_an_error() {
    let Some((env, key, panel)) = start().await else {
        return;
    };
    let other = env.client("another", "10", "default").await;
    let o = panel
        .order("1", "https://i.com/p?sim-fate=pending", "1000", &[])
        .await;
    let polled = panel.run(&["sync"]).await;
    assert_eq!(polled["polled"], serde_json::json!([ours(&o).to_string()]));
    assert_eq!(panel.local(1).await["status"], "Pending");
    panel.run(&["provider", &env.url(), &other]).await;
    panel.run(&["sync"]).await;
    let failed = panel.local(1).await;
    assert_eq!(
        (&failed["status"], &failed["note"]),
        (&"Fail".into(), &"Incorrect order ID".into())
    );

    panel.run(&["provider", &env.url(), &key]).await;
    assert_eq!(panel.run(&["sync"]).await["polled"], serde_json::json!([]));
    // Our order is still open and still holds the panel's money (1.125).
    let s = env.status(&key, ours(&o)).await;
    assert_eq!(s["status"], "Pending");
    assert_eq!(env.balance(&key).await, dec("8.875"));
}
