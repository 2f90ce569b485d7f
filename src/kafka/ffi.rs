//! The only `unsafe` code of the operator: librdkafka admin calls that the rdkafka crate does not
//! wrap (ListConsumerGroups, ListConsumerGroupOffsets,
//! AlterConsumerGroupOffsets, DeleteConsumerGroupOffsets, ListOffsets).
//!
//! Each call follows one pattern: build owned C inputs (RAII guards below free them on every
//! path), start the request on a private queue, wait for its result event on a blocking thread,
//! copy everything into owned Rust values, destroy the event. Nothing borrowed from librdkafka
//! outlives the event it came from.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString, c_char};
use std::ptr;
use std::time::Duration;

use rdkafka_sys as rd;
use rdkafka_sys::types::RDKafkaErrorCode;

use super::{GroupListing, GroupState, IsolationLevel, KafkaError, ListedOffset, OffsetSpec, TopicPartition};

/// A `rd_kafka_t` handle kept alive by its owner (the `KafkaClient`) for the duration of a call.
#[derive(Clone, Copy)]
pub(super) struct Handle(pub(super) *mut rd::rd_kafka_t);

// SAFETY: librdkafka handles are thread-safe; the owner guarantees the handle outlives the call.
unsafe impl Send for Handle {}

struct Queue(*mut rd::rd_kafka_queue_t);
impl Drop for Queue {
    fn drop(&mut self) {
        // SAFETY: created by rd_kafka_queue_new, destroyed once.
        unsafe { rd::rd_kafka_queue_destroy(self.0) }
    }
}

struct Options(*mut rd::rd_kafka_AdminOptions_t);
impl Drop for Options {
    fn drop(&mut self) {
        // SAFETY: created by rd_kafka_AdminOptions_new, destroyed once.
        unsafe { rd::rd_kafka_AdminOptions_destroy(self.0) }
    }
}

struct Event(*mut rd::rd_kafka_event_t);
impl Drop for Event {
    fn drop(&mut self) {
        // SAFETY: returned by rd_kafka_queue_poll, destroyed once.
        unsafe { rd::rd_kafka_event_destroy(self.0) }
    }
}

struct PartitionList(*mut rd::rd_kafka_topic_partition_list_t);
impl Drop for PartitionList {
    fn drop(&mut self) {
        // SAFETY: created by rd_kafka_topic_partition_list_new, destroyed once.
        unsafe { rd::rd_kafka_topic_partition_list_destroy(self.0) }
    }
}

impl PartitionList {
    fn new(partitions: impl IntoIterator<Item = (TopicPartition, i64)>) -> Result<PartitionList, KafkaError> {
        let partitions: Vec<_> = partitions.into_iter().collect();
        // SAFETY: plain allocation; freed by the guard.
        let list = PartitionList(unsafe { rd::rd_kafka_topic_partition_list_new(partitions.len() as i32) });
        for (tp, offset) in partitions {
            let topic = cstring(&tp.topic)?;
            // SAFETY: the list is valid; librdkafka copies the topic name.
            unsafe {
                let element = rd::rd_kafka_topic_partition_list_add(list.0, topic.as_ptr(), tp.partition);
                (*element).offset = offset;
            }
        }
        Ok(list)
    }
}

fn cstring(value: &str) -> Result<CString, KafkaError> {
    CString::new(value).map_err(|_| KafkaError::InvalidArgument(format!("{value:?} contains a NUL byte")))
}

/// # Safety
/// `ptr` must be null or a valid NUL-terminated string.
unsafe fn string(ptr: *const c_char) -> String {
    if ptr.is_null() { String::new() } else { unsafe { CStr::from_ptr(ptr) }.to_string_lossy().into_owned() }
}

/// # Safety
/// `list` must be null or a valid partition list.
unsafe fn read_list(list: *const rd::rd_kafka_topic_partition_list_t) -> Vec<(TopicPartition, i64, RDKafkaErrorCode)> {
    if list.is_null() {
        return Vec::new();
    }
    let list = unsafe { &*list };
    (0..list.cnt as usize)
        .map(|i| {
            let element = unsafe { &*list.elems.add(i) };
            let topic = unsafe { string(element.topic) };
            (TopicPartition { topic, partition: element.partition }, element.offset, element.err.into())
        })
        .collect()
}

/// # Safety
/// `error` must be null or a valid `rd_kafka_error_t` owned by an event still alive.
unsafe fn error_message(error: *const rd::rd_kafka_error_t) -> Option<(RDKafkaErrorCode, String)> {
    if error.is_null() {
        return None;
    }
    let code: RDKafkaErrorCode = unsafe { rd::rd_kafka_error_code(error) }.into();
    Some((code, unsafe { string(rd::rd_kafka_error_string(error)) }))
}

fn options(handle: Handle, op: rd::rd_kafka_admin_op_t, timeout: Duration) -> Result<Options, KafkaError> {
    // SAFETY: the handle is alive; the guard destroys the options.
    let options = Options(unsafe { rd::rd_kafka_AdminOptions_new(handle.0, op) });
    let mut errstr = [0 as c_char; 256];
    let millis = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
    // SAFETY: valid options and a writable buffer of the given size.
    let code =
        unsafe { rd::rd_kafka_AdminOptions_set_request_timeout(options.0, millis, errstr.as_mut_ptr(), errstr.len()) };
    if code != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        // SAFETY: librdkafka wrote a NUL-terminated message into the buffer.
        return Err(KafkaError::InvalidArgument(unsafe { string(errstr.as_ptr()) }));
    }
    Ok(options)
}

/// Waits for the result event of a request started on `queue`, failing on a request-level error.
fn wait(queue: &Queue, timeout: Duration, what: &'static str) -> Result<Event, KafkaError> {
    // The request times out on its own after `timeout`; allow a little more for the event.
    let millis = (timeout + Duration::from_secs(5)).as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: valid queue; the returned event is owned by the guard.
    let event = unsafe { rd::rd_kafka_queue_poll(queue.0, millis) };
    if event.is_null() {
        return Err(KafkaError::Timeout(what));
    }
    let event = Event(event);
    // SAFETY: valid event.
    let code: RDKafkaErrorCode = unsafe { rd::rd_kafka_event_error(event.0) }.into();
    if code != RDKafkaErrorCode::NoError {
        // SAFETY: valid event; the string lives as long as it.
        let message = unsafe { string(rd::rd_kafka_event_error_string(event.0)) };
        // A coordinator error inside the response arrives as a parse failure of the whole
        // request, with the broker's error only in the text.
        if ["Not coordinator", "Coordinator load in progress", "Coordinator not available"]
            .iter()
            .any(|m| message.contains(m))
        {
            return Err(KafkaError::CoordinatorUnavailable(format!("{what}: {message}")));
        }
        // ListOffsets whose partitions have no leader at all yet (a topic just created): "Failed
        // to query partition leaders: No leaders found". The caller names the partitions.
        if code == RDKafkaErrorCode::NoEnt && message.contains("leaders") {
            return Err(KafkaError::LeaderUnavailable(Vec::new()));
        }
        return Err(KafkaError::from_code(code, format!("{what}: {message}")));
    }
    Ok(event)
}

pub(super) fn list_consumer_groups(handle: Handle, timeout: Duration) -> Result<Vec<GroupListing>, KafkaError> {
    let options = options(handle, rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPS, timeout)?;
    // SAFETY: handle alive, guards own queue and options until the event is read.
    let queue = Queue(unsafe { rd::rd_kafka_queue_new(handle.0) });
    unsafe { rd::rd_kafka_ListConsumerGroups(handle.0, options.0, queue.0) };
    let event = wait(&queue, timeout, "ListConsumerGroups")?;
    let mut groups = Vec::new();
    // SAFETY: the event is a ListConsumerGroups result; pointers are valid while it lives.
    unsafe {
        let result = rd::rd_kafka_event_ListConsumerGroups_result(event.0);
        let mut count = 0;
        let listings = rd::rd_kafka_ListConsumerGroups_result_valid(result, &mut count);
        for i in 0..count {
            let listing = *listings.add(i);
            groups.push(GroupListing {
                group_id: string(rd::rd_kafka_ConsumerGroupListing_group_id(listing)),
                state: group_state(rd::rd_kafka_ConsumerGroupListing_state(listing)),
                is_simple: rd::rd_kafka_ConsumerGroupListing_is_simple_consumer_group(listing) != 0,
            });
        }
    }
    Ok(groups)
}

fn group_state(state: rd::rd_kafka_consumer_group_state_t) -> GroupState {
    use rd::rd_kafka_consumer_group_state_t::*;
    match state {
        RD_KAFKA_CONSUMER_GROUP_STATE_PREPARING_REBALANCE => GroupState::PreparingRebalance,
        RD_KAFKA_CONSUMER_GROUP_STATE_COMPLETING_REBALANCE => GroupState::CompletingRebalance,
        RD_KAFKA_CONSUMER_GROUP_STATE_STABLE => GroupState::Stable,
        RD_KAFKA_CONSUMER_GROUP_STATE_DEAD => GroupState::Dead,
        RD_KAFKA_CONSUMER_GROUP_STATE_EMPTY => GroupState::Empty,
        _ => GroupState::Unknown,
    }
}

/// Offsets of one group; librdkafka accepts one group per call.
pub(super) fn list_consumer_group_offsets(
    handle: Handle,
    group: &str,
    partitions: Option<&[TopicPartition]>,
    timeout: Duration,
) -> Result<BTreeMap<TopicPartition, Option<i64>>, KafkaError> {
    let group_name = cstring(group)?;
    let list = partitions
        .map(|p| PartitionList::new(p.iter().map(|tp| (tp.clone(), i64::from(rd::RD_KAFKA_OFFSET_INVALID)))))
        .transpose()?;
    let options = options(handle, rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPOFFSETS, timeout)?;
    // SAFETY: the request object copies the name and the list; it is destroyed after the call
    // (librdkafka copies it into the request).
    let queue = Queue(unsafe { rd::rd_kafka_queue_new(handle.0) });
    unsafe {
        let mut request =
            rd::rd_kafka_ListConsumerGroupOffsets_new(group_name.as_ptr(), list.as_ref().map_or(ptr::null(), |l| l.0));
        rd::rd_kafka_ListConsumerGroupOffsets(handle.0, &mut request, 1, options.0, queue.0);
        rd::rd_kafka_ListConsumerGroupOffsets_destroy(request);
    }
    let event = wait(&queue, timeout, "ListConsumerGroupOffsets")?;
    // SAFETY: the event is a ListConsumerGroupOffsets result.
    let partitions = unsafe {
        let result = rd::rd_kafka_event_ListConsumerGroupOffsets_result(event.0);
        let mut count = 0;
        let groups = rd::rd_kafka_ListConsumerGroupOffsets_result_groups(result, &mut count);
        group_result(groups, count, group)?
    };
    let mut offsets = BTreeMap::new();
    for (tp, offset, code) in partitions {
        if code != RDKafkaErrorCode::NoError {
            return Err(KafkaError::from_code(code, format!("committed offset of {}/{}", tp.topic, tp.partition)));
        }
        offsets.insert(tp, (offset >= 0).then_some(offset));
    }
    Ok(offsets)
}

/// # Safety
/// `groups` must point to `count` group results of a live event.
unsafe fn group_result(
    groups: *mut *const rd::rd_kafka_group_result_t,
    count: usize,
    group: &str,
) -> Result<Vec<(TopicPartition, i64, RDKafkaErrorCode)>, KafkaError> {
    if count == 0 {
        return Err(KafkaError::Internal(format!("no result for group {group:?}")));
    }
    let result = unsafe { *groups };
    if let Some((code, message)) = unsafe { error_message(rd::rd_kafka_group_result_error(result)) } {
        return Err(KafkaError::from_code(code, format!("group {group:?}: {message}")));
    }
    Ok(unsafe { read_list(rd::rd_kafka_group_result_partitions(result)) })
}

/// Commits `offsets` for a group that has no active member (the coordinator refuses otherwise).
pub(super) fn alter_consumer_group_offsets(
    handle: Handle,
    group: &str,
    offsets: &BTreeMap<TopicPartition, i64>,
    timeout: Duration,
) -> Result<(), KafkaError> {
    let group_name = cstring(group)?;
    let list = PartitionList::new(offsets.iter().map(|(tp, &o)| (tp.clone(), o)))?;
    let options = options(handle, rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_ALTERCONSUMERGROUPOFFSETS, timeout)?;
    // SAFETY: as for ListConsumerGroupOffsets.
    let queue = Queue(unsafe { rd::rd_kafka_queue_new(handle.0) });
    unsafe {
        let mut request = rd::rd_kafka_AlterConsumerGroupOffsets_new(group_name.as_ptr(), list.0);
        rd::rd_kafka_AlterConsumerGroupOffsets(handle.0, &mut request, 1, options.0, queue.0);
        rd::rd_kafka_AlterConsumerGroupOffsets_destroy(request);
    }
    let event = wait(&queue, timeout, "AlterConsumerGroupOffsets")?;
    // SAFETY: the event is an AlterConsumerGroupOffsets result.
    let partitions = unsafe {
        let result = rd::rd_kafka_event_AlterConsumerGroupOffsets_result(event.0);
        let mut count = 0;
        let groups = rd::rd_kafka_AlterConsumerGroupOffsets_result_groups(result, &mut count);
        group_result(groups, count, group)?
    };
    partition_errors(group, partitions)
}

fn partition_errors(group: &str, partitions: Vec<(TopicPartition, i64, RDKafkaErrorCode)>) -> Result<(), KafkaError> {
    let failed: Vec<(TopicPartition, RDKafkaErrorCode)> = partitions
        .into_iter()
        .filter(|(.., code)| *code != RDKafkaErrorCode::NoError)
        .map(|(tp, _, code)| (tp, code))
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    if failed.iter().any(|(_, code)| {
        matches!(
            code,
            RDKafkaErrorCode::NotCoordinator
                | RDKafkaErrorCode::CoordinatorNotAvailable
                | RDKafkaErrorCode::CoordinatorLoadInProgress
        )
    }) {
        return Err(KafkaError::CoordinatorUnavailable(group.to_string()));
    }
    if failed.iter().any(|(_, code)| {
        matches!(
            code,
            RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::RebalanceInProgress
                | RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::NonEmptyGroup
        )
    }) {
        return Err(KafkaError::GroupNotEmpty(group.to_string()));
    }
    // Refusals that no retry fixes: a permission, a topic deleted since the plan was made.
    let refused = |code: &RDKafkaErrorCode| {
        matches!(
            code,
            RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::GroupAuthorizationFailed
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::InvalidTopic
                | RDKafkaErrorCode::InvalidCommitOffsetSize
                | RDKafkaErrorCode::OffsetMetadataTooLarge
        )
    };
    let failed_text = failed.iter().map(|(tp, code)| (tp.clone(), code.to_string())).collect();
    if failed.iter().any(|(_, code)| refused(code)) {
        return Err(KafkaError::PartitionsRefused(failed_text));
    }
    Err(KafkaError::PartitionErrors(failed_text))
}

pub(super) fn delete_consumer_group_offsets(
    handle: Handle,
    group: &str,
    partitions: &[TopicPartition],
    timeout: Duration,
) -> Result<(), KafkaError> {
    let group_name = cstring(group)?;
    let list = PartitionList::new(partitions.iter().map(|tp| (tp.clone(), i64::from(rd::RD_KAFKA_OFFSET_INVALID))))?;
    let options = options(handle, rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DELETECONSUMERGROUPOFFSETS, timeout)?;
    // SAFETY: as for ListConsumerGroupOffsets.
    let queue = Queue(unsafe { rd::rd_kafka_queue_new(handle.0) });
    unsafe {
        let mut request = rd::rd_kafka_DeleteConsumerGroupOffsets_new(group_name.as_ptr(), list.0);
        rd::rd_kafka_DeleteConsumerGroupOffsets(handle.0, &mut request, 1, options.0, queue.0);
        rd::rd_kafka_DeleteConsumerGroupOffsets_destroy(request);
    }
    let event = wait(&queue, timeout, "DeleteConsumerGroupOffsets")?;
    // SAFETY: the event is a DeleteConsumerGroupOffsets result.
    let partitions = unsafe {
        let result = rd::rd_kafka_event_DeleteConsumerGroupOffsets_result(event.0);
        let mut count = 0;
        let groups = rd::rd_kafka_DeleteConsumerGroupOffsets_result_groups(result, &mut count);
        group_result(groups, count, group)?
    };
    partition_errors(group, partitions)
}

/// One ListOffsets for all partitions; librdkafka sends one request per partition leader.
pub(super) fn list_offsets(
    handle: Handle,
    requests: &[(TopicPartition, OffsetSpec)],
    isolation: IsolationLevel,
    timeout: Duration,
) -> Result<BTreeMap<TopicPartition, ListedOffset>, KafkaError> {
    if requests.is_empty() {
        return Ok(BTreeMap::new());
    }
    let list = PartitionList::new(requests.iter().map(|(tp, spec)| {
        let offset = match spec {
            OffsetSpec::Earliest => rd::rd_kafka_OffsetSpec_t::RD_KAFKA_OFFSET_SPEC_EARLIEST as i64,
            OffsetSpec::Latest => rd::rd_kafka_OffsetSpec_t::RD_KAFKA_OFFSET_SPEC_LATEST as i64,
            OffsetSpec::Timestamp(ms) => *ms,
        };
        (tp.clone(), offset)
    }))?;
    let options = options(handle, rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_LISTOFFSETS, timeout)?;
    let level = match isolation {
        IsolationLevel::ReadUncommitted => rd::rd_kafka_IsolationLevel_t::RD_KAFKA_ISOLATION_LEVEL_READ_UNCOMMITTED,
        IsolationLevel::ReadCommitted => rd::rd_kafka_IsolationLevel_t::RD_KAFKA_ISOLATION_LEVEL_READ_COMMITTED,
    };
    // SAFETY: valid options; an error object returned is destroyed here.
    unsafe {
        let error = rd::rd_kafka_AdminOptions_set_isolation_level(options.0, level);
        if !error.is_null() {
            let message = error_message(error).map(|(_, m)| m).unwrap_or_default();
            rd::rd_kafka_error_destroy(error);
            return Err(KafkaError::InvalidArgument(message));
        }
    }
    // SAFETY: librdkafka copies the list into the request.
    let queue = Queue(unsafe { rd::rd_kafka_queue_new(handle.0) });
    unsafe { rd::rd_kafka_ListOffsets(handle.0, list.0, options.0, queue.0) };
    let event = match wait(&queue, timeout, "ListOffsets") {
        Err(KafkaError::LeaderUnavailable(_)) => {
            let partitions = requests.iter().map(|(tp, _)| (tp.clone(), "no leader found".to_string()));
            return Err(KafkaError::LeaderUnavailable(partitions.collect()));
        }
        other => other?,
    };
    let mut offsets = BTreeMap::new();
    let mut failed = Vec::new();
    // SAFETY: the event is a ListOffsets result.
    unsafe {
        let result = rd::rd_kafka_event_ListOffsets_result(event.0);
        let mut count = 0;
        let infos = rd::rd_kafka_ListOffsets_result_infos(result, &mut count);
        for i in 0..count {
            let info = *infos.add(i);
            let element = &*rd::rd_kafka_ListOffsetsResultInfo_topic_partition(info);
            let tp = TopicPartition { topic: string(element.topic), partition: element.partition };
            let code: RDKafkaErrorCode = element.err.into();
            if code != RDKafkaErrorCode::NoError {
                failed.push((tp, code));
                continue;
            }
            let timestamp = rd::rd_kafka_ListOffsetsResultInfo_timestamp(info);
            offsets.insert(
                tp,
                ListedOffset {
                    offset: (element.offset >= 0).then_some(element.offset),
                    timestamp: (timestamp >= 0).then_some(timestamp),
                },
            );
        }
    }
    if failed.is_empty() {
        return Ok(offsets);
    }
    // Each call looks leaders up afresh, so these clear up on a retry once the election is over.
    let moving = |code: &RDKafkaErrorCode| {
        matches!(
            code,
            RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::OffsetNotAvailable
                | RDKafkaErrorCode::FencedLeaderEpoch
                | RDKafkaErrorCode::UnknownLeaderEpoch
        )
    };
    let failed_text = failed.iter().map(|(tp, code)| (tp.clone(), code.to_string())).collect();
    if failed.iter().all(|(_, code)| moving(code)) {
        Err(KafkaError::LeaderUnavailable(failed_text))
    } else {
        Err(KafkaError::PartitionErrors(failed_text))
    }
}
