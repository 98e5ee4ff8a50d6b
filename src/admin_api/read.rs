//! The admin API's reads as typed functions: the API serialises what they answer as JSON and
//! the console renders it as HTML, so both show the same figures.

use rust_decimal::Decimal;

use super::ApiError;
use super::input::{id_cursor, limit};
use super::shapes::*;
use crate::admin;
use crate::gateway::Gateway;
use crate::store::{Customer, DayMoney, OrderFilter, OrderState, Units};

/// The first `limit` of `items` and the cursor after the last one, if more follow.
fn page<T>(
    items: impl Iterator<Item = T>,
    limit: usize,
    cursor: impl Fn(&T) -> String,
) -> (Vec<T>, Option<String>) {
    let mut items: Vec<T> = items.take(limit + 1).collect();
    let more = items.len() > limit;
    items.truncate(limit);
    let next = more.then(|| items.last().map(&cursor)).flatten();
    (items, next)
}

pub async fn customers(gw: &Gateway, q: &CustomerQuery) -> Result<CustomerPage, ApiError> {
    let limit = limit(q.limit)?;
    // The cursor is the last name shown: names after it follow.
    let after = q.cursor.as_deref();
    let all = gw.store.list_customers().await?;
    let wanted = all.iter().filter(|(cu, _)| {
        q.q.as_deref().is_none_or(|s| cu.name.contains(s))
            && after.is_none_or(|a| cu.name.as_str() > a)
    });
    let (items, next_cursor) = page(wanted, limit, |(cu, _)| cu.name.clone());
    let items = items
        .into_iter()
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
    let entries = gw.store.ledger(customer.id).await?;
    let newest_first = entries.iter().rev().filter(|e| e.id < before);
    let (items, next_cursor) = page(newest_first, limit, |e| e.id.to_string());
    let items = items.into_iter().map(LedgerEntryView::from).collect();
    Ok(LedgerPage { items, next_cursor })
}

pub async fn orders(gw: &Gateway, q: &OrderQuery) -> Result<OrderPage, ApiError> {
    let limit = limit(q.limit)?;
    if q.service.is_some_and(i64::is_negative) {
        return Err(ApiError::bad_request("service: a service id is 0 or more"));
    }
    let before = id_cursor(q.cursor.as_deref())?;
    let filter = OrderFilter {
        customer: q.customer.clone(),
        state: q.state.map(OrderState::from),
        attention: None,
    };
    let all = gw.store.list_orders(&filter).await?;
    let wanted = all.iter().filter(|o| {
        o.id < before
            && q.upstream.as_deref().is_none_or(|u| o.upstream == u)
            && q.service.is_none_or(|s| u64::try_from(s) == Ok(o.service))
            && q.since.is_none_or(|t| o.created_at >= t)
            && q.until.is_none_or(|t| o.created_at < t)
    });
    let (items, next_cursor) = page(wanted, limit, |o| o.id.to_string());
    let items = items.into_iter().map(OrderView::from).collect();
    Ok(OrderPage { items, next_cursor })
}

pub async fn order(gw: &Gateway, id: i64) -> Result<OrderDetail, ApiError> {
    let order = admin::show_order(gw.store.as_ref(), id).await?;
    let entries = gw.store.ledger(order.customer_id).await?;
    let history = entries
        .iter()
        .filter(|e| e.order_id == Some(id))
        .map(LedgerEntryView::from)
        .collect();
    Ok(OrderDetail {
        order: OrderView::from(&order),
        history,
    })
}

pub async fn audit(gw: &Gateway, q: &PageQuery) -> Result<AuditPage, ApiError> {
    let limit = limit(q.limit)?;
    let before = id_cursor(q.cursor.as_deref())?;
    let rows = gw.store.audit(Some(before), limit as u32 + 1).await?;
    let (items, next_cursor) = page(rows.iter(), limit, |a| a.id.to_string());
    let items = items.into_iter().map(AuditView::from).collect();
    Ok(AuditPage { items, next_cursor })
}

pub async fn upstreams(gw: &Gateway) -> Result<Vec<UpstreamView>, ApiError> {
    let open = gw.store.open_orders_by_upstream().await?;
    let mut views = Vec::new();
    for u in &gw.upstreams.0 {
        let started = crate::clock::now();
        let balance = u.balance().await;
        let latency_ms = u64::try_from(started.elapsed().as_millis()).ok();
        let (balance, currency, last_error) = match balance {
            Ok(b) => (
                Some(crate::money::format(b.balance)),
                Some(b.currency).filter(|c| !c.is_empty()),
                None,
            ),
            Err(e) => (None, None, Some(e.to_string())),
        };
        views.push(UpstreamView {
            name: u.name.clone(),
            healthy: u.is_healthy(),
            breaker: breaker_name(u.breaker_state()).to_owned(),
            balance,
            currency,
            last_error,
            latency_ms,
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
