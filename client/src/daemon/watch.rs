//! Change notification (inotify, through the `notify` crate): any change
//! under a location wakes the daemon's loop, which then plans a scan. A
//! lost event costs nothing worse than waiting for the periodic rescan, and
//! an overflowing queue (`need_rescan`) is just another wake-up, since every
//! run scans whole locations.
//!
//! Changes to the client's private paths (its cache, inside a location)
//! are ignored, or every run would wake the next one.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;

use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};

use super::Wake;

pub struct Watcher {
    inner: RecommendedWatcher,
    watched: BTreeSet<PathBuf>,
}

impl Watcher {
    pub fn new(wake: Sender<Wake>, private: Vec<PathBuf>) -> notify::Result<Watcher> {
        let inner = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let relevant = match &event {
                Ok(e) => e.need_rescan() || e.paths.iter().any(|p| !private.iter().any(|q| p.starts_with(q))),
                Err(_) => true,
            };
            if relevant {
                let _ = wake.send(Wake::Changed);
            }
        })?;
        Ok(Watcher { inner, watched: BTreeSet::new() })
    }

    /// Watches exactly `paths`; a location missing now is tried again at
    /// the next call.
    pub fn watch(&mut self, paths: &[PathBuf]) {
        let wanted: BTreeSet<PathBuf> = paths.iter().cloned().collect();
        for gone in self.watched.difference(&wanted).cloned().collect::<Vec<_>>() {
            let _ = self.inner.unwatch(&gone);
            self.watched.remove(&gone);
        }
        for path in wanted.difference(&self.watched.clone()) {
            match self.inner.watch(Path::new(path), RecursiveMode::Recursive) {
                Ok(()) => {
                    self.watched.insert(path.clone());
                }
                Err(e) => tracing::warn!(path = %path.display(), "cannot watch for changes yet: {e}"),
            }
        }
    }
}
