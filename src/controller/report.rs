//! Report: what a reconcile tells people besides status: the Prometheus figures of a group, and
//! the member list status carries.

use kube::ResourceExt;

use super::plan::AutoscalingFigures;
use crate::crd::{ConsumerGroup, ConsumerGroupStatus, MemberStatus};
use crate::kafka::GroupDescription;
use crate::metrics::{ExternalFigures, GroupLabels, Metrics, PartitionLabels};

/// Members listed in status; memberCount carries the total.
const MAX_MEMBERS_IN_STATUS: usize = 50;

/// Workload figures from status; group and lag figures only when measured this time: an HPA or
/// alert on them must never act on a frozen last value.
pub fn record_metrics(
    metrics: &Metrics,
    group: &ConsumerGroup,
    status: &ConsumerGroupStatus,
    members: Option<i32>,
    lag: Option<&crate::lag::Summary>,
) {
    let labels = GroupLabels { namespace: group.namespace().unwrap_or_default(), consumergroup: group.name_any() };
    let set =
        |family: &prometheus_client::metrics::family::Family<GroupLabels, prometheus_client::metrics::gauge::Gauge>,
         value: Option<i32>| {
            if let Some(value) = value {
                family.get_or_create(&labels).set(i64::from(value));
            }
        };
    set(&metrics.replicas, status.replicas);
    set(&metrics.desired_replicas, status.desired_replicas);
    set(&metrics.partitions, status.partitions);
    match members {
        Some(members) => {
            metrics.members.get_or_create(&labels).set(i64::from(members));
        }
        None => {
            metrics.members.remove(&labels);
        }
    }
    let Some(lag) = lag else {
        metrics.forget_lag(&labels);
        return;
    };
    let mut selection = group.labels().clone();
    selection.insert("consumergroup".to_string(), group.name_any());
    let measured_at = lag.status.measured_at.clone().or_else(|| status.lag.as_ref()?.measured_at.clone());
    if let Some(measured_at) = measured_at {
        metrics.set_external_figures(
            &labels,
            ExternalFigures {
                labels: selection,
                lag: lag.status.total,
                max_lag: lag.status.max_partition_lag,
                max_lag_seconds: lag.max_lag_seconds,
                drain_seconds: crate::lag::seconds_to_drain(
                    lag.status.total,
                    lag.rates.map(|r| r.produced_per_second),
                    lag.rates.and_then(|r| r.committed_per_second),
                ),
                measured_at,
            },
        );
    }
    metrics.lag_sum.get_or_create(&labels).set(lag.status.total);
    metrics.max_lag.get_or_create(&labels).set(lag.status.max_partition_lag);
    metrics.max_lag_seconds.get_or_create(&labels).set(lag.max_lag_seconds);
    metrics.health.get_or_create(&labels).set(lag.health.code());
    match lag.rates {
        Some(rates) => {
            metrics.production_rate.get_or_create(&labels).set(rates.produced_per_second);
            match rates.committed_per_second {
                Some(rate) => {
                    metrics.consumption_rate.get_or_create(&labels).set(rate);
                }
                None => {
                    metrics.consumption_rate.remove(&labels);
                }
            }
        }
        None => {
            metrics.production_rate.remove(&labels);
            metrics.consumption_rate.remove(&labels);
        }
    }
    let (namespace, consumergroup): (std::sync::Arc<str>, std::sync::Arc<str>) =
        (labels.namespace.as_str().into(), labels.consumergroup.as_str().into());
    let series = lag
        .partitions
        .iter()
        .map(|p| {
            let partition_labels = PartitionLabels {
                namespace: namespace.clone(),
                consumergroup: consumergroup.clone(),
                topic: p.topic.clone(),
                partition: p.partition,
            };
            (partition_labels, p.lag, p.lag_seconds, p.committed)
        })
        .collect();
    metrics.set_partition_series(&labels, series);
}

/// The live figures of lag autoscaling; absent ones are removed, not frozen.
pub fn record_autoscaling(metrics: &Metrics, group: &ConsumerGroup, figures: Option<&AutoscalingFigures>) {
    let labels = GroupLabels { namespace: group.namespace().unwrap_or_default(), consumergroup: group.name_any() };
    let figures = figures.copied().unwrap_or_default();
    for (family, value) in [
        (&metrics.per_replica_rate, figures.per_replica_per_second),
        (&metrics.drain_seconds, figures.seconds_to_drain),
    ] {
        match value {
            Some(value) => {
                family.get_or_create(&labels).set(value);
            }
            None => {
                family.remove(&labels);
            }
        }
    }
}

pub fn members(description: Option<&GroupDescription>) -> Vec<MemberStatus> {
    let Some(description) = description else { return Vec::new() };
    let mut members: Vec<MemberStatus> = description
        .members
        .iter()
        .map(|m| {
            let mut assignment = std::collections::BTreeMap::<String, Vec<i32>>::new();
            for tp in &m.assignment {
                assignment.entry(tp.topic.clone()).or_default().push(tp.partition);
            }
            for partitions in assignment.values_mut() {
                partitions.sort_unstable();
            }
            MemberStatus { client_id: m.client_id.clone(), host: m.host.clone(), assignment }
        })
        .collect();
    // Stable order so an unchanged group does not rewrite status.
    members.sort_by(|a, b| (&a.client_id, &a.host, &a.assignment).cmp(&(&b.client_id, &b.host, &b.assignment)));
    members.truncate(MAX_MEMBERS_IN_STATUS);
    members
}
