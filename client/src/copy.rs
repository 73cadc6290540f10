//! Copying backup sets of one account (same keys) from one store to
//! another, local or node: the seeding the 0.20 redesign notes describe —
//! a large first set backed up to a removable disc, carried to the
//! server's site and copied into the account there, after which backups
//! go over the network with only the changes.
//!
//! Objects go as they are (same keys, same ids), so the target keeps the
//! sets' ids and later backups find every unchanged chunk already there.
//! The walk starts at a set's roots and follows the ids each envelope
//! names in clear; an object the target already holds is not fetched, nor
//! anything below it (a store holds an object only once it holds all the
//! object names). Every object fetched is verified with the keys before it
//! is sent. Chunks go up as they arrive; trees (small) are kept and sent
//! after everything they name, deepest first; the set is committed last.
//! A copy that is killed leaves what reached the target, and the next run
//! sends only the rest.

use std::collections::{HashMap, HashSet};

use coffer_proto::ObjectId;
use coffer_proto::object::{self, ObjectKind};

use crate::browse::Catalog;
use crate::crypto;
use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::tree;

/// What a copy did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CopyReport {
    /// Set ids copied, and those the target held already.
    pub copied: Vec<String>,
    pub present: Vec<String>,
    pub objects_sent: u64,
    pub bytes_sent: u64,
    /// Objects the walk found the target holding (each with all below it).
    pub objects_present: u64,
}

/// Ids fetched from the source in one streamed request.
const WINDOW: usize = 1024;

/// Copies the sets `wanted` names (id prefixes; every set when empty),
/// oldest first, from `from` to `to`.
pub fn copy(from: &Repository, to: &Repository, wanted: &[String]) -> Result<CopyReport> {
    let catalog = Catalog::load(from)?;
    let sets: Vec<ObjectId> = match wanted.is_empty() {
        true => catalog.sets.iter().map(|s| s.id).collect(),
        false => wanted.iter().map(|w| catalog.find_set(w).map(|s| s.id)).collect::<Result<_>>()?,
    };
    let held: HashSet<ObjectId> = to.backend.sets()?.into_iter().map(|(id, _)| id).collect();
    let mut report = CopyReport::default();
    for id in sets {
        if held.contains(&id) {
            report.present.push(id.to_hex());
            continue;
        }
        copy_set(from, to, &id, &mut report)?;
        report.copied.push(id.to_hex());
    }
    Ok(report)
}

fn copy_set(from: &Repository, to: &Repository, id: &ObjectId, report: &mut CopyReport) -> Result<()> {
    let envelope = from.backend.get(id)?;
    crate::backupset::BackupSet::open(&from.keys, id, &envelope)?;
    let roots = decode(id, &envelope)?.refs;
    let mut trees: HashMap<ObjectId, (Vec<u8>, Vec<ObjectId>)> = HashMap::new();
    let mut seen: HashSet<ObjectId> = HashSet::new();
    let mut frontier = roots.clone();
    while !frontier.is_empty() {
        frontier.retain(|id| seen.insert(*id));
        let present = to.backend.has_many(&frontier)?;
        report.objects_present += present.iter().filter(|p| **p).count() as u64;
        let missing: Vec<ObjectId> =
            frontier.iter().zip(&present).filter(|(_, p)| !**p).map(|(id, _)| *id).collect();
        let mut next = Vec::new();
        for window in missing.chunks(WINDOW) {
            let mut ids = window.iter();
            from.backend.get_many(window, &mut |envelope| {
                let id = *ids.next().ok_or_else(|| Error::Invalid("more objects than asked for".into()))?;
                let refs = verify(from, &id, &envelope)?;
                if refs.is_empty() {
                    return send(to, id, &envelope, report);
                }
                next.extend(refs.iter().copied());
                trees.insert(id, (envelope, refs));
                Ok(())
            })?;
        }
        frontier = next;
    }
    let mut sent = HashSet::new();
    for root in &roots {
        send_tree(to, root, &trees, &mut sent, report)?;
    }
    let before = to.backend.position()?;
    to.backend.commit_set(*id, &envelope)?;
    to.cache.put_set(id, &envelope);
    to.cache.record_change(before, to.backend.position()?, Some(*id), None);
    Ok(())
}

/// Sends a tree object after every tree object it names (depth first).
fn send_tree(
    to: &Repository,
    id: &ObjectId,
    trees: &HashMap<ObjectId, (Vec<u8>, Vec<ObjectId>)>,
    sent: &mut HashSet<ObjectId>,
    report: &mut CopyReport,
) -> Result<()> {
    let Some((envelope, refs)) = trees.get(id) else { return Ok(()) };
    if !sent.insert(*id) {
        return Ok(());
    }
    for r in refs {
        send_tree(to, r, trees, sent, report)?;
    }
    send(to, *id, envelope, report)
}

fn send(to: &Repository, id: ObjectId, envelope: &[u8], report: &mut CopyReport) -> Result<()> {
    to.backend.put(id, envelope)?;
    report.objects_sent += 1;
    report.bytes_sent += envelope.len() as u64;
    Ok(())
}

fn decode<'a>(id: &ObjectId, envelope: &'a [u8]) -> Result<object::Object<'a>> {
    object::decode(envelope).map_err(|e| Error::Corrupt { what: "object", id: *id, problem: e.to_string() })
}

/// Checks an object fetched from the source with the keys (a chunk's or
/// tree's MAC binds it to its id); returns the ids it names.
fn verify(from: &Repository, id: &ObjectId, envelope: &[u8]) -> Result<Vec<ObjectId>> {
    let obj = decode(id, envelope)?;
    match obj.kind {
        ObjectKind::Chunk => {
            crypto::open_chunk(&from.keys, id, envelope)?;
        }
        ObjectKind::Tree => {
            tree::open_object(&from.keys, id, envelope)?;
        }
        other => {
            return Err(Error::Corrupt {
                what: "object",
                id: *id,
                problem: format!("a {} inside a set", other.name()),
            });
        }
    }
    Ok(obj.refs)
}
