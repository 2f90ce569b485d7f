//! The `kafka.operators.dev/v1alpha1` API: ConsumerGroup, OffsetReset, KafkaConnection and
//! ClusterKafkaConnection.
//!
//! Types only: doc comments become `kubectl explain` text, and validation that the API server can
//! do (schema ranges, CEL rules) is declared here so bad objects are refused at `kubectl apply`.

// kube's derive takes repeated `printcolumn(type_ = ...)` attributes, which this lint mistakes for
// duplicates.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every resource of this operator.
pub const GROUP: &str = "kafka.operators.dev";

/// A Kafka consumer group run as a Kubernetes workload: the operator keeps the workload between
/// zero and the subscribed topics' partition count, scales it on lag, and reports the group.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kafka.operators.dev",
    version = "v1alpha1",
    kind = "ConsumerGroup",
    namespaced,
    status = "ConsumerGroupStatus",
    shortname = "kcg",
    shortname = "cg",
    category = "kafka",
    derive = "PartialEq",
    doc = "A Kafka consumer group run as a Kubernetes workload and scaled up to its topics' partition count.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Group", type_ = "string", json_path = ".spec.groupId"),
    printcolumn(name = "Topics", type_ = "string", json_path = ".spec.topics"),
    printcolumn(name = "Partitions", type_ = "integer", json_path = ".status.partitions"),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".status.replicas"),
    printcolumn(name = "Desired", type_ = "integer", json_path = ".status.desiredReplicas", priority = "1"),
    printcolumn(name = "Lag", type_ = "integer", json_path = ".status.lag.total"),
    printcolumn(name = "State", type_ = "string", json_path = ".status.groupState"),
    printcolumn(name = "Health", type_ = "string", json_path = ".status.lag.health", priority = "1"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        priority = "1"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(
    validation = Rule::new("has(self.template) != has(self.scaleTargetRef)")
        .message("exactly one of spec.template (the operator runs a Deployment) or spec.scaleTargetRef (the operator scales an existing workload) must be set")
        .reason(Reason::FieldValueRequired)
)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerGroupSpec {
    /// The Kafka consumer group id (`group.id`) the workload's consumers use. Immutable: to move a
    /// workload to another group, create a new ConsumerGroup (committed offsets belong to the id).
    #[x_kube(validation = Rule::new("self == oldSelf").message("groupId is immutable; delete and recreate the ConsumerGroup to use another group id"))]
    #[schemars(length(min = 1, max = 255))]
    pub group_id: String,

    /// Topics the group subscribes to (one or more). Replicas are capped at their total partition
    /// count: a consumer beyond that would get no partition and sit idle.
    #[schemars(length(min = 1, max = 100), extend("x-kubernetes-list-type" = "set"))]
    #[schemars(inner(regex(pattern = r"^[a-zA-Z0-9._-]{1,249}$")))]
    pub topics: Vec<String>,

    /// How to reach Kafka. Unset fields fall back to the operator's default connection
    /// (`--default-bootstrap-servers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaSettings>,

    /// Pod template of the consumer workload: the operator creates and owns a Deployment from it and
    /// injects KAFKA_BOOTSTRAP_SERVERS, KAFKA_GROUP_ID and KAFKA_TOPICS into every container.
    /// Exactly one of template and scaleTargetRef.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "pod_template_schema")]
    pub template: Option<PodTemplate>,

    /// An existing Deployment or StatefulSet (same namespace) whose replicas the operator drives
    /// through its scale subresource, touching nothing else. Exactly one of template and
    /// scaleTargetRef.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_target_ref: Option<ScaleTargetRef>,

    /// Requested number of consumers when lag autoscaling (spec.scaling) is off: set by hand,
    /// by GitOps, by `kubectl scale` or by a HorizontalPodAutoscaler through the scale subresource.
    /// Never applied above the partition count. Ignored while spec.scaling is set.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0))]
    pub replicas: i32,

    /// Lag-based autoscaling. When set, the operator computes replicas from consumer lag and
    /// spec.replicas is ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<ScalingSpec>,

    /// How a partition without a committed offset counts for lag, matching the consumers'
    /// `auto.offset.reset`: `latest` (nothing to read yet: lag 0) or `earliest` (everything retained
    /// is unread). Also injected into the workload as KAFKA_AUTO_OFFSET_RESET.
    #[serde(default)]
    pub auto_offset_reset: AutoOffsetReset,

    /// Freeze the workload's replicas: the operator keeps observing and reporting but changes no
    /// replica count while true.
    #[serde(default)]
    pub paused: bool,
}

fn default_replicas() -> i32 {
    1
}

/// How a ConsumerGroup reaches Kafka: a named connection, or inline settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(
    validation = Rule::new("!has(self.connectionRef) || (!has(self.bootstrapServers) && !has(self.clientPropertiesSecretRef))")
        .message("spec.kafka.connectionRef replaces bootstrapServers and clientPropertiesSecretRef: set either connectionRef or those fields, not both")
)]
#[serde(rename_all = "camelCase")]
pub struct KafkaSettings {
    /// A KafkaConnection in this namespace or a ClusterKafkaConnection that allows this namespace:
    /// connection settings defined once, by whoever may read their Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_ref: Option<ConnectionReference>,

    /// Comma-separated `host:port` list of bootstrap brokers. Defaults to the operator's
    /// `--default-bootstrap-servers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub bootstrap_servers: Option<String>,

    /// A Secret in the ConsumerGroup's namespace whose keys are librdkafka client properties
    /// (for example `security.protocol`, `sasl.mechanism`, `sasl.username`, `sasl.password`,
    /// `ssl.ca.pem`) used by the operator's own Kafka client for this group. The Secret must carry
    /// the label `kafka.operators.dev/client-properties: "true"`, so that only Secrets meant for
    /// this can be named; the operator reads no other. Its content is never logged or copied into
    /// status or Events. Unset: the operator's default properties
    /// (`--default-client-properties-dir`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_properties_secret_ref: Option<SecretReference>,
}

/// A named Kafka connection.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct ConnectionReference {
    /// KafkaConnection (in the ConsumerGroup's namespace) or ClusterKafkaConnection.
    pub kind: ConnectionKind,
    /// Name of the connection.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// The two kinds of named Kafka connection.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema)]
pub enum ConnectionKind {
    KafkaConnection,
    ClusterKafkaConnection,
}

impl ConnectionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionKind::KafkaConnection => "KafkaConnection",
            ConnectionKind::ClusterKafkaConnection => "ClusterKafkaConnection",
        }
    }
}

/// The label a Secret in a workload namespace must carry before the operator reads it as Kafka
/// client properties.
pub const CLIENT_PROPERTIES_LABEL: &str = "kafka.operators.dev/client-properties";

/// A reference to a Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct SecretReference {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A workload the operator scales but does not own.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleTargetRef {
    /// Kind of the workload.
    pub kind: ScaleTargetKind,
    /// Name of the workload in the ConsumerGroup's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Workload kinds with a scale subresource that the operator can drive.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ScaleTargetKind {
    Deployment,
    StatefulSet,
}

/// What a never-committed partition counts as, like the consumer's `auto.offset.reset`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AutoOffsetReset {
    /// The consumer would start at the log end: lag 0 until something is produced after it joins.
    #[default]
    Latest,
    /// The consumer would start at the log start: every retained message counts as lag.
    Earliest,
}

impl AutoOffsetReset {
    pub fn as_str(self) -> &'static str {
        match self {
            AutoOffsetReset::Latest => "latest",
            AutoOffsetReset::Earliest => "earliest",
        }
    }
}

/// Lag-based autoscaling settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("!has(self.maxReplicas) || self.minReplicas <= self.maxReplicas")
        .message("spec.scaling.minReplicas must be less than or equal to spec.scaling.maxReplicas")
)]
#[serde(rename_all = "camelCase")]
pub struct ScalingSpec {
    /// Fewest consumers to run. 0 allows scaling to zero when there is no lag.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 0))]
    pub min_replicas: i32,

    /// Most consumers to run. Defaults to, and is always capped at, the partition count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_replicas: Option<i32>,

    /// Target lag (messages) per consumer: desired replicas = ceil(total lag / lagThreshold).
    /// With targetDrainSeconds, used only until a per-replica rate is known.
    #[serde(default = "default_lag_threshold")]
    #[schemars(range(min = 1))]
    pub lag_threshold: i64,

    /// Time-to-drain mode: run as few consumers as keep the lag drainable within this many
    /// seconds, from measured rates: replicas = ceil((production rate + lag / targetDrainSeconds)
    /// / per-replica rate). The per-replica rate is learned from what the consumers commit while
    /// their partitions have lag (so it is their capacity, not the production rate they keep up
    /// with), or taken from expectedMessagesPerSecondPerReplica until then. Until either is known,
    /// lagThreshold decides. Unset: lagThreshold always decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub target_drain_seconds: Option<i32>,

    /// Messages per second one consumer can process, if known: the per-replica rate of
    /// targetDrainSeconds until one is measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub expected_messages_per_second_per_replica: Option<i64>,

    /// Total lag that must be exceeded to scale from zero to one consumer.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub activation_lag_threshold: i64,

    /// How long a lower replica count must be wanted before scaling down (no flapping).
    #[serde(default = "default_stabilization_seconds")]
    #[schemars(range(min = 0, max = 86400))]
    pub scale_down_stabilization_seconds: i32,

    /// Most consumers added in one step when scaling up. Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub scale_up_max_step: Option<i32>,

    /// How often lag is measured, in seconds.
    #[serde(default = "default_poll_interval_seconds")]
    #[schemars(range(min = 5, max = 3600))]
    pub poll_interval_seconds: i32,

    /// Round the replica count up to one that divides the partitions evenly (12 partitions:
    /// 5 becomes 6) when that stays within the bounds, so no consumer holds more partitions
    /// than another.
    #[serde(default)]
    pub even_partition_distribution: bool,

    /// Ignore for scaling the lag of a partition whose committed offset has not moved for this
    /// many polls while its lag grew (a stuck consumer: more replicas would not help). Unset: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 1000))]
    pub exclude_persistent_lag_after_polls: Option<i32>,
}

fn default_min_replicas() -> i32 {
    1
}
fn default_lag_threshold() -> i64 {
    100
}
fn default_stabilization_seconds() -> i32 {
    300
}
fn default_poll_interval_seconds() -> i32 {
    30
}

impl Default for ScalingSpec {
    fn default() -> Self {
        ScalingSpec {
            min_replicas: default_min_replicas(),
            max_replicas: None,
            lag_threshold: default_lag_threshold(),
            target_drain_seconds: None,
            expected_messages_per_second_per_replica: None,
            activation_lag_threshold: 0,
            scale_down_stabilization_seconds: default_stabilization_seconds(),
            scale_up_max_step: None,
            poll_interval_seconds: default_poll_interval_seconds(),
            even_partition_distribution: false,
            exclude_persistent_lag_after_polls: None,
        }
    }
}

/// Observed state of a ConsumerGroup.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerGroupStatus {
    /// The metadata.generation this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Total partitions of the subscribed topics: the replica cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<i32>,

    /// Partition count of each subscribed topic, as last read from Kafka.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<TopicStatus>,

    /// Replicas of the workload as last set or observed (the scale subresource's current count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,

    /// Replicas the operator wants, after every bound (min, max, partition cap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,

    /// Label selector of the workload's pods, for the scale subresource (HPA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,

    /// Group state reported by Kafka. Classic protocol: Empty, Stable, PreparingRebalance,
    /// CompletingRebalance, Dead; KIP-848 `consumer` protocol: Empty, Assigning, Reconciling,
    /// Stable, Dead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_state: Option<String>,

    /// Members currently in the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_count: Option<i32>,

    /// Members and their assignments (at most 50 are listed; memberCount has the total).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberStatus>,

    /// Consumer lag, as last measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<LagStatus>,

    /// When the operator last changed the workload's replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,

    /// Lag autoscaling: which rule chose the replicas and from which rates. Refreshed with the lag
    /// figures, and whenever the desired replica count changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingStatus>,

    /// Ready, KafkaReachable, ReplicasCapped, ... (Kubernetes condition conventions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// How lag autoscaling chose the replicas. Rates are messages per second, as decimal text.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingStatus {
    /// TimeToDrain, or LagThreshold (also while time-to-drain waits for a per-replica rate).
    pub rule: String,
    /// Why the workload runs the replicas it runs, in one line.
    pub reason: String,
    /// Messages written to the subscribed partitions per second (log-end growth over the kept polls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub production_rate: Option<String>,
    /// Messages committed by the group per second over the same polls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumption_rate: Option<String>,
    /// Messages one consumer processes per second, as learned (or expected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_replica_rate: Option<String>,
    /// At the measured rates, seconds until the lag is consumed (absent while lag does not shrink).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds_to_drain: Option<i64>,
}

/// Partition count of one topic.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct TopicStatus {
    /// Topic name.
    pub name: String,
    /// Partitions of the topic.
    pub partitions: i32,
}

/// One member of the consumer group.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// Client id of the consumer.
    pub client_id: String,
    /// Host the consumer connects from.
    pub host: String,
    /// Assigned partitions by topic.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub assignment: BTreeMap<String, Vec<i32>>,
    /// Assigned partitions left out of `assignment` to keep the status small (see
    /// `kubectl consumergroup describe` or Kafka's tool for all of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unlisted_partitions: Option<i32>,
}

/// Longest client id or host kept in status: a Kafka client chooses its own, of any length.
pub const MAX_TEXT_IN_STATUS: usize = 255;

/// Longest condition or status message: messages quote what Kafka answered, which a broker
/// chooses.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// Assigned partitions listed in one status, over all its members: whatever a broker reports,
/// a status stays far below etcd's 1.5 MiB object limit.
pub const MAX_PARTITIONS_IN_STATUS: usize = 1000;

/// `text` cut to at most `max` bytes at a character boundary, marked with an ellipsis when cut.
pub fn bounded_text(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

impl MemberStatus {
    /// A member as status lists it: client id and host bounded, and as many of its partitions
    /// (sorted by topic and partition) as `partitions_left` still allows.
    pub fn bounded(
        client_id: &str,
        host: &str,
        partitions: &[(&str, i32)],
        partitions_left: &mut usize,
    ) -> MemberStatus {
        let mut sorted = partitions.to_vec();
        sorted.sort_unstable();
        let listed = sorted.len().min(*partitions_left);
        *partitions_left -= listed;
        let mut assignment = BTreeMap::<String, Vec<i32>>::new();
        for (topic, partition) in &sorted[..listed] {
            assignment.entry((*topic).to_string()).or_default().push(*partition);
        }
        let unlisted = sorted.len() - listed;
        MemberStatus {
            client_id: bounded_text(client_id, MAX_TEXT_IN_STATUS),
            host: bounded_text(host, MAX_TEXT_IN_STATUS),
            assignment,
            unlisted_partitions: (unlisted > 0).then_some(unlisted as i32),
        }
    }
}

/// Consumer lag summary.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LagStatus {
    /// Sum of the lag of every partition, in messages.
    pub total: i64,
    /// Largest lag of a single partition.
    pub max_partition_lag: i64,
    /// When these figures were measured. Status refreshes them when they change, at most every
    /// --status-lag-interval-seconds (60 by default) unless the health verdict changes or lag
    /// reaches or leaves zero; /metrics has every poll's figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_at: Option<Time>,
    /// Per-partition lag: every partition up to 100, else the 100 with the most lag.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<PartitionLag>,
    /// Partitions left out of `partitions` because of the bound.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub partitions_omitted: i32,
    /// Age in seconds of the oldest unconsumed message over all partitions, interpolated from
    /// the log-end offsets the operator has seen (precise to about one poll interval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lag_seconds: Option<i64>,
    /// Health over the last 10 polls, Burrow style: OK, WARN (lag keeps growing), REWIND (the
    /// committed offset went back), STALL (commits stuck with lag while members are there), STOP
    /// (no progress while producers go on, or lag and no members). The worst partition decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// Partitions whose lag is left out of scaling because their committed offset has not moved for
    /// spec.scaling.excludePersistentLagAfterPolls polls while their lag grew (`topic/partition`;
    /// at most 100 are named, `excludedCount` says how many there are). Never applied to a group
    /// without members.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub excluded_partitions: Vec<String>,
    /// How many partitions are excluded from scaling in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excluded_count: Option<i32>,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// Lag of one partition.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    /// The group's committed offset; absent when the group never committed on this partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed_offset: Option<i64>,
    /// The partition's log-end offset.
    pub log_end_offset: i64,
    /// Messages between the committed offset and the log end.
    pub lag: i64,
    /// Age in seconds of the oldest unconsumed message of this partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<i64>,
}

/// `spec.template` as written. It is read as a PodTemplateSpec only when the Deployment is built:
/// the schema checks just the essentials, so a template can carry a field of the wrong type, and
/// one object the operator cannot decode would fail the watch of every ConsumerGroup; read here,
/// it fails its own ConsumerGroup with a condition naming the field.
///
/// Kept as its JSON text: the cache holds every ConsumerGroup, and a template decoded into a
/// `serde_json::Value` costs a map node of about 600 bytes per object in it (a minimal template
/// has three, a real one dozens), where the text costs its length. Decoded through a `Value`:
/// a raw value cannot be read from serde's buffer (a watch event whose type comes after its
/// object), and one undecodable object would stop the watch of every ConsumerGroup.
#[derive(Serialize, Clone, Debug)]
#[serde(transparent)]
pub struct PodTemplate(Box<serde_json::value::RawValue>);

impl<'de> Deserialize<'de> for PodTemplate {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<PodTemplate, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        serde_json::value::to_raw_value(&value).map(PodTemplate).map_err(serde::de::Error::custom)
    }
}

impl PartialEq for PodTemplate {
    fn eq(&self, other: &PodTemplate) -> bool {
        self.0.get() == other.0.get()
    }
}

impl PodTemplate {
    #[cfg(test)]
    fn new(template: &serde_json::Value) -> PodTemplate {
        serde_json::from_value(template.clone()).expect("a JSON value")
    }

    /// The template as a PodTemplateSpec, or which field is not valid and why.
    pub fn parse(&self) -> Result<PodTemplateSpec, String> {
        // Through a Value, so that errors name the field without the text's line and column.
        let value: serde_json::Value =
            serde_json::from_str(self.0.get()).map_err(|error| format!("spec.template: {error}"))?;
        serde_path_to_error::deserialize(&value).map_err(|error| {
            let path = error.path().to_string();
            let inner = error.into_inner();
            if path == "." { format!("spec.template: {inner}") } else { format!("spec.template.{path}: {inner}") }
        })
    }
}

/// Schema of `spec.template`: the essentials of a PodTemplateSpec, checked at apply time (at least
/// one container, each with a name and an image), the rest preserved as written. The full
/// PodTemplateSpec schema would make the CRD several hundred KiB, past what client-side
/// `kubectl apply` and many GitOps tools can store in an annotation.
fn pod_template_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "Pod template of the consumer workload (a core/v1 PodTemplateSpec).",
        "type": "object",
        "properties": {
            "metadata": {
                "type": "object",
                "properties": {
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "annotations": {"type": "object", "additionalProperties": {"type": "string"}}
                },
                "x-kubernetes-preserve-unknown-fields": true
            },
            "spec": {
                "type": "object",
                "required": ["containers"],
                "properties": {
                    "containers": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["name", "image"],
                            "properties": {
                                "name": {"type": "string", "minLength": 1},
                                "image": {"type": "string", "minLength": 1}
                            },
                            "x-kubernetes-preserve-unknown-fields": true
                        }
                    }
                },
                "x-kubernetes-preserve-unknown-fields": true
            }
        },
        "required": ["spec"]
    })
}

/// A one-shot change of a ConsumerGroup's committed offsets (a reset or a seek), planned,
/// optionally reviewed, and executed safely: the workload is stopped, Kafka must report the group
/// Empty, the plan stored in status is committed and verified, and the workload is restarted.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kafka.operators.dev",
    version = "v1alpha1",
    kind = "OffsetReset",
    namespaced,
    status = "OffsetResetStatus",
    shortname = "or",
    shortname = "kor",
    category = "kafka",
    derive = "PartialEq",
    doc = "A one-shot reset or seek of a ConsumerGroup's committed offsets, planned before anything changes.",
    printcolumn(name = "ConsumerGroup", type_ = "string", json_path = ".spec.consumerGroup"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Partitions", type_ = "integer", json_path = ".status.partitionCount"),
    printcolumn(name = "Message", type_ = "string", json_path = ".status.message", priority = "1"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(
    validation = Rule::new("oldSelf.mode != 'Execute' || self == oldSelf")
        .message("an OffsetReset in Execute mode cannot be changed (nor set back to DryRun): it may be stopping consumers or committing offsets; create a new OffsetReset")
)]
#[serde(rename_all = "camelCase")]
pub struct OffsetResetSpec {
    /// Name of the ConsumerGroup (same namespace) whose offsets change. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("consumerGroup is immutable; create a new OffsetReset"))]
    #[schemars(length(min = 1, max = 253))]
    pub consumer_group: String,

    /// Where to move the offsets. Immutable: a changed target is a new OffsetReset.
    #[x_kube(validation = Rule::new("self == oldSelf").message("target is immutable; create a new OffsetReset"))]
    pub target: ResetTarget,

    /// Which partitions: every partition of the listed topics (optionally only some partitions).
    /// Unset: every partition of the ConsumerGroup's topics.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub topics: Vec<TopicScope>,

    /// DryRun computes and shows the plan and changes nothing; Execute stops the consumers, commits
    /// the plan and restarts them. Change a DryRun to Execute to approve it.
    #[serde(default)]
    pub mode: ResetMode,

    /// How long to wait for the group to become Empty after its workload is scaled to zero; Kafka
    /// errors while executing count toward the same limit. Past it the reset fails and the
    /// workload resumes.
    #[serde(default = "default_quiesce_timeout")]
    #[schemars(range(min = 1, max = 3600))]
    pub quiesce_timeout_seconds: i32,

    /// The consumers' `session.timeout.ms`, in seconds (Kafka's default: 45). Once the workload has
    /// no pods left, members still in the group after this long are consumers outside the
    /// workload (a stopped pod's member is gone by then): the reset fails at once naming them,
    /// instead of holding the workload at zero until quiesceTimeoutSeconds.
    #[serde(default = "default_session_timeout")]
    #[schemars(range(min = 1, max = 1800))]
    pub session_timeout_seconds: i32,
}

fn default_session_timeout() -> i32 {
    45
}

fn default_quiesce_timeout() -> i32 {
    300
}

/// Exactly one way to choose the new offsets (the scenarios of `kafka-consumer-groups
/// --reset-offsets`, plus explicit seeks, deletion and rollback).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(
    validation = Rule::new("[has(self.toEarliest), has(self.toLatest), has(self.toCurrent), has(self.toDatetime), has(self.byDuration), has(self.shiftBy), has(self.toOffset), has(self.offsets), has(self.deleteOffsets), has(self.rollbackOf)].filter(x, x).size() == 1")
        .message("target must set exactly one of toEarliest, toLatest, toCurrent, toDatetime, byDuration, shiftBy, toOffset, offsets, deleteOffsets, rollbackOf")
)]
#[serde(rename_all = "camelCase")]
pub struct ResetTarget {
    /// Move to the log start offset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self").message("set toEarliest to true, or leave it out"))]
    pub to_earliest: Option<bool>,
    /// Move to the log end offset (skip everything not yet consumed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self").message("set toLatest to true, or leave it out"))]
    pub to_latest: Option<bool>,
    /// Keep the committed offsets (a partition without one goes to the log end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self").message("set toCurrent to true, or leave it out"))]
    pub to_current: Option<bool>,
    /// Move to the first offset whose timestamp is at or after this RFC 3339 time (the log end
    /// where no message is that recent).
    /// Impossible dates and times (February 30th, 25:61) are refused at apply: CEL's timestamp()
    /// fails on them, naming the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}([.][0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$') && timestamp(self) >= timestamp('0001-01-01T00:00:00Z')").message("toDatetime must be an RFC 3339 time such as 2026-11-20T08:00:00Z"))]
    pub to_datetime: Option<String>,
    /// Move back by an ISO-8601 duration from now (PT30M, P1DT2H), like toDatetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^P([0-9]+D)?(T([0-9]+H)?([0-9]+M)?([0-9]+([.][0-9]+)?S)?)?$') && self != 'P' && self != 'PT'").message("byDuration must be an ISO-8601 duration such as PT30M or P1DT2H"))]
    pub by_duration: Option<String>,
    /// Move each committed offset by this many messages (negative: replay), clamped to the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shift_by: Option<i64>,
    /// Move to this offset on every partition in scope, clamped to the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub to_offset: Option<i64>,
    /// Seek: explicit offsets per partition, clamped to the log (`--from-file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 10000))]
    pub offsets: Option<Vec<PartitionOffset>>,
    /// Delete the group's committed offsets of the partitions in scope (`--delete-offsets`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self").message("set deleteOffsets to true, or leave it out"))]
    pub delete_offsets: Option<bool>,
    /// Undo an executed OffsetReset (same namespace): put back the offsets it replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub rollback_of: Option<String>,
}

/// One explicit offset.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct PartitionOffset {
    /// Topic name.
    #[schemars(length(min = 1, max = 249))]
    pub topic: String,
    /// Partition number.
    #[schemars(range(min = 0))]
    pub partition: i32,
    /// Offset to commit (clamped to the log).
    #[schemars(range(min = 0))]
    pub offset: i64,
}

/// Topics (and optionally partitions) a reset applies to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct TopicScope {
    /// Topic name.
    #[schemars(length(min = 1, max = 249))]
    pub name: String,
    /// Only these partitions of the topic. Unset: all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<i32>,
}

/// DryRun (plan only) or Execute.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ResetMode {
    #[default]
    DryRun,
    Execute,
}

/// Progress of an OffsetReset; each phase is recorded before the next step starts, so a
/// restarted operator continues where it stopped.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ResetPhase {
    /// Waiting for another reset of the same ConsumerGroup to finish.
    Pending,
    /// DryRun: the plan is in status; nothing changed.
    Planned,
    /// The workload is being stopped; waiting for Kafka to report the group Empty.
    Quiescing,
    /// The plan is final and stored; committing and verifying it.
    Committing,
    /// Committed and verified; the workload resumed.
    Succeeded,
    /// Stopped without changing offsets (or verification failed); the workload resumed.
    Failed,
}

impl ResetPhase {
    /// Phases during which the ConsumerGroup's workload is held at zero.
    pub fn holds_workload(self) -> bool {
        matches!(self, ResetPhase::Quiescing | ResetPhase::Committing)
    }
}

/// One partition of a plan.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlannedOffset {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
    /// The committed offset before the reset (absent: none committed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_offset: Option<i64>,
    /// The offset to commit (absent: the committed offset is deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_offset: Option<i64>,
    /// new - current, where both exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<i64>,
}

/// Observed state of an OffsetReset.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OffsetResetStatus {
    /// The metadata.generation this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pending, Planned, Quiescing, Committing, Succeeded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ResetPhase>,
    /// What is happening or went wrong, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The plan: for a DryRun, a preview on the live group; once Committing, the final plan
    /// resolved after the group stopped, which is what gets committed (never re-resolved). The
    /// current offsets it lists are what a rollback restores.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plan: Vec<PlannedOffset>,
    /// Partitions in the plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_count: Option<i32>,
    /// Replicas of the workload when the reset started; the ConsumerGroup returns to its own
    /// desired count when the reset ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_replicas: Option<i32>,
    /// When execution started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the reset succeeded or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// Members of the group when the plan was made (a DryRun shows who an Execute would have to
    /// stop; members outside the workload make an Execute fail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_count: Option<i32>,
    /// Up to 50 of those members.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub members: Vec<MemberStatus>,
    /// Since when the workload has had no pods while the group still had members (Quiescing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_gone_at: Option<Time>,
    /// Since when Kafka has been failing during execution; errors count toward
    /// quiesceTimeoutSeconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<Time>,
}

/// Kafka connection settings defined once in a namespace and named by its ConsumerGroups
/// (`spec.kafka.connectionRef`); whoever may create one may name a Secret of this namespace.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "kafka.operators.dev",
    version = "v1alpha1",
    kind = "KafkaConnection",
    namespaced,
    status = "KafkaConnectionStatus",
    shortname = "kc",
    category = "kafka",
    derive = "PartialEq",
    doc = "Kafka connection settings (bootstrap servers, client-properties Secret) shared by the ConsumerGroups of one namespace.",
    printcolumn(name = "Bootstrap", type_ = "string", json_path = ".spec.bootstrapServers"),
    printcolumn(
        name = "Reachable",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Reachable\")].status"
    ),
    printcolumn(name = "Brokers", type_ = "integer", json_path = ".status.brokers"),
    printcolumn(name = "Metadata Version", type_ = "string", json_path = ".status.metadataVersion", priority = "1"),
    printcolumn(name = "Groups", type_ = "integer", json_path = ".status.consumerGroupCount"),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Reachable\")].message",
        priority = "1"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct KafkaConnectionSpec {
    /// Comma-separated `host:port` list of bootstrap brokers.
    #[schemars(length(min = 1))]
    pub bootstrap_servers: String,

    /// A Secret in this namespace whose keys are librdkafka client properties
    /// (`security.protocol`, `sasl.mechanism`, `sasl.username`, `sasl.password`, `ssl.ca.pem`, ...).
    /// Like an inline one, it must carry the label `kafka.operators.dev/client-properties: "true"`.
    /// Never logged or copied into status or Events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_properties_secret_ref: Option<SecretReference>,
}

/// Kafka connection settings for the whole cluster, owned by the platform team: its Secret lives
/// in the operator's own namespace, and its namespace selector says which namespaces' ConsumerGroups
/// may use it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "kafka.operators.dev",
    version = "v1alpha1",
    kind = "ClusterKafkaConnection",
    status = "KafkaConnectionStatus",
    shortname = "ckc",
    category = "kafka",
    derive = "PartialEq",
    doc = "Kafka connection settings defined once for the cluster, usable by ConsumerGroups of the namespaces it selects.",
    printcolumn(name = "Bootstrap", type_ = "string", json_path = ".spec.bootstrapServers"),
    printcolumn(
        name = "Reachable",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Reachable\")].status"
    ),
    printcolumn(name = "Brokers", type_ = "integer", json_path = ".status.brokers"),
    printcolumn(name = "Metadata Version", type_ = "string", json_path = ".status.metadataVersion", priority = "1"),
    printcolumn(name = "Groups", type_ = "integer", json_path = ".status.consumerGroupCount"),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Reachable\")].message",
        priority = "1"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterKafkaConnectionSpec {
    /// Comma-separated `host:port` list of bootstrap brokers.
    #[schemars(length(min = 1))]
    pub bootstrap_servers: String,

    /// A Secret in the operator's own namespace whose keys are librdkafka client properties. Only
    /// the platform team, who may create cluster-scoped objects, names it: no label is needed.
    /// Never logged or copied into status or Events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_properties_secret_ref: Option<SecretReference>,

    /// Namespaces whose ConsumerGroups may use this connection, by their labels. `{}` selects
    /// every namespace; `matchLabels: {kubernetes.io/metadata.name: team-a}` selects one.
    pub namespace_selector: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,

    /// Group ids the ConsumerGroups of a namespace may manage through this connection, as Kafka's
    /// prefixed group ACLs allow them to clients: `{namespace}` stands for the ConsumerGroup's
    /// namespace and `*` for any characters (`{namespace}.*`: ids that start with the namespace
    /// and a dot). A ConsumerGroup whose groupId matches none is refused (`GroupIdNotAllowed`):
    /// nothing is read, run or reset for it. Unset: any group id; empty: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(inner(length(min = 1, max = 255)))]
    pub allowed_group_ids: Option<Vec<String>>,
}

/// Observed state of a KafkaConnection or ClusterKafkaConnection.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaConnectionStatus {
    /// The metadata.generation this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Brokers in the cluster's metadata, as last read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brokers: Option<i32>,
    /// The cluster's finalized `metadata.version` as Kafka names it (e.g. `4.1-IV1`; what
    /// `kafka-features.sh describe` shows): the release level every broker has been raised to.
    /// Kafka's protocol does not tell the brokers' software version; it is at least this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_version: Option<String>,
    /// Group protocols the cluster serves: `classic`, and `consumer` (KIP-848), `share` (KIP-932)
    /// and `streams` (KIP-1071) when their features (`group.version`, `share.version`,
    /// `streams.version`) are finalized at 1 or more.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_protocols: Vec<String>,
    /// ConsumerGroups naming this connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_group_count: Option<i32>,
    /// Up to 100 of them (`namespace/name` for a ClusterKafkaConnection).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub consumer_groups: Vec<String>,
    /// Reachable: the operator connected with these settings on its last check.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// Every CRD of the operator, in the order `consumer-group-operator crd` prints them.
pub fn all_crds() -> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> {
    vec![ConsumerGroup::crd(), OffsetReset::crd(), KafkaConnection::crd(), ClusterKafkaConnection::crd()]
}

/// All CRDs as one multi-document YAML stream.
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in all_crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn bounded_text_is_a_marked_prefix_within_the_bound(text in "\\PC{0,80}", max in 4usize..64) {
            let bounded = bounded_text(&text, max);
            prop_assert!(bounded.len() <= max.max(text.len().min(max)));
            if text.len() <= max {
                prop_assert_eq!(&bounded, &text);
            } else {
                let kept = bounded.strip_suffix('…').expect("marked as cut");
                prop_assert!(text.starts_with(kept));
            }
        }
    }

    #[test]
    fn a_member_in_status_is_bounded_whatever_kafka_reports() {
        let long = "c".repeat(10_000);
        let partitions: Vec<(&str, i32)> = (0..1500).rev().map(|p| ("t", p)).collect();
        let mut left = MAX_PARTITIONS_IN_STATUS;
        let first = MemberStatus::bounded(&long, "/10.0.0.1", &partitions, &mut left);
        assert_eq!(first.client_id.len(), MAX_TEXT_IN_STATUS);
        assert_eq!(first.host, "/10.0.0.1");
        assert_eq!(first.assignment["t"], (0..1000).collect::<Vec<i32>>(), "the lowest partitions, sorted");
        assert_eq!(first.unlisted_partitions, Some(500));
        let second = MemberStatus::bounded("c2", "h", &[("t", 1)], &mut left);
        assert!(second.assignment.is_empty());
        assert_eq!(second.unlisted_partitions, Some(1), "the budget is shared by the members of one status");
        let small = MemberStatus::bounded("c3", "h", &[("t", 1)], &mut 10);
        assert_eq!((small.assignment["t"].clone(), small.unlisted_partitions), (vec![1], None));
    }

    #[test]
    fn a_template_field_of_the_wrong_type_is_named() {
        let template = PodTemplate::new(&serde_json::json!({"spec": {"containers": [
            {"name": "c", "image": "i", "ports": [{"containerPort": "http"}]}
        ]}}));
        let error = template.parse().unwrap_err();
        assert!(error.starts_with("spec.template.spec.containers[0].ports[0].containerPort: invalid type"), "{error}");
        let template = PodTemplate::new(&serde_json::json!({"spec": {"containers": [{"name": "c", "image": "i"}]}}));
        assert_eq!(template.parse().unwrap().spec.unwrap().containers[0].image.as_deref(), Some("i"));
    }

    #[test]
    fn a_template_is_kept_as_written_however_the_object_arrives() {
        let object = serde_json::json!({
            "apiVersion": "kafka.operators.dev/v1alpha1", "kind": "ConsumerGroup",
            "metadata": {"name": "g", "namespace": "n"},
            "spec": {"groupId": "g", "topics": ["t"], "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}
        });
        let template = |group: ConsumerGroup| group.spec.template.expect("a template").0.get().to_string();
        let written = r#"{"spec":{"containers":[{"image":"i","name":"c"}]}}"#;
        // A list, a watch event with its type first (as the apiserver sends it) or last (decoded
        // through serde's buffer), and a value.
        let list: kube::core::ObjectList<ConsumerGroup> =
            serde_json::from_value(serde_json::json!({"metadata": {}, "items": [object.clone()]})).unwrap();
        assert_eq!(template(list.items.into_iter().next().unwrap()), written);
        for event in
            [format!(r#"{{"type":"ADDED","object":{object}}}"#), format!(r#"{{"object":{object},"type":"ADDED"}}"#)]
        {
            match serde_json::from_str::<kube::core::WatchEvent<ConsumerGroup>>(&event).unwrap() {
                kube::core::WatchEvent::Added(group) => assert_eq!(template(group), written),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(template(serde_json::from_value(object).unwrap()), written);
    }
}
