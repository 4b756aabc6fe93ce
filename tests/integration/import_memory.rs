//! Imports in bounded memory whatever their shape, measured as the server process's
//! peak resident memory (`VmHWM` in `/proc`): large files, a record longer than any
//! valid row (plain and gzip, in every format), gzip bombs, and large valid rows.

use std::io::Write;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use serde_json::Value;

use crate::common::ADMIN_KEY;
use crate::process::{peak_rss_bytes, Proc};

/// The most a server may take for any import.
const RSS_LIMIT: u64 = 150 << 20;

/// POSTs `body` to agent `agent`'s import endpoint; the status and the parsed answer.
async fn post_import(
    proc: &Proc,
    agent: &str,
    key: &str,
    query: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(format!(
            "http://{}/api/v1/chatbots/{agent}/contacts/import{query}",
            proc.addr
        ))
        .header("authorization", format!("Bearer {key}"));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp = client
        .request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn assert_bounded(proc: &Proc, what: &str) {
    let peak = peak_rss_bytes(proc.child.id());
    assert!(
        peak < RSS_LIMIT,
        "the server's peak RSS was {} MiB after {what}",
        peak >> 20
    );
}

/// A gzip stream of `head`, `n` MiB of `fill`, then `tail`: members concatenated (as
/// gzip allows), the MiB compressed once and repeated, so a test builds a stream of
/// gigabytes in milliseconds.
fn gzip_of(head: &[u8], fill: u8, mib: usize, tail: &[u8]) -> Vec<u8> {
    let member = |bytes: &[u8]| {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    };
    let block = member(&vec![fill; 1 << 20]);
    let mut out = member(head);
    for _ in 0..mib {
        out.extend_from_slice(&block);
    }
    out.extend(member(tail));
    out
}

#[tokio::test]
async fn a_record_longer_than_any_valid_row_is_refused_as_it_streams() {
    let dir = tempfile::tempdir().unwrap();
    let proc = Proc::start(dir.path(), Some(ADMIN_KEY));
    let http = crate::process::http;
    let bot = serde_json::json!({"id": "bot", "name": "Bot"});
    let made = http(
        &proc.addr,
        Method::POST,
        "/api/v1/chatbots",
        ADMIN_KEY,
        Some(bot),
    )
    .await;
    assert_eq!(made.0, StatusCode::OK);
    let key = serde_json::json!({"name": "bot", "chatbot_id": "bot"});
    let (_, key) = http(
        &proc.addr,
        Method::POST,
        "/api/v1/keys",
        ADMIN_KEY,
        Some(key),
    )
    .await;
    let agent_key = key["data"]["key"].as_str().unwrap().to_owned();
    // One 300 MiB cell: gzip CSV and NDJSON with the admin key, plain JSON and CSV
    // with an agent key.
    let cases: [(&str, &[u8], &[u8], bool); 4] = [
        ("text/csv", b"external_id,name\nx,", b"\n", true),
        (
            "application/x-ndjson",
            b"{\"external_id\":\"x\",\"name\":\"",
            b"\"}\n",
            true,
        ),
        (
            "application/json",
            b"[{\"external_id\":\"x\",\"name\":\"",
            b"\"}]",
            false,
        ),
        ("text/csv", b"external_id,name\nok,Sam\nx,", b"\n", false),
    ];
    for (content_type, head, tail, gzip) in cases {
        let (agent, key) = if gzip {
            ("default", ADMIN_KEY)
        } else {
            ("bot", agent_key.as_str())
        };
        let (status, body) = if gzip {
            post_import(
                &proc,
                agent,
                key,
                "",
                &[("content-type", content_type), ("content-encoding", "gzip")],
                gzip_of(head, b'a', 300, tail),
            )
            .await
        } else {
            let mut bytes = head.to_vec();
            bytes.resize(head.len() + (300 << 20), b'a');
            bytes.extend_from_slice(tail);
            post_import(
                &proc,
                agent,
                key,
                "",
                &[("content-type", content_type)],
                bytes,
            )
            .await
        };
        assert_eq!(
            status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{content_type}: {body}"
        );
        let message = body["message"].as_str().unwrap();
        assert!(message.contains("is longer than"), "{message}");
        assert_bounded(&proc, content_type);
    }
    let (status, body) = crate::process::http(
        &proc.addr,
        Method::GET,
        "/api/v1/chatbots/default/contacts",
        ADMIN_KEY,
        None,
    )
    .await;
    assert_eq!(
        (status, &body["total"]),
        (StatusCode::OK, &Value::from(0)),
        "nothing imported"
    );
}

#[tokio::test]
async fn a_gzip_bomb_is_refused_once_it_passes_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let proc = Proc::start_with(
        dir.path(),
        Some(ADMIN_KEY),
        &["--import-max-bytes", "67108864"],
    );
    // 2 GiB of zeros (2 MB compressed), and 200 MiB of valid rows (33 MB compressed):
    // both stop at 64 MiB.
    let zeros = gzip_of(b"", 0, 2048, b"");
    let rows = {
        let line = b"external_id,name\n".iter().copied();
        let mut mib = Vec::with_capacity(1 << 20);
        let mut i = 0;
        while mib.len() < (1 << 20) - 32 {
            mib.extend_from_slice(format!("r{i},Someone\n").as_bytes());
            i += 1;
        }
        let mut out = gzip_of(&line.collect::<Vec<_>>(), b'\n', 0, b"");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&mib).unwrap();
        let member = enc.finish().unwrap();
        for _ in 0..200 {
            out.extend_from_slice(&member);
        }
        out
    };
    for bomb in [zeros, rows] {
        let (status, body) = post_import(
            &proc,
            "default",
            ADMIN_KEY,
            "",
            &[("content-type", "text/csv"), ("content-encoding", "gzip")],
            bomb,
        )
        .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
        assert!(body["message"]
            .as_str()
            .unwrap()
            .contains("import.max_bytes"));
        assert_bounded(&proc, "a gzip bomb");
    }
    let spools: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("import-"))
        .collect();
    assert!(spools.is_empty(), "the spool file is removed");
}

#[tokio::test]
async fn large_valid_rows_are_written_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    // What is written is kept in the page cache up to cache_mb: keep that small, to
    // measure what the import itself takes.
    let proc = Proc::start_with(dir.path(), Some(ADMIN_KEY), &["--cache-mb", "16"]);
    // 150 rows of 100 attributes of 4096 four-byte characters: 1.6 MB a row, 240 MB
    // in all, every value valid.
    let value = "\u{1F600}".repeat(4096);
    let header: Vec<String> = (0..100).map(|i| format!("a{i}")).collect();
    let row: Vec<&str> = vec![value.as_str(); 100];
    let row = row.join(",");
    let mut csv = format!("external_id,{}\n", header.join(","));
    for i in 0..150 {
        csv.push_str(&format!("big{i},{row}\n"));
    }
    let (status, body) = post_import(
        &proc,
        "default",
        ADMIN_KEY,
        "",
        &[("content-type", "text/csv")],
        csv.into_bytes(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["created"], 150, "{body}");
    assert_bounded(&proc, "150 large rows");
}

#[tokio::test]
async fn a_200_mb_import_stays_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let proc = Proc::start(dir.path(), Some(ADMIN_KEY));
    // 20,000 rows of 10 KB (four 2500-character cells; a text value may have 4096),
    // keyed by 1000 contacts that exist, so with on_duplicate=skip the server parses
    // and checks every row but writes nothing.
    let mut seed = String::from("external_id,name\n");
    for i in 0..1000 {
        seed.push_str(&format!("k{i},K {i}\n"));
    }
    let note = "x".repeat(2500);
    let mut body = String::with_capacity(205_000_000);
    body.push_str("external_id,n1,n2,n3,n4\n");
    for i in 0..20_000 {
        body.push_str(&format!("k{},{note},{note},{note},{note}\n", i % 1000));
    }
    assert!(body.len() > 200_000_000);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let mut reports = Vec::new();
    for (query, bytes) in [
        ("", seed.into_bytes()),
        ("?on_duplicate=skip", body.into_bytes()),
    ] {
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!(
                "http://{}/api/v1/chatbots/default/contacts/import{query}",
                proc.addr
            ))
            .header("authorization", format!("Bearer {ADMIN_KEY}"))
            .header("content-type", "text/csv")
            .body(Full::new(Bytes::from(bytes)))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        reports.push(serde_json::from_slice::<Value>(&bytes).unwrap());
    }
    assert_eq!(reports[0]["data"]["created"], 1000, "{}", reports[0]);
    assert_eq!(
        reports[1]["data"]["skipped"], 20_000,
        "{}",
        reports[1]["data"]["errors"][0]
    );
    let peak = peak_rss_bytes(proc.child.id());
    assert!(
        peak < 150 * 1024 * 1024,
        "the server's peak RSS was {} MiB for a 200 MB upload",
        peak / (1024 * 1024)
    );
}
