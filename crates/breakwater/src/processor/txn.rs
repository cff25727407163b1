//! The transaction coordinator (Kafka Streams' StreamsProducer): one transactional producer,
//! a transaction begun by the first record of a batch, and one rule after any error: the
//! transaction is aborted and nothing of the batch is committed, by Kafka or (because the
//! caller writes RocksDB only after [`Txn::commit`] succeeds) by the state store.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext, Message, TopicPartitionList};
use tracing::warn;

use super::error::{kafka, ProcessorError};

/// Collects the offsets of delivered changelog records (so the store records where the
/// changelog stands) and the first failed delivery (which fails the commit).
pub(crate) struct DeliveryContext {
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
            // Purged: only an abort (ours, inside abort_transaction) or the producer's
            // destruction purges, and that batch is abandoned already.
            Err((
                KafkaError::MessageProduction(
                    RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight,
                ),
                _,
            )) => {}
            Err((e, _)) => {
                lock(&self.failed).get_or_insert_with(|| e.clone());
            }
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep going with it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How long a commit, a flush or an abort may take before the batch counts as failed.
const TIMEOUT: Duration = Duration::from_secs(30);
/// How long an abort waits for what was sent to be acknowledged first: a broker that does
/// not answer within this will not answer the abort either.
const ABORT_FLUSH: Duration = Duration::from_secs(10);

/// The transactional producer and whether a transaction is open.
pub(crate) struct Txn {
    producer: BaseProducer<DeliveryContext>,
    open: bool,
}

impl Txn {
    /// Creates the producer from `config` (which carries `transactional.id`) and fences any
    /// previous holder of the id, aborting its open transaction so read_committed readers are
    /// not held up.
    ///
    /// # Errors
    /// The producer cannot be created or initialised.
    pub(crate) fn new(config: &ClientConfig, changelog: &str) -> Result<Txn, ProcessorError> {
        let producer: BaseProducer<DeliveryContext> = config
            .create_with_context(DeliveryContext {
                changelog: changelog.to_owned(),
                offsets: Mutex::new(HashMap::new()),
                failed: Mutex::new(None),
            })
            .map_err(kafka("create producer"))?;
        producer
            .init_transactions(Duration::from_secs(60))
            .map_err(kafka("init_transactions"))?;
        Ok(Txn {
            producer,
            open: false,
        })
    }

    /// Whether a transaction is open (something was sent since the last commit or abort).
    pub(crate) fn is_open(&self) -> bool {
        self.open
    }

    /// The fatal error librdkafka declared for this producer (fenced: its transaction was
    /// aborted by the coordinator, or another holder of the transactional id started), if any.
    pub(crate) fn fatal_error(&self) -> Option<(RDKafkaErrorCode, String)> {
        self.producer.client().fatal_error()
    }

    /// Sends `rec` in the open transaction, beginning one if none is open. When librdkafka's
    /// queue is full it serves delivery reports and tries again (back-pressure, not an error).
    ///
    /// # Errors
    /// The transaction cannot begin or the record is refused (too large, unknown topic): the
    /// caller must [`Txn::abort`].
    pub(crate) fn send(
        &mut self,
        mut rec: BaseRecord<'_, [u8], [u8]>,
    ) -> Result<(), ProcessorError> {
        self.begin()?;
        loop {
            match self.producer.send(rec) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    self.producer.poll(Duration::from_millis(10));
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

    /// Commits the open transaction with `offsets` (the next input offsets) in the group
    /// generation `group`: waits for every record to be acknowledged, fails if any was not,
    /// adds the offsets (which fences a member that lost the generation) and commits. A batch
    /// with offsets but no records opens a transaction for them. Returns, per partition, the
    /// offset of the last changelog record delivered.
    ///
    /// On any error the transaction is aborted before this returns: nothing of the batch is
    /// committed, and the caller must not write its state either.
    ///
    /// # Errors
    /// Any Kafka error on the way.
    pub(crate) fn commit(
        &mut self,
        offsets: &TopicPartitionList,
        group: Option<ConsumerGroupMetadata>,
    ) -> Result<HashMap<i32, i64>, ProcessorError> {
        if !self.open && offsets.count() == 0 {
            return Ok(HashMap::new());
        }
        match self.try_commit(offsets, group) {
            Ok(()) => Ok(std::mem::take(&mut *lock(&self.producer.context().offsets))),
            Err(e) => {
                self.abort();
                Err(e)
            }
        }
    }

    fn try_commit(
        &mut self,
        offsets: &TopicPartitionList,
        group: Option<ConsumerGroupMetadata>,
    ) -> Result<(), ProcessorError> {
        self.begin()?;
        self.flush(TIMEOUT)?;
        if let Some(e) = lock(&self.producer.context().failed).take() {
            return Err(ProcessorError::Kafka {
                op: "deliver",
                source: e,
            });
        }
        if offsets.count() > 0 {
            let group = group.ok_or(ProcessorError::Kafka {
                op: "group_metadata",
                source: KafkaError::Canceled,
            })?;
            self.producer
                .send_offsets_to_transaction(offsets, &group, TIMEOUT)
                .map_err(kafka("send_offsets_to_transaction"))?;
        }
        self.producer
            .commit_transaction(TIMEOUT)
            .map_err(kafka("commit_transaction"))?;
        self.open = false;
        Ok(())
    }

    /// Begins a transaction if none is open.
    fn begin(&mut self) -> Result<(), ProcessorError> {
        if !self.open {
            self.producer
                .begin_transaction()
                .map_err(kafka("begin_transaction"))?;
            self.open = true;
        }
        Ok(())
    }

    /// Aborts the open transaction, if any, and forgets its delivery reports.
    pub(crate) fn abort(&mut self) {
        if self.open {
            // librdkafka's abort purges what was not sent and waits for the outgoing queue to
            // empty, delivery reports included; with the event API rust-rdkafka uses, those
            // reports are served only by our poll, so an abort with records queued sat out its
            // whole timeout and failed ("conflicting abort_transaction call in progress" ever
            // after). Purging first is no better: an abort that overtakes the transaction's
            // first AddPartitionsToTxn fails fatally with INVALID_TXN_STATE (librdkafka#4849).
            // So let what was sent be acknowledged (written, then aborted: invisible to
            // read_committed readers), serving the reports, and then abort.
            if let Err(e) = self.flush(ABORT_FLUSH) {
                warn!(error = %e, "delivery reports before the abort");
            }
            if let Err(e) = self.producer.abort_transaction(TIMEOUT) {
                // A fenced or failed producer cannot abort; the broker aborts the transaction
                // when it times out or when the next incarnation initialises the same id.
                warn!(error = %e, "abort_transaction failed");
            }
            self.open = false;
        }
        lock(&self.producer.context().offsets).clear();
        lock(&self.producer.context().failed).take();
    }

    /// Waits until every record sent so far is acknowledged and its delivery report handled.
    ///
    /// rust-rdkafka's own `flush` polls in 100 ms slices and sits out the whole slice even
    /// when the last acknowledgement arrives at once, which added 100 ms to every commit; this
    /// polls in 1 ms slices.
    fn flush(&self, timeout: Duration) -> Result<(), ProcessorError> {
        let deadline = Instant::now() + timeout;
        // A flush with no time to wait still sends whatever is lingering at once.
        let _ = self.producer.flush(Duration::ZERO);
        while self.producer.in_flight_count() > 0 {
            if Instant::now() >= deadline {
                return Err(ProcessorError::Kafka {
                    op: "flush",
                    source: KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut),
                });
            }
            self.producer.poll(Duration::from_millis(1));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The coordinator against the real broker (`make test` starts one): librdkafka's mock
    //! cluster does not hide aborted records from read_committed readers, so it cannot show
    //! what an abort does.
    use super::*;
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::Offset;

    fn bootstrap() -> String {
        std::env::var("BREAKWATER_KAFKA_BOOTSTRAP")
            .expect("BREAKWATER_KAFKA_BOOTSTRAP is not set: run `make test`, which starts a broker")
    }

    /// A new single-partition topic on the broker.
    fn topic(bootstrap: &str, prefix: &str) -> String {
        let name = format!("{prefix}-{}", uuid::Uuid::new_v4().simple());
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()
            .expect("admin");
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let done = rt
            .block_on(admin.create_topics(
                &[NewTopic::new(&name, 1, TopicReplication::Fixed(1))],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
            ))
            .expect("create topic");
        assert!(done.iter().all(Result::is_ok), "{done:?}");
        name
    }

    fn txn(bootstrap: &str, changelog: &str) -> Txn {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", bootstrap)
            .set(
                "transactional.id",
                format!("txn-test-{}", uuid::Uuid::new_v4().simple()),
            )
            .set("message.max.bytes", "10000");
        Txn::new(&c, changelog).expect("producer")
    }

    /// Everything read_committed sees on `topic` partition 0, read to the last stable offset.
    fn committed(bootstrap: &str, topic: &str) -> Vec<Vec<u8>> {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "txn-test-reader")
            .set("isolation.level", "read_committed")
            .create()
            .expect("consumer");
        let (_, end) = c
            .fetch_watermarks(topic, 0, Duration::from_secs(10))
            .expect("watermarks");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Beginning)
            .expect("tpl");
        c.assign(&tpl).expect("assign");
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let at = c
                .position()
                .ok()
                .and_then(|p| p.find_partition(topic, 0).and_then(|e| e.offset().to_raw()))
                .unwrap_or(0);
            if at >= end {
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "read {out:?} up to {at} of {end}"
            );
            if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                out.push(m.payload().unwrap_or_default().to_vec());
            }
        }
    }

    fn rec<'a>(topic: &'a str, v: &'a [u8]) -> BaseRecord<'a, [u8], [u8]> {
        BaseRecord::to(topic).partition(0).key(&b"k"[..]).payload(v)
    }

    #[test]
    #[ignore = "needs the real broker: make test"]
    fn after_a_refused_record_nothing_of_the_batch_is_committed() {
        let bootstrap = bootstrap();
        let (out, changelog) = (topic(&bootstrap, "out"), topic(&bootstrap, "changelog"));
        let mut t = txn(&bootstrap, &changelog);
        // A committed batch; the changelog record's offset comes back for the store.
        t.send(rec(&out, b"one")).expect("send");
        t.send(rec(&changelog, b"state")).expect("send");
        let delivered = t.commit(&TopicPartitionList::new(), None).expect("commit");
        assert_eq!(delivered.get(&0), Some(&0));
        assert!(!t.is_open());
        // A batch whose last record is too large for the producer: refused at send, and the
        // caller aborts. Its first record never becomes readable.
        t.send(rec(&out, b"two")).expect("send");
        let big = vec![b'x'; 20_000];
        assert!(t.send(rec(&out, &big)).is_err());
        t.abort();
        assert!(!t.is_open());
        // The next batch starts clean.
        t.send(rec(&out, b"three")).expect("send");
        t.commit(&TopicPartitionList::new(), None).expect("commit");
        assert_eq!(
            committed(&bootstrap, &out),
            vec![b"one".to_vec(), b"three".to_vec()]
        );
    }

    #[test]
    #[ignore = "needs the real broker: make test"]
    fn a_commit_that_fails_is_aborted_before_it_returns() {
        let bootstrap = bootstrap();
        let out = topic(&bootstrap, "out");
        let mut t = txn(&bootstrap, "changelog-unused");
        t.send(rec(&out, b"lost")).expect("send");
        // Offsets without a group generation: the commit cannot be completed.
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset("in", 0, Offset::Offset(5))
            .expect("tpl");
        assert!(t.commit(&offsets, None).is_err());
        assert!(!t.is_open(), "aborted");
        t.send(rec(&out, b"kept")).expect("send");
        t.commit(&TopicPartitionList::new(), None).expect("commit");
        assert_eq!(committed(&bootstrap, &out), vec![b"kept".to_vec()]);
    }
}
