//! A real `coffer-node` on 127.0.0.1 with real TLS and RocksDB, driven by the
//! real `coffer` and `coffer-admin` binaries (and a bare gRPC client for
//! requests the real client never sends).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use coffer_proto::object::{self, ObjectKind};
use coffer_proto::wire;
use coffer_tests::cluster::{Cluster, wait_bounded};
use coffer_tests::fstree::{assert_same_tree, random_bytes, write};
use coffer_tests::rawclient::RawClient;
use coffer_tests::{u64_field, walk_files};
use serde_json::Value;

fn make_tree(root: &Path, seed: u64, files: usize, size: usize) {
    for i in 0..files {
        write(&root.join(format!("d{}/f{i}", i % 3)), &random_bytes(seed * 1000 + i as u64, size));
    }
    write(&root.join("empty"), b"");
}

fn restore(c: &Cluster, config: &str, from: &Path, to: &Path) {
    c.coffer_ok(config, &["restore", &from.display().to_string(), &to.display().to_string()]);
}

fn set_ids(c: &Cluster, config: &str) -> Vec<String> {
    let sets = c.coffer_json(config, &["sets", "--json"]);
    sets.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn check_clean(c: &Cluster, account: &str) {
    let report = c.admin_json(&["account", "check", account, "--json"]);
    assert_eq!(report[0]["problems"], Value::Array(vec![]), "check found problems: {report}");
}

/// Starts `coffer backup SRC` and returns once the node has committed two
/// packs of it: the second proves the first is recorded in the index.
fn backup_under_way(c: &Cluster, src: &Path, packs: &str) -> std::process::Child {
    let before = pack_count(c, packs);
    let client = std::process::Command::new(coffer_tests::binary("coffer"))
        .arg("--config")
        .arg(c.path("client.toml"))
        .args(["backup", "--json"])
        .arg(src)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_packs(c, packs, before + 2);
    client
}

#[test]
fn two_accounts_back_up_through_one_node_and_cannot_reach_each_other() {
    let c = Cluster::start(1);
    let bob = c.add_client("bob", "unlimited", "unlimited");
    let (a_src, b_src) = (c.path("alice-src"), c.path("bob-src"));
    make_tree(&a_src, 1, 12, 40_000);
    make_tree(&b_src, 2, 12, 40_000);
    c.backup("client.toml", &a_src);
    c.backup(&bob, &b_src);
    restore(&c, "client.toml", &a_src, &c.path("a-out"));
    restore(&c, &bob, &b_src, &c.path("b-out"));
    assert_same_tree(&a_src, &c.path("a-out"));
    assert_same_tree(&b_src, &c.path("b-out"));

    // Ids learnt from bob's account are invisible to alice's certificate.
    let bob_set = unhex(&set_ids(&c, &bob)[0]);
    let mut raw = RawClient::connect(c.dir.path(), "client", c.nodes[0].port).unwrap();
    raw.login(&c.fingerprint("client"), true).unwrap();
    assert_eq!(raw.have(vec![bob_set.clone()]).unwrap(), vec![false]);
    let err = raw.download(vec![bob_set.clone()]).unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");
    let listed: Vec<Vec<u8>> = raw.sets().unwrap().into_iter().map(|s| s.id).collect();
    assert!(!listed.contains(&bob_set) && listed.len() == 1);
    let err = raw.forget(bob_set).unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");
    drop(raw);
    assert_eq!(set_ids(&c, &bob).len(), 1, "bob's set survived");
    restore(&c, &bob, &b_src, &c.path("b-out2"));
    assert_same_tree(&b_src, &c.path("b-out2"));

    // A later `coffer init` with other keys cannot take over bob's account.
    let other = c.path("bob2.toml");
    std::fs::write(&other, std::fs::read_to_string(c.path(&bob)).unwrap().replace("bob.keys", "bob2.keys"))
        .unwrap();
    let err = c.coffer_fails("bob2.toml", &["init"]);
    assert!(err.contains("wrong keys file"), "{err}");
    assert!(!c.path("bob2.keys").exists(), "a useless keys file was left behind");
}

#[test]
fn plaintext_and_foreign_certificates_are_refused() {
    let c = Cluster::start(1);
    let port = c.nodes[0].port;
    // Plaintext HTTP/2: the node answers with a TLS alert or a close, never HTTP/2.
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").unwrap();
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer);
    assert!(answer.is_empty() || answer[0] == 0x15, "plaintext got an answer: {answer:?}");

    // A client certificate from another CA.
    let other = Cluster::start(1);
    let foreign = c.path("foreign.toml");
    let text = format!(
        "store = \"coffer://127.0.0.1:{port}\"\nkeys = \"{}\"\ncache = \"fcache\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"\nca = \"ca.crt\"\n",
        other.path("client.keys").display(),
        other.path("client.crt").display(),
        other.path("client.key").display()
    );
    std::fs::write(&foreign, text).unwrap();
    let err = c.coffer_fails("foreign.toml", &["sets"]);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    let status = c.admin_json(&["status", "--json"]);
    assert!(u64_field(&status[0], "handshakes_failed") >= 2, "{status}");
}

#[test]
fn wrong_keys_file_is_refused_at_login_and_nothing_is_written() {
    let c = Cluster::start(1);
    let src = c.path("src");
    make_tree(&src, 3, 4, 10_000);
    // Keys made for another store.
    let stranger = Cluster::start(1);
    std::fs::copy(stranger.path("client.keys"), c.path("wrong.keys")).unwrap();
    let config = std::fs::read_to_string(c.path("client.toml")).unwrap().replace("client.keys", "wrong.keys");
    std::fs::write(c.path("wrong.toml"), config).unwrap();
    let err = c.coffer_fails("wrong.toml", &["backup", &src.display().to_string()]);
    assert!(err.contains("wrong keys file"), "{err}");
    let info = c.admin_json(&["account", "info", "client", "--json"]);
    assert_eq!(u64_field(&info[0], "objects"), 0, "{info}");
    assert_eq!(u64_field(&info[0], "sets"), 0, "{info}");
}

#[test]
fn limits_freezing_and_a_second_writer() {
    let c = Cluster::start(1);
    // Hard limit: the upload is refused and the client says so.
    let small = c.add_client("small", "1MiB", "1MiB");
    let big = c.path("big");
    make_tree(&big, 4, 3, 1 << 20);
    let err = c.coffer_fails(&small, &["backup", &big.display().to_string()]);
    assert!(err.contains("hard limit"), "{err}");
    assert!(set_ids(&c, &small).is_empty());

    // Soft limit: housekeeping forgets the oldest set, keeps the newest.
    let soft = c.add_client("soft", "1MiB", "unlimited");
    let src = c.path("soft-src");
    make_tree(&src, 5, 2, 400_000);
    c.backup(&soft, &src);
    make_tree(&src, 6, 2, 400_000);
    let newest = c.backup(&soft, &src)["set_id"].as_str().unwrap().to_string();
    make_tree(&src, 7, 2, 400_000);
    let newest2 = c.backup(&soft, &src)["set_id"].as_str().unwrap().to_string();
    assert_eq!(set_ids(&c, &soft).len(), 3);
    let hk = c.admin_json(&["housekeep", "soft", "--json"]);
    assert!(u64_field(&hk, "sets_forgotten") >= 1, "{hk}");
    let left = set_ids(&c, &soft);
    assert_eq!(left.last(), Some(&newest2), "the newest set must survive");
    assert!(left.len() < 3 && (left.len() == 1 || left[0] == newest));
    restore(&c, &soft, &src, &c.path("soft-out"));
    assert_same_tree(&src, &c.path("soft-out"));

    // Frozen: reads work, writes are refused until thawed.
    let src = c.path("src");
    make_tree(&src, 8, 3, 20_000);
    c.backup("client.toml", &src);
    c.admin_ok(&["account", "freeze", "client"]);
    write(&src.join("new"), b"new file");
    let err = c.coffer_fails("client.toml", &["backup", &src.display().to_string()]);
    assert!(err.contains("frozen"), "{err}");
    restore(&c, "client.toml", &src, &c.path("frozen-out"));
    c.admin_ok(&["account", "thaw", "client"]);
    c.backup("client.toml", &src);

    // A second writer of the same account is told the account is busy.
    let mut holder = RawClient::connect(c.dir.path(), "client", c.nodes[0].port).unwrap();
    holder.login(&c.fingerprint("client"), true).unwrap();
    write(&src.join("newer"), b"newer file");
    let err = c.coffer_fails("client.toml", &["backup", &src.display().to_string()]);
    assert!(err.contains("busy"), "{err}");
    drop(holder);
    c.backup("client.toml", &src);
}

#[test]
fn killed_node_loses_nothing_committed_and_the_rerun_sends_only_the_rest() {
    // Packs as RAID files on three directories: the kill lands mid-way
    // through writing stripes.
    let mut c = Cluster::start_with(1, &["--discs", "3"]);
    // A set committed before the kill, which must come through it.
    let first = c.path("first");
    make_tree(&first, 8, 6, 300_000);
    c.backup("client.toml", &first);
    let src = c.path("src");
    make_tree(&src, 9, 10, 12 << 20);
    let mut client = backup_under_way(&c, &src, "node1/disc3");
    c.nodes[0].kill();
    let status = wait_bounded(&mut client, Duration::from_secs(120));
    assert!(!status.success(), "backup cannot succeed without its node");
    c.nodes[0].restart();
    check_clean(&c, "client");
    restore(&c, "client.toml", &first, &c.path("first-out"));
    assert_same_tree(&first, &c.path("first-out"));
    let raid = c.admin_json(&["raid", "check", "--json"]);
    assert_eq!(raid["damage"], serde_json::json!([]), "{raid}");
    let debris: Vec<_> = (1..=3)
        .flat_map(|d| walk_files(&c.path(&format!("node1/disc{d}"))))
        .filter(|p| p.to_string_lossy().ends_with(".rfw"))
        .collect();
    assert!(debris.is_empty(), "temporary stripes left after restart: {debris:?}");
    let report = c.backup("client.toml", &src);
    let total = u64_field(&report, "bytes_total");
    assert!(
        u64_field(&report, "bytes_stored_new") < total - (30 << 20),
        "the rerun sent what the node already had: {report}"
    );
    restore(&c, "client.toml", &src, &c.path("out"));
    assert_same_tree(&src, &c.path("out"));
    check_clean(&c, "client");
    assert!(c.nodes[0].stop().success(), "SIGTERM should stop the node cleanly");
}

#[test]
fn killed_client_resumes_and_sends_only_what_the_node_lacks() {
    let c = Cluster::start(1);
    let src = c.path("src");
    make_tree(&src, 12, 8, 12 << 20);
    let mut client = backup_under_way(&c, &src, "node1/data/packs");
    client.kill().unwrap();
    wait_bounded(&mut client, Duration::from_secs(30));
    let report = c.backup("client.toml", &src);
    assert!(
        u64_field(&report, "bytes_stored_new") < u64_field(&report, "bytes_total") - (30 << 20),
        "the rerun sent what the node already had: {report}"
    );
    restore(&c, "client.toml", &src, &c.path("out"));
    assert_same_tree(&src, &c.path("out"));
    check_clean(&c, "client");
}

#[test]
fn unchanged_rerun_makes_no_connection_and_a_changed_store_refreshes_the_cache() {
    let c = Cluster::start(1);
    let src = c.path("src");
    make_tree(&src, 10, 6, 30_000);
    // Files modified just before a backup are "racy" and read again next
    // time (see client::scanner); let the tree age past that window.
    std::thread::sleep(Duration::from_millis(100));
    let first = c.backup("client.toml", &src);
    let before = c.connections();
    let again = c.backup("client.toml", &src);
    assert_eq!(again["unchanged"], Value::Bool(true), "{again}");
    assert_eq!(c.connections(), before + 1, "an unchanged backup connected to the node");

    // Another client of the same account changes the store; this client's
    // cache is then stale and must be rebuilt, not trusted.
    let twin = std::fs::read_to_string(c.path("client.toml"))
        .unwrap()
        .replace("cache = \"cache\"", "cache = \"twin\"");
    std::fs::write(c.path("twin.toml"), twin).unwrap();
    c.coffer_ok("twin.toml", &["forget", first["set_id"].as_str().unwrap()]);
    write(&src.join("d0/changed"), b"changed");
    let report = c.backup("client.toml", &src);
    assert_eq!(report["unchanged"], Value::Bool(false));
    restore(&c, "client.toml", &src, &c.path("out"));
    assert_same_tree(&src, &c.path("out"));
}

#[test]
fn malformed_requests_get_errors_and_leave_the_store_intact() {
    let c = Cluster::start(1);
    let src = c.path("src");
    make_tree(&src, 11, 5, 30_000);
    c.backup("client.toml", &src);
    let mut raw = RawClient::connect(c.dir.path(), "client", c.nodes[0].port).unwrap();
    let err = raw.have(vec![vec![1; 32]]).unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "requests before login: {err}");
    raw.login(&c.fingerprint("client"), true).unwrap();

    let err = raw.have(vec![vec![1; 32], vec![2; 5]]).unwrap_err();
    assert!(err.code() == tonic::Code::InvalidArgument && err.message().contains("#1"), "{err}");
    let good = object::encode(ObjectKind::Chunk, &[], b"payload");
    let mut corrupt = good.clone();
    *corrupt.last_mut().unwrap() ^= 1;
    let obj = |id: u8, envelope: &[u8]| wire::StoredObject { id: vec![id; 32], envelope: envelope.to_vec() };
    let err = raw.upload(vec![wire::ObjectBatch { objects: vec![obj(7, &corrupt)] }]).unwrap_err();
    assert!(err.code() == tonic::Code::InvalidArgument && err.message().contains("CRC"), "{err}");
    let err = raw.upload(vec![wire::ObjectBatch { objects: vec![obj(7, &good[..10])] }]).unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    let dangling =
        object::encode(ObjectKind::Tree, &[coffer_proto::ObjectId::from_slice(&[9; 32]).unwrap()], b"t");
    let err = raw.upload(vec![wire::ObjectBatch { objects: vec![obj(8, &dangling)] }]).unwrap_err();
    assert!(err.message().contains("not in the store"), "{err}");
    let huge = vec![0u8; 20 << 20];
    let err = raw.upload(vec![wire::ObjectBatch { objects: vec![obj(9, &huge)] }]).unwrap_err();
    assert!(matches!(err.code(), tonic::Code::ResourceExhausted | tonic::Code::OutOfRange), "{err}");
    // A stream broken off after one good object keeps that object.
    let _ = raw.upload_broken_off(vec![wire::ObjectBatch { objects: vec![obj(10, &good)] }]);
    drop(raw);

    let mut raw = RawClient::connect(c.dir.path(), "client", c.nodes[0].port).unwrap();
    raw.login(&c.fingerprint("client"), false).unwrap();
    assert_eq!(raw.have(vec![vec![7; 32], vec![8; 32], vec![9; 32]]).unwrap(), vec![false; 3]);
    // The node notices the broken stream and makes what arrived durable in
    // its own time: the object appears, and stays.
    let kept = || (raw.have(vec![vec![10; 32]]).unwrap() == vec![true]).then_some(());
    coffer_tests::cluster::wait_for(Duration::from_secs(10), "the broken-off stream's object", kept);
    drop(raw);
    check_clean(&c, "client");
    restore(&c, "client.toml", &src, &c.path("out"));
    assert_same_tree(&src, &c.path("out"));
}

/// Where a one-node cluster keeps its packs.
const PACKS: &str = "node1/data/packs";

/// Waits for a client process and returns (success, stderr).
fn finished(mut client: std::process::Child) -> (bool, String) {
    let status = wait_bounded(&mut client, Duration::from_secs(120));
    let mut err = String::new();
    client.stderr.take().map(|mut e| e.read_to_string(&mut err));
    (status.success(), err)
}

/// A backup of `src` under way through `client.toml`, its stderr piped.
fn backup_piped(c: &Cluster, src: &Path, extra: &[&str]) -> std::process::Child {
    c.coffer_command("client.toml", &[extra, &["backup", &src.display().to_string()]].concat())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until `dir` holds `n` committed packs.
fn wait_for_packs(c: &Cluster, dir: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while pack_count(c, dir) < n {
        assert!(Instant::now() < deadline, "upload never got going");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Committed pack files under `dir` of the cluster.
fn pack_count(c: &Cluster, dir: &str) -> usize {
    walk_files(&c.path(dir)).iter().filter(|p| p.extension().is_some_and(|e| e == "pack")).count()
}

#[test]
fn a_client_stopped_mid_upload_does_not_keep_its_account_busy() {
    let mut c = Cluster::start_some(1, 0, &[]);
    c.nodes[0].configure("idle_writer = \"3s\"");
    c.nodes[0].restart();
    let big = c.path("big");
    make_tree(&big, 9, 40, 4 << 20);
    let stopped = backup_piped(&c, &big, &[]);
    wait_for_packs(&c, PACKS, 1);
    signal(&stopped, nix::sys::signal::Signal::SIGSTOP);

    // Another machine of the same account (same keys, its own cache) gets in
    // while the first is still stopped, its connection still open.
    let small = c.path("small");
    make_tree(&small, 10, 3, 10_000);
    let other = ["--cache", &c.path("other-cache").display().to_string()].map(String::from);
    let other: Vec<&str> = other.iter().map(String::as_str).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let report = loop {
        let (ok, err) = finished(backup_piped(&c, &small, &other));
        if ok {
            break true;
        }
        assert!(err.contains("busy"), "{err}");
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(report, "the second client never got the account while the first was stopped");

    signal(&stopped, nix::sys::signal::Signal::SIGCONT);
    let (ok, err) = finished(stopped);
    assert!(ok || err.contains("took over") || err.contains("connection"), "{err}");
    restore(&c, "client.toml", &small, &c.path("small-out"));
    assert_same_tree(&small, &c.path("small-out"));
    check_clean(&c, "client");
}

/// A backup of `src` stopped (SIGSTOP) once the node has committed one
/// more pack of it: its session is open, its next object not yet sent.
fn paused_mid_upload(c: &Cluster, src: &Path) -> std::process::Child {
    let before = pack_count(c, PACKS);
    let client = backup_piped(c, src, &[]);
    wait_for_packs(c, PACKS, before + 1);
    signal(&client, nix::sys::signal::Signal::SIGSTOP);
    client
}

/// Lets a paused backup go on (the change made meanwhile has reached the
/// node's engine: the mirror applies each change at once) and waits for it.
fn resumed(client: std::process::Child) -> (bool, String) {
    std::thread::sleep(Duration::from_millis(500));
    signal(&client, nix::sys::signal::Signal::SIGCONT);
    finished(client)
}

fn signal(child: &std::process::Child, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
}

#[test]
fn freezing_lowering_the_hard_limit_or_deleting_stops_an_open_session_at_its_next_object() {
    let c = Cluster::start(1);
    let big = c.path("big");
    make_tree(&big, 11, 30, 4 << 20);
    for (change, says) in [
        (&["account", "freeze", "client"][..], "frozen"),
        (&["account", "set-limit", "client", "--hard", "40MiB", "--soft", "40MiB"][..], "hard limit"),
    ] {
        let client = paused_mid_upload(&c, &big);
        c.admin_ok(change);
        let (ok, err) = resumed(client);
        assert!(!ok && err.contains(says), "{err}");
        assert!(set_ids(&c, "client.toml").is_empty(), "nothing committed");
        c.admin_ok(&["account", "thaw", "client"]);
        c.admin_ok(&["account", "set-limit", "client", "--hard", "unlimited", "--soft", "unlimited"]);
    }
    c.backup("client.toml", &big);

    // Deleted while a client writes: refused at its next object, and the
    // account's data goes once the client has gone.
    make_tree(&big.join("more"), 12, 6, 32 << 20);
    let client = paused_mid_upload(&c, &big);
    c.admin_ok(&["account", "delete", "client", "--yes"]);
    let (ok, err) = resumed(client);
    assert!(!ok && err.contains("deleted"), "{err}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while pack_count(&c, PACKS) > 0 {
        assert!(Instant::now() < deadline, "the deleted account's packs are still there");
        std::thread::sleep(Duration::from_millis(200));
    }
}
