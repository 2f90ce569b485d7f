//! `make bench`: one full lag collection for G groups x P partitions on one real broker (an observer
//! poll, as the running operator does it), measured in the same run against a warm Java
//! AdminClient doing the same reads (Kafka's own client), Kafka's own `kafka-consumer-groups
//! --describe --all-groups` and a naive per-partition watermark loop. Prints times, ratios, the Kafka requests each client sent
//! (counted by librdkafka's statistics, not estimated) and the process RSS.
//!
//! Sizes: BENCH_GROUPS (default 100), BENCH_TOPICS (10) x BENCH_PARTITIONS_PER_TOPIC (100): every
//! group reads every topic, so each group spans TOPICS x PARTITIONS partitions (1,000 by default)
//! with a committed offset on each.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use consumer_group_operator::kafka::observer::{GroupView, Interest, Observer};
use consumer_group_operator::kafka::stats::{RequestCounting, RequestCounts, delta};
use consumer_group_operator::kafka::{KafkaClient, TopicPartition};
use futures::StreamExt;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

/// Timed polls of the operator and rounds of the Java reference.
const POLL_ROUNDS: usize = 5;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn total(counts: &RequestCounts) -> i64 {
    counts.values().sum()
}

fn describe(counts: &RequestCounts) -> String {
    counts.iter().map(|(request, n)| format!("{request} {n}")).collect::<Vec<_>>().join(", ")
}

#[tokio::main]
async fn main() {
    let groups = env_usize("BENCH_GROUPS", 100);
    let topics = env_usize("BENCH_TOPICS", 10);
    let per_topic = env_usize("BENCH_PARTITIONS_PER_TOPIC", 100);
    let naive_sample = env_usize("BENCH_NAIVE_SAMPLE_GROUPS", 5).min(groups);
    let timeout = Duration::from_secs(60);

    eprintln!("starting a Kafka broker ...");
    let kafka = Arc::new(tokio::task::spawn_blocking(testenv::Kafka::start).await.unwrap().expect("start Kafka"));
    let bootstrap = kafka.bootstrap_servers();
    let properties = BTreeMap::from([
        ("bootstrap.servers".to_string(), bootstrap.clone()),
        ("statistics.interval.ms".to_string(), "100".to_string()),
    ]);
    let client = Arc::new(KafkaClient::new(&properties).unwrap());

    eprintln!("setting up {groups} groups x {topics} topics x {per_topic} partitions ...");
    let topic_names: Vec<String> = (0..topics).map(|t| format!("bench-{t}")).collect();
    for topic in &topic_names {
        client.create_topic(topic, per_topic as i32, 1, timeout).await.unwrap();
    }
    let all: Vec<TopicPartition> = topic_names
        .iter()
        .flat_map(|t| (0..per_topic as i32).map(move |p| TopicPartition { topic: t.clone(), partition: p }))
        .collect();
    {
        let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", &bootstrap).create().unwrap();
        for tp in &all {
            for i in 0..20 {
                let payload = format!("{i}");
                loop {
                    match producer.send(BaseRecord::<(), _>::to(&tp.topic).partition(tp.partition).payload(&payload)) {
                        Ok(()) => break,
                        Err(_) => {
                            producer.poll(Duration::from_millis(10));
                        }
                    }
                }
            }
        }
        producer.flush(timeout).unwrap();
    }
    let group_ids: Vec<String> = (0..groups).map(|g| format!("bench-group-{g}")).collect();
    futures::stream::iter(group_ids.iter().enumerate())
        .for_each_concurrent(8, |(g, group)| {
            let client = client.clone();
            let offsets: BTreeMap<TopicPartition, i64> =
                all.iter().enumerate().map(|(i, tp)| (tp.clone(), ((g + i) % 20) as i64)).collect();
            async move { client.alter_consumer_group_offsets(group, &offsets, timeout).await.unwrap() }
        })
        .await;
    let partitions_per_group = all.len();
    let rss_before = common::memory_mib("VmRSS");

    // 1. The operator's observer: one poll reads every group (one OffsetFetch per coordinator) and
    //    the log offsets they share. A first poll registers the groups and warms the connections
    //    (as a running operator is); then POLL_ROUNDS polls are timed, and requests counted.
    let observer = Observer::start(client.clone(), timeout, Duration::ZERO, Box::new(|_| {}));
    let interest = Interest {
        topics: topic_names.clone(),
        every: Duration::from_secs(3600),
        policy: consumer_group_operator::crd::AutoOffsetReset::Latest,
        polls_kept: 0,
        learns_capacity: false,
    };
    for group in &group_ids {
        observer.latest(group, &interest);
    }
    observer.poll_once().await;
    let requests_before = common::settled_requests(&client).await;
    let mut times = Vec::new();
    let mut total_lag = 0;
    for _ in 0..POLL_ROUNDS {
        let started = Instant::now();
        let snapshot = observer.poll_once().await;
        times.push(started.elapsed());
        total_lag = group_ids
            .iter()
            .map(|group| match snapshot.view(group, &interest.topics) {
                GroupView::Seen { lag: Ok(summary), .. } => summary.total,
                other => panic!("{group}: {other:?}"),
            })
            .sum::<i64>();
    }
    let operator_time = *times.iter().min().unwrap();
    let operator_mean = times.iter().sum::<Duration>() / POLL_ROUNDS as u32;
    let rss_after = common::memory_mib("VmRSS");
    let operator_requests: RequestCounts = delta(&common::settled_requests(&client).await, &requests_before)
        .into_iter()
        .map(|(request, n)| (request, n / POLL_ROUNDS as i64))
        .collect();

    // 1b. The warm Java AdminClient (Kafka's own client, batched the same way), best and mean of
    //     POLL_ROUNDS rounds after a warm-up round, in one JVM.
    let groups_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(groups_file.path(), group_ids.join("\n")).unwrap();
    let java = tokio::task::spawn_blocking({
        let (bootstrap, path) = (bootstrap.clone(), groups_file.path().to_owned());
        move || {
            let libs = testenv::kafka::kafka_libs().expect("Kafka's jars");
            std::process::Command::new("java")
                .arg("-cp")
                .arg(format!("{}/*", libs.display()))
                .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/java/AdminLag.java"))
                .args([bootstrap.as_str(), path.to_str().unwrap(), &POLL_ROUNDS.to_string()])
                .output()
                .expect("run java")
        }
    })
    .await
    .unwrap();
    assert!(java.status.success(), "{}", String::from_utf8_lossy(&java.stderr));
    let java_out = String::from_utf8_lossy(&java.stdout).to_string();
    let java_figures: Vec<f64> = java_out.split_whitespace().filter_map(|v| v.parse().ok()).collect();
    let (java_best, java_mean, java_lag) = (
        Duration::from_secs_f64(java_figures[0] / 1000.0),
        Duration::from_secs_f64(java_figures[1] / 1000.0),
        java_figures[2] as i64,
    );

    // 2. Kafka's own tool, the reference.
    let started = Instant::now();
    let (out, tool_peak_kib) = tokio::task::spawn_blocking({
        let kafka = kafka.clone();
        move || kafka.consumer_groups_measured(&["--describe", "--all-groups"]).unwrap()
    })
    .await
    .unwrap();
    let tool_time = started.elapsed();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tool_rows = String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with("bench-group-")).count();
    let tool_lag: i64 = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("bench-group-"))
        .filter_map(|l| l.split_whitespace().nth(5).and_then(|v| v.parse::<i64>().ok()))
        .sum();

    // 3. Naive: per group, committed offsets, then one watermark request per partition (what
    //    per-partition exporters and scalers do). Timed on a sample of groups and extrapolated.
    let sample: Vec<String> = group_ids.iter().take(naive_sample).cloned().collect();
    let (naive_lag, naive_requests, naive_sample_time) = tokio::task::spawn_blocking({
        let (bootstrap, all) = (bootstrap.clone(), all.clone());
        move || {
            let mut lag = 0i64;
            let mut requests = RequestCounts::new();
            let mut elapsed = Duration::ZERO;
            for group in sample {
                let started = Instant::now();
                let consumer: BaseConsumer<RequestCounting> = ClientConfig::new()
                    .set("bootstrap.servers", &bootstrap)
                    .set("group.id", &group)
                    .set("statistics.interval.ms", "100")
                    .create_with_context(RequestCounting::default())
                    .unwrap();
                let mut list = rdkafka::TopicPartitionList::new();
                for tp in &all {
                    list.add_partition(&tp.topic, tp.partition);
                }
                let committed = consumer.committed_offsets(list, Duration::from_secs(60)).unwrap();
                for element in committed.elements() {
                    let (_, high) = consumer
                        .fetch_watermarks(element.topic(), element.partition(), Duration::from_secs(60))
                        .unwrap();
                    if let rdkafka::Offset::Offset(c) = element.offset() {
                        lag += (high - c).max(0);
                    }
                }
                elapsed += started.elapsed();
                // Serve the statistics events until they stop changing (not timed).
                let mut last = RequestCounts::new();
                loop {
                    let until = Instant::now() + Duration::from_millis(400);
                    while Instant::now() < until {
                        let _ = consumer.poll(Duration::from_millis(50));
                    }
                    let now = consumer.context().counts();
                    if now == last && !now.is_empty() {
                        break;
                    }
                    last = now;
                }
                for (request, n) in last {
                    *requests.entry(request).or_default() += n;
                }
            }
            (lag, requests, elapsed)
        }
    })
    .await
    .unwrap();
    let scale = groups as f64 / naive_sample.max(1) as f64;
    let naive_time = naive_sample_time.mul_f64(scale);

    let expected_lag: i64 =
        (0..groups).map(|g| (0..partitions_per_group).map(|i| 20 - ((g + i) % 20) as i64).sum::<i64>()).sum();
    println!();
    println!(
        "lag collection: {groups} groups x {partitions_per_group} partitions ({} committed offsets), 1 broker",
        groups * partitions_per_group
    );
    println!(
        "  total lag: operator {total_lag}, kafka-consumer-groups {tool_lag} ({tool_rows} rows), expected {expected_lag}"
    );
    println!("  {:<44} {:>10} {:>16} {:>10}", "method", "time (s)", "Kafka requests", "vs operator");
    println!(
        "  {:<44} {:>10.3} {:>16} {:>10}",
        format!("operator observer poll (best of {POLL_ROUNDS})"),
        operator_time.as_secs_f64(),
        total(&operator_requests),
        "1.0x"
    );
    println!(
        "  {:<44} {:>10.3} {:>16} {:>9.1}x",
        format!("warm Java AdminClient (best of {POLL_ROUNDS})"),
        java_best.as_secs_f64(),
        "n/a (JVM)",
        java_best.as_secs_f64() / operator_time.as_secs_f64()
    );
    println!(
        "  means: operator {:.3} s, Java AdminClient {:.3} s ({:.1}x); Java's lag {java_lag}",
        operator_mean.as_secs_f64(),
        java_mean.as_secs_f64(),
        java_mean.as_secs_f64() / operator_mean.as_secs_f64()
    );
    println!(
        "  {:<44} {:>10.3} {:>16} {:>9.1}x",
        "kafka-consumer-groups --describe --all-groups",
        tool_time.as_secs_f64(),
        "n/a (JVM)",
        tool_time.as_secs_f64() / operator_time.as_secs_f64()
    );
    println!(
        "  {:<44} {:>10.3} {:>16} {:>9.1}x",
        format!("naive per-partition watermarks (x{groups}/{naive_sample} extrapolated)"),
        naive_time.as_secs_f64(),
        (total(&naive_requests) as f64 * scale).round() as i64,
        naive_time.as_secs_f64() / operator_time.as_secs_f64()
    );
    println!(
        "  operator requests per poll (counted by librdkafka and the group reader): {}",
        describe(&operator_requests)
    );
    println!(
        "  naive sample: {naive_sample} groups in {:.3}s, lag {naive_lag}, requests {}",
        naive_sample_time.as_secs_f64(),
        describe(&naive_requests)
    );
    let peak = common::memory_mib("VmHWM");
    let tool_peak = tool_peak_kib as f64 / 1024.0;
    println!("  operator process RSS: {rss_before:.1} MiB before the cycle, {rss_after:.1} MiB after");
    println!(
        "  peak RSS: kafka-consumer-groups {tool_peak:.1} MiB, this process {peak:.1} MiB (set-up included): {:.1}x less",
        tool_peak / peak
    );
    assert_eq!(total_lag, expected_lag, "the operator's lag must be exact");
    assert_eq!(java_lag, expected_lag, "the reference must read the same lag");
}
