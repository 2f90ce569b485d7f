//! Plan: from what was observed, the replicas to set (or none: leave the workload alone) and the
//! conditions to report. Pure; the fault rules ("never scale on missing data") live here.

use std::collections::BTreeMap;

use super::scaling::{self, Limit, Recommendation};
use crate::conditions::{Desired, KAFKA_REACHABLE, READY, REPLICAS_CAPPED, reason};
use crate::crd::{AutoscalingStatus, ConsumerGroup};
use crate::kafka_settings::ConnectionProblem;

/// What Kafka told us this time.
#[derive(Debug, Clone)]
pub enum KafkaObservation {
    /// Kafka was not asked (an earlier step failed).
    NotQueried,
    /// Kafka could not be asked or did not answer; `reason` is a condition reason
    /// (KafkaUnreachable, KafkaConfigInvalid, KafkaAuthFailed).
    Failed {
        reason: &'static str,
        message: String,
    },
    TopicsMissing(Vec<String>),
    Seen {
        partitions: BTreeMap<String, i32>,
        /// Set when metadata answered but the group's state or offsets could not be read.
        group_unreadable: Option<String>,
        /// Why the connection's group reads go through librdkafka (settings the batched reader
        /// cannot honour), if they do.
        unbatched: Option<String>,
    },
}

/// Inputs of a decision.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    pub group: &'a ConsumerGroup,
    /// Name of an OffsetReset that needs the workload stopped now.
    pub reset_in_progress: Option<String>,
    /// Set when an OffsetReset held the workload at zero until now: the replicas it stopped, to
    /// go back to when no new decision can be made (Kafka down): the end of a reset never leaves
    /// a workload at zero.
    pub resume_after_reset: Option<i32>,
    /// `namespace/name` of an earlier ConsumerGroup claiming the same groupId in the same cluster.
    pub conflict_with: Option<String>,
    pub connection: Option<ConnectionProblem>,
    /// The workload's replicas; `Err` names a missing scale target.
    pub workload_replicas: Result<Option<i32>, String>,
    pub kafka: KafkaObservation,
    /// Total lag that counts for scaling, when measured this time (lag mode only).
    pub scaling_lag: Option<i64>,
    /// The group's rates, when measured this time (lag mode only).
    pub rates: Option<ScalingRates>,
    pub now_seconds: i64,
    pub history: &'a [Recommendation],
}

/// Rates lag autoscaling works from.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ScalingRates {
    /// Over the kept polls; None until two polls are kept.
    pub produced_per_second: Option<f64>,
    pub committed_per_second: Option<f64>,
    /// What one consumer processes per second, as learned from backlogged polls.
    pub learned_per_replica: Option<f64>,
}

/// Live autoscaling figures for /metrics.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct AutoscalingFigures {
    pub per_replica_per_second: Option<f64>,
    pub seconds_to_drain: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Replicas to set; None leaves the workload as it is.
    pub replicas: Option<i32>,
    /// Why, for the Scaled event.
    pub scale_reason: String,
    pub desired_replicas: Option<i32>,
    pub partitions: Option<i32>,
    pub conditions: Vec<Desired>,
    pub history: Vec<Recommendation>,
    /// Whether the error is one only a spec change (or new Kafka state) fixes.
    pub permanent: bool,
    /// How lag autoscaling chose, when it did.
    pub autoscaling: Option<AutoscalingStatus>,
    pub autoscaling_figures: Option<AutoscalingFigures>,
}

/// Without a new decision, a workload an OffsetReset just released goes back to what it ran
/// before the reset (the last decision made on real data), not to zero.
fn resume_after_reset(o: &Observed, plan: &mut Plan) {
    if let Some(replicas) = o.resume_after_reset
        && !o.group.spec.paused
    {
        plan.replicas = Some(replicas);
        plan.scale_reason = format!("the OffsetReset ended; back to the {replicas} replicas it stopped");
    }
}

/// Decides in the order the fault rules need: what keeps the operator from acting first (a
/// groupId conflict, a connection problem, a running reset, a missing scale target), then what
/// Kafka answered, then the replicas within the cap.
pub fn plan(o: &Observed) -> Plan {
    let mut plan = Plan {
        replicas: None,
        scale_reason: String::new(),
        desired_replicas: None,
        partitions: None,
        conditions: Vec::new(),
        history: o.history.to_vec(),
        permanent: false,
        autoscaling: None,
        autoscaling_figures: None,
    };
    let spec = &o.group.spec;
    if held_back(o, &mut plan) {
        return plan;
    }
    let current = match &o.workload_replicas {
        Ok(current) => *current,
        Err(missing) => {
            plan.conditions.push(Desired::new(
                READY,
                false,
                reason::SCALE_TARGET_NOT_FOUND,
                format!(
                    "spec.scaleTargetRef {missing} does not exist in this namespace; create it or fix the reference"
                ),
            ));
            return plan;
        }
    };
    let Some(partitions) = kafka_partitions(o, &mut plan) else { return plan };
    let cap: i32 = partitions.values().sum();
    plan.partitions = Some(cap);

    let decision = match &spec.scaling {
        None => {
            plan.scale_reason = format!("spec.replicas is {}", spec.replicas);
            Some(scaling::manual(spec.replicas, cap))
        }
        Some(scaling) => lag_decision(o, &mut plan, scaling, current.unwrap_or(0), cap),
    };
    let Some(decision) = decision else {
        plan.conditions.push(Desired::new(
            READY,
            false,
            reason::LAG_UNAVAILABLE,
            "lag could not be measured; keeping the current replicas",
        ));
        resume_after_reset(o, &mut plan);
        return plan;
    };
    plan.desired_replicas = Some(decision.desired);
    plan.conditions.push(cap_condition(&decision, partitions));

    if spec.paused {
        plan.conditions.push(Desired::new(
            READY,
            true,
            reason::PAUSED,
            format!("spec.paused is true: replicas frozen (the operator would set {})", decision.desired),
        ));
        return plan;
    }
    plan.replicas = Some(decision.desired);
    plan.conditions.push(Desired::new(
        READY,
        true,
        reason::RECONCILED,
        format!("workload runs {} of {cap} possible replicas", decision.desired),
    ));
    plan
}

/// What keeps the operator from acting on the group at all, as a Ready condition (and, for a
/// running reset, the workload held at zero). True when the plan is complete.
fn held_back(o: &Observed, plan: &mut Plan) -> bool {
    if let Some(owner) = &o.conflict_with {
        // Not permanent: the other ConsumerGroup may go away, and this one must then take over
        // within a resync without anyone editing it.
        plan.conditions.push(Desired::new(
            READY,
            false,
            reason::GROUP_ID_CONFLICT,
            format!(
                "groupId {:?} in this Kafka cluster is already managed by ConsumerGroup {owner}; this one is not acted on. Use another groupId or delete one of them",
                o.group.spec.group_id
            ),
        ));
        return true;
    }
    if let Some(problem) = &o.connection {
        plan.permanent = matches!(problem, ConnectionProblem::NoBootstrapServers);
        plan.conditions.push(Desired::new(READY, false, problem.reason(), problem.to_string()));
        return true;
    }
    if let Some(reset) = &o.reset_in_progress {
        plan.replicas = Some(0);
        plan.scale_reason = format!("OffsetReset {reset} needs the consumers stopped");
        plan.conditions.push(Desired::new(
            READY,
            false,
            reason::OFFSET_RESET_IN_PROGRESS,
            format!(
                "OffsetReset {reset} is changing the group's offsets: workload held at zero, autoscaling suspended"
            ),
        ));
        return true;
    }
    false
}

/// The subscribed topics' partition counts when Kafka answered; otherwise the conditions saying
/// what failed (the replicas are left as they are, or as a reset found them) and None.
fn kafka_partitions<'a>(o: &'a Observed, plan: &mut Plan) -> Option<&'a BTreeMap<String, i32>> {
    match &o.kafka {
        KafkaObservation::NotQueried => None,
        KafkaObservation::Failed { reason, message } => {
            let until = if *reason == reason::KAFKA_CONFIG_INVALID {
                "the client properties are fixed"
            } else {
                "Kafka answers"
            };
            let message = format!("{message}; keeping the current replicas until {until}");
            plan.conditions.push(Desired::new(KAFKA_REACHABLE, false, reason, message.clone()));
            plan.conditions.push(Desired::new(READY, false, reason, message));
            resume_after_reset(o, plan);
            None
        }
        KafkaObservation::TopicsMissing(topics) => {
            plan.conditions.push(Desired::new(KAFKA_REACHABLE, true, reason::CONNECTED, "metadata read"));
            plan.conditions.push(Desired::new(
                READY,
                false,
                reason::TOPICS_NOT_FOUND,
                format!(
                    "topics {} do not exist in Kafka; create them or fix spec.topics (replicas left unchanged)",
                    topics.join(", ")
                ),
            ));
            None
        }
        KafkaObservation::Seen { partitions, group_unreadable, unbatched } => {
            plan.conditions.push(match (group_unreadable, unbatched) {
                (None, None) => {
                    Desired::new(KAFKA_REACHABLE, true, reason::CONNECTED, "metadata, group state and offsets read")
                }
                (None, Some(why)) => Desired::new(
                    KAFKA_REACHABLE,
                    true,
                    reason::CONNECTED_UNBATCHED,
                    format!(
                        "metadata, group state and offsets read through librdkafka (one request per group; groups on Kafka 4's consumer protocol, KIP-848, are not seen) because {why}"
                    ),
                ),
                (Some(error), _) => Desired::new(
                    KAFKA_REACHABLE,
                    false,
                    reason::OFFSETS_UNAVAILABLE,
                    format!(
                        "metadata read, but not the group's state or committed offsets: {error}; its lag metrics are withdrawn until they can be read"
                    ),
                ),
            });
            Some(partitions)
        }
    }
}

/// Lag autoscaling's decision, with its reasons and figures in the plan; None when the lag was
/// not measured this time (nothing is decided on missing data).
fn lag_decision(
    o: &Observed,
    plan: &mut Plan,
    scaling: &crate::crd::ScalingSpec,
    current: i32,
    cap: i32,
) -> Option<scaling::ReplicaDecision> {
    let lag = o.scaling_lag?;
    let rates = o.rates.unwrap_or_default();
    let expected = scaling.expected_messages_per_second_per_replica.map(|r| r as f64);
    let per_replica = rates.learned_per_replica.or(expected);
    let drain = scaling.target_drain_seconds.zip(per_replica).map(|(target, per_replica)| scaling::DrainRates {
        target_seconds: i64::from(target),
        production_per_second: rates.produced_per_second.unwrap_or(0.0),
        per_replica_per_second: per_replica,
    });
    let (decision, history) = scaling::autoscale(&scaling::LagInput {
        scaling,
        total_lag: lag,
        drain,
        current_replicas: current,
        partitions: cap,
        now_seconds: o.now_seconds,
        history: o.history,
    });
    plan.history = history;
    plan.scale_reason = autoscaling_reason(scaling, lag, current, drain, &decision);
    let seconds_to_drain = crate::lag::seconds_to_drain(lag, rates.produced_per_second, rates.committed_per_second);
    plan.autoscaling = Some(AutoscalingStatus {
        rule: if drain.is_some() { "TimeToDrain" } else { "LagThreshold" }.to_string(),
        reason: plan.scale_reason.clone(),
        production_rate: rates.produced_per_second.map(rate_text),
        consumption_rate: rates.committed_per_second.map(rate_text),
        per_replica_rate: per_replica.map(rate_text),
        seconds_to_drain: seconds_to_drain.map(|s| s.ceil() as i64),
    });
    plan.autoscaling_figures = Some(AutoscalingFigures { per_replica_per_second: per_replica, seconds_to_drain });
    Some(decision)
}

/// The ReplicasCapped condition: which limit, if any, held the requested replicas back.
fn cap_condition(decision: &scaling::ReplicaDecision, partitions: &BTreeMap<String, i32>) -> Desired {
    let cap: i32 = partitions.values().sum();
    match decision.limited_by {
        Some(Limit::Partitions) => {
            let per_topic = partitions.iter().map(|(t, p)| format!("{t}: {p}")).collect::<Vec<_>>().join(", ");
            Desired::new(
                REPLICAS_CAPPED,
                true,
                reason::PARTITION_CAP,
                format!(
                    "requested {} replicas, allowed {}: the subscribed topics have {cap} partitions ({per_topic}) and a consumer beyond that would sit idle",
                    decision.requested, decision.desired
                ),
            )
        }
        Some(Limit::MaxReplicas) => Desired::new(
            REPLICAS_CAPPED,
            true,
            reason::MAX_REPLICAS,
            format!(
                "requested {} replicas, allowed {} by spec.scaling.maxReplicas",
                decision.requested, decision.desired
            ),
        ),
        None => Desired::new(
            REPLICAS_CAPPED,
            false,
            reason::WITHIN_LIMITS,
            format!("requested {} replicas, within the {cap} partitions", decision.requested),
        ),
    }
}

/// A rate as status shows it: three significant figures, as decimal text.
fn rate_text(rate: f64) -> String {
    match rate.abs() {
        r if r >= 100.0 => format!("{rate:.0}"),
        r if r >= 10.0 => format!("{rate:.1}"),
        _ => format!("{rate:.2}"),
    }
}

/// Why lag autoscaling wants what it wants, in one line.
fn autoscaling_reason(
    scaling: &crate::crd::ScalingSpec,
    lag: i64,
    current: i32,
    drain: Option<scaling::DrainRates>,
    decision: &scaling::ReplicaDecision,
) -> String {
    let mut reason = if current == 0 && lag <= scaling.activation_lag_threshold {
        format!("no consumers, and lag {lag} is within activationLagThreshold {}", scaling.activation_lag_threshold)
    } else if let Some(d) = drain {
        format!(
            "time to drain: (production {}/s + lag {lag} / {} s) / {}/s per replica = {} replicas",
            rate_text(d.production_per_second),
            d.target_seconds,
            rate_text(d.per_replica_per_second),
            decision.requested
        )
    } else if scaling.target_drain_seconds.is_some() {
        format!(
            "total lag {lag} / lagThreshold {} = {} replicas (time to drain waits for a per-replica rate: measured while consumers have lag, or spec.scaling.expectedMessagesPerSecondPerReplica)",
            scaling.lag_threshold, decision.requested
        )
    } else {
        format!("total lag {lag} / lagThreshold {} = {} replicas", scaling.lag_threshold, decision.requested)
    };
    if decision.desired > decision.recommended {
        reason.push_str(&format!(
            "; held at {} by the {} s scale-down stabilization window",
            decision.desired, scaling.scale_down_stabilization_seconds
        ));
    } else if decision.desired < decision.recommended {
        reason.push_str(&format!("; {} now, at most scaleUpMaxStep more per decision", decision.desired));
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ConsumerGroupSpec;

    fn group(extra: serde_json::Value) -> ConsumerGroup {
        let mut spec =
            serde_json::json!({"groupId": "g", "topics": ["t"], "scaleTargetRef": {"kind": "Deployment", "name": "d"}});
        spec.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        ConsumerGroup::new("cg", serde_json::from_value::<ConsumerGroupSpec>(spec).unwrap())
    }

    fn observed(group: &ConsumerGroup, kafka: KafkaObservation) -> Observed<'_> {
        Observed {
            group,
            reset_in_progress: None,
            resume_after_reset: None,
            conflict_with: None,
            connection: None,
            workload_replicas: Ok(Some(2)),
            kafka,
            scaling_lag: None,
            rates: None,
            now_seconds: 0,
            history: &[],
        }
    }

    fn seen(n: i32) -> KafkaObservation {
        KafkaObservation::Seen {
            partitions: BTreeMap::from([("t".to_string(), n)]),
            group_unreadable: None,
            unbatched: None,
        }
    }

    fn condition<'a>(plan: &'a Plan, type_: &str) -> &'a Desired {
        plan.conditions.iter().find(|c| c.type_ == type_).unwrap_or_else(|| panic!("no {type_} in {plan:?}"))
    }

    #[test]
    fn capped_request_sets_the_cap_and_says_so() {
        let g = group(serde_json::json!({"replicas": 10}));
        let p = plan(&observed(&g, seen(6)));
        assert_eq!(p.replicas, Some(6));
        let capped = condition(&p, REPLICAS_CAPPED);
        assert!(capped.status);
        assert!(capped.message.contains("requested 10") && capped.message.contains("allowed 6"), "{}", capped.message);
        assert!(condition(&p, READY).status);
    }

    #[test]
    fn unreachable_kafka_never_touches_replicas() {
        let g = group(serde_json::json!({"replicas": 3}));
        let p = plan(&observed(
            &g,
            KafkaObservation::Failed { reason: reason::KAFKA_UNREACHABLE, message: "timed out".into() },
        ));
        assert_eq!(p.replicas, None);
        assert!(!condition(&p, KAFKA_REACHABLE).status);
        assert!(!condition(&p, READY).status);
    }

    #[test]
    fn unreadable_offsets_say_so_and_manual_replicas_still_apply() {
        let g = group(serde_json::json!({"replicas": 2}));
        let mut p = plan(&observed(
            &g,
            KafkaObservation::Seen {
                partitions: BTreeMap::from([("t".to_string(), 6)]),
                group_unreadable: Some("Group authorization failed".into()),
                unbatched: None,
            },
        ));
        let reachable = condition(&p, KAFKA_REACHABLE);
        assert_eq!((reachable.status, reachable.reason), (false, reason::OFFSETS_UNAVAILABLE));
        assert!(reachable.message.contains("Group authorization failed"), "{}", reachable.message);
        assert_eq!(p.replicas, Some(2), "spec.replicas needs no offsets");

        let g = group(serde_json::json!({"scaling": {"lagThreshold": 10}}));
        p = plan(&observed(
            &g,
            KafkaObservation::Seen {
                partitions: BTreeMap::from([("t".to_string(), 6)]),
                group_unreadable: Some("x".into()),
                unbatched: None,
            },
        ));
        assert_eq!((p.replicas, condition(&p, READY).reason), (None, reason::LAG_UNAVAILABLE));
    }

    #[test]
    fn missing_topics_are_named_and_nothing_scales() {
        let g = group(serde_json::json!({}));
        let p = plan(&observed(&g, KafkaObservation::TopicsMissing(vec!["a".into(), "b".into()])));
        assert_eq!(p.replicas, None);
        let ready = condition(&p, READY);
        assert_eq!(ready.reason, reason::TOPICS_NOT_FOUND);
        assert!(ready.message.contains("a, b"));
    }

    #[test]
    fn lag_mode_without_lag_data_holds_replicas() {
        let g = group(serde_json::json!({"scaling": {"lagThreshold": 10}}));
        let p = plan(&observed(&g, seen(6)));
        assert_eq!(p.replicas, None);
        assert_eq!(condition(&p, READY).reason, reason::LAG_UNAVAILABLE);
    }

    #[test]
    fn lag_mode_scales_up_to_the_cap() {
        let g = group(serde_json::json!({"scaling": {"lagThreshold": 10}}));
        let mut o = observed(&g, seen(6));
        o.scaling_lag = Some(500);
        let p = plan(&o);
        assert_eq!(p.replicas, Some(6));
        assert_eq!(condition(&p, REPLICAS_CAPPED).reason, reason::PARTITION_CAP);
    }

    #[test]
    fn time_to_drain_says_why_in_status_and_waits_for_a_rate_under_the_lag_threshold() {
        let g = group(serde_json::json!({"scaling": {"lagThreshold": 100, "targetDrainSeconds": 60}}));
        let mut o = observed(&g, seen(12));
        o.scaling_lag = Some(6_000);
        let rates = ScalingRates {
            produced_per_second: Some(100.0),
            committed_per_second: Some(40.0),
            learned_per_replica: None,
        };
        o.rates = Some(rates);
        let waiting = plan(&o);
        let status = waiting.autoscaling.as_ref().unwrap();
        assert_eq!((status.rule.as_str(), waiting.replicas), ("LagThreshold", Some(12)));
        assert!(status.reason.contains("waits for a per-replica rate"), "{}", status.reason);
        assert_eq!(status.seconds_to_drain, None, "consumption below production: the lag does not shrink");

        o.rates = Some(ScalingRates { learned_per_replica: Some(50.0), ..rates });
        let p = plan(&o);
        assert_eq!(p.replicas, Some(4), "(100/s + 6,000 / 60 s) / 50/s");
        let status = p.autoscaling.unwrap();
        assert_eq!(status.rule, "TimeToDrain");
        assert_eq!(
            status.reason,
            "time to drain: (production 100/s + lag 6000 / 60 s) / 50.0/s per replica = 4 replicas"
        );
        assert_eq!(
            (status.production_rate.as_deref(), status.consumption_rate.as_deref(), status.per_replica_rate.as_deref()),
            (Some("100"), Some("40.0"), Some("50.0"))
        );

        // Consumers that outrun production: lag / (consumption - production).
        o.rates = Some(ScalingRates {
            produced_per_second: Some(100.0),
            committed_per_second: Some(160.0),
            learned_per_replica: Some(50.0),
        });
        assert_eq!(plan(&o).autoscaling.unwrap().seconds_to_drain, Some(100));
        // Seeded by the expected rate until one is learned.
        let g = group(
            serde_json::json!({"scaling": {"targetDrainSeconds": 60, "expectedMessagesPerSecondPerReplica": 200}}),
        );
        let mut o = observed(&g, seen(12));
        o.scaling_lag = Some(6_000);
        o.rates = Some(rates);
        assert_eq!(plan(&o).replicas, Some(1), "(100/s + 100/s) / 200/s");
    }

    #[test]
    fn paused_reports_but_does_not_scale() {
        let g = group(serde_json::json!({"replicas": 1, "paused": true}));
        let p = plan(&observed(&g, seen(6)));
        assert_eq!(p.replicas, None);
        assert_eq!(p.desired_replicas, Some(1));
        assert_eq!(condition(&p, READY).reason, reason::PAUSED);
    }

    #[test]
    fn conflict_and_missing_references_block_everything() {
        let g = group(serde_json::json!({}));
        let mut o = observed(&g, seen(6));
        o.conflict_with = Some("ns/first".into());
        let p = plan(&o);
        assert_eq!((p.replicas, p.permanent), (None, false), "looked at again each resync");
        assert!(condition(&p, READY).message.contains("ns/first"));

        let mut o = observed(&g, seen(6));
        o.connection = Some(ConnectionProblem::SecretNotFound {
            name: "kafka-auth".into(),
            namespace: "ns".into(),
            named_in: "spec.kafka.clientPropertiesSecretRef".into(),
        });
        let p = plan(&o);
        assert_eq!(p.replicas, None);
        assert!(condition(&p, READY).message.contains("kafka-auth"));

        let mut o = observed(&g, seen(6));
        o.workload_replicas = Err("Deployment/d".into());
        let p = plan(&o);
        assert_eq!(p.replicas, None);
        assert_eq!(condition(&p, READY).reason, reason::SCALE_TARGET_NOT_FOUND);
    }

    #[test]
    fn a_running_reset_holds_the_workload_at_zero() {
        let g = group(serde_json::json!({"replicas": 3, "scaling": {"lagThreshold": 1}}));
        let mut o = observed(&g, seen(6));
        o.reset_in_progress = Some("replay".into());
        o.scaling_lag = Some(1000);
        let p = plan(&o);
        assert_eq!(p.replicas, Some(0));
        assert_eq!(condition(&p, READY).reason, reason::OFFSET_RESET_IN_PROGRESS);
    }

    #[test]
    fn a_workload_released_by_a_reset_resumes_even_without_kafka() {
        let g = group(serde_json::json!({"replicas": 3}));
        let mut o =
            observed(&g, KafkaObservation::Failed { reason: reason::KAFKA_UNREACHABLE, message: "down".into() });
        o.workload_replicas = Ok(Some(0));
        assert_eq!(plan(&o).replicas, None, "no reset ended: hold");
        o.resume_after_reset = Some(3);
        let p = plan(&o);
        assert_eq!(p.replicas, Some(3));
        assert!(p.scale_reason.contains("OffsetReset ended"), "{}", p.scale_reason);

        let g = group(serde_json::json!({"scaling": {"lagThreshold": 10}}));
        let mut o = observed(&g, seen(6));
        o.resume_after_reset = Some(2);
        assert_eq!(plan(&o).replicas, Some(2), "lag unknown right after the reset: back to before");
    }

    #[test]
    fn a_connection_the_batched_reader_cannot_honour_is_said_in_kafka_reachable() {
        let g = group(serde_json::json!({"replicas": 1}));
        let p = plan(&observed(
            &g,
            KafkaObservation::Seen {
                partitions: BTreeMap::from([("t".to_string(), 6)]),
                group_unreadable: None,
                unbatched: Some("property \"sasl.mechanism\" is GSSAPI".into()),
            },
        ));
        let reachable = condition(&p, KAFKA_REACHABLE);
        assert_eq!((reachable.status, reachable.reason), (true, reason::CONNECTED_UNBATCHED));
        assert!(reachable.message.contains("sasl.mechanism") && reachable.message.contains("KIP-848"));
    }

    #[test]
    fn partitions_of_several_topics_add_up() {
        let g = group(serde_json::json!({"topics": ["a", "b"], "replicas": 100}));
        let p = plan(&observed(
            &g,
            KafkaObservation::Seen {
                partitions: BTreeMap::from([("a".to_string(), 4), ("b".to_string(), 2)]),
                group_unreadable: None,
                unbatched: None,
            },
        ));
        assert_eq!((p.partitions, p.replicas), (Some(6), Some(6)));
        assert!(condition(&p, REPLICAS_CAPPED).message.contains("a: 4, b: 2"));
    }
}
