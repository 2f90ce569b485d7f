//! Observe: reads everything a decision needs (the connection Secret, the workload, Kafka
//! metadata and group state). I/O only: no writes, no decisions; each failure is returned as a
//! value so the decision step can turn it into a condition.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, ResourceExt};

use crate::crd::{ConsumerGroup, ScaleTargetKind};
use crate::kafka::{ClientCache, GroupDescription, KafkaClient, KafkaError};

/// Why the Kafka connection could not even be configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionProblem {
    NoBootstrapServers,
    SecretNotFound(String),
    SecretInvalid { name: String, key: String },
}

/// The resolved connection: librdkafka properties (secret values included, never logged).
#[derive(Clone, PartialEq, Eq)]
pub struct Connection {
    pub bootstrap_servers: String,
    pub properties: BTreeMap<String, String>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("property_keys", &self.properties.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Connection {
    /// Identity of the Kafka cluster for duplicate-groupId detection: the sorted broker list.
    pub fn cluster_key(&self) -> String {
        cluster_key(&self.bootstrap_servers)
    }
}

pub fn cluster_key(bootstrap_servers: &str) -> String {
    let mut brokers: Vec<&str> = bootstrap_servers.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    brokers.sort_unstable();
    brokers.join(",")
}

/// The bootstrap servers a ConsumerGroup resolves to, without reading its Secret.
pub fn bootstrap_servers(group: &ConsumerGroup, default: Option<&str>) -> Option<String> {
    group
        .spec
        .kafka
        .as_ref()
        .and_then(|k| k.bootstrap_servers.clone())
        .or_else(|| default.map(str::to_string))
        .filter(|s| !s.trim().is_empty())
}

/// Resolves bootstrap servers and client properties (from the referenced Secret).
pub async fn connection(
    client: &Client,
    group: &ConsumerGroup,
    default_bootstrap: Option<&str>,
) -> Result<Result<Connection, ConnectionProblem>, kube::Error> {
    let Some(bootstrap_servers) = bootstrap_servers(group, default_bootstrap) else {
        return Ok(Err(ConnectionProblem::NoBootstrapServers));
    };
    let mut properties = BTreeMap::new();
    if let Some(secret_ref) = group.spec.kafka.as_ref().and_then(|k| k.client_properties_secret_ref.as_ref()) {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &group.namespace().unwrap_or_default());
        let Some(secret) = secrets.get_opt(&secret_ref.name).await? else {
            return Ok(Err(ConnectionProblem::SecretNotFound(secret_ref.name.clone())));
        };
        for (key, value) in secret.data.unwrap_or_default() {
            match String::from_utf8(value.0) {
                Ok(text) => {
                    properties.insert(key, text);
                }
                Err(_) => {
                    return Ok(Err(ConnectionProblem::SecretInvalid { name: secret_ref.name.clone(), key }));
                }
            }
        }
    }
    properties.insert("bootstrap.servers".to_string(), bootstrap_servers.clone());
    Ok(Ok(Connection { bootstrap_servers, properties }))
}

/// The workload as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// `spec.replicas` of the workload; None when the owned Deployment does not exist yet.
    pub replicas: Option<i32>,
    /// Ready pods according to the workload's status (0 where no controller-manager runs).
    pub ready_replicas: Option<i32>,
    pub selector: Option<String>,
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
            replicas: scale.spec.and_then(|s| s.replicas),
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

/// What Kafka said about the group's topics and the group itself.
#[derive(Debug, Clone)]
pub struct KafkaView {
    pub partitions: BTreeMap<String, i32>,
    pub group: Option<GroupDescription>,
}

/// Partition counts (one metadata request) and the group description (one DescribeGroups).
pub async fn kafka(
    cache: &ClientCache,
    connection: &Connection,
    group: &ConsumerGroup,
    timeout: Duration,
) -> Result<(Arc<KafkaClient>, KafkaView), KafkaError> {
    let client = cache.get_or_create(&connection.properties)?;
    let partitions = client.partition_counts(&group.spec.topics, timeout).await?;
    let description = client
        .describe_consumer_groups(std::slice::from_ref(&group.spec.group_id), timeout)
        .await?
        .into_iter()
        .next();
    Ok((client, KafkaView { partitions, group: description }))
}
