//! The accept loop: one hyper HTTP/1.1 connection per TCP connection, at most
//! `max_connections` at once (further clients wait in the listen backlog), headers
//! read within `header_read_timeout`, each request bounded by `request_timeout`.
//!
//! Shutdown happens here: when the shutdown future resolves the listener closes, every
//! connection is told to finish its in-flight request and then close, and we wait for
//! them up to `shutdown_grace`. The caller then stops the store, which commits
//! nothing half-done: a write is either queued whole or not at all.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::header::HeaderName;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::cors::Cors;
use super::{ApiError, Reply};
use crate::api::App;
use crate::config::Config;

/// Connection and time limits, and the origins browsers may call from, from the
/// configuration.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub request_timeout: Duration,
    pub shutdown_grace: Duration,
    pub cors: Arc<Cors>,
    /// The header a reverse proxy names the client's address in
    /// (`rate_limit.client_ip_header`).
    pub client_ip_header: Option<HeaderName>,
}

impl From<&Config> for Limits {
    fn from(config: &Config) -> Self {
        Self {
            max_connections: config.max_connections,
            header_read_timeout: config.header_read_timeout,
            request_timeout: config.request_timeout,
            shutdown_grace: config.shutdown_grace,
            cors: Arc::new(Cors::new(config.cors_origins.clone())),
            client_ip_header: config
                .client_ip_header
                .as_deref()
                .and_then(|name| HeaderName::from_bytes(name.as_bytes()).ok()),
        }
    }
}

/// Serves connections until `shutdown` resolves, then drains them.
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let limits = Arc::new(limits);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Usually EMFILE/ENFILE: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "set_nodelay failed");
        }
        let app = Arc::clone(&app);
        let conn_limits = Arc::clone(&limits);
        let service = service_fn(move |req| {
            let app = Arc::clone(&app);
            let limits = Arc::clone(&conn_limits);
            async move { Ok::<_, Infallible>(super::service::serve(app, &limits, req, peer.ip()).await) }
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!("shutdown grace period over; closing remaining connections");
        }
    }
}

/// Connections the keyless metrics listener serves at once.
const METRICS_CONNECTIONS: usize = 16;

/// Serves `GET /metrics` without a key on its own listener (`metrics.listen`), for a
/// scraper; any other request is 404. Runs until the task is dropped.
pub async fn serve_metrics(listener: TcpListener) {
    let permits = Arc::new(Semaphore::new(METRICS_CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::warn!(error = %err, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let service = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
            let scrape = req.uri().path() == "/metrics"
                && matches!(*req.method(), hyper::Method::GET | hyper::Method::HEAD);
            let response = if scrape {
                Reply::bytes(200, crate::metrics::CONTENT_TYPE, crate::metrics::render())
                    .into_response()
            } else {
                ApiError::NotFound.into_response()
            };
            Ok::<_, Infallible>(response)
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(METRICS_READ_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
}

/// Time a scraper has to send its request headers.
const METRICS_READ_TIMEOUT: Duration = Duration::from_secs(10);
