//! The change feed: every committed change to a contact, through every kind of write,
//! numbered per agent in commit order; long polling; retention and 410.

use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{contact_path, Reply, TestServer, CONTACTS};

const FEED: &str = "/api/v1/chatbots/default/changes";

async fn feed(s: &TestServer, query: &str) -> Reply {
    s.get(&format!("{FEED}?{query}")).await
}

/// `(seq, type, external_id, changed)` of each entry of a feed page.
fn entries(r: &Reply) -> Vec<(u64, String, String, Vec<String>)> {
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let changed = e["changed"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap().to_owned())
                .collect();
            (
                e["seq"].as_u64().unwrap(),
                e["type"].as_str().unwrap().to_owned(),
                e["external_id"].as_str().unwrap().to_owned(),
                changed,
            )
        })
        .collect()
}

fn entry(seq: u64, kind: &str, ext: &str, changed: &[&str]) -> (u64, String, String, Vec<String>) {
    (
        seq,
        kind.to_owned(),
        ext.to_owned(),
        changed.iter().map(|f| (*f).to_owned()).collect(),
    )
}

#[tokio::test]
async fn every_kind_of_write_lands_in_the_feed_in_commit_order() {
    let s = TestServer::start().await;
    s.upsert(json!([
        {"external_id": "u1", "name": "Ada", "email": "ada@example.com"},
        {"external_id": "u2", "name": "Grace"}
    ]))
    .await;
    // The same values again change nothing, so they are no change.
    s.upsert(json!([{"external_id": "u1", "name": "Ada"}]))
        .await;
    let r = s
        .patch(
            &contact_path("u1"),
            json!({"name": "Ada King", "custom_attributes": {"plan": "pro"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = s
        .import(
            &format!("{CONTACTS}/import"),
            "text/csv",
            "external_id,name\nu3,Linus\n",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = s
        .post(
            "/api/v1/contacts",
            json!([{"name": "Pabbly", "mobile": "+14155550100"}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = s
        .post("/api/v1/chatbots/default/lists", json!({"name": "vip"}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = s
        .post(
            "/api/v1/chatbots/default/lists/vip/contacts",
            json!({"external_ids": ["u2"]}),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.body);
    let r = s.delete(&contact_path("u2")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    let page = feed(&s, "").await;
    let pabbly_ext = page.body["data"][4]["external_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        entries(&page),
        [
            entry(1, "created", "u1", &[]),
            entry(2, "created", "u2", &[]),
            entry(3, "updated", "u1", &["name", "custom_attributes.plan"]),
            entry(4, "created", "u3", &[]),
            entry(5, "created", &pabbly_ext, &[]),
            entry(6, "updated", "u2", &["lists"]),
            entry(7, "deleted", "u2", &[]),
        ]
    );
    assert_eq!(page.body["next_after"], 7);
    let data = page.body["data"].as_array().unwrap();
    // Each entry holds the contact as that change left it.
    assert_eq!(data[0]["contact"]["name"], "Ada");
    assert_eq!(data[2]["contact"]["name"], "Ada King");
    assert_eq!(data[2]["contact"]["custom_attributes"]["plan"], "pro");
    assert_eq!(data[5]["contact"]["lists"], json!(["vip"]));
    assert!(data[6].get("contact").is_none(), "{}", data[6]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for e in data {
        let at = e["at"].as_u64().unwrap();
        assert!(at <= now && now - at < 60, "{e}");
    }
}

#[tokio::test]
async fn pages_follow_next_after_and_limit_is_clamped() {
    let s = TestServer::start().await;
    let users: Vec<Value> = (0..5)
        .map(|i| json!({"external_id": format!("p{i}")}))
        .collect();
    s.upsert(Value::Array(users)).await;
    let first = feed(&s, "limit=2").await;
    assert_eq!(entries(&first).len(), 2);
    assert_eq!(first.body["next_after"], 2);
    let rest = feed(&s, "after=2&limit=100000").await;
    let seqs: Vec<u64> = entries(&rest).iter().map(|e| e.0).collect();
    assert_eq!(seqs, [3, 4, 5]);
    // Up to date: nothing, and the same place to ask from.
    let idle = feed(&s, "after=5").await;
    assert!(entries(&idle).is_empty());
    assert_eq!(idle.body["next_after"], 5);
    let bad = feed(&s, "after=-1&limit=ten&wait=soon").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.issue_fields(), ["after", "limit", "wait"]);
}

#[tokio::test]
async fn a_long_poll_answers_as_soon_as_a_change_is_committed() {
    let s = TestServer::start().await;
    s.upsert(json!([{"external_id": "w0"}])).await;
    let url = format!("{FEED}?after=1&wait=20");
    let started = Instant::now();
    let (waited, ()) = tokio::join!(s.get(&url), async {
        // Sent once the poll is (most likely) waiting; had the poll not read yet, it
        // must return the change all the same.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let r = s
            .post(CONTACTS, json!({"users": [{"external_id": "w1"}]}))
            .await;
        assert_eq!(r.status, StatusCode::OK);
    });
    assert_eq!(entries(&waited), [entry(2, "created", "w1", &[])]);
    assert!(started.elapsed() < Duration::from_secs(10));
    // Without a change the poll ends empty when its wait is over.
    let started = Instant::now();
    let idle = feed(&s, "after=2&wait=0.3").await;
    assert!(entries(&idle).is_empty());
    assert_eq!(idle.body["next_after"], 2);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn agents_have_their_own_numbers_and_keys_see_only_their_agent() {
    let s = TestServer::start().await;
    let key = s.agent_with_key("other").await;
    s.upsert(json!([{"external_id": "d1"}])).await;
    let r = s
        .call_as(
            &key,
            Method::POST,
            "/api/v1/chatbots/other/contacts",
            Some(json!({"users": [{"external_id": "o1"}]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let mine = s
        .call_as(&key, Method::GET, "/api/v1/chatbots/other/changes", None)
        .await;
    assert_eq!(entries(&mine), [entry(1, "created", "o1", &[])]);
    let r = s.call_as(&key, Method::GET, FEED, None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Deleting the agent deletes its feed; a new agent of that id starts again at 1,
    // and a client still at the old numbers is told to start over.
    assert_eq!(
        s.delete("/api/v1/chatbots/other").await.status,
        StatusCode::OK
    );
    let r = s
        .post("/api/v1/chatbots", json!({"id": "other", "name": "again"}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = s.get("/api/v1/chatbots/other/changes?after=1").await;
    assert_eq!(r.status, StatusCode::GONE, "{}", r.body);
    assert_eq!(r.body["oldest"], 1);
}

/// A change committed 30 days ago, on a server keeping a day of changes: it is pruned
/// (here, before the restarted server answers anything).
#[tokio::test]
async fn pruned_changes_are_410_with_the_oldest_number_held() {
    let s = TestServer::start().await;
    let mut config = crate::common::base_config(&s.dir);
    config.changes_retention = Duration::from_secs(86_400);
    let dir = s.stop().await;
    {
        let store = contactd::store::RedbStore::open(dir.path()).unwrap();
        let mut issues = contactd::domain::Issues::new();
        let old =
            contactd::domain::ContactInput::parse(&json!({"external_id": "old"}), "", &mut issues)
                .unwrap();
        let month_ago = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            - 30 * 86_400;
        contactd::store::Store::upsert_contacts(
            &store,
            "default".into(),
            vec![old],
            contactd::store::OnDuplicate::Update,
            contactd::domain::WriteRules::default(),
            month_ago,
        )
        .await
        .unwrap();
        store.shutdown();
    }
    let s = TestServer::start_in(dir, config).await;
    s.upsert(json!([{"external_id": "new"}])).await;
    let r = feed(&s, "after=0").await;
    assert_eq!(r.status, StatusCode::GONE, "{}", r.body);
    assert_eq!(r.body["oldest"], 2);
    assert!(r.message().contains("retention"), "{}", r.body);
    let r = feed(&s, "after=1").await;
    assert_eq!(entries(&r), [entry(2, "created", "new", &[])]);
}

#[tokio::test]
async fn the_feed_survives_a_restart_and_continues_its_numbers() {
    let s = TestServer::start().await;
    s.upsert(json!([{"external_id": "r1"}, {"external_id": "r2"}]))
        .await;
    let config = crate::common::base_config(&s.dir);
    let dir = s.stop().await;
    let s = TestServer::start_in(dir, config).await;
    s.upsert(json!([{"external_id": "r3"}])).await;
    let seqs: Vec<u64> = entries(&feed(&s, "").await).iter().map(|e| e.0).collect();
    assert_eq!(seqs, [1, 2, 3]);
}
