//! Log start/end offsets shared by every ConsumerGroup of one connection.
//!
//! One lag cycle needs the log start and log end of every subscribed partition. They are fetched
//! with batched ListOffsets calls (latest every poll, earliest every few minutes, see
//! [`LOG_START_MAX_AGE`]; librdkafka sends one request per leader broker for each) and kept for a
//! short time, so groups reading the same topics within that time share one fetch, including
//! groups whose cycles run at the same moment: the cost of a cycle grows with brokers and distinct
//! topics, not with the number of groups or partitions.

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

/// How long a log start is reused. It moves when retention deletes a segment, which Kafka checks
/// every 5 minutes by default (`log.retention.check.interval.ms`), or on DeleteRecords: lag of a
/// group committed below a moved start is over-counted for at most this long, and a poll costs one
/// ListOffsets per broker instead of two.
pub const LOG_START_MAX_AGE: Duration = Duration::from_secs(300);

/// A cached range and when each end of it was read.
#[derive(Clone, Copy, Debug)]
struct Entry {
    range: LogRange,
    end_at: Instant,
    start_at: Instant,
}

#[derive(Default)]
pub struct LogOffsetCache {
    entries: Mutex<BTreeMap<TopicPartition, Entry>>,
    /// One fetch at a time: cycles that miss together (every group at start-up, or when a
    /// snapshot expires) wait for the fetch in flight and reuse its answer, instead of each
    /// asking Kafka for the same partitions.
    fetching: tokio::sync::Mutex<()>,
}

/// What a lookup found missing: partitions whose end, and those whose start, must be read.
struct Stale {
    ends: Vec<TopicPartition>,
    starts: Vec<TopicPartition>,
}

impl LogOffsetCache {
    /// The ranges of `partitions`; log ends missing or older than `max_age` (and log starts older
    /// than [`LOG_START_MAX_AGE`]) are fetched in one batch each. Returns also whether Kafka was
    /// asked (for metrics and tests).
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
        let earliest: Vec<_> = stale.starts.iter().map(|tp| (tp.clone(), OffsetSpec::Earliest)).collect();
        let latest: Vec<_> = stale.ends.iter().map(|tp| (tp.clone(), OffsetSpec::Latest)).collect();
        let ask = |specs: Vec<(TopicPartition, OffsetSpec)>| async move {
            if specs.is_empty() {
                return Ok(BTreeMap::new());
            }
            client.list_offsets(&specs, IsolationLevel::ReadCommitted, timeout).await
        };
        let (starts, ends) = futures::try_join!(ask(earliest), ask(latest))?;
        let fetched_at = Instant::now();
        let offset = |answers: &BTreeMap<TopicPartition, super::ListedOffset>, tp: &TopicPartition| {
            answers.get(tp).and_then(|o| o.offset).ok_or_else(|| KafkaError::MissingOffsets(tp.clone()))
        };
        let mut entries = self.entries.lock().expect("log offset cache lock");
        // A partition missing from the cache is in both lists: update it once.
        let touched: std::collections::BTreeSet<&TopicPartition> = stale.ends.iter().chain(&stale.starts).collect();
        for tp in touched {
            let previous = entries.get(tp).copied();
            let start = match starts.contains_key(tp) {
                true => offset(&starts, tp)?,
                false => previous.map_or(0, |e| e.range.start),
            };
            let end = match ends.contains_key(tp) {
                true => offset(&ends, tp)?,
                false => previous.map_or(start, |e| e.range.end),
            };
            let start = start.max(0);
            entries.insert(
                tp.clone(),
                Entry {
                    // A start read earlier may be past an end read now only if the log was deleted
                    // and created again; the end is the fresher figure.
                    range: LogRange { start: start.min(end.max(0)), end: end.max(start) },
                    end_at: if ends.contains_key(tp) { fetched_at } else { previous.map_or(fetched_at, |e| e.end_at) },
                    start_at: if starts.contains_key(tp) {
                        fetched_at
                    } else {
                        previous.map_or(fetched_at, |e| e.start_at)
                    },
                },
            );
        }
        let ranges = partitions.iter().map(|tp| (tp.clone(), entries[tp].range)).collect();
        // Forget what nobody asked for in a long time (topics no group reads anymore).
        entries.retain(|_, e| fetched_at.duration_since(e.end_at) < Duration::from_secs(600));
        Ok((ranges, true))
    }

    /// Every range, when all are cached and fresh; otherwise what to fetch.
    fn fresh(
        &self,
        partitions: &[TopicPartition],
        max_age: Duration,
    ) -> Result<BTreeMap<TopicPartition, LogRange>, Stale> {
        let now = Instant::now();
        let entries = self.entries.lock().expect("log offset cache lock");
        let mut ranges = BTreeMap::new();
        let mut stale = Stale { ends: Vec::new(), starts: Vec::new() };
        for tp in partitions {
            let Some(entry) = entries.get(tp) else {
                stale.ends.push(tp.clone());
                stale.starts.push(tp.clone());
                continue;
            };
            let end_fresh = now.duration_since(entry.end_at) <= max_age;
            let start_fresh = now.duration_since(entry.start_at) <= LOG_START_MAX_AGE.max(max_age);
            if !end_fresh {
                stale.ends.push(tp.clone());
            }
            if !start_fresh {
                stale.starts.push(tp.clone());
            }
            if end_fresh && start_fresh {
                ranges.insert(tp.clone(), entry.range);
            }
        }
        if stale.ends.is_empty() && stale.starts.is_empty() { Ok(ranges) } else { Err(stale) }
    }
}
