//! TLS for every Coffer connection: TLS 1.3 only, both sides authenticated
//! with certificates from one certificate authority.
//!
//! The certificate's common name carries the caller's [`Role`]:
//! `client:ACCOUNT`, `admin:NAME` or `node:NAME`. A node decides what a
//! connection may do from that name alone, never from a request field.
//!
//! Only rustls's `ring` provider is used; [`install_provider`] must run before
//! the first handshake (two providers in one process panic at the first use).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// The largest gRPC message either side accepts. A chunk is at most 4 MiB
/// before sealing, so batches are cut well below this.
pub const MAX_MESSAGE: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {problem}")]
    Pem { path: PathBuf, problem: String },
    #[error("TLS setup: {0}")]
    Config(String),
    #[error("cannot reach {addr}: {problem}")]
    Connect { addr: String, problem: String },
}

/// How a client certificate names its account's id (see
/// [`Role::account_of_certificate`]).
pub const ACCOUNT_UNIT: &str = "coffer-account ";

/// Who is on the other end of a connection, from its certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Role {
    Client(String),
    Admin(String),
    Node(String),
}

impl Role {
    /// The certificate common name that carries this role.
    pub fn common_name(&self) -> String {
        self.to_string()
    }

    pub fn parse(common_name: &str) -> Option<Role> {
        let (kind, name) = common_name.split_once(':')?;
        if name.is_empty() {
            return None;
        }
        match kind {
            "client" => Some(Role::Client(name.to_string())),
            "admin" => Some(Role::Admin(name.to_string())),
            "node" => Some(Role::Node(name.to_string())),
            _ => None,
        }
    }

    /// The account id a (verified) client certificate was issued for: its
    /// organisational unit `coffer-account ID`. An account re-created under
    /// the name of a deleted one gets a new id, so certificates issued to
    /// the old one do not open the new one.
    pub fn account_of_certificate(der: &[u8]) -> Option<u64> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let unit = cert.subject().iter_organizational_unit().next()?.as_str().ok()?.to_string();
        unit.strip_prefix(ACCOUNT_UNIT)?.parse().ok()
    }

    /// The role named by a (verified) certificate.
    pub fn of_certificate(der: &[u8]) -> Option<Role> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let cn = cert.subject().iter_common_name().next()?.as_str().ok()?.to_string();
        Role::parse(&cn)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Client(n) => write!(f, "client:{n}"),
            Role::Admin(n) => write!(f, "admin:{n}"),
            Role::Node(n) => write!(f, "node:{n}"),
        }
    }
}

/// Installs the process-wide rustls provider (ring). Safe to call repeatedly.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A certificate chain and its private key, plus the CA that signs peers:
/// the `[tls]` section of every Coffer config file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    /// The CA's revocation list (`coffer-admin ca revoke`): certificates on
    /// it are refused at the handshake. A node rereads it on SIGHUP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl: Option<PathBuf>,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_path_buf(), source })
}

fn pem_error(path: &Path, problem: impl fmt::Display) -> TlsError {
    TlsError::Pem { path: path.to_path_buf(), problem: problem.to_string() }
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(&read(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(pem_error(path, "no certificate in the file"));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(&read(path)?).map_err(|e| pem_error(path, format!("no private key: {e}")))
}

fn roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in certs(path)? {
        store.add(cert).map_err(|e| pem_error(path, e))?;
    }
    Ok(Arc::new(store))
}

impl TlsFiles {
    /// These three files, with no revocation list.
    pub fn new(cert: PathBuf, key: PathBuf, ca: PathBuf) -> TlsFiles {
        TlsFiles { cert, key, ca, crl: None }
    }

    /// From `--cert`, `--key` and `--ca` flags, which come all together or not at all.
    pub fn from_flags(
        cert: &Option<PathBuf>,
        key: &Option<PathBuf>,
        ca: &Option<PathBuf>,
    ) -> Result<Option<TlsFiles>, TlsError> {
        match (cert, key, ca) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), Some(ca)) => {
                Ok(Some(TlsFiles::new(cert.clone(), key.clone(), ca.clone())))
            }
            _ => Err(TlsError::Config("--cert, --key and --ca go together".into())),
        }
    }

    /// Makes relative paths relative to `base` (the config file's directory).
    pub fn relative_to(&mut self, base: &Path) {
        for p in [&mut self.cert, &mut self.key, &mut self.ca].into_iter().chain(self.crl.as_mut()) {
            *p = base.join(&*p);
        }
    }

    /// The revocation list's entries, none without one.
    fn crls(&self) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
        let Some(path) = &self.crl else { return Ok(Vec::new()) };
        CertificateRevocationListDer::pem_slice_iter(&read(path)?)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_error(path, format!("not a revocation list: {e}")))
    }

    /// A node's server side: TLS 1.3, a client certificate from our CA required.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        install_provider();
        let verifier = WebPkiClientVerifier::builder(roots(&self.ca)?)
            .with_crls(self.crls()?)
            .build()
            .map_err(|e| TlsError::Config(format!("client verifier: {e}")))?;
        let mut config = ServerConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs(&self.cert)?, key(&self.key)?)
            .map_err(|e| TlsError::Config(format!("{}: {e}", self.cert.display())))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    /// A client's side: TLS 1.3, our certificate, the node's checked against our CA.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        install_provider();
        let verifier = WebPkiServerVerifier::builder(roots(&self.ca)?)
            .with_crls(self.crls()?)
            .build()
            .map_err(|e| TlsError::Config(format!("node verifier: {e}")))?;
        let mut config = ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
            .with_webpki_verifier(verifier)
            .with_client_auth_cert(certs(&self.cert)?, key(&self.key)?)
            .map_err(|e| TlsError::Config(format!("{}: {e}", self.cert.display())))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

/// Opens a gRPC channel to `host:port` over TLS, connecting now.
pub async fn connect(host: &str, port: u16, config: Arc<ClientConfig>) -> Result<Channel, TlsError> {
    let (endpoint, connector) = endpoint(host, port, config)?;
    endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|e| TlsError::Connect { addr: format!("{host}:{port}"), problem: error_chain(&e) })
}

/// A channel to `host:port` over TLS that connects on first use and
/// reconnects by itself after the peer restarts (node to node).
pub fn connect_lazy(host: &str, port: u16, config: Arc<ClientConfig>) -> Result<Channel, TlsError> {
    let (endpoint, connector) = endpoint(host, port, config)?;
    Ok(endpoint.connect_with_connector_lazy(connector))
}

fn endpoint(host: &str, port: u16, config: Arc<ClientConfig>) -> Result<(Endpoint, TlsConnect), TlsError> {
    let addr = crate::address::node_address(host, port);
    let fail = |problem: String| TlsError::Connect { addr: addr.clone(), problem };
    let server_name = ServerName::try_from(host.to_string()).map_err(|e| fail(e.to_string()))?;
    // The URI only labels the channel; the connector decides where it goes.
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| fail(e.to_string()))?
        .connect_timeout(std::time::Duration::from_secs(10))
        // A peer that vanishes without closing (a cut link) is noticed
        // within seconds instead of when TCP gives up.
        .http2_keep_alive_interval(KEEPALIVE / 2)
        .keep_alive_timeout(KEEPALIVE)
        .keep_alive_while_idle(true);
    Ok((endpoint, TlsConnect { config, server_name }))
}

/// Opens the TCP connection and completes the TLS handshake for tonic.
#[derive(Clone)]
struct TlsConnect {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

type TlsIo = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;

impl tower::Service<Uri> for TlsConnect {
    type Response = TlsIo;
    type Error = std::io::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<TlsIo>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        let server_name = self.server_name.clone();
        Box::pin(async move {
            let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();
            let tcp = TcpStream::connect(&authority).await?;
            tcp.set_nodelay(true)?;
            set_keepalive(&tcp, KEEPALIVE)?;
            let tls = connector.connect(server_name, tcp).await?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        })
    }
}

/// How often either side of a connection checks that the other is still
/// there (HTTP/2 pings and TCP keep-alive), and how long it waits for it.
pub const KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(10);

/// Turns on TCP keep-alive probes every `every`, giving up after three
/// unanswered: a peer whose host vanished (a sleeping laptop, a dead link)
/// is noticed even when no request is in flight.
pub fn set_keepalive(tcp: &TcpStream, every: std::time::Duration) -> std::io::Result<()> {
    let keepalive = socket2::TcpKeepalive::new().with_time(every).with_interval(every).with_retries(3);
    socket2::SockRef::from(tcp).set_tcp_keepalive(&keepalive)
}

/// An error and its causes on one line: tonic's transport errors hide the
/// useful part (a refused certificate, a closed port) in their sources.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_through_common_names() {
        for role in [Role::Client("alice".into()), Role::Admin("ops".into()), Role::Node("n1".into())] {
            assert_eq!(Role::parse(&role.common_name()), Some(role));
        }
        assert_eq!(Role::parse("client:"), None);
        assert_eq!(Role::parse("root:x"), None);
        assert_eq!(Role::parse("alice"), None);
    }
}
