//! A data file damaged behind the server's back, through the compiled binary: a
//! changed byte in a record is detected, a damaged page fails only the reads that touch
//! it, writes are refused once damage is seen (also after a restart or a kill -9), an
//! export that meets it breaks off, `contactd check` reads it without changing it, and
//! `contactd salvage` copies what can still be read.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};

use crate::common::ADMIN_KEY;
use crate::process::{http, run, text, Proc};

const CONTACTS: &str = "/api/v1/chatbots/default/contacts";
const PEOPLE: usize = 3000;
const PAGE: usize = 4096;

/// The note that marks contact `i`: upper case, so that only its record holds these
/// bytes (the sort index keeps text lower-cased).
fn note(i: usize) -> String {
    format!("NOTE-{i:05}-ABCDEFGH")
}

/// A data dir of [`PEOPLE`] contacts `c00000`…, written by a server that then stopped.
async fn populated() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let proc = Proc::start(dir.path(), Some(ADMIN_KEY));
    for batch in 0..PEOPLE / 1000 {
        let users: Vec<Value> = (batch * 1000..(batch + 1) * 1000)
            .map(|i| {
                json!({"external_id": format!("c{i:05}"), "name": format!("Person {i}"),
                       "email": format!("p{i}@example.com"), "custom_attributes": {"note": note(i)}})
            })
            .collect();
        let (status, body) = http(
            &proc.addr,
            Method::POST,
            CONTACTS,
            ADMIN_KEY,
            Some(json!({ "users": users })),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert!(proc.terminate().success());
    dir
}

fn db_file(dir: &Path) -> PathBuf {
    dir.join(contactd::store::DB_FILE)
}

/// Where `needle` occurs in the file (the live record, and stale copies in freed
/// pages).
fn occurrences(bytes: &[u8], needle: &str) -> Vec<usize> {
    let needle = needle.as_bytes();
    bytes
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect()
}

/// Flips one bit inside every copy of `needle`.
fn flip_a_byte(dir: &Path, needle: &str) {
    let path = db_file(dir);
    let mut bytes = std::fs::read(&path).unwrap();
    let found = occurrences(&bytes, needle);
    assert!(!found.is_empty(), "{needle} is not in the file");
    for at in found {
        bytes[at + 7] ^= 0x04;
    }
    std::fs::write(&path, bytes).unwrap();
}

/// Overwrites every page holding `needle` with noise.
fn wreck_pages(dir: &Path, needle: &str) {
    let path = db_file(dir);
    let mut bytes = std::fs::read(&path).unwrap();
    let found = occurrences(&bytes, needle);
    assert!(!found.is_empty(), "{needle} is not in the file");
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for at in found {
        let page = at / PAGE * PAGE;
        for byte in &mut bytes[page..page + PAGE] {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte = state as u8;
        }
    }
    std::fs::write(&path, bytes).unwrap();
}

async fn get(proc: &Proc, path: &str) -> (StatusCode, Value) {
    http(&proc.addr, Method::GET, path, ADMIN_KEY, None).await
}

async fn healthz(proc: &Proc) -> (StatusCode, Value) {
    http(&proc.addr, Method::GET, "/healthz", "", None).await
}

async fn write_one(proc: &Proc) -> (StatusCode, Value) {
    http(
        &proc.addr,
        Method::POST,
        CONTACTS,
        ADMIN_KEY,
        Some(json!({"users": [{"external_id": "new"}]})),
    )
    .await
}

fn contact(i: usize) -> String {
    format!("{CONTACTS}/c{i:05}")
}

#[tokio::test]
async fn a_changed_byte_in_a_record_is_detected_not_served() {
    let dir = populated().await;
    flip_a_byte(dir.path(), &note(42));
    let proc = Proc::start(dir.path(), None);
    assert_eq!(healthz(&proc).await.0, StatusCode::OK);
    assert_eq!(
        write_one(&proc).await.0,
        StatusCode::OK,
        "no damage seen yet"
    );
    let (status, body) = get(&proc, &contact(42)).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body, json!({"message": "Internal server error"}));
    let (status, body) = get(&proc, &contact(43)).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "its neighbour in the page still reads"
    );
    assert_eq!(body["data"]["custom_attributes"]["note"], note(43));

    let (status, body) = write_one(&proc).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("damaged"),
        "{body}"
    );
    let (status, body) = healthz(&proc).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["status"], "damaged");
    assert!(body["failed_reads"].as_u64().unwrap() >= 1);

    // Remembered across a restart.
    assert!(proc.terminate().success());
    let proc = Proc::start(dir.path(), None);
    assert_eq!(healthz(&proc).await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(write_one(&proc).await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(get(&proc, &contact(7)).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_damaged_page_fails_only_the_reads_that_touch_it_also_after_kill_9() {
    let dir = populated().await;
    wreck_pages(dir.path(), &note(1500));
    let proc = Proc::start(dir.path(), None);
    assert_eq!(
        get(&proc, &contact(1500)).await.0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    for i in [0, 1000, 2999] {
        assert_eq!(get(&proc, &contact(i)).await.0, StatusCode::OK, "c{i:05}");
    }
    // A page is found through the counts per block of 1024 contact numbers and then
    // walks that block's records: only pages whose walk crosses the damaged page (the
    // contacts around number 1501, in the block of numbers 1025–2048) fail.
    let mut pages_read = 0;
    for page in 1..=30 {
        let (status, _) = get(&proc, &format!("{CONTACTS}?page={page}&per_page=100")).await;
        let (first, last) = ((page - 1) * 100 + 1, page * 100);
        if last < 1025 || first > 2048 {
            assert_eq!(status, StatusCode::OK, "page {page}");
        }
        if status == StatusCode::OK {
            pages_read += 1;
        } else {
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        }
    }
    assert!(pages_read >= 20, "only {pages_read} of 30 pages read");
    assert_eq!(write_one(&proc).await.0, StatusCode::SERVICE_UNAVAILABLE);

    // An unclean stop: the file still opens, and what is readable still is.
    drop(proc);
    let proc = Proc::start(dir.path(), None);
    assert_eq!(get(&proc, &contact(0)).await.0, StatusCode::OK);
    assert_eq!(
        get(&proc, &contact(1500)).await.0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(write_one(&proc).await.0, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn an_export_that_meets_damage_breaks_off_and_the_cli_exits_non_zero() {
    let dir = populated().await;
    wreck_pages(dir.path(), &note(1500));
    let proc = Proc::start(dir.path(), None);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    for format in ["csv", "json", "ndjson"] {
        let req = Request::builder()
            .uri(format!(
                "http://{}{CONTACTS}/export?format={format}",
                proc.addr
            ))
            .header("authorization", format!("Bearer {ADMIN_KEY}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        // The stream starts well, then breaks off; when it breaks off before the head
        // went out, the connection closes without an answer. Never a complete body.
        match client.request(req).await {
            Ok(resp) => {
                assert_eq!(resp.status(), StatusCode::OK, "the stream starts well");
                assert!(
                    resp.into_body().collect().await.is_err(),
                    "{format}: the body must break off, not end well-formed"
                );
            }
            Err(err) => assert!(format!("{err:?}").contains("IncompleteMessage"), "{err:?}"),
        }
        let out = dir.path().join(format!("people.{format}"));
        let done = run(
            &[
                "export",
                "--agent",
                "default",
                "--format",
                format,
                "--output",
                out.to_str().unwrap(),
            ],
            dir.path(),
            &[
                ("CONTACTD_URL", &format!("http://{}", proc.addr)),
                ("CONTACTD_KEY", ADMIN_KEY),
            ],
        );
        assert_ne!(done.status.code(), Some(0), "{format}");
        assert!(
            text(&done.stderr).contains("broke off"),
            "{}",
            text(&done.stderr)
        );
        assert!(!out.exists(), "{format}: no file that looks complete");
        let partial = dir.path().join(format!("people.{format}.partial"));
        assert!(!partial.exists());
    }
}

#[tokio::test]
async fn check_reads_a_damaged_file_without_changing_it() {
    let dir = populated().await;
    wreck_pages(dir.path(), &note(1500));
    let before = std::fs::read(db_file(dir.path())).unwrap();
    let d = dir.path().to_str().unwrap();
    let out = run(&["--data-dir", d, "check"], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(printed.contains("damaged: contacts"), "{printed}");
    assert!(printed.contains("contactd salvage"), "{printed}");
    assert_eq!(
        std::fs::read(db_file(dir.path())).unwrap(),
        before,
        "unchanged"
    );
    let out = run(&["--data-dir", d, "check", "--json"], dir.path(), &[]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["damage_count"].as_u64().unwrap() >= 1);
    // Every contact outside the damaged page was read and checked.
    assert!(
        report["contacts"].as_u64().unwrap() >= PEOPLE as u64 - 40,
        "{report}"
    );
}

#[tokio::test]
async fn salvage_copies_what_can_be_read_and_reports_what_was_lost() {
    let dir = populated().await;
    wreck_pages(dir.path(), &note(1500));
    let d = dir.path().to_str().unwrap();
    let rescued = dir.path().join("rescued");
    let out = run(
        &[
            "--data-dir",
            d,
            "salvage",
            "--output",
            rescued.to_str().unwrap(),
            "--json",
        ],
        dir.path(),
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let lost = report["lost_contacts"].as_u64().unwrap();
    assert!((1..=40).contains(&lost), "{report}");
    assert_eq!(report["contacts"].as_u64().unwrap(), PEOPLE as u64 - lost);
    assert!(report["lost"].to_string().contains("c01500"), "{report}");

    // The new data dir is whole: same numbers and fields, checked clean, writable.
    let out = run(
        &["--data-dir", rescued.to_str().unwrap(), "check"],
        dir.path(),
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stdout));
    let proc = Proc::start(&rescued, None);
    let (_, original) = get(&proc, &contact(7)).await;
    assert_eq!(original["data"]["id"], "contact_8");
    assert_eq!(original["data"]["custom_attributes"]["note"], note(7));
    let (_, listed) = get(&proc, &format!("{CONTACTS}?per_page=10")).await;
    assert_eq!(listed["total"], PEOPLE as u64 - lost);
    let (_, found) = get(
        &proc,
        &format!("{CONTACTS}?q=person&filter[email]=P2999@Example.com"),
    )
    .await;
    assert_eq!(found["data"][0]["external_id"], "c02999");
    assert_eq!(write_one(&proc).await.0, StatusCode::OK);
    let (_, created) = get(&proc, &format!("{CONTACTS}/new")).await;
    assert_eq!(created["data"]["id"], format!("contact_{}", PEOPLE + 1));
}

#[tokio::test]
async fn salvage_of_a_healthy_dir_loses_nothing_and_of_noise_reads_nothing() {
    let dir = populated().await;
    let d = dir.path().to_str().unwrap();
    let copy = dir.path().join("copy");
    let out = run(
        &[
            "--data-dir",
            d,
            "salvage",
            "--output",
            copy.to_str().unwrap(),
        ],
        dir.path(),
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("nothing was lost"));
    let out = run(
        &[
            "--data-dir",
            d,
            "salvage",
            "--output",
            copy.to_str().unwrap(),
        ],
        dir.path(),
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "the output must be new or empty"
    );

    let noise = tempfile::tempdir().unwrap();
    std::fs::write(db_file(noise.path()), vec![0x5A; 64 * 1024]).unwrap();
    let out = run(
        &[
            "--data-dir",
            noise.path().to_str().unwrap(),
            "salvage",
            "--output",
            noise.path().join("out").to_str().unwrap(),
        ],
        noise.path(),
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
}
