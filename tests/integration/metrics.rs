//! `GET /metrics` from the real process (the recorder is one per process): every family
//! from the start, values after known traffic, admin-only on the main port, keyless on
//! `metrics.listen`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use serde_json::json;

use crate::common::ADMIN_KEY;
use crate::process::{http, Proc};

/// `GET http://addr/metrics` with `key` (if any): status and body.
async fn scrape(addr: &str, key: Option<&str>) -> (StatusCode, String) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let mut req = Request::builder().uri(format!("http://{addr}/metrics"));
    if let Some(key) = key {
        req = req.header("authorization", format!("Bearer {key}"));
    }
    let resp = client
        .request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// The value of the sample `series` (its name and labels exactly as rendered).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

const FAMILIES: &[&str] = &[
    "contactd_http_requests_total",
    "contactd_http_request_duration_seconds_bucket",
    "contactd_rate_limited_requests_total",
    "contactd_writer_queue_depth",
    "contactd_writer_group_size_bucket",
    "contactd_commit_duration_seconds_bucket",
    "contactd_log_sync_duration_seconds_bucket",
    "contactd_checkpoints_total",
    "contactd_checkpoint_duration_seconds_bucket",
    "contactd_index_merges_pending",
    "contactd_contacts",
    "contactd_database_bytes",
    "contactd_log_bytes",
];

#[tokio::test]
async fn metrics_count_known_traffic_and_every_family_is_there_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let proc = Proc::start_with(
        dir.path(),
        Some(ADMIN_KEY),
        &[
            "--metrics-listen",
            "127.0.0.1:0",
            "--rate-limit-auth-failures-per-min",
            "2",
        ],
    );
    let metrics_addr = proc
        .banner
        .iter()
        .find_map(|l| l.strip_prefix("serving /metrics on "))
        .expect("the metrics address is printed")
        .to_owned();
    // Before any request: every family, at zero.
    let (status, text) = scrape(&metrics_addr, None).await;
    assert_eq!(status, StatusCode::OK, "no key on the metrics listener");
    for family in FAMILIES {
        assert!(text.contains(family), "{family} missing:\n{text}");
    }
    let chatbots = r#"contactd_http_requests_total{route="/api/v1/chatbots",status="200"}"#;
    assert_eq!(value(&text, chatbots), Some(0.0));
    // Known traffic: three lists, one missing contact, one write, two wrong keys and
    // then a request refused for them.
    for _ in 0..3 {
        http(&proc.addr, Method::GET, "/api/v1/chatbots", ADMIN_KEY, None).await;
    }
    let contact = "/api/v1/chatbots/default/contacts/nobody";
    http(&proc.addr, Method::GET, contact, ADMIN_KEY, None).await;
    let users = json!({"users": [{"external_id": "u1"}, {"external_id": "u2"}]});
    let (status, _) = http(
        &proc.addr,
        Method::POST,
        "/api/v1/chatbots/default/contacts",
        ADMIN_KEY,
        Some(users),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    for _ in 0..2 {
        http(
            &proc.addr,
            Method::GET,
            "/api/v1/chatbots",
            "oc_live_bad",
            None,
        )
        .await;
    }
    let (status, _) = http(&proc.addr, Method::GET, "/api/v1/chatbots", ADMIN_KEY, None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // Contacts per agent are fresh within 15 s.
    let started = Instant::now();
    let text = loop {
        let (_, text) = scrape(&metrics_addr, None).await;
        if value(&text, r#"contactd_contacts{agent="default"}"#) == Some(2.0) {
            break text;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "{text}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(value(&text, chatbots), Some(3.0));
    let route = "/api/v1/chatbots/{chatbotId}/contacts/{contactId}";
    assert_eq!(
        value(
            &text,
            &format!(r#"contactd_http_requests_total{{route="{route}",status="404"}}"#)
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            r#"contactd_http_requests_total{route="/api/v1/chatbots",status="401"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &text,
            r#"contactd_http_requests_total{route="/api/v1/chatbots",status="429"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            r#"contactd_rate_limited_requests_total{reason="auth_failures"}"#
        ),
        Some(1.0)
    );
    // A real histogram: cumulative buckets, +Inf equal to the count.
    let count = r#"contactd_http_request_duration_seconds_count{route="/api/v1/chatbots"}"#;
    assert_eq!(value(&text, count), Some(6.0));
    let inf =
        r#"contactd_http_request_duration_seconds_bucket{route="/api/v1/chatbots",le="+Inf"}"#;
    assert_eq!(value(&text, inf), Some(6.0));
    assert!(value(&text, "contactd_writer_group_size_count").unwrap() >= 1.0);
    assert!(value(&text, "contactd_log_sync_duration_seconds_count").unwrap() >= 1.0);
    assert!(value(&text, "contactd_database_bytes").unwrap() > 0.0);
}

#[tokio::test]
async fn the_main_port_serves_metrics_to_admin_keys_only() {
    let dir = tempfile::tempdir().unwrap();
    let proc = Proc::start(dir.path(), Some(ADMIN_KEY));
    assert!(
        !proc.banner.iter().any(|l| l.contains("/metrics")),
        "no metrics listener by default"
    );
    let (status, text) = scrape(&proc.addr, Some(ADMIN_KEY)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        text.contains("# TYPE contactd_http_requests_total counter"),
        "{text}"
    );
    let (status, _) = scrape(&proc.addr, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = http(
        &proc.addr,
        Method::POST,
        "/api/v1/keys",
        ADMIN_KEY,
        Some(json!({"name": "bot", "chatbot_id": "default"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let agent_key = body["data"]["key"].as_str().unwrap();
    let (status, _) = scrape(&proc.addr, Some(agent_key)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}
