//! The ConsumerGroup API against a real kube-apiserver: the CRDs install (structural schema), the
//! examples are accepted, every invalid example is refused naming its field, and `crds/` matches
//! the Rust types.

mod common;

use std::path::Path;

use consumer_group_operator::crd::{ConsumerGroup, OffsetReset};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn yaml_files(dir: &str) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// The API of a manifest's kind: cluster-scoped ClusterKafkaConnections, the rest in `namespace`.
fn api_for(client: &kube::Client, namespace: &str, object: &DynamicObject) -> Api<DynamicObject> {
    let resource = resource_of(object);
    if resource.kind == "ClusterKafkaConnection" {
        Api::all_with(client.clone(), &resource)
    } else {
        Api::namespaced_with(client.clone(), namespace, &resource)
    }
}

/// The API resource of a manifest, from its apiVersion and kind.
fn resource_of(object: &DynamicObject) -> ApiResource {
    let types = object.types.as_ref().expect("manifest has apiVersion and kind");
    let (group, version) = types.api_version.split_once('/').unwrap_or(("", types.api_version.as_str()));
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, &types.kind))
}

#[test]
fn crds_folder_and_chart_match_the_rust_types() {
    let generated = consumer_group_operator::crd::crds_yaml().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in
        ["crds/consumer-group-operator.yaml", "charts/consumer-group-operator/crds/consumer-group-operator.yaml"]
    {
        assert!(
            read(&root.join(file)) == generated,
            "{file} differs from `consumer-group-operator crd`; run `make crds` and commit the result"
        );
    }
}

#[test]
fn test_only_hooks_are_left_out_of_builds_without_the_tests() {
    // What `cargo build` (and so the release image) compiles: the package without its
    // dev-dependencies, which alone turn on `fault-injection`.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tree = |edges: &str| {
        let out = std::process::Command::new(env!("CARGO"))
            .args(["tree", "--edges", edges, "--depth", "0", "--format", "{f}"])
            .current_dir(root)
            .output()
            .unwrap();
        assert!(out.status.success(), "cargo tree: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let built = tree("normal,build");
    assert!(!built.contains("fault-injection"), "a build without tests has the hook: {built}");
    assert!(tree("normal,build,dev").contains("fault-injection"), "the tests enable the crash hook");
}

#[tokio::test]
async fn crds_install_as_structural_schemas() {
    let env = common::shared_env().await;
    let client = common::kube_client(&env.kube).await;
    common::install_crds(&client).await;
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    let crd = crds.get("consumergroups.kafka.operators.dev").await.unwrap();
    let conditions = crd.status.unwrap().conditions.unwrap();
    assert!(
        !conditions.iter().any(|c| c.type_ == "NonStructuralSchema" && c.status == "True"),
        "schema is not structural: {conditions:?}"
    );
    let names = crd.spec.names;
    assert_eq!(names.short_names, Some(vec!["kcg".to_string(), "cg".to_string()]));
    let version = &crd.spec.versions[0];
    let subresources = version.subresources.as_ref().unwrap();
    assert!(subresources.status.is_some());
    let scale = subresources.scale.as_ref().unwrap();
    assert_eq!(
        (scale.spec_replicas_path.as_str(), scale.status_replicas_path.as_str()),
        (".spec.replicas", ".status.replicas")
    );
    assert_eq!(scale.label_selector_path.as_deref(), Some(".status.selector"));
}

#[tokio::test]
async fn examples_are_accepted() {
    let env = common::shared_env().await;
    let client = common::kube_client(&env.kube).await;
    common::install_crds(&client).await;
    let namespace = common::namespace(&client, "examples").await;
    let files = yaml_files("examples");
    assert!(files.len() >= 6, "expected the examples/ manifests, found {files:?}");
    for file in files {
        let mut object: DynamicObject = serde_yaml::from_str(&read(&file)).unwrap();
        // Cluster-scoped names are shared by every test run on this apiserver.
        if resource_of(&object).kind == "ClusterKafkaConnection" {
            object.metadata.name = Some(testenv::unique_name(object.metadata.name.as_deref().unwrap()));
        }
        let api = api_for(&client, &namespace, &object);
        api.create(&PostParams::default(), &object)
            .await
            .unwrap_or_else(|e| panic!("{} was refused: {e}", file.display()));
        // What the apiserver stored must read back as our Rust types (defaults applied).
        let name = object.metadata.name.clone().unwrap();
        match object.types.as_ref().map(|t| t.kind.as_str()) {
            Some("ConsumerGroup") => {
                let typed: Api<ConsumerGroup> = Api::namespaced(client.clone(), &namespace);
                assert!(!typed.get(&name).await.unwrap().spec.topics.is_empty());
            }
            Some("OffsetReset") => {
                let typed: Api<consumer_group_operator::crd::OffsetReset> = Api::namespaced(client.clone(), &namespace);
                assert!(!typed.get(&name).await.unwrap().spec.consumer_group.is_empty());
            }
            Some("KafkaConnection") => {
                let typed: Api<consumer_group_operator::crd::KafkaConnection> =
                    Api::namespaced(client.clone(), &namespace);
                assert!(!typed.get(&name).await.unwrap().spec.bootstrap_servers.is_empty());
            }
            Some("ClusterKafkaConnection") => {
                let typed: Api<consumer_group_operator::crd::ClusterKafkaConnection> = Api::all(client.clone());
                let stored = typed.get(&name).await.unwrap();
                assert!(stored.spec.namespace_selector.match_labels.is_some());
                typed.delete(&name, &Default::default()).await.unwrap();
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn invalid_examples_are_refused_naming_the_field() {
    let env = common::shared_env().await;
    let client = common::kube_client(&env.kube).await;
    common::install_crds(&client).await;
    let namespace = common::namespace(&client, "invalid").await;
    let files = yaml_files("examples/invalid");
    assert!(files.len() >= 8, "expected the invalid examples, found {files:?}");
    for file in files {
        let text = read(&file);
        let expected = text
            .lines()
            .find_map(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} has no `# expect:` line", file.display()))
            .trim()
            .to_string();
        let object: DynamicObject = serde_yaml::from_str(&text).unwrap();
        let api = api_for(&client, &namespace, &object);
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => panic!("{} was accepted but must be refused", file.display()),
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{}: {status:?}", file.display());
                assert!(
                    status.message.contains(&expected),
                    "{}: error does not mention {expected:?}: {}",
                    file.display(),
                    status.message
                );
            }
            Err(other) => panic!("{}: unexpected error {other}", file.display()),
        }
    }
}

#[tokio::test]
async fn group_id_is_immutable() {
    let env = common::shared_env().await;
    let client = common::kube_client(&env.kube).await;
    common::install_crds(&client).await;
    let namespace = common::namespace(&client, "immutable").await;
    let api: Api<ConsumerGroup> = Api::namespaced(client.clone(), &namespace);
    let group: ConsumerGroup = serde_json::from_value(serde_json::json!({
        "apiVersion": "kafka.operators.dev/v1alpha1", "kind": "ConsumerGroup",
        "metadata": {"name": "cg"},
        "spec": {"groupId": "first", "topics": ["t"], "scaleTargetRef": {"kind": "Deployment", "name": "d"}}
    }))
    .unwrap();
    api.create(&PostParams::default(), &group).await.unwrap();
    let change = Patch::Merge(serde_json::json!({"spec": {"groupId": "second"}}));
    let error = api.patch("cg", &PatchParams::default(), &change).await.expect_err("groupId change must be refused");
    assert!(error.to_string().contains("groupId is immutable"), "{error}");
    // Other fields stay editable.
    let replicas = Patch::Merge(serde_json::json!({"spec": {"replicas": 4}}));
    let updated = api.patch("cg", &PatchParams::default(), &replicas).await.unwrap();
    assert_eq!(updated.spec.replicas, 4);
}

#[tokio::test]
async fn scale_subresource_sets_spec_replicas() {
    let env = common::shared_env().await;
    let client = common::kube_client(&env.kube).await;
    common::install_crds(&client).await;
    let namespace = common::namespace(&client, "scale").await;
    let api: Api<ConsumerGroup> = Api::namespaced(client.clone(), &namespace);
    let group: ConsumerGroup = serde_json::from_value(serde_json::json!({
        "apiVersion": "kafka.operators.dev/v1alpha1", "kind": "ConsumerGroup",
        "metadata": {"name": "cg"},
        "spec": {"groupId": "g", "topics": ["t"], "scaleTargetRef": {"kind": "Deployment", "name": "d"}}
    }))
    .unwrap();
    let created = api.create(&PostParams::default(), &group).await.unwrap();
    assert_eq!(created.spec.replicas, 1, "spec.replicas defaults to 1");
    let scale = Patch::Merge(serde_json::json!({"spec": {"replicas": 3}}));
    api.patch_scale("cg", &PatchParams::default(), &scale).await.unwrap();
    assert_eq!(api.get("cg").await.unwrap().spec.replicas, 3);
}

#[tokio::test]
async fn topic_partitions_are_read_back_through_the_kafka_module() {
    let env = common::shared_env().await;
    let client = consumer_group_operator::kafka::KafkaClient::new(&std::collections::BTreeMap::from([(
        "bootstrap.servers".to_string(),
        env.kafka.bootstrap_servers(),
    )]))
    .unwrap();
    let topic = testenv::unique_name("env-topic");
    let timeout = std::time::Duration::from_secs(30);
    client.create_topic(&topic, 5, 1, timeout).await.unwrap();
    // A topic just created may be missing from the broker's metadata for a moment (the controller
    // has it before the broker's metadata cache does): read until it is there.
    let counts = common::eventually(timeout, || async {
        client.partition_counts(std::slice::from_ref(&topic), timeout).await.ok()
    })
    .await
    .expect("the new topic appears in the metadata");
    assert_eq!(counts.get(&topic), Some(&5));
}

#[tokio::test]
async fn an_offset_reset_holds_the_largest_plan_the_size_check_lets_through() {
    use consumer_group_operator::controllers::offset_reset::target::check_size;
    use consumer_group_operator::crd::{OffsetReset, OffsetResetStatus, PlannedOffset, ResetPhase};

    let env = common::shared_env().await;
    let client = common::kube_client(&env.kube).await;
    common::install_crds(&client).await;
    let namespace = common::namespace(&client, "big-plan").await;
    let api: Api<OffsetReset> = Api::namespaced(client.clone(), &namespace);
    // A large spec too: a seek of 2,000 explicit offsets.
    let offsets: Vec<_> =
        (0..2000).map(|p| serde_json::json!({"topic": "t".repeat(200), "partition": p, "offset": 1})).collect();
    let reset: OffsetReset = serde_json::from_value(serde_json::json!({
        "apiVersion": "kafka.operators.dev/v1alpha1", "kind": "OffsetReset", "metadata": {"name": "big"},
        "spec": {"consumerGroup": "cg", "target": {"offsets": offsets}}
    }))
    .unwrap();
    let created = api.create(&PostParams::default(), &reset).await.unwrap();
    // The longest topic names and offsets: the worst a plan entry takes. Grow the plan until the
    // check refuses it, then store the largest one it accepted.
    let entry = |i: usize| PlannedOffset {
        topic: format!("{}-{}", "t".repeat(240), i / 500),
        partition: (i % 500) as i32,
        current_offset: Some(9_000_000_000_000_000 + i as i64),
        new_offset: Some(1_000_000_000_000_000),
        delta: Some(-8_000_000_000_000_000 - i as i64),
    };
    let mut plan: Vec<PlannedOffset> = (0..1000).map(entry).collect();
    while check_size(&created, &plan).is_ok() {
        plan.extend((plan.len()..plan.len() + 100).map(entry));
    }
    let refused = check_size(&created, &plan).unwrap_err();
    assert!(refused.contains("split it into several OffsetResets"), "{refused}");
    while check_size(&created, &plan).is_err() {
        plan.pop();
    }
    let largest = plan.len();
    let status = OffsetResetStatus {
        phase: Some(ResetPhase::Planned),
        partition_count: Some(largest as i32),
        plan,
        ..OffsetResetStatus::default()
    };
    let body =
        serde_json::json!({"apiVersion": "kafka.operators.dev/v1alpha1", "kind": "OffsetReset", "status": status});
    api.patch_status("big", &PatchParams::apply("tests").force(), &Patch::Apply(body)).await.unwrap();
    let stored = api.get("big").await.unwrap().status.unwrap();
    assert_eq!(stored.plan.len(), largest, "the apiserver stored every planned partition");
}

#[tokio::test]
async fn an_execute_offset_reset_cannot_be_changed_nor_set_back_to_dry_run() {
    let env = common::shared_env().await;
    let client = common::kube_client(&env.kube).await;
    common::install_crds(&client).await;
    let namespace = common::namespace(&client, "frozen").await;
    let api: Api<OffsetReset> = Api::namespaced(client.clone(), &namespace);
    let reset: OffsetReset = serde_json::from_value(serde_json::json!({
        "apiVersion": "kafka.operators.dev/v1alpha1", "kind": "OffsetReset", "metadata": {"name": "r"},
        "spec": {"consumerGroup": "cg", "target": {"shiftBy": -10}, "topics": [{"name": "a"}]}
    }))
    .unwrap();
    api.create(&PostParams::default(), &reset).await.unwrap();
    let patch = |spec: serde_json::Value| Patch::Merge(serde_json::json!({ "spec": spec }));
    // A DryRun may still be edited, then approved.
    api.patch("r", &PatchParams::default(), &patch(serde_json::json!({"topics": [{"name": "b"}]}))).await.unwrap();
    api.patch("r", &PatchParams::default(), &patch(serde_json::json!({"mode": "Execute"}))).await.unwrap();
    for change in [
        serde_json::json!({"mode": "DryRun"}),
        serde_json::json!({"topics": [{"name": "c"}]}),
        serde_json::json!({"quiesceTimeoutSeconds": 10}),
    ] {
        let error = api
            .patch("r", &PatchParams::default(), &patch(change.clone()))
            .await
            .expect_err("an Execute OffsetReset is frozen");
        assert!(error.to_string().contains("cannot be changed (nor set back to DryRun)"), "{change}: {error}");
    }
    let stored = api.get("r").await.unwrap();
    assert_eq!(stored.spec.mode, consumer_group_operator::crd::ResetMode::Execute);
    assert_eq!(stored.spec.topics[0].name, "b");
}
