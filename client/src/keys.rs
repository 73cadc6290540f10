//! The account's keys.
//!
//! A keys file is 64 random bytes (the master secret), mode 0600, and never
//! leaves the client. Everything else is derived with HKDF-SHA256:
//! `id_key` (keyed BLAKE3 that names objects), `data_key` (AES-256-GCM for file
//! data), `meta_key` (Blowfish-CBC for names and attributes), `mac_key`
//! (HMAC-SHA256 over metadata), and a fingerprint the store records so a wrong
//! keys file is refused with a clear error instead of producing garbage.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use coffer_proto::ObjectId;
use hkdf::Hkdf;
use sha2::Sha256;

use crate::error::{Error, Result};

pub const MASTER_LEN: usize = 64;
const SALT: &[u8] = b"coffer keys v1";

pub struct Keys {
    pub(crate) id_key: [u8; 32],
    pub(crate) data_key: [u8; 32],
    pub(crate) meta_key: [u8; 32],
    pub(crate) mac_key: [u8; 32],
    fingerprint: [u8; 32],
}

/// Shows only the fingerprint: key material never reaches a log.
impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys").field("fingerprint", &self.fingerprint()).finish_non_exhaustive()
    }
}

impl Keys {
    pub fn from_master(master: &[u8; MASTER_LEN]) -> Keys {
        let hk = Hkdf::<Sha256>::new(Some(SALT), master);
        let derive = |info: &str| {
            let mut out = [0; 32];
            hk.expand(info.as_bytes(), &mut out).expect("32 bytes is a valid HKDF output length");
            out
        };
        Keys {
            id_key: derive("id"),
            data_key: derive("data"),
            meta_key: derive("meta"),
            mac_key: derive("mac"),
            fingerprint: derive("fingerprint"),
        }
    }

    /// Writes a new keys file; refuses to overwrite an existing one.
    pub fn create(path: &Path) -> Result<Keys> {
        let mut master = [0u8; MASTER_LEN];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut master);
        let keys_err = |problem: String| Error::Keys { path: path.to_path_buf(), problem };
        let mut file =
            OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    keys_err("already exists; refusing to overwrite it".into())
                } else {
                    keys_err(e.to_string())
                }
            })?;
        file.write_all(&master).and_then(|_| file.sync_all()).map_err(|e| keys_err(e.to_string()))?;
        Ok(Keys::from_master(&master))
    }

    pub fn load(path: &Path) -> Result<Keys> {
        let keys_err = |problem: String| Error::Keys { path: path.to_path_buf(), problem };
        let bytes = fs::read(path).map_err(|e| keys_err(e.to_string()))?;
        let master: [u8; MASTER_LEN] = bytes.as_slice().try_into().map_err(|_| {
            keys_err(format!("is {} bytes; a Coffer keys file is exactly {MASTER_LEN}", bytes.len()))
        })?;
        Ok(Keys::from_master(&master))
    }

    pub fn fingerprint(&self) -> String {
        hex::encode(self.fingerprint)
    }

    /// The id of an object with this plaintext.
    pub fn object_id(&self, plaintext: &[u8]) -> ObjectId {
        ObjectId(*blake3::keyed_hash(&self.id_key, plaintext).as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn create_load_and_refuse_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        let created = Keys::create(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read(&path).unwrap().len(), MASTER_LEN);
        assert_eq!(Keys::load(&path).unwrap().fingerprint(), created.fingerprint());
        assert!(Keys::create(&path).unwrap_err().to_string().contains("refusing to overwrite"));
        fs::write(&path, b"short").unwrap();
        assert!(Keys::load(&path).unwrap_err().to_string().contains("exactly 64"));
    }

    #[test]
    fn different_masters_differ() {
        let a = Keys::from_master(&[1; MASTER_LEN]);
        let b = Keys::from_master(&[2; MASTER_LEN]);
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.object_id(b"x"), b.object_id(b"x"));
        assert_ne!(a.data_key, a.meta_key);
    }
}
