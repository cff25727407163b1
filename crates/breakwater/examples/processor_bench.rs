//! Drives the processor on a real broker and prints events/s and the latency from a root
//! event's produce time to its propagation event becoming visible to a read_committed reader.
//!
//! At saturation (rate 0) the whole input is produced first and the figure is how fast the
//! processor drains that backlog (latency is then mostly queueing, so only throughput is
//! printed). At a fixed rate the processor has joined and restored before the first event,
//! and the latency percentiles are the figure.
//!
//! ```sh
//! BREAKWATER_KAFKA_BOOTSTRAP=$(bash scripts/kafka.sh start | tail -1) \
//!   cargo run --release -p breakwater --example processor_bench -- 200000 20000
//! ```
//! Arguments: events (default 100000), offered rate in events/s (default 0: saturation),
//! keys (default 10000), partitions (default 4).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a panic is the report

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use breakwater::processor::Shared;
use breakwater::Config;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn arg(i: usize, default: u64) -> u64 {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let events = arg(1, 100_000) as usize;
    let rate = arg(2, 0);
    let keys = arg(3, 10_000) as usize;
    let partitions = arg(4, 4) as i32;
    let bootstrap =
        std::env::var("BREAKWATER_KAFKA_BOOTSTRAP").expect("set BREAKWATER_KAFKA_BOOTSTRAP");
    let prefix = format!("bench-{}", now_ms());
    let state = std::env::temp_dir().join(&prefix);
    let text = breakwater::demo::isolated_example(&bootstrap, &prefix, &state, "bench");
    let cfg = Config::from_toml(&text).unwrap();
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(breakwater::topics::create_topics(&cfg, partitions, 1))
        .unwrap();
    println!(
        "settings: events={events} offered_rate={} keys={keys} partitions={partitions} \
         commit_interval_ms={} max_batch_records={} format=json build={}",
        if rate == 0 {
            "saturation".into()
        } else {
            format!("{rate}/s")
        },
        cfg.processor.commit_interval_ms,
        cfg.processor.max_batch_records,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    let shared = Arc::new(Shared::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let start_processor = |rt: &tokio::runtime::Runtime| {
        rt.spawn(breakwater::service::run_with(
            cfg.clone(),
            None,
            Arc::clone(&shared),
            async move {
                let _ = stopped.await;
            },
        ))
    };

    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", format!("{prefix}-reader"))
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    let erp = cfg
        .model
        .system_by_name("erp")
        .unwrap()
        .propagation_topic
        .clone();
    reader.subscribe(&[&erp]).unwrap();
    let wms = cfg.model.system_by_name("wms").unwrap().input_topic.clone();

    // Saturation: the whole input is on the topic before the processor starts, so the figure
    // is the rate at which it drains a backlog. Fixed load: the processor has joined and
    // restored before the first event is produced.
    let (running, produced) = if rate == 0 {
        produce(&bootstrap, &wms, events, 0, keys);
        println!("backlog of {events} events produced; starting the processor");
        (start_processor(&rt), None)
    } else {
        let running = start_processor(&rt);
        let ready_by = Instant::now() + Duration::from_secs(120);
        while !shared.ready.load(Ordering::SeqCst) {
            assert!(Instant::now() < ready_by, "processor not ready after 120 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        let (b, t) = (bootstrap.clone(), wms.clone());
        let h = std::thread::spawn(move || produce(&b, &t, events, rate, keys));
        (running, Some(h))
    };

    // Every receipt changes on_hand, so each produces one propagation to the ERP.
    let started = Instant::now();
    let mut first_output = None;
    let mut latencies = Vec::with_capacity(events);
    let deadline = Instant::now() + Duration::from_secs(900);
    while latencies.len() < events && Instant::now() < deadline {
        if let Some(Ok(m)) = reader.poll(Duration::from_millis(100)) {
            let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            let produced_at = v["root_cause"]["occurred_at"].as_i64().unwrap();
            latencies.push(now_ms() - produced_at);
            first_output.get_or_insert_with(Instant::now);
        }
    }
    let done = Instant::now();
    if let Some(h) = produced {
        h.join().unwrap();
    }
    let _ = stop.send(());
    let _ = rt.block_on(running);
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len().max(1) as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0)
    };
    let first_output = first_output.unwrap_or(done);
    if rate == 0 {
        let drain = done.duration_since(first_output).as_secs_f64();
        println!(
            "saturation: {} of {events} events drained in {drain:.1} s after the first output = \
             {:.0} events/s (join and restore before the first output: {:.1} s)",
            latencies.len(),
            latencies.len() as f64 / drain.max(1e-9),
            first_output.duration_since(started).as_secs_f64(),
        );
    } else {
        let elapsed = done.duration_since(started).as_secs_f64();
        println!(
            "fixed load: {} of {events} events in {elapsed:.1} s = {:.0} events/s; latency \
             produce -> committed propagation: p50 {} ms, p99 {} ms, max {} ms",
            latencies.len(),
            latencies.len() as f64 / elapsed,
            pct(0.5),
            pct(0.99),
            latencies.last().copied().unwrap_or(0)
        );
    }
    // The processor's own view: how long a commit (one Kafka transaction and one RocksDB
    // batch) takes and how many input records it carries.
    let text = metrics.render();
    let summary = |name: &str| {
        let get = |suffix: &str| {
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .find_map(|l| l.strip_prefix(&format!("{name}{suffix} ")))
                .and_then(|v| v.trim().parse::<f64>().ok())
        };
        let q = |quantile: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}{{quantile=\"{quantile}\"}} ")))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(f64::NAN)
        };
        let (sum, count) = (get("_sum").unwrap_or(0.0), get("_count").unwrap_or(0.0));
        (count, sum / count.max(1.0), q("0.5"), q("0.99"))
    };
    let (commits, mean, p50, p99) = summary(breakwater::metrics::COMMIT_DURATION);
    let (_, records, _, _) = summary(breakwater::metrics::COMMIT_RECORDS);
    println!(
        "commits: {commits:.0}, duration mean {:.1} ms, p50 {:.1} ms, p99 {:.1} ms; \
         {records:.0} input records per commit on average",
        mean * 1e3,
        p50 * 1e3,
        p99 * 1e3
    );
    let _ = std::fs::remove_dir_all(&state);
}

/// Produces `events` WMS receipts over `keys` keys, at `rate` per second (0: as fast as the
/// producer goes), then flushes.
fn produce(bootstrap: &str, topic: &str, events: usize, rate: u64, keys: usize) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let started = Instant::now();
    for i in 0..events {
        if rate > 0 {
            let due = Duration::from_secs_f64(i as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let sku = format!("SKU-{}", i % keys);
        let key = format!("{sku}|DC-1");
        let payload = serde_json::to_vec(&serde_json::json!({
            "event_id": format!("b{i}"), "system": "wms", "type": "RECEIPT", "sku": sku,
            "location": "DC-1", "measure": "on_hand", "mode": "DELTA", "quantity": 1,
            "occurred_at": now_ms()
        }))
        .unwrap();
        loop {
            match p.send(BaseRecord::to(topic).key(&key).payload(&payload)) {
                Ok(()) => break,
                Err((_, _)) => {
                    p.poll(Duration::from_millis(5));
                }
            }
        }
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(120)).unwrap();
}
