//! The ConsumerGroup controller: a reconcile pipeline of observe (I/O reads) -> plan/decide (pure)
//! -> act (writes), plus the runtime around it (watches, error policy, shutdown).

pub mod act;
pub mod conditions;
pub mod decide;
pub mod observe;
pub mod plan;
pub mod workload;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Client, ResourceExt};

use crate::cli::RunArgs;
use crate::crd::{ConsumerGroup, ConsumerGroupStatus, MemberStatus, OffsetReset, TopicStatus};
use crate::kafka::observer::{GroupView, Observer};
use crate::kafka::{ClientCache, GroupDescription, KafkaError, TopicPartition};
use crate::lag::GroupHistory;
use crate::metrics::{GroupLabels, Metrics, PartitionLabels, ResultLabels};
use act::Happening;
use decide::Recommendation;
use plan::{KafkaObservation, Observed};

/// How long a Kafka connection is kept after it was opened even when no ConsumerGroup has recorded
/// it as in use (an OffsetReset may open its group's connection before that group's reconcile).
const CONNECTION_GRACE: Duration = Duration::from_secs(30);

/// Members listed in status; memberCount carries the total.
const MAX_MEMBERS_IN_STATUS: usize = 50;

/// Errors a reconcile returns (everything else becomes a condition).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("Kafka request failed: {0}")]
    Kafka(KafkaError),
}

impl Error {
    /// Stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube_api",
            Error::Kafka(error) => error.label(),
        }
    }
}

/// Shared state of the controller.
pub struct Context {
    pub client: Client,
    pub kafka: ClientCache,
    pub recorder: Recorder,
    pub stores: Vec<Store<ConsumerGroup>>,
    /// OffsetResets, to hold a group's workload at zero while one of its resets runs.
    pub resets: Vec<Store<OffsetReset>>,
    /// The operator's default Kafka connection (bootstrap servers, client-properties folder).
    pub defaults: observe::DefaultConnection,
    pub kafka_timeout: Duration,
    pub resync: Duration,
    /// How often lag figures in status are refreshed at most.
    pub status_lag_interval: Duration,
    pub metrics: Arc<Metrics>,
    /// How long log offsets fetched for one group are reused by others reading the same topics.
    pub log_offsets_max_age: Duration,
    /// Consecutive Kafka failures per object, for backoff.
    failures: Mutex<HashMap<ObjectRef<ConsumerGroup>, u32>>,
    /// What the operator remembers per ConsumerGroup between reconciles (in memory: a restart
    /// starts new windows, which only delays a scale-down or a health verdict).
    memory: Mutex<HashMap<ObjectRef<ConsumerGroup>, GroupMemory>>,
    /// One observer per distinct connection: every Kafka read of the ConsumerGroup reconciles.
    observers: Mutex<HashMap<std::collections::BTreeMap<String, String>, Arc<Observer>>>,
    /// The connection each ConsumerGroup used last, so that connections nobody uses any more
    /// (a deleted group, a rotated Secret) are closed with their caches.
    connections: Mutex<HashMap<ObjectRef<ConsumerGroup>, std::collections::BTreeMap<String, String>>>,
}

#[derive(Default)]
struct GroupMemory {
    recommendations: Vec<Recommendation>,
    history: GroupHistory,
    markers: std::collections::BTreeMap<TopicPartition, observe::MarkerMemo>,
}

impl Context {
    fn take_memory(&self, key: &ObjectRef<ConsumerGroup>) -> GroupMemory {
        self.memory.lock().ok().and_then(|mut m| m.remove(key)).unwrap_or_default()
    }

    fn put_memory(&self, key: ObjectRef<ConsumerGroup>, memory: GroupMemory) {
        if let Ok(mut m) = self.memory.lock() {
            m.insert(key, memory);
        }
    }

    /// The observer of a connection, started on first use.
    fn observer_for(&self, connection: &observe::Connection) -> Result<Arc<Observer>, KafkaError> {
        let mut observers = self.observers.lock().expect("observers lock");
        if let Some(observer) = observers.get(&connection.properties) {
            return Ok(observer.clone());
        }
        let client = self.kafka.get_or_create(&connection.properties)?;
        let metrics = self.metrics.clone();
        let observer = Observer::start(
            client,
            self.kafka_timeout,
            self.log_offsets_max_age,
            Box::new(move |snapshot| metrics.lag_collection_duration.observe(snapshot.took.as_secs_f64())),
        );
        observers.insert(connection.properties.clone(), observer.clone());
        Ok(observer)
    }

    /// Records the connection a ConsumerGroup uses now (its previous one may be closed).
    fn use_connection(&self, key: &ObjectRef<ConsumerGroup>, properties: &std::collections::BTreeMap<String, String>) {
        let mut connections = self.connections.lock().expect("connections lock");
        if connections.get(key) != Some(properties) {
            connections.insert(key.clone(), properties.clone());
        }
    }

    /// Drops memory, metrics, Kafka clients and log-offset caches of ConsumerGroups that no longer
    /// exist, and the clients and caches of connections no ConsumerGroup uses any more.
    pub fn sweep(&self) {
        let live: std::collections::HashSet<ObjectRef<ConsumerGroup>> =
            self.stores.iter().flat_map(|s| s.state()).map(|g| ObjectRef::from(g.as_ref())).collect();
        let gone: Vec<ObjectRef<ConsumerGroup>> =
            self.memory.lock().map(|m| m.keys().filter(|k| !live.contains(*k)).cloned().collect()).unwrap_or_default();
        for key in gone {
            if let Ok(mut m) = self.memory.lock() {
                m.remove(&key);
            }
            if let Ok(mut f) = self.failures.lock() {
                f.remove(&key);
            }
            self.metrics.forget_group(&GroupLabels {
                namespace: key.namespace.clone().unwrap_or_default(),
                consumergroup: key.name.clone(),
            });
        }
        let in_use: std::collections::HashSet<std::collections::BTreeMap<String, String>> = {
            let mut connections = self.connections.lock().expect("connections lock");
            connections.retain(|key, _| live.contains(key));
            connections.values().cloned().collect()
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
        metrics: Arc<Metrics>,
        args: &RunArgs,
    ) -> Context {
        let reporter = Reporter { controller: workload::MANAGER.into(), instance: std::env::var("POD_NAME").ok() };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            kafka: ClientCache::default(),
            stores,
            resets,
            defaults: observe::DefaultConnection {
                bootstrap_servers: args.default_bootstrap_servers.clone(),
                properties_dir: args.default_client_properties_dir.clone(),
            },
            kafka_timeout: Duration::from_secs(args.kafka_timeout_seconds),
            resync: Duration::from_secs(args.resync_seconds),
            status_lag_interval: Duration::from_secs(args.status_lag_interval_seconds),
            metrics,
            log_offsets_max_age: Duration::from_secs(args.log_offsets_max_age_seconds),
            failures: Mutex::default(),
            memory: Mutex::default(),
            observers: Mutex::default(),
            connections: Mutex::default(),
        }
    }
}

/// Runs the controller with the kubeconfig (or in-cluster config) until SIGTERM/SIGINT, behind
/// leader election when asked. The HTTP endpoint serves from the start, so followers stay live.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let client = Client::try_default().await?;
    let metrics = Arc::new(Metrics::new());
    let (address, server) = crate::metrics::serve(args.metrics_address, metrics.clone()).await?;
    tokio::spawn(async move {
        if let Err(error) = server.await {
            tracing::error!(%error, "metrics endpoint failed");
        }
    });
    tracing::info!(%address, "serving /metrics, /healthz and /readyz");
    run_elected(client, args, metrics, shutdown_signal()).await
}

/// Runs the controller until `shutdown` completes; with `--leader-election`, only while this
/// instance holds the Lease (a lost Lease stops it with an error, so only the new leader acts).
pub async fn run_elected(
    client: Client,
    args: RunArgs,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    if !args.leader_election {
        metrics.leader.set(1);
        return run_with_client(client, args, metrics, shutdown).await;
    }

    let namespace = args
        .lease_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| "default".to_string());
    let identity = std::env::var("POD_NAME").unwrap_or_else(|_| format!("{}-{}", hostname(), std::process::id()));
    let duration = args.lease_duration_seconds.clamp(2, 3600);
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &args.lease_name)
        .with_namespace(&namespace)
        .with_identity(&identity)
        .with_field_manager(workload::MANAGER)
        .with_duration(duration)
        .with_grace((duration / 3).max(1))
        .build()
        .await?;
    let (mut leading, lease_task) = manager.watch().await;
    // A follower is ready: it reaches the apiserver and can take over. Were it not, a rolling
    // update of two replicas would wait forever for the second one (the Lease and the
    // `consumergroup_operator_leader` metric tell who leads).
    metrics.leader.set(0);
    metrics.set_ready(true);
    tracing::info!(lease = %args.lease_name, %namespace, %identity, "waiting to become the leader");
    let mut signal = Box::pin(shutdown);
    loop {
        if *leading.borrow_and_update() {
            break;
        }
        tokio::select! {
            _ = &mut signal => {
                drop(leading);
                let _ = lease_task.await;
                return Ok(());
            }
            changed = leading.changed() => {
                if changed.is_err() {
                    anyhow::bail!("leader election stopped before this instance became the leader");
                }
            }
        }
    }
    tracing::info!(%identity, "became the leader");
    metrics.leader.set(1);
    let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<()>();
    let watch_leadership = tokio::spawn(async move {
        while leading.changed().await.is_ok() {
            if !*leading.borrow_and_update() {
                break;
            }
        }
        let _ = lost_tx.send(());
        leading
    });
    let lost = Arc::new(AtomicBool::new(false));
    let lost_flag = lost.clone();
    let shutdown = async move {
        tokio::select! {
            _ = signal => {}
            _ = lost_rx => {
                tracing::error!("lost the leader lease; stopping so that only the new leader acts");
                lost_flag.store(true, Ordering::SeqCst);
            }
        }
    };
    let result = run_with_client(client, args, metrics, shutdown).await;
    // Dropping the last receiver makes the lease task release the Lease, so a follower takes
    // over at once instead of waiting for it to expire.
    watch_leadership.abort();
    let _ = watch_leadership.await;
    let _ = lease_task.await;
    tracing::info!("released the leader lease");
    if lost.load(Ordering::SeqCst) {
        anyhow::bail!("lost the leader lease");
    }
    result
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "operator".into())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutdown requested; finishing in-flight reconciles");
}

/// Runs the controller with a given client until `shutdown` completes. One controller per
/// watched namespace (or one for all namespaces), sharing one context.
pub async fn run_with_client(
    client: Client,
    args: RunArgs,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let scopes: Vec<Option<String>> =
        if args.namespaces.is_empty() { vec![None] } else { args.namespaces.iter().cloned().map(Some).collect() };
    let api = |namespace: &Option<String>| -> Api<ConsumerGroup> {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    };
    for scope in &scopes {
        if let Err(error) = api(scope).list(&kube::api::ListParams::default().limit(1)).await {
            anyhow::bail!(
                "cannot list ConsumerGroups ({error}); are the CRDs installed? Install them with `consumer-group-operator crd | kubectl apply --server-side -f -`"
            );
        }
    }
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));
    let scoped = |scope: &Option<String>| match scope {
        Some(ns) => {
            (Api::<Deployment>::namespaced(client.clone(), ns), Api::<OffsetReset>::namespaced(client.clone(), ns))
        }
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    // Both kinds trigger reconciles on spec changes only (metadata.generation): the operator's own
    // status writes do not come back as work. Their caches keep no managedFields nor
    // last-applied annotation, which the operator never reads.
    let reset_controllers: Vec<_> = scopes
        .iter()
        .map(|scope| {
            let (reader, writer) = reflector::store();
            let resets = watcher::watcher(scoped(scope).1, watcher::Config::default().any_semantic())
                .default_backoff()
                .modify(slim)
                .reflect(writer)
                .applied_objects()
                .predicate_filter(predicates::generation, Default::default());
            Controller::for_stream(resets, reader).graceful_shutdown_on(shutdown.clone())
        })
        .collect();
    let controllers: Vec<_> = scopes
        .iter()
        .map(|scope| {
            let (deployments, resets) = scoped(scope);
            let (reader, writer) = reflector::store();
            let groups = watcher::watcher(api(scope), watcher::Config::default().any_semantic())
                .default_backoff()
                .modify(slim)
                .reflect(writer)
                .applied_objects()
                .predicate_filter(predicates::generation, Default::default());
            Controller::for_stream(groups, reader)
                .owns(deployments, watcher::Config::default().labels(workload::MANAGED_BY_LABEL))
                // A reset changing phase holds or releases its ConsumerGroup's workload.
                .watches(resets, watcher::Config::default(), |reset: OffsetReset| {
                    let namespace = reset.namespace()?;
                    Some(ObjectRef::new(&reset.spec.consumer_group).within(&namespace))
                })
                .graceful_shutdown_on(shutdown.clone())
        })
        .collect();
    let stores: Vec<Store<ConsumerGroup>> = controllers.iter().map(|c| c.store()).collect();
    let reset_stores: Vec<Store<OffsetReset>> = reset_controllers.iter().map(|c| c.store()).collect();
    {
        let (stores, metrics) = (stores.clone(), metrics.clone());
        tokio::spawn(async move {
            for store in stores {
                // The store's readiness future keeps one waker, and the controller's own runner
                // waits on it too, so poll it again periodically instead of relying on a wake-up.
                loop {
                    match tokio::time::timeout(Duration::from_millis(250), store.wait_until_ready()).await {
                        Ok(Ok(())) => break,
                        Ok(Err(error)) => {
                            tracing::error!(%error, "a ConsumerGroup cache stopped before its first sync");
                            return;
                        }
                        Err(_elapsed) => {}
                    }
                }
            }
            metrics.set_ready(true);
            tracing::info!("caches synced; ready");
        });
    }
    let context = Arc::new(Context::new(client, stores, reset_stores, metrics, &args));
    {
        let context = context.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(context.resync.min(Duration::from_secs(10)));
            loop {
                tick.tick().await;
                context.sweep();
            }
        });
    }
    tracing::info!(
        namespaces = ?args.namespaces,
        default_bootstrap_servers = ?args.default_bootstrap_servers,
        default_client_properties_dir = ?args.default_client_properties_dir,
        "consumer-group-operator started"
    );
    let streams = controllers.into_iter().map(|controller| {
        controller.run(reconcile, error_policy, context.clone()).for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(%object, "reconciled"),
                Err(error) => tracing::warn!(%error, "reconcile failed"),
            }
        })
    });
    let reset_streams = reset_controllers.into_iter().map(|controller| {
        controller.run(crate::reset::reconcile, reset_error_policy, context.clone()).for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(%object, "reconciled"),
                Err(error) => tracing::warn!(%error, "offset reset reconcile failed"),
            }
        })
    });
    futures::future::join(futures::future::join_all(streams), futures::future::join_all(reset_streams)).await;
    tracing::info!("consumer-group-operator stopped");
    Ok(())
}

/// Drops what the operator never reads from cached objects: managedFields and kubectl's
/// last-applied annotation are often larger than the rest of the object.
fn slim<K: kube::Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

fn error_policy(group: Arc<ConsumerGroup>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.errors.get_or_create(&crate::metrics::ErrorLabels { reason: error.label().to_string() }).inc();
    let attempt = ctx.failures.lock().map(|mut f| bump(&mut f, ObjectRef::from(group.as_ref()))).unwrap_or(1);
    let delay = backoff(attempt);
    tracing::warn!(group = %group.name_any(), %error, label = error.label(), ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}

fn reset_error_policy(reset: Arc<OffsetReset>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.errors.get_or_create(&crate::metrics::ErrorLabels { reason: error.label().to_string() }).inc();
    tracing::warn!(reset = %reset.name_any(), %error, "offset reset step failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

fn bump(failures: &mut HashMap<ObjectRef<ConsumerGroup>, u32>, key: ObjectRef<ConsumerGroup>) -> u32 {
    let count = failures.entry(key).or_default();
    *count = count.saturating_add(1);
    *count
}

/// 2 s, 4 s, 8 s, ... up to 5 minutes.
fn backoff(attempt: u32) -> Duration {
    Duration::from_secs(2u64.saturating_pow(attempt.min(9)).min(300))
}

/// The earliest-created other ConsumerGroup claiming the same groupId in the same Kafka cluster.
fn conflicting_owner(ctx: &Context, group: &ConsumerGroup) -> Option<String> {
    let default = ctx.defaults.bootstrap_servers.as_deref();
    let cluster = observe::bootstrap_servers(group, default).map(|b| observe::cluster_key(&b));
    let rank = |g: &ConsumerGroup| (g.metadata.creation_timestamp.clone(), g.namespace(), g.name_any());
    ctx.stores
        .iter()
        .flat_map(|store| store.state())
        .filter(|other| other.metadata.uid != group.metadata.uid && other.metadata.deletion_timestamp.is_none())
        .filter(|other| other.spec.group_id == group.spec.group_id)
        .filter(|other| observe::bootstrap_servers(other, default).map(|b| observe::cluster_key(&b)) == cluster)
        .filter(|other| rank(other) < rank(group))
        .min_by_key(|other| rank(other))
        .map(|other| format!("{}/{}", other.namespace().unwrap_or_default(), other.name_any()))
}

pub async fn reconcile(group: Arc<ConsumerGroup>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = reconcile_inner(group, ctx.clone()).await;
    ctx.metrics.reconcile_duration.observe(started.elapsed().as_secs_f64());
    let outcome = if result.is_ok() { "success" } else { "error" };
    ctx.metrics.reconciles.get_or_create(&ResultLabels { result: outcome.to_string() }).inc();
    result
}

async fn reconcile_inner(group: Arc<ConsumerGroup>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = ObjectRef::from(group.as_ref());
    let namespace = group.namespace().unwrap_or_default();
    // Whole seconds, as the API stores times: a finer time in memory would never equal the stored
    // one, and every status comparison would find a change.
    let now = Time(
        k8s_openapi::jiff::Timestamp::from_second(k8s_openapi::jiff::Timestamp::now().as_second())
            .expect("now is a valid time"),
    );
    let previous = group.status.clone().unwrap_or_default();

    // Observe.
    let conflict_with = conflicting_owner(&ctx, &group);
    let mut connection = None;
    let mut connection_problem = None;
    if conflict_with.is_none() {
        match observe::connection(&ctx.client, &group, &ctx.defaults).await? {
            Ok(c) => connection = Some(c),
            Err(problem) => connection_problem = Some(problem),
        }
    }
    let workload = observe::workload(&ctx.client, &group).await?;
    let workload_replicas = match (&workload, &group.spec.scale_target_ref) {
        (Some(w), _) => Ok(w.replicas),
        (None, Some(target)) => Err(format!("{:?}/{}", target.kind, target.name)),
        (None, None) => Ok(None),
    };
    let mut memory = ctx.take_memory(&key);
    let mut outcome = KafkaOutcome::default();
    if let (Some(connection), Ok(_)) = (&connection, &workload_replicas) {
        ctx.use_connection(&key, &connection.properties);
        outcome = observe_kafka(&ctx, &group, connection, &mut memory, &now).await;
    }
    let KafkaOutcome { kafka, description, described, lag: lag_summary } = outcome;

    // Decide.
    let reset_in_progress = ctx.resets.iter().find_map(|store| crate::reset::holding_reset(store, &group));
    let held_by_reset = conditions::find(&previous.conditions, conditions::READY)
        .is_some_and(|c| c.reason == conditions::reason::OFFSET_RESET_IN_PROGRESS);
    let resume_after_reset = if held_by_reset && reset_in_progress.is_none() {
        ctx.resets.iter().find_map(|store| crate::reset::released_replicas(store, &group))
    } else {
        None
    };
    let mut plan = plan::plan(&Observed {
        group: &group,
        reset_in_progress,
        resume_after_reset,
        conflict_with,
        connection: connection_problem,
        workload_replicas: workload_replicas.clone(),
        kafka: kafka.clone(),
        scaling_lag: lag_summary.as_ref().map(|s| s.scaling_lag),
        now_seconds: now.0.as_second(),
        history: &memory.recommendations,
    });
    memory.recommendations = plan.history.clone();
    ctx.put_memory(key.clone(), memory);

    // Act.
    let current = workload_replicas.clone().ok().flatten();
    let mut happenings = Vec::new();
    let mut replicas_now = current;
    let mut scaled = false;
    if let (Some(template), Some(connection)) = (&group.spec.template, &connection) {
        // Apply the template whenever the replica count is known, so template edits and hand edits
        // are reconciled even while the replica decision is on hold.
        if let Some(replicas) = plan.replicas.or(current) {
            let deployment = workload::deployment(&group, template, &connection.bootstrap_servers, replicas);
            let live = workload.as_ref().and_then(|w| w.deployment.as_ref());
            let applied = match live {
                // Already as wanted: no write, and so no watch event that would reconcile again.
                Some(live) if workload::is_applied(&deployment, live) => Ok(()),
                _ => act::apply_deployment(&ctx.client, &deployment).await,
            };
            match applied {
                Ok(()) => {
                    replicas_now = Some(replicas);
                    scaled = current != Some(replicas);
                }
                // The apiserver refused the Deployment built from spec.template (a field the CRD
                // schema leaves open, e.g. a malformed quantity): only a spec change fixes it.
                // Server-side apply reports an undecodable field as a 500 "failed to convert".
                Err(kube::Error::Api(status))
                    if matches!(status.code, 400 | 422)
                        || (status.code == 500 && status.message.contains("failed to convert")) =>
                {
                    plan.permanent = true;
                    plan.conditions.retain(|c| c.type_ != conditions::READY);
                    plan.conditions.push(conditions::Desired::new(
                        conditions::READY,
                        false,
                        conditions::reason::WORKLOAD_APPLY_FAILED,
                        format!(
                            "the Deployment built from spec.template was refused: {}; fix spec.template",
                            status.message
                        ),
                    ));
                }
                Err(error) => return Err(error.into()),
            }
        }
    } else if let (Some(target), Some(replicas)) = (&group.spec.scale_target_ref, plan.replicas)
        && current != Some(replicas)
    {
        act::scale_target(&ctx.client, &namespace, target.kind, &target.name, replicas).await?;
        replicas_now = Some(replicas);
        scaled = true;
    }
    if scaled && let Some(to) = replicas_now {
        tracing::info!(group = %group.name_any(), from = ?current, to, reason = %plan.scale_reason, "scaled workload");
        happenings.push(Happening::Scaled { from: current, to, reason: plan.scale_reason.clone() });
    }

    let conditions = conditions::merge(&previous.conditions, &plan.conditions, group.metadata.generation, &now);
    happenings
        .extend(conditions::transitions(&previous.conditions, &conditions).into_iter().map(Happening::Transition));
    let kafka_seen = matches!(kafka, KafkaObservation::Seen { .. });
    let kafka_seen_group = kafka_seen && described;
    let status = ConsumerGroupStatus {
        observed_generation: group.metadata.generation,
        partitions: plan.partitions.or(previous.partitions),
        topics: match &kafka {
            KafkaObservation::Seen { partitions, .. } => {
                partitions.iter().map(|(name, &partitions)| TopicStatus { name: name.clone(), partitions }).collect()
            }
            _ => previous.topics.clone(),
        },
        replicas: replicas_now,
        desired_replicas: plan.desired_replicas.or(previous.desired_replicas),
        selector: workload.as_ref().and_then(|w| w.selector.clone()),
        group_state: if kafka_seen_group {
            Some(description.as_ref().map_or("Dead".to_string(), |d| d.state.as_str().to_string()))
        } else {
            previous.group_state.clone()
        },
        member_count: if kafka_seen_group {
            Some(description.as_ref().map_or(0, |d| d.members.len() as i32))
        } else {
            previous.member_count
        },
        members: if kafka_seen_group { members(description.as_ref()) } else { previous.members.clone() },
        lag: match &lag_summary {
            Some(summary) => Some(crate::lag::lag_for_status(
                previous.lag.as_ref(),
                &summary.status,
                ctx.status_lag_interval.as_secs() as i64,
            )),
            None => previous.lag.clone(),
        },
        last_scale_time: if scaled { Some(now.clone()) } else { previous.last_scale_time.clone() },
        conditions,
    };
    let fresh_members = kafka_seen_group.then_some(status.member_count).flatten();
    record_metrics(&ctx.metrics, &group, &status, fresh_members, lag_summary.as_ref());
    act::status(&ctx.client, &group, &status).await?;
    act::publish(&ctx.recorder, &group, happenings).await;

    // Schedule the next look.
    let failed = matches!(kafka, KafkaObservation::Failed { .. });
    let attempt = ctx
        .failures
        .lock()
        .map(|mut f| {
            if failed {
                bump(&mut f, key.clone())
            } else {
                f.remove(&key);
                0
            }
        })
        .unwrap_or(0);
    Ok(if plan.permanent {
        Action::await_change()
    } else if failed {
        Action::requeue(backoff(attempt).min(ctx.resync))
    } else {
        let poll = group.spec.scaling.as_ref().map(|s| Duration::from_secs(s.poll_interval_seconds as u64));
        Action::requeue(poll.map_or(ctx.resync, |p| p.min(ctx.resync)))
    })
}

/// What Kafka said about a ConsumerGroup this time.
struct KafkaOutcome {
    kafka: KafkaObservation,
    description: Option<GroupDescription>,
    /// Whether the group's state was read this time (else status keeps the last known one).
    described: bool,
    lag: Option<crate::lag::Summary>,
}

impl Default for KafkaOutcome {
    fn default() -> Self {
        KafkaOutcome { kafka: KafkaObservation::NotQueried, description: None, described: false, lag: None }
    }
}

/// Reads the group's part of its connection's observer snapshot (no Kafka I/O of its own, except
/// the rare transaction-marker probe) and folds its offsets into the lag history.
async fn observe_kafka(
    ctx: &Context,
    group: &ConsumerGroup,
    connection: &observe::Connection,
    memory: &mut GroupMemory,
    now: &Time,
) -> KafkaOutcome {
    let failed = |error: KafkaError| KafkaOutcome {
        kafka: KafkaObservation::Failed { reason: observe::failure_reason(&error), message: error.to_string() },
        ..KafkaOutcome::default()
    };
    let observer = match ctx.observer_for(connection) {
        Ok(observer) => observer,
        Err(error) => return failed(error),
    };
    let every = group
        .spec
        .scaling
        .as_ref()
        .map_or(ctx.resync, |s| Duration::from_secs(s.poll_interval_seconds as u64).min(ctx.resync));
    let snapshot = match observer.observe(&group.spec.group_id, &group.spec.topics, every, ctx.kafka_timeout * 3).await
    {
        Ok(snapshot) => snapshot,
        Err(error) => return failed(error),
    };
    let (partitions, group_read, offsets) = match snapshot.view(&group.spec.group_id, &group.spec.topics) {
        GroupView::Failed(error) => return failed(error),
        GroupView::TopicsMissing(topics) => {
            return KafkaOutcome { kafka: KafkaObservation::TopicsMissing(topics), ..KafkaOutcome::default() };
        }
        GroupView::Seen { partitions, group, offsets } => (partitions, group, offsets),
    };
    let mut outcome = KafkaOutcome::default();
    let mut group_unreadable = None;
    match group_read {
        Ok(found) => {
            outcome.description = found;
            outcome.described = true;
        }
        Err(error) => group_unreadable = Some(error.to_string()),
    }
    let offsets = match offsets {
        Ok(observed) => observe::lag_offsets(connection, &mut memory.markers, observed, ctx.kafka_timeout).await,
        Err(error) => Err(error),
    };
    match offsets {
        Ok(offsets) => {
            let offsets = offsets.into_iter().map(|(tp, o)| ((tp.topic, tp.partition), o)).collect();
            let exclude_after = group
                .spec
                .scaling
                .as_ref()
                .and_then(|s| s.exclude_persistent_lag_after_polls)
                .map(|n| n.max(2) as usize);
            let members =
                group_unreadable.is_none().then(|| outcome.description.as_ref().map_or(0, |d| d.members.len()));
            outcome.lag = Some(crate::lag::summarize(
                &offsets,
                &mut memory.history,
                group.spec.auto_offset_reset,
                now.0.as_millisecond(),
                exclude_after,
                members,
                now.clone(),
            ));
        }
        Err(error) => {
            tracing::warn!(group = %group.name_any(), %error, "lag could not be measured");
            group_unreadable.get_or_insert_with(|| error.to_string());
            // A listing that hides a group it may not describe reads as "Dead, no members":
            // without its offsets, its state is not trusted either.
            outcome.described = false;
        }
    }
    outcome.kafka = KafkaObservation::Seen { partitions, group_unreadable };
    outcome
}

/// Workload figures from status; group and lag figures only when measured this time: an HPA or
/// alert on them must never act on a frozen last value.
fn record_metrics(
    metrics: &Metrics,
    group: &ConsumerGroup,
    status: &ConsumerGroupStatus,
    members: Option<i32>,
    lag: Option<&crate::lag::Summary>,
) {
    let labels = GroupLabels { namespace: group.namespace().unwrap_or_default(), consumergroup: group.name_any() };
    let set =
        |family: &prometheus_client::metrics::family::Family<GroupLabels, prometheus_client::metrics::gauge::Gauge>,
         value: Option<i32>| {
            if let Some(value) = value {
                family.get_or_create(&labels).set(i64::from(value));
            }
        };
    set(&metrics.replicas, status.replicas);
    set(&metrics.desired_replicas, status.desired_replicas);
    set(&metrics.partitions, status.partitions);
    match members {
        Some(members) => {
            metrics.members.get_or_create(&labels).set(i64::from(members));
        }
        None => {
            metrics.members.remove(&labels);
        }
    }
    let Some(lag) = lag else {
        metrics.forget_lag(&labels);
        return;
    };
    metrics.lag_sum.get_or_create(&labels).set(lag.status.total);
    metrics.max_lag.get_or_create(&labels).set(lag.status.max_partition_lag);
    metrics.max_lag_seconds.get_or_create(&labels).set(lag.max_lag_seconds);
    metrics.health.get_or_create(&labels).set(lag.health.code());
    let series = lag
        .partitions
        .iter()
        .map(|p| {
            let partition_labels = PartitionLabels {
                namespace: labels.namespace.clone(),
                consumergroup: labels.consumergroup.clone(),
                topic: p.topic.clone(),
                partition: p.partition.to_string(),
            };
            (partition_labels, p.lag, p.lag_seconds, p.committed)
        })
        .collect();
    metrics.set_partition_series(&labels, series);
}

fn members(description: Option<&GroupDescription>) -> Vec<MemberStatus> {
    let Some(description) = description else { return Vec::new() };
    let mut members: Vec<MemberStatus> = description
        .members
        .iter()
        .map(|m| {
            let mut assignment = std::collections::BTreeMap::<String, Vec<i32>>::new();
            for tp in &m.assignment {
                assignment.entry(tp.topic.clone()).or_default().push(tp.partition);
            }
            for partitions in assignment.values_mut() {
                partitions.sort_unstable();
            }
            MemberStatus { client_id: m.client_id.clone(), host: m.host.clone(), assignment }
        })
        .collect();
    // Stable order so an unchanged group does not rewrite status.
    members.sort_by(|a, b| (&a.client_id, &a.host, &a.assignment).cmp(&(&b.client_id, &b.host, &b.assignment)));
    members.truncate(MAX_MEMBERS_IN_STATUS);
    members
}
