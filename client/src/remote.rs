//! The remote backend: the server group's store nodes over gRPC and TLS
//! (`coffer://HOST:PORT`).
//!
//! Which node a session goes to is the [`failover`] connector's choice. A
//! broken session is replaced by a new one, perhaps on another node.
//!
//! What a session told the client is knowledge about one node: the ids it
//! said it holds, the objects sent to it. A backup builds on that knowledge
//! (a tree names chunks the node vouched for), so it must never carry it to
//! another node. When a session that vouched for anything breaks, the
//! backend is *spoilt*: every call fails with [`Error::Interrupted`] until
//! the caller calls [`Backend::start_over`] and begins its work again, so
//! no thread of the old attempt can put a tree on the new node that names
//! what only the old one had. Likewise when a new session reports another
//! [`Position`] (marker and sets digest) than the one expected
//! ([`Error::StoreChanged`]).
//!
//! The connection is opened lazily, on the first operation that needs the
//! node, so a backup in which nothing changed never connects at all. Login
//! checks the keys fingerprint and reports the account's position; when the
//! caller said which position it expects (its cache was built there) and the
//! node reports another, the first operation fails with
//! [`Error::StoreChanged`] so the caller can drop its cache and start again.
//!
//! Uploads go through the session's [`upload`] pipeline: `put` adds the
//! object to a batch, and the pipeline checks each batch against the node
//! with one `Have` and streams what it lacks, with no round trip per object
//! or file; `flush` closes the stream and waits until the node has made
//! everything durable. So the scanner asks `known_held` (what this session
//! already sent, no round trip) instead of `has_many`. Ids sent in this
//! session count as present for both. Reads (`has_many`, `get`) run on
//! clones of the client outside the session lock, so the scanner's and
//! restorer's threads share the connection.
//!
//! [`upload`]: crate::upload

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use coffer_proto::tls::{self, MAX_MESSAGE, TlsFiles};
use coffer_proto::wire;
use coffer_proto::wire::store_client::StoreClient;
use coffer_proto::{ObjectId, StoreUrl};
use coffer_store::{ForgetReport, PutOutcome, SetRecord, Usage};
use tokio::runtime::Runtime;
use tonic::transport::Channel;

use crate::backend::{Backend, Committed, Position};
use crate::error::{Error, Result};
use crate::failover::{self, Connection, Policy, Servers};
use crate::replies::{call_error, digest_from_wire, login_error, set_record};
use crate::upload::{Skipped, Upload};

/// Ids per `Have` request.
const HAVE_BATCH: usize = 16_384;

/// How a client reaches the server group: the servers, and the TLS files
/// that prove who it is.
#[derive(Debug, Clone)]
pub struct Group {
    pub servers: Servers,
    pub tls: TlsFiles,
    /// Where to keep the group's node list that each login brings.
    pub group_file: Option<PathBuf>,
    /// The client's last failure, reported at each login (see `failure`).
    pub failure_file: Option<PathBuf>,
    pub policy: Policy,
}

/// Whether the session takes the account's single writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

pub struct RemoteBackend {
    servers: Mutex<Servers>,
    tls: TlsFiles,
    group_file: Option<PathBuf>,
    failure_file: Option<PathBuf>,
    policy: Policy,
    fingerprint: String,
    access: Access,
    register_keys: bool,
    runtime: Runtime,
    session: Mutex<Option<Session>>,
    /// The position the next session must report: the cache's at first, then
    /// that of the session before, so that a backup learns when a reconnect
    /// landed on a replica holding other sets.
    expected_position: Mutex<Option<Position>>,
    /// The server of the newest session, for error messages.
    current: Mutex<String>,
    generations: AtomicU64,
    /// Why every call fails until [`Backend::start_over`]; see the module comment.
    spoilt: Mutex<Option<Spoilt>>,
    /// Objects put that the node turned out to hold, since last taken.
    skipped: Mutex<Skipped>,
}

/// Why the caller's work so far no longer holds.
#[derive(Debug, Clone)]
enum Spoilt {
    /// A session that vouched for objects broke.
    Interrupted { node: String, message: String },
    /// A new session reported another position than the one expected.
    Changed { expected: Position, found: Position },
}

impl Spoilt {
    fn error(&self) -> Error {
        match self.clone() {
            Spoilt::Interrupted { node, message } => Error::Interrupted { node, message },
            Spoilt::Changed { expected, found } => Error::StoreChanged { expected, found },
        }
    }
}

struct Session {
    /// Which connection this is (each reconnect makes a new one).
    generation: u64,
    /// The node's name, as it gave it at login.
    node: String,
    client: StoreClient<Channel>,
    position: Position,
    upload: Option<Upload>,
    sent: HashSet<ObjectId>,
    /// Whether the node said it holds any object this session asked about.
    vouched: bool,
}

impl Session {
    /// Whether the caller may have built on what this session said.
    fn vouched_for_anything(&self) -> bool {
        self.vouched || !self.sent.is_empty()
    }
}

impl Connection for Session {
    fn marker(&self) -> u64 {
        self.position.marker
    }
}

impl RemoteBackend {
    pub fn new(group: Group, fingerprint: String, access: Access) -> Result<RemoteBackend> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Error::Invalid(format!("cannot start the network runtime: {e}")))?;
        Ok(RemoteBackend {
            current: Mutex::new(group.servers.primary().to_string()),
            servers: Mutex::new(group.servers),
            tls: group.tls,
            group_file: group.group_file,
            failure_file: group.failure_file,
            policy: group.policy,
            fingerprint,
            access,
            register_keys: false,
            runtime,
            session: Mutex::new(None),
            expected_position: Mutex::new(None),
            generations: AtomicU64::new(0),
            spoilt: Mutex::new(None),
            skipped: Mutex::default(),
        })
    }

    /// `coffer init`: register the keys fingerprint if the account has none.
    pub fn registering_keys(mut self) -> Self {
        self.register_keys = true;
        self
    }

    /// Writes the node list through a temporary file, so a reader never sees
    /// half of it. Losing it costs only failover hints, so errors are logged.
    fn remember_group(&self, nodes: &[wire::GroupNode]) {
        let Some(path) = &self.group_file else { return };
        let list: Vec<_> = nodes
            .iter()
            .map(|n| serde_json::json!({"id": n.id, "name": n.name, "address": n.address, "site": n.site}))
            .collect();
        let json = serde_json::to_vec_pretty(&list).unwrap_or_default();
        if let Err(e) = crate::cache::write_private(path, &json) {
            tracing::warn!(path = %path.display(), error = %e, "could not save the group's node list");
        }
    }

    fn node_error(&self, status: tonic::Status) -> Error {
        call_error(&self.current.lock().unwrap(), status)
    }

    /// Runs `f` with the session, connecting and logging in first if needed.
    ///
    /// When the connection breaks, or tonic silently re-establishes it and
    /// the node's session (login, writer) belonged to the old one, connect
    /// again (perhaps to another node) and run `f` once more. Every
    /// operation is idempotent (a put sent twice is stored once), so the
    /// retry is safe; uploads not yet committed are not, see [`Self::lost`].
    fn with_session<T>(&self, f: impl Fn(&mut Session) -> Result<T>) -> Result<T> {
        let mut guard = self.session.lock().unwrap();
        self.ensure_session(&mut guard)?;
        match f(guard.as_mut().unwrap()) {
            Err(Error::SessionLost { node, message }) => {
                self.lost(guard.take().unwrap(), node, message)?;
                self.ensure_session(&mut guard)?;
                f(guard.as_mut().unwrap())
            }
            other => other,
        }
    }

    /// Runs a call on the session's client without holding the session, so
    /// calls from many threads share the connection at once; retried once
    /// on a new session like [`Self::with_session`].
    /// `f` gets the client and the session's generation.
    fn with_client<T>(&self, f: impl Fn(StoreClient<Channel>, u64) -> Result<T>) -> Result<T> {
        let (client, generation) = self.with_session(|s| Ok((s.client.clone(), s.generation)))?;
        match f(client, generation) {
            Err(Error::SessionLost { node, message }) => {
                let mut guard = self.session.lock().unwrap();
                if guard.as_ref().is_some_and(|s| s.generation == generation) {
                    self.lost(guard.take().unwrap(), node, message)?;
                }
                drop(guard);
                let (client, generation) = self.with_session(|s| Ok((s.client.clone(), s.generation)))?;
                f(client, generation)
            }
            other => other,
        }
    }

    /// Forgets a broken session. If it vouched for any object (said the
    /// node holds it, or took it), the caller's work may name objects only
    /// that node has: the backend is spoilt until [`Backend::start_over`].
    /// A writer's next session must report the same position, or the caller
    /// learns that the store changed.
    fn lost(&self, session: Session, node: String, message: String) -> Result<()> {
        tracing::info!(%node, %message, "lost the session with the node; connecting again");
        if self.access == Access::Write {
            *self.expected_position.lock().unwrap() = Some(session.position);
        }
        if session.vouched_for_anything() {
            return Err(self.spoil(Spoilt::Interrupted { node, message }));
        }
        Ok(())
    }

    fn spoil(&self, why: Spoilt) -> Error {
        let error = why.error();
        self.spoilt.lock().unwrap().get_or_insert(why);
        error
    }

    fn ensure_session(&self, slot: &mut Option<Session>) -> Result<()> {
        if let Some(why) = self.spoilt.lock().unwrap().as_ref() {
            return Err(why.error());
        }
        if slot.is_some() {
            return Ok(());
        }
        let session = self.connect()?;
        let expected = self.expected_position.lock().unwrap().take();
        let found = session.position;
        *slot = Some(session);
        match expected.filter(|p| *p != found) {
            Some(expected) => Err(self.spoil(Spoilt::Changed { expected, found })),
            None => Ok(()),
        }
    }

    /// Finds a node by the failover algorithm and remembers it for next time.
    fn connect(&self) -> Result<Session> {
        let mut servers = self.servers.lock().unwrap();
        let (address, session) = failover::connect(&mut servers, &self.policy, |a, t| self.login(a, t))?;
        servers.remember_last(&address);
        *self.current.lock().unwrap() = address;
        Ok(session)
    }

    /// Connects to `address` and logs in, all within `timeout`.
    fn login(&self, address: &str, timeout: Duration) -> Result<Session> {
        let unreachable = |message: String| Error::Unreachable { node: address.to_string(), message };
        let (host, port) = StoreUrl::node(address)?;
        let config = self.tls.client_config().map_err(|e| Error::Invalid(e.to_string()))?;
        let mut request = wire::LoginRequest {
            key_fingerprint: self.fingerprint.clone(),
            write: self.access == Access::Write,
            register_keys: self.register_keys,
            client_version: env!("CARGO_PKG_VERSION").into(),
            host: crate::failure::host_name(),
            ..Default::default()
        };
        if let Some(failure) = self.failure_file.as_deref().and_then(crate::failure::load) {
            (request.last_error, request.last_error_ns) = (failure.message, failure.time_ns);
        }
        let attempt = async {
            let channel = tls::connect(&host, port, config).await.map_err(|e| unreachable(e.to_string()))?;
            let mut client = StoreClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE);
            let reply = client.login(request).await.map_err(|s| login_error(address, s))?;
            Ok::<_, Error>((client, reply.into_inner()))
        };
        let (client, reply) = self
            .runtime
            .block_on(async { tokio::time::timeout(timeout, attempt).await })
            .map_err(|_| unreachable(format!("no answer within {timeout:?}")))??;
        self.remember_group(&reply.nodes);
        let account = reply.account.unwrap_or_default();
        let position = Position { marker: account.marker, digest: digest_from_wire(&account.sets_digest)? };
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        Ok(Session {
            generation,
            node: reply.node,
            client,
            position,
            upload: None,
            sent: HashSet::new(),
            vouched: false,
        })
    }

    /// Closes the session's upload pipeline, waiting until the node has
    /// made everything durable.
    fn finish_upload(&self, session: &mut Session) -> Result<()> {
        let Some(upload) = session.upload.take() else { return Ok(()) };
        let skipped = upload.finish(&self.runtime).map_err(|status| self.node_error(status))?;
        *self.skipped.lock().unwrap() += skipped;
        Ok(())
    }
}

/// The addresses in a group file written by an earlier login; none if absent.
pub fn learnt_servers(group_file: &Path) -> Vec<String> {
    let Ok(bytes) = std::fs::read(group_file) else { return Vec::new() };
    let list: Vec<serde_json::Value> = serde_json::from_slice(&bytes).unwrap_or_default();
    list.iter().filter_map(|n| n["address"].as_str().map(String::from)).collect()
}

impl Backend for RemoteBackend {
    fn has_many(&self, ids: &[ObjectId]) -> Result<Vec<bool>> {
        let mut present = Vec::with_capacity(ids.len());
        let mut generations = HashSet::new();
        for chunk in ids.chunks(HAVE_BATCH) {
            let (answer, generation) = self.with_client(|mut client, generation| {
                let request =
                    wire::HaveRequest { ids: chunk.iter().map(|id| id.as_bytes().to_vec()).collect() };
                let reply = self.runtime.block_on(client.have(request)).map_err(|e| self.node_error(e))?;
                Ok((reply.into_inner().present, generation))
            })?;
            if answer.len() != chunk.len() {
                return Err(Error::Invalid("node answered a different number of ids".into()));
            }
            present.extend(answer);
            generations.insert(generation);
        }
        // The answers hold only for the session that gave them: if it is
        // gone, the backend is spoilt and this fails. Objects still on their
        // way up count as present.
        self.with_session(|s| {
            let vouched = present.iter().any(|p| *p);
            if vouched && generations.iter().any(|g| *g != s.generation) {
                return Err(self.spoil(Spoilt::Interrupted {
                    node: s.node.clone(),
                    message: "the session that answered was replaced".into(),
                }));
            }
            s.vouched |= vouched;
            Ok(ids.iter().zip(&present).map(|(id, p)| *p || s.sent.contains(id)).collect())
        })
    }

    fn known_held(&self, ids: &[ObjectId]) -> Result<Vec<bool>> {
        let guard = self.session.lock().unwrap();
        Ok(ids.iter().map(|id| guard.as_ref().is_some_and(|s| s.sent.contains(id))).collect())
    }

    fn put(&self, id: ObjectId, envelope: &[u8]) -> Result<PutOutcome> {
        self.with_session(|s| {
            if !s.sent.insert(id) {
                return Ok(PutOutcome::AlreadyPresent);
            }
            let upload = s.upload.get_or_insert_with(|| Upload::open(&self.runtime, s.client.clone()));
            let object = wire::StoredObject { id: id.as_bytes().to_vec(), envelope: envelope.to_vec() };
            if upload.push(&self.runtime, object).is_err() {
                // The pipeline stopped early: its end says why.
                self.finish_upload(s)?;
                return Err(Error::Invalid("the node closed the upload".into()));
            }
            Ok(PutOutcome::Stored(envelope.len() as u64))
        })
    }

    fn flush(&self) -> Result<()> {
        let mut guard = self.session.lock().unwrap();
        let Some(session) = guard.as_mut() else { return Ok(()) };
        match self.finish_upload(session) {
            Err(Error::SessionLost { node, message }) => {
                self.lost(guard.take().unwrap(), node.clone(), message.clone())?;
                Err(Error::Interrupted { node, message })
            }
            other => other,
        }
    }

    fn commit_set(&self, id: ObjectId, envelope: &[u8]) -> Result<Committed> {
        self.flush()?;
        self.with_session(|s| {
            let request = wire::CommitSetRequest { id: id.as_bytes().to_vec(), envelope: envelope.to_vec() };
            let reply =
                self.runtime.block_on(s.client.commit_set(request)).map_err(|e| self.node_error(e))?;
            let reply = reply.into_inner();
            s.position = Position { marker: reply.marker, digest: digest_from_wire(&reply.sets_digest)? };
            // The set now names all this session vouched for: nothing built
            // on it is left to lose.
            s.sent.clear();
            s.vouched = false;
            Ok(Committed {
                marker: reply.marker,
                replicas: reply.replicas,
                replicas_wanted: reply.replicas_wanted,
            })
        })
    }

    fn get(&self, id: &ObjectId) -> Result<Vec<u8>> {
        self.with_client(|mut client, _| {
            let request = wire::FetchRequest { id: id.as_bytes().to_vec() };
            let reply = self.runtime.block_on(client.fetch(request)).map_err(|e| self.node_error(e))?;
            Ok(reply.into_inner().envelope)
        })
    }

    fn get_many(&self, ids: &[ObjectId], each: &mut dyn FnMut(Vec<u8>) -> Result<()>) -> Result<()> {
        // A session lost midway is replaced and asked for the rest only.
        let delivered = Cell::new(0);
        let each = RefCell::new(each);
        self.with_client(|mut client, _| {
            let rest = &ids[delivered.get()..];
            let request =
                wire::DownloadRequest { ids: rest.iter().map(|id| id.as_bytes().to_vec()).collect() };
            self.runtime.block_on(async {
                let mut stream = client.download(request).await.map_err(|e| self.node_error(e))?.into_inner();
                while let Some(batch) = stream.message().await.map_err(|e| self.node_error(e))? {
                    for object in batch.objects {
                        let expected = ids.get(delivered.get());
                        if expected.map(|id| id.as_bytes().as_slice()) != Some(object.id.as_slice()) {
                            return Err(Error::Invalid(format!(
                                "node {} sent object {} out of the order asked",
                                self.current.lock().unwrap(),
                                hex::encode(&object.id)
                            )));
                        }
                        (each.borrow_mut())(object.envelope)?;
                        delivered.set(delivered.get() + 1);
                    }
                }
                match delivered.get() == ids.len() {
                    true => Ok(()),
                    false => Err(Error::Invalid(format!(
                        "node {} ended the download after {} of {} objects",
                        self.current.lock().unwrap(),
                        delivered.get(),
                        ids.len()
                    ))),
                }
            })
        })
    }

    fn sets(&self) -> Result<Vec<(ObjectId, SetRecord)>> {
        self.with_session(|s| {
            let reply = self.runtime.block_on(s.client.list_sets(wire::ListSetsRequest {}));
            reply.map_err(|e| self.node_error(e))?.into_inner().sets.into_iter().map(set_record).collect()
        })
    }

    fn forget(&self, id: &ObjectId) -> Result<ForgetReport> {
        self.flush()?;
        self.with_session(|s| {
            let request = wire::ForgetSetRequest { id: id.as_bytes().to_vec() };
            let r = self
                .runtime
                .block_on(s.client.forget_set(request))
                .map_err(|e| self.node_error(e))?
                .into_inner();
            s.position = Position { marker: r.marker, digest: digest_from_wire(&r.sets_digest)? };
            Ok(ForgetReport {
                objects_freed: r.objects_freed,
                bytes_freed: r.bytes_freed,
                packs_rewritten: r.packs_rewritten,
                packs_deleted: r.packs_deleted,
                marker: r.marker,
            })
        })
    }

    fn position(&self) -> Result<Position> {
        self.with_session(|s| Ok(s.position))
    }

    fn usage(&self) -> Result<Usage> {
        self.with_session(|s| {
            let u = self
                .runtime
                .block_on(s.client.usage(wire::UsageRequest {}))
                .map_err(|e| self.node_error(e))?;
            let u = u.into_inner();
            Ok(Usage {
                live_bytes: u.live_bytes,
                pack_bytes: u.pack_bytes,
                objects: u.objects,
                packs: u.packs,
                sets: u.sets,
            })
        })
    }

    fn expect_position(&self, position: Option<Position>) {
        *self.expected_position.lock().unwrap() = position;
    }

    fn take_skipped(&self) -> Skipped {
        std::mem::take(&mut self.skipped.lock().unwrap())
    }

    fn start_over(&self) {
        *self.spoilt.lock().unwrap() = None;
    }

    fn cache_key(&self) -> String {
        format!("coffer://{}/{}", self.servers.lock().unwrap().primary(), self.tls.cert.display())
    }

    fn node(&self) -> Option<String> {
        self.session.lock().unwrap().as_ref().map(|s| s.node.clone())
    }
}
