//! The ConsumerGroup controller: runs and scales a ConsumerGroup's workload and reports its group.
//! Each reconcile is one straight line ([`reconcile_inner`]): `observe` (all reads, one
//! `Observation`) -> `plan` (pure, with `scaling`'s replica decisions) -> `act::workload` (the
//! workload write, returning what was applied) -> `status::build` (pure) -> `act::status` and
//! `act::publish` (status only on change, Events only on transitions); `report` feeds /metrics.
//! What it keeps per group between reconciles is in its `registry`, forgotten on delete events.
//!
//! What it may do: read its ConsumerGroup, the workload and the group's part of its connection's
//! observer snapshot (no Kafka request of its own, except the transaction-marker probe); write the
//! owned Deployment or a scale subresource, the ConsumerGroup's status and Events. It reads
//! OffsetResets only to hold a workload at zero while one runs (`crate::reset_hold`); it
//! never writes one. The watches and the process around it are in `crate::runtime`.

pub mod act;
pub mod observe;
pub mod plan;
pub mod registry;
pub mod report;
pub mod scaling;
pub mod status;
pub mod workload;

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;

use crate::conditions;
use crate::context::{Category, Context};
use crate::crd::ConsumerGroup;
use crate::metrics::{GroupLabels, ResultLabels};
use act::{Happening, WorkloadWrite};
use observe::Observation;
use plan::{KafkaObservation, Plan};
use registry::{Reads, Registry};

/// Errors a reconcile returns (everything else becomes a condition), one per call that can fail,
/// so that a log line says which one did.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the ConsumerGroup's Kafka settings (connection, Secret) failed: {0}")]
    ResolveSettings(#[source] kube::Error),
    #[error("reading the workload failed: {0}")]
    GetWorkload(#[source] kube::Error),
    #[error("reading the group's OffsetResets failed: {0}")]
    GetResets(#[source] kube::Error),
    #[error("applying the owned Deployment failed: {0}")]
    ApplyDeployment(#[source] kube::Error),
    #[error("scaling the workload failed: {0}")]
    ScaleWorkload(#[source] kube::Error),
    #[error("writing the ConsumerGroup's status failed: {0}")]
    PatchStatus(#[source] kube::Error),
}

impl Error {
    /// Stable label for metrics: every step is an apiserver request.
    pub fn label(&self) -> &'static str {
        "kube_api"
    }

    /// The step that failed, for log lines.
    pub fn step(&self) -> &'static str {
        match self {
            Error::ResolveSettings(_) => "resolve_settings",
            Error::GetWorkload(_) => "get_workload",
            Error::GetResets(_) => "get_resets",
            Error::ApplyDeployment(_) => "apply_deployment",
            Error::ScaleWorkload(_) => "scale_workload",
            Error::PatchStatus(_) => "patch_status",
        }
    }

    /// What kind of failure this is: it decides when to try again.
    pub fn category(&self) -> Category {
        match self {
            Error::ResolveSettings(error)
            | Error::GetWorkload(error)
            | Error::GetResets(error)
            | Error::ApplyDeployment(error)
            | Error::ScaleWorkload(error)
            | Error::PatchStatus(error) => Category::of_kube(error),
        }
    }
}

/// The ConsumerGroup controller's own state, next to the shared [`Context`] it dereferences to.
pub struct GroupContext {
    shared: Arc<Context>,
    /// Everything kept per ConsumerGroup between reconciles.
    pub registry: Arc<Registry>,
}

impl Deref for GroupContext {
    type Target = Context;

    fn deref(&self) -> &Context {
        &self.shared
    }
}

/// How soon a reconcile that met a cache behind its last status write tries again.
const CACHE_BEHIND_RETRY: Duration = Duration::from_millis(500);

impl GroupContext {
    pub fn new(shared: Arc<Context>, registry: Arc<Registry>) -> GroupContext {
        GroupContext { shared, registry }
    }

    /// Records what a ConsumerGroup reads now (None: nothing, its connection was refused or its
    /// groupId is another's); what it read before, if different, leaves that observer.
    pub fn reads(&self, key: &ObjectRef<ConsumerGroup>, reads: Option<Reads>) {
        if let Some(before) = self.registry.set_reads(key, reads) {
            self.kafka.withdraw(&before.properties, &before.group_id);
        }
    }

    /// Drops all the operator keeps of a ConsumerGroup: its registry entry, its interest in its
    /// observer and its /metrics series. Called on its delete event, on a relist, and after a
    /// reconcile that raced with its deletion.
    pub fn forget(&self, key: &ObjectRef<ConsumerGroup>) {
        if let Some(forgotten) = self.registry.forget(key)
            && let Some(reads) = forgotten.reads
        {
            self.kafka.withdraw(&reads.properties, &reads.group_id);
        }
        self.metrics.forget_group(&GroupLabels {
            namespace: key.namespace.clone().unwrap_or_default(),
            consumergroup: key.name.clone(),
        });
    }

    /// After a relist (the watch broke, deletions may have been missed): forgets every group the
    /// caches no longer hold.
    pub fn forget_missing(&self) {
        for key in self.registry.gone(|key| self.is_live(key)) {
            self.forget(&key);
        }
    }

    /// Closes the Kafka connections no ConsumerGroup reads any more, and publishes how many
    /// groups the registry keeps.
    pub fn sweep_connections(&self) {
        self.kafka.sweep(&self.registry.connections_in_use());
        self.metrics.groups_kept.set(self.registry.len() as i64);
    }
}

pub fn error_policy(group: Arc<ConsumerGroup>, error: &Error, ctx: Arc<GroupContext>) -> Action {
    ctx.metrics.errors.get_or_create(&crate::metrics::ErrorLabels { reason: error.label().to_string() }).inc();
    let key = ObjectRef::from(group.as_ref());
    let attempt = ctx.registry.failed(&key);
    if !ctx.is_live(&key) {
        ctx.forget(&key);
    }
    let category = error.category();
    let delay = category.retry_after(attempt, ctx.settings.resync);
    tracing::warn!(group = %group.name_any(), %error, step = error.step(), ?category, ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}

pub async fn reconcile(group: Arc<ConsumerGroup>, ctx: Arc<GroupContext>) -> Result<Action, Error> {
    let key = ObjectRef::from(group.as_ref());
    if ctx.registry.cache_behind(&key, group.metadata.resource_version.as_deref(), std::time::Instant::now()) {
        // Counted apart: nothing was observed or decided, so it is not a reconcile.
        tracing::debug!(group = %group.name_any(), "the cache does not show the last status write yet");
        ctx.metrics.reconciles.get_or_create(&ResultLabels { result: "deferred".to_string() }).inc();
        return Ok(Action::requeue(CACHE_BEHIND_RETRY));
    }
    let started = std::time::Instant::now();
    let result = reconcile_inner(group, key.clone(), ctx.clone()).await;
    // Deleted while it ran: its delete event may have been handled before this reconcile kept
    // its memory, interest and series again.
    if !ctx.is_live(&key) {
        ctx.forget(&key);
    }
    ctx.metrics.reconcile_duration.observe(started.elapsed().as_secs_f64());
    let outcome = if result.is_ok() { "success" } else { "error" };
    ctx.metrics.reconciles.get_or_create(&ResultLabels { result: outcome.to_string() }).inc();
    result
}

/// One reconcile: observe (reads) -> plan (pure) -> act on the workload -> status (pure) -> write
/// status and Events -> when to look again.
async fn reconcile_inner(
    group: Arc<ConsumerGroup>,
    key: ObjectRef<ConsumerGroup>,
    ctx: Arc<GroupContext>,
) -> Result<Action, Error> {
    let now = whole_seconds_now();
    let mut memory = ctx.registry.take_memory(&key);
    let Some(observation) = observe::observe(&ctx, &group, &key, &mut memory).await? else {
        ctx.registry.put_memory(&key, memory);
        return Ok(Action::requeue(observe::AWAIT_OBSERVATION));
    };
    let previous = group.status.clone().unwrap_or_default();
    let plan = plan::plan(&observation.plan_input(&group, &previous, &memory, now.0.as_second()));
    memory.recommendations = plan.history.clone();
    ctx.registry.put_memory(&key, memory);

    let applied = match act::workload(&ctx.client, &group, &observation, &plan).await? {
        WorkloadWrite::Done(applied) => applied,
        WorkloadWrite::Conflict => return Ok(workload_changed(&group)),
    };
    let status =
        status::build(&group, &observation, &plan, &applied, &now, ctx.settings.status_lag_interval.as_secs() as i64);
    let mut happenings = Vec::new();
    if applied.scaled
        && let Some(to) = applied.replicas
    {
        let from = observation.workload_replicas.clone().ok().flatten();
        tracing::info!(group = %group.name_any(), ?from, to, reason = %plan.scale_reason, "scaled workload");
        happenings.push(Happening::Scaled { from, to, reason: plan.scale_reason.clone() });
    }
    happenings.extend(
        conditions::transitions(&previous.conditions, &status.conditions).into_iter().map(Happening::Transition),
    );
    let fresh_members = status::fresh_member_count(&observation, &status);
    let lag = observation.kafka.lag.as_ref();
    report::record_metrics(&ctx.metrics, &group, &status, fresh_members, lag, plan.autoscaling_figures.as_ref());
    if act::status(&ctx.client, &group, &status).await? {
        ctx.registry.remember_write(&key, group.metadata.resource_version.clone(), std::time::Instant::now());
    }
    act::publish(&ctx.events, &group, happenings).await;
    Ok(next_look(&ctx, &group, &key, &observation, &plan))
}

/// Now in whole seconds, as the API stores times: a finer time in memory would never equal the
/// stored one, and every status comparison would find a change.
fn whole_seconds_now() -> Time {
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    Time(k8s_openapi::jiff::Timestamp::from_second(now).expect("now is a valid time"))
}

/// When to reconcile again: backing off while Kafka fails, never for an error only a spec change
/// fixes, else at the group's interval.
fn next_look(
    ctx: &GroupContext,
    group: &ConsumerGroup,
    key: &ObjectRef<ConsumerGroup>,
    observation: &Observation,
    plan: &Plan,
) -> Action {
    let failed = matches!(observation.kafka.kafka, KafkaObservation::Failed { .. });
    let attempt = if failed {
        ctx.registry.failed(key)
    } else {
        ctx.registry.succeeded(key);
        0
    };
    // A refused template still has lag to report: only the workload waits for a spec change.
    if plan.permanent {
        Action::await_change()
    } else if failed {
        Action::requeue(Category::Transient.retry_after(attempt, ctx.settings.resync).min(ctx.settings.resync))
    } else {
        let every = look_interval(group, ctx.settings.resync);
        // An observed group is reconciled by its observer's next poll (runtime's
        // groups_with_news): this later look is only for a poll that does not come.
        Action::requeue(if observation.observed { every * 2 } else { every })
    }
}

/// How soon a reconcile whose workload write met a newer workload decides again.
const WORKLOAD_CHANGED_RETRY: Duration = Duration::from_millis(200);

/// The workload changed between its read and the write (a person, an HPA, the workload's own
/// controller): nothing is written from the older read; the next reconcile reads it again.
fn workload_changed(group: &ConsumerGroup) -> Action {
    tracing::info!(group = %group.name_any(), "the workload changed since it was read; deciding again");
    Action::requeue(WORKLOAD_CHANGED_RETRY)
}

/// How often a ConsumerGroup is looked at: its lag autoscaling's poll interval, at most the resync.
fn look_interval(group: &ConsumerGroup, resync: Duration) -> Duration {
    let poll = group.spec.scaling.as_ref().map(|s| Duration::from_secs(s.poll_interval_seconds as u64));
    poll.map_or(resync, |p| p.min(resync))
}
