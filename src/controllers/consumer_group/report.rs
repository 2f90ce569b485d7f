//! Report: what a reconcile tells people besides status: the Prometheus figures of a group, and
//! the member list status carries.

use std::sync::Arc;

use kube::ResourceExt;

use super::plan::AutoscalingFigures;
use crate::crd::{ConsumerGroup, ConsumerGroupStatus, MAX_PARTITIONS_IN_STATUS, MemberStatus};
use crate::kafka::{GroupDescription, MemberDescription};
use crate::metrics::{GroupLabels, GroupSeries, Metrics};

/// Members listed in status; memberCount carries the total.
const MAX_MEMBERS_IN_STATUS: usize = 50;

/// A reconcile's series: workload figures from status; group, lag and autoscaling figures only
/// when measured this time: an HPA or alert on them must never act on a frozen last value.
pub fn record_metrics(
    metrics: &Metrics,
    group: &ConsumerGroup,
    status: &ConsumerGroupStatus,
    members: Option<i32>,
    lag: Option<&Arc<crate::lag::Summary>>,
    autoscaling: Option<&AutoscalingFigures>,
) {
    let labels = GroupLabels { namespace: group.namespace().unwrap_or_default(), consumergroup: group.name_any() };
    let autoscaling = autoscaling.copied().unwrap_or_default();
    let series = GroupSeries {
        replicas: status.replicas,
        desired_replicas: status.desired_replicas,
        partitions: status.partitions,
        members,
        lag: lag.cloned(),
        per_replica_rate: autoscaling.per_replica_per_second,
        drain_seconds: autoscaling.seconds_to_drain,
        labels: group.labels().clone(),
    };
    metrics.set_group(labels, series);
}

pub fn members(description: Option<&GroupDescription>) -> Vec<MemberStatus> {
    let Some(description) = description else { return Vec::new() };
    let mut members: Vec<&MemberDescription> = description.members.iter().collect();
    // Stable order so an unchanged group does not rewrite status.
    members.sort_by(|a, b| (&a.client_id, &a.host, &a.assignment).cmp(&(&b.client_id, &b.host, &b.assignment)));
    members.truncate(MAX_MEMBERS_IN_STATUS);
    let mut partitions_left = MAX_PARTITIONS_IN_STATUS;
    members
        .into_iter()
        .map(|m| {
            let partitions: Vec<(&str, i32)> =
                m.assignment.iter().map(|tp| (tp.topic.as_str(), tp.partition)).collect();
            MemberStatus::bounded(&m.client_id, &m.host, &partitions, &mut partitions_left)
        })
        .collect()
}
