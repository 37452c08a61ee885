//! A lane's inbox: the bounded queue between the poll thread and one partition's lane.
//!
//! Guarantees:
//! - **Bounded**: it holds at most `capacity` records (the group's batch size). [`InboxSender::push`] moves only
//!   what fits and leaves the rest with the caller (the poll thread's stash, which pauses the partition when it
//!   grows).
//! - **In order**: one sender, one receiver; records leave in the order they were pushed.
//! - **Hand-off in batches**: the poll thread moves a whole burst with one lock and at most one wake-up, and the
//!   lane takes up to a batch with one lock. A channel costs a send, a permit and a wake-up per record, which
//!   measured as much as everything else the poll thread does for a record (decision 0049).
//! - **Closes**: once the sender is dropped, the receiver gets what is left and then the end (`0`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::record::Record;

struct Inner {
    slot: Mutex<Slot>,
    /// One stored permit at most: a push while the lane is busy wakes its next wait at once.
    notify: Notify,
    capacity: usize,
}

#[derive(Default)]
struct Slot {
    records: VecDeque<Record>,
    closed: bool,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An inbox holding at most `capacity` (≥ 1) records.
pub(crate) fn inbox(capacity: usize) -> (InboxSender, InboxReceiver) {
    let inner = Arc::new(Inner {
        slot: Mutex::new(Slot::default()),
        notify: Notify::new(),
        capacity: capacity.max(1),
    });
    (InboxSender(inner.clone()), InboxReceiver(inner))
}

/// The poll thread's end.
pub(crate) struct InboxSender(Arc<Inner>);

impl InboxSender {
    /// Moves records from the front of `from` while there is room; returns their [`Record::approx_size`]. Records
    /// pushed after the receiver ended are kept (and never taken).
    pub fn push(&self, from: &mut VecDeque<Record>) -> usize {
        let mut bytes = 0;
        let moved = {
            let mut slot = self.0.lock();
            let room = self.0.capacity.saturating_sub(slot.records.len());
            let moved = room.min(from.len());
            for record in from.drain(..moved) {
                bytes += record.approx_size();
                slot.records.push_back(record);
            }
            moved
        };
        if moved > 0 {
            self.0.notify.notify_one();
        }
        bytes
    }
}

impl Drop for InboxSender {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.notify.notify_one();
    }
}

/// The lane's end.
pub(crate) struct InboxReceiver(Arc<Inner>);

impl InboxReceiver {
    /// Appends up to `max` records to `out`, waiting for one when there is none. `0` once the sender is gone and
    /// nothing is left.
    pub async fn recv_many(&mut self, out: &mut Vec<Record>, max: usize) -> usize {
        loop {
            match self.take(out, max) {
                Some(0) => {}
                Some(n) => return n,
                None => return 0,
            }
            // A push between `take` and here left a permit: this returns at once.
            self.0.notify.notified().await;
        }
    }

    /// Appends up to `max` records to `out` without waiting; how many.
    pub fn try_recv_many(&mut self, out: &mut Vec<Record>, max: usize) -> usize {
        self.take(out, max).unwrap_or(0)
    }

    /// `None` when closed and empty.
    fn take(&self, out: &mut Vec<Record>, max: usize) -> Option<usize> {
        let mut slot = self.0.lock();
        let n = max.min(slot.records.len());
        if n == 0 && slot.closed {
            return None;
        }
        out.extend(slot.records.drain(..n));
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn record(offset: i64) -> Record {
        Record {
            topic: "t".into(),
            partition: 0,
            offset,
            timestamp: None,
            key: None,
            value: Some(vec![0; 10]),
            headers: Vec::new(),
        }
    }

    fn records(offsets: std::ops::Range<i64>) -> VecDeque<Record> {
        offsets.map(record).collect()
    }

    fn offsets(records: &[Record]) -> Vec<i64> {
        records.iter().map(|r| r.offset).collect()
    }

    #[tokio::test]
    async fn moves_only_what_fits_in_order_and_the_rest_stays_with_the_sender() {
        let (tx, mut rx) = inbox(3);
        let mut stash = records(0..5);
        let bytes = tx.push(&mut stash);
        assert_eq!(stash.len(), 2, "3 moved");
        assert_eq!(bytes, 3 * record(0).approx_size());
        assert_eq!(offsets(stash.make_contiguous()), vec![3, 4]);
        assert_eq!(tx.push(&mut stash), 0, "full");

        let mut out = Vec::new();
        assert_eq!(rx.recv_many(&mut out, 2).await, 2);
        assert_eq!(tx.push(&mut stash), 2 * record(0).approx_size());
        assert!(stash.is_empty());
        assert_eq!(rx.recv_many(&mut out, 10).await, 3);
        assert_eq!(offsets(&out), vec![0, 1, 2, 3, 4]);
        assert_eq!(rx.try_recv_many(&mut out, 10), 0);
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_by_a_push() {
        let (tx, mut rx) = inbox(10);
        let waiter = tokio::spawn(async move {
            let mut out = Vec::new();
            let n = rx.recv_many(&mut out, 10).await;
            (n, offsets(&out))
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "nothing pushed yet");
        tx.push(&mut records(7..9));
        let (n, got) = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!((n, got), (2, vec![7, 8]));
    }

    #[tokio::test]
    async fn after_the_sender_is_dropped_what_is_left_is_taken_then_the_end() {
        let (tx, mut rx) = inbox(10);
        tx.push(&mut records(0..2));
        drop(tx);
        let mut out = Vec::new();
        assert_eq!(rx.recv_many(&mut out, 10).await, 2);
        assert_eq!(rx.recv_many(&mut out, 10).await, 0);
        assert_eq!(rx.recv_many(&mut out, 10).await, 0);
    }
}
