//! Plays the kubelet for one Deployment in `make demo`: keeps as many real Kafka consumers in its
//! group as the Deployment asks for (see `testenv::workload`), until SIGINT/SIGTERM, when they
//! commit and leave the group.
//!
//! Usage: cgo-consumers NAMESPACE DEPLOYMENT MESSAGES_PER_SECOND_PER_CONSUMER
//! with KUBECONFIG and CGO_KUBECTL set (as `cgo-env` writes them).

use std::path::PathBuf;
use std::time::Duration;

/// How long the consumers get to commit and leave the group once asked to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> anyhow::Result<()> {
    // Before any thread starts, so only `wait` below receives them.
    let signals = testenv::process::StopSignals::block();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [namespace, name, rate] = args.as_slice() else {
        anyhow::bail!("usage: cgo-consumers NAMESPACE DEPLOYMENT MESSAGES_PER_SECOND_PER_CONSUMER");
    };
    let kubectl = PathBuf::from(std::env::var("CGO_KUBECTL").unwrap_or_else(|_| "kubectl".into()));
    let kubeconfig = PathBuf::from(std::env::var("KUBECONFIG")?);
    let deployment = testenv::workload::deployment(&kubectl, &kubeconfig, namespace, name);
    let settings = testenv::workload::ConsumerSettings { messages_per_second: rate.parse()?, extra: Vec::new() };
    let fleet = std::sync::Arc::new(testenv::workload::ConsumerFleet::start(deployment, settings)?);
    eprintln!("[cgo-consumers] following deployment {namespace}/{name} at {rate} messages/s per consumer");
    // A weak reference, so that dropping `fleet` below stops the consumers.
    let watched = std::sync::Arc::downgrade(&fleet);
    std::thread::spawn(move || {
        let mut last = usize::MAX;
        while let Some(watched) = watched.upgrade() {
            let running = watched.consumers();
            if running != last {
                eprintln!("[cgo-consumers] {running} consumers running, {} messages processed", watched.processed());
                last = running;
            }
            drop(watched);
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    signals.wait();
    eprintln!("[cgo-consumers] stopping: the consumers commit and leave the group");
    // Bounded: with Kafka already gone a final commit would wait for librdkafka's timeouts.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(fleet);
        let _ = done_tx.send(());
    });
    if done_rx.recv_timeout(STOP_TIMEOUT).is_err() {
        eprintln!("[cgo-consumers] the consumers did not stop within {STOP_TIMEOUT:?}; exiting anyway");
    }
    Ok(())
}
