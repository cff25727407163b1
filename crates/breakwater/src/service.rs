//! `run`: the processor thread, the HTTP server and graceful shutdown under a deadline.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use breakwater_codec::{AnyCodec, AvroCodec, JsonCodec};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{Config, Format};
use crate::processor::{run_blocking, ProcessorError, Shared};

/// Why `run` returned with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The HTTP listener could not bind.
    #[error("http listener on {addr}: {source}")]
    Http {
        /// The address.
        addr: std::net::SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The processor thread could not be started.
    #[error("starting the processor thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// The processor stopped with an error it cannot recover from.
    #[error(transparent)]
    Processor(#[from] ProcessorError),
    /// The processor did not finish within the shutdown deadline.
    #[error("shutdown did not finish within {0:?}")]
    ShutdownTimeout(Duration),
    /// No `kafka.instance_id` and no `$HOSTNAME` to default to.
    #[error(
        "kafka.instance_id is not set and $HOSTNAME is empty: give every instance its own stable \
         id (BREAKWATER_KAFKA__INSTANCE_ID=...); two instances sharing one fence each other"
    )]
    NoInstanceId,
    /// The processor thread panicked: a bug. The process exits non-zero so a supervisor
    /// restarts it (from the last commit) and the panic is seen.
    #[error("the processor thread panicked: {0}")]
    Panicked(String),
}

/// Runs `f` on the processor thread. The receiver yields its result; a panic in `f` is
/// caught and reported as [`RunError::Panicked`], never as a clean exit.
fn spawn_processor<F>(
    f: F,
) -> Result<tokio::sync::oneshot::Receiver<Result<(), RunError>>, RunError>
where
    F: FnOnce() -> Result<(), ProcessorError> + Send + 'static,
{
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("breakwater-processor".into())
        .spawn(move || {
            let r = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
                Ok(r) => r.map_err(RunError::from),
                Err(panic) => {
                    let msg = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "(no message)".to_owned());
                    error!(panic = %msg, "processor thread panicked");
                    Err(RunError::Panicked(msg))
                }
            };
            let _ = done_tx.send(r);
        })
        .map_err(RunError::Spawn)?;
    Ok(done_rx)
}

/// What the processor thread's channel says: its result, or, if it closed without one (the
/// thread died some other way), an error too.
fn outcome(
    r: Result<Result<(), RunError>, tokio::sync::oneshot::error::RecvError>,
) -> Result<(), RunError> {
    r.unwrap_or_else(|_| {
        Err(RunError::Panicked(
            "the processor thread ended without a result".into(),
        ))
    })
}

/// The codec the config asks for.
pub fn codec(cfg: &Config) -> AnyCodec {
    match (cfg.kafka.format, &cfg.kafka.schema_registry_url) {
        (Format::Avro, Some(url)) => AnyCodec::Avro(AvroCodec::with_url(url.clone())),
        _ => AnyCodec::Json(JsonCodec),
    }
}

/// Runs Breakwater until `shutdown` completes or the processor fails: the processor on its
/// own thread, the HTTP API on the runtime. On shutdown: stop fetching, drain, commit, leave
/// the group, stop serving, all within `processor.shutdown_timeout_ms`.
///
/// # Errors
/// [`RunError`] when the listener cannot bind, the processor fails for good, or shutdown
/// overruns its deadline.
pub async fn run(
    cfg: Config,
    metrics: Option<PrometheusHandle>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    run_with(cfg, metrics, Arc::new(Shared::default()), shutdown).await
}

/// [`run`], sharing the processor's status (readiness, committed records) with the caller.
///
/// # Errors
/// As [`run`].
pub async fn run_with(
    cfg: Config,
    metrics: Option<PrometheusHandle>,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    if cfg.kafka.instance_id.trim().is_empty() {
        return Err(RunError::NoInstanceId);
    }
    let cfg = Arc::new(cfg);
    let stop = Arc::new(AtomicBool::new(false));
    let cancel = CancellationToken::new();

    let listener = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .map_err(|source| RunError::Http {
            addr: cfg.http.listen,
            source,
        })?;
    info!(addr = %cfg.http.listen, "http listening");
    let app = crate::http::router(Arc::clone(&shared), Arc::new(cfg.model.clone()), metrics);
    let http_cancel = cancel.clone();
    let http = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { http_cancel.cancelled().await })
            .await;
        if let Err(e) = served {
            error!(error = %e, "http server failed");
        }
    });

    let done_rx = {
        let (cfg, shared, stop) = (Arc::clone(&cfg), Arc::clone(&shared), Arc::clone(&stop));
        let codec = codec(&cfg);
        let rt = tokio::runtime::Handle::current();
        spawn_processor(move || run_blocking(cfg, codec, rt, shared, stop))?
    };

    tokio::pin!(shutdown);
    tokio::pin!(done_rx);
    let result = tokio::select! {
        () = &mut shutdown => {
            info!("shutting down: draining and committing");
            stop.store(true, Ordering::SeqCst);
            let deadline = Duration::from_millis(cfg.processor.shutdown_timeout_ms);
            match tokio::time::timeout(deadline, &mut done_rx).await {
                Ok(r) => outcome(r),
                Err(_) => {
                    warn!(?deadline, "shutdown deadline passed; exiting without a final commit");
                    Err(RunError::ShutdownTimeout(deadline))
                }
            }
        }
        r = &mut done_rx => outcome(r),
    };
    cancel.cancel();
    let _ = http.await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_processor_is_an_error_not_a_clean_exit() {
        let rx = spawn_processor(|| panic!("boom in the fold")).unwrap();
        match outcome(rx.await) {
            Err(RunError::Panicked(msg)) => assert!(msg.contains("boom in the fold"), "{msg}"),
            other => panic!("expected Panicked, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_processor_error_stays_an_error_and_success_stays_success() {
        let rx = spawn_processor(|| Err(ProcessorError::Topics("missing".into()))).unwrap();
        assert!(matches!(
            outcome(rx.await),
            Err(RunError::Processor(ProcessorError::Topics(_)))
        ));
        let rx = spawn_processor(|| Ok(())).unwrap();
        assert!(outcome(rx.await).is_ok());
    }

    #[tokio::test]
    async fn an_instance_without_an_id_refuses_to_start() {
        let mut cfg = Config::from_toml(include_str!("../../../deploy/breakwater.toml")).unwrap();
        cfg.kafka.instance_id = String::new();
        let r = run(cfg, None, std::future::pending()).await;
        assert!(matches!(r, Err(RunError::NoInstanceId)), "{r:?}");
    }

    #[tokio::test]
    async fn a_channel_closed_without_a_result_is_an_error() {
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<(), RunError>>();
        drop(tx);
        assert!(matches!(outcome(rx.await), Err(RunError::Panicked(_))));
    }
}
