//! Tag and list definitions (`tags`, `lists` tables) inside the writer's transaction:
//! resolving the names a contact write sends, defining, renaming and deleting them,
//! and changing which contacts carry one.

use std::collections::HashMap;

use redb::{ReadableTable, TableDefinition};

use super::redo::Op;
use super::tables::{FIELD_COUNTS, LISTS, TAGS};
use super::writer::Txn;
use super::StoreError;
use crate::domain::label::{fold, LabelEdit, LabelKind};
use crate::domain::search::label_count_field;
use crate::domain::{Issues, Label, UnknownPolicy};

fn table(kind: LabelKind) -> TableDefinition<'static, (&'static str, &'static str), &'static str> {
    match kind {
        LabelKind::Tag => TAGS,
        LabelKind::List => LISTS,
    }
}

/// The agent's definitions of one kind: folded name → name as defined.
pub fn defined(
    txn: &redb::ReadTransaction,
    agent: &str,
    kind: LabelKind,
) -> Result<Vec<Label>, StoreError> {
    let defs = txn.open_table(table(kind))?;
    let counts = txn.open_table(FIELD_COUNTS)?;
    let mut out = Vec::new();
    for row in defs.range((agent, "")..)? {
        let (key, name) = row?;
        let (owner, folded) = key.value();
        if owner != agent {
            break;
        }
        let count = counts
            .get((agent, label_count_field(kind, folded).as_str()))?
            .map_or(0, |c| c.value());
        out.push(Label {
            name: name.value().to_owned(),
            count,
        });
    }
    Ok(out)
}

/// Writes (or with `None` removes) a definition, recording it for the log.
pub fn put(
    txn: &Txn,
    agent: &str,
    kind: LabelKind,
    folded: &str,
    name: Option<&str>,
) -> Result<(), StoreError> {
    let mut defs = txn.open_table(table(kind))?;
    match name {
        Some(name) => {
            defs.insert((agent, folded), name)?;
        }
        None => {
            defs.remove((agent, folded))?;
        }
    }
    txn.record(Op::PutLabel {
        agent: agent.to_owned(),
        kind,
        folded: folded.to_owned(),
        name: name.map(str::to_owned),
    });
    Ok(())
}

/// Removes every definition of an agent.
pub fn delete_all(txn: &Txn, agent: &str) -> Result<(), StoreError> {
    for kind in [LabelKind::Tag, LabelKind::List] {
        let mut defs = txn.open_table(table(kind))?;
        let mut names = Vec::new();
        for row in defs.range((agent, "")..)? {
            let (key, _) = row?;
            let (owner, folded) = key.value();
            if owner != agent {
                break;
            }
            names.push(folded.to_owned());
        }
        for folded in names {
            defs.remove((agent, folded.as_str()))?;
        }
    }
    Ok(())
}

/// The name a definition has, if any.
pub fn lookup(
    txn: &Txn,
    agent: &str,
    kind: LabelKind,
    name: &str,
) -> Result<Option<String>, StoreError> {
    let defs = txn.open_table(table(kind))?;
    let found = defs.get((agent, fold(name).as_str()))?;
    Ok(found.map(|v| v.value().to_owned()))
}

/// One kind of an agent's definitions as a batch of writes sees them: loaded on first
/// use, with the ones the batch defines on the fly (written by [`Labels::save`]).
pub struct Labels {
    kind: LabelKind,
    policy: UnknownPolicy,
    defined: Option<HashMap<String, String>>,
    created: Vec<String>,
}

impl Labels {
    /// Tags follow `policy`; lists named on a write are always defined.
    pub fn new(kind: LabelKind, policy: UnknownPolicy) -> Self {
        let policy = match kind {
            LabelKind::Tag => policy,
            LabelKind::List => UnknownPolicy::Define,
        };
        Self {
            kind,
            policy,
            defined: None,
            created: Vec::new(),
        }
    }

    /// Where the definitions made so far end, for [`Labels::roll_back`].
    pub fn mark(&self) -> usize {
        self.created.len()
    }

    /// Forgets the definitions made after `mark` (a rejected entry defines nothing).
    pub fn roll_back(&mut self, mark: usize) {
        if let Some(defined) = &mut self.defined {
            for folded in self.created.drain(mark..) {
                defined.remove(&folded);
            }
        }
    }

    /// The names `current` becomes under `edit`, as defined; `None` when the edit is
    /// empty. An undefined name is defined, left out or reported in `issues` under the
    /// kind's field, by the policy.
    pub fn resolve(
        &mut self,
        txn: &Txn,
        agent: &str,
        edit: &LabelEdit,
        current: &[String],
        issues: &mut Issues,
    ) -> Result<Option<Vec<String>>, StoreError> {
        if edit.is_empty() {
            return Ok(None);
        }
        if self.defined.is_none() {
            let defs = txn.open_table(table(self.kind))?;
            let mut map = HashMap::new();
            for row in defs.range((agent, "")..)? {
                let (key, name) = row?;
                let (owner, folded) = key.value();
                if owner != agent {
                    break;
                }
                map.insert(folded.to_owned(), name.value().to_owned());
            }
            self.defined = Some(map);
        }
        let defined = self.defined.get_or_insert_with(HashMap::new);
        let (kind, policy, created) = (self.kind, self.policy, &mut self.created);
        let mut resolve = |name: &str| -> Option<String> {
            let folded = fold(name);
            if let Some(found) = defined.get(&folded) {
                return Some(found.clone());
            }
            match policy {
                UnknownPolicy::Define => {
                    defined.insert(folded.clone(), name.to_owned());
                    created.push(folded);
                    Some(name.to_owned())
                }
                UnknownPolicy::Strip => None,
                UnknownPolicy::Reject => {
                    issues.push(
                        kind.field(),
                        format!(
                            "{} '{name}' is not defined (create it first, or set {}.unknown to define)",
                            kind.noun(),
                            kind.field()
                        ),
                    );
                    None
                }
            }
        };
        Ok(Some(edit.apply(current, &mut resolve)))
    }

    /// Writes the definitions made on the fly.
    pub fn save(&self, txn: &Txn, agent: &str) -> Result<(), StoreError> {
        let Some(defined) = &self.defined else {
            return Ok(());
        };
        for folded in &self.created {
            if let Some(name) = defined.get(folded) {
                put(txn, agent, self.kind, folded, Some(name))?;
            }
        }
        Ok(())
    }
}
