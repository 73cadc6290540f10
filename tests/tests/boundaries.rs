//! The roles a certificate gives, tried against a real node: a client
//! certificate can use no Admin or Peer method, an admin certificate can
//! write no account data, a node certificate is no operator; and what
//! `coffer-admin` writes as keys is private.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use coffer_proto::tls::{self, TlsFiles};
use coffer_proto::wire::{
    self, admin_client::AdminClient, peer_client::PeerClient, store_client::StoreClient,
};
use coffer_tests::cluster::Cluster;
use tokio::runtime::Runtime;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// A channel to the node as certificate `dir/NAME.crt`.
fn channel(rt: &Runtime, dir: &Path, name: &str, port: u16) -> Channel {
    let files =
        TlsFiles::new(dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")), dir.join("ca.crt"));
    rt.block_on(tls::connect("127.0.0.1", port, files.client_config().unwrap())).unwrap()
}

/// Every call's outcome must be a refusal of the role (not some other error
/// that happens to stop it), naming what was refused.
fn refused<T: std::fmt::Debug>(what: &str, outcome: Result<T, Status>) {
    match outcome {
        Err(s) if s.code() == Code::PermissionDenied => {}
        other => panic!("{what}: expected PERMISSION_DENIED, got {other:?}"),
    }
}

/// Calls every Admin method; each must be refused.
fn every_admin_call_refused(rt: &Runtime, mut admin: AdminClient<Channel>, who: &str) {
    macro_rules! call {
        ($method:ident, $request:expr) => {
            refused(&format!("{who}: Admin.{}", stringify!($method)), rt.block_on(admin.$method($request)))
        };
    }
    call!(create_account, wire::CreateAccountRequest { name: "x".into(), ..Default::default() });
    call!(accounts, wire::AccountQuery::default());
    call!(set_limits, wire::SetLimitsRequest { name: "client".into(), ..Default::default() });
    call!(set_frozen, wire::SetFrozenRequest { name: "client".into(), frozen: true, ..Default::default() });
    call!(delete_account, wire::AccountQuery { name: "client".into(), ..Default::default() });
    call!(check, wire::CheckRequest { all: true, ..Default::default() });
    call!(usage, wire::AccountQuery::default());
    call!(housekeep, wire::HousekeepRequest::default());
    call!(set_retention, wire::SetRetentionRequest { name: "client".into(), ..Default::default() });
    call!(status, wire::StatusRequest::default());
    call!(raid_check, wire::RaidRequest::default());
    call!(raid_rebuild, wire::RaidRequest::default());
    call!(cluster_init, wire::ClusterRequest::default());
    call!(cluster_join, wire::ClusterRequest { address: "127.0.0.1:1".into(), ..Default::default() });
    call!(cluster_leave, wire::ClusterRequest { node: "node1".into(), ..Default::default() });
    call!(cluster_status, wire::ClusterRequest::default());
    call!(sync, wire::AccountQuery { name: "client".into(), ..Default::default() });
    call!(migrate, wire::MigrateRequest { account: "client".into(), to: "node1".into() });
    call!(purge, wire::AccountQuery { name: "client".into(), ..Default::default() });
}

/// Calls every Peer method; each must be refused.
fn every_peer_call_refused(rt: &Runtime, mut peer: PeerClient<Channel>, who: &str) {
    macro_rules! call {
        ($method:ident, $request:expr) => {
            refused(&format!("{who}: Peer.{}", stringify!($method)), rt.block_on(peer.$method($request)))
        };
    }
    let account = 1;
    call!(raft, wire::PeerMessage { kind: "vote".into(), json: b"{}".to_vec() });
    call!(forward, wire::PeerMessage { kind: "forward".into(), json: b"\"Status\"".to_vec() });
    call!(sync_state, wire::SyncStateRequest { account, ..Default::default() });
    call!(sync_missing, wire::SyncIds { account, ids: vec![vec![0; 32]] });
    call!(sync_fetch, wire::SyncIds { account, ids: vec![vec![0; 32]] });
    call!(sync_put, wire::SyncObjects { account, objects: vec![] });
    call!(sync_commit, wire::SyncCommitRequest { account, id: vec![0; 32], ..Default::default() });
    call!(sync_bury, wire::SyncIds { account, ids: vec![vec![0; 32]] });
    call!(sync_adopt, wire::SyncAdoptRequest { account, marker: u64::MAX });
}

#[test]
fn each_certificate_reaches_only_its_own_service() {
    let c = Cluster::start(1);
    let (dir, port) = (c.dir.path(), c.nodes[0].port);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let before = c.admin_json(&["account", "info", "client", "--json"]);

    let client = channel(&rt, dir, "client", port);
    every_admin_call_refused(&rt, AdminClient::new(client.clone()), "client certificate");
    every_peer_call_refused(&rt, PeerClient::new(client), "client certificate");

    let admin = channel(&rt, dir, "admin", port);
    every_peer_call_refused(&rt, PeerClient::new(admin.clone()), "admin certificate");
    // An operator cannot act as a client: no login, so no account data.
    let mut store = StoreClient::new(admin);
    let login = wire::LoginRequest { write: true, register_keys: true, ..Default::default() };
    refused("admin certificate: Store.Login", rt.block_on(store.login(login)));
    let commit =
        rt.block_on(store.commit_set(wire::CommitSetRequest { id: vec![0; 32], ..Default::default() }));
    assert_eq!(commit.unwrap_err().code(), Code::Unauthenticated, "no login, no writes");

    // Another node is no operator either.
    every_admin_call_refused(&rt, AdminClient::new(channel(&rt, dir, "node1", port)), "node certificate");

    // Nothing changed.
    let after = c.admin_json(&["account", "info", "client", "--json"]);
    assert_eq!(before, after);
}

#[test]
fn every_private_key_the_admin_tool_writes_is_the_owners_alone() {
    let c = Cluster::start_some(2, 0, &["--discs", "3"]);
    let ca = c.dir.path().display().to_string();
    c.admin_ok(&["ca", "--dir", &ca, "issue-client", "carol", "--account-id", "42"]);
    c.admin_ok(&["ca", "--dir", &ca, "issue-admin", "ops2"]);
    c.admin_ok(&["ca", "--dir", &ca, "issue-node", "node9"]);
    let mut keys = 0;
    for entry in std::fs::read_dir(c.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".key") || name.ends_with(".keys") {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{name} is {mode:o}");
            keys += 1;
        }
    }
    // ca, node1, node2, admin, client (key and keys file), carol, ops2, node9
    assert_eq!(keys, 9);
}

/// Signs a certificate for `role` with the cluster's CA that expired
/// yesterday, as DIR/FILE.crt and .key.
fn issue_expired(dir: &Path, role: &str, hosts: &[&str], file: &str) {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair};
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    let issuer =
        Issuer::from_ca_cert_pem(&read("ca.crt"), KeyPair::from_pem(&read("ca.key")).unwrap()).unwrap();
    let mut params = CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, role);
    params.extended_key_usages =
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(30);
    params.not_after = now - time::Duration::days(1);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join(format!("{file}.crt")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{file}.key")), key.serialize_pem()).unwrap();
}

#[test]
fn expired_and_foreign_certificates_are_refused_both_ways() {
    let mut c = Cluster::start(1);
    let dir = c.dir.path();
    // A client whose certificate expired: the node refuses it.
    issue_expired(dir, "client:client", &[], "stale");
    let stale = std::fs::read_to_string(c.path("client.toml")).unwrap().replace("client.crt", "stale.crt");
    std::fs::write(c.path("stale.toml"), stale.replace("\"client.key\"", "\"stale.key\"")).unwrap();
    let err = c.coffer_fails("stale.toml", &["sets"]);
    assert!(err.contains(&c.nodes[0].port.to_string()), "{err}");
    let log = c.nodes[0].log_text();
    assert!(log.contains("TLS handshake failed") && log.to_lowercase().contains("expired"), "{log}");
    c.coffer_ok("client.toml", &["sets"]);

    // A node from another group (another CA): the client refuses it.
    let other = Cluster::start(1);
    let text = std::fs::read_to_string(c.path("client.toml")).unwrap();
    let ours = c.nodes[0].url();
    let text = text.replace(&ours, &other.nodes[0].url()).replace("\"cache\"", "\"elsewhere-cache\"");
    std::fs::write(c.path("elsewhere.toml"), text).unwrap();
    let err = c.coffer_fails("elsewhere.toml", &["sets"]);
    assert!(err.contains("certificate") || err.contains("UnknownIssuer"), "{err}");

    // A node whose certificate expired: the client refuses it.
    issue_expired(dir, "node:node1", &["localhost", "127.0.0.1"], "old-node1");
    c.nodes[0].stop();
    c.nodes[0].configure("[tls]\ncert = \"old-node1.crt\"\nkey = \"old-node1.key\"");
    c.nodes[0].restart();
    let err = c.coffer_fails("client.toml", &["sets"]);
    assert!(err.to_lowercase().contains("expired"), "{err}");
}

#[test]
fn a_node_that_left_the_group_can_no_longer_reach_the_peer_service() {
    let c = Cluster::start(3);
    c.wait_for_group(1, 3);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (dir, port) = (c.dir.path(), c.nodes[0].port);
    // While a member, node3's certificate is let in.
    let status = wire::PeerMessage { kind: "forward".into(), json: b"\"Status\"".to_vec() };
    let mut peer = PeerClient::new(channel(&rt, dir, "node3", port));
    rt.block_on(peer.forward(status)).expect("a member may call");
    c.admin_ok(&["cluster", "leave", "node3"]);
    c.wait_for_group(1, 2);
    // Gone: no account change, Raft message or sync (tombstones included).
    every_peer_call_refused(&rt, PeerClient::new(channel(&rt, dir, "node3", port)), "departed node");
}
