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
pub use crate::context::MANAGER;
/// Annotation on the owned Deployment: a hash of what the operator last applied, so that a field
/// the operator stops setting is a difference too (see [`is_applied`]).
pub const APPLIED_HASH_ANNOTATION: &str = "kafka.operators.dev/applied-hash";

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

    let mut deployment = Deployment {
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
    };
    let hash = applied_hash(&deployment);
    deployment.metadata.annotations = Some(BTreeMap::from([(APPLIED_HASH_ANNOTATION.to_string(), hash)]));
    deployment
}

/// A hash of the Deployment as the operator wants it (before the annotation is added). Only
/// compared with the operator's own earlier value: an operator upgrade that changes it costs one
/// extra apply, nothing more.
fn applied_hash(deployment: &Deployment) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(deployment).unwrap_or_default().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// Whether `live` already is what applying `desired` would make it: every field the operator sets
/// has the same value there (the apiserver adds defaults, which are ignored). The applied-hash
/// annotation is one of those fields, so a field the operator no longer sets counts as a change.
/// A value the apiserver rewrites (a quantity such as `0.5` stored as `500m`) reads as a change and
/// is simply applied again, as before this check existed.
pub fn is_applied(desired: &Deployment, live: &Deployment) -> bool {
    match (serde_json::to_value(desired), serde_json::to_value(live)) {
        (Ok(desired), Ok(live)) => is_subset(&desired, &live),
        _ => false,
    }
}

fn is_subset(desired: &serde_json::Value, live: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (desired, live) {
        (Value::Object(want), Value::Object(have)) => {
            want.iter().all(|(key, value)| have.get(key).is_some_and(|found| is_subset(value, found)))
        }
        (Value::Array(want), Value::Array(have)) => {
            want.len() == have.len() && want.iter().zip(have).all(|(w, h)| is_subset(w, h))
        }
        (want, have) => want == have,
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
    fn a_live_deployment_with_defaults_added_is_applied_and_any_change_is_not() {
        let desired = deployment(&group(), &template(), "k:9092", 2);
        // What the apiserver stores: our fields plus defaults and bookkeeping.
        let mut live = serde_json::to_value(&desired).unwrap();
        live["metadata"]["resourceVersion"] = "42".into();
        live["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "1".into();
        live["spec"]["strategy"] = serde_json::json!({"type": "RollingUpdate"});
        live["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "Always".into();
        live["status"] = serde_json::json!({"replicas": 2});
        let live: Deployment = serde_json::from_value(live).unwrap();
        assert!(is_applied(&desired, &live));

        let scaled = deployment(&group(), &template(), "k:9092", 3);
        assert!(!is_applied(&scaled, &live), "another replica count");
        let mut edited = live.clone();
        edited.spec.as_mut().unwrap().template.spec.as_mut().unwrap().containers[0].image = Some("hand".into());
        assert!(!is_applied(&desired, &edited), "a hand edit is put back");
        let mut fewer = template();
        fewer.metadata = None;
        let dropped = deployment(&group(), &fewer, "k:9092", 2);
        assert!(!is_applied(&dropped, &live), "a label the operator no longer sets changes the hash");
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
