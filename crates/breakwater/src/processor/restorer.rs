//! The restorer: brings newly assigned partitions' local state up to the end of the changelog
//! from the processing loop, between polls, in bounded steps (Kafka Streams'
//! StoreChangelogReader). Each step writes one RocksDB batch per partition it read, with the
//! partition's `changelog_next`, so a crash in the middle of a long restore resumes where it
//! stopped; the consumer keeps polling, so a long restore never exceeds
//! `max.poll.interval.ms`. One restore consumer serves every partition.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use breakwater_core::Millis;
use breakwater_store::{decode_incidents, decode_state, Batch, Meta, PartitionStore};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tracing::info;

use crate::config::Config;
use crate::metrics as m;
use crate::processor::{base_client_config, ProcessorError, INCIDENTS_KEY, STREAM_TIME_KEY};

/// One step's writes for a partition, with the timer entries staged in it (so a key
/// restored twice in a step moves its entry).
type StepBatch = (Batch, HashMap<Vec<u8>, Option<Millis>>);

/// A partition being restored.
struct Pending {
    store: PartitionStore,
    meta: Meta,
    /// The changelog's end when the restore began.
    high: i64,
    restored: u64,
}

/// Restores partitions, a step at a time.
pub(crate) struct Restorer {
    cfg: Arc<Config>,
    consumer: Option<BaseConsumer>,
    pending: BTreeMap<i32, Pending>,
    /// The partitions the consumer is assigned, to reassign only when the set changes.
    assigned: Vec<i32>,
}

fn kafka(op: &'static str) -> impl FnOnce(rdkafka::error::KafkaError) -> ProcessorError {
    move |source| ProcessorError::Kafka { op, source }
}

impl Restorer {
    pub(crate) fn new(cfg: Arc<Config>) -> Restorer {
        Restorer {
            cfg,
            consumer: None,
            pending: BTreeMap::new(),
            assigned: Vec::new(),
        }
    }

    fn consumer(&mut self) -> Result<&BaseConsumer, ProcessorError> {
        if self.consumer.is_none() {
            let c: BaseConsumer = base_client_config(&self.cfg)
                .set("isolation.level", "read_committed")
                .set("enable.auto.commit", "false")
                .set("group.id", format!("{}-restore", self.cfg.kafka.group_id))
                .create()
                .map_err(kafka("create restore consumer"))?;
            self.consumer = Some(c);
        }
        self.consumer.as_ref().ok_or(ProcessorError::Kafka {
            op: "create restore consumer",
            source: rdkafka::error::KafkaError::Canceled,
        })
    }

    /// Whether any partition is still being restored.
    pub(crate) fn is_busy(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Checks partition `p`'s changelog against its local state. Returns its meta if the
    /// local state is already complete; otherwise queues it and returns `None` (it is done
    /// when [`Restorer::step`] returns it).
    ///
    /// # Errors
    /// [`ProcessorError::StateLost`] when the changelog lost records the local state needs,
    /// or was recreated; Kafka and store errors.
    pub(crate) fn begin(
        &mut self,
        store: &PartitionStore,
        p: i32,
    ) -> Result<Option<Meta>, ProcessorError> {
        let meta = store.meta()?;
        let topic = self.cfg.topics.changelog.clone();
        let local = self.cfg.state.dir.join(format!("partition-{p}"));
        let (low, high) = self
            .consumer()?
            .fetch_watermarks(&topic, p, Duration::from_secs(30))
            .map_err(kafka("changelog watermarks"))?;
        if meta.changelog_next > high {
            return Err(ProcessorError::StateLost {
                partition: p,
                detail: format!(
                    "local state is ahead of the changelog (local next offset {}, changelog end \
                     {high}): the changelog topic was recreated; move {} away to rebuild this \
                     partition from the changelog",
                    meta.changelog_next,
                    local.display()
                ),
            });
        }
        // Records between what the local state includes and the changelog's first offset
        // were deleted (retention, DeleteRecords, a recreated topic that grew back):
        // restoring from `low` would silently skip their keys' latest states.
        if meta.changelog_next < low {
            return Err(ProcessorError::StateLost {
                partition: p,
                detail: format!(
                    "the changelog partition starts at offset {low} but the local state ({}) \
                     includes it only up to offset {}: the records in between were deleted. \
                     Rebuild the partition from its inputs (a new group.id or reset offsets, \
                     with the local state moved away), or restore the changelog",
                    local.display(),
                    meta.changelog_next
                ),
            });
        }
        if meta.changelog_next >= high {
            return Ok(Some(meta));
        }
        info!(
            partition = p,
            from = meta.changelog_next,
            to = high,
            "restoring from the changelog"
        );
        metrics::gauge!(m::RESTORE_REMAINING, "partition" => p.to_string())
            .set((high - meta.changelog_next) as f64);
        self.pending.insert(
            p,
            Pending {
                store: store.clone(),
                meta,
                high,
                restored: 0,
            },
        );
        Ok(None)
    }

    /// Stops restoring `p` (revoked). Its progress so far is kept in its store.
    pub(crate) fn cancel(&mut self, p: i32) {
        if self.pending.remove(&p).is_some() {
            metrics::gauge!(m::RESTORE_REMAINING, "partition" => p.to_string()).set(0.0);
        }
    }

    /// Reads the changelog for at most `budget`, writes what it read (one batch per
    /// partition, with its progress), and returns the partitions that reached the end, with
    /// their meta.
    ///
    /// # Errors
    /// Kafka errors, an undecodable changelog record, store errors.
    pub(crate) fn step(&mut self, budget: Duration) -> Result<Vec<(i32, Meta)>, ProcessorError> {
        if self.pending.is_empty() {
            return Ok(Vec::new());
        }
        let topic = self.cfg.topics.changelog.clone();
        let wanted: Vec<i32> = self.pending.keys().copied().collect();
        if wanted != self.assigned {
            let mut tpl = TopicPartitionList::new();
            for (p, pending) in &self.pending {
                tpl.add_partition_offset(&topic, *p, Offset::Offset(pending.meta.changelog_next))
                    .map_err(kafka("assign changelog"))?;
            }
            self.consumer()?
                .assign(&tpl)
                .map_err(kafka("assign changelog"))?;
            self.assigned = wanted;
        }
        let deadline = Instant::now() + budget;
        let mut batches: HashMap<i32, StepBatch> = HashMap::new();
        let Some(consumer) = self.consumer.as_ref() else {
            return Ok(Vec::new());
        };
        while Instant::now() < deadline {
            let Some(msg) = consumer.poll(Duration::from_millis(10)) else {
                break;
            };
            let msg = msg.map_err(kafka("read changelog"))?;
            let p = msg.partition();
            let Some(pending) = self.pending.get_mut(&p) else {
                continue;
            };
            let (batch, staged) = batches.entry(p).or_default();
            let key = msg.key().unwrap_or_default();
            pending.meta.changelog_next = msg.offset() + 1;
            pending.restored += 1;
            if key == STREAM_TIME_KEY {
                if let Some(t) = msg.payload().and_then(|v| <[u8; 8]>::try_from(v).ok()) {
                    pending.meta.stream_time = pending.meta.stream_time.max(i64::from_be_bytes(t));
                }
                continue;
            }
            if key == INCIDENTS_KEY {
                if let Some(v) = msg.payload() {
                    decode_incidents(v)?;
                    batch.put_incidents(&pending.store, v);
                }
                continue;
            }
            // Timer entries already staged in this batch, so a key restored twice moves
            // its entry.
            let old_timer = match staged.get(key) {
                Some(t) => *t,
                None => pending.store.get(key)?.and_then(|s| s.next_timer()),
            };
            match msg.payload() {
                Some(v) => {
                    let timer = decode_state(v)?.next_timer();
                    batch.put_state(&pending.store, key, v, old_timer, timer);
                    staged.insert(key.to_vec(), timer);
                }
                None => {
                    batch.delete_state(&pending.store, key, old_timer);
                    staged.insert(key.to_vec(), None);
                }
            }
        }
        // Progress: what was read, with where it stands, in one write per partition.
        for (p, (mut batch, _)) in batches {
            if let Some(pending) = self.pending.get(&p) {
                batch.put_meta(&pending.store, &pending.meta);
                pending.store.write(batch)?;
            }
        }
        let positions = consumer.position().map_err(kafka("changelog position"))?;
        let mut done = Vec::new();
        let finished: Vec<i32> = self
            .pending
            .iter()
            .filter_map(|(p, pending)| {
                let at = positions
                    .find_partition(&topic, *p)
                    .and_then(|e| e.offset().to_raw())
                    .unwrap_or(pending.meta.changelog_next)
                    .max(pending.meta.changelog_next);
                metrics::gauge!(m::RESTORE_REMAINING, "partition" => p.to_string())
                    .set((pending.high - at).max(0) as f64);
                (at >= pending.high).then_some(*p)
            })
            .collect();
        for p in finished {
            if let Some(pending) = self.pending.remove(&p) {
                metrics::counter!(m::RESTORED, "partition" => p.to_string())
                    .increment(pending.restored);
                info!(
                    partition = p,
                    restored = pending.restored,
                    changelog_next = pending.meta.changelog_next,
                    "restored from changelog"
                );
                done.push((p, pending.meta));
            }
        }
        Ok(done)
    }
}
