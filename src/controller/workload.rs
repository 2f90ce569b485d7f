//! Builds the Deployment the operator owns for a ConsumerGroup with `spec.template`. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{EnvVar, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::{Resource, ResourceExt};

use crate::crd::ConsumerGroup;

/// Label on every owned Deployment and its pods: the ConsumerGroup's name (the pod selector).
pub const GROUP_LABEL: &str = "kafka.operators.dev/consumer-group";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGER: &str = "consumer-group-operator";

/// Environment variables injected into every container, so the ConsumerGroup stays the single
/// source of truth for where and what the consumers read.
pub const ENV_BOOTSTRAP_SERVERS: &str = "KAFKA_BOOTSTRAP_SERVERS";
pub const ENV_GROUP_ID: &str = "KAFKA_GROUP_ID";
pub const ENV_TOPICS: &str = "KAFKA_TOPICS";
pub const ENV_AUTO_OFFSET_RESET: &str = "KAFKA_AUTO_OFFSET_RESET";

/// The label selector of the owned Deployment's pods, as the scale subresource reports it.
pub fn selector_string(group: &ConsumerGroup) -> String {
    format!("{GROUP_LABEL}={}", group.name_any())
}

/// The Deployment to server-side apply: the template with the injected identity, our labels, an
/// owner reference (garbage collection on delete) and `replicas`.
pub fn deployment(
    group: &ConsumerGroup,
    template: &PodTemplateSpec,
    bootstrap_servers: &str,
    replicas: i32,
) -> Deployment {
    let name = group.name_any();
    let selector_labels = BTreeMap::from([(GROUP_LABEL.to_string(), name.clone())]);
    let mut labels = selector_labels.clone();
    labels.insert(MANAGED_BY_LABEL.to_string(), MANAGER.to_string());

    let mut template = template.clone();
    let metadata = template.metadata.get_or_insert_with(ObjectMeta::default);
    metadata.labels.get_or_insert_with(BTreeMap::new).extend(selector_labels.clone());
    let injected = [
        (ENV_BOOTSTRAP_SERVERS, bootstrap_servers.to_string()),
        (ENV_GROUP_ID, group.spec.group_id.clone()),
        (ENV_TOPICS, group.spec.topics.join(",")),
        (ENV_AUTO_OFFSET_RESET, group.spec.auto_offset_reset.as_str().to_string()),
    ];
    if let Some(spec) = template.spec.as_mut() {
        for container in &mut spec.containers {
            let env = container.env.get_or_insert_with(Vec::new);
            env.retain(|var| !injected.iter().any(|(key, _)| var.name == *key));
            env.extend(injected.iter().map(|(key, value)| EnvVar {
                name: key.to_string(),
                value: Some(value.clone()),
                value_from: None,
            }));
        }
    }

    Deployment {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: group.namespace(),
            labels: Some(labels),
            owner_references: group.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector { match_labels: Some(selector_labels), match_expressions: None },
            template,
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ConsumerGroupSpec;
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    fn group() -> ConsumerGroup {
        let spec: ConsumerGroupSpec = serde_json::from_value(serde_json::json!({
            "groupId": "orders", "topics": ["a", "b"],
        }))
        .unwrap();
        let mut group = ConsumerGroup::new("orders-consumer", spec);
        group.metadata.namespace = Some("shop".into());
        group.metadata.uid = Some("uid-1".into());
        group
    }

    fn template() -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(BTreeMap::from([("app".into(), "x".into())])),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    image: Some("img".into()),
                    env: Some(vec![
                        EnvVar { name: "KAFKA_GROUP_ID".into(), value: Some("stale".into()), value_from: None },
                        EnvVar { name: "OTHER".into(), value: Some("kept".into()), value_from: None },
                    ]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    #[test]
    fn injects_identity_and_overrides_stale_values() {
        let d = deployment(&group(), &template(), "k:9092", 3);
        let env = d.spec.unwrap().template.spec.unwrap().containers[0].env.clone().unwrap();
        let get = |k: &str| env.iter().filter(|e| e.name == k).map(|e| e.value.clone().unwrap()).collect::<Vec<_>>();
        assert_eq!(get("KAFKA_GROUP_ID"), vec!["orders"]);
        assert_eq!(get("KAFKA_TOPICS"), vec!["a,b"]);
        assert_eq!(get("KAFKA_BOOTSTRAP_SERVERS"), vec!["k:9092"]);
        assert_eq!(get("KAFKA_AUTO_OFFSET_RESET"), vec!["latest"]);
        assert_eq!(get("OTHER"), vec!["kept"]);
    }

    #[test]
    fn owned_selects_its_pods_and_keeps_user_labels() {
        let d = deployment(&group(), &template(), "k:9092", 2);
        let owner = &d.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.controller), ("ConsumerGroup", Some(true)));
        let spec = d.spec.unwrap();
        assert_eq!(spec.replicas, Some(2));
        let pod_labels = spec.template.metadata.unwrap().labels.unwrap();
        assert_eq!(pod_labels.get("app").map(String::as_str), Some("x"));
        for (k, v) in spec.selector.match_labels.unwrap() {
            assert_eq!(pod_labels.get(&k), Some(&v), "selector label {k} missing from pods");
        }
        assert_eq!(selector_string(&group()), "kafka.operators.dev/consumer-group=orders-consumer");
    }
}
