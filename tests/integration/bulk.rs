//! Bulk import and export over HTTP: formats, row reports, file-level errors, gzip,
//! limits, and round trips.

use std::io::Write;

use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{contact_path, Reply, TestServer, CONTACTS};

const IMPORT: &str = "/api/v1/chatbots/default/contacts/import";
const EXPORT: &str = "/api/v1/chatbots/default/contacts/export";

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn data(r: &Reply) -> &Value {
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    &r.body["data"]
}

async fn total(s: &TestServer, agent_contacts: &str) -> u64 {
    s.get(agent_contacts).await.body["total"].as_u64().unwrap()
}

#[tokio::test]
async fn csv_import_writes_good_rows_and_reports_each_bad_one() {
    let s = TestServer::start().await;
    s.upsert(json!([{"external_id": "holder", "email": "taken@x.co"}]))
        .await;
    let csv = "\u{feff}external_id,name,email,phonenumber,stripe_accounts,ltv:number,vip:boolean,plan\r\n\
        u1,\"Rivera, Sam\",sam@x.co,+1 555 123 4567,\"[{\"\"label\"\":\"\"main\"\",\"\"stripe_id\"\":\"\"cus_1\"\"}]\",540,TRUE,pro\r\n\
        u2,\"Zoë \"\"Z\"\"\r\nSecond line\",,,,12.5,false,\r\n\
        ,No Id,,,,,,\r\n\
        u3,Bad Email,not-an-email,,,,,\r\n\
        u4,Bad Number,,,,lots,,\r\n\
        u5,Conflict,TAKEN@x.co,,,,,\r\n";
    let r = s.import(IMPORT, "text/csv", csv).await;
    let d = data(&r);
    assert_eq!(
        (
            d["rows"].clone(),
            d["created"].clone(),
            d["updated"].clone(),
            d["failed"].clone()
        ),
        (json!(6), json!(2), json!(0), json!(4)),
        "{d}"
    );
    let errors = d["errors"].as_array().unwrap();
    let rows: Vec<u64> = errors.iter().map(|e| e["row"].as_u64().unwrap()).collect();
    // The header is row 1; u2's cell spans two lines but is one spreadsheet row.
    assert_eq!(rows, [4, 5, 6, 7], "{d}");
    assert_eq!(errors[0]["field"], "external_id");
    assert_eq!(errors[0]["external_id"], Value::Null);
    assert_eq!(errors[1]["field"], "email");
    assert_eq!(errors[1]["external_id"], "u3");
    assert_eq!(errors[2]["field"], "ltv", "CSV errors name the column");
    assert_eq!(errors[3]["field"], "email");
    assert!(
        errors[3]["message"].as_str().unwrap().contains("'holder'"),
        "a conflict names the contact holding the email: {}",
        errors[3]
    );

    let u1 = s.get(&contact_path("u1")).await.body["data"].clone();
    assert_eq!(u1["name"], "Rivera, Sam");
    assert_eq!(u1["stripe_accounts"][0]["stripe_id"], "cus_1");
    assert_eq!(
        u1["custom_attributes"],
        json!({"ltv": 540, "vip": true, "plan": "pro"})
    );
    let u2 = s.get(&contact_path("u2")).await.body["data"].clone();
    assert_eq!(u2["name"], "Zoë \"Z\"\r\nSecond line");
    assert_eq!(u2["email"], Value::Null, "an empty cell is not set");
    let attrs = s
        .get("/api/v1/chatbots/default/custom-attributes")
        .await
        .body["data"]
        .clone();
    let kind = |name: &str| {
        attrs
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .map(|a| a["type"].clone())
    };
    assert_eq!(kind("ltv"), Some(json!("number")), "typed header");
    assert_eq!(kind("vip"), Some(json!("boolean")));
    assert_eq!(kind("plan"), Some(json!("text")));

    // Running the same file again creates nothing: every row is keyed by external_id.
    let again = s.import(IMPORT, "text/csv", csv).await;
    assert_eq!(data(&again)["created"], 0);
    assert_eq!(data(&again)["updated"], 2);
    assert_eq!(total(&s, CONTACTS).await, 3);
}

#[tokio::test]
async fn on_duplicate_applies_to_imports() {
    let s = TestServer::start().await;
    s.upsert(json!([{"external_id": "a", "name": "Old"}])).await;
    let csv = "external_id,name\na,New\nb,B\n";
    let r = s
        .import(&format!("{IMPORT}?on_duplicate=skip"), "text/csv", csv)
        .await;
    assert_eq!(data(&r)["skipped"], 1);
    assert_eq!(s.get(&contact_path("a")).await.body["data"]["name"], "Old");
    let r = s
        .import(&format!("{IMPORT}?on_duplicate=error"), "text/csv", csv)
        .await;
    let d = data(&r);
    assert_eq!(
        (d["failed"].clone(), d["errors"][0]["row"].clone()),
        (json!(2), json!(2))
    );
    let r = s
        .import(&format!("{IMPORT}?on_duplicate=maybe"), "text/csv", csv)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn json_and_ndjson_imports_number_rows_by_position_and_line() {
    let s = TestServer::start().await;
    let body = json!([
        {"external_id": "j1", "name": "One", "custom_attributes": {"seen": "2024-05-01T10:00:00Z"}},
        "not an object",
        {"name": "no id"},
        {"external_id": "j2", "custom_attributes": {"seen": "2024-06-01T00:00:00.250Z"}},
    ]);
    let r = s.import(IMPORT, "application/json", body.to_string()).await;
    let d = data(&r);
    assert_eq!(
        (d["created"].clone(), d["failed"].clone()),
        (json!(2), json!(2)),
        "{d}"
    );
    let rows: Vec<_> = d["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["row"].clone())
        .collect();
    assert_eq!(rows, [json!(2), json!(3)]);
    let seen = s
        .get("/api/v1/chatbots/default/custom-attributes/seen")
        .await;
    assert_eq!(
        seen.body["data"]["type"], "date",
        "written dates import as dates"
    );

    let ndjson = "{\"external_id\":\"n1\"}\n\n{oops\n{\"external_id\":\"n2\",\"email\":\"bad\"}\n";
    let r = s.import(IMPORT, "application/x-ndjson", ndjson).await;
    let d = data(&r);
    assert_eq!(
        (d["created"].clone(), d["failed"].clone()),
        (json!(1), json!(2)),
        "{d}"
    );
    let errors = d["errors"].as_array().unwrap();
    assert_eq!(
        (errors[0]["row"].clone(), errors[1]["row"].clone()),
        (json!(3), json!(4))
    );
    assert_eq!(errors[0]["field"], Value::Null);
    assert_eq!(errors[1]["field"], "email");
}

#[tokio::test]
async fn malformed_files_are_refused_before_anything_is_written() {
    let s = TestServer::start().await;
    let cases: [(&str, Vec<u8>, StatusCode); 7] = [
        (
            "text/csv",
            b"name,email\nSam,s@x.co\n".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        ("text/csv", b"".to_vec(), StatusCode::BAD_REQUEST),
        (
            "text/csv",
            b"\xff\xfee\0x\0t\0".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "text/csv",
            b"external_id,name\nok,Fine\nbad,\xff\xfe\n".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "application/json",
            br#"{"external_id":"x"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "application/json",
            br#"[{"external_id":"x"}, {"external_id":"y"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "text/plain",
            b"external_id\nx\n".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
    ];
    for (content_type, body, status) in cases {
        let r = s.import(IMPORT, content_type, body.clone()).await;
        assert_eq!(
            r.status,
            status,
            "{content_type} {:?}: {}",
            String::from_utf8_lossy(&body),
            r.body
        );
        assert!(!r.message().is_empty());
    }
    let r = s.import(IMPORT, "text/csv", b"name\nx\n".to_vec()).await;
    assert_eq!(r.issue_fields(), ["file"]);
    assert!(r.body["issues"][0]["message"]
        .as_str()
        .unwrap()
        .contains("external_id"));
    assert_eq!(total(&s, CONTACTS).await, 0, "nothing was written");

    let (status, _, _) = s
        .send_bytes(
            Method::POST,
            IMPORT,
            &[("content-type", "text/csv"), ("content-encoding", "br")],
            b"external_id\nx\n".to_vec(),
        )
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (status, _, _) = s
        .send_bytes(
            Method::POST,
            IMPORT,
            &[("content-type", "text/csv"), ("content-encoding", "gzip")],
            b"this is not gzip".to_vec(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let r = s
        .import(
            "/api/v1/chatbots/nobody/contacts/import",
            "text/csv",
            "external_id\nx\n",
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn gzip_uploads_are_read() {
    let s = TestServer::start().await;
    let mut csv = String::from("external_id,name\n");
    for i in 0..2500 {
        csv.push_str(&format!("g{i},Name {i}\n"));
    }
    let (status, _, body) = s
        .send_bytes(
            Method::POST,
            IMPORT,
            &[("content-type", "text/csv"), ("content-encoding", "gzip")],
            gzip(csv.as_bytes()),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let report: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        report["data"]["created"], 2500,
        "three chunks of at most 1000"
    );
    assert_eq!(total(&s, CONTACTS).await, 2500);
}

#[tokio::test]
async fn import_limits_are_separate_from_the_json_body_limit() {
    let s = TestServer::start_with(|c| {
        c.max_body_bytes = 100;
        c.import_max_bytes = 10_000;
    })
    .await;
    let mut csv = String::from("external_id,name\n");
    for i in 0..200 {
        csv.push_str(&format!("r{i},Someone\n"));
    }
    assert!(csv.len() > 100 && csv.len() < 10_000);
    let r = s.import(IMPORT, "text/csv", csv.clone()).await;
    assert_eq!(
        data(&r)["created"],
        200,
        "larger than max_body_bytes is fine"
    );
    let big = csv.repeat(10);
    let r = s.import(IMPORT, "text/csv", big.clone()).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.message().contains("import.max_bytes"));
    // Small when compressed, too large once decompressed.
    let (status, _, _) = s
        .send_bytes(
            Method::POST,
            IMPORT,
            &[("content-type", "text/csv"), ("content-encoding", "gzip")],
            gzip(big.as_bytes()),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn failures_beyond_1000_are_counted_but_not_listed() {
    let s = TestServer::start().await;
    let mut csv = String::from("external_id,email\n");
    for i in 0..1200 {
        csv.push_str(&format!("f{i},not-an-email\n"));
    }
    let r = s.import(IMPORT, "text/csv", csv).await;
    let d = data(&r);
    assert_eq!(d["failed"], 1200);
    assert_eq!(d["errors"].as_array().unwrap().len(), 1000);
}

/// Contacts without the fields an import cannot reproduce (id, timestamps).
fn comparable(contacts: &Value) -> Vec<Value> {
    let mut out: Vec<Value> = contacts
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let mut c = c.clone();
            let obj = c.as_object_mut().unwrap();
            // What an import sets anew: where the contact came from, and when.
            for key in ["id", "created_at", "updated_at", "source"] {
                obj.remove(key);
            }
            c
        })
        .collect();
    out.sort_by_key(|c| c["external_id"].as_str().unwrap().to_owned());
    out
}

fn attribute_types(defs: &Value) -> Vec<(String, String)> {
    let mut out: Vec<_> = defs
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap().to_owned(),
                d["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn export_then_import_reproduces_contacts_attributes_and_types() {
    let s = TestServer::start().await;
    for (name, kind) in [
        ("ltv", "number"),
        ("vip", "boolean"),
        ("since", "date"),
        ("note", "text"),
    ] {
        let r = s
            .post(
                "/api/v1/chatbots/default/custom-attributes",
                json!({"name": name, "type": kind}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    s.upsert(json!([
        {"external_id": "a", "name": "Zoë \"Z\", Jr", "email": "zoe@x.co", "phonenumber": "+44 20 7946 0958",
         "stripe_accounts": [{"label": "main", "stripe_id": "cus_1"}],
         "tags": ["VIP", "beta tester"], "lists": ["Newsletter", "Q3 promo"], "optin": true, "incoming_blocked": false,
         "custom_attributes": {"ltv": 540.5, "vip": true, "since": "2024-05-01T10:00:00Z", "note": "line one\nline two, \"quoted\""}},
        {"external_id": "b,with comma", "name": "日本語の名前", "tags": ["vip"], "optin": false,
         "custom_attributes": {"ltv": 3, "vip": false}},
        {"external_id": "c"},
    ]))
    .await;
    let original = comparable(&s.get(CONTACTS).await.body["data"]);
    let original_types = attribute_types(
        &s.get("/api/v1/chatbots/default/custom-attributes")
            .await
            .body["data"],
    );

    for format in ["csv", "json", "ndjson"] {
        let (status, headers, body) = s
            .send_bytes(
                Method::GET,
                &format!("{EXPORT}?format={format}"),
                &[],
                Vec::new(),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{format}");
        let content_type = headers["content-type"].to_str().unwrap().to_owned();
        let agent = format!("copy_{format}");
        s.agent_with_key(&agent).await;
        let r = s
            .import(
                &format!("/api/v1/chatbots/{agent}/contacts/import"),
                &content_type,
                body.to_vec(),
            )
            .await;
        assert_eq!(data(&r)["created"], 3, "{format}: {}", r.body);
        let copy = comparable(
            &s.get(&format!("/api/v1/chatbots/{agent}/contacts"))
                .await
                .body["data"],
        );
        assert_eq!(copy, original, "{format}");
        let sources = s
            .get(&format!(
                "/api/v1/chatbots/{agent}/contacts?filter[source]=csv"
            ))
            .await;
        assert_eq!(sources.body["total"], 3, "{format}: imports are source csv");
        let types = attribute_types(
            &s.get(&format!("/api/v1/chatbots/{agent}/custom-attributes"))
                .await
                .body["data"],
        );
        assert_eq!(types, original_types, "{format}");
    }
}

/// CSV export puts a `'` before cells a spreadsheet would run as formulas (not before
/// phone or negative numbers), `raw=true` leaves them as stored, and import takes the
/// quote off again.
#[tokio::test]
async fn csv_export_neutralizes_formulas_and_import_restores_them() {
    let s = TestServer::start().await;
    let names = [
        "=HYPERLINK(\"http://x\")",
        "@SUM(A1)",
        "+cmd",
        "-2+3+cmd",
        "\tTabbed",
        "'=quoted already",
        "'plain quote",
        "Ada",
    ];
    let contacts: Vec<Value> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            json!({"external_id": format!("u{i}"), "name": name, "phonenumber": "+1 (555) 010-0100",
            "custom_attributes": {"score": -12.5}})
        })
        .collect();
    s.upsert(Value::Array(contacts)).await;
    let export = |raw: &'static str| {
        let s = &s;
        async move {
            let (status, _, body) = s
                .send_bytes(
                    Method::GET,
                    &format!("{EXPORT}?format=csv{raw}"),
                    &[],
                    Vec::new(),
                )
                .await;
            assert_eq!(status, StatusCode::OK);
            String::from_utf8(body.to_vec()).unwrap()
        }
    };
    let safe = export("").await;
    let raw = export("&raw=true").await;
    let rows = |csv: &str| -> Vec<Vec<String>> {
        let mut reader = csv::Reader::from_reader(csv.as_bytes());
        reader
            .records()
            .map(|r| r.unwrap().iter().map(str::to_owned).collect())
            .collect()
    };
    let (safe_rows, raw_rows) = (rows(&safe), rows(&raw));
    for (i, name) in names.iter().enumerate() {
        let quoted = i < 6;
        let want = if quoted {
            format!("'{name}")
        } else {
            (*name).to_owned()
        };
        assert_eq!(safe_rows[i][1], want, "{name}");
        assert_eq!(raw_rows[i][1], *name, "raw: {name}");
        assert_eq!(safe_rows[i][3], "+1 (555) 010-0100", "a phone number stays");
        assert_eq!(
            safe_rows[i].last().unwrap(),
            "-12.5",
            "a negative number stays"
        );
    }
    let r = s.get(&format!("{EXPORT}?raw=yes")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["issues"][0]["field"], "raw", "{}", r.body);

    s.agent_with_key("copy").await;
    let r = s
        .import(
            "/api/v1/chatbots/copy/contacts/import",
            "text/csv",
            safe.into_bytes(),
        )
        .await;
    assert_eq!(data(&r)["created"], names.len(), "{}", r.body);
    let copy = s.get("/api/v1/chatbots/copy/contacts").await;
    let copied: Vec<&str> = copy.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(copied, names, "export then import gives back every value");
}

#[tokio::test]
async fn export_takes_the_list_query_and_checks_its_format() {
    let s = TestServer::start().await;
    s.upsert(json!([
        {"external_id": "a", "name": "Ada Lovelace"},
        {"external_id": "b", "name": "Grace Hopper"},
        {"external_id": "c", "name": "Ada Byron"},
    ]))
    .await;
    let (status, headers, body) = s
        .send_bytes(
            Method::GET,
            &format!("{EXPORT}?format=ndjson&q=ada&sort=-name"),
            &[],
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/x-ndjson");
    assert_eq!(
        headers["content-disposition"],
        "attachment; filename=\"contacts.ndjson\""
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let ids: Vec<String> = String::from_utf8(body.to_vec())
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["external_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids, ["a", "c"]);
    let (status, _, body) = s
        .send_bytes(
            Method::GET,
            &format!("{EXPORT}?format=xml"),
            &[],
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["issues"][0]["field"], "format");
    let (status, _, _) = s
        .send_bytes(
            Method::GET,
            &format!("{EXPORT}?sort=shoe_size"),
            &[],
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, headers, body) = s.send_bytes(Method::GET, EXPORT, &[], Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    assert_eq!(
        String::from_utf8(body.to_vec()).unwrap().lines().count(),
        4,
        "header and three rows"
    );
}

#[tokio::test]
async fn imports_do_not_depend_on_where_chunks_begin() {
    let s = TestServer::start().await;
    // A repeated external_id meets on_duplicate like a stored one.
    let r = s
        .import(
            &format!("{IMPORT}?on_duplicate=error"),
            "text/csv",
            "external_id,name\nu1,A\nu1,B\n",
        )
        .await;
    let d = data(&r);
    assert_eq!(
        (d["created"].clone(), d["failed"].clone()),
        (json!(1), json!(1)),
        "{d}"
    );
    assert_eq!(d["errors"][0]["row"], 3);
    let r = s
        .import(
            &format!("{IMPORT}?on_duplicate=skip"),
            "text/csv",
            "external_id,name\nu2,A\nu2,B\n",
        )
        .await;
    assert_eq!(data(&r)["skipped"], 1);
    assert_eq!(s.get(&contact_path("u2")).await.body["data"]["name"], "A");
}

#[tokio::test]
async fn a_failed_row_defines_no_attribute() {
    let s = TestServer::start().await;
    s.upsert(json!([{"external_id": "holder", "email": "taken@x.co"}]))
        .await;
    let r = s
        .import(
            IMPORT,
            "text/csv",
            "external_id,email,score:number\nu1,taken@x.co,5\n",
        )
        .await;
    assert_eq!(data(&r)["failed"], 1);
    let def = s
        .get("/api/v1/chatbots/default/custom-attributes/score")
        .await;
    assert_eq!(
        def.status,
        StatusCode::NOT_FOUND,
        "the row failed, so score stays undefined"
    );
    let r = s
        .import(
            IMPORT,
            "text/csv",
            "external_id,email,score:number\nu1,free@x.co,5\n",
        )
        .await;
    assert_eq!(data(&r)["created"], 1);
    let def = s
        .get("/api/v1/chatbots/default/custom-attributes/score")
        .await;
    assert_eq!(def.body["data"]["type"], "number");
}

#[tokio::test]
async fn csv_attribute_cells_update_only_themselves() {
    let s = TestServer::start().await;
    s.upsert(json!([{"external_id": "u1", "name": "Sam", "custom_attributes": {"ltv": 5, "vip": true, "plan": "pro"}}]))
        .await;
    let r = s
        .import(IMPORT, "text/csv", "external_id,name,ltv,vip\nu1,,,false\n")
        .await;
    assert_eq!(data(&r)["updated"], 1);
    let u1 = s.get(&contact_path("u1")).await.body["data"].clone();
    assert_eq!(u1["name"], "Sam", "an empty cell leaves the stored value");
    assert_eq!(
        u1["custom_attributes"],
        json!({"ltv": 5, "vip": false, "plan": "pro"})
    );
    // JSON rows replace the set, as POST /contacts does.
    let r = s
        .import(
            IMPORT,
            "application/x-ndjson",
            r#"{"external_id":"u1","custom_attributes":{"ltv":6}}"#,
        )
        .await;
    assert_eq!(data(&r)["updated"], 1);
    let u1 = s.get(&contact_path("u1")).await.body["data"].clone();
    assert_eq!(u1["custom_attributes"], json!({"ltv": 6}));
}
