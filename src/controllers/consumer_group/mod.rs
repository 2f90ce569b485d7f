//! The ConsumerGroup controller: a reconcile pipeline of observe (reads) -> plan/scaling (pure)
//! -> act (writes).
//!
//! What it may do: read its ConsumerGroup, the workload and the group's part of its connection's
//! observer snapshot (no Kafka request of its own, except the transaction-marker probe); write the
//! owned Deployment or a scale subresource, the ConsumerGroup's status and Events. It reads
//! OffsetResets only to hold a workload at zero while one runs (`crate::reset_hold`); it
//! never writes one. The watches and the process around it are in `crate::runtime`.

pub mod act;
pub mod observe;
pub mod plan;
pub mod report;
pub mod scaling;
pub mod workload;

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;

use crate::conditions;
use crate::context::{Category, Context};
use crate::crd::{ConsumerGroup, ConsumerGroupStatus, TopicStatus};
use crate::kafka::observer::{GroupView, Interest};
use crate::kafka::{GroupDescription, KafkaError};
use crate::kafka_settings::{self, KafkaSettings};
use crate::metrics::{GroupLabels, ResultLabels};
use act::Happening;
use plan::{KafkaObservation, Observed};
use scaling::Recommendation;

/// How soon a group that is not observed yet is looked at again (the observer's early poll waits
/// 200 ms for others, then takes one round of requests).
const AWAIT_OBSERVATION: Duration = Duration::from_millis(500);

/// Errors a reconcile returns (everything else becomes a condition).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("Kafka request failed: {0}")]
    Kafka(KafkaError),
}

impl Error {
    /// Stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube_api",
            Error::Kafka(error) => error.label(),
        }
    }

    /// What kind of failure this is: it decides when to try again.
    pub fn category(&self) -> Category {
        match self {
            Error::Kube(error) => Category::of_kube(error),
            Error::Kafka(error) => Category::of_kafka(error),
        }
    }
}

/// The ConsumerGroup controller's own state, next to the shared [`Context`] it dereferences to.
pub struct GroupContext {
    shared: Arc<Context>,
    /// Consecutive failures per object, for backoff.
    failures: Mutex<HashMap<ObjectRef<ConsumerGroup>, u32>>,
    /// What the operator remembers per ConsumerGroup between reconciles (in memory: a restart
    /// starts new windows, which only delays a scale-down or a health verdict).
    memory: Mutex<HashMap<ObjectRef<ConsumerGroup>, GroupMemory>>,
}

impl Deref for GroupContext {
    type Target = Context;

    fn deref(&self) -> &Context {
        &self.shared
    }
}

#[derive(Default)]
struct GroupMemory {
    recommendations: Vec<Recommendation>,
    /// The per-replica rate learned for time-to-drain scaling.
    rates: scaling::RateMemory,
    /// Since when the group has waited for its first observation.
    awaiting_observation: Option<std::time::Instant>,
    /// The status write the watch cache may not show yet.
    last_write: Option<LastWrite>,
}

/// A status write, until the watch cache shows it. A reconcile triggered by something else (the
/// Deployment's watch event, the observer) can run before the write's own event arrives; deciding
/// again from the older object would repeat a transition's Event and write older fields back.
struct LastWrite {
    /// The resource version the write was decided on: the cache only moves forward, so while it
    /// holds the object at this version it is behind the write.
    decided_on: String,
    at: std::time::Instant,
}

/// How soon a reconcile that met a cache behind its last status write tries again.
const CACHE_BEHIND_RETRY: Duration = Duration::from_millis(500);

/// How long a cache behind a write is waited for before deciding from it anyway (its watch broke
/// and is being restarted): a repeated Event is better than a ConsumerGroup left alone.
const CACHE_BEHIND_PATIENCE: Duration = Duration::from_secs(10);

impl LastWrite {
    fn is_ahead_of(&self, cached: Option<&str>, now: std::time::Instant) -> bool {
        cached == Some(self.decided_on.as_str()) && now.duration_since(self.at) < CACHE_BEHIND_PATIENCE
    }
}

impl GroupContext {
    pub fn new(shared: Arc<Context>) -> GroupContext {
        GroupContext { shared, failures: Mutex::default(), memory: Mutex::default() }
    }

    fn take_memory(&self, key: &ObjectRef<ConsumerGroup>) -> GroupMemory {
        self.memory.lock().ok().and_then(|mut m| m.remove(key)).unwrap_or_default()
    }

    fn put_memory(&self, key: ObjectRef<ConsumerGroup>, memory: GroupMemory) {
        if let Ok(mut m) = self.memory.lock() {
            m.insert(key, memory);
        }
    }

    /// Whether the cached ConsumerGroup is still the one this controller's last status write was
    /// decided on. Forgets the write once the cache has moved past it.
    fn cache_behind(&self, key: &ObjectRef<ConsumerGroup>, group: &ConsumerGroup) -> bool {
        let Ok(mut memory) = self.memory.lock() else { return false };
        let Some(entry) = memory.get_mut(key) else { return false };
        let cached = group.metadata.resource_version.as_deref();
        if entry.last_write.as_ref().is_some_and(|w| w.is_ahead_of(cached, std::time::Instant::now())) {
            return true;
        }
        entry.last_write = None;
        false
    }

    fn remember_write(&self, group: &ConsumerGroup) {
        let Ok(mut memory) = self.memory.lock() else { return };
        let entry = memory.entry(ObjectRef::from(group)).or_default();
        entry.last_write = group
            .metadata
            .resource_version
            .clone()
            .map(|decided_on| LastWrite { decided_on, at: std::time::Instant::now() });
    }

    /// Drops the memory, failure counts and metrics of ConsumerGroups that no longer exist, then
    /// the Kafka connections nobody uses any more.
    pub fn sweep(&self) {
        let live = self.live_groups();
        let gone: Vec<ObjectRef<ConsumerGroup>> =
            self.memory.lock().map(|m| m.keys().filter(|k| !live.contains(*k)).cloned().collect()).unwrap_or_default();
        for key in gone {
            if let Ok(mut m) = self.memory.lock() {
                m.remove(&key);
            }
            if let Ok(mut f) = self.failures.lock() {
                f.remove(&key);
            }
            self.metrics.forget_group(&GroupLabels {
                namespace: key.namespace.clone().unwrap_or_default(),
                consumergroup: key.name.clone(),
            });
        }
        self.sweep_connections(&live);
    }
}

pub fn error_policy(group: Arc<ConsumerGroup>, error: &Error, ctx: Arc<GroupContext>) -> Action {
    ctx.metrics.errors.get_or_create(&crate::metrics::ErrorLabels { reason: error.label().to_string() }).inc();
    let attempt = ctx.failures.lock().map(|mut f| bump(&mut f, ObjectRef::from(group.as_ref()))).unwrap_or(1);
    let category = error.category();
    let delay = category.retry_after(attempt, ctx.resync);
    tracing::warn!(group = %group.name_any(), %error, label = error.label(), ?category, ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}

fn bump(failures: &mut HashMap<ObjectRef<ConsumerGroup>, u32>, key: ObjectRef<ConsumerGroup>) -> u32 {
    let count = failures.entry(key).or_default();
    *count = count.saturating_add(1);
    *count
}

pub async fn reconcile(group: Arc<ConsumerGroup>, ctx: Arc<GroupContext>) -> Result<Action, Error> {
    let key = ObjectRef::from(group.as_ref());
    if ctx.cache_behind(&key, &group) {
        // Counted apart: nothing was observed or decided, so it is not a reconcile.
        tracing::debug!(group = %group.name_any(), "the cache does not show the last status write yet");
        ctx.metrics.reconciles.get_or_create(&ResultLabels { result: "deferred".to_string() }).inc();
        return Ok(Action::requeue(CACHE_BEHIND_RETRY));
    }
    let started = std::time::Instant::now();
    let result = reconcile_inner(group, key, ctx.clone()).await;
    ctx.metrics.reconcile_duration.observe(started.elapsed().as_secs_f64());
    let outcome = if result.is_ok() { "success" } else { "error" };
    ctx.metrics.reconciles.get_or_create(&ResultLabels { result: outcome.to_string() }).inc();
    result
}

async fn reconcile_inner(
    group: Arc<ConsumerGroup>,
    key: ObjectRef<ConsumerGroup>,
    ctx: Arc<GroupContext>,
) -> Result<Action, Error> {
    let namespace = group.namespace().unwrap_or_default();
    // Whole seconds, as the API stores times: a finer time in memory would never equal the stored
    // one, and every status comparison would find a change.
    let now = Time(
        k8s_openapi::jiff::Timestamp::from_second(k8s_openapi::jiff::Timestamp::now().as_second())
            .expect("now is a valid time"),
    );
    let previous = group.status.clone().unwrap_or_default();

    // Observe.
    let conflict_with = crate::ownership::conflicting_owner(&ctx, &group);
    let identified = crate::ownership::cluster_identified(&ctx, &group);
    let mut connection = None;
    let mut connection_problem = None;
    if conflict_with.is_none() {
        match kafka_settings::resolve(&ctx.client, &group, &ctx.defaults).await? {
            Ok(c) => connection = Some(c),
            Err(problem) => connection_problem = Some(problem),
        }
    }
    if connection.is_none() {
        ctx.forget_connection(&key);
    }
    let workload = observe::workload(&ctx.client, &group).await?;
    let workload_replicas = match (&workload, &group.spec.scale_target_ref) {
        (Some(w), _) => Ok(w.replicas),
        (None, Some(target)) => Err(format!("{:?}/{}", target.kind, target.name)),
        (None, None) => Ok(None),
    };
    let mut memory = ctx.take_memory(&key);
    // Observed: read from the connection's observer (whose polls then reconcile the group).
    let (observed, outcome) = match (&connection, &workload_replicas) {
        (Some(connection), Ok(_)) => {
            ctx.use_connection(&key, &connection.properties, &group.spec.group_id);
            (true, observe_kafka(&ctx, &group, connection, &mut memory).await)
        }
        _ => (false, KafkaOutcome::default()),
    };
    if outcome.awaiting {
        ctx.put_memory(key, memory);
        return Ok(Action::requeue(AWAIT_OBSERVATION));
    }
    // A first read of Kafka names the cluster by its id: another spelling of its bootstrap servers
    // may turn out to be an older ConsumerGroup's cluster. Checked before anything is acted on
    // (once the id was known at the first check, that check was already by id).
    let (conflict_with, outcome) = match conflict_with {
        None if observed && !identified => match crate::ownership::conflicting_owner(&ctx, &group) {
            Some(owner) => {
                ctx.forget_connection(&key);
                connection = None;
                (Some(owner), KafkaOutcome::default())
            }
            None => (None, outcome),
        },
        known => (known, outcome),
    };
    let KafkaOutcome { kafka, description, described, lag: lag_summary, .. } = outcome;
    if group.spec.scaling.is_some()
        && let (Some(summary), Some(description)) = (&lag_summary, &description)
        && let Some(recent) = &summary.recent_capacity
    {
        let stable = description.state == crate::kafka::GroupState::Stable;
        memory.rates.observe(recent, &description.members, stable);
    }
    let rates = lag_summary.as_ref().map(|summary| plan::ScalingRates {
        produced_per_second: summary.rates.map(|r| r.produced_per_second),
        committed_per_second: summary.rates.and_then(|r| r.committed_per_second),
        learned_per_replica: memory.rates.per_replica,
    });

    // Decide.
    let resets = crate::reset_hold::hold_now(&ctx.client, &ctx.resets, &group).await?;
    let held_by_reset = conditions::find(&previous.conditions, conditions::READY)
        .is_some_and(|c| c.reason == conditions::reason::OFFSET_RESET_IN_PROGRESS);
    let resume_after_reset = if held_by_reset && resets.holding.is_none() { resets.released_replicas } else { None };
    let reset_in_progress = resets.holding;
    let plan_conflict = conflict_with.is_some();
    let plan = plan::plan(&Observed {
        group: &group,
        reset_in_progress,
        resume_after_reset,
        conflict_with,
        connection: connection_problem,
        workload_replicas: workload_replicas.clone(),
        kafka: kafka.clone(),
        scaling_lag: lag_summary.as_ref().map(|s| s.scaling_lag),
        rates,
        now_seconds: now.0.as_second(),
        history: &memory.recommendations,
    });
    memory.recommendations = plan.history.clone();
    ctx.put_memory(key.clone(), memory);

    // Act.
    let current = workload_replicas.clone().ok().flatten();
    let mut happenings = Vec::new();
    let mut replicas_now = current;
    let mut scaled = false;
    let mut refused = None;
    let template = group.spec.template.as_ref().map(|template| template.parse());
    if let (Some(Err(invalid)), Some(_)) = (&template, &connection) {
        // The Deployment is left as it is (never scaled to zero for a typo) until the spec is fixed.
        refused = Some(conditions::Desired::new(
            conditions::READY,
            false,
            conditions::reason::TEMPLATE_INVALID,
            format!("{invalid}; fix spec.template"),
        ));
    } else if let (Some(Ok(template)), Some(connection)) = (&template, &connection) {
        // Apply the template whenever the replica count is known, so template edits and hand edits
        // are reconciled even while the replica decision is on hold.
        if let Some(replicas) = plan.replicas.or(current) {
            let deployment = workload::deployment(&group, template, &connection.bootstrap_servers, replicas);
            let live = workload.as_ref().and_then(|w| w.deployment.as_ref());
            let applied = match live {
                // Already as wanted: no write, and so no watch event that would reconcile again.
                Some(live) if workload::is_applied(&deployment, live) => Ok(()),
                _ => {
                    let read_version = workload.as_ref().and_then(|w| w.resource_version.clone());
                    act::apply_deployment(&ctx.client, &deployment, read_version).await
                }
            };
            match applied {
                Ok(()) => {
                    replicas_now = Some(replicas);
                    scaled = current != Some(replicas);
                }
                // The apiserver refused the Deployment built from spec.template (a field the CRD
                // schema leaves open, e.g. a malformed quantity): only a spec change fixes it.
                // Server-side apply reports an undecodable field as a 500 "failed to convert".
                Err(kube::Error::Api(status))
                    if matches!(status.code, 400 | 422)
                        || (status.code == 500 && status.message.contains("failed to convert")) =>
                {
                    refused = Some(conditions::Desired::new(
                        conditions::READY,
                        false,
                        conditions::reason::WORKLOAD_APPLY_FAILED,
                        format!(
                            "the Deployment built from spec.template was refused: {}; fix spec.template",
                            status.message
                        ),
                    ));
                }
                Err(error) if act::is_conflict(&error) => return Ok(workload_changed(&group)),
                Err(error) => return Err(error.into()),
            }
        }
    } else if let (Some(target), Some(replicas), Some(read_version)) =
        (&group.spec.scale_target_ref, plan.replicas, workload.as_ref().and_then(|w| w.resource_version.as_deref()))
        && current != Some(replicas)
    {
        match act::scale_target(&ctx.client, &namespace, target.kind, &target.name, replicas, read_version).await {
            Ok(()) => {}
            Err(error) if act::is_conflict(&error) => return Ok(workload_changed(&group)),
            Err(error) => return Err(error.into()),
        }
        replicas_now = Some(replicas);
        scaled = true;
    }
    if scaled && let Some(to) = replicas_now {
        tracing::info!(group = %group.name_any(), from = ?current, to, reason = %plan.scale_reason, "scaled workload");
        happenings.push(Happening::Scaled { from: current, to, reason: plan.scale_reason.clone() });
    }

    // What the act step met is reported next to the plan, never written into it: a Deployment the
    // apiserver refused replaces the plan's Ready condition, and only a spec change can fix it.
    let mut desired_conditions = plan.conditions.clone();
    if let Some(refused) = &refused {
        desired_conditions.retain(|c| c.type_ != conditions::READY);
        desired_conditions.push(refused.clone());
    }
    let conditions = conditions::merge(&previous.conditions, &desired_conditions, group.metadata.generation, &now);
    happenings
        .extend(conditions::transitions(&previous.conditions, &conditions).into_iter().map(Happening::Transition));
    let kafka_seen = matches!(kafka, KafkaObservation::Seen { .. });
    let kafka_seen_group = kafka_seen && described;
    // A ConsumerGroup that does not own its groupId keeps nothing of the group's members or lag,
    // not even from a time it did: they belong to the owner.
    let previous = if plan_conflict {
        ConsumerGroupStatus { group_state: None, member_count: None, members: Vec::new(), lag: None, ..previous }
    } else {
        previous
    };
    let status = ConsumerGroupStatus {
        observed_generation: group.metadata.generation,
        partitions: plan.partitions.or(previous.partitions),
        topics: match &kafka {
            KafkaObservation::Seen { partitions, .. } => {
                partitions.iter().map(|(name, &partitions)| TopicStatus { name: name.clone(), partitions }).collect()
            }
            _ => previous.topics.clone(),
        },
        replicas: replicas_now,
        desired_replicas: plan.desired_replicas.or(previous.desired_replicas),
        selector: workload.as_ref().and_then(|w| w.selector.clone()),
        group_state: if kafka_seen_group {
            Some(description.as_ref().map_or("Dead".to_string(), |d| d.state.as_str().to_string()))
        } else {
            previous.group_state.clone()
        },
        member_count: if kafka_seen_group {
            Some(description.as_ref().map_or(0, |d| d.members.len() as i32))
        } else {
            previous.member_count
        },
        members: if kafka_seen_group { report::members(description.as_ref()) } else { previous.members.clone() },
        lag: match &lag_summary {
            Some(summary) => Some(crate::lag::lag_for_status(
                previous.lag.as_ref(),
                &summary.lag_status(),
                ctx.status_lag_interval.as_secs() as i64,
            )),
            None => previous.lag.clone(),
        },
        last_scale_time: if scaled { Some(now.clone()) } else { previous.last_scale_time.clone() },
        autoscaling: None,
        conditions,
    };
    // The autoscaling figures move every poll: refreshed with the lag figures, or when the
    // decision itself changed.
    let lag_refreshed = status.lag.as_ref().map(|l| &l.measured_at) != previous.lag.as_ref().map(|l| &l.measured_at);
    let status = ConsumerGroupStatus {
        autoscaling: match (&plan.autoscaling, &previous.autoscaling) {
            (None, _) if group.spec.scaling.is_none() => None,
            (None, kept) => kept.clone(),
            (Some(fresh), Some(kept))
                if !lag_refreshed
                    && status.desired_replicas == previous.desired_replicas
                    && fresh.rule == kept.rule =>
            {
                Some(kept.clone())
            }
            (Some(fresh), _) => Some(fresh.clone()),
        },
        ..status
    };
    let fresh_members = kafka_seen_group.then_some(status.member_count).flatten();
    report::record_metrics(
        &ctx.metrics,
        &group,
        &status,
        fresh_members,
        lag_summary.as_ref(),
        plan.autoscaling_figures.as_ref(),
    );
    if act::status(&ctx.client, &group, &status).await? {
        ctx.remember_write(&group);
    }
    act::publish(&ctx.events, &group, happenings).await;

    // Schedule the next look.
    let failed = matches!(kafka, KafkaObservation::Failed { .. });
    let attempt = ctx
        .failures
        .lock()
        .map(|mut f| {
            if failed {
                bump(&mut f, key.clone())
            } else {
                f.remove(&key);
                0
            }
        })
        .unwrap_or(0);
    // A refused template still has lag to report: only the workload waits for a spec change.
    Ok(if plan.permanent {
        Action::await_change()
    } else if failed {
        Action::requeue(Category::Transient.retry_after(attempt, ctx.resync).min(ctx.resync))
    } else {
        let every = look_interval(&group, ctx.resync);
        // An observed group is reconciled by its observer's next poll (runtime's
        // groups_with_news): this later look is only for a poll that does not come.
        Action::requeue(if observed { every * 2 } else { every })
    })
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

/// What Kafka said about a ConsumerGroup this time.
struct KafkaOutcome {
    kafka: KafkaObservation,
    /// The group is not in a snapshot yet; an early poll is coming.
    awaiting: bool,
    description: Option<GroupDescription>,
    /// Whether the group's state was read this time (else status keeps the last known one).
    described: bool,
    lag: Option<Arc<crate::lag::Summary>>,
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
    connection: &KafkaSettings,
    memory: &mut GroupMemory,
) -> KafkaOutcome {
    let failed = |error: KafkaError| {
        let mut message = error.to_string();
        if connection.defaults_withheld {
            message = format!("{message}; {}", kafka_settings::DEFAULTS_WITHHELD);
        }
        KafkaOutcome {
            kafka: KafkaObservation::Failed { reason: observe::failure_reason(&error), message },
            ..KafkaOutcome::default()
        }
    };
    let observer = match ctx.observer_for(connection).await {
        Ok(observer) => observer,
        Err(error) => return failed(error),
    };
    let scaling = group.spec.scaling.as_ref();
    let interest = Interest {
        topics: group.spec.topics.clone(),
        every: look_interval(group, ctx.resync),
        policy: group.spec.auto_offset_reset,
        polls_kept: scaling.and_then(|s| s.exclude_persistent_lag_after_polls).map_or(0, |n| n.max(2) as usize),
        learns_capacity: scaling.is_some(),
    };
    let Some(snapshot) = observer.latest(&group.spec.group_id, &interest) else {
        // Not observed yet (a new group, or new topics): look again once the early poll is in,
        // unless the observer has not answered for a while.
        let since = *memory.awaiting_observation.get_or_insert_with(std::time::Instant::now);
        if since.elapsed() > ctx.kafka_timeout * 3 {
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
    let unbatched = observer.client().group_reader().err().map(ToString::to_string);
    outcome.kafka = KafkaObservation::Seen { partitions, group_unreadable, unbatched };
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_write_is_ahead_of_the_version_it_was_decided_on_until_patience_runs_out() {
        let at = Instant::now();
        let write = LastWrite { decided_on: "10".into(), at };
        assert!(write.is_ahead_of(Some("10"), at), "the cache still holds what the write was decided on");
        assert!(write.is_ahead_of(Some("10"), at + CACHE_BEHIND_PATIENCE - Duration::from_millis(1)));
        assert!(!write.is_ahead_of(Some("10"), at + CACHE_BEHIND_PATIENCE), "a broken watch is not waited for");
        assert!(!write.is_ahead_of(Some("11"), at), "the cache moved on: the write or something newer");
        assert!(!write.is_ahead_of(None, at));
    }
}
