//! Act: the only writes of a reconcile. Server-side apply of the owned Deployment with one field
//! manager, replica patches of a referenced workload's scale subresource, the status patch (only
//! when it changed) and Events (only on transitions).
//!
//! Workload writes carry the resourceVersion the decision was made on: when anyone (a person, an
//! HPA, a deposed leader's last write) changed the workload since it was read, the apiserver
//! answers 409 Conflict and the reconcile decides again from a fresh read instead of overwriting.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use super::Error;
use super::observe::Observation;
use super::plan::Plan;
use super::workload::{self, MANAGER};
use crate::conditions::{self, Desired, Transition};
use crate::context::Events;
use crate::crd::{ConsumerGroup, ConsumerGroupStatus, ScaleTargetKind};

/// What the workload write did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Applied {
    /// The workload's replicas after the write (as read when nothing was written).
    pub replicas: Option<i32>,
    /// Whether this write changed the replica count.
    pub scaled: bool,
    /// Why the apiserver (or the template's own check) refused the workload: replaces the plan's
    /// Ready condition, since only a spec change fixes it.
    pub refused: Option<Desired>,
}

/// The result of [`workload`].
#[derive(Debug)]
pub enum WorkloadWrite {
    Done(Applied),
    /// The workload changed since it was read: nothing was written; decide again.
    Conflict,
}

/// Brings the workload to the plan: applies the owned Deployment (template mode, whenever the
/// replica count is known, so template and hand edits are reconciled even while the replica
/// decision is on hold), or sets a referenced workload's replicas.
pub async fn workload(
    client: &Client,
    group: &ConsumerGroup,
    observation: &Observation,
    plan: &Plan,
) -> Result<WorkloadWrite, Error> {
    let current = observation.workload_replicas.clone().ok().flatten();
    let read_version = observation.workload.as_ref().and_then(|w| w.resource_version.clone());
    let mut applied = Applied { replicas: current, ..Applied::default() };
    let template = group.spec.template.as_ref().map(|template| template.parse());
    match (&template, &observation.settings) {
        (Some(Err(invalid)), Some(_)) => {
            // The Deployment is left as it is (never scaled to zero for a typo) until the spec is fixed.
            applied.refused = Some(Desired::new(
                conditions::READY,
                false,
                conditions::reason::TEMPLATE_INVALID,
                format!("{invalid}; fix spec.template"),
            ));
        }
        (Some(Ok(template)), Some(settings)) => {
            let Some(replicas) = plan.replicas.or(current) else { return Ok(WorkloadWrite::Done(applied)) };
            let deployment = workload::deployment(group, template, &settings.bootstrap_servers, replicas);
            let live = observation.workload.as_ref().and_then(|w| w.deployment.as_ref());
            // Already as wanted: no write, and so no watch event that would reconcile again.
            let written = match live {
                Some(live) if workload::is_applied(&deployment, live) => Ok(()),
                _ => apply_deployment(client, &deployment, read_version).await,
            };
            match written {
                Ok(()) => {
                    applied.replicas = Some(replicas);
                    applied.scaled = current != Some(replicas);
                }
                Err(error) if is_conflict(&error) => return Ok(WorkloadWrite::Conflict),
                // The apiserver refused the Deployment built from spec.template (a field the CRD
                // schema leaves open, e.g. a malformed quantity): only a spec change fixes it.
                // Server-side apply reports an undecodable field as a 500 "failed to convert".
                Err(kube::Error::Api(status))
                    if matches!(status.code, 400 | 422)
                        || (status.code == 500 && status.message.contains("failed to convert")) =>
                {
                    applied.refused = Some(Desired::new(
                        conditions::READY,
                        false,
                        conditions::reason::WORKLOAD_APPLY_FAILED,
                        format!(
                            "the Deployment built from spec.template was refused: {}; fix spec.template",
                            status.message
                        ),
                    ));
                }
                Err(error) => return Err(Error::ApplyDeployment(error)),
            }
        }
        _ => {
            if let (Some(target), Some(replicas), Some(read_version)) =
                (&group.spec.scale_target_ref, plan.replicas, read_version)
                && current != Some(replicas)
            {
                let namespace = group.namespace().unwrap_or_default();
                match scale_target(client, &namespace, target.kind, &target.name, replicas, &read_version).await {
                    Ok(()) => {}
                    Err(error) if is_conflict(&error) => return Ok(WorkloadWrite::Conflict),
                    Err(error) => return Err(Error::ScaleWorkload(error)),
                }
                applied.replicas = Some(replicas);
                applied.scaled = true;
            }
        }
    }
    Ok(WorkloadWrite::Done(applied))
}

/// Applies the owned Deployment. `read_version` is the resourceVersion of the Deployment as read
/// (None: it did not exist, and the apply creates it).
async fn apply_deployment(
    client: &Client,
    deployment: &Deployment,
    read_version: Option<String>,
) -> Result<(), kube::Error> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), &deployment.namespace().unwrap_or_default());
    let mut deployment = deployment.clone();
    if read_version.is_some() {
        crate::fault::pause_point("workload-write", &deployment.name_any()).await;
    }
    deployment.metadata.resource_version = read_version;
    api.patch(&deployment.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(&deployment)).await?;
    Ok(())
}

/// Whether a workload write was refused because the workload changed since it was read.
fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

/// Sets only `spec.replicas` of a workload the operator does not own, if its scale subresource
/// is still at `read_version`.
async fn scale_target(
    client: &Client,
    namespace: &str,
    kind: ScaleTargetKind,
    name: &str,
    replicas: i32,
    read_version: &str,
) -> Result<(), kube::Error> {
    crate::fault::pause_point("workload-write", name).await;
    let patch = Patch::Merge(json!({
        "metadata": { "resourceVersion": read_version },
        "spec": { "replicas": replicas },
    }));
    let params = PatchParams { field_manager: Some(MANAGER.to_string()), ..PatchParams::default() };
    match kind {
        ScaleTargetKind::Deployment => {
            Api::<Deployment>::namespaced(client.clone(), namespace).patch_scale(name, &params, &patch).await?;
        }
        ScaleTargetKind::StatefulSet => {
            Api::<StatefulSet>::namespaced(client.clone(), namespace).patch_scale(name, &params, &patch).await?;
        }
    }
    Ok(())
}

/// Largest status written: etcd refuses objects over 1.5 MiB, and every watcher of
/// ConsumerGroups holds them.
const MAX_STATUS_BYTES: usize = 512 << 10;

/// Applies the status when it differs from what the object carries. Returns whether it wrote.
pub async fn status(client: &Client, group: &ConsumerGroup, status: &ConsumerGroupStatus) -> Result<bool, Error> {
    if group.status.as_ref() == Some(status) {
        return Ok(false);
    }
    let api: Api<ConsumerGroup> = Api::namespaced(client.clone(), &group.namespace().unwrap_or_default());
    let mut body = json!({
        "apiVersion": ConsumerGroup::api_version(&()),
        "kind": ConsumerGroup::kind(&()),
        "status": status,
    });
    // The bounds on what status copies from Kafka keep it far below this; if they ever do not,
    // the member list goes (memberCount stays) rather than the write failing for good.
    let size = body.to_string().len();
    if size > MAX_STATUS_BYTES {
        tracing::warn!(group = %group.name_any(), size, "status too large; leaving the member list out");
        body["status"]["members"] = json!([]);
    }
    api.patch_status(&group.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(body))
        .await
        .map_err(Error::PatchStatus)?;
    Ok(true)
}

/// What happened in this reconcile that deserves an Event.
pub enum Happening {
    Transition(Transition),
    Scaled { from: Option<i32>, to: i32, reason: String },
}

pub async fn publish(events: &Events, group: &ConsumerGroup, happenings: Vec<Happening>) {
    let reference = group.object_ref(&());
    for happening in happenings {
        let event = match happening {
            Happening::Scaled { from, to, reason } => Event {
                type_: EventType::Normal,
                reason: "Scaled".into(),
                note: Some(match from {
                    Some(from) => format!("Scaled workload from {from} to {to} replicas: {reason}"),
                    None => format!("Created workload with {to} replicas: {reason}"),
                }),
                action: "Scale".into(),
                secondary: None,
            },
            Happening::Transition(t) => {
                let healthy = match t.type_.as_str() {
                    conditions::REPLICAS_CAPPED => true,
                    _ => t.status,
                };
                Event {
                    type_: if healthy { EventType::Normal } else { EventType::Warning },
                    reason: t.reason,
                    note: Some(format!(
                        "{} is now {}: {}",
                        t.type_,
                        if t.status { "True" } else { "False" },
                        t.message
                    )),
                    action: "Reconcile".into(),
                    secondary: None,
                }
            }
        };
        if let Err(error) = events.publish(&event, &reference).await {
            tracing::warn!(%error, "could not publish Event");
        }
    }
}
