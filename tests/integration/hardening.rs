//! What an attacker or a careless operator could do: HEAD and the security headers,
//! ambiguous credentials, revoking the last admin key, unbounded attribute
//! definitions, leftover import files and readable data dirs.

use std::os::unix::fs::PermissionsExt;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use serde_json::json;

use crate::common::{contact_path, TestServer, ADMIN_KEY, CONTACTS};
use crate::process::{run, Proc};

#[tokio::test]
async fn head_answers_wherever_get_does_without_a_body() {
    let s = TestServer::start().await;
    s.upsert(json!([{"external_id": "u1", "name": "Sam"}]))
        .await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    for path in [
        "/healthz".to_owned(),
        "/".to_owned(),
        "/assets/app.js".to_owned(),
        "/api/v1/chatbots".to_owned(),
        "/api/v1/chatbots/default".to_owned(),
        CONTACTS.to_owned(),
        contact_path("u1"),
        "/api/v1/chatbots/default/custom-attributes".to_owned(),
        "/api/v1/keys".to_owned(),
    ] {
        let get = s.call(Method::GET, &path, None).await;
        let req = Request::builder()
            .method(Method::HEAD)
            .uri(s.url(&path))
            .header("authorization", format!("Bearer {ADMIN_KEY}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), get.status, "HEAD {path}");
        assert_eq!(
            resp.headers().get("content-type"),
            get.headers.get("content-type"),
            "HEAD {path}"
        );
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(body.is_empty(), "HEAD {path} sent a body");
    }
}

#[tokio::test]
async fn every_answer_says_nosniff_and_a_new_key_is_never_cached() {
    let s = TestServer::start().await;
    for r in [
        s.get(CONTACTS).await,
        s.get("/api/v1/nothing-here").await,
        s.raw(Method::GET, CONTACTS, None, None, None).await,
        s.raw(Method::GET, "/healthz", None, None, None).await,
    ] {
        assert_eq!(r.headers["x-content-type-options"], "nosniff", "{}", r.body);
    }
    let created = s.post("/api/v1/keys", json!({"name": "ci"})).await;
    assert_eq!(created.status, StatusCode::OK);
    assert!(created.body["data"]["key"].is_string());
    assert_eq!(created.headers["cache-control"], "no-store");
}

#[tokio::test]
async fn a_401_names_the_bearer_scheme() {
    let s = TestServer::start().await;
    let missing = s.raw(Method::GET, CONTACTS, None, None, None).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        missing.headers["www-authenticate"],
        "Bearer realm=\"contactd\""
    );
    let wrong = s
        .raw(Method::GET, CONTACTS, Some("oc_live_nope"), None, None)
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        wrong.headers["www-authenticate"],
        "Bearer realm=\"contactd\", error=\"invalid_token\""
    );
}

#[tokio::test]
async fn two_authorization_headers_are_400() {
    let s = TestServer::start().await;
    let (status, _, body) = s
        .send_bytes(
            Method::GET,
            CONTACTS,
            &[("authorization", "Bearer oc_live_other")],
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        body,
        json!({"message": "Send one Authorization header, not several."})
    );
}

#[tokio::test]
async fn the_last_active_admin_key_cannot_be_revoked() {
    let s = TestServer::start().await;
    let keys = s.get("/api/v1/keys").await;
    let first = keys.body["data"][0]["id"].as_str().unwrap().to_owned();
    let r = s.delete(&format!("/api/v1/keys/{first}")).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.message().contains("last active admin key"), "{}", r.body);
    assert_eq!(s.get(CONTACTS).await.status, StatusCode::OK, "still works");

    // An agent key does not count; another admin key does.
    s.agent_with_key("bot").await;
    assert_eq!(
        s.delete(&format!("/api/v1/keys/{first}")).await.status,
        StatusCode::CONFLICT
    );
    let second = s.post("/api/v1/keys", json!({"name": "second"})).await;
    let second_key = second.body["data"]["key"].as_str().unwrap().to_owned();
    let second_id = second.body["data"]["id"].as_str().unwrap().to_owned();
    let r = s.delete(&format!("/api/v1/keys/{first}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = s
        .call_as(
            &second_key,
            Method::DELETE,
            &format!("/api/v1/keys/{second_id}"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn attribute_definitions_stop_at_the_per_agent_limit() {
    let s = TestServer::start_with(|c| c.max_attributes_per_agent = 3).await;
    s.upsert(json!([{"external_id": "u1", "custom_attributes": {"a": 1, "b": 2}}]))
        .await;
    let r = s
        .post(
            CONTACTS,
            json!({"users": [
                {"external_id": "u2", "custom_attributes": {"c": 1}},
                {"external_id": "u3", "custom_attributes": {"d": 1, "a": 5}},
            ]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.issue_fields(), ["users[1].custom_attributes.d"]);
    assert!(r.body["issues"][0]["message"]
        .as_str()
        .unwrap()
        .contains("custom_attributes.max_per_agent"));
    let defs = s.get("/api/v1/chatbots/default/custom-attributes").await;
    assert_eq!(
        defs.body["data"].as_array().unwrap().len(),
        2,
        "nothing written"
    );
    assert_eq!(
        s.get(&contact_path("u2")).await.status,
        StatusCode::NOT_FOUND
    );

    s.upsert(json!([{"external_id": "u2", "custom_attributes": {"c": 1}}]))
        .await;
    let r = s
        .post(
            "/api/v1/chatbots/default/custom-attributes",
            json!({"name": "e", "type": "text"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.issue_fields(), ["name"]);
    let r = s
        .import(
            "/api/v1/chatbots/default/contacts/import",
            "text/csv",
            "external_id,a,f\nu4,1,x\nu5,2,\n",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["data"]["created"], 1, "{}", r.body);
    assert_eq!(r.body["data"]["errors"][0]["row"], 2);
    assert_eq!(r.body["data"]["errors"][0]["field"], "f");
}

#[tokio::test]
async fn import_files_left_by_a_killed_upload_are_removed_at_start() {
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let stale = dir.path().join("import-00112233aabbccdd.tmp");
    std::fs::write(&stale, b"external_id\nhalf").unwrap();
    let other = dir.path().join("notes.txt");
    std::fs::write(&other, b"kept").unwrap();
    let config = crate::common::base_config(&dir);
    let s = TestServer::start_in(dir, config).await;
    assert!(!stale.exists());
    assert!(other.exists());
    drop(s);
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_data_dir_is_private_and_an_open_one_is_tightened_at_start() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let proc = Proc::start(&data, Some(ADMIN_KEY));
    let db = data.join("contactd.redb");
    assert_eq!((mode(&data), mode(&db)), (0o700, 0o600));
    assert!(proc.terminate().success());

    // As an install made before the rule, or a careless restore, left it.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let proc = Proc::start(&data, Some(ADMIN_KEY));
    assert_eq!((mode(&data), mode(&db)), (0o700, 0o600));
    assert!(proc.terminate().success());
    let out = run(
        &["--data-dir", data.to_str().unwrap(), "check"],
        root.path(),
        &[],
    );
    assert!(out.status.success());
}

#[tokio::test]
async fn canonically_equivalent_external_ids_are_one_contact() {
    let s = TestServer::start().await;
    let composed = "Jos\u{e9}";
    let decomposed = "Jose\u{301}";
    s.upsert(json!([{"external_id": composed, "name": "first"}]))
        .await;
    let r = s
        .post(
            CONTACTS,
            json!({"users": [{"external_id": decomposed, "name": "second"}]}),
        )
        .await;
    assert_eq!(
        r.body["meta"],
        json!({"created": 0, "updated": 1, "skipped": 0})
    );
    assert_eq!(r.body["data"][0]["external_id"], composed);
    let r = s.get(&contact_path("Jose%CC%81")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["data"]["name"], "second");
    let r = s
        .get(&format!("{CONTACTS}?filter[external_id]=Jose%CC%81"))
        .await;
    assert_eq!(r.body["total"], 1);
}

#[tokio::test]
async fn external_ids_refuse_invisible_characters_and_surrounding_spaces() {
    let s = TestServer::start().await;
    for bad in [
        "a\u{200B}b",
        "a\u{202E}b",
        "\u{FEFF}a",
        " a",
        "a ",
        "a\u{0007}",
    ] {
        let r = s
            .post(CONTACTS, json!({"users": [{"external_id": bad}]}))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad:?}");
        assert_eq!(r.issue_fields(), ["users[0].external_id"], "{bad:?}");
    }
}

#[tokio::test]
async fn emails_are_one_under_nfc_case_folding_and_idna() {
    let s = TestServer::start().await;
    s.upsert(json!([{"external_id": "a", "email": "straße@bücher.de"}]))
        .await;
    for other in [
        "STRASSE@xn--bcher-kva.de",
        "strasse@BÜCHER.DE",
        "stra\u{df}e@bu\u{308}cher.de",
    ] {
        let r = s
            .post(
                CONTACTS,
                json!({"users": [{"external_id": "b", "email": other}]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{other}");
        assert!(r.body["issues"][0]["message"]
            .as_str()
            .unwrap()
            .contains("'a'"));
    }
    let r = s
        .get(&format!(
            "{CONTACTS}?filter[email]={}",
            "STRASSE%40xn--bcher-kva.de"
        ))
        .await;
    assert_eq!(crate::common::ext_ids(&r), ["a"]);
    let r = s.get(&contact_path("a")).await;
    assert_eq!(
        r.body["data"]["email"], "straße@bücher.de",
        "stored as sent"
    );
}

#[tokio::test]
async fn integers_stay_exact_over_64_bits_and_negative_zero_is_zero() {
    let s = TestServer::start().await;
    let body = r#"{"users":[
        {"external_id":"max","custom_attributes":{"n":18446744073709551615,"z":-0,"min":-9223372036854775808}},
        {"external_id":"below","custom_attributes":{"n":18446744073709551614}},
        {"external_id":"i64","custom_attributes":{"n":9223372036854775807}},
        {"external_id":"past","custom_attributes":{"n":9223372036854775808}}]}"#;
    let r = s.post_contacts_bytes(body.as_bytes().to_vec()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let (_, _, raw) = s
        .send_bytes(Method::GET, &contact_path("max"), &[], Vec::new())
        .await;
    let raw = String::from_utf8(raw.to_vec()).unwrap();
    assert!(raw.contains(r#""n":18446744073709551615"#), "{raw}");
    assert!(raw.contains(r#""min":-9223372036854775808"#), "{raw}");
    assert!(raw.contains(r#""z":0"#), "{raw}");
    let r = s
        .get(&format!("{CONTACTS}?sort=-custom_attributes.n"))
        .await;
    assert_eq!(crate::common::ext_ids(&r), ["max", "below", "past", "i64"]);
    let r = s
        .get(&format!(
            "{CONTACTS}?filter[custom_attributes.n][gt]=18446744073709551614"
        ))
        .await;
    assert_eq!(crate::common::ext_ids(&r), ["max"]);
    let r = s
        .get(&format!(
            "{CONTACTS}?filter[custom_attributes.n]=9223372036854775808"
        ))
        .await;
    assert_eq!(crate::common::ext_ids(&r), ["past"]);
}
