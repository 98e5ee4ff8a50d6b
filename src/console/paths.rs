//! The console's paths (docs/console.md): what each names, which methods it takes, and the
//! links to pages, percent-encoded where they hold a name.

use http::Method;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::admin_api::ApiError;
use crate::admin_api::routes::{CUSTOMER_PARTS, segments};

/// Where the console lives; the JSON API keeps `/admin/api/`.
pub const ROOT: &str = "/admin/";
pub const LOGIN: &str = "/admin/login";
pub const CSS: &str = "/admin/assets/console.css";

/// A page to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Page {
    Overview,
    Customers,
    Customer(String),
    Orders,
    Order(i64),
    Upstreams,
    Catalog,
    Audit,
}

/// A form that changes something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    CreateCustomer,
    /// `/admin/customers/{name}/{what}`: the admin API's customer parts, the ledger aside.
    Customer(String, &'static str),
    /// `/admin/orders/{id}/resolve`: placed as, not placed, or ended with a final status.
    Resolve(i64),
    Settle(i64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/admin`, which only redirects.
    Bare,
    Css,
    Login,
    Logout,
    Page(Page),
    Write(Write),
}

/// Whether the console answers `path` (rather than the JSON API).
pub fn serves(path: &str) -> bool {
    let api = path == "/admin/api" || path.starts_with("/admin/api/");
    path == "/admin" || (path.starts_with(ROOT) && !api)
}

impl Route {
    pub fn parse(path: &str) -> Result<Route, ApiError> {
        let unknown = || ApiError::not_found(format!("no such page: {path}"));
        if path == "/admin" {
            return Ok(Route::Bare);
        }
        let rest = path.strip_prefix(ROOT).ok_or_else(unknown)?;
        let segments = segments(rest)?;
        let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
        let id = |s: &str| s.parse::<i64>().map_err(|_| unknown());
        Ok(match seg.as_slice() {
            [""] => Route::Page(Page::Overview),
            ["login"] => Route::Login,
            ["logout"] => Route::Logout,
            ["assets", "console.css"] => Route::Css,
            ["customers"] => Route::Page(Page::Customers),
            ["customers", name] if !name.is_empty() => {
                Route::Page(Page::Customer(name.to_string()))
            }
            ["customers", name, part] if !name.is_empty() => {
                let part = CUSTOMER_PARTS
                    .into_iter()
                    .filter(|p| *p != "ledger")
                    .find(|p| p == part)
                    .ok_or_else(unknown)?;
                Route::Write(Write::Customer(name.to_string(), part))
            }
            ["orders"] => Route::Page(Page::Orders),
            ["orders", n] => Route::Page(Page::Order(id(n)?)),
            ["orders", n, "resolve"] => Route::Write(Write::Resolve(id(n)?)),
            ["orders", n, "settle"] => Route::Write(Write::Settle(id(n)?)),
            ["upstreams"] => Route::Page(Page::Upstreams),
            ["catalog"] => Route::Page(Page::Catalog),
            ["audit"] => Route::Page(Page::Audit),
            _ => return Err(unknown()),
        })
    }

    pub fn methods(&self) -> &'static [Method] {
        match self {
            Route::Bare => &[Method::GET, Method::HEAD, Method::POST],
            Route::Login => &[Method::GET, Method::POST],
            Route::Logout => &[Method::POST],
            Route::Page(Page::Customers) => &[Method::GET, Method::POST],
            Route::Write(_) => &[Method::POST],
            _ => &[Method::GET],
        }
    }
}

impl Write {
    /// The page a write belongs to: where it redirects, and what shows its refusal.
    pub fn page(&self) -> Page {
        match self {
            Write::CreateCustomer => Page::Customers,
            Write::Customer(name, _) => Page::Customer(name.clone()),
            Write::Resolve(id) | Write::Settle(id) => Page::Order(*id),
        }
    }
}

/// What `encodeURIComponent` leaves alone.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

impl Page {
    pub fn href(&self) -> String {
        match self {
            Page::Overview => ROOT.to_owned(),
            Page::Customers => "/admin/customers".to_owned(),
            Page::Customer(name) => {
                format!("/admin/customers/{}", utf8_percent_encode(name, SEGMENT))
            }
            Page::Orders => "/admin/orders".to_owned(),
            Page::Order(id) => format!("/admin/orders/{id}"),
            Page::Upstreams => "/admin/upstreams".to_owned(),
            Page::Catalog => "/admin/catalog".to_owned(),
            Page::Audit => "/admin/audit".to_owned(),
        }
    }

    /// This page with a query of `pairs` (empty values left out).
    pub fn with_query(&self, pairs: &[(&str, &str)]) -> String {
        let given: Vec<_> = pairs.iter().filter(|(_, v)| !v.is_empty()).collect();
        match serde_urlencoded::to_string(given) {
            Ok(q) if !q.is_empty() => format!("{}?{q}", self.href()),
            _ => self.href(),
        }
    }
}

/// The path of write `part` of order `id`.
pub fn order_write(id: i64, part: &str) -> String {
    format!("{}/{part}", Page::Order(id).href())
}

/// The path of write `part` of customer `name`.
pub fn customer_write(name: &str, part: &str) -> String {
    format!("{}/{part}", Page::Customer(name.to_owned()).href())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_pages_and_writes_and_names_round_trip() {
        let odd = "a/b \"<c>\"?#%";
        let href = Page::Customer(odd.into()).href();
        assert_eq!(
            Route::parse(&href).unwrap(),
            Route::Page(Page::Customer(odd.into()))
        );
        assert_eq!(
            Route::parse(&customer_write(odd, "rotate-key")).unwrap(),
            Route::Write(Write::Customer(odd.into(), "rotate-key"))
        );
        assert_eq!(
            Route::parse("/admin/orders/7/settle").unwrap(),
            Route::Write(Write::Settle(7))
        );
        assert!(Route::parse("/admin/customers/x/ledger").is_err());
        assert!(Route::parse("/admin/orders/x").is_err());
        assert!(serves("/admin") && serves("/admin/") && !serves("/admin/api/v1/customers"));
        assert!(!serves("/admin/api") && !serves("/") && !serves("/administer"));
        assert_eq!(
            Page::Orders.with_query(&[("state", ""), ("customer", "a b")]),
            "/admin/orders?customer=a+b"
        );
    }
}
