//! The OffsetReset controller: a state machine recorded in status.
//!
//! What it may do: read OffsetResets, their ConsumerGroup and its connection; read and change the
//! group's committed offsets in Kafka; write OffsetReset status (conditionally, see
//! `write_status`) and Events. It never writes a ConsumerGroup or a workload: the ConsumerGroup
//! controller holds the workload at zero while a reset is in a holding phase.
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
//! Nothing holds a workload at zero for good: Kafka errors once the consumers are stopped count
//! toward quiesceTimeoutSeconds, a permanent refusal fails the reset at once (a partially accepted
//! commit is undone), and members that outlive the workload's pods by a session timeout fail it
//! naming them. Every phase change is a conditional write on a fresh read (optimistic
//! concurrency), so a stale cache or a deposed leader cannot repeat or undo a step.
//!
//! Only one reset per ConsumerGroup runs at a time; the others wait in Pending.

pub mod target;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::context::{Category, Context, MANAGER};
use crate::crd::{ConsumerGroup, MemberStatus, OffsetReset, OffsetResetStatus, PlannedOffset, ResetMode, ResetPhase};
use crate::kafka::{IsolationLevel, KafkaClient, KafkaError, MemberDescription, OffsetSpec, TopicPartition};
use crate::kafka_settings;
use target::{PartitionState, Target};

/// Errors a reset step returns (Kafka failures during execution become status, see
/// `kafka_failed`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the OffsetReset failed: {0}")]
    GetReset(#[source] kube::Error),
    #[error("reading the ConsumerGroup failed: {0}")]
    GetConsumerGroup(#[source] kube::Error),
    #[error("reading the ConsumerGroup's Kafka settings (connection, Secret) failed: {0}")]
    ResolveSettings(#[source] kube::Error),
    #[error("reading the OffsetReset to roll back failed: {0}")]
    GetRolledBack(#[source] kube::Error),
    #[error("listing the workload's pods failed: {0}")]
    ListPods(#[source] kube::Error),
    #[error("writing the OffsetReset's status failed: {0}")]
    PatchStatus(#[source] kube::Error),
    #[error("Kafka request failed: {0}")]
    Kafka(KafkaError),
}

impl Error {
    /// Stable label for metrics: `kube_api` for every apiserver request.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Kafka(error) => error.label(),
            _ => "kube_api",
        }
    }

    /// The step that failed, for log lines.
    pub fn step(&self) -> &'static str {
        match self {
            Error::GetReset(_) => "get_reset",
            Error::GetConsumerGroup(_) => "get_consumer_group",
            Error::ResolveSettings(_) => "resolve_settings",
            Error::GetRolledBack(_) => "get_rolled_back",
            Error::ListPods(_) => "list_pods",
            Error::PatchStatus(_) => "patch_status",
            Error::Kafka(_) => "kafka",
        }
    }

    pub fn category(&self) -> Category {
        match self {
            Error::GetReset(error)
            | Error::GetConsumerGroup(error)
            | Error::ResolveSettings(error)
            | Error::GetRolledBack(error)
            | Error::ListPods(error)
            | Error::PatchStatus(error) => Category::of_kube(error),
            Error::Kafka(error) => Category::of_kafka(error),
        }
    }
}

/// A failed step is tried again from a fresh read: soon for a conflict or a timeout, at the
/// resync for a permission.
pub fn error_policy(reset: Arc<OffsetReset>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.errors.get_or_create(&crate::metrics::ErrorLabels { reason: error.label().to_string() }).inc();
    let category = error.category();
    let attempt = ctx.attempts.failed(&ObjectRef::from(reset.as_ref()).erase());
    let delay = category.retry_after(attempt, ctx.settings.resync);
    tracing::warn!(reset = %reset.name_any(), %error, step = error.step(), ?category, attempt, ?delay, "offset reset step failed; retrying");
    Action::requeue(delay)
}

/// Why a reset of a ConsumerGroup that does not own its groupId fails.
fn not_the_owner(group: &ConsumerGroup, owner: &str) -> String {
    format!(
        "ConsumerGroup {} does not manage groupId {:?}: ConsumerGroup {owner} does (created earlier, same Kafka cluster), and only resets of that ConsumerGroup may change the group's offsets; nothing was stopped or changed",
        group.name_any(),
        group.spec.group_id
    )
}

/// Writes status with optimistic concurrency: the apply carries the resourceVersion the decision
/// was made on, so a stale cache or a deposed leader gets a conflict (and a fresh read on the retry)
/// instead of moving a phase back or re-resolving a relative target after its commit.
async fn write_status(ctx: &Context, reset: &OffsetReset, status: &OffsetResetStatus) -> Result<(), Error> {
    apply_status(&ctx.client, reset, status).await.map_err(Error::PatchStatus)?;
    Ok(())
}

/// The status write of [`write_status`]: refused with 409 Conflict unless `reset` (the object the
/// new status was decided on) is still the stored version.
pub async fn apply_status(
    client: &kube::Client,
    reset: &OffsetReset,
    status: &OffsetResetStatus,
) -> Result<OffsetReset, kube::Error> {
    let api: Api<OffsetReset> = Api::namespaced(client.clone(), &reset.namespace().unwrap_or_default());
    // Messages quote what Kafka answered, which a broker chooses.
    let mut status = status.clone();
    status.message = status.message.map(|m| crate::crd::bounded_text(&m, crate::crd::MAX_MESSAGE_BYTES));
    let body = json!({
        "apiVersion": OffsetReset::api_version(&()),
        "kind": OffsetReset::kind(&()),
        "metadata": { "resourceVersion": reset.resource_version() },
        "status": status,
    });
    api.patch_status(&reset.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(body)).await
}

async fn event(ctx: &Context, reset: &OffsetReset, type_: EventType, reason: &str, note: String) {
    let event = Event { type_, reason: reason.into(), note: Some(note), action: "Reset".into(), secondary: None };
    if let Err(error) = ctx.events.publish(&event, &reset.object_ref(&())).await {
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

/// Fails the reset (the workload resumes, since Failed holds nothing) with a Warning Event.
async fn fail(
    ctx: &Context,
    reset: &OffsetReset,
    status: &OffsetResetStatus,
    message: String,
) -> Result<Action, Error> {
    write_status(ctx, reset, &finished(status, ResetPhase::Failed, message.clone())).await?;
    event(ctx, reset, EventType::Warning, "Failed", message).await;
    Ok(Action::await_change())
}

pub async fn reconcile(cached: Arc<OffsetReset>, ctx: Arc<Context>) -> Result<Action, Error> {
    if crate::reset_hold::settled(&cached) {
        return Ok(Action::await_change());
    }
    // Phases are decided on a fresh read, never on a possibly stale cache; each write is then
    // conditional on this read's resourceVersion (see `write_status`).
    let api: Api<OffsetReset> = Api::namespaced(ctx.client.clone(), &cached.namespace().unwrap_or_default());
    let Some(reset) = api.get_opt(&cached.name_any()).await.map_err(Error::GetReset)? else {
        return Ok(Action::await_change());
    };
    if crate::reset_hold::settled(&reset) {
        return Ok(Action::await_change());
    }
    let status = OffsetResetStatus {
        observed_generation: reset.metadata.generation,
        ..reset.status.clone().unwrap_or_default()
    };
    let (group, client) = match connect(&ctx, &reset, &status).await? {
        Connected::Ready(group, client) => (*group, client),
        Connected::Stop(action) => return Ok(action),
    };
    let before = status.clone();
    let result = match (reset.spec.mode, status.phase) {
        (ResetMode::DryRun, _) => dry_run(&ctx, &client, &group, &reset, status).await,
        (ResetMode::Execute, None | Some(ResetPhase::Pending | ResetPhase::Planned)) => {
            start(&ctx, &client, &group, &reset, status).await
        }
        (ResetMode::Execute, Some(ResetPhase::Quiescing)) => quiesce(&ctx, &client, &group, &reset, status).await,
        (ResetMode::Execute, Some(ResetPhase::Committing)) => commit(&ctx, &client, &group, &reset, status).await,
        (ResetMode::Execute, Some(ResetPhase::Succeeded | ResetPhase::Failed)) => Ok(Action::await_change()),
    };
    match result {
        Err(Error::Kafka(error)) => kafka_failed(&ctx, &reset, before, error).await,
        other => other,
    }
}

/// What a reset step runs on, or why it does not run this time.
enum Connected {
    Ready(Box<ConsumerGroup>, Arc<KafkaClient>),
    /// The reset was failed or waits (its status says why).
    Stop(Action),
}

/// Reads the reset's ConsumerGroup, checks that it owns its groupId and connects to its cluster.
async fn connect(ctx: &Context, reset: &OffsetReset, status: &OffsetResetStatus) -> Result<Connected, Error> {
    let groups: Api<ConsumerGroup> = Api::namespaced(ctx.client.clone(), &reset.namespace().unwrap_or_default());
    let Some(group) = groups.get_opt(&reset.spec.consumer_group).await.map_err(Error::GetConsumerGroup)? else {
        let message = format!("ConsumerGroup {:?} does not exist in this namespace", reset.spec.consumer_group);
        write_status(ctx, reset, &finished(status, ResetPhase::Failed, message)).await?;
        return Ok(Connected::Stop(Action::await_change()));
    };
    // Offsets change only for the ConsumerGroup that owns the groupId, in any namespace; checked
    // before any Kafka request (a DryRun would show the owner's members), and once: a reset that
    // started stopping consumers was its owner's.
    let starting = !status.phase.is_some_and(ResetPhase::holds_workload);
    if starting && let Some(owner) = crate::ownership::conflicting_owner(ctx, &group) {
        return fail(ctx, reset, status, not_the_owner(&group, &owner)).await.map(Connected::Stop);
    }
    let stop = |error| async move { kafka_failed(ctx, reset, status.clone(), error).await.map(Connected::Stop) };
    let settings = match kafka_settings::resolve(&ctx.client, &group, &ctx.settings.defaults)
        .await
        .map_err(Error::ResolveSettings)?
    {
        Ok(settings) => settings,
        Err(problem) => {
            return stop(KafkaError::Config(format!("ConsumerGroup {}: {problem}", group.name_any()))).await;
        }
    };
    let client = match ctx.kafka.client(&settings.properties).await {
        Ok(client) => client,
        Err(error) => return stop(error).await,
    };
    if starting {
        // Asked again with the cluster named by its id: another spelling of the bootstrap servers
        // may be an older ConsumerGroup's cluster.
        match client.fetch_cluster_id(ctx.settings.kafka_timeout).await {
            Ok(id) => ctx.kafka.learn_cluster_id(&settings.cluster_key(), id),
            Err(error) => return stop(error).await,
        }
        if let Some(owner) = crate::ownership::conflicting_owner(ctx, &group) {
            return fail(ctx, reset, status, not_the_owner(&group, &owner)).await.map(Connected::Stop);
        }
    }
    Ok(Connected::Ready(Box::new(group), client))
}

/// DryRun: the plan on the live group, stored in status (phase Planned); nothing is stopped.
async fn dry_run(
    ctx: &Context,
    client: &KafkaClient,
    group: &ConsumerGroup,
    reset: &OffsetReset,
    mut status: OffsetResetStatus,
) -> Result<Action, Error> {
    let planned = match plan_now(ctx, client, group, reset).await? {
        Ok(planned) => planned,
        Err(message) => {
            write_status(ctx, reset, &finished(&status, ResetPhase::Failed, message)).await?;
            return Ok(Action::await_change());
        }
    };
    status.phase = Some(ResetPhase::Planned);
    status.message = Some(format!(
        "dry run: {} partitions planned on the live group, which has {}; set spec.mode to Execute to apply (its consumers are stopped first and the plan is resolved again on the stopped group)",
        planned.offsets.len(),
        describe_members(&planned.members)
    ));
    status.partition_count = Some(planned.offsets.len() as i32);
    status.plan = planned.offsets;
    status.failing_since = None;
    record_members(&mut status, &planned.members);
    write_status(ctx, reset, &status).await?;
    Ok(Action::await_change())
}

/// A Kafka failure during a reset, written to status (see [`on_kafka_failure`]).
async fn kafka_failed(
    ctx: &Context,
    reset: &OffsetReset,
    status: OffsetResetStatus,
    error: KafkaError,
) -> Result<Action, Error> {
    let now = k8s_openapi::jiff::Timestamp::now();
    match on_kafka_failure(status, &error, i64::from(reset.spec.quiesce_timeout_seconds), now) {
        KafkaFailure::Retry { status, after } => {
            tracing::warn!(reset = %reset.name_any(), %error, step = ?status.phase, "Kafka error during an offset reset; retrying");
            write_if_changed(ctx, reset, &status).await?;
            Ok(Action::requeue(after))
        }
        KafkaFailure::Fail { status, message } => fail(ctx, reset, &status, message).await,
    }
}

/// What a Kafka failure does to a reset.
#[derive(Debug)]
enum KafkaFailure {
    /// Try again after `after`, with this status.
    Retry { status: OffsetResetStatus, after: Duration },
    /// Fail the reset with this message (the workload resumes).
    Fail { status: OffsetResetStatus, message: String },
}

/// The rule for Kafka failures, pure. Before the consumers are stopped, the reset waits and says
/// why (a Secret or a permission can be fixed). Once they are stopped, errors count toward
/// quiesceTimeoutSeconds and a permanent one fails the reset at once: the workload never stays at
/// zero for good.
fn on_kafka_failure(
    mut status: OffsetResetStatus,
    error: &KafkaError,
    quiesce_timeout_seconds: i64,
    now: k8s_openapi::jiff::Timestamp,
) -> KafkaFailure {
    if !status.phase.is_some_and(ResetPhase::holds_workload) {
        status.phase = Some(status.phase.unwrap_or(ResetPhase::Pending));
        status.message = Some(format!("waiting: {error}; nothing was stopped or changed; retrying every 10s"));
        return KafkaFailure::Retry { status, after: Duration::from_secs(10) };
    }
    let since = status.failing_since.get_or_insert(Time(now)).0;
    let failing_for = now.as_second() - since.as_second();
    let outcome = if status.phase == Some(ResetPhase::Committing) {
        "whether Kafka applied the stored plan is unknown: compare the group's committed offsets with status.plan before running another reset"
    } else {
        "no offset changed"
    };
    if !error.is_transient() {
        let message = format!("{error}; the workload resumes; {outcome}");
        return KafkaFailure::Fail { status, message };
    }
    if failing_for >= quiesce_timeout_seconds {
        let message = format!(
            "Kafka kept failing for {failing_for}s (quiesceTimeoutSeconds: {quiesce_timeout_seconds}): {error}; the workload resumes; {outcome}"
        );
        return KafkaFailure::Fail { status, message };
    }
    status.message = Some(format!(
        "Kafka is failing: {error}; retrying until {quiesce_timeout_seconds}s (quiesceTimeoutSeconds) after the first failure, then the reset fails and the workload resumes"
    ));
    KafkaFailure::Retry { status, after: Duration::from_secs(2) }
}

/// Execute from Pending/Planned: checks that the reset may start, plans it once on the live group
/// (so one that cannot be planned fails before anything stops), then enters Quiescing.
async fn start(
    ctx: &Context,
    client: &KafkaClient,
    group: &ConsumerGroup,
    reset: &OffsetReset,
    mut status: OffsetResetStatus,
) -> Result<Action, Error> {
    // A paused group's replicas are frozen: stopping its consumers for the reset would
    // leave them stopped afterwards, so the reset waits for the pause to end.
    if group.spec.paused {
        status.phase = Some(ResetPhase::Pending);
        status.message = Some(format!(
            "ConsumerGroup {} is paused (spec.paused): a reset stops and restarts its consumers, which a paused group does not allow; set spec.paused to false to run this reset",
            group.name_any()
        ));
        write_if_changed(ctx, reset, &status).await?;
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    if let Some(other) = other_active_reset(ctx, reset) {
        status.phase = Some(ResetPhase::Pending);
        status.message = Some(format!("waiting for OffsetReset {other} of the same ConsumerGroup to finish"));
        write_if_changed(ctx, reset, &status).await?;
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    match plan_now(ctx, client, group, reset).await? {
        Ok(planned) => record_members(&mut status, &planned.members),
        Err(message) => {
            return fail(ctx, reset, &status, format!("{message}; nothing was stopped or changed")).await;
        }
    }
    status.phase = Some(ResetPhase::Quiescing);
    status.previous_replicas = group.status.as_ref().and_then(|s| s.replicas);
    status.started_at = Some(Time(k8s_openapi::jiff::Timestamp::now()));
    status.failing_since = None;
    status.message = Some("scaling the workload to zero and waiting for the group to become Empty".into());
    write_status(ctx, reset, &status).await?;
    event(ctx, reset, EventType::Normal, "Quiescing", format!("stopping the consumers of {}", group.name_any())).await;
    Ok(Action::requeue(Duration::from_secs(1)))
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
    ctx.caches
        .resets
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

/// Members listed in an OffsetReset's status.
const MAX_MEMBERS_IN_STATUS: usize = 50;

fn record_members(status: &mut OffsetResetStatus, members: &[MemberDescription]) {
    status.member_count = Some(members.len() as i32);
    let mut listed: Vec<MemberStatus> =
        members.iter().map(|m| MemberStatus::bounded(&m.client_id, &m.host, &[], &mut 0)).collect();
    listed.sort_by(|a, b| (&a.client_id, &a.host).cmp(&(&b.client_id, &b.host)));
    listed.truncate(MAX_MEMBERS_IN_STATUS);
    status.members = listed;
}

/// "no members" / "2 members: a (/10.0.0.1), b (/10.0.0.2)", the first few named.
fn describe_members(members: &[MemberDescription]) -> String {
    const NAMED: usize = 5;
    if members.is_empty() {
        return "no members".into();
    }
    let mut names: Vec<String> = members.iter().map(|m| format!("{} ({})", m.client_id, m.host)).collect();
    names.sort();
    let more = names.len().saturating_sub(NAMED);
    names.truncate(NAMED);
    let mut text = format!("{} member(s): {}", members.len(), names.join(", "));
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    text
}

/// Pods of the ConsumerGroup's workload that still exist (running or terminating), by the
/// selector in its status; None when no selector is known.
async fn workload_pods(ctx: &Context, group: &ConsumerGroup) -> Result<Option<usize>, Error> {
    let Some(selector) = group.status.as_ref().and_then(|s| s.selector.clone()) else { return Ok(None) };
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &group.namespace().unwrap_or_default());
    let list = pods.list_metadata(&ListParams::default().labels(&selector)).await.map_err(Error::ListPods)?;
    Ok(Some(list.items.len()))
}

async fn quiesce(
    ctx: &Context,
    client: &KafkaClient,
    group: &ConsumerGroup,
    reset: &OffsetReset,
    mut status: OffsetResetStatus,
) -> Result<Action, Error> {
    let description = client
        .describe_consumer_groups(std::slice::from_ref(&group.spec.group_id), ctx.settings.kafka_timeout)
        .await
        .map_err(Error::Kafka)?
        .into_iter()
        .next();
    status.failing_since = None;
    let workload_stopped = group.status.as_ref().and_then(|s| s.replicas) == Some(0);
    let members = description.as_ref().map(|d| d.members.clone()).unwrap_or_default();
    let inactive = description.as_ref().is_none_or(|d| d.state.is_inactive());
    if workload_stopped && inactive && members.is_empty() {
        return match plan_now(ctx, client, group, reset).await? {
            Ok(planned) => {
                status.phase = Some(ResetPhase::Committing);
                status.message = Some(format!("group is Empty; committing {} planned offsets", planned.offsets.len()));
                status.partition_count = Some(planned.offsets.len() as i32);
                status.plan = planned.offsets;
                status.workload_gone_at = None;
                write_status(ctx, reset, &status).await?;
                crate::fault::exit_point("plan-stored");
                Ok(Action::requeue(Duration::from_millis(200)))
            }
            Err(message) => {
                fail(ctx, reset, &status, format!("the plan could not be resolved: {message}; no offset changed")).await
            }
        };
    }
    // Members that outlive the workload's pods are consumers it does not run: its pods are
    // listed only then.
    let no_pods = workload_stopped && !members.is_empty() && workload_pods(ctx, group).await? == Some(0);
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let view = QuiesceView {
        members: &members,
        no_pods,
        now,
        started_at: status.started_at.as_ref().map_or(0, |t| t.0.as_second()),
        pods_gone_since: status.workload_gone_at.as_ref().map(|t| t.0.as_second()),
        session_timeout_seconds: i64::from(reset.spec.session_timeout_seconds),
        quiesce_timeout_seconds: i64::from(reset.spec.quiesce_timeout_seconds),
    };
    let (step, pods_gone_since) = quiesce_step(&view);
    status.workload_gone_at = pods_gone_since.and_then(|s| k8s_openapi::jiff::Timestamp::from_second(s).ok()).map(Time);
    match step {
        QuiesceStep::Fail(message) => return fail(ctx, reset, &status, message).await,
        QuiesceStep::Wait(Some(message)) => status.message = Some(message),
        QuiesceStep::Wait(None) => {}
    }
    write_if_changed(ctx, reset, &status).await?;
    Ok(Action::requeue(Duration::from_secs(1)))
}

/// What quiescing saw this time, once the group is not yet empty and stopped.
struct QuiesceView<'a> {
    members: &'a [MemberDescription],
    /// The workload is stopped and has no pods, yet the group has members.
    no_pods: bool,
    now: i64,
    started_at: i64,
    /// Since when the workload has had no pods while members stayed (seconds), as recorded.
    pods_gone_since: Option<i64>,
    session_timeout_seconds: i64,
    quiesce_timeout_seconds: i64,
}

#[derive(Debug, PartialEq)]
enum QuiesceStep {
    /// Keep waiting, with a new status message (None keeps the last one).
    Wait(Option<String>),
    /// Give up: the workload resumes, no offset changed.
    Fail(String),
}

/// The quiescing rule, pure: members that outlive the workload's pods by a session timeout are
/// consumers the operator does not run (waiting longer cannot empty the group), and nothing waits
/// past quiesceTimeoutSeconds. Returns the step and the no-pods-since time to record.
fn quiesce_step(view: &QuiesceView) -> (QuiesceStep, Option<i64>) {
    let names = describe_members(view.members);
    let mut message = None;
    let pods_gone_since = view.no_pods.then(|| view.pods_gone_since.unwrap_or(view.now));
    if let Some(since) = pods_gone_since {
        let gone_for = view.now - since;
        if gone_for >= view.session_timeout_seconds {
            let message = format!(
                "the workload has no pods, yet after {gone_for}s (sessionTimeoutSeconds: {}) the group still has {names}: consumers outside the workload. Stop them and create a new OffsetReset. The workload resumes; no offset changed",
                view.session_timeout_seconds
            );
            return (QuiesceStep::Fail(message), pods_gone_since);
        }
        message = Some(format!(
            "the workload has no pods; waiting up to sessionTimeoutSeconds ({}s) for the group's {names} to leave",
            view.session_timeout_seconds
        ));
    }
    if view.now - view.started_at >= view.quiesce_timeout_seconds {
        let message = if view.members.is_empty() {
            format!(
                "the workload did not stop within {}s. The workload resumes; no offset changed",
                view.quiesce_timeout_seconds
            )
        } else {
            format!(
                "the group still has {names} after {}s that the operator does not control; stop them and create a new OffsetReset. The workload resumes; no offset changed",
                view.quiesce_timeout_seconds
            )
        };
        return (QuiesceStep::Fail(message), pods_gone_since);
    }
    (QuiesceStep::Wait(message), pods_gone_since)
}

async fn commit(
    ctx: &Context,
    client: &KafkaClient,
    group: &ConsumerGroup,
    reset: &OffsetReset,
    status: OffsetResetStatus,
) -> Result<Action, Error> {
    let group_id = &group.spec.group_id;
    let (to_commit, to_delete) = split_plan(&status.plan);
    match set_offsets(client, group_id, &to_commit, &to_delete, ctx.settings.kafka_timeout).await {
        Ok(()) => {}
        Err(KafkaError::PartitionsRefused(refused)) => {
            let message = undo_partial_commit(ctx, client, group_id, &status, &refused).await;
            return fail(ctx, reset, &status, message).await;
        }
        Err(KafkaError::GroupNotEmpty(_)) => {
            let message = "committing the plan failed: a consumer joined the group while it was being reset; the workload resumes; no offset changed".to_string();
            return fail(ctx, reset, &status, message).await;
        }
        Err(error) => return Err(Error::Kafka(error)),
    }
    crate::fault::exit_point("committed");

    // Verify with a fresh OffsetFetch that Kafka holds exactly the plan.
    let scope: Vec<TopicPartition> = to_commit.keys().chain(to_delete.iter()).cloned().collect();
    let now_committed = client
        .list_consumer_group_offsets(group_id, Some(&scope), ctx.settings.kafka_timeout)
        .await
        .map_err(Error::Kafka)?;
    let mismatches = mismatches(&status.plan, &now_committed);
    if !mismatches.is_empty() {
        return fail(ctx, reset, &status, format!("verification failed: {}", mismatches.join("; "))).await;
    }
    let message = format!("committed and verified {} partitions; the workload resumes", status.plan.len());
    write_status(ctx, reset, &finished(&status, ResetPhase::Succeeded, message.clone())).await?;
    event(ctx, reset, EventType::Normal, "Succeeded", message).await;
    tracing::info!(reset = %reset.name_any(), group = %group.name_any(), partitions = status.plan.len(), "offset reset succeeded");
    Ok(Action::await_change())
}

fn partition_of(planned: &PlannedOffset) -> TopicPartition {
    TopicPartition { topic: planned.topic.clone(), partition: planned.partition }
}

/// The plan as Kafka requests take it: offsets to commit, and partitions whose committed offset
/// is deleted.
fn split_plan(plan: &[PlannedOffset]) -> (BTreeMap<TopicPartition, i64>, Vec<TopicPartition>) {
    let to_commit = plan.iter().filter_map(|p| p.new_offset.map(|o| (partition_of(p), o))).collect();
    let to_delete = plan.iter().filter(|p| p.new_offset.is_none()).map(partition_of).collect();
    (to_commit, to_delete)
}

/// Partitions where Kafka does not hold what the plan says, each as "topic-p: expected, found".
fn mismatches(plan: &[PlannedOffset], committed: &BTreeMap<TopicPartition, Option<i64>>) -> Vec<String> {
    plan.iter()
        .filter_map(|p| {
            let tp = partition_of(p);
            let found = committed.get(&tp).copied().flatten();
            (found != p.new_offset).then(|| format!("{tp}: expected {:?}, found {found:?}", p.new_offset))
        })
        .collect()
}

/// Commits `commit` and deletes the committed offsets of `delete` (each skipped when empty).
async fn set_offsets(
    client: &KafkaClient,
    group_id: &str,
    commit: &BTreeMap<TopicPartition, i64>,
    delete: &[TopicPartition],
    timeout: Duration,
) -> Result<(), KafkaError> {
    if !commit.is_empty() {
        client.alter_consumer_group_offsets(group_id, commit, timeout).await?;
    }
    if !delete.is_empty() {
        client.delete_consumer_group_offsets(group_id, delete, timeout).await?;
    }
    Ok(())
}

/// Kafka commits the partitions it accepts and refuses the others (a missing permission, a topic
/// deleted since the plan): the accepted ones are put back to their offsets from before the reset,
/// so a refused reset changes nothing. Returns the failure message.
async fn undo_partial_commit(
    ctx: &Context,
    client: &KafkaClient,
    group_id: &str,
    status: &OffsetResetStatus,
    refused: &[(TopicPartition, String)],
) -> String {
    let undo = undo_plan(&status.plan, refused);
    let refusal = KafkaError::PartitionsRefused(refused.to_vec());
    let (restore, forget) = split_plan(&undo);
    match set_offsets(client, group_id, &restore, &forget, ctx.settings.kafka_timeout).await {
        Ok(()) => format!(
            "{refusal}; the {} other partition(s) were put back to their offsets from before the reset; the workload resumes; no offset changed. Fix the permission or the scope (spec.topics) and create a new OffsetReset",
            undo.len()
        ),
        Err(error) => format!(
            "{refusal}; putting the {} other partition(s) back failed ({error}): they now hold the plan's offsets (status.plan lists the previous ones); the workload resumes",
            undo.len()
        ),
    }
}

/// What puts the partitions Kafka accepted back to their offsets from before the reset (the
/// refused ones never changed).
fn undo_plan(plan: &[PlannedOffset], refused: &[(TopicPartition, String)]) -> Vec<PlannedOffset> {
    let refused: std::collections::BTreeSet<&TopicPartition> = refused.iter().map(|(tp, _)| tp).collect();
    plan.iter()
        .filter(|p| p.new_offset.is_some() && !refused.contains(&partition_of(p)))
        .map(|p| PlannedOffset { new_offset: p.current_offset, delta: None, ..p.clone() })
        .collect()
}

enum PlanError {
    /// The reset cannot be planned as written (a fix of the spec or the topics is needed).
    Invalid(String),
    Kafka(KafkaError),
    /// Reading from the apiserver failed: retried like any other apiserver error, never a
    /// reason to fail the reset.
    Kube(kube::Error),
}

impl From<KafkaError> for PlanError {
    fn from(error: KafkaError) -> Self {
        match error {
            KafkaError::UnknownTopics(topics) => {
                PlanError::Invalid(format!("topics do not exist: {}", topics.join(", ")))
            }
            refused @ KafkaError::TopicsNotAuthorized(_) => PlanError::Invalid(refused.to_string()),
            other => PlanError::Kafka(other),
        }
    }
}

/// A plan resolved on the live group, and the group's members at that moment.
struct Planned {
    offsets: Vec<PlannedOffset>,
    members: Vec<MemberDescription>,
}

/// Resolves the target against what Kafka says now: the plan, or why the reset cannot be planned
/// as written (Ok(Err)); a request that failed is the step's error, tried again.
async fn plan_now(
    ctx: &Context,
    client: &KafkaClient,
    group: &ConsumerGroup,
    reset: &OffsetReset,
) -> Result<Result<Planned, String>, Error> {
    match resolve_plan(ctx, client, group, reset).await {
        Ok(planned) => Ok(Ok(planned)),
        Err(PlanError::Invalid(message)) => Ok(Err(message)),
        Err(PlanError::Kafka(error)) => Err(Error::Kafka(error)),
        Err(PlanError::Kube(error)) => Err(Error::GetRolledBack(error)),
    }
}

async fn resolve_plan(
    ctx: &Context,
    client: &KafkaClient,
    group: &ConsumerGroup,
    reset: &OffsetReset,
) -> Result<Planned, PlanError> {
    let rollback = match &reset.spec.target.rollback_of {
        Some(name) => {
            let api: Api<OffsetReset> = Api::namespaced(ctx.client.clone(), &reset.namespace().unwrap_or_default());
            let earlier = api.get_opt(name).await.map_err(PlanError::Kube)?;
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
    let counts = client.partition_counts(&scope_topics, ctx.settings.kafka_timeout).await?;
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

    let timeout = ctx.settings.kafka_timeout;
    let spec = |s: OffsetSpec| scope.iter().map(|tp| (tp.clone(), s)).collect::<Vec<_>>();
    // Read-uncommitted log ends, as kafka-consumer-groups uses.
    let (earliest, latest) = (spec(OffsetSpec::Earliest), spec(OffsetSpec::Latest));
    let (description, committed, starts, ends) = futures::try_join!(
        client.describe_consumer_groups(std::slice::from_ref(&group.spec.group_id), timeout),
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
    let plan = target::resolve(&target, &partitions).map_err(PlanError::Invalid)?;
    target::check_size(reset, &plan).map_err(PlanError::Invalid)?;
    let members = description.into_iter().next().map(|d| d.members).unwrap_or_default();
    Ok(Planned { offsets: plan, members })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member() -> MemberDescription {
        MemberDescription {
            member_id: "m-1".into(),
            client_id: "outside".into(),
            host: "/10.0.0.9".into(),
            assignment: vec![],
        }
    }

    fn view(members: &[MemberDescription], no_pods: bool, now: i64, pods_gone_since: Option<i64>) -> QuiesceView<'_> {
        QuiesceView {
            members,
            no_pods,
            now,
            started_at: 1_000,
            pods_gone_since,
            session_timeout_seconds: 45,
            quiesce_timeout_seconds: 300,
        }
    }

    #[test]
    fn quiescing_waits_while_the_workload_stops_and_gives_up_at_the_quiesce_timeout() {
        assert_eq!(quiesce_step(&view(&[], false, 1_010, None)), (QuiesceStep::Wait(None), None));
        let (step, gone) = quiesce_step(&view(&[], false, 1_300, None));
        assert!(matches!(&step, QuiesceStep::Fail(m) if m.contains("did not stop within 300s")), "{step:?}");
        assert_eq!(gone, None);
        let members = [member()];
        let (step, _) = quiesce_step(&view(&members, false, 1_300, None));
        assert!(matches!(&step, QuiesceStep::Fail(m) if m.contains("outside") && m.contains("300s")), "{step:?}");
    }

    #[test]
    fn members_that_outlive_the_pods_by_a_session_timeout_fail_the_reset_naming_them() {
        let members = [member()];
        let (step, gone) = quiesce_step(&view(&members, true, 1_010, None));
        assert!(matches!(&step, QuiesceStep::Wait(Some(m)) if m.contains("no pods")), "{step:?}");
        assert_eq!(gone, Some(1_010), "the first time without pods is recorded");
        let (step, gone) = quiesce_step(&view(&members, true, 1_054, Some(1_010)));
        assert!(matches!(step, QuiesceStep::Wait(Some(_))), "44 s is within the 45 s session timeout");
        assert_eq!(gone, Some(1_010), "and kept");
        let (step, _) = quiesce_step(&view(&members, true, 1_055, Some(1_010)));
        assert!(
            matches!(&step, QuiesceStep::Fail(m) if m.contains("consumers outside the workload") && m.contains("outside")),
            "{step:?}"
        );
        assert_eq!(quiesce_step(&view(&members, false, 1_055, Some(1_010))).1, None, "pods came back");
    }

    fn at(second: i64) -> k8s_openapi::jiff::Timestamp {
        k8s_openapi::jiff::Timestamp::from_second(second).unwrap()
    }

    fn in_phase(phase: Option<ResetPhase>) -> OffsetResetStatus {
        OffsetResetStatus { phase, ..OffsetResetStatus::default() }
    }

    #[test]
    fn a_kafka_failure_before_anything_stopped_waits_in_pending_whatever_the_error() {
        let auth = KafkaError::Auth("SASL failed".into());
        for phase in [None, Some(ResetPhase::Pending), Some(ResetPhase::Planned)] {
            let KafkaFailure::Retry { status, after } = on_kafka_failure(in_phase(phase), &auth, 300, at(1_000)) else {
                panic!("{phase:?}: a permanent error before quiescing must not fail the reset");
            };
            assert_eq!(status.phase, Some(phase.unwrap_or(ResetPhase::Pending)));
            assert!(status.message.as_deref().unwrap().contains("nothing was stopped"), "{status:?}");
            assert_eq!((status.failing_since, after), (None, Duration::from_secs(10)));
        }
    }

    #[test]
    fn once_the_consumers_are_stopped_kafka_failures_end_the_reset_within_the_quiesce_timeout() {
        let timeout = KafkaError::Timeout("OffsetFetch");
        let KafkaFailure::Retry { status, after } =
            on_kafka_failure(in_phase(Some(ResetPhase::Quiescing)), &timeout, 300, at(1_000))
        else {
            panic!("a transient error is retried");
        };
        assert_eq!(
            (status.failing_since.as_ref().map(|t| t.0.as_second()), after),
            (Some(1_000), Duration::from_secs(2))
        );
        assert!(matches!(
            on_kafka_failure(status.clone(), &timeout, 300, at(1_299)),
            KafkaFailure::Retry { status: ref kept, .. } if kept.failing_since == status.failing_since
        ));
        let KafkaFailure::Fail { message, .. } = on_kafka_failure(status, &timeout, 300, at(1_300)) else {
            panic!("300 s of failures end the reset");
        };
        assert!(message.contains("kept failing for 300s") && message.contains("no offset changed"), "{message}");

        let refused = KafkaError::Auth("not allowed".into());
        let KafkaFailure::Fail { message, .. } =
            on_kafka_failure(in_phase(Some(ResetPhase::Committing)), &refused, 300, at(1_000))
        else {
            panic!("a permanent error fails a holding reset at once");
        };
        assert!(message.contains("compare the group's committed offsets with status.plan"), "{message}");
    }

    fn planned(partition: i32, current: Option<i64>, new: Option<i64>) -> PlannedOffset {
        PlannedOffset { topic: "t".into(), partition, current_offset: current, new_offset: new, delta: None }
    }

    fn tp(partition: i32) -> TopicPartition {
        TopicPartition { topic: "t".into(), partition }
    }

    #[test]
    fn a_plan_splits_into_commits_and_deletions_and_is_verified_partition_by_partition() {
        let plan = [planned(0, Some(5), Some(1)), planned(1, Some(7), None), planned(2, None, Some(0))];
        let (commit, delete) = split_plan(&plan);
        assert_eq!(commit, BTreeMap::from([(tp(0), 1), (tp(2), 0)]));
        assert_eq!(delete, vec![tp(1)]);
        let held = BTreeMap::from([(tp(0), Some(1)), (tp(1), None), (tp(2), Some(0))]);
        assert!(mismatches(&plan, &held).is_empty());
        let moved = BTreeMap::from([(tp(0), Some(2)), (tp(2), Some(0))]);
        assert_eq!(mismatches(&plan, &moved), vec!["t/0: expected Some(1), found Some(2)".to_string()]);
    }

    #[test]
    fn undoing_a_partial_commit_puts_back_only_what_kafka_accepted() {
        let plan = [
            planned(0, Some(5), Some(1)),
            planned(1, None, Some(3)),
            planned(2, Some(9), Some(0)),
            planned(3, Some(4), None),
        ];
        let undo = undo_plan(&plan, &[(tp(2), "TOPIC_AUTHORIZATION_FAILED".into())]);
        let (restore, forget) = split_plan(&undo);
        assert_eq!(restore, BTreeMap::from([(tp(0), 5)]), "partition 2 was refused, so it never changed");
        assert_eq!(forget, vec![tp(1)], "a partition with no offset before the reset gets none again");
    }
}
