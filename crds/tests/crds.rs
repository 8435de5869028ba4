//! The committed CRD YAML matches the Rust types, and the example manifests build.

use understudy_crds::manifests::load_dir;
use understudy_crds::model::ConfigSource;

#[test]
fn committed_crds_are_fresh() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("understudy.yaml");
    let committed = std::fs::read_to_string(&path).expect("crds/understudy.yaml exists");
    assert!(
        committed == understudy_crds::crds_yaml(),
        "crds/understudy.yaml is stale: run `cargo run -p understudy-crds --bin crdgen > crds/understudy.yaml && cp crds/understudy.yaml charts/understudy/crds/`"
    );
}

#[test]
fn crds_are_structural_and_carry_printer_columns() {
    for crd in understudy_crds::crds() {
        let v = &crd.spec.versions[0];
        assert!(
            v.subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{} has a status subresource",
            crd.spec.names.kind
        );
        assert!(
            v.additional_printer_columns
                .as_ref()
                .is_some_and(|c| c.len() >= 4)
        );
        assert!(
            crd.spec
                .names
                .short_names
                .as_ref()
                .is_some_and(|s| !s.is_empty())
        );
        let schema = serde_json::to_value(v.schema.as_ref().unwrap()).unwrap();
        // Structural: every property has a type or preserves unknown fields.
        fn walk(v: &serde_json::Value, path: &str) {
            if let Some(props) = v.get("properties").and_then(|p| p.as_object()) {
                for (k, p) in props {
                    let ok = p.get("type").is_some()
                        || p.get("x-kubernetes-preserve-unknown-fields")
                            == Some(&serde_json::Value::Bool(true))
                        || p.get("x-kubernetes-int-or-string").is_some();
                    assert!(ok, "{path}.{k} has no type");
                    walk(p, &format!("{path}.{k}"));
                }
            }
            if let Some(items) = v.get("items") {
                walk(items, &format!("{path}[]"));
            }
        }
        walk(&schema["openAPIV3Schema"], &crd.spec.names.kind);
    }
}

#[test]
fn every_example_manifest_loads() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let loaded = load_dir(&dir, ConfigSource::Manifest).expect("examples folder is readable");
    assert!(
        loaded.report.problems.is_empty(),
        "problems: {:#?}",
        loaded.report.problems
    );
    assert!(loaded.report.tenants.len() >= 2);
    assert!(
        loaded.report.tenants.iter().any(|t| t.chaos.is_some()),
        "an example has a chaos profile"
    );
    let scenarios = || loaded.report.tenants.iter().flat_map(|t| &t.scenarios);
    assert!(scenarios().any(|s| s.spec.tool_name.is_some()));
    assert!(scenarios().any(|s| s.spec.turn.is_some()));
    assert!(scenarios().any(|s| s.spec.priority != 0));
}

/// The CEL rules in the committed CRDs, evaluated as the API server would at admission: what they
/// reject, `kubectl apply` rejects.
#[test]
fn cel_rules_reject_at_admission_what_a_schema_cannot() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("understudy.yaml"),
    )
    .unwrap();
    let mut schemas = std::collections::HashMap::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let crd: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap().to_string();
        schemas.insert(
            kind,
            crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone(),
        );
    }
    let check = |kind: &str, spec: serde_json::Value| -> Result<(), String> {
        let obj = serde_json::json!({
            "apiVersion": "understudy.dev/v1alpha1", "kind": kind,
            "metadata": {"name": "x", "namespace": "default"}, "spec": spec,
        });
        kube::core::cel::Validator::new()
            .validate(&schemas[kind], &obj, None)
            .map_err(|e| format!("{e:?}"))
    };
    use serde_json::json;
    assert!(check("Tenant", json!({})).is_ok());
    assert!(check("Tenant", json!({"visibility": "global"})).is_ok());
    assert!(check("Tenant", json!({"visibility": "private", "owner": "alice"})).is_ok());
    let err = check("Tenant", json!({"visibility": "private"})).unwrap_err();
    assert!(err.contains("owner is required"), "{err}");
    assert!(check("Tenant", json!({"visibility": "private", "owner": ""})).is_err());
    assert!(check("Tenant", json!({"tenantId": "a.b"})).is_ok());
    for dots in [".", ".."] {
        let err = check("Tenant", json!({"tenantId": dots})).unwrap_err();
        assert!(err.contains("may not be '.' or '..'"), "{err}");
    }

    assert!(check("ChaosProfile", json!({"tenantRef": "t", "every": 3})).is_ok());
    assert!(check("ChaosProfile", json!({"tenantRef": "t", "every": 0})).is_ok());
    let err = check("ChaosProfile", json!({"tenantRef": "t", "every": 1})).unwrap_err();
    assert!(err.contains("every"), "{err}");
    assert!(check("ChaosProfile", json!({"tenantRef": "t", "statusCode": 503})).is_ok());
    let err = check("ChaosProfile", json!({"tenantRef": "t", "statusCode": 404})).unwrap_err();
    assert!(err.contains("statusCode"), "{err}");
}

/// The chart ships the same CRDs (Helm installs `charts/understudy/crds/` as they are).
#[test]
fn the_chart_carries_the_same_crds() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let ours = std::fs::read_to_string(root.join("understudy.yaml")).unwrap();
    let chart = std::fs::read_to_string(root.join("../charts/understudy/crds/understudy.yaml"))
        .expect("charts/understudy/crds/understudy.yaml exists");
    assert!(
        ours == chart,
        "charts/understudy/crds/understudy.yaml differs from crds/understudy.yaml: copy it over"
    );
}
