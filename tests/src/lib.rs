//! Helpers for integration tests: run the real `coffer` binary against a
//! throwaway store, generate file trees, and compare trees on disk.
//!
//! Binaries are found beside the test executable (`target/<profile>/`), so
//! build them first: `cargo build --bins` (the README's test command does).

pub mod cluster;
pub mod fstree;
pub mod links;
pub mod metrics;
pub mod proxy;
pub mod rawclient;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// Path of a workspace binary built in the same profile as the running test.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // Tests run from target/<profile>/deps/, bench binaries from target/<profile>/.
    exe.ancestors().skip(1).take(2).map(|dir| dir.join(name)).find(|p| p.exists()).unwrap_or_else(|| {
        panic!("{name} not built beside {}; run `cargo build --bins` first", exe.display())
    })
}

/// A local store, keys file and client cache in one temporary directory.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    /// Creates the environment and runs `coffer init`.
    pub fn new() -> Env {
        let env = Env::uninitialised();
        env.ok(&["init"]);
        env
    }

    pub fn uninitialised() -> Env {
        Env { dir: tempfile::tempdir().expect("temp dir") }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn store(&self) -> PathBuf {
        self.path("store")
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(binary("coffer"));
        cmd.env("COFFER_STORE", format!("file://{}", self.store().display()))
            .env("COFFER_KEYS", self.path("keys"))
            .env("COFFER_CACHE", self.path("cache"))
            .env_remove("RUST_LOG");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run coffer")
    }

    /// Runs coffer and fails the test unless it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        cluster::succeeded("coffer", args, self.run(args))
    }

    /// Runs coffer expecting failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "coffer {args:?} should have failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let out = self.ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("coffer {args:?}: bad JSON ({e}): {out}"))
    }

    /// `coffer backup --json PATH...`
    pub fn backup(&self, paths: &[&Path]) -> Value {
        let mut args = vec!["backup", "--json"];
        let owned: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        args.extend(owned.iter().map(String::as_str));
        self.json(&args)
    }

    /// Committed pack files of the store, oldest first (not the disc-set
    /// label, nor stripes still being written).
    pub fn packs(&self) -> Vec<PathBuf> {
        let mut packs: Vec<PathBuf> = walk_files(&self.store().join("packs"))
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "pack"))
            .collect();
        packs.sort();
        packs
    }
}

impl Default for Env {
    fn default() -> Self {
        Env::new()
    }
}

pub fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk_files(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

pub fn u64_field(v: &Value, field: &str) -> u64 {
    v[field].as_u64().unwrap_or_else(|| panic!("no numeric `{field}` in {v}"))
}
