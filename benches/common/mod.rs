//! Shared by every benchmark: the standard workload of DESIGN.md, an in-process server
//! with a keep-alive HTTP client, preloading, and the footprint report.
//!
//! The workload is a pure function of a fixed seed and a contact's index: contact `i`
//! always has the same external id and email, so any client can pick "a random existing
//! contact" by drawing an index below the preloaded count, without keeping a list of
//! ids in memory (which would distort peak RSS at a million contacts). Indices at and
//! above the preloaded count are handed out once each for new contacts. Emails end in
//! the index, so they are unique by construction; external ids are 12 random base62
//! characters, where a collision among millions is vanishingly unlikely (and would turn
//! one create into an update, nothing worse).
//!
//! Environment:
//! - `CONTACTD_BENCH_CONTACTS`: contacts to preload (default 100000; the full standard
//!   workload is 1000000).
//! - `CONTACTD_BENCH_SECS`: length of each load phase in seconds (default 10).
//! - `CONTACTD_BENCH_DIR`: where the temporary data directories go (default: the
//!   system temp dir). Point it at a real disk if that is a tmpfs, or fsync is free.
//! - `CONTACTD_BENCH_KEEP=1`: keep the server's data directory at the end and print its
//!   path (to inspect it, e.g. with `contactd check`).
//!
//! When a bench binary runs as a test (`cargo test --benches`, no `--bench` argument),
//! the defaults shrink to 1000 contacts and 1-second phases so it stays a smoke test.

// Each bench binary uses a different part of this module.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rand::distr::{Alphanumeric, SampleString};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use contactd::domain::{Agent, ContactInput, Issues, UnknownPolicy};
use contactd::store::{OnDuplicate, RedbStore, Store, StoreError};

/// The seed every benchmark derives its data from.
pub const SEED: u64 = 0x0c0a_7ac7_d5ee_d001;
/// The agent the contacts belong to (the one the server creates on first run).
pub const AGENT: &str = "default";
/// Contacts per batch request, the API's maximum.
pub const BATCH: usize = 1000;
/// Concurrent streams used to preload, so group commit and parsing overlap.
pub const PRELOAD_STREAMS: u64 = 4;
/// A request that takes longer than this counts as failed (the server gives up at 30 s).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

// Separate RNG streams per purpose, so e.g. a contact's identity never shares numbers
// with its field values.
const STREAM_IDENTITY: u64 = 1;
const STREAM_FIELDS: u64 = 2;
/// For callers that need their own stream (per client, per phase).
pub const STREAM_CLIENT: u64 = 3;

const FIRST_NAMES: &[&str] = &[
    "Ada",
    "Alan",
    "Barbara",
    "Dennis",
    "Donald",
    "Edsger",
    "Frances",
    "Grace",
    "John",
    "Ken",
    "Katherine",
    "Linus",
    "Margaret",
    "Niklaus",
    "Radia",
    "Sophie",
];
const LAST_NAMES: &[&str] = &[
    "Allen",
    "Dijkstra",
    "Hamilton",
    "Hopper",
    "Johnson",
    "Kernighan",
    "Knuth",
    "Liskov",
    "Lovelace",
    "McCarthy",
    "Perlman",
    "Ritchie",
    "Thompson",
    "Turing",
    "Wilson",
    "Wirth",
];
const DOMAINS: &[&str] = &[
    "example.com",
    "example.org",
    "example.net",
    "mail.example.com",
];
const PLANS: &[&str] = &["free", "starter", "pro", "enterprise"];

/// Whether cargo started this binary as a benchmark (`cargo bench` passes `--bench`)
/// rather than as a test.
pub fn is_bench_run() -> bool {
    std::env::args().any(|arg| arg == "--bench")
}

fn env_u64(name: &str, bench_default: u64, test_default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a whole number, got {text:?}")),
        Err(_) if is_bench_run() => bench_default,
        Err(_) => test_default,
    }
}

/// Contacts to preload: `CONTACTD_BENCH_CONTACTS`, default 100000.
pub fn preload_count() -> u64 {
    env_u64("CONTACTD_BENCH_CONTACTS", 100_000, 1_000).max(1)
}

/// Length of one load phase: `CONTACTD_BENCH_SECS`, default 10 s.
pub fn phase_duration() -> Duration {
    Duration::from_secs(env_u64("CONTACTD_BENCH_SECS", 10, 1).max(1))
}

/// Wait after the preload: `CONTACTD_BENCH_SETTLE_SECS`, default none.
pub fn settle_duration() -> Duration {
    Duration::from_secs(env_u64("CONTACTD_BENCH_SETTLE_SECS", 0, 0))
}

/// A fresh temporary directory for one database, removed when dropped.
pub fn data_dir() -> TempDir {
    let parent = std::env::var_os("CONTACTD_BENCH_DIR")
        .map_or_else(std::env::temp_dir, std::path::PathBuf::from);
    tempfile::Builder::new()
        .prefix("contactd-bench-")
        .tempdir_in(&parent)
        .unwrap_or_else(|err| panic!("cannot create a data dir in {}: {err}", parent.display()))
}

/// One splitmix64 step: distinct inputs give unrelated outputs, so neighbouring
/// indices get unrelated RNG seeds.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A deterministic RNG for the given path of numbers under [`SEED`].
pub fn rng_for(parts: &[u64]) -> StdRng {
    StdRng::seed_from_u64(parts.iter().fold(mix(SEED), |acc, &p| mix(acc ^ p)))
}

fn base36(mut n: u64) -> String {
    let mut digits = Vec::new();
    loop {
        digits.push(char::from_digit((n % 36) as u32, 36).unwrap_or('0'));
        n /= 36;
        if n == 0 {
            break;
        }
    }
    digits.iter().rev().collect()
}

/// The standard workload: who the contacts are, and which ones exist already.
#[derive(Debug)]
pub struct Workload {
    preloaded: u64,
    next_new: AtomicU64,
}

impl Workload {
    /// Contacts `0..preloaded` are (or are about to be) stored; new ones come after.
    pub fn new(preloaded: u64) -> Self {
        Self {
            preloaded,
            next_new: AtomicU64::new(preloaded),
        }
    }

    pub fn preloaded(&self) -> u64 {
        self.preloaded
    }

    /// The external id of contact `index`.
    pub fn external_id(&self, index: u64) -> String {
        self.identity(index).0
    }

    /// What never changes about contact `index`: an external id of 12 random base62
    /// characters, and an email that is random but ends in the index, so it is unique.
    fn identity(&self, index: u64) -> (String, String) {
        let mut rng = rng_for(&[STREAM_IDENTITY, index]);
        let external_id = Alphanumeric.sample_string(&mut rng, 12);
        let local = Alphanumeric
            .sample_string(&mut rng, 10)
            .to_ascii_lowercase();
        let domain = DOMAINS.choose(&mut rng).copied().unwrap_or("example.com");
        let email = format!("{local}.{}@{domain}", base36(index));
        (external_id, email)
    }

    /// Contact `index` as API JSON. Its external id and email never change; the other
    /// fields are drawn from `version` (0 for the first write, anything else for an
    /// update that changes them).
    pub fn contact(&self, index: u64, version: u64) -> Value {
        let mut rng = rng_for(&[STREAM_FIELDS, index, version]);
        let first = FIRST_NAMES.choose(&mut rng).copied().unwrap_or("Ada");
        let last = LAST_NAMES.choose(&mut rng).copied().unwrap_or("Lovelace");
        let phone = format!(
            "+1 {} {:03} {:04}",
            rng.random_range(200..1000),
            rng.random_range(0..1000),
            rng.random_range(0..10_000)
        );
        let stripe_accounts = if rng.random_bool(0.5) {
            json!([{
                "label": "main",
                "stripe_id": format!("cus_{}", Alphanumeric.sample_string(&mut rng, 14)),
            }])
        } else {
            json!([])
        };
        let plan = PLANS.choose(&mut rng).copied().unwrap_or("free");
        let (external_id, email) = self.identity(index);
        json!({
            "external_id": external_id,
            "name": format!("{first} {last}"),
            "email": email,
            "phonenumber": phone,
            "stripe_accounts": stripe_accounts,
            "custom_attributes": {
                "plan": plan,
                "ltv": rng.random_range(0..20_000),
                "vip": rng.random_bool(0.1),
            },
        })
    }

    /// `n` contacts that were never written before.
    pub fn new_contacts(&self, n: usize) -> Vec<Value> {
        let start = self.next_new.fetch_add(n as u64, Ordering::Relaxed);
        (start..start + n as u64)
            .map(|index| self.contact(index, 0))
            .collect()
    }

    /// Changed versions of `n` distinct preloaded contacts, chosen with `rng`.
    pub fn updates(&self, rng: &mut StdRng, n: usize) -> Vec<Value> {
        let population = usize::try_from(self.preloaded).unwrap_or(usize::MAX);
        rand::seq::index::sample(rng, population, n.min(population))
            .into_iter()
            .map(|index| self.contact(index as u64, rng.random_range(1..u64::MAX)))
            .collect()
    }

    /// The external id of a random preloaded contact.
    pub fn random_existing_id(&self, rng: &mut StdRng) -> String {
        self.external_id(rng.random_range(0..self.preloaded))
    }
}

/// Validates contact JSON the way the API does, for writing straight to the store.
pub fn to_inputs(contacts: &[Value]) -> Vec<ContactInput> {
    let mut issues = Issues::new();
    let inputs: Vec<_> = contacts
        .iter()
        .enumerate()
        .filter_map(|(i, c)| ContactInput::parse(c, &format!("users[{i}]"), &mut issues))
        .map(|mut input| {
            // As the API does before handing a write to the store.
            input.read_phone(&Default::default());
            input
        })
        .collect();
    assert!(
        issues.is_empty(),
        "the workload generated an invalid contact: {:?}",
        issues.into_vec()
    );
    inputs
}

/// The body of `POST /contacts` for these contacts.
pub fn batch_body(contacts: Vec<Value>) -> Bytes {
    Bytes::from(
        serde_json::to_vec(&json!({ "users": contacts })).expect("JSON values always serialize"),
    )
}

/// The external ids of generated contacts.
pub fn external_ids(contacts: &[Value]) -> Vec<String> {
    contacts
        .iter()
        .filter_map(|c| c["external_id"].as_str().map(str::to_owned))
        .collect()
}

/// A tokio runtime with one worker per core.
pub fn runtime(name: &str) -> Runtime {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name(name)
        .enable_all()
        .build()
        .expect("cannot build a tokio runtime")
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

/// Opens a store in `dir` and creates the [`AGENT`] agent.
pub fn open_store(rt: &Runtime, dir: &Path) -> Arc<RedbStore> {
    let store = RedbStore::open(dir).expect("cannot open the store");
    let agent = Agent {
        id: AGENT.to_owned(),
        name: "Benchmark".to_owned(),
        created_at: now_secs(),
        contact_count: 0,
    };
    rt.block_on(store.create_agent(agent))
        .expect("cannot create the benchmark agent");
    Arc::new(store)
}

/// Writes contacts `0..workload.preloaded()` straight to the store in 1000-contact
/// batches, several in flight. Returns how long it took.
pub fn preload_store(rt: &Runtime, store: &Arc<RedbStore>, workload: &Arc<Workload>) -> Duration {
    let started = Instant::now();
    rt.block_on(async {
        let tasks: Vec<JoinHandle<Result<(), StoreError>>> = (0..PRELOAD_STREAMS)
            .map(|stream| {
                let store = Arc::clone(store);
                let workload = Arc::clone(workload);
                tokio::spawn(async move {
                    for range in preload_ranges(workload.preloaded(), stream) {
                        let contacts: Vec<_> = range.map(|i| workload.contact(i, 0)).collect();
                        store
                            .upsert_contacts(
                                AGENT.to_owned(),
                                to_inputs(&contacts),
                                OnDuplicate::Update,
                                UnknownPolicy::Define.into(),
                                contactd::clock::unix_now(),
                            )
                            .await?;
                    }
                    Ok(())
                })
            })
            .collect();
        for task in tasks {
            task.await
                .expect("a preload task panicked")
                .expect("preloading through the store failed");
        }
    });
    started.elapsed()
}

/// The batches of `0..total` that preload stream `stream` writes.
fn preload_ranges(total: u64, stream: u64) -> impl Iterator<Item = std::ops::Range<u64>> {
    let batch = BATCH as u64;
    (0..total.div_ceil(batch))
        .filter(move |chunk| chunk % PRELOAD_STREAMS == stream)
        .map(move |chunk| chunk * batch..((chunk + 1) * batch).min(total))
}

/// Deletes contacts straight from the store, all queued at once so the writer can put
/// many into one commit. Benchmarks use it to return to the preloaded size.
pub async fn delete_from_store(store: &Arc<RedbStore>, external_ids: Vec<String>) {
    let deletes: Vec<_> = external_ids
        .into_iter()
        .map(|id| tokio::spawn(store.delete_contact(AGENT.to_owned(), id, None, 1)))
        .collect();
    for delete in deletes {
        delete
            .await
            .expect("a delete task panicked")
            .expect("deleting a benchmark contact failed");
    }
}

/// A contactd server on `127.0.0.1:0` with its own runtime and a temporary data dir.
/// Dropping it shuts it down and deletes the data.
pub struct Server {
    pub addr: SocketAddr,
    pub admin_key: String,
    dir: TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), StoreError>>>,
    runtime: Option<Runtime>,
}

impl Server {
    pub fn start() -> Self {
        Self::start_with(|_| {})
    }

    /// [`Server::start`] with the configuration changed by `tweak`.
    pub fn start_with(tweak: impl FnOnce(&mut contactd::config::Config)) -> Self {
        let dir = data_dir();
        // The key only has to be valid; it need not be reproducible.
        let admin_key = format!(
            "oc_live_{}",
            Alphanumeric.sample_string(&mut rand::rng(), 32)
        );
        // The defaults, and any CONTACTD_* setting in the environment (e.g.
        // CONTACTD_CACHE_MB to measure another page cache).
        let layers = contactd::config::Layers {
            env: std::env::vars().collect(),
            ..contactd::config::Layers::default()
        };
        let mut config = contactd::config::resolve(&layers)
            .expect("the configuration in the environment is invalid");
        config.listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        config.data_dir = dir.path().to_owned();
        config.admin_key = Some(admin_key.clone());
        config.shutdown_grace = Duration::from_secs(5);
        // Spare connections (the HTTP bench's delete streams) sit idle through a whole
        // measurement; the header-read timeout doubles as the keep-alive idle timeout.
        config.header_read_timeout = Duration::from_secs(600);
        tweak(&mut config);
        let runtime = runtime("contactd-server");
        let listener = runtime
            .block_on(TcpListener::bind(config.listen))
            .expect("cannot listen on 127.0.0.1");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = runtime.spawn(contactd::serve(listener, config, async move {
            let _ = stop.await;
        }));
        Self {
            addr,
            admin_key,
            dir,
            shutdown: Some(shutdown),
            task: Some(task),
            runtime: Some(runtime),
        }
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Opens one keep-alive connection (call inside a tokio runtime).
    pub async fn connect(&self) -> Conn {
        Conn::open(self.addr, &self.admin_key).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let (Some(runtime), Some(task)) = (self.runtime.take(), self.task.take()) {
            match runtime.block_on(task) {
                Ok(Ok(())) => {}
                Ok(Err(err)) => eprintln!("the server stopped with an error: {err}"),
                Err(err) => eprintln!("the server task failed: {err}"),
            }
            runtime.shutdown_timeout(Duration::from_secs(5));
        }
        if std::env::var_os("CONTACTD_BENCH_KEEP").is_some() {
            self.dir.disable_cleanup(true);
            eprintln!("kept the data dir {}", self.dir.path().display());
        }
    }
}

/// One HTTP/1.1 keep-alive connection to the server, one request at a time.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    host: HeaderValue,
    auth: HeaderValue,
    contacts_path: String,
}

impl Conn {
    pub async fn open(addr: SocketAddr, key: &str) -> Self {
        let stream = TcpStream::connect(addr)
            .await
            .expect("cannot connect to the server");
        stream.set_nodelay(true).expect("cannot set TCP_NODELAY");
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP handshake failed");
        tokio::spawn(async move {
            // Ends when the sender is dropped or the server closes the connection.
            let _ = connection.await;
        });
        Self {
            sender,
            host: HeaderValue::from_str(&addr.to_string()).expect("an address is a valid host"),
            auth: HeaderValue::from_str(&format!("Bearer {key}"))
                .expect("the admin key is visible ASCII"),
            contacts_path: format!("/api/v1/chatbots/{AGENT}/contacts"),
        }
    }

    /// Sends one request and reads the whole response.
    async fn send(&mut self, method: Method, path: &str, body: Bytes) -> Result<Bytes, Failure> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.host.clone())
            .header(AUTHORIZATION, self.auth.clone());
        if !body.is_empty() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(body))
            .map_err(|err| Failure::Transport(format!("cannot build the request: {err}")))?;
        let exchange = async {
            self.sender
                .ready()
                .await
                .map_err(|err| Failure::Transport(format!("connection lost: {err}")))?;
            let response = self
                .sender
                .send_request(request)
                .await
                .map_err(|err| Failure::Transport(format!("request failed: {err}")))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|err| Failure::Transport(format!("reading the response failed: {err}")))?
                .to_bytes();
            if status == StatusCode::OK {
                Ok(body)
            } else {
                let text = String::from_utf8_lossy(&body);
                Err(Failure::Status(status, text.chars().take(300).collect()))
            }
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| Failure::Transport(format!("no response within {REQUEST_TIMEOUT:?}")))?
    }

    /// `POST /api/v1/chatbots` creating agent `id`.
    pub async fn create_agent(&mut self, id: &str) -> Result<(), Failure> {
        let body = Bytes::from(json!({"id": id, "name": id}).to_string());
        self.send(Method::POST, "/api/v1/chatbots", body)
            .await
            .map(drop)
    }

    /// `POST path` with a JSON body; the answer's JSON.
    pub async fn post_json(&mut self, path: &str, body: &Value) -> Result<Value, Failure> {
        let answer = self
            .send(Method::POST, path, Bytes::from(body.to_string()))
            .await?;
        serde_json::from_slice(&answer)
            .map_err(|err| Failure::Transport(format!("the answer is not JSON: {err}")))
    }

    /// `DELETE path`.
    pub async fn delete_path(&mut self, path: &str) -> Result<(), Failure> {
        self.send(Method::DELETE, path, Bytes::new())
            .await
            .map(drop)
    }

    /// `PUT path` with a JSON body.
    pub async fn put_json(&mut self, path: &str, body: &Value) -> Result<(), Failure> {
        self.send(Method::PUT, path, Bytes::from(body.to_string()))
            .await
            .map(drop)
    }

    /// `POST /contacts` with a body from [`batch_body`].
    pub async fn upsert(&mut self, body: Bytes) -> Result<(), Failure> {
        let path = self.contacts_path.clone();
        self.send(Method::POST, &path, body).await.map(drop)
    }

    /// `GET /contacts/{external_id}`.
    pub async fn get(&mut self, external_id: &str) -> Result<(), Failure> {
        let path = format!("{}/{external_id}", self.contacts_path);
        self.send(Method::GET, &path, Bytes::new()).await.map(drop)
    }

    /// `GET /contacts?{query}`: one page of a list query.
    pub async fn list(&mut self, query: &str) -> Result<(), Failure> {
        let path = format!("{}?{query}", self.contacts_path);
        self.send(Method::GET, &path, Bytes::new()).await.map(drop)
    }

    /// Pabbly's `GET /api/v1/contacts?{query}` (the admin key lists `pabbly.agent`,
    /// which is [`AGENT`] by default).
    pub async fn pabbly_list(&mut self, query: &str) -> Result<(), Failure> {
        let path = format!("/api/v1/contacts?{query}");
        self.send(Method::GET, &path, Bytes::new()).await.map(drop)
    }

    /// `GET /contacts?{query}`: one page of a list query; returns its `next_cursor`.
    pub async fn list_next(&mut self, query: &str) -> Result<Option<String>, Failure> {
        let path = format!("{}?{query}", self.contacts_path);
        let body = self.send(Method::GET, &path, Bytes::new()).await?;
        let page: Value = serde_json::from_slice(&body)
            .map_err(|err| Failure::Transport(format!("the list response is not JSON: {err}")))?;
        Ok(page["next_cursor"].as_str().map(str::to_owned))
    }

    /// `DELETE /contacts/{external_id}`.
    pub async fn delete(&mut self, external_id: &str) -> Result<(), Failure> {
        let path = format!("{}/{external_id}", self.contacts_path);
        self.send(Method::DELETE, &path, Bytes::new())
            .await
            .map(drop)
    }

    /// Creates list `name` and puts the contacts `external_ids` in it, 1000 per request.
    pub async fn fill_list(&mut self, name: &str, external_ids: &[String]) -> Result<(), Failure> {
        let agent_path = self.contacts_path.trim_end_matches("/contacts").to_owned();
        let body = Bytes::from(json!({ "name": name }).to_string());
        // A list left by an earlier run of the same data dir is fine.
        match self
            .send(Method::POST, &format!("{agent_path}/lists"), body)
            .await
        {
            Ok(_) | Err(Failure::Status(StatusCode::CONFLICT, _)) => {}
            Err(err) => return Err(err),
        }
        for chunk in external_ids.chunks(1000) {
            let body = Bytes::from(json!({ "external_ids": chunk }).to_string());
            let path = format!("{agent_path}/lists/{name}/contacts");
            self.send(Method::POST, &path, body).await?;
        }
        Ok(())
    }

    /// The agent's contact count, from the `total` of a list page.
    pub async fn contact_total(&mut self) -> Result<u64, Failure> {
        let path = format!("{}?per_page=10", self.contacts_path);
        let body = self.send(Method::GET, &path, Bytes::new()).await?;
        serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|page| page["total"].as_u64())
            .ok_or_else(|| Failure::Transport("the list response has no total".to_owned()))
    }
}

/// Why a request failed.
#[derive(Debug, Clone)]
pub enum Failure {
    /// The server answered, but not with 200: the status and the start of the body.
    Status(StatusCode, String),
    /// No answer: the connection broke or the request timed out. The connection is no
    /// longer usable.
    Transport(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Status(status, body) => write!(f, "{status}: {body}"),
            Self::Transport(msg) => f.write_str(msg),
        }
    }
}

/// Posts contacts `0..workload.preloaded()` over HTTP in 1000-contact batches on a few
/// connections at once. Returns how long it took.
pub fn preload_http(rt: &Runtime, server: &Server, workload: &Arc<Workload>) -> Duration {
    let started = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for stream in 0..PRELOAD_STREAMS {
            let mut conn = server.connect().await;
            let workload = Arc::clone(workload);
            tasks.push(tokio::spawn(async move {
                for range in preload_ranges(workload.preloaded(), stream) {
                    let contacts = range.map(|i| workload.contact(i, 0)).collect();
                    conn.upsert(batch_body(contacts)).await?;
                }
                Ok::<(), Failure>(())
            }));
        }
        for task in tasks {
            if let Err(err) = task.await.expect("a preload task panicked") {
                panic!("preloading over HTTP failed: {err}");
            }
        }
    });
    started.elapsed()
}

/// Deletes contacts over HTTP, spread over `conns` so the writer can put many into one
/// commit. Benchmarks use it to return to the preloaded size. Gives the connections back.
pub async fn delete_over_http(conns: Vec<Conn>, external_ids: Vec<String>) -> Vec<Conn> {
    let lanes = conns.len().max(1);
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(lane, mut conn)| {
            let mine: Vec<String> = external_ids
                .iter()
                .skip(lane)
                .step_by(lanes)
                .cloned()
                .collect();
            tokio::spawn(async move {
                for id in mine {
                    if let Err(err) = conn.delete(&id).await {
                        panic!("deleting a benchmark contact failed: {err}");
                    }
                }
                conn
            })
        })
        .collect();
    let mut conns = Vec::with_capacity(tasks.len());
    for task in tasks {
        conns.push(task.await.expect("a delete task panicked"));
    }
    conns
}

/// How much the process and the database weigh.
#[derive(Debug, Clone, Copy)]
pub struct Footprint {
    pub file_bytes: u64,
    pub contacts: u64,
    /// `VmHWM`: the most resident memory this process has used (server and client).
    pub peak_rss_bytes: Option<u64>,
}

impl Footprint {
    /// Measures `<data_dir>/contactd.redb` against `contacts` stored contacts.
    pub fn measure(data_dir: &Path, contacts: u64) -> Self {
        let file = data_dir.join(contactd::store::DB_FILE);
        Self {
            file_bytes: std::fs::metadata(&file).map_or(0, |m| m.len()),
            contacts,
            peak_rss_bytes: peak_rss_bytes(),
        }
    }

    pub fn bytes_per_contact(&self) -> f64 {
        self.file_bytes as f64 / self.contacts.max(1) as f64
    }
}

impl std::fmt::Display for Footprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        match self.peak_rss_bytes {
            Some(rss) => write!(f, "peak RSS {:.1} MiB", mib(rss))?,
            None => write!(f, "peak RSS unknown")?,
        }
        write!(
            f,
            "; on disk {:.1} MiB = {:.0} bytes/contact over {} contacts",
            mib(self.file_bytes),
            self.bytes_per_contact(),
            self.contacts
        )
    }
}

/// `VmHWM` from `/proc/self/status`, where the kernel keeps it (Linux only).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    proc_kib(&status, "VmHWM:")
}

/// A `kB` field of a `/proc` file (`VmHWM:`, `Rss:`), in bytes.
pub fn proc_kib(text: &str, field: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// When the clients of a load phase stop issuing requests: at the deadline or after
/// `max_requests`, whichever comes first.
pub struct Limit {
    pub issued: Arc<AtomicU64>,
    pub max_requests: u64,
    pub deadline: Instant,
}

impl Limit {
    /// Whether a client may issue another request (counting it if so).
    pub fn another(&self) -> bool {
        Instant::now() < self.deadline
            && self.issued.fetch_add(1, Ordering::Relaxed) < self.max_requests
    }
}

/// Latencies of one run, for percentiles.
#[derive(Debug, Default)]
pub struct Latencies(Vec<Duration>);

impl Latencies {
    pub fn record(&mut self, latency: Duration) {
        self.0.push(latency);
    }

    pub fn merge(&mut self, other: Self) {
        self.0.extend(other.0);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The `q`-quantile (0 < q ≤ 1) by nearest rank, in milliseconds.
    pub fn quantile_ms(&mut self, q: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        self.0.sort_unstable();
        let rank = (q * self.0.len() as f64).ceil() as usize;
        let index = rank.clamp(1, self.0.len()) - 1;
        self.0[index].as_secs_f64() * 1000.0
    }
}

/// How many distinct random contacts a read benchmark cycles through.
const READ_POOL: usize = 65_536;

/// Random preloaded external ids for a read benchmark, drawn from `rng`.
pub fn read_pool(workload: &Workload, rng: &mut StdRng) -> Vec<String> {
    let size = READ_POOL.min(usize::try_from(workload.preloaded()).unwrap_or(READ_POOL));
    (0..size)
        .map(|_| workload.random_existing_id(rng))
        .collect()
}

/// The criterion settings of the store and HTTP benches: a few minutes in all at 100k
/// contacts; command-line options such as `--measurement-time` override them.
pub fn criterion() -> criterion::Criterion {
    criterion::Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10))
        .configure_from_args()
}
