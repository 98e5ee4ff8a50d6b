//! The overview: orders by state, the money of today and the last 30 days with their chart,
//! the upstreams' health, and the orders awaiting the operator.

use maud::{Markup, html};

use crate::admin_api::shapes::Overview;
use crate::admin_api::{ApiError, read};
use crate::clock::now_millis;
use crate::console::chart::chart;
use crate::console::layout::when;
use crate::console::paths::Page;
use crate::gateway::Gateway;
use crate::store::{AttentionFilter, Order, OrderFilter};

/// Orders awaiting the operator listed, newest first (the heading counts them all).
const ATTENTION_SHOWN: u32 = 50;

pub async fn overview(gw: &Gateway) -> Result<Markup, ApiError> {
    let o = read::overview(gw, now_millis()).await?;
    let waiting = OrderFilter {
        attention: Some(AttentionFilter::Any),
        limit: Some(ATTENTION_SHOWN),
        ..OrderFilter::default()
    };
    let waiting = gw.store.list_orders(&waiting).await?;
    Ok(html! {
        (states(&o))
        (money(&o))
        (health(&o))
        (attention(&o, &waiting))
    })
}

fn states(o: &Overview) -> Markup {
    html! {
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
    }
}

fn money(o: &Overview) -> Markup {
    html! {
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
    }
}

fn health(o: &Overview) -> Markup {
    html! {
        section {
            h2 { "Upstreams" }
            ul #upstream-health {
                @for u in &o.upstreams {
                    li.healthy[u.healthy].unhealthy[!u.healthy] data-upstream=(u.name) {
                        (u.name) ": " (if u.healthy { "healthy" } else { "unhealthy" })
                        " (breaker " (u.breaker) ")"
                    }
                }
            }
        }
    }
}

fn attention(o: &Overview, waiting: &[Order]) -> Markup {
    let total: u64 = o.attention.iter().map(|a| a.count).sum();
    html! {
        section {
            h2 { "Awaiting the operator (" (total) ")" }
            table #attention {
                thead { tr { th { "Order" } th { "Why" } th { "Customer" } th { "Upstream" } th { "State" } th { "Placed" } } }
                tbody {
                    @for o in waiting {
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
    }
}
