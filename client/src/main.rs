//! `coffer`: back up, browse and restore.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use clap::{Args, CommandFactory, Parser, Subcommand};
use coffer_client::backup::{self, BackupOptions, Source, human_bytes};
use coffer_client::browse::{self, Catalog, Selector};
use coffer_client::config::ClientConfig;
use coffer_client::{Access, Repository, StoreSpec, cache, daemon, names, timefmt, wildcard};
use coffer_proto::StoreUrl;
use coffer_proto::tls::TlsFiles;

mod cli;

use cli::{forget, print, query, retrieve, service};

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
    /// Restore PATH as it was into DEST (absent or an empty directory). With
    /// wildcards in PATH ('~/Mail/*.eml'), every match goes into the
    /// directory DEST.
    Restore {
        #[command(flatten)]
        at: At,
        /// Continue an interrupted restore into DEST: files it finished are
        /// kept, the rest restored.
        #[arg(long)]
        resume: bool,
        path: PathBuf,
        dest: PathBuf,
    },
    /// A shell over the backup sets: ls, cd, versions, get, restore,
    /// compare, undelete, as-at... (`help` inside lists them). With -c, or
    /// commands on stdin, it runs them and exits as the one-shot commands do.
    Query {
        /// Commands to run, separated by `;` (e.g. "cd Documents; ls -l").
        #[arg(short = 'c')]
        commands: Option<String>,
    },
    /// Copy backup sets of this account (same keys) from one store to
    /// another, local or node, sending only what the target lacks; run it
    /// again to finish a copy that was cut short. Seeds a node's account
    /// from a removable drive; a node account without keys gets these.
    Copy {
        /// The store to copy from (file:///... or coffer://HOST:PORT).
        #[arg(long)]
        from: String,
        /// The store to copy to.
        #[arg(long)]
        to: String,
        /// Only this set (an id or prefix; repeatable). Default: every set.
        #[arg(long)]
        set: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Mount the backups read-only at MOUNTPOINT (FUSE): latest/, sets/ and
    /// versions/. Stays until Ctrl-C or `fusermount -u MOUNTPOINT`.
    Mount { mountpoint: PathBuf },
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
    /// Delete backup sets: one by id, or every set a retention policy does
    /// not keep (--keep-*); space only they used is reclaimed.
    Forget {
        /// A set id or unique prefix (or give --keep-* rules instead).
        set_id: Option<String>,
        #[command(flatten)]
        keep: coffer_client::keep::KeepArgs,
        /// List what would be forgotten, and forget nothing.
        #[arg(long)]
        dry_run: bool,
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
        command: service::Ctl,
    },
    /// Print a completion script for SHELL (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff): `coffer man | man -l -`.
    Man,
}

fn main() -> ExitCode {
    coffer_proto::pipe::end_quietly_on_closed_pipe();
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
        Err(e) if coffer_proto::pipe::is_closed_pipe(e.as_ref()) => coffer_proto::pipe::die_of_sigpipe(),
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
    settings_for(cli, None)
}

/// [`settings`], with `store` standing in for a store none of the usual
/// places names (`coffer copy` names its own).
fn settings_for(cli: &Cli, store: Option<String>) -> Result<Settings> {
    let config = match &cli.config {
        Some(path) => ClientConfig::load(path)?,
        None => ClientConfig::default(),
    };
    let url = cli
        .store
        .clone()
        .or(config.store.clone())
        .or(store)
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
        Command::Ctl { command } => {
            return service::ctl(cli.config.as_deref(), cli.cache.as_deref(), command);
        }
        Command::Daemon { foreground } => {
            let load = || -> Result<daemon::Setup, String> {
                let s = settings(&cli).map_err(|e| format!("{e:#}"))?;
                Ok(daemon::Setup { store: s.store, keys: s.keys, cache_root: s.cache_root, config: s.config })
            };
            return service::daemon(&load, *foreground);
        }
        Command::ImportConfig { bbackupd_conf, output } => {
            return service::import_config(bbackupd_conf, output.as_deref());
        }
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "coffer", &mut std::io::stdout());
            return Ok(ExitCode::SUCCESS);
        }
        Command::Man => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    if let Command::Copy { from, to, set, json } = &cli.command {
        return copy_cmd(&cli, from, to, set, *json);
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
        | Command::ImportConfig { .. }
        | Command::Copy { .. }
        | Command::Completions { .. }
        | Command::Man => {
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
                print::backup(&report);
            }
        }
        Command::Query { commands } => {
            let open_writer = || {
                Repository::open(&store, &keys, &cache_root, Access::Write)
                    .with_context(|| format!("opening store {} for writing", store.url))
            };
            // A node's read session cannot commit; a local store's can.
            let remote = matches!(StoreUrl::parse(&store.url)?, StoreUrl::Remote { .. });
            let writer: query::Writer = if remote { Some(&open_writer) } else { None };
            let status = query::Shell::new(&repo, &config, writer)?.run(commands.as_deref())?;
            return Ok(ExitCode::from(status));
        }
        Command::Mount { mountpoint } => {
            eprintln!("Mounted at {}; Ctrl-C or `fusermount -u` to unmount.", mountpoint.display());
            coffer_client::mount::mount(repo, &mountpoint)?;
        }
        Command::Sets { json } => print::sets(&Catalog::load(&repo)?, json)?,
        Command::Ls { long, deleted, at, json, path } => {
            let catalog = Catalog::load(&repo)?;
            match path {
                None => print::locations(&catalog, json)?,
                Some(path) => {
                    let listed = browse::list(
                        &repo,
                        &catalog,
                        &names::path_arg(path.as_os_str()),
                        &at.selector()?,
                        deleted,
                    )?;
                    print::listing(&listed, long, json)?;
                }
            }
        }
        Command::Versions { json, path } => {
            let (path, catalog) = (names::path_arg(path.as_os_str()), Catalog::load(&repo)?);
            let pattern = wildcard::has_wildcards(&catalog.locate(&path)?.components);
            print::versions(&browse::versions_each(&repo, &catalog, &path)?, pattern, json)?;
        }
        Command::Restore { at, resume, path, dest } => {
            return retrieve::restore(
                &repo,
                &at.selector()?,
                &names::path_arg(path.as_os_str()),
                &dest,
                resume,
            );
        }
        Command::Compare { quick, at, json, path } => {
            return retrieve::compare(
                &repo,
                &config,
                &at.selector()?,
                &names::path_arg(path.as_os_str()),
                quick,
                json,
            );
        }
        Command::Forget { set_id, keep, dry_run, json } => {
            forget::forget(&repo, set_id.as_deref(), &keep, dry_run, json)?;
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

/// `coffer copy`: both stores with this client's keys and certificate.
fn copy_cmd(cli: &Cli, from: &str, to: &str, sets: &[String], json: bool) -> Result<ExitCode> {
    let s = settings_for(cli, Some(from.to_string()))?;
    let spec = |url: &str| StoreSpec { url: url.to_string(), others: Vec::new(), ..s.store.clone() };
    let source = Repository::open(&spec(from), &s.keys, &s.cache_root, Access::Read)
        .with_context(|| format!("opening store {from}"))?;
    let target = Repository::open_registering(&spec(to), &s.keys, &s.cache_root)
        .with_context(|| format!("opening store {to}"))?;
    let _lock = target.cache.lock_writer("coffer copy")?;
    let report = coffer_client::copy::copy(&source, &target, sets)?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "Copied {} backup sets ({} already there): sent {} objects ({}); {} were there already.",
            report.copied.len(),
            report.present.len(),
            report.objects_sent,
            human_bytes(report.bytes_sent),
            report.objects_present
        );
    }
    Ok(ExitCode::SUCCESS)
}
