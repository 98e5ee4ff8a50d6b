//! The admin API's JSON: what requests may say (unknown fields refused) and what replies say.
//! Money is a decimal string, as in the API v2 protocol; times are Unix milliseconds.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::money;
use crate::store::admin::AuditEntry;
use crate::store::{Customer, LedgerEntry, Order, OrderState, Units};

// The patterns below are written out again in the attributes (which take literals only);
// `openapi::tests` checks that the document says what the code checks.

/// An amount a request gives: at most 10 digits before the point and 5 after it.
pub const MONEY: &str = r"^[0-9]{1,10}(\.[0-9]{1,5})?$";

/// The same, above zero.
pub const POSITIVE: &str = r"^(0{0,3}[1-9][0-9]{0,9}(\.[0-9]{1,5})?|0{1,3}\.([1-9][0-9]{0,4}|0[1-9][0-9]{0,3}|00[1-9][0-9]{0,2}|000[1-9][0-9]?|0000[1-9]))$";

/// An id cursor as the lists give them.
pub const ID_CURSOR: &str = "^[0-9]{1,18}$";

/// Units as the decimal string the API shows.
pub fn amount(units: Units) -> String {
    money::format(money::from_units(units))
}

/// Every refusal: a text for people and a code for programs.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
    /// `bad_request`, `unauthorized`, `forbidden`, `not_found`, `method_not_allowed`,
    /// `conflict`, `insufficient_funds`, `payload_too_large`, `too_many_requests`,
    /// `unavailable`.
    pub code: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCustomer {
    #[schema(min_length = 1, pattern = r"\S")]
    pub name: String,
    /// Opening balance (default 0).
    #[schema(pattern = r"^[0-9]{1,10}(\.[0-9]{1,5})?$")]
    pub balance: Option<String>,
    /// Price group (default `default`); one the config names, else 404.
    pub group: Option<String>,
    /// How far below zero the balance may go (default 0).
    #[schema(pattern = r"^[0-9]{1,10}(\.[0-9]{1,5})?$")]
    pub credit_limit: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedCustomer {
    pub id: i64,
    pub name: String,
    /// The API key: shown here once, never again.
    pub key: String,
    pub balance: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerView {
    pub id: i64,
    pub name: String,
    pub group: String,
    pub balance: String,
    pub credit_limit: String,
    pub enabled: bool,
    pub created_at: i64,
    /// Orders placed, when listed.
    pub orders: Option<u64>,
}

impl CustomerView {
    pub fn new(c: &Customer, orders: Option<u64>) -> CustomerView {
        CustomerView {
            id: c.id,
            name: c.name.clone(),
            group: c.group.clone(),
            balance: amount(c.balance),
            credit_limit: amount(c.credit_limit),
            enabled: c.enabled,
            created_at: c.created_at,
            orders,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerPage {
    pub items: Vec<CustomerView>,
    /// Pass as `cursor` for the next page; null at the end.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AmountRequest {
    /// A positive decimal string, at most 5 decimals: `"12.50"`.
    #[schema(
        pattern = r"^(0{0,3}[1-9][0-9]{0,9}(\.[0-9]{1,5})?|0{1,3}\.([1-9][0-9]{0,4}|0[1-9][0-9]{0,3}|00[1-9][0-9]{0,2}|000[1-9][0-9]?|0000[1-9]))$"
    )]
    pub amount: String,
    pub note: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BalanceView {
    pub name: String,
    pub balance: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NewKey {
    pub name: String,
    /// The new API key: shown here once; the old one no longer works.
    pub key: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupRequest {
    pub group: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreditLimitRequest {
    /// A decimal string, 0 or more.
    #[schema(pattern = r"^[0-9]{1,10}(\.[0-9]{1,5})?$")]
    pub credit_limit: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LedgerEntryView {
    pub id: i64,
    /// Signed: money in is positive.
    pub amount: String,
    /// `credit`, `debit`, `charge`, `release` or `refund`.
    pub kind: String,
    pub order_id: Option<i64>,
    pub note: Option<String>,
    pub created_at: i64,
}

impl From<&LedgerEntry> for LedgerEntryView {
    fn from(e: &LedgerEntry) -> Self {
        LedgerEntryView {
            id: e.id,
            amount: amount(e.amount),
            kind: e.kind.as_str().to_owned(),
            order_id: e.order_id,
            note: e.note.clone(),
            created_at: e.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LedgerPage {
    pub items: Vec<LedgerEntryView>,
    pub next_cursor: Option<String>,
}

/// `?limit=&cursor=`: at most `limit` items (1 to 500, default 50) after `cursor`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// From the previous page's `next_cursor`.
    #[param(pattern = "^[0-9]{1,18}$")]
    pub cursor: Option<String>,
}

/// `?q=&limit=&cursor=`: customers whose name contains `q`, by name.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CustomerQuery {
    /// A part of the name.
    pub q: Option<String>,
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// Order filters, all optional; newest first.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OrderQuery {
    #[param(inline)]
    pub state: Option<StateName>,
    pub customer: Option<String>,
    pub upstream: Option<String>,
    /// The local service id.
    #[param(minimum = 0)]
    pub service: Option<i64>,
    /// Created at or after (Unix milliseconds).
    pub since: Option<i64>,
    /// Created before (Unix milliseconds).
    pub until: Option<i64>,
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    #[param(pattern = "^[0-9]{1,18}$")]
    pub cursor: Option<String>,
}

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StateName {
    Dispatching,
    Placed,
    Rejected,
    Unknown,
    Final,
}

impl From<StateName> for OrderState {
    fn from(s: StateName) -> OrderState {
        match s {
            StateName::Dispatching => OrderState::Dispatching,
            StateName::Placed => OrderState::Placed,
            StateName::Rejected => OrderState::Rejected,
            StateName::Unknown => OrderState::Unknown,
            StateName::Final => OrderState::Final,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderView {
    pub id: i64,
    pub customer: String,
    pub service: u64,
    pub state: String,
    /// What the customer sees.
    pub status: String,
    pub charge: String,
    pub refunded: String,
    /// What the upstream charged us, as last reported.
    pub cost: Option<String>,
    pub upstream: String,
    pub upstream_service: u64,
    pub upstream_order: Option<String>,
    pub remains: Option<i64>,
    pub start_count: Option<u64>,
    pub link: Option<String>,
    pub note: Option<String>,
    /// Why the operator must look at it, if they must.
    pub attention: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub synced_at: Option<i64>,
}

impl From<&Order> for OrderView {
    fn from(o: &Order) -> Self {
        OrderView {
            id: o.id,
            customer: o.customer.clone(),
            service: o.service,
            state: o.state.as_str().to_owned(),
            status: o.status.as_str().to_owned(),
            charge: amount(o.charge),
            refunded: amount(o.refunded),
            cost: o.cost.map(amount),
            upstream: o.upstream.clone(),
            upstream_service: o.upstream_service,
            upstream_order: o.upstream_order.clone(),
            remains: o.remains,
            start_count: o.start_count,
            link: o.link.clone(),
            note: o.note.clone(),
            attention: o.attention.map(|a| a.as_str().to_owned()),
            created_at: o.created_at,
            updated_at: o.updated_at,
            synced_at: o.synced_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderPage {
    pub items: Vec<OrderView>,
    pub next_cursor: Option<String>,
}

/// One order in full: what it is now, and every ledger entry it caused (the charge, a
/// release, refunds) in the order they happened.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderDetail {
    pub order: OrderView,
    /// The ledger entries of the order, oldest first.
    pub history: Vec<LedgerEntryView>,
}

/// Placed upstream as `upstream_order`, or not placed at all (Canceled, full refund).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ResolveRequest {
    Placed(PlacedAs),
    NotPlaced(NotPlaced),
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlacedAs {
    /// The upstream's id for the order.
    #[schema(min_length = 1, pattern = r"\S")]
    pub upstream_order: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotPlaced {
    /// `true`: the upstream never took it.
    #[schema(schema_with = only_true)]
    pub not_placed: bool,
}

fn only_true() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Boolean)
        .enum_values(Some([true]))
        .build()
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Resolved {
    pub message: String,
    pub order: OrderView,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditView {
    pub id: i64,
    pub at: i64,
    /// The token's name, or `cli`.
    pub actor: String,
    pub action: String,
    pub target: String,
    /// `ok`, or the error code the caller got.
    pub outcome: String,
}

impl From<&AuditEntry> for AuditView {
    fn from(a: &AuditEntry) -> Self {
        AuditView {
            id: a.id,
            at: a.at,
            actor: a.actor.clone(),
            action: a.action.clone(),
            target: a.target.clone(),
            outcome: a.outcome.clone(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UpstreamView {
    pub name: String,
    pub healthy: bool,
    /// `closed`, `open` or `half_open`.
    pub breaker: String,
    pub balance: Option<String>,
    pub currency: Option<String>,
    /// Why the balance could not be read, if it could not.
    pub last_error: Option<String>,
    /// How long the balance call took, in milliseconds.
    pub latency_ms: Option<u64>,
    /// Orders dispatching, placed or unknown there.
    pub open_orders: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TargetView {
    pub upstream: String,
    pub service: u64,
    /// Its price per 1000 in our currency; null when its upstream no longer lists it.
    pub cost: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PriceView {
    pub group: String,
    /// The sell price per 1000.
    pub rate: String,
    /// Rate minus the primary target's cost.
    pub margin: Option<String>,
    /// A target would sell below its cost at this price.
    pub below_cost: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CatalogEntry {
    pub service: u64,
    pub name: String,
    pub targets: Vec<TargetView>,
    pub prices: Vec<PriceView>,
}

/// The figures of the console's overview page.
#[derive(Debug, Serialize, ToSchema)]
pub struct Overview {
    /// Every state, with how many orders are in it.
    pub orders_by_state: Vec<StateCount>,
    /// The current UTC day.
    pub today: MoneyView,
    /// The 30 UTC days ending today.
    pub last_30_days: MoneyView,
    /// Those 30 days one by one, oldest first, days without orders included (as zeros).
    pub days: Vec<DayView>,
    /// Orders awaiting the operator, by reason and upstream (`GET /orders` lists them).
    pub attention: Vec<AttentionCount>,
    /// Each upstream's health as this instance sees it (no call is made to them).
    pub upstreams: Vec<UpstreamHealth>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StateCount {
    pub state: String,
    pub count: u64,
}

/// Money of the orders placed in a span of days: revenue is what was charged less refunds,
/// cost what the upstreams reported charging, margin the difference.
#[derive(Debug, Serialize, ToSchema)]
pub struct MoneyView {
    pub revenue: String,
    pub cost: String,
    pub margin: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DayView {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    #[serde(flatten)]
    pub money: MoneyView,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttentionCount {
    /// `unknown_outcome`, `refund_unknown`, `partial_without_remains` or `stuck`.
    pub reason: String,
    pub upstream: String,
    pub count: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UpstreamHealth {
    pub name: String,
    pub healthy: bool,
    /// `closed`, `open` or `half_open`.
    pub breaker: String,
}
