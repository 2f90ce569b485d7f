//! A small async Kafka client for the read-only consumer-group requests, batched the way Kafka's
//! Java AdminClient batches them. librdkafka (2.12) sends one FindCoordinator and one OffsetFetch
//! per group, and its group listing cannot see KIP-848 (`consumer`-protocol) groups.
//!
//! Cost model, for G groups on C coordinators:
//! - [`GroupReader::committed_offsets`]: at most 1 FindCoordinator (v4+, KIP-699: every group
//!   whose coordinator is not cached, in one request; 0 when all are cached) + C OffsetFetch (v8+,
//!   KIP-709: all groups of a coordinator in one request), one more per coordinator for each
//!   further [`OFFSET_FETCH_PARTITIONS`] partitions its groups read: the answers are decoded one
//!   at a time, so a poll of thousands of groups never holds one huge answer.
//! - [`GroupReader::describe_groups`]: the same FindCoordinator + C ConsumerGroupDescribe (API 69,
//!   KIP-848 groups) + at most C DescribeGroups (the classic and unknown groups). No Metadata:
//!   ConsumerGroupDescribe names each assigned topic next to its id (Kafka fills the name from its
//!   metadata image and leaves out topics it no longer has; Java's AdminClient uses it as is).
//! - [`GroupReader::cluster_features`]: 1 ApiVersions, on a connection already open if any.
//! - An answer is read as its bytes arrive, up to `receive.message.max.bytes` (32 MiB unless the
//!   platform's properties say otherwise; 1 MiB for ApiVersions and SASL); a bigger frame is
//!   refused before it is read, and ends the connection.
//! - A connection costs 1 ApiVersions when opened (plus SASL's requests, below); it is kept, one
//!   per broker, and replaced when a SASL session with a lifetime (KIP-368) nears its end.
//!
//! A coordinator that moved or is loading costs one more round for its groups only, after a short
//! pause, until the call's timeout.
//!
//! Connections are secured as librdkafka's properties say (`security.rs`): `security.protocol`
//! PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL; TLS (rustls with ring) from `ssl.ca.*`,
//! `ssl.certificate.*`, `ssl.key.*` and `ssl.endpoint.identification.algorithm`; SASL PLAIN,
//! SCRAM-SHA-256 or SCRAM-SHA-512 (`sasl.rs`) from `sasl.mechanism`, `sasl.username` and
//! `sasl.password`, which adds 1 SaslHandshake and 1 (PLAIN) or 2 (SCRAM) SaslAuthenticate per
//! connection. Any other setting of theirs (GSSAPI, OAUTHBEARER, a PKCS#12 keystore, an encrypted
//! key, ...) makes [`GroupReader::new`] refuse the properties by key, and the operator reads that
//! connection's groups through librdkafka.

mod connection;
mod sasl;
mod security;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::consumer_group_describe_response::DescribedGroup as ConsumerDescribedGroup;
use kafka_protocol::messages::describe_groups_response::DescribedGroup as ClassicDescribedGroup;
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::offset_fetch_response::OffsetFetchResponseGroup;
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, DescribeGroupsRequest, FindCoordinatorRequest, GroupId, OffsetFetchRequest,
};
use kafka_protocol::protocol::StrBytes;
use tokio::time::Instant;

use super::stats::RequestCounts;
use super::{
    GroupDescription, GroupProtocol, GroupState, KafkaError, MemberDescription, TopicPartition, describe_members,
    parse_assignment,
};
use connection::{Api, Connection, Counts};
use security::Security;

/// Feature levels a Kafka cluster has finalized (what `kafka-features.sh describe` shows as
/// `FinalizedVersionLevel`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterFeatures {
    pub finalized: BTreeMap<String, i16>,
}

/// `metadata.version` levels and the names Kafka gives them (`MetadataVersion` in Kafka's
/// server-common; levels 1 to 6 are the 3.0 to 3.3 ones that Kafka 4 no longer accepts).
const METADATA_VERSIONS: [&str; 34] = [
    "3.0-IV1", "3.1-IV0", "3.2-IV0", "3.3-IV0", "3.3-IV1", "3.3-IV2", "3.3-IV3", "3.4-IV0", "3.5-IV0", "3.5-IV1",
    "3.5-IV2", "3.6-IV0", "3.6-IV1", "3.6-IV2", "3.7-IV0", "3.7-IV1", "3.7-IV2", "3.7-IV3", "3.7-IV4", "3.8-IV0",
    "3.9-IV0", "4.0-IV0", "4.0-IV1", "4.0-IV2", "4.0-IV3", "4.1-IV0", "4.1-IV1", "4.2-IV0", "4.2-IV1", "4.3-IV0",
    "4.4-IV0", "4.4-IV1", "4.4-IV2", "4.5-IV0",
];

impl ClusterFeatures {
    /// The finalized `metadata.version` as Kafka names it (`4.1-IV1`); a level newer than this
    /// operator knows is shown as its number. None for a cluster without one (ZooKeeper mode).
    pub fn metadata_version(&self) -> Option<String> {
        let level = *self.finalized.get("metadata.version")?;
        let name = usize::try_from(level).ok().and_then(|l| l.checked_sub(1)).and_then(|i| METADATA_VERSIONS.get(i));
        Some(name.map_or_else(|| format!("level {level}"), |name| name.to_string()))
    }

    /// The group protocols the cluster's coordinators serve: `classic` always, `consumer`
    /// (KIP-848) when `group.version` is finalized at 1 or more, `share` (KIP-932) and `streams`
    /// (KIP-1071) when `share.version` and `streams.version` are.
    pub fn group_protocols(&self) -> Vec<String> {
        let mut protocols = vec!["classic".to_string()];
        for (feature, protocol) in
            [("group.version", "consumer"), ("share.version", "share"), ("streams.version", "streams")]
        {
            if self.finalized.get(feature).is_some_and(|level| *level >= 1) {
                protocols.push(protocol.to_string());
            }
        }
        protocols
    }
}

/// Partitions (of the groups' scopes) one OffsetFetch asks for at most, unless a single group
/// reads more: 1,000 groups of 12 partitions take 3 requests, and the largest decoded answer is
/// about 0.5 MB instead of 1.5 MB.
pub const OFFSET_FETCH_PARTITIONS: usize = 5_000;

/// Splits one coordinator's groups into requests whose summed `weight` stays within `budget`; a
/// group heavier than the budget goes alone. Order is kept.
fn batches(groups: Vec<String>, weight: impl Fn(&str) -> usize, budget: usize) -> Vec<Vec<String>> {
    let mut batches: Vec<Vec<String>> = Vec::new();
    let mut current_weight = 0;
    for group in groups {
        let w = weight(&group);
        match batches.last_mut() {
            Some(batch) if current_weight + w <= budget => {
                current_weight += w;
                batch.push(group);
            }
            _ => {
                current_weight = w;
                batches.push(vec![group]);
            }
        }
    }
    batches
}

/// Committed offsets of one group: None where it committed nothing.
pub type GroupOffsets = BTreeMap<TopicPartition, Option<i64>>;

/// Committed offsets of one group by topic, indexed by partition: None where it committed nothing.
pub type TopicOffsets = BTreeMap<String, Vec<Option<i64>>>;

/// Pause before retrying groups whose coordinator moved or is not ready, doubled each round up
/// to [`MAX_PAUSE`]: a fresh broker needs a few seconds to create `__consumer_offsets`.
const FIRST_PAUSE: Duration = Duration::from_millis(50);
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// Longest wait to open a connection (as Java's `socket.connection.setup.timeout.ms`), so that
/// one silent address does not use a whole call's timeout while another broker could answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads consumer groups' committed offsets and descriptions over its own connections. Shared by
/// reference: calls may run concurrently (one request at a time per connection).
pub struct GroupReader {
    bootstrap: Vec<Broker>,
    client_id: StrBytes,
    /// One connection per broker address, opened on first use and reopened after a failure.
    connections: Mutex<BTreeMap<(String, u16), Arc<Slot>>>,
    /// Coordinator of each group, until an answer says it moved.
    coordinators: Mutex<HashMap<String, Broker>>,
    counts: Counts,
    /// TLS and SASL settings every connection applies.
    security: Security,
    /// The largest answer accepted (`receive.message.max.bytes`).
    max_response_bytes: usize,
}

/// A broker to connect to, and what messages call it (never its address: a bootstrap address is
/// a property's value).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Broker {
    address: (String, u16),
    label: String,
}

struct Slot {
    label: String,
    connection: tokio::sync::Mutex<Option<Connection>>,
}

/// What one coordinator answered for one group.
enum Answer<T> {
    Done(Result<T, KafkaError>),
    /// Not (or no longer) its coordinator, or not ready: look the coordinator up again and retry.
    Moved(ResponseError),
}

impl GroupReader {
    /// `properties`: librdkafka-style client properties; `bootstrap.servers` is required,
    /// `client.id` optional, and the security properties are read as the module says (PEM files
    /// named are read here). Connects lazily.
    pub fn new(properties: &BTreeMap<String, String>) -> Result<GroupReader, KafkaError> {
        let security = Security::from_properties(properties)?;
        let servers = properties.get("bootstrap.servers").ok_or_else(|| {
            KafkaError::Config(
                "property \"bootstrap.servers\" is required; set it in the client properties".to_string(),
            )
        })?;
        let bootstrap = servers
            .split(',')
            .map(str::trim)
            .filter(|server| !server.is_empty())
            .enumerate()
            .map(|(i, server)| Some(Broker { address: parse_address(server)?, label: format!("bootstrap server {}", i + 1) }))
            .collect::<Option<Vec<_>>>()
            .filter(|servers| !servers.is_empty())
            .ok_or_else(|| {
                KafkaError::Config(
                    "property \"bootstrap.servers\" must list host:port entries separated by commas (the value is not shown)"
                        .to_string(),
                )
            })?;
        let client_id = properties.get("client.id").cloned().unwrap_or_else(|| env!("CARGO_PKG_NAME").to_string());
        let max_response_bytes = match properties.get("receive.message.max.bytes") {
            None => connection::DEFAULT_MAX_RESPONSE_BYTES,
            Some(value) => value.trim().parse::<usize>().map_err(|_| {
                KafkaError::Config("property \"receive.message.max.bytes\" must be a number of bytes".to_string())
            })?,
        };
        Ok(GroupReader {
            max_response_bytes,
            bootstrap,
            client_id: StrBytes::from_string(client_id),
            connections: Mutex::default(),
            coordinators: Mutex::default(),
            counts: Counts::default(),
            security,
        })
    }

    /// Requests sent since the reader was created, by librdkafka's statistics names
    /// (`FindCoordinator`, `OffsetFetch`, `DescribeGroups`, `ConsumerGroupDescribe`, `ApiVersion`,
    /// `SaslHandshake`, `SaslAuthenticate`); types never sent are left out.
    pub fn request_counts(&self) -> RequestCounts {
        self.counts.snapshot()
    }

    /// The cluster's finalized feature levels (KIP-584) by feature name, e.g. `metadata.version`
    /// and `group.version`, as any broker knows them now.
    pub async fn cluster_features(&self, timeout: Duration) -> Result<ClusterFeatures, KafkaError> {
        let answer = self
            .send_any(&connection::api_versions_request(), connection::API_VERSIONS_VERSION, Instant::now() + timeout)
            .await?;
        if let Some(error) = ResponseError::try_from_code(answer.error_code) {
            return Err(KafkaError::Request(format!("ApiVersions failed ({error})")));
        }
        Ok(ClusterFeatures {
            finalized: answer.finalized_features.iter().map(|f| (f.name.to_string(), f.max_version_level)).collect(),
        })
    }

    /// Committed offsets of each group for exactly its partitions in `scopes`: every partition is
    /// in its group's map, None where the group committed nothing. See
    /// [`GroupReader::committed_by_topic`].
    pub async fn committed_offsets(
        &self,
        scopes: &BTreeMap<String, Vec<TopicPartition>>,
        timeout: Duration,
    ) -> BTreeMap<String, Result<GroupOffsets, KafkaError>> {
        let topics: BTreeMap<String, BTreeMap<String, i32>> = scopes
            .iter()
            .map(|(group, scope)| {
                let mut counts: BTreeMap<String, i32> = BTreeMap::new();
                for tp in scope {
                    let count = counts.entry(tp.topic.clone()).or_default();
                    *count = (*count).max(tp.partition + 1);
                }
                (group.clone(), counts)
            })
            .collect();
        let mut read = self.committed_by_topic(&topics, timeout).await;
        scopes
            .iter()
            .map(|(group, scope)| {
                let offsets = match read.remove(group) {
                    Some(Ok(by_topic)) => Ok(scope
                        .iter()
                        .map(|tp| {
                            let offset = by_topic.get(&tp.topic).and_then(|o| o.get(tp.partition as usize).copied());
                            (tp.clone(), offset.flatten())
                        })
                        .collect()),
                    Some(Err(error)) => Err(error),
                    None => Err(KafkaError::Internal(format!("group {group:?} was not read"))),
                };
                (group.clone(), offsets)
            })
            .collect()
    }

    /// Committed offsets of each group for its topics (`scopes`: group -> topic -> partition
    /// count), by topic and partition index. One OffsetFetch per coordinator asking, as Java's
    /// AdminClient does, for every topic the group committed (a small request; naming each
    /// partition would make it grow with the partitions); topics outside the scope are dropped.
    /// Groups whose coordinator is still not ready at the timeout fail with
    /// `CoordinatorUnavailable`.
    pub async fn committed_by_topic(
        &self,
        scopes: &BTreeMap<String, BTreeMap<String, i32>>,
        timeout: Duration,
    ) -> BTreeMap<String, Result<TopicOffsets, KafkaError>> {
        let deadline = Instant::now() + timeout;
        let partitions = |group: &str| scopes[group].values().map(|&count| count.max(0) as usize).sum::<usize>();
        let ask = |coordinator, groups: Vec<String>| -> futures::future::BoxFuture<'_, _> {
            Box::pin(async move { self.offset_fetch(&coordinator, &groups, scopes, deadline).await })
        };
        self.per_coordinator(scopes.keys().cloned(), deadline, (partitions, OFFSET_FETCH_PARTITIONS), ask).await
    }

    /// Describes each group, as Kafka's Java AdminClient does: one ConsumerGroupDescribe per
    /// coordinator, then one DescribeGroups for the groups it did not know (classic groups, which
    /// Kafka 4 answers GROUP_ID_NOT_FOUND, and unknown ones). None for a group Kafka does not know.
    pub async fn describe_groups(
        &self,
        group_ids: &[String],
        timeout: Duration,
    ) -> BTreeMap<String, Result<Option<GroupDescription>, KafkaError>> {
        let deadline = Instant::now() + timeout;
        // Descriptions are small (a few members each): all of a coordinator's groups at once.
        let everything = (|_: &str| 0, usize::MAX);
        self.per_coordinator(group_ids.iter().cloned(), deadline, everything, |coordinator, groups| {
            Box::pin(async move { self.describe(&coordinator, &groups, deadline).await })
        })
        .await
    }

    /// Runs `ask` once per coordinator with all of its groups (in batches within `batch`'s budget
    /// by its weight, one after another), the coordinators in parallel; then again, after a pause,
    /// for the groups whose coordinator moved or was not ready, until `deadline`. (`ask` returns a boxed `Send` future: an async closure over borrowed arguments
    /// would make the caller's future not `Send` for every lifetime, and the observer spawns it.)
    async fn per_coordinator<'a, T>(
        &'a self,
        groups: impl IntoIterator<Item = String>,
        deadline: Instant,
        batch: (impl Fn(&str) -> usize, usize),
        ask: impl Fn(Broker, Vec<String>) -> futures::future::BoxFuture<'a, BTreeMap<String, Answer<T>>>,
    ) -> BTreeMap<String, Result<T, KafkaError>> {
        let (weight, budget) = batch;
        let mut pending: BTreeSet<String> = groups.into_iter().collect();
        let mut results = BTreeMap::new();
        let mut pause = FIRST_PAUSE;
        while !pending.is_empty() {
            let mut by_coordinator: BTreeMap<Broker, Vec<String>> = BTreeMap::new();
            for (group, coordinator) in self.coordinators(&pending, deadline).await {
                match coordinator {
                    Ok(broker) => by_coordinator.entry(broker).or_default().push(group),
                    Err(KafkaError::CoordinatorUnavailable(_)) => {}
                    Err(error) => {
                        pending.remove(&group);
                        results.insert(group, Err(error));
                    }
                }
            }
            let answers = futures::future::join_all(by_coordinator.into_iter().map(|(broker, groups)| {
                let (ask, batches) = (&ask, batches(groups, &weight, budget));
                async move {
                    let mut answers = BTreeMap::new();
                    for batch in batches {
                        answers.extend(ask(broker.clone(), batch).await);
                    }
                    answers
                }
            }))
            .await;
            for (group, answer) in answers.into_iter().flatten() {
                match answer {
                    Answer::Done(result) => {
                        // A broker that cannot be reached no longer coordinates anything for us.
                        if matches!(result, Err(KafkaError::Unreachable(_))) {
                            self.forget_coordinator(&group);
                        }
                        pending.remove(&group);
                        results.insert(group, result);
                    }
                    Answer::Moved(error) => {
                        tracing::debug!(%group, %error, "group coordinator moved or not ready; retrying");
                        self.forget_coordinator(&group);
                    }
                }
            }
            if pending.is_empty() {
                break;
            }
            if Instant::now() + pause >= deadline {
                results.extend(
                    pending.into_iter().map(|group| (group.clone(), Err(KafkaError::CoordinatorUnavailable(group)))),
                );
                break;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_PAUSE);
        }
        results
    }

    fn forget_coordinator(&self, group: &str) {
        self.coordinators.lock().expect("coordinator cache lock").remove(group);
    }

    /// The coordinator of each group: cached, or from one FindCoordinator carrying every group not
    /// cached. A coordinator that is not ready maps to `CoordinatorUnavailable`.
    async fn coordinators(
        &self,
        groups: &BTreeSet<String>,
        deadline: Instant,
    ) -> BTreeMap<String, Result<Broker, KafkaError>> {
        let mut found = BTreeMap::new();
        let mut missing = Vec::new();
        {
            let cache = self.coordinators.lock().expect("coordinator cache lock");
            for group in groups {
                match cache.get(group) {
                    Some(broker) => {
                        found.insert(group.clone(), Ok(broker.clone()));
                    }
                    None => missing.push(group.clone()),
                }
            }
        }
        if missing.is_empty() {
            return found;
        }
        let request = FindCoordinatorRequest::default()
            .with_key_type(0)
            .with_coordinator_keys(missing.iter().map(|group| StrBytes::from_string(group.clone())).collect());
        let answer = match self.send_any(&request, 4, deadline).await {
            Ok(answer) => answer,
            Err(error) => {
                found.extend(missing.into_iter().map(|group| (group, Err(error.clone()))));
                return found;
            }
        };
        let answers: HashMap<&str, _> = answer.coordinators.iter().map(|c| (c.key.as_str(), c)).collect();
        let mut cache = self.coordinators.lock().expect("coordinator cache lock");
        for group in missing {
            let result = match answers.get(group.as_str()) {
                None => Err(KafkaError::Request(format!("FindCoordinator answered nothing for group {group:?}"))),
                Some(c) => match ResponseError::try_from_code(c.error_code) {
                    Some(error) if moved(error) => Err(KafkaError::CoordinatorUnavailable(group.clone())),
                    Some(error) => Err(group_error(format!("FindCoordinator for group {group:?}"), error)),
                    None => match u16::try_from(c.port) {
                        Ok(port) => {
                            let broker = Broker {
                                address: (c.host.to_string(), port),
                                label: format!("broker {}", c.node_id.0),
                            };
                            cache.insert(group.clone(), broker.clone());
                            Ok(broker)
                        }
                        Err(_) => Err(KafkaError::Request(format!(
                            "FindCoordinator named port {} for group {group:?}",
                            c.port
                        ))),
                    },
                },
            };
            found.insert(group, result);
        }
        found
    }

    /// One OffsetFetch to `coordinator` for all of `groups`, each for every topic it committed.
    async fn offset_fetch(
        &self,
        coordinator: &Broker,
        groups: &[String],
        scopes: &BTreeMap<String, BTreeMap<String, i32>>,
        deadline: Instant,
    ) -> BTreeMap<String, Answer<TopicOffsets>> {
        // An admin's fetch: no member id, epoch -1 (the defaults), as Java's does; no topics: all.
        let request = OffsetFetchRequest::default().with_groups(
            groups
                .iter()
                .map(|group| OffsetFetchRequestGroup::default().with_group_id(group_id(group)).with_topics(None))
                .collect(),
        );
        let answer = self.send_to(coordinator, &request, 8, deadline).await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(error) => return groups.iter().map(|g| (g.clone(), Answer::Done(Err(error.clone())))).collect(),
        };
        let by_group: HashMap<&str, &OffsetFetchResponseGroup> =
            answer.groups.iter().map(|g| (g.group_id.0.as_str(), g)).collect();
        groups
            .iter()
            .map(|group| {
                let answer = match by_group.get(group.as_str()) {
                    Some(answer) => offsets_of(group, &scopes[group], answer),
                    None => Answer::Done(Err(KafkaError::Request(format!(
                        "OffsetFetch answered nothing for group {group:?}"
                    )))),
                };
                (group.clone(), answer)
            })
            .collect()
    }

    /// One ConsumerGroupDescribe to `coordinator` for all of `groups`, then one DescribeGroups for
    /// those it did not know. A broker that has the API but not KIP-848 switched on (3.7 to 3.9 by
    /// default) costs the ConsumerGroupDescribe once per connection, then DescribeGroups only.
    async fn describe(
        &self,
        coordinator: &Broker,
        groups: &[String],
        deadline: Instant,
    ) -> BTreeMap<String, Answer<Option<GroupDescription>>> {
        let request =
            ConsumerGroupDescribeRequest::default().with_group_ids(groups.iter().map(|g| group_id(g)).collect());
        let answer = self
            .with_connection(coordinator, ConsumerGroupDescribeRequest::NAME, deadline, async |connection| {
                // A broker without KIP-848 has classic groups only.
                let Some(version) = connection.version::<ConsumerGroupDescribeRequest>(0) else { return Ok(None) };
                let answer = connection.send(&request, version, &self.counts).await?;
                let unsupported = Some(ResponseError::UnsupportedVersion);
                if !answer.groups.is_empty()
                    && answer.groups.iter().all(|g| ResponseError::try_from_code(g.error_code) == unsupported)
                {
                    // Its coordinator serves the classic protocol only: asked with DescribeGroups
                    // from now on, without this request.
                    connection.forget_api::<ConsumerGroupDescribeRequest>();
                    return Ok(None);
                }
                Ok(Some(answer))
            })
            .await;
        let mut answers = BTreeMap::new();
        let mut classic = Vec::new();
        match answer {
            Err(error) => return groups.iter().map(|g| (g.clone(), Answer::Done(Err(error.clone())))).collect(),
            Ok(None) => classic = groups.to_vec(),
            Ok(Some(answer)) => {
                let by_group: HashMap<&str, &ConsumerDescribedGroup> =
                    answer.groups.iter().map(|g| (g.group_id.0.as_str(), g)).collect();
                for group in groups {
                    let Some(described) = by_group.get(group.as_str()) else {
                        let error = format!("ConsumerGroupDescribe answered nothing for group {group:?}");
                        answers.insert(group.clone(), Answer::Done(Err(KafkaError::Request(error))));
                        continue;
                    };
                    let answer = match ResponseError::try_from_code(described.error_code) {
                        None => Answer::Done(consumer_description(described).map(Some)),
                        Some(ResponseError::GroupIdNotFound | ResponseError::UnsupportedVersion) => {
                            classic.push(group.clone());
                            continue;
                        }
                        Some(error) if moved(error) => Answer::Moved(error),
                        Some(error) => {
                            Answer::Done(Err(group_error(format!("ConsumerGroupDescribe of group {group:?}"), error)))
                        }
                    };
                    answers.insert(group.clone(), answer);
                }
            }
        }
        if classic.is_empty() {
            return answers;
        }
        let request = DescribeGroupsRequest::default().with_groups(classic.iter().map(|g| group_id(g)).collect());
        let answer = self.send_to(coordinator, &request, 0, deadline).await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(error) => {
                answers.extend(classic.into_iter().map(|g| (g, Answer::Done(Err(error.clone())))));
                return answers;
            }
        };
        let by_group: HashMap<&str, &ClassicDescribedGroup> =
            answer.groups.iter().map(|g| (g.group_id.0.as_str(), g)).collect();
        for group in classic {
            let answer = match by_group.get(group.as_str()) {
                None => Answer::Done(Err(KafkaError::Request(format!(
                    "DescribeGroups answered nothing for group {group:?}"
                )))),
                Some(described) => match ResponseError::try_from_code(described.error_code) {
                    None if described.group_state.as_str() == "Dead" && described.members.is_empty() => {
                        Answer::Done(Ok(None))
                    }
                    None => Answer::Done(classic_description(described).map(Some)),
                    Some(ResponseError::GroupIdNotFound) => Answer::Done(Ok(None)),
                    Some(error) if moved(error) => Answer::Moved(error),
                    Some(error) => Answer::Done(Err(group_error(format!("DescribeGroups of group {group:?}"), error))),
                },
            };
            answers.insert(group, answer);
        }
        answers
    }

    /// Sends a request any broker can answer: to brokers already connected first, then to the
    /// others and the bootstrap servers, moving on while one cannot be reached.
    async fn send_any<R: Api>(
        &self,
        request: &R,
        min_version: i16,
        deadline: Instant,
    ) -> Result<R::Response, KafkaError> {
        let mut candidates: Vec<(bool, Broker)> = {
            let connections = self.connections.lock().expect("connections lock");
            let known = connections.iter().map(|(address, slot)| {
                // A connection in use is open.
                let open = slot.connection.try_lock().map_or(true, |c| c.is_some());
                (!open, Broker { address: address.clone(), label: slot.label.clone() })
            });
            let bootstrap =
                self.bootstrap.iter().filter(|b| !connections.contains_key(&b.address)).map(|b| (true, b.clone()));
            known.chain(bootstrap).collect()
        };
        candidates.sort_by_key(|(closed, _)| *closed);
        let mut last_error = None;
        for (_, broker) in candidates {
            match self.send_to(&broker, request, min_version, deadline).await {
                Err(error @ KafkaError::Unreachable(_)) => last_error = Some(error),
                answer => return answer,
            }
        }
        Err(last_error.unwrap_or_else(|| KafkaError::Unreachable("no broker to ask".to_string())))
    }

    /// Sends `request` to `broker` at the highest version both know, at least `min_version`.
    async fn send_to<R: Api>(
        &self,
        broker: &Broker,
        request: &R,
        min_version: i16,
        deadline: Instant,
    ) -> Result<R::Response, KafkaError> {
        self.with_connection(broker, R::NAME, deadline, async |connection| {
            let version = connection.required_version::<R>(min_version)?;
            connection.send(request, version, &self.counts).await
        })
        .await
    }

    /// Runs `exchange` on the connection to `broker`, opening it first if needed, before
    /// `deadline`. A connection whose stream failed, or that the deadline cut mid-request, is
    /// dropped (its stream's position is lost); the next request opens a new one. So is one whose
    /// SASL session is ending, before the broker closes it.
    async fn with_connection<T>(
        &self,
        broker: &Broker,
        api: &'static str,
        deadline: Instant,
        exchange: impl AsyncFnOnce(&mut Connection) -> Result<T, KafkaError>,
    ) -> Result<T, KafkaError> {
        let slot = self
            .connections
            .lock()
            .expect("connections lock")
            .entry(broker.address.clone())
            .or_insert_with(|| Arc::new(Slot { label: broker.label.clone(), connection: Default::default() }))
            .clone();
        let exchange = async {
            let mut open = slot.connection.lock().await;
            let mut connection = match open.take().filter(|c| !c.session_ending()) {
                Some(connection) => connection,
                None => {
                    let connecting = Connection::open(
                        &broker.address,
                        slot.label.clone(),
                        self.client_id.clone(),
                        &self.security,
                        self.max_response_bytes,
                        &self.counts,
                    );
                    tokio::time::timeout(CONNECT_TIMEOUT, connecting).await.map_err(|_| {
                        KafkaError::Unreachable(format!(
                            "{} did not accept a connection within {CONNECT_TIMEOUT:?}",
                            slot.label
                        ))
                    })??
                }
            };
            let result = exchange(&mut connection).await;
            if !connection.broken {
                *open = Some(connection);
            }
            result
        };
        tokio::time::timeout_at(deadline, exchange).await.map_err(|_| KafkaError::Timeout(api))?
    }
}

/// A group's offsets from its OffsetFetch answer: every partition of `scope`, None where nothing
/// is committed (Kafka answers -1).
fn offsets_of(group: &str, topics: &BTreeMap<String, i32>, answer: &OffsetFetchResponseGroup) -> Answer<TopicOffsets> {
    if let Some(error) = ResponseError::try_from_code(answer.error_code) {
        return if moved(error) {
            Answer::Moved(error)
        } else {
            Answer::Done(Err(group_error(format!("OffsetFetch of group {group:?}"), error)))
        };
    }
    let mut offsets: TopicOffsets =
        topics.iter().map(|(topic, &count)| (topic.clone(), vec![None; count.max(0) as usize])).collect();
    for topic in &answer.topics {
        let Some(slots) = offsets.get_mut(topic.name.0.as_str()) else { continue };
        for partition in &topic.partitions {
            if let Some(error) = ResponseError::try_from_code(partition.error_code) {
                let tp = TopicPartition { topic: topic.name.0.to_string(), partition: partition.partition_index };
                return Answer::Done(Err(group_error(
                    format!("OffsetFetch of group {group:?}, partition {tp}"),
                    error,
                )));
            }
            if let Some(slot) = usize::try_from(partition.partition_index).ok().and_then(|i| slots.get_mut(i)) {
                *slot = (partition.committed_offset >= 0).then_some(partition.committed_offset);
            }
        }
    }
    Answer::Done(Ok(offsets))
}

fn classic_description(group: &ClassicDescribedGroup) -> Result<GroupDescription, KafkaError> {
    // Only the consumer protocol's assignments have a known layout (Connect's, for one, do not).
    let consumer = group.protocol_type.as_str() == "consumer";
    let group_id = group.group_id.0.as_str();
    let members = describe_members(group_id, &group.members, |m, budget| {
        Ok(MemberDescription {
            member_id: m.member_id.to_string(),
            client_id: m.client_id.to_string(),
            host: m.client_host.to_string(),
            assignment: if consumer { parse_assignment(&m.member_assignment, budget)? } else { Vec::new() },
        })
    })?;
    Ok(GroupDescription {
        group_id: group_id.to_string(),
        state: GroupState::parse(&group.group_state),
        partition_assignor: group.protocol_data.to_string(),
        protocol: GroupProtocol::Classic,
        members,
    })
}

/// A KIP-848 group, with its members' current assignments (not their targets).
fn consumer_description(group: &ConsumerDescribedGroup) -> Result<GroupDescription, KafkaError> {
    let group_id = group.group_id.0.as_str();
    let members = describe_members(group_id, &group.members, |m, budget| {
        let mut assignment = Vec::new();
        for topic in &m.assignment.topic_partitions {
            let name = budget.topic_name(topic.topic_name.0.as_bytes())?;
            budget.take(topic.partitions.len())?;
            assignment
                .extend(topic.partitions.iter().map(|&partition| TopicPartition { topic: name.clone(), partition }));
        }
        assignment.sort();
        Ok(MemberDescription {
            member_id: m.member_id.to_string(),
            client_id: m.client_id.to_string(),
            host: m.client_host.to_string(),
            assignment,
        })
    })?;
    Ok(GroupDescription {
        group_id: group_id.to_string(),
        state: GroupState::parse(&group.group_state),
        partition_assignor: group.assignor_name.to_string(),
        protocol: GroupProtocol::Consumer,
        members,
    })
}

fn group_id(group: &str) -> GroupId {
    GroupId(StrBytes::from_string(group.to_string()))
}

/// Answers that mean "ask the coordinator again, maybe elsewhere": it moved, or is being elected
/// or loaded (a fresh broker answers COORDINATOR_NOT_AVAILABLE while it creates
/// `__consumer_offsets`).
fn moved(error: ResponseError) -> bool {
    matches!(
        error,
        ResponseError::NotCoordinator
            | ResponseError::CoordinatorNotAvailable
            | ResponseError::CoordinatorLoadInProgress
    )
}

fn group_error(context: String, error: ResponseError) -> KafkaError {
    match error {
        ResponseError::GroupAuthorizationFailed | ResponseError::TopicAuthorizationFailed => {
            KafkaError::Auth(format!("{context}: {error}"))
        }
        _ => KafkaError::Request(format!("{context}: {error}")),
    }
}

/// A `bootstrap.servers` entry: `host:port` or `[v6 address]:port`, after an optional
/// `PLAINTEXT://`; the port defaults to 9092, as in librdkafka.
fn parse_address(server: &str) -> Option<(String, u16)> {
    let server = server.rsplit_once("://").map_or(server, |(_, rest)| rest);
    let (host, port) = match server.strip_prefix('[') {
        Some(rest) => {
            let (host, port) = rest.split_once(']')?;
            (host, port.strip_prefix(':'))
        }
        None => match server.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (server, None),
        },
    };
    let port = port.map_or(Some(9092), |p| p.parse().ok())?;
    (!host.is_empty()).then(|| (host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn properties(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
        entries.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn batches_stay_within_their_budget_and_keep_every_group_in_order() {
        let groups: Vec<String> = (0..10).map(|i| format!("g{i}")).collect();
        let weight = |group: &str| if group == "g4" { 25 } else { 4 };
        let split = batches(groups.clone(), weight, 10);
        assert_eq!(split.concat(), groups, "every group once, in order");
        assert!(split.iter().all(|b| b.len() == 1 || b.iter().map(|g| weight(g)).sum::<usize>() <= 10), "{split:?}");
        assert!(split.contains(&vec!["g4".to_string()]), "a group over the budget goes alone: {split:?}");
        assert_eq!(split.len(), 6, "{split:?}");
        assert_eq!(batches(groups.clone(), |_| 0, usize::MAX), vec![groups], "no budget: one request");
        assert!(batches(Vec::new(), |_| 1, 1).is_empty());
    }

    #[test]
    fn finalized_features_are_named_as_kafka_names_them() {
        let features = |entries: &[(&str, i16)]| ClusterFeatures {
            finalized: entries.iter().map(|(name, level)| (name.to_string(), *level)).collect(),
        };
        let kafka_4_1 = features(&[("metadata.version", 27), ("group.version", 1), ("kraft.version", 1)]);
        assert_eq!(kafka_4_1.metadata_version().as_deref(), Some("4.1-IV1"));
        assert_eq!(kafka_4_1.group_protocols(), ["classic", "consumer"]);
        let kafka_3_7 = features(&[("metadata.version", 19)]);
        assert_eq!(kafka_3_7.metadata_version().as_deref(), Some("3.7-IV4"));
        assert_eq!(kafka_3_7.group_protocols(), ["classic"], "no group.version: the classic protocol only");
        assert_eq!(features(&[("metadata.version", 1)]).metadata_version().as_deref(), Some("3.0-IV1"));
        assert_eq!(features(&[("metadata.version", 40)]).metadata_version().as_deref(), Some("level 40"));
        assert_eq!(features(&[("metadata.version", 0)]).metadata_version().as_deref(), Some("level 0"));
        assert_eq!(features(&[]).metadata_version(), None, "a ZooKeeper cluster has no metadata.version");
    }

    #[test]
    fn bootstrap_entries_are_parsed_as_librdkafka_takes_them() {
        assert_eq!(parse_address("k1:9093"), Some(("k1".into(), 9093)));
        assert_eq!(parse_address("PLAINTEXT://k1:9093"), Some(("k1".into(), 9093)));
        assert_eq!(parse_address("k1"), Some(("k1".into(), 9092)));
        assert_eq!(parse_address("[::1]:9094"), Some(("::1".into(), 9094)));
        assert_eq!(parse_address("k1:port"), None);
        assert_eq!(parse_address(":9092"), None);
    }

    #[test]
    fn refused_properties_are_named_never_their_values() {
        let secret = "Zq9-not-shown";
        for (entries, key) in [
            (vec![("bootstrap.servers", "k:9092"), ("security.protocol", secret)], "security.protocol"),
            (vec![("security.protocol", "PLAINTEXT")], "bootstrap.servers"),
            (vec![("bootstrap.servers", "k:Zq9-not-shown")], "bootstrap.servers"),
        ] {
            let error = GroupReader::new(&properties(&entries)).err().expect("refused");
            let text = error.to_string();
            assert_eq!(error.label(), "config", "{text}");
            assert!(text.contains(key) && !text.contains(secret), "{text}");
        }
        assert!(
            GroupReader::new(&properties(&[("bootstrap.servers", "k:1, k2:2"), ("security.protocol", "plaintext")]))
                .is_ok()
        );
    }
}
