//! `coffer-bench`: backs up a generated tree to a local store, then through a
//! `coffer-node` on loopback (TLS, gRPC), with and without RAID packs, and
//! prints for each: first backup MiB/s, no-change rerun time, restore MiB/s.
//!
//! ```sh
//! cargo build --bins && cargo run -p coffer-tests --bin coffer-bench -- [--size-mib 1024] [--dir /tmp] \
//!     [--old-coffer PATH]
//! ```
//! With `--old-coffer`, the node's restore is timed with that `coffer`
//! binary too (an older build, to compare restore paths). Through the
//! node, it also mounts the backups (`coffer mount`, where FUSE works) and
//! times the first byte of a large file and reading all of it.
//! Half the bytes are in a few large files, half in many small files spread
//! over directories, all incompressible.

use std::path::Path;
use std::time::Instant;

use coffer_tests::Env;
use coffer_tests::cluster::Cluster;
use coffer_tests::fstree::generate_mixed;

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
    let (files, bytes) = generate_mixed(&src, size_mib << 20);
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
        if let Some(old) = arg("--old-coffer") {
            let dest = cluster.path("restored-old");
            let t = Instant::now();
            let mut cmd = std::process::Command::new(&old);
            cmd.arg("--config")
                .arg(cluster.path("client.toml"))
                .args(["restore", src.to_str().unwrap()])
                .arg(&dest);
            coffer_tests::cluster::succeeded(&old, &["restore"], cmd.output().expect("run the old coffer"));
            let restore = t.elapsed().as_secs_f64();
            println!("restore (old)     {restore:7.2} s  {:8.1} MiB/s", mib / restore);
        }
        mount_reads(&cluster, &src);
    }
    if let Some(old) = arg("--old-coffer") {
        far_restores(&src, mib, &old);
    }
}

/// Restores from a node 1 ms away each way (a 2 ms round trip, through a
/// proxy that delays without capping throughput), with this `coffer` and
/// with `old`: where one round trip per chunk shows.
fn far_restores(src: &Path, mib: f64, old: &str) {
    let cluster = Cluster::start(1);
    cluster.coffer_ok("client.toml", &["backup", src.to_str().unwrap()]);
    let proxy = coffer_tests::proxy::Proxy::start(cluster.nodes[0].port);
    proxy.latency(std::time::Duration::from_millis(1));
    let config = std::fs::read_to_string(cluster.path("client.toml")).unwrap();
    let far = config.replace(&cluster.nodes[0].url(), &format!("coffer://{}", proxy.address()));
    std::fs::write(cluster.path("far.toml"), far).unwrap();
    println!("\nstore node 2 ms away (round trip), restores");
    for (label, coffer) in [
        ("restore", coffer_tests::binary("coffer").display().to_string()),
        ("restore (old)", old.to_string()),
    ] {
        let dest = cluster.path(&format!("far-{}", label.len()));
        let t = Instant::now();
        let mut cmd = std::process::Command::new(&coffer);
        // Each with an empty cache: both fetch every tree through the link.
        cmd.arg("--config")
            .arg(cluster.path("far.toml"))
            .arg("--cache")
            .arg(cluster.path(&format!("cache-{}", label.len())));
        cmd.args(["--no-failover", "restore", src.to_str().unwrap()]).arg(&dest);
        coffer_tests::cluster::succeeded(&coffer, &["restore"], cmd.output().expect("run coffer"));
        let seconds = t.elapsed().as_secs_f64();
        println!("{label:<17} {seconds:7.2} s  {:8.1} MiB/s", mib / seconds);
    }
}

/// Mounts the node's backups and times the first byte of a 64 MiB file,
/// then reading all of it (fetched and decrypted on demand).
fn mount_reads(cluster: &Cluster, src: &Path) {
    let mnt = cluster.path("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mut child = cluster
        .coffer_command("client.toml", &["mount", mnt.to_str().unwrap()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start coffer mount");
    let file = mnt.join("latest").join(src.strip_prefix("/").unwrap()).join("large/1.bin");
    let started = Instant::now();
    while !mnt.join("latest").exists() {
        if child.try_wait().unwrap().is_some() || started.elapsed().as_secs() > 30 {
            println!("mount             skipped (FUSE cannot mount here)");
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let t = Instant::now();
    let mut f = std::fs::File::open(&file).expect("the mounted file");
    let mut first = [0u8; 4096];
    std::io::Read::read_exact(&mut f, &mut first).unwrap();
    let ttfb = t.elapsed().as_secs_f64();
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut f, &mut rest).unwrap();
    let whole = t.elapsed().as_secs_f64();
    let mib = (rest.len() + first.len()) as f64 / (1 << 20) as f64;
    println!("mount: first byte {:7.1} ms; whole {mib:.0} MiB file {:8.1} MiB/s", ttfb * 1000.0, mib / whole);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::SIGINT).unwrap();
    let _ = child.wait();
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
