//! OffsetReset against a real broker and apiserver: every DryRun plan equals what Kafka's own
//! `kafka-consumer-groups --reset-offsets --dry-run` computes on the same state; Execute commits the
//! plan, real consumers resume from it and the workload is restored; a group with a member the
//! operator does not control is refused and untouched; the operator killed between the steps
//! finishes the reset exactly once after a restart; rollback and offset deletion work.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use consumer_group_operator::crd::{ConsumerGroup, OffsetReset, ResetPhase};
use consumer_group_operator::kafka::{KafkaClient, TopicPartition};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message};

const WAIT: Duration = Duration::from_secs(90);
const TIMEOUT: Duration = Duration::from_secs(30);

async fn start_operator(client: &Client, namespace: &str, bootstrap: &str) -> common::Operator {
    common::Operator::start(client, common::run_args(namespace, bootstrap, &["--kafka-timeout-seconds", "5"])).await
}

fn kafka(bootstrap: &str) -> KafkaClient {
    KafkaClient::new(&BTreeMap::from([("bootstrap.servers".to_string(), bootstrap.to_string())])).unwrap()
}

fn tp(topic: &str, partition: i32) -> TopicPartition {
    TopicPartition { topic: topic.to_string(), partition }
}

async fn committed(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
    let scope: Vec<_> = (0..partitions).map(|p| tp(topic, p)).collect();
    let offsets = kafka(bootstrap).list_consumer_group_offsets(group, Some(&scope), TIMEOUT).await.unwrap();
    scope.iter().map(|tp| offsets.get(tp).copied().flatten()).collect()
}

fn offset_reset(name: &str, spec: serde_json::Value) -> OffsetReset {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "kafka.operators.dev/v1alpha1", "kind": "OffsetReset", "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap()
}

async fn wait_phase(resets: &Api<OffsetReset>, name: &str, phases: &[ResetPhase]) -> OffsetReset {
    common::eventually(WAIT, || async {
        let reset = resets.get(name).await.ok()?;
        let phase = reset.status.as_ref()?.phase?;
        phases.contains(&phase).then_some(reset)
    })
    .await
    .unwrap_or_else(|| panic!("OffsetReset {name} never reached {phases:?}"))
}

struct Setup {
    client: Client,
    namespace: String,
    groups: Api<ConsumerGroup>,
    resets: Api<OffsetReset>,
    deployments: Api<Deployment>,
}

async fn setup(prefix: &str) -> Setup {
    let env = common::shared_env().await;
    let client = common::kube_client(&env.kube).await;
    common::install_crds(&client).await;
    let namespace = common::namespace(&client, prefix).await;
    Setup {
        groups: Api::namespaced(client.clone(), &namespace),
        resets: Api::namespaced(client.clone(), &namespace),
        deployments: Api::namespaced(client.clone(), &namespace),
        client,
        namespace,
    }
}

/// `kafka-consumer-groups --reset-offsets ... --dry-run`: partition -> new offset.
fn reference_plan(kafka: &testenv::Kafka, group: &str, topic: &str, scenario: &[&str]) -> BTreeMap<i32, i64> {
    let mut args = vec!["--reset-offsets", "--group", group, "--dry-run"];
    args.extend_from_slice(scenario);
    let out = kafka.consumer_groups(&args).unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{scenario:?}: {text}{}", String::from_utf8_lossy(&out.stderr));
    // Rows of GROUP TOPIC PARTITION NEW-OFFSET, read as words: Kafka 3.9's tool prints them all on
    // one line.
    let words: Vec<&str> = text.split_whitespace().collect();
    let plan: BTreeMap<i32, i64> = words
        .windows(4)
        .filter(|row| row[0] == group && row[1] == topic)
        .map(|row| (row[2].parse().unwrap(), row[3].parse().unwrap()))
        .collect();
    assert!(
        !plan.is_empty(),
        "{scenario:?}: the tool planned nothing:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    plan
}

#[tokio::test]
async fn dry_run_plans_equal_kafka_consumer_groups_for_every_scenario() {
    let env = common::shared_env().await;
    let s = setup("reset-ref").await;
    let bootstrap = env.kafka.bootstrap_servers();
    let client = kafka(&bootstrap);
    let topic = testenv::unique_name("reset-topic");
    client.create_topic(&topic, 4, 1, TIMEOUT).await.unwrap();
    // Timestamps an hour back, one second apart; partition 3 stays empty.
    let base = k8s_openapi::jiff::Timestamp::now().as_millisecond() - 3_600_000;
    common::produce(&bootstrap, &topic, &[10, 10, 10, 0], Some(base));
    // Partition 1 loses its first 4 records (as retention would): log start 4.
    let delete_file = std::env::temp_dir().join(format!("{}.json", testenv::unique_name("delete")));
    std::fs::write(
        &delete_file,
        format!(r#"{{"partitions":[{{"topic":"{topic}","partition":1,"offset":4}}],"version":1}}"#),
    )
    .unwrap();
    let out = env
        .kafka
        .run_class(
            "org.apache.kafka.tools.DeleteRecordsCommand",
            &["--bootstrap-server", &bootstrap, "--offset-json-file", delete_file.to_str().unwrap()],
        )
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let group_id = testenv::unique_name("g");
    let commits = BTreeMap::from([(tp(&topic, 0), 5), (tp(&topic, 1), 2), (tp(&topic, 2), 9), (tp(&topic, 3), 0)]);
    common::commit(&client, &group_id, &commits).await;

    let _operator = start_operator(&s.client, &s.namespace, &bootstrap).await;
    let spec = serde_json::json!({"groupId": group_id, "topics": [topic], "replicas": 0,
        "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}});
    s.groups.create(&PostParams::default(), &common::consumer_group("ref", spec)).await.unwrap();

    let iso = |ms: i64| {
        k8s_openapi::jiff::Timestamp::from_millisecond(ms).unwrap().strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
    };
    let mid = base + 4_500; // between records 4 and 5
    let csv = std::env::temp_dir().join(format!("{}.csv", testenv::unique_name("seek")));
    std::fs::write(&csv, format!("{topic},0,3\n{topic},1,1\n{topic},2,50\n")).unwrap();
    let csv_path = csv.to_str().unwrap().to_string();
    let all = topic.clone();
    let some = format!("{topic}:0,2");
    #[allow(clippy::type_complexity)]
    let scenarios: Vec<(&str, Vec<String>, serde_json::Value, serde_json::Value)> = vec![
        ("earliest", vec!["--to-earliest".into()], serde_json::json!({"toEarliest": true}), serde_json::json!(null)),
        ("latest", vec!["--to-latest".into()], serde_json::json!({"toLatest": true}), serde_json::json!(null)),
        ("current", vec!["--to-current".into()], serde_json::json!({"toCurrent": true}), serde_json::json!(null)),
        (
            "to-offset",
            vec!["--to-offset".into(), "7".into()],
            serde_json::json!({"toOffset": 7}),
            serde_json::json!(null),
        ),
        (
            "to-offset-low",
            vec!["--to-offset".into(), "1".into()],
            serde_json::json!({"toOffset": 1}),
            serde_json::json!(null),
        ),
        (
            "shift-back",
            vec!["--shift-by".into(), "-3".into()],
            serde_json::json!({"shiftBy": -3}),
            serde_json::json!(null),
        ),
        (
            "shift-past-end",
            vec!["--shift-by".into(), "100".into()],
            serde_json::json!({"shiftBy": 100}),
            serde_json::json!(null),
        ),
        (
            "dt-before",
            vec!["--to-datetime".into(), iso(base - 60_000)],
            serde_json::json!({"toDatetime": iso(base - 60_000)}),
            serde_json::json!(null),
        ),
        (
            "dt-middle",
            vec!["--to-datetime".into(), iso(mid)],
            serde_json::json!({"toDatetime": iso(mid)}),
            serde_json::json!(null),
        ),
        (
            "dt-after",
            vec!["--to-datetime".into(), iso(base + 600_000)],
            serde_json::json!({"toDatetime": iso(base + 600_000)}),
            serde_json::json!(null),
        ),
        (
            "duration-long",
            vec!["--by-duration".into(), "P7D".into()],
            serde_json::json!({"byDuration": "P7D"}),
            serde_json::json!(null),
        ),
        (
            "duration-short",
            vec!["--by-duration".into(), "PT1S".into()],
            serde_json::json!({"byDuration": "PT1S"}),
            serde_json::json!(null),
        ),
        (
            "some-partitions",
            vec!["--to-earliest".into()],
            serde_json::json!({"toEarliest": true}),
            serde_json::json!([{"name": topic, "partitions": [0, 2]}]),
        ),
        (
            "seek",
            vec!["--from-file".into(), csv_path.clone()],
            serde_json::json!({"offsets": [
            {"topic": topic, "partition": 0, "offset": 3}, {"topic": topic, "partition": 1, "offset": 1}, {"topic": topic, "partition": 2, "offset": 50}]}),
            serde_json::json!(null),
        ),
    ];
    for (name, tool_args, target, scope) in scenarios {
        let mut spec = serde_json::json!({"consumerGroup": "ref", "target": target, "mode": "DryRun"});
        if !scope.is_null() {
            spec["topics"] = scope.clone();
        }
        s.resets.create(&PostParams::default(), &offset_reset(name, spec)).await.unwrap();
        let reset = wait_phase(&s.resets, name, &[ResetPhase::Planned, ResetPhase::Failed]).await;
        let status = reset.status.unwrap();
        assert_eq!(status.phase, Some(ResetPhase::Planned), "{name}: {:?}", status.message);
        let ours: BTreeMap<i32, i64> = status.plan.iter().map(|p| (p.partition, p.new_offset.unwrap())).collect();
        let mut args: Vec<String> = tool_args;
        if name != "seek" {
            args.push("--topic".into());
            args.push(if scope.is_null() { all.clone() } else { some.clone() });
        }
        let reference = tokio::task::spawn_blocking({
            let (group_id, topic) = (group_id.clone(), topic.clone());
            move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                reference_plan(&testenv::shared().kafka, &group_id, &topic, &args)
            }
        })
        .await
        .unwrap();
        assert!(!reference.is_empty(), "scenario {name}: the tool planned nothing");
        assert_eq!(ours, reference, "scenario {name}: our plan differs from kafka-consumer-groups");
    }
    // Nothing changed in Kafka: every plan was a dry run.
    assert_eq!(committed(&bootstrap, &group_id, &topic, 4).await, vec![Some(5), Some(2), Some(9), Some(0)]);
    std::fs::remove_file(&csv).ok();
}

#[tokio::test]
async fn execute_commits_the_plan_consumers_resume_from_it_and_rollback_undoes_it() {
    let env = common::shared_env().await;
    let s = setup("reset-exec").await;
    let bootstrap = env.kafka.bootstrap_servers();
    let client = kafka(&bootstrap);
    let topic = testenv::unique_name("reset-topic");
    client.create_topic(&topic, 3, 1, TIMEOUT).await.unwrap();
    common::produce(&bootstrap, &topic, &[10, 10, 10], Some(k8s_openapi::jiff::Timestamp::now().as_millisecond()));
    let group_id = testenv::unique_name("g");
    let commits = BTreeMap::from([(tp(&topic, 0), 8), (tp(&topic, 1), 5), (tp(&topic, 2), 10)]);
    common::commit(&client, &group_id, &commits).await;
    let operator = start_operator(&s.client, &s.namespace, &bootstrap).await;
    let spec = serde_json::json!({"groupId": group_id, "topics": [topic], "replicas": 2,
        "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}});
    s.groups.create(&PostParams::default(), &common::consumer_group("exec", spec)).await.unwrap();
    let replicas =
        common::eventually(WAIT, || async { s.deployments.get_opt("exec").await.ok()??.spec?.replicas }).await;
    assert_eq!(replicas, Some(2));

    // Review first, then approve by switching the mode.
    let spec = serde_json::json!({"consumerGroup": "exec", "target": {"shiftBy": -4}});
    s.resets.create(&PostParams::default(), &offset_reset("replay", spec)).await.unwrap();
    let planned = wait_phase(&s.resets, "replay", &[ResetPhase::Planned]).await;
    let preview: Vec<_> = planned.status.unwrap().plan.iter().map(|p| p.new_offset).collect();
    assert_eq!(preview, vec![Some(4), Some(1), Some(6)]);
    assert_eq!(
        committed(&bootstrap, &group_id, &topic, 3).await,
        vec![Some(8), Some(5), Some(10)],
        "a dry run changes nothing"
    );
    s.resets
        .patch("replay", &PatchParams::default(), &Patch::Merge(serde_json::json!({"spec": {"mode": "Execute"}})))
        .await
        .unwrap();
    // The workload is held at zero while the reset runs.
    let held = common::eventually(WAIT, || async {
        (s.deployments.get("exec").await.ok()?.spec?.replicas? == 0).then_some(())
    })
    .await;
    assert!(held.is_some(), "the workload must be scaled to zero during the reset");
    let done = wait_phase(&s.resets, "replay", &[ResetPhase::Succeeded, ResetPhase::Failed]).await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, Some(ResetPhase::Succeeded), "{:?}", status.message);
    assert_eq!(status.previous_replicas, Some(2));
    assert!(status.started_at.is_some() && status.completed_at.is_some());
    let plan: Vec<_> = status.plan.iter().map(|p| p.new_offset).collect();
    assert_eq!(plan, vec![Some(4), Some(1), Some(6)]);
    assert_eq!(committed(&bootstrap, &group_id, &topic, 3).await, plan, "Kafka holds exactly the plan");
    let restored = common::eventually(WAIT, || async {
        (s.deployments.get("exec").await.ok()?.spec?.replicas? == 2).then_some(())
    })
    .await;
    assert!(restored.is_some(), "replicas are restored after the reset");

    // A real consumer of the group starts exactly at the planned offsets.
    let first = tokio::task::spawn_blocking({
        let (bootstrap, group_id, topic) = (bootstrap.clone(), group_id.clone(), topic.clone());
        move || {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("group.id", &group_id)
                .set("enable.auto.commit", "false")
                .create()
                .unwrap();
            consumer.subscribe(&[&topic]).unwrap();
            let mut first = BTreeMap::new();
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while first.len() < 3 && std::time::Instant::now() < deadline {
                if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
                    first.entry(message.partition()).or_insert(message.offset());
                }
            }
            first
        }
    })
    .await
    .unwrap();
    assert_eq!(first, BTreeMap::from([(0, 4), (1, 1), (2, 6)]), "first message each partition delivered");

    // Undo: one object pointing at the executed reset.
    let spec = serde_json::json!({"consumerGroup": "exec", "target": {"rollbackOf": "replay"}, "mode": "Execute"});
    s.resets.create(&PostParams::default(), &offset_reset("undo", spec)).await.unwrap();
    let undone = wait_phase(&s.resets, "undo", &[ResetPhase::Succeeded, ResetPhase::Failed]).await;
    assert_eq!(undone.status.as_ref().unwrap().phase, Some(ResetPhase::Succeeded), "{:?}", undone.status);
    assert_eq!(committed(&bootstrap, &group_id, &topic, 3).await, vec![Some(8), Some(5), Some(10)]);

    // Deleting the offsets of the topic.
    let spec = serde_json::json!({"consumerGroup": "exec", "target": {"deleteOffsets": true}, "mode": "Execute"});
    s.resets.create(&PostParams::default(), &offset_reset("forget", spec)).await.unwrap();
    let deleted = wait_phase(&s.resets, "forget", &[ResetPhase::Succeeded, ResetPhase::Failed]).await;
    assert_eq!(deleted.status.as_ref().unwrap().phase, Some(ResetPhase::Succeeded), "{:?}", deleted.status);
    assert_eq!(committed(&bootstrap, &group_id, &topic, 3).await, vec![None, None, None]);

    // A paused group is frozen: a reset waits instead of leaving its consumers stopped.
    let pause = |paused: bool| Patch::Merge(serde_json::json!({"spec": {"paused": paused}}));
    s.groups.patch("exec", &PatchParams::default(), &pause(true)).await.unwrap();
    let spec = serde_json::json!({"consumerGroup": "exec", "target": {"toLatest": true}, "mode": "Execute"});
    s.resets.create(&PostParams::default(), &offset_reset("while-paused", spec)).await.unwrap();
    let waiting = wait_phase(&s.resets, "while-paused", &[ResetPhase::Pending]).await;
    let message = waiting.status.unwrap().message.unwrap_or_default();
    assert!(message.contains("paused"), "{message}");
    // The ConsumerGroup controller is the one that would stop the workload: let it look again.
    operator.wait_reconciles(3).await;
    assert_eq!(s.deployments.get("exec").await.unwrap().spec.unwrap().replicas, Some(2), "not stopped while paused");
    assert_eq!(committed(&bootstrap, &group_id, &topic, 3).await, vec![None, None, None], "nothing committed");
    s.groups.patch("exec", &PatchParams::default(), &pause(false)).await.unwrap();
    let done = wait_phase(&s.resets, "while-paused", &[ResetPhase::Succeeded, ResetPhase::Failed]).await;
    assert_eq!(done.status.as_ref().unwrap().phase, Some(ResetPhase::Succeeded), "{:?}", done.status);
    assert_eq!(committed(&bootstrap, &group_id, &topic, 3).await, vec![Some(10), Some(10), Some(10)]);
    let restored = common::eventually(WAIT, || async {
        (s.deployments.get("exec").await.ok()?.spec?.replicas? == 2).then_some(())
    })
    .await;
    assert!(restored.is_some(), "replicas are restored after the reset");
}

#[tokio::test]
async fn a_group_with_an_outside_member_is_refused_and_untouched() {
    let env = common::shared_env().await;
    let s = setup("reset-outside").await;
    let bootstrap = env.kafka.bootstrap_servers();
    let client = kafka(&bootstrap);
    let topic = testenv::unique_name("reset-topic");
    client.create_topic(&topic, 2, 1, TIMEOUT).await.unwrap();
    common::produce(&bootstrap, &topic, &[5, 5], Some(k8s_openapi::jiff::Timestamp::now().as_millisecond()));
    let group_id = testenv::unique_name("g");
    common::commit(&client, &group_id, &BTreeMap::from([(tp(&topic, 0), 3), (tp(&topic, 1), 4)])).await;
    // A consumer outside the cluster joins the group (librdkafka's default session timeout).
    let (stop, outside) = outside_consumer(&bootstrap, &group_id, &topic, 45_000);
    let _operator = start_operator(&s.client, &s.namespace, &bootstrap).await;
    let spec = serde_json::json!({"groupId": group_id, "topics": [topic], "replicas": 1,
        "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}});
    s.groups.create(&PostParams::default(), &common::consumer_group("outside", spec)).await.unwrap();
    let stable = common::eventually(WAIT, || async {
        (s.groups.get("outside").await.ok()?.status?.group_state? == "Stable").then_some(())
    })
    .await;
    assert!(stable.is_some());
    let spec = serde_json::json!({"consumerGroup": "outside", "target": {"toEarliest": true}, "mode": "Execute", "quiesceTimeoutSeconds": 5});
    s.resets.create(&PostParams::default(), &offset_reset("refused", spec)).await.unwrap();
    // A second reset of the same group waits for the first.
    wait_phase(&s.resets, "refused", &[ResetPhase::Quiescing]).await;
    // It may start quiescing before the test stops the outside consumer: a timeout that is not a race.
    let spec = serde_json::json!({"consumerGroup": "outside", "target": {"toLatest": true}, "mode": "Execute", "quiesceTimeoutSeconds": 60});
    s.resets.create(&PostParams::default(), &offset_reset("waiting", spec)).await.unwrap();
    let pending = wait_phase(&s.resets, "waiting", &[ResetPhase::Pending]).await;
    let reason = pending.status.unwrap().message.unwrap();
    assert!(reason.contains("refused"), "the Pending reason names the running reset: {reason}");
    let failed = wait_phase(&s.resets, "refused", &[ResetPhase::Failed, ResetPhase::Succeeded]).await;
    let status = failed.status.unwrap();
    assert_eq!(status.phase, Some(ResetPhase::Failed));
    let message = status.message.unwrap();
    assert!(message.contains("laptop-consumer") && message.contains("no offset changed"), "{message}");
    assert_eq!(committed(&bootstrap, &group_id, &topic, 2).await, vec![Some(3), Some(4)], "offsets untouched");
    // The workload comes back, unless the waiting reset already holds it at zero again.
    let restored = common::eventually(WAIT, || async {
        let replicas = s.deployments.get("outside").await.ok()?.spec?.replicas?;
        let next = s.resets.get("waiting").await.ok()?.status.and_then(|s| s.phase);
        (replicas == 1 || next.is_some_and(ResetPhase::holds_workload)).then_some(())
    })
    .await;
    assert!(restored.is_some(), "replicas restored after the refused reset");
    // The waiting reset runs next; with the outside member gone it succeeds.
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    outside.join().unwrap();
    let next = wait_phase(&s.resets, "waiting", &[ResetPhase::Succeeded, ResetPhase::Failed]).await;
    let status = next.status.unwrap();
    assert_eq!(status.phase, Some(ResetPhase::Succeeded), "{:?}", status.message);
    assert_eq!(committed(&bootstrap, &group_id, &topic, 2).await, vec![Some(5), Some(5)], "moved to the log end");
    let restored = common::eventually(WAIT, || async {
        (s.deployments.get("outside").await.ok()?.spec?.replicas? == 1).then_some(())
    })
    .await;
    assert!(restored.is_some(), "replicas restored after the reset that ran next");

    // A reset that cannot be planned fails before any consumer is stopped.
    let spec = serde_json::json!({"consumerGroup": "outside", "target": {"toEarliest": true}, "mode": "Execute",
        "topics": [{"name": topic, "partitions": [7]}]});
    s.resets.create(&PostParams::default(), &offset_reset("impossible", spec)).await.unwrap();
    let failed = wait_phase(&s.resets, "impossible", &[ResetPhase::Failed, ResetPhase::Succeeded]).await;
    let status = failed.status.unwrap();
    assert_eq!(status.phase, Some(ResetPhase::Failed));
    let message = status.message.unwrap();
    assert!(message.contains("partition 7 does not exist") && message.contains("nothing was stopped"), "{message}");
    assert_eq!(status.started_at, None, "never started quiescing");
    assert_eq!(s.deployments.get("outside").await.unwrap().spec.unwrap().replicas, Some(1));
}

#[tokio::test]
async fn a_member_on_the_kip_848_consumer_protocol_blocks_an_execute() {
    let env = common::shared_env().await;
    if !common::serves_kip_848(&env.kafka) {
        return;
    }
    let s = setup("reset-848").await;
    let bootstrap = env.kafka.bootstrap_servers();
    let client = kafka(&bootstrap);
    let topic = testenv::unique_name("reset-topic");
    client.create_topic(&topic, 2, 1, TIMEOUT).await.unwrap();
    common::produce(&bootstrap, &topic, &[5, 5], None);
    let group_id = testenv::unique_name("g848");
    // Kafka's own Java consumer, on Kafka 4's consumer protocol, reads everything and commits it.
    let java = env
        .kafka
        .spawn_tool(
            "org.apache.kafka.tools.consumer.ConsoleConsumer",
            &[
                "--bootstrap-server",
                &bootstrap,
                "--topic",
                &topic,
                "--group",
                &group_id,
                "--from-beginning",
                "--consumer-property",
                "group.protocol=consumer",
                "--consumer-property",
                "client.id=java-848",
                "--consumer-property",
                "auto.commit.interval.ms=200",
            ],
        )
        .unwrap();
    let drained = common::eventually(WAIT, || async {
        (committed(&bootstrap, &group_id, &topic, 2).await == vec![Some(5), Some(5)]).then_some(())
    })
    .await;
    assert!(drained.is_some(), "the Java consumer never committed the log end");
    let _operator = start_operator(&s.client, &s.namespace, &bootstrap).await;
    let spec = serde_json::json!({"groupId": group_id, "topics": [topic], "replicas": 1,
        "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}});
    s.groups.create(&PostParams::default(), &common::consumer_group("kip848", spec)).await.unwrap();
    let seen = common::eventually(WAIT, || async {
        let status = s.groups.get("kip848").await.ok()?.status?;
        (status.group_state.as_deref() == Some("Stable") && status.member_count == Some(1)).then_some(status)
    })
    .await
    .expect("the consumer-protocol member is seen: Stable, 1 member");
    assert_eq!(seen.members[0].client_id, "java-848");
    let spec = serde_json::json!({"consumerGroup": "kip848", "target": {"toEarliest": true}, "mode": "Execute",
        "quiesceTimeoutSeconds": 5, "sessionTimeoutSeconds": 5});
    s.resets.create(&PostParams::default(), &offset_reset("blocked", spec)).await.unwrap();
    let failed = wait_phase(&s.resets, "blocked", &[ResetPhase::Failed, ResetPhase::Succeeded]).await;
    let status = failed.status.unwrap();
    assert_eq!(status.phase, Some(ResetPhase::Failed), "{:?}", status.message);
    let message = status.message.unwrap();
    assert!(message.contains("java-848") && message.contains("no offset changed"), "{message}");
    assert_eq!(committed(&bootstrap, &group_id, &topic, 2).await, vec![Some(5), Some(5)], "offsets untouched");
    drop(java);
}

/// The operator binary as a separate process, so that it can die mid-reset.
fn operator_process(env: &testenv::SharedEnv, namespace: &str, fault: Option<&str>) -> std::process::Child {
    let fault = fault.map(|point| ("CGO_FAULT_EXIT_AT", point));
    operator_process_with(env, namespace, "1", fault)
}

fn operator_process_with(
    env: &testenv::SharedEnv,
    namespace: &str,
    resync_seconds: &str,
    fault: Option<(&str, &str)>,
) -> std::process::Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_consumer-group-operator"));
    command
        .args(["run", "--namespace", namespace, "--resync-seconds", resync_seconds, "--metrics-address", "127.0.0.1:0"])
        .args(["--default-bootstrap-servers", &env.kafka.bootstrap_servers()])
        .env("KUBECONFIG", env.kube.kubeconfig_path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some((name, value)) = fault {
        command.env(name, value);
    }
    command.spawn().expect("start the operator binary")
}

async fn wait_exit(child: &mut std::process::Child) -> i32 {
    let status = common::eventually(WAIT, || {
        let status = child.try_wait().unwrap();
        async move { status }
    })
    .await
    .expect("the operator must die at the fault point");
    status.code().unwrap_or(-1)
}

#[tokio::test]
async fn a_reset_interrupted_by_an_operator_crash_completes_once_after_restart() {
    let env = common::shared_env().await;
    let s = setup("reset-crash").await;
    let bootstrap = env.kafka.bootstrap_servers();
    let client = kafka(&bootstrap);
    let topic = testenv::unique_name("reset-topic");
    client.create_topic(&topic, 2, 1, TIMEOUT).await.unwrap();
    common::produce(&bootstrap, &topic, &[20, 20], Some(k8s_openapi::jiff::Timestamp::now().as_millisecond()));
    let group_id = testenv::unique_name("g");
    common::commit(&client, &group_id, &BTreeMap::from([(tp(&topic, 0), 15), (tp(&topic, 1), 12)])).await;
    let spec = serde_json::json!({"groupId": group_id, "topics": [topic], "replicas": 2,
        "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}});
    s.groups.create(&PostParams::default(), &common::consumer_group("crash", spec)).await.unwrap();

    for (round, point) in ["plan-stored", "committed"].into_iter().enumerate() {
        let mut first = operator_process(env, &s.namespace, Some(point));
        let replicas =
            common::eventually(WAIT, || async { s.deployments.get_opt("crash").await.ok()??.spec?.replicas }).await;
        assert_eq!(replicas, Some(2));
        let name = format!("shift-{round}");
        let spec = serde_json::json!({"consumerGroup": "crash", "target": {"shiftBy": -5}, "mode": "Execute"});
        s.resets.create(&PostParams::default(), &offset_reset(&name, spec)).await.unwrap();
        assert_eq!(wait_exit(&mut first).await, 86, "the operator dies at {point}");
        let before = committed(&bootstrap, &group_id, &topic, 2).await;
        let interrupted = s.resets.get(&name).await.unwrap().status.unwrap();
        assert_eq!(interrupted.phase, Some(ResetPhase::Committing), "{point}: the plan is stored before committing");
        let expected: Vec<_> = interrupted.plan.iter().map(|p| p.new_offset).collect();
        let original: Vec<_> = interrupted.plan.iter().map(|p| p.current_offset).collect();
        match point {
            "plan-stored" => assert_eq!(before, original, "nothing committed yet"),
            _ => assert_eq!(before, expected, "committed, not yet marked"),
        }
        assert_eq!(s.deployments.get("crash").await.unwrap().spec.unwrap().replicas, Some(0), "held at zero meanwhile");

        let mut second = operator_process(env, &s.namespace, None);
        let done = wait_phase(&s.resets, &name, &[ResetPhase::Succeeded, ResetPhase::Failed]).await;
        assert_eq!(done.status.as_ref().unwrap().phase, Some(ResetPhase::Succeeded), "{:?}", done.status);
        // Shifted by -5 exactly once, whatever the crash point.
        let after = committed(&bootstrap, &group_id, &topic, 2).await;
        assert_eq!(after, expected);
        assert_eq!(after, original.iter().map(|o| o.map(|o| o - 5)).collect::<Vec<_>>());
        let restored = common::eventually(WAIT, || async {
            (s.deployments.get("crash").await.ok()?.spec?.replicas? == 2).then_some(())
        })
        .await;
        assert!(restored.is_some(), "replicas are never left at zero");
        let _ = second.kill();
        let _ = second.wait();
    }
}

/// A consumer outside the cluster in `group_id`, polling until the returned flag is set.
fn outside_consumer(
    bootstrap: &str,
    group_id: &str,
    topic: &str,
    session_timeout_ms: u32,
) -> (std::sync::Arc<std::sync::atomic::AtomicBool>, std::thread::JoinHandle<()>) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let thread = std::thread::spawn({
        let (bootstrap, group_id, topic, stop) =
            (bootstrap.to_string(), group_id.to_string(), topic.to_string(), stop.clone());
        move || {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("group.id", &group_id)
                .set("client.id", "laptop-consumer")
                .set("session.timeout.ms", session_timeout_ms.to_string())
                .set("enable.auto.commit", "false")
                .create()
                .unwrap();
            consumer.subscribe(&[&topic]).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = consumer.poll(Duration::from_millis(100));
            }
        }
    });
    (stop, thread)
}

#[tokio::test]
async fn members_outside_the_workload_are_shown_and_fail_an_execute_within_the_session_timeout() {
    let env = common::shared_env().await;
    let s = setup("reset-outsider").await;
    let bootstrap = env.kafka.bootstrap_servers();
    let client = kafka(&bootstrap);
    let topic = testenv::unique_name("reset-topic");
    client.create_topic(&topic, 2, 1, TIMEOUT).await.unwrap();
    common::produce(&bootstrap, &topic, &[5, 5], None);
    let group_id = testenv::unique_name("g");
    common::commit(&client, &group_id, &BTreeMap::from([(tp(&topic, 0), 3), (tp(&topic, 1), 4)])).await;
    let (stop, outside) = outside_consumer(&bootstrap, &group_id, &topic, 6000);
    let _operator = start_operator(&s.client, &s.namespace, &bootstrap).await;
    let spec = serde_json::json!({"groupId": group_id, "topics": [topic], "replicas": 1,
        "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}});
    s.groups.create(&PostParams::default(), &common::consumer_group("outsider", spec)).await.unwrap();
    let stable = common::eventually(WAIT, || async {
        (s.groups.get("outsider").await.ok()?.status?.group_state? == "Stable").then_some(())
    })
    .await;
    assert!(stable.is_some());

    // The preview names who is in the group before anyone approves.
    let spec = serde_json::json!({"consumerGroup": "outsider", "target": {"toEarliest": true}});
    s.resets.create(&PostParams::default(), &offset_reset("preview", spec)).await.unwrap();
    let status = wait_phase(&s.resets, "preview", &[ResetPhase::Planned, ResetPhase::Failed]).await.status.unwrap();
    assert_eq!(status.member_count, Some(1));
    assert_eq!(status.members.iter().map(|m| m.client_id.as_str()).collect::<Vec<_>>(), ["laptop-consumer"]);
    let message = status.message.unwrap();
    assert!(message.contains("1 member(s): laptop-consumer"), "{message}");

    // Executed: the workload goes to zero (no pod exists here), the outsider stays; the reset gives up
    // after sessionTimeoutSeconds instead of the 300 s quiesce timeout, and the workload returns.
    let started = std::time::Instant::now();
    let spec = serde_json::json!({"consumerGroup": "outsider", "target": {"toEarliest": true}, "mode": "Execute",
        "quiesceTimeoutSeconds": 300, "sessionTimeoutSeconds": 6});
    s.resets.create(&PostParams::default(), &offset_reset("execute", spec)).await.unwrap();
    let status = wait_phase(&s.resets, "execute", &[ResetPhase::Failed, ResetPhase::Succeeded]).await.status.unwrap();
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    outside.join().unwrap();
    assert_eq!(status.phase, Some(ResetPhase::Failed));
    let message = status.message.unwrap();
    assert!(
        message.contains("laptop-consumer")
            && message.contains("outside the workload")
            && message.contains("no offset changed"),
        "{message}"
    );
    assert!(took < Duration::from_secs(60), "failed after {took:?}, long before quiesceTimeoutSeconds");
    assert_eq!(committed(&bootstrap, &group_id, &topic, 2).await, vec![Some(3), Some(4)], "offsets untouched");
    let restored = common::eventually(WAIT, || async {
        (s.deployments.get("outsider").await.ok()?.spec?.replicas? == 1).then_some(())
    })
    .await;
    assert!(restored.is_some(), "the workload resumes");
}

#[tokio::test]
async fn a_commit_kafka_refuses_fails_the_reset_changes_nothing_and_restores_the_workload() {
    let env = common::shared_env().await;
    let s = setup("reset-refused").await;
    let bootstrap = env.kafka.bootstrap_servers();
    let client = kafka(&bootstrap);
    let (open, guarded) = (testenv::unique_name("open"), testenv::unique_name("guarded"));
    client.create_topic(&open, 2, 1, TIMEOUT).await.unwrap();
    client.create_topic(&guarded, 1, 1, TIMEOUT).await.unwrap();
    common::produce(&bootstrap, &open, &[10, 10], None);
    common::produce(&bootstrap, &guarded, &[10], None);
    let group_id = testenv::unique_name("g");
    let before = BTreeMap::from([(tp(&open, 0), 7), (tp(&open, 1), 8), (tp(&guarded, 0), 9)]);
    common::commit(&client, &group_id, &before).await;
    // Committing needs Read on a topic: the operator may describe the guarded topic, not read it.
    let topic = guarded.clone();
    tokio::task::spawn_blocking(move || {
        let kafka = &testenv::shared().kafka;
        kafka.add_acls(&["--allow-principal", "User:ANONYMOUS", "--operation", "All", "--topic", &topic])?;
        kafka.add_acls(&["--deny-principal", "User:ANONYMOUS", "--operation", "Read", "--topic", &topic])
    })
    .await
    .unwrap()
    .expect("add the ACLs");

    let _operator = start_operator(&s.client, &s.namespace, &bootstrap).await;
    let spec = serde_json::json!({"groupId": group_id, "topics": [open, guarded], "replicas": 1,
        "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}});
    s.groups.create(&PostParams::default(), &common::consumer_group("refused", spec)).await.unwrap();
    let spec = serde_json::json!({"consumerGroup": "refused", "target": {"toEarliest": true}, "mode": "Execute"});
    s.resets.create(&PostParams::default(), &offset_reset("to-earliest", spec)).await.unwrap();
    let status =
        wait_phase(&s.resets, "to-earliest", &[ResetPhase::Failed, ResetPhase::Succeeded]).await.status.unwrap();
    assert_eq!(status.phase, Some(ResetPhase::Failed), "{:?}", status.message);
    let message = status.message.unwrap();
    assert!(message.contains(&format!("{guarded}/0")) && message.to_lowercase().contains("authorization"), "{message}");
    assert!(message.contains("put back"), "{message}");
    let scope: Vec<TopicPartition> = before.keys().cloned().collect();
    let now = client.list_consumer_group_offsets(&group_id, Some(&scope), TIMEOUT).await.unwrap();
    let now: BTreeMap<TopicPartition, i64> = now.into_iter().filter_map(|(tp, o)| Some((tp, o?))).collect();
    assert_eq!(now, before, "the partitions Kafka accepted were put back: nothing changed");
    let restored = common::eventually(WAIT, || async {
        (s.deployments.get("refused").await.ok()?.spec?.replicas? == 1).then_some(())
    })
    .await;
    assert!(restored.is_some(), "the workload resumes");
}

#[tokio::test]
async fn kafka_failing_while_the_workload_is_stopped_fails_the_reset_by_its_deadline() {
    let s = setup("reset-outage").await;
    let mut broker = tokio::task::spawn_blocking(testenv::Kafka::start).await.unwrap().unwrap();
    let bootstrap = broker.bootstrap_servers();
    let client = kafka(&bootstrap);
    let topic = testenv::unique_name("reset-topic");
    client.create_topic(&topic, 1, 1, TIMEOUT).await.unwrap();
    let group_id = testenv::unique_name("g");
    common::commit(&client, &group_id, &BTreeMap::from([(tp(&topic, 0), 0)])).await;
    // An outside member keeps the reset quiescing (its session outlasts the test).
    let (stop, outside) = outside_consumer(&bootstrap, &group_id, &topic, 60_000);
    let _operator = start_operator(&s.client, &s.namespace, &bootstrap).await;
    let spec = serde_json::json!({"groupId": group_id, "topics": [topic], "replicas": 1,
        "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}});
    s.groups.create(&PostParams::default(), &common::consumer_group("outage", spec)).await.unwrap();
    let stable = common::eventually(WAIT, || async {
        (s.groups.get("outage").await.ok()?.status?.group_state? == "Stable").then_some(())
    })
    .await;
    assert!(stable.is_some());
    let spec = serde_json::json!({"consumerGroup": "outage", "target": {"toEarliest": true}, "mode": "Execute",
        "quiesceTimeoutSeconds": 20, "sessionTimeoutSeconds": 300});
    s.resets.create(&PostParams::default(), &offset_reset("during-outage", spec)).await.unwrap();
    wait_phase(&s.resets, "during-outage", &[ResetPhase::Quiescing]).await;
    let held = common::eventually(WAIT, || async {
        (s.deployments.get("outage").await.ok()?.spec?.replicas? == 0).then_some(())
    })
    .await;
    assert!(held.is_some(), "the workload is held at zero while quiescing");

    let _broker = tokio::task::spawn_blocking(move || {
        broker.stop();
        broker
    })
    .await
    .unwrap();
    let status =
        wait_phase(&s.resets, "during-outage", &[ResetPhase::Failed, ResetPhase::Succeeded]).await.status.unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    outside.join().unwrap();
    assert_eq!(status.phase, Some(ResetPhase::Failed));
    let message = status.message.unwrap();
    assert!(message.contains("Kafka kept failing") && message.contains("no offset changed"), "{message}");
    let restored = common::eventually(WAIT, || async {
        (s.deployments.get("outage").await.ok()?.spec?.replicas? == 1).then_some(())
    })
    .await;
    assert!(restored.is_some(), "the workload resumes although Kafka is still down");
}

#[tokio::test]
async fn status_writes_are_refused_when_decided_on_a_stale_object() {
    let s = setup("reset-occ").await;
    let spec = serde_json::json!({"consumerGroup": "absent", "target": {"toEarliest": true}});
    let created = s.resets.create(&PostParams::default(), &offset_reset("occ", spec)).await.unwrap();
    let committing =
        consumer_group_operator::crd::OffsetResetStatus { phase: Some(ResetPhase::Committing), ..Default::default() };
    let written = consumer_group_operator::controllers::offset_reset::apply_status(&s.client, &created, &committing)
        .await
        .unwrap();
    // A second writer still holding the first version (a stale cache, a deposed leader) is refused.
    let going_back =
        consumer_group_operator::crd::OffsetResetStatus { phase: Some(ResetPhase::Quiescing), ..Default::default() };
    match consumer_group_operator::controllers::offset_reset::apply_status(&s.client, &created, &going_back).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 409, "{status:?}"),
        other => panic!("a write decided on a stale object must conflict, got {other:?}"),
    }
    let stored = s.resets.get("occ").await.unwrap();
    assert_eq!(stored.status.unwrap().phase, Some(ResetPhase::Committing), "the stale write changed nothing");
    assert!(
        consumer_group_operator::controllers::offset_reset::apply_status(&s.client, &written, &going_back)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn another_namespace_cannot_reset_or_see_a_group_id_it_does_not_own() {
    let env = common::shared_env().await;
    let client = common::kube_client(&env.kube).await;
    common::install_crds(&client).await;
    let bootstrap = env.kafka.bootstrap_servers();
    let (team_a, team_b, squatter) = (
        common::namespace(&client, "team-a").await,
        common::namespace(&client, "team-b").await,
        common::namespace(&client, "squat").await,
    );
    let topic = common::create_topic(&bootstrap, 2).await;
    common::produce(&bootstrap, &topic, &[10, 10], None);
    let group_id = testenv::unique_name("team-a-orders");
    common::commit(&kafka(&bootstrap), &group_id, &BTreeMap::from([(tp(&topic, 0), 7), (tp(&topic, 1), 9)])).await;
    let namespaces = format!("{team_a},{team_b},{squatter}");
    let _operator = start_operator(&client, &namespaces, &bootstrap).await;
    let template = serde_json::json!({"spec": {"containers": [{"name": "c", "image": "i"}]}});
    let spec = |kafka: serde_json::Value| serde_json::json!({"groupId": group_id, "topics": [topic], "replicas": 0, "template": template, "kafka": kafka});
    let ready = |namespace: &str| {
        let groups: Api<ConsumerGroup> = Api::namespaced(client.clone(), namespace);
        async move {
            common::eventually(WAIT, || async {
                let conditions = groups.get("orders").await.ok()?.status?.conditions;
                let ready = conditions.into_iter().find(|c| c.type_ == "Ready")?;
                (!ready.reason.is_empty()).then_some(ready)
            })
            .await
            .expect("a Ready condition")
        }
    };

    // An older ConsumerGroup the operator does not serve (its Secret does not exist) owns nothing.
    let squatting = spec(serde_json::json!({"clientPropertiesSecretRef": {"name": "missing"}}));
    Api::<ConsumerGroup>::namespaced(client.clone(), &squatter)
        .create(&PostParams::default(), &common::consumer_group("orders", squatting))
        .await
        .unwrap();
    assert_eq!(ready(&squatter).await.reason, "SecretNotFound");
    Api::<ConsumerGroup>::namespaced(client.clone(), &team_a)
        .create(&PostParams::default(), &common::consumer_group("orders", spec(serde_json::json!({}))))
        .await
        .unwrap();
    let owner = common::eventually(WAIT, || async {
        let status = Api::<ConsumerGroup>::namespaced(client.clone(), &team_a).get("orders").await.ok()?.status?;
        status.group_state.is_some().then_some(status)
    })
    .await
    .expect("team A's ConsumerGroup is served despite the older squatter");
    assert!(owner.conditions.iter().all(|c| c.reason != "GroupIdConflict"), "{:?}", owner.conditions);

    // Team B names the same group id on the same cluster, spelled another way (the same broker by
    // name instead of address), then asks to reset it.
    let groups_b: Api<ConsumerGroup> = Api::namespaced(client.clone(), &team_b);
    let spelled_otherwise = bootstrap.replace("127.0.0.1", "localhost");
    assert_ne!(spelled_otherwise, bootstrap);
    let same_cluster = spec(serde_json::json!({"bootstrapServers": spelled_otherwise}));
    groups_b.create(&PostParams::default(), &common::consumer_group("orders", same_cluster)).await.unwrap();
    let conflict = ready(&team_b).await;
    assert_eq!(conflict.reason, "GroupIdConflict", "{}", conflict.message);
    assert!(conflict.message.contains(&format!("{team_a}/orders")), "{}", conflict.message);
    let resets_b: Api<OffsetReset> = Api::namespaced(client.clone(), &team_b);
    for (name, mode) in [("preview", "DryRun"), ("rewind", "Execute")] {
        let reset = serde_json::json!({"consumerGroup": "orders", "mode": mode, "target": {"toEarliest": true}});
        resets_b.create(&PostParams::default(), &offset_reset(name, reset)).await.unwrap();
        let failed =
            wait_phase(&resets_b, name, &[ResetPhase::Failed, ResetPhase::Planned, ResetPhase::Succeeded]).await;
        let status = failed.status.unwrap();
        assert_eq!(status.phase, Some(ResetPhase::Failed), "{name}: {:?}", status.message);
        let message = status.message.unwrap_or_default();
        assert!(message.contains(&format!("{team_a}/orders")) && message.contains("nothing was"), "{name}: {message}");
        assert!(status.plan.is_empty() && status.members.is_empty() && status.member_count.is_none(), "{name}");
    }
    // Kafka's own tool shows team A's offsets as they were; team B's status shows nothing of A's group.
    let out = env.kafka.consumer_groups(&["--describe", "--group", &group_id, "--offsets"]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let offsets: BTreeMap<i32, i64> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|cols| cols.len() >= 4 && cols[1] == topic)
        .map(|cols| (cols[2].parse().unwrap(), cols[3].parse().unwrap()))
        .collect();
    assert_eq!(offsets, BTreeMap::from([(0, 7), (1, 9)]), "{text}");
    let status_b = groups_b.get("orders").await.unwrap().status.unwrap();
    assert!(status_b.members.is_empty() && status_b.group_state.is_none() && status_b.lag.is_none(), "{status_b:?}");

    // The reset controller's check could fail: team A's own reset of the same group goes through.
    let resets_a: Api<OffsetReset> = Api::namespaced(client.clone(), &team_a);
    let reset = serde_json::json!({"consumerGroup": "orders", "mode": "Execute", "target": {"toEarliest": true}});
    resets_a.create(&PostParams::default(), &offset_reset("rewind", reset)).await.unwrap();
    let done = wait_phase(&resets_a, "rewind", &[ResetPhase::Failed, ResetPhase::Succeeded]).await;
    assert_eq!(done.status.as_ref().and_then(|s| s.phase), Some(ResetPhase::Succeeded), "{:?}", done.status);
    assert_eq!(committed(&bootstrap, &group_id, &topic, 2).await, [Some(0), Some(0)]);
}

#[tokio::test]
async fn an_apiserver_error_while_reading_the_reset_to_roll_back_is_retried_not_a_failure() {
    let env = common::shared_env().await;
    let s = setup("reset-kube-error").await;
    let bootstrap = env.kafka.bootstrap_servers();
    let topic = common::create_topic(&bootstrap, 1).await;
    common::produce(&bootstrap, &topic, &[10], None);
    let group_id = testenv::unique_name("g");
    common::commit(&kafka(&bootstrap), &group_id, &BTreeMap::from([(tp(&topic, 0), 8)])).await;
    // An earlier reset that succeeded (its status written as the operator would have; a
    // settled reset is not read again).
    let spec = serde_json::json!({"groupId": group_id, "topics": [topic], "replicas": 0,
        "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}});
    s.groups.create(&PostParams::default(), &common::consumer_group("g", spec)).await.unwrap();
    let earlier = serde_json::json!({"consumerGroup": "g", "target": {"toEarliest": true}, "mode": "DryRun"});
    s.resets.create(&PostParams::default(), &offset_reset("earlier", earlier)).await.unwrap();
    let succeeded = Patch::Merge(serde_json::json!({"status": {"phase": "Succeeded",
        "plan": [{"topic": topic, "partition": 0, "currentOffset": 3, "newOffset": 0}]}}));
    s.resets.patch_status("earlier", &PatchParams::default(), &succeeded).await.unwrap();

    // The operator acts as a user who may do everything it needs but read that earlier reset: its
    // read is refused, as an apiserver in trouble would refuse it.
    let user = testenv::unique_name("no-get");
    let rules = |earlier_readable: bool| {
        let names = if earlier_readable { serde_json::json!(["undo", "earlier"]) } else { serde_json::json!(["undo"]) };
        serde_json::json!([
            {"apiGroups": ["", "apps", "events.k8s.io", "coordination.k8s.io"], "resources": ["*"], "verbs": ["*"]},
            {"apiGroups": ["kafka.operators.dev"], "resources": ["consumergroups", "consumergroups/status",
                "kafkaconnections", "kafkaconnections/status", "clusterkafkaconnections",
                "clusterkafkaconnections/status", "offsetresets/status"], "verbs": ["*"]},
            {"apiGroups": ["kafka.operators.dev"], "resources": ["offsetresets"], "verbs": ["list", "watch", "patch", "update"]},
            {"apiGroups": ["kafka.operators.dev"], "resources": ["offsetresets"], "resourceNames": names, "verbs": ["get"]}])
    };
    let roles: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(s.client.clone());
    let role = serde_json::from_value(serde_json::json!({"metadata": {"name": user}, "rules": rules(false)})).unwrap();
    roles.create(&PostParams::default(), &role).await.unwrap();
    let bindings: Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> = Api::all(s.client.clone());
    let binding = serde_json::from_value(serde_json::json!({"metadata": {"name": user},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": user},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}))
    .unwrap();
    bindings.create(&PostParams::default(), &binding).await.unwrap();
    let as_user = common::client_as(&env.kube, &user).await;
    let operator = start_operator(&as_user, &s.namespace, &bootstrap).await;
    let kube_errors = || async {
        let metrics = common::http_get(operator.metrics_address, "/metrics").await;
        let prefix = "consumergroup_operator_reconcile_errors_total{reason=\"kube_api\"} ";
        metrics.lines().find_map(|l| l.strip_prefix(prefix)?.parse::<u64>().ok()).unwrap_or(0)
    };
    let before = kube_errors().await;
    let undo = serde_json::json!({"consumerGroup": "g", "target": {"rollbackOf": "earlier"}, "mode": "DryRun"});
    s.resets.create(&PostParams::default(), &offset_reset("undo", undo)).await.unwrap();
    // The refused read is an apiserver error, retried: the reset does not fail meanwhile.
    let retried = common::eventually(WAIT, || async { (kube_errors().await > before).then_some(()) }).await;
    assert!(retried.is_some(), "the refused read is counted as an apiserver error");
    let status = s.resets.get("undo").await.unwrap().status.unwrap_or_default();
    assert_ne!(status.phase, Some(ResetPhase::Failed), "{:?}", status.message);
    // Allowed again: the same reset goes on and plans the rollback (back to 3 from Kafka's 8).
    roles
        .patch(&user, &PatchParams::default(), &Patch::Merge(serde_json::json!({"rules": rules(true)})))
        .await
        .unwrap();
    let planned = wait_phase(&s.resets, "undo", &[ResetPhase::Planned, ResetPhase::Failed]).await;
    let status = planned.status.unwrap();
    assert_eq!(status.phase, Some(ResetPhase::Planned), "{:?}", status.message);
    assert_eq!(status.plan.iter().map(|p| p.new_offset).collect::<Vec<_>>(), vec![Some(3)]);
    roles.delete(&user, &Default::default()).await.unwrap();
    bindings.delete(&user, &Default::default()).await.unwrap();
}

#[tokio::test]
async fn a_topic_the_operator_may_not_describe_is_named_as_refused_not_as_missing() {
    let env = common::shared_env().await;
    let s = setup("topic-refused").await;
    let bootstrap = env.kafka.bootstrap_servers();
    let client = kafka(&bootstrap);
    let hidden = testenv::unique_name("hidden");
    client.create_topic(&hidden, 1, 1, TIMEOUT).await.unwrap();
    let group_id = testenv::unique_name("g");
    common::commit(&client, &group_id, &BTreeMap::from([(tp(&hidden, 0), 0)])).await;
    // The topic exists; the operator's principal may not describe it.
    let topic = hidden.clone();
    tokio::task::spawn_blocking(move || {
        testenv::shared().kafka.add_acls(&[
            "--deny-principal",
            "User:ANONYMOUS",
            "--operation",
            "Describe",
            "--topic",
            &topic,
        ])
    })
    .await
    .unwrap()
    .expect("add the ACL");

    let _operator = start_operator(&s.client, &s.namespace, &bootstrap).await;
    let spec = serde_json::json!({"groupId": group_id, "topics": [hidden], "replicas": 1,
        "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}});
    s.groups.create(&PostParams::default(), &common::consumer_group("hidden", spec)).await.unwrap();
    let ready = common::eventually(WAIT, || async {
        let conditions = s.groups.get("hidden").await.ok()?.status?.conditions;
        conditions.into_iter().find(|c| c.type_ == "Ready" && !c.reason.is_empty())
    })
    .await
    .expect("a Ready condition");
    assert_eq!(ready.reason, "KafkaAuthFailed", "{}", ready.message);
    assert!(
        ready.message.contains("not authorized to describe topics") && ready.message.contains(&hidden),
        "{}",
        ready.message
    );

    let spec = serde_json::json!({"consumerGroup": "hidden", "target": {"toEarliest": true}, "mode": "DryRun"});
    s.resets.create(&PostParams::default(), &offset_reset("preview", spec)).await.unwrap();
    let status = wait_phase(&s.resets, "preview", &[ResetPhase::Failed, ResetPhase::Planned]).await.status.unwrap();
    assert_eq!(status.phase, Some(ResetPhase::Failed), "{:?}", status.message);
    let message = status.message.unwrap();
    assert!(message.contains("not authorized to describe topics") && !message.contains("do not exist"), "{message}");
}

#[tokio::test]
async fn a_starting_reset_stops_the_workload_at_once_even_while_the_reset_cache_lags() {
    let env = common::shared_env().await;
    let s = setup("reset-race").await;
    let bootstrap = env.kafka.bootstrap_servers();
    let client = kafka(&bootstrap);
    let topic = testenv::unique_name("reset-topic");
    client.create_topic(&topic, 2, 1, TIMEOUT).await.unwrap();
    common::produce(&bootstrap, &topic, &[6, 6], None);
    let group_id = testenv::unique_name("g");
    common::commit(&client, &group_id, &BTreeMap::from([(tp(&topic, 0), 4), (tp(&topic, 1), 3)])).await;
    // The reset controller's cache shows each change 2 s late, and nothing but a reset's own
    // watch event reconciles the ConsumerGroup soon (resync 10 minutes): the reconcile that event
    // starts must not decide from the cache, which still shows the reset before it started.
    let mut operator =
        operator_process_with(env, &s.namespace, "600", Some(("CGO_FAULT_PAUSE_AT", "reset-cache:2000")));
    let spec = serde_json::json!({"groupId": group_id, "topics": [topic], "replicas": 2,
        "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}});
    s.groups.create(&PostParams::default(), &common::consumer_group("race", spec)).await.unwrap();
    let deployments = &s.deployments;
    let replicas = |wanted: i32| async move {
        common::eventually(WAIT, || async {
            (deployments.get_opt("race").await.ok()??.spec?.replicas? == wanted).then_some(())
        })
        .await
    };
    assert!(replicas(2).await.is_some());
    let spec = serde_json::json!({"consumerGroup": "race", "target": {"shiftBy": -1}, "mode": "Execute"});
    s.resets.create(&PostParams::default(), &offset_reset("shift", spec)).await.unwrap();
    assert!(replicas(0).await.is_some(), "the workload is stopped as the reset starts");
    let done = wait_phase(&s.resets, "shift", &[ResetPhase::Succeeded, ResetPhase::Failed]).await;
    assert_eq!(done.status.as_ref().unwrap().phase, Some(ResetPhase::Succeeded), "{:?}", done.status);
    assert_eq!(committed(&bootstrap, &group_id, &topic, 2).await, vec![Some(3), Some(2)]);
    assert!(replicas(2).await.is_some(), "and resumed as it ends");
    let _ = operator.kill();
    let _ = operator.wait();
}
