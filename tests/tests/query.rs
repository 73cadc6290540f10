//! `coffer query`, the shell over the backup sets, driven as a script
//! would: `-c "..."` and commands on stdin, over a local store and a node.

use std::fs;
use std::io::Write;
use std::process::Stdio;

use coffer_tests::Env;
use coffer_tests::cluster::Cluster;
use coffer_tests::fstree::{non_utf8_name, write};

#[test]
fn the_shell_browses_gets_compares_and_exits_like_the_other_commands() {
    let env = Env::new();
    let home = env.path("home");
    write(&home.join("Documents/report.txt"), b"first draft");
    write(&home.join("Documents/notes.txt"), b"notes");
    write(&home.join(non_utf8_name()), b"odd");
    env.backup(&[&home]);
    write(&home.join("Documents/report.txt"), b"second draft, longer");
    env.backup(&[&home]);

    // One location: the shell starts in it.
    let out = env.ok(&["query", "-c", "pwd; ls; cd Documents; ls -l; versions report.txt"]);
    assert!(out.contains(&format!("{} (latest)", home.display())), "{out}");
    assert!(out.contains("Documents/") && out.contains("bad-\\xff\\xfe-name"), "{out}");
    assert!(out.contains("notes.txt") && out.contains("report.txt"), "{out}");
    assert_eq!(out.lines().filter(|l| l.contains("SET TIME")).count(), 1, "{out}");

    // The first set, by time, and a file fetched from it.
    let sets = env.json(&["sets", "--json"]);
    let first = sets[0]["id"].as_str().unwrap();
    let got = env.path("got.txt");
    let script = format!("set {}; get Documents/report.txt '{}'", &first[..10], got.display());
    env.ok(&["query", "-c", &script]);
    assert_eq!(fs::read(&got).unwrap(), b"first draft");
    // Escaped names are typed back as shown.
    let odd = env.path("odd");
    env.ok(&["query", "-c", &format!("get bad-\\xff\\xfe-name {}", odd.display())]);
    assert_eq!(fs::read(&odd).unwrap(), b"odd");

    // Commands on stdin; compare finds the change made since: exit 1.
    write(&home.join("Documents/notes.txt"), b"changed notes");
    let mut child = env.command().arg("query").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"cd Documents\ncompare\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("notes.txt"));

    // An unknown command or a missing name ends the run with 2, naming it.
    let out = env.run(&["query", "-c", "ls; frobnicate; ls"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown command `frobnicate`"));
    let out = env.run(&["query", "-c", "cd nowhere"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn undelete_brings_a_file_and_a_deleted_directory_back_into_a_new_set() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("keep.txt"), b"kept");
    write(&src.join("a/lost.txt"), b"lost file");
    write(&src.join("gone/inner.txt"), b"inner");
    write(&src.join("gone/other.txt"), b"other");
    env.backup(&[&src]);
    fs::remove_file(src.join("a/lost.txt")).unwrap();
    fs::remove_dir_all(src.join("gone")).unwrap();
    // Three of four files gone: say it is meant, or the set keeps them.
    env.ok(&["backup", "--allow-deletions", src.to_str().unwrap()]);

    let refused = env.run(&["query", "-c", "undelete keep.txt"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("is not deleted"));
    let out = env.ok(&["query", "-c", "undelete a/lost.txt; undelete gone/inner.txt; ls gone"]);
    assert!(out.contains("is back in new backup set"), "{out}");
    assert_eq!(env.json(&["sets", "--json"]).as_array().unwrap().len(), 4, "one new set per undelete");
    let listed = env.json(&["ls", "--json", src.join("gone").to_str().unwrap()]);
    let names: Vec<&str> = listed.as_array().unwrap().iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["inner.txt"], "the gone directory comes back holding only what was undeleted");
    let out = env.path("out");
    env.ok(&["restore", src.to_str().unwrap(), out.to_str().unwrap()]);
    assert_eq!(fs::read(out.join("a/lost.txt")).unwrap(), b"lost file");
    assert_eq!(fs::read(out.join("gone/inner.txt")).unwrap(), b"inner");
    assert_eq!(fs::read(out.join("keep.txt")).unwrap(), b"kept");
}

#[test]
fn the_shell_works_over_a_node_and_undeletes_there() {
    let c = Cluster::start(1);
    c.wait_for_group(1, 1);
    let data = c.path("data");
    write(&data.join("a.txt"), b"alpha");
    write(&data.join("b.txt"), b"beta");
    c.backup("client.toml", &data);
    fs::remove_file(data.join("b.txt")).unwrap();
    c.backup("client.toml", &data);
    let out = c.coffer_ok("client.toml", &["query", "-c", "ls -d; undelete b.txt; ls; usage"]);
    assert!(out.contains("b.txt (deleted)"), "{out}");
    assert!(out.contains("is back in new backup set"), "{out}");
    assert!(out.contains("3 backup sets"), "{out}");
    let restored = c.path("b-restored");
    let path = data.join("b.txt");
    c.coffer_ok("client.toml", &["restore", path.to_str().unwrap(), restored.to_str().unwrap()]);
    assert_eq!(fs::read(&restored).unwrap(), b"beta");
}
