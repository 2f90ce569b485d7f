//! All Kafka I/O of the operator. rdkafka's safe API where it has the call (metadata, topic
//! admin, consumers), and a small safe wrapper over `rdkafka-sys` (`ffi`, the only `unsafe` code)
//! for the consumer-group and ListOffsets admin calls it lacks. Every call is batched: one request
//! per call (librdkafka splits it per broker where the protocol needs it), never one per partition.
//!
//! Group reads (descriptions, committed offsets, the cluster's feature levels) have two possible
//! clients: the batched reader ([`protocol`]), or librdkafka where the reader cannot honour the
//! connection's settings (GSSAPI so far). The choice is made once per connection, when its
//! [`KafkaClient`] is created; callers see one interface ([`KafkaClient::describe_groups`],
//! [`KafkaClient::committed_by_topic`], [`KafkaClient::cluster_features`]) and learn only why
//! reads are unbatched ([`KafkaClient::unbatched_reason`]), to report it.

mod cache;
mod ffi;
pub mod log_offsets;
pub mod markers;
pub mod observer;
pub mod protocol;
pub mod stats;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};

pub use cache::ClientCache;
use stats::{RequestCounting, RequestCounts};

/// A partition of a topic.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// Which offset ListOffsets returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start offset.
    Earliest,
    /// The log end offset (with read_committed: the last stable offset).
    Latest,
    /// The first offset whose record timestamp is >= this (milliseconds since the epoch).
    Timestamp(i64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IsolationLevel {
    ReadUncommitted,
    ReadCommitted,
}

/// A ListOffsets answer. `offset` is None when a timestamp lookup found no record at or after
/// the timestamp (Kafka answers -1; callers fall back to the log end, as Kafka's tool does).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListedOffset {
    pub offset: Option<i64>,
    pub timestamp: Option<i64>,
}

/// Group state as Kafka reports it: the classic protocol's states, and the `consumer` protocol's
/// (KIP-848) `Assigning` and `Reconciling`, where the broker computes a new assignment and the
/// members converge on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GroupState {
    Unknown,
    PreparingRebalance,
    CompletingRebalance,
    Assigning,
    Reconciling,
    Stable,
    Dead,
    Empty,
}

impl GroupState {
    /// Kafka's own name of the state (as `kafka-consumer-groups --describe --state` prints it).
    pub fn as_str(self) -> &'static str {
        match self {
            GroupState::Unknown => "Unknown",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Assigning => "Assigning",
            GroupState::Reconciling => "Reconciling",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
            GroupState::Empty => "Empty",
        }
    }

    /// Offsets may be changed from outside only in these states.
    pub fn is_inactive(self) -> bool {
        matches!(self, GroupState::Empty | GroupState::Dead)
    }
}

impl GroupState {
    /// Kafka's state names, as group listings carry them.
    pub fn parse(state: &str) -> GroupState {
        match state {
            "PreparingRebalance" => GroupState::PreparingRebalance,
            "CompletingRebalance" | "AwaitingSync" => GroupState::CompletingRebalance,
            "Assigning" => GroupState::Assigning,
            "Reconciling" => GroupState::Reconciling,
            "Stable" => GroupState::Stable,
            "Dead" => GroupState::Dead,
            "Empty" => GroupState::Empty,
            _ => GroupState::Unknown,
        }
    }
}

/// The partitions of a consumer-protocol member assignment (ConsumerProtocolAssignment: int16
/// version, then [topic string, [int32 partition]]; the user data after it is ignored). A
/// malformed assignment, or one beyond what is left of the group's budget, is refused saying why.
pub fn parse_assignment(bytes: &[u8], budget: &mut AssignmentBudget) -> Result<Vec<TopicPartition>, String> {
    fn take<const N: usize>(bytes: &[u8], at: &mut usize) -> Result<[u8; N], String> {
        let slice =
            bytes.get(*at..*at + N).ok_or_else(|| format!("it is cut short at byte {at} of {}", bytes.len()))?;
        *at += N;
        Ok(slice.try_into().expect("N bytes"))
    }
    if bytes.is_empty() {
        // A member that has not received its assignment yet.
        return Ok(Vec::new());
    }
    let mut at = 0;
    let mut partitions = Vec::new();
    take::<2>(bytes, &mut at)?;
    let topics = i32::from_be_bytes(take::<4>(bytes, &mut at)?);
    for _ in 0..topics.max(0) {
        let length = i16::from_be_bytes(take::<2>(bytes, &mut at)?).max(0) as usize;
        let name =
            bytes.get(at..at + length).ok_or_else(|| format!("it is cut short inside a topic name at byte {at}"))?;
        at += length;
        let topic = budget.topic_name(name)?;
        let count = i32::from_be_bytes(take::<4>(bytes, &mut at)?).max(0) as usize;
        // Each partition takes 4 bytes: a count beyond what is left cannot be real.
        if count > (bytes.len() - at) / 4 {
            return Err(format!("it declares {count} partitions of a topic but has {} bytes left", bytes.len() - at));
        }
        budget.take(count)?;
        for _ in 0..count {
            let partition = i32::from_be_bytes(take::<4>(bytes, &mut at)?);
            partitions.push(TopicPartition { topic: topic.clone(), partition });
        }
    }
    Ok(partitions)
}

/// Kafka's longest topic name (`Topic.MAX_NAME_LENGTH`).
pub const MAX_TOPIC_NAME_LENGTH: usize = 249;

/// The most assigned partitions decoded for the members of one group together: a group with
/// more is described as unreadable, so an answer of a broker a tenant named (or a broken one)
/// costs a bounded amount of memory on every poll.
pub const MAX_ASSIGNED_PARTITIONS_PER_GROUP: usize = 50_000;

/// What is left of one group's [`MAX_ASSIGNED_PARTITIONS_PER_GROUP`] while its members'
/// assignments are decoded, and the checks every decoded topic name passes.
#[derive(Debug)]
pub struct AssignmentBudget {
    partitions_left: usize,
}

impl Default for AssignmentBudget {
    fn default() -> Self {
        AssignmentBudget { partitions_left: MAX_ASSIGNED_PARTITIONS_PER_GROUP }
    }
}

impl AssignmentBudget {
    /// Takes `count` partitions from the budget, or says that the group has too many.
    pub fn take(&mut self, count: usize) -> Result<(), String> {
        self.partitions_left = self.partitions_left.checked_sub(count).ok_or_else(|| {
            format!(
                "the group's members are assigned more than {MAX_ASSIGNED_PARTITIONS_PER_GROUP} partitions, more than the operator decodes for one group"
            )
        })?;
        Ok(())
    }

    /// A topic name as Kafka allows it: at most [`MAX_TOPIC_NAME_LENGTH`] bytes of UTF-8.
    pub fn topic_name(&self, name: &[u8]) -> Result<String, String> {
        if name.len() > MAX_TOPIC_NAME_LENGTH {
            return Err(format!(
                "it names a topic of {} bytes; Kafka's topic names have at most {MAX_TOPIC_NAME_LENGTH}",
                name.len()
            ));
        }
        String::from_utf8(name.to_vec()).map_err(|_| "it names a topic that is not UTF-8".to_string())
    }
}

/// The members of one group with their assignments decoded within one [`AssignmentBudget`], or
/// what was wrong with them (naming the member by its place, never by a text the broker chose).
pub fn describe_members<M>(
    group_id: &str,
    members: &[M],
    mut describe: impl FnMut(&M, &mut AssignmentBudget) -> Result<MemberDescription, String>,
) -> Result<Vec<MemberDescription>, KafkaError> {
    let mut budget = AssignmentBudget::default();
    members
        .iter()
        .enumerate()
        .map(|(i, member)| {
            describe(member, &mut budget).map_err(|why| {
                KafkaError::Request(format!(
                    "the assignment of member {} of {} of group {group_id} was not decoded: {why}",
                    i + 1,
                    members.len()
                ))
            })
        })
        .collect()
}

impl fmt::Display for GroupState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    pub state: GroupState,
    pub is_simple: bool,
}

/// The rebalance protocol of a group (Kafka 4's `group.protocol`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GroupProtocol {
    /// JoinGroup/SyncGroup, described by DescribeGroups (also groups with offsets and no members).
    Classic,
    /// KIP-848: the broker assigns partitions; described by ConsumerGroupDescribe.
    Consumer,
}

impl GroupProtocol {
    /// Kafka's name of the protocol (`group.protocol`, ListGroups' group type).
    pub fn as_str(self) -> &'static str {
        match self {
            GroupProtocol::Classic => "classic",
            GroupProtocol::Consumer => "consumer",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: GroupState,
    /// The assignor the members agreed on (range, roundrobin, cooperative-sticky, ...), or for a
    /// `consumer`-protocol group the broker's assignor (uniform, range).
    pub partition_assignor: String,
    pub protocol: GroupProtocol,
    pub members: Vec<MemberDescription>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub client_id: String,
    pub host: String,
    pub assignment: Vec<TopicPartition>,
}

/// Errors of the Kafka module. Messages say what failed and what to do; `label()` is stable for
/// metrics; `is_transient()` tells a retry from a fix. Clone: an observer's snapshot hands the
/// same error to every group it concerns.
#[derive(Clone, Debug, thiserror::Error)]
pub enum KafkaError {
    /// The client properties were refused before anything was sent. The message names keys and
    /// reasons only, never a value (see [`config_error`]).
    #[error("Kafka client configuration is invalid: {0}")]
    Config(String),
    #[error("Kafka did not answer {0} in time; is the cluster reachable from the operator?")]
    Timeout(&'static str),
    #[error("Kafka is unreachable: {0}")]
    Unreachable(String),
    #[error("topics do not exist: {}", .0.join(", "))]
    UnknownTopics(Vec<String>),
    /// Kafka answers a topic the principal may not describe as refused, whether it exists or not
    /// (and leaves it out of a listing of every topic).
    #[error(
        "not authorized to describe topics {}: grant the operator's Kafka principal Describe (and Read, for offsets) on them, e.g. kafka-acls --add --allow-principal User:<operator> --operation Describe --topic <topic>",
        .0.join(", ")
    )]
    TopicsNotAuthorized(Vec<String>),
    #[error("consumer group {0:?} has active members; stop its consumers before changing its offsets")]
    GroupNotEmpty(String),
    #[error("the group coordinator of {0:?} is not available yet (Kafka is electing or loading it); retrying")]
    CoordinatorUnavailable(String),
    #[error("Kafka refused {} partition(s): {}", .0.len(), summarize_partition_errors(.0))]
    PartitionErrors(Vec<(TopicPartition, String)>),
    /// Partitions refused for good (no permission, topic deleted): the partitions not listed
    /// were applied.
    #[error("Kafka refused {} partition(s) for good: {}", .0.len(), summarize_partition_errors(.0))]
    PartitionsRefused(Vec<(TopicPartition, String)>),
    /// Partitions whose leader is moving (an election, a broker restart, a topic just created).
    #[error("{} partition(s) have no leader right now (an election or a new topic): {}; retrying", .0.len(), summarize_partition_errors(.0))]
    LeaderUnavailable(Vec<(TopicPartition, String)>),
    #[error("Kafka returned no offsets for {0}")]
    MissingOffsets(TopicPartition),
    #[error("authentication or authorization failed: {0}; check the credentials in the client-properties Secret")]
    Auth(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("Kafka request failed: {0}")]
    Request(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl KafkaError {
    pub fn label(&self) -> &'static str {
        match self {
            KafkaError::Config(_) => "config",
            KafkaError::Timeout(_) => "timeout",
            KafkaError::Unreachable(_) => "unreachable",
            KafkaError::UnknownTopics(_) => "unknown_topics",
            KafkaError::TopicsNotAuthorized(_) => "topics_not_authorized",
            KafkaError::GroupNotEmpty(_) => "group_not_empty",
            KafkaError::CoordinatorUnavailable(_) => "coordinator_unavailable",
            KafkaError::PartitionErrors(_) => "partition_errors",
            KafkaError::PartitionsRefused(_) => "partitions_refused",
            KafkaError::LeaderUnavailable(_) => "leader_unavailable",
            KafkaError::MissingOffsets(_) => "missing_offsets",
            KafkaError::Auth(_) => "auth",
            KafkaError::InvalidArgument(_) => "invalid_argument",
            KafkaError::Request(_) => "request",
            KafkaError::Internal(_) => "internal",
        }
    }

    /// Whether retrying later may succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            KafkaError::Timeout(_)
                | KafkaError::Unreachable(_)
                | KafkaError::Request(_)
                | KafkaError::CoordinatorUnavailable(_)
                | KafkaError::PartitionErrors(_)
                | KafkaError::LeaderUnavailable(_)
                | KafkaError::MissingOffsets(_)
                | KafkaError::GroupNotEmpty(_)
        )
    }

    pub(crate) fn from_code(code: RDKafkaErrorCode, context: String) -> KafkaError {
        use RDKafkaErrorCode as C;
        match code {
            C::OperationTimedOut | C::RequestTimedOut | C::MessageTimedOut => {
                KafkaError::Unreachable(format!("{context}: timed out"))
            }
            C::BrokerTransportFailure
            | C::AllBrokersDown
            | C::Resolve
            | C::CoordinatorNotAvailable
            | C::NotCoordinator => KafkaError::Unreachable(format!("{context}: {code}")),
            C::NonEmptyGroup | C::UnknownMemberId | C::RebalanceInProgress | C::IllegalGeneration => {
                KafkaError::GroupNotEmpty(context)
            }
            C::Authentication
            | C::SaslAuthenticationFailed
            | C::GroupAuthorizationFailed
            | C::TopicAuthorizationFailed
            | C::ClusterAuthorizationFailed => KafkaError::Auth(format!("{context}: {code}")),
            C::InvalidArgument | C::InvalidRequest => KafkaError::InvalidArgument(format!("{context}: {code}")),
            _ => KafkaError::Request(format!("{context}: {code}")),
        }
    }

    /// Maps an error of a client built from `properties`: a configuration error is rebuilt from
    /// its key and kind (rdkafka's text carries the value), and any other text is scrubbed of the
    /// properties' values.
    pub(crate) fn from_client_with(error: RdKafkaError, properties: &BTreeMap<String, String>) -> KafkaError {
        match &error {
            RdKafkaError::ClientConfig(result, _, key, _) => KafkaError::Config(config_error(*result, key)),
            RdKafkaError::ClientCreation(message) => {
                KafkaError::Config(format!("{}; check the client-properties Secret", scrub(message, properties)))
            }
            _ => match KafkaError::from_client(error) {
                KafkaError::Config(text) => KafkaError::Config(scrub(&text, properties)),
                other => other,
            },
        }
    }

    pub(crate) fn from_client(error: RdKafkaError) -> KafkaError {
        match &error {
            RdKafkaError::ClientConfig(result, _, key, _) => KafkaError::Config(config_error(*result, key)),
            // librdkafka's creation errors name properties (`ssl.key.pem failed: ...`), not values;
            // callers that hold the properties scrub them anyway (`from_client_with`).
            RdKafkaError::ClientCreation(message) => KafkaError::Config(message.clone()),
            _ => match error.rdkafka_error_code() {
                Some(code) => KafkaError::from_code(code, error.to_string()),
                None => KafkaError::Request(error.to_string()),
            },
        }
    }
}

/// A group of librdkafka's group listing as the operator describes it (that listing sees classic
/// groups only).
fn describe(info: &rdkafka::groups::GroupInfo) -> Result<GroupDescription, KafkaError> {
    let members = describe_members(info.name(), info.members(), |m, budget| {
        Ok(MemberDescription {
            member_id: m.id().to_string(),
            client_id: m.client_id().to_string(),
            host: m.client_host().to_string(),
            assignment: parse_assignment(m.assignment().unwrap_or_default(), budget)?,
        })
    })?;
    Ok(GroupDescription {
        group_id: info.name().to_string(),
        state: GroupState::parse(info.state()),
        partition_assignor: info.protocol().to_string(),
        protocol: GroupProtocol::Classic,
        members,
    })
}

/// Topics a listing of every topic lacks that are there all the same (see
/// [`KafkaClient::absent_topics`]).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct AbsentTopics {
    /// Kafka refuses to describe them (whether they exist or not).
    pub refused: BTreeSet<String>,
    /// Topic -> why it cannot be read yet (leader not available: being created, an election).
    pub not_ready: BTreeMap<String, String>,
}

/// The transient error of topics that exist but cannot be read yet.
pub fn topics_not_ready<'a>(topics: impl IntoIterator<Item = (&'a String, &'a String)>) -> KafkaError {
    let named: Vec<String> = topics.into_iter().map(|(topic, why)| format!("{topic} ({why})")).collect();
    KafkaError::Request(format!("topics not ready: {}; retrying", named.join(", ")))
}

/// What a Metadata request naming one topic says of it.
enum TopicLookup {
    Partitions(i32),
    /// Not authorized to describe it (Kafka says so whether it exists or not).
    Refused,
    Missing,
    /// Leader not available (a topic being created, an election), ...: transient.
    NotReady(RDKafkaErrorCode),
}

/// One Metadata request for `topic` (blocking).
fn look_up_topic(
    client: &BaseConsumer<RequestCounting>,
    topic: &str,
    timeout: Duration,
) -> Result<TopicLookup, KafkaError> {
    let metadata = client.fetch_metadata(Some(topic), timeout).map_err(KafkaError::from_client)?;
    let found = metadata.topics().iter().find(|t| t.name() == topic);
    Ok(match found.map(|t| (t.error(), t.partitions().len())) {
        Some((None, partitions)) if partitions > 0 => TopicLookup::Partitions(partitions as i32),
        Some((Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED), _)) => TopicLookup::Refused,
        None | Some((None, _)) | Some((Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART), _)) => {
            TopicLookup::Missing
        }
        Some((Some(error), _)) => TopicLookup::NotReady(RDKafkaErrorCode::from(error)),
    })
}

/// Java-client properties librdkafka does not have, and what to use instead.
const JAVA_ONLY_PROPERTIES: &[(&str, &str)] = &[
    (
        "sasl.jaas.config",
        "librdkafka has no JAAS: set sasl.mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) with sasl.username and sasl.password instead",
    ),
    ("ssl.truststore.location", "librdkafka reads PEM: set ssl.ca.location (a file) or ssl.ca.pem (the certificates)"),
    ("ssl.truststore.password", "librdkafka reads PEM: set ssl.ca.location or ssl.ca.pem, which need no password"),
    ("ssl.truststore.type", "librdkafka reads PEM: set ssl.ca.location or ssl.ca.pem"),
    (
        "ssl.keystore.type",
        "librdkafka takes a PKCS#12 keystore through ssl.keystore.location and ssl.keystore.password, or PEM through ssl.certificate.pem and ssl.key.pem",
    ),
    ("key.deserializer", "the operator reads no records; remove it"),
    ("value.deserializer", "the operator reads no records; remove it"),
];

/// What to set instead of a Java client property librdkafka does not know.
pub fn java_property_hint(key: &str) -> Option<&'static str> {
    JAVA_ONLY_PROPERTIES.iter().find(|(java, _)| *java == key).map(|(_, instead)| *instead)
}

/// The message of a refused client property: its key and why, never its value.
pub fn config_error(result: rdkafka::types::RDKafkaConfRes, key: &str) -> String {
    use rdkafka::types::RDKafkaConfRes;
    if let Some(instead) = java_property_hint(key) {
        return format!(
            "property {key:?} is a Java client property that librdkafka does not know: {instead}; fix the client-properties Secret"
        );
    }
    match result {
        RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN => format!(
            "librdkafka has no property {key:?} (misspelled?); fix or remove it in the client-properties Secret (librdkafka's CONFIGURATION.md lists the properties)"
        ),
        _ => format!(
            "librdkafka refused the value of property {key:?} (the value is not shown); fix it in the client-properties Secret"
        ),
    }
}

/// `text` with every value of `properties` that could be a secret replaced by `<redacted>`: all
/// but the few properties whose values are plain settings, and only values long enough that the
/// replacement cannot mangle the rest of the text.
pub fn scrub(text: &str, properties: &BTreeMap<String, String>) -> String {
    const PLAIN_SETTINGS: &[&str] =
        &["bootstrap.servers", "security.protocol", "sasl.mechanism", "sasl.mechanisms", "client.id"];
    let mut values: Vec<&str> = properties
        .iter()
        .filter(|(key, value)| !PLAIN_SETTINGS.contains(&key.as_str()) && value.trim().len() >= 3)
        .map(|(_, value)| value.as_str())
        .collect();
    // Longest first, so a value containing another is replaced whole.
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    let mut text = text.to_string();
    for value in values {
        text = text.replace(value, "<redacted>");
        let trimmed = value.trim();
        if trimmed != value {
            text = text.replace(trimmed, "<redacted>");
        }
    }
    text
}

/// The first few failures of a partition list, so that messages stay short on 10,000 partitions.
fn summarize_partition_errors(errors: &[(TopicPartition, String)]) -> String {
    const SHOWN: usize = 5;
    let mut text = errors.iter().take(SHOWN).map(|(tp, e)| format!("{tp}: {e}")).collect::<Vec<_>>().join(", ");
    if errors.len() > SHOWN {
        text.push_str(&format!(" and {} more", errors.len() - SHOWN));
    }
    text
}

fn config(properties: &BTreeMap<String, String>) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (key, value) in properties {
        config.set(key, value);
    }
    config
}

/// Client properties with secret values hidden, for Debug output and logs.
pub struct Redacted<'a>(pub &'a BTreeMap<String, String>);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (key, value) in self.0 {
            if is_secret_key(key) {
                map.entry(key, &"<redacted>");
            } else {
                map.entry(key, value);
            }
        }
        map.finish()
    }
}

fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "key", "token", "jaas", "credential", "pem"].iter().any(|word| key.contains(word))
}

/// Most partitions in one admin ListOffsets call. librdkafka (2.12) merges each broker's answer
/// into the result with a linear search per partition, so one call costs time quadratic in its
/// partitions (measured: 0.6-0.8 s for 10,000 on one broker); batches of 2,000 keep that to a
/// few milliseconds, for one more request per broker per 2,000 partitions.
pub const LIST_OFFSETS_BATCH: usize = 2_000;

/// How a group Kafka does not know is described (as Kafka's own tool shows it: Dead, no members).
/// OffsetFetch requests in flight at once where librdkafka reads one group per request.
const OFFSET_FETCH_CONCURRENCY: usize = 16;

fn partitions_of(topics: &BTreeMap<String, i32>) -> Vec<TopicPartition> {
    topics
        .iter()
        .flat_map(|(topic, &count)| (0..count).map(move |partition| TopicPartition { topic: topic.clone(), partition }))
        .collect()
}

/// librdkafka's answer, by topic and partition index.
fn topic_offsets(
    topics: &BTreeMap<String, i32>,
    offsets: &BTreeMap<TopicPartition, Option<i64>>,
) -> protocol::TopicOffsets {
    topics
        .iter()
        .map(|(topic, &count)| {
            let by_partition = (0..count)
                .map(|partition| offsets.get(&TopicPartition { topic: topic.clone(), partition }).copied().flatten())
                .collect();
            (topic.clone(), by_partition)
        })
        .collect()
}

fn unknown_group(group: &str) -> GroupDescription {
    GroupDescription {
        group_id: group.to_string(),
        state: GroupState::Dead,
        partition_assignor: String::new(),
        protocol: GroupProtocol::Classic,
        members: Vec::new(),
    }
}

/// Group id of the operator's own client handle. It never subscribes, joins or commits; it exists
/// because librdkafka (2.12) dereferences the client's consumer-group handle when an OffsetFetch
/// answers NOT_COORDINATOR, which crashes a producer-type (admin) client. A consumer-type client
/// with a group id has that handle, so a moving coordinator is just retried.
const HANDLE_GROUP_ID: &str = "consumer-group-operator-admin";

/// One connection to a Kafka cluster, shared by every ConsumerGroup with the same connection
/// properties: a consumer-type librdkafka client that is never subscribed (see
/// [`HANDLE_GROUP_ID`]), used for metadata and every admin call, and served by a small thread that
/// drains its event queue; and the batched group reader (Kafka's protocol, see [`protocol`]) for
/// group descriptions and committed offsets, where it can honour the connection's settings.
pub struct KafkaClient {
    handle: Arc<BaseConsumer<RequestCounting>>,
    reader: Result<protocol::GroupReader, KafkaError>,
    properties: BTreeMap<String, String>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    /// Request counts already handed to [`KafkaClient::take_new_requests`].
    reported: std::sync::Mutex<RequestCounts>,
}

impl Drop for KafkaClient {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl fmt::Debug for KafkaClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaClient").field("properties", &Redacted(&self.properties)).finish()
    }
}

impl KafkaClient {
    /// `properties`: librdkafka client properties, at least `bootstrap.servers`. Request counts
    /// are refreshed every `statistics.interval.ms` (15 s unless the properties say).
    pub fn new(properties: &BTreeMap<String, String>) -> Result<KafkaClient, KafkaError> {
        let mut config = config(properties);
        config.set("group.id", HANDLE_GROUP_ID).set("enable.auto.commit", "false");
        if !properties.contains_key("statistics.interval.ms") {
            config.set("statistics.interval.ms", stats::DEFAULT_INTERVAL_MS);
        }
        let handle: Arc<BaseConsumer<RequestCounting>> = Arc::new(
            config
                .create_with_context(RequestCounting::default())
                .map_err(|e| KafkaError::from_client_with(e, properties))?,
        );
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Errors and statistics arrive as events on the client's queue; drain it so they are
        // logged and never pile up. Never subscribed, it receives no messages.
        let (events, stopped) = (handle.clone(), stop.clone());
        std::thread::Builder::new()
            .name("kafka-events".into())
            .spawn(move || {
                while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Some(Err(error)) = events.poll(Duration::from_millis(200)) {
                        tracing::debug!(%error, "Kafka client event");
                    }
                }
            })
            .map_err(|e| KafkaError::Internal(format!("cannot start the Kafka event thread: {e}")))?;
        let reader = protocol::GroupReader::new(properties);
        if let Err(error) = &reader {
            tracing::info!(%error, "group reads go through librdkafka for this connection (one request per group, KIP-848 groups unseen)");
        }
        Ok(KafkaClient { handle, reader, properties: properties.clone(), stop, reported: Default::default() })
    }

    /// Requests this client sent since it was created, by type, as of librdkafka's last
    /// statistics emission.
    pub fn request_counts(&self) -> RequestCounts {
        let mut counts = self.handle.context().counts();
        if let Ok(reader) = &self.reader {
            for (request, count) in reader.request_counts() {
                *counts.entry(request).or_default() += count;
            }
        }
        counts
    }

    /// Kafka's id of the cluster, as its last Metadata answer said (no request: None until this
    /// client has read metadata).
    pub fn cluster_id(&self) -> Option<String> {
        self.handle.client().fetch_cluster_id(Duration::ZERO)
    }

    /// Kafka's id of the cluster, asking for metadata if this client has none yet (1 Metadata
    /// request at most).
    pub async fn fetch_cluster_id(&self, timeout: Duration) -> Result<String, KafkaError> {
        if let Some(id) = self.cluster_id() {
            return Ok(id);
        }
        let client = self.handle.clone();
        tokio::task::spawn_blocking(move || client.client().fetch_cluster_id(timeout))
            .await
            .map_err(|e| KafkaError::Internal(format!("cluster id task failed: {e}")))?
            .ok_or(KafkaError::Timeout("Metadata (the cluster id)"))
    }

    /// Why this connection's group reads go through librdkafka (settings the batched reader cannot
    /// honour, such as GSSAPI), or None when the batched reader serves them. Chosen once, when
    /// the client is created: callers never choose, they only report it.
    pub fn unbatched_reason(&self) -> Option<&KafkaError> {
        self.reader.as_ref().err()
    }

    /// The cluster's feature levels (one ApiVersions request), or None where the batched reader
    /// does not serve this connection (librdkafka does not expose them).
    pub async fn cluster_features(&self, timeout: Duration) -> Option<Result<protocol::ClusterFeatures, KafkaError>> {
        match &self.reader {
            Ok(reader) => Some(reader.cluster_features(timeout).await),
            Err(_) => None,
        }
    }

    /// Describes each group (None for a group Kafka does not know). Batched reader: one
    /// ConsumerGroupDescribe and at most one DescribeGroups per coordinator; librdkafka: one
    /// ListGroups and one DescribeGroups per broker, for every group of the cluster.
    pub async fn describe_groups(
        &self,
        group_ids: &[String],
        timeout: Duration,
    ) -> BTreeMap<String, Result<Option<GroupDescription>, KafkaError>> {
        if let Ok(reader) = &self.reader {
            return reader.describe_groups(group_ids, timeout).await;
        }
        let described = self.describe_all_groups(timeout).await;
        group_ids
            .iter()
            .map(|group_id| {
                let description = match &described {
                    Ok(all) => all.get(group_id).cloned().transpose(),
                    Err(error) => Err(error.clone()),
                };
                (group_id.clone(), description)
            })
            .collect()
    }

    /// Each group's committed offsets of the topics in its scope (topic -> partition count), by
    /// topic and partition index. Batched reader: one OffsetFetch per coordinator (per 5,000
    /// partitions); librdkafka: one FindCoordinator and one OffsetFetch per group,
    /// [`OFFSET_FETCH_CONCURRENCY`] at once.
    pub async fn committed_by_topic(
        self: &Arc<Self>,
        scopes: BTreeMap<String, BTreeMap<String, i32>>,
        timeout: Duration,
    ) -> BTreeMap<String, Result<protocol::TopicOffsets, KafkaError>> {
        if let Ok(reader) = &self.reader {
            return reader.committed_by_topic(&scopes, timeout).await;
        }
        // Owned jobs: a stream of borrowed ones makes the spawned poll's future not `Send` for
        // every lifetime (a known limit of async closures over references).
        let client = self.clone();
        futures::stream::iter(scopes)
            .map(move |(group_id, topics)| {
                let client = client.clone();
                async move {
                    let scope = partitions_of(&topics);
                    let offsets = if scope.is_empty() {
                        Ok(protocol::TopicOffsets::new())
                    } else {
                        client
                            .list_consumer_group_offsets(&group_id, Some(&scope), timeout)
                            .await
                            .map(|offsets| topic_offsets(&topics, &offsets))
                    };
                    (group_id, offsets)
                }
            })
            .buffer_unordered(OFFSET_FETCH_CONCURRENCY)
            .collect()
            .await
    }

    /// Requests sent since the previous call (for the requests counter of `/metrics`).
    pub fn take_new_requests(&self) -> RequestCounts {
        let now = self.request_counts();
        let mut reported = self.reported.lock().expect("reported requests lock");
        let new = stats::delta(&now, &reported);
        *reported = now;
        new
    }

    /// A short-lived admin client for topic administration (tests, benchmarks, the demo).
    fn admin(&self) -> Result<AdminClient<DefaultClientContext>, KafkaError> {
        config(&self.properties).create().map_err(|e| KafkaError::from_client_with(e, &self.properties))
    }

    pub fn properties(&self) -> &BTreeMap<String, String> {
        &self.properties
    }

    /// Runs an `ffi` call on a blocking thread, keeping the client alive until it returns. A group
    /// coordinator or partition leaders that are moving or loading (right after a broker start or
    /// a topic creation, during elections) are waited for, within `timeout`: a short election must
    /// not fail a lag cycle or a reset.
    async fn blocking<T: Send + 'static>(
        &self,
        timeout: Duration,
        call: impl Fn(ffi::Handle) -> Result<T, KafkaError> + Send + 'static,
    ) -> Result<T, KafkaError> {
        let client = self.handle.clone();
        tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + timeout;
            let handle = ffi::Handle(client.client().native_ptr());
            let mut pause = Duration::from_millis(100);
            loop {
                match call(handle) {
                    Err(KafkaError::CoordinatorUnavailable(_) | KafkaError::LeaderUnavailable(_))
                        if std::time::Instant::now() + pause < deadline =>
                    {
                        std::thread::sleep(pause);
                        pause = (pause * 2).min(Duration::from_secs(1));
                    }
                    result => return result,
                }
            }
        })
        .await
        .map_err(|e| KafkaError::Internal(format!("Kafka call task failed: {e}")))?
    }

    /// Partition counts of `topics`, one metadata request per topic (never the whole cluster's
    /// metadata, whose size grows with every topic of the cluster); every missing topic is named.
    pub async fn partition_counts(
        &self,
        topics: &[String],
        timeout: Duration,
    ) -> Result<BTreeMap<String, i32>, KafkaError> {
        let client = self.handle.clone();
        let wanted = topics.to_vec();
        tokio::task::spawn_blocking(move || {
            let (mut counts, mut missing, mut refused, mut not_ready) =
                (BTreeMap::new(), Vec::new(), Vec::new(), Vec::new());
            for topic in &wanted {
                match look_up_topic(&client, topic, timeout)? {
                    TopicLookup::Partitions(partitions) => {
                        counts.insert(topic.clone(), partitions);
                    }
                    TopicLookup::Refused => refused.push(topic.clone()),
                    TopicLookup::Missing => missing.push(topic.clone()),
                    TopicLookup::NotReady(error) => not_ready.push((topic.clone(), error.to_string())),
                }
            }
            match (refused.is_empty(), missing.is_empty(), not_ready.is_empty()) {
                (false, _, _) => Err(KafkaError::TopicsNotAuthorized(refused)),
                (true, false, _) => Err(KafkaError::UnknownTopics(missing)),
                (true, true, false) => Err(topics_not_ready(not_ready.iter().map(|(topic, why)| (topic, why)))),
                (true, true, true) => Ok(counts),
            }
        })
        .await
        .map_err(|e| KafkaError::Internal(format!("metadata task failed: {e}")))?
    }

    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication: i32,
        timeout: Duration,
    ) -> Result<(), KafkaError> {
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(replication));
        let options = AdminOptions::new().operation_timeout(Some(timeout));
        let results = self.admin()?.create_topics([&topic], &options).await.map_err(KafkaError::from_client)?;
        for result in results {
            if let Err((topic, code)) = result {
                return Err(KafkaError::from_code(code, format!("create topic {topic}")));
            }
        }
        Ok(())
    }

    pub async fn create_partitions(&self, topic: &str, new_total: i32, timeout: Duration) -> Result<(), KafkaError> {
        let partitions = NewPartitions::new(topic, new_total as usize);
        let options = AdminOptions::new().operation_timeout(Some(timeout));
        let results =
            self.admin()?.create_partitions([&partitions], &options).await.map_err(KafkaError::from_client)?;
        for result in results {
            if let Err((topic, code)) = result {
                return Err(KafkaError::from_code(code, format!("add partitions to {topic}")));
            }
        }
        Ok(())
    }

    pub async fn list_consumer_groups(&self, timeout: Duration) -> Result<Vec<GroupListing>, KafkaError> {
        self.blocking(timeout, move |h| ffi::list_consumer_groups(h, timeout)).await
    }

    /// Partition counts of every topic of the cluster, in one metadata request (an observer's
    /// poll: one request whatever the number of topics its groups read).
    pub async fn topic_partition_counts(&self, timeout: Duration) -> Result<BTreeMap<String, i32>, KafkaError> {
        let client = self.handle.clone();
        tokio::task::spawn_blocking(move || {
            let metadata = client.fetch_metadata(None, timeout).map_err(KafkaError::from_client)?;
            Ok(metadata
                .topics()
                .iter()
                .filter(|t| t.error().is_none() && !t.partitions().is_empty())
                .map(|t| (t.name().to_string(), t.partitions().len() as i32))
                .collect())
        })
        .await
        .map_err(|e| KafkaError::Internal(format!("metadata task failed: {e}")))?
    }

    /// Why each of `topics`, absent from a listing of every topic, is absent when it is not
    /// missing: Kafka refuses to describe it, or it has no leader yet (one Metadata request per
    /// topic: asked only about topics a ConsumerGroup names and the listing lacks). A topic Kafka
    /// cannot be asked about counts as missing.
    pub async fn absent_topics(&self, topics: &[String], timeout: Duration) -> AbsentTopics {
        let client = self.handle.clone();
        let topics = topics.to_vec();
        let absent = tokio::task::spawn_blocking(move || {
            let mut absent = AbsentTopics::default();
            for topic in topics {
                match look_up_topic(&client, &topic, timeout) {
                    Ok(TopicLookup::Refused) => {
                        absent.refused.insert(topic);
                    }
                    Ok(TopicLookup::NotReady(error)) => {
                        absent.not_ready.insert(topic, error.to_string());
                    }
                    _ => {}
                }
            }
            absent
        });
        absent.await.unwrap_or_default()
    }

    /// Brokers in the cluster's metadata: one Metadata request naming no topic but the
    /// always-present `__consumer_offsets` (a request without topics would ask for all of them).
    pub async fn broker_count(&self, timeout: Duration) -> Result<i32, KafkaError> {
        let client = self.handle.clone();
        tokio::task::spawn_blocking(move || {
            let metadata =
                client.fetch_metadata(Some("__consumer_offsets"), timeout).map_err(KafkaError::from_client)?;
            Ok(metadata.brokers().len() as i32)
        })
        .await
        .map_err(|e| KafkaError::Internal(format!("metadata task failed: {e}")))?
    }

    /// Every group of the cluster, described: librdkafka's group listing without a group name
    /// sends one ListGroups and one DescribeGroups per broker, however many groups there are.
    async fn describe_all_groups(
        &self,
        timeout: Duration,
    ) -> Result<BTreeMap<String, Result<GroupDescription, KafkaError>>, KafkaError> {
        let client = self.handle.clone();
        tokio::task::spawn_blocking(move || {
            let list = client.fetch_group_list(None, timeout).map_err(KafkaError::from_client)?;
            Ok(list.groups().iter().map(|info| (info.name().to_string(), describe(info))).collect())
        })
        .await
        .map_err(|e| KafkaError::Internal(format!("describe task failed: {e}")))?
    }

    /// Describes groups with librdkafka's group listing (rdkafka's safe `fetch_group_list`): per
    /// group, a ListGroups to each broker and a DescribeGroups to the one coordinating it. Not the
    /// admin DescribeConsumerGroups (one FindCoordinator + one DescribeGroups, cheaper): in
    /// librdkafka 2.12 that call aborts the process when the coordinator connection drops
    /// mid-request (librdkafka #4605), which a broker restart does to an operator polling every
    /// group. Switch back once the upstream fix (PR #5397) is released.
    pub async fn describe_consumer_groups(
        &self,
        groups: &[String],
        timeout: Duration,
    ) -> Result<Vec<GroupDescription>, KafkaError> {
        if let Ok(reader) = &self.reader {
            let mut described = reader.describe_groups(groups, timeout).await;
            return groups
                .iter()
                .map(|group| match described.remove(group) {
                    Some(Ok(Some(description))) => Ok(description),
                    Some(Ok(None)) => Ok(unknown_group(group)),
                    Some(Err(error)) => Err(error),
                    None => Err(KafkaError::Internal(format!("group {group:?} was not described"))),
                })
                .collect();
        }
        let client = self.handle.clone();
        let groups = groups.to_vec();
        tokio::task::spawn_blocking(move || {
            let mut descriptions = Vec::with_capacity(groups.len());
            for group in &groups {
                let list = client.fetch_group_list(Some(group), timeout).map_err(KafkaError::from_client)?;
                let description = match list.groups().iter().find(|g| g.name() == group) {
                    Some(info) => describe(info)?,
                    None => unknown_group(group),
                };
                descriptions.push(description);
            }
            Ok(descriptions)
        })
        .await
        .map_err(|e| KafkaError::Internal(format!("describe task failed: {e}")))?
    }

    /// Committed offsets of `group` (all committed partitions when `partitions` is None); a
    /// partition without a commit maps to None.
    pub async fn list_consumer_group_offsets(
        &self,
        group: &str,
        partitions: Option<&[TopicPartition]>,
        timeout: Duration,
    ) -> Result<BTreeMap<TopicPartition, Option<i64>>, KafkaError> {
        // The batched reader: one request, decoded in time linear in the partitions (librdkafka
        // 2.12 grows faster than that: a 10,000-partition reset took 21x a 1,000-partition one).
        if let (Ok(reader), Some(partitions)) = (&self.reader, partitions) {
            let group = group.to_string();
            let scopes = BTreeMap::from([(group.clone(), partitions.to_vec())]);
            return reader
                .committed_offsets(&scopes, timeout)
                .await
                .remove(&group)
                .unwrap_or_else(|| Err(KafkaError::Internal(format!("group {group:?} was not read"))));
        }
        let group = group.to_string();
        let partitions = partitions.map(<[TopicPartition]>::to_vec);
        self.blocking(timeout, move |h| ffi::list_consumer_group_offsets(h, &group, partitions.as_deref(), timeout))
            .await
    }

    /// Commits offsets for a group without active members. Fails with `GroupNotEmpty` otherwise.
    pub async fn alter_consumer_group_offsets(
        &self,
        group: &str,
        offsets: &BTreeMap<TopicPartition, i64>,
        timeout: Duration,
    ) -> Result<(), KafkaError> {
        let (group, offsets) = (group.to_string(), offsets.clone());
        self.blocking(timeout, move |h| ffi::alter_consumer_group_offsets(h, &group, &offsets, timeout)).await
    }

    pub async fn delete_consumer_group_offsets(
        &self,
        group: &str,
        partitions: &[TopicPartition],
        timeout: Duration,
    ) -> Result<(), KafkaError> {
        let (group, partitions) = (group.to_string(), partitions.to_vec());
        self.blocking(timeout, move |h| ffi::delete_consumer_group_offsets(h, &group, &partitions, timeout)).await
    }

    /// Offsets by spec for many partitions: one ListOffsets request per leader broker for every
    /// [`LIST_OFFSETS_BATCH`] partitions, the batches in parallel.
    pub async fn list_offsets(
        &self,
        requests: &[(TopicPartition, OffsetSpec)],
        isolation: IsolationLevel,
        timeout: Duration,
    ) -> Result<BTreeMap<TopicPartition, ListedOffset>, KafkaError> {
        self.list_offsets_in_batches(requests, isolation, timeout, LIST_OFFSETS_BATCH).await
    }

    /// [`Self::list_offsets`] with batches of `batch` partitions. A parameter so that a test can
    /// cross batches with a few hundred partitions: a broker creating thousands of partition logs
    /// fsyncs several files for each, minutes on a slow disk.
    pub async fn list_offsets_in_batches(
        &self,
        requests: &[(TopicPartition, OffsetSpec)],
        isolation: IsolationLevel,
        timeout: Duration,
        batch: usize,
    ) -> Result<BTreeMap<TopicPartition, ListedOffset>, KafkaError> {
        let batches = requests.chunks(batch).map(|batch| {
            let batch = batch.to_vec();
            self.blocking(timeout, move |h| ffi::list_offsets(h, &batch, isolation, timeout))
        });
        let answers = futures::future::try_join_all(batches).await?;
        Ok(answers.into_iter().flatten().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_hides_secret_values() {
        let properties = BTreeMap::from([
            ("bootstrap.servers".to_string(), "k:9092".to_string()),
            ("sasl.password".to_string(), "hunter2".to_string()),
            ("ssl.key.pem".to_string(), "-----BEGIN".to_string()),
            ("sasl.oauthbearer.client.secret".to_string(), "s".to_string()),
        ]);
        let text = format!("{:?}", Redacted(&properties));
        assert!(text.contains("k:9092"));
        assert!(!text.contains("hunter2") && !text.contains("BEGIN") && !text.contains("\"s\""), "{text}");
        let client = KafkaClient::new(&properties);
        // Creating may fail on the fake PEM; either way nothing secret is printed.
        let text = match client {
            Ok(c) => format!("{c:?}"),
            Err(e) => e.to_string(),
        };
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn refused_properties_are_named_with_their_reason_never_their_value() {
        let value = "Zq9-do-not-show-7Xc";
        for (key, hint) in [
            ("sasl.pasword", "misspelled"),
            ("sasl.jaas.config", "sasl.username and sasl.password"),
            ("security.protocol", "refused the value"),
        ] {
            let mut properties = BTreeMap::from([("bootstrap.servers".to_string(), "127.0.0.1:1".to_string())]);
            properties.insert(
                key.to_string(),
                format!("org.apache.kafka.common.security.plain.PlainLoginModule required password=\"{value}\";"),
            );
            let error = KafkaClient::new(&properties).expect_err("librdkafka refuses it");
            let text = error.to_string();
            assert_eq!(error.label(), "config");
            assert!(text.contains(key) && text.contains(hint), "{text}");
            assert!(!text.contains(value) && !format!("{error:?}").contains(value), "{text}");
        }
    }

    #[test]
    fn scrub_hides_every_value_but_plain_settings() {
        let properties = BTreeMap::from([
            ("bootstrap.servers".to_string(), "broker:9092".to_string()),
            ("sasl.username".to_string(), "app-user".to_string()),
            ("sasl.password".to_string(), "pw-123456".to_string()),
            ("ssl.key.password".to_string(), "ab".to_string()),
        ]);
        let text = scrub("login app-user/pw-123456 at broker:9092 failed; about it", &properties);
        assert_eq!(text, "login <redacted>/<redacted> at broker:9092 failed; about it");
    }

    #[test]
    fn member_assignments_are_decoded() {
        // version 1, two topics: "ab" [0, 2], "c" [5]; user data after it.
        let mut bytes = vec![0, 1, 0, 0, 0, 2];
        bytes.extend([0, 2, b'a', b'b', 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2]);
        bytes.extend([0, 1, b'c', 0, 0, 0, 1, 0, 0, 0, 5]);
        bytes.extend([0xff, 0xff, 0xff, 0xff]);
        let tp = |t: &str, p| TopicPartition { topic: t.into(), partition: p };
        let parse = |bytes: &[u8]| parse_assignment(bytes, &mut AssignmentBudget::default());
        assert_eq!(parse(&bytes), Ok(vec![tp("ab", 0), tp("ab", 2), tp("c", 5)]));
        assert!(parse(&bytes[..12]).unwrap_err().contains("cut short"), "cut inside the first topic");
        assert_eq!(parse(&[]), Ok(Vec::new()), "not assigned yet");
        // One topic of 300 bytes, and one declaring more partitions than its bytes hold.
        let mut long = vec![0, 1, 0, 0, 0, 1, 0x01, 0x2c];
        long.extend([b'x'; 300]);
        long.extend([0, 0, 0, 0]);
        assert!(parse(&long).unwrap_err().contains("names a topic of 300 bytes"));
        let mut declared = vec![0, 1, 0, 0, 0, 1, 0, 1, b't'];
        declared.extend(i32::MAX.to_be_bytes());
        assert!(parse(&declared).unwrap_err().contains("declares 2147483647 partitions"));
        // The budget is the group's: members together get MAX_ASSIGNED_PARTITIONS_PER_GROUP.
        let member = |count: i32| {
            let mut bytes = vec![0, 1, 0, 0, 0, 1, 0, 1, b't'];
            bytes.extend(count.to_be_bytes());
            bytes.extend((0..count).flat_map(i32::to_be_bytes));
            bytes
        };
        let half = member(MAX_ASSIGNED_PARTITIONS_PER_GROUP as i32 / 2);
        let mut budget = AssignmentBudget::default();
        assert!(parse_assignment(&half, &mut budget).is_ok());
        assert!(parse_assignment(&half, &mut budget).is_ok());
        assert!(parse_assignment(&member(1), &mut budget).unwrap_err().contains("more than 50000 partitions"));
        assert_eq!(GroupState::parse("Stable"), GroupState::Stable);
        for state in [GroupState::Assigning, GroupState::Reconciling, GroupState::Empty, GroupState::Dead] {
            assert_eq!(GroupState::parse(state.as_str()), state);
        }
        assert!(!GroupState::Reconciling.is_inactive() && GroupState::Empty.is_inactive());
        assert_eq!(GroupState::parse("whatever"), GroupState::Unknown);
    }

    #[test]
    fn errors_have_stable_labels_and_tell_transient_from_permanent() {
        let unreachable = KafkaError::from_code(RDKafkaErrorCode::AllBrokersDown, "x".into());
        assert_eq!((unreachable.label(), unreachable.is_transient()), ("unreachable", true));
        let not_empty = KafkaError::from_code(RDKafkaErrorCode::NonEmptyGroup, "g".into());
        assert_eq!(not_empty.label(), "group_not_empty");
        let topics = KafkaError::UnknownTopics(vec!["a".into()]);
        assert_eq!((topics.label(), topics.is_transient()), ("unknown_topics", false));
        assert_eq!(topics.to_string(), "topics do not exist: a");
        let many = KafkaError::PartitionErrors(
            (0..100).map(|p| (TopicPartition { topic: "t".into(), partition: p }, "boom".into())).collect(),
        );
        assert_eq!(
            many.to_string(),
            "Kafka refused 100 partition(s): t/0: boom, t/1: boom, t/2: boom, t/3: boom, t/4: boom and 95 more"
        );
    }
}
