//! The monitoring files under deploy/ stay in step with the code: every metric the Grafana
//! dashboard and the Prometheus alerts query is one that src/metrics.rs registers (so renaming
//! a metric breaks this test, not an operator's dashboard), every panel is complete, and the
//! alerting rules pass `promtool check rules` and their unit tests (`promtool test rules`)
//! wherever promtool is installed — always in CI. And the shipped demo `config.yaml` sells
//! what a panel can import without duplicates.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    let path = repo().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

const DASHBOARD: &str = "deploy/grafana-dashboard.json";
const ALERTS: &str = "deploy/prometheus-alerts.yml";
const ALERT_TESTS: &str = "deploy/prometheus-alerts.test.yml";

/// Every `panelgate_…` metric name in a query (or any text): the prefix, then `[a-z_]+`, not
/// preceded by a character that would make it part of a longer name.
fn metric_names(text: &str) -> BTreeSet<String> {
    const PREFIX: &str = "panelgate_";
    let bytes = text.as_bytes();
    let mut names = BTreeSet::new();
    let mut from = 0;
    while let Some(i) = text[from..].find(PREFIX).map(|i| from + i) {
        let part_of_longer = i > 0 && {
            let c = bytes[i - 1];
            c.is_ascii_alphanumeric() || c == b'_' || c == b':'
        };
        let mut end = i + PREFIX.len();
        while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
            end += 1;
        }
        if !part_of_longer && end > i + PREFIX.len() {
            names.insert(text[i..end].to_owned());
        }
        from = end;
    }
    names
}

/// The metric a series name belongs to: a histogram's `_bucket`, `_sum` and `_count` series
/// are its own name plus a suffix.
fn base_name(series: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| series.strip_suffix(suffix))
        .unwrap_or(series)
}

/// Asserts that every name `used` (by `what`) is registered in src/metrics.rs.
fn assert_registered(what: &str, used: &BTreeMap<String, String>) {
    let source = read("src/metrics.rs");
    let unknown: Vec<String> = used
        .iter()
        .filter(|(name, _)| !source.contains(&format!("\"{}\"", base_name(name))))
        .map(|(name, context)| format!("{name} (in {context})"))
        .collect();
    assert!(
        unknown.is_empty(),
        "{what} uses metrics that src/metrics.rs does not register (renamed?):\n  {}",
        unknown.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------
// The dashboard
// ---------------------------------------------------------------------------------------

fn dashboard() -> Json {
    serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

/// Every panel, rows' nested (collapsed) panels included.
fn panels(dashboard: &Json) -> Vec<&Json> {
    fn walk<'a>(list: &'a Json, out: &mut Vec<&'a Json>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            if let Some(nested) = p.get("panels") {
                walk(nested, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// Every PromQL query of the dashboard (panel targets and template variables), with where it
/// is.
fn dashboard_queries(dashboard: &Json) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for p in panels(dashboard) {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = t["expr"].as_str() {
                let context = format!(
                    "panel {:?} target {}",
                    p["title"].as_str().unwrap_or("?"),
                    t["refId"].as_str().unwrap_or("?")
                );
                queries.push((context, expr.to_owned()));
            }
        }
    }
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let query = match &v["query"] {
            Json::String(s) => Some(s.as_str()),
            Json::Object(o) => o.get("query").and_then(Json::as_str),
            _ => None,
        };
        if v["type"] == "query"
            && let Some(q) = query.or(v["definition"].as_str())
        {
            let name = v["name"].as_str().unwrap_or("?");
            queries.push((format!("variable {name}"), q.to_owned()));
        }
    }
    queries
}

#[test]
fn the_dashboard_queries_only_registered_metrics() {
    let dashboard = dashboard();
    let mut used = BTreeMap::new();
    for (context, expr) in dashboard_queries(&dashboard) {
        for name in metric_names(&expr) {
            used.entry(name).or_insert(context.clone());
        }
    }
    assert!(
        used.contains_key("panelgate_request_duration_seconds_bucket")
            && used.contains_key("panelgate_orders"),
        "the dashboard's queries were not found: {used:?}"
    );
    assert_registered(DASHBOARD, &used);
}

#[test]
fn every_dashboard_panel_has_a_title_a_datasource_and_queries() {
    let dashboard = dashboard();
    assert_eq!(dashboard["title"], "panelgate");
    assert!(dashboard["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .collect();
    let panels = panels(&dashboard);
    assert!(panels.len() > 10, "{} panels only", panels.len());
    let mut ids = BTreeSet::new();
    for p in panels {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(!title.trim().is_empty(), "a panel without a title: {p}");
        assert!(
            p["id"].as_u64().is_some_and(|id| ids.insert(id)),
            "panel {title:?}: missing or duplicate id"
        );
        assert!(
            p["gridPos"]["w"]
                .as_u64()
                .is_some_and(|w| (1..=24).contains(&w)),
            "panel {title:?}: no gridPos"
        );
        // A row only groups panels: it queries nothing.
        if p["type"] == "row" {
            continue;
        }
        let datasource = &p["datasource"];
        let uid = match datasource {
            Json::String(s) => Some(s.as_str()),
            Json::Object(o) => o.get("uid").and_then(Json::as_str),
            _ => None,
        };
        let uid = uid.unwrap_or_else(|| panic!("panel {title:?} has no datasource"));
        // `${datasource}` must name a variable of the dashboard (or an import input).
        if let Some(var) = uid.strip_prefix("${").and_then(|v| v.strip_suffix('}')) {
            let input = dashboard["__inputs"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|i| i["name"] == var);
            assert!(
                variables.contains(&var) || input,
                "panel {title:?}: datasource {uid} is no variable or input of the dashboard"
            );
        }
        let targets = p["targets"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(
                !expr.trim().is_empty(),
                "panel {title:?}: a target without expr"
            );
        }
    }
}

/// The dashboard's queries are valid PromQL: with Grafana's variables replaced by values,
/// each one is a recording rule that `promtool check rules` parses.
#[test]
fn the_dashboard_queries_parse_as_promql() {
    let Some(promtool) = promtool() else { return };
    let dashboard = dashboard();
    let rules: Vec<Yaml> = dashboard_queries(&dashboard)
        .into_iter()
        .filter(|(context, _)| context.starts_with("panel"))
        .enumerate()
        .map(|(i, (_, expr))| {
            let expr = expr
                .replace("$__rate_interval", "5m")
                .replace("$__interval", "1m")
                .replace("$__range", "6h")
                .replace("$job", ".*")
                .replace("$instance", ".*")
                .replace("$upstream", ".*");
            assert!(!expr.contains('$'), "a variable left in {expr}");
            let mut rule = serde_yaml_ng::Mapping::new();
            rule.insert("record".into(), format!("dashboard:query_{i}").into());
            rule.insert("expr".into(), expr.into());
            Yaml::Mapping(rule)
        })
        .collect();
    let mut group = serde_yaml_ng::Mapping::new();
    group.insert("name".into(), "dashboard".into());
    group.insert("rules".into(), Yaml::Sequence(rules));
    let mut file = serde_yaml_ng::Mapping::new();
    file.insert("groups".into(), Yaml::Sequence(vec![Yaml::Mapping(group)]));
    let path = scratch_file("dashboard-queries.yml");
    std::fs::write(&path, serde_yaml_ng::to_string(&file).unwrap()).unwrap();
    let result = run(&promtool, &["check", "rules"], &path);
    let _ = std::fs::remove_file(&path);
    result.unwrap_or_else(|e| panic!("the dashboard's queries are not valid PromQL:\n{e}"));
}

// ---------------------------------------------------------------------------------------
// The alerts
// ---------------------------------------------------------------------------------------

fn yaml(relative: &str) -> Yaml {
    serde_yaml_ng::from_str(&read(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

fn alert_rules() -> Vec<Yaml> {
    let file = yaml(ALERTS);
    let rules: Vec<Yaml> = file["groups"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_sequence().cloned().unwrap_or_default())
        .collect();
    assert!(!rules.is_empty(), "{ALERTS} has no rules");
    rules
}

#[test]
fn the_alerts_query_only_registered_metrics() {
    let mut used = BTreeMap::new();
    for rule in alert_rules() {
        let name = rule["alert"].as_str().or(rule["record"].as_str());
        let context = format!("rule {}", name.unwrap_or("?"));
        let expr = rule["expr"].as_str().unwrap_or_default();
        assert!(!expr.trim().is_empty(), "{context} has no expr");
        for metric in metric_names(expr) {
            used.entry(metric).or_insert(context.clone());
        }
        // Annotations name metrics for the operator to look at: those must exist too.
        for (key, text) in rule["annotations"].as_mapping().into_iter().flatten() {
            let key = key.as_str().unwrap_or("?");
            for metric in metric_names(text.as_str().unwrap_or_default()) {
                used.entry(metric)
                    .or_insert(format!("{context} annotation {key}"));
            }
        }
    }
    assert!(
        used.contains_key("panelgate_orders") && used.contains_key("panelgate_upstream_healthy"),
        "the alerts' queries were not found: {used:?}"
    );
    assert_registered(ALERTS, &used);

    // The unit tests feed series of real metrics too.
    let mut fed = BTreeMap::new();
    for test in yaml(ALERT_TESTS)["tests"]
        .as_sequence()
        .into_iter()
        .flatten()
    {
        for s in test["input_series"].as_sequence().into_iter().flatten() {
            for metric in metric_names(s["series"].as_str().unwrap_or_default()) {
                fed.entry(metric).or_insert("input_series".to_owned());
            }
        }
    }
    assert_registered(ALERT_TESTS, &fed);
}

#[test]
fn every_alert_has_a_severity_a_summary_and_a_description() {
    let rules = alert_rules();
    let names: Vec<&str> = rules.iter().filter_map(|r| r["alert"].as_str()).collect();
    for required in [
        "PanelgateDown",
        "PanelgateUnknownOrders",
        "PanelgateUpstreamUnhealthy",
        "PanelgateUpstreamBalanceLow",
        "PanelgateHighErrorRatio",
        "PanelgateCatalogStale",
        "PanelgateOrdersStuck",
        "PanelgateRefundsNeedOperator",
    ] {
        assert!(names.contains(&required), "no alert {required} in {ALERTS}");
    }
    for rule in rules.iter().filter(|r| r["alert"].is_string()) {
        let name = rule["alert"].as_str().unwrap();
        let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
        assert!(
            ["critical", "warning", "info"].contains(&severity),
            "{name}: severity {severity:?}"
        );
        for annotation in ["summary", "description"] {
            assert!(
                rule["annotations"][annotation]
                    .as_str()
                    .is_some_and(|s| !s.trim().is_empty()),
                "{name} has no {annotation}"
            );
        }
    }
    let unknown = rules
        .iter()
        .find(|r| r["alert"] == "PanelgateUnknownOrders")
        .unwrap();
    let description = unknown["annotations"]["description"].as_str().unwrap();
    for command in [
        "panelgate order list --state unknown",
        "panelgate order resolve",
    ] {
        assert!(
            description.contains(command),
            "PanelgateUnknownOrders should tell the operator to run `{command}`"
        );
    }
    // One alert per family of attention reasons, each naming the listing that shows them.
    for (alert, reasons, command) in [
        (
            "PanelgateOrdersStuck",
            "stuck",
            "panelgate order list --stuck",
        ),
        (
            "PanelgateRefundsNeedOperator",
            "refund_unknown|partial_without_remains",
            "panelgate order list --attention",
        ),
    ] {
        let rule = rules.iter().find(|r| r["alert"] == alert).unwrap();
        let expr = rule["expr"].as_str().unwrap();
        assert!(
            expr.contains("panelgate_orders_attention") && expr.contains(reasons),
            "{alert}: {expr}"
        );
        let description = rule["annotations"]["description"].as_str().unwrap();
        assert!(
            description.contains(command),
            "{alert} should name `{command}`"
        );
    }
}

#[test]
fn promtool_checks_the_alerting_rules() {
    let Some(promtool) = promtool() else { return };
    run(&promtool, &["check", "rules"], &repo().join(ALERTS))
        .unwrap_or_else(|e| panic!("promtool check rules {ALERTS}:\n{e}"));
}

#[test]
fn promtool_unit_tests_of_the_alerts_pass() {
    let Some(promtool) = promtool() else { return };
    run(&promtool, &["test", "rules"], &repo().join(ALERT_TESTS))
        .unwrap_or_else(|e| panic!("promtool test rules {ALERT_TESTS}:\n{e}"));
}

// ---------------------------------------------------------------------------------------
// promtool
// ---------------------------------------------------------------------------------------

/// promtool, if it is on PATH. In CI (the `CI` variable set) it must be: the checks are not
/// skipped there.
fn promtool() -> Option<PathBuf> {
    let found = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some(PathBuf::from("promtool"));
    }
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!(
            "promtool is not on PATH, and CI is set: install it (Debian: apt-get install prometheus)"
        );
    }
    eprintln!("promtool is not on PATH: skipping the promtool checks (they run in CI)");
    None
}

/// Runs `promtool ARGS FILE`; the error is its output.
fn run(promtool: &Path, args: &[&str], file: &Path) -> Result<(), String> {
    let out = Command::new(promtool)
        .args(args)
        .arg(file)
        .output()
        .map_err(|e| format!("running promtool: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// A file path of its own for this test run.
fn scratch_file(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("panelgate-{}-{name}", std::process::id()))
}

#[test]
fn metric_names_are_found_whole() {
    let names = metric_names(
        r#"sum(rate(panelgate_requests_total{x="y"}[5m])) / histogram_quantile(0.5, panelgate_a_bucket) + my_panelgate_other + panelgate:rule"#,
    );
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_eq!(names, ["panelgate_a_bucket", "panelgate_requests_total"]);
    assert_eq!(
        base_name("panelgate_x_seconds_bucket"),
        "panelgate_x_seconds"
    );
    assert_eq!(
        base_name("panelgate_x_seconds_count"),
        "panelgate_x_seconds"
    );
    assert_eq!(base_name("panelgate_orders"), "panelgate_orders");
}

/// A panel importing the demo's catalog gets each upstream service once (an explicit entry
/// and an import rule may both name one), and every service the demo upstream sells.
#[test]
fn the_shipped_config_sells_each_upstream_service_once() {
    use panelgate::catalog::{LocalCatalog, UpstreamList};
    use panelgate::protocol::ServiceType;
    use panelgate::sim::catalog::builtin;
    use std::sync::Arc;

    let cfg = panelgate::config::load(&repo().join("config.yaml")).unwrap();
    let lists: std::collections::HashMap<String, Arc<UpstreamList>> = cfg
        .upstreams
        .iter()
        .map(|u| {
            // What `serve` starts for it: the simulator's built-in catalog.
            assert!(u.simulate.is_some(), "{} is not simulated", u.name);
            let list = UpstreamList {
                services: builtin().into_iter().map(|s| (s.service, s)).collect(),
                fetched_at: tokio::time::Instant::now(),
            };
            (u.name.clone(), Arc::new(list))
        })
        .collect();
    let catalog = LocalCatalog::build(&cfg, &lists);
    let mut sold_as: BTreeMap<String, u64> = BTreeMap::new();
    for s in catalog.services() {
        let target = format!("{}/{}", s.target.upstream, s.target.service);
        if let Some(first) = sold_as.insert(target.clone(), s.id()) {
            panic!("{target} is sold twice: as {first} and as {}", s.id());
        }
    }
    assert!(catalog.sold_twice.is_empty(), "{:?}", catalog.sold_twice);
    assert_eq!(sold_as["demo/101"], 1);
    let sellable = builtin()
        .iter()
        .filter(|s| s.kind != ServiceType::Subscriptions)
        .count();
    assert_eq!(catalog.len(), sellable);
}
