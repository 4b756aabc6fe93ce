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

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::cors::Cors;
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
}

impl From<&Config> for Limits {
    fn from(config: &Config) -> Self {
        Self {
            max_connections: config.max_connections,
            header_read_timeout: config.header_read_timeout,
            request_timeout: config.request_timeout,
            shutdown_grace: config.shutdown_grace,
            cors: Arc::new(Cors::new(config.cors_origins.clone())),
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
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
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
        let timeout = limits.request_timeout;
        let cors = Arc::clone(&limits.cors);
        let service = service_fn(move |req| {
            let app = Arc::clone(&app);
            let cors = Arc::clone(&cors);
            async move { Ok::<_, Infallible>(super::service::serve(app, &cors, req, timeout).await) }
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
