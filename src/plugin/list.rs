//! `list`: one line per ConsumerGroup, from status.

use std::process::ExitCode;

use kube::ResourceExt;
use kube::api::{Api, ListParams, ObjectList};

use super::output::{Format, age, or_dash, print_object, table};
use super::{Cluster, api_error};
use crate::crd::ConsumerGroup;

pub async fn run(cluster: &Cluster, all_namespaces: bool, format: Option<Format>) -> anyhow::Result<ExitCode> {
    let groups: Api<ConsumerGroup> = if all_namespaces {
        Api::all(cluster.client.clone())
    } else {
        Api::namespaced(cluster.client.clone(), &cluster.namespace)
    };
    let mut list: ObjectList<ConsumerGroup> =
        groups.list(&ListParams::default()).await.map_err(|e| api_error(e, "ConsumerGroups"))?;
    list.items.sort_by_key(|g| (g.namespace(), g.name_any()));
    if let Some(format) = format {
        // kubectl's shape for several objects.
        let items = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": list.items});
        print_object(&items, format)?;
        return Ok(ExitCode::SUCCESS);
    }
    if list.items.is_empty() {
        let place =
            if all_namespaces { "any namespace".to_string() } else { format!("namespace {}", cluster.namespace) };
        eprintln!("No ConsumerGroups found in {place}.");
        return Ok(ExitCode::SUCCESS);
    }
    let mut headers =
        vec!["NAME", "GROUP", "TOPICS", "PARTITIONS", "REPLICAS", "LAG", "TIME-LAG", "STATE", "HEALTH", "READY", "AGE"];
    if all_namespaces {
        headers.insert(0, "NAMESPACE");
    }
    let rows: Vec<Vec<String>> = list
        .items
        .iter()
        .map(|group| {
            let mut row = row(group);
            if all_namespaces {
                row.insert(0, group.namespace().unwrap_or_default());
            }
            row
        })
        .collect();
    print!("{}", table(&headers, &rows));
    Ok(ExitCode::SUCCESS)
}

fn row(group: &ConsumerGroup) -> Vec<String> {
    let status = group.status.clone().unwrap_or_default();
    let lag = status.lag.as_ref();
    let replicas = format!("{}/{}", or_dash(status.replicas), or_dash(status.desired_replicas));
    vec![
        group.name_any(),
        group.spec.group_id.clone(),
        group.spec.topics.join(","),
        or_dash(status.partitions),
        replicas,
        or_dash(lag.map(|l| l.total)),
        or_dash(lag.and_then(|l| l.max_lag_seconds).map(|s| format!("{s}s"))),
        or_dash(status.group_state.clone()),
        or_dash(lag.and_then(|l| l.health.clone())),
        readiness(group),
        age(group.metadata.creation_timestamp.as_ref().map(|t| t.0)),
    ]
}

/// `True`, `False (KafkaUnreachable)`, `True (Paused)`: the Ready condition with its reason
/// unless it is the plain `Reconciled`.
pub fn readiness(group: &ConsumerGroup) -> String {
    let ready = group.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    match ready {
        Some(c) if c.reason == "Reconciled" || c.reason.is_empty() => c.status.clone(),
        Some(c) => format!("{} ({})", c.status, c.reason),
        None => "-".into(),
    }
}
