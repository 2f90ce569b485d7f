//! The process around the controllers (ConsumerGroups, OffsetResets, named connections): the
//! watches that feed them (spec changes only, slim caches, ConsumerGroup deletions to the
//! registry), the shared context, leader election, the connection sweep and shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::broadcast;

use crate::cli::RunArgs;
use crate::context::{Context, MANAGER};
use crate::controllers::consumer_group::registry::Registry;
use crate::controllers::consumer_group::{GroupContext, workload};
use crate::crd::{ClusterKafkaConnection, ConnectionKind, ConsumerGroup, KafkaConnection, OffsetReset};
use crate::kafka_connections::PollNews;
use crate::kafka_settings::ConnectionStores;
use crate::metrics::Metrics;

/// Gives every thread glibc's one main malloc arena. By default glibc gives each thread that
/// allocates its own arena (up to 8 per core), and librdkafka's broker threads, tokio's workers
/// and its blocking pool each keep freed memory in theirs: the resident set grows with threads,
/// not with work. Even a second arena held 12 MB of the 27 MB of heap at 1,000 ConsumerGroups
/// (smaps), where the live heap is about 20 MB: each arena keeps its own free pieces. The
/// operator's threads allocate little and rarely at once, so one lock costs nothing measurable.
/// Call before any thread starts.
pub fn limit_malloc_arenas() {
    // SAFETY: mallopt only sets an allocator parameter; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Hands memory freed since the last sweep back to the system. glibc keeps freed heap pages (a
/// /metrics scrape of 1,000 groups builds a 6 MB text, a poll's answers are as large) until the top
/// of the heap is free, which it rarely is with long-lived objects above: the resident set then
/// stays at the peak of every past burst. One trim per sweep (every 10 s) costs well under a
/// millisecond at this heap size.
fn return_freed_memory() {
    // SAFETY: malloc_trim only releases free pages of the allocator's own heaps.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Polls' news a ConsumerGroup controller may fall behind by (each is one poll's groups).
const OBSERVED_BACKLOG: usize = 16;

/// ConsumerGroup reconciles in flight at once (each reads its workload and a snapshot: no Kafka
/// round trip, so a few are enough to keep up with thousands of groups).
const RECONCILE_CONCURRENCY: u16 = 16;

/// Runs the controller with the kubeconfig (or in-cluster config) until SIGTERM/SIGINT, behind
/// leader election when asked. The HTTP endpoint serves from the start, so followers stay live.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let client = Client::try_default().await?;
    let metrics = Arc::new(Metrics::new());
    let (address, server) = crate::metrics::serve(args.metrics_address, metrics.clone()).await?;
    let mut endpoint = tokio::spawn(server);
    tracing::info!(%address, "serving /metrics, /healthz and /readyz");
    // Without its endpoint the operator can be neither probed nor scraped: it exits, and its
    // Deployment starts it again.
    tokio::select! {
        result = run_elected(client, args, metrics, shutdown_signal()) => result,
        ended = &mut endpoint => {
            let why = match ended {
                Ok(Ok(())) => "it stopped".to_string(),
                Ok(Err(error)) => error.to_string(),
                Err(panic) => panic.to_string(),
            };
            anyhow::bail!("the /metrics endpoint failed ({why}); exiting")
        }
    }
}

/// Runs the controller until `shutdown` completes; with `--leader-election`, only while this
/// instance holds the Lease. A leader that lost the Lease, or could not confirm its renewal in
/// time (the apiserver out of reach), stops acting at once and waits as a follower again.
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
    let election = Election {
        namespace: args
            .lease_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| "default".to_string()),
        identity: std::env::var("POD_NAME").unwrap_or_else(|_| format!("{}-{}", hostname(), std::process::id())),
        duration: args.lease_duration_seconds,
    };
    // The shutdown request, seen by every term of leadership.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    loop {
        match election.lead_once(&client, &args, &metrics, stopped.clone()).await? {
            Term::Shutdown => return Ok(()),
            Term::SteppedDown => {}
        }
    }
}

/// How one term of leadership ended.
enum Term {
    Shutdown,
    /// The Lease was lost or its renewal not confirmed in time: a follower again.
    SteppedDown,
}

struct Election {
    namespace: String,
    identity: String,
    duration: u64,
}

impl Election {
    /// The Lease is renewed half its duration before it ends: a renewal that fails has time to be
    /// retried before the leader must stop.
    fn grace(&self) -> u64 {
        (self.duration / 2).max(1)
    }

    /// How long before its Lease ends (as last renewed) a leader stops acting: followers take
    /// over when it ends by their own clocks, which may run a little ahead.
    fn margin(&self) -> Duration {
        Duration::from_secs((self.duration / 6).max(1))
    }

    /// Waits to become the leader, then runs the controllers until shutdown or the end of the
    /// term, and releases the Lease.
    async fn lead_once(
        &self,
        client: &Client,
        args: &RunArgs,
        metrics: &Arc<Metrics>,
        stopped: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<Term> {
        // After a term that ended with the apiserver out of reach, it may still be: try again
        // until it answers (or the operator is asked to stop).
        let mut pause = Duration::from_secs(1);
        let manager = loop {
            let built = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &args.lease_name)
                .with_namespace(&self.namespace)
                .with_identity(&self.identity)
                .with_field_manager(MANAGER)
                .with_duration(self.duration)
                .with_grace(self.grace())
                .build()
                .await;
            match built {
                Ok(manager) => break manager,
                Err(error) => {
                    tracing::warn!(%error, ?pause, "cannot read the leader lease; trying again");
                    tokio::select! {
                        _ = until_stopped(stopped.clone()) => return Ok(Term::Shutdown),
                        _ = tokio::time::sleep(pause) => pause = (pause * 2).min(Duration::from_secs(30)),
                    }
                }
            }
        };
        let (mut leading, lease_task) = manager.watch().await;
        // A follower is ready: it reaches the apiserver and can take over. Were it not, a rolling
        // update of two replicas would wait forever for the second one (the Lease and the
        // `consumergroup_operator_leader` metric tell who leads).
        metrics.leader.set(0);
        metrics.set_ready(true);
        let identity = &self.identity;
        tracing::info!(lease = %args.lease_name, namespace = %self.namespace, %identity, "waiting to become the leader");
        loop {
            if *leading.borrow_and_update() {
                break;
            }
            tokio::select! {
                _ = until_stopped(stopped.clone()) => {
                    drop(leading);
                    let _ = lease_task.await;
                    return Ok(Term::Shutdown);
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
        let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(client.clone(), &self.namespace);
        let renewals =
            confirmed_renewals(leases, args.lease_name.clone(), identity.clone(), self.duration, self.margin());
        // Watches the term in a task of its own (the controllers' shutdown future must be Sync):
        // it ends the term when the Lease is lost or its renewal is not confirmed in time.
        let (term_over, term_ended) = tokio::sync::oneshot::channel::<()>();
        let term = tokio::spawn(async move {
            tokio::select! {
                _ = async { while leading.changed().await.is_ok() && *leading.borrow_and_update() {} } => {
                    tracing::warn!("lost the leader lease; stopping at once so that only the new leader acts");
                }
                unconfirmed = renewals => {
                    tracing::warn!(
                        leading_for = ?unconfirmed,
                        "the leader lease's renewal could not be confirmed before it ends (is the apiserver reachable?); stopping at once so that only one instance acts"
                    );
                }
            }
            let _ = term_over.send(());
            leading
        });
        let ended = Arc::new(AtomicBool::new(false));
        let end = {
            let (ended, stopped) = (ended.clone(), stopped.clone());
            async move {
                tokio::select! {
                    _ = until_stopped(stopped.clone()) => {}
                    _ = term_ended => ended.store(true, Ordering::SeqCst),
                }
            }
        };
        let result = run_with_client(client.clone(), args.clone(), metrics.clone(), end).await;
        metrics.leader.set(0);
        // Dropping the last receiver of `leading` makes the lease task release the Lease (if it
        // still holds it), so a follower takes over at once instead of waiting for it to end.
        term.abort();
        let _ = term.await;
        // Releasing needs the apiserver; an unreachable one must not keep this instance from
        // waiting as a follower.
        let _ = tokio::time::timeout(Duration::from_secs(self.duration), lease_task).await;
        tracing::info!("released the leader lease");
        result?;
        Ok(if ended.load(Ordering::SeqCst) { Term::SteppedDown } else { Term::Shutdown })
    }
}

/// Completes when the Lease, as last seen held by `identity`, is within `margin` of its end
/// (returning how long it led): its renewals are watched (renewTime is written with this
/// instance's own clock), and while the watch cannot reach the apiserver none is confirmed.
async fn confirmed_renewals(
    leases: Api<k8s_openapi::api::coordination::v1::Lease>,
    name: String,
    identity: String,
    duration: u64,
    margin: Duration,
) -> Duration {
    let duration = Duration::from_secs(duration);
    let started = std::time::SystemTime::now();
    // Became the leader just now: the Lease was renewed (or taken) a moment ago.
    let valid_until = Arc::new(std::sync::Mutex::new(started + duration));
    let watch = {
        let valid_until = valid_until.clone();
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        watcher::watcher(leases, config).default_backoff().applied_objects().for_each(move |lease| {
            if let Ok(lease) = lease
                && let Some(spec) = lease.spec
                && spec.holder_identity.as_deref() == Some(identity.as_str())
                && let Some(renewed) = spec.renew_time
                && let Ok(micros) = u64::try_from(renewed.0.as_microsecond())
            {
                *valid_until.lock().expect("lease lock") =
                    std::time::UNIX_EPOCH + Duration::from_micros(micros) + duration;
            }
            async {}
        })
    };
    let check = async {
        loop {
            tokio::time::sleep(margin / 4).await;
            let deadline = *valid_until.lock().expect("lease lock") - margin;
            if std::time::SystemTime::now() >= deadline {
                return std::time::SystemTime::now().duration_since(started).unwrap_or_default();
            }
        }
    };
    tokio::select! {
        led = check => led,
        _ = watch => Duration::ZERO,
    }
}

/// Completes once a shutdown was requested.
async fn until_stopped(mut stopped: tokio::sync::watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send: dropped here, before the caller awaits more.
    let _ = stopped.wait_for(|stop| *stop).await;
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
    check_crds_installed(&client, &scopes).await?;
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));
    // Every kind triggers reconciles on spec changes only (metadata.generation): the operator's
    // own status writes do not come back as work. Their caches keep no managedFields nor
    // last-applied annotation, which the operator never reads.
    let reset_controllers: Vec<_> = scopes
        .iter()
        .map(|scope| {
            let (reader, writer) = reflector::store();
            let resets = cached_spec_changes(scoped_api::<OffsetReset>(&client, scope), writer, "reset-cache", |_| {});
            Controller::for_stream(resets, reader).graceful_shutdown_on(shutdown.clone())
        })
        .collect();
    // Named connections: their own status controllers, and caches the ConsumerGroups read (which
    // ConsumerGroups share a cluster). A connection's users are recounted at each resync.
    let connection_controllers: Vec<_> = scopes
        .iter()
        .map(|scope| {
            let (reader, writer) = reflector::store();
            let connections =
                cached_spec_changes(scoped_api::<KafkaConnection>(&client, scope), writer, "connection-cache", |_| {});
            Controller::for_stream(connections, reader).graceful_shutdown_on(shutdown.clone())
        })
        .collect();
    let cluster_connection_controller = {
        let (reader, writer) = reflector::store();
        let connections =
            cached_spec_changes(Api::<ClusterKafkaConnection>::all(client.clone()), writer, "connection-cache", |_| {});
        Controller::for_stream(connections, reader).graceful_shutdown_on(shutdown.clone())
    };
    let connection_stores = ConnectionStores {
        namespaced: connection_controllers.iter().map(|c| c.store()).collect(),
        cluster: Some(cluster_connection_controller.store()),
    };
    let (news, _) = broadcast::channel(OBSERVED_BACKLOG);
    // Deletions (and relists, which replace what a broken watch missed) as the caches see them:
    // what the operator keeps of a group goes with the group.
    let (gone, deletions) = tokio::sync::mpsc::unbounded_channel::<Deletion>();
    let wiring = GroupWiring { news: news.clone(), registry: Arc::new(Registry::default()), gone };
    let controllers: Vec<_> = scopes
        .iter()
        .map(|scope| group_controller(&client, scope, &wiring).graceful_shutdown_on(shutdown.clone()))
        .collect();
    let stores: Vec<Store<ConsumerGroup>> = controllers.iter().map(|c| c.store()).collect();
    let reset_stores: Vec<Store<OffsetReset>> = reset_controllers.iter().map(|c| c.store()).collect();
    tokio::spawn(ready_once_synced(stores.clone(), metrics.clone()));
    if let (Some(address), Some(tls_dir)) = (args.external_metrics_address, &args.external_metrics_tls_dir) {
        // Served by the leader only: the figures are its observations.
        let (bound, server) = crate::external_metrics::serve(client.clone(), metrics.clone(), address, tls_dir).await?;
        tracing::info!(address = %bound, "serving the external metrics API (external.metrics.k8s.io/v1beta1)");
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = server => {}
                _ = shutdown => {}
            }
        });
    }
    let context = Arc::new(Context::new(client, stores, reset_stores, connection_stores, metrics, news, &args));
    let groups = Arc::new(GroupContext::new(context.clone(), wiring.registry));
    let mut forgetting = tokio::spawn(forget_deleted(groups.clone(), deletions));
    let mut sweeper = tokio::spawn(sweep(groups.clone()));
    tracing::info!(
        namespaces = ?args.namespaces,
        default_bootstrap_servers = ?args.default_bootstrap_servers,
        default_client_properties_dir = ?args.default_client_properties_dir,
        "consumer-group-operator started"
    );
    let controllers = run_all(
        Controllers {
            groups: controllers,
            resets: reset_controllers,
            connections: connection_controllers,
            cluster_connections: cluster_connection_controller,
        },
        groups.clone(),
        context.clone(),
    );
    // The sweep closes unused Kafka connections (they have no event of their own), the deletions
    // task forgets deleted groups: an operator without either would grow without bound, so the
    // end of one (a panic) ends the operator, not ready any more.
    let stopped = tokio::select! {
        _ = controllers => None,
        ended = &mut sweeper => Some(("the sweep task", ended)),
        ended = &mut forgetting => Some(("the task forgetting deleted ConsumerGroups", ended)),
    };
    if let Some((task, ended)) = stopped {
        context.metrics.set_ready(false);
        let why = ended.err().map_or_else(|| "it returned".to_string(), |panic| panic.to_string());
        anyhow::bail!("{task} stopped ({why}); exiting");
    }
    sweeper.abort();
    forgetting.abort();
    tracing::info!("consumer-group-operator stopped");
    Ok(())
}

/// The controllers of every scope, built and not yet running.
struct Controllers {
    groups: Vec<Controller<ConsumerGroup>>,
    resets: Vec<Controller<OffsetReset>>,
    connections: Vec<Controller<KafkaConnection>>,
    cluster_connections: Controller<ClusterKafkaConnection>,
}

/// Runs every controller until their shutdown future completes.
async fn run_all(controllers: Controllers, groups: Arc<GroupContext>, context: Arc<Context>) {
    let streams = controllers.groups.into_iter().map(|controller| {
        controller
            .run(
                crate::controllers::consumer_group::reconcile,
                crate::controllers::consumer_group::error_policy,
                groups.clone(),
            )
            .for_each(|result| async move {
                match result {
                    Ok((object, _)) => tracing::debug!(%object, "reconciled"),
                    Err(error) => tracing::warn!(%error, "reconcile failed"),
                }
            })
    });
    let reset_streams = controllers.resets.into_iter().map(|controller| {
        let context = context.clone();
        controller
            .run(
                crate::controllers::offset_reset::reconcile,
                crate::controllers::offset_reset::error_policy,
                context.clone(),
            )
            .for_each(move |result| settle(&context, "offset reset", result))
    });
    let connection_streams = controllers.connections.into_iter().map(|controller| {
        let context = context.clone();
        controller
            .run(
                crate::controllers::connection::reconcile_namespaced,
                crate::controllers::connection::error_policy,
                context.clone(),
            )
            .for_each(move |result| settle(&context, "KafkaConnection", result))
    });
    let cluster_connection_stream = {
        let context = context.clone();
        controllers
            .cluster_connections
            .run(
                crate::controllers::connection::reconcile_cluster,
                crate::controllers::connection::error_policy,
                context.clone(),
            )
            .for_each(move |result| settle(&context, "ClusterKafkaConnection", result))
    };
    futures::future::join4(
        futures::future::join_all(streams),
        futures::future::join_all(reset_streams),
        futures::future::join_all(connection_streams),
        cluster_connection_stream,
    )
    .await;
}

/// Fails with the command that installs the CRDs when ConsumerGroups cannot be listed.
async fn check_crds_installed(client: &Client, scopes: &[Option<String>]) -> anyhow::Result<()> {
    for scope in scopes {
        if let Err(error) =
            scoped_api::<ConsumerGroup>(client, scope).list(&kube::api::ListParams::default().limit(1)).await
        {
            anyhow::bail!(
                "cannot list ConsumerGroups ({error}); are the CRDs installed? Install them with `consumer-group-operator crd | kubectl apply --server-side -f -`"
            );
        }
    }
    Ok(())
}

/// What each scope's ConsumerGroup controller is wired to: the polls' news, the registry that
/// tells whose news it is, and where its cache's deletions go.
struct GroupWiring {
    news: broadcast::Sender<Arc<PollNews>>,
    registry: Arc<Registry>,
    gone: tokio::sync::mpsc::UnboundedSender<Deletion>,
}

/// The ConsumerGroup controller of one scope and everything that triggers its reconciles.
fn group_controller(client: &Client, scope: &Option<String>, wiring: &GroupWiring) -> Controller<ConsumerGroup> {
    let (reader, writer) = reflector::store();
    let gone = wiring.gone.clone();
    let on_event = move |event: &watcher::Event<ConsumerGroup>| {
        let deletion = match event {
            watcher::Event::Delete(group) => Deletion::Deleted(ObjectRef::from(group)),
            watcher::Event::InitDone => Deletion::Relisted,
            _ => return,
        };
        // Refused only once the deletions task has ended (shutting down).
        let _ = gone.send(deletion);
    };
    let groups = cached_spec_changes(scoped_api::<ConsumerGroup>(client, scope), writer, "group-cache", on_event);
    let connections = scoped_api::<KafkaConnection>(client, scope);
    let (users_of, users_of_cluster) = (reader.clone(), reader.clone());
    let with_news = groups_with_news(wiring.news.subscribe(), reader.clone(), wiring.registry.clone());
    Controller::for_stream(groups, reader)
        // At a resync every ConsumerGroup is due at once: a bounded number of reconciles in
        // flight keeps the memory they hold (and the apiserver's load) flat.
        .with_config(controller::Config::default().concurrency(RECONCILE_CONCURRENCY))
        // A poll with news of a group reconciles it at once (its timed requeue is only a
        // fallback): lag changes reach status and /metrics without waiting for a resync.
        .reconcile_on(with_news)
        .owns(scoped_api::<Deployment>(client, scope), watcher::Config::default().labels(workload::MANAGED_BY_LABEL))
        // A reset changing phase holds or releases its ConsumerGroup's workload.
        .watches(scoped_api::<OffsetReset>(client, scope), watcher::Config::default(), |reset: OffsetReset| {
            let namespace = reset.namespace()?;
            Some(ObjectRef::new(&reset.spec.consumer_group).within(&namespace))
        })
        // A named connection's spec changed: its ConsumerGroups read it again (a rotated Secret is
        // read at their next resync).
        .watches_stream(
            spec_changes(watcher::watcher(connections, watcher::Config::default())),
            move |connection: KafkaConnection| {
                let namespace = connection.namespace();
                users(&users_of, ConnectionKind::KafkaConnection, &connection.name_any(), namespace)
            },
        )
        .watches_stream(
            spec_changes(watcher::watcher(
                Api::<ClusterKafkaConnection>::all(client.clone()),
                watcher::Config::default(),
            )),
            move |connection: ClusterKafkaConnection| {
                users(&users_of_cluster, ConnectionKind::ClusterKafkaConnection, &connection.name_any(), None)
            },
        )
}

/// Marks the operator ready once every ConsumerGroup cache has synced.
async fn ready_once_synced(stores: Vec<Store<ConsumerGroup>>, metrics: Arc<Metrics>) {
    for store in stores {
        // The store's readiness future keeps one waker, and the controller's own runner waits on
        // it too, so poll it again periodically instead of relying on a wake-up.
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
}

/// Forgets what the operator keeps of each ConsumerGroup its caches no longer hold.
async fn forget_deleted(groups: Arc<GroupContext>, mut deletions: tokio::sync::mpsc::UnboundedReceiver<Deletion>) {
    while let Some(deletion) = deletions.recv().await {
        match deletion {
            Deletion::Deleted(key) => groups.forget(&key),
            Deletion::Relisted => groups.forget_missing(),
        }
    }
}

/// Every 10 s (or the resync, if shorter): closes unused Kafka connections and returns freed
/// memory to the system.
async fn sweep(groups: Arc<GroupContext>) {
    let mut tick = tokio::time::interval(groups.settings.resync.min(Duration::from_secs(10)));
    loop {
        tick.tick().await;
        groups.sweep_connections();
        return_freed_memory();
    }
}

/// What the OffsetReset and connection controllers do with each reconcile's result: a success
/// ends the object's run of failures (its next retry starts at 2 s again), a failure is logged.
fn settle<K, E>(
    context: &Context,
    kind: &str,
    result: Result<(ObjectRef<K>, controller::Action), E>,
) -> std::future::Ready<()>
where
    K: kube::Resource<DynamicType = ()>,
    E: std::fmt::Display,
{
    match result {
        Ok((object, _)) => {
            tracing::debug!(%object, "reconciled");
            context.attempts.succeeded(&object.erase());
        }
        Err(error) => tracing::warn!(%error, "{kind} reconcile failed"),
    }
    std::future::ready(())
}

/// A ConsumerGroup the caches no longer hold, as their watch events say.
enum Deletion {
    Deleted(ObjectRef<ConsumerGroup>),
    /// The watch listed everything again (after it broke): deletions meanwhile came as none.
    Relisted,
}

/// A watch that fills a cache with slimmed objects and yields those whose spec changed
/// (metadata.generation): the operator's own status writes are not work. `on_event` sees each
/// event once the cache holds it. `fault_point` names the cache for the fault-injection tests
/// (which delay its events to make it lag).
fn cached_spec_changes<K>(
    api: Api<K>,
    writer: reflector::store::Writer<K>,
    fault_point: &'static str,
    on_event: impl Fn(&watcher::Event<K>) + Send + 'static,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    watcher::watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .then(move |event| async move {
            crate::fault::pause_point(fault_point, "a watch event").await;
            event
        })
        .modify(slim)
        .reflect(writer)
        .inspect(move |event| {
            if let Ok(event) = event {
                on_event(event);
            }
        })
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default())
}

/// The ConsumerGroups of `store` (one controller's scope) that each poll has news of. A
/// controller that falls behind by [`OBSERVED_BACKLOG`] polls skips the oldest: their groups
/// are reconciled at the next poll or by their fallback requeue.
fn groups_with_news(
    receiver: broadcast::Receiver<Arc<PollNews>>,
    store: Store<ConsumerGroup>,
    registry: Arc<Registry>,
) -> impl futures::Stream<Item = ObjectRef<ConsumerGroup>> + Send + 'static {
    futures::stream::unfold(receiver, |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(news) => return Some((news, receiver)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .flat_map(move |news| {
        let group_ids = news.group_ids.iter().map(String::as_str).collect();
        let mut readers = registry.readers_of(&news.connection, &group_ids);
        readers.retain(|group| store.get(group).is_some());
        futures::stream::iter(readers)
    })
}

/// The API of a namespaced kind in one watched namespace, or in all of them.
fn scoped_api<K>(client: &Client, scope: &Option<String>) -> Api<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
{
    match scope {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// Objects whose spec changed (metadata.generation), from a watch: status writes are not work.
fn spec_changes<K>(
    watch: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: kube::Resource<DynamicType = ()> + Clone + Send + 'static,
{
    watch.default_backoff().applied_objects().predicate_filter(predicates::generation, Default::default())
}

/// The ConsumerGroups (of `namespace`, if given) whose spec.kafka.connectionRef names a connection.
fn users(
    groups: &Store<ConsumerGroup>,
    kind: ConnectionKind,
    name: &str,
    namespace: Option<String>,
) -> Vec<ObjectRef<ConsumerGroup>> {
    groups
        .state()
        .iter()
        .filter(|group| namespace.is_none() || group.namespace() == namespace)
        .filter(|group| {
            let reference = group.spec.kafka.as_ref().and_then(|k| k.connection_ref.as_ref());
            reference.is_some_and(|r| r.kind == kind && r.name == name)
        })
        .map(|group| ObjectRef::from(group.as_ref()))
        .collect()
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
