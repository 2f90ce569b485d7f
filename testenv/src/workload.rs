//! A consumer workload that really runs, without a kubelet: [`ConsumerFleet`] keeps as many real
//! Kafka consumers in a group as a Deployment asks for, each processing at a set rate and
//! committing after processing, leaving the group when scaled down; [`Producer`] writes at a set
//! rate. With the operator scaling the Deployment, this closes the loop
//! operator -> Deployment -> consumers -> lag -> operator, in tests, benchmarks and the demo.
//!
//! The fleet follows the Deployment through `kubectl get --watch` (one long-lived process, the
//! apiserver's own watch), and reads the group id, topics and bootstrap servers from the
//! environment the operator injects into the pod template, as a pod would.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer as _, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};

/// How the fleet's consumers behave.
#[derive(Clone, Debug)]
pub struct ConsumerSettings {
    /// Messages each consumer processes per second at most (its capacity).
    pub messages_per_second: f64,
    /// Added to every consumer's librdkafka settings (e.g. `group.protocol=consumer`).
    pub extra: Vec<(String, String)>,
}

/// Where the fleet finds its Deployment.
#[derive(Clone, Debug)]
pub struct DeploymentRef {
    pub kubectl: PathBuf,
    pub kubeconfig: PathBuf,
    pub namespace: String,
    pub name: String,
}

impl DeploymentRef {
    fn kubectl(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.kubectl);
        command
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(["--namespace", &self.namespace])
            .args(args);
        command
    }

    /// The pod template's value of an environment variable of the first container.
    fn env(&self, name: &str) -> Result<String> {
        let path = format!("jsonpath={{.spec.template.spec.containers[0].env[?(@.name==\"{name}\")].value}}");
        let out = self.kubectl(&["get", "deployment", &self.name, "-o", &path]).output()?;
        let value = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() || value.is_empty() {
            bail!("deployment {} has no {name}: {}", self.name, String::from_utf8_lossy(&out.stderr));
        }
        Ok(value)
    }
}

struct Running {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// Real consumers standing in for a Deployment's pods. Stops them all when dropped.
pub struct ConsumerFleet {
    stop: Arc<AtomicBool>,
    watcher: Option<JoinHandle<()>>,
    watch_process: Arc<Mutex<Option<std::process::Child>>>,
    running: Arc<AtomicUsize>,
    processed: Arc<AtomicU64>,
    /// Consumers times seconds, integrated as the fleet changes size.
    replica_millis: Arc<AtomicU64>,
}

impl ConsumerFleet {
    /// Follows `deployment`'s replicas until dropped. Fails if the Deployment or the operator's
    /// environment variables (KAFKA_BOOTSTRAP_SERVERS, KAFKA_GROUP_ID, KAFKA_TOPICS) are missing.
    pub fn start(deployment: DeploymentRef, settings: ConsumerSettings) -> Result<ConsumerFleet> {
        let bootstrap = deployment.env("KAFKA_BOOTSTRAP_SERVERS")?;
        let group = deployment.env("KAFKA_GROUP_ID")?;
        let topics: Vec<String> = deployment.env("KAFKA_TOPICS")?.split(',').map(str::to_string).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let running = Arc::new(AtomicUsize::new(0));
        let processed = Arc::new(AtomicU64::new(0));
        let replica_millis = Arc::new(AtomicU64::new(0));
        let watch_process: Arc<Mutex<Option<std::process::Child>>> = Arc::default();
        let watcher = {
            let (stop, running, processed, replica_millis, watch_process) =
                (stop.clone(), running.clone(), processed.clone(), replica_millis.clone(), watch_process.clone());
            std::thread::Builder::new().name(format!("fleet-{}", deployment.name)).spawn(move || {
                let mut consumers: Vec<Running> = Vec::new();
                let mut since = Instant::now();
                let mut started = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    let child = deployment
                        .kubectl(&[
                            "get",
                            "deployment",
                            &deployment.name,
                            "--watch",
                            "-o",
                            "jsonpath={.spec.replicas}{\"\\n\"}",
                        ])
                        .stdout(Stdio::piped())
                        .stderr(Stdio::null())
                        .spawn();
                    let Ok(mut child) = child else { return };
                    let stdout = child.stdout.take().expect("piped stdout");
                    *watch_process.lock().expect("watch lock") = Some(child);
                    for line in std::io::BufReader::new(stdout).lines() {
                        let Ok(line) = line else { break };
                        let Ok(wanted) = line.trim().parse::<usize>() else { continue };
                        let now = Instant::now();
                        let elapsed = now.duration_since(since).as_millis() as u64;
                        replica_millis.fetch_add(elapsed * consumers.len() as u64, Ordering::SeqCst);
                        since = now;
                        while consumers.len() < wanted {
                            let client_id = format!("{}-{started}", deployment.name);
                            started += 1;
                            consumers
                                .push(spawn_consumer(&bootstrap, &group, &topics, &client_id, &settings, &processed));
                        }
                        // The newest go first, as a Deployment scales down its newest pods.
                        for gone in consumers.drain(wanted..).collect::<Vec<_>>() {
                            gone.stop.store(true, Ordering::SeqCst);
                            let _ = gone.thread.join();
                        }
                        running.store(consumers.len(), Ordering::SeqCst);
                    }
                    if let Some(mut child) = watch_process.lock().expect("watch lock").take() {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                }
                let elapsed = since.elapsed().as_millis() as u64;
                replica_millis.fetch_add(elapsed * consumers.len() as u64, Ordering::SeqCst);
                for consumer in &consumers {
                    consumer.stop.store(true, Ordering::SeqCst);
                }
                for consumer in consumers {
                    let _ = consumer.thread.join();
                }
                running.store(0, Ordering::SeqCst);
            })?
        };
        Ok(ConsumerFleet { stop, watcher: Some(watcher), watch_process, running, processed, replica_millis })
    }

    /// Consumers running now.
    pub fn consumers(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    /// Messages processed (and committed) by every consumer so far.
    pub fn processed(&self) -> u64 {
        self.processed.load(Ordering::SeqCst)
    }

    /// Consumer-seconds spent until the fleet last changed size.
    pub fn replica_seconds(&self) -> f64 {
        self.replica_millis.load(Ordering::SeqCst) as f64 / 1000.0
    }
}

impl Drop for ConsumerFleet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(mut child) = self.watch_process.lock().expect("watch lock").take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(watcher) = self.watcher.take() {
            let _ = watcher.join();
        }
    }
}

/// One consumer thread: polls, processes at most `messages_per_second` (the pause is the
/// processing time it stands for), commits what it processed every 200 ms and when it stops, then
/// closes, which leaves the group at once.
fn spawn_consumer(
    bootstrap: &str,
    group: &str,
    topics: &[String],
    client_id: &str,
    settings: &ConsumerSettings,
    processed: &Arc<AtomicU64>,
) -> Running {
    let stop = Arc::new(AtomicBool::new(false));
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("client.id", client_id)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .set("partition.assignment.strategy", "cooperative-sticky");
    for (key, value) in &settings.extra {
        config.set(key, value);
    }
    let topics = topics.to_vec();
    let per_message = Duration::from_secs_f64(1.0 / settings.messages_per_second.max(0.001));
    let (stop_flag, processed) = (stop.clone(), processed.clone());
    let thread = std::thread::spawn(move || {
        let consumer: BaseConsumer = config.create().expect("create a consumer");
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names).expect("subscribe");
        let mut done = TopicPartitionList::new();
        let mut last_commit = Instant::now();
        let mut next = Instant::now();
        while !stop_flag.load(Ordering::SeqCst) {
            if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                }
                // No catching up in bursts after an idle spell: the rate is a ceiling.
                next = next.max(now) + per_message;
                let _ = done.add_partition_offset(
                    message.topic(),
                    message.partition(),
                    Offset::Offset(message.offset() + 1),
                );
                processed.fetch_add(1, Ordering::SeqCst);
            }
            if last_commit.elapsed() >= Duration::from_millis(200) && done.count() > 0 {
                let _ = consumer.commit(&done, CommitMode::Async);
                done = TopicPartitionList::new();
                last_commit = Instant::now();
            }
        }
        if done.count() > 0 {
            let _ = consumer.commit(&done, CommitMode::Sync);
        }
        consumer.unsubscribe();
        drop(consumer);
    });
    Running { stop, thread }
}

/// Writes to a topic at a set rate until dropped.
pub struct Producer {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Producer {
    /// `messages_per_second` spread over the topic's partitions (keyless, sticky batches).
    pub fn start(bootstrap: &str, topic: &str, messages_per_second: f64) -> Result<Producer> {
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("linger.ms", "20")
            .set("partitioner", "murmur2_random")
            .create()
            .context("create a producer")?;
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (stop_flag, counter, topic) = (stop.clone(), sent.clone(), topic.to_string());
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let mut key = 0u64;
            while !stop_flag.load(Ordering::SeqCst) {
                // Whatever the schedule says is due by now, then a short pause.
                let due = (started.elapsed().as_secs_f64() * messages_per_second) as u64;
                while counter.load(Ordering::SeqCst) < due {
                    let id = key.to_string();
                    key += 1;
                    let record = BaseRecord::<str, str>::to(&topic).key(&id).payload("m");
                    if producer.send(record).is_err() {
                        let _ = producer.flush(Duration::from_secs(1));
                        continue;
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = producer.flush(Duration::from_secs(10));
        });
        Ok(Producer { stop, sent, thread: Some(thread) })
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Writes `count` messages to `topic` at once (a backlog), spread over its partitions.
pub fn produce_backlog(bootstrap: &str, topic: &str, count: u64) -> Result<()> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .create()
        .context("create a producer")?;
    for key in 0..count {
        let id = key.to_string();
        loop {
            match producer.send(BaseRecord::<str, str>::to(topic).key(&id).payload("m")) {
                Ok(()) => break,
                Err(_) => {
                    producer.flush(Duration::from_secs(1)).ok();
                }
            }
        }
    }
    producer.flush(Duration::from_secs(30)).context("flush the backlog")?;
    Ok(())
}

/// A [`DeploymentRef`] for the kubeconfig and kubectl of a running apiserver.
pub fn deployment(kubectl: &Path, kubeconfig: &Path, namespace: &str, name: &str) -> DeploymentRef {
    DeploymentRef {
        kubectl: kubectl.to_path_buf(),
        kubeconfig: kubeconfig.to_path_buf(),
        namespace: namespace.to_string(),
        name: name.to_string(),
    }
}
