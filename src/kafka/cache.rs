//! One Kafka client per distinct connection (bootstrap servers + client properties), shared by
//! every ConsumerGroup that uses it and closed when none does.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::stats::RequestCounts;
use super::{KafkaClient, KafkaError};

/// How long an unused client is kept (a ConsumerGroup between two reconciles still uses it).
const IDLE: Duration = Duration::from_secs(300);

/// Connection properties -> (client, last use).
type Clients = HashMap<BTreeMap<String, String>, (Arc<KafkaClient>, Instant)>;

#[derive(Default)]
pub struct ClientCache {
    clients: Mutex<Clients>,
}

impl ClientCache {
    /// The client for these properties, created on first use.
    pub fn get_or_create(&self, properties: &BTreeMap<String, String>) -> Result<Arc<KafkaClient>, KafkaError> {
        let mut clients = self.clients.lock().expect("client cache lock");
        if let Some((client, last_used)) = clients.get_mut(properties) {
            *last_used = Instant::now();
            return Ok(client.clone());
        }
        let client = Arc::new(KafkaClient::new(properties)?);
        clients.insert(properties.clone(), (client.clone(), Instant::now()));
        tracing::info!(connections = clients.len(), "opened a Kafka connection");
        Ok(client)
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

    /// Closes clients nobody used for a while and nobody holds.
    pub fn sweep(&self) {
        self.sweep_idle(IDLE);
    }

    fn sweep_idle(&self, idle: Duration) {
        let mut clients = self.clients.lock().expect("client cache lock");
        let before = clients.len();
        clients.retain(|_, (client, last_used)| Arc::strong_count(client) > 1 || last_used.elapsed() < idle);
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

    #[test]
    fn one_client_per_distinct_connection_and_idle_ones_are_closed() {
        let cache = ClientCache::default();
        let a = cache.get_or_create(&props("127.0.0.1:1")).unwrap();
        let again = cache.get_or_create(&props("127.0.0.1:1")).unwrap();
        assert!(Arc::ptr_eq(&a, &again), "same properties share one client");
        let b = cache.get_or_create(&props("127.0.0.1:2")).unwrap();
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(cache.len(), 2);
        drop((again, b));
        cache.sweep_idle(Duration::ZERO);
        assert_eq!(cache.len(), 1, "the client still held is kept, the unused one closed");
        drop(a);
        cache.sweep_idle(Duration::ZERO);
        assert!(cache.is_empty());
    }
}
