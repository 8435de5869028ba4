//! `/openapi.json`: the OpenAPI 3.1 document of the public tenant API and the admin API,
//! generated from the Rust types and handlers (utoipa).

use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{admin, public};
use crate::api;
use crate::state::App;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(title = "Understudy public and admin API", description = "Tenants, scenarios and chaos at run time (SPEC §8); API keys (SPEC §9.3). Errors use {\"error\":{\"code\",\"message\"}}."),
    paths(
        public::list_tenants, public::create_tenant, public::get_tenant, public::delete_tenant,
        public::put_state, public::get_settings, public::patch_settings, public::reset_tenant,
        public::list_scenarios, public::add_scenario, public::delete_scenario,
        public::get_chaos, public::put_chaos,
        admin::create_key, admin::list_keys, admin::revoke_key,
    ),
    components(schemas(api::ErrorBody, api::ErrorDetail, api::Code)),
    modifiers(&Security),
    tags((name = "tenants"), (name = "scenarios"), (name = "chaos"), (name = "admin"))
)]
pub struct ApiDoc;

/// `GET /openapi.json`.
/// The surface: its routes, label and prefixes; unknown paths under them get the envelope 404.
pub fn surface() -> crate::surface::Surface {
    crate::surface::Surface {
        label: "ops",
        router: router(),
        prefixes: &["/openapi.json"],
        reject: crate::surface::envelope_reject,
    }
}

/// The routes.
pub fn router() -> Router<App> {
    Router::new().route("/openapi.json", get(document))
}

async fn document() -> Response {
    axum::Json(ApiDoc::openapi()).into_response()
}
