//! Helpers shared by the integration tests: clients for the real apiserver started by `testenv`,
//! CRD installation, namespaces, polling.
#![allow(dead_code)] // each test binary uses a different subset

pub mod fake_kafka;

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// A client for the apiserver of `testenv`, authenticated as system:masters.
pub async fn kube_client(server: &testenv::KubeApiServer) -> Client {
    let kubeconfig = Kubeconfig::read_from(server.kubeconfig_path()).expect("read kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("kube config");
    Client::try_from(config).expect("kube client")
}

/// Server-side applies every CRD of the operator and waits until each is Established.
pub async fn install_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in consumer_group_operator::crd::all_crds() {
        let name = crd.metadata.name.clone().unwrap();
        api.patch(&name, &PatchParams::apply("tests").force(), &Patch::Apply(&crd)).await.expect("apply CRD");
        eventually(Duration::from_secs(30), || async {
            let crd = api.get(&name).await.ok()?;
            let established = crd.status?.conditions?.iter().any(|c| c.type_ == "Established" && c.status == "True");
            established.then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("CRD {name} never became Established"));
    }
}

/// Creates a fresh namespace for one test.
pub async fn namespace(client: &Client, prefix: &str) -> String {
    let name = testenv::unique_name(prefix);
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    api.create(&PostParams::default(), &ns).await.expect("create namespace");
    name
}

/// Polls `check` until it returns Some or the timeout passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Starts the shared servers from a blocking thread (they are started once per test binary).
pub async fn shared_env() -> &'static testenv::SharedEnv {
    tokio::task::spawn_blocking(testenv::shared).await.expect("start test environment")
}

/// `consumer-group-operator run` arguments for a test: one namespace, a 1 s resync (unless `extra`
/// sets `--resync-seconds`), lag in status
/// refreshed every poll (unless `extra` sets `--status-lag-interval-seconds`), metrics on a free
/// port, the given default Kafka; `extra` flags are appended.
pub fn run_args(namespace: &str, bootstrap: &str, extra: &[&str]) -> consumer_group_operator::cli::RunArgs {
    use clap::Parser;
    let mut argv = vec![
        "consumer-group-operator",
        "run",
        "--namespace",
        namespace,
        "--metrics-address",
        "127.0.0.1:0",
        "--default-bootstrap-servers",
        bootstrap,
    ];
    if !extra.contains(&"--resync-seconds") {
        argv.extend_from_slice(&["--resync-seconds", "1"]);
    }
    if !extra.contains(&"--status-lag-interval-seconds") {
        argv.extend_from_slice(&["--status-lag-interval-seconds", "1"]);
    }
    argv.extend_from_slice(extra);
    match consumer_group_operator::cli::Cli::parse_from(argv).command {
        consumer_group_operator::cli::Command::Run(args) => args,
        other => panic!("not a run command: {other:?}"),
    }
}

/// The operator running inside the test's runtime (with its metrics endpoint); stopped on drop.
pub struct Operator {
    task: tokio::task::JoinHandle<()>,
    pub metrics_address: std::net::SocketAddr,
}

impl Operator {
    pub async fn start(client: &Client, args: consumer_group_operator::cli::RunArgs) -> Operator {
        let metrics = std::sync::Arc::new(consumer_group_operator::metrics::Metrics::new());
        let (metrics_address, server) =
            consumer_group_operator::metrics::serve("127.0.0.1:0".parse().unwrap(), metrics.clone())
                .await
                .expect("bind the metrics endpoint");
        let client = client.clone();
        let task = tokio::spawn(async move {
            let server = tokio::spawn(server);
            consumer_group_operator::runtime::run_with_client(client, args, metrics, std::future::pending())
                .await
                .expect("operator run");
            server.abort();
        });
        Operator { task, metrics_address }
    }
}

impl Operator {
    /// ConsumerGroup reconciles run so far, from the operator's /metrics (not the deferred ones,
    /// which decided nothing).
    pub async fn reconciles(&self) -> u64 {
        let body = http_get(self.metrics_address, "/metrics").await;
        body.lines()
            .filter(|l| l.starts_with("consumergroup_operator_reconciles_total{") && !l.contains("deferred"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// Waits until `more` reconciles have run from now: "several reconciles later" as an observed
    /// fact with a deadline, not a sleep.
    pub async fn wait_reconciles(&self, more: u64) {
        let start = self.reconciles().await;
        let done =
            eventually(Duration::from_secs(60), || async { (self.reconciles().await >= start + more).then_some(()) })
                .await;
        assert!(done.is_some(), "{more} more reconciles did not happen within 60s");
    }

    /// The value of one unlabeled metric, if present.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let body = http_get(self.metrics_address, "/metrics").await;
        body.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }
}

/// GET over plain HTTP/1.1 (the metrics endpoint): (status line, body).
pub async fn http_request(address: std::net::SocketAddr, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let chunked = head.lines().any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
    let body = if chunked { dechunk(body) } else { body.to_string() };
    (head.lines().next().unwrap_or_default().to_string(), body)
}

/// The body of a chunked HTTP/1.1 response (a streamed /metrics scrape); panics on a malformed
/// or unterminated one, so a cut-off stream fails the test.
pub fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").expect("a chunk size line");
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).expect("a hex chunk size");
        if size == 0 {
            return body;
        }
        body.push_str(&after[..size]);
        rest = after[size..].strip_prefix("\r\n").expect("CRLF after a chunk");
    }
}

pub async fn http_get(address: std::net::SocketAddr, path: &str) -> String {
    let (status, body) = http_request(address, path).await;
    assert_eq!(status, "HTTP/1.1 200 OK", "{path}: {body}");
    body
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A ConsumerGroup manifest.
pub fn consumer_group(name: &str, spec: serde_json::Value) -> consumer_group_operator::crd::ConsumerGroup {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "kafka.operators.dev/v1alpha1", "kind": "ConsumerGroup", "metadata": {"name": name}, "spec": spec,
    }))
    .expect("a valid ConsumerGroup")
}

/// Real consumers of `group_id`, standing in for pods (no kubelet runs here): each polls on its own
/// thread, with client id `<prefix>-<i>`, and commits what it reads, until dropped.
pub struct Consumers {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Consumers {
    pub fn start(bootstrap: &str, group_id: &str, topic: &str, count: usize, prefix: &str) -> Consumers {
        use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..count)
            .map(|i| {
                let consumer: BaseConsumer = rdkafka::ClientConfig::new()
                    .set("bootstrap.servers", bootstrap)
                    .set("group.id", group_id)
                    .set("client.id", format!("{prefix}-{i}"))
                    .set("session.timeout.ms", "6000")
                    .set("auto.offset.reset", "earliest")
                    .set("enable.auto.commit", "false")
                    .create()
                    .expect("create a consumer");
                consumer.subscribe(&[topic]).expect("subscribe");
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
                            let _ = consumer.commit_message(&message, CommitMode::Async);
                        }
                    }
                    let _ = consumer.commit_consumer_state(CommitMode::Sync);
                    consumer.unsubscribe();
                })
            })
            .collect();
        Consumers { stop, threads }
    }
}

impl Drop for Consumers {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Kafka's own `kafka-features describe`: each feature's `FinalizedVersionLevel` as the tool prints
/// it (metadata.version by name, e.g. `4.1-IV1`; the others as numbers, features at 0 included),
/// and the tool's whole output for messages.
pub fn kafka_features(kafka: &testenv::Kafka) -> (std::collections::BTreeMap<String, String>, String) {
    let bootstrap = kafka.bootstrap_servers();
    let out = kafka
        .run_class("org.apache.kafka.tools.FeatureCommand", &["--bootstrap-server", &bootstrap, "describe"])
        .expect("run kafka-features describe");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let levels = text
        .lines()
        .filter_map(|line| {
            // Tab-separated up to Kafka 4.3, padded with spaces from 4.4 on.
            let field =
                |name: &str| line.split(&format!("{name}: ")).nth(1)?.split_whitespace().next().map(str::to_string);
            Some((field("Feature")?, field("FinalizedVersionLevel")?))
        })
        .collect();
    (levels, text)
}

/// Whether the broker serves KIP-848's consumer protocol (`group.version` finalized at 1 or more,
/// as `kafka-features describe` shows): Kafka 4 does by default, 3.9 does not. Tests of that
/// protocol say they do not apply elsewhere.
pub fn serves_kip_848(kafka: &testenv::Kafka) -> bool {
    let (levels, _) = kafka_features(kafka);
    let serves = levels.get("group.version").is_some_and(|level| level != "0");
    if !serves {
        eprintln!(
            "this broker does not serve KIP-848's consumer protocol (group.version 0): its part of the test does not apply"
        );
    }
    serves
}

/// Produces `counts[p]` records to partition p, stamped `base_ms + i * 1000` when `base_ms` is set.
pub fn produce(bootstrap: &str, topic: &str, counts: &[usize], base_ms: Option<i64>) {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let producer: BaseProducer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", bootstrap).create().expect("create a producer");
    for (partition, &count) in counts.iter().enumerate() {
        for i in 0..count {
            let payload = format!("p{partition}-m{i}");
            let mut record = BaseRecord::<(), _>::to(topic).partition(partition as i32).payload(&payload);
            if let Some(base) = base_ms {
                record = record.timestamp(base + i as i64 * 1000);
            }
            producer.send(record).expect("enqueue a record");
        }
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

/// The request counts of `client` once librdkafka's statistics stopped changing (they are emitted
/// every `statistics.interval.ms`; tests and benchmarks set 100 ms). Panics after a minute.
pub async fn settled_requests(
    client: &consumer_group_operator::kafka::KafkaClient,
) -> std::collections::BTreeMap<String, i64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut last = client.request_counts();
    loop {
        // Two statistics intervals apart: unchanged counts mean no request was in flight.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let now = client.request_counts();
        if now == last && !now.is_empty() {
            return now;
        }
        assert!(tokio::time::Instant::now() < deadline, "request counts never settled: {now:?}");
        last = now;
    }
}

/// A memory figure of this process from /proc/self/status (`VmRSS`: now, `VmHWM`: peak), in MiB.
pub fn memory_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim_start_matches(':').trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Commits offsets for a group from outside, as an admin, retrying while the broker does not know
/// a topic created a moment ago yet (it learns of new topics shortly after CreateTopics answers).
/// Panics after a minute.
pub async fn commit(
    client: &consumer_group_operator::kafka::KafkaClient,
    group: &str,
    offsets: &std::collections::BTreeMap<consumer_group_operator::kafka::TopicPartition, i64>,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match client.alter_consumer_group_offsets(group, offsets, Duration::from_secs(30)).await {
            Ok(()) => return,
            Err(error) if tokio::time::Instant::now() > deadline => {
                panic!("the commit of {group} was never accepted: {error}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// A new topic with a unique name on the test broker.
pub async fn create_topic(bootstrap: &str, partitions: i32) -> String {
    let topic = testenv::unique_name("topic");
    let client = consumer_group_operator::kafka::KafkaClient::new(&std::collections::BTreeMap::from([(
        "bootstrap.servers".to_string(),
        bootstrap.to_string(),
    )]))
    .expect("a Kafka client");
    client.create_topic(&topic, partitions, 1, Duration::from_secs(30)).await.expect("create a topic");
    topic
}

/// Writes `count` messages to `topic` at once (see `testenv::workload::produce_backlog`), off the
/// test's runtime thread.
pub async fn produce_backlog(bootstrap: &str, topic: &str, count: u64) {
    let (bootstrap, topic) = (bootstrap.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || testenv::workload::produce_backlog(&bootstrap, &topic, count))
        .await
        .expect("the backlog task")
        .expect("produce the backlog");
}

/// A client acting as `user` (a user name or `system:serviceaccount:<ns>:<name>`): RBAC applies
/// to it, where the tests' own client is system:masters.
pub async fn client_as(server: &testenv::KubeApiServer, user: &str) -> Client {
    let kubeconfig = Kubeconfig::read_from(server.kubeconfig_path()).unwrap();
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
    config.auth_info.impersonate = Some(user.to_string());
    Client::try_from(config).unwrap()
}

/// This process's resident memory and its peak so far, in bytes.
pub fn resident_and_peak() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib = |field: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(field)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
    };
    (kib("VmRSS:"), kib("VmHWM:"))
}

/// `count` records to partition 0 of `topic` in one committed transaction: the log then ends one
/// past the last record, at its commit marker.
pub fn produce_transaction(bootstrap: &str, topic: &str, count: usize) {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("transactional.id", testenv::unique_name("txn"))
        .create()
        .unwrap();
    producer.init_transactions(Duration::from_secs(30)).unwrap();
    producer.begin_transaction().unwrap();
    for i in 0..count {
        producer.send(BaseRecord::<(), _>::to(topic).partition(0).payload(&format!("m{i}"))).unwrap();
    }
    producer.commit_transaction(Duration::from_secs(30)).unwrap();
}
