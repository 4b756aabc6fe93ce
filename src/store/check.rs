//! `contactd check`: verifies that every index agrees with the contacts table.
//!
//! For each contact it recomputes the entries it should have (id index, email index)
//! and looks each one up; then it counts each agent's entries in every index. Every
//! expected entry present and the counts equal means the index holds exactly the
//! expected entries, without loading a contact per index entry.

use std::collections::HashMap;

use redb::{ReadTransaction, ReadableTable};

use super::codec::{decode_agent, decode_contact};
use super::tables::{AGENTS, CONTACTS, CONTACTS_BY_EMAIL, CONTACTS_BY_ID};
use super::StoreError;

/// Most problems listed; the count covers all.
const MAX_LISTED: usize = 100;

/// What `check` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub agents: u64,
    pub contacts: u64,
    pub index_entries: u64,
    pub problem_count: u64,
    /// The first problems, one line each.
    pub problems: Vec<String>,
}

impl CheckReport {
    fn problem(&mut self, text: String) {
        self.problem_count += 1;
        if self.problems.len() < MAX_LISTED {
            self.problems.push(text);
        }
    }
}

/// Expected entry counts of one agent.
#[derive(Default)]
struct Expected {
    contacts: u64,
    emails: u64,
}

pub fn run(txn: &ReadTransaction) -> Result<CheckReport, StoreError> {
    let contacts = txn.open_table(CONTACTS)?;
    let by_id = txn.open_table(CONTACTS_BY_ID)?;
    let by_email = txn.open_table(CONTACTS_BY_EMAIL)?;
    let mut report = CheckReport::default();
    let mut expected: HashMap<String, Expected> = HashMap::new();

    for row in contacts.iter()? {
        let (key, value) = row?;
        let (agent, ext) = key.value();
        report.contacts += 1;
        let exp = expected.entry(agent.to_owned()).or_default();
        exp.contacts += 1;
        let contact = match decode_contact(value.value()) {
            Ok(c) => c,
            Err(err) => {
                report.problem(format!("{agent}/{ext}: record does not decode: {err}"));
                continue;
            }
        };
        if contact.external_id != ext {
            report.problem(format!(
                "{agent}/{ext}: the record says external_id '{}'",
                contact.external_id
            ));
        }
        match by_id.get((agent, contact.id))? {
            Some(v) if v.value() == ext => {}
            other => report.problem(format!(
                "{agent}/{ext}: contacts_by_id[{}] is {:?}, expected '{ext}'",
                contact.id,
                other.map(|v| v.value().to_owned())
            )),
        }
        if let Some(email) = contact.email_key() {
            exp.emails += 1;
            match by_email.get((agent, email.as_str()))? {
                Some(v) if v.value() == ext => {}
                other => report.problem(format!(
                    "{agent}/{ext}: contacts_by_email['{email}'] is {:?}, expected '{ext}'",
                    other.map(|v| v.value().to_owned())
                )),
            }
        }
    }

    for row in txn.open_table(AGENTS)?.iter()? {
        let (key, value) = row?;
        let agent = key.value();
        report.agents += 1;
        let exp = expected.remove(agent).unwrap_or_default();
        let stored = decode_agent(agent, value.value())?.contact_count;
        if stored != exp.contacts {
            report.problem(format!(
                "agent {agent}: its contact count says {stored}, the contacts table holds {}",
                exp.contacts
            ));
        }
        let ids = by_id.range((agent, 0)..=(agent, u64::MAX))?.count() as u64;
        if ids != exp.contacts {
            report.problem(format!(
                "agent {agent}: contacts_by_id holds {ids} entries, expected {}",
                exp.contacts
            ));
        }
        let mut emails = 0;
        for row in by_email.range((agent, "")..)? {
            if row?.0.value().0 != agent {
                break;
            }
            emails += 1;
        }
        if emails != exp.emails {
            report.problem(format!(
                "agent {agent}: contacts_by_email holds {emails} entries, expected {}",
                exp.emails
            ));
        }
        report.index_entries += ids + emails;
    }
    let mut orphans: Vec<_> = expected.into_keys().collect();
    orphans.sort();
    for agent in orphans {
        report.problem(format!(
            "contacts of agent '{agent}' exist but the agent does not"
        ));
    }
    Ok(report)
}
