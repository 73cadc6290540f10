//! Getting files back: `coffer restore` and `coffer compare`, which the
//! query shell's `get`, `restore` and `compare` run too.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Result, anyhow};
use coffer_client::backup::{Source, human_bytes};
use coffer_client::browse::{self, Catalog, Selector};
use coffer_client::config::ClientConfig;
use coffer_client::restore::{self, RestoreOptions};
use coffer_client::{Repository, compare, names, timefmt, wildcard};

pub fn restore(
    repo: &Repository,
    selector: &Selector,
    path: &Path,
    dest: &Path,
    resume: bool,
) -> Result<ExitCode> {
    let catalog = Catalog::load(repo)?;
    let located = catalog.locate(path)?;
    let (set, location) = catalog.select(&located.location, selector)?;
    let missing = || {
        anyhow!(
            "{} is not in backup set {} ({})",
            names::show(&located.path),
            set.id.short(),
            timefmt::format(set.header.time_ns)
        )
    };
    let options = RestoreOptions { resume, progress: std::io::stderr().is_terminal() };
    let report = if wildcard::has_wildcards(&located.components) {
        let matches = wildcard::expand(repo, location, &located.components)?;
        if matches.is_empty() {
            return Err(missing());
        }
        restore::restore_matches(repo, &located, &matches, dest, options)?
    } else {
        let entry = browse::lookup(repo, location, &located.components)?.ok_or_else(missing)?;
        restore::restore(repo, &entry, &located.path, dest, options)?
    };
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    let kept = match report.skipped {
        0 => String::new(),
        n => format!(" {n} files an earlier run finished were kept."),
    };
    println!(
        "Restored {} files and {} directories ({}) from backup set {} ({}).{kept}",
        report.files,
        report.dirs,
        human_bytes(report.bytes),
        set.id.short(),
        timefmt::format(set.header.time_ns)
    );
    if report.failures.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("coffer: error: {} items could not be restored:", report.failures.len());
    for f in &report.failures {
        eprintln!("  {f}");
    }
    Ok(ExitCode::from(2))
}

pub fn compare(
    repo: &Repository,
    config: &ClientConfig,
    selector: &Selector,
    path: &Path,
    quick: bool,
    json: bool,
) -> Result<ExitCode> {
    let catalog = Catalog::load(repo)?;
    let located = catalog.locate(path)?;
    let location_path =
        PathBuf::from(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&located.location));
    let (_, location) = catalog.select(&located.location, selector)?;
    let entry = browse::lookup(repo, location, &located.components)?
        .ok_or_else(|| anyhow!("{} is not in the backup", located.path.display()))?;
    let rules = Source::new(repo, config, &location_path)?.rules;
    let diffs = compare::compare(repo, &entry, &located.path, &rules, quick)?;
    if json {
        println!("{}", serde_json::to_string(&diffs)?);
    } else {
        for d in &diffs {
            println!("{}: {}", d.path, d.what);
        }
        println!("{} differences", diffs.len());
    }
    Ok(if diffs.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
