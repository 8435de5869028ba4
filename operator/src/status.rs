//! What each resource's status should say, computed from its verdict, the tenant summary and the
//! gateways' traffic counters. Pure: the reconciler patches only when the result differs from
//! what the resource already shows, so an unchanged world makes no API calls.

use understudy_core::StatsTotals;
use understudy_crds::resources::{
    ChaosKind, ChaosProfileSpec, ChaosProfileStatus, Condition, ScenarioStatus, TenantStatus,
};

use crate::plan::{TenantSummary, Verdict};

/// RFC 3339, whole seconds, UTC (the Kubernetes convention for condition times).
pub fn rfc3339_seconds(unix_ms: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(unix_ms.div_euclid(1000))
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Now, in whole seconds.
pub fn now() -> String {
    rfc3339_seconds(k8s_openapi::jiff::Timestamp::now().as_millisecond())
}

/// The `Ready` condition for `verdict`, keeping `lastTransitionTime` while the status holds.
pub fn ready_condition(
    current: &[Condition],
    generation: Option<i64>,
    verdict: &Verdict,
    now: &str,
) -> Condition {
    let status = if verdict.ready { "True" } else { "False" };
    let since = current
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.to_string());
    Condition {
        type_: "Ready".into(),
        status: status.into(),
        reason: verdict.reason.clone(),
        message: verdict.message.clone(),
        last_transition_time: Some(since),
        observed_generation: generation,
    }
}

/// The reason of the current `Ready` condition, if any.
pub fn ready_reason(conditions: &[Condition]) -> Option<(&str, &str)> {
    conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.as_str(), c.reason.as_str()))
}

/// A Tenant's status. Without counters read yet (`stats` is `None`), the current ones are kept;
/// once read, they are the counters of the tenant's current incarnation only (a Tenant whose
/// document was deleted and written again starts from zero, `lastRequestTime` included).
pub fn tenant(
    current: Option<&TenantStatus>,
    generation: Option<i64>,
    verdict: &Verdict,
    summary: Option<&TenantSummary>,
    stats: Option<&StatsTotals>,
    now: &str,
) -> TenantStatus {
    let cur = current.cloned().unwrap_or_default();
    let (requests, unmatched, last) = match stats {
        Some(s) => (
            s.requests,
            s.unmatched,
            (s.last_request_ms > 0).then(|| rfc3339_seconds(s.last_request_ms as i64)),
        ),
        None => (cur.requests, cur.unmatched, cur.last_request_time.clone()),
    };
    TenantStatus {
        observed_generation: generation,
        conditions: vec![ready_condition(&cur.conditions, generation, verdict, now)],
        scenarios: summary.map(|s| s.scenarios).unwrap_or(0),
        tools: summary.map(|s| s.tools).unwrap_or(0),
        // Always present: a merge patch leaves out what is absent, so `None` would keep a stale
        // profile on a Tenant that left service.
        chaos: Some(summary.map_or_else(|| "none".to_string(), |s| s.chaos.clone())),
        requests,
        unmatched,
        last_request_time: last,
    }
}

/// A Scenario's status; `hits` `None` keeps the current count.
pub fn scenario(
    current: Option<&ScenarioStatus>,
    generation: Option<i64>,
    verdict: &Verdict,
    hits: Option<u64>,
    now: &str,
) -> ScenarioStatus {
    let cur = current.cloned().unwrap_or_default();
    ScenarioStatus {
        observed_generation: generation,
        conditions: vec![ready_condition(&cur.conditions, generation, verdict, now)],
        hits: hits.unwrap_or(cur.hits),
    }
}

/// A ChaosProfile's status.
pub fn chaos(
    current: Option<&ChaosProfileStatus>,
    generation: Option<i64>,
    verdict: &Verdict,
    spec: &ChaosProfileSpec,
    now: &str,
) -> ChaosProfileStatus {
    let cur = current.cloned().unwrap_or_default();
    ChaosProfileStatus {
        observed_generation: generation,
        conditions: vec![ready_condition(&cur.conditions, generation, verdict, now)],
        probability: effective_probability(spec),
    }
}

/// The share of requests a profile affects as the gateways apply it, or `None` where the
/// profile does not use `probability`: no fault (`none`), `rate_limit` (it counts instead), or
/// a deterministic selection (`failFirst`, `every`).
pub fn effective_probability(spec: &ChaosProfileSpec) -> Option<f64> {
    let uses = !matches!(spec.profile, ChaosKind::None | ChaosKind::RateLimit)
        && spec.fail_first == 0
        && spec.every < 2;
    uses.then_some(spec.probability)
}
