//! One reconcile pass: finalizers → plan (pure) → apply (Redis) → status and Events (API server)
//! → release the finalizers of deleted resources whose data is gone.
//!
//! A pass is idempotent and cheap when nothing changed: the plan is compared with what was
//! written and with what each resource's status already says, so a steady world costs no writes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use understudy_core::{StatsTotals, Stores};
use understudy_crds::resources::{ChaosProfile, Scenario, Tenant};

use crate::apply::{Applier, ApplyReport};
use crate::metrics::Metrics;
use crate::plan::{
    self, FINALIZER, Inputs, Kind, ObjectKey, Plan, Verdict, has_finalizer, is_deleting,
    tenant_not_ready,
};
use crate::status;

/// A resource kind the operator manages.
pub trait Managed:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// Which kind.
    const KIND: Kind;
    /// The current status, as JSON (`null` when none).
    fn status_json(&self) -> Value;
    /// The current `Ready` condition's (status, reason).
    fn ready(&self) -> Option<(String, String)>;
}

macro_rules! managed {
    ($t:ty, $k:expr) => {
        impl Managed for $t {
            const KIND: Kind = $k;
            fn status_json(&self) -> Value {
                serde_json::to_value(&self.status).unwrap_or(Value::Null)
            }
            fn ready(&self) -> Option<(String, String)> {
                self.status
                    .as_ref()
                    .and_then(|s| status::ready_reason(&s.conditions))
                    .map(|(a, b)| (a.to_string(), b.to_string()))
            }
        }
    };
}
managed!(Tenant, Kind::Tenant);
managed!(Scenario, Kind::Scenario);
managed!(ChaosProfile, Kind::ChaosProfile);

/// What a pass did.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// The apply step's report.
    pub apply: ApplyReport,
    /// Finalizers added.
    pub finalizers_added: usize,
    /// Finalizers released (deleted resources whose data left Redis).
    pub finalizers_removed: usize,
    /// Status patches sent.
    pub status_patches: usize,
    /// Events published.
    pub events: usize,
    /// API server calls that failed.
    pub kube_errors: usize,
}

impl Outcome {
    /// Whether the pass should be retried (with backoff): something failed that may succeed later.
    pub fn retry(&self) -> bool {
        self.apply.unavailable.is_some() || self.kube_errors > 0
    }
}

/// Settings of the reconciler.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How many API calls (status patches, finalizers) may be in flight at once.
    pub concurrency: usize,
    /// The controller name in Events.
    pub controller: String,
    /// This replica's name in Events.
    pub instance: Option<String>,
    /// The namespaces watched (`[]`: all); only their tenants in Redis are this operator's.
    pub namespaces: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            concurrency: 16,
            controller: "understudy-operator".into(),
            instance: None,
            namespaces: Vec::new(),
        }
    }
}

/// Runs reconcile passes against one API server and one store.
pub struct Reconciler {
    client: Client,
    applier: Applier,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    /// tenant id → the gateways' totals, refreshed by [`Reconciler::refresh_stats`].
    stats: HashMap<String, StatsTotals>,
    /// Tenants told (one Event each) that Redis cannot be written, until a pass succeeds again.
    outage: BTreeSet<ObjectKey>,
    settings: Settings,
}

type Call = BoxFuture<'static, CallResult>;

enum CallResult {
    FinalizerAdded,
    FinalizerRemoved,
    Status {
        event: Option<Box<(Event, ObjectKeyRef)>>,
    },
    Failed,
}

type ObjectKeyRef = k8s_openapi::api::core::v1::ObjectReference;

impl Reconciler {
    /// A reconciler talking to `client` and writing into `store`.
    pub fn new(client: Client, stores: Stores, metrics: Arc<Metrics>, settings: Settings) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: settings.controller.clone(),
                instance: settings.instance.clone(),
            },
        );
        Reconciler {
            client,
            applier: Applier::new(stores).with_scope(settings.namespaces.clone()),
            recorder,
            metrics,
            stats: HashMap::new(),
            outage: BTreeSet::new(),
            settings,
        }
    }

    /// The apply step (for the epoch check).
    pub fn applier(&mut self) -> &mut Applier {
        &mut self.applier
    }

    /// Reads the gateways' traffic counters of every tenant this operator wrote. Returns whether
    /// anything changed (then a pass patches the counters into status).
    pub async fn refresh_stats(&mut self) -> bool {
        let ids: Vec<String> = self.applier.tenant_ids().map(str::to_string).collect();
        let mut fresh = HashMap::new();
        for id in ids {
            match self.applier.stores().stats.read_stats(&id).await {
                Ok(t) => {
                    fresh.insert(id, t);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not read traffic counters");
                    self.metrics.errors.with_label_values(&["store"]).inc();
                    return false;
                }
            }
        }
        let changed = fresh != self.stats;
        self.stats = fresh;
        changed
    }

    /// One pass over everything.
    pub async fn reconcile(&mut self, inputs: &Inputs) -> Outcome {
        let started = Instant::now();
        let mut out = Outcome::default();

        // 1. Finalizers first, so a resource deleted from now on waits for its data to go.
        let mut calls: Vec<Call> = Vec::new();
        add_finalizers(&self.client, &inputs.tenants, &mut calls);
        add_finalizers(&self.client, &inputs.scenarios, &mut calls);
        add_finalizers(&self.client, &inputs.chaos, &mut calls);
        self.run_calls(calls, &mut out).await;

        // 2. Plan, 3. apply.
        let plan = plan::plan(inputs);
        out.apply = self.applier.apply(&plan.desired).await;
        if out.apply.rewrote {
            self.metrics.rewrites.inc();
        }
        self.metrics
            .writes
            .with_label_values(&["put"])
            .inc_by(out.apply.written as u64);
        self.metrics
            .writes
            .with_label_values(&["delete"])
            .inc_by(out.apply.deleted.len() as u64);
        if let Some(e) = &out.apply.unavailable {
            tracing::warn!(error = %e, "could not write to the store; will retry");
            self.metrics.errors.with_label_values(&["store"]).inc();
        }
        let verdicts = overlay(&plan, &out.apply);
        // While Redis cannot be written, what is in force keeps the condition it has (the
        // gateways keep serving what they hold); the outage is recorded once per Tenant below.
        let holding = out.apply.unavailable.is_some();
        // The verdict to show, `None` to keep the condition the resource has.
        let shown = |key: &ObjectKey, has_condition: bool| -> Option<Verdict> {
            let v = verdicts.get(key)?;
            if !(holding && v.ready && plan.tenant_of.contains_key(key)) {
                return Some(v.clone());
            }
            (!has_condition).then(|| unwritten(v))
        };

        // 4. Status (and Events on transitions).
        let now = status::now();
        let mut calls: Vec<Call> = Vec::new();
        for t in inputs.tenants.iter().filter(|o| !is_deleting(*o)) {
            let key = ObjectKey::of(Kind::Tenant, t);
            let Some(v) = &shown(&key, t.ready().is_some()) else {
                continue;
            };
            let summary = plan.summaries.get(&key);
            let stats = summary.and_then(|s| self.stats.get(&s.tenant_id));
            let want = status::tenant(
                t.status.as_ref(),
                t.meta().generation,
                v,
                summary,
                stats,
                &now,
            );
            self.patch_status(t, &want, v, &mut calls);
        }
        for s in inputs.scenarios.iter().filter(|o| !is_deleting(*o)) {
            let key = ObjectKey::of(Kind::Scenario, s);
            let Some(v) = &shown(&key, s.ready().is_some()) else {
                continue;
            };
            let id = format!("{}/{}", key.namespace, key.name);
            let hits = plan
                .tenant_of
                .get(&key)
                .and_then(|t| self.stats.get(t))
                .map(|st| st.hits.get(&id).copied().unwrap_or(0));
            let want = status::scenario(s.status.as_ref(), s.meta().generation, v, hits, &now);
            self.patch_status(s, &want, v, &mut calls);
        }
        for c in inputs.chaos.iter().filter(|o| !is_deleting(*o)) {
            let key = ObjectKey::of(Kind::ChaosProfile, c);
            let Some(v) = &shown(&key, c.ready().is_some()) else {
                continue;
            };
            let want = status::chaos(c.status.as_ref(), c.meta().generation, v, &c.spec, &now);
            self.patch_status(c, &want, v, &mut calls);
        }
        self.run_calls(calls, &mut out).await;
        let outage_events = self.outage_events(inputs, &plan, &out.apply);
        self.publish(outage_events, &mut out).await;

        // 5. Deleted resources: their data left Redis with this apply (or nothing was there).
        if out.apply.unavailable.is_none() {
            let mut calls: Vec<Call> = Vec::new();
            remove_finalizers(&self.client, &inputs.tenants, &mut calls);
            remove_finalizers(&self.client, &inputs.scenarios, &mut calls);
            remove_finalizers(&self.client, &inputs.chaos, &mut calls);
            self.run_calls(calls, &mut out).await;
        }

        self.count_resources(&verdicts);
        let result = if out.retry() { "error" } else { "ok" };
        self.metrics.reconciles.with_label_values(&[result]).inc();
        self.metrics
            .duration
            .observe(started.elapsed().as_secs_f64());
        tracing::debug!(
            written = out.apply.written,
            deleted = out.apply.deleted.len(),
            status_patches = out.status_patches,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "reconciled"
        );
        out
    }

    fn patch_status<K: Managed, S: Serialize>(
        &self,
        obj: &K,
        want: &S,
        verdict: &Verdict,
        calls: &mut Vec<Call>,
    ) {
        let want = serde_json::to_value(want).unwrap_or(Value::Null);
        let current = obj.status_json();
        if want == current {
            return;
        }
        // A merge patch keeps what it leaves out: a field to remove is sent as null.
        let mut body = want;
        if let (Some(cur), Some(b)) = (current.as_object(), body.as_object_mut()) {
            for k in cur.keys() {
                if !b.contains_key(k) {
                    b.insert(k.clone(), Value::Null);
                }
            }
        }
        let want = body;
        let api: Api<K> =
            Api::namespaced(self.client.clone(), &obj.namespace().unwrap_or_default());
        let name = obj.name_any();
        // An Event when the Ready reason changes (not for counter updates).
        let before = obj.ready();
        let now_status = if verdict.ready { "True" } else { "False" };
        let was = before.as_ref().map(|(s, r)| (s.as_str(), r.as_str()));
        let store = |r: Option<(&str, &str)>| r.is_some_and(|(_, r)| r == STORE_UNAVAILABLE);
        let now = Some((now_status, verdict.reason.as_str()));
        let quiet = was == now
            // An outage is recorded once per Tenant (see `outage_events`), not per resource.
            || store(now)
            || (verdict.ready && store(was))
            // No Event for the routine first Synced; only for problems and recoveries.
            || (verdict.ready && was.is_none());
        let event = (!quiet).then(|| {
            Box::new((
                Event {
                    type_: if verdict.ready {
                        EventType::Normal
                    } else {
                        EventType::Warning
                    },
                    reason: verdict.reason.clone(),
                    note: Some(truncate(&verdict.message, 1000)),
                    action: "Reconcile".into(),
                    secondary: None,
                },
                obj.object_ref(&()),
            ))
        });
        calls.push(
            async move {
                let patch = Patch::Merge(json!({ "status": want }));
                match timed(
                    API_TIMEOUT,
                    api.patch_status(&name, &PatchParams::default(), &patch),
                )
                .await
                {
                    Ok(_) => CallResult::Status { event },
                    // Deleted meanwhile: nothing to report on.
                    Err(kube::Error::Api(e)) if e.code == 404 => CallResult::Status { event: None },
                    Err(e) => {
                        tracing::warn!(error = %e, object = %name, "status patch failed");
                        CallResult::Failed
                    }
                }
            }
            .boxed(),
        );
    }

    /// One Warning Event per Tenant in force when a pass cannot write Redis (once per outage),
    /// and one Normal Event on each of them when a pass succeeds again.
    fn outage_events(
        &mut self,
        inputs: &Inputs,
        plan: &Plan,
        apply: &ApplyReport,
    ) -> Vec<EventFor> {
        let live = inputs.tenants.iter().filter(|t| !is_deleting(*t));
        let mut events = Vec::new();
        match &apply.unavailable {
            Some(e) => {
                for t in live {
                    let key = ObjectKey::of(Kind::Tenant, t);
                    if plan.summaries.contains_key(&key) && self.outage.insert(key) {
                        events.push(Box::new((
                            Event {
                                type_: EventType::Warning,
                                reason: STORE_UNAVAILABLE.into(),
                                note: Some(truncate(
                                    &format!(
                                        "Redis could not be written ({e}); the gateways keep serving the configuration they hold, and changes are applied once Redis is back (retrying with backoff)"
                                    ),
                                    1000,
                                )),
                                action: "Reconcile".into(),
                                secondary: None,
                            },
                            t.object_ref(&()),
                        )));
                    }
                }
            }
            None if !self.outage.is_empty() => {
                for t in live {
                    if self.outage.contains(&ObjectKey::of(Kind::Tenant, t)) {
                        events.push(Box::new((
                            Event {
                                type_: EventType::Normal,
                                reason: "StoreAvailable".into(),
                                note: Some(
                                    "Redis is written again; every change is applied".into(),
                                ),
                                action: "Reconcile".into(),
                                secondary: None,
                            },
                            t.object_ref(&()),
                        )));
                    }
                }
                self.outage.clear();
            }
            None => {}
        }
        events
    }

    async fn run_calls(&self, calls: Vec<Call>, out: &mut Outcome) {
        let mut results =
            futures::stream::iter(calls).buffer_unordered(self.settings.concurrency.max(1));
        let mut events = Vec::new();
        while let Some(r) = results.next().await {
            match r {
                CallResult::FinalizerAdded => out.finalizers_added += 1,
                CallResult::FinalizerRemoved => out.finalizers_removed += 1,
                CallResult::Status { event } => {
                    out.status_patches += 1;
                    self.metrics.status_patches.inc();
                    events.extend(event);
                }
                CallResult::Failed => {
                    out.kube_errors += 1;
                    self.metrics.errors.with_label_values(&["kube"]).inc();
                }
            }
        }
        drop(results);
        self.publish(events, out).await;
    }

    /// Publishes Events concurrently (a pass can mark many resources at once).
    async fn publish(&self, events: Vec<EventFor>, out: &mut Outcome) {
        let recorder = &self.recorder;
        let mut published = futures::stream::iter(events)
            .map(|event| async move {
                let (ev, reference) = *event;
                timed(Duration::from_secs(5), recorder.publish(&ev, &reference)).await
            })
            .buffer_unordered(self.settings.concurrency.max(1));
        while let Some(r) = published.next().await {
            match r {
                Ok(()) => out.events += 1,
                Err(e) => tracing::warn!(error = %e, "could not publish an Event"),
            }
        }
    }

    fn count_resources(&self, verdicts: &BTreeMap<ObjectKey, Verdict>) {
        self.metrics.resources.reset();
        for (k, v) in verdicts {
            self.metrics
                .resources
                .with_label_values(&[k.kind.as_str(), if v.ready { "true" } else { "false" }])
                .inc();
        }
    }
}

/// The condition reason of a resource never written while Redis is unreachable (and the reason
/// of the per-Tenant outage Event).
pub const STORE_UNAVAILABLE: &str = "StoreUnavailable";

type EventFor = Box<(Event, ObjectKeyRef)>;

/// The plan's verdicts, corrected by what the apply step met: an id taken by another origin
/// (the Tenant gets `DuplicateTenantId`, its Scenarios and ChaosProfile `TenantNotReady` naming
/// it). A store that could not be written changes no verdict: resources in force keep the
/// condition they have (see [`Reconciler::reconcile`]).
pub fn overlay(plan: &Plan, apply: &ApplyReport) -> BTreeMap<ObjectKey, Verdict> {
    let mut verdicts = plan.verdicts.clone();
    let tenant_of_id: HashMap<&str, &ObjectKey> = plan
        .tenant_of
        .iter()
        .filter(|(k, _)| k.kind == Kind::Tenant)
        .map(|(k, id)| (id.as_str(), k))
        .collect();
    for (key, id) in &plan.tenant_of {
        let Some(v) = verdicts.get_mut(key) else {
            continue;
        };
        if let Some(why) = apply.conflicts.get(id) {
            *v = match (key.kind, tenant_of_id.get(id.as_str())) {
                (Kind::Tenant, _) => Verdict {
                    ready: false,
                    reason: "DuplicateTenantId".into(),
                    message: why.clone(),
                },
                (_, Some(t)) => tenant_not_ready(&t.namespace, &t.name, "DuplicateTenantId", why),
                (_, None) => Verdict {
                    ready: false,
                    reason: "TenantNotReady".into(),
                    message: format!("its Tenant is not in force (DuplicateTenantId): {why}"),
                },
            };
        }
    }
    verdicts
}

/// What a resource in force that has no condition yet says while Redis cannot be written.
fn unwritten(v: &Verdict) -> Verdict {
    Verdict {
        ready: false,
        reason: STORE_UNAVAILABLE.into(),
        message: format!(
            "not written yet: Redis is unreachable; retrying with backoff (then: {})",
            v.message
        ),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The finalizer list written with the resourceVersion it was computed from, so a concurrent
/// change of the list is refused (409) rather than overwritten.
fn finalizer_patch<K: Resource>(obj: &K, list: Vec<String>) -> Patch<Value> {
    Patch::Merge(json!({
        "metadata": {
            "finalizers": list,
            "resourceVersion": obj.resource_version(),
        }
    }))
}

fn add_finalizers<K: Managed>(client: &Client, items: &[K], calls: &mut Vec<Call>) {
    for obj in items {
        if is_deleting(obj) || has_finalizer(obj) {
            continue;
        }
        let mut list = obj.finalizers().to_vec();
        list.push(FINALIZER.to_string());
        calls.push(finalizer_call(
            client,
            obj,
            list,
            CallResult::FinalizerAdded,
        ));
    }
}

fn remove_finalizers<K: Managed>(client: &Client, items: &[K], calls: &mut Vec<Call>) {
    for obj in items {
        if !is_deleting(obj) || !has_finalizer(obj) {
            continue;
        }
        let list: Vec<String> = obj
            .finalizers()
            .iter()
            .filter(|f| *f != FINALIZER)
            .cloned()
            .collect();
        calls.push(finalizer_call(
            client,
            obj,
            list,
            CallResult::FinalizerRemoved,
        ));
    }
}

fn finalizer_call<K: Managed>(client: &Client, obj: &K, list: Vec<String>, ok: CallResult) -> Call {
    let api: Api<K> = Api::namespaced(client.clone(), &obj.namespace().unwrap_or_default());
    let name = obj.name_any();
    let patch = finalizer_patch(obj, list);
    async move {
        match timed(API_TIMEOUT, api.patch(&name, &PatchParams::default(), &patch)).await {
            Ok(_) => ok,
            // Gone already: nothing to do.
            Err(kube::Error::Api(e)) if e.code == 404 => ok,
            // Changed since the cache saw it: retried (with backoff) once the watch catches up.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                tracing::debug!(object = %name, "finalizer patch raced a change; retrying");
                CallResult::Failed
            }
            Err(e) => {
                tracing::warn!(error = %e, object = %name, kind = K::KIND.as_str(), "finalizer patch failed");
                CallResult::Failed
            }
        }
    }
    .boxed()
}

/// How long one API call (a patch, an Event) may take before it counts as failed: a hung
/// connection must not stall the loop (which would also stop the epoch checks).
pub const API_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs an API call with a deadline; a timeout is reported like a transport error.
pub async fn timed<T>(
    limit: Duration,
    call: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, kube::Error> {
    match tokio::time::timeout(limit, call).await {
        Ok(r) => r,
        Err(_) => Err(kube::Error::Service(Box::new(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer from the API server within {limit:?}"),
        )))),
    }
}

/// Exponential backoff for retried passes: 1 s doubling to 60 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.min(6)).min(Duration::from_secs(60))
}
