//! The service: `Application::build` binds the HTTP port and prepares the
//! Redis clients; `run_until_stopped` runs everything until the shutdown
//! future resolves, then stops in order within the shutdown timeout.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::redis::Keys;
use crate::redis::{Redis, RedisError};
use crate::service::chores::Chores;
use crate::service::health::Health;
use crate::service::http::{self, AppState};
use crate::service::metrics::Metrics;
use crate::service::reaper::Reaper;
use crate::service::redis_memory::RedisMemory;
use crate::service::role::{self, RoleContext};
use crate::service::sampler::Sampler;
use crate::service::state::{InstanceState, new_instance_id};
use crate::service::watcher::Watcher;

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
    /// Taken by the HTTP server when the service starts.
    listener: Option<TcpListener>,
    port: u16,
    redis: Redis,
    keys: Keys,
    metrics: Metrics,
    health: Health,
    state: Arc<InstanceState>,
}

/// What runs until the shutdown signal.
struct Running {
    /// Stops the role loop, the reaper and the sampler.
    stop: CancellationToken,
    /// Waits for them.
    tracker: TaskTracker,
    role_loop: JoinHandle<()>,
    /// Stops the HTTP server, last.
    http_stop: CancellationToken,
    server: JoinHandle<()>,
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
        let keys = Keys::of(&config.redis);
        let metrics = Metrics::new(&keys.queue, &keys.error_queue, &config.processor);
        let state = Arc::new(InstanceState::new(new_instance_id(), config.mode));
        let health = Health::new(
            redis.link().clone(),
            state.clone(),
            metrics.clone(),
            config.redis.url.to_string(),
        );
        Ok(Application {
            config: Arc::new(config),
            listener: Some(listener),
            port,
            redis,
            keys,
            metrics,
            health,
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
    pub async fn run_until_stopped(mut self, shutdown: impl Future<Output = &'static str>) -> bool {
        tracing::info!(
            id = %self.state.id,
            port = self.port,
            mode = self.config.mode.as_str(),
            redis = %self.config.redis.url,
            queue = %self.keys.queue,
            "redis-dsg starting"
        );
        let running = self.start();
        let signal = shutdown.await;
        self.stop(running, signal).await
    }

    /// Starts the HTTP server, connects, and starts the role loop, the
    /// reaper, the sampler and the health log.
    fn start(&mut self) -> Running {
        let http_stop = CancellationToken::new();
        let server = self.serve_http(http_stop.clone());
        let stop = CancellationToken::new();
        // Following the link's events starts before connecting, so the
        // first failure is logged.
        tokio::spawn(self.health.clone().follow_link(stop.clone()));
        self.redis.connect();
        let tracker = TaskTracker::new();
        let chores = Chores::new();
        let memory = RedisMemory::new(
            self.redis.clone(),
            self.keys.queue.clone(),
            self.metrics.clone(),
            self.health.clone(),
            self.config.redis.require_noeviction,
        );
        tracker.spawn(memory.clone().run(stop.clone()));
        let role_loop = tracker.spawn(role::run(
            RoleContext {
                redis: self.redis.clone(),
                keys: self.keys.clone(),
                config: (*self.config).clone(),
                metrics: self.metrics.clone(),
                state: self.state.clone(),
                health: self.health.clone(),
                chores: chores.clone(),
                memory,
            },
            stop.clone(),
        ));
        tracker.spawn(
            Reaper {
                redis: self.redis.clone(),
                keys: self.keys.clone(),
                own_id: self.state.id.clone(),
                interval: Duration::from_millis(self.config.consumer.reaper_interval_ms),
                metrics: self.metrics.clone(),
                health: self.health.clone(),
                chores: chores.clone(),
            }
            .run(stop.clone()),
        );
        tracker.spawn(
            Watcher::new(
                self.redis.clone(),
                self.keys.clone(),
                self.health.clone(),
                chores.clone(),
            )
            .run(stop.clone()),
        );
        let sampler = Sampler::new(
            self.redis.clone(),
            self.keys.clone(),
            self.metrics.clone(),
            self.health.clone(),
            self.state.clone(),
            chores.clone(),
        );
        tracker.spawn(sampler.run(stop.clone()));
        tracker.close();
        Running {
            stop,
            tracker,
            role_loop,
            http_stop,
            server,
        }
    }

    fn serve_http(&mut self, stop: CancellationToken) -> JoinHandle<()> {
        let app = http::router(AppState {
            state: self.state.clone(),
            metrics: self.metrics.clone(),
            health: self.health.clone(),
            config: self.config.clone(),
        });
        // `start` runs once (`run_until_stopped` takes `self`), so the
        // listener is there.
        let listener = self.listener.take();
        let cfg = self.config.http.clone();
        tokio::spawn(async move {
            let Some(listener) = listener else { return };
            http::serve(listener, app, &cfg, stop).await
        })
    }

    /// Stops in order: readiness false, the workers (lease released,
    /// in-flight work finished or returned) within the shutdown timeout,
    /// then HTTP and the connections.
    async fn stop(self, running: Running, signal: &'static str) -> bool {
        self.state.begin_stopping();
        tracing::info!(
            signal,
            timeout_ms = self.config.shutdown.timeout_ms,
            "shutting down"
        );
        running.stop.cancel();
        let clean = tokio::time::timeout(self.config.shutdown.timeout(), running.tracker.wait())
            .await
            .is_ok();
        if !clean {
            tracing::error!(
                "shutdown timeout ran out; exiting anyway (unfinished messages stay in Redis and are recovered by other instances)"
            );
            running.role_loop.abort();
        }
        running.http_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(1), running.server).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.redis.quit()).await;
        tracing::info!(clean, "stopped");
        clean
    }
}
