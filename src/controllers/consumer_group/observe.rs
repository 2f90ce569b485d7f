//! Observe: reads everything a decision needs into one [`Observation`]: who owns the groupId,
//! the Kafka settings, the workload, the group's part of its connection's observer snapshot and
//! the group's OffsetResets. Reads only: no writes to the apiserver or Kafka, no decisions; each
//! failure a person can fix is returned as a value so that the plan turns it into a condition.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};

use super::plan::{self, KafkaObservation};
use super::registry::{GroupMemory, Reads};
use super::{Error, GroupContext};
use crate::conditions;
use crate::context::Context;
use crate::crd::{ConsumerGroup, ConsumerGroupStatus, ScaleTargetKind};
use crate::kafka::observer::{GroupView, Interest};
use crate::kafka::{GroupDescription, KafkaError};
use crate::kafka_settings::{self, ConnectionProblem, KafkaSettings};
use crate::reset_hold::ResetHold;

/// How soon a group that is not observed yet is looked at again (the observer's early poll waits
/// 200 ms for others, then takes one round of requests).
pub const AWAIT_OBSERVATION: std::time::Duration = std::time::Duration::from_millis(500);

/// Everything one reconcile read.
#[derive(Debug)]
pub struct Observation {
    /// `namespace/name` of an earlier ConsumerGroup claiming the same groupId in the same cluster.
    pub conflict_with: Option<String>,
    /// The resolved Kafka settings (None: a conflict or a problem, below).
    pub settings: Option<KafkaSettings>,
    pub settings_problem: Option<ConnectionProblem>,
    pub workload: Option<Workload>,
    /// The workload's replicas; `Err` names a missing scale target.
    pub workload_replicas: Result<Option<i32>, String>,
    /// Whether the group was read from its connection's observer (whose polls reconcile it).
    pub observed: bool,
    pub kafka: KafkaOutcome,
    pub resets: ResetHold,
}

impl Observation {
    /// What the plan decides from. `previous` is the status the object carries.
    pub fn plan_input<'a>(
        &'a self,
        group: &'a ConsumerGroup,
        previous: &ConsumerGroupStatus,
        memory: &'a GroupMemory,
        now_seconds: i64,
    ) -> plan::Observed<'a> {
        let held_by_reset = conditions::find(&previous.conditions, conditions::READY)
            .is_some_and(|c| c.reason == conditions::reason::OFFSET_RESET_IN_PROGRESS);
        let lag = self.kafka.lag.as_ref();
        plan::Observed {
            group,
            reset_in_progress: self.resets.holding.clone(),
            resume_after_reset: if held_by_reset && self.resets.holding.is_none() {
                self.resets.released_replicas
            } else {
                None
            },
            conflict_with: self.conflict_with.clone(),
            connection: self.settings_problem.clone(),
            workload_replicas: self.workload_replicas.clone(),
            kafka: self.kafka.kafka.clone(),
            scaling_lag: lag.map(|s| s.scaling_lag),
            rates: lag.map(|summary| plan::ScalingRates {
                produced_per_second: summary.rates.map(|r| r.produced_per_second),
                committed_per_second: summary.rates.and_then(|r| r.committed_per_second),
                learned_per_replica: memory.rates.per_replica,
            }),
            now_seconds,
            history: &memory.recommendations,
        }
    }
}

/// Reads what `group` needs decided. `Ok(None)`: the group is not in its observer's snapshot
/// yet; look again after [`AWAIT_OBSERVATION`]. Registers the group with its connection's
/// observer (or forgets it), and learns the per-replica rate into `memory`.
pub async fn observe(
    ctx: &GroupContext,
    group: &ConsumerGroup,
    key: &ObjectRef<ConsumerGroup>,
    memory: &mut GroupMemory,
) -> Result<Option<Observation>, Error> {
    let conflict_with = crate::ownership::conflicting_owner(ctx, group);
    let identified = crate::ownership::cluster_identified(ctx, group);
    let (mut settings, mut settings_problem) = (None, None);
    if conflict_with.is_none() {
        match kafka_settings::resolve(&ctx.client, group, &ctx.settings.defaults)
            .await
            .map_err(Error::ResolveSettings)?
        {
            Ok(resolved) => settings = Some(resolved),
            Err(problem) => settings_problem = Some(problem),
        }
    }
    if settings.is_none() {
        ctx.reads(key, None);
    }
    let workload = workload(&ctx.client, group).await.map_err(Error::GetWorkload)?;
    let workload_replicas = match (&workload, &group.spec.scale_target_ref) {
        (Some(w), _) => Ok(w.replicas),
        (None, Some(target)) => Err(format!("{:?}/{}", target.kind, target.name)),
        (None, None) => Ok(None),
    };
    let (observed, mut kafka) = match (&settings, &workload_replicas) {
        (Some(settings), Ok(_)) => {
            let reads = Reads { properties: settings.properties.clone(), group_id: group.spec.group_id.clone() };
            ctx.reads(key, Some(reads));
            (true, observe_kafka(ctx, group, settings, memory).await)
        }
        _ => (false, KafkaOutcome::default()),
    };
    if kafka.awaiting {
        return Ok(None);
    }
    // A first read of Kafka names the cluster by its id: another spelling of its bootstrap servers
    // may turn out to be an older ConsumerGroup's cluster. Checked before anything is acted on
    // (once the id was known at the first check, that check was already by id).
    let mut conflict_with = conflict_with;
    if conflict_with.is_none()
        && observed
        && !identified
        && let Some(owner) = crate::ownership::conflicting_owner(ctx, group)
    {
        ctx.reads(key, None);
        settings = None;
        kafka = KafkaOutcome::default();
        conflict_with = Some(owner);
    }
    if group.spec.scaling.is_some()
        && let (Some(summary), Some(description)) = (&kafka.lag, &kafka.description)
        && let Some(recent) = &summary.recent_capacity
    {
        let stable = description.state == crate::kafka::GroupState::Stable;
        memory.rates.observe(recent, &description.members, stable);
    }
    let resets = crate::reset_hold::hold_now(&ctx.client, &ctx.caches.resets, group).await.map_err(Error::GetResets)?;
    Ok(Some(Observation {
        conflict_with,
        settings,
        settings_problem,
        workload,
        workload_replicas,
        observed,
        kafka,
        resets,
    }))
}

/// The workload as it is now.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Workload {
    /// `spec.replicas` of the workload; None when the owned Deployment does not exist yet.
    pub replicas: Option<i32>,
    /// The owned Deployment as stored (template mode), to apply only what differs.
    pub deployment: Option<Deployment>,
    /// Ready pods according to the workload's status (0 where no controller-manager runs).
    pub ready_replicas: Option<i32>,
    pub selector: Option<String>,
    /// The resourceVersion read: replica writes are conditional on it.
    pub resource_version: Option<String>,
}

/// Reads the owned Deployment (template mode) or the scale subresource of the target.
/// Ok(None) means a referenced scale target does not exist.
async fn workload(client: &Client, group: &ConsumerGroup) -> Result<Option<Workload>, kube::Error> {
    let namespace = group.namespace().unwrap_or_default();
    if let Some(target) = &group.spec.scale_target_ref {
        let scale = match target.kind {
            ScaleTargetKind::Deployment => {
                let api: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
                get_scale_opt(api.get_scale(&target.name).await)?
            }
            ScaleTargetKind::StatefulSet => {
                let api: Api<StatefulSet> = Api::namespaced(client.clone(), &namespace);
                get_scale_opt(api.get_scale(&target.name).await)?
            }
        };
        return Ok(scale.map(|scale| Workload {
            resource_version: scale.metadata.resource_version,
            replicas: scale.spec.and_then(|s| s.replicas),
            deployment: None,
            ready_replicas: None,
            selector: scale.status.and_then(|s| s.selector),
        }));
    }
    let api: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let deployment = api.get_opt(&group.name_any()).await?;
    Ok(Some(Workload {
        replicas: deployment.as_ref().and_then(|d| d.spec.as_ref()).and_then(|s| s.replicas),
        ready_replicas: deployment.as_ref().and_then(|d| d.status.as_ref()).and_then(|s| s.ready_replicas),
        selector: Some(super::workload::selector_string(group)),
        resource_version: deployment.as_ref().and_then(|d| d.metadata.resource_version.clone()),
        deployment,
    }))
}

/// What Kafka said about a ConsumerGroup this time.
#[derive(Debug)]
pub struct KafkaOutcome {
    pub kafka: KafkaObservation,
    /// The group is not in a snapshot yet; an early poll is coming.
    pub awaiting: bool,
    pub description: Option<GroupDescription>,
    /// Whether the group's state was read this time (else status keeps the last known one).
    pub described: bool,
    pub lag: Option<Arc<crate::lag::Summary>>,
}

impl KafkaOutcome {
    /// Whether Kafka answered for the group's state this time (else status keeps the last one).
    pub fn group_read(&self) -> bool {
        matches!(self.kafka, KafkaObservation::Seen { .. }) && self.described
    }
}

impl Default for KafkaOutcome {
    fn default() -> Self {
        KafkaOutcome {
            kafka: KafkaObservation::NotQueried,
            awaiting: false,
            description: None,
            described: false,
            lag: None,
        }
    }
}

/// Reads the group's part of its connection's observer snapshot: the group's state and its lag
/// as the observer summarized it. No Kafka I/O of its own.
async fn observe_kafka(
    ctx: &Context,
    group: &ConsumerGroup,
    settings: &KafkaSettings,
    memory: &mut GroupMemory,
) -> KafkaOutcome {
    let failed = |error: KafkaError| {
        let mut message = error.to_string();
        if settings.defaults_withheld {
            message = format!("{message}; {}", kafka_settings::DEFAULTS_WITHHELD);
        }
        KafkaOutcome {
            kafka: KafkaObservation::Failed { reason: failure_reason(&error), message },
            ..KafkaOutcome::default()
        }
    };
    let observer = match ctx.kafka.observer_for(settings).await {
        Ok(observer) => observer,
        Err(error) => return failed(error),
    };
    let scaling = group.spec.scaling.as_ref();
    let interest = Interest {
        topics: group.spec.topics.clone(),
        every: super::look_interval(group, ctx.settings.resync),
        policy: group.spec.auto_offset_reset,
        polls_kept: scaling.and_then(|s| s.exclude_persistent_lag_after_polls).map_or(0, |n| n.max(2) as usize),
        learns_capacity: scaling.is_some(),
    };
    let Some(snapshot) = observer.latest(&group.spec.group_id, &interest) else {
        // Not observed yet (a new group, or new topics): look again once the early poll is in,
        // unless the observer has not answered for a while.
        let since = *memory.awaiting_observation.get_or_insert_with(std::time::Instant::now);
        if since.elapsed() > ctx.settings.kafka_timeout * 3 {
            memory.awaiting_observation = None;
            return failed(KafkaError::Timeout("an observation of the group"));
        }
        return KafkaOutcome { awaiting: true, ..KafkaOutcome::default() };
    };
    memory.awaiting_observation = None;
    let (partitions, group_read, lag) = match snapshot.view(&group.spec.group_id, &group.spec.topics) {
        GroupView::Failed(error) => return failed(error),
        GroupView::TopicsMissing(topics) => {
            return KafkaOutcome { kafka: KafkaObservation::TopicsMissing(topics), ..KafkaOutcome::default() };
        }
        GroupView::Seen { partitions, group, lag, .. } => (partitions, group, lag),
    };
    let mut outcome = KafkaOutcome::default();
    let mut group_unreadable = None;
    match group_read {
        Ok(found) => {
            outcome.description = found;
            outcome.described = true;
        }
        Err(error) => group_unreadable = Some(error.to_string()),
    }
    match lag {
        Ok(summary) => outcome.lag = Some(summary),
        Err(error) => {
            tracing::warn!(group = %group.name_any(), %error, "lag could not be measured");
            group_unreadable.get_or_insert_with(|| error.to_string());
            // A listing that hides a group it may not describe reads as "Dead, no members":
            // without its offsets, its state is not trusted either.
            outcome.described = false;
        }
    }
    let unbatched = observer.client().unbatched_reason().map(ToString::to_string);
    outcome.kafka = KafkaObservation::Seen { partitions, group_unreadable, unbatched };
    outcome
}

fn get_scale_opt(
    result: Result<k8s_openapi::api::autoscaling::v1::Scale, kube::Error>,
) -> Result<Option<k8s_openapi::api::autoscaling::v1::Scale>, kube::Error> {
    match result {
        Ok(scale) => Ok(Some(scale)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

/// The condition reason for a Kafka failure: configuration and login problems are told apart
/// from an unreachable cluster, since only a fix of the Secret helps them.
pub fn failure_reason(error: &KafkaError) -> &'static str {
    use crate::conditions::reason;
    match error {
        KafkaError::Config(_) => reason::KAFKA_CONFIG_INVALID,
        KafkaError::Auth(_) | KafkaError::TopicsNotAuthorized(_) => reason::KAFKA_AUTH_FAILED,
        _ => reason::KAFKA_UNREACHABLE,
    }
}
