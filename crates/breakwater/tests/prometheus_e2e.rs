//! A real Prometheus (Debian's `prometheus` package) scraping the real binary on the real
//! broker, with the repo's alert rules: the key series exist with the right values, and the
//! first OVERSELL after a start fires `BreakwaterOversell`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::processor::{
    config, config_text, free_port, http_get, log_tail, producer, send_sync, spawn_binary,
    terminate, wait_caught_up, wait_ready, with_http_port,
};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Percent-encodes a PromQL expression for a query string.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The instant vector `q` evaluates to: (labels, value) per series.
fn query(port: u16, q: &str) -> Vec<(serde_json::Value, f64)> {
    let (status, body) = http_get(port, &format!("/api/v1/query?query={}", encode(q)));
    assert_eq!(status, 200, "{q}: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let value = r["value"][1].as_str().unwrap().parse::<f64>().unwrap();
            (r["metric"].clone(), value)
        })
        .collect()
}

/// Waits until `q` returns exactly one series, and returns its value.
fn one(port: u16, q: &str, until: impl Fn(f64) -> bool, log: &Path) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = query(port, q);
        if let [(_, v)] = r.as_slice() {
            if until(*v) {
                return *v;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{q} gave {r:?}; breakwater log:\n{}",
            log_tail(log, 30)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts Prometheus on loopback scraping `target` every second, evaluating the repo's alert
/// rules every second.
fn prometheus(dir: &Path, target: u16) -> (Prometheus, u16) {
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/alerts.yml");
    let port = free_port();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules:?}\n\
             scrape_configs:\n  - job_name: breakwater\n    static_configs:\n      - targets: [\"127.0.0.1:{target}\"]\n"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("prometheus (Debian's prometheus package; .ci/run installs it)");
    (Prometheus(child), port)
}

fn event(id: &str, system: &str, kind: &str, measure: &str, q: i64, at: i64) -> Vec<u8> {
    let mut e = serde_json::json!({
        "event_id": id, "system": system, "type": kind, "sku": "SKU-9", "location": "DC-1",
        "measure": measure, "mode": "DELTA", "quantity": q, "occurred_at": at
    });
    if kind == "ORDER_PLACED" {
        e["based_on_version"] = 1.into();
    }
    serde_json::to_vec(&e).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kafka broker and Prometheus: run `make test`"]
async fn prometheus_scrapes_the_series_and_the_first_oversell_fires() {
    let bootstrap = common::bootstrap();
    let prefix = common::unique("prom");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let text = with_http_port(
        &config_text(&bootstrap, &prefix, &dir.path().join("state"), "prom-0"),
        port,
    );
    let cfg = config(&text);
    breakwater::topics::create_topics(&cfg, 3, 1).await.unwrap();
    let path = dir.path().join("breakwater.toml");
    std::fs::write(&path, &text).unwrap();
    let log = dir.path().join("breakwater.log");
    let mut child = spawn_binary(&path, &log);
    let l = log.clone();
    tokio::task::spawn_blocking(move || wait_ready(port, &l, Duration::from_secs(120)))
        .await
        .unwrap();
    let (_prometheus, prom) = prometheus(dir.path(), port);
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_get(prom, "/-/ready").0 != 200 {
        assert!(
            Instant::now() < deadline,
            "Prometheus did not start: {}",
            log_tail(&dir.path().join("prometheus.log"), 20)
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Scraped before anything happened: every alert series is there, at 0.
    one(prom, "up{job=\"breakwater\"}", |v| v == 1.0, &log);
    one(
        prom,
        "breakwater_alerts_total{kind=\"OVERSELL\",system=\"storefront\"}",
        |v| v == 0.0,
        &log,
    );
    one(prom, "breakwater_ready", |v| v == 1.0, &log);
    one(
        prom,
        "sum(breakwater_assigned_partitions)",
        |v| v == 3.0,
        &log,
    );

    // 3 received at the DC, then the storefront takes an order for 5 on that version.
    let wms = cfg.model.system_by_name("wms").unwrap().input_topic.clone();
    let storefront = cfg
        .model
        .system_by_name("storefront")
        .unwrap()
        .input_topic
        .clone();
    let p = producer(&bootstrap);
    let at = now_ms() - 60_000;
    let key = b"SKU-9|DC-1";
    send_sync(
        &p,
        &wms,
        Some(key),
        &event("rcv-1", "wms", "RECEIPT", "on_hand", 3, at),
        at,
    );
    send_sync(
        &p,
        &storefront,
        Some(key),
        &event(
            "order-1",
            "storefront",
            "ORDER_PLACED",
            "committed",
            5,
            at + 1000,
        ),
        at + 1000,
    );
    let (b, g) = (bootstrap.clone(), cfg.kafka.group_id.clone());
    tokio::task::spawn_blocking(move || {
        wait_caught_up(&b, &g, &[&wms, &storefront], Duration::from_secs(60))
    })
    .await
    .unwrap();

    one(
        prom,
        "breakwater_alerts_total{kind=\"OVERSELL\",system=\"storefront\"}",
        |v| v == 1.0,
        &log,
    );
    one(
        prom,
        "sum(breakwater_input_records_total{outcome=\"applied\"})",
        |v| v == 2.0,
        &log,
    );
    one(
        prom,
        "sum(breakwater_commits_total{outcome=\"aborted\"})",
        |v| v == 0.0,
        &log,
    );
    one(
        prom,
        "sum(breakwater_rocksdb_estimated_keys)",
        |v| v >= 1.0,
        &log,
    );
    one(
        prom,
        "count(breakwater_stream_time_seconds)",
        |v| v >= 1.0,
        &log,
    );
    // Caught up: no lag on any input partition (offsets are committed through the
    // transaction, which librdkafka's own consumer_lag does not see).
    one(
        prom,
        "count(breakwater_consumer_lag_records)",
        |v| v >= 6.0,
        &log,
    );
    one(
        prom,
        "max(breakwater_consumer_lag_records)",
        |v| v == 0.0,
        &log,
    );
    one(prom, "process_resident_memory_bytes", |v| v > 0.0, &log);
    let build = query(prom, "breakwater_build_info");
    assert_eq!(build.len(), 1, "{build:?}");
    assert_eq!(build[0].0["version"], env!("CARGO_PKG_VERSION"));

    // The rule fires in Prometheus: the series was there at 0 before the first OVERSELL.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = http_get(prom, "/api/v1/alerts");
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let firing = v["data"]["alerts"].as_array().unwrap().iter().any(|a| {
            a["labels"]["alertname"] == "BreakwaterOversell"
                && a["labels"]["system"] == "storefront"
                && a["state"] == "firing"
        });
        if firing {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "BreakwaterOversell is not firing: {body}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    terminate(&mut child, &log);
}
