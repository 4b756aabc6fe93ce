//! Metrics: every family's name and meaning, the Prometheus recorder that keeps them, and
//! the functions the rest of the server records through. Recording goes through the
//! `metrics` facade, so the writer, the log and the HTTP layer need no handle passed in.
//!
//! Every family is registered at start, at zero, so a scraper sees all of them before
//! the first request. Families labelled by route start with one series per route
//! (status `200`, no requests yet).

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const REQUESTS: &str = "contactd_http_requests_total";
pub const REQUEST_SECONDS: &str = "contactd_http_request_duration_seconds";
pub const RATE_LIMITED: &str = "contactd_rate_limited_requests_total";
pub const WRITER_QUEUE: &str = "contactd_writer_queue_depth";
pub const WRITER_GROUP: &str = "contactd_writer_group_size";
pub const COMMIT_SECONDS: &str = "contactd_commit_duration_seconds";
pub const LOG_SYNC_SECONDS: &str = "contactd_log_sync_duration_seconds";
pub const CHECKPOINTS: &str = "contactd_checkpoints_total";
pub const CHECKPOINT_SECONDS: &str = "contactd_checkpoint_duration_seconds";
pub const MERGE_BACKLOG: &str = "contactd_index_merges_pending";
pub const CONTACTS: &str = "contactd_contacts";
pub const DATABASE_BYTES: &str = "contactd_database_bytes";
pub const LOG_BYTES: &str = "contactd_log_bytes";

/// The content type of Prometheus's text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Latency buckets, in seconds: from a cached point read to a slow import.
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Jobs per write group: one to the writer's largest group.
const GROUP_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// How often histogram samples are folded into their buckets (so that they never pile
/// up in memory when nobody scrapes), and contacts per agent and disk sizes read again.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the recorder (once per process) and registers every family at zero.
/// `routes` are the route templates that label request series. `None` when another
/// recorder was installed first (an embedding program's): then `/metrics` is empty.
pub fn install(routes: &[&'static str]) -> Option<&'static PrometheusHandle> {
    let handle = HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(WRITER_GROUP.into()), GROUP_BUCKETS)
            });
        let handle = match builder.map(PrometheusBuilder::install_recorder) {
            Ok(Ok(handle)) => handle,
            Ok(Err(err)) | Err(err) => {
                tracing::warn!(error = %err, "metrics are off: cannot install the recorder");
                return None;
            }
        };
        describe();
        Some(handle)
    });
    let handle = handle.as_ref()?;
    for route in routes {
        counter!(REQUESTS, "route" => *route, "status" => "200").increment(0);
        // Registered, no sample yet: the histogram shows with empty buckets.
        let _ = histogram!(REQUEST_SECONDS, "route" => *route);
    }
    for reason in ["key", "auth_failures"] {
        counter!(RATE_LIMITED, "reason" => reason).increment(0);
    }
    gauge!(WRITER_QUEUE).increment(0.0);
    let _ = histogram!(WRITER_GROUP);
    let _ = histogram!(COMMIT_SECONDS);
    let _ = histogram!(LOG_SYNC_SECONDS);
    counter!(CHECKPOINTS).increment(0);
    let _ = histogram!(CHECKPOINT_SECONDS);
    gauge!(MERGE_BACKLOG).increment(0.0);
    gauge!(DATABASE_BYTES).increment(0.0);
    gauge!(LOG_BYTES).increment(0.0);
    Some(handle)
}

fn describe() {
    describe_counter!(REQUESTS, "Requests answered, by route template and status.");
    describe_histogram!(
        REQUEST_SECONDS,
        Unit::Seconds,
        "Time to answer a request, by route template."
    );
    describe_counter!(RATE_LIMITED, "Requests refused with 429: over a key's budget (key) or from a client IP over its failed authentications (auth_failures).");
    describe_gauge!(WRITER_QUEUE, "Write jobs waiting for the single writer.");
    describe_histogram!(WRITER_GROUP, "Write jobs committed together in one group.");
    describe_histogram!(
        COMMIT_SECONDS,
        Unit::Seconds,
        "Time to commit a write group to the data file (without the log sync)."
    );
    describe_histogram!(
        LOG_SYNC_SECONDS,
        Unit::Seconds,
        "Time to append and sync write-ahead log records."
    );
    describe_counter!(
        CHECKPOINTS,
        "Checkpoints: durable commits of the data file after which the log restarts."
    );
    describe_histogram!(
        CHECKPOINT_SECONDS,
        Unit::Seconds,
        "Time to take a checkpoint."
    );
    describe_gauge!(MERGE_BACKLOG, "Index merges planned and not yet finished.");
    describe_gauge!(CONTACTS, "Contacts per agent, read every 5 seconds.");
    describe_gauge!(
        DATABASE_BYTES,
        Unit::Bytes,
        "Size of the data file, contactd.redb."
    );
    describe_gauge!(LOG_BYTES, Unit::Bytes, "Size of the write-ahead log files.");
}

/// Every family in Prometheus's text format (empty when metrics are off).
pub fn render() -> String {
    HANDLE
        .get()
        .and_then(Option::as_ref)
        .map(PrometheusHandle::render)
        .unwrap_or_default()
}

/// Folds recorded histogram samples into their buckets.
pub fn upkeep() {
    if let Some(Some(handle)) = HANDLE.get() {
        handle.run_upkeep();
    }
}

pub fn request(route: &'static str, status: u16, elapsed: Duration) {
    counter!(REQUESTS, "route" => route, "status" => status.to_string()).increment(1);
    histogram!(REQUEST_SECONDS, "route" => route).record(elapsed.as_secs_f64());
}

/// A request refused with 429 for `reason` (`key` or `auth_failures`).
pub fn rate_limited(reason: &'static str) {
    counter!(RATE_LIMITED, "reason" => reason).increment(1);
}

/// The writer took a group of `jobs`, leaving `queued` waiting.
pub fn write_group(jobs: usize, queued: usize) {
    histogram!(WRITER_GROUP).record(jobs as f64);
    gauge!(WRITER_QUEUE).set(queued as f64);
}

pub fn commit(elapsed: Duration) {
    histogram!(COMMIT_SECONDS).record(elapsed.as_secs_f64());
}

pub fn checkpoint(elapsed: Duration) {
    counter!(CHECKPOINTS).increment(1);
    histogram!(CHECKPOINT_SECONDS).record(elapsed.as_secs_f64());
}

pub fn log_sync(elapsed: Duration) {
    histogram!(LOG_SYNC_SECONDS).record(elapsed.as_secs_f64());
}

pub fn merges_pending(n: usize) {
    gauge!(MERGE_BACKLOG).set(n as f64);
}

pub fn contacts(agent: &str, n: u64) {
    gauge!(CONTACTS, "agent" => agent.to_owned()).set(n as f64);
}

/// The data file's and the write-ahead log's sizes.
pub fn disk(database: u64, log: u64) {
    gauge!(DATABASE_BYTES).set(database as f64);
    gauge!(LOG_BYTES).set(log as f64);
}
