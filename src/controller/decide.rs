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
        ReplicaDecision { requested, desired: cap, limited_by: Some(Limit::Partitions) }
    } else {
        ReplicaDecision { requested, desired: requested, limited_by: None }
    }
}

/// A replica recommendation remembered for the scale-down stabilization window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recommendation {
    pub at_seconds: i64,
    pub replicas: i32,
}

/// Inputs of one lag-autoscaling decision.
#[derive(Clone, Debug)]
pub struct LagInput<'a> {
    pub scaling: &'a ScalingSpec,
    /// Lag that counts for scaling (persistent lag already excluded by the caller).
    pub total_lag: i64,
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
    (ReplicaDecision { requested, desired, limited_by }, history)
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
        assert_eq!(manual(10, 6), ReplicaDecision { requested: 10, desired: 6, limited_by: Some(Limit::Partitions) });
        assert_eq!(manual(3, 6), ReplicaDecision { requested: 3, desired: 3, limited_by: None });
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
            current_replicas: 1,
            partitions: 6,
            now_seconds: 0,
            history: &[],
        });
        assert_eq!(d, ReplicaDecision { requested: 500, desired: 6, limited_by: Some(Limit::Partitions) });
    }

    #[test]
    fn max_replicas_below_partitions_is_reported_as_the_limit() {
        let s = ScalingSpec { lag_threshold: 10, max_replicas: Some(4), ..scaling() };
        let (d, _) = autoscale(&LagInput {
            scaling: &s,
            total_lag: 5_000,
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
            let (d, _) = autoscale(&LagInput { scaling: &s, total_lag: lag, current_replicas: current, partitions, now_seconds: 2000, history: &history });
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
            let (d, _) = autoscale(&LagInput { scaling: &s, total_lag: 0, current_replicas: current, partitions, now_seconds: 1000, history: &history });
            if age < i64::from(window) {
                prop_assert!(d.desired >= earlier.min(current), "{d:?} dropped below {earlier} inside the window");
            } else {
                prop_assert_eq!(d.desired, 0);
            }
        }
    }
}
