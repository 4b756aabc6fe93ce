//! Tags, lists, opt-in, blocking, source and phone identity over HTTP: the `/tags` and
//! `/lists` endpoints, labels on contact writes under each `tags.unknown` policy, list
//! membership, and the filters on `GET /contacts`.

use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use contactd::domain::UnknownPolicy;

use crate::common::*;

const TAGS: &str = "/api/v1/chatbots/default/tags";
const LISTS: &str = "/api/v1/chatbots/default/lists";
const IMPORT: &str = "/api/v1/chatbots/default/contacts/import";

/// The path of one tag or list (`base` is [`TAGS`] or [`LISTS`]), encoded.
fn label_path(base: &str, name: &str) -> String {
    let name: String = form_urlencoded::byte_serialize(name.as_bytes()).collect();
    // `byte_serialize` writes a space as `+`, which a path does not decode.
    format!("{base}/{}", name.replace('+', "%20"))
}

/// The membership path of a list.
fn members_path(list: &str) -> String {
    format!("{}/contacts", label_path(LISTS, list))
}

/// A GET of the contacts list with these (unencoded) parameters.
async fn list(s: &TestServer, params: &[(&str, &str)]) -> Reply {
    let query: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    s.get(&format!("{CONTACTS}?{query}")).await
}

/// The external ids a filtered listing returns, checking that `total` counts them.
async fn matching(s: &TestServer, params: &[(&str, &str)]) -> Vec<String> {
    let r = list(s, params).await;
    assert_eq!(r.status, StatusCode::OK, "{params:?}: {}", r.body);
    let ids = ext_ids(&r);
    assert_eq!(
        r.body["total"],
        json!(ids.len()),
        "{params:?}: total counts the matches: {}",
        r.body
    );
    ids
}

/// `(name, count)` of every tag or list, as `GET /tags` or `/lists` answers.
async fn defined(s: &TestServer, base: &str) -> Vec<(String, u64)> {
    let r = s.get(base).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.message(), "Success", "{}", r.body);
    r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap().to_owned(),
                l["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn pairs(items: &[(&str, u64)]) -> Vec<(String, u64)> {
    items.iter().map(|(n, c)| ((*n).to_owned(), *c)).collect()
}

/// Defines a tag or list, expecting success.
async fn create(s: &TestServer, base: &str, name: &str) -> Value {
    let r = s.post(base, json!({ "name": name })).await;
    assert_eq!(r.status, StatusCode::OK, "{name}: {}", r.body);
    r.body["data"].clone()
}

/// One contact of the default agent, as `GET /contacts/{id}` answers.
async fn contact(s: &TestServer, ext: &str) -> Value {
    let r = s.get(&contact_path(ext)).await;
    assert_eq!(r.status, StatusCode::OK, "{ext}: {}", r.body);
    r.body["data"].clone()
}

async fn tags_of(s: &TestServer, ext: &str) -> Value {
    contact(s, ext).await["tags"].clone()
}

async fn lists_of(s: &TestServer, ext: &str) -> Value {
    contact(s, ext).await["lists"].clone()
}

/// A request with the admin key, a JSON body and extra headers; status and JSON body.
async fn post_with_headers(
    s: &TestServer,
    path: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> (StatusCode, Value) {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    let (status, _, bytes) = s
        .send_bytes(Method::POST, path, &all, serde_json::to_vec(&body).unwrap())
        .await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn contacts_always_carry_labels_flags_and_source() {
    let s = TestServer::start().await;
    let created = s.upsert(json!([{"external_id": "a", "name": "Sam"}])).await;
    for c in [created[0].clone(), contact(&s, "a").await] {
        assert_eq!(c["tags"], json!([]), "{c}");
        assert_eq!(c["lists"], json!([]), "{c}");
        assert_eq!(c["optin"], Value::Null, "{c}");
        assert_eq!(c["incoming_blocked"], Value::Null, "{c}");
        assert_eq!(c["source"], "api", "{c}");
    }
    let listed = s.get(CONTACTS).await;
    let c = &listed.body["data"][0];
    assert_eq!(
        (
            c["tags"].clone(),
            c["lists"].clone(),
            c["optin"].clone(),
            c["incoming_blocked"].clone(),
            c["source"].clone()
        ),
        (json!([]), json!([]), Value::Null, Value::Null, json!("api")),
        "{}",
        listed.body
    );
}

#[tokio::test]
async fn tags_are_created_listed_and_refused_twice_in_any_case() {
    let s = TestServer::start().await;
    assert_eq!(defined(&s, TAGS).await, pairs(&[]));
    let vip = create(&s, TAGS, "VIP").await;
    assert_eq!(vip, json!({"name": "VIP", "count": 0}));
    create(&s, TAGS, "Lead").await;
    create(&s, TAGS, "VIP customer").await;
    for dup in ["VIP", "vip", "Vip", "LEAD"] {
        let r = s.post(TAGS, json!({ "name": dup })).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{dup}: {}", r.body);
        assert_eq!(r.message(), "Tag already exists", "{dup}: {}", r.body);
    }
    assert_eq!(
        defined(&s, TAGS).await,
        pairs(&[("Lead", 0), ("VIP", 0), ("VIP customer", 0)]),
        "each once, as first defined"
    );
    // Tags and lists are separate namespaces.
    create(&s, LISTS, "vip").await;
    assert_eq!(defined(&s, LISTS).await, pairs(&[("vip", 0)]));
}

#[tokio::test]
async fn bad_tag_and_list_names_are_refused_naming_the_field() {
    let s = TestServer::start().await;
    let long = "x".repeat(65);
    for base in [TAGS, LISTS] {
        for bad in [
            json!({"name": "a,b"}),
            json!({"name": "a;b"}),
            json!({"name": " x"}),
            json!({"name": "x "}),
            json!({"name": ""}),
            json!({"name": long}),
            json!({"name": 7}),
            json!({}),
        ] {
            let r = s.post(base, bad.clone()).await;
            assert_eq!(
                r.status,
                StatusCode::BAD_REQUEST,
                "{base} {bad}: {}",
                r.body
            );
            assert_eq!(r.issue_fields(), ["name"], "{base} {bad}: {}", r.body);
        }
        let max = "y".repeat(64);
        assert_eq!(create(&s, base, &max).await["name"], max.as_str());
        assert_eq!(
            defined(&s, base).await,
            vec![(max, 0)],
            "nothing bad was defined"
        );
    }
}

#[tokio::test]
async fn contacts_show_tags_as_first_defined() {
    let s = TestServer::start().await;
    create(&s, TAGS, "VIP").await;
    let a = s
        .upsert(json!([{"external_id": "a", "tags": ["vip", "New", "VIP", "new"]}]))
        .await;
    assert_eq!(
        a[0]["tags"],
        json!(["VIP", "New"]),
        "defined case wins; each once"
    );
    let b = s
        .upsert(json!([{"external_id": "b", "tags": ["NEW"]}]))
        .await;
    assert_eq!(
        b[0]["tags"],
        json!(["New"]),
        "'New' was defined on the fly by a"
    );
    assert_eq!(tags_of(&s, "a").await, json!(["VIP", "New"]));
    assert_eq!(defined(&s, TAGS).await, pairs(&[("New", 2), ("VIP", 1)]));
    let r = s.post(TAGS, json!({"name": "new"})).await;
    assert_eq!(
        r.status,
        StatusCode::CONFLICT,
        "defined on the fly counts as defined: {}",
        r.body
    );
}

#[tokio::test]
async fn writes_replace_the_tag_set_and_omitting_it_keeps_it() {
    let s = TestServer::start().await;
    s.upsert(json!([{"external_id": "a", "tags": ["x", "y"], "lists": ["l1", "l2"]}]))
        .await;
    let r = s.patch(&contact_path("a"), json!({"name": "A"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["data"]["tags"], json!(["x", "y"]), "omitted: kept");
    assert_eq!(r.body["data"]["lists"], json!(["l1", "l2"]));
    let r = s
        .patch(
            &contact_path("a"),
            json!({"tags": ["y", "z"], "lists": ["l2"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["data"]["tags"], json!(["y", "z"]), "replaced");
    assert_eq!(r.body["data"]["lists"], json!(["l2"]));
    let up = s.upsert(json!([{"external_id": "a", "tags": []}])).await;
    assert_eq!(up[0]["tags"], json!([]));
    assert_eq!(up[0]["lists"], json!(["l2"]), "lists not sent: kept");
    let r = s
        .patch(&contact_path("a"), json!({"data": {"lists": null}}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["data"]["lists"], json!([]), "null clears");
    assert_eq!(
        defined(&s, TAGS).await,
        pairs(&[("x", 0), ("y", 0), ("z", 0)])
    );
    assert_eq!(defined(&s, LISTS).await, pairs(&[("l1", 0), ("l2", 0)]));
    // Bad names on a write are 400 with their place in the body.
    let r = s
        .post(
            CONTACTS,
            json!({"users": [{"external_id": "b", "tags": ["ok", "a,b", 3], "lists": "news"}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(
        r.issue_fields(),
        ["users[0].tags[1]", "users[0].tags[2]", "users[0].lists"],
        "{}",
        r.body
    );
}

#[tokio::test]
async fn renaming_a_tag_renames_it_on_every_contact() {
    let s = TestServer::start().await;
    create(&s, TAGS, "vip").await;
    s.upsert(json!([
        {"external_id": "a", "tags": ["first", "vip", "last"]},
        {"external_id": "b", "tags": ["VIP"]},
        {"external_id": "c", "tags": ["other"]}
    ]))
    .await;
    let r = s
        .call(
            Method::PUT,
            &label_path(TAGS, "VIP"),
            Some(json!({"name": "Gold"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["data"], json!({"name": "Gold", "count": 2}));
    assert_eq!(
        tags_of(&s, "a").await,
        json!(["first", "Gold", "last"]),
        "renamed in place"
    );
    assert_eq!(tags_of(&s, "b").await, json!(["Gold"]));
    assert_eq!(tags_of(&s, "c").await, json!(["other"]));
    assert_eq!(
        defined(&s, TAGS).await,
        pairs(&[("first", 1), ("Gold", 2), ("last", 1), ("other", 1)])
    );
    assert_eq!(matching(&s, &[("filter[tags]", "gold")]).await, ["a", "b"]);
    assert_eq!(
        matching(&s, &[("filter[tags]", "vip")]).await,
        Vec::<String>::new()
    );

    // Only in case: allowed, and shown in the new case.
    let r = s
        .call(
            Method::PUT,
            &label_path(TAGS, "gold"),
            Some(json!({"name": "GOLD"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["data"], json!({"name": "GOLD", "count": 2}));
    assert_eq!(tags_of(&s, "b").await, json!(["GOLD"]));

    let r = s
        .call(
            Method::PUT,
            &label_path(TAGS, "nope"),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    let r = s
        .call(
            Method::PUT,
            &label_path(TAGS, "GOLD"),
            Some(json!({"name": "OTHER"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.message(), "Tag already exists");
    let r = s
        .call(
            Method::PUT,
            &label_path(TAGS, "GOLD"),
            Some(json!({"name": "a;b"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.issue_fields(), ["name"]);
    assert_eq!(tags_of(&s, "a").await, json!(["first", "GOLD", "last"]));
    assert_eq!(
        tags_of(&s, "c").await,
        json!(["other"]),
        "refused: unchanged"
    );
}

#[tokio::test]
async fn deleting_a_tag_removes_it_from_every_contact() {
    let s = TestServer::start().await;
    create(&s, TAGS, "VIP").await;
    s.upsert(json!([
        {"external_id": "a", "tags": ["vip", "x"]},
        {"external_id": "b", "tags": ["vip"]},
        {"external_id": "c", "tags": ["x"]}
    ]))
    .await;
    let r = s.delete(&label_path(TAGS, "vip")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["data"], json!({"name": "VIP", "removed_from": 2}));
    assert_eq!(tags_of(&s, "a").await, json!(["x"]));
    assert_eq!(tags_of(&s, "b").await, json!([]));
    assert_eq!(tags_of(&s, "c").await, json!(["x"]));
    assert_eq!(defined(&s, TAGS).await, pairs(&[("x", 2)]));
    assert_eq!(
        matching(&s, &[("filter[tags]", "VIP")]).await,
        Vec::<String>::new()
    );
    assert_eq!(
        s.delete(&label_path(TAGS, "VIP")).await.status,
        StatusCode::NOT_FOUND
    );
    // Gone means gone: written again, it is defined afresh in the new case.
    let b = s
        .upsert(json!([{"external_id": "b", "tags": ["vip"]}]))
        .await;
    assert_eq!(b[0]["tags"], json!(["vip"]));
    assert_eq!(defined(&s, TAGS).await, pairs(&[("vip", 1), ("x", 2)]));
}

#[tokio::test]
async fn tag_counts_follow_writes_deletes_and_renames() {
    let s = TestServer::start().await;
    s.upsert(json!([
        {"external_id": "a", "tags": ["t", "u"]},
        {"external_id": "b", "tags": ["t"]},
        {"external_id": "c", "tags": ["T", "u"]}
    ]))
    .await;
    assert_eq!(defined(&s, TAGS).await, pairs(&[("t", 3), ("u", 2)]));
    let r = s.delete(&contact_path("b")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(defined(&s, TAGS).await, pairs(&[("t", 2), ("u", 2)]));
    let r = s.patch(&contact_path("c"), json!({"tags": ["u"]})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(defined(&s, TAGS).await, pairs(&[("t", 1), ("u", 2)]));
    let r = s
        .call(
            Method::PUT,
            &label_path(TAGS, "u"),
            Some(json!({"name": "w"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(defined(&s, TAGS).await, pairs(&[("t", 1), ("w", 2)]));
    s.upsert(json!([{"external_id": "d", "tags": ["W", "t"]}]))
        .await;
    assert_eq!(defined(&s, TAGS).await, pairs(&[("t", 2), ("w", 3)]));
    let r = s.delete(&label_path(TAGS, "t")).await;
    assert_eq!(r.body["data"], json!({"name": "t", "removed_from": 2}));
    assert_eq!(defined(&s, TAGS).await, pairs(&[("w", 3)]));
    assert_eq!(
        matching(&s, &[("filter[tags]", "w")]).await,
        ["a", "c", "d"]
    );
}

#[tokio::test]
async fn strip_policy_drops_undefined_tags() {
    let s = TestServer::start_with(|c| c.unknown_tags = UnknownPolicy::Strip).await;
    create(&s, TAGS, "vip").await;
    let a = s
        .upsert(json!([{"external_id": "a", "tags": ["ghost", "VIP"], "lists": ["News"]}]))
        .await;
    assert_eq!(a[0]["tags"], json!(["vip"]));
    assert_eq!(a[0]["lists"], json!(["News"]), "lists are always created");
    let r = s
        .patch(&contact_path("a"), json!({"tags": ["ghost"]}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["data"]["tags"], json!([]));
    assert_eq!(defined(&s, TAGS).await, pairs(&[("vip", 0)]));
    assert_eq!(defined(&s, LISTS).await, pairs(&[("News", 1)]));
}

#[tokio::test]
async fn reject_policy_refuses_undefined_tags_and_writes_nothing() {
    let s = TestServer::start_with(|c| c.unknown_tags = UnknownPolicy::Reject).await;
    create(&s, TAGS, "vip").await;
    let r = s
        .post(
            CONTACTS,
            json!({"users": [
                {"external_id": "a", "tags": ["VIP"], "lists": ["news"]},
                {"external_id": "b", "tags": ["vip", "ghost"]}
            ]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.issue_fields(), ["users[1].tags"], "{}", r.body);
    assert!(
        r.body["issues"][0]["message"]
            .as_str()
            .unwrap()
            .contains("'ghost'"),
        "the issue names the tag: {}",
        r.body
    );
    assert_eq!(s.get(CONTACTS).await.body["total"], 0, "nothing written");
    assert_eq!(
        defined(&s, LISTS).await,
        pairs(&[]),
        "no list defined either"
    );
    assert_eq!(defined(&s, TAGS).await, pairs(&[("vip", 0)]));

    let a = s
        .upsert(json!([{"external_id": "a", "tags": ["VIP"], "lists": ["news"]}]))
        .await;
    assert_eq!(a[0]["tags"], json!(["vip"]));
    assert_eq!(a[0]["lists"], json!(["news"]), "lists are always created");
    let r = s
        .patch(&contact_path("a"), json!({"name": "A", "tags": ["ghost"]}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.issue_fields(), ["tags"], "{}", r.body);
    let r = s
        .patch(
            &contact_path("a"),
            json!({"data": {"tags": ["vip", "Ghost"]}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.issue_fields(), ["data.tags"], "{}", r.body);
    let a = contact(&s, "a").await;
    assert_eq!(a["name"], Value::Null, "refused patch changed nothing: {a}");
    assert_eq!(a["tags"], json!(["vip"]));
    assert_eq!(defined(&s, TAGS).await, pairs(&[("vip", 1)]));
}

#[tokio::test]
async fn lists_are_created_renamed_and_deleted() {
    let s = TestServer::start().await;
    assert_eq!(
        create(&s, LISTS, "Newsletter").await,
        json!({"name": "Newsletter", "count": 0})
    );
    let r = s.post(LISTS, json!({"name": "NEWSLETTER"})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.message(), "List already exists");
    s.upsert(json!([
        {"external_id": "a", "lists": ["newsletter", "Beta"]},
        {"external_id": "b", "lists": ["Beta"]}
    ]))
    .await;
    assert_eq!(lists_of(&s, "a").await, json!(["Newsletter", "Beta"]));
    assert_eq!(
        defined(&s, LISTS).await,
        pairs(&[("Beta", 2), ("Newsletter", 1)])
    );
    let r = s
        .call(
            Method::PUT,
            &label_path(LISTS, "beta"),
            Some(json!({"name": "Early access"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["data"], json!({"name": "Early access", "count": 2}));
    assert_eq!(
        lists_of(&s, "a").await,
        json!(["Newsletter", "Early access"])
    );
    assert_eq!(lists_of(&s, "b").await, json!(["Early access"]));
    let r = s
        .call(
            Method::PUT,
            &label_path(LISTS, "Early access"),
            Some(json!({"name": "newsletter"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.message(), "List already exists");
    assert_eq!(
        s.call(
            Method::PUT,
            &label_path(LISTS, "nope"),
            Some(json!({"name": "x"}))
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    let r = s.delete(&label_path(LISTS, "EARLY ACCESS")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.body["data"],
        json!({"name": "Early access", "removed_from": 2})
    );
    assert_eq!(lists_of(&s, "a").await, json!(["Newsletter"]));
    assert_eq!(lists_of(&s, "b").await, json!([]));
    assert_eq!(defined(&s, LISTS).await, pairs(&[("Newsletter", 1)]));
    assert_eq!(
        s.delete(&label_path(LISTS, "Early access")).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn the_all_list_is_implicit() {
    let s = TestServer::start().await;
    create(&s, LISTS, "news").await;
    for name in ["all", "ALL", "All"] {
        let r = s.post(LISTS, json!({ "name": name })).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{name}: {}", r.body);
        assert_eq!(r.issue_fields(), ["name"], "{name}: {}", r.body);
    }
    let r = s
        .call(
            Method::PUT,
            &label_path(LISTS, "all"),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.issue_fields(), ["name"], "{}", r.body);
    let r = s
        .call(
            Method::PUT,
            &label_path(LISTS, "news"),
            Some(json!({"name": "All"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.issue_fields(), ["name"], "{}", r.body);
    let r = s.delete(&label_path(LISTS, "All")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.issue_fields(), ["name"], "{}", r.body);
    s.upsert(json!([{"external_id": "a"}])).await;
    for method in [Method::POST, Method::DELETE] {
        let r = s
            .call(
                method.clone(),
                &members_path("all"),
                Some(json!({"external_ids": ["a"]})),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{method}: {}", r.body);
        assert_eq!(r.issue_fields(), ["name"], "{method}: {}", r.body);
    }

    // Named on a write: accepted, left out.
    let a = s
        .upsert(json!([{"external_id": "a", "lists": ["all", "news", "ALL"]}]))
        .await;
    assert_eq!(a[0]["lists"], json!(["news"]));
    let r = s.patch(&contact_path("a"), json!({"lists": ["All"]})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["data"]["lists"], json!([]));
    // A tag may be called `all`: only the list is implicit.
    let b = s
        .upsert(json!([{"external_id": "b", "tags": ["all"]}]))
        .await;
    assert_eq!(b[0]["tags"], json!(["all"]));
    assert_eq!(defined(&s, LISTS).await, pairs(&[("news", 0)]));
    assert_eq!(defined(&s, TAGS).await, pairs(&[("all", 1)]));
}

#[tokio::test]
async fn list_membership_by_external_ids() {
    let s = TestServer::start().await;
    create(&s, LISTS, "VIP").await;
    s.upsert(json!([
        {"external_id": "a"},
        {"external_id": "b", "lists": ["other"]},
        {"external_id": "c"}
    ]))
    .await;
    let r = s
        .post(
            &members_path("vip"),
            json!({"external_ids": ["a", "b", "nobody", "a"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.body["data"],
        json!({"added": 2}),
        "unknown ids and repeats add nothing"
    );
    let r = s
        .post(&members_path("VIP"), json!({"external_ids": ["a", "c"]}))
        .await;
    assert_eq!(r.body["data"], json!({"added": 1}), "a was in already");
    assert_eq!(lists_of(&s, "b").await, json!(["other", "VIP"]));
    assert_eq!(
        matching(&s, &[("filter[lists]", "vip")]).await,
        ["a", "b", "c"]
    );
    assert_eq!(
        matching(&s, &[("filter[lists]", "vip"), ("filter[lists]", "other")]).await,
        ["b"]
    );
    assert_eq!(defined(&s, LISTS).await, pairs(&[("other", 1), ("VIP", 3)]));

    let r = s
        .call(
            Method::DELETE,
            &members_path("Vip"),
            Some(json!({"external_ids": ["b", "nobody"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["data"], json!({"removed": 1}));
    assert_eq!(lists_of(&s, "b").await, json!(["other"]));
    assert_eq!(matching(&s, &[("filter[lists]", "VIP")]).await, ["a", "c"]);
    assert_eq!(defined(&s, LISTS).await, pairs(&[("other", 1), ("VIP", 2)]));

    for method in [Method::POST, Method::DELETE] {
        let r = s
            .call(
                method.clone(),
                &members_path("nope"),
                Some(json!({"external_ids": ["a"]})),
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{method}: {}", r.body);
    }
    let too_many: Vec<String> = (0..1001).map(|i| format!("x{i}")).collect();
    let r = s
        .post(&members_path("VIP"), json!({ "external_ids": too_many }))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.issue_fields(), ["external_ids"]);
    let at_most: Vec<String> = (0..1000).map(|i| format!("x{i}")).collect();
    let r = s
        .post(&members_path("VIP"), json!({ "external_ids": at_most }))
        .await;
    assert_eq!(r.status, StatusCode::OK, "1000 is allowed: {}", r.body);
    assert_eq!(r.body["data"], json!({"added": 0}));
    let r = s
        .post(&members_path("VIP"), json!({"external_ids": ["a", ""]}))
        .await;
    assert_eq!(r.issue_fields(), ["external_ids[1]"], "{}", r.body);
    let r = s.post(&members_path("VIP"), json!({})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.issue_fields(), ["body"]);
    let r = s
        .post(
            &members_path("VIP"),
            json!({"external_ids": ["a"], "query": {"q": "a"}}),
        )
        .await;
    assert_eq!(r.issue_fields(), ["body"], "not both: {}", r.body);
    assert_eq!(matching(&s, &[("filter[lists]", "VIP")]).await, ["a", "c"]);
}

#[tokio::test]
async fn list_membership_by_query() {
    let s = TestServer::start().await;
    create(&s, LISTS, "Pro users").await;
    s.upsert(json!([
        {"external_id": "a", "name": "Sam Rivera", "custom_attributes": {"plan": "pro"}},
        {"external_id": "b", "name": "Ada Lovelace", "custom_attributes": {"plan": "basic"}},
        {"external_id": "c", "name": "Sam Stone", "custom_attributes": {"plan": "pro"}},
        {"external_id": "d", "name": "Zed", "custom_attributes": {"plan": "pro"}}
    ]))
    .await;
    let r = s
        .post(
            &members_path("pro users"),
            json!({"query": {"q": "sam", "filter": {"custom_attributes.plan": "pro"}}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["data"], json!({"added": 2}));
    assert_eq!(
        matching(&s, &[("filter[lists]", "Pro users")]).await,
        ["a", "c"]
    );
    let r = s
        .post(
            &members_path("Pro users"),
            json!({"query": {"filter": {"custom_attributes.plan": "pro"}}}),
        )
        .await;
    assert_eq!(r.body["data"], json!({"added": 1}), "{}", r.body);
    assert_eq!(
        matching(&s, &[("filter[lists]", "PRO USERS")]).await,
        ["a", "c", "d"]
    );
    assert_eq!(lists_of(&s, "d").await, json!(["Pro users"]));
    assert_eq!(defined(&s, LISTS).await, pairs(&[("Pro users", 3)]));

    let r = s
        .call(
            Method::DELETE,
            &members_path("Pro users"),
            Some(json!({"query": {"q": "sam"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["data"], json!({"removed": 2}));
    assert_eq!(matching(&s, &[("filter[lists]", "Pro users")]).await, ["d"]);
    assert_eq!(defined(&s, LISTS).await, pairs(&[("Pro users", 1)]));

    // Operators, written either way; the list query's parameter names the issue.
    for filter in [
        json!({"created_at": {"gte": 0}, "custom_attributes.plan": "pro"}),
        json!({"created_at[gte]": 0, "custom_attributes.plan": "pro"}),
    ] {
        let r = s
            .post(
                &members_path("Pro users"),
                json!({"query": {"filter": filter}}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["data"], json!({"added": 2}), "a and c again");
        let r = s
            .call(
                Method::DELETE,
                &members_path("Pro users"),
                Some(json!({"query": {"q": "sam"}})),
            )
            .await;
        assert_eq!(r.body["data"], json!({"removed": 2}));
    }
    let r = s
        .post(
            &members_path("Pro users"),
            json!({"query": {"filter": {"created_at": {"gte": "soon"}}}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(
        r.issue_fields(),
        ["query.filter[created_at][gte]"],
        "{}",
        r.body
    );
    let r = s
        .post(
            &members_path("Pro users"),
            json!({"query": {"filter": {"nope": "x"}}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.issue_fields(), ["query.filter[nope]"], "{}", r.body);
    let r = s
        .post(
            &members_path("Pro users"),
            json!({"query": {"sort": "name"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.issue_fields(), ["query.sort"], "{}", r.body);
    let r = s
        .post(&members_path("nope"), json!({"query": {"q": "sam"}}))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    assert_eq!(matching(&s, &[("filter[lists]", "Pro users")]).await, ["d"]);
}

#[tokio::test]
async fn filter_by_tags_needs_every_tag_named() {
    let s = TestServer::start().await;
    create(&s, TAGS, "Gold").await;
    s.upsert(json!([
        {"external_id": "a", "tags": ["gold", "lead"], "lists": ["news"]},
        {"external_id": "b", "tags": ["GOLD"]},
        {"external_id": "c", "tags": ["lead"], "lists": ["news"]},
        {"external_id": "d"}
    ]))
    .await;
    assert_eq!(matching(&s, &[("filter[tags]", "gold")]).await, ["a", "b"]);
    assert_eq!(matching(&s, &[("filter[tags]", "gold,lead")]).await, ["a"]);
    assert_eq!(
        matching(&s, &[("filter[tags]", " LEAD , Gold ")]).await,
        ["a"]
    );
    assert_eq!(
        matching(&s, &[("filter[tags]", "gold,nope")]).await,
        Vec::<String>::new()
    );
    assert_eq!(
        matching(&s, &[("filter[tags]", "lead"), ("filter[lists]", "news")]).await,
        ["a", "c"]
    );
    assert_eq!(
        matching(&s, &[("filter[lists]", "news"), ("filter[tags]", "gold")]).await,
        ["a"]
    );
    assert_eq!(
        matching(&s, &[("filter[lists]", "NEWS"), ("sort", "-external_id")]).await,
        ["c", "a"]
    );
    let r = list(&s, &[("filter[tags]", ",")]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.issue_fields(), ["filter[tags]"]);
    let r = list(&s, &[("sort", "tags")]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.issue_fields(), ["sort"]);
}

#[tokio::test]
async fn optin_and_incoming_blocked_are_set_kept_cleared_and_filtered() {
    let s = TestServer::start().await;
    let made = s
        .upsert(json!([
            {"external_id": "a", "optin": true},
            {"external_id": "b", "optin": false, "incoming_blocked": true},
            {"external_id": "c", "incoming_blocked": false},
            {"external_id": "d"}
        ]))
        .await;
    let flags: Vec<(Value, Value)> = made
        .iter()
        .map(|c| (c["optin"].clone(), c["incoming_blocked"].clone()))
        .collect();
    assert_eq!(
        flags,
        [
            (json!(true), Value::Null),
            (json!(false), json!(true)),
            (Value::Null, json!(false)),
            (Value::Null, Value::Null)
        ]
    );
    assert_eq!(matching(&s, &[("filter[optin]", "true")]).await, ["a"]);
    assert_eq!(matching(&s, &[("filter[optin]", "false")]).await, ["b"]);
    assert_eq!(
        matching(&s, &[("filter[incoming_blocked]", "true")]).await,
        ["b"]
    );
    assert_eq!(
        matching(&s, &[("filter[incoming_blocked]", "false")]).await,
        ["c"],
        "unset is neither true nor false"
    );
    assert_eq!(
        matching(&s, &[("filter[optin][ne]", "true")]).await,
        ["b", "c", "d"],
        "not true: false or unset"
    );

    let r = s.patch(&contact_path("a"), json!({"name": "A"})).await;
    assert_eq!(r.body["data"]["optin"], true, "omitted: kept");
    let r = s
        .patch(
            &contact_path("a"),
            json!({"optin": null, "incoming_blocked": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["data"]["optin"], Value::Null);
    assert_eq!(r.body["data"]["incoming_blocked"], true);
    assert_eq!(
        matching(&s, &[("filter[optin]", "true")]).await,
        Vec::<String>::new()
    );
    assert_eq!(
        matching(&s, &[("filter[incoming_blocked]", "true")]).await,
        ["a", "b"]
    );
    assert_eq!(
        matching(
            &s,
            &[
                ("filter[incoming_blocked]", "true"),
                ("filter[optin]", "false")
            ]
        )
        .await,
        ["b"]
    );

    let r = list(&s, &[("filter[optin]", "maybe")]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.issue_fields(), ["filter[optin]"]);
    let r = list(&s, &[("filter[incoming_blocked][gt]", "true")]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.issue_fields(), ["filter[incoming_blocked][gt]"]);
    let r = s
        .post(
            CONTACTS,
            json!({"users": [{"external_id": "e", "optin": "yes", "incoming_blocked": 1}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(
        r.issue_fields(),
        ["users[0].optin", "users[0].incoming_blocked"]
    );
}

#[tokio::test]
async fn source_records_how_a_contact_was_created() {
    let s = TestServer::start().await;
    s.upsert(json!([{"external_id": "a"}])).await;
    let (status, body) = post_with_headers(
        &s,
        CONTACTS,
        &[("x-contactd-client", "dashboard")],
        json!({"users": [{"external_id": "b"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"][0]["source"], "manual", "{body}");
    let (status, body) = post_with_headers(
        &s,
        CONTACTS,
        &[("X-Contactd-Client", "some-script")],
        json!({"users": [{"external_id": "e"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["data"][0]["source"], "api",
        "only the dashboard is manual"
    );
    let r = s
        .import(IMPORT, "text/csv", "external_id,name\nc,Cee\n")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["data"]["created"], 1, "{}", r.body);
    let r = s
        .import(
            IMPORT,
            "application/json",
            serde_json::to_vec(&json!([{"external_id": "d"}])).unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(contact(&s, "c").await["source"], "csv");
    assert_eq!(contact(&s, "d").await["source"], "csv", "any import");

    // How it was created never changes.
    let (status, body) = post_with_headers(
        &s,
        CONTACTS,
        &[("x-contactd-client", "dashboard")],
        json!({"users": [{"external_id": "a", "name": "A"}, {"external_id": "c", "name": "C"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"][0]["source"], "api", "{body}");
    assert_eq!(body["data"][1]["source"], "csv", "{body}");
    let r = s.patch(&contact_path("b"), json!({"name": "B"})).await;
    assert_eq!(r.body["data"]["source"], "manual");
    let r = s
        .import(IMPORT, "text/csv", "external_id,name\nb,Bee\n")
        .await;
    assert_eq!(r.body["data"]["updated"], 1, "{}", r.body);
    assert_eq!(contact(&s, "b").await["source"], "manual");

    assert_eq!(matching(&s, &[("filter[source]", "api")]).await, ["a", "e"]);
    assert_eq!(matching(&s, &[("filter[source]", "manual")]).await, ["b"]);
    assert_eq!(matching(&s, &[("filter[source]", "csv")]).await, ["c", "d"]);
    let r = list(&s, &[("filter[source]", "web")]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.issue_fields(), ["filter[source]"]);
}

/// Phone filters through HTTP: (default region, stored numbers by external id,
/// filter value, the external ids it finds).
#[tokio::test]
async fn phone_filter_matches_any_formatting_of_the_number() {
    let stored = [
        ("us1", "+1 (555) 123-4567"),
        ("us2", "15551234567"),
        ("uk", "+44 20 7946 0958"),
        ("in", "919179897123"),
        ("br", "+55 11 91234-5678"),
    ];
    let table: &[(Option<&str>, &str, &[&str])] = &[
        (None, "+15551234567", &["us1", "us2"]),
        (None, "+1 (555) 123-4567", &["us1", "us2"]),
        (None, "15551234567", &["us1", "us2"]),
        (None, "1-555-123-4567", &["us1", "us2"]),
        (None, "001 555 123 4567", &["us1", "us2"]),
        // Without a region a national number reads as international (+555…).
        (None, "(555) 123-4567", &[]),
        (None, "442079460958", &["uk"]),
        (None, "0044 20 7946 0958", &["uk"]),
        (None, "+91 91798 97123", &["in"]),
        (None, "5511912345678", &["br"]),
        (None, "+15550000000", &[]),
        (Some("US"), "(555) 123-4567", &["us1", "us2"]),
        (Some("US"), "555.123.4567", &["us1", "us2"]),
        (Some("US"), "+15551234567", &["us1", "us2"]),
        (Some("US"), "+44 20 7946 0958", &["uk"]),
        (Some("GB"), "020 7946 0958", &["uk"]),
        (Some("IN"), "09179897123", &["in"]),
        (Some("BR"), "(11) 91234-5678", &["br"]),
    ];
    for region in [None, Some("US"), Some("GB"), Some("IN"), Some("BR")] {
        let s =
            TestServer::start_with(|c| c.phone_region = region.map(|r| r.parse().unwrap())).await;
        let users: Vec<Value> = stored
            .iter()
            .map(|(ext, phone)| json!({"external_id": ext, "phonenumber": phone}))
            .collect();
        s.upsert(Value::Array(users)).await;
        for (_, value, want) in table.iter().filter(|(r, _, _)| *r == region) {
            assert_eq!(
                matching(&s, &[("filter[phonenumber]", value)]).await,
                *want,
                "{value} under {region:?}"
            );
        }
        let r = list(&s, &[("filter[phonenumber]", "abc")]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
        assert_eq!(r.issue_fields(), ["filter[phonenumber]"], "{}", r.body);
        // The number is shown as sent.
        assert_eq!(contact(&s, "us1").await["phonenumber"], "+1 (555) 123-4567");
    }
}

#[tokio::test]
async fn numbers_stored_nationally_are_read_in_the_default_region() {
    let s = TestServer::start_with(|c| c.phone_region = Some("US".parse().unwrap())).await;
    s.upsert(json!([
        {"external_id": "a", "phonenumber": "(555) 123-4567"},
        {"external_id": "b", "phonenumber": "+1 555 123 4567"},
        {"external_id": "c", "phonenumber": "555 765 4321"}
    ]))
    .await;
    assert_eq!(
        matching(&s, &[("filter[phonenumber]", "+15551234567")]).await,
        ["a", "b"]
    );
    assert_eq!(
        matching(&s, &[("filter[phonenumber]", "1 (555) 765-4321")]).await,
        ["c"]
    );
    // A changed number is found by the new one only.
    let r = s
        .patch(&contact_path("a"), json!({"phonenumber": "555-765-4321"}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        matching(&s, &[("filter[phonenumber]", "5551234567")]).await,
        ["b"]
    );
    assert_eq!(
        matching(&s, &[("filter[phonenumber]", "+1 555 765 4321")]).await,
        ["a", "c"]
    );
    let r = s
        .patch(&contact_path("a"), json!({"phonenumber": null}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        matching(&s, &[("filter[phonenumber]", "+1 555 765 4321")]).await,
        ["c"]
    );
}

#[tokio::test]
async fn phonenumber_sorts_by_the_text_as_stored() {
    let s = TestServer::start().await;
    // Text order: "+1 555…" < "+44…" < "1555…"; E.164 order would put b before a.
    s.upsert(json!([
        {"external_id": "a", "phonenumber": "+44 20 7946 0958"},
        {"external_id": "b", "phonenumber": "15551234567"},
        {"external_id": "c", "phonenumber": "+1 555 000 0000"},
        {"external_id": "d"}
    ]))
    .await;
    assert_eq!(
        matching(&s, &[("sort", "phonenumber")]).await,
        ["c", "a", "b", "d"]
    );
    assert_eq!(
        matching(&s, &[("sort", "-phonenumber")]).await,
        ["b", "a", "c", "d"]
    );
    let r = list(&s, &[("filter[phonenumber][gt]", "1")]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.issue_fields(), ["filter[phonenumber][gt]"]);
}

#[tokio::test]
async fn renames_and_query_membership_reach_more_contacts_than_one_batch() {
    let s = TestServer::start().await;
    create(&s, LISTS, "Everyone").await;
    for chunk in 0..2 {
        let users: Vec<Value> = (0..750)
            .map(|i| json!({"external_id": format!("u{chunk}-{i}"), "tags": ["bulk"]}))
            .collect();
        s.upsert(Value::Array(users)).await;
    }
    let r = s
        .call(
            Method::PUT,
            &label_path(TAGS, "bulk"),
            Some(json!({"name": "Mass"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["data"], json!({"name": "Mass", "count": 1500}));
    assert_eq!(
        list(&s, &[("filter[tags]", "mass")]).await.body["total"],
        1500
    );
    assert_eq!(list(&s, &[("filter[tags]", "bulk")]).await.body["total"], 0);
    let r = s
        .post(
            &members_path("everyone"),
            json!({"query": {"filter": {"tags": "mass"}}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["data"], json!({"added": 1500}));
    assert_eq!(defined(&s, LISTS).await, pairs(&[("Everyone", 1500)]));
    let r = s.delete(&label_path(TAGS, "MASS")).await;
    assert_eq!(
        r.body["data"],
        json!({"name": "Mass", "removed_from": 1500})
    );
    assert_eq!(contact(&s, "u1-749").await["tags"], json!([]));
    assert_eq!(contact(&s, "u1-749").await["lists"], json!(["Everyone"]));
}

#[tokio::test]
async fn labels_and_counts_survive_a_restart() {
    let s = TestServer::start().await;
    create(&s, TAGS, "VIP").await;
    s.upsert(json!([
        {"external_id": "a", "tags": ["vip", "x"], "lists": ["news"], "optin": true},
        {"external_id": "b", "tags": ["x"]}
    ]))
    .await;
    let r = s
        .call(
            Method::PUT,
            &label_path(TAGS, "x"),
            Some(json!({"name": "Y"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let dir = s.stop().await;
    let s = TestServer::start_in(dir.clone(), base_config(&dir)).await;
    assert_eq!(defined(&s, TAGS).await, pairs(&[("VIP", 1), ("Y", 2)]));
    assert_eq!(defined(&s, LISTS).await, pairs(&[("news", 1)]));
    let a = contact(&s, "a").await;
    assert_eq!(
        (a["tags"].clone(), a["lists"].clone(), a["optin"].clone()),
        (json!(["VIP", "Y"]), json!(["news"]), json!(true))
    );
    assert_eq!(matching(&s, &[("filter[tags]", "y")]).await, ["a", "b"]);
    let r = s.post(TAGS, json!({"name": "vip"})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
}

#[tokio::test]
async fn one_batch_writing_a_contact_twice_counts_its_final_tags() {
    let s = TestServer::start().await;
    s.upsert(json!([
        {"external_id": "a", "tags": ["x"]},
        {"external_id": "a", "tags": ["X", "y"]},
        {"external_id": "b", "tags": ["Y"]}
    ]))
    .await;
    assert_eq!(tags_of(&s, "a").await, json!(["x", "y"]));
    assert_eq!(defined(&s, TAGS).await, pairs(&[("x", 1), ("y", 2)]));
    let too_many: Vec<String> = (0..101).map(|i| format!("t{i}")).collect();
    let r = s
        .post(
            CONTACTS,
            json!({"users": [{"external_id": "c", "tags": too_many}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.issue_fields(), ["users[0].tags"]);
}

#[tokio::test]
async fn an_import_row_naming_an_undefined_tag_under_reject_fails_alone() {
    let s = TestServer::start_with(|c| c.unknown_tags = UnknownPolicy::Reject).await;
    create(&s, TAGS, "vip").await;
    let body = json!([
        {"external_id": "a", "tags": ["ghost"], "lists": ["news"]},
        {"external_id": "b", "tags": ["VIP"], "lists": ["other"]}
    ]);
    let r = s.import(IMPORT, "application/json", body.to_string()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let d = &r.body["data"];
    assert_eq!(
        (d["created"].clone(), d["failed"].clone()),
        (json!(1), json!(1)),
        "{d}"
    );
    assert_eq!(d["errors"][0]["external_id"], "a", "{d}");
    assert_eq!(d["errors"][0]["field"], "tags", "{d}");
    assert!(
        d["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("'ghost'"),
        "{d}"
    );
    assert_eq!(contact(&s, "b").await["tags"], json!(["vip"]));
    assert_eq!(
        defined(&s, LISTS).await,
        pairs(&[("other", 1)]),
        "the failed row defined no list"
    );
    assert_eq!(defined(&s, TAGS).await, pairs(&[("vip", 1)]));
}

#[tokio::test]
async fn labels_belong_to_one_agent() {
    let s = TestServer::start().await;
    let key = s.agent_with_key("bot").await;
    s.agent_with_key("other").await;
    let bot = "/api/v1/chatbots/bot";
    let r = s
        .post(
            &format!("{bot}/contacts"),
            json!({"users": [{"external_id": "a", "tags": ["t"], "lists": ["l"]}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(defined(&s, TAGS).await, pairs(&[]), "default has none");
    let r = s
        .call_as(&key, Method::GET, &format!("{bot}/tags"), None)
        .await;
    assert_eq!(
        r.body["data"],
        json!([{"name": "t", "count": 1}]),
        "{}",
        r.body
    );
    for (method, path, body) in [
        (Method::GET, "/api/v1/chatbots/other/tags", None),
        (
            Method::POST,
            "/api/v1/chatbots/other/lists",
            Some(json!({"name": "x"})),
        ),
        (Method::GET, "/api/v1/chatbots/ghost/tags", None),
    ] {
        let r = s.call_as(&key, method.clone(), path, body).await;
        assert_eq!(
            r.status,
            StatusCode::NOT_FOUND,
            "{method} {path}: {}",
            r.body
        );
    }
    assert_eq!(
        s.get("/api/v1/chatbots/other/lists").await.body["data"],
        json!([])
    );

    // Deleting the agent takes its definitions along.
    let r = s.delete(bot).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = s
        .post("/api/v1/chatbots", json!({"id": "bot", "name": "bot"}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(s.get(&format!("{bot}/tags")).await.body["data"], json!([]));
    assert_eq!(s.get(&format!("{bot}/lists")).await.body["data"], json!([]));
    let r = s
        .post(
            &format!("{bot}/contacts"),
            json!({"users": [{"external_id": "b", "tags": ["T"]}]}),
        )
        .await;
    assert_eq!(r.body["data"][0]["tags"], json!(["T"]), "{}", r.body);
    assert_eq!(
        s.get(&format!("{bot}/tags")).await.body["data"],
        json!([{"name": "T", "count": 1}]),
        "counts start again from nothing"
    );
}

#[tokio::test]
async fn filtering_by_the_list_all_selects_every_contact() {
    let s = TestServer::start().await;
    s.upsert(json!([{"external_id": "a", "lists": ["news"]}, {"external_id": "b"}]))
        .await;
    let r = s.get(&format!("{CONTACTS}?filter[lists]=all")).await;
    assert_eq!(r.body["total"], 2, "{}", r.body);
    let r = s.get(&format!("{CONTACTS}?filter[lists]=ALL,news")).await;
    assert_eq!(r.body["total"], 1, "{}", r.body);
}
