//! The operator's web console as a browser uses it (docs/console.md): pages and forms over
//! the admin listener, a session cookie kept between requests, checked against the store and
//! the admin API.

mod common;

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use common::gw::{ALPHA_KEY, Env, Options, dec};
use common::{Http, Reply};
use http_body_util::Full;
use panelgate::store::admin::Role;
use panelgate::store::{Attention, OrderState};
use rust_decimal::Decimal;
use scraper::{Html, Selector};
use serde_json::json;

const ADMIN: &str = "admin:\n  listen: \"127.0.0.1:0\"\n";

/// What the console needs of a browser: it keeps the cookies it is given (and drops those
/// it is told to), sends forms, and shows where a redirect points without following it.
struct Browser {
    base: String,
    http: Http,
    cookies: Mutex<HashMap<String, String>>,
}

/// A reply, with its HTML parsed.
struct Page {
    reply: Reply,
    doc: Html,
}

impl Page {
    fn status(&self) -> u16 {
        self.reply.status
    }

    fn all(&self, css: &str) -> Vec<scraper::ElementRef<'_>> {
        let selector = Selector::parse(css).unwrap_or_else(|e| panic!("{css}: {e}"));
        self.doc.select(&selector).collect()
    }

    fn has(&self, css: &str) -> bool {
        !self.all(css).is_empty()
    }

    /// The text of the one element `css` selects.
    fn text(&self, css: &str) -> String {
        let found = self.all(css);
        assert_eq!(found.len(), 1, "{css} in:\n{}", self.reply.text());
        found[0].text().collect::<String>().trim().to_owned()
    }

    fn attr(&self, css: &str, name: &str) -> String {
        let found = self.all(css);
        let first = found.first().unwrap_or_else(|| panic!("no {css}"));
        first.value().attr(name).unwrap_or_default().to_owned()
    }

    /// The text of `cells` in each row `rows` selects, trimmed.
    fn rows(&self, rows: &str, cells: &[&str]) -> Vec<Vec<String>> {
        let text = |r: &scraper::ElementRef<'_>, css: &str| {
            let s = Selector::parse(css).unwrap_or_else(|e| panic!("{css}: {e}"));
            let cell = r.select(&s).next().unwrap_or_else(|| panic!("no {css}"));
            cell.text().collect::<String>().trim().to_owned()
        };
        let all = self.all(rows);
        all.iter()
            .map(|r| cells.iter().map(|c| text(r, c)).collect())
            .collect()
    }

    /// The ids of the forms that POST.
    fn post_forms(&self) -> Vec<String> {
        let forms = self.all("form[method=post]");
        forms
            .iter()
            .map(|f| f.value().id().unwrap_or("").to_owned())
            .collect()
    }

    fn csrf(&self) -> String {
        self.attr("form#logout input[name=csrf]", "value")
    }

    fn header(&self, name: &str) -> String {
        let value = self.reply.headers.get(name);
        value.map_or("", |v| v.to_str().unwrap()).to_owned()
    }

    fn set_cookies(&self) -> Vec<String> {
        let all = self.reply.headers.get_all("set-cookie");
        all.iter().map(|v| v.to_str().unwrap().to_owned()).collect()
    }
}

impl Browser {
    fn new(env: &Env) -> Browser {
        let addr = env.gw().admin_addr.expect("the admin listener runs");
        Browser {
            base: format!("http://{addr}"),
            http: Http::default(),
            cookies: Mutex::new(HashMap::new()),
        }
    }

    async fn send(&self, method: &str, path: &str, body: String, headers: &[(&str, &str)]) -> Page {
        let cookie: Vec<String> = {
            let jar = self.cookies.lock().unwrap();
            jar.iter().map(|(k, v)| format!("{k}={v}")).collect()
        };
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded");
        if !cookie.is_empty() {
            req = req.header("cookie", cookie.join("; "));
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let reply = self
            .http
            .send(req.body(Full::new(Bytes::from(body))).unwrap())
            .await;
        let page = Page {
            doc: Html::parse_document(&reply.text()),
            reply,
        };
        self.keep(&page);
        page
    }

    fn keep(&self, page: &Page) {
        let mut jar = self.cookies.lock().unwrap();
        for c in page.set_cookies() {
            let (pair, attrs) = c.split_once(';').unwrap_or((&c, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if attrs.contains("Max-Age=0") {
                jar.remove(name);
            } else {
                jar.insert(name.to_owned(), value.to_owned());
            }
        }
    }

    async fn get(&self, path: &str) -> Page {
        self.send("GET", path, String::new(), &[]).await
    }

    async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        self.send("POST", path, common::encode(fields), &[]).await
    }

    /// Submits the form `form_id` of `page` with `fields` (and the form's hidden ones).
    async fn submit(&self, page: &Page, form_id: &str, fields: &[(&str, &str)]) -> Page {
        let form = format!("form#{form_id}");
        assert!(page.has(&form), "no {form} in:\n{}", page.reply.text());
        let action = page.attr(&form, "action");
        let mut all: Vec<(String, String)> = page
            .all(&format!("{form} input[type=hidden]"))
            .iter()
            .map(|i| {
                let v = i.value();
                (
                    v.attr("name").unwrap().to_owned(),
                    v.attr("value").unwrap().to_owned(),
                )
            })
            .collect();
        all.extend(
            fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let pairs: Vec<(&str, &str)> = all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.post(&action, &pairs).await
    }

    /// `submit`, then the page its redirect points to.
    async fn submit_and_follow(&self, page: &Page, form_id: &str, fields: &[(&str, &str)]) -> Page {
        let done = self.submit(page, form_id, fields).await;
        assert_eq!(done.status(), 303, "{}", done.reply.text());
        self.get(&done.header("location")).await
    }

    /// What the JSON API answers (`body`: POSTed, none: a GET) as admin token `token`.
    async fn api(&self, token: &str, path: &str, body: Option<serde_json::Value>) -> Reply {
        let req = http::Request::builder()
            .method(if body.is_some() { "POST" } else { "GET" })
            .uri(format!("{}/admin/api/v1{path}", self.base))
            .header("authorization", format!("Bearer {token}"));
        let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        self.http.send(req.body(Full::new(body)).unwrap()).await
    }

    async fn log_in(&self, token: &str) -> Page {
        let r = self.post("/admin/login", &[("token", token)]).await;
        assert_eq!(r.status(), 303, "{}", r.reply.text());
        self.get("/admin/").await
    }
}

async fn started() -> (Env, String) {
    let env = Env::start(Options {
        extra: ADMIN,
        ..Options::default()
    })
    .await;
    let write = env.admin_token("ops-desk", Role::Write).await;
    (env, write)
}

/// A browser logged in with a new write token.
async fn logged_in() -> (Env, Browser) {
    let (env, write) = started().await;
    let b = Browser::new(&env);
    b.log_in(&write).await;
    (env, b)
}

#[tokio::test]
async fn logging_in_sets_a_strict_http_only_cookie_and_bad_tokens_are_refused_then_capped() {
    let (env, write) = started().await;
    let b = Browser::new(&env);
    for path in [
        "/admin/",
        "/admin/customers",
        "/admin/orders/1",
        "/admin/audit",
    ] {
        let r = b.get(path).await;
        assert_eq!(
            (r.status(), r.header("location")),
            (303, "/admin/login".into())
        );
    }
    assert_eq!(b.get("/admin").await.header("location"), "/admin/");
    let login = b.get("/admin/login").await;
    assert_eq!(login.status(), 200);
    assert_eq!(login.attr("form#login", "action"), "/admin/login");
    assert!(login.has("form#login input[name=token][type=password]"));
    assert!(login.has("form#login button[type=submit]"));
    let bad = b.post("/admin/login", &[("token", "not-a-token")]).await;
    assert_eq!(bad.status(), 401);
    assert!(bad.has("form#login") && !bad.text(".error").is_empty());
    assert!(bad.set_cookies().is_empty());
    let good = b.post("/admin/login", &[("token", &write)]).await;
    assert_eq!(
        (good.status(), good.header("location")),
        (303, "/admin/".into())
    );
    let cookie = good.set_cookies().pop().unwrap();
    assert!(cookie.starts_with("panelgate_console="), "{cookie}");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/admin"] {
        assert!(cookie.split("; ").any(|a| a == attr), "{attr} in {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    assert!(!cookie.contains(&write));
    let home = b.get("/admin/").await;
    assert_eq!(home.status(), 200);
    assert_eq!(home.text("#whoami"), "ops-desk (write)");
    assert_eq!(home.header("cache-control"), "no-store");
    assert_eq!(home.header("x-frame-options"), "DENY");
    assert_eq!(home.header("referrer-policy"), "same-origin");
    let csp = home.header("content-security-policy");
    assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"));
    // One stylesheet, from here, cached long; no script, nothing from elsewhere.
    let css = home.attr("link[rel=stylesheet]", "href");
    assert!(css.starts_with("/admin/assets/console.css"));
    assert!(!home.has("script") && !home.reply.text().contains("://"));
    let sheet = b.get(&css).await;
    assert_eq!(sheet.status(), 200);
    assert!(sheet.header("content-type").starts_with("text/css"));
    assert!(sheet.header("cache-control").contains("max-age=31536000"));
    // Failed logins count against the address like bad API tokens.
    let stranger = Browser::new(&env);
    let mut last = 0;
    for _ in 0..25 {
        last = stranger
            .post("/admin/login", &[("token", "guess")])
            .await
            .status();
    }
    assert_eq!(last, 429);
    let api = env
        .http
        .get(&format!("{}/admin/api/v1/customers", b.base))
        .await;
    assert_eq!(api.status, 429, "the API shares the cap");
}

#[tokio::test]
async fn over_tls_the_session_cookie_is_secure() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = common::gw::Scratch::new("console-tls");
    let certs = common::SelfSigned::new(&dir);
    let extra = format!("{ADMIN}{}", certs.section(2));
    let env = Env::start(Options {
        extra: Box::leak(extra.into_boxed_str()),
        ..Options::default()
    })
    .await;
    let write = env.admin_token("ops-desk", Role::Write).await;
    let mut tls = certs.connect(env.gw().admin_addr.unwrap()).await;
    let body = common::encode(&[("token", &write)]);
    let request = format!(
        "POST /admin/login HTTP/1.1\r\nHost: localhost\r\nOrigin: https://localhost\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    tls.read_to_end(&mut reply).await.unwrap();
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 303"), "{reply}");
    let cookie = reply
        .lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with("set-cookie: panelgate_console=")
        })
        .unwrap_or_else(|| panic!("no session cookie: {reply}"));
    assert!(cookie.split("; ").any(|a| a.trim() == "Secure"), "{cookie}");
}

/// Every page a write session sees, with the ids the contract names.
#[tokio::test]
async fn every_page_renders_with_the_contract_ids() {
    let (env, b) = logged_in().await;
    let key = env.client("ann", "100", "default").await;
    let order = env
        .add(
            &key,
            "1",
            &[("link", "https://i.com/a"), ("quantity", "100")],
        )
        .await;
    let nav = [
        "a#nav-overview[href='/admin/']",
        "a#nav-customers[href='/admin/customers']",
        "a#nav-orders[href='/admin/orders']",
        "a#nav-upstreams",
        "a#nav-catalog",
        "a#nav-audit",
        "#whoami",
        "form#logout[method=post][action='/admin/logout'] input[name=csrf]",
    ];
    let pages: [(&str, &[&str]); 8] = [
        (
            "/admin/",
            &[
                "table#orders-by-state tr[data-state=placed] td.count",
                "#money #revenue-today",
                "#money #cost-today",
                "#money #margin-today",
                "#money #revenue-30d",
                "#money #cost-30d",
                "#money #margin-30d",
                "svg#chart",
                "#upstream-health li[data-upstream=alpha].healthy",
                "#attention",
            ],
        ),
        (
            "/admin/customers",
            &[
                "form#search[method=get] input[name=q]",
                "form#create-customer input[name=name]",
                "form#create-customer input[name=balance]",
                "form#create-customer input[name=group]",
                "form#create-customer input[name=credit_limit]",
                "table#customers tr[data-customer=ann] a.customer-link[href='/admin/customers/ann']",
                "table#customers tr[data-customer=ann] td.balance",
            ],
        ),
        (
            "/admin/customers/ann",
            &[
                "#customer-name",
                "#balance",
                "#group",
                "#enabled",
                "form#credit input[name=amount]",
                "form#credit input[name=note]",
                "form#debit input[name=amount]",
                "form#debit input[name=note]",
                "form#disable",
                "form#rotate-key",
                "table#ledger tr[data-entry] td.kind",
                "table#ledger tr[data-entry] td.amount",
                "table#ledger tr[data-entry] td.balance",
            ],
        ),
        (
            "/admin/orders",
            &[
                "form#order-filters[method=get] [name=state]",
                "form#order-filters [name=customer]",
                "form#order-filters [name=upstream]",
                "form#order-filters [name=service]",
                "form#order-filters [name=since]",
                "form#order-filters [name=until]",
                "table#orders tr[data-order] td.state",
                "table#orders tr[data-order] td.customer",
                "table#orders tr[data-order] td.charge",
                "table#orders tr[data-order] a.order-link",
            ],
        ),
        (
            "/admin/orders/ORDER",
            &[
                "#order-id",
                "#order-state",
                "#upstream-order",
                "#charge",
                "#cost",
                "#refunded",
                "table#history",
            ],
        ),
        (
            "/admin/upstreams",
            &[
                "table#upstreams tr[data-upstream=alpha] td.health",
                "table#upstreams tr[data-upstream=alpha] td.breaker",
                "table#upstreams tr[data-upstream=alpha] td.balance",
                "table#upstreams tr[data-upstream=alpha] td.open-orders",
                "table#upstreams tr[data-upstream=alpha] td.last-error",
            ],
        ),
        ("/admin/catalog", &["table#catalog tr[data-service='1']"]),
        (
            "/admin/audit",
            &[
                "table#audit tr[data-audit] td.actor",
                "table#audit tr[data-audit] td.action",
                "table#audit tr[data-audit] td.target",
                "table#audit tr[data-audit] td.outcome",
            ],
        ),
    ];
    for (path, ids) in pages {
        let path = path.replace("ORDER", &order.to_string());
        let page = b.get(&path).await;
        assert_eq!(page.status(), 200, "{path}: {}", page.reply.text());
        for css in nav.iter().chain(ids) {
            assert!(page.has(css), "{path} has no {css}:\n{}", page.reply.text());
        }
    }
    let shown = b.get(&format!("/admin/orders/{order}")).await;
    assert_eq!(shown.text("#order-id"), order.to_string());
    assert_eq!(
        shown.text("#order-state"),
        env.order(order).await.state.as_str()
    );
    let none = b.get("/admin/customers/nobody").await;
    assert_eq!(none.status(), 404);
    assert!(none.has("nav") && !none.text(".error").is_empty());
    assert_eq!(b.get("/admin/nothing").await.status(), 404);
    assert_eq!(b.get("/admin/orders?state=lost").await.status(), 400);
    // Empty filter fields mean "any", as the form sends them.
    let filtered = b
        .get("/admin/orders?state=&customer=ann&upstream=&service=&since=&until=")
        .await;
    assert_eq!(filtered.all("table#orders tr[data-order]").len(), 1);
}

fn balance_of(page: &Page) -> Decimal {
    page.text("#balance").parse().unwrap()
}

#[tokio::test]
async fn customers_are_created_credited_debited_disabled_and_rekeyed_through_forms() {
    let (env, b) = logged_in().await;
    let list = b.get("/admin/customers").await;
    let made = b
        .submit(
            &list,
            "create-customer",
            &[
                ("name", "bea"),
                ("balance", "12.5"),
                ("group", "vip"),
                ("credit_limit", ""),
            ],
        )
        .await;
    assert_eq!(made.status(), 200, "{}", made.reply.text());
    assert!(!made.text(".flash").is_empty());
    let key = made.text("code#new-key");
    assert_eq!(env.balance(&key).await, dec("12.5"));
    assert_eq!(made.text("#customer-name"), "bea");
    assert_eq!(made.text("#group"), "vip");
    // Shown once: the page read again does not hold it.
    let page = b.get("/admin/customers/bea").await;
    assert!(!page.has("code#new-key") && !page.reply.text().contains(&key));

    let page = b
        .submit_and_follow(&page, "credit", &[("amount", "7.5"), ("note", "bank 1234")])
        .await;
    assert!(
        page.text(".flash").contains("20.00000"),
        "{}",
        page.text(".flash")
    );
    assert_eq!(balance_of(&page), dec("20"));
    // The message is shown once.
    assert!(!b.get("/admin/customers/bea").await.has(".flash"));
    let page = b
        .submit_and_follow(&page, "debit", &[("amount", "2.25"), ("note", "")])
        .await;
    assert_eq!(balance_of(&page), dec("17.75"));
    let c = env.store().customer_by_name("bea").await.unwrap().unwrap();
    let ledger = env.store().ledger(c.id).await.unwrap();
    let entries: Vec<(&str, i64, Option<&str>)> = ledger
        .iter()
        .map(|e| (e.kind.as_str(), e.amount, e.note.as_deref()))
        .collect();
    assert_eq!(
        entries,
        [
            ("credit", 1_250_000, Some("opening balance")),
            ("credit", 750_000, Some("bank 1234")),
            ("debit", -225_000, None),
        ]
    );
    // Newest first, with the balance after each.
    let rows = page.rows("table#ledger tr[data-entry]", &["td.kind", "td.balance"]);
    let expected = [
        ["debit", "17.75000"],
        ["credit", "20.00000"],
        ["credit", "12.50000"],
    ];
    assert_eq!(rows, expected);

    // A refusal shows the page again with the API's own words and status.
    let admin = env.admin_token("script", Role::Write).await;
    for (form, amount, status) in [
        ("debit", "100", 409),
        ("credit", "1e3", 400),
        ("credit", "0", 400),
    ] {
        let refused = b
            .submit(&page, form, &[("amount", amount), ("note", "")])
            .await;
        let said = b
            .api(
                &admin,
                &format!("/customers/bea/{form}"),
                Some(json!({"amount": amount})),
            )
            .await;
        assert_eq!((refused.status(), said.status), (status, status));
        assert_eq!(refused.text(".error"), said.error());
        assert!(refused.has("#balance"), "the page is shown again");
    }
    assert_eq!(
        env.store().ledger(c.id).await.unwrap().len(),
        3,
        "nothing written"
    );

    let page = b.submit_and_follow(&page, "disable", &[]).await;
    assert_eq!(page.text("#enabled"), "no");
    assert!(page.has("form#enable") && !page.has("form#disable"));
    assert!(
        env.call(&key, &[("action", "balance")])
            .await
            .get("error")
            .is_some()
    );
    let page = b.submit_and_follow(&page, "enable", &[]).await;
    assert_eq!(page.text("#enabled"), "yes");
    let rotated = b.submit(&page, "rotate-key", &[]).await;
    assert_eq!(rotated.status(), 200);
    let new_key = rotated.text("code#new-key");
    assert_ne!(new_key, key);
    assert_eq!(env.balance(&new_key).await, dec("17.75"));
    assert!(
        env.call(&key, &[("action", "balance")])
            .await
            .get("error")
            .is_some()
    );
    let page = b
        .submit_and_follow(&rotated, "set-credit-limit", &[("credit_limit", "5")])
        .await;
    assert_eq!(page.text("#balance"), "17.75000");
    let page = b
        .submit_and_follow(&page, "set-group", &[("group", "default")])
        .await;
    assert_eq!(page.text("#group"), "default");
    let c = env.store().customer_by_name("bea").await.unwrap().unwrap();
    assert_eq!((c.credit_limit, c.enabled), (500_000, true));
    // The list shows it, and finds it.
    let list = b.get("/admin/customers?q=be").await;
    assert_eq!(list.text("tr[data-customer=bea] td.balance"), "17.75000");
    assert!(
        b.get("/admin/customers?q=zz")
            .await
            .all("table#customers tr[data-customer]")
            .is_empty()
    );
    env.assert_ledgers_balance().await;
}

#[tokio::test]
async fn posts_without_this_sessions_csrf_token_or_from_another_origin_change_nothing() {
    let (env, b) = logged_in().await;
    env.client("ann", "10", "default").await;
    let page = b.get("/admin/customers/ann").await;
    let csrf = page.csrf();
    let credit = "/admin/customers/ann/credit";
    let attempts = [
        b.post(credit, &[("amount", "5")]).await,
        b.post(credit, &[("amount", "5"), ("csrf", "0123abcd")])
            .await,
        b.post(credit, &[("amount", "5"), ("csrf", "")]).await,
    ];
    for r in &attempts {
        assert_eq!(r.status(), 403, "{}", r.reply.text());
        assert!(!r.text(".error").is_empty());
    }
    let body = common::encode(&[("amount", "5"), ("csrf", &csrf)]);
    let foreign = b
        .send(
            "POST",
            credit,
            body.clone(),
            &[("origin", "https://evil.example")],
        )
        .await;
    assert_eq!(foreign.status(), 403);
    assert!(!foreign.text(".error").is_empty());
    let null = b
        .send("POST", credit, body.clone(), &[("origin", "null")])
        .await;
    assert_eq!(null.status(), 403);
    let c = env.store().customer_by_name("ann").await.unwrap().unwrap();
    assert_eq!(c.balance, 1_000_000, "nothing changed");
    // Another session's token is not this one's.
    let (other_env_token, other) = (
        env.admin_token("second", Role::Write).await,
        Browser::new(&env),
    );
    other.log_in(&other_env_token).await;
    let theirs = other.get("/admin/").await.csrf();
    assert_ne!(theirs, csrf);
    assert_eq!(
        b.post(credit, &[("amount", "5"), ("csrf", &theirs)])
            .await
            .status(),
        403
    );
    // This listener's own origin, or none, goes through.
    let own = b.base.clone();
    let done = b.send("POST", credit, body, &[("origin", &own)]).await;
    assert_eq!(done.status(), 303, "{}", done.reply.text());
    let c = env.store().customer_by_name("ann").await.unwrap().unwrap();
    assert_eq!(c.balance, 1_500_000);
    // A login from another site is refused too.
    let forged = Browser::new(&env)
        .send(
            "POST",
            "/admin/login",
            common::encode(&[("token", &other_env_token)]),
            &[("origin", "https://evil.example")],
        )
        .await;
    assert_eq!((forged.status(), forged.set_cookies().len()), (403, 0));
}

#[tokio::test]
async fn a_read_session_sees_every_page_but_no_form_and_its_posts_change_nothing() {
    let (env, _) = started().await;
    env.client("ann", "10", "default").await;
    let read = env.admin_token("viewer", Role::Read).await;
    let b = Browser::new(&env);
    let home = b.log_in(&read).await;
    assert_eq!(home.text("#whoami"), "viewer (read)");
    for path in [
        "/admin/",
        "/admin/customers",
        "/admin/customers/ann",
        "/admin/orders",
        "/admin/upstreams",
        "/admin/catalog",
        "/admin/audit",
    ] {
        let page = b.get(path).await;
        assert_eq!(page.status(), 200, "{path}");
        // Logging out is the one form.
        assert_eq!(page.post_forms(), ["logout"], "{path}");
    }
    let csrf = b.get("/admin/customers/ann").await.csrf();
    for (path, fields) in [
        ("/admin/customers/ann/credit", vec![("amount", "5")]),
        ("/admin/customers/ann/disable", vec![]),
        ("/admin/customers/ann/rotate-key", vec![]),
        ("/admin/customers", vec![("name", "eve")]),
    ] {
        let mut fields = fields;
        fields.push(("csrf", &csrf));
        let r = b.post(path, &fields).await;
        assert_eq!(r.status(), 403, "{path}");
        assert!(!r.text(".error").is_empty());
    }
    let c = env.store().customer_by_name("ann").await.unwrap().unwrap();
    assert_eq!((c.balance, c.enabled), (1_000_000, true));
    assert!(env.store().customer_by_name("eve").await.unwrap().is_none());
}

#[tokio::test]
async fn logging_out_or_revoking_the_token_ends_the_session() {
    let (env, write) = started().await;
    let b = Browser::new(&env);
    let home = b.log_in(&write).await;
    let stolen = b.cookies.lock().unwrap().clone();
    let out = b.submit(&home, "logout", &[]).await;
    assert_eq!(
        (out.status(), out.header("location")),
        (303, "/admin/login".into())
    );
    assert!(
        out.set_cookies()
            .iter()
            .any(|c| c.starts_with("panelgate_console=;") && c.contains("Max-Age=0"))
    );
    assert_eq!(b.get("/admin/").await.status(), 303);
    // The old cookie, kept by someone, opens nothing either.
    *b.cookies.lock().unwrap() = stolen;
    assert_eq!(b.get("/admin/").await.status(), 303);

    let ops = env
        .cli(&["admin", "token", "add", "temp", "--role", "write"])
        .await;
    let b = Browser::new(&env);
    assert_eq!(b.log_in(ops.lines().last().unwrap()).await.status(), 200);
    env.cli(&["admin", "token", "revoke", "temp"]).await;
    let r = b.get("/admin/customers").await;
    assert_eq!(
        (r.status(), r.header("location")),
        (303, "/admin/login".into())
    );
}

#[tokio::test]
async fn unknown_orders_are_resolved_through_the_console_as_placed_or_not_placed() {
    let (env, b) = logged_in().await;
    let key = env.client("ann", "100", "default").await;
    env.set_faults(
        &env.alpha,
        ALPHA_KEY,
        json!({"hangup": 1, "actions": ["add"]}),
    )
    .await;
    let link = [("link", "https://i.com/b"), ("quantity", "100")];
    let (first, second) = (
        env.add(&key, "1", &link).await,
        env.add(&key, "1", &link).await,
    );
    env.set_faults(&env.alpha, ALPHA_KEY, json!({})).await;
    let home = b.get("/admin/").await;
    for id in [first, second] {
        let href = format!("/admin/orders/{id}");
        assert!(home.has(&format!(
            "#attention tr[data-order='{id}'] a[href='{href}']"
        )));
    }
    let page = b.get(&format!("/admin/orders/{first}")).await;
    assert_eq!(page.text("#order-state"), "unknown");
    let empty = b
        .submit(&page, "resolve-placed", &[("upstream_order", " ")])
        .await;
    assert_eq!(empty.status(), 400);
    // The upstream took both; its journal says as which orders.
    let upstream = env.journal("alpha")[0]["order"]
        .as_u64()
        .unwrap()
        .to_string();
    let page = b
        .submit_and_follow(&page, "resolve-placed", &[("upstream_order", &upstream)])
        .await;
    assert_eq!(page.text("#order-state"), "placed");
    assert_eq!(page.text("#upstream-order"), upstream);
    assert!(!page.text(".flash").is_empty());
    assert!(!page.has("form#resolve-placed"));
    let page = b.get(&format!("/admin/orders/{second}")).await;
    let page = b.submit_and_follow(&page, "resolve-not-placed", &[]).await;
    assert_eq!(page.text("#order-state"), "final");
    assert_eq!(page.text("#refunded"), page.text("#charge"));
    assert_eq!(env.order(second).await.state, OrderState::Final);
    // Twice is refused with the API's conflict.
    let again = b
        .post(
            &format!("/admin/orders/{second}/resolve"),
            &[("not_placed", "true"), ("csrf", &page.csrf())],
        )
        .await;
    assert_eq!(again.status(), 409);
    env.assert_ledgers_balance().await;
}

#[tokio::test]
async fn customer_text_is_escaped_on_every_page_that_shows_it() {
    let (env, b) = logged_in().await;
    let name = "<script>alert(1)</script>";
    let link = "https://i.com/\"'><img src=x onerror=alert(1)>";
    let list = b.get("/admin/customers").await;
    let made = b
        .submit(
            &list,
            "create-customer",
            &[("name", name), ("balance", "50")],
        )
        .await;
    assert_eq!(made.status(), 200, "{}", made.reply.text());
    let key = made.text("code#new-key");
    env.set_faults(
        &env.alpha,
        ALPHA_KEY,
        json!({"hangup": 1, "actions": ["add"]}),
    )
    .await;
    let order = env
        .add(&key, "1", &[("link", link), ("quantity", "100")])
        .await;
    let escaped_name = "&lt;script&gt;alert(1)&lt;/script&gt;";
    let escaped_link = "https://i.com/&quot;'&gt;&lt;img src=x onerror=alert(1)&gt;";
    let name_pages = [
        "/admin/customers".to_owned(),
        made.attr("form#credit", "action")
            .trim_end_matches("/credit")
            .to_owned(),
        "/admin/orders".to_owned(),
        format!("/admin/orders/{order}"),
        "/admin/".to_owned(),
        "/admin/audit".to_owned(),
    ];
    for path in &name_pages {
        let page = b.get(path).await;
        let html = page.reply.text();
        assert_eq!(page.status(), 200, "{path}");
        assert!(
            !html.contains(name) && !html.contains("<img"),
            "{path}:\n{html}"
        );
        assert!(
            html.contains(escaped_name),
            "{path} shows the name escaped:\n{html}"
        );
        assert!(!page.has("script") && !page.has("img"));
    }
    let shown = b.get(&format!("/admin/orders/{order}")).await;
    assert!(
        shown.reply.text().contains(escaped_link),
        "{}",
        shown.reply.text()
    );
    assert_eq!(shown.text("#link"), link);
    assert_eq!(made.text("#customer-name"), name);
    // The page of the name, reached by its link, is the customer's.
    let href = b
        .get("/admin/customers")
        .await
        .attr("a.customer-link", "href");
    assert_eq!(b.get(&href).await.text("#customer-name"), name);
}

#[tokio::test]
async fn the_overview_sums_money_as_done_by_hand_and_agrees_with_the_api() {
    let (env, b) = logged_in().await;
    let key = env.client("ann", "1000", "default").await;
    let mut ids = Vec::new();
    for q in ["100", "250", "1000"] {
        ids.push(
            env.add(&key, "1", &[("link", "https://i.com/a"), ("quantity", q)])
                .await,
        );
    }
    env.set_faults(
        &env.alpha,
        ALPHA_KEY,
        json!({"error": 1, "error_text": "Not enough funds on balance", "actions": ["add"]}),
    )
    .await;
    let rejected = env
        .call(
            &key,
            &[
                ("action", "add"),
                ("service", "1"),
                ("link", "https://i.com/z"),
                ("quantity", "100"),
            ],
        )
        .await;
    assert!(rejected.get("error").is_some(), "{rejected}");
    env.set_faults(&env.alpha, ALPHA_KEY, json!({})).await;
    let (mut revenue, mut cost) = (0i64, 0i64);
    for id in &ids {
        let o = env
            .wait_order(*id, |o| o.state == OrderState::Final && o.cost.is_some())
            .await;
        revenue += o.charge - o.refunded;
        cost += o.cost.unwrap();
    }
    let orders = env.orders().await;
    assert!(
        orders.iter().any(|o| o.state == OrderState::Rejected),
        "the rejected order is stored and counts nothing"
    );
    let as_text = |units: i64| format!("{:.5}", Decimal::new(units, 5));
    let home = b.get("/admin/").await;
    assert_eq!(home.text("#revenue-30d"), as_text(revenue));
    assert_eq!(home.text("#cost-30d"), as_text(cost));
    assert_eq!(home.text("#margin-30d"), as_text(revenue - cost));
    let day = |ms: i64| ms.div_euclid(86_400_000);
    let today = day(panelgate::clock::now_millis());
    if orders.iter().all(|o| day(o.created_at) == today) {
        assert_eq!(home.text("#revenue-today"), as_text(revenue));
        assert_eq!(home.text("#margin-today"), as_text(revenue - cost));
    }
    assert_eq!(home.text("tr[data-state=final] td.count"), "3");
    assert_eq!(home.text("tr[data-state=rejected] td.count"), "1");
    assert_eq!(home.all("svg#chart rect").len(), 30);
    // The API's overview says the same.
    let admin = env.admin_token("script", Role::Read).await;
    let api = b.api(&admin, "/overview", None).await.json();
    assert_eq!(api["last_30_days"]["revenue"], as_text(revenue));
    assert_eq!(api["last_30_days"]["margin"], as_text(revenue - cost));
    assert_eq!(api["days"].as_array().unwrap().len(), 30);
}

#[tokio::test]
async fn the_audit_page_lists_console_writes_under_the_tokens_name() {
    let (env, b) = logged_in().await;
    let list = b.get("/admin/customers").await;
    let made = b.submit(&list, "create-customer", &[("name", "cy")]).await;
    let page = b
        .submit_and_follow(&made, "credit", &[("amount", "3"), ("note", "")])
        .await;
    b.submit(&page, "debit", &[("amount", "9"), ("note", "")])
        .await;
    let audit = b.get("/admin/audit").await;
    let cells = ["td.actor", "td.action", "td.target", "td.outcome"];
    assert_eq!(
        audit.rows("table#audit tr[data-audit]", &cells),
        [
            ["ops-desk", "client.debit", "cy", "insufficient_funds"],
            ["ops-desk", "client.credit", "cy", "ok"],
            ["ops-desk", "client.add", "cy", "ok"],
            ["cli", "token.add", "ops-desk", "ok"],
        ]
    );
    assert!(!audit.has("a#next-page"));
    assert!(!audit.reply.text().contains(&made.text("code#new-key")));
    drop(env);
}

/// The order of unknown refund (an order's page): what its upstream's Partial left the
/// operator to decide.
async fn partial_without_remains(env: &Env, key: &str) -> u64 {
    let link = "https://i.com/a?sim-fate=partial&sim-remains=unknown";
    let id = env
        .add(key, "1", &[("link", link), ("quantity", "1000")])
        .await;
    let o = env.wait_final(id).await;
    assert_eq!(o.attention, Some(Attention::PartialWithoutRemains));
    id
}

#[tokio::test]
async fn an_order_without_an_automatic_refund_is_settled_through_its_form_once() {
    let (env, b) = logged_in().await;
    let key = env.client("ann", "100", "default").await;
    let id = partial_without_remains(&env, &key).await;
    let charged = env.balance(&key).await;
    let page = b.get(&format!("/admin/orders/{id}")).await;
    assert_eq!(page.text("#attention"), "partial_without_remains");
    assert_eq!(page.post_forms(), ["logout", "settle"]);
    // Refused in the API's words, with its status, and nothing changes.
    let admin = env.admin_token("script", Role::Write).await;
    let path = format!("/orders/{id}/settle");
    for (refund, note) in [("1000", "ops: all of it"), ("0.5", " "), ("-1", "ops")] {
        let refused = b
            .submit(&page, "settle", &[("refund", refund), ("note", note)])
            .await;
        let body = json!({"refund": refund, "note": note});
        let said = b.api(&admin, &path, Some(body)).await;
        assert_eq!((refused.status(), said.status), (400, 400), "{refund}");
        assert_eq!(refused.text(".error"), said.error());
        assert!(refused.has("form#settle"), "the page is shown again");
    }
    assert_eq!(env.balance(&key).await, charged);

    let note = "ops: half was delivered";
    let page = b
        .submit_and_follow(&page, "settle", &[("refund", "0.5"), ("note", note)])
        .await;
    assert!(
        page.text(".flash").contains("settled"),
        "{}",
        page.text(".flash")
    );
    assert_eq!(page.text("#attention"), "");
    assert_eq!(page.post_forms(), ["logout"]);
    assert_eq!(env.balance(&key).await, charged + dec("0.5"));
    let notes = page.rows("table#history tr[data-entry]", &["td.kind", "td.note"]);
    let (kind, said) = (&notes[notes.len() - 1][0], &notes[notes.len() - 1][1]);
    assert!(kind == "refund" && said.contains(note), "{notes:?}");
    // Settled once: the form sent again is the API's conflict.
    let again = b
        .post(
            &format!("/admin/orders/{id}/settle"),
            &[("refund", "0.5"), ("note", note), ("csrf", &page.csrf())],
        )
        .await;
    assert_eq!(again.status(), 409);
    assert_eq!(env.balance(&key).await, charged + dec("0.5"));
    env.assert_ledgers_balance().await;
}

#[tokio::test]
async fn a_placed_order_is_ended_with_the_upstreams_final_status_and_its_history_shown() {
    let (env, b) = logged_in().await;
    let key = env.client("ann", "100", "default").await;
    let id = env.add_held(&key, "1000").await;
    let charge = env.order(id).await.charge;
    let page = b.get(&format!("/admin/orders/{id}")).await;
    assert_eq!(page.text("#order-state"), "placed");
    assert_eq!(page.post_forms(), ["logout", "resolve-ended"]);
    let options = page.all("form#resolve-ended select[name=status] option");
    let offered: Vec<String> = options.iter().map(|o| o.text().collect()).collect();
    assert_eq!(offered, ["Completed", "Partial", "Canceled"]);
    assert!(page.text("h2 + p.muted").contains("no longer reports"));

    let admin = env.admin_token("script", Role::Write).await;
    let path = format!("/orders/{id}/resolve");
    for (fields, body) in [
        (
            [("status", "Partial"), ("remains", "")],
            json!({"status": "Partial"}),
        ),
        (
            [("status", "Pending"), ("remains", "")],
            json!({"status": "Pending"}),
        ),
    ] {
        let refused = b.submit(&page, "resolve-ended", &fields).await;
        let said = b.api(&admin, &path, Some(body)).await;
        assert_eq!((refused.status(), said.status), (400, 400));
        assert_eq!(refused.text(".error"), said.error());
    }
    let negative = [("status", "Partial"), ("remains", "-4")];
    let refused = b.submit(&page, "resolve-ended", &negative).await;
    assert_eq!(refused.status(), 400);
    assert!(refused.text(".error").starts_with("remains:"));
    assert_eq!(env.order(id).await.state, OrderState::Placed);

    let before = env.balance(&key).await;
    let ended = [("status", "Partial"), ("remains", "400")];
    let page = b.submit_and_follow(&page, "resolve-ended", &ended).await;
    assert_eq!(page.text("#order-state"), "final");
    assert_eq!(page.text("#order-status"), "Partial");
    assert!(!page.text(".flash").is_empty());
    assert_eq!(page.post_forms(), ["logout"]);
    // The remains' share of the charge comes back: 400 of 1000.
    let refund = Decimal::new(charge * 400 / 1000, 5);
    assert_eq!(env.balance(&key).await, before + refund);
    assert_eq!(page.text("#refunded").parse::<Decimal>().unwrap(), refund);

    // Every change of state or status, oldest first, as the API answers them.
    let cells = ["td.state", "td.status", "td.remains"];
    let rows = page.rows("table#status-history tbody tr", &cells);
    assert_eq!(
        rows[..2],
        [["dispatching", "Pending", ""], ["placed", "Pending", ""]]
    );
    assert_eq!(rows[rows.len() - 1], ["final", "Partial", "400"]);
    let api = b.api(&admin, &format!("/orders/{id}"), None).await.json();
    let listed: Vec<Vec<String>> = api["status_history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let remains = e["remains"].as_i64().map(|r| r.to_string());
            let text = |v: &serde_json::Value| v.as_str().unwrap().to_owned();
            vec![
                text(&e["state"]),
                text(&e["status"]),
                remains.unwrap_or_default(),
            ]
        })
        .collect();
    assert_eq!(rows, listed);
    env.assert_ledgers_balance().await;
}

#[tokio::test]
async fn a_read_session_sees_an_orders_history_but_neither_form() {
    let (env, _) = started().await;
    let key = env.client("ann", "100", "default").await;
    let settleable = partial_without_remains(&env, &key).await;
    let placed = env.add_held(&key, "100").await;
    let read = env.admin_token("viewer", Role::Read).await;
    let b = Browser::new(&env);
    b.log_in(&read).await;
    for id in [settleable, placed] {
        let page = b.get(&format!("/admin/orders/{id}")).await;
        assert_eq!(page.status(), 200);
        assert_eq!(page.post_forms(), ["logout"], "order {id}");
        assert!(page.has("table#status-history tbody tr"));
    }
    let csrf = b.get("/admin/").await.csrf();
    let settle = [("refund", "0"), ("note", "x"), ("csrf", &csrf)];
    let r = b
        .post(&format!("/admin/orders/{settleable}/settle"), &settle)
        .await;
    assert_eq!(r.status(), 403);
    let end = [("status", "Canceled"), ("csrf", &csrf)];
    let r = b
        .post(&format!("/admin/orders/{placed}/resolve"), &end)
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(env.order(placed).await.state, OrderState::Placed);
    let o = env.order(settleable).await;
    assert_eq!(o.attention, Some(Attention::PartialWithoutRemains));
}

#[tokio::test]
async fn a_long_ledger_shows_the_balance_after_each_entry_on_every_page() {
    let (env, b) = logged_in().await;
    env.client("ann", "100", "default").await;
    // Credits and debits that a running sum must get right in order.
    let amounts: Vec<i64> = (1..=60)
        .map(|i| if i % 3 == 0 { -i * 1_000 } else { i * 2_000 })
        .collect();
    for a in &amounts {
        env.store()
            .adjust_balance("ann", *a, None, 0)
            .await
            .unwrap();
    }
    let c = env.store().customer_by_name("ann").await.unwrap().unwrap();
    let ledger = env.store().ledger(c.id).await.unwrap();
    let opening = 10_000_000;
    let stored: Vec<i64> = ledger.iter().map(|e| e.amount).collect();
    assert_eq!(stored, [&[opening][..], &amounts].concat());
    // By hand: the opening balance, then each amount added in turn.
    let mut sum = 0;
    let expected: HashMap<String, String> = ledger
        .iter()
        .map(|e| {
            sum += e.amount;
            (e.id.to_string(), format!("{:.5}", Decimal::new(sum, 5)))
        })
        .collect();
    let first = b.get("/admin/customers/ann").await;
    let second = b.get(&first.attr("a#next-page", "href")).await;
    assert!(!second.has("a#next-page"));
    let shown = |page: &Page| {
        page.all("table#ledger tr[data-entry]")
            .iter()
            .map(|r| r.value().attr("data-entry").unwrap().to_owned())
            .zip(page.rows("table#ledger tr[data-entry]", &["td.balance"]))
            .map(|(id, cells)| (id, cells[0].clone()))
            .collect::<Vec<_>>()
    };
    let (first, second) = (shown(&first), shown(&second));
    assert_eq!(first.len() + second.len(), ledger.len());
    assert!(second.len() < first.len(), "page 2 holds the oldest");
    for (id, balance) in first.iter().chain(&second) {
        assert_eq!(Some(balance), expected.get(id), "entry {id}");
    }
    assert_eq!(first[0].1, format!("{:.5}", Decimal::new(sum, 5)));
}
