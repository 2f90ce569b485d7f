//! Tells real unconsumed records from trailing transaction markers.
//!
//! A transactional producer's commit writes a control record (the marker) after the data, so the
//! log end sits one past the last record a consumer can see. Consumers commit "last record + 1",
//! which leaves an offset lag of 1 per committed transaction that no consumer can ever drain
//! (KEDA #5675: a drained group never scales to zero). For partitions with a small lag the operator
//! reads from the committed offset with `isolation.level=read_committed`: control records are
//! skipped, so reaching the partition end without a single record proves the lag is only markers.
//! One consumer, one fetch per broker, only for the few partitions that need it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::{KafkaError, TopicPartition};

/// Lag at or below this is checked for markers (one marker per transaction since the commit).
pub const MAX_MARKER_LAG: i64 = 5;

/// Of `candidates` (partition -> committed offset), the partitions that hold at least one
/// readable record at or after the committed offset. Partitions not answered within `timeout`
/// are reported as holding data (the safe side: their lag stays).
pub fn partitions_with_records(
    properties: &BTreeMap<String, String>,
    candidates: &BTreeMap<TopicPartition, i64>,
    timeout: Duration,
) -> Result<BTreeSet<TopicPartition>, KafkaError> {
    if candidates.is_empty() {
        return Ok(BTreeSet::new());
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
        .set("fetch.max.bytes", "1048576")
        .set("max.partition.fetch.bytes", "65536");
    let consumer: BaseConsumer = config.create().map_err(|e| KafkaError::from_client_with(e, properties))?;

    // librdkafka reports end-of-partition with the partition number only, so probe one topic at a
    // time: within a topic the number identifies the partition.
    let mut by_topic: BTreeMap<&str, BTreeMap<i32, i64>> = BTreeMap::new();
    for (tp, &offset) in candidates {
        by_topic.entry(tp.topic.as_str()).or_default().insert(tp.partition, offset);
    }
    let deadline = Instant::now() + timeout;
    let mut with_records = BTreeSet::new();
    for (topic, partitions) in by_topic {
        let mut assignment = TopicPartitionList::new();
        for (&partition, &offset) in &partitions {
            assignment
                .add_partition_offset(topic, partition, Offset::Offset(offset))
                .map_err(KafkaError::from_client)?;
        }
        consumer.assign(&assignment).map_err(KafkaError::from_client)?;
        let mut pending: BTreeSet<i32> = partitions.keys().copied().collect();
        while !pending.is_empty() && Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(100)) {
                None => {}
                // A readable record: real lag.
                Some(Ok(message)) if pending.remove(&message.partition()) => {
                    with_records.insert(TopicPartition { topic: topic.to_string(), partition: message.partition() });
                }
                Some(Ok(_)) => {}
                Some(Err(RdKafkaError::PartitionEOF(partition))) => {
                    // The end came before any record: only control records (markers) were left.
                    pending.remove(&partition);
                }
                Some(Err(error)) => tracing::debug!(%error, topic, "marker probe consumer error"),
            }
        }
        // Partitions not resolved in time keep their lag.
        with_records
            .extend(pending.into_iter().map(|partition| TopicPartition { topic: topic.to_string(), partition }));
    }
    Ok(with_records)
}
