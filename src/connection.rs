//! The Kafka connection of a ConsumerGroup: bootstrap servers and librdkafka client properties,
//! from its Secret or the operator's defaults. Shared by both controllers (an OffsetReset goes
//! through its ConsumerGroup's connection); reads only, and every failure is a value that says
//! what to fix.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, ResourceExt};

use crate::crd::ConsumerGroup;

/// Why the Kafka connection could not even be configured; the message says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionProblem {
    #[error(
        "no Kafka bootstrap servers: set spec.kafka.bootstrapServers or start the operator with --default-bootstrap-servers"
    )]
    NoBootstrapServers,
    #[error(
        "Secret {0:?} named in spec.kafka.clientPropertiesSecretRef does not exist in this namespace; create it or fix the reference"
    )]
    SecretNotFound(String),
    #[error(
        "key {key:?} of Secret {name:?} is not UTF-8 text; librdkafka properties must be text (PEM for certificates)"
    )]
    SecretInvalid { name: String, key: String },
    /// The operator's `--default-client-properties-dir` could not be read.
    #[error(
        "the operator's default client properties in {path} cannot be read ({error}); fix the Secret mounted there (--default-client-properties-dir) or set spec.kafka.clientPropertiesSecretRef"
    )]
    DefaultPropertiesUnreadable { path: String, error: String },
}

/// The operator's own connection settings, used where a ConsumerGroup sets none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DefaultConnection {
    pub bootstrap_servers: Option<String>,
    /// A folder holding one file per librdkafka property (a mounted Secret), for ConsumerGroups
    /// without spec.kafka.clientPropertiesSecretRef.
    pub properties_dir: Option<PathBuf>,
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

/// Resolves bootstrap servers and client properties: the referenced Secret's, else the
/// operator's default properties folder (each field falls back on its own).
pub async fn connection(
    client: &Client,
    group: &ConsumerGroup,
    defaults: &DefaultConnection,
) -> Result<Result<Connection, ConnectionProblem>, kube::Error> {
    let Some(bootstrap_servers) = bootstrap_servers(group, defaults.bootstrap_servers.as_deref()) else {
        return Ok(Err(ConnectionProblem::NoBootstrapServers));
    };
    let mut properties = BTreeMap::new();
    let secret_ref = group.spec.kafka.as_ref().and_then(|k| k.client_properties_secret_ref.as_ref());
    if let (None, Some(dir)) = (secret_ref, &defaults.properties_dir) {
        match properties_from_dir(dir) {
            Ok(defaults) => properties = defaults,
            Err(problem) => return Ok(Err(problem)),
        }
    }
    if let Some(secret_ref) = secret_ref {
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

#[cfg(test)]
mod tests {
    use super::*;

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
