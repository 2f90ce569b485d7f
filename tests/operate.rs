//! Installing and operating: the Helm chart lints, renders and is accepted by a real apiserver; the
//! chart's RBAC is enough for the operator (it runs impersonating the chart's ServiceAccount);
//! leader election between two real operator processes hands over when the leader dies or stops;
//! Secret content never reaches logs, status or Events.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use consumer_group_operator::crd::ConsumerGroup;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::api::{Api, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

const WAIT: Duration = Duration::from_secs(60);
/// `helm template` renders for this Kubernetes version (the one the tests run).
const KUBE_VERSION: &str = "v1.34.4";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The helm of `scripts/deps.sh` (`make test` prepares it), else whatever `scripts/helm.sh` finds.
fn helm() -> PathBuf {
    if let Some(path) = std::env::var_os("CGO_HELM") {
        return PathBuf::from(path);
    }
    let out = Command::new("bash").arg(repo().join("scripts/helm.sh")).stderr(Stdio::inherit()).output().unwrap();
    assert!(out.status.success(), "scripts/helm.sh failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn run(command: &mut Command) -> String {
    let out = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn create_topic(bootstrap: &str, partitions: i32) -> String {
    let topic = testenv::unique_name("topic");
    let client = consumer_group_operator::kafka::KafkaClient::new(&BTreeMap::from([(
        "bootstrap.servers".to_string(),
        bootstrap.to_string(),
    )]))
    .unwrap();
    client.create_topic(&topic, partitions, 1, Duration::from_secs(30)).await.unwrap();
    topic
}

#[tokio::test]
async fn chart_lints_renders_and_is_accepted_by_the_apiserver() {
    let env = common::shared_env().await;
    let helm = helm();
    let chart = repo().join("charts/consumer-group-operator");
    run(Command::new(&helm).arg("lint").arg(&chart).arg("--strict"));
    let client = common::kube_client(&env.kube).await;
    common::install_crds(&client).await;

    let scoped = vec!["--set", "watchNamespaces={team-a,team-b}", "--set", "kafka.clientPropertiesSecret=kafka-client"];
    for (release, extra) in [("all-ns", vec![]), ("scoped", scoped)] {
        let namespace = common::namespace(&client, release).await;
        let mut template = Command::new(&helm);
        template
            .args(["template", release])
            .arg(&chart)
            .args(["--namespace", &namespace, "--kube-version", KUBE_VERSION])
            .args(&extra);
        let rendered = run(&mut template);
        assert!(rendered.contains("kind: Deployment") && rendered.contains("--leader-election"));
        assert!(rendered.contains("readOnlyRootFilesystem: true") && rendered.contains("runAsNonRoot: true"));
        // The default client-properties Secret is mounted and handed to the operator, or absent.
        let default_properties = rendered
            .contains("--default-client-properties-dir=/etc/consumer-group-operator/kafka-client")
            && rendered.contains("secretName: kafka-client");
        assert_eq!(default_properties, !extra.is_empty(), "{rendered}");
        for ns in ["team-a", "team-b"] {
            if extra.is_empty() {
                continue;
            }
            let _ = env.kube.kubectl(&["create", "namespace", ns]).output();
        }
        let file = std::env::temp_dir().join(format!("{}.yaml", testenv::unique_name(release)));
        std::fs::write(&file, &rendered).unwrap();
        let applied = run(env.kube.kubectl(&["apply", "--server-side", "-f"]).arg(&file));
        std::fs::remove_file(&file).ok();
        assert!(applied.contains("deployment.apps/") && applied.contains("serviceaccount/"), "{applied}");
        if extra.is_empty() {
            assert!(applied.contains("clusterrole.rbac.authorization.k8s.io/"), "{applied}");
        } else {
            assert!(applied.contains("role.rbac.authorization.k8s.io/"), "{applied}");
            assert!(!applied.contains("clusterrole.rbac"), "a scoped install needs no ClusterRole: {applied}");
        }
    }
}

/// A client that acts as the chart's ServiceAccount, so the operator gets exactly the chart's RBAC.
async fn client_as(server: &testenv::KubeApiServer, service_account: &str) -> Client {
    let kubeconfig = Kubeconfig::read_from(server.kubeconfig_path()).unwrap();
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
    config.auth_info.impersonate = Some(service_account.to_string());
    Client::try_from(config).unwrap()
}

#[tokio::test]
async fn chart_rbac_is_enough_for_the_operator() {
    let env = common::shared_env().await;
    let admin = common::kube_client(&env.kube).await;
    common::install_crds(&admin).await;
    let namespace = common::namespace(&admin, "rbac").await;
    let rendered =
        run(Command::new(helm()).args(["template", "rbac"]).arg(repo().join("charts/consumer-group-operator")).args([
            "--namespace",
            &namespace,
            "--kube-version",
            KUBE_VERSION,
            "--set",
            &format!("watchNamespaces={{{namespace}}}"),
        ]));
    let file = std::env::temp_dir().join(format!("{}.yaml", testenv::unique_name("rbac")));
    std::fs::write(&file, &rendered).unwrap();
    run(env.kube.kubectl(&["apply", "--server-side", "-f"]).arg(&file));
    std::fs::remove_file(&file).ok();

    let operator_client =
        client_as(&env.kube, &format!("system:serviceaccount:{namespace}:rbac-consumer-group-operator")).await;
    let bootstrap = env.kafka.bootstrap_servers();
    let topic = create_topic(&bootstrap, 2).await;
    let metrics = std::sync::Arc::new(consumer_group_operator::metrics::Metrics::new());
    // Leader election as the chart runs it: the Lease lives in the release namespace.
    let args = common::run_args(&namespace, &bootstrap, &["--leader-election", "--lease-namespace", &namespace]);
    let operator = tokio::spawn(consumer_group_operator::controller::run_elected(
        operator_client,
        args,
        metrics,
        std::future::pending(),
    ));
    let groups: Api<ConsumerGroup> = Api::namespaced(admin.clone(), &namespace);
    let spec = serde_json::json!({"groupId": testenv::unique_name("g"), "topics": [topic], "replicas": 5,
        "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}},
        "kafka": {"clientPropertiesSecretRef": {"name": "props"}}});
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &namespace);
    let secret: Secret = serde_json::from_value(
        serde_json::json!({"metadata": {"name": "props"}, "stringData": {"client.id": "rbac-test"}}),
    )
    .unwrap();
    secrets.create(&PostParams::default(), &secret).await.unwrap();
    groups.create(&PostParams::default(), &common::consumer_group("rbac", spec)).await.unwrap();

    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &namespace);
    let replicas = common::eventually(WAIT, || async { deployments.get_opt("rbac").await.ok()??.spec?.replicas }).await;
    assert_eq!(replicas, Some(2), "with only the chart's RBAC the operator reads the Secret and runs the Deployment");
    let ready = common::eventually(WAIT, || async {
        let status = groups.get("rbac").await.ok()?.status?;
        status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True").then_some(())
    })
    .await;
    assert!(ready.is_some(), "status is written with the chart's RBAC");
    let events: Api<Event> = Api::namespaced(admin.clone(), &namespace);
    let recorded = common::eventually(WAIT, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        (!list.items.is_empty()).then_some(())
    })
    .await;
    assert!(recorded.is_some(), "Events are recorded with the chart's RBAC");
    let leases: Api<Lease> = Api::namespaced(admin.clone(), &namespace);
    assert!(lease_holder(&leases, "consumer-group-operator").await.is_some(), "the Lease is held");

    // A workload deployed by someone else: only its scale subresource is written.
    let target: Deployment = serde_json::from_value(serde_json::json!({"metadata": {"name": "theirs"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "theirs"}},
            "template": {"metadata": {"labels": {"app": "theirs"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}))
    .unwrap();
    deployments.create(&PostParams::default(), &target).await.unwrap();
    let spec = serde_json::json!({"groupId": testenv::unique_name("g"), "topics": [topic], "replicas": 2,
        "scaleTargetRef": {"kind": "Deployment", "name": "theirs"}});
    groups.create(&PostParams::default(), &common::consumer_group("scaled", spec)).await.unwrap();
    let scaled = common::eventually(WAIT, || async {
        (deployments.get("theirs").await.ok()?.spec?.replicas? == 2).then_some(())
    })
    .await;
    assert!(scaled.is_some(), "the scale subresource is patched with the chart's RBAC");

    // OffsetResets are watched and their status written.
    let resets: Api<consumer_group_operator::crd::OffsetReset> = Api::namespaced(admin.clone(), &namespace);
    let reset = serde_json::from_value(serde_json::json!({"apiVersion": "kafka.operators.dev/v1alpha1",
        "kind": "OffsetReset", "metadata": {"name": "preview"},
        "spec": {"consumerGroup": "rbac", "target": {"toEarliest": true}}}))
    .unwrap();
    resets.create(&PostParams::default(), &reset).await.unwrap();
    let planned = common::eventually(WAIT, || async {
        let phase = resets.get("preview").await.ok()?.status?.phase?;
        (phase == consumer_group_operator::crd::ResetPhase::Planned).then_some(())
    })
    .await;
    assert!(planned.is_some(), "an OffsetReset is planned with the chart's RBAC");
    assert!(!operator.is_finished(), "the operator must still be running");
    operator.abort();
}

/// An operator process, killed on drop; its log collected in a file.
struct OperatorProcess {
    child: Child,
    log: PathBuf,
}

impl OperatorProcess {
    fn start(kubeconfig: &Path, name: &str, namespace: &str, bootstrap: &str, extra: &[&str]) -> OperatorProcess {
        let log = std::env::temp_dir().join(format!("{}.log", testenv::unique_name(name)));
        let child = Command::new(env!("CARGO_BIN_EXE_consumer-group-operator"))
            .args(["run", "--namespace", namespace, "--resync-seconds", "1", "--metrics-address", "127.0.0.1:0"])
            .args(["--default-bootstrap-servers", bootstrap, "--log-format", "json"])
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAME", name)
            .env_remove("RUST_LOG")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the operator binary");
        OperatorProcess { child, log }
    }

    fn log(&self) -> String {
        let mut text = String::new();
        std::fs::File::open(&self.log).unwrap().read_to_string(&mut text).unwrap();
        text
    }

    fn signal(&self, signal: &str) {
        Command::new("kill").args([signal, &self.child.id().to_string()]).status().unwrap();
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::fs::remove_file(&self.log).ok();
    }
}

async fn lease_holder(leases: &Api<Lease>, name: &str) -> Option<String> {
    leases.get_opt(name).await.ok()??.spec?.holder_identity
}

#[tokio::test]
async fn leader_election_hands_over_when_the_leader_dies_or_stops() {
    let env = common::shared_env().await;
    let client = common::kube_client(&env.kube).await;
    common::install_crds(&client).await;
    let namespace = common::namespace(&client, "leader").await;
    let bootstrap = env.kafka.bootstrap_servers();
    let topic = create_topic(&bootstrap, 3).await;
    let lease = testenv::unique_name("lease");
    let election =
        ["--leader-election", "--lease-name", &lease, "--lease-namespace", &namespace, "--lease-duration-seconds", "6"];
    let kubeconfig = env.kube.kubeconfig_path();
    let a = OperatorProcess::start(&kubeconfig, "operator-a", &namespace, &bootstrap, &election);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &namespace);
    let holder = common::eventually(WAIT, || lease_holder(&leases, &lease)).await;
    assert_eq!(holder.as_deref(), Some("operator-a"));
    let b = OperatorProcess::start(&kubeconfig, "operator-b", &namespace, &bootstrap, &election);

    // Only the leader acts.
    let groups: Api<ConsumerGroup> = Api::namespaced(client.clone(), &namespace);
    let spec = |id: &str| serde_json::json!({"groupId": id, "topics": [topic], "replicas": 1, "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}});
    groups
        .create(&PostParams::default(), &common::consumer_group("first", spec(&testenv::unique_name("g"))))
        .await
        .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    assert!(common::eventually(WAIT, || async { deployments.get_opt("first").await.ok()? }).await.is_some());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(a.log().contains("became the leader"), "a leads");
    assert!(!b.log().contains("became the leader"), "b must wait: {}", b.log());
    assert!(!b.log().contains("scaled workload"), "a follower never acts");

    // The leader dies without releasing: b takes over once the lease expires.
    let killed = Instant::now();
    a.signal("-KILL");
    let holder =
        common::eventually(WAIT, || async { lease_holder(&leases, &lease).await.filter(|h| h == "operator-b") }).await;
    let failover = killed.elapsed();
    assert_eq!(holder.as_deref(), Some("operator-b"));
    eprintln!("failover after SIGKILL of the leader: {:.1}s (lease duration 6s)", failover.as_secs_f64());
    assert!(
        failover < Duration::from_secs(6 + 6),
        "handover within lease duration plus one renewal period: {failover:?}"
    );
    groups
        .create(&PostParams::default(), &common::consumer_group("second", spec(&testenv::unique_name("g"))))
        .await
        .unwrap();
    assert!(
        common::eventually(WAIT, || async { deployments.get_opt("second").await.ok()? }).await.is_some(),
        "the new leader reconciles"
    );

    // A graceful stop (SIGTERM) releases the lease at once.
    let c = OperatorProcess::start(&kubeconfig, "operator-c", &namespace, &bootstrap, &election);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stopped = Instant::now();
    b.signal("-TERM");
    let holder =
        common::eventually(WAIT, || async { lease_holder(&leases, &lease).await.filter(|h| h == "operator-c") }).await;
    let handover = stopped.elapsed();
    assert_eq!(holder.as_deref(), Some("operator-c"));
    eprintln!("handover after SIGTERM of the leader: {:.1}s", handover.as_secs_f64());
    assert!(b.log().contains("released the leader lease"), "{}", b.log());
    drop(c);
}

#[tokio::test]
async fn secret_content_never_reaches_logs_status_or_events() {
    let env = common::shared_env().await;
    let client = common::kube_client(&env.kube).await;
    common::install_crds(&client).await;
    let namespace = common::namespace(&client, "secret").await;
    let bootstrap = env.kafka.bootstrap_servers();
    let topic = create_topic(&bootstrap, 1).await;
    let password = "s3cr3t-Pa55w0rd-do-not-log";
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let secret: Secret = serde_json::from_value(serde_json::json!({"metadata": {"name": "kafka-auth"}, "stringData": {
        "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN", "sasl.username": "app", "sasl.password": password,
    }}))
    .unwrap();
    secrets.create(&PostParams::default(), &secret).await.unwrap();
    let operator = OperatorProcess::start(
        &env.kube.kubeconfig_path(),
        "operator-secret",
        &namespace,
        &bootstrap,
        &["--log-level", "debug", "--kafka-timeout-seconds", "2"],
    );
    let groups: Api<ConsumerGroup> = Api::namespaced(client.clone(), &namespace);
    let spec = serde_json::json!({"groupId": testenv::unique_name("g"), "topics": [topic], "replicas": 1,
        "kafka": {"clientPropertiesSecretRef": {"name": "kafka-auth"}},
        "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}});
    groups.create(&PostParams::default(), &common::consumer_group("sasl", spec)).await.unwrap();
    // SASL against a plaintext listener fails: the error path is exercised, with the password in use.
    let failed = common::eventually(WAIT, || async {
        let status = groups.get("sasl").await.ok()?.status?;
        status.conditions.iter().any(|c| c.type_ == "KafkaReachable" && c.status == "False").then_some(status)
    })
    .await
    .expect("the SASL connection must fail and be reported");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = operator.log();
    assert!(log.contains("sasl"), "the debug log covered the reconcile: {log}");
    assert!(!log.contains(password), "the password appeared in the log");
    assert!(!serde_json::to_string(&failed).unwrap().contains(password), "the password appeared in status");
    let events: Api<Event> = Api::namespaced(client.clone(), &namespace);
    for event in events.list(&ListParams::default()).await.unwrap() {
        assert!(!serde_json::to_string(&event).unwrap().contains(password), "the password appeared in an Event");
    }
}
