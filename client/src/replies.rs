//! Reading a node's replies: a failed call as the client's error (a lost
//! connection, a node sending the client elsewhere, a refusal), and the
//! values of an answer as the client's types, each checked.

use coffer_proto::tls;
use coffer_proto::wire;
use coffer_proto::{ObjectId, SetHeader, SetStats, SetsDigest};
use coffer_store::SetRecord;

use crate::error::{Error, Result};

/// What a failed call means: a broken connection (try again, perhaps
/// elsewhere), a node that sends us to the nodes holding the account, or a
/// refusal to report.
pub(crate) fn call_error(node: &str, status: tonic::Status) -> Error {
    let node = node.to_string();
    match status.code() {
        // A login the node does not know: tonic reconnected under us.
        tonic::Code::Unauthenticated => Error::SessionLost { node, message: status.message().into() },
        // The connection itself failed (reset, protocol error, node gone).
        tonic::Code::Unavailable
        | tonic::Code::Unknown
        | tonic::Code::Cancelled
        | tonic::Code::DeadlineExceeded => {
            // The cause (a refused certificate, a reset) is in the sources.
            Error::SessionLost { node, message: format!("connection lost: {}", tls::error_chain(&status)) }
        }
        _ => match status.metadata().get(wire::HELD_ON).and_then(|v| v.to_str().ok()) {
            Some(list) => Error::NotHeld {
                node,
                message: status.message().into(),
                elsewhere: list.split(',').filter(|a| !a.is_empty()).map(String::from).collect(),
            },
            None => Error::Node { node, message: status.message().into() },
        },
    }
}

/// A failed login. Under TLS 1.3 a node checks a client's certificate after
/// the client has sent its login, and a refused one may reach the client as
/// only a closed connection, without the node's alert: say what it may mean.
pub(crate) fn login_error(node: &str, status: tonic::Status) -> Error {
    match call_error(node, status) {
        Error::SessionLost { node, message } if !message.contains("certificate") => Error::SessionLost {
            node,
            message: format!(
                "{message} (during login: the node may have refused this client's certificate, \
                 revoked or expired; the node's log says why)"
            ),
        },
        other => other,
    }
}

pub(crate) fn id_from_wire(bytes: &[u8]) -> Result<ObjectId> {
    ObjectId::from_slice(bytes)
        .ok_or_else(|| Error::Invalid(format!("node sent a {}-byte object id", bytes.len())))
}

/// A sets digest as the node sends it (hex of 32 bytes).
pub(crate) fn digest_from_wire(hex_text: &str) -> Result<SetsDigest> {
    hex::decode(hex_text)
        .ok()
        .and_then(|bytes| SetsDigest::from_slice(&bytes))
        .ok_or_else(|| Error::Invalid(format!("node sent a malformed sets digest `{hex_text:.80}`")))
}

pub(crate) fn set_record(s: wire::SetInfo) -> Result<(ObjectId, SetRecord)> {
    let header = SetHeader {
        version: s.version as u8,
        time_ns: s.time_ns,
        marker: s.marker,
        roots: s.roots.iter().map(|r| id_from_wire(r)).collect::<Result<_>>()?,
        stats: SetStats { files: s.files, dirs: s.dirs, bytes: s.bytes },
    };
    Ok((id_from_wire(&s.id)?, SetRecord { header, committed_ns: s.committed_ns }))
}
