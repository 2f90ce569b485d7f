//! The plugin's command line: kubectl's connection flags, and each command's flags.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use super::output::Format;

/// Day-two work on Kafka consumer groups run by consumer-group-operator: lag, describe, pause.
#[derive(Parser, Debug)]
#[command(name = "kubectl-consumergroup", version, about, long_about = None)]
pub struct Cli {
    /// Path to the kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// The kubeconfig context to use (default: its current context).
    #[arg(long, global = true)]
    pub context: Option<String>,

    /// Namespace (default: the context's namespace).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,

    /// Print json or yaml instead of a table.
    #[arg(short = 'o', long, global = true, value_enum)]
    pub output: Option<Format>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// ConsumerGroups: group id, topics, partitions, replicas/desired, lag, time lag, state,
    /// health, readiness.
    List(ListArgs),
    /// Lag per partition, in `kafka-consumer-groups --describe`'s column order.
    Lag(LagArgs),
    /// Conditions, members and assignments, resets and recent Events of a ConsumerGroup.
    Describe(NameArgs),
    /// Freeze a ConsumerGroup's replicas (spec.paused): observed and reported, never scaled.
    Pause(NameArgs),
    /// Undo `pause`.
    Resume(NameArgs),
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// List the ConsumerGroups of every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
}

#[derive(clap::Args, Debug)]
pub struct NameArgs {
    /// The ConsumerGroup's name.
    pub name: String,
}

#[derive(clap::Args, Debug)]
pub struct LagArgs {
    /// The ConsumerGroup's name.
    pub name: String,

    /// Read Kafka now with the ConsumerGroup's connection settings (its Secret, read with your
    /// own permissions) instead of the figures in its status, which refresh only every so often.
    #[arg(long)]
    pub live: bool,

    /// Refresh every --interval seconds until interrupted (Ctrl-C).
    #[arg(short = 'w', long)]
    pub watch: bool,

    /// Seconds between refreshes with --watch.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..), value_name = "SECONDS")]
    pub interval: u64,

    /// With --live, for a ConsumerGroup without spec.kafka.bootstrapServers (it uses the
    /// operator's default, which this command cannot see).
    #[arg(long, value_name = "HOST:PORT,...")]
    pub bootstrap_server: Option<String>,

    /// With --live, the timeout of each Kafka request.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub request_timeout: u64,
}
