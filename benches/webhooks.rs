//! Webhook deliveries to a local receiver, and what queueing events costs the writes.
//!
//! An in-process server on 127.0.0.1 (`webhooks.allow_private`), a receiver on port 0
//! that answers 200 and counts the events of each delivery (`Contactd-Event-Ids`), and
//! one endpoint taking `contact.*`. Four clients post batches of 1000 new contacts
//! until `CONTACTD_BENCH_CONTACTS` (default 200,000) are written, three times, each on
//! new contacts: with the endpoint inactive (nothing queued); with an active endpoint
//! on a port nobody listens on (every event queued, deliveries failing and backing
//! off: what queueing costs the writes); with the endpoint active on the receiver
//! (queueing and delivering at once). Printed: the three write rates and their ratios
//! to the first, the delivery rate while the writes run and the rate draining the
//! backlog after them, in events per second, and the events per delivery
//! (`webhooks.batch_max`, `CONTACTD_WEBHOOKS_BATCH_MAX`, default 100).
//!
//! Run: `cargo bench --bench webhooks` (about a minute at the default size).

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;

use common::{batch_body, is_bench_run, runtime, Server, Workload, BATCH};

/// Events and deliveries the receiver has seen.
#[derive(Default)]
struct Counts {
    events: AtomicU64,
    deliveries: AtomicU64,
}

async fn receiver(counts: Arc<Counts>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("cannot listen for the receiver");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counts = Arc::clone(&counts);
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let counts = Arc::clone(&counts);
                    async move {
                        let n = req
                            .headers()
                            .get("contactd-event-ids")
                            .and_then(|v| v.to_str().ok())
                            .map_or(0, |ids| ids.split(',').count() as u64);
                        let _ = req.into_body().collect().await;
                        counts.events.fetch_add(n, Ordering::Relaxed);
                        counts.deliveries.fetch_add(1, Ordering::Relaxed);
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// Writes contacts `from..from + n` in batches from four clients; returns the time.
async fn write(server: &Server, workload: &Arc<Workload>, from: u64, n: u64) -> Duration {
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let mut conn = server.connect().await;
        let (next, workload) = (Arc::clone(&next), Arc::clone(workload));
        clients.push(tokio::spawn(async move {
            loop {
                let batch = next.fetch_add(1, Ordering::Relaxed) * BATCH as u64;
                if batch >= n {
                    return;
                }
                let contacts = (batch..(batch + BATCH as u64).min(n))
                    .map(|i| workload.contact(from + i, 0))
                    .collect();
                conn.upsert(batch_body(contacts))
                    .await
                    .expect("a batch failed");
            }
        }));
    }
    for client in clients {
        client.await.expect("a client panicked");
    }
    started.elapsed()
}

fn main() {
    let n = match std::env::var("CONTACTD_BENCH_CONTACTS") {
        Ok(text) => text
            .trim()
            .parse()
            .expect("CONTACTD_BENCH_CONTACTS must be a whole number"),
        Err(_) if is_bench_run() => 200_000,
        Err(_) => 2_000,
    };
    let server = Server::start_with(|c| c.webhook_allow_private = true);
    let rt = runtime("webhooks-bench");
    let workload = Arc::new(Workload::new(0));
    let counts = Arc::new(Counts::default());
    rt.block_on(async {
        let addr = receiver(Arc::clone(&counts)).await;
        let mut conn = server.connect().await;
        let hook = conn
            .post_json(
                "/api/v1/webhooks",
                &json!({"url": format!("http://{addr}/in"), "events": ["contact.*"], "active": false}),
            )
            .await
            .expect("cannot create the webhook");
        let id = hook["data"]["id"].as_str().expect("a webhook id").to_owned();
        let quiet = write(&server, &workload, 0, n).await;
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("cannot pick a free port");
        let failing = conn
            .post_json(
                "/api/v1/webhooks",
                &json!({"url": format!("http://{closed}/in"), "events": ["contact.*"]}),
            )
            .await
            .expect("cannot create the failing webhook");
        let queue_only = write(&server, &workload, n, n).await;
        let failing = failing["data"]["id"].as_str().expect("a webhook id").to_owned();
        conn.delete_path(&format!("/api/v1/webhooks/{failing}"))
            .await
            .expect("cannot delete the failing webhook");
        let path = format!("/api/v1/webhooks/{id}");
        conn.put_json(&path, &json!({"active": true}))
            .await
            .expect("cannot activate the webhook");
        let started = Instant::now();
        let queued = write(&server, &workload, 2 * n, n).await;
        let during = counts.events.load(Ordering::Relaxed);
        let drain_started = Instant::now();
        while counts.events.load(Ordering::Relaxed) < n {
            assert!(
                drain_started.elapsed() < Duration::from_secs(600),
                "the deliveries stalled at {} of {n} events",
                counts.events.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let total = started.elapsed();
        let drain = drain_started.elapsed();
        let rate = |count: u64, d: Duration| count as f64 / d.as_secs_f64();
        println!("webhooks: {n} contacts per phase, 4 clients, batches of {BATCH}");
        println!(
            "writes, endpoint inactive: {:.1}k contacts/s",
            rate(n, quiet) / 1000.0
        );
        println!(
            "writes, events queued, deliveries failing: {:.1}k contacts/s ({:.2}x)",
            rate(n, queue_only) / 1000.0,
            quiet.as_secs_f64() / queue_only.as_secs_f64()
        );
        println!(
            "writes, events queued and delivered: {:.1}k contacts/s ({:.2}x)",
            rate(n, queued) / 1000.0,
            quiet.as_secs_f64() / queued.as_secs_f64()
        );
        println!(
            "delivered while writing: {:.1}k events/s; backlog after: {} events drained at {:.1}k events/s",
            rate(during, queued) / 1000.0,
            n - during.min(n),
            rate(n - during.min(n), drain) / 1000.0
        );
        println!(
            "overall: {:.1}k events/s, {:.1} events per delivery",
            rate(n, total) / 1000.0,
            n as f64 / counts.deliveries.load(Ordering::Relaxed).max(1) as f64
        );
    });
}
