//! Shared helpers: resources from inline YAML.

#![allow(dead_code)]

use serde::Deserialize;
use understudy_crds::resources::{ChaosProfile, Scenario, Tenant};
use understudy_operator::plan::Inputs;

/// A Tenant in `staging` with two Scenarios (one with a tool) and a latency ChaosProfile.
pub const SHOP: &str = r#"
apiVersion: understudy.dev/v1alpha1
kind: Tenant
metadata: {name: shop, namespace: staging}
spec: {tenantId: tenant_shop, defaultResponse: "How can I help?"}
---
apiVersion: understudy.dev/v1alpha1
kind: Scenario
metadata: {name: invoices, namespace: staging}
spec:
  tenantRef: shop
  keywords: [invoice]
  response: "Two invoices."
  toolName: get_invoices
---
apiVersion: understudy.dev/v1alpha1
kind: Scenario
metadata: {name: refunds, namespace: staging}
spec: {tenantRef: shop, keywords: [refund], response: "Refunded."}
---
apiVersion: understudy.dev/v1alpha1
kind: ChaosProfile
metadata: {name: slow, namespace: staging}
spec: {tenantRef: shop, profile: latency, latencyMs: 100}
"#;

/// Parses multi-document YAML into resources; documents get the namespace `default` unless
/// they name one, and creation timestamps in document order.
pub fn inputs(yaml: &str) -> Inputs {
    let mut out = Inputs::default();
    for (i, doc) in serde_yaml::Deserializer::from_str(yaml).enumerate() {
        let mut v = serde_json::Value::deserialize(doc).expect("valid YAML");
        if v.is_null() {
            continue;
        }
        let meta = &mut v["metadata"];
        if meta["namespace"].is_null() {
            meta["namespace"] = "default".into();
        }
        meta["creationTimestamp"] = format!("2026-01-01T00:{:02}:{:02}Z", i / 60, i % 60).into();
        if meta["generation"].is_null() {
            meta["generation"] = 1.into();
        }
        match v["kind"].as_str() {
            Some("Tenant") => out.tenants.push(serde_json::from_value(v).expect("Tenant")),
            Some("Scenario") => out
                .scenarios
                .push(serde_json::from_value(v).expect("Scenario")),
            Some("ChaosProfile") => out
                .chaos
                .push(serde_json::from_value(v).expect("ChaosProfile")),
            other => panic!("unexpected kind {other:?}"),
        }
    }
    out
}

/// Creates every resource of `inputs` in the fake API server, in order.
pub fn create_all(api: &understudy_operator::testkit::FakeApi, inputs: &Inputs) {
    for t in &inputs.tenants {
        api.create::<Tenant>(t);
    }
    for s in &inputs.scenarios {
        api.create::<Scenario>(s);
    }
    for c in &inputs.chaos {
        api.create::<ChaosProfile>(c);
    }
}

/// What a watch cache would hold now.
pub fn listed(api: &understudy_operator::testkit::FakeApi) -> Inputs {
    Inputs {
        tenants: api.list::<Tenant>(),
        scenarios: api.list::<Scenario>(),
        chaos: api.list::<ChaosProfile>(),
    }
}
