//! Custom attribute definitions per agent, and typing contact values against them.
//!
//! [`Schema::type_values`] is the one place values meet definitions: it coerces each
//! sent value to its attribute's type, refuses writes to archived attributes, applies
//! the unknown-key policy (defining new attributes on the fly when asked), and keeps
//! archived values that were not sent. It is pure: the writer runs it inside the write
//! transaction, so a definition made on the fly commits together with the contact.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::attr::AttrValue;
use super::contact::Field;
use super::date;
use super::issues::{join, json_type, required_string, Issues};
use super::phone::PhoneRules;

/// Names a custom attribute may not take: the core contact fields.
pub const RESERVED_NAMES: [&str; 9] = [
    "id",
    "external_id",
    "name",
    "email",
    "phonenumber",
    "stripe_accounts",
    "custom_attributes",
    "created_at",
    "updated_at",
];
const MAX_LABEL_CHARS: usize = 255;
const MAX_DESCRIPTION_CHARS: usize = 1000;

/// The type of an attribute's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrType {
    Text,
    Number,
    Boolean,
    Date,
}

impl AttrType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Number => "number",
            Self::Boolean => "boolean",
            Self::Date => "date",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "text" => Some(Self::Text),
            "number" => Some(Self::Number),
            "boolean" => Some(Self::Boolean),
            "date" => Some(Self::Date),
            _ => None,
        }
    }

    /// The type `define` gives an unknown key, from the value sent.
    pub fn infer(value: &Value) -> Option<Self> {
        match value {
            Value::String(_) => Some(Self::Text),
            Value::Number(_) => Some(Self::Number),
            Value::Bool(_) => Some(Self::Boolean),
            _ => None,
        }
    }

    /// Coerces a non-null scalar to this type, or says what was expected.
    pub fn coerce(self, value: &Value) -> Result<AttrValue, &'static str> {
        match (self, value) {
            (Self::Text, Value::String(s)) => Ok(AttrValue::Text(s.clone())),
            (Self::Text, _) => Err("must be a string"),
            (Self::Number, Value::Number(n)) => {
                AttrValue::from_number(n).ok_or("must be a finite number")
            }
            (Self::Number, _) => Err("must be a number (not a string)"),
            (Self::Boolean, Value::Bool(b)) => Ok(AttrValue::Bool(*b)),
            (Self::Boolean, Value::String(s)) if s.eq_ignore_ascii_case("true") => {
                Ok(AttrValue::Bool(true))
            }
            (Self::Boolean, Value::String(s)) if s.eq_ignore_ascii_case("false") => {
                Ok(AttrValue::Bool(false))
            }
            (Self::Boolean, Value::Number(n)) if n.as_f64() == Some(1.0) => {
                Ok(AttrValue::Bool(true))
            }
            (Self::Boolean, Value::Number(n)) if n.as_f64() == Some(0.0) => {
                Ok(AttrValue::Bool(false))
            }
            (Self::Boolean, _) => Err("must be true, false, \"true\", \"false\", 1 or 0"),
            (Self::Date, Value::String(s)) => date::parse_iso8601(s)
                .map(AttrValue::Date)
                .ok_or("must be an ISO 8601 date (2026-11-21) or date-time (2026-11-21T10:00:00Z)"),
            (Self::Date, Value::Number(n)) => n
                .as_f64()
                .and_then(date::from_unix_seconds)
                .map(AttrValue::Date)
                .ok_or("must be Unix seconds between the years 0000 and 9999"),
            (Self::Date, _) => Err("must be an ISO 8601 date or date-time, or Unix seconds"),
        }
    }
}

/// A stored attribute definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeDef {
    pub name: String,
    pub label: String,
    pub kind: AttrType,
    pub description: Option<String>,
    pub archived: bool,
    pub created_at: i64,
}

impl AttributeDef {
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "label": self.label,
            "type": self.kind.as_str(),
            "description": self.description,
            "archived": self.archived,
            "created_at": self.created_at,
        })
    }
}

/// What a write does with a custom attribute key that has no definition
/// (`custom_attributes.unknown`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownPolicy {
    /// Create a definition on the fly, typed from the value.
    #[default]
    Define,
    /// Drop the key silently.
    Strip,
    /// Refuse the request, naming the key.
    Reject,
}

impl UnknownPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Define => "define",
            Self::Strip => "strip",
            Self::Reject => "reject",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "define" => Some(Self::Define),
            "strip" => Some(Self::Strip),
            "reject" => Some(Self::Reject),
            _ => None,
        }
    }
}

/// How contact writes treat what the agent has not defined and what they read:
/// attribute keys without a definition (`custom_attributes.unknown`), how many
/// definitions one agent may have (`custom_attributes.max_per_agent`), unknown tags
/// (`tags.unknown`), and phone numbers (`phone.default_region`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteRules {
    pub unknown: UnknownPolicy,
    pub max_per_agent: usize,
    pub unknown_tags: UnknownPolicy,
    pub phone: PhoneRules,
}

impl Default for WriteRules {
    fn default() -> Self {
        Self {
            unknown: UnknownPolicy::default(),
            max_per_agent: 1000,
            unknown_tags: UnknownPolicy::default(),
            phone: PhoneRules::default(),
        }
    }
}

impl From<UnknownPolicy> for WriteRules {
    fn from(unknown: UnknownPolicy) -> Self {
        Self {
            unknown,
            ..Self::default()
        }
    }
}

/// Checks an attribute name: `^[a-zA-Z][a-zA-Z0-9_-]{0,63}$` and not a core field.
pub fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    if !first_ok
        || name.len() > 64
        || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(
            "must start with a letter and have at most 64 letters, digits, '_' or '-'".into(),
        );
    }
    if RESERVED_NAMES.contains(&name) {
        return Err(format!(
            "'{name}' is a core contact field and cannot be a custom attribute"
        ));
    }
    Ok(())
}

fn parse_label(value: Option<&Value>, issues: &mut Issues) -> Field<String> {
    match value {
        None => Field::Absent,
        Some(Value::Null) => Field::Clear,
        Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= MAX_LABEL_CHARS => {
            Field::Set(s.clone())
        }
        Some(Value::String(_)) => {
            issues.push(
                "label",
                format!("must be 1 to {MAX_LABEL_CHARS} characters"),
            );
            Field::Absent
        }
        Some(other) => {
            issues.push(
                "label",
                format!("must be a string, got {}", json_type(other)),
            );
            Field::Absent
        }
    }
}

fn parse_description(value: Option<&Value>, issues: &mut Issues) -> Field<String> {
    match value {
        None => Field::Absent,
        Some(Value::Null) => Field::Clear,
        Some(Value::String(s)) if s.is_empty() => Field::Clear,
        Some(Value::String(s)) if s.chars().count() <= MAX_DESCRIPTION_CHARS => {
            Field::Set(s.clone())
        }
        Some(Value::String(_)) => {
            issues.push(
                "description",
                format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
            );
            Field::Absent
        }
        Some(other) => {
            issues.push(
                "description",
                format!("must be a string or null, got {}", json_type(other)),
            );
            Field::Absent
        }
    }
}

fn parse_archived(value: Option<&Value>, issues: &mut Issues) -> Option<bool> {
    match value {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(other) => {
            issues.push(
                "archived",
                format!("must be true or false, got {}", json_type(other)),
            );
            None
        }
    }
}

fn parse_type(value: Option<&Value>, issues: &mut Issues) -> Option<AttrType> {
    match value {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            let kind = AttrType::parse(s);
            if kind.is_none() {
                issues.push(
                    "type",
                    format!("must be text, number, boolean or date, got \"{s}\""),
                );
            }
            kind
        }
        Some(other) => {
            issues.push(
                "type",
                format!("must be a string, got {}", json_type(other)),
            );
            None
        }
    }
}

fn object<'a>(body: &'a Value, issues: &mut Issues) -> Option<&'a serde_json::Map<String, Value>> {
    let obj = body.as_object();
    if obj.is_none() {
        issues.push(
            "body",
            format!("must be an object, got {}", json_type(body)),
        );
    }
    obj
}

/// Parses a `POST /custom-attributes` body into a new definition created at `now`.
pub fn parse_new(body: &Value, now: i64) -> Result<AttributeDef, Issues> {
    let mut issues = Issues::new();
    let Some(obj) = object(body, &mut issues) else {
        return Err(issues);
    };
    let name = required_string(obj, "name", &mut issues, check_name);
    let kind = parse_type(obj.get("type"), &mut issues).unwrap_or(AttrType::Text);
    let label = parse_label(obj.get("label"), &mut issues);
    let description = parse_description(obj.get("description"), &mut issues);
    let archived = parse_archived(obj.get("archived"), &mut issues).unwrap_or(false);
    if !issues.is_empty() {
        return Err(issues);
    }
    Ok(AttributeDef {
        label: match label {
            Field::Set(label) => label,
            Field::Absent | Field::Clear => name.clone(),
        },
        name,
        kind,
        description: match description {
            Field::Set(d) => Some(d),
            Field::Absent | Field::Clear => None,
        },
        archived,
        created_at: now,
    })
}

/// A validated `PUT /custom-attributes/{name}` body: only sent fields change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeChange {
    name: Option<String>,
    kind: Option<AttrType>,
    label: Field<String>,
    description: Field<String>,
    archived: Option<bool>,
}

impl AttributeChange {
    pub fn parse(body: &Value) -> Result<Self, Issues> {
        let mut issues = Issues::new();
        let Some(obj) = object(body, &mut issues) else {
            return Err(issues);
        };
        let name = match obj.get("name") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                issues.push(
                    "name",
                    format!("must be a string, got {}", json_type(other)),
                );
                None
            }
        };
        let change = Self {
            name,
            kind: parse_type(obj.get("type"), &mut issues),
            label: parse_label(obj.get("label"), &mut issues),
            description: parse_description(obj.get("description"), &mut issues),
            archived: parse_archived(obj.get("archived"), &mut issues),
        };
        if issues.is_empty() {
            Ok(change)
        } else {
            Err(issues)
        }
    }

    /// The definition after this change; `name` and `type` may only repeat what is stored.
    pub fn apply(&self, def: &AttributeDef) -> Result<AttributeDef, Issues> {
        let mut issues = Issues::new();
        if self.name.as_ref().is_some_and(|n| *n != def.name) {
            issues.push("name", "cannot be changed");
        }
        if let Some(kind) = self.kind.filter(|k| *k != def.kind) {
            issues.push(
                "type",
                format!(
                    "cannot be changed (is {}, got {})",
                    def.kind.as_str(),
                    kind.as_str()
                ),
            );
        }
        if !issues.is_empty() {
            return Err(issues);
        }
        let mut next = def.clone();
        match &self.label {
            Field::Absent => {}
            Field::Clear => next.label = def.name.clone(),
            Field::Set(label) => next.label = label.clone(),
        }
        match &self.description {
            Field::Absent => {}
            Field::Clear => next.description = None,
            Field::Set(d) => next.description = Some(d.clone()),
        }
        if let Some(archived) = self.archived {
            next.archived = archived;
        }
        Ok(next)
    }
}

/// One agent's definitions during a write, plus those this write defines on the fly
/// under `rules`.
#[derive(Debug, Clone, PartialEq)]
pub struct Schema {
    defs: BTreeMap<String, AttributeDef>,
    created: Vec<String>,
    rules: WriteRules,
}

/// Why a definition cannot be added: the agent has `max` already.
pub fn too_many_definitions(max: usize) -> String {
    format!(
        "the agent already has {max} custom attribute definitions, the most allowed (custom_attributes.max_per_agent)"
    )
}

impl Schema {
    /// The stored definitions `defs`, extended under `rules`.
    pub fn new(defs: impl IntoIterator<Item = AttributeDef>, rules: WriteRules) -> Self {
        Self {
            defs: defs.into_iter().map(|d| (d.name.clone(), d)).collect(),
            created: Vec::new(),
            rules,
        }
    }

    pub fn rules(&self) -> WriteRules {
        self.rules
    }

    /// Whether one more definition fits.
    fn has_room(&self) -> bool {
        self.defs.len() < self.rules.max_per_agent
    }

    /// Defines `name` as `kind` unless it is defined already (an import's typed CSV
    /// column); saved with the definitions `type_values` makes. Without room it does
    /// nothing: a value for it then meets the limit in `type_values`.
    pub fn declare(&mut self, name: &str, kind: AttrType, now: i64) {
        if self.defs.contains_key(name) || check_name(name).is_err() || !self.has_room() {
            return;
        }
        self.created.push(name.to_owned());
        self.defs.insert(
            name.to_owned(),
            AttributeDef {
                name: name.to_owned(),
                label: name.to_owned(),
                kind,
                description: None,
                archived: false,
                created_at: now,
            },
        );
    }

    /// The definition of `name`, if any.
    pub fn definition(&self, name: &str) -> Option<&AttributeDef> {
        self.defs.get(name)
    }

    /// A point to return to with [`Schema::roll_back`]: how many definitions were made
    /// on the fly so far.
    pub fn mark(&self) -> usize {
        self.created.len()
    }

    /// Forgets the definitions made on the fly since `mark` (for an entry that is
    /// rejected after its values were typed). Cheaper than keeping a copy of the schema:
    /// definitions are only ever added here.
    pub fn roll_back(&mut self, mark: usize) {
        for name in self.created.drain(mark.min(self.created.len())..) {
            self.defs.remove(&name);
        }
    }

    /// Definitions made on the fly by `type_values` calls, in order.
    pub fn created(&self) -> impl Iterator<Item = &AttributeDef> {
        self.created.iter().filter_map(|name| self.defs.get(name))
    }

    /// Types a contact's whole `custom_attributes` as sent (`raw`: scalars and nulls)
    /// into the map to store. `existing` is the stored map: its archived values are
    /// kept unless sent as `null`. Problems go to `issues` under `path`
    /// (`users[4].custom_attributes`).
    pub fn type_values(
        &mut self,
        raw: &BTreeMap<String, Value>,
        existing: Option<&BTreeMap<String, AttrValue>>,
        path: &str,
        now: i64,
        issues: &mut Issues,
    ) -> BTreeMap<String, AttrValue> {
        let mut typed = BTreeMap::new();
        if let Some(existing) = existing {
            for (name, value) in existing {
                let archived = self.defs.get(name).is_some_and(|d| d.archived);
                if archived && !raw.contains_key(name) {
                    typed.insert(name.clone(), value.clone());
                }
            }
        }
        for (name, value) in raw {
            let at = join(path, name);
            let def = match self.defs.get(name) {
                Some(def) => def,
                None => match self.rules.unknown {
                    UnknownPolicy::Strip => continue,
                    UnknownPolicy::Reject => {
                        issues.push(at, format!("no custom attribute '{name}' is defined"));
                        continue;
                    }
                    UnknownPolicy::Define => {
                        let Some(kind) = AttrType::infer(value) else {
                            continue; // null for an unknown key: nothing to define or store
                        };
                        if let Err(msg) = check_name(name) {
                            issues.push(
                                at,
                                format!("cannot define a custom attribute with this name: {msg}"),
                            );
                            continue;
                        }
                        if !self.has_room() {
                            issues.push(
                                at,
                                format!(
                                    "cannot define custom attribute '{name}': {}",
                                    too_many_definitions(self.rules.max_per_agent)
                                ),
                            );
                            continue;
                        }
                        self.created.push(name.clone());
                        self.defs.entry(name.clone()).or_insert(AttributeDef {
                            name: name.clone(),
                            label: name.clone(),
                            kind,
                            description: None,
                            archived: false,
                            created_at: now,
                        })
                    }
                },
            };
            if value.is_null() {
                continue;
            }
            if def.archived {
                issues.push(
                    at,
                    format!("custom attribute '{name}' is archived; only null is accepted"),
                );
                continue;
            }
            match def.kind.coerce(value) {
                Ok(v) => {
                    typed.insert(name.clone(), v);
                }
                Err(msg) => issues.push(
                    at,
                    format!("{msg} (custom attribute '{name}' is {})", def.kind.as_str()),
                ),
            }
        }
        typed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn raw_values() -> impl Strategy<Value = BTreeMap<String, Value>> {
        let name = prop_oneof![
            Just("plan"),
            Just("ltv"),
            Just("vip"),
            Just("bad name"),
            Just("x")
        ];
        let value = prop_oneof![
            Just(Value::Null),
            Just(json!("pro")),
            Just(json!(540)),
            Just(json!(true)),
        ];
        proptest::collection::btree_map(name.prop_map(str::to_owned), value, 0..4)
    }

    proptest! {
        /// Rolling back to a mark leaves the schema as it was at the mark, whatever was
        /// defined on the fly (by typing values or by declaring) after it.
        #[test]
        fn roll_back_returns_to_the_mark(
            before in raw_values(),
            after in proptest::collection::vec(raw_values(), 0..3),
            declared in proptest::option::of(prop_oneof![Just("ltv"), Just("since")]),
        ) {
            let mut schema = Schema::new([AttributeDef {
                name: "x".into(),
                label: "x".into(),
                kind: AttrType::Number,
                description: None,
                archived: false,
                created_at: 0,
            }], WriteRules::default());
            let mut issues = Issues::new();
            schema.type_values(&before, None, "", 1, &mut issues);
            let at_mark = schema.clone();
            let mark = schema.mark();
            if let Some(name) = declared {
                schema.declare(name, AttrType::Date, 2);
            }
            for raw in &after {
                schema.type_values(raw, None, "", 2, &mut issues);
            }
            schema.roll_back(mark);
            prop_assert_eq!(schema, at_mark);
        }
    }

    #[test]
    fn definitions_on_the_fly_stop_at_the_limit_naming_the_key() {
        let mut schema = Schema::new(
            [],
            WriteRules {
                unknown: UnknownPolicy::Define,
                max_per_agent: 2,
                ..WriteRules::default()
            },
        );
        let raw: BTreeMap<String, Value> = [("a", 1), ("b", 2), ("c", 3)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), json!(v)))
            .collect();
        let mut issues = Issues::new();
        let typed = schema.type_values(&raw, None, "users[0].custom_attributes", 1, &mut issues);
        assert_eq!(schema.created().count(), 2);
        assert!(!typed.contains_key("c"));
        let fields: Vec<_> = issues.as_slice().iter().map(|i| i.field.as_str()).collect();
        assert_eq!(fields, ["users[0].custom_attributes.c"]);
        schema.declare("d", AttrType::Date, 1);
        assert!(schema.definition("d").is_none());
    }
}
