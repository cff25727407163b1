//! Faults other than kill -9, on the real broker: a batch whose commit fails, and state
//! changes that produce no output. Each test failed before its fix (see the git log).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::type_complexity)] // tests: a panic is the failure report

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use breakwater::processor::dlq_headers;
use common::processor::{
    assert_exactly_once, caught_up, changelog_states, config, config_text, expected, producer,
    published, read_all, send_sync, start, wms_event, Record,
};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The WMS input records as the pure fold sees them: the valid ones, in offset order.
fn valid_inputs(bootstrap: &str, topic: &str) -> Vec<Record> {
    read_all(bootstrap, topic)
        .into_iter()
        .filter(|r| serde_json::from_slice::<breakwater_core::InventoryEvent>(&r.3).is_ok())
        .collect()
}

/// A record the dead-letter topic cannot take (its `max.message.bytes` is 4 KiB, the record
/// 20 KiB) used to make the whole transaction abort; the loop then committed the batch's state
/// and offsets without its outputs, and every propagation and alert of the batch was lost.
/// Now the dead-letter record is cut to fit (and says so), and after any error nothing of
/// the open batch is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kafka broker: run `make test`"]
async fn a_record_too_large_for_the_dead_letter_topic_loses_no_output() {
    let bootstrap = common::bootstrap();
    let prefix = common::unique("faults-dlq");
    let state = tempfile::tempdir().unwrap();
    let cfg = config(&config_text(&bootstrap, &prefix, state.path(), "faults-0"));
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let dlq = NewTopic::new(&cfg.topics.dead_letter, 1, TopicReplication::Fixed(1))
        .set("max.message.bytes", "4096");
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for r in admin.create_topics([&dlq], &opts).await.unwrap() {
        r.unwrap();
    }
    breakwater::topics::create_topics(&cfg, 1, 1).await.unwrap();

    let wms = cfg.model.system_by_name("wms").unwrap().input_topic.clone();
    let p = producer(&bootstrap);
    let now = now_ms() - 3_600_000;
    for i in 0..40 {
        let (key, payload) = wms_event(i, 7, now + i as i64);
        send_sync(&p, &wms, Some(key.as_bytes()), &payload, now + i as i64);
    }
    let garbage = vec![b'x'; 20_000];
    send_sync(&p, &wms, Some(b"SKU-1|DC-1"), &garbage, now + 40);
    for i in 40..80 {
        let (key, payload) = wms_event(i, 7, now + i as i64);
        send_sync(&p, &wms, Some(key.as_bytes()), &payload, now + i as i64);
    }

    let running = start(cfg.clone());
    caught_up(&cfg, &[wms.as_str()], Duration::from_secs(120)).await;
    running.stop().await;

    let want = expected(&cfg, &valid_inputs(&bootstrap, &wms));
    assert_exactly_once(&want, &published(&bootstrap, &cfg));
    let dead = read_all(&bootstrap, &cfg.topics.dead_letter);
    assert_eq!(
        dead.len(),
        1,
        "the record reached the dead-letter topic once"
    );
    let headers: std::collections::BTreeMap<_, _> = dead[0].4.iter().cloned().collect();
    assert_eq!(
        headers.get(dlq_headers::TRUNCATED_FROM).map(String::as_str),
        Some("20000")
    );
    assert_eq!(
        headers.get(dlq_headers::REASON_CODE).map(String::as_str),
        Some("json_decode")
    );
    assert!(dead[0].3.len() < 4096 && garbage.starts_with(&dead[0].3));
}

/// An output topic that refuses the batch's records for a while (its `max.message.bytes`
/// below a propagation record's size): every commit fails and is aborted. The loop used to
/// commit the failed batch's state and offsets anyway on its way out, without the outputs
/// that had just been aborted, so those propagations and alerts were lost for good. After an
/// error nothing of the open batch is committed: once the topic accepts records again, every
/// output is published, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kafka broker: run `make test`"]
async fn an_output_topic_that_refuses_records_for_a_while_loses_no_output() {
    let bootstrap = common::bootstrap();
    let prefix = common::unique("faults-refuse");
    let state = tempfile::tempdir().unwrap();
    let cfg = config(&config_text(&bootstrap, &prefix, state.path(), "faults-0"));
    breakwater::topics::create_topics(&cfg, 2, 1).await.unwrap();
    let erp = cfg
        .model
        .system_by_name("erp")
        .unwrap()
        .propagation_topic
        .clone();
    // Below any propagation record (about 350 bytes with its batch header), above a
    // transaction marker's control batch (under 100), which the coordinator must still write.
    common::alter_topic(&bootstrap, &erp, "max.message.bytes", "200").await;

    let wms = cfg.model.system_by_name("wms").unwrap().input_topic.clone();
    let p = producer(&bootstrap);
    let now = now_ms() - 3_600_000;
    for i in 0..60 {
        let (key, payload) = wms_event(i, 7, now + i as i64);
        send_sync(&p, &wms, Some(key.as_bytes()), &payload, now + i as i64);
    }
    let text = config_text(&bootstrap, &prefix, state.path(), "faults-0");
    let path = state.path().join("breakwater.toml");
    std::fs::write(&path, &text).unwrap();
    let log = state.path().join("breakwater.log");
    let mut child = common::processor::spawn_binary(&path, &log);
    // Long enough for several batches to fail, abort and restart.
    tokio::time::sleep(Duration::from_secs(6)).await;
    common::alter_topic(&bootstrap, &erp, "max.message.bytes", "1048588").await;
    let (b, g, t, l) = (
        bootstrap.clone(),
        cfg.kafka.group_id.clone(),
        wms.clone(),
        log.clone(),
    );
    let done = tokio::task::spawn_blocking(move || {
        std::panic::catch_unwind(|| {
            common::processor::wait_caught_up(&b, &g, &[&t], Duration::from_secs(90))
        })
        .map_err(|_| common::processor::log_tail(&l, 60))
    })
    .await
    .unwrap();
    common::processor::terminate(&mut child, &log);
    if let Err(tail) = done {
        panic!("not caught up; log:\n{tail}");
    }

    let want = expected(&cfg, &valid_inputs(&bootstrap, &wms));
    assert!(
        want.outputs.keys().any(|(t, _)| *t == erp),
        "the input produces ERP propagations"
    );
    assert_exactly_once(&want, &published(&bootstrap, &cfg));
    assert_eq!(changelog_states(&bootstrap, &cfg), want.states);
}

/// A late ABSOLUTE (an older `source_seq` than the value held) changes no number but is
/// recorded as seen; the processor wrote a key's state only when an input was Applied, so
/// the store and the changelog missed it and a restart forgot it. Every state change is
/// persisted now: the changelog's state equals the pure fold's for every key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kafka broker: run `make test`"]
async fn a_superseded_event_is_persisted_like_any_state_change() {
    let bootstrap = common::bootstrap();
    let prefix = common::unique("faults-seq");
    let state = tempfile::tempdir().unwrap();
    let cfg = config(&config_text(&bootstrap, &prefix, state.path(), "faults-1"));
    breakwater::topics::create_topics(&cfg, 1, 1).await.unwrap();
    let wms = cfg.model.system_by_name("wms").unwrap().input_topic.clone();
    let p = producer(&bootstrap);
    let now = now_ms() - 3_600_000;
    let snapshot = |id: &str, seq: i64, q: i64| {
        serde_json::to_vec(&serde_json::json!({
            "event_id": id, "system": "wms", "type": "SNAPSHOT", "sku": "SKU-9",
            "location": "DC-1", "measure": "on_hand", "mode": "ABSOLUTE", "quantity": q,
            "occurred_at": now, "source_seq": seq
        }))
        .unwrap()
    };
    // seq 5, then the late seq 3 (superseded), then a redelivery of seq 3 (a duplicate),
    // each in a batch of its own (the bug hid when another change to the key shared a batch).
    let running = start(cfg.clone());
    for (i, (id, seq, q)) in [("s5", 5, 40), ("s3", 3, 35), ("s3", 3, 35)]
        .into_iter()
        .enumerate()
    {
        send_sync(
            &p,
            &wms,
            Some(b"SKU-9|DC-1"),
            &snapshot(id, seq, q),
            now + i as i64 * 1000,
        );
        caught_up(&cfg, &[wms.as_str()], Duration::from_secs(120)).await;
    }
    running.stop().await;

    let want = expected(&cfg, &valid_inputs(&bootstrap, &wms));
    let got = changelog_states(&bootstrap, &cfg);
    assert_eq!(got.len(), want.states.len());
    for (key, st) in &want.states {
        assert_eq!(
            got.get(key),
            Some(st),
            "{key}: the changelog's state is the fold's"
        );
    }
    assert_exactly_once(&want, &published(&bootstrap, &cfg));
}

/// A changelog whose cleanup policy deletes would lose the state of every key quiet for
/// longer than its retention, and a restore would not notice: `run` refuses it at start,
/// naming the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kafka broker: run `make test`"]
async fn a_changelog_that_deletes_is_refused_at_start() {
    let bootstrap = common::bootstrap();
    let prefix = common::unique("faults-policy");
    let state = tempfile::tempdir().unwrap();
    let cfg = config(&config_text(&bootstrap, &prefix, state.path(), "faults-2"));
    breakwater::topics::create_topics(&cfg, 1, 1).await.unwrap();
    common::alter_topic(
        &bootstrap,
        &cfg.topics.changelog,
        "cleanup.policy",
        "compact,delete",
    )
    .await;
    let r = tokio::time::timeout(
        Duration::from_secs(60),
        breakwater::run(cfg, None, std::future::pending()),
    )
    .await
    .expect("run refuses at once instead of running");
    let msg = r.unwrap_err().to_string();
    assert!(
        msg.contains("cleanup.policy=\"compact,delete\"") && msg.contains("cleanup.policy=compact"),
        "{msg}"
    );
}

/// Records deleted from the changelog (here: an operator briefly set a delete policy and
/// the broker removed them) leave a hole between what a new owner's local state includes
/// (nothing) and the changelog's first offset. Restoring from there would rebuild the
/// partition without those keys, silently; now the partition refuses, naming what was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kafka broker: run `make test`"]
async fn a_changelog_with_deleted_records_is_not_restored_as_if_complete() {
    use rdkafka::{Offset, TopicPartitionList};
    let bootstrap = common::bootstrap();
    let prefix = common::unique("faults-gap");
    let state = tempfile::tempdir().unwrap();
    let cfg = config(&config_text(&bootstrap, &prefix, state.path(), "faults-3"));
    breakwater::topics::create_topics(&cfg, 1, 1).await.unwrap();
    let wms = cfg.model.system_by_name("wms").unwrap().input_topic.clone();
    let p = producer(&bootstrap);
    let now = now_ms() - 3_600_000;
    for i in 0..20 {
        let (key, payload) = wms_event(i, 5, now + i as i64);
        send_sync(&p, &wms, Some(key.as_bytes()), &payload, now + i as i64);
    }
    let running = start(cfg.clone());
    caught_up(&cfg, &[wms.as_str()], Duration::from_secs(120)).await;
    running.stop().await;
    assert!(!changelog_states(&bootstrap, &cfg).is_empty());

    // Delete the changelog's records (DeleteRecords needs a delete policy), then put the
    // policy back, and start a new instance with no local state.
    let changelog = cfg.topics.changelog.clone();
    common::alter_topic(&bootstrap, &changelog, "cleanup.policy", "delete").await;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&changelog, 0, Offset::End)
        .unwrap();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    admin.delete_records(&tpl, &opts).await.unwrap();
    common::alter_topic(&bootstrap, &changelog, "cleanup.policy", "compact").await;

    let fresh = tempfile::tempdir().unwrap();
    // The same instance id: a static member takes its partitions back at once.
    let cfg2 = config(&config_text(&bootstrap, &prefix, fresh.path(), "faults-3"));
    let r = tokio::time::timeout(
        Duration::from_secs(60),
        breakwater::run(cfg2, None, std::future::pending()),
    )
    .await
    .expect("the partition refuses instead of running on a partial state");
    let msg = r.unwrap_err().to_string();
    assert!(msg.contains("were deleted"), "{msg}");
}

/// A rolling deploy that adds a system: instance N subscribes to one more input topic than
/// instance O. librdkafka's range assignor works per topic over the members subscribed to
/// it, so N gets every partition of the new topic while O keeps some partitions of the
/// others; both used to open those tasks and write their changelog partitions. Now a
/// partition held for only some input topics is paused and not opened, and N says it is not
/// ready: no partition ever has two owners.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kafka broker: run `make test`"]
async fn members_subscribed_to_different_topics_never_both_own_a_partition() {
    use common::processor::start_shared;
    use std::sync::atomic::Ordering;
    let bootstrap = common::bootstrap();
    let prefix = common::unique("faults-copart");
    let (dir_o, dir_n) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cfg_o = config(&config_text(&bootstrap, &prefix, dir_o.path(), "old-0"));
    let text_n = config_text(&bootstrap, &prefix, dir_n.path(), "new-0").replacen(
        "\n[measures",
        &format!(
            "\n[[systems]]\nname = \"pos\"\ninput_topic = \"{prefix}.inventory.pos.events\"\n\
             propagation_topic = \"{prefix}.inventory.pos.propagation\"\n\n[measures"
        ),
        1,
    );
    let cfg_n = config(&text_n);
    assert_eq!(cfg_n.model.systems().len(), cfg_o.model.systems().len() + 1);
    breakwater::topics::create_topics(&cfg_n, 3, 1)
        .await
        .unwrap();

    let owned = |s: &breakwater::processor::Shared| -> std::collections::BTreeSet<i32> {
        s.stores.read().unwrap().keys().copied().collect()
    };
    let (shared_o, run_o) = start_shared(cfg_o);
    let (shared_n, run_n) = start_shared(cfg_n);
    // Wait for both to hold partitions, then watch ownership for a while: never shared.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let mut settled_at = None;
    loop {
        let (o, n) = (owned(&shared_o), owned(&shared_n));
        let both: Vec<_> = o.intersection(&n).collect();
        assert!(
            both.is_empty(),
            "partitions {both:?} owned by both (old {o:?}, new {n:?})"
        );
        if !o.is_empty() && !n.is_empty() && settled_at.is_none() {
            settled_at = Some(std::time::Instant::now());
        }
        if settled_at.is_some_and(|t| t.elapsed() > Duration::from_secs(3)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never settled: old {o:?}, new {n:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every partition has exactly one owner; the new member holds the partitions the old one
    // has of the shared topics only for its extra topic, and does not open them.
    let (o, n) = (owned(&shared_o), owned(&shared_n));
    assert_eq!(
        o.union(&n).copied().collect::<Vec<_>>(),
        [0, 1, 2],
        "old {o:?}, new {n:?}"
    );
    assert!(n.len() < 3, "old {o:?}, new {n:?}");
    assert!(
        !shared_n.ready.load(Ordering::SeqCst),
        "the new member is not ready"
    );
    run_n.stop().await;
    run_o.stop().await;
}

/// A partition with a long changelog used to be restored inside the rebalance callback, in
/// one write at the end, for up to 600 s: longer than `max.poll.interval.ms` (the member was
/// dropped from the group) and nothing kept if the process died on the way. The restore now
/// runs between polls in bounded steps, each written with its progress, and reports what is
/// left in `breakwater_restore_remaining_records`: killed in the middle, the instance keeps
/// what it restored and finishes from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kafka broker: run `make test`"]
async fn a_long_restore_reports_progress_and_survives_kill_9_midway() {
    use breakwater_store::{encode_state, PartitionStore};
    use common::processor::{
        free_port, http_get, kill9, spawn_binary, terminate, wait_ready, with_http_port,
    };
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

    const KEYS: usize = 300_000;
    let bootstrap = common::bootstrap();
    let prefix = common::unique("faults-restore");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let port = free_port();
    let text = with_http_port(&config_text(&bootstrap, &prefix, &state, "faults-4"), port);
    let cfg = config(&text);
    breakwater::topics::create_topics(&cfg, 1, 1).await.unwrap();
    // A changelog another instance left behind: one state per key.
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("linger.ms", "50")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap();
    let value = encode_state(&breakwater_core::KeyState::default());
    for i in 0..KEYS {
        let key = format!("SKU-{i}|DC-1");
        loop {
            match p.send(
                BaseRecord::to(&cfg.topics.changelog)
                    .partition(0)
                    .key(&key)
                    .payload(&value),
            ) {
                Ok(()) => break,
                Err((_, _)) => {
                    p.poll(Duration::from_millis(10));
                }
            }
        }
    }
    p.flush(Duration::from_secs(120)).unwrap();

    let path = dir.path().join("breakwater.toml");
    std::fs::write(&path, &text).unwrap();
    let log = dir.path().join("breakwater.log");
    let mut child = spawn_binary(&path, &log);
    // Wait until the restore is part way, as the metric says, then kill -9.
    let remaining = |body: &str| -> Option<f64> {
        body.lines()
            .find(|l| l.starts_with("breakwater_restore_remaining_records{partition=\"0\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (_, body) = http_get(port, "/metrics");
        if remaining(&body).is_some_and(|r| r > 0.0 && r < KEYS as f64) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no restore progress reported; log:\n{}",
            common::processor::log_tail(&log, 30)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    kill9(&mut child);
    let kept = PartitionStore::open(&state, 0)
        .unwrap()
        .meta()
        .unwrap()
        .changelog_next;
    assert!(kept > 0, "the restore's progress was written as it went");

    let mut child = spawn_binary(&path, &log);
    let (l, t) = (log.clone(), Duration::from_secs(180));
    tokio::task::spawn_blocking(move || wait_ready(port, &l, t))
        .await
        .unwrap();
    let (_, body) = http_get(port, "/metrics");
    assert_eq!(remaining(&body), Some(0.0));
    terminate(&mut child, &log);
    let store = PartitionStore::open(&state, 0).unwrap();
    assert_eq!(store.all_states().unwrap().len(), KEYS);
    assert!(store.meta().unwrap().changelog_next >= KEYS as i64);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(&format!("from={kept}")) || text.contains(&format!("from: {kept}")),
        "the second run resumed from offset {kept}"
    );
}
