//! The processor: a consumer group over every input topic, one task per partition number,
//! the fold over RocksDB-backed state, and exactly-once commits.
//!
//! # The commit protocol
//! Input records are folded into per-key states held in a cache; outputs are encoded and
//! buffered. Every `commit_interval_ms` (or `max_batch_records`):
//! 1. one Kafka transaction: the buffered outputs, one changelog record per changed key and
//!    the next input offsets (`send_offsets_to_transaction`), then commit;
//! 2. one RocksDB write batch per task: the changed states, their timer index entries, and a
//!    [`Meta`] holding the next input offsets and the next changelog offset.
//!
//! Kafka is the commit point. A crash before 1 completes aborts the transaction: nothing was
//! published, the offsets did not move and RocksDB did not change, so the batch is reprocessed.
//! A crash between 1 and 2 leaves RocksDB one batch behind the changelog; on restart each task
//! replays the changelog from its stored `changelog_next` to the end, which is exactly that
//! batch. The local state is reused, never wiped (ARCHITECTURE.md lists every crash point).
//!
//! Any Kafka error inside a transaction ends this incarnation of the processor; `run` starts a
//! new one, which is the crash-recovery path above.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use breakwater_codec::records::{
    alert_record, decision_record, incident_record, propagation_record,
};
use breakwater_codec::{AnyCodec, Codec, CodecError, ErrorClass, WireRecord};
use breakwater_core::fold::{apply, validate, validate_command, Input, Outcome};
use breakwater_core::{
    message_key, AlertKind, IncidentBook, IncidentReport, IncidentStatus, InventoryEvent, KeyState,
    Millis, Model, Output, ReservationCommand, SysId,
};
use breakwater_store::{encode_incidents, encode_state, Batch, Meta, PartitionStore, StoreError};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};
use tokio::runtime::Handle;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::metrics as m;
use crate::partition_group::{Next, PartitionGroup};
use crate::restorer::Restorer;

/// A topic buffer this long pauses fetching for that partition until it drains below
/// [`RESUME_BELOW`], so a partition far ahead of the others does not fill memory.
const PAUSE_ABOVE: usize = 20_000;
/// See [`PAUSE_ABOVE`].
const RESUME_BELOW: usize = 2_000;
/// Records polled (without the engine lock) before the buffered ones are folded.
const POLL_BURST: usize = 512;

/// How long a missing or mis-partitioned topic is retried at start before it is fatal.
const TOPIC_GRACE: Duration = Duration::from_secs(60);

/// Key of the changelog record that carries a partition's stream time.
pub const STREAM_TIME_KEY: &[u8] = b"\0stream_time";
/// The changelog key of a partition's incident book (not a valid `sku|location`).
pub const INCIDENTS_KEY: &[u8] = b"\0incidents";

/// Headers on every dead-letter record.
pub mod dlq_headers {
    /// Short reason code (`undecodable`, `unknown_system`, `impossible_quantity`, ...).
    pub const REASON_CODE: &str = "breakwater.dlq.reason_code";
    /// Human-readable reason.
    pub const REASON: &str = "breakwater.dlq.reason";
    /// Source topic.
    pub const TOPIC: &str = "breakwater.dlq.topic";
    /// Source partition.
    pub const PARTITION: &str = "breakwater.dlq.partition";
    /// Source offset.
    pub const OFFSET: &str = "breakwater.dlq.offset";
    /// Source record timestamp (ms), if it had one.
    pub const TIMESTAMP: &str = "breakwater.dlq.timestamp";
    /// Present when the value was cut to fit the dead-letter topic's `max.message.bytes`:
    /// the original value's length in bytes (the whole record stays at its source offset).
    pub const TRUNCATED_FROM: &str = "breakwater.dlq.truncated_from";
}

/// Room kept in a dead-letter record for the record batch and record framing, besides the
/// key and headers (Kafka's batch header is 61 bytes; a record's own framing under 30).
const DLQ_FRAMING: usize = 512;

/// Why the processor stopped or restarted.
#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    /// A Kafka operation failed.
    #[error("kafka: {op}: {source}")]
    Kafka {
        /// What was being done.
        op: &'static str,
        /// The error.
        #[source]
        source: KafkaError,
    },
    /// The state store failed.
    #[error("state store: {0}")]
    Store(#[from] StoreError),
    /// Encoding an output failed (a bug or a registry that refuses our schemas).
    #[error("encoding an output for {topic}: {source}")]
    Encode {
        /// The topic.
        topic: String,
        /// The error.
        #[source]
        source: Box<CodecError>,
    },
    /// Topics are missing or not co-partitioned.
    #[error("topics: {0}")]
    Topics(String),
    /// librdkafka reported a fatal error (for example another live member with the same
    /// `group.instance.id`): this client can do nothing more, and starting again would only
    /// fence the other instance in turn. Exit, non-zero, for an operator or supervisor.
    #[error("fatal kafka error: {0}")]
    Fatal(String),
    /// The changelog topic is not compacted-only.
    #[error("{0}")]
    ChangelogPolicy(String),
    /// A partition's state cannot be rebuilt: the changelog lost records this instance needs
    /// (deleted or recreated). Not retried: an operator must rebuild it (see the message).
    #[error("partition {partition}'s state cannot be restored: {detail}")]
    StateLost {
        /// The partition.
        partition: i32,
        /// What was lost and what to do.
        detail: String,
    },
    /// Restoring a partition from the changelog failed.
    #[error("restoring partition {partition}: {detail}")]
    Restore {
        /// The partition.
        partition: i32,
        /// What went wrong.
        detail: String,
    },
}

impl ProcessorError {
    /// A bounded label for the restarts metric.
    pub fn kind(&self) -> &'static str {
        match self {
            ProcessorError::Kafka { .. } => "kafka",
            ProcessorError::Store(_) => "store",
            ProcessorError::Encode { .. } => "encode",
            ProcessorError::Topics(_) => "topics",
            ProcessorError::Fatal(_) => "fatal",
            ProcessorError::StateLost { .. } => "state_lost",
            ProcessorError::ChangelogPolicy(_) => "changelog_policy",
            ProcessorError::Restore { .. } => "restore",
        }
    }

    /// Whether starting again can help (topic layout problems and fatal client errors need an
    /// operator).
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            ProcessorError::Topics(_)
                | ProcessorError::Fatal(_)
                | ProcessorError::StateLost { .. }
                | ProcessorError::ChangelogPolicy(_)
        )
    }
}

fn kafka(op: &'static str) -> impl FnOnce(KafkaError) -> ProcessorError {
    move |source| ProcessorError::Kafka { op, source }
}

/// What the HTTP server sees of the processor.
#[derive(Default)]
pub struct Shared {
    /// Assigned partitions are restored and the loop runs.
    pub ready: AtomicBool,
    /// The processing thread is running (or restarting after an error).
    pub alive: AtomicBool,
    /// The stores of the partitions this instance owns, for availability reads.
    pub stores: RwLock<BTreeMap<i32, PartitionStore>>,
    /// Input records committed since start (progress for the demo and operators).
    pub committed_records: std::sync::atomic::AtomicU64,
}

/// What a topic carries.
#[derive(Clone, Copy, Debug)]
enum TopicKind {
    Events(SysId),
    Commands,
    Ticks,
}

struct Entry {
    state: KeyState,
    /// The timer index entry RocksDB holds for this key.
    stored_timer: Option<Millis>,
    dirty: bool,
}

/// One partition number's state across all input topics.
struct Task {
    partition: i32,
    store: PartitionStore,
    meta: Meta,
    cache: HashMap<Vec<u8>, Entry>,
    dirty: Vec<Vec<u8>>,
    /// In-memory timer index: (deadline, key), mirrors the store's `timers` column family
    /// plus changes not yet written.
    timers: BTreeSet<(Millis, Vec<u8>)>,
    /// Next offsets changed in this batch.
    positions: BTreeMap<String, i64>,
    stream_time_dirty: bool,
    /// Open incidents and rate-limit counters of this partition's alerts.
    incidents: IncidentBook,
    incidents_dirty: bool,
    last_input: Instant,
    last_tick: Instant,
    /// Fetched records not yet folded, merged in timestamp order.
    group: PartitionGroup,
    /// Per input topic (in `Engine::order`): the offset after the last record fetched, or
    /// the committed offset at assignment (-1 when neither is known).
    fetched: Vec<i64>,
    /// Per input topic: fetching is paused because its buffer is full.
    paused: Vec<bool>,
    /// Its state is still being restored from the changelog: its inputs are paused and it
    /// folds nothing.
    restoring: bool,
}

impl Task {
    fn load(&mut self, key: &[u8]) -> Result<&mut Entry, ProcessorError> {
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
        // Inserted above when absent.
        self.cache.get_mut(key).ok_or(ProcessorError::Restore {
            partition: self.partition,
            detail: "cache entry vanished".into(),
        })
    }
}

/// Collects the offsets of delivered changelog records so the store can record where the
/// changelog stands.
struct DeliveryContext {
    changelog: String,
    offsets: Mutex<HashMap<i32, i64>>,
    failed: Mutex<Option<KafkaError>>,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(msg) => {
                if msg.topic() == self.changelog {
                    let mut o = lock(&self.offsets);
                    let e = o.entry(msg.partition()).or_insert(-1);
                    *e = (*e).max(msg.offset());
                }
            }
            Err((e, _)) => {
                lock(&self.failed).get_or_insert_with(|| e.clone());
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep going with it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The processor's state, shared between the poll loop and the rebalance callbacks (which
/// run inside `poll`, when the loop does not hold the lock).
/// What one batch did, recorded in the metrics only when the batch commits (an aborted batch
/// is read again and would count twice). Keyed without strings, so counting allocates
/// nothing per record; the labels are formatted once per commit.
#[derive(Default)]
struct Tally {
    /// (input topic index in `Engine::order`, outcome).
    inputs: BTreeMap<(usize, &'static str), u64>,
    /// (input topic index, reason code).
    dead_letters: BTreeMap<(usize, &'static str), u64>,
    propagations: BTreeMap<SysId, u64>,
    alerts: BTreeMap<(AlertKind, SysId), u64>,
    suppressed: BTreeMap<(AlertKind, SysId), u64>,
    decisions: BTreeMap<&'static str, u64>,
    incidents: BTreeMap<(AlertKind, IncidentStatus), u64>,
    actions: BTreeMap<(SysId, &'static str), u64>,
    /// (origin, system, latency ms, within the window).
    convergences: Vec<(SysId, SysId, i64, bool)>,
}

impl Tally {
    fn count<K: Ord>(map: &mut BTreeMap<K, u64>, key: K) {
        *map.entry(key).or_default() += 1;
    }

    /// Records the batch in the metrics and empties the tally.
    fn record(&mut self, model: &Model, order: &[String]) {
        let topic = |i: usize| order.get(i).cloned().unwrap_or_default();
        for ((t, outcome), n) in std::mem::take(&mut self.inputs) {
            metrics::counter!(m::INPUT_RECORDS, "topic" => topic(t), "outcome" => outcome)
                .increment(n);
        }
        for ((t, reason), n) in std::mem::take(&mut self.dead_letters) {
            metrics::counter!(m::DEAD_LETTERS, "topic" => topic(t), "reason" => reason)
                .increment(n);
        }
        for (sys, n) in std::mem::take(&mut self.propagations) {
            metrics::counter!(m::PROPAGATIONS, "system" => model.name(sys).to_owned()).increment(n);
        }
        for ((kind, sys), n) in std::mem::take(&mut self.alerts) {
            metrics::counter!(m::ALERTS, "kind" => kind.as_str(), "system" => model.name(sys).to_owned())
                .increment(n);
        }
        for ((kind, sys), n) in std::mem::take(&mut self.suppressed) {
            metrics::counter!(m::ALERTS_SUPPRESSED, "kind" => kind.as_str(), "system" => model.name(sys).to_owned())
                .increment(n);
        }
        for (decision, n) in std::mem::take(&mut self.decisions) {
            metrics::counter!(m::DECISIONS, "decision" => decision).increment(n);
        }
        for ((kind, status), n) in std::mem::take(&mut self.incidents) {
            metrics::counter!(m::INCIDENTS, "kind" => kind.as_str(), "status" => status.as_str())
                .increment(n);
        }
        for ((sys, outcome), n) in std::mem::take(&mut self.actions) {
            metrics::counter!(m::ACTIONS, "system" => model.name(sys).to_owned(), "outcome" => outcome)
                .increment(n);
        }
        for (origin, sys, latency_ms, within) in self.convergences.drain(..) {
            let handoff = format!("{}->{}", model.name(origin), model.name(sys));
            metrics::histogram!(m::HANDOFF_LATENCY, "handoff" => handoff.clone())
                .record(latency_ms as f64 / 1000.0);
            metrics::counter!(m::HANDOFF_CONVERGENCES, "handoff" => handoff, "within" => if within { "true" } else { "false" })
                .increment(1);
        }
    }

    /// Forgets the batch (it was aborted).
    fn clear(&mut self) {
        *self = Tally::default();
    }
}

struct Engine {
    cfg: Arc<Config>,
    model: Model,
    codec: AnyCodec,
    rt: Handle,
    producer: BaseProducer<DeliveryContext>,
    /// What each input topic carries, and its index in `order`.
    topics: HashMap<String, (TopicKind, usize)>,
    /// The input topics sorted by name: the tie-break order of the timestamp merge.
    order: Vec<String>,
    tasks: BTreeMap<i32, Task>,
    /// A transaction is open: outputs are sent into it as they are produced, so the network
    /// work overlaps processing and the commit only flushes, adds the offsets and ends it.
    in_txn: bool,
    batch_records: usize,
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
    /// The start-up topic checks (they run beside the loop: a broker without DescribeConfigs
    /// answers only after its timeout): the dead-letter limit, or a changelog problem.
    checks: std::sync::mpsc::Receiver<Result<usize, ProcessorError>>,
    shared: Arc<Shared>,
}

/// The consumer's context: routes rebalance callbacks to the engine.
struct ConsumerCtx {
    engine: Arc<Mutex<Engine>>,
    error: Mutex<Option<ProcessorError>>,
    /// Per input partition, from librdkafka's statistics: the low watermark, the consumer's
    /// position (stepped over transaction markers) and the last stable offset at the broker.
    /// No network call: librdkafka learns them from its fetches.
    offsets: Mutex<HashMap<(String, i32), BrokerOffsets>>,
}

/// One input partition's offsets as librdkafka's statistics report them.
#[derive(Clone, Copy, Debug)]
struct BrokerOffsets {
    /// The low watermark.
    low: i64,
    /// The offset after the last record passed to the application (-1001 when none).
    position: i64,
    /// The last stable offset (the high watermark for non-transactional data).
    last_stable: i64,
}

impl ClientContext for ConsumerCtx {
    fn stats(&self, statistics: rdkafka::Statistics) {
        let mut offsets = lock(&self.offsets);
        for (name, topic) in &statistics.topics {
            for (p, part) in &topic.partitions {
                if *p >= 0 {
                    offsets.insert(
                        (name.clone(), *p),
                        BrokerOffsets {
                            low: part.lo_offset,
                            position: part.app_offset,
                            last_stable: part.ls_offset,
                        },
                    );
                }
            }
        }
    }
}

impl ConsumerContext for ConsumerCtx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let mut e = lock(&self.engine);
            // Drain: what was processed for these partitions is committed before another
            // instance can take them over.
            if let Err(err) = e.commit(consumer) {
                warn!(error = %err, "commit on revoke failed; the batch will be reprocessed");
                lock(&self.error).get_or_insert(err);
            }
            e.close(tpl);
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let mut e = lock(&self.engine);
            if let Err(err) = e.open(consumer, tpl) {
                warn!(error = %err, "opening assigned partitions failed");
                lock(&self.error).get_or_insert(err);
            }
        }
    }
}

/// Wall-clock time in ms since the epoch.
pub fn wall_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The librdkafka settings every client shares: bootstrap servers and the pass-through
/// options (security, tuning).
pub fn base_client_config(cfg: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.kafka.bootstrap_servers);
    for (k, v) in &cfg.kafka.librdkafka_options {
        c.set(k, v);
    }
    c
}

/// The transactional id of this instance.
pub fn transactional_id(cfg: &Config) -> String {
    format!("{}-{}", cfg.kafka.group_id, cfg.kafka.instance_id)
}

/// Runs the processor on the calling thread until `stop` is set, restarting after
/// recoverable errors with backoff.
///
/// # Errors
/// A non-retryable [`ProcessorError`] (topic layout).
pub fn run_blocking(
    cfg: Arc<Config>,
    codec: AnyCodec,
    rt: Handle,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
) -> Result<(), ProcessorError> {
    shared.alive.store(true, Ordering::SeqCst);
    let mut backoff = Duration::from_millis(200);
    let started = Instant::now();
    let result = loop {
        match run_once(&cfg, &codec, &rt, &shared, &stop) {
            Ok(()) => break Ok(()),
            // Topics created just before start take a moment to show in metadata; a layout
            // that is still wrong after a minute needs an operator.
            Err(e)
                if (e.is_retryable()
                    || (matches!(e, ProcessorError::Topics(_))
                        && started.elapsed() < TOPIC_GRACE))
                    && !stop.load(Ordering::SeqCst) =>
            {
                metrics::counter!(m::RESTARTS, "error_type" => e.kind()).increment(1);
                warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "processor restarting");
                shared.ready.store(false, Ordering::SeqCst);
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            // Stopping, and the last batch failed with an error a restart would get past: it
            // was aborted, nothing of it is committed, and the next start reads it again. That
            // is a clean stop, not a failure.
            Err(e) if e.is_retryable() && stop.load(Ordering::SeqCst) => {
                warn!(error = %e, "stopped; the last batch was aborted and will be read again on the next start");
                break Ok(());
            }
            Err(e) => break Err(e),
        }
    };
    shared.ready.store(false, Ordering::SeqCst);
    shared.alive.store(false, Ordering::SeqCst);
    result
}

fn run_once(
    cfg: &Arc<Config>,
    codec: &AnyCodec,
    rt: &Handle,
    shared: &Arc<Shared>,
    stop: &Arc<AtomicBool>,
) -> Result<(), ProcessorError> {
    let topics = check_topics(cfg)?;
    let producer: BaseProducer<DeliveryContext> = {
        let mut c = base_client_config(cfg);
        c.set("transactional.id", transactional_id(cfg))
            .set(
                "transaction.timeout.ms",
                cfg.kafka.transaction_timeout_ms.to_string(),
            )
            .set("linger.ms", "5");
        c.create_with_context(DeliveryContext {
            changelog: cfg.topics.changelog.clone(),
            offsets: Mutex::new(HashMap::new()),
            failed: Mutex::new(None),
        })
        .map_err(kafka("create producer"))?
    };
    // Fences a previous incarnation with the same transactional id and aborts its open
    // transaction, so read_committed readers are not held up.
    producer
        .init_transactions(Duration::from_secs(60))
        .map_err(kafka("init_transactions"))?;

    let mut order: Vec<String> = topics.keys().cloned().collect();
    order.sort();
    let engine = Arc::new(Mutex::new(Engine {
        cfg: Arc::clone(cfg),
        model: cfg.model.clone(),
        codec: codec.clone(),
        rt: rt.clone(),
        producer,
        topics: order
            .iter()
            .enumerate()
            .filter_map(|(i, t)| topics.get(t).map(|k| (t.clone(), (*k, i))))
            .collect(),
        order: order.clone(),
        tasks: BTreeMap::new(),
        in_txn: false,
        batch_records: 0,
        drains: 0,
        incomplete: BTreeSet::new(),
        restorer: Restorer::new(Arc::clone(cfg)),
        out: Vec::with_capacity(64),
        reports: Vec::new(),
        tally: Tally::default(),
        dead_letter_max_bytes: None,
        checks: {
            let (tx, rx) = std::sync::mpsc::channel();
            let (cfg, rt) = (Arc::clone(cfg), rt.clone());
            std::thread::Builder::new()
                .name("breakwater-topic-checks".into())
                .spawn(move || {
                    let _ = tx.send(topic_checks(&cfg, &rt));
                })
                .map_err(|e| ProcessorError::Topics(format!("starting the topic checks: {e}")))?;
            rx
        },
        shared: Arc::clone(shared),
    }));
    let consumer: BaseConsumer<ConsumerCtx> = {
        let mut c = base_client_config(cfg);
        c.set("group.id", &cfg.kafka.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest")
            // Range assigns partition p of every co-partitioned topic to the same member.
            .set("partition.assignment.strategy", "range");
        // Static membership: a restarted instance takes its partitions back at once instead
        // of waiting out the old member's session.
        if cfg.kafka.static_membership {
            c.set("group.instance.id", &cfg.kafka.instance_id);
        }
        // Statistics every 100 ms carry each partition's last stable offset, which tells the
        // timestamp merge whether an empty partition is caught up (unless the operator set
        // another interval).
        if !cfg
            .kafka
            .librdkafka_options
            .contains_key("statistics.interval.ms")
        {
            c.set("statistics.interval.ms", "100");
        }
        c.create_with_context(ConsumerCtx {
            engine: Arc::clone(&engine),
            error: Mutex::new(None),
            offsets: Mutex::new(HashMap::new()),
        })
        .map_err(kafka("create consumer"))?
    };
    let names: Vec<&str> = topics.keys().map(String::as_str).collect();
    consumer.subscribe(&names).map_err(kafka("subscribe"))?;
    info!(topics = ?names, group = %cfg.kafka.group_id, "processor started");

    let commit_every = Duration::from_millis(cfg.processor.commit_interval_ms);
    let tick_every = Duration::from_millis(cfg.processor.tick_interval_ms);
    let mut last_commit = Instant::now();
    let result = loop {
        if stop.load(Ordering::SeqCst) {
            break Ok(());
        }
        // Poll a burst without holding the engine (rebalance callbacks run inside poll and
        // take it), buffering each record in its task; then fold what the merge allows.
        let mut timeout = Duration::from_millis(20);
        let mut failed = None;
        for _ in 0..POLL_BURST {
            let msg = consumer.poll(timeout);
            if let Some(err) = lock(&consumer.context().error).take() {
                failed = Some(err);
                break;
            }
            match msg {
                Some(Ok(msg)) => lock(&engine).buffer(msg.detach()),
                Some(Err(err)) => {
                    // Consumer-level errors (broker down, ...) are reported here; librdkafka
                    // retries those on its own, so log and go on. A fatal one (fenced by a
                    // member with the same group.instance.id, ...) ends this process.
                    if let Some((code, reason)) = consumer.client().fatal_error() {
                        failed = Some(ProcessorError::Fatal(format!(
                            "consumer: {code:?}: {reason}"
                        )));
                    } else if matches!(err, KafkaError::MessageConsumptionFatal(_)) {
                        failed = Some(ProcessorError::Fatal(format!("consumer: {err}")));
                    } else {
                        warn!(error = %err, "consumer error");
                    }
                    break;
                }
                None => break,
            }
            timeout = Duration::ZERO;
        }
        if let Some(err) = failed {
            break Err(err);
        }
        if let Err(err) = lock(&engine).poll_checks() {
            break Err(err);
        }
        // A producer that librdkafka declared fatal (fenced: its transaction was aborted by
        // the coordinator after a pause, or another holder of the transactional id started)
        // cannot go on; a new incarnation with a new producer can (Kafka Streams' "task
        // migrated"). A duplicate instance id is caught by the consumer's fatal error instead.
        if let Some((code, reason)) = lock(&engine).producer.client().fatal_error() {
            warn!(
                reason,
                "the producer failed fatally; starting a new incarnation"
            );
            break Err(ProcessorError::Kafka {
                op: "producer",
                source: KafkaError::Global(code),
            });
        }
        let mut e = lock(&engine);
        // Restore newly assigned partitions a step at a time, between polls.
        if let Err(err) = e.restore_step(&consumer, commit_every) {
            break Err(err);
        }
        // Fold for at most one commit interval: a transaction must not outlive
        // `transaction_timeout_ms`, however large the backlog, and polling must not starve
        // folding.
        let due = Instant::now() + commit_every;
        if let Err(err) = e.drain(&consumer, due) {
            break Err(err);
        }
        if e.batch_records >= cfg.processor.max_batch_records
            || last_commit.elapsed() >= commit_every
        {
            if let Err(err) = e
                .tick_idle(&consumer, tick_every)
                .and_then(|()| e.commit(&consumer))
            {
                break Err(err);
            }
            last_commit = Instant::now();
        }
    };
    // Stopping: commit what was processed. Failing: nothing of the open batch may be
    // committed (its outputs may be lost with the aborted transaction while its state and
    // offsets would not be); abort it, and the next incarnation re-reads the batch from the
    // committed offsets over the state as of the last commit. Then close the partitions and
    // leave the group.
    let final_commit = match &result {
        Ok(()) => lock(&engine).commit(&consumer),
        Err(_) => {
            lock(&engine).abort();
            Ok(())
        }
    };
    {
        let mut e = lock(&engine);
        let all: Vec<i32> = e.tasks.keys().copied().collect();
        for p in all {
            e.close_partition(p);
        }
    }
    consumer.unsubscribe();
    drop(consumer);
    shared.ready.store(false, Ordering::SeqCst);
    result.and(final_commit)
}

/// The start-up topic checks, in one DescribeConfigs round trip: the changelog's cleanup
/// policy ([`check_changelog`]) and the dead-letter topic's record limit
/// ([`dead_letter_limit`]). Without DescribeConfigs (an ACL, librdkafka's mock cluster) the
/// policy is not checked and the limit is the producer's, each said in a warning.
fn topic_checks(cfg: &Config, rt: &Handle) -> Result<usize, ProcessorError> {
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    let (changelog, dead_letter) = (
        cfg.topics.changelog.as_str(),
        cfg.topics.dead_letter.as_str(),
    );
    let described: Result<Vec<_>, ProcessorError> = (|| {
        let admin: AdminClient<rdkafka::client::DefaultClientContext> = base_client_config(cfg)
            .create()
            .map_err(kafka("create admin client"))?;
        let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
        let topics = [
            ResourceSpecifier::Topic(changelog),
            ResourceSpecifier::Topic(dead_letter),
        ];
        rt.block_on(admin.describe_configs(&topics, &opts))
            .map_err(kafka("describe topic configs"))
    })();
    let entry = |topic: &str, name: &str| -> Option<String> {
        described.as_ref().ok()?.iter().filter_map(|r| r.as_ref().ok()).find_map(|r| {
            let of_topic = matches!(&r.specifier, rdkafka::admin::OwnedResourceSpecifier::Topic(t) if t == topic);
            r.entries
                .iter()
                .find(|e| of_topic && e.name == name)
                .and_then(|e| e.value.clone())
        })
    };
    if let Err(e) = &described {
        warn!(error = %e, "cannot read the changelog's and dead-letter topic's configs; cleanup.policy not checked, dead-letter limit assumed to be the producer's");
    }
    check_changelog(changelog, entry(changelog, "cleanup.policy"))?;
    Ok(dead_letter_limit(
        cfg,
        entry(dead_letter, "max.message.bytes"),
    ))
}

/// The largest record the dead-letter topic takes: its `max.message.bytes` (as described),
/// capped by the producer's `message.max.bytes`.
fn dead_letter_limit(cfg: &Config, topic_max: Option<String>) -> usize {
    let producer_max = cfg
        .kafka
        .librdkafka_options
        .get("message.max.bytes")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1_000_000);
    // Unknown: the broker's default (1048588), which the producer's own limit is below.
    topic_max
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(producer_max, |m| m.min(producer_max))
}

/// The changelog must be compacted and nothing else: with `delete` (or `compact,delete`) in
/// its cleanup policy, retention removes the last state of every key that has not changed
/// for `retention.ms`, and a restore would silently rebuild a partition without them.
fn check_changelog(topic: &str, policy: Option<String>) -> Result<(), ProcessorError> {
    let Some(policy) = policy else {
        return Ok(());
    };
    let parts: Vec<&str> = policy.split(',').map(str::trim).collect();
    if parts.contains(&"compact") && !parts.contains(&"delete") {
        return Ok(());
    }
    Err(ProcessorError::ChangelogPolicy(format!(
        "the changelog topic {topic:?} has cleanup.policy={policy:?}; it must be \"compact\" \
         (with delete, retention drops the state of keys that have not changed for \
         retention.ms and a restore would miss them): kafka-configs --alter --entity-type \
         topics --entity-name {topic} --add-config cleanup.policy=compact"
    )))
}

/// Checks the input topics exist and are co-partitioned, and that Breakwater's own topics
/// have at least as many partitions. Returns what each input topic carries.
fn check_topics(cfg: &Config) -> Result<HashMap<String, TopicKind>, ProcessorError> {
    let probe: BaseConsumer = base_client_config(cfg)
        .set("allow.auto.create.topics", "false")
        .create()
        .map_err(kafka("create metadata client"))?;
    let md = probe
        .fetch_metadata(None, Duration::from_secs(30))
        .map_err(kafka("fetch metadata"))?;
    let count = |t: &str| {
        md.topics()
            .iter()
            .find(|mt| mt.name() == t && mt.error().is_none())
            .map(|mt| mt.partitions().len())
    };
    let mut inputs: Vec<(String, TopicKind)> = cfg
        .model
        .systems()
        .iter()
        .map(|s| (s.input_topic.clone(), TopicKind::Events(s.id)))
        .collect();
    inputs.push((cfg.topics.reservations.clone(), TopicKind::Commands));
    inputs.push((cfg.topics.ticks.clone(), TopicKind::Ticks));
    let mut problems = Vec::new();
    let mut partitions = None;
    for (t, _) in &inputs {
        match count(t) {
            None => problems.push(format!("input topic {t:?} does not exist")),
            Some(n) => match partitions {
                None => partitions = Some((n, t.clone())),
                Some((p, ref first)) if p != n => problems.push(format!(
                    "input topics are not co-partitioned: {t:?} has {n} partitions, {first:?} has {p}"
                )),
                Some(_) => {}
            },
        }
    }
    if let Some((n, _)) = partitions {
        let mut outputs: Vec<&str> = cfg
            .model
            .systems()
            .iter()
            .map(|s| s.propagation_topic.as_str())
            .collect();
        outputs.extend([
            cfg.topics.alerts.as_str(),
            cfg.topics.decisions.as_str(),
            cfg.topics.incidents.as_str(),
            cfg.topics.dead_letter.as_str(),
            cfg.topics.changelog.as_str(),
        ]);
        for t in outputs {
            match count(t) {
                None => problems.push(format!("output topic {t:?} does not exist")),
                Some(c) if c < n => problems.push(format!(
                    "output topic {t:?} has {c} partitions; it needs at least {n} (one per input partition)"
                )),
                Some(_) => {}
            }
        }
    }
    if problems.is_empty() {
        Ok(inputs.into_iter().collect())
    } else {
        Err(ProcessorError::Topics(format!(
            "{} (create them with `breakwater topics --config FILE`)",
            problems.join("; ")
        )))
    }
}

impl Engine {
    /// Buffers a fetched record in its task, to be folded in timestamp order by
    /// [`Engine::drain`].
    fn buffer(&mut self, msg: OwnedMessage) {
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
    fn drain(
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
        task.positions.insert(topic.to_owned(), msg.offset() + 1);
        task.last_input = Instant::now();
        self.batch_records += 1;
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
                let now = self.advance(partition, ts)?;
                let _ = now;
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
        let now = ts.map_or(task.meta.stream_time, |t| t.max(task.meta.stream_time));
        if now != task.meta.stream_time {
            task.meta.stream_time = now;
            task.stream_time_dirty = true;
        }
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

    fn fold<M: Message>(
        &mut self,
        msg: &M,
        key: &str,
        sku: &str,
        location: &str,
        input: Input<'_>,
        now: Millis,
    ) -> Result<(), ProcessorError> {
        let topic = msg.topic();
        let partition = msg.partition();
        let Some(task) = self.tasks.get_mut(&partition) else {
            return Ok(());
        };
        let entry = task.load(key.as_bytes())?;
        let before = entry.state.next_timer();
        self.out.clear();
        let result = apply(&self.model, &mut entry.state, input, now, &mut self.out);
        let after = entry.state.next_timer();
        match result {
            Ok(outcome) => {
                let label = match outcome {
                    Outcome::Applied => "applied",
                    Outcome::Duplicate => "duplicate",
                    Outcome::Superseded => "superseded",
                };
                // Field access, not `topic_index`: the key's entry is borrowed from the task.
                let ti = self.topics.get(topic).map_or(usize::MAX, |t| t.1);
                Tally::count(&mut self.tally.inputs, (ti, label));
                // Every outcome may have changed the state (a superseded event is recorded
                // as seen, a duplicate may refresh the key's class): persist them all.
                if !entry.dirty {
                    entry.dirty = true;
                    task.dirty.push(key.as_bytes().to_vec());
                }
                if before != after {
                    if let Some(t) = before {
                        task.timers.remove(&(t, key.as_bytes().to_vec()));
                    }
                    if let Some(t) = after {
                        task.timers.insert((t, key.as_bytes().to_vec()));
                    }
                }
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
            let Some((deadline, key)) = task.timers.first().cloned() else {
                return Ok(());
            };
            if deadline > now {
                return Ok(());
            }
            task.timers.remove(&(deadline, key.clone()));
            let entry = task.load(&key)?;
            self.out.clear();
            // Timers never reject.
            let _ = apply(
                &self.model,
                &mut entry.state,
                Input::Timer,
                deadline,
                &mut self.out,
            );
            let next = entry.state.next_timer();
            let newly_dirty = !entry.dirty;
            entry.dirty = true;
            if let Some(t) = next {
                task.timers.insert((t, key.clone()));
            }
            if newly_dirty {
                task.dirty.push(key.clone());
            }
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
            self.begin()?;
            send(
                &self.producer,
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
            self.begin()?;
            send(
                &self.producer,
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

    /// Sends `msg` unchanged to the dead-letter topic with the reason in headers. The offset
    /// still advances: the record is handled, not lost.
    fn dead_letter<M: Message>(
        &mut self,
        msg: &M,
        code: &'static str,
        reason: String,
    ) -> Result<(), ProcessorError> {
        let topic = msg.topic();
        let ti = self.topic_index(topic);
        Tally::count(&mut self.tally.inputs, (ti, "dead_letter"));
        Tally::count(&mut self.tally.dead_letters, (ti, code));
        debug!(topic, partition = msg.partition(), offset = msg.offset(), code, %reason, "dead-lettered");
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: dlq_headers::REASON_CODE,
                value: Some(code),
            })
            .insert(Header {
                key: dlq_headers::REASON,
                value: Some(&reason),
            })
            .insert(Header {
                key: dlq_headers::TOPIC,
                value: Some(topic),
            })
            .insert(Header {
                key: dlq_headers::PARTITION,
                value: Some(&msg.partition().to_string()),
            })
            .insert(Header {
                key: dlq_headers::OFFSET,
                value: Some(&msg.offset().to_string()),
            });
        let ts = msg.timestamp().to_millis();
        if let Some(t) = ts {
            headers = headers.insert(Header {
                key: dlq_headers::TIMESTAMP,
                value: Some(&t.to_string()),
            });
        }
        // Keep the record's own headers after ours.
        if let Some(h) = msg.headers() {
            for i in 0..h.count() {
                let hd = h.get(i);
                headers = headers.insert(Header {
                    key: hd.key,
                    value: hd.value,
                });
            }
        }
        // A record the dead-letter topic cannot take would abort every transaction it is in,
        // for ever: cut its value to fit and say so (the whole record stays at its source).
        let max = self.dead_letter_max()?;
        let key = msg.key().unwrap_or_default();
        let mut payload = msg.payload().unwrap_or_default();
        let header_bytes: usize = (0..headers.count())
            .map(|i| {
                let h = headers.get(i);
                h.key.len() + h.value.map_or(0, <[u8]>::len) + 10
            })
            .sum();
        let room = max.saturating_sub(DLQ_FRAMING + key.len() + header_bytes + 32);
        if payload.len() > room {
            warn!(
                topic,
                partition = msg.partition(),
                offset = msg.offset(),
                bytes = payload.len(),
                room,
                "dead-lettered record too large for the dead-letter topic; its value is cut"
            );
            headers = headers.insert(Header {
                key: dlq_headers::TRUNCATED_FROM,
                value: Some(&payload.len().to_string()),
            });
            payload = &payload[..room];
        }
        // A record without a timestamp keeps the partition's stream time.
        let ts = ts.unwrap_or_else(|| {
            self.tasks
                .get(&msg.partition())
                .map_or(0, |t| t.meta.stream_time)
        });
        self.begin()?;
        send(
            &self.producer,
            BaseRecord::to(&self.cfg.topics.dead_letter)
                .partition(msg.partition())
                .key(key)
                .payload(payload)
                .timestamp(ts)
                .headers(headers),
        )
    }

    /// Sends a clock tick for every partition that has had no input for `every` and has
    /// nothing unread, so its timers fire on time. The tick is an input like any other:
    /// replay sees it too. A partition with records buffered, or with any input partition
    /// not known (from the broker's statistics) to be read to its end, is not idle: a
    /// wall-clock tick would put stream time ahead of its backlog.
    fn tick_idle(
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
                !t.restoring
                    && t.group.buffered() == 0
                    && !t.group.waiting()
                    && t.last_input.elapsed() >= every
                    && t.last_tick.elapsed() >= every
                    && order.iter().enumerate().all(|(ti, topic)| {
                        caught_up(stats.get(&(topic.clone(), **p)).copied(), t.fetched[ti])
                    })
            })
            .map(|(p, t)| {
                t.last_tick = Instant::now();
                *p
            })
            .collect();
        drop(stats);
        for p in idle {
            self.begin()?;
            send(
                &self.producer,
                BaseRecord::to(&self.cfg.topics.ticks)
                    .partition(p)
                    .key(&b"tick"[..])
                    .payload(&b"tick"[..])
                    .timestamp(now),
            )?;
        }
        for (p, task) in &self.tasks {
            metrics::gauge!(m::STREAM_LAG, "partition" => p.to_string())
                .set((now - task.meta.stream_time) as f64 / 1000.0);
        }
        Ok(())
    }

    /// The index of input topic `topic` in `order` (`usize::MAX` if it is not one).
    fn topic_index(&self, topic: &str) -> usize {
        self.topics.get(topic).map_or(usize::MAX, |t| t.1)
    }

    /// The start-up checks' verdict, if it has arrived (without waiting).
    fn poll_checks(&mut self) -> Result<(), ProcessorError> {
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

    /// Abandons the open batch: aborts its transaction (if any) and forgets every change not
    /// committed, so nothing of it can reach Kafka or RocksDB.
    fn abort(&mut self) {
        if self.in_txn {
            if let Err(e) = self.producer.abort_transaction(Duration::from_secs(30)) {
                // A fenced or failed producer cannot abort; the broker aborts the transaction
                // when it times out or when the next incarnation initialises the same id.
                warn!(error = %e, "abort_transaction failed");
            }
            self.in_txn = false;
        }
        metrics::counter!(m::COMMITS, "outcome" => "aborted").increment(1);
        self.tally.clear();
        for task in self.tasks.values_mut() {
            task.cache.clear();
            task.dirty.clear();
            task.positions.clear();
        }
        self.batch_records = 0;
    }

    /// Opens a transaction if none is open.
    fn begin(&mut self) -> Result<(), ProcessorError> {
        if !self.in_txn {
            self.producer
                .begin_transaction()
                .map_err(kafka("begin_transaction"))?;
            self.in_txn = true;
        }
        Ok(())
    }

    /// Commits everything since the last commit: one Kafka transaction, then one RocksDB
    /// batch per task.
    fn commit(&mut self, consumer: &BaseConsumer<ConsumerCtx>) -> Result<(), ProcessorError> {
        let has_positions = self.tasks.values().any(|t| !t.positions.is_empty());
        if !self.in_txn && !has_positions {
            return Ok(());
        }
        let started = Instant::now();
        let timeout = Duration::from_secs(30);
        let result = self.commit_kafka(consumer, timeout);
        if let Err(e) = result {
            metrics::counter!(m::COMMITS, "outcome" => "aborted").increment(1);
            if self.in_txn {
                let _ = self.producer.abort_transaction(timeout);
                self.in_txn = false;
            }
            return Err(e);
        }
        let delivered: HashMap<i32, i64> =
            std::mem::take(&mut *lock(&self.producer.context().offsets));
        for (p, task) in &mut self.tasks {
            // A restoring task's store is the restorer's until it finishes.
            if task.restoring {
                continue;
            }
            let mut batch = Batch::new();
            for key in task.dirty.drain(..) {
                if let Some(entry) = task.cache.get_mut(&key) {
                    let timer = entry.state.next_timer();
                    batch.put_state(
                        &task.store,
                        &key,
                        &encode_state(&entry.state),
                        entry.stored_timer,
                        timer,
                    );
                    entry.stored_timer = timer;
                    entry.dirty = false;
                }
            }
            for (topic, next) in std::mem::take(&mut task.positions) {
                task.meta.set_position(&topic, next);
            }
            if let Some(o) = delivered.get(p) {
                task.meta.changelog_next = task.meta.changelog_next.max(o + 1);
            }
            task.stream_time_dirty = false;
            if task.incidents_dirty {
                batch.put_incidents(&task.store, &encode_incidents(&task.incidents));
                task.incidents_dirty = false;
            }
            batch.put_meta(&task.store, &task.meta);
            task.store.write(batch)?;
            if task.cache.len() > self.cfg.processor.max_cached_keys {
                task.cache.clear();
            }
        }
        metrics::counter!(m::COMMITS, "outcome" => "committed").increment(1);
        self.tally.record(&self.model, &self.order);
        self.shared
            .committed_records
            .fetch_add(self.batch_records as u64, Ordering::SeqCst);
        metrics::histogram!(m::COMMIT_DURATION).record(started.elapsed().as_secs_f64());
        metrics::histogram!(m::COMMIT_RECORDS).record(self.batch_records as f64);
        self.batch_records = 0;
        Ok(())
    }

    fn commit_kafka(
        &mut self,
        consumer: &BaseConsumer<ConsumerCtx>,
        timeout: Duration,
    ) -> Result<(), ProcessorError> {
        self.begin()?;
        // One changelog record per changed key, and the stream time when it moved.
        let changelog = self.cfg.topics.changelog.clone();
        let mut stream_times = Vec::new();
        for (p, task) in &self.tasks {
            for key in &task.dirty {
                if let Some(entry) = task.cache.get(key) {
                    let value = encode_state(&entry.state);
                    send(
                        &self.producer,
                        BaseRecord::to(&changelog)
                            .partition(*p)
                            .key(key.as_slice())
                            .payload(&value),
                    )?;
                }
            }
            if task.stream_time_dirty {
                stream_times.push((*p, task.meta.stream_time.to_be_bytes()));
            }
            if task.incidents_dirty {
                send(
                    &self.producer,
                    BaseRecord::to(&changelog)
                        .partition(*p)
                        .key(INCIDENTS_KEY)
                        .payload(&encode_incidents(&task.incidents)),
                )?;
            }
        }
        for (p, t) in &stream_times {
            send(
                &self.producer,
                BaseRecord::to(&changelog)
                    .partition(*p)
                    .key(STREAM_TIME_KEY)
                    .payload(&t[..]),
            )?;
        }
        flush(&self.producer, timeout)?;
        if let Some(e) = lock(&self.producer.context().failed).take() {
            return Err(ProcessorError::Kafka {
                op: "deliver",
                source: e,
            });
        }
        let mut offsets = TopicPartitionList::new();
        for (p, task) in &self.tasks {
            for (topic, next) in &task.positions {
                offsets
                    .add_partition_offset(topic, *p, Offset::Offset(*next))
                    .map_err(kafka("offsets"))?;
            }
        }
        // A batch that consumed nothing (only ticks written) still commits the offsets it
        // already had: the offset commit carries the group generation, so a zombie that lost
        // its partitions is fenced here instead of landing its ticks after the new owner's.
        if offsets.count() == 0 {
            for (p, task) in &self.tasks {
                for (topic, next) in &task.meta.positions {
                    offsets
                        .add_partition_offset(topic, *p, Offset::Offset(*next))
                        .map_err(kafka("offsets"))?;
                }
            }
        }
        if offsets.count() > 0 {
            let cgm = consumer.group_metadata().ok_or(ProcessorError::Kafka {
                op: "group_metadata",
                source: KafkaError::Canceled,
            })?;
            self.producer
                .send_offsets_to_transaction(&offsets, &cgm, timeout)
                .map_err(kafka("send_offsets_to_transaction"))?;
        }
        self.producer
            .commit_transaction(timeout)
            .map_err(kafka("commit_transaction"))?;
        self.in_txn = false;
        Ok(())
    }

    /// Opens, restores and starts the tasks of newly assigned partitions.
    fn open(
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
            let meta = ready.unwrap_or_default();
            if restoring {
                let mut tpl = TopicPartitionList::new();
                for t in &self.order {
                    tpl.add_partition_offset(t, p, Offset::Invalid)
                        .map_err(kafka("pause"))?;
                }
                consumer.pause(&tpl).map_err(kafka("pause"))?;
            }
            self.tasks.insert(
                p,
                Task {
                    partition: p,
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
                    group: PartitionGroup::new(self.order.len()),
                    fetched: self
                        .order
                        .iter()
                        .map(|t| {
                            committed
                                .find_partition(t, p)
                                .and_then(|e| e.offset().to_raw())
                                .filter(|o| *o >= 0)
                                .unwrap_or(-1)
                        })
                        .collect(),
                    paused: vec![false; self.order.len()],
                    restoring,
                },
            );
            if !restoring {
                let meta = self
                    .tasks
                    .get(&p)
                    .map(|t| t.meta.clone())
                    .unwrap_or_default();
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
    fn restore_step(
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
        task.timers = task
            .store
            .due_timers(Millis::MAX, usize::MAX)?
            .into_iter()
            .collect();
        task.incidents = task.store.incidents()?;
        task.meta = meta;
        let was_restoring = std::mem::replace(&mut task.restoring, false);
        lock_write(&self.shared.stores).insert(p, task.store.clone());
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
    fn close(&mut self, tpl: &TopicPartitionList) {
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
            info!(partition = p, "partition closed");
        }
    }
}

/// Whether an input partition with nothing buffered has nothing more at the broker, from
/// librdkafka's statistics (`lo_offset`, `app_offset`, `ls_offset`) and the offset after the
/// last record fetched (or committed). With no position at all the consumer starts at the low
/// watermark. Unknown (no statistics yet) counts as "not known to be caught up".
fn caught_up(stats: Option<BrokerOffsets>, fetched: i64) -> bool {
    match stats {
        Some(o) if o.last_stable >= 0 => {
            let pos = o.position.max(fetched);
            let pos = if pos < 0 { o.low } else { pos };
            pos >= o.last_stable
        }
        _ => false,
    }
}

fn lock_write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

/// Waits until every record sent so far is acknowledged and its delivery report handled.
///
/// rust-rdkafka's own `flush` polls in 100 ms slices and sits out the whole slice even when
/// the last acknowledgement arrives at once, which added 100 ms to every commit; this polls in
/// 1 ms slices.
fn flush(
    producer: &BaseProducer<DeliveryContext>,
    timeout: Duration,
) -> Result<(), ProcessorError> {
    let deadline = Instant::now() + timeout;
    // A flush with no time to wait still sends whatever is lingering at once.
    let _ = producer.flush(Duration::ZERO);
    while producer.in_flight_count() > 0 {
        if Instant::now() >= deadline {
            return Err(ProcessorError::Kafka {
                op: "flush",
                source: KafkaError::Flush(rdkafka::types::RDKafkaErrorCode::OperationTimedOut),
            });
        }
        producer.poll(Duration::from_millis(1));
    }
    Ok(())
}

/// Sends with back-pressure: when librdkafka's queue is full, serve delivery reports and try
/// again.
fn send(
    producer: &BaseProducer<DeliveryContext>,
    mut rec: BaseRecord<'_, [u8], [u8]>,
) -> Result<(), ProcessorError> {
    loop {
        match producer.send(rec) {
            Ok(()) => return Ok(()),
            Err((
                KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                r,
            )) => {
                producer.poll(Duration::from_millis(10));
                rec = r;
            }
            Err((e, _)) => {
                return Err(ProcessorError::Kafka {
                    op: "send",
                    source: e,
                })
            }
        }
    }
}

/// The message key must be the event's `sku|location`: anything else means the producer
/// keyed it differently, and it may sit in the wrong partition.
fn key_problem<M: Message>(msg: &M, key: &str) -> Option<String> {
    match msg.key() {
        Some(k) if k == key.as_bytes() => None,
        Some(k) => Some(format!(
            "message key {:?} is not the record's key {key:?} (sku|location)",
            String::from_utf8_lossy(k)
        )),
        None => Some(format!(
            "message has no key; expected {key:?} (sku|location)"
        )),
    }
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
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    /// Counter values by name and labels, as `name{k=v,...}`.
    fn counters(snapshotter: &metrics_util::debugging::Snapshotter) -> BTreeMap<String, u64> {
        snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter_map(|(key, _, _, value)| match value {
                DebugValue::Counter(n) => {
                    let k = key.key();
                    let labels: Vec<String> = k
                        .labels()
                        .map(|l| format!("{}={}", l.key(), l.value()))
                        .collect();
                    Some((format!("{}{{{}}}", k.name(), labels.join(",")), n))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_aborted_batch_counts_nothing_and_a_committed_one_counts_once() {
        let cfg = Config::from_toml(include_str!("../../../deploy/breakwater.toml")).unwrap();
        let order = vec!["inventory.wms.events".to_owned()];
        let wms = cfg.model.system_by_name("wms").unwrap().id;
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            let mut t = Tally::default();
            // A batch that aborts: an input, an alert, a propagation, a convergence.
            Tally::count(&mut t.inputs, (0, "applied"));
            Tally::count(&mut t.alerts, (AlertKind::Oversell, wms));
            Tally::count(&mut t.propagations, wms);
            t.convergences.push((wms, wms, 1_000, true));
            t.clear();
            t.record(&cfg.model, &order);
            // The batch read again, committed.
            Tally::count(&mut t.inputs, (0, "applied"));
            Tally::count(&mut t.inputs, (0, "applied"));
            Tally::count(&mut t.alerts, (AlertKind::Oversell, wms));
            t.record(&cfg.model, &order);
            // Recorded once: a second record adds nothing.
            t.record(&cfg.model, &order);
        });
        let c = counters(&snapshotter);
        assert_eq!(
            c.get("breakwater_input_records_total{topic=inventory.wms.events,outcome=applied}"),
            Some(&2),
            "{c:?}"
        );
        assert_eq!(
            c.get("breakwater_alerts_total{kind=OVERSELL,system=wms}"),
            Some(&1),
            "{c:?}"
        );
        assert!(
            !c.keys().any(|k| k.starts_with("breakwater_propagation")),
            "{c:?}"
        );
        assert!(
            !c.keys().any(|k| k.starts_with("breakwater_handoff")),
            "{c:?}"
        );
    }

    use super::*;

    fn at(low: i64, position: i64, last_stable: i64) -> Option<BrokerOffsets> {
        Some(BrokerOffsets {
            low,
            position,
            last_stable,
        })
    }

    #[test]
    fn an_empty_partition_is_caught_up_only_when_known_to_be() {
        // No statistics yet: not known.
        assert!(!caught_up(None, 10));
        // Fetched to the end.
        assert!(caught_up(at(0, -1001, 10), 10));
        // Records at the broker not fetched yet.
        assert!(!caught_up(at(0, 7, 10), 7));
        // A transactional topic: the position steps over the commit marker after the last
        // record, which our own "last fetched + 1" does not.
        assert!(caught_up(at(0, 11, 11), 10));
        // Never fetched, nothing committed: the consumer starts at the low watermark.
        assert!(caught_up(at(5, -1001, 5), -1));
        assert!(!caught_up(at(0, -1001, 5), -1));
    }
}
