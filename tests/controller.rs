//! The controller against a real kube-apiserver and a real Kafka broker: the workload is kept at
//! the requested size but never above the partition count, hand edits are put back, a referenced
//! workload only has its replicas driven, the group is reported as Kafka sees it, and faults
//! (Kafka down, missing topic/Secret/target, duplicate groupId) become conditions without scaling.
//!
//! No kubelet or controller-manager runs here: the tests start real Kafka consumers themselves
//! where a test needs group members, and garbage collection is checked through owner references.

mod common;

use common::create_topic;
use std::collections::BTreeMap;
use std::time::Duration;

use consumer_group_operator::crd::ConsumerGroup;
use consumer_group_operator::kafka::KafkaClient;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};

const WAIT: Duration = Duration::from_secs(60);

async fn start_operator(client: &Client, namespace: &str, default_bootstrap: &str) -> common::Operator {
    common::Operator::start(client, common::run_args(namespace, default_bootstrap, &["--kafka-timeout-seconds", "3"]))
        .await
}

fn kafka_client(bootstrap: &str) -> KafkaClient {
    KafkaClient::new(&BTreeMap::from([("bootstrap.servers".to_string(), bootstrap.to_string())])).unwrap()
}

fn template(image: &str) -> serde_json::Value {
    serde_json::json!({"metadata": {"labels": {"app": "consumer"}}, "spec": {"containers": [{"name": "consumer", "image": image}]}})
}

async fn deployment_replicas(api: &Api<Deployment>, name: &str, expected: i32) -> bool {
    common::eventually(WAIT, || async {
        let replicas = api.get_opt(name).await.ok()??.spec?.replicas?;
        (replicas == expected).then_some(())
    })
    .await
    .is_some()
}

async fn condition(api: &Api<ConsumerGroup>, name: &str, type_: &str, status: &str) -> Option<(String, String)> {
    common::eventually(WAIT, || async {
        let group = api.get(name).await.ok()?;
        let c = group.status?.conditions.into_iter().find(|c| c.type_ == type_ && c.status == status)?;
        Some((c.reason, c.message))
    })
    .await
}

struct Setup {
    client: Client,
    namespace: String,
    groups: Api<ConsumerGroup>,
    deployments: Api<Deployment>,
}

async fn setup(prefix: &str) -> Setup {
    let env = common::shared_env().await;
    let client = common::kube_client(&env.kube).await;
    common::install_crds(&client).await;
    let namespace = common::namespace(&client, prefix).await;
    Setup {
        groups: Api::namespaced(client.clone(), &namespace),
        deployments: Api::namespaced(client.clone(), &namespace),
        client,
        namespace,
    }
}

#[tokio::test]
async fn replicas_are_capped_at_partitions_and_follow_scale_and_new_partitions() {
    let env = common::shared_env().await;
    let s = setup("cap").await;
    let bootstrap = env.kafka.bootstrap_servers();
    let topic = create_topic(&bootstrap, 6).await;
    let operator = start_operator(&s.client, &s.namespace, &bootstrap).await;

    let spec = serde_json::json!({"groupId": testenv::unique_name("g"), "topics": [topic], "replicas": 10, "template": template("img:1")});
    s.groups.create(&PostParams::default(), &common::consumer_group("orders", spec)).await.unwrap();
    assert!(deployment_replicas(&s.deployments, "orders", 6).await, "10 requested on 6 partitions must give 6");
    let (reason, message) = condition(&s.groups, "orders", "ReplicasCapped", "True").await.expect("capped condition");
    assert_eq!(reason, "PartitionCap");
    assert!(message.contains("requested 10") && message.contains("allowed 6"), "{message}");
    let group = s.groups.get("orders").await.unwrap();
    let status = group.status.unwrap();
    assert_eq!((status.partitions, status.replicas, status.desired_replicas), (Some(6), Some(6), Some(6)));
    assert_eq!(status.selector.as_deref(), Some("kafka.operators.dev/consumer-group=orders"));
    assert_eq!(status.observed_generation, group.metadata.generation);

    // The Deployment is owned (garbage-collected with the ConsumerGroup).
    let deployment = s.deployments.get("orders").await.unwrap();
    let owner = &deployment.metadata.owner_references.unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str(), owner.controller), ("ConsumerGroup", "orders", Some(true)));

    // `kubectl scale` through the scale subresource.
    s.groups
        .patch_scale("orders", &PatchParams::default(), &Patch::Merge(serde_json::json!({"spec": {"replicas": 3}})))
        .await
        .unwrap();
    assert!(deployment_replicas(&s.deployments, "orders", 3).await, "scale to 3 must reach the Deployment");
    let (reason, _) = condition(&s.groups, "orders", "ReplicasCapped", "False").await.expect("no longer capped");
    assert_eq!(reason, "WithinLimits");

    // More partitions raise the cap without a restart.
    s.groups
        .patch("orders", &PatchParams::default(), &Patch::Merge(serde_json::json!({"spec": {"replicas": 10}})))
        .await
        .unwrap();
    assert!(deployment_replicas(&s.deployments, "orders", 6).await);
    kafka_client(&bootstrap).create_partitions(&topic, 8, Duration::from_secs(30)).await.unwrap();
    assert!(deployment_replicas(&s.deployments, "orders", 8).await, "the cap must rise to 8 partitions");

    // The cap Event is recorded once per transition, not on every reconcile.
    operator.wait_reconciles(3).await;
    // Identical Events are folded into one object with a series count by the recorder.
    let events: Api<Event> = Api::namespaced(s.client.clone(), &s.namespace);
    let capped_events: i32 = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("PartitionCap"))
        .map(|e| e.series.map_or(1, |s| s.count))
        .sum();
    assert_eq!(capped_events, 2, "one Event per transition to capped (twice in this test), not one per reconcile");
}

#[tokio::test]
async fn hand_edits_are_reverted_and_template_changes_roll_out() {
    let env = common::shared_env().await;
    let s = setup("drift").await;
    let bootstrap = env.kafka.bootstrap_servers();
    let topic = create_topic(&bootstrap, 4).await;
    let _operator = start_operator(&s.client, &s.namespace, &bootstrap).await;
    let group_id = testenv::unique_name("g");
    let spec =
        serde_json::json!({"groupId": group_id, "topics": [topic], "replicas": 2, "template": template("img:1")});
    s.groups.create(&PostParams::default(), &common::consumer_group("drift", spec)).await.unwrap();
    assert!(deployment_replicas(&s.deployments, "drift", 2).await);

    // Injected identity.
    let deployment = s.deployments.get("drift").await.unwrap();
    let container = &deployment.spec.unwrap().template.spec.unwrap().containers[0];
    let env_vars: BTreeMap<_, _> =
        container.env.clone().unwrap().into_iter().map(|e| (e.name, e.value.unwrap_or_default())).collect();
    assert_eq!(env_vars.get("KAFKA_GROUP_ID"), Some(&group_id));
    assert_eq!(env_vars.get("KAFKA_TOPICS"), Some(&topic));
    assert_eq!(env_vars.get("KAFKA_BOOTSTRAP_SERVERS"), Some(&bootstrap));

    // Someone scales the owned Deployment by hand: put back.
    let edit = PatchParams { field_manager: Some("kubectl-edit".into()), ..Default::default() };
    s.deployments.patch("drift", &edit, &Patch::Merge(serde_json::json!({"spec": {"replicas": 4}}))).await.unwrap();
    assert!(deployment_replicas(&s.deployments, "drift", 2).await, "hand edit must be reverted");

    // A template change reaches the Deployment.
    s.groups
        .patch(
            "drift",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"template": template("img:2")}})),
        )
        .await
        .unwrap();
    let rolled = common::eventually(WAIT, || async {
        let d = s.deployments.get("drift").await.ok()?;
        let image = d.spec?.template.spec?.containers[0].image.clone()?;
        (image == "img:2").then_some(())
    })
    .await;
    assert!(rolled.is_some(), "template change must reach the Deployment");
}

#[tokio::test]
async fn scale_target_ref_drives_only_replicas() {
    let env = common::shared_env().await;
    let s = setup("target").await;
    let bootstrap = env.kafka.bootstrap_servers();
    let topic = create_topic(&bootstrap, 3).await;
    let theirs: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "theirs", "labels": {"team": "a"}, "annotations": {"owner": "team-a"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "theirs"}},
            "template": {"metadata": {"labels": {"app": "theirs"}}, "spec": {"containers": [{"name": "c", "image": "theirs:1", "env": [{"name": "X", "value": "1"}]}]}}
        }
    }))
    .unwrap();
    let before = s.deployments.create(&PostParams::default(), &theirs).await.unwrap();
    let _operator = start_operator(&s.client, &s.namespace, &bootstrap).await;
    let spec = serde_json::json!({"groupId": testenv::unique_name("g"), "topics": [topic], "replicas": 5, "scaleTargetRef": {"kind": "Deployment", "name": "theirs"}});
    s.groups.create(&PostParams::default(), &common::consumer_group("theirs-cg", spec)).await.unwrap();
    assert!(deployment_replicas(&s.deployments, "theirs", 3).await, "5 requested on 3 partitions gives 3");
    let after = s.deployments.get("theirs").await.unwrap();
    assert_eq!(before.spec.as_ref().unwrap().template, after.spec.as_ref().unwrap().template, "template untouched");
    assert_eq!(before.metadata.labels, after.metadata.labels);
    assert_eq!(before.metadata.annotations, after.metadata.annotations);
    assert!(after.metadata.owner_references.is_none(), "a referenced workload is never adopted");
    // The status follows the replica write (act, then status): waited for, not read at once.
    let selector = common::eventually(WAIT, || async { s.groups.get("theirs-cg").await.ok()?.status?.selector }).await;
    assert_eq!(selector.as_deref(), Some("app=theirs"));

    // A missing target is a condition, not a crash.
    let spec = serde_json::json!({"groupId": testenv::unique_name("g"), "topics": [topic], "scaleTargetRef": {"kind": "StatefulSet", "name": "nope"}});
    s.groups.create(&PostParams::default(), &common::consumer_group("missing-target", spec)).await.unwrap();
    let (reason, message) = condition(&s.groups, "missing-target", "Ready", "False").await.unwrap();
    assert_eq!(reason, "ScaleTargetNotFound");
    assert!(message.contains("nope"), "{message}");
}

#[tokio::test]
async fn group_state_and_members_come_from_kafka() {
    let env = common::shared_env().await;
    let s = setup("members").await;
    let bootstrap = env.kafka.bootstrap_servers();
    let topic = create_topic(&bootstrap, 4).await;
    let group_id = testenv::unique_name("g");
    let _operator = start_operator(&s.client, &s.namespace, &bootstrap).await;
    let spec =
        serde_json::json!({"groupId": group_id, "topics": [topic], "replicas": 2, "template": template("img:1")});
    s.groups.create(&PostParams::default(), &common::consumer_group("members", spec)).await.unwrap();
    assert!(deployment_replicas(&s.deployments, "members", 2).await);

    // No consumer yet: Kafka does not know the group.
    let state = common::eventually(WAIT, || async { s.groups.get("members").await.ok()?.status?.group_state }).await;
    assert_eq!(state.as_deref(), Some("Dead"));

    // No kubelet here: the test plays the two pods.
    let consumers = common::Consumers::start(&bootstrap, &group_id, &topic, 2, "test-consumer");
    let stable = common::eventually(WAIT, || async {
        let status = s.groups.get("members").await.ok()?.status?;
        let assigned: usize = status.members.iter().flat_map(|m| m.assignment.values()).map(Vec::len).sum();
        (status.group_state.as_deref() == Some("Stable") && status.member_count == Some(2) && assigned == 4)
            .then_some(status)
    })
    .await
    .expect("status must show the Stable group with 2 members holding all 4 partitions");
    let mut clients: Vec<_> = stable.members.iter().map(|m| m.client_id.clone()).collect();
    clients.sort();
    assert_eq!(clients, vec!["test-consumer-0", "test-consumer-1"]);
    for member in &stable.members {
        assert_eq!(member.assignment.keys().collect::<Vec<_>>(), vec![&topic]);
        assert!(!member.host.is_empty());
    }

    drop(consumers);
    let empty = common::eventually(WAIT, || async {
        let status = s.groups.get("members").await.ok()?.status?;
        (status.group_state.as_deref() == Some("Empty") && status.member_count == Some(0)).then_some(())
    })
    .await;
    assert!(empty.is_some(), "after the consumers leave the group is Empty");
}

#[tokio::test]
async fn kafka_outage_keeps_replicas_and_reports_it() {
    let s = setup("outage").await;
    // A broker of this test's own, so stopping it disturbs no other test.
    let mut kafka = tokio::task::spawn_blocking(testenv::Kafka::start).await.unwrap().unwrap();
    let bootstrap = kafka.bootstrap_servers();
    let topic = create_topic(&bootstrap, 3).await;
    let operator = start_operator(&s.client, &s.namespace, &bootstrap).await;
    let spec = serde_json::json!({"groupId": testenv::unique_name("g"), "topics": [topic], "replicas": 2, "template": template("img:1")});
    s.groups.create(&PostParams::default(), &common::consumer_group("outage", spec)).await.unwrap();
    assert!(deployment_replicas(&s.deployments, "outage", 2).await);
    condition(&s.groups, "outage", "KafkaReachable", "True").await.expect("reachable first");

    let mut kafka = tokio::task::spawn_blocking(move || {
        kafka.stop();
        kafka
    })
    .await
    .unwrap();
    let (reason, _) = condition(&s.groups, "outage", "KafkaReachable", "False").await.expect("outage reported");
    assert_eq!(reason, "KafkaUnreachable");
    let ready = condition(&s.groups, "outage", "Ready", "False").await.expect("not ready during the outage");
    assert_eq!(ready.0, "KafkaUnreachable");
    // Several reconciles later the workload still has its replicas.
    operator.wait_reconciles(3).await;
    assert_eq!(s.deployments.get("outage").await.unwrap().spec.unwrap().replicas, Some(2));
    assert_eq!(s.groups.get("outage").await.unwrap().status.unwrap().replicas, Some(2));

    let _kafka = tokio::task::spawn_blocking(move || {
        kafka.restart().expect("restart Kafka");
        kafka
    })
    .await
    .unwrap();
    condition(&s.groups, "outage", "KafkaReachable", "True").await.expect("Kafka back");
    condition(&s.groups, "outage", "Ready", "True").await.expect("ready again");
    assert_eq!(s.deployments.get("outage").await.unwrap().spec.unwrap().replicas, Some(2));
}

#[tokio::test]
async fn faults_are_conditions_naming_what_is_wrong() {
    let env = common::shared_env().await;
    let s = setup("faults").await;
    let bootstrap = env.kafka.bootstrap_servers();
    let topic = create_topic(&bootstrap, 2).await;
    let _operator = start_operator(&s.client, &s.namespace, &bootstrap).await;

    let missing = testenv::unique_name("missing-topic");
    let spec = serde_json::json!({"groupId": testenv::unique_name("g"), "topics": [topic, missing], "template": template("img:1")});
    s.groups.create(&PostParams::default(), &common::consumer_group("no-topic", spec)).await.unwrap();
    let (reason, message) = condition(&s.groups, "no-topic", "Ready", "False").await.unwrap();
    assert_eq!(reason, "TopicsNotFound");
    assert!(message.contains(&missing) && !message.contains(&format!("{topic},")), "{message}");
    assert!(s.deployments.get_opt("no-topic").await.unwrap().is_none(), "nothing is run for a missing topic");

    let spec = serde_json::json!({"groupId": testenv::unique_name("g"), "topics": [topic], "template": template("img:1"),
        "kafka": {"clientPropertiesSecretRef": {"name": "kafka-auth"}}});
    s.groups.create(&PostParams::default(), &common::consumer_group("no-secret", spec)).await.unwrap();
    let (reason, message) = condition(&s.groups, "no-secret", "Ready", "False").await.unwrap();
    assert_eq!(reason, "SecretNotFound");
    assert!(message.contains("kafka-auth"), "{message}");

    // A template the CRD schema lets through but the Deployment API refuses.
    let bad_template = serde_json::json!({"spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "lots"}}}]}});
    let spec = serde_json::json!({"groupId": testenv::unique_name("g"), "topics": [topic], "template": bad_template});
    s.groups.create(&PostParams::default(), &common::consumer_group("bad-template", spec)).await.unwrap();
    let (reason, message) = condition(&s.groups, "bad-template", "Ready", "False").await.unwrap();
    assert_eq!(reason, "WorkloadApplyFailed");
    assert!(message.contains("quantities must match") && message.contains("fix spec.template"), "{message}");
}

/// The CRD schema checks only a template's essentials, so a field of the wrong type gets through
/// `kubectl apply`. It must fail its own ConsumerGroup with a condition naming the field, never the
/// operator's watch of every ConsumerGroup, and never touch a Deployment already running.
#[tokio::test]
async fn a_template_field_of_the_wrong_type_fails_only_its_own_group() {
    let env = common::shared_env().await;
    let s = setup("bad-type").await;
    let bootstrap = env.kafka.bootstrap_servers();
    let topic = create_topic(&bootstrap, 2).await;
    let _operator = start_operator(&s.client, &s.namespace, &bootstrap).await;
    let mut wrong_type = template("img:1");
    wrong_type["spec"]["containers"][0]["ports"] = serde_json::json!([{"containerPort": "http"}]);
    let field = "spec.template.spec.containers[0].ports[0].containerPort";

    let spec = serde_json::json!({"groupId": testenv::unique_name("g"), "topics": [topic], "replicas": 1, "template": wrong_type});
    s.groups.create(&PostParams::default(), &common::consumer_group("wrong-type", spec)).await.unwrap();
    let (reason, message) = condition(&s.groups, "wrong-type", "Ready", "False").await.unwrap();
    assert_eq!(reason, "TemplateInvalid");
    assert!(message.contains(field) && message.contains("fix spec.template"), "{message}");
    assert!(s.deployments.get_opt("wrong-type").await.unwrap().is_none(), "nothing is run from it");
    let measured = common::eventually(WAIT, || async {
        let status = s.groups.get("wrong-type").await.ok()?.status?;
        (status.partitions == Some(2) && status.lag.is_some()).then_some(())
    })
    .await;
    assert!(measured.is_some(), "its partitions and lag are still reported");

    // Created after it, another ConsumerGroup is read and run.
    let spec = serde_json::json!({"groupId": testenv::unique_name("g"), "topics": [topic], "replicas": 2, "template": template("img:1")});
    s.groups.create(&PostParams::default(), &common::consumer_group("good", spec)).await.unwrap();
    assert!(deployment_replicas(&s.deployments, "good", 2).await, "the other ConsumerGroup runs");
    condition(&s.groups, "good", "Ready", "True").await.expect("the other ConsumerGroup is Ready");

    // Its template edited into the wrong type: the running Deployment stays as it is.
    let edit = |template: serde_json::Value| Patch::Merge(serde_json::json!({"spec": {"template": template}}));
    s.groups.patch("good", &PatchParams::default(), &edit(wrong_type.clone())).await.unwrap();
    let (reason, message) = condition(&s.groups, "good", "Ready", "False").await.unwrap();
    assert_eq!(reason, "TemplateInvalid", "{message}");
    let running = s.deployments.get("good").await.unwrap().spec.unwrap();
    assert_eq!(running.replicas, Some(2), "never scaled down for a typo");
    assert_eq!(running.template.spec.unwrap().containers[0].image.as_deref(), Some("img:1"));

    // Fixed: applied again.
    s.groups.patch("good", &PatchParams::default(), &edit(template("img:2"))).await.unwrap();
    let applied = common::eventually(WAIT, || async {
        let d = s.deployments.get("good").await.ok()?;
        (d.spec?.template.spec?.containers[0].image.as_deref() == Some("img:2")).then_some(())
    })
    .await;
    assert!(applied.is_some(), "the fixed template is applied");
    condition(&s.groups, "good", "Ready", "True").await.expect("Ready again");
}

#[tokio::test]
async fn a_group_id_conflict_ends_when_the_older_group_is_deleted() {
    let env = common::shared_env().await;
    let s = setup("conflict").await;
    let bootstrap = env.kafka.bootstrap_servers();
    let topic = create_topic(&bootstrap, 2).await;
    let _operator = start_operator(&s.client, &s.namespace, &bootstrap).await;

    // Two ConsumerGroups claiming one groupId in one cluster: the later one is not acted on. Created
    // within the same second, the tie goes to namespace, then name ("first" < "second").
    let shared_id = testenv::unique_name("g");
    let spec =
        serde_json::json!({"groupId": shared_id, "topics": [topic], "replicas": 1, "template": template("img:1")});
    s.groups.create(&PostParams::default(), &common::consumer_group("first", spec.clone())).await.unwrap();
    s.groups.create(&PostParams::default(), &common::consumer_group("second", spec)).await.unwrap();
    let (reason, message) = condition(&s.groups, "second", "Ready", "False").await.unwrap();
    assert_eq!(reason, "GroupIdConflict");
    assert!(message.contains(&format!("{}/first", s.namespace)), "{message}");
    assert!(deployment_replicas(&s.deployments, "first", 1).await);
    assert!(s.deployments.get_opt("second").await.unwrap().is_none(), "the conflicting one runs nothing");
    assert!(condition(&s.groups, "first", "Ready", "True").await.is_some(), "the first one keeps being served");

    // The older one goes away: the other takes over within a resync (1 s here), untouched.
    s.groups.delete("first", &Default::default()).await.unwrap();
    let took_over = common::eventually(Duration::from_secs(20), || async {
        let replicas = s.deployments.get_opt("second").await.ok()??.spec?.replicas?;
        (replicas == 1).then_some(())
    })
    .await;
    assert!(took_over.is_some(), "the remaining ConsumerGroup must be served once the conflict is gone");
    assert!(condition(&s.groups, "second", "Ready", "True").await.is_some());
}

#[tokio::test]
async fn default_client_properties_come_from_a_mounted_secret_folder_and_follow_rotation() {
    let env = common::shared_env().await;
    let s = setup("default-props").await;
    let bootstrap = env.kafka.bootstrap_servers();
    let topic = create_topic(&bootstrap, 2).await;
    // The layout of a Secret mounted as a volume, holding a property librdkafka refuses.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("no.such.property"), "1\n").unwrap();
    let dir_flag = dir.path().to_str().unwrap().to_string();
    let args = common::run_args(
        &s.namespace,
        &bootstrap,
        &["--kafka-timeout-seconds", "3", "--default-client-properties-dir", &dir_flag],
    );
    let _operator = common::Operator::start(&s.client, args).await;

    let spec =
        serde_json::json!({"groupId": testenv::unique_name("g"), "topics": [topic], "template": template("img:1")});
    s.groups.create(&PostParams::default(), &common::consumer_group("defaults", spec)).await.unwrap();
    let (_, message) = condition(&s.groups, "defaults", "KafkaReachable", "False").await.unwrap();
    assert!(message.contains("no.such.property"), "the folder's properties are used: {message}");

    // A ConsumerGroup with its own Secret does not use the operator's defaults.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(s.client.clone(), &s.namespace);
    let secret = serde_json::from_value(
        serde_json::json!({"metadata": {"name": "own", "labels": {"kafka.operators.dev/client-properties": "true"}},
        "stringData": {"security.protocol": "plaintext"}}),
    )
    .unwrap();
    secrets.create(&PostParams::default(), &secret).await.unwrap();
    let spec = serde_json::json!({"groupId": testenv::unique_name("g"), "topics": [topic], "template": template("img:1"),
        "kafka": {"clientPropertiesSecretRef": {"name": "own"}}});
    s.groups.create(&PostParams::default(), &common::consumer_group("own-secret", spec)).await.unwrap();
    assert!(condition(&s.groups, "own-secret", "Ready", "True").await.is_some());

    // The Secret's content changes (the kubelet rewrites the mounted files): no restart needed.
    std::fs::remove_file(dir.path().join("no.such.property")).unwrap();
    std::fs::write(dir.path().join("security.protocol"), "plaintext").unwrap();
    assert!(condition(&s.groups, "defaults", "Ready", "True").await.is_some(), "rotated properties apply");
    assert!(deployment_replicas(&s.deployments, "defaults", 1).await);

    // An unreadable folder is a condition naming it, and nothing is scaled.
    drop(dir);
    let (reason, message) = condition(&s.groups, "defaults", "Ready", "False").await.unwrap();
    assert_eq!(reason, "KafkaNotConfigured");
    assert!(message.contains(&dir_flag) && message.contains("--default-client-properties-dir"), "{message}");
    assert_eq!(s.deployments.get("defaults").await.unwrap().spec.unwrap().replicas, Some(1));
}

#[tokio::test]
async fn an_unchanged_group_causes_no_writes_and_its_own_writes_cause_no_reconciles() {
    let env = common::shared_env().await;
    let s = setup("quiet").await;
    let bootstrap = env.kafka.bootstrap_servers();
    let topic = create_topic(&bootstrap, 2).await;
    common::produce(&bootstrap, &topic, &[3, 4], None);
    let group_id = testenv::unique_name("g");
    let offsets = BTreeMap::from([
        (consumer_group_operator::kafka::TopicPartition { topic: topic.clone(), partition: 0 }, 3),
        (consumer_group_operator::kafka::TopicPartition { topic: topic.clone(), partition: 1 }, 4),
    ]);
    common::commit(&kafka_client(&bootstrap), &group_id, &offsets).await;
    // The default status-lag interval; the tests' 1 s resync.
    let args = common::run_args(
        &s.namespace,
        &bootstrap,
        &["--kafka-timeout-seconds", "3", "--status-lag-interval-seconds", "60"],
    );
    let operator = common::Operator::start(&s.client, args).await;
    let spec =
        serde_json::json!({"groupId": group_id, "topics": [topic], "replicas": 1, "template": template("img:1")});
    s.groups.create(&PostParams::default(), &common::consumer_group("quiet", spec)).await.unwrap();
    assert!(condition(&s.groups, "quiet", "Ready", "True").await.is_some());
    assert!(deployment_replicas(&s.deployments, "quiet", 1).await);
    let measured = common::eventually(WAIT, || async { s.groups.get("quiet").await.ok()?.status?.lag }).await;
    assert_eq!(measured.map(|l| l.total), Some(0));
    operator.wait_reconciles(2).await;

    let version = |object: Option<String>| object.expect("a resourceVersion");
    let group_version = version(s.groups.get("quiet").await.unwrap().metadata.resource_version);
    let deployment_version = version(s.deployments.get("quiet").await.unwrap().metadata.resource_version);
    let started = std::time::Instant::now();
    operator.wait_reconciles(5).await;
    let took = started.elapsed();
    assert_eq!(
        version(s.groups.get("quiet").await.unwrap().metadata.resource_version),
        group_version,
        "nothing changed: no status write"
    );
    assert_eq!(
        version(s.deployments.get("quiet").await.unwrap().metadata.resource_version),
        deployment_version,
        "nothing changed: no Deployment apply"
    );
    // Five reconciles at a 1 s resync take four seconds or more; reconciles triggered by the
    // operator's own writes would follow each other within milliseconds.
    assert!(took >= Duration::from_secs(3), "5 reconciles in {took:?}: something besides the resync triggers them");

    // A spec change is still acted on at once.
    s.groups
        .patch("quiet", &PatchParams::default(), &Patch::Merge(serde_json::json!({"spec": {"replicas": 2}})))
        .await
        .unwrap();
    assert!(deployment_replicas(&s.deployments, "quiet", 2).await);
}

#[tokio::test]
async fn a_poll_reconciles_the_groups_it_has_news_of_at_once() {
    let env = common::shared_env().await;
    let s = setup("news").await;
    let bootstrap = env.kafka.bootstrap_servers();
    let topic = create_topic(&bootstrap, 1).await;
    // Polls 30 s apart. Lag leaving zero is written to status at once (a transition), by the
    // reconcile that the poll which saw it starts.
    let args = common::run_args(&s.namespace, &bootstrap, &["--kafka-timeout-seconds", "3", "--resync-seconds", "30"]);
    let _operator = common::Operator::start(&s.client, args).await;
    let group_id = testenv::unique_name("g");
    let start = consumer_group_operator::kafka::TopicPartition { topic: topic.clone(), partition: 0 };
    common::commit(&kafka_client(&bootstrap), &group_id, &BTreeMap::from([(start, 0)])).await;
    let spec =
        serde_json::json!({"groupId": group_id, "topics": [topic], "replicas": 1, "template": template("img:1")});
    s.groups.create(&PostParams::default(), &common::consumer_group("news", spec)).await.unwrap();
    let lag = |total: i64| {
        let groups = s.groups.clone();
        async move {
            common::eventually(Duration::from_secs(90), || async {
                let lag = groups.get("news").await.ok()?.status?.lag?;
                (lag.total == total).then_some(lag)
            })
            .await
        }
    };
    assert!(lag(0).await.is_some(), "the first poll's lag reached status");
    // Move the group's own reconcile schedule away from the observer's: a spec change 12 s after
    // the first poll reconciles it then, and a reconcile that waited for its resync would come
    // 12 s after each poll. (A sleep as a scenario step, not as a wait for anything.)
    tokio::time::sleep(Duration::from_secs(12)).await;
    let image = serde_json::json!({"spec": {"template": template("img:2")}});
    s.groups.patch("news", &PatchParams::default(), &Patch::Merge(image)).await.unwrap();
    let reconciled = common::eventually(WAIT, || async {
        let status = s.groups.get("news").await.ok()?.status?;
        (status.observed_generation == Some(2)).then_some(())
    })
    .await;
    assert!(reconciled.is_some(), "the spec change was reconciled");

    common::produce(&bootstrap, &topic, &[5], None);
    let measured = lag(5).await.expect("the next poll's lag reached status");
    let seen = k8s_openapi::jiff::Timestamp::now();
    let measured_at = measured.measured_at.expect("measuredAt").0;
    // measuredAt is in whole seconds; the status is looked at every 200 ms.
    let delay = seen.duration_since(measured_at);
    assert!(
        delay < k8s_openapi::jiff::SignedDuration::from_secs(6),
        "the poll at {measured_at} reached status {delay:?} later: its reconcile waited for the resync"
    );
}

#[tokio::test]
async fn a_new_group_is_observed_at_once_not_at_the_next_poll() {
    let env = common::shared_env().await;
    let s = setup("early").await;
    let bootstrap = env.kafka.bootstrap_servers();
    let topic = create_topic(&bootstrap, 2).await;
    // Polls a minute apart: a group that waited for the next poll would wait up to a minute.
    let args = common::run_args(&s.namespace, &bootstrap, &["--kafka-timeout-seconds", "3", "--resync-seconds", "60"]);
    let _operator = common::Operator::start(&s.client, args).await;
    let spec = |id: String| serde_json::json!({"groupId": id, "topics": [topic], "replicas": 1, "template": template("img:1")});
    s.groups
        .create(&PostParams::default(), &common::consumer_group("first", spec(testenv::unique_name("g"))))
        .await
        .unwrap();
    assert!(condition(&s.groups, "first", "Ready", "True").await.is_some());

    // The observer has just polled for the first group; the second one asks for an early poll.
    let started = std::time::Instant::now();
    s.groups
        .create(&PostParams::default(), &common::consumer_group("second", spec(testenv::unique_name("g"))))
        .await
        .unwrap();
    let observed = common::eventually(Duration::from_secs(30), || async {
        let status = s.groups.get("second").await.ok()?.status?;
        (status.lag.is_some() && status.partitions == Some(2)).then_some(())
    })
    .await;
    assert!(observed.is_some(), "the new group must be observed without waiting for the next poll");
    assert!(started.elapsed() < Duration::from_secs(20), "observed after {:?}", started.elapsed());
    assert!(deployment_replicas(&s.deployments, "second", 1).await);
}
