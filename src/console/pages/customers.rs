//! The customers: the list with its search and the form that creates one, and a customer's
//! page with its forms and ledger.

use maud::{Markup, html};

use super::entry_cells;
use crate::admin_api::shapes::*;
use crate::admin_api::{ApiError, read};
use crate::console::layout::{Notice, field, form, next_page, when};
use crate::console::paths::{Page, customer_write};
use crate::console::session::Session;
use crate::gateway::Gateway;
use crate::store::{LedgerEntry, Units};

pub async fn customers(gw: &Gateway, s: &Session, q: CustomerQuery) -> Result<Markup, ApiError> {
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

pub async fn customer(
    gw: &Gateway,
    s: &Session,
    name: &str,
    q: PageQuery,
    notice: &Notice,
) -> Result<Markup, ApiError> {
    let c = read::customer(gw, name).await?;
    let (entries, next) = read::ledger_entries(gw, c.id, &q).await?;
    let balances = running_balances(gw, c.id, &entries).await?;
    let next = next.map(|cur| Page::Customer(c.name.clone()).with_query(&[("cursor", &cur)]));
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
                @for (e, after) in entries.iter().map(LedgerEntryView::from).zip(&balances) {
                    tr data-entry=(e.id) {
                        (entry_cells(&e))
                        td.balance { (amount(*after)) }
                        td { @if let Some(o) = e.order_id { a href=(Page::Order(o).href()) { (o) } } }
                        td.note { (e.note.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
        (next_page(next))
    })
}

/// The balance right after each entry of a page (newest first): the store answers it after
/// the newest, and each older one's is the next newer one's less that newer entry's amount.
/// So a page costs its own entries and those after it, never the whole ledger.
async fn running_balances(
    gw: &Gateway,
    customer: i64,
    page: &[LedgerEntry],
) -> Result<Vec<Units>, ApiError> {
    let Some(newest) = page.first() else {
        return Ok(Vec::new());
    };
    let newest = gw.store.balance_after(customer, newest.id).await?;
    Ok(page
        .iter()
        .scan(newest, |after, e| {
            let this = *after;
            *after -= e.amount;
            Some(this)
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
            (form(s, "set-credit-limit", &to("credit-limit"), html! {
                label { span { "Credit limit" } input type="text" name="credit_limit" value=(c.credit_limit) required; }
            }, "Set credit limit"))
        }
    }
}
