//! `coffer`: back up, browse and restore.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use clap::{Args, Parser, Subcommand};
use coffer_client::backup::{self, BackupOptions, Source, human_bytes};
use coffer_client::browse::{self, Catalog, Selector};
use coffer_client::config::ClientConfig;
use coffer_client::tree::Kind;
use coffer_client::{Access, Repository, StoreSpec, cache, compare, daemon, restore, timefmt};
use coffer_proto::tls::TlsFiles;

/// Encrypted, deduplicated, versioned backups.
///
/// Exit status: 0 on success, 1 when `compare` finds differences, 2 on any error.
#[derive(Parser)]
#[command(name = "coffer", version)]
struct Cli {
    /// A TOML configuration file (store, keys, cache, [tls]); flags override it.
    #[arg(long, env = "COFFER_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// The store: file:///path/to/store for a local or removable drive, or
    /// coffer://HOST:PORT for a store node.
    #[arg(long, env = "COFFER_STORE", global = true)]
    store: Option<String>,
    /// This client's certificate, for a node.
    #[arg(long, global = true)]
    cert: Option<PathBuf>,
    /// The private key of --cert.
    #[arg(long, global = true)]
    key: Option<PathBuf>,
    /// The certificate authority that signed the node's certificate.
    #[arg(long, global = true)]
    ca: Option<PathBuf>,
    /// Use only the store given, never another node of the server group
    /// (to read or check one replica).
    #[arg(long, global = true)]
    no_failover: bool,
    /// The keys file (keep a copy somewhere safe: without it the backup is unreadable).
    #[arg(long, env = "COFFER_KEYS", global = true)]
    keys: Option<PathBuf>,
    /// Where the client caches store metadata.
    #[arg(long, env = "COFFER_CACHE", global = true)]
    cache: Option<PathBuf>,
    /// More log output (-v, -vv).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone, Default)]
struct At {
    /// Look in the newest backup set not newer than this time (RFC 3339 or "YYYY-MM-DD HH:MM:SS").
    #[arg(long, conflicts_with = "set")]
    as_at: Option<String>,
    /// Look in this backup set (an id or a unique prefix).
    #[arg(long)]
    set: Option<String>,
}

impl At {
    fn selector(&self) -> Result<Selector> {
        Ok(match (&self.as_at, &self.set) {
            (Some(t), _) => Selector::AsAt(timefmt::parse(t)?),
            (None, Some(s)) => Selector::Set(s.clone()),
            (None, None) => Selector::Latest,
        })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Create a keys file and initialise the store for it.
    Init,
    /// Back up directories (the configured locations without PATHS): upload
    /// what changed and commit a backup set.
    Backup {
        #[arg(long)]
        json: bool,
        /// Do not compress chunks.
        #[arg(long)]
        no_compress: bool,
        /// A tag recorded in the set (repeatable).
        #[arg(long)]
        tag: Vec<String>,
        /// Accept scans that drop most of a location's files (otherwise the
        /// set keeps the location's previous contents and says so).
        #[arg(long)]
        allow_deletions: bool,
        paths: Vec<PathBuf>,
    },
    /// List backup sets.
    Sets {
        #[arg(long)]
        json: bool,
    },
    /// List a backed-up directory (or the backup locations, without PATH).
    Ls {
        /// Long listing: mode, owner, size, modification time.
        #[arg(short = 'l')]
        long: bool,
        /// Also list files deleted since older sets.
        #[arg(long)]
        deleted: bool,
        #[command(flatten)]
        at: At,
        #[arg(long)]
        json: bool,
        path: Option<PathBuf>,
    },
    /// List the versions of a path across backup sets.
    Versions {
        #[arg(long)]
        json: bool,
        path: PathBuf,
    },
    /// Restore PATH as it was into DEST (absent or an empty directory).
    Restore {
        #[command(flatten)]
        at: At,
        path: PathBuf,
        dest: PathBuf,
    },
    /// Compare a backup with the disk.
    Compare {
        /// Trust metadata instead of re-reading file contents.
        #[arg(long)]
        quick: bool,
        #[command(flatten)]
        at: At,
        #[arg(long)]
        json: bool,
        path: PathBuf,
    },
    /// Delete a backup set; space used only by it is reclaimed.
    Forget {
        set_id: String,
        #[arg(long)]
        json: bool,
    },
    /// How much the store holds for this account.
    Usage {
        #[arg(long)]
        json: bool,
    },
    /// Rebuild a local store's index from its pack files: the repair for a
    /// store whose index was lost or rolled back. Removes nothing.
    Repair,
    /// Keep the configured locations backed up ([daemon] and [[location]]
    /// in --config): continuously in lazy mode, on `coffer ctl sync` in
    /// snapshot mode.
    Daemon {
        /// Stay in the foreground, logging to stderr (systemd, containers).
        /// Otherwise the daemon detaches and logs to daemon.log in the cache.
        #[arg(long)]
        foreground: bool,
    },
    /// Convert a Box Backup client configuration (bbackupd.conf) into a
    /// Coffer client configuration; says what has no counterpart.
    ImportConfig {
        bbackupd_conf: PathBuf,
        /// Write it here (0600) instead of to stdout.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Control the running daemon through its socket.
    Ctl {
        #[command(subcommand)]
        command: Ctl,
    },
}

#[derive(Subcommand)]
enum Ctl {
    /// What the daemon is doing, how far it has got, when it runs next.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Back up every location now and report the outcome.
    Sync {
        /// Accept the mass deletion held for this location (name or path; repeatable).
        #[arg(long)]
        allow_deletions: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Reread the configuration (a broken one is refused, the running one kept).
    Reload,
    /// Stop at the next object boundary and exit; the next run goes on from there.
    Stop,
    /// Stop uploading at the next object boundary until `resume`.
    Pause,
    Resume,
    /// Wait until no backup runs and no sync is queued.
    Wait {
        /// Give up after this long ("90s", "10m").
        #[arg(long, default_value = "1h")]
        timeout: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = ["warn", "info", "debug"][cli.verbose.min(2) as usize];
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| level.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("coffer: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Where the store, keys and cache are: flags first, then the config file.
struct Settings {
    store: StoreSpec,
    keys: PathBuf,
    cache_root: PathBuf,
    config: ClientConfig,
}

fn settings(cli: &Cli) -> Result<Settings> {
    let config = match &cli.config {
        Some(path) => ClientConfig::load(path)?,
        None => ClientConfig::default(),
    };
    let url = cli
        .store
        .clone()
        .or(config.store.clone())
        .ok_or_else(|| anyhow!("no store given: use --store URL, COFFER_STORE or `store` in --config"))?;
    let keys =
        cli.keys.clone().or(config.keys.clone()).ok_or_else(|| {
            anyhow!("no keys file given: use --keys FILE, COFFER_KEYS or `keys` in --config")
        })?;
    let cache_root = cli.cache.clone().or(config.cache.clone()).unwrap_or_else(cache::default_root);
    let tls = TlsFiles::from_flags(&cli.cert, &cli.key, &cli.ca)?.or(config.tls.clone());
    // The configured group only fails over from the configured store.
    let others = if cli.store.is_some() { Vec::new() } else { config.nodes.clone() };
    let store = StoreSpec { url, others, failover: !cli.no_failover, tls };
    Ok(Settings { store, keys, cache_root, config })
}

fn run(cli: Cli) -> Result<ExitCode> {
    match &cli.command {
        Command::Ctl { command } => return ctl(&cli, command),
        Command::Daemon { foreground } => return daemon(&cli, *foreground),
        Command::ImportConfig { bbackupd_conf, output } => {
            return import_config(bbackupd_conf, output.as_deref());
        }
        _ => {}
    }
    let Settings { store, keys, cache_root, config } = settings(&cli)?;
    if let Command::Init = cli.command {
        let repo = Repository::init(&store, &keys, &cache_root)?;
        println!("Created keys file {} (fingerprint {}).", keys.display(), &repo.keys.fingerprint()[..16]);
        println!("Store {} is ready.", store.url);
        eprintln!(
            "IMPORTANT: keep a copy of {} somewhere other than this machine and this store. \
             Without it your backups cannot be read by anyone, including you.",
            keys.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::Repair = cli.command {
        let report = coffer_client::backend::repair_local(&store.url, &keys)?;
        println!("{report}");
        return Ok(ExitCode::SUCCESS);
    }
    let access = match cli.command {
        Command::Backup { .. } | Command::Forget { .. } => Access::Write,
        _ => Access::Read,
    };
    let repo = Repository::open(&store, &keys, &cache_root, access)
        .with_context(|| format!("opening store {}", store.url))?;
    match cli.command {
        Command::Init
        | Command::Repair
        | Command::Daemon { .. }
        | Command::Ctl { .. }
        | Command::ImportConfig { .. } => {
            unreachable!("handled above")
        }
        Command::Backup { json, no_compress, tag, allow_deletions, paths } => {
            let _lock = repo.cache.lock_writer("coffer backup")?;
            let mut sources = match paths.is_empty() {
                true if config.locations.is_empty() => {
                    anyhow::bail!("nothing to back up: give PATHS, or [[location]] entries in --config")
                }
                true => Source::configured(&repo, &config)?,
                false => paths.iter().map(|p| Source::new(&repo, &config, p)).collect::<Result<_, _>>()?,
            };
            sources.iter_mut().for_each(|s| s.allow_deletions = allow_deletions);
            let opts = BackupOptions {
                compress: !no_compress,
                progress: !json && std::io::stderr().is_terminal(),
                tags: tag,
                mass_deletion: config.daemon.mass_deletion,
                ..BackupOptions::default()
            };
            let report = backup::backup(&repo, &sources, &opts)?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print_backup(&report);
            }
        }
        Command::Sets { json } => print_sets(&Catalog::load(&repo)?, json)?,
        Command::Ls { long, deleted, at, json, path } => {
            let catalog = Catalog::load(&repo)?;
            match path {
                None => print_locations(&catalog, json)?,
                Some(path) => {
                    let listed = browse::list(&repo, &catalog, &path, &at.selector()?, deleted)?;
                    print_listing(&listed, long, json)?;
                }
            }
        }
        Command::Versions { json, path } => {
            let versions = browse::versions(&repo, &Catalog::load(&repo)?, &path)?;
            print_versions(&versions, json)?;
        }
        Command::Restore { at, path, dest } => return restore_cmd(&repo, &at, &path, &dest),
        Command::Compare { quick, at, json, path } => {
            return compare_cmd(&repo, &config, &at, &path, quick, json);
        }
        Command::Forget { set_id, json } => {
            let _lock = repo.cache.lock_writer("coffer forget")?;
            let catalog = Catalog::load(&repo)?;
            let set = catalog.find_set(&set_id)?;
            let before = repo.backend.marker()?;
            let report = repo.backend.forget(&set.id)?;
            repo.cache.record_change(before, report.marker, None, Some(set.id));
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "Forgot backup set {}: freed {} objects ({}), rewrote {} and deleted {} pack files.",
                    set.id.short(),
                    report.objects_freed,
                    human_bytes(report.bytes_freed),
                    report.packs_rewritten,
                    report.packs_deleted
                );
            }
        }
        Command::Usage { json } => {
            let usage = repo.backend.usage()?;
            if json {
                println!("{}", serde_json::to_string(&usage)?);
            } else {
                println!("backup sets   {}", usage.sets);
                println!("live objects  {} ({})", usage.objects, human_bytes(usage.live_bytes));
                println!("pack files    {} ({})", usage.packs, human_bytes(usage.pack_bytes));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn daemon(cli: &Cli, foreground: bool) -> Result<ExitCode> {
    let load = || -> Result<daemon::Setup, String> {
        let s = settings(cli).map_err(|e| format!("{e:#}"))?;
        Ok(daemon::Setup { store: s.store, keys: s.keys, cache_root: s.cache_root, config: s.config })
    };
    let first = load().map_err(|e| anyhow!(e))?;
    if first.config.locations.is_empty() {
        anyhow::bail!("the daemon has nothing to back up: add [[location]] entries to --config");
    }
    if !foreground {
        detach(&first.cache_root)?;
    }
    daemon::run(&load)?;
    Ok(ExitCode::SUCCESS)
}

/// Leaves the terminal: logs go to daemon.log in the cache root.
fn detach(cache_root: &Path) -> Result<()> {
    std::fs::create_dir_all(cache_root)?;
    let log_path = cache_root.join("daemon.log");
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
    nix::unistd::daemon(true, true).context("detaching")?;
    nix::unistd::dup2_stderr(&log).context("redirecting the log")?;
    Ok(())
}

fn import_config(from: &Path, output: Option<&Path>) -> Result<ExitCode> {
    let text = std::fs::read_to_string(from).with_context(|| format!("reading {}", from.display()))?;
    let imported = coffer_client::bbackupd::import(&text)?;
    let toml = format!(
        "# Imported from {} by `coffer import-config`; see the notes it printed.\n{}",
        from.display(),
        toml::to_string(&imported.config)?
    );
    match output {
        Some(path) => cache::write_private(path, toml.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?,
        None => print!("{toml}"),
    }
    for note in &imported.notes {
        eprintln!("note: {note}");
    }
    Ok(ExitCode::SUCCESS)
}

fn ctl(cli: &Cli, command: &Ctl) -> Result<ExitCode> {
    let config = match &cli.config {
        Some(path) => ClientConfig::read(path)?,
        None => ClientConfig::default(),
    };
    let cache_root = cli.cache.clone().or(config.cache.clone()).unwrap_or_else(cache::default_root);
    let socket = daemon::socket_path(&config, &cache_root);
    let (request, json) = match command {
        Ctl::Status { json } => (daemon::Request::Status, *json),
        Ctl::Sync { allow_deletions, json } => {
            (daemon::Request::Sync { allow_deletions: allow_deletions.clone() }, *json)
        }
        Ctl::Reload => (daemon::Request::Reload, false),
        Ctl::Stop => (daemon::Request::Stop, false),
        Ctl::Pause => (daemon::Request::Pause, false),
        Ctl::Resume => (daemon::Request::Resume, false),
        Ctl::Wait { timeout } => {
            let timeout =
                humantime::parse_duration(timeout).with_context(|| format!("--timeout {timeout}"))?;
            (daemon::Request::Wait { timeout_secs: timeout.as_secs().max(1) }, false)
        }
    };
    let response = daemon::call(&socket, &request)?;
    if json {
        println!("{}", serde_json::to_string(&response.detail)?);
    } else if let daemon::Request::Status = request {
        print_status(&response.detail);
    } else {
        println!("{}", response.message);
        if let Some(held) = response.detail["held"].as_array() {
            for h in held {
                eprintln!("warning: location {} kept as it was: {}", h["location"], h["reason"]);
            }
        }
    }
    Ok(if response.ok { ExitCode::SUCCESS } else { ExitCode::from(2) })
}

fn print_status(s: &serde_json::Value) {
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

fn restore_cmd(repo: &Repository, at: &At, path: &Path, dest: &Path) -> Result<ExitCode> {
    let catalog = Catalog::load(repo)?;
    let located = catalog.locate(path)?;
    let (set, location) = catalog.select(&located.location, &at.selector()?)?;
    let entry = browse::lookup(repo, location, &located.components)?.ok_or_else(|| {
        anyhow!(
            "{} is not in backup set {} ({})",
            located.path.display(),
            set.id.short(),
            timefmt::format(set.header.time_ns)
        )
    })?;
    let report = restore::restore(repo, &entry, &located.path, dest)?;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    println!(
        "Restored {} files and {} directories ({}) from backup set {} ({}).",
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

fn compare_cmd(
    repo: &Repository,
    config: &ClientConfig,
    at: &At,
    path: &Path,
    quick: bool,
    json: bool,
) -> Result<ExitCode> {
    let catalog = Catalog::load(repo)?;
    let located = catalog.locate(path)?;
    let location_path =
        PathBuf::from(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&located.location));
    let (_, location) = catalog.select(&located.location, &at.selector()?)?;
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

fn print_backup(r: &backup::BackupReport) {
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

fn print_sets(catalog: &Catalog, json: bool) -> Result<()> {
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
                    "locations": s.contents.locations.iter().map(|l| l.path_lossy()).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string(&sets)?);
        return Ok(());
    }
    println!("{:<12}  {:<19}  {:>8}  {:>10}  LOCATIONS", "SET", "TIME", "FILES", "SIZE");
    for s in &catalog.sets {
        let locations: Vec<_> = s.contents.locations.iter().map(|l| l.path_lossy()).collect();
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

fn print_locations(catalog: &Catalog, json: bool) -> Result<()> {
    let locations: Vec<String> = catalog.locations().iter().map(|l| l.path_lossy()).collect();
    if json {
        println!("{}", serde_json::to_string(&locations)?);
    } else {
        for l in locations {
            println!("{l}/");
        }
    }
    Ok(())
}

fn print_listing(listed: &[browse::Listed], long: bool, json: bool) -> Result<()> {
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

fn print_versions(versions: &[browse::Version], json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(versions)?);
        return Ok(());
    }
    println!("{:<12}  {:<19}  {:>12}  MODIFIED", "SET", "SET TIME", "SIZE");
    for v in versions {
        let (size, mtime) = match (v.size, v.mtime_ns) {
            (Some(size), Some(m)) => (size.to_string(), timefmt::format(m)),
            _ => ("deleted".to_string(), String::new()),
        };
        println!("{:<12}  {:<19}  {size:>12}  {mtime}", &v.set_id[..12], timefmt::format(v.set_time_ns));
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
