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
    let info = c.admin_json(&["account", "info", "alice", "--json"]);
    let registered = info[0]["key_fingerprint"].as_str().unwrap().to_string();
    assert_eq!(registered.len(), 64, "{info}");

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
    let info = c.admin_json(&["account", "info", "mallory", "--json"]);
    assert_eq!(info[0]["key_fingerprint"].as_str().unwrap().len(), 64, "{info}");
}

#[test]
fn downloads_a_client_never_reads_do_not_stop_another_accounts_backup() {
    let c = Cluster::start(1);
    let big = c.path("big");
    write(&big.join("f"), &random_bytes(7, 40 << 20));
    c.backup("client.toml", &big);
    let port = c.nodes[0].port;
    let fp = fingerprint(&c, "client");
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

fn fingerprint(c: &Cluster, account: &str) -> String {
    let info = c.admin_json(&["account", "info", account, "--json"]);
    info[0]["key_fingerprint"].as_str().unwrap().to_string()
}
