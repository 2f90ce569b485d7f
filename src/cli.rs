//! Command-line interface: flags and environment variables of the `consumer-group-operator` binary.

use std::net::SocketAddr;

use clap::{Parser, Subcommand, ValueEnum};

/// Kubernetes operator that runs Kafka consumer-group workloads, scales them on lag up to the
/// partition count, and resets their offsets safely.
#[derive(Parser, Debug)]
#[command(name = "consumer-group-operator", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controller against the cluster of the current kubeconfig (or in-cluster config).
    Run(RunArgs),
    /// Print every CustomResourceDefinition of the operator as YAML (`... crd | kubectl apply -f -`).
    Crd,
}

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Log output format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,

    /// Log filter in tracing/RUST_LOG syntax, e.g. `info` or `info,consumer_group_operator=debug`.
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Address of the HTTP endpoint serving /metrics, /healthz and /readyz.
    #[arg(long, env = "METRICS_ADDRESS", default_value = "0.0.0.0:8080")]
    pub metrics_address: SocketAddr,

    /// Bootstrap servers for ConsumerGroups that do not set spec.kafka.bootstrapServers.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS")]
    pub default_bootstrap_servers: Option<String>,

    /// Timeout of each Kafka request, in seconds.
    #[arg(long, env = "KAFKA_REQUEST_TIMEOUT_SECONDS", default_value_t = 10)]
    pub kafka_timeout_seconds: u64,

    /// How often every ConsumerGroup is re-observed when nothing changes, in seconds (partition
    /// counts, group state). Lag autoscaling polls at its own spec.scaling.pollIntervalSeconds.
    #[arg(long, env = "RESYNC_SECONDS", default_value_t = 30)]
    pub resync_seconds: u64,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Plain,
    Json,
}

/// Sets up tracing output for `run`.
pub fn init_tracing(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| anyhow::anyhow!("invalid --log-level {filter:?}: {e}"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(true);
    match format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
}
