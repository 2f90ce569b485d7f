//! One Kafka client per distinct connection (bootstrap servers + client properties), shared by
//! every ConsumerGroup that uses it and closed when none does: a rotated credential is a new
//! connection, and the old one closes at the next sweep.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::stats::RequestCounts;
use super::{KafkaClient, KafkaError};

/// Connection properties -> (client, when it was opened).
type Clients = HashMap<BTreeMap<String, String>, (Arc<KafkaClient>, Instant)>;

#[derive(Default)]
pub struct ClientCache {
    clients: Mutex<Clients>,
}

impl ClientCache {
    /// The client for these properties, created on first use. Creating one reads PEM files and
    /// the system's CA store: done on the blocking pool, with no lock held, so that other
    /// connections' reconciles go on meanwhile. Two first uses at once may both create one; the
    /// first to finish is kept.
    pub async fn get_or_create(&self, properties: &BTreeMap<String, String>) -> Result<Arc<KafkaClient>, KafkaError> {
        if let Some((client, _)) = self.clients.lock().expect("client cache lock").get(properties) {
            return Ok(client.clone());
        }
        let owned = properties.clone();
        let created = tokio::task::spawn_blocking(move || KafkaClient::new(&owned))
            .await
            .map_err(|e| KafkaError::Internal(format!("creating a Kafka client failed: {e}")))??;
        let mut clients = self.clients.lock().expect("client cache lock");
        let opened = clients.len() + 1;
        let (client, _) = clients.entry(properties.clone()).or_insert_with(|| {
            tracing::info!(connections = opened, "opened a Kafka connection");
            (Arc::new(created), Instant::now())
        });
        Ok(client.clone())
    }

    /// Requests every open client sent since the previous call, by type.
    pub fn take_new_requests(&self) -> RequestCounts {
        let clients = self.clients.lock().expect("client cache lock");
        let mut total = RequestCounts::new();
        for (client, _) in clients.values() {
            for (request, count) in client.take_new_requests() {
                *total.entry(request).or_default() += count;
            }
        }
        total
    }

    /// Closes the clients of connections no ConsumerGroup uses any more (deleted, or its Secret
    /// rotated), unless a call still holds one or it was opened within `grace` (a reconcile that
    /// has not recorded its connection yet).
    pub fn retain_connections(&self, in_use: &HashSet<BTreeMap<String, String>>, grace: Duration) {
        let mut clients = self.clients.lock().expect("client cache lock");
        let before = clients.len();
        clients.retain(|properties, (client, opened)| {
            in_use.contains(properties) || Arc::strong_count(client) > 1 || opened.elapsed() < grace
        });
        if clients.len() < before {
            tracing::info!(
                closed = before - clients.len(),
                connections = clients.len(),
                "closed unused Kafka connections"
            );
        }
    }

    pub fn len(&self) -> usize {
        self.clients.lock().expect("client cache lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(bootstrap: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("bootstrap.servers".to_string(), bootstrap.to_string())])
    }

    #[tokio::test]
    async fn one_client_per_distinct_connection_and_unused_ones_are_closed() {
        let cache = ClientCache::default();
        let a = cache.get_or_create(&props("127.0.0.1:1")).await.unwrap();
        let again = cache.get_or_create(&props("127.0.0.1:1")).await.unwrap();
        assert!(Arc::ptr_eq(&a, &again), "same properties share one client");
        let b = cache.get_or_create(&props("127.0.0.1:2")).await.unwrap();
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(cache.len(), 2);
        drop((again, b));
        let none = HashSet::new();
        cache.retain_connections(&none, Duration::ZERO);
        assert_eq!(cache.len(), 1, "the client still held is kept, the unused one closed");
        drop(a);
        cache.retain_connections(&HashSet::from([props("127.0.0.1:1")]), Duration::ZERO);
        assert_eq!(cache.len(), 1, "a connection in use stays open");
        cache.retain_connections(&none, Duration::from_secs(60));
        assert_eq!(cache.len(), 1, "a connection opened within the grace period stays open");
        cache.retain_connections(&none, Duration::ZERO);
        assert!(cache.is_empty());
    }
}
