//! RAID file throughput beside plain files on the same disk:
//! `cargo bench -p coffer-raid [-- SIZE_MIB]` (default 256). Files are written
//! with an fsync and read back from the page cache, so the figures are the
//! layer's own cost (CRCs, parity, striping) plus one sync.

use std::io::Write;
use std::time::Instant;

use coffer_raid::{DiscSet, Overwrite};

fn main() {
    let mib: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(256);
    let data: Vec<u8> =
        (0..mib << 20).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1]).collect();
    let root = tempfile::tempdir_in(std::env::var_os("TMPDIR").unwrap_or("/tmp".into())).unwrap();
    let rate = |secs: f64| mib as f64 / secs;

    let plain = root.path().join("plain");
    let t = Instant::now();
    let mut f = std::fs::File::create(&plain).unwrap();
    f.write_all(&data).unwrap();
    f.sync_all().unwrap();
    println!("plain file write   {:8.1} MiB/s", rate(t.elapsed().as_secs_f64()));
    // Read as the RAID reads below are: 1 MiB at a time into a fresh buffer.
    let t = Instant::now();
    let file = std::fs::File::open(&plain).unwrap();
    for at in (0..data.len()).step_by(1 << 20) {
        let mut buf = vec![0; (1 << 20).min(data.len() - at)];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf, at as u64).unwrap();
    }
    println!("plain file read    {:8.1} MiB/s", rate(t.elapsed().as_secs_f64()));

    for discs in [1usize, 3] {
        let dirs: Vec<_> = (0..discs).map(|k| root.path().join(format!("{discs}-{k}"))).collect();
        let set = DiscSet::open(&dirs).unwrap();
        let t = Instant::now();
        let mut w = set.create("f", Overwrite::No).unwrap();
        for piece in data.chunks(1 << 20) {
            w.write_all(piece).unwrap();
        }
        w.commit().unwrap();
        println!("RAID {discs} disc(s) write {:8.1} MiB/s", rate(t.elapsed().as_secs_f64()));
        let read = |label: &str| {
            let r = set.open_file("f").unwrap();
            let t = Instant::now();
            let mut n = 0;
            while n < data.len() {
                n += r.read_at(n as u64, (1 << 20).min(data.len() - n)).unwrap().len();
            }
            println!("RAID {discs} disc(s) read  {:8.1} MiB/s{label}", rate(t.elapsed().as_secs_f64()));
        };
        read("");
        if discs == 3 {
            std::fs::remove_file(set.stripe_path("f", 0)).unwrap();
            read("  (one stripe lost: rebuilt from parity)");
        }
    }
}
