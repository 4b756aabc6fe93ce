//! Contacts: the stored record, the validated input of a create/upsert/patch, and the
//! pure merge of one into the other.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use unicode_normalization::UnicodeNormalization;

use super::attr::{check_name, AttrValue, MAX_ATTRIBUTES};
use super::ids;
use super::issues::{join, json_type, Issues};
use super::label::{parse_names, LabelEdit, LabelKind};
use super::phone::PhoneRules;

/// Longest `name`, in characters.
pub const MAX_NAME_CHARS: usize = 255;
/// Longest `email`, in characters.
pub const MAX_EMAIL_CHARS: usize = 254;
/// Longest `phonenumber`, in characters.
pub const MAX_PHONE_CHARS: usize = 32;
/// Most stripe accounts on one contact.
pub const MAX_STRIPE_ACCOUNTS: usize = 20;

/// A stored contact. `id` is the server-wide number behind `contact_<n>`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Contact {
    pub id: u64,
    pub external_id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phonenumber: Option<String>,
    /// `phonenumber` in E.164 when it parses (see `phone`): the number lookups,
    /// filters and Pabbly's `mobile` use, read under the rules of the write that set it.
    pub phone: Option<String>,
    pub stripe_accounts: Vec<StripeAccount>,
    pub custom_attributes: BTreeMap<String, AttrValue>,
    /// Tag and list names as the agent defined them, each once.
    pub tags: Vec<String>,
    pub lists: Vec<String>,
    pub optin: Option<bool>,
    pub incoming_blocked: Option<bool>,
    /// How the contact was created; never changes.
    pub source: Source,
    pub created_at: i64,
    pub updated_at: i64,
}

/// How a contact was created: through the API (either dialect), an import, or the
/// dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Source {
    #[default]
    Api,
    Csv,
    Manual,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Csv => "csv",
            Self::Manual => "manual",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "api" => Some(Self::Api),
            "csv" => Some(Self::Csv),
            "manual" => Some(Self::Manual),
            _ => None,
        }
    }
}

/// A linked Stripe account: a label and at least one of id and email.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StripeAccount {
    pub label: String,
    pub stripe_id: Option<String>,
    pub stripe_email: Option<String>,
}

/// A field of a partial update: not sent, sent as `null`/`""`, or sent with a value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Field<T> {
    #[default]
    Absent,
    Clear,
    Set(T),
}

/// A validated contact entry of a create, upsert or patch request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContactInput {
    pub external_id: Field<String>,
    pub name: Field<String>,
    pub email: Field<String>,
    pub phonenumber: Field<String>,
    pub stripe_accounts: Option<Vec<StripeAccount>>,
    /// As sent (scalars and nulls, untyped); typed against the agent's schema by
    /// `attribute::Schema::type_values` inside the write.
    pub custom_attributes: Option<BTreeMap<String, Value>>,
    pub tags: LabelEdit,
    pub lists: LabelEdit,
    pub optin: Field<bool>,
    pub incoming_blocked: Field<bool>,
    /// What a contact this entry creates records as its source.
    pub source: Source,
    /// `custom_attributes` updates only the attributes it names (a `null` clears one)
    /// instead of replacing the contact's set.
    pub merge_attributes: bool,
    /// The E.164 reading of the `phonenumber` sent, when it was read before the write
    /// (see [`ContactInput::read_phone`]); the write reads it otherwise.
    pub phone_reading: Option<Option<String>>,
}

/// What the writer made of an entry's values against the agent's definitions: typed
/// custom attributes, and tags and lists as defined (each `None` when not sent).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resolved {
    pub attributes: Option<BTreeMap<String, AttrValue>>,
    pub tags: Option<Vec<String>>,
    pub lists: Option<Vec<String>>,
}

impl Contact {
    /// The contact's tags or lists.
    pub fn labels(&self, kind: LabelKind) -> &[String] {
        match kind {
            LabelKind::Tag => &self.tags,
            LabelKind::List => &self.lists,
        }
    }

    /// The contact's tags or lists, to change.
    pub fn labels_mut(&mut self, kind: LabelKind) -> &mut Vec<String> {
        match kind {
            LabelKind::Tag => &mut self.tags,
            LabelKind::List => &mut self.lists,
        }
    }

    /// The email in the form the per-agent uniqueness index uses.
    pub fn email_key(&self) -> Option<String> {
        self.email.as_deref().map(email_key)
    }

    /// The public JSON form (API.md "The contact object").
    pub fn to_json(&self) -> Value {
        let mut obj = Map::with_capacity(9);
        obj.insert("id".into(), Value::String(ids::contact_id(self.id)));
        obj.insert(
            "external_id".into(),
            Value::String(self.external_id.clone()),
        );
        obj.insert("name".into(), opt_string(&self.name));
        obj.insert("email".into(), opt_string(&self.email));
        obj.insert("phonenumber".into(), opt_string(&self.phonenumber));
        obj.insert(
            "stripe_accounts".into(),
            Value::Array(
                self.stripe_accounts
                    .iter()
                    .map(StripeAccount::to_json)
                    .collect(),
            ),
        );
        obj.insert(
            "custom_attributes".into(),
            Value::Object(
                self.custom_attributes
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_json()))
                    .collect(),
            ),
        );
        let names =
            |names: &[String]| Value::Array(names.iter().cloned().map(Value::String).collect());
        obj.insert("tags".into(), names(&self.tags));
        obj.insert("lists".into(), names(&self.lists));
        obj.insert("optin".into(), self.optin.map_or(Value::Null, Value::Bool));
        obj.insert(
            "incoming_blocked".into(),
            self.incoming_blocked.map_or(Value::Null, Value::Bool),
        );
        obj.insert("source".into(), Value::String(self.source.as_str().into()));
        obj.insert("created_at".into(), Value::Number(self.created_at.into()));
        obj.insert("updated_at".into(), Value::Number(self.updated_at.into()));
        Value::Object(obj)
    }
}

impl StripeAccount {
    /// JSON form; absent `stripe_id`/`stripe_email` are left out rather than `null`.
    pub fn to_json(&self) -> Value {
        let mut obj = Map::new();
        obj.insert("label".into(), Value::String(self.label.clone()));
        if let Some(id) = &self.stripe_id {
            obj.insert("stripe_id".into(), Value::String(id.clone()));
        }
        if let Some(email) = &self.stripe_email {
            obj.insert("stripe_email".into(), Value::String(email.clone()));
        }
        Value::Object(obj)
    }
}

fn opt_string(value: &Option<String>) -> Value {
    value.clone().map_or(Value::Null, Value::String)
}

/// The form in which two emails are one for uniqueness and lookups: Unicode NFC with
/// full case folding (`straße@` = `STRASSE@`), and the domain as IDNA ASCII
/// (`bücher.de` = `xn--bcher-kva.de`). A domain IDNA refuses is case-folded instead.
pub fn email_key(email: &str) -> String {
    // ASCII, which most addresses are, is its own NFC, folds by lower-casing, and an
    // ASCII domain's IDNA form is the domain lower-cased (or, refused, folded the same).
    if email.is_ascii() {
        return email.to_ascii_lowercase();
    }
    unicode_email_key(email)
}

/// [`email_key`] the long way, for any text.
fn unicode_email_key(email: &str) -> String {
    let fold = |text: &str| -> String {
        let folded = caseless::default_case_fold_str(&text.nfc().collect::<String>());
        folded.nfc().collect()
    };
    match email.rsplit_once('@') {
        Some((local, domain)) => {
            let domain = idna::domain_to_ascii(domain)
                .map(|ascii| ascii.to_ascii_lowercase())
                .unwrap_or_else(|_| fold(domain));
            format!("{}@{domain}", fold(local))
        }
        None => fold(email),
    }
}

/// Checks an email address: syntax and length.
pub fn check_email(email: &str) -> Result<(), String> {
    if email.chars().count() > MAX_EMAIL_CHARS {
        return Err(format!("must be at most {MAX_EMAIL_CHARS} characters"));
    }
    // Judged in NFC, the form it is compared in: a domain written with combining
    // accents is the same domain.
    let valid = if email.is_ascii() {
        email_address::EmailAddress::is_valid(email)
    } else {
        email_address::EmailAddress::is_valid(&email.nfc().collect::<String>())
    };
    if !valid {
        return Err("must be a valid email address".into());
    }
    Ok(())
}

/// Checks a phone number: digits, spaces and `+ - ( ) .`, at least one digit.
pub fn check_phone(phone: &str) -> Result<(), String> {
    if phone.chars().count() > MAX_PHONE_CHARS {
        return Err(format!("must be at most {MAX_PHONE_CHARS} characters"));
    }
    if !phone
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '+' | '-' | '(' | ')' | '.'))
    {
        return Err("may contain only digits, spaces and + - ( ) .".into());
    }
    if !phone.chars().any(|c| c.is_ascii_digit()) {
        return Err("must contain at least one digit".into());
    }
    Ok(())
}

impl ContactInput {
    /// Parses one contact object; problems go to `issues` under `prefix`.
    /// Returns `None` when anything was wrong. Unknown keys are ignored.
    pub fn parse(value: &Value, prefix: &str, issues: &mut Issues) -> Option<Self> {
        let before = issues.len();
        let Some(obj) = value.as_object() else {
            let at = if prefix.is_empty() { "body" } else { prefix };
            issues.push(at, format!("must be an object, got {}", json_type(value)));
            return None;
        };
        let mut input = Self {
            external_id: parse_external_id(obj.get("external_id"), prefix, issues),
            name: parse_text(obj.get("name"), &join(prefix, "name"), issues, |s| {
                if s.chars().count() > MAX_NAME_CHARS {
                    Err(format!("must be at most {MAX_NAME_CHARS} characters"))
                } else {
                    Ok(())
                }
            }),
            email: parse_text(
                obj.get("email"),
                &join(prefix, "email"),
                issues,
                check_email,
            ),
            phonenumber: parse_text(
                obj.get("phonenumber"),
                &join(prefix, "phonenumber"),
                issues,
                check_phone,
            ),
            ..Self::default()
        };
        input.stripe_accounts = parse_stripe_accounts(obj.get("stripe_accounts"), prefix, issues);
        input.custom_attributes = parse_attributes(obj.get("custom_attributes"), prefix, issues);
        for kind in [LabelKind::Tag, LabelKind::List] {
            if let Some(value) = obj.get(kind.field()) {
                let names = parse_names(kind, value, &join(prefix, kind.field()), issues);
                let edit = match kind {
                    LabelKind::Tag => &mut input.tags,
                    LabelKind::List => &mut input.lists,
                };
                edit.set = names;
            }
        }
        input.optin = parse_flag(obj.get("optin"), &join(prefix, "optin"), issues);
        input.incoming_blocked = parse_flag(
            obj.get("incoming_blocked"),
            &join(prefix, "incoming_blocked"),
            issues,
        );
        (issues.len() == before).then_some(input)
    }

    /// Reads the phone number sent under `rules` now, so that the writer need not: a
    /// reading costs a parse, which the single writer would pay for every contact.
    pub fn read_phone(&mut self, rules: &PhoneRules) {
        if let Field::Set(text) = &self.phonenumber {
            self.phone_reading = Some(rules.e164(text));
        }
    }

    /// Builds the contact that results from applying this input to `existing` (or to
    /// nothing, for a new contact with number `new_id`). `resolved` holds the typed
    /// `custom_attributes`, tags and lists (when sent), which replace the stored ones;
    /// a phone number sent is read under `phone`. `updated_at` moves to `now` only
    /// when a stored field actually changes.
    pub fn apply(
        &self,
        existing: Option<&Contact>,
        external_id: &str,
        new_id: u64,
        now: i64,
        resolved: Resolved,
        phone: &PhoneRules,
    ) -> Contact {
        let mut next = existing.cloned().unwrap_or_else(|| Contact {
            id: new_id,
            external_id: external_id.to_owned(),
            name: None,
            email: None,
            phonenumber: None,
            phone: None,
            stripe_accounts: Vec::new(),
            custom_attributes: BTreeMap::new(),
            tags: Vec::new(),
            lists: Vec::new(),
            optin: None,
            incoming_blocked: None,
            source: self.source,
            created_at: now,
            updated_at: now,
        });
        next.external_id = external_id.to_owned();
        apply_field(&mut next.name, &self.name);
        apply_field(&mut next.email, &self.email);
        if self.phonenumber != Field::Absent {
            apply_field(&mut next.phonenumber, &self.phonenumber);
            next.phone = match (&self.phone_reading, next.phonenumber.as_deref()) {
                (_, None) => None,
                (Some(read), Some(_)) => read.clone(),
                (None, Some(text)) => phone.e164(text),
            };
        }
        apply_field(&mut next.optin, &self.optin);
        apply_field(&mut next.incoming_blocked, &self.incoming_blocked);
        if let Some(accounts) = &self.stripe_accounts {
            next.stripe_accounts = accounts.clone();
        }
        if let Some(attrs) = resolved.attributes {
            next.custom_attributes = attrs;
        }
        if let Some(tags) = resolved.tags {
            next.tags = tags;
        }
        if let Some(lists) = resolved.lists {
            next.lists = lists;
        }
        if let Some(old) = existing {
            if old != &next {
                next.updated_at = now.max(old.updated_at);
            }
        }
        next
    }
}

fn apply_field<T: Clone>(slot: &mut Option<T>, field: &Field<T>) {
    match field {
        Field::Absent => {}
        Field::Clear => *slot = None,
        Field::Set(v) => *slot = Some(v.clone()),
    }
}

fn parse_external_id(value: Option<&Value>, prefix: &str, issues: &mut Issues) -> Field<String> {
    let path = join(prefix, "external_id");
    match value {
        None => Field::Absent,
        Some(Value::Null) => Field::Clear,
        Some(Value::String(s)) => match ids::external_id(s) {
            Ok(id) => Field::Set(id),
            Err(msg) => {
                issues.push(path, msg);
                Field::Absent
            }
        },
        Some(other) => {
            issues.push(path, format!("must be a string, got {}", json_type(other)));
            Field::Absent
        }
    }
}

/// A nullable boolean field.
fn parse_flag(value: Option<&Value>, path: &str, issues: &mut Issues) -> Field<bool> {
    match value {
        None => Field::Absent,
        Some(Value::Null) => Field::Clear,
        Some(Value::Bool(b)) => Field::Set(*b),
        Some(other) => {
            issues.push(
                path,
                format!("must be true, false or null, got {}", json_type(other)),
            );
            Field::Absent
        }
    }
}

/// A nullable string field where `""` means the same as `null`.
fn parse_text(
    value: Option<&Value>,
    path: &str,
    issues: &mut Issues,
    check: impl Fn(&str) -> Result<(), String>,
) -> Field<String> {
    match value {
        None => Field::Absent,
        Some(Value::Null) => Field::Clear,
        Some(Value::String(s)) if s.is_empty() => Field::Clear,
        Some(Value::String(s)) => match check(s) {
            Ok(()) => Field::Set(s.clone()),
            Err(msg) => {
                issues.push(path, msg);
                Field::Absent
            }
        },
        Some(other) => {
            issues.push(
                path,
                format!("must be a string or null, got {}", json_type(other)),
            );
            Field::Absent
        }
    }
}

fn parse_stripe_accounts(
    value: Option<&Value>,
    prefix: &str,
    issues: &mut Issues,
) -> Option<Vec<StripeAccount>> {
    let path = join(prefix, "stripe_accounts");
    let items = match value {
        None => return None,
        Some(Value::Null) => return Some(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => {
            issues.push(path, format!("must be an array, got {}", json_type(other)));
            return None;
        }
    };
    if items.len() > MAX_STRIPE_ACCOUNTS {
        issues.push(
            path,
            format!("must have at most {MAX_STRIPE_ACCOUNTS} entries"),
        );
        return None;
    }
    let accounts: Vec<_> = items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| parse_stripe_account(item, &format!("{path}[{i}]"), issues))
        .collect();
    (accounts.len() == items.len()).then_some(accounts)
}

fn parse_stripe_account(value: &Value, path: &str, issues: &mut Issues) -> Option<StripeAccount> {
    let Some(obj) = value.as_object() else {
        issues.push(path, format!("must be an object, got {}", json_type(value)));
        return None;
    };
    let before = issues.len();
    let label = match obj.get("label") {
        Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= MAX_NAME_CHARS => {
            Some(s.clone())
        }
        Some(Value::String(s)) if !s.trim().is_empty() => {
            issues.push(
                join(path, "label"),
                format!("must be at most {MAX_NAME_CHARS} characters"),
            );
            None
        }
        Some(Value::String(_)) | None | Some(Value::Null) => {
            issues.push(join(path, "label"), "is required and must not be empty");
            None
        }
        Some(other) => {
            issues.push(
                join(path, "label"),
                format!("must be a string, got {}", json_type(other)),
            );
            None
        }
    };
    let stripe_id = match obj.get("stripe_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => {
            issues.push(join(path, "stripe_id"), "must not be empty");
            None
        }
        Some(Value::String(s)) if s.chars().count() > MAX_NAME_CHARS => {
            issues.push(
                join(path, "stripe_id"),
                format!("must be at most {MAX_NAME_CHARS} characters"),
            );
            None
        }
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            issues.push(
                join(path, "stripe_id"),
                format!("must be a string, got {}", json_type(other)),
            );
            None
        }
    };
    let stripe_email = match obj.get("stripe_email") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match check_email(s) {
            Ok(()) => Some(s.clone()),
            Err(msg) => {
                issues.push(join(path, "stripe_email"), msg);
                None
            }
        },
        Some(other) => {
            issues.push(
                join(path, "stripe_email"),
                format!("must be a string, got {}", json_type(other)),
            );
            None
        }
    };
    if issues.len() != before {
        return None;
    }
    if stripe_id.is_none() && stripe_email.is_none() {
        issues.push(path, "needs a stripe_id or a stripe_email");
        return None;
    }
    Some(StripeAccount {
        label: label?,
        stripe_id,
        stripe_email,
    })
}

fn parse_attributes(
    value: Option<&Value>,
    prefix: &str,
    issues: &mut Issues,
) -> Option<BTreeMap<String, Value>> {
    let path = join(prefix, "custom_attributes");
    let obj = match value {
        None => return None,
        Some(Value::Null) => return Some(BTreeMap::new()),
        Some(Value::Object(obj)) => obj,
        Some(other) => {
            issues.push(path, format!("must be an object, got {}", json_type(other)));
            return None;
        }
    };
    if obj.len() > MAX_ATTRIBUTES {
        issues.push(path, format!("must have at most {MAX_ATTRIBUTES} keys"));
        return None;
    }
    let before = issues.len();
    let mut attrs = BTreeMap::new();
    for (key, raw) in obj {
        let key_path = join(&path, key);
        if let Err(msg) = check_name(key) {
            issues.push(key_path, msg);
            continue;
        }
        if AttrValue::check_raw(raw, &key_path, issues) {
            attrs.insert(key.clone(), raw.clone());
        }
    }
    (issues.len() == before).then_some(attrs)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn parse(value: Value) -> Result<ContactInput, Vec<String>> {
        let mut issues = Issues::new();
        ContactInput::parse(&value, "users[0]", &mut issues)
            .ok_or_else(|| issues.into_vec().into_iter().map(|i| i.field).collect())
    }

    proptest! {
        /// The ASCII shortcut gives what the full folding, NFC and IDNA give.
        #[test]
        fn ascii_email_keys_take_a_shortcut_to_the_same_key(
            local in "[ -~]{1,12}",
            domain in prop_oneof![Just("XN--BCHER-KVA.de".to_owned()), "[ -~]{1,12}"],
        ) {
            let email = format!("{local}@{domain}");
            prop_assert_eq!(email_key(&email), unicode_email_key(&email));
        }
    }

    #[test]
    fn empty_strings_clear_like_null() {
        let input = parse(json!({"name": "", "email": null})).unwrap();
        assert_eq!(input.name, Field::Clear);
        assert_eq!(input.email, Field::Clear);
        assert_eq!(input.phonenumber, Field::Absent);
    }

    #[test]
    fn every_bad_field_is_reported_with_its_path() {
        let fields = parse(json!({
            "external_id": "",
            "email": "nope",
            "phonenumber": "abc",
            "stripe_accounts": [{"label": ""}],
            "custom_attributes": {"a": [1]}
        }))
        .unwrap_err();
        assert_eq!(
            fields,
            [
                "users[0].external_id",
                "users[0].email",
                "users[0].phonenumber",
                "users[0].stripe_accounts[0].label",
                "users[0].custom_attributes.a"
            ]
        );
    }

    #[test]
    fn stripe_account_needs_id_or_email() {
        assert_eq!(
            parse(json!({"stripe_accounts": [{"label": "main"}]})).unwrap_err(),
            ["users[0].stripe_accounts[0]"]
        );
        assert!(
            parse(json!({"stripe_accounts": [{"label": "m", "stripe_email": "a@b.co"}]})).is_ok()
        );
    }

    #[test]
    fn apply_keeps_created_at_and_moves_updated_at_only_on_change() {
        let input = parse(json!({"name": "Sam"})).unwrap();
        let rules = PhoneRules::default();
        let apply = |input: &ContactInput, existing: Option<&Contact>, now| {
            input.apply(
                existing,
                "u1",
                if existing.is_some() { 99 } else { 7 },
                now,
                Resolved::default(),
                &rules,
            )
        };
        let created = apply(&input, None, 100);
        assert_eq!(
            (created.id, created.created_at, created.updated_at),
            (7, 100, 100)
        );
        let same = apply(&input, Some(&created), 200);
        assert_eq!(same, created);
        let renamed = apply(
            &parse(json!({"name": "Sam R"})).unwrap(),
            Some(&created),
            300,
        );
        assert_eq!(
            (renamed.id, renamed.created_at, renamed.updated_at),
            (7, 100, 300)
        );
    }

    #[test]
    fn phone_rules() {
        assert!(check_phone("+1 (555) 123-4567").is_ok());
        assert!(check_phone("+-()").is_err());
        assert!(check_phone("555x").is_err());
        assert!(check_phone(&"1".repeat(33)).is_err());
    }
}
