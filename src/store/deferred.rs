//! The external-id and email index entries written since the last checkpoint.
//!
//! A new contact's entries in `contacts_by_external_id` and `contacts_by_email` land on
//! random B-tree leaves. Inserted at every commit, each group would copy (and later
//! write out) about one leaf per entry. Instead the writer keeps them here, in memory,
//! and inserts them into the two B-trees at the next checkpoint in key order: each leaf
//! is then written once per checkpoint, whatever number of its entries changed. The
//! write-ahead log holds the contact changes the entries follow from, so replaying it
//! after a crash puts them back here.
//!
//! **Versions.** Each write group that changes entries takes the next key sequence
//! number and stores it in `meta` (`keys_seq`); a checkpoint stores the number it
//! inserted through (`keys_flushed`). An entry keeps one version per group that changed
//! it (`None`: removed). A reader reads both numbers from its snapshot and sees, per
//! key, the newest version numbered in `(flushed, seq]`; a key without one is answered
//! by the B-tree of the snapshot. The writer sees the newest version above the last
//! checkpoint. A checkpoint drops the versions it inserted, except those a reader of an
//! older snapshot still holds (pins); a reader whose snapshot needs dropped versions
//! begins again on a newer snapshot.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    WriteTransaction,
};

use super::codec::decode_stored_contact;
use super::keyfilter::KeyFilter;
use super::tables::{CONTACTS, CONTACTS_BY_EMAIL, CONTACTS_BY_EXTERNAL_ID, META};
use super::StoreError;

/// The key sequence number of the last write group whose entries a snapshot holds.
pub const META_KEYS_SEQ: &str = "keys_seq";
/// The key sequence number through which the B-trees hold every entry.
pub const META_KEYS_FLUSHED: &str = "keys_flushed";

type Map<V> = foldhash::HashMap<String, V>;

/// A key of one index, shared by its versions and the runs that hold it.
type Key = Arc<str>;

/// One version of an entry: the group's number and the value it left.
type Version<V> = (u64, Option<V>);

/// Versions of one entry, oldest first. Most entries have one, kept inline.
enum Versions<V> {
    One([Version<V>; 1]),
    Many(Vec<Version<V>>),
}

impl<V> Versions<V> {
    fn as_slice(&self) -> &[Version<V>] {
        match self {
            Self::One(one) => one,
            Self::Many(all) => all,
        }
    }

    fn push(&mut self, version: Version<V>) {
        match self {
            Self::Many(all) => all.push(version),
            Self::One(_) => {
                let mut all = match std::mem::replace(self, Self::Many(Vec::new())) {
                    Self::One([first]) => vec![first],
                    Self::Many(all) => all,
                };
                all.push(version);
                *self = Self::Many(all);
            }
        }
    }

    /// Keeps the versions `keep` accepts; false when none is left.
    fn retain(&mut self, keep: impl Fn(u64) -> bool) -> bool {
        match self {
            Self::One([(seq, _)]) => keep(*seq),
            Self::Many(all) => {
                all.retain(|(seq, _)| keep(*seq));
                !all.is_empty()
            }
        }
    }
}

/// One index's entries since the last checkpoint: the versions of each key for
/// lookups, and the keys each group changed, sorted, for reading in key order.
pub struct Entries<V> {
    versions: foldhash::HashMap<Key, Versions<V>>,
    /// One run per group, oldest first.
    runs: Vec<Run>,
}

/// The keys one group changed, in order, each once.
struct Run {
    seq: u64,
    keys: Vec<Key>,
}

impl<V> Default for Entries<V> {
    fn default() -> Self {
        Self {
            versions: foldhash::HashMap::default(),
            runs: Vec::new(),
        }
    }
}

impl<V: Clone> Entries<V> {
    /// Adds group `seq`'s values.
    fn add(&mut self, seq: u64, values: Map<Option<V>>) {
        let mut keys: Vec<Key> = Vec::with_capacity(values.len());
        for (key, value) in values {
            let version = (seq, value);
            match self.versions.get_key_value(key.as_str()) {
                Some((shared, _)) => {
                    let shared = Arc::clone(shared);
                    if let Some(versions) = self.versions.get_mut(&shared) {
                        versions.push(version);
                    }
                    keys.push(shared);
                }
                None => {
                    let key: Key = key.into();
                    self.versions
                        .insert(Arc::clone(&key), Versions::One([version]));
                    keys.push(key);
                }
            }
        }
        keys.sort_unstable();
        self.runs.push(Run { seq, keys });
    }

    /// Keeps the versions and runs of the groups `keep` accepts.
    fn retain_groups(&mut self, keep: impl Fn(u64) -> bool) {
        self.runs.retain(|run| keep(run.seq));
        self.versions.retain(|_, v| v.retain(&keep));
    }

    fn is_empty(&self) -> bool {
        self.versions.is_empty()
    }

    /// The newest version numbered in `(above, upto]`.
    fn get(&self, key: &str, above: u64, upto: u64) -> Option<Option<V>> {
        visible(self.versions.get(key)?, above, upto)
    }

    /// Up to `limit` keys strictly beyond `after` in key order (descending: from the
    /// highest) with their newest version in `(above, upto]`.
    fn chunk(
        &self,
        after: Option<&str>,
        descending: bool,
        limit: usize,
        above: u64,
        upto: u64,
    ) -> Chunk<V> {
        let runs: Vec<&[Key]> = self
            .runs
            .iter()
            .filter(|run| run.seq > above && run.seq <= upto)
            .map(|run| run.keys.as_slice())
            .collect();
        let mut taker = Taker {
            entries: self,
            above,
            upto,
            limit,
            last: None,
            out: Vec::new(),
        };
        if descending {
            // Each run's position: how many of its keys are still to read.
            let mut ends: Vec<usize> = runs
                .iter()
                .map(|keys| after.map_or(keys.len(), |a| keys.partition_point(|k| k.as_ref() < a)))
                .collect();
            let mut heap: BinaryHeap<(&str, usize)> = BinaryHeap::new();
            for (i, keys) in runs.iter().enumerate() {
                if ends[i] > 0 {
                    ends[i] -= 1;
                    heap.push((keys[ends[i]].as_ref(), i));
                }
            }
            while let Some((key, i)) = heap.pop() {
                if !taker.offer(key) {
                    break;
                }
                if ends[i] > 0 {
                    ends[i] -= 1;
                    heap.push((runs[i][ends[i]].as_ref(), i));
                }
            }
        } else {
            let mut starts: Vec<usize> = runs
                .iter()
                .map(|keys| after.map_or(0, |a| keys.partition_point(|k| k.as_ref() <= a)))
                .collect();
            let mut heap: BinaryHeap<Reverse<(&str, usize)>> = BinaryHeap::new();
            for (i, keys) in runs.iter().enumerate() {
                if let Some(key) = keys.get(starts[i]) {
                    heap.push(Reverse((key.as_ref(), i)));
                }
            }
            while let Some(Reverse((key, i))) = heap.pop() {
                if !taker.offer(key) {
                    break;
                }
                starts[i] += 1;
                if let Some(key) = runs[i].get(starts[i]) {
                    heap.push(Reverse((key.as_ref(), i)));
                }
            }
        }
        taker.out
    }

    /// Every key with a version above `flushed`, with its newest, in key order.
    fn newest(&self, flushed: u64) -> Vec<(&str, Option<&V>)> {
        let mut out: Vec<(&str, Option<&V>)> = self
            .versions
            .iter()
            .filter_map(|(key, versions)| {
                let (seq, value) = versions.as_slice().last()?;
                (*seq > flushed).then_some((&**key, value.as_ref()))
            })
            .collect();
        out.sort_unstable_by(|a, b| a.0.cmp(b.0));
        out
    }
}

/// Collects a chunk from keys offered in order, each possibly several times (once
/// per run that has it).
struct Taker<'a, V> {
    entries: &'a Entries<V>,
    above: u64,
    upto: u64,
    limit: usize,
    last: Option<&'a str>,
    out: Chunk<V>,
}

impl<'a, V: Clone> Taker<'a, V> {
    /// Takes `key` (its version in the view) unless taken just before; false once the
    /// chunk is full.
    fn offer(&mut self, key: &'a str) -> bool {
        if self.last == Some(key) {
            return true;
        }
        if self.out.len() >= self.limit {
            return false;
        }
        self.last = Some(key);
        if let Some(value) = self.entries.get(key, self.above, self.upto) {
            self.out.push((key.to_owned(), value));
        }
        true
    }
}

#[derive(Default)]
pub struct AgentKeys {
    /// External id → contact number.
    ext: Entries<u64>,
    /// Email key → external id.
    email: Entries<String>,
}

#[derive(Default)]
struct State {
    agents: Map<AgentKeys>,
    /// The last checkpoint's number: versions at or below it are in the B-trees.
    flushed: u64,
    /// Versions at or below this number are gone from here: a snapshot that flushed
    /// less must not be read through this.
    dropped: u64,
    /// The number of the last committed group that changed entries.
    last: u64,
}

impl State {
    /// Keeps the versions of the groups `keep` accepts, and the agents left with any.
    fn retain_groups(&mut self, keep: impl Fn(u64) -> bool) {
        for keys in self.agents.values_mut() {
            keys.ext.retain_groups(&keep);
            keys.email.retain_groups(&keep);
        }
        self.agents
            .retain(|_, k| !k.ext.is_empty() || !k.email.is_empty());
    }
}

/// The entries since the last checkpoint, shared by the writer and the readers.
pub struct Deferred {
    state: RwLock<State>,
    /// How many readers hold a view per `flushed` number of their snapshot.
    pins: Mutex<BTreeMap<u64, usize>>,
    /// The keys each B-tree may hold, so that the writer skips the lookup of a key it
    /// surely does not (a new contact's).
    stored_ext: KeyFilter,
    stored_email: KeyFilter,
}

/// The entries one write group changed so far; they join [`Deferred`] just before the
/// group commits (see [`Deferred::seal`]).
#[derive(Default)]
pub struct GroupKeys {
    agents: Map<GroupAgent>,
}

#[derive(Default)]
struct GroupAgent {
    ext: Map<Option<u64>>,
    email: Map<Option<String>>,
}

impl GroupKeys {
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    fn agent(&mut self, agent: &str) -> &mut GroupAgent {
        self.agents.entry(agent.to_owned()).or_default()
    }

    /// Removes every entry of `agent` the group set, and those in `also`.
    pub fn remove_agent(&mut self, agent: &str, also: (Vec<String>, Vec<String>)) {
        let keys = self.agent(agent);
        for number in keys.ext.values_mut() {
            *number = None;
        }
        for holder in keys.email.values_mut() {
            *holder = None;
        }
        let (exts, emails) = also;
        keys.ext.extend(exts.into_iter().map(|k| (k, None)));
        keys.email.extend(emails.into_iter().map(|k| (k, None)));
    }

    /// Sets (`None`: removes) the external-id entry of `ext`.
    pub fn set_ext(&mut self, agent: &str, ext: &str, number: Option<u64>) {
        self.agent(agent).ext.insert(ext.to_owned(), number);
    }

    /// Sets (`None`: removes) the email entry of `key`.
    pub fn set_email(&mut self, agent: &str, key: &str, holder: Option<&str>) {
        let holder = holder.map(str::to_owned);
        self.agent(agent).email.insert(key.to_owned(), holder);
    }

    /// `ext`'s entry as the group left it, if it changed it.
    pub fn ext(&self, agent: &str, ext: &str) -> Option<Option<u64>> {
        self.agents.get(agent)?.ext.get(ext).copied()
    }

    /// Email `key`'s entry as the group left it, if it changed it.
    pub fn email(&self, agent: &str, key: &str) -> Option<Option<String>> {
        self.agents.get(agent)?.email.get(key).cloned()
    }
}

/// The newest version numbered in `(above, upto]`: `Some(None)` for a removed entry,
/// `None` when no version is (the B-tree answers).
fn visible<V: Clone>(versions: &Versions<V>, above: u64, upto: u64) -> Option<Option<V>> {
    versions
        .as_slice()
        .iter()
        .rev()
        .find(|(seq, _)| *seq > above && *seq <= upto)
        .map(|(_, v)| v.clone())
}

fn meta(txn: &ReadTransaction, key: &str) -> Result<u64, StoreError> {
    Ok(txn.open_table(META)?.get(key)?.map_or(0, |v| v.value()))
}

impl Deferred {
    /// Empty, after the checkpoint a data dir opens at (whose B-trees [`prepare`] made
    /// whole).
    pub fn open(txn: &ReadTransaction) -> Result<Self, StoreError> {
        let (seq, flushed) = (meta(txn, META_KEYS_SEQ)?, meta(txn, META_KEYS_FLUSHED)?);
        if seq != flushed {
            tracing::warn!(
                "the damaged data file's external-id and email indexes miss the entries of its last writes; `contactd salvage` rebuilds them"
            );
        }
        Ok(Self {
            state: RwLock::new(State {
                flushed,
                dropped: flushed,
                last: seq,
                ..State::default()
            }),
            pins: Mutex::default(),
            stored_ext: KeyFilter::new(txn.open_table(CONTACTS_BY_EXTERNAL_ID)?.len()?),
            stored_email: KeyFilter::new(txn.open_table(CONTACTS_BY_EMAIL)?.len()?),
        })
    }

    /// Inserts the keys of the B-trees of `txn`, a snapshot taken after this was
    /// opened, into their filters; from then on the writer skips the lookups the
    /// filters rule out. Returns `false` when `stop` was set before the end.
    pub fn fill_filters(
        &self,
        txn: &ReadTransaction,
        stop: &AtomicBool,
    ) -> Result<bool, StoreError> {
        let by_ext = txn.open_table(CONTACTS_BY_EXTERNAL_ID)?;
        if !fill(&by_ext, &self.stored_ext, stop)? {
            return Ok(false);
        }
        let by_email = txn.open_table(CONTACTS_BY_EMAIL)?;
        fill(&by_email, &self.stored_email, stop)
    }

    /// For the writer: whether the `contacts_by_external_id` B-tree may hold `ext`
    /// (`false`: surely not, no need to look).
    pub fn may_store_ext(&self, agent: &str, ext: &str) -> bool {
        self.stored_ext.may_hold(agent, ext)
    }

    /// For the writer: whether the `contacts_by_email` B-tree may hold `key`.
    pub fn may_store_email(&self, agent: &str, key: &str) -> bool {
        self.stored_email.may_hold(agent, key)
    }

    /// A read snapshot (`begin`, whose transaction `txn` gives) with its view.
    pub fn begin<T>(
        self: &Arc<Self>,
        begin: impl Fn() -> Result<T, StoreError>,
        txn: impl Fn(&T) -> &ReadTransaction,
    ) -> Result<(T, KeysView), StoreError> {
        loop {
            {
                let state = self.state.read();
                if state.agents.is_empty() {
                    // Nothing waits for a checkpoint, and no group's entries can join
                    // while this lock is held: the snapshot's B-trees hold them all.
                    let read = begin()?;
                    let view = KeysView {
                        deferred: Arc::clone(self),
                        flushed: state.flushed,
                        seq: state.flushed,
                        pinned: false,
                    };
                    return Ok((read, view));
                }
            }
            let read = begin()?;
            if let Some(view) = self.view(txn(&read))? {
                return Ok((read, view));
            }
        }
    }

    /// A view for a reader of `txn`, or `None` when versions its snapshot needs were
    /// dropped meanwhile: then begin again (a newer snapshot needs none of them).
    fn view(self: &Arc<Self>, txn: &ReadTransaction) -> Result<Option<KeysView>, StoreError> {
        let (seq, flushed) = (meta(txn, META_KEYS_SEQ)?, meta(txn, META_KEYS_FLUSHED)?);
        let state = self.state.read();
        if flushed < state.dropped {
            return Ok(None);
        }
        *self.pins.lock().entry(flushed).or_default() += 1;
        drop(state);
        Ok(Some(KeysView {
            deferred: Arc::clone(self),
            flushed,
            seq,
            pinned: true,
        }))
    }

    /// The number the next write group's versions take.
    pub fn next_seq(&self) -> u64 {
        self.state.read().last + 1
    }

    /// For the writer: the contact number of `ext` as the committed groups left it,
    /// when changed since the last checkpoint (`Some(None)`: removed).
    pub fn latest_ext(&self, agent: &str, ext: &str) -> Option<Option<u64>> {
        let state = self.state.read();
        state
            .agents
            .get(agent)?
            .ext
            .get(ext, state.flushed, u64::MAX)
    }

    /// For the writer: who holds email `key`, like [`Deferred::latest_ext`].
    pub fn latest_email(&self, agent: &str, key: &str) -> Option<Option<String>> {
        let state = self.state.read();
        state
            .agents
            .get(agent)?
            .email
            .get(key, state.flushed, u64::MAX)
    }

    /// For the writer: every key of `agent` with an entry here that the committed
    /// groups left standing.
    pub fn live_keys(&self, agent: &str) -> (Vec<String>, Vec<String>) {
        let state = self.state.read();
        let Some(keys) = state.agents.get(agent) else {
            return (Vec::new(), Vec::new());
        };
        (
            live(&keys.ext.versions, state.flushed),
            live(&keys.email.versions, state.flushed),
        )
    }

    /// Just before group `seq` commits: its entries join, numbered `seq`, and the keys
    /// it sets join the key filters (before any checkpoint can insert them into the
    /// B-trees).
    pub fn seal(&self, seq: u64, group: GroupKeys) {
        for (agent, changed) in &group.agents {
            for (ext, _) in changed.ext.iter().filter(|(_, n)| n.is_some()) {
                self.stored_ext.insert(agent, ext);
            }
            for (key, _) in changed.email.iter().filter(|(_, h)| h.is_some()) {
                self.stored_email.insert(agent, key);
            }
        }
        let mut state = self.state.write();
        for (agent, changed) in group.agents {
            let keys = state.agents.entry(agent).or_default();
            if !changed.ext.is_empty() {
                keys.ext.add(seq, changed.ext);
            }
            if !changed.email.is_empty() {
                keys.email.add(seq, changed.email);
            }
        }
    }

    /// Group `seq` was sealed but did not commit: its entries go.
    pub fn aborted(&self, seq: u64) {
        self.state.write().retain_groups(|s| s != seq);
    }

    /// Group `seq` committed.
    pub fn committed(&self, seq: u64) {
        let mut state = self.state.write();
        state.last = state.last.max(seq);
    }

    /// Inside checkpoint group `seq`'s transaction (sealed): inserts every entry
    /// changed since the last checkpoint into the B-trees, in key order, and records
    /// `seq` as flushed. Returns how many entries it wrote.
    pub fn flush(&self, txn: &WriteTransaction, seq: u64) -> Result<u64, StoreError> {
        let state = self.state.read();
        let mut by_ext = txn.open_table(CONTACTS_BY_EXTERNAL_ID)?;
        let mut by_email = txn.open_table(CONTACTS_BY_EMAIL)?;
        let mut agents: Vec<&String> = state.agents.keys().collect();
        agents.sort_unstable();
        let mut written = 0;
        for agent in agents {
            let keys = &state.agents[agent];
            let agent = agent.as_str();
            for (ext, number) in keys.ext.newest(state.flushed) {
                match number {
                    Some(n) => by_ext.insert((agent, ext), *n)?,
                    None => by_ext.remove((agent, ext))?,
                };
                written += 1;
            }
            for (key, holder) in keys.email.newest(state.flushed) {
                match holder {
                    Some(ext) => by_email.insert((agent, key), ext.as_str())?,
                    None => by_email.remove((agent, key))?,
                };
                written += 1;
            }
        }
        let mut meta = txn.open_table(META)?;
        meta.insert(META_KEYS_SEQ, seq)?;
        meta.insert(META_KEYS_FLUSHED, seq)?;
        Ok(written)
    }

    /// Checkpoint group `seq` (see [`Deferred::flush`]) committed: the versions no
    /// reader holds go.
    pub fn checkpointed(&self, seq: u64) {
        let mut state = self.state.write();
        state.last = state.last.max(seq);
        state.flushed = seq;
        let floor = self
            .pins
            .lock()
            .keys()
            .next()
            .map_or(seq, |&pinned| pinned.min(seq));
        if floor <= state.dropped {
            return;
        }
        state.dropped = floor;
        state.retain_groups(|s| s > floor);
    }

    /// How many versions are held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        let state = self.state.read();
        state
            .agents
            .values()
            .map(|k| {
                let count = |v: &Versions<_>| v.as_slice().len();
                k.ext.versions.values().map(count).sum::<usize>()
                    + k.email
                        .versions
                        .values()
                        .map(|v| v.as_slice().len())
                        .sum::<usize>()
            })
            .sum()
    }

    fn unpin(&self, flushed: u64) {
        let mut pins = self.pins.lock();
        if let Some(count) = pins.get_mut(&flushed) {
            *count -= 1;
            if *count == 0 {
                pins.remove(&flushed);
            }
        }
    }
}

/// The thread that fills the key filters at open (see [`Deferred::fill_filters`]).
pub struct Filler {
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Filler {
    /// Starts filling `deferred`'s filters from a snapshot of `db` taken now.
    pub fn start(db: &Database, deferred: Arc<Deferred>) -> Result<Self, StoreError> {
        let txn = db.begin_read()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("contactd-keyfilter".into())
            .spawn(move || {
                let started = std::time::Instant::now();
                match deferred.fill_filters(&txn, &stopped) {
                    Ok(true) => tracing::debug!(
                        ms = started.elapsed().as_millis(),
                        "filled the external-id and email key filters"
                    ),
                    Ok(false) => {}
                    // The writer keeps looking every key up.
                    Err(err) => tracing::warn!("cannot fill the key filters: {err}"),
                }
            })?;
        Ok(Self {
            stop,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Stops filling and waits for the thread, which holds a read snapshot.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.join();
    }

    /// Waits for the thread to end.
    pub fn join(&self) {
        if let Some(thread) = self.thread.lock().take() {
            if thread.join().is_err() {
                tracing::error!("the key filter thread panicked");
            }
        }
    }
}

/// Inserts every key of `table` into `filter` and marks it filled; `false` when `stop`
/// was set first.
fn fill<V: redb::Value + 'static>(
    table: &impl ReadableTable<(&'static str, &'static str), V>,
    filter: &KeyFilter,
    stop: &AtomicBool,
) -> Result<bool, StoreError> {
    for (i, row) in table.iter()?.enumerate() {
        if i % 4096 == 0 && stop.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let (key, _) = row?;
        let (agent, key) = key.value();
        filter.insert(agent, key);
    }
    filter.filled();
    Ok(true)
}

/// The keys whose newest version above `flushed` sets an entry.
fn live<V>(versions: &foldhash::HashMap<Key, Versions<V>>, flushed: u64) -> Vec<String> {
    versions
        .iter()
        .filter(|(_, v)| matches!(v.as_slice().last(), Some((seq, Some(_))) if *seq > flushed))
        .map(|(k, _)| k.to_string())
        .collect()
}

/// What a reader's snapshot holds of the entries since the last checkpoint.
pub struct KeysView {
    deferred: Arc<Deferred>,
    flushed: u64,
    seq: u64,
    /// Whether it holds a pin on `flushed` (see [`Deferred::checkpointed`]).
    pinned: bool,
}

impl Drop for KeysView {
    fn drop(&mut self) {
        if self.pinned {
            self.deferred.unpin(self.flushed);
        }
    }
}

/// Entries of one index in key order, from a range of keys.
pub type Chunk<V> = Vec<(String, Option<V>)>;

impl KeysView {
    /// The contact number of `ext` in this snapshot when it changed since the
    /// snapshot's checkpoint (`Some(None)`: removed); `None`: ask the B-tree.
    pub fn ext(&self, agent: &str, ext: &str) -> Option<Option<u64>> {
        let state = self.deferred.state.read();
        state
            .agents
            .get(agent)?
            .ext
            .get(ext, self.flushed, self.seq)
    }

    /// Who holds email `key` in this snapshot, like [`KeysView::ext`].
    pub fn email(&self, agent: &str, key: &str) -> Option<Option<String>> {
        let state = self.deferred.state.read();
        state
            .agents
            .get(agent)?
            .email
            .get(key, self.flushed, self.seq)
    }

    /// Up to `limit` entries of `agent`'s index of `V` that this snapshot sees changed
    /// since its checkpoint, in key order (descending: from the highest) strictly
    /// beyond `after`.
    pub fn chunk<V: DeferredValue>(
        &self,
        agent: &str,
        after: Option<&str>,
        descending: bool,
        limit: usize,
    ) -> Chunk<V> {
        let state = self.deferred.state.read();
        state.agents.get(agent).map_or_else(Vec::new, |keys| {
            V::entries(keys).chunk(after, descending, limit, self.flushed, self.seq)
        })
    }

    /// Whether the snapshot's B-trees hold every entry (nothing here applies to it).
    pub fn settled(&self) -> bool {
        self.seq == self.flushed
    }
}

/// Which of the writer's views of an entry applies: changed since the last checkpoint
/// (here), or as the B-tree holds it.
pub fn or_stored<V>(
    deferred: Option<Option<V>>,
    stored: impl FnOnce() -> Result<Option<V>, StoreError>,
) -> Result<Option<V>, StoreError> {
    match deferred {
        Some(value) => Ok(value),
        None => stored(),
    }
}

/// At open, in its first write: when the file was closed without its last checkpoint
/// (closing makes the groups committed since durable, but not their deferred entries),
/// rebuilds both B-trees from the contact records. Returns whether it had to.
pub fn prepare(txn: &WriteTransaction) -> Result<bool, StoreError> {
    let mut meta_table = txn.open_table(META)?;
    let seq = meta_table.get(META_KEYS_SEQ)?.map_or(0, |v| v.value());
    let flushed = meta_table.get(META_KEYS_FLUSHED)?.map_or(0, |v| v.value());
    if seq == flushed {
        return Ok(false);
    }
    let contacts = txn.open_table(CONTACTS)?;
    let mut by_ext = txn.open_table(CONTACTS_BY_EXTERNAL_ID)?;
    let mut by_email = txn.open_table(CONTACTS_BY_EMAIL)?;
    by_ext.retain(|_, _| false)?;
    by_email.retain(|_, _| false)?;
    let mut unreadable = 0u64;
    for row in contacts.iter()? {
        let (key, bytes) = row?;
        let (agent, n) = key.value();
        let contact = match decode_stored_contact(agent, n, bytes.value()) {
            Ok(contact) => contact,
            // Damage: `contactd check` names the record; its entries cannot be known.
            Err(StoreError::Corrupt(_)) => {
                unreadable += 1;
                continue;
            }
            Err(err) => return Err(err),
        };
        by_ext.insert((agent, contact.external_id.as_str()), n)?;
        if let Some(email) = contact.email_key() {
            // Numbers ascend: on a clash (damage), the older contact keeps the address.
            if by_email.get((agent, email.as_str()))?.is_none() {
                by_email.insert((agent, email.as_str()), contact.external_id.as_str())?;
            }
        }
    }
    if unreadable > 0 {
        tracing::warn!(
            records = unreadable,
            "contact records that cannot be read have no external-id or email entries"
        );
    }
    meta_table.insert(META_KEYS_FLUSHED, seq)?;
    Ok(true)
}

/// The rows of one agent's index, B-tree and deferred entries merged in key order: a
/// deferred version replaces the B-tree's entry of its key, or (removed) hides it.
pub struct Merged<'a, V, I: Iterator> {
    stored: std::iter::Peekable<I>,
    view: &'a KeysView,
    agent: String,
    descending: bool,
    pending: std::collections::VecDeque<(String, Option<V>)>,
    /// The last key a chunk reached; `None` once the deferred entries are exhausted.
    cursor: Option<Option<String>>,
}

/// The values of one of the two indexes: a contact number (external ids) or an
/// external id (emails).
pub trait DeferredValue: Sized + Clone {
    fn entries(keys: &AgentKeys) -> &Entries<Self>;
}

impl DeferredValue for u64 {
    fn entries(keys: &AgentKeys) -> &Entries<u64> {
        &keys.ext
    }
}

impl DeferredValue for String {
    fn entries(keys: &AgentKeys) -> &Entries<String> {
        &keys.email
    }
}

/// Deferred entries read from the view at a time (tests: a few, to cross chunks).
#[cfg(not(test))]
const CHUNK: usize = 256;
#[cfg(test)]
const CHUNK: usize = 3;

impl<'a, V, I> Merged<'a, V, I>
where
    V: DeferredValue,
    I: Iterator<Item = Result<(String, V), StoreError>>,
{
    /// `stored`: the B-tree's rows of `agent` strictly beyond `after`, in the order
    /// asked for.
    pub fn new(
        stored: I,
        view: &'a KeysView,
        agent: &str,
        after: Option<&str>,
        descending: bool,
    ) -> Self {
        Self {
            stored: stored.peekable(),
            view,
            agent: agent.to_owned(),
            descending,
            pending: std::collections::VecDeque::new(),
            cursor: Some(after.map(str::to_owned)),
        }
    }

    /// The next deferred entry, reading a chunk when none waits.
    fn peek_deferred(&mut self) -> Option<&(String, Option<V>)> {
        if self.pending.is_empty() {
            if let Some(after) = self.cursor.take() {
                let chunk =
                    self.view
                        .chunk::<V>(&self.agent, after.as_deref(), self.descending, CHUNK);
                if chunk.len() == CHUNK {
                    self.cursor = Some(chunk.last().map(|(k, _)| k.clone()));
                }
                self.pending.extend(chunk);
            }
        }
        self.pending.front()
    }
}

impl<V, I> Iterator for Merged<'_, V, I>
where
    V: DeferredValue,
    I: Iterator<Item = Result<(String, V), StoreError>>,
{
    type Item = Result<(String, V), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let deferred_key = self.peek_deferred().map(|(k, _)| k.clone());
            let descending = self.descending;
            let order = match (self.stored.peek(), &deferred_key) {
                (None, None) => return None,
                (Some(Err(_)), _) => return self.stored.next(),
                (Some(Ok((stored, _))), Some(deferred)) if descending => deferred.cmp(stored),
                (Some(Ok((stored, _))), Some(deferred)) => stored.cmp(deferred),
                (Some(Ok(_)), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
            };
            if order.is_lt() {
                return self.stored.next();
            }
            if order.is_eq() {
                self.stored.next();
            }
            let (key, value) = self.pending.pop_front()?;
            if let Some(value) = value {
                return Some(Ok((key, value)));
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use redb::{Database, Durability, ReadableDatabase, ReadableTable};

    #[derive(Debug, Clone)]
    enum Step {
        /// The open group sets (or removes) an external id's entry.
        Set(u8, Option<u64>),
        Commit,
        Checkpoint,
        Abort,
        /// A reader takes a snapshot.
        Read,
        /// The oldest reader finishes.
        Finish,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => (0u8..8, proptest::option::of(1u64..5)).prop_map(|(k, v)| Step::Set(k, v)),
            3 => Just(Step::Commit),
            1 => Just(Step::Checkpoint),
            1 => Just(Step::Abort),
            2 => Just(Step::Read),
            1 => Just(Step::Finish),
        ]
    }

    fn key(k: u8) -> String {
        format!("ext-{k}")
    }

    /// What the B-tree of `txn` says of `ext`.
    fn stored(txn: &ReadTransaction, ext: &str) -> Option<u64> {
        let table = txn.open_table(CONTACTS_BY_EXTERNAL_ID).unwrap();
        let found = table.get(("a", ext)).unwrap();
        found.map(|v| v.value())
    }

    /// The entries a reader sees through `view` and its snapshot, merged in order.
    fn merged(
        txn: &ReadTransaction,
        view: &KeysView,
        after: Option<&str>,
        descending: bool,
    ) -> Vec<(String, u64)> {
        let table = txn.open_table(CONTACTS_BY_EXTERNAL_ID).unwrap();
        let mut rows: Vec<Result<(String, u64), StoreError>> = table
            .range(("a", "")..("a\0", ""))
            .unwrap()
            .map(|row| {
                let (k, v) = row.unwrap();
                Ok((k.value().1.to_owned(), v.value()))
            })
            .filter(|row| match (row, after) {
                (Ok((k, _)), Some(a)) if descending => k.as_str() < a,
                (Ok((k, _)), Some(a)) => k.as_str() > a,
                _ => true,
            })
            .collect();
        if descending {
            rows.reverse();
        }
        Merged::new(rows.into_iter(), view, "a", after, descending)
            .map(Result::unwrap)
            .collect()
    }

    fn expect_sees(
        txn: &ReadTransaction,
        view: &KeysView,
        model: &BTreeMap<String, u64>,
    ) -> Result<(), TestCaseError> {
        for k in 0..8 {
            let ext = key(k);
            let seen = match view.ext("a", &ext) {
                Some(value) => value,
                None => stored(txn, &ext),
            };
            prop_assert_eq!(seen, model.get(&ext).copied(), "{}", ext);
        }
        let all: Vec<(String, u64)> = model.iter().map(|(k, v)| (k.clone(), *v)).collect();
        prop_assert_eq!(merged(txn, view, None, false), all.clone());
        let mut reversed = all.clone();
        reversed.reverse();
        prop_assert_eq!(merged(txn, view, None, true), reversed);
        let from = key(3);
        let above: Vec<_> = all.iter().filter(|(k, _)| *k > from).cloned().collect();
        prop_assert_eq!(merged(txn, view, Some(&from), false), above);
        let mut below: Vec<_> = all.iter().filter(|(k, _)| *k < from).cloned().collect();
        below.reverse();
        prop_assert_eq!(merged(txn, view, Some(&from), true), below);
        Ok(())
    }

    proptest! {
        /// Every reader sees exactly what the groups committed before its snapshot
        /// left, through the deferred entries and its snapshot's B-tree together,
        /// whatever commits, checkpoints and aborts follow; the writer sees what every
        /// group so far left.
        #[test]
        fn readers_see_their_snapshot_and_the_writer_the_latest(
            steps in proptest::collection::vec(step(), 1..80),
        ) {
            let db = Database::builder()
                .create_with_backend(redb::backends::InMemoryBackend::new())
                .unwrap();
            {
                let txn = db.begin_write().unwrap();
                txn.open_table(CONTACTS_BY_EXTERNAL_ID).unwrap();
                txn.open_table(CONTACTS_BY_EMAIL).unwrap();
                txn.open_table(META).unwrap();
                txn.commit().unwrap();
            }
            let deferred = Arc::new(Deferred::open(&db.begin_read().unwrap()).unwrap());
            let mut committed: BTreeMap<String, u64> = BTreeMap::new();
            let mut group: Option<(WriteTransaction, u64, GroupKeys, BTreeMap<String, u64>)> = None;
            let mut readers: Vec<(ReadTransaction, KeysView, BTreeMap<String, u64>)> = Vec::new();
            let begin = |committed: &BTreeMap<String, u64>| {
                let seq = deferred.next_seq();
                (db.begin_write().unwrap(), seq, GroupKeys::default(), committed.clone())
            };
            for step in steps {
                match step {
                    Step::Set(k, value) => {
                        let (_, _, keys, latest) = group.get_or_insert_with(|| begin(&committed));
                        keys.set_ext("a", &key(k), value);
                        match value {
                            Some(v) => latest.insert(key(k), v),
                            None => latest.remove(&key(k)),
                        };
                    }
                    Step::Commit => {
                        if let Some((mut txn, seq, keys, latest)) = group.take() {
                            let changed = !keys.is_empty();
                            if changed {
                                deferred.seal(seq, keys);
                                txn.open_table(META).unwrap().insert(META_KEYS_SEQ, seq).unwrap();
                            }
                            txn.set_durability(Durability::None).unwrap();
                            txn.commit().unwrap();
                            if changed {
                                deferred.committed(seq);
                            }
                            committed = latest;
                        }
                    }
                    Step::Checkpoint => {
                        let (txn, seq, keys, latest) =
                            group.take().unwrap_or_else(|| begin(&committed));
                        deferred.seal(seq, keys);
                        deferred.flush(&txn, seq).unwrap();
                        txn.commit().unwrap();
                        deferred.checkpointed(seq);
                        committed = latest;
                    }
                    Step::Abort => {
                        if let Some((txn, seq, keys, _)) = group.take() {
                            // Sealed, then the commit failed.
                            deferred.seal(seq, keys);
                            deferred.aborted(seq);
                            txn.abort().unwrap();
                        }
                    }
                    Step::Read => {
                        let (txn, view) = deferred
                            .begin(|| Ok(db.begin_read()?), |txn| txn)
                            .unwrap();
                        readers.push((txn, view, committed.clone()));
                    }
                    Step::Finish => {
                        if !readers.is_empty() {
                            readers.remove(0);
                        }
                    }
                }
                for (txn, view, model) in &readers {
                    expect_sees(txn, view, model)?;
                }
                if let Some((txn, _, keys, latest)) = &group {
                    let table = txn.open_table(CONTACTS_BY_EXTERNAL_ID).unwrap();
                    for k in 0..8 {
                        let ext = key(k);
                        let own = keys.ext("a", &ext);
                        let seen = or_stored(own.or_else(|| deferred.latest_ext("a", &ext)), || {
                            Ok(table.get(("a", ext.as_str()))?.map(|v| v.value()))
                        })
                        .unwrap();
                        prop_assert_eq!(seen, latest.get(&ext).copied(), "writer: {}", ext);
                    }
                }
            }
            // Once every reader is gone, a checkpoint leaves nothing deferred.
            readers.clear();
            if let Some((txn, _, _, _)) = group.take() {
                txn.abort().unwrap();
            }
            let txn = db.begin_write().unwrap();
            let seq = deferred.next_seq();
            deferred.flush(&txn, seq).unwrap();
            txn.commit().unwrap();
            deferred.checkpointed(seq);
            prop_assert_eq!(deferred.len(), 0);
            let (txn, view) = deferred.begin(|| Ok(db.begin_read()?), |txn| txn).unwrap();
            prop_assert!(view.settled());
            expect_sees(&txn, &view, &committed)?;
        }
    }
}
