//! `describe NAME`: what a person checks first about a ConsumerGroup: its settings, state and lag,
//! conditions, members and assignments, its running and last OffsetResets, and recent Events (the
//! operator writes events.k8s.io/v1 Events on the ConsumerGroup and on its OffsetResets).

use std::fmt::Write as _;
use std::process::ExitCode;

use k8s_openapi::api::events::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde::Serialize;

use super::list::readiness;
use super::output::{Format, age, or_dash, print_object, table};
use super::{Cluster, api_error, get_group};
use crate::crd::{ConsumerGroup, OffsetReset, OffsetResetSpec, ResetPhase};

/// Finished resets shown besides the running ones.
const FINISHED_RESETS_SHOWN: usize = 5;
/// Events shown, the most recent.
const EVENTS_SHOWN: usize = 20;

/// The `-o json|yaml` document.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Description {
    consumer_group: ConsumerGroup,
    offset_resets: Vec<OffsetReset>,
    events: Vec<Event>,
}

pub async fn run(cluster: &Cluster, name: &str, format: Option<Format>) -> anyhow::Result<ExitCode> {
    let group = get_group(cluster, name).await?;
    let resets: Api<OffsetReset> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let mut resets: Vec<OffsetReset> = resets
        .list(&ListParams::default())
        .await
        .map_err(|e| api_error(e, "OffsetResets"))?
        .items
        .into_iter()
        .filter(|r| r.spec.consumer_group == name)
        .collect();
    resets.sort_by_key(|r| (r.metadata.creation_timestamp.clone(), r.name_any()));
    // Two filtered lists rather than every Event of a busy namespace.
    let events_api: Api<Event> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let mut events = Vec::new();
    for selector in [format!("regarding.kind=ConsumerGroup,regarding.name={name}"), "regarding.kind=OffsetReset".into()]
    {
        let listed =
            events_api.list(&ListParams::default().fields(&selector)).await.map_err(|e| api_error(e, "Events"))?;
        events.extend(listed.items);
    }
    events.retain(|e| {
        let regarding = e.regarding.as_ref().and_then(|r| Some((r.kind.as_deref()?, r.name.as_deref()?)));
        match regarding {
            Some(("ConsumerGroup", _)) => true,
            Some((_, reset)) => resets.iter().any(|r| r.name_any() == reset),
            None => false,
        }
    });
    events.sort_by_key(event_time);
    let skip = events.len().saturating_sub(EVENTS_SHOWN);
    events.drain(..skip);

    if let Some(format) = format {
        print_object(&Description { consumer_group: group, offset_resets: resets, events }, format)?;
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", text(&group, &resets, &events));
    Ok(ExitCode::SUCCESS)
}

/// A reset's target and scope as the command's flags (`--shift-by -4 --topic orders:0,1`).
fn target_flags(spec: &OffsetResetSpec) -> String {
    let t = &spec.target;
    let target = if t.to_earliest.is_some() {
        "--to-earliest".to_string()
    } else if t.to_latest.is_some() {
        "--to-latest".to_string()
    } else if t.to_current.is_some() {
        "--to-current".to_string()
    } else if let Some(at) = &t.to_datetime {
        format!("--to-datetime {at}")
    } else if let Some(duration) = &t.by_duration {
        format!("--by-duration {duration}")
    } else if let Some(shift) = t.shift_by {
        format!("--shift-by {shift}")
    } else if let Some(offset) = t.to_offset {
        format!("--to-offset {offset}")
    } else if let Some(offsets) = &t.offsets {
        return format!("--from-file ({} offsets)", offsets.len());
    } else if t.delete_offsets.is_some() {
        "--delete-offsets".to_string()
    } else if let Some(name) = &t.rollback_of {
        return format!("rollback {name}");
    } else {
        "-".to_string()
    };
    if spec.topics.is_empty() {
        return format!("{target} --all-topics");
    }
    let scopes: Vec<String> = spec
        .topics
        .iter()
        .map(|s| {
            let partitions: Vec<String> = s.partitions.iter().map(i32::to_string).collect();
            if partitions.is_empty() {
                format!("--topic {}", s.name)
            } else {
                format!("--topic {}:{}", s.name, partitions.join(","))
            }
        })
        .collect();
    format!("{target} {}", scopes.join(" "))
}
fn event_time(event: &Event) -> Option<Timestamp> {
    event
        .event_time
        .as_ref()
        .map(|t| t.0)
        .or_else(|| event.deprecated_last_timestamp.as_ref().map(|t| t.0))
        .or_else(|| event.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// Indents every line of a table under a section title.
fn section(out: &mut String, title: &str, body: &str) {
    let _ = writeln!(out, "{title}:");
    for line in body.lines() {
        let _ = writeln!(out, "  {line}");
    }
}

fn text(group: &ConsumerGroup, resets: &[OffsetReset], events: &[Event]) -> String {
    let status = group.status.clone().unwrap_or_default();
    let spec = &group.spec;
    let mut out = String::new();
    let mut field = |label: &str, value: String| {
        let _ = writeln!(out, "{:<15}{value}", format!("{label}:"));
    };
    field("Name", group.name_any());
    field("Namespace", group.namespace().unwrap_or_default());
    field("Group ID", spec.group_id.clone());
    let partitions: Vec<String> = spec
        .topics
        .iter()
        .map(|t| match status.topics.iter().find(|s| &s.name == t) {
            Some(s) => format!("{t} ({} partitions)", s.partitions),
            None => t.clone(),
        })
        .collect();
    field("Topics", partitions.join(", "));
    let kafka = spec.kafka.clone().unwrap_or_default();
    let connection = match &kafka.connection_ref {
        Some(reference) => format!("{} {} (spec.kafka.connectionRef)", reference.kind.as_str(), reference.name),
        None => {
            let secret = kafka
                .client_properties_secret_ref
                .map_or(String::new(), |s| format!(", client properties from Secret {}", s.name));
            let servers = kafka.bootstrap_servers.unwrap_or_else(|| "the operator's default bootstrap servers".into());
            format!("{servers}{secret}")
        }
    };
    field("Kafka", connection);
    let workload = match (&spec.template, &spec.scale_target_ref) {
        (_, Some(target)) => format!("{:?} {} (scaleTargetRef: replicas only)", target.kind, target.name),
        _ => format!("Deployment {} (owned, from spec.template)", group.name_any()),
    };
    field("Workload", workload);
    let wish = match &spec.scaling {
        Some(s) => {
            let bounds = format!("{}..{} replicas", s.min_replicas, or_dash(s.max_replicas));
            match s.target_drain_seconds {
                Some(drain) => format!(
                    "time-to-drain autoscaling: {bounds}, lag drained within {drain}s (until a rate is known, {} messages of lag per replica)",
                    s.lag_threshold
                ),
                None => format!("lag autoscaling: {bounds}, {} messages of lag per replica", s.lag_threshold),
            }
        }
        None => format!("spec.replicas {}", spec.replicas),
    };
    let paused = if spec.paused { "; PAUSED (spec.paused: replicas frozen)" } else { "" };
    field(
        "Replicas",
        format!("{} running, {} desired, {wish}{paused}", or_dash(status.replicas), or_dash(status.desired_replicas)),
    );
    field("State", format!("{}, {} member(s)", or_dash(status.group_state.clone()), or_dash(status.member_count)));
    let lag = match &status.lag {
        Some(lag) => format!(
            "{} in all, {} at most on one partition, time lag {}, health {}, measured {}",
            lag.total,
            lag.max_partition_lag,
            or_dash(lag.max_lag_seconds.map(|s| format!("{s}s"))),
            or_dash(lag.health.clone()),
            lag.measured_at.as_ref().map_or("-".into(), |t| format!("{} ago", age(Some(t.0)))),
        ),
        None => "not measured yet".into(),
    };
    field("Lag", lag);
    field("Ready", readiness(group));

    let conditions: Vec<Vec<String>> = status
        .conditions
        .iter()
        .map(|c| {
            vec![
                c.type_.clone(),
                c.status.clone(),
                c.reason.clone(),
                age(Some(c.last_transition_time.0)),
                c.message.clone(),
            ]
        })
        .collect();
    section(&mut out, "Conditions", &table(&["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"], &conditions));

    let members: Vec<Vec<String>> = status
        .members
        .iter()
        .map(|m| {
            let assignment: Vec<String> = m
                .assignment
                .iter()
                .map(|(topic, partitions)| {
                    let list: Vec<String> = partitions.iter().map(i32::to_string).collect();
                    format!("{topic}:{}", list.join(","))
                })
                .collect();
            vec![m.client_id.clone(), m.host.clone(), or_dash((!assignment.is_empty()).then(|| assignment.join(" ")))]
        })
        .collect();
    if members.is_empty() {
        let _ = writeln!(out, "Members:       none");
    } else {
        section(&mut out, "Members", &table(&["CLIENT-ID", "HOST", "ASSIGNMENT"], &members));
        let listed = status.members.len() as i32;
        if let Some(more) = status.member_count.filter(|count| *count > listed) {
            let _ = writeln!(out, "  ({} more not listed in status)", more - listed);
        }
    }

    let running = |r: &&OffsetReset| {
        !matches!(r.status.as_ref().and_then(|s| s.phase), Some(ResetPhase::Succeeded | ResetPhase::Failed))
    };
    let finished: Vec<&OffsetReset> = resets.iter().filter(|r| !running(r)).collect();
    let older = finished.len().saturating_sub(FINISHED_RESETS_SHOWN);
    let shown: Vec<&OffsetReset> = resets.iter().filter(running).chain(finished.into_iter().skip(older)).collect();
    if shown.is_empty() {
        let _ = writeln!(out, "OffsetResets:  none");
    } else {
        let rows: Vec<Vec<String>> = shown
            .iter()
            .map(|r| {
                let status = r.status.clone().unwrap_or_default();
                vec![
                    r.name_any(),
                    format!("{:?}", r.spec.mode),
                    or_dash(status.phase.map(|p| format!("{p:?}"))),
                    target_flags(&r.spec),
                    or_dash(status.partition_count),
                    age(r.metadata.creation_timestamp.as_ref().map(|t| t.0)),
                    status.message.unwrap_or_default(),
                ]
            })
            .collect();
        let headers = ["NAME", "MODE", "PHASE", "TARGET", "PARTITIONS", "AGE", "MESSAGE"];
        section(&mut out, "OffsetResets", &table(&headers, &rows));
        if older > 0 {
            let _ = writeln!(out, "  ({older} older finished resets not shown: kubectl get offsetresets)");
        }
    }

    if events.is_empty() {
        let _ = writeln!(out, "Events:        none");
    } else {
        let rows: Vec<Vec<String>> = events
            .iter()
            .map(|e| {
                let regarding = e.regarding.clone().unwrap_or_default();
                vec![
                    age(event_time(e)),
                    e.type_.clone().unwrap_or_default(),
                    e.reason.clone().unwrap_or_default(),
                    format!(
                        "{}/{}",
                        regarding.kind.unwrap_or_default().to_lowercase(),
                        regarding.name.unwrap_or_default()
                    ),
                    e.note.clone().unwrap_or_default(),
                ]
            })
            .collect();
        section(&mut out, "Events", &table(&["AGE", "TYPE", "REASON", "OBJECT", "MESSAGE"], &rows));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(kafka: serde_json::Value, scaling: serde_json::Value) -> ConsumerGroup {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "kafka.operators.dev/v1alpha1", "kind": "ConsumerGroup",
            "metadata": {"name": "orders", "namespace": "shop"},
            "spec": {"groupId": "orders", "topics": ["orders"], "kafka": kafka, "scaling": scaling,
                "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}},
        }))
        .unwrap()
    }

    #[test]
    fn the_connection_and_the_scaling_mode_are_named() {
        let inline = group(
            serde_json::json!({"bootstrapServers": "k:9092", "clientPropertiesSecretRef": {"name": "creds"}}),
            serde_json::json!({"minReplicas": 1, "maxReplicas": 4, "lagThreshold": 50}),
        );
        let shown = text(&inline, &[], &[]);
        assert!(shown.contains("Kafka:         k:9092, client properties from Secret creds\n"), "{shown}");
        assert!(shown.contains("lag autoscaling: 1..4 replicas, 50 messages of lag per replica"), "{shown}");
        let named = group(
            serde_json::json!({"connectionRef": {"kind": "KafkaConnection", "name": "main"}}),
            serde_json::json!({"targetDrainSeconds": 300}),
        );
        let shown = text(&named, &[], &[]);
        assert!(shown.contains("Kafka:         KafkaConnection main (spec.kafka.connectionRef)\n"), "{shown}");
        assert!(shown.contains("time-to-drain autoscaling: 1..- replicas, lag drained within 300s"), "{shown}");
        assert!(shown.contains("Members:       none") && shown.contains("Events:        none"), "{shown}");
    }
}
