//! An API request read off the wire: method, body within the limits, parameters, key header.

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{Method, Request};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::{Limits, Refused};
use crate::protocol::{ApiRequest, Params};

/// `/api/v2` and `/api/v2/` alike: a redirect would turn a client's POST into a body-less GET.
pub fn is_api_path(path: &str) -> bool {
    matches!(path, "/api/v2" | "/api/v2/")
}

/// Reads an API request's parameters from its query string and body, within the limits.
pub async fn read_api_request(
    req: Request<Incoming>,
    limits: &Limits,
) -> Result<ApiRequest, Refused> {
    if req.method() != Method::POST && req.method() != Method::GET {
        return Err(Refused::Method);
    }
    let (parts, body) = read_body(req, limits).await?;
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let params = Params::from_parts(
        parts.uri.query(),
        header(CONTENT_TYPE.as_str()).as_deref(),
        &body,
    )?;
    Ok(ApiRequest {
        params,
        key_header: header("x-api-key"),
        accepts_gzip: parts
            .headers
            .get_all(http::header::ACCEPT_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(accepts_gzip),
    })
}

/// The request's head and its whole body, within the size and time limits. A body declared
/// too large is refused before any of it is read.
async fn read_body(
    req: Request<Incoming>,
    limits: &Limits,
) -> Result<(http::request::Parts, Bytes), Refused> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limits.max_body_bytes as u64) {
        return Err(Refused::TooLarge);
    }
    let (parts, body) = req.into_parts();
    let collected = tokio::time::timeout(
        limits.body_read_timeout,
        Limited::new(body, limits.max_body_bytes).collect(),
    )
    .await;
    match collected {
        Ok(Ok(body)) => Ok((parts, body.to_bytes())),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(Refused::TooLarge),
        Ok(Err(_)) | Err(_) => Err(Refused::Unreadable),
    }
}

/// Whether an `Accept-Encoding` value allows gzip: named (or `*`) without `q=0`.
pub fn accepts_gzip(value: &str) -> bool {
    value.split(',').any(|coding| {
        let mut parts = coding.split(';').map(str::trim);
        let name = parts.next().unwrap_or("");
        let refused = parts.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
    })
}

#[cfg(test)]
mod tests {
    use super::accepts_gzip;

    #[test]
    fn gzip_is_sent_only_where_accept_encoding_allows_it() {
        for yes in [
            "gzip",
            "GZIP",
            "deflate, gzip",
            "gzip;q=0.5",
            "*",
            "br, * ;q=1",
        ] {
            assert!(accepts_gzip(yes), "{yes}");
        }
        for no in [
            "",
            "identity",
            "deflate, br",
            "gzip;q=0",
            "gzip; q=0.0",
            "x-gzip2",
        ] {
            assert!(!accepts_gzip(no), "{no}");
        }
    }
}
