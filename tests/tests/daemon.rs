//! The client daemon and the location rules, through the real binaries:
//! `coffer daemon --foreground` processes driven by `coffer ctl`, with a
//! local store or a real group of nodes.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use coffer_tests::cluster::{COMMAND_TIMEOUT, Cluster, wait_bounded, wait_for};
use coffer_tests::fstree::{random_bytes, write};
use coffer_tests::{Env, binary, u64_field};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(40);

/// A running `coffer daemon --foreground`, killed when dropped.
struct Daemon {
    child: Child,
    config: PathBuf,
    /// Environment of the client: a local store (`Env`) or none (a group's config).
    env: Vec<(String, String)>,
}

impl Daemon {
    fn start(config: &Path, env: &[(String, String)]) -> Daemon {
        let log = fs::File::create(config.with_extension("log")).unwrap();
        let child = Command::new(binary("coffer"))
            .arg("--config")
            .arg(config)
            .args(["daemon", "--foreground"])
            .envs(env.iter().cloned())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start coffer daemon");
        let daemon = Daemon { child, config: config.to_path_buf(), env: env.to_vec() };
        wait_for(WAIT, "the daemon's control socket", || {
            daemon.ctl(&["status", "--json"]).status.success().then_some(())
        });
        daemon
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(binary("coffer"));
        cmd.arg("--config")
            .arg(&self.config)
            .args(args)
            .envs(self.env.iter().cloned())
            .env_remove("RUST_LOG");
        cmd
    }

    fn ctl(&self, args: &[&str]) -> std::process::Output {
        let mut full = vec!["ctl"];
        full.extend_from_slice(args);
        coffer_tests::cluster::run_bounded(self.command(&full), COMMAND_TIMEOUT)
    }

    fn status(&self) -> Value {
        let out = self.ctl(&["status", "--json"]);
        assert!(out.status.success(), "ctl status: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `coffer ctl sync --json` and its exit status.
    fn sync(&self, extra: &[&str]) -> (bool, Value) {
        let mut args = vec!["sync", "--json"];
        args.extend_from_slice(extra);
        let out = self.ctl(&args);
        (out.status.success(), serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
    }

    fn log(&self) -> String {
        fs::read_to_string(self.config.with_extension("log")).unwrap_or_default()
    }

    /// Waits for the daemon to exit; its exit status.
    fn exits(&mut self) -> std::process::ExitStatus {
        wait_bounded(&mut self.child, WAIT)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The names in the newest backup of `dir` (None while the store is busy).
fn names(env: &Env, dir: &Path, set: Option<&str>) -> Option<Vec<String>> {
    let mut args = vec!["ls".to_string(), "--json".into(), dir.display().to_string()];
    if let Some(set) = set {
        args.extend(["--set".into(), set.into()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = env.run(&args);
    let listed: Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(listed.as_array()?.iter().map(|e| e["name"].as_str().unwrap().to_string()).collect())
}

fn has(env: &Env, dir: &Path, name: &str) -> bool {
    names(env, dir, None).is_some_and(|n| n.iter().any(|x| x == name))
}

/// A client config with one location `src` and a `[daemon]` section.
fn config(path: &Path, src: &Path, rules: &str, daemon: &str) {
    let text = format!(
        "[[location]]\nname = \"src\"\npath = \"{}\"\nrules = [{rules}]\n\n[daemon]\n{daemon}\n",
        src.display()
    );
    fs::write(path, text).unwrap();
}

fn local_env(env: &Env) -> Vec<(String, String)> {
    vec![
        ("COFFER_STORE".into(), format!("file://{}", env.store().display())),
        ("COFFER_KEYS".into(), env.path("keys").display().to_string()),
        ("COFFER_CACHE".into(), env.path("cache").display().to_string()),
    ]
}

#[test]
fn a_lazy_daemon_takes_created_modified_and_deleted_files_by_notification_once_old_enough() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("keep.txt"), b"kept");
    let cfg = env.path("client.toml");
    config(&cfg, &src, "", "minimum_file_age = \"4s\"\nmax_upload_wait = \"10s\"\nupdate_interval = \"1h\"");
    let d = Daemon::start(&cfg, &local_env(&env));
    wait_for(WAIT, "the first set to take keep.txt", || has(&env, &src, "keep.txt").then_some(()));

    // Created: a sync right away leaves it waiting for its age; then it comes by itself.
    write(&src.join("new.txt"), b"v1");
    let (ok, report) = d.sync(&[]);
    assert!(ok, "{report}");
    assert!(u64_field(&report, "waiting") >= 1, "{report}");
    assert!(!has(&env, &src, "new.txt"), "a file younger than minimum_file_age was taken");
    wait_for(WAIT, "new.txt to be backed up", || has(&env, &src, "new.txt").then_some(()));

    // Modified, then deleted: both reach a set through notification alone.
    write(&src.join("new.txt"), b"version two");
    wait_for(WAIT, "the new size of new.txt", || {
        let out = env.run(&["ls", "-l", "--json", &src.display().to_string()]);
        let listed: Value = serde_json::from_slice(&out.stdout).ok()?;
        listed.as_array()?.iter().any(|e| e["name"] == "new.txt" && e["size"] == 11).then_some(())
    });
    fs::remove_file(src.join("keep.txt")).unwrap();
    wait_for(WAIT, "keep.txt to leave the newest set", || {
        names(&env, &src, None).filter(|n| !n.contains(&"keep.txt".to_string())).map(|_| ())
    });

    // A file rewritten every 300 ms never gets old enough, and still goes
    // within max_upload_wait while it keeps changing.
    let writing = Arc::new(AtomicBool::new(true));
    let busy = src.join("busy.log");
    let writer = {
        let (writing, busy) = (writing.clone(), busy.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while writing.load(Ordering::Relaxed) {
                n += 1;
                fs::write(&busy, format!("line {n}\n").repeat(n as usize % 50 + 1)).unwrap();
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };
    let started = Instant::now();
    wait_for(WAIT, "busy.log to be uploaded anyway", || has(&env, &src, "busy.log").then_some(()));
    assert!(started.elapsed() >= Duration::from_secs(4), "a changing file went before minimum_file_age");
    writing.store(false, Ordering::Relaxed);
    writer.join().unwrap();

    // Once everything is taken, an idle daemon stays idle: its own reads of
    // the tree are no changes.
    wait_for(WAIT, "the daemon to settle", || {
        let s = d.status();
        (s["state"] == "idle" && !s["running"].as_bool()?).then_some(())
    });
    // (The writer's last lines may still plan one run, minimum_file_age on.)
    std::thread::sleep(Duration::from_secs(6));
    let settled = d.status();
    assert_eq!(
        (settled["state"].as_str(), u64_field(&settled, "waiting_files")),
        (Some("idle"), 0),
        "{settled}"
    );
    let runs = u64_field(&settled, "runs");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(u64_field(&d.status(), "runs"), runs, "an idle daemon kept scanning");
    assert!(d.log().contains("backup-ok"), "{}", d.log());
}

#[test]
fn rules_choose_what_a_backup_takes_and_a_newly_excluded_file_stays_in_older_sets() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("app.log"), b"log");
    write(&src.join("main.c"), b"int main;");
    write(&src.join("main.o"), b"object");
    write(&src.join("big/deep/keep.txt"), b"the one file wanted");
    write(&src.join("big/deep/other.txt"), b"not wanted");
    write(&src.join("big/junk.bin"), b"not wanted");
    let cfg = env.path("client.toml");
    let big = src.join("big");
    let rules = format!(
        "{{ action = \"include\", on = \"files\", glob = \"{}/deep/keep.txt\" }}, \
         {{ action = \"descend\", on = \"dirs\", glob = \"{}\" }}, \
         {{ action = \"exclude\", on = \"files\", regex = \"\\\\.o$\" }}",
        big.display(),
        big.display()
    );
    config(&cfg, &src, &rules, "");
    let c = |args: &[&str]| {
        let mut full = vec!["--config", cfg.to_str().unwrap()];
        full.extend_from_slice(args);
        full.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let run = |args: &[&str]| {
        let full = c(args);
        env.json(&full.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let first = run(&["backup", "--json"]);
    let first_id = first["set_id"].as_str().unwrap().to_string();
    assert_eq!(names(&env, &src, None).unwrap(), ["app.log", "big", "main.c"]);
    assert_eq!(names(&env, &big, None).unwrap(), ["deep"]);
    assert_eq!(names(&env, &big.join("deep"), None).unwrap(), ["keep.txt"]);
    // Compare follows the same rules: what they leave out is no difference.
    let diffs = run(&["compare", "--json", &src.display().to_string()]);
    assert_eq!(diffs, Value::Array(vec![]), "{diffs}");

    // Exclude *.log from now on: it leaves the next set, and stays in the first.
    let rules = format!("{{ action = \"exclude\", on = \"files\", glob = \"*.log\" }}, {rules}");
    config(&cfg, &src, &rules, "");
    run(&["backup", "--json"]);
    assert_eq!(names(&env, &src, None).unwrap(), ["big", "main.c"]);
    assert!(names(&env, &src, Some(&first_id)).unwrap().contains(&"app.log".to_string()));

    // A rule that does not parse names the location, the rule and the reason.
    config(&cfg, &src, "{ action = \"exclude\", regex = \"(unclosed\" }", "");
    let full = c(&["backup"]);
    let err = env.fails(&full.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.contains("location `src`, rule 1") && err.contains("unclosed"), "{err}");
    // The daemon refuses to start on it.
    let mut daemon = env.command();
    daemon.args(["--config", cfg.to_str().unwrap(), "daemon", "--foreground"]);
    let out = coffer_tests::cluster::run_bounded(daemon, COMMAND_TIMEOUT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("location `src`, rule 1"), "{err}");
}

#[test]
fn a_mass_deletion_is_held_until_allowed() {
    let env = Env::new();
    let src = env.path("src");
    for i in 0..20 {
        write(&src.join(format!("f{i:02}.txt")), format!("file {i}").as_bytes());
    }
    env.backup(&[&src]);
    // Twelve of twenty gone (60% > 50%): the set keeps them and says why.
    for i in 0..12 {
        fs::remove_file(src.join(format!("f{i:02}.txt"))).unwrap();
    }
    let held = env.backup(&[&src]);
    assert_eq!(held["held"].as_array().map(Vec::len), Some(1), "{held}");
    assert!(held["held"][0]["reason"].as_str().unwrap().contains("would drop 12 of its 20 files"), "{held}");
    assert_eq!(names(&env, &src, None).unwrap().len(), 20);
    // Emptied, as an unmounted disk looks: held too.
    for i in 12..20 {
        fs::remove_file(src.join(format!("f{i:02}.txt"))).unwrap();
    }
    let empty = env.backup(&[&src]);
    assert!(empty["held"][0]["reason"].as_str().unwrap().contains("is empty"), "{empty}");
    assert_eq!(names(&env, &src, None).unwrap().len(), 20);
    // Accepted explicitly.
    let accepted = env.json(&["backup", "--json", "--allow-deletions", &src.display().to_string()]);
    assert_eq!(accepted["held"], Value::Array(vec![]), "{accepted}");
    assert_eq!(names(&env, &src, None).unwrap().len(), 0);
}

#[test]
fn a_snapshot_daemon_is_controlled_paused_stopped_resumed_and_reloaded() {
    let env = Env::new();
    let src = env.path("src");
    const MIB: usize = 1 << 20;
    for i in 0..6 {
        write(&src.join(format!("part{i}.bin")), &random_bytes(i, 4 * MIB));
    }
    let cfg = env.path("client.toml");
    let events = env.path("events.txt");
    let notify = env.path("notify.sh");
    fs::write(&notify, format!("#!/bin/sh\necho \"$1 $(cat)\" >> {}\n", events.display())).unwrap();
    fs::set_permissions(&notify, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let daemon_section = |limit: &str| {
        format!("mode = \"snapshot\"\nbandwidth_limit = \"{limit}\"\nnotify = \"{}\"", notify.display())
    };
    config(&cfg, &src, "", &daemon_section("3MiB/s"));
    let mut d = Daemon::start(&cfg, &local_env(&env));
    let status = d.status();
    assert_eq!(
        (status["mode"].as_str(), status["state"].as_str()),
        (Some("snapshot"), Some("idle")),
        "{status}"
    );

    // A foreground backup of the same account and cache is refused by name.
    let refused = env.fails(&["--config", cfg.to_str().unwrap(), "backup"]);
    assert!(refused.contains("coffer daemon (pid"), "{refused}");

    // Sync in the background; status shows the upload as it goes.
    let sync = d.command(&["ctl", "sync", "--json"]).stdout(Stdio::piped()).spawn().unwrap();
    let uploading = wait_for(WAIT, "the upload to show in status", || {
        let s = d.status();
        (s["state"] == "uploading" && s["progress"]["bytes_uploaded"].as_u64()? > 0).then_some(s)
    });
    assert!(uploading["file"].as_str().is_some_and(|f| f.contains("part")), "{uploading}");

    // Paused: no more bytes go; resumed: they do again.
    assert!(d.ctl(&["pause"]).status.success());
    std::thread::sleep(Duration::from_millis(500));
    let at_pause = d.status();
    assert_eq!(at_pause["state"], "paused", "{at_pause}");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(d.status()["progress"]["bytes_uploaded"], at_pause["progress"]["bytes_uploaded"]);
    assert!(d.ctl(&["resume"]).status.success());
    let paused_bytes = u64_field(&at_pause["progress"], "bytes_uploaded");
    wait_for(WAIT, "the upload to go on", || {
        (u64_field(&d.status()["progress"], "bytes_uploaded") > paused_bytes).then_some(())
    });

    // Stopped mid-upload: the daemon exits 0, the sync is told, the upload stays.
    assert!(d.ctl(&["stop"]).status.success());
    assert!(d.exits().success(), "{}", d.log());
    let told = sync.wait_with_output().unwrap();
    assert!(!told.status.success(), "a stopped sync reported success");
    assert!(!env.packs().is_empty(), "nothing of the stopped upload stayed");

    // Started again without the limit: the sync sends only what is missing.
    config(&cfg, &src, "", &daemon_section("1GiB/s"));
    let d = Daemon::start(&cfg, &local_env(&env));
    let (ok, report) = d.sync(&[]);
    assert!(ok, "{report}");
    assert_eq!(u64_field(&report, "files_total"), 6);
    assert!(
        u64_field(&report, "bytes_stored_new") < 24 * MIB as u64,
        "the resumed upload sent everything again: {report}"
    );
    let diffs = env.json(&["compare", "--json", &src.display().to_string()]);
    assert_eq!(diffs, Value::Array(vec![]), "{diffs}");

    // A broken configuration is refused on reload; the running one goes on.
    config(&cfg, &src, "{ action = \"descend\", on = \"files\", glob = \"x\" }", &daemon_section("1GiB/s"));
    let reload = d.ctl(&["reload"]);
    let said = String::from_utf8_lossy(&reload.stdout);
    assert!(!reload.status.success() && said.contains("location `src`, rule 1"), "{said}");
    // Emptying the location is held; allowing it by name accepts it.
    for i in 0..6 {
        fs::remove_file(src.join(format!("part{i}.bin"))).unwrap();
    }
    let (ok, held) = d.sync(&[]);
    assert!(!ok && held["held"][0]["location"] == "src", "{held}");
    assert_eq!(d.status()["state"], "holding_deletions");
    let (ok, accepted) = d.sync(&["--allow-deletions", "src"]);
    assert!(ok, "{accepted}");
    assert_eq!(names(&env, &src, None).unwrap().len(), 0);

    // SIGTERM: a clean exit, with its event.
    let mut d = d;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(d.child.id() as i32), nix::sys::signal::SIGTERM)
        .unwrap();
    assert!(d.exits().success(), "{}", d.log());
    let events = fs::read_to_string(&events).unwrap();
    for event in ["daemon-started", "backup-ok", "deletions-held", "daemon-stopped"] {
        assert!(events.contains(event), "no {event} event: {events}");
    }
}

#[test]
fn the_daemon_finishes_on_another_node_when_its_primary_dies_mid_upload() {
    let mut c = Cluster::start(3);
    c.wait_for_group(1, 3);
    let src = c.path("src");
    for i in 0..8 {
        write(&src.join(format!("part{i}.bin")), &random_bytes(100 + i, 3 << 20));
    }
    let base = fs::read_to_string(c.path("client.toml")).unwrap();
    let text = format!(
        "{base}\n[[location]]\nname = \"src\"\npath = \"{}\"\n\n[daemon]\nmode = \"snapshot\"\nbandwidth_limit = \"4MiB/s\"\ncontrol = \"{}\"\n",
        src.display(),
        c.path("daemon.sock").display()
    );
    let cfg = c.path("daemon.toml");
    fs::write(&cfg, text).unwrap();
    let d = Daemon::start(&cfg, &[]);
    let before = c.pack_bytes(1);
    let sync = d.command(&["ctl", "sync", "--json"]).stdout(Stdio::piped()).spawn().unwrap();
    wait_for(WAIT, "node 1 to receive part of the upload", || (c.pack_bytes(1) > before).then_some(()));
    c.nodes[0].kill();
    let out = sync.wait_with_output().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert!(out.status.success(), "{report} {}", d.log());
    assert!(matches!(report["node"].as_str(), Some("node2" | "node3")), "{report}");
    assert_eq!(u64_field(&report, "files_total"), 8);
    // Still the same daemon process, and every file restores from the node that took the set.
    assert_eq!(d.status()["pid"], Value::from(d.child.id()));
    let client = c.client_for(if report["node"] == "node2" { 2 } else { 3 });
    let diffs = c.coffer_json(&client, &["compare", "--json", &src.display().to_string()]);
    assert_eq!(diffs, Value::Array(vec![]), "{diffs}");

    // With every node down the daemon says so, and goes on once one is back.
    write(&src.join("later.txt"), b"written while the group is down");
    c.nodes[1].kill();
    c.nodes[2].kill();
    let (ok, _) = d.sync(&[]);
    assert!(!ok, "a sync with every node down reported success");
    let status = d.status();
    assert_eq!(status["state"], "store_unreachable", "{status}");
    assert!(status["last_error"].as_str().is_some_and(|e| e.contains("node")), "{status}");
    c.nodes[1].restart();
    c.nodes[2].restart();
    let (ok, report) = d.sync(&[]);
    assert!(ok, "{report} {}", d.log());
    assert_eq!(u64_field(&report, "files_total"), 9);
}

#[test]
fn a_box_backup_configuration_imports_with_notes_and_its_rules_work() {
    let env = Env::uninitialised();
    // Read at run time: a test binary built in another checkout keeps its path.
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR");
    let sample = Path::new(&manifest).join("data/bbackupd.conf");
    let cfg = env.path("client.toml");
    let out = env.run(&["import-config", sample.to_str().unwrap(), "--output", cfg.to_str().unwrap()]);
    let notes = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{notes}");
    for said in
        ["AccountNumber", "FileTrackingSizeThreshold", "KeysFile", "Server.PidFile", "port 7101", "descend"]
    {
        assert!(notes.contains(said), "no note on {said}: {notes}");
    }
    let text = fs::read_to_string(&cfg).unwrap();
    let config: toml::Value = toml::from_str(&text).unwrap();
    assert_eq!(config["store"].as_str(), Some("coffer://backup1.example.org:7101"));
    assert_eq!(config["nodes"].as_array().map(Vec::len), Some(2));
    assert_eq!(config["daemon"]["mode"].as_str(), Some("snapshot"));
    assert_eq!(config["daemon"]["minimum_file_age"].as_str(), Some("6h"));
    assert_eq!(config["daemon"]["control"].as_str(), Some("/var/run/bbackupd.sock"));
    let locations = config["location"].as_array().unwrap();
    let location_names: Vec<&str> = locations.iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(location_names, ["home", "etc", "projects"]);
    let home = locations[0]["rules"].as_array().unwrap();
    assert_eq!(
        (home[0]["action"].as_str(), home[0]["glob"].as_str()),
        (Some("include"), Some("/home/guest/important.doc"))
    );
    let field = |r: &toml::Value, k: &str| r.get(k).and_then(|v| v.as_str().map(str::to_string));
    let has_rule = |action: &str, key: &str, value: &str| {
        home.iter()
            .any(|r| field(r, "action").as_deref() == Some(action) && field(r, key).as_deref() == Some(value))
    };
    assert!(has_rule("descend", "glob", "/home/guest"), "{text}");
    assert!(has_rule("exclude", "regex", "\\.(mp3|MP3|iso)$"), "{text}");

    // The imported rules at work on a tree shaped like the sample's /home.
    let root = env.path("root");
    for f in [
        "guest/important.doc",
        "guest/other.doc",
        "alice/a.txt",
        "alice/song.mp3",
        "alice/music/favourite1.mp3",
        "alice/.cache/x",
        "alice/core",
    ] {
        write(&root.join("home").join(f), f.as_bytes());
    }
    fs::write(&cfg, text.replace("\"/home", &format!("\"{}/home", root.display()))).unwrap();
    let config_arg = cfg.to_str().unwrap();
    env.ok(&["--config", config_arg, "init"]);
    let home = root.join("home");
    env.json(&["--config", config_arg, "backup", "--json", home.to_str().unwrap()]);
    assert_eq!(names(&env, &home, None).unwrap(), ["alice", "guest"]);
    assert_eq!(names(&env, &home.join("guest"), None).unwrap(), ["important.doc"]);
    assert_eq!(names(&env, &home.join("alice"), None).unwrap(), ["a.txt", "music"]);
    assert_eq!(names(&env, &home.join("alice/music"), None).unwrap(), ["favourite1.mp3"]);
}

#[test]
fn a_location_removed_from_the_config_stays_for_a_while_and_large_files_are_skipped() {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    write(&a.join("small.txt"), b"small");
    write(&a.join("large.bin"), &random_bytes(7, 64 * 1024));
    write(&b.join("b.txt"), b"in b");
    let cfg = env.path("client.toml");
    let daemon = "mode = \"snapshot\"\nmax_file_size = \"16KiB\"\ndelete_redundant_locations_after = \"4s\"";
    let both = format!(
        "[[location]]\nname = \"a\"\npath = \"{}\"\n\n[[location]]\nname = \"b\"\npath = \"{}\"\n\n[daemon]\n{daemon}\n",
        a.display(),
        b.display()
    );
    fs::write(&cfg, &both).unwrap();
    let d = Daemon::start(&cfg, &local_env(&env));
    let (ok, report) = d.sync(&[]);
    assert!(ok, "{report}");
    assert_eq!(names(&env, &a, None).unwrap(), ["small.txt"]);
    let warned = report["warnings"].to_string();
    assert!(warned.contains("large.bin") && warned.contains("max_file_size"), "{report}");

    // b leaves the configuration: new sets keep it until its time is up.
    let first_set = report["set_id"].as_str().unwrap().to_string();
    let newest_locations = || {
        let sets = env.json(&["sets", "--json"]);
        sets.as_array().unwrap().last().unwrap()["locations"].as_array().unwrap().len()
    };
    let only_a = both.split("[[location]]\nname = \"b\"").next().unwrap().to_string()
        + &format!("[daemon]\n{daemon}\n");
    fs::write(&cfg, only_a).unwrap();
    assert!(d.ctl(&["reload"]).status.success());
    write(&a.join("more.txt"), b"a changed");
    let (ok, report) = d.sync(&[]);
    assert!(ok && !report["unchanged"].as_bool().unwrap(), "{report}");
    assert_eq!(newest_locations(), 2, "b left the newest set at once");
    std::thread::sleep(Duration::from_secs(5));
    write(&a.join("later.txt"), b"a changed again");
    let (ok, report) = d.sync(&[]);
    assert!(ok, "{report}");
    assert_eq!(newest_locations(), 1, "b outstayed delete_redundant_locations_after");
    assert_eq!(names(&env, &b, Some(&first_set)).unwrap(), ["b.txt"], "b left the older sets");

    // A location missing for a while (a disk not mounted) keeps what it had.
    let away = env.path("a-away");
    fs::rename(&a, &away).unwrap();
    let (ok, held) = d.sync(&[]);
    assert!(!ok && held["held"][0]["reason"].as_str().unwrap().contains("missing"), "{held}");
    assert!(has(&env, &a, "later.txt"), "a missing location left the newest set");
    fs::rename(&away, &a).unwrap();
    let (ok, report) = d.sync(&[]);
    assert!(ok && report["held"] == Value::Array(vec![]), "{report}");
}

#[test]
fn rescans_that_find_nothing_changed_never_connect_to_the_node() {
    let c = Cluster::start(1);
    let src = c.path("src");
    write(&src.join("a.txt"), b"a");
    let base = fs::read_to_string(c.path("client.toml")).unwrap();
    let text = format!(
        "{base}\n[[location]]\nname = \"src\"\npath = \"{}\"\n\n[daemon]\nminimum_file_age = \"0s\"\nupdate_interval = \"1s\"\n",
        src.display()
    );
    let cfg = c.path("daemon.toml");
    fs::write(&cfg, text).unwrap();
    let d = Daemon::start(&cfg, &[]);
    wait_for(WAIT, "the first set", || d.status()["last_set"].as_str().map(|_| ()));
    // Past the run after the first set (which may read a file again that
    // was written just before the first scan: a "racy" file).
    let first = u64_field(&d.status(), "runs");
    wait_for(WAIT, "two rescans", || (u64_field(&d.status(), "runs") >= first + 2).then_some(()));
    let (runs, before) = (u64_field(&d.status(), "runs"), c.connections());
    std::thread::sleep(Duration::from_secs(5));
    assert!(u64_field(&d.status(), "runs") >= runs + 2, "the daemon did not rescan");
    assert_eq!(
        c.connections(),
        before + 1,
        "a rescan that found nothing changed connected (only this query may)"
    );
    // A change does reach the node.
    write(&src.join("b.txt"), b"b");
    wait_for(WAIT, "b.txt's set", || {
        let out = c.coffer("daemon.toml", &["ls", "--json", &src.display().to_string()]);
        String::from_utf8_lossy(&out.stdout).contains("b.txt").then_some(())
    });
}
