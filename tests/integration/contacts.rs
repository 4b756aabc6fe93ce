//! API.md "GET/PATCH/DELETE /contacts/{contactId}", contact id resolution, and ETags
//! with `If-Match`.

use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::*;

#[tokio::test]
async fn get_by_external_id_and_by_contact_id() {
    let s = TestServer::start().await;
    let c = s.upsert(json!([{"external_id": "u1", "name": "A"}])).await[0].clone();
    let by_ext = s.get(&contact_path("u1")).await;
    assert_eq!(
        (by_ext.status, by_ext.message()),
        (StatusCode::OK, "Success")
    );
    assert_eq!(by_ext.body["data"], c);
    let by_id = s.get(&contact_path(c["id"].as_str().unwrap())).await;
    assert_eq!(by_id.body["data"], c);
}

#[tokio::test]
async fn unknown_contact_is_404() {
    let s = TestServer::start().await;
    for id in ["nope", "contact_999", "contact_x"] {
        let r = s.get(&contact_path(id)).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{id}");
        assert_eq!(r.body, json!({"message": "Resource not found"}));
    }
}

#[tokio::test]
async fn percent_encoded_ids_with_slash_space_and_unicode_work() {
    let s = TestServer::start().await;
    let ext = "org/42 Zoë+ü?#";
    s.upsert(json!([{"external_id": ext}])).await;
    let encoded = "org%2F42%20Zo%C3%AB%2B%C3%BC%3F%23";
    let r = s.get(&contact_path(encoded)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["data"]["external_id"], ext);
    let r = s.patch(&contact_path(encoded), json!({"name": "n"})).await;
    assert_eq!(r.body["data"]["name"], "n");
    assert_eq!(
        s.delete(&contact_path(encoded)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_external_id_that_looks_like_a_contact_id_wins() {
    let s = TestServer::start().await;
    let first = s.upsert(json!([{"external_id": "a"}])).await[0].clone();
    let first_id = first["id"].as_str().unwrap().to_owned();
    s.upsert(json!([{"external_id": first_id.clone(), "name": "literal"}]))
        .await;
    assert_eq!(
        s.get(&contact_path(&first_id)).await.body["data"]["name"],
        "literal"
    );
}

#[tokio::test]
async fn reserved_segments_reach_contacts_through_their_contact_id() {
    let s = TestServer::start().await;
    let c = s
        .upsert(json!([{"external_id": "import", "name": "i"}]))
        .await[0]
        .clone();
    // The path is the import endpoint, which only takes POST.
    assert_eq!(
        s.get(&contact_path("import")).await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    let r = s.get(&contact_path(c["id"].as_str().unwrap())).await;
    assert_eq!(r.body["data"]["external_id"], "import");
}

#[tokio::test]
async fn patch_accepts_data_wrapper_or_bare_fields() {
    let s = TestServer::start().await;
    s.upsert(json!([{"external_id": "u", "name": "A", "email": "a@x.co", "phonenumber": "123"}]))
        .await;
    let r = s
        .patch(&contact_path("u"), json!({"data": {"name": "B"}}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["data"]["name"], "B");
    assert_eq!(r.body["data"]["email"], "a@x.co", "fields not sent stay");
    let r = s
        .patch(
            &contact_path("u"),
            json!({"phonenumber": null, "email": ""}),
        )
        .await;
    assert_eq!(r.body["data"]["phonenumber"], json!(null));
    assert_eq!(r.body["data"]["email"], json!(null));
    assert_eq!(r.body["data"]["name"], "B");
}

#[tokio::test]
async fn patch_issues_carry_the_body_path() {
    let s = TestServer::start().await;
    s.upsert(json!([{"external_id": "u"}])).await;
    let r = s
        .patch(
            &contact_path("u"),
            json!({"data": {"email": "bad", "custom_attributes": {"plan": [1]}}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.issue_fields(),
        ["data.email", "data.custom_attributes.plan"]
    );
    let r = s.patch(&contact_path("u"), json!({"email": "bad"})).await;
    assert_eq!(r.issue_fields(), ["email"]);
    let r = s
        .patch(&contact_path("u"), json!({"external_id": null}))
        .await;
    assert_eq!(r.issue_fields(), ["external_id"]);
    let r = s.patch(&contact_path("u"), json!({"data": 5})).await;
    assert_eq!(r.issue_fields(), ["data"]);
}

#[tokio::test]
async fn patch_renames_external_id() {
    let s = TestServer::start().await;
    let c = s
        .upsert(json!([{"external_id": "old", "email": "o@x.co"}]))
        .await[0]
        .clone();
    let r = s
        .patch(&contact_path("old"), json!({"external_id": "new"}))
        .await;
    assert_eq!(r.body["data"]["external_id"], "new");
    assert_eq!(r.body["data"]["id"], c["id"]);
    assert_eq!(
        s.get(&contact_path("old")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.get(&contact_path("new")).await.body["data"]["email"],
        "o@x.co"
    );
    let by_id = s.get(&contact_path(c["id"].as_str().unwrap())).await;
    assert_eq!(by_id.body["data"]["external_id"], "new");
    let listed = s.get(CONTACTS).await;
    assert_eq!(listed.body["data"][0]["external_id"], "new");
    // The email index follows the rename: the address still belongs to this contact.
    let r = s
        .post(
            CONTACTS,
            json!({"users": [{"external_id": "z", "email": "o@x.co"}]}),
        )
        .await;
    assert_eq!(
        r.body["issues"][0]["message"],
        "already used by contact with external_id 'new'"
    );
}

#[tokio::test]
async fn patch_conflicts_are_409_naming_the_holder() {
    let s = TestServer::start().await;
    s.upsert(json!([{"external_id": "a", "email": "a@x.co"}, {"external_id": "b"}]))
        .await;
    let r = s
        .patch(&contact_path("b"), json!({"data": {"email": "A@x.co"}}))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(
        r.body["issues"],
        json!([{"field": "data.email", "message": "already used by contact with external_id 'a'"}])
    );
    let r = s
        .patch(&contact_path("b"), json!({"external_id": "a"}))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.issue_fields(), ["external_id"]);
    assert_eq!(
        s.get(&contact_path("b")).await.body["data"]["email"],
        json!(null)
    );
}

#[tokio::test]
async fn patch_unknown_contact_is_404() {
    let s = TestServer::start().await;
    let r = s.patch(&contact_path("nope"), json!({"name": "x"})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn patch_without_change_keeps_updated_at() {
    let s = TestServer::start().await;
    let c = s.upsert(json!([{"external_id": "u", "name": "A"}])).await[0].clone();
    let r = s.patch(&contact_path("u"), json!({"name": "A"})).await;
    assert_eq!(r.body["data"], c);
}

#[tokio::test]
async fn delete_echoes_and_frees_the_email() {
    let s = TestServer::start().await;
    let c = s
        .upsert(json!([{"external_id": "u", "email": "u@x.co"}]))
        .await[0]
        .clone();
    let r = s.delete(&contact_path("u")).await;
    assert_eq!((r.status, r.message()), (StatusCode::OK, "Success"));
    assert_eq!(r.body["data"], c);
    assert_eq!(
        s.get(&contact_path("u")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.delete(&contact_path("u")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(s.get(CONTACTS).await.body["total"], 0);
    let again = s
        .upsert(json!([{"external_id": "v", "email": "U@x.co"}]))
        .await;
    assert_ne!(again[0]["id"], c["id"], "contact numbers never repeat");
}

#[tokio::test]
async fn delete_by_contact_id() {
    let s = TestServer::start().await;
    let c = s.upsert(json!([{"external_id": "u"}])).await[0].clone();
    let r = s.delete(&contact_path(c["id"].as_str().unwrap())).await;
    assert_eq!(r.body["data"]["external_id"], "u");
}

#[tokio::test]
async fn contacts_keys_and_counters_survive_a_restart() {
    let s = TestServer::start().await;
    s.upsert(json!([{"external_id": "a", "email": "a@x.co"}, {"external_id": "b"}]))
        .await;
    let key = s.agent_with_key("other").await;
    let dir = s.stop().await;
    let s = TestServer::start_in(std::sync::Arc::clone(&dir), base_config(&dir)).await;
    assert_eq!(s.get(CONTACTS).await.body["total"], 2);
    assert_eq!(
        s.get(&contact_path("contact_1")).await.body["data"]["external_id"],
        "a"
    );
    let r = s
        .call_as(&key, hyper::Method::GET, "/api/v1/chatbots/other", None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let c = s.upsert(json!([{"external_id": "c"}])).await;
    assert_eq!(
        c[0]["id"], "contact_3",
        "the counter continues after a restart"
    );
    let r = s
        .post(
            CONTACTS,
            json!({"users": [{"external_id": "d", "email": "A@x.co"}]}),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::CONFLICT,
        "the email index survives too"
    );
}

#[tokio::test]
async fn etags_move_with_every_change_and_a_stale_if_match_changes_nothing() {
    let s = TestServer::start().await;
    s.upsert(json!([{"external_id": "u1", "name": "Ada"}]))
        .await;
    let path = contact_path("u1");
    let etag = |r: &crate::common::Reply| r.headers["etag"].to_str().unwrap().to_owned();
    let first = s.get(&path).await;
    let tag = etag(&first);
    assert!(
        tag.starts_with('"') && tag.ends_with('"') && !tag.starts_with("W/"),
        "{tag}"
    );
    assert_eq!(
        etag(&s.get(&path).await),
        tag,
        "stable while nothing changes"
    );
    let patch = |if_match: String, body: Value| patch_if(&s, &path, if_match, body);
    // A matching If-Match (alone, in a list, or *) lets the write through; the answer
    // carries the new ETag, which the next GET agrees with.
    let (status, headers, _) = patch(format!("\"nope\", {tag}"), json!({"name": "Ada L."})).await;
    assert_eq!(status, StatusCode::OK);
    let moved = headers["etag"].to_str().unwrap().to_owned();
    assert_ne!(moved, tag);
    assert_eq!(etag(&s.get(&path).await), moved);
    // The old tag is stale now: 412, and nothing changes.
    let (status, _, body) = patch(tag.clone(), json!({"name": "Mallory"})).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("If-Match"),
        "{body}"
    );
    assert_eq!(s.get(&path).await.body["data"]["name"], "Ada L.");
    // A weak tag never matches (strong comparison); a malformed header is 400.
    let (status, _, _) = patch(format!("W/{moved}"), json!({"name": "X"})).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    let (status, _, _) = patch("not-quoted".into(), json!({"name": "X"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = patch("*".into(), json!({"email": "ada@x.org"})).await;
    assert_eq!(status, StatusCode::OK);
    // DELETE: a stale tag is 412 and the contact stays; the current one deletes it.
    let (status, _, _) = s
        .send_bytes(
            Method::DELETE,
            &path,
            &[("if-match", moved.as_str())],
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    let current = etag(&s.get(&path).await);
    let (status, _, _) = s
        .send_bytes(
            Method::DELETE,
            &path,
            &[("if-match", current.as_str())],
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // A missing contact is 404, whatever the precondition.
    let (status, _, _) = s
        .send_bytes(Method::DELETE, &path, &[("if-match", "*")], Vec::new())
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// `PATCH path` with `If-Match: if_match` and `body`.
async fn patch_if(
    s: &TestServer,
    path: &str,
    if_match: String,
    body: Value,
) -> (StatusCode, hyper::HeaderMap, bytes::Bytes) {
    s.send_bytes(
        Method::PATCH,
        path,
        &[
            ("content-type", "application/json"),
            ("if-match", &if_match),
        ],
        body.to_string().into_bytes(),
    )
    .await
}
