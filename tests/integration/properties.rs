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
        let bytes = encode_contact(&c);
        prop_assert_eq!(decode_contact(&bytes).unwrap(), c);
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
        }));
        let mut issues = Issues::new();
        let typed = schema.type_values(&raw, None, policy, "users[4].custom_attributes", 0, &mut issues);
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
                store.upsert_contacts("a".into(), entries, OnDuplicate::Update, UnknownPolicy::Define).await.unwrap();
            }
            for d in &deletions {
                let _ = store.delete_contact("a".into(), format!("e{d}")).await;
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
