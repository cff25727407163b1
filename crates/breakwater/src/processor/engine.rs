//! The engine: what the poll loop drives. It buffers fetched records in their tasks, folds
//! them in timestamp order (the partition group), fires timers, encodes and sends the outputs
//! through the transaction coordinator, dead-letters what cannot be folded, and commits.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use breakwater_codec::records::{
    alert_record, decision_record, incident_record, propagation_record,
};
use breakwater_codec::{AnyCodec, Codec, CodecError, ErrorClass, WireRecord};
use breakwater_core::fold::{apply, validate, validate_command, Input, Outcome};
use breakwater_core::{
    message_key, IncidentReport, InventoryEvent, Millis, Model, Output, ReservationCommand,
};
use breakwater_store::{Meta, PartitionStore};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::BaseRecord;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::runtime::Handle;
use tracing::{debug, info, warn};

use super::checks::TopicKind;
use super::dead_letter::{dead_letter_record, key_problem};
use super::error::{kafka, ProcessorError};
use super::poll_loop::{caught_up, ConsumerCtx};
use super::restorer::Restorer;
use super::tally::Tally;
use super::task::Task;
use super::txn::{lock, Txn};
use super::{wall_ms, Shared};
use crate::config::Config;
use crate::metrics as m;
use crate::partition_group::Next;

/// A topic buffer this long pauses fetching for that partition until it drains below
/// [`RESUME_BELOW`], so a partition far ahead of the others does not fill memory.
const PAUSE_ABOVE: usize = 20_000;
/// See [`PAUSE_ABOVE`].
const RESUME_BELOW: usize = 2_000;

/// What the poll loop drives: the tasks, the fold, the outputs, the commit.
pub(crate) struct Engine {
    cfg: Arc<Config>,
    model: Model,
    codec: AnyCodec,
    rt: Handle,
    /// The transaction coordinator: outputs are sent into an open transaction as they are
    /// produced, so the network work overlaps processing and the commit only flushes, adds
    /// the offsets and ends it.
    pub(crate) txn: Txn,
    /// What each input topic carries, and its index in `order`.
    topics: HashMap<String, (TopicKind, usize)>,
    /// The input topics sorted by name: the tie-break order of the timestamp merge.
    order: Vec<String>,
    tasks: BTreeMap<i32, Task>,
    /// Input records in the open batch.
    pub(crate) batch_records: usize,
    /// The open batch consumed or sent something (an input, a tick) and is not committed:
    /// an abort now counts as an aborted commit.
    batch_open: bool,
    /// Drain rounds so far (which task goes first).
    drains: usize,
    /// Partitions assigned for some input topics only (not opened, paused).
    incomplete: BTreeSet<i32>,
    /// Restores newly assigned partitions between polls.
    restorer: Restorer,
    out: Vec<Output>,
    /// Incident reports of the record being folded, published after its outputs.
    reports: Vec<IncidentReport>,
    /// The open batch's counts, for the metrics at commit.
    tally: Tally,
    /// The largest dead-letter record the topic and the producer accept, in bytes, once the
    /// start-up topic checks have answered.
    dead_letter_max_bytes: Option<usize>,
    /// The topic config checks (they run beside the loop): the dead-letter limit, or a
    /// changelog problem.
    checks: Receiver<Result<usize, ProcessorError>>,
    shared: Arc<Shared>,
}

impl Engine {
    /// An engine over `topics` (what each input topic carries), sending through `txn`;
    /// `checks` delivers the topic config checks' verdict (the dead-letter limit).
    pub(crate) fn new(
        cfg: &Arc<Config>,
        codec: &AnyCodec,
        rt: &Handle,
        txn: Txn,
        topics: HashMap<String, TopicKind>,
        checks: Receiver<Result<usize, ProcessorError>>,
        shared: &Arc<Shared>,
    ) -> Engine {
        let mut order: Vec<String> = topics.keys().cloned().collect();
        order.sort();
        Engine {
            cfg: Arc::clone(cfg),
            model: cfg.model.clone(),
            codec: codec.clone(),
            rt: rt.clone(),
            txn,
            topics: order
                .iter()
                .enumerate()
                .filter_map(|(i, t)| topics.get(t).map(|k| (t.clone(), (*k, i))))
                .collect(),
            order,
            tasks: BTreeMap::new(),
            batch_records: 0,
            batch_open: false,
            drains: 0,
            incomplete: BTreeSet::new(),
            restorer: Restorer::new(Arc::clone(cfg)),
            out: Vec::with_capacity(64),
            reports: Vec::new(),
            tally: Tally::default(),
            dead_letter_max_bytes: None,
            checks,
            shared: Arc::clone(shared),
        }
    }

    /// Buffers a fetched record in its task, to be folded in timestamp order by
    /// [`Engine::drain`].
    pub(crate) fn buffer(&mut self, msg: OwnedMessage) {
        let Some(&(_, ti)) = self.topics.get(msg.topic()) else {
            return;
        };
        if let Some(task) = self.tasks.get_mut(&msg.partition()) {
            task.fetched[ti] = task.fetched[ti].max(msg.offset() + 1);
            task.group.push(ti, msg);
        }
        // Not (or no longer) ours: the next owner fetches it again.
    }

    /// Folds the buffered records the timestamp merge allows, task by task, until `due` or a
    /// full batch; pauses topics whose buffer is full and resumes drained ones.
    pub(crate) fn drain(
        &mut self,
        consumer: &BaseConsumer<ConsumerCtx>,
        due: Instant,
    ) -> Result<(), ProcessorError> {
        let max_idle = Duration::from_millis(self.cfg.processor.max_task_idle_ms);
        // Start with a different task each time, so one task's backlog cannot starve the
        // others of the batch's time.
        let mut partitions: Vec<i32> = self.tasks.keys().copied().collect();
        if !partitions.is_empty() {
            self.drains = self.drains.wrapping_add(1);
            let k = self.drains % partitions.len();
            partitions.rotate_left(k);
        }
        for p in partitions {
            while let Some(task) = self.tasks.get_mut(&p).filter(|t| !t.restoring) {
                let order = &self.order;
                let (group, fetched) = (&mut task.group, &task.fetched);
                let caught_up = |ti: usize| {
                    let stats = lock(&consumer.context().offsets)
                        .get(&(order[ti].clone(), p))
                        .copied();
                    caught_up(stats, fetched[ti])
                };
                if self.batch_records >= self.cfg.processor.max_batch_records
                    || Instant::now() >= due
                {
                    break;
                }
                let enforced = group.enforced_count;
                match group.next(caught_up, Instant::now(), max_idle) {
                    Next::Record(ti) => {
                        if group.enforced_count != enforced {
                            warn!(partition = p, "a partition was still behind after max_task_idle_ms; folding without it");
                            metrics::counter!(m::ENFORCED, "partition" => p.to_string())
                                .increment(1);
                        }
                        let Some(msg) = group.pop(ti) else { break };
                        self.handle(&msg)?;
                    }
                    Next::Wait | Next::Empty => break,
                }
            }
            self.flow_control(consumer, p);
        }
        Ok(())
    }

    /// Pauses fetching for a topic of partition `p` whose buffer is full, and resumes one
    /// that has drained.
    fn flow_control(&mut self, consumer: &BaseConsumer<ConsumerCtx>, p: i32) {
        let Some(task) = self.tasks.get_mut(&p) else {
            return;
        };
        for (ti, topic) in self.order.iter().enumerate() {
            let len = task.group.len(ti);
            let want = if task.paused[ti] {
                len >= RESUME_BELOW
            } else {
                len > PAUSE_ABOVE
            };
            if want == task.paused[ti] {
                continue;
            }
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(topic, p);
            let done = if want {
                consumer.pause(&tpl)
            } else {
                consumer.resume(&tpl)
            };
            match done {
                Ok(()) => task.paused[ti] = want,
                Err(e) => warn!(error = %e, topic, partition = p, "pause/resume failed"),
            }
        }
    }

    /// Folds one input record.
    fn handle<M: Message>(&mut self, msg: &M) -> Result<(), ProcessorError> {
        let topic = msg.topic();
        let partition = msg.partition();
        tracing::trace!(topic, partition, offset = msg.offset(), "record");
        let Some((kind, _)) = self.topics.get(topic).copied() else {
            return Ok(());
        };
        let Some(task) = self.tasks.get_mut(&partition) else {
            // Not (or no longer) ours: the next owner processes it.
            return Ok(());
        };
        task.consumed(topic, msg.offset() + 1);
        task.last_input = Instant::now();
        self.batch_records += 1;
        self.batch_open = true;
        // A record without a timestamp is folded at the partition's stream time: the wall
        // clock has no place on the fold path.
        let ts = msg.timestamp().to_millis();

        let Some(payload) = msg.payload() else {
            return self.dead_letter(msg, "empty_payload", "record has no value".into());
        };
        match kind {
            TopicKind::Ticks => {
                let ti = self.topic_index(topic);
                Tally::count(&mut self.tally.inputs, (ti, "tick"));
                self.advance(partition, ts)?;
                Ok(())
            }
            TopicKind::Events(system) => {
                let event: InventoryEvent = match self.decode(topic, payload)? {
                    Ok(e) => e,
                    Err(e) => return self.dead_letter(msg, codec_code(&e), e.to_string()),
                };
                if self.model.system_by_name(&event.system).map(|s| s.id) != Some(system) {
                    let reason = format!(
                        "event says system {:?} but {topic:?} is the input topic of {:?}",
                        event.system,
                        self.model.name(system)
                    );
                    return self.dead_letter(msg, "system_mismatch", reason);
                }
                let key = message_key(&event.sku, &event.location);
                if let Some(reason) = key_problem(msg, &key) {
                    return self.dead_letter(msg, "key_mismatch", reason);
                }
                // A record that fails validation moves no clock.
                if let Err(r) = validate(&self.model, &event) {
                    return self.dead_letter(msg, r.code(), r.to_string());
                }
                let now = self.advance(partition, ts)?;
                self.fold(
                    msg,
                    &key,
                    &event.sku,
                    &event.location,
                    Input::Event(&event),
                    now,
                )
            }
            TopicKind::Commands => {
                let cmd: ReservationCommand = match self.decode(topic, payload)? {
                    Ok(c) => c,
                    Err(e) => return self.dead_letter(msg, codec_code(&e), e.to_string()),
                };
                let key = message_key(&cmd.sku, &cmd.location);
                if let Some(reason) = key_problem(msg, &key) {
                    return self.dead_letter(msg, "key_mismatch", reason);
                }
                if let Err(r) = validate_command(&cmd) {
                    return self.dead_letter(msg, r.code(), r.to_string());
                }
                let now = self.advance(partition, ts)?;
                self.fold(
                    msg,
                    &key,
                    &cmd.sku,
                    &cmd.location,
                    Input::Command(&cmd),
                    now,
                )
            }
        }
    }

    /// Moves partition `p`'s stream time to the record's timestamp (never back) and fires the
    /// timers due by then, each at its own deadline: the same order the pure replay uses.
    fn advance(&mut self, p: i32, ts: Option<Millis>) -> Result<Millis, ProcessorError> {
        let Some(task) = self.tasks.get_mut(&p) else {
            return Ok(ts.unwrap_or(0));
        };
        let now = task.advance_clock(ts);
        self.fire_timers(p, now)?;
        if let Some(task) = self.tasks.get_mut(&p) {
            if task.incidents.advance(now, &mut self.reports) {
                task.incidents_dirty = true;
            }
        }
        self.publish_incidents(p)?;
        Ok(now)
    }

    /// Decodes with retry on transient registry errors; `Ok(Err)` is bad data.
    fn decode<T: WireRecord>(
        &self,
        topic: &str,
        payload: &[u8],
    ) -> Result<Result<T, CodecError>, ProcessorError> {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.rt.block_on(self.codec.decode::<T>(topic, payload)) {
                Ok(v) => return Ok(Ok(v)),
                Err(e) if e.class() == ErrorClass::Retry && backoff < Duration::from_secs(30) => {
                    warn!(error = %e, "schema registry unavailable; retrying");
                    std::thread::sleep(backoff);
                    backoff *= 2;
                }
                Err(e) if e.class() == ErrorClass::BadData => return Ok(Err(e)),
                Err(e) => {
                    return Err(ProcessorError::Encode {
                        topic: topic.to_owned(),
                        source: Box::new(e),
                    })
                }
            }
        }
    }

    /// Folds a validated input into its key's state and sends the outputs; a rejection
    /// dead-letters the record.
    fn fold<M: Message>(
        &mut self,
        msg: &M,
        key: &str,
        sku: &str,
        location: &str,
        input: Input<'_>,
        now: Millis,
    ) -> Result<(), ProcessorError> {
        let partition = msg.partition();
        let Some(task) = self.tasks.get_mut(&partition) else {
            return Ok(());
        };
        let (model, out) = (&self.model, &mut self.out);
        out.clear();
        let result = task.update(key.as_bytes(), |state| apply(model, state, input, now, out))?;
        match result {
            Ok(outcome) => {
                let label = match outcome {
                    Outcome::Applied => "applied",
                    Outcome::Duplicate => "duplicate",
                    Outcome::Superseded => "superseded",
                };
                let ti = self.topic_index(msg.topic());
                Tally::count(&mut self.tally.inputs, (ti, label));
                self.emit(partition, key, sku, location, now)
            }
            Err(rejection) => self.dead_letter(msg, rejection.code(), rejection.to_string()),
        }
    }

    /// Fires every timer of `partition` due at or before `now`, each at its deadline.
    fn fire_timers(&mut self, partition: i32, now: Millis) -> Result<(), ProcessorError> {
        loop {
            let Some(task) = self.tasks.get_mut(&partition) else {
                return Ok(());
            };
            let Some((deadline, key)) = task.pop_due(now) else {
                return Ok(());
            };
            let (model, out) = (&self.model, &mut self.out);
            out.clear();
            // Timers never reject. Firing at `deadline` settles everything due by then, so
            // the key's next deadline is later (the index entry `pop_due` took is not put back
            // by `update` when the deadline stays the same).
            let next = task.update(&key, |state| {
                let _ = apply(model, state, Input::Timer, deadline, out);
                state.next_timer()
            })?;
            debug_assert!(
                next.is_none_or(|n| n > deadline),
                "a fired timer stayed due"
            );
            let key = String::from_utf8_lossy(&key).into_owned();
            let (sku, location) = split_key(&key);
            self.emit(partition, &key, sku, location, deadline)?;
        }
    }

    /// Encodes the fold's outputs and sends them into the open transaction.
    fn emit(
        &mut self,
        partition: i32,
        key: &str,
        sku: &str,
        location: &str,
        now: Millis,
    ) -> Result<(), ProcessorError> {
        let outs = std::mem::take(&mut self.out);
        for o in &outs {
            let (topic, payload) = match o {
                Output::Propagation(p) => {
                    let Some(sys) = self.model.system(p.target) else {
                        continue;
                    };
                    Tally::count(&mut self.tally.propagations, p.target);
                    let topic = sys.propagation_topic.clone();
                    let rec = propagation_record(&self.model, sku, location, p);
                    let payload = self.encode(&topic, &rec)?;
                    (topic, payload)
                }
                Output::Alert(a) => {
                    let publish = match self.tasks.get_mut(&partition) {
                        Some(task) => {
                            task.incidents_dirty = true;
                            task.incidents
                                .on_alert(&self.model, key, a, now, &mut self.reports)
                        }
                        None => true,
                    };
                    if !publish {
                        Tally::count(&mut self.tally.suppressed, (a.kind, a.system));
                        continue;
                    }
                    Tally::count(&mut self.tally.alerts, (a.kind, a.system));
                    if let Some(resolves) = a.resolves {
                        Tally::count(&mut self.tally.resolved, (resolves, a.system));
                    }
                    let topic = self.cfg.topics.alerts.clone();
                    let rec = alert_record(&self.model, sku, location, a);
                    let payload = self.encode(&topic, &rec)?;
                    (topic, payload)
                }
                Output::Decision(d) => {
                    let kind = decision_label(d.kind);
                    Tally::count(&mut self.tally.decisions, kind);
                    let topic = self.cfg.topics.decisions.clone();
                    let rec = decision_record(sku, location, d);
                    let payload = self.encode(&topic, &rec)?;
                    (topic, payload)
                }
                Output::Converged(c) => {
                    self.tally.convergences.push((
                        c.origin,
                        c.system,
                        c.latency_ms,
                        c.within_window,
                    ));
                    continue;
                }
                Output::Action(a) => {
                    Tally::count(&mut self.tally.actions, (a.system, a.outcome.as_str()));
                    continue;
                }
            };
            self.txn.send(
                BaseRecord::to(&topic)
                    .partition(partition)
                    .key(key.as_bytes())
                    .payload(payload.as_slice())
                    .timestamp(now),
            )?;
        }
        self.out = outs;
        self.out.clear();
        self.publish_incidents(partition)
    }

    /// Sends the pending incident reports of `partition` into the open transaction, keyed by
    /// incident id (so every partition's reports of one incident share a partition of the
    /// incidents topic).
    fn publish_incidents(&mut self, partition: i32) -> Result<(), ProcessorError> {
        if self.reports.is_empty() {
            return Ok(());
        }
        let reports = std::mem::take(&mut self.reports);
        let topic = self.cfg.topics.incidents.clone();
        for r in &reports {
            let rec = incident_record(&self.model, partition, r);
            Tally::count(&mut self.tally.incidents, (r.incident.kind, r.status));
            let payload = self.encode(&topic, &rec)?;
            self.txn.send(
                BaseRecord::to(&topic)
                    .key(rec.incident_id.as_bytes())
                    .payload(payload.as_slice())
                    .timestamp(r.at),
            )?;
        }
        self.reports = reports;
        self.reports.clear();
        Ok(())
    }

    fn encode<T: WireRecord>(&self, topic: &str, rec: &T) -> Result<Vec<u8>, ProcessorError> {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.rt.block_on(self.codec.encode(topic, rec)) {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() && backoff < Duration::from_secs(30) => {
                    warn!(error = %e, "schema registry unavailable; retrying");
                    std::thread::sleep(backoff);
                    backoff *= 2;
                }
                Err(source) => {
                    return Err(ProcessorError::Encode {
                        topic: topic.to_owned(),
                        source: Box::new(source),
                    })
                }
            }
        }
    }

    /// Sends `msg` unchanged to the dead-letter topic with the reason in headers
    /// ([`dead_letter_record`]). The offset still advances: the record is handled, not lost.
    fn dead_letter<M: Message>(
        &mut self,
        msg: &M,
        code: &'static str,
        reason: String,
    ) -> Result<(), ProcessorError> {
        let ti = self.topic_index(msg.topic());
        Tally::count(&mut self.tally.inputs, (ti, "dead_letter"));
        Tally::count(&mut self.tally.dead_letters, (ti, code));
        debug!(topic = msg.topic(), partition = msg.partition(), offset = msg.offset(), code, %reason, "dead-lettered");
        let max = self.dead_letter_max()?;
        let stream_time = self
            .tasks
            .get(&msg.partition())
            .map_or(0, |t| t.meta.stream_time);
        let rec = dead_letter_record(
            &self.cfg.topics.dead_letter,
            msg,
            code,
            &reason,
            max,
            stream_time,
        );
        self.txn.send(rec)
    }

    /// Sends a clock tick for every partition that has had no input for `every` and has
    /// nothing unread, so its timers fire on time. The tick is an input like any other:
    /// replay sees it too. A partition with records buffered, or with any input partition
    /// not known (from the broker's statistics) to be read to its end, is not idle: a
    /// wall-clock tick would put stream time ahead of its backlog.
    pub(crate) fn tick_idle(
        &mut self,
        consumer: &BaseConsumer<ConsumerCtx>,
        every: Duration,
    ) -> Result<(), ProcessorError> {
        let now = wall_ms();
        let order = &self.order;
        let stats = lock(&consumer.context().offsets);
        let idle: Vec<i32> = self
            .tasks
            .iter_mut()
            .filter(|(p, t)| {
                t.is_idle(Instant::now(), every, |ti, fetched| {
                    caught_up(stats.get(&(order[ti].clone(), **p)).copied(), fetched)
                })
            })
            .map(|(p, t)| {
                t.last_tick = Instant::now();
                *p
            })
            .collect();
        drop(stats);
        for p in idle {
            self.batch_open = true;
            self.txn.send(
                BaseRecord::to(&self.cfg.topics.ticks)
                    .partition(p)
                    .key(&b"tick"[..])
                    .payload(&b"tick"[..])
                    .timestamp(now),
            )?;
        }
        Ok(())
    }

    /// The index of input topic `topic` in `order` (`usize::MAX` if it is not one).
    fn topic_index(&self, topic: &str) -> usize {
        self.topics.get(topic).map_or(usize::MAX, |t| t.1)
    }

    /// The start-up checks' verdict, if it has arrived (without waiting).
    pub(crate) fn poll_checks(&mut self) -> Result<(), ProcessorError> {
        match self.checks.try_recv() {
            Ok(Ok(max)) => {
                self.dead_letter_max_bytes = Some(max);
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Ok(()),
        }
    }

    /// The dead-letter record limit, waiting for the start-up checks if they are still
    /// running (only a dead letter needs it).
    fn dead_letter_max(&mut self) -> Result<usize, ProcessorError> {
        if let Some(max) = self.dead_letter_max_bytes {
            return Ok(max);
        }
        match self.checks.recv() {
            Ok(Ok(max)) => {
                self.dead_letter_max_bytes = Some(max);
                Ok(max)
            }
            Ok(Err(e)) => Err(e),
            // Already answered and consumed, or the thread is gone: librdkafka's default.
            Err(_) => Ok(*self.dead_letter_max_bytes.get_or_insert(1_000_000)),
        }
    }

    /// Abandons the open batch and closes every task: aborts the transaction (if any) and
    /// drops the tasks with every change not committed, so nothing of the batch can reach
    /// Kafka or RocksDB; the next incarnation reopens them from the committed state.
    pub(crate) fn abort_and_close(&mut self) {
        let open_batch = self.batch_open || self.txn.is_open();
        self.txn.abort();
        self.batch_open = false;
        if open_batch {
            metrics::counter!(m::COMMITS, "outcome" => "aborted").increment(1);
        }
        self.tally.clear();
        self.batch_records = 0;
        let all: Vec<i32> = self.tasks.keys().copied().collect();
        for p in all {
            self.close_partition(p);
        }
        metrics::gauge!(m::PARTITIONS).set(0.0);
    }

    /// Commits everything since the last commit: one Kafka transaction (outputs, changelog,
    /// offsets), then one RocksDB batch per task. On an error the transaction is already
    /// aborted ([`Txn::commit`]) and nothing is written to RocksDB; the caller ends the
    /// incarnation, which drops the tasks.
    pub(crate) fn commit(
        &mut self,
        consumer: &BaseConsumer<ConsumerCtx>,
    ) -> Result<(), ProcessorError> {
        let has_positions = self.tasks.values().any(Task::has_positions);
        if !self.txn.is_open() && !has_positions {
            return Ok(());
        }
        let started = Instant::now();
        let staged = self
            .stage_changelog()
            .and_then(|()| batch_offsets(&self.tasks));
        let offsets = match staged {
            Ok(o) => o,
            Err(e) => {
                // Abort now, not when the incarnation ends: on revoke, the partitions are
                // handed over right after this, and an open transaction would hold back the
                // new owner's read_committed restore.
                self.txn.abort();
                return Err(e);
            }
        };
        let delivered = self.txn.commit(&offsets, consumer.group_metadata())?;
        // Kafka is the commit point: the batch is committed, whatever happens to the RocksDB
        // write below (a failed write is repaired from the changelog on the next start).
        self.batch_open = false;
        metrics::counter!(m::COMMITS, "outcome" => "committed").increment(1);
        self.tally.record(&self.model, &self.order);
        self.shared
            .committed_records
            .fetch_add(self.batch_records as u64, Ordering::SeqCst);
        metrics::histogram!(m::COMMIT_RECORDS).record(self.batch_records as f64);
        self.batch_records = 0;
        for (p, task) in &mut self.tasks {
            // A restoring task's store is the restorer's until it finishes.
            if task.restoring {
                continue;
            }
            task.persist(
                delivered.get(p).copied(),
                self.cfg.processor.max_cached_keys,
            )?;
            metrics::gauge!(m::STREAM_TIME, "partition" => p.to_string())
                .set(task.meta.stream_time as f64 / 1000.0);
        }
        metrics::histogram!(m::COMMIT_DURATION).record(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Sends the batch's changelog records into the transaction: per task, one record per
    /// changed key, then the incident book and stream time when they changed.
    fn stage_changelog(&mut self) -> Result<(), ProcessorError> {
        let changelog = self.cfg.topics.changelog.as_str();
        for (p, task) in &self.tasks {
            if task.restoring {
                continue;
            }
            let txn = &mut self.txn;
            task.changelog(|key, value| {
                txn.send(
                    BaseRecord::to(changelog)
                        .partition(*p)
                        .key(key)
                        .payload(value),
                )
            })?;
        }
        Ok(())
    }

    /// Opens, restores and starts the tasks of newly assigned partitions.
    pub(crate) fn open(
        &mut self,
        consumer: &BaseConsumer<ConsumerCtx>,
        tpl: &TopicPartitionList,
    ) -> Result<(), ProcessorError> {
        // Co-partitioning: task p is partition p of every input topic. A member subscribed to
        // other topics (a rolling deploy that adds a system) leaves the range assignor free to
        // give this instance p of some topics and another instance p of the rest; opening the
        // task here would give partition p two owners writing one changelog partition. Such a
        // partition is paused and not opened (the instance is not ready) until every member
        // subscribes to the same topics.
        let mut held: BTreeMap<i32, BTreeSet<String>> = BTreeMap::new();
        for e in tpl.elements() {
            held.entry(e.partition())
                .or_default()
                .insert(e.topic().to_owned());
        }
        let mut partitions = BTreeSet::new();
        let mut blocked = TopicPartitionList::new();
        self.incomplete.clear();
        for (p, topics) in &held {
            let missing: Vec<&str> = self
                .order
                .iter()
                .map(String::as_str)
                .filter(|t| !topics.contains(*t))
                .collect();
            if missing.is_empty() {
                partitions.insert(*p);
                continue;
            }
            tracing::error!(
                partition = p,
                missing = ?missing,
                "assigned partition {p} of some input topics but not of {missing:?}: the group's \
                 members subscribe to different topics (a rolling deploy that changed \
                 [[systems]]?); not processing partition {p} until they agree"
            );
            for t in topics {
                blocked
                    .add_partition_offset(t, *p, Offset::Invalid)
                    .map_err(kafka("pause"))?;
            }
            self.incomplete.insert(*p);
        }
        if blocked.count() > 0 {
            consumer.pause(&blocked).map_err(kafka("pause"))?;
        }
        metrics::gauge!(m::INCOMPLETE_TASKS).set(self.incomplete.len() as f64);
        // Where each assigned input partition resumes: an empty partition is caught up when
        // its position reaches the high watermark, and until the consumer has fetched from
        // it, its position is the committed offset.
        let committed = consumer
            .committed_offsets(tpl.clone(), Duration::from_secs(30))
            .map_err(kafka("committed_offsets"))?;
        // Not ready while restoring.
        self.shared.ready.store(false, Ordering::SeqCst);
        for p in partitions {
            if self.tasks.contains_key(&p) {
                continue;
            }
            let store = PartitionStore::open(&self.cfg.state.dir, p)?;
            // The changelog is read from the loop, between polls, not here: a long restore
            // inside the rebalance callback would outlive max.poll.interval.ms.
            let ready = self.restorer.begin(&store, p)?;
            let restoring = ready.is_none();
            let meta = ready.clone().unwrap_or_default();
            if restoring {
                let mut tpl = TopicPartitionList::new();
                for t in &self.order {
                    tpl.add_partition_offset(t, p, Offset::Invalid)
                        .map_err(kafka("pause"))?;
                }
                consumer.pause(&tpl).map_err(kafka("pause"))?;
            }
            let fetched = self
                .order
                .iter()
                .map(|t| {
                    committed
                        .find_partition(t, p)
                        .and_then(|e| e.offset().to_raw())
                        .filter(|o| *o >= 0)
                        .unwrap_or(-1)
                })
                .collect();
            self.tasks
                .insert(p, Task::new(p, store, meta, fetched, restoring));
            if let Some(meta) = ready {
                self.finish_restore(consumer, p, meta)?;
            }
        }
        metrics::gauge!(m::PARTITIONS).set(self.tasks.len() as f64);
        self.update_ready();
        Ok(())
    }

    /// Ready: every assigned partition is open and restored.
    fn update_ready(&self) {
        let ready = self.incomplete.is_empty() && !self.tasks.values().any(|t| t.restoring);
        self.shared.ready.store(ready, Ordering::SeqCst);
    }

    /// Restores for at most `budget`, then opens the partitions whose restore finished.
    pub(crate) fn restore_step(
        &mut self,
        consumer: &BaseConsumer<ConsumerCtx>,
        budget: Duration,
    ) -> Result<(), ProcessorError> {
        if !self.restorer.is_busy() {
            return Ok(());
        }
        for (p, meta) in self.restorer.step(budget)? {
            self.finish_restore(consumer, p, meta)?;
        }
        self.update_ready();
        Ok(())
    }

    /// Partition `p`'s state is complete: load its timers and incidents, serve it, and let
    /// its inputs flow.
    fn finish_restore(
        &mut self,
        consumer: &BaseConsumer<ConsumerCtx>,
        p: i32,
        meta: Meta,
    ) -> Result<(), ProcessorError> {
        let Some(task) = self.tasks.get_mut(&p) else {
            return Ok(());
        };
        let was_restoring = task.restoring;
        task.restored(meta)?;
        lock_write(&self.shared.stores).insert(p, task.store().clone());
        if was_restoring {
            let mut tpl = TopicPartitionList::new();
            for t in &self.order {
                tpl.add_partition_offset(t, p, Offset::Invalid)
                    .map_err(kafka("resume"))?;
            }
            consumer.resume(&tpl).map_err(kafka("resume"))?;
        }
        info!(
            partition = p,
            changelog_next = task.meta.changelog_next,
            "partition ready"
        );
        Ok(())
    }

    /// Closes the tasks of revoked partitions (after `commit`).
    pub(crate) fn close(&mut self, tpl: &TopicPartitionList) {
        let partitions: BTreeSet<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        for p in partitions {
            self.close_partition(p);
        }
        metrics::gauge!(m::PARTITIONS).set(self.tasks.len() as f64);
        // Between a revocation and the next assignment nothing is being served.
        self.shared.ready.store(false, Ordering::SeqCst);
    }

    fn close_partition(&mut self, p: i32) {
        self.restorer.cancel(p);
        if self.tasks.remove(&p).is_some() {
            lock_write(&self.shared.stores).remove(&p);
            // Not ours any more: its gauges are the new owner's to report.
            let partition = p.to_string();
            metrics::gauge!(m::STREAM_TIME, "partition" => partition.clone()).set(f64::NAN);
            metrics::gauge!(m::ROCKSDB_KEYS, "partition" => partition.clone()).set(f64::NAN);
            for kind in ["memtables", "table_readers", "block_cache"] {
                metrics::gauge!(m::ROCKSDB_MEMORY, "partition" => partition.clone(), "kind" => kind)
                    .set(f64::NAN);
            }
            info!(partition = p, "partition closed");
        }
    }
}

/// The input offsets a batch commits: the next offset of every input partition it consumed.
/// A batch that consumed nothing (only ticks written) still commits the offsets its tasks
/// already had: the offset commit carries the group generation, so a zombie that lost its
/// partitions (paused past its session) is fenced there instead of landing its ticks after
/// the new owner's.
fn batch_offsets(tasks: &BTreeMap<i32, Task>) -> Result<TopicPartitionList, ProcessorError> {
    let mut offsets = TopicPartitionList::new();
    for (p, task) in tasks {
        for (topic, next) in task.positions() {
            offsets
                .add_partition_offset(topic, *p, Offset::Offset(next))
                .map_err(kafka("offsets"))?;
        }
    }
    if offsets.count() == 0 {
        for (p, task) in tasks {
            for (topic, next) in &task.meta.positions {
                offsets
                    .add_partition_offset(topic, *p, Offset::Offset(*next))
                    .map_err(kafka("offsets"))?;
            }
        }
    }
    Ok(offsets)
}

fn lock_write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

fn split_key(key: &str) -> (&str, &str) {
    key.split_once('|').unwrap_or((key, ""))
}

fn codec_code(e: &CodecError) -> &'static str {
    match e {
        CodecError::TooShort { .. } => "too_short",
        CodecError::BadMagic { .. } => "bad_magic",
        CodecError::UnknownSchemaId { .. } => "unknown_schema_id",
        CodecError::AvroDecode { .. } => "avro_decode",
        CodecError::JsonDecode { .. } => "json_decode",
        _ => "undecodable",
    }
}

fn decision_label(k: breakwater_core::DecisionKind) -> &'static str {
    use breakwater_core::DecisionKind::*;
    match k {
        Granted => "GRANTED",
        Rejected => "REJECTED",
        Committed => "COMMITTED",
        Released => "RELEASED",
        Expired => "EXPIRED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use breakwater_store::PartitionStore;

    fn offsets(tpl: &TopicPartitionList) -> Vec<(String, i32, i64)> {
        tpl.elements()
            .iter()
            .map(|e| {
                (
                    e.topic().to_owned(),
                    e.partition(),
                    e.offset().to_raw().unwrap_or(-1),
                )
            })
            .collect()
    }

    #[test]
    fn a_batch_that_consumed_nothing_still_commits_its_offsets_for_the_generation_check() {
        let dir = tempfile::tempdir().unwrap();
        let mut tasks = BTreeMap::new();
        for p in [0, 1] {
            let store = PartitionStore::open(dir.path(), p).unwrap();
            let mut meta = Meta::default();
            meta.set_position("wms", 40 + i64::from(p));
            tasks.insert(p, Task::new(p, store, meta, vec![-1], false));
        }
        // Only ticks were written: the offsets the tasks had, so a fenced generation fails.
        assert_eq!(
            offsets(&batch_offsets(&tasks).unwrap()),
            vec![("wms".into(), 0, 40), ("wms".into(), 1, 41)]
        );
        // A batch that consumed input commits where it got to.
        if let Some(t) = tasks.get_mut(&1) {
            t.consumed("wms", 57);
        }
        assert_eq!(
            offsets(&batch_offsets(&tasks).unwrap()),
            vec![("wms".into(), 1, 57)]
        );
    }
}
