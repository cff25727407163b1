//! `breakwater demo`: the article's SKU-1247 story through the real processor on an
//! in-process Kafka (librdkafka's mock cluster), told twice: as the stack runs today (batch
//! handoffs, no checks) and with Breakwater's propagation and shared ledger in use.
//!
//! The mock cluster does not enforce transactions for read_committed readers, which is why
//! exactly-once is tested on a real broker; for showing the story it is all one needs.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use breakwater_codec::records::{AlertRecord, DecisionRecord};
use breakwater_core::message_key;
use breakwater_core::scenario::{Scenario, ScenarioInput};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use crate::config::Config;
use crate::processor::Shared;
use crate::topics::all_topics;

const CONFIG: &str = include_str!("../../../deploy/breakwater.toml");
const STORIES: [(&str, &str); 2] = [
    (
        "Today: batch handoffs, nobody checks",
        include_str!("../../../testdata/scenarios/sku-1247.toml"),
    ),
    (
        "With Breakwater: propagation consumed, the ledger asked first",
        include_str!("../../../testdata/scenarios/sku-1247-propagated.toml"),
    ),
];

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Kafka (the mock cluster or a client) failed.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A bundled file did not parse.
    #[error("bundled {what}: {detail}")]
    Bundled {
        /// Which file.
        what: &'static str,
        /// Why.
        detail: String,
    },
    /// The processor failed.
    #[error(transparent)]
    Run(#[from] crate::service::RunError),
    /// Writing the report failed.
    #[error("writing the report: {0}")]
    Io(#[from] std::io::Error),
    /// The processor did not take a step within the time allowed.
    #[error("the processor did not process step {0} in time")]
    Stalled(usize),
}

/// What one telling of the story produced.
#[derive(Debug, Default)]
pub struct Told {
    /// Alerts, in order.
    pub alerts: Vec<AlertRecord>,
    /// Reservation decisions, in order.
    pub decisions: Vec<DecisionRecord>,
    /// Propagation events published.
    pub propagations: usize,
}

/// Runs the demo, writing the report to `out`. Returns what each telling produced.
///
/// # Errors
/// [`DemoError`].
pub async fn run(out: &mut (impl Write + Send)) -> Result<Vec<Told>, DemoError> {
    let cluster = MockCluster::new(1)?;
    let bootstrap = cluster.bootstrap_servers();
    let state = std::env::temp_dir().join(format!("breakwater-demo-{}", std::process::id()));
    let mut results = Vec::new();
    for (i, (title, text)) in STORIES.iter().enumerate() {
        let scenario: Scenario = toml::from_str(text).map_err(|e| DemoError::Bundled {
            what: "scenario",
            detail: e.to_string(),
        })?;
        let prefix = format!("demo{i}");
        let cfg = demo_config(&bootstrap, &prefix, &state.join(&prefix))?;
        for (t, _) in all_topics(&cfg) {
            cluster.create_topic(&t, 1, 1)?;
        }
        if i == 0 {
            print_map(out, &cfg)?;
        }
        writeln!(out, "\n=== {title} ===\n{}\n", scenario.description)?;
        let told = tell(&cfg, &bootstrap, &scenario, out).await?;
        results.push(told);
    }
    let _ = std::fs::remove_dir_all(&state);
    Ok(results)
}

/// The example configuration (`deploy/breakwater.toml`) made self-contained for a demo, a
/// test or a benchmark: every topic prefixed with `prefix`, its own consumer group and
/// instance id, `bootstrap` as the broker, state under `dir`, HTTP on an ephemeral port, and
/// timers driven by record timestamps only (no wall-clock ticks between a story's steps).
pub fn isolated_example(
    bootstrap: &str,
    prefix: &str,
    dir: &std::path::Path,
    instance: &str,
) -> String {
    CONFIG
        .replace("\"inventory.", &format!("\"{prefix}.inventory."))
        .replace("\"breakwater.", &format!("\"{prefix}.breakwater."))
        .replace(
            "bootstrap_servers = \"127.0.0.1:9092\"",
            &format!("bootstrap_servers = \"{bootstrap}\""),
        )
        .replace(
            "group_id = \"breakwater\"",
            &format!("group_id = \"{prefix}\""),
        )
        .replace(
            "# instance_id = \"breakwater-0\"",
            &format!("instance_id = \"{instance}\""),
        )
        .replace(
            "dir = \"/var/lib/breakwater\"",
            &format!("dir = {:?}", dir.display().to_string()),
        )
        .replace("listen = \"0.0.0.0:9464\"", "listen = \"127.0.0.1:0\"")
        .replace("tick_interval_ms = 1000", "tick_interval_ms = 86400000")
}

fn demo_config(bootstrap: &str, prefix: &str, dir: &std::path::Path) -> Result<Config, DemoError> {
    let text = isolated_example(bootstrap, prefix, dir, "demo")
        // A demo is never restarted: static membership buys nothing here.
        .replace("static_membership = true", "static_membership = false")
        .replace("commit_interval_ms = 100", "commit_interval_ms = 20");
    Config::from_toml(&text).map_err(|e| DemoError::Bundled {
        what: "config",
        detail: e.to_string(),
    })
}

fn print_map(out: &mut impl Write, cfg: &Config) -> std::io::Result<()> {
    writeln!(out, "Cascade map (deploy/breakwater.toml):")?;
    for s in cfg.model.systems() {
        let facing = if s.customer_facing {
            "  [customer-facing]"
        } else {
            ""
        };
        writeln!(out, "  {:<11}{facing}", s.name)?;
    }
    for h in cfg.model.handoffs() {
        writeln!(
            out,
            "  {:>10} --> {:<11} window {:>4} s",
            h.from,
            h.to,
            h.window_ms / 1000
        )?;
    }
    Ok(())
}

async fn tell(
    cfg: &Config,
    bootstrap: &str,
    scenario: &Scenario,
    out: &mut (impl Write + Send),
) -> Result<Told, DemoError> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shared = Arc::new(Shared::default());
    let running = tokio::spawn(crate::service::run_with(
        cfg.clone(),
        None,
        Arc::clone(&shared),
        async move {
            let _ = stopped.await;
        },
    ));
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    // The story starts two hours ago, so its timestamps are recent.
    let start = crate::processor::wall_ms() - 2 * 3600 * 1000;
    let mut scenario = scenario.clone();
    scenario.start_ms = start;
    for (n, (at, input)) in scenario.inputs().into_iter().enumerate() {
        let (topic, payload) = match &input {
            ScenarioInput::Event(e) => (
                cfg.model
                    .system_by_name(&e.system)
                    .map(|s| s.input_topic.clone())
                    .unwrap_or_default(),
                serde_json::to_vec(e).unwrap_or_default(),
            ),
            ScenarioInput::Command(c) => (
                cfg.topics.reservations.clone(),
                serde_json::to_vec(c).unwrap_or_default(),
            ),
        };
        let (sku, loc) = input.key();
        let key = message_key(sku, loc);
        producer
            .send(
                BaseRecord::to(&topic)
                    .key(&key)
                    .payload(&payload)
                    .timestamp(at),
            )
            .map_err(|(e, _)| e)?;
        producer.flush(Duration::from_secs(10))?;
        // One step at a time, so the story's order across topics is the order it is told in.
        wait_committed(&shared, n).await?;
    }
    let _ = stop.send(());
    if let Ok(r) = running.await {
        r?;
    }
    let mut told = Told::default();
    for (_, v) in read(bootstrap, &cfg.topics.alerts)? {
        if let Ok(a) = serde_json::from_slice::<AlertRecord>(&v) {
            told.alerts.push(a);
        }
    }
    for (_, v) in read(bootstrap, &cfg.topics.decisions)? {
        if let Ok(d) = serde_json::from_slice::<DecisionRecord>(&v) {
            told.decisions.push(d);
        }
    }
    for s in cfg.model.systems() {
        told.propagations += read(bootstrap, &s.propagation_topic)?.len();
    }
    report(out, start, &told)?;
    Ok(told)
}

async fn wait_committed(shared: &Shared, step: usize) -> Result<(), DemoError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while shared.committed_records.load(Ordering::SeqCst) <= step as u64 {
        if Instant::now() > deadline {
            return Err(DemoError::Stalled(step));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

fn read(bootstrap: &str, topic: &str) -> Result<Vec<(i64, Vec<u8>)>, DemoError> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "breakwater-demo-reader")
        .create()?;
    let (_, high) = c.fetch_watermarks(topic, 0, Duration::from_secs(5))?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)?;
    c.assign(&tpl)?;
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while (out.len() as i64) < high && Instant::now() < deadline {
        if let Some(m) = c.poll(Duration::from_millis(50)) {
            let m = m?;
            out.push((m.offset(), m.payload().unwrap_or_default().to_vec()));
        }
    }
    Ok(out)
}

fn report(out: &mut impl Write, start: i64, told: &Told) -> std::io::Result<()> {
    let clock = |t: i64| {
        let s = (t - start) / 1000;
        format!(
            "{}{:02}:{:02}",
            if s < 0 { "-" } else { "+" },
            s.abs() / 60,
            s.abs() % 60
        )
    };
    if told.alerts.is_empty() {
        writeln!(out, "  no alerts")?;
    }
    for a in &told.alerts {
        let at = a.resolved_at.unwrap_or(a.opened_at);
        let what = match a.resolves {
            Some(k) => format!("RESOLVED {}", k.as_str()),
            None => a.kind.as_str().to_owned(),
        };
        writeln!(
            out,
            "  {}  {:<30} {:<10} {:<12} expected {:>4}  observed {:>4}",
            clock(at),
            what,
            a.system,
            a.measure.as_str(),
            a.expected,
            a.observed
        )?;
        writeln!(
            out,
            "          root cause {} ({} at {}), path {}",
            a.root_cause.event_id,
            a.root_cause.event_type,
            a.root_cause.system,
            a.cascade_path.join(" -> ")
        )?;
    }
    for d in &told.decisions {
        writeln!(
            out,
            "  {}  reservation {} {:?}{} (sellable {})",
            clock(d.decided_at),
            d.reservation_id,
            d.decision,
            d.reason.map(|r| format!(" {r:?}")).unwrap_or_default(),
            d.available
        )?;
    }
    writeln!(out, "  {} propagation events published", told.propagations)
}
