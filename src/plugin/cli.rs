//! The plugin's command line: kubectl's connection flags, and each command's flags. Flag
//! combinations `kafka-consumer-groups --reset-offsets` refuses are refused here too, as usage
//! errors (exit code 2), before anything is sent.

use std::path::PathBuf;

use clap::error::ErrorKind;
use clap::{Parser, Subcommand};

use super::output::Format;
use crate::crd::{PartitionOffset, TopicScope};

/// The help heading of the flags every command takes.
const GLOBAL: &str = "Global options";

/// Day-two work on Kafka consumer groups run by consumer-group-operator: lag, describe, reset
/// with a previewed plan and approval, rollback, pause.
#[derive(Parser, Debug)]
#[command(name = "kubectl-consumergroup", version)]
pub struct Cli {
    /// Path to the kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long, global = true, value_name = "FILE", help_heading = GLOBAL)]
    pub kubeconfig: Option<PathBuf>,

    /// The kubeconfig context to use (default: its current context).
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub context: Option<String>,

    /// Namespace (default: the context's namespace).
    #[arg(short = 'n', long, global = true, help_heading = GLOBAL)]
    pub namespace: Option<String>,

    /// Print json or yaml instead of a table.
    #[arg(short = 'o', long, global = true, value_enum, help_heading = GLOBAL)]
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
    /// Reset a ConsumerGroup's offsets: the plan is shown first and runs only once approved.
    Reset(ResetArgs),
    /// Undo an executed OffsetReset (put back the offsets it replaced), with the same preview.
    Rollback(RollbackArgs),
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

    /// With --live, for a ConsumerGroup on a ClusterKafkaConnection with a Secret: the namespace
    /// the operator runs in, where that Secret lives.
    #[arg(long, value_name = "NAMESPACE")]
    pub operator_namespace: Option<String>,

    /// With --live, the timeout of each Kafka request.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub request_timeout: u64,
}

/// A reset's targets and scope, with the names and formats of `kafka-consumer-groups
/// --reset-offsets`.
#[derive(clap::Args, Debug)]
pub struct ResetArgs {
    /// The ConsumerGroup's name.
    pub name: String,

    /// Target: the log start of each partition.
    #[arg(long, help_heading = "Target (exactly one)")]
    pub to_earliest: bool,
    /// Target: the log end.
    #[arg(long, help_heading = "Target (exactly one)")]
    pub to_latest: bool,
    /// Target: the committed offset (the log end where none).
    #[arg(long, help_heading = "Target (exactly one)")]
    pub to_current: bool,
    /// Target: the first offset at or after this time (RFC 3339 with a zone: 2026-11-20T08:00:00Z).
    #[arg(long, value_name = "DATETIME", value_parser = parse_datetime, help_heading = "Target (exactly one)")]
    pub to_datetime: Option<String>,
    /// Target: now minus this ISO-8601 duration (PT1H, P1DT2H).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, help_heading = "Target (exactly one)")]
    pub by_duration: Option<String>,
    /// Target: the committed offset plus N (negative: replay), kept within the log.
    #[arg(long, value_name = "N", allow_negative_numbers = true, help_heading = "Target (exactly one)")]
    pub shift_by: Option<i64>,
    /// Target: this offset on every partition in scope, kept within the log.
    #[arg(long, value_name = "OFFSET", value_parser = clap::value_parser!(i64).range(0..), help_heading = "Target (exactly one)")]
    pub to_offset: Option<i64>,
    /// Target: the offsets of a CSV file of `topic,partition,offset` lines (the tool's format,
    /// as --export writes); its partitions are the scope.
    #[arg(long, value_name = "FILE", value_parser = parse_offsets_file, help_heading = "Target (exactly one)")]
    pub from_file: Option<OffsetsFile>,
    /// Target: delete the group's committed offsets of the topics given with --topic.
    #[arg(long, help_heading = "Target (exactly one)")]
    pub delete_offsets: bool,

    /// Scope: a topic, optionally only some partitions (`orders:0,2`); repeatable.
    #[arg(long, value_name = "TOPIC[:P,P]", value_parser = parse_topic_scope, help_heading = "Scope")]
    pub topic: Vec<TopicScope>,
    /// Scope: every topic of the ConsumerGroup (spec.topics).
    #[arg(long, help_heading = "Scope")]
    pub all_topics: bool,

    #[command(flatten)]
    pub flow: FlowArgs,
}

#[derive(clap::Args, Debug)]
pub struct RollbackArgs {
    /// The executed OffsetReset whose changes are undone.
    pub reset: String,

    #[command(flatten)]
    pub flow: FlowArgs,
}

/// Preview, approval and execution, shared by reset and rollback.
#[derive(clap::Args, Debug)]
pub struct FlowArgs {
    /// Execute without asking once the plan is shown.
    #[arg(short = 'y', long)]
    pub yes: bool,

    /// Stop after showing the plan; the OffsetReset stays in DryRun, to approve later.
    #[arg(long, conflicts_with = "yes")]
    pub dry_run: bool,

    /// Write the plan to FILE as `topic,partition,offset` lines (kafka-consumer-groups
    /// --reset-offsets --from-file reads them).
    #[arg(long, value_name = "FILE")]
    pub export: Option<PathBuf>,

    /// Seconds to wait for the plan, and again for the execution, before giving up (exit code 4;
    /// a reset already executing goes on in the cluster).
    #[arg(long, default_value_t = 900, value_name = "SECONDS")]
    pub timeout: u64,

    /// How long the operator waits for the consumers to leave the group (spec.quiesceTimeoutSeconds).
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(i32).range(1..=3600))]
    pub quiesce_timeout_seconds: Option<i32>,

    /// Your consumers' session.timeout.ms in seconds (spec.sessionTimeoutSeconds): members still
    /// in the group this long after the workload's pods are gone fail the reset.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(i32).range(1..=1800))]
    pub session_timeout_seconds: Option<i32>,
}

/// The offsets of a `--from-file` CSV.
#[derive(Clone, Debug, PartialEq)]
pub struct OffsetsFile(pub Vec<PartitionOffset>);

impl Cli {
    /// Checks what clap's declarations cannot express; a refusal exits with code 2 like clap's.
    pub fn validate(&self, command: &mut clap::Command) -> Result<(), clap::Error> {
        let Command::Reset(args) = &self.command else { return Ok(()) };
        // With the usage of `reset`, as clap's own errors for it.
        let reset = command.find_subcommand_mut("reset").expect("Command::Reset is the `reset` subcommand");
        let mut usage = |kind, message: String| Err(reset.error(kind, message));
        let targets = args.targets();
        match targets.as_slice() {
            [] => {
                return usage(
                    ErrorKind::MissingRequiredArgument,
                    format!("a reset needs a target: one of {}", TARGET_FLAGS.join(", ")),
                );
            }
            [_] => {}
            [first, second, ..] => {
                return usage(
                    ErrorKind::ArgumentConflict,
                    format!(
                        "{first} and {second} are both targets; give exactly one (kafka-consumer-groups refuses this too)"
                    ),
                );
            }
        }
        let scoped = !args.topic.is_empty() || args.all_topics;
        if args.delete_offsets && args.all_topics {
            return usage(
                ErrorKind::ArgumentConflict,
                "--delete-offsets takes the topics with --topic, not --all-topics (as kafka-consumer-groups --delete-offsets)"
                    .into(),
            );
        }
        if !scoped && args.from_file.is_none() {
            return usage(
                ErrorKind::MissingRequiredArgument,
                "a reset needs a scope: --all-topics (every topic of the ConsumerGroup) or --topic TOPIC[:P,P] (repeatable), as kafka-consumer-groups".into(),
            );
        }
        if !args.topic.is_empty() && args.all_topics {
            return usage(
                ErrorKind::ArgumentConflict,
                "--topic and --all-topics are both scopes; give one of them".into(),
            );
        }
        if args.from_file.is_some() && scoped {
            return usage(
                ErrorKind::ArgumentConflict,
                "--from-file names its own partitions; leave out --topic and --all-topics".into(),
            );
        }
        if args.delete_offsets && args.flow.export.is_some() {
            return usage(
                ErrorKind::ArgumentConflict,
                "--export writes offsets, and --delete-offsets has none; leave one out".into(),
            );
        }
        Ok(())
    }
}

/// The target flags, in the order of `kafka-consumer-groups --help`.
const TARGET_FLAGS: [&str; 9] = [
    "--to-earliest",
    "--to-latest",
    "--to-current",
    "--to-datetime",
    "--by-duration",
    "--shift-by",
    "--to-offset",
    "--from-file",
    "--delete-offsets",
];

impl ResetArgs {
    /// The target flags given.
    pub fn targets(&self) -> Vec<&'static str> {
        let given = [
            self.to_earliest,
            self.to_latest,
            self.to_current,
            self.to_datetime.is_some(),
            self.by_duration.is_some(),
            self.shift_by.is_some(),
            self.to_offset.is_some(),
            self.from_file.is_some(),
            self.delete_offsets,
        ];
        TARGET_FLAGS.iter().zip(given).filter(|(_, given)| *given).map(|(flag, _)| *flag).collect()
    }
}

/// `2026-11-20T08:00:00Z` or with an offset (`+02:00`), as RFC 3339 in UTC. A time without a zone
/// is refused rather than read in this machine's zone: a reset must not depend on where it is typed.
fn parse_datetime(text: &str) -> Result<String, String> {
    let at: k8s_openapi::jiff::Timestamp = text.parse().map_err(|e| {
        format!("{text:?} is not a time with a zone ({e}); write it as RFC 3339, e.g. 2026-11-20T08:00:00Z or 2026-11-20T09:00:00+01:00")
    })?;
    Ok(at.strftime("%Y-%m-%dT%H:%M:%S%.fZ").to_string())
}

fn parse_duration(text: &str) -> Result<String, String> {
    let millis = crate::controllers::offset_reset::target::duration_millis(text)?;
    if millis <= 0 {
        return Err(format!("{text:?} is not a positive duration; write e.g. PT30M or P1DT2H"));
    }
    Ok(text.to_string())
}

/// `orders` or `orders:0,2`, as the tool's --topic.
fn parse_topic_scope(text: &str) -> Result<TopicScope, String> {
    let (name, partitions) = match text.split_once(':') {
        Some((name, list)) => {
            let partitions = list
                .split(',')
                .map(|p| p.trim().parse::<i32>().ok().filter(|p| *p >= 0))
                .collect::<Option<Vec<i32>>>()
                .ok_or_else(|| format!("{text:?}: partitions must be numbers, as in orders:0,2"))?;
            (name, partitions)
        }
        None => (text, Vec::new()),
    };
    if name.is_empty() {
        return Err(format!("{text:?} names no topic"));
    }
    Ok(TopicScope { name: name.to_string(), partitions })
}

/// Reads a `topic,partition,offset` CSV (blank lines skipped).
fn parse_offsets_file(path: &str) -> Result<OffsetsFile, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let offsets = parse_offsets_csv(&text).map_err(|e| format!("{path}: {e}"))?;
    Ok(OffsetsFile(offsets))
}

fn parse_offsets_csv(text: &str) -> Result<Vec<PartitionOffset>, String> {
    let mut offsets = Vec::new();
    for (number, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [topic, partition, offset] = fields.as_slice() else {
            return Err(format!("line {number}: expected topic,partition,offset, found {line:?}"));
        };
        let partition = partition.parse::<i32>().ok().filter(|p| *p >= 0);
        let offset = offset.parse::<i64>().ok().filter(|o| *o >= 0);
        let (Some(partition), Some(offset)) = (partition, offset) else {
            return Err(format!("line {number}: partition and offset must be numbers of 0 or more, found {line:?}"));
        };
        offsets.push(PartitionOffset { topic: topic.to_string(), partition, offset });
    }
    if offsets.is_empty() {
        return Err("no topic,partition,offset lines".into());
    }
    Ok(offsets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_partitions_read_like_the_kafka_tool() {
        assert_eq!(parse_topic_scope("orders"), Ok(TopicScope { name: "orders".into(), partitions: vec![] }));
        assert_eq!(parse_topic_scope("orders:0,2"), Ok(TopicScope { name: "orders".into(), partitions: vec![0, 2] }));
        assert!(parse_topic_scope("orders:x").is_err());
        assert!(parse_topic_scope(":1").is_err());
    }

    #[test]
    fn csv_lines_become_offsets_and_bad_lines_are_named() {
        let offsets = parse_offsets_csv("a,0,5\n\na,1,7\n").unwrap();
        assert_eq!(offsets.len(), 2);
        assert_eq!((offsets[1].topic.as_str(), offsets[1].partition, offsets[1].offset), ("a", 1, 7));
        assert_eq!(
            parse_offsets_csv("g,a,0,5").unwrap_err(),
            "line 1: expected topic,partition,offset, found \"g,a,0,5\""
        );
        assert!(parse_offsets_csv("a,0,-1").unwrap_err().starts_with("line 1:"));
        assert!(parse_offsets_csv("\n").is_err());
    }

    #[test]
    fn times_need_a_zone_and_are_stored_in_utc() {
        assert_eq!(parse_datetime("2026-11-20T09:00:00+01:00"), Ok("2026-11-20T08:00:00Z".into()));
        assert_eq!(parse_datetime("2026-11-20T08:00:00.250Z"), Ok("2026-11-20T08:00:00.25Z".into()));
        assert!(parse_datetime("2026-11-20T08:00:00").unwrap_err().contains("with a zone"));
        assert!(parse_duration("PT0S").is_err());
        assert_eq!(parse_duration("P1DT2H"), Ok("P1DT2H".into()));
    }
}
