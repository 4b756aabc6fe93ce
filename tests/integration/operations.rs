//! Running in production: request budgets, failed-authentication limits per client IP,
//! read-only and expiring keys, and the OpenAPI document against the router.

use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{TestServer, ADMIN_KEY, CONTACTS};
use contactd::domain::RateLimit;
use contactd::http::{router, Route};

fn header(r: &crate::common::Reply, name: &str) -> Option<String> {
    r.headers.get(name).map(|v| v.to_str().unwrap().to_owned())
}

/// `(limit, remaining)` of an answer's `X-RateLimit-*` headers.
fn budget(r: &crate::common::Reply) -> Option<(u32, u32)> {
    Some((
        header(r, "x-ratelimit-limit")?.parse().unwrap(),
        header(r, "x-ratelimit-remaining")?.parse().unwrap(),
    ))
}

#[tokio::test]
async fn a_key_over_its_budget_gets_429_with_retry_after() {
    let server = TestServer::start_with(|c| {
        c.rate_limit = Some(RateLimit {
            requests: 3,
            per_secs: 60,
        });
    })
    .await;
    for left in [2, 1, 0] {
        let r = server.get("/api/v1/chatbots").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(budget(&r), Some((3, left)));
        let reset: u64 = header(&r, "x-ratelimit-reset").unwrap().parse().unwrap();
        assert!((1..=60).contains(&reset), "{reset}");
    }
    let r = server.get("/api/v1/chatbots").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.body, json!({"message": "Too many requests"}));
    assert_eq!(budget(&r), Some((3, 0)));
    let retry: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
    assert!(
        (1..=20).contains(&retry),
        "one token comes back every 20 s: {retry}"
    );
    // Errors of a key within budget carry the headers too, and need no key: health.
    assert!(budget(&server.get("/healthz").await).is_none());
}

#[tokio::test]
async fn a_key_created_with_its_own_limit_uses_it_and_an_import_counts_once() {
    let server = TestServer::start().await;
    let r = server
        .post(
            "/api/v1/keys",
            json!({"name": "bot", "rate_limit": {"requests": 2, "per_secs": 3600}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.body["data"]["rate_limit"],
        json!({"requests": 2, "per_secs": 3600})
    );
    let key = r.body["data"]["key"].as_str().unwrap().to_owned();
    // The server has no limit: the admin key's answers carry no budget.
    assert!(budget(&server.get("/api/v1/chatbots").await).is_none());
    let csv = (0..500).fold(String::from("external_id,name\n"), |mut s, i| {
        s.push_str(&format!("u{i},N{i}\n"));
        s
    });
    let r = server
        .raw(
            Method::POST,
            &format!("{CONTACTS}/import"),
            Some(&key),
            Some("text/csv"),
            Some(csv.into_bytes()),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(budget(&r), Some((2, 1)), "500 rows, one request");
    let r = server.call_as(&key, Method::GET, CONTACTS, None).await;
    assert_eq!(budget(&r), Some((2, 0)));
    let r = server.call_as(&key, Method::GET, CONTACTS, None).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    // Other keys have their own buckets.
    assert_eq!(server.get(CONTACTS).await.status, StatusCode::OK);
}

#[tokio::test]
async fn bad_rate_limits_are_400_naming_the_field() {
    let server = TestServer::start().await;
    for (limit, field) in [
        (json!({"requests": 0, "per_secs": 1}), "rate_limit.requests"),
        (json!({"requests": 5}), "rate_limit.per_secs"),
        (
            json!({"requests": 5, "per_secs": 1, "burst": 2}),
            "rate_limit.burst",
        ),
        (json!(5), "rate_limit"),
    ] {
        let r = server
            .post("/api/v1/keys", json!({"name": "k", "rate_limit": limit}))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{limit}");
        assert_eq!(r.issue_fields(), [field], "{}", r.body);
    }
}

#[tokio::test]
async fn failed_authentications_limit_the_client_ip_whatever_key_it_sends_next() {
    let server = TestServer::start_with(|c| c.auth_failures_per_min = Some(3)).await;
    for key in [Some("oc_live_wrong1"), None, Some("oc_live_wrong3")] {
        let r = server
            .raw(Method::GET, "/api/v1/chatbots", key, None, None)
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    // The IP is limited now: even the right key gets 429, on every route.
    for path in ["/api/v1/chatbots", "/api/v1/contacts"] {
        let r = server
            .raw(Method::GET, path, Some(ADMIN_KEY), None, None)
            .await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{path}");
        let retry: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
        assert!((1..=20).contains(&retry), "{retry}");
    }
    let r = server.get("/api/v1/keys").await;
    assert_eq!(r.body, json!({"message": "Too many requests"}));
    // Requests that need no key still work.
    assert_eq!(server.get("/healthz").await.status, StatusCode::OK);
}

#[tokio::test]
async fn behind_a_proxy_the_named_header_tells_clients_apart() {
    let server = TestServer::start_with(|c| {
        c.auth_failures_per_min = Some(2);
        c.client_ip_header = Some("x-forwarded-for".into());
    })
    .await;
    let first = [("x-forwarded-for", "10.0.0.1, 192.0.2.7")];
    let second = [("x-forwarded-for", "10.0.0.1, 192.0.2.8")];
    let chatbots = "/api/v1/chatbots";
    for _ in 0..2 {
        let r = server
            .with_headers(Method::GET, chatbots, "oc_live_nope", &first)
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let r = server
        .with_headers(Method::GET, chatbots, ADMIN_KEY, &first)
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    // The last address counts: another client behind the same proxy is not limited.
    let r = server
        .with_headers(Method::GET, chatbots, ADMIN_KEY, &second)
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn read_keys_read_and_every_write_route_refuses_them() {
    let server = TestServer::start().await;
    server
        .upsert(json!([{"external_id": "u1", "name": "Ada"}]))
        .await;
    let mut keys = Vec::new();
    for body in [
        json!({"name": "auditor", "access": "read"}),
        json!({"name": "bot reader", "access": "read", "chatbot_id": "default"}),
    ] {
        let r = server.post("/api/v1/keys", body).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["data"]["access"], "read");
        keys.push(r.body["data"]["key"].as_str().unwrap().to_owned());
    }
    let listed = server.get("/api/v1/keys").await;
    let accesses: Vec<&str> = listed.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["access"].as_str().unwrap())
        .collect();
    assert_eq!(accesses.iter().filter(|a| **a == "read").count(), 2);
    for key in &keys {
        let r = server.call_as(key, Method::GET, CONTACTS, None).await;
        assert_eq!(r.status, StatusCode::OK);
        let me = server.call_as(key, Method::GET, "/api/v1/me", None).await;
        assert_eq!(me.body["data"]["access"], "read");
        // Every method of every route that is not a read.
        for route in Route::samples() {
            let path = route
                .template()
                .replace("{chatbotId}", "default")
                .replace("{contactId}", "u1")
                .replace(['{', '}'], "");
            assert_eq!(
                router::route(&path).as_ref().map(Route::template),
                Some(route.template())
            );
            for method in route.allowed() {
                if *method == Method::GET || *method == Method::HEAD {
                    continue;
                }
                let r = server
                    .call_as(key, method.clone(), &path, Some(json!({"name": "x"})))
                    .await;
                assert_eq!(
                    r.status,
                    StatusCode::FORBIDDEN,
                    "{method} {path}: {}",
                    r.body
                );
            }
        }
    }
    let r = server.get(CONTACTS).await;
    assert_eq!(
        r.body["data"].as_array().unwrap().len(),
        1,
        "nothing changed"
    );
    assert_eq!(r.body["data"][0]["name"], "Ada");
}

#[tokio::test]
async fn an_expiring_key_works_until_its_time_then_gets_401() {
    let server = TestServer::start().await;
    let now = contactd::clock::unix_now();
    for (at, why) in [
        (json!(now - 1), "past"),
        (json!(now), "now"),
        (json!("soon"), "text"),
    ] {
        let r = server
            .post("/api/v1/keys", json!({"name": "t", "expires_at": at}))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{why}");
        assert_eq!(r.issue_fields(), ["expires_at"]);
    }
    let r = server
        .post("/api/v1/keys", json!({"name": "t", "expires_at": now + 2}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["data"]["expires_at"], now + 2);
    let key = r.body["data"]["key"].as_str().unwrap().to_owned();
    assert_eq!(
        server
            .call_as(&key, Method::GET, CONTACTS, None)
            .await
            .status,
        StatusCode::OK
    );
    while contactd::clock::unix_now() < now + 2 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = server.call_as(&key, Method::GET, CONTACTS, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.message(), "Invalid API key.");
}

#[tokio::test]
async fn bad_access_values_are_400() {
    let server = TestServer::start().await;
    for access in [json!("admin"), json!(1)] {
        let r = server
            .post("/api/v1/keys", json!({"name": "k", "access": access}))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.issue_fields(), ["access"]);
    }
}

/// The document served, parsed.
async fn openapi(server: &TestServer) -> Value {
    let r = server
        .raw(Method::GET, "/api/v1/openapi.json", None, None, None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "served without a key");
    assert_eq!(r.body["openapi"], "3.1.0");
    r.body
}

#[tokio::test]
async fn the_openapi_document_describes_every_api_route_and_method() {
    let server = TestServer::start().await;
    let doc = openapi(&server).await;
    let paths = doc["paths"].as_object().unwrap();
    let mut described = 0;
    for route in Route::samples() {
        let template = route.template();
        if !template.starts_with("/api/v1/") {
            continue;
        }
        let item = paths
            .get(template)
            .unwrap_or_else(|| panic!("{template} is not in docs/openapi.json"));
        for method in route.allowed() {
            if *method == Method::HEAD {
                continue;
            }
            let op = &item[method.as_str().to_ascii_lowercase()];
            assert!(op.is_object(), "{method} {template} is not described");
            assert!(
                op["responses"].is_object(),
                "{method} {template} has no responses"
            );
            described += 1;
        }
        // And nothing the route does not serve.
        for verb in item.as_object().unwrap().keys() {
            if ["parameters", "summary", "description"].contains(&verb.as_str()) {
                continue;
            }
            let method = Method::from_bytes(verb.to_ascii_uppercase().as_bytes()).unwrap();
            assert!(
                route.allowed().contains(&method),
                "{verb} {template} is not served"
            );
        }
    }
    assert!(described > 30, "{described}");
    // Every documented path is a route.
    for path in paths.keys() {
        let concrete = path.replace(['{', '}'], "");
        assert!(router::route(&concrete).is_some(), "{path} is no route");
    }
}
