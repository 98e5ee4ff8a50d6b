//! The frame of every console page (head, navigation, messages), the pieces pages share, and
//! the HTTP replies that carry them, each with the headers that keep a page from being
//! framed, cached or made to run script from elsewhere.
//!
//! Every page is a maud template: text is escaped as it is written, so what a customer chose
//! (a name, an order's link) is shown as text and never read as markup.

use std::sync::LazyLock;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use maud::{DOCTYPE, Markup, html};
use sha2::{Digest, Sha256};

use super::paths::{CSS, LOGIN, Page};
use super::session::Session;
use crate::server::Reply;

/// No script, no style, image or font from anywhere else; forms post here only; no framing.
const CSP: &str = "default-src 'self'; script-src 'none'; style-src 'self'; img-src 'self' data:; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub const STYLESHEET: &str = include_str!("console.css");

/// The stylesheet's link: its content's hash in the query, so that it can be cached for a
/// year and a new release's is fetched anew.
fn css_href() -> &'static str {
    static HREF: LazyLock<String> = LazyLock::new(|| {
        let hash = Sha256::digest(STYLESHEET.as_bytes());
        let short: String = hash[..6].iter().map(|b| format!("{b:02x}")).collect();
        format!("{CSS}?v={short}")
    });
    &HREF
}

/// What a page says besides its content.
#[derive(Debug, Default)]
pub struct Notice {
    /// What the last write did.
    pub flash: Option<String>,
    /// Why a write or a page was refused.
    pub error: Option<String>,
    /// A customer's new API key, shown this once.
    pub new_key: Option<String>,
}

impl Notice {
    pub fn error(text: impl Into<String>) -> Notice {
        Notice {
            error: Some(text.into()),
            ..Notice::default()
        }
    }
}

/// A whole page: the navigation when someone is logged in, the messages, then `content`.
pub fn page(title: &str, session: Option<&Session>, notice: &Notice, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · panelgate" }
                link rel="stylesheet" href=(css_href());
            }
            body {
                @if let Some(s) = session { (nav(s)) }
                main {
                    h1 { (title) }
                    @if let Some(text) = &notice.flash { p.flash role="status" { (text) } }
                    @if let Some(text) = &notice.error { p.error role="alert" { (text) } }
                    (content)
                }
            }
        }
    }
}

fn nav(s: &Session) -> Markup {
    let links = [
        ("nav-overview", Page::Overview, "Overview"),
        ("nav-customers", Page::Customers, "Customers"),
        ("nav-orders", Page::Orders, "Orders"),
        ("nav-upstreams", Page::Upstreams, "Upstreams"),
        ("nav-catalog", Page::Catalog, "Catalog"),
        ("nav-audit", Page::Audit, "Audit"),
    ];
    html! {
        nav {
            span.brand { "panelgate" }
            @for (id, page, label) in links { a id=(id) href=(page.href()) { (label) } }
            span #whoami { (s.name) " (" (s.role.as_str()) ")" }
            form #logout method="post" action="/admin/logout" {
                (csrf(s))
                button type="submit" { "Log out" }
            }
        }
    }
}

/// The hidden field every state-changing form carries.
pub fn csrf(s: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(s.csrf); }
}

/// A POST form to `action` with the session's CSRF token, `fields` and a submit button.
pub fn form(s: &Session, id: &str, action: &str, fields: Markup, submit: &str) -> Markup {
    html! {
        form id=(id) method="post" action=(action) {
            (csrf(s))
            (fields)
            button type="submit" { (submit) }
        }
    }
}

/// A labelled text input.
pub fn field(label: &str, name: &str, placeholder: &str, required: bool) -> Markup {
    html! {
        label {
            span { (label) }
            input type="text" name=(name) placeholder=(placeholder) required[required];
        }
    }
}

/// A link to the next page of a list, if there is one.
pub fn next_page(href: Option<String>) -> Markup {
    html! {
        @if let Some(href) = href { p.pager { a #next-page href=(href) { "Next page →" } } }
    }
}

/// Unix milliseconds as a UTC date and time.
pub fn when(ms: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// The headers every console reply carries.
fn secured(mut reply: Reply, cache: &'static str) -> Reply {
    let h = reply.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    reply
}

fn reply(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

pub fn html(status: StatusCode, markup: Markup) -> Reply {
    let body = Bytes::from(markup.into_string());
    secured(reply(status, "text/html; charset=utf-8", body), "no-store")
}

/// `303 See Other` to `to` (after a POST, the browser GETs it).
pub fn redirect(to: &str) -> Reply {
    let mut r = html(StatusCode::SEE_OTHER, html! { a href=(to) { (to) } });
    if let Ok(location) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, location);
    }
    r
}

pub fn to_login() -> Reply {
    redirect(LOGIN)
}

pub fn stylesheet() -> Reply {
    let body = Bytes::from_static(STYLESHEET.as_bytes());
    let r = reply(StatusCode::OK, "text/css; charset=utf-8", body);
    secured(r, "public, max-age=31536000, immutable")
}

/// Adds a `Set-Cookie` to a reply.
pub fn set_cookie(mut reply: Reply, cookie: &str) -> Reply {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        reply.headers_mut().append(header::SET_COOKIE, v);
    }
    reply
}
