//! `make bench` (second part): executing an offset reset of an Empty group on 1,000 and 10,000
//! partitions, the operator's Kafka path (plan reads, AlterConsumerGroupOffsets, verifying
//! OffsetFetch) against `kafka-consumer-groups --reset-offsets --to-earliest --execute` on the same
//! state, in the same run. Sizes: BENCH_RESET_SIZES (default "1000,10000"; creating 50,000
//! partitions on the one test broker had reached 20,000 after four minutes, still slowing, so it
//! is not a default), partitions spread over topics of 500 partitions each.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use consumer_group_operator::controllers::offset_reset::target::{PartitionState, Target, resolve};
use consumer_group_operator::crd::PlannedOffset;
use consumer_group_operator::kafka::{IsolationLevel, KafkaClient, OffsetSpec, TopicPartition};

const PER_TOPIC: usize = 500;

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::var("BENCH_RESET_SIZES")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let timeout = Duration::from_secs(120);
    eprintln!("starting a Kafka broker ...");
    let kafka = Arc::new(tokio::task::spawn_blocking(testenv::Kafka::start).await.unwrap().expect("start Kafka"));
    let bootstrap = kafka.bootstrap_servers();
    let client = KafkaClient::new(&BTreeMap::from([("bootstrap.servers".to_string(), bootstrap.clone())])).unwrap();

    println!();
    println!("offset reset (Execute, Empty group, to earliest), 1 broker");
    println!(
        "  {:>10} {:>14} {:>22} {:>8} {:>20}",
        "partitions", "operator (s)", "kafka-consumer-groups (s)", "ratio", "tool peak RSS (MiB)"
    );
    let mut times: Vec<(usize, f64)> = Vec::new();
    for size in sizes {
        let topics: Vec<String> = (0..size.div_ceil(PER_TOPIC)).map(|t| format!("reset-bench-{size}-{t}")).collect();
        let mut all = Vec::new();
        for (i, topic) in topics.iter().enumerate() {
            let partitions = PER_TOPIC.min(size - i * PER_TOPIC);
            client.create_topic(topic, partitions as i32, 1, timeout).await.unwrap();
            all.extend((0..partitions as i32).map(|p| TopicPartition { topic: topic.clone(), partition: p }));
        }
        // Both groups start from the same committed offsets (1 on every partition; the logs are
        // empty, so "earliest" is 0 and every partition changes).
        let start: BTreeMap<TopicPartition, i64> = all.iter().map(|tp| (tp.clone(), 1)).collect();
        let (ours, theirs) = (format!("reset-ours-{size}"), format!("reset-theirs-{size}"));
        // New topics take a moment to reach the group coordinator's metadata: retry the set-up.
        for group in [&ours, &theirs] {
            let mut attempts = 0;
            while let Err(error) = client.alter_consumer_group_offsets(group, &start, timeout).await {
                attempts += 1;
                assert!(attempts < 100, "setting up {group}: {error}");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }

        let spec = |s: OffsetSpec| all.iter().map(|tp| (tp.clone(), s)).collect::<Vec<_>>();
        // New partitions take a moment to get their leaders; the timed runs start after that.
        client.list_offsets(&spec(OffsetSpec::Latest), IsolationLevel::ReadUncommitted, timeout).await.unwrap();

        // The operator's path: plan reads, commit, verification.
        let started = Instant::now();
        let (earliest, latest) = (spec(OffsetSpec::Earliest), spec(OffsetSpec::Latest));
        let (committed, starts, ends) = futures::try_join!(
            client.list_consumer_group_offsets(&ours, Some(&all), timeout),
            client.list_offsets(&earliest, IsolationLevel::ReadUncommitted, timeout),
            client.list_offsets(&latest, IsolationLevel::ReadUncommitted, timeout),
        )
        .unwrap();
        let states: BTreeMap<TopicPartition, PartitionState> = all
            .iter()
            .map(|tp| {
                let state = PartitionState {
                    committed: committed[tp],
                    log_start: starts[tp].offset.unwrap_or(0),
                    log_end: ends[tp].offset.unwrap_or(0),
                    at_timestamp: None,
                };
                (tp.clone(), state)
            })
            .collect();
        let plan: Vec<PlannedOffset> = resolve(&Target::Earliest, &states).unwrap();
        let offsets: BTreeMap<TopicPartition, i64> = plan
            .iter()
            .map(|p| (TopicPartition { topic: p.topic.clone(), partition: p.partition }, p.new_offset.unwrap()))
            .collect();
        client.alter_consumer_group_offsets(&ours, &offsets, timeout).await.unwrap();
        let verified = client.list_consumer_group_offsets(&ours, Some(&all), timeout).await.unwrap();
        let operator_time = started.elapsed();
        assert!(
            plan.iter()
                .all(|p| verified[&TopicPartition { topic: p.topic.clone(), partition: p.partition }] == p.new_offset)
        );

        // The reference tool on the same state.
        let mut args = vec![
            "--reset-offsets".to_string(),
            "--group".into(),
            theirs.clone(),
            "--to-earliest".into(),
            "--execute".into(),
        ];
        for topic in &topics {
            args.push("--topic".into());
            args.push(topic.clone());
        }
        let started = Instant::now();
        let (out, tool_peak_kib) = tokio::task::spawn_blocking({
            let kafka = kafka.clone();
            move || kafka.consumer_groups_measured(&args.iter().map(String::as_str).collect::<Vec<_>>()).unwrap()
        })
        .await
        .unwrap();
        let tool_time = started.elapsed();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let theirs_now = client.list_consumer_group_offsets(&theirs, Some(&all), timeout).await.unwrap();
        assert_eq!(theirs_now, verified, "both ways reach the same offsets");
        times.push((all.len(), operator_time.as_secs_f64()));
        println!(
            "  {:>10} {:>14.3} {:>22.3} {:>7.1}x {:>20.1}",
            all.len(),
            operator_time.as_secs_f64(),
            tool_time.as_secs_f64(),
            tool_time.as_secs_f64() / operator_time.as_secs_f64(),
            tool_peak_kib as f64 / 1024.0
        );
    }
    // How the operator's time grows with the size (linear would be the ratio of the sizes).
    for pair in times.windows(2) {
        let ((small, t_small), (large, t_large)) = (pair[0], pair[1]);
        println!(
            "  {large} / {small} partitions: {:.1}x the time for {:.0}x the size",
            t_large / t_small,
            large as f64 / small as f64
        );
    }
    println!(
        "  this process's peak RSS (the operator's Kafka path and the benchmark's set-up): {:.1} MiB",
        common::memory_mib("VmHWM")
    );
}
