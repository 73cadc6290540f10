//! Steering a running backup from outside (the daemon's control socket,
//! its signal handler) and watching it: pause and resume at an object
//! boundary, stop, the upload bandwidth limit, and the file being read now.
//!
//! The scanner calls [`Steering::before_upload`] before every object it
//! sends, so a pause or a stop never cuts an object in half, and every
//! object already sent stays in the store for the next run to skip.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

#[derive(Default)]
pub struct Steering {
    paused: Mutex<bool>,
    resumed: Condvar,
    stop: AtomicBool,
    /// Bytes per second; 0 is unlimited.
    limit: Mutex<Option<Bucket>>,
    current: Mutex<Option<PathBuf>>,
    counts: Counts,
}

/// How far the running backup has got.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Progress {
    pub files_scanned: u64,
    pub bytes_scanned: u64,
    pub bytes_uploaded: u64,
}

#[derive(Default)]
struct Counts {
    files_scanned: AtomicU64,
    bytes_scanned: AtomicU64,
    bytes_uploaded: AtomicU64,
}

/// A token bucket of one second's worth of bytes.
struct Bucket {
    rate: u64,
    tokens: f64,
    at: Instant,
}

impl Steering {
    pub fn new(bandwidth_limit: Option<u64>) -> Steering {
        let steering = Steering::default();
        steering.set_limit(bandwidth_limit);
        steering
    }

    pub fn set_limit(&self, bytes_per_second: Option<u64>) {
        *self.limit.lock().unwrap() = bytes_per_second.filter(|&r| r > 0).map(|rate| Bucket {
            rate,
            tokens: rate as f64,
            at: Instant::now(),
        });
    }

    pub fn pause(&self, paused: bool) {
        *self.paused.lock().unwrap() = paused;
        self.resumed.notify_all();
    }

    pub fn is_paused(&self) -> bool {
        *self.paused.lock().unwrap()
    }

    /// Asks the running backup to stop at the next object boundary.
    pub fn stop(&self) {
        self.stop.store(true, Relaxed);
        self.resumed.notify_all();
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Relaxed)
    }

    /// Waits while paused and for the bandwidth limit; refuses once stopped.
    pub fn before_upload(&self, bytes: usize) -> Result<()> {
        let mut paused = self.paused.lock().unwrap();
        while *paused && !self.stopping() {
            paused = self.resumed.wait(paused).unwrap();
        }
        drop(paused);
        if self.stopping() {
            return Err(Error::Stopped);
        }
        self.counts.bytes_uploaded.fetch_add(bytes as u64, Relaxed);
        let wait = self.limit.lock().unwrap().as_mut().map(|b| b.take(bytes as f64));
        if let Some(wait) = wait.filter(|w| !w.is_zero()) {
            std::thread::sleep(wait);
        }
        Ok(())
    }

    pub fn reading(&self, path: Option<&Path>) {
        *self.current.lock().unwrap() = path.map(Path::to_path_buf);
    }

    pub fn current_file(&self) -> Option<PathBuf> {
        self.current.lock().unwrap().clone()
    }

    /// Counts one more file scanned (read or found unchanged).
    pub fn scanned(&self, bytes: u64) {
        self.counts.files_scanned.fetch_add(1, Relaxed);
        self.counts.bytes_scanned.fetch_add(bytes, Relaxed);
    }

    pub fn progress(&self) -> Progress {
        Progress {
            files_scanned: self.counts.files_scanned.load(Relaxed),
            bytes_scanned: self.counts.bytes_scanned.load(Relaxed),
            bytes_uploaded: self.counts.bytes_uploaded.load(Relaxed),
        }
    }

    /// Starts a new run: progress from zero. (A stop is never taken back:
    /// the process is on its way out.)
    pub fn begin(&self) {
        self.counts.files_scanned.store(0, Relaxed);
        self.counts.bytes_scanned.store(0, Relaxed);
        self.counts.bytes_uploaded.store(0, Relaxed);
        self.reading(None);
    }
}

impl Bucket {
    /// Takes `bytes`, going into debt; returns how long to wait to pay it.
    fn take(&mut self, bytes: f64) -> Duration {
        let now = Instant::now();
        let rate = self.rate as f64;
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * rate).min(rate);
        self.at = now;
        self.tokens -= bytes;
        if self.tokens >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-self.tokens / rate) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_paused_upload_waits_and_a_stop_refuses_the_next_object() {
        let steering = Arc::new(Steering::new(None));
        steering.before_upload(10).unwrap();
        steering.pause(true);
        let s = steering.clone();
        let waiter = std::thread::spawn(move || s.before_upload(10));
        std::thread::sleep(Duration::from_millis(100));
        assert!(!waiter.is_finished(), "a paused upload went on");
        steering.pause(false);
        waiter.join().unwrap().unwrap();
        steering.pause(true);
        let s = steering.clone();
        let waiter = std::thread::spawn(move || s.before_upload(10));
        steering.stop();
        assert!(matches!(waiter.join().unwrap(), Err(Error::Stopped)));
    }

    #[test]
    fn the_bucket_charges_bytes_over_the_rate() {
        let mut bucket = Bucket { rate: 1000, tokens: 1000.0, at: Instant::now() };
        assert!(bucket.take(1000.0).is_zero());
        let wait = bucket.take(500.0);
        assert!(wait >= Duration::from_millis(400) && wait <= Duration::from_millis(500), "{wait:?}");
    }
}
