//! The committed CRD YAML matches the Rust types, and the example manifests build.

use understudy_crds::manifests::load_dir;
use understudy_crds::model::ConfigSource;

#[test]
fn committed_crds_are_fresh() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("understudy.yaml");
    let committed = std::fs::read_to_string(&path).expect("crds/understudy.yaml exists");
    assert!(
        committed == understudy_crds::crds_yaml(),
        "crds/understudy.yaml is stale: run `cargo run -p understudy-crds --bin crdgen > crds/understudy.yaml`"
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
