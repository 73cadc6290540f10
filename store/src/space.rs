//! Where an account's space goes: the operator's usage report.
//!
//! The node cannot see names, so it divides space by what the reference graph
//! shows. *Current* bytes are the objects the newest backup set reaches;
//! *old* bytes are reached only from older sets (old versions of files and
//! files since deleted, which need names to tell apart); *deleted* bytes are
//! pack space held by objects that no set reaches: freed objects awaiting a
//! pack rewrite and uploads waiting out their grace period. Only envelopes
//! count: a pack's header, id prefixes and trailer are nobody's deleted data.

use std::collections::{HashMap, HashSet};

use coffer_proto::{ObjectId, ObjectKind, object};

use crate::error::Result;
use crate::index::{self, ObjectEntry, PackStats};
use crate::packfile;
use crate::store::{AccountId, Store};

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Space {
    pub current_bytes: u64,
    pub old_bytes: u64,
    pub deleted_bytes: u64,
    pub sets: u64,
}

impl Store {
    /// Divides an account's pack space into current, old and deleted bytes.
    pub fn space(&self, account: AccountId) -> Result<Space> {
        let objects = self.objects(account)?;
        let sets = self.sets(account)?;
        let mut seen = HashSet::new();
        let current = match sets.last() {
            Some((newest, _)) => self.reach(account, &objects, [*newest], &mut seen)?,
            None => 0,
        };
        let old = self.reach(account, &objects, sets.iter().map(|(id, _)| *id), &mut seen)?;
        let packs = index::scan_account::<PackStats>(self.db(), index::CF_PACKS, account)?;
        let envelope_bytes: u64 =
            packs.iter().map(|(_, p)| p.bytes.saturating_sub(packfile::framing(p.objects))).sum();
        Ok(Space {
            current_bytes: current,
            old_bytes: old,
            deleted_bytes: envelope_bytes.saturating_sub(current + old),
            sets: sets.len() as u64,
        })
    }

    /// Bytes of the objects reachable from `roots` not already in `seen`.
    fn reach(
        &self,
        account: AccountId,
        objects: &HashMap<ObjectId, ObjectEntry>,
        roots: impl IntoIterator<Item = ObjectId>,
        seen: &mut HashSet<ObjectId>,
    ) -> Result<u64> {
        let mut bytes = 0;
        let mut work: Vec<ObjectId> = roots.into_iter().collect();
        while let Some(id) = work.pop() {
            let Some(entry) = objects.get(&id) else { continue };
            if !seen.insert(id) {
                continue;
            }
            bytes += entry.len as u64;
            if entry.kind != ObjectKind::Chunk {
                let envelope = self.read_entry(account, &id, entry)?;
                let obj = object::decode(&envelope).expect("read_entry verified the envelope");
                work.extend(obj.refs);
            }
        }
        Ok(bytes)
    }
}
