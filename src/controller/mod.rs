//! The ConsumerGroup controller: a reconcile pipeline of observe (I/O reads) -> plan/decide (pure)
//! -> act (writes), plus the runtime around it (watches, error policy, shutdown).

pub mod act;
pub mod conditions;
pub mod decide;
pub mod observe;
pub mod plan;
pub mod workload;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::cli::RunArgs;
use crate::crd::{ConsumerGroup, ConsumerGroupStatus, MemberStatus, TopicStatus};
use crate::kafka::{ClientCache, GroupDescription, KafkaError};
use act::Happening;
use decide::Recommendation;
use plan::{KafkaObservation, Observed};

/// Members listed in status; memberCount carries the total.
const MAX_MEMBERS_IN_STATUS: usize = 50;

/// Errors a reconcile returns (everything else becomes a condition).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
}

impl Error {
    /// Stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube_api",
        }
    }
}

/// Shared state of the controller.
pub struct Context {
    pub client: Client,
    pub kafka: ClientCache,
    pub recorder: Recorder,
    pub store: Store<ConsumerGroup>,
    pub default_bootstrap_servers: Option<String>,
    pub kafka_timeout: Duration,
    pub resync: Duration,
    /// Consecutive Kafka failures per object, for backoff.
    failures: Mutex<HashMap<ObjectRef<ConsumerGroup>, u32>>,
    /// Scale-down stabilization history per object (in memory: a restart starts a new window).
    recommendations: Mutex<HashMap<ObjectRef<ConsumerGroup>, Vec<Recommendation>>>,
}

impl Context {
    pub fn new(client: Client, store: Store<ConsumerGroup>, args: &RunArgs) -> Context {
        let reporter = Reporter { controller: workload::MANAGER.into(), instance: std::env::var("POD_NAME").ok() };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            kafka: ClientCache::default(),
            store,
            default_bootstrap_servers: args.default_bootstrap_servers.clone(),
            kafka_timeout: Duration::from_secs(args.kafka_timeout_seconds),
            resync: Duration::from_secs(args.resync_seconds),
            failures: Mutex::default(),
            recommendations: Mutex::default(),
        }
    }
}

/// Runs the controller until SIGTERM/SIGINT.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let client = Client::try_default().await?;
    let groups: Api<ConsumerGroup> = Api::all(client.clone());
    if let Err(error) = groups.list(&kube::api::ListParams::default().limit(1)).await {
        anyhow::bail!(
            "cannot list ConsumerGroups ({error}); are the CRDs installed? Install them with `consumer-group-operator crd | kubectl apply -f -`"
        );
    }
    let controller = Controller::new(groups, watcher::Config::default().any_semantic())
        .owns(Api::<Deployment>::all(client.clone()), watcher::Config::default().labels(workload::MANAGED_BY_LABEL))
        .shutdown_on_signal();
    let context = Arc::new(Context::new(client, controller.store(), &args));
    tracing::info!(
        default_bootstrap_servers = ?args.default_bootstrap_servers,
        "consumer-group-operator started"
    );
    controller
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(%object, "reconciled"),
                Err(error) => tracing::warn!(%error, "reconcile failed"),
            }
        })
        .await;
    tracing::info!("consumer-group-operator stopped");
    Ok(())
}

fn error_policy(group: Arc<ConsumerGroup>, error: &Error, ctx: Arc<Context>) -> Action {
    let attempt = ctx.failures.lock().map(|mut f| bump(&mut f, ObjectRef::from(group.as_ref()))).unwrap_or(1);
    let delay = backoff(attempt);
    tracing::warn!(group = %group.name_any(), %error, label = error.label(), ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
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
    let default = ctx.default_bootstrap_servers.as_deref();
    let cluster = observe::bootstrap_servers(group, default).map(|b| observe::cluster_key(&b));
    let rank = |g: &ConsumerGroup| (g.metadata.creation_timestamp.clone(), g.namespace(), g.name_any());
    ctx.store
        .state()
        .iter()
        .filter(|other| other.metadata.uid != group.metadata.uid && other.metadata.deletion_timestamp.is_none())
        .filter(|other| other.spec.group_id == group.spec.group_id)
        .filter(|other| observe::bootstrap_servers(other, default).map(|b| observe::cluster_key(&b)) == cluster)
        .filter(|other| rank(other) < rank(group))
        .min_by_key(|other| rank(other))
        .map(|other| format!("{}/{}", other.namespace().unwrap_or_default(), other.name_any()))
}

pub async fn reconcile(group: Arc<ConsumerGroup>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = ObjectRef::from(group.as_ref());
    let namespace = group.namespace().unwrap_or_default();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let previous = group.status.clone().unwrap_or_default();

    // Observe.
    let conflict_with = conflicting_owner(&ctx, &group);
    let mut connection = None;
    let mut connection_problem = None;
    if conflict_with.is_none() {
        match observe::connection(&ctx.client, &group, ctx.default_bootstrap_servers.as_deref()).await? {
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
    let mut kafka = KafkaObservation::NotQueried;
    let mut description: Option<GroupDescription> = None;
    if let (Some(connection), Ok(_)) = (&connection, &workload_replicas) {
        kafka = match observe::kafka(&ctx.kafka, connection, &group, ctx.kafka_timeout).await {
            Ok((_client, view)) => {
                description = view.group;
                KafkaObservation::Seen { partitions: view.partitions }
            }
            Err(KafkaError::UnknownTopics(topics)) => KafkaObservation::TopicsMissing(topics),
            Err(error) => KafkaObservation::Unreachable(error.to_string()),
        };
    }

    // Decide.
    let history = ctx.recommendations.lock().ok().and_then(|h| h.get(&key).cloned()).unwrap_or_default();
    let plan = plan::plan(&Observed {
        group: &group,
        conflict_with,
        connection: connection_problem,
        workload_replicas: workload_replicas.clone(),
        kafka: kafka.clone(),
        scaling_lag: None,
        now_seconds: now.0.as_second(),
        history: &history,
    });
    if let Ok(mut h) = ctx.recommendations.lock() {
        h.insert(key.clone(), plan.history.clone());
    }

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
            act::apply_deployment(&ctx.client, &deployment).await?;
            replicas_now = Some(replicas);
            scaled = current != Some(replicas);
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
    happenings.extend(conditions::transitions(&previous.conditions, &conditions).into_iter().map(Happening::Transition));
    let kafka_seen = matches!(kafka, KafkaObservation::Seen { .. });
    let status = ConsumerGroupStatus {
        observed_generation: group.metadata.generation,
        partitions: plan.partitions.or(previous.partitions),
        topics: match &kafka {
            KafkaObservation::Seen { partitions } => {
                partitions.iter().map(|(name, &partitions)| TopicStatus { name: name.clone(), partitions }).collect()
            }
            _ => previous.topics.clone(),
        },
        replicas: replicas_now,
        desired_replicas: plan.desired_replicas.or(previous.desired_replicas),
        selector: workload.as_ref().and_then(|w| w.selector.clone()),
        group_state: if kafka_seen {
            Some(description.as_ref().map_or("Dead".to_string(), |d| d.state.as_str().to_string()))
        } else {
            previous.group_state.clone()
        },
        member_count: if kafka_seen {
            Some(description.as_ref().map_or(0, |d| d.members.len() as i32))
        } else {
            previous.member_count
        },
        members: if kafka_seen { members(description.as_ref()) } else { previous.members.clone() },
        lag: previous.lag.clone(),
        last_scale_time: if scaled { Some(now.clone()) } else { previous.last_scale_time.clone() },
        conditions,
    };
    act::status(&ctx.client, &group, &status).await?;
    act::publish(&ctx.recorder, &group, happenings).await;

    // Schedule the next look.
    let failed = matches!(kafka, KafkaObservation::Unreachable(_));
    let attempt = ctx.failures.lock().map(|mut f| if failed { bump(&mut f, key.clone()) } else { f.remove(&key); 0 }).unwrap_or(0);
    Ok(if plan.permanent {
        Action::await_change()
    } else if failed {
        Action::requeue(backoff(attempt).min(ctx.resync))
    } else {
        let poll = group.spec.scaling.as_ref().map(|s| Duration::from_secs(s.poll_interval_seconds as u64));
        Action::requeue(poll.map_or(ctx.resync, |p| p.min(ctx.resync)))
    })
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
            MemberStatus {
                client_id: m.client_id.clone(),
                host: m.host.clone(),
                group_instance_id: m.group_instance_id.clone(),
                assignment,
            }
        })
        .collect();
    // Stable order so an unchanged group does not rewrite status.
    members.sort_by(|a, b| (&a.client_id, &a.host, &a.assignment).cmp(&(&b.client_id, &b.host, &b.assignment)));
    members.truncate(MAX_MEMBERS_IN_STATUS);
    members
}
