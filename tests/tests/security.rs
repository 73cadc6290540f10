//! What a signed-in client, a wrong keys file or a hostile caller can do to
//! real nodes: learn nothing about registered keys, put nothing oversized
//! into the replicated account database, starve no other account.

use std::time::Duration;

use coffer_tests::cluster::{Cluster, wait_for};
use coffer_tests::fstree::{random_bytes, write};
use coffer_tests::rawclient::RawClient;

#[test]
fn a_wrong_keys_login_learns_nothing_about_the_registered_keys() {
    let c = Cluster::start(1);
    let alice = c.add_client("alice", "1GiB", "1GiB");
    let registered = c.fingerprint("alice");
    assert_eq!(registered.len(), 64, "{registered}");

    // The quickstart account's keys, offered for alice's account.
    let wrong = std::fs::read_to_string(c.path(&alice)).unwrap().replace("alice.keys", "client.keys");
    std::fs::write(c.path("wrong.toml"), wrong).unwrap();
    let src = c.path("src");
    write(&src.join("f"), &random_bytes(1, 1000));
    let err = c.coffer_fails("wrong.toml", &["backup", &src.display().to_string()]);
    assert!(err.contains("wrong keys file"), "{err}");
    assert!(!err.contains(&registered), "the error shows the registered keys: {err}");
    let log = c.nodes[0].log_text();
    assert!(log.contains("registered keys"), "alice's registration was logged");
    assert!(!log.contains(&registered), "the node's log shows the registered keys");
}

#[test]
fn an_oversized_or_malformed_fingerprint_is_refused_and_the_group_keeps_committing() {
    let c = Cluster::start(3);
    c.wait_for_group(1, 3);
    let config = c.add_account("mallory", "1GiB", "1GiB");
    let mut raw = RawClient::connect(c.dir.path(), "mallory", c.nodes[0].port).unwrap();
    // Just under the transport's limit: it would fit in one message, but
    // not in a Raft entry that followers must take.
    for bad in ["f".repeat((16 << 20) - 4096), String::new(), "not hex".into()] {
        let err = raw.register(&bad).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{}", err.message());
        assert!(err.message().contains("fingerprint"), "{}", err.message());
        assert!(err.message().len() < 300, "the refusal echoes the input back");
    }
    // Every node goes on committing changes, and the account can still get
    // real keys.
    c.admin_ok(&["account", "create", "after", "--hard", "1GiB"]);
    for k in 1..=3 {
        wait_for(Duration::from_secs(60), &format!("node {k} has the account made after"), || {
            let out = c.admin_at(k, &["account", "info", "after", "--json"]);
            out.status.success().then_some(())
        });
    }
    c.coffer_ok(&config, &["init"]);
    assert_eq!(c.fingerprint("mallory").len(), 64);
}

#[test]
fn downloads_a_client_never_reads_do_not_stop_another_accounts_backup() {
    let c = Cluster::start(1);
    let big = c.path("big");
    write(&big.join("f"), &random_bytes(7, 40 << 20));
    c.backup("client.toml", &big);
    let port = c.nodes[0].port;
    let fp = c.fingerprint("client");
    let mut reader = RawClient::connect(c.dir.path(), "client", port).unwrap();
    reader.login(&fp, false).unwrap();
    let ids = reader.reachable().unwrap();
    assert!(ids.len() > 8, "{} objects", ids.len());

    // Hundreds of downloads over several connections, never read: more
    // than the node has blocking threads.
    let mut hog = Vec::new();
    let mut opened = Vec::new();
    for _ in 0..6 {
        let mut raw = RawClient::connect(c.dir.path(), "client", port).unwrap();
        raw.login(&fp, false).unwrap();
        opened.extend(raw.open_unread(&ids, 100));
        hog.push(raw);
    }
    let refused =
        opened.iter().filter(|o| o.as_ref().is_err_and(|e| e.code() == tonic::Code::ResourceExhausted));
    assert!(refused.count() >= 600 - 32, "the account's transfers are limited");

    // Another account backs up meanwhile, in a bounded time.
    let bob = c.add_client("bob", "1GiB", "1GiB");
    let small = c.path("small");
    for i in 0..20 {
        write(&small.join(format!("f{i}")), &random_bytes(100 + i, 50_000));
    }
    let report = c.backup(&bob, &small);
    assert_eq!(report["files_total"].as_u64(), Some(20), "{report}");
    drop(opened);
    drop(hog);
}

#[test]
fn a_group_on_the_ipv6_loopback_serves_clients_admins_and_peers() {
    let c = Cluster::start_with(2, &["--address", "::1"]);
    assert!(c.nodes[0].url().starts_with("coffer://[::1]:"), "{}", c.nodes[0].url());
    // Node 2 joined node 1 over IPv6, and the admin tool asks each over it.
    c.wait_for_group(2, 2);
    let src = c.path("src");
    for i in 0..10 {
        write(&src.join(format!("f{i}")), &random_bytes(i, 20_000));
    }
    let report = c.backup("client.toml", &src);
    assert_eq!(report["replicas"].as_u64(), Some(2), "fast sync reached node 2 over IPv6: {report}");
    c.coffer_ok(
        "client.toml",
        &["restore", &src.display().to_string(), &c.path("out").display().to_string()],
    );
    coffer_tests::fstree::assert_same_tree(&src, &c.path("out"));
}

#[test]
fn a_revoked_certificate_is_refused_at_the_handshake_once_the_node_rereads_the_list() {
    let c = Cluster::start(1);
    let carol = c.add_client("carol", "1GiB", "1GiB");
    c.coffer_ok(&carol, &["sets"]);
    let ca = c.dir.path().display().to_string();
    let revoked = c.admin_ok(&["ca", "--dir", &ca, "revoke", "carol"]);
    assert!(revoked.contains("Revoked carol"), "{revoked}");
    c.admin_ok(&["ca", "--dir", &ca, "revoke", "admin"]);
    // Put back where the configs look for them, as a thief would keep them.
    for ext in ["crt", "key"] {
        for name in ["carol", "admin"] {
            let kept = c.path(&format!("{name}.{ext}.revoked"));
            std::fs::rename(&kept, c.path(&format!("{name}.{ext}"))).unwrap();
        }
    }
    c.nodes[0].hangup();
    wait_for(Duration::from_secs(30), "the node to reload its TLS files", || {
        c.nodes[0].log_text().contains("TLS files reloaded").then_some(())
    });
    // Every attempt is refused. With TLS 1.3 the node checks a client's
    // certificate after the client's side of the handshake is done, so the
    // client's login is often on its way when the node's alert goes out;
    // the client usually reports the alert, and sometimes (its HTTP/2
    // connection failing under the login) only a closed connection, with a
    // hint that the certificate may have been refused.
    let errors: Vec<String> = (0..5).map(|_| c.coffer_fails(&carol, &["sets"])).collect();
    assert!(errors.iter().all(|e| e.to_lowercase().contains("certificate")), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("CertificateRevoked")), "the alert named: {errors:?}");
    let admin = c.admin(&["status"]);
    assert!(!admin.status.success(), "a revoked admin certificate still works");
    // Everyone else goes on.
    let out = c.coffer("client.toml", &["sets"]);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), c.nodes[0].log_text());
    assert!(c.nodes[0].log_text().contains("connection refused"), "the node logs the refusal");
}

#[test]
fn certificates_of_a_deleted_account_do_not_open_a_new_one_of_the_same_name() {
    let c = Cluster::start(1);
    let dave = c.add_client("dave", "1GiB", "1GiB");
    let src = c.path("src");
    write(&src.join("f"), &random_bytes(3, 10_000));
    c.backup(&dave, &src);
    // The old certificate is kept (say, on a machine that was given away).
    for ext in ["crt", "key", "keys"] {
        std::fs::rename(c.path(&format!("dave.{ext}")), c.path(&format!("old-dave.{ext}"))).unwrap();
    }
    c.admin_ok(&["account", "delete", "dave", "--yes"]);
    let fresh = c.add_client("dave", "1GiB", "1GiB");
    c.backup(&fresh, &src);

    let text = std::fs::read_to_string(c.path(&dave)).unwrap();
    let old = text.replace("\"dave.", "\"old-dave.");
    std::fs::write(c.path("old-dave.toml"), old.replace("dave-cache", "old-dave-cache")).unwrap();
    let err = c.coffer_fails("old-dave.toml", &["sets"]);
    assert!(err.contains("earlier account `dave`"), "{err}");
}
