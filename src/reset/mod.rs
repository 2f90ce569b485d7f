//! The OffsetReset controller: a state machine recorded in status.
//!
//! DryRun: plan on the live group, store the plan, stop (phase Planned). Execute:
//! 1. Quiescing: the ConsumerGroup controller sees an OffsetReset in a holding phase and keeps the
//!    workload at zero (autoscaling suspended); this controller waits for Kafka to report the group
//!    Empty, or fails naming the members that stay (consumers it does not control).
//! 2. Committing: the final plan is resolved on the stopped group and stored in status *before*
//!    anything is committed; then it is committed with AlterConsumerGroupOffsets (or the offsets
//!    deleted) and verified with a fresh OffsetFetch. A restart in this phase re-commits the stored
//!    absolute offsets (idempotent; a relative target is never re-resolved).
//! 3. Succeeded / Failed: the ConsumerGroup controller resumes its own replica decision.
//!
//! Only one reset per ConsumerGroup runs at a time; the others wait in Pending.

pub mod plan;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::controller::observe;
use crate::controller::workload::MANAGER;
use crate::controller::{Context, Error};
use crate::crd::{ConsumerGroup, OffsetReset, OffsetResetStatus, PlannedOffset, ResetMode, ResetPhase};
use crate::kafka::{IsolationLevel, KafkaClient, KafkaError, OffsetSpec, TopicPartition};
use plan::{PartitionState, Target};

/// Fault injection for crash tests: when `CGO_FAULT_EXIT_AT` names a point, the process exits
/// there, as if killed. Points: `plan-stored` (Committing written, nothing committed yet) and
/// `committed` (offsets committed, Succeeded not yet written).
fn fault_point(point: &str) {
    if std::env::var("CGO_FAULT_EXIT_AT").is_ok_and(|p| p == point) {
        tracing::error!(point, "fault injection: exiting");
        std::process::exit(86);
    }
}

/// The reset of `group` that currently holds its workload at zero, if any.
pub fn holding_reset(resets: &Store<OffsetReset>, group: &ConsumerGroup) -> Option<String> {
    let namespace = group.namespace();
    resets
        .state()
        .iter()
        .filter(|r| r.namespace() == namespace && r.spec.consumer_group == group.name_any())
        .find(|r| r.status.as_ref().and_then(|s| s.phase).is_some_and(ResetPhase::holds_workload))
        .map(|r| r.name_any())
}

async fn write_status(ctx: &Context, reset: &OffsetReset, status: &OffsetResetStatus) -> Result<(), Error> {
    let api: Api<OffsetReset> = Api::namespaced(ctx.client.clone(), &reset.namespace().unwrap_or_default());
    let body = json!({
        "apiVersion": OffsetReset::api_version(&()),
        "kind": OffsetReset::kind(&()),
        "status": status,
    });
    api.patch_status(&reset.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(body)).await?;
    Ok(())
}

async fn event(ctx: &Context, reset: &OffsetReset, type_: EventType, reason: &str, note: String) {
    let event = Event { type_, reason: reason.into(), note: Some(note), action: "Reset".into(), secondary: None };
    if let Err(error) = ctx.recorder.publish(&event, &reset.object_ref(&())).await {
        tracing::warn!(%error, "could not publish Event");
    }
}

fn finished(status: &OffsetResetStatus, phase: ResetPhase, message: String) -> OffsetResetStatus {
    OffsetResetStatus {
        phase: Some(phase),
        message: Some(message),
        completed_at: Some(Time(k8s_openapi::jiff::Timestamp::now())),
        ..status.clone()
    }
}

pub async fn reconcile(reset: Arc<OffsetReset>, ctx: Arc<Context>) -> Result<Action, Error> {
    let status = reset.status.clone().unwrap_or_default();
    let phase = status.phase;
    if matches!(phase, Some(ResetPhase::Succeeded | ResetPhase::Failed)) {
        return Ok(Action::await_change());
    }
    if phase == Some(ResetPhase::Planned) && reset.spec.mode == ResetMode::DryRun {
        return Ok(Action::await_change());
    }
    let namespace = reset.namespace().unwrap_or_default();
    let mut status = OffsetResetStatus { observed_generation: reset.metadata.generation, ..status };

    let groups: Api<ConsumerGroup> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(group) = groups.get_opt(&reset.spec.consumer_group).await? else {
        let message = format!("ConsumerGroup {:?} does not exist in this namespace", reset.spec.consumer_group);
        write_status(&ctx, &reset, &finished(&status, ResetPhase::Failed, message)).await?;
        return Ok(Action::await_change());
    };
    let connection = match observe::connection(&ctx.client, &group, &ctx.defaults).await? {
        Ok(connection) => connection,
        Err(problem) => {
            status.message = Some(format!("cannot reach Kafka for ConsumerGroup {}: {problem}", group.name_any()));
            write_if_changed(&ctx, &reset, &status).await?;
            return Ok(Action::requeue(Duration::from_secs(10)));
        }
    };
    let client = match ctx.kafka.get_or_create(&connection.properties) {
        Ok(client) => client,
        Err(error) => {
            let message = format!("Kafka client configuration is invalid: {error}");
            write_status(&ctx, &reset, &finished(&status, ResetPhase::Failed, message)).await?;
            return Ok(Action::await_change());
        }
    };

    match (reset.spec.mode, phase) {
        (ResetMode::DryRun, _) => {
            match plan_now(&ctx, &client, &group, &reset).await {
                Ok(plan) => {
                    status.phase = Some(ResetPhase::Planned);
                    status.message = Some(format!(
                        "dry run: {} partitions planned on the live group; set spec.mode to Execute to apply (the plan is resolved again once the consumers are stopped)",
                        plan.len()
                    ));
                    status.partition_count = Some(plan.len() as i32);
                    status.plan = plan;
                    write_status(&ctx, &reset, &status).await?;
                }
                Err(PlanError::Invalid(message)) => {
                    write_status(&ctx, &reset, &finished(&status, ResetPhase::Failed, message)).await?;
                }
                Err(PlanError::Kafka(error)) => return Err(Error::Kafka(error)),
            }
            Ok(Action::await_change())
        }
        (ResetMode::Execute, None | Some(ResetPhase::Pending | ResetPhase::Planned)) => {
            // A paused group's replicas are frozen: stopping its consumers for the reset would
            // leave them stopped afterwards, so the reset waits for the pause to end.
            if group.spec.paused {
                status.phase = Some(ResetPhase::Pending);
                status.message = Some(format!(
                    "ConsumerGroup {} is paused (spec.paused): a reset stops and restarts its consumers, which a paused group does not allow; set spec.paused to false to run this reset",
                    group.name_any()
                ));
                write_if_changed(&ctx, &reset, &status).await?;
                return Ok(Action::requeue(Duration::from_secs(5)));
            }
            if let Some(other) = other_active_reset(&ctx, &reset) {
                status.phase = Some(ResetPhase::Pending);
                status.message = Some(format!("waiting for OffsetReset {other} of the same ConsumerGroup to finish"));
                write_if_changed(&ctx, &reset, &status).await?;
                return Ok(Action::requeue(Duration::from_secs(2)));
            }
            // Plan once before stopping anything: a reset that cannot be planned (a partition that
            // does not exist, a missing topic, too large a scope) fails without touching the
            // consumers. The plan that is committed is resolved again once they are stopped.
            match plan_now(&ctx, &client, &group, &reset).await {
                Ok(_) => {}
                Err(PlanError::Invalid(message)) => {
                    let message = format!("{message}; nothing was stopped or changed");
                    write_status(&ctx, &reset, &finished(&status, ResetPhase::Failed, message.clone())).await?;
                    event(&ctx, &reset, EventType::Warning, "Failed", message).await;
                    return Ok(Action::await_change());
                }
                Err(PlanError::Kafka(error)) => return Err(Error::Kafka(error)),
            }
            status.phase = Some(ResetPhase::Quiescing);
            status.previous_replicas = group.status.as_ref().and_then(|s| s.replicas);
            status.started_at = Some(Time(k8s_openapi::jiff::Timestamp::now()));
            status.message = Some("scaling the workload to zero and waiting for the group to become Empty".into());
            write_status(&ctx, &reset, &status).await?;
            event(
                &ctx,
                &reset,
                EventType::Normal,
                "Quiescing",
                format!("stopping the consumers of {}", group.name_any()),
            )
            .await;
            Ok(Action::requeue(Duration::from_secs(1)))
        }
        (ResetMode::Execute, Some(ResetPhase::Quiescing)) => quiesce(&ctx, &client, &group, &reset, status).await,
        (ResetMode::Execute, Some(ResetPhase::Committing)) => commit(&ctx, &client, &group, &reset, status).await,
        (ResetMode::Execute, Some(ResetPhase::Succeeded | ResetPhase::Failed)) => Ok(Action::await_change()),
    }
}

async fn write_if_changed(ctx: &Context, reset: &OffsetReset, status: &OffsetResetStatus) -> Result<(), Error> {
    if reset.status.as_ref() != Some(status) {
        write_status(ctx, reset, status).await?;
    }
    Ok(())
}

/// An earlier-created reset of the same ConsumerGroup that has not finished.
fn other_active_reset(ctx: &Context, reset: &OffsetReset) -> Option<String> {
    let rank = |r: &OffsetReset| (r.metadata.creation_timestamp.clone(), r.name_any());
    ctx.resets
        .iter()
        .flat_map(|store| store.state())
        .filter(|r| r.namespace() == reset.namespace() && r.spec.consumer_group == reset.spec.consumer_group)
        .filter(|r| r.metadata.uid != reset.metadata.uid && r.spec.mode == ResetMode::Execute)
        .filter(|r| {
            !matches!(r.status.as_ref().and_then(|s| s.phase), Some(ResetPhase::Succeeded | ResetPhase::Failed))
        })
        .filter(|r| {
            r.status.as_ref().and_then(|s| s.phase).is_some_and(ResetPhase::holds_workload) || rank(r) < rank(reset)
        })
        .map(|r| r.name_any())
        .next()
}

async fn quiesce(
    ctx: &Context,
    client: &KafkaClient,
    group: &ConsumerGroup,
    reset: &OffsetReset,
    mut status: OffsetResetStatus,
) -> Result<Action, Error> {
    let description = client
        .describe_consumer_groups(std::slice::from_ref(&group.spec.group_id), ctx.kafka_timeout)
        .await
        .map_err(Error::Kafka)?
        .into_iter()
        .next();
    let workload_stopped = group.status.as_ref().and_then(|s| s.replicas) == Some(0);
    let members = description.as_ref().map(|d| d.members.clone()).unwrap_or_default();
    let inactive = description.as_ref().is_none_or(|d| d.state.is_inactive());
    if workload_stopped && inactive && members.is_empty() {
        return match plan_now(ctx, client, group, reset).await {
            Ok(plan) => {
                status.phase = Some(ResetPhase::Committing);
                status.message = Some(format!("group is Empty; committing {} planned offsets", plan.len()));
                status.partition_count = Some(plan.len() as i32);
                status.plan = plan;
                write_status(ctx, reset, &status).await?;
                fault_point("plan-stored");
                Ok(Action::requeue(Duration::from_millis(200)))
            }
            Err(PlanError::Invalid(message)) => {
                write_status(ctx, reset, &finished(&status, ResetPhase::Failed, message)).await?;
                event(
                    ctx,
                    reset,
                    EventType::Warning,
                    "Failed",
                    "the plan could not be resolved; nothing changed".into(),
                )
                .await;
                Ok(Action::await_change())
            }
            Err(PlanError::Kafka(error)) => Err(Error::Kafka(error)),
        };
    }
    let started = status.started_at.as_ref().map_or(0, |t| t.0.as_second());
    let waited = k8s_openapi::jiff::Timestamp::now().as_second() - started;
    if waited >= i64::from(reset.spec.quiesce_timeout_seconds) {
        let names: Vec<String> = members.iter().map(|m| format!("{} ({})", m.client_id, m.host)).collect();
        let message = if names.is_empty() {
            format!("the workload did not stop within {}s; no offset changed", reset.spec.quiesce_timeout_seconds)
        } else {
            format!(
                "the group still has members after {}s that the operator does not control: {}; stop them and create a new OffsetReset. No offset changed",
                reset.spec.quiesce_timeout_seconds,
                names.join(", ")
            )
        };
        write_status(ctx, reset, &finished(&status, ResetPhase::Failed, message.clone())).await?;
        event(ctx, reset, EventType::Warning, "Failed", message).await;
        return Ok(Action::await_change());
    }
    Ok(Action::requeue(Duration::from_secs(1)))
}

async fn commit(
    ctx: &Context,
    client: &KafkaClient,
    group: &ConsumerGroup,
    reset: &OffsetReset,
    status: OffsetResetStatus,
) -> Result<Action, Error> {
    let group_id = &group.spec.group_id;
    let to_commit: BTreeMap<TopicPartition, i64> = status
        .plan
        .iter()
        .filter_map(|p| p.new_offset.map(|o| (TopicPartition { topic: p.topic.clone(), partition: p.partition }, o)))
        .collect();
    let to_delete: Vec<TopicPartition> = status
        .plan
        .iter()
        .filter(|p| p.new_offset.is_none())
        .map(|p| TopicPartition { topic: p.topic.clone(), partition: p.partition })
        .collect();
    let applied = async {
        if !to_commit.is_empty() {
            client.alter_consumer_group_offsets(group_id, &to_commit, ctx.kafka_timeout).await?;
        }
        if !to_delete.is_empty() {
            client.delete_consumer_group_offsets(group_id, &to_delete, ctx.kafka_timeout).await?;
        }
        Ok::<(), KafkaError>(())
    }
    .await;
    if let Err(error) = applied {
        if error.is_transient() && !matches!(error, KafkaError::GroupNotEmpty(_)) {
            return Err(Error::Kafka(error));
        }
        let message = format!("committing the plan failed: {error}");
        write_status(ctx, reset, &finished(&status, ResetPhase::Failed, message.clone())).await?;
        event(ctx, reset, EventType::Warning, "Failed", message).await;
        return Ok(Action::await_change());
    }
    fault_point("committed");

    // Verify with a fresh OffsetFetch that Kafka holds exactly the plan.
    let scope: Vec<TopicPartition> = to_commit.keys().chain(to_delete.iter()).cloned().collect();
    let now_committed =
        client.list_consumer_group_offsets(group_id, Some(&scope), ctx.kafka_timeout).await.map_err(Error::Kafka)?;
    let mismatches: Vec<String> = status
        .plan
        .iter()
        .filter_map(|p| {
            let tp = TopicPartition { topic: p.topic.clone(), partition: p.partition };
            let found = now_committed.get(&tp).copied().flatten();
            (found != p.new_offset).then(|| format!("{tp}: expected {:?}, found {found:?}", p.new_offset))
        })
        .collect();
    if !mismatches.is_empty() {
        let message = format!("verification failed: {}", mismatches.join("; "));
        write_status(ctx, reset, &finished(&status, ResetPhase::Failed, message.clone())).await?;
        event(ctx, reset, EventType::Warning, "Failed", message).await;
        return Ok(Action::await_change());
    }
    let message = format!("committed and verified {} partitions; the workload resumes", status.plan.len());
    write_status(ctx, reset, &finished(&status, ResetPhase::Succeeded, message.clone())).await?;
    event(ctx, reset, EventType::Normal, "Succeeded", message).await;
    tracing::info!(reset = %reset.name_any(), group = %group.name_any(), partitions = status.plan.len(), "offset reset succeeded");
    Ok(Action::await_change())
}

enum PlanError {
    /// The reset cannot be planned as written (a fix of the spec or the topics is needed).
    Invalid(String),
    Kafka(KafkaError),
}

impl From<KafkaError> for PlanError {
    fn from(error: KafkaError) -> Self {
        match error {
            KafkaError::UnknownTopics(topics) => {
                PlanError::Invalid(format!("topics do not exist: {}", topics.join(", ")))
            }
            other => PlanError::Kafka(other),
        }
    }
}

/// Resolves the target against what Kafka says now.
async fn plan_now(
    ctx: &Context,
    client: &KafkaClient,
    group: &ConsumerGroup,
    reset: &OffsetReset,
) -> Result<Vec<PlannedOffset>, PlanError> {
    let rollback = match &reset.spec.target.rollback_of {
        Some(name) => {
            let api: Api<OffsetReset> = Api::namespaced(ctx.client.clone(), &reset.namespace().unwrap_or_default());
            let earlier =
                api.get_opt(name).await.map_err(|e| PlanError::Invalid(format!("reading OffsetReset {name}: {e}")))?;
            match earlier.and_then(|r| r.status).filter(|s| s.phase == Some(ResetPhase::Succeeded)) {
                Some(status) => Some(status.plan),
                None => {
                    return Err(PlanError::Invalid(format!(
                        "OffsetReset {name:?} does not exist or has not succeeded"
                    )));
                }
            }
        }
        None => None,
    };
    let now_ms = k8s_openapi::jiff::Timestamp::now().as_millisecond();
    let target = Target::from_spec(&reset.spec.target, now_ms, rollback.as_deref()).map_err(PlanError::Invalid)?;

    let scope_topics: Vec<String> = if reset.spec.topics.is_empty() {
        group.spec.topics.clone()
    } else {
        reset.spec.topics.iter().map(|t| t.name.clone()).collect()
    };
    let counts = client.partition_counts(&scope_topics, ctx.kafka_timeout).await?;
    let mut scope = Vec::new();
    for topic in &scope_topics {
        let count = counts[topic];
        let chosen: Vec<i32> = reset
            .spec
            .topics
            .iter()
            .find(|t| &t.name == topic)
            .map(|t| t.partitions.clone())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| (0..count).collect());
        if let Some(bad) = chosen.iter().find(|p| **p < 0 || **p >= count) {
            return Err(PlanError::Invalid(format!(
                "topic {topic} has {count} partitions; partition {bad} does not exist"
            )));
        }
        scope.extend(chosen.into_iter().map(|partition| TopicPartition { topic: topic.clone(), partition }));
    }

    let timeout = ctx.kafka_timeout;
    let spec = |s: OffsetSpec| scope.iter().map(|tp| (tp.clone(), s)).collect::<Vec<_>>();
    // Read-uncommitted log ends, as kafka-consumer-groups uses.
    let (earliest, latest) = (spec(OffsetSpec::Earliest), spec(OffsetSpec::Latest));
    let (committed, starts, ends) = futures::try_join!(
        client.list_consumer_group_offsets(&group.spec.group_id, Some(&scope), timeout),
        client.list_offsets(&earliest, IsolationLevel::ReadUncommitted, timeout),
        client.list_offsets(&latest, IsolationLevel::ReadUncommitted, timeout),
    )?;
    let at_timestamp = match target.timestamp() {
        Some(ms) => {
            Some(client.list_offsets(&spec(OffsetSpec::Timestamp(ms)), IsolationLevel::ReadUncommitted, timeout).await?)
        }
        None => None,
    };
    let partitions: BTreeMap<TopicPartition, PartitionState> = scope
        .iter()
        .map(|tp| {
            let log_start = starts.get(tp).and_then(|o| o.offset).unwrap_or(0);
            let state = PartitionState {
                committed: committed.get(tp).copied().flatten(),
                log_start,
                log_end: ends.get(tp).and_then(|o| o.offset).unwrap_or(log_start),
                at_timestamp: at_timestamp.as_ref().and_then(|m| m.get(tp)).and_then(|o| o.offset),
            };
            (tp.clone(), state)
        })
        .collect();
    let plan = plan::resolve(&target, &partitions).map_err(PlanError::Invalid)?;
    plan::check_size(reset, &plan).map_err(PlanError::Invalid)?;
    Ok(plan)
}
