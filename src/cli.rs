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

// Parsed once per process: the size difference between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
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

    /// A folder of librdkafka client properties (one file per property, as a Secret mounted as a
    /// volume: `security.protocol`, `sasl.username`, `sasl.password`, `ssl.ca.pem`, ...) for
    /// ConsumerGroups on the default bootstrap servers without spec.kafka.clientPropertiesSecretRef;
    /// never sent to servers a ConsumerGroup names. Read on every use, so rotated credentials apply
    /// without a restart.
    #[arg(long, env = "KAFKA_CLIENT_PROPERTIES_DIR")]
    pub default_client_properties_dir: Option<std::path::PathBuf>,

    /// Group ids that ConsumerGroups on the default bootstrap servers may manage, comma-separated
    /// patterns as in ClusterKafkaConnection spec.allowedGroupIds (`{namespace}` for the
    /// ConsumerGroup's namespace, `*` for any characters). Unset: any group id.
    #[arg(long, env = "KAFKA_DEFAULT_ALLOWED_GROUP_IDS", value_delimiter = ',')]
    pub default_allowed_group_ids: Option<Vec<String>>,

    /// Read Secrets of workload namespaces named by ConsumerGroups (spec.kafka.clientPropertiesSecretRef)
    /// and KafkaConnections, those labelled `kafka.operators.dev/client-properties=true` only. With
    /// `false`, only ClusterKafkaConnections' Secrets (in the operator's namespace) and the default
    /// properties folder are read, and the operator needs no access to other namespaces' Secrets.
    #[arg(long, env = "ALLOW_NAMESPACE_SECRETS", default_value_t = true, action = clap::ArgAction::Set)]
    pub allow_namespace_secrets: bool,

    /// The operator's own namespace, where the Secrets of ClusterKafkaConnections live.
    #[arg(long, env = "POD_NAMESPACE")]
    pub operator_namespace: Option<String>,

    /// Timeout of each Kafka request, in seconds.
    #[arg(long, env = "KAFKA_REQUEST_TIMEOUT_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub kafka_timeout_seconds: u64,

    /// How long an observer reuses the log start and end offsets it read, in seconds: polls (an
    /// early one for a new ConsumerGroup, say) closer together than this share one read.
    #[arg(long, env = "LOG_OFFSETS_MAX_AGE_SECONDS", default_value_t = 2)]
    pub log_offsets_max_age_seconds: u64,

    /// Run only while holding a coordination.k8s.io Lease, so that of several operator replicas
    /// exactly one acts at a time.
    #[arg(long, env = "LEADER_ELECTION")]
    pub leader_election: bool,

    /// Name of the leader-election Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "consumer-group-operator")]
    pub lease_name: String,

    /// Namespace of the leader-election Lease (defaults to POD_NAMESPACE, else `default`).
    #[arg(long, env = "LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// Seconds a leader holds the Lease without renewing it; a follower takes over after that.
    #[arg(long, env = "LEASE_DURATION_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(3..=3600))]
    pub lease_duration_seconds: u64,

    /// Namespaces to watch (repeat the flag or separate with commas). Empty: all namespaces.
    #[arg(long = "namespace", env = "WATCH_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,

    /// How often the lag figures in a ConsumerGroup's status are refreshed at most, in seconds.
    /// Status is for what people and GitOps tools act on: conditions, replicas, group state and
    /// the health verdict are written when they change, lag numbers at most this often (and when
    /// lag reaches or leaves zero). /metrics has the live figures of every poll.
    #[arg(long, env = "STATUS_LAG_INTERVAL_SECONDS", default_value_t = 60)]
    pub status_lag_interval_seconds: u64,

    /// Serve the external metrics API (external.metrics.k8s.io/v1beta1) for HorizontalPodAutoscalers
    /// on this address (HTTPS; register it with an APIService). Unset: not served.
    #[arg(long, env = "EXTERNAL_METRICS_ADDRESS", requires = "external_metrics_tls_dir")]
    pub external_metrics_address: Option<SocketAddr>,

    /// A folder with the external metrics API's serving certificate and key, `tls.crt` and
    /// `tls.key` (a mounted TLS Secret).
    #[arg(long, env = "EXTERNAL_METRICS_TLS_DIR", requires = "external_metrics_address")]
    pub external_metrics_tls_dir: Option<std::path::PathBuf>,

    /// How often every ConsumerGroup is re-observed when nothing changes, in seconds (partition
    /// counts, group state). Lag autoscaling polls at its own spec.scaling.pollIntervalSeconds.
    #[arg(long, env = "RESYNC_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86400))]
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
    // Colour codes only for a person at a terminal: in a pod or a file they are noise in every line.
    let colours = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(true).with_ansi(colours);
    match format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
}
