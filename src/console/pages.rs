//! The console's pages, each from the admin API's own reads ([`crate::admin_api::read`]), so
//! that the console and the API show the same figures. A read session gets the same pages
//! without their forms.

use maud::{Markup, html};
use serde::de::DeserializeOwned;

use super::chart::chart;
use super::layout::{self, Notice, field, form, next_page, when};
use super::paths::{Page, customer_write};
use super::session::Session;
use crate::admin_api::shapes::*;
use crate::admin_api::{ApiError, input, read};
use crate::clock::now_millis;
use crate::gateway::Gateway;
use crate::store::{AttentionFilter, OrderFilter, OrderState};

/// Orders awaiting the operator listed on the overview (the count covers them all).
const ATTENTION_SHOWN: usize = 50;

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

async fn overview(gw: &Gateway) -> Result<Markup, ApiError> {
    let o = read::overview(gw, now_millis()).await?;
    let waiting = OrderFilter {
        attention: Some(AttentionFilter::Any),
        ..OrderFilter::default()
    };
    let waiting = gw.store.list_orders(&waiting).await?;
    let total: u64 = o.attention.iter().map(|a| a.count).sum();
    Ok(html! {
        section {
            h2 { "Orders by state" }
            table #orders-by-state {
                thead { tr { th { "State" } th { "Orders" } } }
                tbody {
                    @for s in &o.orders_by_state {
                        tr data-state=(s.state) { td.state { (s.state) } td.count { (s.count) } }
                    }
                }
            }
        }
        section #money {
            h2 { "Money" }
            table {
                thead { tr { th {} th { "Revenue" } th { "Cost" } th { "Margin" } } }
                tbody {
                    tr {
                        th { "Today (UTC)" }
                        td #revenue-today { (o.today.revenue) }
                        td #cost-today { (o.today.cost) }
                        td #margin-today { (o.today.margin) }
                    }
                    tr {
                        th { "Last 30 days" }
                        td #revenue-30d { (o.last_30_days.revenue) }
                        td #cost-30d { (o.last_30_days.cost) }
                        td #margin-30d { (o.last_30_days.margin) }
                    }
                }
            }
            (chart(&o.days))
            p.legend { "Bars: revenue per day; line: margin. Orders count on the UTC day they were placed." }
        }
        section {
            h2 { "Upstreams" }
            ul #upstream-health {
                @for u in &o.upstreams {
                    li data-upstream=(u.name) class=(if u.healthy { "healthy" } else { "unhealthy" }) {
                        (u.name) ": " (if u.healthy { "healthy" } else { "unhealthy" })
                        " (breaker " (u.breaker) ")"
                    }
                }
            }
        }
        section {
            h2 { "Awaiting the operator (" (total) ")" }
            table #attention {
                thead { tr { th { "Order" } th { "Why" } th { "Customer" } th { "Upstream" } th { "State" } th { "Placed" } } }
                tbody {
                    @for o in waiting.iter().take(ATTENTION_SHOWN) {
                        tr data-order=(o.id) {
                            td { a.order-link href=(Page::Order(o.id).href()) { (o.id) } }
                            td.attention { (o.attention.map_or("", |a| a.as_str())) }
                            td.customer { (o.customer) }
                            td.upstream { (o.upstream) }
                            td.state { (o.state.as_str()) }
                            td { (when(o.created_at)) }
                        }
                    }
                }
            }
        }
    })
}

async fn customers(gw: &Gateway, s: &Session, q: CustomerQuery) -> Result<Markup, ApiError> {
    let page = read::customers(gw, &q).await?;
    let search = q.q.as_deref().unwrap_or("");
    let next = page
        .next_cursor
        .as_deref()
        .map(|c| Page::Customers.with_query(&[("q", search), ("cursor", c)]));
    Ok(html! {
        form #search .inline method="get" action=(Page::Customers.href()) {
            label { span { "Name contains" } input type="search" name="q" value=(search); }
            button type="submit" { "Search" }
        }
        @if s.writes() {
            (groups_list(gw))
            section {
                h2 { "New customer" }
                (form(s, "create-customer", &Page::Customers.href(), html! {
                    (field("Name", "name", "", true))
                    (field("Opening balance", "balance", "0", false))
                    label { span { "Price group" } input type="text" name="group" list="groups" value="default"; }
                    (field("Credit limit", "credit_limit", "0", false))
                }, "Create"))
            }
        }
        table #customers {
            thead { tr { th { "Name" } th { "Group" } th { "Balance" } th { "Credit limit" } th { "Enabled" } th { "Orders" } } }
            tbody {
                @for c in &page.items {
                    tr data-customer=(c.name) {
                        td { a.customer-link href=(Page::Customer(c.name.clone()).href()) { (c.name) } }
                        td.group { (c.group) }
                        td.balance { (c.balance) }
                        td.credit-limit { (c.credit_limit) }
                        td.enabled { (yes_no(c.enabled)) }
                        td.orders { (c.orders.unwrap_or(0)) }
                    }
                }
            }
        }
        (next_page(next))
    })
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// The price groups the config names, offered to inputs named `group`.
fn groups_list(gw: &Gateway) -> Markup {
    html! {
        datalist #groups { @for g in gw.cfg.group_names() { option value=(g) {} } }
    }
}

async fn customer(
    gw: &Gateway,
    s: &Session,
    name: &str,
    q: PageQuery,
    notice: &Notice,
) -> Result<Markup, ApiError> {
    let c = read::customer(gw, name).await?;
    let ledger = read::ledger(gw, name, &q).await?;
    let balances = running_balances(gw, c.id).await?;
    let next = ledger
        .next_cursor
        .as_deref()
        .map(|cur| Page::Customer(c.name.clone()).with_query(&[("cursor", cur)]));
    Ok(html! {
        @if let Some(key) = &notice.new_key {
            p.new-key { "The customer's new API key, shown this once: " code #new-key { (key) } }
        }
        dl {
            dt { "Name" } dd #customer-name { (c.name) }
            dt { "Balance" } dd #balance { (c.balance) }
            dt { "Credit limit" } dd #credit-limit { (c.credit_limit) }
            dt { "Group" } dd #group { (c.group) }
            dt { "Enabled" } dd #enabled { (yes_no(c.enabled)) }
            dt { "Created" } dd { (when(c.created_at)) }
            dt { "Orders" } dd { a href=(Page::Orders.with_query(&[("customer", &c.name)])) { "this customer's orders" } }
        }
        @if s.writes() { (customer_forms(gw, s, &c)) }
        h2 { "Ledger" }
        table #ledger {
            thead { tr { th { "Entry" } th { "When" } th { "Kind" } th { "Amount" } th { "Balance after" } th { "Order" } th { "Note" } } }
            tbody {
                @for e in &ledger.items {
                    tr data-entry=(e.id) {
                        td { (e.id) }
                        td { (when(e.created_at)) }
                        td.kind { (e.kind) }
                        td.amount { (e.amount) }
                        td.balance { (balances.iter().find(|(id, _)| *id == e.id).map_or(String::new(), |(_, b)| amount(*b))) }
                        td { @if let Some(o) = e.order_id { a href=(Page::Order(o).href()) { (o) } } }
                        td.note { (e.note.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
        (next_page(next))
    })
}

/// Each ledger entry's id with the balance right after it (the balance is the sum of the
/// entries, oldest first).
async fn running_balances(gw: &Gateway, customer: i64) -> Result<Vec<(i64, i64)>, ApiError> {
    let entries = gw.store.ledger(customer).await?;
    Ok(entries
        .iter()
        .scan(0i64, |sum, e| {
            *sum += e.amount;
            Some((e.id, *sum))
        })
        .collect())
}

fn customer_forms(gw: &Gateway, s: &Session, c: &CustomerView) -> Markup {
    let to = |part: &str| customer_write(&c.name, part);
    let adjust = html! {
        (field("Amount", "amount", "10.00", true))
        (field("Note", "note", "why, for the ledger", false))
    };
    html! {
        (groups_list(gw))
        div.forms {
            (form(s, "credit", &to("credit"), adjust.clone(), "Credit"))
            (form(s, "debit", &to("debit"), adjust, "Debit"))
            @if c.enabled {
                (form(s, "disable", &to("disable"), html! { span { "Stop new orders and API access." } }, "Disable"))
            } @else {
                (form(s, "enable", &to("enable"), html! { span { "Let the customer order again." } }, "Enable"))
            }
            (form(s, "rotate-key", &to("rotate-key"), html! { span { "The old key stops working at once." } }, "Rotate key"))
            (form(s, "set-group", &to("group"), html! {
                label { span { "Price group" } input type="text" name="group" list="groups" value=(c.group) required; }
            }, "Set group"))
            (form(s, "set-credit-limit", &to("credit-limit"), field("Credit limit", "credit_limit", &c.credit_limit, true), "Set credit limit"))
        }
    }
}

async fn orders(gw: &Gateway, q: OrderQuery) -> Result<Markup, ApiError> {
    let page = read::orders(gw, &q).await?;
    let state = q.state.map(|s| OrderState::from(s).as_str()).unwrap_or("");
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let number = |v: Option<i64>| v.map(|n| n.to_string()).unwrap_or_default();
    let (customer, upstream) = (text(&q.customer), text(&q.upstream));
    let (service, since, until) = (number(q.service), number(q.since), number(q.until));
    let next = page.next_cursor.as_deref().map(|cursor| {
        Page::Orders.with_query(&[
            ("state", state),
            ("customer", &customer),
            ("upstream", &upstream),
            ("service", &service),
            ("since", &since),
            ("until", &until),
            ("cursor", cursor),
        ])
    });
    Ok(html! {
        form #order-filters .inline method="get" action=(Page::Orders.href()) {
            label { span { "State" } select name="state" {
                option value="" { "any" }
                @for s in OrderState::ALL { option value=(s.as_str()) selected[s.as_str() == state] { (s.as_str()) } }
            } }
            label { span { "Customer" } input type="text" name="customer" value=(customer); }
            label { span { "Upstream" } input type="text" name="upstream" value=(upstream); }
            label { span { "Service" } input type="text" name="service" inputmode="numeric" value=(service); }
            label { span { "Since (Unix ms)" } input type="text" name="since" inputmode="numeric" value=(since); }
            label { span { "Until (Unix ms)" } input type="text" name="until" inputmode="numeric" value=(until); }
            button type="submit" { "Filter" }
        }
        table #orders {
            thead { tr { th { "Order" } th { "Placed" } th { "Customer" } th { "Service" } th { "Upstream" } th { "State" } th { "Status" } th { "Charge" } } }
            tbody {
                @for o in &page.items {
                    tr data-order=(o.id) {
                        td { a.order-link href=(Page::Order(o.id).href()) { (o.id) } }
                        td { (when(o.created_at)) }
                        td.customer { (o.customer) }
                        td.service { (o.service) }
                        td.upstream { (o.upstream) }
                        td.state { (o.state) }
                        td.status { (o.status) }
                        td.charge { (o.charge) }
                    }
                }
            }
        }
        (next_page(next))
    })
}

async fn order(gw: &Gateway, s: &Session, id: i64) -> Result<Markup, ApiError> {
    let d = read::order(gw, id).await?;
    let o = &d.order;
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    Ok(html! {
        dl {
            dt { "Order" } dd #order-id { (o.id) }
            dt { "State" } dd #order-state { (o.state) }
            dt { "Status" } dd #order-status { (o.status) }
            dt { "Customer" } dd { a href=(Page::Customer(o.customer.clone()).href()) { (o.customer) } }
            dt { "Service" } dd { (o.service) }
            dt { "Upstream" } dd { (o.upstream) " service " (o.upstream_service) }
            dt { "Upstream order" } dd #upstream-order { (opt(&o.upstream_order)) }
            dt { "Charge" } dd #charge { (o.charge) }
            dt { "Cost" } dd #cost { (opt(&o.cost)) }
            dt { "Refunded" } dd #refunded { (o.refunded) }
            dt { "Remains" } dd { (o.remains.map(|r| r.to_string()).unwrap_or_default()) }
            dt { "Link" } dd #link { (opt(&o.link)) }
            dt { "Note" } dd #note { (opt(&o.note)) }
            dt { "Attention" } dd #attention { (opt(&o.attention)) }
            dt { "Placed" } dd { (when(o.created_at)) }
            dt { "Updated" } dd { (when(o.updated_at)) }
        }
        @if o.state == OrderState::Unknown.as_str() && s.writes() {
            (resolve_forms(s, o.id))
        }
        h2 { "History" }
        table #history {
            thead { tr { th { "Entry" } th { "When" } th { "Kind" } th { "Amount" } th { "Note" } } }
            tbody {
                @for e in &d.history {
                    tr data-entry=(e.id) {
                        td { (e.id) }
                        td { (when(e.created_at)) }
                        td.kind { (e.kind) }
                        td.amount { (e.amount) }
                        td.note { (e.note.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
    })
}

fn resolve_forms(s: &Session, id: i64) -> Markup {
    let to = format!("{}/resolve", Page::Order(id).href());
    html! {
        h2 { "Resolve this order" }
        p.muted { "Its upstream may or may not have taken it: look there, then say which." }
        div.forms {
            (form(s, "resolve-placed", &to, field("Upstream order id", "upstream_order", "", true), "Placed as this order"))
            (form(s, "resolve-not-placed", &to, html! {
                input type="hidden" name="not_placed" value="true";
                span { "Cancels it and refunds the whole charge." }
            }, "Not placed"))
        }
    }
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
