//! Time-to-drain autoscaling in a closed loop, against a real broker and apiserver: the operator
//! scales a Deployment, `testenv::workload::ConsumerFleet` runs that many real consumers (each
//! with a set capacity, committing after processing), a real producer writes at a set rate, and
//! the lag they leave is what the operator scales on next.

mod common;

use std::time::Duration;

use consumer_group_operator::crd::ConsumerGroup;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, PostParams};
use testenv::workload::{ConsumerFleet, ConsumerSettings, Producer};

const PARTITIONS: i32 = 12;
/// Messages per second one consumer processes.
const CAPACITY: f64 = 40.0;
/// Messages per second written while the test runs.
const PRODUCTION: f64 = 100.0;
const BACKLOG: u64 = 6_000;
const TARGET_DRAIN_SECONDS: i64 = 30;
const POLL_SECONDS: u64 = 5;

#[tokio::test]
async fn time_to_drain_learns_the_consumers_rate_drains_the_backlog_and_settles_on_what_production_needs() {
    let env = common::shared_env().await;
    let client = common::kube_client(&env.kube).await;
    common::install_crds(&client).await;
    let namespace = common::namespace(&client, "drain").await;
    let bootstrap = env.kafka.bootstrap_servers();
    let topic = common::create_topic(&bootstrap, PARTITIONS).await;
    common::produce_backlog(&bootstrap, &topic, BACKLOG).await;
    let producer = Producer::start(&bootstrap, &topic, PRODUCTION).unwrap();

    let resync = POLL_SECONDS.to_string();
    let _operator =
        common::Operator::start(&client, common::run_args(&namespace, &bootstrap, &["--resync-seconds", &resync]))
            .await;
    // Seeded with a wrong capacity on purpose: the learned one must replace it.
    let spec = serde_json::json!({"groupId": testenv::unique_name("g"), "topics": [topic], "autoOffsetReset": "earliest",
        "template": {"spec": {"containers": [{"name": "c", "image": "consumer"}]}},
        "scaling": {"minReplicas": 1, "targetDrainSeconds": TARGET_DRAIN_SECONDS, "expectedMessagesPerSecondPerReplica": 200,
            "pollIntervalSeconds": POLL_SECONDS, "scaleDownStabilizationSeconds": 15}});
    let groups: Api<ConsumerGroup> = Api::namespaced(client.clone(), &namespace);
    groups.create(&PostParams::default(), &common::consumer_group("drain", spec)).await.unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    common::eventually(Duration::from_secs(60), || async { deployments.get_opt("drain").await.ok()? })
        .await
        .expect("the operator creates the Deployment");
    let fleet = ConsumerFleet::start(
        testenv::workload::deployment(
            &env.kube.assets().join("kubectl"),
            &env.kube.kubeconfig_path(),
            &namespace,
            "drain",
        ),
        ConsumerSettings { messages_per_second: CAPACITY, extra: Vec::new() },
    )
    .unwrap();

    // Every answer below comes from what a person would read: the ConsumerGroup's status.
    let most_replicas = std::cell::Cell::new(0);
    let drained_after = std::cell::Cell::new(None);
    let started = tokio::time::Instant::now();
    let learned = common::eventually(Duration::from_secs(150), || async {
        let status = groups.get("drain").await.ok()?.status?;
        most_replicas.set(most_replicas.get().max(status.replicas.unwrap_or(0)).max(fleet.consumers() as i32));
        let lag = status.lag.as_ref()?.total;
        if drained_after.get().is_none() && lag <= (PRODUCTION as i64) * POLL_SECONDS as i64 {
            drained_after.set(Some(started.elapsed()));
        }
        let autoscaling = status.autoscaling?;
        let per_replica: f64 = autoscaling.per_replica_rate.as_deref()?.parse().ok()?;
        let close = (per_replica - CAPACITY).abs() <= CAPACITY * 0.3;
        (drained_after.get().is_some() && autoscaling.rule == "TimeToDrain" && close)
            .then_some((per_replica, autoscaling))
    })
    .await;
    let (most_replicas, drained_after) = (most_replicas.get(), drained_after.get());
    let (per_replica, autoscaling) = learned.unwrap_or_else(|| {
        panic!("no learned rate near {CAPACITY}/s with the lag drained; most replicas {most_replicas}")
    });
    assert!(autoscaling.reason.starts_with("time to drain:"), "{}", autoscaling.reason);
    assert!(most_replicas <= PARTITIONS, "never beyond the partitions: {most_replicas}");
    eprintln!(
        "learned {per_replica}/s per consumer; drained after {drained_after:?}; at most {most_replicas} replicas"
    );

    // Once drained, production alone needs ceil(100 / 40) = 3 consumers: the group settles there
    // (4 if the learned rate came out a little under 33.4/s), not at the threshold rule's count.
    let settled = common::eventually(Duration::from_secs(90), || async {
        let status = groups.get("drain").await.ok()?.status?;
        let replicas = status.replicas?;
        let lag = status.lag?.total;
        ((3..=4).contains(&replicas) && fleet.consumers() == replicas as usize && lag < 1_000).then_some(replicas)
    })
    .await;
    assert!(settled.is_some(), "the group did not settle on what production needs");
    assert!(producer.sent() > BACKLOG / 10, "the producer kept writing");
    assert!(fleet.processed() >= BACKLOG, "the consumers processed the backlog");
}
