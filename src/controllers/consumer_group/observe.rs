//! Observe: reads everything a decision needs (the workload, and the group's part of its
//! connection's observer snapshot). Reads only: no writes, no decisions; each failure is returned
//! as a value so the decision step can turn it into a condition.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::api::Api;
use kube::{Client, ResourceExt};

use crate::crd::{ConsumerGroup, ScaleTargetKind};
use crate::kafka::KafkaError;

/// The workload as it is now.
#[derive(Debug, Clone, PartialEq)]
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
pub async fn workload(client: &Client, group: &ConsumerGroup) -> Result<Option<Workload>, kube::Error> {
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
