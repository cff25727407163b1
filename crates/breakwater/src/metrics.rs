//! Metric names, units and help texts, and the functions that record notable events (each
//! both logs and counts). Labels are bounded: topic, partition, system, handoff, kind,
//! outcome, reason. Never a SKU, an offset or error text.

use breakwater_core::{AlertKind, IncidentStatus, Model, Rejection};
use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

/// Input records by topic and outcome (`applied`, `duplicate`, `superseded`, `dead_letter`).
pub const INPUT_RECORDS: &str = "breakwater_input_records_total";
/// Records sent to the dead-letter topic, by source topic and reason code.
pub const DEAD_LETTERS: &str = "breakwater_dead_letter_records_total";
/// Propagation events published, by target system.
pub const PROPAGATIONS: &str = "breakwater_propagation_events_total";
/// Alerts published, by kind and system.
pub const ALERTS: &str = "breakwater_alerts_total";
/// Alerts not published because their kind's rate limit was spent, by kind and system (they
/// are counted in their incident).
pub const ALERTS_SUPPRESSED: &str = "breakwater_alerts_suppressed_total";
/// Incident reports published, by kind and status (`OPENED`, `UPDATED`, `RESOLVED`); one
/// incident spanning several partitions is reported by each.
pub const INCIDENTS: &str = "breakwater_incident_reports_total";
/// Reservation decisions, by decision.
pub const DECISIONS: &str = "breakwater_reservation_decisions_total";
/// Records folded without waiting for an input partition that was still behind, by
/// partition: the timestamp order was not guaranteed for them.
pub const ENFORCED: &str = "breakwater_enforced_processing_total";
/// Consuming actions (allocations, orders) that raised no alert, by system and outcome
/// (`current`, `stale_sufficient`, `backorder`); alerted ones are in `breakwater_alerts_total`.
pub const ACTIONS: &str = "breakwater_actions_total";
/// Time from a change to a downstream system converging on it, by handoff (`origin->system`).
pub const HANDOFF_LATENCY: &str = "breakwater_handoff_convergence_seconds";
/// Convergences by handoff and whether they were inside the window (`within`: true/false).
pub const HANDOFF_CONVERGENCES: &str = "breakwater_handoff_convergences_total";
/// Duration of one commit (Kafka transaction and RocksDB batch).
pub const COMMIT_DURATION: &str = "breakwater_commit_duration_seconds";
/// Input records per commit.
pub const COMMIT_RECORDS: &str = "breakwater_commit_batch_records";
/// Commits by outcome (`committed`, `aborted`).
pub const COMMITS: &str = "breakwater_commits_total";
/// Partitions this instance owns.
pub const PARTITIONS: &str = "breakwater_assigned_partitions";
/// Partitions assigned for some input topics but not all (members subscribe to different
/// topics): not processed until the group agrees.
pub const INCOMPLETE_TASKS: &str = "breakwater_incomplete_partitions";
/// Changelog records still to restore, by partition (0 once restored).
pub const RESTORE_REMAINING: &str = "breakwater_restore_remaining_records";
/// Changelog records restored into local state, by partition.
pub const RESTORED: &str = "breakwater_restored_records_total";
/// A partition's stream time (the highest record timestamp folded), as a Unix time in
/// seconds, set at every commit; NaN once the partition is revoked. Alert on
/// `time() - breakwater_stream_time_seconds`: it grows when input lags and when the
/// processor hangs.
pub const STREAM_TIME: &str = "breakwater_stream_time_seconds";
/// 1 while the instance is ready (every assigned partition open and restored), else 0;
/// set at every scrape.
pub const READY: &str = "breakwater_ready";
/// Records at the broker not yet consumed, per input topic and partition (librdkafka's
/// `consumer_lag`, from its statistics every `statistics.interval.ms`); NaN once revoked.
pub const CONSUMER_LAG: &str = "breakwater_consumer_lag_records";
/// Always 1, labelled with the version.
pub const BUILD_INFO: &str = "breakwater_build_info";
/// RocksDB's estimate of the keys in a partition's state, set at every scrape.
pub const ROCKSDB_KEYS: &str = "breakwater_rocksdb_estimated_keys";
/// RocksDB's memory per partition by kind (`memtables`, `table_readers`, `block_cache`),
/// set at every scrape.
pub const ROCKSDB_MEMORY: &str = "breakwater_rocksdb_memory_bytes";
/// RESOLVED alerts by the kind they resolve (DRIFT, PHANTOM_AVAILABILITY, HANDOFF_TIMEOUT)
/// and system.
pub const ALERTS_RESOLVED: &str = "breakwater_alerts_resolved_total";
/// Processor (re)starts after an error, by error type.
pub const RESTARTS: &str = "breakwater_processor_restarts_total";

/// Histogram buckets for latencies, in seconds: 10 ms to 30 min, covering handoff windows.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0,
];
/// Histogram buckets for commit durations, in seconds.
pub const COMMIT_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
/// Histogram buckets for batch sizes, in records.
pub const BATCH_BUCKETS: &[f64] = &[
    1.0, 10.0, 100.0, 500.0, 1000.0, 5000.0, 10000.0, 20000.0, 50000.0,
];

/// Gives every metric its unit and help text. Call once, after installing the recorder.
pub fn describe() {
    describe_counter!(
        INPUT_RECORDS,
        Unit::Count,
        "Input records by topic and outcome."
    );
    describe_counter!(
        DEAD_LETTERS,
        Unit::Count,
        "Records sent to the dead-letter topic, by source topic and reason."
    );
    describe_counter!(
        PROPAGATIONS,
        Unit::Count,
        "Propagation events published, by target system."
    );
    describe_counter!(ALERTS, Unit::Count, "Alerts published, by kind and system.");
    describe_counter!(
        ALERTS_SUPPRESSED,
        Unit::Count,
        "Alerts not published because their kind's rate limit was spent, by kind and system."
    );
    describe_counter!(
        INCIDENTS,
        Unit::Count,
        "Incident reports published, by kind and status (per partition's share)."
    );
    describe_counter!(
        DECISIONS,
        Unit::Count,
        "Reservation decisions, by decision."
    );
    describe_counter!(
        ENFORCED,
        Unit::Count,
        "Records folded without waiting for a partition that was still behind (max_task_idle_ms passed), by partition."
    );
    describe_counter!(
        ACTIONS,
        Unit::Count,
        "Allocations and orders that raised no alert, by system and outcome (current, stale_sufficient, backorder)."
    );
    describe_histogram!(
        HANDOFF_LATENCY,
        Unit::Seconds,
        "Time from an authoritative change to a downstream system converging, by handoff."
    );
    describe_counter!(
        HANDOFF_CONVERGENCES,
        Unit::Count,
        "Convergences by handoff and whether they were inside the window."
    );
    describe_histogram!(
        COMMIT_DURATION,
        Unit::Seconds,
        "Duration of one commit: Kafka transaction plus RocksDB batch."
    );
    describe_histogram!(COMMIT_RECORDS, Unit::Count, "Input records per commit.");
    describe_counter!(COMMITS, Unit::Count, "Commits by outcome.");
    describe_gauge!(PARTITIONS, Unit::Count, "Partitions this instance owns.");
    describe_gauge!(
        INCOMPLETE_TASKS,
        Unit::Count,
        "Partitions assigned for some input topics only (the group's members subscribe to different topics); not processed."
    );
    describe_gauge!(
        RESTORE_REMAINING,
        Unit::Count,
        "Changelog records still to restore before the partition is processed, by partition."
    );
    describe_counter!(
        RESTORED,
        Unit::Count,
        "Changelog records restored into local state, by partition."
    );
    describe_gauge!(
        STREAM_TIME,
        Unit::Seconds,
        "The partition's stream time (Unix seconds), set at every commit; NaN once revoked."
    );
    describe_gauge!(
        READY,
        Unit::Count,
        "1 while every assigned partition is open and restored, else 0."
    );
    describe_gauge!(
        CONSUMER_LAG,
        Unit::Count,
        "Input records at the broker not yet consumed, by topic and partition; NaN once revoked."
    );
    describe_gauge!(BUILD_INFO, Unit::Count, "Always 1; the version is a label.");
    describe_gauge!(
        ROCKSDB_KEYS,
        Unit::Count,
        "RocksDB's estimate of the keys in a partition's state."
    );
    describe_gauge!(
        ROCKSDB_MEMORY,
        Unit::Bytes,
        "RocksDB memory per partition, by kind (memtables, table_readers, block_cache)."
    );
    describe_counter!(
        ALERTS_RESOLVED,
        Unit::Count,
        "RESOLVED alerts published, by the kind they resolve and system."
    );
    describe_counter!(
        RESTARTS,
        Unit::Count,
        "Processor restarts after an error, by error type."
    );
}

/// Every metric Breakwater exports and its labels (besides `instance` and `job`, which
/// Prometheus adds). Histograms are listed by base name; their series are `_bucket` (with
/// `le`), `_sum` and `_count`. The process collector's metrics (`process_*`) are listed by
/// the names it exports on Linux. The dashboard and the alert rules are checked against this
/// (`tests/deploy_metrics.rs`).
pub const CATALOGUE: &[(&str, &[&str])] = &[
    (INPUT_RECORDS, &["topic", "outcome"]),
    (DEAD_LETTERS, &["topic", "reason"]),
    (PROPAGATIONS, &["system"]),
    (ALERTS, &["kind", "system"]),
    (ALERTS_SUPPRESSED, &["kind", "system"]),
    (ALERTS_RESOLVED, &["kind", "system"]),
    (INCIDENTS, &["kind", "status"]),
    (DECISIONS, &["decision"]),
    (ENFORCED, &["partition"]),
    (ACTIONS, &["system", "outcome"]),
    (HANDOFF_LATENCY, &["handoff"]),
    (HANDOFF_CONVERGENCES, &["handoff", "within"]),
    (COMMIT_DURATION, &[]),
    (COMMIT_RECORDS, &[]),
    (COMMITS, &["outcome"]),
    (PARTITIONS, &[]),
    (INCOMPLETE_TASKS, &[]),
    (RESTORE_REMAINING, &["partition"]),
    (RESTORED, &["partition"]),
    (STREAM_TIME, &["partition"]),
    (READY, &[]),
    (CONSUMER_LAG, &["topic", "partition"]),
    (BUILD_INFO, &["version"]),
    (ROCKSDB_KEYS, &["partition"]),
    (ROCKSDB_MEMORY, &["partition", "kind"]),
    (RESTARTS, &["error_type"]),
    ("process_cpu_seconds_total", &[]),
    ("process_resident_memory_bytes", &[]),
    ("process_virtual_memory_bytes", &[]),
    ("process_open_fds", &[]),
    ("process_max_fds", &[]),
    ("process_start_time_seconds", &[]),
    ("process_threads", &[]),
];

/// Whether `name` is a histogram in [`CATALOGUE`].
pub fn is_histogram(name: &str) -> bool {
    [HANDOFF_LATENCY, COMMIT_DURATION, COMMIT_RECORDS].contains(&name)
}

/// Dead-letter reason codes besides the fold's rejections ([`Rejection::CODES`]): records
/// that cannot be decoded or do not belong where they are.
pub const DEAD_LETTER_CODES: [&str; 9] = [
    "empty_payload",
    "system_mismatch",
    "key_mismatch",
    "too_short",
    "bad_magic",
    "unknown_schema_id",
    "avro_decode",
    "json_decode",
    "undecodable",
];

/// Creates, at 0, every counter series whose labels are known at start: alerts by kind and
/// system, dead letters by input topic and reason, handoff convergences, decisions, incident
/// reports, commits, restarts. A series born at its first increment starts at 1, and
/// `increase()` over a series born at 1 is 0: without this, the first OVERSELL (or dead
/// letter, or aborted commit) after a start would never fire its alert.
pub fn register_series(model: &Model, input_topics: &[String]) {
    for sys in model.systems() {
        let system = model.name(sys.id).to_owned();
        for kind in AlertKind::ALL {
            metrics::counter!(ALERTS, "kind" => kind.as_str(), "system" => system.clone())
                .increment(0);
        }
        metrics::counter!(PROPAGATIONS, "system" => system.clone()).increment(0);
        for kind in [
            AlertKind::Drift,
            AlertKind::PhantomAvailability,
            AlertKind::HandoffTimeout,
        ] {
            metrics::counter!(ALERTS_RESOLVED, "kind" => kind.as_str(), "system" => system.clone())
                .increment(0);
        }
        for origin in model.systems() {
            if model.route(origin.id, sys.id).is_some() {
                let handoff = format!("{}->{}", model.name(origin.id), system);
                for within in ["true", "false"] {
                    metrics::counter!(HANDOFF_CONVERGENCES, "handoff" => handoff.clone(), "within" => within)
                        .increment(0);
                }
            }
        }
    }
    for topic in input_topics {
        for reason in Rejection::CODES.iter().chain(DEAD_LETTER_CODES.iter()) {
            metrics::counter!(DEAD_LETTERS, "topic" => topic.clone(), "reason" => *reason)
                .increment(0);
        }
    }
    for decision in ["GRANTED", "REJECTED", "COMMITTED", "RELEASED", "EXPIRED"] {
        metrics::counter!(DECISIONS, "decision" => decision).increment(0);
    }
    for kind in AlertKind::ALL {
        for status in [
            IncidentStatus::Opened,
            IncidentStatus::Updated,
            IncidentStatus::Resolved,
        ] {
            metrics::counter!(INCIDENTS, "kind" => kind.as_str(), "status" => status.as_str())
                .increment(0);
        }
    }
    for outcome in ["committed", "aborted"] {
        metrics::counter!(COMMITS, "outcome" => outcome).increment(0);
    }
    for error_type in ["kafka", "store", "encode", "topics", "restore"] {
        metrics::counter!(RESTARTS, "error_type" => error_type).increment(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    #[test]
    fn the_first_alert_of_each_kind_has_a_zero_before_it() {
        let cfg =
            crate::Config::from_toml(include_str!("../../../deploy/breakwater.toml")).unwrap();
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            register_series(&cfg.model, &["inventory.wms.events".to_owned()]);
        });
        let series: Vec<String> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| {
                assert!(matches!(value, DebugValue::Counter(0)), "{key:?} {value:?}");
                let k = key.key();
                let labels: Vec<String> = k
                    .labels()
                    .map(|l| format!("{}={}", l.key(), l.value()))
                    .collect();
                format!("{}{{{}}}", k.name(), labels.join(","))
            })
            .collect();
        for want in [
            "breakwater_alerts_total{kind=OVERSELL,system=storefront}",
            "breakwater_alerts_total{kind=PHANTOM_AVAILABILITY,system=storefront}",
            "breakwater_dead_letter_records_total{topic=inventory.wms.events,reason=json_decode}",
            "breakwater_dead_letter_records_total{topic=inventory.wms.events,reason=impossible_quantity}",
            "breakwater_commits_total{outcome=aborted}",
            "breakwater_handoff_convergences_total{handoff=wms->erp,within=false}",
        ] {
            assert!(series.iter().any(|s| s == want), "{want} not in {series:#?}");
        }
    }
}
