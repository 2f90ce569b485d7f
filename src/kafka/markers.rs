//! Tells real unconsumed records from trailing transaction markers.
//!
//! A transactional producer's commit writes a control record (the marker) after the data, so the
//! log end sits one past the last record a consumer can see. Consumers commit "last record + 1",
//! which leaves an offset lag of 1 per committed transaction that no consumer can ever drain
//! (KEDA #5675: a drained group never scales to zero). For partitions with a small lag the operator
//! reads from the committed offset with `isolation.level=read_committed`: control records are
//! skipped, so reaching the partition end without a single record proves the lag is only markers.
//! The observer probes once per poll, with one consumer, for every group's partitions that need
//! it; a partition read by several groups is probed once, from the lowest committed offset.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::{KafkaError, TopicPartition};

/// Lag at or below this is checked for markers (one marker per transaction since the commit).
pub const MAX_MARKER_LAG: i64 = 5;

/// The probe's librdkafka callbacks. Reaching a partition's end is what the probe waits for, and
/// librdkafka also reports it as a "global error", which rdkafka's default context logs at ERROR
/// on a healthy cluster; any other error is logged once here, at WARN.
struct ProbeContext;

impl ClientContext for ProbeContext {
    fn error(&self, error: RdKafkaError, reason: &str) {
        match error {
            RdKafkaError::PartitionEOF(_) | RdKafkaError::Global(RDKafkaErrorCode::PartitionEOF) => {
                tracing::trace!(reason, "marker probe reached a partition end")
            }
            error => tracing::warn!(%error, reason, "marker probe consumer error"),
        }
    }
}

impl ConsumerContext for ProbeContext {}

/// For each partition of `from` (partition -> first offset to look at), the offset of the last
/// readable record between that offset and the partition's end, or None when the end came
/// without one (only transaction markers were left). Partitions not answered within `timeout` get
/// `i64::MAX`: the safe side, as if records were everywhere.
pub fn last_records(
    properties: &BTreeMap<String, String>,
    from: &BTreeMap<TopicPartition, i64>,
    timeout: Duration,
) -> Result<BTreeMap<TopicPartition, Option<i64>>, KafkaError> {
    if from.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut config = ClientConfig::new();
    for (key, value) in properties {
        config.set(key, value);
    }
    // A throwaway group id: assign() needs none, but librdkafka insists on one for a consumer;
    // nothing is ever committed with it.
    config
        .set("group.id", "consumer-group-operator-marker-probe")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        // Several topics are probed one after the other: an empty fetch must not wait long.
        .set("fetch.wait.max.ms", "100")
        .set("fetch.max.bytes", "1048576")
        .set("max.partition.fetch.bytes", "65536");
    let consumer: BaseConsumer<ProbeContext> =
        config.create_with_context(ProbeContext).map_err(|e| KafkaError::from_client_with(e, properties))?;

    // librdkafka reports end-of-partition with the partition number only, so probe one topic at a
    // time: within a topic the number identifies the partition.
    let mut by_topic: BTreeMap<&str, BTreeMap<i32, i64>> = BTreeMap::new();
    for (tp, &offset) in from {
        by_topic.entry(tp.topic.as_str()).or_default().insert(tp.partition, offset);
    }
    let deadline = Instant::now() + timeout;
    let mut last = BTreeMap::new();
    for (topic, partitions) in by_topic {
        let mut assignment = TopicPartitionList::new();
        for (&partition, &offset) in &partitions {
            assignment
                .add_partition_offset(topic, partition, Offset::Offset(offset))
                .map_err(KafkaError::from_client)?;
        }
        consumer.assign(&assignment).map_err(KafkaError::from_client)?;
        let mut seen: BTreeMap<i32, Option<i64>> = partitions.keys().map(|&p| (p, None)).collect();
        let mut pending: BTreeSet<i32> = partitions.keys().copied().collect();
        while !pending.is_empty() && Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Ok(message)) if pending.contains(&message.partition()) => {
                    seen.insert(message.partition(), Some(message.offset()));
                }
                Some(Ok(_)) => {}
                Some(Err(RdKafkaError::PartitionEOF(partition))) => {
                    pending.remove(&partition);
                }
                Some(Err(error)) => tracing::debug!(%error, topic, "marker probe consumer error"),
            }
        }
        for (partition, record) in seen {
            let record = if pending.contains(&partition) { Some(i64::MAX) } else { record };
            last.insert(TopicPartition { topic: topic.to_string(), partition }, record);
        }
    }
    Ok(last)
}
