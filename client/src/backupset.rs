//! Backup sets: one snapshot of one or more backup locations.
//!
//! The cleartext header ([`SetHeader`]) tells the node the time, marker, roots
//! and statistics; the sealed part holds what only the client may read: the
//! host, each location's absolute path and the metadata of its root directory,
//! and tags. The set's id is the keyed hash of both parts; since the header
//! holds the time, every set has its own id.

use coffer_proto::object::{self, ObjectKind};
use coffer_proto::set::SET_HEADER_VERSION;
use coffer_proto::{ObjectId, SetHeader, SetStats};
use serde::{Deserialize, Serialize};

use crate::crypto;
use crate::error::{Error, Result};
use crate::keys::Keys;
use crate::tree::Entry;

/// A backed-up directory and the entry describing its root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// Absolute path as backed up (raw bytes).
    pub path: Vec<u8>,
    /// The root directory's metadata; `content` holds its tree.
    pub root: Entry,
}

impl Location {
    /// The location's path for people (see `names`).
    pub fn shown_path(&self) -> String {
        crate::names::escape(&self.path)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetContents {
    pub host: String,
    pub locations: Vec<Location>,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSet {
    pub id: ObjectId,
    pub header: SetHeader,
    pub contents: SetContents,
}

impl BackupSet {
    /// Builds and seals a set; returns it and its envelope.
    pub fn seal(
        keys: &Keys,
        time_ns: i64,
        marker: u64,
        stats: SetStats,
        contents: SetContents,
    ) -> (BackupSet, Vec<u8>) {
        let roots = contents.locations.iter().filter_map(|l| l.root.tree()).collect();
        let header = SetHeader { version: SET_HEADER_VERSION, time_ns, marker, roots, stats };
        let header_bytes = postcard::to_stdvec(&header).expect("set header serializes");
        let plain = postcard::to_stdvec(&contents).expect("set contents serialize");
        let id = keys.object_id(&[header_bytes.as_slice(), plain.as_slice()].concat());
        let sealed = crypto::seal_meta(keys, &id, ObjectKind::Set, &header_bytes, &plain);
        let envelope = object::encode(ObjectKind::Set, &header.roots, &header.encode_body(&sealed));
        (BackupSet { id, header, contents }, envelope)
    }

    pub fn open(keys: &Keys, id: &ObjectId, envelope: &[u8]) -> Result<BackupSet> {
        let corrupt = |problem: String| Error::Corrupt { what: "backup set", id: *id, problem };
        let obj = object::decode(envelope).map_err(|e| corrupt(e.to_string()))?;
        if obj.kind != ObjectKind::Set {
            return Err(corrupt(format!("is a {}, not a backup set", obj.kind.name())));
        }
        let (header, sealed) = SetHeader::decode_body(obj.body).map_err(|e| corrupt(e.to_string()))?;
        let header_bytes = postcard::to_stdvec(&header).expect("set header serializes");
        let plain = crypto::open_meta(keys, id, ObjectKind::Set, &header_bytes, sealed)?;
        if keys.object_id(&[header_bytes.as_slice(), plain.as_slice()].concat()) != *id {
            return Err(corrupt("content does not match its id".into()));
        }
        let contents: SetContents = postcard::from_bytes(&plain).map_err(|e| corrupt(e.to_string()))?;
        Ok(BackupSet { id: *id, header, contents })
    }

    pub fn location(&self, path: &[u8]) -> Option<&Location> {
        self.contents.locations.iter().find(|l| l.path == path)
    }
}
