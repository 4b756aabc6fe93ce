//! The Pabbly Chatflow dialect (`/api/v1/contacts…`) through HTTP: the seed's request,
//! every field and error, onDuplicate, filters, and one contact seen by both dialects.

use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{contact_path, Reply, TestServer, ADMIN_KEY, CONTACTS};

const PABBLY: &str = "/api/v1/contacts";

async fn save(s: &TestServer, body: Value) -> Reply {
    let r = s.post(PABBLY, body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r
}

fn created(r: &Reply) -> Vec<Value> {
    r.body["data"]["createdContacts"]
        .as_array()
        .unwrap()
        .clone()
}

fn failed(r: &Reply) -> Vec<Value> {
    r.body["data"]["failedContacts"].as_array().unwrap().clone()
}

/// The seed's example request, with `mobile` as written there (`9179897xxxxx`, digits
/// blanked out) and with real digits.
fn seed_request(mobile: &str) -> Value {
    json!([
        {
            "mobile": mobile,
            "name": "Alex cron",
            "optin": true,
            "incomingBlocked": false,
            "tags": ["indian", "vegetarian", "engineer"],
            "attributes": [{"name": "city", "value": "bhopal"}]
        }
    ])
}

#[tokio::test]
async fn the_seed_request_gets_the_seed_response_shape() {
    let s = TestServer::start().await;
    // Verbatim: the blanked-out digits are no phone number, so the item fails alone.
    let r = save(&s, seed_request("9179897xxxxx")).await;
    assert_eq!(r.body["status"], "success");
    assert_eq!(r.body["message"], "0 contacts saved successfully");
    assert_eq!(r.body["data"]["failedCount"], 1);
    let fail = &failed(&r)[0];
    assert_eq!(
        (&fail["mobile"], &fail["name"]),
        (&json!("9179897xxxxx"), &json!("Alex cron"))
    );
    assert!(
        fail["reason"].as_str().unwrap().starts_with("mobile: "),
        "{fail}"
    );

    let r = save(&s, seed_request("917989712345")).await;
    assert_eq!(r.body["message"], "1 contact saved successfully");
    assert_eq!(r.body["data"]["failedCount"], 0);
    assert_eq!(failed(&r), Vec::<Value>::new());
    let mut contact = created(&r)[0].clone();
    let id = contact.as_object_mut().unwrap().remove("_id").unwrap();
    assert_eq!(id.as_str().unwrap().len(), 24);
    assert_eq!(
        contact,
        json!({
            "mobile": "917989712345",
            "name": "Alex cron",
            "optin": true,
            "incomingBlocked": false,
            "tags": ["indian", "vegetarian", "engineer"],
            "attributes": [{"name": "city", "value": "bhopal"}],
            "source": "api",
            "list": ["all"]
        })
    );
    // One object instead of an array is one contact.
    let r = save(&s, json!({"mobile": "+44 20 7946 0958"})).await;
    assert_eq!(created(&r)[0]["mobile"], "442079460958");
}

#[tokio::test]
async fn every_item_problem_fails_that_item_only_naming_the_field() {
    let s =
        TestServer::start_with(|c| c.unknown_tags = contactd::domain::UnknownPolicy::Reject).await;
    let r = s
        .post("/api/v1/chatbots/default/tags", json!({"name": "known"}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = save(
        &s,
        json!([
            {"name": "no mobile"},
            {"mobile": "+1 555 0100", "optin": "maybe"},
            {"mobile": "+1 555 0101", "incomingBlocked": 3},
            {"mobile": "+1 555 0102", "tags": "vip"},
            {"mobile": "+1 555 0103", "tags": ["unknown"]},
            {"mobile": "+1 555 0104", "attributes": [{"value": "x"}]},
            {"mobile": "+1 555 0105", "onDuplicate": "merge"},
            {"mobile": "+1 555 0107", "attributes": [{"name": "note", "value": "x".repeat(4097)}]},
            {"mobile": "+1 555 0106", "tags": ["KNOWN"], "optin": "false"},
        ]),
    )
    .await;
    let reasons: Vec<String> = failed(&r)
        .iter()
        .map(|f| {
            f["reason"]
                .as_str()
                .unwrap()
                .split(':')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        reasons,
        [
            "mobile",
            "optin",
            "incomingBlocked",
            "tags",
            "tags",
            "attributes[0].name",
            "onDuplicate",
            "attributes[0].value"
        ]
    );
    assert_eq!(r.body["data"]["failedCount"], 8);
    let saved = created(&r);
    assert_eq!(saved.len(), 1);
    assert_eq!(
        (&saved[0]["tags"], &saved[0]["optin"]),
        (&json!(["known"]), &json!(false))
    );
    // Every item failing is still 200.
    let r = save(&s, json!([{"mobile": "x"}])).await;
    assert_eq!(r.body["message"], "0 contacts saved successfully");
}

#[tokio::test]
async fn bodies_keys_and_agents_that_do_not_fit_answer_in_the_pabbly_form() {
    let s = TestServer::start().await;
    let r = s.post(PABBLY, json!("text")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["status"], "error");
    assert!(
        r.body["message"].as_str().unwrap().contains("body"),
        "{}",
        r.body
    );
    let many: Vec<Value> = (0..1001)
        .map(|i| json!({"mobile": format!("+1555{i:07}")}))
        .collect();
    let r = s.post(PABBLY, Value::Array(many)).await;
    assert_eq!(
        (r.status, &r.body["status"]),
        (StatusCode::BAD_REQUEST, &json!("error"))
    );
    let r = s
        .call_as(
            "oc_live_not_a_key_000000000000000000000",
            Method::GET,
            PABBLY,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.body,
        json!({"status": "error", "message": "Invalid API key."})
    );
    let r = s.get(&format!("{PABBLY}/0123456789abcdef01234567")).await;
    assert_eq!(
        (r.status, &r.body["status"]),
        (StatusCode::NOT_FOUND, &json!("error"))
    );
    let r = s.get(&format!("{PABBLY}?onDuplicate=x")).await;
    assert_eq!(r.status, StatusCode::OK, "GET ignores onDuplicate");
    let r = s
        .post(
            &format!("{PABBLY}?onDuplicate=merge"),
            json!({"mobile": "+15550100"}),
        )
        .await;
    assert_eq!(
        (r.status, &r.body["status"]),
        (StatusCode::BAD_REQUEST, &json!("error"))
    );

    // An agent-scoped key works on its agent; an admin key on pabbly.agent.
    let key = s.agent_with_key("wa_bot").await;
    let r = s
        .call_as(
            &key,
            Method::POST,
            PABBLY,
            Some(json!({"mobile": "+15550100"})),
        )
        .await;
    assert_eq!(created(&r).len(), 1, "{}", r.body);
    assert_eq!(
        s.get("/api/v1/chatbots/wa_bot/contacts").await.body["total"],
        1
    );
    assert_eq!(s.get(CONTACTS).await.body["total"], 0);
    let other = TestServer::start_with(|c| c.pabbly_agent = "missing".into()).await;
    let r = other.get(PABBLY).await;
    assert_eq!(
        (r.status, &r.body["status"]),
        (StatusCode::NOT_FOUND, &json!("error"))
    );
    let r = s
        .call_as(ADMIN_KEY, Method::GET, "/api/v1/contacts/lists", None)
        .await;
    assert_eq!(r.body["data"][0], json!({"name": "all", "count": 0}));
}

#[tokio::test]
async fn on_duplicate_skips_by_default_and_overwrites_what_was_sent() {
    let s = TestServer::start().await;
    save(
        &s,
        json!({"mobile": "+1 (555) 123-4567", "name": "First", "optin": true, "tags": ["a"],
               "attributes": [{"name": "city", "value": "Austin"}, {"name": "plan", "value": "pro"}]}),
    )
    .await;
    // Any formatting of the number is the same contact.
    let r = save(&s, json!([{"mobile": "15551234567", "name": "Second"}])).await;
    assert_eq!(created(&r).len(), 0);
    assert!(failed(&r)[0]["reason"]
        .as_str()
        .unwrap()
        .contains("already exists"));
    let r = save(
        &s,
        json!([{"mobile": "+15551234567", "name": "Second", "tags": ["b"],
                "attributes": [{"name": "city", "value": "Boston"}], "onDuplicate": "overwrite"}]),
    )
    .await;
    let c = &created(&r)[0];
    assert_eq!(
        (&c["name"], &c["optin"], &c["tags"]),
        (&json!("Second"), &json!(true), &json!(["b"]))
    );
    assert_eq!(
        c["attributes"],
        json!([{"name": "city", "value": "Boston"}, {"name": "plan", "value": "pro"}])
    );
    // The request's onDuplicate for all, an item's own over it.
    let r = save_at(
        &s,
        "?onDuplicate=overwrite",
        json!([{"mobile": "15551234567", "name": "Third"}, {"mobile": "15551234567", "name": "Fourth", "onDuplicate": "skip"}]),
    )
    .await;
    assert_eq!(created(&r)[0]["name"], "Third");
    assert_eq!(failed(&r)[0]["name"], "Fourth");
    assert_eq!(s.get(CONTACTS).await.body["total"], 1);
    // Two items of one request with one new number: the second is the duplicate.
    let r = save(
        &s,
        json!([{"mobile": "+447700900123"}, {"mobile": "00447700900123"}]),
    )
    .await;
    assert_eq!((created(&r).len(), failed(&r).len()), (1, 1));
}

async fn save_at(s: &TestServer, query: &str, body: Value) -> Reply {
    let r = s.post(&format!("{PABBLY}{query}"), body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r
}

#[tokio::test]
async fn one_contact_reads_the_same_in_both_dialects() {
    let s = TestServer::start().await;
    // Written by Pabbly, read natively.
    let r = save(
        &s,
        json!({"mobile": "919179897123", "name": "Asha", "optin": true, "incomingBlocked": true,
               "tags": ["vip"], "attributes": [{"name": "city", "value": "Pune"}]}),
    )
    .await;
    let id = created(&r)[0]["_id"].as_str().unwrap().to_owned();
    let native = s.get(&contact_path(&id)).await;
    assert_eq!(native.status, StatusCode::OK, "{}", native.body);
    let n = &native.body["data"];
    assert_eq!(n["phonenumber"], "919179897123");
    assert_eq!(
        (&n["name"], &n["optin"], &n["incoming_blocked"]),
        (&json!("Asha"), &json!(true), &json!(true))
    );
    assert_eq!(
        (&n["tags"], &n["lists"], &n["source"]),
        (&json!(["vip"]), &json!([]), &json!("api"))
    );
    assert_eq!(n["custom_attributes"], json!({"city": "Pune"}));
    assert!(n.get("_id").is_none(), "native objects do not show _id");
    let found = s
        .get(&format!(
            "{CONTACTS}?filter[phonenumber]=%2B91%2091798%2097123"
        ))
        .await;
    assert_eq!(found.body["total"], 1, "{}", found.body);

    // Written natively, read by Pabbly.
    let c = s
        .upsert(
            json!([{"external_id": "u2", "name": "Ben", "phonenumber": "+1 (555) 010-0200",
                         "tags": ["Gold"], "lists": ["Newsletter"], "optin": false,
                         "custom_attributes": {"ltv": 42}}]),
        )
        .await;
    let all = s.get(PABBLY).await;
    let ben = all.body["data"]["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "Ben")
        .unwrap()
        .clone();
    let one = s
        .get(&format!("{PABBLY}/{}", ben["_id"].as_str().unwrap()))
        .await;
    let p = &one.body["data"];
    assert_eq!(p["mobile"], "15550100200");
    assert_eq!(
        (&p["tags"], &p["list"]),
        (&json!(["Gold"]), &json!(["all", "Newsletter"]))
    );
    assert_eq!(
        (&p["optin"], &p["incomingBlocked"]),
        (&json!(false), &json!(false))
    );
    assert_eq!(p["attributes"], json!([{"name": "ltv", "value": 42}]));
    assert_eq!(p["countryCode"], "1");
    assert_eq!(p["createdAt"].as_str().unwrap().len(), 20, "{p}");
    assert_eq!(c[0]["id"], "contact_2");
    // The native routes take the _id too: PATCH and DELETE.
    let r = s.patch(&contact_path(&id), json!({"name": "Asha R"})).await;
    assert_eq!(r.body["data"]["name"], "Asha R", "{}", r.body);
    assert_eq!(s.delete(&contact_path(&id)).await.status, StatusCode::OK);
    let r = s.get(&format!("{PABBLY}/{id}")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn put_replaces_adds_and_removes_tags_and_updates_attributes_by_name() {
    let s = TestServer::start().await;
    let r = save(
        &s,
        json!({"mobile": "+15550100", "name": "Cy", "tags": ["a", "b"],
               "attributes": [{"name": "city", "value": "Oslo"}, {"name": "plan", "value": "pro"}]}),
    )
    .await;
    let path = format!("{PABBLY}/{}", created(&r)[0]["_id"].as_str().unwrap());
    let r = s
        .call(
            Method::PUT,
            &path,
            Some(json!({"tags": ["x", "y"], "tagsToAdd": ["z"], "tagsToRemove": ["x"],
                        "optin": "true", "attributes": [{"name": "city", "value": ""}, {"name": "plan", "value": "team"}]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let c = &r.body["data"];
    assert_eq!(
        (&c["tags"], &c["optin"], &c["name"]),
        (&json!(["y", "z"]), &json!(true), &json!("Cy"))
    );
    assert_eq!(c["attributes"], json!([{"name": "plan", "value": "team"}]));
    for (bad, field) in [
        (json!({"optin": 7}), "optin"),
        (
            json!({"attributes": [{"name": "note", "value": "x".repeat(10_000)}]}),
            "attributes[0].value",
        ),
    ] {
        let r = s.call(Method::PUT, &path, Some(bad)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(
            r.body["message"].as_str().unwrap().contains(field),
            "{}",
            r.body
        );
    }
    let r = s.get(&path).await;
    assert_eq!(
        r.body["data"]["attributes"],
        json!([{"name": "plan", "value": "team"}])
    );
    // Updates merge with what is stored: no contact ends with more than 100 values.
    let many: Vec<Value> = (0..99)
        .map(|i| json!({"name": format!("a{i}"), "value": i}))
        .collect();
    let r = s
        .call(Method::PUT, &path, Some(json!({"attributes": many})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let one_more = json!({"attributes": [{"name": "extra", "value": 1}]});
    let r = s.call(Method::PUT, &path, Some(one_more)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("more than 100 attributes"),
        "{}",
        r.body
    );
}

/// The name filter finds a substring anywhere in the name, across words and in long
/// or accented words, and follows renames.
#[tokio::test]
async fn name_filter_finds_substrings_anywhere() {
    let s = TestServer::start().await;
    s.upsert(json!([
        {"external_id": "a", "name": "Grace Montgomeryshire-Smythe"},
        {"external_id": "b", "name": "Ünal Özdemir"},
        {"external_id": "c", "name": "Ada Lovelace"},
        {"external_id": "d", "name": "Grace Hopper"},
        {"external_id": "e"},
    ]))
    .await;
    let found = |r: &Reply| -> (Vec<String>, Value) {
        let names = r.body["data"]["contacts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect();
        (names, r.body["data"]["totalCount"].clone())
    };
    let montgomery = "Grace Montgomeryshire-Smythe";
    for (name, want) in [
        ("ACE", vec![montgomery, "Ada Lovelace", "Grace Hopper"]),
        ("gomeryshire-smy", vec![montgomery]),
        ("omeryshir", vec![montgomery]),
        ("montgomeryshires", vec![]),
        ("ÖZDEM", vec!["Ünal Özdemir"]),
        ("l ö", vec!["Ünal Özdemir"]),
        ("e h", vec!["Grace Hopper"]),
        ("ace m", vec![montgomery]),
        (
            "a",
            vec![montgomery, "Ünal Özdemir", "Ada Lovelace", "Grace Hopper"],
        ),
        ("-", vec![montgomery]),
        ("xyzzy", vec![]),
    ] {
        let encoded: String = name.bytes().map(|b| format!("%{b:02X}")).collect();
        let r = s.get(&format!("{PABBLY}?name={encoded}")).await;
        assert_eq!(r.status, StatusCode::OK, "{name}: {}", r.body);
        assert_eq!(
            found(&r),
            (
                want.iter().map(|n| n.to_string()).collect(),
                json!(want.len())
            ),
            "{name}"
        );
    }
    // A renamed contact is found by its new name only.
    let r = s
        .patch(
            &contact_path("d"),
            json!({"data": {"name": "Grace Brewster"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    for (name, want) in [("hop", vec![]), ("rewst", vec!["Grace Brewster"])] {
        let r = s.get(&format!("{PABBLY}?name={name}")).await;
        assert_eq!(found(&r).0, want, "{name}");
    }
}

#[tokio::test]
async fn get_filters_order_and_pages() {
    let s = TestServer::start().await;
    s.upsert(json!([
        {"external_id": "a", "name": "Alexandra Stone", "phonenumber": "+1 555 010 0001", "tags": ["vip", "beta"], "optin": true,
         "custom_attributes": {"city": "Paris"}},
        {"external_id": "b", "name": "Sandra Lee", "phonenumber": "+1 555 010 0002", "tags": ["vip"], "incoming_blocked": true},
        {"external_id": "c", "name": "Bob"},
    ]))
    .await;
    let names = |r: &Reply| -> Vec<String> {
        r.body["data"]["contacts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect()
    };
    for (query, want) in [
        ("name=ANDRA", vec!["Alexandra Stone", "Sandra Lee"]),
        ("name=xand", vec!["Alexandra Stone"]),
        ("mobile=15550100002", vec!["Sandra Lee"]),
        ("tags=vip,beta", vec!["Alexandra Stone"]),
        ("tags=vip&order=-1", vec!["Sandra Lee", "Alexandra Stone"]),
        ("optin=true", vec!["Alexandra Stone"]),
        // A flag never set shows as false, so `false` finds it too.
        ("optin=false", vec!["Sandra Lee", "Bob"]),
        ("incomingBlocked=true", vec!["Sandra Lee"]),
        ("incomingBlocked=false", vec!["Alexandra Stone", "Bob"]),
        ("source=api&limit=2", vec!["Alexandra Stone", "Sandra Lee"]),
        ("limit=2&page=2", vec!["Bob"]),
        (
            "attributes[0][name]=city&attributes[0][value]=Paris",
            vec!["Alexandra Stone"],
        ),
    ] {
        let r = s.get(&format!("{PABBLY}?{query}")).await;
        assert_eq!(r.status, StatusCode::OK, "{query}: {}", r.body);
        assert_eq!(names(&r), want, "{query}");
    }
    let r = s.get(&format!("{PABBLY}?limit=500")).await;
    assert_eq!(r.body["data"]["limit"], 25);
    let bob = &r.body["data"]["contacts"][2];
    assert_eq!(bob["mobile"], "", "no phone: mobile is empty");
    for bad in [
        "order=0",
        "limit=0",
        "page=x",
        "optin=maybe",
        "mobile=abc",
        "attributes[0][name]=city",
    ] {
        let r = s.get(&format!("{PABBLY}?{bad}")).await;
        assert_eq!(
            (r.status, &r.body["status"]),
            (StatusCode::BAD_REQUEST, &json!("error")),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn contact_lists_start_with_all() {
    let s = TestServer::start().await;
    s.upsert(json!([
        {"external_id": "a", "lists": ["Newsletter"]},
        {"external_id": "b", "lists": ["newsletter", "Q3"]},
        {"external_id": "c"},
    ]))
    .await;
    let r = s.get("/api/v1/contacts/lists").await;
    assert_eq!(
        r.body["data"],
        json!([
            {"name": "all", "count": 3},
            {"name": "Newsletter", "count": 2},
            {"name": "Q3", "count": 1}
        ])
    );
}
