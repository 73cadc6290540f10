//! Change notification (inotify, through the `notify` crate): any change
//! under a location wakes the daemon's loop, which then plans a scan. A
//! lost event costs nothing worse than waiting for the periodic rescan, and
//! an overflowing queue (`need_rescan`) is just another wake-up, since every
//! run scans whole locations.
//!
//! Changes to the client's private paths (its cache, inside a location)
//! are ignored, or every run would wake the next one. A burst of events
//! sends one wake-up: the next is sent only after the loop took the first.
//! Reads are not changes: a scan opens every directory, and taking those
//! events for changes would make every run wake the next.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::Sender;

use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};

use super::Wake;

pub struct Watcher {
    inner: RecommendedWatcher,
    watched: BTreeSet<PathBuf>,
    /// A wake-up is in the loop's channel and not yet taken.
    pending: Arc<AtomicBool>,
}

impl Watcher {
    pub fn new(wake: Sender<Wake>, private: Vec<PathBuf>) -> notify::Result<Watcher> {
        let pending = Arc::new(AtomicBool::new(false));
        let sent = pending.clone();
        let inner = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let relevant = match &event {
                Ok(e) => {
                    e.need_rescan()
                        || (changes(&e.kind)
                            && e.paths.iter().any(|p| !private.iter().any(|q| p.starts_with(q))))
                }
                Err(_) => true,
            };
            if relevant && !sent.swap(true, Relaxed) {
                let _ = wake.send(Wake::Changed);
            }
        })?;
        Ok(Watcher { inner, watched: BTreeSet::new(), pending })
    }

    /// The loop took the wake-up: the next change sends another.
    pub fn take_change(&self) {
        self.pending.store(false, Relaxed);
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

/// Whether an event can mean the tree changed (anything but reading it).
fn changes(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}
