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

use super::workload::MANAGER;
use crate::conditions::{self, Transition};
use crate::context::Events;
use crate::crd::{ConsumerGroup, ConsumerGroupStatus, ScaleTargetKind};

/// Applies the owned Deployment. `read_version` is the resourceVersion of the Deployment as read
/// (None: it did not exist, and the apply creates it).
pub async fn apply_deployment(
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
pub fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

/// Sets only `spec.replicas` of a workload the operator does not own, if its scale subresource
/// is still at `read_version`.
pub async fn scale_target(
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
pub async fn status(client: &Client, group: &ConsumerGroup, status: &ConsumerGroupStatus) -> Result<bool, kube::Error> {
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
    api.patch_status(&group.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(body)).await?;
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
