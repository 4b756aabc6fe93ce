//! contactd: a self-hosted contacts server with a Chatbase/Bookbag-compatible API,
//! stored in one embedded redb file.
//!
//! [`serve`] is the one entry point: `main`, the integration tests and the benchmarks
//! all start the same server through it.

pub mod api;
pub mod auth;
pub mod backups;
pub mod bootstrap;
pub mod bulk;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod domain;
pub mod http;
pub mod metrics;
pub mod store;
pub mod webhooks;

use std::collections::BTreeSet;
use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::bootstrap::FirstRun;
use crate::clock::unix_now;
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
    // Installed first, so that what opening the store does (a checkpoint) counts.
    let routes: Vec<&'static str> = http::Route::samples()
        .iter()
        .map(http::Route::template)
        .collect();
    let metrics_on = metrics::install(&routes).is_some();
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
    let sender = Arc::new(
        webhooks::send::Sender::new(
            config.webhook_ca_file.as_deref(),
            config.webhook_allow_private,
        )
        .map_err(|err| StoreError::Backend(format!("webhooks.ca_file: {err}")))?,
    );
    let background = background_tasks(
        &config,
        &(Arc::clone(&store) as Arc<dyn Store>),
        &sender,
        metrics_on,
    )
    .await?;
    let addr = listener.local_addr()?;
    println!("listening on {addr}");
    // Tests and scripts wait for this line; make sure it is not stuck in a buffer.
    std::io::stdout().flush()?;
    let app = Arc::new(api::App::new(Arc::clone(&store) as _, &config, sender));
    http::server::run(listener, app, http::server::Limits::from(&config), shutdown).await;
    for task in background {
        task.abort();
    }
    tracing::info!("closing the database");
    store.shutdown();
    Ok(())
}

/// Starts what runs beside the requests until shutdown: metrics upkeep and gauges, the
/// keyless metrics listener (`metrics.listen`), scheduled backups (`backup.*`), the
/// change feed's retention (`changes.retention_days`), webhook deliveries.
async fn background_tasks(
    config: &Config,
    store: &Arc<dyn Store>,
    sender: &Arc<webhooks::send::Sender>,
    metrics_on: bool,
) -> Result<Vec<JoinHandle<()>>, StoreError> {
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(webhooks::run(
        Arc::clone(store),
        Arc::clone(sender),
        webhooks::Settings {
            batch_max: config.webhook_batch_max,
            max_age: config.webhook_max_age,
        },
    )));
    if metrics_on {
        // The first reading is taken before the server answers, so that every family
        // is there for the first scrape; then one every `metrics::REFRESH_EVERY`.
        let agents = Arc::new(parking_lot::Mutex::new(BTreeSet::new()));
        let refresh = {
            let (store, data_dir) = (Arc::clone(store), config.data_dir.clone());
            move || {
                let (store, data_dir, agents) =
                    (Arc::clone(&store), data_dir.clone(), Arc::clone(&agents));
                tokio::task::spawn_blocking(move || {
                    refresh_gauges(store.as_ref(), &data_dir, &mut agents.lock());
                })
            }
        };
        refresh()
            .await
            .map_err(|err| StoreError::Backend(format!("metrics task failed: {err}")))?;
        tasks.push(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(metrics::REFRESH_EVERY);
            loop {
                ticks.tick().await;
                metrics::upkeep();
                let _ = refresh().await;
            }
        }));
    }
    if let Some(addr) = config.metrics_listen {
        let listener = TcpListener::bind(addr).await.map_err(|err| {
            StoreError::Backend(format!("cannot listen on {addr} (metrics.listen): {err}"))
        })?;
        println!("serving /metrics on {}", listener.local_addr()?);
        tasks.push(tokio::spawn(http::server::serve_metrics(listener)));
    }
    // What expired while the server was stopped is gone before the first request.
    prune_expired(store, config.changes_retention).await;
    tasks.push(tokio::spawn(prune_changes(
        Arc::clone(store),
        config.changes_retention,
    )));
    if let Some(every) = config.backup_every {
        tasks.push(tokio::spawn(backups::schedule(
            Arc::clone(store),
            every,
            config.backup_keep,
            config.backup_dir.clone(),
        )));
    }
    Ok(tasks)
}

/// How often expired change feed entries are looked for: an entry is pruned at most
/// this long (plus one prune's time) after it expires.
const PRUNE_EVERY: Duration = Duration::from_secs(2);

/// Removes change feed entries older than `retention`, every [`PRUNE_EVERY`].
async fn prune_changes(store: Arc<dyn Store>, retention: Duration) {
    let mut ticks = tokio::time::interval(PRUNE_EVERY);
    loop {
        ticks.tick().await;
        prune_expired(&store, retention).await;
    }
}

/// Removes every change feed entry older than `retention`, a batch at a time.
async fn prune_expired(store: &Arc<dyn Store>, retention: Duration) {
    let retention = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
    loop {
        let before = unix_now().saturating_sub(retention);
        let owned = Arc::clone(store);
        // The check for expired entries is a read: off the async workers.
        let removed = match tokio::task::spawn_blocking(move || owned.prune_changes(before)).await {
            Ok(pruning) => pruning.await,
            Err(err) => Err(StoreError::Backend(format!("prune task failed: {err}"))),
        };
        match removed {
            Ok(n) if n as usize == store::PRUNE_BATCH => continue,
            Ok(_) => return,
            Err(err) => {
                tracing::warn!(error = %err, "cannot prune the change feed");
                return;
            }
        }
    }
}

/// Contacts per agent (0 for the agents of `seen` that are gone), and the sizes of the
/// data file and the write-ahead log.
fn refresh_gauges(store: &dyn Store, data_dir: &std::path::Path, seen: &mut BTreeSet<String>) {
    if let Ok(agents) = store.agents() {
        let now: BTreeSet<String> = agents.iter().map(|a| a.id.clone()).collect();
        for gone in seen.difference(&now) {
            metrics::contacts(gone, 0);
        }
        for agent in agents {
            metrics::contacts(&agent.id, agent.contact_count);
        }
        *seen = now;
    }
    let (mut database, mut log) = (0, 0);
    if let Ok(entries) = std::fs::read_dir(data_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let size = entry.metadata().map_or(0, |m| m.len());
            if name == store::DB_FILE {
                database = size;
            } else if name.starts_with("wal-") && name.ends_with(".log") {
                log += size;
            }
        }
    }
    metrics::disk(database, log);
}
