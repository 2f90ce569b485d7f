//! Resolving an OffsetReset target into absolute offsets per partition. Pure: Kafka's answers and
//! the clock come in as arguments. The rules are `kafka-consumer-groups --reset-offsets`'s:
//! explicit, shifted and to-offset targets are clamped to [log start, log end]; a datetime maps to
//! the first offset at or after it, or the log end; `toCurrent` sends an uncommitted partition to
//! the log end; shifting a partition without a committed offset is an error.

use std::collections::BTreeMap;

use crate::crd::{OffsetReset, OffsetResetStatus, PlannedOffset, ResetTarget};
use crate::kafka::TopicPartition;

/// Largest serialized OffsetReset (spec and the plan in status) the operator writes: etcd refuses
/// requests over 1.5 MiB by default, and the stored object carries a little more (managed fields).
/// A plan takes 60 to 350 bytes a partition depending on topic names and offsets, so this holds
/// about 10,000 partitions with short topic names and about 4,000 with the longest.
pub const MAX_OBJECT_BYTES: usize = 1_400_000;

/// Refuses a plan that would not fit in its OffsetReset once stored in status.
pub fn check_size(reset: &OffsetReset, plan: &[PlannedOffset]) -> Result<(), String> {
    let mut object = reset.clone();
    object.status = Some(OffsetResetStatus { plan: plan.to_vec(), ..OffsetResetStatus::default() });
    let bytes = serde_json::to_vec(&object).map_err(|e| format!("cannot serialize the plan: {e}"))?.len();
    if bytes > MAX_OBJECT_BYTES {
        return Err(format!(
            "the plan covers {} partitions and would make this OffsetReset {} KiB, more than the {} KiB an object can hold; split it into several OffsetResets with spec.topics",
            plan.len(),
            bytes / 1024,
            MAX_OBJECT_BYTES / 1024
        ));
    }
    Ok(())
}

/// What Kafka says about one partition, for planning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PartitionState {
    pub committed: Option<i64>,
    pub log_start: i64,
    pub log_end: i64,
    /// For timestamp targets: the first offset at or after the timestamp (None: no such record).
    pub at_timestamp: Option<i64>,
}

/// A target with its time references resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Earliest,
    Latest,
    Current,
    /// Milliseconds since the epoch.
    Timestamp(i64),
    ShiftBy(i64),
    ToOffset(i64),
    Explicit(BTreeMap<TopicPartition, i64>),
    Delete,
}

impl Target {
    /// Resolves the spec's target; `rollback` supplies the plan of the reset being undone.
    pub fn from_spec(target: &ResetTarget, now_ms: i64, rollback: Option<&[PlannedOffset]>) -> Result<Target, String> {
        if target.to_earliest == Some(true) {
            return Ok(Target::Earliest);
        }
        if target.to_latest == Some(true) {
            return Ok(Target::Latest);
        }
        if target.to_current == Some(true) {
            return Ok(Target::Current);
        }
        if let Some(datetime) = &target.to_datetime {
            let at: k8s_openapi::jiff::Timestamp =
                datetime.parse().map_err(|e| format!("toDatetime {datetime:?} is not an RFC 3339 time: {e}"))?;
            return Ok(Target::Timestamp(at.as_millisecond()));
        }
        if let Some(duration) = &target.by_duration {
            let millis = duration_millis(duration)?;
            return Ok(Target::Timestamp(now_ms - millis));
        }
        if let Some(shift) = target.shift_by {
            return Ok(Target::ShiftBy(shift));
        }
        if let Some(offset) = target.to_offset {
            return Ok(Target::ToOffset(offset));
        }
        if let Some(offsets) = &target.offsets {
            return Ok(Target::Explicit(
                offsets
                    .iter()
                    .map(|o| (TopicPartition { topic: o.topic.clone(), partition: o.partition }, o.offset))
                    .collect(),
            ));
        }
        if target.delete_offsets == Some(true) {
            return Ok(Target::Delete);
        }
        if let Some(name) = &target.rollback_of {
            let plan =
                rollback.ok_or_else(|| format!("OffsetReset {name:?} to roll back was not found or has no plan"))?;
            // Partitions that had no committed offset before keep what they have now.
            return Ok(Target::Explicit(
                plan.iter()
                    .filter_map(|p| {
                        p.current_offset.map(|o| (TopicPartition { topic: p.topic.clone(), partition: p.partition }, o))
                    })
                    .collect(),
            ));
        }
        Err("target sets none of the supported fields".to_string())
    }

    pub fn timestamp(&self) -> Option<i64> {
        match self {
            Target::Timestamp(ms) => Some(*ms),
            _ => None,
        }
    }
}

/// ISO-8601 duration (days, hours, minutes, seconds; a day is 24 hours) in milliseconds.
pub fn duration_millis(text: &str) -> Result<i64, String> {
    let span: k8s_openapi::jiff::Span =
        text.parse().map_err(|e| format!("byDuration {text:?} is not an ISO-8601 duration: {e}"))?;
    let seconds = span
        .total((k8s_openapi::jiff::Unit::Millisecond, k8s_openapi::jiff::SpanRelativeTo::days_are_24_hours()))
        .map_err(|e| format!("byDuration {text:?}: {e}"))?;
    Ok(seconds.round() as i64)
}

fn clamp(offset: i64, state: &PartitionState) -> i64 {
    offset.clamp(state.log_start, state.log_end.max(state.log_start))
}

/// The plan: one entry per partition in scope, in partition order.
pub fn resolve(
    target: &Target,
    partitions: &BTreeMap<TopicPartition, PartitionState>,
) -> Result<Vec<PlannedOffset>, String> {
    if let Target::Explicit(offsets) = target
        && let Some(unknown) = offsets.keys().find(|tp| !partitions.contains_key(*tp))
    {
        return Err(format!("partition {unknown} is not in the scope of this reset (check topics and partitions)"));
    }
    let mut missing_commit = Vec::new();
    let mut plan = Vec::new();
    for (tp, state) in partitions {
        let new_offset = match target {
            Target::Earliest => Some(state.log_start),
            Target::Latest => Some(state.log_end),
            Target::Current => Some(state.committed.unwrap_or(state.log_end)),
            Target::Timestamp(_) => Some(state.at_timestamp.unwrap_or(state.log_end)),
            Target::ShiftBy(shift) => match state.committed {
                Some(committed) => Some(clamp(committed.saturating_add(*shift), state)),
                None => {
                    missing_commit.push(tp.to_string());
                    continue;
                }
            },
            Target::ToOffset(offset) => Some(clamp(*offset, state)),
            Target::Explicit(offsets) => match offsets.get(tp) {
                Some(offset) => Some(clamp(*offset, state)),
                None => continue,
            },
            Target::Delete => None,
        };
        plan.push(PlannedOffset {
            topic: tp.topic.clone(),
            partition: tp.partition,
            current_offset: state.committed,
            new_offset,
            delta: match (state.committed, new_offset) {
                (Some(current), Some(new)) => Some(new - current),
                _ => None,
            },
        });
    }
    if !missing_commit.is_empty() {
        return Err(format!(
            "cannot shift offsets of {} because the group has no committed offset there (as kafka-consumer-groups refuses); use toOffset, toEarliest or toLatest",
            missing_commit.join(", ")
        ));
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition { topic: "t".into(), partition: p }
    }

    fn state(committed: Option<i64>, log_start: i64, log_end: i64) -> PartitionState {
        PartitionState { committed, log_start, log_end, at_timestamp: None }
    }

    fn new_offsets(target: Target, partitions: &BTreeMap<TopicPartition, PartitionState>) -> Vec<Option<i64>> {
        resolve(&target, partitions).unwrap().into_iter().map(|p| p.new_offset).collect()
    }

    #[test]
    fn every_scenario_follows_the_reference_rules() {
        let partitions = BTreeMap::from([(tp(0), state(Some(50), 10, 100)), (tp(1), state(None, 0, 30))]);
        assert_eq!(new_offsets(Target::Earliest, &partitions), vec![Some(10), Some(0)]);
        assert_eq!(new_offsets(Target::Latest, &partitions), vec![Some(100), Some(30)]);
        assert_eq!(new_offsets(Target::Current, &partitions), vec![Some(50), Some(30)], "no commit: log end");
        assert_eq!(new_offsets(Target::ToOffset(5), &partitions), vec![Some(10), Some(5)], "clamped to log start");
        assert_eq!(new_offsets(Target::ToOffset(500), &partitions), vec![Some(100), Some(30)], "clamped to log end");
        assert_eq!(new_offsets(Target::Delete, &partitions), vec![None, None]);
    }

    #[test]
    fn shift_is_relative_clamped_and_needs_a_commit() {
        let partitions = BTreeMap::from([(tp(0), state(Some(50), 10, 100))]);
        assert_eq!(new_offsets(Target::ShiftBy(-20), &partitions), vec![Some(30)]);
        assert_eq!(new_offsets(Target::ShiftBy(-100), &partitions), vec![Some(10)]);
        assert_eq!(new_offsets(Target::ShiftBy(1000), &partitions), vec![Some(100)]);
        let plan = resolve(&Target::ShiftBy(-20), &partitions).unwrap();
        assert_eq!((plan[0].current_offset, plan[0].delta), (Some(50), Some(-20)));
        let uncommitted = BTreeMap::from([(tp(0), state(None, 0, 10))]);
        let error = resolve(&Target::ShiftBy(1), &uncommitted).unwrap_err();
        assert!(error.contains("t/0"), "{error}");
    }

    #[test]
    fn timestamps_fall_back_to_the_log_end() {
        let partitions = BTreeMap::from([
            (tp(0), PartitionState { at_timestamp: Some(42), ..state(Some(1), 0, 100) }),
            (tp(1), PartitionState { at_timestamp: None, ..state(Some(1), 0, 100) }),
        ]);
        assert_eq!(new_offsets(Target::Timestamp(0), &partitions), vec![Some(42), Some(100)]);
    }

    #[test]
    fn explicit_offsets_touch_only_listed_partitions_and_refuse_unknown_ones() {
        let partitions = BTreeMap::from([(tp(0), state(Some(5), 0, 100)), (tp(1), state(Some(5), 0, 100))]);
        let plan = resolve(&Target::Explicit(BTreeMap::from([(tp(1), 200)])), &partitions).unwrap();
        assert_eq!(plan.len(), 1);
        assert_eq!((plan[0].partition, plan[0].new_offset), (1, Some(100)));
        let error = resolve(&Target::Explicit(BTreeMap::from([(tp(7), 1)])), &partitions).unwrap_err();
        assert!(error.contains("t/7"), "{error}");
    }

    #[test]
    fn spec_targets_resolve_time_references() {
        let spec = ResetTarget { by_duration: Some("PT1H30M".into()), ..Default::default() };
        assert_eq!(Target::from_spec(&spec, 10_000_000, None).unwrap(), Target::Timestamp(10_000_000 - 5_400_000));
        assert_eq!(duration_millis("P1D").unwrap(), 86_400_000);
        let spec = ResetTarget { to_datetime: Some("1970-01-01T00:00:01Z".into()), ..Default::default() };
        assert_eq!(Target::from_spec(&spec, 0, None).unwrap(), Target::Timestamp(1000));
        let rollback = vec![
            PlannedOffset {
                topic: "t".into(),
                partition: 0,
                current_offset: Some(7),
                new_offset: Some(0),
                delta: Some(-7),
            },
            PlannedOffset { topic: "t".into(), partition: 1, current_offset: None, new_offset: Some(0), delta: None },
        ];
        let spec = ResetTarget { rollback_of: Some("earlier".into()), ..Default::default() };
        assert_eq!(
            Target::from_spec(&spec, 0, Some(&rollback)).unwrap(),
            Target::Explicit(BTreeMap::from([(tp(0), 7)]))
        );
        assert!(Target::from_spec(&spec, 0, None).is_err());
    }
}
