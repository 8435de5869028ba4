//! The pure plan step, from inline YAML: what Redis should hold and every resource's verdict.

mod common;

use common::{SHOP, inputs};
use understudy_crds::model::ConfigSource;
use understudy_operator::plan::{Kind, ObjectKey, Plan, Verdict, plan};

fn verdict<'a>(p: &'a Plan, kind: Kind, ns: &str, name: &str) -> &'a Verdict {
    let key = ObjectKey {
        kind,
        namespace: ns.into(),
        name: name.into(),
    };
    p.verdicts
        .get(&key)
        .unwrap_or_else(|| panic!("no verdict for {key}: {:?}", p.verdicts))
}

#[test]
fn valid_resources_become_one_tenant_document() {
    let p = plan(&inputs(SHOP));
    assert_eq!(p.desired.len(), 1);
    let doc = &p.desired["tenant_shop"];
    assert_eq!(doc.source, ConfigSource::Kubernetes);
    assert_eq!(doc.origin, "Tenant staging/shop");
    let ids: Vec<&str> = doc.scenarios.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["staging/invoices", "staging/refunds"]);
    assert_eq!(doc.chaos.as_ref().map(|c| c.latency_ms), Some(100));
    for (kind, name) in [
        (Kind::Tenant, "shop"),
        (Kind::Scenario, "invoices"),
        (Kind::Scenario, "refunds"),
        (Kind::ChaosProfile, "slow"),
    ] {
        let v = verdict(&p, kind, "staging", name);
        assert!(v.ready, "{name}: {v:?}");
        assert_eq!(v.reason, "Synced");
    }
    let key = ObjectKey {
        kind: Kind::Tenant,
        namespace: "staging".into(),
        name: "shop".into(),
    };
    let summary = &p.summaries[&key];
    assert_eq!(
        (summary.scenarios, summary.tools, summary.chaos.as_str()),
        (2, 1, "latency")
    );
    assert_eq!(p.tenant_of[&key], "tenant_shop");
}

#[test]
fn tenant_id_defaults_to_the_name() {
    let p = plan(&inputs(
        "kind: Tenant\napiVersion: understudy.dev/v1alpha1\nmetadata: {name: plain}\nspec: {}\n",
    ));
    assert!(p.desired.contains_key("plain"));
}

#[test]
fn scenario_naming_a_missing_tenant_is_tenant_not_found() {
    let p = plan(&inputs(&format!(
        "{SHOP}---\napiVersion: understudy.dev/v1alpha1\nkind: Scenario\nmetadata: {{name: lost, namespace: staging}}\nspec: {{tenantRef: nope, keywords: [x], response: y}}\n"
    )));
    let v = verdict(&p, Kind::Scenario, "staging", "lost");
    assert!(!v.ready);
    assert_eq!(v.reason, "TenantNotFound");
    assert!(v.message.contains("\"nope\""), "{}", v.message);
    // The tenant and its other scenarios are unaffected.
    assert_eq!(p.desired["tenant_shop"].scenarios.len(), 2);
}

#[test]
fn a_tenant_in_another_namespace_does_not_count() {
    let p = plan(&inputs(&format!(
        "{SHOP}---\napiVersion: understudy.dev/v1alpha1\nkind: Scenario\nmetadata: {{name: elsewhere, namespace: prod}}\nspec: {{tenantRef: shop, keywords: [x], response: y}}\n"
    )));
    assert_eq!(
        verdict(&p, Kind::Scenario, "prod", "elsewhere").reason,
        "TenantNotFound"
    );
}

#[test]
fn two_tenants_claiming_one_id_across_namespaces_the_older_wins() {
    let yaml = r#"
apiVersion: understudy.dev/v1alpha1
kind: Tenant
metadata: {name: a, namespace: team-a}
spec: {tenantId: shared}
---
apiVersion: understudy.dev/v1alpha1
kind: Tenant
metadata: {name: b, namespace: team-b}
spec: {tenantId: shared}
---
apiVersion: understudy.dev/v1alpha1
kind: Scenario
metadata: {name: s, namespace: team-b}
spec: {tenantRef: b, keywords: [x], response: y}
"#;
    let p = plan(&inputs(yaml));
    assert_eq!(p.desired["shared"].origin, "Tenant team-a/a");
    assert!(verdict(&p, Kind::Tenant, "team-a", "a").ready);
    let v = verdict(&p, Kind::Tenant, "team-b", "b");
    assert_eq!(v.reason, "DuplicateTenantId");
    assert!(v.message.contains("Tenant team-a/a"), "{}", v.message);
    // The loser's scenarios do not leak into the winner's document, and they are told which
    // Tenant is not in force and why (not that none exists).
    let s = verdict(&p, Kind::Scenario, "team-b", "s");
    assert_eq!(s.reason, "TenantNotReady");
    assert!(
        s.message.contains("Tenant team-b/b") && s.message.contains("DuplicateTenantId"),
        "{}",
        s.message
    );
    assert!(p.desired["shared"].scenarios.is_empty());
}

#[test]
fn invalid_tool_input_schema_is_invalid_schema_and_spares_the_tenant() {
    let p = plan(&inputs(&format!(
        "{SHOP}---\napiVersion: understudy.dev/v1alpha1\nkind: Scenario\nmetadata: {{name: bad, namespace: staging}}\nspec: {{tenantRef: shop, toolName: t, toolInputSchema: {{type: 12}}}}\n"
    )));
    let v = verdict(&p, Kind::Scenario, "staging", "bad");
    assert_eq!(v.reason, "InvalidSchema");
    assert!(v.message.contains("spec.toolInputSchema"), "{}", v.message);
    assert!(verdict(&p, Kind::Tenant, "staging", "shop").ready);
    assert_eq!(p.desired["tenant_shop"].scenarios.len(), 2);
}

#[test]
fn chaos_probability_two_is_invalid() {
    let yaml = SHOP.replace("latencyMs: 100}", "latencyMs: 100, probability: 2}");
    let p = plan(&inputs(&yaml));
    let v = verdict(&p, Kind::ChaosProfile, "staging", "slow");
    assert!(!v.ready);
    assert!(v.message.contains("spec.probability"), "{}", v.message);
    assert!(p.desired["tenant_shop"].chaos.is_none());
}

#[test]
fn private_tenant_without_owner_is_refused_with_its_scenarios() {
    let yaml = SHOP.replace(
        "spec: {tenantId: tenant_shop, defaultResponse: \"How can I help?\"}",
        "spec: {tenantId: tenant_shop, visibility: private}",
    );
    let p = plan(&inputs(&yaml));
    let v = verdict(&p, Kind::Tenant, "staging", "shop");
    assert!(!v.ready);
    assert!(v.message.contains("spec.owner"), "{}", v.message);
    assert!(p.desired.is_empty());
    for (kind, name) in [(Kind::Scenario, "invoices"), (Kind::ChaosProfile, "slow")] {
        let v = verdict(&p, kind, "staging", name);
        assert_eq!(v.reason, "TenantNotReady", "{name}");
        assert!(
            v.message
                .contains("Tenant staging/shop is not in force (Invalid)")
                && v.message.contains("spec.owner"),
            "{}",
            v.message
        );
    }
}

#[test]
fn a_tenant_being_deleted_is_not_found_for_its_scenarios() {
    let mut i = inputs(SHOP);
    i.tenants[0].metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
    );
    let p = plan(&i);
    assert_eq!(
        verdict(&p, Kind::Scenario, "staging", "invoices").reason,
        "TenantNotFound"
    );
}

#[test]
fn the_oldest_chaos_profile_is_in_force_others_superseded() {
    let yaml = format!(
        "{SHOP}---\napiVersion: understudy.dev/v1alpha1\nkind: ChaosProfile\nmetadata: {{name: later, namespace: staging}}\nspec: {{tenantRef: shop, profile: server_error}}\n"
    );
    let p = plan(&inputs(&yaml));
    assert!(verdict(&p, Kind::ChaosProfile, "staging", "slow").ready);
    let v = verdict(&p, Kind::ChaosProfile, "staging", "later");
    assert_eq!(v.reason, "Superseded");
    assert!(v.message.contains("staging/slow"), "{}", v.message);
    assert_eq!(
        p.desired["tenant_shop"]
            .chaos
            .as_ref()
            .map(|c| c.profile.as_str()),
        Some("latency")
    );
}

#[test]
fn resources_being_deleted_are_left_out() {
    let mut i = inputs(SHOP);
    i.scenarios[0].metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
    );
    let p = plan(&i);
    assert_eq!(p.desired["tenant_shop"].scenarios.len(), 1);
    assert!(
        !p.verdicts
            .keys()
            .any(|k| k.kind == Kind::Scenario && k.name == "invoices")
    );
}

#[test]
fn the_plan_is_deterministic_whatever_the_listing_order() {
    // Same creation second everywhere: the namespace/name tie-break decides which Tenant keeps
    // a contested id and which ChaosProfile is in force, whatever order the caches list them in.
    let yaml = format!(
        "{SHOP}---\napiVersion: understudy.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: x, namespace: beta}}\nspec: {{tenantId: contested}}\n---\napiVersion: understudy.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: x, namespace: alpha}}\nspec: {{tenantId: contested}}\n---\napiVersion: understudy.dev/v1alpha1\nkind: ChaosProfile\nmetadata: {{name: another, namespace: staging}}\nspec: {{tenantRef: shop, profile: server_error}}\n"
    );
    let mut a = inputs(&yaml);
    let same = a.tenants[0].metadata.creation_timestamp.clone();
    for t in &mut a.tenants {
        t.metadata.creation_timestamp = same.clone();
    }
    for s in &mut a.scenarios {
        s.metadata.creation_timestamp = same.clone();
    }
    for c in &mut a.chaos {
        c.metadata.creation_timestamp = same.clone();
    }
    let mut b = a.clone();
    b.tenants.reverse();
    b.scenarios.reverse();
    b.chaos.reverse();
    let (pa, pb) = (plan(&a), plan(&b));
    assert_eq!(pa.desired, pb.desired);
    assert_eq!(pa.verdicts, pb.verdicts);
    assert_eq!(pa.desired["contested"].origin, "Tenant alpha/x");
    assert_eq!(
        verdict(&pa, Kind::ChaosProfile, "staging", "slow").reason,
        "Superseded",
        "'another' sorts first"
    );
}
