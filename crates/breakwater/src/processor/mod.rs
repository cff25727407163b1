//! The processor: a consumer group over every input topic, one task per partition number,
//! the fold over RocksDB-backed state, and exactly-once commits.
//!
//! # Parts, by role
//! - [`run_blocking`] (here): incarnations, and what each kind of error means
//!   ([`Recovery`]): a new incarnation, or exit.
//! - `poll_loop`: one incarnation: the clients, the poll loop, the rebalance callbacks, and
//!   the rule at the end (commit when stopping, abort after an error).
//! - `engine`: what the loop drives: buffering, the timestamp merge, decoding, folding,
//!   timers, outputs, the commit, opening and closing tasks.
//! - `task`: one partition's state, cache, timer index and dirty set ([`task::Task::update`]).
//! - `txn`: the transaction coordinator (begin, send, offsets, commit, abort).
//! - `restorer`: restoring tasks from the changelog between polls, in bounded steps.
//! - `dead_letter`: the dead-letter record.
//! - `checks`: the topic layout and topic config checks at start.
//! - `tally`: the batch's counts, recorded in the metrics at commit.
//!
//! # The commit protocol
//! Input records are folded into per-key states held in a cache; outputs are encoded and
//! sent into an open Kafka transaction. Every `commit_interval_ms` (or `max_batch_records`):
//! 1. the transaction gets one changelog record per changed key and the next input offsets
//!    (`send_offsets_to_transaction`, which carries the group generation), then commits;
//! 2. one RocksDB write batch per task: the changed states, their timer index entries, and a
//!    [`Meta`](breakwater_store::Meta) holding the next input offsets and the next changelog
//!    offset.
//!
//! Kafka is the commit point. A crash before 1 completes aborts the transaction: nothing was
//! published, the offsets did not move and RocksDB did not change, so the batch is reprocessed.
//! A crash between 1 and 2 leaves RocksDB one batch behind the changelog; on restart each task
//! replays the changelog from its stored `changelog_next` to the end, which is exactly that
//! batch. The local state is reused, never wiped (ARCHITECTURE.md lists every crash point).
//!
//! After any error, nothing of the open batch is committed: the transaction is aborted, the
//! tasks (with their uncommitted changes) are dropped, and the next incarnation reads the
//! batch again from the committed offsets over the committed state.

mod checks;
mod dead_letter;
mod engine;
mod error;
mod poll_loop;
mod restorer;
mod tally;
mod task;
mod txn;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use breakwater_codec::AnyCodec;
use breakwater_core::Millis;
use breakwater_store::PartitionStore;
use rdkafka::ClientConfig;
use tokio::runtime::Handle;
use tracing::warn;

use crate::config::Config;
use crate::metrics as m;

pub use dead_letter::dlq_headers;
pub use error::{ProcessorError, Recovery};
pub use task::{INCIDENTS_KEY, STREAM_TIME_KEY};

/// How long a missing or mis-partitioned topic is retried at start before it is fatal.
const TOPIC_GRACE: Duration = Duration::from_secs(60);

/// What the HTTP server sees of the processor.
#[derive(Default)]
pub struct Shared {
    /// Assigned partitions are restored and the loop runs.
    pub ready: AtomicBool,
    /// The processing thread is running (or restarting after an error).
    pub alive: AtomicBool,
    /// The stores of the partitions this instance owns, for availability reads.
    pub stores: RwLock<BTreeMap<i32, PartitionStore>>,
    /// Input records committed since start (progress for the demo and operators).
    pub committed_records: AtomicU64,
}

/// Wall-clock time in ms since the epoch.
pub fn wall_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The librdkafka settings every client shares: bootstrap servers and the pass-through
/// options (security, tuning).
pub fn base_client_config(cfg: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.kafka.bootstrap_servers);
    for (k, v) in &cfg.kafka.librdkafka_options {
        c.set(k, v);
    }
    c
}

/// The transactional id of this instance.
pub fn transactional_id(cfg: &Config) -> String {
    format!("{}-{}", cfg.kafka.group_id, cfg.kafka.instance_id)
}

/// Runs the processor on the calling thread until `stop` is set: one incarnation after
/// another, each started after an error whose [`Recovery`] allows it, with backoff.
///
/// # Errors
/// An error whose [`Recovery`] is [`Recovery::Exit`] (or a topic layout still wrong after
/// the start-up grace).
pub fn run_blocking(
    cfg: Arc<Config>,
    codec: AnyCodec,
    rt: Handle,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
) -> Result<(), ProcessorError> {
    shared.alive.store(true, Ordering::SeqCst);
    let inputs: Vec<String> = checks::input_topics(&cfg)
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    m::register_series(&cfg.model, &inputs);
    let mut backoff = Duration::from_millis(200);
    let started = Instant::now();
    let result = loop {
        let Err(e) = poll_loop::run_once(&cfg, &codec, &rt, &shared, &stop) else {
            break Ok(());
        };
        let restart = match e.recovery() {
            Recovery::Restart => true,
            Recovery::RestartWithinGrace => started.elapsed() < TOPIC_GRACE,
            Recovery::Exit => false,
        };
        if !restart {
            break Err(e);
        }
        if stop.load(Ordering::SeqCst) {
            if e.recovery() != Recovery::Restart {
                break Err(e);
            }
            // The last batch failed with an error a restart would get past: it was aborted,
            // nothing of it is committed, and the next start reads it again. That is a clean
            // stop, not a failure.
            warn!(error = %e, "stopped; the last batch was aborted and will be read again on the next start");
            break Ok(());
        }
        metrics::counter!(m::RESTARTS, "error_type" => e.kind()).increment(1);
        warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "processor restarting");
        shared.ready.store(false, Ordering::SeqCst);
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(10));
    };
    shared.ready.store(false, Ordering::SeqCst);
    shared.alive.store(false, Ordering::SeqCst);
    result
}
