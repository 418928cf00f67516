//! Progress: the offsets a session's workers finished, and the one place
//! that turns them into an asynchronous commit (the synchronous commits on
//! revocation and at shutdown take the same offsets).

#[allow(unused_imports)]
use super::*;

/// The offsets to commit.
pub(super) fn offsets(partitions: &Partitions) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    for ((topic, partition), state) in partitions.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        add_next(&mut list, topic, *partition, state);
    }
    list
}

/// Adds the partition's next offset to commit to `list`, if its worker
/// finished a record.
pub(super) fn add_next(
    list: &mut TopicPartitionList,
    topic: &str,
    partition: i32,
    state: &PartitionState,
) {
    let next = state.next.load(Ordering::Acquire);
    if next != NOTHING {
        let _ = list.add_partition_offset(topic, partition, Offset::Offset(next));
    }
}

impl Session<'_> {
    /// Commits the recorded progress without waiting for the broker.
    pub(super) fn commit(&self, consumer: &StreamConsumer<Context>) {
        let list = offsets(&self.partitions);
        if list.count() > 0
            && let Err(e) = consumer.commit(&list, CommitMode::Async)
        {
            tracing::warn!(consumer = %self.consumer.common.name, error = %e, "committing offsets failed; retrying at the next interval");
        }
    }
}
