//! Backup to a local store and restore, through the real `coffer` binary.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use coffer_tests::fstree::{assert_same_tree, non_utf8_name, random_bytes, write};
use coffer_tests::{Env, u64_field};
use filetime::FileTime;
use nix::sys::stat::{Mode, SFlag};

const MIB: usize = 1 << 20;

/// A tree with every kind of entry Coffer backs up.
fn make_every_kind(root: &Path) {
    write(&root.join("empty"), b"");
    write(&root.join("small.txt"), b"hello, coffer\n");
    write(&root.join("big.bin"), &random_bytes(1, 6 * MIB + 12345));
    write(&root.join("a/b/c/deep.txt"), b"deep");
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    write(&root.join("with space & \"quotes\"\nnewline"), b"odd name");
    write(&root.join(non_utf8_name()), b"not utf-8");
    write(&root.join("linked-1"), b"one inode, two names");
    fs::hard_link(root.join("linked-1"), root.join("a/linked-2")).unwrap();
    symlink("small.txt", root.join("rel-link")).unwrap();
    symlink("/nonexistent/target", root.join("dangling-link")).unwrap();
    nix::unistd::mkfifo(&root.join("fifo"), Mode::from_bits_truncate(0o640)).unwrap();
    if nix::unistd::geteuid().is_root() {
        nix::sys::stat::mknod(
            &root.join("null-dev"),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o600),
            nix::sys::stat::makedev(1, 3),
        )
        .unwrap();
        nix::unistd::chown(&root.join("small.txt"), Some(1234.into()), Some(5678.into())).unwrap();
    }
    xattr::set(root.join("small.txt"), "user.colour", b"blue").unwrap();
    xattr::set(root.join("a"), "user.dir-note", b"\x00binary\xff").unwrap();
    fs::set_permissions(root.join("big.bin"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(root.join("a/b"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::set_permissions(root.join("empty"), fs::Permissions::from_mode(0o4755)).unwrap();
    let t = FileTime::from_unix_time(1_600_000_000, 123_456_789);
    filetime::set_file_mtime(root.join("small.txt"), t).unwrap();
    filetime::set_symlink_file_times(root.join("rel-link"), t, FileTime::from_unix_time(1_500_000_000, 987))
        .unwrap();
    filetime::set_file_mtime(root.join("a/b/c"), t).unwrap();
}

#[test]
fn round_trip_of_every_kind_of_entry() {
    let env = Env::new();
    let src = env.path("src");
    make_every_kind(&src);
    let report = env.backup(&[&src]);
    assert!(report["set_id"].as_str().is_some_and(|s| s.len() == 64), "{report}");
    assert!(u64_field(&report, "files_total") >= 7);

    let dest = env.path("restored");
    env.ok(&["restore", src.to_str().unwrap(), dest.to_str().unwrap()]);
    assert_same_tree(&src, &dest);

    // One file and one subtree on their own.
    let one = env.path("one-file");
    env.ok(&["restore", src.join("big.bin").to_str().unwrap(), one.to_str().unwrap()]);
    assert_eq!(fs::read(&one).unwrap(), fs::read(src.join("big.bin")).unwrap());
    let sub = env.path("subtree");
    env.ok(&["restore", src.join("a/b").to_str().unwrap(), sub.to_str().unwrap()]);
    assert_same_tree(&src.join("a/b"), &sub);

    // The disk still matches the backup, by metadata and by content.
    env.ok(&["compare", src.to_str().unwrap()]);
    env.ok(&["compare", "--quick", src.to_str().unwrap()]);
    write(&src.join("a/b/c/deep.txt"), b"DEEP");
    let out = env.run(&["compare", src.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("deep.txt"));
}

#[test]
fn dedup_and_change_detection() {
    let env = Env::new();
    let data = random_bytes(7, 50 * MIB);
    let first = env.path("first");
    write(&first.join("data.bin"), &data);
    let r1 = env.backup(&[&first]);
    assert!(u64_field(&r1, "bytes_stored_new") >= 50 * MIB as u64);

    // The same 50 MiB under another location is stored once.
    let second = env.path("second");
    write(&second.join("copy.bin"), &data);
    let r2 = env.backup(&[&second]);
    assert_eq!(u64_field(&r2, "bytes_read"), 50 * MIB as u64);
    assert!(u64_field(&r2, "bytes_stored_new") < MIB as u64, "{r2}");

    // Nothing changed: no file data is read.
    std::thread::sleep(Duration::from_millis(50));
    let r3 = env.backup(&[&first]);
    let r4 = env.backup(&[&first]);
    assert_eq!(u64_field(&r4, "files_read"), 0, "{r3} then {r4}");
    assert_eq!(u64_field(&r4, "bytes_read"), 0);

    // One byte changed in the middle: only nearby chunks are new.
    let mut changed = data.clone();
    changed[25 * MIB] ^= 0xff;
    write(&first.join("data.bin"), &changed);
    let r5 = env.backup(&[&first]);
    assert_eq!(u64_field(&r5, "files_read"), 1);
    assert!(u64_field(&r5, "bytes_stored_new") < 5 * MIB as u64, "{r5}");

    let dest = env.path("restored");
    env.ok(&["restore", first.to_str().unwrap(), dest.to_str().unwrap()]);
    assert_eq!(fs::read(dest.join("data.bin")).unwrap(), changed);
}

#[test]
fn old_versions_and_deleted_files() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("notes.txt"), b"version one");
    write(&src.join("doomed.txt"), b"soon deleted");
    let v1 = env.backup(&[&src]);
    write(&src.join("notes.txt"), b"version two, longer");
    fs::remove_file(src.join("doomed.txt")).unwrap();
    let v2 = env.backup(&[&src]);
    assert_ne!(v1["set_id"], v2["set_id"]);

    let sets = env.json(&["sets", "--json"]);
    assert_eq!(sets.as_array().unwrap().len(), 2);
    let t1 = sets[0]["time_ns"].as_i64().unwrap();

    // --set: the first version, with the deleted file.
    let by_set = env.path("by-set");
    env.ok(&[
        "restore",
        "--set",
        &v1["set_id"].as_str().unwrap()[..10],
        src.to_str().unwrap(),
        by_set.to_str().unwrap(),
    ]);
    assert_eq!(fs::read(by_set.join("notes.txt")).unwrap(), b"version one");
    assert_eq!(fs::read(by_set.join("doomed.txt")).unwrap(), b"soon deleted");

    // --as-at a time between the two sets.
    let between = chrono_like_rfc3339(t1);
    let by_time = env.path("by-time");
    env.ok(&["restore", "--as-at", &between, src.to_str().unwrap(), by_time.to_str().unwrap()]);
    assert_same_tree(&by_set, &by_time);

    // The latest has only the new version; the deleted file is listed as deleted.
    let latest = env.path("latest");
    env.ok(&["restore", src.to_str().unwrap(), latest.to_str().unwrap()]);
    assert_eq!(fs::read(latest.join("notes.txt")).unwrap(), b"version two, longer");
    assert!(!latest.join("doomed.txt").exists());
    let plain = env.ok(&["ls", src.to_str().unwrap()]);
    assert!(!plain.contains("doomed.txt"), "{plain}");
    let listing = env.ok(&["ls", "--deleted", src.to_str().unwrap()]);
    assert!(listing.contains("doomed.txt (deleted)"), "{listing}");
    let old = env.ok(&["ls", "--as-at", &between, src.to_str().unwrap()]);
    assert!(old.contains("doomed.txt") && !old.contains("(deleted)"), "{old}");

    // A deleted file restores on its own from an older set.
    let single = env.path("doomed-again.txt");
    env.ok(&[
        "restore",
        "--as-at",
        &between,
        src.join("doomed.txt").to_str().unwrap(),
        single.to_str().unwrap(),
    ]);
    assert_eq!(fs::read(&single).unwrap(), b"soon deleted");

    let versions = env.json(&["versions", "--json", src.join("notes.txt").to_str().unwrap()]);
    let sizes: Vec<u64> = versions.as_array().unwrap().iter().map(|v| v["size"].as_u64().unwrap()).collect();
    assert_eq!(sizes, vec![11, 19]);
    let doomed = env.json(&["versions", "--json", src.join("doomed.txt").to_str().unwrap()]);
    assert!(doomed[1]["size"].is_null(), "second version of doomed.txt is its deletion: {doomed}");

    // Forgetting the first set reclaims what only it used.
    let before = env.json(&["usage", "--json"]);
    let forgot = env.json(&["forget", "--json", v1["set_id"].as_str().unwrap()]);
    assert!(u64_field(&forgot, "objects_freed") >= 2, "{forgot}");
    let after = env.json(&["usage", "--json"]);
    assert!(u64_field(&after, "live_bytes") < u64_field(&before, "live_bytes"));
    assert_eq!(env.json(&["sets", "--json"]).as_array().unwrap().len(), 1);
    let again = env.path("after-forget");
    env.ok(&["restore", src.to_str().unwrap(), again.to_str().unwrap()]);
    assert_same_tree(&latest, &again);
}

/// RFC 3339 for a time half a nanosecond-step after `ns` (UTC).
fn chrono_like_rfc3339(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[test]
fn corrupt_pack_fails_only_the_damaged_file() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("victim.bin"), &random_bytes(11, 3 * MIB));
    env.backup(&[&src]);
    write(&src.join("good-1.bin"), &random_bytes(12, 2 * MIB));
    write(&src.join("good-2.txt"), b"still fine");
    env.backup(&[&src]);

    // The first pack begins with the victim's chunks (chunks precede trees).
    let first_pack = env.packs()[0].clone();
    let mut bytes = fs::read(&first_pack).unwrap();
    bytes[24 + 32 + 4096] ^= 0x40;
    fs::write(&first_pack, &bytes).unwrap();

    let dest = env.path("restored");
    let err = env.fails(&["restore", src.to_str().unwrap(), dest.to_str().unwrap()]);
    assert!(err.contains("victim.bin") && err.contains("CRC"), "{err}");
    assert!(!err.contains("good-1.bin"), "{err}");
    assert_eq!(fs::read(dest.join("good-1.bin")).unwrap(), fs::read(src.join("good-1.bin")).unwrap());
    assert_eq!(fs::read(dest.join("good-2.txt")).unwrap(), b"still fine");
    assert!(!dest.join("victim.bin").exists(), "a damaged file is not left half-written");

    // A truncated pack is named as such.
    fs::OpenOptions::new().write(true).open(&first_pack).unwrap().set_len(1000).unwrap();
    let dest2 = env.path("restored-2");
    let err = env.fails(&["restore", src.join("victim.bin").to_str().unwrap(), dest2.to_str().unwrap()]);
    assert!(err.contains("truncated"), "{err}");
}

#[test]
fn clear_errors_for_bad_input() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("f"), b"x");
    env.backup(&[&src]);

    // Wrong keys file: refused before anything is read or written.
    let other = Env::new();
    let packs_before = env.packs();
    let out = env
        .command()
        .env("COFFER_KEYS", other.path("keys"))
        .args(["backup", src.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("wrong keys file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(env.packs(), packs_before);

    // init refuses to overwrite a keys file.
    let err = env.fails(&["init"]);
    assert!(err.contains("refusing to overwrite"), "{err}");

    let err =
        env.fails(&["restore", src.join("no-such-file").to_str().unwrap(), env.path("x").to_str().unwrap()]);
    assert!(err.contains("no-such-file"), "{err}");
    let err = env.fails(&["ls", "/definitely/not/backed/up"]);
    assert!(err.contains("not in any backup location"), "{err}");
    let err = env.fails(&["restore", "--as-at", "not a time", src.to_str().unwrap(), "/tmp/x"]);
    assert!(err.contains("cannot read time"), "{err}");
    let err = env.fails(&["forget", "0000"]);
    assert!(err.contains("no backup set"), "{err}");
}

#[test]
fn killed_backup_leaves_a_usable_store_and_resumes() {
    let env = Env::new();
    let src = env.path("src");
    for i in 0..60 {
        write(&src.join(format!("dir-{}/file-{i}.bin", i % 6)), &random_bytes(100 + i, 3 * MIB));
    }
    let total = 60 * 3 * MIB as u64;
    let mut child = env
        .command()
        .args(["backup", "--json", src.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    // A second pack on disk means the first one's index write is durable (a
    // kill between a pack's rename and its index write discards that pack).
    while env.packs().len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    let still_running = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(still_running, "backup finished before it could be killed; make the data set bigger");

    assert!(env.json(&["sets", "--json"]).as_array().unwrap().is_empty(), "no set was committed");
    let rerun = env.backup(&[&src]);
    assert!(u64_field(&rerun, "bytes_stored_new") < total, "the rerun reused chunks already stored: {rerun}");
    let dest = env.path("restored");
    env.ok(&["restore", src.to_str().unwrap(), dest.to_str().unwrap()]);
    assert_same_tree(&src, &dest);
}

#[test]
fn a_lost_index_is_refused_without_deleting_a_pack_and_repair_brings_every_set_back() {
    let env = Env::new();
    let src = env.path("src");
    make_every_kind(&src);
    env.backup(&[&src]);
    write(&src.join("later.txt"), b"a second set");
    env.backup(&[&src]);
    let packs = env.packs();
    fs::remove_dir_all(env.store().join("index")).unwrap();

    let err = env.fails(&["sets"]);
    assert!(err.contains("no index") && err.contains("coffer repair"), "{err}");
    let err = env.fails(&["backup", &src.display().to_string()]);
    assert!(err.contains("no index"), "{err}");
    assert_eq!(env.packs(), packs, "every pack kept");

    env.ok(&["repair"]);
    let sets = env.json(&["sets", "--json"]);
    assert_eq!(sets.as_array().map(Vec::len), Some(2), "{sets}");
    let out = env.path("out");
    env.ok(&["restore", &src.display().to_string(), &out.display().to_string()]);
    assert_same_tree(&src, &out);
    write(&src.join("after-repair.txt"), b"and backups go on");
    env.backup(&[&src]);
}

#[test]
fn set_id_bits_come_back_only_with_their_owner() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: restoring as another user needs root to set up");
        return;
    }
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("tool"), b"#!/bin/sh\n");
    fs::set_permissions(src.join("tool"), fs::Permissions::from_mode(0o4755)).unwrap();
    env.backup(&[&src]);

    // The restore runs as nobody, who cannot make a file owned by root.
    let out = env.path("out");
    fs::create_dir(&out).unwrap();
    fs::set_permissions(env.path(""), fs::Permissions::from_mode(0o755)).unwrap();
    let nobody = Some(nix::unistd::Uid::from_raw(65534));
    for path in walk(&env.path("")) {
        nix::unistd::chown(&path, nobody, Some(nix::unistd::Gid::from_raw(65534))).unwrap();
    }
    let mut restore = std::process::Command::new("setpriv");
    restore.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(coffer_tests::binary("coffer"));
    for (name, value) in env.command().get_envs() {
        match value {
            Some(value) => restore.env(name, value),
            None => restore.env_remove(name),
        };
    }
    let tool = src.join("tool");
    let restored = out.join("tool");
    let output =
        restore.args(["restore", &tool.display().to_string(), &restored.display().to_string()]).output();
    let output = output.expect("run setpriv");
    let said =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success() || said.contains("owner"), "{said}");
    let meta = fs::metadata(&restored).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o755, "a set-uid file owned by whoever restored it");
    assert!(said.contains("set-user/group-id bits left off"), "{said}");
}

/// Every path under `root`, itself included.
fn walk(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![root.to_path_buf()];
    if root.is_dir() && !root.is_symlink() {
        for entry in fs::read_dir(root).unwrap() {
            out.extend(walk(&entry.unwrap().path()));
        }
    }
    out
}

#[test]
fn the_client_cache_is_private_to_its_user() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a/f"), b"listed in the cache, decrypted");
    env.backup(&[&src]);
    let cached = walk(&env.path("cache"));
    assert!(cached.len() > 3, "the backup filled the cache: {cached:?}");
    for path in cached {
        let mode = fs::symlink_metadata(&path).unwrap().permissions().mode() & 0o777;
        let want = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{} is {mode:o}", path.display());
    }
}

#[test]
fn forget_by_a_retention_policy_keeps_what_it_says_and_a_dry_run_forgets_nothing() {
    let env = Env::new();
    let src = env.path("src");
    let mut ids = Vec::new();
    for i in 0..5 {
        write(&src.join(format!("f{i}.txt")), &random_bytes(i, 50_000));
        ids.push(env.backup(&[&src])["set_id"].as_str().unwrap().to_string());
    }
    let sets = || {
        env.json(&["sets", "--json"])
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };

    let dry = env.json(&["forget", "--keep-last", "2", "--dry-run", "--json"]);
    assert_eq!(u64_field(&dry, "forgotten"), 3, "{dry}");
    assert_eq!(sets().len(), 5, "a dry run forgot something");
    let keep_all = env.json(&["forget", "--keep-within", "1h", "--json"]);
    assert_eq!(u64_field(&keep_all, "forgotten"), 0, "{keep_all}");

    let done = env.json(&["forget", "--keep-last", "2", "--json"]);
    assert_eq!(u64_field(&done, "forgotten"), 3, "{done}");
    assert!(u64_field(&done, "bytes_freed") > 0, "{done}");
    let newest = done["sets"][0].clone();
    assert_eq!(
        (newest["keep"].as_bool(), newest["reasons"][0].as_str()),
        (Some(true), Some("newest")),
        "{done}"
    );
    assert_eq!(sets(), ids[3..].to_vec());
    env.ok(&["restore", src.to_str().unwrap(), env.path("back").to_str().unwrap()]);
    assert_same_tree(&src, &env.path("back"));

    let both = env.fails(&["forget", &ids[4], "--keep-last", "1"]);
    assert!(both.contains("not both"), "{both}");
    let neither = env.fails(&["forget"]);
    assert!(neither.contains("nothing to forget"), "{neither}");
}

#[test]
fn output_into_a_closed_pipe_ends_quietly_like_a_unix_tool() {
    use std::os::unix::process::ExitStatusExt;
    let env = Env::new();
    let src = env.path("src");
    for i in 0..3000 {
        write(
            &src.join(format!("a-file-with-a-rather-long-name-so-the-listing-fills-the-pipe-{i:05}.txt")),
            b"x",
        );
    }
    env.backup(&[&src]);
    for args in [vec!["ls", "-l", src.to_str().unwrap()], vec!["ls", "--json", src.to_str().unwrap()]] {
        // Nobody reads: the listing fills the pipe, then the reader leaves (`| head`).
        let mut child =
            env.command().args(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.is_empty(), "coffer {args:?} said: {err}");
        assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "coffer {args:?}: {:?}", out.status);
    }
}
