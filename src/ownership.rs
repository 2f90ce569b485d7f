//! Which ConsumerGroup owns a Kafka group id: of the ConsumerGroups naming the same groupId in the
//! same Kafka cluster, the earliest-created one that the operator serves. Both controllers ask:
//! the ConsumerGroup controller acts only for the owner, and the OffsetReset controller changes
//! offsets only for it, in any namespace (the operator writes offsets with the platform's
//! credentials, so a namespace must not reach another team's group by naming its groupId).
//!
//! A ConsumerGroup the operator does not serve (its connection refused: a namespace not allowed,
//! an unlabelled Secret, ...) owns nothing: otherwise anyone could squat a group id with an
//! older, unusable ConsumerGroup. Read from the caches, no request.

use kube::ResourceExt;

use crate::context::Context;
use crate::crd::ConsumerGroup;
use crate::kafka_settings::{self, ConnectionProblem};

/// The Ready reason of a ConsumerGroup that is not acted on because another one owns its groupId.
pub const GROUP_ID_CONFLICT: &str = "GroupIdConflict";

/// Whether the operator serves this ConsumerGroup, as its last status says: not when its groupId
/// belongs to another one or its connection was refused. A ConsumerGroup without a status yet is
/// served until its first reconcile says otherwise, so an owner is never displaced by a newcomer
/// before it was looked at.
pub fn is_served(group: &ConsumerGroup) -> bool {
    let ready = group.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    ready.is_none_or(|ready| {
        ready.status == "True"
            || (ready.reason != GROUP_ID_CONFLICT && !ConnectionProblem::REASONS.contains(&ready.reason.as_str()))
    })
}

/// `namespace/name` of the ConsumerGroup that owns `group`'s groupId in its cluster, when that is
/// another one. A cluster is known by Kafka's cluster id once a connection to it has read
/// metadata, else by its bootstrap servers (sorted): so callers ask again once they have read
/// from Kafka, before they act (see [`cluster_of`]).
pub fn conflicting_owner(ctx: &Context, group: &ConsumerGroup) -> Option<String> {
    let cluster = |g: &ConsumerGroup| cluster_of(ctx, g);
    let cached: Vec<_> = ctx.caches.groups.iter().flat_map(|store| store.state()).collect();
    owner_among(group, cached.iter().map(AsRef::as_ref), cluster)
}

/// How ownership names a ConsumerGroup's Kafka cluster: `id:` and Kafka's cluster id when known,
/// `servers:` and its bootstrap servers otherwise.
pub fn cluster_of(ctx: &Context, group: &ConsumerGroup) -> Option<String> {
    let default = ctx.settings.defaults.bootstrap_servers.as_deref();
    let key = kafka_settings::cluster_key(&kafka_settings::bootstrap_servers(group, default, &ctx.caches.connections)?);
    Some(match ctx.kafka.cluster_id(&key) {
        Some(id) => format!("id:{id}"),
        None => format!("servers:{key}"),
    })
}

/// Whether `group`'s cluster is known by its Kafka cluster id yet (not only by its servers).
pub fn cluster_identified(ctx: &Context, group: &ConsumerGroup) -> bool {
    cluster_of(ctx, group).is_some_and(|cluster| cluster.starts_with("id:"))
}

/// The earliest-created served ConsumerGroup among `others` that claims `group`'s groupId in the
/// same cluster (`cluster_of` names a ConsumerGroup's cluster; None: unknown, nothing compared).
pub fn owner_among<'a>(
    group: &ConsumerGroup,
    others: impl Iterator<Item = &'a ConsumerGroup>,
    cluster_of: impl Fn(&ConsumerGroup) -> Option<String>,
) -> Option<String> {
    let cluster = cluster_of(group)?;
    let rank = |g: &ConsumerGroup| (g.metadata.creation_timestamp.clone(), g.namespace(), g.name_any());
    others
        .filter(|other| other.metadata.uid != group.metadata.uid && other.metadata.deletion_timestamp.is_none())
        .filter(|other| other.spec.group_id == group.spec.group_id && rank(other) < rank(group))
        .filter(|other| is_served(other))
        .filter(|other| cluster_of(other).as_ref() == Some(&cluster))
        .min_by_key(|other| rank(other))
        .map(|other| format!("{}/{}", other.namespace().unwrap_or_default(), other.name_any()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(namespace: &str, name: &str, created: i64, ready: Option<(&str, &str)>) -> ConsumerGroup {
        let conditions: Vec<serde_json::Value> = ready
            .map(|(status, reason)| {
                serde_json::json!({"type": "Ready", "status": status, "reason": reason, "message": "",
                    "lastTransitionTime": "2026-12-02T00:00:00Z"})
            })
            .into_iter()
            .collect();
        let created = k8s_openapi::jiff::Timestamp::from_second(created).unwrap().to_string();
        serde_json::from_value(serde_json::json!({
            "apiVersion": "kafka.operators.dev/v1alpha1", "kind": "ConsumerGroup",
            "metadata": {"name": name, "namespace": namespace, "uid": format!("{namespace}-{name}"), "creationTimestamp": created},
            "spec": {"groupId": "orders", "topics": ["t"]},
            "status": {"conditions": conditions}}))
        .unwrap()
    }

    #[test]
    fn the_oldest_served_claimant_owns_a_group_id() {
        let same_cluster = |_: &ConsumerGroup| Some("kafka:9092".to_string());
        let owner = group("team-a", "orders", 100, Some(("True", "Reconciled")));
        let newcomer = group("team-b", "orders", 200, None);
        assert_eq!(owner_among(&newcomer, [&owner].into_iter(), same_cluster), Some("team-a/orders".into()));
        assert_eq!(owner_among(&owner, [&newcomer].into_iter(), same_cluster), None, "a newcomer owns nothing");
        // Kafka failing does not end ownership: the owner's consumers may still run.
        let failing = group("team-a", "orders", 100, Some(("False", "KafkaUnreachable")));
        assert_eq!(owner_among(&newcomer, [&failing].into_iter(), same_cluster), Some("team-a/orders".into()));
    }

    #[test]
    fn an_unserved_claimant_squats_nothing() {
        let same_cluster = |_: &ConsumerGroup| Some("kafka:9092".to_string());
        let real = group("team-a", "orders", 200, Some(("True", "Reconciled")));
        for reason in ["NamespaceNotAllowed", "SecretNotLabelled", "KafkaConfigInvalid", GROUP_ID_CONFLICT] {
            let squatter = group("team-b", "orders", 100, Some(("False", reason)));
            assert_eq!(owner_among(&real, [&squatter].into_iter(), same_cluster), None, "{reason}");
        }
        // Unknown or other clusters are not compared.
        let elsewhere = group("team-b", "orders", 100, None);
        let other_cluster = |g: &ConsumerGroup| Some(g.namespace().unwrap());
        assert_eq!(owner_among(&real, [&elsewhere].into_iter(), other_cluster), None);
        assert_eq!(owner_among(&real, [&elsewhere].into_iter(), |_: &ConsumerGroup| None), None);
    }
}
