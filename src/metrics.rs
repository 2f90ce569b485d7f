//! Prometheus metrics and the HTTP endpoint serving `/metrics`, `/healthz` and `/readyz`.
//!
//! Lag metrics use the names users already graph from kafka_exporter, KMinion and
//! kafka-lag-exporter (`kafka_consumergroup_lag{consumergroup,topic,partition}`, ...), with a
//! `namespace` label for the ConsumerGroup resource. Series of a partition or a ConsumerGroup that
//! went away are removed, so dashboards do not show stale lag.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct GroupLabels {
    pub namespace: String,
    pub consumergroup: String,
}

/// Labels of a partition's series. Shared names: 1,000 groups of 12 partitions are 36,000 series,
/// and a copy of each name per series was most of the metrics' memory.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct PartitionLabels {
    pub namespace: Arc<str>,
    pub consumergroup: Arc<str>,
    pub topic: Arc<str>,
    pub partition: i32,
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

type FloatGauge = Gauge<f64, AtomicU64>;

/// Every metric of the operator.
pub struct Metrics {
    registry: Registry,
    pub lag: Family<PartitionLabels, Gauge>,
    pub lag_seconds: Family<PartitionLabels, FloatGauge>,
    pub current_offset: Family<PartitionLabels, Gauge>,
    pub lag_sum: Family<GroupLabels, Gauge>,
    pub max_lag: Family<GroupLabels, Gauge>,
    pub max_lag_seconds: Family<GroupLabels, FloatGauge>,
    pub production_rate: Family<GroupLabels, FloatGauge>,
    pub consumption_rate: Family<GroupLabels, FloatGauge>,
    pub per_replica_rate: Family<GroupLabels, FloatGauge>,
    pub drain_seconds: Family<GroupLabels, FloatGauge>,
    pub members: Family<GroupLabels, Gauge>,
    pub health: Family<GroupLabels, Gauge>,
    pub replicas: Family<GroupLabels, Gauge>,
    pub desired_replicas: Family<GroupLabels, Gauge>,
    pub partitions: Family<GroupLabels, Gauge>,
    pub reconciles: Family<ResultLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub kafka_requests: Family<RequestLabels, Counter>,
    /// Open Kafka connections (one per distinct connection settings in use).
    pub kafka_connections: Gauge,
    /// 1 while this instance acts (leader, or no leader election), 0 while it waits as a follower.
    pub leader: Gauge,
    pub reconcile_duration: Histogram,
    pub lag_collection_duration: Histogram,
    partition_series: Mutex<BTreeMap<GroupLabels, BTreeSet<PartitionLabels>>>,
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
        let lag = Family::<PartitionLabels, Gauge>::default();
        let lag_seconds = Family::<PartitionLabels, FloatGauge>::default();
        let current_offset = Family::<PartitionLabels, Gauge>::default();
        let lag_sum = Family::<GroupLabels, Gauge>::default();
        let max_lag = Family::<GroupLabels, Gauge>::default();
        let max_lag_seconds = Family::<GroupLabels, FloatGauge>::default();
        let production_rate = Family::<GroupLabels, FloatGauge>::default();
        let consumption_rate = Family::<GroupLabels, FloatGauge>::default();
        let per_replica_rate = Family::<GroupLabels, FloatGauge>::default();
        let drain_seconds = Family::<GroupLabels, FloatGauge>::default();
        let members = Family::<GroupLabels, Gauge>::default();
        let health = Family::<GroupLabels, Gauge>::default();
        let replicas = Family::<GroupLabels, Gauge>::default();
        let desired_replicas = Family::<GroupLabels, Gauge>::default();
        let partitions = Family::<GroupLabels, Gauge>::default();
        let reconciles = Family::<ResultLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let kafka_requests = Family::<RequestLabels, Counter>::default();
        let kafka_connections = Gauge::default();
        let leader = Gauge::default();
        let reconcile_duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let lag_collection_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "kafka_consumergroup_lag",
            "Messages between the committed offset and the log end, per partition",
            lag.clone(),
        );
        registry.register(
            "kafka_consumergroup_lag_seconds",
            "Age of the oldest unconsumed message per partition (interpolated from log-end history)",
            lag_seconds.clone(),
        );
        registry.register(
            "kafka_consumergroup_current_offset",
            "Committed offset per partition (-1: never committed)",
            current_offset.clone(),
        );
        registry.register("kafka_consumergroup_lag_sum", "Total lag of the group", lag_sum.clone());
        registry.register("kafka_consumergroup_max_lag", "Largest partition lag of the group", max_lag.clone());
        registry.register(
            "kafka_consumergroup_max_lag_seconds",
            "Largest partition time lag of the group",
            max_lag_seconds.clone(),
        );
        registry.register(
            "kafka_consumergroup_production_rate",
            "Messages per second written to the group's partitions, over its last polls",
            production_rate.clone(),
        );
        registry.register(
            "kafka_consumergroup_consumption_rate",
            "Messages per second the group committed past, over its last polls",
            consumption_rate.clone(),
        );
        registry.register(
            "kafka_consumergroup_per_replica_rate",
            "Messages per second one consumer processes, as learned while its partitions had lag (or spec.scaling.expectedMessagesPerSecondPerReplica)",
            per_replica_rate.clone(),
        );
        registry.register(
            "kafka_consumergroup_drain_seconds",
            "Seconds until the lag is consumed at the measured rates (absent while it does not shrink)",
            drain_seconds.clone(),
        );
        registry.register("kafka_consumergroup_members", "Members of the group as reported by Kafka", members.clone());
        registry.register(
            "kafka_consumergroup_health",
            "Group health verdict: 0 OK, 1 WARN, 2 REWIND, 3 STALL, 4 STOP",
            health.clone(),
        );
        registry.register(
            "consumergroup_operator_replicas",
            "Replicas of the ConsumerGroup's workload",
            replicas.clone(),
        );
        registry.register(
            "consumergroup_operator_desired_replicas",
            "Replicas the operator wants after every bound",
            desired_replicas.clone(),
        );
        registry.register(
            "consumergroup_operator_partitions",
            "Total partitions of the subscribed topics (the replica cap)",
            partitions.clone(),
        );
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
        Metrics {
            registry,
            lag,
            lag_seconds,
            current_offset,
            lag_sum,
            max_lag,
            max_lag_seconds,
            production_rate,
            consumption_rate,
            per_replica_rate,
            drain_seconds,
            members,
            health,
            replicas,
            desired_replicas,
            partitions,
            reconciles,
            errors,
            kafka_requests,
            kafka_connections,
            leader,
            reconcile_duration,
            lag_collection_duration,
            partition_series: Mutex::default(),
            ready: AtomicBool::new(false),
        }
    }

    /// Records the per-partition series of a group and drops the ones it no longer has.
    pub fn set_partition_series(&self, group: &GroupLabels, series: Vec<(PartitionLabels, i64, f64, Option<i64>)>) {
        let keep: BTreeSet<PartitionLabels> = series.iter().map(|(labels, ..)| labels.clone()).collect();
        for (labels, lag, lag_seconds, committed) in &series {
            self.lag.get_or_create(labels).set(*lag);
            self.lag_seconds.get_or_create(labels).set(*lag_seconds);
            self.current_offset.get_or_create(labels).set(committed.unwrap_or(-1));
        }
        let mut known = self.partition_series.lock().expect("metrics lock");
        let previous = known.insert(group.clone(), keep.clone()).unwrap_or_default();
        for stale in previous.difference(&keep) {
            self.remove_partition(stale);
        }
    }

    fn remove_partition(&self, labels: &PartitionLabels) {
        self.lag.remove(labels);
        self.lag_seconds.remove(labels);
        self.current_offset.remove(labels);
    }

    /// Removes every series of a ConsumerGroup (deleted).
    pub fn forget_group(&self, group: &GroupLabels) {
        for family in [&self.members, &self.replicas, &self.desired_replicas, &self.partitions] {
            family.remove(group);
        }
        self.forget_lag(group);
    }

    /// Removes the lag series of a ConsumerGroup whose lag was not measured this time (Kafka
    /// unreachable, offsets unreadable): a missing series is visible, a frozen one misleads.
    pub fn forget_lag(&self, group: &GroupLabels) {
        for family in [&self.lag_sum, &self.max_lag, &self.health] {
            family.remove(group);
        }
        for family in [
            &self.max_lag_seconds,
            &self.production_rate,
            &self.consumption_rate,
            &self.per_replica_rate,
            &self.drain_seconds,
        ] {
            family.remove(group);
        }
        let stale = self.partition_series.lock().expect("metrics lock").remove(group).unwrap_or_default();
        for labels in &stale {
            self.remove_partition(labels);
        }
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

    /// The exposition text (OpenMetrics, which Prometheus scrapes natively).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("encoding to a String cannot fail");
        out
    }
}

async fn metrics_handler(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], metrics.encode())
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
    Ok((bound, async move { axum::serve(listener, app).await }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group() -> GroupLabels {
        GroupLabels { namespace: "ns".into(), consumergroup: "cg".into() }
    }

    fn partition(p: i32) -> PartitionLabels {
        PartitionLabels { namespace: "ns".into(), consumergroup: "cg".into(), topic: "t".into(), partition: p }
    }

    #[test]
    fn stale_partition_series_are_removed() {
        let metrics = Metrics::new();
        metrics.set_partition_series(&group(), vec![(partition(0), 5, 1.0, Some(10)), (partition(1), 7, 2.0, None)]);
        let text = metrics.encode();
        assert!(
            text.contains(r#"kafka_consumergroup_lag{namespace="ns",consumergroup="cg",topic="t",partition="1"} 7"#),
            "{text}"
        );
        assert!(text.contains(
            r#"kafka_consumergroup_current_offset{namespace="ns",consumergroup="cg",topic="t",partition="1"} -1"#
        ));
        metrics.set_partition_series(&group(), vec![(partition(0), 3, 0.5, Some(12))]);
        let text = metrics.encode();
        assert!(text.contains(r#"partition="0"} 3"#));
        assert!(!text.contains(r#"partition="1""#), "{text}");
        metrics.lag_sum.get_or_create(&group()).set(3);
        metrics.forget_group(&group());
        let text = metrics.encode();
        assert!(!text.contains(r#"consumergroup="cg""#), "{text}");
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
