//! One task's input partitions merged in timestamp order (Kafka Streams' `PartitionGroup`).
//!
//! A task owns partition *p* of every input topic. Records fetched for it are buffered per
//! topic, and the next record folded is the one with the smallest timestamp among the heads,
//! ties broken by topic order (the topics sorted by name) and then offset. A topic whose buffer
//! is empty may still hold an earlier record at the broker, so the task waits for it unless it
//! is known to be caught up; a partition that stays behind longer than `max_task_idle` is
//! waited out (enforced processing) until it delivers again. For a backlog that is already in
//! the topics, the merged order is therefore a function of the topics alone: replaying them
//! folds the same records in the same order, however the fetches interleave.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rdkafka::message::OwnedMessage;
use rdkafka::Message;

/// What the task should do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Fold the head of this topic's buffer.
    Record(usize),
    /// An empty partition may hold an earlier record: poll again before folding.
    Wait,
    /// Nothing buffered.
    Empty,
}

/// The buffered input of one task.
pub struct PartitionGroup {
    queues: Vec<VecDeque<OwnedMessage>>,
    /// Per topic: waited out; not waited for again until it delivers a record.
    enforced: Vec<bool>,
    /// Since when the task has been waiting for an empty partition.
    waiting_since: Option<Instant>,
    /// Records folded without waiting for a partition that was still behind.
    pub enforced_count: u64,
}

impl PartitionGroup {
    /// An empty group over `topics` input topics (indices in tie-break order).
    pub fn new(topics: usize) -> PartitionGroup {
        PartitionGroup {
            queues: (0..topics).map(|_| VecDeque::new()).collect(),
            enforced: vec![false; topics],
            waiting_since: None,
            enforced_count: 0,
        }
    }

    /// Buffers a record fetched for topic `ti`.
    pub fn push(&mut self, ti: usize, msg: OwnedMessage) {
        if let Some(q) = self.queues.get_mut(ti) {
            q.push_back(msg);
            self.enforced[ti] = false;
        }
    }

    /// Records buffered for topic `ti`.
    pub fn len(&self, ti: usize) -> usize {
        self.queues.get(ti).map_or(0, VecDeque::len)
    }

    /// Records buffered in all.
    pub fn buffered(&self) -> usize {
        self.queues.iter().map(VecDeque::len).sum()
    }

    /// Whether the task is waiting for a partition that is behind.
    pub fn waiting(&self) -> bool {
        self.waiting_since.is_some()
    }

    /// Takes the head of topic `ti`'s buffer.
    pub fn pop(&mut self, ti: usize) -> Option<OwnedMessage> {
        self.queues.get_mut(ti)?.pop_front()
    }

    /// Chooses the next record. `caught_up(ti)` tells whether empty topic `ti` has nothing
    /// more at the broker (it is only asked about empty topics, and only when it matters).
    pub fn next(
        &mut self,
        mut caught_up: impl FnMut(usize) -> bool,
        now: Instant,
        max_idle: Duration,
    ) -> Next {
        let head = |q: &VecDeque<OwnedMessage>| {
            q.front()
                .map(|m| (m.timestamp().to_millis().unwrap_or(i64::MIN), m.offset()))
        };
        let Some((_, ti)) = self
            .queues
            .iter()
            .enumerate()
            .filter_map(|(i, q)| head(q).map(|(ts, off)| ((ts, i, off), i)))
            .min()
        else {
            self.waiting_since = None;
            return Next::Empty;
        };
        let mut behind = Vec::new();
        for (i, q) in self.queues.iter().enumerate() {
            if i != ti && q.is_empty() && !self.enforced[i] && !caught_up(i) {
                behind.push(i);
            }
        }
        if behind.is_empty() {
            self.waiting_since = None;
            return Next::Record(ti);
        }
        let since = *self.waiting_since.get_or_insert(now);
        if now.duration_since(since) < max_idle {
            return Next::Wait;
        }
        for i in behind {
            self.enforced[i] = true;
        }
        self.waiting_since = None;
        self.enforced_count += 1;
        Next::Record(ti)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::Timestamp;

    fn rec(topic: &str, offset: i64, ts: i64) -> OwnedMessage {
        OwnedMessage::new(
            Some(b"v".to_vec()),
            Some(b"k".to_vec()),
            topic.to_owned(),
            Timestamp::CreateTime(ts),
            0,
            offset,
            None,
        )
    }

    /// Drains `g` completely with every empty topic caught up, returning (topic, offset).
    fn drain(g: &mut PartitionGroup) -> Vec<(String, i64)> {
        let mut out = Vec::new();
        while let Next::Record(ti) = g.next(|_| true, Instant::now(), Duration::ZERO) {
            let m = g.pop(ti).unwrap();
            out.push((m.topic().to_owned(), m.offset()));
        }
        out
    }

    #[test]
    fn heads_are_merged_by_timestamp_then_topic_then_offset() {
        let mut g = PartitionGroup::new(2);
        g.push(0, rec("a", 0, 10));
        g.push(0, rec("a", 1, 30));
        g.push(1, rec("b", 0, 20));
        g.push(1, rec("b", 1, 30));
        let order = drain(&mut g);
        assert_eq!(
            order,
            vec![
                ("a".into(), 0),
                ("b".into(), 0),
                ("a".into(), 1),
                ("b".into(), 1)
            ]
        );
    }

    #[test]
    fn the_order_does_not_depend_on_how_fetches_interleave() {
        let a: Vec<_> = (0..50).map(|i| rec("a", i, i * 7 % 13 + i)).collect();
        let b: Vec<_> = (0..50).map(|i| rec("b", i, i * 5 % 11 + i)).collect();
        let mut whole = PartitionGroup::new(2);
        for m in &a {
            whole.push(0, m.clone());
        }
        for m in &b {
            whole.push(1, m.clone());
        }
        let expected = drain(&mut whole);
        // Fetched in small, uneven pieces: a partition that is empty but behind is waited for.
        let mut g = PartitionGroup::new(2);
        let (mut ia, mut ib) = (0, 0);
        let mut got = Vec::new();
        let mut round = 0;
        while got.len() < 100 {
            round += 1;
            assert!(round < 1000, "no progress after {} records", got.len());
            for _ in 0..3 {
                if ia < a.len() {
                    g.push(0, a[ia].clone());
                    ia += 1;
                }
            }
            if ib < b.len() && round % 2 == 0 {
                g.push(1, b[ib].clone());
                ib += 1;
            }
            let (fa, fb) = (ia, ib);
            loop {
                let caught_up = |t: usize| if t == 0 { fa == a.len() } else { fb == b.len() };
                match g.next(caught_up, Instant::now(), Duration::from_secs(3600)) {
                    Next::Record(ti) => {
                        let m = g.pop(ti).unwrap();
                        got.push((m.topic().to_owned(), m.offset()));
                    }
                    Next::Wait | Next::Empty => break,
                }
            }
        }
        assert_eq!(got, expected);
    }

    #[test]
    fn a_partition_behind_for_longer_than_the_bound_is_waited_out() {
        let mut g = PartitionGroup::new(2);
        g.push(0, rec("a", 0, 10));
        let t0 = Instant::now();
        let bound = Duration::from_millis(100);
        assert_eq!(g.next(|_| false, t0, bound), Next::Wait);
        assert_eq!(g.next(|_| false, t0 + bound, bound), Next::Record(0));
        assert_eq!(g.enforced_count, 1);
        g.pop(0);
        // Not waited for again until it delivers.
        g.push(0, rec("a", 1, 11));
        assert_eq!(g.next(|_| false, t0 + bound, bound), Next::Record(0));
        g.pop(0);
        g.push(1, rec("b", 0, 12));
        g.pop(1);
        g.push(0, rec("a", 2, 13));
        assert_eq!(g.next(|_| false, t0 + bound, bound), Next::Wait);
    }
}
