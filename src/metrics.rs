//! Prometheus metrics and the HTTP endpoint serving `/metrics`, `/healthz` and `/readyz`.
//!
//! Lag metrics use the names users already graph from kafka_exporter, KMinion and
//! kafka-lag-exporter (`kafka_consumergroup_lag{consumergroup,topic,partition}`, ...), with a
//! `namespace` label for the ConsumerGroup resource. Series of a partition or a ConsumerGroup that
//! went away are removed, so dashboards do not show stale lag.
//!
//! Memory: a ConsumerGroup's series are one [`GroupSeries`] value that holds the lag summary the
//! observer already keeps (an `Arc`), so 1,000 groups of 12 partitions cost no per-series storage;
//! they are written out at scrape time. A scrape streams its text in small chunks instead of
//! building it whole (about 5 MB for 1,000 such groups).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::lag::Summary;

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub struct GroupLabels {
    pub namespace: String,
    pub consumergroup: String,
}

impl GroupLabels {
    fn label_set(&self) -> [(&'static str, &str); 2] {
        [("namespace", self.namespace.as_str()), ("consumergroup", self.consumergroup.as_str())]
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Kafka request type as librdkafka names it (OffsetFetch, ListOffsets, Metadata, ...).
    pub request: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabels {
    /// Which background task (`observer`: a Kafka connection's polling task).
    pub task: String,
}

/// A ConsumerGroup's last measured figures, as the external metrics API serves them.
#[derive(Clone, Debug, PartialEq)]
pub struct ExternalFigures {
    /// The ConsumerGroup's labels (often none: an empty map takes no memory); a labelSelector
    /// selects by them plus `consumergroup=<name>`.
    pub labels: BTreeMap<String, String>,
    pub lag: i64,
    pub max_lag: i64,
    pub max_lag_seconds: f64,
    pub drain_seconds: Option<f64>,
    pub measured_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
}

/// Every series of one ConsumerGroup, replaced whole by each of its reconciles. Absent figures
/// have no series: an HPA or alert must never act on a frozen last value.
#[derive(Clone, Debug, Default)]
pub struct GroupSeries {
    pub replicas: Option<i32>,
    pub desired_replicas: Option<i32>,
    pub partitions: Option<i32>,
    pub members: Option<i32>,
    /// The lag measured this time (shared with the observer's snapshot).
    pub lag: Option<Arc<Summary>>,
    pub per_replica_rate: Option<f64>,
    pub drain_seconds: Option<f64>,
    /// The ConsumerGroup's own labels, which the external metrics API selects by.
    pub labels: BTreeMap<String, String>,
}

/// A gauge's value: counts and offsets are written as integers, rates and seconds as floats.
#[derive(Clone, Copy, Debug)]
enum Value {
    Int(i64),
    Float(f64),
}

impl Value {
    fn encode(self, encoder: prometheus_client::encoding::MetricEncoder) -> std::fmt::Result {
        match self {
            Value::Int(value) => ConstGauge::new(value).encode(encoder),
            Value::Float(value) => ConstGauge::new(value).encode(encoder),
        }
    }
}

fn int(value: i32) -> Value {
    Value::Int(i64::from(value))
}

type Figure = fn(&GroupSeries) -> Option<Value>;

/// The per-ConsumerGroup gauges: name, help, and the figure (`None`: no series).
const GROUP_GAUGES: [(&str, &str, Figure); 12] = [
    ("kafka_consumergroup_lag_sum", "Total lag of the group", |g| g.lag.as_ref().map(|l| Value::Int(l.total))),
    ("kafka_consumergroup_max_lag", "Largest partition lag of the group", |g| {
        g.lag.as_ref().map(|l| Value::Int(l.max_partition_lag))
    }),
    ("kafka_consumergroup_max_lag_seconds", "Largest partition time lag of the group", |g| {
        g.lag.as_ref().map(|l| Value::Float(l.max_lag_seconds))
    }),
    (
        "kafka_consumergroup_production_rate",
        "Messages per second written to the group's partitions, over its last polls",
        |g| Some(Value::Float(g.lag.as_ref()?.rates?.produced_per_second)),
    ),
    (
        "kafka_consumergroup_consumption_rate",
        "Messages per second the group committed past, over its last polls",
        |g| g.lag.as_ref()?.rates?.committed_per_second.map(Value::Float),
    ),
    (
        "kafka_consumergroup_per_replica_rate",
        "Messages per second one consumer processes, as learned while its partitions had lag (or spec.scaling.expectedMessagesPerSecondPerReplica)",
        |g| g.per_replica_rate.map(Value::Float),
    ),
    (
        "kafka_consumergroup_drain_seconds",
        "Seconds until the lag is consumed at the measured rates (absent while it does not shrink)",
        |g| g.drain_seconds.map(Value::Float),
    ),
    ("kafka_consumergroup_members", "Members of the group as reported by Kafka", |g| g.members.map(int)),
    ("kafka_consumergroup_health", "Group health verdict: 0 OK, 1 WARN, 2 REWIND, 3 STALL, 4 STOP", |g| {
        g.lag.as_ref().map(|l| Value::Int(l.health.code()))
    }),
    ("consumergroup_operator_replicas", "Replicas of the ConsumerGroup's workload", |g| g.replicas.map(int)),
    ("consumergroup_operator_desired_replicas", "Replicas the operator wants after every bound", |g| {
        g.desired_replicas.map(int)
    }),
    ("consumergroup_operator_partitions", "Total partitions of the subscribed topics (the replica cap)", |g| {
        g.partitions.map(int)
    }),
];

type PartitionFigure = fn(&crate::lag::PartitionFigures) -> Value;

/// The per-partition gauges.
const PARTITION_GAUGES: [(&str, &str, PartitionFigure); 3] = [
    ("kafka_consumergroup_lag", "Messages between the committed offset and the log end, per partition", |p| {
        Value::Int(p.lag)
    }),
    (
        "kafka_consumergroup_lag_seconds",
        "Age of the oldest unconsumed message per partition (interpolated from log-end history)",
        |p| Value::Float(p.lag_seconds),
    ),
    ("kafka_consumergroup_current_offset", "Committed offset per partition (-1: never committed)", |p| {
        Value::Int(p.committed.unwrap_or(-1))
    }),
];

/// The ConsumerGroups' series, written out from their [`GroupSeries`] at each scrape.
#[derive(Debug, Default)]
struct GroupCollector {
    groups: Mutex<BTreeMap<GroupLabels, Arc<(GroupLabels, GroupSeries)>>>,
}

impl Collector for GroupCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // A snapshot of pointers: the lock is not held while a slow scraper reads.
        let groups: Vec<Arc<(GroupLabels, GroupSeries)>> =
            self.groups.lock().expect("metrics lock").values().cloned().collect();
        for (name, help, figure) in PARTITION_GAUGES {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for entry in &groups {
                let (labels, series) = entry.as_ref();
                let Some(lag) = &series.lag else { continue };
                for partition in &lag.partitions {
                    let partition_labels =
                        (labels.label_set(), ([("topic", &*partition.topic)], [("partition", partition.partition)]));
                    figure(partition).encode(family.encode_family(&partition_labels)?)?;
                }
            }
        }
        for (name, help, figure) in GROUP_GAUGES {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for entry in &groups {
                let (labels, series) = entry.as_ref();
                if let Some(value) = figure(series) {
                    value.encode(family.encode_family(&labels.label_set())?)?;
                }
            }
        }
        Ok(())
    }
}

/// Every metric of the operator.
pub struct Metrics {
    registry: Registry,
    groups: Arc<GroupCollector>,
    pub reconciles: Family<ResultLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub kafka_requests: Family<RequestLabels, Counter>,
    /// Open Kafka connections (one per distinct connection settings in use).
    pub kafka_connections: Gauge,
    /// ConsumerGroups the operator keeps state for (its registry): follows the live ones.
    pub groups_kept: Gauge,
    /// 1 while this instance acts (leader, or no leader election), 0 while it waits as a follower.
    pub leader: Gauge,
    pub reconcile_duration: Histogram,
    pub lag_collection_duration: Histogram,
    /// Background tasks that stopped unexpectedly (a panic) and were started again.
    pub task_restarts: Family<TaskLabels, Counter>,
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let groups = Arc::new(GroupCollector::default());
        let reconciles = Family::<ResultLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let kafka_requests = Family::<RequestLabels, Counter>::default();
        let kafka_connections = Gauge::default();
        let groups_kept = Gauge::default();
        let leader = Gauge::default();
        let reconcile_duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let lag_collection_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let task_restarts = Family::<TaskLabels, Counter>::default();
        registry.register_collector(Box::new(groups.clone()));
        registry.register("consumergroup_operator_reconciles", "Reconciles by result", reconciles.clone());
        registry.register("consumergroup_operator_reconcile_errors", "Reconcile errors by reason", errors.clone());
        registry.register(
            "consumergroup_operator_kafka_requests",
            "Kafka requests sent by the operator's shared clients, by request type (from librdkafka statistics)",
            kafka_requests.clone(),
        );
        registry.register(
            "consumergroup_operator_kafka_connections",
            "Open Kafka connections: one per distinct connection settings in use; a rotated credential or a deleted ConsumerGroup closes its connection",
            kafka_connections.clone(),
        );
        registry.register(
            "consumergroup_operator_groups_kept",
            "ConsumerGroups the operator keeps state for between reconciles; a deleted ConsumerGroup leaves at its delete event",
            groups_kept.clone(),
        );
        registry.register(
            "consumergroup_operator_leader",
            "1 while this instance acts (the leader, or no leader election), 0 while it waits as a follower",
            leader.clone(),
        );
        registry.register(
            "consumergroup_operator_reconcile_duration_seconds",
            "Duration of one reconcile",
            reconcile_duration.clone(),
        );
        registry.register(
            "consumergroup_operator_lag_collection_duration_seconds",
            "Duration of one observer poll: the Kafka round trips that read every group of a connection",
            lag_collection_duration.clone(),
        );
        registry.register(
            "consumergroup_operator_task_restarts",
            "Background tasks that stopped unexpectedly (a panic; see the log) and were started again, by task",
            task_restarts.clone(),
        );
        Metrics {
            task_restarts,
            registry,
            groups,
            reconciles,
            errors,
            kafka_requests,
            kafka_connections,
            groups_kept,
            leader,
            reconcile_duration,
            lag_collection_duration,
            ready: AtomicBool::new(false),
        }
    }

    /// Replaces every series of a ConsumerGroup.
    pub fn set_group(&self, labels: GroupLabels, series: GroupSeries) {
        let entry = Arc::new((labels.clone(), series));
        self.groups.groups.lock().expect("metrics lock").insert(labels, entry);
    }

    /// Removes every series of a ConsumerGroup (deleted).
    pub fn forget_group(&self, labels: &GroupLabels) {
        self.groups.groups.lock().expect("metrics lock").remove(labels);
    }

    /// The external figures of every ConsumerGroup of a namespace whose lag was measured.
    pub fn external_figures(&self, namespace: &str) -> Vec<(String, ExternalFigures)> {
        let groups = self.groups.groups.lock().expect("metrics lock");
        groups
            .iter()
            .filter(|(labels, _)| labels.namespace == namespace)
            .filter_map(|(labels, entry)| {
                let series = &entry.1;
                let lag = series.lag.as_ref()?;
                let figures = ExternalFigures {
                    labels: series.labels.clone(),
                    lag: lag.total,
                    max_lag: lag.max_partition_lag,
                    max_lag_seconds: lag.max_lag_seconds,
                    drain_seconds: crate::lag::seconds_to_drain(
                        lag.total,
                        lag.rates.map(|r| r.produced_per_second),
                        lag.rates.and_then(|r| r.committed_per_second),
                    ),
                    measured_at: lag.measured_at.clone(),
                };
                Some((labels.consumergroup.clone(), figures))
            })
            .collect()
    }

    /// Adds requests counted since the last call (see [`crate::kafka::ClientCache::take_new_requests`]).
    pub fn count_kafka_requests(&self, new: &crate::kafka::stats::RequestCounts) {
        for (request, count) in new {
            if let Ok(count) = u64::try_from(*count) {
                self.kafka_requests.get_or_create(&RequestLabels { request: request.clone() }).inc_by(count);
            }
        }
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Writes the exposition text (OpenMetrics, which Prometheus scrapes natively).
    pub fn encode_to(&self, writer: &mut impl std::fmt::Write) -> std::fmt::Result {
        prometheus_client::encoding::text::encode(writer, &self.registry)
    }

    /// The whole exposition text at once (tests; the endpoint streams it).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        self.encode_to(&mut out).expect("encoding to a String cannot fail");
        out
    }
}

/// Bytes of text sent per chunk of a scrape's response.
const SCRAPE_CHUNK_BYTES: usize = 64 * 1024;

/// Hands a scrape's text to the response in chunks; a client that went away stops the encoding.
struct ChunkSender {
    chunk: String,
    sender: tokio::sync::mpsc::Sender<String>,
}

impl ChunkSender {
    fn send(&mut self) -> std::fmt::Result {
        let full = std::mem::replace(&mut self.chunk, String::with_capacity(SCRAPE_CHUNK_BYTES));
        self.sender.blocking_send(full).map_err(|_| std::fmt::Error)
    }
}

impl std::fmt::Write for ChunkSender {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        self.chunk.push_str(text);
        if self.chunk.len() >= SCRAPE_CHUNK_BYTES { self.send() } else { Ok(()) }
    }
}

async fn metrics_handler(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    let (sender, receiver) = tokio::sync::mpsc::channel::<String>(1);
    // Encoding is synchronous: a blocking thread writes while the response sends what is ready.
    tokio::task::spawn_blocking(move || {
        let mut chunks = ChunkSender { chunk: String::with_capacity(SCRAPE_CHUNK_BYTES), sender };
        if metrics.encode_to(&mut chunks).is_ok() {
            let _ = chunks.send();
        }
    });
    let body = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (Ok::<_, Infallible>(chunk), receiver))
    });
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], Body::from_stream(body))
}

async fn readyz(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    if metrics.is_ready() { (StatusCode::OK, "ok") } else { (StatusCode::SERVICE_UNAVAILABLE, "caches not synced") }
}

/// Binds the endpoint and returns its address (useful with port 0) and the serving future.
pub async fn serve(
    address: SocketAddr,
    metrics: Arc<Metrics>,
) -> std::io::Result<(SocketAddr, impl std::future::Future<Output = std::io::Result<()>>)> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(metrics);
    let listener = tokio::net::TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    Ok((bound, async move {
        crate::http::accept_bounded(listener, MAX_CONNECTIONS, "/metrics", move |tcp, _| {
            let service = hyper_util::service::TowerToHyperService::new(app.clone());
            async move {
                let connection = crate::http::http1().serve_connection(hyper_util::rt::TokioIo::new(tcp), service);
                let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
            }
        })
        .await;
        Ok(())
    }))
}

/// Connections served at once by the /metrics endpoint; more wait in the listen backlog (a
/// scraper and the kubelet's probes need a few). A client holding connections open cannot take
/// every socket of the process, nor keep the probes out for long.
const MAX_CONNECTIONS: usize = 32;

/// The longest a connection stays open (a scrape of 1,000 groups streams in well under a second).
const CONNECTION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(120);

#[cfg(test)]
mod tests {
    use super::*;

    fn group() -> GroupLabels {
        GroupLabels { namespace: "ns".into(), consumergroup: "cg".into() }
    }

    fn partition(partition: i32, lag: i64, committed: Option<i64>) -> crate::lag::PartitionFigures {
        crate::lag::PartitionFigures {
            topic: "t".into(),
            partition,
            committed,
            log_end: committed.unwrap_or(0) + lag,
            lag,
            lag_seconds: 0.5,
        }
    }

    fn lag(partitions: Vec<crate::lag::PartitionFigures>) -> Arc<Summary> {
        let total = partitions.iter().map(|p| p.lag).sum();
        Arc::new(Summary {
            total,
            max_partition_lag: 0,
            measured_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            excluded_partitions: Vec::new(),
            excluded_count: 0,
            scaling_lag: total,
            partitions,
            health: crate::lag::Health::Ok,
            max_lag_seconds: 0.5,
            rates: None,
            recent_capacity: None,
        })
    }

    #[test]
    fn a_groups_series_follow_its_last_figures() {
        let metrics = Metrics::new();
        let series = GroupSeries {
            replicas: Some(2),
            lag: Some(lag(vec![partition(0, 5, Some(10)), partition(1, 7, None)])),
            ..Default::default()
        };
        metrics.set_group(group(), series.clone());
        let text = metrics.encode();
        for line in [
            r#"kafka_consumergroup_lag{namespace="ns",consumergroup="cg",topic="t",partition="1"} 7"#,
            r#"kafka_consumergroup_current_offset{namespace="ns",consumergroup="cg",topic="t",partition="1"} -1"#,
            r#"kafka_consumergroup_lag_seconds{namespace="ns",consumergroup="cg",topic="t",partition="0"} 0.5"#,
            r#"kafka_consumergroup_lag_sum{namespace="ns",consumergroup="cg"} 12"#,
            r#"consumergroup_operator_replicas{namespace="ns",consumergroup="cg"} 2"#,
        ] {
            assert!(text.contains(&format!("{line}\n")), "{line} missing from\n{text}");
        }
        // Figures not measured this time have no series.
        assert!(!text.contains("kafka_consumergroup_production_rate{"), "{text}");
        assert!(!text.contains("kafka_consumergroup_members{"), "{text}");

        let series = GroupSeries { lag: Some(lag(vec![partition(0, 3, Some(12))])), ..series };
        metrics.set_group(group(), series.clone());
        let text = metrics.encode();
        assert!(text.contains(r#"partition="0"} 3"#), "{text}");
        assert!(!text.contains(r#"partition="1""#), "{text}");

        metrics.set_group(group(), GroupSeries { lag: None, ..series });
        let text = metrics.encode();
        assert!(!text.contains("kafka_consumergroup_lag{"), "{text}");
        assert!(!text.contains("kafka_consumergroup_lag_sum{"), "{text}");
        assert!(text.contains(r#"consumergroup_operator_replicas{namespace="ns",consumergroup="cg"} 2"#), "{text}");

        metrics.forget_group(&group());
        let text = metrics.encode();
        assert!(!text.contains(r#"consumergroup="cg""#), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn families_are_not_interleaved() {
        let metrics = Metrics::new();
        for name in ["a", "b"] {
            let labels = GroupLabels { namespace: "ns".into(), consumergroup: name.into() };
            let series =
                GroupSeries { replicas: Some(1), lag: Some(lag(vec![partition(0, 1, Some(1))])), ..Default::default() };
            metrics.set_group(labels, series);
        }
        let text = metrics.encode();
        let names: Vec<&str> =
            text.lines().filter(|l| !l.starts_with('#')).map(|l| l.split(['{', ' ']).next().unwrap()).collect();
        let mut seen = std::collections::BTreeSet::new();
        let mut previous = "";
        for name in names {
            if name != previous {
                assert!(seen.insert(name), "{name} appears in two places:\n{text}");
                previous = name;
            }
        }
        assert!(seen.contains("kafka_consumergroup_lag") && seen.contains("consumergroup_operator_replicas"));
    }

    #[test]
    fn kafka_requests_accumulate_by_type() {
        let metrics = Metrics::new();
        let counts = |n| BTreeMap::from([("OffsetFetch".to_string(), n), ("ListOffsets".to_string(), 2)]);
        metrics.count_kafka_requests(&counts(3));
        metrics.count_kafka_requests(&counts(4));
        let text = metrics.encode();
        assert!(text.contains(r#"consumergroup_operator_kafka_requests_total{request="OffsetFetch"} 7"#), "{text}");
        assert!(text.contains(r#"consumergroup_operator_kafka_requests_total{request="ListOffsets"} 4"#), "{text}");
    }
}
