//! Lag arithmetic and the per-partition history behind time lag and the health verdict. Pure.
//!
//! Rules (each differs from a common exporter mistake, and each has a test):
//! - lag = logEnd - committed, never negative;
//! - a committed offset below the log start (retention deleted the messages) counts only what is
//!   still there: logEnd - logStart;
//! - a partition never committed counts like the consumer's `auto.offset.reset`: `latest` -> 0,
//!   `earliest` -> logEnd - logStart;
//! - the caller may pass a log end that excludes trailing transaction markers (see
//!   `kafka::lag`), so a drained transactional partition has lag 0.
//!
//! Time lag is interpolated from the log-end history, as kafka-lag-exporter does: the operator
//! remembers when each partition's log end reached which offset, and the committed offset's age
//! is the time since the log end passed it. It costs no extra Kafka request (reading the record at
//! each committed offset would cost a fetch per lagging partition per cycle), and it is exact to
//! within one poll interval.

use std::collections::{BTreeMap, VecDeque};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::crd::{AutoOffsetReset, LagStatus, PartitionLag};

/// Offsets of one partition as observed in one cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub committed: Option<i64>,
    pub log_start: i64,
    pub log_end: i64,
}

/// Messages between the group's position and the log end.
pub fn partition_lag(offsets: PartitionOffsets, policy: AutoOffsetReset) -> i64 {
    let log_start = offsets.log_start.max(0);
    let log_end = offsets.log_end.max(log_start);
    let position = match offsets.committed {
        None => match policy {
            AutoOffsetReset::Latest => log_end,
            AutoOffsetReset::Earliest => log_start,
        },
        Some(committed) => committed.clamp(log_start, log_end),
    };
    log_end - position
}

/// Burrow-style verdict over the sliding window of a partition (the group takes the worst).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Health {
    /// Lag was zero at some point in the window, or commits move and lag does not grow.
    Ok,
    /// Commits move but lag grew over the whole window: consumers fall behind.
    Warn,
    /// The committed offset went backwards (a reset or a consumer re-committing old offsets).
    Rewind,
    /// Commits arrive but the offset does not move while there is lag: a stuck consumer.
    Stall,
    /// No commit in the whole window while there is lag: consumers are gone.
    Stop,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Ok => "OK",
            Health::Warn => "WARN",
            Health::Rewind => "REWIND",
            Health::Stall => "STALL",
            Health::Stop => "STOP",
        }
    }

    /// Numeric code for the Prometheus gauge (0 = OK, larger = worse).
    pub fn code(self) -> i64 {
        self as i64
    }
}

/// One observation of a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    pub at_ms: i64,
    pub committed: Option<i64>,
    pub log_end: i64,
    pub lag: i64,
}

/// The remembered samples of one partition (bounded).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionHistory {
    samples: VecDeque<Sample>,
}

/// Samples kept per partition: enough for a window of 10 polls plus interpolation points.
const MAX_SAMPLES: usize = 30;
/// Polls in the health window.
pub const WINDOW: usize = 10;

impl PartitionHistory {
    pub fn push(&mut self, sample: Sample) {
        if self.samples.len() == MAX_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    pub fn latest(&self) -> Option<&Sample> {
        self.samples.back()
    }

    /// Seconds since the log end passed the committed offset (0 when there is no lag).
    /// Interpolates between the two samples whose log ends bracket the committed offset; a
    /// committed offset older than every remembered log end is at least as old as the oldest
    /// sample, which is what is reported.
    pub fn time_lag_seconds(&self, now_ms: i64) -> f64 {
        let Some(last) = self.samples.back() else { return 0.0 };
        if last.lag == 0 {
            return 0.0;
        }
        let position = last.log_end - last.lag;
        let mut newer: Option<&Sample> = None;
        for sample in self.samples.iter().rev() {
            if sample.log_end <= position {
                let at = match newer {
                    Some(n) if n.log_end > sample.log_end => {
                        let fraction = (position - sample.log_end) as f64 / (n.log_end - sample.log_end) as f64;
                        sample.at_ms as f64 + fraction * (n.at_ms - sample.at_ms) as f64
                    }
                    _ => sample.at_ms as f64,
                };
                return ((now_ms as f64 - at) / 1000.0).max(0.0);
            }
            newer = Some(sample);
        }
        let oldest = self.samples.front().map_or(now_ms, |s| s.at_ms);
        ((now_ms - oldest) as f64 / 1000.0).max(0.0)
    }

    /// The verdict over the last [`WINDOW`] samples (OK until the window is full, except REWIND).
    /// `members_present`: whether the group had members (true when unknown).
    pub fn health(&self, members_present: bool) -> Health {
        let window: Vec<&Sample> =
            self.samples.iter().rev().take(WINDOW).collect::<Vec<_>>().into_iter().rev().collect();
        let Some(last) = window.last() else { return Health::Ok };
        let rewound =
            window.windows(2).any(|w| matches!((w[0].committed, w[1].committed), (Some(a), Some(b)) if b < a));
        if rewound {
            return Health::Rewind;
        }
        if window.iter().any(|s| s.lag == 0) || window.len() < WINDOW {
            return Health::Ok;
        }
        let first = window[0];
        if first.committed.is_none() || first.committed == last.committed {
            // Commits not moving with lag the whole window: STOP when nothing ever committed or the
            // group stopped committing, STALL when the same offset keeps being committed. Without
            // commit timestamps both look alike; the log end tells: a moving log end with a fixed
            // commit is a consumer that stopped (STOP), a fixed log end is a stalled one. A group
            // without members cannot be stalled: its consumers are gone (STOP, Burrow's meaning).
            return if !members_present || last.log_end > first.log_end { Health::Stop } else { Health::Stall };
        }
        if window.windows(2).all(|w| w[1].lag >= w[0].lag) && last.lag > first.lag {
            return Health::Warn;
        }
        Health::Ok
    }

    /// Whether the committed offset stayed put for the last `polls` samples while lag grew.
    pub fn persistent_lag(&self, polls: usize) -> bool {
        if polls < 2 || self.samples.len() < polls {
            return false;
        }
        let recent: Vec<&Sample> = self.samples.iter().rev().take(polls).collect();
        let (newest, oldest) = (recent[0], recent[polls - 1]);
        newest.committed.is_some() && recent.iter().all(|s| s.committed == newest.committed) && newest.lag > oldest.lag
    }
}

/// History of every partition of one ConsumerGroup, keyed by (topic, partition).
pub type GroupHistory = BTreeMap<(String, i32), PartitionHistory>;

/// Partitions listed one by one in status; beyond this, the ones with the most lag.
pub const MAX_PARTITIONS_IN_STATUS: usize = 100;
/// Excluded partitions named in status; the count says how many there are in all.
pub const MAX_EXCLUDED_IN_STATUS: usize = 100;

/// One partition's figures of a lag cycle.
#[derive(Clone, Debug, PartialEq)]
pub struct PartitionFigures {
    pub topic: String,
    pub partition: i32,
    pub committed: Option<i64>,
    pub log_end: i64,
    pub lag: i64,
    pub lag_seconds: f64,
}

/// Everything a lag cycle produces: status, the lag that counts for scaling, metrics figures.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub status: LagStatus,
    pub scaling_lag: i64,
    pub partitions: Vec<PartitionFigures>,
    pub health: Health,
    pub max_lag_seconds: f64,
}

/// Folds one cycle's offsets into the history and summarizes it. `members`: how many members the
/// group has (None when unknown). Lag of a group without members is never excluded as
/// persistent: nobody can move its commits, so its lag must be able to scale it up from zero.
pub fn summarize(
    offsets: &BTreeMap<(String, i32), PartitionOffsets>,
    history: &mut GroupHistory,
    policy: AutoOffsetReset,
    now_ms: i64,
    exclude_persistent_after: Option<usize>,
    members: Option<usize>,
    measured_at: Time,
) -> Summary {
    let members_present = members != Some(0);
    let exclude_persistent_after = exclude_persistent_after.filter(|_| members_present);
    history.retain(|key, _| offsets.contains_key(key));
    let mut partitions = Vec::with_capacity(offsets.len());
    let mut health = Health::Ok;
    let mut scaling_lag = 0i64;
    let mut excluded = Vec::new();
    for ((topic, partition), o) in offsets {
        let lag = partition_lag(*o, policy);
        let entry = history.entry((topic.clone(), *partition)).or_default();
        entry.push(Sample { at_ms: now_ms, committed: o.committed, log_end: o.log_end, lag });
        health = health.max(entry.health(members_present));
        if exclude_persistent_after.is_some_and(|polls| entry.persistent_lag(polls)) {
            excluded.push(format!("{topic}/{partition}"));
        } else {
            scaling_lag = scaling_lag.saturating_add(lag);
        }
        partitions.push(PartitionFigures {
            topic: topic.clone(),
            partition: *partition,
            committed: o.committed,
            log_end: o.log_end,
            lag,
            lag_seconds: entry.time_lag_seconds(now_ms),
        });
    }
    let total = partitions.iter().fold(0i64, |sum, p| sum.saturating_add(p.lag));
    let max_partition_lag = partitions.iter().map(|p| p.lag).max().unwrap_or(0);
    let max_lag_seconds = partitions.iter().map(|p| p.lag_seconds).fold(0.0, f64::max);
    let mut listed: Vec<&PartitionFigures> = partitions.iter().collect();
    if listed.len() > MAX_PARTITIONS_IN_STATUS {
        listed.sort_by(|a, b| b.lag.cmp(&a.lag).then((&a.topic, a.partition).cmp(&(&b.topic, b.partition))));
        listed.truncate(MAX_PARTITIONS_IN_STATUS);
        listed.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    }
    let status = LagStatus {
        total,
        max_partition_lag,
        measured_at: Some(measured_at),
        partitions_omitted: (partitions.len() - listed.len()) as i32,
        partitions: listed
            .into_iter()
            .map(|p| PartitionLag {
                topic: p.topic.clone(),
                partition: p.partition,
                committed_offset: p.committed,
                log_end_offset: p.log_end,
                lag: p.lag,
                lag_seconds: Some(p.lag_seconds.round() as i64),
            })
            .collect(),
        max_lag_seconds: Some(max_lag_seconds.round() as i64),
        health: Some(health.as_str().to_string()),
        excluded_count: (!excluded.is_empty()).then_some(excluded.len() as i32),
        excluded_partitions: excluded.into_iter().take(MAX_EXCLUDED_IN_STATUS).collect(),
    };
    Summary { status, scaling_lag, partitions, health, max_lag_seconds }
}

/// The lag to keep in status: the fresh figures when something a person or a GitOps tool acts on
/// changed (the health verdict, the excluded partitions, lag reaching or leaving zero), or when
/// the figures changed and the stored ones are `interval_seconds` old; otherwise the stored ones
/// (`measuredAt` says when they were taken), so that an unchanged group causes no status write.
/// /metrics carries every poll's figures.
pub fn lag_for_status(previous: Option<&LagStatus>, fresh: &LagStatus, interval_seconds: i64) -> LagStatus {
    let Some(previous) = previous else { return fresh.clone() };
    let verdict_changed = previous.health != fresh.health
        || previous.excluded_partitions != fresh.excluded_partitions
        || previous.excluded_count != fresh.excluded_count
        || (previous.total == 0) != (fresh.total == 0);
    let second = |lag: &LagStatus| lag.measured_at.as_ref().map(|t| t.0.as_second());
    let age = match (second(previous), second(fresh)) {
        (Some(then), Some(now)) => now - then,
        _ => i64::MAX,
    };
    let figures_changed = {
        let mut unstamped = fresh.clone();
        unstamped.measured_at = previous.measured_at.clone();
        &unstamped != previous
    };
    // Unchanged figures keep their time: they are still what was measured, and rewriting them
    // would be a status write for nothing.
    if verdict_changed || (figures_changed && age >= interval_seconds) { fresh.clone() } else { previous.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn offsets(committed: Option<i64>, log_start: i64, log_end: i64) -> PartitionOffsets {
        PartitionOffsets { committed, log_start, log_end }
    }

    #[test]
    fn lag_is_log_end_minus_committed() {
        assert_eq!(partition_lag(offsets(Some(40), 0, 100), AutoOffsetReset::Latest), 60);
        assert_eq!(partition_lag(offsets(Some(100), 0, 100), AutoOffsetReset::Latest), 0);
    }

    #[test]
    fn committed_below_log_start_counts_only_retained_messages() {
        // KEDA #7936: retention deleted 0..900; the group can only read 900..1000.
        assert_eq!(partition_lag(offsets(Some(10), 900, 1000), AutoOffsetReset::Earliest), 100);
    }

    #[test]
    fn never_committed_follows_auto_offset_reset() {
        assert_eq!(partition_lag(offsets(None, 20, 100), AutoOffsetReset::Latest), 0);
        assert_eq!(partition_lag(offsets(None, 20, 100), AutoOffsetReset::Earliest), 80);
    }

    #[test]
    fn committed_past_log_end_is_not_negative() {
        // KEDA #2612: a committed offset beyond the log end (truncation) must not read as negative.
        assert_eq!(partition_lag(offsets(Some(150), 0, 100), AutoOffsetReset::Latest), 0);
    }

    proptest! {
        #[test]
        fn lag_is_never_negative_nor_above_retained(committed in proptest::option::of(-10i64..2000), start in 0i64..1000, len in 0i64..1000, earliest: bool) {
            let policy = if earliest { AutoOffsetReset::Earliest } else { AutoOffsetReset::Latest };
            let lag = partition_lag(offsets(committed, start, start + len), policy);
            prop_assert!(lag >= 0 && lag <= len);
        }
    }

    fn history(samples: &[(i64, Option<i64>, i64)]) -> PartitionHistory {
        let mut h = PartitionHistory::default();
        for &(at_s, committed, log_end) in samples {
            let lag = partition_lag(offsets(committed, 0, log_end), AutoOffsetReset::Earliest);
            h.push(Sample { at_ms: at_s * 1000, committed, log_end, lag });
        }
        h
    }

    #[test]
    fn time_lag_interpolates_between_log_end_samples() {
        // Log end 100 at t=10, 200 at t=20; committed 150 was the log end at t=15.
        let h = history(&[(10, Some(50), 100), (20, Some(150), 200)]);
        assert!((h.time_lag_seconds(30_000) - 15.0).abs() < 1e-9);
    }

    #[test]
    fn time_lag_is_zero_without_lag_and_bounded_by_history_otherwise() {
        assert_eq!(history(&[(10, Some(100), 100)]).time_lag_seconds(50_000), 0.0);
        let h = history(&[(10, Some(0), 100), (20, Some(0), 200)]);
        assert!((h.time_lag_seconds(30_000) - 20.0).abs() < 1e-9, "older than every sample: age of the oldest");
    }

    fn window(f: impl Fn(i64) -> (Option<i64>, i64)) -> PartitionHistory {
        history(&(0..WINDOW as i64).map(|i| (i * 10, f(i).0, f(i).1)).collect::<Vec<_>>())
    }

    #[test]
    fn health_verdicts() {
        assert_eq!(window(|i| (Some(100 + i * 10), 100 + i * 10)).health(true), Health::Ok, "caught up");
        assert_eq!(window(|i| (Some(i * 10), 100 + i * 20)).health(true), Health::Warn, "moving but falling behind");
        assert_eq!(window(|_| (Some(10), 100)).health(true), Health::Stall, "same commit, same log end, lag");
        assert_eq!(window(|i| (Some(10), 100 + i)).health(true), Health::Stop, "no progress while producers go on");
        assert_eq!(window(|i| (Some(if i == 5 { 0 } else { 50 + i }), 200)).health(true), Health::Rewind);
        assert_eq!(history(&[(0, Some(1), 100)]).health(true), Health::Ok, "not enough samples yet");
    }

    #[test]
    fn summary_bounds_the_partition_list_and_keeps_the_laggiest() {
        let offsets: BTreeMap<(String, i32), PartitionOffsets> =
            (0..150).map(|p| (("t".to_string(), p), offsets(Some(0), 0, i64::from(p)))).collect();
        let mut history = GroupHistory::new();
        let time = Time(k8s_openapi::jiff::Timestamp::from_second(1).unwrap());
        let s = summarize(&offsets, &mut history, AutoOffsetReset::Latest, 1000, None, None, time);
        assert_eq!(s.status.total, (0..150).sum::<i64>());
        assert_eq!(s.status.max_partition_lag, 149);
        assert_eq!(s.status.partitions.len(), MAX_PARTITIONS_IN_STATUS);
        assert_eq!(s.status.partitions_omitted, 50);
        assert_eq!(s.status.partitions[0].partition, 50, "the 100 with most lag, in partition order");
        assert_eq!(s.scaling_lag, s.status.total);
    }

    #[test]
    fn persistent_lag_is_excluded_from_scaling_only() {
        let mut history = GroupHistory::new();
        let time = || Time(k8s_openapi::jiff::Timestamp::from_second(1).unwrap());
        let mut last = None;
        for cycle in 0..3 {
            let offsets = BTreeMap::from([
                (("t".to_string(), 0), offsets(Some(10), 0, 100 + cycle * 10)),
                (("t".to_string(), 1), offsets(Some(cycle * 5), 0, 20)),
            ]);
            last = Some(summarize(
                &offsets,
                &mut history,
                AutoOffsetReset::Latest,
                cycle * 1000,
                Some(3),
                Some(1),
                time(),
            ));
        }
        let s = last.unwrap();
        assert_eq!(s.status.excluded_partitions, vec!["t/0".to_string()]);
        assert_eq!(s.scaling_lag, 10, "only partition 1's lag counts for scaling");
        assert_eq!(s.status.total, 120, "status still shows all lag");
    }

    #[test]
    fn a_group_without_members_is_stopped_and_its_lag_always_counts() {
        let stuck = window(|_| (Some(10), 100));
        assert_eq!(stuck.health(false), Health::Stop, "lag, no members: consumers gone, not stalled");
        assert_eq!(window(|i| (Some(100 + i * 10), 100 + i * 10)).health(false), Health::Ok, "no lag");

        let mut history = GroupHistory::new();
        let time = || Time(k8s_openapi::jiff::Timestamp::from_second(1).unwrap());
        let mut last = None;
        for cycle in 0..4 {
            let offsets = BTreeMap::from([(("t".to_string(), 0), offsets(Some(10), 0, 100 + cycle * 10))]);
            last = Some(summarize(
                &offsets,
                &mut history,
                AutoOffsetReset::Latest,
                cycle * 1000,
                Some(2),
                Some(0),
                time(),
            ));
        }
        let s = last.unwrap();
        assert!(s.status.excluded_partitions.is_empty(), "nobody can move the commit of a group without members");
        assert_eq!(s.scaling_lag, 120);
    }

    #[test]
    fn excluded_partitions_are_bounded_in_status() {
        let mut history = GroupHistory::new();
        let time = || Time(k8s_openapi::jiff::Timestamp::from_second(1).unwrap());
        let mut last = None;
        for cycle in 0..3 {
            let offsets: BTreeMap<(String, i32), PartitionOffsets> =
                (0..1000).map(|p| (("t".to_string(), p), offsets(Some(1), 0, 100 + cycle))).collect();
            last = Some(summarize(
                &offsets,
                &mut history,
                AutoOffsetReset::Latest,
                cycle * 1000,
                Some(2),
                Some(3),
                time(),
            ));
        }
        let s = last.unwrap();
        assert_eq!(s.status.excluded_partitions.len(), MAX_EXCLUDED_IN_STATUS);
        assert_eq!(s.status.excluded_count, Some(1000));
        assert_eq!(s.scaling_lag, 0);
    }

    #[test]
    fn status_lag_refreshes_on_verdicts_and_at_most_once_an_interval() {
        let at = |s: i64, total: i64, health: &str| LagStatus {
            total,
            measured_at: Some(Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap())),
            health: Some(health.into()),
            ..Default::default()
        };
        let stored = at(100, 50, "OK");
        assert_eq!(lag_for_status(None, &stored, 60), stored, "first measurement");
        assert_eq!(lag_for_status(Some(&stored), &at(130, 70, "OK"), 60), stored, "numbers only: kept");
        assert_eq!(lag_for_status(Some(&stored), &at(160, 70, "OK"), 60), at(160, 70, "OK"), "interval passed");
        assert_eq!(lag_for_status(Some(&stored), &at(900, 50, "OK"), 60), stored, "same figures keep their time");
        assert_eq!(lag_for_status(Some(&stored), &at(110, 70, "WARN"), 60), at(110, 70, "WARN"), "verdict");
        assert_eq!(lag_for_status(Some(&stored), &at(110, 0, "OK"), 60), at(110, 0, "OK"), "drained");
    }

    #[test]
    fn persistent_lag_needs_a_fixed_commit_and_growing_lag() {
        let stuck = history(&[(0, Some(10), 100), (10, Some(10), 110), (20, Some(10), 120)]);
        assert!(stuck.persistent_lag(3));
        let moving = history(&[(0, Some(10), 100), (10, Some(20), 110), (20, Some(30), 120)]);
        assert!(!moving.persistent_lag(3));
        assert!(!stuck.persistent_lag(4), "not enough samples");
    }
}
