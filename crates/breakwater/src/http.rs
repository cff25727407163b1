//! The operator's HTTP API (axum): `/metrics`, `/health`, `/ready`, availability of a key and
//! the cascade map.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use breakwater_core::output::Snapshot;
use breakwater_core::{message_key, Model};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};

use crate::metrics as m;
use crate::processor::Shared;

#[derive(Clone)]
struct AppState {
    shared: Arc<Shared>,
    model: Arc<Model>,
    metrics: Option<PrometheusHandle>,
    process: Arc<metrics_process::Collector>,
}

/// The router. `metrics` is the handle of the installed Prometheus recorder, if any.
pub fn router(shared: Arc<Shared>, model: Arc<Model>, metrics: Option<PrometheusHandle>) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/v1/availability/{sku}", get(availability))
        .route("/v1/cascade-map", get(cascade_map))
        .with_state(AppState {
            shared,
            model,
            metrics,
            process: Arc::new(metrics_process::Collector::default()),
        })
}

/// Sets the gauges read at scrape time: readiness, each owned partition's RocksDB estimates,
/// the process's CPU, memory and file descriptors.
fn scrape_gauges(s: &AppState) {
    metrics::gauge!(m::READY).set(if s.shared.ready.load(Ordering::SeqCst) {
        1.0
    } else {
        0.0
    });
    let stores = owned_stores(&s.shared);
    for (p, store) in stores {
        let Ok(stats) = store.stats() else { continue };
        let partition = p.to_string();
        metrics::gauge!(m::ROCKSDB_KEYS, "partition" => partition.clone())
            .set(stats.estimated_keys as f64);
        for (kind, bytes) in [
            ("memtables", stats.memtable_bytes),
            ("table_readers", stats.table_readers_bytes),
            ("block_cache", stats.block_cache_bytes),
        ] {
            metrics::gauge!(m::ROCKSDB_MEMORY, "partition" => partition.clone(), "kind" => kind)
                .set(bytes as f64);
        }
    }
    s.process.collect();
}

/// The stores of the partitions this instance owns, by partition (a snapshot: the map is
/// not held while they are read).
fn owned_stores(shared: &Shared) -> Vec<(i32, breakwater_store::PartitionStore)> {
    shared
        .stores
        .read()
        .map(|m| m.iter().map(|(p, st)| (*p, st.clone())).collect())
        .unwrap_or_default()
}

async fn render_metrics(State(s): State<AppState>) -> Response {
    if s.metrics.is_some() {
        scrape_gauges(&s);
    }
    match &s.metrics {
        Some(h) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            h.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no metrics recorder installed").into_response(),
    }
}

async fn health(State(s): State<AppState>) -> Response {
    if s.shared.alive.load(Ordering::SeqCst) {
        (StatusCode::OK, "ok").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "processor stopped").into_response()
    }
}

async fn ready(State(s): State<AppState>) -> Response {
    if s.shared.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: joining the group or restoring partitions",
        )
            .into_response()
    }
}

#[derive(Deserialize)]
struct KeyQuery {
    #[serde(default)]
    location: String,
}

/// The authoritative numbers of one key, as committed.
#[derive(Serialize)]
pub struct Availability {
    /// The SKU.
    pub sku: String,
    /// The location ("" for the default).
    pub location: String,
    /// The partition holding it.
    pub partition: i32,
    /// Authoritative version.
    pub version: u64,
    /// The authoritative numbers: `on_hand`, `allocated`, `committed`, `safety_stock`,
    /// `available` and `reserved`.
    #[serde(flatten)]
    pub numbers: Snapshot,
    /// What a new reservation may take: `available - reserved`.
    pub sellable: i64,
}

async fn availability(
    State(s): State<AppState>,
    Path(sku): Path<String>,
    Query(q): Query<KeyQuery>,
) -> Response {
    let key = message_key(&sku, &q.location);
    let stores = owned_stores(&s.shared);
    for (partition, store) in stores {
        match store.get(key.as_bytes()) {
            Ok(Some(st)) => {
                return Json(Availability {
                    sku,
                    location: q.location,
                    partition,
                    version: st.version,
                    numbers: st.snapshot(),
                    sellable: st.sellable(),
                })
                .into_response();
            }
            Ok(None) => {}
            Err(e) => {
                return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
            }
        }
    }
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({
            "error": "unknown key, or its partition is owned by another instance",
            "key": key,
        })),
    )
        .into_response()
}

async fn cascade_map(State(s): State<AppState>) -> Response {
    let systems: Vec<_> = s
        .model
        .systems()
        .iter()
        .map(|sys| {
            serde_json::json!({
                "name": sys.name,
                "input_topic": sys.input_topic,
                "propagation_topic": sys.propagation_topic,
                "customer_facing": sys.customer_facing,
                "acks_versions": sys.acks_versions,
            })
        })
        .collect();
    let handoffs: Vec<_> = s
        .model
        .handoffs()
        .iter()
        .map(|h| serde_json::json!({"from": h.from, "to": h.to, "window_ms": h.window_ms}))
        .collect();
    Json(serde_json::json!({ "systems": systems, "handoffs": handoffs })).into_response()
}
