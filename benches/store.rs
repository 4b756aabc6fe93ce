//! Store benchmarks: `RedbStore` called directly (no HTTP, no JSON) on one agent
//! preloaded with the standard workload of DESIGN.md.
//!
//! - `store/get_by_external_id`: one point read of a random preloaded contact.
//! - `store/batch_upsert_update_1000`: one request changing 1000 distinct random
//!   preloaded contacts (name, phone, stripe account, attributes).
//! - `store/single_upsert`: one request creating one new contact.
//! - `store/batch_upsert_new_1000`: one request creating 1000 new contacts.
//!
//! Input is generated and validated outside the timed part; every write is a durable
//! commit on the store's writer thread, so the disk sets the pace. The two benches that
//! create contacts delete them again after each request, outside the timed part, so
//! every request meets the store at its preloaded size; the contact count and file
//! size are printed after preloading and at the end.
//!
//! Run (100k contacts, about 3 minutes on 2 cores):
//!     cargo bench --bench store
//! The full standard workload (1M contacts, preloading alone takes about a minute):
//!     CONTACTD_BENCH_CONTACTS=1000000 cargo bench --bench store
//! A quick smoke run:
//!     CONTACTD_BENCH_CONTACTS=5000 cargo bench --bench store -- --warm-up-time 1 --measurement-time 2

#[path = "common/mod.rs"]
mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BatchSize, SamplingMode, Throughput};
use tokio::runtime::Runtime;

use common::{Footprint, Workload, AGENT, BATCH, STREAM_CLIENT};
use contactd::domain::UnknownPolicy;
use contactd::store::{OnDuplicate, RedbStore, Store};

fn main() {
    let contacts = common::preload_count();
    let dir = common::data_dir();
    let rt = common::runtime("bench-store");
    let store = common::open_store(&rt, dir.path());
    let workload = Arc::new(Workload::new(contacts));

    eprintln!(
        "store: preloading {contacts} contacts into {}",
        dir.path().display()
    );
    let took = common::preload_store(&rt, &store, &workload);
    eprintln!(
        "store: preloaded in {:.1} s ({:.0} contacts/s); {}",
        took.as_secs_f64(),
        contacts as f64 / took.as_secs_f64(),
        Footprint::measure(dir.path(), contacts)
    );

    // Defaults for a run of a few minutes; command-line options such as
    // `--measurement-time` override them.
    let mut criterion = common::criterion();
    let mut group = criterion.benchmark_group("store");

    let mut rng = common::rng_for(&[STREAM_CLIENT, 0]);
    let pool = common::read_pool(&workload, &mut rng);
    let mut next = 0;
    group.throughput(Throughput::Elements(1));
    group.bench_function("get_by_external_id", |b| {
        b.iter(|| {
            next = (next + 1) % pool.len();
            let found = store
                .contact(AGENT, &pool[next])
                .expect("reading a contact failed");
            assert!(found.is_some(), "a preloaded contact is missing");
            black_box(found)
        });
    });

    // Write iterations take milliseconds: same iteration count in every sample.
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("batch_upsert_update_1000", |b| {
        b.iter_batched(
            || common::to_inputs(&workload.updates(&mut rng, BATCH)),
            |inputs| upsert(&rt, &store, inputs),
            BatchSize::PerIteration,
        );
    });

    group.throughput(Throughput::Elements(1));
    group.bench_function("single_upsert", |b| {
        b.iter_custom(|iters| upsert_new(&rt, &store, &workload, iters, 1));
    });

    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("batch_upsert_new_1000", |b| {
        b.iter_custom(|iters| upsert_new(&rt, &store, &workload, iters, BATCH));
    });
    group.finish();
    criterion.final_summary();
    report_size("at the end", &store, dir.path());

    store.shutdown();
    drop(store);
}

/// `iters` requests creating `n` new contacts each; only the requests are timed. After
/// each, the new contacts are deleted again (untimed), so every request meets the store
/// at its preloaded size instead of one that grows with the measurement time.
fn upsert_new(
    rt: &Runtime,
    store: &Arc<RedbStore>,
    workload: &Workload,
    iters: u64,
    n: usize,
) -> Duration {
    let mut timed = Duration::ZERO;
    for _ in 0..iters {
        let contacts = workload.new_contacts(n);
        let inputs = common::to_inputs(&contacts);
        let started = Instant::now();
        upsert(rt, store, inputs);
        timed += started.elapsed();
        rt.block_on(common::delete_from_store(
            store,
            common::external_ids(&contacts),
        ));
    }
    timed
}

/// One durable upsert request, waited for.
fn upsert(rt: &Runtime, store: &RedbStore, inputs: Vec<contactd::domain::ContactInput>) {
    let outcome = rt
        .block_on(store.upsert_contacts(
            AGENT.to_owned(),
            inputs,
            OnDuplicate::Update,
            UnknownPolicy::Define.into(),
            1_700_000_000,
        ))
        .expect("upsert failed");
    black_box(outcome);
}

fn report_size(when: &str, store: &RedbStore, dir: &std::path::Path) {
    let stored = store
        .agent(AGENT)
        .expect("reading the agent failed")
        .map_or(0, |agent| agent.contact_count);
    eprintln!("store: {when}: {}", Footprint::measure(dir, stored));
}
