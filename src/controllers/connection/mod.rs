//! The KafkaConnection and ClusterKafkaConnection controller: reports whether a named connection
//! works and who uses it.
//!
//! What it may do: read its connection and that connection's Secret (under the same rules as a
//! ConsumerGroup's, `crate::kafka_settings`), ask Kafka for the broker list through the shared client
//! of those settings (the one the ConsumerGroups using it share), read the ConsumerGroup caches,
//! and write the connection's status, only when it changed. It never touches a ConsumerGroup:
//! each ConsumerGroup reads its connection itself when it reconciles.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::conditions::{self, Desired};
use crate::context::{Category, Context, MANAGER};
use crate::crd::{ClusterKafkaConnection, ConnectionKind, ConsumerGroup, KafkaConnection, KafkaConnectionStatus};
use crate::kafka::KafkaError;
use crate::kafka_settings::{self, ConnectionProblem, KafkaSettings};

/// Condition type: the operator connected with these settings on its last check.
pub const REACHABLE: &str = "Reachable";

/// How many ConsumerGroups a connection's status names (the count has them all).
const LISTED_GROUPS: usize = 100;

/// Errors a connection reconcile returns (a connection that does not work is a condition).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
}

impl Error {
    pub fn category(&self) -> Category {
        match self {
            Error::Kube(error) => Category::of_kube(error),
        }
    }
}

pub async fn reconcile_namespaced(connection: Arc<KafkaConnection>, ctx: Arc<Context>) -> Result<Action, Error> {
    let resolved = kafka_settings::namespaced_connection(&ctx.client, &connection, &ctx.settings.defaults).await?;
    let namespace = connection.namespace().unwrap_or_default();
    let users = users(&ctx, ConnectionKind::KafkaConnection, &connection.name_any(), |group| {
        group.namespace().as_deref() == Some(namespace.as_str())
    });
    let status = observe(&ctx, resolved, users, connection.status.as_ref(), connection.meta().generation).await;
    if connection.status.as_ref() != Some(&status) {
        let api: Api<KafkaConnection> = Api::namespaced(ctx.client.clone(), &namespace);
        write_status(&api, &connection.name_any(), &status).await?;
    }
    Ok(Action::requeue(ctx.settings.resync))
}

pub async fn reconcile_cluster(connection: Arc<ClusterKafkaConnection>, ctx: Arc<Context>) -> Result<Action, Error> {
    let resolved = kafka_settings::cluster_connection(&ctx.client, &connection, &ctx.settings.defaults).await?;
    let users = users(&ctx, ConnectionKind::ClusterKafkaConnection, &connection.name_any(), |_| true);
    let status = observe(&ctx, resolved, users, connection.status.as_ref(), connection.meta().generation).await;
    if connection.status.as_ref() != Some(&status) {
        let api: Api<ClusterKafkaConnection> = Api::all(ctx.client.clone());
        write_status(&api, &connection.name_any(), &status).await?;
    }
    Ok(Action::requeue(ctx.settings.resync))
}

pub fn error_policy<K>(connection: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action
where
    K: Resource<DynamicType = ()>,
{
    let attempt = ctx.attempts.failed(&ObjectRef::from_obj(connection.as_ref()).erase());
    let delay = error.category().retry_after(attempt, ctx.settings.resync);
    tracing::warn!(connection = %connection.meta().name.as_deref().unwrap_or_default(), %error, attempt, ?delay, "connection reconcile failed; retrying");
    Action::requeue(delay)
}

/// The ConsumerGroups naming this connection (`namespace/name` for a cluster one), sorted.
fn users(ctx: &Context, kind: ConnectionKind, name: &str, in_scope: impl Fn(&ConsumerGroup) -> bool) -> Vec<String> {
    let mut users: Vec<String> = ctx
        .caches
        .groups
        .iter()
        .flat_map(|store| store.state())
        .filter(|group| {
            let reference = group.spec.kafka.as_ref().and_then(|k| k.connection_ref.as_ref());
            reference.is_some_and(|r| r.kind == kind && r.name == name) && in_scope(group)
        })
        .map(|group| match kind {
            ConnectionKind::KafkaConnection => group.name_any(),
            ConnectionKind::ClusterKafkaConnection => {
                format!("{}/{}", group.namespace().unwrap_or_default(), group.name_any())
            }
        })
        .collect();
    users.sort_unstable();
    users
}

/// Checks the connection (one Metadata request through the shared client of its settings, and one
/// ApiVersions for the cluster's feature levels) and builds its status.
async fn observe(
    ctx: &Context,
    resolved: Result<KafkaSettings, ConnectionProblem>,
    users: Vec<String>,
    previous: Option<&KafkaConnectionStatus>,
    generation: Option<i64>,
) -> KafkaConnectionStatus {
    let previous = previous.cloned().unwrap_or_default();
    let mut features = None;
    let (brokers, condition) = match resolved {
        Err(problem) => (None, Desired::new(REACHABLE, false, problem.reason(), problem.to_string())),
        Ok(connection) => {
            let brokers = match ctx.kafka.client(&connection.properties).await {
                Ok(client) => {
                    let brokers = client.broker_count(ctx.settings.kafka_timeout).await;
                    // Settings the batched reader refuses (e.g. GSSAPI) leave the levels unknown.
                    if brokers.is_ok() {
                        match client.cluster_features(ctx.settings.kafka_timeout).await {
                            Some(Ok(read)) => features = Some(read),
                            Some(Err(error)) => tracing::debug!(%error, "could not read the cluster's feature levels"),
                            None => {}
                        }
                    }
                    brokers
                }
                Err(error) => Err(error),
            };
            match brokers {
                Ok(count) => (
                    Some(count),
                    Desired::new(
                        REACHABLE,
                        true,
                        conditions::reason::CONNECTED,
                        format!("{count} broker{} in the cluster's metadata", if count == 1 { "" } else { "s" }),
                    ),
                ),
                Err(error) => {
                    let reason = match &error {
                        KafkaError::Auth(_) => conditions::reason::KAFKA_AUTH_FAILED,
                        KafkaError::Config(_) => conditions::reason::KAFKA_CONFIG_INVALID,
                        _ => conditions::reason::KAFKA_UNREACHABLE,
                    };
                    // A broker count once read stays: an outage does not change the cluster's size.
                    (previous.brokers, Desired::new(REACHABLE, false, reason, error.to_string()))
                }
            }
        }
    };
    let now = Time(
        k8s_openapi::jiff::Timestamp::from_second(k8s_openapi::jiff::Timestamp::now().as_second())
            .expect("now is a valid time"),
    );
    // Levels once read stay through an outage, like the broker count.
    let (metadata_version, group_protocols) = match &features {
        Some(features) => (features.metadata_version(), features.group_protocols()),
        None => (previous.metadata_version.clone(), previous.group_protocols.clone()),
    };
    KafkaConnectionStatus {
        observed_generation: generation,
        brokers,
        metadata_version,
        group_protocols,
        consumer_group_count: Some(users.len() as i32),
        consumer_groups: users.into_iter().take(LISTED_GROUPS).collect(),
        conditions: conditions::merge(&previous.conditions, &[condition], generation, &now),
    }
}

async fn write_status<K>(api: &Api<K>, name: &str, status: &KafkaConnectionStatus) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let body = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(body)).await?;
    Ok(())
}
