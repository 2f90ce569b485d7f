//! What both controllers share: the Kubernetes client and Event recorder, the caches of
//! ConsumerGroups and OffsetResets, the Kafka clients and observers (one per connection), the
//! operator's defaults and limits, and the error categories that drive backoff. Neither
//! controller is imported here: they are siblings that both import this.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::broadcast;

use crate::cli::RunArgs;
use crate::crd::{ConsumerGroup, OffsetReset};
use crate::kafka::observer::{Observer, Snapshot};
use crate::kafka::{ClientCache, KafkaError};
use crate::kafka_settings::{ConnectionStores, DefaultConnection, KafkaSettings};
use crate::metrics::{Metrics, TaskLabels};

/// The field manager of every write, and the Event reporter.
pub const MANAGER: &str = "consumer-group-operator";

/// How long a Kafka connection is kept after it was opened even when no ConsumerGroup has recorded
/// it as in use (an OffsetReset may open its group's connection before that group's reconcile).
const CONNECTION_GRACE: Duration = Duration::from_secs(30);

/// What kind of failure a reconcile error is; it decides when to try again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Category {
    /// May pass by itself (a timeout, a conflict, a restart): retried soon, backing off.
    Transient,
    /// Needs someone to change a setting (a permission, a credential): retried at the resync.
    Configuration,
    /// No retry will help until the object changes: looked at again rarely.
    Permanent,
}

impl Category {
    /// The delay before the `attempt`-th retry (1-based).
    pub fn retry_after(self, attempt: u32, resync: Duration) -> Duration {
        match self {
            // 2 s, 4 s, 8 s, ... up to 5 minutes.
            Category::Transient => Duration::from_secs(2u64.saturating_pow(attempt.clamp(1, 9)).min(300)),
            Category::Configuration => resync.max(Duration::from_secs(10)),
            Category::Permanent => resync.max(Duration::from_secs(300)),
        }
    }

    /// The category of a Kubernetes API error.
    pub fn of_kube(error: &kube::Error) -> Category {
        match error {
            kube::Error::Api(status) => match status.code {
                401 | 403 => Category::Configuration,
                400 | 422 => Category::Permanent,
                _ => Category::Transient,
            },
            _ => Category::Transient,
        }
    }

    /// The category of a Kafka error.
    pub fn of_kafka(error: &KafkaError) -> Category {
        match error {
            KafkaError::Config(_) | KafkaError::Auth(_) | KafkaError::TopicsNotAuthorized(_) => Category::Configuration,
            error if error.is_transient() => Category::Transient,
            _ => Category::Permanent,
        }
    }
}

/// Publishes Events (events.k8s.io/v1) as this operator.
pub struct Events {
    client: Client,
    reporter: Reporter,
}

impl Events {
    /// A recorder per Event: kube's `Recorder` keeps every Event it published for six minutes to
    /// count repeats, in a table that never shrinks (12 MB after 1,000 new ConsumerGroups). The
    /// operator publishes on transitions only, so repeats are rare and not worth the memory.
    pub async fn publish(&self, event: &Event, reference: &ObjectReference) -> Result<(), kube::Error> {
        Recorder::new(self.client.clone(), self.reporter.clone()).publish(event, reference).await
    }
}

/// Consecutive failed reconciles per object, so that a controller's retries back off (2 s, 4 s,
/// 8 s, ... for transient errors); forgotten at the object's next successful reconcile.
#[derive(Default)]
pub struct Attempts(Mutex<HashMap<ObjectRef<kube::api::DynamicObject>, u32>>);

impl Attempts {
    /// Counts a failure of `object`; returns how many in a row (1 for the first).
    pub fn failed(&self, object: &ObjectRef<kube::api::DynamicObject>) -> u32 {
        let mut attempts = self.0.lock().expect("attempts lock");
        let count = attempts.entry(object.clone()).or_default();
        *count = count.saturating_add(1);
        *count
    }

    /// `object` reconciled: its next failure is a first one again.
    pub fn succeeded(&self, object: &ObjectRef<kube::api::DynamicObject>) {
        self.0.lock().expect("attempts lock").remove(object);
    }
}

/// Shared state of both controllers.
pub struct Context {
    /// Failed reconciles in a row of OffsetResets and named connections (ConsumerGroups keep
    /// theirs in their own context).
    pub attempts: Attempts,
    pub client: Client,
    pub kafka: ClientCache,
    pub events: Events,
    pub stores: Vec<Store<ConsumerGroup>>,
    /// OffsetResets, to hold a group's workload at zero while one of its resets runs.
    pub resets: Vec<Store<OffsetReset>>,
    /// The operator's default Kafka connection (bootstrap servers, client-properties folder) and
    /// its rules on Secrets.
    pub defaults: DefaultConnection,
    /// KafkaConnections and ClusterKafkaConnections, as cached.
    pub connections_cache: ConnectionStores,
    pub kafka_timeout: Duration,
    pub resync: Duration,
    /// How often lag figures in status are refreshed at most.
    pub status_lag_interval: Duration,
    pub metrics: Arc<Metrics>,
    /// How long log offsets fetched for one group are reused by others reading the same topics.
    pub log_offsets_max_age: Duration,
    /// One observer per distinct connection: every Kafka read of the ConsumerGroup reconciles.
    observers: Mutex<HashMap<BTreeMap<String, String>, Arc<Observer>>>,
    /// The connection and group each ConsumerGroup used last: so that connections nobody uses any
    /// more (a deleted group, a rotated Secret) are closed with their caches, and so that a poll
    /// knows whose reconciles it is news to.
    connections: Arc<Mutex<HashMap<ObjectRef<ConsumerGroup>, Use>>>,
    /// After each poll, the ConsumerGroups it has news of (see [`Snapshot::has_news_of`]): their
    /// reconciles follow the polls, so status and /metrics show a poll's figures at once.
    observed: broadcast::Sender<Observed>,
    /// Kafka's cluster id behind each bootstrap server list (as [`kafka_settings::cluster_key`] spells
    /// it), learnt from each connection's metadata: two spellings of one cluster are one cluster
    /// when groupIds are compared.
    cluster_ids: Arc<Mutex<HashMap<String, String>>>,
}

/// The ConsumerGroups a poll has news of.
pub type Observed = Arc<Vec<ObjectRef<ConsumerGroup>>>;

/// What a ConsumerGroup reads through its connection.
#[derive(Clone, Debug, PartialEq)]
struct Use {
    properties: BTreeMap<String, String>,
    group_id: String,
}

impl Context {
    /// The observer of a connection, started on first use (its client created with no lock held).
    pub async fn observer_for(&self, connection: &KafkaSettings) -> Result<Arc<Observer>, KafkaError> {
        if let Some(observer) = self.observers.lock().expect("observers lock").get(&connection.properties)
            && observer.is_running()
        {
            return Ok(observer.clone());
        }
        let client = self.kafka.get_or_create(&connection.properties).await?;
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
        let (users, properties, observed) =
            (self.connections.clone(), connection.properties.clone(), self.observed.clone());
        let (cluster_ids, cluster_key, polled) = (self.cluster_ids.clone(), connection.cluster_key(), client.clone());
        // Runs before the snapshot is published: whoever reads a snapshot finds the cluster's id.
        let on_poll = move |snapshot: &Snapshot| {
            if let Some(id) = polled.cluster_id() {
                cluster_ids.lock().expect("cluster ids lock").insert(cluster_key.clone(), id);
            }
            metrics.lag_collection_duration.observe(snapshot.took.as_secs_f64());
            let with_news: Vec<ObjectRef<ConsumerGroup>> = users
                .lock()
                .expect("connections lock")
                .iter()
                .filter(|(_, used)| used.properties == properties && snapshot.has_news_of(&used.group_id))
                .map(|(key, _)| key.clone())
                .collect();
            // Refused only when no controller listens any more (shutting down).
            if !with_news.is_empty() {
                let _ = observed.send(Arc::new(with_news));
            }
        };
        let observer = Observer::start(client, self.kafka_timeout, self.log_offsets_max_age, Box::new(on_poll));
        observers.insert(connection.properties.clone(), observer.clone());
        Ok(observer)
    }

    /// Records the connection a ConsumerGroup uses now (its previous one may be closed) and the
    /// group it reads there.
    pub fn use_connection(
        &self,
        key: &ObjectRef<ConsumerGroup>,
        properties: &BTreeMap<String, String>,
        group_id: &str,
    ) {
        let mut connections = self.connections.lock().expect("connections lock");
        let unchanged =
            connections.get(key).is_some_and(|used| &used.properties == properties && used.group_id == group_id);
        if !unchanged {
            connections.insert(key.clone(), Use { properties: properties.clone(), group_id: group_id.to_string() });
        }
    }

    /// The cluster id learnt for a bootstrap server list (a [`kafka_settings::cluster_key`]).
    pub fn cluster_id(&self, cluster_key: &str) -> Option<String> {
        self.cluster_ids.lock().expect("cluster ids lock").get(cluster_key).cloned()
    }

    /// Records the cluster id a client read for a bootstrap server list.
    pub fn learn_cluster_id(&self, cluster_key: &str, id: String) {
        self.cluster_ids.lock().expect("cluster ids lock").insert(cluster_key.to_string(), id);
    }

    /// Records that a ConsumerGroup uses no connection now (its connection was refused, or its
    /// groupId is another's): the one it used is closed at the next sweep if nobody else uses it.
    pub fn forget_connection(&self, key: &ObjectRef<ConsumerGroup>) {
        self.connections.lock().expect("connections lock").remove(key);
    }

    /// The ConsumerGroups that exist now, from the caches.
    pub fn live_groups(&self) -> HashSet<ObjectRef<ConsumerGroup>> {
        self.stores.iter().flat_map(|s| s.state()).map(|g| ObjectRef::from(g.as_ref())).collect()
    }

    /// Closes the Kafka clients and observers of connections no live ConsumerGroup uses any more
    /// (deleted, or its Secret rotated), and publishes the request and connection counts.
    pub fn sweep_connections(&self, live: &HashSet<ObjectRef<ConsumerGroup>>) {
        let in_use: HashSet<BTreeMap<String, String>> = {
            let mut connections = self.connections.lock().expect("connections lock");
            connections.retain(|key, _| live.contains(key));
            connections.values().map(|used| used.properties.clone()).collect()
        };
        // Before unused clients close, so their last requests are counted.
        self.metrics.count_kafka_requests(&self.kafka.take_new_requests());

        self.kafka.retain_connections(&in_use, CONNECTION_GRACE);
        // An observer holds its client: drop unused observers first, their clients go next sweep.
        self.observers.lock().expect("observers lock").retain(|properties, _| in_use.contains(properties));
        self.metrics.kafka_connections.set(self.kafka.len() as i64);
    }
}

impl Context {
    pub fn new(
        client: Client,
        stores: Vec<Store<ConsumerGroup>>,
        resets: Vec<Store<OffsetReset>>,
        connection_stores: ConnectionStores,
        metrics: Arc<Metrics>,
        observed: broadcast::Sender<Observed>,
        args: &RunArgs,
    ) -> Context {
        let reporter = Reporter { controller: MANAGER.into(), instance: std::env::var("POD_NAME").ok() };
        Context {
            events: Events { client: client.clone(), reporter },
            client,
            kafka: ClientCache::default(),
            stores,
            resets,
            defaults: DefaultConnection {
                bootstrap_servers: args.default_bootstrap_servers.clone(),
                properties_dir: args.default_client_properties_dir.clone(),
                allowed_group_ids: args.default_allowed_group_ids.clone(),
                operator_namespace: args.operator_namespace.clone(),
                namespace_secrets: args.allow_namespace_secrets,
            },
            connections_cache: connection_stores,
            kafka_timeout: Duration::from_secs(args.kafka_timeout_seconds),
            resync: Duration::from_secs(args.resync_seconds),
            status_lag_interval: Duration::from_secs(args.status_lag_interval_seconds),
            metrics,
            log_offsets_max_age: Duration::from_secs(args.log_offsets_max_age_seconds),
            observers: Mutex::default(),
            connections: Arc::default(),
            observed,
            cluster_ids: Arc::default(),
            attempts: Attempts::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_in_a_row_back_off_and_a_success_starts_over() {
        let attempts = Attempts::default();
        let reset = ObjectRef::<OffsetReset>::new("rewind").within("team-a").erase();
        let other = ObjectRef::<OffsetReset>::new("other").within("team-a").erase();
        let resync = Duration::from_secs(30);
        let delays: Vec<u64> =
            (0..4).map(|_| Category::Transient.retry_after(attempts.failed(&reset), resync).as_secs()).collect();
        assert_eq!(delays, [2, 4, 8, 16]);
        assert_eq!(attempts.failed(&other), 1, "counted per object");
        attempts.succeeded(&reset);
        assert_eq!(attempts.failed(&reset), 1, "a success ends the run");
    }

    #[test]
    fn categories_decide_when_to_try_again() {
        let resync = Duration::from_secs(30);
        let transient: Vec<u64> = (1..=10).map(|a| Category::Transient.retry_after(a, resync).as_secs()).collect();
        assert_eq!(transient, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(Category::Configuration.retry_after(7, resync), resync, "a fix is looked for at the resync");
        assert_eq!(Category::Permanent.retry_after(1, resync), Duration::from_secs(300));

        assert_eq!(Category::of_kafka(&KafkaError::Config("x".into())), Category::Configuration);
        assert_eq!(Category::of_kafka(&KafkaError::Auth("x".into())), Category::Configuration);
        assert_eq!(Category::of_kafka(&KafkaError::Timeout("x")), Category::Transient);
        assert_eq!(Category::of_kafka(&KafkaError::UnknownTopics(vec!["t".into()])), Category::Permanent);
        let status = |code| kube::Error::Api(kube::core::Status::failure("x", "y").with_code(code).boxed());
        assert_eq!(Category::of_kube(&status(403)), Category::Configuration);
        assert_eq!(Category::of_kube(&status(409)), Category::Transient);
        assert_eq!(Category::of_kube(&status(422)), Category::Permanent);
    }
}
