//! `make bench`: one full lag collection for G groups x P partitions on one real broker, measured
//! in the same run against Kafka's own `kafka-consumer-groups --describe --all-groups` and a naive
//! per-partition watermark loop. Prints times, ratios, the Kafka requests each client sent
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

use consumer_group_operator::kafka::log_offsets::LogOffsetCache;
use consumer_group_operator::kafka::stats::{RequestCounting, RequestCounts, delta};
use consumer_group_operator::kafka::{KafkaClient, TopicPartition};
use futures::StreamExt;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

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
    let requests_before = common::settled_requests(&client).await;

    // 1. The operator's Kafka module: one OffsetFetch per group, log offsets shared by all groups
    //    (two batched ListOffsets), as one reconcile cycle over every ConsumerGroup does.
    let cache = Arc::new(LogOffsetCache::default());
    let started = Instant::now();
    let total_lag: i64 = futures::stream::iter(group_ids.iter())
        .map(|group| {
            let (client, cache, all) = (client.clone(), cache.clone(), all.clone());
            async move {
                let (committed, ranges) =
                    futures::try_join!(client.list_consumer_group_offsets(group, Some(&all), timeout), async {
                        cache.get(&client, &all, Duration::from_secs(60), timeout).await.map(|(r, _)| r)
                    },)
                    .unwrap();
                all.iter()
                    .map(|tp| {
                        let range = ranges[tp];
                        let offsets = consumer_group_operator::lag::PartitionOffsets {
                            committed: committed.get(tp).copied().flatten(),
                            log_start: range.start,
                            log_end: range.end,
                        };
                        consumer_group_operator::lag::partition_lag(
                            offsets,
                            consumer_group_operator::crd::AutoOffsetReset::Latest,
                        )
                    })
                    .sum::<i64>()
            }
        })
        .buffer_unordered(16)
        .fold(0i64, |sum, lag| async move { sum + lag })
        .await;
    let operator_time = started.elapsed();
    let rss_after = common::memory_mib("VmRSS");
    let operator_requests = delta(&common::settled_requests(&client).await, &requests_before);

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
        "operator (batched, shared log offsets)",
        operator_time.as_secs_f64(),
        total(&operator_requests),
        "1.0x"
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
    println!("  operator requests (counted by librdkafka): {}", describe(&operator_requests));
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
}
