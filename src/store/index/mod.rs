//! The sort and word indexes, as one subsystem: which entries a contact has
//! ([`entries`], [`keys`]), their log-structured storage ([`lsm`]), the journal they
//! are rebuilt from after a stop, the worker that builds each write group's block, the
//! merger that compacts runs, and the query planner that reads them ([`query`]).
//!
//! The rest of the store meets it here only:
//! - **writes**: the writer gives each group a [`TxnIndex`] (from [`Indexer::begin`]);
//!   jobs report the contacts they changed through [`IndexTxn::contacts_changed`], the
//!   writer calls [`IndexTxn::finish`] before committing and [`Indexer::publish`],
//!   [`Indexer::committed`] or [`Indexer::aborted`] around the commit. The writer
//!   knows nothing else of the index;
//! - **reads**: [`execute`] runs a list query on a read snapshot and the [`Held`]
//!   blocks taken with it;
//! - **opening**: [`ensure`] builds missing indexes, [`replay`] logs the journal
//!   entries a stopped process left, [`pending_block`] holds them for a damaged store;
//! - **checks**: `check` recomputes a contact's entries ([`sort_keys`], [`word_keys`],
//!   [`counted_fields`]) and compares them with the stored ones through [`IndexView`].

mod candidates;
mod entries;
mod journal;
pub(super) mod keys;
/// Public to the store for its tests, which look at the index tables.
pub(super) mod lsm;
mod merger;
mod names;
mod query;
mod streams;
mod txn;
mod worker;

pub use candidates::value_holders;
pub use entries::{counted_fields, delete_agent, ensure, sort_keys, word_keys, Pairs};
pub use journal::{pending_block, replay};
pub use lsm::unlogged::{Held, Slot, Unlogged, INDEX_JOURNAL};
pub use lsm::{Index, IndexLimits, IndexView, RUN_PREFIX};
pub use merger::{Kick, Merger};
pub use names::{holds as name_dictionary_holds, name_words};
pub use query::{execute, QueryLimits, QueryPage, ReadView, Start};
pub use txn::{Finished, IndexTxn, Indexer, TxnIndex};
