//! Who is at the console: logging in with an admin token, the session cookie, the CSRF token
//! of each session, and the origin check of every POST.
//!
//! The cookie holds a random 256-bit id; the store keeps only its SHA-256, tied to the token
//! it was opened with, so every instance on one database accepts it and revoking the token
//! ends it. The CSRF token is derived from the id (a keyed hash of it), so it needs no storage
//! and reveals nothing about the id; it is compared in constant time.

use std::net::SocketAddr;
use std::time::Duration;

use cookie::{Cookie, SameSite};
use http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::admin_api::ApiError;
use crate::clock::now_millis;
use crate::guard::{Guard, retry_after_secs};
use crate::keys;
use crate::store::admin::{Role, SessionLimits};
use crate::store::{KeyHash, Millis, Store};

/// The session cookie's name.
pub const COOKIE: &str = "panelgate_console";
/// The one-time message's cookie (see [`super::flash`]).
pub const FLASH_COOKIE: &str = "panelgate_flash";

/// A session ends this long after it was opened, however busy.
pub const ABSOLUTE: Duration = Duration::from_secs(12 * 3600);
/// A session ends after this long without a request.
pub const IDLE: Duration = Duration::from_secs(2 * 3600);

/// A logged-in operator.
pub struct Session {
    /// The token's name: the actor of the audit trail.
    pub name: String,
    pub role: Role,
    /// What every form of this session carries.
    pub csrf: String,
    id: KeyHash,
}

impl Session {
    pub fn writes(&self) -> bool {
        self.role == Role::Write
    }

    /// Whether `given` is this session's CSRF token (in constant time).
    pub fn csrf_matches(&self, given: Option<&str>) -> bool {
        given.is_some_and(|g| g.as_bytes().ct_eq(self.csrf.as_bytes()).into())
    }
}

fn limits(now: Millis) -> SessionLimits {
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    SessionLimits {
        opened_after: now - ms(ABSOLUTE),
        seen_after: now - ms(IDLE),
    }
}

fn csrf_of(id: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"panelgate console csrf\0");
    h.update(id.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The value of cookie `name` in the request, if sent.
pub fn cookie(parts: &Parts, name: &str) -> Option<String> {
    parts
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

/// The session the request's cookie names, if it is open and its token still exists.
pub async fn current(store: &dyn Store, parts: &Parts) -> Result<Option<Session>, ApiError> {
    let Some(id) = cookie(parts, COOKIE).filter(|id| !id.is_empty()) else {
        return Ok(None);
    };
    let now = now_millis();
    let hash = keys::hash(&id);
    let token = store.session_token(&hash, &limits(now), now).await?;
    Ok(token.map(|t| Session {
        name: t.name,
        role: t.role,
        csrf: csrf_of(&id),
        id: hash,
    }))
}

/// Checks `token` and opens a session for it: the cookie's id. Failures count against the
/// address like bad API tokens (401, then 429).
pub async fn log_in(
    store: &dyn Store,
    guard: &Guard,
    peer: SocketAddr,
    token: &str,
) -> Result<String, ApiError> {
    if let Err(wait) = guard.admit_address(peer.ip()) {
        return Err(ApiError::too_many(retry_after_secs(wait)));
    }
    let hash = keys::hash(token.trim());
    let found = match token.trim() {
        "" => None,
        _ => store.admin_token_by_hash(&hash).await?,
    };
    let Some(found) = found.filter(|t| keys::matches(&t.hash, &hash)) else {
        guard.failed_key(peer.ip());
        guard.sweep();
        return Err(ApiError::new(
            http::StatusCode::UNAUTHORIZED,
            "unauthorized",
            "that is not a valid admin token",
        ));
    };
    let id = keys::generate()
        .map_err(|e| ApiError::bad_request(format!("no randomness for a session: {e}")))?;
    let now = now_millis();
    store
        .open_session(&keys::hash(&id), &found.hash, &limits(now), now)
        .await?;
    Ok(id)
}

pub async fn log_out(store: &dyn Store, session: &Session) -> Result<(), ApiError> {
    Ok(store.close_session(&session.id).await?)
}

/// Whether the request came over TLS as the browser sees it: this listener's own, or a
/// proxy's in front of it that says so.
pub fn secure(parts: &Parts, tls: bool) -> bool {
    tls || header(parts, "x-forwarded-proto").is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

fn header<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts.headers.get(name).and_then(|v| v.to_str().ok())
}

/// A POST's `Origin`, when sent, must be this listener's own (as the browser addressed it:
/// `Host`, or the proxy's `X-Forwarded-Host`). Browsers send it with every cross-site POST,
/// and a page elsewhere cannot forge it or those headers.
pub fn same_origin(parts: &Parts, tls: bool) -> bool {
    let Some(origin) = header(parts, "origin") else {
        return true;
    };
    let host = header(parts, "x-forwarded-host").or_else(|| header(parts, "host"));
    let scheme = if secure(parts, tls) { "https" } else { "http" };
    host.is_some_and(|h| origin.eq_ignore_ascii_case(&format!("{scheme}://{h}")))
}

fn base(name: &str, value: String, secure: bool) -> cookie::CookieBuilder<'static> {
    Cookie::build((name.to_owned(), value))
        .path("/admin")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
}

/// The session cookie: it ends with the browser, and the store ends it sooner (see
/// [`ABSOLUTE`], [`IDLE`]).
pub fn session_cookie(id: String, secure: bool) -> String {
    base(COOKIE, id, secure).build().to_string()
}

/// A cookie `name` the browser drops at once.
pub fn removal(name: &str, secure: bool) -> String {
    base(name, String::new(), secure)
        .max_age(time::Duration::ZERO)
        .build()
        .to_string()
}

/// A short-lived cookie (a minute) with `value`.
pub fn brief(name: &str, value: String, secure: bool) -> String {
    base(name, value, secure)
        .max_age(time::Duration::minutes(1))
        .build()
        .to_string()
}
