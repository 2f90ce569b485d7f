//! Named Kafka connections and Secrets by opt-in, against a real broker and apiserver: a user who
//! may create ConsumerGroups but not read Secrets cannot make the operator send an unlabelled
//! Secret's values anywhere; a ClusterKafkaConnection serves the namespaces its selector allows and
//! refuses the others by name; a SASL KafkaConnection is shared by several ConsumerGroups (one
//! client) and an OffsetReset, and a rotated Secret reaches all of them.

mod common;

use common::fake_kafka;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use consumer_group_operator::crd::{ClusterKafkaConnection, ConsumerGroup, KafkaConnection, OffsetReset, ResetPhase};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};

const WAIT: Duration = Duration::from_secs(90);
const LABEL: &str = "kafka.operators.dev/client-properties";

fn template() -> serde_json::Value {
    serde_json::json!({"spec": {"containers": [{"name": "c", "image": "i"}]}})
}

fn secret(name: &str, labelled: bool, data: serde_json::Value) -> Secret {
    let labels = if labelled { serde_json::json!({LABEL: "true"}) } else { serde_json::json!({}) };
    serde_json::from_value(serde_json::json!({"metadata": {"name": name, "labels": labels}, "stringData": data}))
        .unwrap()
}

/// The (reason, message) of a ConsumerGroup's condition once it has this status.
async fn condition(groups: &Api<ConsumerGroup>, name: &str, type_: &str, status: &str) -> Option<(String, String)> {
    common::eventually(WAIT, || async {
        let found = groups.get(name).await.ok()?.status?.conditions.into_iter().find(|c| c.type_ == type_)?;
        (found.status == status).then_some((found.reason, found.message))
    })
    .await
}

/// A TCP listener standing in for a broker: it answers nothing and keeps every byte sent to it.
struct StandIn {
    address: std::net::SocketAddr,
    connections: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl StandIn {
    async fn start() -> StandIn {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let connections: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let seen = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let index = {
                    let mut seen = seen.lock().unwrap();
                    seen.push(Vec::new());
                    seen.len() - 1
                };
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buffer = [0u8; 4096];
                    while let Ok(n @ 1..) = stream.read(&mut buffer).await {
                        seen.lock().unwrap()[index].extend_from_slice(&buffer[..n]);
                    }
                });
            }
        });
        StandIn { address, connections, task }
    }

    fn connection_count(&self) -> usize {
        self.connections.lock().unwrap().len()
    }

    fn received(&self, needle: &str) -> bool {
        let connections = self.connections.lock().unwrap();
        connections.iter().any(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn an_unlabelled_secret_named_by_a_user_who_cannot_read_it_is_never_read_nor_sent() {
    let env = common::shared_env().await;
    let admin = common::kube_client(&env.kube).await;
    common::install_crds(&admin).await;
    let namespace = common::namespace(&admin, "deputy").await;
    let bootstrap = env.kafka.bootstrap_servers();

    // The application team may manage ConsumerGroups here, and nothing else.
    let user = format!("system:serviceaccount:{namespace}:app-team");
    let rbac = serde_json::json!([
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app-team", "namespace": namespace}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "cg-editor", "namespace": namespace},
         "rules": [{"apiGroups": ["kafka.operators.dev"], "resources": ["consumergroups"], "verbs": ["get", "list", "create", "patch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "app-team", "namespace": namespace},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cg-editor"},
         "subjects": [{"kind": "ServiceAccount", "name": "app-team", "namespace": namespace}]},
    ]);
    for object in rbac.as_array().unwrap() {
        let object: kube::api::DynamicObject = serde_json::from_value(object.clone()).unwrap();
        let types = object.types.clone().unwrap();
        let (group, version) = types.api_version.split_once('/').unwrap_or(("", &types.api_version));
        let resource =
            kube::discovery::ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(group, version, &types.kind));
        let api: Api<kube::api::DynamicObject> = Api::namespaced_with(admin.clone(), &namespace, &resource);
        api.create(&PostParams::default(), &object).await.unwrap();
    }

    // Another application's Secret, with a value that would show up in every request's header.
    let marker = testenv::unique_name("other-apps-client-id");
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &namespace);
    let data = serde_json::json!({"client.id": marker, "sasl.password": "not-for-the-app-team"});
    secrets.create(&PostParams::default(), &secret("other-app", false, data)).await.unwrap();
    let as_user = common::client_as(&env.kube, &user).await;
    let forbidden = Api::<Secret>::namespaced(as_user.clone(), &namespace).get("other-app").await;
    assert!(
        matches!(&forbidden, Err(kube::Error::Api(status)) if status.code == 403),
        "the user must not read Secrets: {forbidden:?}"
    );

    let stand_in = StandIn::start().await;
    let _operator = common::Operator::start(&admin, common::run_args(&namespace, &bootstrap, &[])).await;
    let groups: Api<ConsumerGroup> = Api::namespaced(as_user.clone(), &namespace);
    let spec = serde_json::json!({"groupId": testenv::unique_name("g"), "topics": ["t"], "template": template(),
        "kafka": {"bootstrapServers": stand_in.address.to_string(), "clientPropertiesSecretRef": {"name": "other-app"}}});
    groups.create(&PostParams::default(), &common::consumer_group("deputy", spec)).await.unwrap();

    let (reason, message) = condition(&groups, "deputy", "Ready", "False").await.expect("a condition says why");
    assert_eq!(reason, "SecretNotLabelled", "{message}");
    assert!(message.contains("other-app") && message.contains(LABEL), "{message}");
    assert!(!message.contains(&marker) && !message.contains("not-for-the-app-team"), "{message}");
    // The condition is written after the connection was refused; nothing was opened before it.
    assert_eq!(stand_in.connection_count(), 0, "the operator connected to the address the user chose");

    // The stand-in does see what the operator sends once the Secret's owner opts it in: the check
    // above could have failed.
    let label = Patch::Merge(serde_json::json!({"metadata": {"labels": {LABEL: "true"}}}));
    secrets.patch("other-app", &PatchParams::default(), &label).await.unwrap();
    let sent = common::eventually(WAIT, || async { stand_in.received(&marker).then_some(()) }).await;
    assert!(sent.is_some(), "once labelled, the Secret's client.id is used");
}

#[tokio::test]
async fn a_cluster_connection_serves_the_namespaces_it_selects_and_names_its_rule_to_others() {
    let env = common::shared_env().await;
    let client = common::kube_client(&env.kube).await;
    common::install_crds(&client).await;
    let bootstrap = env.kafka.bootstrap_servers();
    let topic = common::create_topic(&bootstrap, 2).await;
    let (allowed, outside) = (common::namespace(&client, "team-a").await, common::namespace(&client, "team-b").await);
    let team = testenv::unique_name("team");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let label = Patch::Merge(serde_json::json!({"metadata": {"labels": {"kafka-access": team}}}));
    namespaces.patch(&allowed, &PatchParams::default(), &label).await.unwrap();

    let name = testenv::unique_name("shared");
    let connections: Api<ClusterKafkaConnection> = Api::all(client.clone());
    let connection = serde_json::from_value(serde_json::json!({
        "apiVersion": "kafka.operators.dev/v1alpha1", "kind": "ClusterKafkaConnection", "metadata": {"name": name},
        "spec": {"bootstrapServers": bootstrap, "namespaceSelector": {"matchLabels": {"kafka-access": team}}}}))
    .unwrap();
    connections.create(&PostParams::default(), &connection).await.unwrap();
    // No default bootstrap servers: whatever works, works through the connection.
    let scopes = format!("{allowed},{outside}");
    let args = common::run_args(&scopes, "", &[]);
    let _operator = common::Operator::start(&client, args).await;

    let spec = || {
        serde_json::json!({"groupId": testenv::unique_name("g"), "topics": [topic], "replicas": 1, "template": template(),
            "kafka": {"connectionRef": {"kind": "ClusterKafkaConnection", "name": name}}})
    };
    let in_allowed: Api<ConsumerGroup> = Api::namespaced(client.clone(), &allowed);
    let in_outside: Api<ConsumerGroup> = Api::namespaced(client.clone(), &outside);
    in_allowed.create(&PostParams::default(), &common::consumer_group("app", spec())).await.unwrap();
    in_outside.create(&PostParams::default(), &common::consumer_group("app", spec())).await.unwrap();

    assert!(condition(&in_allowed, "app", "Ready", "True").await.is_some(), "the selected namespace is served");
    let (reason, message) = condition(&in_outside, "app", "Ready", "False").await.expect("refused with a condition");
    assert_eq!(reason, "NamespaceNotAllowed", "{message}");
    assert!(message.contains(&format!("kafka-access={team}")) && message.contains(&outside), "{message}");
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(client.clone(), &outside);
    assert!(deployments.get_opt("app").await.unwrap().is_none(), "nothing runs where the connection is refused");

    // The connection's status: it works, and who uses it.
    let status = common::eventually(WAIT, || async {
        let status = connections.get(&name).await.ok()?.status?;
        let reachable = status.conditions.iter().any(|c| c.type_ == "Reachable" && c.status == "True");
        (reachable && status.consumer_group_count == Some(2) && status.metadata_version.is_some()).then_some(status)
    })
    .await
    .expect("the connection reports itself reachable, its feature levels, used by both ConsumerGroups");
    assert_eq!(status.brokers, Some(1));
    // The feature levels, judged by Kafka's own `kafka-features.sh describe`.
    let (levels, described) = common::kafka_features(&env.kafka);
    assert_eq!(status.metadata_version.as_ref(), levels.get("metadata.version"), "{described}");
    for (feature, protocol) in
        [("group.version", "consumer"), ("share.version", "share"), ("streams.version", "streams")]
    {
        let finalized = levels.get(feature).is_some_and(|level| level != "0");
        assert_eq!(status.group_protocols.contains(&protocol.to_string()), finalized, "{protocol}: {described}");
    }
    assert!(status.group_protocols.contains(&"classic".to_string()), "{:?}", status.group_protocols);
    let mut users = vec![format!("{allowed}/app"), format!("{outside}/app")];
    users.sort();
    assert_eq!(status.consumer_groups, users);

    // Widened to every namespace: the refused ConsumerGroup is served without touching it.
    let widen = Patch::Merge(serde_json::json!({"spec": {"namespaceSelector": {"matchLabels": null}}}));
    connections.patch(&name, &PatchParams::default(), &widen).await.unwrap();
    assert!(condition(&in_outside, "app", "Ready", "True").await.is_some(), "a widened selector applies");
    connections.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn a_cluster_connection_s_group_id_policy_refuses_ids_outside_it_until_it_admits_them() {
    let env = common::shared_env().await;
    let client = common::kube_client(&env.kube).await;
    common::install_crds(&client).await;
    let bootstrap = env.kafka.bootstrap_servers();
    let topic = common::create_topic(&bootstrap, 2).await;
    let team = common::namespace(&client, "team-a").await;
    let name = testenv::unique_name("policed");
    let connections: Api<ClusterKafkaConnection> = Api::all(client.clone());
    let connection = |allowed: serde_json::Value| -> ClusterKafkaConnection {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "kafka.operators.dev/v1alpha1", "kind": "ClusterKafkaConnection", "metadata": {"name": name},
            "spec": {"bootstrapServers": bootstrap, "namespaceSelector": {}, "allowedGroupIds": allowed}}))
        .unwrap()
    };
    // An empty pattern is refused at apply, naming the field.
    let refused = connections.create(&PostParams::default(), &connection(serde_json::json!([""]))).await.unwrap_err();
    assert!(refused.to_string().contains("spec.allowedGroupIds[0]"), "{refused}");
    connections.create(&PostParams::default(), &connection(serde_json::json!(["{namespace}.*"]))).await.unwrap();
    // The operator's default connection has a policy of its own.
    let args = common::run_args(&team, &bootstrap, &["--default-allowed-group-ids", "{namespace}.*,audit-*"]);
    let _operator = common::Operator::start(&client, args).await;

    let spec = |group_id: &str| {
        serde_json::json!({"groupId": group_id, "topics": [topic], "replicas": 1, "template": template(),
            "kafka": {"connectionRef": {"kind": "ClusterKafkaConnection", "name": name}}})
    };
    let outside_id = testenv::unique_name("billing");
    let groups: Api<ConsumerGroup> = Api::namespaced(client.clone(), &team);
    groups
        .create(&PostParams::default(), &common::consumer_group("own", spec(&format!("{team}.orders"))))
        .await
        .unwrap();
    groups.create(&PostParams::default(), &common::consumer_group("other", spec(&outside_id))).await.unwrap();
    assert!(condition(&groups, "own", "Ready", "True").await.is_some(), "a group id of the namespace is served");
    let (reason, message) = condition(&groups, "other", "Ready", "False").await.expect("refused with a condition");
    assert_eq!(reason, "GroupIdNotAllowed", "{message}");
    assert!(message.contains(&format!("\"{team}.*\"")) && message.contains(&outside_id), "{message}");
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(client.clone(), &team);
    assert!(deployments.get_opt("other").await.unwrap().is_none(), "nothing runs for a group id outside the policy");
    let status = groups.get("other").await.unwrap().status.unwrap();
    assert!(status.group_state.is_none() && status.members.is_empty(), "nothing is read for it: {status:?}");

    let on_defaults =
        serde_json::json!({"groupId": outside_id, "topics": [topic], "replicas": 1, "template": template()});
    groups.create(&PostParams::default(), &common::consumer_group("on-defaults", on_defaults)).await.unwrap();
    let (reason, message) = condition(&groups, "on-defaults", "Ready", "False").await.expect("refused on the defaults");
    assert_eq!(reason, "GroupIdNotAllowed", "{message}");
    assert!(message.contains("--default-allowed-group-ids") && message.contains("\"audit-*\""), "{message}");

    // The platform team admits the id: the same ConsumerGroup is served without touching it.
    let admit = Patch::Merge(serde_json::json!({"spec": {"allowedGroupIds": ["{namespace}.*", outside_id]}}));
    connections.patch(&name, &PatchParams::default(), &admit).await.unwrap();
    assert!(condition(&groups, "other", "Ready", "True").await.is_some(), "an admitted group id is served");
    assert!(deployments.get_opt("other").await.unwrap().is_some(), "and its workload runs");
    connections.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn a_sasl_connection_is_defined_once_shared_by_several_groups_and_rotated_for_all() {
    let env = common::shared_env().await;
    let client = common::kube_client(&env.kube).await;
    common::install_crds(&client).await;
    let kafka = tokio::task::spawn_blocking(testenv::shared_secured_kafka).await.unwrap();
    let listeners = kafka.secured();
    let (user, password) = listeners.sasl_user();
    let topic = common::create_topic(&kafka.bootstrap_servers(), 2).await;
    let namespace = common::namespace(&client, "sasl-conn").await;

    let wrong = testenv::unique_name("wrong-password");
    let sasl = |password: &str| {
        serde_json::json!({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-256",
            "sasl.username": user, "sasl.password": password})
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    secrets.create(&PostParams::default(), &secret("kafka-sasl", true, sasl(&wrong))).await.unwrap();
    let connections: Api<KafkaConnection> = Api::namespaced(client.clone(), &namespace);
    let connection = serde_json::from_value(serde_json::json!({
        "apiVersion": "kafka.operators.dev/v1alpha1", "kind": "KafkaConnection", "metadata": {"name": "orders"},
        "spec": {"bootstrapServers": listeners.sasl_bootstrap_servers(), "clientPropertiesSecretRef": {"name": "kafka-sasl"}}}))
    .unwrap();
    connections.create(&PostParams::default(), &connection).await.unwrap();
    let operator =
        common::Operator::start(&client, common::run_args(&namespace, "", &["--kafka-timeout-seconds", "3"])).await;

    let groups: Api<ConsumerGroup> = Api::namespaced(client.clone(), &namespace);
    let names = ["billing", "shipping", "audit"];
    for name in names {
        let spec = serde_json::json!({"groupId": testenv::unique_name(name), "topics": [topic], "replicas": 1,
            "template": template(), "kafka": {"connectionRef": {"kind": "KafkaConnection", "name": "orders"}}});
        groups.create(&PostParams::default(), &common::consumer_group(name, spec)).await.unwrap();
    }
    for name in names {
        let (reason, message) = condition(&groups, name, "KafkaReachable", "False").await.expect("refused login");
        assert!(!message.contains(&wrong) && !message.contains(password), "{name}: {message}");
        assert_ne!(reason, "Connected", "{name}: {message}");
    }
    let refused = common::eventually(WAIT, || async {
        let status = connections.get("orders").await.ok()?.status?;
        status.conditions.into_iter().find(|c| c.type_ == "Reachable" && c.status == "False")
    })
    .await
    .expect("the connection reports the failure");
    assert!(!refused.message.contains(&wrong), "{}", refused.message);

    // The platform team fixes the Secret once: every ConsumerGroup on the connection follows.
    let rotate = Patch::Merge(serde_json::json!({"data": null, "stringData": sasl(password)}));
    secrets.patch("kafka-sasl", &PatchParams::default(), &rotate).await.unwrap();
    for name in names {
        assert!(condition(&groups, name, "Ready", "True").await.is_some(), "{name} reads Kafka after the rotation");
    }
    let status = common::eventually(WAIT, || async {
        let status = connections.get("orders").await.ok()?.status?;
        status.conditions.iter().any(|c| c.type_ == "Reachable" && c.status == "True").then_some(status)
    })
    .await
    .expect("the connection reports itself reachable");
    assert_eq!((status.brokers, status.consumer_group_count), (Some(1), Some(3)));
    assert_eq!(status.consumer_groups, ["audit", "billing", "shipping"]);
    // Three ConsumerGroups, one client; the one with the old password is closed.
    let shared = common::eventually(WAIT, || async {
        (operator.metric("consumergroup_operator_kafka_connections").await? == 1.0).then_some(())
    })
    .await;
    assert!(shared.is_some(), "the ConsumerGroups of one connection share one client");

    // An OffsetReset goes through its ConsumerGroup's connection.
    let resets: Api<OffsetReset> = Api::namespaced(client.clone(), &namespace);
    let reset = serde_json::from_value(serde_json::json!({"apiVersion": "kafka.operators.dev/v1alpha1",
        "kind": "OffsetReset", "metadata": {"name": "preview"},
        "spec": {"consumerGroup": "billing", "target": {"toEarliest": true}}}))
    .unwrap();
    resets.create(&PostParams::default(), &reset).await.unwrap();
    let planned = common::eventually(WAIT, || async {
        let status = resets.get("preview").await.ok()?.status?;
        (status.phase == Some(ResetPhase::Planned)).then_some(status)
    })
    .await
    .expect("the DryRun is planned over the SASL connection");
    assert_eq!(planned.partition_count, Some(2));
}

#[tokio::test]
async fn the_operators_default_credentials_go_only_to_its_default_servers() {
    let env = common::shared_env().await;
    let client = common::kube_client(&env.kube).await;
    common::install_crds(&client).await;
    let namespace = common::namespace(&client, "defaults").await;

    // The platform's credentials, as the chart mounts them (--default-client-properties-dir).
    let (client_id, user, password) =
        (testenv::unique_name("platform-client"), testenv::unique_name("platform-user"), testenv::unique_name("pw"));
    let dir = tempfile::tempdir().unwrap();
    for (key, value) in [
        ("security.protocol", "SASL_PLAINTEXT"),
        ("sasl.mechanism", "PLAIN"),
        ("sasl.username", user.as_str()),
        ("sasl.password", password.as_str()),
        ("client.id", client_id.as_str()),
    ] {
        std::fs::write(dir.path().join(key), value).unwrap();
    }
    // The platform's server and one a tenant chose; neither answers, both keep what they get.
    let (platform, chosen) = (StandIn::start().await, StandIn::start().await);
    let extra = ["--default-client-properties-dir", dir.path().to_str().unwrap(), "--kafka-timeout-seconds", "2"];
    let default_servers = platform.address.to_string();
    let _operator = common::Operator::start(&client, common::run_args(&namespace, &default_servers, &extra)).await;

    let groups: Api<ConsumerGroup> = Api::namespaced(client.clone(), &namespace);
    let spec = serde_json::json!({"groupId": testenv::unique_name("g"), "topics": ["t"], "template": template(),
        "kafka": {"bootstrapServers": chosen.address.to_string()}});
    groups.create(&PostParams::default(), &common::consumer_group("elsewhere", spec)).await.unwrap();
    let (reason, message) = condition(&groups, "elsewhere", "KafkaReachable", "False").await.expect("no answer");
    assert_ne!(reason, "Connected", "{message}");
    assert!(message.contains("spec.kafka.clientPropertiesSecretRef"), "the condition says why: {message}");
    assert!(chosen.connection_count() > 0, "the operator did connect to the server the tenant named");
    for secret in [&client_id, &user, &password] {
        assert!(!chosen.received(secret), "the tenant's server received the platform's {secret}");
        assert!(!message.contains(secret.as_str()), "{message}");
    }

    // The same credentials do reach the platform's own servers: the checks above could fail.
    let spec = serde_json::json!({"groupId": testenv::unique_name("g"), "topics": ["t"], "template": template()});
    groups.create(&PostParams::default(), &common::consumer_group("platform", spec)).await.unwrap();
    let sent = common::eventually(WAIT, || async { platform.received(&client_id).then_some(()) }).await;
    assert!(sent.is_some(), "a ConsumerGroup on the default servers uses the default properties");
    assert!(!chosen.received(&client_id), "and the tenant's server still has none of them");
}

#[tokio::test]
async fn a_tenant_secret_that_reads_operator_files_or_loads_code_is_refused_by_name() {
    let env = common::shared_env().await;
    let client = common::kube_client(&env.kube).await;
    common::install_crds(&client).await;
    let namespace = common::namespace(&client, "files").await;
    let stand_in = StandIn::start().await;
    let _operator = common::Operator::start(&client, common::run_args(&namespace, "", &[])).await;

    let marker = testenv::unique_name("tenant-client-id");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let data = serde_json::json!({"client.id": marker, "security.protocol": "SSL",
        "ssl.key.location": "/etc/kafka-client/platform.key", "plugin.library.paths": "/tmp/libevil.so"});
    secrets.create(&PostParams::default(), &secret("tenant-auth", true, data)).await.unwrap();
    let groups: Api<ConsumerGroup> = Api::namespaced(client.clone(), &namespace);
    let spec = serde_json::json!({"groupId": testenv::unique_name("g"), "topics": ["t"], "template": template(),
        "kafka": {"bootstrapServers": stand_in.address.to_string(), "clientPropertiesSecretRef": {"name": "tenant-auth"}}});
    groups.create(&PostParams::default(), &common::consumer_group("files", spec)).await.unwrap();

    let (reason, message) = condition(&groups, "files", "Ready", "False").await.expect("a condition says why");
    assert_eq!(reason, "KafkaConfigInvalid", "{message}");
    assert!(message.contains("ssl.key.location") && message.contains("plugin.library.paths"), "{message}");
    assert!(!message.contains("/etc/kafka-client") && !message.contains("libevil"), "a value is echoed: {message}");
    assert_eq!(stand_in.connection_count(), 0, "nothing is sent with a refused Secret");

    // Without the two keys the same Secret is used: the refusal was theirs.
    let fixed = Patch::Merge(serde_json::json!({"data": {"ssl.key.location": null, "plugin.library.paths": null},
        "stringData": {"security.protocol": "PLAINTEXT"}}));
    secrets.patch("tenant-auth", &PatchParams::default(), &fixed).await.unwrap();
    let sent = common::eventually(WAIT, || async { stand_in.received(&marker).then_some(()) }).await;
    assert!(sent.is_some(), "the Secret is used once it sets only what a tenant may");
}

/// A proxy in front of the real broker that answers DescribeGroups as a hostile broker would: a
/// member's 1 MB assignment names a 32 KB topic (240,000 partitions of it). It answers
/// FindCoordinator itself, naming itself, so the group reader's requests come through it; every
/// other request (librdkafka's, OffsetFetch, ConsumerGroupDescribe) goes to the real broker.
struct HostileProxy {
    address: std::net::SocketAddr,
    hostile_answers: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl HostileProxy {
    async fn start(upstream: &str) -> HostileProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let hostile_answers: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let (upstream, answered) = (upstream.to_string(), hostile_answers.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, answered) = (upstream.clone(), answered.clone());
                tokio::spawn(async move {
                    let _ = relay(client, &upstream, address.port(), &answered).await;
                });
            }
        });
        HostileProxy { address, hostile_answers, task }
    }

    fn hostile_answers(&self) -> usize {
        self.hostile_answers.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for HostileProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(
    mut client: tokio::net::TcpStream,
    upstream: &str,
    port: u16,
    answered: &std::sync::atomic::AtomicUsize,
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut broker: Option<tokio::net::TcpStream> = None;
    loop {
        let request = fake_kafka::read_frame(&mut client).await?;
        let api_key = i16::from_be_bytes([request[0], request[1]]);
        let version = i16::from_be_bytes([request[2], request[3]]);
        let correlation = i32::from_be_bytes(request[4..8].try_into().unwrap());
        let answer = match api_key {
            10 => fake_kafka::find_coordinator_answer(&request, correlation, port),
            15 => {
                answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let group = fake_kafka::described_group(&request, version);
                let assignment = fake_kafka::assignment(&[b'x'; 32767], 240_000);
                fake_kafka::describe_groups_answer(version, correlation, &group, &assignment)
            }
            _ => {
                if broker.is_none() {
                    broker = Some(tokio::net::TcpStream::connect(upstream).await?);
                }
                let broker = broker.as_mut().unwrap();
                broker.write_all(&(request.len() as i32).to_be_bytes()).await?;
                broker.write_all(&request).await?;
                fake_kafka::read_frame(broker).await?
            }
        };
        client.write_all(&(answer.len() as i32).to_be_bytes()).await?;
        client.write_all(&answer).await?;
    }
}

#[tokio::test]
async fn a_hostile_broker_s_answer_is_named_in_its_group_s_condition_and_the_others_are_served() {
    let env = common::shared_env().await;
    let client = common::kube_client(&env.kube).await;
    common::install_crds(&client).await;
    let bootstrap = env.kafka.bootstrap_servers();
    let topic = common::create_topic(&bootstrap, 2).await;
    let namespace = common::namespace(&client, "hostile").await;
    let proxy = HostileProxy::start(&bootstrap).await;
    let kafka = consumer_group_operator::kafka::KafkaClient::new(&std::collections::BTreeMap::from([(
        "bootstrap.servers".to_string(),
        bootstrap.clone(),
    )]))
    .unwrap();
    let bystander_id = testenv::unique_name("bystander");
    let offsets = std::collections::BTreeMap::from([(
        consumer_group_operator::kafka::TopicPartition { topic: topic.clone(), partition: 0 },
        0,
    )]);
    common::commit(&kafka, &bystander_id, &offsets).await;
    let _operator = common::Operator::start(&client, common::run_args(&namespace, &bootstrap, &[])).await;
    let (resident_before, _) = common::resident_and_peak();

    let groups: Api<ConsumerGroup> = Api::namespaced(client.clone(), &namespace);
    let spec = |group_id: String, kafka: serde_json::Value| serde_json::json!({"groupId": group_id, "topics": [topic], "replicas": 1, "template": template(), "kafka": kafka});
    let hostile =
        spec(testenv::unique_name("victim"), serde_json::json!({"bootstrapServers": proxy.address.to_string()}));
    groups.create(&PostParams::default(), &common::consumer_group("victim", hostile)).await.unwrap();
    groups
        .create(&PostParams::default(), &common::consumer_group("bystander", spec(bystander_id, serde_json::json!({}))))
        .await
        .unwrap();

    let (reason, message) =
        condition(&groups, "victim", "KafkaReachable", "False").await.expect("the hostile answer is named");
    assert_eq!(reason, "OffsetsUnavailable", "{message}");
    assert!(message.contains("names a topic of 32767 bytes") && message.contains("member 1 of 1"), "{message}");
    // Several polls of the same answer, each decoded within its bound.
    let polled = proxy.hostile_answers();
    assert!(
        common::eventually(WAIT, || async { (proxy.hostile_answers() >= polled + 3).then_some(()) }).await.is_some(),
        "the operator keeps polling the hostile broker's group"
    );
    assert!(condition(&groups, "bystander", "Ready", "True").await.is_some(), "the other group is served");
    let bystander = groups.get("bystander").await.unwrap().status.unwrap();
    assert!(bystander.lag.is_some() && bystander.group_state.is_some(), "{bystander:?}");
    let (_, peak) = common::resident_and_peak();
    let grown = peak.saturating_sub(resident_before);
    println!("peak resident memory grew by {} MiB over {} hostile answers", grown >> 20, proxy.hostile_answers());
    assert!(grown < 192 << 20, "peak resident memory grew by {} MiB", grown >> 20);
}
