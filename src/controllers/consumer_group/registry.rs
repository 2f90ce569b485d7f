//! Everything the operator keeps per ConsumerGroup between reconciles, in one map keyed by the
//! resource: what its decisions remember (recommendations, the learned per-replica rate, the last
//! status write), its run of failures (backoff), and the connection and groupId it reads (which
//! connections stay open, whose reconciles a poll is news to).
//!
//! An entry goes with its ConsumerGroup's delete event, or with the watch's relist for deletions
//! the watch missed while it was broken (see `GroupContext::forget`, which also withdraws the
//! group's interest from its observer and its /metrics series). Nothing here is swept by time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::runtime::reflector::ObjectRef;

use super::scaling::{RateMemory, Recommendation};
use crate::crd::ConsumerGroup;

/// How long a cache behind a write is waited for before deciding from it anyway (its watch broke
/// and is being restarted): a repeated Event is better than a ConsumerGroup left alone.
pub const CACHE_BEHIND_PATIENCE: Duration = Duration::from_secs(10);

/// What one ConsumerGroup's decisions remember between reconciles (in memory: a restart starts
/// new windows, which only delays a scale-down or a health verdict).
#[derive(Default)]
pub struct GroupMemory {
    pub recommendations: Vec<Recommendation>,
    /// The per-replica rate learned for time-to-drain scaling.
    pub rates: RateMemory,
    /// Since when the group has waited for its first observation.
    pub awaiting_observation: Option<Instant>,
    /// The status write the watch cache may not show yet.
    last_write: Option<LastWrite>,
}

/// A status write, until the watch cache shows it. A reconcile triggered by something else (the
/// Deployment's watch event, the observer) can run before the write's own event arrives; deciding
/// again from the older object would repeat a transition's Event and write older fields back.
struct LastWrite {
    /// The resource version the write was decided on: the cache only moves forward, so while it
    /// holds the object at this version it is behind the write.
    decided_on: String,
    at: Instant,
}

impl LastWrite {
    fn is_ahead_of(&self, cached: Option<&str>, now: Instant) -> bool {
        cached == Some(self.decided_on.as_str()) && now.duration_since(self.at) < CACHE_BEHIND_PATIENCE
    }
}

/// The connection (its client properties) and the groupId a ConsumerGroup reads there.
#[derive(Clone, Debug, PartialEq)]
pub struct Reads {
    pub properties: BTreeMap<String, String>,
    pub group_id: String,
}

#[derive(Default)]
struct GroupState {
    memory: GroupMemory,
    failures: u32,
    reads: Option<Reads>,
}

/// What the registry held of a ConsumerGroup it forgot: where to withdraw its interest.
pub struct Forgotten {
    pub reads: Option<Reads>,
}

#[derive(Default)]
pub struct Registry {
    groups: Mutex<HashMap<ObjectRef<ConsumerGroup>, GroupState>>,
}

impl Registry {
    fn with<T>(&self, key: &ObjectRef<ConsumerGroup>, f: impl FnOnce(&mut GroupState) -> T) -> T {
        let mut groups = self.groups.lock().expect("registry lock");
        f(groups.entry(key.clone()).or_default())
    }

    /// The group's memory, for one reconcile to use and [`Registry::put_memory`] back (the
    /// controller never runs two reconciles of one object at once).
    pub fn take_memory(&self, key: &ObjectRef<ConsumerGroup>) -> GroupMemory {
        self.with(key, |state| std::mem::take(&mut state.memory))
    }

    pub fn put_memory(&self, key: &ObjectRef<ConsumerGroup>, memory: GroupMemory) {
        self.with(key, |state| state.memory = memory);
    }

    /// Whether the cached ConsumerGroup, at `cached_version`, is still the one the last status
    /// write was decided on. Forgets the write once the cache has moved past it.
    pub fn cache_behind(&self, key: &ObjectRef<ConsumerGroup>, cached_version: Option<&str>, now: Instant) -> bool {
        let mut groups = self.groups.lock().expect("registry lock");
        let Some(state) = groups.get_mut(key) else { return false };
        if state.memory.last_write.as_ref().is_some_and(|w| w.is_ahead_of(cached_version, now)) {
            return true;
        }
        state.memory.last_write = None;
        false
    }

    /// Records a status write decided on the object at `decided_on`.
    pub fn remember_write(&self, key: &ObjectRef<ConsumerGroup>, decided_on: Option<String>, now: Instant) {
        self.with(key, |state| {
            state.memory.last_write = decided_on.map(|decided_on| LastWrite { decided_on, at: now })
        });
    }

    /// Counts a failed look at the group's Kafka or a failed reconcile; returns how many in a row.
    pub fn failed(&self, key: &ObjectRef<ConsumerGroup>) -> u32 {
        self.with(key, |state| {
            state.failures = state.failures.saturating_add(1);
            state.failures
        })
    }

    /// The group's next failure is a first one again.
    pub fn succeeded(&self, key: &ObjectRef<ConsumerGroup>) {
        self.with(key, |state| state.failures = 0);
    }

    /// Records what the group reads now; returns what it read before when that differs (its
    /// interest is to be withdrawn from that connection's observer).
    pub fn set_reads(&self, key: &ObjectRef<ConsumerGroup>, reads: Option<Reads>) -> Option<Reads> {
        self.with(key, |state| if state.reads == reads { None } else { std::mem::replace(&mut state.reads, reads) })
    }

    /// The ConsumerGroups reading any of `group_ids` through the connection of `properties`.
    pub fn readers_of(
        &self,
        properties: &BTreeMap<String, String>,
        group_ids: &HashSet<&str>,
    ) -> Vec<ObjectRef<ConsumerGroup>> {
        let groups = self.groups.lock().expect("registry lock");
        groups
            .iter()
            .filter(|(_, state)| {
                state
                    .reads
                    .as_ref()
                    .is_some_and(|r| &r.properties == properties && group_ids.contains(r.group_id.as_str()))
            })
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// The connections some ConsumerGroup reads.
    pub fn connections_in_use(&self) -> HashSet<BTreeMap<String, String>> {
        let groups = self.groups.lock().expect("registry lock");
        groups.values().filter_map(|state| state.reads.as_ref().map(|r| r.properties.clone())).collect()
    }

    /// Drops everything kept of the group.
    pub fn forget(&self, key: &ObjectRef<ConsumerGroup>) -> Option<Forgotten> {
        let state = self.groups.lock().expect("registry lock").remove(key)?;
        Some(Forgotten { reads: state.reads })
    }

    /// The groups kept that `is_live` says no longer exist.
    pub fn gone(&self, is_live: impl Fn(&ObjectRef<ConsumerGroup>) -> bool) -> Vec<ObjectRef<ConsumerGroup>> {
        let groups = self.groups.lock().expect("registry lock");
        groups.keys().filter(|key| !is_live(key)).cloned().collect()
    }

    /// How many ConsumerGroups have an entry.
    pub fn len(&self) -> usize {
        self.groups.lock().expect("registry lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ObjectRef<ConsumerGroup> {
        ObjectRef::new(name).within("team-a")
    }

    fn reads(servers: &str, group_id: &str) -> Reads {
        Reads { properties: BTreeMap::from([("bootstrap.servers".into(), servers.into())]), group_id: group_id.into() }
    }

    #[test]
    fn a_write_is_ahead_of_the_version_it_was_decided_on_until_patience_runs_out() {
        let at = Instant::now();
        let write = LastWrite { decided_on: "10".into(), at };
        assert!(write.is_ahead_of(Some("10"), at), "the cache still holds what the write was decided on");
        assert!(write.is_ahead_of(Some("10"), at + CACHE_BEHIND_PATIENCE - Duration::from_millis(1)));
        assert!(!write.is_ahead_of(Some("10"), at + CACHE_BEHIND_PATIENCE), "a broken watch is not waited for");
        assert!(!write.is_ahead_of(Some("11"), at), "the cache moved on: the write or something newer");
        assert!(!write.is_ahead_of(None, at));
    }

    #[test]
    fn a_cache_behind_the_last_write_is_seen_once_and_forgotten_when_it_moves_on() {
        let registry = Registry::default();
        let now = Instant::now();
        assert!(!registry.cache_behind(&key("a"), Some("5"), now), "no write yet");
        registry.remember_write(&key("a"), Some("5".into()), now);
        assert!(registry.cache_behind(&key("a"), Some("5"), now));
        assert!(!registry.cache_behind(&key("a"), Some("6"), now), "the cache moved past the write");
        assert!(!registry.cache_behind(&key("a"), Some("5"), now), "and the write is forgotten");
    }

    #[test]
    fn failures_count_per_group_until_a_success() {
        let registry = Registry::default();
        assert_eq!([registry.failed(&key("a")), registry.failed(&key("a"))], [1, 2]);
        assert_eq!(registry.failed(&key("b")), 1, "counted per group");
        registry.succeeded(&key("a"));
        assert_eq!(registry.failed(&key("a")), 1);
    }

    #[test]
    fn reads_say_which_groups_a_poll_is_news_to_and_which_connections_stay_open() {
        let registry = Registry::default();
        assert_eq!(registry.set_reads(&key("a"), Some(reads("k1:9092", "ga"))), None, "nothing read before");
        assert_eq!(registry.set_reads(&key("a"), Some(reads("k1:9092", "ga"))), None, "unchanged");
        registry.set_reads(&key("b"), Some(reads("k2:9092", "gb")));
        let news = HashSet::from(["ga", "gb"]);
        assert_eq!(registry.readers_of(&reads("k1:9092", "").properties, &news), [key("a")]);
        assert_eq!(registry.connections_in_use().len(), 2);

        let before = registry.set_reads(&key("a"), Some(reads("k1:9092", "ga2")));
        assert_eq!(before, Some(reads("k1:9092", "ga")), "a changed groupId hands back the old one to withdraw");
        assert!(registry.readers_of(&reads("k1:9092", "").properties, &news).is_empty());
        assert_eq!(registry.set_reads(&key("b"), None), Some(reads("k2:9092", "gb")));
        assert_eq!(registry.connections_in_use().len(), 1);
    }

    #[test]
    fn forgetting_a_group_drops_all_it_kept_and_says_where_it_read() {
        let registry = Registry::default();
        registry.set_reads(&key("a"), Some(reads("k1:9092", "ga")));
        registry.failed(&key("a"));
        registry.put_memory(&key("b"), GroupMemory::default());
        assert_eq!(registry.gone(|k| k == &key("b")), [key("a")]);
        let forgotten = registry.forget(&key("a")).expect("kept");
        assert_eq!(forgotten.reads, Some(reads("k1:9092", "ga")));
        assert_eq!(registry.len(), 1);
        assert_eq!(registry.failed(&key("a")), 1, "a group made again starts afresh");
        assert!(registry.forget(&key("c")).is_none());
    }
}
