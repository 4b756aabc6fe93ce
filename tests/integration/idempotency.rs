//! `Idempotency-Key`: a retried write replays its first answer and does not run again;
//! the key on another request is 422; copies sent at once run once.

use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{contact_path, TestServer, CONTACTS};

/// A request with the admin key, `Idempotency-Key: idem` and a raw body: the status,
/// its `Idempotent-Replayed` header and the body.
async fn send(
    s: &TestServer,
    method: Method,
    path: &str,
    idem: &str,
    content_type: &str,
    body: &str,
) -> (StatusCode, Option<String>, Value) {
    let (status, headers, bytes) = s
        .send_bytes(
            method,
            path,
            &[("idempotency-key", idem), ("content-type", content_type)],
            body.as_bytes().to_vec(),
        )
        .await;
    let replayed = headers
        .get("idempotent-replayed")
        .map(|v| v.to_str().unwrap().to_owned());
    (
        status,
        replayed,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

const JSON: &str = "application/json";

#[tokio::test]
async fn a_retried_write_replays_its_first_answer_and_runs_once() {
    let s = TestServer::start().await;
    // An agent with a generated id: running twice would make two.
    let (status, replayed, first) = send(
        &s,
        Method::POST,
        "/api/v1/chatbots",
        "k-1",
        JSON,
        r#"{"name":"Bot","x":[1,2]}"#,
    )
    .await;
    assert_eq!((status, replayed), (StatusCode::OK, None));
    // The same request, its JSON written differently.
    let (status, replayed, again) = send(
        &s,
        Method::POST,
        "/api/v1/chatbots",
        "k-1",
        JSON,
        "{ \"x\": [1, 2],\n  \"name\": \"Bot\" }",
    )
    .await;
    assert_eq!(
        (status, replayed.as_deref()),
        (StatusCode::OK, Some("true"))
    );
    assert_eq!(again, first, "the first answer, the same generated id");
    let agents = s.get("/api/v1/chatbots").await;
    let bots = agents.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["name"] == "Bot")
        .count();
    assert_eq!(bots, 1, "it ran once");
    // Another request with that key is 422, and changes nothing.
    let (status, _, body) = send(
        &s,
        Method::POST,
        "/api/v1/chatbots",
        "k-1",
        JSON,
        r#"{"name":"Other"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key"),
        "{body}"
    );
    // The same key under another API key is another key; reads ignore the header.
    let agent_key = s.agent_with_key("other").await;
    let r = s
        .with_headers(
            Method::GET,
            "/api/v1/chatbots",
            &agent_key,
            &[("idempotency-key", "k-1")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers.get("idempotent-replayed").is_none());
    let users = br#"{"users":[{"external_id":"u1","name":"A"}]}"#;
    let headers = [("idempotency-key", "k-1"), ("content-type", JSON)];
    let path = "/api/v1/chatbots/other/contacts";
    for replayed in [None, Some("true")] {
        let r = s
            .with_headers_and_body(Method::POST, path, &agent_key, &headers, users.to_vec())
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let got = r
            .headers
            .get("idempotent-replayed")
            .map(|v| v.to_str().unwrap());
        assert_eq!(got, replayed, "the agent key's own k-1");
    }
}

#[tokio::test]
async fn refusals_replay_too_and_deletes_answer_as_the_first_time() {
    let s = TestServer::start().await;
    let bad = r#"{"users":[{"external_id":"u1","email":"not-an-email"}]}"#;
    for replayed in [None, Some("true")] {
        let (status, again, body) = send(&s, Method::POST, CONTACTS, "bad", JSON, bad).await;
        assert_eq!(
            (status, again.as_deref()),
            (StatusCode::BAD_REQUEST, replayed)
        );
        assert_eq!(body["issues"][0]["field"], "users[0].email");
    }
    s.upsert(json!([{"external_id": "u2"}])).await;
    for replayed in [None, Some("true")] {
        let (status, again, body) =
            send(&s, Method::DELETE, &contact_path("u2"), "del", JSON, "").await;
        assert_eq!(
            (status, again.as_deref()),
            (StatusCode::OK, replayed),
            "{body}"
        );
        assert_eq!(body["data"]["external_id"], "u2");
    }
    // A key that is not 1 to 255 visible characters is 400 naming the header.
    let long = "k".repeat(256);
    let (status, _, body) = send(&s, Method::POST, CONTACTS, &long, JSON, bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["issues"][0]["field"], "Idempotency-Key");
}

#[tokio::test]
async fn an_import_sent_again_is_answered_from_the_first() {
    let s = TestServer::start().await;
    let csv = "external_id,name\nu1,Ada\nu2,Bob\n";
    let path = format!("{CONTACTS}/import");
    let (status, replayed, first) = send(&s, Method::POST, &path, "imp", "text/csv", csv).await;
    assert_eq!((status, replayed), (StatusCode::OK, None), "{first}");
    let (status, replayed, again) = send(&s, Method::POST, &path, "imp", "text/csv", csv).await;
    assert_eq!(
        (status, replayed.as_deref()),
        (StatusCode::OK, Some("true"))
    );
    assert_eq!(again, first, "the report of the first run");
    let other = "external_id,name\nu3,Cy\n";
    let (status, _, _) = send(&s, Method::POST, &path, "imp", "text/csv", other).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(s.get(CONTACTS).await.body["total"], 2);
}

#[tokio::test]
async fn copies_sent_at_once_run_once() {
    let s = TestServer::start().await;
    let body = r#"{"name":"Twin"}"#;
    let one = send(&s, Method::POST, "/api/v1/chatbots", "twin", JSON, body);
    let two = send(&s, Method::POST, "/api/v1/chatbots", "twin", JSON, body);
    let ((s1, r1, b1), (s2, r2, b2)) = tokio::join!(one, two);
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK));
    assert_eq!(b1, b2, "one agent, one answer");
    assert_eq!(
        [r1, r2].iter().filter(|r| r.is_some()).count(),
        1,
        "one ran, the other got its answer"
    );
    let agents = s.get("/api/v1/chatbots").await;
    let twins = agents.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["name"] == "Twin")
        .count();
    assert_eq!(twins, 1);
}
