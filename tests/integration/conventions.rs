//! API.md "Conventions": content types, unknown routes, methods, body limits, malformed
//! input. None of these may produce a 500.

use hyper::{Method, StatusCode};
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn healthz_needs_no_key() {
    let s = TestServer::start().await;
    let r = s.raw(Method::GET, "/healthz", None, None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, json!({"status": "ok"}));
}

#[tokio::test]
async fn unknown_route_is_404_resource_not_found() {
    let s = TestServer::start().await;
    for path in [
        "/api/v2/chatbots",
        "/api/v1/chatbots/default/contacts/a/b",
        "/nope",
        "/assets/nope.js",
    ] {
        let r = s.get(path).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(r.body, json!({"message": "Resource not found"}));
    }
}

#[tokio::test]
async fn wrong_method_is_405_with_allow_header() {
    let s = TestServer::start().await;
    let cases = [
        (Method::PUT, CONTACTS.to_owned(), "GET, HEAD, POST"),
        (Method::TRACE, CONTACTS.to_owned(), "GET, HEAD, POST"),
        (
            Method::from_bytes(b"QUERY").unwrap(),
            contact_path("x"),
            "GET, HEAD, PATCH, DELETE",
        ),
        (
            Method::POST,
            "/api/v1/chatbots/default".to_owned(),
            "GET, HEAD, DELETE",
        ),
        (Method::GET, "/api/v1/keys/key_1".to_owned(), "DELETE"),
    ];
    for (method, path, allow) in cases {
        let r = s.call(method.clone(), &path, None).await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_eq!(r.body, json!({"message": "Method not allowed"}));
        assert_eq!(r.headers["allow"], allow);
    }
}

#[tokio::test]
async fn non_json_content_type_is_415() {
    let s = TestServer::start().await;
    let body = br#"{"users":[{"external_id":"a"}]}"#.to_vec();
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/jsonx",
    ] {
        let r = s
            .raw(
                Method::POST,
                CONTACTS,
                Some(ADMIN_KEY),
                Some(ct),
                Some(body.clone()),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct}");
        assert_eq!(
            r.body,
            json!({"message": "Content-Type must be application/json"})
        );
    }
    let r = s
        .raw(
            Method::POST,
            CONTACTS,
            Some(ADMIN_KEY),
            Some("application/json; charset=utf-8"),
            Some(body.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = s
        .raw(Method::POST, CONTACTS, Some(ADMIN_KEY), None, Some(body))
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "no Content-Type at all is accepted"
    );
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let s = TestServer::start_with(|c| c.max_body_bytes = 1024).await;
    let big = json!({"users": [{"external_id": "a", "name": "x".repeat(2000)}]});
    let r = s.post(CONTACTS, big).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.body, json!({"message": "Request body too large"}));
    assert_eq!(s.get(CONTACTS).await.body["total"], 0);
}

#[tokio::test]
async fn chunked_body_over_the_limit_is_413() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start_with(|c| c.max_body_bytes = 1024).await;
    let mut stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "POST {CONTACTS} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = "a".repeat(800);
    for _ in 0..3 {
        stream
            .write_all(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes())
            .await
            .unwrap();
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
}

#[tokio::test]
async fn malformed_json_is_400_invalid_request_data() {
    let s = TestServer::start().await;
    let deep = "[".repeat(10_000);
    let bodies: Vec<Vec<u8>> = vec![
        b"{".to_vec(),
        b"not json".to_vec(),
        b"".to_vec(),
        b"{\"users\":[{\"name\":\"\xff\"}]}".to_vec(),
        b"{\"users\":[{\"custom_attributes\":{\"a\":1e999}}]}".to_vec(),
        deep.into_bytes(),
    ];
    for body in bodies {
        let r = s.post_contacts_bytes(body.clone()).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(r.message(), "Invalid request data");
        assert_eq!(r.issue_fields(), ["body"]);
    }
}

#[tokio::test]
async fn wrong_json_types_are_400_with_issues() {
    let s = TestServer::start().await;
    let r = s.post(CONTACTS, json!([1, 2])).await;
    assert_eq!(
        (r.status, r.message()),
        (StatusCode::BAD_REQUEST, "Invalid request data")
    );
    assert_eq!(r.issue_fields(), ["body"]);
    let r = s
        .post(CONTACTS, json!({"users": {"external_id": "a"}}))
        .await;
    assert_eq!(r.issue_fields(), ["users"]);
    let r = s
        .post(
            CONTACTS,
            json!({"users": [{"external_id": 5, "name": ["x"], "email": true, "phonenumber": 1}]}),
        )
        .await;
    assert_eq!(
        r.issue_fields(),
        [
            "users[0].external_id",
            "users[0].name",
            "users[0].email",
            "users[0].phonenumber"
        ]
    );
    let r = s.post(CONTACTS, json!({"users": ["x"]})).await;
    assert_eq!(r.issue_fields(), ["users[0]"]);
}

#[tokio::test]
async fn huge_integers_are_kept_or_rejected_never_500() {
    let s = TestServer::start().await;
    let body = br#"{"users":[{"external_id":"n","custom_attributes":{"big":123456789012345678901234567890,"max":9223372036854775807}}]}"#;
    let r = s.post_contacts_bytes(body.to_vec()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let attrs = &r.body["data"][0]["custom_attributes"];
    assert_eq!(attrs["max"], json!(9_223_372_036_854_775_807_i64));
    assert!(attrs["big"].as_f64().unwrap() > 1e29);
}

#[tokio::test]
async fn idle_keep_alive_connection_closes_after_the_header_read_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s =
        TestServer::start_with(|c| c.header_read_timeout = std::time::Duration::from_secs(1)).await;
    let mut stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0; 1024];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let idle_since = std::time::Instant::now();
    // The server closes the idle connection: the next read sees end of stream.
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("the idle connection was not closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(idle_since.elapsed() >= std::time::Duration::from_millis(900));
}

#[tokio::test]
async fn the_dashboard_is_served_without_a_key_with_csp_types_and_caching() {
    let s = TestServer::start().await;
    let r = s.raw(Method::GET, "/", None, None, None).await;
    assert_eq!(r.status, StatusCode::OK, "no key needed");
    let (status, headers, body) = s.send_bytes(Method::GET, "/", &[], Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["cache-control"], "no-cache");
    let page = String::from_utf8(body.to_vec()).unwrap();
    let script = page
        .split('"')
        .find(|part| part.starts_with("/assets/app.js?v="))
        .expect("the page loads its script by version")
        .to_owned();
    assert!(!page.contains("<script>"), "no inline script");

    let etag = headers["etag"].to_str().unwrap().to_owned();
    let (status, _, _) = s
        .send_bytes(Method::GET, "/", &[("if-none-match", &etag)], Vec::new())
        .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);

    let (status, headers, body) = s.send_bytes(Method::GET, &script, &[], Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    assert_eq!(
        headers["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert!(!body.is_empty());
    let (_, headers, _) = s
        .send_bytes(Method::GET, "/assets/app.js", &[], Vec::new())
        .await;
    assert_eq!(
        headers["cache-control"], "no-cache",
        "an unversioned URL is revalidated"
    );
    let (_, headers, _) = s
        .send_bytes(Method::GET, "/assets/style.css", &[], Vec::new())
        .await;
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
    let (status, _, _) = s.send_bytes(Method::POST, "/", &[], Vec::new()).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

/// `cors.allowed_origins`: an allowed origin's preflight is answered and its answers
/// carry the CORS headers; any other origin, or none configured, gets none of them.
#[tokio::test]
async fn cors_answers_allowed_origins_only() {
    let allowed = "https://app.example.com";
    let s = TestServer::start_with(|c| c.cors_origins = vec![allowed.to_owned()]).await;
    let preflight = [
        ("origin", allowed),
        ("access-control-request-method", "POST"),
        (
            "access-control-request-headers",
            "authorization, content-type",
        ),
    ];
    let (status, headers, body) = s
        .send_bytes(Method::OPTIONS, CONTACTS, &preflight, Vec::new())
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(body.is_empty());
    let header = |h: &hyper::HeaderMap, name: &str| {
        h.get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    assert_eq!(header(&headers, "access-control-allow-origin"), allowed);
    assert!(header(&headers, "access-control-allow-methods").contains("POST"));
    let allow_headers = header(&headers, "access-control-allow-headers");
    assert!(allow_headers.contains("Authorization") && allow_headers.contains("Content-Type"));
    assert_eq!(header(&headers, "access-control-max-age"), "600");
    assert_eq!(header(&headers, "vary"), "Origin");
    assert!(!headers.contains_key("access-control-allow-credentials"));

    let (status, headers, _) = s
        .send_bytes(Method::GET, CONTACTS, &[("origin", allowed)], Vec::new())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, "access-control-allow-origin"), allowed);
    let exposed = header(&headers, "access-control-expose-headers");
    for name in [
        "ETag",
        "X-Request-Id",
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
    ] {
        assert!(exposed.contains(name), "{name} in {exposed}");
    }

    let other = [
        ("origin", "https://evil.example"),
        ("access-control-request-method", "POST"),
    ];
    let (status, headers, _) = s
        .send_bytes(Method::OPTIONS, CONTACTS, &other, Vec::new())
        .await;
    assert_eq!(
        status,
        StatusCode::METHOD_NOT_ALLOWED,
        "no preflight for another origin"
    );
    assert!(!headers.contains_key("access-control-allow-origin"));
    let (_, headers, _) = s
        .send_bytes(Method::GET, CONTACTS, &other[..1], Vec::new())
        .await;
    assert!(!headers.contains_key("access-control-allow-origin"));

    let plain = TestServer::start().await;
    let (status, headers, _) = plain
        .send_bytes(Method::OPTIONS, CONTACTS, &preflight, Vec::new())
        .await;
    assert_eq!(
        status,
        StatusCode::METHOD_NOT_ALLOWED,
        "no origin is allowed by default"
    );
    assert!(!headers.contains_key("access-control-allow-origin"));
}
