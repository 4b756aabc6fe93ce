//! The change feed's entries: what happened to one contact in one commit, numbered per
//! agent in commit order.

use serde_json::{json, Value};

use super::Contact;

/// What a change did to its contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Created,
    Updated,
    Deleted,
}

impl ChangeKind {
    /// The wire name (`type` of a feed entry).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Deleted => "deleted",
        }
    }
}

/// One entry of an agent's change feed.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The agent's sequence number: 1, 2, 3… in commit order, with no gaps.
    pub seq: u64,
    pub kind: ChangeKind,
    /// When it was committed, Unix seconds.
    pub at: i64,
    /// The contact's external id after the change (before it, for a delete).
    pub external_id: String,
    /// For an update, the fields it changed (see [`changed_fields`]); empty otherwise.
    pub changed: Vec<String>,
    /// The contact as the change left it; `None` for a delete.
    pub contact: Option<Contact>,
}

impl Change {
    /// The wire form: `{"seq","type","at","external_id","changed","contact"}`, without
    /// `contact` for a delete.
    pub fn to_json(&self) -> Value {
        let mut obj = json!({
            "seq": self.seq,
            "type": self.kind.as_str(),
            "at": self.at,
            "external_id": self.external_id,
            "changed": self.changed,
        });
        if let (Some(contact), Some(map)) = (&self.contact, obj.as_object_mut()) {
            map.insert("contact".into(), contact.to_json());
        }
        obj
    }
}

/// The wire names of the fields that differ between `before` and `after`: top-level
/// fields by name, custom attributes one by one as `custom_attributes.<name>`. What
/// the server keeps up by itself (`updated_at`, the number's E.164 form) is left out.
pub fn changed_fields(before: &Contact, after: &Contact) -> Vec<String> {
    let mut changed = Vec::new();
    let mut field = |name: &str, differs: bool| {
        if differs {
            changed.push(name.to_owned());
        }
    };
    field("external_id", before.external_id != after.external_id);
    field("name", before.name != after.name);
    field("email", before.email != after.email);
    field("phonenumber", before.phonenumber != after.phonenumber);
    field(
        "stripe_accounts",
        before.stripe_accounts != after.stripe_accounts,
    );
    field("tags", before.tags != after.tags);
    field("lists", before.lists != after.lists);
    field("optin", before.optin != after.optin);
    field(
        "incoming_blocked",
        before.incoming_blocked != after.incoming_blocked,
    );
    let (old, new) = (&before.custom_attributes, &after.custom_attributes);
    let mut names: Vec<&String> = old.keys().chain(new.keys()).collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        if old.get(name) != new.get(name) {
            changed.push(format!("custom_attributes.{name}"));
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AttrValue;

    fn contact() -> Contact {
        Contact {
            id: 7,
            external_id: "u1".into(),
            name: Some("Ada".into()),
            ..Contact::default()
        }
    }

    #[test]
    fn an_unchanged_contact_has_no_changed_fields() {
        let mut after = contact();
        after.updated_at += 10;
        after.phone = Some("+4915112345678".into());
        assert!(changed_fields(&contact(), &after).is_empty());
    }

    #[test]
    fn changed_fields_name_each_field_and_each_attribute() {
        let mut before = contact();
        before
            .custom_attributes
            .insert("plan".into(), AttrValue::Text("free".into()));
        before
            .custom_attributes
            .insert("seats".into(), AttrValue::Int(3));
        let mut after = before.clone();
        after.name = None;
        after.email = Some("ada@example.com".into());
        after.tags = vec!["vip".into()];
        after.optin = Some(true);
        after
            .custom_attributes
            .insert("plan".into(), AttrValue::Text("pro".into()));
        after.custom_attributes.remove("seats");
        after
            .custom_attributes
            .insert("ltv".into(), AttrValue::Float(1.5));
        assert_eq!(
            changed_fields(&before, &after),
            [
                "name",
                "email",
                "tags",
                "optin",
                "custom_attributes.ltv",
                "custom_attributes.plan",
                "custom_attributes.seats",
            ]
        );
    }

    #[test]
    fn a_delete_has_no_contact_on_the_wire() {
        let change = Change {
            seq: 3,
            kind: ChangeKind::Deleted,
            at: 100,
            external_id: "u1".into(),
            changed: vec![],
            contact: None,
        };
        assert_eq!(
            change.to_json(),
            json!({"seq":3,"type":"deleted","at":100,"external_id":"u1","changed":[]})
        );
        let created = Change {
            kind: ChangeKind::Created,
            contact: Some(contact()),
            ..change
        };
        assert_eq!(created.to_json()["contact"]["external_id"], "u1");
    }
}
