//! The one HTTP router (axum) on `MPORT`: probes, metrics and status.
//!
//! - `GET /healthz`: liveness; the process answers. Never touches Redis, so
//!   a Redis outage never gets pods restarted.
//! - `GET /readyz`: readiness, from the instance's state alone (no Redis
//!   call, so it answers at once while Redis hangs): Redis answers, the
//!   role loop runs, no essential operation keeps failing; 503 with the
//!   reason in the body otherwise, and from the moment shutdown begins.
//! - `GET /metrics`: Prometheus text format.
//! - `GET /status`: JSON for humans and scripts; secrets redacted. Like
//!   the probes, it never waits for Redis.
//!
//! Served through hyper's HTTP/1 connection builder rather than
//! `axum::serve`, which sets no timer (so hyper's header-read timeout never
//! fires) and caps nothing: here a client that does not finish its request
//! headers within `http.header_read_timeout_ms` is disconnected, and at most
//! `http.max_connections` connections are served at once (the permit is
//! taken before `accept`, so more wait in the kernel's backlog and cost
//! nothing here).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, HttpConfig};
use crate::service::health::{Health, Readiness};
use crate::service::metrics::Metrics;
use crate::service::state::InstanceState;
use crate::service::status::{InstanceStatus, LeaseView};

/// What the handlers read.
#[derive(Debug, Clone)]
pub(super) struct AppState {
    /// Role, holder, readiness flags.
    pub state: Arc<InstanceState>,
    /// The instruments.
    pub metrics: Metrics,
    /// Readiness and its reason.
    pub health: Health,
    /// For `/status` (rendered redacted).
    pub config: Arc<Config>,
}

/// The router with every endpoint.
pub(super) fn router(app: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(app)
}

/// Largest request head (request line and headers) a client may send;
/// hyper's default (~400 KB) let slow clients hold that much each.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Serves `router` on `listener` until `stop` fires, then lets requests
/// in progress finish (for at most a second).
pub(super) async fn serve(
    listener: TcpListener,
    router: Router,
    cfg: &HttpConfig,
    stop: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(cfg.max_connections));
    let header_timeout = Duration::from_millis(cfg.header_read_timeout_ms);
    let graceful = GracefulShutdown::new();
    loop {
        // Taken before accepting: past the cap, connections wait in the
        // backlog. The semaphore is never closed, so acquiring cannot fail.
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: pause, retry.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .max_buf_size(MAX_HEAD_BYTES);
        let connection = graceful.watch(builder.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(router.clone()),
        ));
        tokio::spawn(async move {
            let _permit = permit;
            // A client that goes away or times out ends its connection;
            // nothing to report.
            let _ = connection.await;
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), graceful.shutdown()).await;
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(app): State<AppState>) -> Response {
    match app.health.readiness() {
        Readiness::Ready => (StatusCode::OK, "ready\n").into_response(),
        Readiness::NotReady(why) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response()
        }
    }
}

async fn metrics(State(app): State<AppState>) -> Response {
    match app.metrics.render() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        // A scrape that fails shows as failed, never as an empty page.
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot render metrics: {e}\n"),
        )
            .into_response(),
    }
}

async fn status(State(app): State<AppState>) -> Json<InstanceStatus> {
    let sample = app.metrics.fresh_fleet_sample();
    let s = &app.state;
    let holder = s.holder();
    Json(InstanceStatus {
        id: s.id.clone(),
        mode: s.mode,
        role: s.role(),
        ready: app.health.readiness().is_ready(),
        redis_url: app.config.redis.url.to_string(),
        queue: app.config.redis.queue.clone(),
        error_queue: app.config.redis.error_queue.clone(),
        queue_length: sample.map(|s| s.queue_length),
        error_queue_length: sample.map(|s| s.error_queue_length),
        lease: LeaseView {
            is_holder: holder.as_deref() == Some(s.id.as_str()),
            holder,
            epoch: s.epoch(),
        },
        original_lock: s.original_lock(),
        in_flight: app.metrics.in_flight(),
        counters: app.metrics.counts(),
        uptime_seconds: s.uptime_seconds(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    })
}
