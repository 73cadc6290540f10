//! `coffer-bench`: backs up a generated tree to a local store, then through a
//! `coffer-node` on loopback (TLS, gRPC), with and without RAID packs, and
//! prints for each: first backup MiB/s, no-change rerun time, restore MiB/s.
//!
//! ```sh
//! cargo build --bins && cargo run -p coffer-tests --bin coffer-bench -- [--size-mib 1024] [--dir /tmp]
//! ```
//! Half the bytes are in a few large files, half in many small files spread
//! over directories, all incompressible.

use std::path::Path;
use std::time::Instant;

use coffer_tests::Env;
use coffer_tests::cluster::Cluster;
use coffer_tests::fstree::{random_bytes, write};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let size_mib: u64 = arg("--size-mib").map_or(1024, |s| s.parse().expect("--size-mib N"));
    if let Some(dir) = arg("--dir") {
        // SAFETY: set before any thread starts.
        unsafe { std::env::set_var("TMPDIR", dir) };
    }
    let env = Env::new();
    let src = env.path("src");
    let (files, bytes) = generate(&src, size_mib << 20);
    let mib = bytes as f64 / (1 << 20) as f64;
    println!("tree: {files} files, {mib:.0} MiB, in {}", src.display());
    // The tree was just written, so reads come from the page cache: the
    // figures measure Coffer's own path, not the disc.

    println!("\nlocal store (file://)");
    measure(
        files,
        mib,
        &env.path("restored"),
        &|args| {
            env.ok(args);
        },
        &src,
    );

    for (label, quickstart) in [
        ("store node on loopback (coffer://, TLS 1.3)", &[][..]),
        ("store node, packs as RAID files on 3 directories of the same disk", &["--discs", "3"][..]),
    ] {
        let cluster = Cluster::start_with(1, quickstart);
        println!("\n{label}");
        let coffer = |args: &[&str]| {
            cluster.coffer_ok("client.toml", args);
        };
        measure(files, mib, &cluster.path("restored"), &coffer, &src);
    }
}

/// Times a first backup, a no-change rerun and a restore with `coffer`.
fn measure(files: u64, mib: f64, dest: &Path, coffer: &dyn Fn(&[&str]), src: &Path) {
    let src = src.to_str().unwrap();
    let t = Instant::now();
    coffer(&["backup", src]);
    let first = t.elapsed().as_secs_f64();
    println!("first backup      {first:7.2} s  {:8.1} MiB/s", mib / first);

    let t = Instant::now();
    coffer(&["backup", src]);
    let rerun = t.elapsed().as_secs_f64();
    println!("no-change rerun   {rerun:7.2} s  ({:.0} files/s)", files as f64 / rerun);

    let t = Instant::now();
    coffer(&["restore", src, dest.to_str().unwrap()]);
    let restore = t.elapsed().as_secs_f64();
    println!("restore           {restore:7.2} s  {:8.1} MiB/s", mib / restore);
}

/// Half the bytes in files of 64 MiB, half in files of 4–60 KiB.
fn generate(root: &Path, total: u64) -> (u64, u64) {
    let (mut files, mut bytes, mut seed) = (0u64, 0u64, 1u64);
    while bytes < total / 2 {
        let len = (64u64 << 20).min(total / 2 - bytes).max(1);
        write(&root.join(format!("large/{seed}.bin")), &random_bytes(seed, len as usize));
        (files, bytes, seed) = (files + 1, bytes + len, seed + 1);
    }
    while bytes < total {
        let len = 4096 + (seed * 7919 % 57) * 1024;
        write(&root.join(format!("small/d{}/{seed}.dat", seed % 97)), &random_bytes(seed, len as usize));
        (files, bytes, seed) = (files + 1, bytes + len, seed + 1);
    }
    (files, bytes)
}
