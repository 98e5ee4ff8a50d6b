//! The OpenAPI 3 document of the admin API, built from the endpoints' own annotations and the
//! shapes' derives, served (without a token: it holds no data) at `/admin/api/v1/openapi.json`.

use std::sync::LazyLock;

use http::StatusCode;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};


use super::routes::Doc;
use crate::server::{Reply, json_reply};

pub(super) struct Bearer;

impl Modify for Bearer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document as served (built once).
pub fn json() -> &'static str {
    static DOC: LazyLock<String> =
        LazyLock::new(|| Doc::openapi().to_pretty_json().unwrap_or_default());
    &DOC
}

pub fn reply() -> Reply {
    json_reply(StatusCode::OK, bytes::Bytes::from_static(json().as_bytes()))
}
