//! Log start/end offsets shared by every ConsumerGroup of one connection.
//!
//! One lag cycle needs the log start and log end of every subscribed partition. They are fetched
//! with two batched ListOffsets calls (earliest, latest; librdkafka sends one request per leader
//! broker for each) and kept for a short time, so groups reading the same topics within that time
//! share one fetch, including groups whose cycles run at the same moment: the cost of a cycle
//! grows with brokers and distinct topics, not with the number of groups or partitions.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{IsolationLevel, KafkaClient, KafkaError, OffsetSpec, TopicPartition};

/// Offsets of one partition's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogRange {
    pub start: i64,
    /// The log end a read_committed consumer can reach (the last stable offset): records of open
    /// transactions are not lag yet.
    pub end: i64,
}

#[derive(Default)]
pub struct LogOffsetCache {
    entries: Mutex<BTreeMap<TopicPartition, (LogRange, Instant)>>,
    /// One fetch at a time: cycles that miss together (every group at start-up, or when a
    /// snapshot expires) wait for the fetch in flight and reuse its answer, instead of each
    /// asking Kafka for the same partitions.
    fetching: tokio::sync::Mutex<()>,
}

impl LogOffsetCache {
    /// The ranges of `partitions`; those missing or older than `max_age` are fetched in one batch.
    /// Returns also whether Kafka was asked (for metrics and tests).
    pub async fn get(
        &self,
        client: &KafkaClient,
        partitions: &[TopicPartition],
        max_age: Duration,
        timeout: Duration,
    ) -> Result<(BTreeMap<TopicPartition, LogRange>, bool), KafkaError> {
        if let Ok(cached) = self.fresh(partitions, max_age) {
            return Ok((cached, false));
        }
        let _fetching = self.fetching.lock().await;
        let stale = match self.fresh(partitions, max_age) {
            Ok(cached) => return Ok((cached, false)),
            Err(stale) => stale,
        };
        let earliest: Vec<_> = stale.iter().map(|tp| (tp.clone(), OffsetSpec::Earliest)).collect();
        let latest: Vec<_> = stale.iter().map(|tp| (tp.clone(), OffsetSpec::Latest)).collect();
        let (starts, ends) = futures::try_join!(
            client.list_offsets(&earliest, IsolationLevel::ReadCommitted, timeout),
            client.list_offsets(&latest, IsolationLevel::ReadCommitted, timeout),
        )?;
        let fetched_at = Instant::now();
        let mut fetched = BTreeMap::new();
        for tp in &stale {
            let (Some(start), Some(end)) = (starts.get(tp).and_then(|o| o.offset), ends.get(tp).and_then(|o| o.offset))
            else {
                return Err(KafkaError::MissingOffsets(tp.clone()));
            };
            fetched.insert(tp.clone(), LogRange { start: start.max(0), end: end.max(start) });
        }
        let mut entries = self.entries.lock().expect("log offset cache lock");
        for (tp, range) in fetched {
            entries.insert(tp, (range, fetched_at));
        }
        let ranges = partitions.iter().map(|tp| (tp.clone(), entries[tp].0)).collect();
        // Forget what nobody asked for in a long time (topics no group reads anymore).
        entries.retain(|_, (_, at)| fetched_at.duration_since(*at) < Duration::from_secs(600));
        Ok((ranges, true))
    }

    /// Every range, when all are cached and fresh; otherwise the partitions to fetch.
    fn fresh(
        &self,
        partitions: &[TopicPartition],
        max_age: Duration,
    ) -> Result<BTreeMap<TopicPartition, LogRange>, Vec<TopicPartition>> {
        let now = Instant::now();
        let entries = self.entries.lock().expect("log offset cache lock");
        let mut ranges = BTreeMap::new();
        let mut stale = Vec::new();
        for tp in partitions {
            match entries.get(tp).filter(|(_, at)| now.duration_since(*at) <= max_age) {
                Some((range, _)) => {
                    ranges.insert(tp.clone(), *range);
                }
                None => stale.push(tp.clone()),
            }
        }
        if stale.is_empty() { Ok(ranges) } else { Err(stale) }
    }
}
