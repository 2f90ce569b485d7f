//! Condition types and reasons of ConsumerGroup status, and the merge rule that keeps
//! `lastTransitionTime` when a condition's status did not change. Pure.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The group is served as asked: workload at the desired size, Kafka observed.
pub const READY: &str = "Ready";
/// The operator's Kafka client reached the cluster on the last observation.
pub const KAFKA_REACHABLE: &str = "KafkaReachable";
/// A replica request was cut to the partition count (or the configured bounds).
pub const REPLICAS_CAPPED: &str = "ReplicasCapped";

pub mod reason {
    pub const RECONCILED: &str = "Reconciled";
    pub const PAUSED: &str = "Paused";
    pub const CONNECTED: &str = "Connected";
    /// Connected, but the connection's settings keep group reads on librdkafka's slower path.
    pub const CONNECTED_UNBATCHED: &str = "ConnectedUnbatched";
    pub const KAFKA_UNREACHABLE: &str = "KafkaUnreachable";
    // The connection's own problems (no bootstrap servers, a Secret missing or not opted in, a
    // ClusterKafkaConnection not allowed here) are named by `ConnectionProblem::reason`.
    /// librdkafka refused the client properties (an unknown key, a bad value); nothing was sent.
    pub const KAFKA_CONFIG_INVALID: &str = "KafkaConfigInvalid";
    /// Kafka refused the operator's login or its permissions.
    pub const KAFKA_AUTH_FAILED: &str = "KafkaAuthFailed";
    /// Metadata answered, but the group's state or committed offsets could not be read.
    pub const OFFSETS_UNAVAILABLE: &str = "OffsetsUnavailable";
    pub const TOPICS_NOT_FOUND: &str = "TopicsNotFound";
    pub const SCALE_TARGET_NOT_FOUND: &str = "ScaleTargetNotFound";
    /// Defined where ownership is decided, which the reset controller shares.
    pub const GROUP_ID_CONFLICT: &str = crate::ownership::GROUP_ID_CONFLICT;
    pub const WORKLOAD_APPLY_FAILED: &str = "WorkloadApplyFailed";
    /// spec.template has a field that is not valid in a PodTemplateSpec (the message names it).
    pub const TEMPLATE_INVALID: &str = "TemplateInvalid";
    pub const PARTITION_CAP: &str = "PartitionCap";
    pub const MAX_REPLICAS: &str = "MaxReplicas";
    pub const WITHIN_LIMITS: &str = "WithinLimits";
    pub const LAG_UNAVAILABLE: &str = "LagUnavailable";
    pub const OFFSET_RESET_IN_PROGRESS: &str = "OffsetResetInProgress";
}

/// A condition as decided, before timestamps are attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Desired {
    pub fn new(type_: &'static str, status: bool, reason: &'static str, message: impl Into<String>) -> Desired {
        let message = crate::crd::bounded_text(&message.into(), crate::crd::MAX_MESSAGE_BYTES);
        Desired { type_, status, reason, message }
    }
}

fn status_str(status: bool) -> &'static str {
    if status { "True" } else { "False" }
}

/// Builds the new condition list: a condition whose status is unchanged keeps its
/// `lastTransitionTime`; conditions no longer decided are dropped.
pub fn merge(previous: &[Condition], desired: &[Desired], generation: Option<i64>, now: &Time) -> Vec<Condition> {
    desired
        .iter()
        .map(|d| {
            let status = status_str(d.status).to_string();
            let last_transition_time = previous
                .iter()
                .find(|c| c.type_ == d.type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: d.type_.to_string(),
                status,
                reason: d.reason.to_string(),
                message: d.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// A condition whose status changed between two lists (or that appeared), for Events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub type_: String,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

pub fn transitions(previous: &[Condition], current: &[Condition]) -> Vec<Transition> {
    current
        .iter()
        .filter(|c| !previous.iter().any(|p| p.type_ == c.type_ && p.status == c.status))
        .map(|c| Transition {
            type_: c.type_.clone(),
            status: c.status == "True",
            reason: c.reason.clone(),
            message: c.message.clone(),
        })
        .collect()
}

pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn unchanged_status_keeps_transition_time_even_when_reason_changes() {
        let first = merge(&[], &[Desired::new(READY, true, reason::RECONCILED, "ok")], Some(1), &time(100));
        let second = merge(&first, &[Desired::new(READY, true, reason::PAUSED, "paused")], Some(2), &time(200));
        assert_eq!(second[0].last_transition_time, time(100));
        assert_eq!(second[0].reason, "Paused");
        assert_eq!(second[0].observed_generation, Some(2));
    }

    #[test]
    fn changed_status_gets_new_transition_time() {
        let first = merge(&[], &[Desired::new(KAFKA_REACHABLE, true, reason::CONNECTED, "")], None, &time(100));
        let second =
            merge(&first, &[Desired::new(KAFKA_REACHABLE, false, reason::KAFKA_UNREACHABLE, "down")], None, &time(200));
        assert_eq!(second[0].last_transition_time, time(200));
        assert_eq!(second[0].status, "False");
    }

    #[test]
    fn transitions_report_only_changes_and_new_conditions() {
        let before = merge(
            &[],
            &[
                Desired::new(READY, true, reason::RECONCILED, ""),
                Desired::new(KAFKA_REACHABLE, true, reason::CONNECTED, ""),
            ],
            None,
            &time(1),
        );
        let after = merge(
            &before,
            &[
                Desired::new(READY, true, reason::RECONCILED, "again"),
                Desired::new(KAFKA_REACHABLE, false, reason::KAFKA_UNREACHABLE, "down"),
                Desired::new(REPLICAS_CAPPED, true, reason::PARTITION_CAP, "10 > 6"),
            ],
            None,
            &time(2),
        );
        let changed: Vec<_> = transitions(&before, &after).into_iter().map(|t| (t.type_, t.status)).collect();
        assert_eq!(changed, vec![(KAFKA_REACHABLE.to_string(), false), (REPLICAS_CAPPED.to_string(), true)]);
    }
}
