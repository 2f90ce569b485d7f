//! One observer per Kafka connection: it reads, for every consumer group it serves, what a
//! ConsumerGroup reconcile needs, in a few batched requests per poll, and publishes the result as
//! a snapshot that reconciles read without any Kafka I/O of their own.
//!
//! Cost of one poll, for G groups on B brokers, C of them coordinating the groups (counted by
//! librdkafka's statistics and the reader's own counts, pinned by a test in `tests/kafka.rs`):
//! - 1 Metadata request (every topic of the cluster: one request, whatever the number of topics
//!   the groups read);
//! - C OffsetFetch (the groups of a coordinator together, one request per 5,000 partitions they
//!   read) + C ConsumerGroupDescribe
//!   (KIP-848 groups) + at most C DescribeGroups (the classic ones), through the batched
//!   [`super::protocol::GroupReader`]; plus 1 FindCoordinator for groups whose coordinator is not cached yet;
//! - where the reader cannot honour the connection's settings (TLS or SASL so far), librdkafka
//!   instead: B ListGroups + B DescribeGroups, and G OffsetFetch + G FindCoordinator (it fetches
//!   one group per request, and does not see KIP-848 groups);
//! - 2 ListOffsets per broker for every 2,000 partitions (log start and end, shared by all groups);
//! - rarely, one consumer's Fetch requests for the partitions whose small lag stayed put for a poll
//!   (are they only transaction markers? see `markers`), for all groups at once.
//!
//! It also keeps what lag over time needs, once: each group's last polls (health verdict, rates,
//! persistent lag) and each partition's log-end history (time lag, shared by every group reading
//! the partition), and summarizes each group's lag at every poll. All of it is bounded and goes
//! with the group's interest.
//!
//! A group registers its interest (topics and how often it wants a look) when its reconcile asks
//! for a view; a new or changed interest wakes the observer for an early poll instead of waiting
//! for the next one. A deleted ConsumerGroup withdraws its interest; interests not renewed for a
//! while (a reader that went without saying) are dropped too.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::log_offsets::{LogOffsetCache, LogRange};
use super::protocol::TopicOffsets;
use super::{AbsentTopics, GroupDescription, KafkaClient, KafkaError, TopicPartition, markers, topics_not_ready};
use crate::crd::AutoOffsetReset;
use crate::lag::{GroupHistory, LogEndHistory, PartitionOffsets, Summary};

/// How long an early poll waits for other groups registering at the same moment.
const EARLY_POLL_DELAY: Duration = Duration::from_millis(200);

/// Interests not renewed for this many of their own intervals are dropped.
const INTEREST_EXPIRY_INTERVALS: u32 = 3;

/// What a ConsumerGroup asks the observer to watch for it.
#[derive(Clone, Debug, PartialEq)]
pub struct Interest {
    pub topics: Vec<String>,
    /// How often the group wants a look (its poll interval).
    pub every: Duration,
    /// Where a group that never committed would start (lag of uncommitted partitions).
    pub policy: AutoOffsetReset,
    /// Polls to keep per partition beyond the health window (excludePersistentLagAfterPolls).
    pub polls_kept: usize,
    /// Whether the group's summaries carry the last interval's commits per partition
    /// ([`Summary::recent_capacity`]): only lag autoscaling learns from them, and for a group of
    /// thousands of partitions they are as large as the lag figures.
    pub learns_capacity: bool,
}

#[derive(Clone, Debug)]
struct Registered {
    interest: Interest,
    topics: BTreeSet<String>,
    renewed: Instant,
}

/// What the observer remembers of one group between polls.
#[derive(Default)]
struct Track {
    history: GroupHistory,
    summary: Option<Arc<Summary>>,
}

/// The last marker probe of a partition: valid while its log end stays.
#[derive(Clone, Copy, Debug)]
struct MarkerScan {
    log_end: i64,
    from: i64,
    last_record: Option<i64>,
}

impl MarkerScan {
    /// Whether a group committed at `committed` has only transaction markers left to read.
    fn only_markers(&self, committed: i64) -> bool {
        self.last_record.is_none_or(|record| record < committed)
    }
}

/// Lag state kept across polls (touched by the polling task only).
#[derive(Default)]
struct Memory {
    tracks: BTreeMap<String, Track>,
    /// Each topic's partitions' log-end histories, by partition index.
    logs: BTreeMap<String, Vec<LogEndHistory>>,
    scans: BTreeMap<TopicPartition, MarkerScan>,
}

/// What one poll saw, as reconciles read it: each group's description and lag summary. The
/// committed offsets and log ranges it was folded from are dropped with the poll (see
/// [`Reading`]): the summaries carry each partition's figures.
#[derive(Debug)]
pub struct Snapshot {
    /// When the poll started.
    pub taken: Instant,
    /// How long the poll took (its Kafka round trips).
    pub took: Duration,
    /// Partition counts of the topics that exist, or why metadata could not be read.
    topics: Result<BTreeMap<String, i32>, KafkaError>,
    /// Each served group's description (`None`: Kafka does not know it), or why it could not be
    /// read.
    groups: BTreeMap<String, Result<Option<GroupDescription>, KafkaError>>,
    /// The topics each group was polled for.
    covered: BTreeMap<String, BTreeSet<String>>,
    /// Each group's lag as of its last recorded poll, or why its offsets could not be read.
    lag: BTreeMap<String, Result<Arc<Summary>, KafkaError>>,
    /// The groups this poll has news of: lag measured anew (each group at its own interval), or
    /// a failure to report.
    news: BTreeSet<String>,
    /// Topics the groups name that the listing lacks but are not missing: refused or not ready.
    absent: AbsentTopics,
}

/// The offsets one poll read, for folding into the groups' histories; not kept after it (a
/// snapshot holding every group's offsets would keep two copies in memory at each poll).
struct Reading<'a> {
    topics: &'a Result<BTreeMap<String, i32>, KafkaError>,
    /// Committed offsets per served group, by topic and partition index.
    committed: BTreeMap<String, Result<TopicOffsets, KafkaError>>,
    /// Log start and end of every partition of the served groups' topics, by partition index.
    log_ranges: Result<BTreeMap<String, Vec<LogRange>>, KafkaError>,
}

/// One group's part of a snapshot.
#[derive(Debug)]
pub enum GroupView {
    /// Metadata could not be read: nothing is known.
    Failed(KafkaError),
    /// Some of the group's topics do not exist.
    TopicsMissing(Vec<String>),
    Seen {
        partitions: BTreeMap<String, i32>,
        /// The group's description (`None`: Kafka does not know the group), or why it could not
        /// be read.
        group: Result<Option<GroupDescription>, KafkaError>,
        /// The group's lag summary, or why it could not be measured.
        lag: Result<Arc<Summary>, KafkaError>,
    },
}

impl Snapshot {
    /// Whether this poll measured `group_id`'s lag anew or failed to: what its reconcile acts on.
    pub fn has_news_of(&self, group_id: &str) -> bool {
        self.news.contains(group_id)
    }

    /// The groups this poll has news of.
    pub fn groups_with_news(&self) -> BTreeSet<String> {
        self.news.clone()
    }

    fn covers(&self, group_id: &str, topics: &BTreeSet<String>) -> bool {
        self.covered.get(group_id).is_some_and(|covered| topics.is_subset(covered))
    }

    /// The part of this snapshot about `group_id` reading `topics`.
    pub fn view(&self, group_id: &str, topics: &[String]) -> GroupView {
        let counts = match &self.topics {
            Ok(counts) => counts,
            Err(error) => return GroupView::Failed(error.clone()),
        };
        let missing = missing_topics(counts, topics);
        let (refused, missing): (Vec<String>, Vec<String>) =
            missing.into_iter().partition(|topic| self.absent.refused.contains(topic));
        if !refused.is_empty() {
            return GroupView::Failed(KafkaError::TopicsNotAuthorized(refused));
        }
        let (not_ready, missing): (Vec<String>, Vec<String>) =
            missing.into_iter().partition(|topic| self.absent.not_ready.contains_key(topic));
        if !not_ready.is_empty() {
            let why = self.absent.not_ready.iter().filter(|(topic, _)| not_ready.contains(topic));
            return GroupView::Failed(topics_not_ready(why));
        }
        if !missing.is_empty() {
            return GroupView::TopicsMissing(missing);
        }
        let partitions: BTreeMap<String, i32> = topics.iter().map(|t| (t.clone(), counts[t])).collect();
        let group = match self.groups.get(group_id) {
            Some(result) => result.clone(),
            None => Err(KafkaError::Internal(format!("group {group_id:?} was not polled"))),
        };
        let lag = match self.lag.get(group_id) {
            Some(result) => result.clone(),
            None => Err(KafkaError::Internal(format!("group {group_id:?} was not polled"))),
        };
        GroupView::Seen { partitions, group, lag }
    }
}

/// The topics of `topics` the cluster's metadata does not have.
fn missing_topics(counts: &BTreeMap<String, i32>, topics: &[String]) -> Vec<String> {
    topics.iter().filter(|t| !counts.contains_key(*t)).cloned().collect()
}

impl Reading<'_> {
    /// Each partition's offsets of `group_id` for its `topics` (by topic, partition index), or
    /// why they could not be read.
    fn partition_offsets<'a>(
        &self,
        group_id: &str,
        topics: &'a [String],
    ) -> Result<Vec<(&'a str, Vec<PartitionOffsets>)>, KafkaError> {
        let counts = self.topics.as_ref().map_err(Clone::clone)?;
        let missing = missing_topics(counts, topics);
        if !missing.is_empty() {
            return Err(KafkaError::UnknownTopics(missing));
        }
        let committed = match self.committed.get(group_id) {
            Some(result) => result.as_ref().map_err(Clone::clone)?,
            None => return Err(KafkaError::Internal(format!("group {group_id:?} was not polled"))),
        };
        let ranges = self.log_ranges.as_ref().map_err(Clone::clone)?;
        topics
            .iter()
            .map(|topic| {
                let count = counts[topic].max(0) as usize;
                let topic_ranges = ranges
                    .get(topic)
                    .filter(|r| r.len() >= count)
                    .ok_or_else(|| KafkaError::MissingOffsets(TopicPartition { topic: topic.clone(), partition: 0 }))?;
                let topic_committed = committed.get(topic);
                let partitions = (0..count)
                    .map(|partition| PartitionOffsets {
                        committed: topic_committed.and_then(|c| c.get(partition).copied()).flatten(),
                        log_start: topic_ranges[partition].start,
                        log_end: topic_ranges[partition].end,
                    })
                    .collect();
                Ok((topic.as_str(), partitions))
            })
            .collect()
    }
}

/// Observes the groups of one Kafka connection; see the module documentation.
pub struct Observer {
    client: Arc<KafkaClient>,
    log_offsets: LogOffsetCache,
    log_offsets_max_age: Duration,
    timeout: Duration,
    interests: Mutex<BTreeMap<String, Registered>>,
    memory: Mutex<Memory>,
    snapshot: watch::Sender<Option<Arc<Snapshot>>>,
    wake: Notify,
    on_poll: Box<dyn Fn(&Snapshot) + Send + Sync>,
    /// The polling task: finished only when it panicked (it ends by itself only once the
    /// observer is dropped), so its owner replaces the observer.
    task: std::sync::OnceLock<tokio::task::JoinHandle<()>>,
}

impl Observer {
    /// Starts observing with `client`; the polling task ends when the observer is dropped.
    /// `on_poll` sees every snapshot (for metrics).
    pub fn start(
        client: Arc<KafkaClient>,
        timeout: Duration,
        log_offsets_max_age: Duration,
        on_poll: Box<dyn Fn(&Snapshot) + Send + Sync>,
    ) -> Arc<Observer> {
        let observer = Arc::new(Observer {
            client,
            log_offsets: LogOffsetCache::default(),
            log_offsets_max_age,
            timeout,
            interests: Mutex::default(),
            memory: Mutex::default(),
            snapshot: watch::Sender::new(None),
            wake: Notify::new(),
            on_poll,
            task: std::sync::OnceLock::new(),
        });
        let task = tokio::spawn(run(Arc::downgrade(&observer)));
        observer.task.set(task).expect("the task is set once");
        observer
    }

    /// Whether the polling task still runs. A task that panicked is gone for good: its snapshots
    /// would only get older, so the caller starts a new observer.
    pub fn is_running(&self) -> bool {
        self.task.get().is_some_and(|task| !task.is_finished())
    }

    pub fn client(&self) -> &Arc<KafkaClient> {
        &self.client
    }

    /// The latest snapshot if it covers `group_id` reading `topics` and is younger than about
    /// `every` (a ConsumerGroup's poll interval); otherwise `None`, and the observer is woken for
    /// an early poll. Registers (or renews) the group's interest either way. It never waits: a
    /// reconcile that gets `None` frees its slot and looks again shortly, so that many new groups
    /// (an operator start, a failover) register together and share a few polls instead of each
    /// waiting for a poll of its own.
    pub fn latest(&self, group_id: &str, interest: &Interest) -> Option<Arc<Snapshot>> {
        let topics: BTreeSet<String> = interest.topics.iter().cloned().collect();
        let every = interest.every;
        {
            let mut interests = self.interests.lock().expect("interests lock");
            let registered = Registered { interest: interest.clone(), topics: topics.clone(), renewed: Instant::now() };
            interests.insert(group_id.to_string(), registered);
        }
        let snapshot = self.snapshot.borrow().clone();
        match snapshot {
            Some(snapshot) if snapshot.covers(group_id, &topics) && snapshot.taken.elapsed() <= every + every / 2 => {
                Some(snapshot)
            }
            _ => {
                self.wake.notify_one();
                None
            }
        }
    }

    /// Drops the group's interest: it is not read from the next poll on, and what the observer
    /// kept for it (its last polls) goes with that poll.
    pub fn withdraw(&self, group_id: &str) {
        self.interests.lock().expect("interests lock").remove(group_id);
    }

    /// [`Observer::latest`], waiting up to `wait` for a snapshot that covers the group.
    pub async fn observe(
        &self,
        group_id: &str,
        interest: &Interest,
        wait: Duration,
    ) -> Result<Arc<Snapshot>, KafkaError> {
        let mut snapshots = self.snapshot.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            snapshots.borrow_and_update();
            if let Some(snapshot) = self.latest(group_id, interest) {
                return Ok(snapshot);
            }
            match tokio::time::timeout_at(deadline, snapshots.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(KafkaError::Internal("the Kafka observer stopped".into())),
                Err(_) => return Err(KafkaError::Timeout("an observation of the group")),
            }
        }
    }

    /// Polls once now for every current interest and publishes the snapshot (tests and
    /// benchmarks count the requests of one poll with it).
    pub async fn poll_once(&self) -> Arc<Snapshot> {
        let snapshot = Arc::new(self.poll().await);
        (self.on_poll)(&snapshot);
        self.snapshot.send_replace(Some(snapshot.clone()));
        snapshot
    }

    /// The shortest interval any interest asks for (None: nobody is interested).
    fn interval(&self) -> Option<Duration> {
        let mut interests = self.interests.lock().expect("interests lock");
        interests.retain(|_, i| i.renewed.elapsed() < i.interest.every * INTEREST_EXPIRY_INTERVALS);
        interests.values().map(|i| i.interest.every).min()
    }

    async fn poll(&self) -> Snapshot {
        let taken = Instant::now();
        let interests: BTreeMap<String, Registered> = self.interests.lock().expect("interests lock").clone();
        let wanted: BTreeSet<&String> = interests.values().flat_map(|i| &i.topics).collect();
        let timeout = self.timeout;

        let topics = self.client.topic_partition_counts(timeout).await.map(|mut counts| {
            counts.retain(|topic, _| wanted.contains(topic));
            counts
        });
        let partitions: Vec<TopicPartition> = match &topics {
            Ok(counts) => counts
                .iter()
                .flat_map(|(topic, &count)| {
                    (0..count).map(move |partition| TopicPartition { topic: topic.clone(), partition })
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        let group_ids: Vec<String> = interests.keys().cloned().collect();
        let groups = async {
            match &topics {
                // Metadata failed: the cluster is not answering; do not wait on it three times.
                Err(error) => group_ids.iter().map(|g| (g.clone(), Err(error.clone()))).collect(),
                Ok(_) => self.client.describe_groups(&group_ids, timeout).await,
            }
        };
        let ranges = async {
            match &topics {
                Ok(counts) if !partitions.is_empty() => self
                    .log_offsets
                    .get(&self.client, &partitions, self.log_offsets_max_age, timeout)
                    .await
                    .map(|(ranges, _)| by_topic(counts, &ranges)),
                Ok(_) => Ok(BTreeMap::new()),
                Err(error) => Err(error.clone()),
            }
        };
        let committed = async {
            let counts = match &topics {
                Ok(counts) => counts,
                Err(error) => {
                    return interests.keys().map(|g| (g.clone(), Err(error.clone()))).collect::<BTreeMap<_, _>>();
                }
            };
            self.client.committed_by_topic(group_scopes(&interests, counts), timeout).await
        };
        // Topics a group names that the listing lacks: missing, hidden from this principal, or
        // without a leader yet.
        let absent: Vec<String> = match &topics {
            Ok(counts) => wanted.iter().filter(|t| !counts.contains_key(**t)).map(|t| (*t).clone()).collect(),
            Err(_) => Vec::new(),
        };
        let absent = async {
            if absent.is_empty() { AbsentTopics::default() } else { self.client.absent_topics(&absent, timeout).await }
        };
        let (groups, log_ranges, committed, absent) = futures::join!(groups, ranges, committed, absent);
        let reading = Reading { topics: &topics, committed, log_ranges };
        let (lag, news) = self.fold_lag(&reading, &groups, &interests).await;
        drop(reading);
        Snapshot {
            taken,
            took: taken.elapsed(),
            topics,
            groups,
            covered: interests.iter().map(|(group_id, i)| (group_id.clone(), i.topics.clone())).collect(),
            lag,
            news,
            absent,
        }
    }

    /// Folds a poll's offsets into each group's history (at the group's own interval) and
    /// summarizes it; partitions whose small lag stayed put are probed for transaction markers
    /// first, all groups at once. Returns every group's lag, and the groups with news (see
    /// [`Snapshot::has_news_of`]).
    async fn fold_lag(
        &self,
        reading: &Reading<'_>,
        groups: &BTreeMap<String, Result<Option<GroupDescription>, KafkaError>>,
        interests: &BTreeMap<String, Registered>,
    ) -> (BTreeMap<String, Result<Arc<Summary>, KafkaError>>, BTreeSet<String>) {
        let now = jiff_now();
        let at_ms = now.as_millisecond();
        let measured_at = Time(k8s_openapi::jiff::Timestamp::from_second(now.as_second()).unwrap_or(now));
        // Each group's offsets this poll, for the groups due for a sample.
        let mut due: BTreeMap<&String, Vec<(&str, Vec<PartitionOffsets>)>> = BTreeMap::new();
        let mut lag = BTreeMap::new();
        {
            let mut memory = self.memory.lock().expect("observer memory lock");
            memory.tracks.retain(|group_id, _| interests.contains_key(group_id));
            for (group_id, registered) in interests {
                let offsets = match reading.partition_offsets(group_id, &registered.interest.topics) {
                    Ok(offsets) => offsets,
                    Err(error) => {
                        lag.insert(group_id.clone(), Err(error));
                        continue;
                    }
                };
                let track = memory.tracks.entry(group_id.clone()).or_default();
                let every_ms = registered.interest.every.as_millis() as i64;
                let recorded_recently =
                    track.history.last_recorded_ms().is_some_and(|last| at_ms - last < every_ms * 9 / 10);
                match (&track.summary, recorded_recently) {
                    (Some(summary), true) => {
                        lag.insert(group_id.clone(), Ok(summary.clone()));
                    }
                    _ => {
                        due.insert(group_id, offsets);
                    }
                }
            }
            if let Ok(ranges) = &reading.log_ranges {
                let Memory { logs, scans, .. } = &mut *memory;
                logs.retain(|topic, _| ranges.contains_key(topic));
                for (topic, ranges) in ranges {
                    let histories = logs.entry(topic.clone()).or_default();
                    histories.resize_with(ranges.len(), LogEndHistory::default);
                    for (history, range) in histories.iter_mut().zip(ranges) {
                        history.record(at_ms, range.end);
                    }
                }
                scans.retain(|tp, _| logs.get(&tp.topic).is_some_and(|h| (tp.partition as usize) < h.len()));
            }
        }

        let scans = self.probe_markers(&due).await;
        let failed = lag.iter().filter(|(_, lag)| lag.is_err()).map(|(group_id, _)| group_id.clone());
        let news: BTreeSet<String> = due.keys().map(|group_id| (*group_id).clone()).chain(failed).collect();

        let mut memory = self.memory.lock().expect("observer memory lock");
        let Memory { tracks, logs, .. } = &mut *memory;
        for (group_id, offsets) in due {
            let interest = &interests[group_id].interest;
            let track = tracks.entry(group_id.clone()).or_default();
            let lag_log_end = |topic: &str, partition: i32, o: &PartitionOffsets| {
                let scan = match o.committed {
                    // Only small lag is ever probed: skip the lookup for everything else.
                    Some(committed)
                        if o.log_end - committed > 0 && o.log_end - committed <= markers::MAX_MARKER_LAG =>
                    {
                        scans.get(&TopicPartition { topic: topic.to_string(), partition })
                    }
                    _ => None,
                };
                match (o.committed, scan) {
                    (Some(committed), Some(scan)) if scan.log_end == o.log_end && scan.from <= committed => {
                        if scan.only_markers(committed) { committed.min(o.log_end) } else { o.log_end }
                    }
                    _ => o.log_end,
                }
            };
            let topics = offsets.iter().map(|(topic, partitions)| (*topic, partitions.as_slice()));
            track.history.record(topics, lag_log_end, interest.policy, at_ms, interest.polls_kept);
            // Members: None when the group could not be described (unknown).
            let members = groups.get(group_id.as_str()).and_then(|group| match group {
                Ok(description) => Some(description.as_ref().map_or(0, |d| d.members.len())),
                Err(_) => None,
            });
            let time_lag = |topic: &str, partition: i32, position: i64| {
                logs.get(topic)
                    .and_then(|histories| histories.get(partition as usize))
                    .map_or(0.0, |log| log.time_lag_seconds(position, at_ms))
            };
            let exclude_after = (interest.polls_kept > 1).then_some(interest.polls_kept);
            let summary = Arc::new(crate::lag::summarize(
                &track.history,
                time_lag,
                exclude_after,
                members,
                measured_at.clone(),
                interest.learns_capacity,
            ));
            track.summary = Some(summary.clone());
            lag.insert(group_id.clone(), Ok(summary));
        }
        (lag, news)
    }

    /// Probes, with one consumer, the partitions whose small lag stayed put since a group's last
    /// poll and that no valid probe answers yet; returns every valid probe result.
    async fn probe_markers(
        &self,
        due: &BTreeMap<&String, Vec<(&str, Vec<PartitionOffsets>)>>,
    ) -> BTreeMap<TopicPartition, MarkerScan> {
        let mut from: BTreeMap<TopicPartition, i64> = BTreeMap::new();
        let mut ends: BTreeMap<TopicPartition, i64> = BTreeMap::new();
        {
            let mut memory = self.memory.lock().expect("observer memory lock");
            let Memory { tracks, scans, .. } = &mut *memory;
            for (group_id, offsets) in due {
                let Some(track) = tracks.get(group_id.as_str()) else { continue };
                for (topic, partitions) in offsets {
                    for (partition, o) in partitions.iter().enumerate() {
                        let Some(committed) = o.committed else { continue };
                        let remaining = o.log_end - committed;
                        if remaining <= 0 || remaining > markers::MAX_MARKER_LAG {
                            continue;
                        }
                        let partition = partition as i32;
                        // A moving log end or commit is real traffic: probe only what stayed put.
                        // (Once probed, the history holds the counted log end and the scan answers.)
                        if track.history.last(topic, partition) != Some((Some(committed), o.log_end)) {
                            continue;
                        }
                        let tp = TopicPartition { topic: topic.to_string(), partition };
                        let known = scans.get(&tp).is_some_and(|s| s.log_end == o.log_end && s.from <= committed);
                        if !known {
                            let start = from.entry(tp.clone()).or_insert(committed);
                            *start = (*start).min(committed);
                            ends.insert(tp, o.log_end);
                        }
                    }
                }
            }
        }
        let probed = if from.is_empty() {
            BTreeMap::new()
        } else {
            let properties = self.client.properties().clone();
            let (timeout, wanted) = (self.timeout, from.clone());
            match tokio::task::spawn_blocking(move || markers::last_records(&properties, &wanted, timeout)).await {
                Ok(Ok(records)) => records,
                Ok(Err(error)) => {
                    tracing::debug!(%error, "transaction marker probe failed; lag counted as is");
                    BTreeMap::new()
                }
                Err(error) => {
                    tracing::warn!(%error, "transaction marker probe task failed");
                    BTreeMap::new()
                }
            }
        };
        let mut memory = self.memory.lock().expect("observer memory lock");
        for (tp, last_record) in probed {
            let (Some(&start), Some(&log_end)) = (from.get(&tp), ends.get(&tp)) else { continue };
            memory.scans.insert(tp, MarkerScan { log_end, from: start, last_record });
        }
        // A scan stays valid while its partition's log end does not move.
        let Memory { logs, scans, .. } = &mut *memory;
        scans.retain(|tp, scan| {
            logs.get(&tp.topic)
                .and_then(|histories| histories.get(tp.partition as usize))
                .and_then(LogEndHistory::latest)
                .is_none_or(|end| end == scan.log_end)
        });
        scans.clone()
    }
}

/// Each group's topics that exist, with their partition counts.
fn group_scopes(
    interests: &BTreeMap<String, Registered>,
    counts: &BTreeMap<String, i32>,
) -> BTreeMap<String, BTreeMap<String, i32>> {
    interests
        .iter()
        .map(|(group_id, registered)| {
            let topics = registered
                .topics
                .iter()
                .filter_map(|topic| counts.get(topic).map(|&count| (topic.clone(), count)))
                .collect();
            (group_id.clone(), topics)
        })
        .collect()
}

/// The log ranges of each topic, by partition index.
fn by_topic(
    counts: &BTreeMap<String, i32>,
    ranges: &BTreeMap<TopicPartition, LogRange>,
) -> BTreeMap<String, Vec<LogRange>> {
    let mut topics: BTreeMap<String, Vec<LogRange>> = counts.keys().map(|topic| (topic.clone(), Vec::new())).collect();
    // BTreeMap order: by topic, then partition, so each topic's ranges come in index order.
    for (tp, range) in ranges {
        if let Some(list) = topics.get_mut(&tp.topic)
            && list.len() == tp.partition as usize
        {
            list.push(*range);
        }
    }
    topics
}

fn jiff_now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}

/// Polls at the shortest interval its interests ask for, or at once when woken; ends within a
/// second of the observer being dropped (it looks at least that often).
async fn run(observer: Weak<Observer>) {
    let mut next = tokio::time::Instant::now();
    loop {
        let Some(strong) = observer.upgrade() else { return };
        let woken = {
            let wake = strong.wake.notified();
            let check_again = tokio::time::Instant::now() + Duration::from_secs(1);
            tokio::select! {
                _ = wake => true,
                _ = tokio::time::sleep_until(next.min(check_again)) => false,
            }
        };
        let Some(interval) = strong.interval() else { continue };
        if woken {
            // Let the groups that are registering together join this early poll.
            tokio::time::sleep(EARLY_POLL_DELAY).await;
        }
        if woken || tokio::time::Instant::now() >= next {
            crate::fault::panic_once_point("observer-poll");
            strong.poll_once().await;
            next = tokio::time::Instant::now() + interval;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(absent: AbsentTopics) -> Snapshot {
        Snapshot {
            taken: Instant::now(),
            took: Duration::ZERO,
            topics: Ok(BTreeMap::from([("present".to_string(), 3)])),
            groups: BTreeMap::new(),
            covered: BTreeMap::new(),
            lag: BTreeMap::new(),
            news: BTreeSet::new(),
            absent,
        }
    }

    fn view(absent: AbsentTopics, topics: &[&str]) -> GroupView {
        let topics: Vec<String> = topics.iter().map(ToString::to_string).collect();
        snapshot(absent).view("g", &topics)
    }

    #[test]
    fn a_topic_the_listing_lacks_is_missing_refused_or_not_ready_and_says_which() {
        assert!(
            matches!(view(AbsentTopics::default(), &["present", "gone"]), GroupView::TopicsMissing(t) if t == ["gone"])
        );
        let refused = AbsentTopics { refused: BTreeSet::from(["secret".to_string()]), ..AbsentTopics::default() };
        assert!(matches!(
            view(refused, &["present", "secret", "gone"]),
            GroupView::Failed(KafkaError::TopicsNotAuthorized(t)) if t == ["secret"]
        ));
        let new = AbsentTopics {
            not_ready: BTreeMap::from([("new".to_string(), "Broker: Leader not available".to_string())]),
            ..AbsentTopics::default()
        };
        match view(new, &["present", "new", "gone"]) {
            GroupView::Failed(error) => {
                assert!(error.is_transient(), "{error}");
                assert!(error.to_string().contains("new (Broker: Leader not available)"), "{error}");
            }
            other => panic!("a topic without a leader yet is not missing: {other:?}"),
        }
    }
}
