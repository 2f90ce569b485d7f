//! One observer per Kafka connection: it reads, for every consumer group it serves, what a
//! ConsumerGroup reconcile needs, in a few batched requests per poll, and publishes the result as
//! a snapshot that reconciles read without any Kafka I/O of their own.
//!
//! Cost of one poll, for G groups on B brokers (counted by librdkafka's statistics and pinned by
//! a test in `tests/kafka.rs`):
//! - 1 Metadata request (every topic of the cluster: one request, whatever the number of topics
//!   the groups read);
//! - B ListGroups + B DescribeGroups (librdkafka's group listing of every group, one round per
//!   broker);
//! - G OffsetFetch + G FindCoordinator (librdkafka 2.12 fetches one group per request);
//! - 2 ListOffsets per broker for every 2,000 partitions (log start and end, shared by all groups).
//!
//! A group registers its interest (topics and how often it wants a look) when its reconcile asks
//! for a view; a new or changed interest wakes the observer for an early poll instead of waiting
//! for the next one. Interests not renewed for a while (a deleted ConsumerGroup) are dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::{Notify, watch};

use super::log_offsets::{LogOffsetCache, LogRange};
use super::{GroupDescription, KafkaClient, KafkaError, TopicPartition};

/// OffsetFetch requests in flight at once during a poll.
const OFFSET_FETCH_CONCURRENCY: usize = 16;

/// How long an early poll waits for other groups registering at the same moment.
const EARLY_POLL_DELAY: Duration = Duration::from_millis(200);

/// Interests not renewed for this many of their own intervals are dropped.
const INTEREST_EXPIRY_INTERVALS: u32 = 3;

#[derive(Clone, Debug)]
struct Interest {
    topics: BTreeSet<String>,
    every: Duration,
    renewed: Instant,
}

/// What one poll saw.
#[derive(Debug)]
pub struct Snapshot {
    /// When the poll started.
    pub taken: Instant,
    /// How long the poll took (its Kafka round trips).
    pub took: Duration,
    /// Partition counts of the topics that exist, or why metadata could not be read.
    topics: Result<BTreeMap<String, i32>, KafkaError>,
    /// Every group of the cluster, or why the listing failed.
    groups: Result<BTreeMap<String, GroupDescription>, KafkaError>,
    /// Committed offsets per served group.
    committed: BTreeMap<String, Result<BTreeMap<TopicPartition, Option<i64>>, KafkaError>>,
    /// Log start and end of every partition of the served groups' topics.
    log_ranges: Result<BTreeMap<TopicPartition, LogRange>, KafkaError>,
    /// The topics each group was polled for.
    covered: BTreeMap<String, BTreeSet<String>>,
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
        /// Committed offset and log range of every partition, or why they could not be read.
        offsets: Result<BTreeMap<TopicPartition, (Option<i64>, LogRange)>, KafkaError>,
    },
}

impl Snapshot {
    fn covers(&self, group_id: &str, topics: &BTreeSet<String>) -> bool {
        self.covered.get(group_id).is_some_and(|covered| topics.is_subset(covered))
    }

    /// The part of this snapshot about `group_id` reading `topics`.
    pub fn view(&self, group_id: &str, topics: &[String]) -> GroupView {
        let counts = match &self.topics {
            Ok(counts) => counts,
            Err(error) => return GroupView::Failed(error.clone()),
        };
        let missing: Vec<String> = topics.iter().filter(|t| !counts.contains_key(*t)).cloned().collect();
        if !missing.is_empty() {
            return GroupView::TopicsMissing(missing);
        }
        let partitions: BTreeMap<String, i32> = topics.iter().map(|t| (t.clone(), counts[t])).collect();
        let group = self.groups.as_ref().map(|groups| groups.get(group_id).cloned()).map_err(Clone::clone);
        let offsets = (|| {
            let committed = match self.committed.get(group_id) {
                Some(result) => result.as_ref().map_err(Clone::clone)?,
                None => return Err(KafkaError::Internal(format!("group {group_id:?} was not polled"))),
            };
            let ranges = self.log_ranges.as_ref().map_err(Clone::clone)?;
            partitions
                .iter()
                .flat_map(|(topic, &count)| {
                    (0..count).map(move |partition| TopicPartition { topic: topic.clone(), partition })
                })
                .map(|tp| {
                    let range = ranges.get(&tp).copied().ok_or_else(|| KafkaError::MissingOffsets(tp.clone()))?;
                    Ok((tp.clone(), (committed.get(&tp).copied().flatten(), range)))
                })
                .collect::<Result<BTreeMap<_, _>, KafkaError>>()
        })();
        GroupView::Seen { partitions, group, offsets }
    }
}

/// Observes the groups of one Kafka connection; see the module documentation.
pub struct Observer {
    client: Arc<KafkaClient>,
    log_offsets: LogOffsetCache,
    log_offsets_max_age: Duration,
    timeout: Duration,
    interests: Mutex<BTreeMap<String, Interest>>,
    snapshot: watch::Sender<Option<Arc<Snapshot>>>,
    wake: Notify,
    on_poll: Box<dyn Fn(&Snapshot) + Send + Sync>,
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
            snapshot: watch::Sender::new(None),
            wake: Notify::new(),
            on_poll,
        });
        tokio::spawn(run(Arc::downgrade(&observer)));
        observer
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
    pub fn latest(&self, group_id: &str, topics: &[String], every: Duration) -> Option<Arc<Snapshot>> {
        let topics: BTreeSet<String> = topics.iter().cloned().collect();
        {
            let mut interests = self.interests.lock().expect("interests lock");
            interests.insert(group_id.to_string(), Interest { topics: topics.clone(), every, renewed: Instant::now() });
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

    /// [`Observer::latest`], waiting up to `wait` for a snapshot that covers the group.
    pub async fn observe(
        &self,
        group_id: &str,
        topics: &[String],
        every: Duration,
        wait: Duration,
    ) -> Result<Arc<Snapshot>, KafkaError> {
        let mut snapshots = self.snapshot.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            snapshots.borrow_and_update();
            if let Some(snapshot) = self.latest(group_id, topics, every) {
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
        interests.retain(|_, i| i.renewed.elapsed() < i.every * INTEREST_EXPIRY_INTERVALS);
        interests.values().map(|i| i.every).min()
    }

    async fn poll(&self) -> Snapshot {
        let taken = Instant::now();
        let interests: BTreeMap<String, Interest> = self.interests.lock().expect("interests lock").clone();
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
        let groups = async {
            // Metadata failed: the cluster is not answering; do not wait on it three times.
            if let Err(error) = &topics {
                return Err(error.clone());
            }
            self.client.describe_all_groups(timeout).await
        };
        let ranges = async {
            match &topics {
                Ok(_) if !partitions.is_empty() => self
                    .log_offsets
                    .get(&self.client, &partitions, self.log_offsets_max_age, timeout)
                    .await
                    .map(|(ranges, _)| ranges),
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
            // Owned jobs: a stream of borrowed ones makes the spawned poll's future not `Send`
            // for every lifetime (a known limit of async closures over references).
            let jobs: Vec<(String, Vec<TopicPartition>)> = interests
                .iter()
                .map(|(group_id, interest)| {
                    let scope = interest
                        .topics
                        .iter()
                        .filter_map(|topic| counts.get(topic).map(|&count| (topic, count)))
                        .flat_map(|(topic, count)| {
                            (0..count).map(move |partition| TopicPartition { topic: topic.clone(), partition })
                        })
                        .collect();
                    (group_id.clone(), scope)
                })
                .collect();
            let client = self.client.clone();
            futures::stream::iter(jobs)
                .map(move |(group_id, scope)| {
                    let client = client.clone();
                    async move {
                        let offsets = if scope.is_empty() {
                            Ok(BTreeMap::new())
                        } else {
                            client.list_consumer_group_offsets(&group_id, Some(&scope), timeout).await
                        };
                        (group_id, offsets)
                    }
                })
                .buffer_unordered(OFFSET_FETCH_CONCURRENCY)
                .collect::<BTreeMap<_, _>>()
                .await
        };
        let (groups, log_ranges, committed) = futures::join!(groups, ranges, committed);
        Snapshot {
            taken,
            took: taken.elapsed(),
            topics,
            groups,
            committed,
            log_ranges,
            covered: interests.into_iter().map(|(group_id, interest)| (group_id, interest.topics)).collect(),
        }
    }
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
            strong.poll_once().await;
            next = tokio::time::Instant::now() + interval;
        }
    }
}
