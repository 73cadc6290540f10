//! Sealing and opening objects.
//!
//! - Chunks: optionally zstd-compressed, then AES-256-GCM under `data_key`
//!   with a random 96-bit nonce. Body: `flags u8 | nonce (12) | ciphertext+tag`;
//!   the id and flags are associated data, so a store cannot swap one chunk
//!   for another. Opening re-derives the id from the plaintext as a final check.
//! - Metadata (trees, backup sets): Blowfish-CBC with PKCS#7 padding under a
//!   key derived per object from `meta_key` and the object id. Body:
//!   `iv (8) | ciphertext | HMAC-SHA256 tag (32)`; the tag covers the object id,
//!   the kind, the cleartext part the node reads (referenced ids, set header)
//!   and the ciphertext, so neither can be altered unseen.

use aes_gcm::aead::{Aead, KeyInit as _, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use blowfish::Blowfish;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit, block_padding::Pkcs7};
use coffer_proto::ObjectId;
use coffer_proto::object::{self, ObjectKind};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::{Error, Result};
use crate::keys::Keys;

const FLAG_ZSTD: u8 = 1;
const NONCE_LEN: usize = 12;
const IV_LEN: usize = 8;
const TAG_LEN: usize = 32;
const ZSTD_LEVEL: i32 = 1;

fn corrupt(id: &ObjectId, what: &'static str, problem: impl Into<String>) -> Error {
    Error::Corrupt { what, id: *id, problem: problem.into() }
}

/// Seals a chunk's plaintext into an object envelope.
pub fn seal_chunk(keys: &Keys, id: &ObjectId, plain: &[u8], compress: bool) -> Vec<u8> {
    let compressed = compress.then(|| crate::squash::compress(plain, ZSTD_LEVEL)).flatten();
    let (flags, payload) = match &compressed {
        // Keep compression only where it pays for itself.
        Some(c) if c.len() + c.len() / 16 < plain.len() => (FLAG_ZSTD, c.as_slice()),
        _ => (0, plain),
    };
    let nonce: [u8; NONCE_LEN] = rand::random();
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&keys.data_key));
    let aad = chunk_aad(id, flags);
    let sealed = cipher
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: payload, aad: &aad })
        .expect("AES-GCM encryption of an in-memory buffer cannot fail");
    let mut body = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
    body.push(flags);
    body.extend_from_slice(&nonce);
    body.extend_from_slice(&sealed);
    object::encode(ObjectKind::Chunk, &[], &body)
}

fn chunk_aad(id: &ObjectId, flags: u8) -> [u8; 33] {
    let mut aad = [0; 33];
    aad[..32].copy_from_slice(id.as_bytes());
    aad[32] = flags;
    aad
}

/// Verifies and decrypts a chunk envelope.
pub fn open_chunk(keys: &Keys, id: &ObjectId, envelope: &[u8]) -> Result<Vec<u8>> {
    let obj = object::decode(envelope).map_err(|e| corrupt(id, "chunk", e.to_string()))?;
    if obj.kind != ObjectKind::Chunk {
        return Err(corrupt(id, "chunk", format!("is a {}, not a chunk", obj.kind.name())));
    }
    let body = obj.body;
    if body.len() < 1 + NONCE_LEN {
        return Err(corrupt(id, "chunk", "body too short"));
    }
    let flags = body[0];
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&keys.data_key));
    let payload = cipher
        .decrypt(
            Nonce::from_slice(&body[1..1 + NONCE_LEN]),
            Payload { msg: &body[1 + NONCE_LEN..], aad: &chunk_aad(id, flags) },
        )
        .map_err(|_| corrupt(id, "chunk", "authentication failed (wrong keys or tampered data)"))?;
    let plain = match flags {
        0 => payload,
        FLAG_ZSTD => {
            crate::squash::decompress(&payload, object::MAX_OBJECT).map_err(|e| corrupt(id, "chunk", e))?
        }
        other => return Err(corrupt(id, "chunk", format!("unknown flags {other:#x}"))),
    };
    if keys.object_id(&plain) != *id {
        return Err(corrupt(id, "chunk", "content does not match its id"));
    }
    Ok(plain)
}

fn meta_tag(keys: &Keys, id: &ObjectId, kind: ObjectKind, clear: &[u8], sealed: &[u8]) -> [u8; TAG_LEN] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&keys.mac_key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(&[kind as u8]);
    mac.update(&(clear.len() as u64).to_le_bytes());
    mac.update(clear);
    mac.update(sealed);
    mac.finalize().into_bytes().into()
}

fn meta_cipher_key(keys: &Keys, id: &ObjectId) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&keys.meta_key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.finalize().into_bytes().into()
}

/// Seals metadata `plain`; `clear` is what travels beside it unencrypted
/// (and is authenticated by the tag).
pub fn seal_meta(keys: &Keys, id: &ObjectId, kind: ObjectKind, clear: &[u8], plain: &[u8]) -> Vec<u8> {
    let iv: [u8; IV_LEN] = rand::random();
    let key = meta_cipher_key(keys, id);
    let ct = cbc::Encryptor::<Blowfish>::new_from_slices(&key, &iv)
        .expect("32-byte key and 8-byte IV are valid for Blowfish-CBC")
        .encrypt_padded_vec_mut::<Pkcs7>(plain);
    let mut sealed = Vec::with_capacity(IV_LEN + ct.len() + TAG_LEN);
    sealed.extend_from_slice(&iv);
    sealed.extend_from_slice(&ct);
    let tag = meta_tag(keys, id, kind, clear, &sealed);
    sealed.extend_from_slice(&tag);
    sealed
}

/// Verifies and decrypts metadata sealed by [`seal_meta`].
pub fn open_meta(
    keys: &Keys,
    id: &ObjectId,
    kind: ObjectKind,
    clear: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>> {
    let what = kind.name();
    if sealed.len() < IV_LEN + TAG_LEN {
        return Err(corrupt(id, what, "sealed metadata too short"));
    }
    let (body, tag) = sealed.split_at(sealed.len() - TAG_LEN);
    let expected = meta_tag(keys, id, kind, clear, body);
    if !constant_time_eq(&expected, tag) {
        return Err(corrupt(id, what, "authentication failed (wrong keys or tampered data)"));
    }
    let key = meta_cipher_key(keys, id);
    cbc::Decryptor::<Blowfish>::new_from_slices(&key, &body[..IV_LEN])
        .expect("valid key and IV lengths")
        .decrypt_padded_vec_mut::<Pkcs7>(&body[IV_LEN..])
        .map_err(|_| corrupt(id, what, "bad padding after decryption"))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keys() -> Keys {
        Keys::from_master(&[7; 64])
    }

    proptest! {
        #[test]
        fn chunk_round_trip_and_tamper(data in prop::collection::vec(any::<u8>(), 0..4000), compress: bool,
                                       at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let k = keys();
            let id = k.object_id(&data);
            let env = seal_chunk(&k, &id, &data, compress);
            prop_assert_eq!(open_chunk(&k, &id, &env).unwrap(), data.clone());
            let mut bad = env.clone();
            let i = at.index(bad.len());
            bad[i] ^= 1 << bit;
            prop_assert!(open_chunk(&k, &id, &bad).is_err());
            prop_assert!(open_chunk(&k, &id, &env[..at.index(env.len())]).is_err());
            prop_assert!(open_chunk(&Keys::from_master(&[8; 64]), &id, &env).is_err());
        }

        #[test]
        fn meta_round_trip_and_tamper(plain in prop::collection::vec(any::<u8>(), 0..2000),
                                      clear in prop::collection::vec(any::<u8>(), 0..100),
                                      at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let k = keys();
            let id = k.object_id(&plain);
            let sealed = seal_meta(&k, &id, ObjectKind::Tree, &clear, &plain);
            prop_assert_eq!(open_meta(&k, &id, ObjectKind::Tree, &clear, &sealed).unwrap(), plain.clone());
            let mut bad = sealed.clone();
            let i = at.index(bad.len());
            bad[i] ^= 1 << bit;
            prop_assert!(open_meta(&k, &id, ObjectKind::Tree, &clear, &bad).is_err());
            prop_assert!(open_meta(&k, &id, ObjectKind::Tree, &clear, &sealed[..at.index(sealed.len())]).is_err());
            let mut bad_clear = clear.clone();
            bad_clear.push(0);
            prop_assert!(open_meta(&k, &id, ObjectKind::Tree, &bad_clear, &sealed).is_err());
        }
    }
}
