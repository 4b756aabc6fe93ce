//! Bulk import and export (issue 5), over HTTP with the CLI, against an in-process
//! server:
//!
//! 1. `POST /contacts` from one client, 1000 new contacts per request, N contacts: the
//!    batch-upsert throughput the import is compared with, measured in the same run;
//! 2. `contactd import` of a CSV of N other new contacts (the standard workload's
//!    fields; `ltv:number` and `vip:boolean` typed columns) into an empty agent;
//! 3. `contactd export` of that agent in CSV, JSON and NDJSON.
//!
//! N is `CONTACTD_BENCH_CONTACTS` (default 100000; the figure is 1000000).
//! The CLI is the release binary cargo builds for this bench, run as its own process,
//! one request at a time, as a user would run it.
//!
//! Run: `cargo bench --bench bulk`, or
//! `CONTACTD_BENCH_CONTACTS=1000000 cargo bench --bench bulk` for the full figure.

#[path = "common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{batch_body, Footprint, Server, Workload, BATCH};

const CLI: &str = env!("CARGO_BIN_EXE_contactd");

fn main() {
    let n = common::preload_count();
    let server = Server::start();
    let rt = common::runtime("bulk-client");
    // Nothing preloaded: `new_contacts` hands out fresh contacts from index 0 on.
    let workload = Arc::new(Workload::new(0));
    let url = format!("http://{}", server.addr);

    let batches = n.div_ceil(BATCH as u64);
    let posted = timed(|| {
        rt.block_on(async {
            let mut conn = server.connect().await;
            for _ in 0..batches {
                let body = batch_body(workload.new_contacts(BATCH));
                conn.upsert(body).await.expect("a batch upsert failed");
            }
        });
    });
    let post_rate = (batches * BATCH as u64) as f64 / posted.as_secs_f64();
    println!(
        "bulk: POST /contacts, 1 client, 1000/request: {} contacts in {:.1} s = {post_rate:.0} contacts/s",
        batches * BATCH as u64,
        posted.as_secs_f64()
    );

    let file = server.data_dir().join("bench-import.csv");
    write_csv(&file, &workload, n);
    let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    rt.block_on(async {
        let mut conn = server.connect().await;
        conn.create_agent("imported")
            .await
            .expect("cannot create the agent");
    });
    let imported = timed(|| {
        cli(
            &["import", path(&file), "--agent", "imported"],
            &url,
            &server.admin_key,
        );
    });
    let import_rate = n as f64 / imported.as_secs_f64();
    println!(
        "bulk: contactd import, CSV of {n} contacts ({:.0} MB) into an empty agent: {:.1} s = {import_rate:.0} contacts/s = {:.0}% of POST /contacts",
        size as f64 / 1e6,
        imported.as_secs_f64(),
        100.0 * import_rate / post_rate
    );

    for format in ["csv", "json", "ndjson"] {
        let out = server.data_dir().join(format!("bench-export.{format}"));
        let took = timed(|| {
            cli(
                &[
                    "export",
                    "--agent",
                    "imported",
                    "--format",
                    format,
                    "--output",
                    path(&out),
                ],
                &url,
                &server.admin_key,
            );
        });
        let bytes = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
        println!(
            "bulk: contactd export --format {format}: {n} contacts ({:.0} MB) in {:.2} s = {:.0} contacts/s",
            bytes as f64 / 1e6,
            took.as_secs_f64(),
            n as f64 / took.as_secs_f64()
        );
        let _ = std::fs::remove_file(&out);
    }
    let _ = std::fs::remove_file(&file);
    let peak = common::peak_rss_bytes().map_or(0, |b| b / (1024 * 1024));
    println!(
        "bulk: peak RSS {peak} MiB (server and driver; the CLI runs as its own process); {}",
        Footprint::measure(server.data_dir(), 2 * n)
    );
}

fn timed(f: impl FnOnce()) -> Duration {
    let started = Instant::now();
    f();
    started.elapsed()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

/// Runs the CLI against the server; it must succeed.
fn cli(args: &[&str], url: &str, key: &str) {
    let out = Command::new(CLI)
        .args(args)
        .env("CONTACTD_URL", url)
        .env("CONTACTD_KEY", key)
        .env("CONTACTD_LOG_LEVEL", "warn")
        .output()
        .expect("cannot run the contactd binary");
    assert!(
        out.status.success(),
        "contactd {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `n` new contacts of the standard workload as a CSV file.
fn write_csv(file: &Path, workload: &Workload, n: u64) {
    let mut writer = csv::Writer::from_path(file).expect("cannot write the CSV");
    writer
        .write_record([
            "external_id",
            "name",
            "email",
            "phonenumber",
            "stripe_accounts",
            "plan",
            "ltv:number",
            "vip:boolean",
        ])
        .expect("cannot write the CSV");
    let mut left = n;
    while left > 0 {
        let take = left.min(BATCH as u64);
        for c in workload.new_contacts(take as usize) {
            let text = |v: &serde_json::Value| match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => String::new(),
                other => other.to_string(),
            };
            let attrs = &c["custom_attributes"];
            writer
                .write_record([
                    text(&c["external_id"]),
                    text(&c["name"]),
                    text(&c["email"]),
                    text(&c["phonenumber"]),
                    c["stripe_accounts"].to_string(),
                    text(&attrs["plan"]),
                    text(&attrs["ltv"]),
                    text(&attrs["vip"]),
                ])
                .expect("cannot write the CSV");
        }
        left -= take;
    }
    writer.flush().expect("cannot write the CSV");
}
