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
    /// A namespace's Secret sets client properties that only the platform may set: they read the
    /// operator pod's files, load code, or are unknown. Names the keys, never a value.
    #[error(
        "Secret {name:?} named in {named_in} sets properties that a Secret of a workload namespace may not set: {refused}; remove them (a namespace's Secret may set only {allowed}), or ask the platform team for a ClusterKafkaConnection",
        refused = keys.iter().map(|key| format!("{key:?} ({})", why_not_for_tenants(key))).collect::<Vec<_>>().join(", "),
        allowed = TENANT_PROPERTIES.join(", ")
    )]
    PropertiesNotAllowed { name: String, named_in: String, keys: Vec<String> },
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
    #[error(
        "{rule} lets namespace {namespace:?} manage only the group ids {allowed}; groupId {group_id:?} matches none of them, so nothing is read, run or reset for it. Choose a groupId it allows, or ask the platform team to allow this one",
        allowed = if allowed.is_empty() { "(none)".to_string() } else { allowed.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(", ") }
    )]
    GroupIdNotAllowed { rule: String, namespace: String, group_id: String, allowed: Vec<String> },
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
    /// The group ids ConsumerGroups on the default servers may manage (`--default-allowed-group-ids`).
    pub allowed_group_ids: Option<Vec<String>>,
    /// Where the Secrets of ClusterKafkaConnections live.
    pub operator_namespace: Option<String>,
    /// Whether Secrets of workload namespaces (named inline or by a KafkaConnection) may be read
    /// at all, labelled ones only.
    pub namespace_secrets: bool,
}

/// The client properties a Secret of a workload namespace may set (a namespace Secret named inline
/// or by a KafkaConnection): what a Kafka client needs to reach and log in to its cluster, values
/// given inline. The operator connects with its own pod, so everything else is refused: keys that
/// read the pod's files (`*.location`, but `ssl.ca.location=probe`, the system CA store), load
/// code (`plugin.library.paths`, `ssl.engine.*`, `ssl.providers`), run commands or call out
/// (`sasl.kerberos.*`, `sasl.oauthbearer.*`), raise the operator's memory bounds
/// (`receive.message.max.bytes`), and any key not listed. Platform-owned settings (the operator's
/// defaults, ClusterKafkaConnection Secrets) may set any property.
pub const TENANT_PROPERTIES: &[&str] = &[
    "api.version.request",
    "api.version.request.timeout.ms",
    "bootstrap.servers",
    "broker.address.family",
    "broker.version.fallback",
    "client.dns.lookup",
    "client.id",
    "client.rack",
    "connections.max.idle.ms",
    "enable.ssl.certificate.verification",
    "metadata.max.age.ms",
    "reconnect.backoff.max.ms",
    "reconnect.backoff.ms",
    "retry.backoff.max.ms",
    "retry.backoff.ms",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.password",
    "sasl.username",
    "security.protocol",
    "socket.connection.setup.timeout.ms",
    "socket.keepalive.enable",
    "socket.nagle.disable",
    "socket.timeout.ms",
    "ssl.ca.location",
    "ssl.ca.pem",
    "ssl.certificate.pem",
    "ssl.cipher.suites",
    "ssl.curves.list",
    "ssl.endpoint.identification.algorithm",
    "ssl.key.password",
    "ssl.key.pem",
    "ssl.sigalgs.list",
    "topic.metadata.refresh.interval.ms",
];

/// The keys of a workload namespace's properties that [`TENANT_PROPERTIES`] does not allow, sorted.
/// Pure; looks at a value only to tell `ssl.ca.location=probe` from a path.
pub fn keys_not_allowed_for_tenants(properties: &BTreeMap<String, String>) -> Vec<String> {
    properties
        .iter()
        .filter(|(key, value)| match key.as_str() {
            "ssl.ca.location" => value.trim() != "probe",
            key => TENANT_PROPERTIES.binary_search(&key).is_err(),
        })
        .map(|(key, _)| key.clone())
        .collect()
}

/// Why a tenant may not set `key`, and what to do instead.
fn why_not_for_tenants(key: &str) -> String {
    let inline = |pem: &str| format!("reads a file of the operator's pod; give the PEM text in {pem}");
    match key {
        "ssl.ca.location" => "reads files of the operator's pod; give the CA certificates in ssl.ca.pem, or set it to probe for the system's".into(),
        "ssl.certificate.location" => inline("ssl.certificate.pem"),
        "ssl.key.location" => inline("ssl.key.pem"),
        "plugin.library.paths" | "ssl.providers" => "loads code into the operator".into(),
        "receive.message.max.bytes" => "raises the operator's memory bound on Kafka's answers".into(),
        key if key.ends_with(".location") || key.starts_with("ssl.engine.") => {
            "reads files of the operator's pod or loads code into it".into()
        }
        key if key.starts_with("sasl.kerberos.") || key.starts_with("sasl.oauthbearer.") => {
            "runs commands or makes requests from the operator's pod".into()
        }
        key => {
            if let Some(instead) = crate::kafka::java_property_hint(key) {
                return format!("a Java client property: {instead}");
            }
            let closest = TENANT_PROPERTIES.iter().min_by_key(|allowed| strsim::levenshtein(key, allowed));
            match closest {
                Some(closest) if strsim::levenshtein(key, closest) <= 2 => format!("misspelled? did you mean {closest:?}"),
                _ => "not a connection setting".into(),
            }
        }
    }
}

impl ConnectionProblem {
    /// Every reason of [`ConnectionProblem::reason`].
    pub const REASONS: &[&str] = &[
        "KafkaNotConfigured",
        "SecretNotFound",
        "SecretNotLabelled",
        "NamespaceSecretsDisabled",
        "SecretInvalid",
        "KafkaConfigInvalid",
        "ConnectionNotFound",
        "NamespaceNotAllowed",
        "GroupIdNotAllowed",
        "ConnectionInvalid",
    ];

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
            ConnectionProblem::PropertiesNotAllowed { .. } => "KafkaConfigInvalid",
            ConnectionProblem::ConnectionNotFound { .. } => "ConnectionNotFound",
            ConnectionProblem::NamespaceNotAllowed { .. } => "NamespaceNotAllowed",
            ConnectionProblem::GroupIdNotAllowed { .. } => "GroupIdNotAllowed",
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
pub struct KafkaSettings {
    pub bootstrap_servers: String,
    pub properties: BTreeMap<String, String>,
    /// The operator has default client properties but did not use them here: the ConsumerGroup
    /// names bootstrap servers other than the operator's, and the platform's credentials go only
    /// to the servers the platform configured.
    pub defaults_withheld: bool,
}

/// Said where a connection without the operator's default properties fails.
pub const DEFAULTS_WITHHELD: &str = "the operator's default client properties (--default-client-properties-dir) are used only with its default bootstrap servers, not with spec.kafka.bootstrapServers of a ConsumerGroup; if this cluster needs credentials, name a labelled Secret of this namespace in spec.kafka.clientPropertiesSecretRef, or use a connection of the platform team (spec.kafka.connectionRef)";

impl std::fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSettings")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("property_keys", &self.properties.keys().collect::<Vec<_>>())
            .field("defaults_withheld", &self.defaults_withheld)
            .finish()
    }
}

impl KafkaSettings {
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
pub async fn resolve(
    client: &Client,
    group: &ConsumerGroup,
    defaults: &DefaultConnection,
) -> Result<Result<KafkaSettings, ConnectionProblem>, kube::Error> {
    let namespace = group.namespace().unwrap_or_default();
    let kafka = group.spec.kafka.as_ref();
    if let Some(reference) = kafka.and_then(|k| k.connection_ref.as_ref()) {
        return named_connection(client, reference, &namespace, &group.spec.group_id, defaults).await;
    }
    let own_servers = kafka.and_then(|k| k.bootstrap_servers.clone());
    let Some(bootstrap_servers) =
        own_servers.clone().or_else(|| defaults.bootstrap_servers.clone()).filter(|s| !s.trim().is_empty())
    else {
        return Ok(Err(ConnectionProblem::NoBootstrapServers));
    };
    // The platform's credentials go only to the platform's servers: a tenant who could name any
    // server would otherwise receive them (SASL PLAIN sends the password itself).
    let platform_servers = match (&own_servers, &defaults.bootstrap_servers) {
        (None, _) => true,
        (Some(own), Some(default)) => cluster_key(own) == cluster_key(default),
        (Some(_), None) => false,
    };
    if platform_servers {
        let rule = || "the operator's default connection (--default-allowed-group-ids)".to_string();
        if let Err(problem) =
            group_id_policy(defaults.allowed_group_ids.as_deref(), rule, &namespace, &group.spec.group_id)
        {
            return Ok(Err(problem));
        }
    }
    let mut defaults_withheld = false;
    let properties = match kafka.and_then(|k| k.client_properties_secret_ref.as_ref()) {
        Some(secret) => {
            let read = SecretRead::Labelled { named_in: "spec.kafka.clientPropertiesSecretRef".to_string() };
            match secret_properties(client, secret, &namespace, read, defaults).await? {
                Ok(properties) => properties,
                Err(problem) => return Ok(Err(problem)),
            }
        }
        None => match &defaults.properties_dir {
            // Read on every use (rotations apply without a restart), off the async workers.
            Some(dir) if platform_servers => match tokio::task::spawn_blocking({
                let dir = dir.clone();
                move || properties_from_dir(&dir)
            })
            .await
            .unwrap_or_else(|panic| {
                Err(ConnectionProblem::DefaultPropertiesUnreadable {
                    path: dir.display().to_string(),
                    error: panic.to_string(),
                })
            }) {
                Ok(properties) => properties,
                Err(problem) => return Ok(Err(problem)),
            },
            Some(_) => {
                defaults_withheld = true;
                BTreeMap::new()
            }
            None => BTreeMap::new(),
        },
    };
    Ok(Ok(KafkaSettings { defaults_withheld, ..KafkaSettings::new(bootstrap_servers, properties) }))
}

async fn named_connection(
    client: &Client,
    reference: &ConnectionReference,
    namespace: &str,
    group_id: &str,
    defaults: &DefaultConnection,
) -> Result<Result<KafkaSettings, ConnectionProblem>, kube::Error> {
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
            if let Err(problem) = group_id_allowed(&connection, namespace, group_id) {
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

/// Whether a ConsumerGroup of `namespace` may manage `group_id` through a ClusterKafkaConnection
/// (its `spec.allowedGroupIds`). Pure.
pub fn group_id_allowed(
    connection: &ClusterKafkaConnection,
    namespace: &str,
    group_id: &str,
) -> Result<(), ConnectionProblem> {
    let rule = || format!("ClusterKafkaConnection {:?} (its spec.allowedGroupIds)", connection.name_any());
    group_id_policy(connection.spec.allowed_group_ids.as_deref(), rule, namespace, group_id)
}

/// Whether `group_id` matches one of `patterns` (None: no policy), `{namespace}` standing for
/// `namespace`; `rule` names where the patterns are set. Pure.
pub fn group_id_policy(
    patterns: Option<&[String]>,
    rule: impl FnOnce() -> String,
    namespace: &str,
    group_id: &str,
) -> Result<(), ConnectionProblem> {
    let Some(patterns) = patterns else { return Ok(()) };
    let allowed: Vec<String> = patterns.iter().map(|p| p.trim().replace("{namespace}", namespace)).collect();
    if allowed.iter().any(|pattern| wildcard_matches(pattern, group_id)) {
        return Ok(());
    }
    Err(ConnectionProblem::GroupIdNotAllowed {
        rule: rule(),
        namespace: namespace.to_string(),
        group_id: group_id.to_string(),
        allowed,
    })
}

/// Whether `text` matches `pattern`, in which `*` stands for any characters (none too) and every
/// other character for itself. Pure.
pub fn wildcard_matches(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let Some(mut rest) = text.strip_prefix(parts.next().unwrap_or_default()) else { return false };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else { return rest.is_empty() };
    // The leftmost match of each middle part leaves the most room for the rest.
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// A KafkaConnection's settings; its Secret, in its own namespace, must be labelled.
pub async fn namespaced_connection(
    client: &Client,
    connection: &KafkaConnection,
    defaults: &DefaultConnection,
) -> Result<Result<KafkaSettings, ConnectionProblem>, kube::Error> {
    let namespace = connection.namespace().unwrap_or_default();
    let mut properties = BTreeMap::new();
    if let Some(secret) = &connection.spec.client_properties_secret_ref {
        let read = SecretRead::Labelled { named_in: format!("KafkaConnection {:?}", connection.name_any()) };
        match secret_properties(client, secret, &namespace, read, defaults).await? {
            Ok(read) => properties = read,
            Err(problem) => return Ok(Err(problem)),
        }
    }
    Ok(Ok(KafkaSettings::new(connection.spec.bootstrap_servers.clone(), properties)))
}

/// A ClusterKafkaConnection's settings; its Secret lives in the operator's namespace.
pub async fn cluster_connection(
    client: &Client,
    connection: &ClusterKafkaConnection,
    defaults: &DefaultConnection,
) -> Result<Result<KafkaSettings, ConnectionProblem>, kube::Error> {
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
    Ok(Ok(KafkaSettings::new(connection.spec.bootstrap_servers.clone(), properties)))
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
    let tenant = matches!(read, SecretRead::Labelled { .. });
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
    if tenant {
        let keys = keys_not_allowed_for_tenants(&properties);
        if !keys.is_empty() {
            return Ok(Err(ConnectionProblem::PropertiesNotAllowed { name, named_in, keys }));
        }
    }
    Ok(Ok(properties))
}

impl KafkaSettings {
    fn new(bootstrap_servers: String, mut properties: BTreeMap<String, String>) -> KafkaSettings {
        properties.insert("bootstrap.servers".to_string(), bootstrap_servers.clone());
        KafkaSettings { bootstrap_servers, properties, defaults_withheld: false }
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
    fn a_cluster_connection_allows_the_group_ids_its_policy_matches() {
        let mut shared = cluster_connection(serde_json::json!({}));
        assert_eq!(group_id_allowed(&shared, "team-a", "anything"), Ok(()), "no policy: any group id");
        shared.spec.allowed_group_ids = Some(vec!["{namespace}.*".into(), "shared-audit".into()]);
        assert_eq!(group_id_allowed(&shared, "team-a", "team-a.orders"), Ok(()));
        assert_eq!(group_id_allowed(&shared, "team-b", "shared-audit"), Ok(()));
        let refused = group_id_allowed(&shared, "team-b", "team-a.orders").unwrap_err();
        assert_eq!(refused.reason(), "GroupIdNotAllowed");
        let message = refused.to_string();
        assert!(message.contains("\"team-b.*\"") && message.contains("\"team-a.orders\""), "{message}");
        assert!(group_id_allowed(&shared, "team-a", "team-a").is_err(), "the dot is part of the pattern");
        shared.spec.allowed_group_ids = Some(Vec::new());
        assert!(group_id_allowed(&shared, "team-a", "x").unwrap_err().to_string().contains("(none)"));
    }

    /// Every way of splitting `text` over the pattern's parts, the slow way.
    fn matches_naively(pattern: &[u8], text: &[u8]) -> bool {
        match pattern.split_first() {
            None => text.is_empty(),
            Some((b'*', rest)) => (0..=text.len()).any(|skip| matches_naively(rest, &text[skip..])),
            Some((c, rest)) => text.first() == Some(c) && matches_naively(rest, &text[1..]),
        }
    }

    proptest::proptest! {
        #[test]
        fn wildcards_match_as_the_slow_way_does(pattern in "[ab*]{0,8}", text in "[ab]{0,10}") {
            proptest::prop_assert_eq!(wildcard_matches(&pattern, &text), matches_naively(pattern.as_bytes(), text.as_bytes()));
        }
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
    fn every_reason_is_listed() {
        let (name, namespace, named_in) = (String::new(), String::new(), String::new());
        let kind = ConnectionKind::KafkaConnection;
        let problems = [
            ConnectionProblem::NoBootstrapServers,
            ConnectionProblem::SecretNotFound {
                name: name.clone(),
                namespace: namespace.clone(),
                named_in: named_in.clone(),
            },
            ConnectionProblem::SecretNotLabelled {
                name: name.clone(),
                namespace: namespace.clone(),
                named_in: named_in.clone(),
            },
            ConnectionProblem::NamespaceSecretsDisabled {
                name: name.clone(),
                namespace: namespace.clone(),
                named_in: named_in.clone(),
            },
            ConnectionProblem::SecretInvalid { name: name.clone(), key: String::new() },
            ConnectionProblem::PropertiesNotAllowed { name: name.clone(), named_in, keys: Vec::new() },
            ConnectionProblem::DefaultPropertiesUnreadable { path: String::new(), error: String::new() },
            ConnectionProblem::ConnectionNotFound { kind, name: name.clone() },
            ConnectionProblem::NamespaceNotAllowed {
                name: name.clone(),
                namespace: namespace.clone(),
                selector: String::new(),
            },
            ConnectionProblem::GroupIdNotAllowed {
                rule: name.clone(),
                namespace,
                group_id: String::new(),
                allowed: Vec::new(),
            },
            ConnectionProblem::SelectorInvalid { name: name.clone(), error: String::new() },
            ConnectionProblem::OperatorNamespaceUnknown { name },
        ];
        for problem in problems {
            assert!(ConnectionProblem::REASONS.contains(&problem.reason()), "{problem:?}");
        }
    }

    #[test]
    fn tenant_properties_are_sorted_for_their_lookup() {
        assert!(TENANT_PROPERTIES.windows(2).all(|w| w[0] < w[1]), "TENANT_PROPERTIES must stay sorted");
    }

    #[test]
    fn a_tenant_may_set_connection_settings_but_no_file_code_or_unknown_key() {
        let properties = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let connect = properties(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "app"),
            ("sasl.password", "s3cret"),
            ("ssl.ca.pem", "-----BEGIN CERTIFICATE-----"),
            ("ssl.ca.location", "probe"),
            ("client.id", "app"),
        ]);
        assert_eq!(keys_not_allowed_for_tenants(&connect), Vec::<String>::new());

        let hostile = properties(&[
            ("sasl.username", "app"),
            ("ssl.key.location", "/etc/kafka-client/platform.key"),
            ("ssl.ca.location", "/etc/kafka-client/ca.pem"),
            ("plugin.library.paths", "/tmp/evil.so"),
            ("sasl.kerberos.kinit.cmd", "sh -c id"),
            ("sasl.oauthbearer.token.endpoint.url", "https://elsewhere"),
            ("receive.message.max.bytes", "2147483647"),
            ("no.such.property", "unknown-value"),
        ]);
        assert_eq!(
            keys_not_allowed_for_tenants(&hostile),
            vec![
                "no.such.property",
                "plugin.library.paths",
                "receive.message.max.bytes",
                "sasl.kerberos.kinit.cmd",
                "sasl.oauthbearer.token.endpoint.url",
                "ssl.ca.location",
                "ssl.key.location",
            ]
        );
        let problem = ConnectionProblem::PropertiesNotAllowed {
            name: "team-auth".into(),
            named_in: "spec.kafka.clientPropertiesSecretRef".into(),
            keys: keys_not_allowed_for_tenants(&hostile),
        };
        assert_eq!(problem.reason(), "KafkaConfigInvalid");
        let message = problem.to_string();
        assert!(
            message.contains("\"plugin.library.paths\" (loads code") && message.contains("ssl.key.pem"),
            "{message}"
        );
        let misspelled = ConnectionProblem::PropertiesNotAllowed {
            name: "a".into(),
            named_in: "b".into(),
            keys: vec!["sasl.pasword".into()],
        };
        assert!(misspelled.to_string().contains("did you mean \"sasl.password\""), "{misspelled}");
        for value in hostile.values() {
            assert!(!message.contains(value.as_str()), "a value is echoed: {message}");
        }
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
