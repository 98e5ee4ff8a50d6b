//! The operator's commands (`panelgate client …`, `panelgate order …`, `check-config`),
//! as library functions so that they are tested like everything else. They talk to the store
//! directly and work while the server runs.

use std::collections::HashMap;
use std::sync::Arc;

use rust_decimal::Decimal;
use serde_json::json;

use crate::catalog::{LocalCatalog, UpstreamList};
use crate::config::{Config, DEFAULT_GROUP};
use crate::keys;
use crate::money;
use crate::protocol::Status;
use crate::store::admin::{Adjusted, Idempotency};
use crate::store::{
    Attention, AttentionFilter, Customer, Millis, Order, OrderFilter, OrderState, StatusUpdate,
    Store, StoreError, Units,
};
use crate::sync::now_ms;
use crate::upstream::Upstreams;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("no client named {0:?}")]
    NoClient(String),
    #[error("no order {0}")]
    NoOrder(i64),
    #[error("no admin token named {0:?}")]
    NoToken(String),
    #[error("no price group named {0:?} in the config")]
    NoGroup(String),
    /// The balance would go below the client's floor (`-credit_limit`).
    #[error("{0}")]
    Floor(String),
    /// The order is not in a state for this; nothing was changed.
    #[error("{0}")]
    State(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

type Result<T, E = AdminError> = std::result::Result<T, E>;

fn units(amount: Decimal, what: &str) -> Result<Units> {
    money::to_units(amount)
        .ok_or_else(|| AdminError::Invalid(format!("{what}: at most 5 decimals")))
}

/// Creates a client and returns it with its new key (shown this once, stored only hashed).
pub async fn add_client(
    store: &dyn Store,
    cfg: &Config,
    name: &str,
    balance: Decimal,
    group: &str,
    credit_limit: Decimal,
) -> Result<(Customer, String)> {
    if name.trim().is_empty() {
        return Err(AdminError::Invalid("the name must not be empty".into()));
    }
    if group != DEFAULT_GROUP && !cfg.groups.contains_key(group) {
        return Err(AdminError::NoGroup(group.into()));
    }
    if balance.is_sign_negative() || credit_limit.is_sign_negative() {
        return Err(AdminError::Invalid(
            "balance and credit limit must not be negative".into(),
        ));
    }
    let key = keys::generate().map_err(|e| AdminError::Invalid(format!("no randomness: {e}")))?;
    let customer = store
        .create_customer(
            name,
            &keys::hash(&key),
            group,
            units(credit_limit, "credit limit")?,
            units(balance, "balance")?,
            now_ms(),
        )
        .await?;
    Ok((customer, key))
}

/// Credits (positive) or debits (negative) a client's balance with a ledger entry.
pub async fn adjust(
    store: &dyn Store,
    name: &str,
    amount: Decimal,
    note: Option<&str>,
) -> Result<Customer> {
    if amount.is_zero() {
        return Err(AdminError::Invalid("the amount must not be zero".into()));
    }
    store
        .adjust_balance(name, units(amount, "amount")?, note, now_ms())
        .await
        .map_err(|e| client_error(e, name))
}

/// [`adjust`] at most once per idempotency key (see [`crate::operator`]).
pub async fn adjust_once(
    store: &dyn Store,
    name: &str,
    amount: Decimal,
    note: Option<&str>,
    key: &Idempotency,
) -> Result<Adjusted> {
    if amount.is_zero() {
        return Err(AdminError::Invalid("the amount must not be zero".into()));
    }
    let units = units(amount, "amount")?;
    store
        .adjust_balance_once(name, units, note, key, now_ms())
        .await
        .map_err(|e| client_error(e, name))
}

/// A store error on a client's row, as the operator reads it.
fn client_error(e: StoreError, name: &str) -> AdminError {
    match e {
        StoreError::NotFound => AdminError::NoClient(name.into()),
        StoreError::InsufficientFunds => {
            AdminError::Floor("that would take the balance below the client's floor".into())
        }
        other => other.into(),
    }
}

/// Moves a client to another price group (one the config names).
pub async fn set_group(store: &dyn Store, cfg: &Config, name: &str, group: &str) -> Result<()> {
    if group != DEFAULT_GROUP && !cfg.groups.contains_key(group) {
        return Err(AdminError::NoGroup(group.into()));
    }
    store
        .set_group(name, group)
        .await
        .map_err(|e| client_error(e, name))
}

/// How far below zero the client's balance may go from now on.
pub async fn set_credit_limit(store: &dyn Store, name: &str, limit: Decimal) -> Result<Customer> {
    if limit.is_sign_negative() {
        return Err(AdminError::Invalid(
            "the credit limit must not be negative".into(),
        ));
    }
    store
        .set_credit_limit(name, units(limit, "credit limit")?)
        .await
        .map_err(|e| client_error(e, name))
}

pub async fn set_enabled(store: &dyn Store, name: &str, enabled: bool) -> Result<()> {
    match store.set_enabled(name, enabled).await {
        Err(StoreError::NotFound) => Err(AdminError::NoClient(name.into())),
        other => Ok(other?),
    }
}

/// Gives a client a new key; the old one stops working at once.
pub async fn rotate_key(store: &dyn Store, name: &str) -> Result<String> {
    let key = keys::generate().map_err(|e| AdminError::Invalid(format!("no randomness: {e}")))?;
    match store.set_key(name, &keys::hash(&key)).await {
        Err(StoreError::NotFound) => Err(AdminError::NoClient(name.into())),
        other => other.map(|()| key).map_err(Into::into),
    }
}

/// One order as the operator sees it (`order list --json`, `order show`).
pub fn order_json(o: &Order) -> serde_json::Value {
    json!({
        "id": o.id,
        "client": o.customer,
        "service": o.service,
        "state": o.state.as_str(),
        "status": o.status.as_str(),
        "charge": money::format(money::from_units(o.charge)),
        "refunded": money::format(money::from_units(o.refunded)),
        "upstream": o.upstream,
        "upstream_service": o.upstream_service,
        "upstream_order": o.upstream_order.as_deref().map(upstream_order_json),
        "remains": o.remains,
        "start_count": o.start_count,
        "cost": o.cost.map(|c| money::format(money::from_units(c))),
        "link": o.link,
        "fields": serde_json::from_str::<serde_json::Value>(&o.fields).unwrap_or_default(),
        "note": o.note,
        "created_at": o.created_at,
        "updated_at": o.updated_at,
        "synced_at": o.synced_at,
        "attention": o.attention.map(Attention::as_str),
        "progress_at": o.progress_at,
        "age_seconds": age(o.created_at, now_ms()),
        "quiet_seconds": age(quiet_since(o), now_ms()),
        "first_cost": o.first_cost.map(|c| money::format(money::from_units(c))),
        "list_cost": o.list_cost.map(|c| money::format(money::from_units(c))),
        "runs": o.drip.map(|d| d.runs),
        "interval": o.drip.map(|d| d.interval),
        "runs_done": o.runs_done,
        "upstream_child_orders": o.child_orders,
    })
}

/// Whole seconds from `since` to `now` (never negative: clocks of instances differ).
fn age(since: Millis, now: Millis) -> i64 {
    (now - since).max(0) / 1000
}

/// Since when the upstream has reported nothing new of `o` (what `sync.stuck_after` counts).
fn quiet_since(o: &Order) -> Millis {
    o.progress_at.unwrap_or(o.created_at)
}

/// An age for people: `45s`, `12m`, `3h05m`, `2d04h`.
pub fn human_age(seconds: i64) -> String {
    let (d, h, m) = (seconds / 86_400, seconds / 3600 % 24, seconds / 60 % 60);
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{m}m"),
        s if s < 86_400 => format!("{h}h{m:02}m"),
        _ => format!("{d}d{h:02}h"),
    }
}

/// One row of `order list --attention`: why it needs the operator, how old it is and how
/// long the upstream has said nothing new of it.
pub fn attention_row(o: &Order) -> (String, String, String) {
    let now = now_ms();
    (
        o.attention.map_or("-", Attention::as_str).to_owned(),
        human_age(age(o.created_at, now)),
        human_age(age(quiet_since(o), now)),
    )
}

/// `--attention` with no reason (or `any`) lists every order that needs the operator.
pub fn attention_filter(reason: &str) -> Result<AttentionFilter> {
    if reason.is_empty() || reason == "any" {
        return Ok(AttentionFilter::Any);
    }
    Attention::parse(reason)
        .map(AttentionFilter::Only)
        .ok_or_else(|| {
            let all: Vec<_> = Attention::ALL.iter().map(|a| a.as_str()).collect();
            AdminError::Invalid(format!(
                "unknown attention reason {reason:?}; one of {}",
                all.join(", ")
            ))
        })
}

/// A page of orders, newest first: at most `page.limit`, below `page.before` when given.
pub async fn list_orders(
    store: &dyn Store,
    client: Option<String>,
    state: Option<&str>,
    attention: Option<&str>,
    page: Page,
) -> Result<Vec<Order>> {
    let attention = attention.map(attention_filter).transpose()?;
    let state = match state {
        None => None,
        Some(s) => Some(OrderState::parse(s).ok_or_else(|| {
            let all: Vec<_> = OrderState::ALL.iter().map(|s| s.as_str()).collect();
            AdminError::Invalid(format!("unknown state {s:?}; one of {}", all.join(", ")))
        })?),
    };
    Ok(store
        .list_orders(&OrderFilter {
            customer: client,
            state,
            attention,
            before: page.before,
            limit: page.limit,
            ..OrderFilter::default()
        })
        .await?)
}

/// Where an operator's order listing starts and how much of it to read.
#[derive(Debug, Clone, Copy, Default)]
pub struct Page {
    /// Only orders with a lower id (the last id of the page before).
    pub before: Option<i64>,
    /// At most this many; all when `None`.
    pub limit: Option<u32>,
}

pub async fn show_order(store: &dyn Store, id: i64) -> Result<Order> {
    store.order(id).await?.ok_or(AdminError::NoOrder(id))
}

/// Resolves an order of unknown outcome: placed as `upstream_order`, or not placed (Canceled,
/// the whole charge refunded).
pub async fn resolve(store: &dyn Store, id: i64, upstream_order: Option<&str>) -> Result<String> {
    let order = show_order(store, id).await?;
    if order.state != OrderState::Unknown {
        return Err(AdminError::State(format!(
            "order {id} is {}, not unknown: only orders of unknown outcome are resolved as \
             placed or not placed (a placed order its upstream never finishes is settled with \
             --status Canceled, Partial --remains N, or Completed)",
            order.state.as_str()
        )));
    }
    match upstream_order {
        Some(u) => {
            store.resolve_placed(id, u, now_ms()).await?;
            Ok(format!(
                "order {id} is placed at {} as order {u}; sync follows it from now",
                order.upstream
            ))
        }
        None => {
            let refund = store.resolve_not_placed(id, now_ms()).await?;
            Ok(format!(
                "order {id} is Canceled; {} refunded to {}",
                money::format(money::from_units(refund)),
                order.customer
            ))
        }
    }
}

/// Settles a placed order by hand with the final status the operator found at the upstream
/// (a panel script that shows its failed orders as Pending never reports one): the same
/// refund rules as a synced status, applied once, and a note saying the operator did it.
pub async fn resolve_ended(
    store: &dyn Store,
    id: i64,
    status: Status,
    remains: Option<i64>,
) -> Result<String> {
    let order = show_order(store, id).await?;
    if order.state != OrderState::Placed {
        return Err(AdminError::State(format!(
            "order {id} is {}, not placed: --status settles placed orders (stuck ones); \
             an unknown one takes --upstream-order or --not-placed",
            order.state.as_str()
        )));
    }
    if !status.is_final() {
        return Err(AdminError::Invalid(
            "--status takes a final status: Completed, Partial or Canceled".into(),
        ));
    }
    if remains.is_some_and(i64::is_negative) {
        return Err(AdminError::Invalid(
            "--remains is what was not delivered: 0 or more".into(),
        ));
    }
    if status == Status::Partial && remains.is_none() {
        return Err(AdminError::Invalid(
            "a Partial needs --remains (what the upstream did not deliver)".into(),
        ));
    }
    let update = StatusUpdate {
        status,
        remains: remains.or(order.remains),
        start_count: None,
        cost: None,
        runs: None,
        child_orders: Vec::new(),
    };
    let now = now_ms();
    let applied = store.apply_status(id, &update, now).await?;
    if !applied.finalized {
        return Err(AdminError::State(format!(
            "order {id} changed meanwhile (sync got there first): see `panelgate order show {id}`"
        )));
    }
    let note = format!(
        "resolved by the operator as {}{}",
        status.as_str(),
        order
            .note
            .map_or_else(String::new, |n| format!(" (was: {n})"))
    );
    store.note_order(id, &note, now).await?;
    Ok(format!(
        "order {id} is {}; {} refunded to {}",
        status.as_str(),
        money::format(money::from_units(applied.refund)),
        order.customer
    ))
}

/// Settles an order a person had to look at for its refund (`refund_unknown`,
/// `partial_without_remains`): refunds `refund` (0: nothing owed) with `note` on the ledger
/// entry, and clears the mark. Never more than is still refundable.
pub async fn settle(store: &dyn Store, id: i64, refund: Decimal, note: &str) -> Result<String> {
    if refund.is_sign_negative() {
        return Err(AdminError::Invalid(
            "the refund must not be negative".into(),
        ));
    }
    if note.trim().is_empty() {
        return Err(AdminError::Invalid(
            "a settlement needs a note: who decided, and why".into(),
        ));
    }
    let order = show_order(store, id).await?;
    let refund = units(refund, "refund")?;
    let refunded = match store.settle(id, refund, note, now_ms()).await {
        Err(StoreError::Conflict(why)) => return Err(AdminError::State(why)),
        Err(StoreError::Invalid(why)) => return Err(AdminError::Invalid(why)),
        other => other?,
    };
    Ok(format!(
        "order {id} is settled; {} refunded to {}",
        money::format(money::from_units(refunded)),
        order.customer
    ))
}

/// Detaches an order from its upstream order (one upstream order must follow one local
/// order): a placed one becomes `unknown` for `order resolve`.
pub async fn unlink(store: &dyn Store, id: i64) -> Result<String> {
    let order = show_order(store, id).await?;
    let Some(upstream_order) = order.upstream_order.as_deref() else {
        return Err(AdminError::State(format!(
            "order {id} holds no upstream order"
        )));
    };
    let note = format!(
        "unlinked by the operator from {} order {upstream_order}",
        order.upstream
    );
    let state = store.unlink_order(id, &note, now_ms()).await?;
    let next = if state == OrderState::Unknown {
        format!(
            "; it is unknown now: `panelgate order resolve {id} --upstream-order N` or \
             `--not-placed`"
        )
    } else {
        String::new()
    };
    Ok(format!(
        "order {id} no longer follows {} order {upstream_order}{next}",
        order.upstream
    ))
}

/// What `check-config` reports.
/// What `check-config` reports: what it found, what would go wrong (the command fails), and
/// what the operator should know (it does not).
pub struct Summary {
    pub lines: Vec<String>,
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
}

/// Fetches every upstream's services list and balance, builds the catalog the config
/// describes, and reports prices, margins per target, currencies and the worst-case `add`.
pub async fn check_config(cfg: &Config) -> Summary {
    let upstreams = Upstreams::new(&cfg.upstreams, Arc::new(crate::metrics::Metrics::new()), 1);
    let mut s = Summary {
        lines: Vec::new(),
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    let mut lists = HashMap::new();
    for u in &cfg.upstreams {
        if u.simulate.is_some() {
            s.lines.push(format!(
                "upstream {}: simulated by `serve` at {}",
                u.name, u.url
            ));
            let services = crate::sim::catalog::builtin();
            lists.insert(u.name.clone(), Arc::new(list_of(services)));
            continue;
        }
        let Some(client) = upstreams.get(&u.name) else {
            s.problems.push(format!("upstream {}: no client", u.name));
            continue;
        };
        if let Some(list) = check_upstream(&mut s, u, client).await {
            lists.insert(u.name.clone(), Arc::new(list));
        }
    }
    let catalog = LocalCatalog::build(cfg, &lists);
    s.lines.push(format!("local services: {}", catalog.len()));
    for g in cfg.group_names() {
        let rates: Vec<Decimal> = catalog.services().map(|s| s.rate_for(&g)).collect();
        if let (Some(lo), Some(hi)) = (rates.iter().min(), rates.iter().max()) {
            s.lines.push(format!(
                "price group {g}: rates {lo} to {hi} {} per 1000",
                cfg.currency
            ));
        }
        let hidden = cfg.hiding.group(&g);
        if !hidden.is_empty() {
            let n = catalog.services().filter(|s| !s.shown(hidden)).count();
            s.lines.push(format!(
                "price group {g}: {n} services hidden (types {:?}, categories {:?})",
                hidden.types, hidden.categories
            ));
        }
    }
    for e in &cfg.explicit {
        if catalog.get(e.id).is_none()
            && lists.contains_key(&e.target.upstream)
            && !catalog.refused.iter().any(|r| r.service == e.id)
        {
            s.problems.push(format!(
                "service {}: {} does not list service {} (or it is a type we do not sell)",
                e.id, e.target.upstream, e.target.service
            ));
        }
    }
    s.problems.extend(catalog.problems.iter().cloned());
    s.warnings
        .extend(catalog.sold_twice.iter().map(ToString::to_string));
    s.problems
        .extend(catalog.refused.iter().map(|r| r.to_string()));
    margins(&mut s, cfg, &catalog);
    worst_case_add(&mut s, cfg, &catalog);
    s
}

/// One upstream: its services list (with a hint when its URL is not an API v2 endpoint),
/// its balance and the currency it states.
async fn check_upstream(
    s: &mut Summary,
    u: &crate::config::UpstreamConfig,
    client: &crate::upstream::Upstream,
) -> Option<UpstreamList> {
    let host = u.url.host().unwrap_or("?");
    let list = match client.services().await {
        Ok(list) if list.services.is_empty() => {
            s.warnings
                .push(format!("upstream {}: {host} lists no services", u.name));
            Some(list_of(list.services))
        }
        Ok(list) => {
            s.lines.push(format!(
                "upstream {}: {host}, {} services listed",
                u.name,
                list.services.len()
            ));
            Some(list_of(list.services))
        }
        Err(e) => {
            let hint = match client.probe().await {
                Ok((status, body)) => wrong_path_hint(status, &body),
                Err(_) => None,
            };
            s.problems.push(format!(
                "upstream {}: {host}: {e}{}",
                u.name,
                hint.unwrap_or_default()
            ));
            None
        }
    };
    let fx = if u.fx == Decimal::ONE {
        String::new()
    } else {
        format!(", fx {}", u.fx)
    };
    match client.balance().await {
        Ok(b) => {
            let stated = if b.currency.is_empty() {
                "no currency stated"
            } else {
                b.currency.as_str()
            };
            s.lines.push(format!(
                "upstream {}: balance {} {stated} (the config expects {}{fx})",
                u.name,
                money::format(b.balance),
                u.expected_currency
            ));
            if let Err(e) = client.currency_check() {
                s.problems
                    .push(format!("upstream {}: takes no orders: {e}", u.name));
            }
        }
        Err(e) => s
            .problems
            .push(format!("upstream {}: balance: {e}", u.name)),
    }
    list
}

/// What to tell the operator when a `services` call came back as a page rather than an API
/// answer: a PHP panel script serves its API elsewhere (`/api/v1`) and answers `/api/v2` with
/// its HTML 403/404 page.
fn wrong_path_hint(status: http::StatusCode, body: &[u8]) -> Option<String> {
    let json = serde_json::from_slice::<serde_json::Value>(body).is_ok();
    let wrong = matches!(status.as_u16(), 404 | 405 | 410) || (status.as_u16() == 403 && !json);
    wrong.then(|| {
        let what = if json { "" } else { " with an HTML page" };
        format!(
            " — the URL does not look like an API v2 endpoint (HTTP {}{what}); check the path in its url (some panels serve their API at /api/v1)",
            status.as_u16()
        )
    })
}

/// Per local service and price group: the sell rate, and each target's cost and margin;
/// a warning for every target an order will not go to, or that sells at a loss.
fn margins(s: &mut Summary, cfg: &Config, catalog: &LocalCatalog) {
    for svc in catalog.services() {
        for g in cfg.group_names() {
            let rate = svc.rate_for(&g);
            let mut parts = Vec::new();
            for (i, (t, cost)) in svc.targets().enumerate() {
                let role = if i == 0 { "" } else { "fallback " };
                let at = format!("{role}{}/{}", t.upstream, t.service);
                let Some(cost) = cost else {
                    parts.push(format!("{at} not listed"));
                    s.warnings.push(format!(
                        "service {} [{g}]: {at} is not in its upstream's list: orders will not go there",
                        svc.id()
                    ));
                    continue;
                };
                let margin = (rate - cost).normalize();
                parts.push(format!("{at} cost {cost} margin {margin}"));
                if !svc.covers(&g, Some(cost)) {
                    s.warnings.push(format!(
                        "service {} [{g}]: {at} costs {cost} {}, more than the sell price {rate} allows: orders will not go there",
                        svc.id(),
                        cfg.currency
                    ));
                } else if rate < cost {
                    s.warnings.push(format!(
                        "service {} [{g}]: {at} sells below cost ({rate} < {cost}; allow_loss)",
                        svc.id()
                    ));
                }
            }
            s.lines.push(format!(
                "service {} [{g}] sells at {rate} {}: {}",
                svc.id(),
                cfg.currency,
                parts.join("; ")
            ));
        }
    }
}

/// The longest an `add` can take over every local service, for proxy timeouts.
fn worst_case_add(s: &mut Summary, cfg: &Config, catalog: &LocalCatalog) {
    let worst = catalog
        .services()
        .map(|svc| {
            let targets: Vec<_> = svc.targets().map(|(t, _)| t).collect();
            (cfg.worst_case_add(&targets), svc.id())
        })
        // The longest; of equals, the lowest id.
        .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    if let Some((time, id)) = worst {
        s.lines.push(format!(
            "worst-case add: {}s (service {id}: per target, its timeout for a connection slot, again for our rate limit towards it, again for the reply; plus reading the primary's currency before its first order); set proxy read timeouts above it",
            time.as_secs()
        ));
    }
}

fn list_of(services: Vec<crate::protocol::Service>) -> UpstreamList {
    UpstreamList {
        services: services.into_iter().map(|s| (s.service, s)).collect(),
        fetched_at: crate::clock::now(),
    }
}

/// An upstream order id in `--json` output: a number, as before ids became text, while it is
/// one; an opaque id (`"ord_01HG…"`) as a string.
fn upstream_order_json(id: &str) -> serde_json::Value {
    id.parse::<u64>()
        .map_or_else(|_| id.into(), serde_json::Value::from)
}
