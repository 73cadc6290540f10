//! The node daemon: the TLS listener, periodic housekeeping and shutdown.
//!
//! Every accepted TCP connection goes through a TLS 1.3 handshake that
//! requires a client certificate from the node's CA; the certificate's role
//! becomes the connection's [`Caller`], which tonic hands to every request on
//! that connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use coffer_proto::tls::{self, MAX_MESSAGE, Role, TlsFiles};
use coffer_proto::wire::admin_server::AdminServer;
use coffer_proto::wire::peer_server::PeerServer;
use coffer_proto::wire::store_server::StoreServer;
use coffer_replication::{Group, GroupError, Member};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tracing::{debug, info, warn};

use coffer_proto::clock::now_ns;
use coffer_proto::config::NodeConfig;
use coffer_store::Store;

use crate::admin_service::AdminService;
use crate::metrics::{CountRequests, Metrics};
use crate::node::{Caller, Connection, Node, Session};
use crate::peer_service::PeerService;
use crate::store_service::StoreService;
use crate::syncer::Syncer;
use crate::throttle::LoginThrottle;
use crate::transfer::Transfers;

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a refused connection is read from so its caller gets the alert.
const REFUSAL_LINGER: Duration = Duration::from_secs(2);
/// How long a clean shutdown waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections (handshakes included) open at once; past this, new ones are
/// closed at once rather than left to queue.
const MAX_CONNECTIONS: usize = 1024;
/// Requests in flight on one connection (HTTP/2 concurrent streams).
const MAX_STREAMS: u32 = 128;

/// A TLS connection that tells tonic who is on the other end; it holds
/// its place among the node's connections until it closes.
struct CallerStream {
    tls: TlsStream<TcpStream>,
    caller: Caller,
    _place: OwnedSemaphorePermit,
    metrics: Metrics,
}

impl Drop for CallerStream {
    fn drop(&mut self) {
        self.metrics.connections_open.dec();
    }
}

impl Connected for CallerStream {
    type ConnectInfo = Caller;

    fn connect_info(&self) -> Caller {
        self.caller.clone()
    }
}

impl AsyncRead for CallerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.tls).poll_read(cx, buf);
        this.metrics.received_bytes.inc_by((buf.filled().len() - before) as u64);
        read
    }
}

impl AsyncWrite for CallerStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.tls).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &written {
            this.metrics.sent_bytes.inc_by(*n as u64);
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tls).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tls).poll_shutdown(cx)
    }
}

/// Accepts connections and completes handshakes concurrently, so one slow
/// or hostile caller never holds up the others.
fn accept_loop(
    listener: TcpListener,
    acceptor: Arc<RwLock<TlsAcceptor>>,
    node: Arc<Node>,
) -> ReceiverStream<std::io::Result<CallerStream>> {
    let (tx, rx) = mpsc::channel(64);
    let places = Arc::new(Semaphore::new(MAX_CONNECTIONS));
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
            let Ok(place) = places.clone().try_acquire_owned() else {
                node.handshakes_failed.fetch_add(1, Ordering::Relaxed);
                warn!(%addr, "connection refused: {MAX_CONNECTIONS} connections already open");
                continue;
            };
            let acceptor = acceptor.read().unwrap().clone();
            let (node, tx) = (node.clone(), tx.clone());
            tokio::spawn(async move {
                match handshake(&acceptor, tcp, addr, place, &node.metrics).await {
                    Ok(stream) => {
                        node.connections.fetch_add(1, Ordering::Relaxed);
                        info!(caller = %stream.caller.role, %addr, "connection");
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

async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    addr: SocketAddr,
    place: OwnedSemaphorePermit,
    metrics: &Metrics,
) -> Result<CallerStream, String> {
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    tls::set_keepalive(&tcp, tls::KEEPALIVE).map_err(|e| e.to_string())?;
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp).into_fallible()).await {
        Err(_) => return Err("TLS handshake timed out".to_string()),
        Ok(Err((e, tcp))) => {
            let problem = format!("TLS handshake failed: {e}");
            let _ = tokio::time::timeout(REFUSAL_LINGER, linger(tcp)).await;
            return Err(problem);
        }
        Ok(Ok(tls)) => tls,
    };
    let cert = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).ok_or("no client certificate")?;
    let role = Role::of_certificate(cert).ok_or("certificate names no Coffer role")?;
    let account_id = Role::account_of_certificate(cert);
    let caller = Arc::new(Connection { role, account_id, addr, session: Mutex::new(Session::default()) });
    metrics.connections_open.inc();
    Ok(CallerStream { tls, caller, _place: place, metrics: metrics.clone() })
}

/// Closes a refused connection so that the caller can read why. Under TLS
/// 1.3 a client's certificate is checked after the client has finished its
/// side of the handshake, so its first request is often on the way when the
/// alert naming the problem ("certificate revoked") goes out; closing with
/// that request unread would reset the connection before the client reads
/// the alert. So: end our side, and read and drop what arrives until the
/// client closes. (A client whose HTTP/2 connection fails under a request
/// it sent may still report only "connection closed".)
async fn linger(mut tcp: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tcp.shutdown().await;
    let mut sink = [0; 4096];
    while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {}
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
        Group::open(&config.data.join("raft"), me, (&config.group).into(), config.tls.client_config()?)
            .await?;
    let group = Arc::new(group);
    let node = Arc::new(Node {
        name: config.name.clone(),
        store: store.clone(),
        group: group.clone(),
        grace: config.grace,
        throttle: LoginThrottle::default(),
        started_ns: now_ns(),
        connections: AtomicU64::new(0),
        handshakes_failed: AtomicU64::new(0),
        syncer: Arc::new(Syncer::new(
            store.clone(),
            group.clone(),
            &config.name,
            config.group.retry,
            config.group.anti_entropy,
        )),
        idle_writer: config.idle_writer,
        commit_replicas: config.group.commit_replicas,
        commit_wait: config.group.commit_wait,
        writers: Mutex::new(HashMap::new()),
        transfers: Transfers::default(),
        metrics: Metrics::default(),
        alerts: crate::alerts::Alerts::new(config.alerts.clone()),
    });
    let acceptor = Arc::new(RwLock::new(TlsAcceptor::from(config.tls.server_config()?)));
    tokio::spawn(reload_on_sighup(acceptor.clone(), config.tls.clone()));
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    info!(node = %config.name, listen = %listener.local_addr()?, data = %config.data.display(), "node started");
    if let Some(addr) = config.metrics_listen {
        crate::metrics::serve(addr, node.clone()).await?;
    }
    tokio::spawn(housekeeping_loop(node.clone(), config.housekeeping_interval));
    tokio::spawn(crate::counting::run(node.clone()));
    tokio::spawn(crate::mirror::run(node.clone()));
    tokio::spawn(crate::alerts::run(node.clone()));
    tokio::spawn(crate::syncer::run(node.syncer.clone()));

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
        .max_concurrent_streams(MAX_STREAMS)
        .layer(CountRequests(node.metrics.clone()))
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

/// Rereads the TLS files (certificate, key, CA, revocation list) on each
/// SIGHUP; new connections use them at once. A file that does not load
/// leaves the ones in use, and says why.
async fn reload_on_sighup(acceptor: Arc<RwLock<TlsAcceptor>>, files: TlsFiles) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup()).expect("SIGHUP handler");
    while hangups.recv().await.is_some() {
        match files.server_config() {
            Ok(config) => {
                *acceptor.write().unwrap() = TlsAcceptor::from(config);
                info!(crl = ?files.crl, "TLS files reloaded");
            }
            Err(e) => warn!(error = %e, "TLS files not reloaded; the ones in use stay"),
        }
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
        let result =
            tokio::task::spawn_blocking(move || crate::admin_service::housekeep_all(&node, "")).await;
        match result {
            Ok(Ok(reports)) => debug!(accounts = reports.len(), "housekeeping done"),
            Ok(Err(e)) => warn!(error = %e, "housekeeping failed"),
            Err(e) => warn!(error = %e, "housekeeping panicked"),
        }
    }
}
