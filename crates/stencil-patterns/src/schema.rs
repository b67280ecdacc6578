//! JSON schemas and their key entries (PATTERNS.md §6–§7).
//!
//! A schema is defined once per distinct shape (message key, column keys, kinds) and evicted by CLOCK under
//! its budget. Keys are dictionary entries reference-counted by the live schemas that use them: a key is
//! deleted only after the last schema using it, so no schema ever outlives its keys, and at the key
//! budget a new shape takes the text path instead.

use rustc_hash::FxHashMap;
use stencil_codec::datum::{Datum, DictDefine, SchemaDefine};

use crate::budget::{Budget, Store};
use crate::json::Plan;

#[derive(Debug)]
struct Schema {
    id: u64,
    identity: Box<str>,
    keys: Vec<Box<str>>,
}

#[derive(Debug, Default)]
struct Keys {
    entries: FxHashMap<Box<str>, (u64, u32)>,
    bytes: usize,
}

impl Keys {
    fn release(&mut self, key: &str, deletes: &mut Vec<Datum>) {
        if let Some((id, refs)) = self.entries.get_mut(key) {
            *refs -= 1;
            if *refs == 0 {
                let id = *id;
                self.entries.remove(key);
                self.bytes -= key.len() + 64;
                deletes.push(Datum::DictDelete { id });
            }
        }
    }
}

/// The schemas and keys of one engine.
#[derive(Debug)]
pub struct Schemas {
    by_identity: FxHashMap<Box<str>, usize>,
    store: Store<Schema>,
    keys: Keys,
    key_budget: Budget,
    next_id: u64,
}

impl Schemas {
    /// Empty tables; schema ids start at 2.
    pub fn new(schemas: Budget, keys: Budget) -> Self {
        Schemas {
            by_identity: FxHashMap::default(),
            store: Store::new(schemas),
            keys: Keys::default(),
            key_budget: keys,
            next_id: 2,
        }
    }

    /// (schemas, keys, bytes) held.
    pub fn size(&self) -> (usize, usize, usize) {
        (
            self.store.len(),
            self.keys.entries.len(),
            self.store.bytes() + self.keys.bytes,
        )
    }

    /// The schema id for `plan`, defining it (keys first) if needed. Defines go to `defines`, deletes of
    /// evicted schemas and their last-used keys to `deletes`. `None` at a budget: use the text path.
    pub fn schema_for(
        &mut self,
        plan: &Plan,
        epoch: u64,
        next_dict_id: &mut u64,
        defines: &mut Vec<Datum>,
        deletes: &mut Vec<Datum>,
    ) -> Option<u64> {
        let identity = plan.identity();
        if let Some(&slot) = self.by_identity.get(identity.as_str()) {
            self.store.touch(slot, epoch);
            return self.store.get(slot).map(|s| s.id);
        }
        let key_paths: Vec<&str> = std::iter::once(plan.message_key.as_str())
            .chain(plan.columns.iter().map(|(k, _)| k.as_str()))
            .collect();
        // Make room for the schema first (its eviction may free keys), then check the key budget.
        let schema = Schema {
            id: self.next_id,
            identity: identity.as_str().into(),
            keys: key_paths.iter().map(|k| Box::from(*k)).collect(),
        };
        let cost = identity.len() + 64 + 16 * key_paths.len();
        let keys = &mut self.keys;
        let by_identity = &mut self.by_identity;
        let slot = self
            .store
            .insert(schema, cost, epoch, &mut |gone: Schema| {
                deletes.push(Datum::SchemaDelete { id: gone.id });
                by_identity.remove(&gone.identity);
                for k in &gone.keys {
                    keys.release(k, deletes);
                }
            })
            .ok()?;
        let mut distinct: Vec<&str> = key_paths.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let new: Vec<&str> = distinct
            .iter()
            .copied()
            .filter(|k| !self.keys.entries.contains_key(*k))
            .collect();
        let new_bytes: usize = new.iter().map(|k| k.len() + 64).sum();
        if self.keys.entries.len() + new.len() > self.key_budget.count
            || self.keys.bytes + new_bytes > self.key_budget.bytes
        {
            self.store.remove(slot);
            return None;
        }
        let mut key_ids = Vec::with_capacity(key_paths.len());
        for k in &key_paths {
            let entry = self.keys.entries.entry(Box::from(*k)).or_insert_with(|| {
                let id = *next_dict_id;
                *next_dict_id += 1;
                defines.push(Datum::DictDefine(DictDefine {
                    id,
                    value: (*k).to_owned(),
                }));
                (id, 0)
            });
            entry.1 += 1;
            key_ids.push(entry.0);
        }
        self.keys.bytes += new_bytes;
        let id = self.next_id;
        self.next_id += 1;
        self.by_identity.insert(identity.into(), slot);
        defines.push(Datum::SchemaDefine(SchemaDefine {
            id,
            keys: key_ids[1..].to_vec(),
            message_key: key_ids[0],
            kinds: plan.columns.iter().map(|(_, l)| l.kind()).collect(),
            message_at: plan.message_at,
        }));
        Some(id)
    }
}
