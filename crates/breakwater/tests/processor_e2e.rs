//! End to end on the real broker: an independent client publishes the article's story to the
//! systems' topics, Breakwater runs, and the alerts and propagation events are read back with
//! read_committed. Garbage goes to the dead-letter topic with its reason and loses nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::type_complexity)] // tests: a panic is the failure report

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use breakwater_codec::records::{AlertRecord, PropagationRecord};
use breakwater_core::scenario::Scenario;
use breakwater_core::AlertKind;
use common::processor::{
    config, config_text, free_port, http_get, producer, read_all, send_sync, start, wait_caught_up,
    wire, with_http_port,
};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn scenario(name: &str) -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/scenarios")
        .join(name);
    let mut s: Scenario = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    // Same story, told two hours ago, so retention never touches it.
    s.start_ms = now_ms() - 2 * 3600 * 1000;
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kafka broker: run `make test`"]
async fn the_article_story_end_to_end() {
    let bootstrap = common::bootstrap();
    let prefix = common::unique("e2e");
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    let text = with_http_port(
        &config_text(&bootstrap, &prefix, state.path(), "e2e-0"),
        port,
    );
    let cfg = config(&text);
    breakwater::topics::create_topics(&cfg, 3, 1).await.unwrap();
    let mut running = Some(start(cfg.clone()));

    let story = scenario("sku-1247.toml");
    let p = producer(&bootstrap);
    let group = cfg.kafka.group_id.clone();
    let mut restarted = false;
    for (at, input) in story.inputs() {
        // Stop and start the processor after the storefront's sale: the ERP's DRIFT timer
        // (due at +5 min, fired by the next record at +6 min) must survive the restart.
        if !restarted && at >= story.at(300) {
            running.take().unwrap().stop().await;
            running = Some(start(cfg.clone()));
            restarted = true;
        }
        let (topic, key, payload) = wire(&cfg, &input);
        send_sync(&p, &topic, Some(key.as_bytes()), &payload, at);
        // One step at a time: the story's order across topics is the order it is told in.
        let b = bootstrap.clone();
        let g = group.clone();
        tokio::task::spawn_blocking(move || {
            wait_caught_up(&b, &g, &[&topic], Duration::from_secs(60))
        })
        .await
        .unwrap();
    }
    assert!(restarted);
    // The operator's view while it runs: ready, and the committed authoritative numbers.
    let (status, _) = http_get(port, "/ready");
    assert_eq!(status, 200);
    assert_eq!(http_get(port, "/health").0, 200);
    let (status, body) = http_get(port, "/v1/availability/SKU-1247?location=DC-1");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (
            v["on_hand"].as_i64(),
            v["allocated"].as_i64(),
            v["committed"].as_i64(),
            v["available"].as_i64(),
            v["version"].as_i64()
        ),
        (Some(450), Some(440), Some(5), Some(-5), Some(6)),
        "{body}"
    );
    assert_eq!(http_get(port, "/v1/availability/NOPE").0, 404);
    assert!(http_get(port, "/v1/cascade-map")
        .1
        .contains("\"storefront\""));
    // The ERP drift and the phantom alert close with the last reports; nothing else is due.
    running.take().unwrap().stop().await;

    let alerts: Vec<AlertRecord> = read_all(&bootstrap, &cfg.topics.alerts)
        .into_iter()
        .map(|r| serde_json::from_slice(&r.3).unwrap())
        .collect();
    let got: Vec<(i64, AlertKind, String, String, Vec<String>)> = alerts
        .iter()
        .map(|a| {
            let at = a.resolved_at.unwrap_or(a.opened_at);
            (
                (at - story.start_ms) / 1000,
                a.kind,
                a.system.clone(),
                a.root_cause.event_id.clone(),
                a.cascade_path.clone(),
            )
        })
        .collect();
    let want: Vec<(i64, AlertKind, String, String, Vec<String>)> = story
        .alerts
        .iter()
        .map(|a| {
            (
                a.at_secs,
                a.kind,
                a.system.clone(),
                a.root.clone(),
                a.path.clone(),
            )
        })
        .collect();
    assert_eq!(got, want, "alerts read back with read_committed");
    // Every alert id once, and each RESOLVED shares its alert's id.
    let mut ids: BTreeMap<&str, usize> = BTreeMap::new();
    for a in &alerts {
        *ids.entry(a.alert_id.as_str()).or_default() += 1;
    }
    assert!(ids.values().all(|n| *n <= 2), "{ids:?}");

    let mut props = Vec::new();
    for s in cfg.model.systems() {
        for r in read_all(&bootstrap, &s.propagation_topic) {
            let rec: PropagationRecord = serde_json::from_slice(&r.3).unwrap();
            props.push(rec);
        }
    }
    for want in &story.propagations {
        let found = props.iter().filter(|p| {
            p.target_system == want.target
                && p.version == want.version as i64
                && p.root_cause.event_id == want.root
                && (p.emitted_at - story.start_ms) / 1000 == want.at_secs
                && want.on_hand.is_none_or(|v| v == p.on_hand)
                && want.available.is_none_or(|v| v == p.available)
                && want
                    .deadline_secs
                    .is_none_or(|d| (p.deadline - story.start_ms) / 1000 == d)
        });
        assert_eq!(found.count(), 1, "propagation {want:?} exactly once");
    }
    let mut ids: Vec<&str> = props.iter().map(|p| p.propagation_id.as_str()).collect();
    let n = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n, "no propagation event published twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kafka broker: run `make test`"]
async fn garbage_goes_to_the_dead_letter_topic_and_nothing_is_lost() {
    let bootstrap = common::bootstrap();
    let prefix = common::unique("dlq");
    let state = tempfile::tempdir().unwrap();
    let cfg = config(&config_text(&bootstrap, &prefix, state.path(), "dlq-0"));
    breakwater::topics::create_topics(&cfg, 2, 1).await.unwrap();
    let running = start(cfg.clone());
    let wms = cfg.model.system_by_name("wms").unwrap().input_topic.clone();
    let erp = cfg.model.system_by_name("erp").unwrap().input_topic.clone();
    let p = producer(&bootstrap);

    let good = |i: usize| {
        serde_json::json!({
            "event_id": format!("ok-{i}"), "system": "wms", "type": "RECEIPT",
            "sku": format!("SKU-{}", i % 7), "location": "DC-1", "measure": "on_hand",
            "mode": "DELTA", "quantity": 1, "occurred_at": now_ms()
        })
    };
    // Every kind of garbage, each with the reason code it must carry.
    let garbage: Vec<(&str, Option<Vec<u8>>, Vec<u8>, &str)> = vec![
        (wms.as_str(), Some(b"SKU-1|DC-1".to_vec()), b"\x00\x01\x02\xff".to_vec(), "json_decode"),
        (wms.as_str(), Some(b"SKU-1|DC-1".to_vec()), b"{\"event_id\": 5}".to_vec(), "json_decode"),
        (wms.as_str(), Some(b"SKU-1|DC-1".to_vec()),
            serde_json::to_vec(&serde_json::json!({"event_id":"q","system":"wms","type":"RECEIPT","sku":"SKU-1","location":"DC-1","measure":"on_hand","mode":"DELTA","quantity":"fifty","occurred_at":1})).unwrap(),
            "json_decode"),
        (wms.as_str(), Some(b"SKU-1|DC-1".to_vec()),
            serde_json::to_vec(&serde_json::json!({"event_id":"neg","system":"wms","type":"RECEIPT","sku":"SKU-1","location":"DC-1","measure":"on_hand","mode":"DELTA","quantity":-5,"occurred_at":1})).unwrap(),
            "impossible_quantity"),
        (erp.as_str(), Some(b"SKU-1|DC-1".to_vec()),
            serde_json::to_vec(&serde_json::json!({"event_id":"mf","system":"mainframe","type":"SNAPSHOT","sku":"SKU-1","location":"DC-1","measure":"on_hand","mode":"ABSOLUTE","quantity":5,"occurred_at":1})).unwrap(),
            "system_mismatch"),
        (wms.as_str(), None,
            serde_json::to_vec(&serde_json::json!({"event_id":"nokey","system":"wms","type":"RECEIPT","sku":"SKU-1","location":"DC-1","measure":"on_hand","mode":"DELTA","quantity":5,"occurred_at":1})).unwrap(),
            "key_mismatch"),
        (wms.as_str(), Some(b"SKU-1|DC-1".to_vec()), b" ".to_vec(), "json_decode"),
    ];
    // Garbage interleaved with good events for a minute.
    let started = Instant::now();
    let (mut sent_good, mut sent_bad) = (0usize, BTreeMap::<&str, usize>::new());
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(60) {
        let g = good(i);
        let key = format!("SKU-{}|DC-1", i % 7);
        send_sync(
            &p,
            &wms,
            Some(key.as_bytes()),
            &serde_json::to_vec(&g).unwrap(),
            now_ms(),
        );
        sent_good += 1;
        let (topic, key, payload, code) = &garbage[i % garbage.len()];
        send_sync(&p, topic, key.as_deref(), payload, now_ms());
        *sent_bad.entry(code).or_default() += 1;
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let b = bootstrap.clone();
    let g = cfg.kafka.group_id.clone();
    let (w, e) = (wms.clone(), erp.clone());
    tokio::task::spawn_blocking(move || wait_caught_up(&b, &g, &[&w, &e], Duration::from_secs(60)))
        .await
        .unwrap();
    running.stop().await;

    let dead = read_all(&bootstrap, &cfg.topics.dead_letter);
    let mut by_code: BTreeMap<String, usize> = BTreeMap::new();
    for (_, _, _, payload, headers, _) in &dead {
        let h: BTreeMap<&str, &str> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let code = h["breakwater.dlq.reason_code"];
        *by_code.entry(code.to_owned()).or_default() += 1;
        assert!(!h["breakwater.dlq.reason"].is_empty());
        let src = h["breakwater.dlq.topic"];
        assert!(src == wms || src == erp, "{src}");
        assert!(h["breakwater.dlq.offset"].parse::<i64>().is_ok());
        // The record is unchanged.
        assert!(
            garbage.iter().any(|(_, _, p, _)| p == payload),
            "payload changed"
        );
    }
    let want: BTreeMap<String, usize> = sent_bad.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    assert_eq!(
        by_code, want,
        "every bad record dead-lettered exactly once, with its reason"
    );

    // And every good receipt counted exactly once: on_hand per SKU from the last propagation.
    let record = cfg
        .model
        .system_by_name("erp")
        .unwrap()
        .propagation_topic
        .clone();
    let mut last: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for r in read_all(&bootstrap, &record) {
        let p: PropagationRecord = serde_json::from_slice(&r.3).unwrap();
        let e = last.entry(p.sku.clone()).or_insert((0, 0));
        if p.version > e.0 {
            *e = (p.version, p.on_hand);
        }
    }
    let total: i64 = last.values().map(|(_, on_hand)| on_hand).sum();
    assert_eq!(
        total as usize, sent_good,
        "good events applied exactly once"
    );
}
