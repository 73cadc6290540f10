//! `coffer daemon`, `coffer ctl` and `coffer import-config`: the daemon's
//! side of the command line.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use clap::Subcommand;
use coffer_client::config::ClientConfig;
use coffer_client::{cache, daemon};

#[derive(Subcommand)]
pub enum Ctl {
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

/// `coffer daemon`; `load` reads the settings (again on reload).
pub fn daemon(load: &dyn Fn() -> Result<daemon::Setup, String>, foreground: bool) -> Result<ExitCode> {
    let first = load().map_err(|e| anyhow!(e))?;
    if first.config.locations.is_empty() {
        anyhow::bail!("the daemon has nothing to back up: add [[location]] entries to --config");
    }
    if !foreground {
        detach(&first.cache_root)?;
    }
    daemon::run(load)?;
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

pub fn import_config(from: &Path, output: Option<&Path>) -> Result<ExitCode> {
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

/// `coffer ctl`: finds the socket from the config file (read, not
/// checked: a broken file is what `reload` should be asked about).
pub fn ctl(config_path: Option<&Path>, cache: Option<&Path>, command: &Ctl) -> Result<ExitCode> {
    let config = match config_path {
        Some(path) => ClientConfig::read(path)?,
        None => ClientConfig::default(),
    };
    let cache_root =
        cache.map(Path::to_path_buf).or(config.cache.clone()).unwrap_or_else(cache::default_root);
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
        super::print::status(&response.detail);
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
