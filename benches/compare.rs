//! contactd against PostgreSQL 15 and SQLite on the standard workload of DESIGN.md, in
//! one run, and one table of the results with ratios to PostgreSQL (issue 23, item 7).
//!
//! The three systems:
//!
//! - **contactd** over HTTP, exactly as `benches/load.rs` drives it: an in-process server
//!   on 127.0.0.1, each client on its own keep-alive connection, one request at a time.
//! - **PostgreSQL 15** through raw SQL (`tokio-postgres`), one connection per client
//!   over the Unix socket. The bench starts its own server: Debian's `postgresql-15`
//!   (installed with apt-get when `/usr/lib/postgresql/15/bin/initdb` is missing), a
//!   fresh `initdb` (UTF-8, C locale) in a temporary directory, `pg_ctl` on a free port
//!   with the socket in that directory, default settings plus `synchronous_commit = on`
//!   (the default, set explicitly). It is stopped and the directory removed at the end,
//!   also when the bench panics. As root, PostgreSQL runs as the `postgres` user.
//! - **SQLite** (`rusqlite`, SQLite compiled in), WAL mode, `synchronous = FULL`, one
//!   connection per client with a 60 s busy timeout, every call on tokio's blocking
//!   pool. It runs in a child process (this binary again), so that its memory neither
//!   adds to contactd's peak RSS nor hides in it.
//!
//! One `contacts` table for the two SQL systems: `agent_id`, `external_id` (the primary
//! key), `id` (bigserial; SQLite's rowid), `name`, `email`, `phone`, `stripe` and
//! `attrs` (jsonb; JSON text in SQLite), `created_at`, `updated_at`; a unique index on
//! `(agent_id, lower(email))`, and indexes on `(agent_id, id)`, `(agent_id, lower(name),
//! id)` and `(agent_id, ltv)` (an expression index on the number). Writes are `INSERT …
//! ON CONFLICT (agent_id, external_id) DO UPDATE`, one statement per request (1000 rows
//! for a batch, in key order so that concurrent batches lock rows in one order). Reads
//! fetch whole rows, the JSON columns as their text, unparsed (PostgreSQL: jsonb read
//! as it comes over the wire, no cast in the query). After the preload both run
//! `ANALYZE` (not timed).
//!
//! The phases, each system in turn (contactd, PostgreSQL, SQLite) before the next phase;
//! letters shared with `load.rs` mean the same query:
//!
//! - preload: contacts `0..N` as new contacts, 1000 per request from 4 clients;
//! - (a) 8 clients posting batches of 1000 new contacts;
//! - (b) 8 clients posting batches of 1000 changes to distinct random preloaded contacts;
//! - (c) 64 clients each upserting one new contact per request;
//! - (h) 8 clients asking for the first page sorted by name (`ORDER BY lower(name), id
//!   LIMIT 50`), run by each system right after its own (c) (PostgreSQL's after the
//!   `CHECKPOINT` that ends its (c));
//! - (d) 64 clients reading random preloaded contacts by external id;
//! - (t) 8 clients asking for `page=P&per_page=50` in creation order, P random among the
//!   preloaded contacts' pages (`ORDER BY id LIMIT 50 OFFSET 50 (P - 1)`);
//! - (u) 8 clients searching `q=ada lov&sort=name`, two word prefixes (0.4% of the
//!   contacts; the workload's names are those of `common`, so issue 23's `q=sam riv`
//!   would match nearly nothing). SQL: a B-tree range on `lower(name)` for `ada`,
//!   `LIKE '% lov%'` for the second word;
//! - (v) the same search's next pages, each client following `next_cursor` (SQL: keyset
//!   pagination on `(lower(name), id)`) and starting over after the last page; only the
//!   cursor pages are timed;
//! - (w) 8 clients filtering `filter[custom_attributes.ltv][gte]=19800&sort=name` (1% of
//!   the contacts: `ltv` is uniform below 20000).
//!
//! A phase stops issuing requests after `CONTACTD_BENCH_SECS` (default 10) or its request
//! cap and ends when the requests in flight are answered. After a write phase
//! PostgreSQL also runs `CHECKPOINT`, and its rate is given both without and with that
//! checkpoint timed into the phase (its commits only write the WAL; the checkpoint
//! writes the pages).
//!
//! At the end: peak memory (contactd: this process's peak RSS, `VmHWM`, with the HTTP
//! and PostgreSQL load generators in it, as `load.rs` reports it; PostgreSQL: the peak
//! of the summed PSS of the postmaster and its children, sampled every 200 ms while its
//! phases run, PSS so that shared buffers count once and not once per backend (the
//! summed RSS is printed beside it); SQLite: the child process's peak RSS less its RSS
//! before SQLite opened, its clients included) and bytes on disk per stored contact
//! (contactd: what its data directory takes on disk, as `du` counts it, which leaves out
//! the pages redb reserved at the end of its file and has not written; PostgreSQL:
//! `pg_total_relation_size` of the table, indexes and TOAST included, not `pg_wal`,
//! whose size is printed; SQLite: what the database file plus its WAL take on disk, the
//! WAL's share shown in brackets).
//!
//! Settings, by environment variable:
//! - `CONTACTD_BENCH_CONTACTS`: contacts preloaded (default 1000000; 1000 when the
//!   binary runs as a test, without `--bench`);
//! - `CONTACTD_BENCH_SECS`: length of each phase in seconds (default 10);
//! - `CONTACTD_BENCH_PHASES=a,b,c`: only these phases (the preload always runs);
//! - `CONTACTD_COMPARE=contactd,postgres,sqlite`: only these systems;
//! - any contactd setting as its environment variable (e.g. `CONTACTD_CACHE_MB=256`);
//! - `CONTACTD_BENCH_DIR`: where the temporary directories go (as root, the `postgres`
//!   user must be able to reach it).
//!
//! Run (1M contacts: the three preloads, then 9 phases × 3 systems of 10 s each):
//!     cargo bench --bench compare
//! A quick smoke run:
//!     CONTACTD_BENCH_CONTACTS=20000 CONTACTD_BENCH_SECS=3 cargo bench --bench compare

#[path = "common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::hint::black_box;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tempfile::TempDir;
use tokio::runtime::Runtime;

use common::{Conn, Latencies, Limit, Server, Workload, AGENT, BATCH, STREAM_CLIENT};

// ---------------------------------------------------------------------------------------
// Settings and phases

/// The systems, in the order each phase runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum System {
    Contactd,
    Postgres,
    Sqlite,
}

const SYSTEMS: [System; 3] = [System::Contactd, System::Postgres, System::Sqlite];

impl System {
    fn key(self) -> &'static str {
        match self {
            Self::Contactd => "contactd",
            Self::Postgres => "postgres",
            Self::Sqlite => "sqlite",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Self::Contactd => "contactd",
            Self::Postgres => "PostgreSQL",
            Self::Sqlite => "SQLite",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// `CONTACTD_COMPARE=contactd,postgres,sqlite`: the systems to run (default all).
fn systems_setting() -> Vec<System> {
    let Ok(list) = std::env::var("CONTACTD_COMPARE") else {
        return SYSTEMS.to_vec();
    };
    let names: Vec<String> = list
        .split(',')
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect();
    for name in &names {
        assert!(
            SYSTEMS.iter().any(|s| s.key() == name),
            "CONTACTD_COMPARE: unknown system {name:?} (known: contactd, postgres, sqlite)"
        );
    }
    SYSTEMS
        .into_iter()
        .filter(|s| names.iter().any(|name| name == s.key()))
        .collect()
}

/// Contacts to preload: `CONTACTD_BENCH_CONTACTS`, default 1,000,000 (1000 as a test).
fn contacts_setting() -> u64 {
    let contacts = match std::env::var("CONTACTD_BENCH_CONTACTS") {
        Ok(text) => text.trim().parse().unwrap_or_else(|_| {
            panic!("CONTACTD_BENCH_CONTACTS must be a whole number, got {text:?}")
        }),
        Err(_) if common::is_bench_run() => 1_000_000,
        Err(_) => 1_000,
    };
    contacts.max(1)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    NewBatches,
    UpdateBatches,
    SingleUpserts,
    /// First page sorted by name.
    ByName,
    Reads,
    /// `page=P&per_page=50` in creation order, P random.
    Pages,
    /// The two-term search, first page.
    Search,
    /// The two-term search's cursor pages.
    SearchNext,
    /// The 1% filter sorted by name.
    Filter,
}

impl Kind {
    fn contacts_per_request(self) -> u64 {
        match self {
            Self::NewBatches | Self::UpdateBatches => BATCH as u64,
            _ => 1,
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Self::NewBatches | Self::UpdateBatches => "contacts/s",
            _ => "req/s",
        }
    }

    fn writes(self) -> bool {
        matches!(
            self,
            Self::NewBatches | Self::UpdateBatches | Self::SingleUpserts
        )
    }
}

struct Phase {
    letter: &'static str,
    /// The row label of the table (markdown).
    label: &'static str,
    kind: Kind,
    clients: usize,
    /// A safety bound; normally the duration ends the phase first.
    max_requests: u64,
}

const PHASES: [Phase; 9] = [
    Phase {
        letter: "a",
        label: "(a) batches of 1000 new contacts, 8 clients",
        kind: Kind::NewBatches,
        clients: 8,
        max_requests: 1_000,
    },
    Phase {
        letter: "b",
        label: "(b) batches of 1000 updates, 8 clients",
        kind: Kind::UpdateBatches,
        clients: 8,
        max_requests: 1_000,
    },
    Phase {
        letter: "c",
        label: "(c) one upsert per request, 64 clients",
        kind: Kind::SingleUpserts,
        clients: 64,
        max_requests: 200_000,
    },
    Phase {
        letter: "h",
        label: "(h) first page `sort=name` right after (c), 8 clients",
        kind: Kind::ByName,
        clients: 8,
        max_requests: 2_000_000,
    },
    Phase {
        letter: "d",
        label: "(d) get by external id, 64 clients",
        kind: Kind::Reads,
        clients: 64,
        max_requests: 2_000_000,
    },
    Phase {
        letter: "t",
        label: "(t) `page=P&per_page=50`, random P, 8 clients",
        kind: Kind::Pages,
        clients: 8,
        max_requests: 2_000_000,
    },
    Phase {
        letter: "u",
        label: "(u) `q=ada lov&sort=name` (two-term prefix), 8 clients",
        kind: Kind::Search,
        clients: 8,
        max_requests: 2_000_000,
    },
    Phase {
        letter: "v",
        label: "(v) its cursor pages, 8 clients",
        kind: Kind::SearchNext,
        clients: 8,
        max_requests: 2_000_000,
    },
    Phase {
        letter: "w",
        label: "(w) `filter[custom_attributes.ltv][gte]=19800&sort=name` (1%), 8 clients",
        kind: Kind::Filter,
        clients: 8,
        max_requests: 2_000_000,
    },
];

/// Phases a system runs back to back before the next system takes its turn: (h) measures
/// the first page right after each system's own writes.
const STEPS: [&[&str]; 8] = [
    &["a"],
    &["b"],
    &["c", "h"],
    &["d"],
    &["t"],
    &["u"],
    &["v"],
    &["w"],
];

/// Contacts per list page.
const PER_PAGE: u64 = 50;
/// Clients of the preload, as `common::preload_http` uses.
const PRELOAD_CLIENTS: u64 = common::PRELOAD_STREAMS;

// The list queries over HTTP.
const BY_NAME_QUERY: &str = "per_page=50&sort=name";
const SEARCH_QUERY: &str = "per_page=50&q=ada%20lov&sort=name";
const FILTER_QUERY: &str = "per_page=50&filter%5Bcustom_attributes.ltv%5D%5Bgte%5D=19800&sort=name";
// The same search in SQL: names from "ada" up to (not including) "adb", with a word
// starting "lov".
const SEARCH_FROM: &str = "ada";
const SEARCH_BELOW: &str = "adb";
const SEARCH_LIKE: &str = "% lov%";

// ---------------------------------------------------------------------------------------
// What a phase measured

/// What the clients of one system saw in one phase (or the preload).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Outcome {
    ok: u64,
    per_request: u64,
    errors: u64,
    first_error: Option<String>,
    secs: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    /// PostgreSQL: how long the `CHECKPOINT` after the phase took.
    checkpoint_secs: Option<f64>,
    /// Why the phase measured nothing (a search with one page has no cursor pages).
    skipped: Option<String>,
}

impl Outcome {
    fn rate(&self) -> f64 {
        (self.ok * self.per_request) as f64 / self.secs.max(1e-9)
    }

    fn rate_with_checkpoint(&self) -> Option<f64> {
        self.checkpoint_secs
            .map(|c| (self.ok * self.per_request) as f64 / (self.secs + c).max(1e-9))
    }
}

/// Memory and disk of one system at the end.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Size {
    stored: u64,
    disk_bytes: u64,
    /// Of `disk_bytes`, a write-ahead log (SQLite's WAL file), shown apart.
    log_bytes: Option<u64>,
    memory_bytes: Option<u64>,
    /// How the figures were taken, for the log.
    detail: String,
}

impl Size {
    fn bytes_per_contact(&self) -> f64 {
        self.disk_bytes as f64 / self.stored.max(1) as f64
    }
}

#[derive(Default)]
struct Tally {
    latencies: Latencies,
    errors: u64,
    first_error: Option<String>,
    skipped: Option<String>,
}

impl Tally {
    fn merge(&mut self, other: Self) {
        self.latencies.merge(other.latencies);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        if self.skipped.is_none() {
            self.skipped = other.skipped;
        }
    }

    fn failed(&mut self, failure: Failed) {
        self.errors += 1;
        self.first_error.get_or_insert(failure.message);
    }
}

// ---------------------------------------------------------------------------------------
// Clients: one request at a time, whichever the system

/// A contact as the SQL systems store it.
struct Row {
    external_id: String,
    name: String,
    email: String,
    phone: String,
    stripe: Value,
    attrs: Value,
}

/// Workload contacts as rows, in key order (so concurrent batches lock rows in one
/// order, as an application would write them to avoid deadlocks).
fn rows_of(contacts: Vec<Value>) -> Vec<Row> {
    let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
    let mut rows: Vec<Row> = contacts
        .into_iter()
        .map(|mut contact| Row {
            external_id: text(&contact["external_id"]),
            name: text(&contact["name"]),
            email: text(&contact["email"]),
            phone: text(&contact["phonenumber"]),
            stripe: contact["stripe_accounts"].take(),
            attrs: contact["custom_attributes"].take(),
        })
        .collect();
    rows.sort_unstable_by(|a, b| a.external_id.cmp(&b.external_id));
    rows
}

/// A contact as a SQL read returns it.
#[derive(Debug)]
#[allow(dead_code)] // read to be kept, never looked at
struct StoredContact {
    id: i64,
    external_id: String,
    name: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    stripe: String,
    attrs: String,
    created_at: i64,
    updated_at: i64,
}

/// Where the next page of the search starts.
enum Cursor {
    Http(String),
    /// `(lower(name), id)` of the last row of the page.
    Key(String, i64),
}

/// One request, its body made before the clock starts.
enum Request {
    Post(Bytes),
    Rows(Vec<Row>),
    Get(String),
    Page(u64),
    ByName,
    Search(Option<Cursor>),
    Filter,
}

/// A failed request; `broken` when the client cannot go on.
struct Failed {
    message: String,
    broken: bool,
}

impl Failed {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            broken: false,
        }
    }

    fn broken(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            broken: true,
        }
    }
}

impl From<common::Failure> for Failed {
    fn from(failure: common::Failure) -> Self {
        let broken = matches!(failure, common::Failure::Transport(_));
        Self {
            message: failure.to_string(),
            broken,
        }
    }
}

impl From<tokio_postgres::Error> for Failed {
    fn from(err: tokio_postgres::Error) -> Self {
        let message = match err.as_db_error() {
            Some(db) => format!("{err}: {}", db.message()),
            None => err.to_string(),
        };
        Self {
            message,
            broken: err.is_closed(),
        }
    }
}

impl From<rusqlite::Error> for Failed {
    fn from(err: rusqlite::Error) -> Self {
        Self::new(err.to_string())
    }
}

enum Client {
    Http(Conn),
    Postgres(Box<PgClient>),
    /// Taken out while a call runs on the blocking pool.
    Sqlite(Option<SqliteClient>),
}

impl Client {
    /// The request that writes these contacts.
    fn write(&self, contacts: Vec<Value>) -> Request {
        match self {
            Self::Http(_) => Request::Post(common::batch_body(contacts)),
            Self::Postgres(_) | Self::Sqlite(_) => Request::Rows(rows_of(contacts)),
        }
    }

    /// Sends one request; for the search, returns where its next page starts.
    async fn execute(&mut self, request: Request) -> Result<Option<Cursor>, Failed> {
        match self {
            Self::Http(conn) => http_execute(conn, request).await,
            Self::Postgres(client) => client.execute(request).await,
            Self::Sqlite(slot) => {
                let mut client = slot
                    .take()
                    .ok_or_else(|| Failed::broken("the SQLite connection was lost"))?;
                let (client, result) = tokio::task::spawn_blocking(move || {
                    let result = client.execute(request);
                    (client, result)
                })
                .await
                .map_err(|err| Failed::broken(format!("a SQLite call panicked: {err}")))?;
                *slot = Some(client);
                result
            }
        }
    }
}

async fn http_execute(conn: &mut Conn, request: Request) -> Result<Option<Cursor>, Failed> {
    match request {
        Request::Post(body) => conn.upsert(body).await?,
        Request::Rows(_) => return Err(Failed::broken("rows are for the SQL systems")),
        Request::Get(id) => conn.get(&id).await?,
        Request::Page(page) => conn.list(&format!("page={page}&per_page=50")).await?,
        Request::ByName => conn.list(BY_NAME_QUERY).await?,
        Request::Filter => conn.list(FILTER_QUERY).await?,
        Request::Search(cursor) => {
            let query = match cursor {
                Some(Cursor::Http(c)) => format!("{SEARCH_QUERY}&cursor={c}"),
                Some(Cursor::Key(..)) => return Err(Failed::broken("not an HTTP cursor")),
                None => SEARCH_QUERY.to_owned(),
            };
            return Ok(conn.list_next(&query).await?.map(Cursor::Http));
        }
    }
    Ok(None)
}

/// One client: a request at a time until the limit.
async fn run_client(
    mut client: Client,
    kind: Kind,
    workload: Arc<Workload>,
    mut rng: StdRng,
    limit: Limit,
) -> Tally {
    let mut tally = Tally::default();
    let mut cursor: Option<Cursor> = None;
    let pages = workload.preloaded().div_ceil(PER_PAGE).max(1);
    while limit.another() {
        if kind == Kind::SearchNext && cursor.is_none() {
            // The first page, not timed: it gives the cursor of the second.
            match client.execute(Request::Search(None)).await {
                Ok(Some(next)) => cursor = Some(next),
                Ok(None) => {
                    tally.skipped = Some("the search has one page only".to_owned());
                    break;
                }
                Err(failure) => {
                    let broken = failure.broken;
                    tally.failed(failure);
                    if broken {
                        break;
                    }
                    continue;
                }
            }
        }
        let request = match kind {
            Kind::NewBatches => client.write(workload.new_contacts(BATCH)),
            Kind::UpdateBatches => client.write(workload.updates(&mut rng, BATCH)),
            Kind::SingleUpserts => client.write(workload.new_contacts(1)),
            Kind::ByName => Request::ByName,
            Kind::Reads => Request::Get(workload.random_existing_id(&mut rng)),
            Kind::Pages => Request::Page(rng.random_range(1..=pages)),
            Kind::Search => Request::Search(None),
            Kind::SearchNext => Request::Search(cursor.take()),
            Kind::Filter => Request::Filter,
        };
        let sent = Instant::now();
        match client.execute(request).await {
            Ok(next) => {
                tally.latencies.record(sent.elapsed());
                if kind == Kind::SearchNext {
                    cursor = next;
                }
            }
            Err(failure) => {
                let broken = failure.broken;
                tally.failed(failure);
                if broken {
                    // This connection is done; the other clients carry on.
                    break;
                }
            }
        }
    }
    tally
}

/// Runs phase `number` with these clients (connected before the clock starts).
async fn run_clients(
    clients: Vec<Client>,
    number: usize,
    workload: &Arc<Workload>,
    duration: Duration,
) -> Outcome {
    let phase = &PHASES[number];
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(index, client)| {
            let limit = Limit {
                issued: Arc::clone(&issued),
                max_requests: phase.max_requests,
                deadline,
            };
            let rng = common::rng_for(&[STREAM_CLIENT, 200 + number as u64, index as u64]);
            tokio::spawn(run_client(
                client,
                phase.kind,
                Arc::clone(workload),
                rng,
                limit,
            ))
        })
        .collect();
    let mut tally = Tally::default();
    for task in tasks {
        match task.await {
            Ok(client_tally) => tally.merge(client_tally),
            Err(err) => tally.failed(Failed::new(format!("a client task failed: {err}"))),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let ok = tally.latencies.len() as u64;
    let quantile = |latencies: &mut Latencies, q: f64| {
        Some(latencies.quantile_ms(q)).filter(|ms| ms.is_finite())
    };
    Outcome {
        ok,
        per_request: phase.kind.contacts_per_request(),
        errors: tally.errors,
        p50_ms: quantile(&mut tally.latencies, 0.50),
        p99_ms: quantile(&mut tally.latencies, 0.99),
        first_error: tally.first_error,
        secs,
        checkpoint_secs: None,
        skipped: tally.skipped,
    }
}

/// Writes contacts `0..workload.preloaded()` in 1000-contact batches, one client per
/// stream, as `common::preload_http` does over HTTP.
async fn preload_clients(
    clients: Vec<Client>,
    workload: &Arc<Workload>,
) -> Result<Outcome, String> {
    let started = Instant::now();
    let streams = clients.len() as u64;
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(stream, mut client)| {
            let workload = Arc::clone(workload);
            tokio::spawn(async move {
                for range in preload_ranges(workload.preloaded(), stream as u64, streams) {
                    let contacts = range.map(|i| workload.contact(i, 0)).collect();
                    let request = client.write(contacts);
                    client.execute(request).await.map_err(|f| f.message)?;
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    for task in tasks {
        task.await
            .map_err(|err| format!("a preload task failed: {err}"))??;
    }
    Ok(Outcome {
        ok: workload.preloaded(),
        per_request: 1,
        secs: started.elapsed().as_secs_f64(),
        ..Outcome::default()
    })
}

/// The batches of `0..total` that preload stream `stream` of `streams` writes.
fn preload_ranges(
    total: u64,
    stream: u64,
    streams: u64,
) -> impl Iterator<Item = std::ops::Range<u64>> {
    let batch = BATCH as u64;
    (0..total.div_ceil(batch))
        .filter(move |chunk| chunk % streams == stream)
        .map(move |chunk| chunk * batch..((chunk + 1) * batch).min(total))
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

/// The total size of the regular files under `dir`.
/// What a file takes on disk (`du`): redb reserves pages at the end of its file
/// before it writes them, and those are not on the disk.
fn allocated(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.blocks() * 512
}

/// What the files under `dir` take on disk.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&entry.path()),
            Ok(t) if t.is_file() => entry.metadata().map_or(0, |m| allocated(&m)),
            _ => 0,
        })
        .sum()
}

// ---------------------------------------------------------------------------------------
// PostgreSQL

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

const PG_SCHEMA: &str = "
CREATE TABLE contacts (
    agent_id text NOT NULL,
    external_id text NOT NULL,
    id bigserial NOT NULL,
    name text,
    email text,
    phone text,
    stripe jsonb NOT NULL,
    attrs jsonb NOT NULL,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    PRIMARY KEY (agent_id, external_id)
);
CREATE UNIQUE INDEX contacts_email ON contacts (agent_id, lower(email));
CREATE INDEX contacts_id ON contacts (agent_id, id);
CREATE INDEX contacts_name ON contacts (agent_id, lower(name), id);
CREATE INDEX contacts_ltv ON contacts (agent_id, ((attrs->>'ltv')::numeric));
";

const PG_COLUMNS: &str =
    "id, external_id, name, email, phone, stripe, attrs, created_at, updated_at";

/// A jsonb (or json) column read as its JSON text, as it comes over the wire: the server
/// does no cast (which it would also do for every row an `OFFSET` skips), the client no
/// parsing.
struct JsonText(String);

impl<'a> tokio_postgres::types::FromSql<'a> for JsonText {
    fn from_sql(
        ty: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        // jsonb's binary form is a version byte (1) and the text.
        let text = if *ty == tokio_postgres::types::Type::JSONB {
            raw.strip_prefix(&[1])
                .ok_or("an unknown jsonb format version")?
        } else {
            raw
        };
        Ok(Self(std::str::from_utf8(text)?.to_owned()))
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        matches!(
            *ty,
            tokio_postgres::types::Type::JSON | tokio_postgres::types::Type::JSONB
        )
    }
}

/// `INSERT … ON CONFLICT DO UPDATE` of `rows` contacts: `$1` the agent, `$2` the time,
/// six parameters a row from `$3` (`?` and SQLite's numbered `?N` are the same).
fn upsert_sql(rows: usize, mark: char) -> String {
    let mut sql = String::with_capacity(60 * rows + 400);
    sql.push_str(
        "INSERT INTO contacts (agent_id, external_id, name, email, phone, stripe, attrs, \
         created_at, updated_at) VALUES ",
    );
    for row in 0..rows {
        let k = 3 + 6 * row;
        if row > 0 {
            sql.push(',');
        }
        sql.push_str(&format!(
            "({mark}1,{mark}{},{mark}{},{mark}{},{mark}{},{mark}{},{mark}{},{mark}2,{mark}2)",
            k,
            k + 1,
            k + 2,
            k + 3,
            k + 4,
            k + 5
        ));
    }
    sql.push_str(
        " ON CONFLICT (agent_id, external_id) DO UPDATE SET name = excluded.name, \
         email = excluded.email, phone = excluded.phone, stripe = excluded.stripe, \
         attrs = excluded.attrs, updated_at = excluded.updated_at",
    );
    sql
}

/// Whether this process runs as root (`/proc/self` belongs to the effective user).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Installs Debian's `postgresql-15` with apt-get (through sudo unless root).
fn install_postgres() -> Result<(), String> {
    println!("compare: {PG_BIN}/initdb is missing; installing Debian's postgresql-15");
    let apt = |args: &[&str]| -> Result<(), String> {
        let mut command = if is_root() {
            Command::new("apt-get")
        } else {
            let mut sudo = Command::new("sudo");
            sudo.args(["env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]);
            sudo
        };
        let status = command
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(|err| format!("cannot run apt-get: {err}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("apt-get {} failed: {status}", args.join(" ")))
        }
    };
    apt(&["update", "-qq"])?;
    apt(&[
        "install",
        "-y",
        "-qq",
        "--no-install-recommends",
        "postgresql-15",
    ])?;
    if Path::new(PG_BIN).join("initdb").exists() {
        Ok(())
    } else {
        Err(format!(
            "installed postgresql-15, but {PG_BIN}/initdb is still missing"
        ))
    }
}

/// The peak memory of a process tree, sampled on a thread while `active`.
struct MemorySampler {
    root: u32,
    active: AtomicBool,
    stop: AtomicBool,
    peak_pss: AtomicU64,
    peak_rss: AtomicU64,
}

impl MemorySampler {
    const INTERVAL: Duration = Duration::from_millis(200);

    fn spawn(root: u32) -> (Arc<Self>, std::thread::JoinHandle<()>) {
        let sampler = Arc::new(Self {
            root,
            active: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            peak_pss: AtomicU64::new(0),
            peak_rss: AtomicU64::new(0),
        });
        let worker = Arc::clone(&sampler);
        let thread = std::thread::Builder::new()
            .name("pg-memory".to_owned())
            .spawn(move || {
                while !worker.stop.load(Ordering::Relaxed) {
                    if worker.active.load(Ordering::Relaxed) {
                        worker.sample();
                    }
                    std::thread::sleep(Self::INTERVAL);
                }
            })
            .expect("cannot start the memory sampler");
        (sampler, thread)
    }

    /// Sums RSS and PSS over the root process and its children.
    fn sample(&self) {
        let mut pids = vec![self.root];
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.filter_map(Result::ok) {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<u32>().ok())
                else {
                    continue;
                };
                let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                    continue;
                };
                // "pid (comm) state ppid …": the fields after the last ')'.
                let parent = stat
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                    .and_then(|ppid| ppid.parse::<u32>().ok());
                if parent == Some(self.root) {
                    pids.push(pid);
                }
            }
        }
        let (mut rss, mut pss) = (0, 0);
        for pid in pids {
            if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
                rss += common::proc_kib(&text, "Rss:").unwrap_or(0);
                pss += common::proc_kib(&text, "Pss:").unwrap_or(0);
            }
        }
        self.peak_rss.fetch_max(rss, Ordering::Relaxed);
        self.peak_pss.fetch_max(pss, Ordering::Relaxed);
    }
}

/// A PostgreSQL server of our own in a temporary directory; stopped and removed on drop.
struct PgCluster {
    data: PathBuf,
    socket_dir: PathBuf,
    port: u16,
    user: String,
    /// Commands run as the `postgres` user (we are root).
    as_postgres: bool,
    running: bool,
    sampler: Option<(Arc<MemorySampler>, std::thread::JoinHandle<()>)>,
    // Last: removed after the server stopped.
    dir: TempDir,
}

impl PgCluster {
    fn start() -> Result<Self, String> {
        if !Path::new(PG_BIN).join("initdb").exists() {
            install_postgres()?;
        }
        let as_postgres = is_root();
        let dir = common::data_dir();
        let user = if as_postgres {
            let status = Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir.path())
                .status()
                .map_err(|err| format!("cannot run chown: {err}"))?;
            if !status.success() {
                return Err(format!("chown postgres {} failed", dir.path().display()));
            }
            "postgres".to_owned()
        } else {
            let out = Command::new("id")
                .arg("-un")
                .output()
                .map_err(|err| format!("cannot run id: {err}"))?;
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|err| format!("cannot find a free port: {err}"))?
            .port();
        let mut cluster = Self {
            data: dir.path().join("data"),
            socket_dir: dir.path().to_owned(),
            port,
            user,
            as_postgres,
            running: false,
            sampler: None,
            dir,
        };
        let data = cluster.data.display().to_string();
        cluster.run(
            "initdb",
            &[
                "-D",
                &data,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )?;
        let settings = format!(
            "\n# benches/compare.rs\nport = {port}\nlisten_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\nsynchronous_commit = on\n",
            cluster.socket_dir.display()
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(cluster.data.join("postgresql.conf"))
            .and_then(|mut conf| conf.write_all(settings.as_bytes()))
            .map_err(|err| format!("cannot write postgresql.conf: {err}"))?;
        let log = cluster
            .dir
            .path()
            .join("postgres.log")
            .display()
            .to_string();
        if let Err(err) = cluster.run(
            "pg_ctl",
            &["-D", &data, "-l", &log, "-w", "-t", "60", "start"],
        ) {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(format!("{err}\n{tail}"));
        }
        cluster.running = true;
        let pid_file = std::fs::read_to_string(cluster.data.join("postmaster.pid"))
            .map_err(|err| format!("cannot read postmaster.pid: {err}"))?;
        let postmaster: u32 = pid_file
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or("postmaster.pid has no pid")?;
        cluster.sampler = Some(MemorySampler::spawn(postmaster));
        Ok(cluster)
    }

    /// Runs a PostgreSQL program (as `postgres` when we are root).
    fn run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let path = Path::new(PG_BIN).join(program);
        let mut command = if self.as_postgres {
            let mut runuser = Command::new("runuser");
            runuser.args(["-u", "postgres", "--"]).arg(&path);
            runuser
        } else {
            Command::new(&path)
        };
        // pg_ctl's server keeps no pipe of ours open: output goes to a file.
        let out = command
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|err| format!("cannot run {}: {err}", path.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{program} {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    async fn connect(&self) -> Result<tokio_postgres::Client, String> {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(&self.socket_dir)
            .port(self.port)
            .user(&self.user)
            .dbname("postgres");
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|err| format!("cannot connect to PostgreSQL: {err}"))?;
        tokio::spawn(async move {
            // Ends when the client is dropped.
            let _ = connection.await;
        });
        Ok(client)
    }

    fn sampling(&self, on: bool) {
        if let Some((sampler, _)) = &self.sampler {
            if !on {
                sampler.sample();
            }
            sampler.active.store(on, Ordering::Relaxed);
        }
    }

    /// Peak summed (PSS, RSS) of the server's processes while sampling.
    fn peak_memory(&self) -> Option<(u64, u64)> {
        let (sampler, _) = self.sampler.as_ref()?;
        Some((
            sampler.peak_pss.load(Ordering::Relaxed),
            sampler.peak_rss.load(Ordering::Relaxed),
        ))
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Some((sampler, thread)) = self.sampler.take() {
            sampler.stop.store(true, Ordering::Relaxed);
            let _ = thread.join();
        }
        if self.running {
            let data = self.data.display().to_string();
            if let Err(err) = self.run("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"]) {
                eprintln!("compare: stopping PostgreSQL: {err}; trying -m immediate");
                if let Err(err) =
                    self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"])
                {
                    eprintln!("compare: PostgreSQL may still run in {data}: {err}");
                }
            }
        }
        // `dir` is removed when its field drops.
    }
}

/// The PostgreSQL side of the bench: the server and its admin connection.
struct Postgres {
    cluster: PgCluster,
    admin: tokio_postgres::Client,
    workload: Arc<Workload>,
}

impl Postgres {
    fn start(rt: &Runtime, contacts: u64) -> Result<Self, String> {
        let started = Instant::now();
        let cluster = PgCluster::start()?;
        let admin = rt.block_on(async {
            let admin = cluster.connect().await?;
            admin.batch_execute(PG_SCHEMA).await.map_err(|err| {
                format!("cannot create the schema: {}", Failed::from(err).message)
            })?;
            let version = admin
                .query_one("SHOW server_version", &[])
                .await
                .map_err(|err| err.to_string())?;
            let synchronous = admin
                .query_one("SHOW synchronous_commit", &[])
                .await
                .map_err(|err| err.to_string())?;
            println!(
                "compare: PostgreSQL {} started in {:.1} s in {} (port {}, synchronous_commit={})",
                version.get::<_, String>(0),
                started.elapsed().as_secs_f64(),
                cluster.socket_dir.display(),
                cluster.port,
                synchronous.get::<_, String>(0),
            );
            Ok::<_, String>(admin)
        })?;
        Ok(Self {
            cluster,
            admin,
            workload: Arc::new(Workload::new(contacts)),
        })
    }

    async fn clients(&self, n: usize, kind: Option<Kind>) -> Result<Vec<Client>, String> {
        let mut clients = Vec::with_capacity(n);
        for _ in 0..n {
            let client = self.cluster.connect().await?;
            let client = PgClient::new(client, kind).await.map_err(|f| f.message)?;
            clients.push(Client::Postgres(Box::new(client)));
        }
        Ok(clients)
    }

    fn preload(&self, rt: &Runtime) -> Result<Outcome, String> {
        self.cluster.sampling(true);
        let result = rt.block_on(async {
            let clients = self.clients(PRELOAD_CLIENTS as usize, None).await?;
            let mut outcome = preload_clients(clients, &self.workload).await?;
            outcome.checkpoint_secs = Some(self.checkpoint().await?);
            self.admin
                .batch_execute("ANALYZE contacts")
                .await
                .map_err(|err| err.to_string())?;
            Ok(outcome)
        });
        self.cluster.sampling(false);
        result
    }

    fn phase(&self, rt: &Runtime, number: usize, duration: Duration) -> Result<Outcome, String> {
        let phase = &PHASES[number];
        self.cluster.sampling(true);
        let result = rt.block_on(async {
            let clients = self.clients(phase.clients, Some(phase.kind)).await?;
            let mut outcome = run_clients(clients, number, &self.workload, duration).await;
            if phase.kind.writes() {
                outcome.checkpoint_secs = Some(self.checkpoint().await?);
            }
            Ok(outcome)
        });
        self.cluster.sampling(false);
        result
    }

    /// Runs `CHECKPOINT`; returns how long it took in seconds.
    async fn checkpoint(&self) -> Result<f64, String> {
        let started = Instant::now();
        self.admin
            .batch_execute("CHECKPOINT")
            .await
            .map_err(|err| format!("CHECKPOINT failed: {err}"))?;
        Ok(started.elapsed().as_secs_f64())
    }

    fn size(&self, rt: &Runtime) -> Result<Size, String> {
        let row = rt
            .block_on(self.admin.query_one(
                "SELECT pg_total_relation_size('contacts'), \
                 (SELECT count(*) FROM contacts WHERE agent_id = $1)",
                &[&AGENT],
            ))
            .map_err(|err| err.to_string())?;
        let disk: i64 = row.get(0);
        let stored: i64 = row.get(1);
        let (pss, rss) = self.cluster.peak_memory().unwrap_or((0, 0));
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let wal = dir_bytes(&self.cluster.data.join("pg_wal"));
        Ok(Size {
            stored: u64::try_from(stored).unwrap_or(0),
            disk_bytes: u64::try_from(disk).unwrap_or(0),
            log_bytes: None,
            memory_bytes: Some(pss).filter(|&b| b > 0),
            detail: format!(
                "peak summed PSS {:.1} MiB (summed RSS {:.1} MiB) of the postmaster and its \
                 children; table with indexes (pg_total_relation_size; pg_wal, not counted, \
                 holds {:.1} MiB)",
                mib(pss),
                mib(rss),
                mib(wal)
            ),
        })
    }
}

/// One PostgreSQL connection with its prepared statements.
struct PgClient {
    client: tokio_postgres::Client,
    upserts: HashMap<usize, tokio_postgres::Statement>,
    get: tokio_postgres::Statement,
    page: tokio_postgres::Statement,
    by_name: tokio_postgres::Statement,
    search: tokio_postgres::Statement,
    search_next: tokio_postgres::Statement,
    filter: tokio_postgres::Statement,
}

impl PgClient {
    /// Prepares the statements (for `kind`'s writes too) before the clock starts.
    async fn new(client: tokio_postgres::Client, kind: Option<Kind>) -> Result<Self, Failed> {
        let search_where = "agent_id = $1 AND lower(name) >= $2 AND lower(name) < $3 \
                            AND ' ' || lower(name) LIKE $4";
        let get = client
            .prepare(&format!(
                "SELECT {PG_COLUMNS} FROM contacts WHERE agent_id = $1 AND external_id = $2"
            ))
            .await?;
        let page = client
            .prepare(&format!(
                "SELECT {PG_COLUMNS} FROM contacts WHERE agent_id = $1 \
                 ORDER BY id LIMIT 50 OFFSET $2"
            ))
            .await?;
        let by_name = client
            .prepare(&format!(
                "SELECT {PG_COLUMNS} FROM contacts WHERE agent_id = $1 \
                 ORDER BY lower(name), id LIMIT 50"
            ))
            .await?;
        let search = client
            .prepare(&format!(
                "SELECT {PG_COLUMNS}, lower(name) FROM contacts WHERE {search_where} \
                 ORDER BY lower(name), id LIMIT 50"
            ))
            .await?;
        let search_next = client
            .prepare(&format!(
                "SELECT {PG_COLUMNS}, lower(name) FROM contacts WHERE {search_where} \
                 AND (lower(name), id) > ($5, $6) ORDER BY lower(name), id LIMIT 50"
            ))
            .await?;
        let filter = client
            .prepare(&format!(
                "SELECT {PG_COLUMNS} FROM contacts WHERE agent_id = $1 \
                 AND (attrs->>'ltv')::numeric >= 19800 ORDER BY lower(name), id LIMIT 50"
            ))
            .await?;
        let mut this = Self {
            client,
            upserts: HashMap::new(),
            get,
            page,
            by_name,
            search,
            search_next,
            filter,
        };
        match kind {
            None | Some(Kind::NewBatches | Kind::UpdateBatches) => {
                this.upsert(BATCH).await?;
            }
            Some(Kind::SingleUpserts) => {
                this.upsert(1).await?;
            }
            Some(_) => {}
        }
        Ok(this)
    }

    async fn upsert(&mut self, rows: usize) -> Result<tokio_postgres::Statement, Failed> {
        if let Some(statement) = self.upserts.get(&rows) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(&upsert_sql(rows, '$')).await?;
        self.upserts.insert(rows, statement.clone());
        Ok(statement)
    }

    async fn execute(&mut self, request: Request) -> Result<Option<Cursor>, Failed> {
        use tokio_postgres::types::ToSql;
        let rows = match request {
            Request::Rows(rows) => {
                let statement = self.upsert(rows.len()).await?;
                let now = now_secs();
                let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(2 + 6 * rows.len());
                params.push(&AGENT);
                params.push(&now);
                for row in &rows {
                    params.push(&row.external_id);
                    params.push(&row.name);
                    params.push(&row.email);
                    params.push(&row.phone);
                    params.push(&row.stripe);
                    params.push(&row.attrs);
                }
                self.client.execute(&statement, &params).await?;
                return Ok(None);
            }
            Request::Get(id) => {
                let rows = self.client.query(&self.get, &[&AGENT, &id]).await?;
                if rows.is_empty() {
                    return Err(Failed::new(format!("contact {id} not found")));
                }
                rows
            }
            Request::Page(page) => {
                let offset = i64::try_from((page - 1) * PER_PAGE).unwrap_or(i64::MAX);
                self.client.query(&self.page, &[&AGENT, &offset]).await?
            }
            Request::ByName => self.client.query(&self.by_name, &[&AGENT]).await?,
            Request::Filter => self.client.query(&self.filter, &[&AGENT]).await?,
            Request::Search(cursor) => {
                let rows = match cursor {
                    None => {
                        self.client
                            .query(
                                &self.search,
                                &[&AGENT, &SEARCH_FROM, &SEARCH_BELOW, &SEARCH_LIKE],
                            )
                            .await?
                    }
                    Some(Cursor::Key(name, id)) => {
                        self.client
                            .query(
                                &self.search_next,
                                &[
                                    &AGENT,
                                    &SEARCH_FROM,
                                    &SEARCH_BELOW,
                                    &SEARCH_LIKE,
                                    &name,
                                    &id,
                                ],
                            )
                            .await?
                    }
                    Some(Cursor::Http(_)) => return Err(Failed::broken("not a SQL cursor")),
                };
                let contacts = pg_contacts(&rows)?;
                let next = match (rows.last(), contacts.last()) {
                    (Some(row), Some(last)) if rows.len() as u64 == PER_PAGE => {
                        Some(Cursor::Key(row.try_get::<_, String>(9)?, last.id))
                    }
                    _ => None,
                };
                black_box(contacts);
                return Ok(next);
            }
            Request::Post(_) => return Err(Failed::broken("a body is for HTTP")),
        };
        black_box(pg_contacts(&rows)?);
        Ok(None)
    }
}

fn pg_contacts(rows: &[tokio_postgres::Row]) -> Result<Vec<StoredContact>, Failed> {
    rows.iter()
        .map(|row| {
            Ok(StoredContact {
                id: row.try_get(0)?,
                external_id: row.try_get(1)?,
                name: row.try_get(2)?,
                email: row.try_get(3)?,
                phone: row.try_get(4)?,
                stripe: row.try_get::<_, JsonText>(5)?.0,
                attrs: row.try_get::<_, JsonText>(6)?.0,
                created_at: row.try_get(7)?,
                updated_at: row.try_get(8)?,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// SQLite (in a child process: this binary with CHILD_ENV set)

const CHILD_ENV: &str = "CONTACTD_COMPARE_SQLITE_CHILD";

const SQLITE_SCHEMA: &str = "
CREATE TABLE contacts (
    id INTEGER PRIMARY KEY,
    agent_id TEXT NOT NULL,
    external_id TEXT NOT NULL,
    name TEXT,
    email TEXT,
    phone TEXT,
    stripe TEXT NOT NULL,
    attrs TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (agent_id, external_id)
);
CREATE UNIQUE INDEX contacts_email ON contacts (agent_id, lower(email));
CREATE INDEX contacts_id ON contacts (agent_id, id);
CREATE INDEX contacts_name ON contacts (agent_id, lower(name), id);
CREATE INDEX contacts_ltv ON contacts (agent_id, json_extract(attrs, '$.ltv'));
";

const SQLITE_COLUMNS: &str =
    "id, external_id, name, email, phone, stripe, attrs, created_at, updated_at";
const SQLITE_SEARCH_WHERE: &str = "agent_id = ?1 AND lower(name) >= ?2 AND lower(name) < ?3 \
                                   AND ' ' || lower(name) LIKE ?4";

/// One SQLite connection.
struct SqliteClient {
    conn: rusqlite::Connection,
    upserts: HashMap<usize, String>,
}

impl SqliteClient {
    fn open(path: &Path) -> Result<Self, rusqlite::Error> {
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(60))?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        assert_eq!(mode, "wal", "SQLite refused WAL mode");
        conn.execute_batch("PRAGMA synchronous = FULL")?;
        Ok(Self {
            conn,
            upserts: HashMap::new(),
        })
    }

    fn execute(&mut self, request: Request) -> Result<Option<Cursor>, Failed> {
        use rusqlite::ToSql;
        let Self { conn, upserts } = self;
        let contacts = match request {
            Request::Rows(rows) => {
                let sql = upserts
                    .entry(rows.len())
                    .or_insert_with(|| upsert_sql(rows.len(), '?'));
                let now = now_secs();
                let json: Vec<(String, String)> = rows
                    .iter()
                    .map(|row| (row.stripe.to_string(), row.attrs.to_string()))
                    .collect();
                let mut params: Vec<&dyn ToSql> = Vec::with_capacity(2 + 6 * rows.len());
                params.push(&AGENT);
                params.push(&now);
                for (row, (stripe, attrs)) in rows.iter().zip(&json) {
                    params.push(&row.external_id);
                    params.push(&row.name);
                    params.push(&row.email);
                    params.push(&row.phone);
                    params.push(stripe);
                    params.push(attrs);
                }
                conn.prepare_cached(sql)?
                    .execute(rusqlite::params_from_iter(params))?;
                return Ok(None);
            }
            Request::Get(id) => {
                let contacts = sqlite_query(
                    conn,
                    &format!(
                        "SELECT {SQLITE_COLUMNS} FROM contacts \
                         WHERE agent_id = ?1 AND external_id = ?2"
                    ),
                    &[&AGENT, &id],
                )?;
                if contacts.is_empty() {
                    return Err(Failed::new(format!("contact {id} not found")));
                }
                contacts
            }
            Request::Page(page) => {
                let offset = i64::try_from((page - 1) * PER_PAGE).unwrap_or(i64::MAX);
                sqlite_query(
                    conn,
                    &format!(
                        "SELECT {SQLITE_COLUMNS} FROM contacts WHERE agent_id = ?1 \
                         ORDER BY id LIMIT 50 OFFSET ?2"
                    ),
                    &[&AGENT, &offset],
                )?
            }
            Request::ByName => sqlite_query(
                conn,
                &format!(
                    "SELECT {SQLITE_COLUMNS} FROM contacts WHERE agent_id = ?1 \
                     ORDER BY lower(name), id LIMIT 50"
                ),
                &[&AGENT],
            )?,
            Request::Filter => sqlite_query(
                conn,
                &format!(
                    "SELECT {SQLITE_COLUMNS} FROM contacts WHERE agent_id = ?1 \
                     AND json_extract(attrs, '$.ltv') >= 19800 \
                     ORDER BY lower(name), id LIMIT 50"
                ),
                &[&AGENT],
            )?,
            Request::Search(cursor) => {
                let contacts = match cursor {
                    None => sqlite_query(
                        conn,
                        &format!(
                            "SELECT {SQLITE_COLUMNS} FROM contacts WHERE {SQLITE_SEARCH_WHERE} \
                             ORDER BY lower(name), id LIMIT 50"
                        ),
                        &[&AGENT, &SEARCH_FROM, &SEARCH_BELOW, &SEARCH_LIKE],
                    )?,
                    Some(Cursor::Key(name, id)) => sqlite_query(
                        conn,
                        &format!(
                            "SELECT {SQLITE_COLUMNS} FROM contacts WHERE {SQLITE_SEARCH_WHERE} \
                             AND (lower(name), id) > (?5, ?6) ORDER BY lower(name), id LIMIT 50"
                        ),
                        &[
                            &AGENT,
                            &SEARCH_FROM,
                            &SEARCH_BELOW,
                            &SEARCH_LIKE,
                            &name,
                            &id,
                        ],
                    )?,
                    Some(Cursor::Http(_)) => return Err(Failed::broken("not a SQL cursor")),
                };
                let next = match contacts.last() {
                    // Names are ASCII: SQLite's lower() is Rust's ASCII lowercase.
                    Some(last) if contacts.len() as u64 == PER_PAGE => Some(Cursor::Key(
                        last.name
                            .as_deref()
                            .unwrap_or_default()
                            .to_ascii_lowercase(),
                        last.id,
                    )),
                    _ => None,
                };
                black_box(contacts);
                return Ok(next);
            }
            Request::Post(_) => return Err(Failed::broken("a body is for HTTP")),
        };
        black_box(contacts);
        Ok(None)
    }
}

fn sqlite_query(
    conn: &rusqlite::Connection,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
) -> Result<Vec<StoredContact>, rusqlite::Error> {
    let mut statement = conn.prepare_cached(sql)?;
    let rows = statement.query_map(params, |row| {
        Ok(StoredContact {
            id: row.get(0)?,
            external_id: row.get(1)?,
            name: row.get(2)?,
            email: row.get(3)?,
            phone: row.get(4)?,
            stripe: row.get(5)?,
            attrs: row.get(6)?,
            created_at: row.get(7)?,
            updated_at: row.get(8)?,
        })
    })?;
    rows.collect()
}

/// `VmRSS` of this process, in bytes.
fn current_rss_bytes() -> Option<u64> {
    common::proc_kib(
        &std::fs::read_to_string("/proc/self/status").ok()?,
        "VmRSS:",
    )
}

/// The child process: runs SQLite's side, one command from stdin at a time, one JSON
/// line on stdout for each.
fn sqlite_child() {
    let baseline = current_rss_bytes().unwrap_or(0);
    let contacts = contacts_setting();
    let rt = common::runtime("sqlite-client");
    let workload = Arc::new(Workload::new(contacts));
    let dir = common::data_dir();
    let path = dir.path().join("contacts.sqlite");
    let admin = SqliteClient::open(&path).expect("cannot open the SQLite database");
    admin
        .conn
        .execute_batch(SQLITE_SCHEMA)
        .expect("cannot create the SQLite schema");
    let version: String = admin
        .conn
        .query_row("SELECT sqlite_version()", [], |row| row.get(0))
        .expect("cannot ask SQLite its version");
    let open = |n: u64| -> Vec<Client> {
        (0..n)
            .map(|_| {
                Client::Sqlite(Some(
                    SqliteClient::open(&path).expect("cannot open a SQLite connection"),
                ))
            })
            .collect()
    };
    let mut out = std::io::stdout().lock();
    let mut reply = |value: Value| {
        writeln!(out, "{value}")
            .and_then(|()| out.flush())
            .expect("the bench went away");
    };
    reply(serde_json::json!({ "version": version, "path": path }));
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["preload"] => {
                let outcome = rt.block_on(preload_clients(open(PRELOAD_CLIENTS), &workload));
                let outcome = outcome.and_then(|outcome| {
                    admin
                        .conn
                        .execute_batch("ANALYZE")
                        .map_err(|err| err.to_string())?;
                    Ok(outcome)
                });
                reply(serde_json::to_value(outcome).unwrap_or(Value::Null));
            }
            ["phase", number, millis] => {
                let number: usize = number.parse().expect("a phase number");
                let duration = Duration::from_millis(millis.parse().expect("a duration"));
                let clients = open(PHASES[number].clients as u64);
                let outcome = rt.block_on(run_clients(clients, number, &workload, duration));
                reply(serde_json::to_value(Ok::<_, String>(outcome)).unwrap_or(Value::Null));
            }
            ["size"] => {
                let stored: Result<i64, _> = admin.conn.query_row(
                    "SELECT count(*) FROM contacts WHERE agent_id = ?1",
                    [AGENT],
                    |row| row.get(0),
                );
                let file = |suffix: &str| {
                    let mut name = path.clone().into_os_string();
                    name.push(suffix);
                    std::fs::metadata(name).map_or(0, |m| allocated(&m))
                };
                let (db, wal) = (file(""), file("-wal"));
                let growth = common::peak_rss_bytes().map(|peak| peak.saturating_sub(baseline));
                let size = stored.map_err(|err| err.to_string()).map(|stored| Size {
                    stored: u64::try_from(stored).unwrap_or(0),
                    disk_bytes: db + wal,
                    log_bytes: Some(wal),
                    memory_bytes: growth,
                    detail: format!(
                        "the child process's peak RSS less its {:.1} MiB before SQLite opened; \
                         database file {:.1} MiB + WAL {:.1} MiB",
                        baseline as f64 / 1048576.0,
                        db as f64 / 1048576.0,
                        wal as f64 / 1048576.0
                    ),
                });
                reply(serde_json::to_value(size).unwrap_or(Value::Null));
            }
            _ => break,
        }
    }
    drop(admin);
    drop(rt);
    drop(dir);
}

/// The bench's handle on the SQLite child process.
struct SqliteChild {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl SqliteChild {
    fn spawn(contacts: u64) -> Result<Self, String> {
        let exe =
            std::env::current_exe().map_err(|err| format!("cannot find this binary: {err}"))?;
        let mut child = Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env(CHILD_ENV, "1")
            .env("CONTACTD_BENCH_CONTACTS", contacts.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|err| format!("cannot start the SQLite process: {err}"))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("the SQLite process has no pipes".to_owned());
        };
        let mut this = Self {
            child,
            stdin: Some(stdin),
            stdout: BufReader::new(stdout),
        };
        let hello = this.read()?;
        println!(
            "compare: SQLite {} in a child process, database {}",
            hello["version"].as_str().unwrap_or("?"),
            hello["path"].as_str().unwrap_or("?")
        );
        Ok(this)
    }

    fn read(&mut self) -> Result<Value, String> {
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(0) => Err("the SQLite process ended".to_owned()),
            Ok(_) => {
                serde_json::from_str(&line).map_err(|err| format!("bad reply {line:?}: {err}"))
            }
            Err(err) => Err(format!("cannot read from the SQLite process: {err}")),
        }
    }

    /// Sends one command; the reply is a `Result<T, String>` as JSON.
    fn call<T: serde::de::DeserializeOwned>(&mut self, command: &str) -> Result<T, String> {
        let stdin = self.stdin.as_mut().ok_or("the SQLite process is closed")?;
        writeln!(stdin, "{command}")
            .and_then(|()| stdin.flush())
            .map_err(|err| format!("cannot write to the SQLite process: {err}"))?;
        let reply = self.read()?;
        serde_json::from_value::<Result<T, String>>(reply)
            .map_err(|err| format!("bad reply to {command}: {err}"))?
    }
}

impl Drop for SqliteChild {
    fn drop(&mut self) {
        // End of input: the child removes its database and exits.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// The run

/// The systems that are up.
struct Systems {
    contactd: Option<(Server, Arc<Workload>)>,
    postgres: Option<Postgres>,
    sqlite: Option<SqliteChild>,
}

impl Systems {
    fn start(rt: &Runtime, wanted: &[System], contacts: u64) -> Self {
        let mut systems = Self {
            contactd: None,
            postgres: None,
            sqlite: None,
        };
        for &system in wanted {
            match system {
                System::Contactd => {
                    let server = Server::start();
                    println!("compare: contactd data in {}", server.data_dir().display());
                    systems.contactd = Some((server, Arc::new(Workload::new(contacts))));
                }
                System::Postgres => match Postgres::start(rt, contacts) {
                    Ok(pg) => systems.postgres = Some(pg),
                    Err(err) => println!("compare: PostgreSQL is left out: {err}"),
                },
                System::Sqlite => match SqliteChild::spawn(contacts) {
                    Ok(child) => systems.sqlite = Some(child),
                    Err(err) => println!("compare: SQLite is left out: {err}"),
                },
            }
        }
        systems
    }

    fn preload(&mut self, rt: &Runtime, system: System) -> Option<Result<Outcome, String>> {
        Some(match system {
            System::Contactd => {
                let (server, workload) = self.contactd.as_ref()?;
                let took = common::preload_http(rt, server, workload);
                Ok(Outcome {
                    ok: workload.preloaded(),
                    per_request: 1,
                    secs: took.as_secs_f64(),
                    ..Outcome::default()
                })
            }
            System::Postgres => self.postgres.as_ref()?.preload(rt),
            System::Sqlite => self.sqlite.as_mut()?.call("preload"),
        })
    }

    fn phase(
        &mut self,
        rt: &Runtime,
        system: System,
        number: usize,
        duration: Duration,
    ) -> Option<Result<Outcome, String>> {
        Some(match system {
            System::Contactd => {
                let (server, workload) = self.contactd.as_ref()?;
                Ok(rt.block_on(async {
                    let mut clients = Vec::with_capacity(PHASES[number].clients);
                    for _ in 0..PHASES[number].clients {
                        clients.push(Client::Http(server.connect().await));
                    }
                    run_clients(clients, number, workload, duration).await
                }))
            }
            System::Postgres => self.postgres.as_ref()?.phase(rt, number, duration),
            System::Sqlite => self
                .sqlite
                .as_mut()?
                .call(&format!("phase {number} {}", duration.as_millis())),
        })
    }

    fn size(&mut self, rt: &Runtime, system: System) -> Option<Result<Size, String>> {
        Some(match system {
            System::Contactd => {
                let (server, _) = self.contactd.as_ref()?;
                let stored = rt.block_on(async { server.connect().await.contact_total().await });
                stored.map_err(|err| err.to_string()).map(|stored| {
                    let footprint = common::Footprint::measure(server.data_dir(), stored);
                    Size {
                        stored,
                        disk_bytes: dir_bytes(server.data_dir()),
                        log_bytes: None,
                        memory_bytes: footprint.peak_rss_bytes,
                        detail: format!(
                            "{footprint} (data file length); disk here is what the whole data \
                             directory takes on disk; \
                             memory is this process's peak RSS, load generators included"
                        ),
                    }
                })
            }
            System::Postgres => self.postgres.as_ref()?.size(rt),
            System::Sqlite => self.sqlite.as_mut()?.call("size"),
        })
    }

    /// Drops a system that failed, so later phases skip it.
    fn drop_system(&mut self, system: System) {
        match system {
            System::Contactd => self.contactd = None,
            System::Postgres => self.postgres = None,
            System::Sqlite => self.sqlite = None,
        }
    }
}

/// Prints the progress line of one system's phase.
fn report(label: &str, system: System, kind: Option<Kind>, outcome: &Outcome) {
    let unit = kind.map_or("contacts/s", Kind::unit);
    let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2} ms"));
    let mut line = format!(
        "{label:<58} {:<10} {:>9.0} {unit}  p50 {:>10}  p99 {:>10}  ({} ok, {} errors, {:.1} s)",
        system.title(),
        outcome.rate(),
        ms(outcome.p50_ms),
        ms(outcome.p99_ms),
        outcome.ok,
        outcome.errors,
        outcome.secs
    );
    if let (Some(secs), Some(rate)) = (outcome.checkpoint_secs, outcome.rate_with_checkpoint()) {
        line.push_str(&format!(
            "; CHECKPOINT {secs:.2} s: {rate:.0} {unit} with it"
        ));
    }
    println!("{line}");
    if let Some(err) = &outcome.first_error {
        println!("    first error: {err}");
    }
    if let Some(why) = &outcome.skipped {
        println!("    {why}");
    }
}

fn main() {
    if std::env::var_os(CHILD_ENV).is_some() {
        sqlite_child();
        return;
    }
    let contacts = contacts_setting();
    let duration = common::phase_duration();
    let wanted_systems = systems_setting();
    let only = std::env::var("CONTACTD_BENCH_PHASES").ok();
    let wanted = |letter: &str| {
        only.as_deref()
            .is_none_or(|list| list.split(',').any(|p| p.trim() == letter))
    };
    let run_started = Instant::now();
    let rt = common::runtime("compare-client");
    let mut systems = Systems::start(&rt, &wanted_systems, contacts);
    println!(
        "compare: {contacts} contacts, phases of {} s, systems: {}",
        duration.as_secs(),
        wanted_systems
            .iter()
            .map(|s| s.title())
            .collect::<Vec<_>>()
            .join(", ")
    );

    let mut preload: [Option<Outcome>; 3] = Default::default();
    let preload_label = format!(
        "preload: batches of 1000 new contacts to {}, {PRELOAD_CLIENTS} clients",
        count_text(contacts)
    );
    for system in SYSTEMS {
        match systems.preload(&rt, system) {
            None => {}
            Some(Ok(outcome)) => {
                report(&preload_label, system, None, &outcome);
                preload[system.index()] = Some(outcome);
            }
            Some(Err(err)) => {
                println!(
                    "compare: {} failed to preload and is left out: {err}",
                    system.title()
                );
                systems.drop_system(system);
            }
        }
    }

    let mut phases: Vec<(usize, [Option<Outcome>; 3])> = Vec::new();
    for step in STEPS {
        let numbers: Vec<usize> = step
            .iter()
            .filter(|letter| wanted(letter))
            .filter_map(|letter| PHASES.iter().position(|p| p.letter == *letter))
            .collect();
        let first = phases.len();
        phases.extend(numbers.iter().map(|&n| (n, Default::default())));
        for system in SYSTEMS {
            for (offset, &number) in numbers.iter().enumerate() {
                match systems.phase(&rt, system, number, duration) {
                    None => {}
                    Some(Ok(outcome)) => {
                        report(
                            PHASES[number].label,
                            system,
                            Some(PHASES[number].kind),
                            &outcome,
                        );
                        phases[first + offset].1[system.index()] = Some(outcome);
                    }
                    Some(Err(err)) => {
                        println!(
                            "compare: {} failed in {} and is left out: {err}",
                            system.title(),
                            PHASES[number].label
                        );
                        systems.drop_system(system);
                    }
                }
            }
        }
    }

    let mut sizes: [Option<Size>; 3] = Default::default();
    for system in SYSTEMS {
        match systems.size(&rt, system) {
            None => {}
            Some(Ok(size)) => {
                println!(
                    "compare: {}: {} contacts stored, {:.0} bytes/contact; {}",
                    system.title(),
                    size.stored,
                    size.bytes_per_contact(),
                    size.detail
                );
                sizes[system.index()] = Some(size);
            }
            Some(Err(err)) => println!("compare: {} size unknown: {err}", system.title()),
        }
    }
    drop(systems);
    drop(rt);

    println!();
    print_table(contacts, &preload_label, &preload, &phases, &sizes);
    println!();
    println!(
        "compare: finished in {:.0} s",
        run_started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------
// The table

fn count_text(n: u64) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

fn rate_text(rate: f64) -> String {
    if rate >= 1000.0 {
        format!("{:.1}k", rate / 1000.0)
    } else if rate >= 10.0 {
        format!("{rate:.0}")
    } else {
        format!("{rate:.1}")
    }
}

fn ms_text(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else if ms >= 10.0 {
        format!("{ms:.0} ms")
    } else if ms >= 1.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

fn memory_text(bytes: u64) -> String {
    let mib = bytes as f64 / (1024.0 * 1024.0);
    if mib >= 1024.0 {
        format!("{:.2} GiB", mib / 1024.0)
    } else {
        format!("{mib:.0} MiB")
    }
}

fn ratio_text(ratio: f64) -> String {
    if ratio.is_finite() {
        format!("{ratio:.2}×")
    } else {
        "–".to_owned()
    }
}

/// One cell: the rate, with latencies for request phases.
fn cell(outcome: Option<&Outcome>, kind: Option<Kind>) -> String {
    let Some(o) = outcome else {
        return "–".to_owned();
    };
    if let Some(why) = &o.skipped {
        if o.ok == 0 {
            return why.clone();
        }
    }
    let unit = kind.map_or("contacts/s", Kind::unit);
    let mut text = format!("{} {unit}", rate_text(o.rate()));
    if kind.is_some_and(|k| k.contacts_per_request() == 1) {
        if let (Some(p50), Some(p99)) = (o.p50_ms, o.p99_ms) {
            text.push_str(&format!(", p50 {}, p99 {}", ms_text(p50), ms_text(p99)));
        }
    }
    if let Some(rate) = o.rate_with_checkpoint() {
        text.push_str(&format!("; {} with CHECKPOINT", rate_text(rate)));
    }
    if o.errors > 0 {
        text.push_str(&format!(" ({} errors)", o.errors));
    }
    text
}

/// contactd's rate over PostgreSQL's (and over PostgreSQL's with its checkpoint).
fn ratio_cell(row: &[Option<Outcome>; 3]) -> String {
    let (Some(ours), Some(pg)) = (
        &row[System::Contactd.index()],
        &row[System::Postgres.index()],
    ) else {
        return "–".to_owned();
    };
    let mut text = ratio_text(ours.rate() / pg.rate());
    if let Some(with) = pg.rate_with_checkpoint() {
        text.push_str(&format!(
            " ({} with CHECKPOINT)",
            ratio_text(ours.rate() / with)
        ));
    }
    text
}

fn print_table(
    contacts: u64,
    preload_label: &str,
    preload: &[Option<Outcome>; 3],
    phases: &[(usize, [Option<Outcome>; 3])],
    sizes: &[Option<Size>; 3],
) {
    println!(
        "Standard workload at {} contacts, one run, phases of {} s; ratio: contactd over \
         PostgreSQL (rates: above 1× contactd is faster; memory and disk: below 1× \
         contactd uses less).",
        count_text(contacts),
        common::phase_duration().as_secs()
    );
    println!();
    println!("| phase | contactd | PostgreSQL | SQLite | contactd / PostgreSQL |");
    println!("| --- | --- | --- | --- | --- |");
    let line = |label: &str, cells: [String; 3], ratio: String| {
        println!(
            "| {label} | {} | {} | {} | {ratio} |",
            cells[0], cells[1], cells[2]
        );
    };
    line(
        preload_label,
        [0, 1, 2].map(|i| cell(preload[i].as_ref(), None)),
        ratio_cell(preload),
    );
    for (number, row) in phases {
        let phase = &PHASES[*number];
        line(
            phase.label,
            [0, 1, 2].map(|i| cell(row[i].as_ref(), Some(phase.kind))),
            ratio_cell(row),
        );
    }
    let size_ratio = |value: fn(&Size) -> Option<f64>| match (
        sizes[System::Contactd.index()].as_ref().and_then(value),
        sizes[System::Postgres.index()].as_ref().and_then(value),
    ) {
        (Some(ours), Some(pg)) => ratio_text(ours / pg),
        _ => "–".to_owned(),
    };
    line(
        "peak memory",
        [0, 1, 2].map(|i| {
            sizes[i]
                .as_ref()
                .and_then(|s| s.memory_bytes)
                .map_or("–".to_owned(), memory_text)
        }),
        size_ratio(|s| s.memory_bytes.map(|b| b as f64)),
    );
    line(
        "bytes on disk per contact",
        [0, 1, 2].map(|i| {
            sizes[i].as_ref().map_or("–".to_owned(), |s| {
                let mut text = format!("{:.0} B", s.bytes_per_contact());
                if let Some(log) = s.log_bytes {
                    let per_contact = log as f64 / s.stored.max(1) as f64;
                    text.push_str(&format!(" (WAL {per_contact:.0} B)"));
                }
                text
            })
        }),
        size_ratio(|s| Some(s.bytes_per_contact())),
    );
}
