//! The client-facing gRPC service: one account, named by the client's
//! certificate, per connection.
//!
//! A connection first logs in (keys fingerprint checked, failed attempts
//! slowed); a writing login takes the account's single writer for the life of
//! the connection. Every id from the wire is checked for length before use,
//! every envelope for its CRC, and any bad input is refused with an error that
//! names it, leaving the store as it was. An upload that breaks off keeps
//! what arrived intact, so the client's next run sends only the rest.

use std::sync::Arc;

use coffer_proto::ObjectId;
use coffer_proto::tls::Role;
use coffer_proto::wire::{self, store_server};
use coffer_replication::{Account, Applied, Command};
use coffer_store::{AccountId, AccountWriter, PutOutcome, StoreError};
use subtle::ConstantTimeEq;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::info;

use crate::mirror::sync_account;
use crate::node::{Caller, Node};
use crate::rpc::{
    account_message, blocking, caller, group_status, members_message, parse_id, parse_ids, set_message,
    status, usage_message,
};
use crate::transfer::stream_objects;
use crate::{alerts, heartbeat};

/// How long a request that needs the account's writer waits for it: a client
/// that reconnects at once after losing its connection would otherwise find
/// its own old session still finishing its last flush.
pub const WRITER_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

pub struct StoreService {
    node: Arc<Node>,
}

impl StoreService {
    pub fn new(node: Arc<Node>) -> Self {
        StoreService { node }
    }
}

/// The account this connection logged in to; every client request asks,
/// which is what keeps its writer from counting as idle.
fn logged_in(caller: &Caller) -> Result<AccountId, Status> {
    let mut session = caller.session.lock().unwrap();
    session.last_request = Some(std::time::Instant::now());
    session.account.ok_or_else(|| Status::unauthenticated("log in first"))
}

/// Runs `work` with this connection's writer of the account.
fn with_writer<T>(
    caller: &Caller,
    work: impl FnOnce(&mut AccountWriter) -> Result<T, StoreError>,
) -> Result<T, Status> {
    let mut session = caller.session.lock().unwrap();
    session.last_request = Some(std::time::Instant::now());
    if session.taken_over {
        return Err(Status::aborted(
            "this client was idle, and a newer login of the account took over its writer",
        ));
    }
    let writer = session
        .writer
        .as_mut()
        .ok_or_else(|| Status::failed_precondition("this connection did not log in for writing"))?;
    work(writer).map_err(status)
}

/// Refuses a login for an account held elsewhere (never placed here, or
/// migrating away), naming the nodes that hold it, the primary first, so
/// the client goes there.
fn redirect(node: &Node, account: &Account) -> Status {
    let me = node.group.id();
    let mut others: Vec<_> = account.replicas.iter().copied().filter(|id| *id != me).collect();
    others.sort_by_key(|id| *id != account.primary);
    let members: Vec<_> = node.group.read(|s| others.iter().filter_map(|id| s.member(*id)).collect());
    let held: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
    let mut status = Status::failed_precondition(format!(
        "account `{}` is not held on node {}; it is held on {}",
        account.name,
        node.name,
        held.join(", ")
    ));
    let addresses: Vec<&str> = members.iter().map(|m| m.addr.as_str()).collect();
    if let Ok(value) = addresses.join(",").parse() {
        status.metadata_mut().insert(wire::HELD_ON, value);
    }
    status
}

/// Refuses a certificate issued to another account of the same name (one
/// since deleted), or to no account id at all.
fn certified_for(caller: &Caller, account: &Account) -> Result<(), Status> {
    let name = &account.name;
    match caller.account_id {
        Some(id) if id == account.id => Ok(()),
        Some(id) => Err(Status::permission_denied(format!(
            "this certificate was issued to an earlier account `{name}` (#{id}), since deleted; \
             account `{name}` is now #{}: issue a new certificate with `coffer-admin ca issue-client {name}`",
            account.id
        ))),
        None => Err(Status::permission_denied(format!(
            "this certificate names no account id; issue a new one with `coffer-admin ca issue-client {name}`"
        ))),
    }
}

fn client_name(caller: &Caller) -> Result<String, Status> {
    match &caller.role {
        Role::Client(name) => Ok(name.clone()),
        other => Err(Status::permission_denied(format!("{other} is not a client certificate"))),
    }
}

impl StoreService {
    /// The group's record of the caller's account, with keys registered on
    /// first use (a change to the account database, so it needs a quorum).
    async fn login_account(
        caller: &Caller,
        req: &wire::LoginRequest,
        node: &Node,
    ) -> Result<Account, Status> {
        let name = &client_name(caller)?;
        let account = node
            .group
            .read(|s| s.account_named(name).cloned())
            .ok_or_else(|| Status::not_found(format!("no account `{name}` in the server group")))?;
        certified_for(caller, &account)?;
        let me = node.group.id();
        if !account.replicas.contains(&me) || account.moving_from == Some(me) {
            return Err(redirect(node, &account));
        }
        if !account.key_fingerprint.is_empty() {
            return Ok(account);
        }
        if !req.register_keys {
            return Err(Status::failed_precondition(format!(
                "account `{name}` has no keys registered yet; run `coffer init` first"
            )));
        }
        let command =
            Command::RegisterKeys { name: name.to_string(), fingerprint: req.key_fingerprint.clone() };
        match node.group.write(command).await.map_err(group_status)? {
            Applied::Account(account) => {
                info!(account = %name, "registered keys");
                Ok(account)
            }
            other => Err(Status::internal(format!("registering keys answered {other:?}"))),
        }
    }

    fn login_blocking(
        node: &Node,
        caller: &Caller,
        req: wire::LoginRequest,
        account: Account,
    ) -> Result<wire::LoginReply, Status> {
        let name = &account.name;
        // In constant time, and without saying what the registered keys are:
        // the answer must not help anyone guess them.
        let same = account.key_fingerprint.as_bytes().ct_eq(req.key_fingerprint.as_bytes());
        if !bool::from(same) {
            node.throttle.failed(name);
            node.metrics.login_failures.inc();
            return Err(Status::permission_denied(format!(
                "wrong keys file for account `{name}`: these keys are not the ones the account was set up with"
            )));
        }
        node.throttle.succeeded(name);
        sync_account(node, &account).map_err(status)?;
        let mut session = caller.session.lock().unwrap();
        if req.write && session.writer.is_none() {
            if account.frozen {
                return Err(Status::failed_precondition(format!(
                    "account `{name}` is frozen: it can be read but not written"
                )));
            }
            drop(session);
            let mut writer = Self::client_writer(node, &account)?;
            writer.stop_when_frozen();
            node.writers.lock().unwrap().insert(account.id, Arc::downgrade(caller));
            session = caller.session.lock().unwrap();
            session.writer = Some(writer);
        }
        session.account = Some(account.id);
        session.last_request = Some(std::time::Instant::now());
        Ok(wire::LoginReply {
            account: Some(account_message(node, &account).map_err(status)?),
            node: node.name.clone(),
            nodes: members_message(node),
        })
    }
}

impl StoreService {
    /// How many nodes hold the account (its replica set's size).
    fn held_by(&self, account: AccountId) -> usize {
        self.node.group.read(|s| s.accounts.get(&account).map_or(1, |a| a.replicas.len()))
    }

    /// The account's writer for a client's login: waits a moment for a
    /// writer that is finishing, and takes it from an idle client.
    fn client_writer(node: &Node, account: &Account) -> Result<AccountWriter, Status> {
        let busy = || {
            Status::aborted(format!("account `{}` is busy: another client is writing to it", account.name))
        };
        match node.store.writer_within(account.id, WRITER_WAIT) {
            Err(StoreError::AccountBusy(_)) if node.take_idle_writer(account.id) => {
                node.store.writer_within(account.id, WRITER_WAIT).map_err(|e| match e {
                    StoreError::AccountBusy(_) => busy(),
                    other => status(other),
                })
            }
            Err(StoreError::AccountBusy(_)) => Err(busy()),
            other => other.map_err(status),
        }
    }
}

/// Flushes the writer of an upload whose handler is dropped before it
/// could: when a client's connection goes, hyper drops the request's
/// future at its next `.await`, and what arrived must still become durable
/// so that the client's next run sends only the rest. Holding the caller
/// keeps its session (and writer) until the flush has run.
struct FlushWhenDropped(Option<Caller>);

impl Drop for FlushWhenDropped {
    fn drop(&mut self) {
        if let Some(caller) = self.0.take() {
            tokio::task::spawn_blocking(move || {
                if let Err(e) = with_writer(&caller, |w| w.flush()) {
                    tracing::warn!(error = %e.message(), "could not keep what a broken upload sent");
                }
            });
        }
    }
}

/// Upload batches received but not yet stored: the next ones arrive while
/// one is written.
const UPLOAD_QUEUE: usize = 3;

/// Reads an upload's batches and stores them, the next batch arriving
/// while the last is written. A stream that breaks off still has every
/// batch that arrived whole stored; the first error (storing's before the
/// stream's) is returned beside what was stored.
async fn receive_and_store(
    caller: Caller,
    mut stream: Streaming<wire::ObjectBatch>,
) -> (wire::UploadReply, Result<(), Status>) {
    let (queue, mut batches) = tokio::sync::mpsc::channel(UPLOAD_QUEUE);
    let receive = async move {
        while let Some(batch) = stream.message().await? {
            if queue.send(batch).await.is_err() {
                break; // Storing failed; its error is the one to report.
            }
        }
        Ok::<_, Status>(())
    };
    // Owns the queue's receiving end, so a failure here ends the receiving.
    let store = async move {
        let mut reply = wire::UploadReply::default();
        while let Some(batch) = batches.recv().await {
            let p = caller.clone();
            match blocking(move || put_batch(&p, batch)).await {
                Ok(r) => {
                    reply.stored += r.stored;
                    reply.already_present += r.already_present;
                    reply.bytes_stored += r.bytes_stored;
                }
                Err(e) => return (reply, Err(e)),
            }
        }
        (reply, Ok(()))
    };
    let (received, (reply, stored)) = tokio::join!(receive, store);
    (reply, stored.and(received))
}

/// Stores one upload batch; returns what it stored.
fn put_batch(caller: &Caller, batch: wire::ObjectBatch) -> Result<wire::UploadReply, Status> {
    let ids: Vec<ObjectId> =
        batch.objects.iter().enumerate().map(|(i, o)| parse_id(&o.id, i)).collect::<Result<_, _>>()?;
    let mut reply = wire::UploadReply::default();
    with_writer(caller, |w| {
        for (id, object) in ids.into_iter().zip(batch.objects) {
            match w.put(id, &object.envelope)? {
                PutOutcome::Stored(n) => {
                    reply.stored += 1;
                    reply.bytes_stored += n;
                }
                PutOutcome::AlreadyPresent => reply.already_present += 1,
            }
        }
        Ok(())
    })?;
    Ok(reply)
}

#[tonic::async_trait]
impl store_server::Store for StoreService {
    async fn login(&self, req: Request<wire::LoginRequest>) -> Result<Response<wire::LoginReply>, Status> {
        let caller = caller(&req)?;
        let wait = self.node.throttle.delay(&client_name(&caller)?);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let node = self.node.clone();
        let req = req.into_inner();
        let account = Self::login_account(&caller, &req, &node).await?;
        let (seen, request) = (account.clone(), req.clone());
        let reply = blocking(move || Self::login_blocking(&node, &caller, req, account)).await?;
        heartbeat::logged_in(&self.node, &seen, &request);
        Ok(Response::new(reply))
    }

    async fn have(&self, req: Request<wire::HaveRequest>) -> Result<Response<wire::HaveReply>, Status> {
        let account = logged_in(&caller(&req)?)?;
        let ids = parse_ids(&req.get_ref().ids)?;
        let store = self.node.store.clone();
        let present = blocking(move || store.has_many(account, &ids).map_err(status)).await?;
        Ok(Response::new(wire::HaveReply { present }))
    }

    async fn upload(
        &self,
        req: Request<Streaming<wire::ObjectBatch>>,
    ) -> Result<Response<wire::UploadReply>, Status> {
        let caller = caller(&req)?;
        let _permit = self.node.transfers.start(logged_in(&caller)?)?;
        let mut guard = FlushWhenDropped(Some(caller.clone()));
        let (reply, received) = receive_and_store(caller.clone(), req.into_inner()).await;
        // Keep whatever arrived intact, even when the stream broke off.
        guard.0 = None;
        let account = logged_in(&caller)?;
        let flushed = blocking(move || with_writer(&caller, |w| w.flush())).await;
        let refused = |s: Status| match s.code() {
            tonic::Code::ResourceExhausted => alerts::refused_at_hard_limit(&self.node, account, s),
            _ => s,
        };
        received.map_err(refused)?;
        flushed.map_err(refused)?;
        Ok(Response::new(reply))
    }

    type DownloadStream = ReceiverStream<Result<wire::ObjectBatch, Status>>;

    async fn download(
        &self,
        req: Request<wire::DownloadRequest>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        let account = logged_in(&caller(&req)?)?;
        let ids = parse_ids(&req.get_ref().ids)?;
        let permit = self.node.transfers.start(account)?;
        Ok(Response::new(stream_objects(self.node.store.clone(), account, ids, Some(permit))))
    }

    async fn fetch(&self, req: Request<wire::FetchRequest>) -> Result<Response<wire::StoredObject>, Status> {
        let account = logged_in(&caller(&req)?)?;
        let id = parse_id(&req.get_ref().id, 0)?;
        let store = self.node.store.clone();
        let envelope = blocking(move || store.get(account, &id).map_err(status)).await?;
        Ok(Response::new(wire::StoredObject { id: id.as_bytes().to_vec(), envelope }))
    }

    async fn commit_set(
        &self,
        req: Request<wire::CommitSetRequest>,
    ) -> Result<Response<wire::CommitSetReply>, Status> {
        let caller = caller(&req)?;
        let req = req.into_inner();
        let id = parse_id(&req.id, 0)?;
        let account = logged_in(&caller)?;
        let node = self.node.clone();
        // The digest is read while this client still holds the writer, so
        // it is the one its commit made.
        let (marker, digest) = blocking(move || {
            let done = with_writer(&caller, |w| {
                Ok((w.commit_set(id, &req.envelope)?, node.store.summary(account)?.1))
            })?;
            heartbeat::committed(&node, account, done.0);
            Ok(done)
        })
        .await?;
        let wanted = self.node.commit_replicas;
        let replicas = self.node.syncer.replicate(account, id, wanted, self.node.commit_wait).await;
        // Whatever the pushes did not finish, the journal does.
        self.node.syncer.changed(account);
        Ok(Response::new(wire::CommitSetReply {
            marker,
            replicas: replicas as u32,
            replicas_wanted: wanted.min(self.held_by(account)) as u32,
            sets_digest: hex::encode(digest.as_bytes()),
        }))
    }

    async fn list_sets(
        &self,
        req: Request<wire::ListSetsRequest>,
    ) -> Result<Response<wire::ListSetsReply>, Status> {
        let account = logged_in(&caller(&req)?)?;
        let store = self.node.store.clone();
        let sets = blocking(move || store.sets(account).map_err(status)).await?;
        Ok(Response::new(wire::ListSetsReply {
            sets: sets.iter().map(|(id, r)| set_message(id, r)).collect(),
        }))
    }

    async fn forget_set(
        &self,
        req: Request<wire::ForgetSetRequest>,
    ) -> Result<Response<wire::ForgetSetReply>, Status> {
        let caller = caller(&req)?;
        let id = parse_id(&req.get_ref().id, 0)?;
        let account = logged_in(&caller)?;
        let node = self.node.clone();
        let (r, digest) = blocking(move || {
            let done = with_writer(&caller, |w| Ok((w.forget_set(&id)?, node.store.summary(account)?.1)))?;
            heartbeat::usage_changed(&node, account);
            Ok(done)
        })
        .await?;
        self.node.syncer.changed(account);
        Ok(Response::new(wire::ForgetSetReply {
            objects_freed: r.objects_freed,
            bytes_freed: r.bytes_freed,
            packs_rewritten: r.packs_rewritten,
            packs_deleted: r.packs_deleted,
            marker: r.marker,
            sets_digest: hex::encode(digest.as_bytes()),
        }))
    }

    async fn usage(&self, req: Request<wire::UsageRequest>) -> Result<Response<wire::AccountUsage>, Status> {
        let account = logged_in(&caller(&req)?)?;
        let store = self.node.store.clone();
        let usage = blocking(move || store.usage(account).map_err(status)).await?;
        Ok(Response::new(usage_message(&usage)))
    }
}
