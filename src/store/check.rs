//! `contactd check`: verifies a data dir without changing it. It opens the file
//! read-only, reads every table past any damage (see `scan`), checks every record's
//! checksum, and verifies that every index agrees with the contact records.
//!
//! For each contact it recomputes the entries it should have (external-id index, email
//! index, sort index, word index, field counts) and looks up the B-tree ones; then it
//! counts each agent's entries in every index. Every expected entry present and the
//! counts equal means the index holds exactly the expected entries, without loading a
//! contact per index entry.
//!
//! The sort and word indexes (log-structured, see `lsm`) are read in one ordered pass
//! per agent instead of a lookup per entry: the count and a sum of hashes of the keys
//! read must equal those of the keys expected. Only when they differ is the agent's
//! expected set built (sorted once) and compared with the index in one merge pass, to
//! name the differences. Everything is linear in the contacts, but for sorting.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::path::Path;
use std::sync::Arc;

use redb::{ReadOnlyDatabase, ReadTransaction, ReadableDatabase, ReadableTable};

use super::blocks;
use super::codec::{decode_agent, decode_attribute, decode_key, decode_stored_contact};
use super::damage::{unpanic, MARKER};
use super::index::{
    counted_fields, keys, name_dictionary_holds, name_words, pending_block, sort_keys, word_keys,
    Held, Index, IndexView, Slot, RUN_PREFIX,
};
use super::redb_store::DB_FILE;
use super::scan::{walk_numbers, walk_pairs, Hints};
use super::tables::{
    AGENTS, API_KEYS, CONTACTS, CONTACTS_BY_EMAIL, CONTACTS_BY_EXTERNAL_ID, CUSTOM_ATTRIBUTES,
    FIELD_COUNTS, INDEX_VERSION, META, META_INDEX_VERSION, META_NEXT_CONTACT_ID,
    META_SCHEMA_VERSION, META_WAL_CHECKPOINT, NAME_INFIXES, SCHEMA_VERSION,
};
use super::wal;
use super::StoreError;
use crate::domain::{ids, Contact};

/// Most problems listed; the count covers all.
const MAX_LISTED: usize = 100;

/// What `check` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub agents: u64,
    pub contacts: u64,
    pub index_entries: u64,
    pub problem_count: u64,
    /// How many of the problems are damage: unreadable pages, records that fail their
    /// checksum or name another key.
    pub damage_count: u64,
    /// The first problems, one line each; damage first says so.
    pub problems: Vec<String>,
    /// What is worth knowing but not wrong (writes waiting in the log).
    pub notes: Vec<String>,
    /// Where the file's space goes.
    pub space: Space,
}

/// The data file's size and each table's share of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Space {
    /// The file's length.
    pub file_bytes: u64,
    /// What the file takes on disk: less than its length where redb reserved pages it
    /// has not written yet.
    pub disk_bytes: u64,
    /// Every table, largest first.
    pub tables: Vec<TableSpace>,
}

/// One table's pages.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TableSpace {
    pub table: String,
    pub entries: u64,
    /// Its B-tree's pages: leaves and branches, or the keys and values stored when
    /// they are more (redb keeps a large value on pages of its own, which its page
    /// counts leave out; the index runs' chunks are such values).
    pub page_bytes: u64,
    /// The keys and values themselves.
    pub stored_bytes: u64,
}

impl CheckReport {
    pub(super) fn problem(&mut self, text: String) {
        self.problem_count += 1;
        if self.problems.len() < MAX_LISTED {
            self.problems.push(text);
        }
    }

    pub(super) fn damage(&mut self, text: String) {
        self.damage_count += 1;
        self.problem(format!("damaged: {text}"));
    }
}

/// Opens the data dir's file read-only: nothing is written to it, whatever it holds.
pub fn open_read_only(data_dir: &Path) -> Result<ReadOnlyDatabase, StoreError> {
    let path = data_dir.join(DB_FILE);
    if !path.exists() {
        return Err(StoreError::Backend(format!(
            "{} does not exist",
            path.display()
        )));
    }
    match redb::Builder::new()
        .set_cache_size(256 << 20)
        .open_read_only(&path)
    {
        Ok(db) => Ok(db),
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(super::data_dir::already_open(data_dir)),
        Err(redb::DatabaseError::RepairAborted) => Err(StoreError::Backend(format!(
            "{} was not closed cleanly (the server was killed or crashed): start `contactd serve` on it once, which repairs the file and applies its log, stop it, and check again; or salvage it",
            path.display()
        ))),
        Err(err) => Err(err.into()),
    }
}

/// Checks the data dir without changing it; `progress` hears how many contacts were
/// checked so far.
pub fn run_offline(data_dir: &Path, progress: &dyn Fn(u64)) -> Result<CheckReport, StoreError> {
    let db = open_read_only(data_dir)?;
    let txn = db.begin_read()?;
    let checkpoint = unpanic("the meta table", || check_versions(&txn))?;
    let mut report = CheckReport::default();
    check_log(data_dir, checkpoint, &mut report);
    if let Ok(text) = std::fs::read_to_string(data_dir.join(MARKER)) {
        report.damage(format!(
            "the data dir is marked damaged ({MARKER}): {}",
            text.trim()
        ));
    }
    // The index changes of the last writes, waiting in the journal: a store opened on
    // the dir would index them again, so they count as indexed.
    let held = match unpanic("the index journal", || pending_block(&txn)) {
        Ok(block) => {
            let slot = Arc::new(Slot::default());
            slot.fill(Ok(block));
            Held {
                slots: vec![(0, slot)],
                cache: None,
            }
        }
        Err(err) => {
            report.damage(format!("the index journal: {err}"));
            Held::default()
        }
    };
    // Damage where a table's root should be stops the walk; what was found stands.
    if let Err(err) = unpanic("the check", || run(&txn, &held, progress, &mut report)) {
        report.damage(format!("the check stopped early: {err}"));
    }
    let path = data_dir.join(DB_FILE);
    report.space = unpanic("the tables' statistics", || space(&txn, &path)).unwrap_or_else(|err| {
        report
            .notes
            .push(format!("the tables' sizes could not be read: {err}"));
        Space::default()
    });
    Ok(report)
}

/// The file's size and every table's pages.
fn space(txn: &ReadTransaction, path: &Path) -> Result<Space, StoreError> {
    use redb::ReadableTableMetadata;
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|err| StoreError::Backend(err.to_string()))?;
    let mut tables: Vec<TableSpace> = Vec::new();
    for handle in txn.list_tables()? {
        let table = txn.open_untyped_table(handle)?;
        let stats = table.stats()?;
        // The index's runs (one table each) count as one.
        let name = redb::TableHandle::name(&table);
        let name = if name.starts_with(RUN_PREFIX) {
            format!("{RUN_PREFIX}*")
        } else {
            name.to_owned()
        };
        let space = TableSpace {
            table: name,
            entries: table.len()?,
            page_bytes: ((stats.leaf_pages() + stats.branch_pages()) * super::file::PAGE)
                .max(stats.stored_bytes() + stats.metadata_bytes()),
            stored_bytes: stats.stored_bytes(),
        };
        match tables.iter_mut().find(|t| t.table == space.table) {
            Some(sum) => {
                sum.entries += space.entries;
                sum.page_bytes += space.page_bytes;
                sum.stored_bytes += space.stored_bytes;
            }
            None => tables.push(space),
        }
    }
    tables.sort_by(|a, b| {
        b.page_bytes
            .cmp(&a.page_bytes)
            .then_with(|| a.table.cmp(&b.table))
    });
    Ok(Space {
        file_bytes: meta.len(),
        disk_bytes: meta.blocks() * 512,
        tables,
    })
}

/// A data dir of an older layout is refused: its records are read by the upgrade that
/// `contactd serve` runs at open, and would otherwise all look damaged.
fn check_versions(txn: &ReadTransaction) -> Result<u64, StoreError> {
    let meta = txn.open_table(META)?;
    let get = |name| -> Result<Option<u64>, StoreError> { Ok(meta.get(name)?.map(|v| v.value())) };
    let schema = get(META_SCHEMA_VERSION)?;
    let index = get(META_INDEX_VERSION)?;
    if schema != Some(SCHEMA_VERSION) || index != Some(INDEX_VERSION) {
        return Err(StoreError::Incompatible(format!(
            "the data dir has schema version {schema:?} and index version {index:?}, this build {SCHEMA_VERSION} and {INDEX_VERSION}: start and stop `contactd serve` once to upgrade it, then check"
        )));
    }
    Ok(get(META_WAL_CHECKPOINT)?.unwrap_or(0))
}

/// The write-ahead log against the checkpoint: every record after it whole and
/// numbered on from it (read without cutting a torn tail off).
fn check_log(data_dir: &Path, checkpoint: u64, report: &mut CheckReport) {
    match wal::read(data_dir, checkpoint, false) {
        Ok(log) => {
            if !log.records.is_empty() {
                report.notes.push(format!(
                    "the write-ahead log holds {} writes after the last checkpoint (a crash); the server applies them when it starts, and this check does not see them",
                    log.records.len()
                ));
            }
            if log.torn > 0 {
                report.notes.push(format!(
                    "the write-ahead log ends in a record cut short ({} bytes, a crash while it was written); the server drops it when it starts",
                    log.torn
                ));
            }
        }
        Err(err) => report.damage(format!("the write-ahead log: {err}")),
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

/// Expected entries of one agent, and what its tables were found to hold.
#[derive(Default)]
struct Expected {
    contacts: u64,
    emails: u64,
    sort: Digest,
    words: Digest,
    fields: HashMap<String, u64>,
    /// Entries read from `contacts_by_external_id` and `contacts_by_email`.
    exts_found: u64,
    emails_found: u64,
    /// The block counts the contact records make.
    blocks: blocks::Deltas,
    /// The contacts' name words, which the name-word dictionary must hold.
    name_words: BTreeSet<String>,
}

/// The keys a contact should have in an index.
fn expected_keys(index: Index, agent: &str, contact: &Contact) -> BTreeSet<Vec<u8>> {
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
/// ones (built from its contacts, sorted once): one merge pass over both.
fn differences(
    txn: &ReadTransaction,
    view: &IndexView,
    index: Index,
    agent: &str,
    report: &mut CheckReport,
) -> Result<(), StoreError> {
    let contacts = txn.open_table(CONTACTS)?;
    let mut expected = Vec::new();
    for row in contacts.range((agent, 0)..=(agent, u64::MAX))? {
        let (key, value) = row?;
        if let Ok(contact) = decode_stored_contact(agent, key.value().1, value.value()) {
            expected.extend(expected_keys(index, agent, &contact));
        }
    }
    expected.sort_unstable();
    expected.dedup();
    let start = keys::prefix(&[agent.as_bytes()]);
    let end = keys::prefix_end(&start);
    let mut range = view.range(index, &start, Some(&end), false)?;
    let name = index_name(index);
    let mut want = expected.iter().peekable();
    while range.advance()? {
        let key = range.key();
        while let Some(missing) = want.next_if(|k| k.as_slice() < key) {
            report.problem(format!("agent {agent}: {name} lacks {}", describe(missing)));
        }
        if want.next_if(|k| k.as_slice() == key).is_none() {
            report.problem(format!(
                "agent {agent}: {name} has a stray entry {}",
                describe(key)
            ));
        }
    }
    for missing in want {
        report.problem(format!("agent {agent}: {name} lacks {}", describe(missing)));
    }
    Ok(())
}

/// Checks the snapshot `txn` into `report`; `held` are the unlogged blocks taken with
/// it. Damage is reported and read past; only a failure to open a table stops it.
pub fn run(
    txn: &ReadTransaction,
    held: &Held,
    progress: &dyn Fn(u64),
    report: &mut CheckReport,
) -> Result<(), StoreError> {
    let contacts = txn.open_table(CONTACTS)?;
    let by_ext = txn.open_table(CONTACTS_BY_EXTERNAL_ID)?;
    let by_email = txn.open_table(CONTACTS_BY_EMAIL)?;
    let names = txn.open_table(NAME_INFIXES)?;
    let view = IndexView::open(txn, held)?;
    let counts = txn.open_table(FIELD_COUNTS)?;
    let mut expected: HashMap<String, Expected> = HashMap::new();

    let agents = read_agents(txn, report)?;
    check_small_tables(txn, report)?;
    super::changes::check(txn, report)?;
    let agent_ids: Vec<String> = agents.iter().map(|(id, _)| id.clone()).collect();
    let ceiling = txn
        .open_table(META)?
        .get(META_NEXT_CONTACT_ID)?
        .map_or(u64::MAX, |v| v.value());

    // The external-id and email indexes, counted per agent, read past damage.
    for gap in walk_pairs(&by_ext, None, Hints::None, &mut |agent, _, _| {
        expected.entry(agent.to_owned()).or_default().exts_found += 1;
        true
    }) {
        report.damage(format!("contacts_by_external_id {gap}"));
    }
    for gap in walk_pairs(&by_email, None, Hints::None, &mut |agent, _, _| {
        expected.entry(agent.to_owned()).or_default().emails_found += 1;
        true
    }) {
        report.damage(format!("contacts_by_email {gap}"));
    }

    // Every contact: its record, and the entries it should have. Past damage in the
    // records, the walk resumes at the first contact number it can read.
    let mut max_id = 0u64;
    let gaps = walk_numbers(&contacts, &agent_ids, ceiling, &mut |agent, n, value| {
        report.contacts += 1;
        if report.contacts.is_multiple_of(10_000) {
            progress(report.contacts);
        }
        let exp = expected.entry(agent.to_owned()).or_default();
        exp.contacts += 1;
        exp.blocks.add(n, 1);
        max_id = max_id.max(n);
        let contact = match decode_stored_contact(agent, n, value.value()) {
            Ok(c) => c,
            Err(err) => {
                report.damage(format!("contact {agent}/{n}: {err}"));
                return;
            }
        };
        let ext = contact.external_id.as_str();
        if let Ok(canonical) = ids::external_id(ext) {
            if canonical != ext {
                report.problem(format!(
                    "{agent}/{ext:?}: the external id is not in NFC, and its NFC spelling {canonical:?} belongs to another contact; reach it as contact_{} and rename it",
                    contact.id
                ));
            }
        }
        let lookups = unpanic("an index lookup", || {
            let ext_entry = by_ext.get((agent, ext))?.map(|v| v.value());
            let email = contact.email_key();
            let email_entry = match &email {
                Some(key) => by_email
                    .get((agent, key.as_str()))?
                    .map(|v| v.value().to_owned()),
                None => None,
            };
            Ok((ext_entry, email, email_entry))
        });
        let (ext_entry, email, email_entry) = match lookups {
            Ok(found) => found,
            Err(err) => {
                report.damage(format!("the indexes of {agent}/{ext}: {err}"));
                return;
            }
        };
        if ext_entry != Some(n) {
            report.problem(format!(
                "{agent}/{ext}: contacts_by_external_id names contact {ext_entry:?}, expected {n}"
            ));
        }
        if let Some(email) = email {
            match email_entry {
                Some(holder) if holder == ext => exp.emails += 1,
                // Counted with the contact it names.
                Some(holder) => report.problem(format!(
                    "{agent}/{ext}: contacts_by_email['{email}'] names '{holder}' (two contacts with one email, equal under Unicode folding, or a damaged index)"
                )),
                None => {
                    exp.emails += 1;
                    report.problem(format!("{agent}/{ext}: contacts_by_email lacks '{email}'"));
                }
            }
        }
        for key in sort_keys(agent, &contact) {
            exp.sort.add(&key);
        }
        for key in word_keys(agent, &contact) {
            exp.words.add(&key);
        }
        exp.name_words.extend(name_words(&contact));
        for field in counted_fields(&contact) {
            *exp.fields.entry(field).or_default() += 1;
        }
    });
    for gap in gaps {
        report.damage(format!("contacts {gap}"));
    }
    progress(report.contacts);
    check_next_id(txn, max_id, report)?;

    let mut by_index: HashMap<&str, u64> = HashMap::new();
    for (agent, stored) in &agents {
        let exp = expected.remove(agent).unwrap_or_default();
        if let Some(stored) = stored {
            if *stored != exp.contacts {
                report.problem(format!(
                    "agent {agent}: its contact count says {stored}, the contact records hold {}",
                    exp.contacts
                ));
            }
        }
        if exp.exts_found != exp.contacts {
            report.problem(format!(
                "agent {agent}: contacts_by_external_id holds {} entries, expected {}",
                exp.exts_found, exp.contacts
            ));
        }
        if exp.emails_found != exp.emails {
            report.problem(format!(
                "agent {agent}: contacts_by_email holds {} entries, expected {}",
                exp.emails_found, exp.emails
            ));
        }
        for word in &exp.name_words {
            match unpanic("a name_infixes lookup", || {
                name_dictionary_holds(&names, agent, word)
            }) {
                Ok(true) => {}
                Ok(false) => report.problem(format!(
                    "agent {agent}: name_infixes lacks the name word '{word}'"
                )),
                Err(err) => report.damage(format!("agent {agent}: name_infixes: {err}")),
            }
        }
        for (index, want) in [(Index::Sort, exp.sort), (Index::Words, exp.words)] {
            let have = match unpanic("an index read", || digest(&view, index, agent)) {
                Ok(have) => have,
                Err(err) => {
                    report.damage(format!("agent {agent}: {}: {err}", index_name(index)));
                    continue;
                }
            };
            if have != want {
                if have.entries != want.entries {
                    report.problem(format!(
                        "agent {agent}: {} holds {} entries, expected {}",
                        index_name(index),
                        have.entries,
                        want.entries
                    ));
                }
                if let Err(err) = unpanic("an index read", || {
                    differences(txn, &view, index, agent, report)
                }) {
                    report.damage(format!("agent {agent}: {}: {err}", index_name(index)));
                }
            }
            report.index_entries += have.entries;
            *by_index.entry(index_name(index)).or_default() += have.entries;
        }
        check_field_counts(&counts, agent, exp.fields, report);
        check_blocks(txn, agent, &exp.blocks, report)?;
        report.index_entries += exp.exts_found + exp.emails_found;
    }
    // Entries outside every agent's range (an agent that no longer exists).
    for index in [Index::Sort, Index::Words] {
        let name = index_name(index);
        let all = unpanic("an index read", || {
            let mut range = view.range(index, &[], None, false)?;
            let mut all = 0u64;
            while range.advance()? {
                all += 1;
            }
            Ok(all)
        });
        match all {
            Ok(all) => {
                let listed = by_index.get(name).copied().unwrap_or_default();
                if all != listed {
                    report.problem(format!(
                        "{name} holds {} entries of agents that do not exist",
                        all.saturating_sub(listed)
                    ));
                }
            }
            Err(err) => report.damage(format!("{name}: {err}")),
        }
    }
    let mut orphans: Vec<_> = expected
        .into_iter()
        .filter(|(_, exp)| exp.contacts > 0)
        .map(|(agent, _)| agent)
        .collect();
    orphans.sort();
    for agent in orphans {
        report.problem(format!(
            "contacts of agent '{agent}' exist but the agent does not"
        ));
    }
    Ok(())
}

/// Every agent, with its stored contact count (`None`: its record is damaged).
fn read_agents(
    txn: &ReadTransaction,
    report: &mut CheckReport,
) -> Result<Vec<(String, Option<u64>)>, StoreError> {
    let table = txn.open_table(AGENTS)?;
    let mut agents = Vec::new();
    let read = unpanic("a range read", || {
        for row in table.iter()? {
            let (key, value) = row?;
            let id = key.value().to_owned();
            let count = match decode_agent(&id, value.value()) {
                Ok(agent) => Some(agent.contact_count),
                Err(err) => {
                    report.damage(format!("agent {id}: {err}"));
                    None
                }
            };
            agents.push((id, count));
        }
        Ok(())
    });
    if let Err(err) = read {
        report.damage(format!(
            "agents: unreadable after {} agents: {err}",
            agents.len()
        ));
    }
    report.agents = agents.len() as u64;
    Ok(agents)
}

/// Keys and attribute definitions: every record's checksum.
fn check_small_tables(txn: &ReadTransaction, report: &mut CheckReport) -> Result<(), StoreError> {
    let keys = txn.open_table(API_KEYS)?;
    let read = unpanic("a range read", || {
        for row in keys.iter()? {
            let (digest, value) = row?;
            if let Err(err) = decode_key(digest.value(), value.value()) {
                report.damage(format!("an api key: {err}"));
            }
        }
        Ok(())
    });
    if let Err(err) = read {
        report.damage(format!("api_keys: {err}"));
    }
    let attributes = txn.open_table(CUSTOM_ATTRIBUTES)?;
    for gap in walk_pairs(&attributes, None, Hints::None, &mut |agent, name, value| {
        if let Err(err) = decode_attribute(agent, name, value.value()) {
            report.damage(format!("custom attribute {agent}/{name}: {err}"));
        }
        true
    }) {
        report.damage(format!("custom_attributes {gap}"));
    }
    Ok(())
}

/// The per-block counts must be what the contact records hold.
fn check_blocks(
    txn: &ReadTransaction,
    agent: &str,
    want: &blocks::Deltas,
    report: &mut CheckReport,
) -> Result<(), StoreError> {
    let table = txn.open_table(blocks::CONTACT_BLOCKS)?;
    let read = unpanic("a range read", || {
        let mut have = BTreeMap::new();
        for level in [1, 2] {
            for (block, count) in blocks::read_counts(&table, agent, level, 0, u64::MAX)? {
                have.insert((level, block), count);
            }
        }
        Ok(have)
    });
    let have = match read {
        Ok(have) => have,
        Err(err) => {
            report.damage(format!("contact_blocks of agent {agent}: {err}"));
            return Ok(());
        }
    };
    let want: BTreeMap<(u64, u64), u64> = want
        .counts()
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| (*k, n.unsigned_abs()))
        .collect();
    if have != want {
        let wrong = want.iter().filter(|(k, n)| have.get(k) != Some(n)).count()
            + have.keys().filter(|k| !want.contains_key(k)).count();
        report.problem(format!(
            "agent {agent}: contact_blocks differs from the contact records in {wrong} block(s)"
        ));
    }
    Ok(())
}

/// The next contact number must be above every number given out.
fn check_next_id(
    txn: &ReadTransaction,
    max_id: u64,
    report: &mut CheckReport,
) -> Result<(), StoreError> {
    let next = txn
        .open_table(META)?
        .get(META_NEXT_CONTACT_ID)?
        .map_or(1, |v| v.value());
    if max_id >= next {
        report.problem(format!(
            "meta next_contact_id is {next}, but contact {max_id} exists"
        ));
    }
    Ok(())
}

fn check_field_counts(
    counts: &redb::ReadOnlyTable<(&'static str, &'static str), u64>,
    agent: &str,
    mut fields: HashMap<String, u64>,
    report: &mut CheckReport,
) {
    let read = unpanic("a range read", || {
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
        Ok(())
    });
    if let Err(err) = read {
        report.damage(format!("field_counts of agent {agent}: {err}"));
        return;
    }
    for (field, want) in fields {
        report.problem(format!(
            "agent {agent}: field_counts['{field}'] is missing, expected {want}"
        ));
    }
}
