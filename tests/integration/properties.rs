//! Property tests: the record codec round-trips, the contact validator never panics on
//! any JSON, and paging through the listing returns every contact exactly once.

use std::collections::BTreeMap;

use contactd::domain::{
    AttrType, AttrValue, AttributeDef, Contact, ContactInput, Issues, Schema, StripeAccount,
    UnknownPolicy,
};
use contactd::store::{decode_contact, encode_contact, OnDuplicate, RedbStore, Store};
use proptest::prelude::*;
use serde_json::{json, Value};

fn attr_value() -> impl Strategy<Value = AttrValue> {
    prop_oneof![
        ".{0,40}".prop_map(AttrValue::Text),
        any::<i64>().prop_map(AttrValue::Int),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(AttrValue::Float),
        any::<bool>().prop_map(AttrValue::Bool),
        any::<i64>().prop_map(AttrValue::Date),
    ]
}

fn contact() -> impl Strategy<Value = Contact> {
    (
        any::<u64>(),
        "[^\\x00-\\x1f]{1,40}",
        proptest::option::of(".{0,30}"),
        proptest::option::of("[a-z]{1,10}@[a-z]{1,10}\\.co"),
        proptest::option::of("[0-9 +()-]{1,20}"),
        proptest::collection::vec(
            (
                "[a-z]{1,8}",
                proptest::option::of("cus_[a-z0-9]{1,8}"),
                proptest::option::of("[a-z]{1,5}@x\\.co"),
            )
                .prop_map(|(label, stripe_id, stripe_email)| StripeAccount {
                    label,
                    stripe_id,
                    stripe_email,
                }),
            0..3,
        ),
        proptest::collection::btree_map("[a-z]{1,10}", attr_value(), 0..5),
        any::<i64>(),
        any::<i64>(),
    )
        .prop_map(
            |(
                id,
                external_id,
                name,
                email,
                phonenumber,
                stripe_accounts,
                custom_attributes,
                created_at,
                updated_at,
            )| Contact {
                id,
                external_id,
                name,
                email,
                phonenumber,
                stripe_accounts,
                custom_attributes,
                created_at,
                updated_at,
                ..Contact::default()
            },
        )
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,20}".prop_map(Value::String),
        prop_oneof![Just("a@b.co"), Just("+1 555"), Just(""), Just("ext")].prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("external_id".to_owned()),
                    Just("name".to_owned()),
                    Just("email".to_owned()),
                    Just("phonenumber".to_owned()),
                    Just("stripe_accounts".to_owned()),
                    Just("custom_attributes".to_owned()),
                    Just("label".to_owned()),
                    Just("stripe_id".to_owned()),
                    "[a-z]{1,6}",
                ],
                inner,
                0..6
            )
            .prop_map(|m: BTreeMap<String, Value>| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn codec_round_trips(c in contact()) {
        let bytes = encode_contact("agent", &c);
        prop_assert_eq!(decode_contact("agent", &bytes).unwrap(), c);
    }

    #[test]
    fn validator_never_panics_and_names_a_field_under_the_prefix(v in json_value()) {
        let mut issues = Issues::new();
        let parsed = ContactInput::parse(&v, "users[7]", &mut issues);
        prop_assert_eq!(parsed.is_some(), issues.is_empty());
        for issue in issues.as_slice() {
            prop_assert!(issue.field.starts_with("users[7]"), "{}", issue.field);
            prop_assert!(!issue.message.is_empty());
        }
    }
}

fn attr_type() -> impl Strategy<Value = AttrType> {
    prop_oneof![
        Just(AttrType::Text),
        Just(AttrType::Number),
        Just(AttrType::Boolean),
        Just(AttrType::Date)
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        ".{0,30}".prop_map(Value::String),
        "[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\\.[0-9]{1,9})?)?(Z|[+-][0-9]{2}:?[0-9]{2})?)?"
            .prop_map(Value::String),
        prop_oneof![Just("true"), Just("FALSE"), Just("1"), Just("")].prop_map(|s| json!(s)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Typing never panics; every value either lands typed or is named in an issue
    /// under the exact path, and a failure writes nothing into the result.
    #[test]
    fn typed_validator_never_panics_and_names_the_field(
        defs in proptest::collection::btree_map("[a-z]{1,3}", (attr_type(), any::<bool>()), 0..4),
        raw in proptest::collection::btree_map("[a-z]{1,3}", scalar(), 0..6),
        policy in prop_oneof![Just(UnknownPolicy::Define), Just(UnknownPolicy::Strip), Just(UnknownPolicy::Reject)],
    ) {
        let mut schema = Schema::new(defs.iter().map(|(name, (kind, archived))| AttributeDef {
            name: name.clone(),
            label: name.clone(),
            kind: *kind,
            description: None,
            archived: *archived,
            created_at: 0,
        }), policy.into());
        let mut issues = Issues::new();
        let typed = schema.type_values(&raw, None, "users[4].custom_attributes", 0, &mut issues);
        for issue in issues.as_slice() {
            let name = issue.field.strip_prefix("users[4].custom_attributes.");
            prop_assert!(name.is_some_and(|n| raw.contains_key(n)), "{}", issue.field);
            prop_assert!(!typed.contains_key(name.unwrap_or_default()));
        }
        for (name, value) in &raw {
            let named = issues.as_slice().iter().any(|i| i.field.ends_with(&format!(".{name}")));
            let stored = typed.contains_key(name);
            let dropped = value.is_null() || (policy == UnknownPolicy::Strip && !defs.contains_key(name));
            prop_assert!(named || stored || dropped, "{name}={value} neither stored nor reported");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn paging_returns_every_contact_once_in_creation_order(
        count in 0usize..120,
        deletions in proptest::collection::vec(0usize..120, 0..30),
        per_page in 1usize..40,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path()).unwrap();
        let listed = rt.block_on(async {
            let agent = contactd::domain::Agent { id: "a".into(), name: "a".into(), created_at: 0, contact_count: 0 };
            store.create_agent(agent).await.unwrap();
            let mut issues = Issues::new();
            let entries: Vec<ContactInput> = (0..count)
                .map(|i| ContactInput::parse(&json!({"external_id": format!("e{i}")}), "", &mut issues).unwrap())
                .collect();
            if !entries.is_empty() {
                store.upsert_contacts("a".into(), entries, OnDuplicate::Update, UnknownPolicy::Define.into(), 1_700_000_000).await.unwrap();
            }
            for d in &deletions {
                let _ = store.delete_contact("a".into(), format!("e{d}"), None, 1).await;
            }
            let mut listed = Vec::new();
            let mut offset = 0u64;
            loop {
                let page = store.list_contacts("a", offset, per_page).unwrap();
                let expected_total = (0..count).filter(|i| !deletions.contains(i)).count() as u64;
                assert_eq!(page.total, expected_total);
                if page.contacts.is_empty() {
                    break;
                }
                offset += page.contacts.len() as u64;
                listed.extend(page.contacts.into_iter().map(|c| c.external_id));
            }
            listed
        });
        let expected: Vec<String> = (0..count).filter(|i| !deletions.contains(i)).map(|i| format!("e{i}")).collect();
        prop_assert_eq!(listed, expected);
    }
}

/// One generated contact for the query property: values from small vocabularies so
/// that searches, ties and missing values are common.
fn query_contact() -> impl Strategy<Value = Value> {
    (
        proptest::option::of(prop_oneof![
            Just("Sam"),
            Just("Ada"),
            Just("Zed"),
            Just("sam")
        ]),
        proptest::option::of(prop_oneof![
            Just("Rivera"),
            Just("Lovelace"),
            Just("Samson"),
            Just("Montgomeryshire")
        ]),
        proptest::option::of(prop_oneof![Just("acme.com"), Just("x.org")]),
        proptest::option::of(0i64..5),
        proptest::option::of(any::<bool>()),
        proptest::option::of(prop_oneof![Just("pro"), Just("Basic")]),
        (
            proptest::sample::subsequence(vec!["VIP", "beta", "vip"], 0..=3),
            proptest::sample::subsequence(vec!["news", "Q3"], 0..=2),
            proptest::option::of(any::<bool>()),
        ),
    )
        .prop_map(
            |(first, last, domain, ltv, vip, plan, (tags, lists, optin))| {
                let name = match (first, last) {
                    (Some(f), Some(l)) => Value::String(format!("{f} {l}")),
                    (Some(f), None) => Value::String(f.to_owned()),
                    (None, Some(l)) => Value::String(l.to_owned()),
                    (None, None) => Value::Null,
                };
                let mut attrs = serde_json::Map::new();
                if let Some(v) = ltv {
                    attrs.insert("ltv".into(), json!(v));
                }
                if let Some(v) = vip {
                    attrs.insert("vip".into(), json!(v));
                }
                if let Some(v) = plan {
                    attrs.insert("plan".into(), json!(v));
                }
                json!({"name": name, "custom_attributes": attrs, "domain": domain,
                   "tags": tags, "lists": lists, "optin": optin})
            },
        )
}

fn query_params() -> impl Strategy<Value = Vec<(String, String)>> {
    let sort = prop_oneof![
        Just("created_at"),
        Just("-created_at"),
        Just("name"),
        Just("-name"),
        Just("email"),
        Just("-email"),
        Just("-updated_at"),
        Just("external_id"),
        Just("-external_id"),
        Just("custom_attributes.ltv"),
        Just("-custom_attributes.ltv"),
        Just("custom_attributes.vip"),
        Just("-custom_attributes.plan"),
    ];
    let filter = prop_oneof![
        Just(("filter[custom_attributes.vip]", "true")),
        Just(("filter[custom_attributes.ltv][gte]", "2")),
        Just(("filter[custom_attributes.ltv][lt]", "3")),
        Just(("filter[email][exists]", "false")),
        Just(("filter[name][exists]", "true")),
        Just(("filter[custom_attributes.plan]", "PRO")),
        Just(("filter[custom_attributes.ltv]", "2")),
        Just(("filter[email]", "P3@acme.com")),
        Just(("filter[external_id]", "e05")),
        Just(("filter[tags]", "vip")),
        Just(("filter[tags]", "VIP,beta")),
        Just(("filter[lists]", "news")),
        Just(("filter[optin]", "true")),
        Just(("filter[source]", "api")),
    ];
    let q = prop_oneof![
        Just(""),
        Just("sa"),
        Just("sam riv"),
        Just("acme"),
        Just("lov x.org"),
        Just("e")
    ];
    (
        proptest::option::of(sort),
        proptest::collection::vec(filter, 0..3),
        q,
    )
        .prop_map(|(sort, filters, q)| {
            let mut params = Vec::new();
            if let Some(s) = sort {
                params.push(("sort".to_owned(), s.to_owned()));
            }
            for (k, v) in filters {
                params.push((k.to_owned(), v.to_owned()));
            }
            if !q.is_empty() {
                params.push(("q".to_owned(), q.to_owned()));
            }
            params
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// For random data and random queries, both pagination styles return exactly what
    /// the straightforward in-memory evaluation returns, in the same order; and with
    /// writes between cursor pages, every contact that existed throughout (and did not
    /// move in the order) comes exactly once.
    #[test]
    fn queries_equal_the_in_memory_evaluation(
        specs in proptest::collection::vec(query_contact(), 0..40),
        params in query_params(),
        per_page in 1usize..12,
        deletions in proptest::collection::vec(0usize..40, 0..4),
        limits in proptest::option::of((1usize..6, 0usize..4, 0usize..6, 1usize..3, 1usize..3, 1usize..6)),
        batch in proptest::option::of(1usize..10),
        name_part in proptest::option::of(prop_oneof![
            Just("sa"), Just("AM RIV"), Just("am"), Just("a"), Just("ove"), Just("m r"),
            Just("-"), Just("lovelacex"), Just("RIVERA"), Just("gomeryshir"),
            Just("tgomeryshire"), Just("sam samson"), Just("zed"), Just("rivera sa")
        ]),
    ) {
        use contactd::domain::query::{Filter, Op, Query};
        use contactd::store::Start;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        // Tiny limits drive these few contacts through every strategy of the store's
        // query planner (streams, index walks with candidate sets, checking).
        let mut store = RedbStore::open(dir.path()).unwrap();
        if let Some((cap, in_memory, sorted, common_word, max_common_words, words)) = limits {
            store = store.with_query_limits(contactd::store::QueryLimits { cap, in_memory, sorted, common_word, max_common_words, words });
        }
        // Written in small batches with tiny index limits, the indexes are read from
        // several log blocks and runs (merged, some holding removed entries), and from
        // memory (every write journals its contacts).
        let batch = match batch {
            Some(n) => {
                store = store.with_index_limits(contactd::store::IndexLimits {
                    log_blocks: 2,
                    log_bytes: 1 << 20,
                    chunk_bytes: 96,
                    fanout: 2,
                    base_entries: 8,
                    merge_step: 5,
                    merge_step_bytes: 1 << 20,
                    idle_ms: 1,
                });
                n
            }
            None => usize::MAX,
        };
        let schema: BTreeMap<String, AttrType> =
            [("ltv", AttrType::Number), ("vip", AttrType::Boolean), ("plan", AttrType::Text)]
                .into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        let mut query = Query::parse(&params, &schema, &Default::default()).unwrap();
        // Pabbly's name filter, which only its dialect sends.
        if let Some(part) = name_part {
            query.filters.push(Filter { field: "name".into(), op: Op::Contains(contactd::domain::search::text_key(part)) });
        }
        let all: Vec<Contact> = rt.block_on(async {
            let agent = contactd::domain::Agent { id: "a".into(), name: "a".into(), created_at: 0, contact_count: 0 };
            store.create_agent(agent).await.unwrap();
            let mut issues = Issues::new();
            let entries: Vec<ContactInput> = specs.iter().enumerate().map(|(i, spec)| {
                let mut body = json!({"external_id": format!("e{i:02}"), "name": spec["name"], "custom_attributes": spec["custom_attributes"],
                    "tags": spec["tags"], "lists": spec["lists"], "optin": spec["optin"]});
                if let Some(domain) = spec["domain"].as_str() {
                    body["email"] = json!(format!("p{i}@{domain}"));
                }
                ContactInput::parse(&body, "", &mut issues).unwrap()
            }).collect();
            let mut all = Vec::new();
            let mut entries = entries.into_iter().peekable();
            while entries.peek().is_some() {
                let chunk: Vec<ContactInput> = entries.by_ref().take(batch).collect();
                let outcome = store.upsert_contacts("a".into(), chunk, OnDuplicate::Update, UnknownPolicy::Define.into(), 1_700_000_000).await.unwrap();
                all.extend(outcome.contacts);
            }
            all
        });
        let expected: Vec<u64> = query.evaluate(&all).iter().map(|c| c.id).collect();

        // Offset pages.
        let mut by_offset = Vec::new();
        loop {
            let page = store.query_contacts("a", &query, &Start::Offset(by_offset.len() as u64), per_page).unwrap();
            // The total may be unknown only when a limit kept it from being counted.
            match page.total {
                Some(total) => prop_assert_eq!(total, expected.len() as u64),
                None => prop_assert!(limits.is_some(), "no total with the default limits"),
            }
            if page.contacts.is_empty() {
                break;
            }
            by_offset.extend(page.contacts.iter().map(|c| c.id));
        }
        prop_assert_eq!(&by_offset, &expected);

        // Cursor pages, no writes.
        // A correct run needs at most one page per contact plus one, however the
        // contacts move; more means a cursor that does not advance.
        const WRITE_ROUNDS: usize = 4;
        let max_pages = specs.len() + WRITE_ROUNDS + 2;
        let mut by_cursor = Vec::new();
        let mut start = Start::Offset(0);
        for pages in 0.. {
            prop_assert!(pages <= max_pages, "the cursor does not advance");
            let page = store.query_contacts("a", &query, &start, per_page).unwrap();
            by_cursor.extend(page.contacts.iter().map(|c| c.id));
            match page.next {
                Some(pos) => start = Start::After(pos),
                None => break,
            }
        }
        prop_assert_eq!(&by_cursor, &expected);

        // Cursor pages with deletions and creations between pages.
        let mut seen = Vec::new();
        let mut start = Start::Offset(0);
        let mut deleted = Vec::new();
        let mut round = 0;
        loop {
            prop_assert!(round <= 2 * max_pages, "the cursor does not advance");
            let page = store.query_contacts("a", &query, &start, per_page).unwrap();
            seen.extend(page.contacts.iter().map(|c| c.id));
            let Some(pos) = page.next else { break };
            start = Start::After(pos);
            if let Some(victim) = deletions.get(round).and_then(|d| all.get(*d)) {
                if rt.block_on(store.delete_contact("a".into(), victim.external_id.clone(), None, 1)).is_ok() {
                    deleted.push(victim.id);
                }
            }
            // New contacts only in the first rounds, so the walk must end (in creation
            // order each new contact lands on a later page).
            if round < WRITE_ROUNDS {
                let mut issues = Issues::new();
                let fresh = ContactInput::parse(&json!({"external_id": format!("new{round}"), "name": "Sam New"}), "", &mut issues).unwrap();
                rt.block_on(store.upsert_contacts("a".into(), vec![fresh], OnDuplicate::Update, UnknownPolicy::Define.into(), 1_700_000_000)).unwrap();
            }
            round += 1;
        }
        let mut unique = seen.clone();
        unique.sort_unstable();
        unique.dedup();
        prop_assert_eq!(unique.len(), seen.len(), "a contact came twice");
        for id in expected.iter().filter(|id| !deleted.contains(id)) {
            prop_assert!(seen.contains(id), "contact {} was skipped", id);
        }
    }
}
