//! The broker stops and starts under load (`scripts/kafka.sh restart`: same log dir), while
//! the real binary processes a steady stream: every output exactly once and the state equal
//! to the pure fold of the input. Its own test binary, so nothing else runs while the broker
//! is down.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::processor::{
    assert_exactly_once, changelog_states, config, config_text, expected, free_port, published,
    read_all, ready_and_caught_up, spawn_binary, terminate, wait_ready, with_http_port, wms_event,
};
use rdkafka::producer::{BaseRecord, Producer};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn kafka_sh(cmd: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/kafka.sh");
    let out = std::process::Command::new("bash")
        .arg(script)
        .arg(cmd)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kafka.sh {cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Kafka broker `make test` starts with scripts/kafka.sh (it restarts it)"]
async fn a_broker_restart_under_load_loses_and_duplicates_nothing() {
    let bootstrap = common::bootstrap();
    // This test restarts the broker kafka.sh started; it cannot restart someone else's.
    kafka_sh("status");
    let prefix = common::unique("restart");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let text = with_http_port(
        &config_text(&bootstrap, &prefix, &dir.path().join("state"), "restart-0"),
        port,
    );
    let cfg = config(&text);
    breakwater::topics::create_topics(&cfg, 3, 1).await.unwrap();
    let path = dir.path().join("breakwater.toml");
    std::fs::write(&path, &text).unwrap();
    let log = dir.path().join("breakwater.log");
    let wms = cfg.model.system_by_name("wms").unwrap().input_topic.clone();

    let mut child = spawn_binary(&path, &log);
    let (b, l) = (bootstrap.clone(), log.clone());
    let (wms2, n) = (wms.clone(), 3000);
    tokio::task::spawn_blocking(move || {
        wait_ready(port, &l, Duration::from_secs(120));
        // A steady stream; the broker restarts a third of the way in. The producer retries
        // (idempotently) through the outage, so every event is in the log exactly once.
        let p: rdkafka::producer::BaseProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &b)
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "120000")
            .create()
            .unwrap();
        for i in 0..n {
            let (key, payload) = wms_event(i, 50, now_ms());
            p.send(BaseRecord::to(&wms2).key(&key).payload(&payload))
                .map_err(|(e, _)| e)
                .unwrap();
            p.poll(Duration::ZERO);
            if i % 20 == 19 {
                std::thread::sleep(Duration::from_millis(50));
            }
            if i == n / 3 {
                p.flush(Duration::from_secs(30)).unwrap();
                kafka_sh("restart");
            }
        }
        p.flush(Duration::from_secs(120)).unwrap();
    })
    .await
    .unwrap();
    ready_and_caught_up(
        &bootstrap,
        &cfg.kafka.group_id,
        &[&wms],
        port,
        &log,
        Duration::from_secs(240),
    )
    .await;
    terminate(&mut child, &log);

    let inputs = read_all(&bootstrap, &wms);
    assert_eq!(inputs.len(), 3000);
    let want = expected(&cfg, &inputs);
    assert_exactly_once(&want, &published(&bootstrap, &cfg));
    assert_eq!(changelog_states(&bootstrap, &cfg), want.states);
}
