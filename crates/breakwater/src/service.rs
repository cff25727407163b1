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

    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    {
        let (cfg, shared, stop) = (Arc::clone(&cfg), Arc::clone(&shared), Arc::clone(&stop));
        let codec = codec(&cfg);
        let rt = tokio::runtime::Handle::current();
        std::thread::Builder::new()
            .name("breakwater-processor".into())
            .spawn(move || {
                let r = run_blocking(cfg, codec, rt, shared, stop);
                let _ = done_tx.send(r);
            })
            .map_err(RunError::Spawn)?;
    }

    tokio::pin!(shutdown);
    tokio::pin!(done_rx);
    let result = tokio::select! {
        () = &mut shutdown => {
            info!("shutting down: draining and committing");
            stop.store(true, Ordering::SeqCst);
            let deadline = Duration::from_millis(cfg.processor.shutdown_timeout_ms);
            match tokio::time::timeout(deadline, &mut done_rx).await {
                Ok(Ok(r)) => r.map_err(RunError::from),
                Ok(Err(_)) => Ok(()),
                Err(_) => {
                    warn!(?deadline, "shutdown deadline passed; exiting without a final commit");
                    Err(RunError::ShutdownTimeout(deadline))
                }
            }
        }
        r = &mut done_rx => match r {
            Ok(r) => r.map_err(RunError::from),
            Err(_) => Ok(()),
        },
    };
    cancel.cancel();
    let _ = http.await;
    result
}
