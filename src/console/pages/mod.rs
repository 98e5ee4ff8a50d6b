//! The console's pages, each from the admin API's own reads ([`crate::admin_api::read`]), so
//! that the console and the API show the same figures. A read session gets the same pages
//! without their forms. The small pages are here; the others have a module each.

mod customers;
mod orders;
mod overview;

use maud::{Markup, html};
use serde::de::DeserializeOwned;

use super::layout::{self, Notice, next_page, when};
use super::paths::Page;
use super::session::Session;
use crate::admin_api::shapes::*;
use crate::admin_api::{ApiError, input, read};
use crate::gateway::Gateway;
use customers::{customer, customers};
use orders::{order, orders};
use overview::overview;

/// The parameters of a page's query. A GET form sends its empty fields too: they mean "not
/// given", as the API reads an absent parameter.
fn query<T: DeserializeOwned + Default>(q: Option<&str>) -> Result<T, ApiError> {
    let Some(q) = q else {
        return Ok(T::default());
    };
    let given: Vec<&str> = q
        .split('&')
        .filter(|pair| pair.split_once('=').is_some_and(|(_, v)| !v.is_empty()))
        .collect();
    input::query(&given.join("&"))
}

/// Page `page` in full, as `s` may see it.
pub async fn render(
    gw: &Gateway,
    s: &Session,
    page: &Page,
    q: Option<&str>,
    notice: &Notice,
) -> Result<Markup, ApiError> {
    let (title, content) = match page {
        Page::Overview => ("Overview".to_owned(), overview(gw).await?),
        Page::Customers => ("Customers".to_owned(), customers(gw, s, query(q)?).await?),
        Page::Customer(name) => (
            format!("Customer {name}"),
            customer(gw, s, name, query(q)?, notice).await?,
        ),
        Page::Orders => ("Orders".to_owned(), orders(gw, query(q)?).await?),
        Page::Order(id) => (format!("Order {id}"), order(gw, s, *id).await?),
        Page::Upstreams => ("Upstreams".to_owned(), upstreams(gw).await?),
        Page::Catalog => ("Catalog".to_owned(), catalog(gw)),
        Page::Audit => ("Audit".to_owned(), audit(gw, query(q)?).await?),
    };
    Ok(layout::page(&title, Some(s), notice, content))
}

async fn upstreams(gw: &Gateway) -> Result<Markup, ApiError> {
    let ups = read::upstreams(gw).await?;
    Ok(html! {
        table #upstreams {
            thead { tr { th { "Upstream" } th { "Health" } th { "Breaker" } th { "Balance" } th { "Latency" } th { "Open orders" } th { "Last error" } } }
            tbody {
                @for u in &ups {
                    tr data-upstream=(u.name) {
                        td { (u.name) }
                        td.health.healthy[u.healthy].unhealthy[!u.healthy] {
                            (if u.healthy { "healthy" } else { "unhealthy" })
                        }
                        td.breaker { (u.breaker) }
                        td.balance { (u.balance.as_deref().unwrap_or("")) " " (u.currency.as_deref().unwrap_or("")) }
                        td { @if let Some(ms) = u.latency_ms { (ms) " ms" } }
                        td.open-orders { (u.open_orders) }
                        td.last-error { (u.last_error.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
    })
}

fn catalog(gw: &Gateway) -> Markup {
    let entries = read::catalog(gw);
    let groups = gw.cfg.group_names();
    html! {
        p.muted { "Sell price per 1000 in each price group, and its margin over the primary target's cost." }
        table #catalog {
            thead { tr {
                th { "Service" } th { "Name" } th { "Targets (cost)" }
                @for g in &groups { th { (g) } }
            } }
            tbody {
                @for e in &entries {
                    tr.below-cost[e.prices.iter().any(|p| p.below_cost)] data-service=(e.service) {
                        td { (e.service) }
                        td { (e.name) }
                        td.targets {
                            @for t in &e.targets {
                                div { (t.upstream) " " (t.service) ": " (t.cost.as_deref().unwrap_or("not listed")) }
                            }
                        }
                        @for p in &e.prices {
                            td.price.below-cost[p.below_cost] data-group=(p.group) {
                                (p.rate)
                                @if let Some(m) = &p.margin { br; span.muted { "margin " (m) } }
                                @if p.below_cost { br; strong { "below cost" } }
                            }
                        }
                    }
                }
            }
        }
    }
}

async fn audit(gw: &Gateway, q: PageQuery) -> Result<Markup, ApiError> {
    let page = read::audit(gw, &q).await?;
    let next = page
        .next_cursor
        .as_deref()
        .map(|c| Page::Audit.with_query(&[("cursor", c)]));
    Ok(html! {
        table #audit {
            thead { tr { th { "When" } th { "Actor" } th { "Action" } th { "Target" } th { "Outcome" } } }
            tbody {
                @for a in &page.items {
                    tr data-audit=(a.id) {
                        td.at { (when(a.at)) }
                        td.actor { (a.actor) }
                        td.action { (a.action) }
                        td.target { (a.target) }
                        td.outcome { (a.outcome) }
                    }
                }
            }
        }
        (next_page(next))
    })
}

/// The cells a ledger entry starts with wherever it is listed: id, time, kind, amount.
fn entry_cells(e: &LedgerEntryView) -> Markup {
    html! {
        td { (e.id) }
        td { (when(e.created_at)) }
        td.kind { (e.kind) }
        td.amount { (e.amount) }
    }
}
