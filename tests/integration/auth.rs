//! API.md "Authentication": every row of its table, and scope isolation.

use hyper::{Method, StatusCode};
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn missing_or_non_bearer_header_is_401_no_api_key() {
    let s = TestServer::start().await;
    let r = s.raw(Method::GET, CONTACTS, None, None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.body, json!({"message": "No API key provided."}));
    for header in [format!("Basic {ADMIN_KEY}"), format!("Token {ADMIN_KEY}")] {
        let r = s
            .raw(Method::GET, CONTACTS, Some(&header), None, None)
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{header}");
        assert_eq!(r.message(), "No API key provided.");
    }
}

#[tokio::test]
async fn unknown_key_is_401_invalid_api_key() {
    let s = TestServer::start().await;
    let r = s
        .call_as(
            "oc_live_00000000000000000000000000000000",
            Method::GET,
            CONTACTS,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.body, json!({"message": "Invalid API key."}));
}

#[tokio::test]
async fn unknown_chatbot_is_404() {
    let s = TestServer::start().await;
    for path in [
        "/api/v1/chatbots/nope",
        "/api/v1/chatbots/nope/contacts",
        "/api/v1/chatbots/nope/contacts/x",
    ] {
        let r = s.get(path).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(r.body, json!({"message": "Resource not found"}));
    }
    let r = s
        .post("/api/v1/chatbots/nope/contacts", json!({"users": [{}]}))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn agent_key_cannot_reach_another_agent() {
    let s = TestServer::start().await;
    let key_a = s.agent_with_key("a").await;
    s.agent_with_key("b").await;
    s.post(
        "/api/v1/chatbots/b/contacts",
        json!({"users": [{"external_id": "secret", "email": "s@b.co"}]}),
    )
    .await;
    let b = "/api/v1/chatbots/b";
    let attempts = [
        (Method::GET, b.to_owned(), None),
        (Method::GET, format!("{b}/contacts"), None),
        (Method::GET, format!("{b}/contacts/secret"), None),
        (Method::GET, format!("{b}/contacts/contact_1"), None),
        (
            Method::POST,
            format!("{b}/contacts"),
            Some(json!({"users": [{"external_id": "x"}]})),
        ),
        (
            Method::PATCH,
            format!("{b}/contacts/secret"),
            Some(json!({"name": "pwned"})),
        ),
        (Method::DELETE, format!("{b}/contacts/secret"), None),
    ];
    for (method, path, body) in attempts {
        let r = s.call_as(&key_a, method.clone(), &path, body).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{method} {path}");
    }
    let r = s.get("/api/v1/chatbots/b/contacts/secret").await;
    assert_eq!(
        r.body["data"]["name"],
        json!(null),
        "b's contact is untouched"
    );
    assert_eq!(s.get("/api/v1/chatbots/b/contacts").await.body["total"], 1);
    let r = s
        .call_as(&key_a, Method::GET, "/api/v1/chatbots", None)
        .await;
    let ids: Vec<_> = r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].clone())
        .collect();
    assert_eq!(ids, [json!("a")]);
}

#[tokio::test]
async fn agent_key_works_on_its_own_agent() {
    let s = TestServer::start().await;
    let key = s.agent_with_key("a").await;
    let r = s
        .call_as(
            &key,
            Method::POST,
            "/api/v1/chatbots/a/contacts",
            Some(json!({"users": [{"external_id": "u"}]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = s
        .call_as(&key, Method::GET, "/api/v1/chatbots/a/contacts/u", None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn agent_key_on_admin_endpoint_is_403() {
    let s = TestServer::start().await;
    let key = s.agent_with_key("a").await;
    let attempts = [
        (Method::POST, "/api/v1/chatbots", Some(json!({"name": "x"}))),
        (Method::DELETE, "/api/v1/chatbots/a", None),
        (Method::GET, "/api/v1/keys", None),
        (Method::POST, "/api/v1/keys", Some(json!({"name": "x"}))),
        (Method::DELETE, "/api/v1/keys/key_x", None),
    ];
    for (method, path, body) in attempts {
        let r = s.call_as(&key, method.clone(), path, body).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{method} {path}");
        assert_eq!(
            r.body,
            json!({"message": "This API key is not allowed to do that."})
        );
    }
    assert_eq!(s.get("/api/v1/chatbots/a").await.status, StatusCode::OK);
}

#[tokio::test]
async fn emails_are_unique_per_agent_only() {
    let s = TestServer::start().await;
    s.agent_with_key("b").await;
    s.upsert(json!([{"external_id": "u", "email": "same@x.co"}]))
        .await;
    let r = s
        .post(
            "/api/v1/chatbots/b/contacts",
            json!({"users": [{"external_id": "v", "email": "SAME@x.co"}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
}
