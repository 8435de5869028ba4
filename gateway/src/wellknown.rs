//! The OAuth metadata documents (SPEC §4.4, §9.4), built in one place for the MCP surface, the
//! portal and the portal API's `wellknown` view.

use serde_json::{Value, json};

use crate::state::App;

/// RFC 9728 protected-resource metadata: where clients learn how to authenticate (API keys, or
/// the OIDC issuer's tokens when one is configured). The root document describes the whole
/// gateway (`resource` is its base URL, a prefix of every MCP endpoint, `/t/{id}/mcp`
/// included); the path-suffixed form (`/.well-known/oauth-protected-resource/mcp`) describes
/// that path.
pub fn protected_resource(app: &App, headers: &http::HeaderMap, path: Option<&str>) -> Value {
    let base = crate::api::base_url(app, headers);
    let resource = match path.map(|p| p.trim_matches('/')).filter(|p| !p.is_empty()) {
        Some(p) => format!("{base}/{p}"),
        None => base.clone(),
    };
    let servers: Vec<&str> = app
        .oidc
        .as_ref()
        .map(|o| vec![o.options.issuer.as_str()])
        .unwrap_or_default();
    json!({
        "resource": resource,
        "authorization_servers": servers,
        "bearer_methods_supported": ["header"],
        "resource_name": "Understudy",
    })
}

/// The authorization-server stub: the issuer and where its own metadata is (`None`: no OIDC).
pub async fn authorization_server(app: &App) -> Option<Value> {
    let oidc = app.oidc.as_ref()?;
    let issuer = &oidc.options.issuer;
    let mut doc = json!({
        "issuer": issuer,
        "metadata_url": format!("{issuer}/.well-known/openid-configuration"),
    });
    if let Ok(m) = oidc.metadata().await {
        doc["authorization_endpoint"] = json!(m.authorization_endpoint);
        doc["token_endpoint"] = json!(m.token_endpoint);
        doc["jwks_uri"] = json!(m.jwks_uri);
    }
    Some(doc)
}
