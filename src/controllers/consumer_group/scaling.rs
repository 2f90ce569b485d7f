//! Replica decisions. Pure: no I/O, no clock (time comes in as an argument), so every rule is
//! unit- and property-tested here.
//!
//! The cap: replicas never exceed the total partition count of the subscribed topics. With
//! several topics a member can hold partitions of each, so the total is the largest count at which
//! every member can still get at least one partition (with the round-robin or cooperative-sticky
//! assignors; with the default range assignor, per-topic ranges may leave some members idle below
//! it, which the even-distribution option mitigates). A lower cap (the largest topic) would starve
//! groups reading many small topics, so the total is the safe upper bound.

use crate::crd::ScalingSpec;

/// Why a request was cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// The total partition count of the subscribed topics.
    Partitions,
    /// `spec.scaling.maxReplicas`.
    MaxReplicas,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaDecision {
    /// What was asked for before any bound (spec.replicas, or what lag asks for).
    pub requested: i32,
    /// What the rule asks for within the bounds, before the scale-up step and the scale-down
    /// stabilization.
    pub recommended: i32,
    /// What the workload should run.
    pub desired: i32,
    /// Set when `requested` was cut down to `desired` by a bound.
    pub limited_by: Option<Limit>,
}

/// Manual / HPA mode: `spec.replicas` is the request, the partition count the cap.
pub fn manual(requested: i32, partitions: i32) -> ReplicaDecision {
    let requested = requested.max(0);
    let cap = partitions.max(0);
    if requested > cap {
        ReplicaDecision { requested, recommended: cap, desired: cap, limited_by: Some(Limit::Partitions) }
    } else {
        ReplicaDecision { requested, recommended: requested, desired: requested, limited_by: None }
    }
}

/// A replica recommendation remembered for the scale-down stabilization window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recommendation {
    pub at_seconds: i64,
    pub replicas: i32,
}

/// What time-to-drain needs: set when spec.scaling.targetDrainSeconds is and a per-replica rate
/// is known.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DrainRates {
    pub target_seconds: i64,
    /// Messages written per second to the subscribed partitions.
    pub production_per_second: f64,
    /// Messages one consumer processes per second.
    pub per_replica_per_second: f64,
}

impl DrainRates {
    /// Consumers needed to keep up with production and eat the lag within the target:
    /// ceil((production + lag / target) / per-replica rate), at least one while there is lag.
    pub fn replicas_for(&self, lag: i64) -> i64 {
        let needed = self.production_per_second.max(0.0) + lag.max(0) as f64 / self.target_seconds.max(1) as f64;
        let per_replica = self.per_replica_per_second.max(MIN_RATE);
        // The tolerance keeps float noise (3.0000000001) from asking for a fourth consumer.
        let replicas = (needed / per_replica - 1e-9).ceil().clamp(0.0, i32::MAX as f64) as i64;
        if lag > 0 { replicas.max(1) } else { replicas }
    }
}

/// The slowest per-replica rate considered (messages per second): below it a consumer is stuck,
/// not slow, and more consumers of it would not help.
const MIN_RATE: f64 = 0.001;

/// Weight of a new capacity sample in the learned per-replica rate.
pub const RATE_SMOOTHING: f64 = 0.3;

/// The per-replica rate after one more capacity sample (an exponentially weighted mean).
pub fn learn_rate(previous: Option<f64>, sample: f64) -> f64 {
    match previous {
        Some(previous) => previous + RATE_SMOOTHING * (sample - previous),
        None => sample,
    }
}

/// One capacity sample from the last poll interval: messages per second per busy member, a busy
/// member being one that owns a partition backlogged throughout the interval (it had work waiting
/// all along, so everything it committed, on any of its partitions, is what it can do). When
/// assignments are unknown, the backlogged partitions' commits divided among all members. None
/// when nothing was backlogged: a group that keeps up tells how much is produced, not how fast
/// its consumers are.
pub fn capacity_sample(
    recent: &crate::lag::RecentCapacity,
    members: &[crate::kafka::MemberDescription],
) -> Option<f64> {
    if recent.span_ms <= 0 || members.is_empty() || recent.backlogged_committed() <= 0 {
        return None;
    }
    let owns = |member: &crate::kafka::MemberDescription, p: &crate::lag::RecentPartition| {
        member.assignment.iter().any(|tp| *tp.topic == *p.topic && tp.partition == p.partition)
    };
    let (committed, busy) = if members.iter().any(|m| !m.assignment.is_empty()) {
        let busy: Vec<_> =
            members.iter().filter(|m| recent.partitions.iter().any(|p| p.backlogged && owns(m, p))).collect();
        let committed: i64 =
            recent.partitions.iter().filter(|p| busy.iter().any(|m| owns(m, p))).map(|p| p.committed).sum();
        (committed, busy.len())
    } else {
        (recent.backlogged_committed(), members.len())
    };
    (busy > 0).then(|| committed as f64 * 1000.0 / recent.span_ms as f64 / busy as f64)
}

/// What the operator has learned of a group's per-replica rate, between reconciles.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RateMemory {
    pub per_replica: Option<f64>,
    /// The poll the last sample came from, so a poll teaches once however often it is read.
    learned_at_ms: Option<i64>,
    /// Members at that poll: an interval in which membership changed was partly a rebalance,
    /// when nobody consumes, and would understate the consumers.
    members_then: Option<usize>,
}

impl RateMemory {
    /// Learns from the last poll interval, once per poll. `stable`: the group is not rebalancing.
    pub fn observe(
        &mut self,
        recent: &crate::lag::RecentCapacity,
        members: &[crate::kafka::MemberDescription],
        stable: bool,
    ) {
        if self.learned_at_ms == Some(recent.at_ms) {
            return;
        }
        if stable
            && self.members_then == Some(members.len())
            && let Some(sample) = capacity_sample(recent, members)
        {
            self.per_replica = Some(learn_rate(self.per_replica, sample));
        }
        self.learned_at_ms = Some(recent.at_ms);
        self.members_then = stable.then_some(members.len());
    }
}

/// Inputs of one lag-autoscaling decision.
#[derive(Clone, Debug)]
pub struct LagInput<'a> {
    pub scaling: &'a ScalingSpec,
    /// Lag that counts for scaling (persistent lag already excluded by the caller).
    pub total_lag: i64,
    /// Time-to-drain's rates; None: the lag-threshold rule.
    pub drain: Option<DrainRates>,
    pub current_replicas: i32,
    pub partitions: i32,
    pub now_seconds: i64,
    /// Earlier recommendations, oldest first.
    pub history: &'a [Recommendation],
}

/// The bounds a lag decision lives in: `[min, min(max, partitions)]`; the partition cap wins over
/// `minReplicas` (never an idle consumer).
pub fn bounds(scaling: &ScalingSpec, partitions: i32) -> (i32, i32) {
    let cap = partitions.max(0);
    let upper = scaling.max_replicas.map_or(cap, |max| max.min(cap));
    let lower = scaling.min_replicas.max(0).min(upper);
    (lower, upper)
}

/// Lag mode: desired = ceil(lag / lagThreshold) within the bounds, activation from zero, bounded
/// scale-up step, even distribution, and scale-down only to the highest recommendation of the
/// stabilization window. Returns the decision and the history to keep.
pub fn autoscale(input: &LagInput) -> (ReplicaDecision, Vec<Recommendation>) {
    let scaling = input.scaling;
    let lag = input.total_lag.max(0);
    let (lower, upper) = bounds(scaling, input.partitions);

    let wanted: i64 = if input.current_replicas == 0 && lag <= scaling.activation_lag_threshold {
        0
    } else if let Some(drain) = &input.drain {
        drain.replicas_for(lag)
    } else {
        let threshold = scaling.lag_threshold.max(1);
        lag / threshold + i64::from(lag % threshold != 0)
    };
    let requested = i32::try_from(wanted).unwrap_or(i32::MAX);
    let mut recommendation = requested.clamp(lower, upper);
    let limited_by = if requested > upper {
        if scaling.max_replicas.is_some_and(|max| max < input.partitions) {
            Some(Limit::MaxReplicas)
        } else {
            Some(Limit::Partitions)
        }
    } else {
        None
    };
    if scaling.even_partition_distribution {
        recommendation = even_distribution(recommendation, input.partitions, upper);
    }

    let window = i64::from(scaling.scale_down_stabilization_seconds.max(0));
    let mut history: Vec<Recommendation> =
        input.history.iter().copied().filter(|r| input.now_seconds - r.at_seconds < window).collect();
    history.push(Recommendation { at_seconds: input.now_seconds, replicas: recommendation });

    let current = input.current_replicas.clamp(0, upper.max(0));
    let desired = if recommendation > current {
        let step = scaling.scale_up_max_step.map_or(i32::MAX, |s| s.max(1));
        recommendation.min(current.saturating_add(step))
    } else {
        // Scale down only as far as the highest recommendation still inside the window.
        let highest = history.iter().map(|r| r.replicas).max().unwrap_or(recommendation);
        highest.min(current).max(recommendation)
    };
    // The current count may itself sit outside today's bounds (max lowered, partitions deleted):
    // the bounds win over stabilization.
    let desired = desired.clamp(lower, upper);
    (ReplicaDecision { requested, recommended: recommendation, desired, limited_by }, history)
}

/// The smallest count >= `replicas` that divides `partitions`, if it stays within `upper`.
pub fn even_distribution(replicas: i32, partitions: i32, upper: i32) -> i32 {
    if replicas <= 0 || partitions <= 0 {
        return replicas;
    }
    (replicas..=upper.min(partitions)).find(|r| partitions % r == 0).unwrap_or(replicas)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn scaling() -> ScalingSpec {
        ScalingSpec { scale_down_stabilization_seconds: 60, ..ScalingSpec::default() }
    }

    fn decide(s: &ScalingSpec, lag: i64, current: i32, partitions: i32) -> i32 {
        autoscale(&LagInput {
            scaling: s,
            total_lag: lag,
            drain: None,
            current_replicas: current,
            partitions,
            now_seconds: 1000,
            history: &[],
        })
        .0
        .desired
    }

    #[test]
    fn manual_request_is_capped_at_partitions() {
        assert_eq!(
            manual(10, 6),
            ReplicaDecision { requested: 10, recommended: 6, desired: 6, limited_by: Some(Limit::Partitions) }
        );
        assert_eq!(manual(3, 6), ReplicaDecision { requested: 3, recommended: 3, desired: 3, limited_by: None });
        assert_eq!(manual(6, 6).limited_by, None);
        assert_eq!(manual(0, 6).desired, 0);
        assert_eq!(manual(-1, 6).desired, 0);
        assert_eq!(manual(4, 0).desired, 0);
    }

    #[test]
    fn lag_asks_for_ceil_of_lag_over_threshold() {
        let s = ScalingSpec { lag_threshold: 100, ..scaling() };
        assert_eq!(decide(&s, 250, 1, 12), 3);
        assert_eq!(decide(&s, 300, 1, 12), 3);
        assert_eq!(decide(&s, 301, 1, 12), 4);
    }

    #[test]
    fn lag_never_asks_beyond_partitions_even_for_huge_lag() {
        let s = ScalingSpec { lag_threshold: 10, ..scaling() };
        let (d, _) = autoscale(&LagInput {
            scaling: &s,
            total_lag: 5_000,
            drain: None,
            current_replicas: 1,
            partitions: 6,
            now_seconds: 0,
            history: &[],
        });
        assert_eq!(
            d,
            ReplicaDecision { requested: 500, recommended: 6, desired: 6, limited_by: Some(Limit::Partitions) }
        );
    }

    #[test]
    fn max_replicas_below_partitions_is_reported_as_the_limit() {
        let s = ScalingSpec { lag_threshold: 10, max_replicas: Some(4), ..scaling() };
        let (d, _) = autoscale(&LagInput {
            scaling: &s,
            total_lag: 5_000,
            drain: None,
            current_replicas: 1,
            partitions: 6,
            now_seconds: 0,
            history: &[],
        });
        assert_eq!((d.desired, d.limited_by), (4, Some(Limit::MaxReplicas)));
    }

    #[test]
    fn activation_threshold_gates_only_scaling_from_zero() {
        let s = ScalingSpec { min_replicas: 0, lag_threshold: 10, activation_lag_threshold: 50, ..scaling() };
        assert_eq!(decide(&s, 50, 0, 6), 0);
        assert_eq!(decide(&s, 51, 0, 6), 6);
        // Already running: the activation threshold does not apply.
        assert_eq!(decide(&s, 20, 2, 6), 2);
    }

    #[test]
    fn drained_group_scales_to_min_after_window_and_to_zero_when_allowed() {
        let s = ScalingSpec { min_replicas: 0, ..scaling() };
        let history = [Recommendation { at_seconds: 900, replicas: 4 }];
        let within = LagInput {
            scaling: &s,
            total_lag: 0,
            drain: None,
            current_replicas: 4,
            partitions: 6,
            now_seconds: 950,
            history: &history,
        };
        assert_eq!(autoscale(&within).0.desired, 4, "inside the window the old recommendation holds");
        let after = LagInput { now_seconds: 961, ..within };
        assert_eq!(autoscale(&after).0.desired, 0, "after the window the group may scale to zero");
    }

    #[test]
    fn scale_up_step_limits_growth() {
        let s = ScalingSpec { lag_threshold: 1, scale_up_max_step: Some(2), ..scaling() };
        assert_eq!(decide(&s, 100, 1, 50), 3);
    }

    #[test]
    fn even_distribution_rounds_up_to_a_divisor() {
        assert_eq!(even_distribution(5, 12, 12), 6);
        assert_eq!(even_distribution(7, 12, 12), 12);
        assert_eq!(even_distribution(7, 12, 10), 7, "no divisor within the bound: keep the count");
        assert_eq!(even_distribution(4, 12, 12), 4);
        let s = ScalingSpec { lag_threshold: 100, even_partition_distribution: true, ..scaling() };
        assert_eq!(decide(&s, 500, 1, 12), 6);
    }

    #[test]
    fn min_replicas_above_partitions_yields_to_the_cap() {
        let s = ScalingSpec { min_replicas: 10, ..scaling() };
        assert_eq!(decide(&s, 0, 3, 4), 4);
    }

    fn drain(production: f64, per_replica: f64) -> DrainRates {
        DrainRates { target_seconds: 60, production_per_second: production, per_replica_per_second: per_replica }
    }

    #[test]
    fn time_to_drain_asks_for_production_plus_lag_over_target_divided_by_the_per_replica_rate() {
        // 100/s produced, 6,000 behind, 60 s to drain: 200/s needed at 50/s per consumer.
        assert_eq!(drain(100.0, 50.0).replicas_for(6_000), 4);
        assert_eq!(drain(100.0, 50.0).replicas_for(6_001), 5);
        assert_eq!(drain(100.0, 50.0).replicas_for(0), 2, "keeping up with production alone");
        assert_eq!(drain(0.0, 50.0).replicas_for(1), 1, "never zero while there is lag");
        assert_eq!(drain(0.0, 50.0).replicas_for(0), 0);
        assert_eq!(drain(0.3, 0.1).replicas_for(0), 3, "float noise does not add a consumer");
        assert!(drain(1.0, 0.0).replicas_for(10) > 1000, "a zero rate asks for many (the partitions cap it)");
        // 10,000 behind is nothing for fast consumers and an hour for slow ones.
        assert_eq!(drain(0.0, 50_000.0).replicas_for(10_000), 1);
        assert_eq!(drain(0.0, 3.0).replicas_for(10_000), 56);
    }

    #[test]
    fn the_per_replica_rate_learns_from_backlogged_members_only() {
        use crate::kafka::{MemberDescription, TopicPartition};
        let member = |id: &str, partitions: &[i32]| MemberDescription {
            member_id: id.into(),
            client_id: id.into(),
            host: "h".into(),
            assignment: partitions.iter().map(|&partition| TopicPartition { topic: "t".into(), partition }).collect(),
        };
        let partition = |partition: i32, committed: i64, backlogged: bool| crate::lag::RecentPartition {
            topic: std::sync::Arc::from("t"),
            partition,
            committed,
            backlogged,
        };
        let recent = crate::lag::RecentCapacity {
            at_ms: 10_000,
            span_ms: 2_000,
            partitions: vec![
                partition(0, 300, true),
                partition(1, 60, true),
                partition(2, 20, false),
                partition(3, 20, false),
                partition(4, 40, false),
            ],
        };
        // Members a and b own the backlogged partitions (b also a partition that keeps up); c
        // keeps up with its own.
        let members = [member("a", &[0]), member("b", &[1, 4]), member("c", &[2, 3])];
        assert_eq!(
            capacity_sample(&recent, &members),
            Some(100.0),
            "(300 + 60 + 40) messages in 2 s by 2 busy consumers"
        );
        let unknown = [member("a", &[]), member("b", &[]), member("c", &[]), member("d", &[])];
        assert_eq!(
            capacity_sample(&recent, &unknown),
            Some(45.0),
            "without assignments: backlogged commits over every member"
        );
        assert_eq!(capacity_sample(&recent, &[]), None);
        let keeping_up = crate::lag::RecentCapacity { partitions: vec![partition(2, 20, false)], ..recent.clone() };
        assert_eq!(capacity_sample(&keeping_up, &members), None, "a group that keeps up teaches nothing");

        assert_eq!(learn_rate(None, 100.0), 100.0);
        assert!((learn_rate(Some(100.0), 200.0) - 130.0).abs() < 1e-9);

        let mut memory = RateMemory::default();
        memory.observe(&recent, &members, true);
        assert_eq!(memory.per_replica, None, "the first interval seen may have started in a rebalance");
        let next = crate::lag::RecentCapacity { at_ms: 12_000, ..recent.clone() };
        memory.observe(&next, &members, true);
        assert_eq!(memory.per_replica, Some(100.0));
        memory.observe(&next, &members, true);
        assert_eq!(memory.per_replica, Some(100.0), "a poll teaches once");
        let after_join = crate::lag::RecentCapacity { at_ms: 14_000, ..recent.clone() };
        memory.observe(&after_join, &members[..2], true);
        assert_eq!(memory.per_replica, Some(100.0), "an interval with a membership change is skipped");
        let rebalancing = crate::lag::RecentCapacity { at_ms: 16_000, ..recent };
        memory.observe(&rebalancing, &members[..2], false);
        assert_eq!(memory.per_replica, Some(100.0), "nor is one that ends in a rebalance");
    }

    #[test]
    fn time_to_drain_without_rates_falls_back_to_the_lag_threshold() {
        let s = ScalingSpec { lag_threshold: 100, target_drain_seconds: Some(60), ..scaling() };
        assert_eq!(decide(&s, 450, 1, 12), 5);
        let input = |drain| LagInput {
            scaling: &s,
            total_lag: 450,
            drain,
            current_replicas: 1,
            partitions: 12,
            now_seconds: 1000,
            history: &[],
        };
        assert_eq!(autoscale(&input(Some(drain(0.0, 10.0)))).0.desired, 1, "450 in 60 s at 10/s each: 1");
        assert_eq!(autoscale(&input(Some(drain(100.0, 10.0)))).0.desired, 11);
        assert_eq!(autoscale(&input(Some(drain(1000.0, 10.0)))).0.desired, 12, "capped at the partitions");
    }

    /// Replicas over `steps` decisions of a simulated group: lag grows by production and shrinks
    /// by what the running consumers process, each decision a poll apart.
    fn simulate(
        s: &ScalingSpec,
        production: f64,
        per_replica: f64,
        backlog: i64,
        partitions: i32,
        steps: usize,
    ) -> Vec<i32> {
        let poll = 10i64;
        let (mut lag, mut replicas, mut history) = (backlog as f64, 1i32, Vec::new());
        let mut seen = Vec::new();
        for step in 0..steps {
            let input = LagInput {
                scaling: s,
                total_lag: lag.round() as i64,
                drain: Some(DrainRates {
                    target_seconds: 60,
                    production_per_second: production,
                    per_replica_per_second: per_replica,
                }),
                current_replicas: replicas,
                partitions,
                now_seconds: step as i64 * poll,
                history: &history,
            };
            let (decision, kept) = autoscale(&input);
            history = kept;
            replicas = decision.desired;
            seen.push(replicas);
            lag = (lag + (production - per_replica * f64::from(replicas)) * poll as f64).max(0.0);
        }
        seen
    }

    proptest! {
        #[test]
        fn time_to_drain_is_monotone_in_lag_and_production(
            lag in 0i64..1_000_000, more_lag in 0i64..1_000_000, production in 0.0f64..10_000.0,
            more_production in 0.0f64..10_000.0, per_replica in 0.5f64..5_000.0, target in 1i64..3600,
        ) {
            let rates = DrainRates { target_seconds: target, production_per_second: production, per_replica_per_second: per_replica };
            let more = DrainRates { production_per_second: production + more_production, ..rates };
            prop_assert!(rates.replicas_for(lag + more_lag) >= rates.replicas_for(lag));
            prop_assert!(more.replicas_for(lag) >= rates.replicas_for(lag));
            if lag > 0 {
                prop_assert!(rates.replicas_for(lag) >= 1);
            }
        }

        #[test]
        fn time_to_drain_settles_without_oscillating_on_a_constant_workload(
            production in 0.0f64..2_000.0, per_replica in 10.0f64..500.0, backlog in 0i64..200_000,
            partitions in 1i32..64, min in 0i32..4, window in 0i32..120,
        ) {
            let s = ScalingSpec { min_replicas: min, scale_down_stabilization_seconds: window, target_drain_seconds: Some(60), ..ScalingSpec::default() };
            let replicas = simulate(&s, production, per_replica, backlog, partitions, 60);
            let (lower, upper) = bounds(&s, partitions);
            prop_assert!(replicas.iter().all(|r| (lower..=upper).contains(r)), "{replicas:?} outside [{lower}, {upper}]");
            // Up first (the backlog), then down at most once it is drained: never up again.
            let turns = replicas.windows(2).filter(|w| w[0] != w[1]).map(|w| w[1] > w[0]).collect::<Vec<_>>();
            let first_down = turns.iter().position(|up| !up).unwrap_or(turns.len());
            prop_assert!(turns[first_down..].iter().all(|up| !up), "oscillates: {replicas:?}");
            // And it ends where production alone puts it (within the bounds).
            let steady = ((production / per_replica - 1e-9).ceil() as i32).clamp(lower, upper);
            prop_assert!(*replicas.last().unwrap() >= steady, "{replicas:?} ends below {steady}");
        }
    }

    proptest! {
        #[test]
        fn desired_is_always_within_bounds(
            lag in 0i64..1_000_000, current in 0i32..100, partitions in 0i32..200,
            min in 0i32..20, max in proptest::option::of(1i32..300), threshold in 1i64..10_000,
            step in proptest::option::of(1i32..10), even: bool, window in 0i32..600,
            history in proptest::collection::vec((0i64..2000, 0i32..300), 0..10),
        ) {
            let s = ScalingSpec {
                min_replicas: min, max_replicas: max, lag_threshold: threshold,
                scale_up_max_step: step, even_partition_distribution: even,
                scale_down_stabilization_seconds: window, ..ScalingSpec::default()
            };
            let history: Vec<_> = history.into_iter().map(|(t, r)| Recommendation { at_seconds: t, replicas: r }).collect();
            let (d, _) = autoscale(&LagInput { scaling: &s, total_lag: lag, drain: None, current_replicas: current, partitions, now_seconds: 2000, history: &history });
            let (lower, upper) = bounds(&s, partitions);
            prop_assert!(d.desired >= lower && d.desired <= upper, "{d:?} not in [{lower}, {upper}]");
            prop_assert!(d.desired <= partitions.max(0));
        }

        #[test]
        fn desired_is_monotone_in_lag(
            lag in 0i64..100_000, extra in 0i64..100_000, current in 0i32..50, partitions in 1i32..100,
            threshold in 1i64..1000, even: bool,
        ) {
            let s = ScalingSpec { min_replicas: 0, lag_threshold: threshold, even_partition_distribution: even, ..ScalingSpec::default() };
            let low = decide(&s, lag, current, partitions);
            let high = decide(&s, lag + extra, current, partitions);
            prop_assert!(high >= low, "lag {lag} -> {low}, lag {} -> {high}", lag + extra);
        }

        #[test]
        fn no_scale_down_below_a_recommendation_inside_the_window(
            earlier in 1i32..50, current in 1i32..50, age in 0i64..300, window in 1i32..300, partitions in 50i32..100,
        ) {
            let s = ScalingSpec { min_replicas: 0, scale_down_stabilization_seconds: window, ..ScalingSpec::default() };
            let history = [Recommendation { at_seconds: 1000 - age, replicas: earlier }];
            let (d, _) = autoscale(&LagInput { scaling: &s, total_lag: 0, drain: None, current_replicas: current, partitions, now_seconds: 1000, history: &history });
            if age < i64::from(window) {
                prop_assert!(d.desired >= earlier.min(current), "{d:?} dropped below {earlier} inside the window");
            } else {
                prop_assert_eq!(d.desired, 0);
            }
        }
    }
}
