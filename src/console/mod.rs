//! The operator's web console (docs/console.md): server-rendered pages under `/admin/` on the
//! admin listener, beside the JSON API, showing what the API's reads answer and writing
//! through the same [`crate::operator::Operator`].
//!
//! A request is routed (unknown path 404, wrong method 405); a POST from another origin is
//! refused (403); then it needs a session ([`session`]; without one: to the login page), a
//! POST the session's CSRF token (403) and a write token (403). A write that succeeds
//! redirects to its page with a one-time message; a refused one shows the page again with
//! the API's error text and status.

mod chart;
mod forms;
mod layout;
mod pages;
mod paths;
mod session;

use std::net::SocketAddr;
use std::sync::Arc;

use http::request::Parts;
use http::{HeaderValue, Method, StatusCode};
use hyper::body::Incoming;
use maud::html;
use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use crate::admin_api::{ApiError, read_body};
use crate::app::Live;
use crate::guard::Guard;
use crate::server::Reply;
use forms::{Done, Form};
use layout::Notice;
use paths::{Page, Route, Write};
use session::{FLASH_COOKIE, Session};

pub use paths::serves;

/// The console of one admin listener.
pub struct Console {
    live: Arc<Live>,
    /// Whether the listener itself speaks TLS (then the cookie is `Secure`).
    tls: bool,
}

/// One request's head, with what the console knows of its connection.
struct Asked {
    parts: Parts,
    peer: SocketAddr,
    secure: bool,
}

impl Console {
    pub fn new(live: Arc<Live>, tls: bool) -> Console {
        Console { live, tls }
    }

    pub async fn answer(
        &self,
        req: http::Request<Incoming>,
        peer: SocketAddr,
        guard: &Guard,
    ) -> Reply {
        let (parts, body) = req.into_parts();
        let asked = Asked {
            secure: session::secure(&parts, self.tls),
            parts,
            peer,
        };
        let route = match Route::parse(asked.parts.uri.path()) {
            Ok(Route::Page(Page::Customers)) if asked.parts.method == Method::POST => {
                Route::Write(Write::CreateCustomer)
            }
            Ok(route) => route,
            Err(e) => return refusal(None, &e),
        };
        if !route.methods().contains(&asked.parts.method) {
            return not_allowed(route.methods());
        }
        match route {
            Route::Bare => layout::redirect(paths::ROOT),
            Route::Css => layout::stylesheet(),
            Route::Login if asked.parts.method == Method::GET => login_page(StatusCode::OK, None),
            route => self.with_session(asked, body, route, guard).await,
        }
    }

    async fn with_session(
        &self,
        asked: Asked,
        body: Incoming,
        route: Route,
        guard: &Guard,
    ) -> Reply {
        let post = asked.parts.method == Method::POST;
        if post && !session::same_origin(&asked.parts, self.tls) {
            let e = forbidden("this form was sent from another site");
            return refusal(None, &e);
        }
        if route == Route::Login {
            return self.log_in(&asked, body, guard).await;
        }
        let gw = self.live.gateway();
        let s = match session::current(gw.store.as_ref(), &asked.parts).await {
            Ok(Some(s)) => s,
            Ok(None) => return layout::to_login(),
            Err(e) => return refusal(None, &e),
        };
        match route {
            Route::Page(page) => self.show(&asked, &s, &page).await,
            route => self.post(&asked, body, &s, route).await,
        }
    }

    async fn log_in(&self, asked: &Asked, body: Incoming, guard: &Guard) -> Reply {
        let store = self.live.gateway().store.clone();
        let token = match read_body(body).await.and_then(|b| Form::parse(&b)) {
            Ok(form) => form.get("token").unwrap_or("").to_owned(),
            Err(e) => return login_page(e.status, Some(&e.message)),
        };
        match session::log_in(store.as_ref(), guard, asked.peer, &token).await {
            Ok(id) => layout::set_cookie(
                layout::redirect(paths::ROOT),
                &session::session_cookie(id, asked.secure),
            ),
            Err(e) => {
                let mut reply = login_page(e.status, Some(&e.message));
                if let Some(wait) = e.retry_after() {
                    reply
                        .headers_mut()
                        .insert(http::header::RETRY_AFTER, HeaderValue::from(wait));
                }
                reply
            }
        }
    }

    /// A page, with the message a write left for it (shown once).
    async fn show(&self, asked: &Asked, s: &Session, page: &Page) -> Reply {
        let flash = session::cookie(&asked.parts, FLASH_COOKIE)
            .map(|f| percent_decode_str(&f).decode_utf8_lossy().into_owned());
        let notice = Notice {
            flash: flash.clone(),
            ..Notice::default()
        };
        let reply = self
            .page(s, page, asked.parts.uri.query(), &notice, StatusCode::OK)
            .await;
        match flash {
            Some(_) => layout::set_cookie(reply, &session::removal(FLASH_COOKIE, asked.secure)),
            None => reply,
        }
    }

    async fn page(
        &self,
        s: &Session,
        page: &Page,
        query: Option<&str>,
        notice: &Notice,
        status: StatusCode,
    ) -> Reply {
        let gw = self.live.gateway();
        match pages::render(&gw, s, page, query, notice).await {
            Ok(markup) => layout::html(status, markup),
            // The page itself cannot be shown (no such customer, a bad filter): say why,
            // and what the write said if there was one.
            Err(e) => {
                let text = notice.error.as_deref().unwrap_or(&e.message);
                let status = if notice.error.is_some() {
                    status
                } else {
                    e.status
                };
                refusal_with(Some(s), status, text)
            }
        }
    }

    async fn post(&self, asked: &Asked, body: Incoming, s: &Session, route: Route) -> Reply {
        let form = match read_body(body).await.and_then(|b| Form::parse(&b)) {
            Ok(form) => form,
            Err(e) => return refusal(Some(s), &e),
        };
        if !s.csrf_matches(form.get("csrf")) {
            let e = forbidden(
                "this form is not from this session (it may be old): reload the page and try again",
            );
            return refusal(Some(s), &e);
        }
        let write = match route {
            Route::Logout => return self.log_out(asked, s).await,
            Route::Write(write) if s.writes() => write,
            _ => return refusal(Some(s), &forbidden("this token may only read")),
        };
        let gw = self.live.gateway();
        let page = write.page();
        match forms::apply(&gw, &s.name, &write, &form).await {
            Ok(Done::Redirect(message)) => {
                let flash = utf8_percent_encode(&message, NON_ALPHANUMERIC).to_string();
                let cookie = session::brief(FLASH_COOKIE, flash, asked.secure);
                layout::set_cookie(layout::redirect(&page.href()), &cookie)
            }
            Ok(Done::NewKey { name, key, message }) => {
                let notice = Notice {
                    flash: Some(message),
                    new_key: Some(key),
                    error: None,
                };
                self.page(s, &Page::Customer(name), None, &notice, StatusCode::OK)
                    .await
            }
            Err(e) => {
                self.page(s, &page, None, &Notice::error(&e.message), e.status)
                    .await
            }
        }
    }

    async fn log_out(&self, asked: &Asked, s: &Session) -> Reply {
        let store = self.live.gateway().store.clone();
        if let Err(e) = session::log_out(store.as_ref(), s).await {
            return refusal(Some(s), &e);
        }
        let gone = session::removal(session::COOKIE, asked.secure);
        layout::set_cookie(layout::to_login(), &gone)
    }
}

fn forbidden(text: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", text)
}

fn login_page(status: StatusCode, error: Option<&str>) -> Reply {
    let notice = Notice {
        error: error.map(str::to_owned),
        ..Notice::default()
    };
    let content = html! {
        form #login method="post" action=(paths::LOGIN) {
            label {
                span { "Admin token" }
                input type="password" name="token" autocomplete="current-password" required autofocus;
            }
            button type="submit" { "Log in" }
        }
        p.muted { "Make a token with " code { "panelgate admin token add NAME" } "." }
    };
    layout::html(status, layout::page("Log in", None, &notice, content))
}

/// A page saying why a request was refused, with the navigation when logged in.
fn refusal(s: Option<&Session>, e: &ApiError) -> Reply {
    refusal_with(s, e.status, &e.message)
}

fn refusal_with(s: Option<&Session>, status: StatusCode, text: &str) -> Reply {
    let title = status.canonical_reason().unwrap_or("Refused");
    let back = html! { p { a href=(paths::ROOT) { "Back to the overview" } } };
    layout::html(status, layout::page(title, s, &Notice::error(text), back))
}

fn not_allowed(methods: &[Method]) -> Reply {
    let e = ApiError::method_not_allowed(methods);
    let mut reply = refusal(None, &e);
    let allow: Vec<&str> = methods.iter().map(Method::as_str).collect();
    if let Ok(v) = HeaderValue::from_str(&allow.join(", ")) {
        reply.headers_mut().insert(http::header::ALLOW, v);
    }
    reply
}
