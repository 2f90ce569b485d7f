//! The Kafka connection of a ConsumerGroup: bootstrap servers and librdkafka client properties,
//! from a named KafkaConnection or ClusterKafkaConnection, from its inline settings and Secret, or
//! from the operator's defaults. Shared by both controllers (an OffsetReset goes through its
//! ConsumerGroup's connection) and the connections' own controller; reads only, and every failure
//! is a value that says what to fix.
//!
//! The operator reads a Secret of a workload namespace only when it carries
//! [`CLIENT_PROPERTIES_LABEL`]: whoever may create a ConsumerGroup or KafkaConnection, but not read
//! Secrets, must not be able to make the operator send another application's credentials to a
//! broker of their choosing. The label is checked on the Secret's metadata before its data is read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::Api;
use kube::core::{Selector, SelectorExt};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};

use crate::crd::{
    CLIENT_PROPERTIES_LABEL, ClusterKafkaConnection, ConnectionKind, ConnectionReference, ConsumerGroup,
    KafkaConnection, SecretReference,
};

/// Why the Kafka connection could not even be configured; the message says what to fix and never
/// carries a property's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionProblem {
    #[error(
        "no Kafka bootstrap servers: set spec.kafka.connectionRef or spec.kafka.bootstrapServers, or start the operator with --default-bootstrap-servers"
    )]
    NoBootstrapServers,
    #[error(
        "Secret {name:?} named in {named_in} does not exist in namespace {namespace:?}; create it or fix the reference"
    )]
    SecretNotFound { name: String, namespace: String, named_in: String },
    #[error(
        "Secret {name:?} named in {named_in} is not labelled {label}=true, so the operator reads none of it; if it holds Kafka client properties for this use, run `kubectl label secret {name} -n {namespace} {label}=true`",
        label = CLIENT_PROPERTIES_LABEL
    )]
    SecretNotLabelled { name: String, namespace: String, named_in: String },
    #[error(
        "{named_in} names Secret {name:?} of namespace {namespace:?}, but this operator reads no Secret of a workload namespace (started with --allow-namespace-secrets=false); use a ClusterKafkaConnection"
    )]
    NamespaceSecretsDisabled { name: String, namespace: String, named_in: String },
    #[error(
        "key {key:?} of Secret {name:?} is not UTF-8 text; librdkafka properties must be text (PEM for certificates)"
    )]
    SecretInvalid { name: String, key: String },
    /// The operator's `--default-client-properties-dir` could not be read.
    #[error(
        "the operator's default client properties in {path} cannot be read ({error}); fix the Secret mounted there (--default-client-properties-dir) or set spec.kafka.clientPropertiesSecretRef"
    )]
    DefaultPropertiesUnreadable { path: String, error: String },
    #[error("{kind} {name:?} named in spec.kafka.connectionRef does not exist{where_}; create it or fix the reference", kind = kind.as_str(), where_ = if *kind == ConnectionKind::KafkaConnection { " in this namespace" } else { "" })]
    ConnectionNotFound { kind: ConnectionKind, name: String },
    #[error(
        "ClusterKafkaConnection {name:?} may be used only from namespaces matching its spec.namespaceSelector ({selector}); namespace {namespace:?} does not match. Ask its owners to widen the selector, or label the namespace"
    )]
    NamespaceNotAllowed { name: String, namespace: String, selector: String },
    #[error("ClusterKafkaConnection {name:?} has an invalid spec.namespaceSelector ({error}); fix the selector")]
    SelectorInvalid { name: String, error: String },
    #[error(
        "ClusterKafkaConnection {name:?} names a Secret, but the operator does not know its own namespace, where that Secret lives; set POD_NAMESPACE or --operator-namespace"
    )]
    OperatorNamespaceUnknown { name: String },
}

/// The operator's own connection settings, used where a ConsumerGroup sets none, and its rules on
/// which Secrets it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultConnection {
    pub bootstrap_servers: Option<String>,
    /// A folder holding one file per librdkafka property (a mounted Secret), for ConsumerGroups
    /// without spec.kafka.clientPropertiesSecretRef.
    pub properties_dir: Option<PathBuf>,
    /// Where the Secrets of ClusterKafkaConnections live.
    pub operator_namespace: Option<String>,
    /// Whether Secrets of workload namespaces (named inline or by a KafkaConnection) may be read
    /// at all, labelled ones only.
    pub namespace_secrets: bool,
}

impl ConnectionProblem {
    /// The condition reason that names this problem.
    pub fn reason(&self) -> &'static str {
        match self {
            ConnectionProblem::NoBootstrapServers
            | ConnectionProblem::DefaultPropertiesUnreadable { .. }
            | ConnectionProblem::OperatorNamespaceUnknown { .. } => "KafkaNotConfigured",
            ConnectionProblem::SecretNotFound { .. } => "SecretNotFound",
            ConnectionProblem::SecretNotLabelled { .. } => "SecretNotLabelled",
            ConnectionProblem::NamespaceSecretsDisabled { .. } => "NamespaceSecretsDisabled",
            ConnectionProblem::SecretInvalid { .. } => "SecretInvalid",
            ConnectionProblem::ConnectionNotFound { .. } => "ConnectionNotFound",
            ConnectionProblem::NamespaceNotAllowed { .. } => "NamespaceNotAllowed",
            ConnectionProblem::SelectorInvalid { .. } => "ConnectionInvalid",
        }
    }
}

/// Reads a folder of librdkafka properties, the layout of a Secret mounted as a volume: each
/// file's name is a property, its content the value (trailing line breaks dropped, as files
/// written by hand or `--from-file` end with one). Dot-files are skipped: the kubelet keeps its
/// bookkeeping (`..data`, timestamped folders) there. Read on every use, so rotated credentials
/// take effect without a restart.
pub fn properties_from_dir(dir: &Path) -> Result<BTreeMap<String, String>, ConnectionProblem> {
    let unreadable =
        |error: String| ConnectionProblem::DefaultPropertiesUnreadable { path: dir.display().to_string(), error };
    let mut properties = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(|e| unreadable(e.to_string()))? {
        let entry = entry.map_err(|e| unreadable(e.to_string()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.starts_with('.') || !path.is_file() {
            continue;
        }
        let value = std::fs::read(&path).map_err(|e| unreadable(format!("{name}: {e}")))?;
        let value = String::from_utf8(value).map_err(|_| unreadable(format!("{name} is not UTF-8 text")))?;
        properties.insert(name, value.trim_end_matches(['\r', '\n']).to_string());
    }
    Ok(properties)
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

/// The cached named connections, for the answers that must come without a request (which
/// ConsumerGroups share a Kafka cluster).
#[derive(Clone, Default)]
pub struct ConnectionStores {
    pub namespaced: Vec<Store<KafkaConnection>>,
    pub cluster: Option<Store<ClusterKafkaConnection>>,
}

impl ConnectionStores {
    fn bootstrap_servers_of(&self, reference: &ConnectionReference, namespace: &str) -> Option<String> {
        match reference.kind {
            ConnectionKind::KafkaConnection => self.namespaced.iter().find_map(|store| {
                store
                    .get(&kube::runtime::reflector::ObjectRef::new(&reference.name).within(namespace))
                    .map(|c| c.spec.bootstrap_servers.clone())
            }),
            ConnectionKind::ClusterKafkaConnection => self.cluster.as_ref().and_then(|store| {
                store
                    .get(&kube::runtime::reflector::ObjectRef::new(&reference.name))
                    .map(|c| c.spec.bootstrap_servers.clone())
            }),
        }
    }
}

/// The bootstrap servers a ConsumerGroup resolves to, from the caches, without reading a Secret.
pub fn bootstrap_servers(group: &ConsumerGroup, default: Option<&str>, stores: &ConnectionStores) -> Option<String> {
    let kafka = group.spec.kafka.as_ref();
    if let Some(reference) = kafka.and_then(|k| k.connection_ref.as_ref()) {
        return stores.bootstrap_servers_of(reference, &group.namespace().unwrap_or_default());
    }
    kafka
        .and_then(|k| k.bootstrap_servers.clone())
        .or_else(|| default.map(str::to_string))
        .filter(|s| !s.trim().is_empty())
}

/// Resolves a ConsumerGroup's connection: its connectionRef's, else its inline settings, each
/// inline field falling back on the operator's defaults on its own. Named connections are read
/// fresh, not from a cache: a reconcile triggered by a connection's change must see that change.
pub async fn connection(
    client: &Client,
    group: &ConsumerGroup,
    defaults: &DefaultConnection,
) -> Result<Result<Connection, ConnectionProblem>, kube::Error> {
    let namespace = group.namespace().unwrap_or_default();
    let kafka = group.spec.kafka.as_ref();
    if let Some(reference) = kafka.and_then(|k| k.connection_ref.as_ref()) {
        return named_connection(client, reference, &namespace, defaults).await;
    }
    let Some(bootstrap_servers) = kafka
        .and_then(|k| k.bootstrap_servers.clone())
        .or_else(|| defaults.bootstrap_servers.clone())
        .filter(|s| !s.trim().is_empty())
    else {
        return Ok(Err(ConnectionProblem::NoBootstrapServers));
    };
    let properties = match kafka.and_then(|k| k.client_properties_secret_ref.as_ref()) {
        Some(secret) => {
            let read = SecretRead::Labelled { named_in: "spec.kafka.clientPropertiesSecretRef".to_string() };
            match secret_properties(client, secret, &namespace, read, defaults).await? {
                Ok(properties) => properties,
                Err(problem) => return Ok(Err(problem)),
            }
        }
        None => match &defaults.properties_dir {
            Some(dir) => match properties_from_dir(dir) {
                Ok(properties) => properties,
                Err(problem) => return Ok(Err(problem)),
            },
            None => BTreeMap::new(),
        },
    };
    Ok(Ok(Connection::new(bootstrap_servers, properties)))
}

async fn named_connection(
    client: &Client,
    reference: &ConnectionReference,
    namespace: &str,
    defaults: &DefaultConnection,
) -> Result<Result<Connection, ConnectionProblem>, kube::Error> {
    let not_found = || ConnectionProblem::ConnectionNotFound { kind: reference.kind, name: reference.name.clone() };
    match reference.kind {
        ConnectionKind::KafkaConnection => {
            let api: Api<KafkaConnection> = Api::namespaced(client.clone(), namespace);
            let Some(connection) = api.get_opt(&reference.name).await? else { return Ok(Err(not_found())) };
            namespaced_connection(client, &connection, defaults).await
        }
        ConnectionKind::ClusterKafkaConnection => {
            let api: Api<ClusterKafkaConnection> = Api::all(client.clone());
            let Some(connection) = api.get_opt(&reference.name).await? else { return Ok(Err(not_found())) };
            let namespaces: Api<Namespace> = Api::all(client.clone());
            let labels = namespaces.get_metadata_opt(namespace).await?.map(|n| n.metadata.labels.unwrap_or_default());
            if let Err(problem) = namespace_allowed(&connection, namespace, &labels.unwrap_or_default()) {
                return Ok(Err(problem));
            }
            cluster_connection(client, &connection, defaults).await
        }
    }
}

/// Whether a namespace with these labels may use a ClusterKafkaConnection. Pure.
pub fn namespace_allowed(
    connection: &ClusterKafkaConnection,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Result<(), ConnectionProblem> {
    let name = connection.name_any();
    let selector = Selector::try_from(connection.spec.namespace_selector.clone())
        .map_err(|error| ConnectionProblem::SelectorInvalid { name: name.clone(), error: error.to_string() })?;
    if selector.matches(labels) {
        Ok(())
    } else {
        let selector = if selector.selects_all() { "every namespace".to_string() } else { selector.to_string() };
        Err(ConnectionProblem::NamespaceNotAllowed { name, namespace: namespace.to_string(), selector })
    }
}

/// A KafkaConnection's settings; its Secret, in its own namespace, must be labelled.
pub async fn namespaced_connection(
    client: &Client,
    connection: &KafkaConnection,
    defaults: &DefaultConnection,
) -> Result<Result<Connection, ConnectionProblem>, kube::Error> {
    let namespace = connection.namespace().unwrap_or_default();
    let mut properties = BTreeMap::new();
    if let Some(secret) = &connection.spec.client_properties_secret_ref {
        let read = SecretRead::Labelled { named_in: format!("KafkaConnection {:?}", connection.name_any()) };
        match secret_properties(client, secret, &namespace, read, defaults).await? {
            Ok(read) => properties = read,
            Err(problem) => return Ok(Err(problem)),
        }
    }
    Ok(Ok(Connection::new(connection.spec.bootstrap_servers.clone(), properties)))
}

/// A ClusterKafkaConnection's settings; its Secret lives in the operator's namespace.
pub async fn cluster_connection(
    client: &Client,
    connection: &ClusterKafkaConnection,
    defaults: &DefaultConnection,
) -> Result<Result<Connection, ConnectionProblem>, kube::Error> {
    let mut properties = BTreeMap::new();
    if let Some(secret) = &connection.spec.client_properties_secret_ref {
        let Some(namespace) = &defaults.operator_namespace else {
            return Ok(Err(ConnectionProblem::OperatorNamespaceUnknown { name: connection.name_any() }));
        };
        let read = SecretRead::Trusted { named_in: format!("ClusterKafkaConnection {:?}", connection.name_any()) };
        match secret_properties(client, secret, namespace, read, defaults).await? {
            Ok(read) => properties = read,
            Err(problem) => return Ok(Err(problem)),
        }
    }
    Ok(Ok(Connection::new(connection.spec.bootstrap_servers.clone(), properties)))
}

/// How a Secret may be read.
enum SecretRead {
    /// Named from a workload namespace: only with the opt-in label, and only if the operator
    /// reads such Secrets at all.
    Labelled { named_in: String },
    /// Named by the platform team (a ClusterKafkaConnection), in the operator's own namespace.
    Trusted { named_in: String },
}

async fn secret_properties(
    client: &Client,
    secret: &SecretReference,
    namespace: &str,
    read: SecretRead,
    defaults: &DefaultConnection,
) -> Result<Result<BTreeMap<String, String>, ConnectionProblem>, kube::Error> {
    let (name, namespace_owned) = (secret.name.clone(), namespace.to_string());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let named_in = match read {
        SecretRead::Labelled { named_in } => {
            if !defaults.namespace_secrets {
                return Ok(Err(ConnectionProblem::NamespaceSecretsDisabled {
                    name,
                    namespace: namespace_owned,
                    named_in,
                }));
            }
            // The label first, from metadata only: an unlabelled Secret's data is never fetched.
            let Some(meta) = secrets.get_metadata_opt(&secret.name).await? else {
                return Ok(Err(ConnectionProblem::SecretNotFound { name, namespace: namespace_owned, named_in }));
            };
            if meta.labels().get(CLIENT_PROPERTIES_LABEL).map(String::as_str) != Some("true") {
                return Ok(Err(ConnectionProblem::SecretNotLabelled { name, namespace: namespace_owned, named_in }));
            }
            named_in
        }
        SecretRead::Trusted { named_in } => named_in,
    };
    let Some(found) = secrets.get_opt(&secret.name).await? else {
        return Ok(Err(ConnectionProblem::SecretNotFound { name, namespace: namespace_owned, named_in }));
    };
    let mut properties = BTreeMap::new();
    for (key, value) in found.data.unwrap_or_default() {
        match String::from_utf8(value.0) {
            Ok(text) => {
                properties.insert(key, text);
            }
            Err(_) => return Ok(Err(ConnectionProblem::SecretInvalid { name, key })),
        }
    }
    Ok(Ok(properties))
}

impl Connection {
    fn new(bootstrap_servers: String, mut properties: BTreeMap<String, String>) -> Connection {
        properties.insert("bootstrap.servers".to_string(), bootstrap_servers.clone());
        Connection { bootstrap_servers, properties }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster_connection(selector: serde_json::Value) -> ClusterKafkaConnection {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "kafka.operators.dev/v1alpha1", "kind": "ClusterKafkaConnection", "metadata": {"name": "shared"},
            "spec": {"bootstrapServers": "kafka:9092", "namespaceSelector": selector}}))
        .unwrap()
    }

    #[test]
    fn a_cluster_connection_allows_the_namespaces_its_selector_matches() {
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let everyone = cluster_connection(serde_json::json!({}));
        assert_eq!(namespace_allowed(&everyone, "any", &labels(&[])), Ok(()));

        let team_a = cluster_connection(serde_json::json!({"matchLabels": {"team": "a"}}));
        assert_eq!(namespace_allowed(&team_a, "a", &labels(&[("team", "a"), ("env", "prod")])), Ok(()));
        let refused = namespace_allowed(&team_a, "b", &labels(&[("team", "b")])).unwrap_err();
        assert_eq!(refused.reason(), "NamespaceNotAllowed");
        let message = refused.to_string();
        assert!(message.contains("team=a") && message.contains("\"b\"") && message.contains("shared"), "{message}");

        let not_sandbox = cluster_connection(serde_json::json!({"matchExpressions": [
            {"key": "env", "operator": "NotIn", "values": ["sandbox"]}, {"key": "team", "operator": "Exists"}]}));
        assert_eq!(namespace_allowed(&not_sandbox, "a", &labels(&[("team", "a"), ("env", "prod")])), Ok(()));
        assert!(namespace_allowed(&not_sandbox, "s", &labels(&[("team", "a"), ("env", "sandbox")])).is_err());
        assert!(namespace_allowed(&not_sandbox, "n", &labels(&[("env", "prod")])).is_err());

        let invalid =
            cluster_connection(serde_json::json!({"matchExpressions": [{"key": "team", "operator": "Near"}]}));
        let problem = namespace_allowed(&invalid, "a", &labels(&[("team", "a")])).unwrap_err();
        assert_eq!(problem.reason(), "ConnectionInvalid", "{problem}");
    }

    #[test]
    fn an_unlabelled_secret_is_refused_with_the_command_that_opts_it_in() {
        let problem = ConnectionProblem::SecretNotLabelled {
            name: "kafka-auth".into(),
            namespace: "team-a".into(),
            named_in: "spec.kafka.clientPropertiesSecretRef".into(),
        };
        assert_eq!(
            problem.to_string(),
            "Secret \"kafka-auth\" named in spec.kafka.clientPropertiesSecretRef is not labelled kafka.operators.dev/client-properties=true, so the operator reads none of it; if it holds Kafka client properties for this use, run `kubectl label secret kafka-auth -n team-a kafka.operators.dev/client-properties=true`"
        );
    }

    #[test]
    fn a_mounted_secret_folder_becomes_properties() {
        let dir = std::env::temp_dir().join(format!("cgo-props-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("..2026_11_25_10_00_00.1")).unwrap();
        std::fs::write(dir.join("security.protocol"), "SASL_SSL\n").unwrap();
        std::fs::write(dir.join("sasl.password"), "s3cret").unwrap();
        std::fs::write(dir.join("ssl.ca.pem"), "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\r\n")
            .unwrap();
        std::fs::write(dir.join("..data"), "kubelet bookkeeping").unwrap();
        let properties = properties_from_dir(&dir).unwrap();
        assert_eq!(
            properties,
            BTreeMap::from([
                ("sasl.password".to_string(), "s3cret".to_string()),
                ("security.protocol".to_string(), "SASL_SSL".to_string()),
                ("ssl.ca.pem".to_string(), "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----".to_string()),
            ])
        );
        std::fs::write(dir.join("binary"), [0xff, 0xfe]).unwrap();
        let problem = properties_from_dir(&dir).unwrap_err();
        assert!(
            matches!(&problem, ConnectionProblem::DefaultPropertiesUnreadable { error, .. } if error.contains("binary")),
            "{problem:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        let missing = properties_from_dir(&dir).unwrap_err();
        assert!(matches!(missing, ConnectionProblem::DefaultPropertiesUnreadable { .. }));
    }
}
