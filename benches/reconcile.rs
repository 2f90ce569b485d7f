//! `make bench` (third part): reconcile latency on a real kube-apiserver, from a change of a
//! ConsumerGroup's `spec.replicas` (as `kubectl scale` or GitOps makes it) to its Deployment
//! carrying the new count, as a watch sees it. The reference, measured in the same run, is the
//! floor any controller sits on: a direct patch of a Deployment seen by the same watch.
//!
//! Sizes: BENCH_RECONCILE_GROUPS ConsumerGroups (default 20) in one namespace, BENCH_RECONCILE_CHANGES
//! changes (default 60) spread over them; the operator runs with its default 30 s resync, so every
//! change measured is driven by the watch, not by a periodic resync.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use tokio::sync::mpsc;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Waits for the watch to report `name` with `replicas`; returns when it saw it.
async fn seen(events: &mut mpsc::UnboundedReceiver<(String, i32, Instant)>, name: &str, replicas: i32) -> Instant {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap_or_else(|_| panic!("{name} never reached {replicas} replicas"))
            .expect("watch stream ended");
        if event.0 == name && event.1 == replicas {
            return event.2;
        }
    }
}

#[tokio::main]
async fn main() {
    let groups = env_usize("BENCH_RECONCILE_GROUPS", 20);
    let changes = env_usize("BENCH_RECONCILE_CHANGES", 60);
    eprintln!("starting Kafka and kube-apiserver + etcd ...");
    let env = common::shared_env().await;
    let client = common::kube_client(&env.kube).await;
    common::install_crds(&client).await;
    let namespace = common::namespace(&client, "bench-reconcile").await;
    let bootstrap = env.kafka.bootstrap_servers();
    let kafka = consumer_group_operator::kafka::KafkaClient::new(&std::collections::BTreeMap::from([(
        "bootstrap.servers".to_string(),
        bootstrap.clone(),
    )]))
    .unwrap();
    kafka.create_topic("bench-reconcile", 64, 1, Duration::from_secs(30)).await.unwrap();

    let args = match consumer_group_operator::cli::Cli::parse_from([
        "consumer-group-operator",
        "run",
        "--namespace",
        &namespace,
        "--default-bootstrap-servers",
        &bootstrap,
    ])
    .command
    {
        consumer_group_operator::cli::Command::Run(args) => args,
        other => panic!("not a run command: {other:?}"),
    };
    let _operator = common::Operator::start(&client, args).await;

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let (tx, mut events) = mpsc::unbounded_channel();
    let watch = tokio::spawn(watcher(deployments.clone(), watcher::Config::default()).for_each(move |event| {
        let tx = tx.clone();
        async move {
            if let Ok(watcher::Event::Apply(d) | watcher::Event::InitApply(d)) = event {
                let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(-1);
                let _ = tx.send((d.metadata.name.clone().unwrap_or_default(), replicas, Instant::now()));
            }
        }
    }));

    let groups_api: Api<consumer_group_operator::crd::ConsumerGroup> = Api::namespaced(client.clone(), &namespace);
    let names: Vec<String> = (0..groups).map(|g| format!("cg-{g}")).collect();
    for name in &names {
        let spec = serde_json::json!({"groupId": format!("bench-{namespace}-{name}"), "topics": ["bench-reconcile"],
            "replicas": 1, "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}});
        groups_api.create(&PostParams::default(), &common::consumer_group(name, spec)).await.unwrap();
    }
    let mut pending: std::collections::BTreeSet<&String> = names.iter().collect();
    while !pending.is_empty() {
        let (name, replicas, _) = tokio::time::timeout(Duration::from_secs(120), events.recv())
            .await
            .unwrap_or_else(|_| panic!("Deployments never created for {pending:?}"))
            .expect("watch stream ended");
        if replicas == 1 {
            pending.remove(&name);
        }
    }
    // A Deployment no operator touches, for the reference.
    let plain: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "plain"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "plain"}},
            "template": {"metadata": {"labels": {"app": "plain"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}
    }))
    .unwrap();
    deployments.create(&PostParams::default(), &plain).await.unwrap();
    seen(&mut events, "plain", 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    while events.try_recv().is_ok() {}

    let replicas_patch = |n: i32| Patch::Merge(serde_json::json!({"spec": {"replicas": n}}));
    let mut operator = Vec::with_capacity(changes);
    let mut reference = Vec::with_capacity(changes);
    for change in 0..changes {
        let target = 2 + (change / groups) as i32 % 20;
        let name = &names[change % groups];
        let started = Instant::now();
        groups_api.patch(name, &PatchParams::default(), &replicas_patch(target)).await.unwrap();
        operator.push(seen(&mut events, name, target).await - started);

        let started = Instant::now();
        deployments.patch("plain", &PatchParams::default(), &replicas_patch(target + change as i32)).await.unwrap();
        reference.push(seen(&mut events, "plain", target + change as i32).await - started);
    }
    watch.abort();
    operator.sort();
    reference.sort();

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!();
    println!("reconcile latency: ConsumerGroup spec.replicas changed -> owned Deployment updated, seen by a watch");
    println!("  {groups} ConsumerGroups, {changes} changes, real kube-apiserver + etcd, real Kafka");
    println!("  {:<52} {:>9} {:>9} {:>9}", "path", "p50 (ms)", "p95 (ms)", "max (ms)");
    for (label, samples) in [
        ("operator (watch -> reconcile -> server-side apply)", &operator),
        ("direct Deployment patch (reference)", &reference),
    ] {
        println!(
            "  {:<52} {:>9.1} {:>9.1} {:>9.1}",
            label,
            ms(percentile(samples, 0.5)),
            ms(percentile(samples, 0.95)),
            ms(*samples.last().unwrap())
        );
    }
    println!(
        "  operator / reference: {:.1}x at p50, {:.1}x at p95",
        ms(percentile(&operator, 0.5)) / ms(percentile(&reference, 0.5)),
        ms(percentile(&operator, 0.95)) / ms(percentile(&reference, 0.95))
    );
}
