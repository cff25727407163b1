//! The real broker enforces transactions: a read_committed consumer sees exactly the records
//! of committed transactions. (librdkafka's mock cluster does not, which is why exactly-once
//! is judged here and not there.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::type_complexity)] // tests: a panic is the failure report

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test]
#[ignore = "needs a Kafka broker: run `make test`"]
async fn read_committed_sees_exactly_the_committed_records() {
    let bootstrap = common::bootstrap();
    let topic = common::unique("tx");
    common::create_topics(&bootstrap, &[&topic], 1).await;

    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("transactional.id", common::unique("tx-producer"))
        .create()
        .expect("producer");
    producer
        .init_transactions(TIMEOUT)
        .expect("init_transactions");

    let send_batch = |prefix: &str, n: usize, commit: bool| {
        producer.begin_transaction().expect("begin");
        for i in 0..n {
            let payload = format!("{prefix}-{i}");
            producer
                .send(BaseRecord::to(&topic).key("k").payload(&payload))
                .expect("send");
        }
        if commit {
            producer.commit_transaction(TIMEOUT).expect("commit");
        } else {
            producer.flush(TIMEOUT).expect("flush");
            producer.abort_transaction(TIMEOUT).expect("abort");
        }
    };
    send_batch("first", 5, true);
    send_batch("aborted", 3, false);
    send_batch("second", 2, true);

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", common::unique("tx-reader"))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Beginning)
        .expect("partition");
    consumer.assign(&tpl).expect("assign");
    let (_, high) = consumer
        .fetch_watermarks(&topic, 0, TIMEOUT)
        .expect("watermarks");

    // Read until the consumer's position passes the high watermark (which counts the aborted
    // records and the transaction markers), so nothing aborted can still be on its way.
    let mut seen = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(r) = consumer.poll(Duration::from_millis(200)) {
            let m = r.expect("message");
            seen.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
        let pos = consumer.position().expect("position");
        let at = pos
            .find_partition(&topic, 0)
            .and_then(|p| p.offset().to_raw())
            .unwrap_or(-1);
        if at >= high {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "timed out at offset {at} of {high}"
        );
    }
    let want: BTreeSet<String> = (0..5)
        .map(|i| format!("first-{i}"))
        .chain((0..2).map(|i| format!("second-{i}")))
        .collect();
    assert_eq!(
        seen.len(),
        want.len(),
        "each committed record exactly once: {seen:?}"
    );
    assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), want);
}
