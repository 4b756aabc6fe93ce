//! API.md "API keys" (extension).

use hyper::{Method, StatusCode};
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn created_key_is_shown_once_and_works() {
    let s = TestServer::start().await;
    let r = s.post("/api/v1/keys", json!({"name": "ci"})).await;
    assert_eq!(r.status, StatusCode::OK);
    let data = &r.body["data"];
    let key = data["key"].as_str().unwrap();
    assert!(key.starts_with("oc_live_") && key.len() == 40);
    assert_eq!(data["scope"], "admin");
    assert_eq!(data["chatbot_id"], json!(null));
    assert_eq!(data["prefix"], &key[..12]);
    let list = s.get("/api/v1/keys").await;
    let entries = list.body["data"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert!(entries.iter().all(|k| k.get("key").is_none()));
    assert_eq!(
        s.call_as(key, Method::GET, "/api/v1/keys", None)
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn agent_key_names_its_chatbot() {
    let s = TestServer::start().await;
    let r = s
        .post(
            "/api/v1/keys",
            json!({"name": "bot", "chatbot_id": "default"}),
        )
        .await;
    assert_eq!(r.body["data"]["scope"], "agent");
    assert_eq!(r.body["data"]["chatbot_id"], "default");
}

#[tokio::test]
async fn key_for_unknown_chatbot_or_bad_name_is_400() {
    let s = TestServer::start().await;
    let r = s
        .post("/api/v1/keys", json!({"name": "bot", "chatbot_id": "nope"}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.issue_fields(), ["chatbot_id"]);
    let r = s.post("/api/v1/keys", json!({"name": 3})).await;
    assert_eq!(r.issue_fields(), ["name"]);
}

#[tokio::test]
async fn revoked_key_stops_working_on_the_next_request() {
    let s = TestServer::start().await;
    let r = s.post("/api/v1/keys", json!({"name": "temp"})).await;
    let key = r.body["data"]["key"].as_str().unwrap().to_owned();
    let id = r.body["data"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        s.call_as(&key, Method::GET, CONTACTS, None).await.status,
        StatusCode::OK
    );
    let r = s.delete(&format!("/api/v1/keys/{id}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["data"]["revoked"], true);
    let r = s.call_as(&key, Method::GET, CONTACTS, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.body, json!({"message": "Invalid API key."}));
    assert_eq!(
        s.delete("/api/v1/keys/key_nope").await.status,
        StatusCode::NOT_FOUND
    );
}
