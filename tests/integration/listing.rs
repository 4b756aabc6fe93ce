//! API.md "GET /contacts": creation order, page/per_page, total and pages.

use hyper::StatusCode;
use serde_json::{json, Value};

use crate::common::*;

async fn seed(s: &TestServer, n: usize) {
    let users: Vec<Value> = (0..n)
        .map(|i| json!({"external_id": format!("c{i:03}")}))
        .collect();
    for chunk in users.chunks(1000) {
        s.upsert(json!(chunk)).await;
    }
}

#[tokio::test]
async fn lists_in_creation_order_with_totals() {
    let s = TestServer::start().await;
    seed(&s, 25).await;
    s.upsert(json!([{"external_id": "c000", "name": "updated later"}]))
        .await;
    let r = s.get(&format!("{CONTACTS}?per_page=10&page=2")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.message(), "Success");
    assert_eq!(
        ext_ids(&r),
        (10..20).map(|i| format!("c{i:03}")).collect::<Vec<_>>()
    );
    assert_eq!(r.body["total"], 25);
    assert_eq!(
        r.body["pages"],
        json!({"page": 2, "per_page": 10, "total_pages": 3})
    );
    let first = s.get(&format!("{CONTACTS}?per_page=10")).await;
    assert_eq!(
        ext_ids(&first)[0],
        "c000",
        "an update does not move a contact"
    );
}

#[tokio::test]
async fn defaults_are_page_1_and_100_per_page() {
    let s = TestServer::start().await;
    seed(&s, 120).await;
    let r = s.get(CONTACTS).await;
    assert_eq!(ext_ids(&r).len(), 100);
    assert_eq!(
        r.body["pages"],
        json!({"page": 1, "per_page": 100, "total_pages": 2})
    );
}

#[tokio::test]
async fn per_page_is_clamped_to_10_through_1000() {
    let s = TestServer::start().await;
    seed(&s, 1005).await;
    let r = s.get(&format!("{CONTACTS}?per_page=1")).await;
    assert_eq!(
        (ext_ids(&r).len(), r.body["pages"]["per_page"].clone()),
        (10, json!(10))
    );
    let r = s.get(&format!("{CONTACTS}?per_page=5000")).await;
    assert_eq!(
        (ext_ids(&r).len(), r.body["pages"]["per_page"].clone()),
        (1000, json!(1000))
    );
    assert_eq!(r.body["pages"]["total_pages"], 2);
}

#[tokio::test]
async fn page_past_the_end_is_empty() {
    let s = TestServer::start().await;
    seed(&s, 3).await;
    let r = s.get(&format!("{CONTACTS}?page=7")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["data"], json!([]));
    assert_eq!(r.body["total"], 3);
}

#[tokio::test]
async fn bad_page_parameters_are_400_naming_them() {
    let s = TestServer::start().await;
    for (query, fields) in [
        ("page=0", vec!["page"]),
        ("page=-1", vec!["page"]),
        ("page=abc", vec!["page"]),
        ("page=1.5&per_page=x", vec!["page", "per_page"]),
    ] {
        let r = s.get(&format!("{CONTACTS}?{query}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(r.message(), "Invalid request parameters");
        assert_eq!(r.issue_fields(), fields, "{query}");
    }
}

#[tokio::test]
async fn deleted_contacts_leave_the_listing_and_total() {
    let s = TestServer::start().await;
    seed(&s, 12).await;
    s.delete(&contact_path("c003")).await;
    let r = s.get(&format!("{CONTACTS}?per_page=10&page=1")).await;
    assert!(!ext_ids(&r).contains(&"c003".to_owned()));
    assert_eq!(r.body["total"], 11);
    assert_eq!(r.body["pages"]["total_pages"], 2);
}

/// `page=P` in creation order finds its contacts through the per-block counts: pages
/// across block boundaries, after deletions, in both directions, and past the end.
#[tokio::test]
async fn deep_pages_in_creation_order_skip_deleted_contacts_both_ways() {
    let s = TestServer::start().await;
    for batch in 0..3 {
        let users: Vec<_> = (batch * 1000..(batch + 1) * 1000)
            .map(|i| json!({"external_id": format!("n{i:04}")}))
            .collect();
        s.upsert(json!(users)).await;
    }
    let mut alive: Vec<String> = (0..3000).map(|i| format!("n{i:04}")).collect();
    for i in (0..3000).step_by(97).chain(1010..1040) {
        let ext = format!("n{i:04}");
        if let Some(at) = alive.iter().position(|e| *e == ext) {
            assert_eq!(s.delete(&contact_path(&ext)).await.status, StatusCode::OK);
            alive.remove(at);
        }
    }
    let newest: Vec<String> = alive.iter().rev().cloned().collect();
    for (sort, order) in [("", &alive), ("&sort=-created_at", &newest)] {
        for page in [1, 10, 11, 20, 27, 28, 29] {
            let r = s
                .get(&format!("{CONTACTS}?page={page}&per_page=100{sort}"))
                .await;
            let want: Vec<String> = order
                .iter()
                .skip((page - 1) * 100)
                .take(100)
                .cloned()
                .collect();
            assert_eq!(ext_ids(&r), want, "page {page}{sort}");
            assert_eq!(r.body["total"], alive.len());
        }
    }
}
