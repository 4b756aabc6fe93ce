//! `contactd check`: verifies that every index agrees with the contacts table.
//!
//! For each contact it recomputes the entries it should have (id index, email index,
//! sort index, word index, field counts) and looks up the B-tree ones; then it counts
//! each agent's entries in every index. Every expected entry present and the counts
//! equal means the index holds exactly the expected entries, without loading a contact
//! per index entry.
//!
//! The sort and word indexes (log-structured, see `lsm`) are read in one ordered pass
//! per agent instead of a lookup per entry: the count and a sum of hashes of the keys
//! read must equal those of the keys expected. Only when they differ is the agent's
//! expected set built in memory and compared key by key, to name the differences.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};

use redb::{ReadTransaction, ReadableTable};

use super::codec::{decode_agent, decode_contact};
use super::index::{counted_fields, sort_keys, word_keys};
use super::keys;
use super::lsm::unlogged::Held;
use super::lsm::{Index, IndexView};
use super::tables::{AGENTS, CONTACTS, CONTACTS_BY_EMAIL, CONTACTS_BY_ID, FIELD_COUNTS};
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

/// The entries of one agent in one index, summarised: how many, and the wrapping sum
/// of their hashes (equal sets give equal sums).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Digest {
    entries: u64,
    hash: u64,
}

impl Digest {
    fn add(&mut self, key: &[u8]) {
        self.entries += 1;
        let hasher = BuildHasherDefault::<DefaultHasher>::default();
        self.hash = self.hash.wrapping_add(hasher.hash_one(key));
    }
}

/// Expected entries of one agent.
#[derive(Default)]
struct Expected {
    contacts: u64,
    emails: u64,
    sort: Digest,
    words: Digest,
    fields: HashMap<String, u64>,
}

/// The keys a contact should have in an index.
fn expected_keys(index: Index, agent: &str, contact: &crate::domain::Contact) -> BTreeSet<Vec<u8>> {
    match index {
        Index::Sort => sort_keys(agent, contact),
        Index::Words => word_keys(agent, contact),
    }
}

fn index_name(index: Index) -> &'static str {
    match index {
        Index::Sort => "sort_index",
        Index::Words => "word_index",
    }
}

/// A readable name for a byte-keyed index entry: its segments after the agent's.
fn describe(key: &[u8]) -> String {
    let mut parts = Vec::new();
    let mut rest = key;
    while let Some((seg, tail)) = keys::split_seg(rest) {
        parts.push(String::from_utf8_lossy(&seg).into_owned());
        rest = tail;
    }
    let id = keys::id_of(key).unwrap_or_default();
    format!("{:?} of contact {id}", parts.get(1..).unwrap_or_default())
}

/// The agent's entries in an index, summarised.
fn digest(view: &IndexView, index: Index, agent: &str) -> Result<Digest, StoreError> {
    let start = keys::prefix(&[agent.as_bytes()]);
    let end = keys::prefix_end(&start);
    let mut range = view.range(index, &start, Some(&end), false)?;
    let mut digest = Digest::default();
    while range.advance()? {
        digest.add(range.key());
    }
    Ok(digest)
}

/// Names the differences between the agent's entries in an index and the expected
/// ones (built from its contacts).
fn differences(
    txn: &ReadTransaction,
    view: &IndexView,
    index: Index,
    agent: &str,
    report: &mut CheckReport,
) -> Result<(), StoreError> {
    let contacts = txn.open_table(CONTACTS)?;
    let mut expected = BTreeSet::new();
    for row in contacts.range((agent, "")..)? {
        let (key, value) = row?;
        if key.value().0 != agent {
            break;
        }
        if let Ok(contact) = decode_contact(value.value()) {
            expected.append(&mut expected_keys(index, agent, &contact));
        }
    }
    let start = keys::prefix(&[agent.as_bytes()]);
    let end = keys::prefix_end(&start);
    let mut range = view.range(index, &start, Some(&end), false)?;
    let name = index_name(index);
    while range.advance()? {
        if !expected.remove(range.key()) {
            report.problem(format!(
                "agent {agent}: {name} has a stray entry {}",
                describe(range.key())
            ));
        }
    }
    for key in expected {
        report.problem(format!("agent {agent}: {name} lacks {}", describe(&key)));
    }
    Ok(())
}

/// Checks the snapshot `txn`; `held` are the unlogged blocks taken with it.
pub fn run(txn: &ReadTransaction, held: &Held) -> Result<CheckReport, StoreError> {
    let contacts = txn.open_table(CONTACTS)?;
    let by_id = txn.open_table(CONTACTS_BY_ID)?;
    let by_email = txn.open_table(CONTACTS_BY_EMAIL)?;
    let view = IndexView::open(txn, held)?;
    let mut by_agents: HashMap<&str, u64> = HashMap::new();
    let counts = txn.open_table(FIELD_COUNTS)?;
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
        for key in sort_keys(agent, &contact) {
            exp.sort.add(&key);
        }
        for key in word_keys(agent, &contact) {
            exp.words.add(&key);
        }
        for field in counted_fields(&contact) {
            *exp.fields.entry(field).or_default() += 1;
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
        for (index, want) in [(Index::Sort, exp.sort), (Index::Words, exp.words)] {
            let have = digest(&view, index, agent)?;
            if have != want {
                if have.entries != want.entries {
                    report.problem(format!(
                        "agent {agent}: {} holds {} entries, expected {}",
                        index_name(index),
                        have.entries,
                        want.entries
                    ));
                }
                differences(txn, &view, index, agent, &mut report)?;
            }
            report.index_entries += have.entries;
            *by_agents.entry(index_name(index)).or_default() += have.entries;
        }
        let mut fields = exp.fields;
        for row in counts.range((agent, "")..)? {
            let (key, value) = row?;
            let (a, field) = key.value();
            if a != agent {
                break;
            }
            let want = fields.remove(field).unwrap_or_default();
            if value.value() != want {
                report.problem(format!(
                    "agent {agent}: field_counts['{field}'] is {}, expected {want}",
                    value.value()
                ));
            }
        }
        for (field, want) in fields {
            report.problem(format!(
                "agent {agent}: field_counts['{field}'] is missing, expected {want}"
            ));
        }
        report.index_entries += ids + emails;
    }
    // Entries outside every agent's range (an agent that no longer exists).
    for index in [Index::Sort, Index::Words] {
        let mut range = view.range(index, &[], None, false)?;
        let mut all = 0u64;
        while range.advance()? {
            all += 1;
        }
        let name = index_name(index);
        let listed = by_agents.get(name).copied().unwrap_or_default();
        if all != listed {
            report.problem(format!(
                "{name} holds {} entries of agents that do not exist",
                all.saturating_sub(listed)
            ));
        }
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
