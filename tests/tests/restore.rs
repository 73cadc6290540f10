//! Getting files back: wildcards, names that are not UTF-8, sparse files,
//! and restores that resume after being killed — through the real `coffer`
//! binary on a local store.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use coffer_tests::Env;
use coffer_tests::cluster::wait_for;
use coffer_tests::fstree::{assert_same_tree, non_utf8_name, random_bytes, write};
use serde_json::Value;

const MIB: usize = 1 << 20;

fn names(listing: &Value) -> Vec<&str> {
    listing.as_array().unwrap().iter().map(|l| l["name"].as_str().unwrap()).collect()
}

#[test]
fn wildcards_pick_entries_for_ls_restore_and_versions() {
    let env = Env::new();
    let mail = env.path("home/Mail");
    for name in ["a.eml", "b.eml", "notes.txt", "sub/c.eml", "sub/d.txt"] {
        write(&mail.join(name), name.as_bytes());
    }
    env.backup(&[&env.path("home")]);
    write(&mail.join("a.eml"), b"second version of a");
    env.backup(&[&env.path("home")]);

    let pattern = mail.join("*.eml").display().to_string();
    assert_eq!(names(&env.json(&["ls", "--json", &pattern])), ["a.eml", "b.eml"]);
    let deeper = mail.join("*/*.eml").display().to_string();
    assert_eq!(names(&env.json(&["ls", "--json", &deeper])), ["sub/c.eml"]);
    let none = env.fails(&["ls", &mail.join("*.doc").display().to_string()]);
    assert!(none.contains("matches"), "{none}");

    let dest = env.path("out");
    env.ok(&["restore", &pattern, dest.to_str().unwrap()]);
    let mut restored: Vec<_> = fs::read_dir(&dest).unwrap().map(|e| e.unwrap().file_name()).collect();
    restored.sort();
    assert_eq!(restored, ["a.eml", "b.eml"]);
    assert_eq!(fs::read(dest.join("a.eml")).unwrap(), b"second version of a");

    let versions = env.json(&["versions", "--json", &pattern]);
    let list = versions.as_array().unwrap();
    assert_eq!(list.len(), 2, "{versions}");
    assert!(list[0]["path"].as_str().unwrap().ends_with("Mail/a.eml"), "{versions}");
    assert_eq!(list[0]["versions"].as_array().unwrap().len(), 2, "a.eml changed once: {versions}");
    assert_eq!(list[1]["versions"].as_array().unwrap().len(), 1, "{versions}");
}

#[test]
fn names_that_are_not_utf8_are_shown_escaped_and_can_be_typed_escaped() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join(non_utf8_name()), b"not utf-8");
    write(&src.join("back\\slash"), b"backslash");
    env.backup(&[&src]);
    let listing = env.json(&["ls", "--json", src.to_str().unwrap()]);
    let shown = names(&listing);
    assert_eq!(shown, ["back\\\\slash", "bad-\\xff\\xfe-name"], "{listing}");
    let text = env.ok(&["ls", src.to_str().unwrap()]);
    assert!(text.contains("bad-\\xff\\xfe-name") && !text.contains('\u{fffd}'), "{text}");
    // What was shown is what to type.
    let typed = format!("{}/bad-\\xff\\xfe-name", src.display());
    let dest = env.path("restored-file");
    env.ok(&["restore", &typed, dest.to_str().unwrap()]);
    assert_eq!(fs::read(&dest).unwrap(), b"not utf-8");
    let typed = format!("{}/back\\\\slash", src.display());
    let versions = env.json(&["versions", "--json", &typed]);
    assert_eq!(versions.as_array().unwrap().len(), 1, "{versions}");
}

#[test]
fn a_sparse_file_is_read_without_its_holes_and_restored_sparse() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let image = src.join("disc.img");
    let size = 1u64 << 30;
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = fs::File::create(&image).unwrap();
        for (at, seed) in [(0u64, 1u64), (300 << 20, 2), ((1 << 30) - (1 << 20), 3)] {
            f.seek(SeekFrom::Start(at)).unwrap();
            f.write_all(&random_bytes(seed, MIB)).unwrap();
        }
        f.set_len(size).unwrap();
    }
    let allocated = |p: &Path| fs::metadata(p).unwrap().blocks() * 512;
    if allocated(&image) > 16 << 20 {
        eprintln!("SKIPPED: this file system does not keep holes");
        return;
    }
    let report = env.backup(&[&src]);
    assert!(report["bytes_read"].as_u64().unwrap() < 8 << 20, "holes are not read: {report}");
    let dest = env.path("out");
    env.ok(&["restore", src.to_str().unwrap(), dest.to_str().unwrap()]);
    let restored = dest.join("disc.img");
    assert_eq!(fs::metadata(&restored).unwrap().len(), size, "same apparent size");
    assert!(allocated(&restored) < 16 << 20, "restored sparse: {} bytes allocated", allocated(&restored));
    assert_same_tree(&src, &dest);
}

#[test]
fn a_restore_killed_midway_resumes_to_the_same_tree() {
    let env = Env::new();
    let src = env.path("src");
    for i in 0..1500u64 {
        write(&src.join(format!("d{}/f{i}", i % 8)), &random_bytes(i, 20_000 + i as usize * 10));
    }
    write(&src.join("big.bin"), &random_bytes(7, 128 * MIB));
    env.backup(&[&src]);

    let dest = env.path("out");
    let mut child = env
        .command()
        .args(["restore", src.to_str().unwrap(), dest.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Strike once some files are there but not all.
    wait_for(Duration::from_secs(60), "the restore to be under way", || {
        let made = coffer_tests::walk_files(&dest).len();
        (made > 20).then_some(())
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(coffer_tests::walk_files(&dest).len() < 1501, "the restore was cut short");

    let refused = env.fails(&["restore", src.to_str().unwrap(), dest.to_str().unwrap()]);
    assert!(refused.contains("not an empty directory"), "{refused}");
    let out = env.ok(&["restore", "--resume", src.to_str().unwrap(), dest.to_str().unwrap()]);
    assert!(out.contains("an earlier run finished were kept"), "{out}");
    assert_same_tree(&src, &dest);
}
