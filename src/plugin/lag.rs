//! `lag NAME`: per-partition lag in `kafka-consumer-groups --describe`'s column order, from the
//! ConsumerGroup's status or (`--live`) read from Kafka with the operator's own observer, so the
//! figures follow the same rules as status and metrics (read_committed log ends, auto.offset.reset
//! for partitions never committed).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use serde::Serialize;

use super::cli::LagArgs;
use super::output::{Format, age, or_dash, print_object, table};
use super::{Cluster, api_error, get_group};
use crate::crd::ConsumerGroup;
use crate::kafka::KafkaClient;
use crate::kafka::observer::{GroupView, Interest, Observer};
use crate::kafka_settings::{self, ConnectionProblem, DefaultConnection};

/// What one refresh shows (also the `-o json|yaml` document).
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
struct LagReport {
    namespace: String,
    consumer_group: String,
    group_id: String,
    /// `status` (the operator's last figures) or `kafka` (read now).
    source: &'static str,
    measured_at: Option<String>,
    total_lag: i64,
    /// Partitions status leaves out (it lists at most 100, those with the most lag).
    partitions_omitted: i32,
    partitions: Vec<PartitionRow>,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
struct PartitionRow {
    topic: String,
    partition: i32,
    current_offset: Option<i64>,
    log_end_offset: i64,
    lag: i64,
    lag_seconds: Option<i64>,
    client_id: Option<String>,
    host: Option<String>,
}

pub async fn run(cluster: &Cluster, args: LagArgs, format: Option<Format>) -> anyhow::Result<ExitCode> {
    let group = get_group(cluster, &args.name).await?;
    let mut live = if args.live { Some(Live::connect(cluster, &group, &args).await?) } else { None };
    let interval = Duration::from_secs(args.interval);
    let terminal = std::io::stdout().is_terminal();
    loop {
        let started = Instant::now();
        let report = match &mut live {
            Some(live) => live.read(&group).await,
            None => get_group(cluster, &args.name).await.and_then(|group| from_status(&group)),
        };
        if !args.watch {
            show(&report?, format, live.is_some())?;
            return Ok(ExitCode::SUCCESS);
        }
        if terminal && format.is_none() {
            // Redraw in place, as `watch` does.
            print!("\x1b[2J\x1b[H");
        }
        if format.is_none() {
            let now = k8s_openapi::jiff::Timestamp::now().strftime("%H:%M:%S");
            println!("Every {}s: lag of {} at {now} (Ctrl-C to stop)\n", args.interval, args.name);
        }
        match report {
            Ok(report) => show(&report, format, live.is_some())?,
            // A refresh that fails (Kafka unreachable for a moment) is shown, and watching goes on.
            Err(error) => eprintln!("error: {error:#}"),
        }
        if format.is_none() && !terminal {
            println!();
        }
        // The live observer paces itself at the interval; status is re-read on this clock.
        if live.is_none() {
            tokio::time::sleep(interval.saturating_sub(started.elapsed())).await;
        }
    }
}

fn show(report: &LagReport, format: Option<Format>, live: bool) -> anyhow::Result<()> {
    if let Some(format) = format {
        return print_object(report, format);
    }
    let headers = ["TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "LAG-SECONDS", "CLIENT-ID", "HOST"];
    let rows: Vec<Vec<String>> = report
        .partitions
        .iter()
        .map(|p| {
            vec![
                p.topic.clone(),
                p.partition.to_string(),
                or_dash(p.current_offset),
                p.log_end_offset.to_string(),
                p.lag.to_string(),
                or_dash(p.lag_seconds),
                or_dash(p.client_id.clone()),
                or_dash(p.host.clone()),
            ]
        })
        .collect();
    print!("{}", table(&headers, &rows));
    let when = report.measured_at.as_deref().map_or(String::new(), |at| {
        let ago = at.parse().ok().map(|t| age(Some(t))).unwrap_or_default();
        format!(", measured {at} ({ago} ago)")
    });
    let source = if live { "read from Kafka now" } else { "from status" };
    println!(
        "\nConsumerGroup {} (group {}): total lag {}, {source}{when}",
        report.consumer_group, report.group_id, report.total_lag
    );
    if report.partitions_omitted > 0 {
        println!(
            "{} partitions with less lag are not listed in status; --live lists every partition",
            report.partitions_omitted
        );
    }
    if live && report.partitions.iter().any(|p| p.lag > 0) {
        let note = if report.partitions.iter().all(|p| p.lag_seconds.is_none()) {
            "LAG-SECONDS needs two readings: add --watch"
        } else {
            "LAG-SECONDS is interpolated from the log ends seen since this command started: a lower bound for older messages"
        };
        println!("{note}");
    }
    Ok(())
}

/// The lag in the ConsumerGroup's status.
fn from_status(group: &ConsumerGroup) -> anyhow::Result<LagReport> {
    let name = group.name_any();
    let status = group.status.clone().unwrap_or_default();
    let Some(lag) = status.lag else {
        anyhow::bail!(
            "ConsumerGroup {name} has no lag in its status yet (`kubectl consumergroup describe {name}` says why); --live reads Kafka directly"
        );
    };
    let mut owners: BTreeMap<(String, i32), (String, String)> = BTreeMap::new();
    for member in &status.members {
        for (topic, partitions) in &member.assignment {
            for partition in partitions {
                owners.insert((topic.clone(), *partition), (member.client_id.clone(), member.host.clone()));
            }
        }
    }
    Ok(LagReport {
        namespace: group.namespace().unwrap_or_default(),
        consumer_group: name,
        group_id: group.spec.group_id.clone(),
        source: "status",
        measured_at: lag.measured_at.map(|t| t.0.to_string()),
        total_lag: lag.total,
        partitions_omitted: lag.partitions_omitted,
        partitions: lag
            .partitions
            .into_iter()
            .map(|p| {
                let owner = owners.get(&(p.topic.clone(), p.partition));
                PartitionRow {
                    current_offset: p.committed_offset,
                    log_end_offset: p.log_end_offset,
                    lag: p.lag,
                    lag_seconds: p.lag_seconds,
                    client_id: owner.map(|o| o.0.clone()),
                    host: owner.map(|o| o.1.clone()),
                    topic: p.topic,
                    partition: p.partition,
                }
            })
            .collect(),
    })
}

/// Reads Kafka with the operator's observer, on the ConsumerGroup's connection.
struct Live {
    observer: Arc<Observer>,
    interest: Interest,
    /// How long one reading may take.
    wait: Duration,
    /// When the last reading shown was taken, and how many were shown.
    last: Option<Instant>,
    readings: u32,
}

impl Live {
    async fn connect(cluster: &Cluster, group: &ConsumerGroup, args: &LagArgs) -> anyhow::Result<Live> {
        // The operator's rules on Secrets apply: a workload namespace's Secret is used only when
        // labelled for it, so --live never reads what the operator would refuse.
        let defaults = DefaultConnection {
            bootstrap_servers: args.bootstrap_server.clone(),
            properties_dir: None,
            allowed_group_ids: None,
            operator_namespace: args.operator_namespace.clone(),
            namespace_secrets: true,
        };
        let name = group.name_any();
        let connection = match kafka_settings::resolve(&cluster.client, group, &defaults).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(ConnectionProblem::NoBootstrapServers)) => anyhow::bail!(
                "ConsumerGroup {name} sets no spec.kafka.bootstrapServers and uses the operator's default, which this command cannot see: pass --bootstrap-server HOST:PORT"
            ),
            Ok(Err(ConnectionProblem::OperatorNamespaceUnknown { name: connection })) => anyhow::bail!(
                "ConsumerGroup {name} uses ClusterKafkaConnection {connection}, whose Secret is in the operator's namespace: pass --operator-namespace NAMESPACE"
            ),
            Ok(Err(problem)) => anyhow::bail!("ConsumerGroup {name}: {problem}"),
            Err(error) => return Err(api_error(error, "the ConsumerGroup's connection")),
        };
        let client = KafkaClient::new(&connection.properties)
            .map_err(|e| anyhow::anyhow!("ConsumerGroup {name}: cannot set up a Kafka client: {e}"))?;
        let timeout = Duration::from_secs(args.request_timeout);
        let observer = Observer::start(Arc::new(client), timeout, Duration::ZERO, Box::new(|_| {}));
        let interest = Interest {
            topics: group.spec.topics.clone(),
            every: Duration::from_secs(args.interval),
            policy: group.spec.auto_offset_reset,
            polls_kept: 0,
            learns_capacity: false,
        };
        // A poll takes a few requests, each within the timeout; then the next one is due.
        let wait = timeout * 3 + interest.every;
        Ok(Live { observer, interest, wait, last: None, readings: 0 })
    }

    /// The next reading the observer takes (the first one at once).
    async fn read(&mut self, group: &ConsumerGroup) -> anyhow::Result<LagReport> {
        let group_id = &group.spec.group_id;
        let deadline = Instant::now() + self.wait;
        let snapshot = loop {
            let snapshot = self.observer.observe(group_id, &self.interest, self.wait).await?;
            if self.last.is_none_or(|last| snapshot.taken > last) {
                break snapshot;
            }
            if Instant::now() > deadline {
                anyhow::bail!("Kafka gave no new reading within {}s", self.wait.as_secs());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        self.last = Some(snapshot.taken);
        self.readings += 1;
        let (description, summary) = match snapshot.view(group_id, &group.spec.topics) {
            GroupView::Failed(error) => anyhow::bail!("Kafka could not be read: {error}"),
            GroupView::TopicsMissing(topics) => anyhow::bail!("topics do not exist in Kafka: {}", topics.join(", ")),
            GroupView::Seen { group, lag, .. } => (group?, lag?),
        };
        let mut owners: BTreeMap<(&str, i32), (&str, &str)> = BTreeMap::new();
        for member in description.iter().flat_map(|d| &d.members) {
            for tp in &member.assignment {
                owners.insert((tp.topic.as_str(), tp.partition), (member.client_id.as_str(), member.host.as_str()));
            }
        }
        // The observer's time lag needs log ends seen at two moments; on the first reading it is
        // not known yet.
        let time_lag_known = self.readings > 1;
        let partitions = summary
            .partitions
            .iter()
            .map(|p| {
                let owner = owners.get(&(&*p.topic, p.partition));
                PartitionRow {
                    topic: p.topic.to_string(),
                    partition: p.partition,
                    current_offset: p.committed,
                    log_end_offset: p.log_end,
                    lag: p.lag,
                    lag_seconds: time_lag_known.then_some(p.lag_seconds.round() as i64),
                    client_id: owner.map(|o| o.0.to_string()),
                    host: owner.map(|o| o.1.to_string()),
                }
            })
            .collect();
        Ok(LagReport {
            namespace: group.namespace().unwrap_or_default(),
            consumer_group: group.name_any(),
            group_id: group_id.clone(),
            source: "kafka",
            measured_at: Some(summary.measured_at.0.to_string()),
            total_lag: summary.total,
            partitions_omitted: 0,
            partitions,
        })
    }
}
