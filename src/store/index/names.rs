//! The name-word dictionary that Pabbly's `name` substring filter reads: per agent, every
//! word of two characters or more that a contact's name has held, under each of its
//! infixes (`domain::search::visit_word_infixes`). A substring's pieces find the words
//! that contain them here; those words' ranges of the word index find the contacts.
//!
//! The dictionary only grows while the agent lives (a word stays when the last name that
//! held it changes): a word no contact holds any more finds no contact in the word
//! index. So a write adds to it only when a name brings a word the agent never had,
//! and otherwise costs one lookup per name word. It is kept in the write transaction,
//! in the redb table `name_infixes`, keyed `(agent_id, infix, word)` as
//! [`keys::prefix`] segments.

use std::collections::{BTreeSet, HashSet};

use redb::{ReadableTable, Table, WriteTransaction};

use super::keys;
use crate::domain::search::{visit_name_words, visit_word_infixes, INFIX_CHARS};
use crate::domain::Contact;
use crate::store::tables::NAME_INFIXES;
use crate::store::StoreError;

fn key(agent: &str, infix: &str, word: &str) -> Vec<u8> {
    keys::prefix(&[agent.as_bytes(), infix.as_bytes(), word.as_bytes()])
}

/// The entry that shows the dictionary holds `word`: its first infix.
fn marker(agent: &str, word: &str) -> Vec<u8> {
    let end = word
        .char_indices()
        .nth(INFIX_CHARS)
        .map_or(word.len(), |(at, _)| at);
    key(agent, &word[..end], word)
}

/// The name words of `contact` (two characters or more).
pub fn name_words(contact: &Contact) -> Vec<String> {
    let mut words = Vec::new();
    visit_name_words(contact, &mut |w| words.push(w.to_owned()));
    words
}

/// Adds the name words of the new side of `pairs` that the agent's dictionary lacks.
pub fn record<'c>(
    txn: &WriteTransaction,
    agent: &str,
    pairs: impl Iterator<Item = (Option<&'c Contact>, Option<&'c Contact>)>,
) -> Result<(), StoreError> {
    let mut table: Option<Table<&[u8], ()>> = None;
    let mut seen = HashSet::new();
    for (before, after) in pairs {
        let Some(after) = after else { continue };
        if after.name.is_none() || before.is_some_and(|b| b.name == after.name) {
            continue;
        }
        for word in name_words(after) {
            if !seen.insert(word.clone()) {
                continue;
            }
            let table = match &mut table {
                Some(table) => table,
                None => table.insert(txn.open_table(NAME_INFIXES)?),
            };
            if table.get(marker(agent, &word).as_slice())?.is_some() {
                continue;
            }
            let mut infixes = Vec::new();
            visit_word_infixes(&word, &mut |infix| infixes.push(key(agent, infix, &word)));
            for infix in infixes {
                table.insert(infix.as_slice(), ())?;
            }
        }
    }
    Ok(())
}

/// The words of `agent`'s dictionary that hold `piece` (a substring piece, see
/// `domain::search::substring_pieces`), sorted; `None` past `cap` words.
pub fn words_with(
    table: &impl ReadableTable<&'static [u8], ()>,
    agent: &str,
    piece: &str,
    cap: usize,
) -> Result<Option<Vec<String>>, StoreError> {
    let mut start = keys::prefix(&[agent.as_bytes()]);
    let agent_len = start.len();
    keys::push_escaped(&mut start, piece.as_bytes());
    let end = keys::successor(&start);
    let malformed = || StoreError::Corrupt("a malformed name_infixes key".into());
    let mut words = BTreeSet::new();
    let rows = match &end {
        Some(end) => table.range(start.as_slice()..end.as_slice())?,
        None => table.range(start.as_slice()..)?,
    };
    for row in rows {
        let row = row?;
        let key = row.0.value();
        let (_, rest) = keys::split_seg(&key[agent_len..]).ok_or_else(malformed)?;
        let (word, _) = keys::split_seg(rest).ok_or_else(malformed)?;
        let word = String::from_utf8(word).map_err(|_| malformed())?;
        if words.insert(word) && words.len() > cap {
            return Ok(None);
        }
    }
    Ok(Some(words.into_iter().collect()))
}

/// Whether the dictionary holds every infix of `word` for `agent` (what `contactd
/// check` asks of every name word).
pub fn holds(
    table: &impl ReadableTable<&'static [u8], ()>,
    agent: &str,
    word: &str,
) -> Result<bool, StoreError> {
    let mut infixes = Vec::new();
    visit_word_infixes(word, &mut |infix| infixes.push(key(agent, infix, word)));
    for infix in infixes {
        if table.get(infix.as_slice())?.is_none() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Removes an agent's dictionary.
pub fn delete_agent(txn: &WriteTransaction, agent: &str) -> Result<(), StoreError> {
    let start = keys::prefix(&[agent.as_bytes()]);
    let end = keys::prefix_end(&start);
    let mut table = txn.open_table(NAME_INFIXES)?;
    table.retain_in(start.as_slice()..end.as_slice(), |_, _| false)?;
    Ok(())
}

/// Empties the dictionary of every agent (before the indexes are rebuilt).
pub fn clear(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.delete_table(NAME_INFIXES)?;
    txn.open_table(NAME_INFIXES)?;
    Ok(())
}
