//! The worker's HTTP server (`worker.metrics_addr`):
//!
//! - `GET /metrics`: every metric in the Prometheus text format;
//! - `GET /healthz`: 200 while the process runs (liveness);
//! - `GET /readyz`: 200 while the latest Redis round trip succeeded
//!   recently, 503 otherwise, e.g. while Redis is down (readiness).

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::metrics::{Metrics, READY_WITHIN};

/// How long open connections get to finish once the server stops.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// The bound, not yet serving, HTTP server.
pub struct HealthServer {
    listener: TcpListener,
    metrics: Metrics,
}

impl HealthServer {
    /// Binds `addr` (port 0 picks a free port).
    pub async fn bind(addr: SocketAddr, metrics: Metrics) -> std::io::Result<HealthServer> {
        let listener = TcpListener::bind(addr).await?;
        Ok(HealthServer { listener, metrics })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown`, then lets open requests finish for a moment.
    pub async fn run(self, shutdown: CancellationToken) {
        let addr = self.listener.local_addr().ok();
        let app = router(self.metrics);
        info!(addr = ?addr, "serving /metrics, /healthz and /readyz");
        let stop = shutdown.clone();
        let serve = axum::serve(self.listener, app).with_graceful_shutdown(stop.cancelled_owned());
        let mut serve = std::pin::pin!(serve.into_future());
        tokio::select! {
            result = &mut serve => {
                if let Err(err) = result {
                    warn!(error = %err, "metrics server failed");
                }
                return;
            }
            _ = shutdown.cancelled() => {}
        }
        // A scraper holding a keep-alive connection must not hold up the
        // shutdown.
        let _ = tokio::time::timeout(STOP_GRACE, serve).await;
    }
}

fn router(metrics: Metrics) -> Router {
    let for_metrics = metrics.clone();
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = for_metrics.clone();
                async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], m.render()) }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = metrics.is_ready();
                async move {
                    if ready {
                        (StatusCode::OK, "ready\n".to_string()).into_response()
                    } else {
                        let why = format!(
                            "not ready: the latest Redis round trip failed, or none succeeded in the last {}s\n",
                            READY_WITHIN.as_secs()
                        );
                        (StatusCode::SERVICE_UNAVAILABLE, why).into_response()
                    }
                }
            }),
        )
}
