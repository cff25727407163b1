//! A task: partition *p* of every input topic, and everything this instance holds for it
//! (Kafka Streams' StreamTask). It owns the partition's store, its cache of key states, the
//! timer index, the dirty set, stream time, the incident book and the buffered input. Every
//! change to a key's state goes through [`Task::update`], which keeps the timer index and the
//! dirty set in step with it, so what is written to RocksDB and the changelog at commit is
//! exactly what the fold changed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use breakwater_core::{IncidentBook, KeyState, Millis};
use breakwater_store::{encode_incidents, encode_state, Batch, Meta, PartitionStore, StoreError};

use crate::partition_group::PartitionGroup;

/// Key of the changelog record that carries a partition's stream time.
pub const STREAM_TIME_KEY: &[u8] = b"\0stream_time";
/// The changelog key of a partition's incident book (not a valid `sku|location`).
pub const INCIDENTS_KEY: &[u8] = b"\0incidents";

struct Entry {
    state: KeyState,
    /// The timer index entry RocksDB holds for this key.
    stored_timer: Option<Millis>,
    dirty: bool,
}

/// One partition number's state across all input topics.
pub(crate) struct Task {
    partition: i32,
    store: PartitionStore,
    /// Where the committed state stands, plus stream time as folded so far.
    pub(crate) meta: Meta,
    cache: HashMap<Vec<u8>, Entry>,
    dirty: Vec<Vec<u8>>,
    /// In-memory timer index: (deadline, key), mirrors the store's `timers` column family
    /// plus changes not yet written.
    timers: BTreeSet<(Millis, Vec<u8>)>,
    /// Next offsets consumed in this batch, per input topic.
    positions: BTreeMap<String, i64>,
    stream_time_dirty: bool,
    /// Open incidents and rate-limit counters of this partition's alerts.
    pub(crate) incidents: IncidentBook,
    pub(crate) incidents_dirty: bool,
    pub(crate) last_input: Instant,
    pub(crate) last_tick: Instant,
    /// Fetched records not yet folded, merged in timestamp order.
    pub(crate) group: PartitionGroup,
    /// Per input topic (in tie-break order): the offset after the last record fetched, or
    /// the committed offset at assignment (-1 when neither is known).
    pub(crate) fetched: Vec<i64>,
    /// Per input topic: fetching is paused because its buffer is full.
    pub(crate) paused: Vec<bool>,
    /// Its state is still being restored from the changelog: its inputs are paused and it
    /// folds nothing, and its store is the restorer's.
    pub(crate) restoring: bool,
}

impl Task {
    /// A task over `store`, whose committed state is `meta`. `fetched` holds, per input topic
    /// in tie-break order, where fetching resumes (-1 if unknown).
    pub(crate) fn new(
        partition: i32,
        store: PartitionStore,
        meta: Meta,
        fetched: Vec<i64>,
        restoring: bool,
    ) -> Task {
        let topics = fetched.len();
        Task {
            partition,
            store,
            meta,
            cache: HashMap::new(),
            dirty: Vec::new(),
            timers: BTreeSet::new(),
            positions: BTreeMap::new(),
            stream_time_dirty: false,
            incidents: IncidentBook::new(),
            incidents_dirty: false,
            last_input: Instant::now(),
            last_tick: Instant::now(),
            group: PartitionGroup::new(topics),
            fetched,
            paused: vec![false; topics],
            restoring,
        }
    }

    /// The partition's store.
    pub(crate) fn store(&self) -> &PartitionStore {
        &self.store
    }

    /// The restore finished (or was not needed): load the timer index and the incident book
    /// from the store, which now holds the partition's whole committed state.
    ///
    /// # Errors
    /// A store error.
    pub(crate) fn restored(&mut self, meta: Meta) -> Result<(), StoreError> {
        self.timers = self
            .store
            .due_timers(Millis::MAX, usize::MAX)?
            .into_iter()
            .collect();
        self.incidents = self.store.incidents()?;
        self.meta = meta;
        self.restoring = false;
        Ok(())
    }

    /// Runs `f` on `key`'s state (loaded from the store on first use) and keeps the rest in
    /// step: the key is written at the next commit whatever `f` did (a superseded event is
    /// recorded as seen, a duplicate may refresh the key's class), and its timer index entry
    /// moves to the state's next deadline.
    ///
    /// # Errors
    /// A store error loading the state.
    pub(crate) fn update<R>(
        &mut self,
        key: &[u8],
        f: impl FnOnce(&mut KeyState) -> R,
    ) -> Result<R, StoreError> {
        if !self.cache.contains_key(key) {
            let state = self.store.get(key)?.unwrap_or_default();
            let stored_timer = state.next_timer();
            self.cache.insert(
                key.to_vec(),
                Entry {
                    state,
                    stored_timer,
                    dirty: false,
                },
            );
        }
        let Some(entry) = self.cache.get_mut(key) else {
            // Inserted above.
            return Err(StoreError::Corrupt {
                what: "cache",
                detail: format!("partition {}: an entry vanished", self.partition),
            });
        };
        let before = entry.state.next_timer();
        let r = f(&mut entry.state);
        let after = entry.state.next_timer();
        if !entry.dirty {
            entry.dirty = true;
            self.dirty.push(key.to_vec());
        }
        if before != after {
            if let Some(t) = before {
                self.timers.remove(&(t, key.to_vec()));
            }
            if let Some(t) = after {
                self.timers.insert((t, key.to_vec()));
            }
        }
        Ok(r)
    }

    /// Takes the earliest timer due at or before `now`: its deadline and key. The key's next
    /// deadline is indexed again by the [`Task::update`] that fires it.
    pub(crate) fn pop_due(&mut self, now: Millis) -> Option<(Millis, Vec<u8>)> {
        match self.timers.first() {
            Some((deadline, _)) if *deadline <= now => self.timers.pop_first(),
            _ => None,
        }
    }

    /// Whether the partition is idle at `now`: no input and no tick for `every`, nothing
    /// buffered or awaited, not restoring, and every input partition known to be read to its
    /// end (`caught_up(topic index, offset after the last fetched)`). Only an idle partition
    /// gets a wall-clock tick: one with unread input would have its stream time put ahead of
    /// that input, and every timer before it would fire at once.
    pub(crate) fn is_idle(
        &self,
        now: Instant,
        every: std::time::Duration,
        caught_up: impl Fn(usize, i64) -> bool,
    ) -> bool {
        !self.restoring
            && self.group.buffered() == 0
            && !self.group.waiting()
            && now.saturating_duration_since(self.last_input) >= every
            && now.saturating_duration_since(self.last_tick) >= every
            && self
                .fetched
                .iter()
                .enumerate()
                .all(|(ti, fetched)| caught_up(ti, *fetched))
    }

    /// Moves stream time to `ts` (never back); `None` keeps it. Returns stream time.
    pub(crate) fn advance_clock(&mut self, ts: Option<Millis>) -> Millis {
        let now = ts.map_or(self.meta.stream_time, |t| t.max(self.meta.stream_time));
        if now != self.meta.stream_time {
            self.meta.stream_time = now;
            self.stream_time_dirty = true;
        }
        now
    }

    /// Records that input `topic` was consumed up to (not including) `next`.
    pub(crate) fn consumed(&mut self, topic: &str, next: i64) {
        match self.positions.get_mut(topic) {
            Some(o) => *o = next,
            None => {
                self.positions.insert(topic.to_owned(), next);
            }
        }
    }

    /// The next offsets consumed in this batch.
    pub(crate) fn positions(&self) -> impl Iterator<Item = (&str, i64)> {
        self.positions.iter().map(|(t, o)| (t.as_str(), *o))
    }

    /// Whether this batch consumed anything.
    pub(crate) fn has_positions(&self) -> bool {
        !self.positions.is_empty()
    }

    /// The batch's changelog records, in order: each changed key's state, the incident book
    /// if it changed, stream time if it moved.
    pub(crate) fn changelog(
        &self,
        mut send: impl FnMut(&[u8], &[u8]) -> Result<(), super::ProcessorError>,
    ) -> Result<(), super::ProcessorError> {
        for key in &self.dirty {
            if let Some(entry) = self.cache.get(key) {
                send(key, &encode_state(&entry.state))?;
            }
        }
        if self.incidents_dirty {
            send(INCIDENTS_KEY, &encode_incidents(&self.incidents))?;
        }
        if self.stream_time_dirty {
            send(STREAM_TIME_KEY, &self.meta.stream_time.to_be_bytes())?;
        }
        Ok(())
    }

    /// Writes the committed batch to the store in one write: the changed states with their
    /// timer index entries, the incident book, and the meta (next input offsets, the next
    /// changelog offset after `changelog_last`, stream time). Empties the cache when it holds
    /// more than `max_cached` keys.
    ///
    /// # Errors
    /// A store error; the Kafka transaction is already committed, so the next start replays
    /// the changelog tail over the store.
    pub(crate) fn persist(
        &mut self,
        changelog_last: Option<i64>,
        max_cached: usize,
    ) -> Result<(), StoreError> {
        let mut batch = Batch::new();
        for key in self.dirty.drain(..) {
            if let Some(entry) = self.cache.get_mut(&key) {
                let timer = entry.state.next_timer();
                batch.put_state(
                    &self.store,
                    &key,
                    &encode_state(&entry.state),
                    entry.stored_timer,
                    timer,
                );
                entry.stored_timer = timer;
                entry.dirty = false;
            }
        }
        for (topic, next) in std::mem::take(&mut self.positions) {
            self.meta.set_position(&topic, next);
        }
        if let Some(o) = changelog_last {
            self.meta.changelog_next = self.meta.changelog_next.max(o + 1);
        }
        self.stream_time_dirty = false;
        if self.incidents_dirty {
            batch.put_incidents(&self.store, &encode_incidents(&self.incidents));
            self.incidents_dirty = false;
        }
        batch.put_meta(&self.store, &self.meta);
        self.store.write(batch)?;
        if self.cache.len() > max_cached {
            self.cache.clear();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use breakwater_core::state::Hold;
    use breakwater_core::Id;

    fn hold(st: &mut KeyState, id: &str, expires_at: Millis) {
        st.holds.push(Hold {
            reservation_id: Id::new(id).unwrap(),
            channel: Id::new("web").unwrap(),
            quantity: 1,
            expires_at,
        });
    }

    fn task(dir: &std::path::Path) -> Task {
        let store = PartitionStore::open(dir, 0).unwrap();
        let meta = store.meta().unwrap();
        let mut t = Task::new(0, store, Meta::default(), vec![-1], false);
        t.restored(meta).unwrap();
        t
    }

    #[test]
    fn update_keeps_the_timer_index_and_the_store_in_step() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut t = task(dir.path());
            t.update(b"A|1", |st| hold(st, "r1", 5_000)).unwrap();
            t.update(b"B|1", |st| hold(st, "r2", 3_000)).unwrap();
            // A's hold moves later: its old index entry goes.
            t.update(b"A|1", |st| st.holds[0].expires_at = 9_000)
                .unwrap();
            t.consumed("in", 12);
            t.persist(Some(40), 100).unwrap();
            assert_eq!(t.meta.changelog_next, 41);
            assert_eq!(t.pop_due(2_999), None);
            assert_eq!(t.pop_due(3_000), Some((3_000, b"B|1".to_vec())));
        }
        // What RocksDB holds is what the task indexed.
        let t = task(dir.path());
        assert_eq!(
            t.store.due_timers(Millis::MAX, 10).unwrap(),
            vec![(3_000, b"B|1".to_vec()), (9_000, b"A|1".to_vec())]
        );
        assert_eq!(t.meta.position("in"), Some(12));
        assert_eq!(
            t.store.get(b"A|1").unwrap().unwrap().holds[0].expires_at,
            9_000
        );
        let mut t = t;
        assert_eq!(t.pop_due(10_000), Some((3_000, b"B|1".to_vec())));
        assert_eq!(t.pop_due(10_000), Some((9_000, b"A|1".to_vec())));
        assert_eq!(t.pop_due(10_000), None);
    }

    #[test]
    fn every_update_is_persisted_even_one_that_changes_no_timer() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut t = task(dir.path());
            // A superseded event changes only what was seen, not the quantities or timers.
            t.update(b"A|1", |st| st.version = 7).unwrap();
            let mut keys = Vec::new();
            t.changelog(|k, _| {
                keys.push(k.to_vec());
                Ok(())
            })
            .unwrap();
            assert_eq!(keys, vec![b"A|1".to_vec()]);
            t.persist(None, 100).unwrap();
        }
        assert_eq!(
            task(dir.path()).store.get(b"A|1").unwrap().unwrap().version,
            7
        );
    }

    #[test]
    fn only_a_partition_read_to_its_end_is_idle() {
        use rdkafka::message::{OwnedMessage, Timestamp};
        let dir = tempfile::tempdir().unwrap();
        let store = PartitionStore::open(dir.path(), 0).unwrap();
        let mut t = Task::new(0, store, Meta::default(), vec![10, -1], false);
        let every = std::time::Duration::from_millis(100);
        let later = Instant::now() + std::time::Duration::from_secs(1);
        let all = |_: usize, _: i64| true;
        assert!(t.is_idle(later, every, all));
        // Not yet quiet for `every`.
        assert!(!t.is_idle(Instant::now(), every, all));
        // One input partition with records at the broker not fetched yet (a restarted
        // instance before its first fetch): its backlog comes first.
        let seen = std::cell::RefCell::new(Vec::new());
        assert!(!t.is_idle(later, every, |ti, fetched| {
            seen.borrow_mut().push((ti, fetched));
            ti == 0
        }));
        assert_eq!(seen.into_inner(), vec![(0, 10), (1, -1)]);
        // Records buffered, not folded yet.
        let msg = OwnedMessage::new(None, None, "t".into(), Timestamp::NotAvailable, 0, 10, None);
        t.group.push(1, msg);
        assert!(!t.is_idle(later, every, all));
        let _ = t.group.pop(1);
        assert!(t.is_idle(later, every, all));
        // Restoring: its inputs are paused, not read.
        t.restoring = true;
        assert!(!t.is_idle(later, every, all));
    }

    #[test]
    fn the_changelog_carries_stream_time_and_incidents_only_when_they_changed() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = task(dir.path());
        let keys = |t: &Task| {
            let mut keys = Vec::new();
            t.changelog(|k, v| {
                keys.push((k.to_vec(), v.len()));
                Ok(())
            })
            .unwrap();
            keys
        };
        assert!(keys(&t).is_empty());
        assert_eq!(t.advance_clock(Some(100)), 100);
        // Never back; a record without a timestamp keeps it.
        assert_eq!(t.advance_clock(Some(50)), 100);
        assert_eq!(t.advance_clock(None), 100);
        t.incidents_dirty = true;
        assert_eq!(
            keys(&t).into_iter().map(|(k, _)| k).collect::<Vec<_>>(),
            vec![INCIDENTS_KEY.to_vec(), STREAM_TIME_KEY.to_vec()]
        );
        t.persist(None, 100).unwrap();
        assert!(keys(&t).is_empty());
        drop(t);
        assert_eq!(task(dir.path()).meta.stream_time, 100);
    }
}
