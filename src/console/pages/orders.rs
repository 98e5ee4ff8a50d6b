//! The orders: the list with the API's filters, and an order's page with its status and
//! ledger history and the forms that settle it as it stands: resolve one of unknown outcome,
//! end a placed one its upstream no longer reports, decide the refund of one that got none.

use maud::{Markup, html};

use super::entry_cells;
use crate::admin_api::shapes::*;
use crate::admin_api::{ApiError, read};
use crate::console::layout::{field, form, next_page, when};
use crate::console::paths::{Page, order_write};
use crate::console::session::Session;
use crate::gateway::Gateway;
use crate::protocol::Status;
use crate::store::{Attention, OrderState};

pub async fn orders(gw: &Gateway, q: OrderQuery) -> Result<Markup, ApiError> {
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

pub async fn order(gw: &Gateway, s: &Session, id: i64) -> Result<Markup, ApiError> {
    let d = read::order(gw, id).await?;
    Ok(html! {
        (details(&d.order))
        @if s.writes() { (operator_forms(s, &d.order)) }
        h2 { "Status history" }
        table #status-history {
            thead { tr { th { "When" } th { "State" } th { "Status" } th { "Remains" } } }
            tbody {
                @for e in &d.status_history {
                    tr {
                        td.at { (when(e.at)) }
                        td.state { (e.state) }
                        td.status { (e.status) }
                        td.remains { (e.remains.map(|r| r.to_string()).unwrap_or_default()) }
                    }
                }
            }
        }
        h2 { "Ledger" }
        table #history {
            thead { tr { th { "Entry" } th { "When" } th { "Kind" } th { "Amount" } th { "Note" } } }
            tbody {
                @for e in &d.history {
                    tr data-entry=(e.id) {
                        (entry_cells(e))
                        td.note { (e.note.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
    })
}

fn details(o: &OrderView) -> Markup {
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    html! {
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
    }
}

/// What the operator may do to the order as it stands (each write checks again: the order
/// may have moved since the page was shown).
fn operator_forms(s: &Session, o: &OrderView) -> Markup {
    let settleable = o
        .attention
        .as_deref()
        .and_then(Attention::parse)
        .is_some_and(|a| Attention::SETTLEABLE.contains(&a));
    html! {
        @if o.state == OrderState::Unknown.as_str() { (resolve_forms(s, o.id)) }
        @if o.state == OrderState::Placed.as_str() { (end_form(s, o.id)) }
        @if settleable { (settle_form(s, o.id)) }
    }
}

fn resolve_forms(s: &Session, id: i64) -> Markup {
    let to = order_write(id, "resolve");
    let why = "Its upstream may or may not have taken it: look there, then say which.";
    forms_section(
        "Resolve this order",
        why,
        html! {
            (form(s, "resolve-placed", &to, field("Upstream order id", "upstream_order", "", true), "Placed as this order"))
            (form(s, "resolve-not-placed", &to, html! {
                input type="hidden" name="not_placed" value="true";
                span { "Cancels it and refunds the whole charge." }
            }, "Not placed"))
        },
    )
}

fn end_form(s: &Session, id: i64) -> Markup {
    let why = "For an order its upstream no longer reports (stuck): check the upstream's own \
        panel first, then end it here with the final status shown there. Partial refunds the \
        remains' share of the charge; Canceled refunds all of it.";
    forms_section(
        "End this order",
        why,
        html! {
            (form(s, "resolve-ended", &order_write(id, "resolve"), html! {
                label { span { "Final status" } select name="status" {
                    @for st in Status::FINAL { option value=(st.as_str()) { (st.as_str()) } }
                } }
                (field("Remains (with Partial)", "remains", "not delivered", false))
            }, "End with this status"))
        },
    )
}

fn settle_form(s: &Session, id: i64) -> Markup {
    let why = "No refund was made automatically: decide what the customer gets back (0 for \
        nothing), at most what is still refundable, and say why.";
    forms_section(
        "Settle the refund",
        why,
        html! {
            (form(s, "settle", &order_write(id, "settle"), html! {
                (field("Refund", "refund", "0.50", true))
                (field("Note", "note", "who decided, and why", true))
            }, "Settle"))
        },
    )
}

/// A heading, what its forms are for, and the forms.
fn forms_section(title: &str, why: &str, forms: Markup) -> Markup {
    html! {
        h2 { (title) }
        p.muted { (why) }
        div.forms { (forms) }
    }
}
