//! The Pabbly Chatflow dialect (`/api/v1/contacts…`): its contact items parsed into
//! contact writes, and contacts shown its way. Contacts are the same ones the native
//! API serves: `mobile` is the phone number (shown in E.164 without `+`), `attributes`
//! the custom attributes, `list` the lists with the implicit `all` first.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::attr::{check_name, AttrValue, MAX_ATTRIBUTES};
use super::contact::{check_phone, Contact, ContactInput, Field, MAX_NAME_CHARS};
use super::date;
use super::issues::json_type;
use super::label::{self, LabelEdit, LabelKind};
use super::phone::{self, PhoneRules};

/// Most contacts one `POST /contacts` may carry.
pub const MAX_ITEMS: usize = 1000;

/// What an item does when a contact has its mobile number already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDuplicate {
    Skip,
    Overwrite,
}

impl OnDuplicate {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "skip" => Some(Self::Skip),
            "overwrite" => Some(Self::Overwrite),
            _ => None,
        }
    }
}

/// A problem with one item: the field it is about and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemProblem {
    pub field: String,
    pub message: String,
}

impl ItemProblem {
    fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            message: message.into(),
        }
    }

    /// The `reason` of a failed contact: the field, then what is wrong with it.
    pub fn reason(&self) -> String {
        format!("{}: {}", self.field, self.message)
    }
}

/// One item of `POST /contacts`, parsed.
#[derive(Debug, Clone)]
pub struct NewItem {
    /// The number in E.164.
    pub phone: String,
    pub input: ContactInput,
    pub on_duplicate: OnDuplicate,
}

/// The `mobile` and `name` of an item as sent, for its `failedContacts` entry.
pub fn echo(item: &Value) -> (Value, Value) {
    let field = |key: &str| item.get(key).cloned().unwrap_or(Value::Null);
    (field("mobile"), field("name"))
}

/// Parses one item of `POST /contacts`; `default` is the request's `onDuplicate`.
pub fn parse_new(
    item: &Value,
    rules: &PhoneRules,
    default: OnDuplicate,
) -> Result<NewItem, ItemProblem> {
    let obj = item.as_object().ok_or_else(|| {
        ItemProblem::new(
            "contact",
            format!("must be an object, got {}", json_type(item)),
        )
    })?;
    let mobile = match obj.get("mobile") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
        Some(Value::Number(n)) => n.to_string(),
        None | Some(Value::Null) => return Err(ItemProblem::new("mobile", "is required")),
        Some(Value::String(_)) => return Err(ItemProblem::new("mobile", "is required")),
        Some(other) => {
            return Err(ItemProblem::new(
                "mobile",
                format!("must be a string, got {}", json_type(other)),
            ))
        }
    };
    check_phone(&mobile).map_err(|msg| ItemProblem::new("mobile", msg))?;
    let phone = rules
        .e164(&mobile)
        .ok_or_else(|| ItemProblem::new("mobile", "is not a phone number"))?;
    let on_duplicate = match obj.get("onDuplicate") {
        None | Some(Value::Null) => default,
        Some(Value::String(s)) => OnDuplicate::parse(s)
            .ok_or_else(|| ItemProblem::new("onDuplicate", "must be skip or overwrite"))?,
        Some(other) => {
            return Err(ItemProblem::new(
                "onDuplicate",
                format!("must be skip or overwrite, got {}", json_type(other)),
            ))
        }
    };
    let mut input = parse_fields(obj, false)?;
    input.phonenumber = Field::Set(mobile);
    input.phone_reading = Some(Some(phone.clone()));
    Ok(NewItem {
        phone,
        input,
        on_duplicate,
    })
}

/// Parses the body of `PUT /contacts/{_id}`: `name`, `optin`, `incomingBlocked`,
/// `tags` (replace), `tagsToAdd`, `tagsToRemove`, `attributes` (by name; an empty value
/// removes one).
pub fn parse_update(body: &Value) -> Result<ContactInput, ItemProblem> {
    let obj = body.as_object().ok_or_else(|| {
        ItemProblem::new(
            "body",
            format!("must be an object, got {}", json_type(body)),
        )
    })?;
    let mut input = parse_fields(obj, true)?;
    input.tags.add = names(obj.get("tagsToAdd"), "tagsToAdd")?.unwrap_or_default();
    input.tags.remove = names(obj.get("tagsToRemove"), "tagsToRemove")?.unwrap_or_default();
    Ok(input)
}

/// The fields both writes share. On an update an attribute with an empty value is
/// removed; on a create it is ignored.
fn parse_fields(obj: &Map<String, Value>, update: bool) -> Result<ContactInput, ItemProblem> {
    let mut input = ContactInput {
        merge_attributes: true,
        ..ContactInput::default()
    };
    match obj.get("name") {
        None => {}
        Some(Value::Null) => input.name = Field::Clear,
        Some(Value::String(s)) if s.trim().is_empty() => input.name = Field::Clear,
        Some(Value::String(s)) if s.chars().count() > MAX_NAME_CHARS => {
            return Err(ItemProblem::new(
                "name",
                format!("must be at most {MAX_NAME_CHARS} characters"),
            ))
        }
        Some(Value::String(s)) => input.name = Field::Set(s.clone()),
        Some(other) => {
            return Err(ItemProblem::new(
                "name",
                format!("must be a string, got {}", json_type(other)),
            ))
        }
    }
    input.optin = flag(obj.get("optin"), "optin")?;
    input.incoming_blocked = flag(obj.get("incomingBlocked"), "incomingBlocked")?;
    if let Some(set) = names(obj.get("tags"), "tags")? {
        input.tags = LabelEdit {
            set: Some(set),
            ..LabelEdit::default()
        };
    }
    if let Some(value) = obj.get("attributes") {
        input.custom_attributes = Some(attributes(value, update)?);
    }
    Ok(input)
}

/// A boolean, also as `"true"` / `"false"`.
fn flag(value: Option<&Value>, field: &str) -> Result<Field<bool>, ItemProblem> {
    match value {
        None => Ok(Field::Absent),
        Some(Value::Null) => Ok(Field::Clear),
        Some(Value::Bool(b)) => Ok(Field::Set(*b)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Field::Set(true)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Field::Set(false)),
        Some(other) => Err(ItemProblem::new(
            field,
            format!("must be true or false, got {other}"),
        )),
    }
}

/// An array of tag names.
fn names(value: Option<&Value>, field: &str) -> Result<Option<Vec<String>>, ItemProblem> {
    let Some(value) = value else {
        return Ok(None);
    };
    let mut issues = super::Issues::new();
    match label::parse_names(LabelKind::Tag, value, field, &mut issues) {
        Some(names) => Ok(Some(names)),
        None => Err(first_problem(
            issues,
            field,
            "must be an array of tag names",
        )),
    }
}

/// The first of `issues` as the item's problem (`fallback` on `field` if there is none).
fn first_problem(issues: super::Issues, field: &str, fallback: &str) -> ItemProblem {
    let issue = issues.into_vec().into_iter().next();
    issue.map_or_else(
        || ItemProblem::new(field, fallback),
        |i| ItemProblem::new(&i.field, i.message),
    )
}

/// `attributes`: `[{"name", "value"}]` as custom attribute values. An empty value (or
/// `null`) is ignored on a create and removes the attribute on an update.
fn attributes(value: &Value, update: bool) -> Result<BTreeMap<String, Value>, ItemProblem> {
    let items = value.as_array().ok_or_else(|| {
        ItemProblem::new(
            "attributes",
            format!(
                "must be an array of {{name, value}}, got {}",
                json_type(value)
            ),
        )
    })?;
    if items.len() > MAX_ATTRIBUTES {
        return Err(ItemProblem::new(
            "attributes",
            format!("must have at most {MAX_ATTRIBUTES} items"),
        ));
    }
    let mut out = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("attributes[{i}]");
        let name = match item.get("name") {
            Some(Value::String(n)) => match check_name(n) {
                Ok(()) => n.clone(),
                Err(msg) => return Err(ItemProblem::new(&format!("{at}.name"), msg)),
            },
            _ => {
                return Err(ItemProblem::new(
                    &format!("{at}.name"),
                    "must be a non-empty string",
                ))
            }
        };
        let value = item.get("value").cloned().unwrap_or(Value::Null);
        let empty = matches!(&value, Value::Null) || value.as_str().is_some_and(str::is_empty);
        if empty {
            if update {
                out.insert(name, Value::Null);
            }
            continue;
        }
        // The same limits as a native write's values (a string of at most 4096
        // characters, a number or a boolean), so that an export imports back.
        let mut issues = super::Issues::new();
        let path = format!("{at}.value");
        if !AttrValue::check_raw(&value, &path, &mut issues) {
            return Err(first_problem(issues, &path, "is not a valid value"));
        }
        out.insert(name, value);
    }
    Ok(out)
}

/// A contact as Pabbly shows it. `full` adds `countryCode` and the ISO 8601 times
/// (`GET /contacts/{_id}`).
pub fn to_json(contact: &Contact, full: bool) -> Value {
    let mobile = match (&contact.phone, &contact.phonenumber) {
        (Some(e164), _) => phone::mobile(e164).to_owned(),
        (None, Some(raw)) => raw.chars().filter(char::is_ascii_digit).collect(),
        (None, None) => String::new(),
    };
    let mut list = vec![Value::String(label::ALL.to_owned())];
    list.extend(contact.lists.iter().cloned().map(Value::String));
    let mut obj = json!({
        "_id": super::ids::pabbly_id(contact.created_at, contact.id),
        "mobile": mobile,
        "name": contact.name.clone().unwrap_or_default(),
        "optin": contact.optin.unwrap_or(false),
        "incomingBlocked": contact.incoming_blocked.unwrap_or(false),
        "tags": contact.tags,
        "attributes": contact
            .custom_attributes
            .iter()
            .map(|(name, value)| json!({"name": name, "value": value.to_json()}))
            .collect::<Vec<_>>(),
        "source": contact.source.as_str(),
        "list": list,
    });
    if full {
        let country = contact
            .phone
            .as_deref()
            .and_then(phone::country_code)
            .map_or(Value::Null, |c| Value::String(c.to_string()));
        let iso = |seconds: i64| Value::String(date::format_utc(seconds.saturating_mul(1000)));
        if let Some(map) = obj.as_object_mut() {
            map.insert("countryCode".into(), country);
            map.insert("createdAt".into(), iso(contact.created_at));
            map.insert("updatedAt".into(), iso(contact.updated_at));
        }
    }
    obj
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn items_parse_with_every_field_and_fail_naming_one() {
        let rules = PhoneRules::default();
        let item = json!({"mobile": "9179897123", "name": "Alex", "optin": "true",
            "incomingBlocked": false, "tags": ["a"], "attributes": [{"name": "city", "value": "bhopal"}, {"name": "x", "value": ""}],
            "onDuplicate": "overwrite"});
        let parsed = parse_new(&item, &rules, OnDuplicate::Skip).unwrap();
        assert_eq!(parsed.phone, "+9179897123");
        assert_eq!(parsed.on_duplicate, OnDuplicate::Overwrite);
        assert_eq!(parsed.input.optin, Field::Set(true));
        let attrs = parsed.input.custom_attributes.unwrap();
        assert_eq!(
            attrs.keys().collect::<Vec<_>>(),
            ["city"],
            "an empty value is ignored"
        );
        for (bad, field) in [
            (json!({"name": "x"}), "mobile"),
            (json!({"mobile": "abc"}), "mobile"),
            (json!({"mobile": "1555", "optin": "maybe"}), "optin"),
            (json!({"mobile": "1555", "tags": ["a,b"]}), "tags[0]"),
            (
                json!({"mobile": "1555", "attributes": [{"value": 1}]}),
                "attributes[0].name",
            ),
            (
                json!({"mobile": "1555", "onDuplicate": "merge"}),
                "onDuplicate",
            ),
            (
                json!({"mobile": "1555", "attributes": [{"name": "note", "value": "x".repeat(4097)}]}),
                "attributes[0].value",
            ),
            (
                json!({"mobile": "1555", "attributes": [{"name": "n".repeat(65), "value": 1}]}),
                "attributes[0].name",
            ),
            (
                json!({"mobile": "1555", "attributes": [{"name": "a", "value": [1]}]}),
                "attributes[0].value",
            ),
            (
                json!({"mobile": "1555", "attributes": vec![json!({"name": "a", "value": 1}); 101]}),
                "attributes",
            ),
        ] {
            assert_eq!(
                parse_new(&bad, &rules, OnDuplicate::Skip)
                    .unwrap_err()
                    .field,
                field,
                "{bad}"
            );
        }
    }

    #[test]
    fn updates_remove_attributes_with_empty_values() {
        let input = parse_update(&json!({"attributes": [{"name": "city", "value": ""}], "tagsToAdd": ["b"], "tagsToRemove": ["a"]})).unwrap();
        assert_eq!(input.custom_attributes.unwrap()["city"], Value::Null);
        assert_eq!((input.tags.add.len(), input.tags.remove.len()), (1, 1));
    }
}
