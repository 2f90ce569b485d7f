//! The operator's Kafka connections, one per distinct set of client properties: its client
//! (shared by every controller) and, for ConsumerGroups, its observer. Which groups read a
//! connection is not kept here (the ConsumerGroup controller's registry knows): the sweep is
//! told which connections are in use, and each poll announces the groupIds it has news of.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast;

use crate::kafka::observer::{Observer, Snapshot};
use crate::kafka::{ClientCache, KafkaClient, KafkaError};
use crate::kafka_settings::KafkaSettings;
use crate::metrics::{Metrics, TaskLabels};

/// How long a Kafka connection is kept after it was opened even when no ConsumerGroup has recorded
/// it as in use (an OffsetReset may open its group's connection before that group's reconcile).
const CONNECTION_GRACE: Duration = Duration::from_secs(30);

/// The groupIds one poll of a connection has news of (see [`Snapshot::has_news_of`]).
#[derive(Debug)]
pub struct PollNews {
    pub connection: BTreeMap<String, String>,
    pub group_ids: BTreeSet<String>,
}

pub struct KafkaConnections {
    clients: ClientCache,
    /// One observer per connection that some ConsumerGroup reads.
    observers: Mutex<HashMap<BTreeMap<String, String>, Arc<Observer>>>,
    /// Kafka's cluster id behind each bootstrap server list (as [`KafkaSettings::cluster_key`]
    /// spells it), learnt from each connection's metadata: two spellings of one cluster are one
    /// cluster when groupIds are compared.
    cluster_ids: Arc<Mutex<HashMap<String, String>>>,
    news: broadcast::Sender<Arc<PollNews>>,
    metrics: Arc<Metrics>,
    /// Each Kafka request's timeout.
    pub timeout: Duration,
    /// How long log offsets fetched for one group are reused by others reading the same topics.
    log_offsets_max_age: Duration,
}

impl KafkaConnections {
    pub fn new(
        metrics: Arc<Metrics>,
        news: broadcast::Sender<Arc<PollNews>>,
        timeout: Duration,
        log_offsets_max_age: Duration,
    ) -> KafkaConnections {
        KafkaConnections {
            clients: ClientCache::default(),
            observers: Mutex::default(),
            cluster_ids: Arc::default(),
            news,
            metrics,
            timeout,
            log_offsets_max_age,
        }
    }

    /// The client of these properties, opened on first use.
    pub async fn client(&self, properties: &BTreeMap<String, String>) -> Result<Arc<KafkaClient>, KafkaError> {
        self.clients.get_or_create(properties).await
    }

    /// The observer of a connection, started on first use (its client created with no lock held).
    pub async fn observer_for(&self, connection: &KafkaSettings) -> Result<Arc<Observer>, KafkaError> {
        if let Some(observer) = self.running_observer(&connection.properties) {
            return Ok(observer);
        }
        let client = self.clients.get_or_create(&connection.properties).await?;
        let mut observers = self.observers.lock().expect("observers lock");
        match observers.get(&connection.properties) {
            Some(observer) if observer.is_running() => return Ok(observer.clone()),
            Some(_) => {
                // Its task panicked (the panic is logged where it happened): a new observer
                // takes over, its groups' next looks wait for the new one's first poll.
                tracing::error!(
                    bootstrap_servers = %connection.bootstrap_servers,
                    "a Kafka observer's polling task stopped; starting a new one"
                );
                self.metrics.task_restarts.get_or_create(&TaskLabels { task: "observer".into() }).inc();
            }
            None => {}
        }
        let metrics = self.metrics.clone();
        let (news, properties) = (self.news.clone(), connection.properties.clone());
        let (cluster_ids, cluster_key, polled) = (self.cluster_ids.clone(), connection.cluster_key(), client.clone());
        // Runs before the snapshot is published: whoever reads a snapshot finds the cluster's id.
        let on_poll = move |snapshot: &Snapshot| {
            if let Some(id) = polled.cluster_id() {
                cluster_ids.lock().expect("cluster ids lock").insert(cluster_key.clone(), id);
            }
            metrics.lag_collection_duration.observe(snapshot.took.as_secs_f64());
            let group_ids = snapshot.groups_with_news();
            // Refused only when no controller listens any more (shutting down).
            if !group_ids.is_empty() {
                let _ = news.send(Arc::new(PollNews { connection: properties.clone(), group_ids }));
            }
        };
        let observer = Observer::start(client, self.timeout, self.log_offsets_max_age, Box::new(on_poll));
        observers.insert(connection.properties.clone(), observer.clone());
        Ok(observer)
    }

    fn running_observer(&self, properties: &BTreeMap<String, String>) -> Option<Arc<Observer>> {
        let observers = self.observers.lock().expect("observers lock");
        observers.get(properties).filter(|observer| observer.is_running()).cloned()
    }

    /// A group no longer reads `properties` (deleted, moved, or its groupId changed): its
    /// interest leaves the connection's observer at once, with what the observer kept for it.
    pub fn withdraw(&self, properties: &BTreeMap<String, String>, group_id: &str) {
        if let Some(observer) = self.observers.lock().expect("observers lock").get(properties) {
            observer.withdraw(group_id);
        }
    }

    /// The cluster id learnt for a bootstrap server list (a [`KafkaSettings::cluster_key`]).
    pub fn cluster_id(&self, cluster_key: &str) -> Option<String> {
        self.cluster_ids.lock().expect("cluster ids lock").get(cluster_key).cloned()
    }

    /// Records the cluster id a client read for a bootstrap server list.
    pub fn learn_cluster_id(&self, cluster_key: &str, id: String) {
        self.cluster_ids.lock().expect("cluster ids lock").insert(cluster_key.to_string(), id);
    }

    /// Closes the clients and observers of connections not `in_use` (past their grace), and
    /// publishes the request and connection counts. Periodic: an unused client has no event of
    /// its own to go with.
    pub fn sweep(&self, in_use: &HashSet<BTreeMap<String, String>>) {
        // Before unused clients close, so their last requests are counted.
        self.metrics.count_kafka_requests(&self.clients.take_new_requests());
        self.clients.retain_connections(in_use, CONNECTION_GRACE);
        // An observer holds its client: drop unused observers first, their clients go next sweep.
        self.observers.lock().expect("observers lock").retain(|properties, _| in_use.contains(properties));
        self.metrics.kafka_connections.set(self.clients.len() as i64);
    }
}
