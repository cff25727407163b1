//! The configuration file: one TOML file, every key overridable from the environment as
//! `BREAKWATER_<SECTION>__<KEY>` (for example `BREAKWATER_KAFKA__BOOTSTRAP_SERVERS`), layered
//! with `figment`.
//!
//! Loading reports every problem at once, each with its key path: each section and each
//! `[[systems]]`/`[[handoffs]]` entry is deserialised on its own so one typo does not hide the
//! next, and the cross-field rules (unknown systems, missing authorities, zero windows,
//! duplicate topics, forbidden librdkafka keys) run over everything that parsed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use breakwater_core::model::{
    AlertsConfig, CascadeConfig, ConfigErrors, HandoffConfig, MeasuresConfig, RulesConfig,
    SystemConfig,
};
use breakwater_core::Model;
use figment::providers::{Env, Format as _, Serialized, Toml};
use figment::Figment;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The prefix of environment overrides.
pub const ENV_PREFIX: &str = "BREAKWATER_";

/// librdkafka keys Breakwater's exactly-once protocol owns. Setting them through
/// `librdkafka_options` would silently break it, so they are rejected.
pub const FORBIDDEN_LIBRDKAFKA_KEYS: &[(&str, &str)] = &[
    (
        "enable.auto.commit",
        "offsets are committed inside Kafka transactions",
    ),
    (
        "enable.auto.offset.store",
        "offsets are stored inside Kafka transactions",
    ),
    (
        "isolation.level",
        "Breakwater reads with read_committed so aborted outputs are never input",
    ),
    (
        "transactional.id",
        "derived per instance from kafka.group_id so fencing works",
    ),
    (
        "enable.idempotence",
        "required by the transactional producer",
    ),
    ("group.id", "set it with kafka.group_id"),
    ("bootstrap.servers", "set it with kafka.bootstrap_servers"),
];

/// Wire format of every topic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One JSON object per record, field names as in the Avro schemas.
    #[default]
    Json,
    /// Confluent-framed Avro through a Schema Registry.
    Avro,
}

/// `[kafka]`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port[,host:port...]` (librdkafka `bootstrap.servers`).
    pub bootstrap_servers: String,
    /// The consumer group of this deployment; also the prefix of transactional ids.
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// Wire format of every topic.
    #[serde(default)]
    pub format: Format,
    /// Schema Registry URL; required when `format = "avro"`.
    #[serde(default)]
    pub schema_registry_url: Option<String>,
    /// This instance's name within the group, stable across restarts: the transactional id
    /// is `<group_id>-<instance_id>`, so a restarted instance fences its crashed self and
    /// aborts its open transaction at once. Defaults to `$HOSTNAME` (a pod or container name);
    /// `breakwater run` refuses to start without one, since two instances sharing a default
    /// would fence each other for ever.
    #[serde(default = "default_instance_id")]
    pub instance_id: String,
    /// Join the group as a static member (`group.instance.id` = `instance_id`): a restarted
    /// instance gets its partitions back at once, without a rebalance; a stopped one keeps
    /// them until `session.timeout.ms` passes. Default true.
    #[serde(default = "default_true")]
    pub static_membership: bool,
    /// Kafka transaction timeout (librdkafka `transaction.timeout.ms`). Bounds how long a
    /// crashed instance's open transaction blocks read_committed readers when it does not
    /// come back under the same instance id. Breakwater's default is 10000; librdkafka's is
    /// 60000.
    #[serde(default = "default_transaction_timeout_ms")]
    pub transaction_timeout_ms: u64,
    /// Passed to librdkafka as-is (security, tuning). Values are redacted in `Debug`.
    #[serde(default)]
    pub librdkafka_options: BTreeMap<String, String>,
}

fn default_group_id() -> String {
    "breakwater".to_owned()
}

const fn default_true() -> bool {
    true
}

const fn default_transaction_timeout_ms() -> u64 {
    10_000
}

fn default_instance_id() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_default()
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let options: BTreeMap<&str, &str> = self
            .librdkafka_options
            .iter()
            .map(|(k, v)| {
                let v = if is_secret(k) {
                    "<redacted>"
                } else {
                    v.as_str()
                };
                (k.as_str(), v)
            })
            .collect();
        f.debug_struct("KafkaConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("group_id", &self.group_id)
            .field("instance_id", &self.instance_id)
            .field("static_membership", &self.static_membership)
            .field("format", &self.format)
            .field("schema_registry_url", &self.schema_registry_url)
            .field("transaction_timeout_ms", &self.transaction_timeout_ms)
            .field("librdkafka_options", &options)
            .finish()
    }
}

/// Whether a librdkafka key holds a secret, by its name: passwords, passphrases, client
/// secrets, private keys given inline, the OAUTHBEARER config (it may carry a token). A key
/// that only names where a secret lives (`ssl.key.location`) is not one.
pub fn is_secret(key: &str) -> bool {
    [".password", ".passphrase", ".secret"]
        .iter()
        .any(|s| key.ends_with(s))
        || [
            "ssl.key.pem",
            "ssl_key",
            "sasl.oauthbearer.config",
            "sasl.oauthbearer.assertion.private.key.pem",
        ]
        .contains(&key)
}

/// The prefix of environment variables that set one librdkafka option each:
/// `BREAKWATER_KAFKA_OPTION_SASL_PASSWORD=...` sets `sasl.password` (the rest of the name,
/// lowercased, `_` for `.`), and `BREAKWATER_KAFKA_OPTION_SASL_PASSWORD_FILE=/run/secrets/x`
/// reads it from that file (a container secret; one trailing newline is dropped). They
/// override `[kafka.librdkafka_options]` in the file; the figment overrides
/// (`BREAKWATER_SECTION__KEY`) cannot express a key with dots.
pub const ENV_OPTION_PREFIX: &str = "BREAKWATER_KAFKA_OPTION_";

/// The librdkafka options set by `vars` ([`ENV_OPTION_PREFIX`]), and the problems with them
/// (a secret file that cannot be read, an option set both ways).
fn env_options(
    vars: impl Iterator<Item = (String, String)>,
) -> (BTreeMap<String, String>, ConfigErrors) {
    let mut options = BTreeMap::new();
    let mut errs = ConfigErrors(Vec::new());
    let mut from_file = BTreeSet::new();
    for (var, value) in vars {
        let Some(name) = var.strip_prefix(ENV_OPTION_PREFIX) else {
            continue;
        };
        let (name, file) = match name.strip_suffix("_FILE") {
            Some(n) => (n, true),
            None => (name, false),
        };
        if name.is_empty() {
            errs.push(var.clone(), "names no librdkafka option");
            continue;
        }
        let key = name.to_ascii_lowercase().replace('_', ".");
        let value = if file {
            match std::fs::read_to_string(&value) {
                Ok(v) => v.strip_suffix('\n').map(str::to_owned).unwrap_or(v),
                Err(e) => {
                    errs.push(var.clone(), format!("cannot read {value:?}: {e}"));
                    continue;
                }
            }
        } else {
            value
        };
        if (file && options.contains_key(&key)) || (!file && from_file.contains(&key)) {
            errs.push(
                var.clone(),
                format!("{key} is set both directly and from a file; set one"),
            );
            continue;
        }
        if file {
            from_file.insert(key.clone());
        }
        options.insert(key, value);
    }
    (options, errs)
}

/// `[topics]`: Breakwater's own topics. Systems' topics are in `[[systems]]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicsConfig {
    /// Reservation commands in.
    #[serde(default = "topic_reservations")]
    pub reservations: String,
    /// Alerts out.
    #[serde(default = "topic_alerts")]
    pub alerts: String,
    /// Reservation decisions out.
    #[serde(default = "topic_decisions")]
    pub decisions: String,
    /// Incident reports out (OPENED/UPDATED/RESOLVED), keyed by incident id.
    #[serde(default = "topic_incidents")]
    pub incidents: String,
    /// Undecodable or invalid records, unchanged, with the reason in headers.
    #[serde(default = "topic_dead_letter")]
    pub dead_letter: String,
    /// Per-key state, compacted, for restoring a partition elsewhere.
    #[serde(default = "topic_changelog")]
    pub changelog: String,
    /// Clock ticks Breakwater writes for idle partitions, so timers fire on time and replay
    /// sees the same clock.
    #[serde(default = "topic_ticks")]
    pub ticks: String,
}

fn topic_reservations() -> String {
    "breakwater.reservations".into()
}
fn topic_alerts() -> String {
    "breakwater.alerts".into()
}
fn topic_decisions() -> String {
    "breakwater.reservation-decisions".into()
}
fn topic_incidents() -> String {
    "breakwater.incidents".into()
}
fn topic_dead_letter() -> String {
    "breakwater.dead-letter".into()
}
fn topic_changelog() -> String {
    "breakwater.changelog".into()
}
fn topic_ticks() -> String {
    "breakwater.ticks".into()
}

impl Default for TopicsConfig {
    fn default() -> Self {
        TopicsConfig {
            reservations: topic_reservations(),
            alerts: topic_alerts(),
            decisions: topic_decisions(),
            incidents: topic_incidents(),
            dead_letter: topic_dead_letter(),
            changelog: topic_changelog(),
            ticks: topic_ticks(),
        }
    }
}

/// `[http]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of `/metrics`, `/health`, `/ready`, availability and the cascade map.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
}

/// Loopback unless configured: the API answers availability reads for anyone who can reach
/// it, so exposing it is a decision (`listen = "0.0.0.0:9464"` in a container, behind a
/// network policy).
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_listen(),
        }
    }
}

/// `[state]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// RocksDB directory, one sub-directory per partition.
    #[serde(default = "default_state_dir")]
    pub dir: PathBuf,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("breakwater-state")
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            dir: default_state_dir(),
        }
    }
}

/// `[processor]`: batching, clocks and limits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessorConfig {
    /// Commit (one Kafka transaction and one RocksDB batch) at least this often.
    #[serde(default = "default_commit_interval_ms")]
    pub commit_interval_ms: u64,
    /// ...or after this many input records, whichever comes first.
    #[serde(default = "default_max_batch_records")]
    pub max_batch_records: usize,
    /// A partition with no input for this long gets a clock tick, so its timers fire.
    #[serde(default = "default_tick_interval_ms")]
    pub tick_interval_ms: u64,
    /// Key states kept in memory per partition between batches.
    #[serde(default = "default_max_cached_keys")]
    pub max_cached_keys: usize,
    /// Hard deadline for a graceful shutdown (drain, commit, leave the group).
    #[serde(default = "default_shutdown_timeout_ms")]
    pub shutdown_timeout_ms: u64,
    /// How long a task waits for an input partition that has records at the broker but none
    /// fetched yet, before folding its other partitions without it (Kafka Streams'
    /// `max.task.idle.ms`). Records of a task's partitions are folded in timestamp order; a
    /// partition known to be caught up is never waited for.
    #[serde(default = "default_max_task_idle_ms")]
    pub max_task_idle_ms: u64,
}

const fn default_commit_interval_ms() -> u64 {
    100
}
const fn default_max_batch_records() -> usize {
    20_000
}
const fn default_tick_interval_ms() -> u64 {
    1_000
}
const fn default_max_cached_keys() -> usize {
    200_000
}
const fn default_shutdown_timeout_ms() -> u64 {
    30_000
}
/// A fetch from a healthy broker arrives in milliseconds; the bound only matters when one is
/// slow or a partition cannot be told caught up.
const fn default_max_task_idle_ms() -> u64 {
    5_000
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        ProcessorConfig {
            commit_interval_ms: default_commit_interval_ms(),
            max_batch_records: default_max_batch_records(),
            tick_interval_ms: default_tick_interval_ms(),
            max_cached_keys: default_max_cached_keys(),
            max_task_idle_ms: default_max_task_idle_ms(),
            shutdown_timeout_ms: default_shutdown_timeout_ms(),
        }
    }
}

/// The whole configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// `[kafka]`.
    pub kafka: KafkaConfig,
    /// `[topics]`.
    pub topics: TopicsConfig,
    /// `[http]`.
    pub http: HttpConfig,
    /// `[state]`.
    pub state: StateConfig,
    /// `[processor]`.
    pub processor: ProcessorConfig,
    /// `[[systems]]`, `[measures]`, `[[handoffs]]`, `[alerts]`.
    pub cascade: CascadeConfig,
    /// The compiled cascade map.
    pub model: Model,
}

/// The top-level keys of the file.
const SECTIONS: &[&str] = &[
    "kafka",
    "topics",
    "http",
    "state",
    "processor",
    "systems",
    "measures",
    "handoffs",
    "alerts",
    "rules",
];

impl Config {
    /// Loads `path`, applies `BREAKWATER_*` environment overrides and validates everything.
    ///
    /// # Errors
    /// [`ConfigErrors`] naming every problem with its key path.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        if !path.is_file() {
            let mut e = ConfigErrors(Vec::new());
            e.push(
                path.display().to_string(),
                "no such file (pass --config FILE)",
            );
            return Err(e);
        }
        let (options, mut problems) = env_options(std::env::vars());
        let loaded = Config::from_figment(
            Figment::new()
                .merge(Toml::file_exact(path))
                // Only `BREAKWATER_<SECTION>__<KEY>`: other BREAKWATER_* variables (the
                // CLI's BREAKWATER_CONFIG, a test's broker address) are not settings.
                .merge(
                    Env::prefixed(ENV_PREFIX)
                        .filter(|k| k.as_str().contains("__"))
                        .split("__"),
                )
                .merge(Serialized::default("kafka.librdkafka_options", options)),
        );
        match loaded {
            Ok(c) if problems.0.is_empty() => Ok(c),
            Ok(_) => Err(problems),
            Err(mut errs) => {
                errs.0.append(&mut problems.0);
                Err(errs)
            }
        }
    }

    /// Parses TOML text without environment overrides (tests, `breakwater demo`).
    ///
    /// # Errors
    /// [`ConfigErrors`] naming every problem with its key path.
    pub fn from_toml(text: &str) -> Result<Config, ConfigErrors> {
        Config::from_figment(Figment::new().merge(Toml::string(text)))
    }

    fn from_figment(fig: Figment) -> Result<Config, ConfigErrors> {
        let mut errs = ConfigErrors(Vec::new());
        match fig.extract::<BTreeMap<String, figment::value::Value>>() {
            Ok(top) => {
                for key in top.keys() {
                    if !SECTIONS.contains(&key.as_str()) {
                        errs.push(
                            key.clone(),
                            format!("unknown section (expected one of: {})", SECTIONS.join(", ")),
                        );
                    }
                }
            }
            Err(e) => {
                errs.push("(file)", e.to_string());
                return Err(errs);
            }
        }
        let kafka: Option<KafkaConfig> = section(&fig, "kafka", &mut errs, None);
        let topics = section(&fig, "topics", &mut errs, Some(TopicsConfig::default()));
        let http = section(&fig, "http", &mut errs, Some(HttpConfig::default()));
        let state = section(&fig, "state", &mut errs, Some(StateConfig::default()));
        let processor = section(
            &fig,
            "processor",
            &mut errs,
            Some(ProcessorConfig::default()),
        );
        let measures = section(&fig, "measures", &mut errs, Some(MeasuresConfig::default()));
        let alerts = section(&fig, "alerts", &mut errs, Some(AlertsConfig::default()));
        let rules = section(&fig, "rules", &mut errs, Some(RulesConfig::default()));
        let systems: Vec<SystemConfig> = entries(&fig, "systems", &mut errs);
        let handoffs: Vec<HandoffConfig> = entries(&fig, "handoffs", &mut errs);

        if let Some(k) = &kafka {
            validate_kafka(k, &mut errs);
        }
        if let Some(p) = &processor {
            validate_processor(p, &mut errs);
        }
        if let Some(t) = &topics {
            validate_topics(t, &systems, &mut errs);
        }
        let cascade = CascadeConfig {
            systems,
            measures: measures.unwrap_or_default(),
            handoffs,
            alerts: alerts.unwrap_or_default(),
            rules: rules.unwrap_or_default(),
        };
        let model = match Model::build(&cascade) {
            Ok(m) => Some(m),
            Err(e) => {
                errs.0.extend(e.0);
                None
            }
        };
        match (kafka, topics, http, state, processor, model) {
            (Some(kafka), Some(topics), Some(http), Some(state), Some(processor), Some(model))
                if errs.0.is_empty() =>
            {
                Ok(Config {
                    kafka,
                    topics,
                    http,
                    state,
                    processor,
                    cascade,
                    model,
                })
            }
            _ => Err(errs),
        }
    }
}

/// Deserialises one section on its own, recording its error; `default` when it is absent.
fn section<T: DeserializeOwned>(
    fig: &Figment,
    name: &str,
    errs: &mut ConfigErrors,
    default: Option<T>,
) -> Option<T> {
    if fig.find_value(name).is_err() {
        if default.is_none() {
            errs.push(name, "missing section");
        }
        return default;
    }
    match fig.extract_inner::<T>(name) {
        Ok(v) => Some(v),
        Err(e) => {
            for e in e {
                // figment appends the `extract_inner` path after the field path.
                let mut path = vec![name];
                path.extend(
                    e.path
                        .iter()
                        .map(String::as_str)
                        .take(e.path.len().saturating_sub(1)),
                );
                errs.push(path.join("."), e.kind.to_string());
            }
            None
        }
    }
}

/// Deserialises each entry of an array of tables on its own.
fn entries<T: DeserializeOwned>(fig: &Figment, name: &str, errs: &mut ConfigErrors) -> Vec<T> {
    let Ok(value) = fig.find_value(name) else {
        return Vec::new();
    };
    let Some(items) = value.into_array() else {
        errs.push(name, "must be an array of tables ([[...]])");
        return Vec::new();
    };
    items
        .into_iter()
        .enumerate()
        .filter_map(|(i, v)| match v.deserialize::<T>() {
            Ok(t) => Some(t),
            Err(e) => {
                for e in e {
                    let mut path = format!("{name}[{i}]");
                    for p in &e.path {
                        path.push('.');
                        path.push_str(p);
                    }
                    errs.push(path, e.kind.to_string());
                }
                None
            }
        })
        .collect()
}

fn validate_kafka(k: &KafkaConfig, errs: &mut ConfigErrors) {
    if k.bootstrap_servers.trim().is_empty() {
        errs.push("kafka.bootstrap_servers", "must not be empty");
    }
    if k.group_id.trim().is_empty() {
        errs.push("kafka.group_id", "must not be empty");
    }
    if k.format == Format::Avro && k.schema_registry_url.is_none() {
        errs.push(
            "kafka.schema_registry_url",
            "required when kafka.format = \"avro\"",
        );
    }
    if k.transaction_timeout_ms == 0 {
        errs.push("kafka.transaction_timeout_ms", "must be greater than 0");
    }
    for key in k.librdkafka_options.keys() {
        if let Some((_, why)) = FORBIDDEN_LIBRDKAFKA_KEYS.iter().find(|(f, _)| f == key) {
            errs.push(
                format!("kafka.librdkafka_options.\"{key}\""),
                format!("cannot be set: {why}"),
            );
        }
    }
}

fn validate_processor(p: &ProcessorConfig, errs: &mut ConfigErrors) {
    for (field, v) in [
        ("commit_interval_ms", p.commit_interval_ms),
        ("tick_interval_ms", p.tick_interval_ms),
        ("shutdown_timeout_ms", p.shutdown_timeout_ms),
    ] {
        if v == 0 {
            errs.push(format!("processor.{field}"), "must be greater than 0");
        }
    }
    if p.max_batch_records == 0 {
        errs.push("processor.max_batch_records", "must be greater than 0");
    }
}

fn validate_topics(t: &TopicsConfig, systems: &[SystemConfig], errs: &mut ConfigErrors) {
    let mut seen: BTreeMap<&str, String> = BTreeMap::new();
    for (i, s) in systems.iter().enumerate() {
        seen.insert(&s.input_topic, format!("systems[{i}].input_topic"));
        seen.insert(
            &s.propagation_topic,
            format!("systems[{i}].propagation_topic"),
        );
    }
    for (field, topic) in [
        ("reservations", &t.reservations),
        ("alerts", &t.alerts),
        ("decisions", &t.decisions),
        ("incidents", &t.incidents),
        ("dead_letter", &t.dead_letter),
        ("changelog", &t.changelog),
        ("ticks", &t.ticks),
    ] {
        let path = format!("topics.{field}");
        if topic.trim().is_empty() {
            errs.push(path, "must not be empty");
        } else if let Some(prev) = seen.insert(topic, path.clone()) {
            errs.push(path, format!("duplicate topic {topic:?} (also {prev})"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> String {
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/breakwater.toml"
        ))
        .unwrap()
    }

    #[test]
    fn the_example_config_is_valid() {
        let c = Config::from_toml(&example()).unwrap();
        assert_eq!(c.model.systems().len(), 4);
        assert_eq!(c.kafka.format, Format::Json);
        assert_eq!(c.topics.alerts, "breakwater.alerts");
    }

    #[test]
    fn every_problem_is_named_at_once() {
        let text = r#"
[kafka]
bootstrap_servers = ""
format = "avro"
librdkafka_options = { "enable.auto.commit" = "true", "isolation.level" = "read_uncommitted", "linger.ms" = "5" }

[topics]
alerts = "inventory.wms.events"
dead_letter = "inventory.wms.propagation"

[http]
listen = "not an address"

[[systems]]
name = "wms"
input_topic = "inventory.wms.events"
propagation_topic = "inventory.wms.propagation"

[[systems]]
name = "erp"
input_topic = "inventory.erp.events"
propogation_topic = "typo"

[measures.on_hand]
authority = "wms"
[measures.allocated]
authority = "wms"
[measures.committed]
authority = "breakwater"

[[handoffs]]
from = "wms"
to = "storefront"
window_ms = 0

[metrics]
port = 1
"#;
        let errs = Config::from_toml(text).unwrap_err();
        let paths: Vec<&str> = errs.0.iter().map(|p| p.path.as_str()).collect();
        for want in [
            "metrics",
            "http.listen",
            "systems[1]",
            "kafka.bootstrap_servers",
            "kafka.schema_registry_url",
            "kafka.librdkafka_options.\"enable.auto.commit\"",
            "kafka.librdkafka_options.\"isolation.level\"",
            "topics.alerts",
            "topics.dead_letter",
            "measures.safety_stock",
            "handoffs[0].to",
            "handoffs[0].window_ms",
        ] {
            assert!(
                paths.iter().any(|p| p.starts_with(want)),
                "missing {want} in:\n{errs}"
            );
        }
        assert!(!paths.iter().any(|p| p.contains("linger.ms")), "{errs}");
        assert!(errs.to_string().contains("propogation_topic"), "{errs}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail fixes the closure's error type
    fn environment_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.toml");
        std::fs::write(&path, example()).unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("BREAKWATER_KAFKA__BOOTSTRAP_SERVERS", "kafka:9092");
            jail.set_env("BREAKWATER_TOPICS__ALERTS", "ops.alerts");
            jail.set_env("BREAKWATER_CONFIG", "/elsewhere.toml");
            jail.set_env("BREAKWATER_KAFKA_BOOTSTRAP", "not-a-setting");
            let c = Config::load(&path).map_err(|e| e.to_string())?;
            assert_eq!(c.kafka.bootstrap_servers, "kafka:9092");
            assert_eq!(c.topics.alerts, "ops.alerts");
            Ok(())
        });
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let errs = Config::load(Path::new("/nonexistent/breakwater.toml")).unwrap_err();
        assert!(errs.to_string().contains("no such file"), "{errs}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail fixes the closure's error type
    fn any_librdkafka_option_can_come_from_the_environment_or_a_secret_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.toml");
        // The file sets one option itself; the environment adds the rest.
        std::fs::write(
            &path,
            example().replace(
                "[kafka.librdkafka_options]\n",
                "[kafka.librdkafka_options]\n\"socket.keepalive.enable\" = \"true\"\n",
            ),
        )
        .unwrap();
        let secret = dir.path().join("sasl-password");
        std::fs::write(&secret, "hunter2\n").unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("BREAKWATER_KAFKA_OPTION_SECURITY_PROTOCOL", "SASL_SSL");
            jail.set_env("BREAKWATER_KAFKA_OPTION_SASL_USERNAME", "breakwater");
            jail.set_env(
                "BREAKWATER_KAFKA_OPTION_SASL_PASSWORD_FILE",
                secret.display().to_string(),
            );
            let c = Config::load(&path).map_err(|e| e.to_string())?;
            let o = &c.kafka.librdkafka_options;
            assert_eq!(
                o.get("security.protocol").map(String::as_str),
                Some("SASL_SSL")
            );
            assert_eq!(
                o.get("sasl.username").map(String::as_str),
                Some("breakwater")
            );
            assert_eq!(o.get("sasl.password").map(String::as_str), Some("hunter2"));
            // The file's own option is still there.
            assert_eq!(
                o.get("socket.keepalive.enable").map(String::as_str),
                Some("true")
            );
            assert!(!format!("{c:?}").contains("hunter2"));
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env(
                "BREAKWATER_KAFKA_OPTION_SASL_PASSWORD_FILE",
                "/nonexistent/pw",
            );
            jail.set_env("BREAKWATER_KAFKA_OPTION_SSL_KEY_PASSWORD", "a");
            jail.set_env(
                "BREAKWATER_KAFKA_OPTION_SSL_KEY_PASSWORD_FILE",
                secret.display().to_string(),
            );
            let errs = Config::load(&path).unwrap_err().to_string();
            assert!(
                errs.contains("BREAKWATER_KAFKA_OPTION_SASL_PASSWORD_FILE"),
                "{errs}"
            );
            assert!(errs.contains("/nonexistent/pw"), "{errs}");
            assert!(errs.contains("ssl.key.password is set both"), "{errs}");
            Ok(())
        });
    }

    #[test]
    fn secrets_are_recognised_by_name_not_by_substring() {
        for secret in [
            "sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "ssl.key.pem",
            "sasl.oauthbearer.client.secret",
            "sasl.oauthbearer.config",
        ] {
            assert!(is_secret(secret), "{secret}");
        }
        for plain in [
            "ssl.key.location",
            "ssl.keystore.location",
            "sasl.username",
            "sasl.mechanism",
            "ssl.ca.location",
            "enable.ssl.certificate.verification",
        ] {
            assert!(!is_secret(plain), "{plain}");
        }
    }

    #[test]
    fn the_http_api_listens_on_loopback_unless_configured() {
        let text = example().replace("listen = \"0.0.0.0:9464\"\n", "");
        assert!(
            !text.contains("listen ="),
            "the example sets no listen address now"
        );
        let c = Config::from_toml(&text).unwrap();
        assert_eq!(c.http.listen, "127.0.0.1:9464".parse().unwrap());
        assert!(c.http.listen.ip().is_loopback());
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let mut c = Config::from_toml(&example()).unwrap();
        c.kafka
            .librdkafka_options
            .insert("sasl.password".into(), "hunter2".into());
        c.kafka
            .librdkafka_options
            .insert("ssl.key.pem".into(), "-----BEGIN".into());
        let text = format!("{:?}", c.kafka);
        assert!(
            !text.contains("hunter2") && !text.contains("BEGIN"),
            "{text}"
        );
        assert!(text.contains("sasl.password"));
    }
}
