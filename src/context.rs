//! What the controllers share: the Kubernetes client and Event recorder, the caches of
//! ConsumerGroups and OffsetResets, the Kafka connections (clients and observers), the
//! operator's defaults and limits, and the error categories that drive backoff. No controller is
//! imported here: they are siblings that all import this.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::broadcast;

use crate::cli::RunArgs;
use crate::crd::{ConsumerGroup, OffsetReset};
use crate::kafka::KafkaError;
use crate::kafka_connections::{KafkaConnections, PollNews};
use crate::kafka_settings::{ConnectionStores, DefaultConnection};
use crate::metrics::Metrics;

/// The field manager of every write, and the Event reporter.
pub const MANAGER: &str = "consumer-group-operator";

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

/// Shared state of the controllers, in what they talk to (the apiserver, Kafka), what they read
/// without a request (caches), what was configured (settings), and what they count.
pub struct Context {
    pub client: Client,
    pub events: Events,
    /// Kafka clients and observers, one per connection.
    pub kafka: KafkaConnections,
    pub caches: Caches,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    /// Failed reconciles in a row of OffsetResets and named connections (ConsumerGroups keep
    /// theirs in their registry).
    pub attempts: Attempts,
}

/// The watch caches the controllers read from (one store per watched namespace).
pub struct Caches {
    pub groups: Vec<Store<ConsumerGroup>>,
    /// OffsetResets, to hold a group's workload at zero while one of its resets runs.
    pub resets: Vec<Store<OffsetReset>>,
    /// KafkaConnections and ClusterKafkaConnections.
    pub connections: ConnectionStores,
}

/// What the command line configured, fixed for the process's life.
pub struct Settings {
    /// The operator's default Kafka connection (bootstrap servers, client-properties folder) and
    /// its rules on Secrets.
    pub defaults: DefaultConnection,
    pub kafka_timeout: Duration,
    pub resync: Duration,
    /// How often lag figures in status are refreshed at most.
    pub status_lag_interval: Duration,
}

impl Context {
    /// Whether a ConsumerGroup is in the caches (it exists, as far as the watches know).
    pub fn is_live(&self, key: &ObjectRef<ConsumerGroup>) -> bool {
        self.caches.groups.iter().any(|store| store.get(key).is_some())
    }

    pub fn new(
        client: Client,
        stores: Vec<Store<ConsumerGroup>>,
        resets: Vec<Store<OffsetReset>>,
        connection_stores: ConnectionStores,
        metrics: Arc<Metrics>,
        news: broadcast::Sender<Arc<PollNews>>,
        args: &RunArgs,
    ) -> Context {
        let reporter = Reporter { controller: MANAGER.into(), instance: std::env::var("POD_NAME").ok() };
        let kafka_timeout = Duration::from_secs(args.kafka_timeout_seconds);
        Context {
            events: Events { client: client.clone(), reporter },
            client,
            kafka: KafkaConnections::new(
                metrics.clone(),
                news,
                kafka_timeout,
                Duration::from_secs(args.log_offsets_max_age_seconds),
            ),
            caches: Caches { groups: stores, resets, connections: connection_stores },
            settings: Settings {
                defaults: DefaultConnection {
                    bootstrap_servers: args.default_bootstrap_servers.clone(),
                    properties_dir: args.default_client_properties_dir.clone(),
                    allowed_group_ids: args.default_allowed_group_ids.clone(),
                    operator_namespace: args.operator_namespace.clone(),
                    namespace_secrets: args.allow_namespace_secrets,
                },
                kafka_timeout,
                resync: Duration::from_secs(args.resync_seconds),
                status_lag_interval: Duration::from_secs(args.status_lag_interval_seconds),
            },
            metrics,
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
