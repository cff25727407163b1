//! One incarnation of the processor (Kafka Streams' StreamThread): the clients, the poll loop,
//! the rebalance callbacks, and the rule at the end: a stop commits what was processed; an
//! error aborts the open batch and commits nothing of it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use breakwater_codec::AnyCodec;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::ClientContext;
use tokio::runtime::Handle;
use tracing::{info, warn};

use super::checks::{check_topics, topic_configs};
use super::engine::Engine;
use super::error::{kafka, ProcessorError};
use super::txn::{lock, Txn};
use super::{base_client_config, transactional_id, Shared};
use crate::config::Config;
use crate::metrics as m;

/// Records polled (without the engine lock) before the buffered ones are folded.
const POLL_BURST: usize = 512;

/// The consumer's context: routes rebalance callbacks to the engine and keeps librdkafka's
/// view of each input partition's offsets.
pub(crate) struct ConsumerCtx {
    engine: Arc<Mutex<Engine>>,
    /// An error raised inside a rebalance callback, for the loop to act on.
    error: Mutex<Option<ProcessorError>>,
    /// Per input partition, from librdkafka's statistics: the low watermark, the consumer's
    /// position (stepped over transaction markers) and the last stable offset at the broker.
    /// No network call: librdkafka learns them from its fetches.
    pub(crate) offsets: Mutex<HashMap<(String, i32), BrokerOffsets>>,
}

/// One input partition's offsets as librdkafka's statistics report them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BrokerOffsets {
    /// The low watermark.
    pub(crate) low: i64,
    /// The offset after the last record passed to the application (-1001 when none).
    pub(crate) position: i64,
    /// The last stable offset (the high watermark for non-transactional data).
    pub(crate) last_stable: i64,
    /// This member consumes it (assigned).
    pub(crate) desired: bool,
}

/// Whether an input partition with nothing buffered has nothing more at the broker, from
/// librdkafka's statistics (`lo_offset`, `app_offset`, `ls_offset`) and the offset after the
/// last record fetched (or committed). With no position at all the consumer starts at the low
/// watermark. Unknown (no statistics yet) counts as "not known to be caught up".
pub(crate) fn caught_up(stats: Option<BrokerOffsets>, fetched: i64) -> bool {
    match stats {
        Some(o) if o.last_stable >= 0 => {
            let pos = o.position.max(fetched);
            let pos = if pos < 0 { o.low } else { pos };
            pos >= o.last_stable
        }
        _ => false,
    }
}

impl ClientContext for ConsumerCtx {
    fn stats(&self, statistics: rdkafka::Statistics) {
        let mut offsets = lock(&self.offsets);
        for (name, topic) in &statistics.topics {
            for (p, part) in &topic.partitions {
                if *p >= 0 {
                    // Lag of the partitions this member consumes: the last stable offset
                    // minus the position (librdkafka's own `consumer_lag` counts from the
                    // consumer's committed offset, which transactional offset commits never
                    // update). NaN for a partition it no longer consumes (the new owner
                    // reports it); nothing for one it never consumed.
                    let from = if part.app_offset >= 0 {
                        part.app_offset
                    } else if part.committed_offset >= 0 {
                        part.committed_offset
                    } else {
                        part.lo_offset
                    };
                    let lag = if part.desired && part.ls_offset >= 0 && from >= 0 {
                        (part.ls_offset - from).max(0) as f64
                    } else {
                        f64::NAN
                    };
                    let key = (name.clone(), *p);
                    let was_desired = offsets.get(&key).is_some_and(|o| o.desired);
                    if part.desired || was_desired {
                        metrics::gauge!(m::CONSUMER_LAG, "topic" => name.clone(), "partition" => p.to_string())
                            .set(lag);
                    }
                    offsets.insert(
                        key,
                        BrokerOffsets {
                            low: part.lo_offset,
                            position: part.app_offset,
                            last_stable: part.ls_offset,
                            desired: part.desired,
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

/// Runs one incarnation until `stop` is set or an error.
pub(crate) fn run_once(
    cfg: &Arc<Config>,
    codec: &AnyCodec,
    rt: &Handle,
    shared: &Arc<Shared>,
    stop: &Arc<AtomicBool>,
) -> Result<(), ProcessorError> {
    let topics = check_topics(cfg)?;
    let txn = {
        let mut c = base_client_config(cfg);
        c.set("transactional.id", transactional_id(cfg))
            .set(
                "transaction.timeout.ms",
                cfg.kafka.transaction_timeout_ms.to_string(),
            )
            .set("linger.ms", "5");
        Txn::new(&c, &cfg.topics.changelog)?
    };
    // The topic config checks run beside the loop (a broker without DescribeConfigs answers
    // only after its timeout); only a dead letter waits for them.
    let checks = {
        let (tx, rx) = std::sync::mpsc::channel();
        let (cfg, rt) = (Arc::clone(cfg), rt.clone());
        std::thread::Builder::new()
            .name("breakwater-topic-checks".into())
            .spawn(move || {
                let _ = tx.send(topic_configs(&cfg, &rt));
            })
            .map_err(|e| ProcessorError::Topics(format!("starting the topic checks: {e}")))?;
        rx
    };
    let names: Vec<String> = topics.keys().cloned().collect();
    let engine = Arc::new(Mutex::new(Engine::new(
        cfg, codec, rt, txn, topics, checks, shared,
    )));
    let consumer: BaseConsumer<ConsumerCtx> = {
        let mut c = base_client_config(cfg);
        c.set("group.id", &cfg.kafka.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest")
            // Range assigns partition p of every co-partitioned topic to the same member
            // (when every member subscribes to the same topics; `Engine::open` refuses a
            // partition assigned for some topics only).
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
    let subscribed: Vec<&str> = names.iter().map(String::as_str).collect();
    consumer
        .subscribe(&subscribed)
        .map_err(kafka("subscribe"))?;
    info!(topics = ?names, group = %cfg.kafka.group_id, "processor started");

    let result = poll(cfg, &consumer, &engine, stop);
    // Stopping: commit what was processed. Failing: nothing of the open batch may be
    // committed (its outputs may be lost with the aborted transaction while its state and
    // offsets would not be); abort it, and the next incarnation re-reads the batch from the
    // committed offsets over the state as of the last commit. Either way the tasks close and
    // the instance leaves the group.
    let final_commit = match &result {
        Ok(()) => lock(&engine).commit(&consumer),
        Err(_) => Ok(()),
    };
    lock(&engine).abort_and_close();
    consumer.unsubscribe();
    drop(consumer);
    shared.ready.store(false, Ordering::SeqCst);
    result.and(final_commit)
}

/// The loop: poll a burst, restore a step, fold for up to a commit interval, commit when due.
fn poll(
    cfg: &Config,
    consumer: &BaseConsumer<ConsumerCtx>,
    engine: &Mutex<Engine>,
    stop: &AtomicBool,
) -> Result<(), ProcessorError> {
    let commit_every = Duration::from_millis(cfg.processor.commit_interval_ms);
    let tick_every = Duration::from_millis(cfg.processor.tick_interval_ms);
    let mut last_commit = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        // Poll a burst without holding the engine (rebalance callbacks run inside poll and
        // take it), buffering each record in its task; then fold what the merge allows.
        let mut timeout = Duration::from_millis(20);
        for _ in 0..POLL_BURST {
            let msg = consumer.poll(timeout);
            if let Some(err) = lock(&consumer.context().error).take() {
                return Err(err);
            }
            match msg {
                Some(Ok(msg)) => lock(engine).buffer(msg.detach()),
                Some(Err(err)) => {
                    // Consumer-level errors (broker down, ...) are reported here; librdkafka
                    // retries those on its own, so log and go on. A fatal one (fenced by a
                    // member with the same group.instance.id, ...) ends this process.
                    if let Some((code, reason)) = consumer.client().fatal_error() {
                        return Err(ProcessorError::Fatal(format!(
                            "consumer: {code:?}: {reason}"
                        )));
                    }
                    if matches!(err, KafkaError::MessageConsumptionFatal(_)) {
                        return Err(ProcessorError::Fatal(format!("consumer: {err}")));
                    }
                    warn!(error = %err, "consumer error");
                    break;
                }
                None => break,
            }
            timeout = Duration::ZERO;
        }
        let mut e = lock(engine);
        e.poll_checks()?;
        // A producer that librdkafka declared fatal (fenced: its transaction was aborted by
        // the coordinator after a pause, or another holder of the transactional id started)
        // cannot go on; a new incarnation with a new producer can (Kafka Streams' "task
        // migrated"). A duplicate instance id is caught by the consumer's fatal error instead.
        if let Some((code, reason)) = e.txn.fatal_error() {
            warn!(
                reason,
                "the producer failed fatally; starting a new incarnation"
            );
            return Err(ProcessorError::Kafka {
                op: "producer",
                source: KafkaError::Global(code),
            });
        }
        // Restore newly assigned partitions a step at a time, between polls.
        e.restore_step(consumer, commit_every)?;
        // Fold for at most one commit interval: a transaction must not outlive
        // `transaction_timeout_ms`, however large the backlog, and polling must not starve
        // folding.
        e.drain(consumer, Instant::now() + commit_every)?;
        if e.batch_records >= cfg.processor.max_batch_records
            || last_commit.elapsed() >= commit_every
        {
            e.tick_idle(consumer, tick_every)?;
            e.commit(consumer)?;
            last_commit = Instant::now();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(low: i64, position: i64, last_stable: i64) -> Option<BrokerOffsets> {
        Some(BrokerOffsets {
            low,
            position,
            last_stable,
            desired: true,
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
