//! Status: what a reconcile reports in `.status`, built from the status the object carries, the
//! observation, the plan and what the act step applied. Pure (the time comes in as an argument),
//! so that "written only on change" holds by construction: the same inputs give the same status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::act::Applied;
use super::observe::Observation;
use super::plan::{KafkaObservation, Plan};
use super::report;
use crate::conditions;
use crate::crd::{ConsumerGroup, ConsumerGroupStatus, TopicStatus};

/// The status to write. `lag_interval_seconds` is how often the lag figures in status may move
/// (`--status-lag-interval`).
pub fn build(
    group: &ConsumerGroup,
    observation: &Observation,
    plan: &Plan,
    applied: &Applied,
    now: &Time,
    lag_interval_seconds: i64,
) -> ConsumerGroupStatus {
    let previous = group.status.clone().unwrap_or_default();
    // What the act step met is reported next to the plan, never written into it: a Deployment the
    // apiserver refused replaces the plan's Ready condition, and only a spec change can fix it.
    let mut desired_conditions = plan.conditions.clone();
    if let Some(refused) = &applied.refused {
        desired_conditions.retain(|c| c.type_ != conditions::READY);
        desired_conditions.push(refused.clone());
    }
    let conditions = conditions::merge(&previous.conditions, &desired_conditions, group.metadata.generation, now);
    let kafka = &observation.kafka;
    let seen_group = kafka.group_read();
    // A ConsumerGroup that does not own its groupId keeps nothing of the group's members or lag,
    // not even from a time it did: they belong to the owner.
    let previous = if observation.conflict_with.is_some() {
        ConsumerGroupStatus { group_state: None, member_count: None, members: Vec::new(), lag: None, ..previous }
    } else {
        previous
    };
    let description = kafka.description.as_ref();
    let status = ConsumerGroupStatus {
        observed_generation: group.metadata.generation,
        partitions: plan.partitions.or(previous.partitions),
        topics: match &kafka.kafka {
            KafkaObservation::Seen { partitions, .. } => {
                partitions.iter().map(|(name, &partitions)| TopicStatus { name: name.clone(), partitions }).collect()
            }
            _ => previous.topics.clone(),
        },
        replicas: applied.replicas,
        desired_replicas: plan.desired_replicas.or(previous.desired_replicas),
        selector: observation.workload.as_ref().and_then(|w| w.selector.clone()),
        group_state: if seen_group {
            Some(description.map_or("Dead".to_string(), |d| d.state.as_str().to_string()))
        } else {
            previous.group_state.clone()
        },
        member_count: if seen_group {
            Some(description.map_or(0, |d| d.members.len() as i32))
        } else {
            previous.member_count
        },
        members: if seen_group { report::members(description) } else { previous.members.clone() },
        lag: match &kafka.lag {
            Some(summary) => {
                Some(crate::lag::lag_for_status(previous.lag.as_ref(), &summary.lag_status(), lag_interval_seconds))
            }
            None => previous.lag.clone(),
        },
        last_scale_time: if applied.scaled { Some(now.clone()) } else { previous.last_scale_time.clone() },
        autoscaling: None,
        conditions,
    };
    // The autoscaling figures move every poll: refreshed with the lag figures, or when the
    // decision itself changed.
    let lag_refreshed = status.lag.as_ref().map(|l| &l.measured_at) != previous.lag.as_ref().map(|l| &l.measured_at);
    let autoscaling = match (&plan.autoscaling, &previous.autoscaling) {
        (None, _) if group.spec.scaling.is_none() => None,
        (None, kept) => kept.clone(),
        (Some(fresh), Some(kept))
            if !lag_refreshed && status.desired_replicas == previous.desired_replicas && fresh.rule == kept.rule =>
        {
            Some(kept.clone())
        }
        (Some(fresh), _) => Some(fresh.clone()),
    };
    ConsumerGroupStatus { autoscaling, ..status }
}

/// The member count read from Kafka this time (None: status keeps an older one), for metrics.
pub fn fresh_member_count(observation: &Observation, status: &ConsumerGroupStatus) -> Option<i32> {
    observation.kafka.group_read().then_some(status.member_count).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::{Desired, KAFKA_REACHABLE, READY, reason};
    use crate::controllers::consumer_group::observe::{KafkaOutcome, Workload};
    use crate::crd::{LagStatus, MemberStatus};
    use std::collections::BTreeMap;

    fn group(status: Option<ConsumerGroupStatus>) -> ConsumerGroup {
        let spec = serde_json::from_value(serde_json::json!({"groupId": "orders", "topics": ["t"]})).unwrap();
        let mut group = ConsumerGroup::new("orders", spec);
        group.metadata.generation = Some(3);
        group.status = status;
        group
    }

    fn seen(described: bool) -> Observation {
        Observation {
            conflict_with: None,
            settings: None,
            settings_problem: None,
            workload: Some(Workload { replicas: Some(2), selector: Some("app=x".into()), ..Workload::default() }),
            workload_replicas: Ok(Some(2)),
            observed: true,
            kafka: KafkaOutcome {
                kafka: KafkaObservation::Seen {
                    partitions: BTreeMap::from([("t".to_string(), 4)]),
                    group_unreadable: None,
                    unbatched: None,
                },
                described,
                ..KafkaOutcome::default()
            },
            resets: Default::default(),
        }
    }

    fn plan() -> Plan {
        Plan {
            replicas: Some(2),
            scale_reason: String::new(),
            desired_replicas: Some(2),
            partitions: Some(4),
            conditions: vec![
                Desired::new(KAFKA_REACHABLE, true, reason::CONNECTED, "metadata read"),
                Desired::new(READY, true, "Running", "2 replicas"),
            ],
            history: Vec::new(),
            permanent: false,
            autoscaling: None,
            autoscaling_figures: None,
        }
    }

    fn applied() -> Applied {
        Applied { replicas: Some(2), scaled: false, refused: None }
    }

    fn at(second: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(second).unwrap())
    }

    fn condition<'a>(
        status: &'a ConsumerGroupStatus,
        type_: &str,
    ) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        status.conditions.iter().find(|c| c.type_ == type_).expect("condition present")
    }

    #[test]
    fn the_same_inputs_later_give_the_same_status_so_nothing_is_written() {
        let first = build(&group(None), &seen(true), &plan(), &applied(), &at(100), 60);
        assert_eq!(first.observed_generation, Some(3));
        assert_eq!((first.replicas, first.partitions, first.selector.as_deref()), (Some(2), Some(4), Some("app=x")));
        assert_eq!((first.group_state.as_deref(), first.member_count), (Some("Dead"), Some(0)));
        assert_eq!(first.last_scale_time, None);
        let again = build(&group(Some(first.clone())), &seen(true), &plan(), &applied(), &at(160), 60);
        assert_eq!(again, first, "conditions keep their transition time; nothing else moved");
    }

    #[test]
    fn a_refused_workload_replaces_the_plans_ready_condition() {
        let refused = Applied {
            refused: Some(Desired::new(READY, false, reason::TEMPLATE_INVALID, "bad; fix spec.template")),
            ..applied()
        };
        let status = build(&group(None), &seen(true), &plan(), &refused, &at(100), 60);
        let ready = condition(&status, READY);
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", reason::TEMPLATE_INVALID));
        assert_eq!(status.conditions.iter().filter(|c| c.type_ == READY).count(), 1);
        assert_eq!(condition(&status, KAFKA_REACHABLE).status, "True", "the rest of the plan stands");
    }

    #[test]
    fn what_kafka_did_not_answer_keeps_the_last_known_figures_and_a_conflict_keeps_none() {
        let previous = ConsumerGroupStatus {
            group_state: Some("Stable".into()),
            member_count: Some(1),
            members: vec![MemberStatus {
                client_id: "c".into(),
                host: "h".into(),
                assignment: BTreeMap::new(),
                unlisted_partitions: None,
            }],
            lag: Some(LagStatus { total: 7, ..Default::default() }),
            ..Default::default()
        };
        let unread = build(&group(Some(previous.clone())), &seen(false), &plan(), &applied(), &at(100), 60);
        assert_eq!((unread.group_state.as_deref(), unread.member_count), (Some("Stable"), Some(1)));
        assert_eq!((unread.members.len(), unread.lag.as_ref().map(|l| l.total)), (1, Some(7)));

        let conflict = Observation { conflict_with: Some("other/orders".into()), ..seen(false) };
        let status = build(&group(Some(previous)), &conflict, &plan(), &applied(), &at(100), 60);
        assert_eq!((status.group_state, status.member_count, status.lag), (None, None, None));
        assert!(status.members.is_empty(), "the owner's members are not shown");
    }

    #[test]
    fn a_scale_is_stamped_with_the_time_it_happened() {
        let scaled = Applied { replicas: Some(3), scaled: true, refused: None };
        let status = build(&group(None), &seen(true), &plan(), &scaled, &at(100), 60);
        assert_eq!((status.replicas, status.last_scale_time), (Some(3), Some(at(100))));
    }
}
