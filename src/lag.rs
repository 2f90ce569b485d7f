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

use std::collections::VecDeque;

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

/// One observation of a partition by one group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sample {
    /// Negative: nothing committed (Kafka's own -1), which keeps a sample at 24 bytes.
    committed: i64,
    log_end: i64,
    lag: i64,
}

impl Sample {
    fn committed(&self) -> Option<i64> {
        (self.committed >= 0).then_some(self.committed)
    }
}

/// Polls in the health window.
pub const WINDOW: usize = 10;

/// The last polls of one group's partition, oldest first.
type PartitionWindow = VecDeque<Sample>;

/// What one group's last polls saw of each of its partitions: enough for the health window and
/// the persistent-lag rule, and for the group's rates. Bounded by the window length per
/// partition; a partition the group stopped reading is dropped at the next record.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroupHistory {
    /// Polls kept per partition: [`WINDOW`], or more for excludePersistentLagAfterPolls.
    length: usize,
    /// When each kept poll was taken (milliseconds), oldest first.
    times: VecDeque<i64>,
    /// Each topic's partition windows, by partition index; sorted by topic. A Vec, not a map:
    /// a group reads a few topics, and a map's node would be most of a small group's history.
    topics: Vec<(String, Vec<PartitionWindow>)>,
}

impl GroupHistory {
    /// When the last poll was recorded.
    pub fn last_recorded_ms(&self) -> Option<i64> {
        self.times.back().copied()
    }

    /// Adds a poll's offsets, by topic and partition index (`lag_log_end`: the log end that counts,
    /// below the real one when only transaction markers remain), and keeps `length` polls.
    pub fn record<'a>(
        &mut self,
        topics: impl IntoIterator<Item = (&'a str, &'a [PartitionOffsets])>,
        lag_log_end: impl Fn(&str, i32, &PartitionOffsets) -> i64,
        policy: AutoOffsetReset,
        at_ms: i64,
        length: usize,
    ) {
        self.length = length.max(WINDOW);
        // Topics not in this poll (unsubscribed) are left behind in `previous`.
        let mut previous = std::mem::replace(&mut self.topics, Vec::with_capacity(1));
        for (topic, partitions) in topics {
            let (name, mut windows) = match previous.iter().position(|(name, _)| name == topic) {
                Some(index) => previous.swap_remove(index),
                None => (topic.to_string(), Vec::new()),
            };
            // Exactly `length` samples each: a growing VecDeque would round 10 up to 16.
            windows.resize_with(partitions.len(), || VecDeque::with_capacity(self.length));
            for (index, (window, o)) in windows.iter_mut().zip(partitions).enumerate() {
                while window.len() >= self.length {
                    window.pop_front();
                }
                let counted = PartitionOffsets { log_end: lag_log_end(topic, index as i32, o), ..*o };
                // The counted log end is the one shown: lag and log end agree, as before the probe.
                window.push_back(Sample {
                    committed: o.committed.unwrap_or(-1),
                    log_end: counted.log_end,
                    lag: partition_lag(counted, policy),
                });
            }
            self.topics.push((name, windows));
        }
        self.topics.sort_by(|a, b| a.0.cmp(&b.0));
        while self.times.len() >= self.length {
            self.times.pop_front();
        }
        self.times.push_back(at_ms);
    }

    /// The committed offset and log end a partition had at the last recorded poll.
    pub fn last(&self, topic: &str, partition: i32) -> Option<(Option<i64>, i64)> {
        let (_, windows) = self.topics.iter().find(|(name, _)| name == topic)?;
        let sample = windows.get(usize::try_from(partition).ok()?)?.back()?;
        Some((sample.committed(), sample.log_end))
    }

    fn partitions(&self) -> impl Iterator<Item = (&String, i32, &PartitionWindow)> {
        self.topics.iter().flat_map(|(topic, windows)| {
            windows.iter().enumerate().filter(|(_, w)| !w.is_empty()).map(move |(p, w)| (topic, p as i32, w))
        })
    }

    /// Messages per second written to the group's partitions (log-end growth) and committed by
    /// the group (committed-offset growth) over the kept polls; None until two polls are kept.
    pub fn rates(&self) -> Option<Rates> {
        let (first, last) = (*self.times.front()?, *self.times.back()?);
        if last <= first {
            return None;
        }
        let (mut produced, mut consumed) = (0i64, 0i64);
        let mut span_ms = 0i64;
        // A group that had committed nothing at the window's start has no consumption rate yet:
        // where its consumers started from is unknown.
        let mut committed_span = false;
        for (_, _, window) in self.partitions() {
            let (Some(old), Some(new)) = (window.front(), window.back()) else { continue };
            produced = produced.saturating_add((new.log_end - old.log_end).max(0));
            if let (Some(a), Some(b)) = (old.committed(), new.committed()) {
                consumed = consumed.saturating_add((b - a).max(0));
                committed_span = true;
            }
            // A partition younger than the group's history covers fewer polls.
            span_ms = span_ms.max(last - self.times[self.times.len() - window.len()]);
        }
        (span_ms > 0).then(|| Rates {
            produced_per_second: produced as f64 * 1000.0 / span_ms as f64,
            committed_per_second: committed_span.then(|| consumed as f64 * 1000.0 / span_ms as f64),
        })
    }
}

/// Seconds until `lag` is consumed at these rates: lag / (consumption - production); 0 without
/// lag, None while consumption does not outrun production (the lag does not shrink).
pub fn seconds_to_drain(lag: i64, produced_per_second: Option<f64>, committed_per_second: Option<f64>) -> Option<f64> {
    if lag <= 0 {
        return Some(0.0);
    }
    let gaining = committed_per_second? - produced_per_second?;
    (gaining > 0.0).then(|| lag as f64 / gaining)
}

/// Message rates of a group, from its kept polls.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rates {
    pub produced_per_second: f64,
    /// None until some partition was committed at both ends of the kept polls.
    pub committed_per_second: Option<f64>,
}

/// What the group committed during its last poll interval on the partitions that were backlogged
/// throughout it: lag at its start, and at its end still at least what was committed during it.
/// There the consumers had work waiting all along and read as fast as they can, so this is their
/// capacity, not the production rate they kept up with. (A partition that keeps up under steady
/// production also shows some lag at every poll, what arrived since the last commit, but far less
/// than an interval's worth.)
#[derive(Clone, Debug, PartialEq)]
pub struct RecentCapacity {
    /// When the interval ended (the last poll), in milliseconds.
    pub at_ms: i64,
    pub span_ms: i64,
    /// Every partition committed at both ends of the interval: how far its commit moved, and
    /// whether it was backlogged throughout.
    pub partitions: Vec<RecentPartition>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecentPartition {
    pub topic: std::sync::Arc<str>,
    pub partition: i32,
    pub committed: i64,
    pub backlogged: bool,
}

impl RecentCapacity {
    /// Messages committed on the backlogged partitions.
    pub fn backlogged_committed(&self) -> i64 {
        self.partitions.iter().filter(|p| p.backlogged).map(|p| p.committed).sum()
    }
}

impl GroupHistory {
    /// The last poll interval's commits on backlogged partitions; None until two polls are kept.
    pub fn recent_capacity(&self) -> Option<RecentCapacity> {
        let n = self.times.len();
        if n < 2 {
            return None;
        }
        let (at_ms, span_ms) = (self.times[n - 1], self.times[n - 1] - self.times[n - 2]);
        if span_ms <= 0 {
            return None;
        }
        let mut partitions = Vec::new();
        let mut shared_name: Option<std::sync::Arc<str>> = None;
        for (topic, partition, window) in self.partitions() {
            let len = window.len();
            if len < 2 {
                continue;
            }
            let (before, after) = (window[len - 2], window[len - 1]);
            let (Some(a), Some(b)) = (before.committed(), after.committed()) else { continue };
            let name = match &shared_name {
                Some(name) if **name == **topic => name.clone(),
                _ => shared_name.insert(std::sync::Arc::from(topic.as_str())).clone(),
            };
            let committed = (b - a).max(0);
            let backlogged = before.lag > 0 && committed > 0 && after.lag >= committed;
            partitions.push(RecentPartition { topic: name, partition, committed, backlogged });
        }
        Some(RecentCapacity { at_ms, span_ms, partitions })
    }
}

/// The verdict over the last [`WINDOW`] samples (OK until the window is full, except REWIND).
/// `members_present`: whether the group had members (true when unknown).
fn health(window: &PartitionWindow, members_present: bool) -> Health {
    let recent: Vec<&Sample> = window.iter().skip(window.len().saturating_sub(WINDOW)).collect();
    let Some(last) = recent.last() else { return Health::Ok };
    let rewound =
        recent.windows(2).any(|w| matches!((w[0].committed(), w[1].committed()), (Some(a), Some(b)) if b < a));
    if rewound {
        return Health::Rewind;
    }
    if recent.iter().any(|s| s.lag == 0) || recent.len() < WINDOW {
        return Health::Ok;
    }
    let first = recent[0];
    if first.committed().is_none() || first.committed == last.committed {
        // Commits not moving with lag the whole window: STOP when nothing ever committed or the
        // group stopped committing, STALL when the same offset keeps being committed. Without
        // commit timestamps both look alike; the log end tells: a moving log end with a fixed
        // commit is a consumer that stopped (STOP), a fixed log end is a stalled one. A group
        // without members cannot be stalled: its consumers are gone (STOP, Burrow's meaning).
        return if !members_present || last.log_end > first.log_end { Health::Stop } else { Health::Stall };
    }
    if recent.windows(2).all(|w| w[1].lag >= w[0].lag) && last.lag > first.lag {
        return Health::Warn;
    }
    Health::Ok
}

/// Whether the committed offset stayed put for the last `polls` samples while lag grew.
fn persistent_lag(window: &PartitionWindow, polls: usize) -> bool {
    if polls < 2 || window.len() < polls {
        return false;
    }
    let newest = window[window.len() - 1];
    let oldest = window[window.len() - polls];
    newest.committed().is_some()
        && window.iter().skip(window.len() - polls).all(|s| s.committed == newest.committed)
        && newest.lag > oldest.lag
}

/// When a partition's log end reached which offset, shared by every group reading the partition
/// (time lag is a property of the position in the log, not of the group). Only changes are kept,
/// so a quiet partition's history reaches far back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogEndHistory {
    /// (first seen at, last seen at, log end), oldest first.
    points: VecDeque<(i64, i64, i64)>,
}

/// Log-end changes kept per partition.
const MAX_LOG_END_POINTS: usize = 30;

impl LogEndHistory {
    /// The last log end recorded.
    pub fn latest(&self) -> Option<i64> {
        self.points.back().map(|p| p.2)
    }

    pub fn record(&mut self, at_ms: i64, log_end: i64) {
        match self.points.back_mut() {
            Some(last) if last.2 == log_end => last.1 = at_ms,
            // A log end going back (topic deleted and created again): the history is of another log.
            Some(last) if log_end < last.2 => {
                self.points.clear();
                self.points.push_back((at_ms, at_ms, log_end));
            }
            _ => {
                if self.points.len() == MAX_LOG_END_POINTS {
                    self.points.pop_front();
                }
                self.points.push_back((at_ms, at_ms, log_end));
            }
        }
    }

    /// Seconds since the log end passed `position` (the next message a group would read). The
    /// message was written after the last poll that saw the log end at or below it and before
    /// the first poll that saw it above; its time is interpolated between the two. A position
    /// older than every remembered log end is at least as old as the oldest one.
    pub fn time_lag_seconds(&self, position: i64, now_ms: i64) -> f64 {
        let mut newer: Option<&(i64, i64, i64)> = None;
        for point in self.points.iter().rev() {
            let &(_, last_seen, log_end) = point;
            if log_end <= position {
                let Some(&(first_seen, _, newer_end)) = newer else { return 0.0 };
                let fraction = (position - log_end) as f64 / (newer_end - log_end) as f64;
                let at = last_seen as f64 + fraction * (first_seen - last_seen) as f64;
                return ((now_ms as f64 - at) / 1000.0).max(0.0);
            }
            newer = Some(point);
        }
        let oldest = self.points.front().map_or(now_ms, |p| p.0);
        ((now_ms - oldest) as f64 / 1000.0).max(0.0)
    }
}

/// Partitions listed one by one in status; beyond this, the ones with the most lag.
pub const MAX_PARTITIONS_IN_STATUS: usize = 100;
/// Excluded partitions named in status; the count says how many there are in all.
pub const MAX_EXCLUDED_IN_STATUS: usize = 100;

/// One partition's figures of a lag cycle.
#[derive(Clone, Debug, PartialEq)]
pub struct PartitionFigures {
    /// Shared by the partitions of a topic (a group may read thousands).
    pub topic: std::sync::Arc<str>,
    pub partition: i32,
    pub committed: Option<i64>,
    pub log_end: i64,
    pub lag: i64,
    pub lag_seconds: f64,
}

/// Everything a lag cycle produces: the figures of status, the lag that counts for scaling,
/// metrics figures. Every served group keeps its last one, so status's per-partition list is built
/// only when a reconcile asks for it ([`Summary::lag_status`]), not kept beside `partitions`.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub total: i64,
    pub max_partition_lag: i64,
    pub measured_at: Time,
    pub scaling_lag: i64,
    pub partitions: Vec<PartitionFigures>,
    pub health: Health,
    pub max_lag_seconds: f64,
    /// Partitions whose persistent lag is left out of scaling (`topic/partition`), the first
    /// [`MAX_EXCLUDED_IN_STATUS`] of `excluded_count`.
    pub excluded_partitions: Vec<String>,
    pub excluded_count: usize,
    /// None until the group has two polls.
    pub rates: Option<Rates>,
    /// None until the group has two polls, or when not asked for (see `summarize`).
    pub recent_capacity: Option<RecentCapacity>,
}

impl Summary {
    /// The figures as status shows them: every partition up to [`MAX_PARTITIONS_IN_STATUS`], else
    /// those with the most lag.
    pub fn lag_status(&self) -> LagStatus {
        let mut listed: Vec<&PartitionFigures> = self.partitions.iter().collect();
        if listed.len() > MAX_PARTITIONS_IN_STATUS {
            listed.sort_by(|a, b| b.lag.cmp(&a.lag).then((&a.topic, a.partition).cmp(&(&b.topic, b.partition))));
            listed.truncate(MAX_PARTITIONS_IN_STATUS);
            listed.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        }
        LagStatus {
            total: self.total,
            max_partition_lag: self.max_partition_lag,
            measured_at: Some(self.measured_at.clone()),
            partitions_omitted: (self.partitions.len() - listed.len()) as i32,
            partitions: listed
                .into_iter()
                .map(|p| PartitionLag {
                    topic: p.topic.to_string(),
                    partition: p.partition,
                    committed_offset: p.committed,
                    log_end_offset: p.log_end,
                    lag: p.lag,
                    lag_seconds: Some(p.lag_seconds.round() as i64),
                })
                .collect(),
            max_lag_seconds: Some(self.max_lag_seconds.round() as i64),
            health: Some(self.health.as_str().to_string()),
            excluded_count: (self.excluded_count > 0).then_some(self.excluded_count as i32),
            excluded_partitions: self.excluded_partitions.clone(),
        }
    }
}

/// Summarizes a group's history as of its last poll. `time_lag_seconds(topic, partition,
/// position)`: the age of the message at `position` (from the partition's log-end history);
/// `members`: how many members the group has (None when unknown). Lag of a group
/// without members is never excluded as persistent: nobody can move its commits, so its lag must
/// be able to scale it up from zero. `with_capacity`: whether to compute
/// [`Summary::recent_capacity`] (None otherwise).
pub fn summarize(
    history: &GroupHistory,
    time_lag_seconds: impl Fn(&str, i32, i64) -> f64,
    exclude_persistent_after: Option<usize>,
    members: Option<usize>,
    measured_at: Time,
    with_capacity: bool,
) -> Summary {
    let members_present = members != Some(0);
    let exclude_persistent_after = exclude_persistent_after.filter(|_| members_present);
    // Exactly as many as there are: every group keeps its summary until the next poll.
    let mut partitions = Vec::with_capacity(history.partitions().count());
    let mut health = Health::Ok;
    let mut scaling_lag = 0i64;
    let mut excluded = Vec::new();
    let mut shared_name: Option<std::sync::Arc<str>> = None;
    for (topic, partition, window) in history.partitions() {
        let Some(last) = window.back() else { continue };
        let name = match &shared_name {
            Some(name) if **name == **topic => name.clone(),
            _ => shared_name.insert(std::sync::Arc::from(topic.as_str())).clone(),
        };
        health = health.max(self::health(window, members_present));
        if exclude_persistent_after.is_some_and(|polls| persistent_lag(window, polls)) {
            excluded.push(format!("{topic}/{partition}"));
        } else {
            scaling_lag = scaling_lag.saturating_add(last.lag);
        }
        let lag_seconds = if last.lag > 0 { time_lag_seconds(topic, partition, last.log_end - last.lag) } else { 0.0 };
        partitions.push(PartitionFigures {
            topic: name,
            partition,
            committed: last.committed(),
            log_end: last.log_end,
            lag: last.lag,
            lag_seconds,
        });
    }
    let total = partitions.iter().fold(0i64, |sum, p| sum.saturating_add(p.lag));
    let max_partition_lag = partitions.iter().map(|p| p.lag).max().unwrap_or(0);
    let max_lag_seconds = partitions.iter().map(|p| p.lag_seconds).fold(0.0, f64::max);
    let excluded_count = excluded.len();
    excluded.truncate(MAX_EXCLUDED_IN_STATUS);
    excluded.shrink_to_fit();
    Summary {
        total,
        max_partition_lag,
        measured_at,
        scaling_lag,
        partitions,
        health,
        max_lag_seconds,
        excluded_partitions: excluded,
        excluded_count,
        rates: history.rates(),
        recent_capacity: if with_capacity { history.recent_capacity() } else { None },
    }
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
    use std::collections::BTreeMap;

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

    fn key(p: i32) -> (String, i32) {
        ("t".to_string(), p)
    }

    /// Records one poll of topic "t" given by (partition, offsets).
    fn record(
        h: &mut GroupHistory,
        offsets: &BTreeMap<(String, i32), PartitionOffsets>,
        lag_log_end: impl Fn(&str, i32, &PartitionOffsets) -> i64,
        policy: AutoOffsetReset,
        at_ms: i64,
        length: usize,
    ) {
        let partitions: Vec<PartitionOffsets> = offsets.values().copied().collect();
        assert!(offsets.keys().enumerate().all(|(i, k)| *k == key(i as i32)), "partitions 0..n of t");
        h.record([("t", partitions.as_slice())], lag_log_end, policy, at_ms, length);
    }

    /// A one-partition history from (committed, log end) per poll.
    fn history(polls: &[(Option<i64>, i64)]) -> PartitionWindow {
        let mut h = GroupHistory::default();
        for (i, &(committed, log_end)) in polls.iter().enumerate() {
            let offsets = BTreeMap::from([(key(0), offsets(committed, 0, log_end))]);
            record(&mut h, &offsets, |_, _, o| o.log_end, AutoOffsetReset::Earliest, i as i64 * 1000, WINDOW);
        }
        h.topics.iter().find(|(name, _)| name == "t").unwrap().1[0].clone()
    }

    fn time() -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1).unwrap())
    }

    #[test]
    fn time_lag_interpolates_between_the_polls_around_the_position() {
        let mut log = LogEndHistory::default();
        log.record(10_000, 100);
        log.record(12_000, 100);
        log.record(20_000, 200);
        // Offset 150 was written after the last poll that saw 100 (t=12) and before the first
        // that saw 200 (t=20): halfway, t=16.
        assert!((log.time_lag_seconds(150, 30_000) - 14.0).abs() < 1e-9);
        assert_eq!(log.time_lag_seconds(200, 30_000), 0.0, "caught up: no age");
        assert!((log.time_lag_seconds(50, 30_000) - 20.0).abs() < 1e-9, "older than every point: the oldest");
    }

    #[test]
    fn log_end_history_keeps_changes_only_and_restarts_when_the_log_goes_back() {
        let mut log = LogEndHistory::default();
        for at in 0..100 {
            log.record(at * 1000, 100);
        }
        assert_eq!(log.points.len(), 1, "an unchanged log end is one point");
        for at in 0..100 {
            log.record(100_000 + at * 1000, 200 + at);
        }
        assert_eq!(log.points.len(), MAX_LOG_END_POINTS);
        log.record(300_000, 5);
        assert_eq!(log.points, VecDeque::from([(300_000, 300_000, 5)]));
    }

    fn window(f: impl Fn(i64) -> (Option<i64>, i64)) -> PartitionWindow {
        history(&(0..WINDOW as i64).map(f).collect::<Vec<_>>())
    }

    #[test]
    fn health_verdicts() {
        assert_eq!(health(&window(|i| (Some(100 + i * 10), 100 + i * 10)), true), Health::Ok, "caught up");
        assert_eq!(health(&window(|i| (Some(i * 10), 100 + i * 20)), true), Health::Warn, "falling behind");
        assert_eq!(health(&window(|_| (Some(10), 100)), true), Health::Stall, "same commit, same log end, lag");
        assert_eq!(health(&window(|i| (Some(10), 100 + i)), true), Health::Stop, "no progress, producers go on");
        assert_eq!(health(&window(|i| (Some(if i == 5 { 0 } else { 50 + i }), 200)), true), Health::Rewind);
        assert_eq!(health(&history(&[(Some(1), 100)]), true), Health::Ok, "not enough samples yet");
    }

    #[test]
    fn history_is_bounded_and_forgets_partitions_no_longer_read() {
        let mut h = GroupHistory::default();
        for poll in 0..50 {
            let offsets: BTreeMap<(String, i32), PartitionOffsets> =
                (0..if poll < 40 { 4 } else { 2 }).map(|p| (key(p), offsets(Some(poll), 0, 100))).collect();
            record(&mut h, &offsets, |_, _, o| o.log_end, AutoOffsetReset::Latest, poll * 1000, WINDOW);
        }
        assert_eq!(h.times.len(), WINDOW);
        assert_eq!(h.partitions().count(), 2);
        assert!(h.partitions().all(|(_, _, w)| w.len() == WINDOW));
    }

    #[test]
    fn rates_come_from_log_end_and_commit_growth() {
        let mut h = GroupHistory::default();
        for poll in 0..5i64 {
            let offsets = BTreeMap::from([
                (key(0), offsets(Some(poll * 10), 0, 1000 + poll * 30)),
                (key(1), offsets(Some(poll * 5), 0, 1000 + poll * 10)),
            ]);
            record(&mut h, &offsets, |_, _, o| o.log_end, AutoOffsetReset::Latest, poll * 2000, WINDOW);
        }
        let rates = h.rates().unwrap();
        assert!((rates.produced_per_second - 20.0).abs() < 1e-9, "40 messages per 2 s poll");
        assert!((rates.committed_per_second.unwrap() - 7.5).abs() < 1e-9, "15 commits per 2 s poll");

        // A group whose first kept poll had no commit: where its consumers started is unknown.
        let mut fresh = GroupHistory::default();
        for (poll, committed) in [(0i64, None), (1, Some(30))] {
            let offsets = BTreeMap::from([(key(0), offsets(committed, 0, 100 + poll * 10))]);
            record(&mut fresh, &offsets, |_, _, o| o.log_end, AutoOffsetReset::Earliest, poll * 2000, WINDOW);
        }
        let rates = fresh.rates().unwrap();
        assert_eq!((rates.produced_per_second, rates.committed_per_second), (5.0, None));
    }

    #[test]
    fn recent_capacity_counts_only_partitions_with_lag_at_both_ends_of_the_last_interval() {
        let mut h = GroupHistory::default();
        assert_eq!(h.recent_capacity(), None);
        // Partition 0 keeps a backlog; partition 1 keeps up (lag 0 at the end); partition 2 was
        // never committed; partition 3 keeps up under steady production, a little behind at each
        // poll; partition 4 eats the last of its backlog.
        let polls = [
            [
                (key(0), offsets(Some(0), 0, 500)),
                (key(1), offsets(Some(0), 0, 10)),
                (key(2), offsets(None, 0, 9)),
                (key(3), offsets(Some(95), 0, 100)),
                (key(4), offsets(Some(0), 0, 150)),
            ],
            [
                (key(0), offsets(Some(120), 0, 530)),
                (key(1), offsets(Some(20), 0, 20)),
                (key(2), offsets(None, 0, 9)),
                (key(3), offsets(Some(145), 0, 150)),
                (key(4), offsets(Some(120), 0, 150)),
            ],
        ];
        for (poll, offsets) in polls.into_iter().enumerate() {
            let offsets = BTreeMap::from(offsets);
            record(&mut h, &offsets, |_, _, o| o.log_end, AutoOffsetReset::Earliest, poll as i64 * 2000, WINDOW);
        }
        let recent = h.recent_capacity().unwrap();
        assert_eq!((recent.at_ms, recent.span_ms), (2000, 2000));
        let seen: Vec<(i32, i64, bool)> =
            recent.partitions.iter().map(|p| (p.partition, p.committed, p.backlogged)).collect();
        assert_eq!(seen, vec![(0, 120, true), (1, 20, false), (3, 50, false), (4, 120, false)]);
        assert_eq!(recent.backlogged_committed(), 120);
        // Only groups that autoscale ask for it.
        assert_eq!(summary(&h, None, Some(1)).recent_capacity, Some(recent));
        assert_eq!(summarize(&h, |_, _, _| 0.0, None, Some(1), time(), false).recent_capacity, None);
    }

    fn summary(h: &GroupHistory, exclude: Option<usize>, members: Option<usize>) -> Summary {
        summarize(h, |_, _, _| 7.0, exclude, members, time(), true)
    }

    #[test]
    fn summary_bounds_the_partition_list_and_keeps_the_laggiest() {
        let offsets: BTreeMap<(String, i32), PartitionOffsets> =
            (0..150).map(|p| (key(p), offsets(Some(0), 0, i64::from(p)))).collect();
        let mut h = GroupHistory::default();
        record(&mut h, &offsets, |_, _, o| o.log_end, AutoOffsetReset::Latest, 1000, WINDOW);
        let s = summary(&h, None, None);
        assert_eq!(s.total, (0..150).sum::<i64>());
        assert_eq!(s.max_partition_lag, 149);
        assert_eq!(s.lag_status().partitions.len(), MAX_PARTITIONS_IN_STATUS);
        assert_eq!(s.lag_status().partitions_omitted, 50);
        assert_eq!(s.lag_status().partitions[0].partition, 50, "the 100 with most lag, in partition order");
        assert_eq!(s.scaling_lag, s.total);
        assert_eq!(s.partitions[0].lag_seconds, 0.0, "no lag, no age");
        assert_eq!(s.partitions[1].lag_seconds, 7.0);
    }

    #[test]
    fn the_lag_log_end_counts_for_lag_and_is_shown() {
        // Two trailing transaction markers: the observer counts lag up to the committed offset.
        let mut h = GroupHistory::default();
        let offsets = BTreeMap::from([(key(0), offsets(Some(98), 0, 100))]);
        record(&mut h, &offsets, |_, _, o| o.committed.unwrap(), AutoOffsetReset::Latest, 1000, WINDOW);
        let s = summary(&h, None, None);
        assert_eq!((s.total, s.partitions[0].log_end), (0, 98));
    }

    fn persistent_run(cycles: i64, exclude: usize, members: usize, partitions: i32) -> Summary {
        let mut h = GroupHistory::default();
        for cycle in 0..cycles {
            let offsets: BTreeMap<(String, i32), PartitionOffsets> = (0..partitions)
                .map(|p| {
                    // Partition 1 moves its commit; every other one is stuck while lag grows.
                    let o =
                        if p == 1 { offsets(Some(cycle * 5), 0, 20) } else { offsets(Some(10), 0, 100 + cycle * 10) };
                    (key(p), o)
                })
                .collect();
            record(&mut h, &offsets, |_, _, o| o.log_end, AutoOffsetReset::Latest, cycle * 1000, exclude);
        }
        summary(&h, Some(exclude), Some(members))
    }

    #[test]
    fn persistent_lag_is_excluded_from_scaling_only() {
        let s = persistent_run(3, 3, 1, 2);
        assert_eq!(s.lag_status().excluded_partitions, vec!["t/0".to_string()]);
        assert_eq!(s.scaling_lag, 10, "only partition 1's lag counts for scaling");
        assert_eq!(s.total, 120, "status still shows all lag");
    }

    #[test]
    fn persistent_lag_beyond_the_health_window_is_counted_in_polls() {
        assert!(persistent_run(49, 50, 1, 2).lag_status().excluded_partitions.is_empty(), "49 polls of 50");
        assert_eq!(persistent_run(50, 50, 1, 2).lag_status().excluded_partitions, vec!["t/0".to_string()]);
    }

    #[test]
    fn a_group_without_members_is_stopped_and_its_lag_always_counts() {
        assert_eq!(health(&window(|_| (Some(10), 100)), false), Health::Stop, "lag, no members: consumers gone");
        assert_eq!(health(&window(|i| (Some(100 + i * 10), 100 + i * 10)), false), Health::Ok, "no lag");
        let s = persistent_run(4, 2, 0, 1);
        assert!(s.lag_status().excluded_partitions.is_empty(), "nobody can move the commit of a group without members");
        assert_eq!(s.scaling_lag, 120);
    }

    #[test]
    fn excluded_partitions_are_bounded_in_status() {
        let s = persistent_run(3, 2, 3, 1000);
        assert_eq!(s.lag_status().excluded_partitions.len(), MAX_EXCLUDED_IN_STATUS);
        assert_eq!(s.lag_status().excluded_count, Some(999));
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
        let stuck = history(&[(Some(10), 100), (Some(10), 110), (Some(10), 120)]);
        assert!(persistent_lag(&stuck, 3));
        let moving = history(&[(Some(10), 100), (Some(20), 110), (Some(30), 120)]);
        assert!(!persistent_lag(&moving, 3));
        assert!(!persistent_lag(&stuck, 4), "not enough samples");
    }
}
