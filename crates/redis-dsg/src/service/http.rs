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

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;

use crate::config::Config;
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
    let counters = app.metrics.counters();
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
        in_flight: counters.in_flight.load(Ordering::Relaxed),
        counters: counters.snapshot(),
        uptime_seconds: s.uptime_seconds(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    })
}
