//! The pure step of a reconcile: the cluster's resources → the tenant documents Redis should hold
//! and the verdict (`Ready` condition) of every resource. No I/O, so every rule is unit-tested
//! from inline YAML (`operator/tests/plan.rs`).
//!
//! All three kinds are planned together because a tenant's document is the sum of its Tenant,
//! its Scenarios and the ChaosProfile in force, and tenant-id collisions span namespaces.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use kube::ResourceExt;
use understudy_crds::model::{self, ConfigSource, Res, TenantConfig};
use understudy_crds::resources::{ChaosProfile, Scenario, Tenant};

/// The finalizer the operator puts on every resource it serves, so that a deleted resource's
/// data leaves Redis before the resource leaves the API server.
pub const FINALIZER: &str = "understudy.dev/cleanup";

/// The three resource kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `Tenant`.
    Tenant,
    /// `Scenario`.
    Scenario,
    /// `ChaosProfile`.
    ChaosProfile,
}

impl Kind {
    /// The kind as `kubectl` spells it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Tenant => "Tenant",
            Kind::Scenario => "Scenario",
            Kind::ChaosProfile => "ChaosProfile",
        }
    }
}

/// Which resource: kind, namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// Its kind.
    pub kind: Kind,
    /// Its namespace.
    pub namespace: String,
    /// Its metadata.name.
    pub name: String,
}

impl ObjectKey {
    /// The key of a kube object.
    pub fn of<K: kube::Resource>(kind: Kind, obj: &K) -> Self {
        ObjectKey {
            kind,
            namespace: obj.namespace().unwrap_or_default(),
            name: obj.name_any(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind.as_str(), self.namespace, self.name)
    }
}

/// The resources the operator sees (from its watch caches, or given by a test).
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    /// Every Tenant.
    pub tenants: Vec<Tenant>,
    /// Every Scenario.
    pub scenarios: Vec<Scenario>,
    /// Every ChaosProfile.
    pub chaos: Vec<ChaosProfile>,
}

/// A resource's `Ready` condition as the plan judges it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// `Ready=True`?
    pub ready: bool,
    /// `Synced`, `TenantNotFound`, `TenantNotReady`, `DuplicateTenantId`, `InvalidSchema`,
    /// `Invalid`, `Superseded` (and, from the apply step, `DuplicateTenantId` and
    /// `TenantNotReady` for ids taken by another writer, `StoreUnavailable` for a resource never
    /// written yet while Redis is unreachable).
    pub reason: String,
    /// What it means, and what to change.
    pub message: String,
}

impl Verdict {
    fn ok(message: String) -> Self {
        Verdict {
            ready: true,
            reason: "Synced".into(),
            message,
        }
    }
    fn not(reason: &str, message: String) -> Self {
        Verdict {
            ready: false,
            reason: reason.into(),
            message,
        }
    }
}

/// What a Tenant in force reports besides its condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantSummary {
    /// The tenant id it serves as.
    pub tenant_id: String,
    /// Scenarios in force.
    pub scenarios: u32,
    /// Distinct tools.
    pub tools: u32,
    /// The chaos profile in force (`none` without one).
    pub chaos: String,
}

/// The outcome of [`plan`].
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// tenant id → the document Redis should hold (only tenants from Kubernetes).
    pub desired: BTreeMap<String, TenantConfig>,
    /// Every live (not deleting) resource → its verdict.
    pub verdicts: BTreeMap<ObjectKey, Verdict>,
    /// Resource → the tenant id it feeds, for resources in force (so the apply step can mark
    /// them when their tenant could not be written).
    pub tenant_of: BTreeMap<ObjectKey, String>,
    /// Tenant resources in force → their counts.
    pub summaries: BTreeMap<ObjectKey, TenantSummary>,
}

/// The verdict of a Scenario or ChaosProfile whose Tenant exists but is not in force: it names
/// the Tenant and the Tenant's own reason, so nobody goes looking for a missing object.
pub fn tenant_not_ready(namespace: &str, tenant: &str, reason: &str, why: &str) -> Verdict {
    Verdict::not(
        "TenantNotReady",
        format!("Tenant {namespace}/{tenant} is not in force ({reason}): {why}"),
    )
}

/// Whether deletion of `obj` has begun (it is waiting for finalizers).
pub fn is_deleting<K: kube::Resource>(obj: &K) -> bool {
    obj.meta().deletion_timestamp.is_some()
}

/// Whether `obj` carries the operator's finalizer.
pub fn has_finalizer<K: kube::Resource>(obj: &K) -> bool {
    obj.finalizers().iter().any(|f| f == FINALIZER)
}

/// The namespace in a Tenant's origin as [`ObjectKey`] writes it (`Tenant ns/name`), the
/// `origin` of every tenant document from Kubernetes.
pub fn origin_namespace(origin: &str) -> Option<&str> {
    origin.strip_prefix("Tenant ")?.split('/').next()
}

/// Creation order (then namespace/name): it decides which of two Tenants claiming one id wins,
/// which ChaosProfile is in force, and the last tie-breaker among scenarios.
fn sorted<K: kube::Resource + Clone>(items: &[K]) -> Vec<&K> {
    let mut v: Vec<&K> = items.iter().filter(|o| !is_deleting(*o)).collect();
    v.sort_by(|a, b| {
        let ka = (
            a.meta().creation_timestamp.clone(),
            a.namespace(),
            a.name_any(),
        );
        let kb = (
            b.meta().creation_timestamp.clone(),
            b.namespace(),
            b.name_any(),
        );
        ka.cmp(&kb)
    });
    v
}

fn res<K: kube::Resource, S: Clone>(kind: Kind, obj: &K, spec: &S) -> Res<S> {
    Res {
        origin: ObjectKey::of(kind, obj).to_string(),
        namespace: obj.namespace().unwrap_or_default(),
        name: obj.name_any(),
        spec: spec.clone(),
    }
}

/// Plans the desired Redis state and every resource's verdict. Resources being deleted are left
/// out (their data is to be removed).
pub fn plan(inputs: &Inputs) -> Plan {
    let tenants = sorted(&inputs.tenants);
    let scenarios = sorted(&inputs.scenarios);
    let chaos = sorted(&inputs.chaos);
    let t_res: Vec<_> = tenants
        .iter()
        .map(|t| res(Kind::Tenant, *t, &t.spec))
        .collect();
    let s_res: Vec<_> = scenarios
        .iter()
        .map(|s| res(Kind::Scenario, *s, &s.spec))
        .collect();
    let c_res: Vec<_> = chaos
        .iter()
        .map(|c| res(Kind::ChaosProfile, *c, &c.spec))
        .collect();
    let report = model::build(&t_res, &s_res, &c_res, ConfigSource::Kubernetes);

    // origin → problems (several fields may be wrong at once).
    let mut problems: HashMap<&str, Vec<&model::Problem>> = HashMap::new();
    for p in &report.problems {
        problems.entry(p.origin.as_str()).or_default().push(p);
    }
    let refused = |origin: &str| -> Option<Verdict> {
        let list = problems.get(origin)?;
        let message = list
            .iter()
            .map(|p| format!("{}: {}", p.field, p.message))
            .collect::<Vec<_>>()
            .join("; ");
        Some(Verdict::not(list[0].reason, message))
    };

    let mut out = Plan::default();
    // (namespace, name) → tenant id, for Tenants in force.
    let mut ids: HashMap<(String, String), String> = HashMap::new();
    // (namespace, name) → verdict, for every live Tenant (a Scenario naming one that is not in
    // force is told which and why, rather than that none exists).
    let mut tenant_verdicts: HashMap<(String, String), Verdict> = HashMap::new();
    let by_origin: HashMap<&str, &TenantConfig> = report
        .tenants
        .iter()
        .map(|t| (t.origin.as_str(), t))
        .collect();
    for t in &tenants {
        let key = ObjectKey::of(Kind::Tenant, *t);
        let origin = key.to_string();
        let verdict = match (refused(&origin), by_origin.get(origin.as_str())) {
            (Some(v), _) => v,
            (None, Some(cfg)) => {
                let (scenarios, tools) = model::counts(cfg);
                let chaos = cfg
                    .chaos
                    .as_ref()
                    .map(|c| c.profile.as_str().to_string())
                    .unwrap_or_else(|| "none".into());
                ids.insert(
                    (key.namespace.clone(), key.name.clone()),
                    cfg.tenant_id.clone(),
                );
                out.tenant_of.insert(key.clone(), cfg.tenant_id.clone());
                out.summaries.insert(
                    key.clone(),
                    TenantSummary {
                        tenant_id: cfg.tenant_id.clone(),
                        scenarios: scenarios as u32,
                        tools: tools as u32,
                        chaos: chaos.clone(),
                    },
                );
                Verdict::ok(format!(
                    "serving as tenant id {:?}: {scenarios} scenario(s), {tools} tool(s), chaos {chaos}",
                    cfg.tenant_id
                ))
            }
            (None, None) => Verdict::not("Invalid", "left out of the configuration".into()),
        };
        tenant_verdicts.insert((key.namespace.clone(), key.name.clone()), verdict.clone());
        out.verdicts.insert(key, verdict);
    }
    // A refused `TenantNotFound` whose Tenant does exist, but is not in force.
    let not_ready = |v: Verdict, namespace: &str, tenant_ref: &str| -> Verdict {
        if v.reason != "TenantNotFound" {
            return v;
        }
        match tenant_verdicts.get(&(namespace.to_string(), tenant_ref.to_string())) {
            Some(t) if !t.ready => tenant_not_ready(namespace, tenant_ref, &t.reason, &t.message),
            _ => v,
        }
    };
    for s in &scenarios {
        let key = ObjectKey::of(Kind::Scenario, *s);
        let verdict = match refused(&key.to_string()) {
            Some(v) => not_ready(v, &key.namespace, &s.spec.tenant_ref),
            None => {
                let id = ids
                    .get(&(key.namespace.clone(), s.spec.tenant_ref.clone()))
                    .cloned()
                    .unwrap_or_default();
                out.tenant_of.insert(key.clone(), id.clone());
                Verdict::ok(format!("in force for tenant id {id:?}"))
            }
        };
        out.verdicts.insert(key, verdict);
    }
    // (namespace, tenantRef) → the profile in force there.
    let mut in_force: HashMap<(String, String), String> = HashMap::new();
    for c in &chaos {
        let key = ObjectKey::of(Kind::ChaosProfile, *c);
        let origin = key.to_string();
        let scope = (key.namespace.clone(), c.spec.tenant_ref.clone());
        let verdict = if let Some(v) = refused(&origin) {
            not_ready(v, &key.namespace, &c.spec.tenant_ref)
        } else if report.superseded.contains(&origin) {
            let winner = in_force.get(&scope).cloned().unwrap_or_default();
            Verdict::not(
                "Superseded",
                format!(
                    "ChaosProfile {}/{winner} is already in force for Tenant {:?}; exactly one profile is, the oldest",
                    key.namespace, c.spec.tenant_ref
                ),
            )
        } else {
            in_force.insert(scope.clone(), key.name.clone());
            let id = ids.get(&scope).cloned().unwrap_or_default();
            out.tenant_of.insert(key.clone(), id.clone());
            Verdict::ok(format!(
                "profile {} in force for tenant id {id:?}",
                c.spec.profile.as_str()
            ))
        };
        out.verdicts.insert(key, verdict);
    }
    out.desired = report
        .tenants
        .into_iter()
        .map(|t| (t.tenant_id.clone(), t))
        .collect();
    out
}
