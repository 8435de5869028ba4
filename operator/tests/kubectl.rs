//! `kubectl get` output explains itself (issue 14, item 4): the printer columns of the generated
//! CRDs, evaluated on the objects after a pass the way `kubectl` and the API server do (schema
//! defaults filled in, JSONPath columns, blank where the path is absent).

mod common;

use std::sync::Arc;

use common::{SHOP, create_all, inputs, listed};
use serde_json::{Value, json};
use understudy_core::Stores;
use understudy_crds::resources::{ChaosProfile, Scenario, Tenant};
use understudy_e2e::RedisServer;
use understudy_operator::metrics::Metrics;
use understudy_operator::reconcile::{Reconciler, Settings};
use understudy_operator::testkit::FakeApi;

/// The API server's structural defaulting: `default` of every absent property, recursively.
fn fill_defaults(schema: &Value, v: &mut Value) {
    let (Some(props), Some(obj)) = (schema["properties"].as_object(), v.as_object_mut()) else {
        return;
    };
    for (k, p) in props {
        if !obj.contains_key(k)
            && let Some(d) = p.get("default")
        {
            obj.insert(k.clone(), d.clone());
        }
        if let Some(child) = obj.get_mut(k) {
            fill_defaults(p, child);
        }
    }
}

/// The few JSONPath forms the columns use: `.a.b` and `.a.list[?(@.type=="Ready")].field`.
fn jsonpath(v: &Value, path: &str) -> Option<Value> {
    let mut cur = v.clone();
    let mut rest = path.strip_prefix('.')?;
    while !rest.is_empty() {
        let (seg, tail) = match rest.find(['.', '[']) {
            Some(i) if rest.as_bytes()[i] == b'[' => {
                let close = rest.find(")]")? + 2;
                (
                    &rest[..close],
                    rest[close..].strip_prefix('.').unwrap_or(""),
                )
            }
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        cur = match seg.split_once("[?(@.") {
            Some((field, filter)) => {
                let (key, want) = filter.strip_suffix(")]")?.split_once("==")?;
                let want = want.trim_matches('"');
                cur[field]
                    .as_array()?
                    .iter()
                    .find(|c| c[key].as_str() == Some(want))?
                    .clone()
            }
            None => cur.get(seg)?.clone(),
        };
        rest = tail;
    }
    (!cur.is_null()).then_some(cur)
}

/// `kubectl get` of one object: column name → value (`None`: blank).
fn row<K: kube::CustomResourceExt + serde::Serialize>(obj: &K) -> Vec<(String, Option<Value>)> {
    let crd = K::crd();
    let version = &crd.spec.versions[0];
    let schema =
        serde_json::to_value(version.schema.as_ref().unwrap()).unwrap()["openAPIV3Schema"].clone();
    let mut v = serde_json::to_value(obj).unwrap();
    fill_defaults(&schema, &mut v);
    version
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .filter(|c| c.name != "Age")
        .map(|c| (c.name.clone(), jsonpath(&v, &c.json_path)))
        .collect()
}

fn cols(pairs: &[(&str, Option<Value>)]) -> Vec<(String, Option<Value>)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

#[tokio::test]
async fn kubectl_get_shows_reasons_defaults_and_blanks() {
    let redis = RedisServer::start().unwrap();
    let (api, client) = FakeApi::start();
    let mut reconciler = Reconciler::new(
        client,
        Stores::redis(&redis.url()).unwrap(),
        Arc::new(Metrics::new()),
        Settings::default(),
    );
    let yaml = format!(
        r#"{SHOP}
---
apiVersion: understudy.dev/v1alpha1
kind: Tenant
metadata: {{name: copycat, namespace: staging}}
spec: {{tenantId: tenant_shop}}
---
apiVersion: understudy.dev/v1alpha1
kind: Scenario
metadata: {{name: copied, namespace: staging}}
spec: {{tenantRef: copycat, keywords: [x], response: y, priority: 5}}
---
apiVersion: understudy.dev/v1alpha1
kind: Tenant
metadata: {{name: limited, namespace: staging}}
spec: {{}}
---
apiVersion: understudy.dev/v1alpha1
kind: ChaosProfile
metadata: {{name: limit, namespace: staging}}
spec: {{tenantRef: limited, profile: rate_limit, limit: 5, probability: 0.5}}
---
apiVersion: understudy.dev/v1alpha1
kind: ChaosProfile
metadata: {{name: every-third, namespace: staging}}
spec: {{tenantRef: copycat, profile: server_error, every: 3}}
"#
    );
    create_all(&api, &inputs(&yaml));
    reconciler.reconcile(&listed(&api)).await;
    reconciler.reconcile(&listed(&api)).await;

    let t: Tenant = api.get("staging", "shop").unwrap();
    assert_eq!(
        row(&t),
        cols(&[
            ("Tenant ID", Some(json!("tenant_shop"))),
            ("Visibility", Some(json!("global"))),
            ("Ready", Some(json!("True"))),
            ("Reason", Some(json!("Synced"))),
            ("Scenarios", Some(json!(2))),
            ("Chaos", Some(json!("latency"))),
            ("Requests", Some(json!(0))),
        ])
    );
    let t: Tenant = api.get("staging", "copycat").unwrap();
    assert_eq!(row(&t)[3].1, Some(json!("DuplicateTenantId")));

    // PRIORITY shows its default; REASON says why a Scenario is not served, naming its Tenant.
    let s: Scenario = api.get("staging", "refunds").unwrap();
    assert_eq!(
        row(&s),
        cols(&[
            ("Tenant", Some(json!("shop"))),
            ("Tool", None),
            ("Priority", Some(json!(0))),
            ("Ready", Some(json!("True"))),
            ("Reason", Some(json!("Synced"))),
            ("Hits", Some(json!(0))),
        ])
    );
    let s: Scenario = api.get("staging", "copied").unwrap();
    let r = row(&s);
    assert_eq!(r[2].1, Some(json!(5)));
    assert_eq!(
        (r[3].1.clone(), r[4].1.clone()),
        (Some(json!("False")), Some(json!("TenantNotReady")))
    );
    let message = &s.status.unwrap().conditions[0].message;
    assert!(
        message.contains("Tenant staging/copycat is not in force (DuplicateTenantId)"),
        "{message}"
    );

    // PROBABILITY where the profile uses it (its default included), blank where it does not.
    let probability = |name: &str| {
        let c: ChaosProfile = api.get("staging", name).unwrap();
        let r = row(&c);
        assert_eq!(r[2].0, "Probability");
        r[2].1.clone()
    };
    assert_eq!(probability("slow"), Some(json!(1.0)), "latency, default 1");
    assert_eq!(probability("limit"), None, "rate_limit counts instead");
    assert_eq!(probability("every-third"), None, "every selects instead");
    let c: ChaosProfile = api.get("staging", "every-third").unwrap();
    assert_eq!(row(&c)[4].1, Some(json!("TenantNotReady")));

    // A profile that stops using it loses the column's value (a merge patch with null).
    api.update_spec::<ChaosProfile>(
        "staging",
        "slow",
        json!({"tenantRef": "shop", "profile": "rate_limit", "limit": 1}),
    );
    reconciler.reconcile(&listed(&api)).await;
    assert_eq!(probability("slow"), None);
    api.update_spec::<ChaosProfile>(
        "staging",
        "slow",
        json!({"tenantRef": "shop", "profile": "server_error", "probability": 0.25}),
    );
    reconciler.reconcile(&listed(&api)).await;
    assert_eq!(probability("slow"), Some(json!(0.25)));
}
