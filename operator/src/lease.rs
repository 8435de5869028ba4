//! Leader election through a `coordination.k8s.io/v1` Lease, so several operator replicas can
//! run and exactly one reconciles. Expiry is judged by the local clock from when the lease record
//! last changed (as client-go does), so clock skew between nodes does not matter.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::reconcile::timed;

/// One lease call's deadline: two calls (read, write) must fit well inside the time a holder has
/// before it steps down (two thirds of the lease), even when the API server hangs.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// Where the lease lives and how long it holds.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// The Lease's name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long a lease holds without renewal.
    pub duration: Duration,
    /// How often the holder renews (and a follower retries).
    pub renew: Duration,
}

/// One replica's view of the election.
pub struct Elector {
    api: Api<Lease>,
    settings: LeaseSettings,
    /// The record last seen (resourceVersion) and when we first saw it.
    observed: Option<(String, Instant)>,
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

impl Elector {
    /// An elector for `settings`.
    pub fn new(client: Client, settings: LeaseSettings) -> Self {
        Elector {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            observed: None,
        }
    }

    /// Tries to acquire or renew the lease once; `Ok(true)` while this replica holds it.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let me = self.settings.identity.clone();
        let secs = self.settings.duration.as_secs().max(1) as i32;
        let Some(mut lease) = timed(CALL_TIMEOUT, self.api.get_opt(&self.settings.name)).await?
        else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.name.clone()),
                    namespace: Some(self.settings.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(now()),
                    renew_time: Some(now()),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match timed(
                CALL_TIMEOUT,
                self.api.create(&PostParams::default(), &lease),
            )
            .await
            {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let rv = lease.resource_version().unwrap_or_default();
        let changed = self.observed.as_ref().is_none_or(|(v, _)| *v != rv);
        if changed {
            self.observed = Some((rv, Instant::now()));
        }
        let mut spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let held_for = spec
            .lease_duration_seconds
            .map(|s| Duration::from_secs(s.max(0) as u64))
            .unwrap_or(self.settings.duration);
        let expired = self
            .observed
            .as_ref()
            .is_some_and(|(_, seen)| seen.elapsed() > held_for);
        if holder == me {
            spec.renew_time = Some(now());
            spec.lease_duration_seconds = Some(secs);
        } else if holder.is_empty() || expired {
            tracing::info!(previous = %holder, "taking the leader lease");
            spec.holder_identity = Some(me);
            spec.acquire_time = Some(now());
            spec.renew_time = Some(now());
            spec.lease_duration_seconds = Some(secs);
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        } else {
            return Ok(false);
        }
        lease.spec = Some(spec);
        // replace carries the resourceVersion read: a concurrent taker makes this a 409.
        match timed(
            CALL_TIMEOUT,
            self.api
                .replace(&self.settings.name, &PostParams::default(), &lease),
        )
        .await
        {
            Ok(l) => {
                self.observed = Some((l.resource_version().unwrap_or_default(), Instant::now()));
                Ok(true)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up (on shutdown) so another replica takes over at once.
    pub async fn release(&mut self) {
        if let Ok(Some(mut lease)) =
            timed(CALL_TIMEOUT, self.api.get_opt(&self.settings.name)).await
            && let Some(spec) = lease.spec.as_mut()
            && spec.holder_identity.as_deref() == Some(self.settings.identity.as_str())
        {
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            let _ = timed(
                CALL_TIMEOUT,
                self.api
                    .replace(&self.settings.name, &PostParams::default(), &lease),
            )
            .await;
        }
    }

    /// Campaigns until cancelled, publishing leadership on `leader`. A holder that cannot renew
    /// for a whole lease duration steps down before anyone else may take over.
    pub async fn run(mut self, leader: watch::Sender<bool>, cancel: CancellationToken) {
        let mut last_renew: Option<Instant> = None;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    last_renew = Some(Instant::now());
                    leader.send_if_modified(|l| !std::mem::replace(l, true));
                }
                Ok(false) => {
                    last_renew = None;
                    leader.send_if_modified(|l| std::mem::replace(l, false));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "leader election: cannot reach the lease");
                    if last_renew.is_none_or(|t| t.elapsed() >= self.settings.duration * 2 / 3) {
                        last_renew = None;
                        leader.send_if_modified(|l| std::mem::replace(l, false));
                    }
                }
            }
            let wait = if *leader.borrow() {
                self.settings.renew
            } else {
                self.settings.renew.min(Duration::from_secs(2))
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        if *leader.borrow() {
            self.release().await;
            leader.send_replace(false);
        }
    }
}
