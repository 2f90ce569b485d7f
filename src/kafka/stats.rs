//! Counts of the Kafka requests a client sent, by request type (OffsetFetch, ListOffsets, ...),
//! read from librdkafka's own statistics. They make the cost of a lag cycle measurable: the
//! benchmark prints them and `/metrics` exports them, so "cost grows with brokers and groups, not
//! with partitions" can be checked on a live cluster instead of taken on trust.

use std::collections::BTreeMap;
use std::sync::Mutex;

use rdkafka::client::ClientContext;
use rdkafka::consumer::ConsumerContext;
use serde::Deserialize;

/// How often librdkafka emits statistics when the client properties do not say.
pub const DEFAULT_INTERVAL_MS: &str = "15000";

/// Cumulative request counts by request type, summed over every broker connection of a client.
pub type RequestCounts = BTreeMap<String, i64>;

/// A librdkafka client context that keeps the latest request counts of its client.
#[derive(Default)]
pub struct RequestCounting {
    latest: Mutex<RequestCounts>,
}

impl RequestCounting {
    /// The counts as of librdkafka's last statistics emission.
    pub fn counts(&self) -> RequestCounts {
        self.latest.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

impl ClientContext for RequestCounting {
    fn stats_raw(&self, statistics: &[u8]) {
        match request_counts(statistics) {
            Ok(counts) => {
                if let Ok(mut latest) = self.latest.lock() {
                    *latest = counts;
                }
            }
            Err(error) => tracing::debug!(%error, "unreadable librdkafka statistics"),
        }
    }
}

impl ConsumerContext for RequestCounting {}

#[derive(Deserialize)]
struct Statistics {
    #[serde(default)]
    brokers: BTreeMap<String, BrokerStatistics>,
}

#[derive(Deserialize)]
struct BrokerStatistics {
    /// Requests sent, by request type.
    #[serde(default)]
    req: BTreeMap<String, i64>,
}

/// Sums the `brokers.*.req` counters of a librdkafka statistics document; request types never
/// sent are left out.
pub fn request_counts(statistics: &[u8]) -> Result<RequestCounts, serde_json::Error> {
    let statistics: Statistics = serde_json::from_slice(statistics)?;
    let mut counts = RequestCounts::new();
    for broker in statistics.brokers.into_values() {
        for (request, count) in broker.req {
            *counts.entry(request).or_default() += count;
        }
    }
    counts.retain(|_, count| *count > 0);
    Ok(counts)
}

/// `now - before` per request type (types without new requests are left out).
pub fn delta(now: &RequestCounts, before: &RequestCounts) -> RequestCounts {
    now.iter()
        .map(|(request, count)| (request.clone(), count - before.get(request).copied().unwrap_or(0)))
        .filter(|(_, count)| *count > 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_summed_over_brokers_and_zeros_dropped() {
        let json = br#"{"name": "c", "brokers": {
            "127.0.0.1:9092/1": {"name": "x", "req": {"OffsetFetch": 3, "ListOffsets": 2, "Produce": 0}},
            "127.0.0.1:9093/2": {"req": {"ListOffsets": 5, "Metadata": 1}},
            "GroupCoordinator": {"req": {"FindCoordinator": 1}}
        }, "topics": {}}"#;
        let counts = request_counts(json).unwrap();
        assert_eq!(
            counts,
            BTreeMap::from([
                ("FindCoordinator".to_string(), 1),
                ("ListOffsets".to_string(), 7),
                ("Metadata".to_string(), 1),
                ("OffsetFetch".to_string(), 3),
            ])
        );
        assert!(request_counts(b"{}").unwrap().is_empty());
        assert!(request_counts(b"not json").is_err());
    }

    #[test]
    fn delta_keeps_only_what_grew() {
        let before = BTreeMap::from([("OffsetFetch".to_string(), 3), ("Metadata".to_string(), 1)]);
        let now = BTreeMap::from([
            ("OffsetFetch".to_string(), 5),
            ("Metadata".to_string(), 1),
            ("ListOffsets".to_string(), 2),
        ]);
        assert_eq!(
            delta(&now, &before),
            BTreeMap::from([("ListOffsets".to_string(), 2), ("OffsetFetch".to_string(), 2)])
        );
    }

    #[test]
    fn the_context_keeps_the_latest_document() {
        let context = RequestCounting::default();
        assert!(context.counts().is_empty());
        context.stats_raw(br#"{"brokers": {"b": {"req": {"OffsetFetch": 1}}}}"#);
        context.stats_raw(b"garbage");
        assert_eq!(context.counts(), BTreeMap::from([("OffsetFetch".to_string(), 1)]));
    }
}
