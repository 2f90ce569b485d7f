//! `make bench` (fifth part): time-to-drain against lag-threshold autoscaling on the same workload,
//! in a closed loop of real parts: a backlog plus steady production on a real broker, the operator
//! scaling a Deployment on a real apiserver, and `testenv::workload::ConsumerFleet` running that
//! many real consumers of a set capacity. The reference is the lag-threshold mode of the same run.
//!
//! Printed per mode: seconds until the lag is back under one poll of production, replica changes,
//! replica-seconds spent, and the most replicas run. Sizes: BENCH_DRAIN_SECONDS per mode (default
//! 150), BENCH_DRAIN_BACKLOG (6000), BENCH_DRAIN_PRODUCTION messages/s (100), BENCH_DRAIN_CAPACITY
//! messages/s per consumer (40), 12 partitions, 5 s polls, 30 s drain target, lagThreshold 100.
//! Time-to-drain starts from a rough guess of the consumers' rate, BENCH_DRAIN_EXPECTED (default
//! 80, twice the real one), as a team that sets expectedMessagesPerSecondPerReplica might; the
//! operator learns the real one.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use consumer_group_operator::crd::ConsumerGroup;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, PostParams};
use testenv::workload::{ConsumerFleet, ConsumerSettings, Producer};

const PARTITIONS: i32 = 12;
const POLL_SECONDS: i64 = 5;
const TARGET_DRAIN_SECONDS: i64 = 30;

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Outcome {
    drained_after: Option<f64>,
    replica_changes: usize,
    replica_seconds: f64,
    most_replicas: usize,
    learned: Option<String>,
}

async fn run(env: &testenv::SharedEnv, client: &kube::Client, mode: &str, scaling: serde_json::Value) -> Outcome {
    let (seconds, backlog) = (env_f64("BENCH_DRAIN_SECONDS", 150.0), env_f64("BENCH_DRAIN_BACKLOG", 6000.0) as u64);
    let (production, capacity) = (env_f64("BENCH_DRAIN_PRODUCTION", 100.0), env_f64("BENCH_DRAIN_CAPACITY", 40.0));
    let namespace = common::namespace(client, &format!("bench-drain-{mode}")).await;
    let bootstrap = env.kafka.bootstrap_servers();
    let topic = common::create_topic(&bootstrap, PARTITIONS).await;
    common::produce_backlog(&bootstrap, &topic, backlog).await;
    let poll = POLL_SECONDS.to_string();
    let args = common::run_args(&namespace, &bootstrap, &["--resync-seconds", &poll]);
    let operator = common::Operator::start(client, args).await;
    let spec = serde_json::json!({"groupId": testenv::unique_name("g"), "topics": [topic], "autoOffsetReset": "earliest",
        "template": {"spec": {"containers": [{"name": "c", "image": "consumer"}]}}, "scaling": scaling});
    let groups: Api<ConsumerGroup> = Api::namespaced(client.clone(), &namespace);
    groups.create(&PostParams::default(), &common::consumer_group("bench", spec)).await.unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    common::eventually(Duration::from_secs(60), || async { deployments.get_opt("bench").await.ok()? })
        .await
        .expect("the operator creates the Deployment");
    let deployment = testenv::workload::deployment(
        &env.kube.assets().join("kubectl"),
        &env.kube.kubeconfig_path(),
        &namespace,
        "bench",
    );
    let fleet = ConsumerFleet::start(deployment, ConsumerSettings { messages_per_second: capacity, extra: Vec::new() })
        .unwrap();
    let producer = Producer::start(&bootstrap, &topic, production).unwrap();

    let started = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let (mut drained_after, mut replica_changes, mut replica_seconds, mut most_replicas) = (None, 0, 0.0, 0);
    let mut last_replicas = None;
    let mut learned = None;
    let drained_level = (production * POLL_SECONDS as f64) as i64;
    while started.elapsed() < Duration::from_secs_f64(seconds) {
        tick.tick().await;
        let consumers = fleet.consumers();
        replica_seconds += consumers as f64;
        most_replicas = most_replicas.max(consumers);
        let Ok(group) = groups.get("bench").await else { continue };
        let Some(status) = group.status else { continue };
        if let Some(replicas) = status.replicas {
            if last_replicas.is_some_and(|last| last != replicas) {
                replica_changes += 1;
            }
            last_replicas = Some(replicas);
        }
        if drained_after.is_none() && status.lag.as_ref().is_some_and(|l| l.total <= drained_level) {
            drained_after = Some(started.elapsed().as_secs_f64());
        }
        learned = status.autoscaling.and_then(|a| a.per_replica_rate).or(learned);
    }
    eprintln!(
        "  {mode}: produced {}, processed {} messages; operator reconciles {}",
        producer.sent(),
        fleet.processed(),
        operator.reconciles().await
    );
    drop((producer, fleet, operator));
    Outcome { drained_after, replica_changes, replica_seconds, most_replicas, learned }
}

#[tokio::main]
async fn main() {
    eprintln!("starting Kafka and kube-apiserver + etcd ...");
    let env = common::shared_env().await;
    let client = common::kube_client(&env.kube).await;
    common::install_crds(&client).await;
    let common_scaling = serde_json::json!({"minReplicas": 1, "lagThreshold": 100, "pollIntervalSeconds": POLL_SECONDS,
        "scaleDownStabilizationSeconds": 15});
    let mut drain_scaling = common_scaling.clone();
    let drain_settings = drain_scaling.as_object_mut().unwrap();
    drain_settings.insert("targetDrainSeconds".into(), TARGET_DRAIN_SECONDS.into());
    let expected = env_f64("BENCH_DRAIN_EXPECTED", 80.0) as i64;
    drain_settings.insert("expectedMessagesPerSecondPerReplica".into(), expected.into());
    eprintln!("lag-threshold mode (the reference) ...");
    let threshold = run(env, &client, "threshold", common_scaling).await;
    eprintln!("time-to-drain mode ...");
    let drain = run(env, &client, "drain", drain_scaling).await;

    let drained = |o: &Outcome| o.drained_after.map_or("never".to_string(), |s| format!("{s:.0} s"));
    println!();
    println!(
        "drain: a 6,000-message backlog plus steady production, real consumers following the operator (12 partitions, 5 s polls)"
    );
    println!(
        "{:<16} {:>12} {:>16} {:>17} {:>13} {:>18}",
        "mode", "drained in", "replica changes", "replica-seconds", "most replicas", "learned per replica"
    );
    for (name, o) in [("lag threshold", &threshold), ("time to drain", &drain)] {
        println!(
            "{name:<16} {:>12} {:>16} {:>17.0} {:>13} {:>18}",
            drained(o),
            o.replica_changes,
            o.replica_seconds,
            o.most_replicas,
            o.learned.as_deref().map_or("-".to_string(), |r| format!("{r}/s"))
        );
    }
    println!(
        "ratios (time to drain / lag threshold): replica changes {:.2}, replica-seconds {:.2}; drain target {TARGET_DRAIN_SECONDS} s",
        drain.replica_changes as f64 / threshold.replica_changes.max(1) as f64,
        drain.replica_seconds / threshold.replica_seconds.max(1.0),
    );
}
