//! Crash and rebalance tests on the real broker, with the real binary as a child process.
//!
//! Inputs go to one topic (the WMS's) over several partitions, so each partition's order is
//! its offset order and the pure fold of the log is well defined (see README, "Ordering").

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::type_complexity)] // tests: a panic is the failure report

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use breakwater_store::PartitionStore;
use common::processor::{
    assert_exactly_once, changelog_states, config, config_text, expected, free_port, kill9,
    producer, published, read_all, ready_and_caught_up, spawn_binary, terminate, wait_caught_up,
    wait_ready, with_http_port, wms_event,
};
use rdkafka::producer::{BaseRecord, Producer};

const PARTITIONS: i32 = 4;
const KEYS: usize = 60;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A small deterministic generator for kill times; the seed is printed so a failure can be
/// replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo))
    }
}

/// The crash test's input: [`wms_event`]s carrying a per-key `source_seq`, plus a redelivered
/// earlier event every 17th record (same id: a duplicate) and every 13th a late ABSOLUTE
/// count with an older `source_seq` (superseded: recorded as seen, no change). Deterministic
/// in `i`.
fn crash_event(
    i: usize,
    now: i64,
    seqs: &mut std::collections::HashMap<String, i64>,
    sent: &mut Vec<(String, Vec<u8>)>,
) -> (String, Vec<u8>) {
    if i % 17 == 5 && i > 17 {
        let again = sent[i - 17].clone();
        sent.push(again.clone());
        return again;
    }
    let (key, payload) = wms_event(i, KEYS, now);
    let seq = seqs.entry(key.clone()).or_insert(0);
    *seq += 1;
    let mut e: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    if i % 13 == 7 && *seq > 3 {
        e["event_id"] = format!("late-{i}").into();
        e["type"] = "SNAPSHOT".into();
        e["measure"] = "on_hand".into();
        e["mode"] = "ABSOLUTE".into();
        e["quantity"] = 40.into();
        e["source_seq"] = (*seq - 3).into();
        if let Some(m) = e.as_object_mut() {
            m.remove("based_on_version");
        }
    } else {
        e["source_seq"] = (*seq).into();
    }
    let out = (key, serde_json::to_vec(&e).unwrap());
    sent.push(out.clone());
    out
}

/// Publishes `n` crash-test events at a steady pace on a background thread.
fn publish(
    bootstrap: String,
    topic: String,
    n: usize,
    pace: Duration,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let done = Arc::new(AtomicBool::new(false));
    let d = Arc::clone(&done);
    let h = std::thread::spawn(move || {
        let p = producer(&bootstrap);
        let (mut seqs, mut sent) = (std::collections::HashMap::new(), Vec::new());
        for i in 0..n {
            let (key, payload) = crash_event(i, now_ms(), &mut seqs, &mut sent);
            let rec = BaseRecord::to(&topic).key(&key).payload(&payload);
            p.send(rec).map_err(|(e, _)| e).expect("send");
            p.poll(Duration::ZERO);
            if i % 20 == 19 {
                std::thread::sleep(pace);
            }
        }
        p.flush(Duration::from_secs(30)).expect("flush");
        d.store(true, Ordering::SeqCst);
    });
    (done, h)
}

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("breakwater.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kafka broker: run `make test`"]
async fn kill_9_twenty_times_with_duplicates_and_late_events_loses_and_duplicates_nothing() {
    let bootstrap = common::bootstrap();
    let prefix = common::unique("crash");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let text = config_text(&bootstrap, &prefix, &state, "crash-0");
    let cfg = config(&text);
    breakwater::topics::create_topics(&cfg, PARTITIONS, 1)
        .await
        .unwrap();
    let path = write_config(dir.path(), &text);
    let log = dir.path().join("breakwater.log");
    let wms = cfg.model.system_by_name("wms").unwrap().input_topic.clone();

    let seed = now_ms() as u64 | 1;
    eprintln!("crash test seed {seed}");
    let mut rng = Rng(seed);
    let (done, publisher) = publish(
        bootstrap.clone(),
        wms.clone(),
        4000,
        Duration::from_millis(60),
    );
    let mut kills = 0;
    while kills < 20 || !done.load(Ordering::SeqCst) {
        let mut child = spawn_binary(&path, &log);
        std::thread::sleep(rng.millis(800, 3500));
        kill9(&mut child);
        kills += 1;
    }
    publisher.join().unwrap();
    eprintln!("killed {kills} times");

    // One last, clean run to the end of the log: it must join and restore whatever the
    // last killed run committed to Kafka but not to RocksDB, so wait for /ready before the
    // offsets (which may already be at the end).
    let port = free_port();
    let path = write_config(dir.path(), &with_http_port(&text, port));
    let mut child = spawn_binary(&path, &log);
    ready_and_caught_up(
        &bootstrap,
        &cfg.kafka.group_id,
        &[&wms],
        port,
        &log,
        Duration::from_secs(180),
    )
    .await;
    terminate(&mut child, &log);

    let inputs = read_all(&bootstrap, &wms);
    assert_eq!(inputs.len(), 4000);
    let want = expected(&cfg, &inputs);
    assert!(
        want.outputs.len() > 4000,
        "the log produces outputs to check"
    );
    assert_exactly_once(&want, &published(&bootstrap, &cfg));

    // The local state that survived twenty kills is the pure fold of the log...
    let mut local = std::collections::BTreeMap::new();
    for p in 0..PARTITIONS {
        let store = PartitionStore::open(&state, p).unwrap();
        for (k, st) in store.all_states().unwrap() {
            local.insert(String::from_utf8(k).unwrap(), st);
        }
    }
    assert_eq!(
        local, want.states,
        "RocksDB state equals the pure fold of the input"
    );
    // ...and so is the changelog another instance would restore from.
    assert_eq!(changelog_states(&bootstrap, &cfg), want.states);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("restored from changelog") || text.contains("partition ready"),
        "restarts reuse local state"
    );
}

/// A backlog of history (a month old), with clock ticks every 100 ms and the processor killed
/// six times while it works through it: a tick is the wall clock, and a partition whose
/// backlog is still unread (after a restart, before its first fetch) is not idle. Every
/// output is stamped with stream time, never with today's date, and is the pure fold's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kafka broker: run `make test`"]
async fn a_historical_backlog_killed_six_times_is_stamped_with_stream_time_not_the_wall_clock() {
    let bootstrap = common::bootstrap();
    let prefix = common::unique("history");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let text = config_text(&bootstrap, &prefix, &state, "history-0")
        .replace("tick_interval_ms = 86400000", "tick_interval_ms = 100");
    assert!(
        text.contains("tick_interval_ms = 100\n"),
        "ticks every 100 ms"
    );
    let cfg = config(&text);
    breakwater::topics::create_topics(&cfg, PARTITIONS, 1)
        .await
        .unwrap();
    // History older than the broker's retention (7 days) would be deleted under the test:
    // inputs and outputs alike carry its timestamps.
    for (topic, compacted) in breakwater::topics::all_topics(&cfg) {
        if !compacted {
            common::alter_topic(&bootstrap, &topic, "retention.ms", "-1").await;
        }
    }
    let path = write_config(dir.path(), &text);
    let log = dir.path().join("breakwater.log");
    let wms = cfg.model.system_by_name("wms").unwrap().input_topic.clone();

    // 6,000 events, one a second, starting 30 days ago: all of it is backlog.
    let start = now_ms() - 30 * 86_400_000;
    let p = producer(&bootstrap);
    for i in 0..6000 {
        let ts = start + i as i64 * 1000;
        let (key, payload) = wms_event(i, KEYS, ts);
        let rec = BaseRecord::to(&wms)
            .key(&key)
            .payload(&payload)
            .timestamp(ts);
        p.send(rec).map_err(|(e, _)| e).expect("send");
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(30)).expect("flush");
    let last_input = start + 5999 * 1000;

    let seed = now_ms() as u64 | 1;
    eprintln!("history test seed {seed}");
    let mut rng = Rng(seed);
    for _ in 0..6 {
        let mut child = spawn_binary(&path, &log);
        std::thread::sleep(rng.millis(1500, 4000));
        kill9(&mut child);
    }
    let port = free_port();
    let path = write_config(dir.path(), &with_http_port(&text, port));
    let mut child = spawn_binary(&path, &log);
    ready_and_caught_up(
        &bootstrap,
        &cfg.kafka.group_id,
        &[&wms],
        port,
        &log,
        Duration::from_secs(180),
    )
    .await;
    terminate(&mut child, &log);

    // Once the backlog is read, idle partitions are ticked and their timers fire: each at its
    // own deadline (a window or hold after some input), so no output is stamped more than a
    // day after the last input.
    let horizon = last_input + 86_400_000;
    let mut outputs = 0;
    let mut topics: Vec<String> = cfg
        .model
        .systems()
        .iter()
        .map(|s| s.propagation_topic.clone())
        .collect();
    topics.extend([cfg.topics.alerts.clone(), cfg.topics.decisions.clone()]);
    for topic in &topics {
        for r in read_all(&bootstrap, topic) {
            outputs += 1;
            assert!(
                r.5 <= horizon,
                "{topic} partition {} offset {} is stamped {} ms after the last input: a wall-clock tick ran ahead of unread input",
                r.0,
                r.1,
                r.5 - last_input
            );
        }
    }
    assert!(outputs > 6000, "the backlog produces outputs to check");
    // What the backlog itself produced is the pure fold's, once each; what the ticks after it
    // added (timers firing at their deadlines) is all the rest.
    let inputs = read_all(&bootstrap, &wms);
    let want = expected(&cfg, &inputs);
    let got = published(&bootstrap, &cfg);
    for (id, (n, v)) in &got {
        if let Some(w) = want.outputs.get(id) {
            assert_eq!((*n, v), (1, w), "{id:?}");
        }
    }
    let missing: Vec<_> = want
        .outputs
        .keys()
        .filter(|k| !got.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty(),
        "{} outputs missing: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

/// Two instances' configs (`a` and `b`) in one group, with their own state, log and HTTP
/// port, and a short session so a dead or paused member's partitions move within seconds;
/// the topics are created. Returns the config and (config path, log, port) of each.
async fn two_instances(
    bootstrap: &str,
    prefix: &str,
    dir: &Path,
) -> (
    breakwater::Config,
    (std::path::PathBuf, std::path::PathBuf, u16),
    (std::path::PathBuf, std::path::PathBuf, u16),
) {
    let session = "\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"1000\"\n";
    let (port_a, port_b) = loop {
        let (a, b) = (free_port(), free_port());
        if a != b {
            break (a, b);
        }
    };
    let mk = |name: &str, port: u16| {
        let text = config_text(bootstrap, prefix, &dir.join(name), name);
        let text = with_http_port(&text, port).replace(
            "[kafka.librdkafka_options]\n",
            &format!("[kafka.librdkafka_options]\n{session}"),
        );
        let d = dir.join(format!("{name}-cfg"));
        std::fs::create_dir_all(&d).unwrap();
        (
            write_config(&d, &text),
            dir.join(format!("{name}.log")),
            text,
        )
    };
    let (path_a, log_a, text) = mk("a", port_a);
    let (path_b, log_b, _) = mk("b", port_b);
    let cfg = config(&text);
    breakwater::topics::create_topics(&cfg, PARTITIONS, 1)
        .await
        .unwrap();
    (cfg, (path_a, log_a, port_a), (path_b, log_b, port_b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kafka broker: run `make test`"]
async fn two_instances_split_the_partitions_and_survive_either_being_killed() {
    let bootstrap = common::bootstrap();
    let prefix = common::unique("rebalance");
    let dir = tempfile::tempdir().unwrap();
    let (cfg, (path_a, log_a, port_a), (path_b, log_b, port_b)) =
        two_instances(&bootstrap, &prefix, dir.path()).await;
    let wms = cfg.model.system_by_name("wms").unwrap().input_topic.clone();

    let mut a = spawn_binary(&path_a, &log_a);
    let mut b = spawn_binary(&path_b, &log_b);
    let (done, publisher) = publish(
        bootstrap.clone(),
        wms.clone(),
        3000,
        Duration::from_millis(150),
    );
    let wait = |d: u64| std::thread::sleep(Duration::from_secs(d));
    wait(6);
    kill9(&mut a); // b takes over a's partitions
    wait(10);
    a = spawn_binary(&path_a, &log_a); // a comes back: restores what b changed meanwhile
    wait(8);
    kill9(&mut b); // a takes over b's partitions
    wait(10);
    b = spawn_binary(&path_b, &log_b);
    let started = Instant::now();
    while !done.load(Ordering::SeqCst) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "publisher stuck"
        );
        wait(1);
    }
    publisher.join().unwrap();
    let (bs, g, t) = (bootstrap.clone(), cfg.kafka.group_id.clone(), wms.clone());
    let (la, lb) = (log_a.clone(), log_b.clone());
    tokio::task::spawn_blocking(move || {
        wait_ready(port_a, &la, Duration::from_secs(120));
        wait_ready(port_b, &lb, Duration::from_secs(120));
        wait_caught_up(&bs, &g, &[&t], Duration::from_secs(180));
    })
    .await
    .unwrap();
    terminate(&mut a, &log_a);
    terminate(&mut b, &log_b);

    // Both instances owned partitions at some point.
    for log in [&log_a, &log_b] {
        let text = std::fs::read_to_string(log).unwrap();
        assert!(
            text.contains("partition ready"),
            "{} never owned a partition",
            log.display()
        );
    }
    let inputs = read_all(&bootstrap, &wms);
    let want = expected(&cfg, &inputs);
    assert_exactly_once(&want, &published(&bootstrap, &cfg));
    assert_eq!(changelog_states(&bootstrap, &cfg), want.states);
}

/// SIGSTOP an instance past its session timeout: the other instance takes its partitions
/// while it still holds an open transaction and a cache it believes current. On SIGCONT it
/// must commit nothing of what it did before (the broker aborted its transaction; its offset
/// commit carries a stale group generation), and every output stays exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kafka broker: run `make test`"]
async fn a_paused_instance_commits_nothing_after_its_partitions_moved() {
    let bootstrap = common::bootstrap();
    let prefix = common::unique("paused");
    let dir = tempfile::tempdir().unwrap();
    let (cfg, (path_a, log_a, port_a), (path_b, log_b, port_b)) =
        two_instances(&bootstrap, &prefix, dir.path()).await;
    let wms = cfg.model.system_by_name("wms").unwrap().input_topic.clone();

    let mut a = spawn_binary(&path_a, &log_a);
    let mut b = spawn_binary(&path_b, &log_b);
    let (done, publisher) = publish(
        bootstrap.clone(),
        wms.clone(),
        3000,
        Duration::from_millis(150),
    );
    let signal = |sig: &str, pid: u32| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid}");
    };
    let wait = |d: u64| std::thread::sleep(Duration::from_secs(d));
    wait(6);
    // Past the session timeout (6 s) and the transaction timeout (10 s).
    signal("-STOP", a.id());
    wait(14);
    signal("-CONT", a.id());
    let started = Instant::now();
    while !done.load(Ordering::SeqCst) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "publisher stuck"
        );
        wait(1);
    }
    publisher.join().unwrap();
    let (bs, g, t) = (bootstrap.clone(), cfg.kafka.group_id.clone(), wms.clone());
    let (la, lb) = (log_a.clone(), log_b.clone());
    tokio::task::spawn_blocking(move || {
        wait_ready(port_a, &la, Duration::from_secs(120));
        wait_ready(port_b, &lb, Duration::from_secs(120));
        wait_caught_up(&bs, &g, &[&t], Duration::from_secs(180));
    })
    .await
    .unwrap();
    terminate(&mut a, &log_a);
    terminate(&mut b, &log_b);

    let inputs = read_all(&bootstrap, &wms);
    let want = expected(&cfg, &inputs);
    assert_exactly_once(&want, &published(&bootstrap, &cfg));
    assert_eq!(changelog_states(&bootstrap, &cfg), want.states);
}

/// Two instances started with the same `instance_id` (a copy-pasted config) fence each
/// other, as static members and as transactional producers. The fenced consumer's fatal
/// error used to be logged at debug level and ignored (and the fenced producer restarted and
/// fenced the other back, for ever); now one of them exits non-zero, naming the fatal error,
/// and the other carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kafka broker: run `make test`"]
async fn of_two_instances_with_one_id_one_exits_non_zero_and_the_other_carries_on() {
    let bootstrap = common::bootstrap();
    let prefix = common::unique("fenced");
    let dir = tempfile::tempdir().unwrap();
    let (port_a, port_b) = loop {
        let (a, b) = (free_port(), free_port());
        if a != b {
            break (a, b);
        }
    };
    let mk = |name: &str, port: u16| {
        // Same instance id for both; their own state dirs and HTTP ports.
        let text = with_http_port(
            &config_text(&bootstrap, &prefix, &dir.path().join(name), "same-id"),
            port,
        );
        let d = dir.path().join(format!("{name}-cfg"));
        std::fs::create_dir_all(&d).unwrap();
        (
            write_config(&d, &text),
            dir.path().join(format!("{name}.log")),
            text,
        )
    };
    let (path_a, log_a, text) = mk("a", port_a);
    let (path_b, log_b, _) = mk("b", port_b);
    let cfg = config(&text);
    breakwater::topics::create_topics(&cfg, PARTITIONS, 1)
        .await
        .unwrap();
    let mut a = spawn_binary(&path_a, &log_a);
    let la = log_a.clone();
    tokio::task::spawn_blocking(move || wait_ready(port_a, &la, Duration::from_secs(120)))
        .await
        .unwrap();
    let mut b = spawn_binary(&path_b, &log_b);
    // One of them must stop, non-zero, naming the fatal error; the other carries on.
    let deadline = Instant::now() + Duration::from_secs(120);
    let (status, log, survivor) = loop {
        if let Some(s) = a.try_wait().unwrap() {
            break (s, &log_a, &mut b);
        }
        if let Some(s) = b.try_wait().unwrap() {
            break (s, &log_b, &mut a);
        }
        if Instant::now() > deadline {
            kill9(&mut a);
            kill9(&mut b);
            panic!(
                "both instances are still running; the first one's log:\n{}",
                common::processor::log_tail(&log_a, 30)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success(), "exit status {status}");
    let text = std::fs::read_to_string(log).unwrap();
    assert!(
        text.contains("fatal"),
        "{}",
        common::processor::log_tail(log, 30)
    );
    assert!(
        survivor.try_wait().unwrap().is_none(),
        "the other one carries on"
    );
    kill9(survivor);
}
