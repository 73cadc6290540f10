//! Running a group: account groups with shared limits, client heartbeats,
//! `coffer-admin report`, and the nodes' alerts through their `notify`
//! program — on three real `coffer-node` processes.

use std::path::Path;
use std::time::Duration;

use coffer_tests::cluster::{Cluster, wait_for};
use coffer_tests::fstree::{random_bytes, write};
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(60);
const MIB: usize = 1 << 20;

/// `coffer-admin report --json`: whether it asked for attention (exit 1),
/// and what it found.
fn report(c: &Cluster) -> (bool, Value) {
    let out = c.admin(&["report", "--json", "--out-of-step", "2s"]);
    let code = out.status.code();
    assert!(matches!(code, Some(0 | 1)), "report failed: {}", String::from_utf8_lossy(&out.stderr));
    (code == Some(1), serde_json::from_slice(&out.stdout).expect("report prints JSON"))
}

/// The findings of `kind` about `subject`.
fn findings<'a>(report: &'a Value, kind: &str, subject: &str) -> Vec<&'a Value> {
    let all = report["findings"].as_array().unwrap();
    all.iter().filter(|f| f["kind"] == kind && f["subject"] == subject).collect()
}

fn group_used(c: &Cluster, group: &str) -> u64 {
    c.admin_json(&["group", "info", group, "--json"])[0]["used_bytes"].as_u64().unwrap()
}

#[test]
fn an_account_groups_hard_limit_refuses_uploads_past_the_sum_of_its_accounts() {
    let c = Cluster::start(3);
    c.wait_for_group(1, 3);
    c.admin_ok(&["group", "create", "lab", "--soft", "2MiB", "--hard", "3MiB"]);
    let ann = {
        let config = c.add_account("ann", "1GiB", "1GiB");
        c.admin_ok(&["account", "set-group", "ann", "lab"]);
        c.coffer_ok(&config, &["init"]);
        config
    };
    c.admin_ok(&["account", "create", "bob", "--hard", "1GiB", "--group", "lab"]);
    let bob = {
        let ca_dir = c.dir.path().display().to_string();
        c.admin_ok(&["ca", "--dir", &ca_dir, "issue-client", "bob"]);
        let text = std::fs::read_to_string(c.path("ann.toml")).unwrap().replace("ann", "bob");
        std::fs::write(c.path("bob.toml"), text).unwrap();
        c.coffer_ok("bob.toml", &["init"]);
        "bob.toml".to_string()
    };
    let refused = c.admin(&["group", "delete", "lab"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("still has 2 account(s)"));

    let data = |name: &str, seed: u64| {
        let dir = c.path(name);
        write(&dir.join("big"), &random_bytes(seed, 2 * MIB));
        dir
    };
    c.backup(&ann, &data("ann-data", 1));
    wait_for(CONVERGE, "the group to count ann's backup", || {
        (group_used(&c, "lab") > 2 * MIB as u64).then_some(())
    });

    // Bob's own limit is 1 GiB, but ann left the group less than 1 MiB.
    let bob_data = data("bob-data", 2);
    let error = c.coffer_fails(&bob, &["backup", bob_data.to_str().unwrap()]);
    assert!(error.contains("account group `lab` is at its hard limit"), "{error}");
    let info = c.admin_json(&["account", "info", "bob", "--json"]);
    assert!(info[0]["hard_limit_now"].as_u64().unwrap() < MIB as u64, "{info}");
    assert!(c.nodes.iter().any(|n| n.log_text().contains("hard-limit-refused")), "the node alerted");

    // Usage by group: only its accounts, and the group's total.
    let usage = c.admin_ok(&["usage", "--group", "lab"]);

    assert!(usage.contains("ann") && !usage.contains("client "), "{usage}");
    assert!(usage.lines().any(|l| l.starts_with("lab ")), "{usage}");
    let (attention, found) = report(&c);
    assert!(attention, "{found}");
    assert_eq!(findings(&found, "group-over-soft-limit", "lab").len(), 1, "{found}");

    // Out of the group, bob has his own limit again.
    c.admin_ok(&["account", "set-group", "bob"]);
    c.backup(&bob, &bob_data);
    c.admin_ok(&["group", "set-limit", "lab", "--soft", "1GiB", "--hard", "1GiB"]);
    let listed = c.admin_json(&["group", "info", "--json"]);
    assert_eq!(listed[0]["accounts"], serde_json::json!(["ann"]), "{listed}");
    assert_eq!(listed[0]["hard_limit"], 1u64 << 30, "{listed}");
}

/// A notify program that appends each alert (event, then its JSON) to `log`.
fn notify_program(dir: &Path, log: &Path) -> String {
    let path = dir.join("alert.sh");
    std::fs::write(&path, format!("#!/bin/sh\nprintf '%s %s\\n' \"$1\" \"$(cat)\" >> '{}'\n", log.display()))
        .unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path.display().to_string()
}

fn alerted(log: &Path, event: &str, subject: &str) -> Option<Value> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().find_map(|line| {
        let (name, json) = line.split_once(' ')?;
        let detail: Value = serde_json::from_str(json).ok()?;
        (name == event && detail["subject"] == subject).then_some(detail)
    })
}

#[test]
fn heartbeats_reports_and_alerts_find_silent_and_failing_clients_lost_discs_and_nodes_down() {
    let mut c = Cluster::start_some(3, 0, &["--discs", "3"]);
    let log = c.path("alerts.log");
    let program = notify_program(c.dir.path(), &log);
    for node in &mut c.nodes {
        node.configure(&format!(
            "[alerts]\nnotify = \"{program}\"\ncheck_every = \"1s\"\nunreachable_after = \"2s\"\nrepeat = \"1h\"\n"
        ));
        node.restart();
    }
    c.wait_for_group(1, 3);
    let data = c.path("data");
    for i in 0..10 {
        write(&data.join(format!("f{i}")), &random_bytes(i, 20_000));
    }
    c.backup("client.toml", &data);
    let info = c.admin_json(&["account", "info", "client", "--json"]);
    let activity = &info[0]["activity"];
    assert!(activity["commit_ns"].as_i64().unwrap() > 0, "{info}");
    assert_eq!(activity["client_version"], env!("CARGO_PKG_VERSION"), "{info}");
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    assert_eq!(activity["host"], host.as_str(), "{info}");
    wait_for(CONVERGE, "a report with nothing to attend to", || {
        let (attention, found) = report(&c);
        (!attention).then_some(found)
    });

    // A client that could not reach the group says so at its next login.
    for node in &mut c.nodes {
        node.kill();
    }
    // Something to upload: a backup with nothing changed never connects.
    write(&data.join("new"), &random_bytes(99, 20_000));
    c.coffer_fails("client.toml", &["backup", data.to_str().unwrap()]);
    for node in &mut c.nodes {
        node.restart();
    }
    c.wait_for_group(1, 3);
    c.coffer_ok("client.toml", &["sets"]);
    let (_, found) = wait_for(CONVERGE, "the failure to reach the report", || {
        let (attention, found) = report(&c);
        (!findings(&found, "client-error", "client").is_empty()).then_some((attention, found))
    });
    let error = findings(&found, "client-error", "client")[0]["detail"].as_str().unwrap().to_string();
    assert!(error.contains(&host), "{error}");
    // The next good backup closes it.
    c.backup("client.toml", &data);
    wait_for(CONVERGE, "the error to be closed", || {
        findings(&report(&c).1, "client-error", "client").is_empty().then_some(())
    });

    // Silent: no backup for longer than the account's threshold.
    c.admin_ok(&["account", "set-silent-after", "client", "3s"]);
    let (attention, found) = wait_for(CONVERGE, "the client to turn silent", || {
        let (attention, found) = report(&c);
        (!findings(&found, "silent", "client").is_empty()).then_some((attention, found))
    });
    assert!(attention, "{found}");
    let alert = wait_for(CONVERGE, "the client-silent alert", || alerted(&log, "client-silent", "client"));
    assert_eq!(alert["account"], "client", "{alert}");

    // A disc gone from node 2, and node 3 down.
    let disc = c.pack_dirs(2)[1].clone();
    let aside = disc.with_extension("gone");
    std::fs::rename(&disc, &aside).unwrap();
    std::fs::remove_dir_all(&aside).unwrap();
    c.nodes[2].kill();
    let found = wait_for(CONVERGE, "the lost disc and the dead node in the report", || {
        let (_, found) = report(&c);
        let lost = findings(&found, "disc-lost", "node2").len() == 1;
        (lost && findings(&found, "node-down", "node3").len() == 1).then_some(found)
    });
    assert_eq!(found["nodes"].as_array().unwrap().len(), 3, "{found}");
    let disc_alert =
        wait_for(CONVERGE, "the disc-lost alert", || alerted(&log, "disc-lost", &disc.display().to_string()));
    assert_eq!(disc_alert["node"], "node2", "{disc_alert}");
    wait_for(CONVERGE, "the node-unreachable alert", || alerted(&log, "node-unreachable", "node3"));
    let out = c.admin(&["report"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("disc-lost") && text.contains("need attention"), "{text}");
}
