//! Webhooks against a real HTTP receiver on port 0: signatures, batching and order,
//! retries, redirects, deactivation, secret rotation, scoping, TLS, the address checks,
//! and delivery after a kill -9.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::common::{Reply, TestServer, CONTACTS};
use crate::process::{http, Proc};

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    signature: String,
    event_ids: String,
    body: Vec<u8>,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// The `type` and contact `external_id` of each event.
    fn events(&self) -> Vec<(String, String)> {
        self.json()["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["type"].as_str().unwrap().to_owned(),
                    e["data"]["contact"]["external_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect()
    }
}

/// A receiver on 127.0.0.1:0 that answers each request with the next status of
/// `script` (200 once it is used up), and reports every request on a channel.
struct Receiver {
    addr: SocketAddr,
    got: mpsc::UnboundedReceiver<Received>,
}

impl Receiver {
    async fn start(script: &[u16]) -> Self {
        Self::start_tls(script, None).await
    }

    async fn start_tls(script: &[u16], tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, script, tls)
    }

    /// A receiver answering 200 on a port chosen beforehand.
    async fn start_on(port: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        Self::serve(listener, &[], None)
    }

    fn serve(
        listener: TcpListener,
        script: &[u16],
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Self {
        let addr = listener.local_addr().unwrap();
        let (tx, got) = mpsc::unbounded_channel();
        let script = Arc::new(Mutex::new(script.to_vec()));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (tx, script, tls) = (tx.clone(), Arc::clone(&script), tls.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (tx, script) = (tx.clone(), Arc::clone(&script));
                        async move {
                            let header = |name: &str| {
                                req.headers()
                                    .get(name)
                                    .map(|v| v.to_str().unwrap().to_owned())
                                    .unwrap_or_default()
                            };
                            let received = Received {
                                path: req.uri().path().to_owned(),
                                signature: header("contactd-signature"),
                                event_ids: header("contactd-event-ids"),
                                body: Vec::new(),
                            };
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let _ = tx.send(Received {
                                body: body.to_vec(),
                                ..received
                            });
                            let status = {
                                let mut script = script.lock();
                                if script.is_empty() {
                                    200
                                } else {
                                    script.remove(0)
                                }
                            };
                            let mut response =
                                Response::new(Full::new(Bytes::from(format!("answer {status}"))));
                            *response.status_mut() = StatusCode::from_u16(status).unwrap();
                            if (300..400).contains(&status) {
                                response
                                    .headers_mut()
                                    .insert("location", "/redirected".parse().unwrap());
                            }
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let builder = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(acceptor) => {
                            let stream = acceptor.accept(stream).await.unwrap();
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        Self { addr, got }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// The next request, within 20 s.
    async fn next(&mut self) -> Received {
        tokio::time::timeout(Duration::from_secs(20), self.got.recv())
            .await
            .expect("no delivery within 20 s")
            .unwrap()
    }
}

/// Whether `header` (`t=…,v1=…[,v1=…]`) holds a valid signature of `body` by `secret`.
fn signed_by(header: &str, secret: &str, body: &[u8]) -> bool {
    let mut t = "";
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v,
            Some(("v1", v)) => sigs.push(v.to_owned()),
            _ => {}
        }
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    sigs.contains(&expected)
}

async fn private_server(tweak: impl FnOnce(&mut contactd::config::Config)) -> TestServer {
    TestServer::start_with(|c| {
        c.webhook_allow_private = true;
        tweak(c);
    })
    .await
}

/// Creates an endpoint; returns its id and secret.
async fn hook(s: &TestServer, body: Value) -> (String, String) {
    let r = s.post("/api/v1/webhooks", body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.headers["cache-control"], "no-store");
    (
        r.body["data"]["id"].as_str().unwrap().to_owned(),
        r.body["data"]["secret"].as_str().unwrap().to_owned(),
    )
}

async fn deliveries(s: &TestServer, id: &str) -> Vec<Value> {
    let r = s.get(&format!("/api/v1/webhooks/{id}/deliveries")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["data"].as_array().unwrap().clone()
}

#[tokio::test]
async fn deliveries_are_signed_batched_and_in_change_order() {
    let mut rx = Receiver::start(&[]).await;
    let s = private_server(|c| c.webhook_batch_max = 3).await;
    let (id, secret) = hook(&s, json!({"url": rx.url(), "events": ["contact.*"]})).await;
    let users: Vec<Value> = (0..7)
        .map(|i| json!({"external_id": format!("u{i}"), "name": format!("N{i}")}))
        .collect();
    s.upsert(Value::Array(users)).await;
    let r = s
        .patch(
            "/api/v1/chatbots/default/contacts/u3",
            json!({"name": "Changed"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        s.delete("/api/v1/chatbots/default/contacts/u4")
            .await
            .status,
        StatusCode::OK
    );
    let mut events = Vec::new();
    let mut sizes = Vec::new();
    while events.len() < 9 {
        let got = rx.next().await;
        assert_eq!(got.path, "/hook");
        assert!(
            signed_by(&got.signature, &secret, &got.body),
            "{}",
            got.signature
        );
        let body = got.json();
        let ids: Vec<&str> = body["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap())
            .collect();
        assert_eq!(got.event_ids, ids.join(","));
        for e in body["events"].as_array().unwrap() {
            assert_eq!(e["chatbot_id"], "default");
            assert!(e["created_at"].as_i64().unwrap() > 1_700_000_000);
        }
        sizes.push(ids.len());
        events.extend(got.events());
    }
    assert!(sizes.iter().all(|n| *n <= 3), "{sizes:?}");
    let expected: Vec<(String, String)> = (0..7)
        .map(|i| ("contact.created".to_owned(), format!("u{i}")))
        .chain([
            ("contact.updated".to_owned(), "u3".to_owned()),
            ("contact.deleted".to_owned(), "u4".to_owned()),
        ])
        .collect();
    assert_eq!(events, expected);
    // An endpoint's deliveries are one at a time: once the next one arrives, every
    // earlier one is recorded. Each is listed as succeeded, newest first.
    s.upsert(json!([{"external_id": "sentinel"}])).await;
    rx.next().await;
    let listed = deliveries(&s, &id).await;
    let done: Vec<&Value> = listed
        .iter()
        .filter(|d| d["id"].as_str().unwrap().parse::<usize>().unwrap() <= sizes.len())
        .collect();
    assert_eq!(done.len(), sizes.len(), "{listed:?}");
    assert!(
        done.iter().all(|d| d["status"] == "succeeded"),
        "{listed:?}"
    );
    assert_eq!(done[0]["attempts"][0]["response_code"], 200);
    let ids: Vec<usize> = done
        .iter()
        .map(|d| d["event_ids"].as_array().unwrap().len())
        .rev()
        .collect();
    assert_eq!(ids, sizes);
    let r = s.get(&format!("/api/v1/webhooks/{id}")).await;
    assert!(r.body["data"].get("secret").is_none());
}

#[tokio::test]
async fn a_failing_receiver_is_retried_until_it_recovers_and_later_events_wait() {
    let mut rx = Receiver::start(&[500, 503]).await;
    let s = private_server(|_| {}).await;
    let (id, _) = hook(&s, json!({"url": rx.url(), "events": ["*"]})).await;
    s.upsert(json!([{"external_id": "first"}])).await;
    let one = rx.next().await;
    s.upsert(json!([{"external_id": "second"}])).await;
    let two = rx.next().await;
    let three = rx.next().await;
    // The failed batch is sent again as it was; the later event waits behind it.
    assert_eq!(one.events(), [("contact.created".into(), "first".into())]);
    assert_eq!(two.body, one.body);
    assert_eq!(three.body, one.body);
    let four = rx.next().await;
    assert_eq!(four.events(), [("contact.created".into(), "second".into())]);
    // The first delivery is recorded before the second is sent.
    let listed = deliveries(&s, &id).await;
    let first = listed.iter().find(|d| d["id"] == "1").unwrap();
    let codes: Vec<Value> = first["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["response_code"].clone())
        .collect();
    assert_eq!(codes, [json!(500), json!(503), json!(200)]);
    assert_eq!(first["attempts"][0]["response_body"], "answer 500");
    assert_eq!(first["status"], "succeeded");
    // A delivery can be sent again by hand, whatever its status.
    let delivery = first["id"].as_str().unwrap();
    let r = s
        .post(
            &format!("/api/v1/webhooks/{id}/deliveries/{delivery}/retry"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["data"]["attempts"].as_array().unwrap().len(), 4);
    assert_eq!(rx.next().await.body, one.body);
}

#[tokio::test]
async fn redirects_are_failures_and_are_not_followed() {
    let mut rx = Receiver::start(&[302]).await;
    let s = private_server(|_| {}).await;
    let (id, _) = hook(&s, json!({"url": rx.url(), "events": ["contact.created"]})).await;
    s.upsert(json!([{"external_id": "r"}])).await;
    let first = rx.next().await;
    let second = rx.next().await;
    assert_eq!(
        (first.path.as_str(), second.path.as_str()),
        ("/hook", "/hook")
    );
    let listed = deliveries(&s, &id).await;
    let attempt = &listed[0]["attempts"][0];
    assert_eq!(attempt["response_code"], 302);
    assert!(
        attempt["error"].as_str().unwrap().contains("redirect"),
        "{attempt}"
    );
}

#[tokio::test]
async fn an_endpoint_failing_past_max_age_is_deactivated_with_its_reason() {
    let mut rx = Receiver::start(&[500; 100]).await;
    // 3.6 s.
    let s = private_server(|c| c.webhook_max_age = Duration::from_millis(3600)).await;
    let (id, _) = hook(&s, json!({"url": rx.url(), "events": ["contact.*"]})).await;
    s.upsert(json!([{"external_id": "x"}])).await;
    let path = format!("/api/v1/webhooks/{id}");
    // Attempts until the delivery is older than max_age; the one after it is not made.
    let first = rx.next().await;
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(3600) {
        assert_eq!(rx.next().await.body, first.body);
    }
    // The server has no event for the deactivation it records after the last attempt:
    // wait for it (bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let r = loop {
        let r = s.get(&path).await;
        if r.body["data"]["active"] == false || std::time::Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(r.body["data"]["active"], false, "{}", r.body);
    assert!(
        r.body["data"]["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("answered 500"),
        "{}",
        r.body
    );
    assert_eq!(r.body["data"]["queued"], 0);
    let listed = deliveries(&s, &id).await;
    assert_eq!(listed[0]["status"], "failed");
    // Events while it is inactive are not queued for it.
    s.upsert(json!([{"external_id": "y"}])).await;
    assert_eq!(s.get(&path).await.body["data"]["queued"], 0);
    // Turned on again, it takes new events.
    let r = s
        .call(Method::PUT, &path, Some(json!({"active": true})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["data"]["disabled_reason"], Value::Null);
}

#[tokio::test]
async fn a_rotated_secret_signs_beside_the_new_one() {
    let mut rx = Receiver::start(&[]).await;
    let s = private_server(|_| {}).await;
    let (id, old) = hook(&s, json!({"url": rx.url(), "events": ["contact.*"]})).await;
    let r = s
        .post(&format!("/api/v1/webhooks/{id}/rotate-secret"), json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let new = r.body["data"]["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    s.upsert(json!([{"external_id": "s"}])).await;
    let got = rx.next().await;
    assert_eq!(got.signature.matches("v1=").count(), 2, "{}", got.signature);
    assert!(signed_by(&got.signature, &new, &got.body));
    assert!(signed_by(&got.signature, &old, &got.body));
}

#[tokio::test]
async fn agent_keys_see_their_own_endpoints_and_agent_deletion_is_an_event() {
    let mut rx = Receiver::start(&[]).await;
    let s = private_server(|_| {}).await;
    let key = s.agent_with_key("shop").await;
    let r = s
        .call_as(
            &key,
            Method::POST,
            "/api/v1/webhooks",
            Some(json!({"url": rx.url(), "events": ["contact.created"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["data"]["chatbot_id"], "shop");
    let scoped = r.body["data"]["id"].as_str().unwrap().to_owned();
    let (admin_hook, _) = hook(&s, json!({"url": rx.url(), "events": ["agent.deleted"]})).await;
    // The agent key cannot see or reach the admin's endpoint, nor make one for another agent.
    let r = s.call_as(&key, Method::GET, "/api/v1/webhooks", None).await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 1);
    let r = s
        .call_as(
            &key,
            Method::GET,
            &format!("/api/v1/webhooks/{admin_hook}"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = s
        .call_as(
            &key,
            Method::POST,
            "/api/v1/webhooks",
            Some(json!({"url": rx.url(), "events": ["*"], "chatbot_id": "default"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Only the scoped endpoint hears of its agent's contacts.
    let r = s
        .call_as(
            &key,
            Method::POST,
            "/api/v1/chatbots/shop/contacts",
            Some(json!({"users": [{"external_id": "buyer"}]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let got = rx.next().await;
    assert_eq!(got.events(), [("contact.created".into(), "buyer".into())]);
    s.upsert(json!([{"external_id": "elsewhere"}])).await;
    assert_eq!(
        s.delete("/api/v1/chatbots/shop").await.status,
        StatusCode::OK
    );
    let got = rx.next().await;
    let event = &got.json()["events"][0];
    assert_eq!(event["type"], "agent.deleted");
    assert_eq!(event["data"]["contact_count"], 1);
    // The agent's own endpoint went with it.
    let r = s.get(&format!("/api/v1/webhooks/{scoped}")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn attribute_definitions_are_events_too() {
    let mut rx = Receiver::start(&[]).await;
    let s = private_server(|_| {}).await;
    hook(&s, json!({"url": rx.url(), "events": ["attribute.*"]})).await;
    let path = "/api/v1/chatbots/default/custom-attributes";
    let r = s.post(path, json!({"name": "plan", "type": "text"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = s
        .call(
            Method::PUT,
            &format!("{path}/plan"),
            Some(json!({"label": "Plan"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // Defined on the fly by a contact write.
    s.upsert(json!([{"external_id": "a", "custom_attributes": {"seats": 3}}]))
        .await;
    let mut seen = Vec::new();
    while seen.len() < 3 {
        for e in rx.next().await.json()["events"].as_array().unwrap() {
            seen.push((
                e["type"].as_str().unwrap().to_owned(),
                e["data"]["attribute"]["name"].as_str().unwrap().to_owned(),
            ));
        }
    }
    assert_eq!(
        seen,
        [
            ("attribute.created".to_owned(), "plan".to_owned()),
            ("attribute.updated".to_owned(), "plan".to_owned()),
            ("attribute.created".to_owned(), "seats".to_owned()),
        ]
    );
}

#[tokio::test]
async fn private_addresses_are_refused_unless_allowed() {
    let s = TestServer::start().await;
    for url in [
        "http://127.0.0.1:9/h",
        "http://10.0.0.8/h",
        "http://[::1]/h",
        "http://[::ffff:192.168.0.1]/h",
        "http://169.254.169.254/latest",
        "http://100.64.1.1/h",
        "http://0.0.0.0/h",
        "http://localhost/h",
    ] {
        let r: Reply = s
            .post("/api/v1/webhooks", json!({"url": url, "events": ["*"]}))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{url}: {}", r.body);
        assert_eq!(r.issue_fields(), ["url"], "{url}");
    }
    // A name is checked on the address it resolves to, when a delivery connects.
    let sender = contactd::webhooks::send::Sender::new(None, false).unwrap();
    let refused = sender
        .post("http://localhost:9/h", &[], Bytes::from_static(b"{}"))
        .await
        .unwrap_err();
    assert!(refused.contains("private"), "{refused}");
}

#[tokio::test]
async fn tls_endpoints_work_with_a_private_ca() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, cert.cert.pem()).unwrap();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(rustls_pki_types::PrivatePkcs8KeyDer::from(
        cert.signing_key.serialize_der(),
    ));
    #[allow(deprecated)]
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let mut rx = Receiver::start_tls(&[], Some(acceptor)).await;
    let s = private_server(|c| c.webhook_ca_file = Some(ca.clone())).await;
    let url = format!("https://localhost:{}/secure", rx.addr.port());
    hook(&s, json!({"url": url, "events": ["contact.created"]})).await;
    s.upsert(json!([{"external_id": "tls"}])).await;
    let got = rx.next().await;
    assert_eq!(got.path, "/secure");
    assert_eq!(got.events(), [("contact.created".into(), "tls".into())]);
}

/// A change committed while the receiver is down, then a kill -9: the restarted
/// server delivers it.
#[tokio::test]
async fn a_change_committed_before_a_kill_9_is_delivered_after_the_restart() {
    const KEY: &str = "oc_live_WebhookKill9Key0123456789abcdefgh";
    let dir = tempfile::tempdir().unwrap();
    // A port nobody listens on yet: deliveries fail until the receiver starts there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let flags = ["--webhooks-allow-private", "true"];
    let proc = Proc::start_with(dir.path(), Some(KEY), &flags);
    let (status, body) = http(
        &proc.addr,
        Method::POST,
        "/api/v1/webhooks",
        KEY,
        Some(
            json!({"url": format!("http://127.0.0.1:{port}/late"), "events": ["contact.created"]}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = http(
        &proc.addr,
        Method::POST,
        CONTACTS,
        KEY,
        Some(json!({"users": [{"external_id": "survivor"}]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let mut proc = proc;
    proc.child.kill().unwrap();
    proc.child.wait().unwrap();
    let mut rx = Receiver::start_on(port).await;
    let _proc = Proc::start_with(dir.path(), Some(KEY), &flags);
    let got = rx.next().await;
    assert_eq!(got.path, "/late");
    assert_eq!(
        got.events(),
        [("contact.created".into(), "survivor".into())]
    );
}
