//! List queries: `q`, `sort`, `filter[...]` and `cursor`, parsed and typed against the
//! agent's schema, plus the pure evaluation of a query over contacts (matching, the
//! total order, cursor positions). The store uses indexes to find candidates and this
//! module to decide; tests use it alone as the reference.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use super::attribute::AttrType;
use super::contact::Source;
use super::contact::{email_key, Contact};
use super::date;
use super::ids;
use super::issues::Issues;
use super::label::{self, LabelKind};
use super::phone::PhoneRules;
use super::search::{
    attr_key, int_key, matches_terms, normalise_term, sort_key, text_key, ATTR_PREFIX, CORE_FIELDS,
};
use super::AttrValue;

/// A comparison in a filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Gt,
    Gte,
    Lt,
    Lte,
}

/// What a filter asks of one field's sort key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Eq(Vec<u8>),
    Cmp(Cmp, Vec<u8>),
    Exists(bool),
    /// Any value but this one, or none (`filter[optin][ne]=true`: not opted in).
    Ne(Vec<u8>),
    /// The key holds these bytes anywhere (Pabbly's `name` filter); the store finds
    /// candidates through its name-word dictionary (see `search::substring_pieces`).
    Contains(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// A core column or `custom_attributes.<name>`.
    pub field: String,
    pub op: Op,
}

impl Filter {
    pub fn accepts(&self, contact: &Contact) -> bool {
        let names = match self.field.as_str() {
            "tags" => Some(&contact.tags),
            "lists" => Some(&contact.lists),
            _ => None,
        };
        if let (Some(names), Op::Eq(want)) = (names, &self.op) {
            return names
                .iter()
                .any(|n| label::fold(n).as_bytes() == want.as_slice());
        }
        let key = sort_key(contact, &self.field);
        match (&self.op, key) {
            (Op::Exists(want), key) => key.is_some() == *want,
            (Op::Ne(v), key) => key.as_ref() != Some(v),
            (_, None) => false,
            (Op::Eq(v), Some(k)) => k == *v,
            (Op::Contains(v), Some(k)) => {
                v.is_empty() || k.windows(v.len()).any(|w| w == v.as_slice())
            }
            (Op::Cmp(Cmp::Gt, v), Some(k)) => k > *v,
            (Op::Cmp(Cmp::Gte, v), Some(k)) => k >= *v,
            (Op::Cmp(Cmp::Lt, v), Some(k)) => k < *v,
            (Op::Cmp(Cmp::Lte, v), Some(k)) => k <= *v,
        }
    }
}

/// A contact's place in a query's order: its sort key (none when it has no value) and
/// its id, which breaks ties so the order is total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub key: Option<Vec<u8>>,
    pub id: u64,
}

/// A parsed list query. `Query::default()` is the plain creation-order listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub terms: Vec<String>,
    pub sort_field: String,
    pub descending: bool,
    pub filters: Vec<Filter>,
}

impl Default for Query {
    fn default() -> Self {
        Self {
            terms: Vec::new(),
            sort_field: "created_at".to_owned(),
            descending: false,
            filters: Vec::new(),
        }
    }
}

/// The type of a field, for parsing filter values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Unix seconds (created_at, updated_at).
    Seconds,
    /// Compared case-insensitively.
    Text,
    /// Compared as emails are (see `contact::email_key`).
    Email,
    /// Compared byte for byte (external_id).
    Exact,
    Attr(AttrType),
    /// Filter only: a phone number in any formatting, compared in E.164.
    Phone,
    /// Filter only: tag or list names, the contact carrying all of them.
    Names(LabelKind),
    /// Filter only: `true` or `false` (optin, incoming_blocked).
    Flag,
    /// Filter only: `api`, `csv` or `manual`.
    Source,
}

impl Kind {
    /// Whether `sort` may name a field of this kind.
    fn sortable(self) -> bool {
        !matches!(
            self,
            Self::Phone | Self::Names(_) | Self::Flag | Self::Source
        )
    }
}

fn field_kind(field: &str, schema: &BTreeMap<String, AttrType>) -> Option<Kind> {
    match field {
        "created_at" | "updated_at" => Some(Kind::Seconds),
        "name" => Some(Kind::Text),
        "phonenumber" => Some(Kind::Phone),
        "tags" => Some(Kind::Names(LabelKind::Tag)),
        "lists" => Some(Kind::Names(LabelKind::List)),
        "optin" | "incoming_blocked" => Some(Kind::Flag),
        "source" => Some(Kind::Source),
        "email" => Some(Kind::Email),
        "external_id" => Some(Kind::Exact),
        _ => field
            .strip_prefix(ATTR_PREFIX)
            .and_then(|name| schema.get(name))
            .map(|t| Kind::Attr(*t)),
    }
}

/// The sort key of a filter value of `kind`, or why it does not fit.
fn value_key(kind: Kind, text: &str, phone: &PhoneRules) -> Result<Vec<u8>, &'static str> {
    let seconds = |t: &str| -> Option<i64> {
        t.trim()
            .parse::<i64>()
            .ok()
            .or_else(|| date::parse_iso8601(t).map(|ms| ms.div_euclid(1000)))
    };
    match kind {
        Kind::Seconds => seconds(text)
            .map(int_key)
            .ok_or("must be Unix seconds or an ISO 8601 date"),
        Kind::Text => Ok(text_key(text)),
        Kind::Email => Ok(email_key(text).into_bytes()),
        Kind::Exact => Ok(ids::lookup_id(text).into_bytes()),
        Kind::Phone => phone
            .e164(text)
            .map(String::into_bytes)
            .ok_or("must be a phone number"),
        Kind::Names(_) => Ok(label::fold(text.trim()).into_bytes()),
        Kind::Flag => match text {
            "true" | "1" => Ok(vec![1]),
            "false" | "0" => Ok(vec![0]),
            _ => Err("must be true or false"),
        },
        Kind::Source => Source::parse(text)
            .map(|s| s.as_str().as_bytes().to_vec())
            .ok_or("must be api, csv or manual"),
        Kind::Attr(AttrType::Text) => Ok(attr_key(&AttrValue::Text(text.to_owned()))),
        Kind::Attr(AttrType::Number) => AttrValue::parse_number(text)
            .map(|n| attr_key(&n))
            .ok_or("must be a number"),
        Kind::Attr(AttrType::Boolean) => match text {
            "true" | "1" => Ok(attr_key(&AttrValue::Bool(true))),
            "false" | "0" => Ok(attr_key(&AttrValue::Bool(false))),
            _ => Err("must be true or false"),
        },
        Kind::Attr(AttrType::Date) => {
            let ms = date::parse_iso8601(text).or_else(|| {
                text.trim()
                    .parse::<f64>()
                    .ok()
                    .and_then(date::from_unix_seconds)
            });
            ms.map(|ms| attr_key(&AttrValue::Date(ms)))
                .ok_or("must be an ISO 8601 date or Unix seconds")
        }
    }
}

fn orderable(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Seconds | Kind::Attr(AttrType::Number | AttrType::Date)
    )
}

/// The parameters a query uses; `page`/`per_page`/`cursor` are read elsewhere.
pub fn is_query_param(name: &str) -> bool {
    name == "q" || name == "sort" || name.starts_with("filter[")
}

impl Query {
    /// Parses `q`, `sort` and every `filter[field]` / `filter[field][op]` parameter,
    /// typing values through `schema` (attribute name → type). Every problem is
    /// reported under the parameter's name.
    pub fn parse(
        params: &[(String, String)],
        schema: &BTreeMap<String, AttrType>,
        phone: &PhoneRules,
    ) -> Result<Self, Issues> {
        let mut issues = Issues::new();
        let mut query = Self::default();
        for (name, value) in params {
            if name == "q" {
                query.terms.extend(
                    value
                        .split_whitespace()
                        .map(normalise_term)
                        .filter(|t| !t.is_empty()),
                );
            } else if name == "sort" {
                let (desc, field) = match value.strip_prefix('-') {
                    Some(rest) => (true, rest),
                    None => (false, value.as_str()),
                };
                // A phone number sorts by its text as stored; it filters in E.164.
                if field == "phonenumber" || field_kind(field, schema).is_some_and(Kind::sortable) {
                    query.sort_field = field.to_owned();
                    query.descending = desc;
                } else {
                    issues.push("sort", format!("cannot sort by \"{field}\": not a core field ({}) or a defined custom_attributes.<name>", CORE_FIELDS.join(", ")));
                }
            } else if let Some(rest) = name.strip_prefix("filter[") {
                match parse_filter(rest, value, schema, phone) {
                    Ok(filters) => query.filters.extend(filters),
                    Err(msg) => issues.push(name.as_str(), msg),
                }
            }
        }
        if issues.is_empty() {
            Ok(query)
        } else {
            Err(issues)
        }
    }

    /// Whether the contact satisfies every term and filter.
    pub fn matches(&self, contact: &Contact) -> bool {
        self.filters.iter().all(|f| f.accepts(contact)) && matches_terms(contact, &self.terms)
    }

    /// Where the contact stands in this query's order. `created_at` order is creation
    /// order, the contact number, which follows `created_at` except when the clock went
    /// back; filters on `created_at` compare the stored value.
    pub fn position(&self, contact: &Contact) -> Position {
        let key = if self.sort_field == "created_at" {
            #[allow(clippy::cast_possible_wrap)]
            Some(int_key(contact.id as i64))
        } else {
            sort_key(contact, &self.sort_field)
        };
        Position {
            key,
            id: contact.id,
        }
    }

    /// The query's total order: contacts with a value first (by key, then id; reversed
    /// when descending), then those without (by id, reversed when descending).
    pub fn compare(&self, a: &Position, b: &Position) -> Ordering {
        let ord = match (&a.key, &b.key) {
            (Some(x), Some(y)) => x.cmp(y).then(a.id.cmp(&b.id)),
            (Some(_), None) => return Ordering::Less,
            (None, Some(_)) => return Ordering::Greater,
            (None, None) => a.id.cmp(&b.id),
        };
        if self.descending {
            ord.reverse()
        } else {
            ord
        }
    }

    /// The reference evaluation: the matching contacts in the query's order.
    pub fn evaluate<'a>(
        &self,
        contacts: impl IntoIterator<Item = &'a Contact>,
    ) -> Vec<&'a Contact> {
        let mut hits: Vec<(Position, &Contact)> = contacts
            .into_iter()
            .filter(|c| self.matches(c))
            .map(|c| (self.position(c), c))
            .collect();
        hits.sort_by(|a, b| self.compare(&a.0, &b.0));
        hits.into_iter().map(|(_, c)| c).collect()
    }

    /// A stable fingerprint of the query (and agent), so a cursor can only continue the
    /// query it came from.
    pub fn fingerprint(&self, agent: &str) -> u64 {
        let mut filters: Vec<String> = self
            .filters
            .iter()
            .map(|f| format!("{}|{:?}", f.field, f.op))
            .collect();
        filters.sort();
        let text = format!(
            "{agent}\n{:?}\n{}\n{}\n{:?}",
            self.terms, self.sort_field, self.descending, filters
        );
        // FNV-1a: stable across builds and platforms, unlike std's hasher.
        text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    }

    /// The opaque cursor that continues after `after`.
    pub fn cursor(&self, agent: &str, after: &Position) -> String {
        let mut bytes = vec![1u8];
        bytes.extend(self.fingerprint(agent).to_be_bytes());
        bytes.extend(after.id.to_be_bytes());
        match &after.key {
            Some(key) => {
                bytes.push(1);
                bytes.extend(key);
            }
            None => bytes.push(0),
        }
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Reads a cursor back; it must come from this same query.
    pub fn resume(&self, agent: &str, cursor: &str) -> Result<Position, &'static str> {
        let bad = "is not a cursor returned by this list";
        if !cursor.len().is_multiple_of(2) || cursor.len() < 36 {
            return Err(bad);
        }
        let bytes: Option<Vec<u8>> = (0..cursor.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(cursor.get(i..i + 2)?, 16).ok())
            .collect();
        let bytes = bytes.ok_or(bad)?;
        let (head, rest) = bytes.split_at(17);
        let fingerprint = u64::from_be_bytes(head[1..9].try_into().map_err(|_| bad)?);
        let id = u64::from_be_bytes(head[9..17].try_into().map_err(|_| bad)?);
        if head[0] != 1 {
            return Err(bad);
        }
        if fingerprint != self.fingerprint(agent) {
            return Err("belongs to a different query (q, sort and filters must stay the same)");
        }
        let key = match rest.split_first() {
            Some((1, key)) => Some(key.to_vec()),
            Some((0, [])) => None,
            _ => return Err(bad),
        };
        Ok(Position { key, id })
    }
}

/// One `filter[...]` parameter; `filter[tags]=a,b` is one filter per name.
fn parse_filter(
    rest: &str,
    value: &str,
    schema: &BTreeMap<String, AttrType>,
    phone: &PhoneRules,
) -> Result<Vec<Filter>, String> {
    let (field, op) = match rest.split_once(']') {
        Some((field, "")) => (field, None),
        Some((field, tail)) => match tail.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            Some(op) => (field, Some(op)),
            None => return Err("must look like filter[field] or filter[field][op]".into()),
        },
        None => return Err("must look like filter[field] or filter[field][op]".into()),
    };
    let kind = field_kind(field, schema).ok_or_else(|| {
        format!("unknown field \"{field}\": use a core field ({}) or a defined custom_attributes.<name>", CORE_FIELDS.join(", "))
    })?;
    if let (Kind::Names(names_kind), None) = (kind, op) {
        let names: Vec<&str> = value
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect();
        if names.is_empty() {
            return Err("must name at least one".into());
        }
        // Every contact is in the list `all`: naming it filters nothing.
        return Ok(names
            .into_iter()
            .filter(|n| !(names_kind == LabelKind::List && label::is_all(n)))
            .map(|n| Filter {
                field: field.to_owned(),
                op: Op::Eq(label::fold(n).into_bytes()),
            })
            .collect());
    }
    if kind == Kind::Flag && op == Some("ne") {
        return Ok(vec![Filter {
            field: field.to_owned(),
            op: Op::Ne(value_key(kind, value, phone)?),
        }]);
    }
    if !kind.sortable() && op.is_some() {
        let ne = if kind == Kind::Flag {
            format!(" or filter[{field}][ne]=value")
        } else {
            String::new()
        };
        return Err(format!("\"{field}\" takes only filter[{field}]=value{ne}"));
    }
    let op = match op {
        None => Op::Eq(value_key(kind, value, phone)?),
        Some("exists") => match value {
            "true" => Op::Exists(true),
            "false" => Op::Exists(false),
            _ => return Err("must be true or false".into()),
        },
        Some(op) => {
            let cmp = match op {
                "gt" => Cmp::Gt,
                "gte" => Cmp::Gte,
                "lt" => Cmp::Lt,
                "lte" => Cmp::Lte,
                _ => {
                    return Err(format!(
                        "unknown operator \"{op}\": use gt, gte, lt, lte or exists"
                    ))
                }
            };
            if !orderable(kind) {
                return Err("gt, gte, lt and lte apply only to numbers and dates".into());
            }
            Op::Cmp(cmp, value_key(kind, value, phone)?)
        }
    };
    // A phone number is looked up by its E.164 form, the contact's `phone`.
    let field = if kind == Kind::Phone { "phone" } else { field };
    Ok(vec![Filter {
        field: field.to_owned(),
        op,
    }])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    fn schema() -> BTreeMap<String, AttrType> {
        [
            ("ltv", AttrType::Number),
            ("vip", AttrType::Boolean),
            ("seen", AttrType::Date),
            ("plan", AttrType::Text),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    #[test]
    fn parses_sort_filters_and_terms() {
        let q = Query::parse(
            &params(&[
                ("q", "Sam  RIV"),
                ("sort", "-custom_attributes.ltv"),
                ("filter[custom_attributes.ltv][gte]", "10"),
                ("filter[email][exists]", "true"),
            ]),
            &schema(),
            &PhoneRules::default(),
        )
        .unwrap();
        assert_eq!(q.terms, ["sam", "riv"]);
        assert_eq!(
            (q.sort_field.as_str(), q.descending),
            ("custom_attributes.ltv", true)
        );
        assert_eq!(q.filters.len(), 2);
    }

    #[test]
    fn reports_each_bad_parameter_by_name() {
        let err = Query::parse(
            &params(&[
                ("sort", "favourite"),
                ("filter[nope]", "1"),
                ("filter[custom_attributes.ltv]", "abc"),
                ("filter[name][gt]", "a"),
                ("filter[vip][exists]", "maybe"),
                ("filter[custom_attributes.vip][exists]", "maybe"),
            ]),
            &schema(),
            &PhoneRules::default(),
        )
        .unwrap_err();
        let fields: Vec<_> = err.into_vec().into_iter().map(|i| i.field).collect();
        assert_eq!(
            fields,
            [
                "sort",
                "filter[nope]",
                "filter[custom_attributes.ltv]",
                "filter[name][gt]",
                "filter[vip][exists]",
                "filter[custom_attributes.vip][exists]"
            ]
        );
    }

    #[test]
    fn cursors_round_trip_and_refuse_other_queries() {
        let q = Query::parse(
            &params(&[("sort", "name")]),
            &schema(),
            &PhoneRules::default(),
        )
        .unwrap();
        let at = Position {
            key: Some(b"sam".to_vec()),
            id: 7,
        };
        let cursor = q.cursor("default", &at);
        assert_eq!(q.resume("default", &cursor), Ok(at));
        let missing = Position { key: None, id: 9 };
        assert_eq!(
            q.resume("default", &q.cursor("default", &missing)),
            Ok(missing)
        );
        let other = Query::parse(
            &params(&[("sort", "-name")]),
            &schema(),
            &PhoneRules::default(),
        )
        .unwrap();
        assert!(other.resume("default", &cursor).is_err());
        assert!(q.resume("other", &cursor).is_err());
        assert!(q.resume("default", "zz").is_err());
        assert!(q.resume("default", &cursor[..cursor.len() - 1]).is_err());
    }

    #[test]
    fn missing_values_sort_last_both_ways() {
        let mut q = Query::default();
        let a = Position {
            key: Some(vec![1]),
            id: 5,
        };
        let none = Position { key: None, id: 1 };
        assert_eq!(q.compare(&a, &none), Ordering::Less);
        q.descending = true;
        assert_eq!(q.compare(&a, &none), Ordering::Less);
    }
}
