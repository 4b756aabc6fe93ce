//! API.md "Custom attributes": definitions, typed values, archiving, and the three
//! unknown-key policies.

use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use contactd::domain::UnknownPolicy;

use crate::common::*;

const ATTRS: &str = "/api/v1/chatbots/default/custom-attributes";

async fn define(s: &TestServer, body: Value) -> Value {
    let r = s.post(ATTRS, body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["data"].clone()
}

/// Defines `ltv` number, `vip` boolean, `seen` date and `plan` text.
async fn define_one_of_each_type(s: &TestServer) {
    for (name, kind) in [
        ("ltv", "number"),
        ("vip", "boolean"),
        ("seen", "date"),
        ("plan", "text"),
    ] {
        define(s, json!({"name": name, "type": kind})).await;
    }
}

/// Upserts one contact and returns the response (not asserting success).
async fn write(s: &TestServer, contact: Value) -> Reply {
    s.post(CONTACTS, json!({ "users": [contact] })).await
}

fn attr(r: &Reply, name: &str) -> Value {
    r.body["data"][0]["custom_attributes"][name].clone()
}

#[tokio::test]
async fn create_applies_defaults() {
    let s = TestServer::start().await;
    let def = define(&s, json!({"name": "plan"})).await;
    assert_eq!(def["name"], "plan");
    assert_eq!(def["label"], "plan");
    assert_eq!(def["type"], "text");
    assert_eq!(def["description"], json!(null));
    assert_eq!(def["archived"], false);
    assert!(def["created_at"].as_i64().unwrap() > 1_700_000_000);
}

#[tokio::test]
async fn create_list_and_get() {
    let s = TestServer::start().await;
    let ltv = define(
        &s,
        json!({"name": "ltv", "label": "Lifetime value", "type": "number", "description": "USD"}),
    )
    .await;
    define(&s, json!({"name": "old", "archived": true})).await;
    let list = s.get(ATTRS).await;
    let names: Vec<_> = list.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].clone())
        .collect();
    assert_eq!(
        names,
        [json!("ltv"), json!("old")],
        "archived ones are listed too"
    );
    let one = s.get(&format!("{ATTRS}/ltv")).await;
    assert_eq!(one.body["data"], ltv);
    assert_eq!(
        s.get(&format!("{ATTRS}/nope")).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn taken_name_is_409() {
    let s = TestServer::start().await;
    define(&s, json!({"name": "plan"})).await;
    let r = s
        .post(ATTRS, json!({"name": "plan", "type": "number"}))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(
        r.body,
        json!({"message": "Custom attribute already exists"})
    );
}

#[tokio::test]
async fn every_invalid_field_is_reported() {
    let s = TestServer::start().await;
    let r = s
        .post(ATTRS, json!({"name": "9lives", "type": "float", "label": 3, "description": "x".repeat(1001), "archived": "no"}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.message(), "Invalid request data");
    assert_eq!(
        r.issue_fields(),
        ["name", "type", "label", "description", "archived"]
    );
    for bad in [
        "email",
        "created_at",
        "has space",
        "",
        "a-b_c!",
        &"a".repeat(65),
    ] {
        let r = s.post(ATTRS, json!({"name": bad})).await;
        assert_eq!(r.issue_fields(), ["name"], "{bad}");
    }
    assert_eq!(s.post(ATTRS, json!({})).await.issue_fields(), ["name"]);
    define(&s, json!({"name": "a-B_9"})).await;
}

#[tokio::test]
async fn put_changes_label_description_and_archived_only() {
    let s = TestServer::start().await;
    define(
        &s,
        json!({"name": "ltv", "type": "number", "description": "old"}),
    )
    .await;
    let path = format!("{ATTRS}/ltv");
    let r = s
        .call(
            Method::PUT,
            &path,
            Some(json!({"label": "LTV", "description": null})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        (
            r.body["data"]["label"].clone(),
            r.body["data"]["description"].clone()
        ),
        (json!("LTV"), json!(null))
    );
    let r = s
        .call(
            Method::PUT,
            &path,
            Some(json!({"type": "number", "name": "ltv", "archived": true})),
        )
        .await;
    assert_eq!(
        r.body["data"]["archived"], true,
        "repeating name and type is fine"
    );
    let r = s
        .call(Method::PUT, &path, Some(json!({"type": "text"})))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.issue_fields(), ["type"]);
    let r = s
        .call(Method::PUT, &path, Some(json!({"name": "other"})))
        .await;
    assert_eq!(r.issue_fields(), ["name"]);
    assert_eq!(s.get(&path).await.body["data"]["type"], "number");
    let r = s
        .call(
            Method::PUT,
            &format!("{ATTRS}/nope"),
            Some(json!({"label": "x"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = s.call(Method::DELETE, &path, None).await;
    assert_eq!(
        r.status,
        StatusCode::METHOD_NOT_ALLOWED,
        "archive instead of delete"
    );
}

#[tokio::test]
async fn agent_keys_manage_their_own_agent_only() {
    let s = TestServer::start().await;
    let key = s.agent_with_key("a").await;
    let own = "/api/v1/chatbots/a/custom-attributes";
    let r = s
        .call_as(&key, Method::POST, own, Some(json!({"name": "plan"})))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = s
        .call_as(
            &key,
            Method::PUT,
            &format!("{own}/plan"),
            Some(json!({"archived": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = s.call_as(&key, Method::GET, ATTRS, None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = s
        .call_as(&key, Method::POST, ATTRS, Some(json!({"name": "x"})))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn deleting_an_agent_removes_its_definitions() {
    let s = TestServer::start().await;
    s.agent_with_key("tmp").await;
    let path = "/api/v1/chatbots/tmp/custom-attributes";
    s.post(path, json!({"name": "plan", "type": "number"}))
        .await;
    s.delete("/api/v1/chatbots/tmp").await;
    s.post("/api/v1/chatbots", json!({"id": "tmp", "name": "again"}))
        .await;
    assert_eq!(s.get(path).await.body["data"], json!([]));
}

#[tokio::test]
async fn values_are_coerced_by_type() {
    let s = TestServer::start().await;
    define_one_of_each_type(&s).await;
    let cases = [
        ("ltv", json!(540), json!(540)),
        ("ltv", json!(-1.25), json!(-1.25)),
        ("vip", json!(true), json!(true)),
        ("vip", json!("true"), json!(true)),
        ("vip", json!("False"), json!(false)),
        ("vip", json!(1), json!(true)),
        ("vip", json!(0), json!(false)),
        ("seen", json!("2026-11-21"), json!("2026-11-21T00:00:00Z")),
        (
            "seen",
            json!("2026-11-21T10:00:00Z"),
            json!("2026-11-21T10:00:00Z"),
        ),
        (
            "seen",
            json!("2026-11-21T10:00:00+02:00"),
            json!("2026-11-21T08:00:00Z"),
        ),
        (
            "seen",
            json!("2026-11-21T10:00:00.25-01:30"),
            json!("2026-11-21T11:30:00.250Z"),
        ),
        ("seen", json!(1_795_219_200), json!("2026-11-21T00:00:00Z")),
        ("plan", json!("pro"), json!("pro")),
    ];
    for (name, sent, stored) in cases {
        let r = write(
            &s,
            json!({"external_id": "c", "custom_attributes": {name: sent}}),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{name}={sent}: {}", r.body);
        assert_eq!(attr(&r, name), stored, "{name}={sent}");
        let got = s.get(&contact_path("c")).await;
        assert_eq!(
            got.body["data"]["custom_attributes"][name], stored,
            "stored {name}={sent}"
        );
    }
}

#[tokio::test]
async fn ill_typed_values_are_400_with_full_paths_and_nothing_written() {
    let s = TestServer::start().await;
    define_one_of_each_type(&s).await;
    let users = json!([
        {"external_id": "ok0", "custom_attributes": {"ltv": 1}},
        {"external_id": "ok1"},
        {"external_id": "bad2", "custom_attributes": {"ltv": "540"}},
        {"external_id": "bad3", "custom_attributes": {"vip": "yes", "plan": 5}},
        {"external_id": "bad4", "custom_attributes": {"seen": "21/11/2026", "ltv": 1}},
        {"external_id": "bad5", "custom_attributes": {"seen": 1e15}}
    ]);
    let r = s.post(CONTACTS, json!({"users": users})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.message(), "Invalid request data");
    assert_eq!(
        r.issue_fields(),
        [
            "users[2].custom_attributes.ltv",
            "users[3].custom_attributes.plan",
            "users[3].custom_attributes.vip",
            "users[4].custom_attributes.seen",
            "users[5].custom_attributes.seen"
        ]
    );
    assert!(r.body["issues"][0]["message"]
        .as_str()
        .unwrap()
        .contains("number"));
    assert_eq!(s.get(CONTACTS).await.body["total"], 0);
    let r = s
        .post(
            CONTACTS,
            json!({"contacts": [{"custom_attributes": {"ltv": "x"}}]}),
        )
        .await;
    assert_eq!(r.issue_fields(), ["contacts[0].custom_attributes.ltv"]);
}

#[tokio::test]
async fn patch_values_are_typed_with_the_body_path() {
    let s = TestServer::start().await;
    define(&s, json!({"name": "ltv", "type": "number"})).await;
    s.upsert(json!([{"external_id": "c"}])).await;
    let r = s
        .patch(
            &contact_path("c"),
            json!({"data": {"custom_attributes": {"ltv": "lots"}}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.issue_fields(), ["data.custom_attributes.ltv"]);
    let r = s
        .patch(&contact_path("c"), json!({"custom_attributes": {"ltv": 7}}))
        .await;
    assert_eq!(r.body["data"]["custom_attributes"], json!({"ltv": 7}));
}

#[tokio::test]
async fn null_clears_a_value() {
    let s = TestServer::start().await;
    s.upsert(json!([{"external_id": "c", "custom_attributes": {"plan": "pro", "ltv": 5}}]))
        .await;
    let r = write(
        &s,
        json!({"external_id": "c", "custom_attributes": {"plan": null, "ltv": 5}}),
    )
    .await;
    assert_eq!(r.body["data"][0]["custom_attributes"], json!({"ltv": 5}));
}

#[tokio::test]
async fn archived_attributes_refuse_values_but_keep_them() {
    let s = TestServer::start().await;
    define(&s, json!({"name": "vip", "type": "boolean"})).await;
    s.upsert(json!([{"external_id": "c", "custom_attributes": {"vip": true, "plan": "pro"}}]))
        .await;
    let path = format!("{ATTRS}/vip");
    s.call(Method::PUT, &path, Some(json!({"archived": true})))
        .await;

    let r = write(
        &s,
        json!({"external_id": "c", "custom_attributes": {"vip": false}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.issue_fields(), ["users[0].custom_attributes.vip"]);
    assert!(r.body["issues"][0]["message"]
        .as_str()
        .unwrap()
        .contains("archived"));
    let got = s.get(&contact_path("c")).await;
    assert_eq!(
        got.body["data"]["custom_attributes"]["vip"], true,
        "still stored and returned"
    );

    let r = write(
        &s,
        json!({"external_id": "c", "custom_attributes": {"plan": "team"}}),
    )
    .await;
    assert_eq!(
        r.body["data"][0]["custom_attributes"],
        json!({"plan": "team", "vip": true}),
        "kept when not sent"
    );

    let r = write(
        &s,
        json!({"external_id": "c", "custom_attributes": {"vip": null, "plan": "team"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.body["data"][0]["custom_attributes"],
        json!({"plan": "team"}),
        "null clears it"
    );

    s.call(Method::PUT, &path, Some(json!({"archived": false})))
        .await;
    let r = write(
        &s,
        json!({"external_id": "c", "custom_attributes": {"vip": "true"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "restored: writable again");
    assert_eq!(attr(&r, "vip"), true);
}

#[tokio::test]
async fn define_policy_creates_typed_definitions_on_the_fly() {
    let s = TestServer::start().await;
    let r = write(&s, json!({"external_id": "c", "custom_attributes": {"score": 4.5, "vip": true, "nick": "Sam", "gone": null}})).await;
    assert_eq!(r.status, StatusCode::OK);
    let defs = s.get(ATTRS).await.body["data"].clone();
    let kinds: Vec<(String, String, String)> = defs
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap().into(),
                d["type"].as_str().unwrap().into(),
                d["label"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("nick".into(), "text".into(), "nick".into()),
            ("score".into(), "number".into(), "score".into()),
            ("vip".into(), "boolean".into(), "vip".into())
        ]
    );
    let r = write(
        &s,
        json!({"external_id": "d", "custom_attributes": {"score": "high"}}),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "the new definition types later writes"
    );
}

#[tokio::test]
async fn define_policy_within_one_request_types_later_entries() {
    let s = TestServer::start().await;
    let r = s
        .post(
            CONTACTS,
            json!({"users": [
                {"external_id": "a", "custom_attributes": {"ltv": 5}},
                {"external_id": "b", "custom_attributes": {"ltv": "five"}}
            ]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.issue_fields(), ["users[1].custom_attributes.ltv"]);
    assert_eq!(
        s.get(ATTRS).await.body["data"],
        json!([]),
        "the failed request defined nothing"
    );
}

#[tokio::test]
async fn define_policy_refuses_names_it_cannot_define() {
    let s = TestServer::start().await;
    let r = write(
        &s,
        json!({"custom_attributes": {"has space": 1, "email": "x"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.issue_fields(),
        [
            "users[0].custom_attributes.email",
            "users[0].custom_attributes.has space"
        ]
    );
}

#[tokio::test]
async fn a_conflicting_request_defines_nothing() {
    let s = TestServer::start().await;
    s.upsert(json!([{"external_id": "a", "email": "a@x.co"}]))
        .await;
    let r = write(
        &s,
        json!({"external_id": "b", "email": "a@x.co", "custom_attributes": {"fresh": 1}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(s.get(ATTRS).await.body["data"], json!([]));
}

#[tokio::test]
async fn strip_policy_drops_unknown_keys() {
    let s = TestServer::start_with(|c| c.unknown_attributes = UnknownPolicy::Strip).await;
    define(&s, json!({"name": "plan"})).await;
    let r = write(
        &s,
        json!({"external_id": "c", "custom_attributes": {"plan": "pro", "mystery": 1}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.body["data"][0]["custom_attributes"],
        json!({"plan": "pro"})
    );
    let names: Vec<_> = s.get(ATTRS).await.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].clone())
        .collect();
    assert_eq!(names, [json!("plan")]);
}

#[tokio::test]
async fn reject_policy_names_unknown_keys() {
    let s = TestServer::start_with(|c| c.unknown_attributes = UnknownPolicy::Reject).await;
    define(&s, json!({"name": "plan"})).await;
    let r = write(
        &s,
        json!({"external_id": "c", "custom_attributes": {"plan": "pro", "mystery": 1}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.issue_fields(), ["users[0].custom_attributes.mystery"]);
    assert_eq!(s.get(CONTACTS).await.body["total"], 0);
    let r = write(
        &s,
        json!({"external_id": "c", "custom_attributes": {"plan": "pro"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn concurrent_requests_defining_the_same_attribute_end_with_one_definition() {
    let s = std::sync::Arc::new(TestServer::start().await);
    let mut tasks = Vec::new();
    for i in 0..12 {
        let s = std::sync::Arc::clone(&s);
        tasks.push(tokio::spawn(async move {
            write(
                &s,
                json!({"external_id": format!("c{i}"), "custom_attributes": {"loyalty": i}}),
            )
            .await
            .status
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), StatusCode::OK);
    }
    let defs = s.get(ATTRS).await.body["data"].clone();
    assert_eq!(defs.as_array().unwrap().len(), 1);
    assert_eq!(defs[0]["type"], "number");
}
