//! The node daemon: the TLS listener, per-connection state, periodic
//! housekeeping and shutdown.
//!
//! Every accepted TCP connection goes through a TLS 1.3 handshake that
//! requires a client certificate from the node's CA; the certificate's role
//! becomes the connection's [`Peer`], which tonic hands to every request on
//! that connection. The peer also holds the connection's session (the
//! logged-in account and, for a writing client, the account's writer). When
//! the connection closes and its last request ends, the peer is dropped and
//! the writer with it, so an account is never left locked by a dead client.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use coffer_proto::tls::{self, MAX_MESSAGE, Role};
use coffer_proto::wire::admin_server::AdminServer;
use coffer_proto::wire::peer_server::PeerServer;
use coffer_proto::wire::store_server::StoreServer;
use coffer_replication::{Group, GroupError, Member};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tracing::{debug, info, warn};

use crate::admin::AdminService;
use crate::config::NodeConfig;
use crate::index::now_ns;
use crate::peer::PeerService;
use crate::service::StoreService;
use crate::store::{AccountId, Store};
use crate::syncer::Syncer;
use crate::throttle::LoginThrottle;
use crate::writer::AccountWriter;

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a clean shutdown waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// State shared by every connection of a node.
pub struct Node {
    pub name: String,
    pub store: Store,
    /// This node's member of the server group and its account database.
    pub group: Arc<Group>,
    pub grace: Duration,
    pub throttle: LoginThrottle,
    pub started_ns: i64,
    /// TLS handshakes completed since the node started.
    pub connections: AtomicU64,
    pub handshakes_failed: AtomicU64,
    /// Fast sync with the other replicas of this node's accounts.
    pub syncer: Syncer,
    /// A writing client silent this long may be replaced by a new login.
    pub idle_writer: Duration,
    /// How many nodes must hold a set before its commit is acknowledged,
    /// and how long the commit waits for them.
    pub commit_replicas: usize,
    pub commit_wait: Duration,
    /// The connection holding each account's client writer.
    pub writers: Mutex<HashMap<AccountId, Weak<Connection>>>,
}

/// What one connection has established.
#[derive(Default)]
pub struct Session {
    pub account: Option<AccountId>,
    pub writer: Option<AccountWriter>,
    /// When the client last made a request on this connection.
    pub last_request: Option<Instant>,
    /// The writer was handed to a newer login of the same account.
    pub taken_over: bool,
}

impl Node {
    /// Takes the writer of `account` from a connection whose client has
    /// made no request for [`Node::idle_writer`] (a client stopped, asleep
    /// or cut off, whose connection the keep-alives have not yet closed).
    /// Its unflushed uploads are dropped: they were never committed, and
    /// the client sends them again. Returns whether a writer was taken.
    pub fn take_idle_writer(&self, account: AccountId) -> bool {
        let holder = self.writers.lock().unwrap().get(&account).and_then(Weak::upgrade);
        let Some(holder) = holder else { return false };
        // A connection with a request under way is not idle.
        let Ok(mut session) = holder.session.try_lock() else { return false };
        let idle = session.last_request.is_some_and(|t| t.elapsed() >= self.idle_writer);
        if !idle || session.writer.is_none() {
            return false;
        }
        info!(account, addr = %holder.addr, "taking the writer from an idle client for a new login");
        session.writer = None;
        session.taken_over = true;
        true
    }
}

/// One authenticated connection, as every request on it sees it.
pub struct Connection {
    pub role: Role,
    pub addr: SocketAddr,
    pub session: Mutex<Session>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        debug!(peer = %self.role, addr = %self.addr, "connection closed");
    }
}

pub type Peer = Arc<Connection>;

/// A TLS connection that tells tonic who is on the other end.
pub struct PeerStream {
    tls: TlsStream<TcpStream>,
    peer: Peer,
}

impl Connected for PeerStream {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tls).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().tls).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tls).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tls).poll_shutdown(cx)
    }
}

/// Accepts connections and completes handshakes concurrently, so one slow
/// or hostile peer never holds up the others.
fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    node: Arc<Node>,
) -> ReceiverStream<std::io::Result<PeerStream>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, addr) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (acceptor, node, tx) = (acceptor.clone(), node.clone(), tx.clone());
            tokio::spawn(async move {
                match handshake(&acceptor, tcp, addr).await {
                    Ok(stream) => {
                        node.connections.fetch_add(1, Ordering::Relaxed);
                        info!(peer = %stream.peer.role, %addr, "connection");
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Err(problem) => {
                        node.handshakes_failed.fetch_add(1, Ordering::Relaxed);
                        info!(%addr, %problem, "connection refused");
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

async fn handshake(acceptor: &TlsAcceptor, tcp: TcpStream, addr: SocketAddr) -> Result<PeerStream, String> {
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    tls::set_keepalive(&tcp, tls::KEEPALIVE).map_err(|e| e.to_string())?;
    let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
        .await
        .map_err(|_| "TLS handshake timed out".to_string())?
        .map_err(|e| format!("TLS handshake failed: {e}"))?;
    let cert = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).ok_or("no client certificate")?;
    let role = Role::of_certificate(cert).ok_or("certificate names no Coffer role")?;
    let peer = Arc::new(Connection { role, addr, session: Mutex::new(Session::default()) });
    Ok(PeerStream { tls, peer })
}

/// Runs a node until SIGTERM or SIGINT.
pub async fn run(config: NodeConfig) -> anyhow::Result<()> {
    let store = open_store(&config)?;
    let me = Member {
        name: config.name.clone(),
        addr: config.listen.to_string(),
        site: config.group.site.clone(),
    };
    let group =
        Group::open(&config.data.join("raft"), me, config.group.raft(), config.tls.client_config()?).await?;
    let group = Arc::new(group);
    let node = Arc::new(Node {
        name: config.name.clone(),
        store,
        group: group.clone(),
        grace: config.grace,
        throttle: LoginThrottle::default(),
        started_ns: now_ns(),
        connections: AtomicU64::new(0),
        handshakes_failed: AtomicU64::new(0),
        syncer: Syncer::new(config.group.retry, config.group.anti_entropy),
        idle_writer: config.idle_writer,
        commit_replicas: config.group.commit_replicas,
        commit_wait: config.group.commit_wait,
        writers: Mutex::new(HashMap::new()),
    });
    let acceptor = TlsAcceptor::from(config.tls.server_config()?);
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    info!(node = %config.name, listen = %listener.local_addr()?, data = %config.data.display(), "node started");
    tokio::spawn(housekeeping_loop(node.clone(), config.housekeeping_interval));
    tokio::spawn(crate::mirror::run(node.clone()));
    tokio::spawn(crate::syncer::run(node.clone()));

    let store_service = StoreServer::new(StoreService::new(node.clone()))
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let admin_service = AdminServer::new(AdminService::new(node.clone()));
    let peer_service = PeerServer::new(PeerService::new(node.clone()))
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(tls::KEEPALIVE / 2))
        .http2_keepalive_timeout(Some(tls::KEEPALIVE))
        .add_service(store_service)
        .add_service(admin_service)
        .add_service(peer_service)
        .serve_with_incoming_shutdown(accept_loop(listener, acceptor, node.clone()), async {
            let _ = stop_rx.await;
        });
    let mut server = tokio::spawn(server);
    tokio::spawn(join_loop(group.clone(), config.group.join.clone()));
    tokio::select! {
        result = &mut server => return Ok(result??),
        signal = shutdown_signal() => info!(signal, "shutting down"),
    }
    let _ = stop_tx.send(());
    if tokio::time::timeout(DRAIN_TIMEOUT, server).await.is_err() {
        warn!("requests still running after {DRAIN_TIMEOUT:?}; stopping anyway (nothing committed is lost)");
    }
    group.shutdown().await;
    info!("node stopped");
    Ok(())
}

fn open_store(config: &NodeConfig) -> anyhow::Result<Store> {
    let data = &config.data;
    let discs = &config.discs;
    let store = if data.join("STORE").exists() {
        Store::open_on(data, discs)?
    } else {
        Store::create_on(data, discs)?
    };
    Ok(store)
}

/// On first start, asks the configured members to take this node into their
/// group, until one does. A voter does nothing; a learner (its join was cut
/// short) asks again, to be promoted.
async fn join_loop(group: Arc<Group>, addrs: Vec<String>) {
    if addrs.is_empty() || group.is_voter() {
        return;
    }
    for addr in addrs.iter().cycle() {
        match group.join_via(addr).await {
            Ok(()) | Err(GroupError::AlreadyInGroup) => return,
            Err(e) => info!(via = %addr, problem = %e, "not joined yet"),
        }
        if group.is_voter() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

async fn housekeeping_loop(node: Arc<Node>, every: Duration) {
    let mut ticker = tokio::time::interval(every.max(Duration::from_secs(1)));
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let node = node.clone();
        let result = tokio::task::spawn_blocking(move || crate::admin::housekeep_all(&node, "")).await;
        match result {
            Ok(Ok(reports)) => debug!(accounts = reports.len(), "housekeeping done"),
            Ok(Err(e)) => warn!(error = %e, "housekeeping failed"),
            Err(e) => warn!(error = %e, "housekeeping panicked"),
        }
    }
}
