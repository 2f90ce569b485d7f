//! `make bench` (fourth part): many ConsumerGroups on one operator. BENCH_SCALE_GROUPS (default
//! 1,000) ConsumerGroups over BENCH_SCALE_TOPICS 12-partition topics (default 100), the release
//! operator binary with its default flags, sampled for BENCH_SCALE_SECONDS (default 120: two lag
//! refreshes of `--status-lag-interval-seconds`, which a 90 s window would count once or twice)
//! once all are Ready: first idle, then with lag changing on every partition (a producer writing
//! to all of them), from when every status shows its lag leave zero (that transition's writes
//! are printed on their own). Figures: RSS (its peak within the window) and CPU of the operator
//! process, reconciles, status writes (and which of them changed a verdict) and Deployment writes
//! per ConsumerGroup per minute (counted by watches on the real apiserver), and Kafka requests
//! per 30 s, one resync (from the operator's /metrics, with librdkafka statistics every second).
//!
//! BENCH_BASELINE_BIN, when set, names another operator binary (`scripts/baseline.sh` builds the
//! commit before the per-cluster observer) measured the same way in the same run, for ratios.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use consumer_group_operator::crd::ConsumerGroup;
use consumer_group_operator::kafka::{IsolationLevel, OffsetSpec, TopicPartition};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::watcher;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// (utime + stime in clock ticks, VmRSS KiB, VmHWM KiB) of a process.
fn process_figures(pid: u32) -> (u64, u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = fields.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim_start_matches(':').trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks, kib("VmRSS"), kib("VmHWM"))
}

/// Starts a new high-water mark of the process's RSS (VmHWM), so that a window's peak is its own,
/// not start-up's.
fn reset_peak(pid: u32) {
    // "5" resets the peak RSS (Linux 4.0+); without it the peak is the process's since start.
    if let Err(error) = std::fs::write(format!("/proc/{pid}/clear_refs"), "5") {
        eprintln!("could not reset the peak RSS of {pid}: {error}; peaks are since the process started");
    }
}

/// Stops the operator's whole process group (under a wrapper, such as a profiler's script, the
/// operator is the wrapper's child): SIGTERM, so a profiler sees a normal exit, then SIGKILL
/// after 30 s.
fn stop_process_group(leader: &mut std::process::Child) {
    let group = -(leader.id() as i32);
    // SAFETY: kill has no memory preconditions; the group is the one spawned for the operator.
    unsafe { libc::kill(group, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if leader.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: as above.
    unsafe { libc::kill(group, libc::SIGKILL) };
    let _ = leader.wait();
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// What a person or a GitOps tool acts on in a ConsumerGroup's status; a write that changes none
/// of it only refreshes the lag figures.
fn verdict(group: &ConsumerGroup) -> String {
    let status = group.status.clone().unwrap_or_default();
    let conditions: Vec<_> = status.conditions.iter().map(|c| (&c.type_, &c.status, &c.reason)).collect();
    let lag = status.lag.as_ref().map(|l| (l.health.clone(), l.total == 0));
    format!("{conditions:?} {lag:?} {:?} {:?} {:?}", status.group_state, status.member_count, status.replicas)
}

/// Writes counted by a watch on the real apiserver.
struct Writes {
    /// MODIFIED events of the kind in the namespace.
    all: Arc<AtomicU64>,
    /// Those that changed the object's `verdict`.
    changed_verdict: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

/// Counts writes of a kind in a namespace (status writes, Deployment writes), and among them those
/// that changed `verdict` of the object.
fn count_writes<K>(api: Api<K>, verdict: impl Fn(&K) -> String + Send + 'static) -> Writes
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
{
    let (all, changed_verdict) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (counter, changed_counter) = (all.clone(), changed_verdict.clone());
    let mut last: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    let task = tokio::spawn(watcher(api, watcher::Config::default()).for_each(move |event| {
        match event {
            Ok(watcher::Event::Apply(object)) => {
                counter.fetch_add(1, Ordering::Relaxed);
                let now = verdict(&object);
                if last.insert(object.name_any(), now.clone()).is_some_and(|before| before != now) {
                    changed_counter.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(watcher::Event::InitApply(object)) => {
                last.insert(object.name_any(), verdict(&object));
            }
            _ => {}
        }
        std::future::ready(())
    }));
    Writes { all, changed_verdict, task }
}

/// Sums `consumergroup_operator_kafka_requests_total` by request type, and the reconcile count.
async fn operator_counters(address: std::net::SocketAddr) -> (BTreeMap<String, f64>, f64) {
    let body = common::http_get(address, "/metrics").await;
    let mut requests = BTreeMap::new();
    let mut reconciles = 0.0;
    for line in body.lines() {
        let value = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        if let Some(rest) = line.strip_prefix("consumergroup_operator_kafka_requests_total{request=\"") {
            let request = rest.split('"').next().unwrap_or_default().to_string();
            *requests.entry(request).or_default() += value;
        } else if line.starts_with("consumergroup_operator_reconciles_total{") && !line.contains("deferred") {
            // Deferred ones (the cache not showing the last status write yet) decided nothing.
            reconciles += value;
        }
    }
    (requests, reconciles)
}

struct Window {
    rss_start_mib: f64,
    rss_end_mib: f64,
    rss_peak_mib: f64,
    cpu_cores: f64,
    reconciles_per_group_minute: f64,
    status_writes_per_group_minute: f64,
    /// Those of the status writes that changed a condition, the health verdict, lag reaching or
    /// leaving zero, the group's state, its member count or replicas.
    transition_writes_per_group_minute: f64,
    deployment_writes_per_minute: f64,
    requests_per_30s: BTreeMap<String, f64>,
}

struct Run {
    idle: Window,
    busy: Window,
    /// Status writes per ConsumerGroup from the producer's start until every status showed lag.
    transition_writes: f64,
}

/// How long the operator's request counters lag behind: librdkafka statistics every second (set
/// through the client properties below) reach /metrics at the operator's next sweep (10 s).
const REQUEST_COUNTS_LAG: Duration = Duration::from_secs(12);

async fn sample(
    pid: u32,
    metrics: std::net::SocketAddr,
    writes: (&Writes, &Writes),
    groups: usize,
    seconds: u64,
) -> Window {
    let (status_writes, deployment_writes) = (&writes.0.all, &writes.1.all);
    let transition_writes = &writes.0.changed_verdict;
    let transitions_before = transition_writes.load(Ordering::Relaxed);
    reset_peak(pid);
    let (ticks_before, rss_start, _) = process_figures(pid);
    let (_, reconciles_before) = operator_counters(metrics).await;
    let (status_before, deployments_before) =
        (status_writes.load(Ordering::Relaxed), deployment_writes.load(Ordering::Relaxed));
    let started = Instant::now();
    // Request counters are read REQUEST_COUNTS_LAG after both ends of the window, so that they
    // cover a stretch as long as the window.
    tokio::time::sleep(REQUEST_COUNTS_LAG).await;
    let (requests_before, _) = operator_counters(metrics).await;
    tokio::time::sleep(Duration::from_secs(seconds).saturating_sub(REQUEST_COUNTS_LAG)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let (ticks_after, rss_end, rss_peak) = process_figures(pid);
    let status = status_writes.load(Ordering::Relaxed) - status_before;
    let transitions = transition_writes.load(Ordering::Relaxed) - transitions_before;
    let deployments = deployment_writes.load(Ordering::Relaxed) - deployments_before;
    let (_, reconciles_after) = operator_counters(metrics).await;
    tokio::time::sleep(REQUEST_COUNTS_LAG).await;
    let (requests_after, _) = operator_counters(metrics).await;
    let minutes = elapsed / 60.0;
    let per_group_minute = |n: f64| n / groups as f64 / minutes;
    Window {
        rss_start_mib: rss_start as f64 / 1024.0,
        rss_end_mib: rss_end as f64 / 1024.0,
        rss_peak_mib: rss_peak as f64 / 1024.0,
        cpu_cores: (ticks_after - ticks_before) as f64 / clock_ticks_per_second() / elapsed,
        reconciles_per_group_minute: per_group_minute(reconciles_after - reconciles_before),
        status_writes_per_group_minute: per_group_minute(status as f64),
        transition_writes_per_group_minute: per_group_minute(transitions as f64),
        deployment_writes_per_minute: deployments as f64 / minutes,
        requests_per_30s: requests_after
            .iter()
            .map(|(k, v)| (k.clone(), (v - requests_before.get(k).copied().unwrap_or(0.0)) * 30.0 / elapsed))
            .filter(|(_, v)| *v > 0.0)
            .collect(),
    }
}

/// One operator binary against `groups` fresh ConsumerGroups in their own namespace.
async fn measure(
    label: &str,
    binary: &str,
    env: &testenv::SharedEnv,
    topics: &[String],
    groups: usize,
    seconds: u64,
) -> Run {
    let client = common::kube_client(&env.kube).await;
    let namespace = common::namespace(&client, "bench-scale").await;
    let bootstrap = env.kafka.bootstrap_servers();
    // Committed offsets for every group, so that lag moves when producers write.
    let kafka = consumer_group_operator::kafka::KafkaClient::new(&BTreeMap::from([(
        "bootstrap.servers".to_string(),
        bootstrap.clone(),
    )]))
    .unwrap();
    for g in 0..groups {
        let topic = &topics[g % topics.len()];
        let ends: Vec<_> =
            (0..12).map(|p| (TopicPartition { topic: topic.clone(), partition: p }, OffsetSpec::Latest)).collect();
        let ends = kafka.list_offsets(&ends, IsolationLevel::ReadUncommitted, Duration::from_secs(30)).await.unwrap();
        let commits = ends.into_iter().map(|(tp, o)| (tp, o.offset.unwrap_or(0))).collect();
        kafka
            .alter_consumer_group_offsets(&format!("{namespace}-{g}"), &commits, Duration::from_secs(30))
            .await
            .unwrap();
    }
    // Request counts every second instead of every 15 s, for the per-30 s figures.
    let properties = tempfile::tempdir().unwrap();
    std::fs::write(properties.path().join("statistics.interval.ms"), "1000").unwrap();
    let groups_api: Api<ConsumerGroup> = Api::namespaced(client.clone(), &namespace);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    eprintln!("[{label}] creating {groups} ConsumerGroups ...");
    for g in 0..groups {
        let spec = serde_json::json!({"groupId": format!("{namespace}-{g}"), "topics": [topics[g % topics.len()]],
            "replicas": 1, "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}});
        groups_api.create(&PostParams::default(), &common::consumer_group(&format!("cg-{g}"), spec)).await.unwrap();
    }
    let port = testenv::process::free_port();
    let log = std::fs::File::create(std::env::temp_dir().join(format!("{namespace}.log"))).unwrap();
    // BENCH_SCALE_WRAPPER runs the operator under a profiler (e.g. "heaptrack -o /tmp/op"); the
    // figures are then the profiler's process, not the operator's.
    let wrapper: Vec<String> =
        std::env::var("BENCH_SCALE_WRAPPER").unwrap_or_default().split_whitespace().map(String::from).collect();
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut command = std::process::Command::new(program);
            command.args(args).arg(binary);
            command
        }
        None => std::process::Command::new(binary),
    };
    let mut operator = std::os::unix::process::CommandExt::process_group(&mut command, 0)
        .args(["run", "--namespace", &namespace, "--default-bootstrap-servers", &bootstrap])
        .args(["--metrics-address", &format!("127.0.0.1:{port}"), "--log-level", "warn"])
        .arg("--default-client-properties-dir")
        .arg(properties.path())
        .env("KUBECONFIG", env.kube.kubeconfig_path())
        .stdout(log)
        .spawn()
        .expect("start the operator");
    let metrics: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let started = Instant::now();
    let ready = common::eventually(Duration::from_secs(600), || async {
        let list = groups_api.list(&ListParams::default()).await.ok()?;
        let ready = list
            .items
            .iter()
            .filter(|g| {
                g.status.as_ref().is_some_and(|s| {
                    s.lag.is_some() && s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                })
            })
            .count();
        (ready == groups).then_some(())
    })
    .await;
    assert!(ready.is_some(), "[{label}] not every ConsumerGroup became Ready");
    eprintln!(
        "[{label}] all {groups} Ready after {:.0}s; sampling {seconds}s idle ...",
        started.elapsed().as_secs_f64()
    );
    // Past the start-up writes (first status, Deployment creation).
    tokio::time::sleep(Duration::from_secs(30)).await;
    let status_writes = count_writes(groups_api.clone(), verdict);
    // Every Deployment write counts the same: none is told apart.
    let deployment_writes = count_writes(deployments.clone(), |_| String::new());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let writes = (&status_writes, &deployment_writes);
    let idle = sample(operator.id(), metrics, writes, groups, seconds).await;

    eprintln!("[{label}] sampling {seconds}s with lag changing on every partition ...");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = {
        let (bootstrap, topics, stop) = (bootstrap.clone(), topics.to_vec(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for topic in &topics {
                    common::produce(&bootstrap, topic, &[1; 12], None);
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };
    // Lag leaving zero is a change people act on: every group writes its status once for it. That
    // transition is counted on its own; the window then samples lag that keeps changing.
    let transition_started = (status_writes.all.load(Ordering::Relaxed), Instant::now());
    let all_lagging = common::eventually(Duration::from_secs(300), || async {
        let list = groups_api.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .all(|g| g.status.as_ref().and_then(|s| s.lag.as_ref()).is_some_and(|l| l.total > 0))
            .then_some(())
    })
    .await;
    assert!(all_lagging.is_some(), "[{label}] not every ConsumerGroup's status showed its lag leave zero");
    let transition_writes = (status_writes.all.load(Ordering::Relaxed) - transition_started.0) as f64 / groups as f64;
    eprintln!(
        "[{label}] lag left zero in every status after {:.0}s: {transition_writes:.2} status writes per CG",
        transition_started.1.elapsed().as_secs_f64()
    );
    let busy = sample(operator.id(), metrics, writes, groups, seconds).await;
    stop.store(true, Ordering::Relaxed);
    producer.join().unwrap();
    status_writes.task.abort();
    deployment_writes.task.abort();
    stop_process_group(&mut operator);
    Run { idle, busy, transition_writes }
}

fn print_run(label: &str, run: &Run) {
    println!(
        "  {label:<10} lag leaving zero (a transition, before the window): {:.2} status writes per CG",
        run.transition_writes
    );
    for (phase, w) in [("idle", &run.idle), ("lag changing", &run.busy)] {
        println!(
            "  {label:<10} {phase:<13} RSS {:>5.1} -> {:>5.1} MiB (peak {:>5.1}), CPU {:.3} core, {:.2} reconciles, {:.2} status writes per CG per min ({:.2} of them transitions), {:.1} Deployment writes per min",
            w.rss_start_mib,
            w.rss_end_mib,
            w.rss_peak_mib,
            w.cpu_cores,
            w.reconciles_per_group_minute,
            w.status_writes_per_group_minute,
            w.transition_writes_per_group_minute,
            w.deployment_writes_per_minute
        );
        let requests: Vec<String> = w.requests_per_30s.iter().map(|(k, v)| format!("{k} {v:.0}")).collect();
        let total: f64 = w.requests_per_30s.values().sum();
        println!("  {:<10} {:<13} Kafka requests per 30 s (one resync): {total:.0} ({})", "", "", requests.join(", "));
    }
}

#[tokio::main]
async fn main() {
    let groups = env_usize("BENCH_SCALE_GROUPS", 1000);
    let topic_count = env_usize("BENCH_SCALE_TOPICS", 100);
    let seconds = env_usize("BENCH_SCALE_SECONDS", 120) as u64;
    eprintln!("starting Kafka and kube-apiserver + etcd ...");
    let env = common::shared_env().await;
    let client = common::kube_client(&env.kube).await;
    common::install_crds(&client).await;
    let kafka = consumer_group_operator::kafka::KafkaClient::new(&BTreeMap::from([(
        "bootstrap.servers".to_string(),
        env.kafka.bootstrap_servers(),
    )]))
    .unwrap();
    let topics: Vec<String> = (0..topic_count).map(|t| format!("bench-scale-{t}")).collect();
    for topic in &topics {
        kafka.create_topic(topic, 12, 1, Duration::from_secs(30)).await.unwrap();
    }
    let this =
        measure("this build", env!("CARGO_BIN_EXE_consumer-group-operator"), env, &topics, groups, seconds).await;
    let baseline = match std::env::var("BENCH_BASELINE_BIN") {
        Ok(binary) if !binary.is_empty() => Some(measure("baseline", &binary, env, &topics, groups, seconds).await),
        _ => None,
    };

    println!();
    println!(
        "{groups} ConsumerGroups over {topic_count} 12-partition topics, default flags (30 s resync), {seconds} s windows, real apiserver and broker"
    );
    print_run("this build", &this);
    if let Some(baseline) = &baseline {
        print_run("baseline", baseline);
        let ratio = |a: f64, b: f64| if a > 0.0 { b / a } else { f64::INFINITY };
        for (phase, ours, theirs) in
            [("idle", &this.idle, &baseline.idle), ("lag changing", &this.busy, &baseline.busy)]
        {
            let requests = |w: &Window| w.requests_per_30s.values().sum::<f64>();
            println!(
                "  baseline / this build, {phase}: RSS at the end {:.1}x, CPU {:.1}x, reconciles {:.1}x, status writes {:.1}x, Kafka requests {:.1}x",
                ratio(ours.rss_end_mib, theirs.rss_end_mib),
                ratio(ours.cpu_cores, theirs.cpu_cores),
                ratio(ours.reconciles_per_group_minute, theirs.reconciles_per_group_minute),
                ratio(ours.status_writes_per_group_minute, theirs.status_writes_per_group_minute),
                ratio(requests(ours), requests(theirs)),
            );
        }
    }
}
