//! The external metrics API through the real kube-apiserver's aggregation layer: an APIService
//! points at the operator, `kubectl get --raw` reads a ConsumerGroup's lag as an HPA would, RBAC
//! decides who may, a client without the front-proxy certificate is refused, and Kubernetes' own
//! HPA controller (kube-controller-manager, running only that controller) scales a ConsumerGroup
//! on it, with the partition cap holding.

mod common;

use std::time::Duration;

use consumer_group_operator::crd::ConsumerGroup;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;

const WAIT: Duration = Duration::from_secs(90);

/// Runs kubectl off the test's runtime thread, which also runs the operator's server.
async fn kubectl(env: &'static testenv::SharedEnv, args: &[&str]) -> (bool, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = env.kube.kubectl(&args.iter().map(String::as_str).collect::<Vec<_>>()).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn an_hpa_reads_consumer_group_lag_through_the_aggregation_layer_and_rbac_decides_who_may() {
    let env = common::shared_env().await;
    let client = common::kube_client(&env.kube).await;
    common::install_crds(&client).await;
    let namespace = common::namespace(&client, "ext-metrics").await;
    let bootstrap = env.kafka.bootstrap_servers();

    // The operator's serving certificate, for the name the aggregator checks: <service>.<namespace>.svc.
    let service = "cgo-external-metrics";
    let host = format!("{service}.{namespace}.svc");
    let (ca, certificate, key) = testenv::serving_certificate(&[&host]).unwrap();
    let tls = tempfile::tempdir().unwrap();
    std::fs::write(tls.path().join("tls.crt"), certificate).unwrap();
    std::fs::write(tls.path().join("tls.key"), key).unwrap();
    let port = testenv::process::free_port();
    let address = format!("127.0.0.1:{port}");
    let tls_dir = tls.path().display().to_string();
    let args = common::run_args(
        &namespace,
        &bootstrap,
        &["--external-metrics-address", &address, "--external-metrics-tls-dir", &tls_dir],
    );
    let _operator = common::Operator::start(&client, args).await;

    // No kube-proxy here: an ExternalName Service makes the aggregator dial localhost.
    let objects = serde_json::json!([
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": service, "namespace": namespace},
         "spec": {"type": "ExternalName", "externalName": "localhost", "ports": [{"port": port, "protocol": "TCP"}]}},
        {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": {"name": "v1beta1.external.metrics.k8s.io"},
         "spec": {"group": "external.metrics.k8s.io", "version": "v1beta1", "groupPriorityMinimum": 100, "versionPriority": 100,
                  "service": {"namespace": namespace, "name": service, "port": port},
                  "caBundle": base64(ca.as_bytes())}},
    ]);
    for object in objects.as_array().unwrap() {
        let object: DynamicObject = serde_json::from_value(object.clone()).unwrap();
        let types = object.types.clone().unwrap();
        let (group, version) = types.api_version.split_once('/').unwrap_or(("", &types.api_version));
        let resource = ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(group, version, &types.kind));
        let api: Api<DynamicObject> = match &object.metadata.namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        let name = object.metadata.name.clone().unwrap();
        api.patch(&name, &PatchParams::apply("tests").force(), &Patch::Apply(&object)).await.unwrap();
    }

    // A ConsumerGroup with lag: a backlog nobody reads.
    let topic = common::create_topic(&bootstrap, 3).await;
    common::produce_backlog(&bootstrap, &topic, 300).await;
    let groups: Api<ConsumerGroup> = Api::namespaced(client.clone(), &namespace);
    let mut group = common::consumer_group(
        "billing",
        serde_json::json!({"groupId": testenv::unique_name("g"), "topics": [topic], "autoOffsetReset": "earliest",
            "replicas": 1, "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}),
    );
    group.metadata.labels = Some([("team".to_string(), "payments".to_string())].into());
    groups.create(&PostParams::default(), &group).await.unwrap();
    let lag = common::eventually(WAIT, || async { Some(groups.get("billing").await.ok()?.status?.lag?.total) })
        .await
        .expect("the ConsumerGroup's lag in status");
    assert_eq!(lag, 300);

    // As the HPA controller asks (system:masters here): through the apiserver, by label.
    let path = format!(
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/kafka_consumergroup_lag?labelSelector=team%3Dpayments"
    );
    let last_error = std::cell::RefCell::new(String::new());
    let read = common::eventually(WAIT, || async {
        let (ok, out, error) = kubectl(env, &["get", "--raw", &path]).await;
        *last_error.borrow_mut() = error;
        ok.then(|| serde_json::from_str::<serde_json::Value>(&out).unwrap())
    })
    .await;
    let Some(read) = read else {
        let (_, status, _) =
            kubectl(env, &["get", "apiservice", "v1beta1.external.metrics.k8s.io", "-o", "jsonpath={.status}"]).await;
        panic!("the APIService never answered: {}; its status: {status}", last_error.borrow());
    };
    assert_eq!(read["kind"], "ExternalMetricValueList", "{read}");
    let items = read["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{read}");
    assert_eq!(items[0]["value"], "300", "{read}");
    assert_eq!(items[0]["metricLabels"]["consumergroup"], "billing", "{read}");
    let (_, other, _) = kubectl(env, &["get", "--raw", &path.replace("team%3Dpayments", "team%3Dshipping")]).await;
    assert_eq!(serde_json::from_str::<serde_json::Value>(&other).unwrap()["items"], serde_json::json!([]));
    let (ok, discovery, _) = kubectl(env, &["get", "--raw", "/apis/external.metrics.k8s.io/v1beta1"]).await;
    assert!(ok && discovery.contains("kafka_consumergroup_drain_seconds"), "{discovery}");

    // Someone without RBAC on external metrics is refused by the operator's own authorization
    // check; with a Role allowing it, served.
    let user = "reader-of-nothing";
    let (ok, _, refused) = kubectl(env, &["get", "--raw", &path, "--as", user]).await;
    assert!(!ok && refused.to_lowercase().contains("forbidden"), "{refused}");
    let role = serde_json::json!([
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "lag-reader", "namespace": namespace},
         "rules": [{"apiGroups": ["external.metrics.k8s.io"], "resources": ["*"], "verbs": ["list"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "lag-reader", "namespace": namespace},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "lag-reader"},
         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]},
    ]);
    let file = tls.path().join("rbac.json");
    std::fs::write(
        &file,
        serde_json::to_string(&serde_json::json!({"apiVersion": "v1", "kind": "List", "items": role})).unwrap(),
    )
    .unwrap();
    let (ok, _, error) = kubectl(env, &["apply", "-f", &file.display().to_string()]).await;
    assert!(ok, "{error}");
    let allowed = common::eventually(WAIT, || async {
        let (ok, out, _) = kubectl(env, &["get", "--raw", &path, "--as", user]).await;
        ok.then_some(out)
    })
    .await;
    assert!(allowed.is_some_and(|out| out.contains("\"value\":\"300\"")), "the Role lets the user read the lag");

    // Straight to the operator without the front-proxy certificate: refused, so request headers
    // naming a user are never believed.
    let refusal = direct_request(&ca, &host, port, &path).await.expect_err("served without a client certificate");
    assert!(refusal.contains("CertificateRequired"), "{refusal}");

    // End to end: Kubernetes' own HPA controller reads the metric through the aggregation layer
    // and scales the ConsumerGroup through its scale subresource; the operator still caps the
    // Deployment at the 3 partitions.
    let _controller_manager = {
        let kube = &env.kube;
        tokio::task::spawn_blocking(move || {
            testenv::kube::start_controller_manager(
                kube,
                &["horizontalpodautoscaling"],
                &["--horizontal-pod-autoscaler-sync-period=2s"],
            )
        })
        .await
        .unwrap()
        .unwrap()
    };
    let hpa = serde_json::json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "billing", "namespace": namespace},
        "spec": {"scaleTargetRef": {"apiVersion": "kafka.operators.dev/v1alpha1", "kind": "ConsumerGroup", "name": "billing"},
            "minReplicas": 1, "maxReplicas": 20,
            "metrics": [{"type": "External", "external": {
                "metric": {"name": "kafka_consumergroup_lag", "selector": {"matchLabels": {"consumergroup": "billing"}}},
                "target": {"type": "AverageValue", "averageValue": "50"}}}]}});
    std::fs::write(&file, hpa.to_string()).unwrap();
    let (ok, _, error) = kubectl(env, &["apply", "-f", &file.display().to_string()]).await;
    assert!(ok, "{error}");
    // 300 messages of lag at 50 per consumer: the HPA asks for 6 (in steps), more than 3 partitions.
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(client.clone(), &namespace);
    let scaled = common::eventually(WAIT, || async {
        let group = groups.get("billing").await.ok()?;
        let capped =
            group.status?.conditions.into_iter().find(|c| c.type_ == "ReplicasCapped" && c.status == "True")?;
        let deployment = deployments.get("billing").await.ok()?.spec?.replicas?;
        (group.spec.replicas > 3 && deployment == 3).then_some((group.spec.replicas, capped.message))
    })
    .await;
    let Some((requested, message)) = scaled else {
        let (_, described, _) = kubectl(env, &["describe", "hpa", "billing", "-n", &namespace]).await;
        panic!("the HPA did not scale the ConsumerGroup past its partitions:\n{described}");
    };
    assert!(message.contains(&format!("requested {requested} replicas, allowed 3")), "{message}");

    // The serving certificate is renewed under the running operator, as `helm upgrade` renews the
    // Secret and the APIService's caBundle together: the API answers again with the new one.
    let (new_ca, new_certificate, new_key) = testenv::serving_certificate(&[&host]).unwrap();
    std::fs::write(tls.path().join("tls.key"), new_key).unwrap();
    std::fs::write(tls.path().join("tls.crt"), new_certificate).unwrap();
    let apiservices = Api::<DynamicObject>::all_with(
        client.clone(),
        &ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk("apiregistration.k8s.io", "v1", "APIService")),
    );
    let renewed = Patch::Merge(serde_json::json!({"spec": {"caBundle": base64(new_ca.as_bytes())}}));
    apiservices.patch("v1beta1.external.metrics.k8s.io", &PatchParams::default(), &renewed).await.unwrap();
    let answered = common::eventually(WAIT, || async {
        let (ok, out, error) = kubectl(env, &["get", "--raw", &path]).await;
        *last_error.borrow_mut() = error;
        ok.then(|| serde_json::from_str::<serde_json::Value>(&out).unwrap())
    })
    .await;
    assert!(
        answered.is_some_and(|read| read["items"][0]["value"] == "300"),
        "after the renewal: {}",
        last_error.borrow()
    );
}

/// An HTTPS request to the operator that trusts its CA but presents no client certificate and
/// claims to be an administrator in the request headers: the response, or why there was none.
async fn direct_request(ca: &str, host: &str, port: u16, path: &str) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls::pki_types::CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(certificate.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).unwrap();
    let mut tls = connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nX-Remote-User: system:admin\r\nX-Remote-Group: system:masters\r\nConnection: close\r\n\r\n"
    );
    tls.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut response))
        .await
        .map_err(|_| "no answer within 10 s".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

/// Standard base64 (RFC 4648, padded), as the API carries a caBundle.
fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
