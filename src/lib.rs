//! contactd: a self-hosted contacts server with a Chatbase/Bookbag-compatible API,
//! stored in one embedded redb file.
//!
//! [`serve`] is the one entry point: `main`, the integration tests and the benchmarks
//! all start the same server through it.

pub mod api;
pub mod auth;
pub mod bootstrap;
pub mod bulk;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod domain;
pub mod http;
pub mod store;

use std::future::Future;
use std::io::Write;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::bootstrap::FirstRun;
use crate::config::Config;
use crate::store::{RedbStore, Store, StoreError};

/// Every binary built on this crate (the server, its tests and benchmarks) allocates with
/// jemalloc: redb's page cache is many 4 KiB buffers allocated and freed on different
/// threads, which glibc's malloc keeps resident long after they are freed, and
/// allocation is a large share of the writer's time.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Opens the store in `config.data_dir`, initializes it on first run, prints
/// `listening on <addr>`, serves until `shutdown` resolves, then drains connections and
/// closes the database.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StoreError> {
    let data_dir = config.data_dir.clone();
    let options = config.store_options();
    let store = tokio::task::spawn_blocking(move || RedbStore::open_with(&data_dir, options))
        .await
        .map_err(|err| StoreError::Backend(format!("open task failed: {err}")))??;
    let store = Arc::new(store);
    // The store holds the data dir's lock now, so no other process is importing.
    match api::remove_stale_spools(&config.data_dir) {
        Ok(0) => {}
        Ok(removed) => tracing::info!(removed, "removed import files left by an earlier run"),
        Err(err) => tracing::warn!(error = %err, "cannot look for stale import files"),
    }
    // A damaged store refuses writes, the first run's included: it serves what it can.
    if store.damage().is_none() {
        match bootstrap::first_run(store.as_ref(), config.admin_key.as_deref()).await? {
            FirstRun::GeneratedKey(key) => println!("{}", bootstrap::banner(&key)),
            FirstRun::ChosenKey => {
                tracing::info!(
                    "first run: created agent 'default' and the admin key from CONTACTD_ADMIN_KEY"
                );
            }
            FirstRun::AlreadyDone => {}
        }
    }
    let addr = listener.local_addr()?;
    println!("listening on {addr}");
    // Tests and scripts wait for this line; make sure it is not stuck in a buffer.
    std::io::stdout().flush()?;
    let app = Arc::new(api::App::new(Arc::clone(&store) as _, &config));
    http::server::run(listener, app, http::server::Limits::from(&config), shutdown).await;
    tracing::info!("closing the database");
    store.shutdown();
    Ok(())
}
