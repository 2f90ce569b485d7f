//! Installing and operating: the Helm chart lints, renders and is accepted by a real apiserver; the
//! chart's RBAC is enough for the operator (it runs impersonating the chart's ServiceAccount);
//! leader election between two real operator processes hands over when the leader dies or stops;
//! Secret content never reaches logs, status or Events.

mod common;

use common::create_topic;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use consumer_group_operator::crd::ConsumerGroup;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::Client;
use kube::api::{Api, ListParams, PostParams};

const WAIT: Duration = Duration::from_secs(60);

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

/// What `helm template --kube-version` renders for, and checks the chart's `kubeVersion` against:
/// the apiserver's own version, so each version the tests run against is checked.
async fn kube_version(client: &Client) -> String {
    client.apiserver_version().await.unwrap().git_version
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

#[tokio::test]
async fn chart_lints_renders_and_is_accepted_by_the_apiserver() {
    let env = common::shared_env().await;
    let helm = helm();
    let chart = repo().join("charts/consumer-group-operator");
    run(Command::new(&helm).arg("lint").arg(&chart).arg("--strict"));
    let client = common::kube_client(&env.kube).await;
    common::install_crds(&client).await;
    let kube_version = kube_version(&client).await;

    let scoped = vec![
        "--set",
        "watchNamespaces={team-a,team-b}",
        "--set",
        "kafka.clientPropertiesSecret=kafka-client",
        "--set",
        "networkPolicy.enabled=true",
    ];
    let no_namespace_secrets = vec!["--set", "kafka.allowNamespaceSecrets=false"];
    for (release, extra) in [("all-ns", vec![]), ("scoped", scoped), ("own-secrets", no_namespace_secrets)] {
        let namespace = common::namespace(&client, release).await;
        let mut template = Command::new(&helm);
        template
            .args(["template", release])
            .arg(&chart)
            .args(["--namespace", &namespace, "--kube-version", &kube_version])
            .args(&extra);
        let rendered = run(&mut template);
        assert!(rendered.contains("kind: Deployment") && rendered.contains("--leader-election"));
        assert!(rendered.contains("readOnlyRootFilesystem: true") && rendered.contains("runAsNonRoot: true"));
        // The default client-properties Secret is mounted and handed to the operator, or absent.
        let default_properties = rendered
            .contains("--default-client-properties-dir=/etc/consumer-group-operator/kafka-client")
            && rendered.contains("secretName: kafka-client");
        assert_eq!(default_properties, release == "scoped", "{rendered}");
        let secret_rules = secret_rules(&rendered);
        if release == "own-secrets" {
            assert_eq!(
                secret_rules,
                [("Role".to_string(), namespace.clone())],
                "Secrets of the release namespace only"
            );
            assert!(rendered.contains("--allow-namespace-secrets=false"), "{rendered}");
        } else {
            assert!(secret_rules.len() > 1, "labelled Secrets of watched namespaces are readable: {secret_rules:?}");
        }
        if release == "scoped" {
            for ns in ["team-a", "team-b"] {
                let _ = env.kube.kubectl(&["create", "namespace", ns]).output();
            }
            // Its only ClusterRole holds the cluster-scoped reads: no workload rule cluster-wide.
            let cluster_roles: Vec<_> =
                documents(&rendered).into_iter().filter(|d| d["kind"] == "ClusterRole").collect();
            assert_eq!(cluster_roles.len(), 1, "{rendered}");
            let resources = serde_json::to_string(&cluster_roles[0]["rules"]).unwrap();
            assert!(resources.contains("clusterkafkaconnections") && !resources.contains("deployments"), "{resources}");
        }
        let file = std::env::temp_dir().join(format!("{}.yaml", testenv::unique_name(release)));
        std::fs::write(&file, &rendered).unwrap();
        let applied = run(env.kube.kubectl(&["apply", "--server-side", "-f"]).arg(&file));
        std::fs::remove_file(&file).ok();
        assert!(applied.contains("deployment.apps/") && applied.contains("serviceaccount/"), "{applied}");
        assert!(applied.contains("clusterrole.rbac.authorization.k8s.io/"), "{applied}");
        assert!(applied.contains("role.rbac.authorization.k8s.io/"), "{applied}");
    }
}

#[tokio::test]
async fn chart_registers_the_external_metrics_api_with_a_certificate_it_trusts() {
    let env = common::shared_env().await;
    let client = common::kube_client(&env.kube).await;
    let version = kube_version(&client).await;
    let chart = repo().join("charts/consumer-group-operator");
    let template = |extra: &[&str]| {
        let mut command = Command::new(helm());
        command
            .args(["template", "ext", "--namespace", "ext-metrics", "--kube-version", &version])
            .arg(&chart)
            .args(["--set", "externalMetrics.enabled=true"])
            .args(extra);
        command.output().unwrap()
    };
    // Only the leader serves it: two replicas would send the aggregation layer to a follower.
    let refused = template(&[]);
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("replicaCount: 1"));

    let rendered = template(&["--set", "replicaCount=1"]);
    assert!(rendered.status.success(), "{}", String::from_utf8_lossy(&rendered.stderr));
    let rendered = String::from_utf8(rendered.stdout).unwrap();
    let documents = documents(&rendered);
    let find =
        |kind: &str| documents.iter().find(|d| d["kind"] == kind).cloned().unwrap_or_else(|| panic!("no {kind}"));
    let api_service = documents.iter().find(|d| d["kind"] == "APIService").expect("an APIService");
    assert_eq!(api_service["spec"]["service"]["name"], "ext-consumer-group-operator-external-metrics");
    // The serving certificate names the Service as the aggregator dials it, and chains to the
    // caBundle: checked with the same TLS library the operator serves with.
    let secret = documents
        .iter()
        .find(|d| d["kind"] == "Secret" && d["metadata"]["name"] == "ext-consumer-group-operator-external-metrics-tls")
        .expect("the serving certificate's Secret");
    let decode = |v: &serde_json::Value| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap()).unwrap()
    };
    let (ca, certificate) = (decode(&api_service["spec"]["caBundle"]), decode(&secret["data"]["tls.crt"]));
    {
        use tokio_rustls::rustls;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rustls::pki_types::CertificateDer::from_pem_slice(&ca).unwrap()).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(std::sync::Arc::new(roots), provider)
                .build()
                .unwrap();
        let leaf = rustls::pki_types::CertificateDer::from_pem_slice(&certificate).unwrap();
        let name =
            rustls::pki_types::ServerName::try_from("ext-consumer-group-operator-external-metrics.ext-metrics.svc")
                .unwrap();
        use rustls::client::danger::ServerCertVerifier;
        verifier
            .verify_server_cert(&leaf, &[], &name, &[], rustls::pki_types::UnixTime::now())
            .expect("the serving certificate is valid for the Service's name under the caBundle");
    }
    let deployment = find("Deployment");
    let args = serde_json::to_string(&deployment["spec"]["template"]["spec"]["containers"][0]["args"]).unwrap();
    assert!(args.contains("--external-metrics-address=0.0.0.0:6443"), "{args}");
    // Accepted by the apiserver as it is (validated, not stored: a registered APIService without a
    // server behind it would make every discovery in this test binary incomplete).
    let file = std::env::temp_dir().join(format!("{}.yaml", testenv::unique_name("ext-chart")));
    std::fs::write(&file, &rendered).unwrap();
    let _ = env.kube.kubectl(&["create", "namespace", "ext-metrics"]).output();
    let applied = run(env.kube.kubectl(&["apply", "--server-side", "--dry-run=server", "-f"]).arg(&file));
    std::fs::remove_file(&file).ok();
    assert!(applied.contains("apiservice.apiregistration.k8s.io/v1beta1.external.metrics.k8s.io"), "{applied}");
}

/// The documents of a rendered chart, as JSON values.
fn documents(rendered: &str) -> Vec<serde_json::Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(rendered)
        .filter_map(|document| serde_json::Value::deserialize(document).ok())
        .filter(|document| !document.is_null())
        .collect()
}

/// The (kind, namespace) of every Role or ClusterRole of a rendered chart granting access to Secrets.
fn secret_rules(rendered: &str) -> Vec<(String, String)> {
    documents(rendered)
        .into_iter()
        .filter(|d| d["kind"] == "Role" || d["kind"] == "ClusterRole")
        .filter(|d| {
            let rules = d["rules"].as_array().cloned().unwrap_or_default();
            rules.iter().any(|rule| rule["resources"].as_array().is_some_and(|r| r.iter().any(|r| r == "secrets")))
        })
        .map(|d| {
            (d["kind"].as_str().unwrap().to_string(), d["metadata"]["namespace"].as_str().unwrap_or("").to_string())
        })
        .collect()
}

#[tokio::test]
async fn chart_rbac_is_enough_for_the_operator() {
    let env = common::shared_env().await;
    let admin = common::kube_client(&env.kube).await;
    common::install_crds(&admin).await;
    let namespace = common::namespace(&admin, "rbac").await;
    let kube_version = kube_version(&admin).await;
    let rendered =
        run(Command::new(helm()).args(["template", "rbac"]).arg(repo().join("charts/consumer-group-operator")).args([
            "--namespace",
            &namespace,
            "--kube-version",
            &kube_version,
            "--set",
            &format!("watchNamespaces={{{namespace}}}"),
        ]));
    let file = std::env::temp_dir().join(format!("{}.yaml", testenv::unique_name("rbac")));
    std::fs::write(&file, &rendered).unwrap();
    run(env.kube.kubectl(&["apply", "--server-side", "-f"]).arg(&file));
    std::fs::remove_file(&file).ok();

    let operator_client =
        common::client_as(&env.kube, &format!("system:serviceaccount:{namespace}:rbac-consumer-group-operator")).await;
    let bootstrap = env.kafka.bootstrap_servers();
    let topic = create_topic(&bootstrap, 2).await;
    let metrics = std::sync::Arc::new(consumer_group_operator::metrics::Metrics::new());
    // Leader election as the chart runs it: the Lease lives in the release namespace.
    let args = common::run_args(&namespace, &bootstrap, &["--leader-election", "--lease-namespace", &namespace]);
    let operator = tokio::spawn(consumer_group_operator::runtime::run_elected(
        operator_client,
        args,
        metrics,
        std::future::pending(),
    ));
    // Its Lease rule: the named Lease may be read and watched (a leader watches its renewals),
    // no other Lease may be read.
    let as_operator =
        common::client_as(&env.kube, &format!("system:serviceaccount:{namespace}:rbac-consumer-group-operator")).await;
    let leases: Api<Lease> = Api::namespaced(as_operator, &namespace);
    let named = ListParams::default().fields("metadata.name=consumer-group-operator");
    assert!(leases.list(&named).await.is_ok(), "the chart lets the operator list its own Lease by name");
    assert!(
        leases
            .watch(&kube::api::WatchParams::default().fields("metadata.name=consumer-group-operator"), "0")
            .await
            .is_ok()
    );
    let every = leases.list(&ListParams::default()).await;
    assert!(matches!(&every, Err(kube::Error::Api(status)) if status.code == 403), "every Lease: {every:?}");
    let groups: Api<ConsumerGroup> = Api::namespaced(admin.clone(), &namespace);
    let spec = serde_json::json!({"groupId": testenv::unique_name("g"), "topics": [topic], "replicas": 5,
        "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}},
        "kafka": {"clientPropertiesSecretRef": {"name": "props"}}});
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &namespace);
    let secret: Secret = serde_json::from_value(
        serde_json::json!({"metadata": {"name": "props", "labels": {"kafka.operators.dev/client-properties": "true"}},
            "stringData": {"client.id": "rbac-test"}}),
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
        OperatorProcess::start_with_format(kubeconfig, name, namespace, bootstrap, "json", extra)
    }

    fn start_with_format(
        kubeconfig: &Path,
        name: &str,
        namespace: &str,
        bootstrap: &str,
        format: &str,
        extra: &[&str],
    ) -> OperatorProcess {
        OperatorProcess::start_with_env(kubeconfig, name, namespace, bootstrap, format, extra, &[])
    }

    fn start_with_env(
        kubeconfig: &Path,
        name: &str,
        namespace: &str,
        bootstrap: &str,
        format: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> OperatorProcess {
        let log = std::env::temp_dir().join(format!("{}.log", testenv::unique_name(name)));
        let child = Command::new(env!("CARGO_BIN_EXE_consumer-group-operator"))
            .envs(env.iter().copied())
            .args(["run", "--namespace", namespace, "--resync-seconds", "1", "--metrics-address", "127.0.0.1:0"])
            .args(["--default-bootstrap-servers", bootstrap, "--log-format", format])
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

    /// The address of its /metrics endpoint, from its "serving /metrics" log line.
    async fn metrics_address(&self) -> std::net::SocketAddr {
        common::eventually(WAIT, || async {
            let log = self.log();
            let line = log.lines().find(|l| l.contains("serving /metrics"))?;
            let start = line.find("127.0.0.1:")?;
            let rest = &line[start..];
            let end = start + rest.find(|c: char| c != '.' && c != ':' && !c.is_ascii_digit()).unwrap_or(rest.len());
            line[start..end].parse().ok()
        })
        .await
        .expect("the operator logs its metrics address")
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
    assert!(
        common::eventually(WAIT, || async { b.log().contains("waiting to become the leader").then_some(()) })
            .await
            .is_some()
    );
    assert!(a.log().contains("became the leader"), "a leads");
    assert!(!b.log().contains("became the leader"), "b must wait: {}", b.log());
    assert!(!b.log().contains("scaled workload"), "a follower never acts");
    // The follower is ready (a rolling update must not wait for it); the metric tells who leads.
    let (a_metrics, b_metrics) = (a.metrics_address().await, b.metrics_address().await);
    let (status, body) = common::http_request(b_metrics, "/readyz").await;
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", "ok"), "a follower is ready");
    assert!(common::http_get(b_metrics, "/metrics").await.contains("consumergroup_operator_leader 0"));
    assert!(common::http_get(a_metrics, "/metrics").await.contains("consumergroup_operator_leader 1"));

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
    assert!(
        common::eventually(WAIT, || async { c.log().contains("waiting to become the leader").then_some(()) })
            .await
            .is_some()
    );
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

/// Standard base64 (RFC 4648, padded), as Secret data travels in the API.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A value no log or message would contain by chance.
fn random_value(label: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write(label.as_bytes());
    format!("{label}-{:016x}", hasher.finish())
}

/// One operator process (log format `format`, trace level) in its own namespace, serving
/// ConsumerGroups and OffsetResets whose Secrets hold random values under a misspelled key, a Java
/// key, a refused value and valid SASL keys. Returns the values, and every text the operator
/// produced: its log, statuses, Events and /metrics.
async fn secret_scenario(format: &str) -> (Vec<String>, String, BTreeMap<String, (String, String)>, Vec<String>) {
    let env = common::shared_env().await;
    let client = common::kube_client(&env.kube).await;
    common::install_crds(&client).await;
    let namespace = common::namespace(&client, &format!("secret-{format}")).await;
    let bootstrap = env.kafka.bootstrap_servers();
    let topic = create_topic(&bootstrap, 1).await;
    let (misspelled, jaas, refused, user, password) = (
        random_value("misspelled"),
        random_value("jaas"),
        random_value("refused"),
        random_value("user"),
        random_value("password"),
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let jaas_config = format!(
        "org.apache.kafka.common.security.plain.PlainLoginModule required username=\"app\" password=\"{jaas}\";"
    );
    let contents = [
        ("misspelled", serde_json::json!({"security.protocol": "plaintext", "sasl.pasword": misspelled})),
        ("jaas", serde_json::json!({"security.protocol": "SASL_PLAINTEXT", "sasl.jaas.config": jaas_config})),
        ("refused", serde_json::json!({"security.protocol": refused})),
        (
            "sasl",
            serde_json::json!({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
            "sasl.username": user, "sasl.password": password}),
        ),
    ];
    for (name, data) in &contents {
        let secret: Secret =
            serde_json::from_value(serde_json::json!({"metadata": {"name": name, "labels": {"kafka.operators.dev/client-properties": "true"}}, "stringData": data}))
                .unwrap();
        secrets.create(&PostParams::default(), &secret).await.unwrap();
    }
    let operator = OperatorProcess::start_with_format(
        &env.kube.kubeconfig_path(),
        &format!("operator-secret-{format}"),
        &namespace,
        &bootstrap,
        format,
        &["--log-level", "trace", "--kafka-timeout-seconds", "2"],
    );
    let groups: Api<ConsumerGroup> = Api::namespaced(client.clone(), &namespace);
    let resets: Api<consumer_group_operator::crd::OffsetReset> = Api::namespaced(client.clone(), &namespace);
    for (name, _) in &contents {
        let spec = serde_json::json!({"groupId": testenv::unique_name("g"), "topics": [topic], "replicas": 1,
            "kafka": {"clientPropertiesSecretRef": {"name": name}},
            "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}});
        groups.create(&PostParams::default(), &common::consumer_group(name, spec)).await.unwrap();
        let reset = serde_json::from_value(serde_json::json!({"apiVersion": "kafka.operators.dev/v1alpha1",
            "kind": "OffsetReset", "metadata": {"name": name},
            "spec": {"consumerGroup": name, "target": {"toEarliest": true}}}))
        .unwrap();
        resets.create(&PostParams::default(), &reset).await.unwrap();
    }
    // Every group reports its fault, and every reset says why it waits.
    let reported = common::eventually(WAIT, || async {
        let mut seen = BTreeMap::new();
        for (name, _) in &contents {
            let group = groups.get(name).await.ok()?;
            let ready = group.status?.conditions.into_iter().find(|c| c.type_ == "Ready" && c.status == "False")?;
            let reset = resets.get(name).await.ok()?.status?.message?;
            seen.insert(name.to_string(), (format!("{}: {}", ready.reason, ready.message), reset));
        }
        Some(seen)
    })
    .await
    .expect("every ConsumerGroup and OffsetReset reports its connection problem");
    let metrics = common::http_get(operator.metrics_address().await, "/metrics").await;
    let mut texts = vec![operator.log(), metrics];
    texts.extend(
        groups.list(&ListParams::default()).await.unwrap().items.iter().map(|g| serde_json::to_string(g).unwrap()),
    );
    texts.extend(
        resets.list(&ListParams::default()).await.unwrap().items.iter().map(|r| serde_json::to_string(r).unwrap()),
    );
    let events: Api<Event> = Api::namespaced(client.clone(), &namespace);
    texts.extend(
        events.list(&ListParams::default()).await.unwrap().items.iter().map(|e| serde_json::to_string(e).unwrap()),
    );
    (vec![misspelled, jaas, refused, user, password], format.to_string(), reported, texts)
}

#[tokio::test]
async fn secret_values_never_reach_logs_status_events_or_metrics() {
    let (plain, json) = tokio::join!(secret_scenario("plain"), secret_scenario("json"));
    for (values, format, reported, texts) in [plain, json] {
        let condition = |name: &str| reported[name].0.clone();
        let reset_message = |name: &str| reported[name].1.clone();
        // A configuration error is named by key and reason, with its own reason and a way out.
        assert!(condition("misspelled").starts_with("KafkaConfigInvalid: "), "{}", condition("misspelled"));
        assert!(condition("misspelled").contains("\"sasl.pasword\"") && condition("misspelled").contains("misspelled"));
        assert!(condition("jaas").starts_with("KafkaConfigInvalid: "), "{}", condition("jaas"));
        assert!(
            condition("jaas").contains("sasl.mechanism")
                && condition("jaas").contains("sasl.username and sasl.password")
        );
        assert!(
            condition("refused").starts_with("KafkaConfigInvalid: ")
                && condition("refused").contains("security.protocol")
        );
        assert!(!condition("sasl").starts_with("KafkaConfigInvalid"), "valid keys reach Kafka: {}", condition("sasl"));
        for name in ["misspelled", "jaas", "refused", "sasl"] {
            let message = reset_message(name);
            assert!(message.starts_with("waiting: ") && message.contains("nothing was stopped"), "{name}: {message}");
            assert!(message.matches("configuration is invalid").count() <= 1, "the prefix once: {message}");
        }
        assert!(reset_message("jaas").contains("sasl.jaas.config"), "{}", reset_message("jaas"));
        // No value, plain or as Secret data (base64), in anything the operator wrote.
        for value in &values {
            for needle in [value.clone(), base64(value.as_bytes())] {
                for text in &texts {
                    assert!(
                        !text.contains(&needle),
                        "{format}: a secret value ({needle}) appeared in: {}",
                        &text[..text.len().min(2000)]
                    );
                }
            }
        }
        let log = &texts[0];
        assert!(log.contains("sasl.pasword"), "{format}: the trace log covered the failing reconciles");
        if format == "plain" {
            assert!(!log.contains('\u{1b}'), "no colour codes when stdout is a file");
        }
    }
}

/// The `_count` of a histogram in a /metrics text.
fn histogram_count(metrics: &str, name: &str) -> Option<u64> {
    let prefix = format!("{name}_count ");
    metrics.lines().find_map(|line| line.strip_prefix(&prefix)?.trim().parse().ok())
}

#[tokio::test]
async fn a_healthy_run_logs_no_error_or_warning() {
    let env = common::shared_env().await;
    let client = common::kube_client(&env.kube).await;
    common::install_crds(&client).await;
    let namespace = common::namespace(&client, "quiet").await;
    let bootstrap = env.kafka.bootstrap_servers();
    // A transactional topic, so the marker probe runs on every poll; and a plain one with lag.
    let transactional = create_topic(&bootstrap, 1).await;
    common::produce_transaction(&bootstrap, &transactional, 3);
    let plain = create_topic(&bootstrap, 2).await;
    common::produce(&bootstrap, &plain, &[5, 5], None);
    let kafka = consumer_group_operator::kafka::KafkaClient::new(&BTreeMap::from([(
        "bootstrap.servers".to_string(),
        bootstrap.clone(),
    )]))
    .unwrap();
    let drained = testenv::unique_name("drained");
    let tp = |topic: &str, partition| consumer_group_operator::kafka::TopicPartition { topic: topic.into(), partition };
    common::commit(&kafka, &drained, &BTreeMap::from([(tp(&transactional, 0), 3)])).await;
    let lagging = testenv::unique_name("lagging");
    common::commit(&kafka, &lagging, &BTreeMap::from([(tp(&plain, 0), 1), (tp(&plain, 1), 2)])).await;

    let operator = OperatorProcess::start(&env.kube.kubeconfig_path(), "quiet", &namespace, &bootstrap, &[]);
    let groups: Api<ConsumerGroup> = Api::namespaced(client.clone(), &namespace);
    let template = serde_json::json!({"spec": {"containers": [{"name": "c", "image": "i"}]}});
    let drained_spec = serde_json::json!({"groupId": drained, "topics": [transactional], "template": template,
        "scaling": {"minReplicas": 0, "maxReplicas": 1, "lagThreshold": 1, "pollIntervalSeconds": 5}});
    let lagging_spec = serde_json::json!({"groupId": lagging, "topics": [plain], "replicas": 1, "template": template});
    groups.create(&PostParams::default(), &common::consumer_group("drained", drained_spec)).await.unwrap();
    groups.create(&PostParams::default(), &common::consumer_group("lagging", lagging_spec)).await.unwrap();
    let settled = common::eventually(WAIT, || async {
        let drained = groups.get("drained").await.ok()?.status?.lag?;
        let lagging = groups.get("lagging").await.ok()?.status?.lag?;
        (drained.total == 0 && lagging.total == 7).then_some(())
    })
    .await;
    assert!(settled.is_some(), "both groups report their lag (the marker probe ran for the drained one)");
    // Twenty more polls of both groups, Kafka's and the apiserver's usual traffic meanwhile.
    let address = operator.metrics_address().await;
    let name = "consumergroup_operator_lag_collection_duration_seconds";
    let polled = histogram_count(&common::http_get(address, "/metrics").await, name).expect("polls are counted");
    let more = common::eventually(WAIT, || async {
        let now = histogram_count(&common::http_get(address, "/metrics").await, name)?;
        (now >= polled + 20).then_some(now)
    })
    .await;
    assert!(more.is_some(), "the operator keeps polling");
    let log = operator.log();
    let loud: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("\"level\":\"ERROR\"") || line.contains("\"level\":\"WARN\""))
        .collect();
    assert!(loud.is_empty(), "a healthy run logged:\n{}", loud.join("\n"));
    assert!(log.lines().count() > 3, "the log was read: {log}");
}

#[test]
fn flags_that_make_no_sense_are_refused_at_start_naming_the_flag() {
    for (flag, value) in
        [("--resync-seconds", "0"), ("--kafka-timeout-seconds", "0"), ("--lease-duration-seconds", "1")]
    {
        let out = Command::new(env!("CARGO_BIN_EXE_consumer-group-operator"))
            .args(["run", flag, value])
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag) && stderr.contains("not in"), "{flag} {value}: {stderr}");
    }
}

#[tokio::test]
async fn an_observer_whose_task_panics_is_replaced_and_its_groups_are_served() {
    let env = common::shared_env().await;
    let client = common::kube_client(&env.kube).await;
    common::install_crds(&client).await;
    let namespace = common::namespace(&client, "panic").await;
    let bootstrap = env.kafka.bootstrap_servers();
    let topic = create_topic(&bootstrap, 2).await;
    common::produce(&bootstrap, &topic, &[4, 4], None);
    let operator = OperatorProcess::start_with_env(
        &env.kube.kubeconfig_path(),
        "panic",
        &namespace,
        &bootstrap,
        "json",
        &[],
        &[("CGO_FAULT_PANIC_ONCE_AT", "observer-poll")],
    );
    let groups: Api<ConsumerGroup> = Api::namespaced(client.clone(), &namespace);
    let spec = serde_json::json!({"groupId": testenv::unique_name("g"), "topics": [topic], "replicas": 1,
        "autoOffsetReset": "earliest", "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}});
    groups.create(&PostParams::default(), &common::consumer_group("served", spec)).await.unwrap();
    let lag = common::eventually(WAIT, || async { groups.get("served").await.ok()?.status?.lag }).await;
    assert_eq!(lag.map(|l| l.total), Some(8), "the group is observed by the observer that replaced the dead one");
    assert!(
        operator.log().contains("a Kafka observer's polling task stopped; starting a new one"),
        "{}",
        operator.log()
    );
    let metrics = common::http_get(operator.metrics_address().await, "/metrics").await;
    assert!(metrics.contains("consumergroup_operator_task_restarts_total{task=\"observer\"} 1"), "{metrics}");
}

/// The sum of a counter's series in a /metrics text.
fn counter_sum(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(name) && line[name.len()..].starts_with(['{', ' ']))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_leader_cut_off_from_the_apiserver_stops_acting_before_a_follower_takes_over() {
    let env = common::shared_env().await;
    let client = common::kube_client(&env.kube).await;
    common::install_crds(&client).await;
    let namespace = common::namespace(&client, "partition").await;
    let bootstrap = env.kafka.bootstrap_servers();
    let topic = create_topic(&bootstrap, 3).await;
    let lease = testenv::unique_name("lease");
    let election =
        ["--leader-election", "--lease-name", &lease, "--lease-namespace", &namespace, "--lease-duration-seconds", "6"];
    // Operator a reaches the apiserver through a proxy the test can cut; b reaches it directly.
    let apiserver: std::net::SocketAddr = env.kube.url().trim_start_matches("https://").parse().unwrap();
    let proxy = testenv::proxy::TcpProxy::start(apiserver).unwrap();
    let through_proxy = std::env::temp_dir().join(format!("{}.kubeconfig", testenv::unique_name("proxied")));
    std::fs::write(&through_proxy, env.kube.kubeconfig_yaml_for(&format!("https://{}", proxy.address()))).unwrap();
    let a = OperatorProcess::start(&through_proxy, "operator-a", &namespace, &bootstrap, &election);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &namespace);
    let holder = common::eventually(WAIT, || lease_holder(&leases, &lease)).await;
    assert_eq!(holder.as_deref(), Some("operator-a"));
    let b = OperatorProcess::start(&env.kube.kubeconfig_path(), "operator-b", &namespace, &bootstrap, &election);
    let groups: Api<ConsumerGroup> = Api::namespaced(client.clone(), &namespace);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let spec = |id: &str| serde_json::json!({"groupId": id, "topics": [topic], "replicas": 1, "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}});
    groups
        .create(&PostParams::default(), &common::consumer_group("first", spec(&testenv::unique_name("g"))))
        .await
        .unwrap();
    assert!(common::eventually(WAIT, || async { deployments.get_opt("first").await.ok()? }).await.is_some());
    let (a_metrics, b_metrics) = (a.metrics_address().await, b.metrics_address().await);
    let metrics_of = |address| async move { common::http_get(address, "/metrics").await };
    assert!(metrics_of(a_metrics).await.contains("consumergroup_operator_leader 1"));

    // The partition: a can no longer renew. It stops acting before b may take over.
    let cut = Instant::now();
    proxy.cut();
    let stepped_down = common::eventually(WAIT, || async {
        metrics_of(a_metrics).await.contains("consumergroup_operator_leader 0").then(|| cut.elapsed())
    })
    .await
    .expect("the cut-off leader stops acting");
    let a_reconciles = counter_sum(&metrics_of(a_metrics).await, "consumergroup_operator_reconciles_total");
    let holder =
        common::eventually(WAIT, || async { lease_holder(&leases, &lease).await.filter(|h| h == "operator-b") }).await;
    let taken_over = cut.elapsed();
    assert_eq!(holder.as_deref(), Some("operator-b"));
    eprintln!("cut-off leader stopped after {stepped_down:.1?}, the follower took over after {taken_over:.1?}");
    // The order, by the clocks of both (one machine): a's log line saying it stopped, b's
    // acquireTime in the Lease.
    let log = a.log();
    let stopped_line =
        log.lines().find(|l| l.contains("could not be confirmed before it ends")).unwrap_or_else(|| panic!("{log}"));
    let stopped: serde_json::Value = serde_json::from_str(stopped_line).unwrap();
    let stopped: k8s_openapi::jiff::Timestamp = stopped["timestamp"].as_str().unwrap().parse().unwrap();
    let acquired = leases.get(&lease).await.unwrap().spec.unwrap().acquire_time.expect("b's acquireTime").0;
    assert!(stopped < acquired, "a stopped at {stopped}, after b acquired the Lease at {acquired}");

    // Healed: b leads and acts, a waits as a follower again and acts no more.
    proxy.heal();
    groups
        .create(&PostParams::default(), &common::consumer_group("second", spec(&testenv::unique_name("g"))))
        .await
        .unwrap();
    assert!(
        common::eventually(WAIT, || async { deployments.get_opt("second").await.ok()? }).await.is_some(),
        "the new leader acts"
    );
    let rejoined = common::eventually(WAIT, || async {
        (a.log().matches("waiting to become the leader").count() >= 2).then_some(())
    })
    .await;
    assert!(rejoined.is_some(), "a waits as a follower again: {}", a.log());
    let (status, body) = common::http_request(a_metrics, "/readyz").await;
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", "ok"), "a follower is ready");
    let b_reconciles = counter_sum(&metrics_of(b_metrics).await, "consumergroup_operator_reconciles_total");
    assert!(b_reconciles > 0.0, "b reconciles");
    let after = metrics_of(a_metrics).await;
    assert_eq!(
        counter_sum(&after, "consumergroup_operator_reconciles_total"),
        a_reconciles,
        "a acted after it stopped"
    );
    assert!(after.contains("consumergroup_operator_leader 0"));
    assert_eq!(lease_holder(&leases, &lease).await.as_deref(), Some("operator-b"));
    std::fs::remove_file(&through_proxy).ok();
}

#[tokio::test]
async fn the_metrics_endpoint_closes_a_connection_that_never_finishes_its_request() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let metrics = std::sync::Arc::new(consumer_group_operator::metrics::Metrics::new());
    let (address, server) =
        consumer_group_operator::metrics::serve("127.0.0.1:0".parse().unwrap(), metrics).await.unwrap();
    let server = tokio::spawn(server);
    // More idle connections than it serves at once, and one that starts a request and stops.
    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(tokio::net::TcpStream::connect(address).await.unwrap());
    }
    let mut slow = tokio::net::TcpStream::connect(address).await.unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: operator\r\n").await.unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(30), slow.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "a request whose headers never end holds its connection open");
    eprintln!("an unfinished request's connection was closed after {:.1?}", started.elapsed());
    // Probes still get through once the idle connections are dropped by the same timeout.
    let (status, body) = common::http_request(address, "/healthz").await;
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", "ok"));
    drop(idle);
    server.abort();
}

/// The notes of the `Scaled` Events of ConsumerGroup `name`.
async fn scaled_notes(events: &Api<Event>, name: &str) -> Vec<String> {
    let list = events.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default();
    list.into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name) && e.reason.as_deref() == Some("Scaled"))
        .filter_map(|e| e.message)
        .collect()
}

#[tokio::test]
async fn a_replica_write_is_refused_when_the_workload_changed_since_it_was_read() {
    let env = common::shared_env().await;
    let client = common::kube_client(&env.kube).await;
    common::install_crds(&client).await;
    let namespace = common::namespace(&client, "stale-write").await;
    let bootstrap = env.kafka.bootstrap_servers();
    let topic = create_topic(&bootstrap, 4).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let groups: Api<ConsumerGroup> = Api::namespaced(client.clone(), &namespace);
    let events: Api<Event> = Api::namespaced(client.clone(), &namespace);
    let theirs: Deployment = serde_json::from_value(serde_json::json!({"metadata": {"name": "theirs"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "theirs"}},
            "template": {"metadata": {"labels": {"app": "theirs"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}))
    .unwrap();
    deployments.create(&PostParams::default(), &theirs).await.unwrap();
    // Every write to an existing workload waits 3 s after its read: time for the test to change it.
    let operator = OperatorProcess::start_with_env(
        &env.kube.kubeconfig_path(),
        "stale-write",
        &namespace,
        &bootstrap,
        "json",
        &[],
        &[("CGO_FAULT_PAUSE_AT", "workload-write:3000")],
    );
    let paused_on = |subject: &str, after: usize| {
        let needle = format!("\"subject\":\"{subject}\"");
        let log = operator.log();
        log.lines().filter(|l| l.contains("fault injection: pausing") && l.contains(&needle)).count() > after
    };
    let scale_to = |name: &'static str, replicas: i32| {
        let deployments = deployments.clone();
        async move {
            let patch = kube::api::Patch::Merge(serde_json::json!({"spec": {"replicas": replicas}}));
            deployments.patch_scale(name, &kube::api::PatchParams::default(), &patch).await.unwrap();
        }
    };

    // A workload the operator scales: someone scales it to 3 between the operator's read (1) and
    // its write (2). The write from the older read is refused; the operator decides again.
    let spec = serde_json::json!({"groupId": testenv::unique_name("g"), "topics": [topic], "replicas": 2,
        "scaleTargetRef": {"kind": "Deployment", "name": "theirs"}});
    groups.create(&PostParams::default(), &common::consumer_group("scaled", spec)).await.unwrap();
    assert!(common::eventually(WAIT, || async { paused_on("theirs", 0).then_some(()) }).await.is_some());
    scale_to("theirs", 3).await;
    let notes = common::eventually(WAIT, || async {
        let notes = scaled_notes(&events, "scaled").await;
        (!notes.is_empty()).then_some(notes)
    })
    .await
    .expect("the workload is scaled");
    assert!(notes[0].starts_with("Scaled workload from 3 to 2"), "decided from what it overwrote: {notes:?}");
    assert!(operator.log().contains("the workload changed since it was read; deciding again"), "{}", operator.log());

    // The Deployment the operator owns: the same, when the spec asks for another count.
    let spec = serde_json::json!({"groupId": testenv::unique_name("g"), "topics": [topic], "replicas": 1,
        "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}});
    groups.create(&PostParams::default(), &common::consumer_group("owned", spec)).await.unwrap();
    let created = common::eventually(WAIT, || async { scaled_notes(&events, "owned").await.pop() }).await;
    assert_eq!(created.as_deref().map(|n| n.starts_with("Created workload with 1 replicas")), Some(true));
    let pauses = operator.log().lines().filter(|l| l.contains("\"subject\":\"owned\"")).count();
    let patch = kube::api::Patch::Merge(serde_json::json!({"spec": {"replicas": 2}}));
    groups.patch("owned", &kube::api::PatchParams::default(), &patch).await.unwrap();
    assert!(common::eventually(WAIT, || async { paused_on("owned", pauses).then_some(()) }).await.is_some());
    scale_to("owned", 3).await;
    let notes = common::eventually(WAIT, || async {
        let notes = scaled_notes(&events, "owned").await;
        (notes.len() > 1).then_some(notes)
    })
    .await
    .expect("the owned Deployment is scaled");
    assert!(notes.iter().any(|n| n.starts_with("Scaled workload from 3 to 2")), "{notes:?}");
    assert!(!notes.iter().any(|n| n.starts_with("Scaled workload from 1 to 2")), "{notes:?}");
    let replicas = |name: &'static str| {
        let deployments = deployments.clone();
        async move { deployments.get(name).await.ok()?.spec?.replicas }
    };
    assert_eq!((replicas("theirs").await, replicas("owned").await), (Some(2), Some(2)));
}

#[tokio::test]
async fn idle_connections_cannot_hold_the_metrics_server_and_are_closed_after_the_header_timeout() {
    use tokio::io::AsyncReadExt;
    let env = common::shared_env().await;
    let client = common::kube_client(&env.kube).await;
    common::install_crds(&client).await;
    let namespace = common::namespace(&client, "idle-http").await;
    let operator = OperatorProcess::start(
        &env.kube.kubeconfig_path(),
        "idle-http",
        &namespace,
        &env.kafka.bootstrap_servers(),
        &[],
    );
    let address = operator.metrics_address().await;
    // Every connection slot (32) held by a client that never sends a request.
    let mut idle = Vec::new();
    for _ in 0..32 {
        idle.push(tokio::net::TcpStream::connect(address).await.unwrap());
    }
    let opened = Instant::now();
    let served = tokio::spawn(async move {
        let body = common::http_get(address, "/metrics").await;
        (Instant::now(), body)
    });
    // The server closes each idle connection once its header timeout passes.
    let mut closed = Vec::new();
    for mut connection in idle {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(WAIT, connection.read(&mut byte)).await.expect("closed by the server");
        assert!(matches!(read, Ok(0) | Err(_)), "nothing is sent to a client that asked nothing");
        closed.push(Instant::now());
    }
    let first_closed = *closed.iter().min().unwrap();
    assert!(first_closed - opened >= Duration::from_secs(9), "closed after the 10 s header timeout, not before");
    let (answered, body) = tokio::time::timeout(WAIT, served).await.expect("served once a slot is free").unwrap();
    assert!(body.contains("consumergroup_operator_"), "{body}");
    assert!(answered >= first_closed, "the 33rd connection waited for a free slot");
}

/// Whether a thread of process `pid` waits in the kernel for the other end of a FIFO.
fn waits_on_a_fifo(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.flatten().any(|task| {
        let wchan = std::fs::read_to_string(task.path().join("wchan")).unwrap_or_default();
        matches!(wchan.trim(), "wait_for_partner" | "fifo_open")
    })
}

#[tokio::test]
async fn a_kafka_client_stuck_reading_its_certificate_stalls_only_its_own_connection() {
    let env = common::shared_env().await;
    let client = common::kube_client(&env.kube).await;
    common::install_crds(&client).await;
    let namespace = common::namespace(&client, "stuck-file").await;
    let bootstrap = env.kafka.bootstrap_servers();
    let topic = create_topic(&bootstrap, 2).await;
    // The operator's default connection reads its CA from a file whose read never completes (a
    // FIFO nobody writes, as a hung network filesystem would behave).
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("ca.fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let properties = dir.path().join("properties");
    std::fs::create_dir(&properties).unwrap();
    std::fs::write(properties.join("security.protocol"), "ssl").unwrap();
    std::fs::write(properties.join("ssl.ca.location"), fifo.to_str().unwrap()).unwrap();
    let operator = OperatorProcess::start(
        &env.kube.kubeconfig_path(),
        "stuck-file",
        &namespace,
        &bootstrap,
        &["--default-client-properties-dir", properties.to_str().unwrap()],
    );
    let groups: Api<ConsumerGroup> = Api::namespaced(client.clone(), &namespace);
    let template = serde_json::json!({"spec": {"containers": [{"name": "c", "image": "i"}]}});
    for name in ["stuck-a", "stuck-b", "stuck-c"] {
        let spec = serde_json::json!({"groupId": testenv::unique_name("g"), "topics": [topic], "template": template});
        groups.create(&PostParams::default(), &common::consumer_group(name, spec)).await.unwrap();
    }
    let pid = operator.child.id();
    let stuck = common::eventually(WAIT, || async { waits_on_a_fifo(pid).then_some(()) }).await;
    assert!(stuck.is_some(), "the default connection's client creation is blocked on the FIFO");

    // Meanwhile the process serves its probes and metrics, and a group on another connection
    // (its own Secret) is reconciled to Ready.
    let address = operator.metrics_address().await;
    let metrics = tokio::time::timeout(Duration::from_secs(10), common::http_get(address, "/metrics")).await;
    assert!(metrics.is_ok_and(|m| m.contains("consumergroup_operator_")), "/metrics answers");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let secret = serde_json::from_value(serde_json::json!({"metadata": {"name": "own",
        "labels": {"kafka.operators.dev/client-properties": "true"}}, "stringData": {"security.protocol": "plaintext"}}))
    .unwrap();
    secrets.create(&PostParams::default(), &secret).await.unwrap();
    let spec = serde_json::json!({"groupId": testenv::unique_name("g"), "topics": [topic], "template": template,
        "kafka": {"clientPropertiesSecretRef": {"name": "own"}}});
    groups.create(&PostParams::default(), &common::consumer_group("own", spec)).await.unwrap();
    let ready = common::eventually(WAIT, || async {
        let status = groups.get("own").await.ok()?.status?;
        status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True").then_some(())
    })
    .await;
    assert!(ready.is_some(), "a group on another connection is not held up");
    assert!(waits_on_a_fifo(pid), "still blocked: the group above was served meanwhile, not after");

    // The read ends (the writer closes without writing): the stuck groups report it.
    drop(std::fs::OpenOptions::new().write(true).open(&fifo).unwrap());
    let reported = common::eventually(WAIT, || async {
        let status = groups.get("stuck-a").await.ok()?.status?;
        status.conditions.iter().find(|c| c.type_ == "KafkaReachable" && c.status == "False").map(|c| c.message.clone())
    })
    .await;
    assert!(reported.is_some(), "the stuck groups report their connection problem once the read ends");
}
