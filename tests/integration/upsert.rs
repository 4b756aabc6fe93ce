//! API.md "POST /contacts": create or upsert 1 to 1000 contacts, all or nothing.

use hyper::StatusCode;
use serde_json::{json, Value};

use crate::common::*;

fn full_contact() -> Value {
    json!({
        "external_id": "user_8821",
        "name": "Sam Rivera",
        "email": "sam@acme.com",
        "phonenumber": "+15551234567",
        "stripe_accounts": [{"label": "main", "stripe_id": "cus_123", "stripe_email": "billing@acme.com"}],
        "custom_attributes": {"plan": "pro", "ltv": 540, "vip": true, "score": 4.5}
    })
}

#[tokio::test]
async fn create_returns_the_contact_object_and_meta() {
    let s = TestServer::start().await;
    let r = s.post(CONTACTS, json!({"users": [full_contact()]})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.message(), "Success");
    assert_eq!(
        r.body["meta"],
        json!({"created": 1, "updated": 0, "skipped": 0})
    );
    let c = &r.body["data"][0];
    assert!(c["id"].as_str().unwrap().starts_with("contact_"));
    for field in [
        "external_id",
        "name",
        "email",
        "phonenumber",
        "stripe_accounts",
        "custom_attributes",
    ] {
        assert_eq!(c[field], full_contact()[field], "{field}");
    }
    assert_eq!(c["created_at"], c["updated_at"]);
}

#[tokio::test]
async fn unset_fields_have_documented_defaults() {
    let s = TestServer::start().await;
    let c = &s.upsert(json!([{"external_id": "bare"}])).await[0];
    assert_eq!(c["name"], json!(null));
    assert_eq!(c["email"], json!(null));
    assert_eq!(c["phonenumber"], json!(null));
    assert_eq!(c["stripe_accounts"], json!([]));
    assert_eq!(c["custom_attributes"], json!({}));
}

#[tokio::test]
async fn contacts_is_an_alias_of_users() {
    let s = TestServer::start().await;
    let r = s
        .post(CONTACTS, json!({"contacts": [{"external_id": "a"}]}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = s
        .post(CONTACTS, json!({"contacts": [{"email": "bad"}]}))
        .await;
    assert_eq!(r.issue_fields(), ["contacts[0].email"]);
}

#[tokio::test]
async fn entry_without_external_id_gets_a_random_one() {
    let s = TestServer::start().await;
    let data = s.upsert(json!([{"name": "A"}, {"name": "B"}])).await;
    let a = data[0]["external_id"].as_str().unwrap();
    let b = data[1]["external_id"].as_str().unwrap();
    assert!(!a.is_empty() && a != b);
}

#[tokio::test]
async fn missing_or_empty_users_is_400_invalid_request_data() {
    let s = TestServer::start().await;
    for body in [json!({}), json!({"users": []}), json!({"users": null})] {
        let r = s.post(CONTACTS, body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(r.message(), "Invalid request data");
    }
}

#[tokio::test]
async fn more_than_1000_is_400_maximum() {
    let s = TestServer::start().await;
    let users: Vec<Value> = (0..1001)
        .map(|i| json!({"external_id": format!("u{i}")}))
        .collect();
    let r = s.post(CONTACTS, json!({"users": users})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.body,
        json!({"message": "Maximum 1000 contacts per request"})
    );
    let users: Vec<Value> = (0..1000)
        .map(|i| json!({"external_id": format!("u{i}")}))
        .collect();
    assert_eq!(
        s.post(CONTACTS, json!({"users": users})).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn every_invalid_entry_is_reported_and_nothing_is_written() {
    let s = TestServer::start().await;
    let r = s
        .post(
            CONTACTS,
            json!({"users": [
                {"external_id": "good"},
                {"external_id": "x\u{0001}y"},
                {"external_id": "ok2", "name": "n".repeat(256), "phonenumber": "12ab"},
                {"stripe_accounts": [{"label": "x", "stripe_email": "nope"}], "custom_attributes": {"o": {}}},
                {"email": format!("{}@x.co", "a".repeat(250))}
            ]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.message(), "Invalid request data");
    assert_eq!(
        r.issue_fields(),
        [
            "users[1].external_id",
            "users[2].name",
            "users[2].phonenumber",
            "users[3].stripe_accounts[0].stripe_email",
            "users[3].custom_attributes.o",
            "users[4].email"
        ]
    );
    assert_eq!(s.get(CONTACTS).await.body["total"], 0);
    assert_eq!(
        s.get(&contact_path("good")).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn too_many_attributes_or_stripe_accounts_are_rejected() {
    let s = TestServer::start().await;
    let attrs: serde_json::Map<String, Value> =
        (0..101).map(|i| (format!("a{i}"), json!(i))).collect();
    let accounts: Vec<Value> = (0..21)
        .map(|i| json!({"label": "l", "stripe_id": format!("cus_{i}")}))
        .collect();
    let r = s
        .post(
            CONTACTS,
            json!({"users": [{"custom_attributes": attrs, "stripe_accounts": accounts}]}),
        )
        .await;
    assert_eq!(
        r.issue_fields(),
        ["users[0].stripe_accounts", "users[0].custom_attributes"]
    );
    let r = s
        .post(
            CONTACTS,
            json!({"users": [{"custom_attributes": {"t": "x".repeat(4097)}}]}),
        )
        .await;
    assert_eq!(r.issue_fields(), ["users[0].custom_attributes.t"]);
}

#[tokio::test]
async fn upsert_keeps_created_at_and_id_and_fields_not_sent() {
    let s = TestServer::start().await;
    let first = s.upsert(json!([full_contact()])).await[0].clone();
    wait_for_next_second().await;
    let second = s
        .upsert(json!([{"external_id": "user_8821", "name": "Sam R."}]))
        .await[0]
        .clone();
    assert_eq!(second["id"], first["id"]);
    assert_eq!(second["created_at"], first["created_at"]);
    assert!(second["updated_at"].as_i64() > first["updated_at"].as_i64());
    assert_eq!(second["name"], "Sam R.");
    for kept in [
        "email",
        "phonenumber",
        "stripe_accounts",
        "custom_attributes",
    ] {
        assert_eq!(second[kept], first[kept], "{kept}");
    }
}

#[tokio::test]
async fn upsert_without_change_keeps_updated_at() {
    let s = TestServer::start().await;
    let first = s.upsert(json!([full_contact()])).await[0].clone();
    wait_for_next_second().await;
    let r = s.post(CONTACTS, json!({"users": [full_contact()]})).await;
    assert_eq!(
        r.body["meta"],
        json!({"created": 0, "updated": 1, "skipped": 0})
    );
    assert_eq!(r.body["data"][0], first);
}

#[tokio::test]
async fn null_and_empty_string_clear_fields() {
    let s = TestServer::start().await;
    s.upsert(json!([full_contact()])).await;
    let c = s
        .upsert(
            json!([{"external_id": "user_8821", "name": null, "email": "", "phonenumber": null,
                        "stripe_accounts": null, "custom_attributes": null}]),
        )
        .await[0]
        .clone();
    assert_eq!(
        (
            c["name"].clone(),
            c["email"].clone(),
            c["phonenumber"].clone()
        ),
        (json!(null), json!(null), json!(null))
    );
    assert_eq!(c["stripe_accounts"], json!([]));
    assert_eq!(c["custom_attributes"], json!({}));
    // The cleared email is free again.
    s.upsert(json!([{"external_id": "other", "email": "sam@acme.com"}]))
        .await;
}

#[tokio::test]
async fn stripe_accounts_and_custom_attributes_replace_whole() {
    let s = TestServer::start().await;
    s.upsert(json!([full_contact()])).await;
    let c = s
        .upsert(
            json!([{"external_id": "user_8821", "custom_attributes": {"plan": "team"},
                        "stripe_accounts": [{"label": "b", "stripe_email": "b@acme.com"}]}]),
        )
        .await[0]
        .clone();
    assert_eq!(c["custom_attributes"], json!({"plan": "team"}));
    assert_eq!(
        c["stripe_accounts"],
        json!([{"label": "b", "stripe_email": "b@acme.com"}])
    );
}

#[tokio::test]
async fn same_external_id_twice_later_entry_wins() {
    let s = TestServer::start().await;
    let r = s
        .post(
            CONTACTS,
            json!({"users": [
                {"external_id": "dup", "name": "first", "email": "a@x.co"},
                {"external_id": "dup", "name": "second"}
            ]}),
        )
        .await;
    assert_eq!(
        r.body["meta"],
        json!({"created": 1, "updated": 1, "skipped": 0})
    );
    let c = s.get(&contact_path("dup")).await.body["data"].clone();
    assert_eq!(
        (c["name"].as_str(), c["email"].as_str()),
        (Some("second"), Some("a@x.co"))
    );
    assert_eq!(s.get(CONTACTS).await.body["total"], 1);
}

#[tokio::test]
async fn email_held_by_stored_contact_is_409_naming_it() {
    let s = TestServer::start().await;
    s.upsert(json!([{"external_id": "u_17", "email": "Taken@X.co"}]))
        .await;
    let r = s
        .post(CONTACTS, json!({"users": [{"external_id": "a"}, {"external_id": "b"}, {"external_id": "c", "email": "taken@x.CO"}]}))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(
        r.body,
        json!({"message": "Error saving chatbot contact. External ID or email already exists.",
               "issues": [{"field": "users[2].email", "message": "already used by contact with external_id 'u_17'"}]})
    );
    assert_eq!(
        s.get(CONTACTS).await.body["total"],
        1,
        "nothing of the request was written"
    );
}

#[tokio::test]
async fn email_taken_earlier_in_the_same_request_is_409() {
    let s = TestServer::start().await;
    let r = s
        .post(CONTACTS, json!({"users": [{"external_id": "a", "email": "x@y.co"}, {"external_id": "b", "email": "X@y.co"}]}))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.body["issues"][0]["field"], "users[1].email");
    assert_eq!(
        r.body["issues"][0]["message"],
        "already used by contact with external_id 'a'"
    );
    assert_eq!(s.get(CONTACTS).await.body["total"], 0);
}

#[tokio::test]
async fn email_freed_earlier_in_the_same_request_can_be_taken() {
    let s = TestServer::start().await;
    s.upsert(json!([{"external_id": "a", "email": "x@y.co"}]))
        .await;
    let data = s
        .upsert(json!([{"external_id": "a", "email": "new@y.co"}, {"external_id": "b", "email": "x@y.co"}]))
        .await;
    assert_eq!(data[1]["email"], "x@y.co");
    assert_eq!(
        s.get(&contact_path("a")).await.body["data"]["email"],
        "new@y.co"
    );
}

#[tokio::test]
async fn changing_only_the_email_case_is_not_a_conflict() {
    let s = TestServer::start().await;
    s.upsert(json!([{"external_id": "a", "email": "x@y.co"}]))
        .await;
    let c = s
        .upsert(json!([{"external_id": "a", "email": "X@Y.co"}]))
        .await;
    assert_eq!(c[0]["email"], "X@Y.co", "stored as sent");
}

#[tokio::test]
async fn on_duplicate_skip_leaves_existing_unchanged() {
    let s = TestServer::start().await;
    s.upsert(json!([{"external_id": "a", "name": "orig"}]))
        .await;
    let r = s
        .post(
            &format!("{CONTACTS}?on_duplicate=skip"),
            json!({"users": [{"external_id": "a", "name": "new"}, {"external_id": "b"}]}),
        )
        .await;
    assert_eq!(
        r.body["meta"],
        json!({"created": 1, "updated": 0, "skipped": 1})
    );
    assert_eq!(r.body["data"][0]["name"], "orig");
    assert_eq!(s.get(&contact_path("a")).await.body["data"]["name"], "orig");
}

#[tokio::test]
async fn on_duplicate_error_fails_the_whole_request() {
    let s = TestServer::start().await;
    s.upsert(json!([{"external_id": "a"}])).await;
    let r = s
        .post(
            &format!("{CONTACTS}?on_duplicate=error"),
            json!({"users": [{"external_id": "b"}, {"external_id": "a"}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(
        r.message(),
        "Error saving chatbot contact. External ID or email already exists."
    );
    assert_eq!(r.issue_fields(), ["users[1].external_id"]);
    assert_eq!(
        s.get(&contact_path("b")).await.status,
        StatusCode::NOT_FOUND
    );
    let r = s
        .post(
            &format!("{CONTACTS}?on_duplicate=error"),
            json!({"users": [{"external_id": "c"}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn unknown_on_duplicate_is_400_naming_it() {
    let s = TestServer::start().await;
    let r = s
        .post(
            &format!("{CONTACTS}?on_duplicate=merge"),
            json!({"users": [{}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.message(), "Invalid request parameters");
    assert_eq!(r.issue_fields(), ["on_duplicate"]);
}

#[tokio::test]
async fn unknown_keys_in_a_contact_are_ignored() {
    let s = TestServer::start().await;
    let c = s
        .upsert(json!([{"external_id": "a", "favourite_colour": "blue", "id": "contact_999"}]))
        .await;
    assert_ne!(c[0]["id"], "contact_999");
    assert!(c[0].get("favourite_colour").is_none());
}

#[tokio::test]
async fn concurrent_batches_all_commit_with_unique_ids() {
    let s = std::sync::Arc::new(TestServer::start().await);
    let mut tasks = Vec::new();
    for t in 0..16 {
        let s = std::sync::Arc::clone(&s);
        tasks.push(tokio::spawn(async move {
            let users: Vec<Value> = (0..50)
                .map(|i| json!({"external_id": format!("t{t}-{i}"), "email": format!("t{t}-{i}@x.co")}))
                .collect();
            s.upsert(json!(users)).await
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for task in tasks {
        for c in task.await.unwrap() {
            assert!(ids.insert(c["id"].as_str().unwrap().to_owned()));
        }
    }
    assert_eq!(ids.len(), 800);
    assert_eq!(s.get(CONTACTS).await.body["total"], 800);
}
