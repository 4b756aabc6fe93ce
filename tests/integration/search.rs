//! Issue 4's list extensions: `q`, `sort`, `filter[...]`, cursors, and the email lookup.

use hyper::StatusCode;
use serde_json::{json, Value};

use crate::common::*;

fn get_ids(r: &Reply) -> Vec<String> {
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    ext_ids(r)
}

/// A GET of the contacts list with these (unencoded) parameters.
async fn list(s: &TestServer, params: &[(&str, &str)]) -> Reply {
    let query: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    s.get(&format!("{CONTACTS}?{query}")).await
}

async fn seed(s: &TestServer) {
    for (name, kind) in [
        ("ltv", "number"),
        ("vip", "boolean"),
        ("seen", "date"),
        ("plan", "text"),
    ] {
        let r = s
            .post(
                "/api/v1/chatbots/default/custom-attributes",
                json!({"name": name, "type": kind}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    s.upsert(json!([
        {"external_id": "a", "name": "Sam Rivera", "email": "sam@acme.com", "phonenumber": "+1 (555) 123-4567",
         "custom_attributes": {"ltv": 540, "vip": true, "seen": "2026-11-01", "plan": "Pro"}},
        {"external_id": "b", "name": "ada lovelace", "email": "Ada@Engines.org", "phonenumber": "+44 20 7946 0000",
         "custom_attributes": {"ltv": 9, "vip": false, "seen": "2025-01-15T10:00:00Z", "plan": "basic"}},
        {"external_id": "c", "name": "Zed Samson", "custom_attributes": {"ltv": 10, "plan": "enterprise"}},
        {"external_id": "d", "email": "d@acme.com", "custom_attributes": {"vip": true}}
    ]))
    .await;
}

#[tokio::test]
async fn q_matches_word_prefixes_across_fields() {
    let s = TestServer::start().await;
    seed(&s).await;
    assert_eq!(get_ids(&list(&s, &[("q", "sam")]).await), ["a", "c"]);
    assert_eq!(
        get_ids(&list(&s, &[("q", "SAM riv")]).await),
        ["a"],
        "every term must match"
    );
    assert_eq!(
        get_ids(&list(&s, &[("q", "acme")]).await),
        ["a", "d"],
        "email domain"
    );
    assert_eq!(
        get_ids(&list(&s, &[("q", "ada@eng")]).await),
        ["b"],
        "whole address"
    );
    assert_eq!(
        get_ids(&list(&s, &[("q", "555 123")]).await),
        ["a"],
        "phone digits"
    );
    assert_eq!(get_ids(&list(&s, &[("q", "5551234567")]).await), ["a"]);
    assert_eq!(
        get_ids(&list(&s, &[("q", "amson")]).await),
        Vec::<String>::new(),
        "prefixes only"
    );
    let r = list(&s, &[("q", "sam"), ("sort", "-name")]).await;
    assert_eq!(get_ids(&r), ["c", "a"], "results keep the requested sort");
    assert_eq!(r.body["total"], 2);
}

#[tokio::test]
async fn sort_by_core_columns_both_ways() {
    let s = TestServer::start().await;
    seed(&s).await;
    assert_eq!(
        get_ids(&list(&s, &[("sort", "name")]).await),
        ["b", "a", "c", "d"],
        "case-insensitive, missing last"
    );
    assert_eq!(
        get_ids(&list(&s, &[("sort", "-name")]).await),
        ["c", "a", "b", "d"],
        "missing last when descending too"
    );
    assert_eq!(
        get_ids(&list(&s, &[("sort", "email")]).await),
        ["b", "d", "a", "c"]
    );
    assert_eq!(
        get_ids(&list(&s, &[("sort", "-external_id")]).await),
        ["d", "c", "b", "a"]
    );
    assert_eq!(
        get_ids(&list(&s, &[("sort", "-created_at")]).await),
        ["d", "c", "b", "a"]
    );
    assert_eq!(
        get_ids(&list(&s, &[("sort", "phonenumber")]).await),
        ["a", "b", "c", "d"]
    );
    wait_for_next_second().await;
    s.patch(&contact_path("b"), json!({"name": "Ada L."})).await;
    assert_eq!(
        get_ids(&list(&s, &[("sort", "updated_at")]).await)[3],
        "b",
        "ties broken by id; b changed last"
    );
}

#[tokio::test]
async fn sort_by_custom_attributes_compares_by_type() {
    let s = TestServer::start().await;
    seed(&s).await;
    assert_eq!(
        get_ids(&list(&s, &[("sort", "custom_attributes.ltv")]).await),
        ["b", "c", "a", "d"],
        "9 < 10 < 540"
    );
    assert_eq!(
        get_ids(&list(&s, &[("sort", "-custom_attributes.ltv")]).await),
        ["a", "c", "b", "d"]
    );
    assert_eq!(
        get_ids(&list(&s, &[("sort", "custom_attributes.seen")]).await),
        ["b", "a", "c", "d"],
        "time order"
    );
    assert_eq!(
        get_ids(&list(&s, &[("sort", "custom_attributes.plan")]).await),
        ["b", "c", "a", "d"],
        "case-insensitive text"
    );
    assert_eq!(
        get_ids(&list(&s, &[("sort", "custom_attributes.vip")]).await),
        ["b", "a", "d", "c"],
        "false < true, ties by id"
    );
}

#[tokio::test]
async fn filters_match_exactly_and_by_range_and_combine() {
    let s = TestServer::start().await;
    seed(&s).await;
    type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        (
            vec![("filter[custom_attributes.vip]", "true")],
            vec!["a", "d"],
        ),
        (vec![("filter[custom_attributes.ltv]", "540")], vec!["a"]),
        (
            vec![("filter[custom_attributes.ltv][gt]", "9")],
            vec!["a", "c"],
        ),
        (
            vec![
                ("filter[custom_attributes.ltv][gte]", "9"),
                ("filter[custom_attributes.ltv][lt]", "540"),
            ],
            vec!["b", "c"],
        ),
        (
            vec![("filter[custom_attributes.seen][lte]", "2025-12-31")],
            vec!["b"],
        ),
        (vec![("filter[custom_attributes.plan]", "PRO")], vec!["a"]),
        (vec![("filter[name]", "zed samson")], vec!["c"]),
        (vec![("filter[email][exists]", "false")], vec!["c"]),
        (
            vec![
                ("filter[custom_attributes.vip][exists]", "true"),
                ("filter[email][exists]", "true"),
            ],
            vec!["a", "b", "d"],
        ),
        (
            vec![("filter[created_at][gte]", "0")],
            vec!["a", "b", "c", "d"],
        ),
        (vec![("filter[external_id]", "c")], vec!["c"]),
        (
            vec![
                ("filter[custom_attributes.vip]", "true"),
                ("q", "acme"),
                ("sort", "-external_id"),
            ],
            vec!["d", "a"],
        ),
    ];
    for (params, want) in cases {
        let r = list(&s, &params).await;
        assert_eq!(get_ids(&r), want, "{params:?}");
        assert_eq!(r.body["total"], want.len(), "{params:?}");
    }
}

#[tokio::test]
async fn email_lookup_finds_one_contact_case_insensitively() {
    let s = TestServer::start().await;
    seed(&s).await;
    assert_eq!(
        get_ids(&list(&s, &[("filter[email]", "ADA@engines.ORG")]).await),
        ["b"]
    );
    assert_eq!(
        get_ids(&list(&s, &[("filter[email]", "nobody@x.co")]).await),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn bad_parameters_are_400_naming_them() {
    let s = TestServer::start().await;
    seed(&s).await;
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("sort", "favourite")], "sort"),
        (vec![("sort", "custom_attributes.undefined")], "sort"),
        (vec![("filter[colour]", "red")], "filter[colour]"),
        (
            vec![("filter[custom_attributes.ltv]", "lots")],
            "filter[custom_attributes.ltv]",
        ),
        (
            vec![("filter[custom_attributes.vip]", "yes")],
            "filter[custom_attributes.vip]",
        ),
        (
            vec![("filter[custom_attributes.seen][gt]", "yesterday")],
            "filter[custom_attributes.seen][gt]",
        ),
        (vec![("filter[name][gt]", "a")], "filter[name][gt]"),
        (
            vec![("filter[custom_attributes.ltv][near]", "5")],
            "filter[custom_attributes.ltv][near]",
        ),
        (
            vec![("filter[email][exists]", "maybe")],
            "filter[email][exists]",
        ),
        (vec![("cursor", "not-a-cursor")], "cursor"),
    ];
    for (params, field) in cases {
        let r = list(&s, &params).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{params:?}");
        assert_eq!(r.message(), "Invalid request parameters");
        assert_eq!(r.issue_fields(), [field], "{params:?}");
    }
}

/// Follows `next_cursor` from `cursor` (or the first page) to the end; returns every
/// external id in order.
async fn follow(
    s: &TestServer,
    params: &[(&str, &str)],
    mut cursor: Option<String>,
) -> Vec<String> {
    let mut all = Vec::new();
    loop {
        let mut p: Vec<(&str, &str)> = params.to_vec();
        if let Some(c) = &cursor {
            p.push(("cursor", c.as_str()));
        }
        let r = list(s, &p).await;
        all.extend(get_ids(&r));
        match r.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return all,
        }
    }
}

#[tokio::test]
async fn cursors_walk_every_page_and_end_with_null() {
    let s = TestServer::start().await;
    let users: Vec<Value> = (0..35)
        .map(|i| json!({"external_id": format!("c{i:02}"), "name": format!("n{}", i % 7), "custom_attributes": {"ltv": i % 5}}))
        .collect();
    s.upsert(json!(users)).await;
    let plain = follow(&s, &[("per_page", "10")], None).await;
    assert_eq!(
        plain,
        (0..35).map(|i| format!("c{i:02}")).collect::<Vec<_>>()
    );
    for sort in [
        "name",
        "-name",
        "custom_attributes.ltv",
        "-custom_attributes.ltv",
        "-created_at",
    ] {
        let walked = follow(&s, &[("per_page", "10"), ("sort", sort)], None).await;
        let all = get_ids(&list(&s, &[("per_page", "1000"), ("sort", sort)]).await);
        assert_eq!(walked, all, "{sort}");
    }
    let r = list(&s, &[("per_page", "1000")]).await;
    assert_eq!(r.body["next_cursor"], json!(null));
}

#[tokio::test]
async fn a_cursor_only_continues_its_own_query() {
    let s = TestServer::start().await;
    let users: Vec<Value> = (0..15)
        .map(|i| json!({"external_id": format!("c{i:02}")}))
        .collect();
    s.upsert(json!(users)).await;
    let r = list(&s, &[("per_page", "10"), ("sort", "external_id")]).await;
    let cursor = r.body["next_cursor"].as_str().unwrap().to_owned();
    let r = list(
        &s,
        &[
            ("per_page", "10"),
            ("sort", "-external_id"),
            ("cursor", &cursor),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.issue_fields(), ["cursor"]);
    let r = list(
        &s,
        &[
            ("per_page", "10"),
            ("sort", "external_id"),
            ("cursor", &cursor),
            ("page", "2"),
        ],
    )
    .await;
    assert_eq!(r.issue_fields(), ["cursor"], "cursor and page together");
    let r = list(
        &s,
        &[
            ("per_page", "10"),
            ("sort", "external_id"),
            ("cursor", &cursor),
        ],
    )
    .await;
    assert_eq!(get_ids(&r).len(), 5);
    assert_eq!(r.body["pages"]["page"], json!(null));
}

#[tokio::test]
async fn cursor_pages_survive_writes_in_between() {
    let s = TestServer::start().await;
    let users: Vec<Value> = (0..30)
        .map(|i| json!({"external_id": format!("c{i:02}"), "name": format!("name {i:02}")}))
        .collect();
    s.upsert(json!(users)).await;
    let r = list(&s, &[("per_page", "10"), ("sort", "-name")]).await;
    let mut seen = get_ids(&r);
    let cursor = r.body["next_cursor"].as_str().unwrap().to_owned();
    // Between pages: a new contact, a deleted one not yet returned, an update elsewhere.
    s.upsert(json!([{"external_id": "late", "name": "aaa"}]))
        .await;
    s.delete(&contact_path("c05")).await;
    s.patch(&contact_path("c25"), json!({"phonenumber": "123"}))
        .await;
    let mut rest = follow(&s, &[("per_page", "10"), ("sort", "-name")], Some(cursor)).await;
    seen.append(&mut rest);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "nothing repeated");
    for i in (0..30).filter(|i| *i != 5) {
        assert!(seen.contains(&format!("c{i:02}")), "c{i:02} skipped");
    }
}

#[tokio::test]
async fn plain_listing_is_unchanged_but_carries_next_cursor() {
    let s = TestServer::start().await;
    let users: Vec<Value> = (0..12)
        .map(|i| json!({"external_id": format!("c{i:02}")}))
        .collect();
    s.upsert(json!(users)).await;
    let r = list(&s, &[("per_page", "10"), ("page", "2")]).await;
    assert_eq!(get_ids(&r), ["c10", "c11"]);
    assert_eq!(
        r.body["pages"],
        json!({"page": 2, "per_page": 10, "total_pages": 2})
    );
    assert_eq!(r.body["total"], 12);
    assert_eq!(r.body["next_cursor"], json!(null));
    let first = list(&s, &[("per_page", "10")]).await;
    assert!(first.body["next_cursor"].is_string());
}

/// A sorted search's first page counts its matches; its cursor pages, found by walking
/// the order from the cursor, come without a count, and every page still holds exactly
/// the matches in order, whether they sit together in the order or are spread out.
#[tokio::test]
async fn sorted_search_cursor_pages_are_exact_without_a_count() {
    let s = TestServer::start().await;
    // "ada" contacts together in name order (their names start alike), "zed" contacts
    // spread among 200 others.
    let users: Vec<Value> = (0..300)
        .map(|i| {
            let name = match i % 3 {
                0 if i < 90 => format!("Ada {i:03}"),
                _ if i % 10 == 1 => format!("n{i:03} zed"),
                _ => format!("n{i:03} other"),
            };
            json!({"external_id": format!("e{i:03}"), "name": name})
        })
        .collect();
    s.upsert(json!(users)).await;
    for q in ["ada", "zed"] {
        let mut matches: Vec<(String, String)> = users
            .iter()
            .map(|u| {
                (
                    u["name"].as_str().unwrap().to_lowercase(),
                    u["external_id"].as_str().unwrap().to_owned(),
                )
            })
            .filter(|(name, _)| name.split(' ').any(|w| w.starts_with(q)))
            .collect();
        matches.sort();
        let want: Vec<String> = matches.into_iter().map(|(_, ext)| ext).collect();
        assert!(want.len() > 20, "{q}: {}", want.len());
        let params = [("q", q), ("sort", "name"), ("per_page", "10")];
        let first = list(&s, &params).await;
        assert_eq!(
            first.body["total"],
            json!(want.len()),
            "{q}: {}",
            first.body
        );
        let cursor = first.body["next_cursor"].as_str().unwrap().to_owned();
        let mut next = params.to_vec();
        next.push(("cursor", &cursor));
        let second = list(&s, &next).await;
        assert_eq!(second.status, StatusCode::OK);
        if q == "ada" {
            assert_eq!(
                second.body["total"],
                json!(null),
                "found by the walk: {}",
                second.body
            );
        }
        assert_eq!(follow(&s, &params, None).await, want, "{q}");
    }
}
