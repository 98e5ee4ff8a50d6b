//! The admin API's reads as typed functions: the API serialises what they answer as JSON and
//! the console renders it as HTML, so both show the same figures.

use rust_decimal::Decimal;

use super::ApiError;
use super::input::{id_cursor, limit};
use super::shapes::*;
use crate::admin;
use crate::gateway::Gateway;
use crate::store::{Customer, CustomerSearch, OrderFilter, OrderState};

/// A page of at most `limit` from `rows` (read with `limit + 1`, so that one more row says
/// whether another page follows), and the cursor after its last item if one does.
fn page<T>(
    mut rows: Vec<T>,
    limit: usize,
    cursor: impl Fn(&T) -> String,
) -> (Vec<T>, Option<String>) {
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next = more.then(|| rows.last().map(&cursor)).flatten();
    (rows, next)
}

/// One more than the page holds: see [`page`].
fn probe(limit: usize) -> u32 {
    u32::try_from(limit + 1).unwrap_or(u32::MAX)
}

pub async fn customers(gw: &Gateway, q: &CustomerQuery) -> Result<CustomerPage, ApiError> {
    let limit = limit(q.limit)?;
    let search = CustomerSearch {
        contains: q.q.clone().filter(|s| !s.is_empty()),
        // The cursor is the last name shown: names after it follow.
        after: q.cursor.clone(),
        limit: Some(probe(limit)),
    };
    let rows = gw.store.list_customers(&search).await?;
    let (rows, next_cursor) = page(rows, limit, |(cu, _)| cu.name.clone());
    let items = rows
        .iter()
        .map(|(cu, n)| CustomerView::new(cu, Some(*n)))
        .collect();
    Ok(CustomerPage { items, next_cursor })
}

async fn customer_row(gw: &Gateway, name: &str) -> Result<Customer, ApiError> {
    gw.store
        .customer_by_name(name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no client named {name:?}")))
}

pub async fn customer(gw: &Gateway, name: &str) -> Result<CustomerView, ApiError> {
    Ok(CustomerView::new(&customer_row(gw, name).await?, None))
}

pub async fn ledger(gw: &Gateway, name: &str, q: &PageQuery) -> Result<LedgerPage, ApiError> {
    let limit = limit(q.limit)?;
    let before = id_cursor(q.cursor.as_deref())?;
    let customer = customer_row(gw, name).await?;
    let rows = gw
        .store
        .ledger_page(customer.id, before, probe(limit))
        .await?;
    let (rows, next_cursor) = page(rows, limit, |e| e.id.to_string());
    let items = rows.iter().map(LedgerEntryView::from).collect();
    Ok(LedgerPage { items, next_cursor })
}

pub async fn orders(gw: &Gateway, q: &OrderQuery) -> Result<OrderPage, ApiError> {
    let limit = limit(q.limit)?;
    let service = q
        .service
        .map(u64::try_from)
        .transpose()
        .map_err(|_| ApiError::bad_request("service: a service id is 0 or more"))?;
    let filter = OrderFilter {
        customer: q.customer.clone(),
        state: q.state.map(OrderState::from),
        upstream: q.upstream.clone(),
        service,
        since: q.since,
        until: q.until,
        before: id_cursor(q.cursor.as_deref())?,
        limit: Some(probe(limit)),
        ..OrderFilter::default()
    };
    let rows = gw.store.list_orders(&filter).await?;
    let (rows, next_cursor) = page(rows, limit, |o| o.id.to_string());
    let items = rows.iter().map(OrderView::from).collect();
    Ok(OrderPage { items, next_cursor })
}

pub async fn order(gw: &Gateway, id: i64) -> Result<OrderDetail, ApiError> {
    let order = admin::show_order(gw.store.as_ref(), id).await?;
    let entries = gw.store.order_ledger(id).await?;
    let events = gw.store.order_history(id).await?;
    Ok(OrderDetail {
        order: OrderView::from(&order),
        history: entries.iter().map(LedgerEntryView::from).collect(),
        status_history: events.iter().map(OrderEventView::from).collect(),
    })
}

pub async fn audit(gw: &Gateway, q: &PageQuery) -> Result<AuditPage, ApiError> {
    let limit = limit(q.limit)?;
    let before = id_cursor(q.cursor.as_deref())?;
    let rows = gw.store.audit(before, probe(limit)).await?;
    let (rows, next_cursor) = page(rows, limit, |a| a.id.to_string());
    let items = rows.iter().map(AuditView::from).collect();
    Ok(AuditPage { items, next_cursor })
}

/// Each upstream as the operator sees it, from what the gateway last saw: its breaker and
/// its last balance reading (read now only if none was made yet).
pub async fn upstreams(gw: &Gateway) -> Result<Vec<UpstreamView>, ApiError> {
    let open = gw.store.open_orders_by_upstream().await?;
    let mut views = Vec::new();
    for u in &gw.upstreams.0 {
        if u.last_balance().is_none() {
            // What it answers is kept in the reading below, error included.
            let _ = u.balance().await;
        }
        let reading = u.last_balance();
        let answer = reading.as_ref().map(|r| r.answer.as_ref());
        views.push(UpstreamView {
            name: u.name.clone(),
            healthy: u.is_healthy(),
            breaker: breaker_name(u.breaker_state()).to_owned(),
            balance: answer
                .and_then(Result::ok)
                .map(|b| crate::money::format(b.balance)),
            currency: answer
                .and_then(Result::ok)
                .map(|b| b.currency.clone())
                .filter(|c| !c.is_empty()),
            last_error: answer.and_then(Result::err).cloned(),
            latency_ms: reading
                .as_ref()
                .and_then(|r| u64::try_from(r.latency.as_millis()).ok()),
            checked_at: reading.as_ref().map(|r| r.at),
            open_orders: open
                .iter()
                .find(|(n, _)| *n == u.name)
                .map_or(0, |(_, n)| *n),
        });
    }
    Ok(views)
}

fn breaker_name(s: crate::upstream::breaker::State) -> &'static str {
    use crate::upstream::breaker::State;
    match s {
        State::Closed => "closed",
        State::Open => "open",
        State::HalfOpen => "half_open",
    }
}

pub fn catalog(gw: &Gateway) -> Vec<CatalogEntry> {
    let catalog = gw.catalog.snapshot();
    let groups = gw.cfg.group_names();
    catalog
        .services()
        .map(|svc| {
            let targets: Vec<TargetView> = svc
                .targets()
                .map(|(t, cost)| TargetView {
                    upstream: t.upstream.clone(),
                    service: t.service,
                    cost: cost.map(crate::money::format),
                })
                .collect();
            let costs: Vec<Decimal> = svc.targets().filter_map(|(_, c)| c).collect();
            let prices = groups
                .iter()
                .map(|g| {
                    let rate = svc.rate_for(g);
                    PriceView {
                        group: g.clone(),
                        rate: crate::money::format(rate),
                        margin: costs.first().map(|c| crate::money::format(rate - c)),
                        below_cost: costs.iter().any(|c| rate < *c),
                    }
                })
                .collect();
            CatalogEntry {
                service: svc.id(),
                name: svc.listing.name.clone(),
                targets,
                prices,
            }
        })
        .collect()
}
