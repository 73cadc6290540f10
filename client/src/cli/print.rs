//! What `coffer` prints for people (`--json` prints the same data as JSON).

use anyhow::Result;
use coffer_client::backup::{self, human_bytes};
use coffer_client::browse::{self, Catalog};
use coffer_client::timefmt;
use coffer_client::tree::Kind;

pub fn backup(r: &backup::BackupReport) {
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    for h in &r.held {
        eprintln!("warning: location {} kept as it was: {}", h.location, h.reason);
    }
    let set = r.set_id.as_deref().map(|s| &s[..12]).unwrap_or("-");
    if r.unchanged {
        println!("Nothing changed since backup set {set}; no new set committed.");
    } else {
        match &r.node {
            Some(node) => println!("Committed backup set {set} on node {node}."),
            None => println!("Committed backup set {set}."),
        }
    }
    if r.restarts > 0 {
        println!("The store node failed during the backup; it started again {} time(s).", r.restarts);
    }
    println!(
        "{} files in {} directories ({}); read {} files ({}); stored {} new ({} chunks) in {:.1}s.",
        r.files_total,
        r.dirs_total,
        human_bytes(r.bytes_total),
        r.files_read,
        human_bytes(r.bytes_read),
        human_bytes(r.bytes_stored_new),
        r.chunks_new,
        r.seconds
    );
}

pub fn sets(catalog: &Catalog, json: bool) -> Result<()> {
    if json {
        let sets: Vec<_> = catalog
            .sets
            .iter()
            .map(|s| {
                serde_json::json!({
                    "id": s.id.to_hex(),
                    "time_ns": s.header.time_ns,
                    "time": timefmt::format(s.header.time_ns),
                    "marker": s.header.marker,
                    "files": s.header.stats.files,
                    "dirs": s.header.stats.dirs,
                    "bytes": s.header.stats.bytes,
                    "host": s.contents.host,
                    "tags": s.contents.tags,
                    "locations": s.contents.locations.iter().map(|l| l.shown_path()).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string(&sets)?);
        return Ok(());
    }
    println!("{:<12}  {:<19}  {:>8}  {:>10}  LOCATIONS", "SET", "TIME", "FILES", "SIZE");
    for s in &catalog.sets {
        let locations: Vec<_> = s.contents.locations.iter().map(|l| l.shown_path()).collect();
        println!(
            "{:<12}  {:<19}  {:>8}  {:>10}  {}",
            s.id.short(),
            timefmt::format(s.header.time_ns),
            s.header.stats.files,
            human_bytes(s.header.stats.bytes),
            locations.join(" ")
        );
    }
    Ok(())
}

pub fn locations(catalog: &Catalog, json: bool) -> Result<()> {
    let locations: Vec<String> = catalog.locations().iter().map(|l| l.shown_path()).collect();
    if json {
        println!("{}", serde_json::to_string(&locations)?);
    } else {
        for l in locations {
            println!("{l}/");
        }
    }
    Ok(())
}

pub fn listing(listed: &[browse::Listed], long: bool, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(listed)?);
        return Ok(());
    }
    for l in listed {
        let suffix = match (l.kind, l.deleted) {
            (_, true) => " (deleted)",
            (Kind::Dir, _) => "/",
            _ => "",
        };
        if long {
            println!(
                "{}  {:>5} {:>5}  {:>12}  {}  {}{suffix}",
                mode_string(l.kind, l.mode),
                l.uid,
                l.gid,
                l.size,
                timefmt::format(l.mtime_ns),
                l.name
            );
        } else {
            println!("{}{suffix}", l.name);
        }
    }
    Ok(())
}

/// Each path's versions; `pattern` when the path had wildcards (then every
/// path is named, and `--json` is a list of `{path, versions}`).
pub fn versions(each: &[(String, Vec<browse::Version>)], pattern: bool, json: bool) -> Result<()> {
    if json {
        match (pattern, each) {
            (false, [(_, versions)]) => println!("{}", serde_json::to_string(versions)?),
            _ => {
                let list: Vec<_> = each
                    .iter()
                    .map(|(path, versions)| serde_json::json!({"path": path, "versions": versions}))
                    .collect();
                println!("{}", serde_json::to_string(&list)?);
            }
        }
        return Ok(());
    }
    for (path, versions) in each {
        if pattern {
            println!("{path}:");
        }
        println!("{:<12}  {:<19}  {:>12}  MODIFIED", "SET", "SET TIME", "SIZE");
        for v in versions {
            let (size, mtime) = match (v.size, v.mtime_ns) {
                (Some(size), Some(m)) => (size.to_string(), timefmt::format(m)),
                _ => ("deleted".to_string(), String::new()),
            };
            println!("{:<12}  {:<19}  {size:>12}  {mtime}", &v.set_id[..12], timefmt::format(v.set_time_ns));
        }
    }
    Ok(())
}

fn mode_string(kind: Kind, mode: u32) -> String {
    let kind_char = match kind {
        Kind::Dir => 'd',
        Kind::File => '-',
        Kind::Symlink => 'l',
        Kind::Fifo => 'p',
        Kind::CharDevice => 'c',
        Kind::BlockDevice => 'b',
    };
    let bits = "rwxrwxrwx";
    let perms: String =
        bits.chars().enumerate().map(|(i, c)| if mode & (0o400 >> i) != 0 { c } else { '-' }).collect();
    format!("{kind_char}{perms}")
}

pub fn status(s: &serde_json::Value) {
    let text = |v: &serde_json::Value| v.as_str().map(str::to_string).unwrap_or_else(|| "-".into());
    println!("mode          {}", text(&s["mode"]));
    println!("state         {}", text(&s["state"]));
    if s["running"] == true {
        let p = &s["progress"];
        println!(
            "progress      {} of ~{} files, {} of ~{} scanned, {} uploaded",
            p["files_scanned"],
            s["files_expected"],
            human_bytes(p["bytes_scanned"].as_u64().unwrap_or(0)),
            human_bytes(s["bytes_expected"].as_u64().unwrap_or(0)),
            human_bytes(p["bytes_uploaded"].as_u64().unwrap_or(0)),
        );
        println!("file          {}", text(&s["file"]));
        if let Some(left) = s["seconds_left"].as_f64() {
            println!(
                "time left     ~{}",
                humantime::format_duration(std::time::Duration::from_secs(left as u64))
            );
        }
    }
    println!("last set      {} at {}", text(&s["last_set"]), text(&s["last_success"]));
    println!("last error    {}", text(&s["last_error"]));
    println!("node          {}", text(&s["node"]));
    println!("next run      {}", text(&s["next_run"]));
    println!("waiting files {}", s["waiting_files"]);
    for h in s["held"].as_array().into_iter().flatten() {
        println!("holding       {}: {}", text(&h["location"]), text(&h["reason"]));
    }
    for e in s["events"].as_array().into_iter().flatten() {
        println!("event         {} {} {}", text(&e["time"]), text(&e["name"]), e["detail"]);
    }
}
