//! HTTP benchmarks: the same four cases as `benches/store.rs`, end to end through an
//! in-process server on 127.0.0.1 (its own runtime, one worker per core) and one
//! keep-alive HTTP/1.1 connection, on one agent preloaded over HTTP with the standard
//! workload of DESIGN.md.
//!
//! - `http/get_by_external_id`: `GET /contacts/{external_id}` of a random preloaded contact.
//! - `http/batch_upsert_update_1000`: `POST /contacts` changing 1000 distinct random
//!   preloaded contacts.
//! - `http/single_upsert`: `POST /contacts` creating one new contact.
//! - `http/batch_upsert_new_1000`: `POST /contacts` creating 1000 new contacts.
//!
//! Request bodies are built outside the timed part; the timed part is the request,
//! including the server's JSON parsing, validation, durable commit and response. As in
//! the store benches, the contacts a request creates are deleted again (over HTTP,
//! untimed) before the next one, so every request meets the preloaded size. One client
//! at a time: for concurrency see `benches/load.rs`.
//!
//! Run (100k contacts, about 3 minutes on 2 cores):
//!     cargo bench --bench http
//! The full standard workload (1M contacts):
//!     CONTACTD_BENCH_CONTACTS=1000000 cargo bench --bench http
//! A quick smoke run:
//!     CONTACTD_BENCH_CONTACTS=5000 cargo bench --bench http -- --warm-up-time 1 --measurement-time 2

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BatchSize, SamplingMode, Throughput};
use tokio::runtime::Runtime;

use common::{Conn, Footprint, Server, Workload, BATCH, STREAM_CLIENT};

/// Connections that delete created contacts between requests, in parallel so that
/// many deletes share a commit.
const CLEANUP_CONNECTIONS: usize = 16;

fn main() {
    let contacts = common::preload_count();
    let server = Server::start();
    let workload = Arc::new(Workload::new(contacts));

    eprintln!(
        "http: preloading {contacts} contacts over HTTP into {}",
        server.data_dir().display()
    );
    let took = {
        let loader = common::runtime("bench-preload");
        common::preload_http(&loader, &server, &workload)
    };
    eprintln!(
        "http: preloaded in {:.1} s ({:.0} contacts/s); {}",
        took.as_secs_f64(),
        contacts as f64 / took.as_secs_f64(),
        Footprint::measure(server.data_dir(), contacts)
    );

    // The client: one thread driving one connection, so a request is never waiting for
    // another client task.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("cannot build the client runtime");
    let mut conn = rt.block_on(server.connect());

    // Defaults for a run of a few minutes; command-line options such as
    // `--measurement-time` override them.
    let mut criterion = common::criterion();
    let mut group = criterion.benchmark_group("http");

    let mut rng = common::rng_for(&[STREAM_CLIENT, 1]);
    let pool = common::read_pool(&workload, &mut rng);
    let mut next = 0;
    group.throughput(Throughput::Elements(1));
    group.bench_function("get_by_external_id", |b| {
        b.iter(|| {
            next = (next + 1) % pool.len();
            rt.block_on(conn.get(&pool[next]))
                .expect("GET of a preloaded contact failed");
        });
    });

    // Write iterations take milliseconds: same iteration count in every sample.
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("batch_upsert_update_1000", |b| {
        b.iter_batched(
            || common::batch_body(workload.updates(&mut rng, BATCH)),
            |body| post(&rt, &mut conn, body),
            BatchSize::PerIteration,
        );
    });

    // Connections that delete the contacts the next two benches create.
    let mut cleanup: Vec<Conn> = rt.block_on(async {
        let mut conns = Vec::with_capacity(CLEANUP_CONNECTIONS);
        for _ in 0..CLEANUP_CONNECTIONS {
            conns.push(server.connect().await);
        }
        conns
    });
    let mut new_contacts = |iters: u64, n: usize| -> Duration {
        let mut timed = Duration::ZERO;
        for _ in 0..iters {
            let contacts = workload.new_contacts(n);
            let ids = common::external_ids(&contacts);
            let body = common::batch_body(contacts);
            let started = Instant::now();
            post(&rt, &mut conn, body);
            timed += started.elapsed();
            cleanup = rt.block_on(common::delete_over_http(std::mem::take(&mut cleanup), ids));
        }
        timed
    };

    group.throughput(Throughput::Elements(1));
    group.bench_function("single_upsert", |b| {
        b.iter_custom(|iters| new_contacts(iters, 1));
    });

    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("batch_upsert_new_1000", |b| {
        b.iter_custom(|iters| new_contacts(iters, BATCH));
    });
    group.finish();
    criterion.final_summary();
    report_size("at the end", &rt, &mut conn, &server);

    // Close the connections before the server drains, then stop the server.
    drop(cleanup);
    drop(conn);
    drop(rt);
    drop(server);
}

fn post(rt: &Runtime, conn: &mut Conn, body: Bytes) {
    rt.block_on(conn.upsert(body))
        .expect("POST /contacts failed");
}

fn report_size(when: &str, rt: &Runtime, conn: &mut Conn, server: &Server) {
    let stored = rt
        .block_on(conn.contact_total())
        .expect("listing contacts failed");
    eprintln!(
        "http: {when}: {}",
        Footprint::measure(server.data_dir(), stored)
    );
}
