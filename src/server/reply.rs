//! Replies, and the one table that turns every refusal (of the transport, of a route, of the
//! protocol) into its reply.

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;

use super::Reply;
use crate::protocol::{ProtocolError, reply};

/// Why a request gets an error instead of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Neither GET nor POST.
    Method,
    /// The body is over `max_body_bytes`; the rest of it is never read.
    TooLarge,
    /// The body broke off or did not arrive in time.
    Unreadable,
    /// Nothing is served at this path.
    NotFound,
    /// The protocol's refusal, as the API states it.
    Protocol(ProtocolError),
}

impl From<ProtocolError> for Refused {
    fn from(e: ProtocolError) -> Refused {
        Refused::Protocol(e)
    }
}

/// The table. Protocol refusals use 200 (clients ignore the status, and some lose the text
/// on a 4xx), except refusals of the transport itself, which may use 4xx/5xx.
impl From<Refused> for Reply {
    fn from(refused: Refused) -> Reply {
        let incorrect = ProtocolError::IncorrectRequest.to_string();
        match refused {
            Refused::Method => error_reply(StatusCode::METHOD_NOT_ALLOWED, &incorrect),
            Refused::Unreadable => error_reply(StatusCode::BAD_REQUEST, &incorrect),
            Refused::NotFound => error_reply(StatusCode::NOT_FOUND, "Not found"),
            Refused::TooLarge => {
                // The rest of the body is never read, so the connection cannot carry another
                // request: say so, and hyper closes it after the reply.
                let mut r = protocol_error(&ProtocolError::BodyTooLarge);
                r.headers_mut()
                    .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                r
            }
            Refused::Protocol(e) => {
                let (status, retry_after) = match e {
                    ProtocolError::BodyTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, None),
                    ProtocolError::TooManyRequests(s) | ProtocolError::TooManyKeyAttempts(s) => {
                        (StatusCode::TOO_MANY_REQUESTS, Some(s))
                    }
                    _ => (StatusCode::OK, None),
                };
                let mut reply = error_reply(status, &e.to_string());
                if let Some(secs) = retry_after {
                    reply
                        .headers_mut()
                        .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
                }
                reply
            }
        }
    }
}

/// A JSON reply with the given status. Clients read the body whatever the status.
pub fn json_reply(status: StatusCode, body: Bytes) -> Reply {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

/// `200 {"body"}`: the protocol's normal reply.
pub fn ok(body: Bytes) -> Reply {
    json_reply(StatusCode::OK, body)
}

/// `{"error": text}` with a status.
pub fn error_reply(status: StatusCode, text: &str) -> Reply {
    json_reply(status, reply::error_bytes(text))
}

/// A protocol refusal, by [the table](Refused).
pub fn protocol_error(e: &ProtocolError) -> Reply {
    Refused::Protocol(e.clone()).into()
}

pub fn not_found() -> Reply {
    Refused::NotFound.into()
}
