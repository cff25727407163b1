//! Breakwater's state store: one RocksDB database per input partition (a *task*), so a
//! partition's state can be opened, restored, moved or dropped on its own.
//!
//! # Layout
//! Column families:
//! - `state`: message key (`sku|location`) → [`encode_state`] of the key's
//!   [`KeyState`](breakwater_core::KeyState).
//! - `timers`: 8-byte big-endian deadline (sign-flipped so negative times sort first) ++ key →
//!   empty. The index of due timers, kept equal to each state's `next_timer()`.
//! - `meta`: `meta` → [`Meta`]: the next input offset per topic, the next changelog offset,
//!   the partition's stream time; `incidents` → [`encode_incidents`] of the partition's
//!   [`IncidentBook`] (open incidents and rate-limit counters).
//!
//! Everything one input batch changed goes into one [`Batch`] (one RocksDB `WriteBatch`), so
//! state, timers and positions always move together. Writes go through the WAL without fsync:
//! a killed process loses nothing (the WAL is in the OS page cache); a lost machine may lose
//! the last batches, which the changelog restores (see ARCHITECTURE.md).

use std::path::Path;
use std::sync::Arc;

use breakwater_core::{IncidentBook, KeyState, Millis};
use rocksdb::{
    ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB,
};
use serde::{Deserialize, Serialize};

const CF_STATE: &str = "state";
const CF_TIMERS: &str = "timers";
const CF_META: &str = "meta";
const META_KEY: &[u8] = b"meta";
const INCIDENTS_KEY: &[u8] = b"incidents";

/// The first byte of an encoded [`IncidentBook`].
pub const INCIDENTS_FORMAT: u8 = 1;

/// The first byte of every encoded state: bumped when the layout changes incompatibly.
pub const STATE_FORMAT: u8 = 3;

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// RocksDB failed (I/O, corruption, lock held by another process).
    #[error("rocksdb at {path}: {source}")]
    Rocks {
        /// The database directory.
        path: String,
        /// The RocksDB error.
        #[source]
        source: rocksdb::Error,
    },
    /// A stored or restored value could not be decoded.
    #[error("corrupt {what}: {detail}")]
    Corrupt {
        /// Which value.
        what: &'static str,
        /// Why.
        detail: String,
    },
}

/// Where a partition's state stands: written in the same batch as the state it describes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Next offset to consume, per input topic (last processed + 1).
    pub positions: Vec<(String, i64)>,
    /// Next changelog offset after the last changelog record this state includes.
    pub changelog_next: i64,
    /// The partition's stream time: the highest record timestamp processed.
    pub stream_time: Millis,
}

impl Meta {
    /// The next offset for `topic`, if known.
    pub fn position(&self, topic: &str) -> Option<i64> {
        self.positions
            .iter()
            .find(|(t, _)| t == topic)
            .map(|(_, o)| *o)
    }

    /// Records `next` as the next offset of `topic`.
    pub fn set_position(&mut self, topic: &str, next: i64) {
        match self.positions.iter_mut().find(|(t, _)| t == topic) {
            Some((_, o)) => *o = next,
            None => self.positions.push((topic.to_owned(), next)),
        }
    }
}

/// Encodes a key's state for the store and the changelog.
///
/// # Panics
/// Never in practice: postcard only fails on a full fixed buffer or a sequence of unknown
/// length, and this writes plain data (arrays and `Vec`s) into a growable `Vec`.
pub fn encode_state(st: &KeyState) -> Vec<u8> {
    #[allow(clippy::expect_used)]
    postcard::to_extend(st, vec![STATE_FORMAT]).expect("postcard into a Vec cannot fail")
}

/// Decodes [`encode_state`]'s output.
///
/// # Errors
/// [`StoreError::Corrupt`] for an unknown format byte or undecodable bytes.
pub fn decode_state(bytes: &[u8]) -> Result<KeyState, StoreError> {
    match bytes.split_first() {
        Some((&STATE_FORMAT, rest)) => {
            let st: KeyState = postcard::from_bytes(rest).map_err(|e| StoreError::Corrupt {
                what: "state",
                detail: e.to_string(),
            })?;
            st.check().map_err(|detail| StoreError::Corrupt {
                what: "state",
                detail,
            })?;
            Ok(st)
        }
        Some((v, _)) => Err(StoreError::Corrupt {
            what: "state",
            detail: format!("unknown state format {v} (this build reads {STATE_FORMAT})"),
        }),
        None => Err(StoreError::Corrupt {
            what: "state",
            detail: "empty value".into(),
        }),
    }
}

/// Encodes a partition's incident book for the store and the changelog.
///
/// # Panics
/// Never in practice (see [`encode_state`]).
pub fn encode_incidents(b: &IncidentBook) -> Vec<u8> {
    #[allow(clippy::expect_used)]
    postcard::to_extend(b, vec![INCIDENTS_FORMAT]).expect("postcard into a Vec cannot fail")
}

/// Decodes [`encode_incidents`]'s output.
///
/// # Errors
/// [`StoreError::Corrupt`] for an unknown format byte or undecodable bytes.
pub fn decode_incidents(bytes: &[u8]) -> Result<IncidentBook, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        what: "incidents",
        detail,
    };
    match bytes.split_first() {
        Some((&INCIDENTS_FORMAT, rest)) => {
            postcard::from_bytes(rest).map_err(|e| corrupt(e.to_string()))
        }
        Some((v, _)) => Err(corrupt(format!(
            "unknown incidents format {v} (this build reads {INCIDENTS_FORMAT})"
        ))),
        None => Err(corrupt("empty value".into())),
    }
}

fn timer_key(deadline: Millis, key: &[u8]) -> Vec<u8> {
    // Flip the sign bit so that big-endian byte order is numeric order for i64.
    let t = (deadline as u64) ^ (1 << 63);
    let mut k = Vec::with_capacity(8 + key.len());
    k.extend_from_slice(&t.to_be_bytes());
    k.extend_from_slice(key);
    k
}

fn parse_timer_key(k: &[u8]) -> Option<(Millis, &[u8])> {
    let (t, key) = k.split_at_checked(8)?;
    let t = u64::from_be_bytes(t.try_into().ok()?) ^ (1 << 63);
    Some((t as i64, key))
}

/// RocksDB's estimates for one partition's state ([`PartitionStore::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Estimated number of keys.
    pub estimated_keys: u64,
    /// Bytes in memtables (active and immutable).
    pub memtable_bytes: u64,
    /// Estimated bytes of SST index and filter blocks held outside the block cache.
    pub table_readers_bytes: u64,
    /// Bytes in the block cache.
    pub block_cache_bytes: u64,
}

/// One partition's database.
#[derive(Clone)]
pub struct PartitionStore {
    db: Arc<DB>,
    path: String,
}

impl std::fmt::Debug for PartitionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionStore")
            .field("path", &self.path)
            .finish()
    }
}

/// The changes of one input batch, written atomically by [`PartitionStore::write`].
pub struct Batch {
    wb: WriteBatch,
}

impl Default for Batch {
    fn default() -> Self {
        Batch::new()
    }
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Batch {
        Batch {
            wb: WriteBatch::default(),
        }
    }

    /// Stores `encoded` (from [`encode_state`]) under `key`, moving its timer index entry from
    /// `old_timer` to `new_timer`.
    pub fn put_state(
        &mut self,
        store: &PartitionStore,
        key: &[u8],
        encoded: &[u8],
        old_timer: Option<Millis>,
        new_timer: Option<Millis>,
    ) {
        let (Some(state_cf), Some(timers_cf)) =
            (store.db.cf_handle(CF_STATE), store.db.cf_handle(CF_TIMERS))
        else {
            return;
        };
        self.wb.put_cf(state_cf, key, encoded);
        if old_timer != new_timer {
            if let Some(t) = old_timer {
                self.wb.delete_cf(timers_cf, timer_key(t, key));
            }
            if let Some(t) = new_timer {
                self.wb.put_cf(timers_cf, timer_key(t, key), []);
            }
        }
    }

    /// Removes `key`'s state and timer.
    pub fn delete_state(&mut self, store: &PartitionStore, key: &[u8], old_timer: Option<Millis>) {
        let (Some(state_cf), Some(timers_cf)) =
            (store.db.cf_handle(CF_STATE), store.db.cf_handle(CF_TIMERS))
        else {
            return;
        };
        self.wb.delete_cf(state_cf, key);
        if let Some(t) = old_timer {
            self.wb.delete_cf(timers_cf, timer_key(t, key));
        }
    }

    /// Records where the partition stands after this batch.
    pub fn put_meta(&mut self, store: &PartitionStore, meta: &Meta) {
        let Some(cf) = store.db.cf_handle(CF_META) else {
            return;
        };
        if let Ok(bytes) = postcard::to_allocvec(meta) {
            self.wb.put_cf(cf, META_KEY, bytes);
        }
    }

    /// Stages the partition's incident book, as [`encode_incidents`] bytes.
    pub fn put_incidents(&mut self, store: &PartitionStore, encoded: &[u8]) {
        if let Some(cf) = store.db.cf_handle(CF_META) {
            self.wb.put_cf(cf, INCIDENTS_KEY, encoded);
        }
    }

    /// Number of writes in the batch.
    pub fn len(&self) -> usize {
        self.wb.len()
    }

    /// True when the batch holds nothing.
    pub fn is_empty(&self) -> bool {
        self.wb.is_empty()
    }
}

impl PartitionStore {
    /// Opens (creating if needed) the database of `partition` under `dir`.
    ///
    /// # Errors
    /// [`StoreError::Rocks`] when RocksDB cannot open it (for example another process holds
    /// its lock).
    pub fn open(dir: &Path, partition: i32) -> Result<PartitionStore, StoreError> {
        let path = dir.join(format!("partition-{partition}"));
        let path_str = path.display().to_string();
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let cfs = [CF_STATE, CF_TIMERS, CF_META]
            .into_iter()
            .map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
        let db =
            DB::open_cf_descriptors(&opts, &path, cfs).map_err(|source| StoreError::Rocks {
                path: path_str.clone(),
                source,
            })?;
        Ok(PartitionStore {
            db: Arc::new(db),
            path: path_str,
        })
    }

    fn rocks(&self, source: rocksdb::Error) -> StoreError {
        StoreError::Rocks {
            path: self.path.clone(),
            source,
        }
    }

    fn cf(&self, name: &'static str) -> Result<&rocksdb::ColumnFamily, StoreError> {
        self.db.cf_handle(name).ok_or(StoreError::Corrupt {
            what: "column family",
            detail: format!("{name} missing"),
        })
    }

    /// What RocksDB reports of this partition's state column family: estimated keys and
    /// memory (RocksDB's own estimates, cheap to read).
    ///
    /// # Errors
    /// RocksDB property read errors.
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        let cf = self.cf(CF_STATE)?;
        let prop = |name: &str| -> Result<u64, StoreError> {
            Ok(self
                .db
                .property_int_value_cf(cf, name)
                .map_err(|e| self.rocks(e))?
                .unwrap_or(0))
        };
        Ok(StoreStats {
            estimated_keys: prop("rocksdb.estimate-num-keys")?,
            memtable_bytes: prop("rocksdb.cur-size-all-mem-tables")?,
            table_readers_bytes: prop("rocksdb.estimate-table-readers-mem")?,
            block_cache_bytes: prop("rocksdb.block-cache-usage")?,
        })
    }

    /// The state of `key`, if any.
    ///
    /// # Errors
    /// RocksDB read errors and undecodable values.
    pub fn get(&self, key: &[u8]) -> Result<Option<KeyState>, StoreError> {
        let cf = self.cf(CF_STATE)?;
        match self.db.get_pinned_cf(cf, key).map_err(|e| self.rocks(e))? {
            Some(v) => decode_state(&v).map(Some),
            None => Ok(None),
        }
    }

    /// Where the partition stands (default for a new database).
    ///
    /// # Errors
    /// RocksDB read errors and an undecodable value.
    pub fn meta(&self) -> Result<Meta, StoreError> {
        let cf = self.cf(CF_META)?;
        match self
            .db
            .get_pinned_cf(cf, META_KEY)
            .map_err(|e| self.rocks(e))?
        {
            Some(v) => postcard::from_bytes(&v).map_err(|e| StoreError::Corrupt {
                what: "meta",
                detail: e.to_string(),
            }),
            None => Ok(Meta::default()),
        }
    }

    /// The partition's incident book (empty for a new database).
    ///
    /// # Errors
    /// RocksDB read errors and an undecodable value.
    pub fn incidents(&self) -> Result<IncidentBook, StoreError> {
        let cf = self.cf(CF_META)?;
        match self
            .db
            .get_pinned_cf(cf, INCIDENTS_KEY)
            .map_err(|e| self.rocks(e))?
        {
            Some(v) => decode_incidents(&v),
            None => Ok(IncidentBook::new()),
        }
    }

    /// Up to `limit` timers due at or before `up_to`, earliest first: (deadline, key).
    ///
    /// # Errors
    /// RocksDB read errors.
    pub fn due_timers(
        &self,
        up_to: Millis,
        limit: usize,
    ) -> Result<Vec<(Millis, Vec<u8>)>, StoreError> {
        let cf = self.cf(CF_TIMERS)?;
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(cf, IteratorMode::From(&[], Direction::Forward))
        {
            let (k, _) = item.map_err(|e| self.rocks(e))?;
            let Some((t, key)) = parse_timer_key(&k) else {
                continue;
            };
            if t > up_to || out.len() >= limit {
                break;
            }
            out.push((t, key.to_vec()));
        }
        Ok(out)
    }

    /// Writes `batch` atomically (WAL, no fsync).
    ///
    /// # Errors
    /// RocksDB write errors.
    pub fn write(&self, batch: Batch) -> Result<(), StoreError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(false);
        self.db.write_opt(batch.wb, &wo).map_err(|e| self.rocks(e))
    }

    /// Every key and state, in key order (tests, replay tools).
    ///
    /// # Errors
    /// RocksDB read errors and undecodable values.
    pub fn all_states(&self) -> Result<Vec<(Vec<u8>, KeyState)>, StoreError> {
        let cf = self.cf(CF_STATE)?;
        self.db
            .iterator_cf(&cf, IteratorMode::Start)
            .map(|item| {
                let (k, v) = item.map_err(|e| self.rocks(e))?;
                Ok((k.to_vec(), decode_state(&v)?))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use breakwater_core::state::{Change, Hold, View};
    use breakwater_core::{Id, SysId};

    fn state(version: u64, expiry: Option<Millis>) -> KeyState {
        let mut st = KeyState {
            version,
            ..KeyState::default()
        };
        st.views.push(View::new(SysId::of("wms")));
        if let Some(t) = expiry {
            st.holds.push(Hold {
                reservation_id: Id::new("r1").unwrap(),
                channel: Id::new("web").unwrap(),
                quantity: 1,
                expires_at: t,
            });
        }
        st
    }

    #[test]
    fn state_timers_and_positions_commit_together_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = PartitionStore::open(dir.path(), 3).unwrap();
            let mut b = Batch::new();
            let a = state(7, Some(5_000));
            b.put_state(&s, b"SKU-1|DC-1", &encode_state(&a), None, a.next_timer());
            let c = state(2, Some(-10));
            b.put_state(&s, b"SKU-2", &encode_state(&c), None, c.next_timer());
            let mut meta = Meta::default();
            meta.set_position("inventory.wms.events", 42);
            meta.changelog_next = 17;
            meta.stream_time = 9_000;
            b.put_meta(&s, &meta);
            s.write(b).unwrap();
        }
        let s = PartitionStore::open(dir.path(), 3).unwrap();
        assert_eq!(s.get(b"SKU-1|DC-1").unwrap().unwrap().version, 7);
        assert_eq!(s.get(b"nope").unwrap(), None);
        let meta = s.meta().unwrap();
        assert_eq!(meta.position("inventory.wms.events"), Some(42));
        assert_eq!((meta.changelog_next, meta.stream_time), (17, 9_000));
        // Negative times sort before positive ones; only due timers come back.
        assert_eq!(
            s.due_timers(5_000, 10).unwrap(),
            vec![(-10, b"SKU-2".to_vec()), (5_000, b"SKU-1|DC-1".to_vec())]
        );
        assert_eq!(s.due_timers(0, 10).unwrap().len(), 1);
    }

    #[test]
    fn stats_count_the_keys_written() {
        let dir = tempfile::tempdir().unwrap();
        let s = PartitionStore::open(dir.path(), 0).unwrap();
        assert_eq!(s.stats().unwrap().estimated_keys, 0);
        let mut b = Batch::new();
        for i in 0..100 {
            let st = state(i, None);
            b.put_state(
                &s,
                format!("SKU-{i}").as_bytes(),
                &encode_state(&st),
                None,
                None,
            );
        }
        s.write(b).unwrap();
        let stats = s.stats().unwrap();
        assert_eq!(stats.estimated_keys, 100);
        assert!(stats.memtable_bytes > 0, "{stats:?}");
    }

    #[test]
    fn moving_a_timer_removes_the_old_entry() {
        let dir = tempfile::tempdir().unwrap();
        let s = PartitionStore::open(dir.path(), 0).unwrap();
        let mut b = Batch::new();
        b.put_state(
            &s,
            b"k",
            &encode_state(&state(1, Some(100))),
            None,
            Some(100),
        );
        s.write(b).unwrap();
        let mut b = Batch::new();
        b.put_state(
            &s,
            b"k",
            &encode_state(&state(2, Some(300))),
            Some(100),
            Some(300),
        );
        s.write(b).unwrap();
        assert_eq!(s.due_timers(1_000, 10).unwrap(), vec![(300, b"k".to_vec())]);
        let mut b = Batch::new();
        b.delete_state(&s, b"k", Some(300));
        s.write(b).unwrap();
        assert!(s.due_timers(1_000, 10).unwrap().is_empty());
        assert_eq!(s.get(b"k").unwrap(), None);
    }

    #[test]
    fn corrupt_values_are_errors_not_panics() {
        assert!(decode_state(&[]).is_err());
        assert!(decode_state(&[99, 1, 2]).is_err());
        assert!(decode_state(&[STATE_FORMAT, 0xff, 0xff, 0xff]).is_err());
        let st = state(3, None);
        assert_eq!(decode_state(&encode_state(&st)).unwrap(), st);
        // Well-formed bytes whose history points past the root table: corrupt, not a panic
        // later in the fold.
        let mut dangling = state(4, None);
        dangling.history.push(Change {
            version: 4,
            root: 3,
            origin: SysId::of("wms"),
            at: 0,
            values: [0; 5],
            sellable: 0,
        });
        let err = decode_state(&encode_state(&dangling)).unwrap_err();
        assert!(err.to_string().contains("root index 3"), "{err}");
    }

    #[test]
    fn a_second_open_of_the_same_partition_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let _a = PartitionStore::open(dir.path(), 1).unwrap();
        let err = PartitionStore::open(dir.path(), 1).unwrap_err();
        assert!(err.to_string().contains("partition-1"), "{err}");
    }
}
