//! The admin API's reads as typed functions: the API serialises what they answer as JSON and
//! the console renders it as HTML, so both show the same figures.

use rust_decimal::Decimal;

use super::ApiError;
use super::input::{id_cursor, limit};
use super::shapes::*;
use crate::admin;
use crate::gateway::Gateway;
use crate::store::{
    Customer, CustomerSearch, DayMoney, LedgerEntry, OrderFilter, OrderState, Units,
};

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
    let customer = customer_row(gw, name).await?;
    let (rows, next_cursor) = ledger_entries(gw, customer.id, q).await?;
    let items = rows.iter().map(LedgerEntryView::from).collect();
    Ok(LedgerPage { items, next_cursor })
}

/// A page of a customer's ledger as stored (amounts in units, for sums), and the cursor after
/// it if another page follows.
pub async fn ledger_entries(
    gw: &Gateway,
    customer_id: i64,
    q: &PageQuery,
) -> Result<(Vec<LedgerEntry>, Option<String>), ApiError> {
    let limit = limit(q.limit)?;
    let before = id_cursor(q.cursor.as_deref())?;
    let rows = gw
        .store
        .ledger_page(customer_id, before, probe(limit))
        .await?;
    Ok(page(rows, limit, |e| e.id.to_string()))
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

const DAY_MS: i64 = 86_400_000;

/// How many days the overview sums and charts, today included.
pub const OVERVIEW_DAYS: i64 = 30;

/// The overview's figures at `now` (Unix milliseconds): days are UTC days.
pub async fn overview(gw: &Gateway, now: i64) -> Result<Overview, ApiError> {
    let today = now.div_euclid(DAY_MS);
    let first = today - (OVERVIEW_DAYS - 1);
    let found = gw.store.money_by_day(first * DAY_MS).await?;
    let days: Vec<DayMoney> = (first..=today)
        .map(|day| {
            let zero = DayMoney {
                day,
                revenue: 0,
                cost: 0,
            };
            found.iter().find(|d| d.day == day).copied().unwrap_or(zero)
        })
        .collect();
    let sum = |f: fn(&DayMoney) -> Units| days.iter().map(f).sum::<Units>();
    let states = gw.store.count_orders_by_state().await?;
    let attention = gw.store.count_attention().await?;
    Ok(Overview {
        orders_by_state: states
            .into_iter()
            .map(|(s, count)| StateCount {
                state: s.as_str().to_owned(),
                count,
            })
            .collect(),
        today: money_view(
            days.last().map_or(0, |d| d.revenue),
            days.last().map_or(0, |d| d.cost),
        ),
        last_30_days: money_view(sum(|d| d.revenue), sum(|d| d.cost)),
        days: days.iter().map(day_view).collect(),
        attention: attention
            .into_iter()
            .map(|(reason, upstream, count)| AttentionCount {
                reason: reason.as_str().to_owned(),
                upstream,
                count,
            })
            .collect(),
        upstreams: gw
            .upstreams
            .0
            .iter()
            .map(|u| UpstreamHealth {
                name: u.name.clone(),
                healthy: u.is_healthy(),
                breaker: breaker_name(u.breaker_state()).to_owned(),
            })
            .collect(),
    })
}

fn money_view(revenue: Units, cost: Units) -> MoneyView {
    MoneyView {
        revenue: amount(revenue),
        cost: amount(cost),
        margin: amount(revenue - cost),
    }
}

fn day_view(d: &DayMoney) -> DayView {
    let date = time::OffsetDateTime::from_unix_timestamp(d.day * (DAY_MS / 1000))
        .map(|t| t.date().to_string())
        .unwrap_or_default();
    DayView {
        day: date,
        money: money_view(d.revenue, d.cost),
    }
}
