//! Bulk import and export, the pure parts: file formats, what a CSV column means,
//! turning a CSV row into the same contact object the JSON API takes (so one validator
//! serves both), a contact as a CSV row, and the import report.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::attr::AttrValue;
use super::attribute::{AttrType, AttributeDef};
use super::contact::Contact;
use super::date;

/// Most row errors a report lists; `failed` counts them all.
pub const MAX_LISTED_ERRORS: usize = 1000;

/// A bulk file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Json,
    Ndjson,
}

impl Format {
    /// From a `Content-Type` header value (parameters such as `charset` are ignored).
    pub fn from_content_type(value: &str) -> Option<Self> {
        let essence = value.split(';').next().unwrap_or_default().trim();
        match essence.to_ascii_lowercase().as_str() {
            "text/csv" | "application/csv" => Some(Self::Csv),
            "application/json" => Some(Self::Json),
            "application/x-ndjson" | "application/ndjson" | "application/jsonl" => {
                Some(Self::Ndjson)
            }
            _ => None,
        }
    }

    /// From a name: `csv`, `json` or `ndjson`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "csv" => Some(Self::Csv),
            "json" => Some(Self::Json),
            "ndjson" | "jsonl" => Some(Self::Ndjson),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Json => "json",
            Self::Ndjson => "ndjson",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Csv => "text/csv; charset=utf-8",
            Self::Json => "application/json",
            Self::Ndjson => "application/x-ndjson",
        }
    }
}

/// What one CSV column holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Column {
    ExternalId,
    Name,
    Email,
    Phonenumber,
    /// A JSON array in the cell.
    StripeAccounts,
    /// `tags` or `lists`: names separated by `;`.
    Names(&'static str),
    /// `optin` or `incoming_blocked`: true or false.
    Flag(&'static str),
    /// Written by export, not settable: `id`, `source`, `created_at`, `updated_at`.
    Ignored,
    /// A custom attribute; `kind` when the header says it (`ltv:number`).
    Attribute {
        name: String,
        kind: Option<AttrType>,
    },
}

/// The columns of a CSV file, from its header row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns(Vec<Column>);

impl Columns {
    /// Reads a header row. Core columns are matched case-insensitively; every other
    /// column is a custom attribute, named as written (`custom_attributes.` in front is
    /// allowed), with an optional `:type` suffix.
    pub fn parse(header: &[&str]) -> Result<Self, String> {
        let mut columns = Vec::with_capacity(header.len());
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for (i, raw) in header.iter().enumerate() {
            let cell = raw.trim();
            if cell.is_empty() {
                return Err(format!("column {} of the header row has no name", i + 1));
            }
            let column = match cell.to_ascii_lowercase().as_str() {
                "external_id" => Column::ExternalId,
                "name" => Column::Name,
                "email" => Column::Email,
                "phonenumber" => Column::Phonenumber,
                "stripe_accounts" => Column::StripeAccounts,
                "tags" => Column::Names("tags"),
                "lists" => Column::Names("lists"),
                "optin" => Column::Flag("optin"),
                "incoming_blocked" => Column::Flag("incoming_blocked"),
                "id" | "created_at" | "updated_at" | "source" => Column::Ignored,
                _ => {
                    let bare = cell.strip_prefix("custom_attributes.").unwrap_or(cell);
                    let (name, kind) = match bare.rsplit_once(':') {
                        Some((name, kind)) => match AttrType::parse(kind.trim()) {
                            Some(kind) => (name.trim(), Some(kind)),
                            None => {
                                return Err(format!(
                                    "column \"{cell}\": unknown type \"{}\" (text, number, boolean or date)",
                                    kind.trim()
                                ))
                            }
                        },
                        None => (bare, None),
                    };
                    Column::Attribute {
                        name: name.to_owned(),
                        kind,
                    }
                }
            };
            let key = match &column {
                Column::Attribute { name, .. } => format!("custom_attributes.{name}"),
                other => format!("{other:?}"),
            };
            if let Some(first) = seen.insert(key, i) {
                if column != Column::Ignored {
                    return Err(format!(
                        "columns {} and {} of the header row are the same field (\"{cell}\")",
                        first + 1,
                        i + 1
                    ));
                }
            }
            columns.push(column);
        }
        if !columns.contains(&Column::ExternalId) {
            return Err(
                "the header row has no external_id column; import keys every row by external_id"
                    .into(),
            );
        }
        Ok(Self(columns))
    }

    /// The external id cell of a row, when it has a non-empty one.
    pub fn external_id(&self, record: &[&str]) -> Option<String> {
        let i = self.0.iter().position(|c| *c == Column::ExternalId)?;
        record
            .get(i)
            .filter(|s| !s.is_empty())
            .map(|s| (*s).to_owned())
    }

    /// Attributes whose type the header declares.
    pub fn declared(&self) -> Vec<(String, AttrType)> {
        self.0
            .iter()
            .filter_map(|c| match c {
                Column::Attribute {
                    name,
                    kind: Some(kind),
                } => Some((name.clone(), *kind)),
                _ => None,
            })
            .collect()
    }

    /// The contact object of one row: empty cells are left out ("not set"), attribute
    /// cells become JSON values of the attribute's type (`types`: the agent's schema;
    /// the header's declaration wins for attributes it types). A cell that does not fit
    /// is `Err((field, message))`.
    pub fn to_object(
        &self,
        record: &[&str],
        types: &BTreeMap<String, AttrType>,
    ) -> Result<Value, (String, String)> {
        if record.len() != self.0.len() {
            return Err((
                "row".into(),
                format!(
                    "has {} cells, the header has {}",
                    record.len(),
                    self.0.len()
                ),
            ));
        }
        let mut obj = Map::new();
        let mut attrs = Map::new();
        for (column, cell) in self.0.iter().zip(record) {
            if cell.is_empty() {
                continue;
            }
            let text = Value::String((*cell).to_owned());
            match column {
                Column::ExternalId => {
                    obj.insert("external_id".into(), text);
                }
                Column::Name => {
                    obj.insert("name".into(), text);
                }
                Column::Email => {
                    obj.insert("email".into(), text);
                }
                Column::Phonenumber => {
                    obj.insert("phonenumber".into(), text);
                }
                Column::StripeAccounts => {
                    let parsed: Value = serde_json::from_str(cell).map_err(|err| {
                        (
                            "stripe_accounts".to_owned(),
                            format!("must be a JSON array of accounts: {err}"),
                        )
                    })?;
                    obj.insert("stripe_accounts".into(), parsed);
                }
                Column::Names(field) => {
                    let names = cell
                        .split(';')
                        .map(str::trim)
                        .filter(|n| !n.is_empty())
                        .map(|n| Value::String(n.to_owned()))
                        .collect();
                    obj.insert((*field).into(), Value::Array(names));
                }
                Column::Flag(field) => {
                    let flag = cell_value(cell, Some(AttrType::Boolean))
                        .map_err(|msg| ((*field).to_owned(), msg))?;
                    obj.insert((*field).into(), flag);
                }
                Column::Ignored => {}
                Column::Attribute { name, kind } => {
                    let kind = kind.or_else(|| types.get(name).copied());
                    let value = cell_value(cell, kind).map_err(|msg| (name.clone(), msg))?;
                    attrs.insert(name.clone(), value);
                }
            }
        }
        if !attrs.is_empty() {
            obj.insert("custom_attributes".into(), Value::Object(attrs));
        }
        Ok(Value::Object(obj))
    }
}

/// A CSV cell as the JSON value of an attribute of type `kind` (text when unknown).
fn cell_value(cell: &str, kind: Option<AttrType>) -> Result<Value, String> {
    match kind {
        None | Some(AttrType::Text | AttrType::Date) => Ok(Value::String(cell.to_owned())),
        Some(AttrType::Number) => AttrValue::parse_number(cell)
            .map(|n| n.to_json())
            .ok_or_else(|| format!("must be a number, got \"{cell}\"")),
        Some(AttrType::Boolean) => match cell.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(Value::Bool(true)),
            "false" | "0" | "no" => Ok(Value::Bool(false)),
            _ => Err(format!("must be true or false, got \"{cell}\"")),
        },
    }
}

/// Whether `text` is a date-time exactly as contactd writes one
/// (`YYYY-MM-DDTHH:MM:SS[.mmm]Z`): in a JSON import, an unknown attribute whose values
/// all look like this is defined as a date, so an export imports back with its types.
pub fn is_written_date(text: &str) -> bool {
    let b = text.as_bytes();
    let shape_ok = matches!(b.len(), 20 | 24)
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[b.len() - 1] == b'Z'
        && (b.len() == 20 || b[19] == b'.');
    shape_ok && date::parse_iso8601(text).is_some()
}

/// The CSV header export writes: core columns, then every attribute as `name:type`.
pub fn csv_header(defs: &[AttributeDef]) -> Vec<String> {
    let mut header: Vec<String> = [
        "external_id",
        "name",
        "email",
        "phonenumber",
        "stripe_accounts",
        "tags",
        "lists",
        "optin",
        "incoming_blocked",
        "source",
        "created_at",
        "updated_at",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    header.extend(
        defs.iter()
            .map(|d| format!("{}:{}", d.name, d.kind.as_str())),
    );
    header
}

/// Whether a spreadsheet would run `cell` as a formula: it starts with `=`, `@`, a tab or
/// a carriage return, or with `+` or `-` followed by anything but digits, spaces and
/// `()-.+` (so phone numbers and negative numbers are not formulas).
fn formula_like(cell: &str) -> bool {
    let mut chars = cell.chars();
    match chars.next() {
        Some('=' | '@' | '\t' | '\r') => true,
        Some('+' | '-') => chars.any(|c| !(c.is_ascii_digit() || " ()-.+".contains(c))),
        _ => false,
    }
}

/// A CSV cell as export writes it: with a leading `'` when a spreadsheet would run it
/// as a formula, also behind leading quotes of its own, so that [`restore_cell`] can
/// tell the added quote from the value's.
pub fn neutralize_cell(cell: String) -> String {
    if formula_like(cell.trim_start_matches('\'')) {
        format!("'{cell}")
    } else {
        cell
    }
}

/// A CSV cell as import reads it: without the quote [`neutralize_cell`] adds.
pub fn restore_cell(cell: &str) -> &str {
    match cell.strip_prefix('\'') {
        Some(rest) if formula_like(cell.trim_start_matches('\'')) => rest,
        _ => cell,
    }
}

/// A contact as a row under [`csv_header`].
pub fn csv_record(contact: &Contact, defs: &[AttributeDef]) -> Vec<String> {
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let stripe = if contact.stripe_accounts.is_empty() {
        String::new()
    } else {
        serde_json::to_string(&contact.stripe_accounts).unwrap_or_default()
    };
    let mut row = vec![
        contact.external_id.clone(),
        text(&contact.name),
        text(&contact.email),
        text(&contact.phonenumber),
        stripe,
        contact.tags.join(";"),
        contact.lists.join(";"),
        contact.optin.map(|b| b.to_string()).unwrap_or_default(),
        contact
            .incoming_blocked
            .map(|b| b.to_string())
            .unwrap_or_default(),
        contact.source.as_str().to_owned(),
        contact.created_at.to_string(),
        contact.updated_at.to_string(),
    ];
    row.extend(defs.iter().map(|d| {
        contact
            .custom_attributes
            .get(&d.name)
            .map(attr_cell)
            .unwrap_or_default()
    }));
    row
}

fn attr_cell(value: &AttrValue) -> String {
    match value.to_json() {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// One row that was not imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// As a spreadsheet shows it (CSV: the header is row 1), or the line (NDJSON) or
    /// 1-based position (JSON array).
    pub row: u64,
    pub external_id: Option<String>,
    pub field: Option<String>,
    pub message: String,
}

impl RowError {
    pub fn to_json(&self) -> Value {
        json!({
            "row": self.row,
            "external_id": self.external_id,
            "field": self.field,
            "message": self.message,
        })
    }
}

/// What an import did, row by row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub rows: u64,
    pub created: u64,
    pub updated: u64,
    pub skipped: u64,
    pub failed: u64,
    /// The first [`MAX_LISTED_ERRORS`] failures.
    pub errors: Vec<RowError>,
}

impl ImportReport {
    /// Lists a problem; `new_row` when it is the first of its row, which counts the
    /// row as failed.
    pub fn fail(&mut self, error: RowError, new_row: bool) {
        if new_row {
            self.failed += 1;
        }
        if self.errors.len() < MAX_LISTED_ERRORS {
            self.errors.push(error);
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "rows": self.rows,
            "created": self.created,
            "updated": self.updated,
            "skipped": self.skipped,
            "failed": self.failed,
            "errors": self.errors.iter().map(RowError::to_json).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn columns(header: &[&str]) -> Columns {
        Columns::parse(header).unwrap()
    }

    #[test]
    fn headers_map_core_columns_attributes_and_declared_types() {
        let c = columns(&[
            "External_ID",
            "name",
            "ltv:number",
            "custom_attributes.vip",
            "id",
        ]);
        assert_eq!(c.declared(), vec![("ltv".to_owned(), AttrType::Number)]);
        let types = BTreeMap::from([("vip".to_owned(), AttrType::Boolean)]);
        let obj = c
            .to_object(&["u1", "Sam", "540", "TRUE", "contact_9"], &types)
            .unwrap();
        assert_eq!(
            obj,
            json!({"external_id": "u1", "name": "Sam", "custom_attributes": {"ltv": 540, "vip": true}})
        );
    }

    #[test]
    fn empty_cells_are_not_set_and_bad_cells_name_their_column() {
        let c = columns(&["external_id", "email", "ltv:number", "stripe_accounts"]);
        let none = BTreeMap::new();
        assert_eq!(
            c.to_object(&["u1", "", "", ""], &none).unwrap(),
            json!({"external_id": "u1"})
        );
        assert_eq!(
            c.to_object(&["u1", "", "lots", ""], &none).unwrap_err().0,
            "ltv"
        );
        assert_eq!(
            c.to_object(&["u1", "", "", "[oops"], &none).unwrap_err().0,
            "stripe_accounts"
        );
        assert_eq!(c.to_object(&["u1"], &none).unwrap_err().0, "row");
    }

    #[test]
    fn bad_headers_are_rejected() {
        assert!(Columns::parse(&["name", "email"])
            .unwrap_err()
            .contains("external_id"));
        assert!(Columns::parse(&["external_id", ""]).is_err());
        assert!(Columns::parse(&["external_id", "ltv", "ltv:number"]).is_err());
        assert!(Columns::parse(&["external_id", "ltv:money"]).is_err());
    }

    #[test]
    fn written_dates_are_recognised_and_others_are_not() {
        assert!(is_written_date("2024-05-01T10:00:00Z"));
        assert!(is_written_date("2024-05-01T10:00:00.250Z"));
        assert!(!is_written_date("2024-05-01"));
        assert!(!is_written_date("2024-05-01T10:00:00+02:00"));
        assert!(!is_written_date("2024-13-01T10:00:00Z"));
    }

    #[test]
    fn export_rows_follow_the_header() {
        let defs = vec![AttributeDef {
            name: "ltv".into(),
            label: "ltv".into(),
            kind: AttrType::Number,
            description: None,
            archived: false,
            created_at: 0,
        }];
        let header = csv_header(&defs);
        assert_eq!(header.last().unwrap(), "ltv:number");
        let contact = Contact {
            id: 1,
            external_id: "u1".into(),
            name: Some("Sam, \"Jr\"".into()),
            email: None,
            phonenumber: None,
            stripe_accounts: vec![],
            custom_attributes: BTreeMap::from([("ltv".to_owned(), AttrValue::Int(540))]),
            created_at: 0,
            updated_at: 0,
            ..Contact::default()
        };
        let row = csv_record(&contact, &defs);
        assert_eq!(row.len(), header.len());
        assert_eq!(row[1], "Sam, \"Jr\"");
        assert_eq!(row.last().unwrap(), "540");
        let back = Columns::parse(&header.iter().map(String::as_str).collect::<Vec<_>>())
            .unwrap()
            .to_object(
                &row.iter().map(String::as_str).collect::<Vec<_>>(),
                &BTreeMap::new(),
            )
            .unwrap();
        assert_eq!(back["custom_attributes"]["ltv"], json!(540));
        assert_eq!(back["name"], json!("Sam, \"Jr\""));
    }

    #[test]
    fn formula_cells_get_a_quote_and_numbers_do_not() {
        for (cell, exported) in [
            ("=1+1", "'=1+1"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tx", "'\tx"),
            ("\rx", "'\rx"),
            ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
            ("-2+3+cmd", "'-2+3+cmd"),
            ("'=x", "''=x"),
            ("+1 (555) 010-0100", "+1 (555) 010-0100"),
            ("-12.5", "-12.5"),
            ("-", "-"),
            ("'quoted", "'quoted"),
            ("Ada", "Ada"),
            ("", ""),
        ] {
            assert_eq!(neutralize_cell(cell.to_owned()), exported, "{cell:?}");
            assert_eq!(restore_cell(exported), cell, "{exported:?}");
        }
    }

    proptest::proptest! {
        /// Import gives back every value export wrote, and what export writes never
        /// starts as a formula.
        #[test]
        fn neutralized_cells_read_back_and_never_start_a_formula(cell in "['=@+\\-\t\r0-9a-z ()]{0,8}") {
            let exported = neutralize_cell(cell.clone());
            proptest::prop_assert_eq!(restore_cell(&exported), cell.as_str());
            proptest::prop_assert!(!formula_like(&exported));
        }
    }
}
