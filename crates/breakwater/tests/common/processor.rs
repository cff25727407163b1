//! Running Breakwater against the real broker in tests: configs with unique topics, topic
//! creation, publishing and reading back.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use breakwater::Config;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

/// The example config made self-contained (unique topics, group and instance), pointing at
/// `bootstrap`, state under `state_dir`, committing every 50 ms.
pub fn config_text(bootstrap: &str, prefix: &str, state_dir: &Path, instance: &str) -> String {
    breakwater::demo::isolated_example(bootstrap, prefix, state_dir, instance)
        .replace("commit_interval_ms = 100", "commit_interval_ms = 50")
}

/// Retries `f` for up to 30 s while the broker is still settling (new topics have no leader
/// for a moment).
pub fn retry<T>(what: &str, mut f: impl FnMut() -> rdkafka::error::KafkaResult<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

/// A parsed config (panics on an invalid one: the template is ours).
pub fn config(text: &str) -> Config {
    Config::from_toml(text).unwrap_or_else(|e| panic!("{e}"))
}

/// A plain producer.
pub fn producer(bootstrap: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "0")
        .create()
        .expect("producer")
}

/// Where a scenario or generator input goes on the wire: (topic, message key, JSON payload).
pub fn wire(
    cfg: &Config,
    input: &breakwater_core::scenario::ScenarioInput,
) -> (String, String, Vec<u8>) {
    use breakwater_core::scenario::ScenarioInput;
    let (topic, payload) = match input {
        ScenarioInput::Event(e) => (
            cfg.model
                .system_by_name(&e.system)
                .expect("the input's system is configured")
                .input_topic
                .clone(),
            serde_json::to_vec(e).expect("events serialise"),
        ),
        ScenarioInput::Command(c) => (
            cfg.topics.reservations.clone(),
            serde_json::to_vec(c).expect("commands serialise"),
        ),
    };
    let (sku, loc) = input.key();
    (topic, breakwater_core::message_key(sku, loc), payload)
}

/// Sends one record and waits until the broker has acknowledged it.
pub fn send_sync(
    p: &BaseProducer,
    topic: &str,
    key: Option<&[u8]>,
    payload: &[u8],
    timestamp: i64,
) {
    let mut rec = BaseRecord::<[u8], [u8]>::to(topic)
        .payload(payload)
        .timestamp(timestamp);
    if let Some(k) = key {
        rec = rec.key(k);
    }
    p.send(rec).map_err(|(e, _)| e).expect("send");
    p.flush(Duration::from_secs(30)).expect("flush");
}

/// (partition, offset, key, value, headers, timestamp) of one record read back.
pub type Record = (
    i32,
    i64,
    Option<Vec<u8>>,
    Vec<u8>,
    Vec<(String, String)>,
    i64,
);

/// Reads every committed record of `topic` (all partitions) until each partition's position
/// reaches its high watermark.
pub fn read_all(bootstrap: &str, topic: &str) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", super::unique("reader"))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let md = retry("metadata", || {
        consumer.fetch_metadata(Some(topic), Duration::from_secs(30))
    });
    let parts = md.topics()[0].partitions().len() as i32;
    let mut tpl = TopicPartitionList::new();
    let mut high = BTreeMap::new();
    for p in 0..parts {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("tpl");
        let (_, h) = retry("watermarks", || {
            consumer.fetch_watermarks(topic, p, Duration::from_secs(30))
        });
        high.insert(p, h);
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pos = consumer.position().expect("position");
        let done = high.iter().all(|(p, h)| {
            *h == 0
                || pos
                    .find_partition(topic, *p)
                    .and_then(|e| e.offset().to_raw())
                    .is_some_and(|o| o >= *h)
        });
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "timed out reading {topic}");
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.expect("message");
            let headers = m
                .headers()
                .map(|h| {
                    use rdkafka::message::Headers;
                    h.iter()
                        .map(|x| {
                            (
                                x.key.to_owned(),
                                String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push((
                m.partition(),
                m.offset(),
                m.key().map(<[u8]>::to_vec),
                m.payload().unwrap_or_default().to_vec(),
                headers,
                m.timestamp().to_millis().unwrap_or(0),
            ));
        }
    }
    out
}

/// Waits until the group `group` has committed, for every partition of `topic`, an offset at
/// its high watermark: everything published so far has been processed and committed.
pub fn wait_caught_up(bootstrap: &str, group: &str, topics: &[&str], timeout: Duration) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let deadline = Instant::now() + timeout;
    loop {
        let mut tpl = TopicPartitionList::new();
        let mut high = Vec::new();
        for t in topics {
            let md = retry("metadata", || {
                consumer.fetch_metadata(Some(t), Duration::from_secs(30))
            });
            for p in 0..md.topics()[0].partitions().len() as i32 {
                let (_, h) = retry("watermarks", || {
                    consumer.fetch_watermarks(t, p, Duration::from_secs(30))
                });
                tpl.add_partition(t, p);
                high.push((t.to_string(), p, h));
            }
        }
        let committed = retry("committed offsets", || {
            consumer.committed_offsets(tpl.clone(), Duration::from_secs(30))
        });
        let behind: Vec<_> = high
            .iter()
            .filter(|(t, p, h)| {
                let c = match committed.find_partition(t, *p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o,
                    _ => 0,
                };
                c < *h
            })
            .collect();
        if behind.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "group {group} still behind on {behind:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The pure fold of an input log, replayed the way the processor replays a partition: records
/// in offset order, `now` = the partition's highest timestamp so far, due timers fired at
/// their deadlines (earliest first, then by key) before each record.
pub struct Expected {
    /// Final state per key.
    pub states: BTreeMap<String, breakwater_core::KeyState>,
    /// Every output record the log must produce: (topic, id) → JSON value.
    pub outputs: BTreeMap<(String, String), serde_json::Value>,
}

/// Folds `records` (one input topic of events) under `cfg`.
pub fn expected(cfg: &Config, records: &[Record]) -> Expected {
    use breakwater_codec::records::{alert_record, decision_record, propagation_record};
    use breakwater_core::{apply, Input, InventoryEvent, Output};
    use std::collections::BTreeSet;

    let mut by_partition: BTreeMap<i32, Vec<&Record>> = BTreeMap::new();
    for r in records {
        by_partition.entry(r.0).or_default().push(r);
    }
    let mut states: BTreeMap<String, breakwater_core::KeyState> = BTreeMap::new();
    let mut outputs = BTreeMap::new();
    let model = &cfg.model;
    let mut collect = |key: &str, outs: &mut Vec<Output>| {
        let (sku, loc) = key.split_once('|').unwrap_or((key, ""));
        for o in outs.drain(..) {
            let (topic, id, value) = match o {
                Output::Propagation(p) => {
                    let rec = propagation_record(model, sku, loc, &p);
                    let topic = model.system(p.target).unwrap().propagation_topic.clone();
                    (
                        topic,
                        rec.propagation_id.clone(),
                        serde_json::to_value(rec).unwrap(),
                    )
                }
                Output::Alert(a) => {
                    let rec = alert_record(model, sku, loc, &a);
                    let id = format!("{}#{}", rec.alert_id, rec.kind.as_str());
                    (
                        cfg.topics.alerts.clone(),
                        id,
                        serde_json::to_value(rec).unwrap(),
                    )
                }
                Output::Decision(d) => {
                    let rec = decision_record(sku, loc, &d);
                    (
                        cfg.topics.decisions.clone(),
                        rec.decision_id.clone(),
                        serde_json::to_value(rec).unwrap(),
                    )
                }
                Output::Converged(_) | Output::Action(_) => continue,
            };
            // A retried command gets its original decision again, under the same id; any
            // other repeated id is a bug.
            if let Some(prev) = outputs.insert((topic, id.clone()), value.clone()) {
                assert_eq!(prev, value, "duplicate expected id {id} with another value");
            }
        }
    };
    for recs in by_partition.values_mut() {
        recs.sort_by_key(|r| r.1);
        let mut stream = i64::MIN;
        let mut timers: BTreeSet<(i64, String)> = BTreeSet::new();
        let mut out = Vec::new();
        for r in recs.iter() {
            let now = r.5.max(stream);
            stream = now;
            while let Some((d, k)) = timers.first().cloned().filter(|(d, _)| *d <= now) {
                timers.remove(&(d, k.clone()));
                let st = states.entry(k.clone()).or_default();
                apply(model, st, Input::Timer, d, &mut out).unwrap();
                if let Some(t) = st.next_timer() {
                    timers.insert((t, k.clone()));
                }
                collect(&k, &mut out);
            }
            let e: InventoryEvent = serde_json::from_slice(&r.3).expect("test inputs are valid");
            let key = breakwater_core::message_key(&e.sku, &e.location);
            let st = states.entry(key.clone()).or_default();
            let before = st.next_timer();
            let _ = apply(model, st, Input::Event(&e), now, &mut out);
            let after = st.next_timer();
            if before != after {
                if let Some(t) = before {
                    timers.remove(&(t, key.clone()));
                }
                if let Some(t) = after {
                    timers.insert((t, key.clone()));
                }
            }
            collect(&key, &mut out);
        }
    }
    Expected { states, outputs }
}

/// Every output Breakwater published for `cfg`, read with read_committed: (topic, id) →
/// how many times, and the last value.
pub fn published(
    bootstrap: &str,
    cfg: &Config,
) -> BTreeMap<(String, String), (usize, serde_json::Value)> {
    let mut topics: Vec<String> = cfg
        .model
        .systems()
        .iter()
        .map(|s| s.propagation_topic.clone())
        .collect();
    topics.push(cfg.topics.alerts.clone());
    topics.push(cfg.topics.decisions.clone());
    let mut out: BTreeMap<(String, String), (usize, serde_json::Value)> = BTreeMap::new();
    for t in topics {
        for r in read_all(bootstrap, &t) {
            let v: serde_json::Value = serde_json::from_slice(&r.3).expect("outputs are JSON");
            let id = if let Some(id) = v.get("propagation_id") {
                id.as_str().unwrap().to_owned()
            } else if let Some(id) = v.get("alert_id") {
                format!("{}#{}", id.as_str().unwrap(), v["kind"].as_str().unwrap())
            } else {
                v["decision_id"].as_str().unwrap().to_owned()
            };
            let e = out
                .entry((t.clone(), id))
                .or_insert((0, serde_json::Value::Null));
            e.0 += 1;
            e.1 = v;
        }
    }
    out
}

/// Asserts every expected output was published exactly once, equal to the pure fold's, and
/// nothing else was.
pub fn assert_exactly_once(
    expected: &Expected,
    published: &BTreeMap<(String, String), (usize, serde_json::Value)>,
) {
    let dup: Vec<_> = published
        .iter()
        .filter(|(_, (n, _))| *n != 1)
        .map(|(k, (n, _))| (k, n))
        .collect();
    assert!(dup.is_empty(), "published more than once: {dup:?}");
    let missing: Vec<_> = expected
        .outputs
        .keys()
        .filter(|k| !published.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty(),
        "{} outputs missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let extra: Vec<_> = published
        .keys()
        .filter(|k| !expected.outputs.contains_key(*k))
        .collect();
    assert!(
        extra.is_empty(),
        "{} unexpected outputs, e.g. {:?}",
        extra.len(),
        &extra[..extra.len().min(5)]
    );
    for (k, v) in &expected.outputs {
        assert_eq!(
            &published[k].1, v,
            "output {k:?} differs from the pure fold"
        );
    }
}

/// The latest state per key on the changelog (read_committed).
pub fn changelog_states(
    bootstrap: &str,
    cfg: &Config,
) -> BTreeMap<String, breakwater_core::KeyState> {
    let mut out = BTreeMap::new();
    for r in read_all(bootstrap, &cfg.topics.changelog) {
        let key = String::from_utf8(r.2.unwrap_or_default()).unwrap();
        if key.starts_with('\0') {
            continue;
        }
        out.insert(
            key,
            breakwater_store::decode_state(&r.3).expect("changelog state"),
        );
    }
    out
}

/// A test event for partition-ordered logs: WMS counts and allocations, some on stale
/// versions, over `keys` keys.
pub fn wms_event(i: usize, keys: usize, now: i64) -> (String, Vec<u8>) {
    let k = (i * 7919) % keys;
    let sku = format!("SKU-{k}");
    let key = format!("{sku}|DC-1");
    let (t, m, q, based_on) = match i % 5 {
        0 | 1 => ("RECEIPT", "on_hand", 5 + (i % 13) as i64, None),
        2 => ("PICK", "on_hand", -((i % 3) as i64 + 1), None),
        3 => (
            "ALLOCATION",
            "allocated",
            1 + (i % 4) as i64,
            Some((i % 9) as i64),
        ),
        _ => (
            "ADJUSTMENT",
            "on_hand",
            if i % 2 == 0 { 2 } else { -1 },
            None,
        ),
    };
    let mut e = serde_json::json!({
        "event_id": format!("ev-{i}"), "system": "wms", "type": t, "sku": sku,
        "location": "DC-1", "measure": m, "mode": "DELTA", "quantity": q, "occurred_at": now
    });
    if let Some(b) = based_on {
        e["based_on_version"] = b.into();
    }
    (key, serde_json::to_vec(&e).unwrap())
}

/// Starts the real binary with `config`, logging to `log`.
pub fn spawn_binary(config: &Path, log: &Path) -> std::process::Child {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    std::process::Command::new(env!("CARGO_BIN_EXE_breakwater"))
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "info,rdkafka=warn")
        .stdout(f.try_clone().expect("log"))
        .stderr(f)
        .spawn()
        .expect("start breakwater")
}

/// SIGKILL.
pub fn kill9(child: &mut std::process::Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// SIGTERM, then wait for the exit; panics with the log's tail unless the exit is clean.
pub fn terminate(child: &mut std::process::Child, log: &Path) {
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            kill9(child);
            panic!(
                "breakwater did not exit within 60 s of SIGTERM; log tail:\n{}",
                log_tail(log, 40)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "breakwater exited with {status} on SIGTERM; log tail:\n{}",
        log_tail(log, 40)
    );
}

/// The last `n` lines of a log file.
pub fn log_tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A port that was free a moment ago, for a child's HTTP API.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `text` (from [`config_text`]) with its HTTP API on `port`.
pub fn with_http_port(text: &str, port: u16) -> String {
    text.replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    )
}

/// A blocking `GET` on 127.0.0.1 with HTTP/1.0 (so no chunked reply): (status, body);
/// status 0 when nothing answers.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let mut buf = String::new();
    let sent = c.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes());
    if sent.is_err() || c.read_to_string(&mut buf).is_err() {
        return (0, String::new());
    }
    let status = buf
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Waits until the instance serving HTTP on `port` answers `/ready` with 200 (it has joined
/// the group and restored its partitions); panics with the log's tail after `timeout`.
pub fn wait_ready(port: u16, log: &Path, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while http_get(port, "/ready").0 != 200 {
        assert!(
            Instant::now() < deadline,
            "not ready within {timeout:?}; log tail:\n{}",
            log_tail(log, 40)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Breakwater running in-process (`breakwater::run` on the test's runtime), until
/// [`Running::stop`].
pub struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), breakwater::service::RunError>>,
}

/// Starts Breakwater in-process with `cfg`.
pub fn start(cfg: Config) -> Running {
    start_shared(cfg).1
}

/// [`start`], sharing the processor's status (readiness, owned partitions) with the test.
pub fn start_shared(cfg: Config) -> (std::sync::Arc<breakwater::processor::Shared>, Running) {
    let shared = std::sync::Arc::new(breakwater::processor::Shared::default());
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(breakwater::service::run_with(
        cfg,
        None,
        std::sync::Arc::clone(&shared),
        async move {
            let _ = rx.await;
        },
    ));
    (shared, Running { stop, task })
}

impl Running {
    /// Stops it (drain, commit, leave) and asserts a clean exit.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("join").expect("clean stop");
    }
}

/// [`wait_caught_up`] for `cfg`'s group on `topics`, from async code.
pub async fn caught_up(cfg: &Config, topics: &[&str], timeout: Duration) {
    let (b, g) = (
        cfg.kafka.bootstrap_servers.clone(),
        cfg.kafka.group_id.clone(),
    );
    let topics: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        wait_caught_up(&b, &g, &topics, timeout);
    })
    .await
    .expect("join");
}

/// Waits, off the async runtime, until the instance serving HTTP on `port` is ready (it has
/// joined and restored whatever the last run committed to Kafka but not to RocksDB) and
/// group `group` has committed every record of `topics`; panics with the log's tail after
/// `timeout` for each.
pub async fn ready_and_caught_up(
    bootstrap: &str,
    group: &str,
    topics: &[&str],
    port: u16,
    log: &Path,
    timeout: Duration,
) {
    let (b, g, l) = (bootstrap.to_owned(), group.to_owned(), log.to_owned());
    let t: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        wait_ready(port, &l, timeout);
        let t: Vec<&str> = t.iter().map(String::as_str).collect();
        wait_caught_up(&b, &g, &t, timeout);
    })
    .await
    .expect("waiting for the instance");
}
