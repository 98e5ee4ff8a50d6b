//! The admin API's endpoints. Each is described by its `#[utoipa::path]`, from which
//! [`super::openapi`] builds the document: what is served and what is described are one.

use http::{Method, StatusCode};
use rust_decimal::Decimal;
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::{IntoResponses, OpenApi};

use super::openapi::Bearer;
use super::shapes::*;
use super::{ApiError, Call, PREFIX, input, read};
use crate::admin;
use crate::app::Live;
use crate::gateway::Gateway;
use crate::operator::Operator;
use crate::server::{Reply, json_reply};

/// What a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Customers,
    Customer(String),
    /// `/customers/{name}/{what}`: credit, debit, ledger, disable, enable, rotate-key, group,
    /// credit-limit.
    CustomerPart(String, &'static str),
    Orders,
    Order(i64),
    Resolve(i64),
    Upstreams,
    Catalog,
    Audit,
    Overview,
}

pub const CUSTOMER_PARTS: [&str; 8] = [
    "credit",
    "debit",
    "ledger",
    "disable",
    "enable",
    "rotate-key",
    "group",
    "credit-limit",
];

impl Route {
    /// See [`segments`].
    pub fn parse(path: &str) -> Result<Route, ApiError> {
        let unknown = || ApiError::not_found(format!("no such path: {path}"));
        let rest = path.strip_prefix(PREFIX).ok_or_else(unknown)?;
        let segments = segments(rest.strip_prefix('/').ok_or_else(unknown)?)?;
        let id = |s: &str| s.parse::<i64>().map_err(|_| unknown());
        let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
        Ok(match seg.as_slice() {
            ["customers"] => Route::Customers,
            ["customers", name] if !name.is_empty() => Route::Customer((*name).to_owned()),
            ["customers", name, part] if !name.is_empty() => {
                let part = CUSTOMER_PARTS
                    .into_iter()
                    .find(|p| p == part)
                    .ok_or_else(unknown)?;
                Route::CustomerPart((*name).to_owned(), part)
            }
            ["orders"] => Route::Orders,
            ["orders", n] => Route::Order(id(n)?),
            ["orders", n, "resolve"] => Route::Resolve(id(n)?),
            ["upstreams"] => Route::Upstreams,
            ["catalog"] => Route::Catalog,
            ["audit"] => Route::Audit,
            ["overview"] => Route::Overview,
            _ => return Err(unknown()),
        })
    }

    pub fn methods(&self) -> &'static [Method] {
        match self {
            Route::Customers => &[Method::GET, Method::POST],
            Route::CustomerPart(_, "ledger") => &[Method::GET],
            Route::CustomerPart(..) | Route::Resolve(_) => &[Method::POST],
            _ => &[Method::GET],
        }
    }
}

/// A resolve request that says neither or both.
pub const RESOLVE_EITHER: &str = "give either a non-empty upstream_order or \"not_placed\": true";

/// The segments of `path` (below a prefix), each percent-decoded after splitting, so that a
/// name holding `/` is sent as `%2F` and found.
pub fn segments(path: &str) -> Result<Vec<String>, ApiError> {
    let segments: Vec<String> = path
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(String::from)
        })
        .collect::<Result<_, _>>()
        .map_err(|_| ApiError::bad_request("the path is not UTF-8 once decoded"))?;
    if segments.iter().any(|s| s.contains('\0')) {
        return Err(ApiError::bad_request("the path must not contain NUL"));
    }
    Ok(segments)
}

/// The document: every endpoint below, from its own annotation.
#[derive(OpenApi)]
#[openapi(
    info(title = "panelgate admin API", description = "docs/admin-api.md"),
    paths(
        list_customers,
        create_customer,
        get_customer,
        credit,
        debit,
        ledger,
        disable,
        enable,
        rotate_key,
        set_group,
        set_credit_limit,
        list_orders,
        get_order,
        resolve,
        audit,
        upstreams,
        catalog,
        overview,
    ),
    components(schemas(ErrorBody)),
    modifiers(&Bearer)
)]
pub struct Doc;

/// The refusals every endpoint may answer.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum Refusals {
    /// Malformed request: bad JSON, unknown fields, a bad amount or parameter.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// No token, or not a valid one.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// A read token asked to write.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// The row is not in a state for this (or the idempotency key was used otherwise).
    #[response(status = 409)]
    Conflict(ErrorBody),
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// Too many failed token attempts from this address.
    #[response(status = 429)]
    TooMany(ErrorBody),
    /// The database does not answer.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

struct Ctx<'a> {
    gw: &'a Gateway,
    call: &'a Call,
}

impl Ctx<'_> {
    fn operator(&self) -> Operator<'_> {
        Operator {
            store: self.gw.store.as_ref(),
            cfg: &self.gw.cfg,
            actor: &self.call.actor,
        }
    }

    fn query<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        input::query(self.call.query.as_deref().unwrap_or(""))
    }

    fn body<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        // JSON can only carry NUL as this escape (a raw one is invalid).
        if self
            .call
            .body
            .windows(6)
            .any(|w| w.eq_ignore_ascii_case(b"\\u0000"))
        {
            return Err(ApiError::bad_request("body: text must not contain NUL"));
        }
        serde_json::from_slice(&self.call.body)
            .map_err(|e| ApiError::bad_request(format!("body: {e}")))
    }
}

pub async fn dispatch(live: &Live, method: &Method, call: &Call) -> Result<Reply, ApiError> {
    let gw = live.gateway();
    let c = Ctx { gw: &gw, call };
    let get = method == Method::GET;
    match &call.route {
        Route::Customers if get => list_customers(&c).await,
        Route::Customers => create_customer(&c).await,
        Route::Customer(name) => get_customer(&c, name).await,
        Route::CustomerPart(name, "credit") => credit(&c, name).await,
        Route::CustomerPart(name, "debit") => debit(&c, name).await,
        Route::CustomerPart(name, "ledger") => ledger(&c, name).await,
        Route::CustomerPart(name, "disable") => disable(&c, name).await,
        Route::CustomerPart(name, "enable") => enable(&c, name).await,
        Route::CustomerPart(name, "rotate-key") => rotate_key(&c, name).await,
        Route::CustomerPart(name, "group") => set_group(&c, name).await,
        Route::CustomerPart(name, _) => set_credit_limit(&c, name).await,
        Route::Orders => list_orders(&c).await,
        Route::Order(id) => get_order(&c, *id).await,
        Route::Resolve(id) => resolve(&c, *id).await,
        Route::Upstreams => upstreams(&c).await,
        Route::Catalog => catalog(&c).await,
        Route::Audit => audit(&c).await,
        Route::Overview => overview(&c).await,
    }
}

fn reply(status: StatusCode, body: &impl Serialize) -> Result<Reply, ApiError> {
    let bytes = serde_json::to_vec(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(json_reply(status, bytes.into()))
}

fn ok(body: &impl Serialize) -> Result<Reply, ApiError> {
    reply(StatusCode::OK, body)
}

#[utoipa::path(get, path = "/admin/api/v1/customers", params(CustomerQuery),
    responses((status = 200, body = CustomerPage), Refusals), security(("bearer" = [])))]
async fn list_customers(c: &Ctx<'_>) -> Result<Reply, ApiError> {
    ok(&read::customers(c.gw, &c.query()?).await?)
}

#[utoipa::path(post, path = "/admin/api/v1/customers", request_body = NewCustomer,
    responses((status = 201, body = CreatedCustomer), Refusals), security(("bearer" = [])))]
async fn create_customer(c: &Ctx<'_>) -> Result<Reply, ApiError> {
    let new: NewCustomer = c.body()?;
    let money = |v: &Option<String>, what| {
        v.as_deref()
            .map_or(Ok(Decimal::ZERO), |t| input::money(t, what))
    };
    let balance = money(&new.balance, "balance")?;
    let credit_limit = money(&new.credit_limit, "credit_limit")?;
    let group = new.group.as_deref().unwrap_or(crate::config::DEFAULT_GROUP);
    let (customer, key) = c
        .operator()
        .add_client(&new.name, balance, group, credit_limit)
        .await?;
    let created = CreatedCustomer {
        id: customer.id,
        name: customer.name,
        key,
        balance: amount(customer.balance),
    };
    reply(StatusCode::CREATED, &created)
}

#[utoipa::path(get, path = "/admin/api/v1/customers/{name}",
    params(("name" = String, Path, description = "The customer's name, percent-encoded")),
    responses((status = 200, body = CustomerView), Refusals), security(("bearer" = [])))]
async fn get_customer(c: &Ctx<'_>, name: &str) -> Result<Reply, ApiError> {
    ok(&read::customer(c.gw, name).await?)
}

#[utoipa::path(post, path = "/admin/api/v1/customers/{name}/credit",
    params(("name" = String, Path), ("Idempotency-Key" = Option<String>, Header,
        pattern = "^[!-~]{1,255}$",
        description = "A retried request with the same key is applied once and answers the same")),
    request_body = AmountRequest,
    responses((status = 200, body = BalanceView), Refusals), security(("bearer" = [])))]
async fn credit(c: &Ctx<'_>, name: &str) -> Result<Reply, ApiError> {
    adjust(c, name, false).await
}

#[utoipa::path(post, path = "/admin/api/v1/customers/{name}/debit",
    params(("name" = String, Path), ("Idempotency-Key" = Option<String>, Header,
        pattern = "^[!-~]{1,255}$")),
    request_body = AmountRequest,
    responses((status = 200, body = BalanceView), Refusals), security(("bearer" = [])))]
async fn debit(c: &Ctx<'_>, name: &str) -> Result<Reply, ApiError> {
    adjust(c, name, true).await
}

async fn adjust(c: &Ctx<'_>, name: &str, debit: bool) -> Result<Reply, ApiError> {
    let req: AmountRequest = c.body()?;
    let amount = input::positive(&req.amount, "amount")?;
    let signed = if debit { -amount } else { amount };
    let key = input::idempotency_key(c.call.idempotency_key.as_deref())?;
    let done = c
        .operator()
        .adjust(name, signed, req.note.as_deref(), key)
        .await?;
    ok(&BalanceView {
        name: done.name,
        balance: super::shapes::amount(done.balance),
    })
}

#[utoipa::path(get, path = "/admin/api/v1/customers/{name}/ledger",
    params(("name" = String, Path), PageQuery),
    responses((status = 200, body = LedgerPage), Refusals), security(("bearer" = [])))]
async fn ledger(c: &Ctx<'_>, name: &str) -> Result<Reply, ApiError> {
    ok(&read::ledger(c.gw, name, &c.query()?).await?)
}

#[utoipa::path(post, path = "/admin/api/v1/customers/{name}/disable",
    params(("name" = String, Path)),
    responses((status = 200, body = CustomerView), Refusals), security(("bearer" = [])))]
async fn disable(c: &Ctx<'_>, name: &str) -> Result<Reply, ApiError> {
    set_enabled(c, name, false).await
}

#[utoipa::path(post, path = "/admin/api/v1/customers/{name}/enable",
    params(("name" = String, Path)),
    responses((status = 200, body = CustomerView), Refusals), security(("bearer" = [])))]
async fn enable(c: &Ctx<'_>, name: &str) -> Result<Reply, ApiError> {
    set_enabled(c, name, true).await
}

async fn set_enabled(c: &Ctx<'_>, name: &str, enabled: bool) -> Result<Reply, ApiError> {
    c.operator().set_enabled(name, enabled).await?;
    get_customer(c, name).await
}

#[utoipa::path(post, path = "/admin/api/v1/customers/{name}/rotate-key",
    params(("name" = String, Path)),
    responses((status = 200, body = NewKey), Refusals), security(("bearer" = [])))]
async fn rotate_key(c: &Ctx<'_>, name: &str) -> Result<Reply, ApiError> {
    let key = c.operator().rotate_key(name).await?;
    ok(&NewKey {
        name: name.to_owned(),
        key,
    })
}

#[utoipa::path(post, path = "/admin/api/v1/customers/{name}/group",
    params(("name" = String, Path)), request_body = GroupRequest,
    responses((status = 200, body = CustomerView), Refusals), security(("bearer" = [])))]
async fn set_group(c: &Ctx<'_>, name: &str) -> Result<Reply, ApiError> {
    let req: GroupRequest = c.body()?;
    c.operator().set_group(name, &req.group).await?;
    get_customer(c, name).await
}

#[utoipa::path(post, path = "/admin/api/v1/customers/{name}/credit-limit",
    params(("name" = String, Path)), request_body = CreditLimitRequest,
    responses((status = 200, body = CustomerView), Refusals), security(("bearer" = [])))]
async fn set_credit_limit(c: &Ctx<'_>, name: &str) -> Result<Reply, ApiError> {
    let req: CreditLimitRequest = c.body()?;
    let limit = input::money(&req.credit_limit, "credit_limit")?;
    let customer = c.operator().set_credit_limit(name, limit).await?;
    ok(&CustomerView::new(&customer, None))
}

#[utoipa::path(get, path = "/admin/api/v1/orders", params(OrderQuery),
    responses((status = 200, body = OrderPage), Refusals), security(("bearer" = [])))]
async fn list_orders(c: &Ctx<'_>) -> Result<Reply, ApiError> {
    ok(&read::orders(c.gw, &c.query()?).await?)
}

#[utoipa::path(get, path = "/admin/api/v1/orders/{id}", params(("id" = i64, Path)),
    responses((status = 200, body = OrderDetail), Refusals), security(("bearer" = [])))]
async fn get_order(c: &Ctx<'_>, id: i64) -> Result<Reply, ApiError> {
    ok(&read::order(c.gw, id).await?)
}

#[utoipa::path(post, path = "/admin/api/v1/orders/{id}/resolve", params(("id" = i64, Path)),
    request_body = ResolveRequest,
    responses((status = 200, body = Resolved), Refusals), security(("bearer" = [])))]
async fn resolve(c: &Ctx<'_>, id: i64) -> Result<Reply, ApiError> {
    let upstream_order = match c.body()? {
        ResolveRequest::Placed(p) if !p.upstream_order.trim().is_empty() => Some(p.upstream_order),
        ResolveRequest::NotPlaced(NotPlaced { not_placed: true }) => None,
        _ => {
            return Err(ApiError::bad_request(RESOLVE_EITHER));
        }
    };
    let message = c.operator().resolve(id, upstream_order.as_deref()).await?;
    let order = admin::show_order(c.gw.store.as_ref(), id).await?;
    ok(&Resolved {
        message,
        order: OrderView::from(&order),
    })
}

#[utoipa::path(get, path = "/admin/api/v1/audit", params(PageQuery),
    responses((status = 200, body = AuditPage), Refusals), security(("bearer" = [])))]
async fn audit(c: &Ctx<'_>) -> Result<Reply, ApiError> {
    ok(&read::audit(c.gw, &c.query()?).await?)
}

#[utoipa::path(get, path = "/admin/api/v1/upstreams",
    responses((status = 200, body = Vec<UpstreamView>), Refusals), security(("bearer" = [])))]
async fn upstreams(c: &Ctx<'_>) -> Result<Reply, ApiError> {
    ok(&read::upstreams(c.gw).await?)
}

#[utoipa::path(get, path = "/admin/api/v1/catalog",
    responses((status = 200, body = Vec<CatalogEntry>), Refusals), security(("bearer" = [])))]
async fn catalog(c: &Ctx<'_>) -> Result<Reply, ApiError> {
    ok(&read::catalog(c.gw))
}

#[utoipa::path(get, path = "/admin/api/v1/overview",
    responses((status = 200, body = Overview), Refusals), security(("bearer" = [])))]
async fn overview(c: &Ctx<'_>) -> Result<Reply, ApiError> {
    ok(&read::overview(c.gw, crate::clock::now_millis()).await?)
}
