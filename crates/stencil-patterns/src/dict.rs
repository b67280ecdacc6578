//! One dictionary namespace (values, meta, keys): strings to wire ids under a budget.
//!
//! Namespaces share the stream's dictionary id space (ids from 2, never reused) but each has its own
//! budget, so values never evict tags or keys. An evicted entry yields a `DictEntryDelete`; a string seen
//! again later gets a new id.

use rustc_hash::FxHashMap;
use stencil_codec::datum::{Datum, DictDefine};

use crate::budget::{Budget, Store};

#[derive(Debug)]
struct Entry {
    id: u64,
    text: Box<str>,
}

/// Strings to dictionary ids, bounded.
#[derive(Debug)]
pub struct Namespace {
    ids: FxHashMap<Box<str>, usize>,
    store: Store<Entry>,
}

/// Per-entry overhead counted on top of the text (map slot, slab slot, id).
const ENTRY_OVERHEAD: usize = 64;

impl Namespace {
    /// An empty namespace.
    pub fn new(budget: Budget) -> Self {
        Namespace {
            ids: FxHashMap::default(),
            store: Store::new(budget),
        }
    }

    /// The id of `text` if it is held; pins it for `epoch`.
    pub fn lookup(&mut self, text: &str, epoch: u64) -> Option<u64> {
        let slot = *self.ids.get(text)?;
        self.store.touch(slot, epoch);
        self.store.get(slot).map(|e| e.id)
    }

    /// Inserts `text` under a new id from `next_id`, pushing its define to `defines` and the deletes of
    /// anything evicted to `deletes`. `None` when the budget cannot make room (the caller inlines).
    pub fn insert(
        &mut self,
        text: &str,
        epoch: u64,
        next_id: &mut u64,
        defines: &mut Vec<Datum>,
        deletes: &mut Vec<Datum>,
    ) -> Option<u64> {
        let id = *next_id;
        let entry = Entry {
            id,
            text: text.into(),
        };
        let ids = &mut self.ids;
        let slot = self
            .store
            .insert(
                entry,
                text.len() * 2 + ENTRY_OVERHEAD,
                epoch,
                &mut |gone: Entry| {
                    ids.remove(&gone.text);
                    deletes.push(Datum::DictDelete { id: gone.id });
                },
            )
            .ok()?;
        *next_id += 1;
        self.ids.insert(text.into(), slot);
        defines.push(Datum::DictDefine(DictDefine {
            id,
            value: text.to_owned(),
        }));
        Some(id)
    }

    /// The id of `text`, inserting it if needed.
    pub fn intern(
        &mut self,
        text: &str,
        epoch: u64,
        next_id: &mut u64,
        defines: &mut Vec<Datum>,
        deletes: &mut Vec<Datum>,
    ) -> Option<u64> {
        self.lookup(text, epoch)
            .or_else(|| self.insert(text, epoch, next_id, defines, deletes))
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }

    /// Bytes accounted.
    pub fn bytes(&self) -> usize {
        self.store.bytes()
    }
}
