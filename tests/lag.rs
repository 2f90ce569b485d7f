//! Lag against a real broker: status and /metrics agree with Kafka's own `kafka-consumer-groups
//! --describe`; retention-deleted messages and transaction markers are not lag; lag autoscaling
//! rises to the partition cap and falls back when real consumers drain the lag; a Kafka outage
//! during autoscaling holds the replicas.

mod common;

use common::create_topic;
use std::collections::BTreeMap;
use std::time::Duration;

use consumer_group_operator::crd::ConsumerGroup;
use consumer_group_operator::kafka::{KafkaClient, TopicPartition};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use rdkafka::ClientConfig;

const WAIT: Duration = Duration::from_secs(90);

async fn start_operator(client: &Client, namespace: &str, bootstrap: &str) -> common::Operator {
    common::Operator::start(client, common::run_args(namespace, bootstrap, &["--kafka-timeout-seconds", "3"])).await
}

async fn http_request(address: std::net::SocketAddr, path: &str) -> (String, String) {
    common::http_request(address, path).await
}

async fn http_get(address: std::net::SocketAddr, path: &str) -> String {
    common::http_get(address, path).await
}

fn kafka(bootstrap: &str) -> KafkaClient {
    KafkaClient::new(&BTreeMap::from([("bootstrap.servers".to_string(), bootstrap.to_string())])).unwrap()
}

async fn commit(bootstrap: &str, group: &str, offsets: &[(String, i32, i64)]) {
    let offsets: BTreeMap<TopicPartition, i64> =
        offsets.iter().map(|(t, p, o)| (TopicPartition { topic: t.clone(), partition: *p }, *o)).collect();
    common::commit(&kafka(bootstrap), group, &offsets).await;
}

fn template() -> serde_json::Value {
    serde_json::json!({"spec": {"containers": [{"name": "c", "image": "i"}]}})
}

async fn setup(prefix: &str) -> (Client, String, Api<ConsumerGroup>, Api<Deployment>) {
    let env = common::shared_env().await;
    let client = common::kube_client(&env.kube).await;
    common::install_crds(&client).await;
    let namespace = common::namespace(&client, prefix).await;
    let groups = Api::namespaced(client.clone(), &namespace);
    let deployments = Api::namespaced(client.clone(), &namespace);
    (client, namespace, groups, deployments)
}

/// Kafka's own view: (partition -> (current offset, log end, lag)) from `--describe`.
fn describe_with_kafka_tool(
    kafka: &testenv::Kafka,
    group: &str,
    topic: &str,
) -> BTreeMap<i32, (Option<i64>, i64, Option<i64>)> {
    let out = kafka.consumer_groups(&["--describe", "--group", group]).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut rows = BTreeMap::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() >= 6 && cols[1] == topic {
            let number = |s: &str| s.parse::<i64>().ok();
            rows.insert(cols[2].parse().unwrap(), (number(cols[3]), cols[4].parse().unwrap(), number(cols[5])));
        }
    }
    assert!(!rows.is_empty(), "no rows for {topic} in:\n{text}");
    rows
}

#[tokio::test]
async fn lag_in_status_and_metrics_equals_kafka_consumer_groups_describe() {
    let env = common::shared_env().await;
    let (client, namespace, groups, _) = setup("lag-ref").await;
    let bootstrap = env.kafka.bootstrap_servers();
    let topic = create_topic(&bootstrap, 6).await;
    common::produce(&bootstrap, &topic, &[10, 11, 12, 13, 14, 15], None);
    let group_id = testenv::unique_name("g");
    // Partition 5 never committed: the tool prints "-", our rule (autoOffsetReset latest) says 0.
    let committed = [(0, 3), (1, 11), (2, 0), (3, 7), (4, 1)];
    commit(&bootstrap, &group_id, &committed.iter().map(|&(p, o)| (topic.clone(), p, o)).collect::<Vec<_>>()).await;
    let operator = start_operator(&client, &namespace, &bootstrap).await;
    let spec = serde_json::json!({"groupId": group_id, "topics": [topic], "replicas": 1, "template": template()});
    groups.create(&PostParams::default(), &common::consumer_group("lag", spec)).await.unwrap();

    let reference = tokio::task::spawn_blocking({
        let (group_id, topic) = (group_id.clone(), topic.clone());
        move || describe_with_kafka_tool(&testenv::shared().kafka, &group_id, &topic)
    })
    .await
    .unwrap();
    let lag = common::eventually(WAIT, || async {
        let lag = groups.get("lag").await.ok()?.status?.lag?;
        // 7 + 0 + 12 + 6 + 13 + 0 (never committed, latest)
        (lag.partitions.len() == 6 && lag.total == 38).then_some(lag)
    })
    .await
    .expect("status lag must converge to Kafka's figures");
    for p in &lag.partitions {
        // The tool lists an inactive group's committed partitions only.
        let Some(&(current, log_end, tool_lag)) = reference.get(&p.partition) else {
            assert_eq!((p.partition, p.committed_offset, p.lag), (5, None, 0), "only partition 5 is uncommitted");
            continue;
        };
        assert_eq!(p.log_end_offset, log_end, "log end of partition {}", p.partition);
        assert_eq!(p.committed_offset, current, "committed offset of partition {}", p.partition);
        assert_eq!(Some(p.lag), tool_lag, "lag of partition {}", p.partition);
    }
    assert_eq!(reference.len(), 5);
    assert_eq!(lag.max_partition_lag, 13);
    assert_eq!(lag.health.as_deref(), Some("OK"));

    let metrics = http_get(operator.metrics_address, "/metrics").await;
    for p in &lag.partitions {
        let line = format!(
            "kafka_consumergroup_lag{{namespace=\"{namespace}\",consumergroup=\"lag\",topic=\"{topic}\",partition=\"{}\"}} {}",
            p.partition, p.lag
        );
        assert!(metrics.contains(&line), "missing {line} in /metrics");
    }
    let sum = format!("kafka_consumergroup_lag_sum{{namespace=\"{namespace}\",consumergroup=\"lag\"}} {}", lag.total);
    assert!(metrics.contains(&sum), "missing {sum}");
    assert!(metrics.contains("consumergroup_operator_reconciles_total{result=\"success\"}"));
    assert!(metrics.contains("consumergroup_operator_partitions{"));
    assert_eq!(http_get(operator.metrics_address, "/healthz").await, "ok");
    let ready = common::eventually(WAIT, || async {
        (http_request(operator.metrics_address, "/readyz").await.1 == "ok").then_some(())
    })
    .await;
    assert!(ready.is_some());
}

#[tokio::test]
async fn retention_deleted_messages_are_not_lag() {
    let env = common::shared_env().await;
    let (client, namespace, groups, _) = setup("lag-retention").await;
    let bootstrap = env.kafka.bootstrap_servers();
    let topic = create_topic(&bootstrap, 1).await;
    common::produce(&bootstrap, &topic, &[100], None);
    let group_id = testenv::unique_name("g");
    commit(&bootstrap, &group_id, &[(topic.clone(), 0, 5)]).await;
    // Delete records below offset 90, as retention would.
    let offsets_file = std::env::temp_dir().join(format!("{}.json", testenv::unique_name("delete")));
    std::fs::write(
        &offsets_file,
        format!(r#"{{"partitions":[{{"topic":"{topic}","partition":0,"offset":90}}],"version":1}}"#),
    )
    .unwrap();
    let out = env
        .kafka
        .run_class(
            "org.apache.kafka.tools.DeleteRecordsCommand",
            &["--bootstrap-server", &bootstrap, "--offset-json-file", offsets_file.to_str().unwrap()],
        )
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let _operator = start_operator(&client, &namespace, &bootstrap).await;
    let spec = serde_json::json!({"groupId": group_id, "topics": [topic], "autoOffsetReset": "earliest", "replicas": 1, "template": template()});
    groups.create(&PostParams::default(), &common::consumer_group("retention", spec)).await.unwrap();
    let lag = common::eventually(WAIT, || async { groups.get("retention").await.ok()?.status?.lag }).await.unwrap();
    // Committed 5 but the log starts at 90: only 10 messages can still be read (KEDA #7936 counts 95).
    assert_eq!(lag.total, 10, "{lag:?}");
}

#[tokio::test]
async fn trailing_transaction_markers_are_not_lag_and_a_drained_group_scales_to_zero() {
    let env = common::shared_env().await;
    let (client, namespace, groups, deployments) = setup("lag-txn").await;
    let bootstrap = env.kafka.bootstrap_servers();
    let topic = create_topic(&bootstrap, 1).await;
    common::produce_transaction(&bootstrap, &topic, 5);
    // Five records at offsets 0..4, the commit marker at 5: log end 6. A consumer that read all five
    // commits 5.
    let group_id = testenv::unique_name("g");
    commit(&bootstrap, &group_id, &[(topic.clone(), 0, 5)]).await;

    let theirs: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "txn-consumer"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "t"}},
                 "template": {"metadata": {"labels": {"app": "t"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}
    }))
    .unwrap();
    deployments.create(&PostParams::default(), &theirs).await.unwrap();
    let _operator = start_operator(&client, &namespace, &bootstrap).await;
    let spec = serde_json::json!({"groupId": group_id, "topics": [topic],
        "scaleTargetRef": {"kind": "Deployment", "name": "txn-consumer"},
        "scaling": {"minReplicas": 0, "lagThreshold": 1, "scaleDownStabilizationSeconds": 0, "pollIntervalSeconds": 5}});
    groups.create(&PostParams::default(), &common::consumer_group("txn", spec)).await.unwrap();
    // The probe runs once the small lag has stayed put for a poll.
    let lag = common::eventually(WAIT, || async {
        let lag = groups.get("txn").await.ok()?.status?.lag?;
        (lag.total == 0).then_some(lag)
    })
    .await
    .expect("the trailing commit marker is not lag");
    assert_eq!(lag.partitions[0].log_end_offset, 5, "the marker is not counted: {lag:?}");
    let zero = common::eventually(WAIT, || async {
        (deployments.get("txn-consumer").await.ok()?.spec?.replicas? == 0).then_some(())
    })
    .await;
    assert!(zero.is_some(), "a drained transactional group scales to zero (KEDA #5675 never does)");

    // A real record after the commit is lag again.
    commit(&bootstrap, &group_id, &[(topic.clone(), 0, 4)]).await;
    let lag = common::eventually(WAIT, || async {
        let lag = groups.get("txn").await.ok()?.status?.lag?;
        (lag.total > 0).then_some(lag)
    })
    .await
    .unwrap();
    assert_eq!(lag.partitions[0].committed_offset, Some(4));
}

#[tokio::test]
async fn lag_autoscaling_rises_to_the_cap_and_falls_after_the_window() {
    let env = common::shared_env().await;
    let (client, namespace, groups, deployments) = setup("lag-loop").await;
    let bootstrap = env.kafka.bootstrap_servers();
    let topic = create_topic(&bootstrap, 6).await;
    common::produce(&bootstrap, &topic, &[100; 6], None);
    let group_id = testenv::unique_name("g");
    let _operator = start_operator(&client, &namespace, &bootstrap).await;
    let spec = serde_json::json!({"groupId": group_id, "topics": [topic], "autoOffsetReset": "earliest", "template": template(),
        "scaling": {"minReplicas": 1, "lagThreshold": 10, "scaleDownStabilizationSeconds": 5, "pollIntervalSeconds": 5}});
    groups.create(&PostParams::default(), &common::consumer_group("loop", spec)).await.unwrap();
    // 600 messages of lag at 10 per replica asks for 60: capped at 6 partitions.
    let capped =
        common::eventually(WAIT, || async { (deployments.get("loop").await.ok()?.spec?.replicas? == 6).then_some(()) })
            .await;
    assert!(capped.is_some(), "lag must scale up to the partition cap");
    let status = groups.get("loop").await.unwrap().status.unwrap();
    let capped = status.conditions.iter().find(|c| c.type_ == "ReplicasCapped").unwrap();
    assert_eq!((capped.status.as_str(), capped.reason.as_str()), ("True", "PartitionCap"));
    assert!(capped.message.contains("requested 60"), "{}", capped.message);

    // The test plays the six pods: real consumers drain the lag.
    let consumers = common::Consumers::start(&bootstrap, &group_id, &topic, 6, "drain");
    let drained = common::eventually(WAIT, || async {
        let status = groups.get("loop").await.ok()?.status?;
        (status.lag?.total == 0).then_some(())
    })
    .await;
    assert!(drained.is_some(), "the consumers must drain the lag");
    let scaled_down =
        common::eventually(WAIT, || async { (deployments.get("loop").await.ok()?.spec?.replicas? == 1).then_some(()) })
            .await;
    assert!(scaled_down.is_some(), "after the stabilization window the group falls back to minReplicas");
    drop(consumers);
}

#[tokio::test]
async fn kafka_outage_during_autoscaling_holds_replicas() {
    let (client, namespace, groups, deployments) = setup("lag-outage").await;
    let mut kafka = tokio::task::spawn_blocking(testenv::Kafka::start).await.unwrap().unwrap();
    let bootstrap = kafka.bootstrap_servers();
    let topic = create_topic(&bootstrap, 4).await;
    common::produce(&bootstrap, &topic, &[50; 4], None);
    let operator = start_operator(&client, &namespace, &bootstrap).await;
    let spec = serde_json::json!({"groupId": testenv::unique_name("g"), "topics": [topic], "autoOffsetReset": "earliest", "template": template(),
        "scaling": {"minReplicas": 0, "lagThreshold": 100, "scaleDownStabilizationSeconds": 0, "pollIntervalSeconds": 5}});
    groups.create(&PostParams::default(), &common::consumer_group("hold", spec)).await.unwrap();
    assert!(
        common::eventually(WAIT, || async { (deployments.get("hold").await.ok()?.spec?.replicas? == 2).then_some(()) })
            .await
            .is_some(),
        "200 messages at 100 per replica: 2"
    );
    let _kafka = tokio::task::spawn_blocking(move || {
        kafka.stop();
        kafka
    })
    .await
    .unwrap();
    let down = common::eventually(WAIT, || async {
        let status = groups.get("hold").await.ok()?.status?;
        status.conditions.iter().any(|c| c.type_ == "KafkaReachable" && c.status == "False").then_some(())
    })
    .await;
    assert!(down.is_some(), "the outage is reported");
    operator.wait_reconciles(3).await;
    assert_eq!(
        deployments.get("hold").await.unwrap().spec.unwrap().replicas,
        Some(2),
        "no scale to zero on missing data"
    );
}

/// Produces `per_tick` records to every partition every 300 ms until `stop` is set.
fn produce_steadily(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    per_tick: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let (bootstrap, topic) = (bootstrap.to_string(), topic.to_string());
    std::thread::spawn(move || {
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            common::produce(&bootstrap, &topic, &vec![per_tick; partitions as usize], None);
            std::thread::sleep(Duration::from_millis(300));
        }
    })
}

#[tokio::test]
async fn a_group_without_members_scales_up_from_zero_and_is_reported_stopped() {
    let env = common::shared_env().await;
    let (client, namespace, groups, deployments) = setup("lag-zero").await;
    let bootstrap = env.kafka.bootstrap_servers();
    let topic = create_topic(&bootstrap, 2).await;
    let group_id = testenv::unique_name("g");
    commit(&bootstrap, &group_id, &[(topic.clone(), 0, 0), (topic.clone(), 1, 0)]).await;
    let _operator = start_operator(&client, &namespace, &bootstrap).await;
    // At zero replicas nobody commits, so any new lag looks "persistent" to
    // excludePersistentLagAfterPolls: it must still count, or the group never wakes up.
    let spec = serde_json::json!({"groupId": group_id, "topics": [topic], "template": template(),
        "scaling": {"minReplicas": 0, "lagThreshold": 10, "activationLagThreshold": 60,
                    "excludePersistentLagAfterPolls": 2, "scaleDownStabilizationSeconds": 0, "pollIntervalSeconds": 5}});
    groups.create(&PostParams::default(), &common::consumer_group("zero", spec)).await.unwrap();
    let at_zero =
        common::eventually(WAIT, || async { (deployments.get("zero").await.ok()?.spec?.replicas? == 0).then_some(()) })
            .await;
    assert!(at_zero.is_some(), "no lag: the group rests at zero");

    // Lag grows slowly, poll after poll, with commits that cannot move.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = produce_steadily(&bootstrap, &topic, 2, 2, stop.clone());
    let woke = common::eventually(WAIT, || async {
        let replicas = deployments.get("zero").await.ok()?.spec?.replicas?;
        (replicas >= 1).then_some(replicas)
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    producer.join().unwrap();
    assert!(woke.is_some(), "lag above the activation threshold must scale a member-less group up from zero");
    let lag = groups.get("zero").await.unwrap().status.unwrap().lag.unwrap();
    assert!(lag.excluded_partitions.is_empty(), "nothing is excluded without members: {:?}", lag.excluded_partitions);

    // Lag that no member works on while producers are quiet: the consumers are gone (STOP), not
    // stuck on a message (STALL).
    let verdict = common::eventually(WAIT, || async {
        let lag = groups.get("zero").await.ok()?.status?.lag?;
        (lag.health.as_deref() == Some("STOP")).then_some(lag)
    })
    .await;
    assert!(
        verdict.is_some(),
        "a group with lag and no members is STOP: {:?}",
        groups.get("zero").await.unwrap().status
    );
}

#[tokio::test]
async fn unreadable_offsets_are_reported_and_their_lag_metrics_withdrawn() {
    let env = common::shared_env().await;
    let (client, namespace, groups, _) = setup("lag-denied").await;
    let bootstrap = env.kafka.bootstrap_servers();
    let topic = create_topic(&bootstrap, 2).await;
    common::produce(&bootstrap, &topic, &[5, 5], None);
    let group_id = testenv::unique_name("g");
    commit(&bootstrap, &group_id, &[(topic.clone(), 0, 1), (topic.clone(), 1, 2)]).await;
    let operator = start_operator(&client, &namespace, &bootstrap).await;
    let spec = serde_json::json!({"groupId": group_id, "topics": [topic], "replicas": 1, "template": template()});
    groups.create(&PostParams::default(), &common::consumer_group("denied", spec)).await.unwrap();
    let sum = format!("kafka_consumergroup_lag_sum{{namespace=\"{namespace}\",consumergroup=\"denied\"}} 7");
    let measured = common::eventually(WAIT, || async {
        http_get(operator.metrics_address, "/metrics").await.contains(&sum).then_some(())
    })
    .await;
    assert!(measured.is_some(), "lag is measured first: {sum}");

    // The operator loses the right to read the group (metadata stays readable).
    let group_id_for_acl = group_id.clone();
    tokio::task::spawn_blocking(move || {
        let kafka = &testenv::shared().kafka;
        kafka.add_acls(&["--allow-principal", "User:ANONYMOUS", "--operation", "All", "--group", &group_id_for_acl])?;
        kafka.add_acls(&["--deny-principal", "User:ANONYMOUS", "--operation", "Describe", "--group", &group_id_for_acl])
    })
    .await
    .unwrap()
    .expect("add the ACLs");
    let reported = common::eventually(WAIT, || async {
        let status = groups.get("denied").await.ok()?.status?;
        let c = status.conditions.into_iter().find(|c| c.type_ == "KafkaReachable" && c.status == "False")?;
        (c.reason == "OffsetsUnavailable").then_some(c.message)
    })
    .await
    .expect("KafkaReachable=False/OffsetsUnavailable once the offsets cannot be read");
    assert!(reported.contains("metadata read") && reported.to_lowercase().contains("authoriz"), "{reported}");
    let series = "consumergroup=\"denied\"";
    let withdrawn = common::eventually(WAIT, || async {
        let metrics = http_get(operator.metrics_address, "/metrics").await;
        let lag_lines: Vec<&str> =
            metrics.lines().filter(|l| l.starts_with("kafka_consumergroup_") && l.contains(series)).collect();
        lag_lines.is_empty().then_some(())
    })
    .await;
    assert!(withdrawn.is_some(), "no lag figure of the group may stay frozen on /metrics");
    let metrics = http_get(operator.metrics_address, "/metrics").await;
    assert!(
        metrics.contains(&format!(
            "consumergroup_operator_replicas{{namespace=\"{namespace}\",consumergroup=\"denied\"}} 1"
        )),
        "workload figures stay: they are read from Kubernetes"
    );
    let ready = groups.get("denied").await.unwrap().status.unwrap().conditions.into_iter().find(|c| c.type_ == "Ready");
    assert_eq!(ready.map(|c| c.status), Some("True".to_string()), "spec.replicas needs no offsets");
}

#[tokio::test]
async fn a_rotated_secret_or_a_deleted_group_closes_its_kafka_connection() {
    let env = common::shared_env().await;
    let (client, namespace, groups, _) = setup("lag-conn").await;
    let bootstrap = env.kafka.bootstrap_servers();
    let topic = create_topic(&bootstrap, 1).await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &namespace);
    for (name, client_id) in [("a", "client-a"), ("b", "client-b")] {
        let secret = serde_json::from_value(
            serde_json::json!({"metadata": {"name": name, "labels": {"kafka.operators.dev/client-properties": "true"}},
            "stringData": {"security.protocol": "plaintext", "client.id": client_id}}),
        )
        .unwrap();
        secrets.create(&PostParams::default(), &secret).await.unwrap();
    }
    let operator = start_operator(&client, &namespace, &bootstrap).await;
    for name in ["a", "b"] {
        let spec = serde_json::json!({"groupId": testenv::unique_name("g"), "topics": [topic], "replicas": 1, "template": template(),
            "kafka": {"clientPropertiesSecretRef": {"name": name}}});
        groups.create(&PostParams::default(), &common::consumer_group(name, spec)).await.unwrap();
    }
    let connections = |expected: f64| {
        let operator = &operator;
        async move {
            common::eventually(WAIT, || async {
                (operator.metric("consumergroup_operator_kafka_connections").await? == expected).then_some(())
            })
            .await
            .is_some()
        }
    };
    assert!(connections(2.0).await, "one connection per distinct Secret");

    // Secret a is rotated to settings librdkafka refuses: the connection made with the old ones
    // is closed, since no ConsumerGroup uses them any more.
    let rotate = |data: serde_json::Value| Patch::Merge(serde_json::json!({"data": null, "stringData": data}));
    secrets
        .patch(
            "a",
            &PatchParams::default(),
            &rotate(serde_json::json!({"security.protocol": "plaintext", "no.such.property": "1"})),
        )
        .await
        .unwrap();
    let refused = common::eventually(WAIT, || async {
        let status = groups.get("a").await.ok()?.status?;
        status
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready" && c.reason == "KafkaConfigInvalid")
            .map(|c| c.message)
    })
    .await
    .expect("the rotated Secret is read");
    assert!(refused.contains("no.such.property"), "{refused}");
    assert!(connections(1.0).await, "the connection of the old credentials is closed");

    // Rotated again to working settings: a new connection.
    secrets
        .patch(
            "a",
            &PatchParams::default(),
            &rotate(serde_json::json!({"security.protocol": "plaintext", "client.id": "client-a2"})),
        )
        .await
        .unwrap();
    assert!(connections(2.0).await);
    // The last ConsumerGroup using a connection goes away: so does the connection.
    groups.delete("b", &Default::default()).await.unwrap();
    assert!(connections(1.0).await, "a deleted ConsumerGroup's connection is closed");
}

#[tokio::test]
async fn a_group_on_the_kip_848_consumer_protocol_is_seen_with_its_members() {
    use rdkafka::consumer::{BaseConsumer, Consumer};

    let env = common::shared_env().await;
    if !common::serves_kip_848(&env.kafka) {
        return;
    }
    let (client, namespace, groups, _) = setup("lag-848").await;
    let bootstrap = env.kafka.bootstrap_servers();
    let topic = create_topic(&bootstrap, 2).await;
    let group_id = testenv::unique_name("g848");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", &group_id)
        .set("group.protocol", "consumer")
        .set("client.id", "new-protocol-member")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let assigned = common::eventually(WAIT, || {
        let _ = consumer.poll(Duration::from_millis(100));
        let count = consumer.assignment().map(|a| a.count()).unwrap_or(0);
        async move { (count == 2).then_some(()) }
    })
    .await;
    assert!(assigned.is_some(), "the consumer-protocol member never got its partitions");

    let _operator = start_operator(&client, &namespace, &bootstrap).await;
    let spec = serde_json::json!({"groupId": group_id, "topics": [topic], "replicas": 1, "template": template()});
    groups.create(&PostParams::default(), &common::consumer_group("kip848", spec)).await.unwrap();
    let status = common::eventually(WAIT, || async {
        let _ = consumer.poll(Duration::from_millis(10));
        let status = groups.get("kip848").await.ok()?.status?;
        (status.group_state.as_deref() == Some("Stable") && status.member_count == Some(1)).then_some(status)
    })
    .await
    .expect("the operator sees a KIP-848 group as Kafka's tool does: Stable, 1 member");
    assert_eq!(status.members[0].client_id, "new-protocol-member");
    assert_eq!(status.members[0].assignment.get(&topic), Some(&vec![0, 1]), "{:?}", status.members);
    let tool = env.kafka.consumer_groups(&["--describe", "--group", &group_id, "--state"]).unwrap();
    let tool = String::from_utf8_lossy(&tool.stdout).to_string();
    assert!(tool.contains("Stable") && tool.lines().any(|l| l.trim_end().ends_with(" 1")), "{tool}");
    drop(consumer);
}

/// 1,000 groups of 12 partitions: the scrape is streamed in many chunks and arrives whole, equal
/// to the text encoded at once, with every family's series together.
#[tokio::test]
async fn a_large_scrape_streams_whole() {
    use consumer_group_operator::metrics::{GroupLabels, GroupSeries, Metrics};
    use std::sync::Arc;
    let metrics = Arc::new(Metrics::new());
    let topic: Arc<str> = "orders".into();
    for g in 0..1000 {
        let partitions: Vec<_> = (0..12)
            .map(|p| consumer_group_operator::lag::PartitionFigures {
                topic: topic.clone(),
                partition: p,
                committed: Some(1000 + g),
                log_end: 1000 + g + i64::from(p),
                lag: i64::from(p),
                lag_seconds: f64::from(p) / 4.0,
            })
            .collect();
        let summary = consumer_group_operator::lag::Summary {
            total: 66,
            max_partition_lag: 11,
            measured_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            excluded_partitions: Vec::new(),
            excluded_count: 0,
            scaling_lag: 66,
            partitions,
            health: consumer_group_operator::lag::Health::Ok,
            max_lag_seconds: 2.75,
            rates: None,
            recent_capacity: None,
        };
        let labels = GroupLabels { namespace: "scrape".into(), consumergroup: format!("cg-{g}") };
        metrics
            .set_group(labels, GroupSeries { replicas: Some(1), lag: Some(Arc::new(summary)), ..Default::default() });
    }
    let (address, server) =
        consumer_group_operator::metrics::serve("127.0.0.1:0".parse().unwrap(), metrics.clone()).await.unwrap();
    let server = tokio::spawn(server);
    let scraped = http_get(address, "/metrics").await;
    server.abort();
    let expected = metrics.encode();
    assert!(expected.len() > 20 * 64 * 1024, "a scrape of many chunks: {} bytes", expected.len());
    assert_eq!(scraped.len(), expected.len());
    assert!(scraped == expected, "the streamed scrape differs from the text encoded at once");
    let lines = scraped.lines().filter(|l| l.starts_with("kafka_consumergroup_lag{")).count();
    assert_eq!(lines, 12_000);
    assert!(scraped.ends_with("# EOF\n"));
}

#[tokio::test]
async fn a_deleted_consumer_group_leaves_nothing_behind_in_the_operator() {
    let env = common::shared_env().await;
    let (client, namespace, groups, _) = setup("lag-gone").await;
    let bootstrap = env.kafka.bootstrap_servers();
    let topic = create_topic(&bootstrap, 1).await;
    let operator = start_operator(&client, &namespace, &bootstrap).await;
    for name in ["stays", "goes"] {
        let spec = serde_json::json!({"groupId": testenv::unique_name("g"), "topics": [topic], "replicas": 1, "template": template()});
        groups.create(&PostParams::default(), &common::consumer_group(name, spec)).await.unwrap();
    }
    let lag_sum =
        |name: &str| format!("kafka_consumergroup_lag_sum{{namespace=\"{namespace}\",consumergroup=\"{name}\"}}");
    let both = common::eventually(WAIT, || async {
        let metrics = http_get(operator.metrics_address, "/metrics").await;
        let kept = operator.metric("consumergroup_operator_groups_kept").await?;
        (metrics.contains(&lag_sum("stays")) && metrics.contains(&lag_sum("goes")) && kept == 2.0).then_some(())
    })
    .await;
    assert!(both.is_some(), "both groups are measured and kept");

    groups.delete("goes", &Default::default()).await.unwrap();
    let left = common::eventually(WAIT, || async {
        let metrics = http_get(operator.metrics_address, "/metrics").await;
        let kept = operator.metric("consumergroup_operator_groups_kept").await?;
        (!metrics.contains("consumergroup=\"goes\"") && kept == 1.0).then_some(metrics)
    })
    .await
    .expect("the deleted group's series and state go with its delete event");
    assert!(left.contains(&lag_sum("stays")), "the other group is still measured");
}
