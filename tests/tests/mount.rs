//! `coffer mount`: the backups as a read-only file system, compared file by
//! file with a restore. Runs where `/dev/fuse` is there and mounting is
//! allowed, and says SKIPPED otherwise.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use coffer_tests::Env;
use coffer_tests::cluster::{wait_bounded, wait_for};
use coffer_tests::fstree::{assert_same_tree, random_bytes, write};

/// Starts `coffer mount`; `None` (after saying why) where FUSE cannot mount.
fn mount(env: &Env, at: &Path) -> Option<Child> {
    if !Path::new("/dev/fuse").exists() {
        eprintln!("SKIPPED: no /dev/fuse on this machine");
        return None;
    }
    fs::create_dir_all(at).unwrap();
    let mut child =
        env.command().arg("mount").arg(at).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    for _ in 0..300 {
        if at.join("latest").exists() {
            return Some(child);
        }
        if let Some(status) = child.try_wait().unwrap() {
            let mut error = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut error).unwrap();
            assert!(error.contains("cannot mount"), "coffer mount failed ({status}): {error}");
            eprintln!("SKIPPED: FUSE mounting is not allowed here: {error}");
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the mount did not appear within 30 s");
}

#[test]
fn the_mounted_backups_match_a_restore_file_by_file_and_unmount_on_ctrl_c() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("notes.txt"), b"first");
    write(&src.join("big.bin"), &random_bytes(3, 9 << 20));
    write(&src.join("a/b/deep.txt"), b"deep");
    fs::create_dir_all(src.join("empty")).unwrap();
    symlink("notes.txt", src.join("link")).unwrap();
    xattr::set(src.join("notes.txt"), "user.colour", b"blue").unwrap();
    env.backup(&[&src]);
    write(&src.join("notes.txt"), b"second, longer");
    xattr::set(src.join("notes.txt"), "user.colour", b"blue").unwrap();
    env.backup(&[&src]);

    // A local store is one process's at a time: restore first.
    let restored = env.path("restored");
    env.ok(&["restore", src.to_str().unwrap(), restored.to_str().unwrap()]);
    let mnt = env.path("mnt");
    let Some(mut child) = mount(&env, &mnt) else { return };
    let view = mnt.join("latest").join(src.strip_prefix("/").unwrap());
    // A first read far into a large file.
    let expected = random_bytes(3, 9 << 20);
    let mut middle = vec![0; 1 << 20];
    {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = fs::File::open(view.join("big.bin")).unwrap();
        file.seek(SeekFrom::Start(5 << 20)).unwrap();
        file.read_exact(&mut middle).unwrap();
    }
    assert!(middle == expected[5 << 20..6 << 20], "the middle of big.bin reads back");
    assert_same_tree(&restored, &view);

    assert_eq!(fs::read_dir(mnt.join("sets")).unwrap().count(), 2);
    let versions = mnt.join("versions").join(src.strip_prefix("/").unwrap()).join("notes.txt");
    let mut each: Vec<_> = fs::read_dir(&versions).unwrap().map(|e| e.unwrap().path()).collect();
    // Both sets may share a second (the names' time); their files' mtimes tell them apart.
    each.sort_by_key(|p| fs::metadata(p).unwrap().modified().unwrap());
    assert_eq!(each.len(), 2, "{each:?}");
    assert_eq!(fs::read(&each[0]).unwrap(), b"first");
    assert_eq!(fs::read(&each[1]).unwrap(), b"second, longer");

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::SIGINT).unwrap();
    assert!(wait_bounded(&mut child, Duration::from_secs(30)).success());
    wait_for(Duration::from_secs(10), "the mount to go", || (!mnt.join("latest").exists()).then_some(()));
}
