//! Observe: reads everything a decision needs (the workload, and the group's part of its
//! connection's observer snapshot). Reads only: no writes, no decisions; each failure is returned
//! as a value so the decision step can turn it into a condition.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::api::Api;
use kube::{Client, ResourceExt};

use crate::connection::Connection;
use crate::crd::{ConsumerGroup, ScaleTargetKind};
use crate::kafka::log_offsets::LogRange;
use crate::kafka::{KafkaError, TopicPartition, markers};

/// The workload as it is now.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// `spec.replicas` of the workload; None when the owned Deployment does not exist yet.
    pub replicas: Option<i32>,
    /// The owned Deployment as stored (template mode), to apply only what differs.
    pub deployment: Option<Deployment>,
    /// Ready pods according to the workload's status (0 where no controller-manager runs).
    pub ready_replicas: Option<i32>,
    pub selector: Option<String>,
}

/// Reads the owned Deployment (template mode) or the scale subresource of the target.
/// Ok(None) means a referenced scale target does not exist.
pub async fn workload(client: &Client, group: &ConsumerGroup) -> Result<Option<Workload>, kube::Error> {
    let namespace = group.namespace().unwrap_or_default();
    if let Some(target) = &group.spec.scale_target_ref {
        let scale = match target.kind {
            ScaleTargetKind::Deployment => {
                let api: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
                get_scale_opt(api.get_scale(&target.name).await)?
            }
            ScaleTargetKind::StatefulSet => {
                let api: Api<StatefulSet> = Api::namespaced(client.clone(), &namespace);
                get_scale_opt(api.get_scale(&target.name).await)?
            }
        };
        return Ok(scale.map(|scale| Workload {
            replicas: scale.spec.and_then(|s| s.replicas),
            deployment: None,
            ready_replicas: None,
            selector: scale.status.and_then(|s| s.selector),
        }));
    }
    let api: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let deployment = api.get_opt(&group.name_any()).await?;
    Ok(Some(Workload {
        replicas: deployment.as_ref().and_then(|d| d.spec.as_ref()).and_then(|s| s.replicas),
        ready_replicas: deployment.as_ref().and_then(|d| d.status.as_ref()).and_then(|s| s.ready_replicas),
        selector: Some(super::workload::selector_string(group)),
        deployment,
    }))
}

fn get_scale_opt(
    result: Result<k8s_openapi::api::autoscaling::v1::Scale, kube::Error>,
) -> Result<Option<k8s_openapi::api::autoscaling::v1::Scale>, kube::Error> {
    match result {
        Ok(scale) => Ok(Some(scale)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

/// The condition reason for a Kafka failure: configuration and login problems are told apart
/// from an unreachable cluster, since only a fix of the Secret helps them.
pub fn failure_reason(error: &KafkaError) -> &'static str {
    use super::conditions::reason;
    match error {
        KafkaError::Config(_) => reason::KAFKA_CONFIG_INVALID,
        KafkaError::Auth(_) => reason::KAFKA_AUTH_FAILED,
        _ => reason::KAFKA_UNREACHABLE,
    }
}

/// Lag inputs of every subscribed partition from an observer's snapshot; partitions whose small
/// remaining lag is only trailing transaction markers get their log end set to the committed
/// offset (lag 0). The marker probe is the one Kafka read of a reconcile, and only for small lag
/// that did not move since the last look (`memo`).
pub async fn lag_offsets(
    connection: &Connection,
    memo: &mut BTreeMap<TopicPartition, MarkerMemo>,
    observed: BTreeMap<TopicPartition, (Option<i64>, LogRange)>,
    timeout: Duration,
) -> Result<BTreeMap<TopicPartition, crate::lag::PartitionOffsets>, KafkaError> {
    let mut offsets: BTreeMap<TopicPartition, crate::lag::PartitionOffsets> = observed
        .into_iter()
        .map(|(tp, (committed, range))| {
            (tp, crate::lag::PartitionOffsets { committed, log_start: range.start, log_end: range.end })
        })
        .collect();

    // Small lag that did not move since the last look may be transaction markers only: probe
    // it once it has stayed put for one poll (a moving log end or commit is real traffic, and a
    // probe per poll would open a consumer per group per poll).
    memo.retain(|tp, _| offsets.contains_key(tp));
    let mut candidates = BTreeMap::new();
    for (tp, o) in &offsets {
        let Some(committed) = o.committed else { continue };
        let remaining = o.log_end - committed;
        if remaining <= 0 || remaining > markers::MAX_MARKER_LAG {
            memo.remove(tp);
            continue;
        }
        match memo.get(tp) {
            Some(m) if m.committed == committed && m.log_end == o.log_end => {
                if !m.probed {
                    candidates.insert(tp.clone(), committed);
                }
            }
            _ => {
                memo.insert(
                    tp.clone(),
                    MarkerMemo { committed, log_end: o.log_end, probed: false, only_markers: false },
                );
            }
        }
    }
    if !candidates.is_empty() {
        let properties = connection.properties.clone();
        let probe = candidates.clone();
        let with_records =
            tokio::task::spawn_blocking(move || markers::partitions_with_records(&properties, &probe, timeout))
                .await
                .map_err(|e| KafkaError::Internal(format!("marker probe task failed: {e}")))??;
        for tp in candidates.keys() {
            if let Some(m) = memo.get_mut(tp) {
                m.probed = true;
                m.only_markers = !with_records.contains(tp);
            }
        }
    }
    for (tp, m) in memo.iter() {
        if m.only_markers
            && let Some(o) = offsets.get_mut(tp)
            && o.committed == Some(m.committed)
            && o.log_end == m.log_end
        {
            o.log_end = m.committed;
        }
    }
    Ok(offsets)
}

/// The offsets last seen for a partition with small lag, and the marker probe's result for them
/// once it ran (valid while the committed offset and log end stay the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarkerMemo {
    pub committed: i64,
    pub log_end: i64,
    /// Whether the probe ran for these offsets.
    pub probed: bool,
    pub only_markers: bool,
}
