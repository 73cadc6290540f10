//! What the store is known to hold, without asking it: the ids named by the
//! backup sets this client committed, kept in the cache (`held.ids`, see
//! `record`) with the store position at which they are true.
//!
//! Whatever a committed set names stays stored while the set does, and
//! removing a set moves the store's position; so while the store is at the
//! recorded position, every recorded id is held. A backup asks this record
//! before the store: a moved or copied file, or any chunk the account
//! stored before, costs no sealing and no round trip. The record only ever
//! says "held", never "missing", so one that is absent, damaged or made at
//! another position is set aside and costs only the store's own checks;
//! the next commit starts it again from what that set names.

mod record;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use coffer_proto::ObjectId;

use crate::backend::{Backend, Position};
use crate::cache::Cache;
use crate::error::Result;

#[derive(Default)]
pub struct Held {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The record, once read and found to be at the store's position.
    record: Option<record::Record>,
    read: bool,
    /// The trees this backup stored, with the ids each names: what a set
    /// committed from them names (a stored object the set does not name,
    /// say a file's first read before it changed, may be collected).
    trees: HashMap<ObjectId, Vec<ObjectId>>,
}

impl Held {
    /// A backup (or an attempt at one) begins: nothing it learnt before
    /// is carried over.
    pub fn begin(&self) {
        *self.state.lock().unwrap() = State::default();
    }

    /// Which of `ids` are known held: by the record, else by the backend
    /// without a round trip (see [`Backend::known_held`]).
    pub fn known(&self, cache: &Cache, backend: &dyn Backend, ids: &[ObjectId]) -> Result<Vec<bool>> {
        let mut state = self.state.lock().unwrap();
        if !state.read {
            state.read = true;
            let position = backend.position()?;
            state.record = record::read(cache).filter(|r| r.position == position);
            tracing::debug!(ids = state.record.as_ref().map_or(0, |r| r.ids.len()), "objects known held");
        }
        let recorded: Vec<bool> =
            ids.iter().map(|id| state.record.as_ref().is_some_and(|r| r.ids.contains(id))).collect();
        drop(state);
        let rest: Vec<ObjectId> =
            ids.iter().zip(&recorded).filter(|(_, r)| !**r).map(|(id, _)| *id).collect();
        if rest.is_empty() {
            return Ok(recorded);
        }
        let mut asked = backend.known_held(&rest)?.into_iter();
        Ok(recorded.into_iter().map(|r| r || asked.next().unwrap_or(false)).collect())
    }

    pub fn tree_stored(&self, id: ObjectId, refs: &[ObjectId]) {
        self.state.lock().unwrap().trees.insert(id, refs.to_vec());
    }

    /// This client committed `set` of `roots`, moving the store from
    /// `before` to `after`: what the set names is held at `after`, and so is
    /// the record of `before` when nothing else changed the store between.
    pub fn committed(
        &self,
        cache: &Cache,
        before: Position,
        after: Position,
        set: ObjectId,
        roots: &[ObjectId],
    ) {
        let mut state = self.state.lock().unwrap();
        let ids = named(&state.trees, roots);
        let continues = crate::cache::moved_only_by(before, after, Some(set), None);
        let earlier = match state.record.take() {
            Some(record) => Some(record),
            None if !state.read && continues => record::read(cache).filter(|r| r.position == before),
            None => None,
        };
        match earlier {
            Some(earlier) if continues => record::append(cache, earlier, after, ids),
            _ => record::write(cache, after, &ids),
        }
        *state = State::default();
    }
}

/// The ids reached from `roots` through the trees this backup stored (a
/// tree it did not store, one unchanged since an earlier set, is named but
/// not walked).
fn named(trees: &HashMap<ObjectId, Vec<ObjectId>>, roots: &[ObjectId]) -> HashSet<ObjectId> {
    let mut named = HashSet::new();
    let mut next = roots.to_vec();
    while let Some(id) = next.pop() {
        if named.insert(id) {
            next.extend(trees.get(&id).into_iter().flatten().copied());
        }
    }
    named
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ObjectId {
        ObjectId::from_slice(&[n; 32]).unwrap()
    }

    #[test]
    fn a_set_names_what_its_stored_trees_reach_and_no_more() {
        let trees = HashMap::from([(id(1), vec![id(2), id(3)]), (id(3), vec![id(4)]), (id(9), vec![id(8)])]);
        let reached = named(&trees, &[id(1), id(7)]);
        assert_eq!(reached, HashSet::from([id(1), id(2), id(3), id(4), id(7)]));
    }
}
