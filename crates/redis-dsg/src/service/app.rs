//! The service: `Application::build` binds the HTTP port and prepares the
//! Redis clients; `run_until_stopped` runs everything until the shutdown
//! future resolves, then stops in order within the shutdown timeout.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use fred::prelude::*;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::redis::Keys;
use crate::redis::Operation;
use crate::redis::{Redis, RedisError};
use crate::service::http::{self, AppState};
use crate::service::metrics::Metrics;
use crate::service::role::{self, RoleContext};
use crate::service::state::{InstanceState, new_instance_id};

/// Failures that stop the service from starting.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The HTTP port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The Redis clients could not be built.
    #[error(transparent)]
    Redis(#[from] RedisError),
}

/// A built, not yet running service.
#[derive(Debug)]
pub struct Application {
    config: Arc<Config>,
    listener: TcpListener,
    port: u16,
    redis: Redis,
    keys: Keys,
    metrics: Metrics,
    state: Arc<InstanceState>,
}

impl Application {
    /// Binds the HTTP port and builds the Redis clients (not connected yet).
    pub async fn build(config: Config) -> Result<Application, AppError> {
        let addr = std::net::SocketAddr::new(config.http.bind, config.http.port);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| AppError::Bind {
                addr: addr.to_string(),
                source,
            })?;
        let port = listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or(config.http.port);
        let redis = Redis::for_service(&config.redis)?;
        let keys = Keys::new(&config.redis.queue, &config.redis.error_queue);
        let metrics = Metrics::new(&keys.queue, &keys.error_queue);
        let state = Arc::new(InstanceState::new(new_instance_id(), config.mode));
        Ok(Application {
            config: Arc::new(config),
            listener,
            port,
            redis,
            keys,
            metrics,
            state,
        })
    }

    /// The bound HTTP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// This instance's id.
    pub fn id(&self) -> &str {
        &self.state.id
    }

    /// Runs until `shutdown` resolves, then shuts down gracefully. Returns
    /// `false` when the shutdown timeout ran out before everything stopped.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = &'static str>) -> bool {
        let Application {
            config,
            listener,
            port,
            redis,
            keys,
            metrics,
            state,
        } = self;
        tracing::info!(
            id = %state.id,
            port,
            mode = config.mode.as_str(),
            redis = %config.redis.url,
            queue = %keys.queue,
            "redis-dsg starting"
        );

        let http_stop = CancellationToken::new();
        let server = {
            let app = http::router(AppState {
                state: state.clone(),
                metrics: metrics.clone(),
                redis: redis.clone(),
                config: config.clone(),
            });
            let stop = http_stop.clone();
            tokio::spawn(async move {
                let served = axum::serve(listener, app)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "HTTP server failed");
                }
            })
        };

        redis.connect();
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        let role_loop = tracker.spawn(role::run(
            RoleContext {
                redis: redis.clone(),
                keys: keys.clone(),
                config: (*config).clone(),
                metrics: metrics.clone(),
                state: state.clone(),
            },
            stop.clone(),
        ));
        tracker.spawn(crate::service::reaper::run(
            redis.clone(),
            keys.clone(),
            state.id.clone(),
            Duration::from_millis(config.consumer.reaper_interval_ms),
            metrics.clone(),
            stop.clone(),
        ));
        tracker.spawn(sample_queue_lengths(
            redis.clone(),
            keys.clone(),
            metrics.clone(),
            state.clone(),
            stop.clone(),
        ));
        tracker.close();

        let signal = shutdown.await;
        state.begin_stopping();
        tracing::info!(
            signal,
            timeout_ms = config.shutdown.timeout_ms,
            "shutting down"
        );
        stop.cancel();
        let clean = tokio::time::timeout(config.shutdown.timeout(), tracker.wait())
            .await
            .is_ok();
        if !clean {
            tracing::error!(
                "shutdown timeout ran out; exiting anyway (unfinished messages stay in Redis and are recovered by other instances)"
            );
            role_loop.abort();
        }
        http_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(1), server).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), redis.quit()).await;
        tracing::info!(clean, "stopped");
        clean
    }
}

/// Reads the lengths of the queue and the error list every two seconds.
async fn sample_queue_lengths(
    redis: Redis,
    keys: Keys,
    metrics: Metrics,
    state: Arc<InstanceState>,
    stop: CancellationToken,
) {
    loop {
        if redis.is_connected() {
            let pipeline = redis.client().pipeline();
            let _: Result<(), _> = pipeline.llen(keys.queue.as_str()).await;
            let _: Result<(), _> = pipeline.llen(keys.error_queue.as_str()).await;
            match pipeline.all::<Vec<u64>>().await {
                Ok(lengths) if lengths.len() == 2 => {
                    metrics.record_queue_length(&keys.queue, lengths[0]);
                    metrics.record_queue_length(&keys.error_queue, lengths[1]);
                    state.set_queue_lengths(lengths[0], lengths[1]);
                }
                Ok(_) => {}
                Err(_) => metrics.record_redis_error(Operation::QueueLength),
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}
