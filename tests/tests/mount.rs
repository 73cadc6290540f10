//! `coffer mount`: the backups as a read-only file system, compared file by
//! file with a restore. Runs where `/dev/fuse` is there and mounting is
//! allowed, and says SKIPPED otherwise.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use coffer_tests::Env;
use coffer_tests::cluster::wait_bounded;
use coffer_tests::fstree::{assert_same_tree, random_bytes, write};

/// A running `coffer mount`; dropped (a test that failed), it is stopped
/// and the mount taken down, so no test leaves a mount behind.
struct Mounted {
    child: Child,
    at: PathBuf,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::SIGINT,
        );
        wait_bounded(&mut self.child, Duration::from_secs(30));
        if is_mounted(&self.at) {
            let _ = nix::mount::umount2(&self.at, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Whether `at` is a mount point, as the kernel's mount table says (a
/// FUSE mount whose process died answers nothing, but is still there).
fn is_mounted(at: &Path) -> bool {
    let table = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    table.lines().any(|l| l.split(' ').nth(1) == at.to_str())
}

/// Starts `coffer mount`; `None` (after saying why) where FUSE cannot mount.
fn mount(env: &Env, at: &Path) -> Option<Mounted> {
    if !Path::new("/dev/fuse").exists() {
        eprintln!("SKIPPED: no /dev/fuse on this machine");
        return None;
    }
    fs::create_dir_all(at).unwrap();
    let mut child =
        env.command().arg("mount").arg(at).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    for _ in 0..300 {
        if at.join("latest").exists() {
            return Some(Mounted { child, at: at.to_path_buf() });
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
    let Some(mut mounted) = mount(&env, &mnt) else { return };
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

    let pid = nix::unistd::Pid::from_raw(mounted.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::SIGINT).unwrap();
    let status = wait_bounded(&mut mounted.child, Duration::from_secs(30));
    let mut said = String::new();
    std::io::Read::read_to_string(mounted.child.stderr.as_mut().unwrap(), &mut said).unwrap();
    assert!(status.success(), "coffer mount ended with {status}: {said}");
    assert!(!is_mounted(&mnt), "Ctrl-C took the mount down");
}
