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

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::json;
    use crate::admin_api::shapes::{ID_CURSOR, MONEY, POSITIVE};

    /// The patterns the attributes spell out are the ones the code checks.
    #[test]
    fn the_document_states_the_patterns_the_code_checks() {
        let doc: Value = serde_json::from_str(json()).unwrap();
        let schemas = &doc["components"]["schemas"];
        let property =
            |schema: &str, field: &str| schemas[schema]["properties"][field]["pattern"].clone();
        assert_eq!(property("AmountRequest", "amount"), POSITIVE);
        assert_eq!(property("CreditLimitRequest", "credit_limit"), MONEY);
        assert_eq!(property("NewCustomer", "balance"), MONEY);
        assert_eq!(property("NewCustomer", "credit_limit"), MONEY);
        let ledger = &doc["paths"]["/admin/api/v1/customers/{name}/ledger"]["get"];
        let cursor = ledger["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "cursor")
            .unwrap();
        assert_eq!(cursor["schema"]["pattern"], ID_CURSOR);
    }
}
