//! Tags and lists: names an agent defines and puts on contacts. Both follow the same
//! rules (see [`check_name`]) and are compared case-insensitively, shown as first
//! defined. A contact record holds the names as defined; renaming or deleting one
//! rewrites the contacts that carry it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::issues::{json_type, Issues};

/// Longest tag or list name, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// Most tags, or lists, on one contact.
pub const MAX_PER_CONTACT: usize = 100;
/// The list every contact is in: implicit, never stored.
pub const ALL: &str = "all";

/// Which of the two a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LabelKind {
    Tag,
    List,
}

impl LabelKind {
    /// `tag` / `list`, for messages.
    pub fn noun(self) -> &'static str {
        match self {
            Self::Tag => "tag",
            Self::List => "list",
        }
    }

    /// The contact field and query field: `tags` / `lists`.
    pub fn field(self) -> &'static str {
        match self {
            Self::Tag => "tags",
            Self::List => "lists",
        }
    }
}

/// A defined tag or list and how many contacts carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub name: String,
    pub count: u64,
}

/// Checks a name: 1–64 characters, no `,` or `;` (they separate names in filters and
/// CSV), no control characters, no surrounding spaces; `all` is no list's name.
pub fn check_name(kind: LabelKind, name: &str) -> Result<(), String> {
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(format!("must be 1 to {MAX_NAME_CHARS} characters"));
    }
    if name.contains([',', ';']) || name.chars().any(char::is_control) {
        return Err("must not contain ',' ';' or control characters".into());
    }
    if name.trim() != name {
        return Err("must not start or end with spaces".into());
    }
    if kind == LabelKind::List && is_all(name) {
        return Err("'all' is the implicit list of every contact".into());
    }
    Ok(())
}

/// The form two names that are one name share: lower-cased.
pub fn fold(name: &str) -> String {
    name.to_lowercase()
}

/// Whether `name` is the implicit list `all`.
pub fn is_all(name: &str) -> bool {
    name.eq_ignore_ascii_case(ALL)
}

/// What a write does to a contact's tags or lists: replace the set (when `set`), then
/// add, then remove. Names are as sent; the writer resolves them against the agent's
/// definitions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelEdit {
    pub set: Option<Vec<String>>,
    pub add: Vec<String>,
    pub remove: Vec<String>,
}

impl LabelEdit {
    /// Whether the edit changes nothing.
    pub fn is_empty(&self) -> bool {
        self.set.is_none() && self.add.is_empty() && self.remove.is_empty()
    }

    /// Applies the edit to `current` (names as defined, each once); `resolve` maps a
    /// sent name to its defined form, or `None` to leave it out.
    pub fn apply(
        &self,
        current: &[String],
        resolve: &mut dyn FnMut(&str) -> Option<String>,
    ) -> Vec<String> {
        let mut out: Vec<String> = match &self.set {
            Some(names) => Vec::with_capacity(names.len()),
            None => current.to_vec(),
        };
        let mut push = |out: &mut Vec<String>, name: &str| {
            if let Some(defined) = resolve(name) {
                let key = fold(&defined);
                if !out.iter().any(|n| fold(n) == key) {
                    out.push(defined);
                }
            }
        };
        for name in self.set.iter().flatten().chain(&self.add) {
            push(&mut out, name);
        }
        for name in &self.remove {
            let key = fold(name);
            out.retain(|n| fold(n) != key);
        }
        out
    }
}

/// Parses an array of names (`tags`, `lists`) at `path`: each checked, at most
/// [`MAX_PER_CONTACT`]. `null` is the empty set. For lists, `all` is accepted and left
/// out (every contact is in it).
pub fn parse_names(
    kind: LabelKind,
    value: &Value,
    path: &str,
    issues: &mut Issues,
) -> Option<Vec<String>> {
    let items = match value {
        Value::Null => return Some(Vec::new()),
        Value::Array(items) => items,
        other => {
            issues.push(
                path,
                format!("must be an array of names, got {}", json_type(other)),
            );
            return None;
        }
    };
    if items.len() > MAX_PER_CONTACT {
        issues.push(path, format!("must have at most {MAX_PER_CONTACT} names"));
        return None;
    }
    let before = issues.len();
    let mut names = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("{path}[{i}]");
        match item {
            Value::String(name) if kind == LabelKind::List && is_all(name) => {}
            Value::String(name) => match check_name(kind, name) {
                Ok(()) => names.push(name.clone()),
                Err(msg) => issues.push(at, msg),
            },
            other => issues.push(at, format!("must be a string, got {}", json_type(other))),
        }
    }
    (issues.len() == before).then_some(names)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_follow_the_rules() {
        assert!(check_name(LabelKind::Tag, "VIP customer").is_ok());
        assert!(check_name(LabelKind::Tag, "a,b").is_err());
        assert!(check_name(LabelKind::Tag, "a;b").is_err());
        assert!(check_name(LabelKind::Tag, " vip").is_err());
        assert!(check_name(LabelKind::Tag, "").is_err());
        assert!(check_name(LabelKind::Tag, &"x".repeat(65)).is_err());
        assert!(check_name(LabelKind::Tag, "all").is_ok());
        assert!(check_name(LabelKind::List, "All").is_err());
    }

    #[test]
    fn edits_replace_then_add_then_remove_comparing_case_insensitively() {
        let edit = LabelEdit {
            set: None,
            add: vec!["Gold".into(), "gold".into(), "new".into()],
            remove: vec!["OLD".into()],
        };
        let current = vec!["old".to_owned(), "GOLD".to_owned()];
        let mut resolve = |n: &str| Some(n.to_owned());
        assert_eq!(edit.apply(&current, &mut resolve), ["GOLD", "new"]);
        let replace = LabelEdit {
            set: Some(vec!["a".into(), "skip".into()]),
            ..LabelEdit::default()
        };
        let mut strip = |n: &str| (n != "skip").then(|| n.to_uppercase());
        assert_eq!(replace.apply(&current, &mut strip), ["A"]);
    }

    #[test]
    fn parsing_names_reports_each_bad_one() {
        let mut issues = Issues::new();
        assert_eq!(
            parse_names(
                LabelKind::List,
                &json!(["all", "vip"]),
                "lists",
                &mut issues
            ),
            Some(vec!["vip".to_owned()])
        );
        assert!(parse_names(
            LabelKind::Tag,
            &json!(["ok", 3, "a,b"]),
            "tags",
            &mut issues
        )
        .is_none());
        let fields: Vec<_> = issues.into_vec().into_iter().map(|i| i.field).collect();
        assert_eq!(fields, ["tags[1]", "tags[2]"]);
    }
}
