//! The one HTTP router (axum) on `MPORT`: probes, metrics and status.
//!
//! - `GET /healthz`: liveness; the process answers. Never touches Redis, so
//!   a Redis outage never gets pods restarted.
//! - `GET /readyz`: readiness; Redis answers a `PING` and the role loop runs;
//!   503 from the moment shutdown begins.
//! - `GET /metrics`: Prometheus text format.
//! - `GET /status`: JSON for humans and scripts; secrets redacted.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::redis::Redis;
use crate::state::InstanceState;

/// What the handlers read.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Role, holder, readiness flags.
    pub state: Arc<InstanceState>,
    /// The instruments.
    pub metrics: Metrics,
    /// For the readiness `PING`.
    pub redis: Redis,
    /// For `/status` (rendered redacted).
    pub config: Arc<Config>,
}

/// The router with every endpoint.
pub fn router(app: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(app)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(app): State<AppState>) -> Response {
    if app.state.is_stopping() {
        return (StatusCode::SERVICE_UNAVAILABLE, "stopping\n").into_response();
    }
    if !app.state.role_loop_running() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "starting: waiting for Redis\n",
        )
            .into_response();
    }
    if !app.redis.ping().await {
        return (StatusCode::SERVICE_UNAVAILABLE, "Redis unreachable\n").into_response();
    }
    (StatusCode::OK, "ready\n").into_response()
}

async fn metrics(State(app): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}

async fn status(State(app): State<AppState>) -> Json<serde_json::Value> {
    let s = &app.state;
    let c = app.metrics.counters();
    let (queue_length, error_queue_length) = s.queue_lengths();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    Json(serde_json::json!({
        "id": s.id,
        "mode": s.mode.as_str(),
        "role": s.role().as_str(),
        "ready": !s.is_stopping() && s.role_loop_running() && app.redis.is_connected(),
        "redis_url": app.config.redis.url.redacted(),
        "queue": app.config.redis.queue,
        "error_queue": app.config.redis.error_queue,
        "queue_length": queue_length,
        "error_queue_length": error_queue_length,
        "lease": {
            "holder": s.holder(),
            "epoch": s.epoch(),
            "is_holder": s.holder().as_deref() == Some(s.id.as_str()),
        },
        "in_flight": c.in_flight.load(Ordering::Relaxed),
        "counters": {
            "generated": load(&c.generated),
            "processed_ok": load(&c.processed_ok),
            "invalid": load(&c.invalid),
            "malformed": load(&c.malformed),
            "oversized": load(&c.oversized),
            "recovered": load(&c.recovered),
            "late_acks": load(&c.late_acks),
            "fenced_writes_rejected": load(&c.fenced_writes_rejected),
            "lease_transitions": load(&c.lease_transitions),
            "redis_errors": load(&c.redis_errors),
        },
        "uptime_seconds": s.uptime_seconds(),
        "version": env!("CARGO_PKG_VERSION"),
    }))
}
