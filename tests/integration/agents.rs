//! API.md "Agents".

use hyper::{Method, StatusCode};
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn first_run_creates_the_default_agent() {
    let s = TestServer::start().await;
    let r = s.get("/api/v1/chatbots/default").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["data"]["id"], "default");
}

#[tokio::test]
async fn create_with_chosen_id_and_get_it() {
    let s = TestServer::start().await;
    let r = s
        .post(
            "/api/v1/chatbots",
            json!({"id": "bot_1-A", "name": "Support"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.message(), "Success");
    let data = &r.body["data"];
    assert_eq!(
        (data["id"].as_str(), data["name"].as_str()),
        (Some("bot_1-A"), Some("Support"))
    );
    assert!(data["created_at"].as_i64().unwrap() > 1_700_000_000);
    let r = s.get("/api/v1/chatbots/bot_1-A").await;
    assert_eq!(r.body["data"]["name"], "Support");
}

#[tokio::test]
async fn create_without_id_generates_one() {
    let s = TestServer::start().await;
    let r = s.post("/api/v1/chatbots", json!({"name": "Sales"})).await;
    assert_eq!(r.status, StatusCode::OK);
    let id = r.body["data"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        s.get(&format!("/api/v1/chatbots/{id}")).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn taken_id_is_409_chatbot_already_exists() {
    let s = TestServer::start().await;
    s.post("/api/v1/chatbots", json!({"id": "x", "name": "X"}))
        .await;
    let r = s
        .post("/api/v1/chatbots", json!({"id": "x", "name": "Y"}))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.body, json!({"message": "Chatbot already exists"}));
}

#[tokio::test]
async fn invalid_agent_body_is_400_with_issues() {
    let s = TestServer::start().await;
    let r = s
        .post("/api/v1/chatbots", json!({"id": "has space", "name": ""}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.issue_fields(), ["id", "name"]);
    let r = s
        .post(
            "/api/v1/chatbots",
            json!({"id": "x".repeat(65), "name": "n"}),
        )
        .await;
    assert_eq!(r.issue_fields(), ["id"]);
}

#[tokio::test]
async fn admin_lists_every_agent() {
    let s = TestServer::start().await;
    s.post("/api/v1/chatbots", json!({"id": "b", "name": "B"}))
        .await;
    let r = s.get("/api/v1/chatbots").await;
    let ids: Vec<_> = r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["b", "default"]);
}

#[tokio::test]
async fn delete_removes_contacts_and_agent_keys() {
    let s = TestServer::start().await;
    let key = s.agent_with_key("gone").await;
    let path = "/api/v1/chatbots/gone/contacts";
    s.post(
        path,
        json!({"users": [{"external_id": "u", "email": "u@x.co"}]}),
    )
    .await;
    let r = s.delete("/api/v1/chatbots/gone").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["data"]["id"], "gone");
    assert_eq!(
        s.get("/api/v1/chatbots/gone").await.status,
        StatusCode::NOT_FOUND
    );
    let r = s.call_as(&key, Method::GET, "/api/v1/chatbots", None).await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "the agent's keys are gone"
    );
    // A new agent with the same id starts empty.
    s.post("/api/v1/chatbots", json!({"id": "gone", "name": "again"}))
        .await;
    assert_eq!(s.get(path).await.body["total"], 0);
    let r = s
        .post(
            path,
            json!({"users": [{"external_id": "w", "email": "u@x.co"}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "the email index was cleared too");
    assert_eq!(
        s.delete("/api/v1/chatbots/nope").await.status,
        StatusCode::NOT_FOUND
    );
}
