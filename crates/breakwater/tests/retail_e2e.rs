//! A truth-scored retail day end to end on the real broker, twice.
//!
//! The generator's stream (stores, DCs, orders with lifecycles, ERP batches, a cached
//! storefront, injected faults) is published as a backlog with its historical timestamps to
//! the four systems' topics and the reservation topic. Deployment A runs the processor to the
//! end: its alerts must be exactly the pure fold's (the injected faults and nothing else) and
//! its final authoritative state the generator's truth for every key. Deployment B reads the
//! same input topics into its own outputs with kill -9 in the middle: every committed output
//! must be byte-identical to A's, partition by partition. Records of one partition arriving
//! on different topics are merged by timestamp, so the output is a function of the input.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::type_complexity)] // tests: a panic is the failure report

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use breakwater_codec::records::{AlertRecord, IncidentRecord};
use breakwater_core::retail::{generate, replay, score, scored, RetailConfig, ScoredAlert};
use breakwater_core::scenario::{alert_id, ScenarioInput};
use breakwater_core::{message_key, AlertKind, IncidentStatus, Measure};
use common::processor::{
    changelog_states, config, free_port, kill9, read_all, spawn_binary, terminate, wait_caught_up,
    wait_ready,
};
use rdkafka::producer::{BaseRecord, Producer};

const PARTITIONS: i32 = 3;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A smaller day than `RetailConfig::small`, so a debug build folds it in seconds; started
/// two days ago so retention never touches it.
fn day() -> RetailConfig {
    let mut cfg = RetailConfig::small();
    cfg.skus = 120;
    cfg.web_orders_per_day = 1_500;
    cfg.store_sales_per_day = 2_000;
    cfg.start_ms = now_ms() - 2 * 86_400_000;
    cfg.start_ms -= cfg.start_ms.rem_euclid(60_000);
    cfg
}

/// The retail example config with its own topics: inputs under `inputs`, outputs and the
/// group under `outputs`.
fn config_text(bootstrap: &str, inputs: &str, outputs: &str, state: &Path, port: u16) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/retail/breakwater.toml");
    let mut v: toml::Table = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let kafka = v["kafka"].as_table_mut().unwrap();
    kafka.insert("bootstrap_servers".into(), bootstrap.into());
    kafka.insert("group_id".into(), outputs.into());
    kafka.insert("instance_id".into(), format!("{outputs}-0").into());
    let topics = v["topics"].as_table_mut().unwrap();
    for (k, t) in topics.iter_mut() {
        let name = t.as_str().unwrap();
        let prefix = if k == "reservations" { inputs } else { outputs };
        *t = format!("{prefix}.{name}").into();
    }
    for s in v["systems"].as_array_mut().unwrap() {
        let s = s.as_table_mut().unwrap();
        let i = format!("{inputs}.{}", s["input_topic"].as_str().unwrap());
        let o = format!("{outputs}.{}", s["propagation_topic"].as_str().unwrap());
        s.insert("input_topic".into(), i.into());
        s.insert("propagation_topic".into(), o.into());
    }
    v.insert(
        "state".into(),
        toml::Table::from_iter([("dir".to_owned(), state.display().to_string().into())]).into(),
    );
    v.insert(
        "http".into(),
        toml::Table::from_iter([("listen".to_owned(), format!("127.0.0.1:{port}").into())]).into(),
    );
    v.insert(
        "processor".into(),
        toml::Table::from_iter([
            ("commit_interval_ms".to_owned(), 50.into()),
            // Historical input: no wall-clock ticks while the test runs.
            ("tick_interval_ms".to_owned(), 86_400_000.into()),
        ])
        .into(),
    );
    toml::to_string(&v).unwrap()
}

fn publish(bootstrap: &str, cfg: &breakwater::Config, inputs: &[(i64, ScenarioInput)]) {
    let p = common::processor::producer(bootstrap);
    for (t, input) in inputs {
        let (topic, key, payload) = common::processor::wire(cfg, input);
        let mut rec = BaseRecord::to(&topic)
            .key(key.as_bytes())
            .payload(&payload)
            .timestamp(*t);
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((e, r)) => {
                    assert!(
                        matches!(
                            e,
                            rdkafka::error::KafkaError::MessageProduction(
                                rdkafka::types::RDKafkaErrorCode::QueueFull
                            )
                        ),
                        "{e}"
                    );
                    p.poll(Duration::from_millis(10));
                    rec = r;
                }
            }
        }
    }
    p.flush(Duration::from_secs(60)).expect("flush");
}

fn input_topics(cfg: &breakwater::Config) -> Vec<String> {
    let mut t: Vec<String> = cfg
        .model
        .systems()
        .iter()
        .map(|s| s.input_topic.clone())
        .collect();
    t.push(cfg.topics.reservations.clone());
    t
}

fn output_topics(cfg: &breakwater::Config) -> Vec<String> {
    let mut t: Vec<String> = cfg
        .model
        .systems()
        .iter()
        .map(|s| s.propagation_topic.clone())
        .collect();
    t.extend([
        cfg.topics.alerts.clone(),
        cfg.topics.decisions.clone(),
        cfg.topics.dead_letter.clone(),
    ]);
    t
}

/// Every committed output, by topic (without the deployment's prefix) and partition, in
/// offset order: (key, value). Incident reports are keyed by incident id, so one partition of
/// the incidents topic interleaves several tasks' reports in processing order; what is a
/// function of the input is each task's sequence of reports of each incident, so they are
/// listed by (`incidents/<incident id>`, source partition).
fn outputs(
    bootstrap: &str,
    cfg: &breakwater::Config,
    prefix: &str,
) -> BTreeMap<(String, i32), Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out: BTreeMap<(String, i32), Vec<(Vec<u8>, Vec<u8>)>> = BTreeMap::new();
    for topic in output_topics(cfg) {
        let short = topic.trim_start_matches(prefix).to_owned();
        for r in read_all(bootstrap, &topic) {
            out.entry((short.clone(), r.0))
                .or_default()
                .push((r.2.unwrap_or_default(), r.3));
        }
    }
    for r in read_all(bootstrap, &cfg.topics.incidents) {
        let rec: IncidentRecord = serde_json::from_slice(&r.3).unwrap();
        assert_eq!(
            r.2.as_deref(),
            Some(rec.incident_id.as_bytes()),
            "keyed by id"
        );
        out.entry((format!("incidents/{}", rec.incident_id), rec.partition))
            .or_default()
            .push((r.2.unwrap_or_default(), r.3));
    }
    out
}

/// Runs the binary until the group has committed everything, killing it `kills` times first.
fn run_binary(dir: &Path, text: &str, cfg: &breakwater::Config, port: u16, kills: usize) {
    let path: PathBuf = dir.join("breakwater.toml");
    std::fs::write(&path, text).unwrap();
    let log = dir.join("breakwater.log");
    let inputs = input_topics(cfg);
    let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    for i in 0..kills {
        let mut child = spawn_binary(&path, &log);
        std::thread::sleep(Duration::from_millis(1500 + 700 * i as u64));
        kill9(&mut child);
    }
    let mut child = spawn_binary(&path, &log);
    let done = std::panic::catch_unwind(|| {
        wait_ready(port, &log, Duration::from_secs(120));
        wait_caught_up(
            &cfg.kafka.bootstrap_servers,
            &cfg.kafka.group_id,
            &inputs,
            Duration::from_secs(300),
        );
    });
    if let Err(e) = done {
        kill9(&mut child);
        eprintln!("{}", common::processor::log_tail(&log, 40));
        std::panic::resume_unwind(e);
    }
    terminate(&mut child, &log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kafka broker: run `make test`"]
async fn a_retail_day_end_to_end_is_the_pure_fold_and_replays_byte_identical() {
    let bootstrap = common::bootstrap();
    let inputs = common::unique("retail-in");
    let (a_prefix, b_prefix) = (common::unique("retail-a"), common::unique("retail-b"));
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let (port_a, port_b) = (free_port(), free_port());
    let text_a = config_text(
        &bootstrap,
        &inputs,
        &a_prefix,
        &dir_a.path().join("state"),
        port_a,
    );
    let text_b = config_text(
        &bootstrap,
        &inputs,
        &b_prefix,
        &dir_b.path().join("state"),
        port_b,
    );
    let (cfg_a, cfg_b) = (config(&text_a), config(&text_b));
    breakwater::topics::create_topics(&cfg_a, PARTITIONS, 1)
        .await
        .unwrap();
    breakwater::topics::create_topics(&cfg_b, PARTITIONS, 1)
        .await
        .unwrap();

    let day = day();
    let g = generate(&day);
    assert!(!g.faults.is_empty());
    let pure = replay(&cfg_a.model, &g.inputs, day.end_ms());
    publish(&bootstrap, &cfg_a, &g.inputs);
    eprintln!("published {} inputs of a retail day", g.inputs.len());

    // A: one clean run to the end of the backlog.
    let (b, t, c) = (bootstrap.clone(), text_a.clone(), cfg_a.clone());
    let da = dir_a.path().to_owned();
    tokio::task::spawn_blocking(move || run_binary(&da, &t, &c, port_a, 0))
        .await
        .unwrap();
    let _ = b;

    // Its alerts are the pure fold's: every injected fault, nothing else. (A partition's
    // clock stops at its last record, while the pure replay fires every timer up to the
    // day's end; compare what is due by the key's partition's last record.)
    let published: Vec<AlertRecord> = read_all(&bootstrap, &cfg_a.topics.alerts)
        .into_iter()
        .map(|r| serde_json::from_slice(&r.3).unwrap())
        .collect();
    let mut partition_of: BTreeMap<Vec<u8>, i32> = BTreeMap::new();
    let mut last_ts: BTreeMap<i32, i64> = BTreeMap::new();
    for topic in input_topics(&cfg_a) {
        for r in read_all(&bootstrap, &topic) {
            partition_of.insert(r.2.clone().unwrap_or_default(), r.0);
            let t = last_ts.entry(r.0).or_insert(i64::MIN);
            *t = (*t).max(r.5);
        }
    }
    let mut want: Vec<String> = pure
        .alerts
        .iter()
        .filter(|(sku, loc, a)| {
            let p = partition_of[message_key(sku, loc).as_bytes()];
            a.opened_at.max(a.resolved_at.unwrap_or(0)) <= last_ts[&p]
        })
        .map(|(sku, loc, a)| {
            let id = alert_id(&cfg_a.model, &message_key(sku, loc), a);
            format!("{id} {:?}", a.kind)
        })
        .collect();
    let mut got: Vec<String> = published
        .iter()
        .map(|a| format!("{} {:?}", a.alert_id, a.kind))
        .collect();
    want.sort();
    got.sort();
    assert_eq!(got, want, "published alerts differ from the pure fold's");
    let scored_alerts: Vec<ScoredAlert> = published
        .iter()
        .filter(|a| a.kind != AlertKind::Resolved)
        .map(|a| ScoredAlert {
            kind: a.kind,
            system: a.system.clone(),
            sku: a.sku.clone(),
            location: a.location.clone(),
            root_event_id: a.root_cause.event_id.clone(),
        })
        .collect();
    let s = score(&g.faults, &scored_alerts);
    assert_eq!(
        (s.false_positives, s.false_negatives),
        (0, 0),
        "{:#?}",
        s.unmatched
    );
    assert!(s.true_positives > 0);
    let _ = scored;

    // Every alert's incident is reported: opened once per partition that raised it, with
    // exactly the alerts that partition published under it (no rate limit is configured).
    let mut raised: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for r in read_all(&bootstrap, &cfg_a.topics.alerts) {
        let a: AlertRecord = serde_json::from_slice(&r.3).unwrap();
        if a.kind != AlertKind::Resolved {
            *raised.entry((a.incident_id, r.0)).or_default() += 1;
        }
    }
    let mut reported: BTreeMap<(String, i32), (usize, i64)> = BTreeMap::new();
    for r in read_all(&bootstrap, &cfg_a.topics.incidents) {
        let rec: IncidentRecord = serde_json::from_slice(&r.3).unwrap();
        let e = reported
            .entry((rec.incident_id.clone(), rec.partition))
            .or_default();
        e.0 += usize::from(rec.status == IncidentStatus::Opened);
        e.1 = e.1.max(rec.alerts);
        assert_eq!(rec.suppressed, 0);
    }
    assert!(!raised.is_empty());
    for (k, n) in &raised {
        let (opened, counted) = reported.get(k).copied().unwrap_or_default();
        assert_eq!(opened, 1, "{k:?} opened once");
        // A report goes out at 1, 2, 4, ... alerts and with the final count once settled.
        assert!(
            counted <= *n && counted * 2 > *n,
            "{k:?}: {counted} reported of {n}"
        );
    }

    // The final authoritative state is the truth, for every key.
    let states = changelog_states(&bootstrap, &cfg_a);
    for ((sku, loc), t) in &g.truth {
        let st = &states[&message_key(sku, loc)];
        assert_eq!(
            (
                st.value(Measure::OnHand),
                st.value(Measure::Allocated),
                st.value(Measure::Committed),
                st.value(Measure::SafetyStock)
            ),
            (t.on_hand, t.allocated, t.committed, t.safety_stock),
            "{sku}|{loc}"
        );
    }

    // B: the same input topics, its own outputs, killed three times on the way.
    let (t, c) = (text_b.clone(), cfg_b.clone());
    let db = dir_b.path().to_owned();
    tokio::task::spawn_blocking(move || run_binary(&db, &t, &c, port_b, 3))
        .await
        .unwrap();
    let out_a = outputs(&bootstrap, &cfg_a, &a_prefix);
    let out_b = outputs(&bootstrap, &cfg_b, &b_prefix);
    let total: usize = out_a.values().map(Vec::len).sum();
    eprintln!("{total} outputs to compare");
    assert!(total > g.inputs.len() / 2, "{total} outputs");
    assert_eq!(
        out_a.keys().collect::<Vec<_>>(),
        out_b.keys().collect::<Vec<_>>()
    );
    for (k, a) in &out_a {
        let b = &out_b[k];
        assert_eq!(
            a.len(),
            b.len(),
            "{k:?}: {} vs {} records",
            a.len(),
            b.len()
        );
        if let Some(i) = (0..a.len()).find(|&i| a[i] != b[i]) {
            panic!(
                "{k:?} record {i} differs:\n A {}\n B {}",
                String::from_utf8_lossy(&a[i].1),
                String::from_utf8_lossy(&b[i].1)
            );
        }
    }
}
